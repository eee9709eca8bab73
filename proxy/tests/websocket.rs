//! `GET /v1/chat/ws`: chat streams over a WebSocket, with a real WebSocket
//! client (and, where the client library would hide it, raw frames) over
//! loopback against the fake OpenAI upstream.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proxy::testing::FakeOpenAi;
use serde_json::{Value, json};
use support::{Proxy, eventually, http_provider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const ROUTES: &str = r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets:
  - {name: openai, provider: oai, model: gpt-4o-mini}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: endless}
spec:
  targets:
  - {name: forever, provider: oai, model: endless}
"#;

async fn start(ping: Duration) -> (FakeOpenAi, Proxy) {
    let fake = FakeOpenAi::start().await;
    let manifests = http_provider("oai", &fake.base_url(), None) + ROUTES;
    let proxy = Proxy::start_with(&[("all.yaml", &manifests)], |args| args.ws_ping_interval = ping).await;
    (fake, proxy)
}

async fn connect(proxy: &Proxy) -> Socket {
    let url = format!("{}/v1/chat/ws", proxy.base.replace("http://", "ws://"));
    let (socket, response) = connect_async(url).await.unwrap();
    assert_eq!(response.status(), 101);
    socket
}

async fn send(socket: &mut Socket, frame: Value) {
    socket.send(Message::text(frame.to_string())).await.unwrap();
}

/// The next JSON text frame (pings are answered by the library).
async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Every frame of one request up to its `done` or `error`.
async fn until_end(socket: &mut Socket) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = next(socket).await;
        let end = frame["type"] == "done" || frame["type"] == "error";
        frames.push(frame);
        if end {
            return frames;
        }
    }
}

fn text(frames: &[Value]) -> String {
    frames.iter().filter_map(|f| f["chunk"]["choices"][0]["delta"]["content"].as_str()).collect()
}

fn chat(id: Value, model: &str) -> Value {
    json!({"id": id, "model": model, "messages": [{"role": "user", "content": "say hello"}]})
}

