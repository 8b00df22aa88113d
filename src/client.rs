//! The sans-IO client: connection state machine, heartbeat, reconnect with
//! backoff, the action outbox and the resume tracker.
//!
//! It owns no socket and reads no clock. A driver feeds it input through the
//! `handle_*` methods and app calls ([`Client::connect`], [`Client::send`],
//! [`Client::close`]), passing the current time in milliseconds, and pulls
//! what to do from [`Client::poll_output`] and when to call
//! [`Client::handle_timeout`] next from [`Client::poll_timeout`].
//!
//! Rules for a driver:
//! - On [`Output::FetchToken`], get a token from the app and call
//!   [`Client::handle_token`].
//! - On [`Output::Open`], open a WebSocket to the URL and report
//!   [`Client::handle_open`], [`Client::handle_text`], [`Client::handle_binary`]
//!   and [`Client::handle_closed`] for it.
//! - On [`Output::Close`], close that socket and report nothing more about it.

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::backoff::Backoff;
use crate::contract::{self, Incoming, Position};
use crate::json;
use crate::outbox::{Action, ActionError, Outbox, SendError};
use crate::protocol::{Decoded, Decoder, EioPacket, Packet, PacketType, tagged};
use crate::vec_map::VecMap;

/// Most events kept before a CONNECT reply (a recovering server sends the
/// missed ones first). A server that sends more is cut off, and the next
/// CONNECT starts a new session instead of recovering that one.
pub const MAX_EARLY_EVENTS: usize = 10_000;

/// The settings an app can tune from JavaScript, by their `CoreOptions`
/// names, in the order the JS driver passes them to the wasm core:
/// `new Core(url, seedHigh, seedLow, tunables)` in `src/wasm.rs` reads
/// index `i` as this list's `i`-th entry, and `pkg/index.js` builds that
/// `Float64Array` in this order. The `ts_types` test checks both sides;
/// `liveline::ts` describes each (its [`Config`] field, type, doc and
/// default) for `pkg/contracts.d.ts`. Never read by the wasm build.
pub const TUNABLES: &[&str] = &[
    "backoff.initialMs",
    "backoff.maxMs",
    "ackTimeoutMs",
    "outboxCapacity",
    "connectTimeoutMs",
    "probeTimeoutMs",
    "livenessProbe",
    "emitBuffer",
];

/// Client settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The gateway's base URL: `http(s)://host[:port]` or `ws(s)://...`.
    pub url: String,
    /// The Socket.IO path.
    pub path: String,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// How long opening a socket through CONNECT may take, in ms.
    pub connect_timeout_ms: u64,
    /// After this long disconnected, the state becomes `suspended`.
    pub suspend_after_ms: u64,
    /// Retry window while suspended, in ms.
    pub suspended_retry_ms: u64,
    /// A connection that lived this long resets the attempt counter.
    pub stable_after_ms: u64,
    /// How long to wait for an action's ack before sending it again.
    pub ack_timeout_ms: u64,
    /// How long an action may wait in the outbox before it fails.
    pub action_ttl_ms: u64,
    /// How many actions the outbox holds.
    pub outbox_capacity: usize,
    /// How many raw emits wait while the client is not connected (they are
    /// sent on connect, in order, and not kept across reloads).
    pub emit_buffer: usize,
    /// Used before the server's handshake says otherwise, in ms.
    pub default_heartbeat_ms: u64,
    /// On wake (page visible, network online) ask the server for an ack
    /// (`probe:v1`) and drop the link if none comes within
    /// `probe_timeout_ms`. Off for servers that do not answer probes: then a
    /// link that had no ping for most of a ping interval is dropped.
    pub liveness_probe: bool,
    /// How long a liveness probe waits for its ack, in ms.
    pub probe_timeout_ms: u64,
}

impl Config {
    /// Defaults for a gateway at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            path: "/socket.io/".to_owned(),
            backoff: Backoff::default(),
            connect_timeout_ms: 10_000,
            suspend_after_ms: 120_000,
            suspended_retry_ms: 30_000,
            stable_after_ms: 10_000,
            ack_timeout_ms: 10_000,
            action_ttl_ms: 5 * 60_000,
            outbox_capacity: 256,
            emit_buffer: 1024,
            default_heartbeat_ms: 45_000,
            liveness_probe: true,
            probe_timeout_ms: 3_000,
        }
    }

    /// The WebSocket URL of the Engine.IO endpoint.
    pub fn socket_url(&self) -> String {
        let base = self.url.trim_end_matches('/');
        let base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_owned()
        };
        let path = self.path.trim_start_matches('/');
        format!("{base}/{path}?EIO=4&transport=websocket")
    }
}

/// The connection state an app shows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Not started.
    Idle,
    /// The first connection attempt is under way.
    Connecting,
    /// Live: events flow, actions drain.
    Connected,
    /// Lost the connection; retrying.
    Reconnecting {
        /// 1-based number of the attempt under way or next.
        attempt: u32,
        /// Milliseconds until the next attempt (0 while one is under way).
        retry_in_ms: u64,
        /// Why the last attempt or connection ended.
        last_error: String,
    },
    /// The browser reports no network; waiting for `online`.
    Offline,
    /// Disconnected for long; retrying slowly.
    Suspended {
        /// Milliseconds until the next attempt.
        retry_in_ms: u64,
    },
    /// Closed by the app.
    Closed,
    /// Gave up; the reason says why.
    Failed {
        /// Why.
        reason: String,
    },
}

impl ConnectionState {
    /// The state's name as the JS API shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Reconnecting { .. } => "reconnecting",
            Self::Offline => "offline",
            Self::Suspended { .. } => "suspended",
            Self::Closed => "closed",
            Self::Failed { .. } => "failed",
        }
    }

    /// Whether events flow.
    pub fn is_connected(&self) -> bool {
        matches!(self, Self::Connected)
    }
}

/// A state change, as the app sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The new state.
    pub current: ConnectionState,
    /// The name of the state before.
    pub previous: &'static str,
    /// Why it changed.
    pub reason: String,
    /// Actions waiting in the outbox.
    pub queued: usize,
    /// Connected, and the server recovered the session (an official
    /// server's connection-state recovery): what it emitted meanwhile follows.
    pub recovered: bool,
}

/// What the driver must do or tell the app.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// Ask the app for a token, then call [`Client::handle_token`].
    FetchToken,
    /// Open a WebSocket to this URL.
    Open(String),
    /// Send a text frame.
    SendText(String),
    /// Send a binary frame.
    SendBinary(Vec<u8>),
    /// Close the socket; report nothing more about it.
    Close,
    /// The connection state changed.
    State(StateChange),
    /// An event for the app. When the server asked for an ack, its id is
    /// here; answer with [`Client::reply`].
    Event(Incoming, Option<u64>),
    /// A known event broke its contract; it was dropped.
    Invalid(contract::DecodeError),
    /// An action ended: acked with a result, refused or failed.
    Ack(u64, Result<String, ActionError>),
    /// The server of this connection said what it is (its first event).
    Server(ServerKind),
    /// A raw emit's ack came (its arguments as sent), or it cannot come
    /// (`disconnected`): the id is the one [`Client::emit`] returned.
    Replied(u64, Result<Args, ActionError>),
    /// The outbox changed (an action was queued, restored, acked or
    /// expired); it now holds this many. A driver that keeps actions across
    /// reloads saves [`Client::outbox_snapshot`] now.
    Queue(usize),
}

/// The arguments of an event or ack, as sent: each a JSON text, with the
/// binary attachments their placeholders point to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Args {
    /// Each argument as JSON text.
    pub args: Vec<String>,
    /// Binary attachments, in order.
    pub attachments: Vec<Vec<u8>>,
}

/// What the server of the current connection is, as it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Not connected, or connected and nothing received yet.
    Unknown,
    /// A Liveline gateway: its first event was `session:welcome:v1`. Its
    /// acks carry `{ok, data}` or `{ok: false, error}`; its stream events
    /// carry envelopes the resume tracker orders; it answers probes and
    /// replays; it applies each action's idempotency key once.
    Liveline,
    /// Any other Socket.IO server: events and acks reach the app as sent,
    /// and durable actions are at least once (see [`Client::send`]).
    SocketIo,
}

/// A raw emit waiting for the connection.
#[derive(Debug, Clone)]
struct RawEmit {
    /// The id returned to the app when it wants an ack.
    id: Option<u64>,
    /// The packet's JSON array `[name, ...args]`.
    data: String,
    attachments: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Idle,
    AwaitToken,
    /// Socket requested; `handshake` once Engine.IO opened.
    Opening {
        deadline: u64,
        handshake: bool,
    },
    Live {
        since: u64,
        heartbeat_deadline: u64,
    },
    Waiting {
        at: u64,
    },
    Offline,
    Closed,
    Failed(String),
}

