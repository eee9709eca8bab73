//! `POST /v1/chat/completions` (and `/v1/embeddings`, the same path without
//! streams): pick, try, retry, fall back, stream.
//!
//! Rules (design §3):
//! - one table snapshot per request; the plan (see [`crate::plan`]) is fixed up front;
//! - a retryable failure (connect error, timeout, 408/409/429/5xx) is retried
//!   on the same target with exponential backoff and jitter, or after the
//!   provider's `Retry-After` when that fits the request budget; then the next
//!   target, then the fallback aliases;
//! - 400-class client errors (other than 408/409/429) end the request at once,
//!   except a context-length error, which moves on to targets with a larger
//!   `contextWindow` only;
//! - a stream commits to a target at its first content chunk; anything before
//!   that may fail over invisibly; after it, a failure ends the stream with an
//!   error event and never a `[DONE]`;
//! - a client that goes away drops the response body, which drops the
//!   upstream response and so closes the upstream connection.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::stream;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use rand::Rng;
use routing::table::{Provider, Route, Target};
use serde::Deserialize;
use serde_json::Value;

use crate::cost::{self, PriceSource};
use crate::errors::{AttemptRecord, Class, ProxyError, UpstreamError};
use crate::metrics::{FallbackLabels, Metrics, RequestLabels, RouteTargetLabels};
use crate::plan::{self, Candidate, Steering};
use crate::ratelimit::RateLimits;
use crate::request::{ApiRequest, Operation};
use crate::server::{Body, RequestBody, X_REQUEST_ID, full};
use crate::sse;
use crate::state::{Live, LiveTarget, RoutingHandle};
use crate::tokens::Prompt;
use crate::translate::TokenUsage;
use crate::upstream::{Call, Endpoint, Events, Reply, Upstreams};

const X_SWITCHYARD_ROUTE: HeaderName = HeaderName::from_static("x-switchyard-route");
const X_SWITCHYARD_TARGET: HeaderName = HeaderName::from_static("x-switchyard-target");
const X_SWITCHYARD_ATTEMPTS: HeaderName = HeaderName::from_static("x-switchyard-attempts");
const X_SWITCHYARD_COST_USD: HeaderName = HeaderName::from_static("x-switchyard-cost-usd");
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Largest request body accepted (images travel inline as base64).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Longest `Retry-After` the proxy waits for before it prefers another target.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Streamed output text kept for a token estimate in case the provider
/// reports no usage; beyond it, four bytes count as a token.
const MAX_KEPT_OUTPUT: usize = 1024 * 1024;

/// What the chat handler needs from the process.
pub struct Context {
    pub routing: RoutingHandle,
    pub upstreams: Upstreams,
    pub metrics: Arc<Metrics>,
}

/// Handles one chat completion or embeddings request; errors go to the
/// caller's rescue, after they were counted and logged here.
pub async fn handle(
    ctx: &Arc<Context>,
    headers: &HeaderMap,
    body: RequestBody,
    request_id: &HeaderValue,
    operation: Operation,
) -> Result<Response<Body>, ProxyError> {
    handle_translated(ctx, headers, body, request_id, operation, Ok).await
}

/// [`handle`] for a request that arrives in another API's shape:
/// `to_openai` turns the body into the OpenAI request (its errors are
/// counted and logged like any other bad request).
pub async fn handle_translated(
    ctx: &Arc<Context>,
    headers: &HeaderMap,
    body: RequestBody,
    request_id: &HeaderValue,
    operation: Operation,
    to_openai: impl FnOnce(Bytes) -> Result<Bytes, ProxyError>,
) -> Result<Response<Body>, ProxyError> {
    let started = Instant::now();
    let result = match read_body(body).await.and_then(to_openai) {
        Ok(bytes) => serve(ctx, headers, &bytes, request_id, started, operation).await,
        Err(error) => Err(error),
    };
    recorded(ctx, request_id, started, result)
}

/// [`handle`] for a request body that is already in memory (a WebSocket frame).
pub async fn handle_bytes(
    ctx: &Arc<Context>,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &HeaderValue,
    operation: Operation,
) -> Result<Response<Body>, ProxyError> {
    let started = Instant::now();
    let result = serve(ctx, headers, body, request_id, started, operation).await;
    recorded(ctx, request_id, started, result)
}

fn recorded(
    ctx: &Context,
    request_id: &HeaderValue,
    started: Instant,
    result: Result<Response<Body>, ProxyError>,
) -> Result<Response<Body>, ProxyError> {
    if let Err(error) = &result {
        record_failure(&ctx.metrics, request_id, started, error);
    }
    result
}

