//! `prewarm bench snapshot`: on a generated data set (default 1 GiB, many files, half
//! compressible), measures prewarm's full snapshot, incremental snapshot after 1% scattered
//! 4 KiB in-place edits, and verified restore; the same work with `tar | zstd -T0 -3` and
//! restic when installed; and a sweep of average chunk sizes (the granularity trade-off).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use prewarm_core::ResourceId;
use prewarm_demo::dataset::{self, GenFile};
use prewarm_report::text;
use prewarm_snapshot::Snapshotter;
use prewarm_store::{ChunkerParams, Store};
use serde::Serialize;

use crate::support::{ShellError, have, median, settle, sh, stage, utf8, workdir};

/// What `prewarm bench snapshot` measures.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Data set size, bytes.
    pub size: u64,
    /// Share of bytes overwritten before the incremental snapshot.
    pub edit_fraction: f64,
    /// Size of each in-place edit, bytes.
    pub edit_size: u64,
    /// Average chunk sizes for the granularity sweep (empty: no sweep).
    pub sweep: Vec<u64>,
    /// Repetitions of each measurement; the median is reported.
    pub reps: usize,
    /// Measure the peer tools too (those installed).
    pub peers: bool,
    /// Working directory (default: a temporary directory, removed afterwards).
    pub workdir: Option<PathBuf>,
    /// Stages begun so far, each with its note (a progress display).
    pub meter: std::sync::Arc<prewarm_core::Meter>,
}

