//! The distribution API over real HTTP on 127.0.0.1: auth, long poll,
//! If-None-Match, reports. The Kubernetes side is covered by tests/e2e.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use operator::fleet::{Fleet, Published, Served};
use operator::metrics::Metrics;
use operator::server::{self, Distribution};
use routing::distribution::{Report, TargetCounters};
use routing::{Redacted, RoutingTable, Snapshot};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "proxy-token-42";

struct Operator {
    base: String,
    publish: watch::Sender<Option<Arc<Published>>>,
    fleet: Arc<Fleet>,
    shutdown: CancellationToken,
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Operator {
    let (publish, current) = watch::channel(None);
    let fleet = Arc::new(Fleet::default());
    let shutdown = CancellationToken::new();
    let distribution = Arc::new(Distribution {
        token: TOKEN.as_bytes().to_vec(),
        current,
        fleet: fleet.clone(),
        metrics: Arc::new(Metrics::new()),
        shutdown: shutdown.clone(),
    });
    let listener = server::bind("127.0.0.1:0".parse().unwrap(), "--listen").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server::serve(listener, None, distribution, shutdown.clone(), Duration::from_secs(1)));
    Operator { base, publish, fleet, shutdown }
}

/// A snapshot that differs by its one credential.
fn snapshot(key: &str) -> Snapshot {
    Snapshot::new(RoutingTable::default(), BTreeMap::from([("ai/openai".to_owned(), Redacted::new(key))]))
}

fn publish(operator: &Operator, snapshot: &Snapshot) {
    let body = Bytes::from(serde_json::to_vec(snapshot).unwrap());
    let published = Published { hash: snapshot.hash.clone(), body, served: Arc::new(Served::new()) };
    operator.fleet.published(&snapshot.hash, published.served.clone());
    operator.publish.send_replace(Some(Arc::new(published)));
}

fn poll(operator: &Operator, seen: Option<&str>, wait: u64) -> reqwest::RequestBuilder {
    let request = reqwest::Client::new()
        .get(format!("{}/v1/table?wait={wait}", operator.base))
        .bearer_auth(TOKEN)
        .header("x-switchyard-proxy", "proxy-a");
    match seen {
        Some(hash) => request.header("if-none-match", format!("\"{hash}\"")),
        None => request,
    }
}

#[tokio::test]
async fn the_first_poll_gets_the_snapshot_with_its_hash_as_etag() {
    let operator = start().await;
    let snapshot = snapshot("sk-1");
    publish(&operator, &snapshot);
    let response = poll(&operator, None, 0).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], format!("\"{}\"", snapshot.hash).as_str());
    let received: Snapshot = response.json().await.unwrap();
    assert_eq!(received, snapshot);
    received.check().unwrap();
}

#[tokio::test]
async fn a_proxy_that_has_the_snapshot_gets_304_after_the_wait() {
    let operator = start().await;
    let snapshot = snapshot("sk-1");
    publish(&operator, &snapshot);
    let response = poll(&operator, Some(&snapshot.hash), 1).send().await.unwrap();
    assert_eq!(response.status(), 304);
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_held_poll_answers_as_soon_as_a_new_snapshot_is_published() {
    let operator = start().await;
    let old = snapshot("sk-1");
    publish(&operator, &old);
    // Held for up to 60 s: an answer with the new hash can only come from the wake-up.
    let held = tokio::spawn(poll(&operator, Some(&old.hash), 60).send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let new = snapshot("sk-2");
    publish(&operator, &new);
    let response = tokio::time::timeout(Duration::from_secs(30), held).await.unwrap().unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let received: Snapshot = response.json().await.unwrap();
    assert_eq!(received.hash, new.hash);
}

#[tokio::test]
async fn before_the_first_snapshot_the_poll_answers_503() {
    let operator = start().await;
    let response = poll(&operator, None, 0).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.text().await.unwrap().contains("no table yet"));
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_refused_without_the_table() {
    let operator = start().await;
    publish(&operator, &snapshot("sk-1"));
    let client = reqwest::Client::new();
    let url = format!("{}/v1/table?wait=0", operator.base);
    for request in [
        client.get(&url).header("x-switchyard-proxy", "p"),
        client.get(&url).header("x-switchyard-proxy", "p").bearer_auth("proxy-token-43"),
        client.get(&url).header("x-switchyard-proxy", "p").bearer_auth(""),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body = response.text().await.unwrap();
        assert!(!body.contains("sk-1") && body.contains("Bearer"), "{body}");
    }
}

#[tokio::test]
async fn requests_must_name_the_proxy_and_use_the_right_method() {
    let operator = start().await;
    let client = reqwest::Client::new();
    let nameless = client.get(format!("{}/v1/table", operator.base)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(nameless.status(), 400);
    assert!(nameless.text().await.unwrap().contains("x-switchyard-proxy"));
    let named = |r: reqwest::RequestBuilder| r.bearer_auth(TOKEN).header("x-switchyard-proxy", "p");
    let wrong_method = named(client.post(format!("{}/v1/table", operator.base))).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    let unknown = named(client.get(format!("{}/v2/nothing", operator.base))).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn reports_register_the_proxy_and_what_it_applied_or_rejected() {
    let operator = start().await;
    let snapshot = snapshot("sk-1");
    publish(&operator, &snapshot);
    let report = Report {
        proxy: "proxy-b".into(),
        applied: Some(snapshot.hash.clone()),
        rejected: Some(routing::distribution::Rejection { hash: "sha256:bad".into(), error: "too large".into() }),
        targets: vec![TargetCounters {
            route: "chat".into(),
            target: "gpt".into(),
            requests: 5,
            ..TargetCounters::default()
        }],
    };
    let response = reqwest::Client::new()
        .post(format!("{}/v1/report", operator.base))
        .bearer_auth(TOKEN)
        .header("x-switchyard-proxy", "proxy-b")
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let live = operator.fleet.live();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].name, "proxy-b");
    assert!(live[0].applied.is_some(), "the applied hash is a published one");
    assert_eq!(live[0].rejected.as_ref().map(|r| r.error.as_str()), Some("too large"));
}

#[tokio::test]
async fn a_malformed_report_is_a_400_that_says_why() {
    let operator = start().await;
    let client = reqwest::Client::new();
    let send = |body: &'static str| {
        client
            .post(format!("{}/v1/report", operator.base))
            .bearer_auth(TOKEN)
            .header("x-switchyard-proxy", "p")
            .body(body)
            .send()
    };
    let not_json = send("{not json").await.unwrap();
    assert_eq!(not_json.status(), 400);
    assert!(not_json.text().await.unwrap().contains("not a valid Report"));
    let nameless = send(r#"{"proxy":""}"#).await.unwrap();
    assert_eq!(nameless.status(), 400);
    assert!(nameless.text().await.unwrap().contains("`proxy`"));
    assert!(operator.fleet.live().is_empty());
}
