//! The end-to-end harness: the real kube-apiserver (one per test binary), a
//! namespace per test, `kubectl`, the operator and proxy binaries as child
//! processes with their logs in files, polling with deadlines, and a check
//! that a secret appears nowhere it must not.
//!
//! - [`cluster`] builds (cached) and starts `switchyard-test-apiserver` once
//!   per test binary with `--exit-on-stdin-eof`, so it stops when the test
//!   process ends however it ends, and installs `crds/`.
//! - [`Env::new`] gives a test its namespace, a work directory under
//!   `target/tmp/e2e/`, a distribution token and a kube client. When the test
//!   fails, dropping the [`Env`] prints the tail of every log it captured and
//!   keeps the directory; when it passes, the directory is removed.
//! - [`Env::start_operator`] and [`Env::start_proxy`] run `switchyard-operator`
//!   and `switchyard-proxy` from `target/<profile>/` (or from
//!   `SWITCHYARD_OPERATOR_BIN` / `SWITCHYARD_PROXY_BIN`), wait for their
//!   `listening` log line and read the bound addresses from it.
//!
//! Timeouts here are deadlines for convergence, not speed assertions: the
//! machine is shared. Latency is measured by `bench/operator.sh`.

#![allow(dead_code, reason = "each test binary uses a different part of the harness")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness: a failed step panics the test")]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Namespace, Secret};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::ApiResource;
use proxy::testing::FakeOpenAi;
use routing::api::{ModelRoute, ProviderSecret};
use serde_json::{Value, json};

/// How long a change may take to converge before a test gives up. Generous:
/// the machine is shared with builds; the real figure is measured by the bench.
pub const CONVERGE: Duration = Duration::from_secs(20);

// === paths ===

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// `target/<profile>/`, where cargo puts the binaries of the build this test belongs to.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    // target/<profile>/deps/<test>-<hash> or target/<profile>/examples/<example>
    exe.parent().and_then(Path::parent).expect("test binary inside target/<profile>/").to_path_buf()
}

/// The name of this test binary without cargo's hash suffix.
fn test_binary_name() -> String {
    let exe = std::env::current_exe().expect("path of the test binary");
    let stem = exe.file_stem().and_then(|s| s.to_str()).unwrap_or("e2e").to_owned();
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
        _ => stem,
    }
}

/// Root of this test binary's work directories: `target/tmp/e2e/<binary>`.
fn work_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = option_env!("CARGO_TARGET_TMPDIR").map_or_else(|| repo().join("target/tmp"), PathBuf::from);
        let root = tmp.join("e2e").join(test_binary_name());
        // Left over from an earlier run of this binary.
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create the e2e work directory");
        root
    })
}

/// The last line of a build script's stdout (its progress goes to our stderr).
fn script_output(script: &Path) -> PathBuf {
    let output = Command::new("bash").arg(script).stderr(Stdio::inherit()).output().expect("run a build script");
    assert!(output.status.success(), "{} failed ({})", script.display(), output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(stdout.lines().last().expect("a build script prints the binary path last").trim())
}

/// Newest modification time of the files under `dir`.
fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() { newest_mtime(&path) } else { entry.metadata().ok()?.modified().ok() };
        newest = newest.max(time);
    }
    newest
}

/// A workspace binary: `$override_var` if set, otherwise `target/<profile>/<name>`,
/// rebuilt with `cargo build -p <package> --bin <name>` when it is missing or
/// older than its sources (so a test never runs a stale binary).
fn workspace_binary(override_var: &str, package: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(override_var) {
        return PathBuf::from(path);
    }
    static BUILD: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = profile_dir().join(name);
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let root = repo();
    let sources = [root.join(package).join("src"), root.join("routing/src")]
        .iter()
        .filter_map(|dir| newest_mtime(dir))
        .chain(std::fs::metadata(root.join("Cargo.lock")).and_then(|m| m.modified()).ok())
        .max();
    if built.is_none() || sources > built {
        eprintln!("e2e: building {name} ({} is missing or older than its sources)", path.display());
        let release = profile_dir().file_name().is_some_and(|p| p == "release");
        let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cargo.current_dir(&root).args(["build", "--locked", "-p", package, "--bin", name]);
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p {package} --bin {name} failed");
    }
    path
}

