//! What the fakes share, whatever provider they play.
//!
//! A fake describes its provider in a [`Provider`] (response headers, request ids, which
//! requests are hits, the default behaviour of a model and the request handler) and starts a
//! [`Server`] with it. The server accepts connections, reads and records every request, counts
//! hits, requests in flight and cancelled streams, and hands each request to the handler as a
//! [`Ctx`] with the request's head and JSON body. The handler answers through the [`Ctx`]: a JSON
//! reply, a [`Reply`] a behaviour picked, or an SSE stream as [`Step`]s of a [`FakeBody`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Interval between the pieces of an endless stream.
const ENDLESS_INTERVAL: Duration = Duration::from_millis(20);

// === Provider ===

/// The future of a request handler.
pub(super) type HandlerFuture = Pin<Box<dyn Future<Output = Response<FakeBody>> + Send>>;

/// What makes a fake play one provider; `B` is its behaviour type.
pub(super) struct Provider<B: 'static> {
    /// Names the provider in log messages, e.g. `openai`.
    pub(super) label: &'static str,
    /// Headers every response starts with (a named fake adds `x-fake-upstream`).
    pub(super) base_headers: &'static [(&'static str, &'static str)],
    /// The header that carries the request id, e.g. `x-request-id`.
    pub(super) request_id_header: &'static str,
    /// A fresh request id (one per request, see [`Ctx::request_id`]).
    pub(super) request_id: fn() -> String,
    /// Adds the headers that change per response, after the request id; gets the time the
    /// request arrived.
    pub(super) per_response_headers: fn(&mut HeaderMap, Instant),
    /// Whether a request with this method and path counts as a hit.
    pub(super) is_hit: fn(&Method, &str) -> bool,
    /// The behaviour of a request nothing is scripted for, chosen by its `model`.
    pub(super) for_model: fn(&str) -> B,
    /// Answers a received request: its context, head, and body parsed as JSON (an error for an
    /// empty body too).
    pub(super) handle: fn(Ctx<B>, Parts, Result<Value, serde_json::Error>) -> HandlerFuture,
}

// === Recorded ===

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// URI path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// URI query without the `?`, if any.
    pub query: Option<String>,
    /// Request headers in arrival order; names are lowercase, values decoded lossily.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `Null` when empty, a JSON string of the raw text when not JSON.
    pub body: Value,
    /// When the request arrived.
    pub at: Instant,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body's `model`, if it has one.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    fn new(parts: &Parts, raw: &[u8], json: &Result<Value, serde_json::Error>, at: Instant) -> Recorded {
        Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body: match json {
                Ok(json) => json.clone(),
                Err(_) if raw.is_empty() => Value::Null,
                Err(_) => Value::String(String::from_utf8_lossy(raw).into_owned()),
            },
            at,
        }
    }
}

// === Server ===

/// A running fake: the listening address and the state. Dropping it stops accepting and
/// closes every open connection (including endless streams).
pub(super) struct Server<B: 'static> {
    addr: SocketAddr,
    shared: Arc<Shared<B>>,
    /// Never sent on; dropping it wakes the accept loop and every connection task.
    _shutdown: watch::Sender<()>,
}

impl<B: Send + 'static> Server<B> {
    /// Binds `addr` and serves `provider` there; `name` is sent as `x-fake-upstream`.
    pub(super) async fn start(
        provider: &'static Provider<B>,
        addr: SocketAddr,
        name: Option<&str>,
    ) -> io::Result<Server<B>> {
        let shared = Arc::new(Shared::new(provider, name)?);
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = watch::channel(());
        tokio::spawn(accept_loop(listener, Arc::clone(&shared), stopped));
        Ok(Server { addr, shared, _shutdown: shutdown })
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(super) fn name(&self) -> Option<&str> {
        self.shared.name()
    }

    pub(super) fn require_api_key(&self, key: &str) {
        *self.shared.api_key.write().unwrap_or_else(PoisonError::into_inner) = Some(key.to_owned());
    }

    pub(super) fn push(&self, behaviour: B) {
        lock(&self.shared.script).push_back(behaviour);
    }

    pub(super) fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    pub(super) fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    pub(super) fn record_requests(&self, on: bool) {
        self.shared.record.store(on, Ordering::SeqCst);
    }

    pub(super) fn cancelled(&self) -> usize {
        self.shared.counters.cancelled.load(Ordering::SeqCst)
    }

    pub(super) fn in_flight(&self) -> usize {
        self.shared.counters.in_flight.load(Ordering::SeqCst)
    }

    /// `Debug` of the fake named `type_name` that wraps this server.
    pub(super) fn debug(&self, f: &mut fmt::Formatter<'_>, type_name: &str) -> fmt::Result {
        f.debug_struct(type_name).field("addr", &self.addr).field("name", &self.shared.name).finish_non_exhaustive()
    }
}

