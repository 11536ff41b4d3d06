//! Any CSV trace, mapped by flags, so a new request log needs no new code.
//!
//! Columns are named (with a header) or 0-based indexes. Several time columns are joined with
//! a space before parsing (the World Cup log keeps date and time apart). Fields are handled as
//! bytes, so names that are not UTF-8 still import.
//!
//! **Several reads per execution.** With a [`ListSyntax`] (`--resource-list`), the resource
//! column holds every resource one execution read, and the row becomes one record with one
//! read each, in the order listed: separated by one byte (`--resource-list ';'`:
//! `a;b;c`, spaces around elements trimmed, empty elements skipped) or a JSON array
//! (`--resource-list json`: `["a","b"]`, strings or numbers). The bytes column then holds
//! either a list of sizes in the same syntax and of the same length (one per read), or one
//! number, the size of each. An empty list is a malformed row.

use std::path::Path;

use prewarm_core::HistoryRecord;

use super::{ImportError, Sink, read_file, record, resource_for};

/// How a resource column lists several resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListSyntax {
    /// Elements separated by this byte (`a;b;c`).
    Separator(u8),
    /// A JSON array (`["a","b"]`).
    Json,
}

impl std::str::FromStr for ListSyntax {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Self::Json),
            "\\t" | "tab" => Ok(Self::Separator(b'\t')),
            d if d.len() == 1 => Ok(Self::Separator(d.as_bytes()[0])),
            d => Err(format!(
                "list syntax {d:?}: use json or one separator byte such as ';' or '|'"
            )),
        }
    }
}