pub fn operator_binary() -> PathBuf {
    workspace_binary("SWITCHYARD_OPERATOR_BIN", "operator", "switchyard-operator")
}

pub fn proxy_binary() -> PathBuf {
    workspace_binary("SWITCHYARD_PROXY_BIN", "proxy", "switchyard-proxy")
}

// === the API server ===

/// The API server of this test binary, with the CRDs installed.
pub struct Cluster {
    pub url: String,
    pub kubeconfig_path: PathBuf,
    pub kubeconfig: Kubeconfig,
    pub kubectl: PathBuf,
    pub dir: PathBuf,
    pub log: PathBuf,
    /// The server and the write end of its stdin: it stops when this process exits.
    _server: Mutex<(Child, ChildStdin)>,
}

/// Starts the API server on first use (building it if needed, ~4 minutes cold).
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(start_cluster)
}

fn start_cluster() -> Cluster {
    let here = repo().join("tests/kube-apiserver");
    let server_bin = std::env::var_os("SWITCHYARD_TEST_APISERVER").map_or_else(
        || {
            eprintln!("e2e: tests/kube-apiserver/build.sh (cached; the first build takes about 4 minutes)");
            script_output(&here.join("build.sh"))
        },
        PathBuf::from,
    );
    let kubectl = std::env::var_os("KUBECTL").map_or_else(|| script_output(&here.join("kubectl.sh")), PathBuf::from);
    let dir = work_root().join("apiserver");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("apiserver.log");
    let mut child = Command::new(&server_bin)
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--log-file")
        .arg(&log)
        .arg("--exit-on-stdin-eof")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("start {}: {err}", server_bin.display()));
    let stdin = child.stdin.take().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let mut parts = line.split_whitespace();
    assert_eq!(
        parts.next(),
        Some("ready"),
        "the API server did not print `ready` (got {line:?}); see {}",
        log.display()
    );
    let url = parts.next().unwrap().to_owned();
    let kubeconfig_path = PathBuf::from(parts.next().unwrap());
    let kubeconfig = Kubeconfig::read_from(&kubeconfig_path).unwrap();
    let cluster = Cluster { url, kubeconfig_path, kubeconfig, kubectl, dir, log, _server: Mutex::new((child, stdin)) };

    let crds = repo().join("crds");
    let out = cluster.kubectl_sync(&cluster.kubeconfig_path, &["apply", "-f", crds.to_str().unwrap()], None);
    assert!(out.success(), "the API server rejected crds/: {out}");
    let out = cluster.kubectl_sync(
        &cluster.kubeconfig_path,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/modelroutes.switchyard.dev",
            "crd/providersecrets.switchyard.dev",
        ],
        None,
    );
    assert!(out.success(), "CRDs not Established: {out}");
    // Discovery of the new group lags a moment behind Established.
    let started = Instant::now();
    loop {
        let out = cluster.kubectl_sync(&cluster.kubeconfig_path, &["get", "modelroutes,providersecrets", "-A"], None);
        if out.success() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the new kinds never became usable: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster
}

impl Cluster {
    /// A kube client for `context` of the server's kubeconfig (`None`: the admin).
    pub async fn client(&self, context: Option<&str>) -> kube::Client {
        let options = KubeConfigOptions { context: context.map(Into::into), ..Default::default() };
        let config = kube::Config::from_custom_kubeconfig(self.kubeconfig.clone(), &options).await.unwrap();
        kube::Client::try_from(config).unwrap()
    }

    fn kubectl_command(&self, kubeconfig: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(&self.kubectl);
        command.arg("--kubeconfig").arg(kubeconfig).arg("--cache-dir").arg(self.dir.join("kube-cache")).args(args);
        command
    }

