//! `prewarm coordinator`: serves a store to agents (control plane, data plane, invalidations,
//! `/metrics`) until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use prewarm_coordinator::CoordinatorConfig;

use super::{StoreArg, TokenArg, parse_duration};

/// Arguments of `prewarm coordinator`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    store: StoreArg,
    /// gRPC (and /metrics) address.
    #[arg(long, default_value = "127.0.0.1:7100")]
    listen: SocketAddr,
    /// Data-plane TCP address (default: the --listen host, port + 1).
    #[arg(long)]
    data_listen: Option<SocketAddr>,
    /// Unix socket for agents on this host (default: prewarm-<port>.sock in the temp dir;
    /// "none" to disable).
    #[arg(long, value_name = "PATH|none")]
    data_unix: Option<String>,
    /// How often to check the store for new versions of held resources.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    poll: Duration,
    #[command(flatten)]
    token: TokenArg,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let store = a.store.open_or_create().await?;
    let data_listen = a
        .data_listen
        .unwrap_or_else(|| SocketAddr::new(a.listen.ip(), a.listen.port().wrapping_add(1)));
    let data_unix = match a.data_unix.as_deref() {
        Some("none") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => Some(std::env::temp_dir().join(format!("prewarm-{}.sock", a.listen.port()))),
    };
    let cfg = CoordinatorConfig {
        listen: a.listen,
        data_listen,
        data_unix,
        token: a.token.load()?,
        poll: a.poll,
    };
    let running = prewarm_coordinator::start(store, cfg)
        .await
        .context("starting the coordinator")?;
    eprintln!(
        "prewarm coordinator {}: gRPC and /metrics on {}, data plane on {}{}",
        running.coordinator.instance,
        running.grpc,
        running.data_tcp,
        running
            .data_unix
            .as_ref()
            .map(|p| format!(" and {}", p.display()))
            .unwrap_or_default()
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => eprintln!("prewarm coordinator: interrupted, stopping"),
        _ = terminate() => eprintln!("prewarm coordinator: terminated, stopping"),
    }
    drop(running);
    Ok(0)
}

/// Resolves on SIGTERM.
pub async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
