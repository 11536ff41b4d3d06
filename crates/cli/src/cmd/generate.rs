//! `prewarm generate`: a fleet-scale synthetic history (see `prewarm_sim::workload`) for
//! planning by replay at sizes no shared trace reaches.

use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::Context as _;
use prewarm_sim::workload::{FleetShape, generate};

/// Arguments of `prewarm generate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Records to write (executions and uploads; at the default rates a day is ~10.5
    /// million).
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Tenants (Zipf popularity).
    #[arg(long, default_value_t = 100_000)]
    tenants: usize,
    /// Shared models (Zipf popularity; each tenant uses two).
    #[arg(long, default_value_t = 200)]
    models: usize,
    /// Mean session arrivals per second (three executions each).
    #[arg(long, default_value_t = 40.0)]
    sessions_per_s: f64,
    /// Diurnal amplitude, 0 (flat) to 1.
    #[arg(long, default_value_t = 0.5)]
    diurnal: f64,
    /// Mean seconds between bursts (one tenant starting five sessions at once).
    #[arg(long, default_value_t = 20.0)]
    burst_every: f64,
    /// Mean seconds between uploads of a new version of a tenant's index.
    #[arg(long, default_value_t = 1.0)]
    upload_every: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file (JSON Lines history, as `prewarm import` writes).
    #[arg(short, long)]
    output: PathBuf,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    anyhow::ensure!(
        a.tenants > 0 && a.models > 0,
        "--tenants and --models must be at least 1"
    );
    anyhow::ensure!(
        a.sessions_per_s > 0.0 && a.burst_every > 0.0 && a.upload_every > 0.0,
        "--sessions-per-s, --burst-every and --upload-every must be positive"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.diurnal),
        "--diurnal must be within 0..=1"
    );
    let shape = FleetShape {
        seed: a.seed,
        records: a.records,
        tenants: a.tenants,
        models: a.models,
        sessions_per_s: a.sessions_per_s,
        diurnal: a.diurnal,
        burst_every_s: a.burst_every,
        upload_every_s: a.upload_every,
    };
    let file = std::fs::File::create(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let g = tokio::task::spawn_blocking(move || generate(&shape, 1.7e9, &mut out)).await??;
    println!(
        "generated {} records ({} states, {:.0} s of trace, peak {:.0} records/s) to {}",
        g.records,
        g.states,
        g.span_s,
        g.peak_per_s,
        a.output.display()
    );
    Ok(0)
}
