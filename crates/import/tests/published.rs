//! The importers on small fixtures in each dataset's published layout (written by the tests):
//! Azure Functions 2019 (original, trimmed minute windows, several days, gzip, the vHive
//! sample), Azure Functions 2021, the Azure LLM inference traces, web logs (NASA's original
//! lines, Combined, W3C extended, NASA's tab-separated variant) and CSV with resource lists.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::Write;
use std::path::{Path, PathBuf};

use prewarm_core::HistoryRecord;
use prewarm_import::{
    ColRef, CsvMapping, Format, ImportError, ImportOptions, ImportReport, ListSyntax, TimeFormat,
    import,
};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn write_gz(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    std::fs::write(&p, gz.finish().unwrap()).unwrap();
    p
}

fn run(format: Format, inputs: &[PathBuf]) -> (Vec<HistoryRecord>, ImportReport) {
    import(format, inputs, &ImportOptions::default()).unwrap()
}

fn strict(format: Format, inputs: &[PathBuf]) -> ImportError {
    let opts = ImportOptions {
        max_records: None,
        strict: true,
        named: false,
        csv: None,
    };
    import(format, inputs, &opts).unwrap_err()
}

/// An Azure 2019 invocation header with the minute columns `minutes`.
fn inv_header(minutes: std::ops::RangeInclusive<u32>) -> String {
    let m: Vec<String> = minutes.map(|m| m.to_string()).collect();
    format!("HashOwner,HashApp,HashFunction,Trigger,{}\n", m.join(","))
}

/// A row of counts: `hits` as (minute, count), zero elsewhere.
fn inv_row(ids: &str, minutes: std::ops::RangeInclusive<u32>, hits: &[(u32, u32)]) -> String {
    let counts: Vec<String> = minutes
        .map(|m| {
            hits.iter()
                .find(|h| h.0 == m)
                .map_or(0, |h| h.1)
                .to_string()
        })
        .collect();
    format!("{ids},{}\n", counts.join(","))
}

#[test]
fn azure2019_original_layout_over_several_days_with_durations_memory_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let all = 1..=1440;
    let d01 = inv_header(all.clone())
        + &inv_row("o1,a1,f1,http", all.clone(), &[(1, 2), (1440, 1)])
        + &inv_row("o1,a1,f2,timer", all.clone(), &[(2, 1)])
        + &inv_row("o2,a2,f3,queue", all.clone(), &[]);
    let d02 = inv_header(all.clone()) + &inv_row("o1,a1,f1,http", all.clone(), &[(1, 1)]);
    let inputs = [
        write(d, "invocations_per_function_md.anon.d01.csv", &d01),
        // gzip, named .csv.gz
        write_gz(d, "invocations_per_function_md.anon.d02.csv.gz", &d02),
        write(
            d,
            "function_durations_percentiles.anon.d01.csv",
            "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,percentile_Average_99,percentile_Average_100\n\
             o1,a1,f1,250,3,100,400,100,100,200,250,300,400,400\n",
        ),
        // gzip, told by its bytes although named .csv
        write_gz(
            d,
            "function_durations_percentiles.anon.d02.csv",
            "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0\n\
             o1,a1,f1,1500,1,1500,1500,1500\n",
        ),
        write(
            d,
            "app_memory_percentiles.anon.d01.csv",
            "HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,AverageAllocatedMb_pct5,AverageAllocatedMb_pct25,AverageAllocatedMb_pct50,AverageAllocatedMb_pct75,AverageAllocatedMb_pct95,AverageAllocatedMb_pct99,AverageAllocatedMb_pct100\n\
             o1,a1,12,128,100,100,120,128,130,140,150,160\n",
        ),
    ];
    let (recs, rep) = run(Format::Azure2019, &inputs);
    assert_eq!((rep.records, rep.malformed), (5, 0));
    let got: Vec<(f64, &str, &str, &str, u64, f64)> = recs
        .iter()
        .map(|r| {
            (
                r.ts,
                r.event.kind.as_str(),
                r.event.key.as_str(),
                r.reads[0].resource.as_str(),
                r.reads[0].bytes,
                r.duration_s,
            )
        })
        .collect();
    let mb128 = 128 * 1024 * 1024;
    assert_eq!(
        got,
        vec![
            (15.0, "http", "a1", "fn/f1", mb128, 0.25),
            (45.0, "http", "a1", "fn/f1", mb128, 0.25),
            (90.0, "timer", "a1", "fn/f2", mb128, 0.0),
            (60.0 * 1439.0 + 30.0, "http", "a1", "fn/f1", mb128, 0.25),
            // day 2, minute 1: its own day's duration, day 1's memory (the closest day)
            (86_400.0 + 30.0, "http", "a1", "fn/f1", mb128, 1.5),
        ]
    );
}

