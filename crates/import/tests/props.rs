//! Property tests of the trace importers (the CI part of issue 13 §3): a valid sample of each
//! published layout, damaged at random (bytes replaced, lines cut, random lines inserted),
//! never makes an importer panic; it answers records or a clear error, and every record it
//! answers has a finite, non-negative time and valid ids (the types guarantee the ids).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::PathBuf;

use proptest::collection::vec;
use proptest::prelude::*;

use prewarm_import::{ColRef, CsvMapping, Format, ImportOptions, ListSyntax, TimeFormat, import};

/// One valid sample per format: (format, file name, text).
const SAMPLES: [(Format, &str, &str); 5] = [
    (
        Format::Azure2019,
        "invocations_per_function_md.anon.d01.csv",
        "HashOwner,HashApp,HashFunction,Trigger,1,2,3\no1,a1,f1,http,1,0,2\no2,a2,f2,timer,0,3,0\n",
    ),
    (
        Format::Azure2021,
        "AzureFunctionsInvocationTraceForTwoWeeksJan2021.txt",
        "app,func,end_timestamp,duration\na1,f1,10.5,0.25\na2,f2,11.0,1.5\na1,f1,12.0,0.1\n",
    ),
    (
        Format::AzureLlm,
        "AzureLLMInferenceTrace_code.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:04.0319600,3180,8\n",
    ),
    (
        Format::Clf,
        "access.log",
        "199.72.81.55 - - [01/Jul/1995:00:00:01 -0400] \"GET /history/apollo/ HTTP/1.0\" 200 6245\n\
         unicomp6.unicomp.net - - [01/Jul/1995:00:00:06 -0400] \"GET /shuttle/countdown/ HTTP/1.0\" 200 3985\n",
    ),
    (
        Format::Csv,
        "jobs.csv",
        "t,job,reads\n1.5,j1,a;b\n2.0,j2,b\n3.25,j1,c;a;b\n",
    ),
];

fn options(format: Format) -> ImportOptions {
    ImportOptions {
        max_records: None,
        strict: false,
        named: false,
        csv: (format == Format::Csv).then(|| CsvMapping {
            time_cols: vec![ColRef::Name("t".into())],
            time_format: TimeFormat::Unix,
            key_col: Some(ColRef::Name("job".into())),
            resource_col: ColRef::Name("reads".into()),
            resource_list: Some(ListSyntax::Separator(b';')),
            namespace: String::new(),
            bytes_col: None,
            duration_col: None,
            type_col: None,
            header: true,
            delimiter: b',',
        }),
    }
}

/// `text` damaged by `edits`: (position, what) — 0..=255 replaces the byte there, 256 cuts
/// the line there, 257 inserts a line of noise.
fn damaged(text: &str, edits: &[(usize, u16)], noise: &[u8]) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    for (at, what) in edits {
        if b.is_empty() {
            break;
        }
        let i = at % b.len();
        match what {
            0..=255 => b[i] = *what as u8,
            256 => {
                let end = b[i..]
                    .iter()
                    .position(|c| *c == b'\n')
                    .map_or(b.len(), |p| i + p);
                b.drain(i..end);
            }
            _ => {
                let mut line = noise.to_vec();
                line.push(b'\n');
                b.splice(i..i, line);
            }
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn damaged_samples_import_or_fail_cleanly(
        which in 0usize..SAMPLES.len(),
        edits in vec((any::<usize>(), 0u16..258), 0..6),
        noise in vec(any::<u8>(), 0..80),
    ) {
        let (format, name, text) = SAMPLES[which];
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join(name);
        std::fs::write(&path, damaged(text, &edits, &noise)).unwrap();
        if let Ok((records, report)) = import(format, &[path], &options(format)) {
            prop_assert_eq!(records.len() as u64, report.records);
            for r in &records {
                prop_assert!(r.ts.is_finite() && r.ts >= 0.0, "time {}", r.ts);
            }
            prop_assert!(records.windows(2).all(|w| w[0].ts <= w[1].ts));
        }
    }
}

/// The undamaged samples import (the property above would pass vacuously otherwise).
#[test]
fn every_sample_imports_as_is() {
    for (format, name, text) in SAMPLES {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let (records, _) =
            import(format, &[path], &options(format)).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert!(!records.is_empty(), "{format:?}");
    }
}
