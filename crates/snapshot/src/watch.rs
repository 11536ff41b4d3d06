//! `watch`: a long-running snapshotter for one file or directory. Takes a version when the
//! interval elapses, when modified bytes reported by file-system notifications pass the
//! threshold, or on demand (a message on the request channel).
//!
//! Notifications carry no byte counts, so a modified file counts with its current size (an
//! upper bound on what changed); each file counts once between two snapshots.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;
use prewarm_core::ResourceId;
use tokio::sync::mpsc;

use crate::trigger::{Reason, TriggerPolicy, Triggers};
use crate::{SnapshotError, SnapshotOutcome, Snapshotter};

/// Why watching stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The path cannot be watched.
    #[error("cannot watch {path}: {source}")]
    Notify {
        /// The path.
        path: PathBuf,
        /// The watcher's error.
        source: notify::Error,
    },
    /// A snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// One committed snapshot, reported to the caller.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WatchEvent {
    /// Why it was taken.
    #[serde(flatten)]
    pub reason: Reason,
    /// What came of it.
    #[serde(flatten)]
    pub outcome: SnapshotOutcome,
}

/// Watches `path` and snapshots it as `resource` per `policy` until `stop` resolves.
/// `requests` carries on-demand snapshot requests; `dirty` is kept at the bytes modified
/// since the last snapshot (an upper bound, see the module docs); `on_event` sees every
/// snapshot taken.
#[allow(clippy::too_many_arguments)]
pub async fn watch(
    snapshotter: &Snapshotter,
    resource: &ResourceId,
    path: &Path,
    policy: TriggerPolicy,
    mut requests: mpsc::Receiver<()>,
    dirty: &tokio::sync::watch::Sender<u64>,
    stop: impl std::future::Future<Output = ()>,
    mut on_event: impl FnMut(&WatchEvent),
) -> Result<(), WatchError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && matches!(
                ev.kind,
                notify::EventKind::Modify(_)
                    | notify::EventKind::Create(_)
                    | notify::EventKind::Remove(_)
            )
        {
            for p in ev.paths {
                let _ = tx.send(p);
            }
        }
    })
    .map_err(|source| WatchError::Notify {
        path: path.to_owned(),
        source,
    })?;
    watcher
        .watch(path, notify::RecursiveMode::Recursive)
        .map_err(|source| WatchError::Notify {
            path: path.to_owned(),
            source,
        })?;

    let start = tokio::time::Instant::now();
    let now = || start.elapsed();
    let mut triggers = Triggers::new(policy);
    triggers.track(resource.clone(), now());
    let mut dirty_files: HashSet<PathBuf> = HashSet::new();
    tokio::pin!(stop);
    // Poll at least this often so interval deadlines are met without a timer per resource.
    let tick = policy.interval.map_or(Duration::from_millis(500), |i| {
        i.min(Duration::from_millis(500))
    });
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            Some(p) = rx.recv() => {
                if dirty_files.insert(p.clone()) {
                    let bytes = std::fs::metadata(&p).map_or(0, |m| if m.is_file() { m.len() } else { 0 });
                    triggers.mark_dirty(resource, bytes.max(1), now());
                    dirty.send_replace(triggers.dirty_bytes(resource));
                }
            }
            Some(()) = requests.recv() => triggers.request(resource, now()),
            _ = ticker.tick() => {}
        }
        for (res, reason) in triggers.due(now()) {
            let outcome = snapshotter.snapshot_path(&res, path).await?;
            triggers.snapshotted(&res, now());
            dirty_files.clear();
            dirty.send_replace(0);
            on_event(&WatchEvent { reason, outcome });
        }
    }
}
