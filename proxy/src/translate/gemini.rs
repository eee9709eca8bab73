//! OpenAI chat completions ⇄ Google Gemini `generateContent` /
//! `streamGenerateContent?alt=sse` (AI Studio and Vertex share the body).
//!
//! Four pure pieces, wired in by the request path:
//!
//! - [`chat_to_gemini`]: the client's OpenAI request → the Gemini request
//!   body (the model goes in the URL, `models/{model}:generateContent`);
//! - [`gemini_to_chat`]: Gemini's JSON answer → OpenAI `chat.completion`;
//! - [`GeminiStreamTranslator`]: Gemini's data-only SSE chunks (each one a
//!   whole `GenerateContentResponse`, ending at EOF) → OpenAI
//!   `chat.completion.chunk` data lines, ending with `[DONE]`;
//! - [`classify_error`] / [`to_openai_error`] / [`retry_delay`]: Gemini's
//!   `google.rpc.Status` error answers → [`ErrorKind`], OpenAI's error JSON
//!   and the `RetryInfo` delay.
//!
//! Facts come from the provider digest (`shared/docs/provider-protocols.md`
//! §4 and §9). Where it leaves a choice, this module decides as follows.
//!
//! # Request mapping decisions
//!
//! - **System and developer messages**, wherever they are, are hoisted in
//!   order into `systemInstruction.parts` (one text part each).
//! - **Turns**: `user` → role `user`, `assistant` → role `model`, `tool` →
//!   `functionResponse` parts of a `user` turn. Consecutive turns of one role
//!   are merged; in a user turn the `functionResponse` parts come first.
//!   Empty text is never sent; turns left empty are dropped. A conversation
//!   that starts with the model gets a user turn `"(continued)"` in front; one
//!   with no turn at all is [`TranslateError::Unsupported`].
//! - **Content parts**: `text`; `image_url` with a `data:` URL → `inlineData
//!   {mimeType, data}` (`image/jpg` read as `image/jpeg`); with a Gemini File
//!   API URI (`https://generativelanguage.googleapis.com/...`) or a `gs://`
//!   URI → `fileData {fileUri, mimeType?}` (media type guessed from the
//!   extension, omitted when unknown). Other web URLs are Unsupported: Gemini
//!   does not fetch arbitrary URLs and this translation does no I/O (the
//!   client must inline the image). `input_audio` → `inlineData` `audio/wav`
//!   or `audio/mp3`; `file` with `file_data` → `inlineData` (media type from
//!   the data URL, `application/pdf` for bare base64); `file_id` is Unsupported.
//! - **Tool calls**: `arguments` is parsed into `functionCall.args` (empty →
//!   `{}`; invalid or non-object JSON is InvalidRequest naming the field).
//!   Gemini needs no ids; each `functionCall` part gets
//!   `thoughtSignature: "skip_thought_signature_validator"` (the documented
//!   bypass for history whose signature is unknown, which is always the case
//!   for a stateless gateway) unless
//!   [`GeminiDefaults::thought_signature_bypass`] is off.
//! - **Tool results**: the function name comes from the most recent earlier
//!   assistant tool call with the message's `tool_call_id` (stateless lookup,
//!   digest §9.2.4); an unknown id is InvalidRequest. `response` is the
//!   content itself when it is a JSON object text, else `{"result": text}`
//!   (digest §4.1; text parts are concatenated).
//! - **Tools**: `tools: [{functionDeclarations: [{name, description,
//!   parametersJsonSchema}]}]`. The OpenAI `parameters` JSON Schema is
//!   forwarded verbatim as `parametersJsonSchema`, which accepts JSON Schema
//!   (digest §4.1, §9.2.12), so no keyword is stripped; `strict` is dropped.
//!   `tool_choice`: `auto` → `AUTO`, `none` → `NONE`, `required` → `ANY`,
//!   `{function:{name}}` → `ANY` + `allowedFunctionNames: [name]`,
//!   `allowed_tools` with mode `required` → `ANY` + the names (mode `auto`
//!   is Unsupported: Gemini restricts names only in `ANY`). Without tools,
//!   `tool_choice` is dropped. `parallel_tool_calls` has no equivalent and is
//!   dropped.
//! - **`generationConfig`**: `temperature` (0–2, unchanged), `top_p` →
//!   `topP`, vendor `top_k` → `topK`, `max_completion_tokens` ??
//!   `max_tokens` → `maxOutputTokens` (capped at
//!   [`GeminiDefaults::max_output_tokens`]), `stop` → `stopSequences`, `n` →
//!   `candidateCount`, `seed`, `presence_penalty` / `frequency_penalty` →
//!   `presencePenalty` / `frequencyPenalty`; `response_format` `json_object`
//!   → `responseMimeType: "application/json"`, `json_schema` → that plus
//!   `responseJsonSchema` (JSON Schema as sent, per digest §9.1), `text` →
//!   nothing. `generationConfig` is left out when empty.
//! - **Safety**: [`GeminiDefaults::safety_settings`] are sent verbatim as
//!   `safetySettings` when configured.
//! - **Dropped**: `model`, `stream`, `stream_options` (streaming is the URL),
//!   `user`, `safety_identifier`, `metadata`, `store`, `logit_bias`,
//!   `logprobs`, `top_logprobs`, `service_tier`, `reasoning_effort` (its
//!   mapping to `thinkingConfig` is model-dependent), unknown fields.
//!
//! # Response mapping decisions
//!
//! - `id` = `"chatcmpl-" + responseId`; `created` = gateway clock; `model` =
//!   `modelVersion`, else the requested model.
//! - One choice per candidate (`index` from the candidate). `content` =
//!   non-`thought` text parts concatenated, `null` when none. `functionCall`
//!   parts → `tool_calls` with synthetic ids `call_<responseId>_<n>` (`n`
//!   counting calls across the whole answer from 0; `call_<n>` when there
//!   is no `responseId`), `arguments` = `args` as compact JSON in the order
//!   received (`"{}"` when absent). Ids are unique per answer and the same in
//!   streamed and non-streamed form; requests map them back to names through
//!   the replayed history, so no server-side state is kept.
//! - `finish_reason` ([`finish_reason`], digest §9.5).
//! - A prompt blocked by `promptFeedback.blockReason` (HTTP 200, no
//!   candidates) is one choice with `content: null` and `finish_reason:
//!   "content_filter"`. No candidates and no block reason is
//!   [`TranslateError::InvalidResponse`].
//! - `usage` (digest §9.6): `prompt_tokens` = `promptTokenCount +
//!   toolUsePromptTokenCount`; `cached_tokens` = `cachedContentTokenCount`;
//!   `completion_tokens` = `candidatesTokenCount + thoughtsTokenCount`;
//!   `reasoning_tokens` = `thoughtsTokenCount` when present.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::embeddings::{self, EmbeddingsRequest};
use super::openai_request::{
    Fields, MessageRole, ResponseFormat, ToolCall, chat_message, content_parts, content_type_error, parse_data_url,
    part_text, response_format, stop_sequences, tool_call,
};
use super::{CompactJson, ErrorKind, TokenUsage, TranslateError, body_message, kind_of_status, unix_now};

/// The `thoughtSignature` Gemini documents for replayed function calls
/// whose real signature is unknown.
pub const THOUGHT_SIGNATURE_BYPASS: &str = "skip_thought_signature_validator";

/// The user turn put before a conversation that starts with the model.
const LEADING_USER_TEXT: &str = "(continued)";

/// Per-target settings of the request translation.
#[derive(Debug, Clone, PartialEq)]
pub struct GeminiDefaults {
    /// The model's maximum output: any `maxOutputTokens` above it is lowered to it.
    pub max_output_tokens: Option<u64>,
    /// OpenAI request fields to ignore for this model.
    pub drop_params: Vec<String>,
    /// Sent verbatim as `safetySettings` when not empty.
    pub safety_settings: Vec<Value>,
    /// Put [`THOUGHT_SIGNATURE_BYPASS`] on replayed `functionCall` parts
    /// (needed by Gemini 3 and later). Default true.
    pub thought_signature_bypass: bool,
}

impl Default for GeminiDefaults {
    fn default() -> Self {
        Self {
            max_output_tokens: None,
            drop_params: Vec::new(),
            safety_settings: Vec::new(),
            thought_signature_bypass: true,
        }
    }
}

// === request ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Model,
}

fn is_function_response(part: &Value) -> bool {
    part.get("functionResponse").is_some()
}

/// Appends parts as a turn of `role`, merging with the previous turn of the
/// same role; `functionResponse` parts go before any other user content.
fn push_turn(turns: &mut Vec<(Role, Vec<Value>)>, role: Role, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last_role, last)) if *last_role == role => {
            for part in parts {
                if is_function_response(&part) {
                    let at = last.iter().take_while(|p| is_function_response(p)).count();
                    last.insert(at, part);
                } else {
                    last.push(part);
                }
            }
        }
        _ => turns.push((role, parts)),
    }
}

