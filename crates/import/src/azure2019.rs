//! Azure Functions 2019 ("Serverless in the Wild", ATC'20).
//!
//! Inputs are recognised by their header, whatever their order or name:
//!
//! - invocation counts: the published `invocations_per_function_md.anon.dNN.csv`
//!   (`HashOwner,HashApp,HashFunction,Trigger,1,2,…,1440`), a trimmed copy keeping any window
//!   of those minute columns (`…,Trigger,480,481,…,959`), or the vHive sample layout
//!   (`HashFunction,HashOwner,HashApp,minute_1..minute_N`). A minute column is named by its
//!   number `m` (from 1), bare or as `minute_m`; a window keeps its offset.
//! - durations, `function_durations_percentiles.anon.dNN.csv` (`HashOwner,HashApp,
//!   HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,…`, milliseconds);
//! - memory, `app_memory_percentiles.anon.dNN.csv` (`HashOwner,HashApp,SampleCount,
//!   AverageAllocatedMb,AverageAllocatedMb_pct1,…`, per app).
//!
//! **Days.** A file's day is the `dNN` in its name (`d01`–`d14`; a name without one is day
//! 1), so the 14 days import together: day `N`'s minute `m` starts at
//! `(N−1)·86400 + 60·(m−1)` seconds. Durations and memory join the invocations of their own
//! day, else of the closest day that has them (the memory files stop at `d12`).
//!
//! **Timestamps.** The trace only counts invocations per minute. The `n` invocations of a
//! function in a minute starting at `t` are spread evenly over it, at `t + 60·(i + ½)/n`
//! seconds for `i = 0..n`: deterministic, no invented burstiness, and never two at the same
//! instant. The event type is the function's trigger (`http`, `timer`, `event`, `queue`,
//! `storage`, `orchestration`, `others`), `invoke` when the file has none; the key is the app;
//! the resource is `fn/<function>` (the function's warm instance); `bytes` is the app's
//! average allocated memory; `duration_s` the function's average duration.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::path::{Path, PathBuf};

use super::{ImportError, Sink, base_name, capped, read_file, record, resource_for};

/// Seconds in a day of the trace.
const DAY_S: f64 = 86_400.0;

/// Minute columns in a day file (`1` … `1440`).
const MINUTES_PER_DAY: u64 = 1_440;

enum Kind {
    Invocations,
    Durations,
    Memory,
}

/// One value per key and day.
struct ByDay<K>(HashMap<K, BTreeMap<u32, f64>>);

impl<K: Hash + Eq> ByDay<K> {
    fn new() -> Self {
        Self(HashMap::new())
    }

    fn insert(&mut self, key: K, day: u32, v: f64) {
        self.0.entry(key).or_default().insert(day, v);
    }

    /// The value of `day`, else of the closest day (the earlier one on a tie).
    fn get(&self, key: &K, day: u32) -> Option<f64> {
        let days = self.0.get(key)?;
        if let Some(v) = days.get(&day) {
            return Some(*v);
        }
        let before = days.range(..day).next_back();
        let after = days.range(day..).next();
        match (before, after) {
            (Some((b, vb)), Some((a, va))) => Some(if day - b <= a - day { *vb } else { *va }),
            (Some((_, v)), None) | (None, Some((_, v))) => Some(*v),
            (None, None) => None,
        }
    }
}

/// What the duration and memory files say.
struct Joined {
    /// Average duration, seconds, by (owner, app, function).
    durations: ByDay<(String, String, String)>,
    /// Average allocated memory, MB, by (owner, app).
    memory: ByDay<(String, String)>,
}

/// The minute a column stands for: `m` or `minute_m`.
fn minute_of(h: &str) -> Option<u64> {
    let n = h.strip_prefix("minute_").unwrap_or(h);
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

fn kind_of(header: &csv::StringRecord) -> Option<Kind> {
    let has = |c: &str| header.iter().any(|h| h == c);
    if has("HashFunction") && header.iter().any(|h| minute_of(h).is_some()) {
        Some(Kind::Invocations)
    } else if has("AverageAllocatedMb") {
        Some(Kind::Memory)
    } else if has("Average") && has("HashFunction") {
        Some(Kind::Durations)
    } else {
        None
    }
}

/// The day in the file's name: a `dNN` part (`….anon.d07.csv`); day 1 when there is none.
fn day_of(path: &Path) -> Result<u32, ImportError> {
    let name = base_name(path);
    let day = name
        .split(['.', '_', '-'])
        .filter_map(|part| {
            let digits = part.strip_prefix('d')?;
            (!digits.is_empty() && digits.len() <= 3 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u32>().ok())
                .flatten()
        })
        .next_back();
    match day {
        None => Ok(1),
        Some(0) => Err(ImportError::Format(format!(
            "{}: day d00 in the name; days are numbered from d01",
            path.display()
        ))),
        Some(d) => Ok(d),
    }
}

fn col(header: &csv::StringRecord, name: &str, path: &Path) -> Result<usize, ImportError> {
    header.iter().position(|h| h == name).ok_or_else(|| {
        ImportError::Format(format!(
            "{}: no column {name:?} (the header has {})",
            path.display(),
            capped(&header.iter().collect::<Vec<_>>().join(","))
        ))
    })
}

/// A CSV reader over `data` and its header.
fn reader<'a>(
    data: &'a [u8],
    path: &Path,
) -> Result<(csv::Reader<&'a [u8]>, csv::StringRecord), ImportError> {
    let mut rd = csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
        .from_reader(data);
    let header = rd
        .headers()
        .map_err(|e| ImportError::Format(format!("{}: {e}", path.display())))?
        .clone();
    Ok((rd, header))
}

