//! `liveline-load`: the load test of the gateway (see docs/benchmarks.md).
//!
//! It starts gateway processes (or targets running ones with `--url`), opens
//! `--connections` authenticated connections with the SDK's native driver
//! (the same sans-IO core as the browser), has the first connection of every
//! user start a job, publishes `--events` `job:chunk:v1` events per user at
//! `--rate` events/s in total, each carrying its publish time in microseconds,
//! and checks what every connection received: lost, duplicated and reordered
//! chunks, per-stream `seq` contiguity, publish-to-receive latency.
//!
//! Publishing takes the worker's path: with Redis, straight through the
//! gateway's Redis broker (the Lua publish script, then pub/sub to the
//! gateways); with the memory broker, `POST /api/v1/publish` with a service
//! token.
//!
//! The connections live in worker processes (this binary re-executed with
//! `--worker`), at most `--per-process` each, which talk to the coordinator
//! in JSON lines over stdin/stdout. Every phase has a deadline and the whole
//! run stops at `--duration-limit`. Exit status 0 only when every connection
//! asked for was held and no event was lost, duplicated or reordered.
//!
//! All traffic stays on 127.0.0.0/8: `--url` and `--redis-url` must name
//! loopback addresses.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use liveline::Config as ClientConfig;
use liveline::contract::ServerEvent;
use liveline::native::{Event, NativeClient};
use liveline_gateway::DEV_JWT_SECRET;
use liveline_gateway::auth::{JwtAuth, ROLE_SERVICE};
use liveline_gateway::broker::{RedisBroker, random_hex};
use liveline_gateway::publish::Publisher;
use liveline_gateway::stream::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, sleep, timeout};

/// Most connections one process may hold: the hard limit is 20,000 open
/// files per process, and the process needs a few for itself.
const MAX_PER_PROCESS: usize = 19_500;

/// The chunk event every connection counts.
const CHUNK: &str = "job:chunk:v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PublishVia {
    /// The gateway's Redis broker, straight to Redis (as a Rust worker does).
    Redis,
    /// `POST /api/v1/publish` on the gateway with a service token.
    Http,
    /// The Node reference stack's worker path: `@socket.io/redis-emitter`
    /// (`bench/node/publish.mjs`), for `--server node`.
    Emitter,
}

/// Which server the started processes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ServerKind {
    /// `liveline-gateway serve`.
    Gateway,
    /// The Node reference stack: `bench/node/server.mjs`, socket.io 4.8 with
    /// the Redis adapter (needs `--redis-url` to one Redis).
    Node,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "liveline-load",
    version,
    about = "Load test: many SDK connections, events through the broker, loss and latency"
)]
struct Cli {
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Distinct users (connection i is user i mod U); default one per connection.
    #[arg(long)]
    users: Option<usize>,
    /// Events published per user (every connection of the user receives them).
    /// 0 holds the connections only: no job starts, nothing published (the
    /// handshakes alone, as `bench/callgrind.sh` counts them).
    #[arg(long, default_value_t = 10)]
    events: u64,
    /// Publish rate, events per second in total.
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// Hard stop for the whole run, in seconds.
    #[arg(long, default_value_t = 120)]
    duration_limit: u64,
    /// Redis URL (loopback only); without it the gateway runs its memory broker.
    #[arg(long)]
    redis_url: Option<String>,
    /// Redis key prefix; random (`ll-load:<hex>:`) when unset. With `--url`,
    /// the prefix the running gateways use.
    #[arg(long)]
    key_prefix: Option<String>,
    /// Gateway processes to start, on N ports sharing Redis.
    #[arg(long, default_value_t = 1)]
    gateways: usize,
    /// Target running gateways instead (comma-separated http://127.x.y.z:port).
    #[arg(long, value_delimiter = ',')]
    url: Vec<String>,
    /// The gateway binary; default `liveline-gateway` next to this executable.
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// Extra arguments for every started gateway (after `serve`), space-separated.
    #[arg(long, allow_hyphen_values = true)]
    gateway_args: Option<String>,
    /// Connections per client process.
    #[arg(long, default_value_t = 19_000)]
    per_process: usize,
    /// WebSocket handshakes in flight per client process.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Seconds to wait for all connections.
    #[arg(long, default_value_t = 60)]
    connect_secs: u64,
    /// Job starts in flight per client process.
    #[arg(long, default_value_t = 64)]
    start_concurrency: usize,
    /// Concurrent publishers (each owns a share of the users and publishes
    /// their events in order).
    #[arg(long, default_value_t = 32)]
    publishers: usize,
    /// How to publish; default `redis` with `--redis-url`, else `http`.
    #[arg(long, value_enum)]
    publish_via: Option<PublishVia>,
    /// Seconds to wait for the last events after publishing ends.
    #[arg(long, default_value_t = 10)]
    drain_secs: u64,
    /// Where the started gateways write their logs; default a temp directory.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// What the started server processes run.
    #[arg(long, value_enum, default_value_t = ServerKind::Gateway)]
    server: ServerKind,
    /// The Node reference stack's directory (`server.mjs`, `publish.mjs`,
    /// its `node_modules`), for `--server node`.
    #[arg(long, default_value = "bench/node")]
    node_dir: PathBuf,
    /// Pin the started servers to these CPUs (`taskset -c LIST`, e.g. `0`).
    #[arg(long)]
    server_cpus: Option<String>,
    /// After the clients close, watch the started servers' RSS this long and
    /// report its low (the memory they give back; 0 skips it).
    #[arg(long, default_value_t = 0.0)]
    rss_after_close_secs: f64,
    /// `kill -9` the first server this many seconds into publishing, and
    /// start it again on the same port (the reconnect figures of the summary).
    #[arg(long)]
    kill_after_secs: Option<f64>,

    // Worker mode (internal): the coordinator re-executes this binary.
    #[arg(long, hide = true)]
    worker: bool,
    #[arg(long, hide = true, default_value_t = 0)]
    offset: usize,
    #[arg(long, hide = true, default_value_t = 0)]
    count: usize,
    #[arg(long, hide = true, default_value = "")]
    run_id: String,
}

impl Cli {
    fn users(&self) -> usize {
        self.users
            .unwrap_or(self.connections)
            .clamp(1, self.connections.max(1))
    }
}

// ---------------------------------------------------------------- messages

/// Worker to coordinator, one JSON object per stdout line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WorkerMsg {
    Connected {
        held: usize,
        start_ms: u64,
        end_ms: u64,
        connect_errors: u64,
        rss_idle_kb: u64,
    },
    Jobs {
        jobs: Vec<(usize, String)>,
        failed: usize,
    },
    Report(Box<Report>),
}

