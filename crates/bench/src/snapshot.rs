//! `prewarm bench snapshot`: on a generated data set (default 1 GiB, many files, half
//! compressible), measures prewarm's full snapshot, incremental snapshot after 1% scattered
//! 4 KiB in-place edits, and verified restore; the same work with `tar | zstd -T0 -3` and
//! restic when installed; and a sweep of average chunk sizes (the granularity trade-off).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use prewarm_core::ResourceId;
use prewarm_snapshot::Snapshotter;
use prewarm_store::{ChunkerParams, Store};
use serde::Serialize;

use crate::cmd::parse_size;
use crate::dataset::{self, GenFile};
use crate::output;

/// Arguments of `prewarm bench snapshot`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data set size.
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    size: u64,
    /// Share of bytes overwritten before the incremental snapshot.
    #[arg(long, default_value_t = 0.01)]
    edit_fraction: f64,
    /// Size of each in-place edit.
    #[arg(long, value_parser = parse_size, default_value = "4KiB")]
    edit_size: u64,
    /// Average chunk sizes for the granularity sweep (empty to skip).
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = "4KiB,8KiB,16KiB,32KiB,64KiB")]
    sweep: Vec<u64>,
    /// Repetitions of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Skip the granularity sweep.
    #[arg(long)]
    no_sweep: bool,
    /// Skip the peer tools.
    #[arg(long)]
    no_peers: bool,
    /// Working directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Default, Clone)]
struct ToolResult {
    tool: String,
    full_s: f64,
    full_stored_bytes: u64,
    incr_s: f64,
    incr_stored_bytes: u64,
    restore_s: f64,
}

#[derive(Serialize, Clone)]
struct SweepRow {
    avg_chunk: u64,
    full_s: f64,
    full_mib_s: f64,
    full_stored_bytes: u64,
    incr_s: f64,
    incr_stored_bytes: u64,
    incr_share_of_full: f64,
    chunks: u64,
}

#[derive(Serialize)]
struct Report {
    logical_bytes: u64,
    files: usize,
    edits: usize,
    tools: Vec<ToolResult>,
    sweep: Vec<SweepRow>,
    restore_verified: bool,
}

fn secs<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, f64)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed().as_secs_f64()))
}

pub(super) fn sh(cmd: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
    let st = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().copied())
        .status()?;
    if !st.success() {
        bail!("`{cmd}` failed with {st}");
    }
    Ok(())
}

/// Flushes dirty pages so one measurement does not pay for the previous step's writeback.
pub(super) fn settle() -> anyhow::Result<()> {
    sh("sync", &[])
}

pub(super) fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .is_ok_and(|s| s.success())
}

async fn prewarm_snapshot(
    store_dir: &Path,
    data: &Path,
    avg: u32,
    fsync: bool,
) -> anyhow::Result<(prewarm_snapshot::SnapshotOutcome, f64)> {
    let config = prewarm_store::StoreConfig {
        fsync,
        ..Default::default()
    };
    let store =
        Arc::new(Store::open_with(store_dir.to_str().context("utf-8 path")?, config, true).await?);
    let snap = Snapshotter::new(store)
        .with_chunker(ChunkerParams::with_avg(avg).map_err(anyhow::Error::msg)?);
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
    a: &Args,
) -> anyhow::Result<Round> {
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

pub(super) fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// The benchmark's work directory: `dir` (created) or a temporary one, removed when the
/// returned guard drops.
pub(super) fn workdir(
    dir: Option<&Path>,
) -> anyhow::Result<(Option<tempfile::TempDir>, std::path::PathBuf)> {
    match dir {
        Some(w) => {
            std::fs::create_dir_all(w)?;
            Ok((None, w.to_owned()))
        }
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("prewarm-bench-")
                .tempdir()?;
            let p = tmp.path().to_owned();
            Ok((Some(tmp), p))
        }
    }
}

