//! Where tables come from. Standalone mode: a directory of manifests,
//! reloaded when a file changes or on SIGHUP.
//!
//! Reload rule (like `nginx -s reload`): a reload is applied only when the
//! whole directory loads and compiles without errors; otherwise the table in
//! force stays and every diagnostic is logged. At boot there is no table to
//! keep, so the valid part is served and the errors are logged.
//!
//! Changes are found by polling a hash of the files' names and contents.
//! Polling is simple, portable, and sees the atomic symlink swap Kubernetes
//! uses for mounted ConfigMaps, which inotify-based watchers often miss.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, OutcomeLabels};
use crate::state::RoutingHandle;

/// Result of one load of the directory.
#[derive(Debug, PartialEq, Eq)]
pub enum LoadOutcome {
    Applied,
    Unchanged,
    Rejected,
}

/// Loads the directory into `routing`. `boot` accepts a table with errors.
pub fn load(dir: &Path, routing: &RoutingHandle, metrics: &Metrics, boot: bool) -> LoadOutcome {
    let loaded = routing::manifest::load_dir(dir);
    let compiled = routing::compile(&loaded.inputs);
    let mut lines: Vec<String> = loaded.errors.iter().map(|e| format!("error: {e}")).collect();
    lines.extend(loaded.warnings.iter().map(|w| format!("warning: {w}")));
    lines.extend(compiled.diagnostics.iter().map(ToString::to_string));
    let has_errors = !loaded.errors.is_empty() || compiled.diagnostics.iter().any(routing::Diagnostic::is_error);
    for line in &lines {
        tracing::warn!(manifests = %dir.display(), "{line}");
    }
    let current = routing.snapshot();
    let outcome = if has_errors && !boot {
        tracing::error!(
            manifests = %dir.display(),
            errors = lines.iter().filter(|l| l.starts_with("error")).count(),
            kept = current.as_ref().map_or("", |c| c.snapshot.hash.as_str()),
            "manifests have errors: keeping the table in force; fix the errors above and save again"
        );
        LoadOutcome::Rejected
    } else if current.as_ref().is_some_and(|c| c.snapshot.hash == compiled.snapshot.hash) {
        LoadOutcome::Unchanged
    } else if let Err(problem) = compiled.snapshot.check() {
        tracing::error!(manifests = %dir.display(), %problem, "compiled table is inconsistent: not installed");
        LoadOutcome::Rejected
    } else {
        let hash = compiled.snapshot.hash.clone();
        let routes = compiled.snapshot.table.routes.len();
        routing.install(compiled.snapshot);
        metrics.set_table(&hash);
        tracing::info!(manifests = %dir.display(), %hash, routes, "routing table installed");
        LoadOutcome::Applied
    };
    routing.set_diagnostics(lines);
    let label = match outcome {
        LoadOutcome::Applied => "applied",
        LoadOutcome::Unchanged => "unchanged",
        LoadOutcome::Rejected => "rejected",
    };
    metrics.reloads.get_or_create(&OutcomeLabels { outcome: label.to_owned() }).inc();
    outcome
}

/// A hash of every file's name and content: changes when any file is
/// edited, added, removed or re-pointed. Content, not modification times,
/// because file timestamps tick in coarse steps (a jiffy) and two quick
/// same-size writes would otherwise look alike. Manifest directories are
/// small, so reading them a few times a second costs next to nothing.
pub fn fingerprint(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    let mut bytes = Vec::new();
    for path in files {
        if let Ok(content) = std::fs::read(&path) {
            bytes.extend_from_slice(path.as_os_str().as_encoded_bytes());
            bytes.push(0);
            bytes.extend_from_slice(&(content.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&content);
        }
    }
    crate::plan::fnv1a(&bytes)
}

/// Watches `dir` until `shutdown`; reloads on change and on SIGHUP.
/// `seen` is the [`fingerprint`] taken before the last load, so that a change
/// made between that load and the first poll is not missed.
pub async fn watch(
    dir: PathBuf,
    mut seen: u64,
    routing: RoutingHandle,
    metrics: Arc<Metrics>,
    interval: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = hangup.recv() => true,
            _ = ticker.tick() => false,
        };
        // Reading the files blocks: keep it off the request-serving threads too.
        let polled = dir.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&polled)).await else { continue };
        if forced || now != seen {
            seen = now;
            if forced {
                tracing::info!("SIGHUP: reloading manifests");
            }
            let dir = dir.clone();
            let routing = routing.clone();
            let metrics = metrics.clone();
            // Loading reads files: keep it off the request-serving threads.
            let _ = tokio::task::spawn_blocking(move || load(&dir, &routing, &metrics, false)).await;
        }
    }
}
