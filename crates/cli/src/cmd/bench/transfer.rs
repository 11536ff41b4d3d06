//! `prewarm bench transfer`: a state from a coordinator to an agent, both separate processes
//! over loopback: cold transfer throughput (incompressible and compressible data, over TCP
//! over the same-host Unix socket, and over the same-host pack channel, which passes pack
//! files by descriptor), a delta transfer after 1% scattered edits (bytes on
//! the wire), and `ensure` hit latency over the agent's HTTP API. Peers in the same run: a
//! raw length-prefixed TCP copy between two processes (to a file, as the agent writes one,
//! and to nowhere), iperf3, and rsync (local whole-file copy; delta algorithm for the edit).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use prewarm_core::ResourceId;
use prewarm_predict::eval::percentile;
use prewarm_proto::wire::{
    Priority, StatusRequest, TransferAck, TransferRequest, VersionSpec, version_spec,
};
use serde::Serialize;

use super::raw;
use super::snapshot::{have, median, settle, workdir};
use crate::cmd::parse_size;
use crate::dataset::{self, GenFile, Rng};

/// Arguments of `prewarm bench transfer`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// State size.
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    size: u64,
    /// Repetitions of each cold measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// `ensure` calls timed for the hit latency.
    #[arg(long, default_value_t = 20_000)]
    ensure_calls: usize,
    /// Work directory (default: a temporary one, removed afterwards).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(args: &[&str], log: &Path) -> anyhow::Result<Proc> {
    let f = std::fs::File::create(log)?;
    Ok(Proc(
        Command::new(std::env::current_exe()?)
            .args(args)
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()?,
    ))
}

#[derive(Serialize, Default)]
struct ColdRow {
    data: &'static str,
    path: &'static str,
    gib_s: f64,
    secs: f64,
    wire_bytes: u64,
}