impl ListSyntax {
    /// The elements of a list field.
    fn split(self, raw: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let items: Vec<Vec<u8>> = match self {
            Self::Separator(sep) => raw
                .split(|&b| b == sep)
                .map(<[u8]>::trim_ascii)
                .filter(|e| !e.is_empty())
                .map(<[u8]>::to_vec)
                .collect(),
            Self::Json => {
                let v: Vec<serde_json::Value> =
                    serde_json::from_slice(raw).map_err(|e| format!("not a JSON array: {e}"))?;
                v.into_iter()
                    .map(|e| match e {
                        serde_json::Value::String(s) => Ok(s.into_bytes()),
                        serde_json::Value::Number(n) => Ok(n.to_string().into_bytes()),
                        other => Err(format!("list element {other} is not a string or number")),
                    })
                    .filter(|e| e.as_ref().map_or(true, |e| !e.is_empty()))
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(items)
    }

    /// Whether a field is written as a list (holds the separator, or is a JSON array).
    fn is_list(self, raw: &[u8]) -> bool {
        match self {
            Self::Separator(sep) => raw.contains(&sep),
            Self::Json => raw.trim_ascii_start().starts_with(b"["),
        }
    }
}

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
    /// The resource read (a list of them, with `resource_list`).
    pub resource_col: ColRef,
    /// The resource column lists every resource the execution read; `None`: one resource.
    pub resource_list: Option<ListSyntax>,
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

/// The mapped columns' positions.
struct Columns {
    time: Vec<usize>,
    resource: usize,
    key: Option<usize>,
    bytes: Option<usize>,
    duration: Option<usize>,
    kind: Option<usize>,
}

fn columns(
    m: &CsvMapping,
    h: Option<&csv::ByteRecord>,
    path: &Path,
) -> Result<Columns, ImportError> {
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
    let opt = |c: &Option<ColRef>| c.as_ref().map(|c| resolve(c, h, path)).transpose();
    Ok(Columns {
        time,
        resource: resolve(&m.resource_col, h, path)?,
        key: opt(&m.key_col)?,
        bytes: opt(&m.bytes_col)?,
        duration: opt(&m.duration_col)?,
        kind: opt(&m.type_col)?,
    })
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
    let c = columns(m, header.as_ref(), path)?;
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
        match parse_row(&row, &c, m) {
            Ok(r) => sink.push_parsed(path, line, r)?,
            Err(why) => sink.malformed(path, line, why)?,
        }
    }
    Ok(())
}

/// Field `i` of `row`.
fn field(row: &csv::ByteRecord, i: usize) -> Result<&[u8], String> {
    row.get(i)
        .ok_or_else(|| format!("row has {} fields, column {i} is missing", row.len()))
}

/// A non-negative number; `-` and empty are 0.
fn number(f: &[u8], what: &str) -> Result<f64, String> {
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

/// The resources one row read, with their sizes.
fn reads(
    row: &csv::ByteRecord,
    c: &Columns,
    m: &CsvMapping,
) -> Result<Vec<(Vec<u8>, u64)>, String> {
    let raw = field(row, c.resource)?;
    let bytes_raw = c.bytes.map(|i| field(row, i)).transpose()?;
    let Some(list) = m.resource_list else {
        if raw.is_empty() {
            return Err("empty resource".into());
        }
        let size = bytes_raw.map_or(Ok(0.0), |b| number(b, "bytes"))? as u64;
        return Ok(vec![(raw.to_vec(), size)]);
    };
    let names = list.split(raw).map_err(|e| format!("resource list: {e}"))?;
    if names.is_empty() {
        return Err("empty resource list".into());
    }
    let sizes: Vec<u64> = match bytes_raw {
        None => vec![0; names.len()],
        Some(b) if list.is_list(b) => {
            let sizes = list.split(b).map_err(|e| format!("bytes list: {e}"))?;
            if sizes.len() != names.len() {
                return Err(format!(
                    "{} resources but {} sizes",
                    names.len(),
                    sizes.len()
                ));
            }
            sizes
                .iter()
                .map(|s| number(s, "bytes").map(|v| v as u64))
                .collect::<Result<_, _>>()?
        }
        Some(b) => vec![number(b, "bytes")? as u64; names.len()],
    };
    Ok(names.into_iter().zip(sizes).collect())
}

/// One row as a record.
fn parse_row(row: &csv::ByteRecord, c: &Columns, m: &CsvMapping) -> Result<HistoryRecord, String> {
    let mut when = String::new();
    for (k, &i) in c.time.iter().enumerate() {
        if k > 0 {
            when.push(' ');
        }
        when.push_str(std::str::from_utf8(field(row, i)?).map_err(|_| "time is not text")?);
    }
    let ts = m.time_format.parse(&when)?;
    let text = |i: Option<usize>, default: &str| -> Result<String, String> {
        Ok(match i {
            Some(i) => String::from_utf8_lossy(field(row, i)?).into_owned(),
            None => default.to_owned(),
        })
    };
    let key = text(c.key, "all")?;
    let kind = text(c.kind, "request")?;
    let duration = c
        .duration
        .map_or(Ok(0.0), |i| number(field(row, i)?, "duration"))?;
    let mut reads = reads(row, c, m)?.into_iter();
    let (first, size) = reads.next().ok_or("no resource")?;
    let mut r = record(
        ts,
        &kind,
        key,
        resource_for(&m.namespace, &first),
        size,
        duration,
    );
    r.reads
        .extend(reads.map(|(name, bytes)| prewarm_core::ReadAccess {
            resource: resource_for(&m.namespace, &name),
            version: None,
            bytes,
        }));
    Ok(r)
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

    #[test]
    fn list_syntaxes() {
        let semi: ListSyntax = ";".parse().unwrap();
        assert_eq!(
            semi.split(b" a ; b;;c ").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert!(semi.is_list(b"1;2") && !semi.is_list(b"12"));
        let json: ListSyntax = "json".parse().unwrap();
        assert_eq!(
            json.split(br#"["m/a", 7, ""]"#).unwrap(),
            vec![b"m/a".to_vec(), b"7".to_vec()]
        );
        assert!(json.split(b"[{}]").is_err());
        assert!(json.split(b"a;b").is_err());
        assert_eq!(
            "tab".parse::<ListSyntax>().unwrap(),
            ListSyntax::Separator(b'\t')
        );
        assert!("ab".parse::<ListSyntax>().is_err());
    }
}
