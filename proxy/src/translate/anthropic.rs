//! OpenAI chat completions ⇄ Anthropic Messages (`POST /v1/messages`,
//! `anthropic-version: 2023-06-01`).
//!
//! Four pure pieces, wired in by the request path:
//!
//! - [`chat_to_messages`]: the client's OpenAI request → the Anthropic request body;
//! - [`messages_to_chat`]: Anthropic's JSON answer → OpenAI `chat.completion`;
//! - [`StreamTranslator`]: Anthropic's named SSE events → OpenAI
//!   `chat.completion.chunk` data lines, ending with `[DONE]`;
//! - [`classify_error`] / [`to_openai_error`]: Anthropic error answers →
//!   [`ErrorKind`] and OpenAI's error JSON.
//!
//! Facts come from the provider digest (`shared/docs/provider-protocols.md`
//! §3 and §9). Where it leaves a choice, this module decides as follows.
//!
//! # Request mapping decisions
//!
//! - **System and developer messages**, wherever they are in the list, are
//!   hoisted in order into `system`, joined with `\n\n` as one string. When
//!   any of their parts carries `cache_control`, `system` is an array of text
//!   blocks instead, so the breakpoint survives.
//! - **Turns**: consecutive messages of one role are merged into one turn.
//!   `tool` messages become `tool_result` blocks of a user turn; consecutive
//!   tool messages share one turn, and within a user turn the `tool_result`
//!   blocks come first, then any other content (Anthropic requires results
//!   right after the `tool_use` turn). A turn that is a single plain text
//!   block is sent as a string, otherwise as blocks. Empty text is never sent
//!   (Anthropic rejects empty text blocks); turns left empty are dropped; an
//!   empty tool result is sent without `content`. Tool message text parts
//!   become text blocks of the `tool_result`.
//! - **First turn**: when the conversation (after hoisting) starts with the
//!   assistant, a user turn `"(continued)"` is put in front (historic
//!   Anthropic requirement, harmless). A conversation of only system messages
//!   is [`TranslateError::Unsupported`]: Anthropic needs at least one turn.
//! - **Prefill**: a final assistant turn is Anthropic's prefill (the answer
//!   continues it). Its trailing whitespace is trimmed because Anthropic
//!   rejects a final assistant turn that ends in whitespace.
//! - **Content parts**: `text`; `image_url` with a `data:` URL → `base64`
//!   image source (media types jpeg, png, gif, webp; `image/jpg` is read as
//!   jpeg; others are Unsupported), with an `http(s)` URL → `url` source;
//!   `detail` is dropped. `file` with PDF `file_data` → `document` block;
//!   `file_id`, other file types and `input_audio` are Unsupported. An
//!   assistant `refusal` (part or field) is replayed as text. A
//!   `cache_control` object on a text or image part is copied (the
//!   LiteLLM convention); `prompt_cache_breakpoint` and message `name` are dropped.
//! - **Tool calls**: `arguments` (a JSON string) is parsed into `input`; an
//!   empty string means `{}`; invalid JSON or JSON that is not an object is
//!   [`TranslateError::InvalidRequest`] naming
//!   `messages[i].tool_calls[j].function.arguments`. Ids pass through, with
//!   characters outside `[A-Za-z0-9_-]` replaced by `_` in both `tool_use.id`
//!   and `tool_result.tool_use_id` (ids minted by other providers, such as
//!   `functions.get_weather:0`, would be rejected otherwise). The parsed
//!   `input` has its keys sorted (`serde_json::Value`); JSON object order has
//!   no meaning to the API. The legacy `function` role and `function_call`
//!   are Unsupported.
//! - **Tools**: `{name, description, input_schema: parameters ?? {"type":
//!   "object","properties":{}}, strict}`; non-function tools are Unsupported.
//!   `tool_choice`: `none` → `{type:none}`, `auto` → `{type:auto}`,
//!   `required` → `{type:any}`, `{function:{name}}` → `{type:tool,name}`;
//!   the `allowed_tools` form is Unsupported. `parallel_tool_calls: false`
//!   sets `disable_parallel_tool_use: true` (on `{type:auto}` when no choice
//!   was given; never on `none`, which does not take it). Without tools,
//!   `tool_choice` and `parallel_tool_calls` are dropped: there is nothing to
//!   choose and Anthropic rejects a choice without tools.
//! - **`max_tokens`** (required by Anthropic) = `max_completion_tokens` ??
//!   `max_tokens` ?? [`AnthropicDefaults::max_tokens`], which defaults to
//!   [`DEFAULT_MAX_TOKENS`] = 4096: every Claude model can produce 4096
//!   tokens (it is the smallest maximum output among them), it fits typical
//!   chat answers without truncation, and it does not reserve a huge output
//!   budget against the account's output-token rate limit, which Anthropic
//!   estimates from `max_tokens`. The value is capped at
//!   [`AnthropicDefaults::max_output_tokens`] when configured, so a client
//!   asking for more than the model can write gets the model's maximum
//!   instead of a 400.
//! - **Sampling**: `temperature` must be 0–2 as in OpenAI; values above 1
//!   are clamped to 1.0, Anthropic's maximum (values in 0–1 pass unchanged;
//!   rescaling t/2 was rejected because it would change the meaning of
//!   the common 0.2–1.0 settings). `top_p` and the vendor extension `top_k`
//!   pass through. `stop` (string or array) → `stop_sequences`.
//!   [`AnthropicDefaults::drop_params`] lists OpenAI fields to ignore for
//!   models that reject them (e.g. `temperature` and `top_p` on Sonnet 5).
//! - **`n`**: 1 or absent; more is Unsupported (Anthropic returns one choice).
//! - **Other fields**: `stream` passes through; `stream_options` is
//!   gateway-side (Anthropic always reports usage); `safety_identifier` ??
//!   `user` → `metadata.user_id`; `response_format` `json_schema` →
//!   `output_config.format {type:"json_schema", schema}`, `json_object` →
//!   a system instruction asking for one JSON object (Anthropic has no JSON
//!   mode flag), `text` → nothing. Dropped: `seed`, the penalties,
//!   `logit_bias`, `logprobs`, `top_logprobs`, `metadata`, `store`,
//!   `service_tier`, `reasoning_effort` (its mapping to `output_config.effort`
//!   or `thinking` is model-dependent and left to a per-model setting), and
//!   any field this module does not know.
//!
//! # Response mapping decisions
//!
//! - `id` = `"chatcmpl-" + message.id` (the Anthropic id stays searchable);
//!   `created` = the gateway clock (Anthropic sends no timestamp); `model` =
//!   `message.model`, the model that actually answered, as the OpenAI
//!   pass-through reports the upstream's model; the alias the client asked
//!   for is used only when Anthropic omits it.
//! - `content` = the `text` blocks concatenated without separator (exactly
//!   what the streamed deltas add up to), `null` when there are none.
//!   `tool_use` blocks → `tool_calls` with the id unchanged and `arguments`
//!   = the `input` as compact JSON with keys in the order received.
//!   `thinking`, `redacted_thinking` and server-tool blocks are skipped.
//! - `finish_reason` (digest §9.5): `end_turn`, `stop_sequence`,
//!   `pause_turn` and anything unknown → `stop`; `max_tokens` and
//!   `model_context_window_exceeded` → `length`; `tool_use` → `tool_calls`;
//!   `refusal` → `content_filter`.
//! - `usage` (digest §9.6): `prompt_tokens` = `input_tokens +
//!   cache_read_input_tokens + cache_creation_input_tokens`;
//!   `prompt_tokens_details.cached_tokens` = cache reads (OpenAI's meaning:
//!   served from cache), `prompt_tokens_details.cache_write_tokens` = cache
//!   creation; `completion_tokens` = `output_tokens`;
//!   `completion_tokens_details.reasoning_tokens` =
//!   `output_tokens_details.thinking_tokens` when present.
//!
//! # Stream decisions
//!
//! See [`StreamTranslator`]: thinking blocks (and their deltas), citations
//! and server-tool blocks are skipped; empty `input_json_delta` fragments are
//! skipped (the tool's first chunk already carries `arguments: ""`), and a
//! tool call that received no argument text gets `"{}"` at its
//! `content_block_stop`, so clients always get parseable arguments; unknown
//! event types are ignored (Anthropic may add events).
//!
//! # Errors
//!
//! See [`classify_error`]: the Anthropic `error.type` decides when present,
//! the message refines `invalid_request_error` into context length or
//! billing, and the HTTP status decides otherwise.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::openai_request::{
    Fields, ResponseFormat, ToolCall, content_parts, content_type_error, parse_data_url, part_text, response_format,
    stop_sequences, tool_call,
};
use super::{CompactJson, ErrorKind, TokenUsage, TranslateError, body_message, unix_now};

/// The `max_tokens` sent when the client sets neither `max_completion_tokens`
/// nor `max_tokens` and the target configures nothing else (see the module
/// docs for why 4096).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Per-target settings of the request translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnthropicDefaults {
    /// `max_tokens` when the client sets none. Default [`DEFAULT_MAX_TOKENS`].
    pub max_tokens: u64,
    /// The model's maximum output: any `max_tokens` above it is lowered to it.
    pub max_output_tokens: Option<u64>,
    /// OpenAI request fields to ignore for this model, e.g. `temperature`,
    /// `top_p`, `top_k` or `tool_choice` for models that reject them.
    pub drop_params: Vec<String>,
}

impl Default for AnthropicDefaults {
    fn default() -> Self {
        Self { max_tokens: DEFAULT_MAX_TOKENS, max_output_tokens: None, drop_params: Vec::new() }
    }
}

/// Anthropic's accepted image media types.
pub(super) const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// The user turn put before a conversation that starts with the assistant.
const LEADING_USER_TEXT: &str = "(continued)";

/// The system instruction standing in for OpenAI's JSON mode.
const JSON_MODE_INSTRUCTION: &str = "Respond with a single valid JSON object and nothing else.";

// === request ===

