//! The demo's generated workload, deterministic from a seed. What a small serving fleet sees:
//!
//! - **sessions** of tenants (popularity Zipf, s = 1): each walks `profile` → `index` + the
//!   shared embedding model → `cache` + the shared ranking model, all as `http` events under
//!   the tenant's key, 1.5–3 s apart — the next state follows from the previous one, not
//!   from the event type;
//! - **timers**: three periodic functions (`timer` events every 5, 7 and 11 s) reading their
//!   report state (and one of them the embedding model);
//! - **bursts**: every 15–25 s one tenant starts five sessions within a second;
//! - **versions**: uploads (about one every 8 s, Zipf over tenants) write a new version of a
//!   tenant's index while the workload is served; executions then need that version.
//!
//! The part before `split` is history (what the model trains on, in the shape agents log it:
//! one record per read); the rest is served for real.

use prewarm_core::{Event, HistoryRecord, ReadAccess, ResourceId};

use crate::dataset::Rng;

const MIB: u64 = 1 << 20;

/// Workload knobs.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Seed of every random choice.
    pub seed: u64,
    /// Number of tenants.
    pub tenants: usize,
    /// Seconds of history before the served part.
    pub history_s: f64,
    /// Seconds served.
    pub serve_s: f64,
    /// Session arrivals per second.
    pub sessions_per_s: f64,
}

/// How a state's bytes look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Log-like text (compresses several times).
    Text,
    /// Random (incompressible, like weights).
    Random,
}

/// One state of the workload.
#[derive(Clone, Debug)]
pub struct State {
    /// Its id.
    pub id: ResourceId,
    /// Its size.
    pub bytes: u64,
    /// What its bytes look like.
    pub fill: Fill,
}

/// One execution.
#[derive(Clone, Debug)]
pub struct Exec {
    /// Start, seconds from the workload's beginning.
    pub t: f64,
    /// Event type.
    pub kind: &'static str,
    /// Sequence key.
    pub key: String,
    /// States read (indices into [`Workload::states`]).
    pub reads: Vec<usize>,
}

/// A new version of a state, written at `t`.
#[derive(Clone, Debug)]
pub struct Upload {
    /// When, seconds from the workload's beginning.
    pub t: f64,
    /// Which state.
    pub state: usize,
}

/// The generated workload.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Every state.
    pub states: Vec<State>,
    /// Every execution, in time order.
    pub execs: Vec<Exec>,
    /// New versions written during the served part, in time order.
    pub uploads: Vec<Upload>,
    /// Where history ends and serving begins.
    pub split: f64,
    /// The end.
    pub end: f64,
}