/// Translates an OpenAI chat request into a Gemini `generateContent` body
/// (the same body serves `streamGenerateContent`; the model is in the URL).
///
/// Fails with [`TranslateError::InvalidRequest`] when the request is
/// malformed and [`TranslateError::Unsupported`] when Gemini cannot express
/// it; the error's [`field`](TranslateError::field) names the OpenAI field.
/// The mapping is listed in the module docs.
pub fn chat_to_gemini(body: &Map<String, Value>, defaults: &GeminiDefaults) -> Result<Value, TranslateError> {
    let fields = Fields { body, dropped: &defaults.drop_params };
    let mut out = Map::new();

    let messages = match body.get("messages") {
        Some(Value::Array(messages)) => messages,
        _ => return Err(TranslateError::invalid("messages", "`messages` must be an array of chat messages")),
    };
    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<(Role, Vec<Value>)> = Vec::new();
    // tool_call id → function name, from the assistant messages seen so far.
    let mut call_names: Vec<(String, String)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let (message, role) = chat_message(message, &path, "gemini")?;
        match role {
            MessageRole::System => system.extend(text_parts(message.get("content"), &path, "system")?),
            MessageRole::User => push_turn(&mut turns, Role::User, user_parts(message.get("content"), &path)?),
            MessageRole::Assistant => {
                let parts = assistant_parts(message, &path, defaults, &mut call_names)?;
                push_turn(&mut turns, Role::Model, parts);
            }
            MessageRole::Tool => {
                push_turn(&mut turns, Role::User, vec![function_response(message, &path, &call_names)?]);
            }
        }
    }
    match turns.first() {
        None => {
            return Err(TranslateError::unsupported(
                "messages",
                "`messages` holds no user, assistant or tool message with content, and gemini needs at least one: \
                 add a user message (system messages become gemini's `systemInstruction`)",
            ));
        }
        Some((Role::Model, _)) => turns.insert(0, (Role::User, vec![json!({"text": LEADING_USER_TEXT})])),
        Some((Role::User, _)) => {}
    }
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let contents = turns
        .into_iter()
        .map(|(role, parts)| {
            let role = if role == Role::User { "user" } else { "model" };
            json!({"role": role, "parts": parts})
        })
        .collect();
    out.insert("contents".into(), Value::Array(contents));

    let tools = match fields.get("tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => {
            tools.iter().enumerate().map(|(k, t)| function_declaration(t, k)).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(TranslateError::invalid("tools", "`tools` must be an array of function tools")),
    };
    let choice = fields.get("tool_choice").map(tool_config).transpose()?;
    if !tools.is_empty() {
        out.insert("tools".into(), json!([{"functionDeclarations": tools}]));
        if let Some(choice) = choice {
            out.insert("toolConfig".into(), json!({"functionCallingConfig": choice}));
        }
    }
    if !defaults.safety_settings.is_empty() {
        out.insert("safetySettings".into(), Value::Array(defaults.safety_settings.clone()));
    }
    let config = generation_config(&fields, defaults)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(Value::Object(out))
}

fn generation_config(fields: &Fields<'_>, defaults: &GeminiDefaults) -> Result<Map<String, Value>, TranslateError> {
    let mut config = Map::new();
    if let Some(temperature) = fields.get("temperature") {
        if !temperature.as_f64().is_some_and(|t| (0.0..=2.0).contains(&t)) {
            return Err(TranslateError::invalid("temperature", "`temperature` must be a number from 0 to 2"));
        }
        config.insert("temperature".into(), temperature.clone());
    }
    for (name, key) in [
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(value) = fields.get(name) {
            if !value.is_number() {
                return Err(TranslateError::invalid(name, format!("`{name}` must be a number")));
            }
            config.insert(key.into(), value.clone());
        }
    }
    if let Some(seed) = fields.get("seed") {
        if !(seed.is_i64() || seed.is_u64()) {
            return Err(TranslateError::invalid("seed", "`seed` must be an integer"));
        }
        config.insert("seed".into(), seed.clone());
    }
    if let Some(n) = fields.get("n") {
        let n = n
            .as_u64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| TranslateError::invalid("n", "`n` must be a positive integer"))?;
        config.insert("candidateCount".into(), Value::from(n));
    }
    if let Some((name, value)) = fields
        .get("max_completion_tokens")
        .map(|v| ("max_completion_tokens", v))
        .or_else(|| fields.get("max_tokens").map(|v| ("max_tokens", v)))
    {
        let max = value.as_u64().ok_or_else(|| {
            TranslateError::invalid(name, format!("`{name}` must be a non-negative integer number of tokens"))
        })?;
        let max = defaults.max_output_tokens.map_or(max, |cap| max.min(cap));
        config.insert("maxOutputTokens".into(), Value::from(max));
    }
    if let Some(stop) = fields.get("stop") {
        let sequences = stop_sequences(stop)?;
        if !sequences.is_empty() {
            config.insert("stopSequences".into(), Value::Array(sequences));
        }
    }
    if let Some(format) = fields.get("response_format") {
        match response_format(format)? {
            ResponseFormat::Text => {}
            ResponseFormat::JsonObject => {
                config.insert("responseMimeType".into(), json!("application/json"));
            }
            ResponseFormat::JsonSchema(schema) => {
                config.insert("responseMimeType".into(), json!("application/json"));
                config.insert("responseJsonSchema".into(), schema);
            }
        }
    }
    Ok(config)
}

/// The non-empty texts of a content that may hold only text parts
/// (`refusal` parts count as text for the assistant).
fn texts<'a>(content: Option<&'a Value>, path: &str, who: &str) -> Result<Vec<&'a str>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(if text.is_empty() { Vec::new() } else { vec![text.as_str()] }),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (part_path, part, kind) in content_parts(parts, path)? {
                let text = match kind {
                    "text" => part_text(part, "text", &part_path)?,
                    "refusal" if who == "assistant" => part_text(part, "refusal", &part_path)?,
                    other => {
                        return Err(TranslateError::invalid(
                            format!("{part_path}.type"),
                            format!("`{part_path}.type` is `{other}`, but {who} messages hold only text parts"),
                        ));
                    }
                };
                if !text.is_empty() {
                    out.push(text);
                }
            }
            Ok(out)
        }
        Some(_) => Err(content_type_error(path)),
    }
}

fn text_parts(content: Option<&Value>, path: &str, who: &str) -> Result<Vec<Value>, TranslateError> {
    Ok(texts(content, path, who)?.into_iter().map(|t| json!({"text": t})).collect())
}

fn user_parts(content: Option<&Value>, path: &str) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(text)) => {
            return Ok(if text.is_empty() { Vec::new() } else { vec![json!({"text": text})] });
        }
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(content_type_error(path)),
    };
    let mut out = Vec::new();
    for (part_path, part, kind) in content_parts(parts, path)? {
        match kind {
            "text" => {
                let text = part_text(part, "text", &part_path)?;
                if !text.is_empty() {
                    out.push(json!({"text": text}));
                }
            }
            "image_url" => out.push(image_part(part, &part_path)?),
            "input_audio" => out.push(audio_part(part, &part_path)?),
            "file" => out.push(file_part(part, &part_path)?),
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
    Ok(out)
}

/// The media type of a file URI by its extension, when known.
fn mime_of_uri(uri: &str) -> Option<&'static str> {
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    let ext = path.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase())?;
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

fn image_part(part: &Map<String, Value>, part_path: &str) -> Result<Value, TranslateError> {
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
        Ok(json!({"inlineData": {"mimeType": mime, "data": data}}))
    } else if url.starts_with("gs://") || url.starts_with("https://generativelanguage.googleapis.com/") {
        let mut file = json!({"fileUri": url});
        if let (Some(mime), Some(file)) = (mime_of_uri(url), file.as_object_mut()) {
            file.insert("mimeType".into(), json!(mime));
        }
        Ok(json!({"fileData": file}))
    } else if url.starts_with("https://") || url.starts_with("http://") {
        Err(TranslateError::unsupported(
            &url_path,
            format!(
                "`{url_path}` is a web URL, which gemini does not fetch: download the image and send it as a \
                 base64 data URL (`data:image/png;base64,...`), or use a gemini file API or gs:// URI"
            ),
        ))
    } else {
        Err(TranslateError::invalid(
            &url_path,
            format!("`{url_path}` must be an http(s) URL or a base64 data URL (`data:image/png;base64,...`)"),
        ))
    }
}

fn audio_part(part: &Map<String, Value>, part_path: &str) -> Result<Value, TranslateError> {
    let audio = part.get("input_audio");
    let data = audio.and_then(|a| a.get("data")).and_then(Value::as_str).ok_or_else(|| {
        TranslateError::invalid(
            format!("{part_path}.input_audio.data"),
            format!("`{part_path}.input_audio.data` must be base64 audio"),
        )
    })?;
    let mime = match audio.and_then(|a| a.get("format")).and_then(Value::as_str) {
        Some("wav") => "audio/wav",
        Some("mp3") => "audio/mp3",
        _ => {
            return Err(TranslateError::invalid(
                format!("{part_path}.input_audio.format"),
                format!("`{part_path}.input_audio.format` must be wav or mp3"),
            ));
        }
    };
    Ok(json!({"inlineData": {"mimeType": mime, "data": data}}))
}

