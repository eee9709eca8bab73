//! Errors of the request path, their retry classification, and the one place
//! that turns an error into an OpenAI-shaped response ([`ProxyError::into_response`]).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::ratelimit::RateLimits;
use crate::server::{Body, full};
use crate::translate::anthropic_inbound;

/// Why one upstream attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("answered HTTP {status}")]
    Status {
        status: u16,
        body: Bytes,
        retry_after: Option<Duration>,
        /// The provider's `x-should-retry` header, when present.
        should_retry: Option<bool>,
    },
    #[error("stream broke: {0}")]
    StreamBroken(String),
    #[error("sent an error event: {0}")]
    StreamError(String),
    #[error("sent an invalid response: {0}")]
    Protocol(String),
    #[error("provider `{0}` is not supported by this proxy yet")]
    Unsupported(&'static str),
    /// The provider's settings cannot make a valid request (bad header, URL, key).
    #[error("is misconfigured: {0}")]
    Misconfigured(String),
    /// This provider cannot express the request (e.g. `n > 1` for Anthropic);
    /// another target may. Says nothing about the target's health.
    #[error("cannot take this request: {0}")]
    Untranslatable(String),
    /// The target was not tried (circuit open, provider limit reached).
    #[error("not tried: {0}")]
    NotTried(String),
}

/// What a failure allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Transient: retry the same target, then move on.
    Retry,
    /// This target cannot serve it (bad key, unknown model, quota): move on without retrying.
    NextTarget,
    /// The request itself is wrong: stop and tell the client.
    Final,
}

impl UpstreamError {
    pub fn class(&self) -> Class {
        match self {
            Self::Status { status, body, should_retry, .. } => {
                let class = match status {
                    408 | 409 | 500..=599 => Class::Retry,
                    429 if is_quota_exhausted(body) => Class::NextTarget,
                    429 => Class::Retry,
                    401 | 403 | 404 => Class::NextTarget,
                    _ => Class::Final,
                };
                match (class, should_retry) {
                    (Class::Retry, Some(false)) => Class::NextTarget,
                    (Class::NextTarget, Some(true)) => Class::Retry,
                    _ => class,
                }
            }
            Self::Unsupported(_) | Self::NotTried(_) | Self::Misconfigured(_) | Self::Untranslatable(_) => {
                Class::NextTarget
            }
            _ => Class::Retry,
        }
    }

    /// The upstream said the prompt does not fit its model's context window
    /// (its error, already in OpenAI's shape, has `code:
    /// "context_length_exceeded"`): not retried, and tried elsewhere only on
    /// a target with a larger `contextWindow`.
    pub fn is_context_length(&self) -> bool {
        self.context_length_body().is_some()
    }

    /// The error body of a context-length error ([`is_context_length`](Self::is_context_length)).
    pub fn context_length_body(&self) -> Option<&Bytes> {
        match self {
            Self::Status { status: 400 | 413, body, .. } => serde_json::from_slice::<serde_json::Value>(body)
                .is_ok_and(|v| v["error"]["code"] == "context_length_exceeded")
                .then_some(body),
            _ => None,
        }
    }

    /// The delay the provider asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the failure says something about the target's health (and so
    /// counts towards opening its circuit).
    pub fn counts_against_target(&self) -> bool {
        !matches!(self, Self::Untranslatable(_) | Self::NotTried(_)) && self.class() != Class::Final
    }

    /// A short label for logs and metrics: `503`, `timeout`, `connect`, ...
    pub fn label(&self) -> String {
        match self {
            Self::Connect(_) => "connect".into(),
            Self::Timeout(_) => "timeout".into(),
            Self::Status { status, .. } => status.to_string(),
            Self::StreamBroken(_) => "stream_broken".into(),
            Self::StreamError(_) => "stream_error".into(),
            Self::Protocol(_) => "protocol".into(),
            Self::Unsupported(_) => "unsupported".into(),
            Self::NotTried(_) => "not_tried".into(),
            Self::Misconfigured(_) => "misconfigured".into(),
            Self::Untranslatable(_) => "untranslatable".into(),
        }
    }
}

/// OpenAI's `insufficient_quota` 429 is a billing state, not a burst: waiting will not help.
fn is_quota_exhausted(body: &[u8]) -> bool {
    body.windows(b"insufficient_quota".len()).any(|w| w == b"insufficient_quota")
}

/// One attempt, as reported in error bodies and logs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptRecord {
    pub route: String,
    pub target: String,
    pub provider: String,
    pub outcome: String,
    /// The provider cannot express the request ([`UpstreamError::Untranslatable`]).
    #[serde(skip)]
    pub provider_gap: bool,
}