/// Why the benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotBenchError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A shell command (a peer, `sync`) failed.
    #[error(transparent)]
    Shell(#[from] ShellError),
    /// A store could not be opened.
    #[error(transparent)]
    Open(#[from] prewarm_store::OpenError),
    /// A snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] prewarm_snapshot::SnapshotError),
    /// A manifest could not be read back.
    #[error(transparent)]
    Manifest(#[from] prewarm_store::ReadManifestError),
    /// A restore failed.
    #[error(transparent)]
    Restore(#[from] prewarm_snapshot::RestoreError),
    /// The benchmark's resource id is invalid.
    #[error(transparent)]
    Id(#[from] prewarm_core::IdError),
    /// A chunk size is out of range.
    #[error("chunk size: {0}")]
    Chunker(String),
}

/// One tool's times and stored bytes.
#[derive(Serialize, Default, Clone)]
pub struct ToolResult {
    tool: String,
    full_s: f64,
    full_stored_bytes: u64,
    incr_s: f64,
    incr_stored_bytes: u64,
    restore_s: f64,
}

/// One average chunk size of the sweep.
#[derive(Serialize, Clone)]
pub struct SweepRow {
    avg_chunk: u64,
    full_s: f64,
    full_mib_s: f64,
    full_stored_bytes: u64,
    incr_s: f64,
    incr_stored_bytes: u64,
    incr_share_of_full: f64,
    chunks: u64,
}

/// What the benchmark measured.
#[derive(Serialize)]
pub struct Report {
    logical_bytes: u64,
    files: usize,
    edits: usize,
    tools: Vec<ToolResult>,
    sweep: Vec<SweepRow>,
    /// prewarm's restores reproduced the data set exactly.
    pub restore_verified: bool,
}

fn secs<T, E>(f: impl FnOnce() -> Result<T, E>) -> Result<(T, f64), E> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed().as_secs_f64()))
}

async fn prewarm_snapshot(
    store_dir: &Path,
    data: &Path,
    avg: u32,
    fsync: bool,
) -> Result<(prewarm_snapshot::SnapshotOutcome, f64), SnapshotBenchError> {
    let config = prewarm_store::StoreConfig {
        fsync,
        ..Default::default()
    };
    let store = Arc::new(Store::open_with(utf8(store_dir)?, config, true).await?);
    let snap = Snapshotter::new(store)
        .with_chunker(ChunkerParams::with_avg(avg).map_err(SnapshotBenchError::Chunker)?);
    let t = Instant::now();
    let out = snap
        .snapshot_path(&ResourceId::new("bench/data")?, data)
        .await?;
    Ok((out, t.elapsed().as_secs_f64()))
}

struct Round {
    full_s: f64,
    full_stored_bytes: u64,
    incr_s: f64,
    incr_stored_bytes: u64,
    chunks: u64,
}

/// Fresh store: full snapshot, edits, incremental snapshot; edits undone afterwards. The
/// store is left at `work/store`.
async fn prewarm_round(
    work: &Path,
    data: &Path,
    files: &[GenFile],
    avg: u32,
    fsync: bool,
    a: &Settings,
) -> Result<Round, SnapshotBenchError> {
    let store_dir = work.join("store");
    let _ = std::fs::remove_dir_all(&store_dir);
    settle()?;
    let (full, full_s) = prewarm_snapshot(&store_dir, data, avg, fsync).await?;
    let full_stored_bytes = dataset::du(&store_dir);
    let edits = dataset::apply_edits(files, a.edit_fraction, a.edit_size, 7)?;
    settle()?;
    let (_, incr_s) = prewarm_snapshot(&store_dir, data, avg, fsync).await?;
    let incr_stored_bytes = dataset::du(&store_dir) - full_stored_bytes;
    dataset::undo_edits(files, &edits)?;
    settle()?;
    Ok(Round {
        full_s,
        full_stored_bytes,
        incr_s,
        incr_stored_bytes,
        chunks: full.committed.stats.chunks,
    })
}

/// Runs the benchmark (progress on stderr).
pub async fn run(a: &Settings) -> Result<Report, SnapshotBenchError> {
    let (_tmp, work) = workdir(a.workdir.as_deref())?;
    let data = work.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    stage(
        &a.meter,
        format!(
            "generating {} of data in {} …",
            text::bytes(a.size),
            data.display()
        ),
    );
    let files = dataset::generate(&data, a.size, 42)?;
    let logical: u64 = files.iter().map(|f| f.size).sum();
    settle()?;
    let mut tools = Vec::new();
    let mut restore_verified = true;
    for fsync in [true, false] {
        let (tool, verified) = prewarm_tool(&work, &data, &files, fsync, a).await?;
        tools.push(tool);
        restore_verified &= verified;
    }
    if a.peers {
        if have("zstd") && have("tar") {
            for sync in [false, true] {
                tools.push(peer_tar_zstd(&work, &data, &files, a, sync)?);
            }
        }
        if have("restic") {
            tools.push(peer_restic(&work, &data, &files, a)?);
        }
    }
    let mut sweep = Vec::new();
    for &avg in &a.sweep {
        sweep.push(sweep_row(&work, &data, &files, avg, logical, a).await?);
    }
    Ok(Report {
        logical_bytes: logical,
        files: files.len(),
        edits: ((logical as f64 * a.edit_fraction) / a.edit_size as f64).round() as usize,
        tools,
        sweep,
        restore_verified,
    })
}

/// prewarm itself, with or without fsync: `reps` rounds of full snapshot, edits and
/// incremental snapshot, then `reps` verified restores; whether they reproduced the data.
async fn prewarm_tool(
    work: &Path,
    data: &Path,
    files: &[GenFile],
    fsync: bool,
    a: &Settings,
) -> Result<(ToolResult, bool), SnapshotBenchError> {
    let name = if fsync {
        "prewarm (fsync)"
    } else {
        "prewarm (no fsync)"
    };
    stage(
        &a.meter,
        format!(
            "{name}: {} rounds of full snapshot, edits, incremental snapshot …",
            a.reps
        ),
    );
    let avg = prewarm_store::DEFAULT_AVG_CHUNK;
    let mut rounds = Vec::new();
    for _ in 0..a.reps {
        rounds.push(prewarm_round(work, data, files, avg, fsync, a).await?);
    }
    let store_dir = work.join("store");
    let edits = dataset::apply_edits(files, a.edit_fraction, a.edit_size, 7)?;
    settle()?;
    let (incr, _) = prewarm_snapshot(&store_dir, data, avg, fsync).await?;
    stage(&a.meter, format!("{name}: {} verified restores …", a.reps));
    let store = Store::open(utf8(&store_dir)?).await?;
    let m = store.manifest(&incr.committed.state).await?;
    let restored = work.join("restore-prewarm");
    let mut restore_times = Vec::new();
    for _ in 0..a.reps {
        let _ = std::fs::remove_dir_all(&restored);
        settle()?;
        let t = Instant::now();
        prewarm_snapshot::restore(&store, &m, &restored).await?;
        restore_times.push(t.elapsed().as_secs_f64());
    }
    let verified = dataset::tree_digest(&restored)? == dataset::tree_digest(data)?;
    std::fs::remove_dir_all(&restored)?;
    std::fs::remove_dir_all(&store_dir)?;
    dataset::undo_edits(files, &edits)?;
    settle()?;
    let tool = ToolResult {
        tool: name.into(),
        full_s: median(rounds.iter().map(|r| r.full_s)),
        full_stored_bytes: rounds[0].full_stored_bytes,
        incr_s: median(rounds.iter().map(|r| r.incr_s)),
        incr_stored_bytes: rounds[0].incr_stored_bytes,
        restore_s: median(restore_times.into_iter()),
    };
    Ok((tool, verified))
}

/// One average chunk size: `reps` rounds without fsync.
async fn sweep_row(
    work: &Path,
    data: &Path,
    files: &[GenFile],
    avg: u64,
    logical: u64,
    a: &Settings,
) -> Result<SweepRow, SnapshotBenchError> {
    stage(
        &a.meter,
        format!("sweep: average chunk {} …", text::bytes(avg)),
    );
    let avg32 = u32::try_from(avg)
        .map_err(|_| SnapshotBenchError::Chunker(format!("{avg} is too large")))?;
    let mut rounds = Vec::new();
    for _ in 0..a.reps {
        rounds.push(prewarm_round(work, data, files, avg32, false, a).await?);
        std::fs::remove_dir_all(work.join("store"))?;
    }
    let r = &rounds[0];
    let fs = median(rounds.iter().map(|r| r.full_s));
    Ok(SweepRow {
        avg_chunk: avg,
        full_s: fs,
        full_mib_s: logical as f64 / fs / (1 << 20) as f64,
        full_stored_bytes: r.full_stored_bytes,
        incr_s: median(rounds.iter().map(|r| r.incr_s)),
        incr_stored_bytes: r.incr_stored_bytes,
        incr_share_of_full: r.incr_stored_bytes as f64 / r.full_stored_bytes as f64,
        chunks: r.chunks,
    })
}

/// Runs `f` `reps` times (settling before each) and returns the median time.
fn timed(
    reps: usize,
    mut f: impl FnMut() -> Result<(), SnapshotBenchError>,
) -> Result<f64, SnapshotBenchError> {
    let mut times = Vec::new();
    for _ in 0..reps {
        settle()?;
        let ((), s) = secs(&mut f)?;
        times.push(s);
    }
    Ok(median(times.into_iter()))
}

fn peer_tar_zstd(
    work: &Path,
    data: &Path,
    files: &[GenFile],
    a: &Settings,
    sync: bool,
) -> Result<ToolResult, SnapshotBenchError> {
    let suffix = if sync { " ; sync" } else { "" };
    stage(
        &a.meter,
        format!("tar | zstd -T0 -3{suffix}: full, incremental (a full re-run), restore …"),
    );
    let out = work.join("data.tar.zst");
    let d = data.display();
    let cmd = format!(
        "tar -cf - -C {d} . | zstd -T0 -3 -q -f -o {}{suffix}",
        out.display()
    );
    let full_s = timed(a.reps, || {
        let _ = std::fs::remove_file(&out);
        Ok(sh(&cmd, &[])?)
    })?;
    let full_stored = std::fs::metadata(&out)?.len();
    let edits = dataset::apply_edits(files, a.edit_fraction, a.edit_size, 7)?;
    settle()?;
    let incr_s = timed(a.reps, || {
        let _ = std::fs::remove_file(&out);
        Ok(sh(&cmd, &[])?)
    })?;
    let incr_stored = std::fs::metadata(&out)?.len();
    let dest = work.join("restore-tar");
    let restore = format!(
        "zstd -d -q -c {} | tar -xf - -C {}{suffix}",
        out.display(),
        dest.display()
    );
    let restore_s = timed(a.reps, || {
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::create_dir_all(&dest)?;
        Ok(sh(&restore, &[])?)
    })?;
    std::fs::remove_dir_all(&dest)?;
    std::fs::remove_file(&out)?;
    dataset::undo_edits(files, &edits)?;
    settle()?;
    Ok(ToolResult {
        tool: format!("tar | zstd -T0 -3{suffix}"),
        full_s,
        full_stored_bytes: full_stored,
        incr_s,
        incr_stored_bytes: incr_stored,
        restore_s,
    })
}

fn peer_restic(
    work: &Path,
    data: &Path,
    files: &[GenFile],
    a: &Settings,
) -> Result<ToolResult, SnapshotBenchError> {
    stage(
        &a.meter,
        "restic: init, full backup, incremental backup, restore …",
    );
    let repo = work.join("restic-repo");
    let _ = std::fs::remove_dir_all(&repo);
    let r = repo.display().to_string();
    let env = [
        ("RESTIC_PASSWORD", "prewarm-bench"),
        ("RESTIC_REPOSITORY", r.as_str()),
    ];
    sh("restic init -q", &env)?;
    let base = dataset::du(&repo);
    let backup = format!("cd {} && restic backup -q .", data.display());
    settle()?;
    let ((), full_s) = secs(|| sh(&backup, &env))?;
    let full_stored = dataset::du(&repo) - base;
    let edits = dataset::apply_edits(files, a.edit_fraction, a.edit_size, 7)?;
    settle()?;
    let ((), incr_s) = secs(|| sh(&backup, &env))?;
    let incr_stored = dataset::du(&repo) - base - full_stored;
    let dest = work.join("restore-restic");
    let restore = format!("restic restore -q latest --target {}", dest.display());
    let restore_s = timed(a.reps, || {
        let _ = std::fs::remove_dir_all(&dest);
        Ok(sh(&restore, &env)?)
    })?;
    std::fs::remove_dir_all(&dest)?;
    std::fs::remove_dir_all(&repo)?;
    dataset::undo_edits(files, &edits)?;
    settle()?;
    Ok(ToolResult {
        tool: "restic".into(),
        full_s,
        full_stored_bytes: full_stored,
        incr_s,
        incr_stored_bytes: incr_stored,
        restore_s,
    })
}

impl Report {
    /// The terminal text.
    pub fn text(&self) -> String {
        let r = self;
        let mut out = String::new();
        let mib = |b: u64, s: f64| text::rate(b, s);
        let _ = writeln!(
            out,
            "data set: {} in {} files; {} scattered edits; prewarm restore verified: {}\n",
            text::bytes(r.logical_bytes),
            r.files,
            r.edits,
            r.restore_verified
        );
        let pw = r.tools[0].clone();
        let rows: Vec<Vec<String>> = r
            .tools
            .iter()
            .map(|t| {
                vec![
                    t.tool.clone(),
                    format!("{:.2}s ({})", t.full_s, mib(r.logical_bytes, t.full_s)),
                    text::bytes(t.full_stored_bytes),
                    format!("{:.2}s", t.incr_s),
                    text::bytes(t.incr_stored_bytes),
                    format!(
                        "{:.2}s ({})",
                        t.restore_s,
                        mib(r.logical_bytes, t.restore_s)
                    ),
                    format!("{:.2}x", t.full_s / pw.full_s),
                    format!("{:.2}x", t.restore_s / pw.restore_s),
                ]
            })
            .collect();
        let _ = writeln!(
            out,
            "{}\n",
            text::table(
                &[
                    "tool",
                    "full snapshot",
                    "stored",
                    "incremental",
                    "incr stored",
                    "restore",
                    "full: tool/prewarm",
                    "restore: tool/prewarm"
                ],
                &rows
            )
        );
        let _ = writeln!(
            out,
            "prewarm incremental: {:.1}% of the full snapshot's stored bytes, {:.1}% of its time\n",
            100.0 * pw.incr_stored_bytes as f64 / pw.full_stored_bytes as f64,
            100.0 * pw.incr_s / pw.full_s
        );
        if !r.sweep.is_empty() {
            let rows: Vec<Vec<String>> = r
                .sweep
                .iter()
                .map(|s| {
                    vec![
                        text::bytes(s.avg_chunk),
                        s.chunks.to_string(),
                        format!("{:.0} MiB/s", s.full_mib_s),
                        text::bytes(s.full_stored_bytes),
                        text::bytes(s.incr_stored_bytes),
                        format!("{:.1}%", 100.0 * s.incr_share_of_full),
                        format!("{:.2}s", s.incr_s),
                    ]
                })
                .collect();
            let _ = writeln!(
                out,
                "{}",
                text::table(
                    &[
                        "avg chunk",
                        "chunks",
                        "full throughput",
                        "full stored",
                        "incr stored",
                        "incr/full",
                        "incr time"
                    ],
                    &rows
                )
            );
        }
        out
    }
}
