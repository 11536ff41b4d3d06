//! Deterministic simulation with faults (issue 13 §1): a real coordinator (engine, book,
//! transfers, data plane) and three real agents (state space, installs, `ensure`) in one
//! process, driven by one seed through random steps — `ensure` with minimum versions,
//! staleness bounds and leases; the engine's predictive pushes; transfer requests; the same
//! load asked for several times; new versions, some landing mid-transfer; agent crashes
//! (mid-transfer, at random moments, idle) and restarts on the same directory; coordinator
//! restarts; control messages dropped, duplicated, delayed and reordered; store reads that
//! fail, come back corrupted or truncated; caches too small for what is asked. After every
//! step the invariants in `check.rs` are checked against the committed versions, and at the
//! end of a seed those in `drain.rs`.
//!
//! `cargo test -p prewarm-sim --test dst` runs the CI seeds; `PREWARM_DST_SEEDS=N` runs N
//! seeds (from `PREWARM_DST_FIRST`, default 1; `PREWARM_DST_JOBS` at a time, default 3);
//! `PREWARM_SEED=<n>` runs one, alone. A failing seed prints `PREWARM_SEED=<n>` and its step
//! log; the run stops there, or with `PREWARM_DST_KEEP_GOING=1` goes on and lists them all.
//! The schedule and the store's faults follow from the seed alone; the interleaving of
//! threads and sockets inside a step does not, so a replay repeats the same steps and
//! faults but may race differently (`PREWARM_DST_PROFILE=1` prints every seed's log and
//! timings).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod attach;
mod catalog;
mod check;
mod drain;
mod dup;
mod faulty;
mod link;
mod ops;
mod rng;
mod schedule;
mod steps;
mod tally;
mod world;

use std::time::Instant;

use schedule::Step;
use world::World;

/// Seeds `cargo test` runs.
const CI_SEEDS: u64 = 32;
/// Steps per seed.
const STEPS: usize = 30;
/// Seeds run at once.
const JOBS: u64 = 3;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

/// One seed, start to end; on failure the message and the step log.
async fn run(seed: u64) -> Result<World, (String, Vec<String>)> {
    let t0 = Instant::now();
    let mut w = World::build(seed).await.map_err(|e| (e, Vec::new()))?;
    let t1 = Instant::now();
    let out = steps(&mut w).await;
    let t2 = Instant::now();
    w.teardown().await;
    if std::env::var("PREWARM_DST_PROFILE").is_ok() {
        eprintln!(
            "seed {seed}: build {:?} steps {:?} teardown {:?}",
            t1 - t0,
            t2 - t1,
            t2.elapsed()
        );
        for l in &w.log {
            eprintln!("{l}");
        }
    }
    match out {
        Ok(()) => Ok(w),
        Err(e) => Err((e, std::mem::take(&mut w.log))),
    }
}

async fn steps(w: &mut World) -> Result<(), String> {
    w.check().await?;
    for i in 0..STEPS {
        let step = Step::draw(&mut w.rng, w.cat.res.len());
        w.note(format!("{i:>3} {step:?}"));
        let t = Instant::now();
        w.apply(step).await?;
        let t1 = Instant::now();
        w.check().await?;
        w.note(format!("    took {:?} + check {:?}", t1 - t, t1.elapsed()));
    }
    w.note("drain: faults healed, everything restarted and reattached".into());
    w.drain().await
}

/// Prints a failing seed's step log and the line that replays it.
fn report(seed: u64, e: &str, log: &[String]) {
    eprintln!("step log of seed {seed}:");
    for l in log {
        eprintln!("{l}");
    }
    eprintln!("PREWARM_SEED={seed} fails: {e}");
}

/// Runs `seeds`, `jobs` at a time (each seed is a world of its own; most of a seed's time is
/// spent waiting on its timeouts, not on the CPU). Stops at the first failure, or with
/// `keep_going` reports each and goes on; returns the counts and the failing seeds.
async fn run_all(seeds: Vec<u64>, jobs: usize, keep_going: bool) -> (tally::Tally, Vec<u64>) {
    let mut total = tally::Tally::default();
    let mut failed = Vec::new();
    let mut running = tokio::task::JoinSet::new();
    let mut next = seeds.into_iter();
    loop {
        while running.len() < jobs && (keep_going || failed.is_empty()) {
            let Some(seed) = next.next() else { break };
            running.spawn(async move { (seed, run(seed).await) });
        }
        let Some(done) = running.join_next().await else {
            return (total, failed);
        };
        match done.expect("a seed's task panicked") {
            (_, Ok(w)) => total.add(&w.tally, &w.faults.injected),
            (seed, Err((e, log))) => {
                report(seed, &e, &log);
                failed.push(seed);
            }
        }
    }
}

#[test]
fn random_steps_with_faults_keep_every_invariant() {
    let seeds: Vec<u64> = match env_u64("PREWARM_SEED") {
        Some(s) => vec![s],
        None => {
            let first = env_u64("PREWARM_DST_FIRST").unwrap_or(1);
            (first..first + env_u64("PREWARM_DST_SEEDS").unwrap_or(CI_SEEDS)).collect()
        }
    };
    let jobs = env_u64("PREWARM_DST_JOBS").unwrap_or(JOBS).max(1) as usize;
    let keep_going = std::env::var("PREWARM_DST_KEEP_GOING").is_ok();
    let n = seeds.len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t0 = Instant::now();
    let (total, failed) = rt.block_on(run_all(seeds, jobs, keep_going));
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{} seeds passed, {} failed, {jobs} at a time, in {secs:.1} s ({:.2} s per seed): {total:?}",
        total.seeds,
        failed.len(),
        secs / n as f64
    );
    assert!(
        failed.is_empty(),
        "failing seeds (PREWARM_SEED=<n> replays one): {failed:?}"
    );
}
