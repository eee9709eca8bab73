//! Golden tests: `fixtures/<case>/input.yaml` → load → compile → compared
//! with `fixtures/<case>/expected.json` (the snapshot with credentials
//! redacted, the diagnostics, and the loader's errors and warnings).
//!
//! `UPDATE_GOLDEN=1 cargo test -p routing --test golden` rewrites the
//! expected files; review the diff before committing it.

#![expect(clippy::expect_used, reason = "test helpers fail loudly on broken fixtures")]

use std::path::{Path, PathBuf};

use routing::compile::{Compiled, Inputs, compile};
use routing::manifest::{Loaded, load_str};
use serde_json::{Value, json};

fn fixture_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(case)
}

fn load(case: &str) -> Loaded {
    let text = std::fs::read_to_string(fixture_dir(case).join("input.yaml")).expect("fixture input");
    load_str("input.yaml", &text)
}

/// The observable result of one case, as stable JSON.
fn render(loaded: &Loaded, compiled: &Compiled) -> Value {
    let snapshot = &compiled.snapshot;
    let credentials: serde_json::Map<String, Value> =
        snapshot.credentials.iter().map(|(key, value)| (key.clone(), json!(format!("{value:?}")))).collect();
    json!({
        "manifest_errors": loaded.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "manifest_warnings": loaded.warnings,
        "diagnostics": compiled.diagnostics,
        "hash": snapshot.hash,
        "table": snapshot.table,
        "credentials": credentials,
    })
}

fn check_golden(case: &str) -> (Loaded, Compiled) {
    let loaded = load(case);
    let compiled = compile(&loaded.inputs);
    let actual = serde_json::to_string_pretty(&render(&loaded, &compiled)).expect("json") + "\n";
    let expected_path = fixture_dir(case).join("expected.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&expected_path, &actual).expect("write expected.json");
    } else {
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            let first_diff = expected
                .lines()
                .zip(actual.lines())
                .position(|(e, a)| e != a)
                .unwrap_or(expected.lines().count().min(actual.lines().count()));
            panic!(
                "golden output of `{case}` changed (first difference at line {}):\n  expected: {}\n  actual:   {}\n\
                 full output:\n{actual}\nif the change is intended, run `UPDATE_GOLDEN=1 cargo test -p routing --test golden` \
                 and review the diff",
                first_diff + 1,
                expected.lines().nth(first_diff).unwrap_or("<end of file>"),
                actual.lines().nth(first_diff).unwrap_or("<end of file>"),
            );
        }
    }
    // Whatever the case, the snapshot must pass the proxy's own check and
    // no message may contain a credential.
    compiled.snapshot.check().expect("compiled snapshot passes Snapshot::check");
    let everything = actual;
    for value in compiled.snapshot.credentials.values() {
        assert!(!everything.contains(value.expose()), "`{case}` output leaks a credential");
    }
    (loaded, compiled)
}

fn messages(compiled: &Compiled) -> Vec<String> {
    compiled.diagnostics.iter().map(ToString::to_string).collect()
}

#[test]
fn basic_weighted_route_reads_keys_from_data_and_string_data() {
    let (loaded, compiled) = check_golden("basic_weighted");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert!(compiled.diagnostics.is_empty(), "{:#?}", compiled.diagnostics);
    let creds = &compiled.snapshot.credentials;
    assert_eq!(creds["ai/openai-prod"].expose(), "sk-openai-from-data");
    assert_eq!(creds["ai/anthropic-prod"].expose(), "sk-anthropic-from-string-data", "stringData must win over data");
    assert_eq!(creds["ai/gemini-prod"].expose(), "sk-gemini-with-newline", "surrounding whitespace is trimmed");
    assert!(!creds.contains_key("default/mock"), "mock needs no credential");
    let table = &compiled.snapshot.table;
    assert_eq!(table.providers["ai/anthropic-prod"].base_url, "https://anthropic.example.com");
    assert_eq!(table.providers["ai/openai-prod"].base_url, "https://api.openai.com/v1");
    assert_eq!(table.routes["summarize-cheap"].targets[0].name, "gemini-prod-gemini-2-5-flash");
    assert_eq!(table.providers["default/mock"].mock.as_ref().map(|m| m.failure_ppm), Some(50_000));
}

#[test]
fn canary_share_and_sticky_header_reach_the_table() {
    let (_, compiled) = check_golden("canary_sticky");
    let routes = &compiled.snapshot.table.routes;
    let chat = routes["chat"].canary.as_ref().expect("canary");
    assert_eq!((chat.share, chat.sticky_header.as_deref()), (500, Some("x-user-id")));
    assert_eq!(routes["progressive"].canary.as_ref().map(|c| c.share), Some(1));
    assert_eq!(routes["cutover"].canary.as_ref().map(|c| c.share), Some(routing::table::FULL_SHARE));
    assert!(messages(&compiled).iter().any(|m| m.contains("`spec.mirror`") && m.starts_with("warning")));
}

