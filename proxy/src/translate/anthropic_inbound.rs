//! Anthropic Messages as an inbound API: a client that speaks Anthropic's
//! `POST /v1/messages` is served by any target, through the proxy's OpenAI
//! chat path (digest §9.7, the reverse of [`super::anthropic`]).
//!
//! Three pure pieces, wired in by `crate::messages`:
//!
//! - [`messages_to_chat_request`]: the client's Anthropic request → an OpenAI
//!   chat request for the alias in `model`;
//! - [`chat_to_message`]: the OpenAI `chat.completion` the chat path answered
//!   → an Anthropic `message`;
//! - [`ChunkTranslator`]: OpenAI `chat.completion.chunk` data lines → the
//!   Anthropic SSE event sequence;
//!
//! plus [`error_type`] / [`error_body`] for Anthropic's error shape.
//!
//! # Request mapping decisions
//!
//! - `model` is the alias, unchanged; `max_tokens` (required, as Anthropic
//!   requires it) → `max_tokens`, not the digest's `max_completion_tokens`:
//!   every OpenAI-shaped server reads `max_tokens`, and the proxy already
//!   sends it to `openai` targets as `max_completion_tokens`.
//! - `system` (string or text blocks) → one leading `system` message (a
//!   string, or text parts when a block carries `cache_control`).
//! - User turns: `text` → text part; `image` with a `base64` source → an
//!   `image_url` data URL, with a `url` source → that URL; `document` with a
//!   base64 PDF → a `file` part with `file_data`, with a `text` source → a text
//!   part; other document sources are unsupported. `cache_control` on a block
//!   is copied onto the part (the convention [`super::anthropic`] reads back,
//!   so it survives a trip to an Anthropic target). `tool_result` blocks become
//!   `tool` messages, one per block in order, before the turn's other content;
//!   their content is text (images in tool results are unsupported, as OpenAI
//!   tool messages hold only text); `is_error: true` prefixes the text with
//!   `Error: `, as OpenAI has no such flag.
//! - Assistant turns: `text` blocks → `content` (a string, or text parts when a
//!   block carries `cache_control`); `tool_use` → `tool_calls` with the id
//!   unchanged and `arguments` = the `input` as JSON text; `thinking` and
//!   `redacted_thinking` are dropped (no provider-neutral replay exists).
//! - `tools` (custom tools: no `type`, or `type: "custom"`) → function tools
//!   with `parameters` = `input_schema`; Anthropic's server tools (`type` such
//!   as `web_search_20250305`) are unsupported. `tool_choice`: `auto` → `auto`,
//!   `any` → `required`, `tool` → the named function, `none` → `none`;
//!   `disable_parallel_tool_use: true` → `parallel_tool_calls: false`. Without
//!   tools, both are dropped (OpenAI rejects them).
//! - `stop_sequences` → `stop`; `temperature`, `top_p` pass; `top_k` is
//!   dropped (OpenAI rejects it); `metadata.user_id` → `safety_identifier`;
//!   `output_config.format` (`json_schema`) → `response_format` `json_schema`;
//!   `stream: true` → `stream` with `stream_options.include_usage`, so the
//!   final `message_delta` can carry the counts.
//! - Dropped: `thinking` and `output_config.effort` (OpenAI's
//!   `reasoning_effort` is rejected by non-reasoning models, and a thinking
//!   budget has no faithful equivalent), `service_tier`, `container`,
//!   `mcp_servers`, top-level `cache_control`, `inference_geo` and unknown
//!   fields.
//!
//! Request errors are [`TranslateError::InvalidRequest`] or
//! [`TranslateError::Unsupported`] whose field is a path into the Anthropic
//! request, such as `messages[1].content[0].source.media_type`.
//!
//! # Response mapping decisions
//!
//! - `id`: `chatcmpl-` is cut off and `msg_` put in front unless the rest
//!   already starts with it (so an Anthropic target's `msg_…` id comes back
//!   unchanged). `model` = the answering model.
//! - `content`: the text (a `refusal` counts as text) as one `text` block,
//!   then one `tool_use` block per tool call with `input` = the parsed
//!   arguments (arguments that are not a JSON object become `{}`).
//! - `stop_reason` ([`stop_reason`]): `stop` → `end_turn`, `length` →
//!   `max_tokens`, `tool_calls`/`function_call` → `tool_use`,
//!   `content_filter` → `refusal`. OpenAI does not say whether a stop
//!   sequence matched, so `stop_sequence` is always `null`.
//! - `usage`: `input_tokens` = prompt tokens minus cache reads and writes,
//!   `cache_read_input_tokens` = `prompt_tokens_details.cached_tokens`,
//!   `cache_creation_input_tokens` = `prompt_tokens_details.cache_write_tokens`,
//!   `output_tokens` = `completion_tokens` (the inverse of digest §9.6).

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::anthropic::IMAGE_TYPES;
use super::openai_request::{Part, content_parts, content_type_error, part_text};
use super::{TokenUsage, TranslateError};

// === request ===

