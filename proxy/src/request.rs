//! The client's request (chat or embeddings), read once and kept close to the
//! bytes it came in.
//!
//! Top-level fields are parsed; their values stay raw JSON text. The proxy
//! only needs a handful of fields (`model`, `stream`, `stream_options`, the
//! size of `messages`), and a long conversation with inline images can be
//! megabytes: parsing it into a `serde_json::Value` tree and printing it
//! again for every attempt would cost far more than the proxy's own work.
//! Upstream bodies are written from the raw values with only the fields the
//! target needs changed.

use std::fmt;
use std::sync::OnceLock;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::errors::ProxyError;

/// Which API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST /v1/chat/completions`
    Chat,
    /// `POST /v1/embeddings`
    Embeddings,
}

/// A request whose required fields were checked.
#[derive(Debug)]
pub struct ApiRequest {
    pub operation: Operation,
    /// Top-level fields in the client's order; a repeated key keeps its last value.
    fields: Vec<(String, Box<RawValue>)>,
    /// The alias in `model`.
    pub model: String,
    pub stream: bool,
    /// The client set `stream_options.include_usage: true`.
    pub client_wants_usage: bool,
    /// The whole request as a JSON map, built on first use (translated providers).
    map: OnceLock<Map<String, Value>>,
}

fn bad(message: impl Into<String>, param: Option<&'static str>) -> ProxyError {
    ProxyError::BadRequest { message: message.into(), param }
}

impl ApiRequest {
    /// Parses and checks a request body, with errors a client can act on.
    pub fn parse(bytes: &[u8], operation: Operation) -> Result<Self, ProxyError> {
        let Fields(fields) = serde_json::from_slice(bytes).map_err(|e| {
            if e.is_data() {
                bad("the request body must be a JSON object", None)
            } else {
                bad(format!("the request body is not valid JSON: {e}"), None)
            }
        })?;
        let mut request = Self {
            operation,
            fields,
            model: String::new(),
            stream: false,
            client_wants_usage: false,
            map: OnceLock::new(),
        };
        request.model = match request.parsed::<Value>("model") {
            Some(Value::String(model)) if !model.is_empty() => model,
            _ => {
                return Err(bad(
                    "`model` is required: set it to one of the aliases listed by GET /v1/models",
                    Some("model"),
                ));
            }
        };
        match operation {
            Operation::Chat => {
                if !request.non_empty("messages", '[') {
                    return Err(bad("`messages` must be a non-empty array of chat messages", Some("messages")));
                }
            }
            Operation::Embeddings => {
                if !(request.non_empty("input", '[') || request.non_empty("input", '"')) {
                    return Err(bad(
                        "`input` must be a non-empty string or a non-empty array of strings or token arrays",
                        Some("input"),
                    ));
                }
                return Ok(request);
            }
        }
        request.stream = match request.parsed::<Value>("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(stream)) => stream,
            Some(_) => return Err(bad("`stream` must be true or false", Some("stream"))),
        };
        request.client_wants_usage = request.stream
            && request
                .parsed::<Value>("stream_options")
                .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
                .unwrap_or(false);
        Ok(request)
    }

    /// The raw value of `key` opens with `open` (`[` or `"`) and is not empty.
    /// A raw value is valid JSON already, so this needs no parsing.
    fn non_empty(&self, key: &str, open: char) -> bool {
        let close = if open == '[' { ']' } else { '"' };
        self.get(key)
            .is_some_and(|raw| raw.get().strip_prefix(open).is_some_and(|rest| !rest.trim_start().starts_with(close)))
    }

    /// The raw value of a top-level field.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
    }

    /// A top-level field parsed into `T`; `None` when absent or of another shape.
    pub fn parsed<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        serde_json::from_str(self.get(key)?.get()).ok()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets a top-level field.
    pub fn set(&mut self, key: &str, value: &Value) {
        let Ok(raw) = serde_json::value::to_raw_value(value) else { return };
        self.map.take();
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some((_, slot)) => *slot = raw,
            None => self.fields.push((key.to_owned(), raw)),
        }
    }

    /// Asks a streaming upstream for the usage chunk (tokens and cost are
    /// counted from it); the chat handler drops it again when the client did
    /// not ask for it.
    pub fn request_usage(&mut self) {
        if !self.stream || self.client_wants_usage {
            return;
        }
        let mut options = match self.parsed::<Value>("stream_options") {
            Some(Value::Object(options)) => options,
            _ => Map::new(),
        };
        options.insert("include_usage".into(), Value::Bool(true));
        self.set("stream_options", &Value::Object(options));
    }

    /// The raw JSON of the prompt (`messages` or `input`), for the cheap
    /// bound of the pre-flight token estimate.
    pub fn prompt_raw(&self) -> &str {
        let key = match self.operation {
            Operation::Chat => "messages",
            Operation::Embeddings => "input",
        };
        self.get(key).map_or("", RawValue::get)
    }

    /// The body with `model` set to `model` and, when `rename_max_tokens`,
    /// `max_tokens` sent as `max_completion_tokens`; every other field as
    /// the client wrote it.
    pub fn to_upstream_json(&self, model: &str, rename_max_tokens: bool) -> Vec<u8> {
        serde_json::to_vec(&Upstream { request: self, model, rename_max_tokens }).unwrap_or_default()
    }

    /// The whole request as a JSON map, for translators that rewrite it;
    /// parsed once per request, however many attempts read it.
    pub fn as_map(&self) -> &Map<String, Value> {
        self.map.get_or_init(|| {
            self.fields
                .iter()
                .filter_map(|(k, v)| serde_json::from_str(v.get()).ok().map(|value| (k.clone(), value)))
                .collect()
        })
    }
}

