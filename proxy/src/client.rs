//! The HTTP/1.1 client the proxy calls providers with.
//!
//! Why not hyper's pooled client: it drives every connection from a task of
//! its own, so each request crosses a channel to that task and back and
//! takes a lock and a hash lookup in the pool. Here the request's own task
//! checks a connection out of the pool, writes the request on it, reads the
//! answer and puts the connection back once the body has been read to its
//! end; a body dropped before its end closes the connection, which is how a
//! client that goes away cancels the upstream request. Parsing is
//! `httparse`'s, the parser hyper itself uses.
//!
//! - Plain TCP or TLS (rustls, ALPN `http/1.1`, the webpki roots); TLS
//!   through an HTTP proxy's tunnel when one is set ([`crate::egress`]).
//! - Bodies framed by `content-length`, `transfer-encoding: chunked`, or the
//!   end of the connection; interim `1xx` answers are skipped.
//! - Idle connections are kept per origin (most recently used first) for
//!   [`IDLE_TIMEOUT`]. One the upstream has closed in the meantime is noticed
//!   at checkout from the runtime's readiness state, which costs a system
//!   call only when the socket has become readable while idle.
//! - Each origin's idle list is a [`Slot`] that a [`Target`] finds once and
//!   keeps, and each connection keeps its own: checkout and return lock that
//!   list only, with no lookup by origin.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::egress::Egress;

/// How long an unused connection is kept, by default.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per origin.
const MAX_IDLE_PER_ORIGIN: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
/// Bodies up to this size are copied behind the head and written in one go.
const COPY_BODY_BELOW: usize = 16 * 1024;
const READ_CHUNK: usize = 8 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer arrived: the connection could not be made, or broke before
    /// the first byte of the answer.
    #[error("{0}")]
    Connect(String),
    /// The answer broke off after it had begun.
    #[error("{0}")]
    Broken(String),
    /// The answer is not valid HTTP/1.
    #[error("{0}")]
    Protocol(String),
}

/// A response head and its body, still to be read.
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Body,
}

/// A response's headers as they arrived: one copy of the head's bytes and
/// where each header is in it. An answer's headers are looked up a few
/// times at most (rate limits, `retry-after`), so a scan by name costs
/// less than building a `HeaderMap` of all of them.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    text: Bytes,
    /// The name and the value of each header, as offsets into `text`.
    spans: Vec<(Range<usize>, Range<usize>)>,
}

impl Headers {
    /// Every header, in the order received.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().map(|(name, value)| (&self.text[name.clone()], &self.text[value.clone()]))
    }

    /// The value of the first header called `name` (in any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, value)| value)
    }

    /// [`Self::get`], when the value is text.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.get(name)?).ok()
    }
}

/// Headers from (name, value) pairs (tests).
impl<'a> FromIterator<(&'a str, &'a str)> for Headers {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Self {
        let mut text = Vec::new();
        let mut spans = Vec::new();
        for (name, value) in pairs {
            let name_at = text.len()..text.len() + name.len();
            text.extend_from_slice(name.as_bytes());
            let value_at = text.len()..text.len() + value.len();
            text.extend_from_slice(value.as_bytes());
            spans.push((name_at, value_at));
        }
        Self { text: text.into(), spans }
    }
}

/// The shared client: cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// The idle list of each origin (`http://host:port` as the URL spells it).
    slots: Mutex<HashMap<Box<str>, Arc<Slot>>>,
    /// How long an unused connection is kept.
    idle_timeout: Duration,
    tls: TlsConnector,
    egress: Egress,
}

/// One origin's idle connections, oldest first. Each is boxed, so that a
/// body (which holds one) stays small and moving one in and out of the
/// pool copies a pointer.
struct Slot {
    origin: Box<str>,
    idle_timeout: Duration,
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Conn>>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client that trusts the webpki roots.
    pub fn new() -> Self {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        Self::with_roots(roots)
    }