#[tokio::test]
async fn several_requests_on_one_connection_each_get_their_chunks_and_an_end_frame() {
    let (fake, proxy) = start(Duration::from_secs(20)).await;
    let mut socket = connect(&proxy).await;

    send(&mut socket, chat(json!("first"), "chat")).await;
    let frames = until_end(&mut socket).await;
    assert_eq!(frames[0]["type"], "start", "{frames:?}");
    assert_eq!(frames[0]["target"], "openai");
    assert!(frames[0]["request_id"].as_str().unwrap().starts_with("req_"));
    assert!(frames.iter().all(|f| f["id"] == "first"));
    let chunks: Vec<&Value> = frames.iter().filter(|f| f["type"] == "chunk").map(|f| &f["chunk"]).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"), "{frames:?}");
    assert!(text(&frames).contains("gpt-4o-mini"), "{frames:?}");
    assert_eq!(frames.last().unwrap()["type"], "done");
    assert_eq!(fake.requests()[0].body["stream"], true, "always streamed upstream");
    assert!(fake.requests()[0].body.get("id").is_none(), "the correlation id stays in the proxy");

    // Two at once, one without an id: frames interleave, told apart by id.
    send(&mut socket, chat(json!(7), "chat")).await;
    send(&mut socket, json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]})).await;
    let mut by_id: std::collections::HashMap<String, Vec<Value>> = Default::default();
    let mut ended = 0;
    while ended < 2 {
        let frame = next(&mut socket).await;
        ended += usize::from(frame["type"] == "done");
        by_id.entry(frame["id"].as_str().unwrap().to_owned()).or_default().push(frame);
    }
    assert_eq!(by_id.len(), 2, "{by_id:?}");
    for frames in by_id.values() {
        assert!(text(frames).contains("gpt-4o-mini"), "{frames:?}");
        assert_eq!(frames.last().unwrap()["type"], "done");
    }
    assert!(by_id.contains_key("7") && by_id.contains_key("1"), "{:?}", by_id.keys());

    // An error ends its request only; the connection stays usable.
    send(&mut socket, chat(json!("bad"), "no-such-alias")).await;
    let error = next(&mut socket).await;
    assert_eq!(
        (error["type"].as_str(), error["id"].as_str(), error["status"].as_u64()),
        (Some("error"), Some("bad"), Some(404))
    );
    assert_eq!(error["error"]["code"], "model_not_found");
    socket.send(Message::text("not json")).await.unwrap();
    let error = next(&mut socket).await;
    assert_eq!((error["id"].clone(), error["status"].as_u64()), (Value::Null, Some(400)));
    send(&mut socket, chat(json!("again"), "chat")).await;
    assert_eq!(until_end(&mut socket).await.last().unwrap()["type"], "done");

    // The clean close: the proxy answers the client's close frame.
    socket.close(None).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap();
    assert!(matches!(reply, Some(Ok(Message::Close(_))) | None), "{reply:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn the_proxy_pings_and_a_client_that_answers_stays_connected() {
    let (_fake, proxy) = start(Duration::from_millis(100)).await;
    let mut socket = connect(&proxy).await;
    let mut pings = 0;
    // Well past two intervals: the library's automatic pongs keep it open.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(message) = tokio::time::timeout_at(deadline, socket.next()).await {
        match message.unwrap().unwrap() {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert!(pings >= 3, "only {pings} pings");
    // The client may ping too.
    socket.send(Message::Ping("are you there".into())).await.unwrap();
    loop {
        match socket.next().await.unwrap().unwrap() {
            Message::Pong(payload) => break assert_eq!(&payload[..], b"are you there"),
            Message::Ping(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
    send(&mut socket, chat(json!("x"), "chat")).await;
    assert_eq!(until_end(&mut socket).await.last().unwrap()["type"], "done");
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_with_going_away() {
    let (_fake, proxy) = start(Duration::from_millis(100)).await;
    let mut tcp = TcpStream::connect(proxy.base.trim_start_matches("http://")).await.unwrap();
    let handshake = "GET /v1/chat/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    // Read what the proxy sends, never answering, until a close frame arrives.
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let (head_end, frames) = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the connection closed without a close frame: {received:?}");
        received.extend_from_slice(&buf[..n]);
        let Some(head_end) = received.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else { continue };
        // Server frames are unmasked: opcode byte, 7-bit length, payload.
        let mut frames = Vec::new();
        let mut rest = &received[head_end..];
        while rest.len() >= 2 && rest.len() >= 2 + usize::from(rest[1] & 0x7f) {
            let (opcode, len) = (rest[0] & 0x0f, usize::from(rest[1] & 0x7f));
            frames.push((opcode, rest[2..2 + len].to_vec()));
            rest = &rest[2 + len..];
        }
        if frames.iter().any(|(op, _)| *op == 0x8) {
            break (head_end, frames);
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // RFC 6455's sample key and its accept value.
    assert!(head.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    let (close, pings) = frames.split_last().unwrap();
    assert!(pings.iter().all(|(op, _)| *op == 0x9), "pings, then a close: {frames:?}");
    let close = &close.1;
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1001, "going away");
    assert!(String::from_utf8_lossy(&close[2..]).contains("idle"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_that_goes_away_or_cancels_closes_the_upstream_stream() {
    let (fake, proxy) = start(Duration::from_secs(20)).await;
    let mut socket = connect(&proxy).await;
    send(&mut socket, chat(json!("a"), "endless")).await;
    while next(&mut socket).await["type"] != "chunk" {}
    send(&mut socket, json!({"type": "cancel", "id": "a"})).await;
    let frame = loop {
        let frame = next(&mut socket).await;
        if frame["type"] != "chunk" {
            break frame;
        }
    };
    assert_eq!((frame["type"].as_str(), frame["error"]["code"].as_str()), (Some("error"), Some("cancelled")));
    assert!(eventually(Duration::from_secs(5), || fake.cancelled() == 1).await, "cancel did not close the upstream");

    send(&mut socket, chat(json!("b"), "endless")).await;
    while next(&mut socket).await["type"] != "chunk" {}
    drop(socket);
    assert!(
        eventually(Duration::from_secs(5), || fake.cancelled() == 2).await,
        "going away did not close the upstream"
    );
    assert!(eventually(Duration::from_secs(5), || fake.in_flight() == 0).await);
    proxy.stop().await;
}

#[tokio::test]
async fn a_plain_get_is_told_to_upgrade_and_shutdown_closes_open_sockets() {
    let (_fake, proxy) = start(Duration::from_secs(20)).await;
    let response = proxy.client.get(format!("{}/v1/chat/ws", proxy.base)).send().await.unwrap();
    assert_eq!(response.status(), 426);
    assert_eq!(response.headers()["sec-websocket-version"], "13");
    assert!(response.text().await.unwrap().contains("WebSocket"));

    let mut socket = connect(&proxy).await;
    let stopping = tokio::spawn(proxy.stop());
    let message = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap().unwrap().unwrap();
    let Message::Close(Some(close)) = message else { panic!("expected a close frame, got {message:?}") };
    assert_eq!(close.code, CloseCode::Away);
    stopping.await.unwrap();
}
