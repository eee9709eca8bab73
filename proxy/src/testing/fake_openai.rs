//! A fake OpenAI upstream that speaks OpenAI's wire format byte for byte.
//!
//! [`FakeOpenAi`] serves, on a loopback port chosen by the OS:
//!
//! - `POST /v1/chat/completions`: a `chat.completion` JSON body, or with `"stream": true` an SSE
//!   stream of `chat.completion.chunk` events (`data: <json>\n\n`, no `event:` lines), ending
//!   with `data: [DONE]\n\n`. See `docs/provider-protocols.md` §1.2, §1.3 and §8.
//! - `POST /v1/embeddings`: deterministic unit-length vectors (§1.5).
//! - `GET /v1/models` and `GET /v1/models/{id}`: OpenAI's list and model shapes.
//! - anything else: OpenAI's 404 `Invalid URL (METHOD /path)`.
//!
//! # What a chat request gets
//!
//! 1. Every `POST /v1/chat/completions` counts as a hit ([`FakeOpenAi::hits`]) and every request
//!    is recorded ([`FakeOpenAi::requests`]), even when it is then rejected.
//! 2. With [`FakeOpenAi::require_api_key`], a missing or wrong `Authorization: Bearer` gets a 401
//!    `invalid_api_key` error. A rejected request does not consume a scripted behaviour.
//! 3. The body is validated like OpenAI does: invalid JSON, no `model`, missing or empty
//!    `messages`, or `stream_options` without `stream: true` get a 400 `invalid_request_error`.
//! 4. The behaviour is the oldest one queued with [`FakeOpenAi::push`] (chat and embeddings
//!    requests consume the queue), otherwise [`Behaviour::for_model`] of the request's `model`.
//!
//! # Content and token counting
//!
//! The normal answer is `hello from <model>: this is a fake completion`, or
//! `hello from <model> via <name>: this is a fake completion` for a named fake, streamed as one
//! content chunk per word (each word after the first keeps its leading space, so the chunks
//! concatenate to the text). Usage is counted deterministically, without a tokenizer:
//!
//! - `prompt_tokens`: whitespace-separated words in the text of all messages (string `content`
//!   and the `text` of content parts);
//! - `completion_tokens`: the number of content chunks, i.e. words of the answer;
//! - all `*_details` counters are 0.
//!
//! When the request has a non-empty `tools` array and its last message is a `user` message whose
//! text contains `weather` (any case), the answer is a tool call instead: `content: null`, one
//! `tool_calls` entry `{"id":"call_…","type":"function","function":{"name":<first tool's
//! name>,"arguments":"{\"city\":\"Oslo\"}"}}` and `finish_reason: "tool_calls"`, counted as 2
//! completion tokens (its two argument fragments). A follow-up that ends with the `tool` result
//! gets the normal text answer, which ends the tool loop.
//!
//! `max_completion_tokens` (or else `max_tokens`) cuts the answer to that many words with
//! `finish_reason: "length"`; otherwise `finish_reason` is `"stop"`. Embeddings count words per
//! text input and one token per element of a token-array input.
//!
//! # Streams
//!
//! The first chunk has `delta: {"role":"assistant","content":""}`, then one chunk per word, then a
//! finish chunk with `delta: {}` and the `finish_reason`. With `stream_options.include_usage:
//! true` every chunk carries `"usage": null` and an extra chunk with `"choices": []` and the usage
//! comes right before `[DONE]`. A tool call streams as the role chunk (`content: null`), a
//! chunk with the call's `index`, `id`, `type`, `function.name` and `arguments: ""`, then one
//! chunk per argument fragment (`{"city":`, `"Oslo"}`), then the finish chunk. Like OpenAI, every chunk carries a random `obfuscation` string
//! unless the request sets `stream_options.include_obfuscation: false`.
//!
//! # Response headers
//!
//! Every response carries `x-request-id` (`req_` + 32 hex digits), `openai-processing-ms`,
//! `openai-version`, `openai-organization`, the six `x-ratelimit-*` headers and, for a named fake,
//! `x-fake-upstream: <name>`. Streams are `text/event-stream` with `cache-control: no-cache`.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde_json::Value;

pub use super::common::Recorded;
use super::common::{
    Ctx, Cut, FakeBody, Prelude, Provider, Reply, Server, Step, loopback, push_events, to_json, word_chunks, words,
    write_json,
};

/// `system_fingerprint` of every completion and chunk.
const SYSTEM_FINGERPRINT: &str = "fp_fa4e0a1b2c";
/// `created` of the entries in `GET /v1/models`.
const MODELS_CREATED: u64 = 1_700_000_000;
/// Message of OpenAI's generic 500 (also used for the in-stream error event).
const SERVER_ERROR_MESSAGE: &str = "The server had an error while processing your request. Sorry about that!";
/// Models listed by `GET /v1/models`: two ordinary chat models, two embedding models and the
/// model names that select a failure mode (see [`Behaviour::for_model`]).
const LISTED_MODELS: &[(&str, &str)] = &[
    ("gpt-4o-mini", "system"),
    ("gpt-4.1-mini", "system"),
    ("text-embedding-3-small", "system"),
    ("text-embedding-3-large", "system"),
    ("fail-400", "fake-openai"),
    ("fail-500", "fake-openai"),
    ("fail-503", "fake-openai"),
    ("rate-limited", "fake-openai"),
    ("insufficient-quota", "fake-openai"),
    ("slow-ttft", "fake-openai"),
    ("break-after-3", "fake-openai"),
    ("error-after-3", "fake-openai"),
    ("endless", "fake-openai"),
];

// === Behaviour ===

/// What the fake does with one chat (or embeddings) request.
///
/// Stream-only behaviours have a documented meaning for non-streaming requests too, so a
/// manifest can point both kinds of traffic at the same model name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// A normal answer: JSON or SSE, as the request's `stream` asks.
    Ok,
    /// A normal answer with this content (streamed one word per chunk).
    Text(String),
    /// This status, body (sent verbatim as `application/json`) and headers. The headers
    /// replace the fake's default headers of the same name. See [`Behaviour::status`].
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
    /// Stream: sends the headers and the role chunk at once, then waits this long before the
    /// first content chunk. Non-streaming: waits this long, then answers normally.
    SlowFirstChunk(Duration),
    /// Stream: pauses for `stall` after `chunks` content chunks (an idle gap), then continues
    /// normally. Non-streaming: waits `stall`, then answers normally.
    StallAfter {
        /// Content chunks sent before the pause.
        chunks: usize,
        /// Length of the pause.
        stall: Duration,
    },
    /// Stream: after the role chunk and `chunks` content chunks (at most all of them), closes
    /// the connection abruptly: no finish chunk, no usage, no `[DONE]`, and for HTTP/1.1 no
    /// terminating zero-length chunk. Non-streaming: sends a 200 head and breaks the body.
    BreakAfter {
        /// Content chunks sent before the break.
        chunks: usize,
    },
    /// Stream: after `chunks` content chunks sends `data: {"error":{...}}` (OpenAI's in-stream
    /// `server_error`) and ends the body cleanly without `[DONE]`. Non-streaming: a 500.
    ErrorEventAfter {
        /// Content chunks sent before the error event.
        chunks: usize,
    },
    /// Stream: one content chunk every 20 ms until the client goes away (for cancellation
    /// tests). Non-streaming: never answers.
    Endless,
}

impl Behaviour {
    /// A [`Behaviour::Status`] with the error body OpenAI sends for `code`.
    ///
    /// 400 `invalid_request_error`; 401 `invalid_api_key`; 403 `unsupported_country_region_territory`;
    /// 404 `model_not_found`; 429 `rate_limit_exceeded` with `retry-after: 1` and exhausted
    /// request rate-limit headers; 500 and other 5xx `server_error`; anything else a generic
    /// error of type `invalid_request_error` (4xx) or `server_error` (5xx).
    pub fn status(code: u16) -> Self {
        let (body, headers) = openai_error(code);
        Behaviour::Status { status: code, body, headers }
    }

