//! `GET /v1/chat/ws`: chat completions streamed over a WebSocket, for
//! browser clients that cannot read SSE from a POST.
//!
//! # Protocol
//!
//! Every frame is a JSON text frame.
//!
//! Client → proxy:
//!
//! - a chat request: the body of `POST /v1/chat/completions`, plus an
//!   optional `"id"` (a string or number the client picks to correlate the
//!   answer; the proxy numbers requests `"1"`, `"2"`, … when it is absent).
//!   The request is always streamed (`stream` is set to `true`);
//!   `stream_options` is honoured as on the HTTP endpoint.
//! - `{"type": "cancel", "id": "…"}`: stop that request (its upstream call is
//!   closed); answered with its `error` frame, code `cancelled`.
//!
//! Proxy → client, each with the request's `id`:
//!
//! - `{"type": "start", "id", "request_id", "route", "target"}`: the request
//!   was committed to a target (the HTTP endpoint's `x-request-id`,
//!   `x-switchyard-route` and `x-switchyard-target`);
//! - `{"type": "chunk", "id", "chunk": {…}}`: one `chat.completion.chunk`,
//!   exactly the JSON an SSE `data:` line carries;
//! - `{"type": "done", "id"}`: the answer is complete (SSE's `[DONE]`);
//! - `{"type": "error", "id", "status", "error": {message, type, param, code}}`:
//!   the request failed and ends here; `status` is the HTTP status the
//!   endpoint would have answered, or `null` for a failure after the stream
//!   started. A frame the proxy cannot read at all gets an `error` with
//!   `"id": null`.
//!
//! Every request ends with exactly one `done` or `error` frame. Requests on
//! one connection run concurrently (up to [`MAX_IN_FLIGHT`]); their frames
//! interleave and are told apart by `id`, which must be unique among the
//! connection's requests in flight.
//!
//! # Keepalive and closing
//!
//! The proxy pings every `--ws-ping-interval` (default 20 s) and closes the
//! connection (code 1001) when it heard nothing, not even a pong, for two
//! intervals; it answers the client's pings. When the client closes (or the
//! connection drops), its requests in flight are cancelled and their upstream
//! connections closed. On shutdown the proxy refuses new requests, lets the
//! running ones finish, then closes with 1001.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;

use crate::chat::{self, Context, MAX_BODY_BYTES};
use crate::errors::ProxyError;
use crate::request::Operation;
use crate::server::{self, Body, RequestBody, full};
use crate::sse;

/// The endpoint's path.
pub const PATH: &str = "/v1/chat/ws";

/// Requests one connection may have in flight at once.
pub const MAX_IN_FLIGHT: usize = 16;

/// How long a closing handshake may take before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoint's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often the proxy pings; two intervals of silence close the connection.
    pub ping_interval: Duration,
    /// Cancelled when the process shuts down.
    pub shutdown: CancellationToken,
}

/// Answers the upgrade request and runs the connection in its own task.
pub fn accept(
    ctx: &Arc<Context>,
    settings: &Settings,
    mut request: Request<RequestBody>,
    request_id: &HeaderValue,
) -> Response<Body> {
    let headers = request.headers();
    let has = |name, token| server::has_token(headers, name, token);
    if request.method() != Method::GET {
        return ProxyError::MethodNotAllowed.into_response(request_id);
    }
    let key = headers.get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes()));
    let (true, true, Some(key)) =
        (has(http::header::UPGRADE, "websocket"), has(http::header::CONNECTION, "upgrade"), key)
    else {
        return upgrade_required(request_id);
    };
    if headers.get("sec-websocket-version").is_none_or(|v| v != "13") {
        return upgrade_required(request_id);
    }
    let headers = request.headers().clone();
    let upgrade = hyper::upgrade::on(&mut request);
    let ctx = ctx.clone();
    let settings = settings.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default().max_message_size(Some(MAX_BODY_BYTES));
                let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
                Connection::new(ctx, settings, headers).run(socket).await;
            }
            Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
        }
    });
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let out = response.headers_mut();
    out.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    out.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::try_from(key) {
        out.insert("sec-websocket-accept", accept);
    }
    out.insert(crate::server::X_REQUEST_ID, request_id.clone());
    response
}

/// 426 with a message saying how to connect.
fn upgrade_required(request_id: &HeaderValue) -> Response<Body> {
    let body = json!({"error": {
        "message": format!("`{PATH}` is a WebSocket endpoint: connect with a WebSocket client \
                            (`Upgrade: websocket`, `Sec-WebSocket-Version: 13`), or POST to /v1/chat/completions for SSE"),
        "type": "invalid_request_error", "param": null, "code": "websocket_required"}});
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = StatusCode::UPGRADE_REQUIRED;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
    headers.insert(crate::server::X_REQUEST_ID, request_id.clone());
    response
}

