//! Spec validation: turns a `ModelRouteSpec` or `ProviderSecretSpec` into a
//! validated intermediate form, or into a list of every problem found.
//!
//! This repeats every check of the generated schema (patterns, ranges, sizes
//! and CEL rules) because standalone mode has no API server, and adds the few
//! that only make sense after defaults are applied (unique *defaulted* target
//! names, `backoff` against the default `maxBackoff`). It never stops at the
//! first problem.

use std::collections::BTreeMap;

use super::parse::{self, shown};
use crate::api::{self, ModelRouteSpec, Preset, ProviderSecretSpec, ProviderType, SecretKeyRef};
use crate::diag::reason;
use crate::table::{self, FULL_SHARE, Limits, MockSettings, ProviderKind};

/// One problem or remark about one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Finding {
    pub field: String,
    /// One of [`reason`]: `Invalid` for errors.
    pub reason: &'static str,
    pub message: String,
}

/// Everything found while validating one object.
#[derive(Debug, Default)]
pub(super) struct Findings {
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

impl Findings {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Finding { field: field.into(), reason: reason::INVALID, message: message.into() });
    }

    fn warning(&mut self, field: impl Into<String>, reason: &'static str, message: impl Into<String>) {
        self.warnings.push(Finding { field: field.into(), reason, message: message.into() });
    }

    /// A duration field: parsed, or an error and `None`.
    fn duration(&mut self, field: &str, value: Option<&str>, positive: bool) -> Option<u64> {
        let value = value?;
        // The schema caps durations at 32 characters.
        match parse::duration_ms(value).filter(|_| value.len() <= 32) {
            Some(0) if positive => {
                self.error(field, format!("`{field}` must be greater than zero, got {}", shown(value)));
                None
            }
            Some(ms) => Some(ms),
            None => {
                self.error(
                    field,
                    format!(
                        "`{field}` must be a duration such as `250ms`, `30s`, `5m` or `1h30m` \
                         (digits followed by `ms`, `s`, `m` or `h`), got {}",
                        shown(value)
                    ),
                );
                None
            }
        }
    }

    /// A percentage field: basis points, or an error and `None`.
    fn percent(&mut self, field: &str, value: &str) -> Option<u32> {
        let bp = parse::percent_bp(value);
        if bp.is_none() {
            self.error(
                field,
                format!(
                    "`{field}` must be a decimal between 0 and 100 with at most two decimals, such as `5` or `0.25`, got {}",
                    shown(value)
                ),
            );
        }
        bp
    }

    /// A fraction field: parts per million, or an error and `None`.
    fn fraction(&mut self, field: &str, value: &str) -> Option<u32> {
        let ppm = parse::fraction_ppm(value);
        if ppm.is_none() {
            self.error(
                field,
                format!(
                    "`{field}` must be a decimal between 0 and 1 with at most six decimals, such as `0.05`, got {}",
                    shown(value)
                ),
            );
        }
        ppm
    }

    /// An integer field with a lower bound only.
    fn at_least<T: PartialOrd + std::fmt::Display>(&mut self, field: &str, value: T, min: T) -> bool {
        let ok = value >= min;
        if !ok {
            self.error(field, format!("`{field}` must be at least {min}, got {value}"));
        }
        ok
    }

    /// An integer field with bounds.
    fn range<T: PartialOrd + std::fmt::Display>(&mut self, field: &str, value: T, min: T, max: T) -> bool {
        let ok = value >= min && value <= max;
        if !ok {
            self.error(field, format!("`{field}` must be between {min} and {max}, got {value}"));
        }
        ok
    }
}

/// A target after validation and defaulting; `provider` is still the local
/// ProviderSecret name.
#[derive(Clone, Debug)]
pub(super) struct ValidTarget {
    /// `spec.targets[i]` or `spec.canary.target`.
    pub field: String,
    pub name: String,
    pub provider: String,
    pub model: String,
    pub weight: u32,
    pub context_window: Option<u64>,
    pub price: Option<table::Price>,
}

