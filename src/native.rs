//! The native driver: the sans-IO [`Client`] on tokio and a WebSocket, for
//! Rust apps, the interop tests and the load generator.
//!
//! [`NativeClient::spawn`] starts one task that owns the core and its socket
//! and selects over socket frames, commands from the handle, the app's token
//! and a sleep until [`Client::poll_timeout`]. All protocol logic stays in the
//! core; this file only moves bytes, tokens and time. Time is milliseconds
//! since the task started, from tokio's monotonic clock (so a paused tokio
//! clock drives it too).
//!
//! ```no_run
//! # async fn demo() {
//! use liveline::Config;
//! use liveline::native::{Event, NativeClient};
//!
//! let (client, mut events) = NativeClient::spawn(Config::new("http://127.0.0.1:8080"), || {
//!     Box::pin(async { Ok::<_, String>("token".to_owned()) })
//! });
//! let started = client.send("job:start:v1", serde_json::json!({"kind": "llm"}));
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::State(change) => println!("{}", change.current.name()),
//!         Event::Server(ev, _ack) => println!("{}", ev.name()),
//!         _ => {}
//!     }
//! }
//! # let _ = started.await;
//! # }
//! ```
//!
//! Plain `ws://` only: TLS is not compiled in.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::{Client, Config, Output, StateChange};
use crate::contract::{DecodeError, ServerEvent};
use crate::outbox::{ActionError, SendError};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Opening = BoxFuture<'static, Result<Socket, String>>;

/// What the client tells the app, in order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The connection state changed.
    State(StateChange),
    /// A server event. When the server asked for an ack, its id is here;
    /// answer with [`NativeClient::reply`].
    Server(ServerEvent, Option<u64>),
    /// A known event broke its contract and was dropped.
    Invalid(DecodeError),
    /// The outbox now holds this many actions.
    Queue(usize),
}