/// Translates an Anthropic Messages request body into an OpenAI chat request
/// for the chat path (see the module docs for the mapping).
pub fn messages_to_chat_request(body: &[u8]) -> Result<Value, TranslateError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        TranslateError::invalid(
            "",
            format!("the request body is not valid JSON: {e}; send an Anthropic Messages request"),
        )
    })?;
    let Value::Object(body) = value else {
        return Err(TranslateError::invalid(
            "",
            "the request body must be a JSON object (an Anthropic Messages request)",
        ));
    };
    let field = |name: &str| body.get(name).filter(|v| !v.is_null());
    let mut out = Map::new();

    let model = field("model").and_then(Value::as_str).filter(|m| !m.is_empty()).ok_or_else(|| {
        TranslateError::invalid("model", "`model` is required: set it to one of the aliases listed by GET /v1/models")
    })?;
    out.insert("model".into(), Value::String(model.to_owned()));
    let max_tokens = field("max_tokens").and_then(Value::as_u64).ok_or_else(|| {
        TranslateError::invalid(
            "max_tokens",
            "`max_tokens` is required and must be a non-negative integer: the most tokens the answer may have, e.g. 1024",
        )
    })?;

    let mut messages = Vec::new();
    if let Some(system) = field("system") {
        messages.extend(system_message(system)?);
    }
    let turns = match field("messages") {
        Some(Value::Array(turns)) if !turns.is_empty() => turns,
        _ => {
            return Err(TranslateError::invalid(
                "messages",
                "`messages` must be a non-empty array of {\"role\": \"user\"|\"assistant\", \"content\": ...} turns",
            ));
        }
    };
    for (i, turn) in turns.iter().enumerate() {
        let path = format!("messages[{i}]");
        let role = turn.get("role").and_then(Value::as_str);
        match role {
            Some("user") => messages.extend(user_turn(turn.get("content"), &path)?),
            Some("assistant") => messages.push(assistant_turn(turn.get("content"), &path)?),
            Some(other) => {
                return Err(TranslateError::invalid(
                    format!("{path}.role"),
                    format!(
                        "`{path}.role` is `{other}`: anthropic turns are `user` or `assistant`; put system text in the top-level `system`"
                    ),
                ));
            }
            None => {
                return Err(TranslateError::invalid(
                    format!("{path}.role"),
                    format!("`{path}.role` is required: `user` or `assistant`"),
                ));
            }
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), Value::from(max_tokens));

    for name in ["temperature", "top_p"] {
        if let Some(value) = field(name) {
            if !value.is_number() {
                return Err(TranslateError::invalid(name, format!("`{name}` must be a number")));
            }
            out.insert(name.into(), value.clone());
        }
    }
    if let Some(stop) = field("stop_sequences") {
        let sequences = strings(stop, "stop_sequences")?;
        if !sequences.is_empty() {
            out.insert("stop".into(), Value::Array(sequences));
        }
    }
    match field("stream") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            out.insert("stream".into(), Value::Bool(true));
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Some(_) => return Err(TranslateError::invalid("stream", "`stream` must be true or false")),
    }
    if let Some(metadata) = field("metadata") {
        match metadata.get("user_id") {
            None | Some(Value::Null) => {}
            Some(Value::String(user)) => {
                out.insert("safety_identifier".into(), Value::String(user.clone()));
            }
            Some(_) => return Err(TranslateError::invalid("metadata.user_id", "`metadata.user_id` must be a string")),
        }
    }
    if let Some(format) = field("output_config").and_then(|c| c.get("format")).filter(|f| !f.is_null()) {
        out.insert("response_format".into(), response_format(format)?);
    }

    let tools = match field("tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => tools.iter().enumerate().map(|(k, t)| tool(t, k)).collect::<Result<_, _>>()?,
        Some(_) => return Err(TranslateError::invalid("tools", "`tools` must be an array of tool definitions")),
    };
    let choice = field("tool_choice").map(tool_choice).transpose()?;
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some((choice, parallel)) = choice {
            if let Some(choice) = choice {
                out.insert("tool_choice".into(), choice);
            }
            if !parallel {
                out.insert("parallel_tool_calls".into(), Value::Bool(false));
            }
        }
    }
    Ok(Value::Object(out))
}

fn strings(value: &Value, path: &str) -> Result<Vec<Value>, TranslateError> {
    let error = || TranslateError::invalid(path, format!("`{path}` must be an array of strings"));
    let list = value.as_array().ok_or_else(error)?;
    if list.iter().all(Value::is_string) { Ok(list.clone()) } else { Err(error()) }
}

/// The block list of a turn's `content`, with each block's path.
fn blocks<'a>(content: Option<&'a Value>, path: &str) -> Result<Vec<Part<'a>>, TranslateError> {
    match content {
        Some(Value::Array(blocks)) => content_parts(blocks, path),
        _ => Err(content_type_error(path)),
    }
}

fn block_text<'a>(block: &'a Map<String, Value>, block_path: &str) -> Result<&'a str, TranslateError> {
    part_text(block, "text", block_path)
}

/// An OpenAI part for a block, with the block's `cache_control` copied.
fn part(mut part: Value, block: &Map<String, Value>) -> Value {
    if let (Some(control @ Value::Object(_)), Some(object)) = (block.get("cache_control"), part.as_object_mut()) {
        object.insert("cache_control".into(), control.clone());
    }
    part
}

fn text_part(text: &str, block: &Map<String, Value>) -> Value {
    part(json!({"type": "text", "text": text}), block)
}

/// OpenAI content from parts: a plain string when it is one text part
/// without extras, otherwise the parts.
fn content_value(parts: Vec<Value>) -> Value {
    match parts.as_slice() {
        [only] if only.as_object().is_some_and(|p| p.len() == 2) && only["type"] == "text" => only["text"].clone(),
        _ => Value::Array(parts),
    }
}

