//! `liveline-gateway`: serve, mint a dev token, or publish an event.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use liveline_gateway::broker::{Broker, RedisBroker};
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
    Serve(ServeArgs),
    /// Print an HS256 token for a user.
    MintToken(MintArgs),
    /// Publish one event to a user's stream through Redis.
    Publish(PublishArgs),
}

#[derive(Debug, Args)]
struct JwtArgs {
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
    /// TCP port.
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
    /// Exact allowed origins, comma-separated; empty allows all (development).
    #[arg(long, env = "LIVELINE_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Engine.IO ping interval in seconds.
    #[arg(long, env = "LIVELINE_PING_INTERVAL_SECS", default_value_t = 10)]
    ping_interval_secs: u64,
    /// Engine.IO ping timeout in seconds.
    #[arg(long, env = "LIVELINE_PING_TIMEOUT_SECS", default_value_t = 5)]
    ping_timeout_secs: u64,
    /// Events kept per stream for resume.
    #[arg(long, env = "LIVELINE_HISTORY_LEN", default_value_t = 1000)]
    history_len: usize,
}

#[derive(Debug, Args)]
struct MintArgs {
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
struct PublishArgs {
    /// Redis URL.
    #[arg(long, env = "LIVELINE_REDIS_URL")]
    redis_url: String,
    /// Prefix of every Redis key and channel.
    #[arg(long, env = "LIVELINE_KEY_PREFIX", default_value = "ll:")]
    key_prefix: String,
    /// The owner of the stream.
    #[arg(long)]
    user: String,
    /// The stream, e.g. `job:1`.
    #[arg(long)]
    stream: String,
    /// The contract name, e.g. `job:status:v1`.
    #[arg(long)]
    event: String,
    /// The payload, JSON.
    #[arg(long)]
    data: String,
    /// Events kept per stream.
    #[arg(long, env = "LIVELINE_HISTORY_LEN", default_value_t = 1000)]
    history_len: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::MintToken(args) => {
            let jwt = liveline_gateway::auth::JwtAuth::hs256(
                args.jwt.jwt_secret.as_bytes(),
                &args.jwt.jwt_issuer,
                &args.jwt.jwt_audience,
            );
            println!("{}", jwt.mint(&args.sub, args.ttl)?);
            Ok(())
        }
        Command::Publish(args) => {
            let data: serde_json::Value =
                serde_json::from_str(&args.data).context("--data is not JSON")?;
            let broker =
                RedisBroker::connect(&args.redis_url, &args.key_prefix, args.history_len).await?;
            let env = broker
                .publish(&args.user, &args.stream, &args.event, data)
                .await?;
            println!("{}", serde_json::to_string(&env)?);
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.jwt.jwt_secret == DEV_JWT_SECRET {
        tracing::warn!("using the development JWT secret; set LIVELINE_JWT_SECRET in production");
    }
    let config = Config {
        port: args.port,
        bind: args.bind,
        redis_url: args.redis_url,
        key_prefix: args.key_prefix,
        jwt_secret: args.jwt.jwt_secret,
        jwt_issuer: args.jwt.jwt_issuer,
        jwt_audience: args.jwt.jwt_audience,
        static_dir: args.static_dir,
        demo_worker: args.demo_worker,
        demo_step: Duration::from_millis(args.demo_step_ms),
        dev_tokens: args.dev_tokens,
        allowed_origins: args
            .allowed_origins
            .into_iter()
            .filter(|o| !o.is_empty())
            .collect(),
        ping_interval: Duration::from_secs(args.ping_interval_secs),
        ping_timeout: Duration::from_secs(args.ping_timeout_secs),
        history_len: args.history_len,
    };
    let (router, _handle) = liveline_gateway::build(config.clone()).await?;
    let listener = tokio::net::TcpListener::bind((config.bind, config.port))
        .await
        .with_context(|| format!("binding {}:{}", config.bind, config.port))?;
    tracing::info!(addr = %listener.local_addr()?, redis = config.redis_url.is_some(), "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
