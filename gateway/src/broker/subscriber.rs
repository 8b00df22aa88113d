//! The pub/sub connection to one Redis, read by the broker's own RESP reader
//! ([`super::resp`]) instead of redis-rs: it carries every live event to the
//! node, and redis-rs's general parser cost a fifth of a delivered event.
//!
//! One task owns the connection: it writes SUBSCRIBE and UNSUBSCRIBE as they
//! are asked (everything asked meanwhile in one write), answers each asker
//! when Redis confirms, and hands every message to its route ([`Inbox`])
//! itself, with no task between. When the connection drops, every route is
//! closed at once (the hub asks those sockets to resume, since live events
//! may be missed) and it is dialled again with backoff; subscriptions asked
//! meanwhile fail at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, RedisError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::resp::{self, Push};
use super::{BrokerError, ControlMessage, LiveMessage};

/// Live routes: channel → the feed of the node's subscription to it.
pub(super) type Routes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Arc<LiveMessage>>>>>;

/// Where messages go: the control channel to the node, every other channel
/// to its route. Shared by this reader and the cluster's.
pub(super) struct Inbox {
    pub routes: Routes,
    pub control: String,
    pub control_tx: mpsc::UnboundedSender<ControlMessage>,
}

impl Inbox {
    /// Hands a message published on `channel` to whoever listens here.
    pub fn deliver(&self, channel: &[u8], payload: &[u8]) {
        let Ok(channel) = std::str::from_utf8(channel) else {
            return;
        };
        if channel == self.control {
            match serde_json::from_slice::<ControlMessage>(payload) {
                Ok(m) => {
                    let _ = self.control_tx.send(m);
                }
                Err(_) => tracing::warn!("dropping a control message that does not parse"),
            }
            return;
        }
        let Ok(msgs) = LiveMessage::parse(payload) else {
            tracing::warn!(%channel, "dropping a live message that does not parse");
            return;
        };
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = routes.get(channel) {
            for msg in msgs {
                let _ = tx.send(Arc::new(msg));
            }
        }
    }

    /// Closes every route (their subscribers learn that events may be missed).
    pub fn close_all(&self) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Closes the route of `channel`.
    pub fn close(&self, channel: &str) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(channel);
    }
}

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 << 10;
/// A read buffer grown past this by a large message is given back once empty.
const KEEP_BUFFER: usize = 256 << 10;
/// The first wait before dialling again; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open connection, subscribed to the control channel, and the bytes
/// read past the confirmation.
struct Link {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Subscribe,
    Unsubscribe,
}

