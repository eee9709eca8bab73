//! Status of ModelRoutes and ProviderSecrets: what the operator knows, as
//! Gateway-API-style conditions, written by server-side apply only when it
//! changed.
//!
//! - `Accepted`: the spec is valid and (routes) owns its alias. False with
//!   the compile step's reason (`Invalid`, `Conflict`, ...).
//! - `ResolvedRefs`: every reference resolves. False with the first missing
//!   reference's reason; the message lists them all.
//! - `Programmed`: every live proxy runs a table with this generation.
//!   False: `NotInTable` (left out, see the other two), `NoProxies`,
//!   `Pending` (some proxies have not applied it yet) or `Rejected` (a proxy
//!   refused the current table; the message names it and says why).
//!
//! Transitions into False are also recorded as Warning Events.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use routing::api::{ModelRouteStatus, ProviderSecretStatus, ProxiesStatus};
use routing::diag::{Condition as Kind, Diagnostic};
use routing::table::ObjectRef;
use serde::Serialize;

use crate::fleet::LiveProxy;

/// The one field manager that writes status.
pub const MANAGER: &str = "switchyard-operator";

/// Longest condition message written (the API allows 32 768 bytes).
const MAX_MESSAGE: usize = 4_000;

/// How the live proxies stand with one object at one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub programmed: u32,
    pub total: u32,
    /// A proxy that refused the current table and does not run this generation: (proxy, error).
    pub rejected_by: Option<(String, String)>,
}

impl Rollout {
    pub fn of(object: &ObjectRef, generation: Option<i64>, current_hash: &str, live: &[LiveProxy]) -> Self {
        let mut rollout = Self { programmed: 0, total: 0, rejected_by: None };
        for proxy in live {
            rollout.total += 1;
            if proxy.applied.as_ref().and_then(|served| served.get(object)) == Some(&generation) {
                rollout.programmed += 1;
            } else if let Some(rejection) = proxy.rejected.as_ref().filter(|r| r.hash == current_hash)
                && rollout.rejected_by.is_none()
            {
                rollout.rejected_by = Some((proxy.name.clone(), rejection.error.clone()));
            }
        }
        rollout
    }
}

/// Everything status is computed from, for one object.
pub struct Facts<'a> {
    pub generation: Option<i64>,
    pub diagnostics: Vec<&'a Diagnostic>,
    /// Whether the current table serves the object.
    pub in_table: bool,
    pub rollout: Rollout,
    pub current_hash: &'a str,
}

/// The three conditions. `previous` keeps `lastTransitionTime` of a
/// condition whose status did not change.
pub fn conditions(facts: &Facts<'_>, previous: &[Condition], now: &Time) -> Vec<Condition> {
    let generation = facts.generation;
    let make = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: truncate(message),
            observed_generation: generation,
            last_transition_time,
        }
    };
    let from_diagnostics = |kind: Kind, name: &str, ok_message: &str| {
        let errors: Vec<&&Diagnostic> =
            facts.diagnostics.iter().filter(|d| d.is_error() && d.condition == kind).collect();
        match errors.first() {
            None => {
                let warnings: Vec<String> = facts
                    .diagnostics
                    .iter()
                    .filter(|d| !d.is_error() && d.condition == kind)
                    .map(|d| describe(d))
                    .collect();
                let message = if warnings.is_empty() {
                    ok_message.to_owned()
                } else {
                    format!("{ok_message}; warnings: {}", warnings.join("; "))
                };
                make(name, true, name, message)
            }
            Some(first) => {
                // `NoUsableTarget` is a consequence: name the cause when there is one.
                let cause =
                    errors.iter().find(|d| d.reason != routing::diag::reason::NO_USABLE_TARGET).unwrap_or(first);
                let message = errors.iter().map(|d| describe(d)).collect::<Vec<_>>().join("; ");
                make(name, false, &cause.reason, message)
            }
        }
    };
    let accepted = from_diagnostics(Kind::Accepted, "Accepted", "the spec is valid");
    let resolved = from_diagnostics(Kind::ResolvedRefs, "ResolvedRefs", "every reference resolves");
    let rollout = &facts.rollout;
    let counted = format!("{}/{} proxies", rollout.programmed, rollout.total);
    let programmed = if !facts.in_table {
        make("Programmed", false, "NotInTable", "not served: see the Accepted and ResolvedRefs conditions".to_owned())
    } else if rollout.total == 0 {
        make("Programmed", false, "NoProxies", format!("{counted}: no proxy is connected to the operator"))
    } else if let Some((proxy, error)) = &rollout.rejected_by {
        let hash = facts.current_hash;
        make("Programmed", false, "Rejected", format!("{counted}: proxy {proxy} rejected table {hash}: {error}"))
    } else if rollout.programmed < rollout.total {
        make("Programmed", false, "Pending", format!("{counted}: waiting for the others to apply it"))
    } else {
        make("Programmed", true, "Programmed", counted)
    };
    vec![accepted, resolved, programmed]
}

