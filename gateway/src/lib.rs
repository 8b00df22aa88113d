//! Liveline gateway: Socket.IO v5 over WebSocket with JWT auth, per-stream
//! sequencing, resume without loss or duplicates, and live fan-out through
//! Redis (or an in-memory broker when no Redis is configured).
//!
//! [`build`] returns the [`axum::Router`] and a [`Handle`], and starts
//! nothing; [`Handle::start`] starts the node's background tasks; [`serve`]
//! runs the router on a listener; `main` only binds it.
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = liveline_gateway::Config::default();
//! let (router, handle) = liveline_gateway::build(config.clone()).await?;
//! handle.start();
//! let listener = tokio::net::TcpListener::bind((config.bind, config.port)).await?;
//! liveline_gateway::serve(listener, router, (&handle).into(), std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

pub mod actions;
pub mod auth;
pub mod broker;
pub mod conn;
pub mod demo;
pub mod edge;
pub mod http;
pub mod hub;
pub mod inbound;
pub mod lean;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod publish;
pub mod sio;
pub mod socket;
pub mod stream;
pub mod trim;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method, header};
use socketioxide::{ParserConfig, SocketIo, TransportType};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::{ServeDir, ServeFile};

use crate::auth::{AuthError, Claims, JwtAlgorithm, JwtAuth};
use crate::broker::{Broker, BrokerError, ControlMessage, MemoryBroker, RedisBroker};
use crate::hub::Hub;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::stream::TopicRules;

/// Crates that log raw WebSocket frames, HTTP headers or packets (and so the
/// CONNECT auth payload or an `Authorization` header with its token) at
/// debug or trace level; [`log_filter`] caps them, and every module under
/// them, at `info`.
pub const PAYLOAD_LOGGING_CRATES: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "engineioxide",
    "engineioxide_core",
    "socketioxide",
    "socketioxide_core",
    "socketioxide_parser_common",
    "hyper",
    "hyper_util",
    "h2",
    "http_body_util",
    "axum",
    "tower_http",
];

/// The log filter for `spec` (e.g. `RUST_LOG`): an `EnvFilter`, and on top of
/// it a cap that drops every debug or trace event of the crates that log raw
/// frames ([`PAYLOAD_LOGGING_CRATES`]) whatever `spec` says: per-module
/// directives (`tungstenite::protocol=trace`), span filters and global levels
/// included. The cap looks at each event's target, so no directive can lift
/// it and no token is ever logged.
pub fn log_filter<S>(
    spec: &str,
) -> impl tracing_subscriber::layer::Filter<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::layer::Filter;
    let env = tracing_subscriber::EnvFilter::builder().parse_lossy(spec);
    // The payload filter only narrows: it keeps the level filter's hint, so
    // the `log` bridge and `tracing` callsites below that level stay off (a
    // filter with no hint would turn every `log::trace!` of the dependencies
    // into a call per frame).
    let hint = Filter::<S>::max_level_hint(&env);
    let payloads = tracing_subscriber::filter::filter_fn(|meta| !may_carry_payloads(meta));
    let payloads = match hint {
        Some(level) => payloads.with_max_level_hint(level),
        None => payloads,
    };
    env.and(payloads)
}

