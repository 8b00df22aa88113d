//! Shared test harness: a real gateway on 127.0.0.1:0 (memory or Redis broker)
//! and a raw Engine.IO/Socket.IO client over tokio-tungstenite.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use liveline_gateway::Config;
use liveline_gateway::auth::JwtAuth;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const WAIT: Duration = Duration::from_secs(10);

/// Runs one async scenario on each broker: memory, one Redis, and the
/// local Redis Cluster ([`cluster_url`]).
#[macro_export]
macro_rules! on_every_broker {
    ($($name:ident),* $(,)?) => {
        mod on_memory {
            $(#[tokio::test]
            async fn $name() { super::$name($crate::common::Backend::Memory).await }) *
        }
        mod on_redis {
            $(#[tokio::test]
            async fn $name() { super::$name($crate::common::Backend::Redis).await }) *
        }
        mod on_cluster {
            $(#[tokio::test]
            async fn $name() { super::$name($crate::common::Backend::Cluster).await }) *
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
    /// The shared local Redis Cluster of the test run.
    Cluster,
}

/// The seed URL of the test run's local Redis Cluster (three masters, three
/// replicas): the one `scripts/redis-cluster.sh` keeps in
/// `target/redis-cluster`, started on first use. `scripts/test.sh` stops it
/// when the run ends.
pub fn cluster_url() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = std::process::Command::new("bash")
            .arg(root.join("scripts/redis-cluster.sh"))
            .arg("ensure")
            .arg(root.join("target/redis-cluster"))
            .output()
            .expect("bash must be on PATH");
        assert!(
            out.status.success(),
            "scripts/redis-cluster.sh ensure failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
    .clone()
}

/// A test's own connection to Redis at `url`: one server, or a cluster
/// (commands routed by their keys; KEYS goes to every master).
pub enum RedisConn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl RedisConn {
    pub async fn open(url: &str) -> Self {
        if let Some(hosts) = url.strip_prefix("redis-cluster://") {
            let nodes: Vec<String> = hosts.split(',').map(|h| format!("redis://{h}")).collect();
            let client = redis::cluster::ClusterClient::new(nodes).unwrap();
            return Self::Cluster(client.get_async_connection().await.unwrap());
        }
        let client = redis::Client::open(url).unwrap();
        Self::Single(client.get_multiplexed_async_connection().await.unwrap())
    }

    pub async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> T {
        match self {
            Self::Single(c) => cmd.query_async(c).await.unwrap(),
            Self::Cluster(c) => cmd.query_async(c).await.unwrap(),
        }
    }
}

/// Runs `cmd` on Redis at `url` ([`RedisConn`]).
pub async fn redis_query<T: redis::FromRedisValue>(url: &str, cmd: &redis::Cmd) -> T {
    RedisConn::open(url).await.query(cmd).await
}

/// Deletes every key starting with `prefix` from Redis at `url`.
pub async fn delete_keys(url: &str, prefix: &str) {
    let mut conn = RedisConn::open(url).await;
    let keys: Vec<String> = conn
        .query(redis::cmd("KEYS").arg(format!("{prefix}*")))
        .await;
    // One at a time: on a cluster they span slots.
    for key in keys {
        let _: () = conn.query(redis::cmd("DEL").arg(&key)).await;
    }
}

pub struct Gateway {
    pub addr: SocketAddr,
    pub config: Config,
    pub handle: liveline_gateway::Handle,
    /// The same app the server runs, for `oneshot` requests.
    pub router: axum::Router,
    server: tokio::task::JoinHandle<()>,
}

impl Gateway {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            demo: liveline_gateway::demo::Settings {
                enabled: true,
                step: Duration::from_millis(60),
                ..Default::default()
            },
            ..Config::default()
        };
        match backend {
            Backend::Memory => {}
            Backend::Redis => config.redis_url = Some(REDIS_URL.to_owned()),
            Backend::Cluster => config.redis_url = Some(cluster_url()),
        }
        if backend != Backend::Memory {
            config.key_prefix = format!("lltest:{}:", liveline_gateway::broker::random_hex());
        }
        tweak(&mut config);
        let (router, handle) = liveline_gateway::build(config.clone()).await.unwrap();
        handle.start();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = router.clone();
        let limits = liveline_gateway::ServeLimits::from(&handle);
        let server = tokio::spawn(async move {
            liveline_gateway::serve(listener, served, limits, std::future::pending()).await;
        });
        Self {
            addr,
            config,
            handle,
            router,
            server,
        }
    }

    pub fn token(&self, sub: &str) -> String {
        self.jwt().mint(sub, 600).unwrap()
    }

    /// A token with a `role` claim (`service`, `admin`).
    pub fn role_token(&self, sub: &str, role: &str) -> String {
        self.jwt().mint_with_role(sub, 600, Some(role)).unwrap()
    }

    /// A token whose `topics` claim lists `topics`.
    pub fn topics_token(&self, sub: &str, topics: &[&str]) -> String {
        self.claims_token(sub, liveline_gateway::auth::unix_secs(), topics)
    }

    /// A token issued at `iat` (unix seconds) whose `topics` claim lists `topics`.
    pub fn claims_token(&self, sub: &str, iat: u64, topics: &[&str]) -> String {
        let claims = liveline_gateway::auth::Claims {
            sub: sub.to_owned(),
            exp: iat + 600,
            iat,
            nbf: None,
            iss: self.config.jwt_issuer.clone(),
            aud: self.config.jwt_audience.clone(),
            role: None,
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        };
        self.jwt().mint_claims(&claims).unwrap()
    }

    pub fn jwt(&self) -> JwtAuth {
        self.config.jwt().unwrap()
    }

    pub async fn connect(&self, sub: &str) -> Client {
        Client::connect(self.addr, json!({ "token": self.token(sub) }))
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and deletes this test's Redis keys.
    pub async fn stop(self) {
        self.server.abort();
        self.handle.shutdown();
        match self.config.redis_url.as_deref() {
            Some(url) if url == REDIS_URL || url.starts_with("redis-cluster://") => {
                delete_keys(url, &self.config.key_prefix).await;
            }
            _ => {}
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What [`Client::next_or_closed`] got.
#[derive(Debug)]
pub enum Next {
    Event(String, Value),
    Closed,
    Quiet,
}

/// How the server closed a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// A Socket.IO DISCONNECT packet: the session is over.
    Disconnect,
    /// The transport closed (Engine.IO close, WebSocket close, EOF).
    Transport,
}

/// A Socket.IO v5 client speaking raw frames.
pub struct Client {
    ws: Ws,
    next_ack: u64,
    events: VecDeque<(String, Value)>,
    pub sid: String,
}

impl Client {
    /// Opens the WebSocket, reads the Engine.IO open packet, sends CONNECT with
    /// `auth`. `Err` carries the connect_error payload.
    pub async fn connect(addr: SocketAddr, auth: Value) -> Result<Client, Value> {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) = connect_async(url).await.unwrap();
        let open = next_text(&mut ws).await;
        assert!(open.starts_with('0'), "expected an open packet, got {open}");
        let open: Value = serde_json::from_str(&open[1..]).unwrap();
        assert!(open["pingInterval"].as_u64().unwrap() <= 10_000);
        ws.send(Message::text(format!("40{auth}"))).await.unwrap();
        loop {
            let frame = next_text(&mut ws).await;
            if frame == "2" {
                ws.send(Message::text("3")).await.unwrap();
                continue;
            }
            if let Some(rest) = frame.strip_prefix("40") {
                let v: Value = serde_json::from_str(rest).unwrap();
                let mut client = Client {
                    ws,
                    next_ack: 0,
                    events: VecDeque::new(),
                    sid: v["sid"].as_str().unwrap().to_owned(),
                };
                // Every connection's first packet after CONNECT is the
                // welcome that tells the SDK it talks to a Liveline gateway.
                let first = client.frame().await;
                assert_eq!(
                    first, r#"42["session:welcome:v1",{"protocol":1}]"#,
                    "the welcome comes first"
                );
                return Ok(client);
            }
            if let Some(rest) = frame.strip_prefix("44") {
                return Err(serde_json::from_str(rest).unwrap());
            }
            panic!("unexpected frame during connect: {frame}");
        }
    }

    /// Emits `event` with `data` and waits for its ack's single argument.
    pub async fn call(&mut self, event: &str, data: Value) -> Value {
        let id = self.next_ack;
        self.next_ack += 1;
        let frame = format!("42{id}{}", json!([event, data]));
        self.ws.send(Message::text(frame)).await.unwrap();
        let prefix = format!("43{id}");
        loop {
            let frame = self.frame().await;
            if let Some(rest) = frame.strip_prefix(&prefix) {
                let args: Vec<Value> = serde_json::from_str(rest).unwrap();
                return args.into_iter().next().unwrap();
            }
            self.queue(&frame);
        }
    }

    /// The next server event `(name, first argument)`.
    pub async fn event(&mut self) -> (String, Value) {
        if let Some(ev) = self.events.pop_front() {
            return ev;
        }
        loop {
            let frame = self.frame().await;
            self.queue(&frame);
            if let Some(ev) = self.events.pop_front() {
                return ev;
            }
        }
    }

    /// The next server event, or `None` if none comes within `within`.
    pub async fn maybe_event(&mut self, within: Duration) -> Option<(String, Value)> {
        tokio::time::timeout(within, self.event()).await.ok()
    }

    /// Events until (and including) the first one `stop` accepts.
    pub async fn events_until(
        &mut self,
        stop: impl Fn(&str, &Value) -> bool,
    ) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        loop {
            let (name, arg) = self.event().await;
            let done = stop(&name, &arg);
            out.push((name, arg));
            if done {
                return out;
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Sends one raw text frame.
    pub async fn send_raw(&mut self, frame: String) {
        self.ws.send(Message::text(frame)).await.unwrap();
    }

    /// Emits `event` with `data` without an ack id.
    pub async fn emit(&mut self, event: &str, data: Value) {
        self.send_raw(format!("42{}", json!([event, data]))).await;
    }

    /// Reads until the server disconnects the socket (a Socket.IO DISCONNECT
    /// packet, an Engine.IO close, a WebSocket close or EOF) and returns the
    /// events seen before. Panics if it stays open for `within`.
    pub async fn until_closed(&mut self, within: Duration) -> Vec<(String, Value)> {
        self.until_closed_by(within).await.0
    }

    /// [`Client::until_closed`], telling also how the server closed: with a
    /// Socket.IO DISCONNECT (the session is over) or by closing the transport
    /// (an Engine.IO close, a WebSocket close or EOF: clients reconnect).
    pub async fn until_closed_by(&mut self, within: Duration) -> (Vec<(String, Value)>, Closed) {
        let mut seen: Vec<(String, Value)> = self.events.drain(..).collect();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("socket still open after the wait");
            match next {
                Some(Ok(Message::Text(t))) => {
                    let t = t.to_string();
                    if t == "2" {
                        let _ = self.ws.send(Message::text("3")).await;
                    } else if t.starts_with("41") {
                        return (seen, Closed::Disconnect);
                    } else if t == "1" {
                        return (seen, Closed::Transport);
                    } else if t.starts_with("42") {
                        self.queue(&t);
                        seen.extend(self.events.drain(..));
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    return (seen, Closed::Transport);
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next server event, [`Next::Closed`] when the server closes the
    /// socket, or [`Next::Quiet`] when nothing comes within `within`.
    pub async fn next_or_closed(&mut self, within: Duration) -> Next {
        if let Some((name, arg)) = self.events.pop_front() {
            return Next::Event(name, arg);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, self.ws.next()).await else {
                return Next::Quiet;
            };
            match next {
                Some(Ok(Message::Text(t))) => {
                    let t = t.to_string();
                    if t == "2" {
                        let _ = self.ws.send(Message::text("3")).await;
                    } else if t.starts_with("41") || t == "1" {
                        return Next::Closed;
                    } else {
                        self.queue(&t);
                        if let Some((name, arg)) = self.events.pop_front() {
                            return Next::Event(name, arg);
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Next::Closed,
                Some(Ok(_)) => {}
            }
        }
    }

    fn queue(&mut self, frame: &str) {
        if let Some(rest) = frame.strip_prefix("42") {
            let args: Vec<Value> = serde_json::from_str(rest).unwrap();
            let mut args = args.into_iter();
            let name = args.next().unwrap().as_str().unwrap().to_owned();
            self.events
                .push_back((name, args.next().unwrap_or(Value::Null)));
        }
    }

    /// The next text frame that is not a ping (pings are answered).
    async fn frame(&mut self) -> String {
        loop {
            let frame = tokio::time::timeout(WAIT, next_text(&mut self.ws))
                .await
                .expect("no frame within the wait");
            if frame == "2" {
                self.ws.send(Message::text("3")).await.unwrap();
                continue;
            }
            return frame;
        }
    }
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Close(c))) => panic!("socket closed: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error: {e}"),
            None => panic!("socket ended"),
        }
    }
}

/// Starts a job of `kind` and returns its id.
pub async fn start_job(client: &mut Client, key: &str, kind: &str) -> String {
    let ack = client
        .call(
            "job:start:v1",
            json!({"key": key, "data": {"kind": kind, "params": {"query": "rust"}}}),
        )
        .await;
    assert_eq!(ack["ok"], json!(true), "ack: {ack}");
    ack["data"]["jobId"].as_str().unwrap().to_owned()
}

/// Whether an event is the `completed` status of job stream `stream`.
pub fn is_completed(name: &str, arg: &Value) -> bool {
    name == "job:status:v1" && arg["data"]["status"] == "completed"
}

/// A free TCP port on 127.0.0.1.
pub fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private `redis-server` (no persistence) for tests that kill, stop or
/// restart Redis; killed when dropped, also when the test panics.
pub struct RedisServer(std::process::Child);

impl RedisServer {
    /// Starts one on `port` and returns once it says it accepts connections.
    pub async fn start(port: u16) -> RedisServer {
        Self::start_with(port, &[]).await
    }

    /// [`RedisServer::start`] with more of redis-server's options (`--requirepass x`).
    pub async fn start_with(port: u16, options: &[&str]) -> RedisServer {
        use std::io::BufRead;
        let mut child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(options)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("redis-server must be on PATH");
        let stdout = child.stdout.take().unwrap();
        let server = RedisServer(child);
        let ready = tokio::task::spawn_blocking(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let ready = lines
                .by_ref()
                .map_while(Result::ok)
                .any(|l| l.contains("Ready to accept connections"));
            // Keep draining, so its log never fills the pipe.
            std::thread::spawn(move || lines.for_each(drop));
            ready
        });
        let ready = tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .expect("redis-server did not start within 10 s")
            .unwrap();
        assert!(ready, "redis-server exited before accepting connections");
        server
    }

    /// Sends it a signal (`-KILL`, `-STOP`, `-CONT`).
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Kills it and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits (at most 20 s) for the `listening on http://ADDR` line a gateway
/// process prints on stdout once its port is bound; returns the address.
/// The rest of its stdout is drained in the background.
pub async fn listening(stdout: tokio::process::ChildStdout) -> SocketAddr {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("listening on http://") {
                return addr.parse().unwrap();
            }
        }
        panic!("the gateway exited before listening");
    })
    .await
    .expect("the gateway did not listen within 20 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    addr
}

/// Waits until `check` holds, checking again each time the node counts a
/// socket in or out of a user or topic (`Hub::changes`), for at most 5 s.
/// Panics with `what` when it never holds.
#[allow(dead_code)]
pub async fn until_hub<F, Fut>(hub: &liveline_gateway::hub::Hub, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    // Subscribed before the first check: a change in between is not missed.
    let mut changes = hub.changes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        tokio::time::timeout_at(deadline, changes.changed())
            .await
            .unwrap_or_else(|_| panic!("never: {what}"))
            .unwrap_or_else(|_| panic!("the hub is gone before: {what}"));
    }
}

/// Waits until `check` holds, asking again every 10 ms, for at most 5 s: for
/// states nothing announces (the analytics of a session, recorded after its
/// socket left). Panics with `what` when it never holds.
#[allow(dead_code)]
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, Duration::from_secs(5), check).await;
}

/// [`eventually`] with a deadline of its own.
pub async fn eventually_within<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        // Polled: no event marks this state.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Creates a running job of `owner` straight in the broker (no worker runs
/// it), with an id in the owner's slot; returns its id.
pub async fn create_running_job(gw: &Gateway, owner: &str) -> String {
    let broker = &gw.handle.state.broker;
    let id = broker.new_job_id(owner);
    let job = liveline_gateway::broker::JobRecord {
        id: id.clone(),
        owner: owner.to_owned(),
        kind: "research".to_owned(),
        params: json!({}),
        status: liveline::contract::JobState::Running,
        progress: 0.0,
        message: String::new(),
        created_at: 1,
        updated_at: 1,
    };
    broker.create_job(&job).await.unwrap();
    id
}

/// A private local Redis Cluster (three masters, three replicas, from
/// `scripts/redis-cluster.sh`) for tests that kill a node; stopped when
/// dropped, also when the test panics.
pub struct LocalCluster {
    dir: std::path::PathBuf,
    pub url: String,
}

impl LocalCluster {
    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/redis-cluster.sh")
    }

    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ll-cluster-{}",
            liveline_gateway::broker::random_hex()
        ));
        let out = std::process::Command::new("bash")
            .arg(Self::script())
            .arg("start")
            .arg(&dir)
            .output()
            .expect("bash must be on PATH");
        let cluster = Self {
            dir,
            url: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        };
        assert!(
            out.status.success(),
            "scripts/redis-cluster.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    /// The port of the master that serves `key`'s slot now.
    pub async fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = redis_query(&self.url, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).await;
        let nodes: String =
            redis_query(&self.url, &redis::cmd("CLUSTER").arg("NODES").clone()).await;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| match range.split_once('-') {
                Some((a, b)) => {
                    (a.parse().unwrap_or(u16::MAX)..=b.parse().unwrap_or(0)).contains(&slot)
                }
                None => range.parse() == Ok(slot),
            });
            if serves {
                let addr = fields[1].split('@').next().unwrap();
                return addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        }
        panic!("no master serves slot {slot}: {nodes}");
    }

    /// `kill -9` of the node on `port`.
    pub fn kill(&self, port: u16) {
        let pid = std::fs::read_to_string(self.dir.join(format!("{port}.pid"))).unwrap();
        let ok = std::process::Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -9 {pid}");
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(Self::script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}
