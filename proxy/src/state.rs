//! The hot-swapped table and the per-target runtime state that outlives swaps.
//!
//! This is the only module that names `ArcSwap`. Request handlers call
//! [`RoutingHandle::snapshot`] once and use that `Arc<Live>` for every decision
//! of the request, so a swap never changes a request half-way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use routing::Snapshot;
use routing::distribution::{LATENCY_BUCKETS_MS, TargetCounters};
use routing::table::Limits;

use crate::cost::Pricing;
use crate::metrics::{Metrics, TargetMetrics};
use crate::tokens::Encoding;
use crate::upstream::Endpoint;

/// An installed snapshot plus the counters requests update.
#[derive(Debug)]
pub struct Live {
    pub snapshot: Snapshot,
    /// By alias, then target name (looked up by `&str`, no allocation).
    targets: HashMap<String, HashMap<String, Arc<LiveTarget>>>,
    providers: HashMap<String, Arc<ProviderStats>>,
}

/// What the table knows about one target, worked out when it is installed.
#[derive(Debug)]
pub struct LiveTarget {
    /// The route's alias, the target's name and its provider key.
    pub route: String,
    pub name: String,
    pub provider: String,
    /// `route` and `name` as response header values.
    pub route_header: http::HeaderValue,
    pub name_header: http::HeaderValue,
    pub stats: Arc<TargetStats>,
    /// The provider's limits and its prepared endpoint (`None` for `mock`).
    pub provider_stats: Option<Arc<ProviderStats>>,
    pub endpoint: Option<Arc<Result<Endpoint, String>>>,
    pub pricing: Option<Pricing>,
    /// The target's tokenizer (or its stand-in).
    pub encoding: Encoding,
}

impl Live {
    /// A route's target (alias, target name).
    pub fn target(&self, alias: &str, target: &str) -> Option<&Arc<LiveTarget>> {
        self.route_targets(alias)?.get(target)
    }

    /// A route's targets (canary included) by name.
    pub fn route_targets(&self, alias: &str) -> Option<&HashMap<String, Arc<LiveTarget>>> {
        self.targets.get(alias)
    }

    /// Runtime state of a route's target (alias, target name).
    pub fn target_stats(&self, alias: &str, target: &str) -> Option<&Arc<TargetStats>> {
        self.target(alias, target).map(|t| &t.stats)
    }

    /// The report counters of every target of the table, by route and target.
    pub fn target_counters(&self) -> Vec<TargetCounters> {
        let mut all: Vec<_> = self
            .targets
            .iter()
            .flat_map(|(route, targets)| targets.iter().map(move |(name, t)| t.stats.counters.report(route, name)))
            .collect();
        all.sort_by(|a, b| (&a.route, &a.target).cmp(&(&b.route, &b.target)));
        all
    }
}

/// Whether provider `key` has the same definition and credential in `previous` and `next`.
fn same_provider(previous: &Live, next: &Snapshot, key: &str) -> bool {
    let before = &previous.snapshot;
    before.table.providers.get(key) == next.table.providers.get(key)
        && before.credentials.get(key) == next.credentials.get(key)
}

/// A snapshot with its provider endpoints built, ready to be installed:
/// building them first lets a caller refuse a snapshot that cannot be served.
#[derive(Debug)]
pub struct Prepared {
    snapshot: Snapshot,
    endpoints: HashMap<String, Arc<Result<Endpoint, String>>>,
}

impl Prepared {
    /// Builds the endpoint of every HTTP provider of `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        let endpoints = snapshot
            .table
            .providers
            .iter()
            .filter_map(|(key, provider)| {
                Some((key.clone(), Arc::new(Endpoint::prepare(provider, snapshot.credentials.get(key))?)))
            })
            .collect();
        Self { snapshot, endpoints }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// One line per provider whose endpoint cannot be built, sorted; never
    /// contains a credential.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .endpoints
            .iter()
            .filter_map(|(key, endpoint)| endpoint.as_ref().as_ref().err().map(|e| format!("provider `{key}`: {e}")))
            .collect();
        problems.sort();
        problems
    }
}

/// Report counters by (alias, target name).
type CountersByTarget = HashMap<(String, String), Arc<Counters>>;

/// Shared handle to the current table. Cheap to clone.
#[derive(Clone)]
pub struct RoutingHandle {
    current: Arc<ArcSwapOption<Live>>,
    diagnostics: Arc<ArcSwap<Vec<String>>>,
    metrics: Arc<Metrics>,
    /// Report counters by (alias, target), see [`RoutingHandle::counters`].
    counters: Arc<Mutex<CountersByTarget>>,
}

