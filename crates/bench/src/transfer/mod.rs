//! `prewarm bench transfer`: a state from a coordinator to an agent, both separate processes
//! over loopback: cold transfer throughput (incompressible and compressible data, over TCP
//! over the same-host Unix socket, and over the same-host pack channel, which passes pack
//! files by descriptor), a delta transfer after 1% scattered edits (bytes on
//! the wire), and `ensure` hit latency over the agent's HTTP API. Peers in the same run: a
//! raw length-prefixed TCP copy between two processes (to a file, as the agent writes one,
//! and to nowhere), iperf3, and rsync (local whole-file copy; delta algorithm for the edit).

//!
//! [`run`] goes in stages: the states ([`prepare`]), the coordinator ([`cluster`]), cold
//! transfers, the data plane alone, the peers ([`peers`]), the delta, and `ensure` hits.

mod cluster;
mod peers;
mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use prewarm_core::{ResourceId, percentile};
use prewarm_demo::dataset::{self, GenFile, Rng};
use prewarm_snapshot::Snapshotter;
use prewarm_transfer::DataAddr;

pub use report::{ColdRow, Report};

use crate::raw::RawError;
use crate::support::{Proc, ShellError, have, median, settle, stage, utf8, workdir};
use cluster::Cluster;

/// What `prewarm bench transfer` measures.
#[derive(Clone, Debug)]
pub struct Settings {
    /// State size, bytes.
    pub size: u64,
    /// Repetitions of each cold measurement (the median is reported).
    pub reps: usize,
    /// `ensure` calls timed for the hit latency.
    pub ensure_calls: usize,
    /// Data paths measured: `tcp`, `unix`, `fds` (the first is the delta's and the `ensure`
    /// hits' agent).
    pub paths: Vec<&'static str>,
    /// Work directory (default: a temporary one, removed afterwards).
    pub workdir: Option<PathBuf>,
    /// The `prewarm` binary, run as the coordinator, the agents and the raw TCP receiver.
    pub exe: PathBuf,
    /// Stages begun and figures measured so far, each with its note (a progress display).
    pub meter: Arc<prewarm_core::Meter>,
}

