//! The upstream HTTP/1.1 client against raw servers on loopback: framing,
//! connection reuse, connections the server closed while idle, cancellation
//! and TLS.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use proxy::client::{Client, ClientError, Headers, Target};
use proxy::egress::Egress;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What a test server does with one request on a connection: the bytes to
/// answer with, and whether to close the connection afterwards.
type Script = Arc<dyn Fn(usize, &str) -> (Vec<Vec<u8>>, bool) + Send + Sync>;

struct Server {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Each request head as received.
    heads: mpsc::UnboundedReceiver<String>,
    /// A message per connection that ended (the client closed it).
    closed: mpsc::UnboundedReceiver<usize>,
}

impl Server {
    async fn start(script: Script) -> Server {
        Self::start_with(script, None).await
    }

    async fn start_with(script: Script, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (heads_tx, heads) = mpsc::unbounded_channel();
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let number = count.fetch_add(1, Ordering::SeqCst);
                let (script, heads, closed, tls) = (script.clone(), heads_tx.clone(), closed_tx.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => serve(acceptor.accept(tcp).await.unwrap(), number, script, heads).await,
                        None => serve(tcp, number, script, heads).await,
                    }
                    let _ = closed.send(number);
                });
            }
        });
        Server { addr, accepted, heads, closed }
    }

    fn uri(&self, scheme: &str) -> Uri {
        format!("{scheme}://{}/v1/chat/completions", self.addr).parse().unwrap()
    }

    /// The server's address as a target (the client's pool is keyed by it).
    fn target(&self, scheme: &str) -> Target {
        Target::new(&self.uri(scheme), &HeaderMap::new(), &[]).unwrap()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Reads requests (head, then `content-length` bytes of body) and answers
/// each as the script says, until the client closes or the script asks to.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    connection: usize,
    script: Script,
    heads: mpsc::UnboundedSender<String>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut piece = [0u8; 4096];
            match io.read(&mut piece).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&piece[..n]),
            }
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let length: usize =
            head.lines().find_map(|l| l.strip_prefix("content-length: ")).map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head_end + length {
            let mut piece = [0u8; 4096];
            match io.read(&mut piece).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&piece[..n]),
            }
        }
        let body = String::from_utf8(buf[head_end..head_end + length].to_vec()).unwrap();
        buf.drain(..head_end + length);
        let _ = heads.send(format!("{head}{body}"));
        let (pieces, close) = script(connection, &body);
        for piece in pieces {
            if io.write_all(&piece).await.is_err() {
                return;
            }
            io.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if close {
            let _ = io.shutdown().await;
            return;
        }
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

fn headers() -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer sk-test"));
    map.insert(http::header::ACCEPT, HeaderValue::from_static("text/plain"));
    map
}

async fn post(client: &Client, uri: &Uri, body: &str) -> Result<(u16, Headers, Vec<u8>), ClientError> {
    let accept = HeaderValue::from_static("application/json");
    let extra = [(http::header::ACCEPT, &accept), (HeaderName::from_static("x-request-id"), &accept)];
    let target = Target::new(uri, &headers(), &[http::header::ACCEPT]).unwrap();
    let response = client.post(&target, &extra, body.as_bytes()).await?;
    let bytes = response.body.bytes(usize::MAX).await?;
    Ok((response.status, response.headers, bytes.to_vec()))
}