async fn serve(
    ctx: &Arc<Context>,
    headers: &HeaderMap,
    bytes: &[u8],
    request_id: &HeaderValue,
    started: Instant,
    operation: Operation,
) -> Result<Response<Body>, ProxyError> {
    let mut body = ApiRequest::parse(bytes, operation)?;
    let alias = body.model.clone();
    let stream = body.stream;
    let live = ctx.routing.snapshot().ok_or(ProxyError::NotReady)?;
    let route = live.snapshot.table.routes.get(&alias).ok_or_else(|| ProxyError::UnknownModel {
        model: alias.clone(),
        known: live.snapshot.table.routes.keys().cloned().collect(),
    })?;
    let client_wants_usage = body.client_wants_usage;
    body.request_usage();
    let body = Arc::new(body);
    // Tokenized only for targets with a `contextWindow` the prompt might not
    // fit (see `tokens`); provider usage is authoritative afterwards.
    let prompt = Prompt::new(&body);
    let sticky = plan::sticky_header_name(route).and_then(|h| headers.get(h)).and_then(|v| v.to_str().ok());
    let plan = plan::plan(&live, route, Steering { sticky, prompt: Some(&prompt) });
    if plan.candidates.is_empty() {
        if plan.too_long > 0 && plan.too_long == plan.skipped.len() {
            return Err(ProxyError::TooLong { alias, skipped: plan.skipped });
        }
        return Err(ProxyError::NoCandidate { alias, skipped: plan.skipped });
    }
    let deadline = started + Duration::from_millis(route.timeouts.request_ms);
    let request =
        Request { ctx, live: &live, body: &body, stream, request_id, deadline, rate_limits: Mutex::default() };
    let mut attempts = Vec::new();
    let mut skipped = plan.skipped.clone();
    let mut last_error = None;
    // After a context-length error: the window a target must exceed to be
    // worth trying (0 when the failed target had none: then any target with
    // a `contextWindow`, which the plan already checked against the prompt's
    // pre-flight estimate).
    let mut larger_than: Option<u64> = None;
    for candidate in &plan.candidates {
        if let Some(needed) = larger_than
            && candidate.target.context_window.is_none_or(|window| window <= needed)
        {
            skipped.push(format!(
                "`{}/{}`: its `contextWindow` is not larger than the failed target's",
                candidate.route.alias, candidate.target.name
            ));
            continue;
        }
        let before = attempts.len();
        let outcome = request.try_candidate(candidate, &mut attempts, &mut skipped).await;
        count_tried(candidate, &outcome, attempts.len() > before);
        let error = match outcome {
            Ok(answer) => {
                let first = plan.candidates[0].target;
                let served = Served {
                    ctx: ctx.clone(),
                    live: live.clone(),
                    request: body.clone(),
                    serving: candidate.entry.clone(),
                    alias: route.alias.clone(),
                    first_choice: (first.name != candidate.target.name).then(|| first.name.clone()),
                    fallback: candidate.fallback,
                    // The failed attempts before this one, and this one.
                    attempts: attempts.len() + 1,
                    request_id: request_id.clone(),
                    started,
                    rate_limits: request.take_rate_limits(),
                };
                return Ok(served.respond(answer, client_wants_usage, deadline));
            }
            Err(error) => error,
        };
        if error.is_context_length() {
            let window = candidate.target.context_window.unwrap_or(0);
            larger_than = Some(larger_than.map_or(window, |needed| needed.max(window)));
        } else if let UpstreamError::Status { status, body, .. } = &error
            && error.class() == Class::Final
        {
            return Err(ProxyError::Rejected { alias, status: *status, body: body.clone(), attempts });
        }
        if Instant::now() >= deadline {
            let limit = Duration::from_millis(route.timeouts.request_ms);
            return Err(ProxyError::Deadline { alias, limit, attempts });
        }
        // A target that was not tried says nothing about the upstreams: keep
        // the last real failure for the status and message.
        if last_error.is_none() || !matches!(error, UpstreamError::NotTried(_)) {
            last_error = Some(error);
        }
    }
    // The last real failure was a context-length error: no larger target was
    // left, or none could be tried.
    if let Some(body) = last_error.as_ref().and_then(UpstreamError::context_length_body) {
        return Err(ProxyError::ContextLength { alias, body: body.clone(), attempts, skipped });
    }
    let rate_limits = request.take_rate_limits().map(Box::new);
    Err(match last_error {
        Some(last) if !attempts.is_empty() => {
            ProxyError::Exhausted { alias, attempts, last: Box::new(last), skipped, rate_limits }
        }
        // Nothing was sent: the proxy's own `requestsPerMinute` or `tokensPerMinute` stopped it.
        _ => match rate_limits {
            Some(limits) => ProxyError::Throttled { alias, skipped, limits },
            None => ProxyError::NoCandidate { alias, skipped },
        },
    })
}

/// Feeds the operator's report counters: a candidate that served, or failed
/// after at least one attempt, was tried. An upstream that refused the
/// client's request as invalid is not the target's failure.
fn count_tried(candidate: &Candidate<'_>, outcome: &Result<Answer, UpstreamError>, attempted: bool) {
    if outcome.is_ok() || attempted {
        candidate.entry.stats.counters.record_tried(outcome.as_ref().is_err_and(|e| e.class() != Class::Final));
    }
}

/// Counts and logs a request that ended in an error. Requests rejected before
/// an alias was resolved are counted with empty labels, so that arbitrary
/// client input never becomes a metric label.
fn record_failure(metrics: &Metrics, request_id: &HeaderValue, started: Instant, error: &ProxyError) {
    let attempts = error.attempts();
    let last = attempts.last();
    let alias = error.alias().unwrap_or_default();
    let status = error.status().as_u16();
    let duration = started.elapsed();
    let target = last.map_or("", |a| a.target.as_str());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route: alias.to_owned(),
            target: target.to_owned(),
            provider: last.map_or("", |a| a.provider.as_str()).to_owned(),
            code: format!("{}xx", status / 100),
        })
        .inc();
    if !alias.is_empty() {
        let labels = RouteTargetLabels { route: alias.to_owned(), target: target.to_owned() };
        metrics.duration.get_or_create(&labels).observe(duration.as_secs_f64());
    }
    tracing::info!(
        target: "switchyard::access",
        request_id = request_id.to_str().unwrap_or_default(),
        route = alias,
        target_name = last.map_or("", |a| a.target.as_str()),
        provider = last.map_or("", |a| a.provider.as_str()),
        status,
        attempts = attempts.len(),
        duration_ms = duration.as_secs_f64() * 1_000.0,
        error = %error.message(),
        "request failed"
    );
}

