//! Per-token rate limits on `POST /v1/events` (a GCRA token bucket per token: `governor`).
//! Each token may post `rate` events per second, in bursts of up to one second's worth or
//! one full batch, whichever is more; a body over its token's budget is refused whole
//! with 429 and `Retry-After` (the seconds until it would fit), and counted in
//! `prewarm_coordinator_events_rate_limited_total`. Tokens are keyed by a BLAKE3
//! fingerprint (no secret is kept); a coordinator without a token keeps one bucket for
//! every client, so a client cannot mint buckets by sending headers.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::predictive::MAX_BATCH;

/// Admission of `POST /v1/events` bodies (overload): at most `concurrent` bodies are read,
/// parsed and handled at once; a request beyond waits up to `wait` for a slot (its body
/// unread, so waiting costs no memory), then is shed with 503 `overloaded` and
/// `Retry-After`, counted in `prewarm_coordinator_requests_shed_total`. Memory for events
/// is then bounded by `concurrent` bodies, and a client's latency by `wait` plus one body.
#[derive(Clone, Copy, Debug)]
pub struct Ingest {
    /// Bodies in progress at once.
    pub concurrent: usize,
    /// How long a request waits for a slot before it is shed.
    pub wait: Duration,
}

impl Default for Ingest {
    fn default() -> Self {
        Self {
            concurrent: 16,
            wait: Duration::from_secs(2),
        }
    }
}

/// The events limit.
pub struct EventsLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    per_token: bool,
    rate: NonZeroU32,
}

/// Why a body may not be handled now.
#[derive(Debug, PartialEq)]
pub struct Limited {
    /// When it would fit.
    pub retry_after: Duration,
    /// The limit, events per second.
    pub rate: u32,
}

impl EventsLimit {
    /// `rate` events per second per token; `per_token`: the coordinator checks a token (else
    /// one bucket for all).
    pub fn new(rate: NonZeroU32, per_token: bool) -> Self {
        let burst = rate.max(NonZeroU32::new(MAX_BATCH as u32).expect("MAX_BATCH > 0"));
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            per_token,
            rate,
        }
    }

    /// Takes `events` from the bucket of the client whose `authorization` header this is.
    pub fn take(&self, authorization: Option<&[u8]>, events: usize) -> Result<(), Limited> {
        let key = match (self.per_token, authorization) {
            (true, Some(h)) => blake3::hash(h).to_hex()[..16].to_owned(),
            _ => String::new(),
        };
        let Some(n) = NonZeroU32::new(events.min(u32::MAX as usize) as u32) else {
            return Ok(());
        };
        let limited = |retry_after| Limited {
            retry_after,
            rate: self.rate.get(),
        };
        match self.limiter.check_key_n(&key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(limited(
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            // More than a burst: never fits (MAX_BATCH bounds batches, so only a lowered
            // batch limit gets here).
            Err(_) => Err(limited(Duration::from_secs(1))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_over_its_rate_waits_and_others_do_not() {
        let l = EventsLimit::new(NonZeroU32::new(100).unwrap(), true);
        // A full batch passes at once (the burst is one batch), then the bucket is empty.
        assert!(l.take(Some(b"Bearer a"), MAX_BATCH).is_ok());
        let e = l.take(Some(b"Bearer a"), 50).unwrap_err();
        assert_eq!(e.rate, 100);
        assert!(e.retry_after > Duration::from_millis(300), "{e:?}");
        assert!(e.retry_after <= Duration::from_millis(500), "{e:?}");
        // Another token has its own bucket; an empty body takes nothing.
        assert!(l.take(Some(b"Bearer b"), 500).is_ok());
        assert!(l.take(Some(b"Bearer a"), 0).is_ok());
        // Without token checking every client shares one bucket.
        let shared = EventsLimit::new(NonZeroU32::new(100).unwrap(), false);
        assert!(shared.take(Some(b"x"), MAX_BATCH).is_ok());
        assert!(shared.take(Some(b"y"), 1).is_err());
        assert!(shared.take(None, 1).is_err());
    }
}