fn uniform(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn zipf(rng: &mut Rng, cumulative: &[f64]) -> usize {
    let u = uniform(rng) * cumulative.last().copied().unwrap_or(1.0);
    cumulative
        .partition_point(|&c| c < u)
        .min(cumulative.len() - 1)
}

fn id(s: &str) -> ResourceId {
    ResourceId::new(s).expect("generated ids are valid")
}

/// The workload's states, and which of them each kind of execution reads.
struct Catalog {
    states: Vec<State>,
    embed: usize,
    rank: usize,
    reports: Vec<usize>,
    /// (profile, index, cache) per tenant.
    tenants: Vec<[usize; 3]>,
}

impl Catalog {
    /// The two shared models, three reports and each tenant's three states.
    fn new(shape: &Shape, rng: &mut Rng) -> Self {
        let mut states = vec![
            State {
                id: id("models/embed"),
                bytes: 16 * MIB,
                fill: Fill::Random,
            },
            State {
                id: id("models/rank"),
                bytes: 12 * MIB,
                fill: Fill::Random,
            },
        ];
        let (embed, rank) = (0, 1);
        let reports: Vec<usize> = (0..3)
            .map(|j| {
                states.push(State {
                    id: id(&format!("reports/daily-{j}")),
                    bytes: 3 * MIB,
                    fill: Fill::Text,
                });
                states.len() - 1
            })
            .collect();
        let tenants: Vec<[usize; 3]> = (0..shape.tenants)
            .map(|i| {
                let mut add = |name: &str, bytes: u64, fill: Fill| {
                    states.push(State {
                        id: id(&format!("tenants/t{i:02}/{name}")),
                        bytes,
                        fill,
                    });
                    states.len() - 1
                };
                [
                    add("profile", MIB, Fill::Text),
                    add("index", (4 + rng.below(5)) * MIB, Fill::Random),
                    add("cache", 2 * MIB, Fill::Text),
                ]
            })
            .collect();
        Self {
            states,
            embed,
            rank,
            reports,
            tenants,
        }
    }

    /// One session of `tenant` starting at `t`: profile, then index + embedding model, then
    /// cache + ranking model, 1.5–3 s apart.
    fn session(&self, execs: &mut Vec<Exec>, rng: &mut Rng, tenant: usize, t: f64) {
        let [profile, index, cache] = self.tenants[tenant];
        let key = format!("tenant-{tenant:02}");
        let t1 = t + 1.5 + 1.5 * uniform(rng);
        let t2 = t1 + 1.5 + 1.5 * uniform(rng);
        for (t, reads) in [
            (t, vec![profile]),
            (t1, vec![index, self.embed]),
            (t2, vec![cache, self.rank]),
        ] {
            execs.push(Exec {
                t,
                kind: "http",
                key: key.clone(),
                reads,
            });
        }
    }

    /// The three periodic timers (every 5, 7 and 11 s) until `end`, each reading its report
    /// (the first also the embedding model).
    fn timers(&self, execs: &mut Vec<Exec>, rng: &mut Rng, end: f64) {
        for (j, period) in [5.0, 7.0, 11.0].into_iter().enumerate() {
            let mut t = period * uniform(rng);
            while t < end {
                let mut reads = vec![self.reports[j]];
                if j == 0 {
                    reads.push(self.embed);
                }
                execs.push(Exec {
                    t: t + 0.1 * uniform(rng),
                    kind: "timer",
                    key: format!("cron-{j}"),
                    reads,
                });
                t += period;
            }
        }
    }
}

impl Workload {
    /// Generates the workload `shape` describes.
    pub fn generate(shape: &Shape) -> Self {
        let mut rng = Rng::new(shape.seed);
        let cat = Catalog::new(shape, &mut rng);
        let mut cumulative = Vec::with_capacity(shape.tenants);
        let mut acc = 0.0;
        for i in 0..shape.tenants {
            acc += 1.0 / (i as f64 + 1.0);
            cumulative.push(acc);
        }
        let end = shape.history_s + shape.serve_s;
        let mut execs = Vec::new();
        let mut t = 0.0;
        loop {
            t += -(1.0 - uniform(&mut rng)).ln() / shape.sessions_per_s;
            if t >= end {
                break;
            }
            let tenant = zipf(&mut rng, &cumulative);
            cat.session(&mut execs, &mut rng, tenant, t);
        }
        let mut t = 10.0 * uniform(&mut rng);
        while t < end {
            let tenant = rng.below(shape.tenants as u64) as usize;
            for _ in 0..5 {
                let start = t + uniform(&mut rng);
                cat.session(&mut execs, &mut rng, tenant, start);
            }
            t += 15.0 + 10.0 * uniform(&mut rng);
        }
        cat.timers(&mut execs, &mut rng, end);
        execs.retain(|e| e.t < end);
        execs.sort_by(|a, b| a.t.total_cmp(&b.t));
        let mut uploads = Vec::new();
        let mut t = shape.history_s;
        loop {
            t += -(1.0 - uniform(&mut rng)).ln() * 8.0;
            if t >= end {
                break;
            }
            uploads.push(Upload {
                t,
                state: cat.tenants[zipf(&mut rng, &cumulative)][1],
            });
        }
        Self {
            states: cat.states,
            execs,
            uploads,
            split: shape.history_s,
            end,
        }
    }

    /// The executions served (at or after the split).
    pub fn served(&self) -> &[Exec] {
        let from = self.execs.partition_point(|e| e.t < self.split);
        &self.execs[from..]
    }

    /// The history before the split as agents would have logged it (one record per read,
    /// the execution's key and event type), with times shifted so that the split falls on
    /// `split_unix` (Unix seconds).
    pub fn history(&self, split_unix: f64) -> Vec<HistoryRecord> {
        let mut out = Vec::new();
        for e in self.execs.iter().take_while(|e| e.t < self.split) {
            for (n, &r) in e.reads.iter().enumerate() {
                out.push(HistoryRecord {
                    ts: split_unix - self.split + e.t + 1e-3 * n as f64,
                    event: Event {
                        kind: e.kind.into(),
                        key: e.key.clone(),
                        attrs: Default::default(),
                        needs: Vec::new(),
                    },
                    capacity: None,
                    reads: vec![ReadAccess {
                        resource: self.states[r].id.clone(),
                        version: None,
                        bytes: self.states[r].bytes,
                    }],
                    writes: vec![],
                    duration_s: 0.0,
                });
            }
        }
        out.sort_by(|a, b| a.ts.total_cmp(&b.ts));
        out
    }

    /// Total bytes of all states.
    pub fn total_bytes(&self) -> u64 {
        self.states.iter().map(|s| s.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            seed: 7,
            tenants: 12,
            history_s: 300.0,
            serve_s: 30.0,
            sessions_per_s: 3.0,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_workload_and_another_seed_another() {
        let (a, b) = (Workload::generate(&shape()), Workload::generate(&shape()));
        assert_eq!(a.execs.len(), b.execs.len());
        assert!(
            a.execs
                .iter()
                .zip(&b.execs)
                .all(|(x, y)| x.t == y.t && x.key == y.key && x.reads == y.reads)
        );
        let c = Workload::generate(&Shape { seed: 8, ..shape() });
        assert!(
            c.execs.len() != a.execs.len() || c.execs.iter().zip(&a.execs).any(|(x, y)| x.t != y.t)
        );
    }

    #[test]
    fn it_has_every_pattern_the_demo_promises() {
        let w = Workload::generate(&shape());
        assert!(w.execs.windows(2).all(|p| p[0].t <= p[1].t));
        assert!(w.execs.iter().all(|e| e.t >= 0.0 && e.t < w.end));
        // Sessions: profile, then index + embed, then cache + rank, under one key.
        let s = w
            .execs
            .iter()
            .find(|e| e.kind == "http" && w.states[e.reads[0]].id.as_str().ends_with("profile"))
            .unwrap();
        let next = w
            .execs
            .iter()
            .find(|e| e.key == s.key && e.t > s.t)
            .unwrap();
        assert!(w.states[next.reads[0]].id.as_str().ends_with("index"));
        assert_eq!(w.states[next.reads[1]].id.as_str(), "models/embed");
        // Timers are periodic.
        let cron: Vec<f64> = w
            .execs
            .iter()
            .filter(|e| e.key == "cron-1")
            .map(|e| e.t)
            .collect();
        assert!(cron.windows(2).all(|p| (p[1] - p[0] - 7.0).abs() < 0.2));
        // Zipf: tenant 0 runs more than tenant 11.
        let count = |k: &str| w.execs.iter().filter(|e| e.key == k).count();
        assert!(count("tenant-00") > 2 * count("tenant-11"));
        // Uploads fall in the served part, on tenants' indexes.
        assert!(!w.uploads.is_empty());
        assert!(w.uploads.iter().all(|u| u.t >= w.split && u.t < w.end));
        assert!(
            w.uploads
                .iter()
                .all(|u| w.states[u.state].id.as_str().ends_with("/index"))
        );
        // History: one record per read, in time order, ending before the split.
        let h = w.history(1_000_000.0);
        let reads: usize = w
            .execs
            .iter()
            .take_while(|e| e.t < w.split)
            .map(|e| e.reads.len())
            .sum();
        assert_eq!(h.len(), reads);
        assert!(h.windows(2).all(|p| p[0].ts <= p[1].ts));
        assert!(
            h.iter()
                .all(|r| r.ts < 1_000_000.0 + 0.01 && r.reads.len() == 1)
        );
        assert!(!w.served().is_empty() && w.served().iter().all(|e| e.t >= w.split));
    }
}
