//! Compile rules, YAML in → table and diagnostics out. The golden tests in
//! `routing/tests/golden.rs` cover whole scenarios; these pin single rules.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::manifest::load_str;

const MOCK: &str = "
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {name: mock}
spec: {provider: mock}
";

fn compile_yaml(text: &str) -> Compiled {
    let loaded = load_str("test.yaml", text);
    assert!(loaded.errors.is_empty(), "manifest errors: {:#?}", loaded.errors);
    let compiled = compile(&loaded.inputs);
    compiled.snapshot.check().expect("the compiled snapshot is consistent");
    compiled
}

fn route(name: &str, spec: &str) -> String {
    format!("---\napiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {{name: {name}}}\nspec: {spec}\n")
}

fn reasons(compiled: &Compiled) -> Vec<(String, String)> {
    compiled.diagnostics.iter().map(|d| (d.object.name.clone(), d.reason.clone())).collect()
}

#[test]
fn empty_inputs_compile_to_an_empty_table_with_a_stable_hash() {
    let a = compile(&Inputs::default());
    let b = compile(&Inputs::default());
    assert!(a.snapshot.table.routes.is_empty() && a.diagnostics.is_empty());
    assert_eq!(a.snapshot.hash, b.snapshot.hash);
    assert!(a.snapshot.hash.starts_with("sha256:"));
}

#[test]
fn a_backoff_above_the_default_cap_raises_the_cap() {
    let compiled = compile_yaml(&format!(
        "{MOCK}{}",
        route("r", "{targets: [{provider: mock, model: m}], retry: {backoff: 10s}}")
    ));
    let retry = &compiled.snapshot.table.routes["r"].retry;
    assert_eq!((retry.backoff_ms, retry.max_backoff_ms), (10_000, 10_000));
    assert!(compiled.diagnostics.is_empty(), "{:#?}", compiled.diagnostics);
}

#[test]
fn targets_with_the_same_provider_and_model_need_explicit_names() {
    let compiled = compile_yaml(&format!(
        "{MOCK}{}",
        route("r", "{targets: [{provider: mock, model: m}, {provider: mock, model: m, weight: 2}]}")
    ));
    assert!(compiled.snapshot.table.routes.is_empty());
    let d = compiled.errors().next().expect("an error");
    assert_eq!(d.field.as_deref(), Some("spec.targets[1].name"));
    assert!(d.message.contains("`mock-m` is already used by `spec.targets[0]`"), "{}", d.message);
}

#[test]
fn a_canary_target_may_not_reuse_a_target_name() {
    let compiled = compile_yaml(&format!(
        "{MOCK}{}",
        route(
            "r",
            "{targets: [{name: a, provider: mock, model: m}], canary: {target: {name: a, provider: mock, model: n}}}"
        )
    ));
    assert_eq!(reasons(&compiled), [("r".to_owned(), "Invalid".to_owned())]);
    assert_eq!(compiled.diagnostics[0].field.as_deref(), Some("spec.canary.target.name"));
}

#[test]
fn a_canary_at_100_percent_may_serve_alone_but_at_99_it_may_not() {
    let full = compile_yaml(&format!(
        "{MOCK}{}",
        route(
            "r",
            "{targets: [{provider: mock, model: m, weight: 0}], canary: {target: {provider: mock, model: n}, percent: '100'}}"
        )
    ));
    assert!(full.snapshot.table.routes.contains_key("r"));
    let partial = compile_yaml(&format!(
        "{MOCK}{}",
        route(
            "r",
            "{targets: [{provider: mock, model: m, weight: 0}], canary: {target: {provider: mock, model: n}, percent: '99.99'}}"
        )
    ));
    assert!(partial.snapshot.table.routes.is_empty());
    assert_eq!(partial.diagnostics[0].field.as_deref(), Some("spec.targets"));
}

#[test]
fn the_oldest_claim_keeps_its_alias_even_when_its_references_fail() {
    // `old` claims `chat` first but its provider is missing: the alias stays
    // with it (unserved) instead of flipping to `new`.
    let text = format!(
        "{MOCK}{}{}",
        route("old", "{model: chat, targets: [{provider: missing, model: m}]}"),
        route("new", "{model: chat, targets: [{provider: mock, model: m}]}"),
    );
    let compiled = compile_yaml(&text);
    assert!(compiled.snapshot.table.routes.is_empty());
    let mut got = reasons(&compiled);
    got.sort();
    assert_eq!(
        got,
        [
            ("new".to_owned(), "Conflict".to_owned()),
            ("old".to_owned(), "NoUsableTarget".to_owned()),
            ("old".to_owned(), "ProviderNotFound".to_owned()),
        ]
    );
}

