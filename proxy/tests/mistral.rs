//! Mistral targets: OpenAI-shaped, with Mistral's field list and tool-id
//! rule, against the fake OpenAI upstream (Mistral speaks the same wire format).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use proxy::testing::{Behaviour, FakeOpenAi};
use serde_json::{Value, json};
use support::{Proxy, chat_body, sse_data};

fn manifests(base_url: &str) -> String {
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ProviderSecret\nmetadata: {{name: mistral}}\nspec:\n  provider: mistral\n  baseUrl: {base_url}\n  apiKey: {{secretKeyRef: {{name: keys, key: mistral}}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys}}\nstringData: {{mistral: mk-test-1}}\n---\napiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {{name: chat}}\nspec:\n  targets:\n  - {{name: small, provider: mistral, model: mistral-small-latest}}\n  retry: {{attempts: 0}}\n"
    )
}

#[tokio::test]
async fn requests_keep_to_mistrals_fields_and_tool_id_rule() {
    let fake = FakeOpenAi::start().await;
    fake.require_api_key("mk-test-1");
    let proxy = Proxy::start(&[("all.yaml", &manifests(&fake.base_url()))]).await;
    let body = json!({"model": "chat", "user": "u-1", "seed": 3, "max_completion_tokens": 64, "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "toolu_01A9xyz", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_01A9xyz", "content": "snow"}]});
    let response = proxy.chat(&body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert!(answer["choices"][0]["message"]["content"].as_str().unwrap().contains("mistral-small-latest"));

    let sent = &fake.requests()[0].body;
    assert_eq!(sent.get("user"), None, "{sent}");
    assert_eq!(sent["random_seed"], 3);
    assert_eq!(sent["max_tokens"], 64);
    let id = sent["messages"][1]["tool_calls"][0]["id"].as_str().unwrap();
    assert!(id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
    assert_eq!(sent["messages"][2]["tool_call_id"], id, "the tool result follows its call's new id");
    proxy.stop().await;
}

#[tokio::test]
async fn a_mistral_stream_passes_through_and_ends_with_done() {
    let fake = FakeOpenAi::start().await;
    let proxy = Proxy::start(&[("all.yaml", &manifests(&fake.base_url()))]).await;
    let response = proxy.chat(&chat_body("chat", true)).await;
    assert_eq!(response.status(), 200);
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert!(fake.requests()[0].body.get("stream_options").is_none(), "Mistral's schema has no stream_options");
    proxy.stop().await;
}

#[tokio::test]
async fn mistral_error_bodies_reach_the_client_in_openai_shape() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behaviour::Status {
        status: 400,
        body: r#"{"object":"error","message":"Tool call id was call_1 but must be a-z, A-Z, 0-9, with a length of 9.","type":"invalid_request_error","param":null,"code":null}"#.into(),
        headers: vec![],
    });
    let proxy = Proxy::start(&[("all.yaml", &manifests(&fake.base_url()))]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("length of 9"), "{body}");
    proxy.stop().await;
}
