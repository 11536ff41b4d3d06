//! Any CSV trace, mapped by flags, so a new request log needs no new code.
//!
//! Columns are named (with a header) or 0-based indexes. Several time columns are joined with
//! a space before parsing (the World Cup log keeps date and time apart). Fields are handled as
//! bytes, so names that are not UTF-8 still import.

use std::path::Path;

use super::{ImportError, Sink, read_file, record, resource_for};

/// A column: by header name or by 0-based index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColRef {
    /// Header name.
    Name(String),
    /// 0-based index.
    Index(usize),
}

impl std::str::FromStr for ColRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty column name".into());
        }
        Ok(s.parse::<usize>()
            .map_or_else(|_| ColRef::Name(s.to_owned()), ColRef::Index))
    }
}

/// How the time column(s) read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// Unix seconds (fractions allowed).
    Unix,
    /// Unix milliseconds.
    UnixMs,
    /// A strftime pattern (`%d/%b/%Y %H:%M:%S`); UTC unless it has `%z`.
    Pattern(String),
}

impl std::str::FromStr for TimeFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "unix" | "unix_s" | "s" => TimeFormat::Unix,
            "unix_ms" | "ms" => TimeFormat::UnixMs,
            p if p.contains('%') => TimeFormat::Pattern(p.to_owned()),
            _ => {
                return Err(format!(
                    "time format {s:?}: use unix, unix_ms or a strftime pattern like %d/%b/%Y %H:%M:%S"
                ));
            }
        })
    }
}

impl TimeFormat {
    /// Parses a time into Unix seconds.
    pub fn parse(&self, s: &str) -> Result<f64, String> {
        let s = s.trim();
        let v = match self {
            TimeFormat::Unix => s
                .parse::<f64>()
                .map_err(|_| format!("{s:?} is not Unix seconds"))?,
            TimeFormat::UnixMs => {
                s.parse::<f64>()
                    .map_err(|_| format!("{s:?} is not Unix milliseconds"))?
                    / 1000.0
            }
            TimeFormat::Pattern(p) if p.contains("%z") || p.contains("%:z") => {
                chrono::DateTime::parse_from_str(s, p)
                    .map_err(|e| format!("{s:?} does not match {p:?}: {e}"))?
                    .timestamp_millis() as f64
                    / 1000.0
            }
            TimeFormat::Pattern(p) => {
                chrono::NaiveDateTime::parse_from_str(s, p)
                    .map_err(|e| format!("{s:?} does not match {p:?}: {e}"))?
                    .and_utc()
                    .timestamp_millis() as f64
                    / 1000.0
            }
        };
        if !v.is_finite() || v < 0.0 {
            return Err(format!("time {s:?} is negative or not finite"));
        }
        Ok(v)
    }
}

/// Which columns mean what.
#[derive(Clone, Debug)]
pub struct CsvMapping {
    /// Time column(s), joined with a space.
    pub time_cols: Vec<ColRef>,
    /// How to read the time.
    pub time_format: TimeFormat,
    /// The sequence key (client, session, tenant); all rows share one key when absent.
    pub key_col: Option<ColRef>,
    /// The resource read.
    pub resource_col: ColRef,
    /// Resource ids are `<namespace>/<value>`.
    pub namespace: String,
    /// Bytes of the resource.
    pub bytes_col: Option<ColRef>,
    /// Execution time in seconds.
    pub duration_col: Option<ColRef>,
    /// Event type; `request` when absent.
    pub type_col: Option<ColRef>,
    /// Whether the first line is a header.
    pub header: bool,
    /// Field delimiter.
    pub delimiter: u8,
}

fn resolve(
    c: &ColRef,
    header: Option<&csv::ByteRecord>,
    path: &Path,
) -> Result<usize, ImportError> {
    match (c, header) {
        (ColRef::Index(i), _) => Ok(*i),
        (ColRef::Name(n), Some(h)) => h.iter().position(|f| f == n.as_bytes()).ok_or_else(|| {
            let names: Vec<String> = h
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            ImportError::Format(format!(
                "{}: no column {:?}; the file has {} columns: {}",
                path.display(),
                super::capped(n),
                names.len(),
                super::capped(&names.join(", "))
            ))
        }),
        (ColRef::Name(n), None) => Err(ImportError::Format(format!(
            "column {n:?} given by name, but the file has no header: use 0-based indexes"
        ))),
    }
}