/// Runs the benchmark.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let (_tmp, work) = workdir(a.workdir.as_deref())?;
    let data = work.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    eprintln!(
        "generating {} of data in {} …",
        output::bytes(a.size),
        data.display()
    );
    let files = dataset::generate(&data, a.size, 42)?;
    let logical: u64 = files.iter().map(|f| f.size).sum();
    settle()?;
    let mut tools = Vec::new();
    let mut restore_verified = true;

    for fsync in [true, false] {
        let name = if fsync {
            "prewarm (fsync)"
        } else {
            "prewarm (no fsync)"
        };
        eprintln!(
            "{name}: {} rounds of full snapshot, edits, incremental snapshot …",
            a.reps
        );
        let mut rounds = Vec::new();
        for _ in 0..a.reps {
            rounds.push(
                prewarm_round(
                    &work,
                    &data,
                    &files,
                    prewarm_store::DEFAULT_AVG_CHUNK,
                    fsync,
                    &a,
                )
                .await?,
            );
        }
        let store_dir = work.join("store");
        let edits = dataset::apply_edits(&files, a.edit_fraction, a.edit_size, 7)?;
        settle()?;
        let (incr, _) =
            prewarm_snapshot(&store_dir, &data, prewarm_store::DEFAULT_AVG_CHUNK, fsync).await?;
        eprintln!("{name}: {} verified restores …", a.reps);
        let store = Store::open(store_dir.to_str().context("utf-8 path")?).await?;
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
        restore_verified &= dataset::tree_digest(&restored)? == dataset::tree_digest(&data)?;
        std::fs::remove_dir_all(&restored)?;
        std::fs::remove_dir_all(&store_dir)?;
        dataset::undo_edits(&files, &edits)?;
        settle()?;
        tools.push(ToolResult {
            tool: name.into(),
            full_s: median(rounds.iter().map(|r| r.full_s)),
            full_stored_bytes: rounds[0].full_stored_bytes,
            incr_s: median(rounds.iter().map(|r| r.incr_s)),
            incr_stored_bytes: rounds[0].incr_stored_bytes,
            restore_s: median(restore_times.into_iter()),
        });
    }

    if !a.no_peers {
        if have("zstd") && have("tar") {
            for sync in [false, true] {
                tools.push(peer_tar_zstd(&work, &data, &files, &a, sync)?);
            }
        }
        if have("restic") {
            tools.push(peer_restic(&work, &data, &files, &a)?);
        }
    }

    let mut sweep = Vec::new();
    let sweep_sizes = if a.no_sweep { &[][..] } else { &a.sweep[..] };
    for &avg in sweep_sizes {
        eprintln!("sweep: average chunk {} …", output::bytes(avg));
        let avg32 = u32::try_from(avg).context("chunk size")?;
        let mut rounds = Vec::new();
        for _ in 0..a.reps {
            rounds.push(prewarm_round(&work, &data, &files, avg32, false, &a).await?);
            std::fs::remove_dir_all(work.join("store"))?;
        }
        let r = &rounds[0];
        let fs = median(rounds.iter().map(|r| r.full_s));
        sweep.push(SweepRow {
            avg_chunk: avg,
            full_s: fs,
            full_mib_s: logical as f64 / fs / (1 << 20) as f64,
            full_stored_bytes: r.full_stored_bytes,
            incr_s: median(rounds.iter().map(|r| r.incr_s)),
            incr_stored_bytes: r.incr_stored_bytes,
            incr_share_of_full: r.incr_stored_bytes as f64 / r.full_stored_bytes as f64,
            chunks: r.chunks,
        });
    }

    let report = Report {
        logical_bytes: logical,
        files: files.len(),
        edits: ((logical as f64 * a.edit_fraction) / a.edit_size as f64).round() as usize,
        tools,
        sweep,
        restore_verified,
    };
    if a.json {
        output::json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(if restore_verified { 0 } else { 1 })
}

/// Runs `f` `reps` times (settling before each) and returns the median time.
fn timed(reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
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
    a: &Args,
    sync: bool,
) -> anyhow::Result<ToolResult> {
    let suffix = if sync { " ; sync" } else { "" };
    eprintln!("tar | zstd -T0 -3{suffix}: full, incremental (a full re-run), restore …");
    let out = work.join("data.tar.zst");
    let d = data.display();
    let cmd = format!(
        "tar -cf - -C {d} . | zstd -T0 -3 -q -f -o {}{suffix}",
        out.display()
    );
    let full_s = timed(a.reps, || {
        let _ = std::fs::remove_file(&out);
        sh(&cmd, &[])
    })?;
    let full_stored = std::fs::metadata(&out)?.len();
    let edits = dataset::apply_edits(files, a.edit_fraction, a.edit_size, 7)?;
    settle()?;
    let incr_s = timed(a.reps, || {
        let _ = std::fs::remove_file(&out);
        sh(&cmd, &[])
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
        sh(&restore, &[])
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
    a: &Args,
) -> anyhow::Result<ToolResult> {
    eprintln!("restic: init, full backup, incremental backup, restore …");
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
        sh(&restore, &env)
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

fn print_report(r: &Report) {
    let mib = |b: u64, s: f64| output::rate(b, s);
    println!(
        "data set: {} in {} files; {} scattered edits; prewarm restore verified: {}\n",
        output::bytes(r.logical_bytes),
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
                output::bytes(t.full_stored_bytes),
                format!("{:.2}s", t.incr_s),
                output::bytes(t.incr_stored_bytes),
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
    println!(
        "{}\n",
        output::table(
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
    println!(
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
                    output::bytes(s.avg_chunk),
                    s.chunks.to_string(),
                    format!("{:.0} MiB/s", s.full_mib_s),
                    output::bytes(s.full_stored_bytes),
                    output::bytes(s.incr_stored_bytes),
                    format!("{:.1}%", 100.0 * s.incr_share_of_full),
                    format!("{:.2}s", s.incr_s),
                ]
            })
            .collect();
        println!(
            "{}",
            output::table(
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
}
