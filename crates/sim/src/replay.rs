//! One replay of a history under one policy: build the policy's engine, run the event loop,
//! turn the tallies into a [`SimReport`].

use prewarm_core::{HistoryRecord, Meter};
use prewarm_engine::Engine;

use crate::retune::Retuner;
use crate::run::{BUCKETS, Ev, Sim};
use crate::{DecisionLog, Policy, SimConfig, SimReport};

/// Replays `records` (time-ordered) under `policy`.
pub fn replay(records: &[HistoryRecord], policy: Policy, cfg: &SimConfig) -> SimReport {
    run(records, policy, cfg, false, &Meter::new()).0
}

/// [`replay`], counting on `meter` the executions replayed out of `records.len()`.
pub fn replay_metered(
    records: &[HistoryRecord],
    policy: Policy,
    cfg: &SimConfig,
    meter: &Meter,
) -> SimReport {
    meter.set_total(records.len() as u64);
    run(records, policy, cfg, false, meter).0
}

/// [`replay_metered`], the settings re-learned while it runs by `retuner` (as the
/// coordinator re-learns them between retraining rounds).
pub fn replay_retuned(
    records: &[HistoryRecord],
    policy: Policy,
    cfg: &SimConfig,
    meter: &Meter,
    retuner: &mut Retuner<'_>,
) -> SimReport {
    meter.set_total(records.len() as u64);
    run_full(records, policy, cfg, false, meter, Some(retuner)).0
}

/// [`replay`], also returning whether each counted execution started warm, in execution
/// order (the same order under every policy and setting of the same records, so two runs
/// can be compared execution by execution, as [`crate::tune`] does).
pub fn replay_paired(
    records: &[HistoryRecord],
    policy: Policy,
    cfg: &SimConfig,
) -> (SimReport, Vec<bool>) {
    let (r, _, warm) = run_full(records, policy, cfg, false, &Meter::new(), None);
    (r, warm)
}

/// [`replay`], also returning every decision made, in order.
pub fn replay_logged(
    records: &[HistoryRecord],
    policy: Policy,
    cfg: &SimConfig,
) -> (SimReport, DecisionLog) {
    let (r, log) = run(records, policy, cfg, true, &Meter::new());
    (r, log.unwrap_or_default())
}

fn run(
    records: &[HistoryRecord],
    policy: Policy,
    cfg: &SimConfig,
    logged: bool,
    meter: &Meter,
) -> (SimReport, Option<DecisionLog>) {
    let (r, log, _) = run_full(records, policy, cfg, logged, meter, None);
    (r, log)
}

/// The replay: its report, its decisions (when `logged`) and each counted execution's warm
/// start.
fn run_full(
    records: &[HistoryRecord],
    policy: Policy,
    cfg: &SimConfig,
    logged: bool,
    meter: &Meter,
    mut retuner: Option<&mut Retuner<'_>>,
) -> (SimReport, Option<DecisionLog>, Vec<bool>) {
    let name = policy.name.clone();
    let mut policy = policy;
    let mut retrainer = policy.retrainer.take();
    let (ec, model) = policy.engine_parts(cfg, records);
    let rule = ec.rule;
    let mut engine = Engine::new(ec, model);
    let mut sim = Sim::new(records, cfg, rule);
    if logged {
        sim.log = Some(DecisionLog::default());
    }
    // Events are pushed lazily (one ahead) to keep the heap small.
    if !records.is_empty() {
        sim.push(records[0].ts - cfg.lead_s, Ev::Event(0));
    }
    while let Some((t, ev)) = sim.pop() {
        match ev {
            Ev::Event(i) => {
                if i + 1 < records.len() {
                    sim.push(records[i + 1].ts - cfg.lead_s, Ev::Event(i + 1));
                }
                // The execution is queued before the decision's keep-alive timers: with no
                // lead a timer may run out at the execution's own start, and the execution
                // must read what was kept for it before the timer drops it.
                sim.push(records[i].ts.max(t), Ev::Exec(i));
                sim.on_event(&mut engine, i, t);
            }
            Ev::Exec(i) => {
                sim.on_exec(&mut engine, i, t);
                meter.add(1);
                // Executions are observed in time order: records[..=i] is what agents reported.
                if let Some(p) = retrainer.as_mut().and_then(|r| r.after(&records[..=i])) {
                    engine.replace_model(p);
                }
                if let Some(s) = retuner.as_mut().and_then(|r| r.after(&records[..=i])) {
                    engine.retune(s.link_price, s.spread);
                }
            }
            Ev::Release(cap, r) => sim.on_release(cap, r, t),
            Ev::Expire(cap, r) => sim.on_expire(cap, r, t),
            Ev::Prewarm(pw) => sim.on_prewarm(&mut engine, pw, t),
        }
    }
    let end = records.last().map_or(0.0, |r| r.ts);
    sim.fleet.finish(end);
    let log = sim.log.take();
    let warm = sim.tally.ttr_ms.iter().map(|w| *w <= 0.0).collect();
    (report(name, &sim), log, warm)
}

fn report(policy: String, sim: &Sim<'_>) -> SimReport {
    let tl = &sim.tally;
    let executions = tl.ttr_ms.len() as u64;
    let mean = if executions == 0 {
        0.0
    } else {
        tl.ttr_ms.iter().sum::<f64>() / executions as f64
    };
    let mut sorted = tl.ttr_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let width = (sim.span / BUCKETS as f64).max(1e-9);
    let caps = &sim.fleet.caps;
    SimReport {
        policy,
        executions,
        warm: tl.warm,
        warm_rate: if executions == 0 {
            0.0
        } else {
            tl.warm as f64 / executions as f64
        },
        ready_byte_share: if tl.read_bytes == 0 {
            0.0
        } else {
            tl.ready_bytes as f64 / tl.read_bytes as f64
        },
        ttr_p50_ms: prewarm_core::percentile(&sorted, 0.5),
        ttr_p99_ms: prewarm_core::percentile(&sorted, 0.99),
        ttr_mean_ms: mean,
        bytes: tl.bytes_on_demand + tl.bytes_predictive,
        bytes_on_demand: tl.bytes_on_demand,
        bytes_predictive: tl.bytes_predictive,
        wasted_bytes: caps.iter().map(|c| c.wasted).sum::<u64>()
            + caps
                .iter()
                .flat_map(|c| c.entries.values())
                .filter(|e| e.predictive && !e.read)
                .map(|e| e.bytes)
                .sum::<u64>(),
        memory_gb_s: caps.iter().map(|c| c.mem_byte_s).sum::<f64>() / 1e9,
        evictions: caps.iter().map(|c| c.evictions).sum(),
        oracle_share: None,
        over_time: tl
            .over_time
            .iter()
            .enumerate()
            .map(|(i, (n, w))| {
                let rate = if *n == 0 { 0.0 } else { *w as f64 / *n as f64 };
                (sim.t0 + i as f64 * width, rate, *n)
            })
            .collect(),
        ttr_percentiles_ms: (0..=100)
            .map(|q| prewarm_core::percentile(&sorted, f64::from(q) / 100.0))
            .collect(),
    }
}
