//! What a key read last, and how often a key's execution reads again what it read before.
//! Placement counts the key's recent states as candidates too, with the probability the
//! model left unassigned times that learned repeat rate: an event whose model is unsure
//! (a popularity baseline says "the popular states" for every event) still goes where its
//! own states are, while a confident prediction pulls it to where the predicted ones are.

use foldhash::{HashMap, HashMapExt};

use prewarm_core::{HistoryRecord, ResourceId};

/// Keys whose last reads are kept (the least recently seen half is forgotten beyond).
const MAX_KEYS: usize = 1 << 18;
/// States kept per key.
const PER_KEY: usize = 4;
/// Weight of each execution in the repeat rate's moving average.
const ALPHA: f64 = 0.01;

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Affinity {
    recent: HashMap<String, (u64, Vec<ResourceId>)>,
    tick: u64,
    /// Share of executions whose every read was among its key's recent states.
    repeat: f64,
}

impl Default for Affinity {
    fn default() -> Self {
        Self {
            recent: HashMap::new(),
            tick: 0,
            repeat: 0.5,
        }
    }
}

impl Affinity {
    /// Learns from a completed execution.
    pub fn observe(&mut self, r: &HistoryRecord) {
        if r.reads.is_empty() {
            return;
        }
        self.tick += 1;
        if let Some((_, prev)) = self.recent.get(&r.event.key) {
            let hit = r.reads.iter().all(|rd| prev.contains(&rd.resource));
            self.repeat += ALPHA * (f64::from(u8::from(hit)) - self.repeat);
        } else if self.recent.len() >= MAX_KEYS {
            let mut ticks: Vec<u64> = self.recent.values().map(|(t, _)| *t).collect();
            let mid = ticks.len() / 2;
            ticks.select_nth_unstable(mid);
            let cut = ticks[mid];
            self.recent.retain(|_, (t, _)| *t > cut);
        }
        if !self.recent.contains_key(&r.event.key) {
            self.recent.insert(r.event.key.clone(), (0, Vec::new()));
        }
        let Some((seen, states)) = self.recent.get_mut(&r.event.key) else {
            return;
        };
        *seen = self.tick;
        for rd in &r.reads {
            states.retain(|s| *s != rd.resource);
            states.push(rd.resource.clone());
        }
        let over = states.len().saturating_sub(PER_KEY);
        states.drain(..over);
    }

    /// The key's recent states with the placement weight each gets when the model assigned
    /// `assigned` of the probability (most recent first).
    pub fn candidates(&self, key: &str, assigned: f64) -> Vec<(&ResourceId, f64)> {
        let Some((_, states)) = self.recent.get(key) else {
            return Vec::new();
        };
        let mass = (1.0 - assigned).max(0.0) * self.repeat / states.len().max(1) as f64;
        states.iter().rev().map(|r| (r, mass)).collect()
    }

    /// The learned repeat rate.
    pub fn repeat_rate(&self) -> f64 {
        self.repeat
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn rec(key: &str, r: &str) -> HistoryRecord {
        HistoryRecord {
            ts: 0.0,
            event: prewarm_core::Event {
                kind: "t".into(),
                key: key.into(),
                attrs: Default::default(),
                needs: vec![],
            },
            capacity: None,
            reads: vec![prewarm_core::ReadAccess {
                resource: ResourceId::new(r).unwrap(),
                version: None,
                bytes: 1,
            }],
            writes: vec![],
            duration_s: 0.0,
        }
    }

    #[test]
    fn keys_that_repeat_their_states_pull_their_events_home() {
        let mut a = Affinity::default();
        for _ in 0..500 {
            a.observe(&rec("fn-1", "fn/1"));
        }
        assert!(a.repeat_rate() > 0.95, "{}", a.repeat_rate());
        let c = a.candidates("fn-1", 0.1);
        assert_eq!(c.len(), 1);
        assert!(c[0].1 > 0.85, "most of what the model left: {c:?}");
        assert!(
            a.candidates("fn-1", 1.0)[0].1 == 0.0,
            "a sure prediction leaves nothing"
        );
        assert!(a.candidates("unknown", 0.0).is_empty());
        // A key that never repeats teaches the rate down.
        for i in 0..500 {
            a.observe(&rec("walker", &format!("page/{i}")));
        }
        assert!(a.repeat_rate() < 0.1, "{}", a.repeat_rate());
    }
}
