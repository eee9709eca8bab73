//! The compile step: ModelRoutes, ProviderSecrets and Secrets in, one
//! [`Snapshot`] (routing table + credentials) and a list of [`Diagnostic`]s
//! out.
//!
//! [`compile`] is pure, synchronous and deterministic: it reads nothing but
//! its input, and identical inputs give an identical snapshot hash and
//! identical, sorted diagnostics, whatever the order of the input vectors.
//! It never fails as a whole: a bad object is reported and left out, and
//! every other object keeps working.
//!
//! # Rules
//!
//! **Validation.** Every check of the CRD schema (patterns, ranges, sizes and
//! CEL rules) runs again here, because standalone mode has no API server.
//! All problems of an object are reported, not just the first, each with its
//! field path (`spec.targets[0].weight`) and a message saying how to fix it.
//! An invalid spec gets `Accepted=False`, reason `Invalid`, and the object is
//! left out. `metadata.name` must be a DNS subdomain, `metadata.namespace` a
//! DNS label (a missing namespace means `default`).
//!
//! **Defaults.** alias = `spec.model`, else `metadata.name`; target name =
//! `<provider>-<model>` made a DNS label; weight 1; strategy `weighted`;
//! retry {attempts 2, backoff 250ms, maxBackoff 4s} (when only `backoff` is
//! set and exceeds 4s, the cap follows it); timeouts {request 300s, attempt
//! 60s, firstToken 20s, idle 30s}; circuitBreaker {5, 30s}; canary percent 0.
//! Durations become milliseconds, percents basis points
//! ([`FULL_SHARE`](crate::table::FULL_SHARE) = 100 %), the mock failure rate
//! parts per million. Sticky header names are lowercased.
//!
//! **ProviderSecrets.** `baseUrl` defaults to the vendor's public endpoint
//! (openai `https://api.openai.com/v1`, anthropic `https://api.anthropic.com`,
//! gemini `https://generativelanguage.googleapis.com`, cohere
//! `https://api.cohere.com`, mistral `https://api.mistral.ai/v1`), is required
//! for `azure-openai` and for `openai-compatible` without `preset` (whose
//! base URL is the default otherwise), loses trailing `/`, and is
//! empty for `mock` (a set one is ignored with a warning). `apiKey` is
//! required except for `openai-compatible` (optional, but required with the
//! hosted presets `groq` and `together`) and `mock` (ignored with a warning).
//! `preset` is only allowed with `openai-compatible`; `azure.apiVersion`
//! reaches the table as `api_version`. A missing Secret or key gives `ResolvedRefs=False`
//! (`SecretNotFound` / `SecretKeyNotFound`; an empty or non-UTF-8 value
//! `InvalidSecret`) and the ProviderSecret is left out. The key is trimmed of
//! surrounding whitespace (a trailing newline from `echo | base64` is the
//! usual culprit). A good ProviderSecret becomes
//! [`table::Provider`](crate::table::Provider) under `namespace/name`, its
//! key goes into [`Snapshot::credentials`] under the same key. Messages name
//! Secrets and keys, never values.
//!
//! **Alias conflicts.** Only valid routes claim aliases, across namespaces.
//! Among routes claiming one alias the oldest wins: earliest
//! `metadata.creationTimestamp` (a route without one counts as newer than any
//! route with one; two without compare equal), then lowest load order, then
//! `namespace/name`. The others get `Accepted=False`, reason `Conflict`,
//! naming the winner, and are left out. A winner whose references then fail
//! still holds the alias (as in the Gateway API, `ResolvedRefs` does not
//! affect conflicts), so ownership does not flip when a Secret is deleted.
//!
//! **Targets.** A target whose ProviderSecret is missing (`ProviderNotFound`)
//! or unusable (`InvalidProvider`) is dropped with a `ResolvedRefs` error on
//! the route. The route stays while at least one target remains and one of
//! them has weight > 0 or the canary takes 100 %; otherwise `NoUsableTarget`
//! and the route is left out. A canary target is dropped the same way (the
//! route is then served without a canary).
//!
//! **Fallbacks.** An alias that is not in the final table is dropped with
//! `FallbackNotFound`. A cycle (`a → b → a`, or a route naming itself) gives
//! `FallbackCycle` on every route in it; those routes stay in the table,
//! because [`Route::fallbacks`](crate::table::Route::fallbacks) is already
//! flattened: the transitive chain, depth-first in listed order,
//! de-duplicated, without the route's own alias, stopping at aliases already
//! visited. (Design §2 says a route with a cycle is left out; dropping the
//! repeated edge keeps two otherwise healthy routes serving, and the
//! condition still says exactly what is wrong.)
//!
//! **Not served yet.** `mirror` is validated and accepted with a warning.
//! Canary `steps`, `stepInterval`, `analysis` and `paused` are for the
//! operator; the table gets `share = percent` and the sticky header.
//!
//! **Duplicates.** Two objects of one kind with the same namespace and name
//! (only possible with manifests): the one loaded last wins, as with
//! `kubectl apply`, and a warning says so.