fn system_message(system: &Value) -> Result<Option<Value>, TranslateError> {
    let content = match system {
        Value::String(text) if text.is_empty() => return Ok(None),
        Value::String(text) => Value::String(text.clone()),
        Value::Array(_) => {
            let mut parts = Vec::new();
            for (block_path, block, kind) in blocks(Some(system), "system")? {
                let block_path = block_path.replacen("system.content", "system", 1);
                if kind != "text" {
                    return Err(TranslateError::invalid(
                        format!("{block_path}.type"),
                        format!("`{block_path}.type` is `{kind}`, but `system` holds only text blocks"),
                    ));
                }
                parts.push(text_part(block_text(block, &block_path)?, block));
            }
            if parts.is_empty() {
                return Ok(None);
            }
            content_value(parts)
        }
        _ => {
            return Err(TranslateError::invalid("system", "`system` must be a string or an array of text blocks"));
        }
    };
    Ok(Some(json!({"role": "system", "content": content})))
}

/// A user turn: its tool results as `tool` messages, then a user message
/// with the rest (when there is any).
fn user_turn(content: Option<&Value>, path: &str) -> Result<Vec<Value>, TranslateError> {
    if let Some(Value::String(text)) = content {
        return Ok(vec![json!({"role": "user", "content": text})]);
    }
    let mut out = Vec::new();
    let mut parts = Vec::new();
    for (block_path, block, kind) in blocks(content, path)? {
        match kind {
            "text" => parts.push(text_part(block_text(block, &block_path)?, block)),
            "image" => parts.push(part(image_part(block, &block_path)?, block)),
            "document" => parts.push(part(document_part(block, &block_path)?, block)),
            "tool_result" => out.push(tool_message(block, &block_path)?),
            other => {
                return Err(TranslateError::invalid(
                    format!("{block_path}.type"),
                    format!(
                        "`{block_path}.type` is `{other}`: user content blocks are text, image, document or tool_result"
                    ),
                ));
            }
        }
    }
    if !parts.is_empty() || out.is_empty() {
        out.push(json!({"role": "user", "content": content_value(parts)}));
    }
    Ok(out)
}

fn source<'a>(
    block: &'a Map<String, Value>,
    block_path: &str,
) -> Result<(&'a Map<String, Value>, &'a str), TranslateError> {
    let source = block.get("source").and_then(Value::as_object).ok_or_else(|| {
        TranslateError::invalid(format!("{block_path}.source"), format!("`{block_path}.source` must be an object"))
    })?;
    let kind = source.get("type").and_then(Value::as_str).unwrap_or_default();
    Ok((source, kind))
}

fn source_str<'a>(source: &'a Map<String, Value>, key: &str, block_path: &str) -> Result<&'a str, TranslateError> {
    source.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(|| {
        TranslateError::invalid(
            format!("{block_path}.source.{key}"),
            format!("`{block_path}.source.{key}` is required and must be a string"),
        )
    })
}

fn image_part(block: &Map<String, Value>, block_path: &str) -> Result<Value, TranslateError> {
    let (source, kind) = source(block, block_path)?;
    let url = match kind {
        "base64" => {
            let media_type = source_str(source, "media_type", block_path)?;
            if !IMAGE_TYPES.contains(&media_type) {
                return Err(TranslateError::invalid(
                    format!("{block_path}.source.media_type"),
                    format!(
                        "`{block_path}.source.media_type` is `{media_type}`: use image/jpeg, image/png, image/gif or image/webp"
                    ),
                ));
            }
            format!("data:{media_type};base64,{}", source_str(source, "data", block_path)?)
        }
        "url" => source_str(source, "url", block_path)?.to_owned(),
        other => {
            return Err(TranslateError::unsupported(
                format!("{block_path}.source.type"),
                format!("`{block_path}.source.type` is `{other}`: send the image as a `base64` or `url` source"),
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn document_part(block: &Map<String, Value>, block_path: &str) -> Result<Value, TranslateError> {
    let (source, kind) = source(block, block_path)?;
    match kind {
        "base64" if source.get("media_type").and_then(Value::as_str) == Some("application/pdf") => {
            let data = source_str(source, "data", block_path)?;
            let mut file = json!({"file_data": format!("data:application/pdf;base64,{data}")});
            if let Some(title) = block.get("title").and_then(Value::as_str) {
                file["filename"] = Value::String(title.to_owned());
            }
            Ok(json!({"type": "file", "file": file}))
        }
        "text" => Ok(json!({"type": "text", "text": source_str(source, "data", block_path)?})),
        _ => Err(TranslateError::unsupported(
            format!("{block_path}.source"),
            format!(
                "`{block_path}.source` must be a base64 `application/pdf` or a `text` source: other documents cannot be sent to every provider"
            ),
        )),
    }
}

fn tool_message(block: &Map<String, Value>, block_path: &str) -> Result<Value, TranslateError> {
    let id = block.get("tool_use_id").and_then(Value::as_str).filter(|id| !id.is_empty()).ok_or_else(|| {
        TranslateError::invalid(
            format!("{block_path}.tool_use_id"),
            format!("`{block_path}.tool_use_id` is required: the `id` of the tool_use block this answers"),
        )
    })?;
    let mut text = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(content @ Value::Array(_)) => {
            let mut texts = Vec::new();
            for (inner_path, inner, kind) in blocks(Some(content), block_path)? {
                if kind != "text" {
                    return Err(TranslateError::unsupported(
                        format!("{inner_path}.type"),
                        format!(
                            "`{inner_path}.type` is `{kind}`: tool results can hold only text here, as not every provider takes images in tool results"
                        ),
                    ));
                }
                texts.push(block_text(inner, &inner_path)?);
            }
            texts.join("\n")
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{block_path}.content"),
                format!("`{block_path}.content` must be a string or an array of text blocks"),
            ));
        }
    };
    if block.get("is_error") == Some(&Value::Bool(true)) {
        text.insert_str(0, "Error: ");
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

fn assistant_turn(content: Option<&Value>, path: &str) -> Result<Value, TranslateError> {
    if let Some(Value::String(text)) = content {
        return Ok(json!({"role": "assistant", "content": text}));
    }
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (block_path, block, kind) in blocks(content, path)? {
        match kind {
            "text" => parts.push(text_part(block_text(block, &block_path)?, block)),
            "tool_use" => calls.push(tool_call(block, &block_path)?),
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(TranslateError::unsupported(
                    format!("{block_path}.type"),
                    format!(
                        "`{block_path}.type` is `{other}`: assistant turns replayed through the proxy hold text, tool_use and thinking blocks"
                    ),
                ));
            }
        }
    }
    let content = if parts.iter().all(|p| p.as_object().is_some_and(|p| p.len() == 2)) {
        let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        if texts.is_empty() { Value::Null } else { Value::String(texts.concat()) }
    } else {
        Value::Array(parts)
    };
    let mut message = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    Ok(message)
}

fn tool_call(block: &Map<String, Value>, block_path: &str) -> Result<Value, TranslateError> {
    let required = |key: &str| {
        block.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(|| {
            TranslateError::invalid(format!("{block_path}.{key}"), format!("`{block_path}.{key}` is required"))
        })
    };
    let (id, name) = (required("id")?, required("name")?);
    let input = match block.get("input") {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(input @ Value::Object(_)) => input.to_string(),
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{block_path}.input"),
                format!("`{block_path}.input` must be a JSON object"),
            ));
        }
    };
    Ok(json!({"id": id, "type": "function", "function": {"name": name, "arguments": input}}))
}

