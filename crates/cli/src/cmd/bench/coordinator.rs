//! `prewarm bench coordinator`: events per second through the coordinator's decision
//! pipeline, in-process, as `POST /v1/events` runs it — JSON ingest of batched bodies
//! (`prewarm_coordinator::parse_events`), the model's `predict_batch` for the body (a learned
//! model spreads it over the cores), placement among the capacities and the planner against
//! each one's holdings (`prewarm-engine`) event by event, plus `observe_batch` of the body's
//! history records as they come back (agents send theirs in batches). Peers in the same
//! run: the same pipeline with the Markov baseline, and with no model (ingest + placement
//! only).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use prewarm_core::{CapacityId, HistoryRecord, ResourceId, Version};
use prewarm_engine::planner::{Target, Want};
use prewarm_engine::{Planner, place};
use prewarm_predict::baselines::Markov;
use prewarm_predict::neural::train::untrained;
use prewarm_predict::neural::{Learned, Model};
use prewarm_predict::{Context, Predictor};
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

/// One capacity as the planner sees it.
struct Cap {
    held: HashSet<ResourceId>,
    used: u64,
}

impl Target for Cap {
    fn held(&self, r: &ResourceId) -> Option<Version> {
        self.held
            .contains(r)
            .then(|| Version::new(1).expect("1 is a version"))
    }
    fn in_flight(&self, _: &ResourceId) -> bool {
        false
    }
    fn free_bytes(&self) -> u64 {
        (64u64 << 30).saturating_sub(self.used)
    }
    fn evictable_bytes(&self) -> u64 {
        self.used
    }
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

fn pipeline(
    name: &str,
    mut model: Option<Box<dyn Predictor>>,
    records: &[HistoryRecord],
    bodies: &[Vec<u8>],
    caps: &[CapacityId],
) -> anyhow::Result<Row> {
    let planner = Planner::default();
    let sizes: HashMap<&ResourceId, u64> = records
        .iter()
        .flat_map(|r| &r.reads)
        .map(|r| (&r.resource, r.bytes.max(1)))
        .collect();
    let mut state: Vec<Cap> = caps
        .iter()
        .map(|_| Cap {
            held: HashSet::new(),
            used: 0,
        })
        .collect();
    let (mut ingest, mut predict, mut plan, mut observe) = (0.0, 0.0, 0.0, 0.0);
    let mut transfers = 0;
    let mut i = 0;
    let t0 = Instant::now();
    for body in bodies {
        let t = Instant::now();
        let (events, _) = prewarm_coordinator::parse_events(body).context("parsing a batch")?;
        ingest += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let ctxs: Vec<Context<'_>> = events
            .iter()
            .map(|e| Context {
                ts: e.ts.unwrap_or(0.0),
                event: &e.event,
            })
            .collect();
        let all = match model.as_mut() {
            Some(m) => m.predict_batch(&ctxs, 5),
            None => vec![Vec::new(); events.len()],
        };
        predict += t.elapsed().as_secs_f64();
        for (e, preds) in events.iter().zip(all) {
            let t1 = Instant::now();
            let wants: Vec<Want> = preds
                .iter()
                .map(|p| Want {
                    resource: p.resource.clone(),
                    probability: p.probability,
                    version: p.version,
                    latest: Version::new(1).expect("1 is a version"),
                    bytes: sizes.get(&p.resource).copied().unwrap_or(1 << 20),
                })
                .collect();
            let predicted: Vec<(ResourceId, f64)> = wants
                .iter()
                .map(|w| (w.resource.clone(), w.probability))
                .collect();
            let idx = |c: &CapacityId| caps.iter().position(|x| x == c).unwrap_or(0);
            let placed = place(
                &e.event.key,
                None,
                caps,
                |c, r| state[idx(c)].held.contains(r),
                &predicted,
            );
            let cap = placed.map_or(0, |p| idx(&p.capacity));
            let decided = planner.plan(&wants, &state[cap], 0);
            transfers += decided.len();
            for d in decided {
                state[cap].used += d.bytes;
                state[cap].held.insert(d.resource);
            }
            plan += t1.elapsed().as_secs_f64();
        }
        // The executions' history records come back as a batch too (agents send theirs
        // every 200 ms).
        let t = Instant::now();
        if let Some(m) = model.as_mut() {
            m.observe_batch(&records[i..i + events.len()]);
        }
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
    let caps: Vec<CapacityId> = (0..a.capacities.max(1))
        .map(|i| CapacityId::new(format!("cap-{i}")))
        .collect::<Result<_, _>>()?;
    let bodies = bodies(&records, a.batch)?;
    let name = model.config.arch.name().to_owned();
    let rows = tokio::task::block_in_place(|| -> anyhow::Result<Vec<Row>> {
        Ok(vec![
            pipeline(
                &name,
                Some(Box::new(Learned::new(model, 1 << 20))),
                &records,
                &bodies,
                &caps,
            )?,
            pipeline(
                "markov",
                Some(Box::new(Markov::new(2, 3600.0))),
                &records,
                &bodies,
                &caps,
            )?,
            pipeline("no model", None, &records, &bodies, &caps)?,
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
