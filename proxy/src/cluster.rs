//! Cluster mode: the table comes from the operator over the protocol of
//! [`routing::distribution`] (design §4; behaviour in `docs/cluster-mode.md`).
//!
//! One task long-polls `GET /v1/table`, validates what it gets completely
//! (size, JSON, hash, consistency, every provider endpoint) before swapping it
//! in, and persists what it applied; another reports to `POST /v1/report`
//! after every apply or reject and as a heartbeat. A rejected hash is
//! remembered and sent as `If-None-Match`, so it is never fetched again. The
//! last good table stays in force for as long as the operator is away.
//!
//! ```text
//! boot: newest valid of { --state-dir/snapshot.json, --bootstrap } ──▶ install
//! loop: GET /v1/table ──200──▶ validate ──ok──▶ install, persist, report applied
//!          │                          └─bad─▶ keep table, report rejected
//!          ├─304──▶ poll again at once
//!          └─error, 401, 503, timeout──▶ back off (exponential, jittered), poll again
//! ```

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use routing::Snapshot;
use routing::distribution::{self as wire, Rejection, Report};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::args::ClusterArgs;
use crate::metrics::{Metrics, OutcomeLabels};
use crate::state::{Prepared, RoutingHandle};

/// File name of the last applied snapshot in `--state-dir`.
pub const STATE_FILE: &str = "snapshot.json";
/// How much longer than its `wait` a poll may take before it counts as failed.
const POLL_GRACE: Duration = Duration::from_secs(5);
/// Longest wait the operator accepts.
const MAX_WAIT: Duration = Duration::from_secs(60);
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How much of an operator's error body is quoted in the last poll result.
const ERROR_BODY_LIMIT: usize = 512;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The operator client: settings, the HTTP client and what happened so far.
pub struct Cluster {
    /// Base URL, without a trailing `/`; never holds credentials.
    operator: String,
    token_file: PathBuf,
    /// `Bearer <token>`, marked sensitive; replaced when the file changes.
    authorization: Mutex<HeaderValue>,
    name: String,
    name_header: HeaderValue,
    state_dir: Option<PathBuf>,
    bootstrap: Option<PathBuf>,
    max_table_bytes: usize,
    wait: Duration,
    report_interval: Duration,
    client: HttpClient,
    status: Mutex<Status>,
    report_now: Notify,
}

/// What `/debug/table` shows of the channel; holds no secret.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    /// Where the boot table came from, if one was found.
    booted_from: Option<String>,
    polls: u64,
    last_poll: Option<String>,
    applied: Option<String>,
    rejected: Option<Rejection>,
    /// The hash sent as `If-None-Match`: the last one applied or rejected.
    seen: Option<String>,
    last_report: Option<String>,
}

/// The answer to one poll.
enum Polled {
    /// 200: a body within the size limit, and the quoted hash of the `ETag`.
    Snapshot { body: Bytes, etag: Option<String> },
    /// 200 with a body over `--max-table-bytes`.
    TooLarge { size: String, etag: Option<String> },
    /// 304.
    Unchanged,
}

impl Cluster {
    /// Checks the flags, reads the token and builds the client. Errors name the flag to fix.
    pub fn new(args: ClusterArgs) -> Result<Self, String> {
        let ClusterArgs {
            operator,
            token_file,
            bootstrap,
            state_dir,
            proxy_name,
            operator_ca,
            max_table_bytes,
            poll_wait,
            report_interval,
        } = args;
        let operator = operator_url(operator.as_deref().unwrap_or_default())?;
        let token_file =
            token_file.ok_or("`--operator` needs `--token-file`: the file of the operator's bearer token")?;
        let authorization = read_token(&token_file)?;
        let name = proxy_name
            .or_else(|| std::env::var("POD_NAME").ok())
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(hostname);
        let name_header = HeaderValue::try_from(name.as_str()).map_err(|_| {
            format!("`--proxy-name {name}` cannot be sent in an HTTP header: use letters, digits and `-`")
        })?;
        if poll_wait.is_zero() || poll_wait > MAX_WAIT {
            return Err(format!("`--poll-wait` must be between 1s and 60s, not {} ms", poll_wait.as_millis()));
        }
        if report_interval.is_zero() || report_interval.as_millis() * 2 > u128::from(wire::PROXY_TTL_MS) {
            return Err(format!(
                "`--report-interval` must be above 0 and at most {} ms (half the operator's liveness window)",
                wire::PROXY_TTL_MS / 2
            ));
        }
        let client = client(operator_ca.as_deref())?;
        Ok(Self {
            operator,
            token_file,
            authorization: Mutex::new(authorization),
            name,
            name_header,
            state_dir,
            bootstrap,
            max_table_bytes,
            wait: Duration::from_secs(poll_wait.as_secs().max(1)),
            report_interval,
            client,
            status: Mutex::new(Status::default()),
            report_now: Notify::new(),
        })
    }