#[derive(Clone, Debug)]
pub(super) struct ValidCanary {
    pub target: ValidTarget,
    pub share: u32,
    pub sticky_header: Option<String>,
}

/// A route spec that passed validation, defaults applied.
#[derive(Clone, Debug)]
pub(super) struct ValidRoute {
    pub alias: String,
    pub strategy: table::Strategy,
    pub targets: Vec<ValidTarget>,
    pub canary: Option<ValidCanary>,
    /// As listed, with their index in `spec.fallbacks`.
    pub fallbacks: Vec<(usize, String)>,
    pub retry: table::Retry,
    pub timeouts: table::Timeouts,
    pub circuit_breaker: table::CircuitBreaker,
}

/// A provider spec that passed validation, defaults applied.
#[derive(Clone, Debug)]
pub(super) struct ValidProvider {
    pub kind: ProviderKind,
    pub base_url: String,
    pub headers: BTreeMap<String, String>,
    pub limits: Limits,
    pub mock: Option<MockSettings>,
    /// `spec.azure.apiVersion`, for `azure-openai`.
    pub api_version: Option<String>,
    /// `None` when the provider needs no key (or it is ignored, for `mock`).
    pub api_key: Option<SecretKeyRef>,
}

const MAX_TARGETS: usize = 64;
const MAX_FALLBACKS: usize = 16;
const MAX_STEPS: usize = 20;
const MAX_HEADERS: usize = 64;
const MAX_WEIGHT: u32 = 1_000_000;

/// Checks `metadata.namespace` and `metadata.name` the way the API server would.
pub(super) fn object_name(namespace: &str, name: &str, findings: &mut Findings) {
    if name.is_empty() {
        findings.error("metadata.name", "`metadata.name` is required");
    } else if !parse::is_dns_subdomain(name) {
        findings.error(
            "metadata.name",
            format!(
                "`metadata.name` must be a DNS subdomain (lowercase letters, digits, `-` and `.`, at most 253 characters), got {}",
                shown(name)
            ),
        );
    }
    if !parse::is_dns_label(namespace) {
        findings.error(
            "metadata.namespace",
            format!(
                "`metadata.namespace` must be a DNS label (lowercase letters, digits and `-`, at most 63 characters), got {}",
                shown(namespace)
            ),
        );
    }
}

// === ModelRoute ===

