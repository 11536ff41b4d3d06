//! What the coordinator knows: attached capacities (their command streams, typed inventories,
//! application addresses, and a mirror of each one's eviction book that the engine prices
//! displacement with), which capacities hold which resources (an index, so placement never
//! scans the fleet), predictive transfers under way, transfers awaiting acknowledgement,
//! recent transfers. Rebuilt from the agents' attach and report messages after a restart:
//! nothing here needs persisting.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use prewarm_core::{CapacityId, ResourceId, Scope, Version};
use prewarm_engine::{CacheBook, Hint, Rule};
use prewarm_proto::wire::{Command, Inventory, TransferAck};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// Recent transfers kept for `status`.
pub const RECENT: usize = 256;

/// Hints kept for states on their way, per capacity (the agent keeps as many).
pub const EARLY_HINTS: usize = 4096;

/// A capacity's command stream.
pub type CommandSender = mpsc::Sender<Result<Command, Status>>;

/// One held state, typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldState {
    /// Its size.
    pub bytes: u64,
    /// An execution holds a lease on it.
    pub leased: bool,
}

/// One capacity.
pub struct Cap {
    /// Its command stream; `None` while disconnected.
    pub tx: Option<CommandSender>,
    /// Attach counter value of the current stream (an old stream's end must not disconnect a
    /// newer one).
    pub session: u64,
    /// The application API's address.
    pub ensure_addr: String,
    /// Last reported inventory, as reported (for `status`).
    pub inventory: Inventory,
    /// The same, typed: (resource, version) → state.
    pub held: BTreeMap<(ResourceId, Version), HeldState>,
    /// Budget and bytes in use, as last reported.
    pub budget: u64,
    /// Bytes in use.
    pub used: u64,
    /// Mirror of the agent's eviction book (uses from its history, hints sent to it).
    pub cache: CacheBook<ResourceId>,
    /// Hints for states on their way (applied when they are reported held, as the agent
    /// applies them when they are installed).
    pub early_hints: HashMap<ResourceId, Hint>,
    /// When it attached, Unix ms.
    pub attached_unix_ms: u64,
    /// Per resource, the newest version this stream was told of (`Invalidate`).
    pub told: HashMap<ResourceId, Version>,
    /// The resources its agent's token may name: the only states placed, moved or kept
    /// here (`Scope::All` for an unscoped token).
    pub scope: Scope,
}

impl Cap {
    /// A capacity that just attached with `inventory`.
    pub fn new(
        tx: CommandSender,
        session: u64,
        ensure_addr: String,
        rule: Rule,
        attached_unix_ms: u64,
    ) -> Self {
        Self {
            tx: Some(tx),
            session,
            ensure_addr,
            inventory: Inventory::default(),
            held: BTreeMap::new(),
            budget: 0,
            used: 0,
            cache: CacheBook::new(rule, 0),
            early_hints: HashMap::new(),
            attached_unix_ms,
            told: HashMap::new(),
            scope: Scope::All,
        }
    }

    /// The newest version of `resource` it holds.
    pub fn newest(&self, resource: &ResourceId) -> Option<Version> {
        self.held
            .range((resource.clone(), Version::FIRST)..)
            .take_while(|((r, _), _)| r == resource)
            .map(|((_, v), _)| *v)
            .last()
    }

    /// Whether it holds exactly `version` of `resource`.
    pub fn holds(&self, resource: &ResourceId, version: Version) -> bool {
        self.held.contains_key(&(resource.clone(), version))
    }

    /// Records a hint sent to the agent for `resource`.
    pub fn hint(&mut self, resource: &ResourceId, hint: Hint) {
        if self.cache.contains(resource) {
            self.cache.hint(resource, hint);
        } else {
            if self.early_hints.len() >= EARLY_HINTS {
                self.early_hints.clear();
            }
            self.early_hints.insert(resource.clone(), hint);
        }
    }

    /// Whether the newest held version of `resource` may be evicted (held, not leased).
    pub fn evictable(&self, resource: &ResourceId) -> bool {
        self.newest(resource)
            .and_then(|v| self.held.get(&(resource.clone(), v)))
            .is_some_and(|h| !h.leased)
    }
}

/// A transfer waiting for its acknowledgement.
pub struct Waiting {
    /// The capacity its `Load` went to.
    pub capacity: CapacityId,
    /// The state it asked for.
    pub resource: ResourceId,
    /// Its version.
    pub version: Version,
    /// Who waits for the answer.
    pub waiter: oneshot::Sender<TransferAck>,
}

