//! The planner: for one event, which predicted states to move to the capacity that will run
//! it. Every term is in seconds of cold start and comes from the model's numbers; nothing is
//! a hand-set weight. Prefetching `s` (chance `p` that the coming execution reads it) against
//! not prefetching it:
//!
//! ```text
//! fetch  = latency + bytes / bandwidth
//! saved  = fetch − lateness      lateness = max(0, queued ahead + fetch − lead)
//! net    = p · (saved − early)                         (read: the wait is avoided; what it
//!                                                       displaces and the link time it
//!                                                       takes would go on demand anyway)
//!        + (1 − p) · (reuse · fetch − displaced)       (not read: it may be reused within
//!                                                       the cache's horizon, and what it
//!                                                       evicted loses its own value)
//!        − (1 − p) · link_price · fetch                (the link time it took for nothing)
//!        − (1 − p) · memory_price · bytes · horizon    (the memory-time it held for nothing)
//! ```
//!
//! The two prices are the operator's: how many seconds of cold start a second of link time
//! and a GB·s of cache are worth (1 and 0 by default: link time counts like waiting time,
//! memory is free until it runs out). Link time may instead be priced by how busy the link
//! is ([`LinkPrice::Queue`]): on-demand fetches go ahead of predictive ones on a capacity's
//! link (the agent's and the replay's alike), so a prefetch nobody reads costs only the
//! prefetches it holds up — nothing on an idle link, a full cold start's worth once the
//! predictive transfers queued ahead of it fill the lead. Not the default: it wins where
//! caches have room and loses where they do not (BENCHMARKS.md, "Link time priced by the
//! queue").
//!
//! `early` is 0 for a prefetch at the event (its victims would go at the on-demand fetch
//! `lead` later anyway). A pre-warm ahead of its event, expected to be read `lead_s` from
//! now, evicts them that much earlier: `early` is what they were expected to save within
//! `lead_s` ([`crate::CacheBook::value_within`]; for the oracle, the victims needed before
//! the pre-warmed state is — Belady's comparison of next uses).
//!
//! `displaced` is the value (seconds) the capacity's eviction rule says its victims held
//! ([`crate::CacheBook::peek_victims`]), `reuse` the chance of a use within the horizon from
//! the next-use estimate. A prefetch goes out when `net > 0`, best first, while the
//! predictive bytes in flight stay under the cap and the event's transfers under its limit.
//! Candidates already held at a recent-enough version, already on their way, or that cannot
//! fit even after evicting every unleased state are skipped. On-demand fetches do not pass
//! through here: they are never capped.

use prewarm_core::{ResourceId, Version, VersionPolicy};
use serde::Serialize;

/// How the link time of a prefetch that is not read is priced (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkPrice {
    /// The share of the lead that the predictive transfers queued ahead already take
    /// (0 on an idle link, 1 once they fill the lead).
    Queue,
    /// This many seconds of cold start per second of link time.
    Fixed(f64),
}

impl LinkPrice {
    /// The price for a transfer with `ahead` seconds queued before it and `lead` seconds to
    /// arrive in.
    pub fn at(self, ahead: f64, lead: f64) -> f64 {
        match self {
            LinkPrice::Queue => (ahead.max(0.0) / lead.max(1e-3)).min(1.0),
            LinkPrice::Fixed(p) => p.max(0.0),
        }
    }
}

impl std::str::FromStr for LinkPrice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "queue" {
            return Ok(LinkPrice::Queue);
        }
        match s.parse::<f64>() {
            Ok(p) if p.is_finite() && p >= 0.0 => Ok(LinkPrice::Fixed(p)),
            _ => Err(format!(
                "{s:?} is neither `queue` nor a price of at least 0 (seconds of cold start per second of link time)"
            )),
        }
    }
}

impl std::fmt::Display for LinkPrice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkPrice::Queue => f.write_str("queue"),
            LinkPrice::Fixed(p) => write!(f, "{p}"),
        }
    }
}

