//! One client connection as the gateway's socket logic sees it, whatever
//! Engine.IO/Socket.IO layer serves it: a [`Transport`] to emit to and close,
//! and the gateway's own state for it ([`Session`]). The hub keeps its rooms
//! as sets of [`Conn`]s, so live fan-out never asks the Socket.IO layer who
//! is in a room.
//!
//! Every event goes out through [`Conn::emit`] (or [`Conn::emit_live`] for a
//! live event, its envelope's text as it came), after the connection's
//! `session:welcome:v1`; every ack waits for it in [`Conn::welcomed`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use socketioxide::socket::Sid;

use crate::auth::Claims;
use crate::broker::LiveMessage;
use crate::inbound::ResumePosition;

/// The first event on every connection: `session:welcome:v1` with this
/// argument tells the SDK it talks to a Liveline gateway.
pub const WELCOME: &str = r#"{"protocol":1}"#;

/// Why an emit (or a DISCONNECT) could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The connection's outgoing buffer is full: the client reads too slowly.
    #[error("the connection's outgoing buffer is full")]
    Full,
    /// The connection is closed, or not open for events yet.
    #[error("the connection is closed")]
    Closed,
}

/// What serves one connection: an Engine.IO/Socket.IO layer's socket.
pub trait Transport: Send + Sync + 'static {
    /// The socket's id (its Engine.IO session id).
    fn id(&self) -> Sid;
    /// Queues event `event` with one argument, `data`: the text of one JSON
    /// value, encoded once by the caller (a [`RawValue`]'s, or a live
    /// message's checked envelope).
    fn emit(&self, event: &str, data: &str) -> Result<(), EmitError>;
    /// Whether the socket is connected (its CONNECT reply went out, and it
    /// has not closed since).
    fn connected(&self) -> bool;
    /// Queues a Socket.IO DISCONNECT and closes the socket after it;
    /// [`EmitError::Full`] while the outgoing buffer has no room for it.
    fn disconnect(&self) -> Result<(), EmitError>;
}

/// The reply to one action's ack id: sends the encoded reply once.
pub type Ack = Box<dyn FnOnce(&RawValue) -> Result<(), EmitError> + Send>;

/// The gateway's state of one connection: who it is, what it subscribed to,
/// where it resumes from. Set at CONNECT, read by every handler.
#[derive(Default)]
pub struct Session {
    /// The verified token's claims (set once the CONNECT is admitted).
    pub claims: OnceLock<Claims>,
    /// Rate-limited actions in a row.
    pub strikes: AtomicU32,
    /// The public topics this socket subscribed to.
    pub topics: StdMutex<HashSet<String>>,
    /// Cancels the token-expiry close when the socket goes first.
    pub expiry: StdMutex<Option<tokio::task::AbortHandle>>,
    /// Streams to resume, kept between the CONNECT check and the connect task.
    pub resume: StdMutex<Option<HashMap<String, ResumePosition>>>,
    /// When the socket connected (for session durations); taken at close.
    pub since: StdMutex<Option<Instant>>,
    /// What a resumed socket already got per stream (epoch, seq): a live
    /// event the dispatcher only processes after the socket joined its room
    /// may have been replayed already, and must not be sent twice.
    pub floor: OnceLock<HashMap<String, (String, u64)>>,
    /// Cut off (too slow, or being closed): it gets nothing more.
    cut_off: AtomicBool,
    /// The welcome is out (or none is due): emits skip the gate.
    welcome_sent: AtomicBool,
    /// While the welcome is due: flips to true once the transport marked the
    /// socket connected ([`Conn::ready`]).
    welcome_gate: StdMutex<Option<tokio::sync::watch::Sender<bool>>>,
}

impl Session {
    /// A session whose first event will be `session:welcome:v1`.
    pub fn welcoming() -> Self {
        Self {
            welcome_gate: StdMutex::new(Some(tokio::sync::watch::Sender::new(false))),
            ..Self::default()
        }
    }

    /// Whether a resumed stream's event was sent in the replay already.
    pub fn replayed<T>(&self, env: &liveline::contract::Envelope<T>) -> bool {
        self.floor.get().is_some_and(|floor| {
            floor
                .get(&env.stream)
                .is_some_and(|(epoch, seq)| *epoch == env.epoch && env.seq <= *seq)
        })
    }

    /// Whether the socket was cut off or is being closed.
    pub fn is_cut_off(&self) -> bool {
        self.cut_off.load(Ordering::Relaxed)
    }
}

/// Locks a std mutex, whether or not a holder panicked.
pub fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One client connection: its transport and its session.
#[derive(Clone)]
pub struct Conn {
    transport: Arc<dyn Transport>,
    session: Arc<Session>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("id", &self.id()).finish()
    }
}

/// How long a replay waits for room in a socket's outgoing buffer before it
/// gives up and closes the socket (the client resumes later).
pub const REPLAY_STALL: Duration = Duration::from_secs(5);

impl Conn {
    /// The connection served by `transport`, with the gateway's `session`.
    pub fn new(transport: Arc<dyn Transport>, session: Arc<Session>) -> Self {
        Self { transport, session }
    }

