//! A fake Azure OpenAI resource that speaks Azure's wire format (digest §2, §11).
//!
//! [`FakeAzure`] serves, on a loopback port chosen by the OS:
//!
//! - `POST /openai/deployments/{deployment}/chat/completions?api-version=...` and
//!   `POST /openai/deployments/{deployment}/embeddings?api-version=...` (the deployment names
//!   the model; the body's `model` is ignored). Without `api-version` the answer is Azure's
//!   404 `{"error":{"code":"404","message":"Resource not found"}}`.
//! - `POST /openai/v1/chat/completions` and `POST /openai/v1/embeddings` (the body's `model`
//!   is the deployment name).
//! - anything else: the same 404.
//!
//! With [`FakeAzure::require_api_key`] the key must come in `api-key`; a wrong or missing one
//! gets Azure's 401 `{"error":{"code":"401","message":"Access denied due to invalid
//! subscription key or wrong API endpoint. ..."}}`.
//!
//! # Answers
//!
//! Chat answers are OpenAI's `chat.completion` with Azure's additions: the underlying model
//! [`MODEL_VERSION`] as `model`, top-level `prompt_filter_results` and per-choice
//! `content_filter_results`. The text is `hello from <deployment>: this is a fake azure
//! completion` (`via <name>` for a named fake), one word per token, `max_tokens` /
//! `max_completion_tokens` cut it with `finish_reason: "length"`. A weather question with
//! `tools` gets a call of the first tool with `{"city":"Oslo"}` (streamed as the call's head,
//! then two argument fragments), `finish_reason: "tool_calls"`. Deployment `filtered-output`
//! answers with empty content and `finish_reason: "content_filter"` (output filtered, HTTP 200).
//!
//! Streams (`data: <json>\n\n`, `[DONE]` last) reproduce Azure's quirks: the first chunk has
//! `"id":""`, `"object":""`, `"created":0`, `"model":""`, `"choices":[]` and only
//! `prompt_filter_results`; then the role chunk, one chunk per word, the finish chunk, a
//! trailing chunk whose choice has no `delta` (only `content_filter_offsets` and
//! `content_filter_results`), the usage chunk when `stream_options.include_usage`, `[DONE]`.
//!
//! Embeddings are deterministic unit vectors (the fake OpenAI's), 1536 dimensions unless
//! `dimensions` says otherwise, `float` or `base64`.
//!
//! # Behaviours
//!
//! The behaviour is the oldest one queued with [`FakeAzure::push`], otherwise
//! [`azure_behaviour`] of the deployment. [`Behaviour`]s mean what they mean for the fake
//! OpenAI, with Azure's error bodies ([`azure_status`]).
//!
//! Every response carries `apim-request-id` (the request id), `x-ms-region`,
//! `x-ms-rai-invoked`, `x-ratelimit-limit-requests`/`-tokens`,
//! `x-ratelimit-remaining-requests`/`-tokens` and, for a named fake, `x-fake-upstream`.

use std::collections::VecDeque;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::common::{Ctx, FakeBody, Provider, Recorded, Reply, Server, Step, loopback, push_events};
use super::fake_cohere::{CALL_ARGUMENTS, tool_to_call};
use super::fake_openai::{
    Behaviour, EmbeddingInput, answer, base64_f32, completion_id, embedding_vector, message_words, prelude, stream_cut,
    unix_now,
};

/// The underlying model every deployment of the fake runs.
pub const MODEL_VERSION: &str = "gpt-4o-2024-11-20";
const FINGERPRINT: &str = "fp_ee1d74bde0";
const DENIED: &str = "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.";
const PROMPT_FILTERED: &str = "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766";

