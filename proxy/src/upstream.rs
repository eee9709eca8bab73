//! Sending one attempt to one provider and reading its answer.
//!
//! HTTP providers: `openai` and `openai-compatible` (the client's JSON with
//! `model` replaced by the target's upstream model), `mistral` and
//! `azure-openai` (the same with their own rules), `anthropic`, `gemini` and
//! `cohere` (translated both ways by [`crate::translate`]); `mock` is served
//! in process by [`crate::mock`].

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use routing::Redacted;
use routing::table::{Provider, ProviderKind, Target};

use crate::client::{self, Client, ClientError};
use crate::errors::UpstreamError;
use crate::mock::MockStream;
use crate::ratelimit::RateLimits;
use crate::request::{ApiRequest, Operation};
use crate::server::X_REQUEST_ID;
use crate::sse;
use crate::translate::anthropic::{self, AnthropicDefaults};
use crate::translate::gemini::{self, GeminiDefaults};
use crate::translate::{ChunkFixer, TranslateError, azure, cohere, embeddings, mistral};

/// One attempt's request.
pub struct Call<'a> {
    pub provider: &'a Provider,
    pub api_key: Option<&'a Redacted>,
    pub target: &'a Target,
    /// The client's request.
    pub body: &'a ApiRequest,
    pub stream: bool,
    pub request_id: &'a HeaderValue,
    /// The provider's prepared endpoint (`None` for `mock`).
    pub endpoint: Option<&'a Result<Endpoint, String>>,
    /// Where the answer's rate-limit headers are put, when it has any.
    pub rate_limits: &'a Mutex<Option<RateLimits>>,
}

const ANTHROPIC_VERSION: http::HeaderName = http::HeaderName::from_static("anthropic-version");
static EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A successful answer's head: a whole JSON body, or events still to come.
pub enum Reply {
    Json(Bytes),
    Stream(Events),
}

/// What every request to one provider shares, prepared once per table: the
/// chat URL and the static headers, credentials included (marked sensitive,
/// so hyper never logs them).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The provider's base URL, for providers whose path names the model
    /// (Gemini, Azure's deployment URLs).
    base_url: String,
    /// The fixed chat URL, for providers whose path does not.
    chat: Option<client::Target>,
    /// The embeddings URL of OpenAI-shaped providers.
    embeddings: Option<client::Target>,
    headers: HeaderMap,
}

impl Endpoint {
    /// Prepares the endpoint of an HTTP provider; `None` for the in-process mock.
    pub fn prepare(provider: &Provider, api_key: Option<&Redacted>) -> Option<Result<Self, String>> {
        if provider.kind == ProviderKind::Mock {
            return None;
        }
        Some(Self::build(provider, api_key))
    }

    fn build(provider: &Provider, api_key: Option<&Redacted>) -> Result<Self, String> {
        let azure_v1 = provider.kind == ProviderKind::AzureOpenai && provider.api_version.is_none();
        let path = match provider.kind {
            ProviderKind::Anthropic => Some("/v1/messages"),
            ProviderKind::Cohere => Some("/v2/chat"),
            ProviderKind::AzureOpenai if azure_v1 => Some("/openai/v1/chat/completions"),
            ProviderKind::Gemini | ProviderKind::AzureOpenai => None,
            _ => Some("/chat/completions"),
        };
        let embeddings_path = match provider.kind {
            ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Mistral => Some("/embeddings"),
            ProviderKind::AzureOpenai if azure_v1 => Some("/openai/v1/embeddings"),
            ProviderKind::Cohere => Some("/v2/embed"),
            _ => None,
        };
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("switchyard/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in &provider.headers {
            let name = http::HeaderName::try_from(name.as_str())
                .map_err(|_| format!("header name `{name}` in `spec.headers` is not a valid HTTP header name"))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|_| format!("the value of header `{name}` in `spec.headers` is not a valid header value"))?;
            headers.insert(name, value);
        }
        if provider.kind == ProviderKind::Anthropic && !headers.contains_key(ANTHROPIC_VERSION) {
            headers.insert(ANTHROPIC_VERSION, HeaderValue::from_static("2023-06-01"));
        }
        if let Some(key) = api_key {
            let (name, value) = match provider.kind {
                ProviderKind::Anthropic => (http::HeaderName::from_static("x-api-key"), key.expose().to_owned()),
                ProviderKind::Gemini => (http::HeaderName::from_static("x-goog-api-key"), key.expose().to_owned()),
                ProviderKind::AzureOpenai => (http::HeaderName::from_static("api-key"), key.expose().to_owned()),
                _ => (http::header::AUTHORIZATION, format!("Bearer {}", key.expose())),
            };
            let mut value = HeaderValue::try_from(value)
                .map_err(|_| "the API key contains characters that cannot be sent in a header".to_owned())?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut endpoint = Self { base_url: provider.base_url.clone(), chat: None, embeddings: None, headers };
        if let Some(path) = path {
            endpoint.chat = Some(endpoint.at(&format!("{}{path}", provider.base_url))?);
        }
        if let Some(path) = embeddings_path {
            endpoint.embeddings = Some(endpoint.at(&format!("{}{path}", provider.base_url))?);
        }
        Ok(endpoint)
    }