/// The sans-IO client.
#[derive(Debug)]
pub struct Client {
    config: Config,
    rng: SmallRng,
    phase: Phase,
    state: ConnectionState,
    /// Consecutive failed attempts.
    attempt: u32,
    last_error: String,
    disconnected_since: Option<u64>,
    auth_retried: bool,
    token: Option<String>,
    heartbeat_ms: u64,
    /// The server's largest accepted frame, from its last handshake (0:
    /// not known yet).
    max_payload: usize,
    last_rx: u64,
    decoder: Decoder,
    outbox: Outbox,
    positions: VecMap<String, (String, u64)>,
    /// Replays asked for on this socket: stream -> (epoch, seq, deadline).
    replays_pending: VecMap<String, (String, u64, u64)>,
    next_ack_id: u64,
    /// What the server of this connection is.
    server: ServerKind,
    /// An official server's session id for connection-state recovery, from
    /// its CONNECT reply; sent back (with `offset`) on the next CONNECT. A
    /// server that gave one appends a recovery offset to its events.
    pid: Option<String>,
    /// The recovery offset of the last event received from that server.
    offset: Option<String>,
    /// Whether the last CONNECT recovered the server's session (same `pid`).
    recovered: bool,
    /// Raw emits waiting for the connection.
    emits: Vec<RawEmit>,
    /// Events that came before the CONNECT reply: an official server sends
    /// a recovered session's missed events first. Delivered after it, as
    /// `socket.io-client` does; at most [`MAX_EARLY_EVENTS`].
    early: Vec<Packet>,
    /// Raw emits sent and waiting for their ack: `(ack id, emit id)`.
    raw_acks: Vec<(u64, u64)>,
    next_emit_id: u64,
    /// When to retry, as the server asked (graceful shutdown).
    retry_hint: Option<u64>,
    /// The ack id of the liveness probe in flight.
    probe: Option<u64>,
    /// Why the server is about to close the socket, as it told us.
    close_reason: Option<String>,
    out: VecDeque<Output>,
}

