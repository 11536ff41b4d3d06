//! Importers on the real traces in `../shared/traces` (beside the checkout, as in CI) and on
//! small synthetic files with malformed rows.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

use prewarm_import::{ColRef, CsvMapping, Format, ImportError, ImportOptions, TimeFormat, import};

/// The shared traces, or `None` (with a note) when this checkout has none beside it.
fn traces() -> Option<PathBuf> {
    prewarm_import::shared_traces(Path::new(env!("CARGO_MANIFEST_DIR")))
}

fn sorted(records: &[prewarm_core::HistoryRecord]) -> bool {
    records.windows(2).all(|w| w[0].ts <= w[1].ts)
}

#[test]
fn nasa_matches_the_reference_counts() {
    let Some(t) = traces() else { return };
    let (recs, rep) = import(
        Format::Clf,
        &[t.join("nasa1995/nasa_19950701.tsv")],
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(
        (rep.records, rep.keys, rep.resources, rep.malformed),
        (9_999, 936, 1_165, 0)
    );
    assert!(sorted(&recs));
    assert!(
        recs.iter()
            .all(|r| r.event.kind == "http" && r.reads.len() == 1)
    );
}

#[test]
fn worldcup_imports_with_column_flags_alone() {
    let Some(t) = traces() else { return };
    let mapping = CsvMapping {
        time_cols: vec![ColRef::Index(1), ColRef::Index(2)],
        time_format: "%d/%b/%Y %H:%M:%S".parse().unwrap(),
        key_col: Some(ColRef::Index(0)),
        resource_col: ColRef::Index(3),
        namespace: "url".into(),
        resource_list: None,
        bytes_col: Some(ColRef::Index(5)),
        duration_col: None,
        type_col: None,
        header: false,
        delimiter: b',',
    };
    let opts = ImportOptions {
        max_records: None,
        strict: false,
        named: false,
        csv: Some(mapping),
    };
    let (recs, rep) = import(
        Format::Csv,
        &[t.join("worldcup98/wc_day6_1_sample.csv")],
        &opts,
    )
    .unwrap();
    assert_eq!(
        (rep.records, rep.keys, rep.resources),
        (200_000, 17_506, 2_731)
    );
    assert!(
        sorted(&recs),
        "the sample is unsorted on disk; the output is sorted"
    );
}

#[test]
fn azure_traces_import() {
    let Some(t) = traces() else { return };
    let a19 = t.join("azure2019");
    let inputs = [
        a19.join("1350_inv.csv"),
        a19.join("1350_run.csv"),
        a19.join("1350_mem.csv"),
    ];
    let (recs, rep) = import(Format::Azure2019, &inputs, &ImportOptions::default()).unwrap();
    assert_eq!(
        (rep.records, rep.resources, rep.malformed),
        (927_272, 1_350, 0)
    );
    assert!(sorted(&recs));
    assert!(recs[0].ts >= 0.0 && recs.last().unwrap().ts < 86_400.0);
    assert!(recs.iter().any(|r| r.reads[0].bytes > 0), "memory joined");
    assert!(recs.iter().any(|r| r.duration_s > 0.0), "durations joined");

    let (recs, rep) = import(
        Format::Azure2021,
        &[t.join("azure2021/Azure2021_200.csv")],
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(rep.records, 199);
    assert!(sorted(&recs));
}

#[test]
fn malformed_rows_are_counted_or_fatal_under_strict() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("log.csv");
    std::fs::write(
        &p,
        "t,user,item,size\n10,u1,a,5\nnoon,u2,b,1\n11,u1,,3\n12,u3,c,-4\n9,u2,d,7\n",
    )
    .unwrap();
    let mapping = CsvMapping {
        time_cols: vec![ColRef::Name("t".into())],
        time_format: TimeFormat::Unix,
        key_col: Some(ColRef::Name("user".into())),
        resource_col: ColRef::Name("item".into()),
        namespace: "items".into(),
        resource_list: None,
        bytes_col: Some(ColRef::Name("size".into())),
        duration_col: None,
        type_col: None,
        header: true,
        delimiter: b',',
    };
    let mut opts = ImportOptions {
        max_records: None,
        strict: false,
        named: false,
        csv: Some(mapping.clone()),
    };
    let (recs, rep) = import(Format::Csv, std::slice::from_ref(&p), &opts).unwrap();
    assert_eq!((rep.records, rep.malformed), (2, 3));
    assert_eq!(
        rep.examples.iter().map(|m| m.line).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(recs[0].ts, 9.0, "sorted by time");
    opts.strict = true;
    let e = import(Format::Csv, std::slice::from_ref(&p), &opts).unwrap_err();
    assert!(matches!(e, ImportError::Strict { line: 3, .. }), "{e}");

    let bad_col = ImportOptions {
        max_records: None,
        strict: false,
        named: false,
        csv: Some(CsvMapping {
            resource_col: ColRef::Name("nope".into()),
            ..mapping
        }),
    };
    let e = import(Format::Csv, &[p], &bad_col).unwrap_err().to_string();
    assert!(e.contains("no column \"nope\""), "{e}");
    let e = import(
        Format::Azure2021,
        &[dir.path().join("missing.csv")],
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, ImportError::Io { .. }));
}

#[test]
fn garbage_is_an_error_boms_are_stripped_and_messages_stay_short() {
    let dir = tempfile::tempdir().unwrap();
    // No valid row at all: an error naming the first skipped row, not "imported 0 records".
    let garbage = dir.path().join("garbage.log");
    std::fs::write(&garbage, "\u{1}\u{2}junk\nmore junk\n\u{7f}\n").unwrap();
    let e = import(
        Format::Clf,
        std::slice::from_ref(&garbage),
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, ImportError::NoRecords { malformed: 3, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("line 1"), "{e}");

    // A byte-order mark written by an editor is not part of the first host.
    let bom = dir.path().join("bom.log");
    std::fs::write(
        &bom,
        "\u{feff}alpha - - [01/Jul/1995:00:00:01 -0400] \"GET /a HTTP/1.0\" 200 10\n",
    )
    .unwrap();
    let (recs, _) = import(Format::Clf, &[bom], &ImportOptions::default()).unwrap();
    assert_eq!(recs[0].event.key, "alpha");

    // A header of a million columns: the missing-column message stays short.
    let wide = dir.path().join("wide.csv");
    let header: Vec<String> = (0..1_000_000).map(|i| format!("c{i}")).collect();
    std::fs::write(&wide, format!("{}\n", header.join(","))).unwrap();
    let opts = ImportOptions {
        max_records: None,
        strict: false,
        named: false,
        csv: Some(CsvMapping {
            time_cols: vec![ColRef::Name("t".into())],
            time_format: TimeFormat::Unix,
            key_col: None,
            resource_col: ColRef::Name("item".into()),
            namespace: "items".into(),
            resource_list: None,
            bytes_col: None,
            duration_col: None,
            type_col: None,
            header: true,
            delimiter: b',',
        }),
    };
    let e = import(Format::Csv, &[wide], &opts).unwrap_err().to_string();
    assert!(e.contains("1000000 columns"), "{}", &e[..e.len().min(300)]);
    assert!(e.len() < 600, "{} bytes", e.len());
}

#[test]
fn named_requests_carry_their_reads_as_needs() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("serving.csv");
    std::fs::write(
        &p,
        "t,tenant,model\n1,acme,llama-8b\n2,acme,mistral-7b\n3,zeta,llama-8b\n",
    )
    .unwrap();
    let mapping = CsvMapping {
        time_cols: vec![ColRef::Name("t".into())],
        time_format: TimeFormat::Unix,
        key_col: Some(ColRef::Name("tenant".into())),
        resource_col: ColRef::Name("model".into()),
        namespace: "models".into(),
        resource_list: None,
        bytes_col: None,
        duration_col: None,
        type_col: None,
        header: true,
        delimiter: b',',
    };
    let mut opts = ImportOptions {
        max_records: None,
        strict: true,
        named: false,
        csv: Some(mapping),
    };
    let (plain, _) = import(Format::Csv, std::slice::from_ref(&p), &opts).unwrap();
    assert!(plain.iter().all(|r| r.event.needs.is_empty()));
    opts.named = true;
    let (named, _) = import(Format::Csv, std::slice::from_ref(&p), &opts).unwrap();
    let needs: Vec<String> = named
        .iter()
        .map(|r| {
            r.event
                .needs
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        needs,
        ["models/llama-8b", "models/mistral-7b", "models/llama-8b"]
    );
    assert_eq!(named[0].event.key, "acme", "the key stays the tenant");
    // Clf too: the URL a request names.
    let log = dir.path().join("access.log");
    std::fs::write(
        &log,
        "h - - [01/Jul/1995:00:00:01 -0400] \"GET /a HTTP/1.0\" 200 10\n",
    )
    .unwrap();
    let (web, _) = import(Format::Clf, &[log], &opts).unwrap();
    assert_eq!(web[0].event.needs, vec![web[0].reads[0].resource.clone()]);
}

/// Found by the `importers` fuzz target: a row whose key (a web log's host, an Azure app) or
/// event type was longer than a history record may hold (1,024 bytes) became a record, so
/// `import` wrote a history file that `eval`, `train` and `replay` then refused to read. Such
/// a row is malformed (counted, or fatal under `strict`), like a row with a bad time.
#[test]
fn a_key_or_type_too_long_for_history_is_a_malformed_row() {
    let dir = tempfile::tempdir().unwrap();
    let long = "h".repeat(1_100);
    let cases = [
        (
            Format::Clf,
            "access.log",
            format!(
                "{long} - - [01/Jul/1995:00:00:01 -0400] \"GET /a HTTP/1.0\" 200 1\n\
                 ok.host - - [01/Jul/1995:00:00:02 -0400] \"GET /b HTTP/1.0\" 200 1\n"
            ),
        ),
        (
            Format::Azure2021,
            "trace.csv",
            format!("app,func,end_timestamp,duration\n{long},f,10.5,0.25\na,f,11,0.5\n"),
        ),
        (
            Format::Azure2019,
            "invocations_per_function_md.anon.d01.csv",
            format!(
                "HashOwner,HashApp,HashFunction,Trigger,1,2\no,{long},f,http,1,0\no,a,f,{long},1,0\no,a,f,http,0,1\n"
            ),
        ),
    ];
    for (format, name, text) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let opts = ImportOptions::default();
        let (recs, rep) = import(format, std::slice::from_ref(&path), &opts)
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(recs.len(), 1, "{format:?}: only the row within bounds");
        assert!(rep.malformed >= 1, "{format:?}: the long row is counted");
        assert!(recs.iter().all(|r| r.validate().is_ok()), "{format:?}");
        assert!(
            rep.examples[0].reason.contains("too long"),
            "{format:?}: {}",
            rep.examples[0].reason
        );
        let strict = ImportOptions {
            strict: true,
            ..ImportOptions::default()
        };
        assert!(
            matches!(
                import(format, &[path], &strict),
                Err(ImportError::Strict { .. })
            ),
            "{format:?}: fatal under strict"
        );
    }
}

/// Fuzzing found a 4 KB Azure 2019 input that ran for minutes: its counts named billions of
/// invocations, each expanded into a record. The limit stops such an input before building
/// anything, with an error that says what to do; within the limit the counts import exactly.
#[test]
fn counts_that_expand_past_the_record_limit_stop_the_import_before_building_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("invocations_per_function_md.anon.d01.csv");
    let write = |counts: &str| {
        std::fs::write(
            &path,
            format!("HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,{counts}\n"),
        )
        .unwrap()
    };
    let limited = |n| ImportOptions {
        max_records: Some(n),
        ..ImportOptions::default()
    };
    write("6,4");
    let (recs, _) = import(Format::Azure2019, std::slice::from_ref(&path), &limited(10)).unwrap();
    assert_eq!(recs.len(), 10, "exactly at the limit");
    let err = import(Format::Azure2019, std::slice::from_ref(&path), &limited(9)).unwrap_err();
    assert!(
        matches!(err, ImportError::TooManyRecords { limit: 9 }),
        "{err}"
    );
    assert!(err.to_string().contains("--max-records"), "{err}");
    // The default limit: a trillion invocations in one row is refused at once.
    write("999999999999,18446744073709551615");
    let err = import(
        Format::Azure2019,
        std::slice::from_ref(&path),
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ImportError::TooManyRecords { limit } if limit == prewarm_import::DEFAULT_MAX_RECORDS),
        "{err}"
    );
    // The fuzzed input's way there: a durations header whose percentile columns were cut to
    // bare numbers read as minutes 142356 … of a day that has 1440.
    std::fs::write(
        &path,
        "HashOwner,HashApp,HashFunction,Average,Count,142356,179611\no,a,f,1.0,2,8,9\n",
    )
    .unwrap();
    let err = import(Format::Azure2019, &[path], &ImportOptions::default()).unwrap_err();
    assert!(err.to_string().contains("minutes 1 to 1440"), "{err}");
}