    /// The operator's base URL.
    pub fn operator(&self) -> &str {
        &self.operator
    }

    /// This proxy's name in reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The channel's state for `/debug/table`.
    pub fn describe(&self) -> serde_json::Value {
        let status = self.status().clone();
        let mut value = serde_json::to_value(status).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("operator".into(), self.operator.clone().into());
            object.insert("proxy".into(), self.name.clone().into());
        }
        value
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Installs the newest valid of the persisted state and the bootstrap
    /// file, so that the proxy serves before the operator answers. Files
    /// that are absent are skipped; invalid ones are logged and skipped.
    pub fn boot(&self, routing: &RoutingHandle, metrics: &Metrics) {
        let candidates = [
            self.state_dir.as_ref().map(|d| ("state", d.join(STATE_FILE))),
            self.bootstrap.as_ref().map(|f| ("bootstrap", f.clone())),
        ];
        let mut best: Option<(SystemTime, String, Prepared)> = None;
        for (label, path) in candidates.into_iter().flatten() {
            let Some((modified, bytes)) = self.read_boot_file(label, &path) else { continue };
            match validate(&bytes, None, self.max_table_bytes) {
                Ok(prepared) => {
                    // Newest wins; on a tie the state file, listed first, stays.
                    if best.as_ref().is_none_or(|(newest, _, _)| modified > *newest) {
                        best = Some((modified, format!("{label} {}", path.display()), prepared));
                    }
                }
                Err(rejection) => {
                    tracing::warn!(file = %path.display(), hash = %rejection.hash, error = %rejection.error, "{label} snapshot is not usable: skipped");
                }
            }
        }
        let Some((_, from, prepared)) = best else {
            tracing::info!(operator = %self.operator, "no stored snapshot to boot from: not ready until the operator sends a table");
            return;
        };
        let hash = prepared.snapshot().hash.clone();
        let routes = prepared.snapshot().table.routes.len();
        install(routing, metrics, prepared);
        tracing::info!(%hash, routes, from = %from, "routing table applied from a stored snapshot");
        let mut status = self.status();
        status.booted_from = Some(from);
        status.applied = Some(hash.clone());
        status.seen = Some(hash);
    }

