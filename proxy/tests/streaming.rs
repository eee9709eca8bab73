//! Streaming semantics (design §3): commit on the first content chunk,
//! invisible failover before it, an explicit error event after it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use proxy::testing::{Behaviour, FakeOpenAi};
use serde_json::Value;
use support::{Proxy, chat_body, eventually, http_provider, mock_provider, sse_data};

fn route(targets: &str, extra: &str) -> String {
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {{name: chat}}\nspec:\n  targets:\n{targets}{extra}"
    )
}

async fn stream_body(proxy: &Proxy, body: &Value) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Vec<String>) {
    let response = proxy.chat(body).await;
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    (status, headers, sse_data(&text))
}

fn content_of(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_stream_passes_openai_chunks_through_and_ends_with_done() {
    let fake = FakeOpenAi::start().await;
    let manifests = http_provider("up", &fake.base_url(), None)
        + &route("  - {name: only, provider: up, model: gpt-4o-mini}\n", "");
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let (status, headers, events) = stream_body(&proxy, &chat_body("chat", true)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["x-switchyard-target"], "only");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(content_of(&events).contains("gpt-4o-mini"), "{events:?}");
    // The proxy asked the upstream for usage, but the client did not: no usage-only chunk.
    assert!(events.iter().all(|e| !e.contains(r#""choices":[]"#)), "{events:?}");
    assert_eq!(fake.requests()[0].body["stream_options"]["include_usage"], true);

    let mut with_usage = chat_body("chat", true);
    with_usage["stream_options"] = serde_json::json!({"include_usage": true});
    let (_, _, events) = stream_body(&proxy, &with_usage).await;
    let usage_chunk = &events[events.len() - 2];
    let usage: Value = serde_json::from_str(usage_chunk).unwrap();
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{usage_chunk}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_slow_first_token_falls_back_invisibly_to_the_next_target() {
    let fake = FakeOpenAi::start().await;
    let manifests = http_provider("up", &fake.base_url(), None)
        + &route(
            "  - {name: slow, provider: up, model: slow-ttft, weight: 100}\n  - {name: quick, provider: up, model: quick, weight: 1}\n",
            "  retry: {attempts: 0}\n  timeouts: {firstToken: 300ms}\n",
        );
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    // Weighted choice is random: repeat until the slow target was tried first.
    for _ in 0..5 {
        let started = Instant::now();
        let (status, headers, events) = stream_body(&proxy, &chat_body("chat", true)).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-switchyard-target"], "quick");
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        assert!(events.iter().all(|e| !e.contains("\"error\"")), "{events:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        if fake.requests().iter().any(|r| r.body["model"] == "slow-ttft") {
            proxy.stop().await;
            return;
        }
    }
    panic!("the slow target was never chosen first");
}

#[tokio::test]
async fn an_upstream_that_goes_quiet_mid_stream_ends_with_an_error_event_not_done() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::StallAfter { chunks: 2, stall: Duration::from_secs(5) });
    let manifests = http_provider("up", &fake.base_url(), None)
        + &route("  - {name: only, provider: up, model: m}\n", "  timeouts: {idle: 300ms}\n");
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let started = Instant::now();
    let (status, _, events) = stream_body(&proxy, &chat_body("chat", true)).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!content_of(&events).is_empty(), "the first chunks should have arrived: {events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{events:?}");
    assert!(last["error"]["message"].as_str().unwrap().contains("idle timeout"));
    assert!(!events.iter().any(|e| e == "[DONE]"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_connection_broken_mid_stream_ends_with_an_error_event_not_done() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::BreakAfter { chunks: 3 });
    let manifests = http_provider("up", &fake.base_url(), None)
        + &route("  - {name: only, provider: up, model: m}\n  - {name: other, provider: up, model: m2}\n", "");
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let (status, _, events) = stream_body(&proxy, &chat_body("chat", true)).await;
    assert_eq!(status, 200);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    assert_eq!(fake.hits(), 1, "after the first content chunk there is no silent switch");
    proxy.stop().await;
}

#[tokio::test]
async fn an_error_event_from_the_upstream_mid_stream_is_passed_on_as_an_error_event() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::ErrorEventAfter { chunks: 2 });
    let manifests =
        http_provider("up", &fake.base_url(), None) + &route("  - {name: only, provider: up, model: m}\n", "");
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let (_, _, events) = stream_body(&proxy, &chat_body("chat", true)).await;
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("mid-stream"), "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    proxy.stop().await;
}

#[tokio::test]
async fn an_error_before_the_first_content_chunk_falls_back_invisibly() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::ErrorEventAfter { chunks: 0 });
    let manifests = http_provider("up", &fake.base_url(), None)
        + &route("  - {name: only, provider: up, model: m}\n", "  retry: {attempts: 1, backoff: 1ms}\n");
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let (status, headers, events) = stream_body(&proxy, &chat_body("chat", true)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-switchyard-attempts"], "2");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events.iter().all(|e| !e.contains("\"error\"")), "{events:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_request() {
    let fake = FakeOpenAi::start().await;
    let manifests =
        http_provider("up", &fake.base_url(), None) + &route("  - {name: only, provider: up, model: endless}\n", "");
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", true)).await;
    let mut body = response.bytes_stream();
    let mut received = 0;
    while received < 3 {
        received += usize::from(body.next().await.unwrap().is_ok());
    }
    assert_eq!(fake.cancelled(), 0);
    drop(body);
    assert!(
        eventually(Duration::from_secs(3), || fake.cancelled() == 1).await,
        "the upstream stream was not cancelled after the client left"
    );
    assert!(eventually(Duration::from_secs(3), || fake.in_flight() == 0).await);
    proxy.stop().await;
}

#[tokio::test]
async fn the_mock_provider_streams_at_its_configured_speed() {
    let manifests = mock_provider("m", "  mock: {latency: 100ms, tokensPerSecond: 50}\n")
        + &route("  - {name: only, provider: m, model: demo}\n", "");
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let started = Instant::now();
    let mut body = chat_body("chat", true);
    body["max_tokens"] = 10.into();
    let (status, _, events) = stream_body(&proxy, &body).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(content_of(&events).split_whitespace().count(), 10, "{events:?}");
    // 100 ms latency + 9 gaps of 20 ms.
    assert!(took >= Duration::from_millis(280), "took {took:?}");
    let finish: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    proxy.stop().await;
}
