//! Test doubles shared by `proxy/tests`, the `e2e` package and the `fake-openai` and
//! `fake-upstream` binaries ([`process`]).
//!
//! Only compiled with the `testing` cargo feature. Nothing here is used by the proxy itself.
//!
//! - [`FakeOpenAi`]: an OpenAI Chat Completions upstream on a loopback port that speaks the real
//!   wire format (JSON bodies, SSE framing, error envelopes, rate-limit headers) and can be
//!   scripted per request ([`Behaviour`]) or driven by the request's `model` name (see
//!   [`Behaviour::for_model`]), so routing manifests can pick failure modes without test code.

/// The server, state, response body and test helpers both fakes share.
mod common;
pub mod fake_anthropic;
pub mod fake_azure;
pub mod fake_cohere;
pub mod fake_gemini;
pub mod fake_openai;
pub mod process;

pub use fake_anthropic::{AnthropicBehaviour, FakeAnthropic};
pub use fake_azure::FakeAzure;
pub use fake_cohere::FakeCohere;
pub use fake_gemini::{FakeGemini, GeminiBehaviour};
pub use fake_openai::{Behaviour, FakeOpenAi, Recorded};