    /// A 429 `insufficient_quota`: out of credits, which clients must **not** retry.
    pub fn insufficient_quota() -> Self {
        Behaviour::Status {
            status: 429,
            body: error_body(
                "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
                "insufficient_quota",
                None,
                Some("insufficient_quota"),
            ),
            headers: Vec::new(),
        }
    }

    /// The behaviour a request gets when nothing is scripted, chosen by its `model`.
    ///
    /// | model | behaviour |
    /// |---|---|
    /// | `fail-<code>` (400..=599, e.g. `fail-500`, `fail-503`, `fail-400`) | [`Behaviour::status`]`(code)` |
    /// | `rate-limited` | 429 `rate_limit_exceeded` with `retry-after: 1` |
    /// | `insufficient-quota` | [`Behaviour::insufficient_quota`] |
    /// | `slow-ttft` | [`Behaviour::SlowFirstChunk`] of 5 s |
    /// | `break-after-<n>` (e.g. `break-after-3`) | [`Behaviour::BreakAfter`] `n` chunks |
    /// | `error-after-<n>` (e.g. `error-after-3`) | [`Behaviour::ErrorEventAfter`] `n` chunks |
    /// | `endless` | [`Behaviour::Endless`] |
    /// | anything else | [`Behaviour::Ok`] |
    pub fn for_model(model: &str) -> Self {
        let number = |prefix: &str| model.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok());
        match model {
            "rate-limited" => Behaviour::status(429),
            "insufficient-quota" => Behaviour::insufficient_quota(),
            "slow-ttft" => Behaviour::SlowFirstChunk(Duration::from_secs(5)),
            "endless" => Behaviour::Endless,
            _ => {
                if let Some(code) =
                    model.strip_prefix("fail-").and_then(|c| c.parse::<u16>().ok()).filter(|c| (400..600).contains(c))
                {
                    Behaviour::status(code)
                } else if let Some(chunks) = number("break-after-") {
                    Behaviour::BreakAfter { chunks }
                } else if let Some(chunks) = number("error-after-") {
                    Behaviour::ErrorEventAfter { chunks }
                } else {
                    Behaviour::Ok
                }
            }
        }
    }
}

/// The error body and headers OpenAI sends with `code` (see [`Behaviour::status`]).
fn openai_error(code: u16) -> (String, Vec<(String, String)>) {
    let reason = StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    let generic = format!("{reason}.");
    let (message, kind, code_field): (&str, &str, Option<&str>) = match code {
        400 => ("Invalid request.", "invalid_request_error", None),
        401 => (
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        403 => (
            "Country, region, or territory not supported",
            "request_forbidden",
            Some("unsupported_country_region_territory"),
        ),
        404 => (
            "The model does not exist or you do not have access to it.",
            "invalid_request_error",
            Some("model_not_found"),
        ),
        429 => (
            "Rate limit reached for requests. Please try again in 1s. Visit https://platform.openai.com/account/rate-limits to learn more.",
            "requests",
            Some("rate_limit_exceeded"),
        ),
        500 => (SERVER_ERROR_MESSAGE, "server_error", None),
        503 => ("The server is overloaded or not ready yet.", "server_error", None),
        c if c >= 500 => (generic.as_str(), "server_error", None),
        _ => (generic.as_str(), "invalid_request_error", None),
    };
    let headers = if code == 429 {
        vec![
            ("retry-after".to_owned(), "1".to_owned()),
            ("x-ratelimit-remaining-requests".to_owned(), "0".to_owned()),
            ("x-ratelimit-reset-requests".to_owned(), "1s".to_owned()),
        ]
    } else {
        Vec::new()
    };
    (error_body(message, kind, None, code_field), headers)
}

// === FakeOpenAi ===

/// A running fake OpenAI server. Dropping it stops accepting and closes every open connection
/// (including endless streams).
pub struct FakeOpenAi {
    server: Server<Behaviour>,
}

impl std::fmt::Debug for FakeOpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.server.debug(f, "FakeOpenAi")
    }
}

impl FakeOpenAi {
    /// Starts an unnamed fake on `127.0.0.1:0` (an OS-chosen port).
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    #[expect(clippy::expect_used, reason = "a test double without a loopback port cannot do anything useful")]
    pub async fn start() -> FakeOpenAi {
        Self::spawn(loopback(), None).await.expect("bind a loopback port for the fake openai upstream")
    }

    /// Starts a fake on `127.0.0.1:0` whose responses carry `x-fake-upstream: <name>` and whose
    /// normal content says `via <name>`, so split and fallback tests can tell fakes apart.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound or `name` is not a valid header value.
    #[expect(clippy::expect_used, reason = "a test double without a loopback port cannot do anything useful")]
    pub async fn start_named(name: &str) -> FakeOpenAi {
        Self::spawn(loopback(), Some(name)).await.expect("bind a loopback port for the fake openai upstream")
    }

    /// Starts an unnamed fake on `addr`.
    pub async fn start_on(addr: SocketAddr) -> io::Result<FakeOpenAi> {
        Self::spawn(addr, None).await
    }

    /// Starts a named fake (see [`FakeOpenAi::start_named`]) on `addr`.
    pub async fn start_on_named(addr: SocketAddr, name: &str) -> io::Result<FakeOpenAi> {
        Self::spawn(addr, Some(name)).await
    }

    async fn spawn(addr: SocketAddr, name: Option<&str>) -> io::Result<FakeOpenAi> {
        Ok(FakeOpenAi { server: Server::start(&OPENAI, addr, name).await? })
    }

    /// The address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://ADDR/v1`, the value for an OpenAI client's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr())
    }

    /// The name given at start, if any.
    pub fn name(&self) -> Option<&str> {
        self.server.name()
    }

    /// From now on, requests must send `Authorization: Bearer <key>`; others get OpenAI's 401
    /// `invalid_api_key`.
    pub fn require_api_key(&self, key: &str) {
        self.server.require_api_key(key);
    }

    /// Queues `behaviour` for the next chat or embeddings request (FIFO). Once the queue is
    /// empty, requests get [`Behaviour::for_model`] of their `model` again.
    pub fn push(&self, behaviour: Behaviour) {
        self.server.push(behaviour);
    }

    /// `POST /v1/chat/completions` requests received so far, including rejected ones.
    pub fn hits(&self) -> usize {
        self.server.hits()
    }

    /// Every request received so far (all paths), oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// Turns request recording on (the default) or off. Off keeps memory flat under load; the
    /// `fake-openai` binary runs with it off.
    pub fn record_requests(&self, on: bool) {
        self.server.record_requests(on);
    }

    /// Streams the client abandoned before the fake sent their last byte.
    ///
    /// Observed, not inferred: the count goes up when the server drops a stream's response body
    /// (or the handler of a streaming request) before the body produced its final frame, which
    /// happens when the connection fails or the client resets the stream. Streams the fake
    /// breaks on purpose ([`Behaviour::BreakAfter`]) do not count.
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