/// Translates an OpenAI chat request into an Anthropic Messages request
/// body for the upstream model `model`.
///
/// The result is ready to send to `POST /v1/messages`. Fails with
/// [`TranslateError::InvalidRequest`] when the request is malformed and
/// [`TranslateError::Unsupported`] when Anthropic cannot express it; the
/// error's [`field`](TranslateError::field) names the OpenAI field. The
/// mapping is listed in the module docs.
pub fn chat_to_messages(
    body: &Map<String, Value>,
    model: &str,
    defaults: &AnthropicDefaults,
) -> Result<Value, TranslateError> {
    let fields = Fields { body, dropped: &defaults.drop_params };
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));

    let n = fields.get("n").map(|n| n.as_u64().ok_or(n));
    match n {
        None | Some(Ok(1)) => {}
        Some(Ok(n)) if n > 1 => {
            return Err(TranslateError::unsupported(
                "n",
                format!(
                    "`n` is {n}, but anthropic has no `n` and returns a single choice per request: \
                     omit `n` (or set it to 1) and send one request per choice you need"
                ),
            ));
        }
        Some(_) => return Err(TranslateError::invalid("n", "`n` must be a positive integer; omit it or set it to 1")),
    }

    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    let messages = match body.get("messages") {
        Some(Value::Array(messages)) => messages,
        _ => return Err(TranslateError::invalid("messages", "`messages` must be an array of chat messages")),
    };
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let Some(message) = message.as_object() else {
            return Err(TranslateError::invalid(
                &path,
                format!("`{path}` must be an object with a `role` and a `content`"),
            ));
        };
        let role = message.get("role").and_then(Value::as_str).ok_or_else(|| {
            TranslateError::invalid(
                format!("{path}.role"),
                format!("`{path}.role` is required: use system, developer, user, assistant or tool"),
            )
        })?;
        match role {
            "system" | "developer" => system.extend(system_blocks(message.get("content"), &path)?),
            "user" => push_turn(&mut turns, Role::User, user_blocks(message.get("content"), &path)?),
            "assistant" => push_turn(&mut turns, Role::Assistant, assistant_blocks(message, &path)?),
            "tool" => push_turn(&mut turns, Role::User, vec![tool_result(message, &path)?]),
            "function" => {
                return Err(TranslateError::unsupported(
                    format!("{path}.role"),
                    format!(
                        "`{path}.role` is the deprecated `function` role, which anthropic cannot replay: \
                         send tool results as `tool` messages with a `tool_call_id`"
                    ),
                ));
            }
            other => {
                return Err(TranslateError::invalid(
                    format!("{path}.role"),
                    format!("`{path}.role` is `{other}`: use system, developer, user, assistant or tool"),
                ));
            }
        }
    }

    if let Some(format) = fields.get("response_format") {
        match response_format(format)? {
            ResponseFormat::Text => {}
            ResponseFormat::JsonObject => system.push(text_block(JSON_MODE_INSTRUCTION)),
            ResponseFormat::JsonSchema(schema) => {
                out.insert("output_config".into(), json!({"format": {"type": "json_schema", "schema": schema}}));
            }
        }
    }

    finish_turns(&mut turns)?;
    if !system.is_empty() {
        out.insert("system".into(), system_value(system));
    }
    out.insert("messages".into(), Value::Array(turns.into_iter().map(Turn::into_value).collect()));

    let max_tokens = match fields
        .get("max_completion_tokens")
        .map(|v| ("max_completion_tokens", v))
        .or_else(|| fields.get("max_tokens").map(|v| ("max_tokens", v)))
    {
        Some((name, value)) => value.as_u64().ok_or_else(|| {
            TranslateError::invalid(name, format!("`{name}` must be a non-negative integer number of tokens"))
        })?,
        None => defaults.max_tokens,
    };
    let max_tokens = defaults.max_output_tokens.map_or(max_tokens, |cap| max_tokens.min(cap));
    out.insert("max_tokens".into(), Value::from(max_tokens));

    if let Some(temperature) = fields.get("temperature") {
        let value = temperature
            .as_f64()
            .filter(|t| (0.0..=2.0).contains(t))
            .ok_or_else(|| TranslateError::invalid("temperature", "`temperature` must be a number from 0 to 2"))?;
        let value = if value > 1.0 { Value::from(1.0) } else { temperature.clone() };
        out.insert("temperature".into(), value);
    }
    for name in ["top_p", "top_k"] {
        if let Some(value) = fields.get(name) {
            if !value.is_number() {
                return Err(TranslateError::invalid(name, format!("`{name}` must be a number")));
            }
            out.insert(name.into(), value.clone());
        }
    }
    if let Some(stop) = fields.get("stop") {
        let sequences = stop_sequences(stop)?;
        if !sequences.is_empty() {
            out.insert("stop_sequences".into(), Value::Array(sequences));
        }
    }
    if let Some(stream) = fields.get("stream") {
        if !stream.is_boolean() {
            return Err(TranslateError::invalid("stream", "`stream` must be true or false"));
        }
        out.insert("stream".into(), stream.clone());
    }
    for name in ["safety_identifier", "user"] {
        if let Some(user) = fields.get(name) {
            let user =
                user.as_str().ok_or_else(|| TranslateError::invalid(name, format!("`{name}` must be a string")))?;
            out.insert("metadata".into(), json!({"user_id": user}));
            break;
        }
    }

    let tools = match fields.get("tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => tools.iter().enumerate().map(|(k, t)| tool(t, k)).collect::<Result<_, _>>()?,
        Some(_) => return Err(TranslateError::invalid("tools", "`tools` must be an array of function tools")),
    };
    let mut choice = fields.get("tool_choice").map(tool_choice).transpose()?;
    match fields.get("parallel_tool_calls") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if choice["type"] != "none"
                && let Some(choice) = choice.as_object_mut()
            {
                choice.insert("disable_parallel_tool_use".into(), Value::Bool(true));
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid("parallel_tool_calls", "`parallel_tool_calls` must be true or false"));
        }
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = choice {
            out.insert("tool_choice".into(), choice);
        }
    }
    Ok(Value::Object(out))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

/// One Anthropic message under construction.
struct Turn {
    role: Role,
    blocks: Vec<Value>,
}

impl Turn {
    fn into_value(self) -> Value {
        let role = match self.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let content = match self.blocks.as_slice() {
            [only] if is_plain_text(only) => only["text"].clone(),
            _ => Value::Array(self.blocks),
        };
        json!({"role": role, "content": content})
    }
}

fn is_plain_text(block: &Value) -> bool {
    block.as_object().is_some_and(|b| b.len() == 2 && b.get("type") == Some(&json!("text")))
}

fn is_tool_result(block: &Value) -> bool {
    block.get("type").and_then(Value::as_str) == Some("tool_result")
}

/// Appends blocks as a turn of `role`, merging with the previous turn of
/// the same role; `tool_result` blocks go before any other user content.
fn push_turn(turns: &mut Vec<Turn>, role: Role, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => {
            for block in blocks {
                if is_tool_result(&block) {
                    let at = last.blocks.iter().take_while(|b| is_tool_result(b)).count();
                    last.blocks.insert(at, block);
                } else {
                    last.blocks.push(block);
                }
            }
        }
        _ => turns.push(Turn { role, blocks }),
    }
}

/// Leading user turn, prefill whitespace, at least one turn.
fn finish_turns(turns: &mut Vec<Turn>) -> Result<(), TranslateError> {
    if let Some(last) = turns.last_mut()
        && last.role == Role::Assistant
        && let Some(Value::Object(block)) = last.blocks.last_mut()
        && block.get("type") == Some(&json!("text"))
        && let Some(Value::String(text)) = block.get_mut("text")
    {
        let trimmed = text.trim_end().len();
        text.truncate(trimmed);
        if trimmed == 0 {
            last.blocks.pop();
            if last.blocks.is_empty() {
                turns.pop();
            }
        }
    }
    match turns.first() {
        None => Err(TranslateError::unsupported(
            "messages",
            "`messages` holds no user, assistant or tool message with content, and anthropic needs at least one: \
             add a user message (system messages become anthropic's `system`)",
        )),
        Some(first) => {
            if first.role == Role::Assistant {
                turns.insert(0, Turn { role: Role::User, blocks: vec![text_block(LEADING_USER_TEXT)] });
            }
            Ok(())
        }
    }
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// `system` as one string, or as blocks when a block carries `cache_control`.
fn system_value(blocks: Vec<Value>) -> Value {
    if blocks.iter().all(is_plain_text) {
        let texts: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
        Value::String(texts.join("\n\n"))
    } else {
        Value::Array(blocks)
    }
}

/// Copies a part's `cache_control` onto the block.
fn with_cache_control(mut block: Value, part: &Map<String, Value>) -> Value {
    if let (Some(control @ Value::Object(_)), Some(object)) = (part.get("cache_control"), block.as_object_mut()) {
        object.insert("cache_control".into(), control.clone());
    }
    block
}

fn system_blocks(content: Option<&Value>, path: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(if text.is_empty() { Vec::new() } else { vec![text_block(text)] }),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::new();
            for (part_path, part, kind) in content_parts(parts, path)? {
                if kind != "text" {
                    return Err(TranslateError::invalid(
                        format!("{part_path}.type"),
                        format!(
                            "`{part_path}.type` is `{kind}`, but system and developer messages hold only text parts"
                        ),
                    ));
                }
                let text = part_text(part, "text", &part_path)?;
                if !text.is_empty() {
                    blocks.push(with_cache_control(text_block(text), part));
                }
            }
            Ok(blocks)
        }
        Some(_) => Err(content_type_error(path)),
    }
}

fn user_blocks(content: Option<&Value>, path: &str) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(text)) => return Ok(if text.is_empty() { Vec::new() } else { vec![text_block(text)] }),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(content_type_error(path)),
    };
    let mut blocks = Vec::new();
    for (part_path, part, kind) in content_parts(parts, path)? {
        match kind {
            "text" => {
                let text = part_text(part, "text", &part_path)?;
                if !text.is_empty() {
                    blocks.push(with_cache_control(text_block(text), part));
                }
            }
            "image_url" => blocks.push(with_cache_control(image_block(part, &part_path)?, part)),
            "file" => blocks.push(with_cache_control(document_block(part, &part_path)?, part)),
            "input_audio" => {
                return Err(TranslateError::unsupported(
                    &part_path,
                    format!(
                        "`{part_path}` is audio input, which anthropic does not accept: transcribe it to text first"
                    ),
                ));
            }
            other => {
                return Err(TranslateError::invalid(
                    format!("{part_path}.type"),
                    format!(
                        "`{part_path}.type` is `{other}`: user content parts are text, image_url, file or input_audio"
                    ),
                ));
            }
        }
    }
    Ok(blocks)
}

