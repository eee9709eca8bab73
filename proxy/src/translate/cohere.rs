//! OpenAI chat completions ⇄ Cohere v2 chat (`POST /v2/chat`), and OpenAI
//! embeddings ⇄ Cohere v2 embed (`POST /v2/embed`) (digest §5).
//!
//! - [`chat_to_cohere`]: the client's OpenAI request → Cohere's body;
//! - [`cohere_to_chat`]: Cohere's JSON answer → OpenAI `chat.completion`;
//! - [`CohereStreamTranslator`]: Cohere's typed SSE events → OpenAI chunks;
//! - [`classify_error`] / [`to_openai_error`]: Cohere's error answers;
//! - [`embeddings_to_cohere`] / [`cohere_embeddings_to_openai`]: embed.
//!
//! # Request mapping decisions
//!
//! - **Messages**: `system` and `developer` → `system`; `user` → `user`
//!   (a string, or parts: `text` → `{type:"text"}`, `image_url` →
//!   `{type:"image_url", image_url:{url[, detail]}}`; audio and files are
//!   Unsupported); `assistant` → `assistant` with `content` as a string and
//!   `tool_calls` as OpenAI's (ids kept: Cohere takes any string); an
//!   assistant's text next to tool calls goes in `tool_plan`, as Cohere's own
//!   answers carry it; `tool` → `tool {tool_call_id, content}`. The texts of
//!   a content array are joined without a separator. An assistant message
//!   with neither text nor calls is left out. The deprecated `function` role
//!   is Unsupported.
//! - **Tools**: `[{type:"function", function:{name, description,
//!   parameters}}]` as OpenAI's (`strict` dropped). `tool_choice`: `auto` →
//!   omitted, `none` → `NONE`, `required` → `REQUIRED`, a named function →
//!   `REQUIRED` with `tools` cut to that function (Cohere cannot name one);
//!   dropped without tools. `parallel_tool_calls` is dropped.
//! - **Sampling and limits**: `temperature`, `seed`, `frequency_penalty`,
//!   `presence_penalty` unchanged; `top_p` → `p`, vendor `top_k` → `k`;
//!   `max_completion_tokens` ?? `max_tokens` → `max_tokens`; `stop` →
//!   `stop_sequences`; `logprobs` (bool) kept. `n > 1` is Unsupported.
//! - **`response_format`**: `text` → `{type:"text"}`, `json_object` →
//!   `{type:"json_object"}`, `json_schema` → `{type:"json_object",
//!   json_schema: <schema>}`.
//! - **Dropped**: `user`, `stream_options`, `metadata`, `store`,
//!   `logit_bias`, `top_logprobs`, `service_tier`, `reasoning_effort`,
//!   unknown fields. `stream` is set by the request path.
//!
//! # Response mapping decisions
//!
//! - `id` = `"chatcmpl-" + id`; `created` = gateway clock; `model` = the
//!   requested model (Cohere's answer does not name it).
//! - `content` = the `text` items of `message.content` joined (`thinking`
//!   items are left out); when there are none but tool calls and a
//!   `tool_plan`, the plan is the content. `tool_calls` as sent.
//! - `finish_reason` ([`finish_reason`], digest §9.5): `COMPLETE` and
//!   `STOP_SEQUENCE` → `stop` (`tool_calls` when the answer has tool calls),
//!   `MAX_TOKENS` → `length`, `TOOL_CALL` → `tool_calls`; `ERROR` and
//!   `TIMEOUT` are an upstream error (retryable), not an answer.
//! - `usage` (digest §9.6): `prompt_tokens` / `completion_tokens` from
//!   `billed_units` (else `tokens`), `cached_tokens` from `cached_tokens`.

use serde_json::{Map, Value, json};

use super::embeddings::{self, EmbeddingsRequest};
use super::openai_request::{
    Fields, MessageRole, ResponseFormat, chat_message, content_parts, content_type_error, part_text, response_format,
    stop_sequences, tool_call,
};
use super::{ErrorKind, TokenUsage, TranslateError, body_message, kind_of_status, unix_now};

// === request ===

