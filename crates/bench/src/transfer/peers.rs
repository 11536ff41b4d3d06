//! The peers of `bench transfer`, on the incompressible file: a raw length-prefixed TCP copy
//! between two processes (to a file and to nowhere), iperf3, and rsync (a whole-file copy,
//! and its delta algorithm for the edit).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::TransferBenchError;
use super::cluster::{free_port, spawn};
use crate::raw;
use crate::support::{Proc, median, settle, stage};

fn gib_s(size: u64, secs: f64) -> f64 {
    size as f64 / secs / (1u64 << 30) as f64
}

/// Raw TCP from this process to a `bench raw-recv` child writing to a file under `work/raw`
/// (`to_file`) or nowhere; median GiB/s over `reps`.
pub async fn raw_tcp(
    exe: &Path,
    work: &Path,
    file: &Path,
    size: u64,
    reps: usize,
    to_file: bool,
    meter: &prewarm_core::Meter,
) -> Result<f64, TransferBenchError> {
    let recv_dir = work.join("raw");
    std::fs::create_dir_all(&recv_dir)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut args = vec![
        "bench".to_owned(),
        "raw-recv".into(),
        "--listen".into(),
        addr.to_string(),
    ];
    if to_file {
        args.extend(["--out".into(), recv_dir.display().to_string()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let _recv = spawn(exe, &refs, &work.join("raw.log"))?;
    let mut secs = Vec::new();
    for _ in 0..reps {
        settle()?;
        let t0 = Instant::now();
        let mut tries = 0;
        loop {
            let f = file.to_owned();
            match tokio::task::spawn_blocking(move || raw::send(addr, &f)).await? {
                Ok(()) => break,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        secs.push(t0.elapsed().as_secs_f64());
    }
    let g = gib_s(size, median(secs.into_iter()));
    stage(
        meter,
        format!(
            "  raw TCP {}: {g:.2} GiB/s",
            if to_file { "to a file" } else { "to nowhere" }
        ),
    );
    Ok(g)
}

/// iperf3 over loopback, memory to memory, `size` bytes; `None` when it gives no figure.
pub async fn iperf3(size: u64) -> Result<Option<f64>, TransferBenchError> {
    let p = free_port()?;
    let _srv = Proc(
        Command::new("iperf3")
            .args(["-s", "-p", &p.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = Command::new("iperf3")
        .args([
            "-c",
            "127.0.0.1",
            "-p",
            &p.to_string(),
            "-n",
            &size.to_string(),
            "-J",
        ])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 8.0 / (1u64 << 30) as f64))
}

/// `rsync --whole-file` of `file` into `work/rsync-copy`; median GiB/s over `reps`. The copy
/// is kept (the delta measurement starts from it).
pub fn rsync_copy(
    work: &Path,
    file: &Path,
    size: u64,
    reps: usize,
) -> Result<f64, TransferBenchError> {
    let mut secs = Vec::new();
    for _ in 0..reps {
        let dst = work.join("rsync-copy");
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::create_dir_all(&dst)?;
        settle()?;
        let t0 = Instant::now();
        let st = Command::new("rsync")
            .args(["--whole-file"])
            .arg(file)
            .arg(&dst)
            .status()?;
        secs.push(t0.elapsed().as_secs_f64());
        if !st.success() {
            return Err(TransferBenchError::Peer("rsync failed"));
        }
    }
    Ok(gib_s(size, median(secs.into_iter())))
}

/// The literal data rsync's delta algorithm sends to bring `old_copy` up to `file`, and the
/// time it takes (rsync, like an install, writes a complete new file).
pub fn rsync_delta(file: &Path, old_copy: &Path) -> Result<(Option<u64>, f64), TransferBenchError> {
    settle()?;
    let t0 = std::time::Instant::now();
    let out = Command::new("rsync")
        .args(["--no-whole-file", "--ignore-times", "--stats"])
        .arg(file)
        .arg(old_copy)
        .output()?;
    let secs = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(TransferBenchError::Peer("rsync (delta) failed"));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let literal = text
        .lines()
        .find_map(|l| l.strip_prefix("Literal data: "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.replace(',', "").parse().ok());
    Ok((literal, secs))
}