impl RoutingHandle {
    /// An empty handle; per-target series are registered in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { current: Arc::default(), diagnostics: Arc::default(), metrics, counters: Arc::default() }
    }

    /// The table in force, or `None` before the first install.
    pub fn snapshot(&self) -> Option<Arc<Live>> {
        self.current.load_full()
    }

    /// Installs a snapshot that passed `Snapshot::check`, logging providers
    /// whose endpoint cannot be built (their targets are skipped).
    pub fn install(&self, snapshot: Snapshot) {
        let prepared = Prepared::new(snapshot);
        for problem in prepared.problems() {
            tracing::error!(%problem, "provider cannot be called; its targets will be skipped");
        }
        self.install_prepared(prepared);
    }

    /// Installs a prepared snapshot. Readers see either the old or the new
    /// table, never a mix. Counters of targets and providers that still
    /// exist carry over, so circuit breakers and in-flight counts survive a
    /// reload.
    pub fn install_prepared(&self, prepared: Prepared) {
        let Prepared { snapshot, endpoints } = prepared;
        let previous = self.current.load_full();
        let mut targets: HashMap<String, HashMap<String, Arc<LiveTarget>>> = HashMap::new();
        let mut providers = HashMap::new();
        for (key, provider) in &snapshot.table.providers {
            let stats = previous
                .as_ref()
                .and_then(|p| p.providers.get(key).cloned())
                .unwrap_or_else(|| Arc::new(ProviderStats::new(provider.limits.clone())));
            providers.insert(key.clone(), stats);
        }
        for (alias, route) in &snapshot.table.routes {
            let all = route.targets.iter().chain(route.canary.as_ref().map(|c| &c.target));
            for target in all {
                let key = (alias.clone(), target.name.clone());
                // Carry over only while the target still points at the same,
                // unchanged provider: a new backend, URL, header or key
                // starts with a closed circuit (a rotated key must not wait
                // out the failures of the old one).
                let stats = previous
                    .as_ref()
                    .filter(|p| same_provider(p, &snapshot, &target.provider))
                    .and_then(|p| p.target_stats(alias, &target.name))
                    .filter(|s| s.provider == target.provider)
                    .cloned()
                    .unwrap_or_else(|| {
                        let metrics = self.metrics.for_target(alias, &target.name, &target.provider);
                        let counters = self.counters(&key);
                        Arc::new(TargetStats::new(target.provider.clone(), metrics, counters))
                    });
                let kind = crate::plan::kind_of(&snapshot.table, target);
                // Aliases and target names are DNS labels: valid header values.
                let header =
                    |text: &str| http::HeaderValue::from_str(text).unwrap_or(http::HeaderValue::from_static("invalid"));
                let live = LiveTarget {
                    route: alias.clone(),
                    name: target.name.clone(),
                    provider: target.provider.clone(),
                    route_header: header(alias),
                    name_header: header(&target.name),
                    stats,
                    provider_stats: providers.get(&target.provider).cloned(),
                    endpoint: endpoints.get(&target.provider).cloned(),
                    pricing: Pricing::for_target(kind, target),
                    encoding: Encoding::for_model(kind, &target.model).0,
                };
                targets.entry(key.0).or_default().insert(key.1, Arc::new(live));
            }
        }
        self.current.store(Some(Arc::new(Live { snapshot, targets, providers })));
    }

    /// The report counters of a target, created on first use and kept for
    /// the life of the process, so that they stay cumulative across tables.
    fn counters(&self, key: &(String, String)) -> Arc<Counters> {
        let mut all = self.counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.entry(key.clone()).or_default().clone()
    }

    /// Findings of the last load, shown on the admin port.
    pub fn set_diagnostics(&self, lines: Vec<String>) {
        self.diagnostics.store(Arc::new(lines));
    }

    pub fn diagnostics(&self) -> Arc<Vec<String>> {
        self.diagnostics.load_full()
    }
}

/// Milliseconds since this process started; a monotonic clock that fits an atomic.
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Health of one target: circuit breaker, load and latency, and its metrics.
#[derive(Debug)]
pub struct TargetStats {
    /// The provider key the counters were made for.
    provider: String,
    pub metrics: TargetMetrics,
    /// What the operator is told about this target (cluster mode).
    pub counters: Arc<Counters>,
    pub in_flight: AtomicU64,
    consecutive_failures: AtomicU32,
    /// `now_ms()` until which the circuit is open; 0 = closed.
    open_until_ms: AtomicU64,
    /// Exponentially weighted latency in microseconds; 0 = no sample yet.
    latency_ewma_us: AtomicU64,
}

