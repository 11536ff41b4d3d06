//! `prewarm import`: real traces → history records (JSON Lines), sorted by time.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use prewarm_core::HistoryWriter;
use prewarm_import::{ColRef, CsvMapping, Format, ImportOptions, TimeFormat, import};

use crate::output;

/// Arguments of `prewarm import`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input format: azure2019, azure2021, clf (also NASA's TSV), csv.
    #[arg(long)]
    format: Format,
    /// Output file (JSON Lines history records).
    #[arg(short, long)]
    out: PathBuf,
    /// Fail on the first malformed row instead of skipping and counting it.
    #[arg(long)]
    strict: bool,
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
                namespace: a.namespace.clone(),
                bytes_col: a.bytes_col.clone(),
                duration_col: a.duration_col.clone(),
                type_col: a.type_col.clone(),
                header: !a.no_header,
                delimiter,
            })
        }
        _ => None,
    };
    let opts = ImportOptions {
        strict: a.strict,
        csv,
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
