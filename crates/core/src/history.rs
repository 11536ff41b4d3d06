//! The history record: one execution per JSON line, the training and replay data every part
//! of prewarm shares. Agents write it, importers produce it, training and replay read it.
//!
//! ```json
//! {"ts": 1700000000.5, "event": {"type": "http", "key": "tenant-7", "attrs": {}},
//!  "capacity": "pod-3", "reads": [{"resource": "models/a", "version": 4, "bytes": 1048576}],
//!  "writes": [{"resource": "cache/b", "bytes": 4096}], "duration_s": 0.25}
//! ```
//!
//! Unknown fields are rejected (a typo must not silently drop data); `attrs` holds anything.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::{CapacityId, ResourceId, Version};

/// What triggered an execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Event type: `http`, `upload`, `bus`, `invoke`, `timer`… (free-form, learned as a token).
    #[serde(rename = "type")]
    pub kind: String,
    /// The sequence key: session, tenant, client or app. Predictions are made per key.
    pub key: String,
    /// Anything else the source knew (method, status, path…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, serde_json::Value>,
    /// States the event names as needed (a request for a model names its checkpoint):
    /// placed and fetched for certain, so only what comes next is left to predict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<ResourceId>,
}

/// A state an execution read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadAccess {
    /// Which resource.
    pub resource: ResourceId,
    /// The version read, when known.
    #[serde(default)]
    pub version: Option<Version>,
    /// Its size in bytes (what a transfer of it costs).
    #[serde(default)]
    pub bytes: u64,
}

/// A state an execution modified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteAccess {
    /// Which resource.
    pub resource: ResourceId,
    /// Bytes written.
    #[serde(default)]
    pub bytes: u64,
}

/// One execution: its trigger, where it ran, what it read and wrote, how long it took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRecord {
    /// Start time, Unix seconds.
    pub ts: f64,
    /// The triggering event.
    pub event: Event,
    /// The capacity it ran on, when known.
    #[serde(default)]
    pub capacity: Option<CapacityId>,
    /// States read.
    #[serde(default)]
    pub reads: Vec<ReadAccess>,
    /// States written.
    #[serde(default)]
    pub writes: Vec<WriteAccess>,
    /// Execution time in seconds.
    #[serde(default)]
    pub duration_s: f64,
}

/// Longest event key and event type, in bytes: every model keeps state per key, so a key is
/// a name, not a payload.
pub const MAX_KEY_LEN: usize = 1024;

impl Event {
    /// Checks what serde cannot: a key and a type of bounded length.
    pub fn validate(&self) -> Result<(), HistoryErrorKind> {
        for (what, v) in [("key", &self.key), ("type", &self.kind)] {
            if v.len() > MAX_KEY_LEN {
                return Err(HistoryErrorKind::TooLong(format!(
                    "event {what} of {} bytes (at most {MAX_KEY_LEN})",
                    v.len()
                )));
            }
        }
        Ok(())
    }
}

impl HistoryRecord {
    /// Checks the invariants serde cannot: finite, non-negative times; bounded keys.
    pub fn validate(&self) -> Result<(), HistoryErrorKind> {
        self.event.validate()?;
        if !self.ts.is_finite() || self.ts < 0.0 {
            return Err(HistoryErrorKind::BadTime(format!("ts is {}", self.ts)));
        }
        if !self.duration_s.is_finite() || self.duration_s < 0.0 {
            return Err(HistoryErrorKind::BadTime(format!(
                "duration_s is {}",
                self.duration_s
            )));
        }
        Ok(())
    }
}

/// A history line that could not be read, with its 1-based line number.
#[derive(Debug, thiserror::Error)]
#[error("history line {line}: {kind}")]
pub struct HistoryError {
    /// 1-based line number.
    pub line: u64,
    /// What was wrong.
    pub kind: HistoryErrorKind,
}

/// What was wrong with a history line.
#[derive(Debug, thiserror::Error)]
pub enum HistoryErrorKind {
    /// Reading the underlying stream failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The line is not a valid record (bad JSON, unknown field, invalid id…).
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A time is NaN, infinite or negative.
    #[error("invalid time: {0}")]
    BadTime(String),
    /// A key or type is longer than [`MAX_KEY_LEN`].
    #[error("too long: {0}")]
    TooLong(String),
}

/// Reads history records from JSON Lines; blank lines are skipped.
pub struct HistoryReader<R> {
    inner: R,
    line: u64,
    buf: String,
}

impl<R: BufRead> HistoryReader<R> {
    /// Wraps a buffered reader.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            line: 0,
            buf: String::new(),
        }
    }
}