/// What one worker saw.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Report {
    /// Connections connected at the end.
    held: usize,
    /// Chunks the connections should have received.
    expected: u64,
    /// Distinct chunks received.
    delivered: u64,
    /// Chunks received more than once.
    duplicated: u64,
    /// Chunks received after a later chunk of the same stream.
    reordered: u64,
    /// Events whose `seq` did not continue the stream's previous one.
    seq_breaks: u64,
    /// `stream:recovered:v1` notices (replays the SDK asked for).
    replays: u64,
    /// Connections that reconnected after being connected.
    reconnects: u64,
    /// Events the SDK could not decode.
    invalid: u64,
    /// Latencies in microseconds: (value, count) of every recorded value.
    latency: Vec<(u64, u64)>,
    rss_idle_kb: u64,
    rss_kb: u64,
    /// When the last reconnect of any connection completed (ms since the
    /// Unix epoch; 0 if none).
    last_reconnect_ms: u64,
}

// ---------------------------------------------------------------- histogram

/// A latency histogram in microseconds, 1 µs to 10 min at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

/// The `q` quantile of `hist` in milliseconds.
fn quantile_ms(hist: &Histogram<u64>, q: f64) -> f64 {
    if hist.is_empty() {
        return 0.0;
    }
    hist.value_at_quantile(q) as f64 / 1000.0
}

// ---------------------------------------------------------------- helpers

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn unix_ms() -> u64 {
    unix_micros() / 1000
}

/// VmRSS of a process, in KiB.
fn rss_kb(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time a process has used (its threads alive or gone), in
/// microseconds: in all, and the part spent in the kernel; zeros if unknown.
/// `/proc` counts in USER_HZ ticks, which Linux fixes at 100 per second for
/// user space.
fn cpu_us(pid: Option<u32>) -> Cpu {
    let Some(pid) = pid else {
        return Cpu::default();
    };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Cpu::default();
    };
    // Fields after the command name (which may hold spaces) close with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Cpu {
        total: (ticks(11) + ticks(12)) * 10_000,
        kernel: ticks(12) * 10_000,
    }
}

/// CPU time in microseconds: in all, and the kernel's part of it.
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    total: u64,
    kernel: u64,
}

impl std::iter::Sum for Cpu {
    fn sum<I: Iterator<Item = Cpu>>(iter: I) -> Cpu {
        iter.fold(Cpu::default(), |a, b| Cpu {
            total: a.total + b.total,
            kernel: a.kernel + b.kernel,
        })
    }
}

impl Cpu {
    /// (all, kernel) used since `before`, per `n` (handshakes or events).
    fn per(self, before: Cpu, n: f64) -> (f64, f64) {
        (
            self.total.saturating_sub(before.total) as f64 / n,
            self.kernel.saturating_sub(before.kernel) as f64 / n,
        )
    }
}

/// CPU time the Redis server has used (`INFO cpu`), in microseconds; None
/// for a cluster (several servers) or when Redis does not answer.
async fn redis_cpu_us(url: &str) -> Option<u64> {
    if url.starts_with("redis-cluster://") {
        return None;
    }
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut conn)
        .await
        .ok()?;
    let secs: f64 = info
        .lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_sys:")
                .or_else(|| l.strip_prefix("used_cpu_user:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum();
    Some((secs * 1e6) as u64)
}

fn jwt_secret() -> String {
    std::env::var("LIVELINE_JWT_SECRET").unwrap_or_else(|_| DEV_JWT_SECRET.to_owned())
}

fn jwt() -> JwtAuth {
    JwtAuth::hs256(jwt_secret().as_bytes(), "liveline", "liveline")
}

/// The socket address of `http://host:port`, which must be on loopback.
fn loopback_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addr: SocketAddr = hostport
        .parse()
        .with_context(|| format!("{url}: expected http://127.x.y.z:port"))?;
    ensure!(
        addr.ip().is_loopback(),
        "{url}: traffic must stay on loopback"
    );
    Ok(addr)
}

/// The hosts of `url`: `redis://HOST:PORT/...`, or the seed nodes of
/// `redis-cluster://HOST:PORT,HOST:PORT,...`.
fn redis_hosts(url: &str) -> anyhow::Result<Vec<String>> {
    let (rest, cluster) = match url.strip_prefix("redis-cluster://") {
        Some(rest) => (rest, true),
        None => (
            url.strip_prefix("redis://")
                .with_context(|| format!("{url}: only redis:// or redis-cluster:// URLs"))?,
            false,
        ),
    };
    let hosts = rest.rsplit('@').next().unwrap_or(rest);
    let hosts = hosts.split(['/', '?']).next().unwrap_or(hosts);
    Ok(if cluster {
        hosts.split(',').map(str::to_owned).collect()
    } else {
        vec![hosts.to_owned()]
    })
}

fn check_redis_url(url: &str) -> anyhow::Result<()> {
    for host in redis_hosts(url)? {
        let host = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
        let ok = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        ensure!(ok, "{url}: traffic must stay on loopback");
    }
    Ok(())
}

fn user_name(run_id: &str, user: usize) -> String {
    format!("load-{run_id}-{user}")
}

// ---------------------------------------------------------------- HTTP

