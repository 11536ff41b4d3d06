//! The clock decisions and history records are timed by: the system's, or a manual one that
//! a test (or a simulation driving real processes) sets, so that a live run and a replay see
//! the same times.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Unix seconds, from the system or set by hand.
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<AtomicU64>>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock(None)
    }

    /// A clock that reads `start` until [`Clock::set`].
    pub fn manual(start: f64) -> Self {
        Clock(Some(Arc::new(AtomicU64::new(start.to_bits()))))
    }

    /// Now, Unix seconds.
    pub fn now(&self) -> f64 {
        match &self.0 {
            None => crate::unix_now(),
            Some(t) => f64::from_bits(t.load(Ordering::Acquire)),
        }
    }

    /// Sets a manual clock (no effect on the system clock).
    pub fn set(&self, t: f64) {
        if let Some(c) = &self.0 {
            c.store(t.to_bits(), Ordering::Release);
        }
    }

    /// Now, whole Unix milliseconds (file times, manifests' creation times).
    pub fn now_ms(&self) -> u64 {
        (self.now() * 1e3).max(0.0) as u64
    }

    /// Whether it is set by hand.
    pub fn is_manual(&self) -> bool {
        self.0.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clocks_are_shared_and_the_system_one_moves() {
        let c = Clock::manual(5.0);
        let d = c.clone();
        d.set(7.5);
        assert_eq!(c.now(), 7.5);
        assert_eq!(c.now_ms(), 7500);
        assert!(Clock::system().now() > 1.7e9);
        Clock::system().set(1.0); // ignored
        assert!(Clock::system().now() > 1.7e9);
    }
}
