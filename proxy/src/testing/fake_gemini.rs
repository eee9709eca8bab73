//! A fake Google Gemini (AI Studio) upstream that speaks `generateContent`'s wire format.
//!
//! [`FakeGemini`] serves, on a loopback port chosen by the OS:
//!
//! - `POST /v1beta/models/{model}:generateContent` (also under `/v1/`): one
//!   `GenerateContentResponse` JSON body.
//! - `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`: a data-only SSE stream, one
//!   full `GenerateContentResponse` per event (`data: <json>\r\n\r\n`, no `event:` lines), that
//!   ends at EOF with no `[DONE]`. Without `alt=sse` the same method answers one JSON array of
//!   those responses (`application/json`). See `docs/provider-protocols.md` §4, §8 and §11.
//! - `POST /v1beta/models/{model}:embedContent` and `:batchEmbedContents`: deterministic
//!   embeddings (see `embed`).
//! - anything else: a Gemini-shaped 404 `NOT_FOUND`.
//!
//! The model comes from the path, not the body ([`model_of`] reads it back from a recorded
//! request, since [`Recorded::model`] looks at the body).
//!
//! # What a request gets
//!
//! 1. Every `POST` to a generate method counts as a hit ([`FakeGemini::hits`]) and every request
//!    is recorded ([`FakeGemini::requests`]), even when it is then rejected.
//! 2. With [`FakeGemini::require_api_key`], the key must come in `x-goog-api-key` or the `key`
//!    query parameter. A wrong key gets Gemini's 400 `INVALID_ARGUMENT` "API key not valid" with
//!    an `ErrorInfo` detail of reason `API_KEY_INVALID`; no key at all gets the 403
//!    `PERMISSION_DENIED` "unregistered callers" error. A rejected request does not consume a
//!    scripted behaviour.
//! 3. Invalid JSON, a body that is not an object, or missing or empty `contents` get a 400
//!    `INVALID_ARGUMENT`.
//! 4. The behaviour is the oldest one queued with [`FakeGemini::push`], otherwise
//!    [`GeminiBehaviour::for_model`] of the model in the path.
//!
//! Error bodies are `google.rpc.Status` envelopes:
//! `{"error":{"code":429,"message":"…","status":"RESOURCE_EXHAUSTED","details":[…]}}` (no
//! `details` when there are none).
//!
//! # Content and token counting
//!
//! The normal answer is one text part `hello from <model>: this is a fake gemini reply` (or
//! `hello from <model> via <name>: …` for a named fake) with `finishReason: "STOP"`.
//!
//! When the request declares a function (`tools[].functionDeclarations[]`) and the last `user`
//! content's text parts contain `weather` (any case), the answer is a single part
//! `{"functionCall":{"name":<first declared function>,"args":{"city":"Oslo"}},"thoughtSignature":"…"}`
//! (no `id`, as on AI Studio) with `finishReason: "STOP"` (Gemini has no tool-call finish
//! reason) and `finishMessage: "Model generated function call(s)."`. A follow-up whose last
//! user content holds only a `functionResponse` gets the normal text answer. The signature is
//! always [`THOUGHT_SIGNATURE`].
//!
//! Usage (`usageMetadata`) is counted without a tokenizer:
//!
//! - `promptTokenCount`: whitespace-separated words of the `systemInstruction` and of all
//!   `contents` text parts (also in `promptTokensDetails` as one `TEXT` entry);
//! - `candidatesTokenCount`: one per word of the answer, or 3 for a function call;
//! - `totalTokenCount`: their sum.
//!
//! `generationConfig.maxOutputTokens` cuts the answer to that many words (dropping a function
//! call that does not fit) with `finishReason: "MAX_TOKENS"`.
//!
//! Every response carries `modelVersion` (the model from the path) and `responseId`, which
//! equals the `x-fake-response-id` response header (Gemini itself sends no request id header).
//!
//! # Streams
//!
//! One event per word (each word after the first keeps its leading space), each a full
//! `GenerateContentResponse` with one text part; `finishReason` and `usageMetadata` are only on
//! the last event. A function call arrives whole in one event. An answer cut to nothing sends
//! one event without parts.
//!
//! # Response headers
//!
//! Every response carries `vary`, `server: scaffolding on HTTPServer2`, `x-xss-protection`,
//! `x-frame-options`, `x-content-type-options`, `server-timing`, `x-fake-response-id` and, for
//! a named fake, `x-fake-upstream: <name>`. JSON bodies are `application/json; charset=UTF-8`;
//! streams are `text/event-stream` with `cache-control: no-cache`.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde_json::{Value, json};

use super::common::{
    Ctx, Cut, FakeBody, Prelude, Provider, Recorded, Reply, Server, Step, loopback, push_events, to_json, word_chunks,
    words, write_json,
};

/// The `thoughtSignature` on every `functionCall` part the fake sends (base64 of
/// `fake-gemini-thought-signature`).
pub const THOUGHT_SIGNATURE: &str = "ZmFrZS1nZW1pbmktdGhvdWdodC1zaWduYXR1cmU=";
/// The city in the function call's `args`.
const CALL_CITY: &str = "Oslo";
/// `candidatesTokenCount` of a function call.
const CALL_TOKENS: u64 = 3;
/// `finishMessage` of a function-call candidate.
const CALL_FINISH_MESSAGE: &str = "Model generated function call(s).";
/// Message of the 503 `UNAVAILABLE` (also used for the in-stream error event).
const OVERLOADED_MESSAGE: &str = "The model is overloaded. Please try again later.";
/// Message of the bad-key 400.
const BAD_KEY_MESSAGE: &str = "API key not valid. Please pass a valid API key.";
/// Message of the missing-key 403.
const NO_KEY_MESSAGE: &str = "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.";
/// Message of the 400 for missing `contents`.
const NO_CONTENTS_MESSAGE: &str = "* GenerateContentRequest.contents: contents is not specified\n";

// === GeminiBehaviour ===

/// What the fake does with one generate request.
///
/// Stream-only behaviours have a documented meaning for non-streaming requests too, so a
/// manifest can point both kinds of traffic at the same model name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GeminiBehaviour {
    /// A normal answer (text, or a function call for a weather question with tools).
    Ok,
    /// A normal text answer with this text (streamed one word per event), never a function call.
    Text(String),
    /// This status, body (sent verbatim as `application/json; charset=UTF-8`) and headers. The
    /// headers replace the fake's default headers of the same name. See
    /// [`GeminiBehaviour::status`].
    Status {
        /// HTTP status code; an invalid code is sent as 500.
        status: u16,
        /// Response body, sent as is.
        body: String,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// Waits this long before sending the response headers, then answers normally.
    SlowHeaders(Duration),
    /// Stream: sends the headers at once, then waits this long before the first event.
    /// Non-streaming: waits this long, then answers normally.
    SlowFirstChunk(Duration),
    /// Stream: pauses for `stall` after `chunks` events (an idle gap), then continues normally.
    /// Non-streaming: waits `stall`, then answers normally.
    StallAfter {
        /// Events sent before the pause.
        chunks: usize,
        /// Length of the pause.
        stall: Duration,
    },
    /// Stream: after `chunks` events (at most all of them) closes the connection abruptly (for
    /// HTTP/1.1 without the terminating zero-length chunk). Non-streaming: sends a 200 head and
    /// breaks the body.
    BreakAfter {
        /// Events sent before the break.
        chunks: usize,
    },
    /// Stream: after `chunks` events (at most all of them) sends
    /// `data: {"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}`
    /// and ends the body cleanly. Non-streaming: a 503 `UNAVAILABLE`.
    ErrorEventAfter {
        /// Events sent before the error event.
        chunks: usize,
    },
    /// Stream: one text event every 20 ms until the client goes away (for cancellation tests).
    /// Non-streaming: never answers.
    Endless,
}