    fn kubectl_sync(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Kubectl {
        let mut command = self.kubectl_command(kubeconfig, args);
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        let output = child.wait_with_output().unwrap();
        Kubectl::new(args, output)
    }

    /// Runs kubectl with `kubeconfig` and `args`, feeding `stdin` if given.
    pub async fn kubectl(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Kubectl {
        let mut command = tokio::process::Command::from(self.kubectl_command(kubeconfig, args));
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        if let Some(input) = stdin {
            use tokio::io::AsyncWriteExt;
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).await.unwrap();
            drop(pipe);
        }
        let output = child.wait_with_output().await.unwrap();
        Kubectl::new(args, output)
    }
}

/// What one kubectl run printed and how it exited.
#[derive(Debug)]
pub struct Kubectl {
    pub args: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    fn new(args: &[&str], output: std::process::Output) -> Kubectl {
        Kubectl {
            args: args.join(" "),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Kubectl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`kubectl {}` exited {:?}\nstdout:\n{}\nstderr:\n{}", self.args, self.code, self.stdout, self.stderr)
    }
}

// === one test's environment ===

/// One test's namespace, work directory, token and captured logs.
pub struct Env {
    pub name: String,
    pub ns: String,
    pub dir: PathBuf,
    /// The bearer token of the operator ↔ proxy channel, and the file holding it.
    pub token: String,
    pub token_file: PathBuf,
    pub client: kube::Client,
    logs: Mutex<Vec<PathBuf>>,
    started: Instant,
}

impl Env {
    /// Starts (or reuses) the API server and creates the namespace `e2e-<test>-<random>`.
    pub async fn new(test: &str) -> Env {
        let cluster = tokio::task::spawn_blocking(cluster).await.unwrap();
        let label: String =
            test.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        let label = label.get(..40).unwrap_or(&label).trim_matches('-').to_owned();
        let ns = format!("e2e-{label}-{:05x}", rand::random::<u32>() & 0xf_ffff);
        let dir = work_root().join(&ns);
        std::fs::create_dir_all(&dir).unwrap();
        let token = format!("dist-{:032x}", rand::random::<u128>());
        let token_file = dir.join("token");
        std::fs::write(&token_file, &token).unwrap();
        let client = cluster.client(None).await;
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();
        Env {
            name: test.to_owned(),
            ns,
            dir,
            token,
            token_file,
            client,
            logs: Mutex::new(Vec::new()),
            started: Instant::now(),
        }
    }

    pub fn cluster(&self) -> &'static Cluster {
        cluster()
    }

    /// A new log file `<dir>/<name>.log` (`-2`, `-3`… for restarts), registered for failure output.
    pub fn log_file(&self, name: &str) -> PathBuf {
        let mut logs = self.logs.lock().unwrap();
        let mut path = self.dir.join(format!("{name}.log"));
        let mut n = 1;
        while logs.contains(&path) {
            n += 1;
            path = self.dir.join(format!("{name}-{n}.log"));
        }
        logs.push(path.clone());
        path
    }

    /// Every log captured so far.
    pub fn logs(&self) -> Vec<PathBuf> {
        self.logs.lock().unwrap().clone()
    }

    /// kubectl as the admin, in this test's namespace.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Kubectl {
        let mut all = vec!["-n", &self.ns];
        all.extend_from_slice(args);
        cluster().kubectl(&cluster().kubeconfig_path, &all, stdin).await
    }

    /// `kubectl apply -f -` of `yaml` in this namespace.
    pub async fn apply(&self, yaml: &str) -> Kubectl {
        self.kubectl(&["apply", "-f", "-"], Some(yaml)).await
    }

    /// [`Env::apply`], failing the test unless kubectl succeeds.
    pub async fn apply_ok(&self, yaml: &str) -> Kubectl {
        let out = self.apply(yaml).await;
        assert!(out.success(), "kubectl apply failed: {out}\nmanifest:\n{yaml}");
        out
    }

