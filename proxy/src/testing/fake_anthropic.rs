//! A fake Anthropic upstream that speaks the Messages API's wire format byte for byte.
//!
//! [`FakeAnthropic`] serves, on a loopback port chosen by the OS:
//!
//! - `POST /v1/messages`: a `message` JSON body, or with `"stream": true` an SSE stream of named
//!   events (`event: <name>\ndata: <json>\n\n`, the JSON's `type` equal to the name), ending with
//!   `message_stop` and no `[DONE]`. See `docs/provider-protocols.md` §3, §8 and §11.
//! - anything else: Anthropic's 404 `not_found_error`.
//!
//! # What a request gets
//!
//! 1. Every `POST /v1/messages` counts as a hit ([`FakeAnthropic::hits`]) and every request is
//!    recorded ([`FakeAnthropic::requests`]), even when it is then rejected.
//! 2. With [`FakeAnthropic::require_api_key`], a missing or wrong `x-api-key` gets a 401
//!    `authentication_error`. A rejected request does not consume a scripted behaviour.
//! 3. A missing `anthropic-version` header gets a 400 `invalid_request_error`
//!    (`anthropic-version: header is required`), so does a version other than `2023-06-01` or
//!    `2023-01-01`.
//! 4. The body is validated like Anthropic does: invalid JSON, or no `model`, `messages` or
//!    `max_tokens`, or an empty `messages` get a 400 `invalid_request_error`.
//! 5. The behaviour is the oldest one queued with [`FakeAnthropic::push`], otherwise
//!    [`AnthropicBehaviour::for_model`] of the request's `model`.
//!
//! Every error body the fake writes itself has Anthropic's current shape, including the
//! trailing `request_id` that equals the `request-id` response header:
//! `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"},"request_id":"req_…"}`.
//!
//! # Content and token counting
//!
//! The normal answer is one text block `hello from <model>: this is a fake anthropic reply` (or
//! `hello from <model> via <name>: …` for a named fake) with `stop_reason: "end_turn"`.
//!
//! When the request has a non-empty `tools` array and the last `user` message's text contains
//! `weather` (any case), the answer is a text block `hello from <model>: let me look that up`
//! followed by a `tool_use` block `{"type":"tool_use","id":"toolu_01…","name":<first tool's
//! name>,"input":{"city":"Oslo"}}` and `stop_reason: "tool_use"`. A follow-up whose last user
//! turn holds only a `tool_result` gets the normal text answer, which ends the tool loop.
//!
//! Usage is counted without a tokenizer:
//!
//! - `input_tokens`: whitespace-separated words of the `system` prompt and of all messages
//!   (string `content` and the `text` of content blocks);
//! - `output_tokens`: one per word of the answer's text plus, for a tool call, one per non-empty
//!   `input_json_delta` fragment (3);
//! - cache counters are 0.
//!
//! When the answer needs more than `max_tokens` output tokens, the text is cut to `max_tokens`
//! words, the tool call is dropped and `stop_reason` is `"max_tokens"`.
//!
//! # Streams
//!
//! `message_start` (empty `content`, `stop_reason: null`, usage with the input tokens and
//! `output_tokens: 1`), then per content block `content_block_start` → deltas →
//! `content_block_stop`, with one `ping` right after the first `content_block_start`; then
//! `message_delta` (`stop_reason`, `stop_sequence: null`, cumulative `usage.output_tokens`) and
//! `message_stop`. Text arrives as one `text_delta` per word (each word after the first keeps
//! its leading space); tool input as `input_json_delta`s `""`, `{"city": `, `"Os`, `lo"}`.
//!
//! # Response headers
//!
//! Every response carries `request-id` (`req_011C` + 20 base58 characters),
//! `anthropic-organization-id`, the twelve `anthropic-ratelimit-{requests,tokens,input-tokens,
//! output-tokens}-{limit,remaining,reset}` headers (resets as RFC 3339 timestamps) and, for a
//! named fake, `x-fake-upstream: <name>`. Streams are `text/event-stream` with
//! `cache-control: no-cache`.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode};
use rand::Rng;
use serde::Serialize;
use serde_json::Value;

use super::common::{
    Ctx, Cut, FakeBody, Prelude, Provider, Recorded, Reply, Server, Step, loopback, push_events, to_json, word_chunks,
    words, write_json,
};

/// `anthropic-version` values the fake accepts.
const KNOWN_VERSIONS: &[&str] = &["2023-06-01", "2023-01-01"];
/// `anthropic-organization-id` of every response.
const ORGANIZATION_ID: &str = "5f0c8a7e-1d2b-4c3a-9e8f-7a6b5c4d3e2f";
/// The tool call's input, streamed in these `input_json_delta` fragments (the first one empty,
/// as Anthropic sends it). They concatenate to `{"city": "Oslo"}`.
const TOOL_INPUT_FRAGMENTS: &[&str] = &["", "{\"city\": ", "\"Os", "lo\"}"];
/// The city in the tool call's input.
const TOOL_CITY: &str = "Oslo";
/// Message of the in-stream `overloaded_error` event and of the 529.
const OVERLOADED_MESSAGE: &str = "Overloaded";
/// Alphabet of Anthropic's ids (`msg_01…`, `toolu_01…`, `req_011C…`).
const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

// === AnthropicBehaviour ===

/// What the fake does with one `POST /v1/messages` request.
///
/// Stream-only behaviours have a documented meaning for non-streaming requests too, so a
/// manifest can point both kinds of traffic at the same model name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnthropicBehaviour {
    /// A normal answer (text, or a tool call for a weather question with tools): JSON or SSE, as
    /// the request's `stream` asks.
    Ok,
    /// A normal text answer with this text (streamed one word per delta), never a tool call.
    Text(String),
    /// This status, body (sent verbatim as `application/json`) and headers. The headers
    /// replace the fake's default headers of the same name. See [`AnthropicBehaviour::status`].
    Status {
        /// HTTP status code; an invalid code is sent as 500.
        status: u16,
        /// Response body, sent as is.
        body: String,
        /// Extra response headers, e.g. `("retry-after", "1")`.
        headers: Vec<(String, String)>,
    },
    /// Waits this long before sending the response headers, then answers normally.
    SlowHeaders(Duration),
    /// Stream: sends the headers, `message_start`, the first `content_block_start` and `ping` at
    /// once, then waits this long before the first delta. Non-streaming: waits this long, then
    /// answers normally.
    SlowFirstChunk(Duration),
    /// Stream: pauses for `stall` after `chunks` deltas (an idle gap), then continues normally.
    /// Non-streaming: waits `stall`, then answers normally.
    StallAfter {
        /// Deltas sent before the pause.
        chunks: usize,
        /// Length of the pause.
        stall: Duration,
    },
    /// Stream: after `chunks` deltas (at most all of them) closes the connection abruptly: no
    /// `content_block_stop`, `message_delta` or `message_stop`, and for HTTP/1.1 no terminating
    /// zero-length chunk. Non-streaming: sends a 200 head and breaks the body.
    BreakAfter {
        /// Deltas (`content_block_delta` events) sent before the break.
        chunks: usize,
    },
    /// Stream: after `chunks` deltas (at most all of them) sends
    /// `event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`
    /// and ends the body cleanly. Non-streaming: a 529 `overloaded_error`.
    ErrorEventAfter {
        /// Deltas (`content_block_delta` events) sent before the error event.
        chunks: usize,
    },
    /// Stream: one text delta every 20 ms until the client goes away (for cancellation tests).
    /// Non-streaming: never answers.
    Endless,
}

