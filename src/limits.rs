//! Rate limits: a token bucket per client address (before credentials are looked at, so that a
//! flood of bad keys is limited too) and per credential (`rate_limit.*`), shared by every
//! worker of the process (`Ctx::limits`; `api::auth::require` applies them). Over a limit: 429
//! `rate_limited` with `Retry-After`.

use crate::error::ApiError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept at most; beyond, the full ones (idle clients) are forgotten.
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key: `burst` at once, refilled at `per_sec`.
pub struct Limiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    /// `None` when the limit is off (`per_sec` 0).
    pub fn new(per_sec: u32, burst: u32) -> Option<Limiter> {
        (per_sec > 0).then(|| Limiter {
            per_sec: per_sec.into(),
            burst: burst.max(1).into(),
            buckets: Mutex::default(),
        })
    }

    /// Takes a token for `key`, or says how long until one is there.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() >= MAX_BUCKETS && !b.contains_key(key) {
            let (rate, burst) = (self.per_sec, self.burst);
            b.retain(|_, v| v.tokens + now.duration_since(v.at).as_secs_f64() * rate < burst);
        }
        let bucket = b.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_sec;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            (1.0 - bucket.tokens) / self.per_sec,
        ))
    }
}

/// The 429 for a limit `what`, retry after `wait` (whole seconds, at least 1).
pub fn refusal(what: &str, wait: Duration) -> ApiError {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    ApiError::RateLimited {
        retry_after_secs: secs,
        message: format!("too many requests from this {what}: retry in {secs} s"),
    }
}

/// The limits of one app.
pub struct Limits {
    pub per_credential: Option<Limiter>,
    pub per_address: Option<Limiter>,
}

impl Limits {
    pub fn new(c: &crate::config::RateLimitConfig) -> Limits {
        Limits {
            per_credential: Limiter::new(c.per_credential_per_sec, c.per_credential_burst),
            per_address: Limiter::new(c.per_address_per_sec, c.per_address_burst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let l = Limiter::new(10, 3).unwrap();
        for _ in 0..3 {
            l.take("a").unwrap();
        }
        let wait = l.take("a").unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        l.take("b").unwrap();
        std::thread::sleep(Duration::from_millis(120));
        l.take("a").unwrap();
        assert!(Limiter::new(0, 5).is_none());
        let e = refusal("key", Duration::from_millis(1));
        assert_eq!(e.code().as_str(), "rate_limited");
    }
}
