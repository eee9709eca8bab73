//! Tokens and cost: provider usage priced by the built-in table or the
//! manifest, the `x-switchyard-cost-usd` header, the cost and token metrics,
//! estimates when a provider reports no usage, and the tokenizer-based
//! `contextWindow` check.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use proxy::testing::{FakeAnthropic, FakeOpenAi};
use serde_json::{Value, json};
use support::{Proxy, sse_data};

/// A ProviderSecret of `kind` at `base_url`, with a key (the fakes accept any).
fn provider(name: &str, kind: &str, base_url: &str) -> String {
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ProviderSecret\nmetadata: {{name: {name}}}\nspec:\n  provider: {kind}\n  baseUrl: {base_url}\n  apiKey: {{secretKeyRef: {{name: {name}-key, key: k}}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-key}}\nstringData: {{k: test-key}}\n---\n"
    )
}

fn route(alias: &str, targets: &str) -> String {
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {{name: {alias}}}\nspec:\n  retry: {{attempts: 0}}\n  targets:\n{targets}---\n"
    )
}

/// The value of one series in the exposition text.
fn series(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// Three words: the fakes count prompt tokens as words.
fn ask(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "say hello please"}]})
}

#[tokio::test]
async fn provider_usage_is_priced_by_the_built_in_table_or_the_manifest() {
    let fake = FakeOpenAi::start().await;
    let manifests = format!(
        "{}{}{}",
        provider("oa", "openai", &fake.base_url()),
        route("table", "  - {name: mini, provider: oa, model: gpt-4.1-mini}\n"),
        route(
            "priced",
            "  - {name: own, provider: oa, model: gpt-4.1-mini, price: {inputPerMillion: '100', outputPerMillion: '1000'}}\n"
        ),
    );
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;

    let response = proxy.chat(&ask("table", false)).await;
    assert_eq!(response.status(), 200);
    let header = response.headers()["x-switchyard-cost-usd"].to_str().unwrap().to_owned();
    let answer: Value = response.json().await.unwrap();
    let (prompt, completion) =
        (answer["usage"]["prompt_tokens"].as_u64().unwrap(), answer["usage"]["completion_tokens"].as_u64().unwrap());
    assert_eq!((prompt, completion), (3, 8), "the fake's word counts");
    // gpt-4.1-mini: 0.40 in, 1.60 out per million.
    let table_cost = (3.0 * 0.40 + 8.0 * 1.60) / 1e6;
    assert!(close(header.parse::<f64>().unwrap(), table_cost), "{header}");

    let response = proxy.chat(&ask("priced", false)).await;
    let header = response.headers()["x-switchyard-cost-usd"].to_str().unwrap().parse::<f64>().unwrap();
    let own_cost = (3.0 * 100.0 + 8.0 * 1000.0) / 1e6;
    assert!(close(header, own_cost), "the manifest's price wins: {header}");

    let (_, metrics) = proxy.admin_get("/metrics").await;
    let cost = series(&metrics, r#"switchyard_cost_usd_total{route="table",target="mini"}"#).unwrap();
    assert!(close(cost, table_cost), "{metrics}");
    assert_eq!(
        series(&metrics, r#"switchyard_tokens_total{route="table",target="mini",direction="input"}"#),
        Some(3.0)
    );
    assert_eq!(
        series(&metrics, r#"switchyard_tokens_total{route="table",target="mini",direction="output"}"#),
        Some(8.0)
    );
    assert_eq!(
        series(&metrics, r#"switchyard_tokens_estimated_total{route="table",target="mini",direction="output"}"#),
        Some(0.0),
        "reported usage is not an estimate"
    );

    let table = proxy.table().await;
    let mini = &table["accounting"]["table"]["mini"];
    assert_eq!(mini["price"]["source"], "built-in", "{mini}");
    assert_eq!(mini["price"]["row"], "gpt-4.1-mini");
    assert_eq!(mini["price"]["usdPerMillion"]["cachedInput"], 0.10);
    assert_eq!(mini["tokenizer"], json!({"encoding": "o200k_base", "estimate": "model's own tokenizer"}));
    assert_eq!(table["accounting"]["priced"]["own"]["price"]["source"], "manifest");
    proxy.stop().await;
}

#[tokio::test]
async fn a_target_without_a_known_price_reports_tokens_but_no_cost() {
    let fake = FakeOpenAi::start().await;
    let manifests = format!(
        "{}{}",
        provider("local", "openai-compatible", &fake.base_url()),
        route("chat", "  - {name: llama, provider: local, model: llama3}\n"),
    );
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&ask("chat", false)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-switchyard-cost-usd").is_none(), "no made-up cost");
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert_eq!(series(&metrics, r#"switchyard_cost_usd_total{route="chat",target="llama"}"#), Some(0.0));
    assert_eq!(
        series(&metrics, r#"switchyard_tokens_total{route="chat",target="llama",direction="output"}"#),
        Some(8.0)
    );
    assert_eq!(proxy.table().await["accounting"]["chat"]["llama"]["price"], Value::Null);
    proxy.stop().await;
}

#[tokio::test]
async fn a_stream_without_usage_is_estimated_and_the_client_still_gets_a_usage_chunk() {
    // Mistral's schema has no `stream_options`, so the fake sends no usage:
    // the proxy counts the tokens itself.
    let fake = FakeOpenAi::start().await;
    let manifests = format!(
        "{}{}",
        provider("mi", "mistral", &fake.base_url()),
        route("chat", "  - {name: small, provider: mi, model: mistral-small-latest}\n"),
    );
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let mut body = ask("chat", true);
    body["stream_options"] = json!({"include_usage": true});
    let response = proxy.chat(&body).await;
    assert_eq!(response.status(), 200);
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]), "{usage_chunk}");
    assert_eq!(usage_chunk["object"], "chat.completion.chunk");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(usage_chunk["id"], first["id"], "the usage chunk belongs to the same completion");
    let usage = &usage_chunk["usage"];
    // o200k_base: 3 + 3 framing + "user" (1) + "say hello please" (3).
    assert_eq!(usage["prompt_tokens"], 10, "{usage}");
    let text: String = events[..events.len() - 2]
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "hello from mistral-small-latest: this is a fake completion");
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!((10..=16).contains(&completion), "a BPE count of the streamed text: {usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), 10 + completion);

    let (_, metrics) = proxy.admin_get("/metrics").await;
    let estimated_in = r#"switchyard_tokens_estimated_total{route="chat",target="small",direction="input"}"#;
    assert_eq!(series(&metrics, estimated_in), Some(10.0), "{metrics}");
    let cost = series(&metrics, r#"switchyard_cost_usd_total{route="chat",target="small"}"#).unwrap();
    // mistral-small: 0.10 in, 0.30 out per million.
    assert!(close(cost, (10.0 * 0.10 + completion as f64 * 0.30) / 1e6), "{cost}");

    // Without include_usage the client gets no usage chunk, estimated or not.
    let response = proxy.chat(&ask("chat", true)).await;
    let events = sse_data(&response.text().await.unwrap());
    assert!(events.iter().all(|e| !e.contains("\"usage\"")), "{events:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn translated_usage_with_cache_tokens_is_priced_per_provider() {
    let fake = FakeAnthropic::start().await;
    let manifests = format!(
        "{}{}",
        provider("an", "anthropic", &fake.base_url()),
        route("chat", "  - {name: haiku, provider: an, model: claude-haiku-4-5-20251001}\n"),
    );
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&ask("chat", false)).await;
    assert_eq!(response.status(), 200);
    let header = response.headers()["x-switchyard-cost-usd"].to_str().unwrap().parse::<f64>().unwrap();
    let answer: Value = response.json().await.unwrap();
    let usage = &answer["usage"];
    let (prompt, completion) = (usage["prompt_tokens"].as_f64().unwrap(), usage["completion_tokens"].as_f64().unwrap());
    // claude-haiku-4-5: 1.00 in, 5.00 out per million (the fake reports no cache tokens).
    assert!(close(header, (prompt * 1.0 + completion * 5.0) / 1e6), "{header} for {usage}");
    proxy.stop().await;
}

#[tokio::test]
async fn the_context_window_check_counts_tokens_not_bytes() {
    let fake = FakeOpenAi::start().await;
    // "hello " repeated: 6 bytes but one token each; 400 of them are ~400
    // tokens, which a bytes/4 rule would have called 600.
    let long = "hello ".repeat(400);
    let manifests = format!(
        "{}{}",
        provider("oa", "openai", &fake.base_url()),
        route(
            "chat",
            "  - {name: tiny, provider: oa, model: gpt-4o-mini, contextWindow: 100, weight: 10}\n  - {name: enough, provider: oa, model: gpt-4o-mini, contextWindow: 500, weight: 1}\n"
        ),
    );
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": long}]});
    let response = proxy.chat(&body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-target"], "enough", "400 tokens fit in 500, not in 100");

    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "hello ".repeat(1_000)}]});
    let response = proxy.chat(&body).await;
    assert_eq!(response.status(), 400, "nothing can take ~1000 tokens");
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("o200k_base estimate") && message.contains("context window of 500"), "{message}");
    assert_eq!(error["error"]["code"], "context_length_exceeded", "{error}");
    proxy.stop().await;
}