/// Whether an event or span at `meta` may carry a raw frame or header.
fn may_carry_payloads(meta: &tracing::Metadata<'_>) -> bool {
    if *meta.level() <= tracing::Level::INFO {
        return false;
    }
    let target = meta.target();
    PAYLOAD_LOGGING_CRATES.iter().any(|krate| {
        target
            .strip_prefix(krate)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Installs the process's logger: `spec` through [`log_filter`], to stderr.
pub fn init_logging(spec: &str) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(log_filter(spec)),
        )
        .init();
}

/// The development HS256 secret. Production must set its own
/// (`LIVELINE_JWT_SECRET`): anyone knowing this one can mint tokens.
pub const DEV_JWT_SECRET: &str = "liveline-dev-secret";

/// Gateway configuration. [`Config::default`] is a development setup.
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP port (default 8080).
    pub port: u16,
    /// Address to bind (default 127.0.0.1).
    pub bind: IpAddr,
    /// Redis URL; `None` runs the in-memory broker (one node only).
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel (default `ll:`).
    pub key_prefix: String,
    /// The one accepted signature algorithm (default HS256, for development).
    pub jwt_algorithm: JwtAlgorithm,
    /// HS256 secret. The default [`DEV_JWT_SECRET`] is for development only:
    /// production must set its own.
    pub jwt_secret: String,
    /// RS256/EdDSA public keys as (`kid`, PEM bytes).
    pub jwt_public_keys: Vec<(String, Vec<u8>)>,
    /// Accepted clock skew on `exp`/`nbf` in seconds (at most 30, the default).
    pub jwt_leeway_secs: u64,
    /// Required `iss` claim (default `liveline`).
    pub jwt_issuer: String,
    /// Required `aud` claim (default `liveline`).
    pub jwt_audience: String,
    /// Directory of the web app to serve, with `index.html` as SPA fallback.
    pub static_dir: Option<PathBuf>,
    /// The in-process demo (off by default): a user of the layer, configured here.
    pub demo: demo::Settings,
    /// Serve `POST /api/v1/dev/token` (mints a token for anyone; off by default).
    pub dev_tokens: bool,
    /// When set, `GET /metrics` needs `Authorization: Bearer <this>` (or a
    /// `service`/`admin` JWT); when unset it is open, for a private port.
    pub metrics_token: Option<String>,
    /// Exact origins allowed for WebSocket upgrades and CORS; empty allows all.
    pub allowed_origins: Vec<String>,
    /// Serve the HTTP long-polling transport (with upgrade to WebSocket), as
    /// official `socket.io-client`s start with by default (default on).
    /// Several nodes then need sticky sessions; see docs/deployment.md.
    pub polling: bool,
    /// Serve the connections that open as WebSocket directly with the lean
    /// front ([`lean`]: one task per connection, about a third of the
    /// memory) instead of socketioxide (default on). Polling sessions, and
    /// their upgrades, are socketioxide's either way.
    pub lean_websocket: bool,
    /// Engine.IO ping interval (default 10 s; Socket.IO's is 25 s).
    pub ping_interval: Duration,
    /// Engine.IO ping timeout (default 5 s; Socket.IO's is 20 s).
    pub ping_timeout: Duration,
    /// Events kept per stream for resume (approximate in Redis; default 1000).
    pub history_len: usize,
    /// Largest incoming WebSocket message; a larger one closes the socket (default 64 KiB).
    pub max_message_bytes: usize,
    /// Packets queued per socket before it counts as slow and is cut off (default 128).
    pub max_buffer_packets: usize,
    /// Time a client has to send CONNECT after the WebSocket opens (default 10 s).
    pub connect_timeout: Duration,
    /// Time a client has to send a request's headers once its TCP connection
    /// is open (default 10 s): a client that never finishes the WebSocket
    /// upgrade request loses its connection instead of holding a file.
    pub header_timeout: Duration,
    /// Longest a request's whole body may take to arrive once its headers
    /// are in (default 10 s); a slower body is answered 408 and its
    /// connection closed.
    pub body_timeout: Duration,
    /// Connections whose peer has not authenticated (from accept until a
    /// Socket.IO CONNECT with a valid token) this node keeps at most
    /// (default 8192; never more than half the open-file limit). Past it, the
    /// oldest such connection is closed to make room: peers that stall (on
    /// headers, a body, or a WebSocket that never CONNECTs) hold at most this
    /// many files, and `/healthz` and new clients still get in.
    pub max_pending_connections: usize,
    /// Longest one Redis command or reconnect may take before the call fails
    /// with `unavailable` (default 1 s); after a failure, calls fail at once
    /// for a moment (a circuit breaker), then Redis is tried again.
    pub redis_timeout: Duration,
    /// How long a revocation is remembered: at least the longest a user's
    /// token lives (default 24 h). A revoked user's tokens issued before the
    /// revocation are refused on CONNECT and REST until then.
    pub revocation_ttl: Duration,
    /// Sockets one user may hold on one node (default 16).
    pub max_connections_per_user: usize,
    /// Sustained actions per second per user (default 10).
    pub action_rate_per_sec: f64,
    /// Burst of actions per user above the rate (default 20).
    pub action_burst: u32,
    /// Rate-limited actions in a row after which the socket is closed (default 10).
    pub rate_limit_strikes: u32,
    /// This node's name (worker consumer name); random by default.
    pub node_id: String,
    /// Names under these prefixes are topics (`--topic-prefix`, e.g.
    /// `room:`); a user reads one when their token's `topics` claim lists it.
    pub topic_prefixes: Vec<String>,
    /// Topics under these prefixes are public: every user may read them
    /// (`--public-topic-prefix`). The demo adds its own when it runs.
    pub public_topic_prefixes: Vec<String>,
    /// The job kinds `job:start:v1` accepts (`--job-kind`); empty: any
    /// well-formed name (see [`actions::valid_kind`]).
    pub job_kinds: Vec<String>,
    /// The app actions forwarded to workers (`--action`); empty: any
    /// well-formed name outside the layer's own domains (see
    /// [`actions::is_app_action`]).
    pub actions: Vec<String>,
    /// Topics one socket may subscribe to (default 16).
    pub max_topics_per_socket: usize,
    /// On shutdown, each socket is told to reconnect after a random delay in
    /// `0..=shutdown_jitter` (default 5 s).
    pub shutdown_jitter: Duration,
    /// Longest a graceful shutdown waits for connections to close (default 10 s).
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            port: 8080,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            redis_url: None,
            key_prefix: "ll:".to_owned(),
            jwt_algorithm: JwtAlgorithm::Hs256,
            jwt_secret: DEV_JWT_SECRET.to_owned(),
            jwt_public_keys: Vec::new(),
            jwt_leeway_secs: auth::LEEWAY_SECS,
            jwt_issuer: "liveline".to_owned(),
            jwt_audience: "liveline".to_owned(),
            static_dir: None,
            demo: demo::Settings::default(),
            dev_tokens: false,
            metrics_token: None,
            allowed_origins: Vec::new(),
            polling: true,
            lean_websocket: true,
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(5),
            history_len: 1000,
            max_message_bytes: 64 * 1024,
            max_buffer_packets: 128,
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_pending_connections: 8192,
            redis_timeout: broker::DEFAULT_COMMAND_TIMEOUT,
            revocation_ttl: Duration::from_secs(24 * 3600),
            max_connections_per_user: 16,
            action_rate_per_sec: 10.0,
            action_burst: 20,
            rate_limit_strikes: 10,
            node_id: broker::random_hex(),
            max_topics_per_socket: 16,
            topic_prefixes: Vec::new(),
            public_topic_prefixes: Vec::new(),
            job_kinds: Vec::new(),
            actions: Vec::new(),
            shutdown_jitter: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// A configuration the gateway cannot run with.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field} {problem}")]
pub struct ConfigError {
    /// The setting, as its command-line flag.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl Config {
    /// Checks every setting the gateway could not run with (a zero ping
    /// interval would panic inside the Engine.IO server, a zero ping timeout
    /// would close every connection at once, ...).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: &'static str, problem: &str| {
            Err(ConfigError {
                field,
                problem: problem.to_owned(),
            })
        };
        let positive = [
            ("--ping-interval", self.ping_interval),
            ("--ping-timeout", self.ping_timeout),
            ("--connect-timeout", self.connect_timeout),
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
            ("--redis-timeout", self.redis_timeout),
            ("--shutdown-timeout-secs", self.shutdown_timeout),
        ];
        for (field, d) in positive {
            if d < Duration::from_millis(1) {
                return err(field, "must be at least 1ms");
            }
        }
        if self.max_message_bytes < 1024 {
            return err("--max-message-bytes", "must be at least 1024");
        }
        if self.max_buffer_packets < 8 {
            return err("--max-buffer-packets", "must be at least 8");
        }
        if !(1..=broker::MAX_HISTORY_LEN).contains(&self.history_len) {
            return err(
                "--history-len",
                &format!("must be from 1 to {}", broker::MAX_HISTORY_LEN),
            );
        }
        if self.max_connections_per_user == 0 {
            return err("--max-connections-per-user", "must be at least 1");
        }
        if self.max_pending_connections == 0 {
            return err("--max-pending-connections", "must be at least 1");
        }
        if !(self.action_rate_per_sec.is_finite() && self.action_rate_per_sec > 0.0) {
            return err("--action-rate", "must be a positive number");
        }
        if self.action_burst == 0 {
            return err("--action-burst", "must be at least 1");
        }
        if self.jwt_leeway_secs > auth::LEEWAY_SECS {
            return err("--jwt-leeway-secs", "must be at most 30");
        }
        if self.key_prefix.is_empty() {
            return err("--key-prefix", "must not be empty");
        }
        let prefixes = self
            .topic_prefixes
            .iter()
            .chain(&self.public_topic_prefixes);
        for prefix in prefixes {
            if prefix.is_empty() || prefix.starts_with("job:") {
                return err(
                    "--topic-prefix",
                    "must not be empty, nor start with job: (those are job streams)",
                );
            }
        }
        if let Some(action) = self.actions.iter().find(|a| !inbound::app_action_name(a)) {
            return err(
                "--action",
                &format!(
                    "{action:?} is not an app action: domain:name:vN outside the layer's domains ({})",
                    inbound::RESERVED_DOMAINS.join(", ")
                ),
            );
        }
        if let Some(kind) = self.job_kinds.iter().find(|k| !actions::valid_kind(k)) {
            return err(
                "--job-kind",
                &format!("{kind:?} is not a job kind (1 to 64 of a-z 0-9 . _ -)"),
            );
        }
        Ok(())
    }

    /// The token verifier this configuration describes (a minter too for HS256).
    pub fn jwt(&self) -> Result<JwtAuth, AuthError> {
        let auth = match self.jwt_algorithm {
            JwtAlgorithm::Hs256 => JwtAuth::hs256(
                self.jwt_secret.as_bytes(),
                &self.jwt_issuer,
                &self.jwt_audience,
            ),
            alg => JwtAuth::public_keys(
                alg,
                self.jwt_public_keys
                    .iter()
                    .map(|(kid, pem)| (kid.as_str(), pem.as_slice())),
                &self.jwt_issuer,
                &self.jwt_audience,
            )?,
        };
        Ok(auth.with_leeway(self.jwt_leeway_secs))
    }
}

