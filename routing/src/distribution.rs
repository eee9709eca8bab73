//! The operator → proxy channel (design §4): paths, headers and the report a
//! proxy sends back. The snapshot itself travels as [`Snapshot`](crate::Snapshot)'s JSON.
//!
//! ```text
//! proxy                                   operator
//!   GET /v1/table                   ──▶   200 + Snapshot JSON, ETag "<hash>"   (a snapshot the proxy has not seen)
//!     If-None-Match: "<last seen>"        304 after `wait` without a change     (long poll)
//!     Authorization: Bearer <token>       401 bad or missing token
//!     x-switchyard-proxy: <name>          503 no snapshot compiled yet
//!   POST /v1/report  (Report JSON)  ──▶   204; 400 with a message for a bad body
//! ```
//!
//! "Seen" covers rejected snapshots too: a proxy that rejected a hash keeps
//! sending it as `If-None-Match`, so the operator never sends it again. A
//! report goes out after every apply or reject and at least every
//! [`REPORT_INTERVAL_MS`]; the operator counts a proxy as live while its last
//! report is younger than [`PROXY_TTL_MS`].

use serde::{Deserialize, Serialize};

/// Long-poll for the table.
pub const TABLE_PATH: &str = "/v1/table";
/// Where proxies report what they applied and their per-target counters.
pub const REPORT_PATH: &str = "/v1/report";
/// Header naming the proxy (its pod name) on every request.
pub const PROXY_HEADER: &str = "x-switchyard-proxy";
/// Query parameter of [`TABLE_PATH`]: how long to hold the poll, in seconds (default 30, max 60).
pub const WAIT_PARAM: &str = "wait";
/// Longest interval between two reports of a live proxy.
pub const REPORT_INTERVAL_MS: u64 = 5_000;
/// A proxy whose last report is older than this is no longer counted.
pub const PROXY_TTL_MS: u64 = 15_000;
/// Key of the snapshot JSON in the Secret the operator keeps for booting proxies.
pub const BOOTSTRAP_KEY: &str = "snapshot.json";

/// Upper bounds (inclusive, milliseconds) of the latency histograms in a
/// [`TargetCounters`]; a last, implicit bucket counts everything above.
pub const LATENCY_BUCKETS_MS: [u64; 14] =
    [5, 10, 25, 50, 100, 250, 500, 1_000, 2_000, 4_000, 8_000, 15_000, 30_000, 60_000];

/// What a proxy tells the operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The proxy's name (pod name), unique among live proxies.
    pub proxy: String,
    /// Hash of the snapshot in force, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
    /// The last snapshot this proxy refused, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Rejection>,
    /// Counters since the proxy started, one entry per route target it served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetCounters>,
}

/// A snapshot a proxy refused to install.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub hash: String,
    /// Says what is wrong; never contains a secret.
    pub error: String,
}

/// Cumulative counters of one target of one route since the proxy started.
/// The operator takes differences between reports; a proxy restart shows as
/// counters going down and starts a new series.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetCounters {
    /// The alias of the route.
    pub route: String,
    /// The target's name within the route.
    pub target: String,
    /// Requests this target was tried for.
    pub requests: u64,
    /// Of those, the ones the target failed (a request then rescued by a
    /// retry on another target or a fallback still counts here).
    pub errors: u64,
    /// Total latency of served requests, by [`LATENCY_BUCKETS_MS`] (one more entry for the overflow).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_ms: Vec<u64>,
    /// Time to first token of served streams, by the same buckets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_token_ms: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_round_trips_in_camel_case() {
        let report = Report {
            proxy: "proxy-0".into(),
            applied: Some("sha256:ab".into()),
            rejected: Some(Rejection { hash: "sha256:cd".into(), error: "bad".into() }),
            targets: vec![TargetCounters {
                route: "chat".into(),
                target: "gpt".into(),
                requests: 3,
                errors: 1,
                latency_ms: vec![0; LATENCY_BUCKETS_MS.len() + 1],
                first_token_ms: Vec::new(),
            }],
        };
        let json = serde_json::to_value(&report).unwrap_or_default();
        assert_eq!(json["rejected"]["hash"], "sha256:cd");
        assert_eq!(json["targets"][0]["latencyMs"].as_array().map(Vec::len), Some(15));
        assert!(json["targets"][0].get("firstTokenMs").is_none());
        let back: Report = serde_json::from_value(json).unwrap_or_default();
        assert_eq!(back, report);
    }

    #[test]
    fn a_minimal_report_is_just_a_name() {
        let back: Report = serde_json::from_str(r#"{"proxy":"p"}"#).unwrap_or_default();
        assert_eq!(back, Report { proxy: "p".into(), ..Report::default() });
    }
}
