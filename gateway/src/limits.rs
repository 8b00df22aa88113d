//! Per-user action rate limits (a token bucket per user, on this node).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Users tracked before idle buckets are pruned.
const PRUNE_ABOVE: usize = 10_000;

/// A token bucket per user: `burst` actions at once, refilled at `rate` per second.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter allowing `rate` actions per second with bursts of `burst`.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate: rate.max(0.001),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `user`; `false` when the user is over the limit.
    pub fn allow(&self, user: &str) -> bool {
        self.allow_at(user, Instant::now())
    }

    fn allow_at(&self, user: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(user.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.allow_at("a", t0)));
        assert!(!limiter.allow_at("a", t0));
        assert!(limiter.allow_at("b", t0), "other users are unaffected");
        assert!(limiter.allow_at("a", t0 + Duration::from_millis(500)));
        assert!(!limiter.allow_at("a", t0 + Duration::from_millis(500)));
    }
}
