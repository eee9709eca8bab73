//! Reading the client's OpenAI chat request: the pieces every translator
//! needs, so that each provider module only says how its own API differs.

use serde_json::{Map, Value, json};

use super::TranslateError;

/// Request fields, minus the ones the target drops; `null` counts as absent.
pub(super) struct Fields<'a> {
    pub(super) body: &'a Map<String, Value>,
    pub(super) dropped: &'a [String],
}

impl<'a> Fields<'a> {
    pub(super) fn get(&self, name: &str) -> Option<&'a Value> {
        if self.dropped.iter().any(|d| d == name) {
            return None;
        }
        self.body.get(name).filter(|v| !v.is_null())
    }
}

/// The role of a chat message, as the translators tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MessageRole {
    /// `system` or `developer`.
    System,
    User,
    Assistant,
    Tool,
}

/// `message` (at `path`) as an object with a role `provider` can replay:
/// not an object or no `role` is InvalidRequest, the deprecated `function`
/// role is Unsupported, an unknown role InvalidRequest.
pub(super) fn chat_message<'a>(
    message: &'a Value,
    path: &str,
    provider: &str,
) -> Result<(&'a Map<String, Value>, MessageRole), TranslateError> {
    let Some(message) = message.as_object() else {
        return Err(TranslateError::invalid(path, format!("`{path}` must be an object with a `role` and a `content`")));
    };
    let role = match message.get("role").and_then(Value::as_str) {
        Some("system" | "developer") => MessageRole::System,
        Some("user") => MessageRole::User,
        Some("assistant") => MessageRole::Assistant,
        Some("tool") => MessageRole::Tool,
        Some("function") => {
            return Err(TranslateError::unsupported(
                format!("{path}.role"),
                format!(
                    "`{path}.role` is the deprecated `function` role, which {provider} cannot replay: \
                     send tool results as `tool` messages with a `tool_call_id`"
                ),
            ));
        }
        Some(other) => {
            return Err(TranslateError::invalid(
                format!("{path}.role"),
                format!("`{path}.role` is `{other}`: use system, developer, user, assistant or tool"),
            ));
        }
        None => {
            return Err(TranslateError::invalid(
                format!("{path}.role"),
                format!("`{path}.role` is required: use system, developer, user, assistant or tool"),
            ));
        }
    };
    Ok((message, role))
}

/// What `response_format` asks for (`json_schema` with its schema).
pub(super) enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema(Value),
}

/// Reads `response_format`; a missing schema or an unknown type is InvalidRequest.
pub(super) fn response_format(format: &Value) -> Result<ResponseFormat, TranslateError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => match format.get("json_schema").and_then(|s| s.get("schema")) {
            Some(schema @ Value::Object(_)) => Ok(ResponseFormat::JsonSchema(schema.clone())),
            _ => Err(TranslateError::invalid(
                "response_format.json_schema.schema",
                "`response_format.json_schema.schema` must be a JSON Schema object",
            )),
        },
        _ => Err(TranslateError::invalid(
            "response_format.type",
            "`response_format.type` must be text, json_object or json_schema",
        )),
    }
}

/// One content part: its path, its object and its `type`.
pub(super) type Part<'a> = (String, &'a Map<String, Value>, &'a str);

pub(super) fn content_parts<'a>(content: &'a [Value], path: &str) -> Result<Vec<Part<'a>>, TranslateError> {
    content
        .iter()
        .enumerate()
        .map(|(k, part)| {
            let part_path = format!("{path}.content[{k}]");
            let object = part.as_object().ok_or_else(|| {
                TranslateError::invalid(&part_path, format!("`{part_path}` must be an object with a `type`"))
            })?;
            let kind = object.get("type").and_then(Value::as_str).ok_or_else(|| {
                TranslateError::invalid(format!("{part_path}.type"), format!("`{part_path}.type` is required"))
            })?;
            Ok((part_path, object, kind))
        })
        .collect()
}

pub(super) fn part_text<'a>(
    part: &'a Map<String, Value>,
    key: &str,
    part_path: &str,
) -> Result<&'a str, TranslateError> {
    part.get(key).and_then(Value::as_str).ok_or_else(|| {
        TranslateError::invalid(format!("{part_path}.{key}"), format!("`{part_path}.{key}` must be a string"))
    })
}

pub(super) fn content_type_error(path: &str) -> TranslateError {
    TranslateError::invalid(
        format!("{path}.content"),
        format!("`{path}.content` must be a string or an array of content parts"),
    )
}

/// Splits `data:<mime>;base64,<data>` into `(mime, data)`.
pub(super) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (header, data) = rest.split_once(',')?;
    let mut params = header.split(';');
    let mime = params.next()?;
    params.any(|p| p.eq_ignore_ascii_case("base64")).then_some((mime, data))
}

pub(super) fn stop_sequences(stop: &Value) -> Result<Vec<Value>, TranslateError> {
    match stop {
        Value::String(s) => Ok(vec![Value::String(s.clone())]),
        Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(k, s)| match s {
                Value::String(_) => Ok(s.clone()),
                _ => Err(TranslateError::invalid(format!("stop[{k}]"), format!("`stop[{k}]` must be a string"))),
            })
            .collect(),
        _ => Err(TranslateError::invalid("stop", "`stop` must be a string or an array of strings")),
    }
}

/// An assistant's tool call, as a provider replays it.
pub(super) struct ToolCall<'a> {
    pub(super) id: &'a str,
    pub(super) name: &'a str,
    /// The decoded arguments: always a JSON object.
    pub(super) arguments: Value,
}

/// Reads `tool_calls[j]` at `path` for `provider`: a `function` call with an
/// id, a name and arguments that decode to a JSON object (empty means `{}`).
pub(super) fn tool_call<'a>(call: &'a Value, path: &str, provider: &str) -> Result<ToolCall<'a>, TranslateError> {
    let kind = call.get("type").and_then(Value::as_str).unwrap_or("function");
    if kind != "function" {
        return Err(TranslateError::unsupported(
            format!("{path}.type"),
            format!("`{path}.type` is `{kind}`; {provider} can replay only `function` tool calls"),
        ));
    }
    let id = call.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()).ok_or_else(|| {
        TranslateError::invalid(
            format!("{path}.id"),
            format!("`{path}.id` is required: send the id the model gave the call"),
        )
    })?;
    let function = call.get("function");
    let name =
        function.and_then(|f| f.get("name")).and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| {
            TranslateError::invalid(format!("{path}.function.name"), format!("`{path}.function.name` is required"))
        })?;
    let arguments_path = format!("{path}.function.arguments");
    let arguments = match function.and_then(|f| f.get("arguments")) {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(text)) if text.trim().is_empty() => json!({}),
        Some(Value::String(text)) => serde_json::from_str(text).map_err(|error| {
            TranslateError::invalid(
                &arguments_path,
                format!(
                    "`{arguments_path}` is not valid JSON ({error}): send the arguments as a JSON-encoded object, \
                     e.g. \"{{\\\"city\\\":\\\"Oslo\\\"}}\""
                ),
            )
        })?,
        Some(object @ Value::Object(_)) => object.clone(),
        Some(_) => Value::Null,
    };
    if !arguments.is_object() {
        return Err(TranslateError::invalid(
            &arguments_path,
            format!("`{arguments_path}` must encode a JSON object ({provider} takes tool arguments as an object)"),
        ));
    }
    Ok(ToolCall { id, name, arguments })
}
