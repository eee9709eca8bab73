//! The operator's Prometheus metrics (design §6).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Compile passes by outcome: `published` (a new hash) or `unchanged`; `error` when inputs could not be read.
    pub reconciles: Family<Outcome, Counter>,
    pub compile_seconds: Histogram,
    pub connected_proxies: Gauge,
    /// Snapshots sent to proxies (one per 200 on `/v1/table`).
    pub pushes: Counter,
    /// Status patches by outcome: `written` or `error`.
    pub status_writes: Family<Outcome, Counter>,
    pub leader: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard_operator");
        let reconciles = Family::<Outcome, Counter>::default();
        registry.register("reconciles", "Compile passes by outcome", reconciles.clone());
        let compile_seconds = Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]);
        registry.register(
            "compile_duration_seconds",
            "Time to compile the inputs into a snapshot",
            compile_seconds.clone(),
        );
        let connected_proxies = Gauge::default();
        registry.register("connected_proxies", "Proxies that reported within the TTL", connected_proxies.clone());
        let pushes = Counter::default();
        registry.register("snapshot_pushes", "Snapshots sent to proxies", pushes.clone());
        let status_writes = Family::<Outcome, Counter>::default();
        registry.register("status_writes", "Status patches by outcome", status_writes.clone());
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the Lease", leader.clone());
        Self { registry, reconciles, compile_seconds, connected_proxies, pushes, status_writes, leader }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
