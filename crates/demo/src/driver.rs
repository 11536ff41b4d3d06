//! The driver of a served run: what every execution shares (the coordinator's and agents'
//! HTTP endpoints, the states' current versions, what was read and prefetched where), and
//! one execution — its event POSTed, then its reads `ensure`d where the coordinator placed
//! it, each cold read counted with its cause.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prewarm_agent::client::{ClientError, EnsureClient};
use prewarm_core::ResourceId;

use crate::phase::{ColdCauses, ExecResult};
use crate::workload::{Exec, Workload};

/// Why an execution failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The coordinator could not be called.
    #[error("POST /v1/events: {0}")]
    Post(ClientError),
    /// An agent's `ensure` could not be called.
    #[error("ensure: {0}")]
    Ensure(ClientError),
    /// An answer was not the JSON expected.
    #[error("an answer that is not JSON: {0}")]
    Answer(#[from] serde_json::Error),
    /// The coordinator placed the event nowhere the driver knows.
    #[error("the coordinator placed the event on no known capacity")]
    Unplaced,
}

/// A few kept-alive connections to one HTTP endpoint (an `EnsureClient` serves one call at
/// a time; executions run concurrently).
pub struct Pool {
    addr: String,
    idle: Mutex<Vec<EnsureClient>>,
}

impl Pool {
    /// A pool for `addr` (host:port).
    pub fn new(addr: String) -> Self {
        Self {
            addr,
            idle: Mutex::default(),
        }
    }

    async fn call(&self, post: Option<Bytes>, path: &str) -> Result<Bytes, ClientError> {
        let c = self
            .idle
            .lock()
            .expect("pool lock poisoned")
            .pop()
            .unwrap_or_else(|| EnsureClient::new(self.addr.clone(), None));
        let r = match post {
            Some(body) => c.post_json(path, body).await,
            None => c.get(path).await,
        };
        self.idle.lock().expect("pool lock poisoned").push(c);
        r
    }
}

/// (capacity, state) → (time, version needed) of each read, seconds since the start.
pub type Reads = HashMap<(usize, usize), Vec<(f64, u64)>>;

/// What the executions record, behind locks.
pub struct Shared {
    /// State → its newest committed version.
    pub versions: Mutex<HashMap<usize, u64>>,
    /// (capacity, state) → times it was read, seconds since the start.
    pub reads: Mutex<Reads>,
    /// Why reads were cold.
    pub cold: Mutex<ColdCauses>,
    /// (capacity, state, bytes, when).
    pub prefetched: Mutex<Vec<(usize, usize, u64, f64)>>,
    /// Every finished execution.
    pub done: Mutex<Vec<ExecResult>>,
}

impl Shared {
    /// Nothing recorded yet; each of `states` at version 1.
    pub fn new(states: usize) -> Self {
        Self {
            versions: Mutex::new((0..states).map(|i| (i, 1)).collect()),
            reads: Mutex::default(),
            cold: Mutex::default(),
            prefetched: Mutex::default(),
            done: Mutex::default(),
        }
    }
}

/// What every execution of a run shares.
pub struct Driver {
    /// The workload.
    pub work: std::sync::Arc<Workload>,
    /// The served part's start.
    pub start: tokio::time::Instant,
    /// The coordinator's HTTP endpoint.
    pub coordinator: Pool,
    /// Each agent's.
    pub apis: Vec<Pool>,
    /// Capacity name → index into `apis`.
    pub names: HashMap<String, usize>,
    /// State id → index into the workload's states.
    pub index: HashMap<ResourceId, usize>,
    /// What the executions record.
    pub shared: Shared,
}

impl Driver {
    /// When workload time `t` falls in this run.
    pub fn at(&self, t: f64) -> tokio::time::Instant {
        self.start + Duration::from_secs_f64((t - self.work.split).max(0.0))
    }

