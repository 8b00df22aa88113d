//! `liveline-gateway`: serve, mint a dev token, or publish an event.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use liveline_gateway::auth::JwtAlgorithm;
use liveline_gateway::broker::RedisBroker;
use liveline_gateway::publish::Publisher;
use liveline_gateway::stream::{Stream, TopicRules};
use liveline_gateway::{Config, DEV_JWT_SECRET};

#[derive(Debug, Parser)]
#[command(name = "liveline-gateway", version, about = "Liveline gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve Socket.IO, the REST API and (optionally) the web app.
    Serve(Box<ServeArgs>),
    /// Print an HS256 token for a user.
    MintToken(MintArgs),
    /// Publish one event to a user's stream through Redis.
    Publish(PublishArgs),
}

#[derive(Debug, Args)]
struct JwtArgs {
    /// The one accepted algorithm: hs256 (development), rs256 or eddsa.
    #[arg(
        long,
        env = "LIVELINE_JWT_ALGORITHM",
        value_enum,
        default_value = "hs256"
    )]
    jwt_algorithm: JwtAlgorithm,
    /// RS256/EdDSA public key as KID=PATH to a PEM file; repeat for rotation
    /// (comma-separated in the environment).
    #[arg(long, env = "LIVELINE_JWT_PUBLIC_KEYS", value_delimiter = ',')]
    jwt_public_key: Vec<String>,
    /// Accepted clock skew in seconds (at most 30).
    #[arg(long, env = "LIVELINE_JWT_LEEWAY_SECS", default_value_t = 30)]
    jwt_leeway_secs: u64,
    /// HS256 secret. The default is for development only: production must set it.
    #[arg(long, env = "LIVELINE_JWT_SECRET", default_value = DEV_JWT_SECRET, hide_env_values = true)]
    jwt_secret: String,
    /// Required issuer.
    #[arg(long, env = "LIVELINE_JWT_ISSUER", default_value = "liveline")]
    jwt_issuer: String,
    /// Required audience.
    #[arg(long, env = "LIVELINE_JWT_AUDIENCE", default_value = "liveline")]
    jwt_audience: String,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// TCP port (0: any free one; the `listening on` line on stdout says which).
    #[arg(long, env = "LIVELINE_PORT", default_value_t = 8080)]
    port: u16,
    /// Address to bind.
    #[arg(long, env = "LIVELINE_BIND", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Redis URL; without it the in-memory broker runs (one node only).
    #[arg(long, env = "LIVELINE_REDIS_URL")]
    redis_url: Option<String>,
    /// Prefix of every Redis key and channel.
    #[arg(long, env = "LIVELINE_KEY_PREFIX", default_value = "ll:")]
    key_prefix: String,
    #[command(flatten)]
    jwt: JwtArgs,
    /// Directory of the web app to serve (index.html is the SPA fallback).
    #[arg(long, env = "LIVELINE_STATIC_DIR")]
    static_dir: Option<PathBuf>,
    /// Run the in-process demo worker.
    #[arg(long, env = "LIVELINE_DEMO_WORKER")]
    demo_worker: bool,
    /// Pause between demo job steps, in milliseconds.
    #[arg(long, env = "LIVELINE_DEMO_STEP_MS", default_value_t = 500)]
    demo_step_ms: u64,
    /// Serve POST /api/v1/dev/token (anyone can get a token: development only).
    #[arg(long, env = "LIVELINE_DEV_TOKENS")]
    dev_tokens: bool,
    /// Bearer token GET /metrics requires (service/admin JWTs work too); unset: open.
    #[arg(long, env = "LIVELINE_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Exact allowed origins, comma-separated; empty allows all (development).
    #[arg(long, env = "LIVELINE_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Serve only the WebSocket transport (no HTTP long-polling); official
    /// socket.io-clients then need `transports: ['websocket']`.
    #[arg(long, env = "LIVELINE_WEBSOCKET_ONLY")]
    websocket_only: bool,
    /// Serve direct WebSocket connections with socketioxide instead of the
    /// lean front (one task per connection, about a third of the memory).
    #[arg(long, env = "LIVELINE_SOCKETIOXIDE_WEBSOCKET")]
    socketioxide_websocket: bool,
    /// Engine.IO ping interval: `300ms`, `10s`, `1m` (a bare number is seconds).
    #[arg(long, alias = "ping-interval-secs", env = "LIVELINE_PING_INTERVAL", default_value = "10s", value_parser = duration)]
    ping_interval: Duration,
    /// Engine.IO ping timeout (`200ms`, `5s`; a bare number is seconds).
    #[arg(long, alias = "ping-timeout-secs", env = "LIVELINE_PING_TIMEOUT", default_value = "5s", value_parser = duration)]
    ping_timeout: Duration,
    /// Events kept per stream for resume.
    #[arg(long, env = "LIVELINE_HISTORY_LEN", default_value_t = 1000)]
    history_len: usize,
    /// Largest incoming WebSocket message in bytes.
    #[arg(long, env = "LIVELINE_MAX_MESSAGE_BYTES", default_value_t = 65536)]
    max_message_bytes: usize,
    /// Outgoing packets queued per socket before it is cut off as slow.
    #[arg(long, env = "LIVELINE_MAX_BUFFER_PACKETS", default_value_t = 128)]
    max_buffer_packets: usize,
    /// Time a client has to send CONNECT after its transport opens.
    #[arg(long, alias = "connect-timeout-secs", env = "LIVELINE_CONNECT_TIMEOUT", default_value = "10s", value_parser = duration)]
    connect_timeout: Duration,
    /// Time a client has to send a request's headers after its TCP connection opens.
    #[arg(long, alias = "header-timeout-secs", env = "LIVELINE_HEADER_TIMEOUT", default_value = "10s", value_parser = duration)]
    header_timeout: Duration,
    /// Time a request's whole body has to arrive after its headers (then 408).
    #[arg(long, env = "LIVELINE_BODY_TIMEOUT", default_value = "10s", value_parser = duration)]
    body_timeout: Duration,
    /// Connections not yet authenticated (no Socket.IO CONNECT with a valid
    /// token) kept at most; past it the oldest is closed. Never more than
    /// half the open-file limit.
    #[arg(long, env = "LIVELINE_MAX_PENDING_CONNECTIONS", default_value_t = 8192)]
    max_pending_connections: usize,
    /// Longest one Redis command or reconnect may take before it fails
    /// (`unavailable`); then calls fail at once for a moment.
    #[arg(long, env = "LIVELINE_REDIS_TIMEOUT", default_value = "1s", value_parser = duration)]
    redis_timeout: Duration,
    /// Seconds a revocation is remembered; at least the longest token lifetime.
    #[arg(long, env = "LIVELINE_REVOCATION_TTL_SECS", default_value_t = 86_400)]
    revocation_ttl_secs: u64,
    /// Sockets per user on this node.
    #[arg(long, env = "LIVELINE_MAX_CONNECTIONS_PER_USER", default_value_t = 16)]
    max_connections_per_user: usize,
    /// Sustained actions per second per user.
    #[arg(long, env = "LIVELINE_ACTION_RATE", default_value_t = 10.0)]
    action_rate: f64,
    /// Action burst per user.
    #[arg(long, env = "LIVELINE_ACTION_BURST", default_value_t = 20)]
    action_burst: u32,
    /// Rate-limited actions in a row before the socket is closed.
    #[arg(long, env = "LIVELINE_RATE_LIMIT_STRIKES", default_value_t = 10)]
    rate_limit_strikes: u32,
    /// This node's name (worker consumer name); random when unset.
    #[arg(long, env = "LIVELINE_NODE_ID")]
    node_id: Option<String>,
    /// Tradable symbols, comma-separated; each has a public topic market:{symbol}.
    #[arg(
        long,
        env = "LIVELINE_SYMBOLS",
        value_delimiter = ',',
        default_value = "BTC-USD,ETH-USD,SOL-USD"
    )]
    symbols: Vec<String>,
    /// Pause between demo market ticks, in milliseconds.
    #[arg(long, env = "LIVELINE_MARKET_TICK_MS", default_value_t = 500)]
    market_tick_ms: u64,
    #[command(flatten)]
    topics: TopicArgs,
    /// The job kinds `job:start:v1` accepts, comma-separated; any
    /// well-formed kind when unset.
    #[arg(long = "job-kind", env = "LIVELINE_JOB_KINDS", value_delimiter = ',')]
    job_kinds: Vec<String>,
    /// The app actions forwarded to workers, comma-separated (e.g.
    /// `doc:annotate:v1`); any well-formed name outside the layer's own
    /// domains when unset.
    #[arg(long = "action", env = "LIVELINE_ACTIONS", value_delimiter = ',')]
    actions: Vec<String>,
    /// Topics one connection may subscribe to.
    #[arg(long, env = "LIVELINE_MAX_TOPICS_PER_SOCKET", default_value_t = 16)]
    max_topics_per_socket: usize,
    /// On shutdown, clients are told to reconnect after a random delay up to this, in ms.
    #[arg(long, env = "LIVELINE_SHUTDOWN_JITTER_MS", default_value_t = 5000)]
    shutdown_jitter_ms: u64,
    /// Longest a graceful shutdown waits for connections to close, in seconds.
    #[arg(long, env = "LIVELINE_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    shutdown_timeout_secs: u64,
}