#[test]
fn fallback_chains_are_flattened_and_cycles_reported_on_every_route_in_them() {
    let (_, compiled) = check_golden("fallback_chain_and_cycle");
    let routes = &compiled.snapshot.table.routes;
    let chain = |alias: &str| routes[alias].fallbacks.clone();
    assert_eq!(chain("a"), ["b", "c", "d"]);
    assert_eq!(chain("b"), ["c", "d", "a"]);
    assert_eq!(chain("c"), ["d"]);
    assert_eq!(chain("e"), ["d"]);
    assert_eq!(chain("f"), ["a", "b", "c", "d"]);
    let cycles: Vec<&str> =
        compiled.diagnostics.iter().filter(|d| d.reason == "FallbackCycle").map(|d| d.object.name.as_str()).collect();
    assert_eq!(cycles, ["a", "b", "e"]);
}

#[test]
fn alias_conflict_is_won_by_the_older_route() {
    let (_, compiled) = check_golden("alias_conflict");
    let routes = &compiled.snapshot.table.routes;
    assert_eq!(routes["chat"].source.name, "older-chat", "earliest creationTimestamp wins");
    assert_eq!(routes["ask"].source.name, "ask-first", "without timestamps the first loaded wins");
    assert_eq!(routes["dup"].targets[0].model, "second-definition", "the last duplicate definition is used");
    let conflicts: Vec<String> = compiled
        .diagnostics
        .iter()
        .filter(|d| d.reason == "Conflict")
        .map(|d| format!("{}/{}", d.object.namespace, d.object.name))
        .collect();
    assert_eq!(conflicts, ["team-a/ask-second", "team-a/chat", "team-a/newer-chat"]);
}

#[test]
fn missing_provider_secret_drops_only_that_target() {
    let (_, compiled) = check_golden("missing_provider");
    let routes = &compiled.snapshot.table.routes;
    let chat = &routes["chat"];
    assert_eq!(chat.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["good"]);
    assert!(chat.canary.is_none(), "a canary whose provider is missing is dropped");
    assert!(!routes.contains_key("solo") && !routes.contains_key("drained"));
    let text = messages(&compiled).join("\n");
    assert!(text.contains("ProviderSecret `anthropic-prod` does not exist in namespace `ai`"), "{text}");
    assert!(text.contains("(NoUsableTarget)"), "{text}");
    assert!(text.contains("(InvalidProvider)"), "{text}");
}

#[test]
fn missing_secret_key_names_the_secret_and_key_but_never_a_value() {
    let (_, compiled) = check_golden("missing_secret_key");
    let text = messages(&compiled).join("\n");
    assert!(text.contains("Secret `ai/llm-keys` has no key `anthropic`"), "{text}");
    assert!(text.contains("Secret `mistral-keys` does not exist in namespace `ai`"), "{text}");
    assert!(!text.contains("sk-live-do-not-print"), "a secret value leaked: {text}");
    let providers = &compiled.snapshot.table.providers;
    assert_eq!(providers.keys().collect::<Vec<_>>(), ["ai/openai"]);
    let chat = &compiled.snapshot.table.routes["chat"];
    assert_eq!(chat.targets.len(), 1);
}

#[test]
fn azure_api_versions_and_presets_reach_the_table() {
    let (_, compiled) = check_golden("azure_cohere_presets");
    let providers = &compiled.snapshot.table.providers;
    assert_eq!(providers["ai/azure-classic"].api_version.as_deref(), Some("2024-10-21"));
    assert_eq!(providers["ai/azure-v1"].api_version, None);
    assert_eq!(providers["ai/groq"].base_url, "https://api.groq.com/openai/v1");
    assert_eq!(providers["ai/ollama"].base_url, "http://localhost:11434/v1");
    assert!(!providers.contains_key("ai/together-no-key"));
}

