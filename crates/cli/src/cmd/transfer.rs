//! `prewarm transfer`: asks the coordinator to have a capacity load a state; prints the
//! acknowledgement (exit 0) or the reason it failed (exit 1).

use anyhow::Context;
use prewarm_proto::wire::{FailureKind, Priority, TransferRequest, VersionSpec, version_spec};

use super::CoordinatorArg;
use crate::progress;

/// Arguments of `prewarm transfer`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    coordinator: CoordinatorArg,
    /// The capacity that should load the state.
    #[arg(long)]
    capacity: String,
    /// The resource.
    #[arg(long)]
    resource: String,
    /// Exactly this version (default: the newest).
    #[arg(long, conflicts_with = "at_least")]
    version: Option<u64>,
    /// The newest version, which must be at least this.
    #[arg(long)]
    at_least: Option<u64>,
    /// Treat it as on-demand (ahead of predictive transfers, no bandwidth limit).
    #[arg(long)]
    on_demand: bool,
    /// Give up after this many milliseconds (0: the coordinator's default).
    #[arg(long, default_value_t = 0)]
    timeout_ms: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let mut client = a.coordinator.connect().await?;
    let spec = match (a.version, a.at_least) {
        (Some(v), _) => version_spec::Spec::Exact(v),
        (None, Some(n)) => version_spec::Spec::AtLeast(n),
        (None, None) => version_spec::Spec::Latest(true),
    };
    let req = TransferRequest {
        capacity: a.capacity,
        resource: a.resource,
        version: Some(VersionSpec { spec: Some(spec) }),
        priority: if a.on_demand {
            Priority::OnDemand
        } else {
            Priority::Predictive
        } as i32,
        timeout_ms: a.timeout_ms,
    };
    let shown = progress::show(
        format!("transfer {} to {}", req.resource, req.capacity),
        std::sync::Arc::new(progress::Meter::new()),
        progress::Unit::Wait,
    );
    let ack = client.transfer(req).await;
    shown.finish();
    let ack = ack
        .map_err(|s| anyhow::anyhow!("{}", s.message()))
        .context("transfer")?
        .into_inner();
    let failure = FailureKind::try_from(ack.failure).unwrap_or(FailureKind::Source);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "ok": ack.ok, "transfer_id": ack.transfer_id, "capacity": ack.capacity,
                "resource": ack.resource, "version": ack.version,
                "already_held": ack.already_held, "wire_bytes": ack.wire_bytes,
                "store_bytes": ack.store_bytes,
                "reused_bytes": ack.reused_bytes, "resumed_bytes": ack.resumed_bytes,
                "state_bytes": ack.state_bytes, "duration_us": ack.duration_us,
                "failure": failure.as_str_name(), "error": ack.error,
            })
        );
    } else if ack.ok && ack.already_held {
        println!(
            "{}: already holds {}@{}",
            ack.capacity, ack.resource, ack.version
        );
    } else if ack.ok {
        let secs = ack.duration_us as f64 / 1e6;
        println!(
            "{}: loaded {}@{}: {} state, {} on the wire, {} from the object store, {} reused, {} resumed, {:.3} s ({}/s)",
            ack.capacity,
            ack.resource,
            ack.version,
            prewarm_core::ByteSize(ack.state_bytes),
            prewarm_core::ByteSize(ack.wire_bytes),
            prewarm_core::ByteSize(ack.store_bytes),
            prewarm_core::ByteSize(ack.reused_bytes),
            prewarm_core::ByteSize(ack.resumed_bytes),
            secs,
            prewarm_core::ByteSize((ack.state_bytes as f64 / secs.max(1e-9)) as u64),
        );
    }
    if !ack.ok {
        eprintln!(
            "prewarm: transfer failed ({}): {}",
            failure.as_str_name(),
            ack.error
        );
        return Ok(1);
    }
    Ok(0)
}
