//! `prewarm demo`: the README's main command — the whole system on one machine. It generates
//! a workload (tenant sessions with sequential patterns, periodic timers, Zipf popularity,
//! bursts, states that change version; see [`workload`]), snapshots its states into a store
//! in a temporary directory, trains a small GRU on the first part, then serves the rest for
//! real three times — on-demand only, with the best baseline (Markov) driving the engine, and
//! with the learned policy (the GRU mixed with Markov and frequency by online weights) —
//! each time with a coordinator and four agents moving real bytes over loopback
//! ([`phase`]). It prints warm starts, time-to-ready and bytes side by side, and writes
//! `report.html` ([`page`]).

mod page;
mod phase;
mod workload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use prewarm_coordinator::Brain;
use prewarm_predict::baselines::{Frequency, Markov};
use prewarm_predict::mixture::Mixture;
use prewarm_predict::neural::{Arch, Learned, TrainOptions, train};
use prewarm_snapshot::Snapshotter;
use prewarm_store::Store;

use crate::cmd::{parse_duration, parse_size};
use crate::dataset::{Rng, text_fill};
use crate::output;
use phase::{PhaseResult, Setup, mean, percentile};
use workload::{Fill, Shape, Workload};

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
    /// Price of link time for the predictive policies, in seconds of cold start per second a
    /// prefetch occupies the link (the demo's link is loopback).
    #[arg(long, default_value_t = 1.0)]
    link_price: f64,
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
    let started = Instant::now();
    anyhow::ensure!(
        (1..=64).contains(&a.capacities),
        "--capacities must be 1 to 64"
    );
    anyhow::ensure!(
        a.tenants >= 1 && a.sessions_per_s > 0.0,
        "--tenants and --sessions-per-s must be positive"
    );
    let say = |s: String| {
        if !a.json {
            println!("{s}");
        }
    };
    let tmp = tempfile::Builder::new().prefix("prewarm-demo-").tempdir()?;
    let shape = Shape {
        seed: a.seed,
        tenants: a.tenants,
        history_s: a.history.as_secs_f64(),
        serve_s: a.serve.as_secs_f64(),
        sessions_per_s: a.sessions_per_s,
    };
    let work = Arc::new(Workload::generate(&shape));
    let served = work.served().len();
    say(format!(
        "prewarm demo in {} — {} states ({}), {} executions: {} in {:.0} s of history, {} served in {:.0} s, {} uploads",
        tmp.path().display(),
        work.states.len(),
        output::bytes(work.total_bytes()),
        work.execs.len(),
        work.execs.len() - served,
        shape.history_s,
        served,
        shape.serve_s,
        work.uploads.len()
    ));

    // The store: every state's first version.
    let t = Instant::now();
    let base = tmp.path().join("store");
    let store = Arc::new(Store::open_or_create(base.to_str().context("utf-8 path")?).await?);
    let snap = Snapshotter::new(store.clone());
    let mut contents = HashMap::new();
    let rewritten: std::collections::HashSet<usize> =
        work.uploads.iter().map(|u| u.state).collect();
    for (i, s) in work.states.iter().enumerate() {
        let mut buf = vec![0u8; s.bytes as usize];
        let mut rng = Rng::new(a.seed ^ (i as u64 + 1) << 20);
        match s.fill {
            Fill::Text => text_fill(&mut rng, &mut buf),
            Fill::Random => rng.fill(&mut buf),
        }
        if rewritten.contains(&i) {
            contents.insert(i, buf.clone());
        }
        snap.commit_bytes(&s.id, Bytes::from(buf))
            .await
            .with_context(|| format!("snapshotting {}", s.id))?;
    }
    drop((snap, store));
    say(format!(
        "[1/5] snapshotted {} states into the store: {:.1} s",
        work.states.len(),
        t.elapsed().as_secs_f64()
    ));

    // The model.
    let history = work.history(prewarm_core::unix_now());
    let t = Instant::now();
    let mut o = TrainOptions::new(Arch::GRU);
    o.time_budget = Some(a.train_budget);
    o.seed = a.seed;
    let (json, records) = (a.json, history.len());
    let model = tokio::task::spawn_blocking(move || {
        train(&history, &o, &mut |p| {
            if let (false, Some(v)) = (json, p.validation_loss) {
                println!(
                    "      epoch {}/{}: training loss {:.3}, validation loss {v:.3}",
                    p.epoch, p.epochs, p.loss
                );
            }
        })
    })
    .await?
    .context("training the GRU")?;
    let summary = model.config.training.clone();
    say(format!(
        "[2/5] trained a GRU (embeddings 64, hidden 128) on {records} history records: {} epochs in {:.1} s, validation top-1 {:.1}%, top-5 {:.1}%",
        summary.epochs,
        t.elapsed().as_secs_f64(),
        100.0 * summary.validation_top1,
        100.0 * summary.validation_top5
    ));

    let setup = |label: &'static str, dir: &str, brain: Option<Brain>| Setup {
        label,
        work: work.clone(),
        contents: contents.clone(),
        base_store: base.clone(),
        dir: tmp.path().join(dir),
        capacities: a.capacities,
        cache_size: a.cache_size,
        lead: a.lead,
        brain,
        progress: !a.json,
    };
    say(format!(
        "[3/5] serving {served} executions on-demand only: coordinator + {} agents (cache {} each), events {} ahead",
        a.capacities,
        output::bytes(a.cache_size),
        output::millis(a.lead.as_secs_f64() * 1e3)
    ));
    let s = setup("on-demand", "on-demand", None);
    let cold = tokio::task::spawn_blocking(move || phase::run(s)).await??;

    // What the coordinator would have learned from its agents before now: each key's recent
    // states (the model's context), with times ending where serving begins.
    let before = work.history(prewarm_core::unix_now());
    say(format!(
        "[4/5] serving the same {served} executions with the best baseline, Markov, through the same engine (fresh agents and store)"
    ));
    let markov = brain(&a, Box::new(Markov::new(2, 3600.0)));
    markov.learn(&before);
    let s = setup("markov", "markov", Some(markov));
    let base = tokio::task::spawn_blocking(move || phase::run(s)).await??;

    say(format!(
        "[5/5] serving the same {served} executions with the learned policy: the GRU mixed with Markov and frequency by online weights"
    ));
    let learned = brain(
        &a,
        Box::new(Mixture::new(
            "learned",
            vec![
                Box::new(Learned::new(model, 1 << 16)),
                Box::new(Markov::new(2, 3600.0)),
                Box::new(Frequency::new(3600.0)),
            ],
        )),
    );
    learned.learn(&before);
    let s = setup("learned (GRU mixture)", "learned", Some(learned));
    let warm = tokio::task::spawn_blocking(move || phase::run(s)).await??;

    let phases = [cold, base, warm];
    let total_s = started.elapsed().as_secs_f64();
    std::fs::write(
        &a.report,
        page::html(&phases, &setup_summary(&a, &work), total_s),
    )
    .with_context(|| format!("writing {}", a.report.display()))?;
    if a.json {
        output::json(&serde_json::json!({
            "phases": phases.iter().map(phase_json).collect::<Vec<_>>(),
            "seconds": total_s,
            "report": a.report,
        }))?;
    } else {
        println!("\n{}", table(&phases));
        println!(
            "Finished in {total_s:.0} s. Report: {} (open it in a browser; it needs no network).",
            a.report.display()
        );
    }
    Ok(0)
}

