//! Giving freed memory back to the system after connections close, and
//! one malloc arena per worker thread ([`tune_malloc`]).
//!
//! glibc's malloc keeps the pages of freed chunks for reuse: after a spike of
//! connections, or under steady churn, a gateway's RSS stays at its high-water
//! mark although most of it is free. [`TrimPolicy`] decides, from the
//! connection counts alone, when asking malloc to return it
//! ([`release_free_memory`], `malloc_trim(0)`) is worth its cost: once enough
//! connections have closed since the last time, and at most every
//! [`MIN_INTERVAL_MS`]. It is sans-IO: time and counts come in as arguments.

/// Closed connections that make a trim worth it, at the least.
pub const MIN_CLOSED: u64 = 256;

/// Least time between two trims (each walks the heap).
pub const MIN_INTERVAL_MS: u64 = 30_000;

/// How often the gateway asks the policy.
pub const CHECK_EVERY_MS: u64 = 5_000;

/// When to trim: at a check, once at least `max(MIN_CLOSED, high / 4)`
/// connections closed since the last trim (`high` being the most open at
/// once since then), and `MIN_INTERVAL_MS` passed since it.
#[derive(Debug, Default)]
pub struct TrimPolicy {
    last: Option<u64>,
    closed_at_last: u64,
    high: u64,
}

impl TrimPolicy {
    /// At time `now_ms`, with `open` connections and `closed` closed since
    /// the process started: whether to trim now (and count from here if so).
    pub fn check(&mut self, now_ms: u64, open: u64, closed: u64) -> bool {
        self.high = self.high.max(open);
        let since = closed.saturating_sub(self.closed_at_last);
        let rested = self
            .last
            .is_none_or(|last| now_ms.saturating_sub(last) >= MIN_INTERVAL_MS);
        if !rested || since < MIN_CLOSED.max(self.high / 4) {
            return false;
        }
        self.last = Some(now_ms);
        self.closed_at_last = closed;
        self.high = open;
        true
    }
}

/// Returns malloc's free pages to the system (glibc's `malloc_trim(0)`); a
/// no-op with another libc or global allocator. It walks the heap: call it
/// off the async workers (`spawn_blocking`).
pub fn release_free_memory() {
    glibc::trim();
}

/// Tunes glibc's malloc for many small, long-lived allocations (a task and
/// its buffers per connection): at most `arenas` arenas (`M_ARENA_MAX`), one
/// per worker thread. A no-op with another libc or global allocator; whether
/// malloc took it.
///
/// By default a thread that meets a locked arena makes another, up to eight
/// per core, and those arenas grow by `mprotect`, one call per 4 KiB page: two
/// per handshake, about a tenth of a handshake's CPU on one core
/// (docs/benchmarks.md). The main arena grows by `brk`, 128 KiB at a time
/// (glibc's default top pad); with one worker, every thread shares it.
///
/// Process-wide, and to be called before the runtime's threads exist (a
/// thread's first allocation picks its arena): the gateway's binary calls
/// it, not the library.
pub fn tune_malloc(arenas: usize) -> bool {
    glibc::arena_max(arenas)
}

/// glibc's malloc, when it is the process's allocator.
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    not(feature = "mimalloc"),
    not(feature = "jemalloc")
))]
#[allow(unsafe_code)] // two FFI calls, below
mod glibc {
    pub fn trim() {
        // SAFETY: malloc_trim only walks and releases glibc's own free
        // lists; it takes glibc's arena locks and has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    pub fn arena_max(arenas: usize) -> bool {
        let arenas = libc::c_int::try_from(arenas.max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets one of glibc's malloc parameters, under
        // its own lock; it has no preconditions. It returns 1 on success.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) == 1 }
    }
}

/// Another allocator: nothing to do.
#[cfg(not(all(
    target_os = "linux",
    target_env = "gnu",
    not(feature = "mimalloc"),
    not(feature = "jemalloc")
)))]
mod glibc {
    pub fn trim() {}

    pub fn arena_max(_arenas: usize) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(
        target_os = "linux",
        target_env = "gnu",
        not(feature = "mimalloc"),
        not(feature = "jemalloc")
    ))]
    #[test]
    fn glibc_takes_the_settings() {
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        assert!(tune_malloc(workers));
        // Out of range asks for as many as C can count.
        assert!(tune_malloc(usize::MAX));
        assert!(tune_malloc(workers));
    }

    #[test]
    fn a_few_closes_never_trim() {
        let mut p = TrimPolicy::default();
        assert!(!p.check(0, 100, 0));
        assert!(!p.check(5_000, 40, 60));
        assert!(!p.check(10_000, 0, MIN_CLOSED - 1));
    }

    #[test]
    fn a_spike_that_drains_trims_once() {
        let mut p = TrimPolicy::default();
        assert!(!p.check(0, 10_000, 0));
        // 2,000 of 10,000 closed: under a quarter of the high-water mark.
        assert!(!p.check(5_000, 8_000, 2_000));
        assert!(p.check(10_000, 7_000, 3_000));
        // Nothing new closed: no second trim, however long it waits.
        assert!(!p.check(100_000, 7_000, 3_000));
    }

    #[test]
    fn steady_churn_trims_at_most_every_interval() {
        let mut p = TrimPolicy::default();
        let mut trims = Vec::new();
        // 1,000 open all along, 100 closing (and 100 opening) per second.
        for s in 0..120u64 {
            if p.check(s * 1000, 1_000, s * 100) {
                trims.push(s);
            }
        }
        assert_eq!(trims.first(), Some(&3), "256 closed after 3 s");
        for pair in trims.windows(2) {
            assert!(pair[1] - pair[0] >= MIN_INTERVAL_MS / 1000, "{trims:?}");
        }
        assert_eq!(trims.len(), 4, "{trims:?}");
    }

    #[test]
    fn the_high_water_mark_restarts_at_each_trim() {
        let mut p = TrimPolicy::default();
        assert!(p.check(0, 50_000, 100_000));
        // From 50,000 open: a quarter is 12,500.
        assert!(!p.check(40_000, 50_000, 110_000));
        assert!(p.check(80_000, 40_000, 112_500));
    }

    #[test]
    fn trimming_runs() {
        release_free_memory();
    }
}