fn file_part(part: &Map<String, Value>, part_path: &str) -> Result<Value, TranslateError> {
    let file = part.get("file").and_then(Value::as_object);
    let data_path = format!("{part_path}.file.file_data");
    let Some(data) = file.and_then(|f| f.get("file_data")).and_then(Value::as_str) else {
        return Err(TranslateError::unsupported(
            format!("{part_path}.file"),
            format!(
                "`{part_path}.file` must carry `file_data`: gemini cannot read openai `file_id`s; \
                 send the file inline as `data:application/pdf;base64,...`"
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
    Ok(json!({"inlineData": {"mimeType": mime, "data": data}}))
}

fn assistant_parts(
    message: &Map<String, Value>,
    path: &str,
    defaults: &GeminiDefaults,
    call_names: &mut Vec<(String, String)>,
) -> Result<Vec<Value>, TranslateError> {
    let mut parts = text_parts(message.get("content"), path, "assistant")?;
    if let Some(Value::String(refusal)) = message.get("refusal")
        && !refusal.is_empty()
    {
        parts.push(json!({"text": refusal}));
    }
    if message.get("function_call").is_some_and(|f| !f.is_null()) {
        return Err(TranslateError::unsupported(
            format!("{path}.function_call"),
            format!("`{path}.function_call` is deprecated and gemini cannot replay it: use `tool_calls`"),
        ));
    }
    match message.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (j, call) in calls.iter().enumerate() {
                let (id, name, mut part) = function_call(call, &format!("{path}.tool_calls[{j}]"))?;
                if defaults.thought_signature_bypass
                    && let Some(part) = part.as_object_mut()
                {
                    part.insert("thoughtSignature".into(), json!(THOUGHT_SIGNATURE_BYPASS));
                }
                parts.push(part);
                call_names.push((id, name));
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.tool_calls"),
                format!("`{path}.tool_calls` must be an array"),
            ));
        }
    }
    Ok(parts)
}

/// `(id, name, functionCall part)` of an OpenAI tool call.
fn function_call(call: &Value, path: &str) -> Result<(String, String, Value), TranslateError> {
    let ToolCall { id, name, arguments } = tool_call(call, path, "gemini")?;
    Ok((id.to_owned(), name.to_owned(), json!({"functionCall": {"name": name, "args": arguments}})))
}

fn function_response(
    message: &Map<String, Value>,
    path: &str,
    call_names: &[(String, String)],
) -> Result<Value, TranslateError> {
    let id_path = format!("{path}.tool_call_id");
    let id = message.get("tool_call_id").and_then(Value::as_str).filter(|id| !id.is_empty()).ok_or_else(|| {
        TranslateError::invalid(
            &id_path,
            format!("`{id_path}` is required: send the `id` of the tool call this message answers"),
        )
    })?;
    let name = call_names.iter().rev().find(|(call, _)| call == id).map(|(_, name)| name).ok_or_else(|| {
        TranslateError::invalid(
            &id_path,
            format!(
                "`{id_path}` is `{id}`, which no earlier assistant tool call has: gemini needs the function name, \
                 so keep the assistant message with that tool call in `messages`"
            ),
        )
    })?;
    let text = texts(message.get("content"), path, "tool")?.concat();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(object @ Value::Object(_)) => object,
        _ => json!({"result": text}),
    };
    Ok(json!({"functionResponse": {"name": name, "response": response}}))
}

fn function_declaration(tool: &Value, k: usize) -> Result<Value, TranslateError> {
    let path = format!("tools[{k}]");
    let kind = tool.get("type").and_then(Value::as_str).unwrap_or("function");
    if kind != "function" {
        return Err(TranslateError::unsupported(
            format!("{path}.type"),
            format!("`{path}.type` is `{kind}`; gemini takes only `function` tools from openai clients"),
        ));
    }
    let function = tool.get("function").and_then(Value::as_object).ok_or_else(|| {
        TranslateError::invalid(format!("{path}.function"), format!("`{path}.function` must be an object"))
    })?;
    let name = function.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| {
        TranslateError::invalid(format!("{path}.function.name"), format!("`{path}.function.name` is required"))
    })?;
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    if let Some(description) = function.get("description").filter(|d| !d.is_null()) {
        out.insert("description".into(), description.clone());
    }
    match function.get("parameters") {
        None | Some(Value::Null) => {}
        Some(schema @ Value::Object(_)) => {
            out.insert("parametersJsonSchema".into(), schema.clone());
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.function.parameters"),
                format!("`{path}.function.parameters` must be a JSON Schema object"),
            ));
        }
    }
    Ok(Value::Object(out))
}

/// `toolConfig.functionCallingConfig` for an OpenAI `tool_choice`.
fn tool_config(choice: &Value) -> Result<Value, TranslateError> {
    let invalid = || {
        TranslateError::invalid(
            "tool_choice",
            "`tool_choice` must be \"none\", \"auto\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":...}}",
        )
    };
    match choice {
        Value::String(mode) => match mode.as_str() {
            "none" => Ok(json!({"mode": "NONE"})),
            "auto" => Ok(json!({"mode": "AUTO"})),
            "required" => Ok(json!({"mode": "ANY"})),
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
                Ok(json!({"mode": "ANY", "allowedFunctionNames": [name]}))
            }
            Some("allowed_tools") => {
                let allowed = object.get("allowed_tools");
                match allowed.and_then(|a| a.get("mode")).and_then(Value::as_str) {
                    Some("required") => {}
                    Some("auto") => {
                        return Err(TranslateError::unsupported(
                            "tool_choice.allowed_tools.mode",
                            "`tool_choice.allowed_tools.mode` is `auto`, but gemini restricts function names only \
                             when a call is required: send only the allowed tools in `tools` with `tool_choice` \"auto\"",
                        ));
                    }
                    _ => {
                        return Err(TranslateError::invalid(
                            "tool_choice.allowed_tools.mode",
                            "`tool_choice.allowed_tools.mode` must be auto or required",
                        ));
                    }
                }
                let names = allowed
                    .and_then(|a| a.get("tools"))
                    .and_then(Value::as_array)
                    .map(|tools| {
                        tools
                            .iter()
                            .filter_map(|t| t.get("function").and_then(|f| f.get("name")).and_then(Value::as_str))
                            .map(|n| json!(n))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                if names.is_empty() {
                    return Err(TranslateError::invalid(
                        "tool_choice.allowed_tools.tools",
                        "`tool_choice.allowed_tools.tools` must list function tools by name",
                    ));
                }
                Ok(json!({"mode": "ANY", "allowedFunctionNames": names}))
            }
            _ => Err(invalid()),
        },
        _ => Err(invalid()),
    }
}

// === response ===

/// A `GenerateContentResponse` (whole answer or one stream chunk), reading
/// only what the translation needs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseView {
    #[serde(default)]
    candidates: Vec<CandidateView>,
    #[serde(default)]
    prompt_feedback: Value,
    usage_metadata: Option<Value>,
    #[serde(default)]
    model_version: String,
    #[serde(default)]
    response_id: String,
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CandidateView {
    content: Option<ContentView>,
    finish_reason: Option<String>,
    index: Option<u64>,
}

#[derive(Deserialize)]
struct ContentView {
    #[serde(default)]
    parts: Vec<PartView>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartView {
    text: Option<String>,
    #[serde(default)]
    thought: bool,
    function_call: Option<FunctionCallView>,
}

#[derive(Deserialize)]
struct FunctionCallView {
    #[serde(default)]
    name: String,
    args: Option<CompactJson>,
}

impl ResponseView {
    fn parse(bytes: &[u8]) -> Result<Self, TranslateError> {
        let view: Self = serde_json::from_slice(bytes)
            .map_err(|e| TranslateError::InvalidResponse(format!("the gemini answer is not valid JSON: {e}")))?;
        match &view.error {
            Some(error) => Err(upstream_error(error)),
            None => Ok(view),
        }
    }

    fn block_reason(&self) -> Option<&str> {
        self.prompt_feedback.get("blockReason").and_then(Value::as_str)
    }

    fn model(&self, fallback: &str) -> String {
        if self.model_version.is_empty() { fallback.to_owned() } else { self.model_version.clone() }
    }
}

/// The synthetic id of the `n`th function call (from 0) of the answer `response_id`.
fn call_id(response_id: &str, n: u64) -> String {
    let response_id: String =
        response_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    if response_id.is_empty() { format!("call_{n}") } else { format!("call_{response_id}_{n}") }
}

fn tool_call_value(id: String, call: FunctionCallView) -> Value {
    json!({
        "id": id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.args.map_or_else(|| "{}".to_owned(), |args| args.0)},
    })
}

/// Translates Gemini's non-streaming answer into an OpenAI
/// `chat.completion`, with `created` from the gateway clock.
///
/// `model` names the model when the answer has no `modelVersion`. Fails
/// with [`TranslateError::InvalidResponse`] when the bytes are not a Gemini
/// answer, and with [`TranslateError::Upstream`] when they are an error object.
pub fn gemini_to_chat(response: &[u8], model: &str) -> Result<Value, TranslateError> {
    gemini_to_chat_at(response, model, unix_now())
}

/// [`gemini_to_chat`] with a given `created` timestamp (Unix seconds).
pub fn gemini_to_chat_at(response: &[u8], model: &str, created: u64) -> Result<Value, TranslateError> {
    let view = ResponseView::parse(response)?;
    let answer_model = view.model(model);
    let mut choices = Vec::new();
    if view.candidates.is_empty() {
        if view.block_reason().is_none() {
            return Err(TranslateError::InvalidResponse(
                "the gemini answer has no candidates and no `promptFeedback.blockReason`".into(),
            ));
        }
        choices.push(json!({
            "index": 0,
            "message": {"role": "assistant", "content": null, "refusal": null},
            "logprobs": null,
            "finish_reason": "content_filter",
        }));
    }
    let mut next_call = 0;
    for (position, candidate) in view.candidates.into_iter().enumerate() {
        let mut text = String::new();
        let mut saw_text = false;
        let mut tool_calls = Vec::new();
        for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
            if let Some(call) = part.function_call {
                tool_calls.push(tool_call_value(call_id(&view.response_id, next_call), call));
                next_call += 1;
            } else if let Some(part_text) = part.text
                && !part.thought
            {
                text.push_str(&part_text);
                saw_text = true;
            }
        }
        let saw_call = !tool_calls.is_empty();
        let message = super::assistant_message(saw_text.then_some(text), tool_calls);
        choices.push(json!({
            "index": candidate.index.unwrap_or(position as u64),
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(candidate.finish_reason.as_deref(), saw_call),
        }));
    }
    Ok(json!({
        "id": format!("chatcmpl-{}", view.response_id),
        "object": "chat.completion",
        "created": created,
        "model": answer_model,
        "choices": choices,
        "usage": token_usage(view.usage_metadata.as_ref()).to_openai(),
    }))
}

