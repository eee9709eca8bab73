//! What the operator reads from the API server: ModelRoutes and
//! ProviderSecrets in full, Secrets by metadata only.
//!
//! Secrets are watched as metadata (no values held for Secrets nobody
//! references); a referenced Secret is fetched when its `resourceVersion`
//! changes and kept, reduced and redacted, until it changes again. Every
//! relevant change wakes the compile loop through one [`Notify`].

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use routing::api::{ModelRoute, ProviderSecret};
use routing::compile::{Input, Inputs, SecretInput};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// Caches of the watched kinds.
#[derive(Clone)]
pub struct Stores {
    pub routes: Store<ModelRoute>,
    pub providers: Store<ProviderSecret>,
    secrets: Store<PartialObjectMeta<Secret>>,
    client: Client,
}

/// Starts the three watches. Each runs until the process ends; errors are
/// retried with kube's default backoff and logged. `ignore` is a Secret
/// (namespace, name) whose changes do not wake the loop: the operator's own
/// snapshot Secret.
pub fn watch(client: &Client, namespace: Option<&str>, ignore: (String, String), wake: Arc<Notify>) -> Stores {
    let routes = spawn_watch(api(client, namespace), "ModelRoute", wake.clone(), generation::<ModelRoute>);
    let providers = spawn_watch(api(client, namespace), "ProviderSecret", wake.clone(), generation::<ProviderSecret>);
    let secrets = spawn_watch(
        api::<PartialObjectMeta<Secret>>(client, namespace),
        "Secret",
        wake,
        move |meta: &PartialObjectMeta<Secret>| {
            let own = meta.namespace().as_deref() == Some(ignore.0.as_str()) && meta.name_any() == ignore.1;
            if own { None } else { meta.resource_version() }
        },
    );
    Stores { routes, providers, secrets, client: client.clone() }
}

/// What compile reads of a custom resource changes only with its generation
/// (the spec); the resourceVersion stands in where there is none.
fn generation<K: Resource>(object: &K) -> Option<String> {
    object.meta().generation.map(|g| g.to_string()).or_else(|| object.meta().resource_version.clone())
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Watches `api` into a store. A change wakes the compile loop only when
/// `compiled` (the part of the object compile reads: the generation, or a
/// Secret's resourceVersion) changed; objects for which it is `None` never
/// wake it. Status writes, which bump neither, so cost no compile.
fn spawn_watch<K>(
    api: Api<K>,
    kind: &'static str,
    wake: Arc<Notify>,
    compiled: impl Fn(&K) -> Option<String> + Send + 'static,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = watcher(api, watcher::Config::default().any_semantic());
    tokio::spawn(async move {
        let mut seen: HashMap<(Option<String>, String), String> = HashMap::new();
        let mut events = std::pin::pin!(reflector::reflector(writer, stream.default_backoff()));
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                    let Some(version) = compiled(&object) else { continue };
                    let key = (object.meta().namespace.clone(), object.meta().name.clone().unwrap_or_default());
                    if seen.insert(key, version.clone()).as_ref() != Some(&version) {
                        wake.notify_one();
                    }
                }
                Ok(watcher::Event::Delete(object)) => {
                    if compiled(&object).is_some() {
                        seen.remove(&(object.meta().namespace.clone(), object.meta().name.clone().unwrap_or_default()));
                        wake.notify_one();
                    }
                }
                // A (re)list ends with InitDone: the store was replaced, anything may have changed.
                Ok(watcher::Event::InitDone) => wake.notify_one(),
                Ok(watcher::Event::Init) => seen.clear(),
                Err(error) => tracing::warn!(kind, %error, "watch failed; retrying"),
            }
        }
    });
    reader
}

impl Stores {
    /// Waits until every watch has listed once.
    pub async fn ready(&self) {
        let _ = self.routes.wait_until_ready().await;
        let _ = self.providers.wait_until_ready().await;
        let _ = self.secrets.wait_until_ready().await;
    }
}

/// Referenced Secrets, reduced and redacted, by (namespace, name), with the
/// `resourceVersion` they were read at.
#[derive(Default)]
pub struct SecretCache {
    entries: HashMap<(String, String), (String, SecretInput)>,
}

impl SecretCache {
    /// Everything compile needs, from the stores. Fetches the referenced
    /// Secrets whose `resourceVersion` changed since the last call.
    pub async fn inputs(&mut self, stores: &Stores) -> Result<Inputs, kube::Error> {
        let mut inputs = Inputs::default();
        let mut wanted: Vec<(String, String)> = Vec::new();
        for provider in stores.providers.state() {
            let namespace = provider.namespace().unwrap_or_else(|| "default".to_owned());
            if let Some(key) = &provider.spec.api_key {
                wanted.push((namespace, key.secret_key_ref.name.clone()));
            }
            inputs.providers.push(Input { order: 0, object: ProviderSecret::clone(&provider) });
        }
        inputs.routes =
            stores.routes.state().iter().map(|r| Input { order: 0, object: ModelRoute::clone(r) }).collect();
        wanted.sort();
        wanted.dedup();
        let mut kept = HashMap::with_capacity(wanted.len());
        for (namespace, name) in wanted {
            let Some(meta) = stores.secrets.get(&ObjectRef::new(&name).within(&namespace)) else { continue };
            let version = meta.resource_version().unwrap_or_default();
            let key = (namespace, name);
            let entry = match self.entries.remove(&key) {
                Some(entry) if entry.0 == version => entry,
                _ => {
                    let api: Api<Secret> = Api::namespaced(stores.client.clone(), &key.0);
                    match api.get_opt(&key.1).await? {
                        Some(secret) => (version, SecretInput::from_secret(&secret)),
                        None => continue,
                    }
                }
            };
            inputs.secrets.push(Input { order: 0, object: entry.1.clone() });
            kept.insert(key, entry);
        }
        self.entries = kept;
        Ok(inputs)
    }
}
