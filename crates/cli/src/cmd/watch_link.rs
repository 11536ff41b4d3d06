//! `prewarm watch --coordinator URL`: the watcher's link to the coordinator. It registers the
//! watched resource (`Watch`), reports the un-snapshotted bytes whenever they change and each
//! snapshot it commits (`WatchReport`), and turns the coordinator's snapshot requests into
//! on-demand snapshots. It reconnects with backoff; the watcher snapshots on its own meanwhile.

use std::time::Duration;

use prewarm_core::ResourceId;
use prewarm_proto::wire::{WatcherHello, WatcherReport};
use prewarm_transfer::Token;
use tokio::sync::{mpsc, watch};

/// What the link needs from the watcher.
pub struct Link {
    /// The coordinator's gRPC URL.
    pub url: String,
    /// The shared token.
    pub token: Option<Token>,
    /// TLS to the coordinator (`--tls-ca`).
    pub tls: Option<prewarm_tls::Connector>,
    /// This watcher's name (host:pid).
    pub watcher: String,
    /// The watched resource.
    pub resource: ResourceId,
    /// Newest committed version.
    pub version: u64,
    /// Dirty bytes, as the watch loop keeps them.
    pub dirty: watch::Receiver<u64>,
    /// Versions the watch loop committed (or kept: unchanged sources).
    pub committed: mpsc::UnboundedReceiver<u64>,
    /// Where snapshot requests go.
    pub requests: mpsc::Sender<()>,
}

/// Runs the link until the watcher stops.
pub async fn run(mut l: Link) {
    let mut backoff = Duration::from_millis(200);
    loop {
        while let Ok(v) = l.committed.try_recv() {
            l.version = l.version.max(v);
        }
        match session(&mut l).await {
            Ok(()) => return,
            Err(e) => tracing::warn!("coordinator link: {e}; retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One registration; `Ok` when the watcher is stopping.
async fn session(l: &mut Link) -> Result<(), String> {
    let mut client =
        prewarm_agent::control::connect(&l.url, l.token.as_ref(), l.tls.as_ref()).await?;
    let hello = WatcherHello {
        watcher: l.watcher.clone(),
        resource: l.resource.as_str().to_owned(),
        dirty_bytes: *l.dirty.borrow_and_update(),
        version: l.version,
    };
    let mut stream = client
        .watch(hello)
        .await
        .map_err(|e| format!("registering: {}", e.message()))?
        .into_inner();
    eprintln!(
        "prewarm watch: registered {} with the coordinator at {}",
        l.resource, l.url
    );
    let report = |dirty_bytes: u64, version: u64, snapshotted: bool| WatcherReport {
        resource: l.resource.as_str().to_owned(),
        dirty_bytes,
        version,
        snapshotted,
    };
    loop {
        let r = tokio::select! {
            m = stream.message() => match m {
                Ok(Some(_)) => {
                    // Merged with any request already queued.
                    let _ = l.requests.try_send(());
                    continue;
                }
                Ok(None) => return Err("the coordinator closed the stream".into()),
                Err(e) => return Err(e.message().to_owned()),
            },
            changed = l.dirty.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                report(*l.dirty.borrow_and_update(), l.version, false)
            }
            v = l.committed.recv() => {
                let Some(v) = v else { return Ok(()) };
                l.version = l.version.max(v);
                report(*l.dirty.borrow(), l.version, true)
            }
        };
        let known = client
            .watch_report(r)
            .await
            .map_err(|e| format!("reporting: {}", e.message()))?
            .into_inner()
            .known;
        if !known {
            return Err("the coordinator no longer knows this watcher".into());
        }
    }
}