/// OpenAI's `finish_reason` for a Gemini `finishReason` (digest §9.5):
/// `tool_calls` when the candidate holds function calls and stopped
/// normally (Gemini has no tool-call reason); `MAX_TOKENS` → `length`; the
/// safety, recitation, blocklist, prohibited-content and SPII reasons (and
/// their image variants) → `content_filter`; everything else (`STOP`,
/// `OTHER`, `LANGUAGE`, malformed function calls, unknown) → `stop`.
pub fn finish_reason(reason: Option<&str>, saw_function_call: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY"
            | "RECITATION"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION",
        ) => "content_filter",
        Some("STOP") | None if saw_function_call => "tool_calls",
        _ => "stop",
    }
}

/// [`TokenUsage`] of a Gemini `usageMetadata` (digest §9.6); zeros when absent.
fn token_usage(usage: Option<&Value>) -> TokenUsage {
    let count = |key: &str| usage.and_then(|u| u.get(key)).and_then(Value::as_u64);
    let thoughts = count("thoughtsTokenCount");
    TokenUsage {
        prompt_tokens: count("promptTokenCount").unwrap_or(0) + count("toolUsePromptTokenCount").unwrap_or(0),
        completion_tokens: count("candidatesTokenCount").unwrap_or(0) + thoughts.unwrap_or(0),
        cached_tokens: count("cachedContentTokenCount").unwrap_or(0),
        cache_write_tokens: 0,
        reasoning_tokens: thoughts,
    }
}

// === stream ===

/// Per-candidate state of a stream.
#[derive(Debug, Default)]
struct CandidateState {
    index: u64,
    tools: u64,
    finished: bool,
}

/// Turns Gemini's streamed chunks (`streamGenerateContent?alt=sse`) into
/// OpenAI chunks (digest §4.3, §9.4).
///
/// Feed the data of every SSE event in order to [`on_data`](Self::on_data)
/// and send each returned string to the client as `data: <string>\n\n`.
/// Gemini ends the stream at EOF, with no closing event: call
/// [`finish`](Self::finish) then, which returns the usage chunk (when
/// `include_usage`) and `[DONE]`. Check [`is_complete`](Self::is_complete)
/// first: when false, every candidate did not get its `finishReason`, so the
/// upstream stream was probably cut (the proxy decides; `finish` still closes
/// the client's stream, with a `stop` finish chunk for unfinished candidates).
///
/// | Gemini chunk | emitted |
/// |---|---|
/// | a candidate's first appearance | role chunk `{role:"assistant", content:""}` for its index |
/// | `text` part (not `thought`), non-empty | `{content: text}` |
/// | `functionCall` part | one whole call: `tool_calls[{index:k, id, type:"function", function:{name, arguments}}]`, `k` counting the candidate's calls from 0, ids as in [`gemini_to_chat`] |
/// | `finishReason` | `delta:{}` with [`finish_reason`] (`tool_calls` after a function call), once per candidate |
/// | `promptFeedback.blockReason`, no candidates | role chunk, then `delta:{}` with `content_filter` |
/// | `usageMetadata` | remembered (last one wins) |
/// | `error` object | `Err(TranslateError::Upstream)` with its [`ErrorKind`] |
///
/// With `include_usage`, every chunk before the usage chunk carries
/// `"usage": null`, as OpenAI's do.
#[derive(Debug)]
pub struct GeminiStreamTranslator {
    include_usage: bool,
    created: u64,
    id: String,
    response_id: String,
    model: String,
    started: bool,
    done: bool,
    blocked: bool,
    next_call: u64,
    candidates: Vec<CandidateState>,
    usage: Option<Value>,
}

impl GeminiStreamTranslator {
    /// A translator for one streamed answer. `model` names the model until
    /// a chunk carries `modelVersion`; `include_usage` adds OpenAI's usage
    /// chunk at the end. `created` comes from the gateway clock.
    pub fn new(model: &str, include_usage: bool) -> Self {
        Self::with_created(model, include_usage, unix_now())
    }

    /// [`new`](Self::new) with a given `created` timestamp (Unix seconds).
    pub fn with_created(model: &str, include_usage: bool, created: u64) -> Self {
        Self {
            include_usage,
            created,
            id: "chatcmpl-".to_owned(),
            response_id: String::new(),
            model: model.to_owned(),
            started: false,
            done: false,
            blocked: false,
            next_call: 0,
            candidates: Vec::new(),
            usage: None,
        }
    }