/// What the breaker says about sending a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    /// The open period is over: one request may probe.
    HalfOpen,
}

impl TargetStats {
    fn new(provider: String, metrics: TargetMetrics, counters: Arc<Counters>) -> Self {
        // The series outlives the stats it was made for: a fresh circuit is closed.
        metrics.circuit_state.set(0);
        Self {
            provider,
            metrics,
            counters,
            in_flight: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            latency_ewma_us: AtomicU64::new(0),
        }
    }

    pub fn circuit(&self) -> Circuit {
        match self.open_until_ms.load(Ordering::Relaxed) {
            0 => Circuit::Closed,
            until if now_ms() < until => Circuit::Open,
            _ => Circuit::HalfOpen,
        }
    }

    /// A probe in the half-open state claims the circuit for `open_for_ms`
    /// so that only one request probes at a time. Returns false if another
    /// request claimed it first.
    pub fn try_probe(&self, open_for_ms: u64) -> bool {
        let current = self.open_until_ms.load(Ordering::Relaxed);
        if current == 0 {
            return true;
        }
        let now = now_ms();
        current <= now
            && self
                .open_until_ms
                .compare_exchange(current, now + open_for_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    pub fn record_success(&self, latency_us: u64) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        if self.open_until_ms.swap(0, Ordering::Relaxed) != 0 {
            self.metrics.circuit_state.set(0);
        }
        let old = self.latency_ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 { latency_us } else { (old * 4 + latency_us) / 5 };
        self.latency_ewma_us.store(new.max(1), Ordering::Relaxed);
    }

    /// Counts a failure; opens the circuit when `threshold` (non-zero) is reached.
    /// Returns true when this failure opened it.
    pub fn record_failure(&self, threshold: u32, open_for_ms: u64) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if threshold > 0 && failures >= threshold {
            let was = self.open_until_ms.swap(now_ms() + open_for_ms, Ordering::Relaxed);
            self.metrics.circuit_state.set(1);
            return was == 0;
        }
        false
    }

    pub fn latency_us(&self) -> u64 {
        self.latency_ewma_us.load(Ordering::Relaxed)
    }
}

/// Buckets of a report histogram: one per bound of [`LATENCY_BUCKETS_MS`] and an overflow.
const BUCKETS: usize = LATENCY_BUCKETS_MS.len() + 1;

/// Cumulative per-target numbers for the operator's reports (canary
/// analysis): plain relaxed atomics, a handful of adds per request.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    latency_ms: [AtomicU64; BUCKETS],
    first_token_ms: [AtomicU64; BUCKETS],
}

