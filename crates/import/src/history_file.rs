//! Reading a whole history file back (what `import` wrote, or an agent's log): every record,
//! refusing an empty file or one out of time order, as `eval`, `train`, `replay` and the
//! benchmarks need it.

use std::path::{Path, PathBuf};

use prewarm_core::{HistoryError, HistoryRecord, parse_history_bytes};

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

/// Bytes read per batch; its lines are parsed on all cores.
const BATCH_BYTES: usize = 16 << 20;

/// Reads every record of the history file `path`: the file is read in large blocks and each
/// block's lines are parsed on all cores (a 10⁷-record file is most of a replay's start),
/// in file order; the first bad line (by number) is the error.
pub fn read_history(path: &Path) -> Result<Vec<HistoryRecord>, ReadHistoryError> {
    let mut file = std::fs::File::open(path).map_err(|source| ReadHistoryError::Open {
        path: path.to_owned(),
        source,
    })?;
    let bad = |source: HistoryError| ReadHistoryError::Record {
        path: path.to_owned(),
        source,
    };
    let mut records = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(BATCH_BYTES + (1 << 20));
    let mut first = 1u64;
    loop {
        let start = buf.len();
        buf.resize(start + BATCH_BYTES, 0);
        let n = read_full(&mut file, &mut buf[start..]).map_err(|e| {
            bad(HistoryError {
                line: first,
                kind: e.into(),
            })
        })?;
        buf.truncate(start + n);
        let end = match n {
            0 => buf.len(), // the last line, unterminated or not
            _ => buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1),
        };
        first = parse_block(&buf[..end], first, &mut records).map_err(bad)?;
        if start == 0 && n == BATCH_BYTES && end > 0 {
            // The rest of the file, at the first block's bytes per record: one allocation
            // instead of a growing vector copied (and its fresh pages zeroed) again and again.
            let per = end as f64 / records.len().max(1) as f64;
            let total = file.metadata().map_or(0, |m| m.len()) as f64 / per;
            records.reserve((total * 1.05) as usize);
        }
        buf.drain(..end);
        if n == 0 {
            break;
        }
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

/// Fills `buf` as far as the file goes; the bytes read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Parses the whole lines of `block` (the first is line `first`) on all cores, appending the
/// records in order; the next line's number.
fn parse_block(
    block: &[u8],
    first: u64,
    records: &mut Vec<HistoryRecord>,
) -> Result<u64, HistoryError> {
    use rayon::prelude::*;
    let lines: Vec<&[u8]> = block
        .split(|&b| b == b'\n')
        .take(block.iter().filter(|&&b| b == b'\n').count() + usize::from(!block.ends_with(b"\n")))
        .collect();
    let parsed: Vec<_> = lines
        .par_iter()
        .enumerate()
        .filter_map(|(i, text)| parse_history_bytes(text, first + i as u64))
        .collect();
    for r in parsed {
        records.push(r?);
    }
    Ok(first + lines.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines enough to span more than one block.
    const BATCH_LINES: usize = 1 << 19;

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
        // Past a batch, with blank lines: every record, and a bad line named by its number.
        let mut text: String = (0..(BATCH_LINES as u32 + 10)).map(line).collect();
        text.insert_str(0, "\n\n");
        std::fs::write(&p, &text).unwrap();
        assert_eq!(read_history(&p).unwrap().len(), BATCH_LINES + 10);
        text.push_str("{not json\n");
        std::fs::write(&p, &text).unwrap();
        match read_history(&p) {
            Err(ReadHistoryError::Record { source, .. }) => {
                assert_eq!(source.line, BATCH_LINES as u64 + 13, "{source}")
            }
            Err(e) => panic!("{e}"),
            Ok(r) => panic!("{} records read from a bad file", r.len()),
        }
        assert!(matches!(
            read_history(&dir.path().join("missing")),
            Err(ReadHistoryError::Open { .. })
        ));
    }
}