impl GeminiBehaviour {
    /// A [`GeminiBehaviour::Status`] with the `google.rpc.Status` body Gemini sends for `code`.
    ///
    /// 400 `INVALID_ARGUMENT`; 401 `UNAUTHENTICATED`; 403 `PERMISSION_DENIED`; 404 `NOT_FOUND`;
    /// 409 `ABORTED`; 429 `RESOURCE_EXHAUSTED` with a `QuotaFailure` and a `RetryInfo` detail
    /// (`retryDelay: "1s"`, no headers: Gemini documents no rate-limit headers); 500 `INTERNAL`;
    /// 501 `UNIMPLEMENTED`; 503 `UNAVAILABLE`; 504 `DEADLINE_EXCEEDED`; any other 4xx
    /// `INVALID_ARGUMENT` and 5xx `INTERNAL`.
    pub fn status(code: u16) -> Self {
        GeminiBehaviour::Status { status: code, body: status_body(code), headers: Vec::new() }
    }

    /// The behaviour a request gets when nothing is scripted, chosen by the model in its path.
    ///
    /// | model | behaviour |
    /// |---|---|
    /// | `fail-<code>` (400..=599, e.g. `fail-500`, `fail-503`, `fail-400`) | [`GeminiBehaviour::status`]`(code)` |
    /// | `rate-limited` | 429 `RESOURCE_EXHAUSTED` with `retryDelay: "1s"` |
    /// | `overloaded` | 503 `UNAVAILABLE` |
    /// | `slow-ttft` | [`GeminiBehaviour::SlowFirstChunk`] of 5 s |
    /// | `break-after-<n>` (e.g. `break-after-3`) | [`GeminiBehaviour::BreakAfter`] `n` events |
    /// | `error-after-<n>` (e.g. `error-after-3`) | [`GeminiBehaviour::ErrorEventAfter`] `n` events |
    /// | `endless` | [`GeminiBehaviour::Endless`] |
    /// | anything else | [`GeminiBehaviour::Ok`] |
    pub fn for_model(model: &str) -> Self {
        let number = |prefix: &str| model.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok());
        match model {
            "rate-limited" => GeminiBehaviour::status(429),
            "overloaded" => GeminiBehaviour::status(503),
            "slow-ttft" => GeminiBehaviour::SlowFirstChunk(Duration::from_secs(5)),
            "endless" => GeminiBehaviour::Endless,
            _ => {
                if let Some(code) =
                    model.strip_prefix("fail-").and_then(|c| c.parse::<u16>().ok()).filter(|c| (400..600).contains(c))
                {
                    GeminiBehaviour::status(code)
                } else if let Some(chunks) = number("break-after-") {
                    GeminiBehaviour::BreakAfter { chunks }
                } else if let Some(chunks) = number("error-after-") {
                    GeminiBehaviour::ErrorEventAfter { chunks }
                } else {
                    GeminiBehaviour::Ok
                }
            }
        }
    }
}

/// The body of [`GeminiBehaviour::status`]`(code)`.
fn status_body(code: u16) -> String {
    let (status, message): (&str, String) = match code {
        400 => ("INVALID_ARGUMENT", "Request contains an invalid argument.".to_owned()),
        401 => (
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.".to_owned(),
        ),
        403 => ("PERMISSION_DENIED", "The caller does not have permission".to_owned()),
        404 => ("NOT_FOUND", "Requested entity was not found.".to_owned()),
        409 => ("ABORTED", "The operation was aborted.".to_owned()),
        429 => (
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.".to_owned(),
        ),
        500 => (
            "INTERNAL",
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting".to_owned(),
        ),
        501 => ("UNIMPLEMENTED", "Operation is not implemented, or supported, or enabled.".to_owned()),
        503 => ("UNAVAILABLE", OVERLOADED_MESSAGE.to_owned()),
        504 => ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete.".to_owned()),
        c => {
            let reason = StatusCode::from_u16(c).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
            let status = if c >= 500 { "INTERNAL" } else { "INVALID_ARGUMENT" };
            (status, format!("{reason}."))
        }
    };
    let details = if code == 429 {
        vec![
            json!({
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
                    "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-PaidTier",
                }],
            }),
            json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}),
        ]
    } else {
        Vec::new()
    };
    error_body(code, &message, status, details)
}

/// `{"error":{"code","message","status"[,"details"]}}`.
fn error_body(code: u16, message: &str, status: &str, details: Vec<Value>) -> String {
    let json = to_json(&ErrorEnvelope { error: ErrorJson { code, message, status, details } });
    String::from_utf8_lossy(&json).into_owned()
}

/// The model named in a generate path (`/v1beta/models/{model}:generateContent`), e.g. of a
/// [`Recorded::path`].
pub fn model_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1beta/models/").or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, _) = rest.rsplit_once(':')?;
    (!model.is_empty() && !model.contains('/')).then_some(model)
}

// === FakeGemini ===

/// A running fake Gemini server. Dropping it stops accepting and closes every open connection
/// (including endless streams).
pub struct FakeGemini {
    server: Server<GeminiBehaviour>,
}

impl std::fmt::Debug for FakeGemini {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.server.debug(f, "FakeGemini")
    }
}

impl FakeGemini {
    /// Starts an unnamed fake on `127.0.0.1:0` (an OS-chosen port).
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    #[expect(clippy::expect_used, reason = "a test double without a loopback port cannot do anything useful")]
    pub async fn start() -> FakeGemini {
        Self::spawn(loopback(), None).await.expect("bind a loopback port for the fake gemini upstream")
    }

    /// Starts a fake on `127.0.0.1:0` whose responses carry `x-fake-upstream: <name>` and whose
    /// text answers say `via <name>`, so split and fallback tests can tell fakes apart.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound or `name` is not a valid header value.
    #[expect(clippy::expect_used, reason = "a test double without a loopback port cannot do anything useful")]
    pub async fn start_named(name: &str) -> FakeGemini {
        Self::spawn(loopback(), Some(name)).await.expect("bind a loopback port for the fake gemini upstream")
    }

