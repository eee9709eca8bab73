use super::*;

const ROUTE: &str = "apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec: {targets: [{provider: mock, model: m}]}
";

fn errors(loaded: &Loaded) -> Vec<String> {
    loaded.errors.iter().map(ToString::to_string).collect()
}

#[test]
fn documents_are_split_at_marker_lines_only() {
    let text = "# comment\n---\na: 1\n--- # trailing comment\nb: |\n  ---not a marker\n  text\n...\n# after end\n---\n";
    let chunks = split_documents(text);
    let starts: Vec<usize> = chunks.iter().map(|c| c.first_line).collect();
    assert_eq!(starts, [2, 4, 10]);
    assert!(chunks[1].text.contains("---not a marker"));
}

#[test]
fn leading_comments_do_not_count_as_a_document_but_explicit_empty_ones_do() {
    let loaded = load_str("x.yaml", &format!("# header\n---\n---\n{ROUTE}---\nkind: [\n"));
    assert_eq!(loaded.inputs.routes.len(), 1);
    assert_eq!(loaded.errors.len(), 1);
    assert_eq!(loaded.errors[0].doc_index, 3, "{}", loaded.errors[0]);
}

#[test]
fn a_syntax_error_spoils_only_its_own_document() {
    let text = format!("{ROUTE}---\nmetadata: {{name: [broken\n---\n{}", ROUTE.replace("chat", "after"));
    let loaded = load_str("x.yaml", &text);
    let names: Vec<_> =
        loaded.inputs.routes.iter().map(|r| r.object.metadata.name.clone().unwrap_or_default()).collect();
    assert_eq!(names, ["chat", "after"]);
    assert_eq!(loaded.errors.len(), 1);
    let err = &loaded.errors[0];
    assert_eq!(err.doc_index, 2);
    assert!(err.message.starts_with("invalid YAML: "), "{err}");
    let (line, _) = err.location.expect("a location");
    assert!((6..=7).contains(&line), "line {line} should point into the second document: {err}");
}

#[test]
fn type_errors_name_the_field_and_the_line_in_the_file() {
    let text = format!("{ROUTE}---\n{}", ROUTE.replace("model: m}", "model: m, weight: ten}"));
    let loaded = load_str("examples/x.yaml", &text);
    assert_eq!(
        errors(&loaded),
        [
            "examples/x.yaml: document 2: `spec.targets[0].weight`: invalid type: string \"ten\", expected u32 (line 9, column 53)"
        ]
    );
}

#[test]
fn unknown_fields_are_errors_like_kubectls_strict_validation() {
    let loaded = load_str("x.yaml", &ROUTE.replace("model: m}", "model: m, weigth: 2, extra: 1}"));
    let err = &loaded.errors[0];
    assert_eq!(err.field.as_deref(), Some("spec.targets[0].weigth"));
    assert!(err.message.contains("unknown field `weigth`"), "{err}");
    assert!(err.message.contains("also unknown: `spec.targets[0].extra`"), "{err}");
    assert!(loaded.inputs.routes.is_empty());
}

#[test]
fn other_kinds_are_skipped_with_a_warning_and_empty_documents_silently() {
    let loaded =
        load_str("x.yaml", "---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n# only a comment\n");
    assert!(loaded.errors.is_empty());
    assert_eq!(
        loaded.warnings,
        [
            "x.yaml: document 2: skipped `v1` `ConfigMap` `c`: only ModelRoute, ProviderSecret and Secret objects are read"
        ]
    );
}

#[test]
fn objects_without_a_namespace_land_in_default_and_get_increasing_orders() {
    let text = format!("{ROUTE}---\n{}", ROUTE.replace("{name: chat}", "{name: other, namespace: ai}"));
    let loaded = load_str("x.yaml", &text);
    let got: Vec<(u64, Option<String>)> =
        loaded.inputs.routes.iter().map(|r| (r.order, r.object.metadata.namespace.clone())).collect();
    assert_eq!(got, [(0, Some("default".to_owned())), (1, Some("ai".to_owned()))]);
}

#[test]
fn secret_errors_never_echo_values() {
    let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {key: [sk-leak-1]}\n---\n\
                apiVersion: v1\nkind: Secret\nmetadata: {name: t}\ndata: {key: '!sk-leak-2'}\n---\n\
                apiVersion: v1\nkind: Secret\nmetadata: {name: u}\nstringData: sk-leak-3\n";
    let loaded = load_str("x.yaml", text);
    assert_eq!(loaded.errors.len(), 3);
    for err in errors(&loaded) {
        assert!(!err.contains("sk-leak"), "{err}");
    }
    assert!(loaded.errors[1].message.starts_with("not valid base64"), "{}", loaded.errors[1]);
}

#[test]
fn numbers_where_strings_are_expected_get_a_hint_to_quote_them() {
    let loaded = load_str(
        "x.yaml",
        &ROUTE.replace("spec: {", "spec: {canary: {target: {provider: mock, model: n}, percent: 5}, "),
    );
    let err = &loaded.errors[0];
    assert_eq!(err.field.as_deref(), Some("spec.canary.percent"));
    assert!(err.message.contains("write the value in quotes"), "{err}");
}

#[test]
fn list_items_load_one_by_one_with_their_own_paths() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: switchyard.dev/v1alpha1\n  kind: ModelRoute\n  \
                metadata: {name: a}\n  spec: {targets: [{provider: mock, model: m}]}\n- apiVersion: switchyard.dev/v1alpha1\n  \
                kind: ModelRoute\n  metadata: {name: b}\n  spec: {targets: [{provider: mock, model: m, weight: x}]}\n";
    let loaded = load_str("x.yaml", text);
    assert_eq!(loaded.inputs.routes.len(), 1);
    assert_eq!(loaded.errors[0].field.as_deref(), Some("items[1].spec.targets[0].weight"));
}

#[test]
fn yaml_anchors_and_merge_keys_work_like_in_kubectl() {
    let text = "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: chat}\nspec:\n  targets:\n  \
                - &base {provider: mock, model: m, name: a}\n  - {<<: *base, name: b, weight: 0}\n";
    let loaded = load_str("x.yaml", text);
    assert!(loaded.errors.is_empty(), "{:?}", errors(&loaded));
    let targets = &loaded.inputs.routes[0].object.spec.targets;
    assert_eq!((targets[1].provider.as_str(), targets[1].weight), ("mock", Some(0)));
}

#[test]
fn a_wrong_switchyard_version_or_kind_is_an_error_not_a_warning() {
    let loaded = load_str(
        "x.yaml",
        &format!("{}---\n{}", ROUTE.replace("v1alpha1", "v1"), ROUTE.replace("ModelRoute", "ModelRouter")),
    );
    assert_eq!(loaded.errors.len(), 2);
    assert!(loaded.warnings.is_empty());
    assert_eq!(loaded.errors[0].field.as_deref(), Some("apiVersion"));
    assert_eq!(loaded.errors[1].field.as_deref(), Some("kind"));
}

#[test]
fn a_byte_order_mark_is_ignored() {
    let loaded = load_str("x.yaml", &format!("\u{feff}{ROUTE}"));
    assert!(loaded.errors.is_empty(), "{:?}", errors(&loaded));
    assert_eq!(loaded.inputs.routes.len(), 1);
}

#[test]
fn an_unreadable_directory_is_reported_not_panicked_on() {
    let loaded = load_dir(Path::new("/definitely/not/here"));
    assert_eq!(loaded.errors.len(), 1);
    assert_eq!(loaded.errors[0].doc_index, 0);
    assert!(loaded.errors[0].to_string().starts_with("/definitely/not/here: cannot read the directory"));
}
