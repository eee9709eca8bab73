//! Translation between the OpenAI chat API the proxy serves and the native
//! APIs of providers that do not speak it.
//!
//! Everything here is synchronous and pure (the only outside input is the
//! wall clock, for OpenAI's `created`, and every function that reads it has a
//! variant that takes the timestamp instead): bytes and JSON in, JSON out.
//! The request path (`chat.rs`, `upstream.rs`) owns the I/O, and decides what
//! a [`TranslateError`] or an [`ErrorKind`] means for retries and fallbacks
//! (`docs/request-path.md` §3).
//!
//! Per provider:
//!
//! - [`anthropic`]: Anthropic Messages (`POST /v1/messages`), requests,
//!   responses, streams and errors.
//! - [`gemini`]: Gemini `generateContent` / `streamGenerateContent`, the same.
//! - [`mistral`]: Mistral's OpenAI-shaped API with its own fields and rules.
//! - [`azure`]: Azure OpenAI's stream quirks and error shapes.
//! - [`cohere`]: Cohere v2 chat (`POST /v2/chat`) and embed (`POST /v2/embed`).
//! - Gemini and Cohere embeddings share [`embeddings`]: the OpenAI
//!   embeddings request read once, and the OpenAI answer built from vectors.
//!
//! And one inbound API: [`anthropic_inbound`] serves Anthropic Messages
//! clients (`POST /v1/messages` on the proxy) through the OpenAI chat path.
//!
//! Shared here: the error type of a translation ([`TranslateError`]), the
//! provider-neutral class of an upstream error ([`ErrorKind`]) and token
//! counts in OpenAI's terms ([`TokenUsage`]).

pub mod anthropic;
pub mod anthropic_inbound;
pub mod azure;
pub mod cohere;
pub mod embeddings;
pub mod gemini;
pub mod mistral;
mod openai_request;

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};

/// Why a translation failed.
///
/// Request-side variants ([`InvalidRequest`](Self::InvalidRequest),
/// [`Unsupported`](Self::Unsupported)) name the offending field of the
/// client's OpenAI request in [`field`](Self::field) (a path such as
/// `messages[2].tool_calls[0].function.arguments`, suitable for OpenAI's
/// `error.param`), and their message says how to fix it.
/// Response-side variants describe what the upstream sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The client's request is wrong for any provider: answer 400, do not
    /// try another target.
    #[error("{message}")]
    InvalidRequest {
        /// Path of the offending field in the OpenAI request.
        field: String,
        /// Lowercase, names the field in backticks and the fix.
        message: String,
    },
    /// The request is valid OpenAI, but this provider cannot express it
    /// (`n > 1`, audio input, ...). Another target of a different provider
    /// may serve it; when none can, answer 400 with this message.
    #[error("{message}")]
    Unsupported {
        /// Path of the offending field in the OpenAI request.
        field: String,
        /// Lowercase, names the field in backticks and the fix.
        message: String,
    },
    /// The upstream answered with something its protocol does not allow
    /// (not JSON, an event out of order). Treat like a broken upstream:
    /// retryable before commit.
    #[error("the upstream sent an invalid response: {0}")]
    InvalidResponse(String),
    /// The upstream reported an error inside a successful (HTTP 200)
    /// response, such as Anthropic's `event: error`. Before the stream is
    /// committed this is a failed attempt (retry or fail over by
    /// [`kind`](Self::kind)); after, the proxy ends the client's stream with
    /// an error event.
    #[error("the upstream reported `{error_type}`: {message}")]
    Upstream {
        /// The class of the error, as [`anthropic::classify_error`] would give it.
        kind: ErrorKind,
        /// The provider's own error type, e.g. `overloaded_error`.
        error_type: String,
        /// The provider's message, verbatim.
        message: String,
    },
}

impl TranslateError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidRequest { field: field.into(), message: message.into() }
    }

    pub(crate) fn unsupported(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Unsupported { field: field.into(), message: message.into() }
    }

    /// The OpenAI request field at fault, for request-side errors.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { field, .. } | Self::Unsupported { field, .. } => Some(field),
            Self::InvalidResponse(_) | Self::Upstream { .. } => None,
        }
    }

    /// The class of this error, on the same scale as upstream HTTP errors.
    /// An invalid upstream response counts as [`ErrorKind::Server`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidRequest { .. } | Self::Unsupported { .. } => ErrorKind::InvalidRequest,
            Self::InvalidResponse(_) => ErrorKind::Server,
            Self::Upstream { kind, .. } => *kind,
        }
    }

    /// True when another provider might accept what this one cannot
    /// ([`Unsupported`](Self::Unsupported)): the proxy may move on to the
    /// next target instead of answering 400 at once (design §10.1, "known
    /// translation/feature gap").
    pub fn is_provider_gap(&self) -> bool {
        matches!(self, Self::Unsupported { .. })
    }
}

