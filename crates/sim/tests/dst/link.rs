//! One agent's control plane, with faults. The agent is real; what `prewarm agent` runs in
//! `control.rs` over gRPC is done in-process here (and in `attach.rs`) against the
//! coordinator's own gRPC handlers (`Service`, the seam its fake-agent tests use), so each
//! message can be dropped, duplicated, or held back and delivered later in a shuffled
//! order: `Load`, `Invalidate` and `Retain` commands on the way in, acknowledgements and
//! inventory reports on the way out. Coordinator calls run on the coordinator's runtime, as
//! a network call would; the rest runs on the agent's, so a crash of either ends its side.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prewarm_agent::Agent;
use prewarm_coordinator::Service;
use prewarm_core::{ResourceId, Version};
use prewarm_proto::wire::coordinator_server::Coordinator as _;
use prewarm_proto::wire::{self, Command, TransferAck, command};
use tokio::runtime::Handle;
use tonic::Request;

use crate::rng::Rng;

/// The running coordinator as agents reach it (`None` while it is down).
pub type Reach = Arc<Mutex<Option<(Service, Handle)>>>;

/// Chances per thousand messages.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rates {
    /// Lost.
    pub drop: u32,
    /// Delivered twice.
    pub dup: u32,
    /// Held back until the next flush (which delivers in a shuffled order).
    pub delay: u32,
}

/// An acknowledgement the agent produced.
#[derive(Clone, Debug)]
pub struct AckSeen {
    /// The state.
    pub resource: String,
    /// Its version.
    pub version: u64,
    /// Succeeded by installing (not already held).
    pub fresh: bool,
    /// Bytes on the wire.
    pub wire: u64,
    /// The state's size.
    pub bytes: u64,
    /// A predictive transfer's.
    pub predictive: bool,
    /// Of a commanded load (not one the agent started itself: a refresh, a resume).
    pub commanded: bool,
    /// The coordinator took it (at least once): it refuses one whose transfer number is
    /// another capacity's transfer's (a number its predecessor gave out, say).
    pub accepted: bool,
}

/// What the link saw.
#[derive(Debug, Default)]
pub struct Stats {
    /// `Load` commands handed to the agent.
    pub started: u64,
    /// Of those, acknowledged (or failed) by the agent.
    pub finished: u64,
    /// Every acknowledgement produced, in order.
    pub acks: Vec<AckSeen>,
    /// Per resource, the newest version an `Invalidate` told the agent of.
    pub told: HashMap<ResourceId, Version>,
    /// Messages dropped, duplicated, delayed.
    pub dropped: u64,
    /// Duplicated.
    pub duplicated: u64,
    /// Delayed.
    pub delayed: u64,
    /// Attach sessions.
    pub sessions: u64,
}

enum Msg {
    In(Command),
    /// An acknowledgement and its index in the stats.
    Out(TransferAck, usize),
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Fate {
    Deliver,
    Drop,
    Twice,
    Later,
}

/// One agent's link to the coordinator.
pub struct Link {
    /// The agent.
    pub agent: Arc<Agent>,
    reach: Reach,
    handle: Handle,
    rates: Mutex<Rates>,
    calm: AtomicBool,
    rng: Mutex<Rng>,
    held: Mutex<Vec<Msg>>,
    /// Duplicate the next `Load` of this state, and that load's fresh acknowledgement.
    force: Mutex<Option<(String, u64)>>,
    /// Wakes the attach session to end it (a cut stream).
    pub(crate) brk: tokio::sync::Notify,
    /// Acknowledgements being sent now.
    sending: AtomicU64,
    /// What it saw.
    pub stats: Mutex<Stats>,
}

impl Link {
    /// Starts `agent`'s control loop on `handle` (the agent's runtime).
    pub fn start(
        agent: Arc<Agent>,
        reach: Reach,
        handle: Handle,
        rng: Rng,
        rates: Rates,
    ) -> Arc<Self> {
        let link = Arc::new(Link {
            agent,
            reach,
            handle: handle.clone(),
            rates: Mutex::new(rates),
            calm: AtomicBool::new(false),
            rng: Mutex::new(rng),
            held: Mutex::default(),
            force: Mutex::default(),
            brk: tokio::sync::Notify::new(),
            sending: AtomicU64::new(0),
            stats: Mutex::default(),
        });
        handle.spawn(crate::attach::run(link.clone()));
        link
    }

    /// Locks the stats.
    pub fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().expect("stats lock")
    }

    /// Message faults off (`true`) or back on.
    pub fn calm(&self, calm: bool) {
        self.calm.store(calm, Ordering::Relaxed);
    }

    /// Duplicates the next `Load` of `resource@version` and its fresh acknowledgement.
    pub fn force_duplicate(&self, resource: &str, version: u64) {
        *self.force.lock().expect("force lock") = Some((resource.to_owned(), version));
    }

    /// Breaks the attach stream (the agent reattaches, as after a network cut).
    pub fn break_stream(&self) {
        self.brk.notify_one();
    }