    /// A client that trusts `roots` only.
    pub fn with_roots(roots: rustls::RootCertStore) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        #[allow(clippy::expect_used)]
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = TlsConnector::from(Arc::new(config));
        let egress = Egress::default();
        Self { inner: Arc::new(Inner { slots: Mutex::default(), idle_timeout: IDLE_TIMEOUT, tls, egress }) }
    }

    /// The same client, keeping unused connections for `timeout` instead
    /// of [`IDLE_TIMEOUT`]. Call before the first request.
    pub fn with_idle_timeout(self, timeout: Duration) -> Self {
        let (tls, egress) = (self.inner.tls.clone(), self.inner.egress.clone());
        Self { inner: Arc::new(Inner { slots: Mutex::default(), idle_timeout: timeout, tls, egress }) }
    }

    /// The same client, reaching `https://` upstreams through `egress`.
    /// Call before the first request.
    pub fn with_egress(self, egress: Egress) -> Self {
        let (tls, idle_timeout) = (self.inner.tls.clone(), self.inner.idle_timeout);
        Self { inner: Arc::new(Inner { slots: Mutex::default(), idle_timeout, tls, egress }) }
    }

    /// POSTs `body` to `target` with its headers and `extra`; returns once
    /// the response head has arrived. Dropping the future, or the response's
    /// body before its end, closes the connection.
    pub async fn post(
        &self,
        target: &Target,
        extra: &[(HeaderName, &HeaderValue)],
        body: &[u8],
    ) -> Result<Response, ClientError> {
        let head = target.head(extra, body.len());
        let found;
        let slot = match self.kept_slot(target) {
            Some(slot) => slot,
            None => {
                found = self.slot(target);
                &found
            }
        };
        let mut conn = match slot.checkout() {
            Some(conn) => conn,
            None => self.connect(target, slot.clone()).await?,
        };
        let sent = if body.len() < COPY_BODY_BELOW {
            let mut whole = head;
            whole.extend_from_slice(body);
            conn.io.write_all(&whole).await
        } else {
            conn.io.write_all_buf(&mut Buf::chain(head.as_slice(), body)).await
        };
        let sent = match sent {
            Ok(()) => conn.io.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            return Err(ClientError::Connect(conn.describe("sending the request", &e)));
        }
        let (status, headers, framing, keep_alive) = read_head(&mut conn).await?;
        let reusable = keep_alive && !matches!(framing, Framing::UntilClose);
        Ok(Response { status, headers, body: Body { conn: Some(conn), framing, reusable } })
    }

    /// The idle list `target` keeps, when it was found for this client (the
    /// `Weak` keeps that client's address from being reused by another).
    fn kept_slot<'t>(&self, target: &'t Target) -> Option<&'t Arc<Slot>> {
        let (client, slot) = target.slot.get()?;
        std::ptr::eq(client.as_ptr(), Arc::as_ptr(&self.inner)).then_some(slot)
    }

    /// The idle list of `target`'s origin, which the target then keeps.
    fn slot(&self, target: &Target) -> Arc<Slot> {
        let slot = {
            let mut slots = self.inner.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let slot = slots.entry(target.origin.clone()).or_insert_with(|| {
                Arc::new(Slot {
                    origin: target.origin.clone(),
                    idle_timeout: self.inner.idle_timeout,
                    idle: Mutex::default(),
                })
            });
            slot.clone()
        };
        // A target used with a second client keeps the first one's slot.
        let _ = target.slot.set((Arc::downgrade(&self.inner), slot.clone()));
        slot
    }

    async fn connect(&self, origin: &Target, slot: Arc<Slot>) -> Result<Box<Conn>, ClientError> {
        let address = &origin.origin;
        // Plain http:// upstreams are always called directly.
        let proxy = if origin.tls { self.inner.egress.proxy_for(&origin.host) } else { None };
        let connecting = async {
            if let Some(proxy) = proxy {
                proxy.tunnel(&origin.host, origin.port).await
            } else {
                TcpStream::connect((&*origin.host, origin.port))
                    .await
                    .map_err(|e| format!("cannot connect to {address}: {e}"))
            }
        };
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(message)) => return Err(ClientError::Connect(message)),
            Err(_) => {
                return Err(ClientError::Connect(format!(
                    "cannot connect to {address}: no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        };
        let _ = tcp.set_nodelay(true);
        let io = if origin.tls {
            let name = ServerName::try_from(origin.host.to_string())
                .map_err(|e| ClientError::Connect(format!("`{}` is not a name TLS can verify: {e}", origin.host)))?;
            let handshake = self.inner.tls.connect(name, tcp);
            match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => Io::Tls(Box::new(tls)),
                Ok(Err(e)) => return Err(ClientError::Connect(format!("TLS handshake with {address} failed: {e}"))),
                Err(_) => return Err(ClientError::Connect(format!("TLS handshake with {address} timed out"))),
            }
        } else {
            Io::Plain(tcp)
        };
        Ok(Box::new(Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            slot,
            reused: false,
            idle_since: Instant::now(),
        }))
    }

    /// Idle connections kept for `target`'s origin (tests).
    pub fn idle_connections(&self, target: &Target) -> usize {
        self.slot(target).idle.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Slot {
    /// The most recently used idle connection that still looks usable.
    fn checkout(&self) -> Option<Box<Conn>> {
        let mut list = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        while let Some(mut conn) = list.pop() {
            if now.duration_since(conn.idle_since) < self.idle_timeout && conn.looks_open() {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Pools a connection whose answer was read to its end.
    fn put(&self, mut conn: Box<Conn>) {
        let now = Instant::now();
        conn.idle_since = now;
        let mut list = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // Drop connections that idled out: the oldest are at the front.
        let expired = list.iter().take_while(|c| now.duration_since(c.idle_since) >= self.idle_timeout).count();
        list.drain(..expired);
        if list.len() < MAX_IDLE_PER_ORIGIN {
            list.push(conn);
        }
    }
}

/// Where requests go and the part of their head that is the same for
/// every request: prepared once (per table, for fixed URLs).
#[derive(Clone)]
pub struct Target {
    tls: bool,
    /// `http://` or `https://` and the authority as the URL spells it: the
    /// pool's key.
    origin: Box<str>,
    /// The host to connect to and verify (an IPv6 address without brackets).
    host: Box<str>,
    port: u16,
    /// The request line, `host` and the fixed headers (credentials
    /// included: never printed).
    prefix: Vec<u8>,
    /// The origin's idle list in the client that first sent to it.
    slot: OnceLock<(Weak<Inner>, Arc<Slot>)>,
}

/// Shows where the target points, never its headers.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("origin", &self.origin).finish()
    }
}

impl Target {
    /// POSTs to `uri` with `headers`, except those named in `reserved`
    /// (they come with each request) and the framing ones (`host`,
    /// `content-length`, `transfer-encoding`), which the client writes.
    pub fn new(uri: &Uri, headers: &HeaderMap, reserved: &[HeaderName]) -> Result<Self, String> {
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("`{uri}` is not an http:// or https:// URL")),
        };
        let Some(authority) = uri.authority() else { return Err(format!("`{uri}` has no host")) };
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut prefix = Vec::with_capacity(256);
        prefix.extend_from_slice(b"POST ");
        prefix.extend_from_slice(target.as_bytes());
        prefix.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        prefix.extend_from_slice(authority.as_str().as_bytes());
        prefix.extend_from_slice(b"\r\n");
        let framing = [http::header::HOST, http::header::CONTENT_LENGTH, http::header::TRANSFER_ENCODING];
        for (name, value) in headers {
            if !framing.contains(name) && !reserved.contains(name) {
                header_line(&mut prefix, name, value);
            }
        }
        let origin = format!("{}://{authority}", if tls { "https" } else { "http" }).into();
        Ok(Self { tls, origin, host: bare_host(authority.host()).into(), port, prefix, slot: OnceLock::new() })
    }

    /// The whole head of a request with `extra` headers and a body of `length` bytes.
    fn head(&self, extra: &[(HeaderName, &HeaderValue)], length: usize) -> Vec<u8> {
        let mut head = Vec::with_capacity(self.prefix.len() + 128 + length.min(COPY_BODY_BELOW));
        head.extend_from_slice(&self.prefix);
        for (name, value) in extra {
            header_line(&mut head, name, value);
        }
        head.extend_from_slice(b"content-length: ");
        head.extend_from_slice(length.to_string().as_bytes());
        head.extend_from_slice(b"\r\n\r\n");
        head
    }
}

fn bare_host(host: &str) -> &str {
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

fn header_line(head: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    head.extend_from_slice(name.as_str().as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value.as_bytes());
    head.extend_from_slice(b"\r\n");
}

/// Reads the response head (skipping interim `1xx` answers): the status,
/// the headers, how the body is framed, and whether the connection may be
/// reused after it.
async fn read_head(conn: &mut Conn) -> Result<(u16, Headers, Framing, bool), ClientError> {
    loop {
        if !conn.buf.is_empty() {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut slots);
            match parsed.parse(&conn.buf) {
                Ok(httparse::Status::Complete(length)) => {
                    let status = parsed.code.unwrap_or_default();
                    let version = parsed.version.unwrap_or_default();
                    let mut framers = Framers::default();
                    let start = conn.buf.as_ptr().addr();
                    let span = |part: &[u8]| {
                        let at = part.as_ptr().addr() - start;
                        at..at + part.len()
                    };
                    let mut spans = Vec::with_capacity(parsed.headers.len());
                    for header in parsed.headers.iter() {
                        framers.note(header.name.as_bytes(), header.value);
                        spans.push((span(header.name.as_bytes()), span(header.value)));
                    }
                    let headers = Headers { text: Bytes::copy_from_slice(&conn.buf[..length]), spans };
                    conn.buf.advance(length);
                    if (100..200).contains(&status) {
                        if status == 101 {
                            return Err(ClientError::Protocol("the upstream switched protocols (101)".into()));
                        }
                        continue;
                    }
                    let framing = framers.framing(status)?;
                    return Ok((status, headers, framing, framers.keep_alive(version)));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(ClientError::Protocol(format!("the upstream's answer is not valid HTTP/1: {e}"))),
            }
            if conn.buf.len() > MAX_HEAD_BYTES {
                return Err(ClientError::Protocol(format!(
                    "the upstream's response head is larger than {MAX_HEAD_BYTES} bytes"
                )));
            }
        }
        let before = conn.buf.len();
        match conn.fill().await {
            Ok(0) if before == 0 => {
                let when = if conn.reused { " (an idle connection was closed by the upstream)" } else { "" };
                return Err(ClientError::Connect(format!("the upstream closed the connection before answering{when}")));
            }
            Ok(0) => {
                return Err(ClientError::Broken("the upstream closed the connection inside the response head".into()));
            }
            Ok(_) => {}
            Err(e) => {
                let message = conn.describe("reading the response", &e);
                return Err(if before == 0 { ClientError::Connect(message) } else { ClientError::Broken(message) });
            }
        }
    }
}

/// What the headers that frame an answer say, noted while they are read.
struct Framers {
    /// Whether the last `transfer-encoding` header ends with `chunked`, if
    /// there is one.
    chunked: Option<bool>,
    /// Every `content-length` value agrees on this (`Err`: they do not, or
    /// one is not a number; it matters only without `transfer-encoding`).
    length: Result<Option<u64>, &'static str>,
    /// `connection` lists `close` or `keep-alive`.
    close: bool,
    keep_alive: bool,
}

impl Default for Framers {
    fn default() -> Self {
        Self { chunked: None, length: Ok(None), close: false, keep_alive: false }
    }
}

impl Framers {
    fn note(&mut self, name: &[u8], value: &[u8]) {
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            self.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for part in value.split(|b| *b == b',') {
                let parsed = std::str::from_utf8(part.trim_ascii()).ok().and_then(|p| p.parse::<u64>().ok());
                self.length = match (parsed, self.length) {
                    (_, Err(e)) => Err(e),
                    (None, _) => Err("the upstream sent an invalid content-length"),
                    (Some(n), Ok(Some(seen))) if n != seen => Err("the upstream sent conflicting content-lengths"),
                    (Some(n), Ok(_)) => Ok(Some(n)),
                };
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            self.close |= crate::server::lists_token(value, "close");
            self.keep_alive |= crate::server::lists_token(value, "keep-alive");
        }
    }

    /// Whether the connection may carry another request: HTTP/1.1 keeps it
    /// unless told otherwise, 1.0 only when asked to.
    fn keep_alive(&self, version: u8) -> bool {
        if version >= 1 { !self.close } else { self.keep_alive }
    }

    /// RFC 9112 §6.3, for the answer to a POST.
    fn framing(&self, status: u16) -> Result<Framing, ClientError> {
        if status == 204 || status == 304 {
            return Ok(Framing::Length(0));
        }
        match (self.chunked, self.length) {
            (Some(true), _) => Ok(Framing::Chunked(Chunked::Size)),
            (Some(false), _) => Ok(Framing::UntilClose),
            (None, Err(problem)) => Err(ClientError::Protocol(problem.into())),
            (None, Ok(length)) => Ok(length.map_or(Framing::UntilClose, Framing::Length)),
        }
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(tcp) => tcp.is_write_vectored(),
            Io::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One connection and the bytes read from it but not yet used.
struct Conn {
    io: Io,
    buf: BytesMut,
    /// The idle list it returns to.
    slot: Arc<Slot>,
    /// Taken from the pool (a failure before the answer may mean the
    /// upstream closed it while it was idle).
    reused: bool,
    idle_since: Instant,
}

impl Conn {
    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_CHUNK);
        self.io.read_buf(&mut self.buf).await
    }

    /// Whether the idle connection can take a request: nothing arrived on it
    /// since its last answer. The runtime's readiness state says so without
    /// a system call; only a socket that became readable is peeked at (end
    /// of stream: closed; bytes on a plain connection: garbage; bytes on a
    /// TLS connection may be a session ticket, which rustls reads later).
    fn looks_open(&self) -> bool {
        let (tcp, tls) = match &self.io {
            Io::Plain(tcp) => (tcp, false),
            Io::Tls(stream) => (stream.get_ref().0, true),
        };
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut peek = ReadBuf::new(&mut byte);
        match tcp.poll_peek(&mut cx, &mut peek) {
            Poll::Pending => true,
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(_)) => tls,
        }
    }

    fn describe(&self, doing: &str, error: &io::Error) -> String {
        let when = if self.reused { " (on a reused connection)" } else { "" };
        format!("{doing} to {}: {error}{when}", self.slot.origin)
    }
}

/// How the body ends.
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunked),
    /// The upstream closes the connection after it.
    UntilClose,
}

