//! The agent's metrics (served at `/metrics`): handles created once, so the hot paths pay an
//! atomic add.

use std::time::Duration;

use prewarm_metrics::{Counter, Gauge, Histogram, LATENCY_BUCKETS, Registry};

/// Handles to the agent's metrics.
pub struct AgentMetrics {
    /// Data-plane bytes received.
    pub wire_bytes: Counter,
    /// Stored bytes read directly from the object store.
    pub store_bytes: Counter,
    /// Bytes copied from held states instead of fetched.
    pub reused_bytes: Counter,
    /// Bytes kept from interrupted transfers.
    pub resumed_bytes: Counter,
    /// Transfer durations.
    pub transfer_seconds: Histogram,
    /// Installed bytes.
    pub cache_bytes: Gauge,
    /// The budget.
    pub cache_budget: Gauge,
    /// States held.
    pub states: Gauge,
    /// States evicted.
    pub evictions: Counter,
    /// States dropped when their keep-alive ran out.
    pub expirations: Counter,
    /// Retention hints applied.
    pub hints: Counter,
    /// Invalidations that concerned a held state.
    pub invalidations: Counter,
    /// `ensure` calls refused because the lease cap was reached.
    pub shed: Counter,
    hit: (Counter, Histogram),
    miss: (Counter, Histogram),
    error: (Counter, Histogram),
}

impl AgentMetrics {
    /// Registers the agent's metrics.
    pub fn new(r: &Registry) -> Self {
        let ensure = |outcome: &str| {
            (
                r.counter(
                    "prewarm_agent_ensure_total",
                    "ensure calls, by outcome.",
                    &[("outcome", outcome)],
                ),
                r.histogram(
                    "prewarm_agent_ensure_seconds",
                    "ensure latency, by outcome.",
                    &[("outcome", outcome)],
                    LATENCY_BUCKETS,
                ),
            )
        };
        AgentMetrics {
            wire_bytes: r.counter(
                "prewarm_agent_wire_bytes_total",
                "Bytes received on the data plane (frames included).",
                &[],
            ),
            store_bytes: r.counter(
                "prewarm_agent_store_bytes_total",
                "Stored bytes read directly from the coordinator's object store (--data-source).",
                &[],
            ),
            reused_bytes: r.counter(
                "prewarm_agent_reused_bytes_total",
                "Bytes copied from states already held (delta transfer) instead of fetched.",
                &[],
            ),
            resumed_bytes: r.counter(
                "prewarm_agent_resumed_bytes_total",
                "Bytes kept (re-verified) from interrupted transfers.",
                &[],
            ),
            transfer_seconds: r.histogram(
                "prewarm_agent_transfer_seconds",
                "Duration of transfers that moved bytes.",
                &[],
                LATENCY_BUCKETS,
            ),
            cache_bytes: r.gauge(
                "prewarm_agent_cache_bytes",
                "Bytes installed or reserved.",
                &[],
            ),
            cache_budget: r.gauge("prewarm_agent_cache_budget_bytes", "The cache budget.", &[]),
            states: r.gauge("prewarm_agent_states", "States held.", &[]),
            evictions: r.counter("prewarm_agent_evictions_total", "States evicted.", &[]),
            expirations: r.counter(
                "prewarm_agent_expirations_total",
                "States dropped when their keep-alive ran out.",
                &[],
            ),
            hints: r.counter(
                "prewarm_agent_hints_total",
                "Retention hints from the coordinator's engine applied.",
                &[],
            ),
            invalidations: r.counter(
                "prewarm_agent_invalidations_total",
                "Newer versions announced for held states.",
                &[],
            ),
            shed: r.counter(
                "prewarm_agent_ensure_shed_total",
                "ensure calls refused with 503 overloaded: the agent held --max-leases leases.",
                &[],
            ),
            hit: ensure("hit"),
            miss: ensure("miss"),
            error: ensure("error"),
        }
    }

    /// Records one `ensure`.
    pub fn ensure(&self, outcome: &str, d: Duration) {
        let (c, h) = match outcome {
            "hit" => &self.hit,
            "miss" => &self.miss,
            _ => &self.error,
        };
        c.inc();
        h.observe(d);
    }

    /// Counts a failed transfer by reason.
    pub fn failure(&self, r: &Registry, reason: &'static str) {
        r.counter(
            "prewarm_agent_failures_total",
            "Failed transfers, by reason.",
            &[("reason", reason)],
        )
        .inc();
    }
}
