//! The proxy fleet as the operator sees it: the snapshots it published and
//! what each live proxy last reported.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use routing::distribution::{PROXY_TTL_MS, Rejection, Report};
use routing::table::ObjectRef;

/// Published snapshots remembered for matching proxies' reports; a proxy that
/// reports an older hash counts as not programmed.
const HISTORY: usize = 64;

/// One published snapshot.
#[derive(Debug)]
pub struct Published {
    pub hash: String,
    /// The snapshot's JSON, as served on `/v1/table`.
    pub body: Bytes,
    /// What this snapshot serves: every object in its table, with the
    /// `metadata.generation` compiled.
    pub served: Arc<Served>,
}

/// Objects in one snapshot's table and their generations.
pub type Served = HashMap<ObjectRef, Option<i64>>;

#[derive(Debug, Clone)]
struct ProxyState {
    last_seen: Instant,
    applied: Option<String>,
    rejected: Option<Rejection>,
}

/// A live proxy, as status computation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveProxy {
    pub name: String,
    /// What the applied snapshot serves; `None` when nothing or an unknown hash is applied.
    pub applied: Option<Arc<Served>>,
    pub rejected: Option<Rejection>,
}

#[derive(Default)]
pub struct Fleet {
    proxies: Mutex<HashMap<String, ProxyState>>,
    history: Mutex<VecDeque<(String, Arc<Served>)>>,
    /// Woken when what status depends on changed (a report, a proxy gone).
    pub changed: tokio::sync::Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Fleet {
    /// Remembers a newly published snapshot.
    pub fn published(&self, hash: &str, served: Arc<Served>) {
        let mut history = lock(&self.history);
        history.push_back((hash.to_owned(), served));
        while history.len() > HISTORY {
            history.pop_front();
        }
    }

    /// A proxy polled: it is alive even before its first report.
    pub fn seen(&self, name: &str) {
        let mut proxies = lock(&self.proxies);
        let fresh = !proxies.contains_key(name);
        proxies
            .entry(name.to_owned())
            .or_insert_with(|| ProxyState { last_seen: Instant::now(), applied: None, rejected: None })
            .last_seen = Instant::now();
        drop(proxies);
        if fresh {
            self.changed.notify_one();
        }
    }

    /// Takes a report; wakes the status loop when it changes what a proxy runs.
    pub fn report(&self, report: Report) {
        let mut proxies = lock(&self.proxies);
        let state = proxies.entry(report.proxy).or_insert_with(|| ProxyState {
            last_seen: Instant::now(),
            applied: None,
            rejected: None,
        });
        let changed = state.applied != report.applied || state.rejected != report.rejected;
        state.last_seen = Instant::now();
        state.applied = report.applied;
        state.rejected = report.rejected;
        drop(proxies);
        if changed {
            self.changed.notify_one();
        }
    }

    /// Forgets proxies silent for longer than the TTL; true if any was dropped.
    pub fn expire(&self) -> bool {
        let ttl = Duration::from_millis(PROXY_TTL_MS);
        let mut proxies = lock(&self.proxies);
        let before = proxies.len();
        proxies.retain(|name, state| {
            let alive = state.last_seen.elapsed() <= ttl;
            if !alive {
                tracing::info!(proxy = %name, "proxy stopped reporting; no longer counted");
            }
            alive
        });
        before != proxies.len()
    }

    /// The live proxies, sorted by name.
    pub fn live(&self) -> Vec<LiveProxy> {
        let history = lock(&self.history);
        let mut live: Vec<LiveProxy> = lock(&self.proxies)
            .iter()
            .map(|(name, state)| LiveProxy {
                name: name.clone(),
                applied: state
                    .applied
                    .as_ref()
                    .and_then(|hash| history.iter().rev().find(|(h, _)| h == hash).map(|(_, s)| s.clone())),
                rejected: state.rejected.clone(),
            })
            .collect();
        live.sort_by(|a, b| a.name.cmp(&b.name));
        live
    }

    /// How many proxies are counted as live.
    pub fn connected(&self) -> usize {
        lock(&self.proxies).len()
    }
}