fn image_block(part: &Map<String, Value>, part_path: &str) -> Result<Value, TranslateError> {
    let url_path = format!("{part_path}.image_url.url");
    let url = match part.get("image_url") {
        Some(Value::String(url)) => url.as_str(),
        Some(Value::Object(image)) => image.get("url").and_then(Value::as_str).unwrap_or_default(),
        _ => "",
    };
    if url.starts_with("data:") {
        let (mime, data) = parse_data_url(url).ok_or_else(|| {
            TranslateError::invalid(
                &url_path,
                format!("`{url_path}` must be a base64 data URL such as `data:image/png;base64,...`"),
            )
        })?;
        let mime = mime.to_ascii_lowercase();
        let mime = if mime == "image/jpg" { "image/jpeg".to_owned() } else { mime };
        if !IMAGE_TYPES.contains(&mime.as_str()) {
            return Err(TranslateError::unsupported(
                &url_path,
                format!(
                    "`{url_path}` has media type `{mime}`, which anthropic does not accept: \
                     send a jpeg, png, gif or webp image"
                ),
            ));
        }
        Ok(json!({"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}))
    } else if url.starts_with("https://") || url.starts_with("http://") {
        Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
    } else {
        Err(TranslateError::invalid(
            &url_path,
            format!("`{url_path}` must be an http(s) URL or a base64 data URL (`data:image/png;base64,...`)"),
        ))
    }
}

fn document_block(part: &Map<String, Value>, part_path: &str) -> Result<Value, TranslateError> {
    let file = part.get("file").and_then(Value::as_object);
    let data_path = format!("{part_path}.file.file_data");
    let Some(data) = file.and_then(|f| f.get("file_data")).and_then(Value::as_str) else {
        return Err(TranslateError::unsupported(
            format!("{part_path}.file"),
            format!(
                "`{part_path}.file` must carry `file_data`: anthropic cannot read openai `file_id`s; \
                 send the PDF inline as `data:application/pdf;base64,...`"
            ),
        ));
    };
    let (mime, data) = match parse_data_url(data) {
        Some((mime, data)) => (mime.to_ascii_lowercase(), data),
        None if data.starts_with("data:") => {
            return Err(TranslateError::invalid(
                &data_path,
                format!("`{data_path}` must be base64, optionally as `data:application/pdf;base64,...`"),
            ));
        }
        None => ("application/pdf".to_owned(), data),
    };
    if mime != "application/pdf" {
        return Err(TranslateError::unsupported(
            &data_path,
            format!("`{data_path}` has media type `{mime}`; anthropic documents here take only `application/pdf`"),
        ));
    }
    Ok(json!({"type": "document", "source": {"type": "base64", "media_type": mime, "data": data}}))
}

fn assistant_blocks(message: &Map<String, Value>, path: &str) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = Vec::new();
    match message.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => {
            if !text.is_empty() {
                blocks.push(text_block(text));
            }
        }
        Some(Value::Array(parts)) => {
            for (part_path, part, kind) in content_parts(parts, path)? {
                let text = match kind {
                    "text" => part_text(part, "text", &part_path)?,
                    "refusal" => part_text(part, "refusal", &part_path)?,
                    other => {
                        return Err(TranslateError::invalid(
                            format!("{part_path}.type"),
                            format!("`{part_path}.type` is `{other}`: assistant content parts are text or refusal"),
                        ));
                    }
                };
                if !text.is_empty() {
                    blocks.push(with_cache_control(text_block(text), part));
                }
            }
        }
        Some(_) => return Err(content_type_error(path)),
    }
    if let Some(Value::String(refusal)) = message.get("refusal")
        && !refusal.is_empty()
    {
        blocks.push(text_block(refusal));
    }
    if message.get("function_call").is_some_and(|f| !f.is_null()) {
        return Err(TranslateError::unsupported(
            format!("{path}.function_call"),
            format!("`{path}.function_call` is deprecated and anthropic cannot replay it: use `tool_calls`"),
        ));
    }
    match message.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (j, call) in calls.iter().enumerate() {
                blocks.push(tool_use(call, &format!("{path}.tool_calls[{j}]"))?);
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.tool_calls"),
                format!("`{path}.tool_calls` must be an array"),
            ));
        }
    }
    Ok(blocks)
}

fn tool_use(call: &Value, path: &str) -> Result<Value, TranslateError> {
    let ToolCall { id, name, arguments } = tool_call(call, path, "anthropic")?;
    Ok(json!({"type": "tool_use", "id": tool_id(id), "name": name, "input": arguments}))
}

/// Anthropic tool ids must match `[A-Za-z0-9_-]+`; others become `_`, the
/// same way in `tool_use.id` and `tool_result.tool_use_id`.
fn tool_id(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

fn tool_result(message: &Map<String, Value>, path: &str) -> Result<Value, TranslateError> {
    let id = message.get("tool_call_id").and_then(Value::as_str).filter(|id| !id.is_empty()).ok_or_else(|| {
        TranslateError::invalid(
            format!("{path}.tool_call_id"),
            format!("`{path}.tool_call_id` is required: send the `id` of the tool call this message answers"),
        )
    })?;
    let mut block = json!({"type": "tool_result", "tool_use_id": tool_id(id)});
    let content = match message.get("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => (!text.is_empty()).then(|| Value::String(text.clone())),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::new();
            for (part_path, part, kind) in content_parts(parts, path)? {
                if kind != "text" {
                    return Err(TranslateError::invalid(
                        format!("{part_path}.type"),
                        format!("`{part_path}.type` is `{kind}`, but tool messages hold only text parts"),
                    ));
                }
                let text = part_text(part, "text", &part_path)?;
                if !text.is_empty() {
                    blocks.push(with_cache_control(text_block(text), part));
                }
            }
            (!blocks.is_empty()).then_some(Value::Array(blocks))
        }
        Some(_) => return Err(content_type_error(path)),
    };
    if let (Some(content), Some(object)) = (content, block.as_object_mut()) {
        object.insert("content".into(), content);
    }
    Ok(block)
}

fn tool(tool: &Value, k: usize) -> Result<Value, TranslateError> {
    let path = format!("tools[{k}]");
    let kind = tool.get("type").and_then(Value::as_str).unwrap_or("function");
    if kind != "function" {
        return Err(TranslateError::unsupported(
            format!("{path}.type"),
            format!("`{path}.type` is `{kind}`; anthropic takes only `function` tools from openai clients"),
        ));
    }
    let function = tool.get("function").and_then(Value::as_object).ok_or_else(|| {
        TranslateError::invalid(format!("{path}.function"), format!("`{path}.function` must be an object"))
    })?;
    let name = function.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| {
        TranslateError::invalid(format!("{path}.function.name"), format!("`{path}.function.name` is required"))
    })?;
    let mut out = Map::new();
    out.insert("name".into(), Value::String(name.to_owned()));
    if let Some(description) = function.get("description").filter(|d| !d.is_null()) {
        out.insert("description".into(), description.clone());
    }
    let schema = match function.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(schema @ Value::Object(_)) => schema.clone(),
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.function.parameters"),
                format!("`{path}.function.parameters` must be a JSON Schema object"),
            ));
        }
    };
    out.insert("input_schema".into(), schema);
    if let Some(strict @ Value::Bool(_)) = function.get("strict") {
        out.insert("strict".into(), strict.clone());
    }
    Ok(Value::Object(out))
}

fn tool_choice(choice: &Value) -> Result<Value, TranslateError> {
    let invalid = || {
        TranslateError::invalid(
            "tool_choice",
            "`tool_choice` must be \"none\", \"auto\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":...}}",
        )
    };
    match choice {
        Value::String(mode) => match mode.as_str() {
            "none" => Ok(json!({"type": "none"})),
            "auto" => Ok(json!({"type": "auto"})),
            "required" => Ok(json!({"type": "any"})),
            _ => Err(invalid()),
        },
        Value::Object(object) => match object.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = object
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        TranslateError::invalid(
                            "tool_choice.function.name",
                            "`tool_choice.function.name` is required: name the tool the model must call",
                        )
                    })?;
                Ok(json!({"type": "tool", "name": name}))
            }
            Some("allowed_tools") => Err(TranslateError::unsupported(
                "tool_choice",
                "`tool_choice` of type `allowed_tools` has no anthropic equivalent: \
                 send only the allowed tools in `tools` with `tool_choice` \"auto\" or \"required\"",
            )),
            _ => Err(invalid()),
        },
        _ => Err(invalid()),
    }
}

// === response ===

/// An Anthropic message (non-streaming answer), reading only what the
/// translation needs.
#[derive(Deserialize)]
struct MessageView {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<BlockView>,
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Value,
    #[serde(default)]
    error: Value,
}

#[derive(Deserialize)]
struct BlockView {
    #[serde(default, rename = "type")]
    kind: String,
    text: Option<String>,
    id: Option<String>,
    name: Option<String>,
    input: Option<CompactJson>,
}

/// Translates Anthropic's non-streaming answer into an OpenAI
/// `chat.completion`, with `created` from the gateway clock.
///
/// `alias_model` names the model when the answer does not (see the module
/// docs). Fails with [`TranslateError::InvalidResponse`] when the bytes are
/// not an Anthropic message, and with [`TranslateError::Upstream`] when they
/// are an Anthropic error object.
pub fn messages_to_chat(response: &[u8], alias_model: &str) -> Result<Value, TranslateError> {
    messages_to_chat_at(response, alias_model, unix_now())
}

/// [`messages_to_chat`] with a given `created` timestamp (Unix seconds).
pub fn messages_to_chat_at(response: &[u8], alias_model: &str, created: u64) -> Result<Value, TranslateError> {
    let message: MessageView = serde_json::from_slice(response)
        .map_err(|e| TranslateError::InvalidResponse(format!("the anthropic message is not valid JSON: {e}")))?;
    if message.kind == "error" {
        return Err(upstream_error(&message.error));
    }
    if message.kind != "message" {
        return Err(TranslateError::InvalidResponse(format!(
            "expected an anthropic message (`\"type\": \"message\"`), got type `{}`",
            message.kind
        )));
    }
    let mut text = String::new();
    let mut saw_text = false;
    let mut tool_calls = Vec::new();
    for block in message.content {
        match block.kind.as_str() {
            "text" => {
                text.push_str(block.text.as_deref().unwrap_or_default());
                saw_text = true;
            }
            "tool_use" => tool_calls.push(json!({
                "id": block.id.unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": block.name.unwrap_or_default(),
                    "arguments": block.input.map_or_else(|| "{}".to_owned(), |input| input.0),
                },
            })),
            // thinking, redacted_thinking, server tools: not representable in chat.completion.
            _ => {}
        }
    }
    let reply = super::assistant_message(saw_text.then_some(text), tool_calls);
    let mut usage = AnthropicUsage::default();
    usage.update(&message.usage);
    let model = if message.model.is_empty() { alias_model.to_owned() } else { message.model };
    Ok(json!({
        "id": format!("chatcmpl-{}", message.id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": reply,
            "logprobs": null,
            "finish_reason": finish_reason(message.stop_reason.as_deref()),
        }],
        "usage": usage.to_token_usage().to_openai(),
    }))
}

/// OpenAI's `finish_reason` for an Anthropic `stop_reason` (digest §9.5).
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn (a paused server-tool turn), unknown
        _ => "stop",
    }
}

/// Anthropic's token counts, as last reported.
#[derive(Debug, Clone, Copy, Default)]
struct AnthropicUsage {
    input: u64,
    cache_read: u64,
    cache_creation: u64,
    output: u64,
    thinking: Option<u64>,
}

impl AnthropicUsage {
    /// Overwrites the counts present in an Anthropic `usage` object (stream
    /// counts are cumulative: the last value wins).
    fn update(&mut self, usage: &Value) {
        let count = |key: &str| usage.get(key).and_then(Value::as_u64);
        if let Some(n) = count("input_tokens") {
            self.input = n;
        }
        if let Some(n) = count("cache_read_input_tokens") {
            self.cache_read = n;
        }
        if let Some(n) = count("cache_creation_input_tokens") {
            self.cache_creation = n;
        }
        if let Some(n) = count("output_tokens") {
            self.output = n;
        }
        if let Some(n) =
            usage.get("output_tokens_details").and_then(|d| d.get("thinking_tokens")).and_then(Value::as_u64)
        {
            self.thinking = Some(n);
        }
    }

