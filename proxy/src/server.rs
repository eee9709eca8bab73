//! Listener loop shared by the data and admin ports: HTTP/1.1 and h2c,
//! graceful drain on shutdown.
//!
//! The common request is read and answered here, without hyper: HTTP/1.1,
//! a `Content-Length` body or none, no `Transfer-Encoding`, `Expect` or
//! `Upgrade`. That skips hyper's per-request machinery (dispatcher states,
//! the body channel and its wake-ups), which an earlier profile put at about
//! a quarter of the proxy's user time per request (docs/benchmarks.md).
//!
//! Anything else hands the connection, with every byte read so far, to
//! hyper, which serves it from then on: HTTP/1.0, chunked request bodies,
//! `Expect: 100-continue`, upgrades (WebSocket), h2c with prior knowledge,
//! HEAD and CONNECT, bodies over [`MAX_FAST_BODY`], heads over
//! [`MAX_HEAD_BYTES`] and anything the parser rejects. So every unusual case
//! keeps hyper's behaviour, error answers included; this module never
//! writes an error of its own.
//!
//! As with hyper's default (no half-close), a client that closes its side
//! while its request is being handled has gone away: the handler's future is
//! dropped, which cancels the upstream request.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::FutureExt as _;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// The request id header: taken from the client when it sends one, made up
/// otherwise, and passed to the upstream and back in every answer.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Response body of every handler: a full buffer or a stream.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into()).map_err(|never: Infallible| match never {}).boxed_unsync()
}

/// Request body of every handler.
#[derive(Debug)]
pub enum RequestBody {
    /// Read in full before the handler was called.
    Full(Bytes),
    /// Streamed by hyper (a connection this module handed over).
    Incoming(Incoming),
}

/// Handles one request.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request<RequestBody>) -> impl Future<Output = Response<Body>> + Send;
}

/// Largest head read here; a longer one goes to hyper, whose own limit
/// (about 400 KiB, then 431) applies.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header lines read here (hyper's own default limit).
const MAX_HEADERS: usize = 100;
/// Largest body read here before the handler runs; a larger one goes to
/// hyper, which streams it (and lets the handler refuse it early).
pub const MAX_FAST_BODY: usize = 1024 * 1024;
/// Size of a connection's read buffer.
const READ_CHUNK: usize = 8 * 1024;

/// Serves `handler` on `listener` until `shutdown` fires, then stops
/// accepting and waits up to `drain` for open requests to finish. Returns
/// whether the drain completed in time. A connection that sends no whole
/// request for `idle` (since it opened, or since its last answer) is closed.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    shutdown: CancellationToken,
    drain: Duration,
    idle: Duration,
) -> bool {
    // Every connection task holds a sender; the receiver sees the channel
    // close when the last one has ended.
    let (open, mut all_closed) = mpsc::channel::<Infallible>(1);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection { handler: handler.clone(), shutdown: shutdown.clone(), idle, _open: open.clone() };
        tokio::spawn(connection.run(stream, peer));
    }
    drop(listener);
    drop(open);
    tokio::time::timeout(drain, all_closed.recv()).await.is_ok()
}

/// Binds a listener with a message that names the flag to change.
pub async fn bind(addr: SocketAddr, flag: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| std::io::Error::new(error.kind(), format!("cannot listen on {addr} (`{flag}`): {error}")))
}

struct Connection<H> {
    handler: Arc<H>,
    shutdown: CancellationToken,
    idle: Duration,
    _open: mpsc::Sender<Infallible>,
}

/// The idle limit of one connection: a single timer, moved only when it
/// fires early (the connection answered a request since it was set), so
/// that a request costs no timer of its own.
struct Idle {
    timer: Pin<Box<Sleep>>,
    /// The end of the last answer (or the connection's start).
    since: Instant,
    limit: Duration,
}

impl Idle {
    fn new(limit: Duration) -> Self {
        Self { timer: Box::pin(tokio::time::sleep(limit)), since: Instant::now(), limit }
    }

    /// An answer went out: the connection has `limit` again from now.
    fn answered(&mut self) {
        self.since = Instant::now();
    }

    /// Reads from the client; `None` once the connection has been idle for
    /// its limit.
    async fn read(&mut self, stream: &mut TcpStream, buf: &mut BytesMut) -> Option<std::io::Result<usize>> {
        loop {
            tokio::select! {
                biased;
                read = stream.read_buf(buf) => return Some(read),
                () = self.timer.as_mut() => {
                    let deadline = self.since + self.limit;
                    if Instant::now() >= deadline {
                        return None;
                    }
                    self.timer.as_mut().reset(deadline);
                }
            }
        }
    }
}