#[derive(Serialize, Default)]
struct Report {
    size: u64,
    cold: Vec<ColdRow>,
    data_plane_gib_s: Vec<(&'static str, f64)>,
    raw_tcp_file_gib_s: f64,
    raw_tcp_null_gib_s: f64,
    iperf3_gib_s: Option<f64>,
    rsync_copy_gib_s: Option<f64>,
    full_wire_bytes: u64,
    delta_wire_bytes: u64,
    delta_reused_bytes: u64,
    delta_secs: f64,
    rsync_delta_literal_bytes: Option<u64>,
    ensure_p50_us: f64,
    ensure_p99_us: f64,
    ensure_calls: usize,
}

type Client = prewarm_agent::control::Client;

async fn transfer(
    client: &mut Client,
    cap: &str,
    resource: &str,
) -> anyhow::Result<(TransferAck, f64)> {
    let t0 = Instant::now();
    let ack = client
        .transfer(TransferRequest {
            capacity: cap.into(),
            resource: resource.into(),
            version: Some(VersionSpec {
                spec: Some(version_spec::Spec::Latest(true)),
            }),
            priority: Priority::OnDemand as i32,
            timeout_ms: 0,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let secs = t0.elapsed().as_secs_f64();
    if !ack.ok {
        bail!("transfer of {resource} to {cap} failed: {}", ack.error);
    }
    Ok((ack, secs))
}

async fn wait_attached(client: &mut Client, cap: &str) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        let s = client.status(StatusRequest {}).await?.into_inner();
        if s.capacities
            .iter()
            .any(|c| c.capacity == cap && c.connected)
        {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("agent {cap} did not attach");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn generate(path: &Path, size: u64, compressible: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut rng = Rng::new(if compressible { 11 } else { 12 });
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 8 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        if compressible {
            dataset::text_fill(&mut rng, &mut buf[..n]);
        } else {
            rng.fill(&mut buf[..n]);
        }
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// Runs the benchmark.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let (_tmp, work) = workdir(a.workdir.as_deref())?;
    let mut r = Report {
        size: a.size,
        ensure_calls: a.ensure_calls,
        ..Default::default()
    };
    let src = work.join("src");
    std::fs::create_dir_all(&src)?;
    let files = [
        ("incompressible", src.join("incompressible.bin"), false),
        ("compressible", src.join("compressible.log"), true),
    ];
    eprintln!("generating 2 × {} …", prewarm_core::ByteSize(a.size));
    for (_, p, c) in &files {
        generate(p, a.size, *c)?;
    }
    let store_dir = work.join("store");
    let store = Arc::new(
        prewarm_store::Store::open_or_create(store_dir.to_str().context("UTF-8 path")?).await?,
    );
    let snap = prewarm_snapshot::Snapshotter::new(store.clone());
    for (name, p, _) in &files {
        eprintln!("snapshotting {name} …");
        snap.snapshot_path(&ResourceId::new(format!("bench/{name}"))?, p)
            .await?;
    }
    settle()?;

    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let sock = work.join("data.sock");
    let data_addr = format!("127.0.0.1:{}", free_port()?);
    let _coord = spawn(
        &[
            "coordinator",
            "--store",
            store_dir.to_str().context("UTF-8 path")?,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-listen",
            &data_addr,
            "--data-unix",
            sock.to_str().context("UTF-8 path")?,
            "--poll",
            "1h",
        ],
        &work.join("coordinator.log"),
    )?;
    let mut client = {
        let t0 = Instant::now();
        loop {
            match prewarm_agent::control::connect(&url, None).await {
                Ok(c) => break c,
                Err(_) if t0.elapsed() < Duration::from_secs(20) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => bail!("{e}"),
            }
        }
    };
    let start_agent =
        |name: String, path: &'static str| -> anyhow::Result<(Proc, String, PathBuf)> {
            let cache = work.join(format!("cache-{name}"));
            let _ = std::fs::remove_dir_all(&cache);
            let api = format!("127.0.0.1:{}", free_port()?);
            let p = spawn(
                &[
                    "agent",
                    "--coordinator",
                    &url,
                    "--name",
                    &name,
                    "--cache-dir",
                    cache.to_str().context("UTF-8 path")?,
                    "--cache-size",
                    "64GiB",
                    "--listen",
                    &api,
                    "--data-path",
                    path,
                ],
                &work.join(format!("agent-{name}.log")),
            )?;
            Ok((p, api, cache))
        };

    // Cold transfers.
    let mut kept = None;
    for (name, _, _) in &files {
        for path in ["tcp", "unix", "fds"] {
            let mut secs = Vec::new();
            let mut wire = 0;
            for rep in 0..a.reps {
                let cap = format!("cold-{path}-{rep}-{}", &name[..3]);
                let (p, api, cache) = start_agent(cap.clone(), path)?;
                wait_attached(&mut client, &cap).await?;
                settle()?;
                let (ack, s) = transfer(&mut client, &cap, &format!("bench/{name}")).await?;
                eprintln!(
                    "  {name} over {path}: {:.2} GiB/s",
                    a.size as f64 / s / (1u64 << 30) as f64
                );
                secs.push(s);
                wire = ack.wire_bytes;
                if *name == "incompressible" && path == "tcp" && rep + 1 == a.reps {
                    kept = Some((p, api, cap));
                } else {
                    drop(p);
                    let _ = std::fs::remove_dir_all(&cache);
                }
            }
            let s = median(secs.into_iter());
            if *name == "incompressible" && path == "tcp" {
                r.full_wire_bytes = wire;
            }
            r.cold.push(ColdRow {
                data: name,
                path,
                gib_s: a.size as f64 / s / (1u64 << 30) as f64,
                secs: s,
                wire_bytes: wire,
            });
        }
    }

    // The data plane alone: fetch and verify every chunk, install nothing (the protocol's
    // ceiling, to compare with the raw TCP copy to nowhere).
    for (path, addr) in [
        ("tcp", prewarm_transfer::DataAddr::Tcp(data_addr.clone())),
        ("unix", prewarm_transfer::DataAddr::Unix(sock.clone())),
        (
            "fds",
            prewarm_transfer::DataAddr::UnixFds {
                stream: sock.clone(),
                packs: sock.with_extension("sock.fds"),
            },
        ),
    ] {
        let mut secs = Vec::new();
        for _ in 0..a.reps {
            secs.push(data_plane_only(&addr, "bench/incompressible").await?);
        }
        let g = a.size as f64 / median(secs.into_iter()) / (1u64 << 30) as f64;
        eprintln!("  data plane only over {path}: {g:.2} GiB/s");
        r.data_plane_gib_s.push((path, g));
    }

    // Peers, on the incompressible file.
    let inc = &files[0].1;
    let recv_dir = work.join("raw");
    std::fs::create_dir_all(&recv_dir)?;
    for to_file in [true, false] {
        let rport = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{rport}").parse()?;
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
        let _recv = spawn(&refs, &work.join("raw.log"))?;
        let mut secs = Vec::new();
        for _ in 0..a.reps {
            settle()?;
            let t0 = Instant::now();
            let mut tries = 0;
            let f = inc.clone();
            loop {
                let f = f.clone();
                match tokio::task::spawn_blocking(move || raw::send(addr, &f)).await? {
                    Ok(()) => break,
                    Err(_) if tries < 100 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            secs.push(t0.elapsed().as_secs_f64());
        }
        let g = a.size as f64 / median(secs.into_iter()) / (1u64 << 30) as f64;
        eprintln!(
            "  raw TCP {}: {g:.2} GiB/s",
            if to_file { "to a file" } else { "to nowhere" }
        );
        if to_file {
            r.raw_tcp_file_gib_s = g;
        } else {
            r.raw_tcp_null_gib_s = g;
        }
    }
    if have("iperf3") {
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
                &a.size.to_string(),
                "-J",
            ])
            .output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        r.iperf3_gib_s = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .map(|b| b / 8.0 / (1u64 << 30) as f64);
    }
    if have("rsync") {
        let mut secs = Vec::new();
        for _ in 0..a.reps {
            let dst = work.join("rsync-copy");
            let _ = std::fs::remove_dir_all(&dst);
            std::fs::create_dir_all(&dst)?;
            settle()?;
            let t0 = Instant::now();
            let st = Command::new("rsync")
                .args(["--whole-file"])
                .arg(inc)
                .arg(&dst)
                .status()?;
            secs.push(t0.elapsed().as_secs_f64());
            anyhow::ensure!(st.success(), "rsync failed");
        }
        r.rsync_copy_gib_s = Some(a.size as f64 / median(secs.into_iter()) / (1u64 << 30) as f64);
    }

    // Delta after 1% scattered 4 KiB edits, to the agent holding v1.
    let (agent, api, cap) = kept.context("an agent holds the incompressible state")?;
    let old_copy = work.join("rsync-copy").join("incompressible.bin");
    let gf = [GenFile {
        path: inc.clone(),
        size: a.size,
    }];
    dataset::apply_edits(&gf, 0.01, 4096, 7)?;
    snap.snapshot_path(&ResourceId::new("bench/incompressible")?, inc)
        .await?;
    settle()?;
    let (ack, secs) = transfer(&mut client, &cap, "bench/incompressible").await?;
    anyhow::ensure!(
        ack.version == 2,
        "the delta transfer moved version {}",
        ack.version
    );
    r.delta_wire_bytes = ack.wire_bytes;
    r.delta_reused_bytes = ack.reused_bytes;
    r.delta_secs = secs;
    if have("rsync") && old_copy.exists() {
        let out = Command::new("rsync")
            .args(["--no-whole-file", "--ignore-times", "--stats"])
            .arg(inc)
            .arg(&old_copy)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        r.rsync_delta_literal_bytes = text
            .lines()
            .find_map(|l| l.strip_prefix("Literal data: "))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.replace(',', "").parse().ok());
    }

    // ensure() hits over the HTTP API, from a client on a single-threaded runtime of its own
    // (as an application's request thread would call it).
    let calls = a.ensure_calls;
    let mut lat = std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let ec = prewarm_agent::client::EnsureClient::new(api, None);
            let res = ResourceId::new("bench/incompressible")?;
            for _ in 0..200 {
                ec.ensure(&res, Some(2), None).await?; // warm up the connection and caches
            }
            let mut lat = Vec::with_capacity(calls);
            for _ in 0..calls {
                let t0 = Instant::now();
                let e = ec.ensure(&res, Some(2), None).await?;
                lat.push(t0.elapsed().as_secs_f64() * 1e6);
                anyhow::ensure!(e.hit, "an ensure missed");
            }
            Ok(lat)
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the ensure client thread panicked"))??;
    lat.sort_by(f64::total_cmp);
    r.ensure_p50_us = percentile(&lat, 0.5);
    r.ensure_p99_us = percentile(&lat, 0.99);
    drop(agent);

    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_report(&r);
    }
    Ok(0)
}

/// Seconds to fetch and verify every chunk of `resource` (nothing written).
async fn data_plane_only(addr: &prewarm_transfer::DataAddr, resource: &str) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut c = prewarm_transfer::Connection::connect(addr, None).await?;
    let m = c.manifest(&ResourceId::new(resource)?, None).await?;
    let refs = Arc::new(m.chunks.clone());
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let r2 = refs.clone();
    let verifier = tokio::spawn(async move {
        let mut bad = 0usize;
        while let Some(batch) = rx.recv().await {
            let r3 = r2.clone();
            bad += tokio::task::spawn_blocking(move || {
                prewarm_transfer::verify_batch(&r3, batch)
                    .iter()
                    .filter(|(_, v)| v.is_err())
                    .count()
            })
            .await?;
        }
        Ok::<usize, anyhow::Error>(bad)
    });
    c.fetch(&refs, None, &tx).await?;
    drop(tx);
    let bad = verifier.await??;
    anyhow::ensure!(bad == 0, "{bad} chunks failed verification");
    Ok(t0.elapsed().as_secs_f64())
}

