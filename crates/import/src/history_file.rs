//! Reading a whole history file back (what `import` wrote, or an agent's log): every record,
//! refusing an empty file or one out of time order, as `eval`, `train`, `replay` and the
//! benchmarks need it.

use std::path::{Path, PathBuf};

use prewarm_core::{HistoryError, HistoryReader, HistoryRecord};

/// Why a history file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadHistoryError {
    /// The file could not be opened.
    #[error("opening {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A record is malformed.
    #[error("reading {}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// Which line and why.
        source: HistoryError,
    },
    /// The file holds no record.
    #[error("{} holds no history records", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A record is older than the one before it.
    #[error("{}: records are out of time order at record {record} (import sorts them)", path.display())]
    Unordered {
        /// The file.
        path: PathBuf,
        /// The record's number, from 1.
        record: usize,
    },
}

/// Reads every record of the history file `path`.
pub fn read_history(path: &Path) -> Result<Vec<HistoryRecord>, ReadHistoryError> {
    let file = std::fs::File::open(path).map_err(|source| ReadHistoryError::Open {
        path: path.to_owned(),
        source,
    })?;
    let mut records = Vec::new();
    for r in HistoryReader::new(std::io::BufReader::new(file)) {
        records.push(r.map_err(|source| ReadHistoryError::Record {
            path: path.to_owned(),
            source,
        })?);
    }
    if records.is_empty() {
        return Err(ReadHistoryError::Empty {
            path: path.to_owned(),
        });
    }
    if let Some(w) = records.windows(2).position(|w| w[1].ts < w[0].ts) {
        return Err(ReadHistoryError::Unordered {
            path: path.to_owned(),
            record: w + 2,
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_unordered_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.jsonl");
        let line =
            |ts: u32| format!("{{\"ts\": {ts}, \"event\": {{\"type\": \"t\", \"key\": \"k\"}}}}\n");
        std::fs::write(&p, "").unwrap();
        assert!(matches!(
            read_history(&p),
            Err(ReadHistoryError::Empty { .. })
        ));
        std::fs::write(&p, line(5) + &line(1)).unwrap();
        let e = read_history(&p).unwrap_err();
        assert!(
            e.to_string().contains("out of time order at record 2"),
            "{e}"
        );
        std::fs::write(&p, line(1) + &line(5)).unwrap();
        assert_eq!(read_history(&p).unwrap().len(), 2);
        assert!(matches!(
            read_history(&dir.path().join("missing")),
            Err(ReadHistoryError::Open { .. })
        ));
    }
}