    /// Delivers what was held back, in a shuffled order.
    pub fn flush(self: &Arc<Self>) {
        let mut held = std::mem::take(&mut *self.held.lock().expect("held lock"));
        self.rng.lock().expect("rng lock").shuffle(&mut held);
        for m in held {
            let me = self.clone();
            self.handle.spawn(async move {
                match m {
                    Msg::In(c) => me.deliver(c),
                    Msg::Out(a, i) => {
                        me.call_ack(a, i).await;
                        me.sending.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            });
        }
    }

    /// Messages held back.
    pub fn holding(&self) -> usize {
        self.held.lock().expect("held lock").len()
    }

    /// Acknowledgements recorded and not yet delivered, dropped or held back.
    pub fn sending(&self) -> u64 {
        self.sending.load(Ordering::Acquire)
    }

    pub(crate) fn fate(&self) -> Fate {
        if self.calm.load(Ordering::Relaxed) {
            return Fate::Deliver;
        }
        let r = *self.rates.lock().expect("rates lock");
        let mut rng = self.rng.lock().expect("rng lock");
        let d = rng.below(1000) as u32;
        let fate = if d < r.drop {
            Fate::Drop
        } else if d < r.drop + r.dup {
            Fate::Twice
        } else if d < r.drop + r.dup + r.delay {
            Fate::Later
        } else {
            Fate::Deliver
        };
        let mut s = self.stats();
        match fate {
            Fate::Drop => s.dropped += 1,
            Fate::Twice => s.duplicated += 1,
            Fate::Later => s.delayed += 1,
            Fate::Deliver => {}
        }
        fate
    }

    pub(crate) fn coordinator(&self) -> Option<(Service, Handle)> {
        self.reach.lock().expect("reach lock").clone()
    }

    /// A command from the coordinator, through the faults.
    pub(crate) fn receive(self: &Arc<Self>, c: Command) {
        let forced = match &c.command {
            Some(command::Command::Load(l)) => {
                let f = self.force.lock().expect("force lock");
                f.as_ref()
                    .is_some_and(|(r, v)| *r == l.resource && *v == l.version)
            }
            _ => false,
        };
        if forced {
            self.deliver(c.clone());
            self.deliver(c);
            return;
        }
        match self.fate() {
            Fate::Deliver => self.deliver(c),
            Fate::Drop => {}
            Fate::Twice => {
                self.deliver(c.clone());
                self.deliver(c);
            }
            Fate::Later => self.held.lock().expect("held lock").push(Msg::In(c)),
        }
    }

    /// Hands a command to the agent, as `control.rs` does.
    fn deliver(self: &Arc<Self>, c: Command) {
        match c.command {
            Some(command::Command::Load(l)) => {
                self.stats().started += 1;
                self.handle.spawn(crate::attach::carry_out(self.clone(), l));
            }
            Some(command::Command::Invalidate(i)) => {
                if let (Ok(r), Some(v)) = (ResourceId::new(i.resource), Version::new(i.new_version))
                {
                    let mut s = self.stats();
                    let told = s.told.entry(r.clone()).or_insert(v);
                    *told = (*told).max(v);
                    drop(s);
                    self.agent.invalidate(r, v);
                }
            }
            Some(command::Command::Retain(k)) => {
                if let Ok((r, hint)) = prewarm_api::hint_of(&k) {
                    self.agent.retain(&r, &hint);
                    self.agent.metrics.hints.inc();
                }
            }
            Some(command::Command::Welcome(_)) | None => {}
        }
    }

    /// An acknowledgement on its way out, through the faults.
    pub(crate) async fn send_ack(self: &Arc<Self>, a: TransferAck) {
        self.sending.fetch_add(1, Ordering::AcqRel);
        let i = self.record(&a);
        let forced = {
            let mut f = self.force.lock().expect("force lock");
            let hit = a.ok
                && !a.already_held
                && f.as_ref()
                    .is_some_and(|(r, v)| *r == a.resource && *v == a.version);
            if hit {
                *f = None;
            }
            hit
        };
        let fate = if forced { Fate::Twice } else { self.fate() };
        match fate {
            Fate::Deliver => self.call_ack(a, i).await,
            Fate::Drop => {}
            Fate::Twice => {
                self.call_ack(a.clone(), i).await;
                self.call_ack(a, i).await;
            }
            Fate::Later => {
                self.held.lock().expect("held lock").push(Msg::Out(a, i));
                return; // still being sent: until it is flushed
            }
        }
        self.sending.fetch_sub(1, Ordering::AcqRel);
    }

    /// Records `a`; its index in the stats.
    fn record(&self, a: &TransferAck) -> usize {
        let seen = AckSeen {
            resource: a.resource.clone(),
            version: a.version,
            fresh: a.ok && !a.already_held,
            wire: a.wire_bytes,
            bytes: a.state_bytes,
            predictive: a.priority == wire::Priority::Predictive as i32,
            commanded: a.transfer_id != 0,
            accepted: false,
        };
        let mut s = self.stats();
        s.acks.push(seen);
        s.acks.len() - 1
    }

    /// Delivers acknowledgement number `i` to the coordinator, noting whether it took it.
    async fn call_ack(&self, a: TransferAck, i: usize) {
        if let Some((svc, h)) = self.coordinator() {
            let call = h.spawn(async move { svc.ack(Request::new(a)).await.is_ok() });
            if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(10), call).await {
                self.stats().acks[i].accepted = true;
            }
        }
    }
}
