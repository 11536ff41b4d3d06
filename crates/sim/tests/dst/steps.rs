//! Carrying out the steps of the schedule (`schedule.rs`) on a world; a step aimed at an
//! agent that is down does nothing (and says so).

use std::time::Duration;

use prewarm_core::Version;

use crate::rng::Rng;
use crate::schedule::{Crash, Step};
use crate::world::World;

impl World {
    /// Carries out one step.
    pub async fn apply(&mut self, step: Step) -> Result<(), String> {
        self.tally.steps += 1;
        match step {
            Step::Ensure { .. }
            | Step::Release { .. }
            | Step::Event { .. }
            | Step::Transfer { .. } => {
                self.ask(step);
                Ok(())
            }
            Step::Duplicate {
                node,
                res,
                on_demand,
            } => self.duplicate(node, res, on_demand).await,
            Step::Commit { .. } | Step::CommitMidTransfer { .. } | Step::CommitThenRead { .. } => {
                self.new_version(step).await
            }
            _ => self.upset(step).await,
        }
    }

    /// What the application and the engine ask for: `ensure`, a lease released, an event,
    /// a transfer request.
    fn ask(&mut self, step: Step) {
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
                let v = older.then(|| self.cat.res[res].versions[0]);
                self.start_transfer(node, res, v, on_demand);
            }
            _ => unreachable!("not a request: {step:?}"),
        }
    }

    /// A new version: plain, landing mid-transfer, or followed by a read where an older
    /// one is held.
    async fn new_version(&mut self, step: Step) -> Result<(), String> {
        match step {
            Step::Commit { res, edit } => self.commit(res, edit).await,
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
                out
            }
            Step::CommitThenRead { node, res, edit } => {
                let node = self.holder_of(res, node).unwrap_or(node);
                self.commit(res, edit).await?;
                let stale0 = !self.cat.res[res].id.as_str().starts_with("m/");
                if self.told(node, res).await {
                    self.start_ensure(node, res, None, stale0, false);
                }
                Ok(())
            }
            _ => unreachable!("not a new version: {step:?}"),
        }
    }

    /// Crashes, restarts, cut streams, held messages, the clock, the store's faults.
    async fn upset(&mut self, step: Step) -> Result<(), String> {
        match step {
            Step::CrashAgent { node, how, restart } => self.crash(node, how, restart).await?,
            Step::RestartAgent { node } if self.nodes[node].up.is_none() => {
                self.start_agent(node).await?;
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
            Step::Flush => self.running().for_each(|u| u.link.flush()),
            Step::Settle => self.settle().await?,
            Step::Tick { secs } => {
                self.clock.set(self.clock.now() + secs as f64);
                self.running().for_each(|u| u.agent.expire_now());
            }
            Step::StoreFaults { per_mille } => self.faults.set_rate(per_mille),
            _ => {}
        }
        Ok(())
    }

    /// The agents running.
    fn running(&self) -> impl Iterator<Item = &crate::world::Up> {
        self.nodes.iter().filter_map(|n| n.up.as_ref())
    }

    /// The first agent from `from` on holding a version of resource `res` (that one is
    /// told of the next).
    fn holder_of(&self, res: usize, from: usize) -> Option<usize> {
        let n = self.nodes.len();
        (0..n).map(|k| (from + k) % n).find(|i| {
            self.nodes[*i].up.as_ref().is_some_and(|u| {
                let (held, _, _) = u.agent.inventory();
                held.iter().any(|(h, _)| h.resource == self.cat.res[res].id)
            })
        })
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
