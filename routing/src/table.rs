//! The compiled routing table: the only wire format between operator and proxy.
//!
//! Everything here is validated and free of Kubernetes types (except
//! [`ObjectRef`], kept for diagnostics and debug output). Durations are whole
//! milliseconds, shares are basis points (1/100 of a percent), maps are
//! `BTreeMap`s so that serialization, and with it [`Snapshot::hash`], is
//! deterministic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::Redacted;

/// Basis points in 100 %: a canary share of `"0.01"` is 1, `"100"` is 10 000.
pub const FULL_SHARE: u32 = 10_000;

/// The object a table entry or diagnostic came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self { kind: kind.to_owned(), namespace: namespace.to_owned(), name: name.to_owned() }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One immutable, content-addressed unit of configuration: the routing table
/// plus the credentials it needs. Proxies swap whole snapshots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `sha256:<hex>` over the canonical JSON of `table` and `credentials`.
    pub hash: String,
    pub table: RoutingTable,
    /// API keys by provider key (`namespace/name`). Never printed: see [`Redacted`].
    pub credentials: BTreeMap<String, Redacted>,
}

impl Snapshot {
    /// Builds a snapshot and computes its content hash.
    pub fn new(table: RoutingTable, credentials: BTreeMap<String, Redacted>) -> Self {
        let hash = content_hash(&table, &credentials);
        Self { hash, table, credentials }
    }

    /// Checks that the snapshot is internally consistent: the hash matches the
    /// content, and every reference resolves. A proxy calls this before it
    /// installs a snapshot that came over the wire.
    pub fn check(&self) -> Result<(), String> {
        let expected = content_hash(&self.table, &self.credentials);
        if expected != self.hash {
            return Err(format!("snapshot hash `{}` does not match its content `{expected}`", self.hash));
        }
        self.table.check()
    }
}

fn content_hash(table: &RoutingTable, credentials: &BTreeMap<String, Redacted>) -> String {
    #[derive(Serialize)]
    struct Canonical<'a> {
        table: &'a RoutingTable,
        credentials: &'a BTreeMap<String, Redacted>,
    }
    // Serializing plain structs and BTreeMaps cannot fail; an empty input
    // still hashes deterministically if it ever did.
    let bytes = serde_json::to_vec(&Canonical { table, credentials }).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

/// Routes by alias and the providers they use.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingTable {
    /// Keyed by the alias clients send as `model`.
    pub routes: BTreeMap<String, Route>,
    /// Keyed by `namespace/name` of the ProviderSecret.
    pub providers: BTreeMap<String, Provider>,
}

impl RoutingTable {
    /// Every target names a known provider, every fallback a known alias,
    /// every route has a pickable target.
    pub fn check(&self) -> Result<(), String> {
        for (alias, route) in &self.routes {
            let targets = route.targets.iter().chain(route.canary.as_ref().map(|c| &c.target));
            for target in targets {
                if !self.providers.contains_key(&target.provider) {
                    return Err(format!(
                        "route `{alias}` target `{}` names unknown provider `{}`",
                        target.name, target.provider
                    ));
                }
            }
            if !route.targets.iter().any(|t| t.weight > 0) && route.canary.as_ref().is_none_or(|c| c.share == 0) {
                return Err(format!("route `{alias}` has no target with weight > 0"));
            }
            for fallback in &route.fallbacks {
                if !self.routes.contains_key(fallback) {
                    return Err(format!("route `{alias}` falls back to unknown alias `{fallback}`"));
                }
            }
            if let Some(c) = &route.canary
                && c.share > FULL_SHARE
            {
                return Err(format!("route `{alias}` canary share {} is over {FULL_SHARE}", c.share));
            }
        }
        Ok(())
    }
}

/// What serves one alias.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub alias: String,
    pub source: ObjectRef,
    /// `metadata.generation` of the source object, when it has one.
    pub generation: Option<i64>,
    pub strategy: Strategy,
    /// Never empty; at least one has `weight > 0` unless the canary takes 100 %.
    pub targets: Vec<Target>,
    pub canary: Option<Canary>,
    /// Other aliases, tried in order after this route's targets failed.
    /// Already flattened: a fallback's own fallbacks are not followed again.
    pub fallbacks: Vec<String>,
    pub retry: Retry,
    pub timeouts: Timeouts,
    pub circuit_breaker: CircuitBreaker,
}

