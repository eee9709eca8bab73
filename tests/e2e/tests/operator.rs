//! The operator and real proxy processes against the real API server (issue 4,
//! item 6): each test gets its own namespace, an operator confined to it, two
//! or three proxies on 127.0.0.x in cluster mode, and a fake OpenAI upstream
//! that requires the API key the Secret holds.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    CONVERGE, Proxy, SNAPSHOT_SECRET, World, always, condition, eventually, fully_programmed, has_condition, new_key,
    openai_provider, route, secret, traffic,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_route_is_served_by_both_proxies_and_reported_programmed() {
    let w = World::start("apply", 2).await;
    let applied = Instant::now();
    w.env.apply_ok(&route("chat", "chat", &[("gpt", "openai", "model-a", 1)])).await;
    w.all_serve("chat", "model-a").await;
    let served = applied.elapsed();
    let object = w.programmed("chat", 1).await;
    let reported = applied.elapsed();
    // `status.proxies.table` is the first table with this generation: here, the one the proxies run.
    let table = object["status"]["proxies"]["table"].as_str().unwrap();
    for proxy in &w.proxies {
        assert_eq!(proxy.table_hash().await.as_deref(), Some(table), "{} runs another table", proxy.name);
    }
    eprintln!("measured: kubectl apply -> both proxies served in {served:?}, status Programmed 2/2 in {reported:?}");

    // The proxies called the fake with the Secret's key.
    let last = w.fake.requests().pop().unwrap();
    assert_eq!(last.header("authorization"), Some(format!("Bearer {}", w.key).as_str()));
    assert_eq!(last.model(), Some("model-a"));

    // The ProviderSecret has the same three conditions.
    let provider = eventually("ProviderSecret openai all True", CONVERGE, || async {
        let object = w.env.provider_secret("openai").await?;
        for kind in ["Accepted", "ResolvedRefs", "Programmed"] {
            has_condition(&object, kind, "True", kind, "")?;
        }
        Ok(object)
    })
    .await;
    assert_eq!(provider["status"]["observedGeneration"], 1);

    // kubectl shows the status in the printer columns.
    let out = w.env.kubectl(&["get", "modelroutes"], None).await;
    let row = out.stdout.lines().nth(1).unwrap_or_default().split_whitespace().collect::<Vec<_>>();
    assert_eq!(row.get(..2), Some(&["chat", "chat"][..]), "{out}");
    assert!(row.contains(&"True"), "PROGRAMMED column is not True: {out}");

    // Both proxies and the operator are ready; the operator shuts down cleanly on SIGTERM.
    for proxy in &w.proxies {
        assert_eq!(proxy.admin_get("/readyz").await.unwrap().0, 200, "{}", proxy.name);
    }
    w.operator.wait_ready().await;
    let mut operator = w.operator;
    let status = operator.process.terminate(Duration::from_secs(10)).await;
    assert!(status.is_some_and(|s| s.success()), "operator did not exit 0 after SIGTERM: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_route_moves_traffic_and_status_follows() {
    let w = World::start("edit", 2).await;
    w.env.apply_ok(&route("chat", "chat", &[("a", "openai", "model-a", 1)])).await;
    w.all_serve("chat", "model-a").await;
    w.programmed("chat", 1).await;

    // A new target takes all traffic; the old one is drained (weight 0).
    w.env.apply_ok(&route("chat", "chat", &[("a", "openai", "model-a", 0), ("b", "openai", "model-b", 1)])).await;
    w.all_serve("chat", "model-b").await;
    for proxy in &w.proxies {
        let seen = traffic(proxy, "chat", 20).await.unwrap();
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            ["model-b"],
            "{}: a drained target got traffic: {seen:?}",
            proxy.name
        );
    }
    w.programmed("chat", 2).await;

    // Even weights: both targets get traffic on each proxy.
    w.env.apply_ok(&route("chat", "chat", &[("a", "openai", "model-a", 1), ("b", "openai", "model-b", 1)])).await;
    w.programmed("chat", 3).await;
    for proxy in &w.proxies {
        let seen = traffic(proxy, "chat", 60).await.unwrap();
        assert_eq!(seen.keys().collect::<Vec<_>>(), ["model-a", "model-b"], "{}: {seen:?}", proxy.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_provider_secret_is_reported_and_recovers_without_restarts() {
    let mut w = World::start("missing-ref", 2).await;
    w.env
        .apply_ok(&format!(
            "{}{}{}",
            route("good", "good", &[("a", "openai", "model-good", 1)]),
            route("bad", "bad", &[("a", "missing-provider", "model-bad", 1)]),
            openai_provider("no-secret", "http://127.0.0.1:9/v1", "absent-secret"),
        ))
        .await;
    w.all_serve("good", "model-good").await;
    w.programmed("good", 1).await;
    let bad = eventually("ModelRoute bad ResolvedRefs=False", CONVERGE, || async {
        let object = w.env.route("bad").await?;
        has_condition(&object, "ResolvedRefs", "False", "ProviderNotFound", "missing-provider")?;
        has_condition(&object, "Programmed", "False", "NotInTable", "")?;
        Ok(object)
    })
    .await;
    // The spec is fine; only a reference is missing.
    has_condition(&bad, "Accepted", "True", "Accepted", "").unwrap();
    eventually("ProviderSecret no-secret ResolvedRefs=False", CONVERGE, || async {
        has_condition(
            &w.env.provider_secret("no-secret").await?,
            "ResolvedRefs",
            "False",
            "SecretNotFound",
            "absent-secret",
        )
    })
    .await;
    for proxy in &w.proxies {
        let (code, body) = proxy.chat("bad").await.unwrap();
        assert_eq!(code, 404, "{}: the broken route must not be served: {body}", proxy.name);
        proxy.serves("good", "model-good").await.unwrap();
    }

    let pids: Vec<_> = w.proxies.iter().map(|p| p.process.pid()).chain([w.operator.process.pid()]).collect();
    w.env.apply_ok(&openai_provider("missing-provider", &w.fake.base_url(), "llm-keys")).await;
    w.all_serve("bad", "model-bad").await;
    w.programmed("bad", 1).await;
    w.all_serve("good", "model-good").await;
    let after: Vec<_> = w.proxies.iter().map(|p| p.process.pid()).chain([w.operator.process.pid()]).collect();
    assert_eq!(pids, after);
    for proxy in &mut w.proxies {
        assert!(proxy.process.is_running(), "{} restarted or died", proxy.name);
    }
    assert!(w.operator.process.is_running(), "the operator died");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_used_by_every_proxy_and_never_leaks() {
    let w = World::start("rotate", 2).await;
    w.env.apply_ok(&route("chat", "chat", &[("a", "openai", "model-a", 1)])).await;
    w.all_serve("chat", "model-a").await;
    w.programmed("chat", 1).await;

    // Rotation with an overlap, as providers allow: the new key goes into the
    // Secret while the old one still works, and the old one is revoked once
    // every proxy runs the table with the new one.
    let mut before = Vec::new();
    for proxy in &w.proxies {
        before.push(proxy.table_hash().await.unwrap());
    }
    let new = new_key();
    w.env.apply_ok(&secret("llm-keys", "apiKey", &new)).await;
    for (proxy, old) in w.proxies.iter().zip(&before) {
        eventually(&format!("{} applies the table with the new key", proxy.name), CONVERGE, || async {
            match proxy.table_hash().await {
                Some(hash) if &hash != old => Ok(()),
                other => Err(format!("{} still runs {other:?}", proxy.name)),
            }
        })
        .await;
    }
    w.fake.require_api_key(&new);
    w.all_serve("chat", "model-a").await;
    for proxy in &w.proxies {
        // Every request from now on carries the new key.
        let before = w.fake.requests().len();
        proxy.serves("chat", "model-a").await.unwrap();
        let requests = w.fake.requests();
        assert!(requests.len() > before);
        for request in &requests[before..] {
            assert_eq!(request.header("authorization"), Some(format!("Bearer {new}").as_str()), "{}", proxy.name);
        }
    }
    eventually("ProviderSecret openai all True", CONVERGE, || async {
        let object = w.env.provider_secret("openai").await?;
        has_condition(&object, "ResolvedRefs", "True", "ResolvedRefs", "")?;
        has_condition(&object, "Programmed", "True", "Programmed", "")
    })
    .await;

    let proxies: Vec<&Proxy> = w.proxies.iter().collect();
    for key in [&w.key, &new] {
        w.env.assert_secret_nowhere(key, &proxies, &[&w.operator]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newer_of_two_routes_claiming_an_alias_gets_conflict() {
    let w = World::start("conflict", 2).await;
    w.env.apply_ok(&route("first", "shared", &[("a", "openai", "model-first", 1)])).await;
    w.all_serve("shared", "model-first").await;
    w.programmed("first", 1).await;
    // creationTimestamp has one-second resolution: make `second` unambiguously newer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.env.apply_ok(&route("second", "shared", &[("a", "openai", "model-second", 1)])).await;

    let second = eventually("ModelRoute second Accepted=False Conflict", CONVERGE, || async {
        let object = w.env.route("second").await?;
        has_condition(&object, "Accepted", "False", "Conflict", "first")?;
        Ok(object)
    })
    .await;
    assert_ne!(condition(&second, "Programmed").map(|c| c["status"].clone()), Some("True".into()), "{second}");
    w.programmed("first", 1).await;
    for proxy in &w.proxies {
        always(&format!("{} keeps serving the older route", proxy.name), Duration::from_secs(1), || {
            proxy.serves("shared", "model-first")
        })
        .await;
    }
    let events = eventually("a Conflict event about `second`", CONVERGE, || async {
        let events = w.env.events().await;
        let found = events.iter().any(|e| {
            e["involvedObject"]["name"] == "second"
                && e["reason"].as_str().is_some_and(|r| r.to_lowercase().contains("conflict"))
        });
        if found { Ok(events) } else { Err(format!("events: {events:?}")) }
    })
    .await;
    let event = events.iter().find(|e| e["involvedObject"]["name"] == "second").unwrap();
    assert_eq!(event["involvedObject"]["kind"], "ModelRoute", "{event}");
    assert_eq!(event["reportingComponent"], "switchyard-operator", "{event}");

    // The older route goes away: the newer one takes the alias.
    w.env.delete(&["modelroute", "first"]).await;
    w.all_serve("shared", "model-second").await;
    w.programmed("second", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_rejects_a_table_is_named_and_the_others_are_unaffected() {
    let mut w = World::start("reject", 2).await;
    w.env.apply_ok(&route("chat", "chat", &[("a", "openai", "model-a", 1)])).await;
    w.all_serve("chat", "model-a").await;
    w.programmed("chat", 1).await;

    // A third proxy whose size limit fits the current table but not a bigger one.
    let size = w.env.secret_data(&w.env.ns, SNAPSHOT_SECRET, routing::distribution::BOOTSTRAP_KEY).await.unwrap().len();
    let mut opts = w.env.proxy_opts("proxy-small", 4, &w.operator);
    opts.extra = vec!["--max-table-bytes".into(), (size + 1024).to_string()];
    w.proxies.push(w.env.start_proxy(&opts).await);
    w.all_serve("chat", "model-a").await;
    w.programmed("chat", 1).await;

    // The new table is several KiB larger: drained targets with long model ids.
    let long: Vec<String> = (0..12).map(|i| format!("padding-{i}-{}", "x".repeat(240))).collect();
    let names: Vec<String> = (0..12).map(|i| format!("pad{i}")).collect();
    let mut targets = vec![("a", "openai", "model-a", 0), ("b", "openai", "model-b", 1)];
    targets.extend(names.iter().zip(&long).map(|(n, m)| (n.as_str(), "openai", m.as_str(), 0)));
    w.env.apply_ok(&route("chat", "chat", &targets)).await;

    let (small, others) = w.proxies.split_last().unwrap();
    for proxy in others {
        eventually(&format!("{} serves the new table", proxy.name), CONVERGE, || proxy.serves("chat", "model-b")).await;
    }
    // Proxies report independently, so the rejection may show before the
    // others' acknowledgements: wait for the state that must settle.
    eventually("Programmed=False naming proxy-small, 2/3 applied", CONVERGE, || async {
        let object = w.env.route("chat").await?;
        has_condition(&object, "Programmed", "False", "Rejected", "proxy-small")?;
        let proxies = &object["status"]["proxies"];
        if proxies["programmed"] == 2 && proxies["total"] == 3 {
            Ok(())
        } else {
            Err(format!("status.proxies: {proxies}"))
        }
    })
    .await;
    // The rejecting proxy keeps its last good table.
    always("proxy-small keeps its last good table", Duration::from_secs(1), || small.serves("chat", "model-a")).await;
    assert_eq!(small.admin_get("/readyz").await.unwrap().0, 200);
    eventually("an event naming proxy-small", CONVERGE, || async {
        let events = w.env.events().await;
        let found = events.iter().any(|e| e["message"].as_str().is_some_and(|m| m.contains("proxy-small")));
        if found { Ok(()) } else { Err(format!("events: {events:?}")) }
    })
    .await;

    // Back to a table that fits: every proxy applies it.
    w.env.apply_ok(&route("chat", "chat", &[("a", "openai", "model-a", 0), ("b", "openai", "model-b", 1)])).await;
    w.all_serve("chat", "model-b").await;
    w.programmed("chat", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_outlive_the_operator_boot_from_the_snapshot_and_reconcile_after_restart() {
    let mut w = World::start("operator-down", 2).await;
    w.env.apply_ok(&route("chat", "chat", &[("a", "openai", "model-a", 1)])).await;
    w.all_serve("chat", "model-a").await;
    let object = w.programmed("chat", 1).await;
    let table = object["status"]["proxies"]["table"].as_str().unwrap().to_owned();

    // The snapshot Secret holds the table the proxies run; it is what a new pod mounts.
    let snapshot = eventually("the snapshot Secret holds the current table", CONVERGE, || async {
        let data = w
            .env
            .secret_data(&w.env.ns, SNAPSHOT_SECRET, routing::distribution::BOOTSTRAP_KEY)
            .await
            .ok_or("no snapshot Secret yet")?;
        let json: Value = serde_json::from_slice(&data).map_err(|e| e.to_string())?;
        if json["hash"] == table.as_str() { Ok(data) } else { Err(format!("snapshot hash {}", json["hash"])) }
    })
    .await;
    let bootstrap = w.env.dir.join("bootstrap.json");
    std::fs::write(&bootstrap, &snapshot).unwrap();

    let operator_addr = w.operator.process.listen;
    w.operator.process.kill();
    for proxy in &w.proxies {
        always(&format!("{} serves while the operator is gone", proxy.name), Duration::from_secs(3), || {
            proxy.serves("chat", "model-a")
        })
        .await;
    }

    // A proxy started now cannot reach the operator: it boots from the bootstrap snapshot.
    let mut opts = w.env.proxy_opts("proxy-late", 4, &w.operator);
    opts.bootstrap = Some(bootstrap);
    let late = w.env.start_proxy(&opts).await;
    eventually("proxy-late serves from the bootstrap snapshot", CONVERGE, || late.serves("chat", "model-a")).await;
    assert_eq!(late.table_hash().await.as_deref(), Some(table.as_str()));
    w.proxies.push(late);

    // A change made while the operator is down is picked up when it comes back on the same address.
    w.env.apply_ok(&route("chat", "chat", &[("b", "openai", "model-b", 1)])).await;
    let mut opts = w.env.operator_opts("operator-2");
    opts.listen = Some(operator_addr);
    w.operator = w.env.start_operator(&opts).await;
    // The proxies reconnect after their backoff, which may have grown while the operator was away.
    for proxy in &w.proxies {
        let what = format!("{} serves the change made while the operator was down", proxy.name);
        eventually(&what, Duration::from_secs(60), || proxy.serves("chat", "model-b")).await;
    }
    // operator-2 waits for operator-1's Lease to expire before it writes status.
    let n = w.proxies.len() as u64;
    eventually("ModelRoute chat Programmed 3/3 after the restart", Duration::from_secs(60), || async {
        fully_programmed(&w.env.route("chat").await?, n)
    })
    .await;
    w.programmed("chat", 2).await;
}
