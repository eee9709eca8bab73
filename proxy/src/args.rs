//! Process configuration: flags with environment fallbacks. Routing itself
//! comes from one source: a manifest directory (standalone) or the operator
//! (cluster mode); exactly one of `--manifests` and `--operator` is given.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args as ClapArgs, Parser};

/// `switchyard-proxy`: the Switchyard data plane.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchyard-proxy", version, about)]
#[command(group(ArgGroup::new("source").required(true).args(["manifests", "operator"])))]
pub struct Args {
    /// Directory of ModelRoute, ProviderSecret and Secret manifests (standalone mode).
    #[arg(long, env = "SWITCHYARD_MANIFESTS")]
    pub manifests: Option<PathBuf>,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Address of the OpenAI-compatible API.
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address of the admin API (health, readiness, metrics, debug).
    #[arg(long, env = "SWITCHYARD_ADMIN_LISTEN", default_value = "127.0.0.1:9901")]
    pub admin_listen: SocketAddr,

    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "SWITCHYARD_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How long a client connection may go without sending a whole request
    /// (since it opened, or since its last answer) before it is closed:
    /// idle kept-alive connections, and clients that send their request too
    /// slowly.
    #[arg(long, env = "SWITCHYARD_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_idle_timeout)]
    pub idle_timeout: Duration,

    /// How often the manifest directory is checked for changes.
    #[arg(long, env = "SWITCHYARD_RELOAD_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub reload_interval: Duration,

    /// How often the WebSocket endpoint (`GET /v1/chat/ws`) pings its
    /// clients; a connection silent for two intervals is closed.
    #[arg(long, env = "SWITCHYARD_WS_PING_INTERVAL", default_value = "20s", value_parser = parse_ws_ping_interval)]
    pub ws_ping_interval: Duration,

    /// Threads serving requests; default: the CPUs this process may use. With
    /// one, the proxy runs a single-threaded runtime, which saves the
    /// cross-thread bookkeeping of a work-stealing scheduler.
    #[arg(long, env = "SWITCHYARD_WORKER_THREADS")]
    pub worker_threads: Option<std::num::NonZeroUsize>,

    /// Log format: `json` (one object per line) or `text`.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", default_value = "json")]
    pub log_format: String,
}

/// Default of `--max-table-bytes`: 64 MiB.
pub const DEFAULT_MAX_TABLE_BYTES: usize = 64 * 1024 * 1024;

/// Cluster mode: the table comes from the operator (see `docs/cluster-mode.md`).
#[derive(Debug, Clone, ClapArgs)]
pub struct ClusterArgs {
    /// Base URL of the operator's distribution endpoint, e.g.
    /// `https://switchyard-operator.switchyard.svc:8443` (cluster mode).
    #[arg(long, env = "SWITCHYARD_OPERATOR", requires = "token_file")]
    pub operator: Option<String>,

    /// File holding the bearer token the operator expects (surrounding whitespace is ignored).
    #[arg(long, env = "SWITCHYARD_TOKEN_FILE", requires = "operator")]
    pub token_file: Option<PathBuf>,

    /// Snapshot JSON to boot from while the operator is unreachable (the
    /// operator's bootstrap Secret, key `snapshot.json`, mounted as a file). May be absent.
    #[arg(long, env = "SWITCHYARD_BOOTSTRAP", requires = "operator")]
    pub bootstrap: Option<PathBuf>,

    /// Directory where the last applied snapshot is kept (mode 0600), to boot from after a restart.
    #[arg(long, env = "SWITCHYARD_STATE_DIR", requires = "operator")]
    pub state_dir: Option<PathBuf>,

    /// This proxy's name in reports; default: env `POD_NAME`, then the hostname.
    #[arg(long, env = "SWITCHYARD_PROXY_NAME", requires = "operator")]
    pub proxy_name: Option<String>,

    /// PEM file of the CA that signed the operator's certificate; default: the webpki roots.
    #[arg(long, env = "SWITCHYARD_OPERATOR_CA", requires = "operator")]
    pub operator_ca: Option<PathBuf>,

    /// Largest snapshot accepted from the operator, in bytes; a larger one is rejected.
    #[arg(long, env = "SWITCHYARD_MAX_TABLE_BYTES", default_value_t = DEFAULT_MAX_TABLE_BYTES)]
    pub max_table_bytes: usize,

    /// How long the operator may hold one long poll (at most 60 s).
    #[arg(long, env = "SWITCHYARD_POLL_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub poll_wait: Duration,

    /// Interval of the heartbeat report (at most half the operator's 15 s liveness window).
    #[arg(long, env = "SWITCHYARD_REPORT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub report_interval: Duration,
}

impl Default for ClusterArgs {
    fn default() -> Self {
        Self {
            operator: None,
            token_file: None,
            bootstrap: None,
            state_dir: None,
            proxy_name: None,
            operator_ca: None,
            max_table_bytes: DEFAULT_MAX_TABLE_BYTES,
            poll_wait: Duration::from_secs(30),
            report_interval: Duration::from_millis(routing::distribution::REPORT_INTERVAL_MS),
        }
    }
}

/// A ping interval: a duration above zero.
fn parse_ws_ping_interval(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => {
            Err(format!("`{text}` is no interval: the WebSocket ping interval must be above zero, e.g. `20s`"))
        }
        interval => Ok(interval),
    }
}

fn parse_idle_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!(
            "`{text}` would close every connection at once: the idle timeout must be above zero, e.g. `60s`"
        )),
        timeout => Ok(timeout),
    }
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
