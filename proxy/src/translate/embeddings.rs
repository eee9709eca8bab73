//! OpenAI's `POST /v1/embeddings` for providers with an embeddings API of
//! their own (Gemini, Cohere): the request read once ([`read`]), and the
//! OpenAI answer built from the provider's vectors ([`to_openai`]).

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::TranslateError;

/// What an OpenAI embeddings request asks for.
#[derive(Debug, Clone)]
pub struct EmbeddingsRequest<'a> {
    /// The texts, in order.
    pub texts: Vec<&'a str>,
    /// `input` was one string rather than an array.
    pub single: bool,
    /// `dimensions`, when set.
    pub dimensions: Option<u64>,
    /// `encoding_format: "base64"`: vectors go back as base64 of
    /// little-endian `f32`s, as OpenAI sends them.
    pub base64: bool,
}

/// Reads an OpenAI embeddings request for `provider`.
///
/// `input` must be a string or an array of strings (token arrays are
/// [`TranslateError::Unsupported`]: only OpenAI-shaped providers take them);
/// `dimensions` a positive integer; `encoding_format` `float` or `base64`.
/// `user` and unknown fields are ignored.
pub fn read<'a>(body: &'a Map<String, Value>, provider: &str) -> Result<EmbeddingsRequest<'a>, TranslateError> {
    let token_arrays = || {
        TranslateError::unsupported(
            "input",
            format!("`input` holds token arrays, which {provider} cannot embed: send the text as strings"),
        )
    };
    let (texts, single) = match body.get("input") {
        Some(Value::String(text)) => (vec![text.as_str()], true),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut texts = Vec::with_capacity(items.len());
            for (k, item) in items.iter().enumerate() {
                match item {
                    Value::String(text) => texts.push(text.as_str()),
                    Value::Number(_) | Value::Array(_) => return Err(token_arrays()),
                    _ => {
                        return Err(TranslateError::invalid(
                            format!("input[{k}]"),
                            format!("`input[{k}]` must be a string"),
                        ));
                    }
                }
            }
            (texts, false)
        }
        _ => {
            return Err(TranslateError::invalid("input", "`input` must be a non-empty string or array of strings"));
        }
    };
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .filter(|d| *d > 0)
                .ok_or_else(|| TranslateError::invalid("dimensions", "`dimensions` must be a positive integer"))?,
        ),
    };
    let base64 = match body.get("encoding_format").and_then(|f| if f.is_null() { None } else { Some(f) }) {
        None => false,
        Some(Value::String(format)) if format == "float" => false,
        Some(Value::String(format)) if format == "base64" => true,
        Some(_) => {
            return Err(TranslateError::invalid("encoding_format", "`encoding_format` must be `float` or `base64`"));
        }
    };
    Ok(EmbeddingsRequest { texts, single, dimensions, base64 })
}

/// OpenAI's embeddings answer (`object: "list"`) for `vectors` in input
/// order, with `usage.prompt_tokens` = `prompt_tokens`.
pub fn to_openai(vectors: &[Vec<f64>], model: &str, prompt_tokens: u64, base64: bool) -> Value {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 { Value::String(encode_base64(vector)) } else { json!(vector) };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})
}

/// A vector as OpenAI's `encoding_format: "base64"` sends it: base64 of its
/// values as little-endian `f32`s.
fn encode_base64(vector: &[f64]) -> String {
    #[expect(clippy::cast_possible_truncation, reason = "OpenAI's base64 encoding is of f32 values")]
    let bytes: Vec<u8> = vector.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// OpenAI's answer for the vectors `items` (each an array of numbers) of
/// `provider`'s answer to `request`; another number of vectors than texts,
/// or a vector that is not numbers, is [`TranslateError::InvalidResponse`].
pub(super) fn answer(
    provider: &str,
    items: &[Value],
    request: &EmbeddingsRequest<'_>,
    model: &str,
    prompt_tokens: u64,
) -> Result<Value, TranslateError> {
    let vectors = items
        .iter()
        .map(|item| {
            item.as_array()
                .and_then(|values| values.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
                .ok_or_else(|| {
                    TranslateError::InvalidResponse(format!("a {provider} embedding is not an array of numbers"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if vectors.len() != request.texts.len() {
        return Err(TranslateError::InvalidResponse(format!(
            "{provider} sent {} embeddings for {} inputs",
            vectors.len(),
            request.texts.len()
        )));
    }
    Ok(to_openai(&vectors, model, prompt_tokens, request.base64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `read` of `body`, owned: (texts, single, dimensions, base64).
    fn read_json(body: Value) -> Result<(Vec<String>, bool, Option<u64>, bool), TranslateError> {
        let request = read(body.as_object().unwrap(), "gemini")?;
        let texts = request.texts.iter().map(|t| (*t).to_owned()).collect();
        Ok((texts, request.single, request.dimensions, request.base64))
    }

    #[test]
    fn inputs_dimensions_and_encoding_are_read_and_bad_ones_named() {
        let one = read_json(json!({"model": "e", "input": "hi", "user": "u"})).unwrap();
        assert_eq!(one, (vec!["hi".to_owned()], true, None, false));
        let many = read_json(json!({"input": ["a", "b"], "dimensions": 8, "encoding_format": "base64"})).unwrap();
        assert_eq!(many, (vec!["a".to_owned(), "b".to_owned()], false, Some(8), true));
        let tokens = read_json(json!({"input": [[1, 2, 3]]})).unwrap_err();
        assert!(tokens.is_provider_gap() && tokens.to_string().contains("gemini cannot embed"), "{tokens}");
        assert_eq!(read_json(json!({"input": ["a", null]})).unwrap_err().field(), Some("input[1]"));
        assert_eq!(read_json(json!({"input": "a", "dimensions": 0})).unwrap_err().field(), Some("dimensions"));
        assert_eq!(
            read_json(json!({"input": "a", "encoding_format": "int8"})).unwrap_err().field(),
            Some("encoding_format")
        );
    }

    #[test]
    fn the_answer_is_openais_list_in_float_or_base64() {
        let answer = to_openai(&[vec![0.5, -1.0], vec![0.25, 0.0]], "embed-1", 7, false);
        assert_eq!(
            answer,
            json!({"object": "list", "model": "embed-1", "usage": {"prompt_tokens": 7, "total_tokens": 7},
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]},
                         {"object": "embedding", "index": 1, "embedding": [0.25, 0.0]}]})
        );
        // 0.5f32 = 00 00 00 3f, -1.0f32 = 00 00 80 bf (little-endian).
        let answer = to_openai(&[vec![0.5, -1.0]], "embed-1", 0, true);
        assert_eq!(answer["data"][0]["embedding"], "AAAAPwAAgL8=");
    }
}
