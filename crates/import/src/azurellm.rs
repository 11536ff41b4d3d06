//! Azure LLM inference traces, as published: 2023 (Splitwise, ISCA'24:
//! `AzureLLMInferenceTrace_{code,conv}.csv`), 2024 (DynamoLLM, HPCA'25:
//! `AzureLLMInferenceTrace_{code,conv}_1week.csv`) and the multimodal 2025 trace
//! (`AzureLMMInferenceTrace_multimodal.csv.gz`). A header
//! `TIMESTAMP,ContextTokens,GeneratedTokens` (the 2025 trace adds `NumImages`) and one row per
//! request.
//!
//! `TIMESTAMP` is a date and time, `2023-11-16 18:17:03.9799600` (UTC) or
//! `2024-05-10 00:00:00.009930+00:00` (`T` between date and time also reads), or Unix
//! seconds. The traces name no model, only the service in the file's name, so the event type
//! is `inference`, the key the service (`code`, `conv`, `multimodal`: what follows `Trace_`
//! in the name, up to the next `_`; else the whole name) and the resource `model/<service>`,
//! the model a request needs. The token counts (and images) go to the event's attributes
//! `context_tokens`, `generated_tokens`, `images`.

use std::path::Path;

use super::{ImportError, Sink, base_name, capped, headed_csv, read_file, record, resource_for};

/// The service a file's name names.
fn service_of(path: &Path) -> String {
    let name = base_name(path);
    match name.split_once("Trace_") {
        Some((_, rest)) if !rest.is_empty() => rest.split('_').next().unwrap_or(rest).to_owned(),
        _ => name,
    }
}

/// `TIMESTAMP` as Unix seconds.
fn parse_time(s: &str) -> Result<f64, String> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return (v.is_finite() && v >= 0.0)
            .then_some(v)
            .ok_or_else(|| format!("time {s:?} is negative or not finite"));
    }
    let spaced = match s.as_bytes().get(10) {
        Some(b'T') => format!("{} {}", &s[..10], &s[11..]),
        _ => s.to_owned(),
    };
    let ms = chrono::DateTime::parse_from_str(&spaced, "%Y-%m-%d %H:%M:%S%.f%:z")
        .map(|t| t.timestamp_millis())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(&spaced, "%Y-%m-%d %H:%M:%S%.f")
                .map(|t| t.and_utc().timestamp_millis())
        })
        .map_err(|e| {
            format!("TIMESTAMP {s:?} is not a date and time like 2023-11-16 18:17:03.97: {e}")
        })?;
    if ms < 0 {
        return Err(format!("time {s:?} is before 1970"));
    }
    Ok(ms as f64 / 1000.0)
}

/// A token or image count.
fn count(r: &csv::StringRecord, i: usize, what: &str) -> Result<u64, String> {
    let v = r.get(i).ok_or_else(|| format!("no {what} field"))?.trim();
    v.parse::<u64>()
        .map_err(|_| format!("{what} {:?} is not a non-negative integer", capped(v)))
}

pub fn import(path: &Path, sink: &mut Sink) -> Result<(), ImportError> {
    let data = read_file(path)?;
    let (mut rd, header) = headed_csv(&data, path)?;
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(t), Some(ctx), Some(generated)) = (
        col("TIMESTAMP"),
        col("ContextTokens"),
        col("GeneratedTokens"),
    ) else {
        return Err(ImportError::Format(format!(
            "{}: expected the columns TIMESTAMP,ContextTokens,GeneratedTokens; the header is {}",
            path.display(),
            capped(&header.iter().collect::<Vec<_>>().join(","))
        )));
    };
    let images = col("NumImages");
    let service = service_of(path);
    let resource = resource_for("model", service.as_bytes());
    for (i, row) in rd.records().enumerate() {
        let line = i as u64 + 2;
        let parsed = row
            .map_err(|e| format!("unreadable CSV row: {e}"))
            .and_then(|r| {
                let ts = parse_time(r.get(t).ok_or("no TIMESTAMP field")?)?;
                let counts = (
                    count(&r, ctx, "ContextTokens")?,
                    count(&r, generated, "GeneratedTokens")?,
                    images.map(|i| count(&r, i, "NumImages")).transpose()?,
                );
                Ok((ts, counts))
            });
        match parsed {
            Ok((ts, (c, g, im))) => {
                let mut r = record(ts, "inference", service.clone(), resource.clone(), 0, 0.0);
                let attrs = &mut r.event.attrs;
                attrs.insert("context_tokens".into(), c.into());
                attrs.insert("generated_tokens".into(), g.into());
                if let Some(im) = im {
                    attrs.insert("images".into(), im.into());
                }
                sink.push_parsed(path, line, r)?;
            }
            Err(why) => sink.malformed(path, line, why)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_timestamps() {
        let t = |s: &str| parse_time(s).unwrap();
        assert_eq!(t("2023-11-16 18:17:03.9799600"), 1_700_158_623.979);
        assert_eq!(t("2024-05-10 00:00:00.009930+00:00"), 1_715_299_200.009);
        assert_eq!(t("2024-05-12 00:00:00+00:00"), 1_715_472_000.0);
        assert_eq!(t("2024-05-10T02:00:00+02:00"), 1_715_299_200.0);
        assert_eq!(t("2023-11-16 18:17:03"), 1_700_158_623.0);
        assert_eq!(t("12.5"), 12.5);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("-1").is_err());
    }

    #[test]
    fn services_from_names() {
        let s = |n: &str| service_of(Path::new(n));
        assert_eq!(s("data/AzureLLMInferenceTrace_code.csv"), "code");
        assert_eq!(s("AzureLLMInferenceTrace_conv_1week.csv"), "conv");
        assert_eq!(s("AzureLMMInferenceTrace_multimodal.csv.gz"), "multimodal");
        assert_eq!(s("requests.csv"), "requests");
    }
}