struct Request {
    ask: Ask,
    channel: String,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

/// Where Redis listens.
enum Addr {
    Tcp(String, u16),
    Unix(std::path::PathBuf),
}

/// How to reach Redis and sign in.
struct Dial {
    addr: Addr,
    username: Option<String>,
    password: Option<String>,
    timeout: Duration,
}

fn io_error(what: &'static str, detail: impl std::fmt::Display) -> BrokerError {
    RedisError::from((ErrorKind::Io, what, detail.to_string())).into()
}

fn reconnecting() -> BrokerError {
    RedisError::from((ErrorKind::Io, "pub/sub reconnecting")).into()
}

impl Dial {
    fn new(info: &ConnectionInfo, timeout: Duration) -> Result<Self, BrokerError> {
        let addr = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Addr::Tcp(host.clone(), *port),
            ConnectionAddr::Unix(path) => Addr::Unix(path.clone()),
            other => {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "pub/sub connects over TCP or a Unix socket only",
                    other.to_string(),
                ))
                .into());
            }
        };
        let settings = info.redis_settings();
        Ok(Self {
            addr,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            timeout,
        })
    }

    /// Connects, signs in and subscribes to `control`, within the timeout.
    async fn open(&self, control: &str) -> Result<Link, BrokerError> {
        tokio::time::timeout(self.timeout, self.open_now(control))
            .await
            .unwrap_or_else(|_| Err(io_error("pub/sub connect", "timed out")))
    }

    async fn open_now(&self, control: &str) -> Result<Link, BrokerError> {
        let mut io: Box<dyn Io> = match &self.addr {
            Addr::Tcp(host, port) => {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| io_error("pub/sub connect", e))?;
                tcp.set_nodelay(true)
                    .map_err(|e| io_error("pub/sub connect", e))?;
                Box::new(tcp)
            }
            Addr::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| io_error("pub/sub connect", e))?,
            ),
        };
        let mut out = Vec::new();
        let mut signing_in = false;
        if let Some(password) = &self.password {
            signing_in = true;
            match &self.username {
                Some(user) => {
                    resp::command(&mut out, &[b"AUTH", user.as_bytes(), password.as_bytes()])
                }
                None => resp::command(&mut out, &[b"AUTH", password.as_bytes()]),
            }
        }
        resp::command(&mut out, &[b"SUBSCRIBE", control.as_bytes()]);
        io.write_all(&out)
            .await
            .map_err(|e| io_error("pub/sub connect", e))?;
        let mut buf = Vec::with_capacity(READ_CHUNK);
        loop {
            if io
                .read_buf(&mut buf)
                .await
                .map_err(|e| io_error("pub/sub connect", e))?
                == 0
            {
                return Err(io_error("pub/sub connect", "closed by Redis"));
            }
            let mut at = 0;
            while let Some((push, n)) =
                resp::parse(&buf[at..]).map_err(|e| io_error("pub/sub connect", e))?
            {
                at += n;
                match push {
                    Push::Error(e) => {
                        let kind = if signing_in {
                            ErrorKind::AuthenticationFailed
                        } else {
                            ErrorKind::Io
                        };
                        let detail = String::from_utf8_lossy(e).into_owned();
                        return Err(RedisError::from((kind, "pub/sub connect", detail)).into());
                    }
                    Push::Status(_) if signing_in => signing_in = false,
                    Push::Subscribed(c) if c == control.as_bytes() => {
                        buf.drain(..at);
                        return Ok(Link { io, buf });
                    }
                    _ => {}
                }
            }
            buf.drain(..at);
        }
    }
}

/// The node's pub/sub connection to one Redis.
pub(super) struct Subscriber {
    requests: mpsc::UnboundedSender<Request>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscriber {
    /// Connects to the Redis of `info` (commands bounded by `timeout`) and
    /// subscribes to the inbox's control channel.
    pub async fn connect(
        info: &ConnectionInfo,
        timeout: Duration,
        inbox: Inbox,
    ) -> Result<Self, BrokerError> {
        let dial = Dial::new(info, timeout)?;
        let link = dial.open(&inbox.control).await?;
        let (requests, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(dial, link, rx, inbox));
        Ok(Self { requests, task })
    }

    /// Subscribes to `channel`; returns once Redis confirmed.
    pub async fn subscribe(&self, channel: &str) -> Result<(), BrokerError> {
        self.ask(Ask::Subscribe, channel).await
    }

    /// Unsubscribes from `channel`; returns once Redis confirmed.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), BrokerError> {
        self.ask(Ask::Unsubscribe, channel).await
    }

    async fn ask(&self, ask: Ask, channel: &str) -> Result<(), BrokerError> {
        let (done, answer) = oneshot::channel();
        let request = Request {
            ask,
            channel: channel.to_owned(),
            done,
        };
        self.requests.send(request).map_err(|_| reconnecting())?;
        answer.await.map_err(|_| reconnecting())?
    }
}

/// Why [`serve`] returned.
enum Ended {
    /// The broker is gone: nothing more will be asked.
    Closed,
    /// The connection failed.
    Lost(BrokerError),
}

