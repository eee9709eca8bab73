//! The listener loop over raw loopback TCP: the plain HTTP/1.1 requests it
//! serves itself, the connections it hands to hyper, keep-alive, pipelining,
//! streaming, a client that goes away, and the drain on shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use proxy::server::{self, Body, Handler, RequestBody, full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Answers by path:
/// - `/echo`: `METHOD PATH body=<len> from=<full|hyper> x-test=<header>`;
/// - `/stream`: a chunked body fed by the test through `chunks`;
/// - `/pending`: never answers; `dropped` fires when its future is dropped;
/// - `/slow`: answers after 300 ms.
#[derive(Default)]
struct TestHandler {
    chunks: Mutex<Option<mpsc::Receiver<&'static str>>>,
    dropped: Mutex<Option<oneshot::Sender<()>>>,
}

struct OnDrop(Option<oneshot::Sender<()>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Handler for TestHandler {
    async fn handle(&self, request: Request<RequestBody>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        match parts.uri.path() {
            "/echo" => {
                let (len, from) = match body {
                    RequestBody::Full(bytes) => (bytes.len(), "full"),
                    RequestBody::Incoming(body) => (body.collect().await.unwrap().to_bytes().len(), "hyper"),
                };
                let x_test = parts.headers.get("x-test").map_or("-", |v| v.to_str().unwrap());
                let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
                Response::new(full(format!("{} {target} body={len} from={from} x-test={x_test}", parts.method)))
            }
            "/stream" => {
                let rx = self.chunks.lock().unwrap().take().expect("one stream per test");
                let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                    let chunk = rx.recv().await?;
                    Some((Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(chunk.as_bytes()))), rx))
                });
                Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)))
            }
            "/pending" => {
                let _guard = OnDrop(self.dropped.lock().unwrap().take());
                std::future::pending::<()>().await;
                unreachable!()
            }
            "/slow" => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Response::new(full("slow done"))
            }
            _ => Response::builder().status(404).body(full("no such path")).unwrap(),
        }
    }
}

struct Server {
    addr: std::net::SocketAddr,
    handler: Arc<TestHandler>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<bool>,
}

async fn start() -> Server {
    start_with(Duration::from_secs(60)).await
}

/// A server that closes connections idle for `idle`.
async fn start_with(idle: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(TestHandler::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server::serve(listener, handler.clone(), shutdown.clone(), Duration::from_secs(5), idle));
    Server { addr, handler, shutdown, task }
}

/// One parsed response.
#[derive(Debug)]
struct Answer {
    status: u16,
    version: u8,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads responses off a raw connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        Self { stream: TcpStream::connect(addr).await.unwrap(), buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).await.unwrap();
    }

    /// Reads more; false at the end of the connection.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
            .await
            .expect("an answer within 5 s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn head(&mut self) -> Answer {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = response.parse(&self.buf).unwrap() {
                let answer = Answer {
                    status: response.code.unwrap(),
                    version: response.version.unwrap(),
                    headers: response
                        .headers
                        .iter()
                        .map(|h| (h.name.to_owned(), String::from_utf8(h.value.to_vec()).unwrap()))
                        .collect(),
                    body: String::new(),
                };
                self.buf.drain(..len);
                return answer;
            }
            assert!(
                self.fill().await,
                "connection closed before a whole head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    async fn bytes(&mut self, n: usize) -> String {
        while self.buf.len() < n {
            assert!(self.fill().await, "connection closed inside a body");
        }
        String::from_utf8(self.buf.drain(..n).collect()).unwrap()
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf.drain(..at + 2).collect()).unwrap();
                return line.trim_end().to_owned();
            }
            assert!(self.fill().await, "connection closed inside a line");
        }
    }

    /// One chunk of a chunked body; `None` for the last.
    async fn chunk(&mut self) -> Option<String> {
        let size = usize::from_str_radix(&self.line().await, 16).unwrap();
        if size == 0 {
            assert_eq!(self.line().await, "");
            return None;
        }
        let data = self.bytes(size).await;
        assert_eq!(self.line().await, "");
        Some(data)
    }

    async fn answer(&mut self) -> Answer {
        let mut answer = self.head().await;
        if let Some(len) = answer.header("content-length") {
            answer.body = self.bytes(len.parse().unwrap()).await;
        } else if answer.header("transfer-encoding") == Some("chunked") {
            while let Some(chunk) = self.chunk().await {
                answer.body.push_str(&chunk);
            }
        }
        answer
    }

    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }

    /// Reads whatever comes until the server closes the connection.
    async fn until_closed(&mut self) {
        while self.fill().await {}
    }
}