impl Client {
    /// A client with an RNG seeded from `seed` (tests pass a fixed seed,
    /// drivers a random one).
    pub fn new(config: Config, seed: u64) -> Self {
        let outbox = Outbox::new(config.outbox_capacity);
        Self {
            heartbeat_ms: config.default_heartbeat_ms,
            max_payload: 0,
            config,
            rng: SmallRng::seed_from_u64(seed),
            phase: Phase::Idle,
            state: ConnectionState::Idle,
            attempt: 0,
            last_error: String::new(),
            disconnected_since: None,
            auth_retried: false,
            token: None,
            last_rx: 0,
            decoder: Decoder::default(),
            outbox,
            positions: VecMap::default(),
            replays_pending: VecMap::default(),
            next_ack_id: 0,
            server: ServerKind::Unknown,
            pid: None,
            offset: None,
            recovered: false,
            emits: Vec::new(),
            early: Vec::new(),
            raw_acks: Vec::new(),
            next_emit_id: 0,
            retry_hint: None,
            probe: None,
            close_reason: None,
            out: VecDeque::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> &ConnectionState {
        &self.state
    }

    /// Actions waiting in the outbox.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// What the server of the current connection is.
    pub fn server(&self) -> ServerKind {
        self.server
    }

    /// Whether the last CONNECT recovered an official server's session
    /// (connection-state recovery): the events emitted while the client was
    /// away follow, in order. Always `false` against a Liveline gateway,
    /// which resumes per stream instead (`stream:recovered:v1`).
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    /// The last `(epoch, seq)` delivered for a stream.
    pub fn position(&self, stream: &str) -> Option<(&str, u64)> {
        self.positions.get(stream).map(|(e, s)| (e.as_str(), *s))
    }

    /// Restores a stream position saved earlier (e.g. across a reload), so
    /// the next CONNECT resumes from it.
    pub fn restore_position(&mut self, stream: &str, epoch: &str, seq: u64) {
        self.positions
            .insert(stream.to_owned(), (epoch.to_owned(), seq));
    }

    /// The app starts the client. Does nothing unless idle, closed or failed.
    pub fn connect(&mut self, now: u64) {
        if !matches!(self.phase, Phase::Idle | Phase::Closed | Phase::Failed(_)) {
            return;
        }
        self.attempt = 0;
        self.auth_retried = false;
        self.disconnected_since = None;
        self.start_attempt(now, "connect called");
    }

    /// The app closes the client. Queued actions stay queued; raw emits not
    /// sent yet are dropped, and those that wanted an ack end with
    /// `disconnected`.
    pub fn close(&mut self, now: u64) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.has_socket() {
            self.out.push_back(Output::Close);
        }
        self.socket_gone();
        for e in std::mem::take(&mut self.emits) {
            if let Some(id) = e.id {
                self.fail_emit(id);
            }
        }
        self.phase = Phase::Closed;
        self.set_state(ConnectionState::Closed, "closed by the app", now);
    }

    /// The app sends an action. It is queued, sent when connected, retried
    /// with the same idempotency key until acked, and ends in an
    /// [`Output::Ack`] with the returned id. A Liveline gateway applies
    /// each key once (exactly once); any other server gets `[name, {key,
    /// data}]` and may see it again after a lost ack (at least once), and
    /// its ack's first argument is the result as it is.
    pub fn send(&mut self, name: &str, data: &str, now: u64) -> Result<u64, SendError> {
        json::validate(data).map_err(SendError::InvalidJson)?;
        if let ConnectionState::Failed { reason } = &self.state {
            return Err(SendError::Failed(reason.clone()));
        }
        let data = data.trim().to_owned();
        let key = self.random_key();
        let size = action_frame_len(name, &key, &data);
        if self.max_payload > 0 && size > self.max_payload {
            return Err(SendError::PayloadTooLarge {
                size,
                max: self.max_payload,
            });
        }
        let ttl = self.config.action_ttl_ms;
        let id = self.outbox.push(name, data, key, now + ttl)?;
        self.queue_changed();
        if matches!(self.phase, Phase::Live { .. }) {
            self.flush_outbox(now);
        }
        Ok(id)
    }

    /// The app emits an event as a plain Socket.IO client does: `args` are
    /// the arguments, each a JSON text, unchanged on the wire (binary ones
    /// as `{"_placeholder":true,"num":N}` pointing into `attachments`).
    /// Sent at once when connected, else buffered (at most
    /// [`Config::emit_buffer`]) and sent on connect; never kept across
    /// reloads, never sent twice. With `ack`, returns the id its
    /// [`Output::Replied`] will carry.
    pub fn emit(
        &mut self,
        name: &str,
        args: &[&str],
        attachments: Vec<Vec<u8>>,
        ack: bool,
    ) -> Result<Option<u64>, SendError> {
        for a in args {
            json::validate(a).map_err(SendError::InvalidJson)?;
        }
        if let ConnectionState::Failed { reason } = &self.state {
            return Err(SendError::Failed(reason.clone()));
        }
        let mut data = String::from("[");
        json::write_string(&mut data, name);
        for a in args {
            data.push(',');
            data.push_str(a.trim());
        }
        data.push(']');
        // `451-` and an ack id of at most 20 digits; each attachment is a frame of its own.
        let size = 4 + 20 + data.len();
        let largest = attachments.iter().map(|a| a.len() + 1).max().unwrap_or(0);
        if self.max_payload > 0 && size.max(largest) > self.max_payload {
            return Err(SendError::PayloadTooLarge {
                size: size.max(largest),
                max: self.max_payload,
            });
        }
        let live = matches!(self.phase, Phase::Live { .. });
        if !live && self.emits.len() >= self.config.emit_buffer {
            return Err(SendError::BufferFull(self.emits.len()));
        }
        let id = ack.then(|| {
            self.next_emit_id += 1;
            self.next_emit_id
        });
        let e = RawEmit {
            id,
            data,
            attachments,
        };
        if live {
            self.send_emit(e);
        } else {
            self.emits.push(e);
        }
        Ok(id)
    }

    /// The queued actions, to persist (see [`Output::Queue`]), their
    /// expiry in wall time (ms since the Unix epoch, `wall_now` being now),
    /// so another page or process can read it. The one place the core meets
    /// the wall clock, with [`Client::restore_outbox`]: every timer runs on
    /// the monotonic `now` the driver passes, so a wall clock that steps
    /// (NTP, a sleeping laptop) fires no heartbeat timeout and expires
    /// nothing.
    pub fn outbox_snapshot(&self, wall_now: u64, now: u64) -> Vec<Action> {
        let mut actions = self.outbox.snapshot();
        for a in &mut actions {
            a.expires_at = (a.expires_at.saturating_sub(now)).saturating_add(wall_now);
        }
        actions
    }

    /// Puts back actions saved by an earlier page or process (their expiry
    /// in wall time, `wall_now` being now), ahead of anything queued since,
    /// with their idempotency keys: the gateway applies each key once, so an
    /// action that had gone out before the reload is not applied twice.
    /// Returns the local ids they got, in order.
    pub fn restore_outbox(
        &mut self,
        mut actions: Vec<Action>,
        wall_now: u64,
        now: u64,
    ) -> Vec<u64> {
        for a in &mut actions {
            a.expires_at = (a.expires_at.saturating_sub(wall_now)).saturating_add(now);
        }
        let ids = self.outbox.restore(actions);
        if !ids.is_empty() {
            self.queue_changed();
            if matches!(self.phase, Phase::Live { .. }) {
                self.flush_outbox(now);
            }
        }
        ids
    }

    /// Answers a server event that asked for an ack.
    pub fn reply(&mut self, ack_id: u64, args: &[&str]) -> Result<(), json::JsonError> {
        for a in args {
            json::validate(a)?;
        }
        if matches!(self.phase, Phase::Live { .. }) {
            let p = Packet::new(
                PacketType::Ack,
                Some(ack_id),
                Some(format!("[{}]", args.join(","))),
            );
            self.out
                .push_back(Output::SendText(tagged('4', &p.encode())));
        }
        Ok(())
    }

    /// The app's token arrived (`Err` when `getToken` failed).
    pub fn handle_token(&mut self, token: Result<String, String>, now: u64) {
        if self.phase != Phase::AwaitToken {
            return;
        }
        match token {
            Ok(token) => {
                self.token = Some(token);
                self.phase = Phase::Opening {
                    deadline: now + self.config.connect_timeout_ms,
                    handshake: false,
                };
                self.out.push_back(Output::Open(self.config.socket_url()));
            }
            // The app's token source may be down for a moment: retry with
            // backoff like any failed attempt; the state shows the error.
            Err(e) => self.lost(&format!("getToken failed: {e}"), now),
        }
    }

    /// The socket opened.
    pub fn handle_open(&mut self, now: u64) {
        self.last_rx = now;
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, frame: &str, now: u64) {
        if !self.has_socket() {
            return;
        }
        self.last_rx = now;
        match self.decoder.text(frame) {
            Ok(decoded) => self.on_decoded(decoded, now),
            Err(e) => self.drop_socket(&format!("protocol error: {e}"), now),
        }
    }

    /// A binary frame arrived.
    pub fn handle_binary(&mut self, frame: &[u8], now: u64) {
        if !self.has_socket() {
            return;
        }
        self.last_rx = now;
        match self.decoder.binary(frame) {
            Ok(decoded) => self.on_decoded(decoded, now),
            Err(e) => self.drop_socket(&format!("protocol error: {e}"), now),
        }
    }

    /// The socket closed or failed by itself.
    pub fn handle_closed(&mut self, reason: &str, now: u64) {
        if !self.has_socket() {
            return;
        }
        self.lost(reason, now);
    }

    /// The browser reports the network going away or coming back.
    pub fn handle_network(&mut self, online: bool, now: u64) {
        if online {
            match self.phase {
                Phase::Offline => self.start_attempt(now, "network online"),
                Phase::Waiting { .. } => self.start_attempt(now, "network online"),
                Phase::Live { .. } => self.check_liveness(now, "network online"),
                _ => {}
            }
        } else if self.is_running() {
            if self.has_socket() {
                self.out.push_back(Output::Close);
            }
            self.socket_gone();
            self.disconnected_since.get_or_insert(now);
            self.phase = Phase::Offline;
            self.set_state(ConnectionState::Offline, "network offline", now);
        }
    }

    /// The page became visible or hidden.
    pub fn handle_visibility(&mut self, visible: bool, now: u64) {
        if !visible {
            return;
        }
        match self.phase {
            Phase::Waiting { .. } => self.start_attempt(now, "page visible"),
            Phase::Live { .. } => self.check_liveness(now, "page visible"),
            _ => {}
        }
    }

    /// When to call [`Client::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let phase = match self.phase {
            Phase::Opening { deadline, .. } => Some(deadline),
            Phase::Live {
                heartbeat_deadline, ..
            } => Some(heartbeat_deadline),
            Phase::Waiting { at } => Some(at),
            _ => None,
        };
        let outbox = if matches!(self.phase, Phase::Live { .. }) {
            let replay = self.replays_pending.values().map(|(_, _, d)| *d).min();
            match (self.outbox.next_deadline(), replay) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else {
            self.outbox.next_expiry()
        };
        match (phase, outbox) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: u64) {
        let expired = self.outbox.expire(now);
        if !expired.is_empty() {
            for (id, err) in expired {
                self.out.push_back(Output::Ack(id, Err(err)));
            }
            self.queue_changed();
        }
        match self.phase {
            Phase::Opening { deadline, .. } if now >= deadline => {
                self.drop_socket("connect timeout", now);
            }
            Phase::Live {
                heartbeat_deadline, ..
            } if now >= heartbeat_deadline => {
                let reason = if self.probe.is_some() {
                    "liveness probe timed out"
                } else {
                    "heartbeat timeout"
                };
                self.drop_socket(reason, now);
            }
            Phase::Waiting { at } if now >= at => self.start_attempt(now, "retry"),
            Phase::Live { .. }
                if self
                    .replays_pending
                    .values()
                    .any(|(_, _, deadline)| now >= *deadline) =>
            {
                // The server does not answer replays: resume by reconnecting.
                self.drop_socket("replay request timed out", now);
            }
            Phase::Live { .. } if self.outbox.time_out_acks(now) => self.flush_outbox(now),
            _ => {}
        }
        if let Phase::Waiting { at } = self.phase {
            self.refresh_waiting_state(at, now);
        }
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    // ---- internals ----

    fn is_running(&self) -> bool {
        !matches!(
            self.phase,
            Phase::Idle | Phase::Closed | Phase::Failed(_) | Phase::Offline
        )
    }

    fn has_socket(&self) -> bool {
        matches!(self.phase, Phase::Opening { .. } | Phase::Live { .. })
    }

    fn random_key(&mut self) -> String {
        let v: u128 = self.rng.random();
        format!("{v:032x}")
    }

    fn start_attempt(&mut self, now: u64, reason: &str) {
        self.phase = Phase::AwaitToken;
        self.out.push_back(Output::FetchToken);
        let state = if self.disconnected_since.is_none() && self.attempt == 0 {
            ConnectionState::Connecting
        } else {
            ConnectionState::Reconnecting {
                attempt: self.attempt.max(1),
                retry_in_ms: 0,
                last_error: self.last_error.clone(),
            }
        };
        self.set_state(state, reason, now);
    }

    fn on_decoded(&mut self, decoded: Decoded, now: u64) {
        match decoded {
            Decoded::Pending => {}
            Decoded::Engine(EioPacket::Open(h)) => {
                self.heartbeat_ms = h.ping_interval + h.ping_timeout;
                self.learn_max_payload(h.max_payload);
                if let Phase::Opening { handshake, .. } = &mut self.phase {
                    *handshake = true;
                }
                let mut auth = String::from("{\"token\":");
                json::write_string(&mut auth, self.token.as_deref().unwrap_or_default());
                if !self.positions.is_empty() {
                    auth.push_str(",\"resume\":{");
                    for (i, (stream, (epoch, seq))) in self.positions.iter().enumerate() {
                        if i > 0 {
                            auth.push(',');
                        }
                        json::write_string(&mut auth, stream);
                        auth.push_str(":{\"epoch\":");
                        json::write_string(&mut auth, epoch);
                        auth.push_str(",\"seq\":");
                        auth.push_str(&seq.to_string());
                        auth.push('}');
                    }
                    auth.push('}');
                }
                // Connection-state recovery, as an official server expects it.
                if let (Some(pid), Some(offset)) = (&self.pid, &self.offset) {
                    auth.push_str(",\"pid\":");
                    json::write_string(&mut auth, pid);
                    auth.push_str(",\"offset\":");
                    json::write_string(&mut auth, offset);
                }
                auth.push('}');
                let p = Packet::new(PacketType::Connect, None, Some(auth));
                self.send_packet(&p);
            }
            Decoded::Engine(EioPacket::Ping(data)) => {
                if let Phase::Live {
                    heartbeat_deadline, ..
                } = &mut self.phase
                {
                    *heartbeat_deadline = now + self.heartbeat_ms;
                }
                self.out.push_back(Output::SendText(tagged('3', &data)));
            }
            Decoded::Engine(EioPacket::Close) => {
                self.drop_socket("server closed the transport", now);
            }
            Decoded::Engine(_) => {}
            Decoded::Socket(p) if p.nsp != "/" => {}
            Decoded::Socket(p) => self.on_packet(p, now),
        }
    }

    fn on_packet(&mut self, p: Packet, now: u64) {
        match p.kind {
            PacketType::Connect => {
                if !matches!(self.phase, Phase::Opening { .. }) {
                    return;
                }
                self.phase = Phase::Live {
                    since: now,
                    heartbeat_deadline: now + self.heartbeat_ms,
                };
                self.auth_retried = false;
                self.disconnected_since = None;
                self.last_error.clear();
                self.retry_hint = None;
                self.close_reason = None;
                // A server with connection-state recovery answers with a
                // `pid` and appends an offset to every event it emits; the
                // same `pid` as before means it recovered our session.
                let pid = p
                    .data
                    .as_deref()
                    .and_then(|d| json::get(d, "pid"))
                    .and_then(json::string);
                self.recovered = pid.is_some() && pid == self.pid;
                if !self.recovered {
                    self.offset = None;
                }
                self.pid = pid;
                self.server = ServerKind::Unknown;
                let reason = if self.recovered {
                    "connected; the server recovered the session"
                } else {
                    "connected"
                };
                self.set_state(ConnectionState::Connected, reason, now);
                self.flush_outbox(now);
                for e in std::mem::take(&mut self.emits) {
                    self.send_emit(e);
                }
                for p in std::mem::take(&mut self.early) {
                    self.on_packet(p, now);
                }
            }
            PacketType::ConnectError => {
                let refusal = Refusal::of(p.data.as_deref());
                let message = refusal.message();
                if refusal != Refusal::Unauthorized {
                    // Refused for another reason (a connection cap, a gateway
                    // shutting down): an ordinary failed attempt, retried.
                    self.drop_socket(&format!("connection refused: {message}"), now);
                    return;
                }
                self.out.push_back(Output::Close);
                self.socket_gone();
                if self.auth_retried {
                    self.fail(&format!("connection refused: {message}"), now);
                } else {
                    // Maybe the token expired: ask for a fresh one, once.
                    self.auth_retried = true;
                    self.last_error = format!("connection refused: {message}");
                    self.disconnected_since.get_or_insert(now);
                    self.attempt += 1;
                    self.start_attempt(now, "connection refused; retrying with a fresh token");
                }
            }
            PacketType::Disconnect => self.drop_socket("server disconnected the socket", now),
            PacketType::Ack | PacketType::BinaryAck => {
                let Some(ack_id) = p.id else { return };
                if self.probe == Some(ack_id) {
                    // The link is alive: back to the server's heartbeat.
                    self.probe = None;
                    if let Phase::Live {
                        heartbeat_deadline, ..
                    } = &mut self.phase
                    {
                        *heartbeat_deadline = now + self.heartbeat_ms;
                    }
                    return;
                }
                let Some((args, attachments)) = p.into_ack_args() else {
                    return;
                };
                if let Some(i) = self.raw_acks.iter().position(|(a, _)| *a == ack_id) {
                    let (_, id) = self.raw_acks.swap_remove(i);
                    let args = Args { args, attachments };
                    self.out.push_back(Output::Replied(id, Ok(args)));
                    return;
                }
                // A Liveline gateway sends its welcome before any ack, so
                // a server still unknown here is a plain one.
                let result = match args.first() {
                    None => Ok("null".to_owned()),
                    Some(first) if self.server == ServerKind::Liveline => ack_result(first),
                    Some(first) => Ok(first.trim().to_owned()),
                };
                if let Some(id) = self.outbox.acked(ack_id) {
                    self.out.push_back(Output::Ack(id, result));
                    self.queue_changed();
                }
            }
            PacketType::Event | PacketType::BinaryEvent
                if matches!(self.phase, Phase::Opening { .. }) =>
            {
                if self.early.len() >= MAX_EARLY_EVENTS {
                    // Memory stays bounded; the next CONNECT asks for a new
                    // session instead of the same flood again.
                    self.pid = None;
                    self.offset = None;
                    self.drop_socket(
                        &format!(
                            "the server sent more than {MAX_EARLY_EVENTS} events before its \
                             CONNECT reply; its session is not recovered"
                        ),
                        now,
                    );
                    return;
                }
                self.early.push(p);
            }
            PacketType::Event | PacketType::BinaryEvent => {
                let ack = p.id;
                let Some((name, mut args, attachments)) = p.into_event() else {
                    return;
                };
                if self.pid.is_some()
                    && ack.is_none()
                    && args.last().is_some_and(|a| a.starts_with('"'))
                {
                    // The recovery offset is the server's business, not the
                    // app's: kept for the next CONNECT, not passed on.
                    self.offset = args.pop().as_deref().and_then(json::string);
                }
                let ev = Incoming {
                    name,
                    args,
                    attachments,
                };
                if self.server == ServerKind::Unknown {
                    // The first event says what the server is.
                    let welcome = ev.name == contract::SESSION_WELCOME_V1;
                    self.server = if welcome {
                        ServerKind::Liveline
                    } else {
                        ServerKind::SocketIo
                    };
                    self.out.push_back(Output::Server(self.server));
                    if welcome {
                        return;
                    }
                }
                match self.server {
                    ServerKind::Liveline => self.deliver(ev, ack, now),
                    _ => self.out.push_back(Output::Event(ev, ack)),
                }
            }
        }
    }

    /// Applies the resume tracker: drops duplicates, asks for a replay on a
    /// gap or an event from another epoch, advances the position before the
    /// app sees the event.
    fn deliver(&mut self, ev: Incoming, ack: Option<u64>, now: u64) {
        match ev.name.as_str() {
            contract::SESSION_SHUTDOWN_V1 => {
                // The node is going away: come back when it says, not at
                // once, so clients spread over the other nodes.
                let hint = ev
                    .args
                    .first()
                    .and_then(|a| json::get(a, "retryInMs"))
                    .and_then(json::u64);
                self.retry_hint = hint.map(|ms| ms.min(self.config.backoff.max_ms));
                self.close_reason = Some("gateway shutting down".to_owned());
            }
            contract::SESSION_EXPIRED_V1 => {
                self.close_reason = Some("session expired: token_expired".to_owned());
            }
            contract::SESSION_REVOKED_V1 => {
                self.close_reason = Some("session revoked".to_owned());
            }
            _ => {}
        }
        if let Some(notice) = ev.recovered() {
            let r = match notice {
                Ok(r) => r,
                Err(e) => return self.out.push_back(Output::Invalid(e)),
            };
            self.replays_pending.remove(&r.stream);
            if !r.recovered {
                let known = self
                    .positions
                    .get(&r.stream)
                    .is_some_and(|(e, s)| *e == r.epoch && *s >= r.seq);
                if known {
                    // A stale notice: we already hold everything it speaks of.
                    return;
                }
                // History is gone: continue from the head; the app reloads a snapshot.
                self.positions
                    .insert(r.stream.clone(), (r.epoch.clone(), r.seq));
            }
            self.out.push_back(Output::Event(ev, ack));
            return;
        }
        let position = match ev.position() {
            Ok(Some(p)) => p,
            Ok(None) => return self.out.push_back(Output::Event(ev, ack)),
            Err(e) => return self.out.push_back(Output::Invalid(e)),
        };
        let Position { stream, epoch, seq } = &position;
        let (stream, epoch, seq) = (stream.as_str(), epoch.as_str(), *seq);
        if let Some((known_epoch, last)) = self.positions.get(stream) {
            if known_epoch == epoch && seq <= *last {
                return; // duplicate
            }
            if known_epoch != epoch || seq > last + 1 {
                // A hole, or an epoch we do not hold (a newer one after lost
                // history, or a stale resend of an older one: epochs do not
                // order). The server answers from our position with the
                // missing events in order, or with `recovered: false`.
                let stream = stream.to_owned();
                self.request_replay(&stream, now);
                return;
            }
        }
        let stream = stream.to_owned();
        let epoch = epoch.to_owned();
        self.replays_pending.remove(&stream);
        self.positions.insert(stream, (epoch, seq));
        self.out.push_back(Output::Event(ev, ack));
    }

    /// Asks once per position for what follows it on `stream`.
    fn request_replay(&mut self, stream: &str, now: u64) {
        let Some((epoch, seq)) = self.positions.get(stream).cloned() else {
            return;
        };
        let asked = self
            .replays_pending
            .get(stream)
            .is_some_and(|(e, s, _)| *e == epoch && *s == seq);
        if asked {
            return;
        }
        let req = format!(
            "[{},{{\"stream\":{},\"epoch\":{},\"seq\":{seq}}}]",
            json::quote(contract::ACTION_STREAM_REPLAY_V1),
            json::quote(stream),
            json::quote(&epoch),
        );
        let deadline = now + self.config.ack_timeout_ms;
        self.replays_pending
            .insert(stream.to_owned(), (epoch, seq, deadline));
        let p = Packet::new(PacketType::Event, None, Some(req));
        self.send_packet(&p);
    }

    /// The server told its largest frame: actions queued before that are
    /// too large end now with `payload_too_large`, so none blocks the queue
    /// or makes the server drop the connection.
    fn learn_max_payload(&mut self, max: u64) {
        self.max_payload = usize::try_from(max).unwrap_or(usize::MAX);
        if self.max_payload == 0 {
            return;
        }
        let gone = self.outbox.remove_oversize(self.max_payload, |a| {
            action_frame_len(&a.name, &a.key, &a.data)
        });
        if gone.is_empty() {
            return;
        }
        for (id, size) in gone {
            let message = format!(
                "action is {size} bytes on the wire; the server accepts at most {}",
                self.max_payload
            );
            self.out.push_back(Output::Ack(
                id,
                Err(ActionError::Rejected {
                    code: contract::error_code::PAYLOAD_TOO_LARGE.to_owned(),
                    message,
                }),
            ));
        }
        self.queue_changed();
    }

    fn flush_outbox(&mut self, now: u64) {
        let timeout = self.config.ack_timeout_ms;
        let mut packets = Vec::new();
        while let Some(action) = self.outbox.next_unsent() {
            self.next_ack_id += 1;
            let ack_id = self.next_ack_id;
            let payload = action_payload(&action.name, &action.key, &action.data);
            let id = action.id;
            packets.push(Packet::new(PacketType::Event, Some(ack_id), Some(payload)));
            self.outbox.mark_sent(id, ack_id, now + timeout);
        }
        for p in packets {
            self.send_packet(&p);
        }
    }

    /// Ends a raw emit whose ack will not come: the link went (the server
    /// may or may not have handled it) or the client closed.
    fn fail_emit(&mut self, id: u64) {
        self.out.push_back(Output::Replied(
            id,
            Err(ActionError::Rejected {
                code: contract::error_code::DISCONNECTED.to_owned(),
                message: "no ack: the connection ended first".to_owned(),
            }),
        ));
    }

    /// Sends a raw emit now (the socket is live).
    fn send_emit(&mut self, e: RawEmit) {
        let ack = e.id.map(|id| {
            self.next_ack_id += 1;
            self.raw_acks.push((self.next_ack_id, id));
            self.next_ack_id
        });
        let kind = if e.attachments.is_empty() {
            PacketType::Event
        } else {
            PacketType::BinaryEvent
        };
        let mut p = Packet::new(kind, ack, Some(e.data));
        p.attachments = e.attachments;
        self.send_packet(&p);
        for a in p.attachments {
            self.out.push_back(Output::SendBinary(a));
        }
    }

    fn send_packet(&mut self, p: &Packet) {
        self.out
            .push_back(Output::SendText(tagged('4', &p.encode())));
    }

    fn check_liveness(&mut self, now: u64, reason: &str) {
        // Only a Liveline gateway is known to answer probes.
        if self.config.liveness_probe && self.server == ServerKind::Liveline {
            if self.probe.is_some() {
                return;
            }
            self.next_ack_id += 1;
            let id = self.next_ack_id;
            self.probe = Some(id);
            let p = Packet::new(
                PacketType::Event,
                Some(id),
                Some(format!("[{}]", json::quote(contract::PROBE_V1))),
            );
            self.send_packet(&p);
            if let Phase::Live {
                heartbeat_deadline, ..
            } = &mut self.phase
            {
                *heartbeat_deadline = (*heartbeat_deadline).min(now + self.config.probe_timeout_ms);
            }
            return;
        }
        // Pings stopped while the page slept: the link is probably dead.
        let ping_interval = self.heartbeat_ms.saturating_sub(self.heartbeat_ms / 3);
        if now.saturating_sub(self.last_rx) > ping_interval {
            self.drop_socket(
                &format!("{reason}: no ping for {} ms", now - self.last_rx),
                now,
            );
        }
    }

    /// We end the socket ourselves (timeout, protocol error).
    fn drop_socket(&mut self, reason: &str, now: u64) {
        self.out.push_back(Output::Close);
        self.lost(reason, now);
    }

    /// The socket is gone: schedule a retry.
    fn lost(&mut self, reason: &str, now: u64) {
        if let Phase::Live { since, .. } = self.phase {
            if now.saturating_sub(since) >= self.config.stable_after_ms {
                self.attempt = 0;
            }
        }
        self.socket_gone();
        self.last_error = self
            .close_reason
            .take()
            .unwrap_or_else(|| reason.to_owned());
        self.disconnected_since.get_or_insert(now);
        self.attempt += 1;
        let suspended = self.is_suspended(now);
        let delay = if let Some(hint) = self.retry_hint.take() {
            hint
        } else if suspended {
            self.rng
                .random_range(self.config.suspended_retry_ms / 2..=self.config.suspended_retry_ms)
        } else {
            self.config.backoff.delay(self.attempt - 1, &mut self.rng)
        };
        self.phase = Phase::Waiting { at: now + delay };
        self.refresh_waiting_state(now + delay, now);
    }

    /// Forgets what belonged to the socket: a half-received packet, acks and
    /// replays it was waiting for.
    fn socket_gone(&mut self) {
        self.probe = None;
        self.early.clear();
        self.server = ServerKind::Unknown;
        for (_, id) in std::mem::take(&mut self.raw_acks) {
            self.fail_emit(id);
        }
        self.decoder.reset();
        self.outbox.unsend_all();
        self.replays_pending.clear();
    }

    fn is_suspended(&self, now: u64) -> bool {
        self.disconnected_since
            .is_some_and(|t| now.saturating_sub(t) >= self.config.suspend_after_ms)
    }

    fn refresh_waiting_state(&mut self, at: u64, now: u64) {
        let retry_in_ms = at.saturating_sub(now);
        let state = if self.is_suspended(now) {
            ConnectionState::Suspended { retry_in_ms }
        } else {
            ConnectionState::Reconnecting {
                attempt: self.attempt,
                retry_in_ms,
                last_error: self.last_error.clone(),
            }
        };
        // A countdown that only ticked is no change worth a notice; a new
        // state or a new attempt is.
        let same = matches!(
            (&self.state, &state),
            (ConnectionState::Reconnecting { attempt: a, .. }, ConnectionState::Reconnecting { attempt: b, .. }) if a == b
        ) || matches!(
            (&self.state, &state),
            (
                ConnectionState::Suspended { .. },
                ConnectionState::Suspended { .. }
            )
        );
        if same {
            self.state = state;
        } else {
            let reason = self.last_error.clone();
            self.set_state(state, &reason, now);
        }
    }

    fn queue_changed(&mut self) {
        self.out.push_back(Output::Queue(self.outbox.len()));
    }

    fn fail(&mut self, reason: &str, now: u64) {
        self.socket_gone();
        self.phase = Phase::Failed(reason.to_owned());
        self.set_state(
            ConnectionState::Failed {
                reason: reason.to_owned(),
            },
            reason,
            now,
        );
    }

    fn set_state(&mut self, state: ConnectionState, reason: &str, _now: u64) {
        let previous = self.state.name();
        self.state = state.clone();
        self.out.push_back(Output::State(StateChange {
            current: state,
            previous,
            reason: reason.to_owned(),
            queued: self.outbox.len(),
            recovered: self.recovered && self.state.is_connected(),
        }));
    }
}

/// Why a server refused a CONNECT, read from its error code: the
/// `connect_error` payload's `message` (a Liveline gateway's codes, or an
/// official server's `new Error("unauthorized")`), or its `data.code` (an
/// official server's `err.data = {code: "unauthorized"}`). Never guessed from
/// words in a free-text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `unauthorized`: the credentials; a fresh token may help once, a
    /// second refusal in a row is final.
    Unauthorized,
    /// `too_many_connections`: the user's connection cap; retried with backoff.
    TooManyConnections,
    /// `too_many_streams`: too many streams to resume; retried with backoff.
    TooManyStreams,
    /// `unavailable`: the server cannot serve now (its broker, a shutdown);
    /// retried with backoff.
    Unavailable,
    /// Any other reason, as the server put it; retried with backoff.
    Other(String),
}