#[test]
fn azure2019_minute_windows_keep_their_offset() {
    let dir = tempfile::tempdir().unwrap();
    let window = 480..=959;
    let text =
        inv_header(window.clone()) + &inv_row("o,a,f,event", window.clone(), &[(480, 1), (959, 2)]);
    let p = write(
        dir.path(),
        "invocations_per_function_md.anon.d03.csv",
        &text,
    );
    let (recs, _) = run(Format::Azure2019, &[p]);
    let day3 = 2.0 * 86_400.0;
    let ts: Vec<f64> = recs.iter().map(|r| r.ts - day3).collect();
    assert_eq!(
        ts,
        vec![
            60.0 * 479.0 + 30.0,
            60.0 * 958.0 + 15.0,
            60.0 * 958.0 + 45.0
        ]
    );
    assert!(recs.iter().all(|r| r.event.kind == "event"));

    // A window of minute_N columns (trimmed vHive copies) too, without a trigger.
    let p = write(
        dir.path(),
        "inv.csv",
        "HashFunction,HashOwner,HashApp,minute_480,minute_481\nf,o,a,0,1\n",
    );
    let (recs, _) = run(Format::Azure2019, &[p]);
    assert_eq!(
        (recs[0].ts, recs[0].event.kind.as_str()),
        (60.0 * 480.0 + 30.0, "invoke")
    );
}

#[test]
fn azure2019_vhive_sample_layout_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let inputs = [
        write(
            d,
            "2_inv.csv",
            "HashFunction,HashOwner,HashApp,minute_1,minute_2,minute_3\nf1,o1,a1,1,0,2\nf2,o2,a2,0,1,0\n",
        ),
        write(
            d,
            "2_run.csv",
            "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum\no1,a1,f1,100,3,50,200\n",
        ),
        write(
            d,
            "2_mem.csv",
            "HashOwner,HashApp,SampleCount,AverageAllocatedMb\no2,a2,5,64\n",
        ),
    ];
    let (recs, rep) = run(Format::Azure2019, &inputs);
    assert_eq!((rep.records, rep.keys, rep.resources), (4, 2, 2));
    assert_eq!(
        recs.iter().map(|r| r.ts).collect::<Vec<_>>(),
        vec![30.0, 90.0, 135.0, 165.0]
    );
    assert_eq!(recs[0].duration_s, 0.1);
    assert_eq!(recs[1].reads[0].bytes, 64 * 1024 * 1024);
    assert!(recs.iter().all(|r| r.event.kind == "invoke"));
}

