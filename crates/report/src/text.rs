//! Plain-text figures: byte counts, rates and durations for humans, and aligned tables.

/// Formats a byte count for humans.
pub fn bytes(n: u64) -> String {
    prewarm_core::ByteSize(n).to_string()
}

/// Bytes per second as MiB/s.
pub fn rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{:.0} MiB/s", bytes as f64 / secs / (1024.0 * 1024.0))
}

/// Milliseconds for humans (µs below 1 ms, s above 10 s).
pub fn millis(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1e3)
    } else if ms < 10_000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.1} s", ms / 1e3)
    }
}

/// A plain-text table with left-aligned first column and right-aligned others.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let fmt_row = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = fmt_row(header.to_vec());
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    for r in rows {
        out.push('\n');
        out.push_str(&fmt_row(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_figures_read_well() {
        let t = table(&["a", "bb"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "a    bb\n---  --\nxyz   1");
        assert_eq!(millis(0.5), "500 µs");
        assert_eq!(millis(12.34), "12.3 ms");
        assert_eq!(millis(12_000.0), "12.0 s");
        assert_eq!(rate(1 << 20, 0.0), "-");
        assert_eq!(rate(2 << 20, 1.0), "2 MiB/s");
    }
}
