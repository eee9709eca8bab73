//! The hot-swapped table and the per-target runtime state that outlives swaps.
//!
//! This is the only module that names `ArcSwap`. Request handlers call
//! [`RoutingHandle::snapshot`] once and use that `Arc<Live>` for every decision
//! of the request, so a swap never changes a request half-way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use routing::Snapshot;
use routing::table::Limits;

use crate::metrics::{Metrics, TargetMetrics};
use crate::upstream::Endpoint;

/// An installed snapshot plus the counters requests update.
#[derive(Debug)]
pub struct Live {
    pub snapshot: Snapshot,
    targets: HashMap<(String, String), Arc<TargetStats>>,
    providers: HashMap<String, Arc<ProviderStats>>,
    endpoints: HashMap<String, Result<Endpoint, String>>,
}

impl Live {
    /// Runtime state of a route's target (alias, target name).
    pub fn target_stats(&self, alias: &str, target: &str) -> Option<&Arc<TargetStats>> {
        self.targets.get(&(alias.to_owned(), target.to_owned()))
    }

    /// The prepared HTTP endpoint of a provider (by provider key); `None` for `mock`.
    pub fn endpoint(&self, provider: &str) -> Option<&Result<Endpoint, String>> {
        self.endpoints.get(provider)
    }

    /// Runtime state of a provider (by provider key).
    pub fn provider_stats(&self, provider: &str) -> Option<&Arc<ProviderStats>> {
        self.providers.get(provider)
    }
}

/// Shared handle to the current table. Cheap to clone.
#[derive(Clone)]
pub struct RoutingHandle {
    current: Arc<ArcSwapOption<Live>>,
    diagnostics: Arc<ArcSwap<Vec<String>>>,
    metrics: Arc<Metrics>,
}

impl RoutingHandle {
    /// An empty handle; per-target series are registered in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { current: Arc::default(), diagnostics: Arc::default(), metrics }
    }

    /// The table in force, or `None` before the first install.
    pub fn snapshot(&self) -> Option<Arc<Live>> {
        self.current.load_full()
    }

    /// Installs a snapshot that passed `Snapshot::check`. Readers see either
    /// the old or the new table, never a mix. Counters of targets and
    /// providers that still exist carry over, so circuit breakers and
    /// in-flight counts survive a reload.
    pub fn install(&self, snapshot: Snapshot) {
        let previous = self.current.load_full();
        let mut targets = HashMap::new();
        let mut providers = HashMap::new();
        for (alias, route) in &snapshot.table.routes {
            let all = route.targets.iter().chain(route.canary.as_ref().map(|c| &c.target));
            for target in all {
                let key = (alias.clone(), target.name.clone());
                // Carry over only while the target still points at the same
                // provider: a new backend starts with a closed circuit.
                let stats = previous
                    .as_ref()
                    .and_then(|p| p.targets.get(&key))
                    .filter(|s| s.provider == target.provider)
                    .cloned()
                    .unwrap_or_else(|| {
                        let metrics = self.metrics.for_target(alias, &target.name, &target.provider);
                        Arc::new(TargetStats::new(target.provider.clone(), metrics))
                    });
                targets.insert(key, stats);
            }
        }
        for (key, provider) in &snapshot.table.providers {
            let stats = previous
                .as_ref()
                .and_then(|p| p.providers.get(key).cloned())
                .unwrap_or_else(|| Arc::new(ProviderStats::new(provider.limits.clone())));
            providers.insert(key.clone(), stats);
        }
        let endpoints = snapshot
            .table
            .providers
            .iter()
            .filter_map(|(key, provider)| {
                let prepared = Endpoint::prepare(provider, snapshot.credentials.get(key))?;
                if let Err(problem) = &prepared {
                    tracing::error!(provider = %key, %problem, "provider cannot be called; its targets will be skipped");
                }
                Some((key.clone(), prepared))
            })
            .collect();
        self.current.store(Some(Arc::new(Live { snapshot, targets, providers, endpoints })));
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
    fn new(provider: String, metrics: TargetMetrics) -> Self {
        Self {
            provider,
            metrics,
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

/// Limits shared by every target of one provider account.
#[derive(Debug)]
pub struct ProviderStats {
    limits: Limits,
    pub in_flight: AtomicU32,
    /// (minute number, requests started in it).
    window: Mutex<(u64, u32)>,
}

impl ProviderStats {
    fn new(limits: Limits) -> Self {
        Self { limits, in_flight: AtomicU32::new(0), window: Mutex::new((0, 0)) }
    }

    /// Takes one request slot, or says which limit is exhausted.
    pub fn try_acquire(&self) -> Result<(), &'static str> {
        if let Some(max) = self.limits.max_in_flight
            && self.in_flight.load(Ordering::Relaxed) >= max
        {
            return Err("maxInFlight");
        }
        if let Some(rpm) = self.limits.requests_per_minute {
            let minute = now_ms() / 60_000;
            let mut window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if window.0 != minute {
                *window = (minute, 0);
            }
            if window.1 >= rpm {
                return Err("requestsPerMinute");
            }
            window.1 += 1;
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