const ECHO: &str = "POST /echo?q=1 HTTP/1.1\r\nHost: t\r\nX-Test: a\r\nContent-Length: 5\r\n\r\nhello";

#[tokio::test]
async fn plain_requests_are_served_in_order_on_one_kept_alive_connection() {
    let server = start().await;
    let mut client = Client::connect(server.addr).await;
    client.send(ECHO).await;
    let first = client.answer().await;
    assert_eq!((first.status, first.version), (200, 1));
    assert_eq!(first.body, "POST /echo?q=1 body=5 from=full x-test=a");
    assert!(first.header("date").is_some_and(|d| d.ends_with(" GMT")), "{first:?}");
    assert_eq!(first.header("connection"), None);

    // Two requests in one write (pipelining), the body of the second split
    // across writes.
    let pipelined =
        format!("{ECHO}GET /echo HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 4\r\n\r\nab");
    client.send(&pipelined).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.send("cd").await;
    assert_eq!(client.answer().await.body, "POST /echo?q=1 body=5 from=full x-test=a");
    assert_eq!(client.answer().await.body, "GET /echo body=0 from=full x-test=-");
    assert_eq!(client.answer().await.body, "POST /echo body=4 from=full x-test=-");

    let missing = {
        client.send("GET /nothing HTTP/1.1\r\n\r\n").await;
        client.answer().await
    };
    assert_eq!((missing.status, missing.body.as_str()), (404, "no such path"));
    server.shutdown.cancel();
    assert!(server.task.await.unwrap(), "idle connections do not hold up the drain");
    assert!(client.closed().await, "shutdown closes an idle kept-alive connection");
}

#[tokio::test]
async fn a_connection_that_sends_no_whole_request_within_the_idle_limit_is_closed() {
    let idle = Duration::from_millis(800);
    let server = start_with(idle).await;
    // Nothing, half a head, a head and half its body.
    for opening in ["", "POST /echo HTTP/1.1\r\nHost: t\r\n", "POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhe"] {
        let started = std::time::Instant::now();
        let mut client = Client::connect(server.addr).await;
        client.send(opening).await;
        assert!(client.closed().await, "{opening:?}: closed, without an answer");
        assert!(started.elapsed() >= idle, "{opening:?}: closed after {:?}, before the limit", started.elapsed());
    }
    // On a connection hyper serves, hyper's own limit for a slow head.
    let mut client = Client::connect(server.addr).await;
    client.send("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n").await;
    assert_eq!(client.answer().await.body, "POST /echo body=1 from=hyper x-test=-");
    client.send("GET /echo HTTP/1.1\r\n").await;
    client.until_closed().await;
    // Requests spaced under the limit keep a connection open well past it:
    // the limit counts from the last answer.
    let started = std::time::Instant::now();
    let mut client = Client::connect(server.addr).await;
    while started.elapsed() < idle * 2 {
        client.send(ECHO).await;
        assert_eq!(client.answer().await.status, 200);
        tokio::time::sleep(idle / 4).await;
    }
}

