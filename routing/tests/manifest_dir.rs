//! `load_dir` against real directories, including the symlink layout of a
//! Kubernetes ConfigMap volume.

#![expect(clippy::expect_used, reason = "test helpers fail loudly on broken fixtures")]

use std::fs;
use std::path::{Path, PathBuf};

use routing::manifest::load_dir;

/// A fresh, empty directory under Cargo's per-test scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("manifest_dir").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn route(name: &str) -> String {
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {{name: {name}}}\n\
         spec: {{targets: [{{provider: mock, model: m}}]}}\n"
    )
}

fn names(dir: &Path) -> Vec<String> {
    let loaded = load_dir(dir);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.inputs.routes.iter().map(|r| r.object.metadata.name.clone().unwrap_or_default()).collect()
}

#[test]
fn files_load_in_name_order_and_other_files_are_ignored() {
    let dir = scratch("order");
    fs::write(dir.join("b.yaml"), route("from-b")).expect("write");
    fs::write(dir.join("a.yml"), route("from-a")).expect("write");
    fs::write(dir.join("c.YAML"), route("from-c")).expect("write");
    fs::write(dir.join("notes.txt"), route("from-txt")).expect("write");
    fs::write(dir.join(".hidden.yaml"), route("from-hidden")).expect("write");
    fs::create_dir(dir.join("nested.yaml")).expect("mkdir");
    fs::write(dir.join("nested.yaml").join("d.yaml"), route("from-nested")).expect("write");
    assert_eq!(names(&dir), ["from-a", "from-b", "from-c"]);
}

#[test]
fn configmap_volume_symlinks_are_followed_once() {
    // What the kubelet writes: a timestamped directory, `..data` pointing at
    // it, and visible names that are symlinks through `..data`.
    let dir = scratch("configmap");
    let stamp = dir.join("..2025_01_01_00_00_00.000000001");
    fs::create_dir(&stamp).expect("mkdir");
    fs::write(stamp.join("routes.yaml"), route("chat")).expect("write");
    std::os::unix::fs::symlink("..2025_01_01_00_00_00.000000001", dir.join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/routes.yaml", dir.join("routes.yaml")).expect("symlink");
    assert_eq!(names(&dir), ["chat"], "the file is read through its symlink, and only once");
}

#[test]
fn a_broken_file_is_reported_with_its_path_and_the_others_still_load() {
    let dir = scratch("broken");
    fs::write(dir.join("a.yaml"), "apiVersion: [\n").expect("write");
    fs::write(dir.join("b.yaml"), route("good")).expect("write");
    fs::write(dir.join("c.yaml"), [0xff, 0xfe, 0x00]).expect("write");
    std::os::unix::fs::symlink("does-not-exist.yaml", dir.join("d.yaml")).expect("symlink");
    let loaded = load_dir(&dir);
    let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    assert_eq!(loaded.inputs.routes.len(), 1);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].starts_with(&format!("{}: document 1: invalid YAML", dir.join("a.yaml").display())),
        "{errors:#?}"
    );
    assert!(errors[1].ends_with("c.yaml: the file is not UTF-8 text"), "{errors:#?}");
    assert!(errors[2].contains("d.yaml: cannot read the file"), "{errors:#?}");
}
