//! Rate-limited logging of refusals: a hostile client must not turn each rejected request
//! into a log line (40,000 unauthenticated requests once made 80,071). At most [`BURST`]
//! lines per [`WINDOW`] per throttle; the next line after a quiet spell says how many were
//! suppressed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines allowed per window.
pub const BURST: u32 = 10;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// One kind of refusal's log budget.
#[derive(Debug)]
pub struct Throttle {
    state: Mutex<(Instant, u32, u64)>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }
}

impl Throttle {
    /// Whether to log now; `Some(n)`: yes, and `n` lines were suppressed before this one.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().expect("throttle lock poisoned");
        let now = Instant::now();
        if now.duration_since(s.0) >= WINDOW {
            *s = (now, 0, s.2);
        }
        if s.1 < BURST {
            s.1 += 1;
            let suppressed = std::mem::take(&mut s.2);
            Some(suppressed)
        } else {
            s.2 += 1;
            None
        }
    }
}

/// Logs a warning through `throttle` (with the count of suppressed ones).
#[macro_export]
macro_rules! warn_throttled {
    ($throttle:expr, $($arg:tt)+) => {
        if let Some(n) = $throttle.allow() {
            if n > 0 {
                tracing::warn!("{} (and {n} more like it suppressed)", format!($($arg)+));
            } else {
                tracing::warn!($($arg)+);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_lines_are_counted_not_logged() {
        let t = Throttle::default();
        let allowed = (0..1000).filter(|_| t.allow().is_some()).count();
        assert_eq!(allowed, BURST as usize);
        assert_eq!(t.state.lock().unwrap().2, 1000 - u64::from(BURST));
    }
}