impl AnthropicBehaviour {
    /// A [`AnthropicBehaviour::Status`] with the error body Anthropic sends for `code`:
    /// `{"type":"error","error":{"type":…,"message":…},"request_id":"req_…"}`, and a matching
    /// `request-id` header (a fresh id per call, so two calls are not equal).
    ///
    /// 400 `invalid_request_error`; 401 `authentication_error`; 402 `billing_error`; 403
    /// `permission_error`; 404 `not_found_error`; 413 `request_too_large`; 429
    /// `rate_limit_error` with `retry-after: 1` and an exhausted request rate limit; 500
    /// `api_error`; 504 `timeout_error`; 529 `overloaded_error`; any other 4xx
    /// `invalid_request_error` and 5xx `api_error`.
    pub fn status(code: u16) -> Self {
        let (body, headers) = status_parts(code);
        AnthropicBehaviour::Status { status: code, body, headers }
    }

    /// The behaviour a request gets when nothing is scripted, chosen by its `model`.
    ///
    /// | model | behaviour |
    /// |---|---|
    /// | `fail-<code>` (400..=599, e.g. `fail-500`, `fail-529`, `fail-401`) | [`AnthropicBehaviour::status`]`(code)` |
    /// | `overloaded` | 529 `overloaded_error` |
    /// | `rate-limited` | 429 `rate_limit_error` with `retry-after: 1` |
    /// | `prompt-too-long` | 400 `invalid_request_error` `prompt is too long: 208310 tokens > 200000 maximum`, Anthropic's context-length error |
    /// | `slow-ttft` | [`AnthropicBehaviour::SlowFirstChunk`] of 5 s |
    /// | `break-after-<n>` (e.g. `break-after-3`) | [`AnthropicBehaviour::BreakAfter`] `n` deltas |
    /// | `error-after-<n>` (e.g. `error-after-3`) | [`AnthropicBehaviour::ErrorEventAfter`] `n` deltas |
    /// | `endless` | [`AnthropicBehaviour::Endless`] |
    /// | anything else | [`AnthropicBehaviour::Ok`] |
    pub fn for_model(model: &str) -> Self {
        let number = |prefix: &str| model.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok());
        match model {
            "overloaded" => AnthropicBehaviour::status(529),
            "rate-limited" => AnthropicBehaviour::status(429),
            "prompt-too-long" => {
                let request_id = request_id();
                let message = "prompt is too long: 208310 tokens > 200000 maximum";
                AnthropicBehaviour::Status {
                    status: 400,
                    body: error_body("invalid_request_error", message, Some(&request_id)),
                    headers: vec![("request-id".to_owned(), request_id)],
                }
            }
            "slow-ttft" => AnthropicBehaviour::SlowFirstChunk(Duration::from_secs(5)),
            "endless" => AnthropicBehaviour::Endless,
            _ => {
                if let Some(code) =
                    model.strip_prefix("fail-").and_then(|c| c.parse::<u16>().ok()).filter(|c| (400..600).contains(c))
                {
                    AnthropicBehaviour::status(code)
                } else if let Some(chunks) = number("break-after-") {
                    AnthropicBehaviour::BreakAfter { chunks }
                } else if let Some(chunks) = number("error-after-") {
                    AnthropicBehaviour::ErrorEventAfter { chunks }
                } else {
                    AnthropicBehaviour::Ok
                }
            }
        }
    }
}

/// The body and headers of [`AnthropicBehaviour::status`]`(code)`.
fn status_parts(code: u16) -> (String, Vec<(String, String)>) {
    let (kind, message) = anthropic_error(code);
    let request_id = request_id();
    let mut headers = vec![("request-id".to_owned(), request_id.clone())];
    if code == 429 {
        headers.extend([
            ("retry-after".to_owned(), "1".to_owned()),
            ("anthropic-ratelimit-requests-remaining".to_owned(), "0".to_owned()),
            ("anthropic-ratelimit-requests-reset".to_owned(), rfc3339(SystemTime::now() + Duration::from_secs(1))),
        ]);
    }
    (error_body(kind, &message, Some(&request_id)), headers)
}

/// The `error.type` and `error.message` Anthropic sends with `code`.
fn anthropic_error(code: u16) -> (&'static str, String) {
    let (kind, message) = match code {
        400 => ("invalid_request_error", "messages: text content blocks must be non-empty"),
        401 => ("authentication_error", "invalid x-api-key"),
        402 => (
            "billing_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
        ),
        403 => ("permission_error", "Your API key does not have permission to use the specified resource."),
        404 => ("not_found_error", "Not Found"),
        413 => ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        429 => (
            "rate_limit_error",
            "Number of requests has exceeded your per-minute rate limit. Please try again later, see the response headers for current usage.",
        ),
        500 => ("api_error", "Internal server error"),
        504 => ("timeout_error", "Request timed out"),
        529 => ("overloaded_error", OVERLOADED_MESSAGE),
        c => {
            let reason = StatusCode::from_u16(c).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
            let kind = if c >= 500 { "api_error" } else { "invalid_request_error" };
            return (kind, reason.to_owned());
        }
    };
    (kind, message.to_owned())
}

// === FakeAnthropic ===

/// A running fake Anthropic server. Dropping it stops accepting and closes every open
/// connection (including endless streams).
pub struct FakeAnthropic {
    server: Server<AnthropicBehaviour>,
}

impl std::fmt::Debug for FakeAnthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.server.debug(f, "FakeAnthropic")
    }
}

impl FakeAnthropic {
    /// Starts an unnamed fake on `127.0.0.1:0` (an OS-chosen port).
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    #[expect(clippy::expect_used, reason = "a test double without a loopback port cannot do anything useful")]
    pub async fn start() -> FakeAnthropic {
        Self::spawn(loopback(), None).await.expect("bind a loopback port for the fake anthropic upstream")
    }

    /// Starts a fake on `127.0.0.1:0` whose responses carry `x-fake-upstream: <name>` and whose
    /// text answers say `via <name>`, so split and fallback tests can tell fakes apart.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound or `name` is not a valid header value.
    #[expect(clippy::expect_used, reason = "a test double without a loopback port cannot do anything useful")]
    pub async fn start_named(name: &str) -> FakeAnthropic {
        Self::spawn(loopback(), Some(name)).await.expect("bind a loopback port for the fake anthropic upstream")
    }

    /// Starts an unnamed fake on `addr`.
    pub async fn start_on(addr: SocketAddr) -> io::Result<FakeAnthropic> {
        Self::spawn(addr, None).await
    }

    /// Starts a named fake (see [`FakeAnthropic::start_named`]) on `addr`.
    pub async fn start_on_named(addr: SocketAddr, name: &str) -> io::Result<FakeAnthropic> {
        Self::spawn(addr, Some(name)).await
    }

    async fn spawn(addr: SocketAddr, name: Option<&str>) -> io::Result<FakeAnthropic> {
        Ok(FakeAnthropic { server: Server::start(&ANTHROPIC, addr, name).await? })
    }

    /// The address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://ADDR`, the value for an Anthropic client's base URL: like
    /// `https://api.anthropic.com`, the bare origin, to which clients append `/v1/messages`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The name given at start, if any.
    pub fn name(&self) -> Option<&str> {
        self.server.name()
    }

    /// From now on, requests must send `x-api-key: <key>`; others get Anthropic's 401
    /// `authentication_error`.
    pub fn require_api_key(&self, key: &str) {
        self.server.require_api_key(key);
    }

