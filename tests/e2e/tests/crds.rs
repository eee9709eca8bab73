//! The generated CRDs on the real API server: they install and become
//! Established, valid objects are accepted, and the schema and CEL rules
//! reject bad manifests at `kubectl apply` time with readable messages.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use support::{Env, repo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crds_install_and_are_established() {
    let env = Env::new("crds-established").await;
    for crd in ["modelroutes.switchyard.dev", "providersecrets.switchyard.dev"] {
        let out = env.kubectl(&["get", "crd", crd, "-o", "json"], None).await;
        assert!(out.success(), "{out}");
        let object: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let conditions = object["status"]["conditions"].as_array().unwrap();
        for kind in ["Established", "NamesAccepted"] {
            assert!(
                conditions.iter().any(|c| c["type"] == kind && c["status"] == "True"),
                "{crd} is not {kind}: {conditions:?}"
            );
        }
        assert_eq!(object["spec"]["versions"][0]["name"], "v1alpha1");
        assert_eq!(object["spec"]["versions"][0]["subresources"]["status"], serde_json::json!({}));
    }
    let out = env.kubectl(&["api-resources", "--api-group=switchyard.dev", "-o", "name"], None).await;
    assert!(out.success(), "{out}");
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["modelroutes.switchyard.dev", "providersecrets.switchyard.dev"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_manifests_are_accepted() {
    let env = Env::new("crds-valid").await;
    // testdata/valid.yaml names namespace `default`; the same objects go into this test's namespace.
    let valid = std::fs::read_to_string(repo().join("tests/kube-apiserver/testdata/valid.yaml")).unwrap();
    let valid = valid.replace("namespace: default", &format!("namespace: {}", env.ns));
    let out = env.apply_ok(&valid).await;
    assert!(out.stdout.contains("modelroute.switchyard.dev/chat created"), "{out}");
    let out = env.kubectl(&["get", "modelroutes", "-o", "name"], None).await;
    assert!(out.stdout.contains("modelroute.switchyard.dev/chat"), "{out}");
}

/// Every file in `tests/kube-apiserver/testdata/invalid/` is rejected, and
/// kubectl's message contains each of the file's `# expect:` lines and none
/// of its `# not-expect:` lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_and_cel_rules_reject_bad_manifests_at_apply_time() {
    let env = Env::new("crds-invalid").await;
    let dir = repo().join("tests/kube-apiserver/testdata/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 10, "expected the invalid fixtures in {}", dir.display());
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let manifest = std::fs::read_to_string(file).unwrap();
        let manifest = manifest.replace("namespace: default", &format!("namespace: {}", env.ns));
        let out = env.apply(&manifest).await;
        if out.success() {
            failures.push(format!("{name}: ACCEPTED\n{out}"));
            continue;
        }
        assert_eq!(out.code, Some(1), "{name}: {out}");
        for line in manifest.lines() {
            if let Some(want) = line.strip_prefix("# expect: ")
                && !out.stderr.contains(want)
            {
                failures.push(format!("{name}: the message lacks {want:?}:\n{}", out.stderr));
            }
            if let Some(unwanted) = line.strip_prefix("# not-expect: ")
                && out.stderr.contains(unwanted)
            {
                failures.push(format!("{name}: the message contains {unwanted:?}:\n{}", out.stderr));
            }
        }
        // Readable: the message names the object and says it is invalid, without a Go stack or struct dump.
        let readable =
            out.stderr.contains(&format!("\"{name}\" is invalid")) || out.stderr.contains("strict decoding error");
        if !readable {
            failures.push(format!("{name}: the message does not say which object is invalid:\n{}", out.stderr));
        }
        eprintln!("{name}: {}", out.stderr.trim());
    }
    // Nothing of the rejected manifests was stored.
    let out = env.kubectl(&["get", "modelroutes,providersecrets", "-o", "name"], None).await;
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout.trim(), "", "rejected objects were stored");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
