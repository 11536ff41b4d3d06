//! `prewarm status`: the coordinator's view: capacities, inventories, recent transfers.

use anyhow::Context;
use prewarm_proto::wire::{FailureKind, ModelStatus, StatusReply, StatusRequest};

use super::CoordinatorArg;

/// Arguments of `prewarm status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    coordinator: CoordinatorArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let mut client = a.coordinator.connect().await?;
    let s = client
        .status(StatusRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))
        .context("status")?
        .into_inner();
    if a.json {
        print_json(&s);
        return Ok(0);
    }
    println!("coordinator {}", s.coordinator_instance);
    if let Some(m) = &s.model {
        print_model(m);
    }
    print_capacities(&s);
    print_recent(&s);
    Ok(0)
}

/// Prints the whole status as one JSON object.
fn print_json(s: &StatusReply) {
    let caps: Vec<_> = s
        .capacities
        .iter()
        .map(|c| {
            let inv = c.inventory.clone().unwrap_or_default();
            serde_json::json!({
                "capacity": c.capacity, "connected": c.connected, "ensure_addr": c.ensure_addr,
                "cache_used": inv.cache_used, "cache_budget": inv.cache_budget,
                "held": inv.held.iter().map(|h| serde_json::json!({
                    "resource": h.resource, "version": h.version, "bytes": h.bytes, "stale": h.stale,
                })).collect::<Vec<_>>(),
                "departed": inv.departed.iter().map(|d| serde_json::json!({
                    "resource": d.resource, "version": d.version, "kind": d.kind,
                    "reason": d.reason, "unix_ms": d.unix_ms,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let recent: Vec<_> = s
        .recent
        .iter()
        .map(|t| {
            serde_json::json!({
                "transfer_id": t.transfer_id, "capacity": t.capacity, "resource": t.resource,
                "version": t.version, "ok": t.ok, "already_held": t.already_held,
                "wire_bytes": t.wire_bytes, "store_bytes": t.store_bytes,
                "reused_bytes": t.reused_bytes,
                "resumed_bytes": t.resumed_bytes, "duration_us": t.duration_us,
                "failure": FailureKind::try_from(t.failure).map(|f| f.as_str_name()).unwrap_or("?"),
                "error": t.error,
            })
        })
        .collect();
    let model = s.model.as_ref().map(|m| {
        serde_json::json!({
            "name": m.name, "retraining": m.retraining, "rounds": m.rounds, "swaps": m.swaps,
            "failures": m.failures, "champion_log_loss": m.champion_log_loss,
            "challenger_log_loss": m.challenger_log_loss, "champion_top5": m.champion_top5,
            "challenger_top5": m.challenger_top5, "held_out": m.held_out,
            "last_round_unix_ms": m.last_round_unix_ms, "last_error": m.last_error,
            "champion_warm_rate": (m.champion_warm_rate >= 0.0).then_some(m.champion_warm_rate),
            "challenger_warm_rate": (m.challenger_warm_rate >= 0.0).then_some(m.challenger_warm_rate),
        })
    });
    println!(
        "{}",
        serde_json::json!({ "coordinator": s.coordinator_instance, "model": model, "capacities": caps, "recent": recent })
    );
}

/// Prints the serving model's line: its retraining rounds and the last one's scores.
fn print_model(m: &ModelStatus) {
    print!("  model {}", m.name);
    if m.retraining {
        print!(
            ": {} retraining rounds, {} swapped, {} failed",
            m.rounds, m.swaps, m.failures
        );
        if m.rounds > 0 {
            print!(
                "; last: challenger {:.3} vs serving {:.3} nats (top-5 {:.1}% vs {:.1}%) on {} held-back records",
                m.challenger_log_loss,
                m.champion_log_loss,
                100.0 * m.challenger_top5,
                100.0 * m.champion_top5,
                m.held_out
            );
            if m.champion_warm_rate >= 0.0 && m.challenger_warm_rate >= 0.0 {
                print!(
                    ", replayed: {:.1}% vs {:.1}% warm",
                    100.0 * m.challenger_warm_rate,
                    100.0 * m.champion_warm_rate
                );
            }
        }
        if !m.last_error.is_empty() {
            print!(" ({})", m.last_error);
        }
    }
    println!();
}

/// Prints each capacity, its cache use and the versions it holds.
fn print_capacities(s: &StatusReply) {
    for c in &s.capacities {
        let inv = c.inventory.clone().unwrap_or_default();
        println!(
            "  {} [{}] api {} cache {}/{}",
            c.capacity,
            if c.connected {
                "connected"
            } else {
                "disconnected"
            },
            c.ensure_addr,
            prewarm_core::ByteSize(inv.cache_used),
            prewarm_core::ByteSize(inv.cache_budget)
        );
        for h in &inv.held {
            println!(
                "    {}@{} {}{}",
                h.resource,
                h.version,
                prewarm_core::ByteSize(h.bytes),
                if h.stale { " (stale)" } else { "" }
            );
        }
        print_departed(&inv.departed);
    }
}

/// Prints why the latest states that are not on a capacity left (at most 5).
fn print_departed(departed: &[prewarm_proto::wire::Departed]) {
    let now_ms = (prewarm_core::unix_now() * 1e3) as u64;
    for d in departed.iter().take(5) {
        let version = if d.version > 0 {
            format!("@{}", d.version)
        } else {
            String::new()
        };
        let ago = now_ms.saturating_sub(d.unix_ms) as f64 / 1e3;
        println!(
            "    not here: {}{version} {} {ago:.0} s ago ({})",
            d.resource, d.kind, d.reason
        );
    }
}

/// Prints the latest transfers (at most 20), newest first.
fn print_recent(s: &StatusReply) {
    if !s.recent.is_empty() {
        println!("recent transfers (newest first):");
        for t in s.recent.iter().take(20) {
            let what = if !t.ok {
                format!(
                    "FAILED {}: {}",
                    FailureKind::try_from(t.failure)
                        .map(|f| f.as_str_name())
                        .unwrap_or("?"),
                    t.error
                )
            } else if t.already_held {
                "already held".into()
            } else {
                format!(
                    "{} wire, {} reused, {} resumed, {:.3} s",
                    prewarm_core::ByteSize(t.wire_bytes),
                    prewarm_core::ByteSize(t.reused_bytes),
                    prewarm_core::ByteSize(t.resumed_bytes),
                    t.duration_us as f64 / 1e6
                )
            };
            println!(
                "  #{} {} {}@{}: {what}",
                t.transfer_id, t.capacity, t.resource, t.version
            );
        }
    }
}
