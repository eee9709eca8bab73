//! The generated schema: identity, structure, CEL rules (evaluated the way
//! the API server would, with kube's `cel` feature), and agreement between
//! the schema's patterns and rules and the compile step's own checks.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::{CompiledSchema, Validator, WarningKind, compile_schema, estimate_rule_cost};
use kube::{CustomResourceExt, Resource};
use serde_json::{Value, json};

use super::*;
use crate::compile::parse;
use crate::diag::reason;

fn schema(crd: &CustomResourceDefinition) -> Value {
    let version = &crd.spec.versions[0];
    let schema = version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("a schema");
    serde_json::to_value(schema).expect("json")
}

fn crd_for(kind: &str) -> CustomResourceDefinition {
    match kind {
        "ModelRoute" => ModelRoute::crd(),
        "ProviderSecret" => ProviderSecret::crd(),
        other => panic!("no CRD for {other}"),
    }
}

fn object(kind: &str, spec: Value) -> Value {
    json!({"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "x", "namespace": "ns"}, "spec": spec})
}

/// The CEL verdict: `Err` with the failed rules' messages.
fn cel(kind: &str, spec: Value) -> Result<(), Vec<String>> {
    Validator::new()
        .validate(&schema(&crd_for(kind)), &object(kind, spec), None)
        .map_err(|errors| errors.as_slice().iter().map(|e| e.message.clone()).collect())
}

/// The compile step's verdict on the same object: `Err` with its `Invalid` messages.
fn compiled(kind: &str, spec: Value) -> Result<(), Vec<String>> {
    let yaml = serde_yaml_ng::to_string(&object(kind, spec)).expect("yaml");
    let loaded = crate::manifest::load_str("case.yaml", &yaml);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let out = crate::compile::compile(&loaded.inputs);
    let invalid: Vec<String> =
        out.diagnostics.iter().filter(|d| d.reason == reason::INVALID).map(|d| d.message.clone()).collect();
    if invalid.is_empty() { Ok(()) } else { Err(invalid) }
}

#[test]
fn crds_use_the_documented_group_version_and_names() {
    assert_eq!(API_VERSION, format!("{GROUP}/{VERSION}"));
    for (crd, plural, short) in
        [(ModelRoute::crd(), "modelroutes", "mr"), (ProviderSecret::crd(), "providersecrets", "ps")]
    {
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.versions[0].name, VERSION);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(crd.spec.names.short_names.as_deref(), Some(&[short.to_owned()][..]));
        assert!(crd.spec.versions[0].subresources.as_ref().is_some_and(|s| s.status.is_some()));
    }
    assert_eq!(ModelRoute::api_version(&()), API_VERSION);
}

#[test]
fn model_route_printer_columns_show_alias_strategy_canary_programmed_and_age() {
    let crd = ModelRoute::crd();
    let columns = crd.spec.versions[0].additional_printer_columns.clone().unwrap_or_default();
    let got: Vec<(&str, &str)> = columns.iter().map(|c| (c.name.as_str(), c.json_path.as_str())).collect();
    assert_eq!(
        got,
        [
            ("Alias", ".spec.model"),
            ("Strategy", ".spec.strategy"),
            ("Canary", ".status.canary.percent"),
            ("Programmed", ".status.conditions[?(@.type==\"Programmed\")].status"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
}

#[test]
fn only_provider_and_target_provider_and_model_are_required_from_users() {
    let route = schema(&ModelRoute::crd());
    let spec = &route["properties"]["spec"];
    assert_eq!(spec["required"], json!(["targets"]));
    assert_eq!(spec["properties"]["targets"]["items"]["required"], json!(["model", "provider"]));
    assert_eq!(spec["properties"]["targets"]["minItems"], json!(1));
    let provider = schema(&ProviderSecret::crd());
    assert_eq!(provider["properties"]["spec"]["required"], json!(["provider"]));
}

/// Walks a schema and lists everything a structural schema forbids.
fn structural_problems(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(map) = node.as_object() else { return };
    for forbidden in ["$ref", "anyOf", "oneOf", "allOf", "not", "x-kubernetes-preserve-unknown-fields"] {
        if map.contains_key(forbidden) {
            out.push(format!("{path}: has `{forbidden}`"));
        }
    }
    if !map.contains_key("type") {
        out.push(format!("{path}: has no `type`"));
    }
    if map.get("type") == Some(&json!("object"))
        && !map.contains_key("properties")
        && !map.contains_key("additionalProperties")
    {
        out.push(format!("{path}: untyped object"));
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            // `metadata` is exempt: the API server owns its schema.
            if path.is_empty() && name == "metadata" {
                continue;
            }
            structural_problems(child, &format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = map.get("items") {
        structural_problems(items, &format!("{path}[]"), out);
    }
    if let Some(extra) = map.get("additionalProperties").filter(|v| v.is_object()) {
        structural_problems(extra, &format!("{path}{{}}"), out);
    }
}

#[test]
fn schemas_are_structural_with_no_untyped_fields() {
    for crd in [ModelRoute::crd(), ProviderSecret::crd()] {
        let mut problems = Vec::new();
        structural_problems(&schema(&crd), "", &mut problems);
        assert!(problems.is_empty(), "{}: {problems:#?}", crd.spec.names.kind);
    }
}

/// Every CEL rule with the compiled schema node it sits on.
fn rules_with_nodes<'a>(node: &'a Value, compiled: &'a CompiledSchema, out: &mut Vec<(String, &'a CompiledSchema)>) {
    for rule in node["x-kubernetes-validations"].as_array().into_iter().flatten() {
        out.push((rule["rule"].as_str().unwrap_or_default().to_owned(), compiled));
    }
    if let Some(props) = node["properties"].as_object() {
        for (name, child) in props {
            if let Some(c) = compiled.properties.get(name) {
                rules_with_nodes(child, c, out);
            }
        }
    }
    if let (Some(items), Some(c)) = (node.get("items"), compiled.items.as_deref()) {
        rules_with_nodes(items, c, out);
    }
    if let (Some(extra), Some(c)) = (node.get("additionalProperties"), compiled.additional_properties.as_deref()) {
        rules_with_nodes(extra, c, out);
    }
}

#[test]
fn every_cel_rule_compiles_and_stays_within_the_cost_budget() {
    let mut count = 0;
    for crd in [ModelRoute::crd(), ProviderSecret::crd()] {
        let json = schema(&crd);
        let compiled = compile_schema(&json);
        let errors: Vec<String> = compiled.compilation_errors().iter().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?}");
        let mut rules = Vec::new();
        rules_with_nodes(&json, &compiled, &mut rules);
        for (rule, node) in rules {
            count += 1;
            let warnings: Vec<String> = estimate_rule_cost(&rule, node)
                .into_iter()
                .filter(|w| matches!(w.kind, WarningKind::CostExceeded | WarningKind::MissingBounds))
                .map(|w| w.message)
                .collect();
            assert!(warnings.is_empty(), "`{rule}`: {warnings:#?}");
        }
    }
    assert_eq!(count, 14, "every rule was visited");
}

/// Specs that break exactly one CEL rule (or none), with the word the
/// failure message must contain. Compile must agree on each verdict.
fn cel_cases() -> Vec<(&'static str, &'static str, Value, Option<&'static str>)> {
    let t = |name: Option<&str>, weight: Option<u32>| {
        let mut t = json!({"provider": "p", "model": "m"});
        if let Some(name) = name {
            t["name"] = json!(name);
            t["model"] = json!(format!("m-{name}"));
        }
        if let Some(weight) = weight {
            t["weight"] = json!(weight);
        }
        t
    };
    let canary = |extra: Value| {
        let mut c = json!({"target": {"name": "next", "provider": "p", "model": "n"}});
        for (k, v) in extra.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        c
    };
    vec![
        ("ModelRoute", "minimal route", json!({"targets": [t(None, None)]}), None),
        ("ModelRoute", "unnamed targets", json!({"targets": [t(None, None), {"provider": "p", "model": "n"}]}), None),
        ("ModelRoute", "duplicate names", json!({"targets": [t(Some("a"), None), t(Some("a"), None)]}), Some("unique")),
        (
            "ModelRoute",
            "all drained",
            json!({"targets": [t(Some("a"), Some(0)), t(Some("b"), Some(0))]}),
            Some("weight > 0"),
        ),
        ("ModelRoute", "one of two drained", json!({"targets": [t(Some("a"), Some(0)), t(Some("b"), None)]}), None),
        (
            "ModelRoute",
            "drained behind a full canary",
            json!({"targets": [t(Some("a"), Some(0))], "canary": canary(json!({"percent": "100"}))}),
            None,
        ),
        (
            "ModelRoute",
            "canary reuses a name",
            json!({"targets": [t(Some("next"), None)], "canary": canary(json!({}))}),
            Some("must differ"),
        ),
        (
            "ModelRoute",
            "increasing steps compare as numbers",
            json!({"targets": [t(None, None)], "canary": canary(json!({"steps": ["5", "10", "50", "100"]}))}),
            None,
        ),
        (
            "ModelRoute",
            "decreasing steps",
            json!({"targets": [t(None, None)], "canary": canary(json!({"steps": ["1", "50", "10"]}))}),
            Some("strictly increasing"),
        ),
        (
            "ModelRoute",
            "equal steps spelled differently",
            json!({"targets": [t(None, None)], "canary": canary(json!({"steps": ["1", "1.0"]}))}),
            Some("strictly increasing"),
        ),
        (
            "ModelRoute",
            "backoff within cap",
            json!({"targets": [t(None, None)], "retry": {"backoff": "30s", "maxBackoff": "1m"}}),
            None,
        ),
        (
            "ModelRoute",
            "backoff over cap compares as durations",
            json!({"targets": [t(None, None)], "retry": {"backoff": "1m", "maxBackoff": "30s"}}),
            Some("must not exceed"),
        ),
        (
            "ProviderSecret",
            "openai with key",
            json!({"provider": "openai", "apiKey": {"secretKeyRef": {"name": "s", "key": "k"}}}),
            None,
        ),
        ("ProviderSecret", "openai without key", json!({"provider": "openai"}), Some("apiKey is required")),
        (
            "ProviderSecret",
            "compatible without url",
            json!({"provider": "openai-compatible"}),
            Some("baseUrl is required"),
        ),
        (
            "ProviderSecret",
            "compatible with url",
            json!({"provider": "openai-compatible", "baseUrl": "http://h/v1"}),
            None,
        ),
        ("ProviderSecret", "mock with settings", json!({"provider": "mock", "mock": {"failureRate": "0.5"}}), None),
        (
            "ProviderSecret",
            "mock settings elsewhere",
            json!({"provider": "openai-compatible", "baseUrl": "http://h", "mock": {}}),
            Some("only allowed with provider mock"),
        ),
        (
            "ProviderSecret",
            "azure settings elsewhere",
            json!({"provider": "openai-compatible", "baseUrl": "http://h", "azure": {}}),
            Some("only allowed with provider azure-openai"),
        ),
        (
            "ProviderSecret",
            "compatible preset without url",
            json!({"provider": "openai-compatible", "preset": "ollama"}),
            None,
        ),
        (
            "ProviderSecret",
            "hosted preset without key",
            json!({"provider": "openai-compatible", "preset": "groq"}),
            Some("apiKey is required for the hosted presets"),
        ),
        (
            "ProviderSecret",
            "preset elsewhere",
            json!({"provider": "openai", "preset": "vllm", "apiKey": {"secretKeyRef": {"name": "s", "key": "k"}}}),
            Some("preset is only allowed with provider openai-compatible"),
        ),
        (
            "ProviderSecret",
            "azure without url",
            json!({"provider": "azure-openai", "apiKey": {"secretKeyRef": {"name": "s", "key": "k"}}}),
            Some("baseUrl is required for provider azure-openai"),
        ),
        (
            "ProviderSecret",
            "bad header name",
            json!({"provider": "openai-compatible", "baseUrl": "http://h", "headers": {"bad header": "x"}}),
            Some("header names"),
        ),
        (
            "ProviderSecret",
            "good header name",
            json!({"provider": "openai-compatible", "baseUrl": "http://h", "headers": {"OpenAI-Organization": "x"}}),
            None,
        ),
    ]
}

#[test]
fn cel_rules_accept_and_reject_like_the_api_server_would() {
    for (kind, case, spec, failure) in cel_cases() {
        match (cel(kind, spec), failure) {
            (Ok(()), None) => {}
            (Err(messages), Some(word)) => {
                assert!(messages.iter().any(|m| m.contains(word)), "{case}: expected `{word}` in {messages:?}");
                assert_eq!(messages.len(), 1, "{case}: more than one rule failed: {messages:?}");
            }
            (got, want) => panic!("{case}: CEL said {got:?}, expected failure {want:?}"),
        }
    }
}

#[test]
fn the_compile_step_agrees_with_every_cel_verdict() {
    for (kind, case, spec, failure) in cel_cases() {
        let verdict = compiled(kind, spec);
        assert_eq!(verdict.is_err(), failure.is_some(), "{case}: compile said {verdict:?}");
    }
}

/// Every string built from `alphabet` with 1 to `max_len` pieces.
fn strings(alphabet: &[&str], max_len: usize) -> Vec<String> {
    let mut all = Vec::new();
    let mut layer = vec![String::new()];
    for _ in 0..max_len {
        layer = layer.iter().flat_map(|prefix| alphabet.iter().map(move |piece| format!("{prefix}{piece}"))).collect();
        all.extend(layer.iter().cloned());
    }
    all
}

fn assert_agrees(pattern: &str, accepts: impl Fn(&str) -> bool, samples: &[String]) {
    let regex = regex::Regex::new(pattern).expect("pattern compiles");
    for sample in samples {
        assert_eq!(accepts(sample), regex.is_match(sample), "pattern {pattern} and the parser disagree on {sample:?}");
    }
}

#[test]
fn the_duration_parser_accepts_exactly_the_schema_pattern() {
    let mut samples = strings(&["0", "1", "9", "ms", "s", "m", "h", ".", "-", " ", "x"], 4);
    samples.extend(["1h30m", "250ms", "10m5s3ms"].map(String::from));
    assert_agrees(DURATION_PATTERN, |s| parse::duration_ms(s).is_some(), &samples);
}

#[test]
fn the_percent_parser_accepts_exactly_the_schema_pattern() {
    let samples = strings(&["0", "1", "5", "9", ".", "-"], 6);
    assert_agrees(PERCENT_PATTERN, |s| parse::percent_bp(s).is_some(), &samples);
}

#[test]
fn the_fraction_parser_accepts_exactly_the_schema_pattern() {
    let mut samples = strings(&["0", "1", "5", "."], 6);
    samples.extend(["0.000001", "0.0000001", "1.000000", "1.0000000"].map(String::from));
    assert_agrees(FRACTION_PATTERN, |s| parse::fraction_ppm(s).is_some(), &samples);
}

#[test]
fn the_decimal_and_name_checks_accept_exactly_their_schema_patterns() {
    let mut decimals = strings(&["0", "5", ".", "-"], 6);
    decimals.extend(["123456789.123456789", "1234567890", "1.1234567890"].map(String::from));
    assert_agrees(DECIMAL_PATTERN, parse::is_decimal, &decimals);
    let names = strings(&["a", "Z", "0", "-", ".", "_"], 4);
    assert_agrees(DNS_LABEL_PATTERN, parse::is_dns_label, &names);
    assert_agrees(DNS_SUBDOMAIN_PATTERN, parse::is_dns_subdomain, &names);
    let headers = strings(&["a", "-", " ", ":", "`", "~", "é"], 3);
    assert_agrees(HEADER_NAME_PATTERN, parse::is_header_name, &headers);
    let urls: Vec<String> = [
        "",
        "http://",
        "https://h",
        "https://h/v1/",
        "ftp://h",
        "https:///v1",
        "http://h?x",
        "http://h#f",
        "http://h x",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_agrees(BASE_URL_PATTERN, parse::is_base_url, &urls);
}
