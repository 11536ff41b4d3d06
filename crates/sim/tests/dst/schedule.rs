//! The schedule: the steps a seed is made of. Each step draws the same five numbers from
//! the schedule's generator whatever happens at run time, so a seed always names the same
//! steps in the same order (what they meet at run time may differ; see `main.rs`).

use crate::rng::Rng;

/// How an agent crash is placed.
#[derive(Clone, Copy, Debug)]
pub enum Crash {
    /// Between steps (whatever background work it has is cut).
    Idle,
    /// While a transfer of a state to it is held at the store after `pass` pack reads.
    Gated { res: usize, pass: u32 },
    /// `ms` after a transfer to it starts (lands wherever it is then).
    Timed { res: usize, ms: u64 },
}

/// One step.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// `ensure` with a minimum (none, the newest, an older one, one past the newest), maybe
    /// no staleness at all, the lease kept or released.
    Ensure {
        node: usize,
        res: usize,
        min: u64,
        stale0: bool,
        keep: bool,
    },
    /// Releases one lease the harness holds.
    Release { node: usize, pick: u64 },
    /// An event naming a state: the engine places it and pushes what is missing.
    Event { key: u64, res: usize },
    /// A transfer request (the newest or an older version).
    Transfer {
        node: usize,
        res: usize,
        older: bool,
        on_demand: bool,
    },
    /// The same load asked for several times at once (see `dup.rs`).
    Duplicate {
        node: usize,
        res: usize,
        on_demand: bool,
    },
    /// A new version.
    Commit { res: usize, edit: u64 },
    /// A new version committed while a transfer of the state is held at the store.
    CommitMidTransfer {
        node: usize,
        res: usize,
        pass: u32,
        edit: u64,
    },
    /// An agent crash, restarted at once or left down.
    CrashAgent {
        node: usize,
        how: Crash,
        restart: bool,
    },
    /// A crashed agent started again on its directory.
    RestartAgent { node: usize },
    /// The coordinator crashed and started again (down `ms`).
    RestartCoordinator { ms: u64 },
    /// An agent's attach stream cut; it reattaches.
    BreakStream { node: usize },
    /// Messages held back are delivered, shuffled.
    Flush,
    /// Everything in flight is let finish.
    Settle,
    /// The clock moves on `secs`; keep-alives run out.
    Tick { secs: u64 },
    /// The store's read fault rate changes.
    StoreFaults { per_mille: u32 },
    /// A new version, then (once the agent is told, or after 300 ms) an `ensure` of it that
    /// must not be answered with an older version: the agent promised not to serve a stale
    /// one (`max_stale` 0, or a `mark_stale` resource).
    CommitThenRead { node: usize, res: usize, edit: u64 },
}

const WEIGHTS: [u64; 16] = [25, 6, 12, 12, 4, 6, 5, 6, 4, 3, 4, 5, 4, 5, 4, 6];

impl Step {
    /// The next step of the schedule (`n` resources, 3 agents).
    pub fn draw(rng: &mut Rng, n: usize) -> Step {
        let mut k = rng.below(WEIGHTS.iter().sum());
        let (node, res, x, y) = (rng.index(3), rng.index(n), rng.next_u64(), rng.next_u64());
        let kind = WEIGHTS.iter().position(|w| {
            k < *w || {
                k -= w;
                false
            }
        });
        match kind.expect("k below the sum") {
            0 => Step::Ensure {
                node,
                res,
                min: x % 4,
                stale0: y % 4 == 0,
                keep: y % 3 == 0,
            },
            1 => Step::Release { node, pick: x },
            2 => Step::Event { key: x % 4, res },
            3 => Step::Transfer {
                node,
                res,
                older: x % 3 == 0,
                on_demand: y % 2 == 0,
            },
            4 => Step::Duplicate {
                node,
                res,
                on_demand: x % 2 == 0,
            },
            5 => Step::Commit { res, edit: x },
            6 => Step::CommitMidTransfer {
                node,
                res,
                pass: (y % 4) as u32,
                edit: x,
            },
            7 => {
                let how = match x % 3 {
                    0 => Crash::Idle,
                    1 => Crash::Gated {
                        res,
                        pass: (y % 6) as u32,
                    },
                    _ => Crash::Timed { res, ms: y % 40 },
                };
                Step::CrashAgent {
                    node,
                    how,
                    restart: x % 5 < 3,
                }
            }
            8 => Step::RestartAgent { node },
            9 => Step::RestartCoordinator { ms: x % 50 },
            10 => Step::BreakStream { node },
            11 => Step::Flush,
            12 => Step::Settle,
            13 => Step::Tick { secs: 1 + x % 400 },
            14 => Step::StoreFaults {
                per_mille: [0, 20, 100, 300][(x % 4) as usize],
            },
            _ => Step::CommitThenRead { node, res, edit: x },
        }
    }
}
