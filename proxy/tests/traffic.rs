//! Target choice, retries and fallbacks, over real HTTP on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proxy::testing::{Behaviour, FakeOpenAi};
use serde_json::Value;
use support::{Proxy, chat_body, http_provider, mock_provider, route_over};

async fn target_counts(proxy: &Proxy, alias: &str, n: usize, header: Option<(&str, String)>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let mut request =
            proxy.client.post(format!("{}/v1/chat/completions", proxy.base)).json(&chat_body(alias, false));
        if let Some((name, prefix)) = &header {
            request = request.header(*name, format!("{prefix}{i}"));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let target = response.headers()["x-switchyard-target"].to_str().unwrap().to_owned();
        *counts.entry(target).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn weighted_split_follows_the_weights_within_statistical_bounds() {
    let manifests = mock_provider("m", "")
        + r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets:
  - {name: big, provider: m, model: a, weight: 90}
  - {name: small, provider: m, model: b, weight: 10}
  - {name: drained, provider: m, model: c, weight: 0}
"#;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let n = 3000;
    let counts = target_counts(&proxy, "chat", n, None).await;
    // Binomial(3000, 0.9): mean 2700, sd 16.4; 5 sd either side.
    let big = counts.get("big").copied().unwrap_or(0);
    assert!((2618..=2782).contains(&big), "big got {big} of {n}: {counts:?}");
    assert_eq!(counts.get("drained"), None, "a weight-0 target was picked: {counts:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn canary_share_has_hundredth_of_a_percent_resolution() {
    let manifests = mock_provider("m", "")
        + r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets:
  - {name: stable, provider: m, model: a}
  canary:
    target: {name: next, provider: m, model: b}
    percent: "2.5"
"#;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let table = proxy.table().await;
    assert_eq!(table["table"]["routes"]["chat"]["canary"]["share"], 250);
    let n = 4000;
    let counts = target_counts(&proxy, "chat", n, None).await;
    // Binomial(4000, 0.025): mean 100, sd 9.9; 5 sd either side.
    let next = counts.get("next").copied().unwrap_or(0);
    assert!((51..=149).contains(&next), "canary got {next} of {n}");
    proxy.stop().await;
}

#[tokio::test]
async fn sticky_header_keeps_each_caller_on_one_side() {
    let manifests = mock_provider("m", "")
        + r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets:
  - {name: a, provider: m, model: a, weight: 1}
  - {name: b, provider: m, model: b, weight: 1}
  canary:
    target: {name: next, provider: m, model: c}
    percent: "30"
    sticky: {header: x-user-id}
"#;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let mut sides = HashMap::new();
    for user in 0..40 {
        let user = format!("user-{user}");
        let mut seen = Vec::new();
        for _ in 0..5 {
            let response = proxy.chat_with(&chat_body("chat", false), &[("x-user-id", &user)]).await;
            seen.push(response.headers()["x-switchyard-target"].to_str().unwrap().to_owned());
        }
        assert!(seen.iter().all(|t| t == &seen[0]), "{user} moved between targets: {seen:?}");
        *sides.entry(seen[0].clone()).or_insert(0) += 1;
    }
    assert_eq!(sides.len(), 3, "40 callers should spread over all three targets: {sides:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn fallbacks_are_tried_in_order_after_the_route_targets_fail() {
    let fake = FakeOpenAi::start().await;
    let manifests = http_provider("up", &fake.base_url(), None)
        + r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets:
  - {name: first, provider: up, model: fail-500}
  fallbacks: [second, third]
  retry: {attempts: 1, backoff: 1ms}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: second}
spec:
  targets:
  - {name: second, provider: up, model: fail-503}
  retry: {attempts: 0}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: third}
spec:
  targets:
  - {name: third, provider: up, model: healthy}
"#;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-target"], "third");
    assert_eq!(response.headers()["x-switchyard-route"], "third");
    let models: Vec<String> = fake.requests().iter().map(|r| r.body["model"].as_str().unwrap().to_owned()).collect();
    // The first target is retried once (attempts: 1), the second not at all.
    assert_eq!(models, ["fail-500", "fail-500", "fail-503", "healthy"]);
    let body: Value = response.json().await.unwrap();
    assert!(body["choices"][0]["message"]["content"].as_str().unwrap().contains("healthy"));
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert!(metrics.contains(r#"switchyard_fallbacks_total{route="chat",from="first",to="third"} 1"#), "{metrics}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_400_from_the_upstream_is_neither_retried_nor_sent_to_a_fallback() {
    let fake = FakeOpenAi::start().await;
    let manifests = http_provider("up", &fake.base_url(), None)
        + r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets:
  - {name: first, provider: up, model: fail-400}
  - {name: other, provider: up, model: healthy, weight: 0}
  fallbacks: [backup]
  retry: {attempts: 3, backoff: 1ms}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: backup}
spec:
  targets:
  - {name: backup, provider: up, model: healthy}
"#;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(fake.hits(), 1, "a 400 must reach the upstream exactly once");
    proxy.stop().await;
}

#[tokio::test]
async fn retry_after_from_the_upstream_is_waited_for_before_the_retry() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::Status {
        status: 429,
        body:
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#
                .into(),
        headers: vec![("retry-after".into(), "1".into())],
    });
    let manifests = http_provider("up", &fake.base_url(), None)
        + r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets:
  - {name: only, provider: up, model: healthy}
  retry: {attempts: 2, backoff: 1ms, maxBackoff: 2ms}