/// OpenAI's side of the server: headers, ids, routes.
static OPENAI: Provider<Behaviour> = Provider {
    label: "openai",
    base_headers: &[
        ("openai-organization", "user-fake"),
        ("openai-version", "2020-10-01"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "30000000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-remaining-tokens", "29999000"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-reset-tokens", "2ms"),
    ],
    request_id_header: "x-request-id",
    request_id,
    per_response_headers: |headers, started| {
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        headers.insert(HeaderName::from_static("openai-processing-ms"), HeaderValue::from(elapsed_ms));
    },
    is_hit: |method, path| Endpoint::of(method, path) == Endpoint::Chat,
    for_model: Behaviour::for_model,
    handle: |ctx, parts, json| Box::pin(handle(ctx, parts, json.ok())),
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Embeddings,
    Models,
    Model,
    Unknown,
}

impl Endpoint {
    fn of(method: &Method, path: &str) -> Endpoint {
        match (method, path) {
            (&Method::POST, "/v1/chat/completions") => Endpoint::Chat,
            (&Method::POST, "/v1/embeddings") => Endpoint::Embeddings,
            (&Method::GET, "/v1/models") => Endpoint::Models,
            (&Method::GET, p) if p.strip_prefix("/v1/models/").is_some_and(|id| !id.is_empty()) => Endpoint::Model,
            _ => Endpoint::Unknown,
        }
    }
}

async fn handle(ctx: Ctx<Behaviour>, parts: Parts, json: Option<Value>) -> Response<FakeBody> {
    let endpoint = Endpoint::of(&parts.method, parts.uri.path());
    if endpoint != Endpoint::Unknown
        && let Err(err) = check_api_key(ctx.shared.api_key(), &parts.headers)
    {
        return err.reply(ctx);
    }
    match endpoint {
        Endpoint::Chat => chat(ctx, json).await,
        Endpoint::Embeddings => embeddings(ctx, json).await,
        Endpoint::Models => ctx.json_reply(StatusCode::OK, MODELS_BODY.clone()),
        Endpoint::Model => {
            let id = parts.uri.path().trim_start_matches("/v1/models/");
            let owned_by = LISTED_MODELS.iter().find(|(m, _)| *m == id).map_or("system", |(_, o)| *o);
            let body = to_json(&ModelJson { id, object: "model", created: MODELS_CREATED, owned_by });
            ctx.json_reply(StatusCode::OK, body)
        }
        Endpoint::Unknown => {
            let message = format!("Invalid URL ({} {})", parts.method, parts.uri.path());
            ApiError::new(StatusCode::NOT_FOUND, message, "invalid_request_error").reply(ctx)
        }
    }
}

/// Checks `Authorization: Bearer` against `expected`, the key requests must send (if any).
fn check_api_key(expected: Option<String>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim());
    let message = match given {
        Some(key) if key == expected => return Ok(()),
        Some(key) if !key.is_empty() => format!(
            "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
            mask_key(key)
        ),
        _ => "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.".to_owned(),
    };
    Err(ApiError::new(StatusCode::UNAUTHORIZED, message, "invalid_request_error").code("invalid_api_key"))
}

/// OpenAI echoes a wrong key with its middle starred out.
fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

// === chat completions ===

/// What a validated chat request asks for.
struct ChatRequest {
    model: String,
    stream: bool,
    include_usage: bool,
    include_obfuscation: bool,
    prompt_tokens: u64,
    max_tokens: Option<usize>,
    /// The first tool's name, when the last message asks a `user` question about the weather
    /// and the request offers tools.
    weather_tool: Option<String>,
}

impl ChatRequest {
    fn parse(json: Option<Value>) -> Result<ChatRequest, ApiError> {
        let Some(Value::Object(body)) = json else {
            return Err(ApiError::invalid_json());
        };
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            _ => {
                return Err(ApiError::invalid_request("you must provide a model parameter".to_owned()));
            }
        };
        let messages = match body.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => m,
            Some(Value::Array(_)) => {
                return Err(ApiError::invalid_request(
                    "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.".to_owned(),
                )
                .param("messages")
                .code("empty_array"));
            }
            Some(_) => {
                return Err(ApiError::invalid_request(
                    "Invalid type for 'messages': expected an array of objects.".to_owned(),
                )
                .param("messages")
                .code("invalid_type"));
            }
            None => {
                return Err(ApiError::invalid_request("Missing required parameter: 'messages'.".to_owned())
                    .param("messages")
                    .code("missing_required_parameter"));
            }
        };
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let options = body.get("stream_options").filter(|o| !o.is_null());
        if options.is_some() && !stream {
            return Err(ApiError::invalid_request(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.".to_owned(),
            )
            .param("stream_options")
            .code("invalid_value"));
        }
        let option = |name: &str| options.and_then(|o| o.get(name)).and_then(Value::as_bool);
        let max_tokens = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|field| body.get(*field).and_then(Value::as_u64))
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let asks_for_weather = messages.last().is_some_and(|m| {
            m.get("role").and_then(Value::as_str) == Some("user") && message_text(m).to_lowercase().contains("weather")
        });
        let weather_tool = body
            .get("tools")
            .and_then(Value::as_array)
            .and_then(|tools| tools.first())
            .filter(|_| asks_for_weather)
            .map(|tool| tool.pointer("/function/name").and_then(Value::as_str).unwrap_or("tool").to_owned());
        Ok(ChatRequest {
            weather_tool,
            prompt_tokens: messages.iter().map(message_words).sum(),
            include_usage: option("include_usage").unwrap_or(false),
            include_obfuscation: option("include_obfuscation").unwrap_or(true),
            model,
            stream,
            max_tokens,
        })
    }
}

pub(super) fn message_words(message: &Value) -> u64 {
    message_texts(message).map(words).sum()
}

/// The texts of a message: string `content`, or the `text` of its content parts.
fn message_texts(message: &Value) -> impl Iterator<Item = &str> {
    let (single, parts) = match message.get("content") {
        Some(Value::String(text)) => (Some(text.as_str()), None),
        Some(Value::Array(parts)) => (None, Some(parts)),
        _ => (None, None),
    };
    single.into_iter().chain(parts.into_iter().flatten().filter_map(|p| p.get("text").and_then(Value::as_str)))
}

fn message_text(message: &Value) -> String {
    message_texts(message).collect::<Vec<_>>().join(" ")
}

/// The tool call's arguments, streamed in these fragments; they concatenate to
/// `{"city":"Oslo"}`.
const TOOL_ARGUMENT_FRAGMENTS: &[&str] = &["{\"city\":", "\"Oslo\"}"];

/// `call_` and 24 random alphanumerics, like OpenAI's tool-call ids.
fn tool_call_id() -> String {
    format!("call_{}", random_alphanumeric(24))
}

fn default_text(model: &str, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("hello from {model} via {name}: this is a fake completion"),
        None => format!("hello from {model}: this is a fake completion"),
    }
}

/// The answer's content chunks after `max_tokens`, and the matching finish reason.
pub(super) fn answer(text: &str, max_tokens: Option<usize>) -> (Vec<&str>, &'static str) {
    let mut chunks = word_chunks(text);
    match max_tokens {
        Some(max) if chunks.len() > max => {
            chunks.truncate(max);
            (chunks, "length")
        }
        _ => (chunks, "stop"),
    }
}

async fn chat(ctx: Ctx<Behaviour>, json: Option<Value>) -> Response<FakeBody> {
    let request = match ChatRequest::parse(json) {
        Ok(request) => request,
        Err(err) => return err.reply(ctx),
    };
    let behaviour = ctx.shared.next_behaviour(&request.model);
    if request.stream { chat_stream(ctx, request, behaviour).await } else { chat_json(ctx, request, behaviour).await }
}

async fn chat_json(ctx: Ctx<Behaviour>, request: ChatRequest, behaviour: Behaviour) -> Response<FakeBody> {
    let (text, tool) = match behaviour {
        Behaviour::Text(text) => (text, None),
        other => match non_stream_prelude(other).await {
            Prelude::Answer => (default_text(&request.model, ctx.shared.name()), request.weather_tool.clone()),
            Prelude::Reply(reply) => return ctx.reply(reply),
        },
    };
    if let Some(name) = tool {
        let arguments = TOOL_ARGUMENT_FRAGMENTS.concat();
        let call = ToolCallJson {
            id: &tool_call_id(),
            kind: "function",
            function: FunctionJson { name: &name, arguments: &arguments },
        };
        let usage = Usage::new(request.prompt_tokens, TOOL_ARGUMENT_FRAGMENTS.len() as u64);
        let message =
            Message { role: "assistant", content: None, tool_calls: Some([call]), refusal: (), annotations: [] };
        return ctx.json_reply(StatusCode::OK, completion_json(&request.model, message, "tool_calls", usage));
    }
    let (chunks, finish_reason) = answer(&text, request.max_tokens);
    let content: String = chunks.concat();
    let usage = Usage::new(request.prompt_tokens, chunks.len() as u64);
    let message =
        Message { role: "assistant", content: Some(&content), tool_calls: None, refusal: (), annotations: [] };
    ctx.json_reply(StatusCode::OK, completion_json(&request.model, message, finish_reason, usage))
}

