//! The lean front: Engine.IO v4 / Socket.IO v5 over WebSocket, one task per
//! connection, on the SDK's own protocol codec ([`liveline::protocol`]).
//!
//! It serves the connections that open as WebSocket directly
//! (`/socket.io/?EIO=4&transport=websocket` without a `sid`): the Liveline
//! SDK, and official clients with `transports: ["websocket"]`. Long-polling,
//! and polling sessions upgrading to WebSocket, stay with socketioxide
//! ([`crate::sio`]); both feed the same hub and handlers ([`crate::socket`]).
//!
//! [`crate::serve`] hands it every new TCP connection first: it reads the
//! first request head ([`read_head`], [`classify`]) and keeps a WebSocket
//! open, answering the 101 and the Engine.IO open packet in one write
//! ([`accept`]); anything else goes on to hyper with the bytes read. It
//! checks the open as the HTTP stack would: `Sec-WebSocket-Version: 13` and
//! a key (else 400), the `Origin` allowlist (else 403,
//! [`crate::http::origin_refusal`]), a head of at most [`MAX_HEAD`] bytes
//! (else 431), within the header timeout.
//!
//! Per connection it keeps the WebSocket (its read buffer starts at 1 KiB),
//! the heartbeat's two instants, and an outgoing queue that allocates only
//! while it holds frames: no per-socket channel block, no second task. Each
//! event is handled in a task of its own, at most [`MAX_IN_FLIGHT`] per
//! connection at once (socketioxide's front has no such bound).
//!
//! What a client sees is what socketioxide serves: the open packet (no
//! upgrades), a CONNECT to `/` answered with `{"sid"}` (the Engine.IO sid)
//! and the welcome in the same write, or refused with `{"message"}` (other
//! namespaces: `Invalid namespace`), events and acks as JSON text, a ping
//! every `ping_interval` answered within `ping_timeout`. A binary frame, a
//! binary packet, a malformed packet or a message over
//! [`crate::Config::max_message_bytes`] closes the connection, as does no
//! CONNECT within `connect_timeout` or a missed pong (the WebSocket closes
//! without an Engine.IO close packet, which socketioxide sends first).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use liveline::protocol::{EioPacket, Handshake, Packet, PacketType};
use serde_json::Value;
use serde_json::value::RawValue;
use socketioxide::socket::Sid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::AppState;
use crate::conn::{Ack, Conn, EmitError, Session, Transport, lock};
use crate::edge::Evictable;
use crate::socket;

/// Events of one connection handled at once at most. Past it the connection
/// is not read until one ends: the client's frames wait in its TCP buffers
/// (and it is slowed down by TCP), nothing is dropped, and the gateway holds
/// a bounded number of handler tasks per connection.
pub const MAX_IN_FLIGHT: usize = 32;

/// Frames queued for one connection go out in one write up to this many
/// bytes (tungstenite's write buffer target; every batch is flushed whole).
/// The CONNECT reply and the welcome share one write; the buffer keeps the
/// capacity of the largest batch, so it stays small.
pub const WS_WRITE_BATCH: usize = 512;

/// What each WebSocket's read buffer starts with (tungstenite allocates it
/// per connection, for the connection's life). Clients send small frames
/// (CONNECT with a token, actions, pongs); a larger one grows the buffer as
/// it arrives.
pub const WS_READ_BUFFER: usize = 1024;

// ---------------------------------------------------------------------------
// Sans-IO: the heartbeat, the reading of a frame, the writing of packets.

/// What the heartbeat asks for at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Nothing before [`Heartbeat::deadline`].
    Wait,
    /// Send a ping now.
    Ping,
    /// The pong did not come in time: close.
    Dead,
}

/// The server side of the Engine.IO v4 heartbeat: a ping every `interval`
/// after the last pong, each answered within `timeout`. Time is the caller's.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    /// When the next ping goes out, or (while one is out) when its pong is due.
    at: Instant,
    waiting: bool,
}

impl Heartbeat {
    /// A heartbeat whose first ping goes out `interval` after `now`.
    pub fn new(now: Instant, interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            at: now + interval,
            waiting: false,
        }
    }

    /// When [`Heartbeat::tick`] has something to say.
    pub fn deadline(&self) -> Instant {
        self.at
    }

    /// What to do at `now`.
    pub fn tick(&mut self, now: Instant) -> Beat {
        if now < self.at {
            return Beat::Wait;
        }
        if self.waiting {
            return Beat::Dead;
        }
        self.waiting = true;
        self.at = now + self.timeout;
        Beat::Ping
    }

    /// A pong came at `now`: the next ping goes out `interval` later. A
    /// pong nobody asked for changes nothing.
    pub fn pong(&mut self, now: Instant) {
        if self.waiting {
            self.waiting = false;
            self.at = now + self.interval;
        }
    }
}

