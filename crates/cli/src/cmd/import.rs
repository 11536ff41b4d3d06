//! `prewarm import`: real traces → history records (JSON Lines), sorted by time. What each
//! format reads is in `prewarm_import`'s docs and, for users, in `prewarm import --help`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use prewarm_core::HistoryWriter;
use prewarm_import::{ColRef, CsvMapping, Format, ImportOptions, ListSyntax, TimeFormat, import};

use crate::output;

/// The formats, as `prewarm import --help` shows them after the flags.
const FORMATS: &str = "\
Formats, each as its dataset publishes it (.gz inputs are read directly):
  azure2019  Azure Functions 2019: invocations_per_function_md.anon.dNN.csv
             (HashOwner,HashApp,HashFunction,Trigger,1..1440, or a window of minutes such
             as 480..959, kept at its offset), or the vHive sample (minute_1..minute_N).
             Several days in one import: day N (dNN in the name) starts at (N-1)*86400 s.
             Add function_durations_percentiles.anon.dNN.csv and
             app_memory_percentiles.anon.dNN.csv for durations and sizes. The trigger
             (http, timer, queue...) is the event type, the app the key, fn/<function> the
             resource.
  azure2021  Azure Functions 2021: app,func,end_timestamp,duration (resource fn/<app>/<func>).
  azure-llm  Azure LLM inference 2023/2024 (TIMESTAMP,ContextTokens,GeneratedTokens) and
             the LMM 2025 trace (+NumImages); the service (code, conv...) from the file
             name is the key and model/<service> the resource.
  clf        Web logs: Common or Combined Log Format (NASA's original logs too), W3C
             Extended Log Format (#Fields: directive), NASA's tab-separated variant.
  csv        Any CSV, columns mapped by the --*-col flags. With --resource-list the
             resource column holds every resource one execution read (a;b;c with
             --resource-list ';', [\"a\",\"b\"] with --resource-list json): one record, several
             reads; --bytes-col then holds one size for each, or a list of the same length.";

/// Arguments of `prewarm import`.
#[derive(clap::Args, Debug)]
#[command(after_help = FORMATS)]
pub struct Args {
    /// Input format: azure2019, azure2021, azure-llm, clf (also W3C extended and NASA's TSV),
    /// csv.
    #[arg(long)]
    format: Format,
    /// Output file (JSON Lines history records).
    #[arg(short, long)]
    out: PathBuf,
    /// Fail on the first malformed row instead of skipping and counting it.
    #[arg(long)]
    strict: bool,
    /// Each request names the states it reads (a model-serving log naming the model, a web
    /// log's URL, an invocation's function): the events carry them as `needs`, placement
    /// routes each request to a capacity holding them, and prediction is about what comes
    /// next. Replay such a history with `--lead 0` when the request is the execution's start.
    #[arg(long)]
    named: bool,
    /// Most records the import may produce; formats that expand counts (azure2019: one
    /// record per counted invocation) stop with an error past it, before building them.
    #[arg(long, default_value_t = prewarm_import::DEFAULT_MAX_RECORDS)]
    max_records: u64,
    /// csv: time column(s), by header name or 0-based index; several are joined with a space.
    #[arg(long, value_delimiter = ',')]
    time_col: Vec<ColRef>,
    /// csv: unix, unix_ms, or a strftime pattern such as "%d/%b/%Y %H:%M:%S".
    #[arg(long, default_value = "unix")]
    time_format: TimeFormat,
    /// csv: the sequence key column (client, session, tenant, app).
    #[arg(long)]
    key_col: Option<ColRef>,
    /// csv: the resource column.
    #[arg(long)]
    resource_col: Option<ColRef>,
    /// csv: the resource column lists every resource one execution read, separated by this
    /// byte (`;`, `|`, `tab`) or as a JSON array (`json`); one record with several reads.
    /// --bytes-col then holds one size for each or a list of the same length.
    #[arg(long)]
    resource_list: Option<ListSyntax>,
    /// csv: resource ids become NAMESPACE/<value>.
    #[arg(long, default_value = "res")]
    namespace: String,
    /// csv: size in bytes.
    #[arg(long)]
    bytes_col: Option<ColRef>,
    /// csv: execution time in seconds.
    #[arg(long)]
    duration_col: Option<ColRef>,
    /// csv: event type.
    #[arg(long)]
    type_col: Option<ColRef>,
    /// csv: the file has no header line.
    #[arg(long)]
    no_header: bool,
    /// csv: field delimiter (one byte; `\t` for tabs).
    #[arg(long, default_value = ",")]
    delimiter: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Input files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let csv = match a.format {
        Format::Csv => {
            let resource_col = a
                .resource_col
                .clone()
                .context("--format csv needs --resource-col")?;
            anyhow::ensure!(!a.time_col.is_empty(), "--format csv needs --time-col");
            let delimiter = match a.delimiter.as_str() {
                "\\t" | "tab" => b'\t',
                d if d.len() == 1 => d.as_bytes()[0],
                d => anyhow::bail!("--delimiter must be one byte, got {d:?}"),
            };
            prewarm_core::ResourceId::new(a.namespace.clone()).context("--namespace")?;
            Some(CsvMapping {
                time_cols: a.time_col.clone(),
                time_format: a.time_format.clone(),
                key_col: a.key_col.clone(),
                resource_col,
                resource_list: a.resource_list,
                namespace: a.namespace.clone(),
                bytes_col: a.bytes_col.clone(),
                duration_col: a.duration_col.clone(),
                type_col: a.type_col.clone(),
                header: !a.no_header,
                delimiter,
            })
        }
        _ => {
            anyhow::ensure!(
                a.resource_list.is_none(),
                "--resource-list applies to --format csv only"
            );
            None
        }
    };
    let opts = ImportOptions {
        strict: a.strict,
        named: a.named,
        csv,
        max_records: Some(a.max_records),
    };
    let (records, report) = tokio::task::spawn_blocking({
        let inputs = a.inputs.clone();
        let format = a.format;
        move || import(format, &inputs, &opts)
    })
    .await??;
    // Written to a temporary file and renamed: a failed import leaves no partial output.
    let tmp = a.out.with_extension("jsonl.tmp");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = HistoryWriter::new(std::io::BufWriter::new(file));
    for r in &records {
        w.write(r)?;
    }
    w.into_inner()?.flush()?;
    std::fs::rename(&tmp, &a.out)?;
    if a.json {
        output::json(&report)?;
    } else {
        for m in &report.examples {
            eprintln!("skipped {} line {}: {}", m.file, m.line, m.reason);
        }
        println!(
            "imported {} records ({} keys, {} resources, {:.0} s of trace) to {}; {} malformed rows skipped",
            report.records,
            report.keys,
            report.resources,
            report.span_s,
            a.out.display(),
            report.malformed
        );
    }
    Ok(0)
}