struct Upstream<'a> {
    request: &'a ApiRequest,
    model: &'a str,
    rename_max_tokens: bool,
}

impl Serialize for Upstream<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = &self.request.fields;
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (key, value) in fields {
            match key.as_str() {
                "model" => map.serialize_entry(key, self.model)?,
                "max_tokens" if self.rename_max_tokens => map.serialize_entry("max_completion_tokens", value)?,
                _ => map.serialize_entry(key, value)?,
            }
        }
        map.end()
    }
}

/// Top-level object fields with raw values.
struct Fields(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Fields, A::Error> {
                let mut fields: Vec<(String, Box<RawValue>)> = Vec::with_capacity(access.size_hint().unwrap_or(8));
                while let Some((key, value)) = access.next_entry::<String, Box<RawValue>>()? {
                    match fields.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, slot)) => *slot = value,
                        None => fields.push((key, value)),
                    }
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ApiRequest, String> {
        ApiRequest::parse(text.as_bytes(), Operation::Chat).map_err(|e| e.message())
    }

    #[test]
    fn the_upstream_body_changes_only_the_model_and_keeps_the_rest_verbatim() {
        let request = parse(
            r#"{"model":"chat","messages":[{"role":"user","content":"h\u00e9"}],"max_tokens":5,"x":{"a":[1, 2]}}"#,
        )
        .unwrap();
        let body = String::from_utf8(request.to_upstream_json("gpt-4o", false)).unwrap();
        assert_eq!(
            body,
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"h\u00e9"}],"max_tokens":5,"x":{"a":[1, 2]}}"#
        );
        let body = String::from_utf8(request.to_upstream_json("gpt-4o", true)).unwrap();
        assert!(body.contains(r#""max_completion_tokens":5"#), "{body}");
    }

    #[test]
    fn usage_is_requested_for_streams_without_losing_other_stream_options() {
        let mut request = parse(
            r#"{"model":"m","stream":true,"stream_options":{"include_obfuscation":false},"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        assert!(!request.client_wants_usage);
        request.request_usage();
        let options: Value = request.parsed("stream_options").unwrap();
        assert_eq!(options, serde_json::json!({"include_obfuscation": false, "include_usage": true}));
    }

    #[test]
    fn missing_or_malformed_required_fields_are_named() {
        assert!(parse("[1]").unwrap_err().contains("must be a JSON object"));
        assert!(parse("{").unwrap_err().contains("not valid JSON"));
        assert!(parse(r#"{"messages":[{}]}"#).unwrap_err().contains("`model` is required"));
        assert!(parse(r#"{"model":"m","messages":[]}"#).unwrap_err().contains("`messages` must be a non-empty array"));
        assert!(parse(r#"{"model":"m","messages":"hi"}"#).unwrap_err().contains("`messages`"));
        assert!(parse(r#"{"model":"m","messages":[{}],"stream":"yes"}"#).unwrap_err().contains("`stream` must be"));
    }

    #[test]
    fn embeddings_need_a_non_empty_input_and_no_messages() {
        let parse = |text: &str| ApiRequest::parse(text.as_bytes(), Operation::Embeddings).map_err(|e| e.message());
        assert!(parse(r#"{"model":"e","input":"hello"}"#).is_ok());
        assert!(parse(r#"{"model":"e","input":["a","b"]}"#).is_ok());
        assert!(parse(r#"{"model":"e","input":""}"#).unwrap_err().contains("`input` must be"));
        assert!(parse(r#"{"model":"e","input":[]}"#).unwrap_err().contains("`input` must be"));
        assert!(parse(r#"{"model":"e"}"#).unwrap_err().contains("`input` must be"));
    }

    #[test]
    fn the_json_map_follows_fields_set_after_it_was_first_read() {
        let mut request = parse(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert_eq!(request.as_map().get("stream_options"), None);
        request.request_usage();
        assert_eq!(request.as_map()["stream_options"], serde_json::json!({"include_usage": true}));
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_like_a_json_map() {
        let request = parse(r#"{"model":"a","model":"b","messages":[{}]}"#).unwrap();
        assert_eq!(request.model, "b");
        assert_eq!(
            String::from_utf8(request.to_upstream_json("up", false)).unwrap(),
            r#"{"model":"up","messages":[{}]}"#
        );
    }
}
