//! A recorded history as an event source: its events go through the predictive loop in
//! order, at recorded pace or faster, and the model observes each record after its event.

use std::sync::Arc;

use prewarm_core::HistoryRecord;

use crate::{Coordinator, EventIn};

/// Feeds the events of `records` (a history, time-ordered) through the predictive loop,
/// `speed` times faster than recorded (0: as fast as possible), and lets the model
/// observe each record after its event (as if its execution then reported back).
/// Returns the events fed.
pub async fn replay_events(c: &Arc<Coordinator>, records: &[HistoryRecord], speed: f64) -> u64 {
    let Some(first) = records.first() else {
        return 0;
    };
    let t0 = tokio::time::Instant::now();
    let mut n = 0;
    for r in records {
        if speed > 0.0 {
            let at = (r.ts - first.ts).max(0.0) / speed;
            tokio::time::sleep_until(t0 + std::time::Duration::from_secs_f64(at)).await;
        }
        let e = EventIn {
            ts: Some(r.ts),
            event: r.event.clone(),
            capacity: r.capacity.clone(),
        };
        c.handle_event(&e, true).await;
        if let Some(b) = &c.brain {
            c.observe(b, std::slice::from_ref(r)).await;
        }
        n += 1;
    }
    n
}
