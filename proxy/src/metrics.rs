//! Prometheus metrics of the data plane (design §6).

use prometheus_client::encoding::EncodeLabelSet;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub target: String,
    pub provider: String,
    /// Status class: `2xx`, `4xx`, `5xx`.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteTargetLabels {
    pub route: String,
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub route: String,
    pub target: String,
    /// `input` or `output`.
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    pub route: String,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HashLabels {
    pub hash: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0])
}

/// One target's series (labels: the route the target belongs to and the
/// target). Clones share the underlying atomics with the registry.
#[derive(Clone, Debug)]
pub struct TargetMetrics {
    /// Answered (2xx).
    pub served: Counter,
    /// Committed streams that broke (counted as 5xx).
    pub broken: Counter,
    /// Clients that went away mid-answer (499).
    pub client_closed: Counter,
    pub duration: Histogram,
    pub ttft: Histogram,
    pub tokens_in: Counter,
    pub tokens_out: Counter,
    /// The part of `tokens_in` / `tokens_out` the proxy estimated because the
    /// provider reported no usage.
    pub estimated_in: Counter,
    pub estimated_out: Counter,
    /// USD of the requests served (targets with a known price).
    pub cost: Counter<f64, AtomicU64>,
    pub retries: Counter,
    pub circuit_state: Gauge,
    pub in_flight: Gauge,
}

/// Every series the proxy exports.
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RouteTargetLabels, Histogram, fn() -> Histogram>,
    pub ttft: Family<RouteTargetLabels, Histogram, fn() -> Histogram>,
    pub tokens: Family<TokenLabels, Counter>,
    pub tokens_estimated: Family<TokenLabels, Counter>,
    pub cost: Family<RouteTargetLabels, Counter<f64, AtomicU64>>,
    pub fallbacks: Family<FallbackLabels, Counter>,
    pub retries: Family<RouteTargetLabels, Counter>,
    pub circuit_state: Family<TargetLabels, Gauge>,
    pub in_flight: Family<TargetLabels, Gauge>,
    pub table_info: Family<HashLabels, Gauge>,
    pub reloads: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let requests = Family::default();
        registry.register("requests", "Requests by route, final target, provider and status class", requests.clone());
        let duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("request_duration_seconds", "Time from request to last byte", duration.clone());
        let ttft = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("time_to_first_token_seconds", "Time from request to first content chunk", ttft.clone());
        let tokens = Family::default();
        registry.register("tokens", "Tokens by direction (provider-reported, estimated when absent)", tokens.clone());
        let tokens_estimated = Family::default();
        registry.register(
            "tokens_estimated",
            "The part of switchyard_tokens_total the proxy estimated because the provider reported no usage",
            tokens_estimated.clone(),
        );
        let cost = Family::default();
        registry.register(
            "cost_usd",
            "Cost in USD of the requests served, from the target's price (manifest or built-in table)",
            cost.clone(),
        );
        let fallbacks = Family::default();
        registry.register("fallbacks", "Requests served by a later target than the first choice", fallbacks.clone());
        let retries = Family::default();
        registry.register("retries", "Retries of the same target", retries.clone());
        let circuit_state = Family::default();
        registry.register("circuit_state", "Circuit breaker: 0 closed, 1 open", circuit_state.clone());
        let in_flight = Family::default();
        registry.register("in_flight", "Requests in flight per target", in_flight.clone());
        let table_info = Family::default();
        registry.register("table_info", "The installed table (value 1)", table_info.clone());
        let reloads = Family::default();
        registry.register("table_reloads", "Table loads by outcome: applied, unchanged, rejected", reloads.clone());
        Self {
            registry,
            requests,
            duration,
            ttft,
            tokens,
            tokens_estimated,
            cost,
            fallbacks,
            retries,
            circuit_state,
            in_flight,
            table_info,
            reloads,
        }
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Handles of every per-target series, resolved once when a table is
    /// installed so that the request path only touches atomics.
    pub fn for_target(&self, route: &str, target: &str, provider: &str) -> TargetMetrics {
        let labels = RouteTargetLabels { route: route.to_owned(), target: target.to_owned() };
        let requests = |code: &str| {
            self.requests
                .get_or_create(&RequestLabels {
                    route: route.to_owned(),
                    target: target.to_owned(),
                    provider: provider.to_owned(),
                    code: code.to_owned(),
                })
                .clone()
        };
        let tokens_of = |family: &Family<TokenLabels, Counter>, direction: &str| {
            family
                .get_or_create(&TokenLabels {
                    route: route.to_owned(),
                    target: target.to_owned(),
                    direction: direction.to_owned(),
                })
                .clone()
        };
        let by_target = TargetLabels { target: target.to_owned() };
        TargetMetrics {
            served: requests("2xx"),
            broken: requests("5xx"),
            client_closed: requests("499"),
            duration: self.duration.get_or_create(&labels).clone(),
            ttft: self.ttft.get_or_create(&labels).clone(),
            tokens_in: tokens_of(&self.tokens, "input"),
            tokens_out: tokens_of(&self.tokens, "output"),
            estimated_in: tokens_of(&self.tokens_estimated, "input"),
            estimated_out: tokens_of(&self.tokens_estimated, "output"),
            cost: self.cost.get_or_create(&labels).clone(),
            retries: self.retries.get_or_create(&labels).clone(),
            circuit_state: self.circuit_state.get_or_create(&by_target).clone(),
            in_flight: self.in_flight.get_or_create(&by_target).clone(),
        }
    }

    /// Marks `hash` as the installed table.
    pub fn set_table(&self, hash: &str) {
        self.table_info.clear();
        self.table_info.get_or_create(&HashLabels { hash: hash.to_owned() }).set(1);
    }
}
