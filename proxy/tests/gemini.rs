//! OpenAI-shaped requests served by a Gemini upstream, over real HTTP on
//! loopback against a fake that speaks Gemini's wire format.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use std::time::Duration;

use proxy::testing::{FakeGemini, GeminiBehaviour};
use serde_json::{Value, json};
use support::{Proxy, chat_body, sse_data};

fn gemini_provider(base_url: &str, key: &str) -> String {
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ProviderSecret\nmetadata:\n  name: google\nspec:\n  provider: gemini\n  baseUrl: {base_url}\n  apiKey:\n    secretKeyRef: {{name: google-key, key: apiKey}}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: google-key\nstringData:\n  apiKey: {key}\n---\n"
    )
}

fn route(extra: &str) -> String {
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {{name: chat}}\nspec:\n  targets:\n  - {{name: flash, provider: google, model: gemini-2.5-flash}}\n{extra}"
    )
}

#[tokio::test]
async fn a_chat_request_is_translated_to_generate_content_and_the_answer_back() {
    let fake = FakeGemini::start().await;
    fake.require_api_key("AIza-test-1");
    let proxy = Proxy::start(&[("all.yaml", &(gemini_provider(&fake.base_url(), "AIza-test-1") + &route("")))]).await;
    let body = json!({"model": "chat", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "say hello"}]});
    let response = proxy.chat(&body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert!(answer["choices"][0]["message"]["content"].as_str().unwrap().contains("gemini-2.5-flash"), "{answer}");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{answer}");

    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(sent.header("x-goog-api-key"), Some("AIza-test-1"));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(sent.body["systemInstruction"]["parts"][0]["text"], "You are terse.");
    assert_eq!(sent.body["contents"], json!([{"role": "user", "parts": [{"text": "say hello"}]}]));
    proxy.stop().await;
}

#[tokio::test]
async fn a_gemini_stream_becomes_openai_chunks_ending_with_done() {
    let fake = FakeGemini::start().await;
    let proxy = Proxy::start(&[("all.yaml", &(gemini_provider(&fake.base_url(), "k") + &route("")))]).await;
    let mut body = chat_body("chat", true);
    body["stream_options"] = json!({"include_usage": true});
    let response = proxy.chat(&body).await;
    assert_eq!(response.status(), 200);
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert!(text.contains("gemini-2.5-flash"), "{text}");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"), "{events:?}");
    assert!(chunks.last().unwrap()["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{events:?}");
    assert_eq!(fake.requests()[0].path, "/v1beta/models/gemini-2.5-flash:streamGenerateContent");
    assert_eq!(fake.requests()[0].query.as_deref(), Some("alt=sse"));
    proxy.stop().await;
}

#[tokio::test]
async fn gemini_function_calls_get_ids_and_come_back_as_openai_tool_calls() {
    let fake = FakeGemini::start().await;
    let proxy = Proxy::start(&[("all.yaml", &(gemini_provider(&fake.base_url(), "k") + &route("")))]).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let body = json!({"model": "chat", "tools": tools, "messages": [{"role": "user", "content": "weather in Oslo?"}]});
    let answer: Value = proxy.chat(&body).await.json().await.unwrap();
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls", "{answer}");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Oslo"})
    );
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");

    // The tool result goes back as a functionResponse named after the call.
    let follow_up = json!({"model": "chat", "tools": tools, "messages": [
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "-3C, snow"}]});
    let response = proxy.chat(&follow_up).await;
    assert_eq!(response.status(), 200);
    let sent = &fake.requests()[1].body;
    let response_part = &sent["contents"][2]["parts"][0]["functionResponse"];
    assert_eq!(response_part["name"], "get_weather", "{sent}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_gemini_429_is_retried_after_the_delay_its_body_names() {
    let fake = FakeGemini::start().await;
    fake.push(GeminiBehaviour::status(429));
    let manifests =
        gemini_provider(&fake.base_url(), "k") + &route("  retry: {attempts: 1, backoff: 1ms, maxBackoff: 2ms}\n");
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 200);
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?}, before RetryInfo's 1s");
    proxy.stop().await;
}

#[tokio::test]
async fn a_cut_gemini_stream_ends_with_an_error_event_not_done() {
    let fake = FakeGemini::start().await;
    fake.push(GeminiBehaviour::BreakAfter { chunks: 3 });
    let proxy = Proxy::start(&[("all.yaml", &(gemini_provider(&fake.base_url(), "k") + &route("")))]).await;
    let events = sse_data(&proxy.chat(&chat_body("chat", true)).await.text().await.unwrap());
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    proxy.stop().await;
}

#[tokio::test]
async fn gemini_errors_reach_the_client_in_openai_shape() {
    let fake = FakeGemini::start().await;
    fake.push(GeminiBehaviour::status(400));
    let proxy = Proxy::start(&[("all.yaml", &(gemini_provider(&fake.base_url(), "k") + &route("")))]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(fake.hits(), 1);
    proxy.stop().await;
}
