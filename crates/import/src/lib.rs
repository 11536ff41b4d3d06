//! Importers: real traces → history records (`prewarm_core::HistoryRecord`), sorted by time.
//!
//! | format | input (as published) | event | key | resource |
//! |---|---|---|---|---|
//! | `azure2019` | `invocations_per_function_md.anon.dNN.csv` (`HashOwner,HashApp,HashFunction,Trigger,1..1440`, or any window of minutes by number), the vHive sample `*_inv.csv` (`minute_1..`); + `function_durations_percentiles…`, `app_memory_percentiles…` | the trigger (`http`, `timer`…), `invoke` without one | app | `fn/<function>` |
//! | `azure2021` | `app,func,end_timestamp,duration` | `invoke` | app | `fn/<app>/<func>` |
//! | `azure-llm` | Azure LLM inference 2023/2024 (`TIMESTAMP,ContextTokens,GeneratedTokens`), LMM 2025 (`+NumImages`) | `inference` | the service (`code`, `conv`… from the file name) | `model/<service>` |
//! | `clf` | Common/Combined Log Format (NASA's original logs among them), W3C Extended Log Format (`#Fields:`), NASA's tab-separated variant | `http` | host | `url/<path>` |
//! | `csv` | any CSV, columns mapped by flags; the resource column may hold a list | `--type-col` or `request` | `--key-col` | `<ns>/<value>` |
//!
//! Inputs compressed with gzip are read directly (told by their magic bytes, whatever their
//! name). Malformed rows are counted and reported with file and line; `strict` makes the
//! first one fatal. Raw names become resource ids through [`resource_for`].

mod azure2019;
mod azure2021;
mod azurellm;
mod clf;
mod csvmap;
mod history_file;
mod resource;

use std::path::{Path, PathBuf};

use prewarm_core::HistoryRecord;
use serde::Serialize;

pub use csvmap::{ColRef, CsvMapping, ListSyntax, TimeFormat};
pub use history_file::{ReadHistoryError, read_history};
pub use resource::resource_for;

/// A trace format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Azure Functions 2019: per-minute invocation counts, optional duration and memory files.
    Azure2019,
    /// Azure Functions 2021: one row per invocation.
    Azure2021,
    /// Azure LLM inference traces (2023, 2024) and the LMM trace (2025): one row per request.
    AzureLlm,
    /// Web server logs: Common/Combined Log Format, W3C Extended Log Format, or the NASA
    /// tab-separated variant.
    Clf,
    /// Any CSV with a column mapping.
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "azure2019" => Ok(Self::Azure2019),
            "azure2021" => Ok(Self::Azure2021),
            "azure-llm" | "azurellm" | "llm" => Ok(Self::AzureLlm),
            "clf" | "nasa" | "elf" | "w3c" => Ok(Self::Clf),
            "csv" => Ok(Self::Csv),
            _ => Err(format!(
                "unknown format {s:?} (azure2019, azure2021, azure-llm, clf, csv)"
            )),
        }
    }
}

/// How to import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// The first malformed row is an error instead of a skipped, counted row.
    pub strict: bool,
    /// Column mapping, for the `csv` format.
    pub csv: Option<CsvMapping>,
    /// Each request names the states it reads (a request for a model names the model; an
    /// HTTP request its URL; an invocation its function): the records' events carry their
    /// reads as `needs`, so that placement routes each to a capacity holding them and the
    /// models predict what comes next. Off: the event carries only its key and type, and
    /// what it reads is the model's to predict.
    pub named: bool,
    /// Most records an import may produce ([`DEFAULT_MAX_RECORDS`] when `None`). Formats
    /// that expand counts into records (Azure 2019: one record per counted invocation) can
    /// turn a small file into billions; past the limit the import stops with
    /// [`ImportError::TooManyRecords`] before building them.
    pub max_records: Option<u64>,
}

/// The default of [`ImportOptions::max_records`]: about 8 GB of records in memory.
pub const DEFAULT_MAX_RECORDS: u64 = 50_000_000;

/// One skipped row.
#[derive(Clone, Debug, Serialize)]
pub struct Malformed {
    /// The file.
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    /// What was wrong.
    pub reason: String,
}

