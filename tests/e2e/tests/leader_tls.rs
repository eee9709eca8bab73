//! Two operator replicas and one Lease; the distribution API over TLS
//! (issue 4, items 2 and 4), against the real API server with real processes.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{CONVERGE, Env, Operator, always, eventually, has_condition, repo, route};

/// The Lease's holder, as the API server has it.
async fn holder(env: &Env) -> String {
    let out =
        env.kubectl(&["get", "lease", "switchyard-operator", "-o", "jsonpath={.spec.holderIdentity}"], None).await;
    out.stdout.trim().to_owned()
}

/// `GET /v1/table` on `operator` with the test's token: the status code.
async fn table_status(env: &Env, operator: &Operator) -> u16 {
    let response = reqwest::Client::new()
        .get(format!("{}/v1/table?wait=0", operator.url()))
        .bearer_auth(&env.token)
        .header("x-switchyard-proxy", "probe")
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_standby_takes_over_when_it_stops() {
    let env = Env::new("leader").await;
    let mut first = env.start_operator(&env.operator_opts("operator-1")).await;
    first.wait_ready().await;
    let second = env.start_operator(&env.operator_opts("operator-2")).await;
    assert_eq!(holder(&env).await, "operator-1");

    // A route with a missing ProviderSecret: the leader writes its status and a Warning Event.
    env.apply_ok(&route("chat", "chat", &[("gpt", "nowhere", "model-a", 1)])).await;
    eventually("the leader reports ResolvedRefs=False", CONVERGE, || async {
        has_condition(&env.route("chat").await?, "ResolvedRefs", "False", "ProviderNotFound", "nowhere")
    })
    .await;
    // The standby neither serves tables nor is ready, and records nothing.
    always("operator-2 stands by", Duration::from_secs(3), || async {
        match (second.admin_get("/readyz").await?.0, table_status(&env, &second).await) {
            (503, 503) => Ok(()),
            other => Err(format!("operator-2 /readyz and /v1/table answered {other:?}")),
        }
    })
    .await;
    assert_eq!(table_status(&env, &first).await, 200);
    let instances = |events: &[Value]| -> Vec<String> {
        events.iter().filter_map(|e| e["reportingInstance"].as_str().map(str::to_owned)).collect()
    };
    // The Event is recorded after the status write: wait for it.
    let reporters = eventually("an Event from the leader", CONVERGE, || async {
        let reporters = instances(&env.events().await);
        if reporters.iter().any(|r| r == "operator-1") { Ok(reporters) } else { Err(format!("{reporters:?}")) }
    })
    .await;
    assert!(!reporters.iter().any(|r| r == "operator-2"), "the standby recorded Events: {reporters:?}");

    // SIGTERM: the leader releases the Lease and the standby takes over without waiting it out.
    let status = first.process.terminate(Duration::from_secs(10)).await;
    assert!(status.is_some_and(|s| s.success()), "operator-1 did not exit 0: {status:?}");
    second.wait_ready().await;
    assert_eq!(holder(&env).await, "operator-2");
    assert_eq!(table_status(&env, &second).await, 200);

    // The new leader writes status for the next generation.
    env.apply_ok(&route("chat", "chat", &[("gpt", "still-nowhere", "model-a", 1)])).await;
    eventually("operator-2 reports generation 2", CONVERGE, || async {
        has_condition(&env.route("chat").await?, "ResolvedRefs", "False", "ProviderNotFound", "still-nowhere")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_poll_over_tls_and_refuse_an_operator_they_cannot_verify() {
    let w = support::World::start("tls-plain", 0).await;
    let tls = repo().join("proxy/tests/fixtures/tls");
    let mut opts = w.env.operator_opts("operator-tls");
    opts.lease_namespace = w.env.ns.clone();
    opts.extra = vec![
        "--tls-cert".into(),
        tls.join("server.pem").display().to_string(),
        "--tls-key".into(),
        tls.join("server.key").display().to_string(),
    ];
    // The plain operator of the World holds this namespace's Lease: stop it first.
    let mut plain = w.operator;
    plain.process.terminate(Duration::from_secs(10)).await;
    let operator = w.env.start_operator(&opts).await;
    operator.wait_ready().await;
    let https = format!("https://{}", operator.process.listen);

    let mut trusting = w.env.proxy_opts("proxy-tls", 2, &operator);
    trusting.operator = https.clone();
    trusting.extra = vec!["--operator-ca".into(), tls.join("ca.pem").display().to_string()];
    let trusting = w.env.start_proxy(&trusting).await;
    let mut doubting = w.env.proxy_opts("proxy-no-ca", 3, &operator);
    doubting.operator = https;
    let doubting = w.env.start_proxy(&doubting).await;

    w.env.apply_ok(&route("chat", "chat", &[("gpt", "openai", "model-a", 1)])).await;
    eventually("proxy-tls serves chat", CONVERGE, || trusting.serves("chat", "model-a")).await;
    // Without the CA the proxy never gets a table, so it is never ready.
    always("proxy-no-ca stays unready", Duration::from_secs(3), || async {
        match doubting.admin_get("/readyz").await?.0 {
            200 => Err("ready without a verified operator".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    // Plain HTTP to a TLS port gets no table either.
    let plain_http = reqwest::Client::new()
        .get(format!("{}/v1/table?wait=0", operator.url()))
        .bearer_auth(&w.env.token)
        .header("x-switchyard-proxy", "probe")
        .send()
        .await;
    assert!(plain_http.is_err() || plain_http.is_ok_and(|r| r.status() != 200));
}
