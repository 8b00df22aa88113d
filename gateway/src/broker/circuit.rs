//! Fail fast while Redis is down: a connection wrapper with a circuit breaker.
//!
//! Every command goes through [`Guarded`]. When one fails because Redis could
//! not be reached (refused, dropped, timed out), the circuit opens for
//! [`COOL_DOWN`]: commands in that window fail at once instead of each
//! waiting out its own timeout. The first command after the window goes
//! through (the connection manager reconnects), and a success closes the
//! circuit. So `/readyz`, CONNECT and REST notice a dead Redis within one
//! command timeout and recover by themselves when it returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;

use super::redis::Conn;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};

/// How long the circuit stays open after a connection failure.
pub const COOL_DOWN: Duration = Duration::from_millis(500);

/// Open/closed state shared by every clone of a [`Guarded`] connection.
#[derive(Debug)]
pub struct Circuit {
    origin: Instant,
    /// Milliseconds since `origin` until which commands fail at once (0: closed).
    open_until_ms: AtomicU64,
}

impl Default for Circuit {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            open_until_ms: AtomicU64::new(0),
        }
    }
}

impl Circuit {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// `Err` while the circuit is open.
    fn check(&self) -> Result<(), RedisError> {
        let until = self.open_until_ms.load(Ordering::Relaxed);
        if until != 0 && self.now_ms() < until {
            return Err(RedisError::from((
                ErrorKind::Io,
                "redis unreachable (circuit open; retrying shortly)",
            )));
        }
        Ok(())
    }

    /// Opens the circuit on a connection failure, closes it on any answer.
    fn record<T>(&self, result: &Result<T, RedisError>) {
        match result {
            Err(e) if is_unreachable(e) => {
                let until = self.now_ms() + COOL_DOWN.as_millis() as u64;
                self.open_until_ms.store(until.max(1), Ordering::Relaxed);
            }
            _ => self.open_until_ms.store(0, Ordering::Relaxed),
        }
    }

    /// Whether the circuit is open now.
    pub fn is_open(&self) -> bool {
        self.check().is_err()
    }
}

/// Whether `e` says Redis could not be reached, rather than that it answered
/// with an error.
fn is_unreachable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

/// A connection (to one Redis or a cluster) whose commands pass through a [`Circuit`].
#[derive(Clone)]
pub struct Guarded {
    inner: Conn,
    circuit: Arc<Circuit>,
}

impl Guarded {
    /// Wraps `inner`; clones share `circuit`.
    pub(super) fn new(inner: Conn, circuit: Arc<Circuit>) -> Self {
        Self { inner, circuit }
    }
}

impl ConnectionLike for Guarded {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.circuit.check()?;
            let result = self.inner.req_packed_command(cmd).await;
            self.circuit.record(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.circuit.check()?;
            let result = self.inner.req_packed_commands(cmd, offset, count).await;
            self.circuit.record(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_on_unreachable_and_closes_on_any_answer() {
        let c = Circuit::default();
        assert!(!c.is_open());
        c.record::<()>(&Err(RedisError::from((
            ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ))));
        assert!(!c.is_open(), "a server error is an answer");
        c.record::<()>(&Err(RedisError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))));
        assert!(c.is_open());
        c.record(&Ok(()));
        assert!(!c.is_open());
    }
}
