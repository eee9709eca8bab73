//! Wiring: leader election, the watches, the compile loop that publishes
//! snapshots, the status loop, and the two HTTP servers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use routing::Diagnostic;
use routing::compile::{Inputs, kind};
use routing::distribution::{BOOTSTRAP_KEY, REPORT_INTERVAL_MS};
use routing::table::ObjectRef;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::args::Args;
use crate::fleet::{Fleet, Published, Served};
use crate::inputs::{SecretCache, Stores};
use crate::metrics::{Metrics, Outcome};
use crate::server::{self, Admin, Distribution};
use crate::status::{self, Facts, Rollout};

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot reach the Kubernetes API (set KUBECONFIG or run in a pod): {0}")]
    Kube(#[from] kube::Error),
    #[error("lost the Lease: another replica leads now")]
    LostLease,
}

/// How often status is re-checked without a trigger (proxies expire by time).
const STATUS_TICK: Duration = Duration::from_secs(2);

/// What the last compile said, for the status loop.
struct View {
    hash: String,
    diagnostics: Vec<Diagnostic>,
    served: Arc<Served>,
    /// Per served object: the first published hash that carried its current generation.
    tables: HashMap<ObjectRef, String>,
}

pub async fn run(args: Args) -> Result<(), AppError> {
    let token = std::fs::read_to_string(&args.token_file)
        .map_err(|e| AppError::Config(format!("cannot read `--token-file {}`: {e}", args.token_file.display())))?
        .trim()
        .as_bytes()
        .to_vec();
    if token.is_empty() {
        return Err(AppError::Config(format!(
            "`--token-file {}` is empty: put the proxies' bearer token in it",
            args.token_file.display()
        )));
    }
    let snapshot_secret = args.snapshot_secret().map_err(AppError::Config)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(server::tls_acceptor(cert, key).map_err(AppError::Config)?),
        _ => None,
    };
    let identity = args.identity();
    let client = Client::try_default().await?;

    let metrics = Arc::new(Metrics::new());
    let fleet = Arc::new(Fleet::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (publish, current) = watch::channel::<Option<Arc<Published>>>(None);
    let shutdown = CancellationToken::new();

    let listener = server::bind(args.listen, "--listen").await?;
    let admin_listener = server::bind(args.admin_listen, "--admin-listen").await?;
    tracing::info!(
        listen = %listener.local_addr()?, admin_listen = %admin_listener.local_addr()?, tls = tls.is_some(), %identity,
        "switchyard-operator listening"
    );
    let distribution = Arc::new(Distribution {
        token,
        current,
        fleet: fleet.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    });
    let admin = Arc::new(Admin { ready: ready.clone(), metrics: metrics.clone() });
    let servers = [
        tokio::spawn(server::serve(listener, tls, distribution, shutdown.clone(), args.drain_timeout)),
        tokio::spawn(server::serve(admin_listener, None, admin, shutdown.clone(), args.drain_timeout)),
    ];
    tokio::spawn(signals(shutdown.clone()));

    let elector = crate::leader::Elector::new(client.clone(), &args.lease_namespace(), &args.lease_name, &identity);
    tokio::select! {
        () = elector.acquire() => {}
        () = shutdown.cancelled() => return stop(servers).await,
    }
    metrics.leader.set(1);
    tracing::info!(lease = %args.lease_name, "leading: watching and compiling");

    let wake = Arc::new(Notify::new());
    let stores = crate::inputs::watch(&client, args.namespace.as_deref(), snapshot_secret.clone(), wake.clone());
    tokio::select! {
        () = stores.ready() => {}
        () = shutdown.cancelled() => return stop(servers).await,
    }
    let (view_tx, view_rx) = watch::channel::<Option<Arc<View>>>(None);
    let compiler = Compiler {
        client: client.clone(),
        stores: stores.clone(),
        publish,
        view: view_tx,
        fleet: fleet.clone(),
        metrics: metrics.clone(),
        ready: ready.clone(),
        snapshot_secret,
        debounce: args.debounce,
        tables: HashMap::new(),
    };
    wake.notify_one();
    let compile_task = tokio::spawn(compiler.run(wake, shutdown.clone()));
    let status_task = tokio::spawn(status_loop(client, identity, stores, view_rx, fleet, metrics, shutdown.clone()));

    let outcome = tokio::select! {
        () = elector.hold() => Err(AppError::LostLease),
        () = shutdown.cancelled() => Ok(()),
    };
    ready.store(false, Ordering::Relaxed);
    shutdown.cancel();
    let _ = compile_task.await;
    let _ = status_task.await;
    if outcome.is_ok() {
        elector.release().await;
    }
    stop(servers).await?;
    outcome
}

