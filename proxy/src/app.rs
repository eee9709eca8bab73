//! Wiring: the data and admin servers, the table source (manifest watcher or
//! operator client), shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use rand::Rng;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, Source};
use crate::args::Args;
use crate::chat::{self, Context};
use crate::cluster::Cluster;
use crate::errors::ProxyError;
use crate::messages;
use crate::metrics::Metrics;
use crate::request::Operation;
use crate::server::{self, Body, Handler, RequestBody, X_REQUEST_ID, full};
use crate::source;
use crate::state::RoutingHandle;
use crate::upstream::Upstreams;
use crate::websocket;

/// Why the process stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("task `{0}` stopped unexpectedly")]
    TaskStopped(&'static str),
}

impl AppError {
    /// 64 (EX_USAGE) for configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 64,
            _ => 1,
        }
    }
}

/// Sets up logging: JSON lines by default, `RUST_LOG` filters. Lines go
/// through a buffer that a background thread writes to stderr (see
/// [`crate::logwriter`]), so the request path never waits on a `write(2)`
/// or wakes a thread per line. Keep the guard until exit: dropping it
/// writes what is left.
pub fn init_tracing(format: &str) -> std::io::Result<crate::logwriter::Guard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = crate::logwriter::spawn(std::io::stderr())?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    if format == "text" {
        builder.with_ansi(false).init();
    } else {
        builder.event_format(crate::jsonlog::JsonLines).init();
    }
    Ok(guard)
}

/// The data port's router.
pub struct DataPlane {
    pub chat: Arc<Context>,
    pub websocket: websocket::Settings,
}

impl Handler for DataPlane {
    async fn handle(&self, request: Request<RequestBody>) -> Response<Body> {
        let request_id = request
            .headers()
            .get(X_REQUEST_ID)
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .cloned()
            .unwrap_or_else(new_request_id);
        if request.uri().path() == websocket::PATH {
            return websocket::accept(&self.chat, &self.websocket, request, &request_id);
        }
        let (parts, body) = request.into_parts();
        let result = match (&parts.method, parts.uri.path()) {
            (&Method::POST, "/v1/chat/completions") => {
                chat::handle(&self.chat, &parts.headers, body, &request_id, Operation::Chat).await
            }
            (&Method::POST, "/v1/embeddings") => {
                chat::handle(&self.chat, &parts.headers, body, &request_id, Operation::Embeddings).await
            }
            (&Method::POST, "/v1/messages") => {
                return messages::handle(&self.chat, &parts.headers, body, &request_id).await;
            }
            (&Method::GET, "/v1/models") => self.models(&request_id),
            (_, "/v1/messages") => return ProxyError::MethodNotAllowed.into_anthropic_response(&request_id),
            (_, "/v1/chat/completions" | "/v1/embeddings" | "/v1/models") => Err(ProxyError::MethodNotAllowed),
            (_, path) => Err(ProxyError::NotFound(path.to_owned())),
        };
        result.unwrap_or_else(|error| error.into_response(&request_id))
    }
}

impl DataPlane {
    /// The aliases, in OpenAI's model-list shape.
    fn models(&self, request_id: &HeaderValue) -> Result<Response<Body>, ProxyError> {
        let live = self.chat.routing.snapshot().ok_or(ProxyError::NotReady)?;
        let data: Vec<_> = live
            .snapshot
            .table
            .routes
            .keys()
            .map(|alias| json!({"id": alias, "object": "model", "created": 0, "owned_by": "switchyard"}))
            .collect();
        let body = json!({"object": "list", "data": data}).to_string();
        let mut response = Response::new(full(body));
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(X_REQUEST_ID, request_id.clone());
        Ok(response)
    }
}

/// A fresh `req_<32 hex>` request id.
pub(crate) fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id: u128 = crate::random::with(|rng| rng.random());
    let mut text = *b"req_00000000000000000000000000000000";
    for (pair, byte) in text[4..].chunks_exact_mut(2).zip(id.to_be_bytes()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("req_unknown"))
}

/// A started proxy: servers bound, table loaded, watcher running.
pub struct Running {
    pub data_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub routing: RoutingHandle,
    pub metrics: Arc<Metrics>,
    drain_timeout: Duration,
    shutdown: CancellationToken,
    data_task: JoinHandle<bool>,
    admin_task: JoinHandle<bool>,
    /// The manifest watcher or the operator client.
    source_task: JoinHandle<std::io::Result<()>>,
    source_name: &'static str,
}

