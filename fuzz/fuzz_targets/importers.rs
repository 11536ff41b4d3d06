//! Every trace importer (`prewarm_import::import`), on files as published.
//!
//! First byte: the format (and file names, and for `csv` the column mapping):
//! 0 Azure 2019 invocations (`invocations_per_function_md.anon.d01.csv`); 1 Azure 2019, up
//! to three files split at NUL bytes (invocations, durations, memory: told by their
//! headers); 2 Azure 2021; 3 Azure LLM; 4 web logs (CLF/Combined, W3C ELF, NASA TSV: told by
//! the first line); 5 CSV by column names with a `;` resource list and Unix seconds; 6 CSV
//! by column indexes, no header, a strftime time split over two columns (the World Cup
//! log); 7 CSV with a JSON resource list, Unix milliseconds, type, bytes and duration
//! columns, `|`-delimited. Second byte: bit 0 `strict`, bit 1 `named`.
//!
//! Properties: an import that succeeds returns at least one record, as many as it reports,
//! sorted by time, every one valid (finite, non-negative times; keys and types within
//! bounds; under `named`, needs naming its reads) and written back as history
//! (`HistoryWriter`) it reads as itself: what `import` writes, `eval`/`replay` can read; under
//! `strict` nothing was skipped; messages are bounded (at most 20 examples, each reason
//! capped; an error's text is bounded).

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prewarm_core::{HistoryReader, HistoryRecord, HistoryWriter};
use prewarm_import::{ColRef, CsvMapping, Format, ImportOptions, ListSyntax, TimeFormat, import};

fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
}

fn name(s: &str) -> ColRef {
    ColRef::Name(s.into())
}

fn mapping(which: u8) -> CsvMapping {
    match which {
        5 => CsvMapping {
            time_cols: vec![name("t")],
            time_format: TimeFormat::Unix,
            key_col: Some(name("job")),
            resource_col: name("reads"),
            resource_list: Some(ListSyntax::Separator(b';')),
            namespace: String::new(),
            bytes_col: None,
            duration_col: None,
            type_col: None,
            header: true,
            delimiter: b',',
        },
        6 => CsvMapping {
            time_cols: vec![ColRef::Index(1), ColRef::Index(2)],
            time_format: TimeFormat::Pattern("%d/%b/%Y %H:%M:%S".into()),
            key_col: Some(ColRef::Index(0)),
            resource_col: ColRef::Index(3),
            resource_list: None,
            namespace: "url".into(),
            bytes_col: Some(ColRef::Index(5)),
            duration_col: None,
            type_col: None,
            header: false,
            delimiter: b',',
        },
        _ => CsvMapping {
            time_cols: vec![name("ms")],
            time_format: TimeFormat::UnixMs,
            key_col: Some(name("who")),
            resource_col: name("reads"),
            resource_list: Some(ListSyntax::Json),
            namespace: "data".into(),
            bytes_col: Some(name("bytes")),
            duration_col: Some(name("dur")),
            type_col: Some(name("kind")),
            header: true,
            delimiter: b'|',
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let [which, flags, rest @ ..] = data else {
        return;
    };
    let which = which % 8;
    let dir = scratch().path();
    let write = |n: &str, bytes: &[u8]| -> PathBuf {
        let p = dir.join(n);
        std::fs::write(&p, bytes).expect("scratch file");
        p
    };
    let (format, inputs) = match which {
        0 => (
            Format::Azure2019,
            vec![write("invocations_per_function_md.anon.d01.csv", rest)],
        ),
        1 => (
            Format::Azure2019,
            rest.splitn(3, |b| *b == 0)
                .zip(["a.anon.d01.csv", "b.anon.d01.csv", "c.anon.d02.csv"])
                .map(|(bytes, n)| write(n, bytes))
                .collect(),
        ),
        2 => (
            Format::Azure2021,
            vec![write(
                "AzureFunctionsInvocationTraceForTwoWeeksJan2021.txt",
                rest,
            )],
        ),
        3 => (
            Format::AzureLlm,
            vec![write("AzureLLMInferenceTrace_code.csv", rest)],
        ),
        4 => (Format::Clf, vec![write("access.log", rest)]),
        _ => (Format::Csv, vec![write("trace.csv", rest)]),
    };
    let opts = ImportOptions {
        strict: flags & 1 != 0,
        named: flags & 2 != 0,
        csv: (format == Format::Csv).then(|| mapping(which)),
        // A few KiB of counts can name billions of invocations; the limit is what stops
        // them (tested here at a size an execution can afford).
        max_records: Some(100_000),
    };
    let (records, report) = match import(format, &inputs, &opts) {
        Ok(v) => v,
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.len() < 2048,
                "an error of {} bytes: {text:.300}",
                text.len()
            );
            return;
        }
    };
    assert!(!records.is_empty(), "success means records");
    assert_eq!(records.len() as u64, report.records);
    assert!(records.windows(2).all(|w| w[0].ts <= w[1].ts), "sorted");
    for r in &records {
        r.validate()
            .unwrap_or_else(|e| panic!("an imported record is invalid: {e}"));
        if opts.named {
            assert!(r.reads.iter().all(|x| r.event.needs.contains(&x.resource)));
        }
    }
    if opts.strict {
        assert_eq!(report.malformed, 0, "strict skips nothing");
    }
    assert!(report.examples.len() <= 20 && report.examples.len() as u64 <= report.malformed);
    for m in &report.examples {
        assert!(
            m.reason.len() <= 300,
            "a reason of {} bytes",
            m.reason.len()
        );
    }
    let mut w = HistoryWriter::new(Vec::new());
    for r in &records {
        w.write(r).expect("a record writes");
    }
    let text = w.into_inner().expect("flushed");
    let back: Vec<HistoryRecord> = HistoryReader::new(&text[..])
        .map(|r| r.unwrap_or_else(|e| panic!("an imported record does not read back: {e}")))
        .collect();
    assert_eq!(back, records, "imported records read back as themselves");
});