/// Validates a route spec. `name` is `metadata.name`, the default alias.
/// Returns `None` when `findings` got at least one error.
pub(super) fn route(name: &str, spec: &ModelRouteSpec, findings: &mut Findings) -> Option<ValidRoute> {
    let errors_before = findings.errors.len();

    let alias = match &spec.model {
        Some(model) => {
            if !parse::is_model_id(model, 253) {
                findings.error(
                    "spec.model",
                    format!("`spec.model` must be 1 to 253 printable characters without spaces, got {}", shown(model)),
                );
            }
            model.clone()
        }
        None => name.to_owned(),
    };

    let strategy = match spec.strategy.unwrap_or_default() {
        api::Strategy::Weighted => table::Strategy::Weighted,
        api::Strategy::Cost => table::Strategy::Cost,
        api::Strategy::Latency => table::Strategy::Latency,
        api::Strategy::LeastBusy => table::Strategy::LeastBusy,
    };

    if spec.targets.is_empty() {
        findings.error("spec.targets", "`spec.targets` must list at least one target");
    }
    if spec.targets.len() > MAX_TARGETS {
        findings.error(
            "spec.targets",
            format!("`spec.targets` may list at most {MAX_TARGETS} targets, got {}", spec.targets.len()),
        );
    }
    let targets: Vec<ValidTarget> = spec
        .targets
        .iter()
        .enumerate()
        .filter_map(|(i, t)| target(&format!("spec.targets[{i}]"), t, findings))
        .collect();

    let canary = spec.canary.as_ref().and_then(|c| canary(c, findings));

    // Unique names after defaulting: the CEL rule only sees explicit names,
    // two targets with the same provider and model collide here too. Checked
    // on every target, valid or not, so that all problems show at once.
    let named = spec
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("spec.targets[{i}]"), t))
        .chain(spec.canary.as_ref().map(|c| ("spec.canary.target".to_owned(), &c.target)));
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (field, t) in named {
        let name = target_name(t);
        if let Some(first) = seen.get(&name) {
            findings.error(
                format!("{field}.name"),
                format!(
                    "`{field}.name` `{name}` is already used by `{first}`; target names must be unique within a route \
                     (when `name` is not set it defaults to `<provider>-<model>`), set a distinct `name`"
                ),
            );
        } else {
            seen.insert(name, field);
        }
    }

    // Checked only when every target was readable, so one bad weight does
    // not also claim that no target is usable.
    if targets.len() == spec.targets.len()
        && !spec.targets.is_empty()
        && spec.canary.is_some() == canary.is_some()
        && !targets.iter().any(|t| t.weight > 0)
        && canary.as_ref().is_none_or(|c| c.share != FULL_SHARE)
    {
        findings.error(
            "spec.targets",
            "`spec.targets` needs at least one target with `weight` > 0 (weight defaults to 1), \
             or a canary at 100 percent; every target has weight 0",
        );
    }

    if let Some(mirror) = &spec.mirror {
        target("spec.mirror.target", &mirror.target, findings);
        if let Some(percent) = &mirror.percent {
            findings.percent("spec.mirror.percent", percent);
        }
        findings.warning(
            "spec.mirror",
            reason::UNSUPPORTED_VALUE,
            "`spec.mirror` is accepted but not served yet: no requests are mirrored",
        );
    }

    let mut fallbacks = Vec::new();
    if let Some(list) = &spec.fallbacks {
        if list.len() > MAX_FALLBACKS {
            findings.error(
                "spec.fallbacks",
                format!("`spec.fallbacks` may list at most {MAX_FALLBACKS} aliases, got {}", list.len()),
            );
        }
        for (i, alias) in list.iter().enumerate() {
            if parse::is_model_id(alias, 253) {
                fallbacks.push((i, alias.clone()));
            } else {
                findings.error(
                    format!("spec.fallbacks[{i}]"),
                    format!(
                        "`spec.fallbacks[{i}]` must be a model alias: 1 to 253 printable characters without spaces, got {}",
                        shown(alias)
                    ),
                );
            }
        }
    }

    let retry = retry(spec.retry.as_ref(), findings);
    let timeouts = timeouts(spec.timeouts.as_ref(), findings);
    let circuit_breaker = circuit_breaker(spec.circuit_breaker.as_ref(), findings);

    (findings.errors.len() == errors_before).then_some(ValidRoute {
        alias,
        strategy,
        targets,
        canary,
        fallbacks,
        retry,
        timeouts,
        circuit_breaker,
    })
}

/// The target's name, or the default `<provider>-<model>` as a DNS label.
fn target_name(t: &api::Target) -> String {
    t.name.clone().unwrap_or_else(|| parse::dns_label_from(&format!("{}-{}", t.provider, t.model)))
}