    /// The modification time and content of a boot file; `None` when it is
    /// absent or unreadable (logged).
    fn read_boot_file(&self, label: &str, path: &Path) -> Option<(SystemTime, Vec<u8>)> {
        let read = || -> std::io::Result<_> {
            let modified = std::fs::metadata(path)?.modified()?;
            Ok((modified, std::fs::read(path)?))
        };
        match read() {
            Ok(found) => Some(found),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(file = %path.display(), "no {label} snapshot");
                None
            }
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "cannot read the {label} snapshot: skipped");
                None
            }
        }
    }

    /// Polls until `shutdown`, and reports beside it.
    pub async fn run(
        self: Arc<Self>,
        routing: RoutingHandle,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let reporter = tokio::spawn(self.clone().report_loop(routing.clone(), shutdown.clone()));
        let mut backoff = Backoff::default();
        loop {
            let seen = self.status().seen.clone();
            let polled = tokio::select! {
                () = shutdown.cancelled() => break,
                polled = tokio::time::timeout(self.wait + POLL_GRACE, self.poll(seen.as_deref())) => polled,
            };
            let polled = polled.unwrap_or_else(|_| {
                Err(format!(
                    "no answer within {} s (the poll waits {} s)",
                    (self.wait + POLL_GRACE).as_secs(),
                    self.wait.as_secs()
                ))
            });
            let result = match polled {
                Ok(Polled::Unchanged) => Ok("304: unchanged".to_owned()),
                Ok(Polled::Snapshot { body, etag }) => self.received(&routing, &metrics, &body, etag, seen.as_deref()),
                Ok(Polled::TooLarge { size, etag }) => {
                    let error = format!("the snapshot is {size}, over `--max-table-bytes` {}", self.max_table_bytes);
                    self.reject(&metrics, etag, error, seen.as_deref())
                }
                Err(error) => Err(error),
            };
            let delay = {
                let mut status = self.status();
                status.polls += 1;
                match &result {
                    Ok(outcome) | Err(outcome) => status.last_poll = Some(outcome.clone()),
                }
                match result {
                    Ok(_) => {
                        backoff.reset();
                        None
                    }
                    Err(error) => {
                        let delay = backoff.next();
                        tracing::warn!(operator = %self.operator, %error, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "table poll failed: keeping the table in force");
                        Some(delay)
                    }
                }
            };
            if let Some(delay) = delay {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
        let _ = reporter.await;
        Ok(())
    }

    /// Handles a 200. `Ok` for an apply and a first reject (poll again at
    /// once); `Err` when the operator sent what this proxy said it had seen,
    /// which a correct operator never does: backing off keeps that from
    /// becoming a hot loop.
    fn received(
        &self,
        routing: &RoutingHandle,
        metrics: &Metrics,
        body: &[u8],
        etag: Option<String>,
        seen: Option<&str>,
    ) -> Result<String, String> {
        match validate(body, etag.clone(), self.max_table_bytes) {
            Ok(prepared) => {
                let hash = prepared.snapshot().hash.clone();
                if seen == Some(hash.as_str()) {
                    return Err(format!("200 with `{hash}`, which this proxy sent as If-None-Match"));
                }
                let routes = prepared.snapshot().table.routes.len();
                install(routing, metrics, prepared);
                tracing::info!(operator = %self.operator, %hash, routes, "routing table applied");
                {
                    let mut status = self.status();
                    status.applied = Some(hash.clone());
                    status.rejected = None;
                    status.seen = Some(hash.clone());
                }
                self.report_now.notify_one();
                if let Some(dir) = &self.state_dir
                    && let Err(error) = persist(dir, body)
                {
                    tracing::warn!(dir = %dir.display(), %error, "cannot persist the applied snapshot; a restart will need the operator or the bootstrap file");
                }
                Ok(format!("200: applied {hash}"))
            }
            Err(rejection) => {
                self.reject(metrics, Some(rejection.hash).filter(|h| !h.is_empty()), rejection.error, seen)
            }
        }
    }

    /// Refuses a snapshot: the table in force stays, the hash is remembered
    /// so that it is not fetched again, and the operator is told why.
    fn reject(
        &self,
        metrics: &Metrics,
        hash: Option<String>,
        error: String,
        seen: Option<&str>,
    ) -> Result<String, String> {
        metrics.reloads.get_or_create(&OutcomeLabels { outcome: "rejected".to_owned() }).inc();
        let Some(hash) = hash else {
            return Err(format!("200 without a usable hash (no ETag, body unreadable): {error}"));
        };
        if seen == Some(hash.as_str()) {
            return Err(format!("200 with `{hash}` again, which this proxy rejected: {error}"));
        }
        tracing::error!(operator = %self.operator, %hash, %error, "routing table rejected: keeping the table in force");
        {
            let mut status = self.status();
            status.rejected = Some(Rejection { hash: hash.clone(), error: error.clone() });
            status.seen = Some(hash.clone());
        }
        self.report_now.notify_one();
        Ok(format!("200: rejected {hash}: {error}"))
    }

    /// One `GET /v1/table`.
    async fn poll(&self, seen: Option<&str>) -> Result<Polled, String> {
        let uri = format!("{}{}?{}={}", self.operator, wire::TABLE_PATH, wire::WAIT_PARAM, self.wait.as_secs());
        let mut request = self.request(Method::GET, &uri)?;
        if let Some(seen) = seen {
            let value = HeaderValue::try_from(format!("\"{seen}\""))
                .map_err(|_| format!("hash `{seen}` cannot be sent as If-None-Match"))?;
            request.headers_mut().insert(http::header::IF_NONE_MATCH, value);
        }
        let response =
            self.client.request(request.map(|()| Full::new(Bytes::new()))).await.map_err(|e| connect_error(&e))?;
        let status = response.status();
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_MODIFIED => return Ok(Polled::Unchanged),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(format!(
                    "{status}: the operator refused the token of `--token-file {}`; it must hold the token of the operator's token Secret",
                    self.token_file.display()
                ));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                return Err(format!(
                    "{status}: the operator has no snapshot yet: {}",
                    error_text(response.into_body()).await
                ));
            }
            _ => return Err(format!("{status} from the operator: {}", error_text(response.into_body()).await)),
        }
        let etag = response
            .headers()
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_start_matches("W/").trim_matches('"').to_owned())
            .filter(|v| !v.is_empty());
        let declared =
            response.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(size) = declared.filter(|&s| s > self.max_table_bytes as u64) {
            return Ok(Polled::TooLarge { size: format!("{size} bytes"), etag });
        }
        let mut body = response.into_body();
        let mut bytes = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("the snapshot body broke off: {e}"))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > self.max_table_bytes {
                    return Ok(Polled::TooLarge { size: "more than that".to_owned(), etag });
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(Polled::Snapshot { body: bytes.freeze(), etag })
    }

    /// A request to the operator with the auth and name headers; re-reads
    /// the token file, so that a rotated token is picked up without a restart.
    fn request(&self, method: Method, uri: &str) -> Result<Request<()>, String> {
        let authorization = {
            let mut current = self.authorization.lock().unwrap_or_else(PoisonError::into_inner);
            match read_token(&self.token_file) {
                Ok(fresh) => *current = fresh,
                Err(error) => tracing::warn!(%error, "keeping the token read before"),
            }
            current.clone()
        };
        Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::AUTHORIZATION, authorization)
            .header(wire::PROXY_HEADER, self.name_header.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(())
            .map_err(|e| format!("cannot build a request to `{uri}`: {e}"))
    }

    /// Reports after every apply or reject and every `--report-interval`.
    async fn report_loop(self: Arc<Self>, routing: RoutingHandle, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.report_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
                () = self.report_now.notified() => ticker.reset(),
            }
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                sent = tokio::time::timeout(REPORT_TIMEOUT, self.report(&routing)) => {
                    sent.unwrap_or_else(|_| Err(format!("no answer within {} s", REPORT_TIMEOUT.as_secs())))
                }
            };
            let outcome = match result {
                Ok(status) => status,
                Err(error) => {
                    tracing::debug!(operator = %self.operator, %error, "report failed");
                    format!("failed: {error}")
                }
            };
            self.status().last_report = Some(outcome);
        }
    }

    /// One `POST /v1/report`.
    async fn report(&self, routing: &RoutingHandle) -> Result<String, String> {
        let (applied, rejected) = {
            let status = self.status();
            (status.applied.clone(), status.rejected.clone())
        };
        let targets = routing.snapshot().map(|live| live.target_counters()).unwrap_or_default();
        let report = Report { proxy: self.name.clone(), applied, rejected, targets };
        let body = serde_json::to_vec(&report).map_err(|e| format!("cannot encode the report: {e}"))?;
        let uri = format!("{}{}", self.operator, wire::REPORT_PATH);
        let (mut parts, ()) = self.request(Method::POST, &uri)?.into_parts();
        parts.headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let request = Request::from_parts(parts, Full::new(Bytes::from(body)));
        let response = self.client.request(request).await.map_err(|e| connect_error(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(status.to_string())
        } else {
            Err(format!("{status} from the operator: {}", error_text(response.into_body()).await))
        }
    }
}

