//! The demo's `report.html`: the comparison table, the time-to-ready distribution of every
//! run and their warm-start rate over the served time. Self-contained (inline SVG).

use std::fmt::Write as _;

use prewarm_report::html::{chart, esc};
use prewarm_report::text;

use crate::phase::PhaseResult;

/// The page.
pub fn html(phases: &[PhaseResult], setup: &str, seconds: f64) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>prewarm demo</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f4f4f4}}td:first-child{{text-align:left}}</style>
</head><body><h1>prewarm demo</h1>
<p>{}. The same executions were served three times by a real coordinator and real agents over loopback: on-demand only; with the best baseline, Markov, predicting through the decision engine; and with the learned policy — a GRU trained on the workload's history, mixed with Markov and frequency by online weights — predicting which states each event's execution will read. Run took {seconds:.0} s.</p>
<table><tr><th>run</th><th>executions</th><th>warm starts</th><th>time-to-ready p50</th><th>p99</th><th>bytes over the wire</th><th>reused (delta)</th><th>predictive transfers</th><th>never read after</th><th>cold reads: first use / new version / evicted / predicted, not ready</th><th>failed</th></tr>
"#,
        esc(setup)
    );
    for p in phases {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{:.1}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{} / {} / {} / {}</td><td>{}</td></tr>",
            esc(&p.label),
            p.execs.len(),
            p.warm_rate(),
            text::millis(p.ready_ms(0.5)),
            text::millis(p.ready_ms(0.99)),
            text::bytes(p.wire_bytes),
            text::bytes(p.reused_bytes),
            p.prefetches,
            text::bytes(p.prefetched_bytes),
            text::bytes(p.prefetched_unread_bytes),
            p.cold.first_use,
            p.cold.new_version,
            p.cold.evicted,
            p.cold.late,
            p.failed()
        );
    }
    s.push_str("</table>\n<h2>Time to ready</h2>\n");
    let cdf: Vec<(String, Vec<(f64, f64)>)> = phases
        .iter()
        .map(|p| {
            let pts = (0..=100)
                .map(|q| (p.ready_ms(f64::from(q) / 100.0), f64::from(q)))
                .collect();
            (p.label.clone(), pts)
        })
        .collect();
    s.push_str(&chart(
        "time-to-ready distribution (CDF)",
        "ms from execution start until every state it reads is ready (log scale)",
        "percentile of executions",
        &cdf,
        true,
    ));
    s.push_str("<h2>Warm starts over time</h2>\n");
    let over: Vec<(String, Vec<(f64, f64)>)> = phases
        .iter()
        .map(|p| {
            let end = p.execs.iter().map(|e| e.t).fold(0.0, f64::max);
            let pts = (0..=(end / 5.0) as usize)
                .filter_map(|b| {
                    let (lo, hi) = (b as f64 * 5.0, b as f64 * 5.0 + 5.0);
                    let bucket: Vec<_> = p.execs.iter().filter(|e| e.t >= lo && e.t < hi).collect();
                    (!bucket.is_empty()).then(|| {
                        let warm = bucket.iter().filter(|e| e.warm).count();
                        (lo + 2.5, 100.0 * warm as f64 / bucket.len() as f64)
                    })
                })
                .collect();
            (p.label.clone(), pts)
        })
        .collect();
    s.push_str(&chart(
        "warm-start rate, 5-second buckets",
        "seconds into the served part",
        "warm-start rate, %",
        &over,
        false,
    ));
    s.push_str("</body></html>\n");
    s
}
