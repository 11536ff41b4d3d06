//! The coordinator's metrics (served at `/metrics` on the gRPC port), beside the data
//! plane's own (`prewarm_data_*`).

use std::time::Duration;

use prewarm_metrics::{Counter, FloatGauge, Gauge, Histogram, LATENCY_BUCKETS, Registry};
use prewarm_proto::wire::{FailureKind, TransferAck};

const RETRAINS: &str =
    "Background retraining rounds by result (swapped: the challenger now serves; kept: it lost).";
const LOG_LOSS: &str = "Log-loss (nats) on the latest retraining round's held-back window, serving model and challenger.";
const WARM_RATE: &str = "Share of the latest retraining round's held-back executions each model's decisions started warm in a replay of the window (--retrain-judge replay).";

/// Handles to the coordinator's metrics.
pub struct CoordinatorMetrics {
    /// Attached capacities.
    pub capacities: Gauge,
    /// Invalidations sent.
    pub invalidations: Counter,
    /// Wire bytes acknowledged by agents.
    pub wire_bytes: Counter,
    /// Bytes agents read directly from the object store.
    pub store_bytes: Counter,
    /// Reused bytes acknowledged by agents.
    pub reused_bytes: Counter,
    /// Transfer durations as the requester saw them.
    pub transfer_seconds: Histogram,
    /// Events handled by the predictive loop.
    pub events: Counter,
    /// NATS messages delivered again after their events were handled (acknowledged, not
    /// handled twice).
    pub nats_redelivered: Counter,
    /// Events refused (malformed, unknown fields, invalid ids, oversize).
    pub events_refused: Counter,
    /// Events refused by the per-token rate limit.
    pub events_rate_limited: Counter,
    /// `POST /v1/events` requests shed under overload (503).
    pub requests_shed: Counter,
    /// History records the model learned from.
    pub history_records: Counter,
    /// Retention hints sent to agents.
    pub hints: Counter,
    /// Registered snapshot watchers.
    pub watchers: Gauge,
    /// Un-snapshotted bytes the watchers report, in total.
    pub dirty_bytes: Gauge,
    /// Retraining rounds whose challenger replaced the serving model.
    pub retrains_swapped: Counter,
    /// Retraining rounds whose challenger lost.
    pub retrains_kept: Counter,
    /// Retraining rounds that failed.
    pub retrains_failed: Counter,
    /// The latest retraining round's scores.
    pub scores: RoundScores,
}

/// The latest retraining round's scores of the serving model and the challenger.
pub struct RoundScores {
    /// The serving model's log-loss on the latest round's held-back window.
    pub champion_log_loss: FloatGauge,
    /// The latest challenger's log-loss on the same window.
    pub challenger_log_loss: FloatGauge,
    /// The share of the latest round's window the serving model's decisions started warm.
    pub champion_warm_rate: FloatGauge,
    /// … the challenger's.
    pub challenger_warm_rate: FloatGauge,
}

impl RoundScores {
    fn new(r: &Registry) -> Self {
        let gauge = |name, help, model| r.float_gauge(name, help, &[("model", model)]);
        Self {
            champion_log_loss: gauge("prewarm_coordinator_model_log_loss", LOG_LOSS, "champion"),
            challenger_log_loss: gauge(
                "prewarm_coordinator_model_log_loss",
                LOG_LOSS,
                "challenger",
            ),
            champion_warm_rate: gauge("prewarm_coordinator_model_warm_rate", WARM_RATE, "champion"),
            challenger_warm_rate: gauge(
                "prewarm_coordinator_model_warm_rate",
                WARM_RATE,
                "challenger",
            ),
        }
    }
}

