//! The fleet's pulse for the dashboard: events, executions, warm starts and time-to-ready
//! over the last ten minutes (5-second buckets), and what became of predictive transfers —
//! delivered, then read by an execution (the model's live precision) or gone unread (wasted).
//!
//! Fed by the coordinator's own inputs: events as they are handled, the agents' history
//! (each `ensure` record says whether it hit and how long it waited), acknowledgements and
//! inventory reports. Bounded: 120 buckets, at most [`MAX_UNREAD`] unread deliveries tracked.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use prewarm_core::{CapacityId, HistoryRecord, ResourceId};
use prewarm_proto::wire::{Priority, TransferAck};

/// Seconds per bucket.
pub const BUCKET_S: f64 = 5.0;
/// Buckets kept (ten minutes).
pub const BUCKETS: usize = 120;
/// Predictive deliveries tracked until read or gone; beyond this, new ones are not tracked.
pub const MAX_UNREAD: usize = 100_000;

/// One bucket's counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bucket {
    /// Start, Unix seconds (a multiple of [`BUCKET_S`]).
    pub start: f64,
    /// Events handled.
    pub events: u64,
    /// Executions reported with a hit flag (`ensure` records).
    pub executions: u64,
    /// Of those, served at once.
    pub warm: u64,
    /// Summed time-to-ready, milliseconds.
    pub ttr_ms_sum: f64,
    /// Longest time-to-ready, milliseconds.
    pub ttr_ms_max: f64,
}

/// What became of predictive transfers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefetch {
    /// Delivered (installed by a predictive transfer).
    pub delivered: u64,
    /// Delivered bytes.
    pub delivered_bytes: u64,
    /// Read by an execution on the capacity they were moved to.
    pub used: u64,
    /// Left the capacity unread (evicted or expired).
    pub wasted: u64,
    /// Bytes of those.
    pub wasted_bytes: u64,
}

#[derive(Default)]
struct Inner {
    buckets: VecDeque<Bucket>,
    /// Predictive deliveries not read yet: (capacity, resource) → bytes.
    unread: HashMap<(CapacityId, ResourceId), u64>,
    prefetch: Prefetch,
}

impl Inner {
    fn bucket(&mut self, now: f64) -> &mut Bucket {
        let start = (now / BUCKET_S).floor() * BUCKET_S;
        if self.buckets.back().is_none_or(|b| b.start < start) {
            self.buckets.push_back(Bucket {
                start,
                ..Bucket::default()
            });
            while self.buckets.len() > BUCKETS {
                self.buckets.pop_front();
            }
        }
        // A clock that went back counts into the newest bucket.
        self.buckets.back_mut().expect("pushed above")
    }
}

/// See the module docs.
#[derive(Default)]
pub struct Pulse(Mutex<Inner>);

