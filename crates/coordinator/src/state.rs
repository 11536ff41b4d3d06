//! What the coordinator knows: attached capacities (their command streams, inventories,
//! application addresses), transfers awaiting acknowledgement, recent transfers. Rebuilt from
//! the agents' attach and report messages after a restart: nothing here needs persisting.

use std::collections::{BTreeMap, HashMap, VecDeque};

use prewarm_core::{CapacityId, ResourceId, Version};
use prewarm_proto::wire::{Command, Inventory, TransferAck};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// Recent transfers kept for `status`.
pub const RECENT: usize = 256;

/// One capacity.
pub struct Cap {
    /// Its command stream; `None` while disconnected.
    pub tx: Option<mpsc::Sender<Result<Command, Status>>>,
    /// Attach counter value of the current stream (an old stream's end must not disconnect a
    /// newer one).
    pub session: u64,
    /// The application API's address.
    pub ensure_addr: String,
    /// Last reported inventory.
    pub inventory: Inventory,
    /// When it attached, Unix ms.
    pub attached_unix_ms: u64,
}

impl Cap {
    /// The newest version of `resource` it holds.
    pub fn newest(&self, resource: &ResourceId) -> Option<Version> {
        self.inventory
            .held
            .iter()
            .filter(|h| h.resource == resource.as_str())
            .filter_map(|h| Version::new(h.version))
            .max()
    }

    /// Whether it holds exactly `version` of `resource`.
    pub fn holds(&self, resource: &ResourceId, version: Version) -> bool {
        self.inventory
            .held
            .iter()
            .any(|h| h.resource == resource.as_str() && h.version == version.get())
    }
}

/// The coordinator's mutable state (one lock: every operation on it is short).
#[derive(Default)]
pub struct Book {
    /// Capacities by id.
    pub caps: BTreeMap<CapacityId, Cap>,
    /// Transfers awaiting an ack: id → (capacity, waiter).
    pub pending: HashMap<u64, (CapacityId, oneshot::Sender<TransferAck>)>,
    /// Finished transfers, newest last.
    pub recent: VecDeque<TransferAck>,
    /// Per resource, the newest version announced to agents.
    pub announced: HashMap<ResourceId, Version>,
    /// Predictive transfers under way: (capacity, resource) → bytes.
    pub moving: HashMap<(CapacityId, ResourceId), u64>,
}

impl Book {
    /// Capacities with an open command stream.
    pub fn attached(&self) -> Vec<CapacityId> {
        self.caps
            .iter()
            .filter(|(_, c)| c.tx.is_some())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Records a finished transfer.
    pub fn remember(&mut self, ack: TransferAck) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(ack);
    }
}