    /// `kubectl delete <what>` in this namespace, failing the test unless it succeeds.
    pub async fn delete(&self, what: &[&str]) {
        let mut args = vec!["delete", "--wait=false"];
        args.extend_from_slice(what);
        let out = self.kubectl(&args, None).await;
        assert!(out.success(), "kubectl delete failed: {out}");
    }

    fn resource<K: kube::Resource<DynamicType = ()>>(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &ApiResource::erase::<K>(&()))
    }

    async fn get_json(api: Api<DynamicObject>, name: &str) -> Result<Value, String> {
        let object = api.get(name).await.map_err(|err| format!("get {name}: {err}"))?;
        serde_json::to_value(object).map_err(|err| err.to_string())
    }

    /// The ModelRoute `name` as JSON.
    pub async fn route(&self, name: &str) -> Result<Value, String> {
        Self::get_json(self.resource::<ModelRoute>(), name).await
    }

    /// The ProviderSecret `name` as JSON.
    pub async fn provider_secret(&self, name: &str) -> Result<Value, String> {
        Self::get_json(self.resource::<ProviderSecret>(), name).await
    }

    /// Every ModelRoute and ProviderSecret of the namespace as JSON.
    pub async fn all_objects(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for api in [self.resource::<ModelRoute>(), self.resource::<ProviderSecret>()] {
            for object in api.list(&ListParams::default()).await.unwrap() {
                out.push(serde_json::to_value(object).unwrap());
            }
        }
        out
    }

    /// The core/v1 Events of this namespace (Events written through events.k8s.io show here too).
    pub async fn events(&self) -> Vec<Value> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        api.list(&ListParams::default()).await.unwrap().items.iter().map(|e| serde_json::to_value(e).unwrap()).collect()
    }

    /// The data of Secret `namespace/name`'s key `key`, if it exists.
    pub async fn secret_data(&self, namespace: &str, name: &str, key: &str) -> Option<Vec<u8>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = api.get_opt(name).await.ok()??;
        secret.data?.remove(key).map(|b| b.0)
    }

    /// Options for an operator confined to this namespace, with its Lease and snapshot Secret here.
    pub fn operator_opts(&self, identity: &str) -> OperatorOpts {
        OperatorOpts {
            identity: identity.to_owned(),
            listen: None,
            kubeconfig: cluster().kubeconfig_path.clone(),
            watch_namespace: Some(self.ns.clone()),
            lease_namespace: self.ns.clone(),
            snapshot_secret: format!("{}/{SNAPSHOT_SECRET}", self.ns),
            extra: Vec::new(),
        }
    }

    /// Starts `switchyard-operator` with `opts` and waits until it listens.
    pub async fn start_operator(&self, opts: &OperatorOpts) -> Operator {
        let listen = opts.listen.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
        let mut args: Vec<String> = vec![
            "--token-file".into(),
            self.token_file.display().to_string(),
            "--listen".into(),
            listen,
            "--admin-listen".into(),
            "127.0.0.1:0".into(),
            "--snapshot-secret".into(),
            opts.snapshot_secret.clone(),
            "--lease-namespace".into(),
            opts.lease_namespace.clone(),
            "--identity".into(),
            opts.identity.clone(),
            "--log-format".into(),
            "json".into(),
        ];
        if let Some(ns) = &opts.watch_namespace {
            args.extend(["--namespace".into(), ns.clone()]);
        }
        args.extend(opts.extra.iter().cloned());
        let log = self.log_file(&opts.identity);
        let envs = [("KUBECONFIG", opts.kubeconfig.display().to_string())];
        let process =
            Process::spawn(&opts.identity, &operator_binary(), &args, &envs, log, "switchyard-operator listening")
                .await;
        Operator { process, http: http_client() }
    }

    /// Options for a proxy named `name` on `127.0.0.<host>` in cluster mode against `operator`.
    pub fn proxy_opts(&self, name: &str, host: u8, operator: &Operator) -> ProxyOpts {
        ProxyOpts {
            name: name.to_owned(),
            ip: Ipv4Addr::new(127, 0, 0, host),
            operator: operator.url(),
            bootstrap: None,
            extra: Vec::new(),
        }
    }

    /// Starts `switchyard-proxy` in cluster mode and waits until it listens (not until it is ready).
    pub async fn start_proxy(&self, opts: &ProxyOpts) -> Proxy {
        let state_dir = self.dir.join(format!("{}-state", opts.name));
        std::fs::create_dir_all(&state_dir).unwrap();
        let mut args: Vec<String> = vec![
            "--operator".into(),
            opts.operator.clone(),
            "--token-file".into(),
            self.token_file.display().to_string(),
            "--proxy-name".into(),
            opts.name.clone(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--listen".into(),
            format!("{}:0", opts.ip),
            "--admin-listen".into(),
            format!("{}:0", opts.ip),
            "--log-format".into(),
            "json".into(),
        ];
        if let Some(bootstrap) = &opts.bootstrap {
            args.extend(["--bootstrap".into(), bootstrap.display().to_string()]);
        }
        args.extend(opts.extra.iter().cloned());
        let log = self.log_file(&opts.name);
        let process = Process::spawn(&opts.name, &proxy_binary(), &args, &[], log, "switchyard-proxy listening").await;
        Proxy { process, name: opts.name.clone(), http: http_client() }
    }

    /// Fails the test if `secret` (or its base64 form) appears in any captured
    /// log, any ModelRoute or ProviderSecret (status included), any Event of
    /// the namespace, or the admin pages of `proxies` and `operators`.
    pub async fn assert_secret_nowhere(&self, secret: &str, proxies: &[&Proxy], operators: &[&Operator]) {
        let encoded = serde_json::to_value(ByteString(secret.as_bytes().to_vec())).unwrap();
        let needles = [secret.to_owned(), encoded.as_str().unwrap().to_owned()];
        let mut found = Vec::new();
        let mut look = |place: String, text: &str| {
            for needle in &needles {
                if text.contains(needle.as_str()) {
                    found.push(place.clone());
                }
            }
        };
        for log in self.logs() {
            let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
            look(format!("log {}", log.display()), &text);
        }
        for object in self.all_objects().await {
            let name = format!("{} {}", object["kind"], object["metadata"]["name"]);
            look(name, &object.to_string());
        }
        for event in self.events().await {
            look(format!("event {}", event["metadata"]["name"]), &event.to_string());
        }
        for proxy in proxies {
            for path in ["/debug/table", "/", "/metrics", "/readyz"] {
                let text = proxy.admin_get(path).await.map(|(_, body)| body).unwrap_or_default();
                look(format!("proxy {} {path}", proxy.name), &text);
            }
        }
        for operator in operators {
            for path in ["/metrics", "/readyz", "/healthz"] {
                let text = operator.admin_get(path).await.map(|(_, body)| body).unwrap_or_default();
                look(format!("operator {} {path}", operator.process.name), &text);
            }
        }
        assert!(found.is_empty(), "the secret leaked into: {found:?}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        let mut out = format!(
            "\n==== e2e test `{}` failed after {:?}: namespace {}, files kept in {}\n",
            self.name,
            self.started.elapsed(),
            self.ns,
            self.dir.display()
        );
        for log in self.logs() {
            let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            let _ = writeln!(out, "---- {} (last {} of {} lines)", log.display(), tail.len(), lines.len());
            for line in tail {
                let _ = writeln!(out, "  | {line}");
            }
        }
        let _ = writeln!(out, "---- API server log: {}", cluster().log.display());
        eprintln!("{out}");
    }
}