#[test]
fn an_invalid_route_does_not_claim_its_alias() {
    let text = format!(
        "{MOCK}{}{}",
        route("old", "{model: chat, targets: [{provider: mock, model: m}], retry: {attempts: 11}}"),
        route("new", "{model: chat, targets: [{provider: mock, model: m}]}"),
    );
    let compiled = compile_yaml(&text);
    assert_eq!(compiled.snapshot.table.routes["chat"].source.name, "new");
    assert_eq!(reasons(&compiled), [("old".to_owned(), "Invalid".to_owned())]);
}

#[test]
fn a_fallback_to_a_route_without_usable_targets_is_dropped_and_explained() {
    let text = format!(
        "{MOCK}{}{}",
        route("a", "{targets: [{provider: mock, model: m}], fallbacks: [b]}"),
        route("b", "{targets: [{provider: missing, model: m}]}"),
    );
    let compiled = compile_yaml(&text);
    assert_eq!(compiled.snapshot.table.routes["a"].fallbacks, Vec::<String>::new());
    let d = compiled.diagnostics.iter().find(|d| d.reason == reason::FALLBACK_NOT_FOUND).expect("diagnostic");
    assert!(d.message.contains("because ModelRoute `default/b` has errors"), "{}", d.message);
}

#[test]
fn openai_compatible_needs_no_key_and_mock_ignores_one() {
    let text = "
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {name: vllm}
spec: {provider: openai-compatible, baseUrl: 'http://vllm:8000/v1/'}
---
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {name: mock}
spec:
  provider: mock
  apiKey: {secretKeyRef: {name: missing, key: k}}
";
    let compiled = compile_yaml(text);
    let providers = &compiled.snapshot.table.providers;
    assert_eq!(providers["default/vllm"].base_url, "http://vllm:8000/v1");
    assert_eq!(providers["default/mock"].mock, Some(table::MockSettings::default()));
    assert!(compiled.snapshot.credentials.is_empty());
    assert_eq!(reasons(&compiled), [("mock".to_owned(), reason::IGNORED_FIELD.to_owned())]);
}

#[test]
fn presets_default_the_base_url_and_hosted_ones_need_a_key() {
    let text = "
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {name: ollama}
spec: {provider: openai-compatible, preset: ollama}
---
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {name: vllm}
spec: {provider: openai-compatible, preset: vllm, baseUrl: 'http://gpu-box:8000/v1'}
---
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {name: groq}
spec: {provider: openai-compatible, preset: groq}
---
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {name: wrong}
spec: {provider: mistral, preset: together, apiKey: {secretKeyRef: {name: k, key: k}}}
";
    let compiled = compile_yaml(text);
    let providers = &compiled.snapshot.table.providers;
    assert_eq!(providers["default/ollama"].base_url, "http://localhost:11434/v1");
    assert_eq!(providers["default/ollama"].kind, table::ProviderKind::OpenaiCompatible);
    assert_eq!(providers["default/vllm"].base_url, "http://gpu-box:8000/v1", "an explicit baseUrl wins");
    assert!(!providers.contains_key("default/groq") && !providers.contains_key("default/wrong"));
    let groq = compiled.diagnostics.iter().find(|d| d.object.name == "groq").expect("groq diagnostic");
    assert_eq!(groq.field.as_deref(), Some("spec.apiKey"));
    assert!(groq.message.contains("`spec.preset: groq`"), "{}", groq.message);
    let wrong = compiled.diagnostics.iter().find(|d| d.object.name == "wrong").expect("wrong diagnostic");
    assert_eq!(wrong.field.as_deref(), Some("spec.preset"));
    assert!(wrong.message.contains("only allowed with provider `openai-compatible`"), "{}", wrong.message);
}

