//! Sending one attempt to one provider and reading its answer.
//!
//! For this version the HTTP providers are `openai` and `openai-compatible`
//! (same wire format); `mock` is served in process by [`crate::mock`]. The
//! request body is the client's JSON with `model` replaced by the target's
//! upstream model.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use routing::Redacted;
use routing::table::{Provider, ProviderKind, Target};

use crate::errors::UpstreamError;
use crate::mock::MockStream;
use crate::request::ChatRequest;
use crate::sse;

/// One attempt's request.
pub struct Call<'a> {
    pub provider: &'a Provider,
    pub api_key: Option<&'a Redacted>,
    pub target: &'a Target,
    /// The client's request.
    pub body: &'a ChatRequest,
    pub stream: bool,
    pub request_id: &'a HeaderValue,
    /// The provider's prepared endpoint (`None` for `mock`).
    pub endpoint: Option<&'a Result<Endpoint, String>>,
}

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

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
    chat_uri: http::Uri,
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
        let url = format!("{}/chat/completions", provider.base_url);
        let chat_uri = url.parse().map_err(|e| format!("`{url}` is not a usable URL: {e}"))?;
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
        if let Some(key) = api_key {
            let mut value = HeaderValue::try_from(format!("Bearer {}", key.expose()))
                .map_err(|_| "the API key contains characters that cannot be sent in a header".to_owned())?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        Ok(Self { chat_uri, headers })
    }
}

/// The HTTP client shared by all attempts (connection pooling per origin).
#[derive(Clone)]
pub struct Upstreams {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstreams {
    pub fn new() -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(https);
        Self { client }
    }

    /// Sends the attempt. Returns once the response head (and, for
    /// non-streaming calls, the whole body) has arrived. Timeouts are the
    /// caller's: dropping the future cancels the upstream request.
    pub async fn send(&self, call: Call<'_>) -> Result<Reply, UpstreamError> {
        match call.provider.kind {
            ProviderKind::Mock => crate::mock::answer(&call).await,
            ProviderKind::Openai | ProviderKind::OpenaiCompatible => self.send_openai(&call).await,
            other => Err(UpstreamError::Unsupported(other.as_str())),
        }
    }

    async fn send_openai(&self, call: &Call<'_>) -> Result<Reply, UpstreamError> {
        let endpoint = match call.endpoint {
            Some(Ok(endpoint)) => endpoint,
            Some(Err(problem)) => return Err(UpstreamError::Misconfigured(problem.clone())),
            None => return Err(UpstreamError::Misconfigured("no HTTP endpoint for this provider".into())),
        };
        let mut request = Request::new(Full::new(Bytes::from(openai_body(call))));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = endpoint.chat_uri.clone();
        let headers = request.headers_mut();
        *headers = endpoint.headers.clone();
        headers.insert(X_REQUEST_ID, call.request_id.clone());
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static(if call.stream { "text/event-stream" } else { "application/json" }),
        );
        let response =
            self.client.request(request).await.map_err(|e| UpstreamError::Connect(describe_client_error(&e)))?;
        let (parts, incoming) = response.into_parts();
        if !parts.status.is_success() {
            let body = incoming.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(UpstreamError::Status {
                status: parts.status.as_u16(),
                body: scrub(body, call.api_key),
                retry_after: retry_after(&parts.headers),
                should_retry: parts
                    .headers
                    .get("x-should-retry")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.eq_ignore_ascii_case("true")),
            });
        }
        if call.stream {
            Ok(Reply::Stream(Events::http(incoming)))
        } else {
            let body =
                incoming.collect().await.map_err(|e| UpstreamError::StreamBroken(format!("reading the body: {e}")))?;
            Ok(Reply::Json(body.to_bytes()))
        }
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

fn describe_client_error(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// `retry-after-ms`, then `retry-after` in (possibly fractional) seconds.
/// An HTTP-date `retry-after` is treated as absent; the backoff applies.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let read = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    if let Some(ms) = read("retry-after-ms").filter(|v| v.is_finite() && *v >= 0.0) {
        return Some(Duration::from_secs_f64(ms / 1_000.0));
    }
    read("retry-after").filter(|v| v.is_finite() && *v >= 0.0).map(Duration::from_secs_f64)
}

/// The events of a streamed answer, from the network or the mock.
pub enum Events {
    Http { body: Incoming, parser: sse::Parser },
    Mock(MockStream),
}

impl Events {
    fn http(body: Incoming) -> Self {
        Self::Http { body, parser: sse::Parser::default() }
    }

    /// The next event; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Result<sse::Event, UpstreamError>> {
        match self {
            Self::Mock(mock) => mock.next().await.map(Ok),
            Self::Http { body, parser } => loop {
                if let Some(event) = parser.next_event() {
                    return Some(Ok(event));
                }
                match body.frame().await {
                    None => return None,
                    Some(Err(e)) => return Some(Err(UpstreamError::StreamBroken(e.to_string()))),
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            parser.push(data);
                        }
                    }
                }
            },
        }
    }
}