/// What one text frame from the client asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// An Engine.IO pong.
    Pong,
    /// An Engine.IO ping (v3 clients ping): answered with a pong.
    Ping(String),
    /// CONNECT to `/`, with its payload (the auth object) if any.
    Connect(Option<Value>),
    /// CONNECT to another namespace: refused.
    ConnectElsewhere(String),
    /// An event on `/`: its name, its first argument and its ack id.
    Event {
        /// The event's name.
        name: String,
        /// Its first argument; `Value::Null` when it has none.
        data: Value,
        /// The ack id, when the client wants an answer.
        ack: Option<u64>,
    },
    /// The client leaves `/`, or closes the Engine.IO session.
    Disconnect,
    /// Nothing to do (a noop, an ack, a packet for another namespace).
    Ignore,
    /// A frame the server does not take: the connection closes.
    Refuse(String),
}

/// Reads one text frame.
pub fn read(frame: &str) -> Inbound {
    let packet = match EioPacket::decode(frame) {
        Ok(p) => p,
        Err(e) => return Inbound::Refuse(format!("engine.io: {e}")),
    };
    let text = match packet {
        EioPacket::Pong(_) => return Inbound::Pong,
        EioPacket::Ping(data) => return Inbound::Ping(data),
        EioPacket::Close => return Inbound::Disconnect,
        EioPacket::Noop => return Inbound::Ignore,
        EioPacket::Open(_) | EioPacket::Upgrade => {
            return Inbound::Refuse("engine.io: unexpected packet".to_owned());
        }
        EioPacket::Message(text) => text,
    };
    let (packet, _) = match Packet::decode(&text) {
        Ok(p) => p,
        Err(e) => return Inbound::Refuse(format!("socket.io: {e}")),
    };
    let ours = packet.nsp == "/";
    match packet.kind {
        PacketType::Connect if ours => {
            let auth = packet.data.as_deref().map(serde_json::from_str).transpose();
            match auth {
                Ok(auth) => Inbound::Connect(auth),
                Err(e) => Inbound::Refuse(format!("socket.io: {e}")),
            }
        }
        PacketType::Connect => Inbound::ConnectElsewhere(packet.nsp),
        PacketType::BinaryEvent | PacketType::BinaryAck => {
            Inbound::Refuse("binary attachments are not accepted".to_owned())
        }
        _ if !ours => Inbound::Ignore,
        PacketType::Disconnect => Inbound::Disconnect,
        PacketType::Event => {
            let ack = packet.id;
            let Some((name, args, _)) = packet.into_event() else {
                return Inbound::Refuse("socket.io: bad event".to_owned());
            };
            // The codec validated the arguments as JSON.
            let data = match args.first() {
                Some(raw) => serde_json::from_str(raw).unwrap_or(Value::Null),
                None => Value::Null,
            };
            Inbound::Event { name, data, ack }
        }
        PacketType::Ack | PacketType::ConnectError => Inbound::Ignore,
    }
}

/// The frame of the welcome, the first event on every connection.
pub fn welcome_frame() -> String {
    static FRAME: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            r#"42["{}",{}]"#,
            liveline::contract::SESSION_WELCOME_V1,
            crate::conn::WELCOME
        )
    });
    FRAME.clone()
}

/// The frame of event `event` with one argument, `data` (JSON text).
pub fn event_frame(event: &str, data: &str) -> String {
    // Contract names ("job:chunk:v1") need no escaping: written as they are.
    let plain = event
        .bytes()
        .all(|b| b != b'"' && b != b'\\' && (0x20..0x7f).contains(&b));
    let escaped;
    let name = if plain {
        event
    } else {
        escaped = serde_json::to_string(event).unwrap_or_else(|_| "\"\"".to_owned());
        &escaped[1..escaped.len() - 1]
    };
    let mut out = String::with_capacity(7 + name.len() + data.len());
    out.push_str("42[\"");
    out.push_str(name);
    out.push_str("\",");
    out.push_str(data);
    out.push(']');
    out
}

/// The frame answering ack `id` with one argument, `data`.
pub fn ack_frame(id: u64, data: &RawValue) -> String {
    format!("43{id}[{}]", data.get())
}

