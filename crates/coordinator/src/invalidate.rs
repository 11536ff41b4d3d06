//! Invalidation: the store is checked every `poll` for versions newer than what agents
//! hold, and the holders are told (`Invalidate`); each refreshes or marks stale by its own
//! policy. The engine's cached size of the resource is dropped with it.

use std::sync::Arc;
use std::time::Duration;

use prewarm_core::{ResourceId, Version};
use prewarm_proto::wire::{Command, Invalidate, command};

use crate::Coordinator;

/// Checks the store every `poll` until the coordinator stops.
pub(crate) async fn watch_versions(c: Arc<Coordinator>, poll: Duration) {
    loop {
        tokio::time::sleep(poll).await;
        for r in c.capacities.held_resources() {
            match c.transfers.store().latest(&r).await {
                Ok(Some(newest)) => announce(&c, &r, newest).await,
                Ok(None) => {}
                Err(e) => tracing::warn!("version check of {r}: {e}"),
            }
        }
    }
}

/// `newest` is `resource`'s newest committed version: holders of older ones are told, once per
/// attach stream.
async fn announce(c: &Coordinator, resource: &ResourceId, newest: Version) {
    if let Some(b) = &c.brain {
        b.forget(resource);
    }
    let targets = c.capacities.behind(resource, newest);
    if targets.is_empty() {
        return;
    }
    let _ = c.transfers.store().refresh_index().await;
    tracing::info!(
        "{resource}@{newest} committed: invalidating {} holder(s)",
        targets.len()
    );
    for tx in targets {
        c.metrics.invalidations.inc();
        let _ = tx
            .send(Ok(Command {
                command: Some(command::Command::Invalidate(Invalidate {
                    resource: resource.as_str().to_owned(),
                    new_version: newest.get(),
                    transfer_id: 0,
                })),
            }))
            .await;
    }
}
