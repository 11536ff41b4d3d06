//! The agent's history log: every `ensure` call as one line of the shared history format
//! (JSON Lines, `prewarm_core::HistoryRecord`), so `prewarm train` can learn from what
//! executions really needed. Calls only push onto a queue (no task wake-up on the `ensure`
//! path: on 2 vCPUs a cross-thread wake-up per call showed in the hit latency); a background
//! task drains it every 200 ms, appends the batch to the file and hands it on to the
//! coordinator's model (see [`HistoryLog::take_feed`]; dropped with a warning when that
//! falls behind: the file keeps everything).

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

/// Handle to the log.
pub struct HistoryLog {
    queue: Arc<Mutex<Vec<HistoryRecord>>>,
    feed: Mutex<Option<tokio::sync::mpsc::Receiver<Vec<HistoryRecord>>>>,
    /// Where it is written.
    pub path: PathBuf,
}

impl HistoryLog {
    /// Opens `path` for appending and starts the writer task.
    pub fn start(path: PathBuf) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let queue: Arc<Mutex<Vec<HistoryRecord>>> = Arc::default();
        let (q, p) = (Arc::downgrade(&queue), path.clone());
        let (feed_tx, feed_rx) = tokio::sync::mpsc::channel(FEED);
        tokio::spawn(async move {
            let mut w = HistoryWriter::new(std::io::BufWriter::new(file));
            loop {
                tokio::time::sleep(TICK).await;
                let Some(q) = q.upgrade() else {
                    let _ = w.into_inner().map(|mut f| f.flush());
                    return;
                };
                let batch = std::mem::take(&mut *q.lock().expect("history lock poisoned"));
                drop(q);
                if batch.is_empty() {
                    continue;
                }
                let r = batch
                    .iter()
                    .try_for_each(|rec| w.write(rec))
                    .and_then(|_| w.flush());
                if let Err(e) = r {
                    tracing::warn!("history {}: {e}", p.display());
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