async fn stop(servers: [tokio::task::JoinHandle<()>; 2]) -> Result<(), AppError> {
    for server in servers {
        let _ = server.await;
    }
    tracing::info!("switchyard-operator stopped");
    Ok(())
}

async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}

struct Compiler {
    client: Client,
    stores: Stores,
    publish: watch::Sender<Option<Arc<Published>>>,
    view: watch::Sender<Option<Arc<View>>>,
    fleet: Arc<Fleet>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    snapshot_secret: (String, String),
    debounce: Duration,
    tables: HashMap<ObjectRef, String>,
}

impl Compiler {
    async fn run(mut self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let mut secrets = SecretCache::default();
        loop {
            tokio::select! {
                () = wake.notified() => {}
                () = shutdown.cancelled() => return,
            }
            // Gather the rest of a burst (an `kubectl apply -f dir/`) into one compile.
            tokio::time::sleep(self.debounce).await;
            match secrets.inputs(&self.stores).await {
                Ok(inputs) => self.compile(&inputs).await,
                Err(error) => {
                    self.metrics.reconciles.get_or_create(&Outcome { outcome: "error" }).inc();
                    tracing::warn!(%error, "cannot read a referenced Secret; retrying");
                    let wake = wake.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        wake.notify_one();
                    });
                }
            }
        }
    }

    async fn compile(&mut self, inputs: &Inputs) {
        let started = Instant::now();
        let compiled = routing::compile(inputs);
        self.metrics.compile_seconds.observe(started.elapsed().as_secs_f64());
        let hash = compiled.snapshot.hash.clone();
        let served = Arc::new(served(&compiled.snapshot.table, inputs));
        let unchanged = self.publish.borrow().as_ref().is_some_and(|p| p.hash == hash);
        if unchanged {
            self.metrics.reconciles.get_or_create(&Outcome { outcome: "unchanged" }).inc();
        } else {
            let body = match serde_json::to_vec(&compiled.snapshot) {
                Ok(body) => Bytes::from(body),
                Err(error) => {
                    tracing::error!(%error, "cannot serialize the snapshot");
                    return;
                }
            };
            self.tables.retain(|object, _| served.contains_key(object));
            for (object, generation) in served.iter() {
                let previous = self.view.borrow().as_ref().and_then(|v| v.served.get(object).copied());
                if previous != Some(*generation) || !self.tables.contains_key(object) {
                    self.tables.insert(object.clone(), hash.clone());
                }
            }
            self.fleet.published(&hash, served.clone());
            let errors = compiled.diagnostics.iter().filter(|d| d.is_error()).count();
            tracing::info!(
                %hash, routes = compiled.snapshot.table.routes.len(), providers = compiled.snapshot.table.providers.len(),
                errors, compile_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "snapshot published"
            );
            self.publish.send_replace(Some(Arc::new(Published {
                hash: hash.clone(),
                body: body.clone(),
                served: served.clone(),
            })));
            self.metrics.reconciles.get_or_create(&Outcome { outcome: "published" }).inc();
            self.ready.store(true, Ordering::Relaxed);
            self.store_snapshot(body).await;
        }
        for diagnostic in compiled.diagnostics.iter().filter(|d| d.is_error()) {
            tracing::debug!("{diagnostic}");
        }
        self.view.send_replace(Some(Arc::new(View {
            hash,
            diagnostics: compiled.diagnostics,
            served,
            tables: self.tables.clone(),
        })));
    }

    /// Keeps the snapshot in a Secret that proxies mount to boot while the operator is away.
    async fn store_snapshot(&self, body: Bytes) {
        let (namespace, name) = &self.snapshot_secret;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), status::MANAGER.to_owned())])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(BTreeMap::from([(BOOTSTRAP_KEY.to_owned(), ByteString(body.to_vec()))])),
            ..Secret::default()
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        if let Err(error) = api.patch(name, &PatchParams::apply(status::MANAGER).force(), &Patch::Apply(&secret)).await
        {
            tracing::warn!(secret = %format!("{namespace}/{name}"), %error, "cannot store the snapshot for booting proxies");
        }
    }
}

