//! Hot reload: edits swap the table within a second, in-flight requests
//! finish, and a broken edit keeps the table in force.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::{Proxy, chat_body, eventually, mock_provider};

fn route(alias: &str, target: &str, model: &str) -> String {
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {{name: {alias}}}\nspec:\n  targets:\n  - {{name: {target}, provider: m, model: {model}}}\n"
    )
}

#[tokio::test]
async fn an_edit_is_served_within_a_second() {
    let proxy =
        Proxy::start(&[("providers.yaml", &mock_provider("m", "")), ("chat.yaml", &route("chat", "one", "a"))]).await;
    let before = proxy.hash();
    proxy.write("chat.yaml", &route("chat", "two", "b"));
    let took = proxy.wait_for_new_table(before.as_deref()).await;
    assert!(took < Duration::from_secs(1), "reload took {took:?}");
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.headers()["x-switchyard-target"], "two");

    // Adding a file adds its alias; removing it removes the alias.
    let before = proxy.hash();
    proxy.write("extra.yaml", &route("extra", "x", "x"));
    proxy.wait_for_new_table(before.as_deref()).await;
    assert_eq!(proxy.chat(&chat_body("extra", false)).await.status(), 200);
    let before = proxy.hash();
    proxy.remove("extra.yaml");
    proxy.wait_for_new_table(before.as_deref()).await;
    assert_eq!(proxy.chat(&chat_body("extra", false)).await.status(), 404);
    proxy.stop().await;
}

#[tokio::test]
async fn a_broken_edit_keeps_the_previous_table_and_reports_why() {
    let proxy =
        Proxy::start(&[("providers.yaml", &mock_provider("m", "")), ("chat.yaml", &route("chat", "one", "a"))]).await;
    let good = proxy.hash();
    // Malformed YAML, then a well-formed route that names a missing provider.
    for broken in [
        "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: chat\nspec: [",
        "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: chat}\nspec:\n  targets:\n  - {name: one, provider: nope, model: a}\n",
    ] {
        proxy.write("chat.yaml", broken);
        assert!(
            eventually(Duration::from_secs(2), || {
                proxy.running.as_ref().unwrap().routing.diagnostics().iter().any(|l| l.starts_with("error"))
            })
            .await,
            "the broken edit was not reported"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(proxy.hash(), good, "a broken edit replaced the table");
        let response = proxy.chat(&chat_body("chat", false)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-switchyard-target"], "one");
        let table = proxy.table().await;
        let diagnostics = table["diagnostics"].to_string();
        assert!(diagnostics.contains("chat"), "{diagnostics}");
        let (_, metrics) = proxy.admin_get("/metrics").await;
        assert!(metrics.contains(r#"switchyard_table_reloads_total{outcome="rejected"}"#), "{metrics}");
        // Back to a good state before the next broken edit.
        proxy.write("chat.yaml", &route("chat", "one", "a"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    proxy.write("chat.yaml", &route("chat", "fixed", "b"));
    proxy.wait_for_new_table(good.as_deref()).await;
    assert_eq!(proxy.chat(&chat_body("chat", false)).await.headers()["x-switchyard-target"], "fixed");
    proxy.stop().await;
}

#[tokio::test]
async fn an_empty_manifest_directory_is_a_ready_table_without_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start_in(dir).await;
    // An empty directory compiles to an empty table: valid, ready, no aliases.
    let (status, _) = proxy.admin_get("/readyz").await;
    assert_eq!(status, 200);
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("no model aliases"), "{body}");
    assert_eq!(proxy.admin_get("/healthz").await.0, 200);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_tables_under_concurrent_load_fails_no_request() {
    let proxy = Arc::new(
        Proxy::start(&[
            ("providers.yaml", &mock_provider("m", "  mock: {latency: 5ms}\n")),
            ("chat.yaml", &route("chat", "t0", "a")),
        ])
        .await,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (proxy, stop, ok) = (proxy.clone(), stop.clone(), ok.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let stream = worker % 2 == 0;
                let response = proxy.chat(&chat_body("chat", stream)).await;
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                if status != 200 || (stream && !text.trim_end().ends_with("data: [DONE]")) {
                    failures.push(format!("{status}: {text}"));
                } else {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            failures
        }));
    }
    for generation in 1..=10 {
        let before = proxy.hash();
        proxy.write("chat.yaml", &route("chat", &format!("t{generation}"), &format!("m{generation}")));
        proxy.wait_for_new_table(before.as_deref()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await.unwrap());
    }
    assert!(failures.is_empty(), "{} failed requests, first: {:?}", failures.len(), failures.first());
    assert!(ok.load(Ordering::Relaxed) > 50, "too little traffic to mean anything");
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.headers()["x-switchyard-target"], "t10");
}