/// Planner settings.
#[derive(Clone, Debug, Serialize)]
pub struct PlannerConfig {
    /// Smallest probability acted on (0: the costs alone decide).
    pub threshold: f64,
    /// Cap on predictive bytes in flight to one capacity.
    pub max_in_flight: u64,
    /// The link's bandwidth to a capacity, bytes/s (prices time saved and wasted).
    pub bandwidth: f64,
    /// Fixed cost of one transfer, seconds.
    pub latency_s: f64,
    /// Most transfers requested for one event.
    pub max_per_event: usize,
    /// Time from an event to the start of its execution, seconds (how early a prefetch can
    /// start before it is late).
    pub lead_s: f64,
    /// Price of cache memory, seconds of cold start per GB·s held (0: memory is free until
    /// it runs out).
    pub memory_price: f64,
    /// Price of link time, seconds of cold start per second a prefetch nobody reads
    /// occupies the link.
    pub link_price: LinkPrice,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            threshold: 0.0,
            max_in_flight: 1 << 30,
            bandwidth: 100e6,
            latency_s: 0.005,
            max_per_event: 4,
            lead_s: 1.0,
            memory_price: 0.0,
            link_price: LinkPrice::Fixed(1.0),
        }
    }
}

impl PlannerConfig {
    /// Seconds a cold fetch of `bytes` takes.
    pub fn fetch_s(&self, bytes: u64) -> f64 {
        self.latency_s + bytes as f64 / self.bandwidth.max(1.0)
    }

    /// The price of holding `bytes` for one second, in seconds of cold start.
    pub fn cost_per_s(&self, bytes: u64) -> f64 {
        self.memory_price * bytes as f64 / 1e9
    }
}

/// A predicted state, resolved against the store by the caller.
#[derive(Clone, Debug)]
pub struct Want {
    /// The resource.
    pub resource: ResourceId,
    /// Chance the coming execution reads it.
    pub probability: f64,
    /// Which versions would do.
    pub version: VersionPolicy,
    /// The newest committed version.
    pub latest: Version,
    /// Its size.
    pub bytes: u64,
    /// Chance it is used again within the target's horizon if held (beyond this execution).
    pub reuse: f64,
    /// Seconds until it is expected to be read, when that is not the planner's lead (a
    /// pre-warm ahead of the next event); `None`: the lead.
    pub lead_s: Option<f64>,
}

impl Want {
    /// The oldest version that would do.
    pub fn need(&self) -> Version {
        match self.version {
            VersionPolicy::Latest => self.latest,
            VersionPolicy::AtLeast(v) => v.min(self.latest),
        }
    }
}

/// What the planner needs to know about the target capacity.
pub trait Target {
    /// The newest version of `resource` held (installed).
    fn held(&self, resource: &ResourceId) -> Option<Version>;
    /// A transfer of `resource` is already under way.
    fn in_flight(&self, resource: &ResourceId) -> bool;
    /// Budget minus bytes held and reserved.
    fn free_bytes(&self) -> u64;
    /// Seconds of cold start the states evicted to free `need` bytes (beyond the free
    /// ones) were expected to save; `None` when that much cannot be freed.
    fn displaced(&self, need: u64) -> Option<f64>;
    /// What the same states were expected to save within `window` seconds
    /// ([`crate::CacheBook::value_within`]): the cost of evicting them that much earlier
    /// than an on-demand fetch would; `None` when that much cannot be freed.
    fn displaced_within(&self, need: u64, window: f64) -> Option<f64>;
    /// Predictive bytes already moving to it.
    fn predictive_in_flight(&self) -> u64;
    /// Its cache's horizon (how long a state admitted now would stay), seconds.
    fn horizon(&self) -> Option<f64>;
}

