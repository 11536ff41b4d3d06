//! Azure Functions Invocation Trace 2021 (SOSP'21), as published
//! (`AzureFunctionsInvocationTraceForTwoWeeksJan2021.txt` inside the `.rar`, or any excerpt,
//! gzipped or not): a header `app,func,end_timestamp,duration` and one row per invocation,
//! times in seconds. The start is `end − duration` (clamped at 0); the event type is
//! `invoke`; the key is the app; the resource is `fn/<app>/<func>`, since the dataset's
//! function ids are "unique only within an application".

use std::path::Path;

use super::{ImportError, Sink, headed_csv, read_file, record, resource_for};

pub fn import(path: &Path, sink: &mut Sink) -> Result<(), ImportError> {
    let data = read_file(path)?;
    let (mut rd, header) = headed_csv(&data, path)?;
    let col = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| {
            ImportError::Format(format!(
                "{}: no column {name:?} (expected app,func,end_timestamp,duration)",
                path.display()
            ))
        })
    };
    let (a, f, e, d) = (
        col("app")?,
        col("func")?,
        col("end_timestamp")?,
        col("duration")?,
    );
    for (i, row) in rd.records().enumerate() {
        let line = i as u64 + 2;
        let parsed = row.ok().and_then(|r| {
            let end: f64 = r.get(e)?.parse().ok()?;
            let dur: f64 = r.get(d)?.parse().ok()?;
            Some((r.get(a)?.to_owned(), r.get(f)?.to_owned(), end, dur))
        });
        match parsed {
            Some((app, func, end, dur))
                if end.is_finite()
                    && dur.is_finite()
                    && dur >= 0.0
                    && !app.is_empty()
                    && !func.is_empty() =>
            {
                let start = (end - dur).max(0.0);
                let resource = resource_for("fn", format!("{app}/{func}").as_bytes());
                sink.push_parsed(path, line, record(start, "invoke", app, resource, 0, dur))?;
            }
            _ => sink.malformed(
                path,
                line,
                "expected app,func,end_timestamp,duration with numeric times",
            )?,
        }
    }
    Ok(())
}