/// A whole `chat.completion` with one choice.
fn completion_json(model: &str, message: Message<'_>, finish_reason: &str, usage: Usage) -> Bytes {
    to_json(&Completion {
        id: &completion_id(),
        object: "chat.completion",
        created: unix_now(),
        model,
        choices: [Choice { index: 0, message, logprobs: (), finish_reason }],
        usage,
        service_tier: "default",
        system_fingerprint: SYSTEM_FINGERPRINT,
    })
}

/// Applies `behaviour` to a non-streaming request (chat or embeddings): waits where it says so,
/// or picks the reply.
/// [`Behaviour::Text`] is treated as [`Behaviour::Ok`] here; chat handles it before.
async fn non_stream_prelude(behaviour: Behaviour) -> Prelude {
    match prelude(&behaviour, || Behaviour::status(500)).await {
        None => Prelude::Answer,
        Some(reply) => Prelude::Reply(reply),
    }
}

/// What `behaviour` means for a non-streaming request to any fake that shares [`Behaviour`]:
/// `None` to answer normally (after any wait it asks for), else the reply to send instead.
/// [`Behaviour::ErrorEventAfter`] answers with `server_error()`'s status (it must be a
/// [`Behaviour::Status`]); [`Behaviour::Endless`] never answers.
pub(super) async fn prelude(behaviour: &Behaviour, server_error: impl FnOnce() -> Behaviour) -> Option<Reply> {
    let status = |behaviour: Behaviour| match behaviour {
        Behaviour::Status { status, body, headers } => Some(Reply::Status { status, body, headers }),
        _ => None,
    };
    match behaviour {
        Behaviour::Ok | Behaviour::Text(_) => None,
        Behaviour::Status { .. } => status(behaviour.clone()),
        Behaviour::SlowHeaders(delay)
        | Behaviour::SlowFirstChunk(delay)
        | Behaviour::StallAfter { stall: delay, .. } => {
            tokio::time::sleep(*delay).await;
            None
        }
        Behaviour::BreakAfter { .. } => Some(Reply::Broken),
        Behaviour::ErrorEventAfter { .. } => status(server_error()),
        Behaviour::Endless => std::future::pending().await,
    }
}

/// Where a stream under `behaviour` leaves its normal course (see [`push_events`]);
/// `error_event` renders the provider's in-stream error for [`Behaviour::ErrorEventAfter`].
pub(super) fn stream_cut(behaviour: &Behaviour, error_event: impl FnOnce() -> Bytes) -> Option<(usize, Cut)> {
    match behaviour {
        Behaviour::SlowFirstChunk(delay) => Some((0, Cut::Pause(*delay))),
        Behaviour::StallAfter { chunks: n, stall } => Some((*n, Cut::Pause(*stall))),
        Behaviour::BreakAfter { chunks: n } => Some((*n, Cut::Break)),
        Behaviour::ErrorEventAfter { chunks: n } => Some((*n, Cut::ErrorEvent(error_event()))),
        _ => None,
    }
}

async fn chat_stream(ctx: Ctx<Behaviour>, request: ChatRequest, behaviour: Behaviour) -> Response<FakeBody> {
    let mut guard = ctx.stream_guard();
    let text = match &behaviour {
        Behaviour::Status { status, body, headers } => {
            guard.finish();
            return ctx.reply(Reply::Status { status: *status, body: body.clone(), headers: headers.clone() });
        }
        Behaviour::SlowHeaders(delay) => {
            tokio::time::sleep(*delay).await;
            default_text(&request.model, ctx.shared.name())
        }
        Behaviour::Text(text) => text.clone(),
        _ => default_text(&request.model, ctx.shared.name()),
    };
    let tool = if matches!(behaviour, Behaviour::Text(_)) { None } else { request.weather_tool.clone() };
    let writer = ChunkWriter {
        id: completion_id(),
        created: unix_now(),
        model: request.model,
        include_usage: request.include_usage,
        include_obfuscation: request.include_obfuscation,
    };
    let steps = match tool {
        Some(name) => {
            let usage = Usage::new(request.prompt_tokens, TOOL_ARGUMENT_FRAGMENTS.len() as u64);
            let mut events = vec![writer.tool_call_start(&tool_call_id(), &name)];
            events.extend(TOOL_ARGUMENT_FRAGMENTS.iter().map(|fragment| writer.tool_call_arguments(fragment)));
            stream_steps(writer, events, "tool_calls", &usage, &behaviour)
        }
        None => {
            let (chunks, finish_reason) = answer(&text, request.max_tokens);
            let usage = Usage::new(request.prompt_tokens, chunks.len() as u64);
            if let Behaviour::Endless = behaviour {
                let pieces = chunks.iter().map(|c| (*c).to_owned()).collect();
                let mut steps = VecDeque::from([Step::Data(writer.role_chunk(false))]);
                steps.push_back(Step::endless(pieces, move |piece| writer.content_chunk(piece)));
                return ctx.stream_reply(steps, guard);
            }
            let events = chunks.iter().map(|chunk| writer.content_chunk(chunk)).collect();
            stream_steps(writer, events, finish_reason, &usage, &behaviour)
        }
    };
    ctx.stream_reply(steps, guard)
}

/// The SSE events of one stream around its content `events`, with the pauses and interruptions
/// `behaviour` asks for (all but [`Behaviour::Endless`], which the caller handles).
fn stream_steps(
    writer: ChunkWriter,
    events: Vec<Bytes>,
    finish_reason: &'static str,
    usage: &Usage,
    behaviour: &Behaviour,
) -> VecDeque<Step> {
    let mut steps = VecDeque::with_capacity(events.len() + 6);
    steps.push_back(Step::Data(writer.role_chunk(finish_reason == "tool_calls")));
    let cut = stream_cut(behaviour, || {
        let error = ErrorObject { message: SERVER_ERROR_MESSAGE, kind: "server_error", param: None, code: None };
        Bytes::from(sse_event(&ErrorEnvelope { error }))
    });
    let content = events.into_iter().map(|event| (event, true)).collect();
    if push_events(&mut steps, content, cut) {
        steps.push_back(Step::Data(writer.finish_chunk(finish_reason)));
        if writer.include_usage {
            steps.push_back(Step::Data(writer.usage_chunk(usage)));
        }
        steps.push_back(Step::Data(Bytes::from_static(b"data: [DONE]\n\n")));
    }
    steps
}

/// Serialises the `chat.completion.chunk` events of one stream.
struct ChunkWriter {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    include_obfuscation: bool,
}

impl ChunkWriter {
    /// `{"role":"assistant","content":""}`, or `"content":null` before a tool call.
    fn role_chunk(&self, tool_call: bool) -> Bytes {
        let content = if tool_call { Some(None) } else { Some(Some("")) };
        self.choice_chunk(Delta { role: Some("assistant"), content, tool_calls: None }, None)
    }

    fn content_chunk(&self, content: &str) -> Bytes {
        self.choice_chunk(Delta { role: None, content: Some(Some(content)), tool_calls: None }, None)
    }

    /// The first delta of a tool call: index, id, type, name and empty arguments.
    fn tool_call_start(&self, id: &str, name: &str) -> Bytes {
        let call = ToolCallDelta {
            index: 0,
            id: Some(id),
            kind: Some("function"),
            function: FunctionDelta { name: Some(name), arguments: "" },
        };
        self.choice_chunk(Delta { role: None, content: None, tool_calls: Some(&[call]) }, None)
    }

    /// A later delta of a tool call: only the index and an arguments fragment.
    fn tool_call_arguments(&self, arguments: &str) -> Bytes {
        let call = ToolCallDelta { index: 0, id: None, kind: None, function: FunctionDelta { name: None, arguments } };
        self.choice_chunk(Delta { role: None, content: None, tool_calls: Some(&[call]) }, None)
    }

    fn finish_chunk(&self, finish_reason: &str) -> Bytes {
        self.choice_chunk(Delta { role: None, content: None, tool_calls: None }, Some(finish_reason))
    }