    /// Starts an unnamed fake on `addr`.
    pub async fn start_on(addr: SocketAddr) -> io::Result<FakeGemini> {
        Self::spawn(addr, None).await
    }

    /// Starts a named fake (see [`FakeGemini::start_named`]) on `addr`.
    pub async fn start_on_named(addr: SocketAddr, name: &str) -> io::Result<FakeGemini> {
        Self::spawn(addr, Some(name)).await
    }

    async fn spawn(addr: SocketAddr, name: Option<&str>) -> io::Result<FakeGemini> {
        Ok(FakeGemini { server: Server::start(&GEMINI, addr, name).await? })
    }

    /// The address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://ADDR`, the value for a Gemini client's base URL: like
    /// `https://generativelanguage.googleapis.com`, the bare origin, to which clients append
    /// `/v1beta/models/{model}:generateContent`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The name given at start, if any.
    pub fn name(&self) -> Option<&str> {
        self.server.name()
    }

    /// From now on, generate requests must send `key` as `x-goog-api-key` or `?key=`; a wrong
    /// key gets Gemini's 400 `INVALID_ARGUMENT` with reason `API_KEY_INVALID`, a missing one the
    /// 403 `PERMISSION_DENIED`.
    pub fn require_api_key(&self, key: &str) {
        self.server.require_api_key(key);
    }

    /// Queues `behaviour` for the next accepted generate request (FIFO). Once the queue is
    /// empty, requests get [`GeminiBehaviour::for_model`] of their model again.
    pub fn push(&self, behaviour: GeminiBehaviour) {
        self.server.push(behaviour);
    }

    /// `POST` generate requests (both methods) received so far, including rejected ones.
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

    /// Streams the client abandoned before the fake sent their last byte (see
    /// [`super::FakeOpenAi::cancelled`]). Streams the fake breaks on purpose
    /// ([`GeminiBehaviour::BreakAfter`]) do not count.
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

/// Gemini's side of the server: headers, ids, routes.
static GEMINI: Provider<GeminiBehaviour> = Provider {
    label: "gemini",
    base_headers: &[
        ("vary", "Origin, X-Origin, Referer"),
        ("server", "scaffolding on HTTPServer2"),
        ("x-xss-protection", "0"),
        ("x-frame-options", "SAMEORIGIN"),
        ("x-content-type-options", "nosniff"),
    ],
    request_id_header: "x-fake-response-id",
    request_id: response_id,
    per_response_headers: |headers, started| {
        if headers.get(CONTENT_TYPE).is_some_and(|v| v == "application/json") {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
        }
        let elapsed_ms = started.elapsed().as_millis();
        if let Ok(timing) = HeaderValue::from_str(&format!("gfet4t7; dur={elapsed_ms}")) {
            headers.insert(HeaderName::from_static("server-timing"), timing);
        }
    },
    is_hit: |method, path| route(method, path).is_some(),
    for_model: GeminiBehaviour::for_model,
    handle: |ctx, parts, json| Box::pin(handle(ctx, parts, json)),
};

/// The generate methods.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum GenerateMethod {
    /// `:generateContent`
    Json,
    /// `:streamGenerateContent`
    Stream,
    /// `:embedContent`
    Embed,
    /// `:batchEmbedContents`
    BatchEmbed,
}

/// The model and method of a generate request.
fn route<'a>(method: &Method, path: &'a str) -> Option<(&'a str, GenerateMethod)> {
    if *method != Method::POST {
        return None;
    }
    let model = model_of(path)?;
    match path.rsplit_once(':').map(|(_, method)| method) {
        Some("generateContent") => Some((model, GenerateMethod::Json)),
        Some("streamGenerateContent") => Some((model, GenerateMethod::Stream)),
        Some("embedContent") => Some((model, GenerateMethod::Embed)),
        Some("batchEmbedContents") => Some((model, GenerateMethod::BatchEmbed)),
        _ => None,
    }
}

/// The value of query parameter `name`, if present.
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| pair.split_once('=').filter(|(n, _)| *n == name).map(|(_, v)| v))
}

async fn handle(ctx: Ctx<GeminiBehaviour>, parts: Parts, json: Result<Value, serde_json::Error>) -> Response<FakeBody> {
    let Some((model, method)) = route(&parts.method, parts.uri.path()) else {
        return ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "Method not found.".to_owned()).reply(ctx);
    };
    let model = model.to_owned();
    if let Err(err) = check_key(ctx.shared.api_key(), &parts) {
        return err.reply(ctx);
    }
    // `Some(sse)` for the streaming method.
    let stream = match method {
        GenerateMethod::Embed | GenerateMethod::BatchEmbed => {
            return embed(ctx, &model, method == GenerateMethod::BatchEmbed, json.ok()).await;
        }
        GenerateMethod::Json => None,
        GenerateMethod::Stream => Some(query_param(parts.uri.query(), "alt") == Some("sse")),
    };
    let request = match GenerateRequest::parse(model, json) {
        Ok(request) => request,
        Err(err) => return err.reply(ctx),
    };
    let behaviour = ctx.shared.next_behaviour(&request.model);
    match stream {
        None => generate_json(ctx, request, behaviour).await,
        Some(true) => generate_stream(ctx, request, behaviour).await,
        Some(false) => generate_array(ctx, request, behaviour).await,
    }
}

/// `embedContent` (`{"content":{"parts":[{"text"}]}}` → `{"embedding":{"values"}}`) and
/// `batchEmbedContents` (`{"requests":[{"model":"models/{model}","content":…}]}` →
/// `{"embeddings":[{"values"}]}`): deterministic unit vectors of `outputDimensionality`
/// (default 3072) values. A batch request naming another model gets a 400.
async fn embed(ctx: Ctx<GeminiBehaviour>, model: &str, batch: bool, json: Option<Value>) -> Response<FakeBody> {
    let text_of = |item: &Value| -> Option<String> {
        let parts = item.pointer("/content/parts")?.as_array()?;
        Some(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect())
    };
    let items: Vec<Value> = match (&json, batch) {
        (Some(body), false) => vec![body.clone()],
        (Some(body), true) => body.get("requests").and_then(Value::as_array).cloned().unwrap_or_default(),
        (None, _) => Vec::new(),
    };
    let wanted = format!("models/{model}");
    if items.is_empty() || (batch && items.iter().any(|i| i.get("model").and_then(Value::as_str) != Some(&wanted))) {
        return ApiError::invalid_argument("* BatchEmbedContentsRequest.requests: invalid model or content").reply(ctx);
    }
    let mut vectors = Vec::new();
    for item in &items {
        let Some(text) = text_of(item).filter(|t| !t.is_empty()) else {
            return ApiError::invalid_argument("* EmbedContentRequest.content: contains an empty Part.").reply(ctx);
        };
        let dimensions =
            item.get("outputDimensionality").and_then(Value::as_u64).map_or(3072, |d| d.clamp(1, 3072) as usize);
        let input = super::fake_openai::EmbeddingInput::Text(&text);
        vectors.push(json!({"values": super::fake_openai::embedding_vector(model, &input, dimensions)}));
    }
    let body = if batch { json!({"embeddings": vectors}) } else { json!({"embedding": vectors[0]}) };
    ctx.json_reply(StatusCode::OK, Bytes::from(body.to_string()))
}

