//! The fleet part of the coordinator: which capacities are attached (command streams,
//! sessions), what each holds (inventories as reported, the holder index, the mirror of each
//! eviction book), the predictive transfers under way and the transfers waiting for their
//! acknowledgement. All of it sits behind one lock ([`Book`]), so a capacity that leaves
//! fails its waiting transfers in the same step that marks it gone. The decision engine reads
//! it through [`crate::fleet::BookFleet`].

use std::sync::{Mutex, MutexGuard};

use prewarm_core::{CapacityId, ResourceId, Version};
use prewarm_engine::HintFor;
use prewarm_proto::wire::{CapacityStatus, FailureKind, Inventory, TransferAck};
use tokio::sync::oneshot;

use crate::state::{Book, Cap, CommandSender, Waiting};

/// The fleet as the coordinator knows it.
#[derive(Default)]
pub struct Capacities {
    book: Mutex<Book>,
}

/// An acknowledgement that came from a capacity the transfer was not sent to.
#[derive(Debug)]
pub struct WrongSender;

impl Capacities {
    /// The book, locked (the engine's lock, when both are taken, is taken first).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().expect("book lock poisoned")
    }

    /// `capacity` attached with a new stream (`cap`) holding `inventory` at `now`; whatever
    /// an earlier stream of it had reported is replaced.
    pub(crate) fn attach(&self, capacity: &CapacityId, cap: Cap, inventory: Inventory, now: f64) {
        let mut book = self.lock();
        book.unindex(capacity);
        book.caps.insert(capacity.clone(), cap);
        book.set_inventory(capacity, inventory, now);
        book.refresh_attached();
    }

    /// The stream of `session` ended: the capacity is disconnected and its waiting transfers
    /// fail. False when a newer stream had already replaced that one (nothing changes).
    pub(crate) fn detach(&self, capacity: &CapacityId, session: u64) -> bool {
        let mut book = self.lock();
        let Some(cap) = book.caps.get_mut(capacity) else {
            return false;
        };
        if cap.session != session {
            return false;
        }
        cap.tx = None;
        book.refresh_attached();
        let gone: Vec<u64> = book
            .pending
            .iter()
            .filter(|(_, w)| &w.capacity == capacity)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(w) = book.pending.remove(&id) {
                let _ = w.waiter.send(TransferAck {
                    transfer_id: id,
                    capacity: capacity.as_str().to_owned(),
                    failure: FailureKind::CapacityGone as i32,
                    error: format!("capacity {capacity} disconnected during the transfer"),
                    ..Default::default()
                });
            }
        }
        true
    }

    /// Takes `inv` as what `capacity` holds; false when it has not attached.
    pub(crate) fn report(&self, capacity: &CapacityId, inv: Inventory, now: f64) -> bool {
        let mut book = self.lock();
        if !book.caps.contains_key(capacity) {
            return false;
        }
        book.set_inventory(capacity, inv, now);
        true
    }

    /// Records an acknowledgement and hands it to the transfer waiting for it (none: it timed
    /// out or was answered already, or the one of that number asked for another state — an
    /// earlier coordinator process's transfer). False for a repeat of one already recorded (the same
    /// acknowledgement delivered twice: field for field, down to its duration in
    /// microseconds, which two loads never share): nothing is recorded or counted again.
    pub(crate) fn ack(&self, ack: TransferAck) -> Result<bool, WrongSender> {
        let mut book = self.lock();
        let repeat = book.recent.iter().any(|a| *a == ack);
        if repeat {
            return Ok(false);
        }
        book.remember(ack.clone());
        match book.pending.remove(&ack.transfer_id) {
            Some(w) if w.capacity.as_str() == ack.capacity && w.answered_by(&ack) => {
                let _ = w.waiter.send(ack);
                Ok(true)
            }
            Some(w) => {
                let wrong_sender = w.capacity.as_str() != ack.capacity;
                book.pending.insert(ack.transfer_id, w);
                if wrong_sender {
                    Err(WrongSender)
                } else {
                    Ok(true)
                }
            }
            None => Ok(true),
        }
    }

    /// Registers transfer `id` (`state`, to `capacity`) as waiting for its acknowledgement.
    pub(crate) fn await_ack(
        book: &mut Book,
        id: u64,
        capacity: &CapacityId,
        (resource, version): (&ResourceId, Version),
        waiter: oneshot::Sender<TransferAck>,
    ) {
        let w = Waiting {
            capacity: capacity.clone(),
            resource: resource.clone(),
            version,
            waiter,
        };
        book.pending.insert(id, w);
    }

    /// Stops waiting for transfer `id` (it timed out, or its command could not be sent).
    pub(crate) fn forget_pending(&self, id: u64) {
        self.lock().pending.remove(&id);
    }

    /// Capacities with an open command stream.
    pub(crate) fn connected(&self) -> usize {
        self.lock().attached.len()
    }

    /// How many capacities are attached and their median cache budget (0 when none is).
    pub(crate) fn shape(&self) -> (usize, u64) {
        let book = self.lock();
        let mut budgets: Vec<u64> = book
            .attached
            .iter()
            .filter_map(|c| book.caps.get(c).map(|cap| cap.budget))
            .collect();
        budgets.sort_unstable();
        (
            budgets.len(),
            budgets.get(budgets.len() / 2).copied().unwrap_or(0),
        )
    }

    /// Attached capacities, sorted.
    pub(crate) fn attached(&self) -> Vec<CapacityId> {
        self.lock().attached()
    }

    /// No transfer waits for its acknowledgement and no predictive transfer is under way.
    pub fn settled(&self) -> bool {
        let book = self.lock();
        book.pending.is_empty() && book.moving.is_empty()
    }

    /// Every capacity and the recent transfers, newest first, for `status`.
    pub(crate) fn status(&self) -> (Vec<CapacityStatus>, Vec<TransferAck>) {
        let book = self.lock();
        let caps = book
            .caps
            .iter()
            .map(|(id, c)| CapacityStatus {
                capacity: id.as_str().to_owned(),
                connected: c.tx.is_some(),
                ensure_addr: c.ensure_addr.clone(),
                inventory: Some(c.inventory.clone()),
                attached_unix_ms: c.attached_unix_ms,
            })
            .collect();
        (caps, book.recent.iter().rev().cloned().collect())
    }

    /// The predictive transfers under way: (capacity, resource, version, bytes), sorted.
    pub(crate) fn under_way(&self) -> Vec<(CapacityId, ResourceId, Version, u64)> {
        let book = self.lock();
        let mut v: Vec<_> = book
            .moving
            .iter()
            .map(|((c, r), (ver, b))| (c.clone(), r.clone(), *ver, *b))
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    /// Every resource some capacity holds a version of, sorted.
    pub(crate) fn held_resources(&self) -> Vec<ResourceId> {
        let book = self.lock();
        let mut v: Vec<ResourceId> = book.holders.keys().cloned().collect();
        v.sort();
        v
    }

    /// `resource`'s newest committed version is `newest`: the command streams of the
    /// connected capacities whose newest version of it is older and that have not been told
    /// of that one on this stream. Each stream is told once; a capacity that attaches again
    /// (after a restart, a cut) is told anew, since what it was told may have gone with it.
    pub(crate) fn behind(&self, resource: &ResourceId, newest: Version) -> Vec<CommandSender> {
        let mut book = self.lock();
        book.caps
            .values_mut()
            .filter(|c| c.newest(resource).is_some_and(|v| v < newest))
            .filter(|c| c.told.get(resource).is_none_or(|v| *v < newest))
            .filter_map(|c| {
                let tx = c.tx.clone()?;
                c.told.insert(resource.clone(), newest);
                Some(tx)
            })
            .collect()
    }

    /// `capacity`'s command stream, while it is connected.
    pub(crate) fn command_tx(&self, capacity: &CapacityId) -> Option<CommandSender> {
        self.lock().caps.get(capacity).and_then(|c| c.tx.clone())
    }

    /// Records hints in the mirrors of the capacities they go to.
    pub(crate) fn note_hints(book: &mut Book, hints: &[HintFor]) {
        for h in hints {
            if let Some(c) = book.caps.get_mut(&h.capacity) {
                c.hint(&h.resource, h.hint.clone());
            }
        }
    }

    /// A predictive transfer of `resource`@`version` (`bytes`) to `capacity` started.
    pub(crate) fn moving(
        &self,
        capacity: &CapacityId,
        resource: &ResourceId,
        version: Version,
        bytes: u64,
    ) {
        self.lock()
            .moving
            .insert((capacity.clone(), resource.clone()), (version, bytes));
    }

    /// That predictive transfer ended (done or failed).
    pub(crate) fn moved(&self, capacity: &CapacityId, resource: &ResourceId) {
        self.lock()
            .moving
            .remove(&(capacity.clone(), resource.clone()));
    }
}
