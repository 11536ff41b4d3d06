//! What the demo reports: the three runs side by side, as a terminal table or JSON.

use std::path::PathBuf;

use prewarm_report::text;

use crate::phase::PhaseResult;

/// The demo's result.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// On-demand, Markov, the learned policy.
    pub phases: Vec<PhaseResult>,
    /// Wall time of the whole demo, seconds.
    pub seconds: f64,
    /// Where the HTML report was written.
    pub report: PathBuf,
}

impl Outcome {
    /// The JSON document `prewarm demo --json` prints.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "phases": self.phases.iter().map(phase_json).collect::<Vec<_>>(),
            "seconds": self.seconds,
            "report": self.report,
        })
    }

    /// The comparison table.
    pub fn table(&self) -> String {
        let phases = &self.phases;
        let row = |name: &str, f: &dyn Fn(&PhaseResult) -> String| {
            let mut r = vec![name.to_owned()];
            r.extend(phases.iter().map(f));
            r
        };
        let mut header = vec![""];
        header.extend(phases.iter().map(|p| p.label.as_str()));
        let rows = vec![
            row("executions", &|p| p.execs.len().to_string()),
            row("warm starts", &|p| format!("{:.1}%", p.warm_rate())),
            row("time-to-ready p50", &|p| text::millis(p.ready_ms(0.5))),
            row("time-to-ready p99", &|p| text::millis(p.ready_ms(0.99))),
            row("time-to-ready mean", &|p| text::millis(p.mean_ready_ms())),
            row("failed executions", &|p| p.failed().to_string()),
            row("bytes over the wire", &|p| text::bytes(p.wire_bytes)),
            row("bytes reused (delta)", &|p| text::bytes(p.reused_bytes)),
            row("predictive transfers", &|p| {
                format!("{} ({})", p.prefetches, text::bytes(p.prefetched_bytes))
            }),
            row("  never read after", &|p| {
                text::bytes(p.prefetched_unread_bytes)
            }),
            row("cold reads: first use", &|p| p.cold.first_use.to_string()),
            row("  new version needed", &|p| p.cold.new_version.to_string()),
            row("  evicted before reuse", &|p| p.cold.evicted.to_string()),
            row("  predicted, not ready", &|p| p.cold.late.to_string()),
            row("evictions", &|p| p.evictions.to_string()),
            row("new versions", &|p| p.uploads.to_string()),
        ];
        text::table(&header, &rows)
    }
}

fn phase_json(p: &PhaseResult) -> serde_json::Value {
    serde_json::json!({
        "policy": p.label,
        "executions": p.execs.len(),
        "warm_start_rate": p.warm_rate() / 100.0,
        "time_to_ready_ms": {
            "p50": p.ready_ms(0.5),
            "p99": p.ready_ms(0.99),
            "mean": p.mean_ready_ms(),
        },
        "failed": p.failed(),
        "wire_bytes": p.wire_bytes,
        "reused_bytes": p.reused_bytes,
        "predictive_transfers": p.prefetches,
        "predictive_bytes": p.prefetched_bytes,
        "predictive_unread_bytes": p.prefetched_unread_bytes,
        "evictions": p.evictions,
        "new_versions": p.uploads,
        "cold_reads": p.cold,
        "seconds": p.seconds,
    })
}
