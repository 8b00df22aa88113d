//! Reconnect delays: exponential, capped, with full jitter applied after the
//! cap.
//!
//! Socket.IO jitters before capping, so after a long outage every client's
//! delay is the cap and they all retry in lockstep. Here the cap bounds the
//! window and the delay is drawn uniformly from `0..=window`, so a crowd of
//! clients spreads over the whole window at every attempt.

use rand::{Rng, RngExt};

/// Backoff parameters, overridable by the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Window of the first retry, in ms: the first retry is fast.
    pub initial_ms: u64,
    /// Largest window, in ms.
    pub max_ms: u64,
    /// Growth of the window per attempt.
    pub factor: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_ms: 250,
            max_ms: 10_000,
            factor: 2,
        }
    }
}

impl Backoff {
    /// The window for a 0-based attempt: `min(max, initial * factor^attempt)`.
    pub fn window(&self, attempt: u32) -> u64 {
        let growth = u64::from(self.factor).saturating_pow(attempt);
        self.initial_ms.saturating_mul(growth).min(self.max_ms)
    }

    /// The delay before a 0-based attempt: uniform in `0..=window(attempt)`.
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> u64 {
        rng.random_range(0..=self.window(attempt))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng as StdRng;

    use super::*;

    #[test]
    fn window_grows_then_stays_at_the_cap() {
        let b = Backoff::default();
        assert_eq!(b.window(0), 250);
        assert_eq!(b.window(1), 500);
        assert_eq!(b.window(5), 8_000);
        assert_eq!(b.window(6), 10_000);
        assert_eq!(b.window(600), 10_000);
    }

    #[test]
    fn capped_delays_spread_over_the_whole_window() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<u64> = (0..1000).map(|_| b.delay(40, &mut rng)).collect();
        let below_half = delays.iter().filter(|d| **d < 5_000).count();
        assert!((400..600).contains(&below_half), "not spread: {below_half}");
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props {
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng as StdRng;

    use super::*;

    proptest! {
        #[test]
        fn delay_never_exceeds_the_window(attempt in 0u32..200, seed: u64, initial in 1u64..5_000, max in 1u64..100_000) {
            let b = Backoff { initial_ms: initial, max_ms: max, factor: 2 };
            let mut rng = StdRng::seed_from_u64(seed);
            let d = b.delay(attempt, &mut rng);
            prop_assert!(d <= b.window(attempt));
            prop_assert!(b.window(attempt) <= max);
        }
    }
}
