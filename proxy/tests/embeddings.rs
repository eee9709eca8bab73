//! `POST /v1/embeddings` through the same routing as chat.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use proxy::testing::FakeOpenAi;
use serde_json::{Value, json};
use support::{Proxy, embed, http_provider, mock_provider};

#[tokio::test]
async fn embeddings_go_to_the_upstream_with_the_targets_model_and_come_back_unchanged() {
    let fake = FakeOpenAi::start().await;
    let manifests = http_provider("up", &fake.base_url(), Some("sk-emb-1"))
        + "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: embed}\nspec:\n  targets:\n  - {name: small, provider: up, model: text-embedding-3-small}\n";
    fake.require_api_key("sk-emb-1");
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = embed(&proxy, &json!({"model": "embed", "input": ["hello", "world"], "dimensions": 4})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-target"], "small");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"].as_array().unwrap().len(), 2, "{body}");
    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(sent.body, json!({"model": "text-embedding-3-small", "input": ["hello", "world"], "dimensions": 4}));
    proxy.stop().await;
}

#[tokio::test]
async fn the_mock_embeds_deterministically_and_bad_input_is_named() {
    let manifests = mock_provider("m", "")
        + "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: embed}\nspec:\n  targets:\n  - {name: mock, provider: m, model: mock-embed}\n";
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let first: Value = embed(&proxy, &json!({"model": "embed", "input": "same text"})).await.json().await.unwrap();
    let second: Value = embed(&proxy, &json!({"model": "embed", "input": "same text"})).await.json().await.unwrap();
    assert_eq!(first["data"][0]["embedding"], second["data"][0]["embedding"]);
    let vector: Vec<f64> =
        first["data"][0]["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let norm: f64 = vector.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-9, "not a unit vector: {vector:?}");

    let response = embed(&proxy, &json!({"model": "embed", "input": []})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "input", "{body}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_provider_without_embeddings_is_skipped_for_one_that_has_them() {
    let fake = FakeOpenAi::start().await;
    let manifests = http_provider("up", &fake.base_url(), None)
        + "apiVersion: switchyard.dev/v1alpha1\nkind: ProviderSecret\nmetadata: {name: claude}\nspec:\n  provider: anthropic\n  apiKey: {secretKeyRef: {name: keys, key: anthropic}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: keys}\nstringData: {anthropic: sk-ant-1}\n---\n"
        + "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: embed}\nspec:\n  targets:\n  - {name: claude, provider: claude, model: claude-haiku-4-5, weight: 1000}\n  - {name: openai, provider: up, model: text-embedding-3-small, weight: 1}\n";
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let response = embed(&proxy, &json!({"model": "embed", "input": "hello"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-target"], "openai");
    proxy.stop().await;
}

#[tokio::test]
async fn gemini_embeds_one_text_with_embed_content_and_many_with_batch_embed_contents() {
    let fake = proxy::testing::FakeGemini::start().await;
    fake.require_api_key("AIza-emb");
    let manifests = support::keyed_provider("google", "gemini", &fake.base_url(), "AIza-emb", "")
        + &support::route_over("embed", &["{name: gemini, provider: google, model: gemini-embedding-001}"], "");
    let proxy = Proxy::start(&[("all.yaml", &manifests)]).await;
    let one: Value =
        embed(&proxy, &json!({"model": "embed", "input": "hello", "dimensions": 8})).await.json().await.unwrap();
    assert_eq!(one["object"], "list", "{one}");
    assert_eq!(one["model"], "embed");
    assert_eq!(one["data"][0]["embedding"].as_array().unwrap().len(), 8);
    let many = embed(&proxy, &json!({"model": "embed", "input": ["a", "b", "c"], "encoding_format": "base64"})).await;
    assert_eq!(many.status(), 200);
    let many: Value = many.json().await.unwrap();
    assert_eq!(many["data"].as_array().unwrap().len(), 3);
    // 3072 f32 values, base64: 4 * 3072 bytes → 16384 characters.
    assert_eq!(many["data"][2]["embedding"].as_str().unwrap().len(), 16_384);

    let requests = fake.requests();
    assert_eq!(requests[0].path, "/v1beta/models/gemini-embedding-001:embedContent");
    assert_eq!(requests[0].header("x-goog-api-key"), Some("AIza-emb"));
    assert_eq!(requests[0].body, json!({"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 8}));
    assert_eq!(requests[1].path, "/v1beta/models/gemini-embedding-001:batchEmbedContents");
    assert_eq!(requests[1].body["requests"][2]["model"], "models/gemini-embedding-001");

    let tokens = embed(&proxy, &json!({"model": "embed", "input": [[1, 2, 3]]})).await;
    assert_eq!(tokens.status(), 400, "token arrays cannot be sent to gemini");
    let body: Value = tokens.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("token arrays"), "{body}");
    proxy.stop().await;
}