/// Checks the key in `x-goog-api-key` (or else `?key=`) against `expected`, if one is required.
fn check_key(expected: Option<String>, parts: &Parts) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let header = parts.headers.get("x-goog-api-key").and_then(|v| v.to_str().ok());
    match header.or_else(|| query_param(parts.uri.query(), "key")) {
        Some(key) if key == expected => Ok(()),
        Some(_) => Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "INVALID_ARGUMENT",
            message: BAD_KEY_MESSAGE.to_owned(),
            details: vec![
                json!({
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }),
                json!({
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": BAD_KEY_MESSAGE,
                }),
            ],
        }),
        None => Err(ApiError::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", NO_KEY_MESSAGE.to_owned())),
    }
}

// === generate ===

/// What a validated generate request asks for.
struct GenerateRequest {
    model: String,
    prompt_tokens: u64,
    max_output_tokens: Option<u64>,
    /// The first declared function's name, when the request asks for the weather and
    /// declares functions.
    weather_function: Option<String>,
}

impl GenerateRequest {
    fn parse(model: String, json: Result<Value, serde_json::Error>) -> Result<GenerateRequest, ApiError> {
        let body = match json {
            Ok(Value::Object(body)) => body,
            Ok(_) => return Err(ApiError::invalid_argument("Invalid JSON payload received. Expected an object.")),
            Err(_) => return Err(ApiError::invalid_argument("Invalid JSON payload received. Unexpected token.")),
        };
        let contents = match body.get("contents") {
            Some(Value::Array(contents)) if !contents.is_empty() => contents,
            _ => return Err(ApiError::invalid_argument(NO_CONTENTS_MESSAGE)),
        };
        let asks_for_weather = contents
            .iter()
            .rev()
            .find(|c| c.get("role").and_then(Value::as_str).unwrap_or("user") == "user")
            .is_some_and(|c| texts(Some(c)).any(|t| t.to_lowercase().contains("weather")));
        let weather_function = body
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|tool| tool.get("functionDeclarations").and_then(Value::as_array))
            .flatten()
            .next()
            .filter(|_| asks_for_weather)
            .map(|function| function.get("name").and_then(Value::as_str).unwrap_or("function").to_owned());
        let prompt_tokens = texts(body.get("systemInstruction")).map(words).sum::<u64>()
            + contents.iter().flat_map(|c| texts(Some(c))).map(words).sum::<u64>();
        let max_output_tokens =
            body.get("generationConfig").and_then(|c| c.get("maxOutputTokens")).and_then(Value::as_u64);
        Ok(GenerateRequest { model, prompt_tokens, max_output_tokens, weather_function })
    }
}

/// The `text` of the `parts` of a content.
fn texts(content: Option<&Value>) -> impl Iterator<Item = &str> {
    content
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
}

/// What the fake answers, before it is rendered as JSON or as a stream.
struct Answer {
    /// Text chunks; they concatenate to the text part. No text part when empty.
    text: Vec<String>,
    /// The called function's name.
    call: Option<String>,
    finish_reason: &'static str,
    prompt_tokens: u64,
}

impl Answer {
    /// The answer to `request`; `text` replaces the default text and rules out a function call.
    fn new(request: &GenerateRequest, name: Option<&str>, text: Option<String>) -> Answer {
        let mut call = if text.is_some() { None } else { request.weather_function.clone() };
        let text = match text {
            Some(text) => text,
            None if call.is_some() => String::new(),
            None => match name {
                Some(name) => format!("hello from {} via {name}: this is a fake gemini reply", request.model),
                None => format!("hello from {}: this is a fake gemini reply", request.model),
            },
        };
        let mut chunks: Vec<String> = word_chunks(&text).into_iter().map(str::to_owned).collect();
        let mut finish_reason = "STOP";
        if let Some(max) = request.max_output_tokens {
            let needed = chunks.len() as u64 + if call.is_some() { CALL_TOKENS } else { 0 };
            if needed > max {
                chunks.truncate(usize::try_from(max).unwrap_or(usize::MAX));
                call = None;
                finish_reason = "MAX_TOKENS";
            }
        }
        Answer { text: chunks, call, finish_reason, prompt_tokens: request.prompt_tokens }
    }

    fn usage(&self) -> UsageJson {
        let candidates = self.text.len() as u64 + if self.call.is_some() { CALL_TOKENS } else { 0 };
        UsageJson {
            prompt_token_count: self.prompt_tokens,
            candidates_token_count: candidates,
            total_token_count: self.prompt_tokens + candidates,
            prompt_tokens_details: [ModalityJson { modality: "TEXT", token_count: self.prompt_tokens }],
        }
    }

    /// The stream's events, each flagged whether it is a delta (every event but the part-less
    /// one of an empty answer).
    fn events(&self, model: &str, response_id: &str) -> Vec<(Bytes, bool)> {
        let args = call_args();
        let last = self.text.len().saturating_sub(1);
        let mut events: Vec<(Bytes, bool)> = Vec::with_capacity(self.text.len() + 1);
        for (i, chunk) in self.text.iter().enumerate() {
            let finish = i == last && self.call.is_none();
            let candidate = CandidateJson {
                content: ContentJson { role: "model", parts: vec![PartJson::text(chunk)] },
                finish_reason: finish.then_some(self.finish_reason),
                index: 0,
                finish_message: None,
            };
            events.push((sse(&response(candidate, finish.then(|| self.usage()), model, response_id)), true));
        }
        if let Some(name) = &self.call {
            let candidate = CandidateJson {
                content: ContentJson { role: "model", parts: vec![PartJson::call(name, &args)] },
                finish_reason: Some(self.finish_reason),
                index: 0,
                finish_message: Some(CALL_FINISH_MESSAGE),
            };
            events.push((sse(&response(candidate, Some(self.usage()), model, response_id)), true));
        }
        if events.is_empty() {
            let candidate = CandidateJson {
                content: ContentJson { role: "model", parts: Vec::new() },
                finish_reason: Some(self.finish_reason),
                index: 0,
                finish_message: None,
            };
            events.push((sse(&response(candidate, Some(self.usage()), model, response_id)), false));
        }
        events
    }