/// `127.0.0.1:0`, an OS-chosen loopback port.
pub(super) fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// Locks `mutex`, ignoring poisoning: the data is plain state a panicking test left behind.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop<B: Send + 'static>(listener: TcpListener, shared: Arc<Shared<B>>, mut stop: watch::Receiver<()>) {
    loop {
        let stream = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // e.g. out of file descriptors: back off instead of spinning
                    let label = shared.provider.label;
                    tracing::warn!(%err, "fake {label} upstream failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        tokio::spawn(serve_connection(stream, Arc::clone(&shared), stop.clone()));
    }
}

async fn serve_connection<B: Send + 'static>(stream: TcpStream, shared: Arc<Shared<B>>, mut stop: watch::Receiver<()>) {
    // SSE events must not wait for Nagle
    if let Err(err) = stream.set_nodelay(true) {
        let label = shared.provider.label;
        tracing::debug!(%err, "fake {label} upstream could not set TCP_NODELAY");
    }
    let service = hyper::service::service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(shared.handle(req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    // Dropping the connection on shutdown closes the socket abruptly, which is what a test
    // tearing down its upstream wants.
    tokio::select! {
        _ = conn => {}
        _ = stop.changed() => {}
    }
}

// === shared state ===

/// The state of one fake, shared by its handle and every request.
pub(super) struct Shared<B: 'static> {
    provider: &'static Provider<B>,
    name: Option<String>,
    api_key: RwLock<Option<String>>,
    script: Mutex<VecDeque<B>>,
    requests: Mutex<Vec<Recorded>>,
    record: AtomicBool,
    hits: AtomicUsize,
    counters: Arc<Counters>,
    /// Headers every response starts with (precomputed once).
    base_headers: HeaderMap,
}

impl<B> Shared<B> {
    fn new(provider: &'static Provider<B>, name: Option<&str>) -> io::Result<Shared<B>> {
        let mut base_headers = HeaderMap::new();
        for (header, value) in provider.base_headers {
            base_headers.insert(HeaderName::from_static(header), HeaderValue::from_static(value));
        }
        if let Some(name) = name {
            let value = HeaderValue::from_str(name).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("fake upstream name `{name}` is not a valid header value"),
                )
            })?;
            base_headers.insert(HeaderName::from_static("x-fake-upstream"), value);
        }
        Ok(Shared {
            provider,
            name: name.map(str::to_owned),
            api_key: RwLock::new(None),
            script: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            record: AtomicBool::new(true),
            hits: AtomicUsize::new(0),
            counters: Arc::new(Counters::default()),
            base_headers,
        })
    }

    /// The name given at start, if any.
    pub(super) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The API key requests must send, if one is required.
    pub(super) fn api_key(&self) -> Option<String> {
        self.api_key.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The oldest scripted behaviour, otherwise the provider's behaviour for `model`.
    pub(super) fn next_behaviour(&self, model: &str) -> B {
        lock(&self.script).pop_front().unwrap_or_else(|| (self.provider.for_model)(model))
    }

    /// Counts `req` in flight (and as a hit), reads and records it, then lets the provider answer.
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<FakeBody> {
        let started = Instant::now();
        let in_flight = InFlight::enter(&self.counters);
        let (parts, body) = req.into_parts();
        if (self.provider.is_hit)(&parts.method, parts.uri.path()) {
            self.hits.fetch_add(1, Ordering::SeqCst);
        }
        // A body that fails mid-read means the client is gone; whatever we answer is never read.
        let raw = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let json: Result<Value, serde_json::Error> = serde_json::from_slice(&raw);
        if self.record.load(Ordering::SeqCst) {
            let recorded = Recorded::new(&parts, &raw, &json, started);
            lock(&self.requests).push(recorded);
        }
        let provider = self.provider;
        let ctx = Ctx { shared: self, request_id: (provider.request_id)(), started, in_flight };
        (provider.handle)(ctx, parts, json).await
    }

    /// A response with the base headers, `content_type`, the request id and the per-response
    /// headers.
    fn respond(
        &self,
        request_id: &str,
        started: Instant,
        status: StatusCode,
        content_type: &'static str,
        body: FakeBody,
    ) -> Response<FakeBody> {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.clone_from(&self.base_headers);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert(HeaderName::from_static(self.provider.request_id_header), id);
        }
        (self.provider.per_response_headers)(headers, started);
        response
    }
}