    /// Requests to `url` with this endpoint's headers.
    fn at(&self, url: &str) -> Result<client::Target, String> {
        client::Target::new(&parse_uri(url)?, &self.headers, &PER_REQUEST)
    }

    /// [`Self::at`] for a URL made for one request.
    fn at_url(&self, url: &str) -> Result<client::Target, UpstreamError> {
        self.at(url).map_err(UpstreamError::Misconfigured)
    }
}

/// Largest whole answer read from an upstream: room for the largest
/// embeddings batch (2 048 inputs of 3 072 dimensions as JSON floats, about
/// 130 MB), and a bound on what a runaway upstream can make the proxy hold.
const MAX_ANSWER: usize = 256 * 1024 * 1024;
/// Largest error answer kept (its message goes back to the client); a
/// longer one is dropped and the status alone reported.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// Headers set on each request; the same names in `spec.headers` give way.
const PER_REQUEST: [http::HeaderName; 2] = [X_REQUEST_ID, http::header::ACCEPT];

/// A URL the endpoint must have for this call.
fn fixed(target: Option<&client::Target>) -> Result<&client::Target, UpstreamError> {
    target.ok_or_else(|| UpstreamError::Misconfigured("no URL for this provider".into()))
}

fn parse_uri(url: &str) -> Result<http::Uri, String> {
    url.parse().map_err(|e| format!("`{url}` is not a usable URL: {e}"))
}

/// The HTTP client shared by all attempts (connection pooling per origin,
/// see [`crate::client`]).
#[derive(Clone, Default)]
pub struct Upstreams {
    client: Client,
}

impl Upstreams {
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `https://` upstreams through `egress` (see [`crate::egress`]).
    pub fn with_egress(egress: crate::egress::Egress) -> Self {
        Self { client: Client::new().with_egress(egress) }
    }

    /// Sends the attempt. Returns once the response head (and, for
    /// non-streaming calls, the whole body) has arrived. Timeouts are the
    /// caller's: dropping the future cancels the upstream request.
    pub async fn send(&self, call: Call<'_>) -> Result<Reply, UpstreamError> {
        if call.body.operation == Operation::Embeddings {
            return self.send_embeddings(&call).await;
        }
        match call.provider.kind {
            ProviderKind::Mock => crate::mock::answer(&call).await,
            ProviderKind::Openai | ProviderKind::OpenaiCompatible => self.send_openai(&call).await,
            ProviderKind::Anthropic => self.send_anthropic(&call).await,
            ProviderKind::Gemini => self.send_gemini(&call).await,
            ProviderKind::Mistral => self.send_mistral(&call).await,
            ProviderKind::AzureOpenai => self.send_azure(&call).await,
            ProviderKind::Cohere => self.send_cohere(&call).await,
        }
    }

