//! Azure Functions 2019 ("Serverless in the Wild", ATC'20).
//!
//! Inputs are recognised by their header: the invocation file
//! (`HashFunction,HashOwner,HashApp,minute_1..minute_N`), and optionally the duration file
//! (`…,Average,Count,…`, milliseconds, keyed by owner, app and function) and the memory file
//! (`…,AverageAllocatedMb,…`, keyed by owner and app).
//!
//! **Timestamps.** The trace only counts invocations per minute. The `n` invocations of a
//! function in minute `m` (1-based) are spread evenly over that minute, at
//! `60·(m−1) + 60·(i + ½)/n` seconds for `i = 0..n`: deterministic, no invented burstiness,
//! and never two at the same instant. The key is the app; the resource is `fn/<function>`
//! (the function's warm instance); `bytes` is the app's average allocated memory;
//! `duration_s` the function's average duration.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{ImportError, Sink, read_file, record, resource_for};

enum Kind {
    Invocations,
    Durations,
    Memory,
}

fn kind_of(header: &csv::StringRecord) -> Option<Kind> {
    let has = |c: &str| header.iter().any(|h| h == c);
    if has("minute_1") {
        Some(Kind::Invocations)
    } else if has("AverageAllocatedMb") {
        Some(Kind::Memory)
    } else if has("Average") && has("HashFunction") {
        Some(Kind::Durations)
    } else {
        None
    }
}

fn col(header: &csv::StringRecord, name: &str, path: &Path) -> Result<usize, ImportError> {
    header
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| ImportError::Format(format!("{}: no column {name:?}", path.display())))
}

pub fn import(inputs: &[PathBuf], sink: &mut Sink) -> Result<(), ImportError> {
    let mut inv: Option<PathBuf> = None;
    let mut durations: HashMap<(String, String, String), f64> = HashMap::new();
    let mut memory: HashMap<(String, String), f64> = HashMap::new();
    for p in inputs {
        let data = read_file(p)?;
        let mut rd = csv::ReaderBuilder::new().from_reader(&data[..]);
        let header = rd
            .headers()
            .map_err(|e| ImportError::Format(format!("{}: {e}", p.display())))?
            .clone();
        match kind_of(&header) {
            Some(Kind::Invocations) => inv = Some(p.clone()),
            Some(Kind::Durations) => {
                let (o, a, f, avg) = (
                    col(&header, "HashOwner", p)?,
                    col(&header, "HashApp", p)?,
                    col(&header, "HashFunction", p)?,
                    col(&header, "Average", p)?,
                );
                for (i, row) in rd.records().enumerate() {
                    let line = i as u64 + 2;
                    match row.ok().and_then(|r| {
                        Some((
                            (
                                r.get(o)?.to_owned(),
                                r.get(a)?.to_owned(),
                                r.get(f)?.to_owned(),
                            ),
                            r.get(avg)?.parse::<f64>().ok()?,
                        ))
                    }) {
                        Some((k, ms)) if ms.is_finite() && ms >= 0.0 => {
                            durations.insert(k, ms / 1000.0);
                        }
                        _ => sink.malformed(p, line, "bad duration row")?,
                    }
                }
            }
            Some(Kind::Memory) => {
                let (o, a, avg) = (
                    col(&header, "HashOwner", p)?,
                    col(&header, "HashApp", p)?,
                    col(&header, "AverageAllocatedMb", p)?,
                );
                for (i, row) in rd.records().enumerate() {
                    let line = i as u64 + 2;
                    match row.ok().and_then(|r| {
                        Some((
                            (r.get(o)?.to_owned(), r.get(a)?.to_owned()),
                            r.get(avg)?.parse::<f64>().ok()?,
                        ))
                    }) {
                        Some((k, mb)) if mb.is_finite() && mb >= 0.0 => {
                            memory.insert(k, mb);
                        }
                        _ => sink.malformed(p, line, "bad memory row")?,
                    }
                }
            }
            None => {
                return Err(ImportError::Format(format!(
                    "{}: not an Azure 2019 invocation, duration or memory file (header starts {})",
                    p.display(),
                    super::capped(&header.iter().take(4).collect::<Vec<_>>().join(","))
                )));
            }
        }
    }
    let inv = inv.ok_or_else(|| {
        ImportError::Format(
            "no invocation file (HashFunction,…,minute_1,…) among the inputs".into(),
        )
    })?;
    let data = read_file(&inv)?;
    let mut rd = csv::ReaderBuilder::new().from_reader(&data[..]);
    let header = rd
        .headers()
        .map_err(|e| ImportError::Format(format!("{}: {e}", inv.display())))?
        .clone();
    let (f, o, a) = (
        col(&header, "HashFunction", &inv)?,
        col(&header, "HashOwner", &inv)?,
        col(&header, "HashApp", &inv)?,
    );
    let minutes: Vec<(usize, u64)> = header
        .iter()
        .enumerate()
        .filter_map(|(i, h)| Some((i, h.strip_prefix("minute_")?.parse::<u64>().ok()?)))
        .collect();
    for (i, row) in rd.records().enumerate() {
        let line = i as u64 + 2;
        let Ok(row) = row else {
            sink.malformed(&inv, line, "unreadable CSV row")?;
            continue;
        };
        let (Some(func), Some(owner), Some(app)) = (row.get(f), row.get(o), row.get(a)) else {
            sink.malformed(&inv, line, "missing id columns")?;
            continue;
        };
        let counts: Option<Vec<u64>> = minutes
            .iter()
            .map(|&(c, _)| row.get(c)?.trim().parse::<u64>().ok())
            .collect();
        let Some(counts) = counts else {
            sink.malformed(&inv, line, "a minute count is not a non-negative integer")?;
            continue;
        };
        let resource = resource_for("fn", func.as_bytes());
        let bytes = memory
            .get(&(owner.to_owned(), app.to_owned()))
            .map_or(0, |mb| (mb * 1024.0 * 1024.0) as u64);
        let duration = durations
            .get(&(owner.to_owned(), app.to_owned(), func.to_owned()))
            .copied()
            .unwrap_or(0.0);
        for (&(_, minute), &n) in minutes.iter().zip(&counts) {
            for k in 0..n {
                let ts = 60.0 * (minute - 1) as f64 + 60.0 * (k as f64 + 0.5) / n as f64;
                sink.push(record(
                    ts,
                    "invoke",
                    app.to_owned(),
                    resource.clone(),
                    bytes,
                    duration,
                ));
            }
        }
    }
    Ok(())
}