/// Where a chunked body's decoder is.
#[derive(Clone, Copy)]
enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk: this many data bytes left, then CRLF.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

/// A response body being read from its connection.
pub struct Body {
    /// `None` once the body has ended.
    conn: Option<Box<Conn>>,
    framing: Framing,
    reusable: bool,
}

impl Body {
    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, ClientError>> {
        loop {
            let conn = self.conn.as_mut()?;
            match step(&mut self.framing, &mut conn.buf) {
                Err(e) => {
                    self.conn = None;
                    return Some(Err(e));
                }
                Ok(Step::Data(data)) => {
                    // The last bytes of a sized body: release the connection now,
                    // a reader that stops at the data need not ask again.
                    if matches!(self.framing, Framing::Length(0)) {
                        self.end();
                    }
                    return Some(Ok(data));
                }
                Ok(Step::End) => {
                    self.end();
                    return None;
                }
                Ok(Step::More) => {}
            }
            match conn.fill().await {
                Ok(0) if matches!(self.framing, Framing::UntilClose) => {
                    self.conn = None;
                    return None;
                }
                Ok(0) => {
                    self.conn = None;
                    return Some(Err(ClientError::Broken("the upstream closed the connection inside the body".into())));
                }
                Ok(_) => {}
                Err(e) => {
                    let message = conn.describe("reading the body", &e);
                    self.conn = None;
                    return Some(Err(ClientError::Broken(message)));
                }
            }
        }
    }

