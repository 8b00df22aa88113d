//! Analytics counted in memory and written to Redis together: the daily
//! active users, session counts and job outcomes recorded within
//! [`LINGER`] go to Redis in one pipeline (one `PFADD` with every user, one
//! `HINCRBY` per counter), instead of a round trip per connection, per close
//! and per job. A handshake then costs Redis one round trip less.
//!
//! What is recorded is written at most [`LINGER`] later, and before any read
//! of the summary ([`Recorder::flush`]) and at a graceful shutdown. A node
//! killed outright loses what it recorded in its last [`LINGER`]; a write
//! that fails loses its batch (analytics are counts, not events: they are
//! never worth holding a connection up for). At most [`MAX_USERS`] distinct
//! users wait for one write; past that, more are not counted until it goes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::circuit::Guarded;
use super::{ANALYTICS_TTL_SECS, BrokerError};

/// How long a record waits for others to share its write.
pub const LINGER: Duration = Duration::from_millis(50);

/// The most distinct users that wait for one write (a Redis that stalls
/// must not make the node's memory grow with every handshake).
pub const MAX_USERS: usize = 65_536;

/// One day's counts.
#[derive(Debug, Default, PartialEq)]
struct Day {
    active: BTreeSet<String>,
    sessions: u64,
    session_secs: f64,
    /// (kind, outcome) → (count, seconds).
    jobs: BTreeMap<(String, String), (u64, f64)>,
}

/// Counts not written yet, by UTC day. Sans-IO: [`Tally::commands`] says
/// what to send.
#[derive(Debug, Default)]
pub struct Tally {
    days: BTreeMap<String, Day>,
    /// Users not counted because [`MAX_USERS`] were waiting.
    dropped: u64,
}

impl Tally {
    fn day(&mut self, day: &str) -> &mut Day {
        if !self.days.contains_key(day) {
            self.days.insert(day.to_owned(), Day::default());
        }
        self.days.get_mut(day).expect("inserted above")
    }

    /// Counts `user` active on `day`; false when [`MAX_USERS`] already wait.
    pub fn active(&mut self, day: &str, user: &str) -> bool {
        if self.days.get(day).is_some_and(|d| d.active.contains(user)) {
            return true;
        }
        let waiting: usize = self.days.values().map(|d| d.active.len()).sum();
        if waiting >= MAX_USERS {
            self.dropped += 1;
            return false;
        }
        self.day(day).active.insert(user.to_owned());
        true
    }

    /// Counts an ended session of `secs` on `day`.
    pub fn session(&mut self, day: &str, secs: f64) {
        let d = self.day(day);
        d.sessions += 1;
        d.session_secs += secs;
    }

    /// Counts a job of `kind` reaching `outcome` after `secs` on `day`.
    pub fn job(&mut self, day: &str, kind: &str, outcome: &str, secs: f64) {
        let entry = self
            .day(day)
            .jobs
            .entry((kind.to_owned(), outcome.to_owned()))
            .or_default();
        entry.0 += 1;
        entry.1 += secs;
    }

    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }

    /// Users refused since the last [`Tally::take_dropped`].
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// The commands that add these counts to the day keys under `prefix`
    /// (`{prefix}{an:DAY}:dau|sessions|jobs`), each key's expiry renewed.
    pub fn commands(&self, prefix: &str) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        let ttl = ANALYTICS_TTL_SECS as i64;
        for (day, d) in &self.days {
            if !d.active.is_empty() {
                let key = format!("{prefix}{{an:{day}}}:dau");
                pipe.cmd("PFADD")
                    .arg(&key)
                    .arg(d.active.iter().collect::<Vec<_>>());
                pipe.expire(&key, ttl);
            }
            if d.sessions > 0 {
                let key = format!("{prefix}{{an:{day}}}:sessions");
                pipe.hincr(&key, "count", d.sessions);
                pipe.cmd("HINCRBYFLOAT")
                    .arg(&key)
                    .arg("seconds")
                    .arg(d.session_secs);
                pipe.expire(&key, ttl);
            }
            if !d.jobs.is_empty() {
                let key = format!("{prefix}{{an:{day}}}:jobs");
                for ((kind, outcome), (count, secs)) in &d.jobs {
                    pipe.hincr(&key, format!("{kind}|{outcome}|count"), *count);
                    pipe.cmd("HINCRBYFLOAT")
                        .arg(&key)
                        .arg(format!("{kind}|{outcome}|seconds"))
                        .arg(*secs);
                }
                pipe.expire(&key, ttl);
            }
        }
        pipe
    }
}