#[test]
fn the_azure_api_version_reaches_the_table() {
    let text = "
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {azure: az-key}
---
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {name: classic}
spec:
  provider: azure-openai
  baseUrl: https://my-resource.openai.azure.com/
  apiKey: {secretKeyRef: {name: keys, key: azure}}
  azure: {apiVersion: 2024-10-21}
---
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {name: v1}
spec:
  provider: azure-openai
  baseUrl: https://my-resource.openai.azure.com
  apiKey: {secretKeyRef: {name: keys, key: azure}}
";
    let compiled = compile_yaml(text);
    let providers = &compiled.snapshot.table.providers;
    assert_eq!(providers["default/classic"].api_version.as_deref(), Some("2024-10-21"));
    assert_eq!(providers["default/classic"].base_url, "https://my-resource.openai.azure.com");
    assert_eq!(providers["default/v1"].api_version, None);
    assert!(compiled.diagnostics.is_empty(), "{:?}", compiled.diagnostics);
}

#[test]
fn an_optional_key_that_is_set_must_still_resolve() {
    let text = "
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {name: vllm, namespace: ai}
spec:
  provider: openai-compatible
  baseUrl: http://vllm:8000/v1
  apiKey: {secretKeyRef: {name: vllm-token, key: token}}
";
    let compiled = compile_yaml(text);
    assert!(compiled.snapshot.table.providers.is_empty());
    assert_eq!(reasons(&compiled), [("vllm".to_owned(), reason::SECRET_NOT_FOUND.to_owned())]);
}

#[test]
fn secrets_are_looked_up_in_the_provider_secrets_namespace_only() {
    let text = "
apiVersion: v1
kind: Secret
metadata: {name: keys, namespace: other}
stringData: {openai: sk-elsewhere}
---
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {name: openai, namespace: ai}
spec:
  provider: openai
  apiKey: {secretKeyRef: {name: keys, key: openai}}
";
    let compiled = compile_yaml(text);
    assert!(compiled.snapshot.credentials.is_empty());
    assert!(compiled.diagnostics[0].message.contains("does not exist in namespace `ai`"));
}

#[test]
fn credential_like_headers_are_served_but_warned_about_without_their_value() {
    let text = "
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {name: vllm}
spec:
  provider: openai-compatible
  baseUrl: http://vllm:8000/v1
  headers: {X-Api-Key: hunter2}
";
    let compiled = compile_yaml(text);
    assert!(compiled.snapshot.table.providers.contains_key("default/vllm"));
    let d = &compiled.diagnostics[0];
    assert_eq!((d.severity, d.reason.as_str()), (Severity::Warning, reason::CREDENTIAL_IN_HEADER));
    assert!(!d.to_string().contains("hunter2"));
}

#[test]
fn secret_input_merges_data_and_string_data_like_the_api_server() {
    let secret = Secret {
        metadata: ObjectMeta { name: Some("keys".into()), ..ObjectMeta::default() },
        data: Some(BTreeMap::from([
            ("a".to_owned(), ByteString(b"from-data".to_vec())),
            ("b".to_owned(), ByteString(b"overridden".to_vec())),
            ("c".to_owned(), ByteString(vec![0xff, 0xfe])),
            ("d".to_owned(), ByteString(vec![0xff])),
        ])),
        string_data: Some(BTreeMap::from([
            ("b".to_owned(), "from-string-data".to_owned()),
            ("d".to_owned(), "text-now".to_owned()),
        ])),
        ..Secret::default()
    };
    let input = SecretInput::from_secret(&secret);
    assert_eq!(input.namespace, "default");
    assert_eq!(input.data["a"].expose(), "from-data");
    assert_eq!(input.data["b"].expose(), "from-string-data");
    assert_eq!(input.data["d"].expose(), "text-now");
    assert!(!input.data.contains_key("c"));
    assert_eq!(input.binary_keys.iter().collect::<Vec<_>>(), ["c"]);
    let debug = format!("{input:?}");
    assert!(!debug.contains("from-data") && !debug.contains("text-now"), "{debug}");
}

#[test]
fn debug_output_of_inputs_and_results_never_shows_a_key() {
    let text = "
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {openai: sk-super-secret-value}
---
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {name: openai}
spec:
  provider: openai
  apiKey: {secretKeyRef: {name: keys, key: openai}}
";
    let loaded = load_str("test.yaml", text);
    let compiled = compile(&loaded.inputs);
    assert_eq!(compiled.snapshot.credentials["default/openai"].expose(), "sk-super-secret-value");
    for shown in [format!("{loaded:?}"), format!("{compiled:?}"), format!("{:?}", compiled.snapshot)] {
        assert!(!shown.contains("sk-super-secret-value"), "{shown}");
    }
}

