//! OpenAI-shaped requests served by an Anthropic Messages upstream, over
//! real HTTP on loopback against a fake that speaks Anthropic's wire format.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use proxy::ratelimit::parse_duration;
use proxy::testing::{AnthropicBehaviour, FakeAnthropic, FakeOpenAi};
use serde_json::{Value, json};
use support::{Proxy, chat_body, http_provider, keyed_provider, route_over, sse_data};

fn anthropic_provider(name: &str, base_url: &str, key: &str) -> String {
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ProviderSecret\nmetadata:\n  name: {name}\nspec:\n  provider: anthropic\n  baseUrl: {base_url}\n  apiKey:\n    secretKeyRef: {{name: {name}-key, key: apiKey}}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}-key\nstringData:\n  apiKey: {key}\n---\n"
    )
}

const ROUTE: &str = r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets:
  - {name: claude, provider: claude, model: claude-haiku-4-5}
"#;

#[tokio::test]
async fn a_chat_request_is_translated_to_messages_and_the_answer_back() {
    let fake = FakeAnthropic::start().await;
    fake.require_api_key("sk-ant-test-1");
    let manifests = anthropic_provider("claude", &fake.base_url(), "sk-ant-test-1") + ROUTE;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let body = json!({"model": "chat", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "say hello"}]});
    let response = proxy.chat(&body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-target"], "claude");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert!(answer["choices"][0]["message"]["content"].as_str().unwrap().contains("claude-haiku-4-5"), "{answer}");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{answer}");

    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-test-1"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(sent.body["system"], "You are terse.");
    assert_eq!(sent.body["model"], "claude-haiku-4-5");
    assert_eq!(sent.body["max_tokens"], 4096);
    assert_eq!(sent.body["messages"], json!([{"role": "user", "content": "say hello"}]));
    proxy.stop().await;
}

#[tokio::test]
async fn an_anthropic_stream_becomes_openai_chunks_ending_with_done() {
    let fake = FakeAnthropic::start().await;
    let manifests = anthropic_provider("claude", &fake.base_url(), "k-123") + ROUTE;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let mut body = chat_body("chat", true);
    body["stream_options"] = json!({"include_usage": true});
    let response = proxy.chat(&body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert!(text.contains("claude-haiku-4-5"), "{text}");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]), "{usage}");
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(fake.requests()[0].body["stream"], true);
    proxy.stop().await;
}

#[tokio::test]
async fn tool_calls_come_back_in_openai_shape_with_the_anthropic_id() {
    let fake = FakeAnthropic::start().await;
    let manifests = anthropic_provider("claude", &fake.base_url(), "k-123") + ROUTE;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let body = json!({"model": "chat", "tools": tools, "messages": [{"role": "user", "content": "weather in Oslo?"}]});
    let answer: Value = proxy.chat(&body).await.json().await.unwrap();
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls", "{answer}");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Oslo"})
    );
    assert!(call["id"].as_str().unwrap().starts_with("toolu_"), "{call}");
    let sent = &fake.requests()[0].body;
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert_eq!(sent["tools"][0]["input_schema"]["required"], json!(["city"]));

    // The same, streamed: the arguments arrive as fragments of one tool call.
    let mut body = body;
    body["stream"] = true.into();
    let response = proxy.chat(&body).await;
    let events = sse_data(&response.text().await.unwrap());
    let chunks: Vec<Value> =
        events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect();
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), json!({"city": "Oslo"}), "{events:?}");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"), "{events:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn an_overloaded_anthropic_falls_back_to_another_provider() {
    let anthropic = FakeAnthropic::start().await;
    let openai = FakeOpenAi::start().await;
    for _ in 0..3 {
        anthropic.push(AnthropicBehaviour::status(529));
    }
    let manifests = anthropic_provider("claude", &anthropic.base_url(), "k-123")
        + &http_provider("gpt", &openai.base_url(), None)
        + r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets:
  - {name: claude, provider: claude, model: claude-haiku-4-5, weight: 100}
  fallbacks: [backup]
  retry: {attempts: 1, backoff: 1ms}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: backup}
spec:
  targets:
  - {name: gpt, provider: gpt, model: gpt-4o-mini}
"#;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-target"], "gpt");
    assert_eq!(anthropic.hits(), 2, "529 is retried once, then the fallback serves");
    proxy.stop().await;
}

