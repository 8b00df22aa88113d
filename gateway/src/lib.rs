//! Liveline gateway: Socket.IO v5 over WebSocket with JWT auth, per-stream
//! sequencing, resume without loss or duplicates, and live fan-out through
//! Redis (or an in-memory broker when no Redis is configured).
//!
//! [`build`] returns the [`axum::Router`] and a [`Handle`]; `main` only binds it.
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = liveline_gateway::Config::default();
//! let (router, _handle) = liveline_gateway::build(config.clone()).await?;
//! let listener = tokio::net::TcpListener::bind((config.bind, config.port)).await?;
//! axum::serve(listener, router).await?;
//! # Ok(())
//! # }
//! ```

pub mod actions;
pub mod auth;
pub mod broker;
pub mod http;
pub mod hub;
pub mod socket;
pub mod worker;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method, header};
use socketioxide::{SocketIo, TransportType};
use tokio::sync::mpsc;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::{ServeDir, ServeFile};

use crate::auth::JwtAuth;
use crate::broker::{Broker, JobRecord, MemoryBroker, RedisBroker};
use crate::hub::Hub;

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
    /// HS256 secret. The default [`DEV_JWT_SECRET`] is for development only:
    /// production must set its own.
    pub jwt_secret: String,
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
    /// Exact origins allowed for WebSocket upgrades and CORS; empty allows all.
    pub allowed_origins: Vec<String>,
    /// Engine.IO ping interval (default 10 s; Socket.IO's is 25 s).
    pub ping_interval: Duration,
    /// Engine.IO ping timeout (default 5 s; Socket.IO's is 20 s).
    pub ping_timeout: Duration,
    /// Events kept per stream for resume (approximate in Redis; default 1000).
    pub history_len: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            port: 8080,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            redis_url: None,
            key_prefix: "ll:".to_owned(),
            jwt_secret: DEV_JWT_SECRET.to_owned(),
            jwt_issuer: "liveline".to_owned(),
            jwt_audience: "liveline".to_owned(),
            static_dir: None,
            demo_worker: false,
            demo_step: worker::STEP,
            dev_tokens: false,
            allowed_origins: Vec::new(),
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(5),
            history_len: 1000,
        }
    }
}

impl Config {
    /// The token verifier and minter this configuration describes.
    pub fn jwt(&self) -> JwtAuth {
        JwtAuth::hs256(
            self.jwt_secret.as_bytes(),
            &self.jwt_issuer,
            &self.jwt_audience,
        )
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
    /// Started jobs go to the demo worker, when it runs.
    pub jobs: Option<mpsc::UnboundedSender<JobRecord>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A running gateway's parts, for the binary and for tests.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The Socket.IO server.
    pub io: SocketIo,
    /// The shared state (broker, hub, config).
    pub state: Arc<AppState>,
}

/// Connects the broker and builds the whole app.
pub async fn build(config: Config) -> anyhow::Result<(Router, Handle)> {
    let broker: Arc<dyn Broker> = match &config.redis_url {
        Some(url) => {
            Arc::new(RedisBroker::connect(url, &config.key_prefix, config.history_len).await?)
        }
        None => Arc::new(MemoryBroker::new(config.history_len)),
    };
    Ok(app(config, broker))
}

/// Builds the app on a given broker: Socket.IO at `/socket.io/` (WebSocket
/// only), the HTTP routes, static files, CORS and the Origin check.
pub fn app(config: Config, broker: Arc<dyn Broker>) -> (Router, Handle) {
    let (layer, io) = SocketIo::builder()
        .req_path("/socket.io/")
        .transports([TransportType::Websocket])
        .ping_interval(config.ping_interval)
        .ping_timeout(config.ping_timeout)
        .connect_timeout(Duration::from_secs(10))
        .build_layer();
    let jobs = if config.demo_worker {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(worker::run(broker.clone(), rx, config.demo_step));
        Some(tx)
    } else {
        None
    };
    let state = Arc::new(AppState {
        auth: config.jwt(),
        hub: Hub::new(broker.clone(), io.clone()),
        broker,
        jobs,
        config: config.clone(),
    });
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
    (router, Handle { io, state })
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