/// The `error` frame of a request.
fn error_frame(id: &Value, status: Option<u16>, error: Value) -> Message {
    Message::text(json!({"type": "error", "id": id, "status": status, "error": error}).to_string())
}

/// An `error` frame in OpenAI's error object shape.
fn simple_error(id: &Value, status: u16, message: &str, code: &str) -> Message {
    error_frame(
        id,
        Some(status),
        json!({"message": message, "type": "invalid_request_error", "param": null, "code": code}),
    )
}

/// One WebSocket connection.
struct Connection {
    ctx: Arc<Context>,
    settings: Settings,
    /// The upgrade request's headers (sticky-session headers apply to every request).
    headers: Arc<HeaderMap>,
    /// Frames from the request tasks to the socket.
    frames: mpsc::Sender<Message>,
    outbox: mpsc::Receiver<Message>,
    tasks: JoinSet<()>,
    /// Client id → its task, for requests in flight.
    running: HashMap<String, AbortHandle>,
    /// Task id → client id.
    ids: HashMap<tokio::task::Id, String>,
    next_id: u64,
    draining: bool,
}

/// Why the connection loop stopped.
enum End {
    /// The client closed or went away: nothing more to send.
    ClientGone,
    /// The proxy closes: send a close frame and wait for the client's.
    Close(&'static str),
}

impl Connection {
    fn new(ctx: Arc<Context>, settings: Settings, headers: HeaderMap) -> Self {
        let (frames, outbox) = mpsc::channel(64);
        Self {
            ctx,
            settings,
            headers: Arc::new(headers),
            frames,
            outbox,
            tasks: JoinSet::new(),
            running: HashMap::new(),
            ids: HashMap::new(),
            next_id: 0,
            draining: false,
        }
    }

    async fn run<S>(mut self, socket: WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut sink, mut stream) = socket.split();
        let interval = self.settings.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut heard = Instant::now();
        let shutdown = self.settings.shutdown.clone();
        let end = loop {
            if self.draining && self.running.is_empty() {
                break End::Close("the proxy is shutting down");
            }
            tokio::select! {
                message = stream.next() => {
                    heard = Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => {
                            if let Some(reply) = self.on_request(text.as_str())
                                && sink.send(reply).await.is_err()
                            {
                                break End::ClientGone;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            let reply = simple_error(&Value::Null, 400, "send requests as JSON text frames, not binary", "binary_frame");
                            if sink.send(reply).await.is_err() {
                                break End::ClientGone;
                            }
                        }
                        // Pongs to our pings only refresh `heard`; pings are answered by the library.
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                        // After a close frame the library answers it and the stream ends.
                        Some(Ok(Message::Close(_))) => self.cancel_all(),
                        None | Some(Err(_)) => break End::ClientGone,
                    }
                }
                Some(frame) = self.outbox.recv() => {
                    if sink.send(frame).await.is_err() {
                        break End::ClientGone;
                    }
                }
                _ = ping.tick() => {
                    if heard.elapsed() >= interval * 2 {
                        break End::Close("idle: nothing received, not even a pong");
                    }
                    if sink.send(Message::Ping(Bytes::from_static(b"switchyard"))).await.is_err() {
                        break End::ClientGone;
                    }
                }
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    let task = match done {
                        Ok((task, ())) => task,
                        Err(error) => error.id(),
                    };
                    if let Some(id) = self.ids.remove(&task) {
                        self.running.remove(&id);
                    }
                }
                () = shutdown.cancelled(), if !self.draining => self.draining = true,
            }
        };
        // Dropping the tasks cancels their requests and closes their upstream connections.
        self.cancel_all();
        if let End::Close(reason) = end {
            // Frames already queued (answers that finished) go out before the close.
            while let Ok(frame) = self.outbox.try_recv() {
                if sink.send(frame).await.is_err() {
                    return;
                }
            }
            let close = CloseFrame { code: CloseCode::Away, reason: reason.into() };
            if sink.send(Message::Close(Some(close))).await.is_ok() {
                let _ =
                    tokio::time::timeout(CLOSE_TIMEOUT, async { while let Some(Ok(_)) = stream.next().await {} }).await;
            }
        }
    }

    fn cancel_all(&mut self) {
        self.tasks.abort_all();
        self.running.clear();
        self.ids.clear();
    }

    /// Starts or cancels a request; returns an immediate reply, if any.
    fn on_request(&mut self, text: &str) -> Option<Message> {
        let mut request = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(request)) => request,
            Ok(_) => {
                return Some(simple_error(
                    &Value::Null,
                    400,
                    "a frame must be a JSON object: a chat request or a cancel",
                    "invalid_frame",
                ));
            }
            Err(e) => {
                return Some(simple_error(
                    &Value::Null,
                    400,
                    &format!("the frame is not valid JSON: {e}"),
                    "invalid_frame",
                ));
            }
        };
        let id = match request.remove("id") {
            None | Some(Value::Null) => {
                self.next_id += 1;
                self.next_id.to_string()
            }
            Some(Value::String(id)) if !id.is_empty() && id.len() <= 128 => id,
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => {
                return Some(simple_error(
                    &Value::Null,
                    400,
                    "`id` must be a string of 1 to 128 characters or a number",
                    "invalid_id",
                ));
            }
        };
        let id_value = Value::String(id.clone());
        if request.get("type").and_then(Value::as_str) == Some("cancel") {
            return match self.running.remove(&id) {
                Some(task) => {
                    task.abort();
                    self.ids.retain(|_, v| *v != id);
                    Some(error_frame(
                        &id_value,
                        None,
                        json!({"message": "cancelled by the client", "type": "cancelled", "param": null, "code": "cancelled"}),
                    ))
                }
                None => Some(simple_error(&id_value, 404, &format!("no request `{id}` is in flight"), "unknown_id")),
            };
        }
        if self.draining {
            return Some(simple_error(
                &id_value,
                503,
                "the proxy is shutting down: reconnect and send the request again",
                "shutting_down",
            ));
        }
        if self.running.contains_key(&id) {
            return Some(simple_error(
                &id_value,
                409,
                &format!("`id` `{id}` is already in flight on this connection: pick a unique id"),
                "duplicate_id",
            ));
        }
        if self.running.len() >= MAX_IN_FLIGHT {
            return Some(simple_error(
                &id_value,
                429,
                &format!("this connection already has {MAX_IN_FLIGHT} requests in flight: wait for one to end"),
                "too_many_requests",
            ));
        }
        request.insert("stream".into(), Value::Bool(true));
        let body = Value::Object(request).to_string();
        let exchange = Exchange {
            ctx: self.ctx.clone(),
            headers: self.headers.clone(),
            frames: self.frames.clone(),
            id: id_value,
        };
        let task = self.tasks.spawn(exchange.run(body));
        self.ids.insert(task.id(), id.clone());
        self.running.insert(id, task);
        None
    }
}

