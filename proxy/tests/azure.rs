//! Azure OpenAI targets over real HTTP on loopback, against a fake that
//! speaks Azure's wire format: both URL forms, the `api-key` header, the
//! stream quirks and Azure's error shapes.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use proxy::testing::FakeAzure;
use proxy::testing::fake_azure::{azure_daily_quota, azure_status};
use serde_json::{Value, json};
use support::{Proxy, chat_body, embed, keyed_provider, route_over, sse_data};

const CLASSIC: &str = "  azure: {apiVersion: \"2024-10-21\"}\n";

fn manifests(fake: &FakeAzure, extra: &str, route_extra: &str) -> String {
    keyed_provider("azure", "azure-openai", &fake.base_url(), "az-key-1", extra)
        + &route_over("chat", &["{name: gpt, provider: azure, model: gpt4o-prod}"], route_extra)
}

#[tokio::test]
async fn classic_deployment_urls_carry_the_api_version_and_the_api_key_header() {
    let fake = FakeAzure::start().await;
    fake.require_api_key("az-key-1");
    let proxy = Proxy::start(&[("all.yaml", &manifests(&fake, CLASSIC, ""))]).await;
    let body = json!({"model": "chat", "max_tokens": 50, "messages": [{"role": "user", "content": "say hello"}]});
    let response = proxy.chat(&body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert!(answer["choices"][0]["message"]["content"].as_str().unwrap().contains("gpt4o-prod"), "{answer}");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");

    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/openai/deployments/gpt4o-prod/chat/completions");
    assert_eq!(sent.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(sent.header("api-key"), Some("az-key-1"));
    assert_eq!(sent.header("authorization"), None, "azure gets exactly one credential");
    assert_eq!(sent.body["model"], "gpt4o-prod");
    assert_eq!(sent.body["max_tokens"], 50, "old api-versions reject max_completion_tokens, so no rename");
    proxy.stop().await;
}

#[tokio::test]
async fn without_an_api_version_the_v1_api_is_called_with_the_deployment_as_model() {
    let fake = FakeAzure::start().await;
    let proxy = Proxy::start(&[("all.yaml", &manifests(&fake, "", ""))]).await;
    assert_eq!(proxy.chat(&chat_body("chat", false)).await.status(), 200);
    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/openai/v1/chat/completions");
    assert_eq!(sent.query, None);
    assert_eq!(sent.body["model"], "gpt4o-prod");
    proxy.stop().await;
}

#[tokio::test]
async fn azure_streams_lose_the_filter_only_chunks_and_keep_everything_else() {
    let fake = FakeAzure::start().await;
    let proxy = Proxy::start(&[("all.yaml", &manifests(&fake, CLASSIC, ""))]).await;
    let mut body = chat_body("chat", true);
    body["stream_options"] = json!({"include_usage": true});
    let response = proxy.chat(&body).await;
    assert_eq!(response.status(), 200);
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    for chunk in &chunks {
        let choices = chunk["choices"].as_array().unwrap();
        assert!(!chunk["id"].as_str().unwrap().is_empty(), "the empty prompt-filter chunk reached the client: {chunk}");
        assert!(choices.iter().all(|c| c.get("delta").is_some()), "a choice without delta: {chunk}");
        assert!(!choices.is_empty() || !chunk["usage"].is_null(), "an empty chunk without usage: {chunk}");
    }
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "hello from gpt4o-prod: this is a fake azure completion");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert!(chunks.last().unwrap()["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{events:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_prompt_filter_400_is_final_and_keeps_azures_code_and_details() {
    let fake = FakeAzure::start().await;
    fake.push(azure_status(400));
    let proxy =
        Proxy::start(&[("all.yaml", &manifests(&fake, CLASSIC, "  retry: {attempts: 2, backoff: 1ms}\n"))]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "content_filter", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["innererror"]["code"], "ResponsibleAIPolicyViolation");
    assert_eq!(fake.hits(), 1, "content policy is not retried");
    proxy.stop().await;
}

#[tokio::test]
async fn an_output_filtered_answer_is_a_200_with_finish_reason_content_filter() {
    let fake = FakeAzure::start().await;
    let manifests = keyed_provider("azure", "azure-openai", &fake.base_url(), "k", CLASSIC)
        + &route_over("chat", &["{name: gpt, provider: azure, model: filtered-output}"], "");
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let answer: Value = proxy.chat(&chat_body("chat", false)).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "content_filter", "{answer}");
    let events = sse_data(&proxy.chat(&chat_body("chat", true)).await.text().await.unwrap());
    assert!(events.iter().any(|e| e.contains(r#""finish_reason":"content_filter""#)), "{events:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_rate_limit_is_retried_but_a_daily_quota_moves_to_the_next_target() {
    let fake = FakeAzure::start().await;
    fake.push(azure_status(429));
    let proxy =
        Proxy::start(&[("all.yaml", &manifests(&fake, CLASSIC, "  retry: {attempts: 1, backoff: 1ms}\n"))]).await;
    assert_eq!(proxy.chat(&chat_body("chat", false)).await.status(), 200);
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "one retry after the 429");
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(gap.as_millis() >= 990, "retried after {gap:?}, before retry-after-ms 1000");
    proxy.stop().await;

    let exhausted = FakeAzure::start_named("exhausted").await;
    exhausted.push(azure_daily_quota());
    let spare = FakeAzure::start_named("spare").await;
    let manifests = keyed_provider("east", "azure-openai", &exhausted.base_url(), "k", CLASSIC)
        + &keyed_provider("west", "azure-openai", &spare.base_url(), "k", CLASSIC)
        + &route_over(
            "chat",
            &[
                "{name: east, provider: east, model: gpt4o, weight: 1000000}",
                "{name: west, provider: west, model: gpt4o, weight: 1}",
            ],
            "  retry: {attempts: 2, backoff: 1ms}\n",
        );
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-target"], "west");
    assert_eq!(exhausted.hits(), 1, "a daily quota is not waited out");
    proxy.stop().await;
}

#[tokio::test]
async fn azure_errors_reach_the_client_in_openai_shape() {
    let fake = FakeAzure::start().await;
    fake.require_api_key("right-key");
    let manifests = keyed_provider("azure", "azure-openai", &fake.base_url(), "wrong-key", CLASSIC)
        + &route_over("chat", &["{name: gpt, provider: azure, model: gpt4o}"], "  retry: {attempts: 0}\n");
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = proxy.chat(&chat_body("chat", false)).await;
    assert_eq!(response.status(), 502, "a bad key is the target's problem, reported as an upstream failure");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("Access denied"), "{body}");
    assert!(!body.to_string().contains("wrong-key"));
    proxy.stop().await;
}

#[tokio::test]
async fn embeddings_use_the_deployment_url_or_the_v1_one() {
    let fake = FakeAzure::start().await;
    let manifests = keyed_provider("classic", "azure-openai", &fake.base_url(), "k", CLASSIC)
        + &keyed_provider("v1", "azure-openai", &fake.base_url(), "k", "")
        + &route_over("embed", &["{name: classic, provider: classic, model: emb-small}"], "")
        + &route_over("embed-v1", &["{name: v1, provider: v1, model: emb-small}"], "");
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = embed(&proxy, &json!({"model": "embed", "input": ["a", "b"], "dimensions": 8})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(embed(&proxy, &json!({"model": "embed-v1", "input": "a"})).await.status(), 200);
    let requests = fake.requests();
    assert_eq!(requests[0].path, "/openai/deployments/emb-small/embeddings");
    assert_eq!(requests[0].query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(requests[1].path, "/openai/v1/embeddings");
    assert_eq!(requests[1].body["model"], "emb-small");
    proxy.stop().await;
}