/// Translates an OpenAI chat request into a Cohere v2 chat body for
/// `model`. The mapping is listed in the module docs; errors name the
/// OpenAI field at fault.
pub fn chat_to_cohere(body: &Map<String, Value>, model: &str) -> Result<Value, TranslateError> {
    let fields = Fields { body, dropped: &[] };
    let messages = match body.get("messages") {
        Some(Value::Array(messages)) => messages,
        _ => return Err(TranslateError::invalid("messages", "`messages` must be an array of chat messages")),
    };
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let translated = messages
        .iter()
        .enumerate()
        .map(|(i, m)| message(m, &format!("messages[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    out.insert("messages".into(), Value::Array(translated.into_iter().flatten().collect()));

    let mut tools = match fields.get("tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => tools.iter().enumerate().map(|(k, t)| tool(t, k)).collect::<Result<_, _>>()?,
        Some(_) => return Err(TranslateError::invalid("tools", "`tools` must be an array of function tools")),
    };
    if !tools.is_empty() {
        match fields.get("tool_choice") {
            None => {}
            Some(Value::String(choice)) => match choice.as_str() {
                "auto" => {}
                "none" => {
                    out.insert("tool_choice".into(), json!("NONE"));
                }
                "required" => {
                    out.insert("tool_choice".into(), json!("REQUIRED"));
                }
                other => {
                    return Err(TranslateError::invalid(
                        "tool_choice",
                        format!("`tool_choice` is `{other}`: use auto, none, required or a named function"),
                    ));
                }
            },
            Some(choice) => {
                let name = choice.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| {
                    TranslateError::invalid(
                        "tool_choice.function.name",
                        "`tool_choice.function.name` is required for a named tool choice",
                    )
                })?;
                tools.retain(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name));
                if tools.is_empty() {
                    return Err(TranslateError::invalid(
                        "tool_choice.function.name",
                        format!("`tool_choice.function.name` is `{name}`, which is not one of `tools`"),
                    ));
                }
                out.insert("tool_choice".into(), json!("REQUIRED"));
            }
        }
        out.insert("tools".into(), Value::Array(tools));
    }

    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "p"),
        ("top_k", "k"),
        ("frequency_penalty", "frequency_penalty"),
        ("presence_penalty", "presence_penalty"),
        ("seed", "seed"),
    ] {
        if let Some(value) = fields.get(from) {
            if !value.is_number() {
                return Err(TranslateError::invalid(from, format!("`{from}` must be a number")));
            }
            out.insert(to.into(), value.clone());
        }
    }
    if let Some((name, value)) = fields
        .get("max_completion_tokens")
        .map(|v| ("max_completion_tokens", v))
        .or_else(|| fields.get("max_tokens").map(|v| ("max_tokens", v)))
    {
        let max = value.as_u64().ok_or_else(|| {
            TranslateError::invalid(name, format!("`{name}` must be a non-negative integer number of tokens"))
        })?;
        out.insert("max_tokens".into(), json!(max));
    }
    if let Some(stop) = fields.get("stop") {
        let sequences = stop_sequences(stop)?;
        if !sequences.is_empty() {
            out.insert("stop_sequences".into(), Value::Array(sequences));
        }
    }
    if let Some(n) = fields.get("n")
        && n.as_u64() != Some(1)
    {
        return Err(TranslateError::unsupported(
            "n",
            "`n` asks for several choices, but cohere returns one: remove `n` or set it to 1",
        ));
    }
    if let Some(logprobs) = fields.get("logprobs") {
        out.insert("logprobs".into(), json!(logprobs.as_bool().unwrap_or(false)));
    }
    if let Some(format) = fields.get("response_format") {
        let format = match response_format(format)? {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema(schema) => json!({"type": "json_object", "json_schema": schema}),
        };
        out.insert("response_format".into(), format);
    }
    Ok(Value::Object(out))
}

/// One OpenAI message as a Cohere message (`None`: nothing to send).
fn message(message: &Value, path: &str) -> Result<Option<Value>, TranslateError> {
    let (message, role) = chat_message(message, path, "cohere")?;
    let content = message.get("content");
    Ok(Some(match role {
        MessageRole::System => json!({"role": "system", "content": joined_text(content, path, "system")?}),
        MessageRole::User => json!({"role": "user", "content": user_content(content, path)?}),
        MessageRole::Assistant => return assistant(message, path),
        MessageRole::Tool => {
            let id =
                message.get("tool_call_id").and_then(Value::as_str).filter(|id| !id.is_empty()).ok_or_else(|| {
                    TranslateError::invalid(
                        format!("{path}.tool_call_id"),
                        format!("`{path}.tool_call_id` is required: send the id of the call this result answers"),
                    )
                })?;
            json!({"role": "tool", "tool_call_id": id, "content": joined_text(content, path, "tool")?})
        }
    }))
}