/// The provider-neutral class of an upstream error (digest §10.1), which
/// decides retries and fallbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is wrong (400, 413, 422): retrying or another provider will not help.
    InvalidRequest,
    /// The prompt does not fit the model's context window.
    ContextLength,
    /// The proxy's key for this provider is wrong (401).
    Authentication,
    /// The key may not use this model or feature (403).
    Permission,
    /// The model (or endpoint) does not exist (404).
    NotFound,
    /// A rate limit of the account (429): wait or go elsewhere.
    RateLimited,
    /// The provider as a whole is overloaded (Anthropic 529).
    Overloaded,
    /// A transient provider failure (500, 502, 503, 504, timeouts, broken responses).
    Server,
    /// Out of credits or over a spending limit: waiting will not help.
    Billing,
    /// Anything else (an unexpected status).
    Other,
}

impl ErrorKind {
    /// A short snake_case label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::ContextLength => "context_length_exceeded",
            Self::Authentication => "authentication",
            Self::Permission => "permission",
            Self::NotFound => "not_found",
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::Server => "server",
            Self::Billing => "billing",
            Self::Other => "other",
        }
    }

    /// Whether trying the same target again may succeed.
    pub fn retryable(self) -> bool {
        matches!(self, Self::RateLimited | Self::Overloaded | Self::Server)
    }

    /// Whether another target may succeed where this one failed: yes for
    /// transient failures and for problems of this target's configuration
    /// (key, permission, model, billing); no for problems of the request
    /// itself and for an unexpected status ([`Other`](Self::Other)), as the
    /// proxy treats an unknown 4xx. A context-length error falls back only to
    /// a target configured for it, which is the proxy's decision, so it says
    /// no here.
    pub fn fallback_ok(self) -> bool {
        !matches!(self, Self::InvalidRequest | Self::ContextLength | Self::Other)
    }

    /// OpenAI's `error.type` for this class.
    pub fn openai_type(self) -> &'static str {
        match self {
            Self::InvalidRequest | Self::ContextLength | Self::NotFound => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::Permission => "permission_error",
            Self::RateLimited => "rate_limit_error",
            Self::Overloaded | Self::Server => "server_error",
            Self::Billing => "insufficient_quota",
            Self::Other => "upstream_error",
        }
    }

    /// OpenAI's `error.code` where OpenAI has one that clients act on
    /// (`context_length_exceeded`, `rate_limit_exceeded`,
    /// `insufficient_quota`, `invalid_api_key`).
    pub fn openai_code(self) -> Option<&'static str> {
        match self {
            Self::ContextLength => Some("context_length_exceeded"),
            Self::RateLimited => Some("rate_limit_exceeded"),
            Self::Billing => Some("insufficient_quota"),
            Self::Authentication => Some("invalid_api_key"),
            _ => None,
        }
    }
}

/// Token counts in OpenAI's terms.
///
/// `prompt_tokens` includes `cached_tokens` and `cache_write_tokens`;
/// `completion_tokens` includes `reasoning_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenUsage {
    /// All input tokens, cached or not.
    pub prompt_tokens: u64,
    /// All output tokens, reasoning included.
    pub completion_tokens: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// Reasoning (thinking) tokens, when the provider breaks them out.
    pub reasoning_tokens: Option<u64>,
}

impl TokenUsage {
    /// `prompt_tokens + completion_tokens`.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// OpenAI's `usage` object. `prompt_tokens_details` is always present;
    /// `completion_tokens_details` only when reasoning tokens are known.
    pub fn to_openai(&self) -> Value {
        let mut usage = json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens(),
            "prompt_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "cache_write_tokens": self.cache_write_tokens,
            },
        });
        if let (Some(reasoning), Some(object)) = (self.reasoning_tokens, usage.as_object_mut()) {
            object.insert("completion_tokens_details".into(), json!({"reasoning_tokens": reasoning}));
        }
        usage
    }
}

/// The class of an error answer by its HTTP status alone, for bodies
/// without a provider's shape: 400/413/422 invalid request, 401, 402
/// billing, 403, 404, 429, 503 overloaded, 408/409/other 5xx server,
/// anything else other.
pub(crate) fn kind_of_status(status: u16) -> ErrorKind {
    match status {
        400 | 413 | 422 => ErrorKind::InvalidRequest,
        401 => ErrorKind::Authentication,
        402 => ErrorKind::Billing,
        403 => ErrorKind::Permission,
        404 => ErrorKind::NotFound,
        429 => ErrorKind::RateLimited,
        503 => ErrorKind::Overloaded,
        408 | 409 | 500..=599 => ErrorKind::Server,
        _ => ErrorKind::Other,
    }
}