impl Waiting {
    /// Whether `ack` answers this transfer: it names the same state. (Transfer numbers start
    /// at 1 in every coordinator process: an agent's acknowledgement of a load its
    /// predecessor sent can carry the number of one of this process's transfers.)
    pub fn answered_by(&self, ack: &TransferAck) -> bool {
        ack.resource == self.resource.as_str() && ack.version == self.version.get()
    }
}

/// The coordinator's mutable state (one lock: every operation on it is short).
#[derive(Default)]
pub struct Book {
    /// Capacities by id.
    pub caps: BTreeMap<CapacityId, Cap>,
    /// Attached capacities, sorted (kept with `caps`).
    pub attached: Vec<CapacityId>,
    /// Changes whenever `attached` is recomputed (placement's remembered homes follow it).
    pub attached_epoch: u64,
    /// Whether an attached capacity's scope is narrower than every resource.
    pub any_scoped: bool,
    /// Resource → capacities holding a version of it.
    pub holders: HashMap<ResourceId, BTreeSet<CapacityId>>,
    /// Transfers awaiting an ack, by id.
    pub pending: HashMap<u64, Waiting>,
    /// Finished transfers, newest last.
    pub recent: VecDeque<TransferAck>,
    /// Predictive transfers under way: (capacity, resource) → (version, bytes).
    pub moving: HashMap<(CapacityId, ResourceId), (Version, u64)>,
}

impl Book {
    /// Capacities with an open command stream.
    pub fn attached(&self) -> Vec<CapacityId> {
        self.attached.clone()
    }

    /// Recomputes the attached list (after an attach or a detach).
    pub fn refresh_attached(&mut self) {
        self.attached_epoch += 1;
        self.attached = self
            .caps
            .iter()
            .filter(|(_, c)| c.tx.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        self.any_scoped = self
            .attached
            .iter()
            .any(|c| self.caps.get(c).is_some_and(|cap| !cap.scope.is_all()));
    }

    /// Records a finished transfer.
    pub fn remember(&mut self, ack: TransferAck) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(ack);
    }

    /// Takes `inv` as what `capacity` holds at `now`: the typed inventory, the holder index
    /// and the eviction mirror follow. Entries with an invalid id or version are skipped.
    pub fn set_inventory(&mut self, capacity: &CapacityId, mut inv: Inventory, now: f64) {
        let Some(cap) = self.caps.get_mut(capacity) else {
            return;
        };
        inv.capacity = capacity.as_str().to_owned();
        let mut held = BTreeMap::new();
        for h in &inv.held {
            if let (Ok(r), Some(v)) = (ResourceId::new(&h.resource), Version::new(h.version)) {
                held.insert(
                    (r, v),
                    HeldState {
                        bytes: h.bytes,
                        leased: h.leased,
                    },
                );
            }
        }
        let before: BTreeSet<ResourceId> = cap.held.keys().map(|(r, _)| r.clone()).collect();
        let after: BTreeSet<ResourceId> = held.keys().map(|(r, _)| r.clone()).collect();
        if cap.budget != inv.cache_budget {
            // A new budget (the first report): the mirror starts over from what is held.
            cap.cache = CacheBook::new(cap.cache.rule(), inv.cache_budget);
        }
        for r in before.difference(&after) {
            cap.cache.remove(r);
            if let Some(h) = self.holders.get_mut(r) {
                h.remove(capacity);
                if h.is_empty() {
                    self.holders.remove(r);
                }
            }
        }
        for ((r, _), s) in held.iter().rev() {
            if !cap.cache.contains(r) {
                cap.cache.admit(r.clone(), s.bytes, now);
                if let Some(h) = cap.early_hints.remove(r) {
                    cap.cache.hint(r, h);
                }
            }
            self.holders
                .entry(r.clone())
                .or_default()
                .insert(capacity.clone());
        }
        cap.cache.set_horizon(inv.horizon_s);
        cap.held = held;
        cap.budget = inv.cache_budget;
        cap.used = inv.cache_used;
        cap.inventory = inv;
    }

    /// Forgets what a departed capacity held from the holder index.
    pub fn unindex(&mut self, capacity: &CapacityId) {
        let Some(cap) = self.caps.get(capacity) else {
            return;
        };
        for (r, _) in cap.held.keys() {
            if let Some(h) = self.holders.get_mut(r) {
                h.remove(capacity);
                if h.is_empty() {
                    self.holders.remove(r);
                }
            }
        }
    }
}