    fn to_token_usage(self) -> TokenUsage {
        TokenUsage {
            prompt_tokens: self.input + self.cache_read + self.cache_creation,
            completion_tokens: self.output,
            cached_tokens: self.cache_read,
            cache_write_tokens: self.cache_creation,
            reasoning_tokens: self.thinking,
        }
    }
}

// === stream ===

/// Turns Anthropic's streamed events into OpenAI chunks (digest §9.4).
///
/// Feed every SSE event in order to [`on_event`](Self::on_event), with the
/// event's name (`event:` field) and data; send each returned string to the
/// client as `data: <string>\n\n`. The last string, returned for
/// `message_stop`, is `[DONE]`, after which [`is_done`](Self::is_done) is
/// true. If the upstream stream ends before that, the answer was cut: the
/// proxy must treat it as a broken stream, not finish it.
///
/// | Anthropic event | emitted |
/// |---|---|
/// | `message_start` | role chunk `{role:"assistant", content:""}`; input usage stored |
/// | `content_block_start` text | a content chunk only if the block starts with text |
/// | `content_block_start` tool_use | `tool_calls[{index:t, id, type:"function", function:{name, arguments:""}}]`, `t` counting tool blocks from 0 |
/// | `content_block_start` thinking, server tools, unknown | nothing, and their deltas are dropped |
/// | `text_delta` | `{content: text}` (empty text skipped) |
/// | `input_json_delta` | `tool_calls[{index:t, function:{arguments: fragment}}]` (empty fragments skipped) |
/// | `content_block_stop` | `arguments: "{}"` for a tool call that got no argument text, else nothing |
/// | `message_delta` | `delta:{}` with the mapped `finish_reason`; output usage stored (cumulative) |
/// | `message_stop` | the usage chunk (`choices: []`) when `include_usage`, then `[DONE]` |
/// | `ping`, unknown events | nothing |
/// | `error` | `Err(TranslateError::Upstream)` with the error's [`ErrorKind`] |
///
/// With `include_usage`, every chunk before the usage chunk carries
/// `"usage": null`, as OpenAI's do.
#[derive(Debug)]
pub struct StreamTranslator {
    alias_model: String,
    include_usage: bool,
    created: u64,
    id: String,
    model: String,
    started: bool,
    done: bool,
    finished: bool,
    next_tool: u32,
    blocks: HashMap<u64, Block>,
    usage: AnthropicUsage,
}

/// What a content block index carries.
#[derive(Debug, Clone, Copy)]
enum Block {
    Text,
    Tool { index: u32, has_arguments: bool },
    Skipped,
}

impl StreamTranslator {
    /// A translator for one streamed answer. `alias_model` names the model
    /// when `message_start` does not; `include_usage` adds OpenAI's usage
    /// chunk at the end (the proxy asks for it always and strips it when the
    /// client did not). `created` comes from the gateway clock.
    pub fn new(alias_model: &str, include_usage: bool) -> Self {
        Self::with_created(alias_model, include_usage, unix_now())
    }

    /// [`new`](Self::new) with a given `created` timestamp (Unix seconds).
    pub fn with_created(alias_model: &str, include_usage: bool, created: u64) -> Self {
        Self {
            alias_model: alias_model.to_owned(),
            include_usage,
            created,
            id: String::new(),
            model: alias_model.to_owned(),
            started: false,
            done: false,
            finished: false,
            next_tool: 0,
            blocks: HashMap::new(),
            usage: AnthropicUsage::default(),
        }
    }

    /// Translates one event into zero or more OpenAI chunk payloads (JSON
    /// strings, or `[DONE]` last).
    ///
    /// `event` is the SSE event name; when empty, the data's `type` is used.
    /// An `error` event returns [`TranslateError::Upstream`]; data that breaks
    /// the protocol (not JSON, a block delta before its start, content before
    /// `message_start`) returns [`TranslateError::InvalidResponse`]. Events
    /// after `message_stop` are ignored.
    pub fn on_event(&mut self, event: &str, data: &str) -> Result<Vec<String>, TranslateError> {
        if self.done {
            return Ok(Vec::new());
        }
        let parsed = || {
            serde_json::from_str::<Value>(data).map_err(|e| {
                TranslateError::InvalidResponse(format!("anthropic `{event}` event data is not valid JSON: {e}"))
            })
        };
        let (name, data) = if event.is_empty() {
            let data = parsed()?;
            (data.get("type").and_then(Value::as_str).unwrap_or_default().to_owned(), data)
        } else if event == "ping" {
            return Ok(Vec::new());
        } else {
            (event.to_owned(), parsed()?)
        };
        match name.as_str() {
            "ping" => Ok(Vec::new()),
            "error" => Err(upstream_error(data.get("error").unwrap_or(&Value::Null))),
            "message_start" => self.message_start(&data),
            "content_block_start" | "content_block_delta" | "content_block_stop" | "message_delta" | "message_stop"
                if !self.started =>
            {
                Err(TranslateError::InvalidResponse(format!("anthropic sent `{name}` before `message_start`")))
            }
            "content_block_start" => self.block_start(&data),
            "content_block_delta" => self.block_delta(&data),
            "content_block_stop" => self.block_stop(&data),
            "message_delta" => Ok(self.message_delta(&data)),
            "message_stop" => Ok(self.message_stop()),
            // New event types may appear (Anthropic's versioning policy): ignore them.
            _ => Ok(Vec::new()),
        }
    }

    /// Token counts so far (final after `message_delta`); `None` before `message_start`.
    pub fn usage(&self) -> Option<TokenUsage> {
        self.started.then(|| self.usage.to_token_usage())
    }

    /// True once `message_stop` was translated: the answer is complete.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn message_start(&mut self, data: &Value) -> Result<Vec<String>, TranslateError> {
        if self.started {
            return Err(TranslateError::InvalidResponse("anthropic sent a second `message_start`".into()));
        }
        let message = data.get("message").unwrap_or(&Value::Null);
        self.started = true;
        self.id = format!("chatcmpl-{}", message.get("id").and_then(Value::as_str).unwrap_or_default());
        if let Some(model) = message.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()) {
            self.model = model.to_owned();
        } else {
            self.model.clone_from(&self.alias_model);
        }
        self.usage.update(message.get("usage").unwrap_or(&Value::Null));
        Ok(vec![self.chunk(json!({"role": "assistant", "content": ""}), None)])
    }

    fn block_index(data: &Value) -> Result<u64, TranslateError> {
        data.get("index")
            .and_then(Value::as_u64)
            .ok_or_else(|| TranslateError::InvalidResponse("an anthropic content block event has no `index`".into()))
    }

    fn block_start(&mut self, data: &Value) -> Result<Vec<String>, TranslateError> {
        let index = Self::block_index(data)?;
        let block = data.get("content_block").unwrap_or(&Value::Null);
        let mut out = Vec::new();
        let state = match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(text) = block.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    out.push(self.chunk(json!({"content": text}), None));
                }
                Block::Text
            }
            Some("tool_use") => {
                let tool = self.next_tool;
                self.next_tool += 1;
                out.push(self.chunk(
                    json!({"tool_calls": [{
                        "index": tool,
                        "id": block.get("id").and_then(Value::as_str).unwrap_or_default(),
                        "type": "function",
                        "function": {"name": block.get("name").and_then(Value::as_str).unwrap_or_default(), "arguments": ""},
                    }]}),
                    None,
                ));
                Block::Tool { index: tool, has_arguments: false }
            }
            _ => Block::Skipped,
        };
        self.blocks.insert(index, state);
        Ok(out)
    }

    fn block_delta(&mut self, data: &Value) -> Result<Vec<String>, TranslateError> {
        let index = Self::block_index(data)?;
        let Some(state) = self.blocks.get_mut(&index) else {
            return Err(TranslateError::InvalidResponse(format!(
                "anthropic sent a delta for content block {index} before its `content_block_start`"
            )));
        };
        let delta = data.get("delta").unwrap_or(&Value::Null);
        let kind = delta.get("type").and_then(Value::as_str);
        let chunk = match (state, kind) {
            (Block::Text, Some("text_delta")) => match delta.get("text").and_then(Value::as_str) {
                Some(text) if !text.is_empty() => json!({"content": text}),
                _ => return Ok(Vec::new()),
            },
            (Block::Tool { index, has_arguments }, Some("input_json_delta")) => {
                match delta.get("partial_json").and_then(Value::as_str) {
                    Some(fragment) if !fragment.is_empty() => {
                        *has_arguments = true;
                        json!({"tool_calls": [{"index": *index, "function": {"arguments": fragment}}]})
                    }
                    _ => return Ok(Vec::new()),
                }
            }
            // thinking, signature and citations deltas, deltas of skipped blocks.
            _ => return Ok(Vec::new()),
        };
        Ok(vec![self.chunk(chunk, None)])
    }

    fn block_stop(&mut self, data: &Value) -> Result<Vec<String>, TranslateError> {
        let index = Self::block_index(data)?;
        match self.blocks.get_mut(&index) {
            Some(Block::Tool { index, has_arguments }) if !*has_arguments => {
                // A call without arguments: clients parse `arguments`, and "" is not JSON.
                *has_arguments = true;
                let index = *index;
                Ok(vec![self.chunk(json!({"tool_calls": [{"index": index, "function": {"arguments": "{}"}}]}), None)])
            }
            Some(_) => Ok(Vec::new()),
            None => Err(TranslateError::InvalidResponse(format!(
                "anthropic stopped content block {index} before its `content_block_start`"
            ))),
        }
    }

    fn message_delta(&mut self, data: &Value) -> Vec<String> {
        self.usage.update(data.get("usage").unwrap_or(&Value::Null));
        match data.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str) {
            Some(stop_reason) if !self.finished => {
                self.finished = true;
                vec![self.chunk(json!({}), Some(finish_reason(Some(stop_reason))))]
            }
            _ => Vec::new(),
        }
    }

    fn message_stop(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.finished {
            // Anthropic always sends a stop_reason in message_delta; OpenAI
            // clients expect a finish chunk, so never end without one.
            self.finished = true;
            out.push(self.chunk(json!({}), Some("stop")));
        }
        if self.include_usage {
            out.push(
                json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [], "usage": self.usage.to_token_usage().to_openai(),
                })
                .to_string(),
            );
        }
        out.push("[DONE]".to_owned());
        self.done = true;
        out
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        let mut chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if self.include_usage
            && let Some(chunk) = chunk.as_object_mut()
        {
            chunk.insert("usage".into(), Value::Null);
        }
        chunk.to_string()
    }
}

// === errors ===