/// Lines of each log printed when a test fails.
const LOG_TAIL: usize = 60;

/// Name of the operator's snapshot Secret in the tests.
pub const SNAPSHOT_SECRET: &str = "switchyard-snapshot";

fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy().build().unwrap()
}

// === processes ===

/// A child process whose stdout and stderr go to a log file. Killed when dropped.
pub struct Process {
    pub name: String,
    pub log: PathBuf,
    /// The addresses its `listening` line named.
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    child: Option<Child>,
}

impl Process {
    async fn spawn(
        name: &str,
        bin: &Path,
        args: &[String],
        envs: &[(&str, String)],
        log: PathBuf,
        listening: &str,
    ) -> Process {
        let file = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(bin)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", bin.display()));
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let line = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["message"] == listening || l["fields"]["message"] == listening);
            if let Some(line) = line {
                let fields = if line.get("fields").is_some() { &line["fields"] } else { &line };
                let addr = |key: &str| -> SocketAddr {
                    fields[key]
                        .as_str()
                        .and_then(|a| a.parse().ok())
                        .unwrap_or_else(|| panic!("{name}: `{listening}` line without a `{key}` address: {line}"))
                };
                return Process {
                    name: name.to_owned(),
                    listen: addr("listen"),
                    admin: addr("admin_listen"),
                    log,
                    child: Some(child),
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{name} exited ({status}) before `{listening}`; {} {args:?}\n{text}", bin.display());
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("{name} did not log `{listening}` within 60 s; log:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGKILL, then reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait up to `limit` for it to exit (SIGKILL after that).
    pub async fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn admin_get(http: &reqwest::Client, addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let response = http.get(format!("http://{addr}{path}")).send().await.map_err(|err| format!("GET {path}: {err}"))?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.map_err(|err| err.to_string())?))
}

/// How to start an operator; see [`Env::operator_opts`].
#[derive(Clone, Debug)]
pub struct OperatorOpts {
    /// `--identity`, also the name of its log file.
    pub identity: String,
    /// `--listen` (default `127.0.0.1:0`); a restart passes the old address so proxies find it again.
    pub listen: Option<SocketAddr>,
    /// `KUBECONFIG` for the operator.
    pub kubeconfig: PathBuf,
    /// `--namespace`; `None` watches every namespace.
    pub watch_namespace: Option<String>,
    pub lease_namespace: String,
    /// `--snapshot-secret NS/NAME`.
    pub snapshot_secret: String,
    pub extra: Vec<String>,
}

pub struct Operator {
    pub process: Process,
    http: reqwest::Client,
}

impl Operator {
    /// The distribution API's URL, for `switchyard-proxy --operator`.
    pub fn url(&self) -> String {
        format!("http://{}", self.process.listen)
    }

    pub async fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
        admin_get(&self.http, self.process.admin, path).await
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        eventually("operator /readyz 200", CONVERGE, || async {
            match self.admin_get("/readyz").await? {
                (200, _) => Ok(()),
                (code, body) => Err(format!("{code} {body}")),
            }
        })
        .await;
    }
}

/// How to start a proxy; see [`Env::proxy_opts`].
#[derive(Clone, Debug)]
pub struct ProxyOpts {
    /// `--proxy-name`, also the name of its log file.
    pub name: String,
    /// The loopback address it binds both ports on.
    pub ip: Ipv4Addr,
    /// `--operator`.
    pub operator: String,
    /// `--bootstrap`.
    pub bootstrap: Option<PathBuf>,
    pub extra: Vec<String>,
}

pub struct Proxy {
    pub process: Process,
    pub name: String,
    http: reqwest::Client,
}

impl Proxy {
    /// `POST /v1/chat/completions` for `alias`: the status and the body (JSON, or the text as a JSON string).
    pub async fn chat(&self, alias: &str) -> Result<(u16, Value), String> {
        let body = json!({"model": alias, "messages": [{"role": "user", "content": "say hello"}]});
        let url = format!("http://{}/v1/chat/completions", self.process.listen);
        let response = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|err| format!("{}: chat {alias}: {err}", self.name))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|err| err.to_string())?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// The upstream model that answered a chat for `alias`, or what went wrong.
    pub async fn served_model(&self, alias: &str) -> Result<String, String> {
        match self.chat(alias).await? {
            (200, body) => upstream_model(&body).ok_or_else(|| format!("{}: unexpected answer {body}", self.name)),
            (code, body) => Err(format!("{}: {alias} answered {code} {body}", self.name)),
        }
    }

