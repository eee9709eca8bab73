//! Cluster mode against a fake operator on 127.0.0.1 that speaks the
//! distribution protocol of `routing::distribution`: long-poll
//! `GET /v1/table` with `If-None-Match`, `POST /v1/report`, bearer token.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy::app::Running;
use proxy::args::{Args, ClusterArgs};
use routing::Snapshot;
use routing::distribution::Report;
use serde_json::Value;
use support::{chat_body, eventually, http_provider, mock_provider};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "s3cret-operator-token";

// === the fake operator ===

/// One `GET /v1/table` as the fake received it.
#[derive(Clone, Debug)]
struct Poll {
    if_none_match: Option<String>,
    proxy: Option<String>,
    query: Option<String>,
    /// What the fake answered.
    status: u16,
}

/// What the fake publishes: the ETag hash and the body, which tests may tamper with.
type Published = Option<(String, Bytes)>;

struct Shared {
    token: String,
    published: watch::Sender<Published>,
    polls: Mutex<Vec<Poll>>,
    reports: Mutex<Vec<Report>>,
}

struct FakeOperator {
    url: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for FakeOperator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeOperator {
    async fn start(token: &str) -> FakeOperator {
        Self::start_with(token, None).await
    }

    /// Serves HTTPS with the test certificate for 127.0.0.1 (`fixtures/tls`).
    async fn start_tls(token: &str) -> FakeOperator {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(tls_fixture("server.pem")).unwrap().map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Self::start_with(token, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(token: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> FakeOperator {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            published: watch::channel(None).0,
            polls: Mutex::default(),
            reports: Mutex::default(),
        });
        let stop = CancellationToken::new();
        let scheme = if tls.is_some() { "https" } else { "http" };
        tokio::spawn(accept(listener, shared.clone(), stop.clone(), tls));
        FakeOperator { url: format!("{scheme}://{addr}"), shared, stop }
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    fn publish(&self, snapshot: &Snapshot) {
        self.publish_raw(&snapshot.hash, serde_json::to_vec(snapshot).unwrap());
    }

    fn publish_raw(&self, hash: &str, body: Vec<u8>) {
        self.shared.published.send_replace(Some((hash.to_owned(), Bytes::from(body))));
    }

    fn polls(&self) -> Vec<Poll> {
        self.shared.polls.lock().unwrap().clone()
    }

    fn reports(&self) -> Vec<Report> {
        self.shared.reports.lock().unwrap().clone()
    }

    /// Stops accepting and closes every open connection, held polls included.
    fn stop(&self) {
        self.stop.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted.unwrap().0,
        };
        let (shared, stop, tls) = (shared.clone(), stop.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve(stream, shared, stop).await,
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        serve(stream, shared, stop).await;
                    }
                }
            }
        });
    }
}

async fn serve<S>(stream: S, shared: Arc<Shared>, stop: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, request).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = stop.cancelled() => {}
    }
}