mod fallbacks;
pub mod parse;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::api::{ModelRoute, ProviderSecret};
use crate::diag::{Condition, Diagnostic, Severity, reason};
use crate::secret::Redacted;
use crate::table::{self, FULL_SHARE, ObjectRef, RoutingTable, Snapshot};
use validate::{Finding, Findings, ValidProvider, ValidRoute, ValidTarget};

/// Kind names used in [`ObjectRef`]s and messages.
pub mod kind {
    /// `switchyard.dev/v1alpha1` `ModelRoute`.
    pub const MODEL_ROUTE: &str = "ModelRoute";
    /// `switchyard.dev/v1alpha1` `ProviderSecret`.
    pub const PROVIDER_SECRET: &str = "ProviderSecret";
    /// core/v1 `Secret`.
    pub const SECRET: &str = "Secret";
}

/// One input object and the order it was loaded in.
///
/// `order` breaks ties deterministically: between routes claiming one alias
/// with equal creation timestamps, and between duplicate definitions of one
/// object (the highest wins). Give every object a distinct order; the
/// operator, which has no load order, may use the same value for all, then
/// `namespace/name` decides.
#[derive(Clone, Debug, PartialEq)]
pub struct Input<T> {
    /// Position in load order, lowest first.
    pub order: u64,
    /// The object.
    pub object: T,
}

/// A core/v1 Secret reduced to what compile needs, with every value redacted.
///
/// Build it with [`SecretInput::from_secret`], which merges `data` and
/// `stringData` the way the API server does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecretInput {
    /// `metadata.namespace`, `default` when absent.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Values by key. `Debug` prints `*****` for each.
    pub data: BTreeMap<String, Redacted>,
    /// Keys whose value is not UTF-8 text and so cannot be an API key.
    pub binary_keys: BTreeSet<String>,
}

impl SecretInput {
    /// Merges `data` (base64-decoded by the deserializer) and `stringData`;
    /// on the same key `stringData` wins, as on the API server.
    pub fn from_secret(secret: &Secret) -> Self {
        let mut input = Self {
            namespace: namespace_of(&secret.metadata).to_owned(),
            name: secret.metadata.name.clone().unwrap_or_default(),
            ..Self::default()
        };
        for (key, bytes) in secret.data.iter().flatten() {
            match String::from_utf8(bytes.0.clone()) {
                Ok(text) => {
                    input.data.insert(key.clone(), Redacted::new(text));
                }
                Err(_) => {
                    input.binary_keys.insert(key.clone());
                }
            }
        }
        for (key, text) in secret.string_data.iter().flatten() {
            input.binary_keys.remove(key);
            input.data.insert(key.clone(), Redacted::new(text.clone()));
        }
        input
    }

    fn object_ref(&self) -> ObjectRef {
        ObjectRef::new(kind::SECRET, &self.namespace, &self.name)
    }
}

/// Everything [`compile`] reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    /// ModelRoute objects.
    pub routes: Vec<Input<ModelRoute>>,
    /// ProviderSecret objects.
    pub providers: Vec<Input<ProviderSecret>>,
    /// Secrets, already reduced and redacted.
    pub secrets: Vec<Input<SecretInput>>,
}

