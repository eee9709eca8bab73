//! Writes the CRDs generated from `routing::api` to the repository's `crds/`
//! directory, or prints them with `--stdout`.
//!
//! ```text
//! cargo run -p routing --bin crdgen            # rewrite crds/*.yaml
//! cargo run -p routing --bin crdgen -- --stdout | kubectl apply -f -
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let stdout = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--stdout") => true,
        Some("-h" | "--help") => {
            println!(
                "usage: crdgen [--stdout]\n\nwrites crds/*.yaml at the repository root, or prints them with --stdout"
            );
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("error: unknown argument `{other}`; usage: crdgen [--stdout]");
            return ExitCode::from(64);
        }
    };
    let files = match routing::api::crd_files() {
        Ok(files) => files,
        Err(err) => {
            eprintln!("error: cannot render the CRDs: {err}");
            return ExitCode::FAILURE;
        }
    };
    if stdout {
        for (i, file) in files.iter().enumerate() {
            if i > 0 {
                println!("---");
            }
            print!("{}", file.yaml);
        }
        return ExitCode::SUCCESS;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("crds");
    if let Err(err) = std::fs::create_dir_all(&dir) {
        eprintln!("error: cannot create `{}`: {err}", dir.display());
        return ExitCode::FAILURE;
    }
    for file in &files {
        let path = dir.join(file.file_name);
        if let Err(err) = std::fs::write(&path, &file.yaml) {
            eprintln!("error: cannot write `{}`: {err}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote crds/{}", file.file_name);
    }
    ExitCode::SUCCESS
}