/// Gathers analytics and writes them every [`LINGER`] while there are any.
pub struct Recorder {
    pending: Arc<Mutex<Tally>>,
    conn: Guarded,
    prefix: String,
    task: tokio::task::JoinHandle<()>,
    wake: Arc<Notify>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn take(pending: &Mutex<Tally>) -> Tally {
    std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()))
}

async fn write(conn: &Guarded, prefix: &str, mut tally: Tally) -> Result<(), BrokerError> {
    let dropped = tally.take_dropped();
    if dropped > 0 {
        tracing::warn!(
            users = dropped,
            "analytics: active users not counted, {MAX_USERS} were waiting for Redis"
        );
    }
    if tally.is_empty() {
        return Ok(());
    }
    let () = tally
        .commands(prefix)
        .query_async(&mut conn.clone())
        .await?;
    Ok(())
}

impl Recorder {
    pub fn spawn(conn: Guarded, prefix: &str) -> Self {
        let pending = Arc::new(Mutex::new(Tally::default()));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn({
            let (pending, wake, conn, prefix) = (
                pending.clone(),
                wake.clone(),
                conn.clone(),
                prefix.to_owned(),
            );
            async move {
                loop {
                    wake.notified().await;
                    // A batching window, not a wait for anything: what is
                    // recorded meanwhile shares the write.
                    tokio::time::sleep(LINGER).await;
                    if let Err(e) = write(&conn, &prefix, take(&pending)).await {
                        tracing::warn!(error = %e, "analytics not written");
                    }
                }
            }
        });
        Self {
            pending,
            conn,
            prefix: prefix.to_owned(),
            task,
            wake,
        }
    }

    /// Adds to the counts waiting; the first after a write starts the window.
    pub fn record(&self, add: impl FnOnce(&mut Tally)) {
        let first = {
            let mut t = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let first = t.is_empty();
            add(&mut t);
            first && !t.is_empty()
        };
        if first {
            self.wake.notify_one();
        }
    }

    /// Writes what waits now.
    pub async fn flush(&self) -> Result<(), BrokerError> {
        write(&self.conn, &self.prefix, take(&self.pending)).await
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_USERS, Tally};

    fn packed(t: &Tally) -> String {
        String::from_utf8_lossy(&t.commands("p:").get_packed_pipeline()).into_owned()
    }

    #[test]
    fn a_day_is_written_in_one_command_per_counter() {
        let mut t = Tally::default();
        assert!(t.is_empty());
        for user in ["ann", "bob", "ann"] {
            assert!(t.active("2026-12-02", user));
        }
        t.session("2026-12-02", 1.5);
        t.session("2026-12-02", 2.0);
        t.job("2026-12-02", "research", "completed", 3.0);
        t.job("2026-12-02", "research", "completed", 1.0);
        t.active("2026-12-03", "cy");
        let cmds = packed(&t);
        // One PFADD per day, each user once.
        assert_eq!(cmds.matches("PFADD").count(), 2, "{cmds}");
        assert_eq!(cmds.matches("ann").count(), 1, "{cmds}");
        assert!(cmds.contains("p:{an:2026-12-02}:dau"));
        assert!(cmds.contains("p:{an:2026-12-03}:dau"));
        // Sessions and jobs summed: two sessions, 3.5 s; one job pair.
        assert!(cmds.contains("$5\r\ncount\r\n$1\r\n2\r\n"), "{cmds}");
        assert!(cmds.contains("$7\r\nseconds\r\n$3\r\n3.5\r\n"), "{cmds}");
        assert!(
            cmds.contains("research|completed|count\r\n$1\r\n2\r\n"),
            "{cmds}"
        );
        assert!(
            cmds.contains("research|completed|seconds\r\n$3\r\n4.0\r\n"),
            "{cmds}"
        );
        // Every key written gets its expiry.
        assert_eq!(cmds.matches("EXPIRE").count(), 4, "{cmds}");
    }

    #[test]
    fn users_past_the_bound_are_refused_and_counted() {
        let mut t = Tally::default();
        for i in 0..MAX_USERS {
            assert!(t.active("d", &format!("u{i}")));
        }
        assert!(!t.active("d", "one-too-many"));
        assert!(!t.active("e", "another-day"));
        // A user already waiting is still counted (once).
        assert!(t.active("d", "u0"));
        t.session("d", 1.0);
        assert_eq!(t.take_dropped(), 2);
        assert_eq!(t.take_dropped(), 0);
    }
}