    /// Counts why the read of `state` (needing `version`) on `cap` at `t` was not a hit.
    fn count_cold(&self, cap: usize, state: usize, version: u64, t: f64) {
        let prev = self
            .shared
            .reads
            .lock()
            .expect("lock")
            .get(&(cap, state))
            .and_then(|v| {
                v.iter()
                    .copied()
                    .filter(|p| p.0 < t)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
            });
        let since = prev.map_or(f64::NEG_INFINITY, |p| p.0);
        let prefetched = self
            .shared
            .prefetched
            .lock()
            .expect("lock")
            .iter()
            .any(|&(c, s, _, w)| c == cap && s == state && w >= since && w <= t);
        let mut cold = self.shared.cold.lock().expect("lock");
        match prev {
            _ if prefetched => cold.late += 1,
            None => cold.first_use += 1,
            Some((_, v)) if version > v => cold.new_version += 1,
            Some(_) => cold.evicted += 1,
        }
    }

    /// Posts `e`'s event and records the predictive transfers the answer lists; returns the
    /// capacity the coordinator placed it on.
    async fn post_event(&self, e: &Exec) -> Result<usize, ExecError> {
        let body = serde_json::json!({"event": {"type": e.kind, "key": e.key}});
        let answer = self
            .coordinator
            .call(Some(Bytes::from(body.to_string())), "/v1/events")
            .await
            .map_err(ExecError::Post)?;
        let answer: serde_json::Value = serde_json::from_slice(&answer)?;
        let cap = answer["placement"]["capacity"]
            .as_str()
            .and_then(|c| self.names.get(c).copied())
            .ok_or(ExecError::Unplaced)?;
        let now = self.start.elapsed().as_secs_f64();
        for t in answer["transfers"].as_array().into_iter().flatten() {
            let state = t["resource"]
                .as_str()
                .and_then(|r| ResourceId::new(r).ok())
                .and_then(|r| self.index.get(&r).copied());
            if let (Some(state), Some(bytes)) = (state, t["bytes"].as_u64()) {
                self.shared
                    .prefetched
                    .lock()
                    .expect("lock")
                    .push((cap, state, bytes, now));
            }
        }
        Ok(cap)
    }

    /// Whether `state` (at least `version`) was installed on `cap` when asked for.
    async fn ensure(
        &self,
        e: &Exec,
        cap: usize,
        state: usize,
        version: u64,
    ) -> Result<bool, ExecError> {
        let path = format!(
            "/v1/states/{}?min_version={version}&key={}&type={}&timeout_ms=30000",
            self.work.states[state].id, e.key, e.kind
        );
        let body = self.apis[cap]
            .call(None, &path)
            .await
            .map_err(ExecError::Ensure)?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        Ok(v["hit"].as_bool().unwrap_or(false))
    }

    /// Posts `e`'s event, waits for its start, runs it where the coordinator placed it.
    pub async fn execute(&self, e: &Exec, exec_at: tokio::time::Instant) -> Result<(), ExecError> {
        let (work, shared) = (&self.work, &self.shared);
        let cap = self.post_event(e).await?;
        tokio::time::sleep_until(exec_at).await;
        let t = self.start.elapsed().as_secs_f64();
        let began = Instant::now();
        let versions: Vec<u64> = {
            let v = shared.versions.lock().expect("lock");
            e.reads.iter().map(|r| v[r]).collect()
        };
        let calls = e
            .reads
            .iter()
            .zip(&versions)
            .map(|(&r, &version)| self.ensure(e, cap, r, version));
        let hits = futures::future::join_all(calls).await;
        let ready_ms = began.elapsed().as_secs_f64() * 1e3;
        for ((&r, &version), hit) in e.reads.iter().zip(&versions).zip(&hits) {
            if matches!(hit, Ok(false)) {
                self.count_cold(cap, r, version, t);
            }
        }
        {
            let mut reads = shared.reads.lock().expect("lock");
            for (&r, &version) in e.reads.iter().zip(&versions) {
                reads.entry((cap, r)).or_default().push((t, version));
            }
        }
        let failed = hits.iter().any(|h| h.is_err());
        shared.done.lock().expect("lock").push(ExecResult {
            t: e.t - work.split,
            warm: !failed && hits.iter().all(|h| matches!(h, Ok(true))),
            ready_ms,
            failed,
        });
        Ok(())
    }
}