impl CoordinatorMetrics {
    /// Registers them.
    pub fn new(r: &Registry) -> Self {
        CoordinatorMetrics {
            capacities: r.gauge(
                "prewarm_coordinator_capacities",
                "Attached capacities.",
                &[],
            ),
            events: r.counter(
                "prewarm_coordinator_events_total",
                "Events handled by the predictive loop.",
                &[],
            ),
            requests_shed: r.counter(
                "prewarm_coordinator_requests_shed_total",
                "POST /v1/events requests shed under overload (503 overloaded): no slot freed within the queue wait.",
                &[],
            ),
            events_rate_limited: r.counter(
                "prewarm_coordinator_events_rate_limited_total",
                "Events refused by the per-token rate limit (429).",
                &[],
            ),
            nats_redelivered: r.counter(
                "prewarm_coordinator_nats_redelivered_total",
                "NATS messages delivered again after their events were handled: acknowledged, not handled twice.",
                &[],
            ),
            events_refused: r.counter(
                "prewarm_coordinator_events_refused_total",
                "Events refused (malformed, unknown fields, invalid ids, oversize).",
                &[],
            ),
            history_records: r.counter(
                "prewarm_coordinator_history_records_total",
                "History records from agents the model learned from.",
                &[],
            ),
            hints: r.counter(
                "prewarm_coordinator_hints_total",
                "Retention hints sent to agents.",
                &[],
            ),
            watchers: r.gauge(
                "prewarm_coordinator_watchers",
                "Registered snapshot watchers.",
                &[],
            ),
            retrains_swapped: r.counter(
                "prewarm_coordinator_retrains_total",
                RETRAINS,
                &[("result", "swapped")],
            ),
            retrains_kept: r.counter(
                "prewarm_coordinator_retrains_total",
                RETRAINS,
                &[("result", "kept")],
            ),
            retrains_failed: r.counter(
                "prewarm_coordinator_retrains_total",
                RETRAINS,
                &[("result", "failed")],
            ),
            scores: RoundScores::new(r),
            dirty_bytes: r.gauge(
                "prewarm_coordinator_dirty_bytes",
                "Un-snapshotted bytes reported by the watchers, in total.",
                &[],
            ),
            invalidations: r.counter(
                "prewarm_coordinator_invalidations_total",
                "Invalidations sent to holders of older versions.",
                &[],
            ),
            wire_bytes: r.counter(
                "prewarm_coordinator_transfer_wire_bytes_total",
                "Data-plane bytes of acknowledged transfers.",
                &[],
            ),
            store_bytes: r.counter(
                "prewarm_coordinator_transfer_store_bytes_total",
                "Bytes of acknowledged transfers that agents read directly from the object store.",
                &[],
            ),
            reused_bytes: r.counter(
                "prewarm_coordinator_transfer_reused_bytes_total",
                "Bytes agents reused locally instead of fetching (delta transfer).",
                &[],
            ),
            transfer_seconds: r.histogram(
                "prewarm_coordinator_transfer_seconds",
                "Transfer duration, request to acknowledgement.",
                &[],
                LATENCY_BUCKETS,
            ),
        }
    }

    /// Records one predictive snapshot request's outcome.
    pub fn snapshot_request(&self, r: &Registry, result: &'static str) {
        r.counter(
            "prewarm_coordinator_snapshot_requests_total",
            "Snapshots asked of watchers before predictive transfers, by result.",
            &[("result", result)],
        )
        .inc();
    }

    /// Records one transfer.
    pub fn transfer(&self, r: &Registry, result: &'static str, ack: &TransferAck, d: Duration) {
        r.counter(
            "prewarm_coordinator_transfers_total",
            "Transfers requested, by result.",
            &[("result", result)],
        )
        .inc();
        self.wire_bytes.add(ack.wire_bytes);
        self.store_bytes.add(ack.store_bytes);
        self.reused_bytes.add(ack.reused_bytes);
        self.transfer_seconds.observe(d);
        if !ack.ok {
            let reason = FailureKind::try_from(ack.failure)
                .map(|f| f.as_str_name())
                .unwrap_or("UNKNOWN");
            r.counter(
                "prewarm_coordinator_failures_total",
                "Failed transfers, by reason.",
                &[("reason", reason)],
            )
            .inc();
        }
    }
}