/// Azure's error body for `code` (`{"error":{"code","message"}}`, `code` a string) with the
/// headers Azure sends along, as a [`Behaviour::Status`].
///
/// 400 the prompt-filter `content_filter` error with `innererror`; 401 access denied; 404
/// `DeploymentNotFound`; 429 a token rate limit with `retry-after: 1` and `retry-after-ms:
/// 1000`; 500 `InternalServerError`; anything else the status' reason.
pub fn azure_status(code: u16) -> Behaviour {
    let reason = StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    let (body, headers) = match code {
        400 => (
            json!({"error": {"message": PROMPT_FILTERED, "type": null, "param": "prompt", "code": "content_filter",
                "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                    "hate": {"filtered": true, "severity": "high"}, "jailbreak": {"filtered": false, "detected": false},
                    "self_harm": {"filtered": false, "severity": "safe"}, "sexual": {"filtered": false, "severity": "safe"},
                    "violence": {"filtered": false, "severity": "safe"}}}}}),
            vec![],
        ),
        401 => (json!({"error": {"code": "401", "message": DENIED}}), vec![]),
        404 => (
            json!({"error": {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."}}),
            vec![],
        ),
        429 => (
            json!({"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 1 second. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}),
            vec![("retry-after".to_owned(), "1".to_owned()), ("retry-after-ms".to_owned(), "1000".to_owned())],
        ),
        500 => (
            json!({"error": {"code": "InternalServerError", "message": "The server had an error while processing your request. Sorry about that!"}}),
            vec![],
        ),
        c => (json!({"error": {"code": c.to_string(), "message": format!("{reason}.")}}), vec![]),
    };
    Behaviour::Status { status: code, body: body.to_string(), headers }
}

/// The 429 of an exhausted daily quota: "retry after 86400 seconds", `retry-after: 86400`.
pub fn azure_daily_quota() -> Behaviour {
    let body = json!({"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry after 86400 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}});
    Behaviour::Status { status: 429, body: body.to_string(), headers: vec![("retry-after".into(), "86400".into())] }
}

/// The behaviour of a deployment nothing is scripted for: [`Behaviour::for_model`], with
/// `fail-<code>` and `rate-limited` answered in Azure's shapes ([`azure_status`]) and
/// `daily-quota` as [`azure_daily_quota`].
pub fn azure_behaviour(deployment: &str) -> Behaviour {
    let code = deployment.strip_prefix("fail-").and_then(|c| c.parse::<u16>().ok()).filter(|c| (400..600).contains(c));
    match (deployment, code) {
        (_, Some(code)) => azure_status(code),
        ("rate-limited", _) => azure_status(429),
        ("daily-quota", _) => azure_daily_quota(),
        _ => Behaviour::for_model(deployment),
    }
}

// === FakeAzure ===

/// A running fake Azure OpenAI resource. Dropping it stops accepting and closes every open
/// connection.
pub struct FakeAzure {
    server: Server<Behaviour>,
}

impl std::fmt::Debug for FakeAzure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.server.debug(f, "FakeAzure")
    }
}

impl FakeAzure {
    /// Starts an unnamed fake on `127.0.0.1:0`.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    #[expect(clippy::expect_used, reason = "a test double without a loopback port cannot do anything useful")]
    pub async fn start() -> FakeAzure {
        FakeAzure { server: Server::start(&AZURE, loopback(), None).await.expect("bind a loopback port") }
    }

    /// Starts a fake whose responses carry `x-fake-upstream: <name>` and whose answers say
    /// `via <name>`.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound or `name` is not a valid header value.
    #[expect(clippy::expect_used, reason = "a test double without a loopback port cannot do anything useful")]
    pub async fn start_named(name: &str) -> FakeAzure {
        FakeAzure { server: Server::start(&AZURE, loopback(), Some(name)).await.expect("bind a loopback port") }
    }

    /// `http://ADDR`, the resource origin (like `https://my-resource.openai.azure.com`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Starts a fake on `addr`, named `name` when given (see the other constructors).
    pub async fn start_on(addr: std::net::SocketAddr, name: Option<&str>) -> std::io::Result<FakeAzure> {
        Ok(FakeAzure { server: Server::start(&AZURE, addr, name).await? })
    }

    /// Turns request recording on (the default) or off; off keeps memory flat under load.
    pub fn record_requests(&self, on: bool) {
        self.server.record_requests(on);
    }

    /// From now on requests must send `key` in `api-key`.
    pub fn require_api_key(&self, key: &str) {
        self.server.require_api_key(key);
    }

    /// Queues `behaviour` for the next chat or embeddings request (FIFO).
    pub fn push(&self, behaviour: Behaviour) {
        self.server.push(behaviour);
    }

    /// Chat and embeddings requests received so far, rejected ones included.
    pub fn hits(&self) -> usize {
        self.server.hits()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }
}

// === server ===

static AZURE: Provider<Behaviour> = Provider {
    label: "azure-openai",
    base_headers: &[
        ("x-ms-region", "Sweden Central"),
        ("x-ms-rai-invoked", "true"),
        ("x-content-type-options", "nosniff"),
        ("x-ratelimit-limit-requests", "1000"),
        ("x-ratelimit-limit-tokens", "1000000"),
        ("x-ratelimit-remaining-requests", "999"),
        ("x-ratelimit-remaining-tokens", "999000"),
    ],
    request_id_header: "apim-request-id",
    request_id: || {
        let n: u128 = rand::random();
        let hex = format!("{n:032x}");
        format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
    },
    per_response_headers: |_, _| {},
    is_hit: |method, path| route(method, path).is_some(),
    for_model: azure_behaviour,
    handle: |ctx, parts, json| Box::pin(handle(ctx, parts, json.ok())),
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Operation {
    Chat,
    Embeddings,
}

/// The operation of a request and the deployment in its path (`None` for the v1 form).
fn route<'a>(method: &Method, path: &'a str) -> Option<(Operation, Option<&'a str>)> {
    if method != Method::POST {
        return None;
    }
    let operation = |op: &str| match op {
        "chat/completions" => Some(Operation::Chat),
        "embeddings" => Some(Operation::Embeddings),
        _ => None,
    };
    if let Some(op) = path.strip_prefix("/openai/v1/") {
        return operation(op).map(|o| (o, None));
    }
    let (deployment, op) = path.strip_prefix("/openai/deployments/")?.split_once('/')?;
    (!deployment.is_empty()).then_some(())?;
    operation(op).map(|o| (o, Some(deployment)))
}

fn error(ctx: Ctx<Behaviour>, status: StatusCode, code: &str, message: &str) -> Response<FakeBody> {
    ctx.json_reply(status, Bytes::from(json!({"error": {"code": code, "message": message}}).to_string()))
}

async fn handle(ctx: Ctx<Behaviour>, parts: Parts, json: Option<Value>) -> Response<FakeBody> {
    let path = parts.uri.path();
    let has_version = parts.uri.query().is_some_and(|q| q.split('&').any(|p| p.starts_with("api-version=")));
    let Some((operation, deployment)) = route(&parts.method, path).filter(|(_, d)| d.is_none() || has_version) else {
        return error(ctx, StatusCode::NOT_FOUND, "404", "Resource not found");
    };
    if let Some(expected) = ctx.shared.api_key()
        && parts.headers.get("api-key").and_then(|v| v.to_str().ok()) != Some(expected.as_str())
    {
        return error(ctx, StatusCode::UNAUTHORIZED, "401", DENIED);
    }
    let Some(Value::Object(body)) = json else {
        return error(ctx, StatusCode::BAD_REQUEST, "BadRequest", "The request body is not valid JSON.");
    };
    let model = deployment.map(str::to_owned).or_else(|| body.get("model").and_then(Value::as_str).map(str::to_owned));
    let Some(model) = model.filter(|m| !m.is_empty()) else {
        return error(ctx, StatusCode::BAD_REQUEST, "BadRequest", "you must provide a model parameter");
    };
    let behaviour = ctx.shared.next_behaviour(&model);
    match operation {
        Operation::Chat => chat(ctx, &model, &body, behaviour).await,
        Operation::Embeddings => embeddings(ctx, &model, &body, behaviour).await,
    }
}

fn filter_results() -> Value {
    json!({"hate": {"filtered": false, "severity": "safe"}, "self_harm": {"filtered": false, "severity": "safe"},
        "sexual": {"filtered": false, "severity": "safe"}, "violence": {"filtered": false, "severity": "safe"}})
}

fn prompt_filter_results() -> Value {
    json!([{"prompt_index": 0, "content_filter_results": {
        "hate": {"filtered": false, "severity": "safe"}, "jailbreak": {"filtered": false, "detected": false},
        "self_harm": {"filtered": false, "severity": "safe"}, "sexual": {"filtered": false, "severity": "safe"},
        "violence": {"filtered": false, "severity": "safe"}}}])
}

async fn chat(
    ctx: Ctx<Behaviour>,
    deployment: &str,
    body: &serde_json::Map<String, Value>,
    behaviour: Behaviour,
) -> Response<FakeBody> {
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let text = match (&behaviour, ctx.shared.name()) {
        (Behaviour::Text(text), _) => text.clone(),
        _ if deployment == "filtered-output" => String::new(),
        (_, Some(name)) => format!("hello from {deployment} via {name}: this is a fake azure completion"),
        (_, None) => format!("hello from {deployment}: this is a fake azure completion"),
    };
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|f| body.get(*f).and_then(Value::as_u64))
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let (chunks, finish) = answer(&text, max_tokens);
    let call = if matches!(behaviour, Behaviour::Text(_)) { None } else { tool_to_call(body) };
    let call_id = format!("call_{}", &completion_id()["chatcmpl-".len()..][..24]);
    let finish = match &call {
        Some(_) => "tool_calls",
        None if deployment == "filtered-output" => "content_filter",
        None => finish,
    };
    let prompt_tokens: u64 =
        body.get("messages").and_then(Value::as_array).map_or(0, |m| m.iter().map(message_words).sum());
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": chunks.len(),
        "total_tokens": prompt_tokens + chunks.len() as u64,
        "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
        "completion_tokens_details": {"accepted_prediction_tokens": 0, "audio_tokens": 0, "reasoning_tokens": 0,
            "rejected_prediction_tokens": 0}});
    let (id, created) = (completion_id(), unix_now());
    if !stream {
        if let Some(reply) = prelude(&behaviour, || azure_status(500)).await {
            return ctx.reply(reply);
        }
        let mut message = json!({"annotations": [], "content": chunks.concat(), "refusal": null, "role": "assistant"});
        if let Some(name) = &call {
            message["content"] = Value::Null;
            message["tool_calls"] = json!([{"id": call_id, "type": "function",
                "function": {"name": name, "arguments": CALL_ARGUMENTS}}]);
        }
        let answer = json!({
            "choices": [{"content_filter_results": filter_results(), "finish_reason": finish, "index": 0,
                "logprobs": null, "message": message}],
            "created": created, "id": id, "model": MODEL_VERSION, "object": "chat.completion",
            "prompt_filter_results": prompt_filter_results(), "system_fingerprint": FINGERPRINT, "usage": usage,
        });
        return ctx.json_reply(StatusCode::OK, Bytes::from(answer.to_string()));
    }
    if let Behaviour::Status { status, body, headers } = &behaviour {
        return ctx.reply(Reply::Status { status: *status, body: body.clone(), headers: headers.clone() });
    }
    if let Behaviour::SlowHeaders(delay) = &behaviour {
        tokio::time::sleep(*delay).await;
    }
    let include_usage =
        body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    let event = |value: Value| Bytes::from(format!("data: {value}\n\n"));
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut chunk = json!({"choices": choices, "created": created, "id": id, "model": MODEL_VERSION,
            "object": "chat.completion.chunk", "system_fingerprint": FINGERPRINT});
        if include_usage {
            chunk["usage"] = usage.cloned().unwrap_or(Value::Null);
        }
        event(chunk)
    };
    let delta = |delta: Value, finish: Option<&str>| {
        chunk(
            json!([{"content_filter_results": if finish.is_some() { json!({}) } else { filter_results() },
                "delta": delta, "finish_reason": finish, "index": 0, "logprobs": null}]),
            None,
        )
    };
    let mut steps = VecDeque::new();
    steps.push_back(Step::Data(event(json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
        "prompt_filter_results": prompt_filter_results()}))));
    steps.push_back(Step::Data(delta(json!({"content": "", "refusal": null, "role": "assistant"}), None)));
    let cut = stream_cut(&behaviour, || {
        event(json!({"error": {"code": "InternalServerError",
                "message": "The server had an error while processing your request. Sorry about that!"}}))
    });
    let content = match &call {
        Some(name) => {
            let mut events = vec![(
                delta(
                    json!({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
                    None,
                ),
                true,
            )];
            for piece in [&CALL_ARGUMENTS[..8], &CALL_ARGUMENTS[8..]] {
                events
                    .push((delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), None), true));
            }
            events
        }
        None => chunks.iter().map(|c| (delta(json!({"content": c}), None), true)).collect(),
    };
    if push_events(&mut steps, content, cut) {
        steps.push_back(Step::Data(delta(json!({}), Some(finish))));
        let end: usize = chunks.iter().map(|c| c.len()).sum();
        steps.push_back(Step::Data(chunk(
            json!([{"content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": end},
                "content_filter_results": filter_results(), "finish_reason": null, "index": 0}]),
            None,
        )));
        if include_usage {
            steps.push_back(Step::Data(chunk(json!([]), Some(&usage))));
        }
        steps.push_back(Step::Data(Bytes::from_static(b"data: [DONE]\n\n")));
    }
    let guard = ctx.stream_guard();
    ctx.stream_reply(steps, guard)
}

