//! Work the harness starts and later collects: `ensure` calls on an agent (with a minimum
//! version, a staleness bound, a lease kept or released), transfer requests to the
//! coordinator, events for its engine. Each has a deadline: one still running past it is a
//! hang, which fails the seed. Each answer is checked when collected: an `ensure` answer
//! must be at or above the minimum asked for, not older than a version the agent was told
//! of when it promised not to serve stale ones, and its path (still leased) must hold the
//! committed bytes of the version it names.

use std::time::{Duration, Instant};

use prewarm_agent::{EnsureError, EnsureRequest, Ensured};
use prewarm_coordinator::{EventIn, EventOutcome};
use prewarm_core::{Event, Version};
use prewarm_proto::wire::{Priority, TransferAck, TransferRequest, VersionSpec, version_spec};
use tokio::task::JoinHandle;

use crate::catalog::digest;
use crate::world::{Kept, World};

/// How long an `ensure` waits on a miss (the answer must come within it).
const ENSURE_WAIT: Duration = Duration::from_secs(10);
/// Slack past an operation's own timeout before it counts as hung.
const SLACK: Duration = Duration::from_secs(10);

/// What an `ensure` promised.
pub struct Asked {
    node: usize,
    incarnation: u32,
    min: Option<Version>,
    /// Newest version the agent had been told of, when it must not serve older.
    not_below: Option<Version>,
    keep: bool,
}

/// A job in flight.
pub enum Job {
    /// An `ensure` on an agent.
    Ensure(Asked, JoinHandle<Result<Ensured, EnsureError>>),
    /// A transfer request to the coordinator.
    Transfer(JoinHandle<TransferAck>),
    /// An event for the engine.
    Event(JoinHandle<EventOutcome>),
}

/// One operation in flight.
pub struct Op {
    /// What it is, for the log.
    pub what: String,
    deadline: Instant,
    job: Job,
}

impl Op {
    fn finished(&self) -> bool {
        match &self.job {
            Job::Ensure(_, h) => h.is_finished(),
            Job::Transfer(h) => h.is_finished(),
            Job::Event(h) => h.is_finished(),
        }
    }
}

/// Awaits `h` until `deadline`: `None` when it is still running then.
async fn until<T>(
    h: JoinHandle<T>,
    deadline: Instant,
) -> Option<Result<T, tokio::task::JoinError>> {
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, h).await.ok()
}

impl World {
    /// Starts `ensure(resource i, min)` on agent `node`; `zero_stale` asks for no stale
    /// version at all. False when the agent is down.
    pub fn start_ensure(
        &mut self,
        node: usize,
        i: usize,
        min: Option<Version>,
        zero_stale: bool,
        keep: bool,
    ) -> bool {
        let resource = self.cat.res[i].id.clone();
        let n = &self.nodes[node];
        let Some(up) = &n.up else {
            return false;
        };
        let marked = resource.as_str().starts_with("m/");
        let not_below = (marked || zero_stale)
            .then(|| up.link.stats().told.get(&resource).copied())
            .flatten();
        let req = EnsureRequest {
            resource,
            min_version: min,
            timeout: ENSURE_WAIT,
            key: Some(format!("k{i}")),
            kind: None,
            max_stale: zero_stale.then_some(Duration::ZERO),
        };
        let what = format!(
            "ensure c{node} {} min {min:?} stale0 {zero_stale}",
            req.resource
        );
        let agent = up.agent.clone();
        let h = up.handle().spawn(async move { agent.ensure(req).await });
        let asked = Asked {
            node,
            incarnation: n.incarnation,
            min,
            not_below,
            keep,
        };
        self.ops.push(Op {
            what,
            deadline: Instant::now() + ENSURE_WAIT + SLACK,
            job: Job::Ensure(asked, h),
        });
        true
    }

    /// Asks the coordinator to load resource `i` (at `version`, else the newest) on `node`.
    pub fn start_transfer(
        &mut self,
        node: usize,
        i: usize,
        version: Option<Version>,
        on_demand: bool,
    ) -> bool {
        let Some((c, h)) = self.coordinator() else {
            return false;
        };
        let spec = version.map(|v| VersionSpec {
            spec: Some(version_spec::Spec::Exact(v.get())),
        });
        let priority = if on_demand {
            Priority::OnDemand
        } else {
            Priority::Predictive
        };
        let timeout = Duration::from_secs(3);
        let req = TransferRequest {
            capacity: format!("c{node}"),
            resource: self.cat.res[i].id.as_str().to_owned(),
            version: spec,
            priority: priority as i32,
            timeout_ms: timeout.as_millis() as u64,
        };
        let what = format!(
            "transfer {} {version:?} → c{node} ({priority:?})",
            req.resource
        );
        let h = h.spawn(async move { c.transfer(req).await });
        self.tally.transfers += 1;
        self.ops.push(Op {
            what,
            deadline: Instant::now() + timeout + SLACK,
            job: Job::Transfer(h),
        });
        true
    }