impl Refusal {
    /// The refusal a `connect_error` payload (JSON text) carries.
    pub fn of(data: Option<&str>) -> Self {
        let message = data.and_then(|d| {
            json::string(d).or_else(|| json::get(d, "message").and_then(json::string))
        });
        let code = data
            .and_then(|d| json::get(d, "data"))
            .and_then(|d| json::get(d, "code"))
            .and_then(json::string);
        let named = |c: &str| match c {
            "unauthorized" => Some(Self::Unauthorized),
            "too_many_connections" => Some(Self::TooManyConnections),
            "too_many_streams" => Some(Self::TooManyStreams),
            "unavailable" => Some(Self::Unavailable),
            _ => None,
        };
        code.as_deref()
            .and_then(named)
            .or_else(|| message.as_deref().and_then(named))
            .unwrap_or_else(|| Self::Other(message.unwrap_or_else(|| "refused".to_owned())))
    }

    /// The reason as the connection state shows it.
    pub fn message(&self) -> String {
        match self {
            Self::Unauthorized => "unauthorized".to_owned(),
            Self::TooManyConnections => "too_many_connections".to_owned(),
            Self::TooManyStreams => "too_many_streams".to_owned(),
            Self::Unavailable => "unavailable".to_owned(),
            Self::Other(m) => m.clone(),
        }
    }
}