/// What every handler shares.
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// Token verification.
    pub auth: JwtAuth,
    /// Events, history, jobs and idempotency records.
    pub broker: Arc<dyn Broker>,
    /// Live fan-out on this node.
    pub hub: Hub,
    /// Which stream names are topics, and which are public.
    pub topics: TopicRules,
    /// The one publish path.
    pub publisher: Publisher,
    /// Prometheus metrics of this node.
    pub metrics: Arc<Metrics>,
    /// Per-user action rate limits on this node.
    pub limiter: RateLimiter,
    /// Set when a graceful shutdown began: new CONNECTs are refused and
    /// `/readyz` answers 503.
    pub draining: AtomicBool,
    /// The lean WebSocket front's connections.
    pub lean: lean::Lean,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenRefused {
    /// Malformed, badly signed, expired, wrong issuer or audience, ...
    #[error(transparent)]
    Invalid(#[from] AuthError),
    /// Issued before its user was revoked ([`Handle::revoke`]).
    #[error("token revoked")]
    Revoked,
    /// The revocation record could not be read: refused, to be safe.
    #[error("revocation check failed: {0}")]
    Unavailable(#[from] BrokerError),
}

impl AppState {
    /// See [`Handle::revoke`].
    pub async fn revoke(&self, user: &str) -> Result<(), BrokerError> {
        self.broker
            .revoke_tokens(user, auth::unix_secs(), self.config.revocation_ttl)
            .await?;
        self.broker
            .broadcast_control(&ControlMessage::Revoke {
                user: user.to_owned(),
            })
            .await
    }

    /// Verifies `token` and refuses it when its user was revoked after it
    /// was issued (`iat` at or before the revocation, in unix seconds).
    pub async fn authenticate(&self, token: &str) -> Result<Claims, TokenRefused> {
        let claims = self.auth.verify(token)?;
        self.check_revoked(&claims).await?;
        Ok(claims)
    }

    /// Refuses verified `claims` when their user was revoked after the
    /// token was issued: the second half of [`AppState::authenticate`].
    pub async fn check_revoked(&self, claims: &Claims) -> Result<(), TokenRefused> {
        match self.broker.tokens_revoked_at(&claims.sub).await? {
            Some(at) if claims.iat <= at => Err(TokenRefused::Revoked),
            _ => Ok(()),
        }
    }
}

/// How [`serve`] takes connections: what it bounds before a peer
/// authenticates, and the lean WebSocket front, when it runs.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// See [`Config::header_timeout`].
    pub header_timeout: Duration,
    /// See [`Config::max_pending_connections`] (lowered further to half of
    /// the process's open-file limit).
    pub max_pending_connections: usize,
    /// The node whose lean front takes WebSocket opens straight from TCP
    /// ([`lean`]), unless [`Config::lean_websocket`] is off.
    pub lean: Option<Arc<AppState>>,
}

impl From<&Handle> for ServeLimits {
    fn from(handle: &Handle) -> Self {
        let config = &handle.state.config;
        Self {
            header_timeout: config.header_timeout,
            max_pending_connections: config.max_pending_connections,
            lean: config.lean_websocket.then(|| handle.state.clone()),
        }
    }
}

/// Sets TCP_NODELAY on `listener`; true when its accepted sockets inherit
/// it (Linux copies a listening socket's options to the sockets it
/// accepts), so that no socket needs a `setsockopt` of its own: one system
/// call less per connection.
fn nodelay_inherited(listener: &tokio::net::TcpListener) -> bool {
    cfg!(target_os = "linux")
        && socket2::SockRef::from(listener)
            .set_tcp_nodelay(true)
            .is_ok()
}

/// Serves `router` on `listener` over HTTP/1.1 (with upgrades, for the
/// WebSocket) until `shutdown` resolves, then waits for the requests in
/// flight (not for upgraded WebSockets: [`Handle::drain`] tells those to go).
///
/// Unlike `axum::serve`, a connection that does not deliver a request's
/// headers within `limits.header_timeout` is closed, and at most
/// `limits.max_pending_connections` connections whose peer has not
/// authenticated may be open at once: past that, the oldest is closed to
/// make room (see [`edge::Pending`]). So clients that open TCP connections and stall cannot pile up
/// open files or lock new clients out.
///
/// With the lean front (`limits.lean`), each connection's first request
/// head is read by [`lean::read_head`] first, within the header timeout: a
/// WebSocket open stays with the lean front, anything else goes to hyper
/// with the bytes read (a request line that is in passes at once; hyper's
/// own header timeout then applies to the rest of its head).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let pending = Arc::new(edge::Pending::new(edge::pending_cap(
        limits.max_pending_connections,
    )));
    tracing::debug!(cap = pending.cap(), "pending connections cap");
    // Every connection task holds a receiver: `closed()` on the sender
    // resolves once the last one has finished.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let inherited = nodelay_inherited(&listener);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of files, or a connection reset before accept:
                    // back off a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if !inherited {
            let _ = stream.set_nodelay(true);
        }
        let (admission, evict) = pending.admit();
        let mut stop = stop_rx.clone();
        let (router, lean, header_timeout) =
            (router.clone(), limits.lean.clone(), limits.header_timeout);
        tokio::spawn(async move {
            let mut io = edge::Evictable::new(stream, evict);
            // The lean front reads the first request's head itself: a
            // WebSocket open is answered there (the 101 and the open packet
            // in one write), anything else goes to hyper with what was read.
            let mut first = Vec::new();
            if let Some(state) = lean {
                let read = tokio::select! {
                    read = tokio::time::timeout(header_timeout, lean::read_head(&mut io)) => read,
                    () = async { drop(stop.wait_for(|stop| *stop).await) } => return,
                };
                match read {
                    Ok(Ok(lean::Read::Pass(bytes))) => first = bytes,
                    Ok(Ok(lean::Read::Lean(opening))) => {
                        // A task of its own, no longer the listener's to wait
                        // for (as an upgraded hyper connection is not), and
                        // sized for the lean connection alone: this task's
                        // future also holds hyper's connection state.
                        tokio::spawn(lean::accept(state, io, opening, admission));
                        return;
                    }
                    // Closed, failed, or no head within the timeout.
                    _ => return,
                }
            }
            // Every request carries the admission: the Socket.IO session keeps
            // its first request, and releases the admission on CONNECT.
            let service = tower::ServiceExt::map_request(
                router,
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(admission.clone());
                    edge::detach_head(&mut req);
                    req
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(
                    TokioIo::new(edge::Prefixed::new(first, io)),
                    hyper_util::service::TowerToHyperService::new(service),
                )
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                // (The guard `wait_for` returns must not live across the await.)
                () = async { drop(stop.wait_for(|stop| *stop).await) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    stop_tx.closed().await;
}

/// A running gateway's parts, for the binary and for tests.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The Socket.IO server.
    pub io: SocketIo,
    /// The shared state (broker, hub, config).
    pub state: Arc<AppState>,
}

impl Handle {
    /// Revokes `user`: every token issued up to now (`iat`) is refused on
    /// CONNECT and REST for [`Config::revocation_ttl`], and every socket of
    /// the user on every node is closed (each gets
    /// [`hub::SESSION_REVOKED_V1`] first). The close is carried on the
    /// broker's control channel (Redis pub/sub `{prefix}control`), not the
    /// socketioxide adapter.
    pub async fn revoke(&self, user: &str) -> Result<(), BrokerError> {
        self.state.revoke(user).await
    }

    /// Starts a graceful shutdown of this node's sockets: refuses new CONNECTs
    /// (and turns `/readyz` to 503), sends every socket
    /// `session:shutdown:v1` `{"retryInMs": n}` with `n` drawn per socket from
    /// `0..=shutdown_jitter` (so Liveline clients spread over the other
    /// nodes), then closes every transport. It closes the transport rather
    /// than sending a Socket.IO DISCONNECT, so official `socket.io-client`s
    /// reconnect by themselves, as after any network loss. Waits at most
    /// `shutdown_timeout`; returns how many sockets were told.
    pub async fn drain(&self) -> usize {
        use rand::RngExt;
        self.state.draining.store(true, Ordering::SeqCst);
        let jitter = self.state.config.shutdown_jitter.as_millis() as u64;
        let sockets = self.state.hub.connections().await;
        let told = sockets.len();
        for s in sockets {
            let retry = rand::rng().random_range(0..=jitter);
            let _ = s.emit(
                hub::SESSION_SHUTDOWN_V1,
                &serde_json::json!({ "retryInMs": retry }),
            );
        }
        // Each transport writes what it has queued (the notice) before it closes.
        let both = async { tokio::join!(self.io.close(), self.state.lean.close()) };
        let closed = tokio::time::timeout(self.state.config.shutdown_timeout, both);
        if closed.await.is_err() {
            tracing::warn!("transports still open after the shutdown timeout");
        }
        // Closing removed the namespace: register it again, so a late CONNECT
        // gets the draining refusal (`unavailable`), not "Invalid namespace".
        sio::register(&self.io, self.state.clone());
        // The closed sessions' analytics, gathered but maybe not stored yet.
        if let Err(e) = self.state.broker.flush_analytics().await {
            tracing::warn!(error = %e, "analytics not stored at shutdown");
        }
        told
    }

    /// Whether a graceful shutdown began.
    pub fn draining(&self) -> bool {
        self.state.draining.load(Ordering::SeqCst)
    }

    /// Starts this node's background tasks: the control-channel listener
    /// (revocations from other nodes), the renewal of this node's places in
    /// the shared connection cap, the memory trim after connections close
    /// ([`trim`]) and, when configured, the demo. Building
    /// the app starts nothing; `serve` callers call this once (a second call
    /// does nothing).
    pub fn start(&self) {
        let state = &self.state;
        let mut tasks = state.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut control) = state.broker.take_control() else {
            return;
        };
        let st = state.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(msg) = control.recv().await {
                match msg {
                    ControlMessage::Revoke { user } => {
                        let n = st.hub.revoke_local(&user).await;
                        tracing::info!(sockets = n, "user revoked");
                    }
                }
            }
        }));
        let st = state.clone();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(hub::RENEW_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for tick in 0u64.. {
                every.tick().await;
                st.hub.renew_connections(tick).await;
            }
        }));
        let st = state.clone();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(trim::CHECK_EVERY_MS));
            let mut policy = trim::TrimPolicy::default();
            let started = tokio::time::Instant::now();
            loop {
                every.tick().await;
                let now = started.elapsed().as_millis() as u64;
                let (open, closed) = st.metrics.connection_counts();
                if policy.check(now, open, closed) {
                    let _ = tokio::task::spawn_blocking(trim::release_free_memory).await;
                }
            }
        }));
        let config = &state.config;
        if config.demo.enabled {
            tasks.extend(demo::spawn(
                &config.demo,
                state.broker.clone(),
                state.publisher.clone(),
                state.metrics.clone(),
                &config.node_id,
            ));
        }
    }

    /// Stops this node's background tasks (demo worker, control listener).
    pub fn shutdown(&self) {
        let tasks =
            std::mem::take(&mut *self.state.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
    }
}