    /// `/v1/embeddings` of OpenAI-shaped providers (the client's body with
    /// the target's model), Gemini's and Cohere's embeddings translated both
    /// ways, and the mock's deterministic vectors.
    async fn send_embeddings(&self, call: &Call<'_>) -> Result<Reply, UpstreamError> {
        let model = &call.target.model;
        match call.provider.kind {
            ProviderKind::Mock => crate::mock::embed(call).await,
            ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Mistral => {
                let target = fixed(endpoint(call)?.embeddings.as_ref())?;
                let body = call.body.to_upstream_json(model, false);
                let incoming = self.post(call, target, body, |_, body| (body, None)).await?;
                Ok(Reply::Json(read_all(incoming).await?))
            }
            ProviderKind::AzureOpenai => {
                let target = azure_target(call, "embeddings")?;
                let body = call.body.to_upstream_json(model, false);
                let incoming = self.post(call, &target, body, azure_error).await?;
                Ok(Reply::Json(read_all(incoming).await?))
            }
            ProviderKind::Gemini => {
                let request = embeddings::read(call.body.as_map(), "gemini").map_err(|e| translate_failure(&e))?;
                let (method, body) = gemini::embeddings_to_gemini(&request, model);
                let endpoint = endpoint(call)?;
                let target = endpoint.at_url(&format!("{}/v1beta/models/{model}:{method}", endpoint.base_url))?;
                let incoming =
                    self.post(call, &target, serde_json::to_vec(&body).unwrap_or_default(), gemini_error).await?;
                let answer = read_all(incoming).await?;
                let (encoding, _) = crate::tokens::Encoding::for_model(ProviderKind::Gemini, model);
                let estimate = request.texts.iter().map(|text| encoding.count(text)).sum();
                let openai = gemini::gemini_embeddings_to_openai(&answer, &call.body.model, &request, estimate)
                    .map_err(|e| translate_failure(&e))?;
                Ok(Reply::Json(Bytes::from(openai.to_string())))
            }
            ProviderKind::Cohere => {
                let request = embeddings::read(call.body.as_map(), "cohere").map_err(|e| translate_failure(&e))?;
                let body = cohere::embeddings_to_cohere(&request, call.body.as_map(), model)
                    .map_err(|e| translate_failure(&e))?;
                let target = fixed(endpoint(call)?.embeddings.as_ref())?;
                let incoming = self
                    .post(call, target, serde_json::to_vec(&body).unwrap_or_default(), cohere_error)
                    .await
                    .map_err(cohere_status)?;
                let answer = read_all(incoming).await?;
                let openai = cohere::cohere_embeddings_to_openai(&answer, &call.body.model, &request)
                    .map_err(|e| translate_failure(&e))?;
                Ok(Reply::Json(Bytes::from(openai.to_string())))
            }
            other => Err(UpstreamError::Untranslatable(format!(
                "embeddings through provider `{}` are not supported",
                other.as_str()
            ))),
        }
    }

    async fn send_openai(&self, call: &Call<'_>) -> Result<Reply, UpstreamError> {
        let incoming = self.post(call, chat(call)?, openai_body(call), |_, body| (body, None)).await?;
        if call.stream { Ok(Reply::Stream(Events::http(incoming))) } else { Ok(Reply::Json(read_all(incoming).await?)) }
    }

    /// Anthropic Messages, translated both ways (see [`crate::translate::anthropic`]).
    async fn send_anthropic(&self, call: &Call<'_>) -> Result<Reply, UpstreamError> {
        let mut body =
            anthropic::chat_to_messages(call.body.as_map(), &call.target.model, &AnthropicDefaults::default())
                .map_err(|error| translate_failure(&error))?;
        if call.stream {
            body["stream"] = serde_json::Value::Bool(true);
        }
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let error_body =
            |status, body: Bytes| (Bytes::from(anthropic::to_openai_error(status, &body).to_string()), None);
        let incoming = self.post(call, chat(call)?, body, error_body).await?;
        let alias = &call.body.model;
        translated_reply(
            call,
            incoming,
            || Box::new(anthropic::StreamTranslator::new(alias, true)),
            |answer| anthropic::messages_to_chat(answer, alias),
        )
        .await
    }