    fn usage_chunk(&self, usage: &Usage) -> Bytes {
        self.event(&[], Some(Some(usage)))
    }

    fn choice_chunk(&self, delta: Delta<'_>, finish_reason: Option<&str>) -> Bytes {
        let choices = [ChunkChoice { index: 0, delta, logprobs: (), finish_reason }];
        self.event(&choices, self.include_usage.then_some(None))
    }

    fn event(&self, choices: &[ChunkChoice<'_>], usage: Option<Option<&Usage>>) -> Bytes {
        Bytes::from(sse_event(&Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            service_tier: "default",
            system_fingerprint: SYSTEM_FINGERPRINT,
            choices,
            usage,
            obfuscation: self.include_obfuscation.then(obfuscation),
        }))
    }
}

// === embeddings ===

pub(super) enum EmbeddingInput<'a> {
    Text(&'a str),
    Tokens(Vec<i64>),
}

fn embedding_inputs(input: &Value) -> Option<Vec<EmbeddingInput<'_>>> {
    let tokens = |v: &Value| -> Option<Vec<i64>> {
        let items = v.as_array().filter(|a| !a.is_empty())?;
        items.iter().map(Value::as_i64).collect()
    };
    match input {
        Value::String(text) if !text.is_empty() => Some(vec![EmbeddingInput::Text(text)]),
        Value::Array(items) if !items.is_empty() => {
            if items.iter().all(Value::is_string) {
                items.iter().map(|v| v.as_str().filter(|s| !s.is_empty()).map(EmbeddingInput::Text)).collect()
            } else if items.iter().all(Value::is_number) {
                tokens(input).map(|t| vec![EmbeddingInput::Tokens(t)])
            } else {
                items.iter().map(|item| tokens(item).map(EmbeddingInput::Tokens)).collect()
            }
        }
        _ => None,
    }
}

async fn embeddings(ctx: Ctx<Behaviour>, json: Option<Value>) -> Response<FakeBody> {
    let Some(Value::Object(body)) = json else {
        return ApiError::invalid_json().reply(ctx);
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => {
            return ApiError::invalid_request("you must provide a model parameter".to_owned()).reply(ctx);
        }
    };
    let Some(input) = body.get("input") else {
        return ApiError::invalid_request("Missing required parameter: 'input'.".to_owned())
            .param("input")
            .code("missing_required_parameter")
            .reply(ctx);
    };
    let Some(inputs) = embedding_inputs(input) else {
        return ApiError::invalid_request(
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
                .to_owned(),
        )
        .reply(ctx);
    };
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return ApiError::invalid_request(format!(
                "Invalid value: '{other}'. Supported values are: 'float' and 'base64'."
            ))
            .param("encoding_format")
            .code("invalid_value")
            .reply(ctx);
        }
    };
    let dimensions = match body.get("dimensions").and_then(Value::as_u64) {
        Some(d) => usize::try_from(d.clamp(1, 16_384)).unwrap_or(16_384),
        None if model.contains("3-large") => 3072,
        None => 1536,
    };
    match non_stream_prelude(ctx.shared.next_behaviour(&model)).await {
        Prelude::Answer => {}
        Prelude::Reply(reply) => return ctx.reply(reply),
    }
    let mut prompt_tokens = 0;
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            prompt_tokens += match input {
                EmbeddingInput::Text(text) => words(text),
                EmbeddingInput::Tokens(tokens) => tokens.len() as u64,
            };
            let vector = embedding_vector(&model, input, dimensions);
            EmbeddingItem {
                object: "embedding",
                index,
                embedding: if base64 {
                    EmbeddingData::Base64(base64_f32(&vector))
                } else {
                    EmbeddingData::Float(vector)
                },
            }
        })
        .collect();
    let body = to_json(&EmbeddingList {
        object: "list",
        data,
        model: &model,
        usage: EmbeddingUsage { prompt_tokens, total_tokens: prompt_tokens },
    });
    ctx.json_reply(StatusCode::OK, body)
}

/// A unit-length vector that depends only on `model` and the input.
pub(super) fn embedding_vector(model: &str, input: &EmbeddingInput<'_>, dimensions: usize) -> Vec<f32> {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    let fnv =
        |hash: u64, bytes: &[u8]| bytes.iter().fold(hash, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    let mut seed = fnv(fnv(FNV_OFFSET, model.as_bytes()), &[0]);
    seed = match input {
        EmbeddingInput::Text(text) => fnv(seed, text.as_bytes()),
        EmbeddingInput::Tokens(tokens) => tokens.iter().fold(seed, |h, t| fnv(h, &t.to_le_bytes())),
    };
    // splitmix64
    let mut state = seed;
    let raw: Vec<f64> = (0..dimensions)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1_u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
    raw.iter().map(|v| if norm > 0.0 { (v / norm) as f32 } else { 0.0 }).collect()
}

/// Standard base64 (with padding) of the little-endian `f32`s, as OpenAI's `encoding_format:
/// "base64"` returns them.
pub(super) fn base64_f32(vector: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// === responses ===

/// An OpenAI error envelope with its status.
struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: String, kind: &'static str) -> ApiError {
        ApiError { status, message, kind, param: None, code: None }
    }

    fn invalid_request(message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message, "invalid_request_error")
    }

    fn invalid_json() -> ApiError {
        ApiError::invalid_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)".to_owned(),
        )
    }

    fn param(mut self, param: &'static str) -> ApiError {
        self.param = Some(param);
        self
    }

    fn code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    fn reply(self, ctx: Ctx<Behaviour>) -> Response<FakeBody> {
        let body = error_body(&self.message, self.kind, self.param, self.code);
        ctx.json_reply(self.status, Bytes::from(body))
    }
}

fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> String {
    let json = to_json(&ErrorEnvelope { error: ErrorObject { message, kind, param, code } });
    String::from_utf8_lossy(&json).into_owned()
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn random_alphanumeric(len: usize) -> String {
    rand::rng().sample_iter(Alphanumeric).take(len).map(char::from).collect()
}

/// `chatcmpl-` and 29 random alphanumerics, like OpenAI's ids.
pub(super) fn completion_id() -> String {
    format!("chatcmpl-{}", random_alphanumeric(29))
}

/// `req_` and 32 random hex digits, like OpenAI's `x-request-id`.
fn request_id() -> String {
    format!("req_{:032x}", rand::rng().random::<u128>())
}

/// Random padding like OpenAI's `obfuscation` field.
fn obfuscation() -> String {
    let len = rand::rng().random_range(1..=12);
    random_alphanumeric(len)
}

/// `data: <json>\n\n`.
fn sse_event<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = Vec::with_capacity(320);
    buf.extend_from_slice(b"data: ");
    write_json(&mut buf, value);
    buf.extend_from_slice(b"\n\n");
    buf
}

static MODELS_BODY: LazyLock<Bytes> = LazyLock::new(|| {
    to_json(&ModelList {
        object: "list",
        data: LISTED_MODELS
            .iter()
            .map(|(id, owned_by)| ModelJson { id, object: "model", created: MODELS_CREATED, owned_by })
            .collect(),
    })
});

// === wire types ===

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: (),
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    /// `null` for a tool call.
    content: Option<&'a str>,
    refusal: (),
    annotations: [(); 0],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallJson<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallJson<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionJson<'a>,
}

#[derive(Serialize)]
struct FunctionJson<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: &'static str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent unless `include_usage`; then `null` on every chunk but the usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Usage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    obfuscation: Option<String>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: (),
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    /// Absent, `null` (before a tool call) or text.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a [ToolCallDelta<'a>]>,
}

#[derive(Clone, Copy, Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptTokensDetails,
    completion_tokens_details: CompletionTokensDetails,
}

impl Usage {
    fn new(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens: 0, audio_tokens: 0 },
            completion_tokens_details: CompletionTokensDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

#[derive(Clone, Copy, Serialize)]
struct PromptTokensDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Clone, Copy, Serialize)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelJson<'a>>,
}