#[test]
fn azure2019_malformed_rows_name_their_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = inv_header(1..=3) + "o,a,f,http,1,0,0\no,a,g,http,1,x,0\n";
    let p = write(
        dir.path(),
        "invocations_per_function_md.anon.d01.csv",
        &text,
    );
    let (_, rep) = run(Format::Azure2019, std::slice::from_ref(&p));
    assert_eq!((rep.records, rep.malformed), (1, 1));
    assert_eq!(rep.examples[0].line, 3);
    let e = strict(Format::Azure2019, std::slice::from_ref(&p)).to_string();
    assert!(
        e.contains("invocations_per_function_md.anon.d01.csv line 3") && e.contains("minute 2"),
        "{e}"
    );

    let no_inv = write(dir.path(), "other.csv", "a,b,c\n1,2,3\n");
    let e = import(Format::Azure2019, &[no_inv], &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("other.csv") && e.contains("not an Azure 2019"),
        "{e}"
    );

    let broken = dir
        .path()
        .join("invocations_per_function_md.anon.d04.csv.gz");
    std::fs::write(&broken, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff]).unwrap();
    let e = import(Format::Azure2019, &[broken], &ImportOptions::default()).unwrap_err();
    assert!(matches!(e, ImportError::Io { .. }), "{e}");
    assert!(
        e.to_string().contains("d04.csv.gz") && e.to_string().contains("gzip"),
        "{e}"
    );
}

#[test]
fn azure2021_published_rows() {
    let dir = tempfile::tempdir().unwrap();
    // The rows of the dataset's documentation, and one function id shared by two apps.
    let text = "app,func,end_timestamp,duration\n\
        734272c01926d19690e5ec308bab64ef97950b75b1c7582283e0783fce1751d8,313c03f53a0d31f70aec25f62efb33e7dd779725ca4af579018452d1204beaad,5160.142570018768,0.134\n\
        17c37a0fdd5d1932b755c0e6447137bc08fd524f455e14fdac414f584de08dc5,c9f8e30e36d1aef62c10b3cfca6e289a93848a148d876dd514753040314f4817,5161.280997037888,0.013\n\
        7fa05b607ae861b85ec53cea12d3efaed8be0f9a92f5d6e8067244161d491e96,9bc86d6cd1ee254aaa313492f0fd88be8bd7b92d50d4237ff52d7685440c0906,5241.567729949951,42.356\n\
        17c37a0fdd5d1932b755c0e6447137bc08fd524f455e14fdac414f584de08dc5,313c03f53a0d31f70aec25f62efb33e7dd779725ca4af579018452d1204beaad,5200.0,1.0\n\
        broken,row,soon,1\n";
    let p = write_gz(
        dir.path(),
        "AzureFunctionsInvocationTraceForTwoWeeksJan2021.txt.gz",
        text,
    );
    let (recs, rep) = run(Format::Azure2021, std::slice::from_ref(&p));
    assert_eq!(
        (rep.records, rep.malformed, rep.resources, rep.keys),
        (4, 1, 4, 3)
    );
    assert_eq!(
        recs[0].event.key,
        "734272c01926d19690e5ec308bab64ef97950b75b1c7582283e0783fce1751d8"
    );
    assert!((recs[0].ts - (5160.142570018768 - 0.134)).abs() < 1e-9);
    assert_eq!(
        recs[0].reads[0].resource.as_str(),
        "fn/734272c01926d19690e5ec308bab64ef97950b75b1c7582283e0783fce1751d8/313c03f53a0d31f70aec25f62efb33e7dd779725ca4af579018452d1204beaad"
    );
    assert_eq!(rep.examples[0].line, 6);
    let e = strict(Format::Azure2021, &[p]).to_string();
    assert!(e.contains("txt.gz line 6"), "{e}");
}