/// Why an action sent with [`NativeClient::send`] has no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActionFailed {
    /// The outbox is full: wait for acks, or raise `outbox_capacity`.
    #[error(transparent)]
    NotQueued(#[from] SendError),
    /// The server refused the action, or it expired unacknowledged.
    #[error(transparent)]
    Action(#[from] ActionError),
    /// The client was closed or dropped before the action was acknowledged.
    #[error("the client stopped before the action was acknowledged")]
    Stopped,
}

enum Command {
    Send {
        name: String,
        data: Value,
        done: oneshot::Sender<Result<Value, ActionFailed>>,
    },
    Reply {
        ack_id: u64,
        args: Vec<Value>,
    },
    Emit {
        name: String,
        args: Vec<Value>,
        done: Option<oneshot::Sender<Result<Vec<Value>, ActionFailed>>>,
    },
    Close,
}

/// A handle to a client running in its own tokio task. Cheap to clone; the
/// task closes the connection and ends when the last handle is dropped or
/// [`NativeClient::close`] is called.
#[derive(Debug, Clone)]
pub struct NativeClient {
    commands: mpsc::UnboundedSender<Command>,
}

impl NativeClient {
    /// Starts a client that connects at once, asking `get_token` for a token
    /// before every connection attempt. Must be called inside a tokio
    /// runtime. Events arrive on the returned receiver; dropping it is fine.
    pub fn spawn<F>(config: Config, get_token: F) -> (Self, mpsc::UnboundedReceiver<Event>)
    where
        F: Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync + 'static,
    {
        Self::spawn_seeded(config, random_seed(), get_token)
    }

    /// [`NativeClient::spawn`] with the core's RNG (backoff jitter,
    /// idempotency keys) seeded from `seed`, for reproducible runs.
    pub fn spawn_seeded<F>(
        config: Config,
        seed: u64,
        get_token: F,
    ) -> (Self, mpsc::UnboundedReceiver<Event>)
    where
        F: Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync + 'static,
    {
        Self::spawn_bound(config, seed, None, get_token)
    }

    /// [`NativeClient::spawn_seeded`] with the client's socket bound to a
    /// local address first (e.g. `127.0.0.7`), so a load generator can open
    /// more connections to one gateway port than one source address has
    /// ephemeral ports.
    pub fn spawn_bound<F>(
        config: Config,
        seed: u64,
        local_addr: Option<IpAddr>,
        get_token: F,
    ) -> (Self, mpsc::UnboundedReceiver<Event>)
    where
        F: Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync + 'static,
    {
        let (commands, rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            client: Client::new(config, seed),
            origin: Instant::now(),
            socket: None,
            opening: None,
            token: None,
            local_addr,
            waiting: HashMap::new(),
            replies: HashMap::new(),
            events,
        };
        tokio::spawn(driver.run(get_token, rx));
        (Self { commands }, events_rx)
    }

    /// Sends an action: queued in the outbox, sent when connected, retried
    /// under the same idempotency key until acknowledged. The action is
    /// queued at once; the returned future resolves with the ack's `data`.
    pub fn send(
        &self,
        name: &str,
        data: Value,
    ) -> impl Future<Output = Result<Value, ActionFailed>> + Send + 'static {
        let (done, result) = oneshot::channel();
        let _ = self.commands.send(Command::Send {
            name: name.to_owned(),
            data,
            done,
        });
        async move { result.await.unwrap_or(Err(ActionFailed::Stopped)) }
    }

    /// Answers a server event that asked for an ack ([`Event::Server`] with
    /// an id). Dropped if the connection it came on is gone.
    pub fn reply(&self, ack_id: u64, args: Vec<Value>) {
        let _ = self.commands.send(Command::Reply { ack_id, args });
    }

    /// Emits a plain event `[name, ...args]` without an ack, as a
    /// `socket.io-client` does: sent at once when connected, else buffered
    /// (at most `emit_buffer`) and sent on connect; never sent twice. Use
    /// [`NativeClient::send`] for an action that must be applied once.
    pub fn emit(&self, name: &str, args: Vec<Value>) {
        let _ = self.commands.send(Command::Emit {
            name: name.to_owned(),
            args,
            done: None,
        });
    }

    /// [`NativeClient::emit`] asking for an ack; resolves with the ack's
    /// arguments as the server sent them, or `disconnected` when the
    /// connection was lost before it came.
    pub fn emit_with_ack(
        &self,
        name: &str,
        args: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Value>, ActionFailed>> + Send + 'static {
        let (done, result) = oneshot::channel();
        let _ = self.commands.send(Command::Emit {
            name: name.to_owned(),
            args,
            done: Some(done),
        });
        async move { result.await.unwrap_or(Err(ActionFailed::Stopped)) }
    }

    /// Closes the connection and ends the task. A last
    /// [`Event::State`] (`closed`) follows; unacknowledged actions fail with
    /// [`ActionFailed::Stopped`].
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }

    /// Whether the task has ended.
    pub fn is_stopped(&self) -> bool {
        self.commands.is_closed()
    }
}

/// The task's state: the core plus the IO it asked for.
struct Driver {
    client: Client,
    origin: Instant,
    socket: Option<Socket>,
    opening: Option<Opening>,
    token: Option<BoxFuture<'static, Result<String, String>>>,
    /// Where the client's socket is bound, if the caller chose.
    local_addr: Option<IpAddr>,
    /// Action id to the caller waiting for its ack.
    waiting: HashMap<u64, oneshot::Sender<Result<Value, ActionFailed>>>,
    /// Raw emit id to the caller waiting for its ack.
    replies: HashMap<u64, oneshot::Sender<Result<Vec<Value>, ActionFailed>>>,
    events: mpsc::UnboundedSender<Event>,
}

