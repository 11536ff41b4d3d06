//! The invariants, checked after every step against the ground truth (the committed
//! versions, restored from a clean store handle), and the settling that the liveness ones
//! need:
//! - every state an agent exposes at `states/<resource>/v<N>` has exactly the committed bytes
//!   of `<resource>@<N>` (a version never committed is a failure too);
//! - an agent's bytes in use and held never exceed its budget, nor do the bytes under its
//!   `states/` directory;
//! - a state the harness holds a lease on is still held, leased, and intact;
//! - every transfer ends: loads handed to an agent are acknowledged (ok or failed), requests
//!   to the coordinator answered, `ensure` calls answered within their wait.
//!
//! What is checked once, at the end of a seed, is in `drain.rs`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prewarm_core::{ResourceId, Version};

use crate::catalog::digest;
use crate::world::World;

/// How long settling may take before the work still running counts as hung.
const SETTLE: Duration = Duration::from_secs(30);

/// Every `states/…/v<N>` under `root`: (resource, version, path).
fn exposed(root: &Path) -> Vec<(ResourceId, Version, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name
                .strip_prefix('v')
                .and_then(|n| n.parse().ok())
                .and_then(Version::new);
            let rel = dir.strip_prefix(root).ok().and_then(|r| r.to_str());
            match (version, rel.map(ResourceId::new)) {
                (Some(v), Some(Ok(r))) => out.push((r, v, p)),
                _ if e.file_type().is_ok_and(|t| t.is_dir()) => stack.push(p),
                _ => out.push((
                    ResourceId::new("unexpected").expect("id"),
                    Version::FIRST,
                    p,
                )),
            }
        }
    }
    out
}

/// Bytes of the regular files at `p` (a file or a tree).
fn bytes_under(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| bytes_under(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) if m.is_file() => m.len(),
        _ => 0,
    }
}

impl World {
    /// The invariants that hold at every moment, then the operations that ended.
    pub async fn check(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].up.is_some() {
                self.check_budget_and_leases(i)?;
                self.check_exposed(i).await?;
            }
        }
        self.reap(false).await
    }

    fn check_budget_and_leases(&self, i: usize) -> Result<(), String> {
        let up = self.nodes[i].up.as_ref().expect("running");
        let (held, used, budget) = up.agent.inventory();
        let sum: u64 = held.iter().map(|(h, _)| h.bytes).sum();
        if used > budget || sum > budget {
            return Err(format!(
                "c{i} uses {used} B (holds {sum} B) over its budget of {budget} B"
            ));
        }
        for k in &up.leases {
            let there = held
                .iter()
                .any(|(h, _)| h.resource == k.resource && h.version == k.version);
            if !there || !up.agent.leased(&k.resource, k.version) {
                return Err(format!(
                    "c{i} let go of {}@{} while it was leased (lease {})",
                    k.resource, k.version, k.id
                ));
            }
        }
        Ok(())
    }

    async fn check_exposed(&mut self, i: usize) -> Result<(), String> {
        let root = self.nodes[i].cfg.cache_dir.join("states");
        let budget = self.nodes[i].cfg.cache_size;
        let mut on_disk = 0;
        for (r, v, p) in exposed(&root) {
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue; // evicted meanwhile
            };
            if r.as_str() == "unexpected" {
                return Err(format!(
                    "c{i} has something unexpected in states/: {}",
                    p.display()
                ));
            }
            let want = self
                .cat
                .reference(&r, v)
                .await
                .map_err(|e| format!("c{i} exposes {r}@{v}: {e}"))?;
            let key = (
                p.clone(),
                meta.ino(),
                meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
            );
            if self.seen.get(&key) != Some(&want) {
                // Read twice before calling it wrong: the state may have been replaced
                // (evicted, installed again) while it was read.
                let same = digest(&p).ok() == Some(want) || digest(&p).ok() == Some(want);
                if !same && p.exists() {
                    return Err(format!(
                        "c{i} exposes {r}@{v} at {} with bytes that differ from the committed version",
                        p.display()
                    ));
                }
                self.seen.insert(key, want);
                self.tally.compared += 1;
            }
            on_disk += bytes_under(&p);
        }
        if on_disk > budget {
            return Err(format!(
                "c{i} has {on_disk} B under states/, over its budget of {budget} B"
            ));
        }
        Ok(())
    }

    /// Lets every link deliver what it held and waits until all work has ended: the
    /// harness's operations, and every load handed to an agent acknowledged. The links'
    /// faults are off meanwhile (and stay off while `quiet`).
    pub async fn settle(&mut self) -> Result<(), String> {
        let links: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|n| n.up.as_ref().map(|u| u.link.clone()))
            .collect();
        for l in &links {
            l.calm(true);
            l.flush();
        }
        self.reap(true).await?;
        let t0 = Instant::now();
        loop {
            let busy: Vec<String> = links
                .iter()
                .filter(|l| {
                    let s = l.stats();
                    s.started != s.finished || l.holding() > 0
                })
                .map(|l| l.agent.config().name.to_string())
                .collect();
            if busy.is_empty() {
                break;
            }
            if t0.elapsed() > SETTLE {
                return Err(format!("hang: loads on {busy:?} were never acknowledged"));
            }
            links.iter().for_each(|l| l.flush());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for l in &links {
            l.calm(self.quiet);
        }
        Ok(())
    }
}