/// Reads the whole body, up to [`MAX_BODY_BYTES`]. A body that arrives in
/// one piece (the usual case) is passed on as it is, without a copy.
async fn read_body(body: RequestBody) -> Result<Bytes, ProxyError> {
    let too_large = || ProxyError::BadRequest {
        message: format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        param: None,
    };
    let mut body = match body {
        RequestBody::Full(bytes) if bytes.len() > MAX_BODY_BYTES => return Err(too_large()),
        RequestBody::Full(bytes) => return Ok(bytes),
        RequestBody::Incoming(body) => body,
    };
    if http_body::Body::size_hint(&body).lower() > MAX_BODY_BYTES as u64 {
        return Err(too_large());
    }
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::BadRequest {
            message: format!("cannot read the request body: {e}"),
            param: None,
        })?;
        let Ok(data) = frame.into_data() else { continue };
        let total = first.as_ref().map_or(0, Bytes::len) + joined.as_ref().map_or(0, BytesMut::len) + data.len();
        if total > MAX_BODY_BYTES {
            return Err(too_large());
        }
        match (&mut first, &mut joined) {
            (None, None) => first = Some(data),
            (Some(_), None) => {
                let mut all = BytesMut::from(first.take().unwrap_or_default());
                all.extend_from_slice(&data);
                joined = Some(all);
            }
            (_, Some(all)) => all.extend_from_slice(&data),
        }
    }
    Ok(joined.map(BytesMut::freeze).or(first).unwrap_or_default())
}

/// One request's fixed inputs.
struct Request<'a> {
    ctx: &'a Arc<Context>,
    live: &'a Arc<Live>,
    body: &'a ApiRequest,
    stream: bool,
    request_id: &'a HeaderValue,
    deadline: Instant,
    /// The rate-limit headers of the last upstream answer that had any (or
    /// the proxy's own limit that stopped an attempt).
    rate_limits: Mutex<Option<RateLimits>>,
}

/// A successful attempt's answer.
enum Answer {
    Json(Bytes),
    /// Events already read (up to and including the first content chunk) and the rest.
    Stream {
        read: Vec<sse::Event>,
        rest: Events,
    },
}