#[test]
fn inputs_hand_out_increasing_load_orders() {
    let mut inputs = Inputs::default();
    assert_eq!(inputs.next_order(), 0);
    inputs.add_secret(SecretInput { name: "s".into(), namespace: "default".into(), ..SecretInput::default() });
    inputs.add_secret(SecretInput { name: "t".into(), namespace: "default".into(), ..SecretInput::default() });
    assert_eq!(inputs.secrets.iter().map(|s| s.order).collect::<Vec<_>>(), [0, 1]);
    assert_eq!((inputs.next_order(), inputs.len()), (2, 2));
}

#[test]
fn diagnostics_are_sorted_and_printed_without_repeating_the_field() {
    let compiled = compile_yaml(&format!(
        "{MOCK}{}{}",
        route("z", "{targets: [{provider: mock, model: m}], retry: {attempts: 11}}"),
        route("a", "{targets: [{provider: mock, model: m}], timeouts: {idle: soon}}"),
    ));
    let mut sorted = compiled.diagnostics.clone();
    sorted.sort();
    assert_eq!(compiled.diagnostics, sorted);
    assert_eq!(
        compiled.diagnostics[0].to_string(),
        "error: ModelRoute default/a: `spec.timeouts.idle` must be a duration such as `250ms`, `30s`, `5m` or `1h30m` \
         (digits followed by `ms`, `s`, `m` or `h`), got `soon` (Invalid)"
    );
}

#[test]
fn object_names_are_validated_like_the_api_server_does() {
    let compiled = compile_yaml(&format!("{MOCK}{}", route("Chat_Route", "{targets: [{provider: mock, model: m}]}")));
    assert!(compiled.snapshot.table.routes.is_empty());
    assert_eq!(compiled.diagnostics[0].field.as_deref(), Some("metadata.name"));
}

#[test]
fn diagnostics_for_filters_by_object() {
    let compiled = compile_yaml(&format!(
        "{MOCK}{}{}",
        route("a", "{targets: [{provider: nope, model: m}]}"),
        route("b", "{targets: [{provider: mock, model: m}]}"),
    ));
    let a = ObjectRef::new(kind::MODEL_ROUTE, "default", "a");
    let b = ObjectRef::new(kind::MODEL_ROUTE, "default", "b");
    assert_eq!(compiled.diagnostics_for(&a).count(), 2);
    assert_eq!(compiled.diagnostics_for(&b).count(), 0);
    assert_eq!(compiled.errors().count(), 2);
}

#[test]
fn durations_longer_than_the_schema_allows_are_rejected() {
    let long = format!("{}1s", "0".repeat(40));
    let compiled = compile_yaml(&format!(
        "{MOCK}{}",
        route("r", &format!("{{targets: [{{provider: mock, model: m}}], timeouts: {{idle: '{long}'}}}}"))
    ));
    assert_eq!(compiled.diagnostics[0].field.as_deref(), Some("spec.timeouts.idle"));
}

#[test]
fn a_target_price_may_name_cache_rates_and_each_is_checked() {
    let compiled = compile_yaml(&format!(
        "{MOCK}{}",
        route(
            "r",
            "{targets: [{provider: mock, model: m, price: {inputPerMillion: '3', outputPerMillion: '15', cachedInputPerMillion: '0.30', cacheWritePerMillion: '3.75'}}]}"
        )
    ));
    let price = compiled.snapshot.table.routes["r"].targets[0].price.clone().expect("a price");
    assert_eq!(price.cached_input_per_million.as_deref(), Some("0.30"));
    assert_eq!(price.cache_write_per_million.as_deref(), Some("3.75"));

    let compiled = compile_yaml(&format!(
        "{MOCK}{}",
        route(
            "r",
            "{targets: [{provider: mock, model: m, price: {inputPerMillion: '3', outputPerMillion: '15', cachedInputPerMillion: '$0.3'}}]}"
        )
    ));
    assert!(compiled.snapshot.table.routes.is_empty());
    let d = compiled.errors().next().expect("an error");
    assert_eq!(d.field.as_deref(), Some("spec.targets[0].price.cachedInputPerMillion"));
    assert!(d.message.contains("non-negative decimal"), "{}", d.message);
}
