//! `fake-openai`: runs [`proxy::testing::FakeOpenAi`] as its own process, for the Python SDK
//! conformance test, benchmarks and manual poking.
//!
//! The first line on stdout is `listening on http://ADDR/v1` (flushed), so a script can start it
//! with `--listen 127.0.0.1:0` and read the port. It stops on SIGTERM or ctrl-c. Request
//! recording is off, so memory stays flat however long a benchmark runs.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use proxy::testing::FakeOpenAi;

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
    let started = match &name {
        Some(name) => FakeOpenAi::start_on_named(listen, name).await,
        None => FakeOpenAi::start_on(listen).await,
    };
    let fake = match started {
        Ok(fake) => fake,
        Err(err) => {
            eprintln!("fake-openai: cannot listen on {listen}: {err}");
            return ExitCode::FAILURE;
        }
    };
    fake.record_requests(false);
    if let Some(key) = &api_key {
        fake.require_api_key(key);
    }
    {
        let mut stdout = std::io::stdout().lock();
        let announced = writeln!(stdout, "listening on {}", fake.base_url()).and_then(|()| stdout.flush());
        if let Err(err) = announced {
            eprintln!("fake-openai: cannot write the listening address to stdout: {err}");
            return ExitCode::FAILURE;
        }
    }
    wait_for_shutdown().await;
    drop(fake);
    ExitCode::SUCCESS
}

/// Resolves on ctrl-c or, on unix, SIGTERM.
async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                eprintln!("fake-openai: cannot listen for SIGTERM, only ctrl-c stops it: {err}");
                if let Err(err) = tokio::signal::ctrl_c().await {
                    eprintln!("fake-openai: cannot listen for ctrl-c either: {err}");
                }
            }
        }
    }
    #[cfg(not(unix))]
    if let Err(err) = tokio::signal::ctrl_c().await {
        eprintln!("fake-openai: cannot listen for ctrl-c: {err}");
    }
}