    /// The whole body, refused as soon as it is known to be longer than
    /// `limit` bytes (before reading any of it, when its length is declared);
    /// the connection is then closed.
    pub async fn bytes(mut self, limit: usize) -> Result<Bytes, ClientError> {
        let too_long = || ClientError::Broken(format!("the upstream's answer is longer than {limit} bytes"));
        if let Framing::Length(n) = self.framing
            && usize::try_from(n).map_or(true, |n| n > limit)
        {
            return Err(too_long());
        }
        // The common case: the whole body arrived with the head.
        if let (Framing::Length(n), Some(conn)) = (&self.framing, &mut self.conn)
            && let Ok(n) = usize::try_from(*n)
            && conn.buf.len() >= n
        {
            let body = take(&mut conn.buf, n);
            self.framing = Framing::Length(0);
            self.end();
            return Ok(body);
        }
        let mut all = BytesMut::new();
        while let Some(piece) = self.chunk().await {
            let piece = piece?;
            if all.len() + piece.len() > limit {
                return Err(too_long());
            }
            all.extend_from_slice(&piece);
        }
        Ok(all.freeze())
    }

    /// Reads what the buffer already holds of the body's framing (a chunked
    /// body's last chunk and trailers) without waiting for more bytes, so
    /// that a reader that has seen all it wants (a stream's `[DONE]`) can
    /// release the connection to the pool instead of closing it. Does
    /// nothing when data is still to come.
    pub fn settle(&mut self) {
        let Some(conn) = self.conn.as_mut() else { return };
        let framing_only = match &mut self.framing {
            Framing::Length(0) => Ok(Framed::End),
            Framing::Chunked(state) => chunk_framing(state, &mut conn.buf),
            Framing::Length(_) | Framing::UntilClose => Ok(Framed::More),
        };
        match framing_only {
            Ok(Framed::End) => {
                self.framing = Framing::Length(0);
                self.end();
            }
            Ok(_) => {}
            Err(_) => self.conn = None,
        }
    }

