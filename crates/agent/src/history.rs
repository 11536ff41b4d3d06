//! The agent's history log: every `ensure` call as one line of the shared history format
//! (JSON Lines, `prewarm_core::HistoryRecord`), so `prewarm train` can learn from what
//! executions really needed. Calls only push onto a queue (no task wake-up on the `ensure`
//! path: on 2 vCPUs a cross-thread wake-up per call showed in the hit latency); a background
//! task drains it every 200 ms, appends the batch to the file and hands it on to the
//! coordinator's model (see [`HistoryLog::take_feed`]; dropped with a warning when that
//! falls behind: the file keeps everything). The file is rotated when it passes its size
//! limit ([`MAX_HISTORY_BYTES`] by default): `history.jsonl` becomes `history.jsonl.1`
//! (replacing the previous one), so the history on disk stays within twice the limit.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prewarm_core::{HistoryRecord, HistoryWriter};

/// Records waiting to be written before new ones are dropped (and warned about).
const QUEUE: usize = 65_536;
/// How often the queue is written out.
const TICK: Duration = Duration::from_millis(200);

/// Batches waiting for the coordinator before new ones are dropped.
const FEED: usize = 64;

/// Size at which the history file is rotated.
pub const MAX_HISTORY_BYTES: u64 = 64 << 20;

/// Handle to the log.
pub struct HistoryLog {
    queue: Arc<Mutex<Vec<HistoryRecord>>>,
    feed: Mutex<Option<tokio::sync::mpsc::Receiver<Vec<HistoryRecord>>>>,
    /// Where it is written.
    pub path: PathBuf,
}

fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// `path` becomes `path.1` (replacing it); a fresh `path` is opened.
fn rotate(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    std::fs::rename(path, std::path::PathBuf::from(old))?;
    open_append(path)
}

impl HistoryLog {
    /// Opens `path` for appending and starts the writer task, rotating at `max_bytes`.
    pub fn start(path: PathBuf, max_bytes: u64) -> std::io::Result<Self> {
        let file = open_append(&path)?;
        let mut size = file.metadata()?.len();
        let queue: Arc<Mutex<Vec<HistoryRecord>>> = Arc::default();
        let (q, p) = (Arc::downgrade(&queue), path.clone());
        let (feed_tx, feed_rx) = tokio::sync::mpsc::channel(FEED);
        tokio::spawn(async move {
            let mut w = std::io::BufWriter::new(file);
            loop {
                tokio::time::sleep(TICK).await;
                let Some(q) = q.upgrade() else {
                    let _ = w.flush();
                    return;
                };
                let batch = std::mem::take(&mut *q.lock().expect("history lock poisoned"));
                drop(q);
                if batch.is_empty() {
                    continue;
                }
                let mut lines = Vec::new();
                let encoded = {
                    let mut lw = HistoryWriter::new(&mut lines);
                    batch.iter().try_for_each(|rec| lw.write(rec))
                };
                let r = encoded
                    .and_then(|_| w.write_all(&lines))
                    .and_then(|_| w.flush());
                match r {
                    Ok(()) => size += lines.len() as u64,
                    Err(e) => tracing::warn!("history {}: {e}", p.display()),
                }
                if size >= max_bytes {
                    match rotate(&p) {
                        Ok(f) => {
                            w = std::io::BufWriter::new(f);
                            size = 0;
                        }
                        Err(e) => tracing::warn!("history {}: rotation failed: {e}", p.display()),
                    }
                }
                if let Err(tokio::sync::mpsc::error::TrySendError::Full(b)) =
                    feed_tx.try_send(batch)
                {
                    tracing::warn!(
                        "the coordinator is behind on history: {} records not sent",
                        b.len()
                    );
                }
            }
        });
        Ok(HistoryLog {
            queue,
            feed: Mutex::new(Some(feed_rx)),
            path,
        })
    }

    /// The batches written, for sending to the coordinator (once).
    pub fn take_feed(&self) -> Option<tokio::sync::mpsc::Receiver<Vec<HistoryRecord>>> {
        self.feed.lock().expect("history lock poisoned").take()
    }

    /// Queues a record (dropped with a warning when the writer is far behind).
    pub fn log(&self, r: HistoryRecord) {
        let mut q = self.queue.lock().expect("history lock poisoned");
        if q.len() >= QUEUE {
            tracing::warn!("history log queue full: record dropped");
            return;
        }
        q.push(r);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn the_history_file_is_rotated_past_its_limit() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("history.jsonl");
        let log = HistoryLog::start(path.clone(), 4096).unwrap();
        let rec = |i: u32| HistoryRecord {
            ts: f64::from(i),
            event: prewarm_core::Event {
                kind: "http".into(),
                key: format!("key-{i}"),
                attrs: Default::default(),
                needs: Vec::new(),
            },
            capacity: None,
            reads: vec![],
            writes: vec![],
            duration_s: 0.0,
        };
        for round in 0..8 {
            for i in 0..20 {
                log.log(rec(round * 20 + i));
            }
            tokio::time::sleep(TICK + TICK / 2).await;
        }
        let old = d.path().join("history.jsonl.1");
        assert!(old.exists(), "rotated");
        let (a, b) = (
            std::fs::metadata(&path).unwrap().len(),
            std::fs::metadata(&old).unwrap().len(),
        );
        assert!(a < 4096 * 2 && b < 4096 * 2, "{a} {b}");
        // Every line of both files is a record.
        for f in [&path, &old] {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(prewarm_core::HistoryReader::new(text.as_bytes()).all(|r| r.is_ok()));
        }
    }
}
