//! `prewarm demo`: the README's main command (see `prewarm_demo`) — its flags, the call, and
//! the printing (the comparison table, or JSON with `--json`).

use std::path::PathBuf;
use std::time::Duration;

use super::{parse_duration, parse_size};
use crate::output;

/// Arguments of `prewarm demo` (the defaults are the README's run).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Tenants in the workload.
    #[arg(long, default_value_t = 12)]
    tenants: usize,
    /// History the model trains on (generated, not served).
    #[arg(long, value_parser = parse_duration, default_value = "900s")]
    history: Duration,
    /// Length of the served part (run twice: on-demand, then predictive).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    serve: Duration,
    /// Session arrivals per second.
    #[arg(long, default_value_t = 3.0)]
    sessions_per_s: f64,
    /// Agents (compute capacities).
    #[arg(long, default_value_t = 4)]
    capacities: usize,
    /// Cache budget of each agent.
    #[arg(long, value_parser = parse_size, default_value = "64MiB")]
    cache_size: u64,
    /// Time between an event and its execution's start.
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    lead: Duration,
    /// Price of the link time a prefetch nobody reads takes, for the predictive policies:
    /// seconds of cold start per second of link time, or `queue` (by how busy the link is).
    #[arg(long, default_value = "1")]
    link_price: prewarm_engine::LinkPrice,
    /// Time budget for training the GRU.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    train_budget: Duration,
    /// Where to write the HTML report.
    #[arg(long, default_value = "report.html")]
    report: PathBuf,
    /// Print JSON instead of the table and progress.
    #[arg(long)]
    json: bool,
}

/// Runs the demo.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let s = prewarm_demo::Settings {
        seed: a.seed,
        tenants: a.tenants,
        history: a.history,
        serve: a.serve,
        sessions_per_s: a.sessions_per_s,
        capacities: a.capacities,
        cache_size: a.cache_size,
        lead: a.lead,
        link_price: a.link_price,
        train_budget: a.train_budget,
        report: a.report,
        progress: !a.json,
    };
    let out = prewarm_demo::run(&s).await?;
    if a.json {
        output::json(&out.json())?;
    } else {
        println!("\n{}", out.table());
        println!(
            "Finished in {:.0} s. Report: {} (open it in a browser; it needs no network).",
            out.seconds,
            out.report.display()
        );
    }
    Ok(0)
}