#[derive(Debug, Args)]
struct MintArgs {
    /// Role claim: `service` (workers: publish, read analytics), `admin`
    /// (also revoke), `analytics` (read analytics only).
    #[arg(long)]
    role: Option<String>,
    /// The user id (`sub`).
    #[arg(long)]
    sub: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    #[command(flatten)]
    jwt: JwtArgs,
}

#[derive(Debug, Args)]
struct TopicArgs {
    /// Names under these prefixes are topics (comma-separated, e.g. `room:`);
    /// a user reads one when their token's `topics` claim lists it.
    #[arg(
        long = "topic-prefix",
        env = "LIVELINE_TOPIC_PREFIXES",
        value_delimiter = ','
    )]
    topic_prefixes: Vec<String>,
    /// Topics under these prefixes are public: every user may read them.
    #[arg(
        long = "public-topic-prefix",
        env = "LIVELINE_PUBLIC_TOPIC_PREFIXES",
        value_delimiter = ','
    )]
    public_topic_prefixes: Vec<String>,
}

impl TopicArgs {
    fn rules(&self) -> TopicRules {
        TopicRules::new(
            &clean(&self.topic_prefixes),
            &clean(&self.public_topic_prefixes),
        )
    }
}

/// Trimmed, without empty entries.
fn clean(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[derive(Debug, Args)]
struct PublishArgs {
    /// Redis URL.
    #[arg(long, env = "LIVELINE_REDIS_URL")]
    redis_url: String,
    /// Prefix of every Redis key and channel.
    #[arg(long, env = "LIVELINE_KEY_PREFIX", default_value = "ll:")]
    key_prefix: String,
    /// The owner: required for a private stream, checked against the job's
    /// owner when given, left out for a topic.
    #[arg(long)]
    user: Option<String>,
    /// The stream: `job:{id}`, a topic (a name under a topic prefix), or the
    /// name of the user's private stream.
    #[arg(long)]
    stream: String,
    #[command(flatten)]
    topics: TopicArgs,
    /// The contract name, e.g. `job:status:v1`.
    #[arg(long)]
    event: String,
    /// The payload, JSON. Given several times (at most 256), the events go
    /// out as one batch: consecutive seqs, in order, all or none.
    #[arg(long, required = true)]
    data: Vec<String>,
    /// Events kept per stream.
    #[arg(long, env = "LIVELINE_HISTORY_LEN", default_value_t = 1000)]
    history_len: usize,
}

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    // Before the runtime's threads exist (a thread's first allocation picks
    // its arena): as many arenas as the runtime will have workers, counted as
    // tokio counts them (`TOKIO_WORKER_THREADS`, else the CPUs this process
    // may run on).
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let _ = liveline_gateway::trim::tune_malloc(workers);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    liveline_gateway::init_logging(
        &std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
    );
    match Cli::parse().command {
        Command::Serve(args) => serve(*args).await,
        Command::MintToken(args) => {
            anyhow::ensure!(
                args.jwt.jwt_algorithm == JwtAlgorithm::Hs256,
                "mint-token signs HS256 only; RS256/EdDSA tokens come from your identity provider"
            );
            let jwt = liveline_gateway::auth::JwtAuth::hs256(
                args.jwt.jwt_secret.as_bytes(),
                &args.jwt.jwt_issuer,
                &args.jwt.jwt_audience,
            );
            println!(
                "{}",
                jwt.mint_with_role(&args.sub, args.ttl, args.role.as_deref())?
            );
            Ok(())
        }
        Command::Publish(args) => {
            let data = args
                .data
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    serde_json::from_str(d)
                        .with_context(|| format!("--data #{} is not JSON", i + 1))
                })
                .collect::<anyhow::Result<Vec<serde_json::Value>>>()?;
            let stream =
                Stream::for_publisher(&args.stream, args.user.as_deref(), &args.topics.rules())?;
            let broker =
                RedisBroker::connect(&args.redis_url, &args.key_prefix, args.history_len).await?;
            let publisher = Publisher::new(Arc::new(broker));
            // One event per line, in order.
            let envs = publisher
                .publish_batch_as(args.user.as_deref(), &stream, &args.event, data)
                .await?;
            for env in envs {
                println!("{}", serde_json::to_string(&env)?);
            }
            Ok(())
        }
    }
}

