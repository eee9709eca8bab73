//! `fake-upstream --provider openai|anthropic|gemini|azure|cohere`: runs one of the fake upstreams of
//! [`proxy::testing`] as its own process, speaking that provider's wire format. See
//! [`proxy::testing::process`] for what it prints (`listening on <BASE_URL>`) and how it stops.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use proxy::testing::process::{FakeProvider, serve_until_signalled};

/// A fake LLM provider upstream speaking the provider's real wire format.
#[derive(Debug, Parser)]
#[command(name = "fake-upstream", version)]
struct Args {
    /// Which provider's API to fake.
    #[arg(long, env = "FAKE_UPSTREAM_PROVIDER", value_enum, default_value = "openai")]
    provider: FakeProvider,
    /// Address to listen on; port 0 lets the OS pick one.
    #[arg(long, env = "FAKE_UPSTREAM_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Require this key on every request, in the provider's auth header
    /// (`Authorization: Bearer`, `x-api-key`, `x-goog-api-key` or `?key=`, `api-key`).
    #[arg(long, env = "FAKE_UPSTREAM_API_KEY")]
    api_key: Option<String>,
    /// Name sent as `x-fake-upstream` and mentioned in answers.
    #[arg(long, env = "FAKE_UPSTREAM_NAME")]
    name: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let Args { provider, listen, api_key, name } = Args::parse();
    serve_until_signalled("fake-upstream", provider, listen, api_key.as_deref(), name.as_deref()).await
}
