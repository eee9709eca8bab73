//! A fake Cohere upstream that speaks the v2 API's wire format (digest §5, §11).
//!
//! [`FakeCohere`] serves, on a loopback port chosen by the OS:
//!
//! - `POST /v2/chat`: one chat answer as JSON, or with `"stream": true` a typed SSE stream,
//!   each event an `event: <type>` line and a `data: <json>` line whose `type` repeats it:
//!   `message-start`, `content-start`, one `content-delta` per word, `content-end`,
//!   `message-end` (with `finish_reason` and `usage`); a tool call streams as
//!   `message-start`, one `tool-plan-delta` per word of the plan, `tool-call-start`,
//!   `tool-call-delta` fragments of the arguments, `tool-call-end`, `message-end`
//!   (`TOOL_CALL`). The body ends after `message-end` (no `[DONE]`).
//! - `POST /v2/embed`: `{"id","embeddings":{"float":[[...]]},"texts","meta":{...,
//!   "billed_units":{"input_tokens"}},"response_type":"embeddings_by_type"}`; `input_type` is
//!   required (400 without it), `output_dimension` sets the size (default 1024).
//! - anything else: 404 `{"message":"Not Found"}`.
//!
//! With [`FakeCohere::require_api_key`] the key must come as `Authorization: Bearer`; a wrong
//! or missing one gets 401 `{"id":…,"message":"invalid api token"}`. Chat requests need a
//! `model` and a non-empty `messages` array (400 otherwise).
//!
//! # Answers
//!
//! The text is `hello from <model>: this is a fake cohere reply` (`via <name>` for a named
//! fake), `finish_reason: "COMPLETE"`; `max_tokens` cuts it (`MAX_TOKENS`). When the request
//! has `tools` and the last message is a user message mentioning `weather`, the answer is a
//! call of the first tool with arguments `{"city":"Oslo"}`, an id `<name>_<8 random>`, a
//! `tool_plan` and `finish_reason: "TOOL_CALL"`. Usage: `billed_units` counts words (3 output
//! tokens for a call); `tokens.input_tokens` adds [`TEMPLATE_TOKENS`] for the prompt template.
//!
//! # Behaviours
//!
//! [`Behaviour`]s as for the fake OpenAI, chosen by [`cohere_behaviour`] of the model unless
//! one is queued; errors have Cohere's `{"id","message"}` body ([`cohere_status`]). In a
//! stream, [`Behaviour::ErrorEventAfter`] ends with `message-end` whose `finish_reason` is
//! `ERROR` and whose `error` says why.

use std::collections::VecDeque;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::common::{Ctx, FakeBody, Provider, Recorded, Reply, Server, Step, loopback, push_events};
use super::fake_openai::{Behaviour, EmbeddingInput, answer, embedding_vector, message_words, prelude, stream_cut};

/// Tokens Cohere's prompt template adds to `tokens.input_tokens` (not billed).
pub const TEMPLATE_TOKENS: u64 = 64;
/// The arguments of every tool call the fake makes.
pub const CALL_ARGUMENTS: &str = r#"{"city":"Oslo"}"#;
const PLAN: &str = "I will look up the weather in Oslo.";

fn uuid() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

fn body_of(message: &str) -> String {
    json!({"id": uuid(), "message": message}).to_string()
}

/// Cohere's error answer for `code` as a [`Behaviour::Status`]: 400 a context-length
/// `too many tokens` message, 401 `invalid api token`, 404 a model not found, 429 a trial
/// key's per-minute limit, 498 `invalid token`, 500 `internal server error`, others the
/// status' reason.
pub fn cohere_status(code: u16) -> Behaviour {
    let reason = StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason()).unwrap_or("error");
    let message = match code {
        400 => "too many tokens: size limit exceeded by 1203 tokens. Try using shorter or fewer inputs, or setting prompt_truncation='AUTO'.".to_owned(),
        401 => "invalid api token".to_owned(),
        404 => "model 'command-nope' not found, make sure the correct model ID was used and that you have access to the model.".to_owned(),
        429 => "You are using a Trial key, which is limited to 20 API calls / minute. You can continue to use the Trial key for free or upgrade to a Production key with higher rate limits at 'https://dashboard.cohere.com/api-keys'.".to_owned(),
        498 => "invalid token".to_owned(),
        500 => "internal server error, this has been reported to our developers".to_owned(),
        _ => reason.to_ascii_lowercase(),
    };
    Behaviour::Status { status: code, body: body_of(&message), headers: Vec::new() }
}

/// A 429 for a trial key whose monthly allowance is used up.
pub fn cohere_monthly_limit() -> Behaviour {
    let message = "You are using a Trial key, which is limited to 1000 API calls / month. You can continue to use the Trial key for free or upgrade to a Production key with higher rate limits at 'https://dashboard.cohere.com/api-keys'.";
    Behaviour::Status { status: 429, body: body_of(message), headers: Vec::new() }
}