/// Binds both ports, loads the first table and starts serving.
pub async fn start(args: Args) -> Result<Running, AppError> {
    let Args {
        manifests,
        cluster,
        listen,
        admin_listen,
        drain_timeout,
        idle_timeout,
        reload_interval,
        ws_ping_interval,
        worker_threads: _,
        log_format: _,
    } = args;
    let metrics = Arc::new(Metrics::new());
    let routing = RoutingHandle::new(metrics.clone());
    // The source is checked and the first table loaded before binding, so
    // that a configuration error exits before the ports are taken.
    let (source, seen) = match manifests {
        Some(dir) if cluster.operator.is_none() => {
            if !dir.is_dir() {
                return Err(AppError::Config(format!(
                    "`--manifests {}` is not a directory: point it at a folder of ModelRoute/ProviderSecret YAML files",
                    dir.display()
                )));
            }
            let seen = source::fingerprint(&dir);
            source::load(&dir, &routing, &metrics, true);
            (Source::Manifests(dir), Some(seen))
        }
        None if cluster.operator.is_some() => {
            let cluster = Arc::new(Cluster::new(cluster).map_err(AppError::Config)?);
            cluster.boot(&routing, &metrics);
            (Source::Operator(cluster), None)
        }
        _ => {
            return Err(AppError::Config(
                "give exactly one of `--manifests DIR` (standalone) and `--operator URL` (cluster mode)".to_owned(),
            ));
        }
    };

    let egress = crate::egress::Egress::from_env().map_err(AppError::Config)?;
    let data_listener = server::bind(listen, "--listen").await?;
    let admin_listener = server::bind(admin_listen, "--admin-listen").await?;
    let data_addr = data_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let (kind, from) = match &source {
        Source::Manifests(dir) => ("manifests", dir.display().to_string()),
        Source::Operator(cluster) => ("operator", cluster.operator().to_owned()),
    };
    tracing::info!(
        listen = %data_addr, admin_listen = %admin_addr, source = kind, from = %from,
        drain_timeout_ms = u64::try_from(drain_timeout.as_millis()).unwrap_or(u64::MAX),
        "switchyard-proxy listening"
    );
    if let Some(proxy) = egress.proxy() {
        tracing::info!(%proxy, "https:// upstreams are called through the HTTPS_PROXY (except NO_PROXY hosts)");
    }

    let shutdown = CancellationToken::new();
    let data = Arc::new(DataPlane {
        chat: Arc::new(Context {
            routing: routing.clone(),
            upstreams: Upstreams::with_egress(egress),
            metrics: metrics.clone(),
        }),
        websocket: websocket::Settings { ping_interval: ws_ping_interval, shutdown: shutdown.clone() },
    });
    let (source_task, source_name) = match &source {
        Source::Manifests(dir) => {
            let watch = source::watch(
                dir.clone(),
                seen.unwrap_or_default(),
                routing.clone(),
                metrics.clone(),
                reload_interval,
                shutdown.clone(),
            );
            (tokio::spawn(watch), "manifest watcher")
        }
        Source::Operator(cluster) => {
            (tokio::spawn(cluster.clone().run(routing.clone(), metrics.clone(), shutdown.clone())), "operator client")
        }
    };
    let admin = Arc::new(Admin { routing: routing.clone(), metrics: metrics.clone(), source });
    let data_task = tokio::spawn(server::serve(data_listener, data, shutdown.clone(), drain_timeout, idle_timeout));
    let admin_drain = Duration::from_secs(1);
    let admin_task = tokio::spawn(server::serve(admin_listener, admin, shutdown.clone(), admin_drain, idle_timeout));
    Ok(Running {
        data_addr,
        admin_addr,
        routing,
        metrics,
        drain_timeout,
        shutdown,
        data_task,
        admin_task,
        source_task,
        source_name,
    })
}

impl Running {
    /// Stops accepting, drains in-flight requests up to the drain timeout,
    /// and returns whether the drain completed.
    pub async fn stop(self) -> bool {
        tracing::info!(
            drain_timeout_ms = u64::try_from(self.drain_timeout.as_millis()).unwrap_or(u64::MAX),
            "shutting down: draining in-flight requests"
        );
        self.shutdown.cancel();
        let drained = self.data_task.await.unwrap_or(false);
        let _ = self.admin_task.await;
        let _ = self.source_task.await;
        if drained {
            tracing::info!("drain complete");
        } else {
            tracing::warn!("drain timeout reached: open requests were cut");
        }
        drained
    }

    /// Serves until SIGTERM or SIGINT (then drains), or until a task stops
    /// on its own, which is an error: better restarted than limping.
    pub async fn until_signalled(mut self) -> Result<(), AppError> {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let unexpected = tokio::select! {
            _ = terminate.recv() => None,
            _ = tokio::signal::ctrl_c() => None,
            _ = &mut self.data_task => Some("data server"),
            _ = &mut self.admin_task => Some("admin server"),
            _ = &mut self.source_task => Some(self.source_name),
        };
        if let Some(task) = unexpected {
            self.shutdown.cancel();
            return Err(AppError::TaskStopped(task));
        }
        self.stop().await;
        Ok(())
    }
}

/// Runs the proxy until SIGTERM/SIGINT, then drains.
pub async fn run(args: Args) -> Result<(), AppError> {
    start(args).await?.until_signalled().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_req_and_32_lowercase_hex_digits() {
        let ids: Vec<String> = (0..64).map(|_| new_request_id().to_str().unwrap().to_owned()).collect();
        for id in &ids {
            let hex = id.strip_prefix("req_").unwrap();
            assert_eq!(hex.len(), 32, "{id}");
            assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{id}");
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // Every hex digit position varies: the whole 128 bits are used.
        for position in 4..36 {
            let digits: std::collections::HashSet<_> = ids.iter().map(|id| id.as_bytes()[position]).collect();
            assert!(digits.len() > 1, "digit {position} never changes");
        }
    }
}