    /// The socket's id.
    pub fn id(&self) -> Sid {
        self.transport.id()
    }

    /// The gateway's state of this connection.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Whether the socket is connected.
    pub fn connected(&self) -> bool {
        self.transport.connected()
    }

    /// Emits `event` with `data`, after the socket's `session:welcome:v1`.
    /// Fails as an emit to a closed socket while the welcome cannot go out.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), EmitError> {
        let raw = serde_json::value::to_raw_value(data).map_err(|e| {
            tracing::error!(error = %e, "event not encodable");
            EmitError::Closed
        })?;
        self.emit_json(event, raw.get())
    }

    /// A live event, as it came from the broker.
    pub fn emit_live(&self, msg: &LiveMessage) -> Result<(), EmitError> {
        self.emit_json(&msg.event, msg.envelope())
    }

    fn emit_json(&self, event: &str, data: &str) -> Result<(), EmitError> {
        if !self.welcome() {
            return Err(EmitError::Closed);
        }
        self.transport.emit(event, data)
    }

    /// Emits, waiting (up to [`REPLAY_STALL`]) while the outgoing buffer is
    /// full, so a long replay goes at the client's pace and never drops an
    /// event. On failure the socket is closed and `false` returned.
    ///
    /// A transport tells only that its buffer is full (socketioxide's
    /// `reserve` is a try, with no async wait), so this waits between tries,
    /// from 1 ms doubling to 32 ms. Only this socket's task waits: it holds
    /// no lock.
    pub async fn emit_paced<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> bool {
        let Ok(raw) = serde_json::value::to_raw_value(data) else {
            self.close();
            return false;
        };
        self.emit_paced_json(event, raw.get()).await
    }

    /// [`Conn::emit_paced`] of a live event, as it came from the broker.
    pub async fn emit_paced_live(&self, msg: &LiveMessage) -> bool {
        self.emit_paced_json(&msg.event, msg.envelope()).await
    }

    async fn emit_paced_json(&self, event: &str, data: &str) -> bool {
        let deadline = tokio::time::Instant::now() + REPLAY_STALL;
        let mut wait = Duration::from_millis(1);
        self.welcomed().await;
        loop {
            match self.emit_json(event, data) {
                Ok(()) => return true,
                Err(EmitError::Full) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(32));
                }
                Err(_) => {
                    self.close();
                    return false;
                }
            }
        }
    }

    /// Sends the socket its `session:welcome:v1` unless it went out already;
    /// true once it is out (or none is due). Every emit and every ack passes
    /// here first, so the welcome is the first event on every connection
    /// whichever path runs first: a transport queues the CONNECT reply, then
    /// marks the socket connected, then runs the connect task, and a live
    /// event or an ack could otherwise overtake the welcome. False while the
    /// socket is not connected yet (nothing can be emitted to it then).
    fn welcome(&self) -> bool {
        let s = &self.session;
        if s.welcome_sent.load(Ordering::Acquire) {
            return true;
        }
        let mut gate = lock(&s.welcome_gate);
        if gate.is_some() {
            let out = self
                .transport
                .emit(liveline::contract::SESSION_WELCOME_V1, WELCOME);
            if out.is_err() {
                return false;
            }
            *gate = None;
        }
        s.welcome_sent.store(true, Ordering::Release);
        true
    }

    /// The transport marked the socket connected: its welcome goes out now,
    /// and whoever waits in [`Conn::welcomed`] may go on.
    pub fn ready(&self) {
        if let Some(gate) = lock(&self.session.welcome_gate).as_ref() {
            gate.send_replace(true);
        }
        self.welcome();
    }

    /// The transport wrote the welcome itself, in the same write as its
    /// CONNECT reply and before anything else: no emit sends it again, and
    /// whoever waits in [`Conn::welcomed`] may go on.
    pub fn welcome_written(&self) {
        if let Some(gate) = lock(&self.session.welcome_gate).take() {
            gate.send_replace(true);
        }
        self.session.welcome_sent.store(true, Ordering::Release);
    }

    /// Waits until the welcome is out, for an ack that must not overtake it:
    /// a client sends its first action as soon as it reads the CONNECT
    /// reply, and its handler can run before the transport marked the
    /// socket connected (on a loaded machine, for milliseconds). It waits
    /// for [`Conn::ready`]; bounded, for a socket that closed instead (its
    /// ack then fails like any other).
    pub async fn welcomed(&self) {
        if self.welcome() {
            return;
        }
        let Some(mut ready) = lock(&self.session.welcome_gate)
            .as_ref()
            .map(|g| g.subscribe())
        else {
            return;
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|c| *c)).await;
        self.welcome();
    }

    /// Closes the socket: it is cut off at once (live fan-out skips it), and
    /// disconnected as soon as the DISCONNECT packet fits in its buffer (or
    /// it closes by itself).
    pub fn close(&self) {
        self.session.cut_off.store(true, Ordering::Relaxed);
        if let Err(EmitError::Full) = self.transport.disconnect() {
            let t = self.transport.clone();
            tokio::spawn(async move {
                for _ in 0..600 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if !t.connected() || !matches!(t.disconnect(), Err(EmitError::Full)) {
                        return;
                    }
                }
            });
        }
    }
}
