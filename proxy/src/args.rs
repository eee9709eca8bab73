//! Process configuration: flags with environment fallbacks. Routing itself is
//! configured only by manifests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// `switchyard-proxy`: the Switchyard data plane.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchyard-proxy", version, about)]
pub struct Args {
    /// Directory of ModelRoute, ProviderSecret and Secret manifests (standalone mode).
    #[arg(long, env = "SWITCHYARD_MANIFESTS")]
    pub manifests: PathBuf,

    /// Address of the OpenAI-compatible API.
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address of the admin API (health, readiness, metrics, debug).
    #[arg(long, env = "SWITCHYARD_ADMIN_LISTEN", default_value = "127.0.0.1:9901")]
    pub admin_listen: SocketAddr,

    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "SWITCHYARD_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How often the manifest directory is checked for changes.
    #[arg(long, env = "SWITCHYARD_RELOAD_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub reload_interval: Duration,

    /// Threads serving requests; default: the CPUs this process may use. With
    /// one, the proxy runs a single-threaded runtime, which saves the
    /// cross-thread bookkeeping of a work-stealing scheduler.
    #[arg(long, env = "SWITCHYARD_WORKER_THREADS")]
    pub worker_threads: Option<std::num::NonZeroUsize>,

    /// Log format: `json` (one object per line) or `text`.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", default_value = "json")]
    pub log_format: String,
}

/// Parses `250ms`, `30s`, `5m` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write a whole number and a unit, e.g. `250ms` or `30s`"))?;
    let ms = match unit {
        "ms" => value,
        "s" => value * 1_000,
        "m" => value * 60_000,
        "h" => value * 3_600_000,
        _ => return Err(format!("`{text}` has unknown unit `{unit}`: use ms, s, m or h")),
    };
    Ok(Duration::from_millis(ms))
}