/// Reads an ack's first argument: `{"ok":true,"data":..}` gives the data,
/// `{"ok":false,"error":{code,message}}` a refusal; anything else (a plain
/// Socket.IO server's ack) is the result as it is.
fn ack_result(first: &str) -> Result<String, ActionError> {
    match json::get(first, "ok").and_then(json::bool) {
        Some(true) => Ok(json::get(first, "data").unwrap_or("null").trim().to_owned()),
        Some(false) => {
            let error = json::get(first, "error").unwrap_or("{}");
            let text = |k: &str| {
                json::get(error, k)
                    .and_then(json::string)
                    .unwrap_or_default()
            };
            Err(ActionError::Rejected {
                code: text("code"),
                message: text("message"),
            })
        }
        None => Ok(first.trim().to_owned()),
    }
}

/// The Socket.IO payload of an action: `[name, {"key", "data"}]`.
fn action_payload(name: &str, key: &str, data: &str) -> String {
    format!(
        "[{},{{\"key\":{},\"data\":{}}}]",
        json::quote(name),
        json::quote(key),
        data
    )
}

/// The size of an action's frame on the wire: `42`, an ack id of at most
/// 20 digits, the payload.
fn action_frame_len(name: &str, key: &str, data: &str) -> usize {
    2 + 20 + action_payload(name, key, data).len()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const HANDSHAKE: &str =
        r#"0{"sid":"s","upgrades":[],"pingInterval":1000,"pingTimeout":500,"maxPayload":100000}"#;

    /// What a Liveline gateway sends first after its CONNECT reply.
    const WELCOME: &str = r#"42["session:welcome:v1",{"protocol":1}]"#;

    fn drain(c: &mut Client) -> Vec<Output> {
        std::iter::from_fn(|| c.poll_output()).collect()
    }

    fn sent(outs: &[Output]) -> Vec<String> {
        outs.iter()
            .filter_map(|o| match o {
                Output::SendText(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    /// Drives a client from idle to connected; returns the output.
    fn connected(now: u64) -> (Client, Vec<Output>) {
        let mut c = Client::new(Config::new("http://gw:8080"), 1);
        c.connect(now);
        c.handle_token(Ok("t".into()), now);
        c.handle_open(now);
        c.handle_text(HANDSHAKE, now);
        c.handle_text("40{\"sid\":\"x\"}", now);
        c.handle_text(WELCOME, now);
        let out = drain(&mut c);
        (c, out)
    }

    /// A client whose token was refused twice in a row (so it failed).
    fn refused_twice() -> Client {
        let mut c = Client::new(Config::new("http://gw"), 1);
        c.connect(0);
        for _ in 0..2 {
            c.handle_token(Ok("bad".into()), 0);
            c.handle_open(0);
            c.handle_text(HANDSHAKE, 0);
            c.handle_text(r#"44{"message":"unauthorized"}"#, 0);
        }
        c
    }

    fn status_event(seq: u64, epoch: &str) -> String {
        let env = json!({"stream":"job:1","epoch":epoch,"seq":seq,"ts":0,
            "data":{"jobId":"1","status":"running","progress":0.1,"message":""}});
        format!("42{}", json!(["job:status:v1", env]))
    }

    fn delivered_seqs(outs: &[Output]) -> Vec<u64> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Event(ev, _) if ev.name == "job:status:v1" => {
                    ev.position().ok().flatten().map(|p| p.seq)
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn connect_fetches_a_token_opens_the_socket_and_sends_auth() {
        let (c, out) = connected(0);
        assert_eq!(out[0], Output::FetchToken);
        assert_eq!(
            out[2],
            Output::Open("ws://gw:8080/socket.io/?EIO=4&transport=websocket".into())
        );
        assert_eq!(sent(&out), vec![r#"40{"token":"t"}"#.to_owned()]);
        assert!(c.state().is_connected());
        let names: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::State(s) => Some(s.current.name()),
                _ => None,
            })
            .collect();
        assert_eq!(names, vec!["connecting", "connected"]);
    }

    #[test]
    fn pings_are_answered_and_push_the_heartbeat_deadline() {
        let (mut c, _) = connected(0);
        assert_eq!(c.poll_timeout(), Some(1_500));
        c.handle_text("2", 1_000);
        assert_eq!(sent(&drain(&mut c)), vec!["3".to_owned()]);
        assert_eq!(c.poll_timeout(), Some(2_500));
    }

    #[test]
    fn a_silent_link_is_dropped_after_interval_plus_timeout_and_retried() {
        let (mut c, _) = connected(0);
        c.handle_timeout(1_500);
        let out = drain(&mut c);
        assert!(out.contains(&Output::Close));
        let ConnectionState::Reconnecting {
            attempt,
            retry_in_ms,
            last_error,
        } = c.state().clone()
        else {
            panic!("not reconnecting: {:?}", c.state())
        };
        assert_eq!((attempt, last_error.as_str()), (1, "heartbeat timeout"));
        assert!(retry_in_ms <= Backoff::default().window(0));
        c.handle_timeout(1_500 + retry_in_ms);
        assert_eq!(drain(&mut c).first(), Some(&Output::FetchToken));
    }

    #[test]
    fn a_second_refusal_in_a_row_fails_with_the_reason() {
        let c = refused_twice();
        assert_eq!(
            c.state(),
            &ConnectionState::Failed {
                reason: "connection refused: unauthorized".into()
            }
        );
        assert_eq!(c.poll_timeout(), None, "a failed client does not retry");
    }

    #[test]
    fn duplicates_are_dropped_and_a_gap_asks_for_a_replay() {
        let (mut c, _) = connected(0);
        for seq in [1, 2, 2, 1, 4] {
            c.handle_text(&status_event(seq, "e"), 1);
        }
        let out = drain(&mut c);
        assert_eq!(delivered_seqs(&out), vec![1, 2]);
        assert_eq!(
            sent(&out),
            vec![r#"42["stream:replay:v1",{"stream":"job:1","epoch":"e","seq":2}]"#.to_owned()]
        );
        c.handle_text(&status_event(3, "e"), 2);
        c.handle_text(&status_event(4, "e"), 2);
        assert_eq!(delivered_seqs(&drain(&mut c)), vec![3, 4]);
        assert_eq!(c.position("job:1"), Some(("e", 4)));
    }

    #[test]
    fn an_event_from_another_epoch_asks_for_a_replay_instead_of_moving_back() {
        let (mut c, _) = connected(0);
        c.handle_text(&status_event(1, "e1"), 1);
        c.handle_text(&status_event(2, "e1"), 1);
        let _ = drain(&mut c);
        // A stale resend from an older epoch must not rewind the position.
        c.handle_text(&status_event(1, "e0"), 2);
        let out = drain(&mut c);
        assert_eq!(delivered_seqs(&out), Vec::<u64>::new());
        assert_eq!(
            sent(&out),
            vec![r#"42["stream:replay:v1",{"stream":"job:1","epoch":"e1","seq":2}]"#.to_owned()]
        );
        assert_eq!(c.position("job:1"), Some(("e1", 2)));
        // The server answers: history is gone, the head is (e2, 5).
        let notice = r#"42["stream:recovered:v1",{"stream":"job:1","recovered":false,"epoch":"e2","seq":5}]"#;
        c.handle_text(notice, 3);
        c.handle_text(&status_event(6, "e2"), 3);
        assert_eq!(delivered_seqs(&drain(&mut c)), vec![6]);
        assert_eq!(c.position("job:1"), Some(("e2", 6)));
    }

    #[test]
    fn an_unanswered_replay_resumes_by_reconnecting() {
        let (mut c, _) = connected(0);
        c.handle_text(&status_event(1, "e"), 1);
        c.handle_text(&status_event(3, "e"), 1);
        let _ = drain(&mut c);
        let deadline = 1 + Config::new("x").ack_timeout_ms;
        assert_eq!(c.poll_timeout(), Some(1_500), "heartbeat first");
        c.handle_text("2", 1_000);
        c.handle_text("2", 2_000);
        c.handle_text("2", 3_000);
        for t in (4_000..deadline).step_by(1_000) {
            c.handle_text("2", t);
        }
        c.handle_timeout(deadline);
        let out = drain(&mut c);
        assert!(out.contains(&Output::Close), "{out:?}");
        assert_eq!(c.state().name(), "reconnecting");
    }

    #[test]
    fn a_server_disconnect_closes_the_socket() {
        let (mut c, _) = connected(0);
        c.handle_text("41", 5);
        assert!(drain(&mut c).contains(&Output::Close));
        assert_eq!(c.state().name(), "reconnecting");
    }

    #[test]
    fn closing_twice_reports_one_change() {
        let (mut c, _) = connected(0);
        c.close(1);
        c.close(2);
        let changes = drain(&mut c)
            .into_iter()
            .filter(|o| matches!(o, Output::State(_)))
            .count();
        assert_eq!(changes, 1);
    }

    #[test]
    fn reconnect_carries_the_resume_position_in_connect() {
        let (mut c, _) = connected(0);
        c.handle_text(&status_event(1, "e"), 1);
        c.handle_closed("reset", 2);
        let _ = drain(&mut c);
        c.handle_timeout(60_000);
        c.handle_token(Ok("t".into()), 60_000);
        c.handle_open(60_000);
        c.handle_text(HANDSHAKE, 60_000);
        assert_eq!(
            sent(&drain(&mut c)),
            vec![r#"40{"token":"t","resume":{"job:1":{"epoch":"e","seq":1}}}"#.to_owned()]
        );
    }

    #[test]
    fn actions_wait_offline_and_go_out_once_connected_with_their_key() {
        let mut c = Client::new(Config::new("http://gw"), 1);
        let id = c
            .send("job:start:v1", r#"{"kind":"llm"}"#, 0)
            .expect("queued");
        assert_eq!(c.queued(), 1);
        c.connect(0);
        c.handle_token(Ok("t".into()), 0);
        c.handle_text(HANDSHAKE, 0);
        c.handle_text("40{}", 0);
        c.handle_text(WELCOME, 0);
        let frames = sent(&drain(&mut c));
        let last = frames.last().expect("action sent");
        assert!(
            last.starts_with(r#"421["job:start:v1",{"key":""#)
                && last.ends_with(r#"","data":{"kind":"llm"}}]"#),
            "{last}"
        );
        c.handle_text(r#"431[{"ok":true,"data":{"jobId":"9"}}]"#, 5);
        let out = drain(&mut c);
        assert!(out.contains(&Output::Ack(id, Ok(r#"{"jobId":"9"}"#.to_owned()))));
        assert_eq!(c.queued(), 0);
    }

    #[test]
    fn offline_stops_retrying_and_online_reconnects_at_once() {
        let (mut c, _) = connected(0);
        c.handle_network(false, 10);
        assert_eq!(c.state(), &ConnectionState::Offline);
        assert!(drain(&mut c).contains(&Output::Close));
        assert_eq!(c.poll_timeout(), None);
        c.handle_network(true, 20);
        assert_eq!(drain(&mut c).first(), Some(&Output::FetchToken));
        assert_eq!(c.state().name(), "reconnecting");
    }

    #[test]
    fn a_long_outage_becomes_suspended() {
        let (mut c, _) = connected(0);
        c.handle_closed("reset", 0);
        let mut now = 0;
        for _ in 0..200 {
            let Some(at) = c.poll_timeout() else { break };
            now = at;
            c.handle_timeout(now);
            if c.state().name() == "suspended" {
                break;
            }
            // Each attempt fails to open.
            c.handle_token(Ok("t".into()), now);
            c.handle_closed("refused", now);
        }
        assert_eq!(c.state().name(), "suspended", "after {now} ms");
        assert!(now >= Config::new("x").suspend_after_ms);
    }

    #[test]
    fn send_while_failed_is_refused_at_once_and_queues_nothing() {
        let mut c = refused_twice();
        assert_eq!(c.state().name(), "failed");
        let err = c
            .send("job:start:v1", r#"{"kind":"llm"}"#, 1)
            .expect_err("refused while failed");
        assert_eq!(
            err,
            SendError::Failed("connection refused: unauthorized".into())
        );
        assert!(c.outbox_snapshot(0, 0).is_empty(), "nothing queued");
    }

    #[test]
    fn refusals_are_read_from_the_servers_code_not_guessed_from_words() {
        assert_eq!(
            Refusal::of(Some(r#"{"message":"unauthorized"}"#)),
            Refusal::Unauthorized
        );
        assert_eq!(
            Refusal::of(Some(r#""unauthorized""#)),
            Refusal::Unauthorized
        );
        assert_eq!(
            Refusal::of(Some(
                r#"{"message":"not allowed","data":{"code":"unauthorized"}}"#
            )),
            Refusal::Unauthorized
        );
        assert_eq!(
            Refusal::of(Some(r#"{"message":"too_many_connections"}"#)),
            Refusal::TooManyConnections
        );
        assert_eq!(
            Refusal::of(Some(r#"{"message":"unavailable"}"#)),
            Refusal::Unavailable
        );
        // Words about tokens in a free-text message are not an auth refusal:
        // a false match would give up for good.
        for text in [
            "token bucket full",
            "auth service slow",
            "JWT cache warming",
        ] {
            let payload = format!(r#"{{"message":"{text}"}}"#);
            assert_eq!(Refusal::of(Some(&payload)), Refusal::Other(text.to_owned()));
        }
        assert_eq!(Refusal::of(None), Refusal::Other("refused".to_owned()));
    }

    #[test]
    fn a_refusal_that_is_not_about_the_token_is_retried_with_backoff() {
        let mut c = Client::new(Config::new("http://gw"), 1);
        c.connect(0);
        // A message that mentions a token is no auth refusal either: only the
        // server's code is.
        let refusals = [
            r#"44{"message":"connection cap reached"}"#,
            r#"44{"message":"token bucket exhausted"}"#,
            r#"44{"message":"connection cap reached"}"#,
        ];
        for (n, refusal) in (0..).zip(refusals) {
            let now = n * 20_000;
            c.handle_timeout(now);
            c.handle_token(Ok("t".into()), now);
            c.handle_text(HANDSHAKE, now);
            c.handle_text(refusal, now);
            assert_eq!(c.state().name(), "reconnecting", "after refusal {n}");
        }
    }

    #[test]
    fn a_failing_token_source_is_retried_not_fatal() {
        let mut c = Client::new(Config::new("http://gw"), 1);
        c.connect(0);
        c.handle_token(Err("503 from /token".into()), 0);
        let ConnectionState::Reconnecting { last_error, .. } = c.state() else {
            panic!("not reconnecting: {:?}", c.state())
        };
        assert_eq!(last_error, "getToken failed: 503 from /token");
        let at = c.poll_timeout().expect("a retry is scheduled");
        c.handle_timeout(at);
        assert!(drain(&mut c).contains(&Output::FetchToken));
    }

    #[test]
    fn a_recovery_servers_trailing_offset_is_not_the_apps_argument() {
        let mut c = Client::new(Config::new("http://gw"), 1);
        c.connect(0);
        c.handle_token(Ok("t".into()), 0);
        c.handle_text(HANDSHAKE, 0);
        c.handle_text(r#"40{"sid":"s","pid":"p"}"#, 0);
        c.handle_text(r#"42["welcome",{"hi":1},"off-1"]"#, 1);
        c.handle_text(r#"425["ask",1,"not-an-offset"]"#, 1);
        let events: Vec<_> = drain(&mut c)
            .into_iter()
            .filter_map(|o| match o {
                Output::Event(ev, _) => Some(ev.args),
                _ => None,
            })
            .collect();
        assert_eq!(
            events,
            vec![
                vec![r#"{"hi":1}"#.to_owned()],
                vec!["1".to_owned(), r#""not-an-offset""#.to_owned()]
            ]
        );
    }

    #[test]
    fn a_shutdown_notice_sets_the_retry_delay_and_the_reason() {
        let (mut c, _) = connected(0);
        c.handle_text(r#"42["session:shutdown:v1",{"retryInMs":1234}]"#, 10);
        c.handle_text("41", 10);
        let _ = drain(&mut c);
        let ConnectionState::Reconnecting {
            retry_in_ms,
            last_error,
            ..
        } = c.state().clone()
        else {
            panic!("not reconnecting: {:?}", c.state())
        };
        assert_eq!(
            (retry_in_ms, last_error.as_str()),
            (1234, "gateway shutting down")
        );
    }

    #[test]
    fn waking_sends_a_probe_and_an_unanswered_probe_drops_the_link() {
        let (mut c, _) = connected(0);
        c.handle_visibility(true, 100);
        assert_eq!(sent(&drain(&mut c)), vec![r#"421["probe:v1"]"#.to_owned()]);
        assert_eq!(c.poll_timeout(), Some(100 + 3_000).min(Some(1_500)));
        c.handle_text("431[{\"ok\":true,\"data\":{}}]", 200);
        assert_eq!(
            c.poll_timeout(),
            Some(200 + 1_500),
            "answered: back to the heartbeat"
        );

        let mut cfg = Config::new("http://gw");
        cfg.probe_timeout_ms = 50;
        let mut c = Client::new(cfg, 1);
        c.connect(0);
        c.handle_token(Ok("t".into()), 0);
        c.handle_text(HANDSHAKE, 0);
        c.handle_text("40{}", 0);
        c.handle_text(WELCOME, 0);
        c.handle_network(true, 10);
        let _ = drain(&mut c);
        assert_eq!(c.poll_timeout(), Some(60));
        c.handle_timeout(60);
        let ConnectionState::Reconnecting { last_error, .. } = c.state().clone() else {
            panic!("not reconnecting: {:?}", c.state())
        };
        assert_eq!(last_error, "liveness probe timed out");
    }

    #[test]
    fn an_action_over_the_servers_max_payload_is_refused_at_send_and_queues_nothing() {
        let (mut c, _) = connected(0);
        let big = format!("{{\"blob\":\"{}\"}}", "x".repeat(100_000));
        let err = c.send("app:upload:v1", &big, 1).expect_err("refused");
        assert!(
            matches!(err, SendError::PayloadTooLarge { max: 100_000, .. }),
            "{err:?}"
        );
        assert_eq!(c.queued(), 0);
        // The action behind it goes out as usual.
        let id = c
            .send("job:cancel:v1", r#"{"jobId":"1"}"#, 2)
            .expect("queued");
        let frames = sent(&drain(&mut c));
        assert!(
            frames.iter().any(|f| f.contains("job:cancel:v1")),
            "{frames:?}"
        );
        assert_eq!(c.queued(), 1, "{id} waits for its ack");
    }

    #[test]
    fn actions_queued_before_the_handshake_that_are_too_large_end_with_payload_too_large() {
        let mut c = Client::new(Config::new("http://gw:8080"), 1);
        let big = format!("{{\"blob\":\"{}\"}}", "x".repeat(100_000));
        let big_id = c
            .send("app:upload:v1", &big, 0)
            .expect("no limit known yet");
        let small_id = c
            .send("job:cancel:v1", r#"{"jobId":"1"}"#, 0)
            .expect("queued");
        c.connect(0);
        c.handle_token(Ok("t".into()), 0);
        c.handle_open(0);
        c.handle_text(HANDSHAKE, 0);
        c.handle_text("40{}", 0);
        let out = drain(&mut c);
        assert!(
            out.iter().any(
                |o| matches!(o, Output::Ack(id, Err(ActionError::Rejected { code, .. }))
                if *id == big_id && code == "payload_too_large")
            ),
            "{out:?}"
        );
        let frames = sent(&out);
        assert!(
            !frames.iter().any(|f| f.contains("app:upload:v1")),
            "never sent"
        );
        assert!(
            frames.iter().any(|f| f.contains("job:cancel:v1")),
            "{small_id} still goes"
        );
    }

    /// The retry timer fires at `at`: a fresh token, then the server's
    /// handshake (the client answers with its CONNECT).
    fn redial(c: &mut Client, at: u64) {
        c.handle_timeout(at);
        c.handle_token(Ok("t".into()), at);
        c.handle_text(HANDSHAKE, at);
    }

    /// A client connected to a plain Socket.IO server (no welcome), with
    /// `connect` as that server's CONNECT reply.
    fn plain(connect: &str) -> Client {
        let mut c = Client::new(Config::new("http://io"), 1);
        c.connect(0);
        c.handle_token(Ok("t".into()), 0);
        c.handle_open(0);
        c.handle_text(HANDSHAKE, 0);
        c.handle_text(connect, 0);
        c
    }

    fn replied(outs: &[Output]) -> Vec<(u64, Result<Vec<String>, String>)> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Replied(id, r) => Some((
                    *id,
                    r.clone().map(|a| a.args).map_err(|e| match e {
                        ActionError::Rejected { code, .. } => code,
                        e => e.to_string(),
                    }),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn raw_emits_go_out_unchanged_and_their_acks_come_back_unchanged() {
        let mut c = plain("40{\"sid\":\"x\"}");
        let _ = drain(&mut c);
        assert_eq!(
            c.emit("burst", &[r#"{"n":1000}"#], Vec::new(), false),
            Ok(None)
        );
        let id = c
            .emit("sum", &["1", " 2 ", r#""three""#], Vec::new(), true)
            .expect("sent")
            .expect("an ack id");
        assert_eq!(
            sent(&drain(&mut c)),
            vec![
                r#"42["burst",{"n":1000}]"#.to_owned(),
                r#"421["sum",1,2,"three"]"#.to_owned()
            ]
        );
        // An ack shaped like Liveline's is still the server's own arguments.
        c.handle_text(r#"431[{"ok":true,"data":3},"extra"]"#, 1);
        assert_eq!(
            replied(&drain(&mut c)),
            vec![(
                id,
                Ok(vec![r#"{"ok":true,"data":3}"#.into(), r#""extra""#.into()])
            )]
        );
    }

    #[test]
    fn a_binary_emit_sends_its_attachments_as_frames_after_the_packet() {
        let mut c = plain("40{}");
        let _ = drain(&mut c);
        c.emit(
            "upload",
            &[r#"{"_placeholder":true,"num":0}"#, r#""name""#],
            vec![vec![1, 2, 3]],
            false,
        )
        .expect("sent");
        let out = drain(&mut c);
        assert_eq!(
            out,
            vec![
                Output::SendText(r#"451-["upload",{"_placeholder":true,"num":0},"name"]"#.into()),
                Output::SendBinary(vec![1, 2, 3]),
            ]
        );
    }

    #[test]
    fn raw_emits_wait_for_the_connection_up_to_the_buffer_bound() {
        let mut cfg = Config::new("http://io");
        cfg.emit_buffer = 2;
        let mut c = Client::new(cfg, 1);
        c.emit("a", &["1"], Vec::new(), false).expect("buffered");
        c.emit("b", &["2"], Vec::new(), false).expect("buffered");
        assert_eq!(
            c.emit("c", &["3"], Vec::new(), false),
            Err(SendError::BufferFull(2))
        );
        assert!(matches!(
            c.emit("d", &["{"], Vec::new(), false),
            Err(SendError::InvalidJson(_))
        ));
        c.connect(0);
        c.handle_token(Ok("t".into()), 0);
        c.handle_text(HANDSHAKE, 0);
        c.handle_text("40{}", 0);
        let frames = sent(&drain(&mut c));
        assert_eq!(
            &frames[1..],
            &[r#"42["a",1]"#.to_owned(), r#"42["b",2]"#.to_owned()]
        );
        // Sent, never again: a reconnect does not repeat them.
        c.handle_closed("reset", 1);
        redial(&mut c, 60_000);
        c.handle_text("40{}", 60_000);
        assert_eq!(sent(&drain(&mut c)).len(), 1, "only the CONNECT");
    }

    #[test]
    fn an_emit_waiting_for_its_ack_ends_disconnected_when_the_link_goes() {
        let mut c = plain("40{}");
        let id = c
            .emit("slow", &[], Vec::new(), true)
            .expect("sent")
            .expect("id");
        let queued = c
            .emit("later", &[], Vec::new(), true)
            .map(|_| ())
            .and_then(|()| {
                c.handle_closed("reset", 1);
                c.emit("while-down", &[], Vec::new(), true)
            })
            .expect("buffered")
            .expect("id");
        let out = drain(&mut c);
        let ends = replied(&out);
        assert_eq!(ends.len(), 2, "{ends:?}");
        assert!(ends.contains(&(id, Err("disconnected".into()))));
        // The one buffered while down ends when the app closes.
        c.close(2);
        assert_eq!(
            replied(&drain(&mut c)),
            vec![(queued, Err("disconnected".into()))]
        );
    }

    #[test]
    fn a_plain_servers_events_and_acks_reach_the_app_as_sent() {
        let mut c = plain("40{}");
        let id = c.send("echo:v1", "{}", 0).expect("queued");
        // Two events with the same envelope position: a plain server's
        // payloads are not Liveline envelopes, so both arrive.
        c.handle_text(&status_event(1, "e"), 1);
        c.handle_text(&status_event(1, "e"), 1);
        c.handle_text(r#"431[{"ok":false,"error":{"code":"x"}}]"#, 2);
        let out = drain(&mut c);
        assert_eq!(c.server(), ServerKind::SocketIo);
        assert_eq!(delivered_seqs(&out), vec![1, 1]);
        assert!(
            out.contains(&Output::Ack(
                id,
                Ok(r#"{"ok":false,"error":{"code":"x"}}"#.to_owned())
            )),
            "{out:?}"
        );
        // No probe to a server that does not answer probes.
        c.handle_visibility(true, 3);
        assert!(sent(&drain(&mut c)).is_empty());
    }

    #[test]
    fn the_welcome_marks_a_liveline_gateway_and_is_not_an_app_event() {
        let (c, out) = connected(0);
        assert_eq!(c.server(), ServerKind::Liveline);
        assert!(!out.iter().any(|o| matches!(o, Output::Event(..))));
        // A later welcome-named event from a server already known as plain
        // is an ordinary event.
        let mut c = plain("40{}");
        c.handle_text(r#"42["hello"]"#, 1);
        c.handle_text(WELCOME, 1);
        let names: Vec<_> = drain(&mut c)
            .into_iter()
            .filter_map(|o| match o {
                Output::Event(ev, _) => Some(ev.name),
                _ => None,
            })
            .collect();
        assert_eq!(names, vec!["hello", "session:welcome:v1"]);
        assert_eq!(c.server(), ServerKind::SocketIo);
    }

    #[test]
    fn connection_state_recovery_sends_pid_and_offset_back_and_reports_recovered() {
        let mut c = plain(r#"40{"sid":"s1","pid":"p1"}"#);
        assert!(!c.recovered());
        c.handle_text(r#"42["tick",1,"off-1"]"#, 1);
        c.handle_text(r#"42["tick",2,"off-2"]"#, 1);
        c.handle_closed("reset", 2);
        let _ = drain(&mut c);
        redial(&mut c, 60_000);
        assert_eq!(
            sent(&drain(&mut c)),
            vec![r#"40{"token":"t","pid":"p1","offset":"off-2"}"#.to_owned()]
        );
        c.handle_text(r#"40{"sid":"s2","pid":"p1"}"#, 60_001);
        assert!(c.recovered());
        let reason = drain(&mut c).into_iter().find_map(|o| match o {
            Output::State(s) => Some(s.reason),
            _ => None,
        });
        assert_eq!(
            reason.as_deref(),
            Some("connected; the server recovered the session")
        );
        // A new pid: a new session, and the old offset is forgotten.
        c.handle_closed("reset", 60_002);
        redial(&mut c, 120_000);
        let _ = drain(&mut c);
        c.handle_text(r#"40{"sid":"s3","pid":"p2"}"#, 120_001);
        assert!(!c.recovered());
        c.handle_closed("reset", 120_002);
        redial(&mut c, 180_000);
        assert_eq!(
            sent(&drain(&mut c)),
            vec![r#"40{"token":"t"}"#.to_owned()],
            "no offset of the new session yet: nothing to recover from"
        );
    }

    #[test]
    fn events_before_the_connect_reply_are_bounded_and_the_session_given_up() {
        let mut c = plain(r#"40{"sid":"s1","pid":"p1"}"#);
        c.handle_text(r#"42["tick",1,"off-1"]"#, 1);
        c.handle_closed("reset", 2);
        let _ = drain(&mut c);
        redial(&mut c, 60_000);
        assert_eq!(
            sent(&drain(&mut c)),
            vec![r#"40{"token":"t","pid":"p1","offset":"off-1"}"#.to_owned()]
        );
        // The recovering server floods missed events before its reply: the
        // bound is kept, the next one over it ends the socket.
        for _ in 0..MAX_EARLY_EVENTS {
            c.handle_text(r#"42["tick",2,"off-2"]"#, 60_001);
        }
        assert!(!drain(&mut c).contains(&Output::Close));
        c.handle_text(r#"42["tick",3,"off-3"]"#, 60_001);
        assert!(drain(&mut c).contains(&Output::Close));
        let ConnectionState::Reconnecting { last_error, .. } = c.state() else {
            panic!("{:?}", c.state())
        };
        assert!(
            last_error.contains("before its CONNECT reply"),
            "{last_error}"
        );
        // Nothing of the flood reached the app, and the next CONNECT asks
        // for a new session.
        redial(&mut c, 120_000);
        assert_eq!(sent(&drain(&mut c)), vec![r#"40{"token":"t"}"#.to_owned()]);
        c.handle_text(r#"40{"sid":"s2","pid":"p2"}"#, 120_001);
        let events = drain(&mut c)
            .into_iter()
            .filter(|o| matches!(o, Output::Event(..)))
            .count();
        assert_eq!(events, 0);
    }

    #[test]
    fn a_raw_emit_over_the_servers_max_payload_is_refused() {
        let mut c = plain("40{}");
        let big = format!("\"{}\"", "x".repeat(100_000));
        assert!(matches!(
            c.emit("big", &[&big], Vec::new(), false),
            Err(SendError::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            c.emit("big", &[], vec![vec![0; 100_000]], false),
            Err(SendError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn timers_run_on_the_monotonic_clock_and_only_stored_expiries_use_the_wall_clock() {
        const WALL: u64 = 1_800_000_000_000;
        const HOUR: u64 = 3_600_000;
        let (mut c, _) = connected(1_000);
        c.handle_closed("reset", 1_000);
        let id = c.send("job:start:v1", "{}", 1_000).expect("queued");
        // Stored across a reload, the expiry is wall time: 5 minutes from now.
        let saved = c.outbox_snapshot(WALL, 1_000);
        assert_eq!(saved[0].expires_at, WALL + 300_000);
        // The wall clock steps an hour forward while the page runs: nothing
        // in the core sees it, so nothing expires and no timer fires early.
        let saved = c.outbox_snapshot(WALL + HOUR + 1_000, 2_000);
        assert_eq!(saved[0].expires_at, WALL + HOUR + 1_000 + 299_000);
        c.handle_timeout(2_000);
        assert!(
            !drain(&mut c).iter().any(|o| matches!(o, Output::Ack(..))),
            "no mass expiry"
        );
        assert_eq!(c.queued(), 1);
        // A reload after that step: the new page's monotonic clock starts
        // near 0, and the action keeps the 299 s it had left.
        let mut next = Client::new(Config::new("http://gw"), 2);
        let ids = next.restore_outbox(saved, WALL + HOUR + 1_000, 5);
        assert_eq!(ids.len(), 1);
        next.handle_timeout(5 + 298_000);
        assert_eq!(next.queued(), 1, "not expired before its time");
        next.handle_timeout(5 + 299_000);
        assert_eq!(next.queued(), 0, "expired at its time");
        // And a live connection's heartbeat runs on the same clock only.
        let (mut live, _) = connected(10);
        live.handle_timeout(10 + 1_499);
        assert!(live.state().is_connected());
        let _ = id;
    }
}
