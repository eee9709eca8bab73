//! `POST /v1/messages`: Anthropic Messages clients routed to OpenAI-,
//! Anthropic- and Gemini-shaped upstreams, over real HTTP on loopback against
//! fakes that speak each provider's wire format.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use std::time::Duration;

use proxy::testing::{FakeAnthropic, FakeGemini, FakeOpenAi};
use serde_json::{Value, json};
use support::{Proxy, eventually, http_provider};

fn keyed_provider(name: &str, kind: &str, base_url: &str, key: &str) -> String {
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ProviderSecret\nmetadata:\n  name: {name}\nspec:\n  provider: {kind}\n  baseUrl: {base_url}\n  apiKey:\n    secretKeyRef: {{name: {name}-key, key: apiKey}}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}-key\nstringData:\n  apiKey: {key}\n---\n"
    )
}

const ROUTES: &str = r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: gpt}
spec:
  targets:
  - {name: openai, provider: oai, model: gpt-4o-mini}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: claude}
spec:
  targets:
  - {name: anthropic, provider: ant, model: claude-haiku-4-5}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: gemini}
spec:
  targets:
  - {name: google, provider: goo, model: gemini-2.5-flash}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: flaky}
spec:
  retry: {attempts: 0}
  targets:
  - {name: broken, provider: oai, model: fail-500}
  fallbacks: [claude]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: midstream}
spec:
  targets:
  - {name: cut, provider: oai, model: error-after-2}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: endless}
spec:
  targets:
  - {name: forever, provider: oai, model: endless}
"#;

struct Stack {
    openai: FakeOpenAi,
    anthropic: FakeAnthropic,
    gemini: FakeGemini,
    proxy: Proxy,
}

async fn stack() -> Stack {
    let openai = FakeOpenAi::start().await;
    let anthropic = FakeAnthropic::start().await;
    let gemini = FakeGemini::start().await;
    anthropic.require_api_key("sk-ant-1");
    gemini.require_api_key("AIza-1");
    let manifests = http_provider("oai", &openai.base_url(), Some("sk-oai-1"))
        + &keyed_provider("ant", "anthropic", &anthropic.base_url(), "sk-ant-1")
        + &keyed_provider("goo", "gemini", &gemini.base_url(), "AIza-1")
        + ROUTES;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    Stack { openai, anthropic, gemini, proxy }
}

async fn messages(proxy: &Proxy, body: &Value) -> reqwest::Response {
    proxy
        .client
        .post(format!("{}/v1/messages", proxy.base))
        .header("x-api-key", "client-key-is-ignored")
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

fn hello(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 256, "stream": stream, "system": "You are terse.",
           "messages": [{"role": "user", "content": "say hello"}]})
}

fn weather(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 256, "stream": stream,
           "tools": [{"name": "get_weather", "description": "Weather for a city",
                      "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
           "messages": [{"role": "user", "content": "What is the weather in Oslo?"}]})
}

/// `(event, data)` of an Anthropic SSE body, checking the framing.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap_or_else(|| panic!("no event line: {e}"));
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name, "the data's type is the event name");
            (name.to_owned(), data)
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).filter(|n| *n != "ping").collect()
}

fn text_of(events: &[(String, Value)]) -> String {
    events.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect()
}