    /// Queues `behaviour` for the next valid `POST /v1/messages` request (FIFO). Once the queue
    /// is empty, requests get [`AnthropicBehaviour::for_model`] of their `model` again.
    pub fn push(&self, behaviour: AnthropicBehaviour) {
        self.server.push(behaviour);
    }

    /// `POST /v1/messages` requests received so far, including rejected ones.
    pub fn hits(&self) -> usize {
        self.server.hits()
    }

    /// Every request received so far (all paths), oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// Turns request recording on (the default) or off. Off keeps memory flat under load.
    pub fn record_requests(&self, on: bool) {
        self.server.record_requests(on);
    }

    /// Streams the client abandoned before the fake sent their last byte.
    ///
    /// Observed, not inferred: the count goes up when the server drops a stream's response body
    /// (or the handler of a streaming request) before the body produced its final frame, which
    /// happens when the connection fails or the client resets the stream. Streams the fake
    /// breaks on purpose ([`AnthropicBehaviour::BreakAfter`]) do not count.
    pub fn cancelled(&self) -> usize {
        self.server.cancelled()
    }

    /// Requests whose response is still being produced (for streams: until the last byte was
    /// handed to the connection or the client went away).
    pub fn in_flight(&self) -> usize {
        self.server.in_flight()
    }
}

// === server ===

/// Anthropic's side of the server: headers, ids, routes.
static ANTHROPIC: Provider<AnthropicBehaviour> = Provider {
    label: "anthropic",
    base_headers: &[
        ("anthropic-organization-id", ORGANIZATION_ID),
        ("anthropic-ratelimit-requests-limit", "4000"),
        ("anthropic-ratelimit-requests-remaining", "3999"),
        ("anthropic-ratelimit-tokens-limit", "2400000"),
        ("anthropic-ratelimit-tokens-remaining", "2400000"),
        ("anthropic-ratelimit-input-tokens-limit", "2000000"),
        ("anthropic-ratelimit-input-tokens-remaining", "2000000"),
        ("anthropic-ratelimit-output-tokens-limit", "400000"),
        ("anthropic-ratelimit-output-tokens-remaining", "400000"),
    ],
    request_id_header: "request-id",
    request_id,
    per_response_headers: |headers, _| {
        if let Ok(reset) = HeaderValue::from_str(&rfc3339(SystemTime::now() + Duration::from_secs(1))) {
            for name in [
                "anthropic-ratelimit-requests-reset",
                "anthropic-ratelimit-tokens-reset",
                "anthropic-ratelimit-input-tokens-reset",
                "anthropic-ratelimit-output-tokens-reset",
            ] {
                headers.insert(HeaderName::from_static(name), reset.clone());
            }
        }
    },
    is_hit: is_messages,
    for_model: AnthropicBehaviour::for_model,
    handle: |ctx, parts, json| Box::pin(handle(ctx, parts, json)),
};

fn is_messages(method: &Method, path: &str) -> bool {
    *method == Method::POST && path == "/v1/messages"
}

async fn handle(
    ctx: Ctx<AnthropicBehaviour>,
    parts: Parts,
    json: Result<Value, serde_json::Error>,
) -> Response<FakeBody> {
    if !is_messages(&parts.method, parts.uri.path()) {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found_error", "Not Found".to_owned()).reply(ctx);
    }
    if let Err(err) = check_headers(ctx.shared.api_key(), &parts.headers) {
        return err.reply(ctx);
    }
    messages(ctx, json).await
}

/// Checks `x-api-key` against `expected` (when a key is required), then `anthropic-version`.
fn check_headers(expected: Option<String>, headers: &HeaderMap) -> Result<(), ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(expected) = expected {
        let unauthorized =
            |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", message.to_owned());
        match header("x-api-key") {
            Some(key) if key == expected => {}
            Some(_) => return Err(unauthorized("invalid x-api-key")),
            None => return Err(unauthorized("x-api-key header is required")),
        }
    }
    match header("anthropic-version") {
        Some(version) if KNOWN_VERSIONS.contains(&version) => Ok(()),
        Some(version) => {
            Err(ApiError::invalid_request(format!("anthropic-version: \"{version}\" is not a valid version")))
        }
        None => Err(ApiError::invalid_request("anthropic-version: header is required".to_owned())),
    }
}

// === messages ===

/// What a validated `POST /v1/messages` asks for.
struct MessagesRequest {
    model: String,
    stream: bool,
    max_tokens: u64,
    input_tokens: u64,
    /// The first tool's name, when the request asks for the weather and offers tools.
    weather_tool: Option<String>,
}

impl MessagesRequest {
    fn parse(json: Result<Value, serde_json::Error>) -> Result<MessagesRequest, ApiError> {
        let body = match json {
            Ok(Value::Object(body)) => body,
            Ok(_) => return Err(ApiError::invalid_request("Input should be a valid dictionary".to_owned())),
            Err(err) => return Err(ApiError::invalid_request(format!("The request body is not valid JSON: {err}"))),
        };
        let model = match body.get("model") {
            Some(Value::String(model)) if !model.is_empty() => model.clone(),
            Some(_) => return Err(ApiError::invalid_request("model: Input should be a valid string".to_owned())),
            None => return Err(ApiError::invalid_request("model: Field required".to_owned())),
        };
        let messages = match body.get("messages") {
            Some(Value::Array(messages)) if !messages.is_empty() => messages,
            Some(Value::Array(_)) => {
                return Err(ApiError::invalid_request("messages: at least one message is required".to_owned()));
            }
            Some(_) => return Err(ApiError::invalid_request("messages: Input should be a valid list".to_owned())),
            None => return Err(ApiError::invalid_request("messages: Field required".to_owned())),
        };
        let max_tokens = match body.get("max_tokens") {
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| ApiError::invalid_request("max_tokens: Input should be a valid integer".to_owned()))?,
            Some(_) => return Err(ApiError::invalid_request("max_tokens: Input should be a valid integer".to_owned())),
            None => return Err(ApiError::invalid_request("max_tokens: Field required".to_owned())),
        };
        let asks_for_weather = messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .is_some_and(|m| texts(m.get("content")).any(|t| t.to_lowercase().contains("weather")));
        let weather_tool = body
            .get("tools")
            .and_then(Value::as_array)
            .and_then(|tools| tools.first())
            .filter(|_| asks_for_weather)
            .map(|tool| tool.get("name").and_then(Value::as_str).unwrap_or("tool").to_owned());
        let input_tokens = texts(body.get("system")).map(words).sum::<u64>()
            + messages.iter().flat_map(|m| texts(m.get("content"))).map(words).sum::<u64>();
        Ok(MessagesRequest {
            model,
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            max_tokens,
            input_tokens,
            weather_tool,
        })
    }
}

/// The texts of a `content` (or `system`) value: the string itself, or the `text` of its blocks.
fn texts(content: Option<&Value>) -> impl Iterator<Item = &str> {
    let (single, blocks) = match content {
        Some(Value::String(text)) => (Some(text.as_str()), None),
        Some(Value::Array(blocks)) => (None, Some(blocks)),
        _ => (None, None),
    };
    single.into_iter().chain(blocks.into_iter().flatten().filter_map(|b| b.get("text").and_then(Value::as_str)))
}

fn greeting(model: &str, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("hello from {model} via {name}:"),
        None => format!("hello from {model}:"),
    }
}

