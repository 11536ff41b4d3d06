//! The replay's report: everything one `prewarm replay` produced ([`Replay`], plain data the
//! command fills in) and its HTML page — the table and three plots: warm-start rate against
//! cache memory-time and bytes moved (the cache-size sweep), the time-to-ready distribution,
//! and the warm-start rate over time.

use std::fmt::Write as _;

use prewarm_sim::{SimConfig, SimReport};
use serde::Serialize;

use crate::html::{chart, esc};
use crate::text::bytes;

/// Everything a replay produced.
#[derive(Serialize)]
pub struct Replay {
    /// The history replayed.
    pub history: String,
    /// Records in it.
    pub records: usize,
    /// The settings.
    pub config: SimConfig,
    /// One row per policy at the configured cache size.
    pub rows: Vec<SimReport>,
    /// (cache bytes per capacity, rows) per swept size.
    pub sweep: Vec<(u64, Vec<SimReport>)>,
    /// Each learned policy against the baselines' frontier at every size.
    pub standings: Vec<prewarm_sim::pareto::Standing>,
    /// The best warm-start rate any policy that learns only from the past can reach.
    pub ceiling: prewarm_sim::ceiling::Ceiling,
    /// The retraining rounds run during the replays (empty: none).
    pub retraining: Vec<prewarm_sim::retrain::RoundLog>,
    /// The settings learned from the warm-up part, per cache size (empty: not tuned).
    pub tuning: Vec<(u64, prewarm_sim::tune::Tuned)>,
}

/// The replay's report page.
pub fn html(r: &Replay) -> String {
    let mut s = summary_table(r);
    s.push_str(&frontiers_section(r));
    s.push_str(&standings_section(r));
    s.push_str(&retraining_section(r));
    s.push_str(&tuning_section(r));
    s.push_str(&time_to_ready_section(r));
    s.push_str(&over_time_section(r));
    s.push_str("</body></html>\n");
    s
}

/// The page head, the settings replayed and one table row per policy.
fn summary_table(r: &Replay) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>prewarm replay: {}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f4f4f4}}td:first-child{{text-align:left}}</style>
</head><body><h1>prewarm replay</h1>
<p>History <code>{}</code>, {} records. {} capacities, cache {} bytes each, link {:.0} MB/s, latency {:.1} ms, lead {:.1} s, keep-alive {}, memory price {} s per GB·s, warm-up share {:.2} (not counted).</p>
<table><tr><th>policy</th><th>warm %</th><th>of oracle</th><th>ttr p50 ms</th><th>ttr p99 ms</th><th>moved GB</th><th>wasted GB</th><th>GB·s</th></tr>
"#,
        esc(&r.history),
        esc(&r.history),
        r.records,
        r.config.capacities,
        r.config.cache_bytes,
        r.config.bandwidth / 1e6,
        r.config.latency_s * 1e3,
        r.config.lead_s,
        if r.config.keep_alive_s.is_finite() {
            format!("{:.0} s", r.config.keep_alive_s)
        } else {
            "until pressure".to_owned()
        },
        r.config.memory_price,
        r.config.warmup,
    );
    for x in &r.rows {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{:.1}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.0}</td></tr>",
            esc(&x.policy),
            100.0 * x.warm_rate,
            x.oracle_share
                .map_or("-".into(), |o| format!("{:.0}%", 100.0 * o)),
            x.ttr_p50_ms,
            x.ttr_p99_ms,
            x.bytes as f64 / 1e9,
            x.wasted_bytes as f64 / 1e9,
            x.memory_gb_s
        );
    }
    s.push_str("</table>\n");
    s
}