#[tokio::test]
async fn connection_close_is_honoured_and_echoed() {
    let server = start().await;
    let mut client = Client::connect(server.addr).await;
    client.send("GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    let answer = client.answer().await;
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(client.closed().await);
}

#[tokio::test]
async fn unusual_requests_are_handed_to_hyper_with_the_bytes_already_read() {
    let server = start().await;

    // A chunked request body, after a plain request on the same connection.
    let mut client = Client::connect(server.addr).await;
    client.send(ECHO).await;
    assert!(client.answer().await.body.ends_with("from=full x-test=a"));
    client.send("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").await;
    assert_eq!(client.answer().await.body, "POST /echo body=5 from=hyper x-test=-");
    // hyper keeps serving the connection.
    client.send(ECHO).await;
    assert_eq!(client.answer().await.body, "POST /echo?q=1 body=5 from=hyper x-test=a");

    // Expect: 100-continue gets its interim answer.
    let mut client = Client::connect(server.addr).await;
    client.send("POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n").await;
    assert_eq!(client.head().await.status, 100);
    client.send("xyz").await;
    assert_eq!(client.answer().await.body, "POST /echo body=3 from=hyper x-test=-");

    // HTTP/1.0.
    let mut client = Client::connect(server.addr).await;
    client.send("GET /echo HTTP/1.0\r\n\r\n").await;
    let answer = client.answer().await;
    assert_eq!((answer.version, answer.body.as_str()), (0, "GET /echo body=0 from=hyper x-test=-"));

    // A body larger than what is read up front, sent slowly.
    let mut client = Client::connect(server.addr).await;
    let size = server::MAX_FAST_BODY + 1;
    client.send(&format!("POST /echo HTTP/1.1\r\nContent-Length: {size}\r\n\r\n")).await;
    client.send(&"a".repeat(size)).await;
    assert_eq!(client.answer().await.body, format!("POST /echo body={size} from=hyper x-test=-"));

    // A target the parser takes but the URI type refuses: hyper decides (400).
    let mut client = Client::connect(server.addr).await;
    client.send("GET /a<b HTTP/1.1\r\n\r\n").await;
    assert_eq!(client.answer().await.status, 400);

    // Garbage: hyper's own 400, then the connection is closed.
    let mut client = Client::connect(server.addr).await;
    client.send("GET /echo HTTP/1.1\r\nBad Header: x\r\n\r\n").await;
    assert_eq!(client.answer().await.status, 400);
    assert!(client.closed().await);

    // A head longer than what is read here: hyper's limits apply.
    let mut client = Client::connect(server.addr).await;
    client.send(&format!("GET /echo HTTP/1.1\r\nX-Test: {}\r\n\r\n", "b".repeat(70 * 1024))).await;
    assert!(client.answer().await.body.starts_with("GET /echo body=0 from=hyper x-test=bbb"));
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served_by_hyper() {
    let server = start().await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::post("http://t/echo").header("x-test", "h2").body(full("four".as_bytes().to_vec())).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "POST /echo body=4 from=hyper x-test=h2");
}

#[tokio::test]
async fn a_streamed_body_is_chunked_and_each_chunk_is_sent_when_it_is_ready() {
    let server = start().await;
    let (tx, rx) = mpsc::channel(4);
    *server.handler.chunks.lock().unwrap() = Some(rx);
    let mut client = Client::connect(server.addr).await;
    client.send("GET /stream HTTP/1.1\r\n\r\n").await;
    tx.send("data: one\n\n").await.unwrap();
    let head = client.head().await;
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(client.chunk().await.as_deref(), Some("data: one\n\n"));
    // The next chunk has not been produced yet: nothing more is on the wire.
    assert!(tokio::time::timeout(Duration::from_millis(100), client.fill()).await.is_err());
    tx.send("data: two\n\n").await.unwrap();
    assert_eq!(client.chunk().await.as_deref(), Some("data: two\n\n"));
    drop(tx);
    assert_eq!(client.chunk().await, None);
    // The connection is still usable.
    client.send(ECHO).await;
    assert_eq!(client.answer().await.status, 200);
}

#[tokio::test]
async fn a_client_that_goes_away_drops_its_request() {
    let server = start().await;
    let (tx, rx) = oneshot::channel();
    *server.handler.dropped.lock().unwrap() = Some(tx);
    let mut client = Client::connect(server.addr).await;
    client.send("GET /pending HTTP/1.1\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(client);
    tokio::time::timeout(Duration::from_secs(2), rx).await.expect("dropped within 2 s").unwrap();
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_closes_its_connection() {
    let server = start().await;
    let mut client = Client::connect(server.addr).await;
    client.send("GET /slow HTTP/1.1\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown.cancel();
    let answer = client.answer().await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "slow done"));
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(client.closed().await);
    assert!(server.task.await.unwrap());
    assert!(TcpStream::connect(server.addr).await.is_err(), "no longer accepting");
}
