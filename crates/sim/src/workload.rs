//! Fleet-scale synthetic histories (`prewarm generate`): the demo's workload model, scaled
//! to the sizes a replay plans for, written as it is generated (memory stays flat however
//! many records are asked for).
//!
//! - **Tenants** by Zipf popularity (s = 1) start **sessions**: `profile` → `index` and the
//!   tenant's embedding model → `cache` and its ranking model, 1.5–3 s apart, all under the
//!   tenant's key (the next state follows from the previous one).
//! - **Shared models**, a Zipf-popular few of them per tenant (fixed per tenant).
//! - **Diurnal load**: session arrivals follow `rate · (1 + a·sin(2πt / day))`.
//! - **Bursts**: one tenant at a time starts five sessions within a second.
//! - **Versions**: uploads (Zipf over tenants) write a new version of a tenant's index, which
//!   later sessions then need.
//!
//! Same shape and seed, same records.

use std::collections::BinaryHeap;
use std::io::Write;

use prewarm_core::{Event, HistoryRecord, ReadAccess, ResourceId, WriteAccess};

const MIB: u64 = 1 << 20;

/// What to generate.
#[derive(Clone, Debug)]
pub struct FleetShape {
    /// Seed of every random choice.
    pub seed: u64,
    /// Records to write (executions and uploads).
    pub records: u64,
    /// Tenants.
    pub tenants: usize,
    /// Shared models.
    pub models: usize,
    /// Mean session arrivals per second.
    pub sessions_per_s: f64,
    /// Diurnal amplitude, 0–1 (0: flat).
    pub diurnal: f64,
    /// Mean seconds between bursts.
    pub burst_every_s: f64,
    /// Mean seconds between uploads.
    pub upload_every_s: f64,
}

/// What was written.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Generated {
    /// Records written.
    pub records: u64,
    /// Distinct states they name (tenants × 3 + models).
    pub states: u64,
    /// Seconds of trace covered.
    pub span_s: f64,
    /// The most records in any one minute, per second (what a coordinator must decide at).
    pub peak_per_s: f64,
}

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn exp(&mut self, mean: f64) -> f64 {
        -(1.0 - self.uniform()).ln() * mean
    }
}

/// Zipf (s = 1) over `n` items by its cumulative weights.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize) -> Self {
        let mut acc = 0.0;
        Self(
            (0..n.max(1))
                .map(|i| {
                    acc += 1.0 / (i as f64 + 1.0);
                    acc
                })
                .collect(),
        )
    }

    fn draw(&self, rng: &mut Rng) -> usize {
        let u = rng.uniform() * self.0.last().copied().unwrap_or(1.0);
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

/// One pending record: an execution step or an upload, ordered by time (earliest first).
struct Due {
    t: f64,
    seq: u64,
    rec: HistoryRecord,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        self.t == o.t && self.seq == o.seq
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

fn id(s: String) -> ResourceId {
    ResourceId::new(s).expect("generated ids are valid")
}

/// The generator's state: what is due, and the catalog's names and sizes.
struct Gen<'a> {
    shape: &'a FleetShape,
    rng: Rng,
    tenants: Zipf,
    models: Zipf,
    due: BinaryHeap<Due>,
    seq: u64,
}

impl Gen<'_> {
    fn push(&mut self, t: f64, kind: &str, key: String, reads: Vec<(ResourceId, u64)>) {
        self.seq += 1;
        let mut rec = HistoryRecord {
            ts: t,
            event: Event {
                kind: kind.into(),
                key,
                attrs: Default::default(),
                needs: Vec::new(),
            },
            capacity: None,
            reads: Vec::new(),
            writes: Vec::new(),
            duration_s: 0.2,
        };
        for (resource, bytes) in reads {
            rec.reads.push(ReadAccess {
                resource,
                version: None,
                bytes,
            });
        }
        self.due.push(Due {
            t,
            seq: self.seq,
            rec,
        });
    }

    /// Tenant `i`'s state `name` and its size (the index's size varies by tenant).
    fn state(&self, i: usize, name: &str) -> (ResourceId, u64) {
        let bytes = match name {
            "profile" => MIB,
            "index" => (4 + (i as u64 * 7919) % 5) * MIB,
            _ => 2 * MIB,
        };
        (id(format!("tenants/t{i}/{name}")), bytes)
    }

    /// Tenant `i`'s embedding (`which` 0) or ranking (1) model: Zipf-popular, fixed per
    /// tenant.
    fn model(&self, i: usize, which: u64) -> (ResourceId, u64) {
        let mut r = Rng(self.shape.seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ which);
        let m = self.models.draw(&mut r);
        (id(format!("models/m{m}")), (12 + 4 * which) * MIB)
    }

    fn session(&mut self, tenant: usize, t: f64) {
        let key = format!("tenant-{tenant}");
        let t1 = t + 1.5 + 1.5 * self.rng.uniform();
        let t2 = t1 + 1.5 + 1.5 * self.rng.uniform();
        let steps = [
            (t, vec![self.state(tenant, "profile")]),
            (t1, vec![self.state(tenant, "index"), self.model(tenant, 0)]),
            (t2, vec![self.state(tenant, "cache"), self.model(tenant, 1)]),
        ];
        for (t, reads) in steps {
            self.push(t, "http", key.clone(), reads);
        }
    }

    fn upload(&mut self, t: f64) {
        let tenant = self.tenants.draw(&mut self.rng);
        let (resource, bytes) = self.state(tenant, "index");
        self.push(t, "upload", format!("tenant-{tenant}"), Vec::new());
        let due = self.due.peek_mut();
        if let Some(mut d) = due.filter(|d| d.seq == self.seq) {
            d.rec.writes.push(WriteAccess { resource, bytes });
        }
    }
}