fn target(field: &str, t: &api::Target, findings: &mut Findings) -> Option<ValidTarget> {
    let errors_before = findings.errors.len();
    let name = match &t.name {
        Some(name) => {
            if !parse::is_dns_label(name) {
                findings.error(
                    format!("{field}.name"),
                    format!(
                        "`{field}.name` must be a DNS label: lowercase letters, digits and `-`, at most 63 characters, \
                         starting and ending with a letter or digit, got {}",
                        shown(name)
                    ),
                );
            }
            name.clone()
        }
        None => target_name(t),
    };
    if !parse::is_dns_subdomain(&t.provider) {
        findings.error(
            format!("{field}.provider"),
            format!(
                "`{field}.provider` must name a ProviderSecret in the same namespace \
                 (lowercase letters, digits, `-` and `.`), got {}",
                shown(&t.provider)
            ),
        );
    }
    if !parse::is_model_id(&t.model, 256) {
        findings.error(
            format!("{field}.model"),
            format!(
                "`{field}.model` must be the upstream model id: 1 to 256 printable characters without spaces, got {}",
                shown(&t.model)
            ),
        );
    }
    let weight = t.weight.unwrap_or(1);
    findings.range(&format!("{field}.weight"), weight, 0, MAX_WEIGHT);
    if let Some(window) = t.context_window {
        findings.at_least(&format!("{field}.contextWindow"), window, 1);
    }
    let price = t.price.as_ref().map(|p| {
        let optional = [
            ("cachedInputPerMillion", p.cached_input_per_million.as_ref()),
            ("cacheWritePerMillion", p.cache_write_per_million.as_ref()),
        ];
        let given = [("inputPerMillion", Some(&p.input_per_million)), ("outputPerMillion", Some(&p.output_per_million))]
            .into_iter()
            .chain(optional)
            .filter_map(|(key, value)| value.map(|v| (key, v)));
        for (key, value) in given {
            if !parse::is_decimal(value) {
                findings.error(
                    format!("{field}.price.{key}"),
                    format!(
                        "`{field}.price.{key}` must be a non-negative decimal number of US dollars such as `0.15`, got {}",
                        shown(value)
                    ),
                );
            }
        }
        table::Price {
            input_per_million: p.input_per_million.clone(),
            output_per_million: p.output_per_million.clone(),
            cached_input_per_million: p.cached_input_per_million.clone(),
            cache_write_per_million: p.cache_write_per_million.clone(),
        }
    });
    (findings.errors.len() == errors_before).then(|| ValidTarget {
        field: field.to_owned(),
        name,
        provider: t.provider.clone(),
        model: t.model.clone(),
        weight,
        context_window: t.context_window,
        price,
    })
}

fn canary(c: &api::Canary, findings: &mut Findings) -> Option<ValidCanary> {
    let errors_before = findings.errors.len();
    let target = target("spec.canary.target", &c.target, findings);
    let share = match &c.percent {
        Some(percent) => findings.percent("spec.canary.percent", percent).unwrap_or(0),
        None => 0,
    };
    if let Some(steps) = &c.steps {
        if steps.is_empty() {
            findings.error(
                "spec.canary.steps",
                "`spec.canary.steps` must list at least one step, or be left out for a manual canary",
            );
        }
        if steps.len() > MAX_STEPS {
            findings.error(
                "spec.canary.steps",
                format!("`spec.canary.steps` may list at most {MAX_STEPS} steps, got {}", steps.len()),
            );
        }
        let mut previous: Option<(u32, &str)> = None;
        for (i, step) in steps.iter().enumerate() {
            let Some(bp) = findings.percent(&format!("spec.canary.steps[{i}]"), step) else {
                continue;
            };
            if let Some((before, before_text)) = previous
                && bp <= before
            {
                findings.error(
                    format!("spec.canary.steps[{i}]"),
                    format!(
                        "`spec.canary.steps[{i}]` ({}) must be greater than the step before it (`{before_text}`); \
                         steps must be strictly increasing",
                        shown(step)
                    ),
                );
            }
            previous = Some((bp, step));
        }
    }
    findings.duration("spec.canary.stepInterval", c.step_interval.as_deref(), true);
    if let Some(a) = &c.analysis {
        if let Some(rate) = &a.max_error_rate {
            findings.fraction("spec.canary.analysis.maxErrorRate", rate);
        }
        if let Some(ms) = a.max_p95_latency_ms {
            findings.at_least("spec.canary.analysis.maxP95LatencyMs", ms, 1);
        }
        if let Some(ms) = a.max_p95_first_token_ms {
            findings.at_least("spec.canary.analysis.maxP95FirstTokenMs", ms, 1);
        }
        if let Some(limit) = a.failure_limit {
            findings.range("spec.canary.analysis.failureLimit", limit, 1, 100);
        }
    }
    let sticky_header = c.sticky.as_ref().map(|s| {
        if !parse::is_header_name(&s.header) || s.header.len() > 128 {
            findings.error(
                "spec.canary.sticky.header",
                format!(
                    "`spec.canary.sticky.header` must be an HTTP header name such as `x-user-id`, got {}",
                    shown(&s.header)
                ),
            );
        }
        // Header names are case-insensitive; the proxy looks them up lowercase.
        s.header.to_ascii_lowercase()
    });
    if findings.errors.len() != errors_before {
        return None;
    }
    Some(ValidCanary { target: target?, share, sticky_header })
}

