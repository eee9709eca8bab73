//! Mistral (`POST /v1/chat/completions`): OpenAI-shaped, with a few rules of
//! its own that a plain pass-through would break on.
//!
//! - Only the fields Mistral's schema has are sent; `max_completion_tokens`
//!   becomes `max_tokens` and `seed` becomes `random_seed`; `user`,
//!   `logit_bias`, `stream_options` and other OpenAI-only fields are dropped.
//! - Tool-call ids must match `[a-zA-Z0-9]{9}`. Ids minted elsewhere
//!   (`call_…`, `toolu_…`) are replaced by a deterministic 9-character hash in
//!   both the assistant's `tool_calls` and the matching `tool` messages, so a
//!   conversation can move to Mistral after a fallback.
//! - `finish_reason: "model_length"` becomes `length`; `"error"` is an
//!   upstream error (a failed attempt before the stream commits, an error
//!   event after).
//! - Error bodies (`{"object":"error","message":…}`, `{"message":…}`,
//!   `{"detail":…}`) become OpenAI's error shape.

use serde_json::{Map, Value, json};

use super::{ErrorKind, TranslateError};

/// Request fields Mistral's chat schema accepts (after renaming).
const FIELDS: [&str; 22] = [
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "stream",
    "stop",
    "random_seed",
    "metadata",
    "response_format",
    "tools",
    "tool_choice",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "prediction",
    "parallel_tool_calls",
    "reasoning_effort",
    "prompt_mode",
    "guardrails",
    "prompt_cache_key",
    "safe_prompt",
];

/// The request body for Mistral's chat endpoint and upstream model `model`.
pub fn chat_to_mistral(body: &Map<String, Value>, model: &str) -> Value {
    let mut out = Map::new();
    for (key, value) in body {
        let key = match key.as_str() {
            "max_completion_tokens" => "max_tokens",
            "seed" => "random_seed",
            // `max_completion_tokens` wins when both are set.
            "max_tokens" if body.contains_key("max_completion_tokens") => continue,
            other => other,
        };
        if FIELDS.contains(&key) {
            out.insert(key.to_owned(), value.clone());
        }
    }
    out.insert("model".into(), Value::String(model.to_owned()));
    if let Some(Value::Array(messages)) = out.get_mut("messages") {
        for message in messages {
            rewrite_tool_ids(message);
        }
    }
    Value::Object(out)
}

fn rewrite_tool_ids(message: &mut Value) {
    if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
        for call in calls {
            if let Some(Value::String(id)) = call.get_mut("id") {
                *id = tool_id(id);
            }
        }
    }
    if let Some(Value::String(id)) = message.get_mut("tool_call_id") {
        *id = tool_id(id);
    }
}

/// A tool-call id Mistral accepts: valid ids are kept, any other becomes a
/// stable 9-character base-62 hash of it.
pub fn tool_id(id: &str) -> String {
    if id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return id.to_owned();
    }
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    // FNV-1a, 64 bits: 9 base-62 digits use 53.6 of them.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (0..9)
        .map(|_| {
            let digit = DIGITS[(hash % 62) as usize];
            hash /= 62;
            char::from(digit)
        })
        .collect()
}