/// Why the benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferBenchError {
    /// A file, socket or process operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// `sync` failed.
    #[error(transparent)]
    Shell(#[from] ShellError),
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] prewarm_store::OpenError),
    /// A snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] prewarm_snapshot::SnapshotError),
    /// A benchmark resource id is invalid.
    #[error(transparent)]
    Id(#[from] prewarm_core::IdError),
    /// The coordinator could not be reached.
    #[error("{0}")]
    Connect(String),
    /// A control-plane call failed.
    #[error("{0}")]
    Rpc(String),
    /// A transfer was refused or failed.
    #[error("{what} failed: {error}")]
    Transfer {
        /// Which transfer.
        what: String,
        /// The agent's error.
        error: String,
    },
    /// An agent did not attach.
    #[error("agent {0} did not attach")]
    NotAttached(String),
    /// The delta transfer moved another version than the edit's.
    #[error("the delta transfer moved version {0}")]
    DeltaVersion(u64),
    /// The data plane failed.
    #[error(transparent)]
    Data(#[from] prewarm_transfer::DataError),
    /// Fetched chunks failed verification.
    #[error("{0} chunks failed verification")]
    Verify(usize),
    /// The raw TCP peer failed.
    #[error(transparent)]
    Raw(#[from] RawError),
    /// A peer tool failed.
    #[error("{0}")]
    Peer(&'static str),
    /// An `ensure` call failed.
    #[error(transparent)]
    Ensure(#[from] prewarm_agent::client::ClientError),
    /// An `ensure` of a held state missed.
    #[error("an ensure missed")]
    Miss,
    /// A task or thread of the benchmark panicked.
    #[error("{0}")]
    Panicked(&'static str),
    /// A task of the benchmark failed.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// The two states: an incompressible and a compressible file.
const FILES: [(&str, &str, bool); 2] = [
    ("incompressible", "incompressible.bin", false),
    ("compressible", "compressible.log", true),
];

fn generate(path: &Path, size: u64, compressible: bool) -> std::io::Result<()> {
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

fn gib_s(size: u64, secs: f64) -> f64 {
    size as f64 / secs / (1u64 << 30) as f64
}

/// Generates both files under `work/src` and snapshots them into `work/store`; returns
/// their paths and the snapshotter.
async fn prepare(
    work: &Path,
    size: u64,
    meter: &prewarm_core::Meter,
) -> Result<(Vec<PathBuf>, PathBuf, Snapshotter), TransferBenchError> {
    let src = work.join("src");
    std::fs::create_dir_all(&src)?;
    stage(
        meter,
        format!("generating 2 × {} …", prewarm_core::ByteSize(size)),
    );
    let paths: Vec<PathBuf> = FILES.iter().map(|(_, f, _)| src.join(f)).collect();
    for ((_, _, compressible), p) in FILES.iter().zip(&paths) {
        generate(p, size, *compressible)?;
    }
    let store_dir = work.join("store");
    let store = Arc::new(prewarm_store::Store::open_or_create(utf8(&store_dir)?).await?);
    let snap = Snapshotter::new(store);
    for ((name, _, _), p) in FILES.iter().zip(&paths) {
        stage(meter, format!("snapshotting {name} …"));
        snap.snapshot_path(&ResourceId::new(format!("bench/{name}"))?, p)
            .await?;
    }
    settle()?;
    Ok((paths, store_dir, snap))
}

/// Runs the benchmark (progress on stderr).
pub async fn run(a: &Settings) -> Result<Report, TransferBenchError> {
    let (_tmp, work) = workdir(a.workdir.as_deref())?;
    let mut r = Report {
        size: a.size,
        ensure_calls: a.ensure_calls,
        ..Default::default()
    };
    let (paths, store_dir, snap) = prepare(&work, a.size, &a.meter).await?;
    let mut cluster = Cluster::start(&a.exe, &work, &store_dir).await?;
    let kept = cold(&mut cluster, a, &mut r).await?;
    data_plane(&cluster, a, &mut r).await?;

    let inc = &paths[0];
    r.raw_tcp_file_gib_s =
        peers::raw_tcp(&a.exe, &work, inc, a.size, a.reps, true, &a.meter).await?;
    r.raw_tcp_null_gib_s =
        peers::raw_tcp(&a.exe, &work, inc, a.size, a.reps, false, &a.meter).await?;
    if have("iperf3") {
        r.iperf3_gib_s = peers::iperf3(a.size).await?;
    }
    if have("rsync") {
        r.rsync_copy_gib_s = Some(peers::rsync_copy(&work, inc, a.size, a.reps)?);
    }

    let (agent, api, cap) = kept;
    delta(&mut cluster, &snap, &work, inc, &cap, a, &mut r).await?;
    let mut lat = ensure_hits(api, a.ensure_calls)?;
    lat.sort_by(f64::total_cmp);
    r.ensure_p50_us = percentile(&lat, 0.5);
    r.ensure_p99_us = percentile(&lat, 0.99);
    drop(agent);
    Ok(r)
}

/// Cold transfers of both files over each data path, a fresh agent each time; the agent of
/// the last incompressible transfer over the first path is kept (process, API address, name).
async fn cold(
    cluster: &mut Cluster,
    a: &Settings,
    r: &mut Report,
) -> Result<(Proc, String, String), TransferBenchError> {
    let mut kept = None;
    for (name, _, _) in FILES {
        for (k, &path) in a.paths.iter().enumerate() {
            let keep = name == "incompressible" && k == 0;
            let mut secs = Vec::new();
            let mut wire = 0;
            for rep in 0..a.reps {
                let cap = format!("cold-{path}-{rep}-{}", &name[..3]);
                let (p, api, cache) = cluster.start_agent(&cap, path)?;
                cluster.wait_attached(&cap).await?;
                settle()?;
                let (ack, s) = cluster.transfer(&cap, &format!("bench/{name}")).await?;
                stage(
                    &a.meter,
                    format!("  {name} over {path}: {:.2} GiB/s", gib_s(a.size, s)),
                );
                secs.push(s);
                wire = ack.wire_bytes;
                if keep && rep + 1 == a.reps {
                    kept = Some((p, api, cap));
                } else {
                    drop(p);
                    let _ = std::fs::remove_dir_all(&cache);
                }
            }
            let s = median(secs.into_iter());
            if keep {
                r.full_wire_bytes = wire;
            }
            r.cold.push(ColdRow {
                data: name,
                path,
                gib_s: gib_s(a.size, s),
                secs: s,
                wire_bytes: wire,
            });
        }
    }
    kept.ok_or(TransferBenchError::Peer(
        "no agent holds the incompressible state",
    ))
}

/// The data plane alone: fetch and verify every chunk, install nothing (the protocol's
/// ceiling, to compare with the raw TCP copy to nowhere).
async fn data_plane(
    cluster: &Cluster,
    a: &Settings,
    r: &mut Report,
) -> Result<(), TransferBenchError> {
    let sock = &cluster.sock;
    for &path in &a.paths {
        let addr = match path {
            "tcp" => DataAddr::Tcp(cluster.data_addr.clone()),
            "unix" => DataAddr::Unix(sock.clone()),
            _ => DataAddr::UnixFds {
                stream: sock.clone(),
                packs: sock.with_extension("sock.fds"),
            },
        };
        let mut secs = Vec::new();
        for _ in 0..a.reps {
            secs.push(data_plane_only(&addr, "bench/incompressible").await?);
        }
        let g = gib_s(a.size, median(secs.into_iter()));
        stage(
            &a.meter,
            format!("  data plane only over {path}: {g:.2} GiB/s"),
        );
        r.data_plane_gib_s.push((path, g));
    }
    Ok(())
}

/// Seconds to fetch and verify every chunk of `resource` (nothing written).
async fn data_plane_only(addr: &DataAddr, resource: &str) -> Result<f64, TransferBenchError> {
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
        Ok::<usize, tokio::task::JoinError>(bad)
    });
    c.fetch(&refs, None, &tx).await?;
    drop(tx);
    let bad = verifier.await??;
    if bad > 0 {
        return Err(TransferBenchError::Verify(bad));
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// The delta after 1% scattered 4 KiB edits of `inc`, to the agent `cap` holding v1; and
/// rsync's delta for the same edit, when it is installed.
async fn delta(
    cluster: &mut Cluster,
    snap: &Snapshotter,
    work: &Path,
    inc: &Path,
    cap: &str,
    a: &Settings,
    r: &mut Report,
) -> Result<(), TransferBenchError> {
    let old_copy = work.join("rsync-copy").join("incompressible.bin");
    let gf = [GenFile {
        path: inc.to_owned(),
        size: a.size,
    }];
    dataset::apply_edits(&gf, 0.01, 4096, 7)?;
    snap.snapshot_path(&ResourceId::new("bench/incompressible")?, inc)
        .await?;
    settle()?;
    let (ack, secs) = cluster.transfer(cap, "bench/incompressible").await?;
    if ack.version != 2 {
        return Err(TransferBenchError::DeltaVersion(ack.version));
    }
    r.delta_wire_bytes = ack.wire_bytes;
    r.delta_reused_bytes = ack.reused_bytes;
    r.delta_secs = secs;
    if have("rsync") && old_copy.exists() {
        let (literal, secs) = peers::rsync_delta(inc, &old_copy)?;
        r.rsync_delta_literal_bytes = literal;
        r.rsync_delta_secs = Some(secs);
    }
    Ok(())
}

/// `ensure()` hits over the HTTP API at `api`, from a client on a single-threaded runtime
/// of its own (as an application's request thread would call it); microseconds per call.
fn ensure_hits(api: String, calls: usize) -> Result<Vec<f64>, TransferBenchError> {
    std::thread::spawn(move || -> Result<Vec<f64>, TransferBenchError> {
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
                if !e.hit {
                    return Err(TransferBenchError::Miss);
                }
            }
            Ok(lat)
        })
    })
    .join()
    .map_err(|_| TransferBenchError::Panicked("the ensure client thread panicked"))?
}