fn print_report(r: &Report) {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!(
        "state size {:.2} GiB, coordinator and agent as separate processes over loopback",
        gib(r.size)
    );
    println!("cold transfer (median):");
    for c in &r.cold {
        println!(
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
        println!(
            "  data plane only (fetch + verify, no install) {path:<5} {g:>6.2} GiB/s  ({:.0}% of raw TCP to nowhere)",
            100.0 * g / r.raw_tcp_null_gib_s.max(1e-9)
        );
    }
    println!("peers:");
    println!(
        "  raw TCP copy, process to process, to a file   {:>6.2} GiB/s",
        r.raw_tcp_file_gib_s
    );
    println!(
        "  raw TCP copy, process to process, to nowhere  {:>6.2} GiB/s",
        r.raw_tcp_null_gib_s
    );
    if let Some(g) = r.iperf3_gib_s {
        println!("  iperf3 (memory to memory)                     {g:>6.2} GiB/s");
    }
    if let Some(g) = r.rsync_copy_gib_s {
        println!("  rsync --whole-file (local disk copy)          {g:>6.2} GiB/s");
    }
    println!(
        "delta after 1% scattered 4 KiB edits: {:.2} MiB on the wire = {:.2}% of full ({:.2} GiB reused), {:.2} s",
        r.delta_wire_bytes as f64 / (1 << 20) as f64,
        100.0 * r.delta_wire_bytes as f64 / r.full_wire_bytes.max(1) as f64,
        gib(r.delta_reused_bytes),
        r.delta_secs
    );
    if let Some(l) = r.rsync_delta_literal_bytes {
        println!(
            "  rsync delta algorithm, literal data: {:.2} MiB = {:.2}% of full",
            l as f64 / (1 << 20) as f64,
            100.0 * l as f64 / r.size as f64
        );
    }
    println!(
        "ensure() hit over HTTP, {} calls: p50 {:.0} µs, p99 {:.0} µs",
        r.ensure_calls, r.ensure_p50_us, r.ensure_p99_us
    );
}
