//! Liveline gateway: Socket.IO v5 over WebSocket with JWT auth, per-stream
//! sequencing, resume without loss or duplicates, and live fan-out through
//! Redis (or an in-memory broker when no Redis is configured).
//!
//! [`build`] returns the [`axum::Router`] and a [`Handle`]; [`serve`] runs
//! it on a listener; `main` only binds it.
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = liveline_gateway::Config::default();
//! let (router, _handle) = liveline_gateway::build(config.clone()).await?;
//! let listener = tokio::net::TcpListener::bind((config.bind, config.port)).await?;
//! liveline_gateway::serve(listener, router, config.header_timeout, std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

pub mod actions;
pub mod auth;
pub mod broker;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod socket;
pub mod worker;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method, header};
use socketioxide::{SocketIo, TransportType};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::{ServeDir, ServeFile};

use crate::auth::{AuthError, Claims, JwtAlgorithm, JwtAuth};
use crate::broker::{Broker, BrokerError, ControlMessage, MemoryBroker, RedisBroker};
use crate::hub::Hub;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;

/// Crates that log raw WebSocket frames or packets (and so the CONNECT auth
/// payload with its token) at debug or trace level; [`log_filter`] caps them.
pub const PAYLOAD_LOGGING_CRATES: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "engineioxide",
    "socketioxide",
    "socketioxide_core",
    "socketioxide_parser_common",
    "hyper",
    "h2",
];

/// The log filter for `spec` (e.g. `RUST_LOG`), with the crates that log raw
/// frames capped at `info` whatever `spec` says, so no token is ever logged.
pub fn log_filter(spec: &str) -> tracing_subscriber::EnvFilter {
    let kept: Vec<&str> = spec
        .split(',')
        .filter(|d| {
            let target = d.split(['=', '[']).next().unwrap_or("").trim();
            !PAYLOAD_LOGGING_CRATES.contains(&target)
        })
        .collect();
    let mut filter = tracing_subscriber::EnvFilter::new(kept.join(","));
    for krate in PAYLOAD_LOGGING_CRATES {
        if let Ok(d) = format!("{krate}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
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
    /// Run the in-process demo worker for started jobs.
    pub demo_worker: bool,
    /// Pause between two steps of a demo job (default 500 ms).
    pub demo_step: Duration,
    /// Serve `POST /api/v1/dev/token` (mints a token for anyone; off by default).
    pub dev_tokens: bool,
    /// When set, `GET /metrics` needs `Authorization: Bearer <this>` (or a
    /// `service`/`admin` JWT); when unset it is open, for a private port.
    pub metrics_token: Option<String>,
    /// Exact origins allowed for WebSocket upgrades and CORS; empty allows all.
    pub allowed_origins: Vec<String>,
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
    /// Tradable symbols; each has a public topic `market:{symbol}` (default
    /// BTC-USD, ETH-USD, SOL-USD).
    pub symbols: Vec<String>,
    /// Pause between two market ticks of the demo worker (default 500 ms).
    pub market_tick: Duration,
    /// Public topics one socket may subscribe to (default 16).
    pub max_topics_per_socket: usize,
    /// On shutdown, each socket is told to reconnect after a random delay in
    /// `0..=shutdown_jitter` (default 5 s).
    pub shutdown_jitter: Duration,
    /// Longest a graceful shutdown waits for connections to close (default 10 s).
    pub shutdown_timeout: Duration,
}

/// The default tradable symbols.
pub const DEFAULT_SYMBOLS: &[&str] = &["BTC-USD", "ETH-USD", "SOL-USD"];

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
            demo_worker: false,
            demo_step: worker::STEP,
            dev_tokens: false,
            metrics_token: None,
            allowed_origins: Vec::new(),
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(5),
            history_len: 1000,
            max_message_bytes: 64 * 1024,
            max_buffer_packets: 128,
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            revocation_ttl: Duration::from_secs(24 * 3600),
            max_connections_per_user: 16,
            action_rate_per_sec: 10.0,
            action_burst: 20,
            rate_limit_strikes: 10,
            node_id: broker::random_hex(),
            symbols: DEFAULT_SYMBOLS.iter().map(|s| (*s).to_owned()).collect(),
            market_tick: worker::MARKET_TICK,
            max_topics_per_socket: 16,
            shutdown_jitter: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
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
    /// Prometheus metrics of this node.
    pub metrics: Arc<Metrics>,
    /// Per-user action rate limits on this node.
    pub limiter: RateLimiter,
    /// Set when a graceful shutdown began: new CONNECTs are refused and
    /// `/readyz` answers 503.
    pub draining: AtomicBool,
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
        match self.broker.tokens_revoked_at(&claims.sub).await? {
            Some(at) if claims.iat <= at => Err(TokenRefused::Revoked),
            _ => Ok(claims),
        }
    }
}