fn describe(d: &Diagnostic) -> String {
    match &d.field {
        Some(field) if !d.message.contains(&format!("`{field}`")) => format!("`{field}`: {}", d.message),
        _ => d.message.clone(),
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(" ...");
    }
    message
}

/// What was last written per object, so that unchanged status is not written again.
pub struct Writer {
    client: Client,
    recorder: Recorder,
    written: HashMap<ObjectRef, serde_json::Value>,
}

/// A status computed for a route.
pub fn route_status(
    facts: &Facts<'_>,
    previous: Option<&ModelRouteStatus>,
    table: Option<String>,
    now: &Time,
) -> ModelRouteStatus {
    let previous_conditions = previous.map_or(&[][..], |p| &p.conditions[..]);
    ModelRouteStatus {
        observed_generation: facts.generation,
        conditions: conditions(facts, previous_conditions, now),
        proxies: Some(ProxiesStatus {
            programmed: Some(facts.rollout.programmed),
            total: Some(facts.rollout.total),
            table,
        }),
        // Canary progress belongs to the canary controller; keep what is there.
        canary: previous.and_then(|p| p.canary.clone()),
    }
}

/// A status computed for a ProviderSecret.
pub fn provider_status(facts: &Facts<'_>, previous: Option<&ProviderSecretStatus>, now: &Time) -> ProviderSecretStatus {
    let previous_conditions = previous.map_or(&[][..], |p| &p.conditions[..]);
    ProviderSecretStatus {
        observed_generation: facts.generation,
        conditions: conditions(facts, previous_conditions, now),
    }
}

impl Writer {
    pub fn new(client: Client, identity: &str) -> Self {
        let reporter =
            kube::runtime::events::Reporter { controller: MANAGER.to_owned(), instance: Some(identity.to_owned()) };
        Self { recorder: Recorder::new(client.clone(), reporter), client, written: HashMap::new() }
    }

    /// The status this process last wrote for `key`.
    pub fn known(&self, key: &ObjectRef) -> Option<serde_json::Value> {
        self.written.get(key).cloned()
    }

    /// Writes `desired` unless it equals `known` (what the object has, or
    /// what was last written). Returns whether it wrote.
    pub async fn write<K, S: Serialize>(
        &mut self,
        object: &K,
        key: &ObjectRef,
        known: Option<serde_json::Value>,
        desired: &S,
    ) -> Result<bool, kube::Error>
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Serialize,
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        let value = serde_json::to_value(desired).unwrap_or_default();
        if known.as_ref() == Some(&value) {
            return Ok(false);
        }
        let before = conditions_of(known.as_ref());
        let after = conditions_of(Some(&value));
        let namespace = object.namespace().unwrap_or_else(|| "default".to_owned());
        let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": value,
        });
        api.patch_status(&object.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
        self.written.insert(key.clone(), value);
        self.events(object, &before, &after).await;
        Ok(true)
    }

    /// A Warning Event for each condition that turned False (or changed its
    /// False reason), except the transient `Pending` and `NoProxies` and
    /// `NotInTable`, whose cause has its own event.
    async fn events<K: Resource<DynamicType = ()>>(&self, object: &K, before: &[Condition], after: &[Condition]) {
        for condition in after {
            let transient = matches!(condition.reason.as_str(), "Pending" | "NoProxies" | "NotInTable");
            let was = before.iter().find(|c| c.type_ == condition.type_);
            let same = was.is_some_and(|c| c.status == condition.status && c.reason == condition.reason);
            if condition.status != "False" || transient || same {
                continue;
            }
            let event = Event {
                type_: EventType::Warning,
                reason: condition.reason.clone(),
                note: Some(condition.message.chars().take(1_000).collect()),
                action: format!("Set{}", condition.type_),
                secondary: None,
            };
            if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
                tracing::warn!(%error, object = %object.name_any(), "cannot record an event");
            }
        }
    }

    /// Forgets objects that no longer exist.
    pub fn retain(&mut self, exists: impl Fn(&ObjectRef) -> bool) {
        self.written.retain(|key, _| exists(key));
    }
}

fn conditions_of(status: Option<&serde_json::Value>) -> Vec<Condition> {
    status.and_then(|v| v.get("conditions").cloned()).and_then(|c| serde_json::from_value(c).ok()).unwrap_or_default()
}