/// A transfer to request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// The resource.
    pub resource: ResourceId,
    /// The version to load.
    pub version: Version,
    /// Its size.
    pub bytes: u64,
    /// The prediction's probability.
    pub probability: f64,
    /// Its score (expected seconds saved, net).
    pub score: f64,
}

/// The planner (stateless apart from its settings).
#[derive(Clone, Debug, Default)]
pub struct Planner {
    /// Settings.
    pub cfg: PlannerConfig,
}

impl Planner {
    /// A planner with `cfg`.
    pub fn new(cfg: PlannerConfig) -> Self {
        Self { cfg }
    }

    /// The net seconds saved by prefetching `w` when `extra` more bytes than are free must
    /// be found (and `already` were found for earlier choices), `ahead` seconds of transfers
    /// queued before it (see the module docs).
    fn net(&self, w: &Want, target: &dyn Target, already: u64, ahead: f64) -> Option<f64> {
        let c = &self.cfg;
        let p = w.probability.clamp(0.0, 1.0);
        let fetch = c.fetch_s(w.bytes);
        let free = target.free_bytes();
        let need_before = already.saturating_sub(free);
        let need_after = (already + w.bytes).saturating_sub(free);
        let displaced =
            target.displaced(need_after)? - target.displaced(need_before).unwrap_or(0.0);
        let lead = w.lead_s.unwrap_or(c.lead_s).max(0.0);
        let lateness = (ahead + fetch - lead).max(0.0);
        let saved = (fetch - lateness).max(0.0);
        // Read `lead_s` from now (a pre-warm ahead of its event): its victims go that much
        // earlier than an on-demand fetch would evict them, and lose their uses meanwhile.
        let early = match w.lead_s {
            Some(wait) => {
                target.displaced_within(need_after, wait)?
                    - target.displaced_within(need_before, wait).unwrap_or(0.0)
            }
            None => 0.0,
        };
        let horizon = target.horizon().unwrap_or(f64::INFINITY);
        let memory = if c.memory_price > 0.0 {
            c.cost_per_s(w.bytes) * horizon.min(1e7)
        } else {
            0.0
        };
        let unread = w.reuse.clamp(0.0, 1.0) * fetch
            - displaced.max(0.0)
            - c.link_price.at(ahead, lead) * fetch
            - memory;
        Some(p * (saved - early.max(0.0)) + (1.0 - p) * unread)
    }

    /// The transfers to request for `wants` on `target`, best first.
    pub fn plan(&self, wants: &[Want], target: &dyn Target) -> Vec<Decision> {
        let c = &self.cfg;
        let in_flight = target.predictive_in_flight();
        let ahead = in_flight as f64 / c.bandwidth.max(1.0);
        let mut scored: Vec<Decision> = wants
            .iter()
            .filter(|w| w.probability > 0.0 && w.probability >= c.threshold)
            .filter(|w| {
                target.held(&w.resource).is_none_or(|h| h < w.need())
                    && !target.in_flight(&w.resource)
            })
            .filter_map(|w| {
                let score = self.net(w, target, 0, ahead)?;
                (score > 0.0).then(|| Decision {
                    resource: w.resource.clone(),
                    version: w.latest,
                    bytes: w.bytes,
                    probability: w.probability.min(1.0),
                    score,
                })
            })
            .collect();
        scored.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.resource.cmp(&b.resource))
        });
        // Taken in order, each re-priced against the room the earlier ones took.
        let mut out = Vec::new();
        let (mut moving, mut taken) = (in_flight, 0u64);
        for d in scored {
            if out.len() >= c.max_per_event {
                break;
            }
            if moving + d.bytes > c.max_in_flight {
                continue;
            }
            let w = wants
                .iter()
                .find(|w| w.resource == d.resource)
                .expect("scored from wants");
            let ahead = moving as f64 / c.bandwidth.max(1.0);
            match self.net(w, target, taken, ahead) {
                Some(score) if score > 0.0 => {
                    moving += d.bytes;
                    taken += d.bytes;
                    out.push(Decision { score, ..d });
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