/// Swaps `prepared` in and marks it in the metrics.
fn install(routing: &RoutingHandle, metrics: &Metrics, prepared: Prepared) {
    let hash = prepared.snapshot().hash.clone();
    routing.install_prepared(prepared);
    metrics.set_table(&hash);
    metrics.reloads.get_or_create(&OutcomeLabels { outcome: "applied".to_owned() }).inc();
}

/// Everything a snapshot must pass before it is swapped in: size, JSON,
/// hash, consistency, and an endpoint for every HTTP provider. The
/// rejection's hash is the snapshot's own when it parsed, else `etag`
/// (empty when neither is known); its error never quotes the body, so it
/// cannot leak a credential.
pub fn validate(body: &[u8], etag: Option<String>, max_bytes: usize) -> Result<Prepared, Rejection> {
    let reject = |hash: Option<String>, error: String| Rejection { hash: hash.unwrap_or_default(), error };
    if body.len() > max_bytes {
        let error = format!("the snapshot is {} bytes, over `--max-table-bytes` {max_bytes}", body.len());
        return Err(reject(etag, error));
    }
    let snapshot: Snapshot = serde_json::from_slice(body).map_err(|e| {
        // serde's message can quote a value from the body: say only where and what kind.
        let kind = match e.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not valid JSON",
            serde_json::error::Category::Data => "JSON of the wrong shape for a snapshot",
            serde_json::error::Category::Eof => "cut short",
        };
        reject(etag.clone(), format!("the snapshot is {kind} (line {}, column {})", e.line(), e.column()))
    })?;
    let hash = Some(snapshot.hash.clone());
    snapshot.check().map_err(|e| reject(hash.clone(), e))?;
    let prepared = Prepared::new(snapshot);
    let problems = prepared.problems();
    if !problems.is_empty() {
        return Err(reject(hash, format!("providers cannot be called: {}", problems.join("; "))));
    }
    Ok(prepared)
}

/// Writes `bytes` as `dir/snapshot.json` atomically (temporary file, fsync,
/// rename), readable by this user only: it holds API keys.
pub fn persist(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    // `mode` applies only when the file is created: a leftover keeps its own.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(STATE_FILE))?;
    // Make the rename itself durable; not every filesystem supports it.
    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    Ok(())
}

