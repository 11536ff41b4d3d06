//! The demo's first two stages: every state's first version snapshotted into a store, and
//! the GRU trained on the workload's history.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prewarm_predict::neural::{Arch, Model, TrainOptions, train};
use prewarm_snapshot::Snapshotter;
use prewarm_store::Store;

use crate::dataset::{Rng, text_fill};
use crate::workload::{Fill, Workload};
use crate::{DemoError, Settings};

/// The prepared store and what the served runs need of it.
pub struct Prepared {
    /// Where it is (each run copies it).
    pub store: PathBuf,
    /// Initial contents of the states uploads rewrite.
    pub contents: HashMap<usize, Vec<u8>>,
}

/// Snapshots every state's first version into `dir/store`.
pub async fn store(a: &Settings, work: &Workload, dir: &Path) -> Result<Prepared, DemoError> {
    let t = Instant::now();
    let base = dir.join("store");
    let location = base.to_str().ok_or_else(|| DemoError::Io {
        what: format!("{} is not UTF-8", base.display()),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let store = Arc::new(Store::open_or_create(location).await?);
    let snap = Snapshotter::new(store);
    let mut contents = HashMap::new();
    let rewritten: HashSet<usize> = work.uploads.iter().map(|u| u.state).collect();
    for (i, s) in work.states.iter().enumerate() {
        let mut buf = vec![0u8; s.bytes as usize];
        let mut rng = Rng::new(a.seed ^ (i as u64 + 1) << 20);
        match s.fill {
            Fill::Text => text_fill(&mut rng, &mut buf),
            Fill::Random => rng.fill(&mut buf),
        }
        if rewritten.contains(&i) {
            contents.insert(i, buf.clone());
        }
        snap.commit_bytes(&s.id, Bytes::from(buf))
            .await
            .map_err(|source| DemoError::Snapshot {
                id: s.id.clone(),
                source: Box::new(source),
            })?;
    }
    a.say(format!(
        "[1/5] snapshotted {} states into the store: {:.1} s",
        work.states.len(),
        t.elapsed().as_secs_f64()
    ));
    Ok(Prepared {
        store: base,
        contents,
    })
}

/// Trains the GRU on the history before the served part (printing epochs with progress on).
pub async fn model(a: &Settings, work: &Workload) -> Result<Model, DemoError> {
    let history = work.history(prewarm_core::Clock::system().now());
    let t = Instant::now();
    let mut o = TrainOptions::new(Arch::GRU);
    o.time_budget = Some(a.train_budget);
    o.seed = a.seed;
    let (progress, records) = (a.progress, history.len());
    let model = tokio::task::spawn_blocking(move || {
        train(&history, &o, &mut |p| {
            if let (true, Some(v)) = (progress, p.validation_loss) {
                println!(
                    "      epoch {}/{}: training loss {:.3}, validation loss {v:.3}",
                    p.epoch, p.epochs, p.loss
                );
            }
        })
    })
    .await?
    .map_err(DemoError::Train)?;
    let summary = &model.config.training;
    a.say(format!(
        "[2/5] trained a GRU (embeddings 64, hidden 128) on {records} history records: {} epochs in {:.1} s, validation top-1 {:.1}%, top-5 {:.1}%",
        summary.epochs,
        t.elapsed().as_secs_f64(),
        100.0 * summary.validation_top1,
        100.0 * summary.validation_top5
    ));
    Ok(model)
}