/// Every object the table serves, with the generation that was compiled.
fn served(table: &routing::RoutingTable, inputs: &Inputs) -> Served {
    let mut served: Served = table.routes.values().map(|route| (route.source.clone(), route.generation)).collect();
    for input in &inputs.providers {
        let object = status::key_of(kind::PROVIDER_SECRET, &input.object);
        let key = format!("{}/{}", object.namespace, object.name);
        if table.providers.contains_key(&key) {
            served.insert(object, input.object.metadata.generation);
        }
    }
    served
}

async fn status_loop(
    client: Client,
    identity: String,
    stores: Stores,
    mut view: watch::Receiver<Option<Arc<View>>>,
    fleet: Arc<Fleet>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut writer = status::Writer::new(client, &identity);
    // A new leader knows no proxy yet: give every live proxy one report
    // interval to check in, so that a restart does not flip `Programmed` to
    // False and back.
    tokio::select! {
        () = shutdown.cancelled() => return,
        () = tokio::time::sleep(Duration::from_millis(REPORT_INTERVAL_MS + 500)) => {}
    }
    let mut ticker = tokio::time::interval(STATUS_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = view.changed() => if changed.is_err() { return },
            () = fleet.changed.notified() => {}
            _ = ticker.tick() => {}
        }
        fleet.expire();
        metrics.connected_proxies.set(i64::try_from(fleet.connected()).unwrap_or(i64::MAX));
        let Some(current) = view.borrow_and_update().clone() else { continue };
        let live = fleet.live();
        let now = Time(Timestamp::now());
        let routes = stores.routes.state();
        let providers = stores.providers.state();
        for route in &routes {
            let key = status::key_of(kind::MODEL_ROUTE, route.as_ref());
            let facts = facts(&current, &key, route.metadata.generation, &live);
            let previous =
                writer.known(&key).or_else(|| route.status.as_ref().and_then(|s| serde_json::to_value(s).ok()));
            let previous_status = previous.as_ref().and_then(|v| serde_json::from_value(v.clone()).ok());
            let desired =
                status::route_status(&facts, previous_status.as_ref(), current.tables.get(&key).cloned(), &now);
            record(&metrics, writer.write(route.as_ref(), &key, previous, &desired).await, &key);
        }
        for provider in &providers {
            let key = status::key_of(kind::PROVIDER_SECRET, provider.as_ref());
            let facts = facts(&current, &key, provider.metadata.generation, &live);
            let previous =
                writer.known(&key).or_else(|| provider.status.as_ref().and_then(|s| serde_json::to_value(s).ok()));
            let previous_status = previous.as_ref().and_then(|v| serde_json::from_value(v.clone()).ok());
            let desired = status::provider_status(&facts, previous_status.as_ref(), &now);
            record(&metrics, writer.write(provider.as_ref(), &key, previous, &desired).await, &key);
        }
        let exists: HashSet<ObjectRef> = routes
            .iter()
            .map(|r| status::key_of(kind::MODEL_ROUTE, r.as_ref()))
            .chain(providers.iter().map(|p| status::key_of(kind::PROVIDER_SECRET, p.as_ref())))
            .collect();
        writer.retain(|key| exists.contains(key));
    }
}

fn facts<'a>(view: &'a View, key: &ObjectRef, generation: Option<i64>, live: &[crate::fleet::LiveProxy]) -> Facts<'a> {
    Facts {
        generation,
        diagnostics: view.diagnostics.iter().filter(|d| d.object == *key).collect(),
        in_table: view.served.contains_key(key),
        rollout: Rollout::of(key, generation, &view.hash, live),
        current_hash: &view.hash,
    }
}

fn record(metrics: &Metrics, result: Result<bool, kube::Error>, key: &ObjectRef) {
    match result {
        Ok(true) => {
            metrics.status_writes.get_or_create(&Outcome { outcome: "written" }).inc();
        }
        Ok(false) => {}
        Err(error) => {
            metrics.status_writes.get_or_create(&Outcome { outcome: "error" }).inc();
            tracing::warn!(object = %key, %error, "cannot write status");
        }
    }
}