    /// An event of key `k` naming resource `i` (the engine places it and plans the moves).
    pub fn start_event(&mut self, key: u64, i: usize) -> bool {
        let Some((c, h)) = self.coordinator() else {
            return false;
        };
        let e = EventIn {
            ts: Some(self.clock.now()),
            event: Event {
                kind: "http".into(),
                key: format!("k{key}"),
                attrs: Default::default(),
                needs: vec![self.cat.res[i].id.clone()],
            },
            capacity: None,
        };
        let what = format!("event k{key} needs {}", self.cat.res[i].id);
        let h = h.spawn(async move { c.handle_event(&e, true).await });
        self.ops.push(Op {
            what,
            deadline: Instant::now() + SLACK,
            job: Job::Event(h),
        });
        true
    }

    /// Waits until the gate holds a read of the operation just started, or that operation
    /// ended without one (its state was held, or it failed first), for at most 300 ms.
    pub async fn wait_held(&mut self) {
        let t0 = Instant::now();
        let mut held = false;
        while t0.elapsed() < Duration::from_millis(300) {
            held = self.faults.holding();
            if held || self.ops.last().is_none_or(Op::finished) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.note(format!("  held at the store: {held}"));
    }

    /// Collects finished operations (with `all`, waits for every one), checking each
    /// answer; an operation past its deadline is a hang.
    pub async fn reap(&mut self, all: bool) -> Result<(), String> {
        let ops = std::mem::take(&mut self.ops);
        for op in ops {
            if !all && !op.finished() {
                if Instant::now() > op.deadline {
                    return Err(format!("hang: {} did not end within its deadline", op.what));
                }
                self.ops.push(op);
                continue;
            }
            let hung = || format!("hang: {} did not end within its deadline", op.what);
            match op.job {
                Job::Ensure(asked, h) => {
                    let r = until(h, op.deadline).await.ok_or_else(hung)?;
                    self.ensured(&op.what, asked, r).await?;
                }
                Job::Transfer(h) => match until(h, op.deadline).await.ok_or_else(hung)? {
                    Ok(ack) => {
                        self.tally.transfers_ok += u64::from(ack.ok);
                        self.answered_wire += ack.wire_bytes;
                        let how = if ack.ok {
                            format!("ok v{}", ack.version)
                        } else {
                            ack.error
                        };
                        self.note(format!("  {} → {how}", op.what));
                    }
                    Err(e) if e.is_panic() => return Err(format!("{} panicked: {e}", op.what)),
                    Err(_) => self.note(format!("  {} → ended with the coordinator", op.what)),
                },
                Job::Event(h) => match until(h, op.deadline).await.ok_or_else(hung)? {
                    Ok(o) => {
                        let at = o.placement.map(|p| p.capacity.to_string());
                        self.note(format!(
                            "  {} → {at:?}, {} moves",
                            op.what,
                            o.transfers.len()
                        ));
                    }
                    Err(e) if e.is_panic() => return Err(format!("{} panicked: {e}", op.what)),
                    Err(_) => {}
                },
            }
        }
        Ok(())
    }

    /// Checks an `ensure` answer against what was asked and what is committed.
    async fn ensured(
        &mut self,
        what: &str,
        asked: Asked,
        r: Result<Result<Ensured, EnsureError>, tokio::task::JoinError>,
    ) -> Result<(), String> {
        let e = match r {
            Ok(Ok(e)) => e,
            Ok(Err(EnsureError::Timeout { .. })) => {
                return Err(format!(
                    "hang: {what} timed out (the on-demand fetch never ended)"
                ));
            }
            Ok(Err(err)) => {
                self.tally.ensure_errors += 1;
                self.note(format!("  {what} → error: {err}"));
                return Ok(());
            }
            Err(j) if j.is_panic() => return Err(format!("{what} panicked: {j}")),
            Err(_) => return Ok(()), // the agent crashed
        };
        self.tally.ensured += 1;
        let v = Version::new(e.version).ok_or("version 0 answered")?;
        self.note(format!("  {what} → v{v} hit {}", e.hit));
        self.tally.promises[0] += u64::from(asked.min.is_some());
        self.tally.promises[1] += u64::from(asked.not_below.is_some());
        if asked.min.is_some_and(|m| v < m) {
            return Err(format!("{what} answered v{v}, below the minimum asked for"));
        }
        if let Some(told) = asked.not_below.filter(|t| v < *t) {
            return Err(format!(
                "{what} answered v{v}, stale: the agent had been told of v{told}"
            ));
        }
        let node = &self.nodes[asked.node];
        let same = node.up.is_some() && node.incarnation == asked.incarnation;
        let (Some(id), true) = (e.lease, same) else {
            return Ok(()); // crashed since (its leases went with it), or nothing leased
        };
        let resource =
            prewarm_core::ResourceId::new(e.resource.clone()).map_err(|x| x.to_string())?;
        let want = self.cat.reference(&resource, v).await?;
        let got = digest(&e.path).map_err(|x| {
            format!(
                "{what}: leased state at {} unreadable: {x}",
                e.path.display()
            )
        })?;
        if got != want {
            return Err(format!(
                "{what}: the bytes at {} differ from the committed v{v}",
                e.path.display()
            ));
        }
        let up = self.nodes[asked.node].up.as_mut().expect("checked above");
        if asked.keep {
            up.leases.push(Kept {
                resource,
                version: v,
                id,
            });
        } else {
            up.agent.release_lease(id);
        }
        Ok(())
    }
}
