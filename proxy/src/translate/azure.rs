//! Azure OpenAI: OpenAI's body and answers with Azure's URLs, content
//! filtering and error shapes (digest §2).
//!
//! - URLs (built by the request path): with `spec.azure.apiVersion` the
//!   deployment form `/openai/deployments/{deployment}/chat/completions
//!   ?api-version=...` (the target's `model` is the deployment name), without
//!   it the v1 form `/openai/v1/chat/completions` with the deployment name as
//!   the body's `model`. The body is the client's, `model` replaced.
//! - Streams: Azure's first chunk often has `"choices": []` and only
//!   `prompt_filter_results`, and trailing chunks can hold a choice without a
//!   `delta` (only `content_filter_results`/`content_filter_offsets`).
//!   [`fix_chunk`] drops choices without a `delta` and chunks left with no
//!   choice and no usage, so clients that read `choices[0]` never see them.
//!   Everything else (an output filtered with `finish_reason:
//!   "content_filter"`, Azure's extra fields) passes through.
//! - Errors ([`classify_error`], [`to_openai_error`]): Azure's
//!   `{"error":{"code":"429","message":...}}` (a string `code`, no `type`),
//!   the 400 `content_filter` with `innererror`, `DeploymentNotFound`, ...
//!   become OpenAI's error JSON.

use serde_json::{Value, json};

use super::{ErrorKind, TranslateError, body_message, kind_of_status};

/// Keeps one stream chunk clean for OpenAI clients: drops choices without
/// a `delta` and says whether anything is left worth sending (a choice or
/// usage).
pub fn fix_chunk(chunk: &mut Value) -> Result<bool, TranslateError> {
    if let Some(Value::Array(choices)) = chunk.get_mut("choices") {
        choices.retain(|choice| choice.get("delta").is_some_and(Value::is_object));
    }
    let has_choice = chunk.get("choices").and_then(Value::as_array).is_some_and(|c| !c.is_empty());
    let has_usage = chunk.get("usage").is_some_and(|u| !u.is_null());
    Ok(has_choice || has_usage)
}

/// The `error` object of an Azure error body.
fn error_object(body: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("error").filter(|e| e.is_object()).cloned()
}