/// [`Behaviour::for_model`] with `fail-<code>` and `rate-limited` in Cohere's shapes.
pub fn cohere_behaviour(model: &str) -> Behaviour {
    let code = model.strip_prefix("fail-").and_then(|c| c.parse::<u16>().ok()).filter(|c| (400..600).contains(c));
    match (model, code) {
        (_, Some(code)) => cohere_status(code),
        ("rate-limited", _) => cohere_status(429),
        ("monthly-limit", _) => cohere_monthly_limit(),
        _ => Behaviour::for_model(model),
    }
}

// === FakeCohere ===

/// A running fake Cohere server; dropping it closes every connection.
pub struct FakeCohere {
    server: Server<Behaviour>,
}

impl std::fmt::Debug for FakeCohere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.server.debug(f, "FakeCohere")
    }
}

impl FakeCohere {
    /// Starts an unnamed fake on `127.0.0.1:0`.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    #[expect(clippy::expect_used, reason = "a test double without a loopback port cannot do anything useful")]
    pub async fn start() -> FakeCohere {
        FakeCohere { server: Server::start(&COHERE, loopback(), None).await.expect("bind a loopback port") }
    }

    /// `http://ADDR`, the bare origin like `https://api.cohere.com`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Starts a fake on `addr`, named `name` when given (see the other constructors).
    pub async fn start_on(addr: std::net::SocketAddr, name: Option<&str>) -> std::io::Result<FakeCohere> {
        Ok(FakeCohere { server: Server::start(&COHERE, addr, name).await? })
    }

    /// Turns request recording on (the default) or off; off keeps memory flat under load.
    pub fn record_requests(&self, on: bool) {
        self.server.record_requests(on);
    }

    /// From now on requests must send `Authorization: Bearer <key>`.
    pub fn require_api_key(&self, key: &str) {
        self.server.require_api_key(key);
    }

    /// Queues `behaviour` for the next chat or embed request (FIFO).
    pub fn push(&self, behaviour: Behaviour) {
        self.server.push(behaviour);
    }

    /// Chat and embed requests received so far.
    pub fn hits(&self) -> usize {
        self.server.hits()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }
}

static COHERE: Provider<Behaviour> = Provider {
    label: "cohere",
    base_headers: &[("x-envoy-upstream-service-time", "41"), ("vary", "Origin")],
    request_id_header: "x-debug-trace-id",
    request_id: || format!("{:032x}", rand::random::<u128>()),
    per_response_headers: |_, _| {},
    is_hit: |method, path| method == Method::POST && matches!(path, "/v2/chat" | "/v2/embed"),
    for_model: cohere_behaviour,
    handle: |ctx, parts, json| Box::pin(handle(ctx, parts, json.ok())),
};

fn error(ctx: Ctx<Behaviour>, status: StatusCode, message: &str) -> Response<FakeBody> {
    ctx.json_reply(status, Bytes::from(body_of(message)))
}

