//! The pieces of a self-contained HTML page: escaping and an inline-SVG line chart (no
//! scripts, no network).

use std::fmt::Write as _;

const COLORS: [&str; 9] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#17becf",
];

/// `s` escaped for HTML text and attributes.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart of `series` (name, points); `xlog` plots log10(1 + x).
pub fn chart(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(String, Vec<(f64, f64)>)],
    xlog: bool,
) -> String {
    let (w, h, l, r, t, b) = (640.0, 360.0, 60.0, 150.0, 30.0, 45.0);
    let fx = |x: f64| if xlog { (1.0 + x.max(0.0)).log10() } else { x };
    let (x0, x1, y0, y1) = bounds(series, &fx);
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

/// The plotted ranges of `series` (x through `fx`; y from 0 or below), never empty.
fn bounds(series: &[(String, Vec<(f64, f64)>)], fx: &dyn Fn(f64) -> f64) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) =
        (f64::INFINITY, f64::NEG_INFINITY, 0.0f64, f64::NEG_INFINITY);
    for &(x, y) in series.iter().flat_map(|(_, p)| p.iter()) {
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
    (x0, x1, y0, y1)
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
