//! HTML reports: one self-contained file each (inline SVG, no scripts, no network). The
//! replay's has its table and three plots — warm-start rate against cache memory-time (the
//! cache-size sweep), the time-to-ready distribution, and the warm-start rate over time; the
//! demo's page reuses [`chart`].

use std::fmt::Write as _;

use crate::cmd::replay::Replay;

const COLORS: [&str; 9] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#17becf",
];

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart of `series` (name, points); `xlog` plots log10(1 + x).
pub(crate) fn chart(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(String, Vec<(f64, f64)>)],
    xlog: bool,
) -> String {
    let (w, h, l, r, t, b) = (640.0, 360.0, 60.0, 150.0, 30.0, 45.0);
    let fx = |x: f64| if xlog { (1.0 + x.max(0.0)).log10() } else { x };
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) =
        (f64::INFINITY, f64::NEG_INFINITY, 0.0f64, f64::NEG_INFINITY);
    for &(x, y) in pts {
        x0 = x0.min(fx(x));
        x1 = x1.max(fx(x));
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() || !x1.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if !y1.is_finite() || y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let sx = |x: f64| l + (fx(x) - x0) / (x1 - x0) * (w - l - r);
    let sy = |y: f64| t + (1.0 - (y - y0) / (y1 - y0)) * (h - t - b);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<text x="{}" y="18" text-anchor="middle" font-size="13">{}</text>
<line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{l}" y1="{t}" x2="{l}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>
"#,
        (w - r + l) / 2.0,
        esc(title),
        h - b,
        w - r,
        h - b,
        h - b,
        (w - r + l) / 2.0,
        h - 8.0,
        esc(xlabel),
        (h - b + t) / 2.0,
        (h - b + t) / 2.0,
        esc(ylabel),
    );
    for i in 0..=4 {
        let fy = y0 + (y1 - y0) * f64::from(i) / 4.0;
        let gx = x0 + (x1 - x0) * f64::from(i) / 4.0;
        let xv = if xlog { 10f64.powf(gx) - 1.0 } else { gx };
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end">{}</text><line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="#ddd"/>
<text x="{}" y="{}" text-anchor="middle">{}</text>
"##,
            l - 4.0,
            sy(fy) + 4.0,
            fmt_num(fy),
            sy(fy),
            w - r,
            sy(fy),
            l + (gx - x0) / (x1 - x0) * (w - l - r),
            h - b + 14.0,
            fmt_num(xv),
        );
    }
    for (k, (name, p)) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        let path: Vec<String> = p
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for &(x, y) in p.iter().filter(|_| p.len() <= 12) {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                sx(x),
                sy(y)
            );
        }
        let ly = t + 14.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            w - r + 10.0,
            w - r + 30.0,
            w - r + 35.0,
            ly + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e4 {
        format!("{v:.2e}")
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The report page.
pub fn html(r: &Replay) -> String {
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
    if !r.standings.is_empty() {
        s.push_str("<h2>Learned policies against the baselines' frontier</h2>\n<table><tr><th>learned</th><th>cache bytes</th><th>warm %</th><th>best baseline at ≤ its GB·s</th><th>oracle</th><th>on frontier</th><th>gap closed %</th><th>bytes vs oracle</th></tr>\n");
        let pct = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.1}", 100.0 * v));
        for x in &r.standings {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&x.policy),
                x.cache_bytes,
                100.0 * x.warm_rate,
                pct(x.baseline_at_cost),
                pct(x.oracle),
                if x.on_frontier { "yes" } else { "no" },
                pct(x.gap_closed),
                x.bytes_vs_oracle.map_or("-".into(), |b| format!("{b:.2}×")),
            );
        }
        s.push_str("</table>\n");
    }
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
    s.push_str("</body></html>\n");
    s
}