#[tokio::test]
async fn a_message_is_answered_by_each_kind_of_upstream() {
    let s = stack().await;
    for (alias, target, model) in [
        ("gpt", "openai", "gpt-4o-mini"),
        ("claude", "anthropic", "claude-haiku-4-5"),
        ("gemini", "google", "gemini-2.5-flash"),
    ] {
        let response = messages(&s.proxy, &hello(alias, false)).await;
        assert_eq!(response.status(), 200, "{alias}");
        assert_eq!(response.headers()["x-switchyard-target"], target);
        assert!(response.headers()["x-request-id"].to_str().unwrap().starts_with("req_"));
        assert_eq!(response.headers()["content-type"], "application/json");
        let message: Value = response.json().await.unwrap();
        assert_eq!(message["type"], "message", "{message}");
        assert_eq!(message["role"], "assistant");
        assert!(message["id"].as_str().unwrap().starts_with("msg_"), "{message}");
        assert_eq!(message["content"][0]["type"], "text");
        assert!(message["content"][0]["text"].as_str().unwrap().contains(model), "{message}");
        assert_eq!(message["stop_reason"], "end_turn");
        assert!(message["usage"]["input_tokens"].as_u64().unwrap() > 0, "{message}");
        assert!(message["usage"]["output_tokens"].as_u64().unwrap() > 0, "{message}");
    }
    // What each upstream received: its own format, with the system prompt.
    let openai = &s.openai.requests()[0].body;
    assert_eq!(openai["messages"][0], json!({"role": "system", "content": "You are terse."}));
    assert_eq!(openai["max_tokens"], 256);
    let anthropic = &s.anthropic.requests()[0];
    assert_eq!(anthropic.header("x-api-key"), Some("sk-ant-1"), "the provider's key, not the client's");
    assert_eq!(anthropic.body["system"], "You are terse.");
    assert_eq!(anthropic.body["max_tokens"], 256);
    assert_eq!(s.gemini.requests()[0].body["systemInstruction"]["parts"][0]["text"], "You are terse.");
    s.proxy.stop().await;
}

#[tokio::test]
async fn a_streamed_message_is_the_anthropic_event_sequence_from_each_upstream() {
    let s = stack().await;
    for (alias, model) in [("gpt", "gpt-4o-mini"), ("claude", "claude-haiku-4-5"), ("gemini", "gemini-2.5-flash")] {
        let response = messages(&s.proxy, &hello(alias, true)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let events = events(&response.text().await.unwrap());
        assert_eq!(
            names(&events),
            ["message_start", "content_block_start", "content_block_delta"]
                .into_iter()
                .chain(std::iter::repeat_n("content_block_delta", names(&events).len() - 6))
                .chain(["content_block_stop", "message_delta", "message_stop"])
                .collect::<Vec<_>>(),
            "{alias}: {events:?}"
        );
        assert!(text_of(&events).contains(model), "{alias}: {events:?}");
        let (_, delta) = events.iter().find(|(n, _)| n == "message_delta").unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0, "{alias}: {delta}");
        assert!(delta["usage"]["input_tokens"].as_u64().unwrap() > 0, "{alias}: {delta}");
    }
    // The usage the proxy asked for is not shown to an OpenAI client, but
    // here it feeds message_delta: the OpenAI upstream was asked for it.
    assert_eq!(s.openai.requests()[0].body["stream_options"], json!({"include_usage": true}));
    s.proxy.stop().await;
}

#[tokio::test]
async fn tool_use_comes_back_as_tool_use_blocks_json_and_streamed() {
    let s = stack().await;
    for alias in ["claude", "gemini"] {
        let message: Value = messages(&s.proxy, &weather(alias, false)).await.json().await.unwrap();
        assert_eq!(message["stop_reason"], "tool_use", "{alias}: {message}");
        let call = message["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap();
        assert_eq!(call["name"], "get_weather");
        assert_eq!(call["input"], json!({"city": "Oslo"}), "{alias}");
        assert!(!call["id"].as_str().unwrap().is_empty());

        let body = messages(&s.proxy, &weather(alias, true)).await.text().await.unwrap();
        let events = events(&body);
        let (_, start) = events
            .iter()
            .find(|(n, d)| n == "content_block_start" && d["content_block"]["type"] == "tool_use")
            .unwrap_or_else(|| panic!("{alias}: no tool_use block: {body}"));
        assert_eq!(start["content_block"]["name"], "get_weather");
        let index = &start["index"];
        let input: String = events
            .iter()
            .filter(|(_, d)| &d["index"] == index)
            .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(serde_json::from_str::<Value>(&input).unwrap(), json!({"city": "Oslo"}), "{alias}: {body}");
        let (_, delta) = events.iter().find(|(n, _)| n == "message_delta").unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    }
    // The tool definition arrived in each provider's own shape.
    assert_eq!(s.anthropic.requests()[0].body["tools"][0]["input_schema"]["required"], json!(["city"]));
    assert_eq!(s.gemini.requests()[0].body["tools"][0]["functionDeclarations"][0]["name"], "get_weather");

    // The follow-up turn with the tool result reaches the upstream as its tool result.
    let follow_up = json!({"model": "claude", "max_tokens": 64, "messages": [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "-3C, snow"}]}]});
    let message: Value = messages(&s.proxy, &follow_up).await.json().await.unwrap();
    assert_eq!(message["stop_reason"], "end_turn", "{message}");
    let sent = s.anthropic.requests().last().unwrap().body.clone();
    assert_eq!(
        sent["messages"][2]["content"],
        json!([{"type": "tool_result", "tool_use_id": "toolu_1", "content": "-3C, snow"}])
    );
    s.proxy.stop().await;
}