    /// The body was read to its end: the connection goes back to the pool
    /// when HTTP allows it and nothing else arrived behind the answer.
    fn end(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.reusable
            && conn.buf.is_empty()
        {
            conn.slot.clone().put(conn);
        }
    }
}

enum Step {
    Data(Bytes),
    /// More bytes are needed.
    More,
    End,
}

/// Where a chunked body's framing leaves the decoder.
enum Framed {
    /// Chunk data is next.
    Data,
    /// The framing is incomplete: more bytes are needed.
    More,
    /// The last chunk and its trailers were read.
    End,
}

/// Decodes what `buf` holds of the body.
fn step(framing: &mut Framing, buf: &mut BytesMut) -> Result<Step, ClientError> {
    match framing {
        Framing::Length(0) => Ok(Step::End),
        Framing::Length(left) => {
            if buf.is_empty() {
                return Ok(Step::More);
            }
            let take = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
            *left -= take as u64;
            Ok(Step::Data(self::take(buf, take)))
        }
        Framing::UntilClose => {
            if buf.is_empty() {
                Ok(Step::More)
            } else {
                Ok(Step::Data(take(buf, buf.len())))
            }
        }
        Framing::Chunked(state) => match chunk_framing(state, buf)? {
            Framed::End => {
                *framing = Framing::Length(0);
                Ok(Step::End)
            }
            Framed::More => Ok(Step::More),
            Framed::Data => {
                let Chunked::Data(left) = *state else { return Ok(Step::More) };
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let take = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
                let rest = left - take as u64;
                *state = if rest == 0 { Chunked::DataEnd } else { Chunked::Data(rest) };
                Ok(Step::Data(self::take(buf, take)))
            }
        },
    }
}

