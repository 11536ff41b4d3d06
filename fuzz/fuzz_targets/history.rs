//! The history reader: `HistoryReader` (JSON Lines, what agents log and `import` writes) and
//! `read_history` (a whole file, as `eval`, `train` and `replay` read it).
//!
//! Properties: reading ends, with at most one item per line; errors name lines in order,
//! within the input; every record read is valid and written back (`HistoryWriter`) reads as
//! itself; `read_history` accepts a file exactly when every line is a record or blank, there
//! is at least one record and they are in time order, and then returns those records.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prewarm_core::{HistoryReader, HistoryRecord, HistoryWriter};

fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
}

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|b| *b == b'\n').count() as u64;
    let mut records: Vec<HistoryRecord> = Vec::new();
    let mut all_ok = true;
    let mut last_line = 0;
    let mut items = 0u64;
    for item in HistoryReader::new(data) {
        items += 1;
        assert!(items <= lines, "at most one item per line");
        match item {
            Ok(r) => {
                assert!(r.validate().is_ok(), "a record read is valid");
                records.push(r);
            }
            Err(e) => {
                all_ok = false;
                assert!(
                    e.line > last_line && e.line <= lines,
                    "line {} of {lines}",
                    e.line
                );
                last_line = e.line;
            }
        }
    }
    let mut w = HistoryWriter::new(Vec::new());
    for r in &records {
        w.write(r).expect("a record writes");
    }
    let text = w.into_inner().expect("flushed");
    let back: Vec<HistoryRecord> = HistoryReader::new(&text[..])
        .map(|r| r.expect("a record written back reads"))
        .collect();
    assert_eq!(back, records, "records written back read as themselves");

    let path = scratch().path().join("history.jsonl");
    std::fs::write(&path, data).expect("scratch file");
    let sorted = records.windows(2).all(|w| w[0].ts <= w[1].ts);
    match prewarm_import::read_history(&path) {
        Ok(v) => {
            assert!(
                all_ok && !records.is_empty() && sorted,
                "accepted only when valid"
            );
            assert_eq!(v, records);
        }
        Err(_) => assert!(
            !all_ok || records.is_empty() || !sorted,
            "refused only when invalid"
        ),
    }
});
