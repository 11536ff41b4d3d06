//! Snapshot watchers (`prewarm watch --coordinator`): which resource each one snapshots, its
//! un-snapshotted (dirty) bytes as it last reported them, and the predictive snapshot
//! trigger — before a predicted state whose source is dirty is transferred, [`Watchers::fresh`]
//! asks its watcher for a snapshot and waits for the committed version. Requests for one
//! resource are merged: one snapshot answers every waiter. Nothing here is persisted: a
//! watcher re-registers after a coordinator restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prewarm_core::{ResourceId, Version};
use prewarm_proto::wire::{SnapshotCommand, WatcherHello, WatcherReport};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// A watcher's command stream.
pub type CommandTx = mpsc::Sender<Result<SnapshotCommand, Status>>;

struct Entry {
    watcher: String,
    session: u64,
    tx: CommandTx,
    dirty_bytes: u64,
    version: u64,
    /// A snapshot was requested and not yet reported.
    requested: bool,
    waiters: Vec<oneshot::Sender<Option<Version>>>,
}

/// What [`Watchers::fresh`] came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fresh {
    /// No watcher registered for the resource: its committed versions are all there is.
    NotWatched,
    /// The watcher reports no dirty bytes: the newest committed version is current.
    Clean,
    /// A snapshot was taken on request (the version, possibly unchanged).
    Snapshotted(Version),
    /// The watcher did not answer in time.
    TimedOut,
    /// The watcher went away (or could not be asked).
    Gone,
}

impl Fresh {
    /// Label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Fresh::NotWatched => "not_watched",
            Fresh::Clean => "clean",
            Fresh::Snapshotted(_) => "snapshotted",
            Fresh::TimedOut => "timeout",
            Fresh::Gone => "gone",
        }
    }
}

/// The registered watchers.
#[derive(Default)]
pub struct Watchers {
    inner: Mutex<(HashMap<ResourceId, Entry>, u64)>,
}

/// A registration that cannot be accepted.
#[derive(Debug, thiserror::Error)]
#[error("invalid resource id {0:?}")]
pub struct BadResource(pub String);

impl Watchers {
    /// Registers `hello`'s watcher (replacing an older one of the same resource, whose
    /// waiters are answered [`Fresh::Gone`]); returns its session number.
    pub fn register(&self, hello: &WatcherHello, tx: CommandTx) -> Result<u64, BadResource> {
        let resource =
            ResourceId::new(&hello.resource).map_err(|_| BadResource(hello.resource.clone()))?;
        let mut g = self.inner.lock().expect("watchers lock poisoned");
        g.1 += 1;
        let session = g.1;
        let old = g.0.insert(
            resource,
            Entry {
                watcher: hello.watcher.clone(),
                session,
                tx,
                dirty_bytes: hello.dirty_bytes,
                version: hello.version,
                requested: false,
                waiters: Vec::new(),
            },
        );
        if let Some(old) = old {
            tracing::info!("watcher {} replaces {}", hello.watcher, old.watcher);
            for w in old.waiters {
                let _ = w.send(None);
            }
        }
        Ok(session)
    }

    /// The watcher of `resource` with `session` went away.
    pub fn unregister(&self, resource: &ResourceId, session: u64) {
        let mut g = self.inner.lock().expect("watchers lock poisoned");
        if g.0.get(resource).is_some_and(|e| e.session == session)
            && let Some(e) = g.0.remove(resource)
        {
            for w in e.waiters {
                let _ = w.send(None);
            }
        }
    }

    /// Applies a report; false when no watcher of that resource is registered.
    pub fn report(&self, r: &WatcherReport) -> bool {
        let Ok(resource) = ResourceId::new(&r.resource) else {
            return false;
        };
        let mut g = self.inner.lock().expect("watchers lock poisoned");
        let Some(e) = g.0.get_mut(&resource) else {
            return false;
        };
        e.dirty_bytes = r.dirty_bytes;
        e.version = e.version.max(r.version);
        if r.snapshotted {
            e.requested = false;
            let v = Version::new(e.version);
            for w in e.waiters.drain(..) {
                let _ = w.send(v);
            }
        }
        true
    }

    /// Dirty bytes of `resource`'s source (0 when not watched).
    pub fn dirty(&self, resource: &ResourceId) -> u64 {
        let g = self.inner.lock().expect("watchers lock poisoned");
        g.0.get(resource).map_or(0, |e| e.dirty_bytes)
    }