#[tokio::test]
async fn errors_have_anthropics_shape_and_name_the_field() {
    let s = stack().await;
    let response = messages(&s.proxy, &json!({"model": "gpt", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(response.status(), 400);
    assert!(response.headers().contains_key("x-request-id"));
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(error["error"]["message"].as_str().unwrap().contains("`max_tokens`"), "{error}");

    let response = messages(&s.proxy, &hello("no-such-alias", false)).await;
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "not_found_error");
    assert!(error["error"]["message"].as_str().unwrap().contains("`gpt`"), "lists the aliases: {error}");

    let response = s.proxy.client.get(format!("{}/v1/messages", s.proxy.base)).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.json::<Value>().await.unwrap()["type"], "error");
    assert_eq!(s.openai.hits() + s.anthropic.hits() + s.gemini.hits(), 0, "bad requests never reach an upstream");
    s.proxy.stop().await;
}

#[tokio::test]
async fn a_failing_target_falls_back_to_another_provider_invisibly() {
    let s = stack().await;
    let response = messages(&s.proxy, &hello("flaky", true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-target"], "anthropic");
    assert_eq!(response.headers()["x-switchyard-attempts"], "2");
    let events = events(&response.text().await.unwrap());
    assert!(text_of(&events).contains("claude-haiku-4-5"), "{events:?}");
    assert_eq!(names(&events).last(), Some(&"message_stop"));
    let (_, metrics) = s.proxy.admin_get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("fallbacks") && l.contains("from=\"broken\"") && l.contains("to=\"anthropic\"")),
        "{metrics}"
    );
    s.proxy.stop().await;
}

#[tokio::test]
async fn an_upstream_failure_after_the_commit_is_an_error_event_without_message_stop() {
    let s = stack().await;
    let response = messages(&s.proxy, &hello("midstream", true)).await;
    assert_eq!(response.status(), 200);
    let events = events(&response.text().await.unwrap());
    let names = names(&events);
    assert_eq!(names.last(), Some(&"error"), "{events:?}");
    assert!(!names.contains(&"message_stop"), "{events:?}");
    assert_eq!(text_of(&events).split_whitespace().count(), 2, "the two words before the failure: {events:?}");
    let (_, error) = events.last().unwrap();
    assert_eq!(error["error"]["type"], "api_error");
    assert!(!error["error"]["message"].as_str().unwrap().is_empty());

    // Non-streaming, the same upstream fails with a 500 and no target is left: a 502 in Anthropic's shape.
    let response = messages(&s.proxy, &hello("midstream", false)).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-switchyard-target"], "cut");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "api_error", "{error}");
    s.proxy.stop().await;
}

#[tokio::test]
async fn a_client_that_goes_away_mid_stream_cancels_the_upstream() {
    let s = stack().await;
    let mut response = messages(&s.proxy, &hello("endless", true)).await;
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    while !seen.contains("content_block_delta") {
        seen.push_str(&String::from_utf8_lossy(&response.chunk().await.unwrap().unwrap()));
    }
    assert_eq!(s.openai.cancelled(), 0);
    drop(response);
    assert!(
        eventually(Duration::from_secs(5), || s.openai.cancelled() == 1).await,
        "the upstream stream was not cancelled"
    );
    s.proxy.stop().await;
}
