//! The built-in `mock` provider: deterministic fake completions in OpenAI's
//! wire format, with configurable latency, speed and failure injection.
//!
//! The reply echoes the last user message, so a demo shows which target
//! answered what. Tokens are whitespace-separated words.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::Rng;
use routing::table::MockSettings;
use serde_json::{Value, json};

use crate::errors::UpstreamError;
use crate::sse;
use crate::upstream::{Call, Events, Reply};

/// Words in the reply when the request sets no `max_tokens`.
const REPLY_WORDS: usize = 24;

/// Fills the reply up to [`REPLY_WORDS`] after the echoed prompt.
const FILLER: &str = "-- served by the Switchyard mock provider, one word per token, no model involved.";

pub(crate) async fn answer(call: &Call<'_>) -> Result<Reply, UpstreamError> {
    let settings = call.provider.mock.clone().unwrap_or_default();
    if settings.failure_ppm > 0 && rand::rng().random_range(0..1_000_000) < settings.failure_ppm {
        tokio::time::sleep(Duration::from_millis(settings.latency_ms)).await;
        let body = json!({"error": {
            "message": "injected failure from the mock provider (`spec.mock.failureRate`)",
            "type": "server_error", "param": null, "code": null}});
        return Err(UpstreamError::Status {
            status: settings.failure_status,
            body: Bytes::from(body.to_string()),
            retry_after: None,
            should_retry: None,
        });
    }
    let completion = Completion::new(call);
    if call.stream {
        return Ok(Reply::Stream(Events::Mock(MockStream::new(completion, &settings))));
    }
    let generation = per_token(&settings).map_or(Duration::ZERO, |d| d * completion.words.len() as u32);
    tokio::time::sleep(Duration::from_millis(settings.latency_ms) + generation).await;
    Ok(Reply::Json(Bytes::from(completion.json().to_string())))
}

/// Dimensions of the mock's embedding vectors.
const EMBEDDING_DIMENSIONS: usize = 8;

/// `/v1/embeddings` from the mock: one deterministic unit vector per input
/// (the same text always gets the same vector), after the configured latency.
pub(crate) async fn embed(call: &Call<'_>) -> Result<Reply, UpstreamError> {
    let settings = call.provider.mock.clone().unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(settings.latency_ms)).await;
    let inputs: Vec<String> = match call.body.parsed::<Value>("input") {
        Some(Value::Array(items)) => {
            items.iter().map(|item| item.as_str().map_or_else(|| item.to_string(), str::to_owned)).collect()
        }
        Some(Value::String(text)) => vec![text],
        _ => Vec::new(),
    };
    let tokens: usize = inputs.iter().map(|text| text.split_whitespace().count().max(1)).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": unit_vector(text)}))
        .collect();
    let body = json!({"object": "list", "data": data, "model": call.target.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    Ok(Reply::Json(Bytes::from(body.to_string())))
}

fn unit_vector(text: &str) -> Vec<f64> {
    let mut hash = crate::plan::fnv1a(text.as_bytes());
    let raw: Vec<f64> = (0..EMBEDDING_DIMENSIONS)
        .map(|_| {
            hash = hash.rotate_left(13).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            (hash >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
        .collect();
    let norm = raw.iter().map(|v| v * v).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
    raw.iter().map(|v| v / norm).collect()
}

fn per_token(settings: &MockSettings) -> Option<Duration> {
    (settings.tokens_per_second > 0).then(|| Duration::from_secs(1) / settings.tokens_per_second)
}

struct Completion {
    id: String,
    created: u64,
    model: String,
    words: Vec<String>,
    prompt_tokens: usize,
    finish_reason: &'static str,
    include_usage: bool,
}

impl Completion {
    fn new(call: &Call<'_>) -> Self {
        let messages: Vec<Value> = call.body.parsed("messages").unwrap_or_default();
        let prompt_tokens = messages.iter().map(|m| text_of(m).split_whitespace().count()).sum();
        let last_user = messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .map(text_of)
            .unwrap_or_default();
        let mut words: Vec<String> = format!("This is a mock reply from {} to:", call.target.model)
            .split_whitespace()
            .map(str::to_owned)
            .chain(last_user.split_whitespace().map(str::to_owned))
            .chain(FILLER.split_whitespace().cycle().map(str::to_owned))
            .take(REPLY_WORDS)
            .collect();
        let max = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| call.body.parsed::<u64>(k))
            .and_then(|m| usize::try_from(m).ok());
        let mut finish_reason = "stop";
        if let Some(max) = max.filter(|m| *m < words.len()) {
            words.truncate(max);
            finish_reason = "length";
        }
        let include_usage = call
            .body
            .parsed::<Value>("stream_options")
            .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
            .unwrap_or(false);
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let id = format!("chatcmpl-mock{:016x}", crate::plan::fnv1a(last_user.as_bytes()) ^ created);
        Self { id, created, model: call.target.model.clone(), words, prompt_tokens, finish_reason, include_usage }
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.words.len(),
            "total_tokens": self.prompt_tokens + self.words.len(),
        })
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0,
                "message": {"role": "assistant", "content": self.words.join(" "), "refusal": null},
                "logprobs": null, "finish_reason": self.finish_reason}],
            "usage": self.usage(),
            "system_fingerprint": "fp_switchyard_mock",
        })
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        let mut chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "system_fingerprint": "fp_switchyard_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk.to_string()
    }
}

fn text_of(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

/// A streamed mock reply: role chunk at once, content after the latency,
/// then one word per `1/tokensPerSecond`.
pub struct MockStream {
    events: VecDeque<(Duration, String)>,
}

impl MockStream {
    fn new(completion: Completion, settings: &MockSettings) -> Self {
        let gap = per_token(settings).unwrap_or(Duration::ZERO);
        let mut events = VecDeque::new();
        events.push_back((Duration::ZERO, completion.chunk(json!({"role": "assistant", "content": ""}), None)));
        for (i, word) in completion.words.iter().enumerate() {
            let text = if i == 0 { word.clone() } else { format!(" {word}") };
            let delay = if i == 0 { Duration::from_millis(settings.latency_ms) } else { gap };
            events.push_back((delay, completion.chunk(json!({"content": text}), None)));
        }
        events.push_back((Duration::ZERO, completion.chunk(json!({}), Some(completion.finish_reason))));
        if completion.include_usage {
            let mut last = json!({
                "id": completion.id, "object": "chat.completion.chunk", "created": completion.created,
                "model": completion.model, "choices": [], "usage": completion.usage()});
            if let Some(obj) = last.as_object_mut() {
                obj.insert("system_fingerprint".into(), Value::String("fp_switchyard_mock".into()));
            }
            events.push_back((Duration::ZERO, last.to_string()));
        }
        events.push_back((Duration::ZERO, "[DONE]".to_owned()));
        Self { events }
    }

    pub async fn next(&mut self) -> Option<sse::Event> {
        let (delay, data) = self.events.pop_front()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some(sse::Event { event: String::new(), data })
    }
}