    /// The whole answer as one response.
    fn json(&self, model: &str, response_id: &str) -> Bytes {
        let text = self.text.concat();
        let args = call_args();
        let mut parts = Vec::with_capacity(2);
        if !text.is_empty() {
            parts.push(PartJson::text(&text));
        }
        if let Some(name) = &self.call {
            parts.push(PartJson::call(name, &args));
        }
        let candidate = CandidateJson {
            content: ContentJson { role: "model", parts },
            finish_reason: Some(self.finish_reason),
            index: 0,
            finish_message: self.call.as_ref().map(|_| CALL_FINISH_MESSAGE),
        };
        to_json(&response(candidate, Some(self.usage()), model, response_id))
    }
}

/// `{"city":"Oslo"}`, the function call's `args`.
fn call_args() -> Value {
    json!({"city": CALL_CITY})
}

fn response<'a>(
    candidate: CandidateJson<'a>,
    usage: Option<UsageJson>,
    model: &'a str,
    response_id: &'a str,
) -> ResponseJson<'a> {
    ResponseJson { candidates: [candidate], usage_metadata: usage, model_version: model, response_id }
}

/// Applies `behaviour` to a non-streaming request: waits where it says so, or picks the reply.
/// [`GeminiBehaviour::Text`] is treated as [`GeminiBehaviour::Ok`] here; callers handle it.
async fn non_stream_prelude(behaviour: GeminiBehaviour) -> Prelude {
    match behaviour {
        GeminiBehaviour::Ok | GeminiBehaviour::Text(_) => Prelude::Answer,
        GeminiBehaviour::Status { status, body, headers } => Prelude::Reply(Reply::Status { status, body, headers }),
        GeminiBehaviour::SlowHeaders(delay)
        | GeminiBehaviour::SlowFirstChunk(delay)
        | GeminiBehaviour::StallAfter { stall: delay, .. } => {
            tokio::time::sleep(delay).await;
            Prelude::Answer
        }
        GeminiBehaviour::BreakAfter { .. } => Prelude::Reply(Reply::Broken),
        GeminiBehaviour::ErrorEventAfter { .. } => {
            Prelude::Reply(Reply::Status { status: 503, body: status_body(503), headers: Vec::new() })
        }
        GeminiBehaviour::Endless => std::future::pending().await,
    }
}

/// The answer a non-streaming request gets, or the reply its behaviour asks for instead.
async fn non_stream_answer(
    ctx: &Ctx<GeminiBehaviour>,
    request: &GenerateRequest,
    behaviour: GeminiBehaviour,
) -> Result<Answer, Reply> {
    let text = match behaviour {
        GeminiBehaviour::Text(text) => Some(text),
        other => match non_stream_prelude(other).await {
            Prelude::Answer => None,
            Prelude::Reply(reply) => return Err(reply),
        },
    };
    Ok(Answer::new(request, ctx.shared.name(), text))
}

async fn generate_json(
    ctx: Ctx<GeminiBehaviour>,
    request: GenerateRequest,
    behaviour: GeminiBehaviour,
) -> Response<FakeBody> {
    match non_stream_answer(&ctx, &request, behaviour).await {
        Ok(answer) => {
            let body = answer.json(&request.model, &ctx.request_id);
            ctx.json_reply(StatusCode::OK, body)
        }
        Err(reply) => ctx.reply(reply),
    }
}

/// `:streamGenerateContent` without `alt=sse`: the stream's responses as one JSON array.
async fn generate_array(
    ctx: Ctx<GeminiBehaviour>,
    request: GenerateRequest,
    behaviour: GeminiBehaviour,
) -> Response<FakeBody> {
    match non_stream_answer(&ctx, &request, behaviour).await {
        Ok(answer) => {
            let mut body = Vec::with_capacity(1024);
            body.push(b'[');
            for (i, (event, _)) in answer.events(&request.model, &ctx.request_id).iter().enumerate() {
                if i > 0 {
                    body.extend_from_slice(b",\r\n");
                }
                // strip the SSE framing again
                body.extend_from_slice(&event[b"data: ".len()..event.len() - b"\r\n\r\n".len()]);
            }
            body.push(b']');
            ctx.json_reply(StatusCode::OK, Bytes::from(body))
        }
        Err(reply) => ctx.reply(reply),
    }
}

async fn generate_stream(
    ctx: Ctx<GeminiBehaviour>,
    request: GenerateRequest,
    behaviour: GeminiBehaviour,
) -> Response<FakeBody> {
    let mut guard = ctx.stream_guard();
    let text = match &behaviour {
        GeminiBehaviour::Status { status, body, headers } => {
            guard.finish();
            return ctx.reply(Reply::Status { status: *status, body: body.clone(), headers: headers.clone() });
        }
        GeminiBehaviour::SlowHeaders(delay) => {
            tokio::time::sleep(*delay).await;
            None
        }
        GeminiBehaviour::Text(text) => Some(text.clone()),
        _ => None,
    };
    let answer = Answer::new(&request, ctx.shared.name(), text);
    let steps = stream_steps(&request.model, &ctx.request_id, &answer, &behaviour);
    ctx.stream_reply(steps, guard)
}

/// The SSE events of one stream, with the pauses and interruptions `behaviour` asks for.
fn stream_steps(model: &str, response_id: &str, answer: &Answer, behaviour: &GeminiBehaviour) -> VecDeque<Step> {
    let mut steps = VecDeque::with_capacity(answer.text.len() + 4);
    if *behaviour == GeminiBehaviour::Endless {
        let (model, response_id) = (model.to_owned(), response_id.to_owned());
        steps.push_back(Step::endless(answer.text.clone(), move |text| {
            let candidate = CandidateJson {
                content: ContentJson { role: "model", parts: vec![PartJson::text(text)] },
                finish_reason: None,
                index: 0,
                finish_message: None,
            };
            sse(&response(candidate, None, &model, &response_id))
        }));
        return steps;
    }
    let cut = match behaviour {
        GeminiBehaviour::SlowFirstChunk(delay) => Some((0, Cut::Pause(*delay))),
        GeminiBehaviour::StallAfter { chunks, stall } => Some((*chunks, Cut::Pause(*stall))),
        GeminiBehaviour::BreakAfter { chunks } => Some((*chunks, Cut::Break)),
        GeminiBehaviour::ErrorEventAfter { chunks } => {
            let error = ErrorEnvelope {
                error: ErrorJson { code: 503, message: OVERLOADED_MESSAGE, status: "UNAVAILABLE", details: Vec::new() },
            };
            Some((*chunks, Cut::ErrorEvent(sse(&error))))
        }
        _ => None,
    };
    push_events(&mut steps, answer.events(model, response_id), cut);
    steps
}

// === responses ===

/// A Gemini error with its HTTP status.
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    details: Vec<Value>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: String) -> ApiError {
        ApiError { status, kind, message, details: Vec::new() }
    }

    fn invalid_argument(message: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message.to_owned())
    }

    fn reply(self, ctx: Ctx<GeminiBehaviour>) -> Response<FakeBody> {
        let body = error_body(self.status.as_u16(), &self.message, self.kind, self.details);
        ctx.json_reply(self.status, Bytes::from(body))
    }
}

