//! `prewarm watch`: snapshot a file or directory on an interval and when it changes.
//! Runs until interrupted (Ctrl-C / SIGTERM); prints each version as it commits. Sending
//! SIGUSR1 asks for a snapshot now; with `--coordinator` the watcher registers there, reports
//! its un-snapshotted bytes and snapshots when the coordinator asks (before it moves a
//! predicted state whose source changed; see [`super::watch_link`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use prewarm_core::ResourceId;
use prewarm_snapshot::{Snapshotter, TriggerPolicy};

use super::{ChunkArg, StoreArg, TokenArg, parse_duration, parse_resource, parse_size};
use crate::output;

/// Arguments of `prewarm watch`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    store: StoreArg,
    /// Resource id.
    #[arg(long, value_parser = parse_resource)]
    resource: ResourceId,
    /// Snapshot at least this often (unchanged sources create no version).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    interval: Duration,
    /// Snapshot when this many bytes were modified.
    #[arg(long, value_parser = parse_size, default_value = "64MiB")]
    dirty_threshold: u64,
    #[command(flatten)]
    chunk: ChunkArg,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Register with this coordinator (gRPC URL, e.g. http://127.0.0.1:7100): report dirty
    /// bytes, snapshot when it asks. It must serve the same store.
    #[arg(long)]
    coordinator: Option<String>,
    #[command(flatten)]
    token: TokenArg,
    #[command(flatten)]
    tls: super::TlsArg,
    /// The file or directory to watch.
    path: PathBuf,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let chunker = a.chunk.params()?;
    if !a.path.exists() {
        anyhow::bail!("{} does not exist", a.path.display());
    }
    let store = a.store.open_or_create().await?;
    let snap = Snapshotter::new(store).with_chunker(chunker);
    let policy = TriggerPolicy {
        interval: Some(a.interval),
        dirty_threshold: Some(a.dirty_threshold),
    };
    let (req_tx, req_rx) = tokio::sync::mpsc::channel(4);
    let coordinator_requests = req_tx.clone();
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            let _ = req_tx.try_send(());
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    // The first snapshot is taken at once, so the watched state exists from the start.
    let first = snap
        .snapshot_path(&a.resource, &a.path)
        .await
        .context("initial snapshot")?;
    let (dirty_tx, dirty_rx) = tokio::sync::watch::channel(0u64);
    let (committed_tx, committed_rx) = tokio::sync::mpsc::unbounded_channel();
    if let Some(url) = a.coordinator.clone() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        tokio::spawn(super::watch_link::run(super::watch_link::Link {
            url,
            token: a.token.load()?,
            tls: a.tls.client()?,
            watcher: format!("{}:{}", host.trim(), std::process::id()),
            resource: a.resource.clone(),
            version: first.committed.state.version.get(),
            dirty: dirty_rx,
            committed: committed_rx,
            requests: coordinator_requests,
        }));
    }
    let json = a.json;
    let print = move |reason: &str, o: &prewarm_snapshot::SnapshotOutcome| {
        if json {
            let line = serde_json::json!({"reason": reason, "version": o.committed.state.version,
                "resource": o.committed.state.resource, "unchanged": o.unchanged, "stats": o.committed.stats});
            println!("{line}");
        } else if !o.unchanged {
            println!(
                "{reason}: committed {} ({} logical, {} new)",
                o.committed.state,
                output::bytes(o.committed.stats.logical_bytes),
                output::bytes(o.committed.stats.new_stored_bytes)
            );
        }
    };
    print("start", &first);
    let (resource, path) = (a.resource.clone(), a.path.clone());
    prewarm_snapshot::watch::watch(
        &snap,
        &resource,
        &path,
        policy,
        req_rx,
        &dirty_tx,
        stop,
        |ev| {
            let _ = committed_tx.send(ev.outcome.committed.state.version.get());
            let reason = match ev.reason {
                prewarm_snapshot::Reason::Interval => "interval",
                prewarm_snapshot::Reason::Dirty { .. } => "dirty",
                prewarm_snapshot::Reason::OnDemand => "on-demand",
            };
            print(reason, &ev.outcome);
        },
    )
    .await?;
    Ok(0)
}