/// What the fake answers, before it is rendered as JSON or as a stream.
struct Answer {
    /// Text deltas; they concatenate to the text block. No text block when empty.
    text: Vec<String>,
    tool: Option<ToolCall>,
    stop_reason: &'static str,
}

struct ToolCall {
    id: String,
    name: String,
}

/// Output tokens of a tool call: its non-empty input fragments.
fn tool_tokens() -> u64 {
    TOOL_INPUT_FRAGMENTS.iter().filter(|f| !f.is_empty()).count() as u64
}

impl Answer {
    /// The answer to `request`; `text` replaces the default text and rules out a tool call.
    fn new(request: &MessagesRequest, name: Option<&str>, text: Option<String>) -> Answer {
        let tool_name = if text.is_some() { None } else { request.weather_tool.clone() };
        let text = text.unwrap_or_else(|| {
            let greeting = greeting(&request.model, name);
            if tool_name.is_some() {
                format!("{greeting} let me look that up")
            } else {
                format!("{greeting} this is a fake anthropic reply")
            }
        });
        let mut chunks: Vec<String> = word_chunks(&text).into_iter().map(str::to_owned).collect();
        let max = usize::try_from(request.max_tokens).unwrap_or(usize::MAX);
        let mut stop_reason = if tool_name.is_some() { "tool_use" } else { "end_turn" };
        let mut tool = tool_name.map(|name| ToolCall { id: tool_use_id(), name });
        let needed = chunks.len() as u64 + if tool.is_some() { tool_tokens() } else { 0 };
        if needed > request.max_tokens {
            chunks.truncate(max);
            tool = None;
            stop_reason = "max_tokens";
        }
        Answer { text: chunks, tool, stop_reason }
    }

    fn output_tokens(&self) -> u64 {
        self.text.len() as u64 + if self.tool.is_some() { tool_tokens() } else { 0 }
    }
}

async fn messages(ctx: Ctx<AnthropicBehaviour>, json: Result<Value, serde_json::Error>) -> Response<FakeBody> {
    let request = match MessagesRequest::parse(json) {
        Ok(request) => request,
        Err(err) => return err.reply(ctx),
    };
    let behaviour = ctx.shared.next_behaviour(&request.model);
    if request.stream {
        messages_stream(ctx, request, behaviour).await
    } else {
        messages_json(ctx, request, behaviour).await
    }
}

async fn messages_json(
    ctx: Ctx<AnthropicBehaviour>,
    request: MessagesRequest,
    behaviour: AnthropicBehaviour,
) -> Response<FakeBody> {
    let text = match behaviour {
        AnthropicBehaviour::Text(text) => Some(text),
        other => match non_stream_prelude(other).await {
            Prelude::Answer => None,
            Prelude::Reply(reply) => return ctx.reply(reply),
        },
    };
    let answer = Answer::new(&request, ctx.shared.name(), text);
    let text = answer.text.concat();
    let input = tool_input();
    let mut content = Vec::with_capacity(2);
    if !text.is_empty() {
        content.push(ContentBlockJson::Text { text: &text });
    }
    if let Some(tool) = &answer.tool {
        content.push(ContentBlockJson::ToolUse { id: &tool.id, name: &tool.name, input: &input });
    }
    let body = to_json(&MessageJson {
        id: &message_id(),
        kind: "message",
        role: "assistant",
        model: &request.model,
        content,
        stop_reason: Some(answer.stop_reason),
        stop_sequence: (),
        usage: UsageJson {
            input_tokens: request.input_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
            cache_creation: Some(CacheCreationJson { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 }),
            output_tokens: answer.output_tokens(),
            service_tier: Some("standard"),
        },
    });
    ctx.json_reply(StatusCode::OK, body)
}

/// `{"city":"Oslo"}`, the tool call's input.
fn tool_input() -> Value {
    let mut input = serde_json::Map::new();
    input.insert("city".to_owned(), Value::from(TOOL_CITY));
    Value::Object(input)
}

/// Applies `behaviour` to a non-streaming request: waits where it says so, or picks the reply.
/// [`AnthropicBehaviour::Text`] is treated as [`AnthropicBehaviour::Ok`] here; the caller
/// handles it before.
async fn non_stream_prelude(behaviour: AnthropicBehaviour) -> Prelude {
    match behaviour {
        AnthropicBehaviour::Ok | AnthropicBehaviour::Text(_) => Prelude::Answer,
        AnthropicBehaviour::Status { status, body, headers } => Prelude::Reply(Reply::Status { status, body, headers }),
        AnthropicBehaviour::SlowHeaders(delay)
        | AnthropicBehaviour::SlowFirstChunk(delay)
        | AnthropicBehaviour::StallAfter { stall: delay, .. } => {
            tokio::time::sleep(delay).await;
            Prelude::Answer
        }
        AnthropicBehaviour::BreakAfter { .. } => Prelude::Reply(Reply::Broken),
        AnthropicBehaviour::ErrorEventAfter { .. } => {
            let (body, headers) = status_parts(529);
            Prelude::Reply(Reply::Status { status: 529, body, headers })
        }
        AnthropicBehaviour::Endless => std::future::pending().await,
    }
}

async fn messages_stream(
    ctx: Ctx<AnthropicBehaviour>,
    request: MessagesRequest,
    behaviour: AnthropicBehaviour,
) -> Response<FakeBody> {
    let mut guard = ctx.stream_guard();
    let text = match &behaviour {
        AnthropicBehaviour::Status { status, body, headers } => {
            guard.finish();
            return ctx.reply(Reply::Status { status: *status, body: body.clone(), headers: headers.clone() });
        }
        AnthropicBehaviour::SlowHeaders(delay) => {
            tokio::time::sleep(*delay).await;
            None
        }
        AnthropicBehaviour::Text(text) => Some(text.clone()),
        _ => None,
    };
    let answer = Answer::new(&request, ctx.shared.name(), text);
    let steps = stream_steps(&request, &answer, &behaviour);
    ctx.stream_reply(steps, guard)
}