/// A non-negative, finite number.
fn amount(s: Option<&str>) -> Option<f64> {
    s?.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

pub fn import(inputs: &[PathBuf], sink: &mut Sink) -> Result<(), ImportError> {
    let mut invocations: Vec<(&Path, u32)> = Vec::new();
    let mut joined = Joined {
        durations: ByDay::new(),
        memory: ByDay::new(),
    };
    for p in inputs {
        let data = read_file(p)?;
        let day = day_of(p)?;
        let (rd, header) = reader(&data, p)?;
        match kind_of(&header) {
            Some(Kind::Invocations) => invocations.push((p, day)),
            Some(Kind::Durations) => read_durations(rd, &header, p, day, &mut joined, sink)?,
            Some(Kind::Memory) => read_memory(rd, &header, p, day, &mut joined, sink)?,
            None => {
                return Err(ImportError::Format(format!(
                    "{}: not an Azure 2019 invocation, duration or memory file (header starts {})",
                    p.display(),
                    capped(&header.iter().take(5).collect::<Vec<_>>().join(","))
                )));
            }
        }
    }
    if invocations.is_empty() {
        return Err(ImportError::Format(
            "no invocation file (HashOwner,HashApp,HashFunction,Trigger,1,…,1440) among the inputs"
                .into(),
        ));
    }
    for (p, day) in invocations {
        read_invocations(p, day, &joined, sink)?;
    }
    Ok(())
}

fn read_durations(
    mut rd: csv::Reader<&[u8]>,
    header: &csv::StringRecord,
    p: &Path,
    day: u32,
    joined: &mut Joined,
    sink: &mut Sink,
) -> Result<(), ImportError> {
    let (o, a, f, avg) = (
        col(header, "HashOwner", p)?,
        col(header, "HashApp", p)?,
        col(header, "HashFunction", p)?,
        col(header, "Average", p)?,
    );
    for (i, row) in rd.records().enumerate() {
        let line = i as u64 + 2;
        let parsed = row.ok().and_then(|r| {
            let key = (
                r.get(o)?.to_owned(),
                r.get(a)?.to_owned(),
                r.get(f)?.to_owned(),
            );
            Some((key, amount(r.get(avg))?))
        });
        match parsed {
            Some((k, ms)) => joined.durations.insert(k, day, ms / 1000.0),
            None => sink.malformed(
                p,
                line,
                "bad duration row (expected owner, app, function and Average in ms)",
            )?,
        }
    }
    Ok(())
}

fn read_memory(
    mut rd: csv::Reader<&[u8]>,
    header: &csv::StringRecord,
    p: &Path,
    day: u32,
    joined: &mut Joined,
    sink: &mut Sink,
) -> Result<(), ImportError> {
    let (o, a, avg) = (
        col(header, "HashOwner", p)?,
        col(header, "HashApp", p)?,
        col(header, "AverageAllocatedMb", p)?,
    );
    for (i, row) in rd.records().enumerate() {
        let line = i as u64 + 2;
        let parsed = row.ok().and_then(|r| {
            let key = (r.get(o)?.to_owned(), r.get(a)?.to_owned());
            Some((key, amount(r.get(avg))?))
        });
        match parsed {
            Some((k, mb)) => joined.memory.insert(k, day, mb),
            None => sink.malformed(
                p,
                line,
                "bad memory row (expected owner, app and AverageAllocatedMb)",
            )?,
        }
    }
    Ok(())
}

/// The columns of an invocation file.
struct InvocationColumns {
    owner: usize,
    app: usize,
    function: usize,
    trigger: Option<usize>,
    /// (column, minute number from 1).
    minutes: Vec<(usize, u64)>,
}

fn invocation_columns(
    header: &csv::StringRecord,
    p: &Path,
) -> Result<InvocationColumns, ImportError> {
    let minutes: Vec<(usize, u64)> = header
        .iter()
        .enumerate()
        .filter_map(|(i, h)| Some((i, minute_of(h)?)))
        .collect();
    if minutes.iter().any(|&(_, m)| m == 0) {
        return Err(ImportError::Format(format!(
            "{}: a minute column is numbered 0; minutes are numbered from 1",
            p.display()
        )));
    }
    if let Some(&(_, m)) = minutes.iter().find(|&&(_, m)| m > MINUTES_PER_DAY) {
        return Err(ImportError::Format(format!(
            "{}: a minute column is numbered {}; a day file has minutes 1 to {MINUTES_PER_DAY}",
            p.display(),
            m
        )));
    }
    Ok(InvocationColumns {
        owner: col(header, "HashOwner", p)?,
        app: col(header, "HashApp", p)?,
        function: col(header, "HashFunction", p)?,
        trigger: header.iter().position(|h| h == "Trigger"),
        minutes,
    })
}

fn read_invocations(
    p: &Path,
    day: u32,
    joined: &Joined,
    sink: &mut Sink,
) -> Result<(), ImportError> {
    let data = read_file(p)?;
    let (mut rd, header) = reader(&data, p)?;
    let c = invocation_columns(&header, p)?;
    let day_start = f64::from(day - 1) * DAY_S;
    for (i, row) in rd.records().enumerate() {
        let line = i as u64 + 2;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                sink.malformed(p, line, format!("unreadable CSV row: {e}"))?;
                continue;
            }
        };
        let (Some(owner), Some(app), Some(func)) =
            (row.get(c.owner), row.get(c.app), row.get(c.function))
        else {
            sink.malformed(p, line, "missing id columns")?;
            continue;
        };
        if app.is_empty() || func.is_empty() {
            sink.malformed(p, line, "empty app or function id")?;
            continue;
        }
        let counts: Result<Vec<u64>, u64> = c
            .minutes
            .iter()
            .map(|&(col, m)| {
                row.get(col)
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or(m)
            })
            .collect();
        let counts = match counts {
            Ok(v) => v,
            Err(m) => {
                sink.malformed(
                    p,
                    line,
                    format!("the count of minute {m} is not a non-negative integer"),
                )?;
                continue;
            }
        };
        let kind = match c.trigger.and_then(|t| row.get(t)).map(str::trim) {
            Some(t) if !t.is_empty() => t,
            _ => "invoke",
        };
        let bytes = joined
            .memory
            .get(&(owner.to_owned(), app.to_owned()), day)
            .map_or(0, |mb| (mb * 1024.0 * 1024.0) as u64);
        let duration = joined
            .durations
            .get(&(owner.to_owned(), app.to_owned(), func.to_owned()), day)
            .unwrap_or(0.0);
        let resource = resource_for("fn", func.as_bytes());
        // One check per row (its records differ only in time): a key or trigger too long
        // for a history record makes the row malformed.
        if let Err(e) = record(day_start, kind, app.to_owned(), resource.clone(), 0, 0.0).validate()
        {
            sink.malformed(p, line, e.to_string())?;
            continue;
        }
        sink.reserve(counts.iter().fold(0, |a: u64, &n| a.saturating_add(n)))?;
        for (&(_, minute), &n) in c.minutes.iter().zip(&counts) {
            let start = day_start + 60.0 * (minute - 1) as f64;
            for k in 0..n {
                let ts = start + 60.0 * (k as f64 + 0.5) / n as f64;
                sink.push(record(
                    ts,
                    kind,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_minutes_from_names() {
        let d = |n: &str| day_of(Path::new(n)).unwrap();
        assert_eq!(d("invocations_per_function_md.anon.d07.csv"), 7);
        assert_eq!(d("/x/function_durations_percentiles.anon.d14.csv.gz"), 14);
        assert_eq!(d("app_memory_percentiles.anon.d01.csv"), 1);
        assert_eq!(d("1350_inv.csv"), 1);
        assert_eq!(d("data.csv"), 1, "the extension is not a day");
        assert!(day_of(Path::new("inv.d00.csv")).is_err());
        assert_eq!(minute_of("480"), Some(480));
        assert_eq!(minute_of("minute_1440"), Some(1440));
        assert_eq!(minute_of("Trigger"), None);
        assert_eq!(minute_of("minute_"), None);
        assert_eq!(minute_of("+3"), None);
    }

    #[test]
    fn closest_day_joins() {
        let mut m = ByDay::new();
        m.insert("a", 2, 20.0);
        m.insert("a", 6, 60.0);
        assert_eq!(m.get(&"a", 2), Some(20.0));
        assert_eq!(m.get(&"a", 1), Some(20.0));
        assert_eq!(m.get(&"a", 4), Some(20.0), "a tie goes to the earlier day");
        assert_eq!(m.get(&"a", 5), Some(60.0));
        assert_eq!(m.get(&"a", 14), Some(60.0));
        assert_eq!(m.get(&"b", 2), None);
    }
}
