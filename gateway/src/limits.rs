//! Per-user action rate limits: a token bucket per user on this node, and
//! the cluster-wide limit's rule ([`gcra`]), which the brokers keep per user
//! (on Redis in one script, so every node shares it).

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

/// GCRA (the generic cell rate algorithm): with `tat` the user's
/// theoretical arrival time (ms; `None` before the first action) and `now`
/// (ms), whether one more action fits `per_sec` with bursts of `burst`, and
/// the new `tat` to store when it does. The Redis broker runs the same rule
/// in a script (`RATE_LUA`), so that every node shares one limit per user.
pub fn gcra(tat: Option<f64>, now: f64, per_sec: f64, burst: u32) -> Option<f64> {
    let interval = 1000.0 / per_sec.max(0.001);
    let next = tat.unwrap_or(now).max(now) + interval;
    (next - f64::from(burst.max(1)) * interval <= now).then_some(next)
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

    #[test]
    fn gcra_allows_the_burst_then_one_per_interval() {
        let (rate, burst) = (2.0, 3);
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(gcra(tat, 0.0, rate, burst).expect("within the burst"));
        }
        assert_eq!(gcra(tat, 0.0, rate, burst), None, "the burst is spent");
        assert_eq!(
            gcra(tat, 499.0, rate, burst),
            None,
            "not yet a whole interval"
        );
        let later = gcra(tat, 500.0, rate, burst).expect("one interval later");
        assert_eq!(gcra(Some(later), 500.0, rate, burst), None);
        // Idle long enough, the whole burst is back, not more.
        let mut tat = Some(later);
        for _ in 0..3 {
            tat = Some(gcra(tat, 10_000.0, rate, burst).expect("the burst again"));
        }
        assert_eq!(gcra(tat, 10_000.0, rate, burst), None);
    }
}
