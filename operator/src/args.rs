//! Process configuration: flags with environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// `switchyard-operator`: compiles ModelRoutes and ProviderSecrets into the
/// routing table and serves it to the proxies. The Kubernetes connection comes
/// from `KUBECONFIG` or the in-cluster service account.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchyard-operator", version, about)]
pub struct Args {
    /// File holding the bearer token proxies must present (surrounding whitespace is ignored).
    #[arg(long, env = "SWITCHYARD_TOKEN_FILE")]
    pub token_file: PathBuf,

    /// Address of the distribution API proxies poll (`/v1/table`, `/v1/report`).
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// Address of the admin API (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long, env = "SWITCHYARD_ADMIN_LISTEN", default_value = "127.0.0.1:9902")]
    pub admin_listen: SocketAddr,

    /// Watch only this namespace; default: all namespaces.
    #[arg(long, env = "SWITCHYARD_NAMESPACE")]
    pub namespace: Option<String>,

    /// `NAMESPACE/NAME` of the Secret where the last snapshot is kept for
    /// proxies that boot while the operator is away. Default: the operator's
    /// own namespace (`POD_NAMESPACE`, else `default`), name `switchyard-snapshot`.
    #[arg(long, env = "SWITCHYARD_SNAPSHOT_SECRET")]
    pub snapshot_secret: Option<String>,

    /// Name of the coordination.k8s.io Lease that elects the one replica that works.
    #[arg(long, env = "SWITCHYARD_LEASE_NAME", default_value = "switchyard-operator")]
    pub lease_name: String,

    /// Namespace of the Lease; default: the operator's own namespace.
    #[arg(long, env = "SWITCHYARD_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// This replica's name in the Lease and in Events; default: `POD_NAME`, else `<hostname>-<pid>`.
    #[arg(long, env = "SWITCHYARD_IDENTITY")]
    pub identity: Option<String>,

    /// PEM certificate chain for TLS on the distribution API (with `--tls-key`).
    #[arg(long, env = "SWITCHYARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "SWITCHYARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How long to gather a burst of changes before compiling.
    #[arg(long, env = "SWITCHYARD_DEBOUNCE", default_value = "150ms", value_parser = parse_duration)]
    pub debounce: Duration,

    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "SWITCHYARD_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Log format: `json` (one object per line) or `text`.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", default_value = "json")]
    pub log_format: String,
}

impl Args {
    /// The operator's own namespace.
    pub fn own_namespace() -> String {
        std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".to_owned())
    }

    /// (namespace, name) of the snapshot Secret.
    pub fn snapshot_secret(&self) -> Result<(String, String), String> {
        match &self.snapshot_secret {
            None => Ok((Self::own_namespace(), "switchyard-snapshot".to_owned())),
            Some(text) => match text.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                    Ok((ns.to_owned(), name.to_owned()))
                }
                _ => Err(format!(
                    "`--snapshot-secret {text}` must be NAMESPACE/NAME, e.g. `switchyard-system/switchyard-snapshot`"
                )),
            },
        }
    }

    pub fn lease_namespace(&self) -> String {
        self.lease_namespace.clone().unwrap_or_else(Self::own_namespace)
    }

    pub fn identity(&self) -> String {
        self.identity.clone().or_else(|| std::env::var("POD_NAME").ok().filter(|n| !n.is_empty())).unwrap_or_else(
            || {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            },
        )
    }
}

/// Parses a duration the way manifests write them (`250ms`, `30s`, `5m`, `1h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    routing::compile::parse::duration_ms(text)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is not a duration: write a whole number and a unit, e.g. `250ms` or `30s`"))
}