    /// Translates one SSE data payload (a whole `GenerateContentResponse`)
    /// into zero or more OpenAI chunk payloads.
    ///
    /// An error object returns [`TranslateError::Upstream`]; data that is not
    /// JSON returns [`TranslateError::InvalidResponse`]. Data after
    /// [`finish`](Self::finish) is ignored.
    pub fn on_data(&mut self, data: &str) -> Result<Vec<String>, TranslateError> {
        if self.done {
            return Ok(Vec::new());
        }
        let view = ResponseView::parse(data.as_bytes())?;
        if !self.started {
            self.started = true;
            self.response_id.clone_from(&view.response_id);
            self.id = format!("chatcmpl-{}", view.response_id);
        }
        if !view.model_version.is_empty() {
            self.model.clone_from(&view.model_version);
        }
        if let Some(usage) = &view.usage_metadata {
            self.usage = Some(usage.clone());
        }
        let mut out = Vec::new();
        if view.candidates.is_empty() && view.block_reason().is_some() && !self.blocked {
            self.blocked = true;
            let state = self.candidate(0, &mut out);
            if !self.candidates[state].finished {
                self.candidates[state].finished = true;
                out.push(self.chunk(0, json!({}), Some("content_filter")));
            }
        }
        for (position, candidate) in view.candidates.into_iter().enumerate() {
            let index = candidate.index.unwrap_or(position as u64);
            let state = self.candidate(index, &mut out);
            if self.candidates[state].finished {
                continue;
            }
            for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
                if let Some(call) = part.function_call {
                    let id = call_id(&self.response_id, self.next_call);
                    self.next_call += 1;
                    let mut call = tool_call_value(id, call);
                    let k = self.candidates[state].tools;
                    self.candidates[state].tools += 1;
                    if let Some(call) = call.as_object_mut() {
                        call.insert("index".into(), json!(k));
                    }
                    out.push(self.chunk(index, json!({"tool_calls": [call]}), None));
                } else if let Some(text) = part.text.filter(|t| !t.is_empty())
                    && !part.thought
                {
                    out.push(self.chunk(index, json!({"content": text}), None));
                }
            }
            if let Some(reason) = candidate.finish_reason.as_deref() {
                let state = &mut self.candidates[state];
                state.finished = true;
                let reason = finish_reason(Some(reason), state.tools > 0);
                out.push(self.chunk(index, json!({}), Some(reason)));
            }
        }
        Ok(out)
    }

    /// Closes the stream at the upstream's EOF: a `stop` finish chunk for
    /// any candidate that got no `finishReason`, the usage chunk (`choices:
    /// []`) when `include_usage`, then `[DONE]`. Returns nothing when called
    /// again.
    pub fn finish(&mut self) -> Vec<String> {
        if self.done {
            return Vec::new();
        }
        let mut out = Vec::new();
        if self.candidates.is_empty() {
            let _ = self.candidate(0, &mut out);
        }
        for state in self.candidates.iter().filter(|s| !s.finished) {
            out.push(self.chunk(state.index, json!({}), Some("stop")));
        }
        if self.include_usage {
            out.push(
                json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [], "usage": token_usage(self.usage.as_ref()).to_openai(),
                })
                .to_string(),
            );
        }
        out.push("[DONE]".to_owned());
        self.done = true;
        out
    }

    /// True when the upstream sent at least one candidate and every
    /// candidate got its `finishReason` (or the prompt was blocked): the
    /// answer is whole. False before that, e.g. at an EOF that cut the answer.
    pub fn is_complete(&self) -> bool {
        !self.candidates.is_empty() && self.candidates.iter().all(|s| s.finished)
    }

    /// Token counts of the last `usageMetadata` seen; `None` before any.
    pub fn usage(&self) -> Option<TokenUsage> {
        self.usage.as_ref().map(|u| token_usage(Some(u)))
    }

    /// The state slot of candidate `index`, emitting its role chunk the
    /// first time it appears.
    fn candidate(&mut self, index: u64, out: &mut Vec<String>) -> usize {
        if let Some(slot) = self.candidates.iter().position(|s| s.index == index) {
            return slot;
        }
        out.push(self.chunk(index, json!({"role": "assistant", "content": ""}), None));
        self.candidates.push(CandidateState { index, ..CandidateState::default() });
        self.candidates.len() - 1
    }

    fn chunk(&self, index: u64, delta: Value, finish_reason: Option<&str>) -> String {
        let mut chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
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

/// The `error` object of a Gemini error body: `{"error": {...}}`, or the
/// same wrapped in an array (the non-SSE streaming mode).
fn error_object(body: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let value = match value {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    value.get("error").filter(|e| e.is_object()).cloned()
}

/// The class of a `google.rpc.Status` error object, with the HTTP status as
/// fallback.
fn classify_object(status: u16, error: &Value) -> ErrorKind {
    let code = error.get("status").and_then(Value::as_str).unwrap_or_default();
    let message = error.get("message").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
    let details = error.get("details").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let reason_is = |reason: &str| details.iter().any(|d| d.get("reason").and_then(Value::as_str) == Some(reason));
    let kind = match code {
        "INVALID_ARGUMENT" => ErrorKind::InvalidRequest,
        "FAILED_PRECONDITION" => {
            if message.contains("billing") {
                ErrorKind::Billing
            } else {
                ErrorKind::Permission
            }
        }
        "UNAUTHENTICATED" => ErrorKind::Authentication,
        "PERMISSION_DENIED" => ErrorKind::Permission,
        "NOT_FOUND" => ErrorKind::NotFound,
        "RESOURCE_EXHAUSTED" => {
            if is_daily_quota(details) {
                ErrorKind::Billing
            } else {
                ErrorKind::RateLimited
            }
        }
        "UNAVAILABLE" => ErrorKind::Overloaded,
        "INTERNAL" | "DEADLINE_EXCEEDED" | "ABORTED" | "UNKNOWN" => ErrorKind::Server,
        _ => kind_of_status(status),
    };
    if reason_is("API_KEY_INVALID") || message.contains("api key not valid") {
        return ErrorKind::Authentication;
    }
    if kind == ErrorKind::InvalidRequest
        && (message.contains("input token count") || message.contains("exceeds the maximum number of tokens"))
    {
        return ErrorKind::ContextLength;
    }
    kind
}

/// Whether a `RESOURCE_EXHAUSTED` error is about a per-day quota (sticky
/// until the daily reset, so waiting will not help), by its `QuotaFailure`
/// violations' `quotaId` / `quotaMetric`.
fn is_daily_quota(details: &[Value]) -> bool {
    details
        .iter()
        .filter_map(|d| d.get("violations").and_then(Value::as_array))
        .flatten()
        .flat_map(|v| ["quotaId", "quotaMetric"].map(|k| v.get(k).and_then(Value::as_str).unwrap_or_default()))
        .any(|id| {
            let id = id.to_ascii_lowercase();
            id.contains("perday") || id.contains("per_day")
        })
}

/// [`TranslateError::Upstream`] for a Gemini error object inside a 200 answer or stream.
fn upstream_error(error: &Value) -> TranslateError {
    let code = error.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok()).unwrap_or(500);
    let error_type = error.get("status").and_then(Value::as_str).unwrap_or("UNKNOWN").to_owned();
    let message = error.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
    TranslateError::Upstream { kind: classify_object(code, error), error_type, message }
}

/// Classifies a Gemini error answer (digest §4.4, §10.1).
///
/// The body's `error.status` decides when present: `INVALID_ARGUMENT` →
/// [`ErrorKind::InvalidRequest`] (→ [`ErrorKind::ContextLength`] when the
/// message says the input token count exceeds the maximum);
/// `FAILED_PRECONDITION` → [`ErrorKind::Billing`] when the message mentions
/// billing, else [`ErrorKind::Permission`] (region / tier unavailable: a
/// problem of this target); `UNAUTHENTICATED` → Authentication;
/// `PERMISSION_DENIED` → Permission; `NOT_FOUND` → NotFound;
/// `RESOURCE_EXHAUSTED` → [`ErrorKind::RateLimited`], or
/// [`ErrorKind::Billing`] when a `QuotaFailure` violation is a per-day quota
/// (fall back instead of waiting); `UNAVAILABLE` → Overloaded; `INTERNAL`,
/// `DEADLINE_EXCEEDED`, `ABORTED`, `UNKNOWN` → Server. Any error whose
/// `ErrorInfo.reason` is `API_KEY_INVALID` (Gemini sends it as a 400) or
/// whose message says "API key not valid" is [`ErrorKind::Authentication`].
/// Without Gemini's shape the HTTP status decides (503 Overloaded, 408/409/
/// 5xx Server, ...).
pub fn classify_error(status: u16, body: &[u8]) -> ErrorKind {
    error_object(body).map_or_else(|| kind_of_status(status), |error| classify_object(status, &error))
}

/// OpenAI's error JSON (`{"error": {message, type, param, code}}`) for a
/// Gemini error answer.
///
/// `message` is Gemini's verbatim (or `gemini answered HTTP <status>` and the
/// start of the body); `type` and `code` follow [`classify_error`], and
/// `code` falls back to Gemini's `error.status` (e.g. `UNAVAILABLE`).
pub fn to_openai_error(status: u16, body: &[u8]) -> Value {
    let kind = classify_error(status, body);
    let error = error_object(body);
    let gemini_status = error.as_ref().and_then(|e| e.get("status")).and_then(Value::as_str).filter(|s| !s.is_empty());
    let message = match error.as_ref().and_then(|e| e.get("message")).and_then(Value::as_str) {
        Some(message) if !message.is_empty() => message.to_owned(),
        _ => body_message("gemini", status, body),
    };
    let code = kind.openai_code().or(gemini_status);
    json!({"error": {"message": message, "type": kind.openai_type(), "param": null, "code": code}})
}

/// The delay Gemini asks for before a retry: `RetryInfo.retryDelay` (a
/// protobuf duration such as `"37s"` or `"1.5s"`) in the error's `details`.
/// `None` when absent or malformed.
pub fn retry_delay(body: &[u8]) -> Option<Duration> {
    let error = error_object(body)?;
    let details = error.get("details")?.as_array()?;
    details
        .iter()
        .filter(|d| d.get("@type").and_then(Value::as_str).is_some_and(|t| t.ends_with("google.rpc.RetryInfo")))
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
        .and_then(|delay| delay.trim().strip_suffix('s'))
        .and_then(|seconds| seconds.parse::<f64>().ok())
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
}

// === embeddings ===

/// The Gemini method and body for an OpenAI embeddings request to `model`:
/// `embedContent` with one `content` for a single string, `batchEmbedContents`
/// with one request per text (each naming `models/{model}`) for an array;
/// `dimensions` → `outputDimensionality`.
pub fn embeddings_to_gemini(request: &EmbeddingsRequest<'_>, model: &str) -> (&'static str, Value) {
    let one = |text: &str, with_model: bool| {
        let mut item = Map::new();
        if with_model {
            item.insert("model".into(), json!(format!("models/{model}")));
        }
        item.insert("content".into(), json!({"parts": [{"text": text}]}));
        if let Some(dimensions) = request.dimensions {
            item.insert("outputDimensionality".into(), json!(dimensions));
        }
        Value::Object(item)
    };
    match request.texts.as_slice() {
        [text] if request.single => ("embedContent", one(text, false)),
        texts => ("batchEmbedContents", json!({"requests": texts.iter().map(|t| one(t, true)).collect::<Vec<_>>()})),
    }
}

/// OpenAI's embeddings answer for Gemini's `embedContent`
/// (`{"embedding":{"values":[...]}}`) or `batchEmbedContents`
/// (`{"embeddings":[{"values":[...]}]}`) answer. Gemini reports no token
/// counts for embeddings: `usage.prompt_tokens` is the answer's
/// `usageMetadata.promptTokenCount` when there is one, else `estimate` (the
/// proxy's count of the texts). An answer with another number of vectors
/// than texts is [`TranslateError::InvalidResponse`].
pub fn gemini_embeddings_to_openai(
    answer: &[u8],
    model: &str,
    request: &EmbeddingsRequest<'_>,
    estimate: u64,
) -> Result<Value, TranslateError> {
    let answer: Value = serde_json::from_slice(answer)
        .map_err(|e| TranslateError::InvalidResponse(format!("gemini's embeddings answer is not JSON: {e}")))?;
    let items: Vec<Value> = match (answer.get("embedding"), answer.get("embeddings")) {
        (Some(one), _) => vec![one.get("values").cloned().unwrap_or(Value::Null)],
        (None, Some(Value::Array(many))) => {
            many.iter().map(|e| e.get("values").cloned().unwrap_or(Value::Null)).collect()
        }
        _ => return Err(TranslateError::InvalidResponse("gemini's embeddings answer has no `embedding(s)`".into())),
    };
    let tokens = answer.pointer("/usageMetadata/promptTokenCount").and_then(Value::as_u64).unwrap_or(estimate);
    embeddings::answer("gemini", &items, request, model, tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse;

    const CREATED: u64 = 1_764_460_800;

    #[test]
    fn embeddings_use_embed_content_for_one_text_and_batch_for_many() {
        let single = json!({"model": "e", "input": "hello", "dimensions": 3});
        let request = embeddings::read(single.as_object().unwrap(), "gemini").unwrap();
        let (method, body) = embeddings_to_gemini(&request, "gemini-embedding-001");
        assert_eq!(method, "embedContent");
        assert_eq!(body, json!({"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 3}));
        let answer = gemini_embeddings_to_openai(br#"{"embedding":{"values":[0.5,-0.25,0.125]}}"#, "e", &request, 1);
        assert_eq!(
            answer.unwrap()["data"],
            json!([{"object": "embedding", "index": 0, "embedding": [0.5, -0.25, 0.125]}])
        );

        let many = json!({"model": "e", "input": ["a", "b"]});
        let request = embeddings::read(many.as_object().unwrap(), "gemini").unwrap();
        let (method, body) = embeddings_to_gemini(&request, "gemini-embedding-001");
        assert_eq!(method, "batchEmbedContents");
        assert_eq!(
            body,
            json!({"requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}}]})
        );
        let answer = br#"{"embeddings":[{"values":[1.0]},{"values":[2.0]}]}"#;
        let answer = gemini_embeddings_to_openai(answer, "e", &request, 2).unwrap();
        assert_eq!(answer["data"][1]["embedding"], json!([2.0]));
        assert_eq!(answer["usage"]["prompt_tokens"], 2, "the estimate, as gemini counts nothing");
        let short = gemini_embeddings_to_openai(br#"{"embeddings":[{"values":[1.0]}]}"#, "e", &request, 2);
        assert!(matches!(short, Err(TranslateError::InvalidResponse(_))), "{short:?}");
    }

    fn request(body: Value) -> Result<Value, TranslateError> {
        request_with(body, &GeminiDefaults::default())
    }

    fn request_with(body: Value, defaults: &GeminiDefaults) -> Result<Value, TranslateError> {
        let Value::Object(body) = body else { panic!("test bodies are objects") };
        chat_to_gemini(&body, defaults)
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    fn weather_tool() -> Value {
        json!({"type": "function", "function": {
            "name": "get_weather", "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                           "additionalProperties": false},
            "strict": true,
        }})
    }

    #[test]
    fn translates_the_digest_tool_round_trip_into_the_digest_gemini_request() {
        let body = json!({
            "model": "gemini-flash",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Oslo?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo...", "detail": "low"}},
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_r-1_0", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_r-1_0", "content": "-3C, snow"},
            ],
            "tools": [weather_tool()],
            "tool_choice": "auto",
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "u-1",
        });
        assert_eq!(
            request(body).unwrap(),
            json!({
                "systemInstruction": {"parts": [{"text": "You are terse."}]},
                "contents": [
                    {"role": "user", "parts": [
                        {"text": "Weather in Oslo?"},
                        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo..."}},
                    ]},
                    {"role": "model", "parts": [
                        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                         "thoughtSignature": "skip_thought_signature_validator"},
                    ]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "get_weather", "response": {"result": "-3C, snow"}}},
                    ]},
                ],
                "tools": [{"functionDeclarations": [{
                    "name": "get_weather", "description": "Current weather for a city",
                    "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}},
                                             "required": ["city"], "additionalProperties": false},
                }]}],
                "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
            })
        );
    }

    #[test]
    fn hoists_system_and_developer_messages_and_merges_consecutive_same_role_turns() {
        let body = json!({"messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Rule one."}]},
            user("a"),
            {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "b"}]},
            {"role": "system", "content": "Rule two."},
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": [{"type": "text", "text": "d"}, {"type": "refusal", "refusal": "e"}]},
            {"role": "assistant", "content": ""},
            user("f"),
        ]});
        assert_eq!(
            request(body).unwrap(),
            json!({
                "systemInstruction": {"parts": [{"text": "Rule one."}, {"text": "Rule two."}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
                    {"role": "model", "parts": [{"text": "c"}, {"text": "d"}, {"text": "e"}]},
                    {"role": "user", "parts": [{"text": "f"}]},
                ],
            })
        );
    }

    #[test]
    fn puts_a_user_turn_before_a_conversation_that_starts_with_the_model_and_rejects_only_system() {
        let body = json!({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "Hi"}]});
        assert_eq!(
            request(body).unwrap()["contents"],
            json!([{"role": "user", "parts": [{"text": "(continued)"}]}, {"role": "model", "parts": [{"text": "Hi"}]}])
        );
        let error = request(json!({"messages": [{"role": "system", "content": "s"}]})).unwrap_err();
        assert!(error.is_provider_gap());
        assert_eq!(error.field(), Some("messages"));
        let error = request(json!({"messages": [{"role": "function", "content": "x", "name": "f"}]})).unwrap_err();
        assert_eq!(error.field(), Some("messages[0].role"));
        assert!(error.is_provider_gap());
    }

    #[test]
    fn maps_data_urls_to_inline_data_file_uris_to_file_data_and_rejects_web_urls() {
        let body = json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,AAAA"}},
            {"type": "image_url", "image_url": {"url": "gs://bucket/cat.PNG"}},
            {"type": "image_url", "image_url": {"url": "https://generativelanguage.googleapis.com/v1beta/files/abc"}},
            {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
        ]}]});
        assert_eq!(
            request(body).unwrap()["contents"],
            json!([{"role": "user", "parts": [
                {"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}},
                {"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/cat.PNG"}},
                {"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
            ]}])
        );
        let error = request(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ]}]}))
        .unwrap_err();
        assert!(error.is_provider_gap());
        assert_eq!(error.field(), Some("messages[0].content[1].image_url.url"));
        let error = request(json!({"messages": [{"role": "user", "content": [
            {"type": "file", "file": {"file_id": "file-1"}},
        ]}]}))
        .unwrap_err();
        assert!(error.is_provider_gap());
        assert_eq!(error.field(), Some("messages[0].content[0].file"));
    }

    #[test]
    fn maps_tool_results_back_to_the_name_of_the_latest_call_with_that_id() {
        // Ids repeat across answers (`call_0` from answers without a responseId):
        // each result takes the name of the most recent call with its id.
        let call = |id: &str, name: &str, arguments: &str| {
            json!({"role": "assistant", "tool_calls": [
                {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}]})
        };
        let body = json!({"messages": [
            user("go"),
            call("call_0", "get_weather", ""),
            {"role": "tool", "tool_call_id": "call_0", "content": "{\"temp\": -3, \"sky\": \"snow\"}"},
            {"role": "assistant", "content": "Now the time.", "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                {"id": "call_1", "type": "function", "function": {"name": "get_date", "arguments": "{\"tz\":\"CET\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "Monday"}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "12:00"},
            user("thanks"),
        ]});
        let out = request_with(body, &GeminiDefaults { thought_signature_bypass: false, ..GeminiDefaults::default() })
            .unwrap();
        assert_eq!(
            out["contents"],
            json!([
                {"role": "user", "parts": [{"text": "go"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": -3, "sky": "snow"}}}]},
                {"role": "model", "parts": [
                    {"text": "Now the time."},
                    {"functionCall": {"name": "get_time", "args": {}}},
                    {"functionCall": {"name": "get_date", "args": {"tz": "CET"}}},
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_date", "response": {"result": "Monday"}}},
                    {"functionResponse": {"name": "get_time", "response": {"result": "12:00"}}},
                    {"text": "thanks"},
                ]},
            ])
        );
        let error =
            request(json!({"messages": [user("go"), {"role": "tool", "tool_call_id": "nope", "content": "x"}]}))
                .unwrap_err();
        assert_eq!(error.field(), Some("messages[1].tool_call_id"));
        assert!(!error.is_provider_gap());
        let error = request(json!({"messages": [user("go"), call("c", "f", "[1]")]})).unwrap_err();
        assert_eq!(error.field(), Some("messages[1].tool_calls[0].function.arguments"));
        let error = request(json!({"messages": [user("go"), call("c", "f", "{oops")]})).unwrap_err();
        assert_eq!(error.field(), Some("messages[1].tool_calls[0].function.arguments"));
    }

    #[test]
    fn maps_every_tool_choice_form_and_drops_it_without_tools() {
        let config = |choice: Value| {
            request(json!({"messages": [user("hi")], "tools": [weather_tool()], "tool_choice": choice}))
                .map(|out| out["toolConfig"].clone())
        };
        assert_eq!(config(json!("auto")).unwrap(), json!({"functionCallingConfig": {"mode": "AUTO"}}));
        assert_eq!(config(json!("none")).unwrap(), json!({"functionCallingConfig": {"mode": "NONE"}}));
        assert_eq!(config(json!("required")).unwrap(), json!({"functionCallingConfig": {"mode": "ANY"}}));
        assert_eq!(
            config(json!({"type": "function", "function": {"name": "get_weather"}})).unwrap(),
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
        );
        assert_eq!(
            config(json!({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
                {"type": "function", "function": {"name": "get_weather"}}]}}))
            .unwrap(),
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
        );
        let gap = config(json!({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}})).unwrap_err();
        assert!(gap.is_provider_gap());
        assert_eq!(config(json!("sometimes")).unwrap_err().field(), Some("tool_choice"));
        let out = request(json!({"messages": [user("hi")], "tool_choice": "required", "parallel_tool_calls": false}))
            .unwrap();
        assert_eq!(out, json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}));
    }

    #[test]
    fn builds_generation_config_from_the_sampling_fields() {
        let body = json!({
            "messages": [user("hi")],
            "temperature": 1.5, "top_p": 0.9, "top_k": 40, "n": 2, "seed": 7,
            "presence_penalty": 0.5, "frequency_penalty": -0.5,
            "max_tokens": 100, "max_completion_tokens": 9000,
            "stop": ["END", "STOP"],
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema":
                {"type": "object", "properties": {"answer": {"type": "string"}}}}},
            "user": "u-1", "safety_identifier": "s-1", "metadata": {"k": "v"}, "logprobs": true,
            "parallel_tool_calls": true, "reasoning_effort": "low", "store": true,
        });
        let defaults = GeminiDefaults {
            max_output_tokens: Some(8192),
            safety_settings: vec![
                json!({"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "BLOCK_ONLY_HIGH"}),
            ],
            ..GeminiDefaults::default()
        };
        assert_eq!(
            request_with(body, &defaults).unwrap(),
            json!({
                "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "safetySettings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "BLOCK_ONLY_HIGH"}],
                "generationConfig": {
                    "temperature": 1.5, "topP": 0.9, "topK": 40, "candidateCount": 2, "seed": 7,
                    "presencePenalty": 0.5, "frequencyPenalty": -0.5, "maxOutputTokens": 8192,
                    "stopSequences": ["END", "STOP"],
                    "responseMimeType": "application/json",
                    "responseJsonSchema": {"type": "object", "properties": {"answer": {"type": "string"}}},
                },
            })
        );
        let out = request(json!({"messages": [user("hi")], "max_tokens": 50, "stop": "END",
                                 "response_format": {"type": "json_object"}}))
        .unwrap();
        assert_eq!(
            out["generationConfig"],
            json!({"maxOutputTokens": 50, "stopSequences": ["END"], "responseMimeType": "application/json"})
        );
        let out = request_with(
            json!({"messages": [user("hi")], "temperature": 0.2, "response_format": {"type": "text"}}),
            &GeminiDefaults { drop_params: vec!["temperature".into()], ..GeminiDefaults::default() },
        )
        .unwrap();
        assert_eq!(out.get("generationConfig"), None);
        let error = request(json!({"messages": [user("hi")], "temperature": 3})).unwrap_err();
        assert_eq!(error.field(), Some("temperature"));
        let error = request(json!({"messages": [user("hi")], "n": 0})).unwrap_err();
        assert_eq!(error.field(), Some("n"));
    }

    fn response(body: Value) -> Result<Value, TranslateError> {
        gemini_to_chat_at(body.to_string().as_bytes(), "gemini-flash", CREATED)
    }

    #[test]
    fn translates_a_text_answer_with_usage_counting_thoughts_and_cache() {
        let body = json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "Let me think", "thought": true}, {"text": "It is"}, {"text": " snowing."}]},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 83, "candidatesTokenCount": 14, "thoughtsTokenCount": 104,
                              "cachedContentTokenCount": 40, "toolUsePromptTokenCount": 2, "totalTokenCount": 203},
            "modelVersion": "gemini-3.5-flash", "responseId": "r-1",
        });
        assert_eq!(
            response(body).unwrap(),
            json!({
                "id": "chatcmpl-r-1", "object": "chat.completion", "created": CREATED, "model": "gemini-3.5-flash",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "It is snowing.", "refusal": null},
                             "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 85, "completion_tokens": 118, "total_tokens": 203,
                          "prompt_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 0},
                          "completion_tokens_details": {"reasoning_tokens": 104}},
            })
        );
    }

    #[test]
    fn translates_function_calls_into_tool_calls_with_synthetic_ids_and_ordered_arguments() {
        let raw = br#"{"candidates":[{"content":{"role":"model","parts":[
            {"text":"Checking."},
            {"functionCall":{"name":"get_weather","args":{"city":"Oslo","units":"C"}},"thoughtSignature":"CikB"},
            {"functionCall":{"name":"get_time"}}]},
            "finishReason":"STOP","index":0,"finishMessage":"Model generated function call(s)."}],
            "usageMetadata":{"promptTokenCount":83,"candidatesTokenCount":14,"totalTokenCount":97},
            "responseId":"qpc2afWV"}"#;
        assert_eq!(
            gemini_to_chat_at(raw, "gemini-flash", CREATED).unwrap(),
            json!({
                "id": "chatcmpl-qpc2afWV", "object": "chat.completion", "created": CREATED, "model": "gemini-flash",
                "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": "Checking.", "refusal": null, "tool_calls": [
                        {"id": "call_qpc2afWV_0", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\",\"units\":\"C\"}"}},
                        {"id": "call_qpc2afWV_1", "type": "function",
                         "function": {"name": "get_time", "arguments": "{}"}},
                    ]}}],
                "usage": {"prompt_tokens": 83, "completion_tokens": 14, "total_tokens": 97,
                          "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}},
            })
        );
    }

    #[test]
    fn a_blocked_prompt_and_safety_finish_reasons_become_content_filter() {
        let blocked = json!({
            "promptFeedback": {"blockReason": "PROHIBITED_CONTENT", "safetyRatings": []},
            "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
            "modelVersion": "gemini-3.5-flash", "responseId": "r-2",
        });
        assert_eq!(
            response(blocked).unwrap(),
            json!({
                "id": "chatcmpl-r-2", "object": "chat.completion", "created": CREATED, "model": "gemini-3.5-flash",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null},
                             "logprobs": null, "finish_reason": "content_filter"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 0, "total_tokens": 12,
                          "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}},
            })
        );
        let stopped = json!({"candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": []}],
                             "responseId": "r-3"});
        let out = response(stopped).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
    }

    #[test]
    fn maps_every_finish_reason() {
        let cases = [
            ("STOP", false, "stop"),
            ("STOP", true, "tool_calls"),
            ("MAX_TOKENS", false, "length"),
            ("MAX_TOKENS", true, "length"),
            ("SAFETY", false, "content_filter"),
            ("RECITATION", false, "content_filter"),
            ("BLOCKLIST", false, "content_filter"),
            ("PROHIBITED_CONTENT", false, "content_filter"),
            ("SPII", false, "content_filter"),
            ("IMAGE_SAFETY", false, "content_filter"),
            ("MALFORMED_FUNCTION_CALL", false, "stop"),
            ("OTHER", false, "stop"),
            ("LANGUAGE", false, "stop"),
            ("SOMETHING_NEW", false, "stop"),
        ];
        for (reason, saw_call, expected) in cases {
            assert_eq!(finish_reason(Some(reason), saw_call), expected, "{reason} {saw_call}");
        }
        assert_eq!(finish_reason(None, true), "tool_calls");
    }

    #[test]
    fn reports_broken_and_error_shaped_answers() {
        assert!(matches!(gemini_to_chat_at(b"<html>", "m", CREATED), Err(TranslateError::InvalidResponse(_))));
        assert!(matches!(response(json!({"responseId": "r"})), Err(TranslateError::InvalidResponse(_))));
        let error = response(json!({"error": {"code": 503, "message": "The model is overloaded.",
                                              "status": "UNAVAILABLE"}}))
        .unwrap_err();
        assert_eq!(
            error,
            TranslateError::Upstream {
                kind: ErrorKind::Overloaded,
                error_type: "UNAVAILABLE".into(),
                message: "The model is overloaded.".into(),
            }
        );
    }

    fn run_stream(sse_text: &str, translator: &mut GeminiStreamTranslator) -> (Vec<String>, Option<TranslateError>) {
        let mut parser = sse::Parser::default();
        let mut payloads = Vec::new();
        for bytes in sse_text.as_bytes().chunks(7) {
            parser.push(bytes);
            while let Some(event) = parser.next_event() {
                match translator.on_data(&event.data) {
                    Ok(out) => payloads.extend(out),
                    Err(error) => return (payloads, Some(error)),
                }
            }
        }
        (payloads, None)
    }

    fn parse_all(payloads: &[String]) -> Vec<Value> {
        payloads.iter().filter(|p| *p != "[DONE]").map(|p| serde_json::from_str(p).unwrap()).collect()
    }

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
    fn streams_text_then_a_whole_function_call_then_finish_and_usage() {
        let mut translator = GeminiStreamTranslator::with_created("gemini-flash", true, CREATED);
        let data = [
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"It is"}]},"index":0}],"usageMetadata":{"promptTokenCount":9,"totalTokenCount":9},"modelVersion":"gemini-3.5-flash","responseId":"r-1"}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hmm","thought":true},{"text":" snowing."}]},"index":0}],"modelVersion":"gemini-3.5-flash","responseId":"r-1"}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"city":"Oslo","days":2}},"thoughtSignature":"CikB"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"thoughtsTokenCount":3,"totalTokenCount":16},"modelVersion":"gemini-3.5-flash","responseId":"r-1"}"#,
        ];
        let mut payloads = Vec::new();
        for data in data {
            payloads.extend(translator.on_data(data).unwrap());
        }
        assert!(translator.is_complete());
        payloads.extend(translator.finish());
        assert_eq!(
            payloads[0],
            r#"{"choices":[{"delta":{"content":"","role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],"created":1764460800,"id":"chatcmpl-r-1","model":"gemini-3.5-flash","object":"chat.completion.chunk","usage":null}"#
        );
        let c = |delta: Value, finish: Option<&str>| chunk("chatcmpl-r-1", "gemini-3.5-flash", delta, finish, true);
        assert_eq!(
            parse_all(&payloads),
            vec![
                c(json!({"role": "assistant", "content": ""}), None),
                c(json!({"content": "It is"}), None),
                c(json!({"content": " snowing."}), None),
                c(
                    json!({"tool_calls": [{"index": 0, "id": "call_r-1_0", "type": "function",
                                           "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\",\"days\":2}"}}]}),
                    None
                ),
                c(json!({}), Some("tool_calls")),
                json!({
                    "id": "chatcmpl-r-1", "object": "chat.completion.chunk", "created": CREATED,
                    "model": "gemini-3.5-flash", "choices": [],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16,
                              "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                              "completion_tokens_details": {"reasoning_tokens": 3}},
                }),
            ]
        );
        assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(payloads.len(), 7);
        assert_eq!(
            translator.usage(),
            Some(TokenUsage {
                prompt_tokens: 9,
                completion_tokens: 7,
                reasoning_tokens: Some(3),
                ..TokenUsage::default()
            })
        );
        assert_eq!(translator.finish(), Vec::<String>::new());
        assert_eq!(translator.on_data("{}").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn streams_the_digest_wire_example_without_usage_keys_when_not_asked() {
        let wire = "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"It is\"}]},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":9,\"totalTokenCount\":9},\"modelVersion\":\"gemini-3.5-flash\",\"responseId\":\"r-1\"}\r\n\r\n\
                    data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\" snowing.\"}]},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":4,\"totalTokenCount\":13},\"modelVersion\":\"gemini-3.5-flash\",\"responseId\":\"r-1\"}\r\n\r\n";
        let mut translator = GeminiStreamTranslator::with_created("gemini-flash", false, CREATED);
        let (mut payloads, error) = run_stream(wire, &mut translator);
        assert_eq!(error, None);
        payloads.extend(translator.finish());
        let c = |delta: Value, finish: Option<&str>| chunk("chatcmpl-r-1", "gemini-3.5-flash", delta, finish, false);
        assert_eq!(
            parse_all(&payloads),
            vec![
                c(json!({"role": "assistant", "content": ""}), None),
                c(json!({"content": "It is"}), None),
                c(json!({"content": " snowing."}), None),
                c(json!({}), Some("stop")),
            ]
        );
        assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(
            translator.usage(),
            Some(TokenUsage { prompt_tokens: 9, completion_tokens: 4, ..TokenUsage::default() })
        );
    }

    #[test]
    fn a_blocked_prompt_in_a_stream_finishes_with_content_filter() {
        let mut translator = GeminiStreamTranslator::with_created("gemini-flash", false, CREATED);
        let out = translator
            .on_data(r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":5},"responseId":"r-9"}"#)
            .unwrap();
        let c = |delta: Value, finish: Option<&str>| chunk("chatcmpl-r-9", "gemini-flash", delta, finish, false);
        assert_eq!(
            parse_all(&out),
            vec![c(json!({"role": "assistant", "content": ""}), None), c(json!({}), Some("content_filter"))]
        );
        assert!(translator.is_complete());
        assert_eq!(translator.finish(), vec!["[DONE]".to_owned()]);
    }

    #[test]
    fn a_stream_cut_before_its_finish_reason_is_incomplete_but_still_closes() {
        let mut translator = GeminiStreamTranslator::with_created("gemini-flash", false, CREATED);
        assert!(!translator.is_complete());
        let out = translator
            .on_data(r#"{"candidates":[{"content":{"parts":[{"text":"Hal"}]},"index":0}],"responseId":"r-4"}"#)
            .unwrap();
        assert_eq!(out.len(), 2);
        assert!(!translator.is_complete());
        let c = |delta: Value, finish: Option<&str>| chunk("chatcmpl-r-4", "gemini-flash", delta, finish, false);
        let closing = translator.finish();
        assert_eq!(parse_all(&closing), vec![c(json!({}), Some("stop"))]);
        assert_eq!(closing.last().map(String::as_str), Some("[DONE]"));
    }

    #[test]
    fn an_error_object_in_the_stream_becomes_an_upstream_error() {
        let mut translator = GeminiStreamTranslator::with_created("gemini-flash", true, CREATED);
        translator
            .on_data(r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]},"index":0}],"responseId":"r-5"}"#)
            .unwrap();
        let error = translator
            .on_data(r#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#)
            .unwrap_err();
        assert_eq!(
            error,
            TranslateError::Upstream {
                kind: ErrorKind::RateLimited,
                error_type: "RESOURCE_EXHAUSTED".into(),
                message: "Resource has been exhausted".into(),
            }
        );
        assert!(matches!(translator.on_data("not json"), Err(TranslateError::InvalidResponse(_))));
    }

    fn gemini_error(code: u16, status: &str, message: &str, details: Value) -> Vec<u8> {
        json!({"error": {"code": code, "message": message, "status": status, "details": details}})
            .to_string()
            .into_bytes()
    }

    const PER_MINUTE_QUOTA: &str = r#"[
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count",
                         "quotaId": "GenerateContentPaidTierInputTokensPerModelPerMinute"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]"#;

    #[test]
    fn classifies_gemini_error_answers() {
        let per_minute: Value = serde_json::from_str(PER_MINUTE_QUOTA).unwrap();
        let daily = json!([{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]);
        let key_invalid = json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                                  "domain": "googleapis.com"}]);
        let cases = [
            (
                gemini_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.", json!([])),
                ErrorKind::InvalidRequest,
            ),
            (
                gemini_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", key_invalid),
                ErrorKind::Authentication,
            ),
            (
                gemini_error(
                    400,
                    "INVALID_ARGUMENT",
                    "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
                    json!([]),
                ),
                ErrorKind::ContextLength,
            ),
            (
                gemini_error(400, "FAILED_PRECONDITION", "User location is not supported for the API use.", json!([])),
                ErrorKind::Permission,
            ),
            (
                gemini_error(400, "FAILED_PRECONDITION", "Please enable billing on your project.", json!([])),
                ErrorKind::Billing,
            ),
            (
                gemini_error(
                    403,
                    "PERMISSION_DENIED",
                    "You do not have permission to access the tuned model.",
                    json!([]),
                ),
                ErrorKind::Permission,
            ),
            (
                gemini_error(404, "NOT_FOUND", "models/gemini-nope is not found for API version v1beta", json!([])),
                ErrorKind::NotFound,
            ),
            (
                gemini_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota", per_minute),
                ErrorKind::RateLimited,
            ),
            (gemini_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota", daily), ErrorKind::Billing),
            (gemini_error(500, "INTERNAL", "An internal error has occurred.", json!([])), ErrorKind::Server),
            (gemini_error(503, "UNAVAILABLE", "The model is overloaded.", json!([])), ErrorKind::Overloaded),
            (
                gemini_error(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.", json!([])),
                ErrorKind::Server,
            ),
            (
                gemini_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", json!([])),
                ErrorKind::Authentication,
            ),
        ];
        for (body, expected) in cases {
            let status = serde_json::from_slice::<Value>(&body).unwrap()["error"]["code"].as_u64().unwrap();
            let status = u16::try_from(status).unwrap();
            assert_eq!(classify_error(status, &body), expected, "{}", String::from_utf8_lossy(&body));
        }
        // The array-wrapped form of the non-SSE stream mode, and bodies without Gemini's shape.
        let wrapped = br#"[{"error":{"code":503,"message":"busy","status":"UNAVAILABLE"}}]"#;
        assert_eq!(classify_error(503, wrapped), ErrorKind::Overloaded);
        assert_eq!(classify_error(502, b"<html>Bad Gateway</html>"), ErrorKind::Server);
        assert_eq!(classify_error(503, b""), ErrorKind::Overloaded);
        assert_eq!(classify_error(429, b"slow down"), ErrorKind::RateLimited);
        assert_eq!(classify_error(418, b""), ErrorKind::Other);
    }

    #[test]
    fn renders_gemini_errors_as_openai_errors_keeping_the_message() {
        let per_minute: Value = serde_json::from_str(PER_MINUTE_QUOTA).unwrap();
        let cases = [
            (
                gemini_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota", per_minute),
                json!({"error": {"message": "You exceeded your current quota", "type": "rate_limit_error",
                                 "param": null, "code": "rate_limit_exceeded"}}),
            ),
            (
                gemini_error(503, "UNAVAILABLE", "The model is overloaded.", json!([])),
                json!({"error": {"message": "The model is overloaded.", "type": "server_error", "param": null,
                                 "code": "UNAVAILABLE"}}),
            ),
            (
                gemini_error(
                    400,
                    "INVALID_ARGUMENT",
                    "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
                    json!([]),
                ),
                json!({"error": {"message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
                                 "type": "invalid_request_error", "param": null, "code": "context_length_exceeded"}}),
            ),
            (
                gemini_error(404, "NOT_FOUND", "models/x is not found", json!([])),
                json!({"error": {"message": "models/x is not found", "type": "invalid_request_error", "param": null,
                                 "code": "NOT_FOUND"}}),
            ),
            (
                b"<html>\n<body>502 Bad Gateway</body>\n</html>".to_vec(),
                json!({"error": {"message": "gemini answered HTTP 502: <html> <body>502 Bad Gateway</body> </html>",
                                 "type": "server_error", "param": null, "code": null}}),
            ),
        ];
        for (body, expected) in cases {
            let status = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["code"].as_u64())
                .map_or(502, |c| u16::try_from(c).unwrap());
            assert_eq!(to_openai_error(status, &body), expected, "{status}");
        }
    }

    #[test]
    fn reads_the_retry_delay_from_retry_info() {
        let per_minute: Value = serde_json::from_str(PER_MINUTE_QUOTA).unwrap();
        let body = gemini_error(429, "RESOURCE_EXHAUSTED", "quota", per_minute);
        assert_eq!(retry_delay(&body), Some(Duration::from_secs(37)));
        let fractional = gemini_error(
            429,
            "RESOURCE_EXHAUSTED",
            "quota",
            json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]),
        );
        assert_eq!(retry_delay(&fractional), Some(Duration::from_millis(1500)));
        let malformed = gemini_error(
            429,
            "RESOURCE_EXHAUSTED",
            "quota",
            json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "soon"}]),
        );
        assert_eq!(retry_delay(&malformed), None);
        assert_eq!(retry_delay(&gemini_error(429, "RESOURCE_EXHAUSTED", "quota", json!([]))), None);
        assert_eq!(retry_delay(b"not json"), None);
    }
}