/// The class of an Anthropic `error.type`, if known.
fn kind_of_type(error_type: &str) -> Option<ErrorKind> {
    Some(match error_type {
        "invalid_request_error" | "request_too_large" => ErrorKind::InvalidRequest,
        "authentication_error" => ErrorKind::Authentication,
        "billing_error" => ErrorKind::Billing,
        "permission_error" => ErrorKind::Permission,
        "not_found_error" => ErrorKind::NotFound,
        "rate_limit_error" => ErrorKind::RateLimited,
        "api_error" | "timeout_error" => ErrorKind::Server,
        "overloaded_error" => ErrorKind::Overloaded,
        _ => return None,
    })
}

/// Anthropic signals overload with 529, not 503.
fn kind_of_status(status: u16) -> ErrorKind {
    match status {
        529 => ErrorKind::Overloaded,
        503 => ErrorKind::Server,
        other => super::kind_of_status(other),
    }
}

/// Refines an invalid request by its message.
fn refine_by_message(kind: ErrorKind, message: &str) -> ErrorKind {
    if kind != ErrorKind::InvalidRequest {
        return kind;
    }
    let message = message.to_ascii_lowercase();
    if ["prompt is too long", "exceed context limit", "context window"].iter().any(|m| message.contains(m)) {
        ErrorKind::ContextLength
    } else if message.contains("credit balance is too low") {
        // [obs] Anthropic reports an empty prepaid balance as a 400
        // invalid_request_error, not as 402 billing_error.
        ErrorKind::Billing
    } else {
        kind
    }
}

/// `(error.type, error.message)` of an Anthropic error body, when it has that shape.
fn error_parts(body: &[u8]) -> Option<(String, String)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let kind = error.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
    let message = error.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
    Some((kind, message))
}

/// [`TranslateError::Upstream`] for an Anthropic `error` object (stream event or body).
fn upstream_error(error: &Value) -> TranslateError {
    let error_type = error.get("type").and_then(Value::as_str).unwrap_or("api_error").to_owned();
    let message = error.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
    let kind = refine_by_message(kind_of_type(&error_type).unwrap_or(ErrorKind::Server), &message);
    TranslateError::Upstream { kind, error_type, message }
}

/// Classifies an Anthropic error answer (digest §3.4, §10.1).
///
/// The body's `error.type` decides when Anthropic's shape is there
/// (`overloaded_error` → [`ErrorKind::Overloaded`], `billing_error` →
/// [`ErrorKind::Billing`], ...); an `invalid_request_error` whose message says
/// the prompt is too long or exceeds the context limit is
/// [`ErrorKind::ContextLength`], one about the credit balance is
/// [`ErrorKind::Billing`]. Without a known type (a 413 from Cloudflare, an
/// HTML 502), the status decides: 400/413/422 invalid request, 401, 402,
/// 403, 404, 429, 529 overloaded, 408/409/5xx server, anything else other.
pub fn classify_error(status: u16, body: &[u8]) -> ErrorKind {
    let (error_type, message) = error_parts(body).unwrap_or_default();
    let kind = kind_of_type(&error_type).unwrap_or_else(|| kind_of_status(status));
    refine_by_message(kind, &message)
}