/// A string field of `error`; Azure sends `code` as a string or a number.
fn text(error: &Value, key: &str) -> Option<String> {
    match error.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The seconds of a "retry after N seconds" in a 429 message.
fn retry_after_seconds(message: &str) -> Option<u64> {
    let lower = message.to_ascii_lowercase();
    let rest = &lower[lower.find("retry after ")? + "retry after ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Classifies an Azure OpenAI error answer (digest §2, §10.1).
///
/// `code` `context_length_exceeded` (or a message about the maximum context
/// length) → [`ErrorKind::ContextLength`]; `content_filter` or an
/// `innererror.code` `ResponsibleAIPolicyViolation` → a final
/// [`ErrorKind::InvalidRequest`]; a 429 whose message asks to retry after an
/// hour or more (the daily-quota case, "retry after 86400 seconds") or says
/// `insufficient_quota` → [`ErrorKind::Billing`] (fall back instead of
/// waiting); otherwise the status decides: 400/413/422 invalid request, 401
/// authentication, 403 permission, 404 (`DeploymentNotFound`) not found, 429
/// rate limited, 503 overloaded, 408/409/5xx server.
pub fn classify_error(status: u16, body: &[u8]) -> ErrorKind {
    let error = error_object(body).unwrap_or(Value::Null);
    let code = text(&error, "code").unwrap_or_default();
    let message = text(&error, "message").unwrap_or_default();
    let lower = message.to_ascii_lowercase();
    if code == "context_length_exceeded" || lower.contains("maximum context length") {
        return ErrorKind::ContextLength;
    }
    let inner = error.get("innererror").and_then(|i| text(i, "code")).unwrap_or_default();
    if code == "content_filter" || inner == "ResponsibleAIPolicyViolation" {
        return ErrorKind::InvalidRequest;
    }
    match status {
        429 if code == "insufficient_quota" || retry_after_seconds(&message).is_some_and(|s| s >= 3600) => {
            ErrorKind::Billing
        }
        status => kind_of_status(status),
    }
}

/// OpenAI's error JSON for an Azure error answer: Azure's message verbatim,
/// `type` from [`classify_error`], `code` OpenAI's where clients act on one
/// (`context_length_exceeded`, `insufficient_quota`, ...) and Azure's own
/// otherwise (`content_filter`, `DeploymentNotFound`; a bare status number is
/// dropped), `param` as Azure sent it, and Azure's `innererror` (the content
/// filter results) kept.
pub fn to_openai_error(status: u16, body: &[u8]) -> Value {
    let kind = classify_error(status, body);
    let error = error_object(body).unwrap_or(Value::Null);
    let message = text(&error, "message").unwrap_or_else(|| body_message("azure-openai", status, body));
    let azure_code = text(&error, "code").filter(|c| c.parse::<u16>().is_err());
    let code = match (kind, azure_code) {
        (ErrorKind::InvalidRequest | ErrorKind::NotFound | ErrorKind::Other, Some(code)) => Some(code),
        (kind, code) => kind.openai_code().map(str::to_owned).or(code),
    };
    let mut out = json!({"message": message, "type": kind.openai_type(),
        "param": error.get("param").cloned().unwrap_or(Value::Null), "code": code});
    if let (Some(inner), Some(out)) = (error.get("innererror"), out.as_object_mut()) {
        out.insert("innererror".into(), inner.clone());
    }
    json!({ "error": out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_filter_chunks_and_delta_less_choices_are_dropped() {
        let mut first = json!({"id": "", "object": "", "created": 0, "model": "", "choices": [],
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": false, "severity": "safe"}}}]});
        assert!(!fix_chunk(&mut first).unwrap());
        let mut trailing = json!({"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": null,
            "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 12},
            "content_filter_results": {"hate": {"filtered": false, "severity": "safe"}}}]});
        assert!(!fix_chunk(&mut trailing).unwrap());
        let mut content = json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "Hi"},
            "finish_reason": null, "content_filter_results": {}}]});
        assert!(fix_chunk(&mut content).unwrap());
        assert_eq!(content["choices"][0]["delta"]["content"], "Hi");
        let mut usage = json!({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 3}});
        assert!(fix_chunk(&mut usage).unwrap(), "the usage chunk stays");
    }

    #[test]
    fn azure_errors_are_classified_and_keep_their_message_and_code() {
        let limited = br#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}"#;
        assert_eq!(classify_error(429, limited), ErrorKind::RateLimited);
        let error = to_openai_error(429, limited);
        assert_eq!(error["error"]["type"], "rate_limit_error");
        assert_eq!(error["error"]["code"], "rate_limit_exceeded", "the bare status code is not a useful code");
        assert!(error["error"]["message"].as_str().unwrap().starts_with("Requests to the ChatCompletions_Create"));

        let daily = br#"{"error":{"code":"429","message":"Requests to the Embeddings_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry after 86400 seconds."}}"#;
        assert_eq!(classify_error(429, daily), ErrorKind::Billing);
        assert_eq!(to_openai_error(429, daily)["error"]["code"], "insufficient_quota");

        let filtered = br#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"}}}}}"#;
        assert_eq!(classify_error(400, filtered), ErrorKind::InvalidRequest);
        let error = to_openai_error(400, filtered);
        assert_eq!(error["error"]["code"], "content_filter");
        assert_eq!(error["error"]["param"], "prompt");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(error["error"]["innererror"]["content_filter_result"]["hate"]["filtered"], true);

        let context = br#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130001 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        assert_eq!(classify_error(400, context), ErrorKind::ContextLength);
        assert_eq!(to_openai_error(400, context)["error"]["code"], "context_length_exceeded");

        let missing = br#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."}}"#;
        assert_eq!(classify_error(404, missing), ErrorKind::NotFound);
        assert_eq!(to_openai_error(404, missing)["error"]["code"], "DeploymentNotFound");

        let denied = br#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}"#;
        assert_eq!(classify_error(401, denied), ErrorKind::Authentication);
        assert_eq!(to_openai_error(401, denied)["error"]["code"], "invalid_api_key");

        let html = b"<html><body>502 Bad Gateway</body></html>";
        assert_eq!(classify_error(502, html), ErrorKind::Server);
        assert!(to_openai_error(502, html)["error"]["message"].as_str().unwrap().contains("HTTP 502"));
        assert_eq!(classify_error(503, b""), ErrorKind::Overloaded);
    }
}