fn tool(tool: &Value, k: usize) -> Result<Value, TranslateError> {
    let path = format!("tools[{k}]");
    let tool = tool.as_object().ok_or_else(|| TranslateError::invalid(&path, format!("`{path}` must be an object")))?;
    match tool.get("type").and_then(Value::as_str) {
        None | Some("custom") => {}
        Some(other) => {
            return Err(TranslateError::unsupported(
                format!("{path}.type"),
                format!(
                    "`{path}.type` is `{other}`, an anthropic server tool that other providers cannot run: \
                     define it as a custom tool with `name` and `input_schema`"
                ),
            ));
        }
    }
    let name = tool
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| TranslateError::invalid(format!("{path}.name"), format!("`{path}.name` is required")))?;
    let schema = match tool.get("input_schema") {
        Some(schema @ Value::Object(_)) => schema.clone(),
        _ => {
            return Err(TranslateError::invalid(
                format!("{path}.input_schema"),
                format!("`{path}.input_schema` is required: a JSON Schema object of `type` \"object\""),
            ));
        }
    };
    let mut function = json!({"name": name, "parameters": schema});
    if let Some(description) = tool.get("description").and_then(Value::as_str) {
        function["description"] = Value::String(description.to_owned());
    }
    if let Some(strict @ Value::Bool(_)) = tool.get("strict") {
        function["strict"] = strict.clone();
    }
    Ok(json!({"type": "function", "function": function}))
}

/// OpenAI's `tool_choice` (none for `auto`'s default) and whether parallel
/// calls stay allowed.
fn tool_choice(choice: &Value) -> Result<(Option<Value>, bool), TranslateError> {
    let invalid = || {
        TranslateError::invalid(
            "tool_choice.type",
            "`tool_choice.type` must be auto, any, tool (with a `name`) or none",
        )
    };
    let parallel = choice.get("disable_parallel_tool_use") != Some(&Value::Bool(true));
    let openai = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| {
                TranslateError::invalid("tool_choice.name", "`tool_choice.name` is required with `type: tool`")
            })?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Err(invalid()),
    };
    Ok((Some(openai), parallel))
}

fn response_format(format: &Value) -> Result<Value, TranslateError> {
    match (format.get("type").and_then(Value::as_str), format.get("schema")) {
        (Some("json_schema"), Some(schema @ Value::Object(_))) => {
            Ok(json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}))
        }
        _ => Err(TranslateError::invalid(
            "output_config.format",
            "`output_config.format` must be {\"type\": \"json_schema\", \"schema\": {...}}",
        )),
    }
}

// === response ===

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// An Anthropic message id for an OpenAI completion id.
fn message_id(id: &str) -> String {
    let rest = id.strip_prefix("chatcmpl-").unwrap_or(id);
    if rest.starts_with("msg_") { rest.to_owned() } else { format!("msg_{rest}") }
}