async fn embeddings(
    ctx: Ctx<Behaviour>,
    deployment: &str,
    body: &serde_json::Map<String, Value>,
    behaviour: Behaviour,
) -> Response<FakeBody> {
    let texts: Vec<&str> = match body.get("input") {
        Some(Value::String(text)) => vec![text],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if texts.is_empty() {
        return error(ctx, StatusCode::BAD_REQUEST, "BadRequest", "'$.input' is invalid.");
    }
    if let Some(reply) = prelude(&behaviour, || azure_status(500)).await {
        return ctx.reply(reply);
    }
    let dimensions = body.get("dimensions").and_then(Value::as_u64).map_or(1536, |d| d.clamp(1, 3072) as usize);
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = embedding_vector(deployment, &EmbeddingInput::Text(text), dimensions);
            let embedding = if base64 { json!(base64_f32(&vector)) } else { json!(vector) };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = texts.iter().map(|t| t.split_whitespace().count() as u64).sum();
    let answer = json!({"object": "list", "data": data, "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    ctx.json_reply(StatusCode::OK, Bytes::from(answer.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_know_both_url_forms() {
        let post = Method::POST;
        assert!(matches!(
            route(&post, "/openai/deployments/gpt4o/chat/completions"),
            Some((Operation::Chat, Some("gpt4o")))
        ));
        assert!(matches!(route(&post, "/openai/v1/embeddings"), Some((Operation::Embeddings, None))));
        assert!(route(&post, "/v1/chat/completions").is_none());
        assert!(route(&Method::GET, "/openai/v1/chat/completions").is_none());
        assert!(matches!(azure_behaviour("daily-quota"), Behaviour::Status { status: 429, .. }));
        assert!(
            matches!(azure_behaviour("fail-404"), Behaviour::Status { status: 404, ref body, .. } if body.contains("DeploymentNotFound"))
        );
    }
}