/// The key of a route or provider in diagnostics and tables.
pub fn key_of<K: ResourceExt>(kind: &str, object: &K) -> ObjectRef {
    ObjectRef::new(kind, &object.namespace().unwrap_or_else(|| "default".to_owned()), &object.name_any())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use routing::diag::{Condition as Kind, Diagnostic, reason};
    use routing::distribution::Rejection;

    use super::*;
    use crate::fleet::{LiveProxy, Served};

    fn route() -> ObjectRef {
        ObjectRef::new("ModelRoute", "ai", "chat")
    }

    fn proxy(name: &str, served: Option<Served>, rejected: Option<(&str, &str)>) -> LiveProxy {
        LiveProxy {
            name: name.to_owned(),
            applied: served.map(Arc::new),
            rejected: rejected.map(|(hash, error)| Rejection { hash: hash.to_owned(), error: error.to_owned() }),
        }
    }

    fn at(generation: i64) -> Served {
        Served::from([(route(), Some(generation))])
    }

    fn time(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap_or_default())
    }

    fn facts<'a>(diagnostics: Vec<&'a Diagnostic>, in_table: bool, rollout: Rollout) -> Facts<'a> {
        Facts { generation: Some(3), diagnostics, in_table, rollout, current_hash: "sha256:new" }
    }

    fn find<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} condition"))
    }

    #[test]
    fn rollout_counts_proxies_running_this_generation() {
        let live = [proxy("a", Some(at(3)), None), proxy("b", Some(at(2)), None), proxy("c", None, None)];
        let rollout = Rollout::of(&route(), Some(3), "sha256:new", &live);
        assert_eq!(rollout, Rollout { programmed: 1, total: 3, rejected_by: None });
    }

    #[test]
    fn rollout_names_a_proxy_that_rejected_the_current_table_only() {
        let live = [
            proxy("a", Some(at(3)), Some(("sha256:new", "ignored: runs gen 3"))),
            proxy("b", Some(at(2)), Some(("sha256:old", "an older rejection"))),
            proxy("c", Some(at(2)), Some(("sha256:new", "table too large"))),
        ];
        let rollout = Rollout::of(&route(), Some(3), "sha256:new", &live);
        assert_eq!(rollout.programmed, 1);
        assert_eq!(rollout.rejected_by, Some(("c".to_owned(), "table too large".to_owned())));
    }

    #[test]
    fn all_true_when_valid_resolved_and_applied_everywhere() {
        let now = time(1_000);
        let conditions =
            conditions(&facts(vec![], true, Rollout { programmed: 2, total: 2, rejected_by: None }), &[], &now);
        for c in &conditions {
            assert_eq!((c.status.as_str(), c.observed_generation), ("True", Some(3)), "{c:?}");
        }
        assert_eq!(find(&conditions, "Programmed").message, "2/2 proxies");
    }

    #[test]
    fn programmed_says_why_not() {
        let now = time(1_000);
        let cases = [
            (false, Rollout { programmed: 0, total: 2, rejected_by: None }, "NotInTable"),
            (true, Rollout { programmed: 0, total: 0, rejected_by: None }, "NoProxies"),
            (true, Rollout { programmed: 1, total: 2, rejected_by: None }, "Pending"),
            (
                true,
                Rollout { programmed: 1, total: 2, rejected_by: Some(("p-7".into(), "too big".into())) },
                "Rejected",
            ),
        ];
        for (in_table, rollout, expected) in cases {
            let conditions = conditions(&facts(vec![], in_table, rollout), &[], &now);
            let programmed = find(&conditions, "Programmed");
            assert_eq!((programmed.status.as_str(), programmed.reason.as_str()), ("False", expected));
        }
        let rejected = Rollout { programmed: 1, total: 2, rejected_by: Some(("p-7".into(), "too big".into())) };
        let conditions = conditions(&facts(vec![], true, rejected), &[], &now);
        assert_eq!(
            find(&conditions, "Programmed").message,
            "1/2 proxies: proxy p-7 rejected table sha256:new: too big"
        );
    }

    #[test]
    fn resolved_refs_names_the_cause_and_lists_every_error() {
        let object = route();
        let missing = Diagnostic::error(
            &object,
            Kind::ResolvedRefs,
            reason::PROVIDER_NOT_FOUND,
            "spec.targets[0].provider",
            "ProviderSecret `gone` does not exist",
        );
        let none_left = Diagnostic::error(
            &object,
            Kind::ResolvedRefs,
            reason::NO_USABLE_TARGET,
            "spec.targets",
            "no usable target",
        );
        let all = Rollout { programmed: 0, total: 1, rejected_by: None };
        let conditions = conditions(&facts(vec![&none_left, &missing], false, all), &[], &time(5));
        let resolved = find(&conditions, "ResolvedRefs");
        assert_eq!((resolved.status.as_str(), resolved.reason.as_str()), ("False", "ProviderNotFound"));
        assert!(
            resolved.message.contains("`gone`") && resolved.message.contains("no usable target"),
            "{}",
            resolved.message
        );
        assert_eq!(find(&conditions, "Accepted").status, "True");
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let before =
            conditions(&facts(vec![], true, Rollout { programmed: 1, total: 2, rejected_by: None }), &[], &time(10));
        let later = conditions(
            &facts(vec![], true, Rollout { programmed: 2, total: 2, rejected_by: None }),
            &before,
            &time(20),
        );
        assert_eq!(find(&later, "Accepted").last_transition_time, time(10));
        assert_eq!(find(&later, "Programmed").last_transition_time, time(20));
    }
}