pub fn import(path: &Path, m: &CsvMapping, sink: &mut Sink) -> Result<(), ImportError> {
    let data = read_file(path)?;
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(m.header)
        .delimiter(m.delimiter)
        .flexible(true)
        .from_reader(&data[..]);
    let header = if m.header {
        Some(
            rd.byte_headers()
                .map_err(|e| ImportError::Format(format!("{}: {e}", path.display())))?
                .clone(),
        )
    } else {
        None
    };
    let h = header.as_ref();
    let time: Vec<usize> = m
        .time_cols
        .iter()
        .map(|c| resolve(c, h, path))
        .collect::<Result<_, _>>()?;
    if time.is_empty() {
        return Err(ImportError::Format(
            "at least one time column is needed".into(),
        ));
    }
    let res = resolve(&m.resource_col, h, path)?;
    let opt = |c: &Option<ColRef>| c.as_ref().map(|c| resolve(c, h, path)).transpose();
    let (key, bytes, dur, kind) = (
        opt(&m.key_col)?,
        opt(&m.bytes_col)?,
        opt(&m.duration_col)?,
        opt(&m.type_col)?,
    );
    let first_line = if m.header { 2 } else { 1 };
    let mut row = csv::ByteRecord::new();
    let mut n = 0u64;
    loop {
        let line = first_line + n;
        n += 1;
        match rd.read_byte_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                sink.malformed(path, line, format!("unreadable CSV: {e}"))?;
                continue;
            }
        }
        let field = |i: usize| {
            row.get(i)
                .ok_or_else(|| format!("row has {} fields, column {i} is missing", row.len()))
        };
        let parsed = (|| -> Result<_, String> {
            let mut when = String::new();
            for (k, &c) in time.iter().enumerate() {
                if k > 0 {
                    when.push(' ');
                }
                when.push_str(std::str::from_utf8(field(c)?).map_err(|_| "time is not text")?);
            }
            let ts = m.time_format.parse(&when)?;
            let raw = field(res)?;
            if raw.is_empty() {
                return Err("empty resource".into());
            }
            let number = |i: Option<usize>, what: &str| -> Result<f64, String> {
                match i {
                    None => Ok(0.0),
                    Some(i) => {
                        let f = field(i)?;
                        if f == b"-" || f.is_empty() {
                            return Ok(0.0);
                        }
                        let v: f64 = std::str::from_utf8(f)
                            .ok()
                            .and_then(|s| s.trim().parse().ok())
                            .ok_or_else(|| format!("{what} is not a number"))?;
                        if v.is_finite() && v >= 0.0 {
                            Ok(v)
                        } else {
                            Err(format!("{what} is negative or not finite"))
                        }
                    }
                }
            };
            let key_v = match key {
                Some(i) => String::from_utf8_lossy(field(i)?).into_owned(),
                None => "all".to_owned(),
            };
            let kind_v = match kind {
                Some(i) => String::from_utf8_lossy(field(i)?).into_owned(),
                None => "request".to_owned(),
            };
            Ok(record(
                ts,
                &kind_v,
                key_v,
                resource_for(&m.namespace, raw),
                number(bytes, "bytes")? as u64,
                number(dur, "duration")?,
            ))
        })();
        match parsed {
            Ok(r) => sink.push(r),
            Err(why) => sink.malformed(path, line, why)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats() {
        assert_eq!(TimeFormat::Unix.parse("12.5").unwrap(), 12.5);
        assert_eq!(TimeFormat::UnixMs.parse("1500").unwrap(), 1.5);
        let wc: TimeFormat = "%d/%b/%Y %H:%M:%S".parse().unwrap();
        assert_eq!(wc.parse("30/Apr/1998 22:46:12").unwrap(), 893976372.0);
        let tz: TimeFormat = "%d/%b/%Y:%H:%M:%S %z".parse().unwrap();
        assert_eq!(tz.parse("10/Oct/2000:13:55:36 -0700").unwrap(), 971211336.0);
        assert!(wc.parse("yesterday").is_err());
        assert!(TimeFormat::Unix.parse("NaN").is_err());
        assert!(TimeFormat::Unix.parse("-3").is_err());
        assert!("weird".parse::<TimeFormat>().is_err());
    }
}