"#;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-attempts"], "2");
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?}, before the 1 s Retry-After");
    assert!(gap < Duration::from_secs(3), "retried only after {gap:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn all_targets_failing_gives_a_502_in_openai_shape_listing_the_attempts() {
    let fake = FakeOpenAi::start().await;
    let manifests = http_provider("up", &fake.base_url(), None)
        + r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets:
  - {name: a, provider: up, model: fail-500}
  - {name: b, provider: up, model: fail-503}
  retry: {attempts: 0}
"#;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 502);
    assert!(response.headers().contains_key("x-request-id"));
    let last_tried = response.headers()["x-switchyard-target"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("all 2 attempt(s) for `chat` failed"), "{message}");
    assert_eq!(body["error"]["attempts"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(
        body["error"]["attempts"][1]["target"],
        last_tried.as_str(),
        "x-switchyard-target names the last target tried"
    );
    let (_, metrics) = proxy.admin_get("/metrics").await;
    let failed: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("switchyard_requests_total{") && l.contains(r#"route="chat""#))
        .filter(|l| l.contains(r#"code="5xx""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failed, 1.0, "the failed request was not counted once: {metrics}");
    proxy.stop().await;
}

#[tokio::test]
async fn an_open_circuit_skips_the_failing_target_until_it_may_probe_again() {
    let fake = FakeOpenAi::start().await;
    let manifests = http_provider("up", &fake.base_url(), None)
        + r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets:
  - {name: broken, provider: up, model: fail-500, weight: 1000}
  - {name: good, provider: up, model: healthy, weight: 1}
  retry: {attempts: 0}
  circuitBreaker: {consecutiveFailures: 2, openFor: 1h}
"#;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    for _ in 0..6 {
        let response = proxy.chat(&chat_body("chat", false)).await;
        assert_eq!(response.status(), 200);
    }
    let broken_hits = fake.requests().iter().filter(|r| r.body["model"] == "fail-500").count();
    assert!(broken_hits <= 2, "the broken target was tried {broken_hits} times after its circuit opened");
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert!(metrics.contains(r#"switchyard_circuit_state{target="broken"} 1"#), "{metrics}");
    proxy.stop().await;
}

#[tokio::test]
async fn the_api_key_from_the_secret_reaches_the_upstream_as_a_bearer_token() {
    let fake = FakeOpenAi::start().await;
    fake.require_api_key("sk-test-4f9a");
    let manifests = http_provider("up", &fake.base_url(), Some("sk-test-4f9a"))
        + r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets:
  - {name: only, provider: up, model: gpt-4o-mini}
"#;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 200);
    let recorded = &fake.requests()[0];
    assert_eq!(recorded.path, "/v1/chat/completions");
    assert_eq!(recorded.header("authorization"), Some("Bearer sk-test-4f9a"));
    assert_eq!(recorded.body["model"], "gpt-4o-mini");
    let (_, table) = proxy.admin_get("/debug/table").await;
    assert!(!table.contains("sk-test-4f9a"), "the key leaked into /debug/table");
    assert!(table.contains("*****"));
    proxy.stop().await;
}

#[tokio::test]
async fn unknown_model_returns_openai_404_naming_the_known_aliases() {
    let manifests = chat_on_mock();
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat_with(&chat_body("gpt-5", false), &[("x-request-id", "abc-123")]).await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
    assert!(body["error"]["message"].as_str().unwrap().contains("`chat`"), "{body}");

    let bad = proxy.client.post(format!("{}/v1/chat/completions", proxy.base)).body("{not json").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("not valid JSON"), "{body}");

    let models: Value =
        proxy.client.get(format!("{}/v1/models", proxy.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "chat");
    proxy.stop().await;
}

#[tokio::test]
async fn the_request_timeout_bounds_all_attempts_together() {
    let fake = FakeOpenAi::start().await;
    for _ in 0..10 {
        fake.push(Behaviour::SlowHeaders(Duration::from_secs(5)));
    }
    let manifests = http_provider("up", &fake.base_url(), None)
        + r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets: [{name: slow, provider: up, model: m}]
  retry: {attempts: 5, backoff: 1ms}
  timeouts: {request: 600ms, attempt: 250ms}
"#;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let started = Instant::now();
    let response = proxy.chat(&chat_body("chat", false)).await;
    let took = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(fake.hits() >= 2, "the attempt timeout should have allowed a retry");
    proxy.stop().await;
}

#[tokio::test]
async fn when_every_circuit_is_open_the_answer_is_503_naming_the_reason_without_calling_upstream() {
    let fake = FakeOpenAi::start().await;
    let manifests = http_provider("up", &fake.base_url(), None)
        + r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets: [{name: only, provider: up, model: fail-500}]
  retry: {attempts: 0}
  circuitBreaker: {consecutiveFailures: 1, openFor: 1h}
"#;
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    assert_eq!(proxy.chat(&chat_body("chat", false)).await.status(), 502);
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_available_target", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("circuit open"), "{body}");
    assert_eq!(fake.hits(), 1, "an open circuit must keep requests away from the upstream");
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_body_over_32_mib_is_refused_with_400_and_one_below_is_read_whole() {
    let manifests = chat_on_mock();
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let url = format!("{}/v1/chat/completions", proxy.base);
    let addr = proxy.base.trim_start_matches("http://").to_owned();
    // Declared too large: refused from the head, before any of the body is sent.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        proxy::chat::MAX_BODY_BYTES + 1
    );
    let answer = raw_exchange(&addr, head.as_bytes(), &[]).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("larger than 33554432 bytes"), "{answer}");
    // Sent chunked: refused once the pieces pass the limit. The refusal may
    // come while pieces are still being written; they are not waited for.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n"
    );
    let piece = format!("100000\r\n{}\r\n", "x".repeat(1 << 20));
    let pieces = vec![piece.into_bytes(); proxy::chat::MAX_BODY_BYTES / (1 << 20) + 1];
    let answer = raw_exchange(&addr, head.as_bytes(), &pieces).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("larger than 33554432 bytes"), "{answer}");

    // Many pieces that add up to a valid request are joined.
    let small =
        format!(r#"{{"model":"chat","messages":[{{"role":"user","content":"hi"}}],"user":"{}"}}"#, "y".repeat(3000));
    let response = post_in_pieces(&proxy, &url, &small, 100).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    proxy.stop().await;
}

/// A mock provider `m` and a route `chat` with one target on it.
fn chat_on_mock() -> String {
    mock_provider("m", "")
        + r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets: [{provider: m, model: a}]
"#
}

/// POSTs `body` with chunked transfer encoding, `size` bytes per chunk.
async fn post_in_pieces(proxy: &Proxy, url: &str, body: &str, size: usize) -> reqwest::Response {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = body.as_bytes().chunks(size).map(|c| Ok(c.to_vec())).collect();
    let stream = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
    proxy.client.post(url).body(stream).send().await.unwrap()
}

/// Writes `head`, then `pieces` until the server stops reading, and returns
/// the server's answer (an error: a head and one JSON object). A raw socket,
/// because an HTTP client that is still sending may report the server's
/// early close instead of its answer.
async fn raw_exchange(addr: &str, head: &[u8], pieces: &[Vec<u8>]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(head).await.unwrap();
    let pieces = pieces.to_vec();
    let writer = tokio::spawn(async move {
        for piece in pieces {
            if write.write_all(&piece).await.is_err() {
                return;
            }
        }
    });
    let mut answer = vec![0u8; 4096];
    let mut filled = 0;
    while filled < answer.len() {
        // A server that never answers fails the test's assertions, not its time limit.
        match tokio::time::timeout(Duration::from_secs(30), read.read(&mut answer[filled..])).await {
            Ok(Ok(0) | Err(_)) | Err(_) => break,
            Ok(Ok(n)) => filled += n,
        }
        // The error is one JSON object after the head: its last `}` ends it.
        let got = &answer[..filled];
        if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
            break;
        }
    }
    writer.abort();
    String::from_utf8_lossy(&answer[..filled]).into_owned()
}

#[tokio::test]
async fn a_provider_whose_tokens_per_minute_are_spent_is_skipped_until_the_next_minute() {
    let manifests = mock_provider("tight", "  limits: {tokensPerMinute: 1}\n")
        + &mock_provider("roomy", "")
        + &route_over("chat", &["{name: first, provider: tight, model: a}"], "  fallbacks: [spare]\n")
        + &route_over("spare", &["{name: second, provider: roomy, model: b}"], "")
        + &route_over("alone", &["{name: only, provider: tight, model: c}"], "");
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let first = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(first.headers()["x-switchyard-target"], "first");
    let answer: Value = first.json().await.unwrap();
    assert!(answer["usage"]["total_tokens"].as_u64().unwrap() >= 1, "{answer}");
    // That answer spent the minute's budget: the next request falls back...
    let second = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-switchyard-target"], "second");
    // ...and a route with nowhere else to go gets the proxy's own 429.
    let refused = proxy.chat(&chat_body("alone", false)).await;
    assert_eq!(refused.status(), 429);
    let headers = refused.headers();
    assert_eq!(headers["x-ratelimit-limit-tokens"], "1");
    assert_eq!(headers["x-ratelimit-remaining-tokens"], "0");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let error: Value = refused.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("`tokensPerMinute`"), "{error}");
    proxy.stop().await;
}