impl<R: BufRead> Iterator for HistoryReader<R> {
    type Item = Result<HistoryRecord, HistoryError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            self.line += 1;
            let line = self.line;
            match self.inner.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    return Some(Err(HistoryError {
                        line,
                        kind: e.into(),
                    }));
                }
            }
            if let Some(parsed) = parse_history_line(&self.buf, line) {
                return Some(parsed);
            }
        }
    }
}

/// One history line (`line`: its 1-based number, for the error): `None` when it is blank.
pub fn parse_history_line(text: &str, line: u64) -> Option<Result<HistoryRecord, HistoryError>> {
    parse_history_bytes(text.as_bytes(), line)
}

/// [`parse_history_line`] of the line's bytes (UTF-8 is checked where JSON needs it).
pub fn parse_history_bytes(text: &[u8], line: u64) -> Option<Result<HistoryRecord, HistoryError>> {
    if text.trim_ascii().is_empty() {
        return None;
    }
    let parsed = serde_json::from_slice::<HistoryRecord>(text)
        .map_err(HistoryErrorKind::from)
        .and_then(|r| r.validate().map(|()| r));
    Some(parsed.map_err(|kind| HistoryError { line, kind }))
}

/// Writes history records as JSON Lines.
pub struct HistoryWriter<W> {
    inner: W,
}

impl<W: Write> HistoryWriter<W> {
    /// Wraps a writer (wrap files in a `BufWriter`).
    pub fn new(inner: W) -> Self {
        Self { inner }
    }

    /// Appends one record as a line.
    pub fn write(&mut self, r: &HistoryRecord) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.inner, r)?;
        self.inner.write_all(b"\n")
    }

    /// Flushes buffered records.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }

    /// Flushes and returns the inner writer.
    pub fn into_inner(mut self) -> std::io::Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Now, in Unix seconds: the clock of history timestamps and event times.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(s: &str) -> Vec<Result<HistoryRecord, HistoryError>> {
        HistoryReader::new(s.as_bytes()).collect()
    }

    #[test]
    fn round_trip() {
        let rec = HistoryRecord {
            ts: 1.5,
            event: Event {
                kind: "http".into(),
                key: "tenant-1".into(),
                attrs: [("method".to_owned(), serde_json::json!("GET"))].into(),
                needs: Vec::new(),
            },
            capacity: Some(CapacityId::new("pod-1").unwrap()),
            reads: vec![ReadAccess {
                resource: ResourceId::new("m/a").unwrap(),
                version: Version::new(3),
                bytes: 10,
            }],
            writes: vec![WriteAccess {
                resource: ResourceId::new("c/b").unwrap(),
                bytes: 5,
            }],
            duration_s: 0.25,
        };
        let mut w = HistoryWriter::new(Vec::new());
        w.write(&rec).unwrap();
        w.write(&rec).unwrap();
        let out = String::from_utf8(w.into_inner().unwrap()).unwrap();
        let back: Vec<_> = read_all(&out).into_iter().map(Result::unwrap).collect();
        assert_eq!(back, vec![rec.clone(), rec]);
    }

    #[test]
    fn minimal_record_uses_defaults() {
        let r = read_all(r#"{"ts": 3, "event": {"type": "t", "key": "k"}}"#);
        let r = r.into_iter().next().unwrap().unwrap();
        assert!(r.reads.is_empty() && r.capacity.is_none() && r.duration_s == 0.0);
    }

    #[test]
    fn errors_name_the_line() {
        let input = "\n{\"ts\": 1, \"event\": {\"type\": \"t\", \"key\": \"k\"}}\n{oops\n";
        let out = read_all(input);
        assert!(out[0].is_ok());
        let e = out[1].as_ref().unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().starts_with("history line 3:"), "{e}");
    }

    #[test]
    fn rejects_bad_records() {
        let cases = [
            (
                r#"{"ts": -1, "event": {"type": "t", "key": "k"}}"#,
                "invalid time",
            ),
            (
                r#"{"ts": 1, "duration_s": -2, "event": {"type": "t", "key": "k"}}"#,
                "invalid time",
            ),
            (
                r#"{"ts": 1, "event": {"type": "t", "key": "k"}, "colour": 1}"#,
                "unknown field",
            ),
            (
                r#"{"ts": 1, "event": {"type": "t", "key": "k"}, "reads": [{"resource": "../x"}]}"#,
                "invalid segment",
            ),
            (
                r#"{"ts": "noon", "event": {"type": "t", "key": "k"}}"#,
                "invalid type",
            ),
        ];
        for (input, want) in cases {
            let e = read_all(input).remove(0).unwrap_err().to_string();
            assert!(e.contains(want), "{input}: {e}");
        }
    }
}
