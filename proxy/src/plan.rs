//! Which targets a request tries, in which order.
//!
//! The plan is built once per request from one table snapshot: the route's
//! canary (if this request falls in its share), then the route's targets in
//! strategy order, then each fallback alias's targets. Targets that are
//! drained (weight 0), whose circuit is open, or whose context window is too
//! small for the request are left out, with the reason kept for the error
//! message in case nothing is left.

use rand::Rng;
use routing::table::{FULL_SHARE, ProviderKind, Route, RoutingTable, Strategy, Target};

use std::sync::Arc;

use crate::state::{Circuit, Live, LiveTarget};
use crate::tokens::Prompt;

/// One target the request may be sent to.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The route the target belongs to (the requested one or a fallback).
    pub route: &'a Route,
    pub target: &'a Target,
    /// The target's entry in the installed table.
    pub entry: &'a Arc<LiveTarget>,
    /// Reached through `spec.fallbacks`.
    pub fallback: bool,
    pub canary: bool,
}

/// Inputs that steer the choice.
#[derive(Debug, Clone, Copy, Default)]
pub struct Steering<'r> {
    /// Value of the route's sticky header, when the request carries it.
    pub sticky: Option<&'r str>,
    /// The prompt, whose estimated tokens are checked against `contextWindow`
    /// (counted only for targets that have one, and only when the prompt
    /// could be too long for it).
    pub prompt: Option<&'r Prompt<'r>>,
}

/// The ordered candidates, and why others were left out.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    pub candidates: Vec<Candidate<'a>>,
    pub skipped: Vec<String>,
    /// How many of `skipped` were left out for their context window.
    pub too_long: usize,
}

/// Builds the plan for `route`. Deterministic for a given sticky value and
/// table state; otherwise random by weight and canary share.
pub fn plan<'a>(live: &'a Live, route: &'a Route, steering: Steering<'_>) -> Plan<'a> {
    let (canary_bucket, weight_seed) = match steering.sticky.filter(|_| sticky_header(route).is_some()) {
        Some(value) => {
            let h = fnv1a(value.as_bytes());
            (u32::try_from(h % u64::from(FULL_SHARE)).unwrap_or(0), h >> 32)
        }
        None => crate::random::with(|rng| (rng.random_range(0..FULL_SHARE), rng.random())),
    };
    let mut plan = Plan::default();
    add_route(&mut plan, live, route, false, canary_bucket, weight_seed, steering.prompt);
    for alias in &route.fallbacks {
        if let Some(fallback) = live.snapshot.table.routes.get(alias) {
            add_route(&mut plan, live, fallback, true, canary_bucket, weight_seed, steering.prompt);
        }
    }
    plan
}

fn sticky_header(route: &Route) -> Option<&str> {
    route.canary.as_ref().and_then(|c| c.sticky_header.as_deref())
}

/// The header whose value pins a caller, if the route has one.
pub fn sticky_header_name(route: &Route) -> Option<&str> {
    sticky_header(route)
}

fn add_route<'a>(
    plan: &mut Plan<'a>,
    live: &'a Live,
    route: &'a Route,
    fallback: bool,
    canary_bucket: u32,
    weight_seed: u64,
    prompt: Option<&Prompt<'_>>,
) {
    let entries = live.route_targets(&route.alias);
    let push = |plan: &mut Plan<'a>, target: &'a Target, canary: bool| {
        let Some(entry) = entries.and_then(|entries| entries.get(&target.name)) else {
            plan.skipped.push(format!("`{}/{}`: not in the table", route.alias, target.name));
            return;
        };
        if let Some((reason, too_long)) = unusable(entry, target, prompt) {
            plan.too_long += usize::from(too_long);
            plan.skipped.push(format!("`{}/{}`: {reason}", route.alias, target.name));
        } else {
            plan.candidates.push(Candidate { route, target, entry, fallback, canary });
        }
    };
    if let Some(canary) = &route.canary
        && canary_bucket < canary.share
    {
        push(plan, &canary.target, true);
    }
    for target in ordered(live, route, weight_seed) {
        push(plan, target, false);
    }
}

/// Why `target` is left out, and whether that is its context window.
fn unusable(entry: &LiveTarget, target: &Target, prompt: Option<&Prompt<'_>>) -> Option<(String, bool)> {
    if let (Some(window), Some(prompt)) = (target.context_window, prompt) {
        let encoding = entry.encoding;
        if let Err(tokens) = prompt.fits(window, encoding) {
            let reason = format!(
                "request of about {tokens} tokens ({} estimate) exceeds its context window of {window}",
                encoding.name()
            );
            return Some((reason, true));
        }
    }
    (entry.stats.circuit() == Circuit::Open).then(|| ("circuit open after consecutive failures".to_owned(), false))
}

/// The route's targets with weight > 0, best first for its strategy.
fn ordered<'a>(live: &'a Live, route: &'a Route, weight_seed: u64) -> Vec<&'a Target> {
    let mut targets: Vec<&Target> = route.targets.iter().filter(|t| t.weight > 0).collect();
    match route.strategy {
        Strategy::Weighted => {
            let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
            if total > 0 {
                let mut pick = weight_seed % total;
                let first = targets
                    .iter()
                    .position(|t| {
                        let w = u64::from(t.weight);
                        if pick < w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .unwrap_or(0);
                let chosen = targets.remove(first);
                targets.sort_by_key(|t| std::cmp::Reverse(t.weight));
                targets.insert(0, chosen);
            }
        }
        Strategy::Cost => targets.sort_by(|a, b| {
            price_of(live, route, a).total_cmp(&price_of(live, route, b)).then_with(|| b.weight.cmp(&a.weight))
        }),
        Strategy::Latency => {
            targets.sort_by_key(|t| live.target_stats(&route.alias, &t.name).map_or(0, |s| s.latency_us()));
        }
        Strategy::LeastBusy => targets.sort_by_key(|t| {
            live.target_stats(&route.alias, &t.name)
                .map_or(0, |s| s.in_flight.load(std::sync::atomic::Ordering::Relaxed))
        }),
    }
    targets
}

/// Input plus output price per million tokens (the manifest's, else the
/// built-in table's); unknown prices sort last.
fn price_of(live: &Live, route: &Route, target: &Target) -> f64 {
    let pricing = live.target(&route.alias, &target.name).and_then(|t| t.pricing);
    pricing.map_or(f64::INFINITY, |p| p.rates.input + p.rates.output)
}

/// The provider kind of a target (the table check guarantees its provider
/// exists; a missing one counts as OpenAI-compatible, which has no built-in
/// prices).
pub fn kind_of(table: &RoutingTable, target: &Target) -> ProviderKind {
    table.providers.get(&target.provider).map_or(ProviderKind::OpenaiCompatible, |p| p.kind)
}

/// FNV-1a with a splitmix64 finaliser: a stable, well-mixed hash, so sticky
/// assignment survives restarts and is the same on every proxy replica.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}