/// Connects the broker and builds the whole app.
pub async fn build(config: Config) -> anyhow::Result<(Router, Handle)> {
    config.validate()?;
    let broker: Arc<dyn Broker> = match &config.redis_url {
        Some(url) => Arc::new(
            RedisBroker::connect_with(
                url,
                &config.key_prefix,
                config.history_len,
                config.redis_timeout,
            )
            .await?,
        ),
        None => Arc::new(MemoryBroker::new(config.history_len)),
    };
    assemble(config, broker)
}

/// Builds the app on a given broker: Socket.IO at `/socket.io/` (long-polling
/// unless [`Config::polling`] is off, and WebSocket), the HTTP routes, static
/// files, CORS and the Origin check.
pub fn app(config: Config, broker: Arc<dyn Broker>) -> anyhow::Result<(Router, Handle)> {
    config.validate()?;
    assemble(config, broker)
}

/// What each WebSocket's read buffer starts with, in both fronts
/// (engineioxide's default is 4 KiB).
const WS_READ_BUFFER: usize = lean::WS_READ_BUFFER;

/// [`app`] for a configuration already validated.
fn assemble(config: Config, broker: Arc<dyn Broker>) -> anyhow::Result<(Router, Handle)> {
    let max_message = config.max_message_bytes;
    let builder = SocketIo::builder()
        .req_path("/socket.io/")
        // The gateway's protocol is JSON: a packet announcing binary
        // attachments closes its connection at once, before CONNECT as after,
        // so nothing of a client's is buffered beyond one frame.
        .with_parser(ParserConfig::common().max_incoming_binaries(0));
    let builder = if config.polling {
        builder.transports([TransportType::Polling, TransportType::Websocket])
    } else {
        builder.transports([TransportType::Websocket])
    };
    let (layer, io) = builder
        .ping_interval(config.ping_interval)
        .ping_timeout(config.ping_timeout)
        .connect_timeout(config.connect_timeout)
        .max_buffer_size(config.max_buffer_packets)
        .max_payload(max_message as u64)
        .ws_max_message_size(max_message)
        .ws_max_frame_size(max_message)
        .ws_read_buffer_size(WS_READ_BUFFER)
        .build_layer();
    let metrics = Arc::new(Metrics::default());
    let mut public_topics = config.public_topic_prefixes.clone();
    if config.demo.enabled {
        public_topics.extend(demo::PUBLIC_PREFIXES.iter().map(|p| (*p).to_owned()));
    }
    let state = Arc::new(AppState {
        auth: config.jwt()?,
        hub: Hub::new(
            broker.clone(),
            metrics.clone(),
            config.max_connections_per_user,
            &config.node_id,
        ),
        limiter: RateLimiter::new(config.action_rate_per_sec, config.action_burst),
        topics: TopicRules::new(&config.topic_prefixes, &public_topics),
        publisher: Publisher::new(broker.clone()),
        metrics: metrics.clone(),
        broker: broker.clone(),
        draining: AtomicBool::new(false),
        lean: lean::Lean::default(),
        tasks: Mutex::new(Vec::new()),
        config: config.clone(),
    });
    sio::register(&io, state.clone());

    let mut router = http::routes(state.clone());
    if let Some(dir) = &config.static_dir {
        let index = ServeFile::new(dir.join("index.html"));
        router = router.fallback_service(ServeDir::new(dir).fallback(index));
    }
    let allowed = Arc::new(config.allowed_origins.clone());
    let body_timeout = config.body_timeout;
    let router = router.layer(layer);
    let router = router
        .layer(cors(&config.allowed_origins))
        .layer(axum::middleware::from_fn_with_state(
            allowed,
            http::origin_check,
        ))
        .layer(tower::util::MapRequestLayer::new(move |req| {
            edge::on_request(req, body_timeout)
        }));
    Ok((router, Handle { io, state }))
}