/// The text of a content that may hold only text parts (and, for the
/// assistant, `refusal` parts), joined.
fn joined_text(content: Option<&Value>, path: &str, who: &str) -> Result<String, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (part_path, part, kind) in content_parts(parts, path)? {
                match kind {
                    "text" => text.push_str(part_text(part, "text", &part_path)?),
                    "refusal" if who == "assistant" => text.push_str(part_text(part, "refusal", &part_path)?),
                    other => {
                        return Err(TranslateError::invalid(
                            format!("{part_path}.type"),
                            format!("`{part_path}.type` is `{other}`, but {who} messages hold only text parts"),
                        ));
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(content_type_error(path)),
    }
}

fn user_content(content: Option<&Value>, path: &str) -> Result<Value, TranslateError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(json!("")),
        Some(Value::String(text)) => return Ok(json!(text)),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(content_type_error(path)),
    };
    let mut out = Vec::new();
    for (part_path, part, kind) in content_parts(parts, path)? {
        match kind {
            "text" => out.push(json!({"type": "text", "text": part_text(part, "text", &part_path)?})),
            "image_url" => {
                let mut image = Map::new();
                match part.get("image_url") {
                    Some(Value::String(url)) => {
                        image.insert("url".into(), json!(url));
                    }
                    Some(Value::Object(given)) if given.get("url").is_some_and(Value::is_string) => {
                        for key in ["url", "detail"] {
                            if let Some(value) = given.get(key).filter(|v| !v.is_null()) {
                                image.insert(key.into(), value.clone());
                            }
                        }
                    }
                    _ => {
                        return Err(TranslateError::invalid(
                            format!("{part_path}.image_url.url"),
                            format!("`{part_path}.image_url.url` must be an image URL or a base64 data URL"),
                        ));
                    }
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            other => {
                return Err(TranslateError::unsupported(
                    format!("{part_path}.type"),
                    format!("`{part_path}.type` is `{other}`: cohere takes only text and image_url parts"),
                ));
            }
        }
    }
    Ok(Value::Array(out))
}

fn assistant(message: &Map<String, Value>, path: &str) -> Result<Option<Value>, TranslateError> {
    let mut text = joined_text(message.get("content"), path, "assistant")?;
    if let Some(Value::String(refusal)) = message.get("refusal") {
        text.push_str(refusal);
    }
    if message.get("function_call").is_some_and(|f| !f.is_null()) {
        return Err(TranslateError::unsupported(
            format!("{path}.function_call"),
            format!("`{path}.function_call` is deprecated and cohere cannot replay it: use `tool_calls`"),
        ));
    }
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls
            .iter()
            .enumerate()
            .map(|(j, call)| {
                let call_path = format!("{path}.tool_calls[{j}]");
                let parsed = tool_call(call, &call_path, "cohere")?;
                // The arguments as the client sent them (key order kept); an object is encoded.
                let arguments = match call.pointer("/function/arguments") {
                    Some(Value::String(text)) if !text.trim().is_empty() => text.clone(),
                    _ => parsed.arguments.to_string(),
                };
                Ok(json!({"id": parsed.id, "type": "function",
                    "function": {"name": parsed.name, "arguments": arguments}}))
            })
            .collect::<Result<Vec<_>, TranslateError>>()?,
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.tool_calls"),
                format!("`{path}.tool_calls` must be an array of tool calls"),
            ));
        }
    };
    Ok(match (text.is_empty(), calls.is_empty()) {
        (true, true) => None,
        (false, true) => Some(json!({"role": "assistant", "content": text})),
        (true, false) => Some(json!({"role": "assistant", "tool_calls": calls})),
        (false, false) => Some(json!({"role": "assistant", "tool_plan": text, "tool_calls": calls})),
    })
}

fn tool(tool: &Value, k: usize) -> Result<Value, TranslateError> {
    let path = format!("tools[{k}]");
    let kind = tool.get("type").and_then(Value::as_str).unwrap_or("function");
    if kind != "function" {
        return Err(TranslateError::unsupported(
            format!("{path}.type"),
            format!("`{path}.type` is `{kind}`; cohere takes only `function` tools"),
        ));
    }
    let function = tool.get("function").and_then(Value::as_object);
    let name =
        function.and_then(|f| f.get("name")).and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| {
            TranslateError::invalid(format!("{path}.function.name"), format!("`{path}.function.name` is required"))
        })?;
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    for key in ["description", "parameters"] {
        if let Some(value) = function.and_then(|f| f.get(key)).filter(|v| !v.is_null()) {
            out.insert(key.into(), value.clone());
        }
    }
    Ok(json!({"type": "function", "function": out}))
}

// === response ===

/// OpenAI's `finish_reason` for a Cohere `finish_reason`, or the upstream
/// error that `ERROR` and `TIMEOUT` mean.
pub fn finish_reason(reason: Option<&str>, saw_tool_call: bool) -> Result<&'static str, TranslateError> {
    Ok(match reason {
        Some("MAX_TOKENS") => "length",
        Some("TOOL_CALL") => "tool_calls",
        Some(reason @ ("ERROR" | "TIMEOUT")) => {
            return Err(TranslateError::Upstream {
                kind: ErrorKind::Server,
                error_type: reason.to_owned(),
                message: format!("cohere ended the answer with finish_reason `{reason}`"),
            });
        }
        _ if saw_tool_call => "tool_calls",
        _ => "stop",
    })
}

/// [`TokenUsage`] of a Cohere `usage` object (digest §9.6).
fn token_usage(usage: Option<&Value>) -> TokenUsage {
    let count =
        |section: &str, key: &str| usage.and_then(|u| u.get(section)).and_then(|s| s.get(key)).and_then(Value::as_u64);
    let either = |key: &str| count("billed_units", key).or_else(|| count("tokens", key)).unwrap_or(0);
    TokenUsage {
        prompt_tokens: either("input_tokens"),
        completion_tokens: either("output_tokens"),
        cached_tokens: usage.and_then(|u| u.get("cached_tokens")).and_then(Value::as_u64).unwrap_or(0),
        cache_write_tokens: 0,
        reasoning_tokens: None,
    }
}

