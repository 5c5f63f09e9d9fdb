//! Load limits of `serve`: per-key rate limits (token buckets: 429 with
//! `Retry-After`), a cap on requests in flight (503 at once beyond it, not
//! a queue that grows until everything times out) and a deadline per
//! request (503 when it passes).
//!
//! The cap is a semaphore's `try_acquire`, never a wait. The deadline
//! (`request_timeout`) is checked where engine work starts
//! (`Bound::blocking`): work not started by then is refused (503, nothing
//! changed), and work started runs to its end, because a future dropped by a
//! timer leaves its blocking write running: the answer would say "failed"
//! and the write commit later. Only `GET` requests are also cut off by a
//! timer.
//!
//! The token bucket is a dozen lines; a crate for it would bring more code
//! than it saves.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Request limits (config keys of the same names).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sustained requests per second per API key.
    pub rate_limit_per_sec: f64,
    /// Requests a key may make at once after being idle.
    pub rate_limit_burst: f64,
    /// Requests being served at once; more get 503.
    pub max_in_flight: usize,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate_limit_per_sec: 100.0,
            rate_limit_burst: 200.0,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Token buckets by key.
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_sec` sustained, up to `burst` at once.
    pub fn new(per_sec: f64, burst: f64) -> Self {
        RateLimiter {
            per_sec: per_sec.max(f64::MIN_POSITIVE),
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token of `key` at `now`; when none is left, how long until
    /// one is.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        let elapsed = now.saturating_duration_since(*at).as_secs_f64();
        *tokens = (*tokens + elapsed * self.per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_the_sustained_rate_per_key() {
        let l = RateLimiter::new(2.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.take("a", t0).unwrap();
        }
        let wait = l.take("a", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        l.take("b", t0).unwrap();
        // Half a second later one token has come back, not more.
        let t1 = t0 + Duration::from_millis(500);
        l.take("a", t1).unwrap();
        assert!(l.take("a", t1).is_err());
        // Idle for long: back to the burst, never above it.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            l.take("a", t2).unwrap();
        }
        assert!(l.take("a", t2).is_err());
    }
}