impl Pulse {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().expect("pulse lock poisoned")
    }

    /// `n` events handled at `now`.
    pub fn events(&self, n: usize, now: f64) {
        self.lock().bucket(now).events += n as u64;
    }

    /// `capacity` reported `records` at `now`: warm starts and time-to-ready from the
    /// records that carry a hit flag, and predictive deliveries now read.
    pub fn executions(&self, capacity: &CapacityId, records: &[HistoryRecord], now: f64) {
        let mut g = self.lock();
        for r in records {
            for rd in &r.reads {
                if g.unread
                    .remove(&(capacity.clone(), rd.resource.clone()))
                    .is_some()
                {
                    g.prefetch.used += 1;
                }
            }
            let Some(hit) = r
                .event
                .attrs
                .get("hit")
                .and_then(serde_json::Value::as_bool)
            else {
                continue;
            };
            let wait = r
                .event
                .attrs
                .get("wait_ms")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0);
            let b = g.bucket(now);
            b.executions += 1;
            b.warm += u64::from(hit);
            b.ttr_ms_sum += wait;
            b.ttr_ms_max = b.ttr_ms_max.max(wait);
        }
    }

    /// An acknowledgement arrived: a predictive transfer that installed something is
    /// tracked until it is read or leaves.
    pub fn acked(&self, a: &TransferAck) {
        if !a.ok || a.already_held || a.priority != Priority::Predictive as i32 {
            return;
        }
        let (Ok(c), Ok(r)) = (
            CapacityId::new(a.capacity.clone()),
            ResourceId::new(a.resource.clone()),
        ) else {
            return;
        };
        let mut g = self.lock();
        g.prefetch.delivered += 1;
        g.prefetch.delivered_bytes += a.state_bytes;
        if g.unread.len() < MAX_UNREAD {
            g.unread.insert((c, r), a.state_bytes);
        }
    }

    /// `capacity` holds exactly `held` now: unread deliveries it no longer holds were wasted.
    pub fn holds(&self, capacity: &CapacityId, held: &HashSet<ResourceId>) {
        let mut g = self.lock();
        let gone: Vec<(CapacityId, ResourceId)> = g
            .unread
            .keys()
            .filter(|(c, r)| c == capacity && !held.contains(r))
            .cloned()
            .collect();
        for k in gone {
            if let Some(bytes) = g.unread.remove(&k) {
                g.prefetch.wasted += 1;
                g.prefetch.wasted_bytes += bytes;
            }
        }
    }

    /// Whether a predictive delivery of `resource` to `capacity` has not been read yet.
    pub fn unread(&self, capacity: &CapacityId, resource: &ResourceId) -> bool {
        self.lock()
            .unread
            .contains_key(&(capacity.clone(), resource.clone()))
    }

    /// The buckets, oldest first, and the prefetch outcomes.
    pub fn read(&self) -> (Vec<Bucket>, Prefetch) {
        let g = self.lock();
        (g.buckets.iter().cloned().collect(), g.prefetch)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prewarm_core::{Event, ReadAccess};

    use super::*;

    fn ensure_record(r: &str, hit: bool, wait_ms: f64) -> HistoryRecord {
        let mut attrs = std::collections::BTreeMap::new();
        attrs.insert("hit".to_owned(), serde_json::Value::Bool(hit));
        attrs.insert("wait_ms".to_owned(), serde_json::json!(wait_ms));
        HistoryRecord {
            ts: 0.0,
            event: Event {
                kind: "ensure".into(),
                key: "k".into(),
                attrs,
                needs: Vec::new(),
            },
            capacity: None,
            reads: vec![ReadAccess {
                resource: ResourceId::new(r).unwrap(),
                version: None,
                bytes: 10,
            }],
            writes: vec![],
            duration_s: 0.0,
        }
    }

    fn ack(cap: &str, r: &str, priority: Priority, already_held: bool) -> TransferAck {
        TransferAck {
            capacity: cap.into(),
            resource: r.into(),
            version: 1,
            ok: true,
            state_bytes: 100,
            already_held,
            priority: priority as i32,
            ..TransferAck::default()
        }
    }

    #[test]
    fn counts_warm_starts_per_bucket_and_what_became_of_each_prefetch() {
        let p = Pulse::default();
        let c = CapacityId::new("c1").unwrap();
        p.events(3, 1000.0);
        p.events(2, 1004.9);
        p.events(1, 1005.0);
        p.executions(
            &c,
            &[
                ensure_record("m/a", true, 0.5),
                ensure_record("m/b", false, 40.0),
            ],
            1006.0,
        );
        let (b, _) = p.read();
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].start, b[0].events, b[0].executions), (1000.0, 5, 0));
        assert_eq!((b[1].events, b[1].executions, b[1].warm), (1, 2, 1));
        assert_eq!((b[1].ttr_ms_sum, b[1].ttr_ms_max), (40.5, 40.0));
        // Only predictive transfers that installed something are tracked.
        p.acked(&ack("c1", "m/x", Priority::Predictive, false));
        p.acked(&ack("c1", "m/y", Priority::Predictive, false));
        p.acked(&ack("c1", "m/z", Priority::OnDemand, false));
        p.acked(&ack("c1", "m/w", Priority::Predictive, true));
        let x = ResourceId::new("m/x").unwrap();
        assert!(p.unread(&c, &x));
        p.executions(&c, &[ensure_record("m/x", true, 0.1)], 1007.0);
        assert!(!p.unread(&c, &x));
        // m/y leaves unread: wasted.
        p.holds(&c, &HashSet::from([x]));
        let (_, f) = p.read();
        assert_eq!(
            f,
            Prefetch {
                delivered: 2,
                delivered_bytes: 200,
                used: 1,
                wasted: 1,
                wasted_bytes: 100,
            }
        );
        // Ten minutes of buckets at most.
        for i in 0..500 {
            p.events(1, 2000.0 + 5.0 * f64::from(i));
        }
        assert_eq!(p.read().0.len(), BUCKETS);
    }
}