fn retry(r: Option<&api::Retry>, findings: &mut Findings) -> table::Retry {
    let mut retry = table::Retry::default();
    let Some(r) = r else { return retry };
    if let Some(attempts) = r.attempts
        && findings.range("spec.retry.attempts", attempts, 0, 10)
    {
        retry.attempts = attempts;
    }
    let backoff = findings.duration("spec.retry.backoff", r.backoff.as_deref(), false);
    let max_backoff = findings.duration("spec.retry.maxBackoff", r.max_backoff.as_deref(), false);
    match (backoff, max_backoff) {
        (Some(b), Some(m)) if b > m => findings.error(
            "spec.retry.backoff",
            format!(
                "`spec.retry.backoff` ({}) must not exceed `spec.retry.maxBackoff` ({}); raise `maxBackoff` or lower `backoff`",
                shown(r.backoff.as_deref().unwrap_or_default()),
                shown(r.max_backoff.as_deref().unwrap_or_default()),
            ),
        ),
        _ => {}
    }
    if let Some(b) = backoff {
        retry.backoff_ms = b;
    }
    if let Some(m) = max_backoff {
        retry.max_backoff_ms = m;
    }
    // Only `backoff` was set, above the default cap: the cap follows it
    // rather than silently shortening what the user asked for.
    retry.max_backoff_ms = retry.max_backoff_ms.max(retry.backoff_ms);
    retry
}

fn timeouts(t: Option<&api::Timeouts>, findings: &mut Findings) -> table::Timeouts {
    let mut timeouts = table::Timeouts::default();
    let Some(t) = t else { return timeouts };
    let fields = [
        ("spec.timeouts.request", &t.request, &mut timeouts.request_ms),
        ("spec.timeouts.attempt", &t.attempt, &mut timeouts.attempt_ms),
        ("spec.timeouts.firstToken", &t.first_token, &mut timeouts.first_token_ms),
        ("spec.timeouts.idle", &t.idle, &mut timeouts.idle_ms),
    ];
    for (field, value, slot) in fields {
        if let Some(ms) = findings.duration(field, value.as_deref(), true) {
            *slot = ms;
        }
    }
    timeouts
}

fn circuit_breaker(c: Option<&api::CircuitBreaker>, findings: &mut Findings) -> table::CircuitBreaker {
    let mut breaker = table::CircuitBreaker::default();
    let Some(c) = c else { return breaker };
    if let Some(n) = c.consecutive_failures
        && findings.range("spec.circuitBreaker.consecutiveFailures", n, 0, 10_000)
    {
        breaker.consecutive_failures = n;
    }
    if let Some(ms) = findings.duration("spec.circuitBreaker.openFor", c.open_for.as_deref(), true) {
        breaker.open_for_ms = ms;
    }
    breaker
}

// === ProviderSecret ===

/// The vendor's public endpoint (or the preset's), or `None` where the user must say.
fn default_base_url(provider: ProviderType, preset: Option<Preset>) -> Option<&'static str> {
    match provider {
        ProviderType::OpenaiCompatible => preset.map(Preset::base_url),
        ProviderType::Openai => Some("https://api.openai.com/v1"),
        ProviderType::Anthropic => Some("https://api.anthropic.com"),
        ProviderType::Gemini => Some("https://generativelanguage.googleapis.com"),
        ProviderType::Cohere => Some("https://api.cohere.com"),
        ProviderType::Mistral => Some("https://api.mistral.ai/v1"),
        ProviderType::Mock => Some(""),
        ProviderType::AzureOpenai => None,
    }
}