/// The coordinator's engine for a model (the priced planner at the demo's loopback
/// bandwidth, next-use eviction, priced keep-alive).
fn brain(a: &Args, model: Box<dyn prewarm_core::Predictor>) -> Brain {
    let (rule, keep) = prewarm_engine::rules_for("model", f64::INFINITY);
    Brain::new(
        prewarm_engine::EngineConfig {
            planner: prewarm_engine::PlannerConfig {
                bandwidth: 500e6,
                lead_s: a.lead.as_secs_f64(),
                link_price: a.link_price,
                ..Default::default()
            },
            rule,
            keep,
            ..Default::default()
        },
        Some(model),
    )
}

fn setup_summary(a: &Args, w: &Workload) -> String {
    format!(
        "seed {}, {} tenants, {} states ({}), {} capacities with {} caches, events {} ahead of their executions, {} served executions, {} uploads",
        a.seed,
        a.tenants,
        w.states.len(),
        output::bytes(w.total_bytes()),
        a.capacities,
        output::bytes(a.cache_size),
        output::millis(a.lead.as_secs_f64() * 1e3),
        w.served().len(),
        w.uploads.len()
    )
}

/// Warm-start share, percent.
fn warm_rate(p: &PhaseResult) -> f64 {
    100.0 * p.execs.iter().filter(|e| e.warm).count() as f64 / p.execs.len().max(1) as f64
}

fn table(phases: &[PhaseResult]) -> String {
    let row = |name: &str, f: &dyn Fn(&PhaseResult) -> String| {
        let mut r = vec![name.to_owned()];
        r.extend(phases.iter().map(f));
        r
    };
    let mut header = vec![""];
    header.extend(phases.iter().map(|p| p.label.as_str()));
    let rows = vec![
        row("executions", &|p| p.execs.len().to_string()),
        row("warm starts", &|p| format!("{:.1}%", warm_rate(p))),
        row("time-to-ready p50", &|p| {
            output::millis(percentile(&p.execs, 0.5))
        }),
        row("time-to-ready p99", &|p| {
            output::millis(percentile(&p.execs, 0.99))
        }),
        row("time-to-ready mean", &|p| output::millis(mean(&p.execs))),
        row("failed executions", &|p| {
            p.execs.iter().filter(|e| e.failed).count().to_string()
        }),
        row("bytes over the wire", &|p| output::bytes(p.wire_bytes)),
        row("bytes reused (delta)", &|p| output::bytes(p.reused_bytes)),
        row("predictive transfers", &|p| {
            format!("{} ({})", p.prefetches, output::bytes(p.prefetched_bytes))
        }),
        row("  never read after", &|p| {
            output::bytes(p.prefetched_unread_bytes)
        }),
        row("cold reads: first use", &|p| p.cold.first_use.to_string()),
        row("  new version needed", &|p| p.cold.new_version.to_string()),
        row("  evicted before reuse", &|p| p.cold.evicted.to_string()),
        row("  predicted, not ready", &|p| p.cold.late.to_string()),
        row("evictions", &|p| p.evictions.to_string()),
        row("new versions", &|p| p.uploads.to_string()),
    ];
    output::table(&header, &rows)
}

fn phase_json(p: &PhaseResult) -> serde_json::Value {
    serde_json::json!({
        "policy": p.label,
        "executions": p.execs.len(),
        "warm_start_rate": warm_rate(p) / 100.0,
        "time_to_ready_ms": {
            "p50": percentile(&p.execs, 0.5),
            "p99": percentile(&p.execs, 0.99),
            "mean": mean(&p.execs),
        },
        "failed": p.execs.iter().filter(|e| e.failed).count(),
        "wire_bytes": p.wire_bytes,
        "reused_bytes": p.reused_bytes,
        "predictive_transfers": p.prefetches,
        "predictive_bytes": p.prefetched_bytes,
        "predictive_unread_bytes": p.prefetched_unread_bytes,
        "evictions": p.evictions,
        "new_versions": p.uploads,
        "cold_reads": p.cold,
        "seconds": p.seconds,
    })
}
