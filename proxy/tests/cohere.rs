//! Cohere targets over real HTTP on loopback, against a fake that speaks
//! Cohere v2's wire format: chat both ways, typed stream events, tool calls,
//! errors and embed.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use proxy::testing::FakeCohere;
use proxy::testing::fake_cohere::{cohere_monthly_limit, cohere_status};
use serde_json::{Value, json};
use support::{Proxy, chat_body, embed, keyed_provider, route_over, sse_data};

fn manifests(fake: &FakeCohere, route_extra: &str) -> String {
    keyed_provider("cohere", "cohere", &fake.base_url(), "co-key-1", "")
        + &route_over("chat", &["{name: command, provider: cohere, model: command-a-03-2025}"], route_extra)
        + &route_over("embed", &["{name: embed, provider: cohere, model: embed-v4.0}"], "")
}

#[tokio::test]
async fn a_chat_request_is_translated_to_v2_chat_and_the_answer_back() {
    let fake = FakeCohere::start().await;
    fake.require_api_key("co-key-1");
    let proxy = Proxy::start(&[("all.yaml", &manifests(&fake, ""))]).await;
    let body = json!({"model": "chat", "top_p": 0.5, "max_completion_tokens": 40, "user": "u1", "messages": [
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "say hello"}]});
    let response = proxy.chat(&body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "chat");
    assert_eq!(answer["choices"][0]["message"]["content"], "hello from command-a-03-2025: this is a fake cohere reply");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["prompt_tokens"], 5, "billed input tokens, not the template-inflated count");

    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v2/chat");
    assert_eq!(sent.header("authorization"), Some("Bearer co-key-1"));
    assert_eq!(
        sent.body,
        json!({"model": "command-a-03-2025", "p": 0.5, "max_tokens": 40, "messages": [
            {"role": "system", "content": "You are terse."}, {"role": "user", "content": "say hello"}]})
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_cohere_stream_becomes_openai_chunks_ending_with_done() {
    let fake = FakeCohere::start().await;
    let proxy = Proxy::start(&[("all.yaml", &manifests(&fake, ""))]).await;
    let mut body = chat_body("chat", true);
    body["stream_options"] = json!({"include_usage": true});
    let response = proxy.chat(&body).await;
    assert_eq!(response.status(), 200);
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "hello from command-a-03-2025: this is a fake cohere reply");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 9, "{events:?}");
    assert_eq!(fake.requests()[0].body["stream"], true);

    // Without include_usage the client gets no usage chunk.
    let events = sse_data(&proxy.chat(&chat_body("chat", true)).await.text().await.unwrap());
    assert!(events.iter().all(|e| !e.contains(r#""choices":[]"#)), "{events:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn tool_calls_come_back_as_openai_tool_calls_json_and_streamed() {
    let fake = FakeCohere::start().await;
    let proxy = Proxy::start(&[("all.yaml", &manifests(&fake, ""))]).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let body = json!({"model": "chat", "tools": tools, "messages": [{"role": "user", "content": "weather in Oslo?"}]});
    let answer: Value = proxy.chat(&body).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls", "{answer}");
    let call = answer["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"], json!({"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}));
    assert!(call["id"].as_str().unwrap().starts_with("get_weather_"), "{call}");

    let follow_up = json!({"model": "chat", "tools": tools, "messages": [
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "-3C, snow"}]});
    assert_eq!(proxy.chat(&follow_up).await.status(), 200);
    let sent = &fake.requests()[1].body;
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], call["id"], "{sent}");
    assert_eq!(sent["messages"][2], json!({"role": "tool", "tool_call_id": call["id"], "content": "-3C, snow"}));

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = sse_data(&proxy.chat(&streamed).await.text().await.unwrap());
    let chunks: Vec<Value> =
        events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect();
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0/function/arguments").and_then(Value::as_str))
        .collect();
    assert_eq!(arguments, r#"{"city":"Oslo"}"#, "{events:?}");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"), "{events:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn cohere_errors_reach_the_client_in_openai_shape() {
    let fake = FakeCohere::start().await;
    fake.push(cohere_status(400));
    let proxy = Proxy::start(&[("all.yaml", &manifests(&fake, "  retry: {attempts: 2, backoff: 1ms}\n"))]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("too many tokens"), "{body}");
    assert_eq!(fake.hits(), 1, "a context-length error is not retried");

    // An invalid token (498) and a used-up trial key are not retried either.
    fake.push(cohere_status(498));
    fake.push(cohere_monthly_limit());
    assert_eq!(proxy.chat(&chat_body("chat", false)).await.status(), 502);
    assert_eq!(fake.hits(), 2);
    assert_eq!(proxy.chat(&chat_body("chat", false)).await.status(), 429);
    assert_eq!(fake.hits(), 3);
    proxy.stop().await;
}

#[tokio::test]
async fn an_error_at_the_end_of_a_stream_is_an_error_event_not_done() {
    let fake = FakeCohere::start().await;
    fake.push(proxy::testing::Behaviour::ErrorEventAfter { chunks: 3 });
    let proxy = Proxy::start(&[("all.yaml", &manifests(&fake, ""))]).await;
    let events = sse_data(&proxy.chat(&chat_body("chat", true)).await.text().await.unwrap());
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(last["error"]["message"].as_str().is_some(), "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn embeddings_go_to_v2_embed_and_come_back_in_openai_shape() {
    let fake = FakeCohere::start().await;
    let proxy = Proxy::start(&[("all.yaml", &manifests(&fake, ""))]).await;
    let response = embed(&proxy, &json!({"model": "embed", "input": ["hello world", "bye"], "dimensions": 16})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 16);
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v2/embed");
    assert_eq!(
        sent.body,
        json!({"model": "embed-v4.0", "texts": ["hello world", "bye"], "input_type": "search_document",
            "embedding_types": ["float"], "output_dimension": 16})
    );
    let encoded: Value = embed(&proxy, &json!({"model": "embed", "input": "hi", "encoding_format": "base64"}))
        .await
        .json()
        .await
        .unwrap();
    assert!(encoded["data"][0]["embedding"].is_string(), "{encoded}");
    proxy.stop().await;
}
