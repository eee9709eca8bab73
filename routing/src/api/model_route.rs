//! `ModelRoute`: what serves one model alias (design §2).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    DECIMAL_PATTERN, DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, DURATION_PATTERN, FRACTION_PATTERN, HEADER_NAME_PATTERN,
    MODEL_ID_PATTERN, PERCENT_PATTERN,
};

/// What serves one model alias: the upstream targets, how traffic is split
/// between them, a canary, fallbacks to other aliases, retries, timeouts and a
/// circuit breaker.
#[expect(clippy::duplicated_attributes, reason = "kube's `printcolumn(...)` repeats `type_` once per column")]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "ModelRoute",
    plural = "modelroutes",
    shortname = "mr",
    category = "switchyard",
    namespaced,
    status = "ModelRouteStatus",
    derive = "PartialEq",
    doc = "What serves one model alias: targets, traffic split, canary, fallbacks, retries and timeouts.",
    printcolumn(
        name = "Alias",
        type_ = "string",
        json_path = ".spec.model",
        description = "alias clients send as `model` (defaults to the object name)"
    ),
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy"),
    printcolumn(
        name = "Canary",
        type_ = "string",
        json_path = ".status.canary.percent",
        description = "current canary share in percent"
    ),
    printcolumn(
        name = "Programmed",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Programmed\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.targets.all(a, !has(a.name) || self.targets.exists_one(b, has(b.name) && b.name == a.name))"
).message("target names must be unique within a route").field_path(".targets"))]
#[x_kube(validation = Rule::new(
    "self.targets.exists(t, !has(t.weight) || t.weight > 0) || (has(self.canary) && has(self.canary.percent) && self.canary.percent.matches('^[0-9]+([.][0-9]+)?$') && double(self.canary.percent) == 100.0)"
).message("at least one target needs a weight > 0 (weight defaults to 1), unless the canary takes 100 percent").field_path(".targets"))]
#[x_kube(validation = Rule::new(
    "!has(self.canary) || !has(self.canary.target.name) || !self.targets.exists(t, has(t.name) && t.name == self.canary.target.name)"
).message("the canary target's name must differ from every target's name").field_path(".canary.target.name"))]
pub struct ModelRouteSpec {
    /// Alias clients send as `model`. Defaults to the object's name. Aliases
    /// are global: when two routes claim one, the older keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = MODEL_ID_PATTERN))]
    pub model: Option<String>,

    /// How a target is chosen for each request. Defaults to `weighted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,

    /// The upstream models that serve this alias; at least one.
    #[schemars(length(min = 1, max = 64))]
    pub targets: Vec<Target>,

    /// Moves a share of the traffic to one more target, manually (`percent`)
    /// or progressively (`steps`, driven by the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,

    /// Sends a shadow copy of a share of the requests to one more target and
    /// discards its response. Accepted but not served yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,

    /// Other aliases, tried in order after this route's targets failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253), regex(pattern = MODEL_ID_PATTERN)))]
    pub fallbacks: Option<Vec<String>>,

    /// Retries of the same target. Defaults: 2 attempts, 250ms backoff, 4s maximum backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,

    /// Time limits. Defaults: request 300s, attempt 60s, firstToken 20s, idle 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,

    /// Takes a failing target out of rotation. Defaults: 5 consecutive failures, open for 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
}

/// How a target is chosen among a route's targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Random by relative weight.
    #[default]
    Weighted,
    /// Cheapest price first, weight as tie-break.
    Cost,
    /// Lowest recent latency first.
    Latency,
    /// Fewest requests in flight first.
    LeastBusy,
}

/// One upstream model at one provider account.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Stable id used in metrics, status and the canary; unique within the
    /// route. Defaults to `<provider>-<model>` made DNS-safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: Option<String>,

    /// Name of a ProviderSecret in the same namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub provider: String,

    /// Upstream model id sent to the provider, e.g. `gpt-4o-mini`.
    #[schemars(length(min = 1, max = 256), regex(pattern = MODEL_ID_PATTERN))]
    pub model: String,

    /// Relative integer weight; 0 drains the target. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1_000_000))]
    pub weight: Option<u32>,

    /// Context window in tokens; requests estimated larger skip this target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub context_window: Option<u64>,

    /// Price in USD per million tokens; overrides the built-in price table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
}

/// USD per million tokens, as decimal strings such as `"0.15"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// USD per million input (prompt) tokens.
    #[schemars(length(max = 20), regex(pattern = DECIMAL_PATTERN))]
    pub input_per_million: String,
    /// USD per million output (completion) tokens.
    #[schemars(length(max = 20), regex(pattern = DECIMAL_PATTERN))]
    pub output_per_million: String,
    /// USD per million input tokens read from the provider's prompt cache; defaults to
    /// `inputPerMillion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20), regex(pattern = DECIMAL_PATTERN))]
    pub cached_input_per_million: Option<String>,
    /// USD per million input tokens written to the provider's prompt cache (Anthropic);
    /// defaults to `inputPerMillion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20), regex(pattern = DECIMAL_PATTERN))]
    pub cache_write_per_million: Option<String>,
}