/// The SSE events of one stream, with the pauses and interruptions `behaviour` asks for.
fn stream_steps(request: &MessagesRequest, answer: &Answer, behaviour: &AnthropicBehaviour) -> VecDeque<Step> {
    let mut steps = VecDeque::with_capacity(answer.text.len() + 16);
    steps.push_back(Step::Data(sse(&StreamEvent::MessageStart {
        message: MessageJson {
            id: &message_id(),
            kind: "message",
            role: "assistant",
            model: &request.model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: (),
            usage: UsageJson {
                input_tokens: request.input_tokens,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 0,
                cache_creation: None,
                output_tokens: 1,
                service_tier: None,
            },
        },
    })));
    if *behaviour == AnthropicBehaviour::Endless {
        steps.push_back(Step::Data(sse(&StreamEvent::ContentBlockStart {
            index: 0,
            content_block: ContentBlockJson::Text { text: "" },
        })));
        steps.push_back(Step::Data(sse(&StreamEvent::Ping)));
        steps.push_back(Step::endless(answer.text.clone(), |text| {
            sse(&StreamEvent::ContentBlockDelta { index: 0, delta: DeltaJson::TextDelta { text } })
        }));
        return steps;
    }

    // The content blocks' events, each flagged whether it is a delta.
    let empty_input = Value::Object(serde_json::Map::new());
    let mut events: Vec<(Bytes, bool)> = Vec::new();
    let mut index = 0;
    if !answer.text.is_empty() {
        events.push((
            sse(&StreamEvent::ContentBlockStart { index, content_block: ContentBlockJson::Text { text: "" } }),
            false,
        ));
        for chunk in &answer.text {
            events.push((
                sse(&StreamEvent::ContentBlockDelta { index, delta: DeltaJson::TextDelta { text: chunk } }),
                true,
            ));
        }
        events.push((sse(&StreamEvent::ContentBlockStop { index }), false));
        index += 1;
    }
    if let Some(tool) = &answer.tool {
        let content_block = ContentBlockJson::ToolUse { id: &tool.id, name: &tool.name, input: &empty_input };
        events.push((sse(&StreamEvent::ContentBlockStart { index, content_block }), false));
        for fragment in TOOL_INPUT_FRAGMENTS {
            let delta = DeltaJson::InputJsonDelta { partial_json: fragment };
            events.push((sse(&StreamEvent::ContentBlockDelta { index, delta }), true));
        }
        events.push((sse(&StreamEvent::ContentBlockStop { index }), false));
    }
    // Anthropic pings right after the first content_block_start.
    let ping_at = usize::from(!events.is_empty());
    events.insert(ping_at, (sse(&StreamEvent::Ping), false));

    let cut = match behaviour {
        AnthropicBehaviour::SlowFirstChunk(delay) => Some((0, Cut::Pause(*delay))),
        AnthropicBehaviour::StallAfter { chunks, stall } => Some((*chunks, Cut::Pause(*stall))),
        AnthropicBehaviour::BreakAfter { chunks } => Some((*chunks, Cut::Break)),
        AnthropicBehaviour::ErrorEventAfter { chunks } => {
            let error = ErrorObject { kind: "overloaded_error", message: OVERLOADED_MESSAGE };
            Some((*chunks, Cut::ErrorEvent(sse(&StreamEvent::Error { error }))))
        }
        _ => None,
    };
    if push_events(&mut steps, events, cut) {
        steps.push_back(Step::Data(sse(&StreamEvent::MessageDelta {
            delta: MessageDeltaJson { stop_reason: answer.stop_reason, stop_sequence: () },
            usage: DeltaUsageJson { output_tokens: answer.output_tokens() },
        })));
        steps.push_back(Step::Data(sse(&StreamEvent::MessageStop)));
    }
    steps
}

// === responses ===

/// An Anthropic error with its status; the body gets the request's id.
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: String) -> ApiError {
        ApiError { status, kind, message }
    }

    fn invalid_request(message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    fn reply(self, ctx: Ctx<AnthropicBehaviour>) -> Response<FakeBody> {
        let body = error_body(self.kind, &self.message, Some(&ctx.request_id));
        ctx.json_reply(self.status, Bytes::from(body))
    }
}

fn error_body(kind: &str, message: &str, request_id: Option<&str>) -> String {
    let json = to_json(&ErrorEnvelope { kind: "error", error: ErrorObject { kind, message }, request_id });
    String::from_utf8_lossy(&json).into_owned()
}

fn random_base58(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| char::from(BASE58[rng.random_range(0..BASE58.len())])).collect()
}

/// `msg_01` and 22 base58 characters, like Anthropic's message ids.
fn message_id() -> String {
    format!("msg_01{}", random_base58(22))
}

/// `toolu_01` and 22 base58 characters, like Anthropic's tool-use ids.
fn tool_use_id() -> String {
    format!("toolu_01{}", random_base58(22))
}

/// `req_011C` and 20 base58 characters, like Anthropic's `request-id`.
fn request_id() -> String {
    format!("req_011C{}", random_base58(20))
}

