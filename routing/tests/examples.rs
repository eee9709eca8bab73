//! Every example manifest the README points at loads and compiles cleanly.

use std::path::Path;

fn assert_clean(dir: &str, routes: usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    let loaded = routing::manifest::load_dir(&path);
    assert!(loaded.errors.is_empty(), "{dir}: {:?}", loaded.errors);
    assert!(loaded.warnings.is_empty(), "{dir}: {:?}", loaded.warnings);
    let compiled = routing::compile(&loaded.inputs);
    let findings: Vec<String> = compiled.diagnostics.iter().map(ToString::to_string).collect();
    assert!(findings.is_empty(), "{dir}: {findings:?}");
    assert_eq!(compiled.snapshot.table.routes.len(), routes, "{dir}");
}

#[test]
fn the_quickstart_compiles_without_findings() {
    assert_clean("examples/quickstart", 3);
}

#[test]
fn the_provider_examples_compile_without_findings() {
    assert_clean("examples/providers", 9);
}