    /// Ok when a chat for `alias` is answered by upstream model `model`.
    pub async fn serves(&self, alias: &str, model: &str) -> Result<(), String> {
        let served = self.served_model(alias).await?;
        if served == model { Ok(()) } else { Err(format!("{}: {alias} served by {served}, want {model}", self.name)) }
    }

    pub async fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
        admin_get(&self.http, self.process.admin, path).await
    }

    /// The hash of the table in force (from `/readyz`), if any.
    pub async fn table_hash(&self) -> Option<String> {
        match self.admin_get("/readyz").await {
            Ok((200, body)) => body.split_whitespace().find(|w| w.starts_with("sha256:")).map(str::to_owned),
            _ => None,
        }
    }
}

/// The upstream model named by the fake OpenAI's answer (`hello from <model> …`).
pub fn upstream_model(body: &Value) -> Option<String> {
    let content = body["choices"][0]["message"]["content"].as_str()?;
    let rest = content.strip_prefix("hello from ")?;
    let end = rest.find([' ', ':']).unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

// === a whole test world ===

/// One test's world: namespace, fake upstream, operator, proxies.
pub struct World {
    pub env: Env,
    pub fake: FakeOpenAi,
    pub key: String,
    pub operator: Operator,
    pub proxies: Vec<Proxy>,
}

/// A fresh API key for a test.
pub fn new_key() -> String {
    format!("sk-e2e-{:032x}", rand::random::<u128>())
}

impl World {
    /// An operator and `proxies` proxies (`proxy-a` on 127.0.0.2, `proxy-b` on 127.0.0.3, …), and
    /// the Secret `llm-keys` plus the ProviderSecret `openai` pointing at the fake.
    pub async fn start(test: &str, proxies: u8) -> World {
        let env = Env::new(test).await;
        let opts = env.operator_opts("operator-1");
        World::start_with(env, &opts, proxies).await
    }

    /// [`World::start`] with an operator started with `opts`.
    pub async fn start_with(env: Env, opts: &OperatorOpts, proxies: u8) -> World {
        let fake = FakeOpenAi::start_named("upstream").await;
        let key = new_key();
        fake.require_api_key(&key);
        let operator = env.start_operator(opts).await;
        let mut started = Vec::new();
        for i in 0..proxies {
            let name = format!("proxy-{}", char::from(b'a' + i));
            started.push(env.start_proxy(&env.proxy_opts(&name, 2 + i, &operator)).await);
        }
        env.apply_ok(&format!(
            "{}{}",
            secret("llm-keys", "apiKey", &key),
            openai_provider("openai", &fake.base_url(), "llm-keys")
        ))
        .await;
        World { env, fake, key, operator, proxies: started }
    }

    /// Waits until every proxy answers `alias` from upstream `model`.
    pub async fn all_serve(&self, alias: &str, model: &str) {
        for proxy in &self.proxies {
            eventually(&format!("{} serves {alias} from {model}", proxy.name), CONVERGE, || proxy.serves(alias, model))
                .await;
        }
    }

    /// Waits until ModelRoute `name` is Programmed on every proxy at its current generation,
    /// and checks that generation is `generation`.
    pub async fn programmed(&self, name: &str, generation: u64) -> Value {
        let n = self.proxies.len() as u64;
        let object = eventually(&format!("ModelRoute {name} Programmed {n}/{n}"), CONVERGE, || async {
            let object = self.env.route(name).await?;
            // Status follows the spec asynchronously: a check made just after
            // an edit may still see the previous generation fully programmed.
            if object["status"]["observedGeneration"] != generation {
                return Err(format!("want observedGeneration {generation}; status: {}", object["status"]));
            }
            fully_programmed(&object, n)?;
            Ok(object)
        })
        .await;
        assert_eq!(object["metadata"]["generation"], generation, "{object}");
        object
    }
}

// === polling ===

/// Calls `check` until it returns `Ok` or `timeout` passes; then fails the test
/// with `what` and the last error.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(err) => err,
        };
        assert!(started.elapsed() < timeout, "{what}: not within {timeout:?}; last: {last}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Checks that `check` stays `Ok` for `period`, failing the test at the first error.
pub async fn always<F, Fut>(what: &str, period: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    while started.elapsed() < period {
        if let Err(err) = check().await {
            panic!("{what}: failed after {:?}: {err}", started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === status ===

/// The condition of `kind` in an object's status.
pub fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

/// Ok when condition `kind` has `status` and `reason`, is of the object's
/// current generation, and its message contains `message`.
pub fn has_condition(object: &Value, kind: &str, status: &str, reason: &str, message: &str) -> Result<(), String> {
    let generation = &object["metadata"]["generation"];
    let found = condition(object, kind);
    let ok = found.is_some_and(|c| {
        c["status"] == status
            && c["reason"] == reason
            && &c["observedGeneration"] == generation
            && c["message"].as_str().unwrap_or_default().contains(message)
    });
    if ok && &object["status"]["observedGeneration"] == generation {
        Ok(())
    } else {
        Err(format!(
            "want {kind}={status} reason {reason} message containing {message:?} at generation {generation}; status: {}",
            object["status"]
        ))
    }
}

/// Ok when the object is Accepted, ResolvedRefs and Programmed on `n` of `n`
/// proxies at its current generation, with `status.proxies` saying the same.
pub fn fully_programmed(object: &Value, n: u64) -> Result<(), String> {
    has_condition(object, "Accepted", "True", "Accepted", "")?;
    has_condition(object, "ResolvedRefs", "True", "ResolvedRefs", "")?;
    has_condition(object, "Programmed", "True", "Programmed", &format!("{n}/{n} proxies"))?;
    let proxies = &object["status"]["proxies"];
    if proxies["programmed"] == n
        && proxies["total"] == n
        && proxies["table"].as_str().is_some_and(|t| t.starts_with("sha256:"))
    {
        Ok(())
    } else {
        Err(format!(
            "want status.proxies {{programmed: {n}, total: {n}, table: sha256:…}}; status: {}",
            object["status"]
        ))
    }
}

// === manifests ===

/// A core/v1 Secret with one key.
pub fn secret(name: &str, key: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ntype: Opaque\nstringData:\n  {key}: {value}\n---\n"
    )
}

/// An `openai` ProviderSecret at `base_url` whose key is Secret `secret`'s key `apiKey`.
pub fn openai_provider(name: &str, base_url: &str, secret: &str) -> String {
    format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ProviderSecret\nmetadata:\n  name: {name}\nspec:\n  provider: openai\n  baseUrl: {base_url}\n  apiKey:\n    secretKeyRef: {{name: {secret}, key: apiKey}}\n---\n"
    )
}

/// A route target: name, ProviderSecret, upstream model, weight.
pub type Target<'a> = (&'a str, &'a str, &'a str, u32);

/// A ModelRoute `name` for alias `alias` with `targets`.
pub fn route(name: &str, alias: &str, targets: &[Target<'_>]) -> String {
    let mut out = format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ModelRoute\nmetadata:\n  name: {name}\nspec:\n  model: {alias}\n  targets:\n"
    );
    for (target, provider, model, weight) in targets {
        let _ = writeln!(out, "  - {{name: {target}, provider: {provider}, model: {model}, weight: {weight}}}");
    }
    out.push_str("---\n");
    out
}

/// Counts which upstream model answered `requests` chats for `alias` on `proxy`.
pub async fn traffic(proxy: &Proxy, alias: &str, requests: usize) -> Result<BTreeMap<String, usize>, String> {
    let mut seen = BTreeMap::new();
    for _ in 0..requests {
        *seen.entry(proxy.served_model(alias).await?).or_insert(0) += 1;
    }
    Ok(seen)
}