/// What the responses of one fake count while they are produced.
#[derive(Default)]
struct Counters {
    cancelled: AtomicUsize,
    in_flight: AtomicUsize,
}

/// Counts a request as in flight until dropped (it travels inside the response body).
struct InFlight(Arc<Counters>);

impl InFlight {
    fn enter(counters: &Arc<Counters>) -> InFlight {
        counters.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(counters))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a stream as cancelled if dropped before [`StreamGuard::finish`].
pub(super) struct StreamGuard {
    counters: Arc<Counters>,
    finished: bool,
}

impl StreamGuard {
    pub(super) fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.counters.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

// === requests and replies ===

/// Per-request context, consumed by the response it produces.
pub(super) struct Ctx<B: 'static> {
    pub(super) shared: Arc<Shared<B>>,
    /// Sent in the provider's request id header (and by some providers inside error bodies).
    pub(super) request_id: String,
    started: Instant,
    in_flight: InFlight,
}

impl<B> Ctx<B> {
    /// A guard that counts this request's stream as cancelled unless it finishes. Create it
    /// before any delay, so a client that gives up while the headers are held back counts too.
    pub(super) fn stream_guard(&self) -> StreamGuard {
        StreamGuard { counters: Arc::clone(&self.shared.counters), finished: false }
    }

    /// `body` as `application/json` with `status`.
    pub(super) fn json_reply(self, status: StatusCode, body: Bytes) -> Response<FakeBody> {
        let body = FakeBody::full(body, self.in_flight);
        self.shared.respond(&self.request_id, self.started, status, "application/json", body)
    }

    /// A 200 `text/event-stream` (with `cache-control: no-cache`) that plays `steps`.
    pub(super) fn stream_reply(self, steps: VecDeque<Step>, guard: StreamGuard) -> Response<FakeBody> {
        let body = FakeBody::steps(steps, Some(guard), self.in_flight);
        let mut response =
            self.shared.respond(&self.request_id, self.started, StatusCode::OK, "text/event-stream", body);
        response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }

    /// The response `reply` describes.
    pub(super) fn reply(self, reply: Reply) -> Response<FakeBody> {
        match reply {
            Reply::Status { status, body, headers } => {
                let label = self.shared.provider.label;
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut response = self.json_reply(status, Bytes::from(body));
                add_headers(response.headers_mut(), &headers, label);
                response
            }
            Reply::Broken => {
                let body = FakeBody::steps([Step::Abort].into(), None, self.in_flight);
                self.shared.respond(&self.request_id, self.started, StatusCode::OK, "application/json", body)
            }
        }
    }
}

/// How a non-streaming request proceeds under a behaviour.
pub(super) enum Prelude {
    /// Answer normally (after any delay the behaviour asked for).
    Answer,
    /// Send this instead.
    Reply(Reply),
}

/// A response a behaviour asks for instead of the normal answer.
pub(super) enum Reply {
    /// This status (500 when invalid), body (as `application/json`) and extra headers.
    Status { status: u16, body: String, headers: Vec<(String, String)> },
    /// A 200 head, then a broken body.
    Broken,
}

/// Adds scripted headers: the first value of a name replaces the default, later ones append.
fn add_headers(headers: &mut HeaderMap, extra: &[(String, String)], label: &str) {
    let mut seen: Vec<HeaderName> = Vec::new();
    for (name, value) in extra {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) else {
            tracing::warn!(%name, %value, "fake {label} upstream skipped an invalid scripted header");
            continue;
        };
        if seen.contains(&name) {
            headers.append(name, value);
        } else {
            headers.insert(name.clone(), value);
            seen.push(name);
        }
    }
}

