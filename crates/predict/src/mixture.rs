//! A mixture of predictors that is never much worse than its best member: each event's
//! prediction is the members' predictions averaged with weights learned online from their
//! log-loss on what the execution then read (Bayesian model averaging with fixed share, so a
//! member that starts winning later is trusted again within a few hundred events). Weights
//! are kept per context — the event's type — starting from the global ones, so a model that
//! predicts uploads well and sessions badly is trusted for uploads only.
//!
//! Regret: in log-loss, at most `ln(members) / η` plus the fixed share's switching cost over
//! the best member in hindsight, per context (η < 1 tempers each update; a full Bayesian
//! update let a single unforeseen read swing the weights from one member to another).

use std::collections::{HashMap, VecDeque};

use prewarm_core::{Context, HistoryRecord, Prediction, Predictor, ResourceId};

/// Probability floor for a read a member did not predict (its log-loss is then bounded).
const FLOOR: f64 = 1e-3;
/// Learning rate of the weights (tempered Bayes / Hedge): one execution that a member did
/// not foresee costs its weight at most a factor `FLOOR^ETA` (≈ 0.18), so one surprise,
/// such as a session's first read, does not hand the mixture to a popularity baseline.
const ETA: f64 = 0.25;
/// Fixed-share mixing: the weight every member gets back each update (it costs at most
/// `-ln(1 - SHARE)` per event against the best member, and lets a member that starts winning
/// be trusted again after a few hundred events).
const SHARE: f64 = 0.002;
/// Keys whose last predictions are kept for scoring.
const MAX_PENDING: usize = 1 << 16;
/// Predictions asked of each member, per prediction asked of the mixture.
const WIDEN: usize = 2;
/// Records at the end of each learned batch scored prequentially (predicted, then read).
const PREQUENTIAL: usize = 4096;
/// Predictions per member in a prequential score.
const PREQUENTIAL_K: usize = 16;

/// The members' predictions for one key's pending execution.
type Pending = Vec<Vec<Prediction>>;

/// See the module docs.
pub struct Mixture {
    name: String,
    members: Vec<Box<dyn Predictor>>,
    /// Log-weights per context (event type) and the global ones.
    weights: HashMap<String, Vec<f64>>,
    global: Vec<f64>,
    pending: HashMap<String, Pending>,
    order: VecDeque<String>,
}

fn normalised(log_w: &[f64]) -> Vec<f64> {
    let max = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = log_w.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = w.iter().sum();
    w.iter().map(|x| x / sum).collect()
}

/// The log-weights after a round with `losses`, with fixed share.
fn updated(log_w: &[f64], losses: &[f64]) -> Vec<f64> {
    let w = normalised(
        &log_w
            .iter()
            .zip(losses)
            .map(|(l, loss)| l - ETA * loss)
            .collect::<Vec<_>>(),
    );
    let n = w.len() as f64;
    w.iter()
        .map(|x| ((1.0 - SHARE) * x + SHARE / n).ln())
        .collect()
}