/// A `responseId`: 23 random alphanumerics, like Gemini's.
fn response_id() -> String {
    rand::rng().sample_iter(&Alphanumeric).take(23).map(char::from).collect()
}

/// `data: <json>\r\n\r\n`.
fn sse<T: Serialize>(value: &T) -> Bytes {
    let mut buf = Vec::with_capacity(384);
    buf.extend_from_slice(b"data: ");
    write_json(&mut buf, value);
    buf.extend_from_slice(b"\r\n\r\n");
    Bytes::from(buf)
}

// === wire types ===

/// A `GenerateContentResponse`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseJson<'a> {
    candidates: [CandidateJson<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_metadata: Option<UsageJson>,
    model_version: &'a str,
    response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CandidateJson<'a> {
    content: ContentJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_message: Option<&'static str>,
}

#[derive(Serialize)]
struct ContentJson<'a> {
    role: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    parts: Vec<PartJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PartJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionCallJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought_signature: Option<&'static str>,
}

impl<'a> PartJson<'a> {
    fn text(text: &'a str) -> PartJson<'a> {
        PartJson { text: Some(text), function_call: None, thought_signature: None }
    }

    fn call(name: &'a str, args: &'a Value) -> PartJson<'a> {
        PartJson {
            text: None,
            function_call: Some(FunctionCallJson { name, args }),
            thought_signature: Some(THOUGHT_SIGNATURE),
        }
    }
}

