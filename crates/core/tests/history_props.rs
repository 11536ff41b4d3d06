//! Property tests of the history reader (the CI part of issue 13 §3): records written read
//! back equal, in order; random or damaged lines never panic and never yield a record that
//! fails validation (a bad time, an over-long key), and each error names its line.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use proptest::collection::vec;
use proptest::prelude::*;

use prewarm_core::{
    CapacityId, Event, HistoryReader, HistoryRecord, HistoryWriter, ReadAccess, ResourceId,
};

fn record() -> impl Strategy<Value = HistoryRecord> {
    (
        0.0f64..2e9,
        "[a-z]{1,8}",
        "[ -~]{0,40}",
        vec("[a-z0-9]{1,6}(/[a-z0-9][a-z0-9_-]{0,5}){0,2}", 0..4),
        proptest::option::of("[a-z0-9]{1,10}"),
        0.0f64..100.0,
    )
        .prop_map(|(ts, kind, key, reads, cap, dur)| HistoryRecord {
            ts,
            event: Event {
                kind,
                key,
                attrs: Default::default(),
                needs: Vec::new(),
            },
            capacity: cap.map(|c| CapacityId::new(c).unwrap()),
            reads: reads
                .into_iter()
                .map(|r| ReadAccess {
                    resource: ResourceId::new(r).unwrap(),
                    version: None,
                    bytes: 7,
                })
                .collect(),
            writes: Vec::new(),
            duration_s: dur,
        })
}

fn written(records: &[HistoryRecord]) -> Vec<u8> {
    let mut w = HistoryWriter::new(Vec::new());
    for r in records {
        w.write(r).unwrap();
    }
    w.into_inner().unwrap()
}

fn read_all(data: &[u8]) -> Vec<Result<HistoryRecord, String>> {
    HistoryReader::new(data)
        .map(|r| r.map_err(|e| e.to_string()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn written_records_read_back_equal(records in vec(record(), 0..20)) {
        let back: Vec<HistoryRecord> =
            read_all(&written(&records)).into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(back, records);
    }

    #[test]
    fn damaged_lines_never_panic_nor_pass_invalid_records(
        records in vec(record(), 1..8),
        edits in vec((any::<usize>(), any::<u8>()), 1..6),
        noise in vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = written(&records);
        for (at, b) in edits {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        bytes.extend_from_slice(&noise);
        for r in read_all(&bytes) {
            match r {
                Ok(rec) => prop_assert!(rec.validate().is_ok()),
                Err(e) => prop_assert!(e.contains("line"), "{}", e),
            }
        }
    }
}
