//! Pacing of predictive transfers: a bandwidth limit (bytes per second, a token bucket with
//! one request of burst), and yielding to on-demand fetches: while any on-demand transfer is
//! running, predictive ones issue no new requests (unless an execution now waits for them:
//! "boosted").

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Shared by every transfer of one agent.
#[derive(Debug, Default)]
pub struct Priorities {
    /// On-demand transfers running.
    on_demand: AtomicUsize,
}

impl Priorities {
    /// Marks an on-demand transfer running until the guard drops.
    pub fn on_demand(self: &Arc<Self>) -> OnDemandGuard {
        self.on_demand.fetch_add(1, Ordering::AcqRel);
        OnDemandGuard(self.clone())
    }

    /// On-demand transfers running now.
    pub fn urgent(&self) -> usize {
        self.on_demand.load(Ordering::Acquire)
    }
}

/// See [`Priorities::on_demand`].
pub struct OnDemandGuard(Arc<Priorities>);

impl Drop for OnDemandGuard {
    fn drop(&mut self) {
        self.0.on_demand.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Paces one predictive transfer.
pub struct Pacer {
    /// Bytes per second; `None` = unlimited.
    rate: Option<u64>,
    /// Shared limiter state: when the link is next free for predictive bytes.
    next_free: Arc<std::sync::Mutex<Instant>>,
    priorities: Arc<Priorities>,
    /// An execution waits for this transfer: stop yielding.
    boosted: Arc<AtomicBool>,
}

impl Pacer {
    /// A pacer sharing `next_free` (one per agent) and `priorities`.
    pub fn new(
        rate: Option<u64>,
        next_free: Arc<std::sync::Mutex<Instant>>,
        priorities: Arc<Priorities>,
        boosted: Arc<AtomicBool>,
    ) -> Self {
        Pacer {
            rate,
            next_free,
            priorities,
            boosted,
        }
    }

    /// Waits until `bytes` more may be requested.
    pub async fn take(&self, bytes: u64) {
        if self.boosted.load(Ordering::Acquire) {
            return;
        }
        while self.priorities.urgent() > 0 && !self.boosted.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if self.boosted.load(Ordering::Acquire) {
            return; // an execution waits: no bandwidth limit
        }
        let Some(rate) = self.rate.filter(|r| *r > 0) else {
            return;
        };
        let start = {
            let mut next = self.next_free.lock().expect("pacer lock poisoned");
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
            start
        };
        let now = Instant::now();
        if start > now {
            tokio::time::sleep(start - now).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limits_rate_and_yields_to_on_demand() {
        let pr = Arc::new(Priorities::default());
        let next = Arc::new(std::sync::Mutex::new(Instant::now()));
        let boost = Arc::new(AtomicBool::new(false));
        let p = Pacer::new(Some(1_000_000), next, pr.clone(), boost.clone());
        let t0 = tokio::time::Instant::now();
        for _ in 0..5 {
            p.take(1_000_000).await;
        }
        // First request goes at once; four more at 1 MB/s.
        assert_eq!(t0.elapsed().as_secs(), 4);

        let g = pr.on_demand();
        let waiting = tokio::spawn(async move { p.take(1).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "predictive must wait while on-demand runs"
        );
        boost.store(true, Ordering::Release);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(waiting.is_finished(), "a boosted transfer stops yielding");
        drop(g);
    }
}
