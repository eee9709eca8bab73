//! Admin port: health, readiness, metrics, the table in force, a status page.

use std::path::PathBuf;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::cost::{self, PriceSource, Pricing};
use crate::metrics::Metrics;
use crate::plan;
use crate::server::{Body, Handler, RequestBody, full};
use crate::state::{Circuit, Live, RoutingHandle};
use crate::tokens::Encoding;

pub struct Admin {
    pub routing: RoutingHandle,
    pub metrics: Arc<Metrics>,
    pub source: Source,
}

/// Where tables come from, for `/debug/table`.
pub enum Source {
    Manifests(PathBuf),
    Operator(Arc<Cluster>),
}

impl Source {
    fn describe(&self) -> serde_json::Value {
        match self {
            Self::Manifests(dir) => json!({"manifests": dir.display().to_string()}),
            Self::Operator(cluster) => cluster.describe(),
        }
    }
}

impl Handler for Admin {
    async fn handle(&self, request: Request<RequestBody>) -> Response<Body> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        }
        match request.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => match self.routing.snapshot() {
                Some(live) => text(StatusCode::OK, &format!("ready {}\n", live.snapshot.hash)),
                None => text(StatusCode::SERVICE_UNAVAILABLE, "not ready: no valid routing table yet\n"),
            },
            "/metrics" => {
                let mut response = Response::new(full(self.metrics.encode()));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                );
                response
            }
            "/debug/table" => self.debug_table(),
            "/" => self.status_page(),
            other => text(StatusCode::NOT_FOUND, &format!("no admin endpoint `{other}`\n")),
        }
    }
}

impl Admin {
    /// The table in force. Credentials are listed by key only: the table type
    /// holds no secret, and the key values are never serialized here.
    fn debug_table(&self) -> Response<Body> {
        let live = self.routing.snapshot();
        let body = json!({
            "hash": live.as_ref().map(|l| l.snapshot.hash.clone()),
            "table": live.as_ref().map(|l| &l.snapshot.table),
            "credentials": live.as_ref().map(|l| l.snapshot.credentials.keys().map(|k| (k.clone(), "*****")).collect::<std::collections::BTreeMap<_, _>>()),
            "accounting": live.as_deref().map(accounting),
            "diagnostics": *self.routing.diagnostics(),
            "source": self.source.describe(),
        });
        let mut response = Response::new(full(serde_json::to_string_pretty(&body).unwrap_or_default()));
        response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        response
    }

    /// Routes, targets, health and canary share, as plain text.
    fn status_page(&self) -> Response<Body> {
        let Some(live) = self.routing.snapshot() else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "switchyard-proxy: no routing table yet\n");
        };
        let mut out = format!("switchyard-proxy\ntable {}\n\n", live.snapshot.hash);
        for (alias, route) in &live.snapshot.table.routes {
            out.push_str(&format!("{alias}  ({:?}, from {})\n", route.strategy, route.source));
            let canary = route.canary.iter().map(|c| (&c.target, Some(c.share)));
            for (target, share) in route.targets.iter().map(|t| (t, None)).chain(canary) {
                let health = match live.target_stats(alias, &target.name).map(|s| s.circuit()) {
                    Some(Circuit::Open) => "circuit open",
                    Some(Circuit::HalfOpen) => "probing",
                    _ => "healthy",
                };
                let share = share
                    .map_or(format!("weight {}", target.weight), |s| format!("canary {}.{:02}%", s / 100, s % 100));
                out.push_str(&format!(
                    "  - {:<16} {:<28} {:<18} {health}\n",
                    target.name,
                    format!("{} {}", target.provider, target.model),
                    share
                ));
            }
            if !route.fallbacks.is_empty() {
                out.push_str(&format!("  fallbacks: {}\n", route.fallbacks.join(" -> ")));
            }
        }
        let diagnostics = self.routing.diagnostics();
        if !diagnostics.is_empty() {
            out.push_str("\ndiagnostics of the last load:\n");
            for line in diagnostics.iter() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        text(StatusCode::OK, &out)
    }
}

/// Per route and target: the price a request is charged at and the
/// tokenizer that counts tokens when the provider reports none.
fn accounting(live: &Live) -> Value {
    let table = &live.snapshot.table;
    let routes = table.routes.iter().map(|(alias, route)| {
        let targets = route.targets.iter().chain(route.canary.as_ref().map(|c| &c.target)).map(|target| {
            let kind = plan::kind_of(table, target);
            let price = Pricing::for_target(kind, target).map(|pricing| {
                let (source, row, note) = match pricing.source {
                    PriceSource::Manifest => ("manifest", None, None),
                    PriceSource::BuiltIn { model, source } => ("built-in", Some(model), Some(source)),
                };
                let rates = pricing.rates;
                json!({
                    "source": source,
                    "row": row,
                    "note": note,
                    "tableDate": row.map(|_| cost::TABLE_DATE),
                    "usdPerMillion": {
                        "input": rates.input,
                        "cachedInput": rates.cached_input,
                        "cacheWrite": rates.cache_write,
                        "output": rates.output,
                    },
                    "longPrompt": pricing.long_prompt.map(|(over, r)| json!({"over": over, "input": r.input, "output": r.output})),
                })
            });
            let (encoding, exact) = Encoding::for_model(kind, &target.model);
            let tokenizer =
                json!({"encoding": encoding.name(), "estimate": if exact { "model's own tokenizer" } else { "stand-in" }});
            (target.name.clone(), json!({"price": price, "tokenizer": tokenizer}))
        });
        (alias.clone(), targets.collect::<serde_json::Map<_, _>>())
    });
    Value::Object(routes.map(|(alias, targets)| (alias, Value::Object(targets))).collect())
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(full(body.to_owned()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