#[test]
fn invalid_spec_reports_every_problem_at_once() {
    let (_, compiled) = check_golden("invalid_spec");
    let fields: Vec<&str> = compiled
        .diagnostics
        .iter()
        .filter(|d| d.object.name == "chat" && d.reason == "Invalid")
        .filter_map(|d| d.field.as_deref())
        .collect();
    for expected in [
        "spec.model",
        "spec.targets[0].name",
        "spec.targets[1].contextWindow",
        "spec.targets[2].name",
        "spec.targets[2].price.inputPerMillion",
        "spec.targets[3].provider",
        "spec.targets[3].model",
        "spec.targets[3].weight",
        "spec.canary.percent",
        "spec.canary.steps[2]",
        "spec.canary.steps[3]",
        "spec.canary.stepInterval",
        "spec.canary.sticky.header",
        "spec.canary.analysis.maxErrorRate",
        "spec.canary.analysis.failureLimit",
        "spec.fallbacks[0]",
        "spec.retry.attempts",
        "spec.retry.backoff",
        "spec.timeouts.request",
        "spec.timeouts.attempt",
        "spec.timeouts.firstToken",
        "spec.circuitBreaker.openFor",
    ] {
        assert!(fields.contains(&expected), "no error for `{expected}` in {fields:#?}");
    }
    assert!(compiled.snapshot.table.routes.is_empty());
    let text = messages(&compiled).join("\n");
    assert!(
        text.contains("`spec.canary.percent` must be a decimal between 0 and 100 with at most two decimals"),
        "{text}"
    );
    assert!(!text.contains("not-a-secret-but-looks-like-one"), "header values are never shown: {text}");
}

#[test]
fn unknown_kinds_are_skipped_with_a_warning() {
    let (loaded, compiled) = check_golden("unknown_kind");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(loaded.warnings.len(), 3, "{:#?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("`apps/v1` `Deployment` `web`"), "{}", loaded.warnings[0]);
    let aliases: Vec<&String> = compiled.snapshot.table.routes.keys().collect();
    assert_eq!(aliases, ["chat", "from-list"]);
}

#[test]
fn malformed_documents_are_reported_and_the_others_still_load() {
    let (loaded, compiled) = check_golden("malformed_documents");
    let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors[0],
        "input.yaml: document 2: `spec.targets[0].weight`: invalid type: string \"ten\", expected u32 (line 15, column 13)"
    );
    assert!(errors.iter().all(|e| !e.contains("sk-this-must-not-be-echoed")), "{errors:#?}");
    let aliases: Vec<&String> = compiled.snapshot.table.routes.keys().collect();
    assert_eq!(aliases, ["ok"], "documents after broken ones still load");
}

/// Deterministic shuffles, so that a failure is reproducible.
fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    let mut reversed = items.to_vec();
    reversed.reverse();
    let mut rotated = items.to_vec();
    rotated.rotate_left(items.len() / 2);
    let mut interleaved: Vec<T> = items.iter().step_by(2).cloned().collect();
    interleaved.extend(items.iter().skip(1).step_by(2).cloned());
    vec![reversed, rotated, interleaved]
}

#[test]
fn identical_inputs_in_any_order_give_the_same_hash_and_diagnostics() {
    for case in ["basic_weighted", "alias_conflict", "fallback_chain_and_cycle", "invalid_spec", "missing_provider"] {
        let inputs = load(case).inputs;
        let reference = compile(&inputs);
        let routes = permutations(&inputs.routes);
        let providers = permutations(&inputs.providers);
        let secrets = permutations(&inputs.secrets);
        for i in 0..routes.len() {
            let shuffled =
                Inputs { routes: routes[i].clone(), providers: providers[i].clone(), secrets: secrets[i].clone() };
            let compiled = compile(&shuffled);
            assert_eq!(compiled.snapshot.hash, reference.snapshot.hash, "`{case}` permutation {i}");
            assert_eq!(compiled.diagnostics, reference.diagnostics, "`{case}` permutation {i}");
        }
    }
}

#[test]
fn reordering_the_documents_of_a_file_does_not_change_the_hash() {
    // No conflicts or duplicates here, so load order decides nothing.
    let text = std::fs::read_to_string(fixture_dir("basic_weighted").join("input.yaml")).expect("fixture");
    let documents: Vec<&str> = text.split("\n---\n").collect();
    let reference = compile(&load_str("a.yaml", &text).inputs);
    for reordered in permutations(&documents) {
        let loaded = load_str("b.yaml", &reordered.join("\n---\n"));
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(compile(&loaded.inputs).snapshot.hash, reference.snapshot.hash);
    }
}

#[test]
fn a_different_credential_changes_the_hash() {
    let text = std::fs::read_to_string(fixture_dir("basic_weighted").join("input.yaml")).expect("fixture");
    let before = compile(&load_str("a.yaml", &text).inputs);
    let rotated = text.replace("sk-anthropic-from-string-data", "sk-anthropic-rotated");
    let after = compile(&load_str("a.yaml", &rotated).inputs);
    assert_ne!(before.snapshot.hash, after.snapshot.hash, "proxies must see a rotated key");
    assert_eq!(before.snapshot.table, after.snapshot.table);
}