// === content ===

/// Whitespace-separated words in `text`, the fakes' token count.
pub(super) fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Splits `text` into word chunks that concatenate back to it; every chunk but the first keeps
/// the whitespace before its word.
pub(super) fn word_chunks(text: &str) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                chunks.push(&text[start..i]);
                start = i;
                in_word = false;
            }
        } else {
            in_word = true;
        }
    }
    if start < text.len() {
        chunks.push(&text[start..]);
    }
    chunks
}

/// Serialises one of the fakes' wire types.
pub(super) fn to_json<T: Serialize>(value: &T) -> Bytes {
    let mut buf = Vec::with_capacity(512);
    write_json(&mut buf, value);
    Bytes::from(buf)
}

/// Appends `value` as JSON to `buf`.
pub(super) fn write_json<T: Serialize>(buf: &mut Vec<u8>, value: &T) {
    // Our wire types are plain structs with string keys, which serde_json cannot fail to write
    // into a Vec; should that ever change, send an empty object rather than half a document.
    let start = buf.len();
    if serde_json::to_writer(&mut *buf, value).is_err() {
        buf.truncate(start);
        buf.extend_from_slice(b"{}");
    }
}

// === streams ===

/// Where a stream leaves its normal course.
pub(super) enum Cut {
    /// An idle gap, then the stream goes on.
    Pause(Duration),
    /// The connection breaks (after flushing what was sent).
    Break,
    /// This error event, then the body ends cleanly.
    ErrorEvent(Bytes),
}

/// Appends `events` (each flagged whether it is a delta) to `steps`, with the cut `(n, cut)`
/// right before delta `n` (0-based); when there are fewer deltas, right after the last one, and
/// with no delta at all, after all events. Returns whether the stream goes on: a break or an
/// error event ends it, so nothing may follow.
pub(super) fn push_events(steps: &mut VecDeque<Step>, events: Vec<(Bytes, bool)>, cut: Option<(usize, Cut)>) -> bool {
    let deltas: Vec<usize> = events.iter().enumerate().filter(|(_, (_, delta))| *delta).map(|(i, _)| i).collect();
    let mut events = events.into_iter().map(|(event, _)| Step::Data(event));
    let Some((n, cut)) = cut else {
        steps.extend(events);
        return true;
    };
    let at = match deltas.get(n) {
        Some(at) => *at,
        None => deltas.last().map_or(events.len(), |last| last + 1),
    };
    steps.extend(events.by_ref().take(at));
    match cut {
        Cut::Pause(delay) => steps.push_back(Step::Pause(delay)),
        Cut::Break => {
            // let the connection flush what was sent before it breaks
            steps.push_back(Step::Flush);
            steps.push_back(Step::Abort);
            return false;
        }
        Cut::ErrorEvent(event) => {
            steps.push_back(Step::Data(event));
            return false;
        }
    }
    steps.extend(events);
    true
}

/// One step of a response body.
pub(super) enum Step {
    Data(Bytes),
    Pause(Duration),
    /// Returns `Pending` once so the connection flushes what it buffered.
    Flush,
    /// Fails the body, which makes hyper drop the connection.
    Abort,
    /// Sends the next piece every 20 ms, forever.
    Endless(Box<Endless>),
}

impl Step {
    /// An endless series of events, each `render`ing the next of `pieces` in turn (`" fake"`
    /// when there are none).
    pub(super) fn endless(pieces: Vec<String>, render: impl Fn(&str) -> Bytes + Send + Sync + 'static) -> Step {
        Step::Endless(Box::new(Endless { pieces, next: 0, render: Box::new(render) }))
    }
}

/// Generates the events of an endless stream.
pub(super) struct Endless {
    pieces: Vec<String>,
    next: usize,
    render: Box<dyn Fn(&str) -> Bytes + Send + Sync>,
}

impl Endless {
    fn next_event(&mut self) -> Bytes {
        let piece = self.pieces.get(self.next % self.pieces.len().max(1));
        self.next = self.next.wrapping_add(1);
        (self.render)(piece.map_or(" fake", String::as_str))
    }
}