/// The frame refusing a CONNECT to `nsp` with `message`.
pub fn connect_error_frame(nsp: &str, message: &str) -> String {
    let body = serde_json::json!({ "message": message });
    if nsp == "/" {
        format!("44{body}")
    } else {
        format!("44{nsp},{body}")
    }
}

// ---------------------------------------------------------------------------
// The transport: what other tasks queue for a connection.

/// Frames waiting for the connection's task, and whether it may take more.
#[derive(Default)]
struct Outbox {
    frames: VecDeque<String>,
    /// A DISCONNECT is queued: the task closes after writing it.
    closing: bool,
}

/// One lean connection as a [`Transport`]: emits queue frames (at most
/// `max` of them) and wake its task.
struct LeanSocket {
    id: Sid,
    max: usize,
    outbox: StdMutex<Outbox>,
    wake: Notify,
    /// The CONNECT reply went out and the connection is still open.
    connected: AtomicBool,
    /// Its events being handled now (at most [`MAX_IN_FLIGHT`]).
    in_flight: AtomicUsize,
}

impl LeanSocket {
    fn new(max: usize) -> Self {
        Self {
            id: Sid::new(),
            max: max.max(1),
            outbox: StdMutex::new(Outbox::default()),
            wake: Notify::new(),
            connected: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn push(&self, frame: String) -> Result<(), EmitError> {
        if !self.connected.load(Ordering::Acquire) {
            return Err(EmitError::Closed);
        }
        {
            let mut out = lock(&self.outbox);
            if out.closing {
                return Err(EmitError::Closed);
            }
            if out.frames.len() >= self.max {
                return Err(EmitError::Full);
            }
            out.frames.push_back(frame);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Everything queued, and whether a DISCONNECT follows it.
    fn take(&self) -> (VecDeque<String>, bool) {
        let mut out = lock(&self.outbox);
        (std::mem::take(&mut out.frames), out.closing)
    }
}

impl Transport for LeanSocket {
    fn id(&self) -> Sid {
        self.id
    }

    fn emit(&self, event: &str, data: &str) -> Result<(), EmitError> {
        self.push(event_frame(event, data))
    }

    fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn disconnect(&self) -> Result<(), EmitError> {
        if !self.connected() {
            return Err(EmitError::Closed);
        }
        lock(&self.outbox).closing = true;
        self.wake.notify_one();
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The front: which requests it takes, the upgrade, one task per connection.

/// The lean front of one gateway: its shutdown signal and its count of open
/// connections.
#[derive(Debug)]
pub struct Lean {
    shutdown: watch::Sender<bool>,
    open: watch::Sender<usize>,
}

impl Default for Lean {
    fn default() -> Self {
        Self {
            shutdown: watch::Sender::new(false),
            open: watch::Sender::new(0),
        }
    }
}

impl Lean {
    /// Closes every lean connection (after writing what each has queued)
    /// and waits until they are closed.
    pub async fn close(&self) {
        self.shutdown.send_replace(true);
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
        self.shutdown.send_replace(false);
    }
}

/// Counts one open connection while it lives.
struct Counted<'a>(&'a watch::Sender<usize>);

impl<'a> Counted<'a> {
    fn new(open: &'a watch::Sender<usize>) -> Self {
        open.send_modify(|n| *n += 1);
        Self(open)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The most bytes of a WebSocket open's request head this front reads; a
/// longer head is answered 431 and closed.
pub const MAX_HEAD: usize = 16 * 1024;

/// The most header lines of a request head this front parses (hyper's
/// default); a head with more goes to the HTTP server, which refuses it.
const MAX_HEADERS: usize = 100;

/// What the first bytes of a connection are, as far as this front cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// Not a whole request head yet.
    Partial,
    /// Anything but a WebSocket open (HTTP requests, long-polling, a
    /// polling session's upgrade, malformed heads): the HTTP server's.
    Pass,
    /// A WebSocket open (`GET /socket.io/?EIO=4&transport=websocket`, no
    /// `sid`, `Upgrade: websocket`) whose head is `len` bytes.
    Open(Open),
    /// A WebSocket open whose head passed [`MAX_HEAD`].
    TooLarge,
}

/// A WebSocket open, as read from its head.
#[derive(Debug, PartialEq, Eq)]
pub struct Open {
    /// The head's length in bytes; what follows is the client's.
    pub len: usize,
    /// `Sec-WebSocket-Key`.
    pub key: Option<Vec<u8>>,
    /// `Sec-WebSocket-Version` is 13.
    pub version_13: bool,
    /// Every `Origin` header.
    pub origins: Vec<Vec<u8>>,
}

/// Whether a request line opens an Engine.IO v4 session over WebSocket.
fn opens_websocket(method: &str, target: &str) -> bool {
    let Some(("/socket.io/", query)) = target.split_once('?') else {
        return false;
    };
    if method != "GET" {
        return false;
    }
    let (mut eio4, mut websocket) = (false, false);
    for pair in query.split('&') {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("EIO", v) => eio4 = v == "4",
            ("transport", v) => websocket = v == "websocket",
            ("sid", _) => return false,
            _ => {}
        }
    }
    eio4 && websocket
}

/// Reads the start of a connection (sans-IO): whether it is this front's.
/// Decides as soon as the request line is in when it is not.
pub fn classify(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(buf);
    let candidate = match (req.method, req.path) {
        (Some(method), Some(target)) => opens_websocket(method, target),
        _ => {
            return if buf.len() > MAX_HEAD {
                Head::Pass
            } else {
                Head::Partial
            };
        }
    };
    if !candidate {
        return Head::Pass;
    }
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Head::TooLarge,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Pass,
    };
    if len > MAX_HEAD {
        return Head::TooLarge;
    }
    let mut open = Open {
        len,
        key: None,
        version_13: false,
        origins: Vec::new(),
    };
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = h.value.eq_ignore_ascii_case(b"websocket");
        } else if h.name.eq_ignore_ascii_case("sec-websocket-key") {
            open.key = Some(h.value.to_vec());
        } else if h.name.eq_ignore_ascii_case("sec-websocket-version") {
            open.version_13 = h.value == b"13";
        } else if h.name.eq_ignore_ascii_case("origin") {
            open.origins.push(h.value.to_vec());
        }
    }
    if upgrade {
        Head::Open(open)
    } else {
        Head::Pass
    }
}

/// What [`read_head`] found.
pub enum Read {
    /// A WebSocket open for this front (or one refused for its size).
    Lean(Opening),
    /// The HTTP server's connection, and the bytes read from it so far.
    Pass(Vec<u8>),
    /// The peer closed before a request.
    Closed,
}

/// A WebSocket open, for [`accept`].
pub enum Opening {
    /// Its head, and every byte read (the head and what followed it).
    Open(Open, Vec<u8>),
    /// Its head is over [`MAX_HEAD`].
    TooLarge,
}

/// Reads a connection's first bytes until [`classify`] decides.
pub async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> std::io::Result<Read> {
    let mut buf = Vec::with_capacity(WS_READ_BUFFER);
    loop {
        buf.reserve(WS_READ_BUFFER);
        if io.read_buf(&mut buf).await? == 0 {
            return Ok(if buf.is_empty() {
                Read::Closed
            } else {
                Read::Pass(buf)
            });
        }
        match classify(&buf) {
            Head::Partial => {}
            Head::Pass => return Ok(Read::Pass(buf)),
            Head::Open(open) => return Ok(Read::Lean(Opening::Open(open, buf))),
            Head::TooLarge => return Ok(Read::Lean(Opening::TooLarge)),
        }
    }
}

/// A short HTTP/1.1 answer that closes the connection.
fn refusal(status: u16, reason: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The 101 response accepting `key`, and the Engine.IO open packet in a
/// WebSocket frame after it: one write.
fn accepted(key: &[u8], open: &str) -> Vec<u8> {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    let frame = Frame::message(open.to_owned(), OpCode::Data(Data::Text), true);
    // Writing to a Vec cannot fail.
    let _ = frame.format(&mut out);
    out
}

/// Serves a connection that opens as WebSocket: answers the open (or
/// refuses it), then runs the connection until it closes. `admission` counts it among unauthenticated
/// peers until its CONNECT is admitted.
pub async fn accept(
    state: Arc<AppState>,
    io: Evictable,
    opening: Opening,
    admission: Arc<crate::edge::Admission>,
) {
    // The handshake's buffers (the head, the answer) and its future end
    // with it (a `let`, not an `if let`, whose scrutinee would live on):
    // they are not kept for the connection's life.
    let Some((ws, socket)) = handshake(&state, io, opening).await else {
        return;
    };
    serve(&state, ws, socket, admission).await;
}

/// Answers `opening`: the 101 and the open packet, or a refusal.
async fn handshake(
    state: &AppState,
    mut io: Evictable,
    opening: Opening,
) -> Option<(Ws, Arc<LeanSocket>)> {
    let (open, buf) = match opening {
        Opening::Open(open, buf) => (open, buf),
        Opening::TooLarge => {
            let answer = refusal(
                431,
                "Request Header Fields Too Large",
                "request head too large",
            );
            let _ = write_within(state, &mut io, answer.as_bytes()).await;
            return None;
        }
    };
    let key = match (&open.key, open.version_13) {
        (None, _) => Err((400, "Bad Request", "missing Sec-WebSocket-Key")),
        (Some(_), false) => Err((400, "Bad Request", "unsupported WebSocket version")),
        (Some(key), true) => match crate::http::origin_refusal(
            open.origins.iter().map(Vec::as_slice),
            &state.config.allowed_origins,
        ) {
            Some(why) => Err((403, "Forbidden", why)),
            None => Ok(key),
        },
    };
    let key = match key {
        Ok(key) => key,
        Err((status, reason, why)) => {
            let _ = write_within(state, &mut io, refusal(status, reason, why).as_bytes()).await;
            return None;
        }
    };
    let config = &state.config;
    let socket = Arc::new(LeanSocket::new(config.max_buffer_packets));
    let handshake = Handshake {
        sid: socket.id.to_string(),
        upgrades: Vec::new(),
        ping_interval: config.ping_interval.as_millis() as u64,
        ping_timeout: config.ping_timeout.as_millis() as u64,
        max_payload: config.max_message_bytes as u64,
    };
    let answer = accepted(key, &EioPacket::Open(handshake).encode());
    if !write_within(state, &mut io, &answer).await {
        return None;
    }
    let max = config.max_message_bytes;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BATCH)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    // What the client sent after its head (it may not wait for the 101).
    let rest = buf[open.len..].to_vec();
    let ws = WebSocketStream::from_partially_read(io, rest, Role::Server, Some(ws_config)).await;
    Some((ws, socket))
}

/// Writes `bytes`, giving up after [`write_stall`].
async fn write_within(state: &AppState, io: &mut Evictable, bytes: &[u8]) -> bool {
    let write = async {
        io.write_all(bytes).await?;
        io.flush().await
    };
    matches!(
        tokio::time::timeout(write_stall(state), write).await,
        Ok(Ok(()))
    )
}

type Ws = WebSocketStream<Evictable>;

/// How long one write may wait for the client to read before the
/// connection is given up.
fn write_stall(state: &AppState) -> Duration {
    state.config.ping_interval + state.config.ping_timeout
}

/// Writes `frames` (then a DISCONNECT when `closing`); false when the
/// connection failed or stalled.
async fn write(state: &AppState, ws: &mut Ws, frames: VecDeque<String>, closing: bool) -> bool {
    if frames.is_empty() && !closing {
        return true;
    }
    let send = async {
        for frame in frames {
            ws.feed(Message::text(frame)).await?;
        }
        if closing {
            ws.feed(Message::text("41")).await?;
        }
        ws.flush().await
    };
    matches!(
        tokio::time::timeout(write_stall(state), send).await,
        Ok(Ok(()))
    )
}

/// One connection, from its open packet (written) to its close.
async fn serve(
    state: &Arc<AppState>,
    mut ws: Ws,
    socket: Arc<LeanSocket>,
    admission: Arc<crate::edge::Admission>,
) {
    let lean = &state.lean;
    let _open = Counted::new(&lean.open);
    let mut shutdown = lean.shutdown.subscribe();
    let config = &state.config;
    let mut admission = Some(admission);
    let mut conn: Option<Conn> = None;
    let connect_by = Instant::now() + config.connect_timeout;
    let mut heartbeat = Heartbeat::new(Instant::now(), config.ping_interval, config.ping_timeout);
    // The timer lives across turns of the loop: made anew on every turn, it
    // cost a timer entry (registered, then removed) per event written.
    let timer = tokio::time::sleep_until(connect_by.min(heartbeat.deadline()));
    tokio::pin!(timer);
    // When the admitted socket's token expires: watched by this loop's timer,
    // not by a task of its own.
    let mut expires: Option<Instant> = None;
    loop {
        let deadline = match (&conn, expires) {
            (Some(_), Some(at)) => at.min(heartbeat.deadline()),
            (Some(_), None) => heartbeat.deadline(),
            (None, _) => connect_by.min(heartbeat.deadline()),
        };
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            biased;
            () = async { drop(shutdown.wait_for(|s| *s).await) } => {
                // Drained: what is queued (the shutdown notice) goes out,
                // then the transport closes without a DISCONNECT, so
                // clients reconnect as after any network loss.
                let (frames, _) = socket.take();
                let _ = write(state, &mut ws, frames, false).await;
                break;
            }
            () = socket.wake.notified() => {
                let (frames, closing) = socket.take();
                if !write(state, &mut ws, frames, closing).await || closing {
                    break;
                }
            }
            // Not read while MAX_IN_FLIGHT of its events are being handled.
            frame = ws.next(), if socket.in_flight.load(Ordering::Acquire) < MAX_IN_FLIGHT => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        tracing::debug!("binary frame: connection closed");
                        break;
                    }
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read failed");
                        break;
                    }
                };
                match read(text.as_str()) {
                    Inbound::Pong => heartbeat.pong(Instant::now()),
                    Inbound::Ping(data) => {
                        let pong = VecDeque::from([EioPacket::Pong(data).encode()]);
                        if !write(state, &mut ws, pong, false).await {
                            break;
                        }
                    }
                    Inbound::Connect(auth) => {
                        if conn.is_some() {
                            continue;
                        }
                        let c = Conn::new(socket.clone(), Arc::new(Session::welcoming()));
                        let admitted = socket::admit(state, &c, auth).await;
                        // Admitted, the welcome goes in the same write as the
                        // CONNECT reply: it is the first event, and one write
                        // (one syscall) less per handshake.
                        let reply = match &admitted {
                            Ok(()) => VecDeque::from([
                                format!("40{{\"sid\":\"{}\"}}", socket.id),
                                welcome_frame(),
                            ]),
                            Err(refused) => VecDeque::from([connect_error_frame("/", refused.0)]),
                        };
                        let admitted = admitted.is_ok();
                        if admitted {
                            c.welcome_written();
                            // Open for emits before the client can read its
                            // welcome (and act on it): what they queue now is
                            // written by this task after the reply, in order.
                            socket.connected.store(true, Ordering::Release);
                        }
                        if !write(state, &mut ws, reply, false).await {
                            if admitted {
                                socket::on_disconnect(state, &c).await;
                            }
                            break;
                        }
                        if admitted {
                            // Authenticated: no longer counted against the
                            // cap of unauthenticated peers (`edge::Pending`).
                            if let Some(a) = admission.take() {
                                a.release();
                            }
                            // (An expiry past what an Instant holds: never.)
                            expires = socket::expires_in(state, &c)
                                .and_then(|d| Instant::now().checked_add(d));
                            // `on_connect` in two halves: the start waits on
                            // nothing (a task of its own cost more than its
                            // work); the replay waits on the broker, off this
                            // loop, and only when the client resumes.
                            socket::started(state, &c).await;
                            if socket::resuming(&c) {
                                let (st, on) = (state.clone(), c.clone());
                                tokio::spawn(async move { socket::resume(&st, &on).await });
                            }
                            conn = Some(c);
                        }
                    }
                    Inbound::ConnectElsewhere(nsp) => {
                        let refusal = VecDeque::from([connect_error_frame(&nsp, "Invalid namespace")]);
                        if !write(state, &mut ws, refusal, false).await {
                            break;
                        }
                    }
                    Inbound::Event { name, data, ack } => {
                        let Some(c) = &conn else {
                            continue;
                        };
                        let ack = ack.map(|id| -> Ack {
                            let to = socket.clone();
                            Box::new(move |reply: &RawValue| to.push(ack_frame(id, reply)))
                        });
                        let (st, on, busy) = (state.clone(), c.clone(), socket.clone());
                        busy.in_flight.fetch_add(1, Ordering::AcqRel);
                        tokio::spawn(async move {
                            socket::on_event(&st, &on, name, Some(data), ack).await;
                            // Room for the next event: the task reads again.
                            busy.in_flight.fetch_sub(1, Ordering::AcqRel);
                            busy.wake.notify_one();
                        });
                    }
                    Inbound::Disconnect => break,
                    Inbound::Ignore => {}
                    Inbound::Refuse(why) => {
                        tracing::debug!(reason = %why, "bad frame: connection closed");
                        break;
                    }
                }
            }
            () = &mut timer => {
                let now = Instant::now();
                if conn.is_none() && now >= connect_by {
                    tracing::debug!("no CONNECT in time: connection closed");
                    break;
                }
                if let (Some(c), Some(at)) = (&conn, expires) {
                    if now >= at {
                        // Queues the notice and the close: written next turn.
                        expires = None;
                        socket::expire(c);
                    }
                }
                match heartbeat.tick(now) {
                    Beat::Wait => {}
                    Beat::Ping => {
                        let ping = VecDeque::from([EioPacket::Ping(String::new()).encode()]);
                        if !write(state, &mut ws, ping, false).await {
                            break;
                        }
                    }
                    Beat::Dead => {
                        tracing::debug!("no pong in time: connection closed");
                        break;
                    }
                }
            }
        }
    }
    socket.connected.store(false, Ordering::Release);
    lock(&socket.outbox).frames.clear();
    if let Some(conn) = conn {
        socket::on_disconnect(state, &conn).await;
    }
    // A peer that stopped reading gets a moment for the close frame, no more.
    let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(None)).await;
}