fn cors(allowed: &[String]) -> CorsLayer {
    let origin = if allowed.is_empty() {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(allowed.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::Registry;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::Filter;

    /// `--history-len` is refused outside what the publish script keeps (a
    /// Redis broker would have every publish refused), its edges taken.
    #[test]
    fn history_len_is_refused_outside_the_scripts_bounds() {
        use super::{Config, broker::MAX_HISTORY_LEN};
        let with = |history_len| Config {
            history_len,
            ..Config::default()
        };
        for refused in [0, MAX_HISTORY_LEN + 1, usize::MAX] {
            let err = with(refused).validate().expect_err("refused");
            assert_eq!(err.field, "--history-len");
            assert!(err.problem.contains("2147483647"), "{}", err.problem);
        }
        for taken in [1, 1000, MAX_HISTORY_LEN] {
            with(taken).validate().expect("taken");
        }
    }

    /// The log filter's level reaches `log::max_level` through its hint: a
    /// filter without one would let every dependency's `log::trace!` through
    /// to be judged one record at a time.
    #[test]
    fn the_log_filter_hints_its_most_verbose_level() {
        let hint = |spec: &str| Filter::<Registry>::max_level_hint(&super::log_filter(spec));
        assert_eq!(hint("info"), Some(LevelFilter::INFO));
        assert_eq!(hint("warn"), Some(LevelFilter::WARN));
        assert_eq!(
            hint("warn,liveline_gateway=debug"),
            Some(LevelFilter::DEBUG)
        );
        assert_eq!(hint("trace"), Some(LevelFilter::TRACE));
    }

    /// `serve` sets TCP_NODELAY once, on the listener, and not on each
    /// socket it accepts: only sound where accepted sockets inherit it.
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let inherited = super::nodelay_inherited(&listener);
        assert_eq!(inherited, cfg!(target_os = "linux"));
        let addr = listener.local_addr().expect("its address");
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (stream, _) = accepted.expect("a connection accepted");
        drop(client);
        if inherited {
            assert!(
                stream.nodelay().expect("TCP_NODELAY read"),
                "the accepted socket lost TCP_NODELAY"
            );
        }
    }
}
