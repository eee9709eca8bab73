//! `POST /v1/messages`: Anthropic Messages clients (the Anthropic SDK,
//! Claude-Code-style tools) served by any target.
//!
//! The request is translated into an OpenAI chat request
//! ([`anthropic_inbound::messages_to_chat_request`]) and runs the chat path
//! unchanged ([`chat::handle_translated`]): the same routing, retries,
//! fallbacks, stream commit rules, headers and metrics as
//! `/v1/chat/completions`. Its answer is translated back: a `chat.completion`
//! into an Anthropic `message`, a chunk stream into Anthropic's named events
//! ([`ChunkTranslator`]), and every error into Anthropic's error shape
//! ([`ProxyError::into_anthropic_response`]); an error after the stream was
//! committed is an `event: error`.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::chat::{self, Context};
use crate::errors::ProxyError;
use crate::request::Operation;
use crate::server::{Body, RequestBody, full};
use crate::sse;
use crate::translate::anthropic_inbound::{self, ChunkTranslator};

/// Handles one Anthropic Messages request; every outcome is an Anthropic-shaped response.
pub async fn handle(
    ctx: &Arc<Context>,
    headers: &HeaderMap,
    body: RequestBody,
    request_id: &HeaderValue,
) -> Response<Body> {
    let result = chat::handle_translated(ctx, headers, body, request_id, Operation::Chat, |bytes| {
        let request = anthropic_inbound::messages_to_chat_request(&bytes)
            .map_err(|error| ProxyError::BadRequest { message: error.to_string(), param: None })?;
        serde_json::to_vec(&request)
            .map(Bytes::from)
            .map_err(|e| ProxyError::BadRequest { message: format!("cannot re-encode the request: {e}"), param: None })
    })
    .await;
    match result {
        Ok(response) => translate_answer(response, request_id).await,
        Err(error) => error.into_anthropic_response(request_id),
    }
}

/// The chat path's successful answer, in Anthropic's shape.
async fn translate_answer(response: Response<Body>, request_id: &HeaderValue) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    let is_stream =
        parts.headers.get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if is_stream {
        let relay = Relay {
            body,
            parser: sse::Parser::default(),
            translator: ChunkTranslator::new(),
            pending: VecDeque::new(),
        };
        let stream = StreamBody::new(stream::unfold(relay, |mut relay| async move {
            relay.next_frame().await.map(|frame| (Ok(Frame::data(frame)), relay))
        }));
        return Response::from_parts(parts, stream.boxed_unsync());
    }
    let translated = match body.collect().await {
        Ok(collected) => anthropic_inbound::chat_to_message(&collected.to_bytes()).map_err(|e| e.to_string()),
        Err(error) => Err(format!("the answer could not be read: {error}")),
    };
    let body = match translated {
        Ok(message) => message.to_string(),
        Err(message) => {
            // The upstream answered, but not with something a Messages client can use.
            parts.status = StatusCode::BAD_GATEWAY;
            let id = request_id.to_str().unwrap_or_default();
            anthropic_inbound::error_body(502, &message, id).to_string()
        }
    };
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, full(body))
}

/// Reads the chat path's SSE body and writes Anthropic's events.
struct Relay {
    body: Body,
    parser: sse::Parser,
    translator: ChunkTranslator,
    pending: VecDeque<Bytes>,
}

impl Relay {
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(bytes) = self.pending.pop_front() {
                return Some(bytes);
            }
            if self.translator.is_done() {
                return None;
            }
            let event = match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.push(&data);
                        while let Some(event) = self.parser.next_event() {
                            for out in self.translator.on_data(&event.data) {
                                self.pending.push_back(Bytes::from(out.to_sse()));
                            }
                        }
                    }
                    continue;
                }
                // The chat path always ends with `[DONE]` or an error chunk;
                // anything else is a broken stream, said as Anthropic would.
                Some(Err(error)) => self.translator.error("api_error", &format!("the stream broke: {error}")),
                None => self.translator.error("api_error", "the stream ended before it finished"),
            };
            self.pending.push_back(Bytes::from(event.to_sse()));
        }
    }
}