/// A keep-alive HTTP/1.1 client (hyper's pooled client).
type Http = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `method` `url` with a JSON `body` and an optional bearer token; the status
/// and the body.
async fn request(
    http: &Http,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> anyhow::Result<(u16, Bytes)> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = http
        .request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

// ---------------------------------------------------------------- worker

/// Counters of one connection.
#[derive(Default)]
struct ConnStats {
    connected: bool,
    chunks: Vec<u64>, // bitset of chunk indexes seen
    delivered: u64,
    duplicated: u64,
    reordered: u64,
    max_index: Option<u64>,
    last_seq: u64,
    seq_breaks: u64,
    replays: u64,
    reconnects: u64,
    invalid: u64,
    latencies: Vec<u32>,
}

struct Shared {
    connected: AtomicUsize,
    connect_errors: AtomicU64,
    last_connect_ms: AtomicU64,
    last_reconnect_ms: AtomicU64,
    complete: AtomicUsize,
    events: u64,
}

/// Reads one connection's events until told to stop.
async fn consume(
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    mut permit: Option<tokio::sync::OwnedSemaphorePermit>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> ConnStats {
    let mut st = ConnStats {
        chunks: vec![0; shared.events.div_ceil(64) as usize],
        ..ConnStats::default()
    };
    let mut ever = false;
    loop {
        let event = tokio::select! {
            e = events.recv() => match e { Some(e) => e, None => break },
            _ = stop.changed() => break,
        };
        match event {
            Event::State(change) => {
                if change.current.is_connected() {
                    if ever {
                        st.reconnects += 1;
                        shared
                            .last_reconnect_ms
                            .fetch_max(unix_ms(), Ordering::Relaxed);
                    } else {
                        ever = true;
                        shared.connected.fetch_add(1, Ordering::Relaxed);
                        shared
                            .last_connect_ms
                            .fetch_max(unix_ms(), Ordering::Relaxed);
                    }
                    st.connected = true;
                    permit = None;
                } else {
                    if !ever && change.current.name() != "connecting" {
                        // A failed first attempt: let another handshake start.
                        shared.connect_errors.fetch_add(1, Ordering::Relaxed);
                        permit = None;
                    }
                    st.connected = false;
                }
            }
            Event::Server(ev, _) => {
                let now = unix_micros();
                if let Some((_, _, seq)) = ev.position() {
                    if seq != st.last_seq + 1 {
                        st.seq_breaks += 1;
                    }
                    st.last_seq = seq;
                }
                match ev {
                    ServerEvent::JobChunk(env) => {
                        let i = env.data.index;
                        if i >= shared.events {
                            st.duplicated += 1; // not a chunk we published
                            continue;
                        }
                        let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
                        if st.chunks[word] & bit != 0 {
                            st.duplicated += 1;
                            continue;
                        }
                        st.chunks[word] |= bit;
                        if st.max_index.is_some_and(|m| i < m) {
                            st.reordered += 1;
                        }
                        st.max_index = Some(st.max_index.map_or(i, |m| m.max(i)));
                        st.delivered += 1;
                        if let Ok(sent) = env.data.text.parse::<u64>() {
                            let lat = now.saturating_sub(sent);
                            st.latencies.push(u32::try_from(lat).unwrap_or(u32::MAX));
                        }
                        if st.delivered == shared.events {
                            shared.complete.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    ServerEvent::StreamRecovered(_) => st.replays += 1,
                    _ => {}
                }
            }
            Event::Invalid(_) => st.invalid += 1,
            _ => {}
        }
    }
    drop(permit);
    st
}

fn emit(msg: &WorkerMsg) -> anyhow::Result<()> {
    use std::io::Write;
    let line = serde_json::to_string(msg)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

async fn worker(cli: Cli) -> anyhow::Result<()> {
    ensure!(
        cli.count <= MAX_PER_PROCESS,
        "at most {MAX_PER_PROCESS} connections per process"
    );
    ensure!(!cli.url.is_empty(), "--worker needs --url");
    for u in &cli.url {
        loopback_addr(u)?;
    }
    let users = cli.users();
    let auth = Arc::new(jwt());
    let shared = Arc::new(Shared {
        connected: AtomicUsize::new(0),
        connect_errors: AtomicU64::new(0),
        last_connect_ms: AtomicU64::new(0),
        last_reconnect_ms: AtomicU64::new(0),
        complete: AtomicUsize::new(0),
        events: cli.events,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(cli.connect_concurrency.max(1)));
    let rss_idle_kb = rss_kb(None);
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();

    // Phase 1: connect, a bounded number of handshakes in flight.
    let start_ms = unix_ms();
    let connect_deadline = Instant::now() + Duration::from_secs(cli.connect_secs);
    let mut clients = Vec::with_capacity(cli.count);
    let mut tasks = Vec::with_capacity(cli.count);
    for g in cli.offset..cli.offset + cli.count {
        let permit = match timeout(
            connect_deadline.saturating_duration_since(Instant::now()),
            gate.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => break,
        };
        let url = &cli.url[g % cli.url.len()];
        let user = user_name(&cli.run_id, g % users);
        let auth = auth.clone();
        let get_token = move || -> BoxFuture<'static, Result<String, String>> {
            let token = auth.mint(&user, 3600).map_err(|e| e.to_string());
            Box::pin(async move { token })
        };
        let (client, events) = NativeClient::spawn(ClientConfig::new(url.clone()), get_token);
        tasks.push(tokio::spawn(consume(
            events,
            Some(permit),
            shared.clone(),
            stop_rx.clone(),
        )));
        clients.push((g, client));
    }
    for _ in 0..(cli.connect_secs * 20) {
        if shared.connected.load(Ordering::Relaxed) >= cli.count
            || Instant::now() >= connect_deadline
        {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    let held = shared.connected.load(Ordering::Relaxed);
    emit(&WorkerMsg::Connected {
        held,
        start_ms,
        end_ms: shared.last_connect_ms.load(Ordering::Relaxed).max(start_ms),
        connect_errors: shared.connect_errors.load(Ordering::Relaxed),
        rss_idle_kb,
    })?;

    // Phase 2: the first connection of each user starts its job.
    let Some(cmd) = stdin.next_line().await? else {
        return Ok(());
    };
    ensure!(cmd == "jobs", "expected jobs, got {cmd:?}");
    // At most `--start-concurrency` in flight per process (a burst of
    // thousands of job starts makes the gateway's Redis calls time out),
    // each tried up to three times, all within 40 s.
    let starters: Vec<(usize, NativeClient)> = clients
        .iter()
        .filter(|(g, _)| *g < users && cli.events > 0)
        .map(|(g, c)| (*g, c.clone()))
        .collect();
    let start_deadline = Instant::now() + Duration::from_secs(40);
    let start_errors = Arc::new(AtomicU64::new(0));
    let results: Vec<(usize, Option<String>)> = futures_util::stream::iter(starters)
        .map(|(g, client)| {
            let start_errors = start_errors.clone();
            async move {
                for _ in 0..3 {
                    let started = client.send("job:start:v1", json!({"kind": "llm", "params": {}}));
                    match tokio::time::timeout_at(start_deadline, started).await {
                        Ok(Ok(v)) => {
                            if let Some(id) = v["jobId"].as_str() {
                                return (g, Some(id.to_owned()));
                            }
                        }
                        Ok(Err(e)) => {
                            if start_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("job start failed (will retry): {e}");
                            }
                        }
                        Err(_) => break,
                    }
                }
                (g, None)
            }
        })
        .buffer_unordered(cli.start_concurrency.max(1))
        .collect()
        .await;
    let failed = results.iter().filter(|(_, id)| id.is_none()).count();
    let jobs: Vec<(usize, String)> = results
        .into_iter()
        .filter_map(|(g, id)| id.map(|id| (g, id)))
        .collect();
    if start_errors.load(Ordering::Relaxed) > 0 {
        eprintln!(
            "job starts: {} errors (retried), {failed} failed",
            start_errors.load(Ordering::Relaxed)
        );
    }
    emit(&WorkerMsg::Jobs { jobs, failed })?;

    // Phase 3: receive until every connection has its events or the deadline.
    let Some(cmd) = stdin.next_line().await? else {
        return Ok(());
    };
    let mut parts = cmd.split(' ');
    ensure!(parts.next() == Some("done"), "expected done, got {cmd:?}");
    let deadline_ms: u64 = parts
        .next()
        .and_then(|d| d.parse().ok())
        .context("done <ms>")?;
    let missing: HashSet<usize> = parts
        .next()
        .unwrap_or("")
        .split(',')
        .filter_map(|u| u.parse().ok())
        .collect();
    let expecting = clients
        .iter()
        .filter(|(g, _)| !missing.contains(&(g % users)))
        .count();
    let wait_ms = deadline_ms.saturating_sub(unix_ms());
    for _ in 0..=(wait_ms / 20) {
        if shared.complete.load(Ordering::Relaxed) >= expecting || unix_ms() >= deadline_ms {
            break;
        }
        sleep(Duration::from_millis(20)).await;
    }
    let rss = rss_kb(None);
    let _ = stop_tx.send(true);
    let mut report = Report {
        rss_idle_kb,
        rss_kb: rss,
        last_reconnect_ms: shared.last_reconnect_ms.load(Ordering::Relaxed),
        ..Report::default()
    };
    let mut hist = histogram();
    for ((g, _), task) in clients.iter().zip(tasks) {
        let st = task.await.context("a connection task panicked")?;
        let expected = if missing.contains(&(g % users)) {
            0
        } else {
            cli.events
        };
        report.held += usize::from(st.connected);
        report.expected += expected;
        report.delivered += st.delivered;
        report.duplicated += st.duplicated;
        report.reordered += st.reordered;
        report.seq_breaks += st.seq_breaks;
        report.replays += st.replays;
        report.reconnects += st.reconnects;
        report.invalid += st.invalid;
        for l in &st.latencies {
            hist.saturating_record(u64::from(*l).max(1));
        }
    }
    // Connections that never got a client (the connect deadline passed) expect nothing.
    report.latency = hist
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    emit(&WorkerMsg::Report(Box::new(report)))?;

    // Hold the connections until told to exit (the coordinator reads gateway RSS now).
    let _ = timeout(Duration::from_secs(30), stdin.next_line()).await;
    for (_, c) in &clients {
        c.close();
    }
    sleep(Duration::from_millis(200)).await;
    Ok(())
}

// ---------------------------------------------------------------- coordinator

struct Gateway {
    url: String,
    child: Option<Child>,
    rss_idle_kb: u64,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Worker {
    async fn next(&mut self, deadline: Instant) -> anyhow::Result<WorkerMsg> {
        let line = tokio::time::timeout_at(deadline, self.lines.next_line())
            .await
            .context("a worker did not answer in time")??
            .context("a worker ended early")?;
        serde_json::from_str(&line).with_context(|| format!("worker said {line:?}"))
    }

    async fn say(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

async fn healthy(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let http = http_client();
    let url = format!("http://{addr}/healthz");
    for _ in 0..(within.as_millis() / 50 + 1) {
        if let Ok(Ok((200, _))) = timeout(
            Duration::from_secs(1),
            request(&http, "GET", &url, None, Vec::new()),
        )
        .await
        {
            return true;
        }
        if Instant::now() >= deadline {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    false
}

/// How to start one server process (again, after `--kill-after-secs`).
struct Launcher {
    program: PathBuf,
    log_dir: PathBuf,
}

impl Launcher {
    fn new(cli: &Cli, run_id: &str) -> anyhow::Result<Self> {
        let program = match cli.server {
            ServerKind::Gateway => match &cli.gateway_bin {
                Some(b) => b.clone(),
                None => std::env::current_exe()?
                    .parent()
                    .context("no directory for this executable")?
                    .join("liveline-gateway"),
            },
            ServerKind::Node => cli.node_dir.join("server.mjs"),
        };
        ensure!(
            program.exists(),
            "{} not found (--gateway-bin, --node-dir)",
            program.display()
        );
        let log_dir = cli
            .log_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("liveline-load-{run_id}")));
        std::fs::create_dir_all(&log_dir)?;
        Ok(Self { program, log_dir })
    }

    fn log(&self, i: usize) -> PathBuf {
        self.log_dir.join(format!("server-{i}.log"))
    }

    /// Starts server `i` on `port` (its log appended to).
    fn spawn(&self, cli: &Cli, i: usize, port: u16, prefix: &str) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(i))?;
        let exe: &std::ffi::OsStr = match cli.server {
            ServerKind::Gateway => self.program.as_os_str(),
            ServerKind::Node => "node".as_ref(),
        };
        let mut cmd = match &cli.server_cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        match cli.server {
            ServerKind::Gateway => {
                let users = cli.users();
                let per_user = cli.connections.div_ceil(users) + 1;
                cmd.arg("serve")
                    .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--max-connections-per-user", &per_user.to_string()])
                    .args(["--history-len", &(cli.events + 16).max(1000).to_string()])
                    .env(
                        "RUST_LOG",
                        std::env::var("LOAD_GATEWAY_LOG").unwrap_or_else(|_| "warn".into()),
                    );
                if let Some(r) = &cli.redis_url {
                    cmd.args(["--redis-url", r, "--key-prefix", prefix]);
                }
                if let Some(extra) = &cli.gateway_args {
                    cmd.args(extra.split_whitespace());
                }
            }
            ServerKind::Node => {
                let redis = cli
                    .redis_url
                    .as_deref()
                    .context("--server node needs --redis-url")?;
                cmd.arg(&self.program)
                    .env("PORT", port.to_string())
                    .env("REDIS_URL", redis)
                    .env("KEY", prefix)
                    .env("LIVELINE_JWT_SECRET", jwt_secret());
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        cmd.spawn()
            .with_context(|| format!("starting {}", self.program.display()))
    }
}

async fn start_gateways(
    cli: &Cli,
    launcher: &Launcher,
    prefix: &str,
) -> anyhow::Result<Vec<Gateway>> {
    let mut gateways = Vec::new();
    for i in 0..cli.gateways {
        let port = free_port()?;
        let child = launcher.spawn(cli, i, port, prefix)?;
        gateways.push(Gateway {
            url: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            rss_idle_kb: 0,
        });
    }
    for (i, g) in gateways.iter_mut().enumerate() {
        let addr = loopback_addr(&g.url)?;
        ensure!(
            healthy(addr, Duration::from_secs(20)).await,
            "server {i} ({}) did not become healthy; see {}",
            g.url,
            launcher.log(i).display()
        );
        g.rss_idle_kb = rss_kb(g.child.as_ref().and_then(Child::id));
    }
    eprintln!(
        "started {} {:?} server(s): {} (logs in {})",
        gateways.len(),
        cli.server,
        gateways
            .iter()
            .map(|g| g.url.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        launcher.log_dir.display()
    );
    Ok(gateways)
}

/// Publishes every user's events at the total rate; returns (published, failed, seconds).
async fn publish(
    cli: &Cli,
    via: PublishVia,
    prefix: &str,
    urls: &[String],
    jobs: &HashMap<usize, String>,
    run_id: &str,
    deadline: Instant,
) -> anyhow::Result<(u64, u64, f64, f64)> {
    let users: Vec<usize> = {
        let mut u: Vec<usize> = jobs.keys().copied().collect();
        u.sort_unstable();
        u
    };
    let broker: Option<Publisher> = match via {
        PublishVia::Emitter => {
            return publish_emitter(cli, prefix, &users, jobs, run_id, deadline).await;
        }
        PublishVia::Redis => {
            let url = cli
                .redis_url
                .as_deref()
                .context("--publish-via redis needs --redis-url")?;
            Some(Publisher::new(Arc::new(
                RedisBroker::connect(url, prefix, (cli.events as usize + 16).max(1000)).await?,
            )))
        }
        PublishVia::Http => None,
    };
    let token = jwt().mint_with_role(
        &format!("load-{run_id}-publisher"),
        3600,
        Some(ROLE_SERVICE),
    )?;
    let token = Arc::new(token);
    let published = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let max_lag_us = Arc::new(AtomicU64::new(0));
    let n_users = users.len();
    let k = cli.publishers.clamp(1, n_users.max(1));
    let per_event = Duration::from_secs_f64(1.0 / cli.rate.max(0.001));
    let t0 = Instant::now() + Duration::from_millis(50);
    let users = Arc::new(users);
    let mut tasks = Vec::new();
    for j in 0..k {
        let users = users.clone();
        // Publisher task j takes every k-th user, starting at user j.
        let jobs: Vec<(usize, String)> = users
            .iter()
            .skip(j)
            .step_by(k)
            .map(|u| (*u, jobs[u].clone()))
            .collect();
        let broker = broker.clone();
        let token = token.clone();
        let (published, failed, max_lag_us) =
            (published.clone(), failed.clone(), max_lag_us.clone());
        let events = cli.events;
        let run_id = run_id.to_owned();
        let urls = urls.to_vec();
        tasks.push(tokio::spawn(async move {
            let http = http_client();
            // Position of user u within the global order, for the schedule.
            let rank: HashMap<usize, usize> =
                users.iter().enumerate().map(|(i, u)| (*u, i)).collect();
            for index in 0..events {
                for (u, job) in &jobs {
                    let k_global = index as u128 * n_users as u128 + rank[u] as u128;
                    let at =
                        t0 + per_event.saturating_mul(u32::try_from(k_global).unwrap_or(u32::MAX));
                    if at >= deadline || Instant::now() >= deadline {
                        return;
                    }
                    tokio::time::sleep_until(at).await;
                    let lag = Instant::now().saturating_duration_since(at).as_micros() as u64;
                    max_lag_us.fetch_max(lag, Ordering::Relaxed);
                    let user = user_name(&run_id, *u);
                    let sent = unix_micros();
                    let data = json!({"jobId": job, "index": index, "text": sent.to_string()});
                    let ok = match &broker {
                        Some(b) => {
                            let stream = Stream::Job { id: job.clone() };
                            b.publish(&stream, CHUNK, data).await.is_ok()
                        }
                        None => {
                            let url = format!("{}/api/v1/publish", urls[u % urls.len()]);
                            let body = json!({
                                "user": user, "stream": format!("job:{job}"),
                                "event": CHUNK, "data": data,
                            })
                            .to_string();
                            matches!(
                                request(&http, "POST", &url, Some(&token), body.into_bytes()).await,
                                Ok((200, _))
                            )
                        }
                    };
                    if ok {
                        published.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok((
        published.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        secs,
        max_lag_us.load(Ordering::Relaxed) as f64 / 1000.0,
    ))
}

/// What `bench/node/publish.mjs` reports.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmitterReport {
    published: u64,
    failed: u64,
    secs: f64,
    max_lag_ms: f64,
}

/// Publishes through the Node stack's worker path: `publish.mjs` (the Redis
/// emitter) gets the plan on stdin and keeps the same schedule as
/// [`publish`]: index by index, user by user, at `--rate` in total.
async fn publish_emitter(
    cli: &Cli,
    prefix: &str,
    users: &[usize],
    jobs: &HashMap<usize, String>,
    run_id: &str,
    deadline: Instant,
) -> anyhow::Result<(u64, u64, f64, f64)> {
    let redis = cli
        .redis_url
        .as_deref()
        .context("--publish-via emitter needs --redis-url")?;
    let plan = json!({
        "jobs": users.iter().map(|u| json!([user_name(run_id, *u), jobs[u]])).collect::<Vec<_>>(),
        "events": cli.events,
        "rate": cli.rate,
    });
    let mut child = Command::new("node")
        .arg(cli.node_dir.join("publish.mjs"))
        .env("REDIS_URL", redis)
        .env("KEY", prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting node bench/node/publish.mjs")?;
    let mut stdin = child.stdin.take().context("publisher stdin")?;
    stdin.write_all(plan.to_string().as_bytes()).await?;
    drop(stdin);
    let out = tokio::time::timeout_at(deadline, child.wait_with_output())
        .await
        .context("the emitter publisher did not finish in time")??;
    ensure!(out.status.success(), "the emitter publisher failed");
    let line = String::from_utf8_lossy(&out.stdout);
    let r: EmitterReport = serde_json::from_str(line.trim())
        .with_context(|| format!("the emitter publisher said {line:?}"))?;
    Ok((r.published, r.failed, r.secs, r.max_lag_ms))
}

/// Deletes the run's Redis keys (bounded SCAN).
/// Deletes the run's keys: on a cluster, from each node in turn (SCAN walks
/// one node's keys; a replica refuses the UNLINK and is skipped).
async fn cleanup_redis(url: &str, prefix: &str) -> anyhow::Result<u64> {
    if !url.starts_with("redis-cluster://") {
        return cleanup_node(url, prefix).await;
    }
    let mut deleted = 0;
    let nodes: String = {
        let first = redis_hosts(url)?
            .into_iter()
            .next()
            .context("no cluster node")?;
        let client = redis::Client::open(format!("redis://{first}"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn)
            .await?
    };
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() > 2 && fields[2].contains("master") && !fields[2].contains("fail") {
            let addr = fields[1].split('@').next().unwrap_or_default();
            deleted += cleanup_node(&format!("redis://{addr}"), prefix).await?;
        }
    }
    Ok(deleted)
}

async fn cleanup_node(url: &str, prefix: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    for _ in 0..100_000 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            // One UNLINK per key (on a cluster node they span slots), in
            // one round trip.
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("UNLINK").arg(key);
            }
            let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
            deleted += counts.iter().sum::<u64>();
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(deleted)
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    connections_asked: usize,
    connections_held: usize,
    client_processes: usize,
    gateways: usize,
    broker: String,
    publish_via: String,
    users: usize,
    jobs_failed: usize,
    events_published: u64,
    publish_failed: u64,
    publish_rate: f64,
    publish_max_lag_ms: f64,
    events_expected: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    seq_breaks: u64,
    replays: u64,
    reconnects: u64,
    invalid: u64,
    latency_p50_ms: f64,
    latency_p95_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
    handshakes_per_sec: f64,
    connect_errors: u64,
    client_rss_kb: u64,
    client_rss_per_conn_kb: f64,
    gateway_rss_kb: Option<u64>,
    gateway_rss_per_conn_kb: Option<f64>,
    server: String,
    /// Server RSS per connection right after connecting, before any job.
    gateway_rss_idle_per_conn_kb: Option<f64>,
    /// Server processes' CPU over the connect phase, per connection held;
    /// and the part of it spent in the kernel.
    server_cpu_us_per_handshake: Option<f64>,
    server_kernel_us_per_handshake: Option<f64>,
    redis_cpu_us_per_handshake: Option<f64>,
    /// Server processes' CPU from the first publish to the last delivery,
    /// per delivered event (none with `--kill-after-secs`); and the part of
    /// it spent in the kernel.
    server_cpu_us_per_event: Option<f64>,
    server_kernel_us_per_event: Option<f64>,
    redis_cpu_us_per_event: Option<f64>,
    /// With `--rss-after-close-secs`: the servers' lowest RSS once every
    /// client closed, and how much of it is above their RSS before the
    /// clients came, per connection that was held.
    gateway_rss_after_close_kb: Option<u64>,
    gateway_rss_after_close_per_conn_kb: Option<f64>,
    /// With `--kill-after-secs`: from the kill to the restarted server
    /// answering `/healthz`, and to the last connection connected again.
    restart_ms: Option<f64>,
    reconnect_all_ms: Option<f64>,
    ok: bool,
    error: Option<String>,
}

async fn coordinate(
    cli: &Cli,
    summary: &mut Summary,
    children: &mut Vec<Child>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let hard = started + Duration::from_secs(cli.duration_limit);
    let run_id = random_hex()[..10].to_owned();
    let prefix = cli
        .key_prefix
        .clone()
        .unwrap_or_else(|| format!("ll-load:{run_id}:"));
    let users = cli.users();
    summary.users = users;
    summary.broker = match &cli.redis_url {
        Some(url) if url.starts_with("redis-cluster://") => "redis cluster",
        Some(_) => "redis",
        None => "memory",
    }
    .to_owned();
    let via = cli
        .publish_via
        .unwrap_or(match (cli.server, &cli.redis_url) {
            (ServerKind::Node, _) => PublishVia::Emitter,
            (ServerKind::Gateway, Some(_)) => PublishVia::Redis,
            (ServerKind::Gateway, None) => PublishVia::Http,
        });
    summary.publish_via = format!("{via:?}").to_lowercase();
    summary.server = format!("{:?}", cli.server).to_lowercase();
    ensure!(
        (cli.server == ServerKind::Node) == (via == PublishVia::Emitter),
        "--server node publishes with --publish-via emitter, and only it"
    );
    ensure!(
        cli.server == ServerKind::Gateway
            || cli
                .redis_url
                .as_deref()
                .is_some_and(|u| u.starts_with("redis://")),
        "--server node needs --redis-url redis://... (one Redis)"
    );
    ensure!(
        cli.kill_after_secs.is_none() || cli.url.is_empty(),
        "--kill-after-secs kills a server this run started (not with --url)"
    );

    // Only servers this run starts need a launcher (`--url` targets running ones).
    let launcher = if cli.url.is_empty() {
        Some(Launcher::new(cli, &run_id)?)
    } else {
        None
    };
    let mut gateways = if let Some(launcher) = &launcher {
        ensure!(
            cli.gateways <= 1 || cli.redis_url.is_some(),
            "--gateways > 1 needs --redis-url (the memory broker is one node)"
        );
        start_gateways(cli, launcher, &prefix).await?
    } else {
        cli.url
            .iter()
            .map(|u| {
                loopback_addr(u)?;
                Ok(Gateway {
                    url: u.trim_end_matches('/').to_owned(),
                    child: None,
                    rss_idle_kb: 0,
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    ensure!(
        cli.url.is_empty() || via == PublishVia::Http || cli.key_prefix.is_some(),
        "with --url and --redis-url, give the gateways' --key-prefix (or --publish-via http)"
    );
    summary.gateways = gateways.len();
    let urls: Vec<String> = gateways.iter().map(|g| g.url.clone()).collect();
    let per_gateway = cli.connections.div_ceil(urls.len());
    if per_gateway > MAX_PER_PROCESS {
        eprintln!(
            "warning: {per_gateway} connections per gateway process; one process may hold at most 20,000 open files"
        );
    }

    // CPU of the started servers and of Redis, at the phases' edges.
    let server_pids: Vec<Option<u32>> = gateways
        .iter()
        .map(|g| g.child.as_ref().and_then(Child::id))
        .collect();
    let measured = server_pids.iter().all(Option::is_some);
    let server_cpu = || -> Cpu { server_pids.iter().map(|p| cpu_us(*p)).sum() };
    let redis_cpu = || async {
        match &cli.redis_url {
            Some(url) => redis_cpu_us(url).await,
            None => None,
        }
    };
    let (cpu_before_connect, redis_before_connect) = (server_cpu(), redis_cpu().await);

    // Client processes.
    let per_process = cli.per_process.clamp(1, MAX_PER_PROCESS);
    let n_workers = cli.connections.div_ceil(per_process).max(1);
    summary.client_processes = n_workers;
    let exe = std::env::current_exe()?;
    let mut workers = Vec::new();
    for w in 0..n_workers {
        let offset = w * per_process;
        let count = per_process.min(cli.connections - offset);
        let mut cmd = Command::new(&exe);
        cmd.arg("--worker")
            .args(["--url", &urls.join(",")])
            .args([
                "--offset",
                &offset.to_string(),
                "--count",
                &count.to_string(),
            ])
            .args(["--connections", &cli.connections.to_string()])
            .args([
                "--users",
                &users.to_string(),
                "--events",
                &cli.events.to_string(),
            ])
            .args(["--run-id", &run_id])
            .args([
                "--connect-concurrency",
                &cli.connect_concurrency.to_string(),
            ])
            .args(["--connect-secs", &cli.connect_secs.to_string()])
            .args(["--start-concurrency", &cli.start_concurrency.to_string()])
            .args(["--duration-limit", &cli.duration_limit.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting a worker")?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        workers.push(Worker {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        });
    }

    // Connect.
    let connect_deadline = (Instant::now() + Duration::from_secs(cli.connect_secs + 10)).min(hard);
    let (mut start_ms, mut end_ms) = (u64::MAX, 0);
    let mut client_idle = 0;
    for w in &mut workers {
        match w.next(connect_deadline).await? {
            WorkerMsg::Connected {
                held,
                start_ms: s,
                end_ms: e,
                connect_errors,
                rss_idle_kb,
            } => {
                summary.connections_held += held;
                summary.connect_errors += connect_errors;
                start_ms = start_ms.min(s);
                end_ms = end_ms.max(e);
                client_idle += rss_idle_kb;
            }
            other => bail!("unexpected {other:?}"),
        }
    }
    let connect_secs = end_ms.saturating_sub(start_ms).max(1) as f64 / 1000.0;
    summary.handshakes_per_sec = summary.connections_held as f64 / connect_secs;
    eprintln!(
        "held {} of {} connections in {connect_secs:.2} s",
        summary.connections_held, cli.connections
    );

    ensure!(summary.connections_held > 0, "no connection was held");
    let held = summary.connections_held as f64;
    if measured {
        let (all, kernel) = server_cpu().per(cpu_before_connect, held);
        summary.server_cpu_us_per_handshake = Some(all);
        summary.server_kernel_us_per_handshake = Some(kernel);
        let rss: u64 = server_pids.iter().map(|p| rss_kb(*p)).sum();
        let idle: u64 = gateways.iter().map(|g| g.rss_idle_kb).sum();
        summary.gateway_rss_idle_per_conn_kb = Some(rss.saturating_sub(idle) as f64 / held);
    }
    if let (Some(before), Some(after)) = (redis_before_connect, redis_cpu().await) {
        summary.redis_cpu_us_per_handshake = Some(after.saturating_sub(before) as f64 / held);
    }

    // Jobs.
    for w in &mut workers {
        w.say("jobs").await?;
    }
    let jobs_deadline = (Instant::now() + Duration::from_secs(45)).min(hard);
    let mut jobs = HashMap::new();
    for w in &mut workers {
        match w.next(jobs_deadline).await? {
            WorkerMsg::Jobs { jobs: j, failed } => {
                summary.jobs_failed += failed;
                jobs.extend(j);
            }
            other => bail!("unexpected {other:?}"),
        }
    }
    let missing: Vec<String> = (0..users)
        .filter(|u| !jobs.contains_key(u))
        .map(|u| u.to_string())
        .collect();
    if cli.events > 0 {
        summary.jobs_failed = summary.jobs_failed.max(missing.len());
    }

    // Publish, then let the workers drain.
    let publish_deadline =
        hard - Duration::from_secs(cli.drain_secs.min(cli.duration_limit / 4) + 3);
    let (cpu_before_publish, redis_before_publish) = (server_cpu(), redis_cpu().await);
    let kill = async {
        let Some(after) = cli.kill_after_secs else {
            return Ok::<_, anyhow::Error>(None);
        };
        // The fault's schedule, not a synchronisation: the kill lands this
        // far into publishing, whatever has been delivered by then.
        sleep(Duration::from_secs_f64(after)).await;
        let launcher = launcher
            .as_ref()
            .context("--kill-after-secs needs servers this run started")?;
        let g = &mut gateways[0];
        if let Some(mut c) = g.child.take() {
            c.start_kill()?;
            c.wait().await?;
        }
        let killed = Instant::now();
        let killed_ms = unix_ms();
        let addr = loopback_addr(&g.url)?;
        eprintln!(
            "killed server 0 (kill -9); starting it again on port {}",
            addr.port()
        );
        g.child = Some(launcher.spawn(cli, 0, addr.port(), &prefix)?);
        ensure!(
            healthy(addr, Duration::from_secs(20)).await,
            "server 0 did not come back; see {}",
            launcher.log(0).display()
        );
        Ok(Some((killed_ms, killed.elapsed().as_secs_f64() * 1000.0)))
    };
    let publishing = async {
        if cli.events == 0 {
            return Ok((0, 0, 0.0, 0.0)); // connections held only
        }
        publish(cli, via, &prefix, &urls, &jobs, &run_id, publish_deadline).await
    };
    let (published, killed) = tokio::join!(publishing, kill);
    let (published, failed, secs, lag) = published?;
    let killed = killed?;
    if let Some((_, restart_ms)) = killed {
        summary.restart_ms = Some(restart_ms);
    }
    summary.events_published = published;
    summary.publish_failed = failed;
    summary.publish_rate = published as f64 / secs.max(0.001);
    summary.publish_max_lag_ms = lag;
    eprintln!("published {published} events in {secs:.2} s ({failed} failed)");
    let left_ms = hard.saturating_duration_since(Instant::now()).as_millis() as u64;
    let drain_ms = unix_ms() + (cli.drain_secs * 1000).min(left_ms.saturating_sub(1500));
    for w in &mut workers {
        w.say(&format!("done {drain_ms} {}", missing.join(",")))
            .await?;
    }
    let report_deadline = (Instant::now() + Duration::from_secs(cli.drain_secs + 30)).min(hard);
    let mut hist = histogram();
    let mut client_rss = 0;
    let mut held_end = 0;
    let mut last_reconnect_ms = 0;
    for w in &mut workers {
        match w.next(report_deadline).await? {
            WorkerMsg::Report(r) => {
                held_end += r.held;
                summary.events_expected += r.expected;
                summary.delivered += r.delivered;
                summary.duplicated += r.duplicated;
                summary.reordered += r.reordered;
                summary.seq_breaks += r.seq_breaks;
                summary.replays += r.replays;
                summary.reconnects += r.reconnects;
                summary.invalid += r.invalid;
                client_rss += r.rss_kb;
                last_reconnect_ms = last_reconnect_ms.max(r.last_reconnect_ms);
                for (value, count) in &r.latency {
                    hist.saturating_record_n(*value, *count);
                }
            }
            other => bail!("unexpected {other:?}"),
        }
    }
    summary.connections_held = summary.connections_held.min(held_end);
    if let Some((killed_ms, _)) = killed {
        summary.reconnect_all_ms = (last_reconnect_ms > killed_ms)
            .then(|| last_reconnect_ms.saturating_sub(killed_ms) as f64);
    } else if summary.delivered > 0 {
        let delivered = summary.delivered as f64;
        if measured {
            let (all, kernel) = server_cpu().per(cpu_before_publish, delivered);
            summary.server_cpu_us_per_event = Some(all);
            summary.server_kernel_us_per_event = Some(kernel);
        }
        if let (Some(before), Some(after)) = (redis_before_publish, redis_cpu().await) {
            summary.redis_cpu_us_per_event = Some(after.saturating_sub(before) as f64 / delivered);
        }
    }
    // Expected counts every connection asked for whose user has a job: a
    // connection that was never held lost its events.
    let with_job = (0..cli.connections)
        .filter(|g| jobs.contains_key(&(g % users)))
        .count();
    summary.events_expected = summary.events_expected.max(with_job as u64 * cli.events);
    summary.lost = summary.events_expected.saturating_sub(summary.delivered);
    summary.latency_p50_ms = quantile_ms(&hist, 0.50);
    summary.latency_p95_ms = quantile_ms(&hist, 0.95);
    summary.latency_p99_ms = quantile_ms(&hist, 0.99);
    summary.latency_max_ms = hist.max() as f64 / 1000.0;
    let held = summary.connections_held.max(1) as f64;
    summary.client_rss_kb = client_rss;
    summary.client_rss_per_conn_kb = client_rss.saturating_sub(client_idle) as f64 / held;
    // Gateway RSS while the connections are still held.
    if gateways.iter().all(|g| g.child.is_some()) {
        let (mut now, mut idle) = (0, 0);
        for g in &gateways {
            now += rss_kb(g.child.as_ref().and_then(Child::id));
            idle += g.rss_idle_kb;
        }
        summary.gateway_rss_kb = Some(now);
        summary.gateway_rss_per_conn_kb = Some(now.saturating_sub(idle) as f64 / held);
    }
    for w in &mut workers {
        let _ = w.say("exit").await;
    }
    for w in &mut workers {
        let _ = timeout(Duration::from_secs(5), w.child.wait()).await;
    }
    for w in workers {
        children.push(w.child);
    }
    if cli.rss_after_close_secs > 0.0 && gateways.iter().all(|g| g.child.is_some()) {
        // A measurement window, not a synchronisation: the lowest RSS seen
        // while the servers settle (the gateway trims every few seconds).
        let end = Instant::now() + Duration::from_secs_f64(cli.rss_after_close_secs);
        let mut low = u64::MAX;
        while Instant::now() < end {
            let rss: u64 = gateways
                .iter()
                .map(|g| rss_kb(g.child.as_ref().and_then(Child::id)))
                .sum();
            low = low.min(rss);
            sleep(Duration::from_millis(250)).await;
        }
        let idle: u64 = gateways.iter().map(|g| g.rss_idle_kb).sum();
        summary.gateway_rss_after_close_kb = Some(low);
        summary.gateway_rss_after_close_per_conn_kb = Some(low.saturating_sub(idle) as f64 / held);
    }
    // Stop the gateways before the cleanup, so no late write (e.g. session
    // analytics of the closing sockets) recreates a key.
    for g in &mut gateways {
        if let Some(mut c) = g.child.take() {
            let _ = c.start_kill();
            let _ = timeout(Duration::from_secs(5), c.wait()).await;
        }
    }
    if let Some(url) = &cli.redis_url
        && cli.key_prefix.is_none()
    {
        match timeout(Duration::from_secs(20), cleanup_redis(url, &prefix)).await {
            Ok(Ok(n)) => eprintln!("deleted {n} Redis keys under {prefix}"),
            Ok(Err(e)) => eprintln!("Redis cleanup failed: {e}"),
            Err(_) => eprintln!("Redis cleanup timed out"),
        }
    }
    Ok(())
}

fn print_summary(s: &Summary) {
    let gw = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} KiB"));
    println!(
        "connections held     {} of {} ({} client process(es), {} gateway(s), {} broker, publish via {})",
        s.connections_held,
        s.connections_asked,
        s.client_processes,
        s.gateways,
        s.broker,
        s.publish_via
    );
    println!(
        "users                {} (jobs failed {})",
        s.users, s.jobs_failed
    );
    println!(
        "events published     {} at {:.0}/s (failed {}, max schedule lag {:.1} ms)",
        s.events_published, s.publish_rate, s.publish_failed, s.publish_max_lag_ms
    );
    println!("events expected      {}", s.events_expected);
    println!("delivered            {}", s.delivered);
    println!("lost                 {}", s.lost);
    println!("duplicated           {}", s.duplicated);
    println!("reordered            {}", s.reordered);
    println!(
        "seq breaks           {} (replays {}, reconnects {}, invalid {})",
        s.seq_breaks, s.replays, s.reconnects, s.invalid
    );
    println!(
        "latency ms           p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
        s.latency_p50_ms, s.latency_p95_ms, s.latency_p99_ms, s.latency_max_ms
    );
    println!(
        "handshakes           {:.0} connections/s (connect errors {})",
        s.handshakes_per_sec, s.connect_errors
    );
    println!(
        "client RSS           {} KiB total, {:.1} KiB per connection",
        s.client_rss_kb, s.client_rss_per_conn_kb
    );
    println!(
        "gateway RSS          {} total, {} per connection",
        s.gateway_rss_kb
            .map_or_else(|| "n/a".to_owned(), |v| format!("{v} KiB")),
        gw(s.gateway_rss_per_conn_kb)
    );
    let us = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} µs"));
    println!(
        "server               {}: RSS {} per idle connection; CPU {} per handshake ({} in the kernel), {} per event ({} in the kernel)",
        s.server,
        gw(s.gateway_rss_idle_per_conn_kb),
        us(s.server_cpu_us_per_handshake),
        us(s.server_kernel_us_per_handshake),
        us(s.server_cpu_us_per_event),
        us(s.server_kernel_us_per_event)
    );
    println!(
        "redis CPU            {} per handshake, {} per event",
        us(s.redis_cpu_us_per_handshake),
        us(s.redis_cpu_us_per_event)
    );
    if let Some(low) = s.gateway_rss_after_close_kb {
        println!(
            "server RSS closed    {low} KiB once every client closed, {} per connection held above idle",
            gw(s.gateway_rss_after_close_per_conn_kb)
        );
    }
    if let Some(r) = s.restart_ms {
        println!(
            "kill -9              restarted in {r:.0} ms; every connection back {}",
            s.reconnect_all_ms
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0} ms after the kill"))
        );
    }
    if let Some(e) = &s.error {
        println!("error                {e}");
    }
    println!(
        "result               {}",
        if s.ok { "PASS" } else { "FAIL" }
    );
    if let Ok(j) = serde_json::to_string(s) {
        println!("RESULT {j}");
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("liveline-load: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let limit = Duration::from_secs(cli.duration_limit);
    if cli.worker {
        let result = runtime.block_on(async { timeout(limit, worker(cli)).await });
        runtime.shutdown_timeout(Duration::from_secs(1));
        return match result {
            Ok(Ok(())) => std::process::ExitCode::SUCCESS,
            Ok(Err(e)) => {
                eprintln!("liveline-load worker: {e:#}");
                std::process::ExitCode::FAILURE
            }
            Err(_) => {
                eprintln!("liveline-load worker: duration limit reached");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let mut summary = Summary {
        connections_asked: cli.connections,
        ..Summary::default()
    };
    let check = || -> anyhow::Result<()> {
        ensure!(cli.connections >= 1, "--connections must be at least 1");
        ensure!(
            cli.events > 0 || cli.kill_after_secs.is_none(),
            "--kill-after-secs needs events (--events 1 or more)"
        );
        ensure!(cli.rate > 0.0, "--rate must be positive");
        ensure!(cli.gateways >= 1, "--gateways must be at least 1");
        if let Some(r) = &cli.redis_url {
            check_redis_url(r)?;
        }
        Ok(())
    };
    if let Err(e) = check() {
        eprintln!("liveline-load: {e:#}");
        return std::process::ExitCode::from(2);
    }
    let result = runtime.block_on(async {
        let mut children = Vec::new();
        let r = timeout(limit, coordinate(&cli, &mut summary, &mut children)).await;
        for mut c in children {
            let _ = c.start_kill();
            let _ = timeout(Duration::from_secs(5), c.wait()).await;
        }
        r
    });
    // Gateways and workers not yet handed over are killed when dropped (kill_on_drop).
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => summary.error = Some(format!("{e:#}")),
        Err(_) => summary.error = Some("duration limit reached".to_owned()),
    }
    summary.ok = summary.error.is_none()
        && summary.connections_held >= cli.connections
        && summary.lost == 0
        && summary.duplicated == 0
        && summary.reordered == 0
        && summary.invalid == 0
        && summary.jobs_failed == 0
        && summary.publish_failed == 0
        && (summary.events_expected > 0 || cli.events == 0);
    print_summary(&summary);
    if summary.ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