#[derive(Serialize)]
struct ModelJson<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: EmbeddingData,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingData {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use http::{Method, StatusCode};
    use serde_json::{Value, json};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    use super::{Behaviour, FakeOpenAi, word_chunks};
    use crate::testing::common::test_support::{self as support, Got, eventually, read_until};

    const FINGERPRINT: &str = "fp_fa4e0a1b2c";

    async fn send(fake: &FakeOpenAi, method: Method, path: &str, headers: &[(&str, &str)], body: String) -> Got {
        support::send(fake.addr(), method, path, headers, body).await
    }

    async fn chat(fake: &FakeOpenAi, body: Value) -> Got {
        send(fake, Method::POST, "/v1/chat/completions", &[], body.to_string()).await
    }

    fn stream_request(model: &str) -> Value {
        json!({
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
            "stream_options": {"include_obfuscation": false},
        })
    }

    /// Writes a raw HTTP/1.1 keep-alive chat request, so only the server can close the connection.
    async fn raw_chat(fake: &FakeOpenAi, body: &Value) -> TcpStream {
        support::raw_post(fake.addr(), "/v1/chat/completions", &[], body).await
    }

    fn events(body: &str) -> Vec<&str> {
        assert!(body.ends_with("\n\n"), "body does not end with a blank line: {body:?}");
        body.trim_end_matches("\n\n").split("\n\n").map(|event| event.strip_prefix("data: ").unwrap()).collect()
    }

    #[tokio::test]
    async fn stream_with_usage_matches_openai_wire_format_byte_for_byte() {
        let fake = FakeOpenAi::start().await;
        let rsp = chat(
            &fake,
            json!({
                "model": "gpt-test",
                "messages": [
                    {"role": "system", "content": "be  brief"},
                    {"role": "user", "content": [{"type": "text", "text": "one two three"}]},
                ],
                "stream": true,
                "stream_options": {"include_usage": true, "include_obfuscation": false},
            }),
        )
        .await;
        assert_eq!(rsp.status, StatusCode::OK);
        assert_eq!(rsp.header("content-type"), "text/event-stream");
        assert_eq!(rsp.header("cache-control"), "no-cache");
        assert!(rsp.error.is_none());
        let text = rsp.text();
        let first: Value = serde_json::from_str(events(&text)[0]).unwrap();
        let id = first["id"].as_str().unwrap();
        let created = first["created"].as_u64().unwrap();
        assert!(id.starts_with("chatcmpl-") && id.len() == 38, "{id}");

        let head = format!(
            r#"data: {{"id":"{id}","object":"chat.completion.chunk","created":{created},"model":"gpt-test","service_tier":"default","system_fingerprint":"{FINGERPRINT}","choices":"#
        );
        let choice = |delta: &str, finish: &str| {
            format!(r#"{head}[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}],"usage":null}}"#)
                + "\n\n"
        };
        let mut expected = choice(r#"{"role":"assistant","content":""}"#, "null");
        for word in ["hello", " from", " gpt-test:", " this", " is", " a", " fake", " completion"] {
            expected += &choice(&format!(r#"{{"content":"{word}"}}"#), "null");
        }
        expected += &choice("{}", r#""stop""#);
        expected += &format!(
            r#"{head}[],"usage":{{"prompt_tokens":5,"completion_tokens":8,"total_tokens":13,"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}}}"#
        );
        expected += "\n\ndata: [DONE]\n\n";
        assert_eq!(text, expected);
    }

    #[tokio::test]
    async fn stream_without_options_has_no_usage_and_obfuscates_every_chunk() {
        let fake = FakeOpenAi::start().await;
        let rsp =
            chat(&fake, json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true})).await;
        let text = rsp.text();
        let events = events(&text);
        assert_eq!(events.len(), 1 + 8 + 1 + 1, "{text}");
        assert_eq!(events.last(), Some(&"[DONE]"));
        for event in &events[..events.len() - 1] {
            let chunk: Value = serde_json::from_str(event).unwrap();
            assert!(chunk.get("usage").is_none(), "{event}");
            assert!(chunk["obfuscation"].as_str().is_some_and(|o| !o.is_empty()), "{event}");
        }
    }

    #[tokio::test]
    async fn non_streaming_answer_matches_openai_shape_byte_for_byte() {
        let fake = FakeOpenAi::start().await;
        let rsp =
            chat(&fake, json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hello there"}]})).await;
        assert_eq!(rsp.status, StatusCode::OK);
        assert_eq!(rsp.header("content-type"), "application/json");
        assert_eq!(rsp.header("content-length"), rsp.body.len().to_string());
        assert!(rsp.header("x-request-id").starts_with("req_"));
        assert_eq!(rsp.header("x-request-id").len(), 36);
        rsp.header("openai-processing-ms").parse::<u64>().unwrap();
        for name in [
            "x-ratelimit-limit-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-requests",
            "x-ratelimit-reset-tokens",
        ] {
            assert!(rsp.headers.contains_key(name), "missing {name}");
        }
        assert!(!rsp.headers.contains_key("x-fake-upstream"));
        let json = rsp.json();
        let id = json["id"].as_str().unwrap();
        let created = json["created"].as_u64().unwrap();
        let expected = format!(
            r#"{{"id":"{id}","object":"chat.completion","created":{created},"model":"gpt-test","choices":[{{"index":0,"message":{{"role":"assistant","content":"hello from gpt-test: this is a fake completion","refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":2,"completion_tokens":8,"total_tokens":10,"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}},"service_tier":"default","system_fingerprint":"{FINGERPRINT}"}}"#
        );
        assert_eq!(rsp.text(), expected);
    }

    fn weather_request(stream: bool, last: Value) -> Value {
        json!({
            "model": "m",
            "stream": stream,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "What is the Weather in Oslo?"}]}, last],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        })
    }