/// `Bearer <token>` from the token file, marked sensitive.
fn read_token(path: &Path) -> Result<HeaderValue, String> {
    let flag = format!("`--token-file {}`", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {flag}: {e}"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{flag} is empty: it must hold the operator's bearer token"));
    }
    let mut value = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| format!("{flag} holds characters that cannot be sent in an HTTP header"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Checks `--operator`: an http(s) URL without credentials, query or fragment.
fn operator_url(url: &str) -> Result<String, String> {
    let flag = format!("`--operator {url}`");
    let uri: http::Uri = url.parse().map_err(|e| format!("{flag} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("{flag} must start with `http://` or `https://`"));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{flag} has no host"));
    };
    if authority.as_str().contains('@') {
        // Do not echo the URL: it holds credentials.
        return Err("`--operator` must not hold credentials: put the token in `--token-file`".to_owned());
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!("{flag} must not have a query or fragment: give the operator's base URL"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The HTTP(S) client for the operator: webpki roots, or only the CA of `--operator-ca`.
fn client(ca: Option<&Path>) -> Result<HttpClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match ca {
        None => builder.with_webpki_roots(),
        Some(path) => builder.with_tls_config(tls_config(path)?),
    };
    let https = builder.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).build(https))
}

fn tls_config(path: &Path) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let flag = format!("`--operator-ca {}`", path.display());
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {flag}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{flag} is not a PEM certificate file: {e}"))?;
        roots.add(cert).map_err(|e| format!("{flag} holds a certificate that cannot be used: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{flag} holds no `BEGIN CERTIFICATE` block"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The error of a failed exchange, with its cause (e.g. "connection refused").
fn connect_error(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = format!("cannot reach the operator: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The start of an error body, as text.
async fn error_text(body: Incoming) -> String {
    let bytes = match http_body_util::Limited::new(body, 64 * 1024).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return "(unreadable body)".to_owned(),
    };
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(ERROR_BODY_LIMIT)]);
    let text = text.trim();
    if text.is_empty() { "(no message)".to_owned() } else { text.to_owned() }
}

/// This host's name: what a pod's hostname is by default.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "switchyard-proxy".to_owned())
}

/// Exponential backoff with jitter: each delay is at a random point in the
/// upper half of a window that doubles from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`].
#[derive(Debug)]
struct Backoff {
    window: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { window: FIRST_BACKOFF }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let window = self.window;
        self.window = (window * 2).min(MAX_BACKOFF);
        let half = window / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    fn reset(&mut self) {
        self.window = FIRST_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_in_the_upper_half() {
        let mut backoff = Backoff::default();
        let mut window = FIRST_BACKOFF;
        for _ in 0..10 {
            let delay = backoff.next();
            assert!(delay >= window / 2 && delay <= window, "{delay:?} outside the upper half of {window:?}");
            window = (window * 2).min(MAX_BACKOFF);
        }
        assert_eq!(backoff.window, MAX_BACKOFF);
        backoff.reset();
        assert!(backoff.next() <= FIRST_BACKOFF);
    }

    #[test]
    fn operator_urls_are_checked() {
        assert_eq!(operator_url("https://op.ns.svc:8443/").as_deref(), Ok("https://op.ns.svc:8443"));
        assert!(operator_url("op:8443").unwrap_err().contains("http://"));
        let creds = operator_url("https://user:hunter2@op:8443").unwrap_err();
        assert!(!creds.contains("hunter2"), "{creds}");
        assert!(operator_url("http://op/?x=1").unwrap_err().contains("query"));
    }

    #[test]
    fn a_malformed_snapshot_is_rejected_without_quoting_it() {
        let rejection = validate(br#"{"hash": 5, "table": "sk-secret"}"#, Some("sha256:ab".into()), 1024).unwrap_err();
        assert_eq!(rejection.hash, "sha256:ab");
        assert!(!rejection.error.contains("sk-secret"), "{}", rejection.error);
        assert!(rejection.error.contains("wrong shape"), "{}", rejection.error);
        let too_big = validate(&[b' '; 2048], None, 1024).unwrap_err();
        assert!(too_big.error.contains("--max-table-bytes"), "{}", too_big.error);
    }

    #[test]
    fn persisted_state_is_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        persist(&state, b"first").unwrap();
        persist(&state, b"second").unwrap();
        let file = state.join(STATE_FILE);
        assert_eq!(std::fs::read(&file).unwrap(), b"second");
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [STATE_FILE], "no temporary file left behind");
    }
}