/// How long a closing connection waits for its close frame to go out.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        // A fixed origin: only differences matter.
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    #[test]
    fn the_heartbeat_pings_every_interval_after_the_pong() {
        let (i, t) = (Duration::from_millis(1000), Duration::from_millis(300));
        let mut hb = Heartbeat::new(at(0), i, t);
        assert_eq!(hb.deadline(), at(1000));
        assert_eq!(hb.tick(at(999)), Beat::Wait);
        assert_eq!(hb.tick(at(1000)), Beat::Ping);
        assert_eq!(
            hb.deadline(),
            at(1300),
            "the pong is due within the timeout"
        );
        hb.pong(at(1100));
        assert_eq!(
            hb.deadline(),
            at(2100),
            "the next ping an interval after the pong"
        );
        assert_eq!(hb.tick(at(2000)), Beat::Wait);
        assert_eq!(hb.tick(at(2100)), Beat::Ping);
    }

    #[test]
    fn the_heartbeat_gives_up_when_the_pong_is_late() {
        let mut hb = Heartbeat::new(
            at(0),
            Duration::from_millis(1000),
            Duration::from_millis(300),
        );
        assert_eq!(hb.tick(at(1000)), Beat::Ping);
        assert_eq!(hb.tick(at(1299)), Beat::Wait);
        assert_eq!(hb.tick(at(1300)), Beat::Dead);
    }

    #[test]
    fn an_unasked_pong_does_not_move_the_next_ping() {
        let mut hb = Heartbeat::new(
            at(0),
            Duration::from_millis(1000),
            Duration::from_millis(300),
        );
        hb.pong(at(500));
        assert_eq!(hb.deadline(), at(1000));
    }

    #[test]
    fn frames_are_read_as_the_gateway_needs_them() {
        assert_eq!(read("3"), Inbound::Pong);
        assert_eq!(read("2probe"), Inbound::Ping("probe".to_owned()));
        assert_eq!(read("6"), Inbound::Ignore);
        assert_eq!(read("1"), Inbound::Disconnect);
        assert_eq!(read("41"), Inbound::Disconnect);
        assert_eq!(read("40"), Inbound::Connect(None));
        assert_eq!(
            read(r#"40{"token":"t"}"#),
            Inbound::Connect(Some(serde_json::json!({"token": "t"})))
        );
        assert_eq!(
            read("40/admin,"),
            Inbound::ConnectElsewhere("/admin".to_owned())
        );
        assert_eq!(
            read(r#"4212["job:start:v1",{"a":1},"x"]"#),
            Inbound::Event {
                name: "job:start:v1".to_owned(),
                data: serde_json::json!({"a": 1}),
                ack: Some(12),
            }
        );
        assert_eq!(
            read(r#"42["probe:v1"]"#),
            Inbound::Event {
                name: "probe:v1".to_owned(),
                data: Value::Null,
                ack: None,
            }
        );
        assert_eq!(read(r#"42/admin,["x"]"#), Inbound::Ignore);
        assert_eq!(read(r#"431["ok"]"#), Inbound::Ignore);
    }

    #[test]
    fn frames_the_gateway_does_not_take_close_the_connection() {
        for frame in [
            "",
            "9",
            "0{}",
            "5",
            "4",
            "42",
            "42{",
            "42[1]",
            r#"451-["x",{"_placeholder":true,"num":0}]"#,
            r#"461-1[{"_placeholder":true,"num":0}]"#,
            "40[1]",
        ] {
            assert!(
                matches!(read(frame), Inbound::Refuse(_)),
                "{frame:?}: {:?}",
                read(frame)
            );
        }
    }

    #[test]
    fn packets_are_written_as_socket_io_reads_them() {
        let data = RawValue::from_string(r#"{"seq":1}"#.to_owned()).expect("JSON");
        assert_eq!(
            event_frame("a:b\"c", data.get()),
            r#"42["a:b\"c",{"seq":1}]"#
        );
        assert_eq!(event_frame("job:chunk:v1", "2"), r#"42["job:chunk:v1",2]"#);
        assert_eq!(event_frame("é\n", "2"), r#"42["é\n",2]"#);
        assert_eq!(ack_frame(7, &data), r#"437[{"seq":1}]"#);
        assert_eq!(
            welcome_frame(),
            r#"42["session:welcome:v1",{"protocol":1}]"#
        );
        assert_eq!(
            connect_error_frame("/", "unauthorized"),
            r#"44{"message":"unauthorized"}"#
        );
        assert_eq!(
            connect_error_frame("/admin", "Invalid namespace"),
            r#"44/admin,{"message":"Invalid namespace"}"#
        );
    }

    #[test]
    fn the_outbox_is_bounded_and_closed_until_connected() {
        let s = LeanSocket::new(2);
        let data = "1";
        assert_eq!(s.emit("e", data), Err(EmitError::Closed), "before CONNECT");
        s.connected.store(true, Ordering::Release);
        assert_eq!(s.emit("e", data), Ok(()));
        assert_eq!(s.emit("e", data), Ok(()));
        assert_eq!(s.emit("e", data), Err(EmitError::Full));
        let (frames, closing) = s.take();
        assert_eq!(frames.len(), 2);
        assert!(!closing);
        assert_eq!(s.emit("e", data), Ok(()), "room again once written");
        assert_eq!(s.disconnect(), Ok(()));
        assert_eq!(s.emit("e", data), Err(EmitError::Closed), "closing");
        let (frames, closing) = s.take();
        assert_eq!((frames.len(), closing), (1, true));
    }

    #[test]
    fn heads_are_classified_as_soon_as_they_can_be() {
        let open = "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key: k==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://a\r\n\r\n";
        match classify(open.as_bytes()) {
            Head::Open(o) => {
                assert_eq!(o.len, open.len());
                assert_eq!(o.key.as_deref(), Some(&b"k=="[..]));
                assert!(o.version_13);
                assert_eq!(o.origins, vec![b"https://a".to_vec()]);
            }
            other => panic!("{other:?}"),
        }
        // Bytes after the head are the client's, not the head's.
        let mut more = open.as_bytes().to_vec();
        more.extend_from_slice(&[0x81, 0x82]);
        assert!(matches!(classify(&more), Head::Open(o) if o.len == open.len()));
        // Not whole yet: more is read.
        assert_eq!(classify(&open.as_bytes()[..open.len() - 2]), Head::Partial);
        assert_eq!(classify(b"GET /socket.io/?EI"), Head::Partial);
        // Anything else passes once its request line is in, headers or not.
        for other in [
            "GET /healthz HTTP/1.1\r\nHo",
            "POST /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n",
            "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n",
            "GET /socket.io/?EIO=4&transport=websocket&sid=abc HTTP/1.1\r\n",
            "GET /socket.io/?EIO=3&transport=websocket HTTP/1.1\r\n",
            "GET /socket.io?EIO=4&transport=websocket HTTP/1.1\r\n",
        ] {
            assert_eq!(classify(other.as_bytes()), Head::Pass, "{other}");
        }
        // A whole head without `Upgrade: websocket` is the HTTP server's.
        let plain = open.replace("Upgrade: WebSocket\r\n", "");
        assert_eq!(classify(plain.as_bytes()), Head::Pass);
        // An open whose head passes the bound, whole or not.
        let pad = "x".repeat(MAX_HEAD);
        let big = open.replace("Host: a", &format!("Host: {pad}"));
        assert_eq!(classify(big.as_bytes()), Head::TooLarge);
        assert_eq!(classify(&big.as_bytes()[..MAX_HEAD + 10]), Head::TooLarge);
        // Garbage with no request line passes (hyper answers it) once it is long.
        assert_eq!(classify(&vec![b'x'; MAX_HEAD + 1]), Head::Pass);
    }

    #[test]
    fn the_accepting_answer_holds_the_101_and_the_open_packet() {
        let answer = accepted(b"dGhlIHNhbXBsZSBub25jZQ==", "0{}");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{text}"
        );
        assert!(text.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        // One unmasked, final text frame of 3 bytes after the head.
        assert!(answer.ends_with(&[0x81, 3, b'0', b'{', b'}']), "{answer:?}");
    }
}