/// The response body of every reply: a script of data, pauses and breaks, played as hyper polls
/// it. Dropping it early (the client went away) is how cancellations are observed.
pub(super) struct FakeBody {
    steps: VecDeque<Step>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    exact_len: Option<u64>,
    stream: Option<StreamGuard>,
    _in_flight: InFlight,
}

impl FakeBody {
    fn full(bytes: Bytes, in_flight: InFlight) -> FakeBody {
        let exact_len = Some(bytes.len() as u64);
        let steps = if bytes.is_empty() { VecDeque::new() } else { VecDeque::from([Step::Data(bytes)]) };
        FakeBody { steps, sleep: None, exact_len, stream: None, _in_flight: in_flight }
    }

    fn steps(steps: VecDeque<Step>, stream: Option<StreamGuard>, in_flight: InFlight) -> FakeBody {
        FakeBody { steps, sleep: None, exact_len: None, stream, _in_flight: in_flight }
    }

    fn finish(&mut self) {
        if let Some(guard) = &mut self.stream {
            guard.finish();
        }
    }
}

impl http_body::Body for FakeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = &mut this.sleep {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
            }
            let Some(step) = this.steps.pop_front() else {
                this.finish();
                return Poll::Ready(None);
            };
            match step {
                Step::Data(bytes) => {
                    // The last frame handed over counts as finished, so a client that hangs up
                    // right after the stream's last event is not a cancellation.
                    if this.steps.is_empty() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Step::Pause(delay) => this.sleep = Some(Box::pin(tokio::time::sleep(delay))),
                Step::Flush => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Step::Abort => {
                    this.finish();
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "fake upstream broke the stream on purpose",
                    ))));
                }
                Step::Endless(mut endless) => {
                    let bytes = endless.next_event();
                    this.steps.push_back(Step::Endless(endless));
                    this.sleep = Some(Box::pin(tokio::time::sleep(ENDLESS_INTERVAL)));
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.steps.is_empty() && self.sleep.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.exact_len.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// Helpers for the fakes' tests: a plain HTTP/1.1 client and raw sockets.
#[cfg(test)]
pub(crate) mod test_support {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::{HeaderMap, Method, Request, StatusCode};
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// What a hyper HTTP/1.1 client saw.
    pub(crate) struct Got {
        pub(crate) status: StatusCode,
        pub(crate) headers: HeaderMap,
        /// Body bytes received before the end or the error.
        pub(crate) body: Vec<u8>,
        pub(crate) error: Option<hyper::Error>,
        /// Time until the response head arrived.
        pub(crate) head_after: Duration,
    }

    impl Got {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.body.clone()).unwrap()
        }

        pub(crate) fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap()
        }

        pub(crate) fn header(&self, name: &str) -> &str {
            self.headers[name].to_str().unwrap()
        }
    }

    /// Sends one request over a fresh HTTP/1.1 connection and reads the whole answer.
    pub(crate) async fn send(
        addr: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> Got {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let started = Instant::now();
        let response = sender.send_request(request.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
        let head_after = started.elapsed();
        let (parts, mut body) = response.into_parts();
        let mut bytes = Vec::new();
        let mut error = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        bytes.extend_from_slice(&data);
                    }
                }
                Err(err) => {
                    error = Some(err);
                    break;
                }
            }
        }
        Got { status: parts.status, headers: parts.headers, body: bytes, error, head_after }
    }

    /// Writes a raw HTTP/1.1 keep-alive `POST path` with `headers` (after `host`) and a JSON
    /// body, so only the server can close the connection.
    pub(crate) async fn raw_post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let body = body.to_string();
        let mut request = format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\n");
        for (name, value) in headers {
            request += &format!("{name}: {value}\r\n");
        }
        request += &format!("content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        stream.write_all(request.as_bytes()).await.unwrap();
        stream
    }

    /// Reads until `done(bytes so far)`, failing after 5 s.
    pub(crate) async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, done: impl Fn(&str) -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !done(&String::from_utf8_lossy(buf)) {
                let mut chunk = [0_u8; 4096];
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed early: {}", String::from_utf8_lossy(buf));
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .unwrap();
    }

    /// Polls `condition` every 10 ms for up to 5 s.
    pub(crate) async fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