/// OpenAI's `usage` object read back into [`TokenUsage`] (absent counts are 0).
fn token_usage(usage: &Value) -> TokenUsage {
    let count = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let details = usage.get("prompt_tokens_details");
    TokenUsage {
        prompt_tokens: count(usage.get("prompt_tokens")),
        completion_tokens: count(usage.get("completion_tokens")),
        cached_tokens: count(details.and_then(|d| d.get("cached_tokens"))),
        cache_write_tokens: count(details.and_then(|d| d.get("cache_write_tokens"))),
        reasoning_tokens: None,
    }
}

/// Anthropic's `usage` for token counts (`input_tokens` is the uncached part).
fn anthropic_usage(usage: &TokenUsage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens.saturating_sub(usage.cached_tokens + usage.cache_write_tokens),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    })
}

/// A tool call's `arguments` text as Anthropic's `input` object.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(object @ Value::Object(_)) => object,
        _ => json!({}),
    }
}

/// Translates the chat path's OpenAI `chat.completion` into an Anthropic
/// `message` (see the module docs). Fails with
/// [`TranslateError::InvalidResponse`] when the bytes are not a completion.
pub fn chat_to_message(response: &[u8]) -> Result<Value, TranslateError> {
    let completion: Value = serde_json::from_slice(response)
        .map_err(|e| TranslateError::InvalidResponse(format!("the chat completion is not valid JSON: {e}")))?;
    let choice = completion
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| TranslateError::InvalidResponse("the chat completion has no `choices[0]`".into()))?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    let text: String = ["content", "refusal"].iter().filter_map(|k| message.get(*k).and_then(Value::as_str)).collect();
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let function = call.get("function").unwrap_or(&Value::Null);
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").and_then(Value::as_str).unwrap_or_default(),
            "name": function.get("name").and_then(Value::as_str).unwrap_or_default(),
            "input": tool_input(function.get("arguments").and_then(Value::as_str).unwrap_or_default()),
        }));
    }
    let usage = token_usage(completion.get("usage").unwrap_or(&Value::Null));
    Ok(json!({
        "id": message_id(completion.get("id").and_then(Value::as_str).unwrap_or_default()),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model").and_then(Value::as_str).unwrap_or_default(),
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason").and_then(Value::as_str)),
        "stop_sequence": null,
        "usage": anthropic_usage(&usage),
    }))
}

// === stream ===

/// One Anthropic SSE event: its name and JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: &'static str,
    pub data: Value,
}

impl Event {
    fn new(name: &'static str, data: Value) -> Self {
        Self { name, data }
    }

    /// The event as SSE text: `event: <name>\ndata: <json>\n\n`.
    pub fn to_sse(&self) -> String {
        format!("event: {}\ndata: {}\n\n", self.name, self.data)
    }
}

/// The content block being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(u64),
    Tool(u64),
}

/// Turns the chat path's OpenAI chunks into Anthropic's event sequence.
///
/// Feed every SSE `data` payload in order to [`on_data`](Self::on_data) and
/// send the returned events. The sequence is Anthropic's: `message_start`
/// (with `usage` zero: OpenAI reports usage only at the end), one `ping`,
/// then per block `content_block_start` → deltas → `content_block_stop`
/// (text as `text_delta`s, each tool call as a `tool_use` block with
/// `input_json_delta`s), and at `[DONE]` a `message_delta` with the
/// `stop_reason` and the whole `usage` (input, cache and output counts), then
/// `message_stop`. A `{"error": ...}` chunk becomes an `error` event and ends
/// the sequence, without `message_stop`.
#[derive(Debug, Default)]
pub struct ChunkTranslator {
    started: bool,
    done: bool,
    open: Option<Open>,
    next_block: u64,
    /// OpenAI tool-call index → content block index.
    tools: HashMap<u64, u64>,
    stop_reason: Option<&'static str>,
    usage: TokenUsage,
}

impl ChunkTranslator {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once `message_stop` or an `error` event was returned.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Translates one OpenAI `data` payload. Payloads that are not JSON
    /// chunks are skipped; everything after the end is ignored.
    pub fn on_data(&mut self, data: &str) -> Vec<Event> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if data == "[DONE]" {
            self.finish(&mut out);
            return out;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else { return out };
        if let Some(error) = chunk.get("error") {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("the upstream failed mid-stream");
            out.push(self.error("api_error", message));
            return out;
        }
        if !self.started {
            self.start(&chunk, &mut out);
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = token_usage(usage);
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else { return out };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        for key in ["content", "refusal"] {
            if let Some(text) = delta.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                let index = match self.open {
                    Some(Open::Text(index)) => index,
                    _ => self.open_block(Open::Text, json!({"type": "text", "text": ""}), &mut out),
                };
                out.push(Event::new(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
                ));
            }
        }
        for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            self.tool_delta(call, &mut out);
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.close_block(&mut out);
            self.stop_reason = Some(stop_reason(Some(reason)));
        }
        out
    }

    /// An `error` event that ends the stream (also for a stream that broke
    /// before its end).
    pub fn error(&mut self, error_type: &str, message: &str) -> Event {
        self.done = true;
        Event::new("error", json!({"type": "error", "error": {"type": error_type, "message": message}}))
    }

    fn start(&mut self, chunk: &Value, out: &mut Vec<Event>) {
        self.started = true;
        let id = message_id(chunk.get("id").and_then(Value::as_str).unwrap_or_default());
        let model = chunk.get("model").and_then(Value::as_str).unwrap_or_default();
        out.push(Event::new(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": anthropic_usage(&TokenUsage::default()),
            }}),
        ));
        out.push(Event::new("ping", json!({"type": "ping"})));
    }

    fn open_block(&mut self, open: fn(u64) -> Open, block: Value, out: &mut Vec<Event>) -> u64 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some(open(index));
        out.push(Event::new(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn close_block(&mut self, out: &mut Vec<Event>) {
        if let Some(Open::Text(index) | Open::Tool(index)) = self.open.take() {
            out.push(Event::new("content_block_stop", json!({"type": "content_block_stop", "index": index})));
        }
    }

    fn tool_delta(&mut self, call: &Value, out: &mut Vec<Event>) {
        let tool = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = call.get("function").unwrap_or(&Value::Null);
        let index = match self.tools.get(&tool) {
            Some(index) => *index,
            None => {
                let block = json!({
                    "type": "tool_use",
                    "id": call.get("id").and_then(Value::as_str).unwrap_or_default(),
                    "name": function.get("name").and_then(Value::as_str).unwrap_or_default(),
                    "input": {},
                });
                let index = self.open_block(Open::Tool, block, out);
                self.tools.insert(tool, index);
                index
            }
        };
        if let Some(fragment) = function.get("arguments").and_then(Value::as_str).filter(|f| !f.is_empty()) {
            out.push(Event::new(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": fragment}}),
            ));
        }
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        if !self.started {
            self.start(&Value::Null, out);
        }
        self.close_block(out);
        out.push(Event::new(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                   "usage": anthropic_usage(&self.usage)}),
        ));
        out.push(Event::new("message_stop", json!({"type": "message_stop"})));
        self.done = true;
    }
}

