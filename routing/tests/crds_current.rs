//! The committed CRDs under `crds/` must be exactly what the Rust types in
//! `routing::api` generate. `UPDATE_CRDS=1 cargo test -p routing --test
//! crds_current` rewrites them (as does `cargo run -p routing --bin crdgen`).

use std::path::Path;

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let update = std::env::var_os("UPDATE_CRDS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for file in routing::api::crd_files().expect("the CRDs render") {
        let path = dir.join(file.file_name);
        if update {
            std::fs::create_dir_all(&dir).expect("create crds/");
            std::fs::write(&path, &file.yaml).expect("write CRD");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == file.yaml => {}
            Ok(_) => stale.push(format!("crds/{} differs from the Rust types", file.file_name)),
            Err(err) => stale.push(format!("crds/{} cannot be read: {err}", file.file_name)),
        }
    }
    assert!(
        stale.is_empty(),
        "{}\nrun `cargo run -p routing --bin crdgen` (or `UPDATE_CRDS=1 cargo test -p routing --test crds_current`) \
         and commit the result",
        stale.join("\n")
    );
}

#[test]
fn crdgen_output_is_valid_yaml_of_two_crds() {
    for file in routing::api::crd_files().expect("the CRDs render") {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&file.yaml).expect("valid YAML");
        assert_eq!(value["kind"].as_str(), Some("CustomResourceDefinition"), "{}", file.file_name);
        assert_eq!(value["spec"]["group"].as_str(), Some(routing::api::GROUP));
    }
}