/// What the next bytes on a connection are.
enum Next {
    /// A request head for this module, in the connection's `Head`.
    Head,
    /// Something for hyper.
    HandOff,
    /// The client closed the connection (or the server is shutting down
    /// and the connection is idle).
    Closed,
}

/// A head this module serves, as offsets into the connection's buffer (so
/// that it is parsed once and its values are slices of it, not copies).
/// One per connection, reused from request to request.
#[derive(Default)]
struct Head {
    len: usize,
    body_len: usize,
    /// The client asked to close the connection after this request.
    close: bool,
    method: Method,
    target: Range<usize>,
    headers: Vec<(HeaderName, Range<usize>)>,
}

impl<H: Handler> Connection<H> {
    async fn run(self, mut stream: TcpStream, peer: SocketAddr) {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut out = Vec::with_capacity(512);
        let mut head = Head::default();
        let mut idle = Idle::new(self.idle);
        loop {
            match self.next_head(&mut stream, &mut buf, &mut head, &mut idle).await {
                Next::Head => {}
                Next::HandOff => return self.hand_off(stream, buf.freeze(), peer).await,
                Next::Closed => return,
            }
            let Some(request) = read_request(&mut stream, &mut buf, &head, &mut idle).await else { return };
            let request = match request {
                Ok(request) => request,
                Err(read) => return self.hand_off(stream, read, peer).await,
            };
            let Some(response) = until_gone(&mut stream, &mut buf, self.handler.handle(request)).await else {
                return;
            };
            let close = head.close || self.shutdown.is_cancelled();
            match write_response(&mut stream, &mut buf, &mut out, response, close).await {
                Ok(true) => idle.answered(),
                Ok(false) | Err(_) => {
                    let _ = stream.shutdown().await;
                    return;
                }
            }
        }
    }

    /// Reads until a whole head is buffered, and decides who serves it.
    async fn next_head(&self, stream: &mut TcpStream, buf: &mut BytesMut, head: &mut Head, idle: &mut Idle) -> Next {
        loop {
            if !buf.is_empty() {
                match inspect(buf, head) {
                    Ok(true) => return Next::Head,
                    Ok(false) if buf.len() < MAX_HEAD_BYTES => {}
                    _ => return Next::HandOff,
                }
            }
            buf.reserve(READ_CHUNK);
            let read = if buf.is_empty() {
                // Idle between requests: this is where a shutdown closes
                // a kept-alive connection.
                tokio::select! {
                    read = idle.read(stream, buf) => read,
                    () = self.shutdown.cancelled() => return Next::Closed,
                }
            } else {
                idle.read(stream, buf).await
            };
            if !matches!(read, Some(Ok(n)) if n > 0) {
                return Next::Closed;
            }
        }
    }

    /// Serves the rest of the connection with hyper, starting with the
    /// bytes already read.
    async fn hand_off(self, stream: TcpStream, read: Bytes, peer: SocketAddr) {
        let handler = self.handler.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.handle(request.map(RequestBody::Incoming)).await) }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's own limit for a head that arrives too slowly.
        builder.http1().timer(TokioTimer::new()).header_read_timeout(self.idle);
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(Rewind { read, stream }), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = self.shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    }
}

/// Reads a buffered head into `head`: `Ok(false)` while it is incomplete,
/// `Err(())` when hyper should serve it.
fn inspect(buf: &[u8], head: &mut Head) -> Result<bool, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(false),
        Err(_) => return Err(()),
    };
    let (Some(1), Some(method), Some(target)) = (request.version, request.method, request.path) else {
        return Err(());
    };
    head.method = match method {
        "POST" => Method::POST,
        "GET" => Method::GET,
        "HEAD" | "CONNECT" => return Err(()),
        other => Method::from_bytes(other.as_bytes()).map_err(drop)?,
    };
    let span = |part: &[u8]| {
        let start = part.as_ptr().addr() - buf.as_ptr().addr();
        start..start + part.len()
    };
    head.len = len;
    head.target = span(target.as_bytes());
    head.close = false;
    head.headers.clear();
    let mut content_length = None;
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(drop)?;
        if name == CONTENT_LENGTH {
            let value = std::str::from_utf8(header.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
            match (content_length, value) {
                (None, Some(n)) if n <= MAX_FAST_BODY => content_length = Some(n),
                _ => return Err(()),
            }
        } else if name == CONNECTION {
            if lists_token(header.value, "upgrade") {
                return Err(());
            }
            head.close |= lists_token(header.value, "close");
        } else if name == TRANSFER_ENCODING || name == EXPECT || name == UPGRADE {
            return Err(());
        }
        head.headers.push((name, span(header.value)));
    }
    head.body_len = content_length.unwrap_or(0);
    Ok(true)
}

