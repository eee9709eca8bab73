//! Token counts the proxy works out itself: the pre-flight prompt estimate
//! for the `contextWindow` check, and usage when a provider reported none.
//!
//! Provider-reported usage is authoritative; nothing here runs when a
//! provider reports usage, or when no target has a `contextWindow` smaller
//! than the request could possibly be.
//!
//! Counting uses OpenAI's BPE vocabularies through `tiktoken-rs`, whose rank
//! files are compiled into the binary (nothing is downloaded) and loaded on
//! first use:
//!
//! - OpenAI-family models (`openai`, `azure-openai` and `openai-compatible`
//!   targets whose model `tiktoken-rs` knows): the model's own encoding,
//!   `o200k_base` for gpt-4o, gpt-4.1, gpt-5 and the o-series, `cl100k_base`
//!   for gpt-4, gpt-3.5 and the text-embedding-3 models;
//! - everything else (Anthropic, Gemini, Mistral, Cohere, unknown models):
//!   `o200k_base` as a stand-in, a documented estimate: those providers'
//!   own tokenizers are not public, and a modern 200k-entry BPE is much
//!   closer to them than a characters-per-token rule, above all for code and
//!   non-Latin scripts.
//!
//! A chat prompt counts the text of every message (string content and text
//! parts), its role, name, tool calls and tool-call ids, plus
//! [`TOKENS_PER_MESSAGE`] per message and [`REPLY_PRIMING`] once (OpenAI's
//! published accounting), the JSON of `tools`, [`TOKENS_PER_IMAGE`] per image
//! part and a quarter of the JSON length of any other non-text part (audio,
//! files). Embedding inputs count their texts, and token arrays their
//! length.

use std::sync::OnceLock;

use routing::table::ProviderKind;
use serde_json::{Map, Value};
use tiktoken_rs::CoreBPE;

use crate::request::{ApiRequest, Operation};

/// Framing tokens of each chat message (`<|start|>role … <|end|>`).
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens that prime the assistant's reply.
pub const REPLY_PRIMING: u64 = 3;
/// An image part: OpenAI's count for a 1024×1024 image in high detail
/// (85 base + 4 tiles × 170).
pub const TOKENS_PER_IMAGE: u64 = 765;

/// Which vocabulary counts a target's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200k,
    Cl100k,
}

impl Encoding {
    /// The encoding for a model at a provider of kind `kind`, and whether it
    /// is that model's own tokenizer (`false`: a stand-in).
    pub fn for_model(kind: ProviderKind, model: &str) -> (Encoding, bool) {
        use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};
        let openai_family =
            matches!(kind, ProviderKind::Openai | ProviderKind::AzureOpenai | ProviderKind::OpenaiCompatible);
        match get_tokenizer(model).filter(|_| openai_family) {
            Some(Tokenizer::Cl100kBase) => (Encoding::Cl100k, true),
            // gpt-oss's harmony encoding has the same ranks as o200k_base.
            Some(Tokenizer::O200kBase | Tokenizer::O200kHarmony) => (Encoding::O200k, true),
            _ => (Encoding::O200k, false),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200k => "o200k_base",
            Encoding::Cl100k => "cl100k_base",
        }
    }

    fn bpe(self) -> &'static CoreBPE {
        match self {
            Encoding::O200k => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100k => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    /// Tokens of `text` (special-token spellings count as plain text).
    pub fn count(self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        self.bpe().count_ordinary(text) as u64
    }
}

/// The client's prompt, for estimates.
#[derive(Debug)]
pub struct Prompt<'r> {
    request: &'r ApiRequest,
    /// No estimate can exceed this: every BPE token is at least one byte of
    /// the prompt's JSON, and the fixed allowances are added on top.
    /// Measured on first use: only targets with a `contextWindow` need it.
    upper_bound: OnceLock<u64>,
    /// Counts already made, per encoding (several targets may ask).
    o200k: OnceLock<u64>,
    cl100k: OnceLock<u64>,
}