/// How a target is chosen among a route's targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Random by relative weight.
    #[default]
    Weighted,
    /// Cheapest price first (input + output per million), weight as tie-break.
    Cost,
    /// Lowest recent latency first.
    Latency,
    /// Fewest requests in flight first.
    LeastBusy,
}

/// One upstream model at one provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Stable id in metrics, status and logs; unique within the route.
    pub name: String,
    /// Key into [`RoutingTable::providers`].
    pub provider: String,
    /// Upstream model id sent to the provider.
    pub model: String,
    /// Relative weight; 0 = drained.
    pub weight: u32,
    pub context_window: Option<u64>,
    pub price: Option<Price>,
}

/// USD per million tokens, as decimal strings so that nothing is rounded in transit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub input_per_million: String,
    pub output_per_million: String,
    /// Cache reads; `None` = the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_million: Option<String>,
    /// Cache writes; `None` = the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_million: Option<String>,
}

/// A share of traffic moved to one more target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub target: Target,
    /// Share in basis points, 0..=[`FULL_SHARE`].
    pub share: u32,
    /// Header whose value keeps a caller on the same side of the split.
    pub sticky_header: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    /// Retries of the same target after the first attempt.
    pub attempts: u32,
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Self { attempts: 2, backoff_ms: 250, max_backoff_ms: 4_000 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeouts {
    /// Whole request, all attempts and fallbacks included.
    pub request_ms: u64,
    /// One attempt, until the response is complete (non-streaming) or committed (streaming).
    pub attempt_ms: u64,
    /// Until the first content chunk of a stream.
    pub first_token_ms: u64,
    /// Longest gap between two stream chunks.
    pub idle_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { request_ms: 300_000, attempt_ms: 60_000, first_token_ms: 20_000, idle_ms: 30_000 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CircuitBreaker {
    /// 0 disables the breaker.
    pub consecutive_failures: u32,
    pub open_for_ms: u64,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self { consecutive_failures: 5, open_for_ms: 30_000 }
    }
}

/// How to reach one provider account. Holds no secret: the API key, if any,
/// is in [`Snapshot::credentials`] under the same key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provider {
    pub source: ObjectRef,
    pub kind: ProviderKind,
    /// Base URL as the provider's SDK means it (see design §2), without a trailing `/`.
    /// Empty for `mock`.
    pub base_url: String,
    /// Extra static, non-secret headers.
    pub headers: BTreeMap<String, String>,
    pub limits: Limits,
    pub mock: Option<MockSettings>,
    /// Azure OpenAI's `api-version` (`spec.azure.apiVersion`): with it the
    /// proxy calls the deployment URLs
    /// (`/openai/deployments/{model}/...?api-version=...`), without it Azure's
    /// v1 API (`/openai/v1/...`). Always `None` for other providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// The wire protocol a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Openai,
    AzureOpenai,
    Anthropic,
    Gemini,
    Cohere,
    Mistral,
    OpenaiCompatible,
    Mock,
}

impl ProviderKind {
    /// The spelling used in manifests, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::AzureOpenai => "azure-openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Cohere => "cohere",
            Self::Mistral => "mistral",
            Self::OpenaiCompatible => "openai-compatible",
            Self::Mock => "mock",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub max_in_flight: Option<u32>,
}

/// Behaviour of the built-in `mock` provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MockSettings {
    /// Delay before the first token (or the whole response).
    pub latency_ms: u64,
    /// Streaming speed; 0 = all at once.
    pub tokens_per_second: u32,
    /// Probability of an injected failure, in parts per million.
    pub failure_ppm: u32,
    /// HTTP status of an injected failure.
    pub failure_status: u16,
}

impl Default for MockSettings {
    fn default() -> Self {
        Self { latency_ms: 0, tokens_per_second: 0, failure_ppm: 0, failure_status: 503 }
    }
}
