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
use std::sync::Arc;
use std::time::Instant;

use prewarm_core::{HistoryRecord, Meter, Predictor};
use prewarm_engine::{Engine, EngineConfig, EventView};
use prewarm_predict::baselines::Markov;
use prewarm_predict::neural::Learned;
use prewarm_report::text;
use prewarm_sim::BenchFleet;
use serde::Serialize;

use crate::predict::{PredictBenchError, generated, model_or_untrained};

/// What `prewarm bench coordinator` measures.
#[derive(Clone, Debug)]
pub struct Settings {
    /// A trained GRU or Transformer directory (default: an untrained GRU 64/128).
    pub model: Option<PathBuf>,
    /// History whose events are replayed (default: a generated one, 64 keys over 512
    /// resources).
    pub history: Option<PathBuf>,
    /// Events to time per pipeline.
    pub events: usize,
    /// Capacities to place on.
    pub capacities: usize,
    /// Cache per capacity, bytes.
    pub cache_bytes: u64,
    /// Events per `POST /v1/events` body.
    pub batch: usize,
    /// Events through the pipelines so far, out of all three pipelines' (a progress display).
    pub meter: Arc<Meter>,
}

/// Why the benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorBenchError {
    /// The history or the model could not be had.
    #[error(transparent)]
    Input(#[from] PredictBenchError),
    /// A body could not be encoded.
    #[error("encoding a batch")]
    Encode(#[from] serde_json::Error),
    /// The coordinator refused a body.
    #[error("parsing a batch")]
    Parse(#[source] prewarm_coordinator::EventsError),
}

/// One pipeline's figures.
#[derive(Serialize)]
pub struct Row {
    pipeline: String,
    events: usize,
    events_per_s: f64,
    ingest_us: f64,
    predict_us: f64,
    plan_us: f64,
    observe_us: f64,
    transfers: usize,
}

/// What the benchmark measured.
pub struct Report {
    /// The learned model's pipeline, Markov's, and the one with no model.
    pub rows: Vec<Row>,
    batch: usize,
    capacities: usize,
}

fn bodies(records: &[HistoryRecord], batch: usize) -> Result<Vec<Vec<u8>>, serde_json::Error> {
    records
        .chunks(batch.max(1))
        .map(|c| {
            let events: Vec<serde_json::Value> = c
                .iter()
                .map(|r| serde_json::json!({"ts": r.ts, "event": r.event}))
                .collect();
            serde_json::to_vec(&events)
        })
        .collect()
}

/// The setup of one pipeline.
struct Setup<'a> {
    records: &'a [HistoryRecord],
    bodies: &'a [Vec<u8>],
    capacities: usize,
    cache_bytes: u64,
    meter: &'a Meter,
}

fn pipeline(
    name: &str,
    model: Option<Box<dyn Predictor>>,
    s: &Setup<'_>,
) -> Result<Row, CoordinatorBenchError> {
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
        let (events, _) =
            prewarm_coordinator::parse_events(body).map_err(CoordinatorBenchError::Parse)?;
        ingest += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let views: Vec<EventView<'_>> = events
            .iter()
            .map(|e| EventView {
                ts: e.ts.unwrap_or(0.0),
                event: &e.event,
                capacity: e.capacity.as_ref(),
                scope: None,
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
        s.meter.add(events.len() as u64);
    }
    let secs = t0.elapsed().as_secs_f64();
    s.meter
        .note(format!("{name}: {:.0} events/s", i as f64 / secs));
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

/// Runs the benchmark (blocking: call it off the async threads).
pub fn run(a: &Settings) -> Result<Report, CoordinatorBenchError> {
    let mut records = match &a.history {
        Some(h) => prewarm_import::read_history(h).map_err(PredictBenchError::from)?,
        None => generated(a.events).map_err(PredictBenchError::from)?,
    };
    records.truncate(a.events);
    let model = model_or_untrained(a.model.as_deref(), &records)?;
    let bodies = bodies(&records, a.batch)?;
    let setup = Setup {
        records: &records,
        bodies: &bodies,
        capacities: a.capacities,
        cache_bytes: a.cache_bytes,
        meter: &a.meter,
    };
    a.meter.set_total(3 * records.len() as u64);
    let name = model.config.arch.name().to_owned();
    let rows = vec![
        pipeline(&name, Some(Box::new(Learned::new(model, 1 << 20))), &setup)?,
        pipeline("markov", Some(Box::new(Markov::new(2, 3600.0))), &setup)?,
        pipeline("no model", None, &setup)?,
    ];
    Ok(Report {
        rows,
        batch: a.batch,
        capacities: a.capacities,
    })
}

impl Report {
    /// The terminal text.
    pub fn text(&self) -> String {
        let rows = &self.rows;
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
        format!(
            "{} events, {} per body, {} capacities, models on {} threads (RAYON_NUM_THREADS)\n{}",
            rows[0].events,
            self.batch,
            self.capacities,
            rayon_threads(),
            text::table(
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
        )
    }
}