impl<'r> Prompt<'r> {
    /// Free: nothing is measured or counted until asked.
    pub fn new(request: &'r ApiRequest) -> Self {
        Self { request, upper_bound: OnceLock::new(), o200k: OnceLock::new(), cl100k: OnceLock::new() }
    }

    /// The estimate never exceeds this. Cheap: scans the raw prompt without
    /// parsing it.
    pub fn upper_bound(&self) -> u64 {
        *self.upper_bound.get_or_init(|| {
            let raw = self.request.prompt_raw();
            let images = raw.matches("\"image_url\"").count() as u64;
            let messages = raw.matches("\"role\"").count() as u64;
            let tools = self.request.get("tools").map_or(0, |t| t.get().len() as u64);
            raw.len() as u64 + tools + images * TOKENS_PER_IMAGE + messages * TOKENS_PER_MESSAGE + REPLY_PRIMING
        })
    }

    /// `Ok` when the prompt fits in `window` tokens of this encoding,
    /// otherwise the estimate. Tokenizes only when the cheap bound does not
    /// already show that it fits.
    pub fn fits(&self, window: u64, encoding: Encoding) -> Result<(), u64> {
        if self.upper_bound() <= window {
            return Ok(());
        }
        let tokens = self.tokens(encoding);
        if tokens <= window { Ok(()) } else { Err(tokens) }
    }

    /// The estimated prompt tokens in `encoding`, counted once.
    pub fn tokens(&self, encoding: Encoding) -> u64 {
        let cell = match encoding {
            Encoding::O200k => &self.o200k,
            Encoding::Cl100k => &self.cl100k,
        };
        *cell.get_or_init(|| self.count(encoding))
    }

    fn count(&self, encoding: Encoding) -> u64 {
        let map = self.request.as_map();
        match self.request.operation {
            Operation::Chat => chat_tokens(map, encoding),
            Operation::Embeddings => map.get("input").map_or(0, |input| embedding_tokens(input, encoding)),
        }
    }
}

fn chat_tokens(map: &Map<String, Value>, encoding: Encoding) -> u64 {
    let messages = map.get("messages").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let mut tokens = REPLY_PRIMING;
    for message in messages {
        tokens += TOKENS_PER_MESSAGE;
        for key in ["role", "name", "tool_call_id"] {
            if let Some(text) = message.get(key).and_then(Value::as_str) {
                tokens += encoding.count(text);
            }
        }
        tokens += content_tokens(message.get("content"), encoding);
        for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            for pointer in ["/id", "/function/name", "/function/arguments"] {
                if let Some(text) = call.pointer(pointer).and_then(Value::as_str) {
                    tokens += encoding.count(text);
                }
            }
        }
    }
    if let Some(tools) = map.get("tools").filter(|t| !t.is_null()) {
        tokens += encoding.count(&tools.to_string());
    }
    tokens
}

fn content_tokens(content: Option<&Value>, encoding: Encoding) -> u64 {
    match content {
        Some(Value::String(text)) => encoding.count(text),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => part.get("text").and_then(Value::as_str).map_or(0, |t| encoding.count(t)),
                Some("image_url") => TOKENS_PER_IMAGE,
                _ => (part.to_string().len() as u64).div_ceil(4),
            })
            .sum(),
        _ => 0,
    }
}