/// Moves a chunked body's decoder over the framing `buf` holds (chunk-size
/// lines, line ends, trailers) up to the next data or the end, consuming
/// no data.
fn chunk_framing(state: &mut Chunked, buf: &mut BytesMut) -> Result<Framed, ClientError> {
    loop {
        match *state {
            Chunked::Size => {
                let Some((length, used)) = line(buf)? else { return Ok(Framed::More) };
                let digits = buf[..length].split(|&b| b == b';').next().unwrap_or_default();
                let digits = std::str::from_utf8(digits).unwrap_or_default().trim();
                let size = u64::from_str_radix(digits, 16)
                    .map_err(|_| ClientError::Protocol("the upstream sent an invalid chunk size".into()))?;
                buf.advance(used);
                *state = if size == 0 { Chunked::Trailers } else { Chunked::Data(size) };
            }
            Chunked::Data(_) => return Ok(Framed::Data),
            Chunked::DataEnd => {
                let Some((length, used)) = line(buf)? else { return Ok(Framed::More) };
                if length > 0 {
                    return Err(ClientError::Protocol("the upstream's chunk is longer than its size".into()));
                }
                buf.advance(used);
                *state = Chunked::Size;
            }
            Chunked::Trailers => {
                let Some((length, used)) = line(buf)? else { return Ok(Framed::More) };
                buf.advance(used);
                if length == 0 {
                    return Ok(Framed::End);
                }
            }
        }
    }
}