/// Everything that ends a request with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{message}")]
    BadRequest { message: String, param: Option<&'static str> },
    #[error("unknown model `{model}`")]
    UnknownModel { model: String, known: Vec<String> },
    #[error("no routing table is installed yet")]
    NotReady,
    #[error("no target of `{alias}` can take the request")]
    NoCandidate { alias: String, skipped: Vec<String> },
    /// Every target was left out because the prompt is longer than its
    /// `contextWindow`: the client has to shorten it.
    #[error("the request is longer than every context window of `{alias}`")]
    TooLong { alias: String, skipped: Vec<String> },
    /// Upstreams answered that the prompt is too long for their model and no
    /// target with a larger `contextWindow` was left to try: the last such
    /// error (in OpenAI's shape), with the attempts added.
    #[error("the request is too long for the models of `{alias}`")]
    ContextLength { alias: String, body: Bytes, attempts: Vec<AttemptRecord>, skipped: Vec<String> },
    /// A final client error from the upstream, passed through.
    #[error("upstream rejected the request with HTTP {status}")]
    Rejected { alias: String, status: u16, body: Bytes, attempts: Vec<AttemptRecord> },
    #[error("every target of `{alias}` failed")]
    Exhausted {
        alias: String,
        attempts: Vec<AttemptRecord>,
        last: Box<UpstreamError>,
        skipped: Vec<String>,
        /// The last upstream's rate limits, passed on with a 429.
        rate_limits: Option<Box<RateLimits>>,
    },
    /// Every target was skipped because its provider's `requestsPerMinute`
    /// or `tokensPerMinute` is used up: the proxy's own 429.
    #[error("the provider limits of every target of `{alias}` are reached")]
    Throttled { alias: String, skipped: Vec<String>, limits: Box<RateLimits> },
    #[error("the request timeout of {limit:?} ran out")]
    Deadline { alias: String, limit: Duration, attempts: Vec<AttemptRecord> },
    #[error("no route for `{0}`")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } | Self::TooLong { .. } | Self::ContextLength { .. } => StatusCode::BAD_REQUEST,
            Self::UnknownModel { .. } | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::NotReady | Self::NoCandidate { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Rejected { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            Self::Exhausted { .. } if self.no_target_could_express_it() => StatusCode::BAD_REQUEST,
            Self::Exhausted { last, .. } => match last.as_ref() {
                UpstreamError::Status { status: 429, .. } => StatusCode::TOO_MANY_REQUESTS,
                UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            },
            Self::Deadline { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    pub fn attempts(&self) -> &[AttemptRecord] {
        match self {
            Self::Rejected { attempts, .. }
            | Self::ContextLength { attempts, .. }
            | Self::Exhausted { attempts, .. }
            | Self::Deadline { attempts, .. } => attempts,
            _ => &[],
        }
    }

    /// Every attempt failed because its provider cannot express the request
    /// (e.g. `n > 1` on Anthropic): the client has to change the request, so
    /// it is a 400, not an upstream failure.
    fn no_target_could_express_it(&self) -> bool {
        matches!(self, Self::Exhausted { last, attempts, .. }
            if matches!(last.as_ref(), UpstreamError::Untranslatable(_))
                && attempts.iter().all(|a| a.provider_gap))
    }

    /// The alias the request was routed by, once it was known to exist.
    pub fn alias(&self) -> Option<&str> {
        match self {
            Self::Rejected { alias, .. }
            | Self::Exhausted { alias, .. }
            | Self::Deadline { alias, .. }
            | Self::NoCandidate { alias, .. }
            | Self::Throttled { alias, .. }
            | Self::TooLong { alias, .. }
            | Self::ContextLength { alias, .. } => Some(alias),
            _ => None,
        }
    }

    /// The OpenAI error object (`{"error": {...}}`) for this error.
    pub fn body(&self) -> serde_json::Value {
        let (kind, code) = match self {
            Self::BadRequest { .. } => ("invalid_request_error", None),
            Self::UnknownModel { .. } => ("invalid_request_error", Some("model_not_found")),
            Self::NotFound(_) => ("invalid_request_error", Some("unknown_url")),
            Self::MethodNotAllowed => ("invalid_request_error", Some("method_not_allowed")),
            Self::NotReady => ("server_error", Some("not_ready")),
            Self::NoCandidate { .. } => ("server_error", Some("no_available_target")),
            Self::Throttled { .. } => ("rate_limit_error", Some("rate_limit_exceeded")),
            Self::TooLong { .. } | Self::ContextLength { .. } => {
                ("invalid_request_error", Some("context_length_exceeded"))
            }
            Self::Rejected { .. } => ("invalid_request_error", None),
            Self::Exhausted { .. } if self.no_target_could_express_it() => {
                ("invalid_request_error", Some("unsupported_by_targets"))
            }
            Self::Exhausted { last, .. } => match last.as_ref() {
                UpstreamError::Status { status: 429, .. } => ("rate_limit_error", Some("rate_limit_exceeded")),
                UpstreamError::Timeout(_) => ("timeout_error", Some("upstream_timeout")),
                _ => ("upstream_error", Some("upstream_failed")),
            },
            Self::Deadline { .. } => ("timeout_error", Some("request_timeout")),
        };
        let param = match self {
            Self::BadRequest { param, .. } => *param,
            Self::UnknownModel { .. } => Some("model"),
            Self::TooLong { .. } | Self::ContextLength { .. } => Some("messages"),
            _ => None,
        };
        let attempts = self.attempts();
        let mut error = json!({"message": self.message(), "type": kind, "param": param, "code": code});
        if !attempts.is_empty() {
            error["attempts"] = json!(attempts);
        }
        json!({ "error": error })
    }

    /// A message that says what happened and what to do about it.
    pub fn message(&self) -> String {
        match self {
            Self::UnknownModel { model, known } if known.is_empty() => {
                format!("unknown model `{model}`: no model aliases are configured; add a ModelRoute")
            }
            Self::UnknownModel { model, known } => format!(
                "unknown model `{model}`: use one of the configured aliases: {}",
                known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
            ),
            Self::NoCandidate { alias, skipped } => {
                format!("no target of `{alias}` can take the request now: {}", skipped.join("; "))
            }
            Self::Throttled { alias, skipped, .. } => format!(
                "rate limit reached for every target of `{alias}`: {}; retry after the time in `retry-after`",
                skipped.join("; ")
            ),
            Self::TooLong { alias, skipped } => format!(
                "the request is too long for every target of `{alias}`: {}; shorten the conversation or add a target with a larger `contextWindow`",
                skipped.join("; ")
            ),
            Self::Exhausted { alias, attempts, last, skipped, .. } => {
                let mut text = format!(
                    "all {} attempt(s) for `{alias}` failed; last: `{}` {}{}",
                    attempts.len(),
                    attempts.last().map_or("", |a| a.target.as_str()),
                    last,
                    upstream_detail(last)
                );
                if !skipped.is_empty() {
                    text.push_str(&format!("; skipped: {}", skipped.join("; ")));
                }
                text
            }
            Self::Rejected { body, .. } => upstream_message(body).unwrap_or_else(|| self.to_string()),
            Self::ContextLength { body, skipped, .. } => {
                let mut text = upstream_message(body).unwrap_or_else(|| self.to_string());
                if !skipped.is_empty() {
                    text.push_str(&format!(
                        "; no target with a larger `contextWindow` to fall back to: {}",
                        skipped.join("; ")
                    ));
                }
                text
            }
            _ => self.to_string(),
        }
    }

    /// The single rescue point: every error response of the data port is built here
    /// (in Anthropic's shape by [`into_anthropic_response`](Self::into_anthropic_response)).
    pub fn into_response(self, request_id: &HeaderValue) -> Response<Body> {
        // An upstream's own OpenAI-shaped error body is the most useful thing
        // to pass on for a rejected request; anything else gets ours.
        let body = match &self {
            Self::Rejected { body, .. } if upstream_message(body).is_some() => body.clone(),
            _ => Bytes::from(self.body().to_string()),
        };
        self.respond(body, request_id)
    }

    /// The error for an Anthropic Messages client (`POST /v1/messages`):
    /// `{"type":"error","error":{"type","message"},"request_id"}` with the
    /// same status, message and headers as [`into_response`](Self::into_response).
    pub fn into_anthropic_response(self, request_id: &HeaderValue) -> Response<Body> {
        let id = request_id.to_str().unwrap_or_default();
        let body = anthropic_inbound::error_body(self.status().as_u16(), &self.message(), id);
        self.respond(Bytes::from(body.to_string()), request_id)
    }

    fn respond(self, body: Bytes, request_id: &HeaderValue) -> Response<Body> {
        let status = self.status();
        let mut response = Response::new(full(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(crate::server::X_REQUEST_ID, request_id.clone());
        // The last target tried, so that a failed request says where it failed.
        if let Some(last) = self.attempts().last()
            && let Ok(target) = HeaderValue::from_str(&last.target)
        {
            headers.insert("x-switchyard-target", target);
        }
        // A 429 says when to come back: the upstream's `Retry-After`, else
        // the reset of its (or the proxy's own) exhausted limit.
        let (retry_after, limits) = match &self {
            Self::Exhausted { last, rate_limits, .. } if status == StatusCode::TOO_MANY_REQUESTS => (
                last.retry_after().or_else(|| rate_limits.as_ref().and_then(|l| l.retry_after())),
                rate_limits.as_deref(),
            ),
            Self::Exhausted { last, .. } => (last.retry_after(), None),
            Self::Throttled { limits, .. } => (limits.retry_after(), Some(&**limits)),
            _ => (None, None),
        };
        if let Some(delay) = retry_after {
            // Whole seconds, rounded up so that the client does not come back early.
            let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if let Some(limits) = limits {
            limits.write(headers);
        }
        response
    }
}

/// `error.message` from an OpenAI-shaped error body.
fn upstream_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("error")?.get("message")?.as_str().map(str::to_owned)
}

fn upstream_detail(error: &UpstreamError) -> String {
    match error {
        UpstreamError::Status { body, .. } => upstream_message(body).map(|m| format!(": {m}")).unwrap_or_default(),
        _ => String::new(),
    }
}