    /// Gemini `generateContent` / `streamGenerateContent`, translated both
    /// ways (see [`crate::translate::gemini`]).
    async fn send_gemini(&self, call: &Call<'_>) -> Result<Reply, UpstreamError> {
        let body = gemini::chat_to_gemini(call.body.as_map(), &GeminiDefaults::default())
            .map_err(|error| translate_failure(&error))?;
        let endpoint = endpoint(call)?;
        let method = if call.stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
        let target = endpoint.at_url(&format!("{}/v1beta/models/{}:{method}", endpoint.base_url, call.target.model))?;
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let incoming = self.post(call, &target, body, gemini_error).await?;
        let alias = &call.body.model;
        translated_reply(
            call,
            incoming,
            || Box::new(gemini::GeminiStreamTranslator::new(alias, true)),
            |answer| gemini::gemini_to_chat(answer, alias),
        )
        .await
    }

    /// Mistral: OpenAI-shaped with its own field list, tool-id rule and
    /// finish reasons (see [`crate::translate::mistral`]).
    async fn send_mistral(&self, call: &Call<'_>) -> Result<Reply, UpstreamError> {
        let body = mistral::chat_to_mistral(call.body.as_map(), &call.target.model);
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let error_body = |status, body: Bytes| (Bytes::from(mistral::to_openai_error(status, &body).to_string()), None);
        let incoming = self.post(call, chat(call)?, body, error_body).await?;
        translated_reply(
            call,
            incoming,
            || Box::new(ChunkFixer::new("mistral", mistral::fix_chunk)),
            |answer| {
                let mut answer: serde_json::Value = serde_json::from_slice(answer)
                    .map_err(|e| TranslateError::InvalidResponse(format!("mistral's answer is not valid JSON: {e}")))?;
                mistral::fix_finish_reasons(&mut answer)?;
                Ok(answer)
            },
        )
        .await
    }

    /// Azure OpenAI: the client's body (the deployment as `model`) on Azure's
    /// URL; streams lose Azure's filter-only chunks (see [`crate::translate::azure`]).
    async fn send_azure(&self, call: &Call<'_>) -> Result<Reply, UpstreamError> {
        let target = azure_target(call, "chat/completions")?;
        let body = call.body.to_upstream_json(&call.target.model, false);
        let incoming = self.post(call, &target, body, azure_error).await?;
        if call.stream {
            Ok(Reply::Stream(Events::translated(incoming, Box::new(ChunkFixer::new("azure-openai", azure::fix_chunk)))))
        } else {
            Ok(Reply::Json(read_all(incoming).await?))
        }
    }

    /// Cohere v2 chat, translated both ways (see [`crate::translate::cohere`]).
    async fn send_cohere(&self, call: &Call<'_>) -> Result<Reply, UpstreamError> {
        let mut body = cohere::chat_to_cohere(call.body.as_map(), &call.target.model)
            .map_err(|error| translate_failure(&error))?;
        if call.stream {
            body["stream"] = serde_json::Value::Bool(true);
        }
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let incoming = self.post(call, chat(call)?, body, cohere_error).await.map_err(cohere_status)?;
        let alias = &call.body.model;
        translated_reply(
            call,
            incoming,
            || Box::new(cohere::CohereStreamTranslator::new(alias, true)),
            |answer| cohere::cohere_to_chat(answer, alias),
        )
        .await
    }