/// The first `n` bytes of `buf`, copied out: the read buffer then stays
/// the connection's own and is reused, instead of being shared with the
/// body and reallocated for every answer.
fn take(buf: &mut BytesMut, n: usize) -> Bytes {
    let out = Bytes::copy_from_slice(&buf[..n]);
    buf.advance(n);
    out
}

/// The first line of `buf`: its length without the line end, and the bytes
/// it takes with it; `None` until it is complete.
fn line(buf: &BytesMut) -> Result<Option<(usize, usize)>, ClientError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let length = if end > 0 && buf[end - 1] == b'\r' { end - 1 } else { end };
            Ok(Some((length, end + 1)))
        }
        None if buf.len() > 4096 => Err(ClientError::Protocol("the upstream sent an overlong chunk line".into())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(framing: Framing, wire: &[&[u8]]) -> Result<(Vec<u8>, bool), ClientError> {
        let mut framing = framing;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire {
            buf.extend_from_slice(piece);
            loop {
                match step(&mut framing, &mut buf)? {
                    Step::Data(data) => out.extend_from_slice(&data),
                    Step::More => break,
                    Step::End => return Ok((out, true)),
                }
            }
        }
        Ok((out, false))
    }

    fn framers(headers: &[(&str, &str)]) -> Framers {
        let mut framers = Framers::default();
        for (name, value) in headers {
            framers.note(name.as_bytes(), value.as_bytes());
        }
        framers
    }

    #[test]
    fn the_framing_headers_are_read_in_any_case_and_chunked_wins_over_a_length() {
        let framing = |headers: &[(&str, &str)]| framers(headers).framing(200);
        assert!(matches!(framing(&[("Content-Length", "12")]), Ok(Framing::Length(12))));
        assert!(matches!(framing(&[("content-length", "7, 7"), ("CONTENT-LENGTH", "7")]), Ok(Framing::Length(7))));
        assert!(matches!(framing(&[]), Ok(Framing::UntilClose)));
        let chunked = [("Transfer-Encoding", "gzip, Chunked"), ("Content-Length", "nonsense")];
        assert!(matches!(framing(&chunked), Ok(Framing::Chunked(Chunked::Size))));
        // Only the last coding counts: a body not chunked last runs to the close.
        assert!(matches!(framing(&[("transfer-encoding", "chunked, gzip")]), Ok(Framing::UntilClose)));
        assert!(
            matches!(framing(&[("content-length", "1"), ("content-length", "2")]), Err(ClientError::Protocol(m)) if m.contains("conflicting"))
        );
        assert!(matches!(framing(&[("content-length", "-1")]), Err(ClientError::Protocol(m)) if m.contains("invalid")));
        // No body after 204 and 304, whatever the headers say.
        assert!(matches!(framers(&[("content-length", "5")]).framing(204), Ok(Framing::Length(0))));
        assert!(framers(&[("connection", "closed")]).keep_alive(1));
    }

    #[test]
    fn headers_are_found_by_name_in_any_case_first_one_first() {
        let headers: Headers =
            [("Retry-After", "2"), ("x-ratelimit-remaining-requests", "0"), ("retry-after", "9")].into_iter().collect();
        assert_eq!(headers.get_str("retry-after"), Some("2"));
        assert_eq!(headers.get("X-RateLimit-Remaining-Requests"), Some(&b"0"[..]));
        assert_eq!(headers.get("x-should-retry"), None);
        let names: Vec<&[u8]> = headers.iter().map(|(name, _)| name).collect();
        assert_eq!(names, [&b"Retry-After"[..], b"x-ratelimit-remaining-requests", b"retry-after"]);
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire: &[u8] = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for cut in 0..wire.len() {
            let (body, ended) = decode(Framing::Chunked(Chunked::Size), &[&wire[..cut], &wire[cut..]]).unwrap();
            assert_eq!(body, b"hello, world", "cut at {cut}");
            assert!(ended, "cut at {cut}");
        }
        // Byte by byte.
        let pieces: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode(Framing::Chunked(Chunked::Size), &pieces).unwrap(), (b"hello, world".to_vec(), true));
    }

    #[test]
    fn reading_only_the_framing_never_consumes_data() {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::from(&b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n"[..]);
        let mut framing = Framing::Chunked(state);
        assert!(matches!(step(&mut framing, &mut buf), Ok(Step::Data(d)) if d.as_ref() == b"hello"));
        let Framing::Chunked(after) = framing else { panic!("still chunked") };
        state = after;
        // The next chunk's size line is read, its data left where it is.
        assert!(matches!(chunk_framing(&mut state, &mut buf), Ok(Framed::Data)));
        assert!(matches!(state, Chunked::Data(5)));
        assert_eq!(&buf[..], b"world\r\n0\r\n\r\n");
        let mut framing = Framing::Chunked(state);
        assert!(matches!(step(&mut framing, &mut buf), Ok(Step::Data(d)) if d.as_ref() == b"world"));
        let Framing::Chunked(mut state) = framing else { panic!("still chunked") };
        assert!(matches!(chunk_framing(&mut state, &mut buf), Ok(Framed::End)));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_chunked_body_without_its_last_chunk_has_not_ended() {
        let (body, ended) = decode(Framing::Chunked(Chunked::Size), &[b"5\r\nhello\r\n"]).unwrap();
        assert_eq!(body, b"hello");
        assert!(!ended);
    }

    #[test]
    fn bad_chunk_framing_is_a_protocol_error() {
        assert!(decode(Framing::Chunked(Chunked::Size), &[b"zz\r\n"]).is_err());
        assert!(decode(Framing::Chunked(Chunked::Size), &[b"2\r\nabc\r\n"]).is_err());
    }

    #[test]
    fn a_length_body_ends_at_its_length() {
        let (body, ended) = decode(Framing::Length(5), &[b"hel", b"lo"]).unwrap();
        assert_eq!((body.as_slice(), ended), (&b"hello"[..], true));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn targets_know_where_to_connect() {
        let at = |url: &str| Target::new(&url.parse().unwrap(), &HeaderMap::new(), &[]).unwrap();
        let v6 = at("http://[::1]:8000/v1/chat/completions");
        assert_eq!((&*v6.host, &*v6.origin, v6.port), ("::1", "http://[::1]:8000", 8000));
        assert!(v6.prefix.starts_with(b"POST /v1/chat/completions HTTP/1.1\r\nhost: [::1]:8000\r\n"));
        let tls = at("https://api.openai.com/v1/chat/completions");
        assert_eq!((&*tls.host, tls.port, tls.tls), ("api.openai.com", 443, true));
        assert_eq!(at("http://localhost/").port, 80);
        assert!(Target::new(&"ftp://host/x".parse().unwrap(), &HeaderMap::new(), &[]).is_err());
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        assert!(framers(&[]).keep_alive(1));
        assert!(!framers(&[("Connection", "Close")]).keep_alive(1));
        assert!(!framers(&[]).keep_alive(0));
        assert!(framers(&[("connection", "Keep-Alive")]).keep_alive(0));
    }

    #[test]
    fn the_request_head_carries_host_length_and_replaced_headers() {
        let uri: Uri = "http://127.0.0.1:8000/v1/chat/completions?x=1".parse().unwrap();
        let fixed = headers(&[("accept", "text/plain"), ("authorization", "Bearer k"), ("content-length", "99")]);
        let json = HeaderValue::from_static("application/json");
        let target = Target::new(&uri, &fixed, &[http::header::ACCEPT]).unwrap();
        assert_eq!(format!("{target:?}"), r#"Target { origin: "http://127.0.0.1:8000" }"#, "no header in debug output");
        let head = target.head(&[(http::header::ACCEPT, &json)], 12);
        assert_eq!((&*target.host, target.port, target.tls), ("127.0.0.1", 8000, false));
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: 127.0.0.1:8000\r\nauthorization: Bearer k\r\n\
             accept: application/json\r\ncontent-length: 12\r\n\r\n"
        );
    }
}