#[derive(Serialize)]
struct FunctionCallJson<'a> {
    name: &'a str,
    args: &'a Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageJson {
    prompt_token_count: u64,
    candidates_token_count: u64,
    total_token_count: u64,
    prompt_tokens_details: [ModalityJson; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModalityJson {
    modality: &'static str,
    token_count: u64,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorJson<'a>,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    code: u16,
    message: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<Value>,
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use http::{Method, StatusCode};
    use serde_json::{Value, json};
    use tokio::io::AsyncReadExt;

    use super::{FakeGemini, GeminiBehaviour, THOUGHT_SIGNATURE, model_of};
    use crate::testing::common::test_support::{self as support, Got, eventually, read_until};

    const GENERATE: &str = "/v1beta/models/m:generateContent";
    const STREAM: &str = "/v1beta/models/m:streamGenerateContent?alt=sse";

    async fn send(fake: &FakeGemini, method: Method, path: &str, headers: &[(&str, &str)], body: String) -> Got {
        support::send(fake.addr(), method, path, headers, body).await
    }

    async fn post(fake: &FakeGemini, path: &str, body: &Value) -> Got {
        send(fake, Method::POST, path, &[], body.to_string()).await
    }

    /// `:generateContent` (or `:streamGenerateContent?alt=sse`) for `model`.
    fn path(model: &str, stream: bool) -> String {
        if stream {
            format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("/v1beta/models/{model}:generateContent")
        }
    }

    fn request(text: &str) -> Value {
        json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
    }

    /// The JSON of every event of a complete data-only SSE body framed with `\r\n\r\n`.
    fn events(body: &str) -> Vec<Value> {
        assert!(body.ends_with("\r\n\r\n"), "body does not end with a blank line: {body:?}");
        body.trim_end_matches("\r\n\r\n")
            .split("\r\n\r\n")
            .map(|event| serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap())
            .collect()
    }

    fn text_event(text: &str, id: &str) -> String {
        format!(
            "data: {{\"candidates\":[{{\"content\":{{\"role\":\"model\",\"parts\":[{{\"text\":\"{text}\"}}]}},\"index\":0}}],\"modelVersion\":\"m\",\"responseId\":\"{id}\"}}\r\n\r\n"
        )
    }

    #[tokio::test]
    async fn streamed_reply_matches_gemini_wire_format_byte_for_byte() {
        let fake = FakeGemini::start().await;
        fake.push(GeminiBehaviour::Text("It is snowing.".to_owned()));
        let body = json!({
            "systemInstruction": {"parts": [{"text": "be  brief"}]},
            "contents": [{"role": "user", "parts": [{"text": "one two three"}]}],
        });
        let rsp = post(&fake, STREAM, &body).await;
        assert_eq!(rsp.status, StatusCode::OK);
        assert_eq!(rsp.header("content-type"), "text/event-stream");
        assert_eq!(rsp.header("cache-control"), "no-cache");
        assert!(rsp.error.is_none());
        let id = rsp.header("x-fake-response-id").to_owned();
        assert!(id.len() == 23 && id.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
        let expected = text_event("It", &id)
            + &text_event(" is", &id)
            + &format!(
                "data: {{\"candidates\":[{{\"content\":{{\"role\":\"model\",\"parts\":[{{\"text\":\" snowing.\"}}]}},\"finishReason\":\"STOP\",\"index\":0}}],\"usageMetadata\":{{\"promptTokenCount\":5,\"candidatesTokenCount\":3,\"totalTokenCount\":8,\"promptTokensDetails\":[{{\"modality\":\"TEXT\",\"tokenCount\":5}}]}},\"modelVersion\":\"m\",\"responseId\":\"{id}\"}}\r\n\r\n"
            );
        assert_eq!(rsp.text(), expected);

        // the default text, one event per word, ending at EOF without [DONE]
        let rsp = post(&fake, &path("gemini-test", true), &request("hi")).await;
        let text = rsp.text();
        assert!(!text.contains("[DONE]") && !text.contains("event:"), "{text}");
        let events = events(&text);
        let words: Vec<&str> =
            events.iter().map(|e| e["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap()).collect();
        assert_eq!(words.concat(), "hello from gemini-test: this is a fake gemini reply");
        assert_eq!(words.len(), 9);
        assert!(events[..8].iter().all(|e| e.get("usageMetadata").is_none()));
        assert!(events[..8].iter().all(|e| e["candidates"][0].get("finishReason").is_none()));
        assert_eq!(events[8]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(events[8]["usageMetadata"]["candidatesTokenCount"], 9);
        assert_eq!(events[8]["modelVersion"], "gemini-test");
        eventually("the stream to leave in_flight", || fake.in_flight() == 0).await;
        assert_eq!(fake.cancelled(), 0);
        assert_eq!(fake.hits(), 2);
        assert_eq!(model_of(&fake.requests()[1].path), Some("gemini-test"));
    }

    #[tokio::test]
    async fn non_streaming_reply_is_one_generate_content_response() {
        let fake = FakeGemini::start_named("g").await;
        assert_eq!(fake.base_url(), format!("http://127.0.0.1:{}", fake.addr().port()));
        let rsp = post(&fake, GENERATE, &request("hi there")).await;
        assert_eq!(rsp.status, StatusCode::OK);
        assert_eq!(rsp.header("content-type"), "application/json; charset=UTF-8");
        assert_eq!(rsp.header("x-fake-upstream"), "g");
        let id = rsp.header("x-fake-response-id").to_owned();
        assert_eq!(
            rsp.json(),
            json!({
                "candidates": [{
                    "content": {"role": "model", "parts": [{"text": "hello from m via g: this is a fake gemini reply"}]},
                    "finishReason": "STOP",
                    "index": 0,
                }],
                "usageMetadata": {
                    "promptTokenCount": 2, "candidatesTokenCount": 11, "totalTokenCount": 13,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 2}],
                },
                "modelVersion": "m",
                "responseId": id,
            })
        );

        let short = post(
            &fake,
            GENERATE,
            &json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 2}}),
        )
        .await;
        assert_eq!(short.json()["candidates"][0]["content"]["parts"][0]["text"], "hello from");
        assert_eq!(short.json()["candidates"][0]["finishReason"], "MAX_TOKENS");

        // without alt=sse the stream method answers one JSON array
        let array = post(&fake, "/v1beta/models/m:streamGenerateContent", &request("hi")).await;
        assert_eq!(array.header("content-type"), "application/json; charset=UTF-8");
        assert_eq!(array.json().as_array().unwrap().len(), 11);
    }

    #[tokio::test]
    async fn weather_question_with_tools_gets_a_whole_function_call_with_a_thought_signature() {
        let fake = FakeGemini::start().await;
        let body = json!({
            "contents": [{"role": "user", "parts": [{"text": "What's the Weather in Oslo?"}]}],
            "tools": [{"functionDeclarations": [
                {"name": "get_weather", "parametersJsonSchema": {"type": "object"}},
                {"name": "other"},
            ]}],
        });
        let expected_part = json!({
            "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
            "thoughtSignature": THOUGHT_SIGNATURE,
        });
        let rsp = post(&fake, GENERATE, &body).await;
        let json = rsp.json();
        assert_eq!(json["candidates"][0]["content"]["parts"], json!([expected_part]));
        assert!(json["candidates"][0]["content"]["parts"][0]["functionCall"].get("id").is_none());
        assert_eq!(json["candidates"][0]["finishReason"], "STOP");
        assert_eq!(json["candidates"][0]["finishMessage"], "Model generated function call(s).");
        assert_eq!(json["usageMetadata"]["candidatesTokenCount"], 3);
        assert_eq!(json["usageMetadata"]["totalTokenCount"], 8);

        let stream = post(&fake, STREAM, &body).await;
        let id = stream.header("x-fake-response-id").to_owned();
        assert_eq!(
            stream.text(),
            format!(
                "data: {{\"candidates\":[{{\"content\":{{\"role\":\"model\",\"parts\":[{{\"functionCall\":{{\"name\":\"get_weather\",\"args\":{{\"city\":\"Oslo\"}}}},\"thoughtSignature\":\"{THOUGHT_SIGNATURE}\"}}]}},\"finishReason\":\"STOP\",\"index\":0,\"finishMessage\":\"Model generated function call(s).\"}}],\"usageMetadata\":{{\"promptTokenCount\":5,\"candidatesTokenCount\":3,\"totalTokenCount\":8,\"promptTokensDetails\":[{{\"modality\":\"TEXT\",\"tokenCount\":5}}]}},\"modelVersion\":\"m\",\"responseId\":\"{id}\"}}\r\n\r\n"
            )
        );

        // the function response ends the loop with a text answer
        let follow_up = json!({
            "contents": [
                {"role": "user", "parts": [{"text": "What's the Weather in Oslo?"}]},
                {"role": "model", "parts": [expected_part]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "-3C"}}}]},
            ],
            "tools": body["tools"],
        });
        let answer = post(&fake, GENERATE, &follow_up).await;
        assert_eq!(
            answer.json()["candidates"][0]["content"]["parts"],
            json!([{"text": "hello from m: this is a fake gemini reply"}])
        );
        // no tools, no call
        let plain = post(&fake, GENERATE, &request("weather?")).await;
        assert!(plain.json()["candidates"][0]["content"]["parts"][0]["text"].is_string());
    }

    #[tokio::test]
    async fn bad_or_missing_key_gets_gemini_errors_without_consuming_the_script() {
        let fake = FakeGemini::start().await;
        fake.require_api_key("AIza-right");
        fake.push(GeminiBehaviour::Text("scripted".to_owned()));
        let body = request("hi").to_string();

        let wrong = send(&fake, Method::POST, GENERATE, &[("x-goog-api-key", "AIza-wrong")], body.clone()).await;
        assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
        assert_eq!(wrong.header("content-type"), "application/json; charset=UTF-8");
        assert_eq!(
            wrong.json(),
            json!({"error": {
                "code": 400,
                "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    },
                    {
                        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                        "locale": "en-US",
                        "message": "API key not valid. Please pass a valid API key.",
                    },
                ],
            }})
        );
        let wrong_query = send(&fake, Method::POST, &format!("{STREAM}&key=nope"), &[], body.clone()).await;
        assert_eq!(wrong_query.status, StatusCode::BAD_REQUEST);
        assert_eq!(wrong_query.json()["error"]["details"][0]["reason"], "API_KEY_INVALID");

        let missing =
            send(&fake, Method::POST, GENERATE, &[("authorization", "Bearer AIza-right")], body.clone()).await;
        assert_eq!(missing.status, StatusCode::FORBIDDEN);
        assert_eq!(missing.json()["error"]["status"], "PERMISSION_DENIED");

        let by_query =
            send(&fake, Method::POST, "/v1beta/models/m:generateContent?key=AIza-right", &[], body.clone()).await;
        assert_eq!(by_query.status, StatusCode::OK);
        assert_eq!(by_query.json()["candidates"][0]["content"]["parts"][0]["text"], "scripted");
        let by_header = send(&fake, Method::POST, GENERATE, &[("x-goog-api-key", "AIza-right")], body).await;
        assert_eq!(by_header.status, StatusCode::OK);
        assert_eq!(fake.hits(), 5);
    }

    #[tokio::test]
    async fn rate_limited_gets_a_429_with_retry_info() {
        let fake = FakeGemini::start().await;
        for stream in [false, true] {
            let rsp = post(&fake, &path("rate-limited", stream), &request("hi")).await;
            assert_eq!(rsp.status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(rsp.header("content-type"), "application/json; charset=UTF-8");
            assert!(rsp.headers.get("retry-after").is_none());
            let json = rsp.json();
            assert_eq!(json["error"]["code"], 429);
            assert_eq!(json["error"]["status"], "RESOURCE_EXHAUSTED");
            let details = json["error"]["details"].as_array().unwrap();
            assert_eq!(details[0]["@type"], "type.googleapis.com/google.rpc.QuotaFailure");
            assert_eq!(details[1], json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}));
        }
        assert_eq!(fake.cancelled(), 0);
    }

    #[tokio::test]
    async fn model_names_and_status_pick_gemini_error_bodies() {
        let fake = FakeGemini::start().await;
        let cases = [
            ("fail-400", 400, "INVALID_ARGUMENT"),
            ("fail-403", 403, "PERMISSION_DENIED"),
            ("fail-404", 404, "NOT_FOUND"),
            ("fail-500", 500, "INTERNAL"),
            ("fail-503", 503, "UNAVAILABLE"),
            ("overloaded", 503, "UNAVAILABLE"),
            ("fail-504", 504, "DEADLINE_EXCEEDED"),
            ("fail-422", 422, "INVALID_ARGUMENT"),
        ];
        for (model, status, kind) in cases {
            for stream in [false, true] {
                let rsp = post(&fake, &path(model, stream), &request("hi")).await;
                assert_eq!(rsp.status.as_u16(), status, "{model}");
                assert_eq!(rsp.json()["error"]["code"], status, "{model}");
                assert_eq!(rsp.json()["error"]["status"], kind, "{model}");
                assert!(rsp.json()["error"].get("details").is_none(), "{model}");
            }
        }
        let body: Value = match GeminiBehaviour::status(504) {
            GeminiBehaviour::Status { body, .. } => serde_json::from_str(&body).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            body,
            json!({"error": {"code": 504, "message": "Deadline expired before operation could complete.", "status": "DEADLINE_EXCEEDED"}})
        );
        assert_eq!(GeminiBehaviour::for_model("slow-ttft"), GeminiBehaviour::SlowFirstChunk(Duration::from_secs(5)));
        assert_eq!(GeminiBehaviour::for_model("break-after-3"), GeminiBehaviour::BreakAfter { chunks: 3 });
        assert_eq!(GeminiBehaviour::for_model("error-after-3"), GeminiBehaviour::ErrorEventAfter { chunks: 3 });
        assert_eq!(GeminiBehaviour::for_model("endless"), GeminiBehaviour::Endless);
        assert_eq!(GeminiBehaviour::for_model("gemini-2.5-flash"), GeminiBehaviour::Ok);
        assert_eq!(GeminiBehaviour::for_model("fail-200"), GeminiBehaviour::Ok);
    }

    #[tokio::test]
    async fn invalid_requests_and_unknown_paths_get_gemini_errors() {
        let fake = FakeGemini::start().await;
        let no_contents = post(&fake, GENERATE, &json!({"contents": []})).await;
        assert_eq!(no_contents.status, StatusCode::BAD_REQUEST);
        assert_eq!(no_contents.json()["error"]["status"], "INVALID_ARGUMENT");
        let not_json = send(&fake, Method::POST, GENERATE, &[], "{nope".to_owned()).await;
        assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
        assert_eq!(fake.hits(), 2);

        for (method, path) in [
            (Method::GET, GENERATE),
            (Method::POST, "/v1beta/models/m:countTokens"),
            (Method::POST, "/v1/chat/completions"),
        ] {
            let rsp = send(&fake, method, path, &[], String::new()).await;
            assert_eq!(rsp.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(rsp.json()["error"]["status"], "NOT_FOUND", "{path}");
        }
        assert_eq!(fake.hits(), 2, "only POSTs to generate methods are hits");
        assert_eq!(model_of("/v1/models/gemini-2.5-pro:generateContent"), Some("gemini-2.5-pro"));
        assert_eq!(model_of("/v1beta/models/:generateContent"), None);
    }

    #[tokio::test]
    async fn error_event_after_ends_the_stream_cleanly() {
        let fake = FakeGemini::start().await;
        let rsp = post(&fake, &path("error-after-2", true), &request("hi")).await;
        assert_eq!(rsp.status, StatusCode::OK);
        assert!(rsp.error.is_none(), "the body ends cleanly");
        let text = rsp.text();
        let events = events(&text);
        assert_eq!(events.len(), 3);
        assert_eq!(events[1]["candidates"][0]["content"]["parts"][0]["text"], " from");
        assert!(text.ends_with(
            "data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded. Please try again later.\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n"
        ));
        let plain = post(&fake, &path("error-after-2", false), &request("hi")).await;
        assert_eq!(plain.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(fake.cancelled(), 0);
    }

    #[tokio::test]
    async fn break_after_closes_the_connection_mid_stream() {
        let fake = FakeGemini::start().await;
        fake.push(GeminiBehaviour::BreakAfter { chunks: 2 });
        let rsp = post(&fake, STREAM, &request("hi")).await;
        assert_eq!(rsp.status, StatusCode::OK);
        assert!(rsp.error.is_some(), "the client should see a broken body");
        assert_eq!(rsp.text().matches("data: ").count(), 2);

        let mut stream = support::raw_post(fake.addr(), &path("break-after-1", true), &[], &request("hi")).await;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw)).await.unwrap().unwrap();
        let raw = String::from_utf8(raw).unwrap();
        assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
        assert_eq!(raw.matches("data: ").count(), 1, "{raw}");
        assert!(!raw.ends_with("0\r\n\r\n"), "{raw}");
        assert_eq!(fake.cancelled(), 0, "a break by the fake is not a client cancellation");
    }

    #[tokio::test]
    async fn slow_first_chunk_sends_the_head_at_once() {
        let fake = FakeGemini::start().await;
        let delay = Duration::from_millis(800);
        fake.push(GeminiBehaviour::SlowFirstChunk(delay));
        let started = Instant::now();
        let mut stream = support::raw_post(fake.addr(), STREAM, &[], &request("hi")).await;
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, |s| s.contains("\r\n\r\n")).await;
        assert!(started.elapsed() < delay, "head took {:?}", started.elapsed());
        assert!(!String::from_utf8_lossy(&buf).contains("data: "));
        read_until(&mut stream, &mut buf, |s| s.contains("\"finishReason\":\"STOP\"")).await;
        assert!(started.elapsed() >= delay);
    }

    #[tokio::test]
    async fn client_leaving_mid_stream_is_counted_as_cancelled() {
        let fake = FakeGemini::start().await;
        let mut stream = support::raw_post(fake.addr(), &path("endless", true), &[], &request("hi")).await;
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, |s| s.matches("data: ").count() >= 3).await;
        assert!(!String::from_utf8_lossy(&buf).contains("finishReason"));
        assert_eq!(fake.in_flight(), 1);
        assert_eq!(fake.cancelled(), 0);
        drop(stream);
        eventually("the endless stream to be cancelled", || fake.cancelled() == 1).await;
        eventually("in_flight to drop", || fake.in_flight() == 0).await;

        // a client leaving while the stream is idle counts too
        fake.push(GeminiBehaviour::StallAfter { chunks: 1, stall: Duration::from_secs(30) });
        let mut stream = support::raw_post(fake.addr(), STREAM, &[], &request("hi")).await;
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, |s| s.contains("data: ")).await;
        drop(stream);
        eventually("the idle stream to be cancelled", || fake.cancelled() == 2).await;
        assert_eq!(fake.in_flight(), 0);
    }
}