    /// POSTs `body` to the provider's endpoint and returns the body of a
    /// successful answer; a failed one becomes [`UpstreamError::Status`]
    /// with its body passed through `error_body`, which returns it in
    /// OpenAI's error shape and any retry delay the body itself names.
    async fn post(
        &self,
        call: &Call<'_>,
        target: &client::Target,
        body: Vec<u8>,
        error_body: impl FnOnce(u16, Bytes) -> (Bytes, Option<Duration>),
    ) -> Result<client::Body, UpstreamError> {
        let accept = if call.stream { &EVENT_STREAM } else { &APPLICATION_JSON };
        let extra = [(X_REQUEST_ID, call.request_id), (http::header::ACCEPT, accept)];
        let response = self.client.post(target, &extra, &body).await.map_err(|e| match e {
            ClientError::Protocol(message) => UpstreamError::Protocol(message),
            ClientError::Connect(message) | ClientError::Broken(message) => UpstreamError::Connect(message),
        })?;
        if let Some(limits) = RateLimits::from_headers(&response.headers) {
            *call.rate_limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(limits);
        }
        if (200..300).contains(&response.status) {
            return Ok(response.body);
        }
        let status = response.status;
        let body = response.body.bytes(MAX_ERROR_BODY).await.unwrap_or_default();
        let (body, delay_in_body) = error_body(status, body);
        Err(UpstreamError::Status {
            status,
            body: scrub(body, call.api_key),
            retry_after: retry_after(&response.headers).or(delay_in_body),
            should_retry: response.headers.get_str("x-should-retry").map(|v| v.trim().eq_ignore_ascii_case("true")),
        })
    }
}

/// The reply of a provider whose answers need translating: its stream
/// through the translator `stream` makes, or its whole answer through
/// `to_chat`. Translated streams always carry the usage chunk; the chat
/// handler strips it when the client did not ask for it, as for OpenAI.
async fn translated_reply(
    call: &Call<'_>,
    incoming: client::Body,
    stream: impl FnOnce() -> Box<dyn ChunkTranslator>,
    to_chat: impl FnOnce(&[u8]) -> Result<serde_json::Value, TranslateError>,
) -> Result<Reply, UpstreamError> {
    if call.stream {
        return Ok(Reply::Stream(Events::translated(incoming, stream())));
    }
    let answer = read_all(incoming).await?;
    let chat = to_chat(&answer).map_err(|error| translate_failure(&error))?;
    Ok(Reply::Json(Bytes::from(chat.to_string())))
}

/// Gemini's error answer in OpenAI's shape, and the `RetryInfo` delay.
fn gemini_error(status: u16, body: Bytes) -> (Bytes, Option<Duration>) {
    let delay = gemini::retry_delay(&body);
    (Bytes::from(gemini::to_openai_error(status, &body).to_string()), delay)
}

fn azure_error(status: u16, body: Bytes) -> (Bytes, Option<Duration>) {
    (Bytes::from(azure::to_openai_error(status, &body).to_string()), None)
}

fn cohere_error(status: u16, body: Bytes) -> (Bytes, Option<Duration>) {
    (Bytes::from(cohere::to_openai_error(status, &body).to_string()), None)
}

/// Cohere's 498 (invalid token) is an authentication failure: reported as
/// 401 so that the client and the retry policy read it as one.
fn cohere_status(error: UpstreamError) -> UpstreamError {
    match error {
        UpstreamError::Status { status: 498, body, retry_after, should_retry } => {
            UpstreamError::Status { status: 401, body, retry_after, should_retry }
        }
        other => other,
    }
}

/// The URL of Azure operation `operation` (`chat/completions`,
/// `embeddings`): the v1 URL prepared with the endpoint, or, with an
/// `api-version`, the target's deployment URL.
fn azure_target<'a>(call: &Call<'a>, operation: &str) -> Result<Cow<'a, client::Target>, UpstreamError> {
    let endpoint = endpoint(call)?;
    let Some(version) = &call.provider.api_version else {
        let prepared = if operation == "embeddings" { &endpoint.embeddings } else { &endpoint.chat };
        return fixed(prepared.as_ref()).map(Cow::Borrowed);
    };
    let url =
        format!("{}/openai/deployments/{}/{operation}?api-version={version}", endpoint.base_url, call.target.model);
    endpoint.at_url(&url).map(Cow::Owned)
}