impl Mixture {
    /// A mixture called `name` of `members` (at least one).
    pub fn new(name: &str, members: Vec<Box<dyn Predictor>>) -> Self {
        let n = members.len().max(1);
        Self {
            name: name.to_owned(),
            members,
            weights: HashMap::new(),
            global: vec![-(n as f64).ln(); n],
            pending: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The members' current weights for event type `kind` (the global ones when the type
    /// was never scored), with their names.
    pub fn weights(&self, kind: &str) -> Vec<(String, f64)> {
        let lw = self.weights.get(kind).unwrap_or(&self.global);
        self.members
            .iter()
            .map(|m| m.name().to_owned())
            .zip(normalised(lw))
            .collect()
    }

    fn combine(&self, kind: &str, per_member: &[Vec<Prediction>], k: usize) -> Vec<Prediction> {
        let w = normalised(self.weights.get(kind).unwrap_or(&self.global));
        let mut mass: HashMap<&ResourceId, (f64, &Prediction)> = HashMap::new();
        for (preds, wm) in per_member.iter().zip(&w) {
            for p in preds {
                let e = mass.entry(&p.resource).or_insert((0.0, p));
                e.0 += wm * p.probability;
            }
        }
        let mut out: Vec<Prediction> = mass
            .into_values()
            .map(|(m, p)| Prediction {
                probability: m.clamp(0.0, 1.0),
                ..p.clone()
            })
            .collect();
        out.sort_by(|a, b| {
            b.probability
                .total_cmp(&a.probability)
                .then_with(|| a.resource.cmp(&b.resource))
        });
        out.truncate(k);
        out
    }

    fn remember(&mut self, key: &str, per_member: Pending) {
        if self.pending.insert(key.to_owned(), per_member).is_none() {
            self.order.push_back(key.to_owned());
            while self.order.len() > MAX_PENDING {
                if let Some(old) = self.order.pop_front() {
                    self.pending.remove(&old);
                }
            }
        }
    }

    /// Scores the members' pending predictions for `r`'s key against what it read.
    fn score(&mut self, r: &HistoryRecord) {
        let Some(per_member) = self.pending.remove(&r.event.key) else {
            return;
        };
        if r.reads.is_empty() || per_member.len() != self.members.len() {
            return;
        }
        let losses: Vec<f64> = per_member
            .iter()
            .map(|preds| {
                r.reads
                    .iter()
                    .map(|rd| {
                        let p = preds
                            .iter()
                            .find(|p| p.resource == rd.resource)
                            .map_or(0.0, |p| p.probability);
                        -p.max(FLOOR).ln()
                    })
                    .sum::<f64>()
                    / r.reads.len() as f64
            })
            .collect();
        let kind = r.event.kind.clone();
        let ctx = self
            .weights
            .entry(kind)
            .or_insert_with(|| self.global.clone());
        *ctx = updated(ctx, &losses);
        self.global = updated(&self.global, &losses);
    }
}

impl Predictor for Mixture {
    fn name(&self) -> &str {
        &self.name
    }

    fn observe(&mut self, record: &HistoryRecord) {
        self.score(record);
        for m in &mut self.members {
            m.observe(record);
        }
    }

    /// The last [`PREQUENTIAL`] records of a batch are also scored as if predicted just
    /// before each (what a member would have said, then what was read), so weights learned
    /// from history are in place when serving starts rather than after it.
    fn observe_batch(&mut self, records: &[HistoryRecord]) {
        let (head, tail) = records.split_at(records.len().saturating_sub(PREQUENTIAL));
        for r in head {
            self.score(r);
        }
        for m in &mut self.members {
            m.observe_batch(head);
        }
        for r in tail {
            if !self.pending.contains_key(&r.event.key) {
                let ctx = Context {
                    ts: r.ts,
                    event: &r.event,
                };
                let per_member: Pending = self
                    .members
                    .iter_mut()
                    .map(|m| m.predict(&ctx, PREQUENTIAL_K))
                    .collect();
                self.remember(&r.event.key, per_member);
            }
            self.score(r);
            for m in &mut self.members {
                m.observe(r);
            }
        }
    }

    fn adopt(&mut self, retrained: Box<dyn Predictor>) -> Result<(), Box<dyn Predictor>> {
        match self
            .members
            .iter_mut()
            .find(|m| m.name() == retrained.name())
        {
            Some(m) => {
                *m = retrained;
                Ok(())
            }
            None => Err(retrained),
        }
    }

    fn predict(&mut self, ctx: &Context<'_>, k: usize) -> Vec<Prediction> {
        self.predict_batch(std::slice::from_ref(ctx), k)
            .pop()
            .unwrap_or_default()
    }

    fn predict_batch(&mut self, ctxs: &[Context<'_>], k: usize) -> Vec<Vec<Prediction>> {
        let wide = k * WIDEN;
        // Per member, per context.
        let all: Vec<Vec<Vec<Prediction>>> = self
            .members
            .iter_mut()
            .map(|m| m.predict_batch(ctxs, wide))
            .collect();
        let mut out = Vec::with_capacity(ctxs.len());
        for (i, c) in ctxs.iter().enumerate() {
            let per_member: Pending = all.iter().map(|m| m[i].clone()).collect();
            out.push(self.combine(&c.event.kind, &per_member, k));
            self.remember(&c.event.key, per_member);
        }
        out
    }

    fn memory_bytes(&self) -> u64 {
        self.members.iter().map(|m| m.memory_bytes()).sum::<u64>()
            + (self.pending.len() * 64 * (self.members.len() * WIDEN * 5 + 1)) as u64
    }

    fn keep_alive(&self, resource: &ResourceId) -> Option<f64> {
        self.members.iter().find_map(|m| m.keep_alive(resource))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::baselines::{Frequency, Markov};
    use crate::predictor::test_record;

    /// Always predicts `r` with certainty.
    struct Always(&'static str, ResourceId);

    impl Predictor for Always {
        fn name(&self) -> &str {
            self.0
        }
        fn observe(&mut self, _: &HistoryRecord) {}
        fn predict(&mut self, _: &Context<'_>, _: usize) -> Vec<Prediction> {
            vec![crate::predictor::latest(self.1.clone(), 0.9)]
        }
        fn memory_bytes(&self) -> u64 {
            0
        }
    }

    fn id(s: &str) -> ResourceId {
        ResourceId::new(s).unwrap()
    }

    #[test]
    fn weights_move_to_the_member_that_is_right_and_predictions_follow() {
        let mut m = Mixture::new(
            "mix",
            vec![
                Box::new(Always("says-a", id("a"))),
                Box::new(Always("says-b", id("b"))),
            ],
        );
        for i in 0..50 {
            let r = test_record(f64::from(i), "k", "b");
            m.predict(
                &Context {
                    ts: r.ts,
                    event: &r.event,
                },
                2,
            );
            m.observe(&r);
        }
        let w = m.weights("t");
        assert!(w[1].1 > 0.9, "{w:?}");
        assert!(
            w[0].1 >= SHARE / 2.0 * 0.9,
            "fixed share keeps the loser alive: {w:?}"
        );
        let r = test_record(100.0, "k", "b");
        let p = m.predict(
            &Context {
                ts: r.ts,
                event: &r.event,
            },
            1,
        );
        assert_eq!(p[0].resource.as_str(), "b");
        assert!(p[0].probability > 0.8);
        // Another context starts from the global weights.
        assert!(m.weights("never-seen")[1].1 > 0.9);
    }

    #[test]
    fn a_retrained_member_is_adopted_in_place_and_the_weights_stay() {
        let mut m = Mixture::new(
            "mix",
            vec![
                Box::new(Always("says-a", id("a"))),
                Box::new(Always("says-b", id("b"))),
            ],
        );
        let history: Vec<_> = (0..200)
            .map(|i| test_record(f64::from(i), &format!("k{}", i % 3), "b"))
            .collect();
        m.observe_batch(&history);
        let before = m.weights("t");
        // A retrained "says-a" that now says c: it takes the member's place.
        assert!(m.adopt(Box::new(Always("says-a", id("c")))).is_ok());
        assert_eq!(m.weights("t"), before, "weights kept");
        let r = test_record(300.0, "k9", "b");
        let ctx = Context {
            ts: r.ts,
            event: &r.event,
        };
        let listed: Vec<String> = m
            .predict(&ctx, 3)
            .iter()
            .map(|p| p.resource.as_str().to_owned())
            .collect();
        assert!(listed.contains(&"c".to_owned()), "{listed:?}");
        assert!(!listed.contains(&"a".to_owned()), "{listed:?}");
        // No member of that name: given back for the caller to serve alone.
        let back = m.adopt(Box::new(Always("other", id("d"))));
        assert_eq!(
            back.err().map(|p| p.name().to_owned()).as_deref(),
            Some("other")
        );
    }

    #[test]
    fn weights_are_learned_from_a_history_batch_before_any_serving() {
        let mut m = Mixture::new(
            "mix",
            vec![
                Box::new(Always("says-a", id("a"))),
                Box::new(Always("says-b", id("b"))),
            ],
        );
        let history: Vec<_> = (0..200)
            .map(|i| test_record(f64::from(i), &format!("k{}", i % 3), "b"))
            .collect();
        m.observe_batch(&history);
        let w = m.weights("t");
        assert!(w[1].1 > 0.9, "scored on history alone: {w:?}");
    }

    #[test]
    fn a_mixture_of_baselines_scores_no_worse_than_its_best_member() {
        // Sessions walking a cycle: Markov learns it, frequency cannot.
        let seq = ["a", "b", "c", "d", "e"];
        let records: Vec<_> = (0..2_000u32)
            .map(|i| {
                test_record(
                    f64::from(i),
                    &format!("s{}", i % 7),
                    seq[(i as usize / 7) % 5],
                )
            })
            .collect();
        let loss = |p: &mut dyn Predictor| {
            let mut total = 0.0;
            for r in &records[200..] {
                let preds = p.predict(
                    &Context {
                        ts: r.ts,
                        event: &r.event,
                    },
                    5,
                );
                let q = preds
                    .iter()
                    .find(|x| x.resource == r.reads[0].resource)
                    .map_or(0.0, |x| x.probability);
                total -= q.max(FLOOR).ln();
                p.observe(r);
            }
            total
        };
        let mut markov = Markov::new(2, 3600.0);
        for r in &records[..200] {
            markov.observe(r);
        }
        let mut mix = Mixture::new(
            "mix",
            vec![
                Box::new(Markov::new(2, 3600.0)),
                Box::new(Frequency::new(3600.0)),
            ],
        );
        for r in &records[..200] {
            mix.observe(r);
        }
        let (lm, lx) = (loss(&mut markov), loss(&mut mix));
        // The regret bound: (ln(members) plus the fixed share's cost per scored event) / η.
        let bound = (2f64.ln() + 1_800.0 * -(1.0 - SHARE).ln() * 1.5) / ETA;
        assert!(
            lx <= lm + bound,
            "mixture {lx} vs markov {lm} (bound {bound})"
        );
    }
}
