//! The `switchyard-proxy` binary: flags, signals, graceful drain.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic")]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{chat_body, mock_provider, write_file};

struct Binary {
    child: Child,
    data: String,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on `dir` and reads the bound addresses from its log.
fn start(dir: tempfile::TempDir, extra: &[&str]) -> Binary {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard-proxy"))
        .args(["--manifests", dir.path().to_str().unwrap(), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let (data, admin) = loop {
        let line = lines.next().expect("the proxy exited before listening").unwrap();
        let Ok(log) = serde_json::from_str::<Value>(&line) else { continue };
        if log["message"] == "switchyard-proxy listening" {
            break (log["listen"].as_str().unwrap().to_owned(), log["admin_listen"].as_str().unwrap().to_owned());
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Binary { child, data: format!("http://{data}"), admin: format!("http://{admin}"), _dir: dir }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn route(target: &str) -> String {
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {{name: chat}}\nspec:\n  targets:\n  - {{name: {target}, provider: m, model: a}}\n"
    )
}

#[tokio::test]
async fn sigterm_drains_in_flight_streams_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "p.yaml", &mock_provider("m", "  mock: {latency: 10ms, tokensPerSecond: 20}\n"));
    write_file(dir.path(), "r.yaml", &route("slow"));
    let mut proxy = start(dir, &["--drain-timeout", "10s"]);
    let client = reqwest::Client::new();
    // 24 words at 20 per second: a stream of about 1.2 s.
    let response =
        client.post(format!("{}/v1/chat/completions", proxy.data)).json(&chat_body("chat", true)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    signal(&proxy.child, "TERM");
    let text = response.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "the in-flight stream was cut: {text}");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the proxy did not exit after draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
    assert!(client.get(format!("{}/healthz", proxy.admin)).send().await.is_err());
}

#[tokio::test]
async fn sighup_reloads_even_when_polling_is_slow() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "p.yaml", &mock_provider("m", ""));
    write_file(dir.path(), "r.yaml", &route("before"));
    let path = dir.path().to_path_buf();
    let proxy = start(dir, &["--reload-interval", "1h"]);
    let client = reqwest::Client::new();
    let target = |response: &reqwest::Response| response.headers()["x-switchyard-target"].to_str().unwrap().to_owned();
    let url = format!("{}/v1/chat/completions", proxy.data);
    assert_eq!(target(&client.post(&url).json(&chat_body("chat", false)).send().await.unwrap()), "before");
    write_file(&path, "r.yaml", &route("after"));
    signal(&proxy.child, "HUP");
    let started = Instant::now();
    loop {
        let response = client.post(&url).json(&chat_body("chat", false)).send().await.unwrap();
        if target(&response) == "after" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_missing_manifest_directory_exits_64_with_a_message_naming_the_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard-proxy"))
        .args(["--manifests", "/nonexistent/switchyard", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--manifests"), "{stderr}");
}

#[test]
fn a_zero_idle_timeout_is_refused_with_a_message_naming_the_flag_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard-proxy"))
        .args(["--manifests", dir.path().to_str().unwrap(), "--idle-timeout", "0s"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "clap's usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--idle-timeout") && stderr.contains("e.g. `60s`"), "{stderr}");
}

#[test]
fn an_unusable_https_proxy_exits_64_with_a_message_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard-proxy"))
        .args(["--manifests", dir.path().to_str().unwrap(), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("HTTPS_PROXY", "socks5://user:hunter2@proxy:1080")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`HTTPS_PROXY`") && stderr.contains("http://[user:password@]host[:port]"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