/// Fixes one answer or stream chunk in place: `model_length` becomes
/// `length`; a choice that finished with `error` is an upstream error.
pub fn fix_finish_reasons(answer: &mut Value) -> Result<(), TranslateError> {
    let Some(Value::Array(choices)) = answer.get_mut("choices") else { return Ok(()) };
    for choice in choices {
        match choice.get("finish_reason").and_then(Value::as_str) {
            Some("model_length") => choice["finish_reason"] = Value::String("length".into()),
            Some("error") => {
                return Err(TranslateError::Upstream {
                    kind: ErrorKind::Server,
                    error_type: "error".into(),
                    message: "mistral ended the answer with finish_reason `error`".into(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// [`fix_finish_reasons`] as a [`ChunkFixer`](super::ChunkFixer) fix: every chunk is sent.
pub fn fix_chunk(chunk: &mut Value) -> Result<bool, TranslateError> {
    fix_finish_reasons(chunk).map(|()| true)
}

/// A Mistral error body in OpenAI's error shape, keeping Mistral's message.
pub fn to_openai_error(status: u16, body: &[u8]) -> Value {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = parsed
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| parsed.get("detail").map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_owned)))
        .unwrap_or_else(|| format!("mistral answered HTTP {status}: {}", String::from_utf8_lossy(body)));
    let kind = match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    let kind = parsed.get("type").and_then(Value::as_str).unwrap_or(kind);
    json!({"error": {"message": message, "type": kind, "param": parsed.get("param").cloned().unwrap_or(Value::Null),
        "code": parsed.get("code").cloned().unwrap_or(Value::Null)}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mistral_fields_are_sent_with_renames_and_foreign_tool_ids_hashed() {
        let body = json!({
            "model": "chat", "user": "u1", "logit_bias": {"1": 2}, "stream_options": {"include_usage": true},
            "max_completion_tokens": 50, "max_tokens": 10, "seed": 7, "stream": true,
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_Xa1b2C3d4E5f", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                    {"id": "abcDEF123", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_Xa1b2C3d4E5f", "content": "snow"},
                {"role": "tool", "tool_call_id": "abcDEF123", "content": "rain"}]});
        let sent = chat_to_mistral(body.as_object().unwrap(), "mistral-small-latest");
        let hashed = tool_id("call_Xa1b2C3d4E5f");
        assert_eq!(hashed.len(), 9);
        assert!(hashed.bytes().all(|b| b.is_ascii_alphanumeric()), "{hashed}");
        assert_eq!(
            sent,
            json!({
                "model": "mistral-small-latest", "max_tokens": 50, "random_seed": 7, "stream": true,
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": hashed, "type": "function", "function": {"name": "w", "arguments": "{}"}},
                        {"id": "abcDEF123", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": hashed, "content": "snow"},
                    {"role": "tool", "tool_call_id": "abcDEF123", "content": "rain"}]})
        );
        assert_eq!(tool_id("call_Xa1b2C3d4E5f"), hashed, "the same id always maps to the same hash");
        assert_ne!(tool_id("toolu_01A9xyz"), hashed);
    }

    #[test]
    fn model_length_becomes_length_and_error_becomes_an_upstream_error() {
        let mut answer = json!({"choices": [{"index": 0, "finish_reason": "model_length"}]});
        fix_finish_reasons(&mut answer).unwrap();
        assert_eq!(answer["choices"][0]["finish_reason"], "length");
        let mut broken = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]});
        assert!(matches!(fix_finish_reasons(&mut broken), Err(TranslateError::Upstream { .. })));
    }

    #[test]
    fn every_mistral_error_shape_becomes_an_openai_error() {
        let flat = br#"{"object":"error","message":"Tool call id was call_1 but must be a-z, A-Z, 0-9, with a length of 9.","type":"invalid_request_error","param":null,"code":null}"#;
        assert_eq!(
            to_openai_error(400, flat),
            json!({"error": {"message": "Tool call id was call_1 but must be a-z, A-Z, 0-9, with a length of 9.",
                "type": "invalid_request_error", "param": null, "code": null}})
        );
        assert_eq!(
            to_openai_error(401, br#"{"message":"Unauthorized","request_id":"r"}"#)["error"]["type"],
            "authentication_error"
        );
        assert_eq!(to_openai_error(401, br#"{"detail":"Unauthorized"}"#)["error"]["message"], "Unauthorized");
        let validation = to_openai_error(422, br#"{"detail":[{"loc":["body","messages"],"msg":"field required"}]}"#);
        assert!(validation["error"]["message"].as_str().unwrap().contains("field required"), "{validation}");
        assert!(to_openai_error(502, b"bad gateway")["error"]["message"].as_str().unwrap().contains("HTTP 502"));
    }
}
