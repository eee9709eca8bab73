//! HTTP: the distribution API proxies poll, and the admin API.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use routing::distribution::{PROXY_HEADER, REPORT_PATH, Report, TABLE_PATH, WAIT_PARAM};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::fleet::{Fleet, Published};
use crate::metrics::Metrics;

pub type Body = Full<Bytes>;

/// Largest report body accepted.
const MAX_REPORT_BYTES: usize = 1 << 20;
/// Default and longest long-poll, in seconds.
const DEFAULT_WAIT_S: u64 = 30;
const MAX_WAIT_S: u64 = 60;

/// Something that answers requests.
pub trait Handler: Send + Sync + 'static {
    fn handle(self: Arc<Self>, request: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// Serves `handler` on `listener` (over TLS when `tls` is set) until
/// `shutdown`, then lets open requests finish for up to `drain`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Arc<H>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |request| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.handle(request).await) }
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        match &tls {
            None => {
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let watched = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = watched.await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    match acceptor.accept(stream).await {
                        Ok(tls_stream) => {
                            let connection = builder.serve_connection(TokioIo::new(tls_stream), service).into_owned();
                            let _ = watcher.watch(connection).await;
                        }
                        Err(error) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    }
                });
            }
        }
    }
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain timeout: closing connections still open");
    }
}

/// Binds `addr`, naming the flag in the error.
pub async fn bind(addr: SocketAddr, flag: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on `{flag} {addr}`: {e}")))
}

/// TLS for the distribution API from PEM files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| format!("`--tls-cert {}`: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("`--tls-cert {}` holds no PEM certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("`--tls-key {}`: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| format!("`--tls-cert`/`--tls-key`: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message.into() + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Compares without an early exit, so response timing says nothing about
/// how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /v1/table` and `POST /v1/report`.
pub struct Distribution {
    pub token: Vec<u8>,
    pub current: watch::Receiver<Option<Arc<Published>>>,
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

impl Handler for Distribution {
    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let authorized = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|presented| constant_time_eq(presented, &self.token));
        if !authorized {
            return text(
                StatusCode::UNAUTHORIZED,
                "send `Authorization: Bearer <token>` with the token from the operator's token Secret",
            );
        }
        let Some(proxy) = request.headers().get(PROXY_HEADER).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty())
        else {
            return text(StatusCode::BAD_REQUEST, format!("send `{PROXY_HEADER}: <proxy name>`"));
        };
        let proxy = proxy.to_owned();
        match (request.method(), request.uri().path()) {
            (&Method::GET, TABLE_PATH) => self.table(&request, &proxy).await,
            (&Method::POST, REPORT_PATH) => self.report(request).await,
            (_, TABLE_PATH) => text(StatusCode::METHOD_NOT_ALLOWED, format!("use GET {TABLE_PATH}")),
            (_, REPORT_PATH) => text(StatusCode::METHOD_NOT_ALLOWED, format!("use POST {REPORT_PATH}")),
            (_, path) => {
                text(StatusCode::NOT_FOUND, format!("no `{path}` here: use GET {TABLE_PATH} or POST {REPORT_PATH}"))
            }
        }
    }
}

impl Distribution {
    async fn table(&self, request: &Request<Incoming>, proxy: &str) -> Response<Body> {
        let seen = request
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_start_matches("W/").trim_matches('"').to_owned());
        let wait = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix(WAIT_PARAM)?.strip_prefix('=')))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(DEFAULT_WAIT_S)
            .min(MAX_WAIT_S);
        self.fleet.seen(proxy);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        let mut current = self.current.clone();
        loop {
            let published = current.borrow_and_update().clone();
            if let Some(published) = &published
                && seen.as_deref() != Some(published.hash.as_str())
            {
                self.metrics.pushes.inc();
                let mut response = Response::new(Full::new(published.body.clone()));
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", published.hash)) {
                    headers.insert(header::ETAG, etag);
                }
                return response;
            }
            let woke = tokio::select! {
                () = self.shutdown.cancelled() => false,
                () = tokio::time::sleep_until(deadline) => false,
                changed = current.changed() => changed.is_ok(),
            };
            if !woke {
                return match published {
                    Some(_) => {
                        let mut response = text(StatusCode::NOT_MODIFIED, "");
                        *response.body_mut() = Full::new(Bytes::new());
                        response
                    }
                    None => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no table yet: the operator is not the leader or has not compiled one",
                    ),
                };
            }
        }
    }

    async fn report(&self, request: Request<Incoming>) -> Response<Body> {
        let body = match Limited::new(request.into_body(), MAX_REPORT_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the report (at most {MAX_REPORT_BYTES} bytes): {error}"),
                );
            }
        };
        let report: Report = match serde_json::from_slice(&body) {
            Ok(report) => report,
            Err(error) => {
                return text(StatusCode::BAD_REQUEST, format!("the report is not a valid Report JSON: {error}"));
            }
        };
        if report.proxy.is_empty() {
            return text(StatusCode::BAD_REQUEST, "`proxy` in the report must name the proxy");
        }
        self.fleet.report(report);
        let mut response = text(StatusCode::NO_CONTENT, "");
        *response.body_mut() = Full::new(Bytes::new());
        response
    }
}

/// `/healthz`, `/readyz`, `/metrics`.
pub struct Admin {
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

impl Handler for Admin {
    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        match request.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok"),
            "/readyz" if self.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready: not the leader yet, or no table compiled"),
            "/metrics" => {
                let mut response = text(StatusCode::OK, self.metrics.encode());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                );
                response
            }
            path => text(StatusCode::NOT_FOUND, format!("no `{path}` here: try /healthz, /readyz or /metrics")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