/// What an import read.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    /// Records produced.
    pub records: u64,
    /// Rows skipped as malformed.
    pub malformed: u64,
    /// The first skipped rows (at most 20), for the message.
    pub examples: Vec<Malformed>,
    /// Distinct keys.
    pub keys: u64,
    /// Distinct resources.
    pub resources: u64,
    /// Time span covered, seconds.
    pub span_s: f64,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// An input could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A malformed row under `strict`.
    #[error("{file} line {line}: {reason}")]
    Strict {
        /// The file.
        file: String,
        /// 1-based line.
        line: u64,
        /// What was wrong.
        reason: String,
    },
    /// The inputs do not fit the format (missing columns, missing mapping…).
    #[error("{0}")]
    Format(String),
    /// The inputs expand to more records than the limit allows.
    #[error(
        "the input expands to more than {limit} records (a count is one record per \
         invocation); import fewer days or minutes, or raise --max-records"
    )]
    TooManyRecords {
        /// The limit ([`ImportOptions::max_records`]).
        limit: u64,
    },
    /// Not one row of the inputs was valid.
    #[error("no valid rows in the input ({malformed} malformed rows skipped{})", first.as_ref().map(|f| format!("; the first: {f}")).unwrap_or_default())]
    NoRecords {
        /// Rows skipped as malformed.
        malformed: u64,
        /// The first skipped row, as `file line N: reason`.
        first: Option<String>,
    },
}

/// Longest reason or column list a message carries (a garbage input can hold a megabyte in
/// one field).
pub(crate) const MAX_MESSAGE: usize = 200;

/// `s` cut to [`MAX_MESSAGE`] bytes (at a character boundary), marked when cut.
pub(crate) fn capped(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// Collects rows and skips, enforcing `strict`.
pub(crate) struct Sink {
    strict: bool,
    /// Records still allowed ([`ImportOptions::max_records`]).
    room: u64,
    limit: u64,
    pub records: Vec<HistoryRecord>,
    pub report: ImportReport,
}

impl Sink {
    fn new(strict: bool, limit: u64) -> Self {
        Self {
            strict,
            room: limit,
            limit,
            records: Vec::new(),
            report: ImportReport::default(),
        }
    }

    /// Records a malformed row: an error under `strict`, else counted.
    pub fn malformed(
        &mut self,
        file: &Path,
        line: u64,
        reason: impl Into<String>,
    ) -> Result<(), ImportError> {
        let m = Malformed {
            file: file.display().to_string(),
            line,
            reason: capped(&reason.into()),
        };
        if self.strict {
            return Err(ImportError::Strict {
                file: m.file,
                line: m.line,
                reason: m.reason,
            });
        }
        self.report.malformed += 1;
        if self.report.examples.len() < 20 {
            self.report.examples.push(m);
        }
        Ok(())
    }

    pub fn push(&mut self, r: HistoryRecord) {
        self.room = self.room.saturating_sub(1);
        self.records.push(r);
    }

    /// Claims room for `n` records about to be pushed: the import stops with
    /// [`ImportError::TooManyRecords`] before building them when they would pass the limit.
    pub fn reserve(&mut self, n: u64) -> Result<(), ImportError> {
        if n > self.room {
            return Err(ImportError::TooManyRecords { limit: self.limit });
        }
        Ok(())
    }

    /// [`Sink::push`] of a record parsed from a row: one before 1970 (a damaged year), with a
    /// time that is not a number, or that a history record may not hold (a key or type too
    /// long) is a malformed row, not a record.
    pub fn push_parsed(
        &mut self,
        file: &Path,
        line: u64,
        r: HistoryRecord,
    ) -> Result<(), ImportError> {
        if !(r.ts.is_finite() && r.ts >= 0.0) {
            return self.malformed(
                file,
                line,
                format!("time {} is before 1970 or not a number", r.ts),
            );
        }
        // What a history file may not hold (a key or type over `MAX_KEY_LEN`…) is not
        // imported: `eval`, `train` and `replay` would refuse the file.
        if let Err(e) = r.validate() {
            return self.malformed(file, line, e.to_string());
        }
        self.push(r);
        Ok(())
    }
}

/// The file's bytes, decompressed when they are gzip (told by the magic bytes `1f 8b`, not
/// the name; concatenated members are read as one stream), without a leading UTF-8
/// byte-order mark (editors and Excel write one; left in, it becomes part of the first key or
/// column name).
/// A CSV reader over `data` (read from `path`), fields trimmed, and its header row.
pub(crate) fn headed_csv<'a>(
    data: &'a [u8],
    path: &Path,
) -> Result<(csv::Reader<&'a [u8]>, csv::StringRecord), ImportError> {
    let mut rd = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(data);
    let header = rd
        .headers()
        .map_err(|e| ImportError::Format(format!("{}: {e}", path.display())))?
        .clone();
    Ok((rd, header))
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, ImportError> {
    let io = |source| ImportError::Io {
        path: path.to_owned(),
        source,
    };
    let mut data = std::fs::read(path).map_err(io)?;
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut plain = Vec::with_capacity(data.len().saturating_mul(4));
        std::io::Read::read_to_end(
            &mut flate2::read::MultiGzDecoder::new(&data[..]),
            &mut plain,
        )
        .map_err(|e| io(std::io::Error::new(e.kind(), format!("gzip: {e}"))))?;
        data = plain;
    }
    if data.starts_with(b"\xEF\xBB\xBF") {
        data.drain(..3);
    }
    Ok(data)
}