    /// Every watcher: (resource, watcher, dirty bytes, newest version), by resource.
    pub fn list(&self) -> Vec<(ResourceId, String, u64, u64)> {
        let g = self.inner.lock().expect("watchers lock poisoned");
        let mut v: Vec<_> =
            g.0.iter()
                .map(|(r, e)| (r.clone(), e.watcher.clone(), e.dirty_bytes, e.version))
                .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Number of watchers and their dirty bytes in total.
    pub fn totals(&self) -> (u64, u64) {
        let g = self.inner.lock().expect("watchers lock poisoned");
        (g.0.len() as u64, g.0.values().map(|e| e.dirty_bytes).sum())
    }

    /// Makes sure the newest committed version of `resource` includes its source's changes:
    /// when its watcher reports dirty bytes, asks it for a snapshot (one request however
    /// many callers wait) and waits up to `timeout` for it.
    pub async fn fresh(&self, resource: &ResourceId, timeout: Duration) -> Fresh {
        let rx = {
            let mut g = self.inner.lock().expect("watchers lock poisoned");
            let Some(e) = g.0.get_mut(resource) else {
                return Fresh::NotWatched;
            };
            if e.dirty_bytes == 0 && !e.requested {
                return Fresh::Clean;
            }
            if !e.requested {
                let cmd = SnapshotCommand {
                    resource: resource.as_str().to_owned(),
                };
                if e.tx.try_send(Ok(cmd)).is_err() {
                    return Fresh::Gone;
                }
                e.requested = true;
            }
            let (tx, rx) = oneshot::channel();
            e.waiters.push(tx);
            rx
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Some(v))) => Fresh::Snapshotted(v),
            Ok(_) => Fresh::Gone,
            Err(_) => {
                // Ask again next time rather than wait on a request that may be lost.
                let mut g = self.inner.lock().expect("watchers lock poisoned");
                if let Some(e) = g.0.get_mut(resource) {
                    e.requested = false;
                }
                Fresh::TimedOut
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(dirty: u64) -> WatcherHello {
        WatcherHello {
            watcher: "w1".into(),
            resource: "shop/x".into(),
            dirty_bytes: dirty,
            version: 3,
        }
    }

    #[tokio::test]
    async fn a_dirty_source_is_snapshotted_once_for_every_waiter() {
        let w = std::sync::Arc::new(Watchers::default());
        let (tx, mut rx) = mpsc::channel(4);
        w.register(&hello(4096), tx).unwrap();
        let r = ResourceId::new("shop/x").unwrap();
        assert_eq!(w.dirty(&r), 4096);
        let (a, b) = (w.clone(), w.clone());
        let (r1, r2) = (r.clone(), r.clone());
        let t1 = tokio::spawn(async move { a.fresh(&r1, Duration::from_secs(5)).await });
        let t2 = tokio::spawn(async move { b.fresh(&r2, Duration::from_secs(5)).await });
        let cmd = rx.recv().await.unwrap().unwrap();
        assert_eq!(cmd.resource, "shop/x");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(rx.try_recv().is_err(), "one request for both waiters");
        assert!(w.report(&WatcherReport {
            resource: "shop/x".into(),
            dirty_bytes: 0,
            version: 4,
            snapshotted: true,
        }));
        let v4 = Version::new(4).unwrap();
        assert_eq!(t1.await.unwrap(), Fresh::Snapshotted(v4));
        assert_eq!(t2.await.unwrap(), Fresh::Snapshotted(v4));
        // Clean now: nothing is asked.
        assert_eq!(w.fresh(&r, Duration::from_secs(5)).await, Fresh::Clean);
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn silent_departed_and_unknown_watchers_do_not_block() {
        let w = Watchers::default();
        let r = ResourceId::new("shop/x").unwrap();
        assert_eq!(w.fresh(&r, Duration::from_secs(5)).await, Fresh::NotWatched);
        let (tx, _rx) = mpsc::channel(4);
        let s = w.register(&hello(1), tx).unwrap();
        assert_eq!(
            w.fresh(&r, Duration::from_millis(50)).await,
            Fresh::TimedOut
        );
        // A stale session's end does not remove the newer registration.
        let (tx2, rx2) = mpsc::channel(4);
        let s2 = w.register(&hello(1), tx2).unwrap();
        w.unregister(&r, s);
        assert_eq!(w.totals(), (1, 1));
        drop(rx2);
        assert_eq!(w.fresh(&r, Duration::from_secs(5)).await, Fresh::Gone);
        w.unregister(&r, s2);
        assert_eq!(w.totals(), (0, 0));
        assert!(
            w.register(
                &WatcherHello {
                    resource: "../etc".into(),
                    ..hello(0)
                },
                mpsc::channel(1).0
            )
            .is_err()
        );
        assert!(!w.report(&WatcherReport {
            resource: "shop/none".into(),
            ..Default::default()
        }));
    }
}