/// Serves `router` on `listener` over HTTP/1.1 (with upgrades, for the
/// WebSocket) until `shutdown` resolves, then waits for the requests in
/// flight (not for upgraded WebSockets: [`Handle::drain`] tells those to go).
///
/// Unlike `axum::serve`, a connection that does not deliver a request's
/// headers within `header_timeout` is closed, so clients that open TCP
/// connections and never finish the upgrade cannot pile up open files.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    // Every connection task holds a receiver: `closed()` on the sender
    // resolves once the last one has finished.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
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
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
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
    /// `0..=shutdown_jitter` (so clients spread over the other nodes), then
    /// disconnects it. Waits until the sockets are gone or `shutdown_timeout`
    /// passes; returns how many sockets were told.
    pub async fn drain(&self) -> usize {
        use rand::RngExt;
        self.state.draining.store(true, Ordering::SeqCst);
        let jitter = self.state.config.shutdown_jitter.as_millis() as u64;
        let sockets = self.io.sockets();
        let told = sockets.len();
        for s in sockets {
            let retry = rand::rng().random_range(0..=jitter);
            let _ = s.emit(
                hub::SESSION_SHUTDOWN_V1,
                &serde_json::json!({ "retryInMs": retry }),
            );
            hub::close_socket(s);
        }
        let deadline = tokio::time::Instant::now() + self.state.config.shutdown_timeout;
        while !self.io.sockets().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        told
    }

    /// Whether a graceful shutdown began.
    pub fn draining(&self) -> bool {
        self.state.draining.load(Ordering::SeqCst)
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
    let broker: Arc<dyn Broker> = match &config.redis_url {
        Some(url) => {
            Arc::new(RedisBroker::connect(url, &config.key_prefix, config.history_len).await?)
        }
        None => Arc::new(MemoryBroker::new(config.history_len)),
    };
    app(config, broker)
}

/// Builds the app on a given broker: Socket.IO at `/socket.io/` (WebSocket
/// only), the HTTP routes, static files, CORS and the Origin check.
pub fn app(config: Config, broker: Arc<dyn Broker>) -> anyhow::Result<(Router, Handle)> {
    let max_message = config.max_message_bytes.max(1024);
    let (layer, io) = SocketIo::builder()
        .req_path("/socket.io/")
        .transports([TransportType::Websocket])
        .ping_interval(config.ping_interval)
        .ping_timeout(config.ping_timeout)
        .connect_timeout(config.connect_timeout)
        .max_buffer_size(config.max_buffer_packets.max(8))
        .max_payload(max_message as u64)
        .ws_max_message_size(max_message)
        .ws_max_frame_size(max_message)
        .build_layer();
    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(AppState {
        auth: config.jwt()?,
        hub: Hub::new(
            broker.clone(),
            io.clone(),
            metrics.clone(),
            config.max_connections_per_user,
        ),
        limiter: RateLimiter::new(config.action_rate_per_sec, config.action_burst),
        metrics: metrics.clone(),
        broker: broker.clone(),
        draining: AtomicBool::new(false),
        tasks: Mutex::new(Vec::new()),
        config: config.clone(),
    });
    let mut tasks = Vec::new();
    if config.demo_worker {
        tasks.push(tokio::spawn(worker::run(
            broker.clone(),
            config.node_id.clone(),
            config.demo_step,
            metrics,
        )));
        tasks.push(tokio::spawn(worker::run_market(
            broker.clone(),
            config.symbols.clone(),
            config.market_tick,
            config.node_id.clone(),
        )));
    }
    if let Some(mut control) = broker.take_control() {
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
    }
    *state.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
    socket::register(&io, state.clone());

    let mut router = http::routes(state.clone());
    if let Some(dir) = &config.static_dir {
        let index = ServeFile::new(dir.join("index.html"));
        router = router.fallback_service(ServeDir::new(dir).fallback(index));
    }
    let allowed = Arc::new(config.allowed_origins.clone());
    let router = router
        .layer(layer)
        .layer(cors(&config.allowed_origins))
        .layer(axum::middleware::from_fn_with_state(
            allowed,
            http::origin_check,
        ));
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