impl Inputs {
    /// Adds a route with the next load order.
    pub fn add_route(&mut self, route: ModelRoute) {
        let order = self.next_order();
        self.routes.push(Input { order, object: route });
    }

    /// Adds a ProviderSecret with the next load order.
    pub fn add_provider(&mut self, provider: ProviderSecret) {
        let order = self.next_order();
        self.providers.push(Input { order, object: provider });
    }

    /// Adds a Secret with the next load order.
    pub fn add_secret(&mut self, secret: SecretInput) {
        let order = self.next_order();
        self.secrets.push(Input { order, object: secret });
    }

    /// One more than the highest order so far (0 when empty).
    pub fn next_order(&self) -> u64 {
        let routes = self.routes.iter().map(|i| i.order);
        let providers = self.providers.iter().map(|i| i.order);
        let secrets = self.secrets.iter().map(|i| i.order);
        routes.chain(providers).chain(secrets).max().map_or(0, |max| max + 1)
    }

    /// Number of objects of all kinds.
    pub fn len(&self) -> usize {
        self.routes.len() + self.providers.len() + self.secrets.len()
    }

    /// Whether there is no object at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The result of [`compile`]: what to serve, and what to tell the user.
#[derive(Clone, Debug, PartialEq)]
pub struct Compiled {
    /// The table of every usable object, with its credentials and hash.
    pub snapshot: Snapshot,
    /// Every finding, sorted and de-duplicated.
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    /// Findings that left something out of the table.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    /// Findings about one object, e.g. to build its status conditions.
    pub fn diagnostics_for<'a>(&'a self, object: &'a ObjectRef) -> impl Iterator<Item = &'a Diagnostic> {
        self.diagnostics.iter().filter(move |d| &d.object == object)
    }
}

/// Compiles inputs into a snapshot and diagnostics; see the [module docs](self)
/// for the rules.
///
/// Never fails as a whole: objects with problems produce diagnostics and are
/// left out. Output is deterministic for identical inputs, so the snapshot
/// hash can gate republishing.
pub fn compile(inputs: &Inputs) -> Compiled {
    let mut diagnostics = Vec::new();

    let secrets = latest(&inputs.secrets, |s| s.object_ref(), &mut diagnostics);
    let providers = latest(&inputs.providers, |p| object_ref(kind::PROVIDER_SECRET, &p.metadata), &mut diagnostics);
    let routes = latest(&inputs.routes, |r| object_ref(kind::MODEL_ROUTE, &r.metadata), &mut diagnostics);

    let mut table = RoutingTable::default();
    let mut credentials = BTreeMap::new();
    let mut unusable_providers: BTreeMap<String, String> = BTreeMap::new();
    for (object, input) in &providers {
        let key = format!("{}/{}", object.namespace, object.name);
        match compile_provider(object, &input.object, &secrets, &mut diagnostics) {
            Ok((provider, credential)) => {
                table.providers.insert(key.clone(), provider);
                if let Some(credential) = credential {
                    credentials.insert(key, credential);
                }
            }
            Err(why) => {
                unusable_providers.insert(key, why);
            }
        }
    }

    // Validate routes; only valid ones claim aliases.
    let mut claims: Vec<Claim<'_>> = Vec::new();
    let mut unserved: BTreeMap<String, ObjectRef> = BTreeMap::new();
    for (object, input) in &routes {
        let route = &input.object;
        let mut findings = Findings::default();
        validate::object_name(&object.namespace, &object.name, &mut findings);
        let checked = validate::route(&object.name, &route.spec, &mut findings);
        let ok = findings.errors.is_empty();
        push_findings(&mut diagnostics, object, findings);
        match checked {
            Some(checked) if ok => claims.push(Claim { object: object.clone(), input, route: checked }),
            _ => {
                let alias = route.spec.model.clone().unwrap_or_else(|| object.name.clone());
                unserved.entry(alias).or_insert_with(|| object.clone());
            }
        }
    }

    // Resolve the winners' targets; build their table entries.
    let mut served: BTreeMap<String, (table::Route, &Claim<'_>)> = BTreeMap::new();
    for claim in resolve_conflicts(&claims, &mut diagnostics) {
        match resolve_route(claim, &table, &unusable_providers, &mut diagnostics) {
            Some(route) => {
                served.insert(route.alias.clone(), (route, claim));
            }
            None => {
                unserved.entry(claim.route.alias.clone()).or_insert_with(|| claim.object.clone());
            }
        }
    }

    // Fallbacks, against the aliases that made it.
    let listed: BTreeMap<String, fallbacks::Served<'_>> = served
        .iter()
        .map(|(alias, (_, claim))| {
            (alias.clone(), fallbacks::Served { object: &claim.object, listed: &claim.route.fallbacks })
        })
        .collect();
    unserved.retain(|alias, _| !listed.contains_key(alias));
    let mut chains = fallbacks::resolve(&listed, &unserved, &mut diagnostics);
    for (alias, (mut route, _)) in served {
        route.fallbacks = chains.remove(&alias).unwrap_or_default();
        table.routes.insert(alias, route);
    }

    diagnostics.sort();
    diagnostics.dedup();
    Compiled { snapshot: Snapshot::new(table, credentials), diagnostics }
}

// === ModelRoute ===

/// A valid route and the alias it claims.
struct Claim<'a> {
    object: ObjectRef,
    input: &'a Input<ModelRoute>,
    route: ValidRoute,
}

/// The winner of every alias; the others get `Conflict`.
fn resolve_conflicts<'c, 'a>(claims: &'c [Claim<'a>], diagnostics: &mut Vec<Diagnostic>) -> Vec<&'c Claim<'a>> {
    let mut by_alias: BTreeMap<&str, Vec<&Claim<'a>>> = BTreeMap::new();
    for claim in claims {
        by_alias.entry(claim.route.alias.as_str()).or_default().push(claim);
    }
    let mut winners = Vec::new();
    for (alias, mut contenders) in by_alias {
        contenders.sort_by(|a, b| precedence(a).cmp(&precedence(b)));
        let Some((&winner, losers)) = contenders.split_first() else { continue };
        for loser in losers {
            let field = if loser.input.object.spec.model.is_some() { "spec.model" } else { "metadata.name" };
            diagnostics.push(Diagnostic::error(
                &loser.object,
                Condition::Accepted,
                reason::CONFLICT,
                field,
                format!(
                    "alias `{alias}` is already served by {} ({}); this route is left out, \
                     change `spec.model` or delete one of the routes",
                    named(&winner.object),
                    why_first(winner, loser)
                ),
            ));
        }
        winners.push(winner);
    }
    winners
}