fn tls_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls").join(name)
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let header = |name: &str| parts.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    let authorized = header("authorization") == Some(format!("Bearer {}", shared.token));
    let answer = |status: StatusCode, body: &str| {
        let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
        *response.status_mut() = status;
        response
    };
    match (parts.method.as_str(), parts.uri.path()) {
        ("GET", "/v1/table") => {
            let if_none_match = header("if-none-match");
            let wait = parts
                .uri
                .query()
                .and_then(|q| q.strip_prefix("wait="))
                .and_then(|w| w.parse().ok())
                .map_or(Duration::from_secs(30), Duration::from_secs);
            let response = if authorized {
                table(shared, if_none_match.as_deref(), wait).await
            } else {
                answer(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
            };
            shared.polls.lock().unwrap().push(Poll {
                if_none_match,
                proxy: header("x-switchyard-proxy"),
                query: parts.uri.query().map(str::to_owned),
                status: response.status().as_u16(),
            });
            response
        }
        ("POST", "/v1/report") if authorized => {
            let bytes = body.collect().await.unwrap().to_bytes();
            match serde_json::from_slice::<Report>(&bytes) {
                Ok(report) => {
                    shared.reports.lock().unwrap().push(report);
                    answer(StatusCode::NO_CONTENT, "")
                }
                Err(error) => answer(StatusCode::BAD_REQUEST, &error.to_string()),
            }
        }
        ("POST", "/v1/report") => answer(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"),
        _ => answer(StatusCode::NOT_FOUND, "no such path"),
    }
}

/// The long poll: a snapshot whose hash differs from `If-None-Match` at
/// once, or when one is published within `wait`; 304 otherwise; 503 while
/// nothing was ever published.
async fn table(shared: &Shared, if_none_match: Option<&str>, wait: Duration) -> Response<Full<Bytes>> {
    let mut published = shared.published.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let current = published.borrow_and_update().clone();
        match current {
            None => {
                let mut response = Response::new(Full::new(Bytes::from_static(b"no snapshot compiled yet")));
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                return response;
            }
            Some((hash, body)) if if_none_match != Some(format!("\"{hash}\"").as_str()) => {
                return Response::builder()
                    .header("etag", format!("\"{hash}\""))
                    .header("content-type", "application/json")
                    .body(Full::new(body))
                    .unwrap();
            }
            Some(_) => {}
        }
        if tokio::time::timeout_at(deadline, published.changed()).await.is_err() {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
    }
}

// === the proxy under test ===

struct ClusterProxy {
    running: Option<Running>,
    admin: String,
    base: String,
    client: reqwest::Client,
}

struct Options {
    operator: String,
    token_file: PathBuf,
    state_dir: Option<PathBuf>,
    bootstrap: Option<PathBuf>,
    max_table_bytes: usize,
    poll_wait: Duration,
    operator_ca: Option<PathBuf>,
}

impl Options {
    fn new(operator: &str, dir: &Path) -> Options {
        let token_file = dir.join("token");
        if !token_file.exists() {
            std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        }
        Options {
            operator: operator.to_owned(),
            token_file,
            state_dir: None,
            bootstrap: None,
            max_table_bytes: proxy::args::DEFAULT_MAX_TABLE_BYTES,
            poll_wait: Duration::from_secs(1),
            operator_ca: None,
        }
    }

    fn args(self) -> Args {
        let cluster = ClusterArgs {
            operator: Some(self.operator),
            token_file: Some(self.token_file),
            bootstrap: self.bootstrap,
            state_dir: self.state_dir,
            proxy_name: Some("proxy-a".into()),
            operator_ca: self.operator_ca,
            max_table_bytes: self.max_table_bytes,
            poll_wait: self.poll_wait,
            report_interval: Duration::from_millis(200),
        };
        support::args(None, cluster)
    }

    async fn start(self) -> ClusterProxy {
        let running = proxy::app::start(self.args()).await.unwrap();
        ClusterProxy {
            admin: format!("http://{}", running.admin_addr),
            base: format!("http://{}", running.data_addr),
            running: Some(running),
            client: reqwest::Client::new(),
        }
    }
}

impl ClusterProxy {
    fn hash(&self) -> Option<String> {
        self.running.as_ref()?.routing.snapshot().map(|l| l.snapshot.hash.clone())
    }

    async fn wait_for_hash(&self, hash: &str) {
        let ok = eventually(Duration::from_secs(10), || self.hash().as_deref() == Some(hash)).await;
        assert!(ok, "the proxy did not apply {hash}; it has {:?}", self.hash());
    }

    async fn admin_get(&self, path: &str) -> (u16, String) {
        let response = self.client.get(format!("{}{path}", self.admin)).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn source(&self) -> Value {
        let table: Value = serde_json::from_str(&self.admin_get("/debug/table").await.1).unwrap();
        table["source"].clone()
    }

    async fn chat(&self, model: &str) -> (u16, String) {
        let response = self
            .client
            .post(format!("{}/v1/chat/completions", self.base))
            .json(&chat_body(model, false))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let target = response.headers().get("x-switchyard-target").map(|v| v.to_str().unwrap().to_owned());
        let body = response.text().await.unwrap();
        (status, target.unwrap_or(body))
    }

    async fn stop(mut self) {
        self.running.take().unwrap().stop().await;
    }
}

/// A fake operator publishing `snapshot(&["a"])` and a proxy that applied it.
async fn serving_a() -> (FakeOperator, Snapshot, tempfile::TempDir, ClusterProxy) {
    let operator = FakeOperator::start(TOKEN).await;
    let first = snapshot(&["a"]);
    operator.publish(&first);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Options::new(&operator.url(), dir.path()).start().await;
    proxy.wait_for_hash(&first.hash).await;
    (operator, first, dir, proxy)
}

/// Starts a proxy whose operator is `url`, with a bootstrap file and a state directory.
async fn boot(url: &str, dir: &Path, bootstrap: &Path, state: Option<&Path>) -> ClusterProxy {
    let mut options = Options::new(url, dir);
    options.bootstrap = Some(bootstrap.to_owned());
    options.state_dir = state.map(Path::to_owned);
    options.start().await
}

/// A snapshot of a mock provider `m` and route `chat` with one target per name.
fn snapshot(targets: &[&str]) -> Snapshot {
    let mut yaml = mock_provider("m", "");
    yaml.push_str("apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: chat}\nspec:\n  targets:\n");
    for target in targets {
        yaml.push_str(&format!("  - {{name: {target}, provider: m, model: {target}}}\n"));
    }
    compile(&yaml)
}

fn compile(yaml: &str) -> Snapshot {
    let loaded = routing::manifest::load_str("test.yaml", yaml);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let compiled = routing::compile(&loaded.inputs);
    assert!(!compiled.diagnostics.iter().any(routing::Diagnostic::is_error), "{:?}", compiled.diagnostics);
    compiled.snapshot
}

/// A `http://127.0.0.1:PORT` where nothing listens.
async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

async fn wait_for_report(operator: &FakeOperator, check: impl Fn(&Report) -> bool) -> Report {
    let found = eventually(Duration::from_secs(10), || operator.reports().iter().any(&check)).await;
    assert!(found, "no matching report; got {:#?}", operator.reports());
    operator.reports().into_iter().rev().find(|r| check(r)).unwrap()
}

// === tests ===

#[tokio::test]
async fn the_first_poll_applies_the_table_and_the_proxy_serves_and_reports_it() {
    let (operator, first, _dir, proxy) = serving_a().await;
    assert_eq!(proxy.chat("chat").await, (200, "a".into()));
    let (status, ready) = proxy.admin_get("/readyz").await;
    assert_eq!((status, ready.trim()), (200, format!("ready {}", first.hash).as_str()));

    let report = wait_for_report(&operator, |r| r.applied.as_deref() == Some(first.hash.as_str())).await;
    assert_eq!(report.proxy, "proxy-a");
    assert_eq!(report.rejected, None);

    // Once applied, the hash goes back as If-None-Match and the operator
    // holds the poll: 304s, and the table stays.
    assert!(eventually(Duration::from_secs(10), || operator.polls().iter().any(|p| p.status == 304)).await);
    let polls = operator.polls();
    assert_eq!(polls[0].if_none_match, None, "the first poll has seen nothing");
    assert_eq!(polls[0].status, 200);
    assert_eq!(polls[0].query.as_deref(), Some("wait=1"));
    assert!(polls.iter().all(|p| p.proxy.as_deref() == Some("proxy-a")));
    let quoted = format!("\"{}\"", first.hash);
    assert!(polls[1..].iter().all(|p| p.if_none_match.as_deref() == Some(quoted.as_str()) && p.status == 304));
    assert_eq!(proxy.hash(), Some(first.hash.clone()));

    let source = proxy.source().await;
    assert_eq!(source["operator"], operator.url());
    assert_eq!(source["proxy"], "proxy-a");
    assert_eq!(source["applied"], first.hash);
    assert!(source["lastPoll"].as_str().unwrap().starts_with("304"), "{source}");
    let (_, debug) = proxy.admin_get("/debug/table").await;
    assert!(!debug.contains(TOKEN), "the token leaked into /debug/table: {debug}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_new_snapshot_wakes_the_held_poll() {
    let operator = FakeOperator::start(TOKEN).await;
    let first = snapshot(&["a"]);
    operator.publish(&first);
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::new(&operator.url(), dir.path());
    options.poll_wait = Duration::from_secs(30);
    let proxy = options.start().await;
    proxy.wait_for_hash(&first.hash).await;
    // The second poll is held by the operator for up to 30 s ...
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(operator.polls().len(), 1, "the held poll has not been answered yet");
    // ... and answered the moment a new snapshot exists.
    let second = snapshot(&["b"]);
    operator.publish(&second);
    proxy.wait_for_hash(&second.hash).await;
    assert_eq!(proxy.chat("chat").await, (200, "b".into()));
    let polls = operator.polls();
    assert_eq!(polls.len(), 2);
    assert_eq!(polls[1].if_none_match, Some(format!("\"{}\"", first.hash)));
    assert_eq!(polls[1].status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn readiness_waits_for_the_first_table_and_errors_back_off() {
    let operator = FakeOperator::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Options::new(&operator.url(), dir.path()).start().await;
    // The operator has nothing yet (503): not ready, requests say so.
    assert!(eventually(Duration::from_secs(5), || !operator.polls().is_empty()).await);
    let (status, body) = proxy.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(proxy.chat("chat").await.0, 503);
    // Errors back off: over two seconds a handful of polls, not a hot loop
    // (200 ms doubling, jittered into the upper half: at most about 6).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let polls = operator.polls().len();
    assert!((2..=10).contains(&polls), "{polls} polls in about two seconds");
    assert!(proxy.source().await["lastPoll"].as_str().unwrap().contains("no snapshot yet"));

    let first = snapshot(&["a"]);
    operator.publish(&first);
    proxy.wait_for_hash(&first.hash).await;
    assert_eq!(proxy.admin_get("/readyz").await.0, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn a_bad_token_file_is_a_clear_error() {
    let operator = FakeOperator::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();

    let mut missing = Options::new(&operator.url(), dir.path());
    missing.token_file = dir.path().join("nope");
    let error = proxy::app::start(missing.args()).await.err().unwrap();
    assert_eq!(error.exit_code(), 64);
    assert!(error.to_string().contains("--token-file"), "{error}");

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "  \n").unwrap();
    let mut options = Options::new(&operator.url(), dir.path());
    options.token_file = empty;
    let error = proxy::app::start(options.args()).await.err().unwrap();
    assert!(error.to_string().contains("is empty"), "{error}");

    // A token the operator does not accept: 401, named in the poll result, backed off.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let mut options = Options::new(&operator.url(), dir.path());
    options.token_file = wrong.clone();
    let proxy = options.start().await;
    assert!(eventually(Duration::from_secs(5), || operator.polls().iter().any(|p| p.status == 401)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = proxy.source().await["lastPoll"].as_str().unwrap().to_owned();
    assert!(last.starts_with("401") && last.contains("--token-file"), "{last}");
    assert!(!last.contains("not-the-token"), "{last}");
    assert_eq!(proxy.admin_get("/readyz").await.0, 503);

    // Fixing the file is picked up without a restart.
    let first = snapshot(&["a"]);
    operator.publish(&first);
    std::fs::write(&wrong, TOKEN).unwrap();
    proxy.wait_for_hash(&first.hash).await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_rejected_snapshot_is_reported_kept_out_and_never_fetched_again() {
    let operator = FakeOperator::start(TOKEN).await;
    let good = snapshot(&["a"]);
    operator.publish(&good);
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::new(&operator.url(), dir.path());
    // The good table fits; a table with many targets does not.
    let limit = serde_json::to_vec(&good).unwrap().len() + 1024;
    options.max_table_bytes = limit;
    let proxy = options.start().await;
    proxy.wait_for_hash(&good.hash).await;

    // A snapshot whose hash does not match its content.
    let mut tampered = snapshot(&["b"]);
    tampered.hash = format!("sha256:{}", "0".repeat(64));
    operator.publish(&tampered);
    let report = wait_for_report(&operator, |r| r.rejected.is_some()).await;
    let rejection = report.rejected.unwrap();
    assert_eq!(rejection.hash, tampered.hash);
    assert!(rejection.error.contains("does not match"), "{}", rejection.error);
    assert_eq!(report.applied.as_deref(), Some(good.hash.as_str()), "the old table stays in force");
    assert_eq!(proxy.chat("chat").await, (200, "a".into()));
    // The rejected hash is what the proxy now says it has seen: 304s, one 200 only.
    let quoted = format!("\"{}\"", tampered.hash);
    assert!(
        eventually(Duration::from_secs(10), || {
            operator.polls().iter().any(|p| p.if_none_match.as_deref() == Some(quoted.as_str()) && p.status == 304)
        })
        .await
    );
    assert_eq!(operator.polls().iter().filter(|p| p.status == 200).count(), 2, "{:?}", operator.polls());

    // A table over --max-table-bytes.
    let names: Vec<String> = (0..60).map(|i| format!("target-with-a-long-name-{i}")).collect();
    let large = snapshot(&names.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(serde_json::to_vec(&large).unwrap().len() > limit);
    operator.publish(&large);
    let report = wait_for_report(&operator, |r| r.rejected.as_ref().is_some_and(|x| x.hash == large.hash)).await;
    assert!(report.rejected.unwrap().error.contains("--max-table-bytes"));
    assert_eq!(proxy.hash(), Some(good.hash.clone()));
    let source = proxy.source().await;
    assert_eq!(source["rejected"]["hash"], large.hash);

    // A good one after that applies and clears the rejection.
    let next = snapshot(&["c"]);
    operator.publish(&next);
    proxy.wait_for_hash(&next.hash).await;
    wait_for_report(&operator, |r| r.applied.as_deref() == Some(next.hash.as_str()) && r.rejected.is_none()).await;
    assert_eq!(proxy.chat("chat").await, (200, "c".into()));
    proxy.stop().await;
}

#[tokio::test]
async fn a_snapshot_with_a_provider_that_cannot_be_called_is_rejected() {
    let (operator, good, _dir, proxy) = serving_a().await;
    // An API key that cannot go into a header: only the endpoint build sees it.
    let mut bad = compile(&(http_provider("up", "http://127.0.0.1:9", Some("sk-abc")) + &route_yaml("up")));
    bad.credentials.insert("default/up".into(), routing::Redacted::new("sk-line\nbreak"));
    let bad = Snapshot::new(bad.table, bad.credentials);
    operator.publish(&bad);
    let report = wait_for_report(&operator, |r| r.rejected.is_some()).await;
    let error = report.rejected.unwrap().error;
    assert!(error.contains("provider `default/up`"), "{error}");
    assert!(!error.contains("sk-line"), "{error}");
    assert_eq!(proxy.hash(), Some(good.hash.clone()));
    proxy.stop().await;
}

fn route_yaml(provider: &str) -> String {
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {{name: chat}}\nspec:\n  targets:\n  - {{name: a, provider: {provider}, model: a}}\n"
    )
}

#[tokio::test]
async fn the_proxy_keeps_serving_while_the_operator_is_away_and_boots_from_its_state() {
    let operator = FakeOperator::start(TOKEN).await;
    let first = snapshot(&["a"]);
    operator.publish(&first);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut options = Options::new(&operator.url(), dir.path());
    options.state_dir = Some(state.clone());
    let proxy = options.start().await;
    proxy.wait_for_hash(&first.hash).await;

    let file = state.join(proxy::cluster::STATE_FILE);
    assert!(eventually(Duration::from_secs(5), || file.exists()).await);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let stored: Snapshot = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored.hash, first.hash);

    // The operator goes away: polls fail, the table stays, traffic flows.
    operator.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(proxy.chat("chat").await, (200, "a".into()));
    assert_eq!(proxy.admin_get("/readyz").await.0, 200);
    assert!(proxy.source().await["lastPoll"].as_str().unwrap().contains("cannot reach the operator"));
    proxy.stop().await;

    // A restart while it is still away serves the persisted table at once.
    let mut options = Options::new(&dead_url().await, dir.path());
    options.state_dir = Some(state);
    let proxy = options.start().await;
    assert_eq!(proxy.hash(), Some(first.hash.clone()), "ready before any poll");
    assert_eq!(proxy.chat("chat").await, (200, "a".into()));
    assert_eq!(proxy.admin_get("/readyz").await.0, 200);
    assert!(proxy.source().await["bootedFrom"].as_str().unwrap().starts_with("state "));
    proxy.stop().await;
}

#[tokio::test]
async fn the_proxy_boots_from_the_newest_of_bootstrap_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let url = dead_url().await;

    // No state, and the bootstrap Secret is not mounted (yet): not ready, no crash.
    let proxy = boot(&url, dir.path(), &dir.path().join("bootstrap/snapshot.json"), None).await;
    assert_eq!(proxy.hash(), None);
    assert_eq!(proxy.admin_get("/readyz").await.0, 503);
    proxy.stop().await;

    // The bootstrap file alone.
    let older = snapshot(&["old"]);
    let newer = snapshot(&["new"]);
    let bootstrap = dir.path().join("snapshot.json");
    std::fs::write(&bootstrap, serde_json::to_vec(&newer).unwrap()).unwrap();
    let proxy = boot(&url, dir.path(), &bootstrap, None).await;
    assert_eq!(proxy.chat("chat").await, (200, "new".into()));
    proxy.stop().await;

    // State older than the bootstrap file: the bootstrap file wins ...
    let state = dir.path().join("state");
    proxy::cluster::persist(&state, &serde_json::to_vec(&older).unwrap()).unwrap();
    let state_file = state.join(proxy::cluster::STATE_FILE);
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&state_file).unwrap().set_modified(hour_ago).unwrap();
    let proxy = boot(&url, dir.path(), &bootstrap, Some(&state)).await;
    assert_eq!(proxy.hash(), Some(newer.hash.clone()));
    proxy.stop().await;

    // ... and a newer state wins over it; a corrupt bootstrap file is skipped.
    std::fs::File::options().write(true).open(&bootstrap).unwrap().set_modified(hour_ago).unwrap();
    std::fs::File::options().write(true).open(&state_file).unwrap().set_modified(SystemTime::now()).unwrap();
    let proxy = boot(&url, dir.path(), &bootstrap, Some(&state)).await;
    assert_eq!(proxy.hash(), Some(older.hash.clone()));
    proxy.stop().await;

    std::fs::write(&bootstrap, b"{not json").unwrap();
    std::fs::remove_file(&state_file).unwrap();
    let proxy = boot(&url, dir.path(), &bootstrap, Some(&state)).await;
    assert_eq!(proxy.hash(), None);
    proxy.stop().await;
}

#[tokio::test]
async fn reports_carry_per_target_counters_after_traffic() {
    let (operator, _, _dir, proxy) = serving_a().await;
    for _ in 0..3 {
        assert_eq!(proxy.chat("chat").await.0, 200);
    }
    let report = wait_for_report(&operator, |r| r.targets.iter().any(|t| t.requests >= 3)).await;
    let counters = &report.targets[0];
    assert_eq!((counters.route.as_str(), counters.target.as_str()), ("chat", "a"));
    assert_eq!((counters.requests, counters.errors), (3, 0));
    assert_eq!(counters.latency_ms.len(), routing::distribution::LATENCY_BUCKETS_MS.len() + 1);
    assert_eq!(counters.latency_ms.iter().sum::<u64>(), 3, "every served request in one bucket");
    // Heartbeats keep coming while nothing changes.
    let before = operator.reports().len();
    assert!(eventually(Duration::from_secs(5), || operator.reports().len() >= before + 2).await);
    proxy.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_backs_off_too() {
    // Accepts and closes at once: every poll fails at the HTTP level.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let acceptor = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let proxy = Options::new(&url, dir.path()).start().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Polls and heartbeat reports both connect; neither may spin.
    let connections = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=25).contains(&connections), "{connections} connections in about two seconds");
    assert!(proxy.source().await["lastPoll"].as_str().unwrap().contains("cannot reach the operator"));
    proxy.stop().await;
    acceptor.abort();
}

// Multi-threaded: the test thread blocks reading the log while the fake operator answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_exactly_one_source_and_logs_addresses_and_applied_hashes() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};

    let binary = env!("CARGO_BIN_EXE_switchyard-proxy");
    let dir = tempfile::tempdir().unwrap();
    let both = Command::new(binary)
        .args(["--manifests", "x", "--operator", "http://127.0.0.1:1", "--token-file", "t"])
        .env_remove("SWITCHYARD_MANIFESTS")
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2), "clap refuses both sources");
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
    let neither = Command::new(binary).output().unwrap();
    assert_eq!(neither.status.code(), Some(2), "clap wants one source");

    let operator = FakeOperator::start(TOKEN).await;
    let first = snapshot(&["a"]);
    operator.publish(&first);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let mut child = Killed(
        Command::new(binary)
            .args(["--operator", &operator.url(), "--token-file", token_file.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--poll-wait", "1s"])
            .env("POD_NAME", "pod-7")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(log) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(log);
            }
        }
    });
    let mut listening = None;
    let mut applied = None;
    while listening.is_none() || applied.is_none() {
        let log = rx.recv_timeout(Duration::from_secs(10)).expect("no listening/applied log line");
        match log["message"].as_str() {
            Some("switchyard-proxy listening") => listening = Some(log),
            Some("routing table applied") => applied = Some(log),
            _ => {}
        }
    }
    let (listening, applied) = (listening.unwrap(), applied.unwrap());
    assert_eq!(listening["source"], "operator");
    assert_eq!(listening["from"], operator.url());
    assert_eq!(applied["hash"], first.hash);
    let data = listening["listen"].as_str().unwrap();
    let response = reqwest::Client::new()
        .post(format!("http://{data}/v1/chat/completions"))
        .json(&chat_body("chat", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(operator.polls()[0].proxy.as_deref(), Some("pod-7"), "the name defaults to POD_NAME");
}

/// A child process killed when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn an_https_operator_is_trusted_through_the_operator_ca_only() {
    let operator = FakeOperator::start_tls(TOKEN).await;
    assert!(operator.url().starts_with("https://127.0.0.1:"));
    let first = snapshot(&["a"]);
    operator.publish(&first);
    let dir = tempfile::tempdir().unwrap();

    // The webpki roots do not know the test CA: the handshake fails, nothing is applied.
    let proxy = Options::new(&operator.url(), dir.path()).start().await;
    let mut last = String::new();
    for _ in 0..100 {
        last = proxy.source().await["lastPoll"].as_str().unwrap_or_default().to_owned();
        if !last.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.contains("cannot reach the operator"), "{last}");
    assert!(operator.polls().is_empty(), "no request got through the failed handshake");
    assert_eq!(proxy.hash(), None);
    proxy.stop().await;

    // With --operator-ca it polls, applies and reports over TLS.
    let mut options = Options::new(&operator.url(), dir.path());
    options.operator_ca = Some(tls_fixture("ca.pem"));
    let proxy = options.start().await;
    proxy.wait_for_hash(&first.hash).await;
    wait_for_report(&operator, |r| r.applied.as_deref() == Some(first.hash.as_str())).await;
    assert_eq!(proxy.chat("chat").await, (200, "a".into()));
    proxy.stop().await;

    // A CA file that holds no certificate is a start-up error naming the flag.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let mut options = Options::new(&operator.url(), dir.path());
    options.operator_ca = Some(bad);
    let error = proxy::app::start(options.args()).await.err().unwrap();
    assert!(error.to_string().contains("--operator-ca"), "{error}");
}

#[tokio::test]
async fn a_rotated_key_closes_the_circuit_its_old_key_opened() {
    let fake = proxy::testing::FakeOpenAi::start().await;
    fake.require_api_key("sk-new");
    let route = "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: chat}\nspec:\n  targets:\n  - {name: a, provider: up, model: healthy}\n  retry: {attempts: 0}\n  circuitBreaker: {consecutiveFailures: 1, openFor: 10m}\n";
    let old = compile(&(http_provider("up", &fake.base_url(), Some("sk-old")) + route));
    let operator = FakeOperator::start(TOKEN).await;
    operator.publish(&old);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Options::new(&operator.url(), dir.path()).start().await;
    proxy.wait_for_hash(&old.hash).await;
    // The old key fails once and opens the circuit for ten minutes.
    assert_eq!(proxy.chat("chat").await.0, 502, "the upstream refused the old key");
    let (status, body) = proxy.chat("chat").await;
    assert!(status == 503 && body.contains("circuit open"), "{status} {body}");

    let new = compile(&(http_provider("up", &fake.base_url(), Some("sk-new")) + route));
    operator.publish(&new);
    proxy.wait_for_hash(&new.hash).await;
    assert_eq!(proxy.chat("chat").await, (200, "a".into()));
    proxy.stop().await;
}