/// Translates Cohere's non-streaming chat answer into an OpenAI
/// `chat.completion` named `model`, with `created` from the gateway clock.
pub fn cohere_to_chat(answer: &[u8], model: &str) -> Result<Value, TranslateError> {
    cohere_to_chat_at(answer, model, unix_now())
}

/// [`cohere_to_chat`] with a given `created` timestamp (Unix seconds).
pub fn cohere_to_chat_at(answer: &[u8], model: &str, created: u64) -> Result<Value, TranslateError> {
    let answer: Value = serde_json::from_slice(answer)
        .map_err(|e| TranslateError::InvalidResponse(format!("cohere's answer is not JSON: {e}")))?;
    let message = answer
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| TranslateError::InvalidResponse("cohere's answer has no `message` object".into()))?;
    let mut text = String::new();
    let mut saw_text = false;
    for item in message.get("content").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        if item.get("type").and_then(Value::as_str) == Some("text")
            && let Some(part) = item.get("text").and_then(Value::as_str)
        {
            text.push_str(part);
            saw_text = true;
        }
    }
    let calls: Vec<Value> = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| calls.iter().map(openai_tool_call).collect())
        .unwrap_or_default();
    if !saw_text
        && !calls.is_empty()
        && let Some(plan) = message.get("tool_plan").and_then(Value::as_str).filter(|p| !p.is_empty())
    {
        text.push_str(plan);
        saw_text = true;
    }
    let reason = finish_reason(answer.get("finish_reason").and_then(Value::as_str), !calls.is_empty())?;
    let out_message = super::assistant_message(saw_text.then_some(text), calls);
    let id = answer.get("id").and_then(Value::as_str).unwrap_or_default();
    Ok(json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": out_message, "logprobs": null, "finish_reason": reason}],
        "usage": token_usage(answer.get("usage")).to_openai(),
    }))
}

/// An OpenAI tool call for a Cohere one (the same shape; `arguments` made a string).
fn openai_tool_call(call: &Value) -> Value {
    let arguments = match call.pointer("/function/arguments") {
        Some(Value::String(text)) => text.clone(),
        None | Some(Value::Null) => "{}".to_owned(),
        Some(other) => other.to_string(),
    };
    json!({
        "id": call.get("id").and_then(Value::as_str).unwrap_or_default(),
        "type": "function",
        "function": {"name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default(),
                     "arguments": arguments},
    })
}

// === stream ===

/// Turns Cohere's streamed chat events into OpenAI chunks (digest §5).
///
/// Feed every SSE event (its `event:` name, possibly empty, and its data)
/// to [`on_event`](Self::on_event); the event's `type` field decides, the
/// name is the fallback.
///
/// | Cohere event | emitted |
/// |---|---|
/// | `message-start` | role chunk `{role:"assistant", content:""}` (the id becomes `chatcmpl-<id>`) |
/// | `content-delta` with text | `{content: text}` (`thinking` deltas are left out) |
/// | `tool-plan-delta` | `{content: plan}` (as in [`cohere_to_chat`]) |
/// | `tool-call-start` | `tool_calls[{index:k, id, type:"function", function:{name, arguments}}]`, `k` counting calls from 0 |
/// | `tool-call-delta` | `tool_calls[{index:k, function:{arguments: fragment}}]` |
/// | `message-end` | `delta:{}` with [`finish_reason`], the usage chunk (`choices: []`) when `include_usage`, `[DONE]`; `ERROR`/`TIMEOUT` or an `error` is `Err(TranslateError::Upstream)` |
/// | `content-start`, `content-end`, `tool-call-end`, `citation-*`, `debug`, `[DONE]`, unknown | nothing |
#[derive(Debug)]
pub struct CohereStreamTranslator {
    include_usage: bool,
    created: u64,
    id: String,
    model: String,
    started: bool,
    done: bool,
    /// Cohere's index of each tool call seen, in order (OpenAI's index is the position).
    calls: Vec<u64>,
}

impl CohereStreamTranslator {
    /// A translator for one streamed answer named `model`; `include_usage`
    /// adds OpenAI's usage chunk at the end.
    pub fn new(model: &str, include_usage: bool) -> Self {
        Self::with_created(model, include_usage, unix_now())
    }

    /// [`new`](Self::new) with a given `created` timestamp (Unix seconds).
    pub fn with_created(model: &str, include_usage: bool, created: u64) -> Self {
        Self {
            include_usage,
            created,
            id: "chatcmpl-".to_owned(),
            model: model.to_owned(),
            started: false,
            done: false,
            calls: Vec::new(),
        }
    }

