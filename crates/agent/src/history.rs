//! The agent's history log: every `ensure` call as one line of the shared history format
//! (JSON Lines, `prewarm_core::HistoryRecord`), appended by a background task and flushed at
//! least once a second, so `prewarm train` can learn from what executions really needed.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use prewarm_core::{HistoryRecord, HistoryWriter};
use tokio::sync::mpsc;

/// Records waiting to be written before new ones are dropped (and counted).
const QUEUE: usize = 65_536;

/// Handle to the log.
pub struct HistoryLog {
    tx: mpsc::Sender<HistoryRecord>,
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
        let (tx, mut rx) = mpsc::channel::<HistoryRecord>(QUEUE);
        let p = path.clone();
        tokio::spawn(async move {
            let mut w = HistoryWriter::new(std::io::BufWriter::new(file));
            loop {
                let r = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
                match r {
                    Ok(Some(rec)) => {
                        if let Err(e) = w.write(&rec) {
                            tracing::warn!("history {}: {e}", p.display());
                        }
                        continue;
                    }
                    Ok(None) => {
                        let _ = w.into_inner().map(|mut f| f.flush());
                        return;
                    }
                    Err(_) => {}
                }
                // Idle for a second: flush what was written.
                if let Err(e) = w.flush() {
                    tracing::warn!("history {}: {e}", p.display());
                }
            }
        });
        Ok(HistoryLog { tx, path })
    }

    /// Queues a record (dropped with a warning when the writer is far behind).
    pub fn log(&self, r: HistoryRecord) {
        if self.tx.try_send(r).is_err() {
            tracing::warn!("history log queue full: record dropped");
        }
    }
}