async fn handle(ctx: Ctx<Behaviour>, parts: Parts, json: Option<Value>) -> Response<FakeBody> {
    let path = parts.uri.path();
    if parts.method != Method::POST || !matches!(path, "/v2/chat" | "/v2/embed") {
        return ctx.json_reply(StatusCode::NOT_FOUND, Bytes::from_static(br#"{"message":"Not Found"}"#));
    }
    if let Some(expected) = ctx.shared.api_key() {
        let given = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given.and_then(|v| v.strip_prefix("Bearer ")) != Some(expected.as_str()) {
            return error(ctx, StatusCode::UNAUTHORIZED, "invalid api token");
        }
    }
    let Some(Value::Object(body)) = json else {
        return error(ctx, StatusCode::BAD_REQUEST, "invalid request: the body is not valid JSON");
    };
    let Some(model) = body.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()).map(str::to_owned) else {
        return error(ctx, StatusCode::BAD_REQUEST, "invalid request: model must be specified");
    };
    if path == "/v2/embed" {
        return embed(ctx, &model, &body).await;
    }
    if body.get("messages").and_then(Value::as_array).is_none_or(|m| m.is_empty()) {
        return error(ctx, StatusCode::BAD_REQUEST, "invalid request: messages must be a non-empty list");
    }
    let behaviour = ctx.shared.next_behaviour(&model);
    chat(ctx, &model, &body, behaviour).await
}

/// The first tool's name when the last message is a user message asking about the weather
/// (the request's `messages` and `tools` as OpenAI and Cohere both spell them).
pub(super) fn tool_to_call(body: &Map<String, Value>) -> Option<String> {
    let last = body.get("messages")?.as_array()?.last()?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let text = match last.get("content")? {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => return None,
    };
    if !text.to_ascii_lowercase().contains("weather") {
        return None;
    }
    body.get("tools")?.as_array()?.first()?.pointer("/function/name")?.as_str().map(str::to_owned)
}

async fn chat(ctx: Ctx<Behaviour>, model: &str, body: &Map<String, Value>, behaviour: Behaviour) -> Response<FakeBody> {
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let text = match (&behaviour, ctx.shared.name()) {
        (Behaviour::Text(text), _) => text.clone(),
        (_, Some(name)) => format!("hello from {model} via {name}: this is a fake cohere reply"),
        (_, None) => format!("hello from {model}: this is a fake cohere reply"),
    };
    let call = if matches!(behaviour, Behaviour::Text(_)) { None } else { tool_to_call(body) };
    let max_tokens = body.get("max_tokens").and_then(Value::as_u64).map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let (words, finish) = answer(&text, max_tokens);
    let finish = match (&call, finish) {
        (Some(_), _) => "TOOL_CALL",
        (None, "length") => "MAX_TOKENS",
        _ => "COMPLETE",
    };
    let input: u64 = body.get("messages").and_then(Value::as_array).map_or(0, |m| m.iter().map(message_words).sum());
    let output = if call.is_some() { 3 } else { words.len() as u64 };
    let usage = json!({"billed_units": {"input_tokens": input, "output_tokens": output},
        "tokens": {"input_tokens": input + TEMPLATE_TOKENS, "output_tokens": output}});
    let id = uuid();
    let call_id = call.as_ref().map(|name| format!("{name}_{}", &uuid()[..8]));
    if !stream {
        if let Some(reply) = prelude(&behaviour, || cohere_status(500)).await {
            return ctx.reply(reply);
        }
        let message = match (&call, &call_id) {
            (Some(name), Some(call_id)) => json!({"role": "assistant", "tool_plan": PLAN, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": CALL_ARGUMENTS}}]}),
            _ => json!({"role": "assistant", "content": [{"type": "text", "text": words.concat()}]}),
        };
        let answer = json!({"id": id, "message": message, "finish_reason": finish, "usage": usage});
        return ctx.json_reply(StatusCode::OK, Bytes::from(answer.to_string()));
    }
    if let Behaviour::Status { status, body, headers } = &behaviour {
        return ctx.reply(Reply::Status { status: *status, body: body.clone(), headers: headers.clone() });
    }
    if let Behaviour::SlowHeaders(delay) = &behaviour {
        tokio::time::sleep(*delay).await;
    }
    let event = |value: Value| {
        let kind = value.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
        Bytes::from(format!("event: {kind}\ndata: {value}\n\n"))
    };
    let mut steps = VecDeque::new();
    steps.push_back(Step::Data(event(json!({"id": id, "type": "message-start", "delta": {"message": {
        "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}))));
    let mut deltas = Vec::new();
    let mut after = Vec::new();
    match (&call, &call_id) {
        (Some(name), Some(call_id)) => {
            for piece in super::common::word_chunks(PLAN) {
                deltas.push((
                    event(json!({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}})),
                    true,
                ));
            }
            after.push(event(json!({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {
                "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}}}})));
            for piece in [&CALL_ARGUMENTS[..8], &CALL_ARGUMENTS[8..]] {
                after.push(event(json!({"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {
                    "function": {"arguments": piece}}}}})));
            }
            after.push(event(json!({"type": "tool-call-end", "index": 0})));
        }
        _ => {
            steps.push_back(Step::Data(event(json!({"type": "content-start", "index": 0,
                "delta": {"message": {"content": {"type": "text", "text": ""}}}}))));
            for word in &words {
                deltas.push((
                    event(
                        json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": word}}}}),
                    ),
                    true,
                ));
            }
            after.push(event(json!({"type": "content-end", "index": 0})));
        }
    }
    let cut = stream_cut(&behaviour, || {
        event(json!({"type": "message-end", "delta": {"finish_reason": "ERROR",
                "error": "internal server error, this has been reported to our developers", "usage": usage}}))
    });
    if push_events(&mut steps, deltas, cut) {
        steps.extend(after.into_iter().map(Step::Data));
        steps.push_back(Step::Data(event(
            json!({"type": "message-end", "delta": {"finish_reason": finish, "usage": usage}}),
        )));
    }
    let guard = ctx.stream_guard();
    ctx.stream_reply(steps, guard)
}

async fn embed(ctx: Ctx<Behaviour>, model: &str, body: &Map<String, Value>) -> Response<FakeBody> {
    let texts: Vec<&str> = body
        .get("texts")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if texts.is_empty() {
        return error(ctx, StatusCode::BAD_REQUEST, "invalid request: texts must be a non-empty list of strings");
    }
    if !body.get("input_type").is_some_and(Value::is_string) {
        return error(
            ctx,
            StatusCode::BAD_REQUEST,
            "invalid request: valid input_type must be provided with the provided model",
        );
    }
    if let Some(reply) = prelude(&ctx.shared.next_behaviour(model), || cohere_status(500)).await {
        return ctx.reply(reply);
    }
    let dimensions = body.get("output_dimension").and_then(Value::as_u64).map_or(1024, |d| d.clamp(1, 1536) as usize);
    let vectors: Vec<Vec<f32>> =
        texts.iter().map(|t| embedding_vector(model, &EmbeddingInput::Text(t), dimensions)).collect();
    let tokens: u64 = texts.iter().map(|t| t.split_whitespace().count() as u64).sum();
    let answer = json!({"id": uuid(), "embeddings": {"float": vectors}, "texts": texts,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
        "response_type": "embeddings_by_type"});
    ctx.json_reply(StatusCode::OK, Bytes::from(answer.to_string()))
}