/// Header names that carry credentials; such values belong in a Secret.
const CREDENTIAL_HEADERS: [&str; 6] =
    ["authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie"];

/// Validates a provider spec. Returns `None` when `findings` got at least one error.
pub(super) fn provider(spec: &ProviderSecretSpec, findings: &mut Findings) -> Option<ValidProvider> {
    let errors_before = findings.errors.len();
    let provider = spec.provider;
    let name = provider.as_str();

    let preset = match spec.preset {
        Some(preset) if provider != ProviderType::OpenaiCompatible => {
            findings.error(
                "spec.preset",
                format!(
                    "`spec.preset` ({}) is only allowed with provider `openai-compatible`, not `{name}`; remove it \
                     or set `provider: openai-compatible`",
                    preset.as_str()
                ),
            );
            None
        }
        preset => preset,
    };

    let base_url = match (&spec.base_url, default_base_url(provider, preset)) {
        (Some(_), Some("")) => {
            findings.warning(
                "spec.baseUrl",
                reason::IGNORED_FIELD,
                "`spec.baseUrl` is ignored for provider `mock`; remove it",
            );
            String::new()
        }
        (Some(url), _) => {
            if !parse::is_base_url(url) || url.len() > 2048 {
                findings.error(
                    "spec.baseUrl",
                    format!(
                        "`spec.baseUrl` must be an absolute URL starting with `http://` or `https://`, with a host \
                         and no query or fragment, such as `https://api.openai.com/v1`, got {}",
                        shown(url)
                    ),
                );
            }
            url.trim_end_matches('/').to_owned()
        }
        (None, Some(default)) => default.to_owned(),
        (None, None) => {
            let example = if provider == ProviderType::AzureOpenai {
                "the resource origin, such as `https://my-resource.openai.azure.com`"
            } else {
                "the server's OpenAI-compatible base URL including the version path, such as `http://vllm:8000/v1` \
                 (or set `spec.preset` to vllm, ollama, groq or together for their usual base URL)"
            };
            findings.error(
                "spec.baseUrl",
                format!("`spec.baseUrl` is required for provider `{name}`: set it to {example}"),
            );
            String::new()
        }
    };

    let api_key = match (&spec.api_key, provider) {
        (Some(_), ProviderType::Mock) => {
            findings.warning(
                "spec.apiKey",
                reason::IGNORED_FIELD,
                "`spec.apiKey` is ignored for provider `mock`; remove it",
            );
            None
        }
        (Some(key), _) => {
            let r = &key.secret_key_ref;
            if !parse::is_dns_subdomain(&r.name) {
                findings.error(
                    "spec.apiKey.secretKeyRef.name",
                    format!(
                        "`spec.apiKey.secretKeyRef.name` must name a Secret in the same namespace \
                         (lowercase letters, digits, `-` and `.`), got {}",
                        shown(&r.name)
                    ),
                );
            }
            if !parse::is_secret_key(&r.key) {
                findings.error(
                    "spec.apiKey.secretKeyRef.key",
                    format!(
                        "`spec.apiKey.secretKeyRef.key` must be a Secret data key (letters, digits, `-`, `_` and `.`), got {}",
                        shown(&r.key)
                    ),
                );
            }
            Some(r.clone())
        }
        (None, ProviderType::OpenaiCompatible) if preset.is_some_and(Preset::needs_api_key) => {
            let preset = preset.map_or("", Preset::as_str);
            findings.error(
                "spec.apiKey",
                format!(
                    "`spec.apiKey` is required with `spec.preset: {preset}` (a hosted service): set \
                     `apiKey.secretKeyRef` to the name and key of the Secret that holds the API key"
                ),
            );
            None
        }
        (None, ProviderType::OpenaiCompatible | ProviderType::Mock) => None,
        (None, _) => {
            findings.error(
                "spec.apiKey",
                format!(
                    "`spec.apiKey` is required for provider `{name}`: set `apiKey.secretKeyRef` \
                     to the name and key of the Secret that holds the API key"
                ),
            );
            None
        }
    };

    let mut headers = BTreeMap::new();
    if let Some(map) = &spec.headers {
        if map.len() > MAX_HEADERS {
            findings.error(
                "spec.headers",
                format!("`spec.headers` may hold at most {MAX_HEADERS} headers, got {}", map.len()),
            );
        }
        for (key, value) in map {
            let field = format!("spec.headers.{key}");
            if !parse::is_header_name(key) {
                findings.error(
                    field.clone(),
                    format!(
                        "{} is not a valid HTTP header name: use letters, digits and symbols such as `-`, `_` \
                         and `.`, without spaces or colons",
                        shown(key)
                    ),
                );
            } else if CREDENTIAL_HEADERS.contains(&key.to_ascii_lowercase().as_str()) {
                // The value is deliberately not shown: it may be a credential.
                findings.warning(
                    field.clone(),
                    reason::CREDENTIAL_IN_HEADER,
                    format!(
                        "header `{key}` looks like a credential, but headers are not secret and show up in \
                         `/debug/table`; put the key in a Secret and reference it from `spec.apiKey`"
                    ),
                );
            }
            if value.contains(['\r', '\n', '\0']) {
                findings.error(
                    field,
                    format!("the value of header `{key}` must not contain line breaks or NUL characters"),
                );
            }
            headers.insert(key.clone(), value.clone());
        }
    }

    let mut api_version = None;
    if let Some(azure) = &spec.azure {
        if provider != ProviderType::AzureOpenai {
            findings.error(
                "spec.azure",
                format!("`spec.azure` is only allowed with provider `azure-openai`, not `{name}`; remove it"),
            );
        }
        if let Some(version) = &azure.api_version {
            if !parse::is_azure_api_version(version) {
                findings.error(
                    "spec.azure.apiVersion",
                    format!(
                        "`spec.azure.apiVersion` must be an Azure API version such as `2024-10-21` \
                         or `2025-01-01-preview`, got {}",
                        shown(version)
                    ),
                );
            } else if provider == ProviderType::AzureOpenai {
                api_version = Some(version.clone());
            }
        }
    }

    let mut limits = Limits::default();
    if let Some(l) = &spec.limits {
        if let Some(n) = l.requests_per_minute
            && findings.at_least("spec.limits.requestsPerMinute", n, 1)
        {
            limits.requests_per_minute = Some(n);
        }
        if let Some(n) = l.tokens_per_minute
            && findings.at_least("spec.limits.tokensPerMinute", n, 1)
        {
            limits.tokens_per_minute = Some(n);
        }
        if let Some(n) = l.max_in_flight
            && findings.at_least("spec.limits.maxInFlight", n, 1)
        {
            limits.max_in_flight = Some(n);
        }
    }

    let mut mock = (provider == ProviderType::Mock).then(MockSettings::default);
    if let Some(m) = &spec.mock {
        if provider != ProviderType::Mock {
            findings.error(
                "spec.mock",
                format!(
                    "`spec.mock` is only allowed with provider `mock`, not `{name}`; remove it or set `provider: mock`"
                ),
            );
        }
        let mut settings = MockSettings::default();
        if let Some(ms) = findings.duration("spec.mock.latency", m.latency.as_deref(), false) {
            settings.latency_ms = ms;
        }
        if let Some(tps) = m.tokens_per_second
            && findings.range("spec.mock.tokensPerSecond", tps, 0, 1_000_000)
        {
            settings.tokens_per_second = tps;
        }
        if let Some(rate) = &m.failure_rate
            && let Some(ppm) = findings.fraction("spec.mock.failureRate", rate)
        {
            settings.failure_ppm = ppm;
        }
        if let Some(status) = m.failure_status
            && findings.range("spec.mock.failureStatus", status, 400, 599)
        {
            settings.failure_status = status;
        }
        if provider == ProviderType::Mock {
            mock = Some(settings);
        }
    }

    (findings.errors.len() == errors_before).then(|| ValidProvider {
        kind: provider.kind(),
        base_url,
        headers,
        limits,
        mock,
        api_version,
        api_key,
    })
}