// === errors ===

/// Anthropic's `error.type` for an HTTP status the proxy answers with.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// Anthropic's error body: `{"type":"error","error":{"type","message"},"request_id"}`.
pub fn error_body(status: u16, message: &str, request_id: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}, "request_id": request_id})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::anthropic::{AnthropicDefaults, StreamTranslator, chat_to_messages, messages_to_chat_at};

    fn request(body: Value) -> Result<Value, TranslateError> {
        messages_to_chat_request(body.to_string().as_bytes())
    }

    fn weather_tool() -> Value {
        json!({"name": "get_weather", "description": "Current weather for a city",
               "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}})
    }

    /// The digest's §3.1 Anthropic request.
    fn digest_request() -> Value {
        json!({
            "model": "claude-sonnet-5-5",
            "max_tokens": 1024,
            "system": "You are terse.",
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_01A9xyz", "name": "get_weather", "input": {"city": "Oslo"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A9xyz", "content": "-3C, snow"}
                ]}
            ],
            "tools": [weather_tool()],
            "tool_choice": {"type": "auto"},
            "stream": false
        })
    }

    // === request ===

    #[test]
    fn translates_the_digest_tool_conversation_into_openai_messages() {
        let chat = request(digest_request()).unwrap();
        assert_eq!(
            chat,
            json!({
                "model": "claude-sonnet-5-5",
                "max_tokens": 1024,
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Weather in Oslo?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "toolu_01A9xyz", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                    {"role": "tool", "tool_call_id": "toolu_01A9xyz", "content": "-3C, snow"}
                ],
                "tools": [{"type": "function", "function": {
                    "name": "get_weather", "description": "Current weather for a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
                "tool_choice": "auto"
            })
        );
    }

    #[test]
    fn the_outbound_translation_of_the_result_gives_back_the_anthropic_request() {
        // Anthropic in, OpenAI through the chat path, Anthropic out again (an
        // Anthropic target): the conversation arrives as the client sent it.
        let mut original = digest_request();
        original["messages"][0]["content"] = json!([
            {"type": "text", "text": "Weather in Oslo?", "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
        ]);
        original["stop_sequences"] = json!(["\n\nHuman:"]);
        original["temperature"] = json!(0.3);
        original["metadata"] = json!({"user_id": "u-42"});
        let chat = request(original.clone()).unwrap();
        let back =
            chat_to_messages(chat.as_object().unwrap(), "claude-sonnet-5-5", &AnthropicDefaults::default()).unwrap();
        for key in [
            "model",
            "max_tokens",
            "system",
            "messages",
            "tools",
            "tool_choice",
            "stop_sequences",
            "temperature",
            "metadata",
        ] {
            assert_eq!(back[key], original[key], "{key}: {back}");
        }
    }

    #[test]
    fn system_blocks_images_documents_and_cache_control_become_openai_parts() {
        let chat = request(json!({
            "model": "m", "max_tokens": 10,
            "system": [{"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                {"type": "document", "title": "spec.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain notes"}}
            ]}]
        }))
        .unwrap();
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "system", "content": [{"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x", "filename": "spec.pdf"}},
                    {"type": "text", "text": "plain notes"}
                ]}
            ])
        );
    }

    #[test]
    fn parallel_tool_results_become_tool_messages_in_order_before_the_turns_text() {
        let chat = request(json!({
            "model": "m", "max_tokens": 10,
            "messages": [
                {"role": "user", "content": "Weather in Oslo and Bergen?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "two calls", "signature": "sig"},
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "text", "text": "Here you go."},
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "-3C"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no such city", "is_error": true}
                ]}
            ]
        }))
        .unwrap();
        let messages = chat["messages"].as_array().unwrap();
        assert_eq!(messages[1]["content"], "Checking both.");
        assert_eq!(messages[1]["tool_calls"][1]["function"]["arguments"], "{}");
        assert_eq!(messages[2], json!({"role": "tool", "tool_call_id": "toolu_1", "content": "-3C"}));
        assert_eq!(messages[3], json!({"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such city"}));
        assert_eq!(messages[4], json!({"role": "user", "content": "Here you go."}));
        assert_eq!(messages.len(), 5);
    }

    #[test]
    fn maps_tool_choice_parallel_use_stop_sequences_stream_and_json_output() {
        let mut body = json!({
            "model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "tools": [weather_tool()], "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END", "STOP"], "stream": true, "top_k": 5, "top_p": 0.9,
            "thinking": {"type": "enabled", "budget_tokens": 2048}, "service_tier": "auto",
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}
        });
        let chat = request(body.clone()).unwrap();
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["parallel_tool_calls"], false);
        assert_eq!(chat["stop"], json!(["END", "STOP"]));
        assert_eq!(chat["stream"], true);
        assert_eq!(chat["stream_options"], json!({"include_usage": true}));
        assert_eq!(chat["top_p"], 0.9);
        assert_eq!(
            chat["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}}})
        );
        for dropped in ["top_k", "thinking", "service_tier", "output_config", "tool_choice_type"] {
            assert!(chat.get(dropped).is_none(), "{dropped} should be dropped: {chat}");
        }
        body["tool_choice"] = json!({"type": "tool", "name": "get_weather"});
        assert_eq!(
            request(body.clone()).unwrap()["tool_choice"],
            json!({"type": "function", "function": {"name": "get_weather"}})
        );
        assert!(request(body.clone()).unwrap().get("parallel_tool_calls").is_none());
        body["tool_choice"] = json!({"type": "none"});
        assert_eq!(request(body.clone()).unwrap()["tool_choice"], "none");
        // Without tools there is nothing to choose, and OpenAI rejects a choice.
        body.as_object_mut().unwrap().remove("tools");
        let chat = request(body).unwrap();
        assert!(chat.get("tool_choice").is_none() && chat.get("tools").is_none(), "{chat}");
    }

    #[test]
    fn bad_requests_name_the_field_at_fault() {
        let cases = [
            (json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}), "model"),
            (json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}), "max_tokens"),
            (json!({"model": "m", "max_tokens": -1, "messages": [{"role": "user", "content": "x"}]}), "max_tokens"),
            (json!({"model": "m", "max_tokens": 5, "messages": []}), "messages"),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 7}]}),
                "messages[0].content",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "x"}}]}]}),
                "messages[0].content[0].source.media_type",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": [
                    {"type": "tool_use", "name": "f", "input": {}}]}]}),
                "messages[0].content[0].id",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}]}]}),
                "messages[0].content[0].content[0].type",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                       "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                       "tools": [{"name": "f"}]}),
                "tools[0].input_schema",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stop_sequences": "END"}),
                "stop_sequences",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "system": [{"type": "image"}]}),
                "system[0].type",
            ),
        ];
        for (body, field) in cases {
            let error = request(body.clone()).unwrap_err();
            assert_eq!(error.field(), Some(field), "{body}: {error}");
            assert!(error.to_string().contains(&format!("`{field}`")), "{error}");
        }
        assert!(messages_to_chat_request(b"{not json").unwrap_err().to_string().contains("not valid JSON"));
    }

    // === response ===

    #[test]
    fn translates_a_completion_with_text_and_a_tool_call_into_a_message() {
        let completion = json!({
            "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking.",
                "tool_calls": [{"id": "call_9", "type": "function",
                                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
            "usage": {"prompt_tokens": 2168, "completion_tokens": 41, "total_tokens": 2209,
                      "prompt_tokens_details": {"cached_tokens": 2048}}
        });
        let message = chat_to_message(completion.to_string().as_bytes()).unwrap();
        assert_eq!(
            message,
            json!({
                "id": "msg_abc123", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {"city": "Oslo"}}
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 120, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2048,
                          "output_tokens": 41}
            })
        );
    }

    #[test]
    fn an_anthropic_answer_survives_the_trip_through_the_chat_shape() {
        // The digest's §3.2 message, as an Anthropic target answers it, goes
        // through the outbound translation and back.
        let original = json!({
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01A9xyz", "name": "get_weather", "input": {"city": "Oslo"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 120, "cache_creation_input_tokens": 7, "cache_read_input_tokens": 2048, "output_tokens": 41}
        });
        let chat = messages_to_chat_at(original.to_string().as_bytes(), "chat", 1).unwrap();
        assert_eq!(chat_to_message(chat.to_string().as_bytes()).unwrap(), original);
    }

    #[test]
    fn maps_every_finish_reason_and_reports_empty_and_broken_answers() {
        for (finish, stop) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("function_call", "tool_use"),
            ("content_filter", "refusal"),
            ("something_new", "end_turn"),
        ] {
            assert_eq!(stop_reason(Some(finish)), stop);
        }
        let refused = json!({"id": "x", "model": "m", "choices": [{"finish_reason": "content_filter",
            "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}}]});
        let message = chat_to_message(refused.to_string().as_bytes()).unwrap();
        assert_eq!(message["content"], json!([{"type": "text", "text": "I can't help with that."}]));
        assert_eq!(message["stop_reason"], "refusal");
        assert_eq!(message["usage"]["output_tokens"], 0);
        assert!(matches!(chat_to_message(b"{\"choices\": []}"), Err(TranslateError::InvalidResponse(_))));
        assert!(matches!(chat_to_message(b"<html>"), Err(TranslateError::InvalidResponse(_))));
    }

    // === stream ===

    fn run(chunks: &[Value]) -> Vec<Event> {
        let mut translator = ChunkTranslator::new();
        let mut events: Vec<Event> = chunks.iter().flat_map(|c| translator.on_data(&c.to_string())).collect();
        events.extend(translator.on_data("[DONE]"));
        assert!(translator.is_done());
        events
    }

    fn chunk(delta: Value, finish_reason: Option<&str>) -> Value {
        json!({"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], "usage": null})
    }

    #[test]
    fn streams_text_and_tool_calls_as_the_full_anthropic_event_sequence() {
        let events = run(&[
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "Checking"}), None),
            chunk(json!({"content": "."}), None),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                         "function": {"name": "get_weather", "arguments": ""}}]}),
                None,
            ),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}), None),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}), None),
            chunk(
                json!({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                         "function": {"name": "get_time", "arguments": "{}"}}]}),
                None,
            ),
            chunk(json!({}), Some("tool_calls")),
            json!({"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                   "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42,
                                            "prompt_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 5}}}),
        ]);
        let expected = vec![
            (
                "message_start",
                json!({"type": "message_start", "message": {
                "id": "msg_7", "type": "message", "role": "assistant", "model": "gpt-4o-mini", "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}}}),
            ),
            ("ping", json!({"type": "ping"})),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "."}}),
            ),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block":
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Oslo\"}"}}),
            ),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 1})),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 2, "content_block":
                {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
            ),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 2})),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 15, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 12}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        let got: Vec<(&str, Value)> = events.iter().map(|e| (e.name, e.data.clone())).collect();
        assert_eq!(got, expected);
        // Every event's `type` is its name, as Anthropic's SSE has it.
        assert!(events.iter().all(|e| e.data["type"] == e.name));
        assert_eq!(events[1].to_sse(), "event: ping\ndata: {\"type\":\"ping\"}\n\n");
    }

    #[test]
    fn an_anthropic_stream_survives_the_trip_through_openai_chunks() {
        // The digest's §3.3 stream, translated to OpenAI chunks by the outbound
        // translator and back by this one: the same blocks, deltas, stop
        // reason and usage (pings aside).
        let wire = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-5-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":120,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Checking.\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01A9xyz\",\"name\":\"get_weather\",\"input\":{}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Oslo\\\"}\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":41}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let mut parser = crate::sse::Parser::default();
        parser.push(wire.as_bytes());
        let original: Vec<crate::sse::Event> = std::iter::from_fn(|| parser.next_event()).collect();
        let mut outbound = StreamTranslator::with_created("chat", true, 1);
        let mut inbound = ChunkTranslator::new();
        let mut back = Vec::new();
        for event in &original {
            for data in outbound.on_event(&event.event, &event.data).unwrap() {
                back.extend(inbound.on_data(&data));
            }
        }
        let strip = |name: &str, data: &Value| {
            let mut data = data.clone();
            if name == "message_start" {
                data["message"]["usage"] = Value::Null;
            }
            if name == "message_delta" {
                data["usage"] = Value::Null;
            }
            (name.to_owned(), data)
        };
        let want: Vec<_> = original
            .iter()
            .filter(|e| e.event != "ping")
            .map(|e| strip(&e.event, &serde_json::from_str(&e.data).unwrap()))
            .collect();
        let got: Vec<_> = back.iter().filter(|e| e.name != "ping").map(|e| strip(e.name, &e.data)).collect();
        assert_eq!(got, want);
        let delta = back.iter().find(|e| e.name == "message_delta").unwrap();
        assert_eq!(
            delta.data["usage"],
            json!({"input_tokens": 120, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 41})
        );
    }

    #[test]
    fn a_mid_stream_error_chunk_becomes_an_error_event_and_ends_the_stream() {
        let mut translator = ChunkTranslator::new();
        let mut events = translator.on_data(&chunk(json!({"role": "assistant", "content": "Hel"}), None).to_string());
        events.extend(translator.on_data(
            &json!({"error": {"message": "the upstream closed the stream", "type": "upstream_error"}}).to_string(),
        ));
        events.extend(translator.on_data("[DONE]"));
        let names: Vec<&str> = events.iter().map(|e| e.name).collect();
        assert_eq!(names, ["message_start", "ping", "content_block_start", "content_block_delta", "error"]);
        assert_eq!(
            events[4].data,
            json!({"type": "error", "error": {"type": "api_error", "message": "the upstream closed the stream"}})
        );
        assert!(translator.is_done());
    }

    #[test]
    fn a_stream_without_finish_reason_or_usage_still_ends_properly() {
        let events = run(&[chunk(json!({"content": "hi"}), None)]);
        let names: Vec<&str> = events.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[5].data["delta"]["stop_reason"], "end_turn");
        assert_eq!(events[5].data["usage"]["output_tokens"], 0);
    }

    #[test]
    fn error_types_follow_the_status() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (405, "invalid_request_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
            (504, "timeout_error"),
        ] {
            assert_eq!(error_type(status), kind, "{status}");
        }
        assert_eq!(
            error_body(404, "unknown model `x`", "req_1"),
            json!({"type": "error", "error": {"type": "not_found_error", "message": "unknown model `x`"}, "request_id": "req_1"})
        );
    }
}