/// Writes `shape.records` records to `out` as JSON lines, in time order, starting at Unix
/// time `t0`.
pub fn generate(shape: &FleetShape, t0: f64, out: &mut impl Write) -> std::io::Result<Generated> {
    let mut g = Gen {
        shape,
        rng: Rng(shape.seed),
        tenants: Zipf::new(shape.tenants),
        models: Zipf::new(shape.models),
        due: BinaryHeap::new(),
        seq: 0,
    };
    let peak_rate = shape.sessions_per_s * (1.0 + shape.diurnal.clamp(0.0, 1.0));
    let (mut t, mut next_burst, mut next_upload) = (
        0.0,
        g.rng.exp(shape.burst_every_s),
        g.rng.exp(shape.upload_every_s),
    );
    let mut done = Generated {
        states: shape.tenants as u64 * 3 + shape.models as u64,
        ..Default::default()
    };
    let mut minute = (0i64, 0u64);
    while done.records < shape.records {
        // The next session arrival (thinning against the diurnal rate), burst or upload.
        t += g.rng.exp(1.0 / peak_rate.max(1e-9));
        while next_burst <= t {
            let tenant = g.rng.next() as usize % shape.tenants.max(1);
            for _ in 0..5 {
                let at = next_burst + g.rng.uniform();
                g.session(tenant, at);
            }
            next_burst += g.rng.exp(shape.burst_every_s);
        }
        while next_upload <= t {
            g.upload(next_upload);
            next_upload += g.rng.exp(shape.upload_every_s);
        }
        let day = (2.0 * std::f64::consts::PI * t / 86_400.0).sin();
        let rate = shape.sessions_per_s * (1.0 + shape.diurnal * day);
        if g.rng.uniform() * peak_rate < rate {
            let tenant = g.tenants.draw(&mut g.rng);
            g.session(tenant, t);
        }
        // Everything due before now is final: no later draw lands earlier.
        while g.due.peek().is_some_and(|d| d.t <= t) && done.records < shape.records {
            let mut d = g.due.pop().expect("peeked");
            d.rec.ts = t0 + d.t;
            serde_json::to_writer(&mut *out, &d.rec)?;
            out.write_all(b"\n")?;
            done.records += 1;
            done.span_s = d.t;
            let m = (d.t / 60.0) as i64;
            minute = if m == minute.0 {
                (m, minute.1 + 1)
            } else {
                (m, 1)
            };
            done.peak_per_s = done.peak_per_s.max(minute.1 as f64 / 60.0);
        }
    }
    out.flush()?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn shape(records: u64, seed: u64) -> FleetShape {
        FleetShape {
            seed,
            records,
            tenants: 1_000,
            models: 20,
            sessions_per_s: 20.0,
            diurnal: 0.5,
            burst_every_s: 20.0,
            upload_every_s: 8.0,
        }
    }

    fn records(s: &FleetShape) -> Vec<HistoryRecord> {
        let mut out = Vec::new();
        generate(s, 1e9, &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn the_records_are_ordered_seeded_and_shaped_like_sessions_and_uploads() {
        let a = records(&shape(5_000, 1));
        assert_eq!(a.len(), 5_000);
        assert!(a.windows(2).all(|w| w[0].ts <= w[1].ts));
        let b = records(&shape(5_000, 1));
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.ts == y.ts && x.reads == y.reads)
        );
        let c = records(&shape(5_000, 2));
        assert!(a.iter().zip(&c).any(|(x, y)| x.event.key != y.event.key));
        // Sessions: profile, then index + a model, then cache + a model, under one key.
        // (A tenant seen in exactly one session, so its steps do not interleave.)
        let mut per_key: std::collections::HashMap<&str, Vec<&HistoryRecord>> = Default::default();
        for r in a.iter().filter(|r| r.event.kind == "http") {
            per_key.entry(r.event.key.as_str()).or_default().push(r);
        }
        let steps = per_key.values().find(|v| v.len() == 3).unwrap();
        assert!(steps[0].reads[0].resource.as_str().ends_with("/profile"));
        assert!(steps[1].reads[0].resource.as_str().ends_with("/index"));
        assert!(steps[1].reads[1].resource.as_str().starts_with("models/"));
        // Uploads write a tenant's index; popular tenants come back (Zipf).
        let uploads = a.iter().filter(|r| !r.writes.is_empty()).count();
        assert!(uploads > 0);
        let top = a.iter().filter(|r| r.event.key == "tenant-0").count();
        let tail = a.iter().filter(|r| r.event.key == "tenant-999").count();
        assert!(top > 10 * tail.max(1), "tenant-0 {top}, tenant-999 {tail}");
    }
}