/// `time` as an RFC 3339 UTC timestamp with second precision, e.g. `2026-12-01T09:30:00Z`.
fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = crate::jsonlog::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `event: <type>\ndata: <json>\n\n`.
fn sse(event: &StreamEvent<'_>) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(event.name().as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    write_json(&mut buf, event);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

// === wire types ===

/// A `message` (non-streaming body, or inside `message_start`).
#[derive(Serialize)]
struct MessageJson<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<ContentBlockJson<'a>>,
    /// `null` in `message_start`, set in a complete message.
    stop_reason: Option<&'a str>,
    stop_sequence: (),
    usage: UsageJson,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlockJson<'a> {
    Text { text: &'a str },
    ToolUse { id: &'a str, name: &'a str, input: &'a Value },
}

/// Usage as in a non-streaming message (all fields) or in `message_start` (no `cache_creation`
/// and `service_tier`, as in `docs/provider-protocols.md` §3.3).
#[derive(Serialize)]
struct UsageJson {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_creation: Option<CacheCreationJson>,
    output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<&'static str>,
}

#[derive(Serialize)]
struct CacheCreationJson {
    ephemeral_5m_input_tokens: u64,
    ephemeral_1h_input_tokens: u64,
}

/// One SSE event; `type` comes first and equals the event name.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent<'a> {
    MessageStart { message: MessageJson<'a> },
    ContentBlockStart { index: usize, content_block: ContentBlockJson<'a> },
    Ping,
    ContentBlockDelta { index: usize, delta: DeltaJson<'a> },
    ContentBlockStop { index: usize },
    MessageDelta { delta: MessageDeltaJson, usage: DeltaUsageJson },
    MessageStop,
    Error { error: ErrorObject<'a> },
}

impl StreamEvent<'_> {
    fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::Ping => "ping",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Error { .. } => "error",
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeltaJson<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct MessageDeltaJson {
    stop_reason: &'static str,
    stop_sequence: (),
}

#[derive(Serialize)]
struct DeltaUsageJson {
    output_tokens: u64,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorObject<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use http::{Method, StatusCode};
    use serde_json::{Value, json};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    use super::{AnthropicBehaviour, FakeAnthropic, rfc3339};
    use crate::testing::common::test_support::{self as support, Got, eventually, read_until};

    const VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

    impl Got {
        /// The error body Anthropic sends for `kind` and `message`, with this reply's request id.
        fn expected_error(&self, kind: &str, message: &str) -> String {
            format!(
                r#"{{"type":"error","error":{{"type":"{kind}","message":"{message}"}},"request_id":"{}"}}"#,
                self.header("request-id")
            )
        }
    }

    async fn send(fake: &FakeAnthropic, method: Method, path: &str, headers: &[(&str, &str)], body: String) -> Got {
        support::send(fake.addr(), method, path, headers, body).await
    }

    /// `POST /v1/messages` with `anthropic-version: 2023-06-01`.
    async fn post(fake: &FakeAnthropic, body: Value) -> Got {
        send(fake, Method::POST, "/v1/messages", &[VERSION], body.to_string()).await
    }

    fn request(model: &str, stream: bool) -> Value {
        json!({"model": model, "max_tokens": 1024, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    }

    /// Writes a raw HTTP/1.1 keep-alive `POST /v1/messages` (with `anthropic-version`), so only
    /// the server can close the connection.
    async fn raw_post(fake: &FakeAnthropic, body: &Value) -> TcpStream {
        support::raw_post(fake.addr(), "/v1/messages", &[VERSION], body).await
    }

    /// The `(event, data)` pairs of a complete SSE body.
    fn events(body: &str) -> Vec<(&str, &str)> {
        assert!(body.ends_with("\n\n"), "body does not end with a blank line: {body:?}");
        body.trim_end_matches("\n\n")
            .split("\n\n")
            .map(|event| {
                let (name, data) = event.split_once('\n').unwrap();
                (name.strip_prefix("event: ").unwrap(), data.strip_prefix("data: ").unwrap())
            })
            .collect()
    }

    /// The `id` inside the first (`message_start`) event.
    fn message_id(body: &str) -> String {
        let start: Value = serde_json::from_str(events(body)[0].1).unwrap();
        start["message"]["id"].as_str().unwrap().to_owned()
    }

    fn assert_anthropic_id(id: &str, prefix: &str, len: usize) {
        assert!(id.starts_with(prefix) && id.len() == len, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{id}");
    }

    fn message_start(id: &str, model: &str, input_tokens: u64) -> String {
        format!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"{id}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"{model}\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{input_tokens},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}}}}\n\n"
        )
    }

    fn text_deltas(index: usize, words: &[&str]) -> String {
        words
            .iter()
            .map(|word| {
                format!(
                    "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{index},\"delta\":{{\"type\":\"text_delta\",\"text\":\"{word}\"}}}}\n\n"
                )
            })
            .collect()
    }

    const TEXT_START: &str = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
    const PING: &str = "event: ping\ndata: {\"type\":\"ping\"}\n\n";
    const MESSAGE_STOP: &str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    fn block_stop(index: usize) -> String {
        format!("event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":{index}}}\n\n")
    }

    fn message_delta(stop_reason: &str, output_tokens: u64) -> String {
        format!(
            "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{stop_reason}\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{output_tokens}}}}}\n\n"
        )
    }

    const REPLY_WORDS: [&str; 9] =
        ["hello", " from", " claude-test:", " this", " is", " a", " fake", " anthropic", " reply"];

    #[tokio::test]
    async fn streamed_text_reply_matches_anthropic_wire_format_byte_for_byte() {
        let fake = FakeAnthropic::start().await;
        let rsp = post(
            &fake,
            json!({
                "model": "claude-test",
                "max_tokens": 100,
                "system": "be  brief",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "one two three"}]}],
                "stream": true,
            }),
        )
        .await;
        assert_eq!(rsp.status, StatusCode::OK);
        assert_eq!(rsp.header("content-type"), "text/event-stream");
        assert_eq!(rsp.header("cache-control"), "no-cache");
        assert_anthropic_id(rsp.header("request-id"), "req_011C", 28);
        assert!(rsp.error.is_none());
        let text = rsp.text();
        let id = message_id(&text);
        assert_anthropic_id(&id, "msg_01", 28);

        let expected = message_start(&id, "claude-test", 5)
            + TEXT_START
            + PING
            + &text_deltas(0, &REPLY_WORDS)
            + &block_stop(0)
            + &message_delta("end_turn", 9)
            + MESSAGE_STOP;
        assert_eq!(text, expected);
        assert!(!text.contains("[DONE]"));
        for (name, data) in events(&text) {
            let json: Value = serde_json::from_str(data).unwrap();
            assert_eq!(json["type"], name, "the data's type is the event name");
        }
    }

    #[tokio::test]
    async fn streamed_tool_use_reply_matches_anthropic_wire_format_byte_for_byte() {
        let fake = FakeAnthropic::start().await;
        let rsp = post(
            &fake,
            json!({
                "model": "claude-test",
                "max_tokens": 100,
                "messages": [{"role": "user", "content": "What's the Weather in Oslo?"}],
                "tools": [
                    {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                    {"name": "other", "input_schema": {"type": "object"}},
                ],
                "stream": true,
            }),
        )
        .await;
        assert_eq!(rsp.status, StatusCode::OK);
        let text = rsp.text();
        let id = message_id(&text);
        let tool_start: Value = serde_json::from_str(events(&text)[12].1).unwrap();
        let tool_id = tool_start["content_block"]["id"].as_str().unwrap();
        assert_anthropic_id(tool_id, "toolu_01", 30);

        let json_delta = |partial: &str| {
            format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":{partial}}}}}\n\n"
            )
        };
        let expected = message_start(&id, "claude-test", 5)
            + TEXT_START
            + PING
            + &text_deltas(0, &["hello", " from", " claude-test:", " let", " me", " look", " that", " up"])
            + &block_stop(0)
            + &format!(
                "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{{\"type\":\"tool_use\",\"id\":\"{tool_id}\",\"name\":\"get_weather\",\"input\":{{}}}}}}\n\n"
            )
            + &json_delta(r#""""#)
            + &json_delta(r#""{\"city\": ""#)
            + &json_delta(r#""\"Os""#)
            + &json_delta(r#""lo\"}""#)
            + &block_stop(1)
            + &message_delta("tool_use", 11)
            + MESSAGE_STOP;
        assert_eq!(text, expected);

        let partial: String = events(&text)
            .iter()
            .filter(|(name, _)| *name == "content_block_delta")
            .map(|(_, data)| serde_json::from_str::<Value>(data).unwrap())
            .filter(|delta| delta["index"] == 1)
            .map(|delta| delta["delta"]["partial_json"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(serde_json::from_str::<Value>(&partial).unwrap(), json!({"city": "Oslo"}));
    }

    #[tokio::test]
    async fn non_streaming_reply_matches_anthropic_shape_byte_for_byte() {
        let fake = FakeAnthropic::start().await;
        let rsp = post(
            &fake,
            json!({"model": "claude-test", "max_tokens": 50, "messages": [{"role": "user", "content": "hello there"}]}),
        )
        .await;
        assert_eq!(rsp.status, StatusCode::OK);
        assert_eq!(rsp.header("content-type"), "application/json");
        assert_eq!(rsp.header("content-length"), rsp.body.len().to_string());
        assert_anthropic_id(rsp.header("request-id"), "req_011C", 28);
        assert!(rsp.headers.contains_key("anthropic-organization-id"));
        for kind in ["requests", "tokens", "input-tokens", "output-tokens"] {
            for field in ["limit", "remaining"] {
                let name = format!("anthropic-ratelimit-{kind}-{field}");
                rsp.header(&name).parse::<u64>().unwrap();
            }
            let reset = rsp.header(&format!("anthropic-ratelimit-{kind}-reset"));
            assert!(reset.len() == 20 && reset.ends_with('Z') && reset.as_bytes()[10] == b'T', "{reset}");
        }
        assert!(!rsp.headers.contains_key("x-fake-upstream"));
        let id = rsp.json()["id"].as_str().unwrap().to_owned();
        assert_anthropic_id(&id, "msg_01", 28);
        let expected = format!(
            r#"{{"id":"{id}","type":"message","role":"assistant","model":"claude-test","content":[{{"type":"text","text":"hello from claude-test: this is a fake anthropic reply"}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":2,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0}},"output_tokens":9,"service_tier":"standard"}}}}"#
        );
        assert_eq!(rsp.text(), expected);
    }

    #[tokio::test]
    async fn weather_question_with_tools_gets_a_tool_use_block_and_a_tool_result_ends_the_loop() {
        let fake = FakeAnthropic::start().await;
        let tools = json!([{"name": "get_weather", "input_schema": {"type": "object"}}]);
        let ask = json!({
            "model": "claude-test",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "weather in Oslo?"}]}],
            "tools": tools,
        });
        let rsp = post(&fake, ask).await.json();
        assert_eq!(rsp["stop_reason"], "tool_use");
        assert_eq!(rsp["usage"]["output_tokens"], 11);
        let content = rsp["content"].as_array().unwrap();
        assert_eq!(content.len(), 2);
        assert_eq!(content[0], json!({"type": "text", "text": "hello from claude-test: let me look that up"}));
        let tool_id = content[1]["id"].as_str().unwrap();
        assert_anthropic_id(tool_id, "toolu_01", 30);
        assert_eq!(
            content[1],
            json!({"type": "tool_use", "id": tool_id, "name": "get_weather", "input": {"city": "Oslo"}})
        );

        let follow_up = json!({
            "model": "claude-test",
            "max_tokens": 100,
            "messages": [
                {"role": "user", "content": "weather in Oslo?"},
                {"role": "assistant", "content": [content[1].clone()]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "-3C, snow"}]},
            ],
            "tools": tools,
        });
        let rsp = post(&fake, follow_up).await.json();
        assert_eq!(rsp["stop_reason"], "end_turn");
        assert_eq!(rsp["content"][0]["text"], "hello from claude-test: this is a fake anthropic reply");

        let no_tools =
            post(&fake, json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "weather?"}]}))
                .await;
        assert_eq!(no_tools.json()["stop_reason"], "end_turn");
    }

    #[tokio::test]
    async fn max_tokens_cuts_the_answer_with_stop_reason_max_tokens() {
        let fake = FakeAnthropic::start().await;
        let rsp =
            post(&fake, json!({"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]})).await;
        let json = rsp.json();
        assert_eq!(json["content"], json!([{"type": "text", "text": "hello from m:"}]));
        assert_eq!(json["stop_reason"], "max_tokens");
        assert_eq!(json["usage"]["output_tokens"], 3);

        let stream = post(
            &fake,
            json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}], "stream": true}),
        )
        .await;
        let text = stream.text();
        let names: Vec<&str> = events(&text).iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["message_start", "ping", "message_delta", "message_stop"]);
        assert!(text.contains(r#""stop_reason":"max_tokens""#), "{text}");
    }

    #[tokio::test]
    async fn wrong_or_missing_api_key_gets_anthropic_401_without_consuming_the_script() {
        let fake = FakeAnthropic::start().await;
        fake.require_api_key("sk-ant-right");
        fake.push(AnthropicBehaviour::Text("scripted".to_owned()));
        let body = request("m", false).to_string();

        let wrong =
            send(&fake, Method::POST, "/v1/messages", &[VERSION, ("x-api-key", "sk-ant-wrong")], body.clone()).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert_eq!(wrong.header("content-type"), "application/json");
        assert_eq!(wrong.text(), wrong.expected_error("authentication_error", "invalid x-api-key"));

        let bearer = [VERSION, ("authorization", "Bearer sk-ant-right")];
        let missing = send(&fake, Method::POST, "/v1/messages", &bearer, body.clone()).await;
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        assert_eq!(missing.text(), missing.expected_error("authentication_error", "x-api-key header is required"));

        let right = send(&fake, Method::POST, "/v1/messages", &[VERSION, ("x-api-key", "sk-ant-right")], body).await;
        assert_eq!(right.status, StatusCode::OK);
        assert_eq!(right.json()["content"][0]["text"], "scripted");
        assert_eq!(fake.hits(), 3);
    }

    #[tokio::test]
    async fn missing_or_unknown_anthropic_version_gets_400() {
        let fake = FakeAnthropic::start().await;
        let body = request("m", true).to_string();
        let missing = send(&fake, Method::POST, "/v1/messages", &[], body.clone()).await;
        assert_eq!(missing.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            missing.text(),
            missing.expected_error("invalid_request_error", "anthropic-version: header is required")
        );

        let unknown = send(&fake, Method::POST, "/v1/messages", &[("anthropic-version", "2024-10-22")], body).await;
        assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
        assert_eq!(unknown.json()["error"]["message"], r#"anthropic-version: "2024-10-22" is not a valid version"#);
        assert_eq!(fake.hits(), 2);
    }

    #[tokio::test]
    async fn invalid_bodies_get_anthropic_400s() {
        let fake = FakeAnthropic::start().await;
        let message = |got: &Got| {
            assert_eq!(got.status, StatusCode::BAD_REQUEST);
            assert_eq!(got.json()["type"], "error");
            assert_eq!(got.json()["error"]["type"], "invalid_request_error");
            assert_eq!(got.json()["request_id"], got.header("request-id"));
            got.json()["error"]["message"].as_str().unwrap().to_owned()
        };
        let user = json!([{"role": "user", "content": "x"}]);
        let no_max_tokens = post(&fake, json!({"model": "m", "messages": user})).await;
        assert_eq!(message(&no_max_tokens), "max_tokens: Field required");
        let no_messages = post(&fake, json!({"model": "m", "max_tokens": 5})).await;
        assert_eq!(message(&no_messages), "messages: Field required");
        let empty = post(&fake, json!({"model": "m", "max_tokens": 5, "messages": []})).await;
        assert_eq!(message(&empty), "messages: at least one message is required");
        let no_model = post(&fake, json!({"max_tokens": 5, "messages": user})).await;
        assert_eq!(message(&no_model), "model: Field required");
        let not_json = send(&fake, Method::POST, "/v1/messages", &[VERSION], "{nope".to_owned()).await;
        assert!(message(&not_json).starts_with("The request body is not valid JSON: "));
        assert_eq!(fake.hits(), 5);

        let unknown = send(&fake, Method::GET, "/v1/messages", &[VERSION], String::new()).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert_eq!(unknown.text(), unknown.expected_error("not_found_error", "Not Found"));
        assert_eq!(fake.hits(), 5, "only POST /v1/messages is a hit");
    }

    #[tokio::test]
    async fn overloaded_gets_a_529_overloaded_error_body() {
        let fake = FakeAnthropic::start().await;
        for stream in [false, true] {
            let rsp = post(&fake, request("overloaded", stream)).await;
            assert_eq!(rsp.status.as_u16(), 529);
            assert_eq!(rsp.header("content-type"), "application/json");
            assert_eq!(rsp.text(), rsp.expected_error("overloaded_error", "Overloaded"));
        }
        fake.push(AnthropicBehaviour::status(529));
        let scripted = post(&fake, request("m", false)).await;
        assert_eq!(scripted.status.as_u16(), 529);
        assert_eq!(scripted.text(), scripted.expected_error("overloaded_error", "Overloaded"));
        assert_eq!(fake.cancelled(), 0);
    }

    #[tokio::test]
    async fn model_names_pick_failure_modes() {
        let fake = FakeAnthropic::start().await;
        let cases = [
            ("fail-400", 400, "invalid_request_error"),
            ("fail-401", 401, "authentication_error"),
            ("fail-402", 402, "billing_error"),
            ("fail-403", 403, "permission_error"),
            ("fail-404", 404, "not_found_error"),
            ("fail-413", 413, "request_too_large"),
            ("fail-422", 422, "invalid_request_error"),
            ("rate-limited", 429, "rate_limit_error"),
            ("fail-500", 500, "api_error"),
            ("fail-503", 503, "api_error"),
            ("fail-504", 504, "timeout_error"),
            ("fail-529", 529, "overloaded_error"),
        ];
        for (model, status, kind) in cases {
            for stream in [false, true] {
                let rsp = post(&fake, request(model, stream)).await;
                assert_eq!(rsp.status.as_u16(), status, "{model}");
                assert_eq!(rsp.json()["error"]["type"], kind, "{model}");
                assert_eq!(rsp.json()["request_id"], rsp.header("request-id"), "{model}");
            }
        }
        let limited = post(&fake, request("rate-limited", false)).await;
        assert_eq!(limited.header("retry-after"), "1");
        assert_eq!(limited.header("anthropic-ratelimit-requests-remaining"), "0");
        assert_eq!(
            AnthropicBehaviour::for_model("slow-ttft"),
            AnthropicBehaviour::SlowFirstChunk(Duration::from_secs(5))
        );
        assert_eq!(AnthropicBehaviour::for_model("break-after-3"), AnthropicBehaviour::BreakAfter { chunks: 3 });
        assert_eq!(AnthropicBehaviour::for_model("error-after-3"), AnthropicBehaviour::ErrorEventAfter { chunks: 3 });
        assert_eq!(AnthropicBehaviour::for_model("endless"), AnthropicBehaviour::Endless);
        assert_eq!(AnthropicBehaviour::for_model("claude-haiku-4-5"), AnthropicBehaviour::Ok);
        assert_eq!(AnthropicBehaviour::for_model("fail-200"), AnthropicBehaviour::Ok);
    }

    #[tokio::test]
    async fn custom_status_sends_body_and_headers_verbatim() {
        let fake = FakeAnthropic::start().await;
        fake.push(AnthropicBehaviour::Status {
            status: 503,
            body: "upstream connect error".to_owned(),
            headers: vec![("x-should-retry".to_owned(), "true".to_owned())],
        });
        let rsp = post(&fake, request("m", true)).await;
        assert_eq!(rsp.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rsp.text(), "upstream connect error");
        assert_eq!(rsp.header("x-should-retry"), "true");
        assert_eq!(fake.cancelled(), 0);
    }

    #[tokio::test]
    async fn error_event_after_ends_the_stream_cleanly_without_message_stop() {
        let fake = FakeAnthropic::start().await;
        let rsp = post(&fake, request("error-after-2", true)).await;
        assert_eq!(rsp.status, StatusCode::OK);
        assert!(rsp.error.is_none(), "the body ends cleanly");
        let text = rsp.text();
        let expected = message_start(&message_id(&text), "error-after-2", 1)
            + TEXT_START
            + PING
            + &text_deltas(0, &["hello", " from"])
            + "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert_eq!(text, expected);

        let plain = post(&fake, request("error-after-2", false)).await;
        assert_eq!(plain.status.as_u16(), 529);
        assert_eq!(fake.cancelled(), 0);
    }

    #[tokio::test]
    async fn break_after_closes_the_connection_mid_stream() {
        let fake = FakeAnthropic::start().await;
        fake.push(AnthropicBehaviour::BreakAfter { chunks: 2 });
        let rsp = post(&fake, request("m", true)).await;
        assert_eq!(rsp.status, StatusCode::OK);
        assert!(rsp.error.is_some(), "the client should see a broken body");
        let text = rsp.text();
        let names: Vec<&str> = events(&text).iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta"]
        );

        // On the wire: a keep-alive connection that the server closes mid-body, without the
        // terminating zero-length chunk.
        let mut stream = raw_post(&fake, &request("break-after-1", true)).await;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw)).await.unwrap().unwrap();
        let raw = String::from_utf8(raw).unwrap();
        assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
        assert!(raw.contains("transfer-encoding: chunked\r\n"), "{raw}");
        assert_eq!(raw.matches("event: content_block_delta").count(), 1, "{raw}");
        assert!(!raw.contains("message_stop") && !raw.ends_with("0\r\n\r\n"), "{raw}");
        assert_eq!(fake.cancelled(), 0, "a break by the fake is not a client cancellation");
    }

    #[tokio::test]
    async fn slow_first_chunk_sends_message_start_and_ping_at_once() {
        let fake = FakeAnthropic::start().await;
        let delay = Duration::from_millis(1500);
        fake.push(AnthropicBehaviour::SlowFirstChunk(delay));
        let mut stream = raw_post(&fake, &request("m", true)).await;
        let started = Instant::now();
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, |s| s.contains("event: ping\n")).await;
        assert!(started.elapsed() < delay, "ping took {:?}", started.elapsed());
        assert!(String::from_utf8_lossy(&buf).contains("event: message_start\n"));
        assert!(!String::from_utf8_lossy(&buf).contains("content_block_delta"));
        read_until(&mut stream, &mut buf, |s| s.contains("event: message_stop")).await;
        assert!(started.elapsed() >= delay);
    }

    #[tokio::test]
    async fn client_leaving_mid_stream_is_counted_as_cancelled() {
        let fake = FakeAnthropic::start().await;
        let complete = post(&fake, request("m", true)).await;
        assert!(complete.text().ends_with(MESSAGE_STOP));
        eventually("the complete stream to leave in_flight", || fake.in_flight() == 0).await;
        assert_eq!(fake.cancelled(), 0, "a finished stream is not cancelled");

        let mut stream = raw_post(&fake, &request("endless", true)).await;
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, |s| s.matches("event: content_block_delta").count() >= 3).await;
        assert_eq!(fake.in_flight(), 1);
        assert_eq!(fake.cancelled(), 0);
        drop(stream);
        eventually("the endless stream to be cancelled", || fake.cancelled() == 1).await;
        eventually("in_flight to drop", || fake.in_flight() == 0).await;

        // a client leaving while the stream is idle counts too
        fake.push(AnthropicBehaviour::SlowFirstChunk(Duration::from_secs(30)));
        let mut stream = raw_post(&fake, &request("m", true)).await;
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, |s| s.contains("event: ping\n")).await;
        drop(stream);
        eventually("the idle stream to be cancelled", || fake.cancelled() == 2).await;
        assert_eq!(fake.in_flight(), 0);
    }

    #[tokio::test]
    async fn named_fake_says_who_answered_and_base_url_is_the_bare_origin() {
        let fake = FakeAnthropic::start_named("a").await;
        assert_eq!(fake.name(), Some("a"));
        assert_eq!(fake.base_url(), format!("http://127.0.0.1:{}", fake.addr().port()));
        let rsp = post(&fake, request("m", false)).await;
        assert_eq!(rsp.header("x-fake-upstream"), "a");
        assert_eq!(rsp.json()["content"][0]["text"], "hello from m via a: this is a fake anthropic reply");
    }

    #[tokio::test]
    async fn requests_are_recorded_with_lowercase_headers_and_json_bodies() {
        let fake = FakeAnthropic::start().await;
        let body = request("m", false);
        send(&fake, Method::POST, "/v1/messages", &[VERSION, ("X-Api-Key", "Key")], body.to_string()).await;
        send(&fake, Method::GET, "/v1/models?limit=2", &[], String::new()).await;
        let recorded = fake.requests();
        assert_eq!(recorded.len(), 2);
        assert_eq!(recorded[0].method, "POST");
        assert_eq!(recorded[0].path, "/v1/messages");
        assert_eq!(recorded[0].header("x-api-key"), Some("Key"));
        assert!(recorded[0].headers.iter().any(|(n, v)| n == "anthropic-version" && v == "2023-06-01"));
        assert_eq!(recorded[0].body, body);
        assert_eq!(recorded[0].model(), Some("m"));
        assert_eq!(recorded[1].query.as_deref(), Some("limit=2"));
        assert_eq!(recorded[1].body, Value::Null);
        assert!(recorded[0].at <= recorded[1].at);

        fake.record_requests(false);
        post(&fake, body).await;
        assert_eq!(fake.requests().len(), 2);
        assert_eq!(fake.hits(), 2);
    }

    #[test]
    fn rfc3339_formats_utc_seconds() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_772_323_200 + 3_723);
        assert_eq!(rfc3339(at), "2026-03-01T01:02:03Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = std::time::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