    /// Translates one SSE event into zero or more OpenAI chunk payloads.
    pub fn on_event(&mut self, name: &str, data: &str) -> Result<Vec<String>, TranslateError> {
        if self.done || data == "[DONE]" {
            return Ok(Vec::new());
        }
        let event: Value = serde_json::from_str(data)
            .map_err(|e| TranslateError::InvalidResponse(format!("cohere stream data is not valid JSON: {e}")))?;
        let kind = event.get("type").and_then(Value::as_str).unwrap_or(name);
        let mut out = Vec::new();
        if !self.started && kind != "debug" {
            self.started = true;
            if let Some(id) = event.get("id").and_then(Value::as_str) {
                self.id = format!("chatcmpl-{id}");
            }
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        let message = event.pointer("/delta/message");
        match kind {
            "content-delta" => {
                if let Some(text) = message.and_then(|m| m.pointer("/content/text")).and_then(Value::as_str)
                    && !text.is_empty()
                {
                    out.push(self.chunk(json!({"content": text}), None));
                }
            }
            "tool-plan-delta" => {
                if let Some(plan) = message.and_then(|m| m.get("tool_plan")).and_then(Value::as_str)
                    && !plan.is_empty()
                {
                    out.push(self.chunk(json!({"content": plan}), None));
                }
            }
            "tool-call-start" => {
                let call = message.and_then(|m| m.get("tool_calls"));
                let cohere_index = event.get("index").and_then(Value::as_u64).unwrap_or(self.calls.len() as u64);
                self.calls.push(cohere_index);
                let text =
                    |pointer: &str| call.and_then(|c| c.pointer(pointer)).and_then(Value::as_str).unwrap_or_default();
                out.push(self.chunk(
                    json!({"tool_calls": [{"index": self.calls.len() - 1, "id": text("/id"), "type": "function",
                        "function": {"name": text("/function/name"), "arguments": text("/function/arguments")}}]}),
                    None,
                ));
            }
            "tool-call-delta" => {
                let fragment = message
                    .and_then(|m| m.pointer("/tool_calls/function/arguments"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let cohere_index = event.get("index").and_then(Value::as_u64);
                let index = cohere_index
                    .and_then(|i| self.calls.iter().position(|c| *c == i))
                    .or_else(|| self.calls.len().checked_sub(1))
                    .ok_or_else(|| {
                        TranslateError::InvalidResponse("cohere sent tool-call-delta before tool-call-start".into())
                    })?;
                if !fragment.is_empty() {
                    out.push(
                        self.chunk(
                            json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
                            None,
                        ),
                    );
                }
            }
            "message-end" => {
                let delta = event.get("delta");
                if let Some(error) = delta.and_then(|d| d.get("error")).filter(|e| !e.is_null()) {
                    let message = error.as_str().map_or_else(|| error.to_string(), str::to_owned);
                    return Err(TranslateError::Upstream {
                        kind: ErrorKind::Server,
                        error_type: "error".into(),
                        message,
                    });
                }
                let reason = delta.and_then(|d| d.get("finish_reason")).and_then(Value::as_str);
                let reason = finish_reason(reason, !self.calls.is_empty())?;
                out.push(self.chunk(json!({}), Some(reason)));
                if self.include_usage {
                    let usage = token_usage(delta.and_then(|d| d.get("usage")));
                    out.push(
                        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model, "choices": [], "usage": usage.to_openai()})
                        .to_string(),
                    );
                }
                out.push("[DONE]".to_owned());
                self.done = true;
            }
            _ => {}
        }
        Ok(out)
    }

    /// True once `message-end` closed the answer.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        let mut chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk.to_string()
    }
}

// === errors ===

/// Classifies a Cohere error answer (digest §5, §10.1) by its status, with
/// three refinements: a 400/413/422 whose message says the prompt has too
/// many tokens or exceeds the context is [`ErrorKind::ContextLength`]; 498
/// (invalid token) is [`ErrorKind::Authentication`]; a 429 for a trial
/// key's used-up monthly allowance is [`ErrorKind::Billing`]. 499 (client
/// closed) is [`ErrorKind::Other`].
pub fn classify_error(status: u16, body: &[u8]) -> ErrorKind {
    let message = error_message(body).unwrap_or_default().to_ascii_lowercase();
    match status {
        400 | 413 | 422
            if ["too many tokens", "context length", "context window", "maximum context"]
                .iter()
                .any(|m| message.contains(m)) =>
        {
            ErrorKind::ContextLength
        }
        498 => ErrorKind::Authentication,
        429 if message.contains("trial key") && message.contains("/ month") => ErrorKind::Billing,
        status => kind_of_status(status),
    }
}

/// Cohere's `message` (`{"id":…,"message":…}`, or `{"message":…}`).
fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("message").and_then(Value::as_str).filter(|m| !m.is_empty()).map(str::to_owned)
}

/// OpenAI's error JSON for a Cohere error answer: Cohere's message verbatim
/// (or `cohere answered HTTP <status>` and the start of the body), `type` and
/// `code` from [`classify_error`].
pub fn to_openai_error(status: u16, body: &[u8]) -> Value {
    let kind = classify_error(status, body);
    let message = error_message(body).unwrap_or_else(|| body_message("cohere", status, body));
    json!({"error": {"message": message, "type": kind.openai_type(), "param": null, "code": kind.openai_code()}})
}

