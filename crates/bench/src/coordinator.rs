//! `prewarm bench coordinator`: events per second through the coordinator's decision
//! pipeline, in-process, as `POST /v1/events` runs it — JSON ingest of batched bodies
//! (`prewarm_coordinator::parse_events`), the engine's `predict` for the body (a learned
//! model spreads it over the cores), the engine's `decide` event by event (placement among
//! holders, the priced planner against the fleet's caches), and `observe` of the body's
//! history records as they come back (agents send theirs in batches). The fleet is the
//! replay's model of one (`prewarm_sim::BenchFleet`: transfers land at once). Peers in the
//! same run: the same pipeline with the Markov baseline, and with no model (placement and
//! keep-alive only).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use prewarm_core::{HistoryRecord, Predictor};
use prewarm_engine::{Engine, EngineConfig, EventView};
use prewarm_predict::baselines::Markov;
use prewarm_predict::neural::train::untrained;
use prewarm_predict::neural::{Learned, Model};
use prewarm_sim::BenchFleet;
use serde::Serialize;

use super::predict::generated;
use crate::cmd::read_history;
use crate::output;

/// Arguments of `prewarm bench coordinator`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A trained GRU or Transformer directory (default: an untrained GRU 64/128).
    #[arg(long)]
    model: Option<PathBuf>,
    /// History whose events are replayed (default: a generated one, 64 keys over 512
    /// resources).
    #[arg(long)]
    history: Option<PathBuf>,
    /// Events to time per pipeline.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Capacities to place on.
    #[arg(long, default_value_t = 16)]
    capacities: usize,
    /// Cache per capacity.
    #[arg(long, default_value = "64GiB")]
    cache_size: prewarm_core::ByteSize,
    /// Events per `POST /v1/events` body.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    pipeline: String,
    events: usize,
    events_per_s: f64,
    ingest_us: f64,
    predict_us: f64,
    plan_us: f64,
    observe_us: f64,
    transfers: usize,
}

fn bodies(records: &[HistoryRecord], batch: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    records
        .chunks(batch.max(1))
        .map(|c| {
            let events: Vec<serde_json::Value> = c
                .iter()
                .map(|r| serde_json::json!({"ts": r.ts, "event": r.event}))
                .collect();
            Ok(serde_json::to_vec(&events)?)
        })
        .collect()
}

/// The setup of one pipeline.
struct Setup<'a> {
    records: &'a [HistoryRecord],
    bodies: &'a [Vec<u8>],
    capacities: usize,
    cache_bytes: u64,
}

fn pipeline(name: &str, model: Option<Box<dyn Predictor>>, s: &Setup<'_>) -> anyhow::Result<Row> {
    let family = if model.is_some() { "model" } else { "lru" };
    let (rule, keep) = prewarm_engine::rules_for(family, f64::INFINITY);
    let mut engine = Engine::new(
        EngineConfig {
            rule,
            keep,
            ..EngineConfig::default()
        },
        model,
    );
    let mut fleet = BenchFleet::new(s.records, s.capacities, s.cache_bytes, rule, 1 << 20);
    let (mut ingest, mut predict, mut plan, mut observe) = (0.0, 0.0, 0.0, 0.0);
    let mut transfers = 0;
    let mut i = 0;
    let t0 = Instant::now();
    for body in s.bodies {
        let t = Instant::now();
        let (events, _) = prewarm_coordinator::parse_events(body).context("parsing a batch")?;
        ingest += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let views: Vec<EventView<'_>> = events
            .iter()
            .map(|e| EventView {
                ts: e.ts.unwrap_or(0.0),
                event: &e.event,
                capacity: e.capacity.as_ref(),
            })
            .collect();
        let all = engine.predict(&views);
        predict += t.elapsed().as_secs_f64();
        let mut reported: Vec<HistoryRecord> = s.records[i..i + events.len()].to_vec();
        for ((v, preds), rec) in views.iter().zip(all).zip(&mut reported) {
            let t1 = Instant::now();
            let d = engine.decide(v, &preds, fleet.catalog(), fleet.fleet(), v.ts);
            transfers += fleet.apply(&d, v.ts);
            rec.capacity = d.placement.map(|p| p.capacity);
            plan += t1.elapsed().as_secs_f64();
        }
        // The executions' history records come back as a batch too (agents send theirs
        // every 200 ms).
        let t = Instant::now();
        let obs = engine.observe(&reported, fleet.fleet());
        fleet.hints(&obs.hints);
        observe += t.elapsed().as_secs_f64();
        i += events.len();
    }
    let secs = t0.elapsed().as_secs_f64();
    let per = |x: f64| x / i.max(1) as f64 * 1e6;
    Ok(Row {
        pipeline: name.into(),
        events: i,
        events_per_s: i as f64 / secs,
        ingest_us: per(ingest),
        predict_us: per(predict),
        plan_us: per(plan),
        observe_us: per(observe),
        transfers,
    })
}

/// Threads a learned model's batches run on (rayon's rule: RAYON_NUM_THREADS, else cores).
fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs the benchmark.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let mut records = match &a.history {
        Some(h) => read_history(h)?,
        None => generated(a.events)?,
    };
    records.truncate(a.events);
    let model = match &a.model {
        Some(dir) => Model::load(dir).with_context(|| format!("loading {}", dir.display()))?,
        None => untrained(&records, prewarm_predict::neural::Arch::GRU, 1)
            .context("building the model")?,
    };
    let bodies = bodies(&records, a.batch)?;
    let setup = Setup {
        records: &records,
        bodies: &bodies,
        capacities: a.capacities,
        cache_bytes: a.cache_size.0,
    };
    let name = model.config.arch.name().to_owned();
    let rows = tokio::task::block_in_place(|| -> anyhow::Result<Vec<Row>> {
        Ok(vec![
            pipeline(&name, Some(Box::new(Learned::new(model, 1 << 20))), &setup)?,
            pipeline("markov", Some(Box::new(Markov::new(2, 3600.0))), &setup)?,
            pipeline("no model", None, &setup)?,
        ])
    })?;
    if a.json {
        output::json(&rows)?;
    } else {
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.pipeline.clone(),
                    format!("{:.0}", r.events_per_s),
                    format!("{:.2}", r.ingest_us),
                    format!("{:.2}", r.predict_us),
                    format!("{:.2}", r.plan_us),
                    format!("{:.2}", r.observe_us),
                    r.transfers.to_string(),
                ]
            })
            .collect();
        println!(
            "{} events, {} per body, {} capacities, models on {} threads (RAYON_NUM_THREADS)",
            rows[0].events,
            a.batch,
            a.capacities,
            rayon_threads()
        );
        println!(
            "{}",
            output::table(
                &[
                    "pipeline",
                    "events/s",
                    "ingest µs",
                    "predict µs",
                    "place+plan µs",
                    "observe µs",
                    "transfers"
                ],
                &body
            )
        );
    }
    Ok(0)
}