/// Takes the head (and reads the body) of an inspected request off the
/// buffer. `None`: the client went away. `Err(bytes)`: the head did not
/// convert after all; these are the bytes for hyper.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    head: &Head,
    idle: &mut Idle,
) -> Option<Result<Request<RequestBody>, Bytes>> {
    let wanted = head.len + head.body_len;
    while buf.len() < wanted {
        buf.reserve(wanted - buf.len());
        if !matches!(idle.read(stream, buf).await, Some(Ok(n)) if n > 0) {
            return None;
        }
    }
    // The head, and a body no larger than the buffer's usual size, are
    // copied out: the buffer then stays this connection's own, and the next
    // read reuses it instead of allocating another while the request
    // still holds slices of this one.
    let bytes = Bytes::copy_from_slice(&buf[..head.len]);
    let Some(mut request) = to_request(&bytes, head) else { return Some(Err(buf.split().freeze())) };
    buf.advance(head.len);
    let body = if head.body_len <= READ_CHUNK {
        let body = Bytes::copy_from_slice(&buf[..head.body_len]);
        buf.advance(head.body_len);
        body
    } else {
        buf.split_to(head.body_len).freeze()
    };
    *request.body_mut() = RequestBody::Full(body);
    Some(Ok(request))
}

/// The request of an inspected head; the URI and header values are slices
/// of `bytes`, not copies.
fn to_request(bytes: &Bytes, head: &Head) -> Option<Request<RequestBody>> {
    let mut request = Request::new(RequestBody::Full(Bytes::new()));
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = Uri::from_maybe_shared(bytes.slice(head.target.clone())).ok()?;
    *request.version_mut() = Version::HTTP_11;
    let map = request.headers_mut();
    map.reserve(head.headers.len());
    for (name, value) in &head.headers {
        map.append(name.clone(), HeaderValue::from_maybe_shared(bytes.slice(value.clone())).ok()?);
    }
    Some(request)
}

/// Runs `handling` to its end unless the client closes the connection
/// first (then `None`, and the future is dropped). Bytes that arrive
/// meanwhile (a pipelined request) are kept in `buf`, up to a limit.
async fn until_gone<T>(stream: &mut TcpStream, buf: &mut BytesMut, handling: impl Future<Output = T>) -> Option<T> {
    tokio::pin!(handling);
    loop {
        let watching = buf.len() < MAX_HEAD_BYTES;
        if watching {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            done = &mut handling => return Some(done),
            read = stream.read_buf(buf), if watching => {
                if !matches!(read, Ok(n) if n > 0) {
                    return None;
                }
            }
        }
    }
}

/// How an answer's body is delimited on the wire.
#[derive(Clone, Copy)]
enum Framing {
    /// 1xx, 204 and 304 answers: no body.
    None,
    Length(u64),
    Chunked,
}

/// Writes a response; returns whether the connection can carry another
/// request.
async fn write_response(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    response: Response<Body>,
    close: bool,
) -> std::io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let close = close || has_token(&parts.headers, CONNECTION, "close");
    let status = parts.status;
    let framing = if status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
    {
        Framing::None
    } else {
        http_body::Body::size_hint(&body).exact().map_or(Framing::Chunked, Framing::Length)
    };
    out.clear();
    write_head(out, &parts, framing, close);
    if matches!(framing, Framing::None) {
        stream.write_all(out).await?;
        return Ok(!close);
    }
    let chunked = matches!(framing, Framing::Chunked);
    loop {
        // A frame that is ready now goes out with what is pending (the
        // head, for the first); otherwise the pending bytes go first.
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                if !out.is_empty() {
                    stream.write_all(out).await?;
                    out.clear();
                }
                match until_gone(stream, buf, body.frame()).await {
                    Some(frame) => frame,
                    None => return Ok(false),
                }
            }
        };
        match frame {
            None => {
                if chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                if !out.is_empty() {
                    stream.write_all(out).await?;
                }
                return Ok(!close);
            }
            Some(Err(error)) => {
                // Cut short: the client sees a body that does not end properly.
                tracing::debug!(%error, "response body failed");
                return Ok(false);
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                if data.is_empty() {
                    continue;
                }
                if chunked {
                    write_hex(out, data.len());
                    out.extend_from_slice(b"\r\n");
                    write_all_vectored(stream, &mut [IoSlice::new(out), IoSlice::new(&data), IoSlice::new(b"\r\n")])
                        .await?;
                } else {
                    write_all_vectored(stream, &mut [IoSlice::new(out), IoSlice::new(&data)]).await?;
                }
                out.clear();
            }
        }
    }
}