impl Counters {
    /// The target was tried for a request; `failed` when it did not serve it.
    pub fn record_tried(&self, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A served request whose answer was tried and then broke (a stream cut after commit).
    pub fn record_broken(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A served request's total latency and, for streams, time to first token.
    pub fn record_served(&self, latency: Duration, first_token: Option<Duration>) {
        self.latency_ms[bucket(latency)].fetch_add(1, Ordering::Relaxed);
        if let Some(first_token) = first_token {
            self.first_token_ms[bucket(first_token)].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn report(&self, route: &str, target: &str) -> TargetCounters {
        let read = |buckets: &[AtomicU64; BUCKETS]| buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        TargetCounters {
            route: route.to_owned(),
            target: target.to_owned(),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency_ms: read(&self.latency_ms),
            first_token_ms: read(&self.first_token_ms),
        }
    }
}

/// The histogram bucket of `elapsed`: the first bound it does not exceed, or the overflow.
fn bucket(elapsed: Duration) -> usize {
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    LATENCY_BUCKETS_MS.partition_point(|&bound| bound < ms)
}

/// Limits shared by every target of one provider account.
#[derive(Debug)]
pub struct ProviderStats {
    limits: Limits,
    pub in_flight: AtomicU32,
    /// The current minute's use (`requestsPerMinute`, `tokensPerMinute`).
    window: Mutex<Minute>,
}

/// What one provider used in one minute.
#[derive(Debug, Default)]
struct Minute {
    /// Minutes since the process started.
    number: u64,
    /// Requests started in it.
    requests: u32,
    /// Tokens (prompt and completion) of the answers that ended in it.
    tokens: u64,
}

impl ProviderStats {
    fn new(limits: Limits) -> Self {
        Self { limits, in_flight: AtomicU32::new(0), window: Mutex::default() }
    }

    /// This minute's use, started afresh when a new minute began.
    fn minute(&self) -> std::sync::MutexGuard<'_, Minute> {
        let number = now_ms() / 60_000;
        let mut window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.number != number {
            *window = Minute { number, ..Minute::default() };
        }
        window
    }

    /// Takes one request slot, or says which limit is exhausted.
    pub fn try_acquire(&self) -> Result<(), &'static str> {
        if let Some(max) = self.limits.max_in_flight
            && self.in_flight.load(Ordering::Relaxed) >= max
        {
            return Err("maxInFlight");
        }
        let (rpm, tpm) = (self.limits.requests_per_minute, self.limits.tokens_per_minute);
        if rpm.is_some() || tpm.is_some() {
            let mut minute = self.minute();
            if tpm.is_some_and(|tpm| minute.tokens >= tpm) {
                return Err("tokensPerMinute");
            }
            if rpm.is_some_and(|rpm| minute.requests >= rpm) {
                return Err("requestsPerMinute");
            }
            minute.requests += 1;
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Counts the tokens of an answer that ended, against `tokensPerMinute`.
    /// Counted at the end, as the usage is known only then: requests
    /// admitted while the minute's budget lasted may take it past the limit.
    pub fn record_tokens(&self, tokens: u64) {
        if self.limits.tokens_per_minute.is_some() {
            let mut minute = self.minute();
            minute.tokens = minute.tokens.saturating_add(tokens);
        }
    }

    /// The proxy's own limit that `limit` (as [`Self::try_acquire`] names
    /// it) reached, in rate-limit headers: the limit, none remaining, and
    /// the time until the next minute starts; `None` for `maxInFlight`.
    pub fn exhausted(&self, limit: &str) -> Option<crate::ratelimit::RateLimits> {
        let reset = Some(Duration::from_millis(60_000 - now_ms() % 60_000));
        let window = |limit: u64| crate::ratelimit::Window { limit: Some(limit), remaining: Some(0), reset };
        match limit {
            "requestsPerMinute" => Some(crate::ratelimit::RateLimits {
                requests: window(u64::from(self.limits.requests_per_minute?)),
                ..Default::default()
            }),
            "tokensPerMinute" => Some(crate::ratelimit::RateLimits {
                tokens: window(self.limits.tokens_per_minute?),
                ..Default::default()
            }),
            _ => None,
        }
    }

    pub fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_is_refused_once_its_minute_holds_its_limits() {
        let limits = |rpm, tpm| Limits { requests_per_minute: rpm, tokens_per_minute: tpm, max_in_flight: None };
        let tokens = ProviderStats::new(limits(None, Some(100)));
        assert_eq!(tokens.try_acquire(), Ok(()));
        tokens.record_tokens(60);
        assert_eq!(tokens.try_acquire(), Ok(()), "60 of 100 used");
        tokens.record_tokens(60);
        assert_eq!(tokens.try_acquire(), Err("tokensPerMinute"));
        let shown = tokens.exhausted("tokensPerMinute").unwrap();
        assert_eq!((shown.tokens.limit, shown.tokens.remaining), (Some(100), Some(0)));
        assert!(shown.tokens.reset.is_some_and(|r| r <= Duration::from_secs(60)));
        let requests = ProviderStats::new(limits(Some(1), None));
        requests.record_tokens(1_000_000);
        assert_eq!(requests.try_acquire(), Ok(()), "tokens count only against a token limit");
        assert_eq!(requests.try_acquire(), Err("requestsPerMinute"));
        assert_eq!(requests.exhausted("maxInFlight"), None);
    }

    #[test]
    fn report_buckets_are_inclusive_upper_bounds_with_an_overflow() {
        let ms = Duration::from_millis;
        assert_eq!(bucket(ms(0)), 0);
        assert_eq!(bucket(ms(5)), 0);
        assert_eq!(bucket(ms(6)), 1);
        assert_eq!(bucket(ms(60_000)), LATENCY_BUCKETS_MS.len() - 1);
        assert_eq!(bucket(ms(60_001)), LATENCY_BUCKETS_MS.len());
        let counters = Counters::default();
        counters.record_tried(false);
        counters.record_tried(true);
        counters.record_served(ms(7), Some(ms(3)));
        let report = counters.report("chat", "a");
        assert_eq!((report.requests, report.errors), (2, 1));
        assert_eq!(report.latency_ms.len(), BUCKETS);
        assert_eq!((report.latency_ms[1], report.first_token_ms[0]), (1, 1));
    }
}
