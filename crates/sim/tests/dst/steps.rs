//! The steps a seed is made of. Each step draws the same five numbers from the schedule's
//! generator whatever happens at run time, so a seed always names the same steps in the
//! same order; a step aimed at an agent that is down does nothing (and says so).

use std::time::Duration;

use prewarm_core::Version;

use crate::rng::Rng;
use crate::world::World;

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

impl World {
    /// Carries out one step.
    pub async fn apply(&mut self, step: Step) -> Result<(), String> {
        self.tally.steps += 1;
        match step {
            Step::Ensure {
                node,
                res,
                min,
                stale0,
                keep,
            } => {
                let r = &self.cat.res[res];
                let min = match min {
                    0 => None,
                    1 => Some(r.newest()),
                    2 => Some(r.versions[(stale0 as usize + keep as usize) % r.versions.len()]),
                    _ => Version::new(r.newest().get() + 1),
                };
                self.up_or_note(node, |w| w.start_ensure(node, res, min, stale0, keep));
            }
            Step::Release { node, pick } => {
                if let Some(up) = self.nodes[node]
                    .up
                    .as_mut()
                    .filter(|u| !u.leases.is_empty())
                {
                    let k = up.leases.remove((pick % up.leases.len() as u64) as usize);
                    up.agent.release_lease(k.id);
                    self.note(format!("  released {}@{}", k.resource, k.version));
                }
            }
            Step::Event { key, res } => {
                self.start_event(key, res);
            }
            Step::Transfer {
                node,
                res,
                older,
                on_demand,
            } => {
                let r = &self.cat.res[res];
                let v = older.then(|| r.versions[0]);
                self.start_transfer(node, res, v, on_demand);
            }
            Step::Duplicate {
                node,
                res,
                on_demand,
            } => self.duplicate(node, res, on_demand).await?,
            Step::Commit { res, edit } => self.commit(res, edit).await?,
            Step::CommitMidTransfer {
                node,
                res,
                pass,
                edit,
            } => {
                self.faults.arm(pass);
                if self.start_transfer(node, res, None, false) {
                    self.wait_held().await;
                }
                let out = self.commit(res, edit).await;
                self.faults.open();
                out?;
            }
            Step::CrashAgent { node, how, restart } => self.crash(node, how, restart).await?,
            Step::RestartAgent { node } => {
                if self.nodes[node].up.is_none() {
                    self.start_agent(node).await?;
                }
            }
            Step::RestartCoordinator { ms } => {
                self.crash_coordinator().await;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                self.start_coordinator().await?;
            }
            Step::BreakStream { node } => {
                if let Some(up) = &self.nodes[node].up {
                    up.link.break_stream();
                }
            }
            Step::Flush => self
                .nodes
                .iter()
                .filter_map(|n| n.up.as_ref())
                .for_each(|u| u.link.flush()),
            Step::Settle => self.settle().await?,
            Step::Tick { secs } => {
                self.clock.set(self.clock.now() + secs as f64);
                self.nodes
                    .iter()
                    .filter_map(|n| n.up.as_ref())
                    .for_each(|u| u.agent.expire_now());
            }
            Step::StoreFaults { per_mille } => self.faults.set_rate(per_mille),
            Step::CommitThenRead { node, res, edit } => {
                // Read where an older version is held (that agent is the one told), if any.
                let holds = |n: &crate::world::Node| {
                    n.up.as_ref().is_some_and(|u| {
                        let (held, _, _) = u.agent.inventory();
                        held.iter().any(|(h, _)| h.resource == self.cat.res[res].id)
                    })
                };
                let n = self.nodes.len();
                let node = (0..n)
                    .map(|k| (node + k) % n)
                    .find(|i| holds(&self.nodes[*i]))
                    .unwrap_or(node);
                self.commit(res, edit).await?;
                let stale0 = !self.cat.res[res].id.as_str().starts_with("m/");
                if self.told(node, res).await {
                    self.start_ensure(node, res, None, stale0, false);
                }
            }
        }
        Ok(())
    }

    /// Waits (300 ms at most) until agent `node` is told of resource `res`'s newest version;
    /// false when it is down (an agent holding no older version is never told).
    async fn told(&mut self, node: usize, res: usize) -> bool {
        let newest = self.cat.res[res].newest();
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_millis(300) {
            let Some(up) = &self.nodes[node].up else {
                return false;
            };
            if up.link.stats().told.get(&self.cat.res[res].id) >= Some(&newest) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.nodes[node].up.is_some()
    }

    fn up_or_note(&mut self, node: usize, f: impl FnOnce(&mut World) -> bool) {
        if !f(self) {
            self.note(format!("  c{node} is down"));
        }
    }

    async fn commit(&mut self, res: usize, edit: u64) -> Result<(), String> {
        let v = self.cat.commit(res, &mut Rng::new(edit)).await?;
        self.tally.commits += 1;
        self.note(format!("  committed {}@{v}", self.cat.res[res].id));
        Ok(())
    }

    async fn crash(&mut self, node: usize, how: Crash, restart: bool) -> Result<(), String> {
        if self.nodes[node].up.is_none() {
            self.note(format!("  c{node} is down"));
            return Ok(());
        }
        match how {
            Crash::Idle => {}
            Crash::Gated { res, pass } => {
                self.faults.arm(pass);
                if self.start_ensure(node, res, None, false, false) {
                    self.wait_held().await;
                }
            }
            Crash::Timed { res, ms } => {
                self.start_transfer(node, res, None, true);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        self.crash_agent(node).await;
        self.faults.open();
        if restart {
            self.start_agent(node).await?;
        }
        Ok(())
    }
}
