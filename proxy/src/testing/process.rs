//! Running one fake upstream as its own process (the `fake-upstream` and `fake-openai`
//! binaries), for the Python SDK conformance tests, benchmarks and manual poking.
//!
//! The first line on stdout is `listening on <BASE_URL>` (flushed), where `BASE_URL` is what a
//! `ProviderSecret`'s `baseUrl` points at: `http://ADDR/v1` for OpenAI, the bare origin
//! `http://ADDR` for Anthropic, Gemini, Cohere and Azure (the resource origin). A script starts the process with
//! `--listen 127.0.0.1:0` and reads the port from that line. The process stops on SIGTERM or
//! ctrl-c. Request recording is off, so memory stays flat however long a benchmark runs.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use super::{FakeAnthropic, FakeAzure, FakeCohere, FakeGemini, FakeOpenAi};

/// Which provider's wire format the fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FakeProvider {
    /// OpenAI chat completions and embeddings ([`FakeOpenAi`]).
    Openai,
    /// Anthropic Messages ([`FakeAnthropic`]).
    Anthropic,
    /// Gemini generateContent / streamGenerateContent ([`FakeGemini`]).
    Gemini,
    /// Azure OpenAI, both URL forms ([`FakeAzure`]).
    Azure,
    /// Cohere v2 chat and embed ([`FakeCohere`]).
    Cohere,
}

/// One running fake of any provider.
enum Running {
    Openai(FakeOpenAi),
    Anthropic(FakeAnthropic),
    Gemini(FakeGemini),
    Azure(FakeAzure),
    Cohere(FakeCohere),
}

impl Running {
    async fn start(provider: FakeProvider, listen: SocketAddr, name: Option<&str>) -> std::io::Result<Self> {
        Ok(match (provider, name) {
            (FakeProvider::Openai, Some(name)) => Self::Openai(FakeOpenAi::start_on_named(listen, name).await?),
            (FakeProvider::Openai, None) => Self::Openai(FakeOpenAi::start_on(listen).await?),
            (FakeProvider::Anthropic, Some(name)) => {
                Self::Anthropic(FakeAnthropic::start_on_named(listen, name).await?)
            }
            (FakeProvider::Anthropic, None) => Self::Anthropic(FakeAnthropic::start_on(listen).await?),
            (FakeProvider::Gemini, Some(name)) => Self::Gemini(FakeGemini::start_on_named(listen, name).await?),
            (FakeProvider::Gemini, None) => Self::Gemini(FakeGemini::start_on(listen).await?),
            (FakeProvider::Azure, name) => Self::Azure(FakeAzure::start_on(listen, name).await?),
            (FakeProvider::Cohere, name) => Self::Cohere(FakeCohere::start_on(listen, name).await?),
        })
    }

    fn base_url(&self) -> String {
        match self {
            Self::Openai(fake) => fake.base_url(),
            Self::Anthropic(fake) => fake.base_url(),
            Self::Gemini(fake) => fake.base_url(),
            Self::Azure(fake) => fake.base_url(),
            Self::Cohere(fake) => fake.base_url(),
        }
    }

    fn configure(&self, api_key: Option<&str>) {
        match self {
            Self::Openai(fake) => {
                fake.record_requests(false);
                api_key.inspect(|key| fake.require_api_key(key));
            }
            Self::Anthropic(fake) => {
                fake.record_requests(false);
                api_key.inspect(|key| fake.require_api_key(key));
            }
            Self::Gemini(fake) => {
                fake.record_requests(false);
                api_key.inspect(|key| fake.require_api_key(key));
            }
            Self::Azure(fake) => {
                fake.record_requests(false);
                api_key.inspect(|key| fake.require_api_key(key));
            }
            Self::Cohere(fake) => {
                fake.record_requests(false);
                api_key.inspect(|key| fake.require_api_key(key));
            }
        }
    }
}

/// Starts the fake, announces its base URL on stdout and serves until SIGTERM or ctrl-c.
/// `program` prefixes error messages on stderr.
pub async fn serve_until_signalled(
    program: &str,
    provider: FakeProvider,
    listen: SocketAddr,
    api_key: Option<&str>,
    name: Option<&str>,
) -> ExitCode {
    let fake = match Running::start(provider, listen, name).await {
        Ok(fake) => fake,
        Err(err) => {
            eprintln!("{program}: cannot listen on {listen}: {err}");
            return ExitCode::FAILURE;
        }
    };
    fake.configure(api_key);
    {
        let mut stdout = std::io::stdout().lock();
        let announced = writeln!(stdout, "listening on {}", fake.base_url()).and_then(|()| stdout.flush());
        if let Err(err) = announced {
            eprintln!("{program}: cannot write the listening address to stdout: {err}");
            return ExitCode::FAILURE;
        }
    }
    wait_for_shutdown(program).await;
    drop(fake);
    ExitCode::SUCCESS
}

/// Resolves on ctrl-c or, on unix, SIGTERM.
async fn wait_for_shutdown(program: &str) {
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
                eprintln!("{program}: cannot listen for SIGTERM, only ctrl-c stops it: {err}");
                if let Err(err) = tokio::signal::ctrl_c().await {
                    eprintln!("{program}: cannot listen for ctrl-c either: {err}");
                }
            }
        }
    }
    #[cfg(not(unix))]
    if let Err(err) = tokio::signal::ctrl_c().await {
        eprintln!("{program}: cannot listen for ctrl-c: {err}");
    }
}