/// The file's name without a trailing `.gz` and without its extension
/// (`app_memory_percentiles.anon.d03.csv.gz` → `app_memory_percentiles.anon.d03`).
pub(crate) fn base_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() => stem.to_owned(),
        _ => name.to_owned(),
    }
}

/// Imports `inputs` in `format`; the records come back sorted by time (stable).
pub fn import(
    format: Format,
    inputs: &[PathBuf],
    opts: &ImportOptions,
) -> Result<(Vec<HistoryRecord>, ImportReport), ImportError> {
    if inputs.is_empty() {
        return Err(ImportError::Format("no input files".into()));
    }
    let limit = opts.max_records.unwrap_or(DEFAULT_MAX_RECORDS);
    let mut sink = Sink::new(opts.strict, limit);
    match format {
        Format::Azure2019 => azure2019::import(inputs, &mut sink)?,
        Format::Azure2021 => {
            for p in inputs {
                azure2021::import(p, &mut sink)?;
            }
        }
        Format::AzureLlm => {
            for p in inputs {
                azurellm::import(p, &mut sink)?;
            }
        }
        Format::Clf => {
            for p in inputs {
                clf::import(p, &mut sink)?;
            }
        }
        Format::Csv => {
            let mapping = opts.csv.as_ref().ok_or_else(|| {
                ImportError::Format(
                    "the csv format needs a column mapping (--time-col, --resource-col …)".into(),
                )
            })?;
            for p in inputs {
                csvmap::import(p, mapping, &mut sink)?;
            }
        }
    }
    let Sink {
        mut records,
        mut report,
        ..
    } = sink;
    if records.is_empty() {
        return Err(ImportError::NoRecords {
            malformed: report.malformed,
            first: report
                .examples
                .first()
                .map(|m| format!("{} line {}: {}", m.file, m.line, m.reason)),
        });
    }
    records.sort_by(|a, b| a.ts.total_cmp(&b.ts));
    if opts.named {
        for r in &mut records {
            name_needs(r);
        }
    }
    report.records = records.len() as u64;
    let keys: std::collections::HashSet<&str> =
        records.iter().map(|r| r.event.key.as_str()).collect();
    let resources: std::collections::HashSet<&str> = records
        .iter()
        .flat_map(|r| r.reads.iter().map(|x| x.resource.as_str()))
        .collect();
    report.keys = keys.len() as u64;
    report.resources = resources.len() as u64;
    report.span_s = match (records.first(), records.last()) {
        (Some(a), Some(b)) => b.ts - a.ts,
        _ => 0.0,
    };
    Ok((records, report))
}

/// The record's reads, named by its event (distinct, in the order read).
fn name_needs(r: &mut HistoryRecord) {
    for read in &r.reads {
        if !r.event.needs.contains(&read.resource) {
            r.event.needs.push(read.resource.clone());
        }
    }
}

/// A record for one execution that read one resource.
pub(crate) fn record(
    ts: f64,
    kind: &str,
    key: String,
    resource: prewarm_core::ResourceId,
    bytes: u64,
    duration_s: f64,
) -> HistoryRecord {
    HistoryRecord {
        ts,
        event: prewarm_core::Event {
            kind: kind.to_owned(),
            key,
            attrs: Default::default(),
            needs: Vec::new(),
        },
        capacity: None,
        reads: vec![prewarm_core::ReadAccess {
            resource,
            version: None,
            bytes,
        }],
        writes: Vec::new(),
        duration_s,
    }
}

/// The shared public traces: `$PREWARM_TRACES`, else `shared/traces` beside the checkout
/// (`manifest_dir` is the calling crate's `CARGO_MANIFEST_DIR`, two levels below the
/// workspace root). `None` (with a note) when absent — except under `CI`, where a missing
/// trace directory is a failure: the tests that replay real traces must not pass vacuously.
pub fn shared_traces(manifest_dir: &Path) -> Option<PathBuf> {
    let p = std::env::var_os("PREWARM_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../../../shared/traces"));
    if p.is_dir() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide the shared traces at {}",
        p.display()
    );
    eprintln!("no traces at {}: skipping", p.display());
    None
}