fn public_keys(specs: &[String]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    specs
        .iter()
        .filter(|s| !s.is_empty())
        .map(|spec| {
            let (kid, path) = spec
                .split_once('=')
                .with_context(|| format!("--jwt-public-key {spec:?} is not KID=PATH"))?;
            let pem = std::fs::read(path).with_context(|| format!("reading {path}"))?;
            Ok((kid.to_owned(), pem))
        })
        .collect()
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.jwt.jwt_algorithm == JwtAlgorithm::Hs256 && args.jwt.jwt_secret == DEV_JWT_SECRET {
        tracing::warn!("using the development JWT secret; set LIVELINE_JWT_SECRET in production");
    }
    let jwt_public_keys = public_keys(&args.jwt.jwt_public_key)?;
    anyhow::ensure!(
        args.jwt.jwt_algorithm == JwtAlgorithm::Hs256 || !jwt_public_keys.is_empty(),
        "RS256/EdDSA needs at least one --jwt-public-key KID=PATH"
    );
    let defaults = Config::default();
    let config = Config {
        jwt_algorithm: args.jwt.jwt_algorithm,
        jwt_public_keys,
        jwt_leeway_secs: args.jwt.jwt_leeway_secs,
        max_message_bytes: args.max_message_bytes,
        max_buffer_packets: args.max_buffer_packets,
        connect_timeout: args.connect_timeout,
        header_timeout: args.header_timeout,
        body_timeout: args.body_timeout,
        max_pending_connections: args.max_pending_connections,
        redis_timeout: args.redis_timeout,
        polling: !args.websocket_only,
        lean_websocket: !args.socketioxide_websocket,
        revocation_ttl: Duration::from_secs(args.revocation_ttl_secs),
        max_connections_per_user: args.max_connections_per_user,
        action_rate_per_sec: args.action_rate,
        action_burst: args.action_burst,
        rate_limit_strikes: args.rate_limit_strikes,
        node_id: args.node_id.unwrap_or(defaults.node_id),
        port: args.port,
        bind: args.bind,
        redis_url: args.redis_url,
        key_prefix: args.key_prefix,
        jwt_secret: args.jwt.jwt_secret,
        jwt_issuer: args.jwt.jwt_issuer,
        jwt_audience: args.jwt.jwt_audience,
        static_dir: args.static_dir,
        demo: liveline_gateway::demo::Settings {
            enabled: args.demo_worker,
            step: Duration::from_millis(args.demo_step_ms),
            symbols: clean(&args.symbols),
            market_tick: Duration::from_millis(args.market_tick_ms),
        },
        dev_tokens: args.dev_tokens,
        metrics_token: args.metrics_token.filter(|t| !t.is_empty()),
        allowed_origins: args
            .allowed_origins
            .into_iter()
            .filter(|o| !o.is_empty())
            .collect(),
        ping_interval: args.ping_interval,
        ping_timeout: args.ping_timeout,
        history_len: args.history_len,
        max_topics_per_socket: args.max_topics_per_socket,
        topic_prefixes: clean(&args.topics.topic_prefixes),
        public_topic_prefixes: clean(&args.topics.public_topic_prefixes),
        job_kinds: clean(&args.job_kinds),
        actions: clean(&args.actions),
        shutdown_jitter: Duration::from_millis(args.shutdown_jitter_ms),
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout_secs),
    };
    // Use every file the hard limit allows; the pending-connection cap is
    // derived from what this leaves.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
    let (router, handle) = liveline_gateway::build(config.clone()).await?;
    handle.start();
    let listener = tokio::net::TcpListener::bind((config.bind, config.port))
        .await
        .with_context(|| format!("binding {}:{}", config.bind, config.port))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, redis = config.redis_url.is_some(), "listening");
    // One line on stdout once the port is bound: supervisors and tests wait
    // for it (and learn the port, with `--port 0`) instead of polling.
    println!("listening on http://{addr}");
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_handle = handle.clone();
    let limits = liveline_gateway::ServeLimits::from(&handle);
    let server = tokio::spawn(async move {
        liveline_gateway::serve(listener, router, limits, async move {
            let _ = stopped_rx.await;
        })
        .await;
    });
    shutdown_signal().await;
    tracing::info!("shutting down: telling clients to reconnect elsewhere");
    // Refuse new CONNECTs and tell every socket to go, then stop accepting.
    let told = drain_handle.drain().await;
    let _ = stopped_tx.send(());
    tracing::info!(sockets = told, "clients told; closing");
    match tokio::time::timeout(config.shutdown_timeout, server).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
        Err(_) => tracing::warn!("connections still open after the shutdown timeout"),
    }
    handle.shutdown();
    Ok(())
}

/// Parses a duration flag: `300ms`, `1.5s`, `10s`, `2m` (humantime), or a
/// bare number of seconds (what the older `--…-secs` flags took).
fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 300ms, 10s, 2m)"))
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