/// One request on a connection.
struct Exchange {
    ctx: Arc<Context>,
    headers: Arc<HeaderMap>,
    frames: mpsc::Sender<Message>,
    id: Value,
}

impl Exchange {
    async fn run(self, body: String) {
        let request_id = crate::app::new_request_id();
        let result = chat::handle_bytes(&self.ctx, &self.headers, body.as_bytes(), &request_id, Operation::Chat).await;
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                let status = error.status().as_u16();
                let body = error.body();
                let _ = self.frames.send(error_frame(&self.id, Some(status), body["error"].clone())).await;
                return;
            }
        };
        let (parts, mut body) = response.into_parts();
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let start = json!({"type": "start", "id": self.id, "request_id": header("x-request-id"),
                           "route": header("x-switchyard-route"), "target": header("x-switchyard-target")});
        if self.frames.send(Message::text(start.to_string())).await.is_err() {
            return;
        }
        let id = self.id.to_string();
        let mut parser = sse::Parser::default();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map(|f| f.into_data()) else { break };
            let Ok(data) = data else { continue };
            parser.push(&data);
            while let Some(event) = parser.next_event() {
                let frame = if event.data == "[DONE]" {
                    format!(r#"{{"type":"done","id":{id}}}"#)
                } else if let Some(error) = event
                    .data
                    .starts_with(r#"{"error""#)
                    .then(|| serde_json::from_str::<Value>(&event.data).ok())
                    .flatten()
                    .and_then(|mut v| v.get_mut("error").map(Value::take))
                {
                    let _ = self.frames.send(error_frame(&self.id, None, error)).await;
                    return;
                } else {
                    format!(r#"{{"type":"chunk","id":{id},"chunk":{}}}"#, event.data)
                };
                if self.frames.send(Message::text(frame)).await.is_err() {
                    return;
                }
                if event.data == "[DONE]" {
                    return;
                }
            }
        }
        // The chat path always ends with `[DONE]` or an error chunk.
        let error = json!({"message": "the stream ended before it finished", "type": "upstream_error", "param": null, "code": "stream_interrupted"});
        let _ = self.frames.send(error_frame(&self.id, None, error)).await;
    }
}