/// The endpoint's fixed chat URL.
fn chat<'a>(call: &Call<'a>) -> Result<&'a client::Target, UpstreamError> {
    fixed(endpoint(call)?.chat.as_ref())
}

/// The provider's prepared endpoint, or why it cannot be called.
fn endpoint<'a>(call: &Call<'a>) -> Result<&'a Endpoint, UpstreamError> {
    match call.endpoint {
        Some(Ok(endpoint)) => Ok(endpoint),
        Some(Err(problem)) => Err(UpstreamError::Misconfigured(problem.clone())),
        None => Err(UpstreamError::Misconfigured("no HTTP endpoint for this provider".into())),
    }
}

async fn read_all(body: client::Body) -> Result<Bytes, UpstreamError> {
    body.bytes(MAX_ANSWER).await.map_err(|e| UpstreamError::StreamBroken(format!("reading the body: {e}")))
}

/// What a failed translation means for the request: the client's mistake
/// (400, final), a gap of this provider (try another target), or a broken
/// or failing upstream (retry).
fn translate_failure(error: &TranslateError) -> UpstreamError {
    match error {
        TranslateError::InvalidRequest { field, message } => {
            let body = serde_json::json!({"error": {
                "message": message, "type": "invalid_request_error", "param": field, "code": null}});
            UpstreamError::Status {
                status: 400,
                body: Bytes::from(body.to_string()),
                retry_after: None,
                should_retry: None,
            }
        }
        TranslateError::Unsupported { message, .. } => UpstreamError::Untranslatable(message.clone()),
        TranslateError::InvalidResponse(message) => UpstreamError::Protocol(message.clone()),
        TranslateError::Upstream { message, .. } => UpstreamError::StreamError(message.clone()),
    }
}

/// The client's body for an OpenAI-shaped upstream: the same fields, with
/// `model` set to the target's model.
fn openai_body(call: &Call<'_>) -> Vec<u8> {
    // OpenAI deprecated `max_tokens`; reasoning models reject it.
    let rename_max_tokens = call.provider.kind == ProviderKind::Openai && !call.body.contains("max_completion_tokens");
    call.body.to_upstream_json(&call.target.model, rename_max_tokens)
}

/// Removes the API key from an upstream error body before it can reach a
/// client or a log (some providers echo a part of it, some all of it).
fn scrub(body: Bytes, key: Option<&Redacted>) -> Bytes {
    let Some(key) = key.map(Redacted::expose).filter(|k| k.len() >= 4) else { return body };
    let text = String::from_utf8_lossy(&body);
    if text.contains(key) { Bytes::from(text.replace(key, "*****")) } else { body }
}

/// `retry-after-ms`, then `retry-after` in (possibly fractional) seconds.
/// An HTTP-date `retry-after` is treated as absent; the backoff applies.
pub fn retry_after(headers: &client::Headers) -> Option<Duration> {
    let read = |name: &str| headers.get_str(name)?.trim().parse::<f64>().ok();
    if let Some(ms) = read("retry-after-ms").filter(|v| v.is_finite() && *v >= 0.0) {
        return Some(Duration::from_secs_f64(ms / 1_000.0));
    }
    read("retry-after").filter(|v| v.is_finite() && *v >= 0.0).map(Duration::from_secs_f64)
}

/// The next server-sent event of a response body; `None` at its end.
async fn next_sse(body: &mut client::Body, parser: &mut sse::Parser) -> Option<Result<sse::Event, UpstreamError>> {
    loop {
        if let Some(event) = parser.next_event() {
            return Some(Ok(event));
        }
        match body.chunk().await {
            None => return None,
            Some(Err(e)) => return Some(Err(UpstreamError::StreamBroken(e.to_string()))),
            Some(Ok(data)) => parser.push(&data),
        }
    }
}

/// A provider's stream, turned into OpenAI chunk payloads (JSON strings,
/// `[DONE]` last).
pub trait ChunkTranslator: Send {
    /// The chunks for one upstream event.
    fn event(&mut self, event: &sse::Event) -> Result<Vec<String>, TranslateError>;
    /// The chunks owed at the end of the upstream stream, or `None` when the
    /// stream ended before the provider finished the answer.
    fn end(&mut self) -> Option<Vec<String>>;
}

