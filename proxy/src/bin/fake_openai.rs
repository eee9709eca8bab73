//! `fake-openai`: runs [`proxy::testing::FakeOpenAi`] as its own process (the same as
//! `fake-upstream --provider openai`, with its own environment variables). See
//! [`proxy::testing::process`] for what it prints and how it stops.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use proxy::testing::process::{FakeProvider, serve_until_signalled};

/// A fake OpenAI upstream speaking the real chat completions wire format.
#[derive(Debug, Parser)]
#[command(name = "fake-openai", version)]
struct Args {
    /// Address to listen on; port 0 lets the OS pick one.
    #[arg(long, env = "FAKE_OPENAI_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Require `Authorization: Bearer <KEY>` on every request.
    #[arg(long, env = "FAKE_OPENAI_API_KEY")]
    api_key: Option<String>,
    /// Name sent as `x-fake-upstream` and mentioned in completions.
    #[arg(long, env = "FAKE_OPENAI_NAME")]
    name: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let Args { listen, api_key, name } = Args::parse();
    serve_until_signalled("fake-openai", FakeProvider::Openai, listen, api_key.as_deref(), name.as_deref()).await
}