fn embedding_tokens(input: &Value, encoding: Encoding) -> u64 {
    match input {
        Value::String(text) => encoding.count(text),
        Value::Array(items) if items.iter().all(Value::is_number) => items.len() as u64,
        Value::Array(items) => items.iter().map(|item| embedding_tokens(item, encoding)).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> ApiRequest {
        ApiRequest::parse(body.as_bytes(), Operation::Chat).unwrap()
    }

    #[test]
    fn openai_models_get_their_own_encoding_and_others_a_stand_in() {
        assert_eq!(Encoding::for_model(ProviderKind::Openai, "gpt-4o-mini"), (Encoding::O200k, true));
        assert_eq!(Encoding::for_model(ProviderKind::Openai, "gpt-5.4-mini"), (Encoding::O200k, true));
        assert_eq!(Encoding::for_model(ProviderKind::Openai, "o3-mini"), (Encoding::O200k, true));
        assert_eq!(Encoding::for_model(ProviderKind::Openai, "gpt-4-0613"), (Encoding::Cl100k, true));
        assert_eq!(Encoding::for_model(ProviderKind::AzureOpenai, "gpt-35-turbo"), (Encoding::Cl100k, true));
        assert_eq!(Encoding::for_model(ProviderKind::Openai, "text-embedding-3-small"), (Encoding::Cl100k, true));
        assert_eq!(Encoding::for_model(ProviderKind::Anthropic, "claude-haiku-4-5"), (Encoding::O200k, false));
        assert_eq!(Encoding::for_model(ProviderKind::Mistral, "gpt-4o"), (Encoding::O200k, false));
        assert_eq!(Encoding::for_model(ProviderKind::OpenaiCompatible, "llama3"), (Encoding::O200k, false));
    }

    #[test]
    fn counts_are_real_bpe_counts_that_differ_between_vocabularies() {
        // Reference counts of OpenAI's tiktoken for these strings.
        assert_eq!(Encoding::Cl100k.count("hello world"), 2);
        assert_eq!(Encoding::O200k.count("hello world"), 2);
        assert_eq!(Encoding::Cl100k.count("tiktoken is great!"), 6);
        // Cyrillic: o200k_base needs far fewer tokens than cl100k_base.
        let russian = "Привет, как дела? Это проверка токенизатора.";
        assert!(Encoding::O200k.count(russian) < Encoding::Cl100k.count(russian));
        assert_eq!(Encoding::O200k.count(""), 0);
    }

    #[test]
    fn a_chat_prompt_counts_text_framing_tool_calls_tools_and_images() {
        let text = r#"{"model":"m","messages":[{"role":"user","content":"hello world"}]}"#;
        // 3 (priming) + 3 (message) + "user" (1) + "hello world" (2).
        assert_eq!(Prompt::new(&chat(text)).tokens(Encoding::O200k), 9);

        let rich = r#"{"model":"m","tools":[{"type":"function","function":{"name":"get_weather"}}],"messages":[
            {"role":"user","content":[{"type":"text","text":"hello world"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"call_1","content":"snow"}]}"#;
        let request = chat(rich);
        let prompt = Prompt::new(&request);
        let tokens = prompt.tokens(Encoding::O200k);
        let count = |t: &str| Encoding::O200k.count(t);
        let expected = REPLY_PRIMING
            + 3 * TOKENS_PER_MESSAGE
            + count("user")
            + count("hello world")
            + TOKENS_PER_IMAGE
            + count("assistant")
            + count("call_1")
            + count("get_weather")
            + count("{}")
            + count("tool")
            + count("call_1")
            + count("snow")
            + count(r#"[{"function":{"name":"get_weather"},"type":"function"}]"#);
        assert_eq!(tokens, expected);
        assert!(tokens <= prompt.upper_bound(), "{tokens} > {}", prompt.upper_bound());
    }

    #[test]
    fn the_cheap_bound_decides_without_tokenizing_when_the_window_is_large() {
        let request = chat(r#"{"model":"m","messages":[{"role":"user","content":"hello world"}]}"#);
        let prompt = Prompt::new(&request);
        assert_eq!(prompt.fits(1_000, Encoding::O200k), Ok(()));
        // Just under the bound: tokenized, and 9 tokens fit in 10.
        assert_eq!(prompt.fits(10, Encoding::O200k), Ok(()));
        assert_eq!(prompt.fits(8, Encoding::O200k), Err(9));
    }

    #[test]
    fn embedding_inputs_count_texts_and_token_arrays() {
        let parse = |body: &str| ApiRequest::parse(body.as_bytes(), Operation::Embeddings).unwrap();
        let request = parse(r#"{"model":"e","input":["hello world","hello"]}"#);
        assert_eq!(Prompt::new(&request).tokens(Encoding::Cl100k), 3);
        let request = parse(r#"{"model":"e","input":[[1,2,3],[4,5]]}"#);
        assert_eq!(Prompt::new(&request).tokens(Encoding::Cl100k), 5);
    }
}
