//! What `bench transfer` measured, and its terminal text.

use std::fmt::Write as _;

use serde::Serialize;

/// One cold-transfer measurement.
#[derive(Serialize, Default)]
pub struct ColdRow {
    /// Which file.
    pub data: &'static str,
    /// Which data path.
    pub path: &'static str,
    /// Median throughput.
    pub gib_s: f64,
    /// Median time.
    pub secs: f64,
    /// Bytes on the wire.
    pub wire_bytes: u64,
}

/// Everything the benchmark measured.
#[derive(Serialize, Default)]
pub struct Report {
    /// State size.
    pub size: u64,
    /// Cold transfers.
    pub cold: Vec<ColdRow>,
    /// The data plane alone, per path.
    pub data_plane_gib_s: Vec<(&'static str, f64)>,
    /// Raw TCP, process to process, to a file.
    pub raw_tcp_file_gib_s: f64,
    /// Raw TCP, process to process, to nowhere.
    pub raw_tcp_null_gib_s: f64,
    /// iperf3, when installed.
    pub iperf3_gib_s: Option<f64>,
    /// rsync --whole-file, when installed.
    pub rsync_copy_gib_s: Option<f64>,
    /// The cold incompressible TCP transfer's wire bytes.
    pub full_wire_bytes: u64,
    /// The delta transfer's wire bytes.
    pub delta_wire_bytes: u64,
    /// The delta transfer's reused bytes.
    pub delta_reused_bytes: u64,
    /// The delta transfer's time.
    pub delta_secs: f64,
    /// rsync's literal data for the same edit, when installed.
    pub rsync_delta_literal_bytes: Option<u64>,
    /// rsync's time for the same edit, when installed.
    pub rsync_delta_secs: Option<f64>,
    /// `ensure` hit latency, median.
    pub ensure_p50_us: f64,
    /// … 99th percentile.
    pub ensure_p99_us: f64,
    /// `ensure` calls timed.
    pub ensure_calls: usize,
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

impl Report {
    /// The terminal text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.cold_text(&mut out);
        self.peers_text(&mut out);
        self.delta_text(&mut out);
        out
    }

    fn cold_text(&self, out: &mut String) {
        let r = self;
        let _ = writeln!(
            out,
            "state size {:.2} GiB, coordinator and agent as separate processes over loopback",
            gib(r.size)
        );
        let _ = writeln!(out, "cold transfer (median):");
        for c in &r.cold {
            let _ = writeln!(
                out,
                "  {:<15} {:<5} {:>6.2} GiB/s  {:>6.2} s  wire {:.2} GiB  ({:.0}% of raw TCP to a file)",
                c.data,
                c.path,
                c.gib_s,
                c.secs,
                gib(c.wire_bytes),
                100.0 * c.gib_s / r.raw_tcp_file_gib_s.max(1e-9)
            );
        }
        for (path, g) in &r.data_plane_gib_s {
            let _ = writeln!(
                out,
                "  data plane only (fetch + verify, no install) {path:<5} {g:>6.2} GiB/s  ({:.0}% of raw TCP to nowhere)",
                100.0 * g / r.raw_tcp_null_gib_s.max(1e-9)
            );
        }
    }

    fn peers_text(&self, out: &mut String) {
        let r = self;
        let _ = writeln!(out, "peers:");
        let _ = writeln!(
            out,
            "  raw TCP copy, process to process, to a file   {:>6.2} GiB/s",
            r.raw_tcp_file_gib_s
        );
        let _ = writeln!(
            out,
            "  raw TCP copy, process to process, to nowhere  {:>6.2} GiB/s",
            r.raw_tcp_null_gib_s
        );
        if let Some(g) = r.iperf3_gib_s {
            let _ = writeln!(
                out,
                "  iperf3 (memory to memory)                     {g:>6.2} GiB/s"
            );
        }
        if let Some(g) = r.rsync_copy_gib_s {
            let _ = writeln!(
                out,
                "  rsync --whole-file (local disk copy)          {g:>6.2} GiB/s"
            );
        }
    }

    fn delta_text(&self, out: &mut String) {
        let r = self;
        let _ = writeln!(
            out,
            "delta after 1% scattered 4 KiB edits: {:.2} MiB on the wire = {:.2}% of full ({:.2} GiB reused), {:.2} s",
            r.delta_wire_bytes as f64 / (1 << 20) as f64,
            100.0 * r.delta_wire_bytes as f64 / r.full_wire_bytes.max(1) as f64,
            gib(r.delta_reused_bytes),
            r.delta_secs
        );
        if let Some(cold) = r.cold.iter().find(|c| c.data == "incompressible") {
            let _ = writeln!(
                out,
                "  = {:.0}% of the cold install's time over {} ({:.2} s)",
                100.0 * r.delta_secs / cold.secs,
                cold.path,
                cold.secs
            );
        }
        if let Some(l) = r.rsync_delta_literal_bytes {
            let _ = writeln!(
                out,
                "  rsync delta algorithm, literal data: {:.2} MiB = {:.2}% of full, {:.2} s",
                l as f64 / (1 << 20) as f64,
                100.0 * l as f64 / r.size as f64,
                r.rsync_delta_secs.unwrap_or(f64::NAN)
            );
        }
        let _ = writeln!(
            out,
            "ensure() hit over HTTP, {} calls: p50 {:.0} µs, p99 {:.0} µs",
            r.ensure_calls, r.ensure_p50_us, r.ensure_p99_us
        );
    }
}