#[tokio::test]
async fn anthropic_errors_reach_the_client_in_openai_shape_and_bad_requests_are_final() {
    let fake = FakeAnthropic::start().await;
    fake.push(AnthropicBehaviour::status(400));
    let manifests = anthropic_provider("claude", &fake.base_url(), "k-123") + ROUTE;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(fake.hits(), 1);

    // A request Anthropic cannot express is refused before anything is sent.
    let mut many = chat_body("chat", false);
    many["n"] = 3.into();
    let response = proxy.chat(&many).await;
    assert_eq!(response.status(), 400, "only the client can fix this request");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("`n`"), "{body}");
    assert_eq!(fake.hits(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn an_error_event_mid_stream_ends_the_client_stream_with_an_error_not_done() {
    let fake = FakeAnthropic::start().await;
    fake.push(AnthropicBehaviour::ErrorEventAfter { chunks: 2 });
    let manifests = anthropic_provider("claude", &fake.base_url(), "k-123") + ROUTE;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", true)).await;
    let events = sse_data(&response.text().await.unwrap());
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{events:?}");
    assert!(last["error"]["message"].as_str().unwrap().contains("Overloaded"), "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_cut_anthropic_stream_ends_with_an_error_event_not_done() {
    let fake = FakeAnthropic::start().await;
    fake.push(AnthropicBehaviour::BreakAfter { chunks: 3 });
    let manifests = anthropic_provider("claude", &fake.base_url(), "k-123") + ROUTE;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let events = sse_data(&proxy.chat(&chat_body("chat", true)).await.text().await.unwrap());
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    proxy.stop().await;
}

/// A route over one Anthropic provider `claude` with `targets`, falling back
/// to `fallback` (a route over `fallback_targets`) when given. `least-busy`
/// keeps the manifest's order while nothing is in flight.
fn context_routes(targets: &[&str], fallback: &[&str]) -> String {
    let fallbacks = if fallback.is_empty() { String::new() } else { "  fallbacks: [big]\n".to_owned() };
    let mut out = route_over("chat", targets, &format!("  strategy: least-busy\n{fallbacks}"));
    if !fallback.is_empty() {
        out += &route_over("big", fallback, "");
    }
    out
}

#[tokio::test]
async fn a_context_length_error_falls_back_to_a_target_with_a_larger_window() {
    let fake = FakeAnthropic::start().await;
    let manifests = anthropic_provider("claude", &fake.base_url(), "k-123")
        + &context_routes(
            &[
                "{name: small, provider: claude, model: prompt-too-long, contextWindow: 8000}",
                "{name: unsized, provider: claude, model: claude-unsized}",
                "{name: same, provider: claude, model: claude-same, contextWindow: 8000}",
            ],
            &["{name: large, provider: claude, model: claude-large, contextWindow: 200000}"],
        );
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    for stream in [false, true] {
        let response = proxy.chat(&chat_body("chat", stream)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-switchyard-target"], "large");
        assert_eq!(response.headers()["x-switchyard-route"], "big");
        assert_eq!(response.headers()["x-switchyard-attempts"], "2");
        assert!(response.text().await.unwrap().contains("claude-large"));
    }
    // Neither the too-small target was retried nor were the targets without
    // a larger window tried.
    let models: Vec<_> = fake.requests().iter().map(|r| r.body["model"].as_str().unwrap().to_owned()).collect();
    assert_eq!(models, ["prompt-too-long", "claude-large", "prompt-too-long", "claude-large"]);
    proxy.stop().await;
}

#[tokio::test]
async fn a_failed_target_without_a_window_falls_back_to_any_target_with_one() {
    let fake = FakeAnthropic::start().await;
    let manifests = anthropic_provider("claude", &fake.base_url(), "k-123")
        + &context_routes(
            &[
                "{name: unsized, provider: claude, model: prompt-too-long}",
                "{name: also-unsized, provider: claude, model: claude-unsized}",
                "{name: sized, provider: claude, model: claude-sized, contextWindow: 100000}",
            ],
            &[],
        );
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-target"], "sized");
    assert_eq!(fake.hits(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn without_a_larger_window_the_client_gets_the_context_length_error() {
    let fake = FakeAnthropic::start().await;
    let manifests = anthropic_provider("claude", &fake.base_url(), "k-123")
        + &context_routes(
            &[
                "{name: small, provider: claude, model: prompt-too-long, contextWindow: 8000}",
                "{name: smaller, provider: claude, model: claude-smaller, contextWindow: 4000}",
            ],
            &["{name: unsized, provider: claude, model: claude-unsized}"],
        );
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-switchyard-target"], "small");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "context_length_exceeded", "{error}");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("prompt is too long"), "{message}");
    assert!(message.contains("`chat/smaller`") && message.contains("`big/unsized`"), "{message}");
    let attempts = error["error"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{error}");
    assert_eq!(attempts[0]["target"], "small");
    assert_eq!(fake.hits(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn an_invalid_request_that_is_not_about_length_never_falls_back() {
    let fake = FakeAnthropic::start().await;
    let manifests = anthropic_provider("claude", &fake.base_url(), "k-123")
        + &context_routes(
            &[
                "{name: small, provider: claude, model: fail-400, contextWindow: 8000}",
                "{name: large, provider: claude, model: claude-large, contextWindow: 200000}",
            ],
            &[],
        );
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_ne!(error["error"]["code"], "context_length_exceeded", "{error}");
    assert_eq!(fake.hits(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn anthropic_rate_limit_headers_reach_an_openai_client_normalised() {
    let fake = FakeAnthropic::start().await;
    let manifests = anthropic_provider("claude", &fake.base_url(), "k-123") + ROUTE;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    for stream in [false, true] {
        let response = proxy.chat(&chat_body("chat", stream)).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["x-ratelimit-limit-requests"], "4000");
        assert_eq!(headers["x-ratelimit-remaining-requests"], "3999");
        assert_eq!(headers["x-ratelimit-limit-tokens"], "2400000");
        assert_eq!(headers["x-ratelimit-remaining-tokens"], "2400000");
        // The fake resets in a second, as an RFC 3339 timestamp: OpenAI's
        // clients get a duration string such as `412ms`.
        for name in ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"] {
            let reset = headers[name].to_str().unwrap();
            let reset = parse_duration(reset).unwrap_or_else(|| panic!("{name}: {reset}"));
            assert!(reset <= std::time::Duration::from_secs(1), "{name}: {reset:?}");
        }
        assert!(headers.keys().all(|name| !name.as_str().starts_with("anthropic-")), "{headers:?}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn an_upstream_429_after_retries_carries_retry_after_and_the_limits() {
    let fake = FakeAnthropic::start().await;
    let manifests = anthropic_provider("claude", &fake.base_url(), "k-123")
        + &route_over(
            "chat",
            &["{name: claude, provider: claude, model: rate-limited}"],
            "  retry: {attempts: 1, backoff: 1ms}\n",
        );
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(fake.hits(), 2, "retried once after the upstream's retry-after");
    let headers = response.headers();
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    assert!(parse_duration(headers["x-ratelimit-reset-requests"].to_str().unwrap()).is_some(), "{headers:?}");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "rate_limit_exceeded", "{error}");
    proxy.stop().await;
}

#[tokio::test]
async fn the_proxys_own_request_limit_answers_429_with_retry_after_and_limits() {
    let fake = FakeAnthropic::start().await;
    let manifests =
        keyed_provider("claude", "anthropic", &fake.base_url(), "k-123", "  limits: {requestsPerMinute: 1}\n") + ROUTE;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    assert_eq!(proxy.chat(&chat_body("chat", false)).await.status(), 200);
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(fake.hits(), 1, "the second request never reached the upstream");
    let headers = response.headers();
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(headers["x-ratelimit-limit-requests"], "1");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    let reset = parse_duration(headers["x-ratelimit-reset-requests"].to_str().unwrap()).unwrap();
    assert!(reset <= std::time::Duration::from_secs(60), "{reset:?}");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "rate_limit_error", "{error}");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    proxy.stop().await;
}