#[tokio::test]
async fn sequential_requests_share_one_connection_and_send_the_exact_head() {
    let mut server = Server::start(Arc::new(|_, body| (vec![ok(&format!("{{\"echo\":{body}}}"))], false))).await;
    let client = Client::new();
    let uri = server.uri("http");
    for i in 0..5 {
        let (status, headers, body) = post(&client, &uri, &format!("{i}")).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(headers.get_str("Content-Type"), Some("application/json"));
        assert_eq!(body, format!("{{\"echo\":{i}}}").as_bytes());
    }
    assert_eq!(server.accepted(), 1, "one connection for five sequential requests");
    assert_eq!(client.idle_connections(&server.target("http")), 1);
    let head = server.heads.recv().await.unwrap();
    assert_eq!(
        head,
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer sk-test\r\n\
             accept: application/json\r\nx-request-id: application/json\r\ncontent-length: 1\r\n\r\n0",
            server.addr
        )
    );
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_reused() {
    // The server answers and then closes every connection without saying so.
    let mut server = Server::start(Arc::new(|_, _| (vec![ok("{}")], true))).await;
    let client = Client::new();
    let uri = server.uri("http");
    post(&client, &uri, "1").await.unwrap();
    // The close reaches the client while the connection idles in its pool.
    assert_eq!(server.closed.recv().await, Some(0));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, _, _) = post(&client, &uri, "2").await.expect("a fresh connection, not the closed one");
    assert_eq!(status, 200);
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn idle_time_counts_from_the_end_of_the_last_answer_not_its_start() {
    // An answer that takes about 300 ms to arrive, byte by byte.
    let server = Server::start(Arc::new(|_, _| {
        let mut pieces = vec![b"HTTP/1.1 200 OK\r\ncontent-length: 60\r\n\r\n".to_vec()];
        pieces.extend((0..60).map(|_| b"x".to_vec()));
        (pieces, false)
    }))
    .await;
    let client = Client::new().with_idle_timeout(Duration::from_millis(200));
    let target = server.target("http");
    assert_eq!(client.post(&target, &[], b"{}").await.unwrap().body.bytes(usize::MAX).await.unwrap().len(), 60);
    // Idle for a moment, much less than the timeout: the connection is reused.
    client.post(&target, &[], b"{}").await.unwrap().body.bytes(usize::MAX).await.unwrap();
    assert_eq!(server.accepted(), 1, "a connection whose request outlasted the idle timeout was dropped");
    // Idle for longer than the timeout: a fresh connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.post(&target, &[], b"{}").await.unwrap().body.bytes(usize::MAX).await.unwrap();
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn connection_close_and_bodies_until_close_are_not_pooled() {
    let server = Server::start(Arc::new(|connection, _| {
        if connection == 0 {
            // Header names and tokens in any case.
            (vec![b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 2\r\n\r\nhi".to_vec()], false)
        } else {
            (vec![b"HTTP/1.1 200 OK\r\n\r\nuntil".to_vec(), b" the end".to_vec()], true)
        }
    }))
    .await;
    let client = Client::new();
    let uri = server.uri("http");
    assert_eq!(post(&client, &uri, "").await.unwrap().2, b"hi");
    assert_eq!(client.idle_connections(&server.target("http")), 0);
    assert_eq!(post(&client, &uri, "").await.unwrap().2, b"until the end");
    assert_eq!(client.idle_connections(&server.target("http")), 0);
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn chunked_bodies_arrive_piece_by_piece_and_the_connection_is_reused() {
    let server = Server::start(Arc::new(|_, _| {
        let pieces = [
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: Chunked\r\n\r\n",
            "d\r\ndata: first\n\n\r\n",
            "e\r\ndata: second\n\n\r\n",
            "0\r\n\r\n",
        ];
        (pieces.iter().map(|p| p.as_bytes().to_vec()).collect(), false)
    }))
    .await;
    let client = Client::new();
    let uri = server.uri("http");
    for _ in 0..2 {
        let mut response = client.post(&Target::new(&uri, &headers(), &[]).unwrap(), &[], b"{}").await.unwrap();
        let mut pieces = Vec::new();
        while let Some(piece) = response.body.chunk().await {
            pieces.push(String::from_utf8(piece.unwrap().to_vec()).unwrap());
        }
        assert_eq!(pieces, ["data: first\n\n", "data: second\n\n"]);
    }
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn dropping_a_body_before_its_end_closes_the_connection() {
    let mut server = Server::start(Arc::new(|_, _| {
        let mut pieces = vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec()];
        pieces.extend((0..200).map(|_| b"6\r\nchunk\n\r\n".to_vec()));
        (pieces, false)
    }))
    .await;
    let client = Client::new();
    let mut response =
        client.post(&Target::new(&server.uri("http"), &headers(), &[]).unwrap(), &[], b"{}").await.unwrap();
    assert_eq!(response.body.chunk().await.unwrap().unwrap().as_ref(), b"chunk\n");
    drop(response);
    let closed = tokio::time::timeout(Duration::from_secs(5), server.closed.recv()).await;
    assert_eq!(closed.unwrap(), Some(0), "the server sees the connection close");
    assert_eq!(client.idle_connections(&server.target("http")), 0);
}

#[tokio::test]
async fn interim_answers_are_skipped_and_a_cut_body_is_an_error() {
    let server = Server::start(Arc::new(|connection, _| match connection {
        0 => {
            (vec![b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok".to_vec()], false)
        }
        _ => (vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort".to_vec()], true),
    }))
    .await;
    let client = Client::new();
    let uri = server.uri("http");
    let (status, _, body) = post(&client, &uri, "").await.unwrap();
    assert_eq!((status, body.as_slice()), (201, &b"ok"[..]));
    // The second connection: the body stops 5 bytes short.
    let fresh = Client::new();
    match post(&fresh, &uri, "").await {
        Err(ClientError::Broken(message)) => assert!(message.contains("inside the body"), "{message}"),
        other => panic!("want a broken body, got {other:?}"),
    }
}

#[tokio::test]
async fn no_listener_and_garbage_answers_are_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::new();
    let uri: Uri = format!("http://{addr}/v1/chat/completions").parse().unwrap();
    match post(&client, &uri, "").await {
        Err(ClientError::Connect(message)) => assert!(message.contains(&addr.to_string()), "{message}"),
        other => panic!("want a connect error, got {other:?}"),
    }
    let server = Server::start(Arc::new(|_, _| (vec![b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()], true))).await;
    match post(&client, &server.uri("http"), "").await {
        Err(ClientError::Protocol(message)) => assert!(message.contains("not valid HTTP/1"), "{message}"),
        other => panic!("want a protocol error, got {other:?}"),
    }
}

fn tls_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls").join(name)
}

/// An echoing HTTPS server with the certificate in `cert.pem` and `cert.key`.
async fn tls_server(cert: &str) -> Server {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs =
        CertificateDer::pem_file_iter(tls_fixture(&format!("{cert}.pem"))).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(tls_fixture(&format!("{cert}.key"))).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    Server::start_with(Arc::new(|_, body| (vec![ok(body)], false)), Some(acceptor)).await
}

/// A client that trusts the CA in `ca` only.
fn trusting_client(ca: &str) -> Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(tls_fixture(ca)).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    Client::with_roots(roots)
}

#[tokio::test]
async fn https_upstreams_are_verified_and_their_connections_reused() {
    let server = tls_server("server").await;
    let uri = server.uri("https");
    let trusting = trusting_client("ca.pem");
    for i in 0..3 {
        // Idle TLS connections may hold a session ticket the server sent
        // after the handshake: still reusable.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            post(&trusting, &uri, &format!("{{\"n\":{i}}}")).await.unwrap().2,
            format!("{{\"n\":{i}}}").as_bytes()
        );
    }
    assert_eq!(server.accepted(), 1);

    // The webpki roots do not know the test CA.
    match post(&Client::new(), &uri, "{}").await {
        Err(ClientError::Connect(message)) => assert!(message.contains("TLS handshake"), "{message}"),
        other => panic!("want a TLS failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_read_up_to_its_last_event_can_release_its_connection() {
    let server = Server::start(Arc::new(|_, body| {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let rest = if body == "unfinished" {
            // An event, and the stream goes on.
            "5\r\nhello\r\n"
        } else {
            // The last event and the end of the body arrive together, as they usually do.
            "e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
        };
        (vec![head.as_bytes().to_vec(), rest.as_bytes().to_vec()], false)
    }))
    .await;
    let client = Client::new();
    let uri = server.uri("http");
    let target = Target::new(&uri, &headers(), &[]).unwrap();
    let mut response = client.post(&target, &[], b"{}").await.unwrap();
    assert_eq!(response.body.chunk().await.unwrap().unwrap().as_ref(), b"data: [DONE]\n\n");
    // Not read to its end, but all of it is in: settling pools the connection.
    response.body.settle();
    assert_eq!(client.idle_connections(&server.target("http")), 1);
    drop(response);
    assert_eq!(client.idle_connections(&server.target("http")), 1);
    client.post(&target, &[], b"{}").await.unwrap().body.bytes(usize::MAX).await.unwrap();
    assert_eq!(server.accepted(), 1);

    // A stream with data still to come is left alone, however much of it has arrived.
    let mut response = client.post(&target, &[], b"unfinished").await.unwrap();
    response.body.settle();
    assert_eq!(client.idle_connections(&server.target("http")), 0, "the connection is in use");
    assert_eq!(response.body.chunk().await.unwrap().unwrap().as_ref(), b"hello");
    response.body.settle();
    assert_eq!(client.idle_connections(&server.target("http")), 0, "the connection is in use");
}

/// An HTTP proxy that opens `CONNECT` tunnels to `upstream.test:PORT` on
/// 127.0.0.1 (or refuses them with `refuse`); sends each `CONNECT` head it
/// receives.
async fn connect_proxy(refuse: Option<&'static str>) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads_tx, heads) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let heads = heads_tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8(head).unwrap();
                let port = head.split(' ').nth(1).unwrap().strip_prefix("upstream.test:").unwrap().to_owned();
                heads.send(head).unwrap();
                if let Some(answer) = refuse {
                    client.write_all(answer.as_bytes()).await.unwrap();
                    return;
                }
                let mut upstream = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await.unwrap();
                client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, heads)
}

fn via_tunnel(server: &Server) -> Uri {
    format!("https://upstream.test:{}/v1/chat/completions", server.addr.port()).parse().unwrap()
}

#[tokio::test]
async fn https_upstreams_are_reached_through_the_https_proxy_tunnel_unless_they_are_direct() {
    let server = tls_server("tunnel").await;
    let (proxy, mut heads) = connect_proxy(None).await;
    let egress = Egress::parse(Some(("HTTPS_PROXY", &format!("http://user:s%40cret@{proxy}"))), None).unwrap();
    let client = trusting_client("tunnel-ca.pem").with_egress(egress);
    for i in 0..2 {
        assert_eq!(post(&client, &via_tunnel(&server), &format!("{i}")).await.unwrap().2, format!("{i}").as_bytes());
    }
    let head = heads.recv().await.unwrap();
    let target = format!("upstream.test:{}", server.addr.port());
    // "user:s@cret" in base64.
    let authorization = "proxy-authorization: Basic dXNlcjpzQGNyZXQ=";
    assert_eq!(head, format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n{authorization}\r\n\r\n"));
    assert!(heads.try_recv().is_err(), "one tunnel, reused for the second request");
    assert_eq!(server.accepted(), 1);

    // Loopback upstreams, and plain http:// ones, are called directly.
    let egress = Egress::parse(Some(("HTTPS_PROXY", &proxy.to_string())), None).unwrap();
    let loopback = tls_server("server").await;
    let client = trusting_client("ca.pem").with_egress(egress.clone());
    assert_eq!(post(&client, &loopback.uri("https"), "direct").await.unwrap().2, b"direct");
    let plain = Server::start(Arc::new(|_, body| (vec![ok(body)], false))).await;
    assert_eq!(post(&Client::new().with_egress(egress), &plain.uri("http"), "plain").await.unwrap().2, b"plain");
    assert!(heads.try_recv().is_err(), "no tunnel for either");
}

#[tokio::test]
async fn a_refused_tunnel_is_a_connect_error_that_names_the_proxy_but_not_its_password() {
    let server = tls_server("tunnel").await;
    let (proxy, mut heads) =
        connect_proxy(Some("HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")).await;
    let egress = Egress::parse(Some(("HTTPS_PROXY", &format!("http://user:hunter2@{proxy}"))), None).unwrap();
    match post(&trusting_client("tunnel-ca.pem").with_egress(egress), &via_tunnel(&server), "{}").await {
        Err(ClientError::Connect(message)) => {
            assert!(message.contains(&proxy.to_string()) && message.contains("407"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        other => panic!("want a connect error, got {other:?}"),
    }
    assert!(heads.recv().await.unwrap().starts_with("CONNECT upstream.test:"));
    assert_eq!(server.accepted(), 0);
}

#[tokio::test]
async fn an_answer_longer_than_the_limit_is_refused_and_its_connection_closed() {
    let server = Server::start(Arc::new(|connection, _| {
        let answer: &[u8] = if connection == 1 {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world"
        };
        (vec![answer.to_vec()], false)
    }))
    .await;
    let client = Client::new();
    let target = server.target("http");
    // A declared length over the limit, then a chunked body that grows past it.
    for _ in 0..2 {
        let response = client.post(&target, &[], b"{}").await.unwrap();
        match response.body.bytes(10).await {
            Err(ClientError::Broken(message)) => assert!(message.contains("longer than 10 bytes"), "{message}"),
            other => panic!("want the answer refused, got {other:?}"),
        }
        assert_eq!(client.idle_connections(&target), 0, "not pooled");
    }
    let response = client.post(&target, &[], b"{}").await.unwrap();
    assert_eq!(response.body.bytes(11).await.unwrap().as_ref(), b"hello world", "the limit itself is allowed");
    assert_eq!(server.accepted(), 3);
}