#[test]
fn azure_llm_inference_traces_2023_2024_2025() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let inputs = [
        write(
            d,
            "AzureLLMInferenceTrace_code.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:04.0319600,3180,8\n",
        ),
        write(
            d,
            "AzureLLMInferenceTrace_conv_1week.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00.009930+00:00,374,44\n",
        ),
        write_gz(
            d,
            "AzureLMMInferenceTrace_multimodal.csv.gz",
            "TIMESTAMP,NumImages,ContextTokens,GeneratedTokens\n2025-01-01 00:00:00.5,2,1200,30\n",
        ),
    ];
    let (recs, rep) = run(Format::AzureLlm, &inputs);
    assert_eq!((rep.records, rep.keys, rep.resources), (4, 3, 3));
    let first = &recs[0];
    assert_eq!(
        (
            first.ts,
            first.event.kind.as_str(),
            first.event.key.as_str()
        ),
        (1_700_158_623.979, "inference", "code")
    );
    assert_eq!(first.reads[0].resource.as_str(), "model/code");
    assert_eq!(first.event.attrs["context_tokens"], 4808);
    assert_eq!(first.event.attrs["generated_tokens"], 10);
    let conv = recs.iter().find(|r| r.event.key == "conv").unwrap();
    assert_eq!(conv.ts, 1_715_299_200.009);
    let mm = recs.last().unwrap();
    assert_eq!(
        (mm.event.key.as_str(), mm.event.attrs["images"].as_u64()),
        ("multimodal", Some(2))
    );

    let bad = write(
        d,
        "AzureLLMInferenceTrace_code_bad.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,1,1\nlater,1,1\n",
    );
    let e = strict(Format::AzureLlm, &[bad]).to_string();
    assert!(
        e.contains("code_bad.csv line 3") && e.contains("TIMESTAMP"),
        "{e}"
    );
    let wrong = write(d, "x.csv", "time,tokens\n1,2\n");
    let e = import(Format::AzureLlm, &[wrong], &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.csv") && e.contains("ContextTokens"), "{e}");
}

#[test]
fn web_logs_nasa_original_combined_w3c_and_tabs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let nasa = write_gz(
        d,
        "NASA_access_log_Jul95.gz",
        "199.72.81.55 - - [01/Jul/1995:00:00:01 -0400] \"GET /history/apollo/ HTTP/1.0\" 200 6245\n\
         unicomp6.unicomp.net - - [01/Jul/1995:00:00:06 -0400] \"GET /shuttle/countdown/ HTTP/1.0\" 200 3985\n\
         burger.letters.com - - [01/Jul/1995:00:00:12 -0400] \"GET /images/NASA-logosmall.gif HTTP/1.0\" 304 0\n\
         d104.aa.net - - [01/Jul/1995:00:00:13 -0400] \"GET /shuttle/countdown/\" 200 3985\n\
         \n",
    );
    let (recs, rep) = run(Format::Clf, std::slice::from_ref(&nasa));
    assert_eq!((rep.records, rep.keys, rep.malformed), (4, 4, 0));
    assert_eq!(recs[0].ts, 804_571_201.0);
    assert_eq!(
        recs[3].reads[0].resource.as_str(),
        "url/shuttle/countdown/_index"
    );

    let combined = write(
        d,
        "access.log",
        "127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif HTTP/1.0\" 200 2326 \"http://www.example.com/start.html\" \"Mozilla/4.08 [en] (Win98; I ;Nav)\"\n\
         not a log line\n",
    );
    let (recs, rep) = run(Format::Clf, std::slice::from_ref(&combined));
    assert_eq!(
        (rep.records, rep.malformed, rep.examples[0].line),
        (1, 1, 2)
    );
    assert_eq!(recs[0].reads[0].bytes, 2326);
    let e = strict(Format::Clf, &[combined]).to_string();
    assert!(e.contains("access.log line 2"), "{e}");

    let elf = write(
        d,
        "u_ex240102.log",
        "#Software: Microsoft Internet Information Services 10.0\n\
         #Version: 1.0\n\
         #Date: 2024-01-02 00:00:00\n\
         #Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) sc-status sc-substatus sc-win32-status sc-bytes time-taken\n\
         2024-01-02 00:00:01 10.0.0.1 GET /index.html - 80 - 192.0.2.5 Mozilla/5.0+(X11) 200 0 0 5120 12\n\
         2024-01-02 00:00:02 10.0.0.1 GET /api/items id=3 80 - 192.0.2.6 curl/8.0 404 0 2 -\n\
         2024-01-02 00:00:03 10.0.0.1 POST /upload - 80 - 192.0.2.5 curl/8.0 201 0 0 77 40\n",
    );
    let (recs, rep) = run(Format::Clf, &[elf]);
    assert_eq!(
        (rep.records, rep.malformed, rep.examples[0].line),
        (2, 1, 6)
    );
    assert_eq!(
        (
            recs[0].ts,
            recs[0].event.key.as_str(),
            recs[0].reads[0].resource.as_str(),
            recs[0].reads[0].bytes
        ),
        (1_704_153_601.0, "192.0.2.5", "url/index.html", 5120)
    );
    assert_eq!(recs[1].event.attrs["method"], "POST");
    assert_eq!(recs[1].event.attrs["status"], 201);

    let tsv = write(
        d,
        "nasa_19950701.tsv",
        "host\tlogname\ttime\tmethod\turl\tresponse\tbytes\n199.72.81.55\t-\t804571201\tGET\t/history/apollo/\t200\t6245\t\t\n",
    );
    let (recs, _) = run(Format::Clf, &[tsv]);
    assert_eq!((recs[0].ts, recs[0].reads[0].bytes), (804_571_201.0, 6245));
}

