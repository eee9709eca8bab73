//! Test harness: an in-process proxy on 127.0.0.1 ports chosen by the OS,
//! reading manifests from a temporary directory the test can edit.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::path::Path;
use std::time::{Duration, Instant};

use proxy::app::Running;
use proxy::args::{Args, ClusterArgs};
use serde_json::{Value, json};

pub struct Proxy {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
}

/// Writes `content` to `dir/name` atomically (write + rename), as editors and
/// ConfigMap updates do.
pub fn write_file(dir: &Path, name: &str, content: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Flags for an in-process proxy on OS-chosen loopback ports with a fast
/// reload interval: standalone on `manifests`, or in cluster mode.
pub fn args(manifests: Option<&Path>, cluster: ClusterArgs) -> Args {
    Args {
        manifests: manifests.map(Path::to_path_buf),
        cluster,
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        drain_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        reload_interval: Duration::from_millis(50),
        ws_ping_interval: Duration::from_secs(20),
        worker_threads: None,
        log_format: "json".into(),
    }
}

impl Proxy {
    /// Starts a proxy on `files` (name, YAML) with a fast reload interval.
    pub async fn start(files: &[(&str, &str)]) -> Proxy {
        Self::start_with(files, |_| {}).await
    }

    /// [`Proxy::start`] with changed process flags.
    pub async fn start_with(files: &[(&str, &str)], tweak: impl FnOnce(&mut Args)) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            write_file(dir.path(), name, content);
        }
        Self::start_in_with(dir, tweak).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> Proxy {
        Self::start_in_with(dir, |_| {}).await
    }

    pub async fn start_in_with(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Args)) -> Proxy {
        let mut args = args(Some(dir.path()), ClusterArgs::default());
        tweak(&mut args);
        let running = proxy::app::start(args).await.unwrap();
        let base = format!("http://{}", running.data_addr);
        let admin = format!("http://{}", running.admin_addr);
        let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
        Proxy { running: Some(running), dir, base, admin, client }
    }

    pub fn write(&self, name: &str, content: &str) {
        write_file(self.dir.path(), name, content);
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).unwrap();
    }

    pub async fn chat(&self, body: &Value) -> reqwest::Response {
        self.client.post(format!("{}/v1/chat/completions", self.base)).json(body).send().await.unwrap()
    }

    pub async fn chat_with(&self, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.client.post(format!("{}/v1/chat/completions", self.base)).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let response = self.client.get(format!("{}{path}", self.admin)).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub async fn table(&self) -> Value {
        serde_json::from_str(&self.admin_get("/debug/table").await.1).unwrap()
    }

    pub fn hash(&self) -> Option<String> {
        self.running.as_ref()?.routing.snapshot().map(|l| l.snapshot.hash.clone())
    }

    /// Polls until the installed table changes away from `old`.
    pub async fn wait_for_new_table(&self, old: Option<&str>) -> Duration {
        let start = Instant::now();
        loop {
            if self.hash().as_deref() != old && self.hash().is_some() {
                return start.elapsed();
            }
            assert!(start.elapsed() < Duration::from_secs(5), "no new table within 5 s; still {old:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(mut self) -> bool {
        self.running.take().unwrap().stop().await
    }
}

/// A minimal chat request for `model`.
pub fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "say hello"}]})
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap_or(e).to_owned())
        .collect()
}

/// Polls `check` every 10 ms for up to `limit`.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

/// A mock ProviderSecret.
pub fn mock_provider(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ProviderSecret\nmetadata:\n  name: {name}\nspec:\n  provider: mock\n{extra}---\n"
    )
}

/// An openai-compatible ProviderSecret pointing at `base_url`, with an optional key.
pub fn http_provider(name: &str, base_url: &str, key: Option<&str>) -> String {
    let mut out = format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ProviderSecret\nmetadata:\n  name: {name}\nspec:\n  provider: openai-compatible\n  baseUrl: {base_url}\n"
    );
    if let Some(key) = key {
        out.push_str(&format!(
            "  apiKey:\n    secretKeyRef: {{name: {name}-key, key: apiKey}}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}-key\nstringData:\n  apiKey: {key}\n"
        ));
    }
    out.push_str("---\n");
    out
}

/// A ProviderSecret `name` of `provider` at `base_url` whose key `key` is in
/// its own Secret; `extra` holds more `spec` lines (indented two spaces).
pub fn keyed_provider(name: &str, provider: &str, base_url: &str, key: &str, extra: &str) -> String {
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ProviderSecret\nmetadata:\n  name: {name}\nspec:\n  provider: {provider}\n  baseUrl: {base_url}\n  apiKey:\n    secretKeyRef: {{name: {name}-key, key: apiKey}}\n{extra}---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}-key\nstringData:\n  apiKey: {key}\n---\n"
    )
}

/// A ModelRoute `alias` over `targets` (YAML flow mappings), with `extra` spec lines.
pub fn route_over(alias: &str, targets: &[&str], extra: &str) -> String {
    let targets: String = targets.iter().map(|t| format!("  - {t}\n")).collect();
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata: {{name: {alias}}}\nspec:\n  targets:\n{targets}{extra}---\n"
    )
}

/// `POST /v1/embeddings` with `body`.
pub async fn embed(proxy: &Proxy, body: &Value) -> reqwest::Response {
    proxy.client.post(format!("{}/v1/embeddings", proxy.base)).json(body).send().await.unwrap()
}