/// The status line and headers. The framing header is always this
/// module's own, from the body's exact size (a handler's `content-length`
/// is dropped, so the two can never disagree); `date` and
/// `connection: close` are added as hyper would.
fn write_head(out: &mut Vec<u8>, parts: &http::response::Parts, framing: Framing, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == TRANSFER_ENCODING || name == CONNECTION || name == CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        write_date(out);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The current time in the `Date` header's format, rendered once a second.
fn write_date(out: &mut Vec<u8>) {
    thread_local! {
        static RENDERED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    RENDERED.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

fn write_hex(out: &mut Vec<u8>, mut n: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = DIGITS[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Whether a comma-separated header (`Connection`, `Upgrade`, ...) lists
/// `token`, in any letter case, in any of its lines.
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| lists_token(v.as_bytes(), token))
}

/// Whether a comma-separated header value lists `token` (any case).
pub fn lists_token(value: &[u8], token: &str) -> bool {
    value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

async fn write_all_vectored(stream: &mut TcpStream, mut slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !slices.is_empty() {
        let n = stream.write_vectored(slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// A connection whose first bytes were already read: they are read again
/// first.
struct Rewind {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(out.remaining());
            out.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, out)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_lowercase_hex() {
        for (n, text) in [(0, "0"), (9, "9"), (10, "a"), (255, "ff"), (4096, "1000"), (usize::MAX, "ffffffffffffffff")]
        {
            let mut out = Vec::new();
            write_hex(&mut out, n);
            assert_eq!(out, text.as_bytes());
        }
    }

    #[test]
    fn the_head_carries_this_modules_framing_only() {
        let head = |status: u16, framing: Framing, close: bool| {
            let response = Response::builder()
                .status(status)
                .header("content-length", "999")
                .header("transfer-encoding", "gzip")
                .header("connection", "keep-alive")
                .header("x-a", "1")
                .body(())
                .unwrap();
            let (parts, ()) = response.into_parts();
            let mut out = Vec::new();
            write_head(&mut out, &parts, framing, close);
            let text = String::from_utf8(out).unwrap();
            // The date changes; everything else is fixed.
            let (before, after) = text.split_once("date: ").unwrap();
            format!("{before}{}", after.split_once("\r\n").unwrap().1)
        };
        assert_eq!(head(200, Framing::Length(12), false), "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 12\r\n\r\n");
        assert_eq!(
            head(200, Framing::Chunked, true),
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(head(304, Framing::None, false), "HTTP/1.1 304 Not Modified\r\nx-a: 1\r\n\r\n");
    }

    #[test]
    fn only_plain_http11_heads_are_served_here() {
        let mut parsed = Head::default();
        let mut head = |text: &str| inspect(text.as_bytes(), &mut parsed);
        assert_eq!(head("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(false), "incomplete");
        assert_eq!(head("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"), Ok(true));
        let text = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(head(text), Ok(true));
        assert_eq!((parsed.len, parsed.body_len, parsed.close), (text.len(), 12, false), "close is reset");
        assert_eq!(&text[parsed.target.clone()], "/v1/chat/completions");
        let headers: Vec<_> = parsed.headers.iter().map(|(n, v)| (n.as_str(), &text[v.clone()])).collect();
        assert_eq!(headers, [("host", "x"), ("content-length", "12")]);
        let mut head = |text: &str| inspect(text.as_bytes(), &mut parsed);
        for other in [
            "GET / HTTP/1.0\r\n\r\n",
            "HEAD / HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(head(other).is_err(), "{other:?} should go to hyper");
        }
    }
}