// === embeddings ===

/// Cohere's `input_type` when the client names none: the texts are
/// embedded as documents to search.
pub const DEFAULT_INPUT_TYPE: &str = "search_document";

/// The `POST /v2/embed` body for an OpenAI embeddings request to `model`:
/// `texts`, `embedding_types: ["float"]`, `output_dimension` from
/// `dimensions`, and `input_type` from the request's own (non-OpenAI)
/// `input_type` field, else [`DEFAULT_INPUT_TYPE`].
pub fn embeddings_to_cohere(
    request: &EmbeddingsRequest<'_>,
    body: &Map<String, Value>,
    model: &str,
) -> Result<Value, TranslateError> {
    let input_type = match body.get("input_type") {
        None | Some(Value::Null) => DEFAULT_INPUT_TYPE,
        Some(Value::String(kind)) => kind,
        Some(_) => {
            return Err(TranslateError::invalid(
                "input_type",
                "`input_type` must be a cohere input type such as search_document, search_query, classification \
                 or clustering",
            ));
        }
    };
    let mut out = json!({"model": model, "texts": request.texts, "input_type": input_type,
        "embedding_types": ["float"]});
    if let Some(dimensions) = request.dimensions {
        out["output_dimension"] = json!(dimensions);
    }
    Ok(out)
}