impl Request<'_> {
    fn take_rate_limits(&self) -> Option<RateLimits> {
        self.rate_limits.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// All attempts (first try plus retries) at one candidate; each failed
    /// one is added to `attempts`.
    async fn try_candidate(
        &self,
        candidate: &Candidate<'_>,
        attempts: &mut Vec<AttemptRecord>,
        skipped: &mut Vec<String>,
    ) -> Result<Answer, UpstreamError> {
        let Candidate { route, target, entry, .. } = *candidate;
        let name = || format!("`{}/{}`", route.alias, target.name);
        let stats = &entry.stats;
        let Some(provider) = self.live.snapshot.table.providers.get(&target.provider) else {
            skipped.push(format!("{}: not in the table", name()));
            return Err(UpstreamError::NotTried("target is not in the table".into()));
        };
        let api_key = self.live.snapshot.credentials.get(&target.provider);
        let mut retry = 0;
        loop {
            if !stats.try_probe(route.circuit_breaker.open_for_ms) {
                skipped.push(format!("{}: circuit open", name()));
                return Err(UpstreamError::NotTried("circuit open".into()));
            }
            let provider_stats = entry.provider_stats.as_ref();
            if let Some((p, Err(limit))) = provider_stats.map(|p| (p, p.try_acquire())) {
                if let Some(limits) = p.exhausted(limit) {
                    *self.rate_limits.lock().unwrap_or_else(PoisonError::into_inner) = Some(limits);
                }
                skipped.push(format!("{}: provider limit `{limit}` reached", name()));
                return Err(UpstreamError::NotTried(format!("provider limit `{limit}` reached")));
            }
            stats.metrics.in_flight.inc();
            stats.in_flight.fetch_add(1, Ordering::Relaxed);
            let attempt_started = Instant::now();
            let result =
                self.attempt(provider, api_key, target, route, entry.endpoint.as_deref(), attempt_started).await;
            stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            stats.metrics.in_flight.dec();
            if let Some(p) = provider_stats {
                p.release();
            }
            let error = match result {
                Ok(answer) => {
                    stats.record_success(u64::try_from(attempt_started.elapsed().as_micros()).unwrap_or(u64::MAX));
                    return Ok(answer);
                }
                Err(error) => error,
            };
            attempts.push(self.record(route, target, &error));
            let class = error.class();
            if error.counts_against_target()
                && stats.record_failure(route.circuit_breaker.consecutive_failures, route.circuit_breaker.open_for_ms)
            {
                tracing::warn!(route = %route.alias, target = %target.name, "circuit opened after consecutive failures");
            }
            if class != Class::Retry || retry >= route.retry.attempts {
                return Err(error);
            }
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            let delay = match error.retry_after() {
                Some(wait) if wait <= MAX_RETRY_AFTER && wait < remaining => wait,
                // The provider wants a longer pause than this request can
                // afford: better try another target now.
                Some(_) => return Err(error),
                None => backoff(route, retry),
            };
            if delay >= remaining {
                return Err(error);
            }
            stats.metrics.retries.inc();
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    /// A failed attempt, for the error body and the log.
    fn record(&self, route: &Route, target: &Target, error: &UpstreamError) -> AttemptRecord {
        AttemptRecord {
            route: route.alias.clone(),
            target: target.name.clone(),
            provider: target.provider.clone(),
            outcome: format!("{}: {error}", error.label()),
            provider_gap: matches!(error, UpstreamError::Untranslatable(_)),
        }
    }

    /// One attempt, bounded by the attempt, first-token and request timeouts.
    async fn attempt(
        &self,
        provider: &Provider,
        api_key: Option<&routing::Redacted>,
        target: &Target,
        route: &Route,
        endpoint: Option<&Result<Endpoint, String>>,
        started: Instant,
    ) -> Result<Answer, UpstreamError> {
        let call = Call {
            provider,
            api_key,
            target,
            body: self.body,
            stream: self.stream,
            request_id: self.request_id,
            endpoint,
            rate_limits: &self.rate_limits,
        };
        // An earlier attempt's limits are not this upstream's.
        self.take_rate_limits();
        let timeouts = &route.timeouts;
        let remaining = self.deadline.saturating_duration_since(started);
        let attempt_limit = Duration::from_millis(timeouts.attempt_ms).min(remaining);
        if !self.stream {
            let until = tokio::time::Instant::from_std(started + attempt_limit);
            return match tokio::time::timeout_at(until, self.ctx.upstreams.send(call)).await {
                Err(_) => Err(UpstreamError::Timeout("waiting for the response")),
                Ok(Err(e)) => Err(e),
                Ok(Ok(Reply::Json(body))) => Ok(Answer::Json(body)),
                Ok(Ok(Reply::Stream(_))) => Err(UpstreamError::Protocol("a stream where JSON was expected".into())),
            };
        }
        let first_token = Duration::from_millis(timeouts.first_token_ms).min(attempt_limit);
        let until_first = async {
            let mut events = match self.ctx.upstreams.send(call).await? {
                Reply::Stream(events) => events,
                Reply::Json(_) => return Err(UpstreamError::Protocol("JSON where a stream was expected".into())),
            };
            let mut read = Vec::new();
            loop {
                let event = match events.next().await {
                    None => return Err(UpstreamError::StreamBroken("the stream ended before any content".into())),
                    Some(event) => event?,
                };
                let kind = classify(&event.data);
                match kind {
                    Chunk::Error(message) => return Err(UpstreamError::StreamError(message)),
                    Chunk::Done => {
                        return Err(UpstreamError::StreamBroken("the stream ended before any content".into()));
                    }
                    Chunk::Content => {
                        read.push(event);
                        return Ok(Answer::Stream { read, rest: events });
                    }
                    Chunk::Preamble => read.push(event),
                }
            }
        };
        match tokio::time::timeout(first_token, until_first).await {
            Err(_) => Err(UpstreamError::Timeout("waiting for the first token")),
            Ok(result) => result,
        }
    }
}

/// Exponential backoff with jitter: `backoff × 2^retry`, capped, then a
/// random point in its upper half.
fn backoff(route: &Route, retry: u32) -> Duration {
    let base = route.retry.backoff_ms.saturating_mul(1 << retry.min(20)).min(route.retry.max_backoff_ms);
    let jittered = if base > 1 { rand::rng().random_range(base / 2..=base) } else { base };
    Duration::from_millis(jittered)
}

/// What a stream event means for the request.
#[derive(Debug, PartialEq)]
enum Chunk {
    /// Nothing a user sees yet (the role chunk, an empty delta, a comment).
    Preamble,
    /// Content, a tool call, a finish reason or usage: the stream is committed.
    Content,
    Done,
    Error(String),
}

#[derive(Deserialize)]
struct ChunkView {
    #[serde(default)]
    choices: Vec<ChoiceView>,
    error: Option<Value>,
    usage: Option<UsageView>,
}

#[derive(Deserialize)]
struct ChoiceView {
    delta: Option<DeltaView>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct DeltaView {
    content: Option<String>,
    tool_calls: Option<Value>,
    refusal: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct UsageView {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetailsView>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct PromptDetailsView {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

impl UsageView {
    fn to_usage(self) -> TokenUsage {
        let details = self.prompt_tokens_details.unwrap_or_default();
        TokenUsage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: details.cached_tokens.unwrap_or(0),
            cache_write_tokens: details.cache_write_tokens.unwrap_or(0),
            reasoning_tokens: None,
        }
    }
}

/// The `usage` object of a whole (non-streaming) answer. OpenAI-shaped
/// answers put it near the end, after the content, so the last `"usage":`
/// is taken and only that object is read, by [`Scan`]; anything unexpected
/// falls back to parsing the whole answer.
fn usage_of(body: &[u8]) -> Option<UsageView> {
    const KEY: &[u8] = b"\"usage\"";
    static FINDER: LazyLock<memchr::memmem::Finder<'static>> = LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    // One vectorised pass over the answer; a reverse search is byte by byte.
    let fast = FINDER.find_iter(body).last().and_then(|at| {
        // `"usage"` then `:`, as a key looks; the same text inside a string
        // has its quotes escaped, which `Scan` refuses.
        let rest = body[at + KEY.len()..].trim_ascii_start().strip_prefix(b":")?;
        Scan { text: rest, at: 0 }.usage()
    });
    fast.or_else(|| serde_json::from_slice::<ChunkView>(body).ok().and_then(|v| v.usage))
}

/// Reads a `usage` object straight from the bytes, on every non-streaming
/// answer: under half of what serde's generic path costs for it (about
/// 1 700 instructions against 4 200, callgrind). Gives up (`None`) on
/// anything but plain keys, unsigned integers for the counts and
/// well-formed nesting; the caller then parses the whole answer.
struct Scan<'a> {
    text: &'a [u8],
    at: usize,
}

impl Scan<'_> {
    fn usage(&mut self) -> Option<UsageView> {
        let mut usage = UsageView::default();
        self.object(|scan, key| {
            match key {
                b"prompt_tokens" => usage.prompt_tokens = scan.count()?,
                b"completion_tokens" => usage.completion_tokens = scan.count()?,
                b"prompt_tokens_details" if scan.null() => usage.prompt_tokens_details = None,
                b"prompt_tokens_details" => {
                    let mut details = PromptDetailsView::default();
                    scan.object(|scan, key| {
                        match key {
                            b"cached_tokens" => details.cached_tokens = scan.optional_count()?,
                            b"cache_write_tokens" => details.cache_write_tokens = scan.optional_count()?,
                            _ => scan.skip_value()?,
                        }
                        Some(())
                    })?;
                    usage.prompt_tokens_details = Some(details);
                }
                _ => scan.skip_value()?,
            }
            Some(())
        })?;
        Some(usage)
    }

    fn peek(&mut self) -> Option<u8> {
        while let Some(&byte) = self.text.get(self.at) {
            if !byte.is_ascii_whitespace() {
                return Some(byte);
            }
            self.at += 1;
        }
        None
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// `{ "key": value, ... }`, calling `field` with the scanner at each value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.eat(b'"')?;
            let rest = &self.text[self.at..];
            let len = memchr::memchr2(b'"', b'\\', rest)?;
            if rest[len] != b'"' {
                return None;
            }
            self.at += len + 1;
            self.eat(b':')?;
            field(self, &rest[..len])?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn null(&mut self) -> bool {
        self.peek().is_some() && self.text[self.at..].starts_with(b"null") && {
            self.at += 4;
            true
        }
    }

    fn count(&mut self) -> Option<u64> {
        self.peek()?;
        let digits = self.text[self.at..].iter().take_while(|b| b.is_ascii_digit()).count();
        let text = std::str::from_utf8(&self.text[self.at..self.at + digits]).ok()?;
        self.at += digits;
        text.parse().ok()
    }

    fn optional_count(&mut self) -> Option<Option<u64>> {
        if self.null() { Some(None) } else { self.count().map(Some) }
    }

    /// Any value, without looking at it beyond its nesting and strings.
    /// `open` holds one bit per open bracket (1 for `{`), innermost lowest;
    /// deeper than 64 levels gives up.
    fn skip_value(&mut self) -> Option<()> {
        let mut depth = 0u32;
        let mut open = 0u64;
        loop {
            let byte = self.peek()?;
            match byte {
                b'"' => {
                    self.at += 1;
                    loop {
                        let rest = &self.text[self.at..];
                        let len = memchr::memchr2(b'"', b'\\', rest)?;
                        self.at += len + 1;
                        if rest[len] == b'"' {
                            break;
                        }
                        self.at += 1; // the escaped byte
                    }
                }
                b'{' | b'[' if depth < 64 => {
                    open = open << 1 | u64::from(byte == b'{');
                    depth += 1;
                    self.at += 1;
                }
                b'}' | b']' if depth > 0 => {
                    if (open & 1 == 1) != (byte == b'}') {
                        return None;
                    }
                    open >>= 1;
                    depth -= 1;
                    self.at += 1;
                }
                b',' | b':' if depth > 0 => self.at += 1,
                b',' | b'}' | b']' | b':' | b'{' | b'[' => return None,
                _ => {
                    let len = self.text[self.at..]
                        .iter()
                        .take_while(|b| !matches!(b, b',' | b'}' | b']' | b':' | b'"') && !b.is_ascii_whitespace())
                        .count();
                    self.at += len;
                }
            }
            if depth == 0 {
                return Some(());
            }
        }
    }
}

fn classify(data: &str) -> Chunk {
    if data == "[DONE]" {
        return Chunk::Done;
    }
    let Ok(view) = serde_json::from_str::<ChunkView>(data) else { return Chunk::Preamble };
    if let Some(error) = view.error {
        let message = error.get("message").and_then(Value::as_str).unwrap_or("unknown error").to_owned();
        return Chunk::Error(message);
    }
    let content = view.choices.iter().any(|c| {
        c.finish_reason.is_some()
            || c.delta.as_ref().is_some_and(|d| {
                d.content.as_deref().is_some_and(|s| !s.is_empty())
                    || d.tool_calls.is_some()
                    || d.refusal.as_deref().is_some_and(|s| !s.is_empty())
            })
    });
    if content || view.usage.is_some() { Chunk::Content } else { Chunk::Preamble }
}

/// The request's outcome once a target answered.
struct Served {
    ctx: Arc<Context>,
    /// Kept so the table the request started with stays alive.
    live: Arc<Live>,
    /// For a token estimate when the provider reports no usage.
    request: Arc<ApiRequest>,
    /// The target that answered: names, prices, tokenizer, counters.
    serving: Arc<LiveTarget>,
    /// The alias the client asked for.
    alias: String,
    /// The plan's first target, when another one served.
    first_choice: Option<String>,
    fallback: bool,
    attempts: usize,
    request_id: HeaderValue,
    started: Instant,
    /// The upstream's rate limits, passed on as OpenAI's `x-ratelimit-*` headers.
    rate_limits: Option<RateLimits>,
}

/// Tokens and cost of one served request.
#[derive(Debug, Clone, Copy)]
struct Account {
    usage: TokenUsage,
    /// The proxy counted the tokens: the provider reported none.
    estimated: bool,
    /// USD; `None` when the target has no known price.
    cost: Option<f64>,
}

impl Served {
    fn respond(self, answer: Answer, client_wants_usage: bool, deadline: Instant) -> Response<Body> {
        // Six fit in an allocation that takes the allocator's fast path
        // (eight would need one over 1 KiB); rate-limit headers grow it.
        let mut headers = HeaderMap::with_capacity(6);
        headers.insert(X_REQUEST_ID, self.request_id.clone());
        headers.insert(X_SWITCHYARD_ROUTE, self.serving.route_header.clone());
        headers.insert(X_SWITCHYARD_TARGET, self.serving.name_header.clone());
        headers.insert(X_SWITCHYARD_ATTEMPTS, HeaderValue::from(self.attempts));
        if let Some(limits) = &self.rate_limits {
            limits.write(&mut headers);
        }
        match answer {
            Answer::Json(bytes) => {
                let account = match usage_of(&bytes) {
                    Some(usage) => self.account(usage.to_usage(), false),
                    None => {
                        let usage = self.estimate(&output_of(&bytes));
                        self.account(usage, true)
                    }
                };
                if let Some(cost) = account.cost
                    && let Ok(value) = HeaderValue::try_from(cost::format_usd(cost))
                {
                    headers.insert(X_SWITCHYARD_COST_USD, value);
                }
                let elapsed = self.started.elapsed();
                self.finish(Outcome::Ok, account, Some(elapsed), elapsed);
                headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                let mut response = Response::new(full(bytes));
                *response.headers_mut() = headers;
                response
            }
            Answer::Stream { read, rest } => {
                let ttft = self.started.elapsed();
                let mut pump = Pump {
                    served: Some(self),
                    pending: VecDeque::new(),
                    rest,
                    idle: Duration::ZERO,
                    deadline,
                    strip_usage: !client_wants_usage,
                    usage: None,
                    output: Output::default(),
                    last_chunk: String::new(),
                    ttft,
                    ended: false,
                };
                pump.idle = pump.served.as_ref().map_or(Duration::from_secs(30), |s| s.idle_timeout());
                for event in read {
                    pump.accept(event);
                }
                let body = StreamBody::new(stream::unfold(pump, |mut pump| async move {
                    pump.next_frame().await.map(|frame| (Ok(Frame::data(frame)), pump))
                }));
                headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
                let mut response = Response::new(body.boxed_unsync());
                *response.headers_mut() = headers;
                response
            }
        }
    }

    fn idle_timeout(&self) -> Duration {
        let ms = self.live.snapshot.table.routes.get(&self.serving.route).map_or(30_000, |r| r.timeouts.idle_ms);
        Duration::from_millis(ms)
    }

    /// Usage counted by the proxy: the prompt and `output` in the target's
    /// encoding (see [`crate::tokens`]).
    fn estimate(&self, output: &Output) -> TokenUsage {
        TokenUsage {
            prompt_tokens: Prompt::new(&self.request).tokens(self.serving.encoding),
            completion_tokens: self.serving.encoding.count(&output.text) + output.dropped.div_ceil(4),
            ..TokenUsage::default()
        }
    }

    fn account(&self, usage: TokenUsage, estimated: bool) -> Account {
        Account { usage, estimated, cost: self.serving.pricing.map(|p| p.cost(&usage)) }
    }

    /// Counts and logs the request, which took `duration`; called exactly once.
    fn finish(self, outcome: Outcome, account: Account, ttft: Option<Duration>, duration: Duration) {
        let stats = &self.serving.stats;
        let metrics = &stats.metrics;
        let Account { usage, estimated, cost } = account;
        let (tokens_in, tokens_out) = (usage.prompt_tokens, usage.completion_tokens);
        let (code, counter) = match outcome {
            Outcome::Ok => ("2xx", &metrics.served),
            Outcome::StreamFailed(_) => ("5xx", &metrics.broken),
            Outcome::ClientClosed => ("499", &metrics.client_closed),
        };
        counter.inc();
        match &outcome {
            Outcome::Ok => stats.counters.record_served(duration, ttft),
            Outcome::StreamFailed(_) => stats.counters.record_broken(),
            Outcome::ClientClosed => {}
        }
        metrics.duration.observe(duration.as_secs_f64());
        if let Some(ttft) = ttft {
            metrics.ttft.observe(ttft.as_secs_f64());
        }
        metrics.tokens_in.inc_by(tokens_in);
        metrics.tokens_out.inc_by(tokens_out);
        if let Some(provider) = &self.serving.provider_stats {
            provider.record_tokens(tokens_in.saturating_add(tokens_out));
        }
        if estimated {
            metrics.estimated_in.inc_by(tokens_in);
            metrics.estimated_out.inc_by(tokens_out);
        }
        if let Some(cost) = cost {
            metrics.cost.inc_by(cost);
        }
        let price_source = match self.serving.pricing.map(|p| p.source) {
            Some(PriceSource::Manifest) => "manifest",
            Some(PriceSource::BuiltIn { .. }) => "built-in",
            None => "none",
        };
        let target = &self.serving.name;
        if self.fallback || self.first_choice.is_some() {
            self.ctx
                .metrics
                .fallbacks
                .get_or_create(&FallbackLabels {
                    route: self.alias.clone(),
                    from: self.first_choice.clone().unwrap_or_else(|| target.clone()),
                    to: target.clone(),
                })
                .inc();
        }
        let error = match &outcome {
            Outcome::StreamFailed(message) => message.as_str(),
            _ => "",
        };
        tracing::info!(
            target: "switchyard::access",
            request_id = self.request_id.to_str().unwrap_or_default(),
            route = %self.alias,
            served_by = %self.serving.route,
            target_name = %target,
            provider = %self.serving.provider,
            status = 200,
            outcome = code,
            attempts = self.attempts,
            fallback = self.fallback,
            tokens_in,
            tokens_out,
            tokens_cached = usage.cached_tokens,
            tokens_estimated = estimated,
            cost_usd = cost,
            price_source,
            duration_ms = duration.as_secs_f64() * 1_000.0,
            ttft_ms = ttft.map(|t| t.as_secs_f64() * 1_000.0),
            error,
            "request served"
        );
    }
}

enum Outcome {
    Ok,
    StreamFailed(String),
    ClientClosed,
}

/// Moves events from the committed upstream to the client.
struct Pump {
    served: Option<Served>,
    pending: VecDeque<Bytes>,
    rest: Events,
    idle: Duration,
    deadline: Instant,
    strip_usage: bool,
    /// The provider's usage (or, once synthesized, the proxy's estimate).
    usage: Option<Account>,
    output: Output,
    /// The data of the last chunk, whose id and model a synthesized usage
    /// chunk repeats.
    last_chunk: String,
    ttft: Duration,
    ended: bool,
}

/// Streamed output, kept for a token estimate.
#[derive(Debug, Default)]
struct Output {
    /// Content and tool-call arguments, up to [`MAX_KEPT_OUTPUT`] bytes.
    text: String,
    /// Bytes beyond that.
    dropped: u64,
}

impl Output {
    fn push(&mut self, text: &str) {
        if self.text.len() + text.len() <= MAX_KEPT_OUTPUT {
            self.text.push_str(text);
        } else {
            self.dropped += text.len() as u64;
        }
    }
}

/// The content and tool-call arguments of a whole answer, for an estimate
/// of its output tokens.
fn output_of(answer: &[u8]) -> Output {
    let mut output = Output::default();
    let Ok(answer) = serde_json::from_slice::<Value>(answer) else { return output };
    for choice in answer.get("choices").and_then(Value::as_array).into_iter().flatten() {
        let message = choice.get("message");
        if let Some(text) = message.and_then(|m| m.get("content")).and_then(Value::as_str) {
            output.push(text);
        }
        push_tool_calls(&mut output, message.and_then(|m| m.get("tool_calls")));
    }
    output
}

fn push_tool_calls(output: &mut Output, calls: Option<&Value>) {
    for call in calls.and_then(Value::as_array).into_iter().flatten() {
        for pointer in ["/function/name", "/function/arguments"] {
            if let Some(text) = call.pointer(pointer).and_then(Value::as_str) {
                output.push(text);
            }
        }
    }
}

impl Pump {
    /// Queues one upstream event for the client (or drops it).
    fn accept(&mut self, event: sse::Event) {
        if event.data == "[DONE]" {
            self.pending.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
            return;
        }
        if let Ok(view) = serde_json::from_str::<ChunkView>(&event.data) {
            for delta in view.choices.iter().filter_map(|c| c.delta.as_ref()) {
                if let Some(text) = delta.content.as_deref() {
                    self.output.push(text);
                }
                push_tool_calls(&mut self.output, delta.tool_calls.as_ref());
            }
            if let (Some(usage), Some(served)) = (view.usage, &self.served) {
                self.usage = Some(served.account(usage.to_usage(), false));
                if self.strip_usage && view.choices.is_empty() {
                    return;
                }
            }
        }
        self.pending.push_back(Bytes::from(format!("data: {}\n\n", event.data)));
        self.last_chunk = event.data;
    }

    /// The provider sent no usage: the proxy's estimate counts instead, and
    /// at the end of a whole stream (`chunk`) a client that asked for usage
    /// gets a usage chunk all the same.
    fn estimate_usage(&mut self, chunk: bool) {
        let Some(served) = self.served.as_ref().filter(|_| self.usage.is_none()) else { return };
        let account = served.account(served.estimate(&self.output), true);
        self.usage = Some(account);
        if self.strip_usage || !chunk {
            return;
        }
        let last: Value = serde_json::from_str(&self.last_chunk).unwrap_or(Value::Null);
        let mut chunk = serde_json::json!({
            "id": last.get("id").cloned().unwrap_or(Value::Null),
            "object": "chat.completion.chunk",
            "created": last.get("created").cloned().unwrap_or(Value::Null),
            "model": last.get("model").cloned().unwrap_or(Value::Null),
            "choices": [],
            "usage": account.usage.to_openai(),
        });
        if let (Some(fingerprint), Some(object)) = (last.get("system_fingerprint"), chunk.as_object_mut()) {
            object.insert("system_fingerprint".into(), fingerprint.clone());
        }
        self.pending.push_back(Bytes::from(format!("data: {chunk}\n\n")));
    }

    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(bytes) = self.pending.pop_front() {
                return Some(bytes);
            }
            if self.ended {
                return None;
            }
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            let wait = self.idle.min(remaining);
            let failure = match tokio::time::timeout(wait, self.rest.next()).await {
                Ok(Some(Ok(event))) => match classify(&event.data) {
                    Chunk::Error(message) => format!("the upstream reported an error mid-stream: {message}"),
                    Chunk::Done => {
                        self.rest.settle();
                        self.estimate_usage(true);
                        self.accept(event);
                        self.end(Outcome::Ok);
                        continue;
                    }
                    _ => {
                        self.accept(event);
                        continue;
                    }
                },
                Ok(Some(Err(error))) => format!("the upstream stream broke: {error}"),
                Ok(None) => "the upstream closed the stream before it finished".to_owned(),
                Err(_) if wait < self.idle => "the request timeout ran out mid-stream".to_owned(),
                Err(_) => format!("the upstream sent nothing for {} ms (idle timeout)", self.idle.as_millis()),
            };
            let body = serde_json::json!({"error": {
                "message": failure, "type": "upstream_error", "param": null, "code": "stream_interrupted"}});
            self.pending.push_back(Bytes::from(format!("data: {body}\n\n")));
            self.end(Outcome::StreamFailed(failure));
        }
    }

    fn end(&mut self, outcome: Outcome) {
        self.ended = true;
        self.estimate_usage(false);
        if let (Some(served), Some(account)) = (self.served.take(), self.usage) {
            let duration = served.started.elapsed();
            served.finish(outcome, account, Some(self.ttft), duration);
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        // Dropped before the end: the client went away. Dropping `rest`
        // (right after this) closes the upstream connection.
        self.estimate_usage(false);
        if let (Some(served), Some(account)) = (self.served.take(), self.usage) {
            let duration = served.started.elapsed();
            served.finish(Outcome::ClientClosed, account, Some(self.ttft), duration);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_the_end_of_an_answer_without_being_fooled_by_content() {
        let body = br#"{"choices":[{"message":{"content":"say \"usage\": {\"prompt_tokens\": 99}"}}],"usage":{"prompt_tokens":9,"completion_tokens":25,"total_tokens":34},"system_fingerprint":"fp"}"#;
        let usage = usage_of(body).unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (9, 25));
        assert!(usage_of(br#"{"choices":[],"usage":null}"#).is_none());
        assert!(usage_of(br#"{"choices":[]}"#).is_none());
    }

    /// The scanner agrees with serde on every usage shape it accepts, and
    /// hands the rest to serde.
    #[test]
    fn the_usage_scanner_reads_what_serde_reads() {
        let cases: &[&[u8]] = &[
            br#"{"prompt_tokens":9,"completion_tokens":25,"total_tokens":34,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#,
            br#" { "completion_tokens" : 7 , "prompt_tokens" : 1200 , "prompt_tokens_details" : { "cached_tokens" : 1024 , "cache_write_tokens" : null } } "#,
            br#"{"prompt_tokens":3,"prompt_tokens_details":null,"x":[1,{"a":"}\"]"},[]],"y":"\\","z":-1.5e3,"t":true}"#,
            br#"{"prompt_tokens_details":{"cache_write_tokens":5,"cached_tokens":2},"completion_tokens":18446744073709551615}"#,
            br#"{}"#,
        ];
        for case in cases {
            let scanned =
                Scan { text: case, at: 0 }.usage().unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(case)));
            let parsed: UsageView = serde_json::from_slice(case).unwrap();
            assert_eq!(scanned.to_usage(), parsed.to_usage(), "{}", String::from_utf8_lossy(case));
        }
        let refused: &[&[u8]] = &[
            br#"{\"prompt_tokens\": 99}"#,
            br#"{"prompt_tokens":-1}"#,
            br#"{"prompt_tokens":null}"#,
            br#"{"prompt_tokens":18446744073709551616}"#,
            br#"{"prompt_tokens":9"#,
            br#"{"prompt_tokens":9,}"#,
            br#"{"p\u0072ompt_tokens":9}"#,
            br#"{"x":[1,2}"#,
            br#"{"x":[1,2},"prompt_tokens":3}"#,
            br#"{"x":{"a":1],"prompt_tokens":3}"#,
            br#"{"x":}"#,
            br#"[]"#,
        ];
        for case in refused {
            assert!(Scan { text: case, at: 0 }.usage().is_none(), "{}", String::from_utf8_lossy(case));
        }
        // Through `usage_of`, a refused shape still counts when serde reads it.
        let escaped_key = br#"{"choices":[],"usage":{"pr\u006fmpt_tokens":4,"completion_tokens":2}}"#;
        assert_eq!(usage_of(escaped_key).map(|u| (u.prompt_tokens, u.completion_tokens)), Some((4, 2)));
    }

    #[test]
    fn stream_events_commit_on_content_tool_calls_or_a_finish_reason_only() {
        assert_eq!(classify(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#), Chunk::Preamble);
        assert_eq!(classify(r#"{"choices":[{"delta":{"content":"hi"}}]}"#), Chunk::Content);
        assert_eq!(classify(r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#), Chunk::Content);
        assert_eq!(classify(r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#), Chunk::Content);
        assert_eq!(classify("[DONE]"), Chunk::Done);
        assert_eq!(classify(r#"{"error":{"message":"overloaded"}}"#), Chunk::Error("overloaded".into()));
    }
}