fn list_mapping(list: ListSyntax, delimiter: u8) -> ImportOptions {
    ImportOptions {
        max_records: None,
        strict: false,
        named: false,
        csv: Some(CsvMapping {
            time_cols: vec![ColRef::Name("t".into())],
            time_format: TimeFormat::Unix,
            key_col: Some(ColRef::Name("job".into())),
            resource_col: ColRef::Name("reads".into()),
            resource_list: Some(list),
            namespace: "ds".into(),
            bytes_col: Some(ColRef::Name("sizes".into())),
            duration_col: None,
            type_col: None,
            header: true,
            delimiter,
        }),
    }
}

#[test]
fn csv_resource_list_columns() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "jobs.csv",
        "t,job,reads,sizes\n\
         1,j1,a;b;c,1;2;3\n\
         2,j2,d,9\n\
         3,j3,e;f,7\n\
         4,j4,;,1\n\
         5,j5,g;h,1;2;3\n",
    );
    let opts = list_mapping(ListSyntax::Separator(b';'), b',');
    let (recs, rep) = import(Format::Csv, std::slice::from_ref(&p), &opts).unwrap();
    assert_eq!((rep.records, rep.malformed, rep.resources), (3, 2, 6));
    let reads = |r: &HistoryRecord| -> Vec<(String, u64)> {
        r.reads
            .iter()
            .map(|x| (x.resource.to_string(), x.bytes))
            .collect()
    };
    assert_eq!(
        reads(&recs[0]),
        vec![("ds/a".into(), 1), ("ds/b".into(), 2), ("ds/c".into(), 3)]
    );
    assert_eq!(
        reads(&recs[2]),
        vec![("ds/e".into(), 7), ("ds/f".into(), 7)]
    );
    let lines: Vec<(u64, &str)> = rep
        .examples
        .iter()
        .map(|m| (m.line, m.reason.as_str()))
        .collect();
    assert_eq!(
        lines,
        vec![(5, "empty resource list"), (6, "2 resources but 3 sizes")]
    );

    // A JSON array in a quoted field.
    let p = write(
        dir.path(),
        "jobs.tsv",
        "t\tjob\treads\tsizes\n1\tj1\t[\"models/m1\", \"data/x\"]\t[10, 20]\n2\tj2\tnot json\t1\n",
    );
    let opts = list_mapping(ListSyntax::Json, b'\t');
    let (recs, rep) = import(Format::Csv, std::slice::from_ref(&p), &opts).unwrap();
    assert_eq!((rep.records, rep.malformed), (1, 1));
    assert_eq!(
        reads(&recs[0]),
        vec![("ds/models/m1".into(), 10), ("ds/data/x".into(), 20)]
    );
    assert!(
        rep.examples[0].reason.contains("not a JSON array"),
        "{:?}",
        rep.examples
    );
}