/// OpenAI's embeddings answer for Cohere's embed answer
/// (`embeddings.float`), with `usage.prompt_tokens` from
/// `meta.billed_units.input_tokens`.
pub fn cohere_embeddings_to_openai(
    answer: &[u8],
    model: &str,
    request: &EmbeddingsRequest<'_>,
) -> Result<Value, TranslateError> {
    let answer: Value = serde_json::from_slice(answer)
        .map_err(|e| TranslateError::InvalidResponse(format!("cohere's embed answer is not JSON: {e}")))?;
    let items = answer
        .pointer("/embeddings/float")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::InvalidResponse("cohere's embed answer has no `embeddings.float`".into()))?;
    let tokens = answer.pointer("/meta/billed_units/input_tokens").and_then(Value::as_u64).unwrap_or(0);
    embeddings::answer("cohere", items, request, model, tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATED: u64 = 1_764_460_800;

    fn request(body: Value) -> Result<Value, TranslateError> {
        chat_to_cohere(body.as_object().unwrap(), "command-a-03-2025")
    }

    #[test]
    fn a_full_request_maps_roles_tools_and_parameters() {
        let body = json!({
            "model": "chat", "user": "u-1", "stream_options": {"include_usage": true}, "logit_bias": {"1": 2},
            "temperature": 0.3, "top_p": 0.9, "top_k": 40, "seed": 7, "frequency_penalty": 0.1, "presence_penalty": 0.2,
            "max_completion_tokens": 64, "max_tokens": 10, "stop": "END", "n": 1, "parallel_tool_calls": true,
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "strict": true,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "kind."}]},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}}]},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\",\"unit\":\"c\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "-3C"},
                {"role": "assistant", "content": null},
                {"role": "assistant", "content": "It is -3C."}]});
        assert_eq!(
            request(body).unwrap(),
            json!({
                "model": "command-a-03-2025",
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "system", "content": "Be kind."},
                    {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}}]},
                    {"role": "assistant", "tool_plan": "Let me check.", "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\",\"unit\":\"c\"}"}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "-3C"},
                    {"role": "assistant", "content": "It is -3C."}],
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                "tool_choice": "REQUIRED",
                "temperature": 0.3, "p": 0.9, "k": 40, "seed": 7, "frequency_penalty": 0.1, "presence_penalty": 0.2,
                "max_tokens": 64, "stop_sequences": ["END"],
                "response_format": {"type": "json_object", "json_schema": {"type": "object"}},
            })
        );
    }

    #[test]
    fn named_tool_choice_keeps_only_that_tool_and_gaps_are_named() {
        let tools =
            json!([{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "b"}}]);
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "b"}}});
        let sent = request(body).unwrap();
        assert_eq!(sent["tools"], json!([{"type": "function", "function": {"name": "b"}}]));
        assert_eq!(sent["tool_choice"], "REQUIRED");
        let none =
            request(json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": "none"}));
        assert_eq!(none.unwrap()["tool_choice"], "NONE");
        let auto =
            request(json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": "auto"}));
        assert!(auto.unwrap().get("tool_choice").is_none());

        let n = request(json!({"messages": [{"role": "user", "content": "hi"}], "n": 2})).unwrap_err();
        assert!(n.is_provider_gap() && n.field() == Some("n"), "{n:?}");
        let audio =
            request(json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}));
        assert_eq!(audio.unwrap_err().field(), Some("messages[0].content[0].type"));
        let no_id = request(json!({"messages": [{"role": "tool", "content": "x"}]})).unwrap_err();
        assert_eq!(no_id.field(), Some("messages[0].tool_call_id"));
        let bad_args = request(json!({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}));
        assert_eq!(bad_args.unwrap_err().field(), Some("messages[0].tool_calls[0].function.arguments"));
    }

    #[test]
    fn answers_map_text_tool_calls_finish_reasons_and_usage() {
        let text = br#"{"id":"c0a1","finish_reason":"COMPLETE","message":{"role":"assistant","content":[{"type":"thinking","thinking":"hmm"},{"type":"text","text":"Hello"},{"type":"text","text":" there"}]},"usage":{"billed_units":{"input_tokens":5,"output_tokens":2},"tokens":{"input_tokens":71,"output_tokens":2},"cached_tokens":3}}"#;
        assert_eq!(
            cohere_to_chat_at(text, "chat", CREATED).unwrap(),
            json!({"id": "chatcmpl-c0a1", "object": "chat.completion", "created": CREATED, "model": "chat",
                "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "Hello there", "refusal": null}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                    "prompt_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0}}})
        );
        let call = br#"{"id":"c0a2","finish_reason":"TOOL_CALL","message":{"role":"assistant","tool_plan":"I will check.","tool_calls":[{"id":"get_weather_x1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]},"usage":{"tokens":{"input_tokens":9,"output_tokens":4}}}"#;
        let answer = cohere_to_chat_at(call, "chat", CREATED).unwrap();
        assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(answer["choices"][0]["message"]["content"], "I will check.");
        assert_eq!(
            answer["choices"][0]["message"]["tool_calls"],
            json!([{"id": "get_weather_x1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}])
        );
        assert_eq!(answer["usage"]["prompt_tokens"], 9, "tokens when billed_units is absent");
        let cut = br#"{"id":"c","finish_reason":"MAX_TOKENS","message":{"role":"assistant","content":[{"type":"text","text":"Hel"}]}}"#;
        assert_eq!(cohere_to_chat_at(cut, "chat", CREATED).unwrap()["choices"][0]["finish_reason"], "length");
        let failed = br#"{"id":"c","finish_reason":"ERROR","message":{"role":"assistant","content":[]}}"#;
        let error = cohere_to_chat_at(failed, "chat", CREATED).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Server);
        assert!(matches!(cohere_to_chat_at(b"[]", "chat", CREATED), Err(TranslateError::InvalidResponse(_))));
    }

    fn play(events: &[(&str, &str)]) -> (Vec<Value>, bool, Option<TranslateError>) {
        let mut translator = CohereStreamTranslator::with_created("chat", true, CREATED);
        let mut out = Vec::new();
        for (name, data) in events {
            match translator.on_event(name, data) {
                Ok(chunks) => out.extend(chunks),
                Err(error) => return (Vec::new(), translator.is_done(), Some(error)),
            }
        }
        let chunks = out.iter().map(|c| if c == "[DONE]" { json!("[DONE]") } else { serde_json::from_str(c).unwrap() });
        (chunks.collect(), translator.is_done(), None)
    }

    #[test]
    fn a_text_stream_becomes_openai_chunks_with_usage_and_done() {
        let (chunks, done, _) = play(&[
            (
                "message-start",
                r#"{"id":"s1","type":"message-start","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}}"#,
            ),
            (
                "content-start",
                r#"{"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}"#,
            ),
            ("content-delta", r#"{"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Hi"}}}}"#),
            ("", r#"{"type":"content-delta","index":0,"delta":{"message":{"content":{"text":" there"}}}}"#),
            ("content-end", r#"{"type":"content-end","index":0}"#),
            (
                "message-end",
                r#"{"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":4,"output_tokens":2}}}}"#,
            ),
            ("", "[DONE]"),
        ]);
        assert!(done);
        let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c.pointer("/choices/0/delta")).collect();
        assert_eq!(
            deltas,
            [
                &json!({"role": "assistant", "content": ""}),
                &json!({"content": "Hi"}),
                &json!({"content": " there"}),
                &json!({})
            ]
        );
        assert_eq!(chunks[0]["id"], "chatcmpl-s1");
        assert_eq!(chunks[0]["usage"], Value::Null);
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[4]["choices"], json!([]));
        assert_eq!(chunks[4]["usage"]["total_tokens"], 6);
        assert_eq!(chunks[5], "[DONE]");
        assert_eq!(chunks.len(), 6, "the upstream [DONE] adds nothing");
    }

    #[test]
    fn a_tool_call_stream_becomes_openai_tool_call_deltas() {
        let (chunks, done, _) = play(&[
            ("message-start", r#"{"id":"s2","type":"message-start","delta":{"message":{"role":"assistant"}}}"#),
            ("tool-plan-delta", r#"{"type":"tool-plan-delta","delta":{"message":{"tool_plan":"I will"}}}"#),
            (
                "tool-call-start",
                r#"{"type":"tool-call-start","index":0,"delta":{"message":{"tool_calls":{"id":"get_weather_a1","type":"function","function":{"name":"get_weather","arguments":""}}}}}"#,
            ),
            (
                "tool-call-delta",
                r#"{"type":"tool-call-delta","index":0,"delta":{"message":{"tool_calls":{"function":{"arguments":"{\"city\""}}}}}"#,
            ),
            (
                "tool-call-delta",
                r#"{"type":"tool-call-delta","index":0,"delta":{"message":{"tool_calls":{"function":{"arguments":":\"Oslo\"}"}}}}}"#,
            ),
            ("tool-call-end", r#"{"type":"tool-call-end","index":0}"#),
            ("message-end", r#"{"type":"message-end","delta":{"finish_reason":"TOOL_CALL","usage":{}}}"#),
        ]);
        assert!(done);
        assert_eq!(chunks[1]["choices"][0]["delta"], json!({"content": "I will"}));
        assert_eq!(
            chunks[2]["choices"][0]["delta"]["tool_calls"],
            json!([{"index": 0, "id": "get_weather_a1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}])
        );
        let arguments: String = chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0/function/arguments").and_then(Value::as_str))
            .collect();
        assert_eq!(arguments, r#"{"city":"Oslo"}"#);
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn a_stream_that_ends_in_error_or_is_cut_is_not_done() {
        let start = r#"{"id":"s3","type":"message-start","delta":{"message":{"role":"assistant"}}}"#;
        let (_, done, error) = play(&[
            ("message-start", start),
            ("message-end", r#"{"type":"message-end","delta":{"finish_reason":"ERROR","error":"internal error"}}"#),
        ]);
        assert!(!done);
        assert_eq!(error.unwrap().kind(), ErrorKind::Server);
        let (_, done, error) = play(&[("message-start", start), ("", "[DONE]")]);
        assert!(!done && error.is_none(), "[DONE] without message-end leaves the answer unfinished");
        let (_, _, error) = play(&[("message-start", "{not json")]);
        assert!(matches!(error, Some(TranslateError::InvalidResponse(_))));
    }

    #[test]
    fn cohere_errors_are_classified() {
        let body = |m: &str| json!({"id": "e1", "message": m}).to_string().into_bytes();
        let context = body("too many tokens: size limit exceeded by 1203 tokens.");
        assert_eq!(classify_error(400, &context), ErrorKind::ContextLength);
        assert_eq!(to_openai_error(400, &context)["error"]["code"], "context_length_exceeded");
        assert_eq!(classify_error(400, &body("invalid request: bad")), ErrorKind::InvalidRequest);
        assert_eq!(classify_error(498, &body("invalid token")), ErrorKind::Authentication);
        assert_eq!(classify_error(401, &body("invalid api token")), ErrorKind::Authentication);
        let minute = body("You are using a Trial key, which is limited to 20 API calls / minute.");
        assert_eq!(classify_error(429, &minute), ErrorKind::RateLimited);
        let month = body("You are using a Trial key, which is limited to 1000 API calls / month.");
        assert_eq!(classify_error(429, &month), ErrorKind::Billing);
        assert_eq!(to_openai_error(429, &month)["error"]["code"], "insufficient_quota");
        assert_eq!(classify_error(499, &body("client closed")), ErrorKind::Other);
        assert_eq!(classify_error(503, b"upstream connect error"), ErrorKind::Overloaded);
        let error = to_openai_error(500, b"<html>oops</html>");
        assert_eq!(error["error"]["message"], "cohere answered HTTP 500: <html>oops</html>");
        assert_eq!(error["error"]["type"], "server_error");
    }

    #[test]
    fn embeddings_go_to_embed_with_an_input_type_and_come_back_as_openais() {
        let body = json!({"model": "e", "input": ["a", "b"], "dimensions": 256});
        let body = body.as_object().unwrap();
        let request = embeddings::read(body, "cohere").unwrap();
        assert_eq!(
            embeddings_to_cohere(&request, body, "embed-v4.0").unwrap(),
            json!({"model": "embed-v4.0", "texts": ["a", "b"], "input_type": "search_document",
                "embedding_types": ["float"], "output_dimension": 256})
        );
        let query = json!({"model": "e", "input": "q", "input_type": "search_query"});
        let request_q = embeddings::read(query.as_object().unwrap(), "cohere").unwrap();
        assert_eq!(
            embeddings_to_cohere(&request_q, query.as_object().unwrap(), "m").unwrap()["input_type"],
            "search_query"
        );
        let answer = br#"{"id":"x","embeddings":{"float":[[0.5,1.0],[0.0,-1.0]]},"texts":["a","b"],"meta":{"billed_units":{"input_tokens":2}},"response_type":"embeddings_by_type"}"#;
        let openai = cohere_embeddings_to_openai(answer, "e", &request).unwrap();
        assert_eq!(openai["data"][1]["embedding"], json!([0.0, -1.0]));
        assert_eq!(openai["usage"], json!({"prompt_tokens": 2, "total_tokens": 2}));
        let short = br#"{"embeddings":{"float":[[0.5]]}}"#;
        assert!(matches!(cohere_embeddings_to_openai(short, "e", &request), Err(TranslateError::InvalidResponse(_))));
    }
}
