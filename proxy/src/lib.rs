//! Switchyard's data plane.
//!
//! Serves the OpenAI-compatible API (`/v1/chat/completions`, `/v1/models`)
//! and Anthropic's Messages API (`/v1/messages`), and chat streams over a
//! WebSocket (`/v1/chat/ws`),
//! from a routing table that is swapped atomically while requests are in
//! flight. Each request takes one snapshot of the table and makes every
//! decision (target, retries, fallbacks) against it. Tables come from a
//! manifest directory ([`source`]) or from the operator ([`cluster`]); this
//! crate never talks to the Kubernetes API.
//!
//! Behaviour that spans modules is described in `docs/request-path.md`.

pub mod admin;
pub mod app;
pub mod args;
pub mod chat;
pub mod client;
pub mod cluster;
pub mod cost;
pub mod egress;
pub mod errors;
pub mod jsonlog;
pub mod logwriter;
pub mod messages;
pub mod metrics;
pub mod mock;
pub mod plan;
pub mod random;
pub mod ratelimit;
pub mod request;
pub mod server;
pub mod source;
pub mod sse;
pub mod state;
pub mod tokens;
pub mod translate;
pub mod upstream;
pub mod websocket;

#[cfg(feature = "testing")]
pub mod testing;
