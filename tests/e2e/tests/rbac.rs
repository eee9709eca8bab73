//! The operator with exactly the permissions of `deploy/rbac.yaml` (issue 4,
//! item 5): it runs as the ServiceAccount `switchyard-system/switchyard-operator`
//! with a TokenRequest token, watches every namespace, and still does its whole
//! job: serve tables, write status, keep its Lease and snapshot Secret, record
//! Events. Anything outside the role is denied.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use std::path::Path;
use std::time::Duration;

use support::{CONVERGE, Env, Kubectl, SNAPSHOT_SECRET, World, cluster, eventually, has_condition, repo, route};

const SYSTEM: &str = "switchyard-system";

/// kubectl with `kubeconfig` (not the admin's).
async fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Kubectl {
    cluster().kubectl(kubeconfig, args, None).await
}

/// A kubeconfig for the operator's ServiceAccount: the test cluster plus a TokenRequest token.
async fn service_account_kubeconfig(env: &Env) -> std::path::PathBuf {
    let admin = &cluster().kubeconfig_path;
    let out = kubectl_as(admin, &["-n", SYSTEM, "create", "token", "switchyard-operator", "--duration=2h"]).await;
    assert!(out.success(), "{out}");
    let token = out.stdout.trim().to_owned();
    let path = env.dir.join("operator.kubeconfig");
    std::fs::copy(admin, &path).unwrap();
    let token_arg = format!("--token={token}");
    for args in [
        &["config", "set-credentials", "switchyard-operator", token_arg.as_str()][..],
        &["config", "set-context", "operator", "--cluster=switchyard-test", "--user=switchyard-operator"],
        &["config", "use-context", "operator"],
    ] {
        let out = kubectl_as(&path, args).await;
        assert!(out.success(), "{out}");
    }
    // Only the operator's credentials are left in the file.
    let out = kubectl_as(&path, &["config", "delete-user", "switchyard-admin"]).await;
    assert!(out.success(), "{out}");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_works_with_exactly_the_rbac_of_deploy_rbac_yaml() {
    let env = Env::new("rbac").await;
    let admin = cluster().kubeconfig_path.clone();
    let out = kubectl_as(&admin, &["create", "namespace", SYSTEM]).await;
    assert!(out.success(), "{out}");
    let rbac = repo().join("deploy/rbac.yaml");
    let out = kubectl_as(&admin, &["apply", "-f", rbac.to_str().unwrap()]).await;
    assert!(out.success(), "deploy/rbac.yaml does not apply: {out}");
    let kubeconfig = service_account_kubeconfig(&env).await;

    // What the role allows, and what it does not.
    let ns = env.ns.as_str();
    let checks: &[(&[&str], bool)] = &[
        (&["watch", "modelroutes.switchyard.dev", "--all-namespaces"], true),
        (&["patch", "modelroutes.switchyard.dev", "--subresource=status", "-n", ns], true),
        (&["patch", "providersecrets.switchyard.dev", "--subresource=status", "-n", ns], true),
        (&["list", "secrets", "--all-namespaces"], true),
        (&["create", "events", "-n", ns], true),
        (&["patch", "secrets/switchyard-snapshot", "-n", SYSTEM], true),
        (&["update", "leases.coordination.k8s.io/switchyard-operator", "-n", SYSTEM], true),
        (&["list", "pods", "--all-namespaces"], false),
        (&["update", "modelroutes.switchyard.dev", "--subresource=status", "-n", ns], false),
        (&["delete", "secrets/switchyard-snapshot", "-n", SYSTEM], false),
        (&["delete", "leases.coordination.k8s.io/switchyard-operator", "-n", SYSTEM], false),
        (&["patch", "modelroutes.switchyard.dev", "-n", ns], false),
        (&["delete", "modelroutes.switchyard.dev", "-n", ns], false),
        (&["create", "providersecrets.switchyard.dev", "-n", ns], false),
        (&["update", "secrets/llm-keys", "-n", ns], false),
        (&["update", "secrets/other", "-n", SYSTEM], false),
        (&["create", "secrets", "-n", ns], false),
        (&["update", "leases.coordination.k8s.io/other", "-n", SYSTEM], false),
        (&["create", "leases.coordination.k8s.io", "-n", ns], false),
        (&["list", "configmaps", "--all-namespaces"], false),
    ];
    let mut wrong = Vec::new();
    for (args, allowed) in checks {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let out = kubectl_as(&kubeconfig, &all).await;
        let answer = out.stdout.trim().to_owned();
        if answer != if *allowed { "yes" } else { "no" } {
            wrong.push(format!("can-i {}: {answer} {}", args.join(" "), out.stderr.trim()));
        }
    }
    assert!(wrong.is_empty(), "the role is not what deploy/rbac.yaml means: {wrong:#?}");
    let out = kubectl_as(&kubeconfig, &["get", "pods", "--all-namespaces"]).await;
    assert!(!out.success() && out.stderr.contains("forbidden"), "listing pods must be forbidden: {out}");

    // The operator as that ServiceAccount, as deployed: every namespace, Lease and snapshot in switchyard-system.
    let mut opts = env.operator_opts("operator-rbac");
    opts.kubeconfig = kubeconfig;
    opts.watch_namespace = None;
    opts.lease_namespace = SYSTEM.to_owned();
    opts.snapshot_secret = format!("{SYSTEM}/{SNAPSHOT_SECRET}");
    let w = World::start_with(env, &opts, 1).await;
    w.env.apply_ok(&route("chat", "chat", &[("a", "openai", "model-a", 1)])).await;
    eventually("proxy-a serves chat", CONVERGE, || w.proxies[0].serves("chat", "model-a")).await;
    eventually("ModelRoute chat Programmed 1/1", CONVERGE, || async {
        support::fully_programmed(&w.env.route("chat").await?, 1)
    })
    .await;
    eventually("ProviderSecret openai ResolvedRefs", CONVERGE, || async {
        has_condition(&w.env.provider_secret("openai").await?, "ResolvedRefs", "True", "ResolvedRefs", "")
    })
    .await;

    // A conflict makes the operator record an Event.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.env.apply_ok(&route("newer", "chat", &[("a", "openai", "model-b", 1)])).await;
    eventually("ModelRoute newer Conflict", CONVERGE, || async {
        has_condition(&w.env.route("newer").await?, "Accepted", "False", "Conflict", "")
    })
    .await;
    eventually("an Event about newer", CONVERGE, || async {
        let events = w.env.events().await;
        if events.iter().any(|e| e["involvedObject"]["name"] == "newer") { Ok(()) } else { Err(format!("{events:?}")) }
    })
    .await;

    // Its Lease and snapshot Secret.
    let out = kubectl_as(
        &admin,
        &["-n", SYSTEM, "get", "lease", "switchyard-operator", "-o", "jsonpath={.spec.holderIdentity}"],
    )
    .await;
    assert_eq!(out.stdout, "operator-rbac", "{out}");
    let snapshot = w.env.secret_data(SYSTEM, SNAPSHOT_SECRET, routing::distribution::BOOTSTRAP_KEY).await;
    assert!(snapshot.is_some(), "no snapshot Secret in {SYSTEM}");

    // It never hit a permission error.
    let log = w.operator.process.log_text();
    let denied: Vec<&str> = log.lines().filter(|l| l.to_lowercase().contains("forbidden")).collect();
    assert!(denied.is_empty(), "the operator was denied something it needs: {denied:#?}");
}
