//! A replay's figures as terminal text: the per-policy table, the causal ceiling, the
//! learned policies' standings against the baselines' frontier, retraining rounds.

use crate::text::{bytes, table as table_of};

/// One retraining round, in one line.
pub fn round_line(r: &prewarm_sim::retrain::RoundLog) -> String {
    match (&r.round, &r.error) {
        (Some(x), _) => format!(
            "retraining {} round {} at {} records: challenger {:.4} vs serving {:.4} nats{} on {} \
             held back → {} ({:.1} s)",
            r.arch,
            r.k + 1,
            r.history,
            x.challenger.log_loss,
            x.champion.log_loss,
            match (x.challenger.warm_rate, x.champion.warm_rate) {
                (Some(a), Some(b)) => format!(", {:.1}% vs {:.1}% warm", 100.0 * a, 100.0 * b),
                _ => String::new(),
            },
            x.held_out,
            if x.swapped { "swapped" } else { "kept" },
            x.seconds
        ),
        (None, e) => format!(
            "retraining {} round {} at {} records: not run ({})",
            r.arch,
            r.k + 1,
            r.history,
            e.as_deref().unwrap_or("?")
        ),
    }
}

/// What the tuner chose for one policy at one cache size, in one line.
pub fn tuned_line(cache: u64, t: &prewarm_sim::tune::Tuned) -> String {
    let chosen = t.trials.iter().find(|x| t.is_chosen(x));
    let why = match chosen {
        Some(x) if !t.kept() => format!(
            "{} executions gained, {} lost against the given setting",
            x.gained, x.lost
        ),
        _ => "no candidate's gain stood out".to_owned(),
    };
    let why = match chosen {
        Some(x) if t.by_bytes => format!(
            "{why}; the fewest bytes ({}) among those the warm-up cannot tell apart",
            bytes(x.bytes)
        ),
        _ => why,
    };
    format!(
        "tuned {} at {} on the warm-up part ({} records): {} ({why})",
        t.policy,
        bytes(cache),
        t.records,
        t.flags()
    )
}

/// One round of re-learning a policy's settings while it ran.
pub fn retuned_line(policy: &str, r: &prewarm_sim::retune::Retuned) -> String {
    if r.to == r.from {
        format!(
            "retuned {policy} after {} executions: kept {} (no other setting's gain stood out)",
            r.at,
            r.from.flags()
        )
    } else {
        format!(
            "retuned {policy} after {} executions: {} → {} ({} executions gained, {} lost)",
            r.at,
            r.from.flags(),
            r.to.flags(),
            r.gained,
            r.lost
        )
    }
}

/// What bounds every causal policy, in one sentence.
pub fn ceiling_line(c: &prewarm_sim::ceiling::Ceiling) -> String {
    format!(
        "causal ceiling {:.1}%: {} of {} counted executions read a state no earlier record \
         named (the oracle starts them warm; no policy that learns from the past can)",
        100.0 * c.warm_rate,
        c.unforeseeable,
        c.executions
    )
}

/// The learned policies against the baselines' frontier, per cache size.
pub fn standings_table(s: &[prewarm_sim::pareto::Standing]) -> String {
    let pct = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.1}", 100.0 * v));
    let body: Vec<Vec<String>> = s
        .iter()
        .map(|x| {
            vec![
                x.policy.clone(),
                bytes(x.cache_bytes),
                format!("{:.1}", 100.0 * x.warm_rate),
                pct(x.baseline_at_cost),
                pct(x.oracle),
                if x.on_frontier { "yes" } else { "no" }.into(),
                pct(x.gap_closed),
                pct(x.causal_gap_closed),
                x.bytes_vs_oracle.map_or("-".into(), |b| format!("{b:.2}×")),
            ]
        })
        .collect();
    table_of(
        &[
            "learned",
            "cache",
            "warm %",
            "best baseline ≤ its GB·s",
            "oracle",
            "on frontier",
            "gap closed %",
            "of causal gap %",
            "bytes vs oracle",
        ],
        &body,
    )
}

/// The terminal table.
pub fn table(rows: &[prewarm_sim::SimReport]) -> String {
    let header = [
        "policy",
        "warm %",
        "bytes ready %",
        "of oracle",
        "ttr p50 ms",
        "ttr p99 ms",
        "moved",
        "wasted",
        "GB·s",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.policy.clone(),
                format!("{:.1}", 100.0 * r.warm_rate),
                format!("{:.1}", 100.0 * r.ready_byte_share),
                r.oracle_share
                    .map_or("-".into(), |s| format!("{:.0}%", 100.0 * s)),
                format!("{:.1}", r.ttr_p50_ms),
                format!("{:.1}", r.ttr_p99_ms),
                bytes(r.bytes),
                bytes(r.wasted_bytes),
                format!("{:.0}", r.memory_gb_s),
            ]
        })
        .collect();
    table_of(&header, &body)
}