/// Warm-start rate against cache memory-time and against bytes moved, per policy.
fn frontiers_section(r: &Replay) -> String {
    let mut s = String::new();
    // Warm-start rate against each cost: every (size) run per policy.
    s.push_str("<h2>Frontiers: warm-start rate against cache memory-time and bytes moved</h2>\n");
    if r.sweep.is_empty() {
        s.push_str("<p>One cache size only: run with <code>--sweep</code> for curves.</p>\n");
    }
    for (cost, title, label) in [
        (
            prewarm_sim::pareto::Cost::Memory,
            "warm starts vs memory (cache-size sweep)",
            "cache memory-time, GB·s (log scale)",
        ),
        (
            prewarm_sim::pareto::Cost::Bytes,
            "warm starts vs bytes moved (cache-size sweep)",
            "bytes moved, GB (log scale)",
        ),
    ] {
        let scale = if cost == prewarm_sim::pareto::Cost::Bytes {
            1e-9
        } else {
            1.0
        };
        let mut by_policy: Vec<(String, Vec<(f64, f64)>)> = r
            .rows
            .iter()
            .map(|x| {
                (
                    x.policy.clone(),
                    vec![(scale * cost.of(x), 100.0 * x.warm_rate)],
                )
            })
            .collect();
        for (_, rows) in &r.sweep {
            for x in rows {
                if let Some(p) = by_policy.iter_mut().find(|p| p.0 == x.policy) {
                    p.1.push((scale * cost.of(x), 100.0 * x.warm_rate));
                }
            }
        }
        for p in &mut by_policy {
            p.1.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        s.push_str(&chart(title, label, "warm-start rate, %", &by_policy, true));
    }
    s
}

/// The time-to-ready distribution of each policy.
fn time_to_ready_section(r: &Replay) -> String {
    let mut s = String::new();
    let cdf: Vec<(String, Vec<(f64, f64)>)> = r
        .rows
        .iter()
        .map(|x| {
            (
                x.policy.clone(),
                x.ttr_percentiles_ms
                    .iter()
                    .enumerate()
                    .map(|(q, ms)| (*ms, q as f64))
                    .collect(),
            )
        })
        .collect();
    s.push_str("<h2>Time to ready</h2>\n");
    s.push_str(&chart(
        "time-to-ready distribution (CDF)",
        "ms from execution start until every read is ready (log scale)",
        "percentile of executions",
        &cdf,
        true,
    ));
    s
}

/// The warm-start rate of each policy over the replay.
fn over_time_section(r: &Replay) -> String {
    let mut s = String::new();
    let over: Vec<(String, Vec<(f64, f64)>)> = r
        .rows
        .iter()
        .map(|x| {
            let t0 = x.over_time.first().map_or(0.0, |p| p.0);
            (
                x.policy.clone(),
                x.over_time
                    .iter()
                    .filter(|p| p.2 > 0)
                    .map(|p| ((p.0 - t0) / 3600.0, 100.0 * p.1))
                    .collect(),
            )
        })
        .collect();
    s.push_str("<h2>Warm-start rate over time</h2>\n");
    s.push_str(&chart(
        "warm-start rate over the replay",
        "hours since the end of the warm-up",
        "warm-start rate, %",
        &over,
        false,
    ));
    s
}

/// The causal ceiling and the learned policies' standings against the baselines' frontier.
/// The retraining rounds run during the replays (nothing when there were none).
fn retraining_section(r: &Replay) -> String {
    if r.retraining.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "<h2>Retraining rounds</h2>\n<table><tr><th>model</th><th>round</th><th>history</th><th>challenger nats</th><th>serving nats</th><th>held back</th><th>outcome</th></tr>\n",
    );
    for x in &r.retraining {
        let (c, k, n, out) = match (&x.round, &x.error) {
            (Some(q), _) => (
                format!("{:.4}", q.challenger.log_loss),
                format!("{:.4}", q.champion.log_loss),
                q.held_out.to_string(),
                if q.swapped { "swapped" } else { "kept" }.to_owned(),
            ),
            (None, e) => (
                "-".into(),
                "-".into(),
                "-".into(),
                format!("not run: {}", e.as_deref().unwrap_or("?")),
            ),
        };
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{c}</td><td>{k}</td><td>{n}</td><td>{}</td></tr>",
            esc(&x.arch),
            x.k + 1,
            x.history,
            esc(&out)
        );
    }
    s.push_str("</table>\n");
    s
}

/// The settings learned from the warm-up part (nothing when the replay did not tune).
fn tuning_section(r: &Replay) -> String {
    if r.tuning.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "<h2>Settings learned from the warm-up part</h2>\n<p>Each candidate replayed over the \
         warm-up part (its second half counted) and compared execution by execution with the \
         given setting; a candidate is taken only when its net gain passes McNemar's test. \
         Among the chosen model's candidates the warm-up cannot tell from the best (within \
         one standard error: \"tied\"), the one moving the fewest bytes is chosen.</p>\n\
         <table><tr><th>cache</th><th>policy</th><th>candidate</th><th>warm</th><th>gained</th>\
         <th>lost</th><th>bytes</th><th>tied</th><th>chosen</th></tr>\n",
    );
    for (cache, t) in &r.tuning {
        for x in &t.trials {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                bytes(*cache),
                esc(&t.policy),
                esc(&format!("{} {}", x.model, x.setting.flags())),
                x.warm,
                x.executions,
                x.gained,
                x.lost,
                bytes(x.bytes),
                if x.tied { "tied" } else { "" },
                if t.is_chosen(x) { "✓" } else { "" }
            );
        }
    }
    s.push_str("</table>\n");
    s
}

fn standings_section(r: &Replay) -> String {
    let c = &r.ceiling;
    let mut s = format!(
        "<p>Causal ceiling {:.1}%: {} of {} counted executions read a state no earlier record \
         named; the oracle starts them warm, no policy that learns from the past can.</p>\n",
        100.0 * c.warm_rate,
        c.unforeseeable,
        c.executions
    );
    if r.standings.is_empty() {
        return s;
    }
    s.push_str("<h2>Learned policies against the baselines' frontier</h2>\n<table><tr><th>learned</th><th>cache bytes</th><th>warm %</th><th>best baseline at ≤ its GB·s</th><th>oracle</th><th>on frontier</th><th>gap closed %</th><th>of causal gap %</th><th>bytes vs oracle</th></tr>\n");
    let pct = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.1}", 100.0 * v));
    for x in &r.standings {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&x.policy),
            x.cache_bytes,
            100.0 * x.warm_rate,
            pct(x.baseline_at_cost),
            pct(x.oracle),
            if x.on_frontier { "yes" } else { "no" },
            pct(x.gap_closed),
            pct(x.causal_gap_closed),
            x.bytes_vs_oracle.map_or("-".into(), |b| format!("{b:.2}×")),
        );
    }
    s.push_str("</table>\n");
    s
}