/// An OpenAI `chat.completion` assistant message: `content` is the text when
/// the answer had any (else `null`), `tool_calls` only when there are some.
pub(crate) fn assistant_message(text: Option<String>, tool_calls: Vec<Value>) -> Value {
    let mut message = json!({
        "role": "assistant",
        "content": text.map_or(Value::Null, Value::String),
        "refusal": null,
    });
    if !tool_calls.is_empty()
        && let Some(object) = message.as_object_mut()
    {
        object.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    message
}

/// The message for an error body without the provider's shape:
/// `<provider> answered HTTP <status>` and the start of the body, whitespace
/// collapsed.
pub(crate) fn body_message(provider: &str, status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let snippet: String = text.chars().take(200).collect();
    if snippet.is_empty() {
        format!("{provider} answered HTTP {status}")
    } else {
        format!("{provider} answered HTTP {status}: {snippet}")
    }
}

/// An OpenAI-shaped stream that needs fixing chunk by chunk (Mistral's
/// finish reasons, Azure's filter-only chunks).
///
/// `[DONE]` and OpenAI-style error objects pass through; every other chunk
/// goes through the fix function, which rewrites it in place and says
/// whether to send it at all.
#[derive(Debug)]
pub struct ChunkFixer {
    provider: &'static str,
    fix: fn(&mut Value) -> Result<bool, TranslateError>,
    done: bool,
}

impl ChunkFixer {
    /// A fixer for `provider`'s stream (the name is used in messages).
    pub fn new(provider: &'static str, fix: fn(&mut Value) -> Result<bool, TranslateError>) -> Self {
        Self { provider, fix, done: false }
    }

    /// The chunk payloads to pass on for one `data:` payload.
    pub fn on_data(&mut self, data: &str) -> Result<Vec<String>, TranslateError> {
        if data == "[DONE]" {
            self.done = true;
            return Ok(vec![data.to_owned()]);
        }
        let mut chunk: Value = serde_json::from_str(data).map_err(|e| {
            TranslateError::InvalidResponse(format!("{} stream data is not valid JSON: {e}", self.provider))
        })?;
        if chunk.get("error").is_some() {
            // An OpenAI-style error object: the chat handler reports it.
            return Ok(vec![data.to_owned()]);
        }
        Ok(if (self.fix)(&mut chunk)? { vec![chunk.to_string()] } else { Vec::new() })
    }

    /// True once `[DONE]` arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// Seconds since the Unix epoch, for OpenAI's `created`.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A JSON value re-serialised compactly with object keys in the order they
/// were received.
///
/// `serde_json::Value` sorts keys (the workspace does not enable
/// `preserve_order`), so tool arguments that pass through a `Value` would
/// come out reordered. Deserialising into this type instead writes each
/// token as the parser meets it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct CompactJson(pub(crate) String);

impl<'de> Deserialize<'de> for CompactJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut out = String::new();
        deserializer.deserialize_any(JsonWriter(&mut out))?;
        Ok(Self(out))
    }
}

/// Writes the visited value into the string as compact JSON.
struct JsonWriter<'a>(&'a mut String);

impl JsonWriter<'_> {
    fn push_str_literal(&mut self, s: &str) {
        // Serialising a `&str` cannot fail.
        self.0.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

impl<'de> DeserializeSeed<'de> for JsonWriter<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonWriter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push_str(if v { "true" } else { "false" });
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        let _ = write!(self.0, "{v}");
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let _ = write!(self.0, "{v}");
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push_str(&serde_json::to_string(&v).map_err(E::custom)?);
        Ok(())
    }

    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<(), E> {
        self.push_str_literal(v);
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.push_str("null");
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push('[');
        let mut first = true;
        loop {
            let mark = self.0.len();
            if !first {
                self.0.push(',');
            }
            if seq.next_element_seed(JsonWriter(&mut *self.0))?.is_none() {
                self.0.truncate(mark);
                break;
            }
            first = false;
        }
        self.0.push(']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.0.push('{');
        let mut first = true;
        while let Some(key) = map.next_key::<String>()? {
            if !first {
                self.0.push(',');
            }
            first = false;
            self.push_str_literal(&key);
            self.0.push(':');
            map.next_value_seed(JsonWriter(&mut *self.0))?;
        }
        self.0.push('}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_json_keeps_key_order_and_drops_whitespace() {
        let raw = r#"{ "z": 1, "a": [true, null, -2, 1.5, "x\"y"], "m": {"b": {}, "a": []} }"#;
        let compact: CompactJson = serde_json::from_str(raw).unwrap();
        assert_eq!(compact.0, r#"{"z":1,"a":[true,null,-2,1.5,"x\"y"],"m":{"b":{},"a":[]}}"#);
    }

    #[test]
    fn token_usage_adds_reasoning_details_only_when_known() {
        let usage = TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 4,
            cache_write_tokens: 1,
            reasoning_tokens: None,
        };
        assert_eq!(
            usage.to_openai(),
            json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                   "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 1}})
        );
        let usage = TokenUsage { reasoning_tokens: Some(3), ..usage };
        assert_eq!(usage.to_openai()["completion_tokens_details"], json!({"reasoning_tokens": 3}));
    }

    #[test]
    fn translate_errors_expose_field_kind_and_gap() {
        let gap = TranslateError::unsupported("n", "`n` ...");
        assert_eq!(gap.field(), Some("n"));
        assert!(gap.is_provider_gap());
        assert_eq!(gap.kind(), ErrorKind::InvalidRequest);
        let broken = TranslateError::InvalidResponse("not json".into());
        assert_eq!(broken.field(), None);
        assert_eq!(broken.kind(), ErrorKind::Server);
        assert!(broken.kind().retryable());
    }
}