/// A share of traffic moved to one more target.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.percent) || !self.percent.matches('^[0-9]+([.][0-9]+)?$') || double(self.percent) <= 100.0"
).message("canary percent must be between 0 and 100").field_path(".percent"))]
#[x_kube(validation = Rule::new(
    "!has(self.steps) || !self.steps.all(s, s.matches('^[0-9]+([.][0-9]+)?$')) || (self.steps.map(s, double(s)).isSorted() && self.steps.all(a, self.steps.exists_one(b, double(b) == double(a))))"
).message("canary steps must be strictly increasing").field_path(".steps"))]
pub struct Canary {
    /// The new target.
    pub target: Target,

    /// Share of requests sent to the canary target, in percent with at most
    /// two decimals (`"0.01"` to `"100"`). Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 6), regex(pattern = PERCENT_PATTERN))]
    pub percent: Option<String>,

    /// Progressive rollout: shares the operator moves through, strictly
    /// increasing, e.g. `["1", "10", "50", "100"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 20), inner(length(max = 6), regex(pattern = PERCENT_PATTERN)))]
    pub steps: Option<Vec<String>>,

    /// Time spent at each step before it is analysed, e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub step_interval: Option<String>,

    /// Thresholds a step must stay within to advance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<CanaryAnalysis>,

    /// Keeps the same caller on the same side of the split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,

    /// Freezes the progressive rollout at its current share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// Thresholds for one canary analysis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAnalysis {
    /// Highest tolerated error rate, a fraction such as `"0.02"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8), regex(pattern = FRACTION_PATTERN))]
    pub max_error_rate: Option<String>,
    /// Highest tolerated p95 latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_p95_latency_ms: Option<u64>,
    /// Highest tolerated p95 time to first token in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_p95_first_token_ms: Option<u64>,
    /// Fewer requests than this in a step means hold, not fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    /// Failed checks that roll the canary back to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_limit: Option<u32>,
}

/// Session stickiness for the canary split.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sticky {
    /// Request header whose value keeps a caller on one side, e.g. `x-user-id`.
    #[schemars(length(min = 1, max = 128), regex(pattern = HEADER_NAME_PATTERN))]
    pub header: String,
}

/// A shadow copy of a share of the requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// Where the copies go.
    pub target: Target,
    /// Share of requests copied, in percent with at most two decimals. Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 6), regex(pattern = PERCENT_PATTERN))]
    pub percent: Option<String>,
}

/// Retries of the same target; `Retry-After` is honoured.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.backoff) || !has(self.maxBackoff) || duration(self.backoff) <= duration(self.maxBackoff)"
).message("backoff must not exceed maxBackoff").field_path(".backoff"))]
pub struct Retry {
    /// Retries after the first attempt, 0 to 10. Defaults to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10))]
    pub attempts: Option<u32>,
    /// Delay before the first retry, doubled each time. Defaults to `250ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub backoff: Option<String>,
    /// Upper bound of the backoff. Defaults to `4s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub max_backoff: Option<String>,
}

/// Time limits; each must be greater than zero.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Whole request, all attempts and fallbacks included. Defaults to `300s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub request: Option<String>,
    /// One attempt. Defaults to `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub attempt: Option<String>,
    /// Until the first content chunk of a stream. Defaults to `20s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub first_token: Option<String>,
    /// Longest gap between two stream chunks. Defaults to `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub idle: Option<String>,
}

/// Per-target circuit breaker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Consecutive failures that open the circuit; 0 disables the breaker. Defaults to 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10_000))]
    pub consecutive_failures: Option<u32>,
    /// How long an open circuit keeps the target out. Defaults to `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub open_for: Option<String>,
}

// === status ===

/// Observed state, written by the operator only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelRouteStatus {
    /// `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `ResolvedRefs` and `Programmed`, with Gateway API meanings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// How many proxies applied a table with this generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<ProxiesStatus>,
    /// Progress of the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
}

/// Rollout of the table to the proxy fleet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxiesStatus {
    /// Live proxies that applied a table with this generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub programmed: Option<u32>,
    /// Live proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u32>,
    /// Hash (`sha256:<hex>`) of the first snapshot that carried this generation; later
    /// snapshots that change other objects do not rewrite it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

/// Where a canary rollout stands.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// Phase of the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CanaryPhase>,
    /// Index of the current entry of `spec.canary.steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// Share in force, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<String>,
    /// Failed checks so far at this generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_checks: Option<u32>,
    /// When the phase or step last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The latest analysis of the canary target's numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<CanaryAnalysisResult>,
}

/// Phase of a canary rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CanaryPhase {
    /// A manual share is in force (no `steps`).
    Manual,
    /// Moving through `steps`.
    Progressing,
    /// Frozen by `paused: true`.
    Paused,
    /// The last step passed.
    Promoted,
    /// `failureLimit` was reached; the share is back to 0.
    RolledBack,
}

/// Numbers and verdict of one canary analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAnalysisResult {
    /// When the analysis ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Requests the canary target served in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Observed error rate, a fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<String>,
    /// Observed p95 latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_latency_ms: Option<u64>,
    /// Observed p95 time to first token in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_first_token_ms: Option<u64>,
    /// Whether every threshold held; absent when there were too few requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
    /// Human-readable summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