async fn run(
    dial: Dial,
    mut link: Link,
    mut requests: mpsc::UnboundedReceiver<Request>,
    inbox: Inbox,
) {
    loop {
        match serve(&mut link, &mut requests, &inbox).await {
            Ended::Closed => return,
            Ended::Lost(e) => {
                tracing::error!(error = %e, "redis pub/sub connection lost; reconnecting");
            }
        }
        inbox.close_all();
        let mut backoff = FIRST_BACKOFF;
        link = loop {
            // Whatever is asked while the connection is down fails at once.
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    request = requests.recv() => match request {
                        Some(r) => {
                            let _ = r.done.send(Err(reconnecting()));
                        }
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match dial.open(&inbox.control).await {
                Ok(link) => break link,
                Err(e) => tracing::debug!(error = %e, "redis pub/sub not back yet"),
            }
        };
        tracing::info!("redis pub/sub reconnected");
    }
}

/// Serves one connection until it fails or the broker is gone.
async fn serve(
    link: &mut Link,
    requests: &mut mpsc::UnboundedReceiver<Request>,
    inbox: &Inbox,
) -> Ended {
    let mut out = Vec::new();
    // Asked and written, in order: Redis confirms in the same order.
    let mut waiting: VecDeque<Request> = VecDeque::new();
    loop {
        // What was read before (the bytes after the control's confirmation,
        // or the rest of the last read) is taken first.
        if let Err(e) = take_frames(&mut link.buf, &mut waiting, inbox) {
            return Ended::Lost(e);
        }
        if !out.is_empty() {
            if let Err(e) = link.io.write_all(&out).await {
                return Ended::Lost(io_error("pub/sub write", e));
            }
            out.clear();
        }
        if link.buf.is_empty() && link.buf.capacity() > KEEP_BUFFER {
            link.buf = Vec::new();
        }
        link.buf.reserve(READ_CHUNK);
        tokio::select! {
            read = link.io.read_buf(&mut link.buf) => match read {
                Ok(0) => return Ended::Lost(io_error("pub/sub read", "closed by Redis")),
                Ok(_) => {}
                Err(e) => return Ended::Lost(io_error("pub/sub read", e)),
            },
            request = requests.recv() => {
                let Some(request) = request else {
                    return Ended::Closed;
                };
                queue(request, &mut out, &mut waiting);
                while let Ok(request) = requests.try_recv() {
                    queue(request, &mut out, &mut waiting);
                }
            }
        }
    }
}

fn queue(request: Request, out: &mut Vec<u8>, waiting: &mut VecDeque<Request>) {
    let name: &[u8] = match request.ask {
        Ask::Subscribe => b"SUBSCRIBE",
        Ask::Unsubscribe => b"UNSUBSCRIBE",
    };
    resp::command(out, &[name, request.channel.as_bytes()]);
    waiting.push_back(request);
}

/// Handles every whole frame in `buf` and keeps the rest.
fn take_frames(
    buf: &mut Vec<u8>,
    waiting: &mut VecDeque<Request>,
    inbox: &Inbox,
) -> Result<(), BrokerError> {
    let mut at = 0;
    let result = loop {
        let (push, n) = match resp::parse(&buf[at..]) {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(e) => break Err(io_error("pub/sub read", e)),
        };
        at += n;
        let confirmed = match push {
            Push::Message { channel, payload } => {
                inbox.deliver(channel, payload);
                continue;
            }
            Push::Subscribed(channel) => Some((Ask::Subscribe, channel)),
            Push::Unsubscribed(channel) => Some((Ask::Unsubscribe, channel)),
            Push::Error(e) => {
                let detail = String::from_utf8_lossy(e).into_owned();
                match waiting.pop_front() {
                    Some(r) => {
                        let refused = RedisError::from((ErrorKind::Io, "pub/sub refused", detail));
                        let _ = r.done.send(Err(refused.into()));
                    }
                    None => {
                        tracing::warn!(error = %detail, "redis pub/sub error with nothing asked")
                    }
                }
                None
            }
            Push::Pong | Push::Status(_) | Push::Other => None,
        };
        let Some((ask, channel)) = confirmed else {
            continue;
        };
        match waiting.pop_front() {
            Some(r) if r.ask == ask && r.channel.as_bytes() == channel => {
                let _ = r.done.send(Ok(()));
            }
            _ => break Err(io_error("pub/sub read", "a confirmation of nothing asked")),
        }
    };
    buf.drain(..at);
    result
}