    #[tokio::test]
    async fn a_weather_question_with_tools_gets_a_tool_call_and_its_result_a_text_answer() {
        let fake = FakeOpenAi::start().await;
        let ask = json!({"role": "user", "content": "and tomorrow? the weather, please"});
        let json = chat(&fake, weather_request(false, ask.clone())).await.json();
        let choice = &json["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        let call = &choice["message"]["tool_calls"][0];
        assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"], json!({"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}));
        assert_eq!(json["usage"]["completion_tokens"], 2);

        let result = json!({"role": "tool", "tool_call_id": call["id"], "content": "snow"});
        let json = chat(&fake, weather_request(false, result)).await.json();
        assert_eq!(json["choices"][0]["finish_reason"], "stop");
        assert_eq!(json["choices"][0]["message"]["content"], "hello from m: this is a fake completion");
        assert!(json["choices"][0]["message"].get("tool_calls").is_none());

        let text = chat(&fake, weather_request(true, ask)).await.text();
        let chunks: Vec<Value> =
            events(&text).iter().filter(|e| **e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect();
        let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
        assert_eq!(deltas[0], &json!({"role": "assistant", "content": null}));
        let first = &deltas[1]["tool_calls"][0];
        assert_eq!((first["index"].clone(), first["type"].clone()), (json!(0), json!("function")));
        assert_eq!(first["function"], json!({"name": "get_weather", "arguments": ""}));
        assert!(first["id"].as_str().unwrap().starts_with("call_"));
        let arguments: String =
            deltas[2..4].iter().map(|d| d["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).collect();
        assert_eq!(arguments, "{\"city\":\"Oslo\"}");
        assert_eq!(deltas[2]["tool_calls"][0], json!({"index": 0, "function": {"arguments": "{\"city\":"}}));
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks.len(), 5, "{text}");
    }

    #[tokio::test]
    async fn max_tokens_cuts_the_answer_with_finish_reason_length() {
        let fake = FakeOpenAi::start().await;
        let rsp = chat(
            &fake,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 3}),
        )
        .await;
        let json = rsp.json();
        assert_eq!(json["choices"][0]["message"]["content"], "hello from m:");
        assert_eq!(json["choices"][0]["finish_reason"], "length");
        assert_eq!(json["usage"]["completion_tokens"], 3);
    }

    #[tokio::test]
    async fn named_fake_says_who_answered() {
        let fake = FakeOpenAi::start_named("a").await;
        assert_eq!(fake.name(), Some("a"));
        let rsp = chat(&fake, json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})).await;
        assert_eq!(rsp.header("x-fake-upstream"), "a");
        assert_eq!(rsp.json()["choices"][0]["message"]["content"], "hello from m via a: this is a fake completion");
    }

    #[tokio::test]
    async fn wrong_or_missing_api_key_gets_openai_401_without_consuming_the_script() {
        let fake = FakeOpenAi::start().await;
        fake.require_api_key("sk-right-key-1234");
        fake.push(Behaviour::Text("scripted".to_owned()));
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}).to_string();
        let path = "/v1/chat/completions";

        let missing = send(&fake, Method::POST, path, &[], body.clone()).await;
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        assert_eq!(missing.json()["error"]["code"], "invalid_api_key");
        assert!(missing.json()["error"]["message"].as_str().unwrap().starts_with("You didn't provide an API key."));

        let wrong_header = [("authorization", "Bearer sk-wrong-key-9876")];
        let wrong = send(&fake, Method::POST, path, &wrong_header, body.clone()).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert!(wrong.headers.contains_key("x-request-id"));
        let error = &wrong.json()["error"];
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["code"], "invalid_api_key");
        assert_eq!(error["param"], Value::Null);
        assert_eq!(
            error["message"],
            "Incorrect API key provided: sk-**********9876. You can find your API key at https://platform.openai.com/account/api-keys."
        );

        let models = send(&fake, Method::GET, "/v1/models", &wrong_header, String::new()).await;
        assert_eq!(models.status, StatusCode::UNAUTHORIZED);

        let right_header = [("authorization", "Bearer sk-right-key-1234")];
        let right = send(&fake, Method::POST, path, &right_header, body).await;
        assert_eq!(right.status, StatusCode::OK);
        assert_eq!(right.json()["choices"][0]["message"]["content"], "scripted");
        assert_eq!(fake.hits(), 3);
    }

    #[tokio::test]
    async fn scripted_429_carries_retry_after_then_default_behaviour_resumes() {
        let fake = FakeOpenAi::start().await;
        fake.push(Behaviour::status(429));
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});

        let limited = chat(&fake, body.clone()).await;
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.header("retry-after"), "1");
        assert_eq!(limited.header("x-ratelimit-remaining-requests"), "0");
        assert_eq!(limited.header("content-type"), "application/json");
        assert_eq!(
            limited.json(),
            json!({"error": {
                "message": "Rate limit reached for requests. Please try again in 1s. Visit https://platform.openai.com/account/rate-limits to learn more.",
                "type": "requests",
                "param": null,
                "code": "rate_limit_exceeded",
            }})
        );

        let next = chat(&fake, body).await;
        assert_eq!(next.status, StatusCode::OK);
        assert_eq!(fake.hits(), 2);
    }

    #[tokio::test]
    async fn custom_status_sends_body_and_headers_verbatim() {
        let fake = FakeOpenAi::start().await;
        fake.push(Behaviour::Status {
            status: 503,
            body: "{\"error\":\"overloaded\"}".to_owned(),
            headers: vec![
                ("retry-after-ms".to_owned(), "250".to_owned()),
                ("x-should-retry".to_owned(), "true".to_owned()),
            ],
        });
        let rsp = chat(&fake, stream_request("m")).await;
        assert_eq!(rsp.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rsp.text(), "{\"error\":\"overloaded\"}");
        assert_eq!(rsp.header("retry-after-ms"), "250");
        assert_eq!(rsp.header("x-should-retry"), "true");
        assert_eq!(fake.cancelled(), 0);
    }

    #[tokio::test]
    async fn model_names_pick_failure_modes() {
        let fake = FakeOpenAi::start().await;
        let cases = [
            ("fail-500", 500, "server_error"),
            ("fail-503", 503, "server_error"),
            ("fail-400", 400, "invalid_request_error"),
            ("rate-limited", 429, "requests"),
            ("insufficient-quota", 429, "insufficient_quota"),
        ];
        for (model, status, kind) in cases {
            for stream in [false, true] {
                let body = json!({"model": model, "messages": [{"role": "user", "content": "x"}], "stream": stream});
                let rsp = chat(&fake, body).await;
                assert_eq!(rsp.status.as_u16(), status, "{model}");
                assert_eq!(rsp.json()["error"]["type"], kind, "{model}");
            }
        }
        let limited =
            chat(&fake, json!({"model": "rate-limited", "messages": [{"role": "user", "content": "x"}]})).await;
        assert_eq!(limited.header("retry-after"), "1");
        assert_eq!(Behaviour::for_model("slow-ttft"), Behaviour::SlowFirstChunk(Duration::from_secs(5)));
        assert_eq!(Behaviour::for_model("break-after-3"), Behaviour::BreakAfter { chunks: 3 });
        assert_eq!(Behaviour::for_model("error-after-3"), Behaviour::ErrorEventAfter { chunks: 3 });
        assert_eq!(Behaviour::for_model("endless"), Behaviour::Endless);
        assert_eq!(Behaviour::for_model("gpt-4o"), Behaviour::Ok);
        assert_eq!(Behaviour::for_model("fail-200"), Behaviour::Ok);
    }

    #[tokio::test]
    async fn invalid_requests_get_openai_400s() {
        let fake = FakeOpenAi::start().await;
        let path = "/v1/chat/completions";
        let not_json = send(&fake, Method::POST, path, &[], "{nope".to_owned()).await;
        assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
        assert!(not_json.json()["error"]["message"].as_str().unwrap().starts_with("We could not parse the JSON body"));

        let no_messages = chat(&fake, json!({"model": "m"})).await;
        assert_eq!(no_messages.status, StatusCode::BAD_REQUEST);
        assert_eq!(no_messages.json()["error"]["param"], "messages");

        let options_without_stream = chat(
            &fake,
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}),
        )
        .await;
        assert_eq!(options_without_stream.status, StatusCode::BAD_REQUEST);
        assert_eq!(options_without_stream.json()["error"]["param"], "stream_options");

        let unknown = send(&fake, Method::GET, "/v1/nope", &[], String::new()).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert_eq!(unknown.json()["error"]["message"], "Invalid URL (GET /v1/nope)");
        assert_eq!(fake.hits(), 3);
    }

    #[tokio::test]
    async fn break_after_closes_the_connection_without_done() {
        let fake = FakeOpenAi::start().await;
        fake.push(Behaviour::BreakAfter { chunks: 2 });
        let rsp = chat(&fake, stream_request("m")).await;
        assert_eq!(rsp.status, StatusCode::OK);
        assert!(rsp.error.is_some(), "the client should see a broken body");
        let text = rsp.text();
        assert!(!text.contains("[DONE]"), "{text}");
        let events = events(&text);
        assert_eq!(events.len(), 3, "role chunk and two content chunks: {text}");
        assert!(events[2].contains(r#""delta":{"content":" from"}"#), "{text}");

        // On the wire: a keep-alive connection that the server closes mid-body, without the
        // terminating zero-length chunk.
        fake.push(Behaviour::BreakAfter { chunks: 2 });
        let mut stream = raw_chat(&fake, &stream_request("m")).await;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw)).await.unwrap().unwrap();
        let raw = String::from_utf8(raw).unwrap();
        assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
        assert!(raw.contains("transfer-encoding: chunked\r\n"), "{raw}");
        assert_eq!(raw.matches("data: ").count(), 3, "{raw}");
        assert!(!raw.contains("[DONE]") && !raw.ends_with("0\r\n\r\n"), "{raw}");
        assert_eq!(fake.cancelled(), 0, "a break by the fake is not a client cancellation");
    }

    #[tokio::test]
    async fn error_event_after_ends_the_stream_without_done() {
        let fake = FakeOpenAi::start().await;
        fake.push(Behaviour::ErrorEventAfter { chunks: 1 });
        let rsp = chat(&fake, stream_request("m")).await;
        assert_eq!(rsp.status, StatusCode::OK);
        assert!(rsp.error.is_none(), "the body ends cleanly");
        let text = rsp.text();
        let events = events(&text);
        assert_eq!(events.len(), 3, "{text}");
        assert_eq!(
            events[2],
            r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#
        );
    }

    #[tokio::test]
    async fn stall_after_pauses_between_chunks_then_completes() {
        let fake = FakeOpenAi::start().await;
        fake.push(Behaviour::StallAfter { chunks: 2, stall: Duration::from_millis(300) });
        let started = Instant::now();
        let rsp = chat(&fake, stream_request("m")).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(rsp.text().ends_with("data: [DONE]\n\n"));
        assert_eq!(events(&rsp.text()).len(), 1 + 8 + 1 + 1);
    }

    #[tokio::test]
    async fn slow_first_chunk_sends_headers_and_role_chunk_at_once() {
        let fake = FakeOpenAi::start().await;
        let delay = Duration::from_millis(1500);
        fake.push(Behaviour::SlowFirstChunk(delay));
        let mut stream = raw_chat(&fake, &stream_request("m")).await;
        let started = Instant::now();
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, |s| s.contains(r#""role":"assistant""#)).await;
        assert!(started.elapsed() < delay, "role chunk took {:?}", started.elapsed());
        assert!(!String::from_utf8_lossy(&buf).contains(r#""content":"hello""#));
        read_until(&mut stream, &mut buf, |s| s.contains("[DONE]")).await;
        assert!(started.elapsed() >= delay);
    }

    #[tokio::test]
    async fn slow_headers_hold_the_response_head_back() {
        let fake = FakeOpenAi::start().await;
        fake.push(Behaviour::SlowHeaders(Duration::from_millis(300)));
        let rsp = chat(&fake, json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})).await;
        assert!(rsp.head_after >= Duration::from_millis(300));
        assert_eq!(rsp.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn client_disconnecting_mid_stream_is_counted_as_cancelled() {
        let fake = FakeOpenAi::start().await;
        let complete = chat(&fake, stream_request("m")).await;
        assert!(complete.text().ends_with("data: [DONE]\n\n"));
        eventually("the complete stream to leave in_flight", || fake.in_flight() == 0).await;
        assert_eq!(fake.cancelled(), 0, "a finished stream is not cancelled");

        let mut stream = raw_chat(&fake, &stream_request("endless")).await;
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, |s| s.matches("data: ").count() >= 4).await;
        assert_eq!(fake.in_flight(), 1);
        assert_eq!(fake.cancelled(), 0);
        drop(stream);
        eventually("the endless stream to be cancelled", || fake.cancelled() == 1).await;
        eventually("in_flight to drop", || fake.in_flight() == 0).await;
    }

    #[tokio::test]
    async fn client_disconnecting_while_the_stream_is_idle_is_counted_as_cancelled() {
        let fake = FakeOpenAi::start().await;
        fake.push(Behaviour::SlowFirstChunk(Duration::from_secs(30)));
        let mut stream = raw_chat(&fake, &stream_request("m")).await;
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, |s| s.contains(r#""role":"assistant""#)).await;
        drop(stream);
        eventually("the idle stream to be cancelled", || fake.cancelled() == 1).await;
        assert_eq!(fake.in_flight(), 0);
    }

    #[tokio::test]
    async fn client_giving_up_before_the_stream_headers_is_counted_as_cancelled() {
        let fake = FakeOpenAi::start().await;
        fake.push(Behaviour::SlowHeaders(Duration::from_secs(30)));
        let stream = raw_chat(&fake, &stream_request("m")).await;
        eventually("the request to arrive", || fake.in_flight() == 1).await;
        drop(stream);
        eventually("the waiting stream to be cancelled", || fake.cancelled() == 1).await;
        assert_eq!(fake.in_flight(), 0);
    }

    #[tokio::test]
    async fn dropping_the_fake_closes_open_streams_and_the_port() {
        let fake = FakeOpenAi::start().await;
        let addr = fake.addr();
        let mut stream = raw_chat(&fake, &stream_request("endless")).await;
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, |s| s.contains(r#""content":"hello""#)).await;
        drop(fake);
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "still accepting after drop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn requests_are_recorded_with_lowercase_headers_and_json_bodies() {
        let fake = FakeOpenAi::start().await;
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        send(&fake, Method::POST, "/v1/chat/completions", &[("X-Custom", "Yes")], body.to_string()).await;
        send(&fake, Method::GET, "/v1/models?limit=2", &[], String::new()).await;
        let recorded = fake.requests();
        assert_eq!(recorded.len(), 2);
        assert_eq!(recorded[0].method, "POST");
        assert_eq!(recorded[0].path, "/v1/chat/completions");
        assert_eq!(recorded[0].header("x-custom"), Some("Yes"));
        assert!(recorded[0].headers.iter().any(|(n, v)| n == "x-custom" && v == "Yes"));
        assert_eq!(recorded[0].body, body);
        assert_eq!(recorded[0].model(), Some("m"));
        assert_eq!(recorded[1].query.as_deref(), Some("limit=2"));
        assert_eq!(recorded[1].body, Value::Null);
        assert!(recorded[0].at <= recorded[1].at);
        assert_eq!(fake.hits(), 1, "only chat requests are hits");

        fake.record_requests(false);
        send(&fake, Method::GET, "/v1/models", &[], String::new()).await;
        assert_eq!(fake.requests().len(), 2);
    }

    #[tokio::test]
    async fn models_are_listed_in_openai_shape() {
        let fake = FakeOpenAi::start().await;
        let list = send(&fake, Method::GET, "/v1/models", &[], String::new()).await.json();
        assert_eq!(list["object"], "list");
        let data = list["data"].as_array().unwrap();
        assert!(data.iter().any(|m| m["id"] == "fail-500"));
        assert_eq!(
            data[0],
            json!({"id": "gpt-4o-mini", "object": "model", "created": 1_700_000_000, "owned_by": "system"})
        );
        let one = send(&fake, Method::GET, "/v1/models/anything", &[], String::new()).await.json();
        assert_eq!(one["id"], "anything");
        assert_eq!(one["object"], "model");
    }

    #[tokio::test]
    async fn embeddings_are_deterministic_unit_vectors() {
        let fake = FakeOpenAi::start().await;
        let embed = |input: Value, extra: Value| {
            let mut body = json!({"model": "text-embedding-3-small", "input": input});
            if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
                body.extend(extra.clone());
            }
            send(&fake, Method::POST, "/v1/embeddings", &[], body.to_string())
        };
        let first = embed(json!(["one two", "three"]), json!({"dimensions": 8})).await.json();
        let again = embed(json!(["one two", "three"]), json!({"dimensions": 8})).await.json();
        assert_eq!(first, again);
        assert_eq!(first["object"], "list");
        assert_eq!(first["model"], "text-embedding-3-small");
        assert_eq!(first["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
        let data = first["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data[1]["object"], "embedding");
        assert_eq!(data[1]["index"], 1);
        let vector: Vec<f64> = data[0]["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(vector.len(), 8);
        let norm = vector.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_ne!(data[0]["embedding"], data[1]["embedding"]);

        let default = embed(json!("x"), json!({})).await.json();
        assert_eq!(default["data"][0]["embedding"].as_array().unwrap().len(), 1536);
        let base64 = embed(json!([1, 2, 3]), json!({"dimensions": 4, "encoding_format": "base64"})).await.json();
        assert_eq!(base64["data"][0]["embedding"].as_str().unwrap().len(), 24);
        assert_eq!(base64["usage"]["prompt_tokens"], 3);

        let bad = embed(json!({"not": "input"}), json!({})).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        fake.push(Behaviour::status(500));
        assert_eq!(embed(json!("x"), json!({})).await.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(fake.hits(), 0);
    }

    #[test]
    fn word_chunks_concatenate_back_to_the_text() {
        for text in ["hello from m: ok", "  lead", "trail ", "", "a\n\nb"] {
            assert_eq!(word_chunks(text).concat(), text);
        }
        assert_eq!(word_chunks("hello from m"), ["hello", " from", " m"]);
    }
}