/// Sort key for alias claims: lower wins.
fn precedence<'a>(claim: &'a Claim<'_>) -> (bool, Option<&'a Time>, u64, &'a ObjectRef) {
    let created = claim.input.object.metadata.creation_timestamp.as_ref();
    (created.is_none(), created, claim.input.order, &claim.object)
}

/// Why `winner` beat `loser`, in words.
fn why_first(winner: &Claim<'_>, loser: &Claim<'_>) -> &'static str {
    let created = |c: &Claim<'_>| c.input.object.metadata.creation_timestamp.clone();
    match (created(winner), created(loser)) {
        (Some(w), Some(l)) if w != l => "created earlier",
        (Some(_), None) => "it has a creation timestamp and this one has none",
        _ if winner.input.order != loser.input.order => "loaded earlier",
        _ => "its namespace/name sorts first",
    }
}

/// The table entry of a route that won its alias, without fallbacks yet:
/// targets whose provider is not in the table are dropped with a
/// diagnostic; `None` when no pickable target is left.
fn resolve_route(
    claim: &Claim<'_>,
    table: &RoutingTable,
    unusable_providers: &BTreeMap<String, String>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<table::Route> {
    let Claim { object, input, route } = claim;
    let mut resolve = |t: &ValidTarget, what: &str| {
        let key = format!("{}/{}", object.namespace, t.provider);
        if table.providers.contains_key(&key) {
            return Some(table_target(t, key));
        }
        let (reason, detail) = match unusable_providers.get(&key) {
            Some(why) => (
                reason::INVALID_PROVIDER,
                format!("ProviderSecret `{}` in namespace `{}` {why}", t.provider, object.namespace),
            ),
            None => (
                reason::PROVIDER_NOT_FOUND,
                format!("ProviderSecret `{}` does not exist in namespace `{}`", t.provider, object.namespace),
            ),
        };
        diagnostics.push(Diagnostic::error(
            object,
            Condition::ResolvedRefs,
            reason,
            format!("{}.provider", t.field),
            format!("{what} `{}` is left out: {detail}", t.name),
        ));
        None
    };
    let targets: Vec<table::Target> = route.targets.iter().filter_map(|t| resolve(t, "target")).collect();
    let canary = route.canary.as_ref().and_then(|c| {
        resolve(&c.target, "canary target").map(|target| table::Canary {
            target,
            share: c.share,
            sticky_header: c.sticky_header.clone(),
        })
    });
    let pickable = targets.iter().any(|t| t.weight > 0) || canary.as_ref().is_some_and(|c| c.share == FULL_SHARE);
    if targets.is_empty() || !pickable {
        diagnostics.push(Diagnostic::error(
            object,
            Condition::ResolvedRefs,
            reason::NO_USABLE_TARGET,
            "spec.targets",
            format!(
                "no usable target is left for alias `{}`: every target with weight > 0 was left out \
                 (see the other ResolvedRefs messages); the route is not served until one of them resolves",
                route.alias
            ),
        ));
        return None;
    }
    Some(table::Route {
        alias: route.alias.clone(),
        source: object.clone(),
        generation: input.object.metadata.generation,
        strategy: route.strategy,
        targets,
        canary,
        fallbacks: Vec::new(),
        retry: route.retry.clone(),
        timeouts: route.timeouts.clone(),
        circuit_breaker: route.circuit_breaker.clone(),
    })
}

// === ProviderSecret ===

/// A usable provider and its credential, or why it is unusable (a phrase
/// that completes "ProviderSecret `x` in namespace `y` …").
fn compile_provider(
    object: &ObjectRef,
    provider: &ProviderSecret,
    secrets: &BTreeMap<ObjectRef, &Input<SecretInput>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<(table::Provider, Option<Redacted>), String> {
    let mut findings = Findings::default();
    validate::object_name(&object.namespace, &object.name, &mut findings);
    let checked = validate::provider(&provider.spec, &mut findings);
    let ok = findings.errors.is_empty();
    push_findings(diagnostics, object, findings);
    let checked: ValidProvider = match checked {
        Some(checked) if ok => checked,
        _ => return Err("is invalid (see its Accepted condition)".to_owned()),
    };

    let credential = match &checked.api_key {
        None => None,
        Some(key_ref) => {
            let secret_ref = ObjectRef::new(kind::SECRET, &object.namespace, &key_ref.name);
            let secret = secrets.get(&secret_ref).map(|input| &input.object);
            let problem = match secret {
                None => Some((
                    reason::SECRET_NOT_FOUND,
                    "spec.apiKey.secretKeyRef.name",
                    format!(
                        "Secret `{}` does not exist in namespace `{}`; the ProviderSecret is left out until \
                         that Secret is created with the API key under key `{}`",
                        key_ref.name, object.namespace, key_ref.key
                    ),
                )),
                Some(secret) if secret.binary_keys.contains(&key_ref.key) => Some((
                    reason::INVALID_SECRET,
                    "spec.apiKey.secretKeyRef.key",
                    format!(
                        "key `{}` of Secret `{}/{}` is not UTF-8 text, so it cannot be an API key; \
                         the ProviderSecret is left out until the value is fixed",
                        key_ref.key, object.namespace, key_ref.name
                    ),
                )),
                Some(secret) => match secret.data.get(&key_ref.key) {
                    None => {
                        let keys: BTreeSet<&String> = secret.data.keys().chain(&secret.binary_keys).collect();
                        let keys: Vec<String> = keys.into_iter().map(|k| format!("`{k}`")).collect();
                        let available = if keys.is_empty() {
                            "it has no keys".to_owned()
                        } else {
                            format!("it has {}", keys.join(", "))
                        };
                        Some((
                            reason::SECRET_KEY_NOT_FOUND,
                            "spec.apiKey.secretKeyRef.key",
                            format!(
                                "Secret `{}/{}` has no key `{}` ({available}); the ProviderSecret is left out until \
                                 the key is added or `spec.apiKey.secretKeyRef.key` is fixed",
                                object.namespace, key_ref.name, key_ref.key
                            ),
                        ))
                    }
                    Some(value) if value.expose().trim().is_empty() => Some((
                        reason::INVALID_SECRET,
                        "spec.apiKey.secretKeyRef.key",
                        format!(
                            "key `{}` of Secret `{}/{}` is empty; the ProviderSecret is left out until it holds the API key",
                            key_ref.key, object.namespace, key_ref.name
                        ),
                    )),
                    Some(_) => None,
                },
            };
            if let Some((reason, field, message)) = problem {
                diagnostics.push(Diagnostic::error(object, Condition::ResolvedRefs, reason, field, message));
                return Err("cannot be used: its API key does not resolve (see its ResolvedRefs condition)".to_owned());
            }
            secret.and_then(|s| s.data.get(&key_ref.key)).map(|value| Redacted::new(value.expose().trim()))
        }
    };

    let provider = table::Provider {
        source: object.clone(),
        kind: checked.kind,
        base_url: checked.base_url,
        headers: checked.headers,
        limits: checked.limits,
        mock: checked.mock,
        api_version: checked.api_version,
    };
    Ok((provider, credential))
}

// === helpers ===

/// `ModelRoute \`ai/chat\`` for messages.
pub(crate) fn named(object: &ObjectRef) -> String {
    format!("{} `{}/{}`", object.kind, object.namespace, object.name)
}

fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().filter(|ns| !ns.is_empty()).unwrap_or("default")
}

fn object_ref(kind: &str, meta: &ObjectMeta) -> ObjectRef {
    ObjectRef::new(kind, namespace_of(meta), meta.name.as_deref().unwrap_or_default())
}

/// One input per object: duplicates (same kind, namespace and name) keep the
/// highest load order and warn about the others.
fn latest<'a, T>(
    inputs: &'a [Input<T>],
    object_ref: impl Fn(&T) -> ObjectRef,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<ObjectRef, &'a Input<T>> {
    let mut grouped: BTreeMap<ObjectRef, Vec<&'a Input<T>>> = BTreeMap::new();
    for input in inputs {
        grouped.entry(object_ref(&input.object)).or_default().push(input);
    }
    grouped
        .into_iter()
        .filter_map(|(object, mut all)| {
            all.sort_by_key(|input| input.order);
            let last = all.pop()?;
            if !all.is_empty() {
                diagnostics.push(Diagnostic {
                    object: object.clone(),
                    severity: Severity::Warning,
                    condition: Condition::Accepted,
                    reason: reason::DUPLICATE.to_owned(),
                    field: None,
                    message: format!(
                        "{} is defined {} times; the definition loaded last is used, remove the others",
                        named(&object),
                        all.len() + 1
                    ),
                });
            }
            Some((object, last))
        })
        .collect()
}

fn push_findings(diagnostics: &mut Vec<Diagnostic>, object: &ObjectRef, findings: Findings) {
    let to_diag = |severity: Severity| {
        move |Finding { field, reason, message }: Finding| Diagnostic {
            object: object.clone(),
            severity,
            condition: Condition::Accepted,
            reason: reason.to_owned(),
            field: Some(field),
            message,
        }
    };
    diagnostics.extend(findings.errors.into_iter().map(to_diag(Severity::Error)));
    diagnostics.extend(findings.warnings.into_iter().map(to_diag(Severity::Warning)));
}

fn table_target(t: &ValidTarget, provider_key: String) -> table::Target {
    table::Target {
        name: t.name.clone(),
        provider: provider_key,
        model: t.model.clone(),
        weight: t.weight,
        context_window: t.context_window,
        price: t.price.clone(),
    }
}