/// OpenAI's error JSON (`{"error": {message, type, param, code}}`) for an
/// Anthropic error answer.
///
/// `message` is Anthropic's message verbatim (or, for a body without
/// Anthropic's shape, `anthropic answered HTTP <status>` and the start of the
/// body); `type` and `code` follow [`classify_error`] via
/// [`ErrorKind::openai_type`] and [`ErrorKind::openai_code`], and `code`
/// falls back to Anthropic's `error.type` so nothing is lost.
pub fn to_openai_error(status: u16, body: &[u8]) -> Value {
    let kind = classify_error(status, body);
    let (error_type, message) = match error_parts(body) {
        Some((error_type, message)) if !message.is_empty() => (Some(error_type), message),
        parts => (parts.map(|(t, _)| t), body_message("anthropic", status, body)),
    };
    let code =
        kind.openai_code().map(str::to_owned).or(error_type.filter(|t| !t.is_empty() && t != kind.openai_type()));
    json!({"error": {"message": message, "type": kind.openai_type(), "param": null, "code": code}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse;

    const CREATED: u64 = 1_764_460_800;

    fn request(body: Value) -> Result<Value, TranslateError> {
        request_with(body, &AnthropicDefaults::default())
    }

    fn request_with(body: Value, defaults: &AnthropicDefaults) -> Result<Value, TranslateError> {
        let Value::Object(body) = body else { panic!("test bodies are objects") };
        chat_to_messages(&body, "claude-sonnet-5-5", defaults)
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    fn weather_tool() -> Value {
        json!({"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }})
    }

    fn anthropic_weather_tool() -> Value {
        json!({"name": "get_weather", "description": "Current weather for a city",
               "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}})
    }

    // === request ===

    #[test]
    fn translates_the_digest_tool_round_trip_into_the_digest_anthropic_request() {
        let body = json!({
            "model": "chat",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "toolu_01A9xyz", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_01A9xyz", "content": "-3C, snow"}
            ],
            "tools": [weather_tool()],
            "tool_choice": "auto",
            "max_completion_tokens": 1024,
            "stream": false
        });
        // Digest §3.1, verbatim.
        let expected = json!({
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
            "tools": [anthropic_weather_tool()],
            "tool_choice": {"type": "auto"},
            "stream": false
        });
        assert_eq!(request(body).unwrap(), expected);
    }

    #[test]
    fn translates_the_digest_openai_example_with_an_image_and_stream_options() {
        // Digest §1.1.
        let body = json!({
            "model": "gpt-5.4-mini",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Oslo?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo..."}}
                ]}
            ],
            "tools": [weather_tool()],
            "tool_choice": "auto",
            "max_completion_tokens": 512,
            "stream": true,
            "stream_options": {"include_usage": true}
        });
        let expected = json!({
            "model": "claude-sonnet-5-5",
            "max_tokens": 512,
            "system": "You are terse.",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Weather in Oslo?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo..."}}
            ]}],
            "tools": [anthropic_weather_tool()],
            "tool_choice": {"type": "auto"},
            "stream": true
        });
        assert_eq!(request(body).unwrap(), expected);
    }

    #[test]
    fn hoists_system_and_developer_messages_from_anywhere_in_order() {
        let body = json!({"messages": [
            {"role": "system", "content": "Be brief."},
            user("hi"),
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}, {"type": "text", "text": ""}]},
            {"role": "assistant", "content": "Bonjour."},
            {"role": "system", "content": "Never use emoji."},
            user("and now?")
        ]});
        let out = request(body).unwrap();
        assert_eq!(out["system"], json!("Be brief.\n\nAnswer in French.\n\nNever use emoji."));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Bonjour."},
                {"role": "user", "content": "and now?"}
            ])
        );
    }

    #[test]
    fn keeps_system_as_blocks_when_a_part_carries_cache_control() {
        let body = json!({"messages": [
            {"role": "system", "content": [
                {"type": "text", "text": "A long shared preamble.", "cache_control": {"type": "ephemeral"}}]},
            {"role": "developer", "content": "Be brief."},
            user("hi")
        ]});
        assert_eq!(
            request(body).unwrap()["system"],
            json!([
                {"type": "text", "text": "A long shared preamble.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Be brief."}
            ])
        );
    }

    #[test]
    fn merges_consecutive_same_role_messages_into_one_turn() {
        let body = json!({"messages": [
            user("first"),
            {"role": "user", "content": [
                {"type": "text", "text": "second"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}}
            ]},
            {"role": "user", "content": ""},
            {"role": "assistant", "content": "one"},
            {"role": "assistant", "content": [{"type": "text", "text": "two"}]}
        ]});
        assert_eq!(
            request(body).unwrap()["messages"],
            json!([
                {"role": "user", "content": [
                    {"type": "text", "text": "first"},
                    {"type": "text", "text": "second"},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}
            ])
        );
    }

    #[test]
    fn puts_parallel_tool_results_in_one_user_turn_before_any_text() {
        let body = json!({"messages": [
            user("Weather in Oslo and Bergen?"),
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Bergen\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": "-3C, snow"},
            user("(Bergen is slow today.)"),
            {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "4C, rain"}]}
        ]});
        assert_eq!(
            request(body).unwrap()["messages"],
            json!([
                {"role": "user", "content": "Weather in Oslo and Bergen?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Oslo"}},
                    {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {"city": "Bergen"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_a", "content": "-3C, snow"},
                    {"type": "tool_result", "tool_use_id": "call_b", "content": [{"type": "text", "text": "4C, rain"}]},
                    {"type": "text", "text": "(Bergen is slow today.)"}
                ]}
            ])
        );
    }

    #[test]
    fn sanitises_foreign_tool_call_ids_the_same_way_on_both_sides() {
        let body = json!({"messages": [
            user("hi"),
            {"role": "assistant", "tool_calls": [
                {"id": "functions.get_weather:0", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": ""}
        ]});
        assert_eq!(
            request(body).unwrap()["messages"],
            json!([
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "functions_get_weather_0", "name": "get_weather", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "functions_get_weather_0"}]}
            ])
        );
    }

    #[test]
    fn converts_data_urls_to_base64_images_and_http_urls_to_url_images() {
        let body = json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}},
            {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGR", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "http://example.com/a.gif"},
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "What differs?"}
        ]}]});
        assert_eq!(
            request(body).unwrap()["messages"][0]["content"],
            json!([
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGR"}},
                {"type": "image", "source": {"type": "url", "url": "http://example.com/a.gif"},
                 "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "What differs?"}
            ])
        );
    }

    #[test]
    fn rejects_images_anthropic_cannot_take_naming_the_part() {
        let bmp = json!({"messages": [user("look"), {"role": "user", "content": [
            {"type": "text", "text": "this"},
            {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0"}}]}]});
        assert_eq!(
            request(bmp).unwrap_err(),
            TranslateError::Unsupported {
                field: "messages[1].content[1].image_url.url".into(),
                message: "`messages[1].content[1].image_url.url` has media type `image/bmp`, which anthropic does not \
                          accept: send a jpeg, png, gif or webp image"
                    .into(),
            }
        );
        let ftp = json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}]}]});
        let error = request(ftp).unwrap_err();
        assert_eq!(error.field(), Some("messages[0].content[0].image_url.url"));
        assert!(!error.is_provider_gap());
    }

    #[test]
    fn sends_inline_pdfs_as_documents_and_rejects_audio_and_file_ids() {
        let pdf = json!({"messages": [{"role": "user", "content": [
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0"}},
            {"type": "text", "text": "Summarise."}]}]});
        assert_eq!(
            request(pdf).unwrap()["messages"][0]["content"][0],
            json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0"}})
        );
        let audio = json!({"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}}]}]});
        let error = request(audio).unwrap_err();
        assert_eq!(error.field(), Some("messages[0].content[0]"));
        assert!(error.is_provider_gap());
        let file_id = json!({"messages": [{"role": "user", "content": [
            {"type": "file", "file": {"file_id": "file-abc"}}]}]});
        assert_eq!(request(file_id).unwrap_err().field(), Some("messages[0].content[0].file"));
    }

    #[test]
    fn maps_every_tool_choice_form() {
        let cases = [
            (json!("none"), json!({"type": "none"})),
            (json!("auto"), json!({"type": "auto"})),
            (json!("required"), json!({"type": "any"})),
            (
                json!({"type": "function", "function": {"name": "get_weather"}}),
                json!({"type": "tool", "name": "get_weather"}),
            ),
        ];
        for (openai, anthropic) in cases {
            let body = json!({"messages": [user("hi")], "tools": [weather_tool()], "tool_choice": openai});
            assert_eq!(request(body).unwrap()["tool_choice"], anthropic, "for {openai}");
        }
        let allowed = json!({"messages": [user("hi")], "tools": [weather_tool()],
            "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}});
        assert!(request(allowed).unwrap_err().is_provider_gap());
        let bogus = json!({"messages": [user("hi")], "tools": [weather_tool()], "tool_choice": "sometimes"});
        assert_eq!(request(bogus).unwrap_err().field(), Some("tool_choice"));
    }

    #[test]
    fn parallel_tool_calls_false_disables_parallel_use_except_on_none() {
        let cases = [
            (None, json!({"type": "auto", "disable_parallel_tool_use": true})),
            (Some(json!("required")), json!({"type": "any", "disable_parallel_tool_use": true})),
            (
                Some(json!({"type": "function", "function": {"name": "get_weather"}})),
                json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}),
            ),
            (Some(json!("none")), json!({"type": "none"})),
        ];
        for (choice, expected) in cases {
            let mut body = json!({"messages": [user("hi")], "tools": [weather_tool()], "parallel_tool_calls": false});
            if let Some(choice) = choice {
                body["tool_choice"] = choice;
            }
            assert_eq!(request(body).unwrap()["tool_choice"], expected);
        }
        let parallel = json!({"messages": [user("hi")], "tools": [weather_tool()], "parallel_tool_calls": true});
        assert_eq!(request(parallel).unwrap().get("tool_choice"), None);
    }

    #[test]
    fn drops_tool_choice_when_no_tools_are_sent() {
        let body = json!({"messages": [user("hi")], "tool_choice": "none", "parallel_tool_calls": false, "tools": []});
        let out = request(body).unwrap();
        assert_eq!(out.get("tool_choice"), None);
        assert_eq!(out.get("tools"), None);
    }

    #[test]
    fn gives_tools_without_parameters_an_empty_object_schema_and_keeps_strict() {
        let body = json!({"messages": [user("hi")], "tools": [
            {"type": "function", "function": {"name": "now", "strict": true}}]});
        assert_eq!(
            request(body).unwrap()["tools"],
            json!([{"name": "now", "input_schema": {"type": "object", "properties": {}}, "strict": true}])
        );
        let custom = json!({"messages": [user("hi")], "tools": [{"type": "custom", "custom": {"name": "x"}}]});
        assert_eq!(request(custom).unwrap_err().field(), Some("tools[0].type"));
    }

    #[test]
    fn defaults_max_tokens_to_4096_when_the_client_sets_none() {
        let out = request(json!({"messages": [user("hi")]})).unwrap();
        assert_eq!(
            out,
            json!({"model": "claude-sonnet-5-5", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}]})
        );
        let defaults = AnthropicDefaults { max_tokens: 1000, ..AnthropicDefaults::default() };
        assert_eq!(request_with(json!({"messages": [user("hi")]}), &defaults).unwrap()["max_tokens"], json!(1000));
    }

    #[test]
    fn prefers_max_completion_tokens_and_caps_at_the_model_maximum() {
        let both = json!({"messages": [user("hi")], "max_completion_tokens": 300, "max_tokens": 200});
        assert_eq!(request(both).unwrap()["max_tokens"], json!(300));
        let legacy = json!({"messages": [user("hi")], "max_tokens": 200, "max_completion_tokens": null});
        assert_eq!(request(legacy).unwrap()["max_tokens"], json!(200));
        let capped = AnthropicDefaults { max_tokens: 10_000, max_output_tokens: Some(8192), drop_params: vec![] };
        let huge = json!({"messages": [user("hi")], "max_completion_tokens": 100_000});
        assert_eq!(request_with(huge, &capped).unwrap()["max_tokens"], json!(8192));
        assert_eq!(request_with(json!({"messages": [user("hi")]}), &capped).unwrap()["max_tokens"], json!(8192));
        let negative = json!({"messages": [user("hi")], "max_tokens": -1});
        assert_eq!(request(negative).unwrap_err().field(), Some("max_tokens"));
    }

    #[test]
    fn clamps_temperature_to_one_and_passes_top_p_and_top_k() {
        let hot = json!({"messages": [user("hi")], "temperature": 1.7, "top_p": 0.9, "top_k": 40});
        let out = request(hot).unwrap();
        assert_eq!((&out["temperature"], &out["top_p"], &out["top_k"]), (&json!(1.0), &json!(0.9), &json!(40)));
        assert_eq!(request(json!({"messages": [user("hi")], "temperature": 2})).unwrap()["temperature"], json!(1.0));
        assert_eq!(request(json!({"messages": [user("hi")], "temperature": 0.3})).unwrap()["temperature"], json!(0.3));
        assert_eq!(request(json!({"messages": [user("hi")], "temperature": 0})).unwrap()["temperature"], json!(0));
        for bad in [json!(2.5), json!(-0.1), json!("warm")] {
            assert_eq!(
                request(json!({"messages": [user("hi")], "temperature": bad})).unwrap_err(),
                TranslateError::InvalidRequest {
                    field: "temperature".into(),
                    message: "`temperature` must be a number from 0 to 2".into()
                }
            );
        }
    }

    #[test]
    fn drops_the_params_a_model_rejects() {
        let defaults = AnthropicDefaults {
            drop_params: vec!["temperature".into(), "top_p".into()],
            ..AnthropicDefaults::default()
        };
        let out = request_with(json!({"messages": [user("hi")], "temperature": 0.2, "top_p": 0.5}), &defaults).unwrap();
        assert_eq!(out.get("temperature"), None);
        assert_eq!(out.get("top_p"), None);
    }

    #[test]
    fn rejects_n_greater_than_one_saying_anthropic_has_no_n() {
        let error = request(json!({"messages": [user("hi")], "n": 3})).unwrap_err();
        assert_eq!(
            error,
            TranslateError::Unsupported {
                field: "n".into(),
                message: "`n` is 3, but anthropic has no `n` and returns a single choice per request: \
                          omit `n` (or set it to 1) and send one request per choice you need"
                    .into(),
            }
        );
        assert!(error.is_provider_gap());
        assert_eq!(request(json!({"messages": [user("hi")], "n": 1})).unwrap().get("n"), None);
        assert_eq!(request(json!({"messages": [user("hi")], "n": 0})).unwrap_err().field(), Some("n"));
    }

    #[test]
    fn rejects_invalid_tool_arguments_naming_the_exact_field() {
        let body = json!({"messages": [
            user("hi"),
            {"role": "assistant", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":"}}
            ]}
        ]});
        assert_eq!(
            request(body).unwrap_err(),
            TranslateError::InvalidRequest {
                field: "messages[1].tool_calls[1].function.arguments".into(),
                message: "`messages[1].tool_calls[1].function.arguments` is not valid JSON \
                          (EOF while parsing a value at line 1 column 8): send the arguments as a JSON-encoded \
                          object, e.g. \"{\\\"city\\\":\\\"Oslo\\\"}\""
                    .into(),
            }
        );
        let array = json!({"messages": [user("hi"), {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]});
        assert_eq!(
            request(array).unwrap_err().to_string(),
            "`messages[1].tool_calls[0].function.arguments` must encode a JSON object (anthropic takes tool arguments as an object)"
        );
    }

    #[test]
    fn maps_stop_strings_and_arrays_to_stop_sequences() {
        let one = json!({"messages": [user("hi")], "stop": "END"});
        assert_eq!(request(one).unwrap()["stop_sequences"], json!(["END"]));
        let many = json!({"messages": [user("hi")], "stop": ["END", "\n\nHuman:"]});
        assert_eq!(request(many).unwrap()["stop_sequences"], json!(["END", "\n\nHuman:"]));
        let bad = json!({"messages": [user("hi")], "stop": ["END", 4]});
        assert_eq!(request(bad).unwrap_err().field(), Some("stop[1]"));
    }

    #[test]
    fn maps_user_and_safety_identifier_to_metadata_user_id() {
        let out = request(json!({"messages": [user("hi")], "user": "alice"})).unwrap();
        assert_eq!(out["metadata"], json!({"user_id": "alice"}));
        let both = json!({"messages": [user("hi")], "user": "alice", "safety_identifier": "hash-42"});
        assert_eq!(request(both).unwrap()["metadata"], json!({"user_id": "hash-42"}));
    }

    #[test]
    fn maps_json_schema_response_format_to_output_config() {
        let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}},
                            "required": ["answer"], "additionalProperties": false});
        let body = json!({"messages": [user("hi")], "response_format":
            {"type": "json_schema", "json_schema": {"name": "reply", "strict": true, "schema": schema}}});
        assert_eq!(
            request(body).unwrap()["output_config"],
            json!({"format": {"type": "json_schema", "schema": schema}})
        );
        let missing = json!({"messages": [user("hi")], "response_format": {"type": "json_schema", "json_schema": {}}});
        assert_eq!(request(missing).unwrap_err().field(), Some("response_format.json_schema.schema"));
    }

    #[test]
    fn json_object_mode_becomes_a_system_instruction() {
        let body = json!({"messages": [{"role": "system", "content": "Be brief."}, user("hi")],
                          "response_format": {"type": "json_object"}});
        assert_eq!(
            request(body).unwrap()["system"],
            json!("Be brief.\n\nRespond with a single valid JSON object and nothing else.")
        );
        let text = request(json!({"messages": [user("hi")], "response_format": {"type": "text"}})).unwrap();
        assert_eq!((text.get("system"), text.get("output_config")), (None, None));
    }

    #[test]
    fn drops_openai_only_fields() {
        let body = json!({"messages": [user("hi")], "seed": 7, "presence_penalty": 0.5, "frequency_penalty": 0.5,
            "logit_bias": {"50256": -100}, "logprobs": true, "top_logprobs": 2, "metadata": {"k": "v"},
            "store": true, "service_tier": "flex", "reasoning_effort": "low", "stream_options": {"include_usage": true},
            "prompt_cache_key": "x", "stream": true});
        assert_eq!(
            request(body).unwrap(),
            json!({"model": "claude-sonnet-5-5", "max_tokens": 4096, "stream": true,
                   "messages": [{"role": "user", "content": "hi"}]})
        );
    }

    #[test]
    fn puts_a_user_turn_before_a_conversation_that_starts_with_the_assistant() {
        let body = json!({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "Hello!"},
                                       user("hi")]});
        assert_eq!(
            request(body).unwrap()["messages"],
            json!([
                {"role": "user", "content": "(continued)"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "hi"}
            ])
        );
    }

    #[test]
    fn trims_trailing_whitespace_of_an_assistant_prefill() {
        let body = json!({"messages": [user("Give JSON."), {"role": "assistant", "content": "{\n  "}]});
        assert_eq!(
            request(body).unwrap()["messages"],
            json!([{"role": "user", "content": "Give JSON."}, {"role": "assistant", "content": "{"}])
        );
    }

    #[test]
    fn rejects_a_conversation_of_only_system_messages() {
        let error = request(json!({"messages": [{"role": "system", "content": "s"}]})).unwrap_err();
        assert_eq!(error.field(), Some("messages"));
        assert!(error.is_provider_gap());
        assert!(error.to_string().contains("add a user message"));
    }

    #[test]
    fn rejects_unknown_roles_and_the_legacy_function_role() {
        let error = request(json!({"messages": [{"role": "robot", "content": "x"}]})).unwrap_err();
        assert_eq!(error.to_string(), "`messages[0].role` is `robot`: use system, developer, user, assistant or tool");
        let legacy = request(json!({"messages": [user("hi"), {"role": "function", "name": "f", "content": "1"}]}));
        assert_eq!(legacy.unwrap_err().field(), Some("messages[1].role"));
        let no_id = request(json!({"messages": [user("hi"), {"role": "tool", "content": "1"}]})).unwrap_err();
        assert_eq!(no_id.field(), Some("messages[1].tool_call_id"));
    }

    // === response ===

    fn response(body: Value) -> Result<Value, TranslateError> {
        messages_to_chat_at(body.to_string().as_bytes(), "chat", CREATED)
    }

    #[test]
    fn translates_the_digest_response_with_text_and_a_tool_call() {
        // Digest §3.2, verbatim.
        let anthropic = json!({
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-5-5",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01A9xyz", "name": "get_weather", "input": {"city": "Oslo"}}
            ],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 120, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2048,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                "output_tokens": 41, "service_tier": "standard"
            }
        });
        assert_eq!(
            response(anthropic).unwrap(),
            json!({
                "id": "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
                "object": "chat.completion",
                "created": CREATED,
                "model": "claude-sonnet-5-5",
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Checking.",
                        "refusal": null,
                        "tool_calls": [{"id": "toolu_01A9xyz", "type": "function",
                                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]
                    },
                    "logprobs": null,
                    "finish_reason": "tool_calls"
                }],
                "usage": {
                    "prompt_tokens": 2168, "completion_tokens": 41, "total_tokens": 2209,
                    "prompt_tokens_details": {"cached_tokens": 2048, "cache_write_tokens": 0}
                }
            })
        );
    }

    #[test]
    fn keeps_tool_argument_keys_in_the_order_anthropic_sent_them() {
        let raw = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-5","content":[
            {"type":"tool_use","id":"toolu_1","name":"book","input":{"when": "today", "city": "Oslo",
             "party": {"size": 2, "names": ["Ada", "Bo"]}, "note": null, "budget": 12.5}}],
            "stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}}"#;
        let out = messages_to_chat_at(raw.as_bytes(), "chat", CREATED).unwrap();
        assert_eq!(
            out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            json!(
                r#"{"when":"today","city":"Oslo","party":{"size":2,"names":["Ada","Bo"]},"note":null,"budget":12.5}"#
            )
        );
        assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
    }

    #[test]
    fn maps_every_stop_reason_to_a_finish_reason() {
        let cases = [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            ("something_new", "stop"),
        ];
        for (stop_reason, expected) in cases {
            let anthropic = json!({"id": "msg_1", "type": "message", "model": "m", "content": [],
                                   "stop_reason": stop_reason, "usage": {}});
            assert_eq!(response(anthropic).unwrap()["choices"][0]["finish_reason"], json!(expected), "{stop_reason}");
        }
    }

    #[test]
    fn joins_text_blocks_skips_thinking_and_counts_cache_writes_and_thinking() {
        let anthropic = json!({
            "id": "msg_2", "type": "message", "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "The user wants...", "signature": "sig"},
                {"type": "text", "text": "Part one. "},
                {"type": "redacted_thinking", "data": "xyz"},
                {"type": "text", "text": "Part two.", "citations": null}
            ],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 500, "cache_read_input_tokens": 0,
                      "output_tokens": 90, "output_tokens_details": {"thinking_tokens": 60}}
        });
        assert_eq!(
            response(anthropic).unwrap(),
            json!({
                "id": "chatcmpl-msg_2", "object": "chat.completion", "created": CREATED,
                // No `model` in the answer: the alias stands in.
                "model": "chat",
                "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Part one. Part two.", "refusal": null}}],
                "usage": {
                    "prompt_tokens": 510, "completion_tokens": 90, "total_tokens": 600,
                    "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 500},
                    "completion_tokens_details": {"reasoning_tokens": 60}
                }
            })
        );
    }

    #[test]
    fn reports_broken_and_error_shaped_answers() {
        let broken = messages_to_chat_at(b"<html>oops</html>", "chat", CREATED).unwrap_err();
        assert!(matches!(broken, TranslateError::InvalidResponse(_)), "{broken:?}");
        let wrong = response(json!({"object": "chat.completion"})).unwrap_err();
        assert!(matches!(wrong, TranslateError::InvalidResponse(_)), "{wrong:?}");
        let error = response(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
        assert_eq!(
            error.unwrap_err(),
            TranslateError::Upstream {
                kind: ErrorKind::Overloaded,
                error_type: "overloaded_error".into(),
                message: "Overloaded".into()
            }
        );
    }

    // === stream ===

    /// Runs an SSE fixture through the proxy's SSE parser, in 7-byte reads,
    /// and the translator; returns the payloads and the first error.
    fn run_stream(
        sse_text: &str,
        translator: &mut StreamTranslator,
    ) -> (Vec<Value>, Vec<String>, Option<TranslateError>) {
        let mut parser = sse::Parser::default();
        let mut payloads = Vec::new();
        for bytes in sse_text.as_bytes().chunks(7) {
            parser.push(bytes);
            while let Some(event) = parser.next_event() {
                match translator.on_event(&event.event, &event.data) {
                    Ok(out) => payloads.extend(out),
                    Err(error) => {
                        let values = payloads.iter().filter(|p| *p != "[DONE]").map(|p| parse(p)).collect();
                        return (values, payloads, Some(error));
                    }
                }
            }
        }
        let values = payloads.iter().filter(|p| *p != "[DONE]").map(|p| parse(p)).collect();
        (values, payloads, None)
    }

    fn parse(payload: &str) -> Value {
        serde_json::from_str(payload).unwrap()
    }

    /// An OpenAI chunk as the translator must build it.
    fn chunk(id: &str, model: &str, delta: Value, finish_reason: Option<&str>, usage_key: bool) -> Value {
        let mut chunk = json!({
            "id": id, "object": "chat.completion.chunk", "created": CREATED, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]
        });
        if usage_key {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    #[test]
    fn streams_the_digest_tool_use_conversation_as_openai_chunks() {
        let mut translator = StreamTranslator::with_created("chat", true, CREATED);
        let fixture = include_str!("../../tests/fixtures/anthropic/tool_use_stream.sse");
        let (chunks, payloads, error) = run_stream(fixture, &mut translator);
        assert_eq!(error, None);
        // The wire form of the first chunk, byte for byte (keys sorted).
        assert_eq!(
            payloads[0],
            r#"{"choices":[{"delta":{"content":"","role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],"created":1764460800,"id":"chatcmpl-msg_01","model":"claude-sonnet-5-5","object":"chat.completion.chunk","usage":null}"#
        );
        let c = |delta: Value, finish: Option<&str>| chunk("chatcmpl-msg_01", "claude-sonnet-5-5", delta, finish, true);
        assert_eq!(
            chunks,
            vec![
                c(json!({"role": "assistant", "content": ""}), None),
                c(json!({"content": "Checking."}), None),
                c(
                    json!({"tool_calls": [{"index": 0, "id": "toolu_01A9xyz", "type": "function",
                                           "function": {"name": "get_weather", "arguments": ""}}]}),
                    None
                ),
                c(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}), None),
                c(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}), None),
                c(json!({}), Some("tool_calls")),
                json!({
                    "id": "chatcmpl-msg_01", "object": "chat.completion.chunk", "created": CREATED,
                    "model": "claude-sonnet-5-5", "choices": [],
                    "usage": {"prompt_tokens": 120, "completion_tokens": 41, "total_tokens": 161,
                              "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}}
                }),
            ]
        );
        assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(payloads.len(), 8);
        assert!(translator.is_done());
        assert_eq!(
            translator.usage(),
            Some(TokenUsage { prompt_tokens: 120, completion_tokens: 41, ..TokenUsage::default() })
        );
    }

    #[test]
    fn streams_text_with_a_final_usage_chunk_counting_cache_reads_and_writes() {
        let mut translator = StreamTranslator::with_created("chat", true, CREATED);
        let fixture = include_str!("../../tests/fixtures/anthropic/text_stream.sse");
        let (chunks, payloads, error) = run_stream(fixture, &mut translator);
        assert_eq!(error, None);
        let c = |delta: Value, finish: Option<&str>| chunk("chatcmpl-msg_02", "claude-haiku-5", delta, finish, true);
        assert_eq!(
            chunks,
            vec![
                c(json!({"role": "assistant", "content": ""}), None),
                c(json!({"content": "Hello"}), None),
                c(json!({"content": ", world."}), None),
                c(json!({}), Some("length")),
                json!({
                    "id": "chatcmpl-msg_02", "object": "chat.completion.chunk", "created": CREATED,
                    "model": "claude-haiku-5", "choices": [],
                    "usage": {"prompt_tokens": 2160, "completion_tokens": 5, "total_tokens": 2165,
                              "prompt_tokens_details": {"cached_tokens": 2048, "cache_write_tokens": 100}}
                }),
            ]
        );
        assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(
            translator.usage(),
            Some(TokenUsage {
                prompt_tokens: 2160,
                completion_tokens: 5,
                cached_tokens: 2048,
                cache_write_tokens: 100,
                reasoning_tokens: None
            })
        );
    }

    #[test]
    fn leaves_out_usage_keys_and_the_usage_chunk_when_not_asked() {
        let mut translator = StreamTranslator::with_created("chat", false, CREATED);
        let fixture = include_str!("../../tests/fixtures/anthropic/text_stream.sse");
        let (chunks, payloads, _) = run_stream(fixture, &mut translator);
        let c = |delta: Value, finish: Option<&str>| chunk("chatcmpl-msg_02", "claude-haiku-5", delta, finish, false);
        assert_eq!(
            chunks,
            vec![
                c(json!({"role": "assistant", "content": ""}), None),
                c(json!({"content": "Hello"}), None),
                c(json!({"content": ", world."}), None),
                c(json!({}), Some("length")),
            ]
        );
        assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
        // Counted all the same, for the proxy's metrics.
        assert_eq!(translator.usage().map(|u| u.total_tokens()), Some(2165));
    }

    #[test]
    fn a_mid_stream_error_event_becomes_an_upstream_error_and_never_done() {
        let mut translator = StreamTranslator::with_created("chat", true, CREATED);
        let fixture = include_str!("../../tests/fixtures/anthropic/error_mid_stream.sse");
        let (chunks, payloads, error) = run_stream(fixture, &mut translator);
        let c = |delta: Value| chunk("chatcmpl-msg_03", "claude-sonnet-5-5", delta, None, true);
        assert_eq!(chunks, vec![c(json!({"role": "assistant", "content": ""})), c(json!({"content": "Once upon"}))]);
        assert!(!payloads.iter().any(|p| p == "[DONE]"));
        let error = error.unwrap();
        assert_eq!(
            error,
            TranslateError::Upstream {
                kind: ErrorKind::Overloaded,
                error_type: "overloaded_error".into(),
                message: "Overloaded".into()
            }
        );
        assert_eq!(error.to_string(), "the upstream reported `overloaded_error`: Overloaded");
        assert!(error.kind().retryable());
        assert!(!translator.is_done());
        // Partial usage: the input side is known.
        assert_eq!(translator.usage().map(|u| u.prompt_tokens), Some(30));
    }

    #[test]
    fn an_error_before_any_content_carries_its_kind_for_failover() {
        let mut translator = StreamTranslator::with_created("chat", true, CREATED);
        let error = translator
            .on_event("error", r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#)
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::RateLimited);
        assert_eq!(translator.usage(), None);
    }

    #[test]
    fn numbers_tool_calls_from_zero_past_thinking_blocks_and_fills_empty_arguments() {
        let mut translator = StreamTranslator::with_created("chat", false, CREATED);
        let events = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_4","model":"claude-opus-5-5","usage":{"input_tokens":9,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Two lookups."}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}"#,
            ),
            ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_a","name":"now","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            ),
            ("content_block_stop", r#"{"type":"content_block_stop","index":1}"#),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_b","name":"get_weather","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\":\"Oslo\"}"}}"#,
            ),
            ("content_block_stop", r#"{"type":"content_block_stop","index":2}"#),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":70,"output_tokens_details":{"thinking_tokens":20}}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ];
        let mut chunks = Vec::new();
        for (event, data) in events {
            chunks.extend(translator.on_event(event, data).unwrap());
        }
        let c = |delta: Value, finish: Option<&str>| chunk("chatcmpl-msg_4", "claude-opus-5-5", delta, finish, false);
        let tool_start = |index: u32, id: &str, name: &str| {
            json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                   "function": {"name": name, "arguments": ""}}]})
        };
        let arguments =
            |index: u32, text: &str| json!({"tool_calls": [{"index": index, "function": {"arguments": text}}]});
        let expected: Vec<String> = vec![
            c(json!({"role": "assistant", "content": ""}), None).to_string(),
            c(tool_start(0, "toolu_a", "now"), None).to_string(),
            c(arguments(0, "{}"), None).to_string(),
            c(tool_start(1, "toolu_b", "get_weather"), None).to_string(),
            c(arguments(1, "{\"city\":\"Oslo\"}"), None).to_string(),
            c(json!({}), Some("tool_calls")).to_string(),
            "[DONE]".to_owned(),
        ];
        assert_eq!(chunks, expected);
        assert_eq!(translator.usage().and_then(|u| u.reasoning_tokens), Some(20));
    }

    #[test]
    fn ignores_pings_unknown_events_and_anything_after_message_stop() {
        let mut translator = StreamTranslator::with_created("chat", false, CREATED);
        assert_eq!(translator.on_event("ping", ""), Ok(vec![]));
        let start = r#"{"type":"message_start","message":{"id":"msg_5","model":"m","usage":{"input_tokens":1}}}"#;
        assert_eq!(translator.on_event("message_start", start).unwrap().len(), 1);
        assert_eq!(translator.on_event("brand_new_event", r#"{"type":"brand_new_event"}"#), Ok(vec![]));
        // No event name: the data's `type` decides.
        let stop = translator.on_event("", r#"{"type":"message_stop"}"#).unwrap();
        assert_eq!(
            stop,
            vec![chunk("chatcmpl-msg_5", "m", json!({}), Some("stop"), false).to_string(), "[DONE]".to_owned()]
        );
        assert_eq!(translator.on_event("message_stop", r#"{"type":"message_stop"}"#), Ok(vec![]));
    }

    #[test]
    fn rejects_streams_that_break_the_protocol() {
        let mut early = StreamTranslator::with_created("chat", false, CREATED);
        let delta = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#;
        assert_eq!(
            early.on_event("content_block_delta", delta),
            Err(TranslateError::InvalidResponse("anthropic sent `content_block_delta` before `message_start`".into()))
        );
        let mut orphan = StreamTranslator::with_created("chat", false, CREATED);
        orphan.on_event("message_start", r#"{"type":"message_start","message":{"id":"m"}}"#).unwrap();
        assert!(matches!(orphan.on_event("content_block_delta", delta), Err(TranslateError::InvalidResponse(_))));
        assert!(matches!(orphan.on_event("content_block_delta", "{not json"), Err(TranslateError::InvalidResponse(_))));
        assert_eq!(orphan.on_event("content_block_delta", "{not json").unwrap_err().kind(), ErrorKind::Server);
    }

    // === errors ===

    fn anthropic_error(error_type: &str, message: &str) -> Vec<u8> {
        json!({"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn classifies_anthropic_error_answers() {
        let cases: Vec<(u16, Vec<u8>, ErrorKind)> = vec![
            (
                400,
                anthropic_error("invalid_request_error", "messages: roles must alternate"),
                ErrorKind::InvalidRequest,
            ),
            (
                400,
                anthropic_error("invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"),
                ErrorKind::ContextLength,
            ),
            (
                400,
                anthropic_error(
                    "invalid_request_error",
                    "input length and `max_tokens` exceed context limit: 190000 + 20000 > 200000, \
                     decrease input length or `max_tokens` and try again",
                ),
                ErrorKind::ContextLength,
            ),
            (
                400,
                anthropic_error(
                    "invalid_request_error",
                    "Your credit balance is too low to access the Anthropic API. \
                     Please go to Plans & Billing to upgrade or purchase credits.",
                ),
                ErrorKind::Billing,
            ),
            (401, anthropic_error("authentication_error", "invalid x-api-key"), ErrorKind::Authentication),
            (402, anthropic_error("billing_error", "Your account has a billing issue."), ErrorKind::Billing),
            (
                403,
                anthropic_error(
                    "permission_error",
                    "Your API key does not have permission to use the specified resource.",
                ),
                ErrorKind::Permission,
            ),
            (404, anthropic_error("not_found_error", "model: claude-nope"), ErrorKind::NotFound),
            (
                413,
                anthropic_error("request_too_large", "Request exceeds the maximum allowed number of bytes."),
                ErrorKind::InvalidRequest,
            ),
            (
                413,
                b"<html><body><h1>413 Request Entity Too Large</h1></body></html>".to_vec(),
                ErrorKind::InvalidRequest,
            ),
            (
                429,
                anthropic_error("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
                ErrorKind::RateLimited,
            ),
            (500, anthropic_error("api_error", "Internal server error"), ErrorKind::Server),
            (504, anthropic_error("timeout_error", "Request timed out"), ErrorKind::Server),
            (529, anthropic_error("overloaded_error", "Overloaded"), ErrorKind::Overloaded),
            (529, Vec::new(), ErrorKind::Overloaded),
            (502, b"Bad Gateway".to_vec(), ErrorKind::Server),
            (418, Vec::new(), ErrorKind::Other),
        ];
        for (status, body, expected) in cases {
            assert_eq!(classify_error(status, &body), expected, "{status} {}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn error_kinds_say_whether_to_retry_and_whether_to_fall_back() {
        use ErrorKind::*;
        let table = [
            (InvalidRequest, false, false),
            (ContextLength, false, false),
            (Authentication, false, true),
            (Permission, false, true),
            (NotFound, false, true),
            (RateLimited, true, true),
            (Overloaded, true, true),
            (Server, true, true),
            (Billing, false, true),
            (Other, false, false),
        ];
        for (kind, retry, fallback) in table {
            assert_eq!((kind.retryable(), kind.fallback_ok()), (retry, fallback), "{kind:?}");
        }
    }

    #[test]
    fn renders_anthropic_errors_as_openai_errors_keeping_the_message() {
        let cases = [
            (
                529,
                anthropic_error("overloaded_error", "Overloaded"),
                json!({"error": {"message": "Overloaded", "type": "server_error", "param": null,
                                 "code": "overloaded_error"}}),
            ),
            (
                400,
                anthropic_error("invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"),
                json!({"error": {"message": "prompt is too long: 215000 tokens > 200000 maximum",
                                 "type": "invalid_request_error", "param": null, "code": "context_length_exceeded"}}),
            ),
            (
                400,
                anthropic_error(
                    "invalid_request_error",
                    "messages.1.content.0.text: text content blocks must be non-empty",
                ),
                json!({"error": {"message": "messages.1.content.0.text: text content blocks must be non-empty",
                                 "type": "invalid_request_error", "param": null, "code": null}}),
            ),
            (
                429,
                anthropic_error("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
                json!({"error": {"message": "Number of request tokens has exceeded your per-minute rate limit",
                                 "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}}),
            ),
            (
                401,
                anthropic_error("authentication_error", "invalid x-api-key"),
                json!({"error": {"message": "invalid x-api-key", "type": "authentication_error", "param": null,
                                 "code": "invalid_api_key"}}),
            ),
            (
                403,
                anthropic_error(
                    "permission_error",
                    "Your API key does not have permission to use the specified resource.",
                ),
                json!({"error": {"message": "Your API key does not have permission to use the specified resource.",
                                 "type": "permission_error", "param": null, "code": null}}),
            ),
            (
                404,
                anthropic_error("not_found_error", "model: claude-nope"),
                json!({"error": {"message": "model: claude-nope", "type": "invalid_request_error", "param": null,
                                 "code": "not_found_error"}}),
            ),
            (
                402,
                anthropic_error("billing_error", "Your account has a billing issue."),
                json!({"error": {"message": "Your account has a billing issue.", "type": "insufficient_quota",
                                 "param": null, "code": "insufficient_quota"}}),
            ),
            (
                500,
                anthropic_error("api_error", "Internal server error"),
                json!({"error": {"message": "Internal server error", "type": "server_error", "param": null,
                                 "code": "api_error"}}),
            ),
            (
                413,
                b"<html>\n<body><h1>413 Request Entity Too Large</h1></body>\n</html>".to_vec(),
                json!({"error": {"message": "anthropic answered HTTP 413: <html> <body><h1>413 Request Entity Too Large</h1></body> </html>",
                                 "type": "invalid_request_error", "param": null, "code": null}}),
            ),
            (
                529,
                Vec::new(),
                json!({"error": {"message": "anthropic answered HTTP 529", "type": "server_error", "param": null,
                                 "code": null}}),
            ),
        ];
        for (status, body, expected) in cases {
            assert_eq!(to_openai_error(status, &body), expected, "{status}");
        }
    }
}