impl Driver {
    async fn run<F>(mut self, get_token: F, mut commands: mpsc::UnboundedReceiver<Command>)
    where
        F: Fn() -> BoxFuture<'static, Result<String, String>>,
    {
        self.client.connect(self.now());
        loop {
            self.drain(&get_token).await;
            let deadline = self
                .client
                .poll_timeout()
                .map(|ms| self.origin + Duration::from_millis(ms));
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Close) | None => break,
                    Some(command) => self.command(command).await,
                },
                token = poll_some(&mut self.token) => {
                    self.token = None;
                    self.client.handle_token(token, self.now());
                }
                opened = poll_some(&mut self.opening) => {
                    self.opening = None;
                    match opened {
                        Ok(socket) => {
                            self.socket = Some(socket);
                            self.client.handle_open(self.now());
                        }
                        Err(e) => self.client.handle_closed(&e, self.now()),
                    }
                }
                frame = next_frame(&mut self.socket) => self.frame(frame),
                () = sleep_until(deadline) => self.client.handle_timeout(self.now()),
            }
        }
        self.client.close(self.now());
        self.drain(&get_token).await;
        self.close_socket();
    }

    /// Carries out everything the core asked for.
    async fn drain<F>(&mut self, get_token: &F)
    where
        F: Fn() -> BoxFuture<'static, Result<String, String>>,
    {
        loop {
            let mut unflushed = false;
            while let Some(output) = self.client.poll_output() {
                match output {
                    Output::FetchToken => self.token = Some(get_token()),
                    Output::Open(url) => {
                        // A socket the core stopped caring about without a Close.
                        self.close_socket();
                        self.opening = Some(Box::pin(open_socket(url, self.local_addr)));
                    }
                    Output::SendText(text) => unflushed |= self.feed(Message::text(text)).await,
                    Output::SendBinary(bytes) => {
                        unflushed |= self.feed(Message::binary(bytes)).await;
                    }
                    Output::Close => self.close_socket(),
                    Output::State(change) => {
                        let _ = self.events.send(Event::State(change));
                    }
                    Output::Event(ev, ack) => {
                        let _ = self.events.send(match ev.decode() {
                            Ok(ev) => Event::Server(ev, ack),
                            Err(e) => Event::Invalid(e),
                        });
                    }
                    Output::Invalid(e) => {
                        let _ = self.events.send(Event::Invalid(e));
                    }
                    Output::Ack(id, result) => {
                        if let Some(done) = self.waiting.remove(&id) {
                            let result = result
                                .map(|raw| serde_json::from_str(&raw).unwrap_or(Value::Null))
                                .map_err(ActionFailed::from);
                            let _ = done.send(result);
                        }
                    }
                    Output::Replied(id, result) => {
                        if let Some(done) = self.replies.remove(&id) {
                            let result = result
                                .map(|a| {
                                    a.args
                                        .iter()
                                        .map(|v| serde_json::from_str(v).unwrap_or(Value::Null))
                                        .collect()
                                })
                                .map_err(ActionFailed::from);
                            let _ = done.send(result);
                        }
                    }
                    Output::Server(_) => {}
                    Output::Queue(n) => {
                        let _ = self.events.send(Event::Queue(n));
                    }
                }
            }
            // A failed flush told the core, which may have more to say.
            if !unflushed || self.flush().await {
                return;
            }
        }
    }

    /// Queues a frame on the socket; true if it needs a flush.
    async fn feed(&mut self, message: Message) -> bool {
        let Some(socket) = &mut self.socket else {
            return false;
        };
        match socket.feed(message).await {
            Ok(()) => true,
            Err(e) => {
                self.lose_socket(&format!("websocket: {e}"));
                false
            }
        }
    }

    /// Flushes queued frames; false if the socket failed (the core knows).
    async fn flush(&mut self) -> bool {
        let Some(socket) = &mut self.socket else {
            return true;
        };
        match socket.flush().await {
            Ok(()) => true,
            Err(e) => {
                self.lose_socket(&format!("websocket: {e}"));
                false
            }
        }
    }

    fn lose_socket(&mut self, reason: &str) {
        self.socket = None;
        self.client.handle_closed(reason, self.now());
    }

    async fn command(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::Send { name, data, done } => {
                match self.client.send(&name, &data.to_string(), now) {
                    Ok(id) => {
                        self.waiting.insert(id, done);
                    }
                    Err(e) => {
                        let _ = done.send(Err(e.into()));
                    }
                }
            }
            Command::Reply { ack_id, args } => {
                let args: Vec<String> = args.iter().map(Value::to_string).collect();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                // Values always serialize to valid JSON.
                let _ = self.client.reply(ack_id, &args);
            }
            Command::Emit { name, args, done } => {
                let args: Vec<String> = args.iter().map(Value::to_string).collect();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                match self.client.emit(&name, &args, Vec::new(), done.is_some()) {
                    Ok(Some(id)) => {
                        if let Some(done) = done {
                            self.replies.insert(id, done);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if let Some(done) = done {
                            let _ = done.send(Err(e.into()));
                        }
                    }
                }
            }
            Command::Close => {}
        }
    }

    fn frame(&mut self, frame: Option<Result<Message, String>>) {
        let now = self.now();
        match frame {
            Some(Ok(Message::Text(text))) => self.client.handle_text(text.as_str(), now),
            Some(Ok(Message::Binary(bytes))) => self.client.handle_binary(&bytes, now),
            Some(Ok(Message::Close(close))) => {
                self.socket = None;
                let reason = close.map_or_else(
                    || "websocket closed".to_owned(),
                    |c| format!("websocket closed: {} {}", u16::from(c.code), c.reason),
                );
                self.client.handle_closed(&reason, now);
            }
            // Pings are answered by tungstenite; pongs and raw frames mean nothing here.
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                self.socket = None;
                self.client.handle_closed(&e, now);
            }
            None => {
                self.socket = None;
                self.client.handle_closed("websocket closed", now);
            }
        }
    }

    /// Closes the socket in the background (a close frame, then the TCP
    /// connection goes with the stream).
    fn close_socket(&mut self) {
        self.opening = None;
        if let Some(mut socket) = self.socket.take() {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
            });
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Awaits the future in `slot`, or forever when there is none.
async fn poll_some<T>(slot: &mut Option<BoxFuture<'static, T>>) -> T {
    match slot {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The next frame of the socket, or forever when there is none.
async fn next_frame(socket: &mut Option<Socket>) -> Option<Result<Message, String>> {
    match socket {
        Some(s) => s
            .next()
            .await
            .map(|r| r.map_err(|e| format!("websocket: {e}"))),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A seed that differs per client and per process, without an OS RNG
/// dependency (std seeds `RandomState` from the OS).
/// Opens the WebSocket, from `local_addr` when given. Buffers are small:
/// tungstenite's default 128 KiB read buffer, zero-filled on first read,
/// would be most of a client's memory in a load test of many connections.
async fn open_socket(url: String, local_addr: Option<IpAddr>) -> Result<Socket, String> {
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20);
    let fail = |e: &dyn std::fmt::Display| format!("websocket: {e}");
    let Some(local) = local_addr else {
        return tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .map(|(socket, _)| socket)
            .map_err(|e| fail(&e));
    };
    let request = url.as_str().into_client_request().map_err(|e| fail(&e))?;
    let host = request
        .uri()
        .host()
        .unwrap_or("127.0.0.1")
        .trim_matches(['[', ']'])
        .to_owned();
    let port = request.uri().port_u16().unwrap_or(80);
    let remote = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| fail(&e))?
        .find(|a| a.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| format!("websocket: no address of {host} matches {local}"))?;
    let socket = if local.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| fail(&e))?;
    socket
        .bind(SocketAddr::new(local, 0))
        .map_err(|e| fail(&e))?;
    let stream = socket.connect(remote).await.map_err(|e| fail(&e))?;
    let _ = stream.set_nodelay(true);
    tokio_tungstenite::client_async_with_config(
        request,
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await
    .map(|(socket, _)| socket)
    .map_err(|e| fail(&e))
}

fn random_seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x6c69_7665_6c69_6e65);
    h.finish()
}