impl ChunkTranslator for anthropic::StreamTranslator {
    fn event(&mut self, event: &sse::Event) -> Result<Vec<String>, TranslateError> {
        self.on_event(&event.event, &event.data)
    }

    /// Anthropic closes an answer with `message_stop` (translated to `[DONE]`).
    fn end(&mut self) -> Option<Vec<String>> {
        self.is_done().then(Vec::new)
    }
}

impl ChunkTranslator for gemini::GeminiStreamTranslator {
    fn event(&mut self, event: &sse::Event) -> Result<Vec<String>, TranslateError> {
        self.on_data(&event.data)
    }

    /// Gemini ends a stream at EOF with no closing event: only a finish
    /// reason for every candidate tells a whole answer from a cut one.
    fn end(&mut self) -> Option<Vec<String>> {
        self.is_complete().then(|| self.finish())
    }
}

impl ChunkTranslator for ChunkFixer {
    fn event(&mut self, event: &sse::Event) -> Result<Vec<String>, TranslateError> {
        self.on_data(&event.data)
    }

    fn end(&mut self) -> Option<Vec<String>> {
        self.is_done().then(Vec::new)
    }
}

impl ChunkTranslator for cohere::CohereStreamTranslator {
    fn event(&mut self, event: &sse::Event) -> Result<Vec<String>, TranslateError> {
        self.on_event(&event.event, &event.data)
    }

    /// Cohere closes an answer with `message-end` (translated to `[DONE]`).
    fn end(&mut self) -> Option<Vec<String>> {
        self.is_done().then(Vec::new)
    }
}

/// The events of a streamed answer, from the network or the mock.
pub enum Events {
    /// OpenAI-shaped events, passed on as they are.
    Http {
        body: client::Body,
        parser: sse::Parser,
    },
    /// A provider's own events, translated into OpenAI chunks as they arrive.
    Translated {
        body: client::Body,
        parser: sse::Parser,
        translator: Box<dyn ChunkTranslator>,
        ready: VecDeque<String>,
        ended: bool,
    },
    Mock(MockStream),
}

impl Events {
    fn http(body: client::Body) -> Self {
        Self::Http { body, parser: sse::Parser::default() }
    }

    fn translated(body: client::Body, translator: Box<dyn ChunkTranslator>) -> Self {
        Self::Translated { body, parser: sse::Parser::default(), translator, ready: VecDeque::new(), ended: false }
    }

    /// The stream's answer is complete (its `[DONE]` was read): lets the
    /// upstream connection go back to the pool when the rest of its framing
    /// has already arrived (see [`client::Body::settle`]).
    pub fn settle(&mut self) {
        match self {
            Self::Http { body, .. } | Self::Translated { body, .. } => body.settle(),
            Self::Mock(_) => {}
        }
    }

    /// The next event; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Result<sse::Event, UpstreamError>> {
        match self {
            Self::Mock(mock) => mock.next().await.map(Ok),
            Self::Http { body, parser } => next_sse(body, parser).await,
            Self::Translated { body, parser, translator, ready, ended } => loop {
                if let Some(data) = ready.pop_front() {
                    return Some(Ok(sse::Event { event: String::new(), data }));
                }
                if *ended {
                    return None;
                }
                match next_sse(body, parser).await {
                    Some(Ok(event)) => match translator.event(&event) {
                        Ok(chunks) => ready.extend(chunks),
                        Err(error) => return Some(Err(translate_failure(&error))),
                    },
                    Some(Err(error)) => return Some(Err(error)),
                    None => match translator.end() {
                        Some(chunks) => {
                            ready.extend(chunks);
                            *ended = true;
                        }
                        None => {
                            return Some(Err(UpstreamError::StreamBroken(
                                "the stream ended before the provider finished the answer".into(),
                            )));
                        }
                    },
                }
            },
        }
    }
}
