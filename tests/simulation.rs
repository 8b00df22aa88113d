//! Deterministic simulation of the sans-IO client against a model gateway.
//!
//! Each schedule is a seed. From it come a fake clock, the network's latency,
//! the faults and the app's calls; the client core and an in-test model of the
//! Liveline gateway speak Engine.IO/Socket.IO text frames to each other over a
//! modelled WebSocket (ordered and reliable: a lost frame means the socket
//! died). After a chaos phase every fault heals, the model publishes one more
//! event per stream, and the run continues until the client has caught up.
//! Then the checks run:
//!
//! - no event reaches the app twice or out of order per stream;
//! - every published event was delivered or is covered by a
//!   `stream:recovered:v1` with `recovered: false`;
//! - every action took effect at most once on the server, under one key, and
//!   ended exactly once for the app: acked with the server's recorded result
//!   (so it took effect exactly once), or expired;
//! - every state change is legal (the table in [`legal`], as docs/states.md
//!   draws them) and names the previous state correctly;
//! - the client never opens a second socket without closing the first.
//!
//! `SIM_SCHEDULES` sets how many schedules run (default 10000), `SIM_SEED`
//! runs one schedule with a trace of what happened, `SIM_THREADS` sets the
//! parallelism (default 2).
#![cfg(not(target_arch = "wasm32"))]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::fmt::Write as _;

use liveline::backoff::Backoff;
use liveline::contract::{self, ServerEvent};
use liveline::outbox::ActionError;
use liveline::protocol::{EioPacket, Packet, PacketType};
use liveline::{Client, Config, ConnectionState, Output};
use rand::rngs::SmallRng as StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

const PING_INTERVAL: u64 = 2_000;
const PING_TIMEOUT: u64 = 1_000;
const STREAMS: [&str; 3] = ["job:1", "job:2", "job:3"];
/// What the client sends the model when it closes a socket; not a real frame.
const CLOSE: &str = "<client closed>";
/// How long after healing the client has to catch up.
const CONVERGE_MS: u64 = 180_000;

#[test]
fn random_schedules_lose_nothing_duplicate_nothing_and_apply_actions_once() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed: u64 = seed.parse().expect("SIM_SEED is a number");
        let (result, trace, _) = run(seed, true);
        println!("{trace}");
        if let Err(e) = result {
            panic!("schedule {seed} failed: {e}");
        }
        return;
    }
    let schedules: u64 = std::env::var("SIM_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let threads: u64 = std::env::var("SIM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
        .max(1);
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut coverage: BTreeMap<&'static str, u64> = BTreeMap::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    let mut coverage: BTreeMap<&'static str, u64> = BTreeMap::new();
                    for seed in (t..schedules).step_by(usize::try_from(threads).unwrap_or(1)) {
                        let (result, _, seen) = run(seed, false);
                        if let Err(e) = result {
                            failures.push((seed, e));
                        }
                        for path in seen {
                            *coverage.entry(path).or_default() += 1;
                        }
                    }
                    (failures, coverage)
                })
            })
            .collect();
        for h in handles {
            let (f, c) = h.join().expect("no panic in a schedule");
            failures.extend(f);
            for (path, n) in c {
                *coverage.entry(path).or_default() += n;
            }
        }
    });
    println!(
        "{schedules} schedules in {:.1} s; schedules per path: {coverage:?}",
        started.elapsed().as_secs_f64()
    );
    if schedules >= 1_000 {
        for path in [
            "state:suspended",
            "state:offline",
            "state:failed",
            "state:closed",
            "recovered:false",
            "replay",
            "repeat key",
            "expired",
            "gap",
        ] {
            assert!(
                coverage.contains_key(path),
                "no schedule reached {path}: {coverage:?}"
            );
        }
    }
    failures.sort_by_key(|(s, _)| *s);
    for (seed, e) in failures.iter().take(8) {
        println!("seed {seed}: {e}");
    }
    if let Some((seed, e)) = failures.first() {
        panic!(
            "{} of {schedules} schedules failed; first: seed {seed}: {e}\n\
             replay it with: SIM_SEED={seed} cargo test -p liveline --test simulation -- --nocapture",
            failures.len()
        );
    }
}

/// The legal state changes, as docs/states.md draws them. A change to the same
/// state is a notice (a new attempt, the queue changed).
fn legal(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("idle", "connecting" | "closed")
            | (
                "connecting",
                "connected" | "reconnecting" | "offline" | "closed" | "failed"
            )
            | (
                "connected",
                "connected" | "reconnecting" | "offline" | "closed"
            )
            | (
                "reconnecting",
                "reconnecting" | "connected" | "suspended" | "offline" | "closed" | "failed"
            )
            | (
                "suspended",
                "reconnecting" | "offline" | "closed" | "failed"
            )
            | ("offline", "reconnecting" | "closed")
            | ("closed", "connecting")
            | ("failed", "connecting" | "closed")
    )
}

fn config() -> Config {
    let mut c = Config::new("http://model:1");
    c.backoff = Backoff {
        initial_ms: 100,
        max_ms: 3_000,
        factor: 2,
    };
    c.connect_timeout_ms = 3_000;
    c.suspend_after_ms = 8_000;
    c.suspended_retry_ms = 6_000;
    c.stable_after_ms = 5_000;
    c.ack_timeout_ms = 2_500;
    c.action_ttl_ms = 12_000;
    c.outbox_capacity = 64;
    c.default_heartbeat_ms = 5_000;
    c
}

/// Something scheduled to happen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// The app's `getToken` answers request `n`.
    Token(u64),
    /// The WebSocket finished opening.
    Opened(u64),
    /// A frame reaches the client.
    ToClient(u64, String),
    /// A frame reaches the server.
    ToServer(u64, String),
    /// The client's socket reports that it closed.
    Closed(u64),
    /// The server's heartbeat on a socket.
    Ping(u64),
    /// A worker publishes an event.
    Publish,
    /// A fault strikes.
    Fault,
    /// The app sends an action.
    AppSend,
    /// The app calls `connect()`.
    AppConnect,
    /// The network comes back.
    Online,
    /// The browser notices the network went away.
    OfflineNotice,
    /// The page becomes visible again.
    Visible,
    /// The gateway is back after a restart.
    ServerUp,
    /// Faults stop; everything heals.
    Heal,
}

#[derive(Debug, Default)]
struct Sock {
    /// The transport is up.
    alive: bool,
    /// The client closed it or heard it close; nothing more reaches it.
    client_gone: bool,
    /// The server ended it (token expired); it ignores what arrives.
    server_closed: bool,
    /// Last scheduled delivery time, each way (the socket is ordered).
    to_client_at: u64,
    to_server_at: u64,
    /// Frames toward the client are held until at least this time.
    stall_until: u64,
    /// CONNECT accepted.
    connected: bool,
    token_exp: u64,
}

#[derive(Debug)]
struct StreamLog {
    epoch: String,
    head: u64,
    /// Contiguous, ascending; maybe trimmed at the front.
    history: Vec<(u64, String)>,
}

#[derive(Debug)]
struct Published {
    stream: &'static str,
    epoch: String,
    seq: u64,
}

#[derive(Debug)]
struct Cover {
    stream: String,
    epoch: String,
    seq: u64,
    /// Index into `published` when the notice arrived: only events published
    /// before it can be covered by a notice of another epoch.
    published_before: usize,
}

#[derive(Debug)]
struct AppAction {
    n: u64,
    ended: Option<Result<Value, ActionError>>,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    client: Client,
    trace: Option<String>,
    violation: Option<String>,

    // schedule parameters
    latency: (u64, u64),
    publish_every: u64,
    fault_every: u64,
    send_every: u64,
    hidden_align: u64,
    history_limit: Option<usize>,
    chaos_until: u64,
    healed: bool,

    // network and page
    socks: HashMap<u64, Sock>,
    next_sock: u64,
    client_sock: Option<u64>,
    online: bool,
    visible: bool,

    // the app's getToken
    token_requests: u64,
    bad_tokens: u32,

    // the model gateway (+ Redis)
    up: bool,
    epoch_no: u64,
    streams: BTreeMap<&'static str, StreamLog>,
    /// key -> (app action number, recorded result)
    actions: HashMap<String, (u64, Value)>,
    /// app action number -> keys under which it took effect
    applied: HashMap<u64, Vec<String>>,
    next_job: u64,
    sent_events: Vec<String>,
    lose_acks: u32,
    lose_live: u32,
    published: Vec<Published>,

    // what the app saw
    positions: HashMap<String, (String, u64)>,
    covers: Vec<Cover>,
    delivered: HashSet<(String, String, u64)>,
    state: &'static str,
    app_actions: HashMap<u64, AppAction>,
    next_n: u64,
    /// Paths this schedule exercised, counted over all schedules.
    seen: std::collections::BTreeSet<&'static str>,
}

type Seen = std::collections::BTreeSet<&'static str>;

fn run(seed: u64, trace: bool) -> (Result<(), String>, String, Seen) {
    let mut sim = Sim::new(seed, trace);
    let result = sim.run();
    (result, sim.trace.unwrap_or_default(), sim.seen)
}

impl Sim {
    fn new(seed: u64, trace: bool) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let client = Client::new(config(), rng.random());
        let base = rng.random_range(1..60);
        let latency = (base, base + rng.random_range(0..40));
        let publish_every = rng.random_range(100..1_500);
        let fault_every = rng.random_range(300..6_000);
        let send_every = rng.random_range(300..5_000);
        let hidden_align = [1_000, 5_000, 20_000][rng.random_range(0..3)];
        let history_limit = rng.random_bool(0.3).then(|| rng.random_range(2..20));
        let chaos_until = rng.random_range(5_000..40_000);
        let streams = STREAMS
            .iter()
            .map(|s| {
                (
                    *s,
                    StreamLog {
                        epoch: "e0".to_owned(),
                        head: 0,
                        history: Vec::new(),
                    },
                )
            })
            .collect();
        Self {
            seed,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            client,
            trace: trace.then(String::new),
            violation: None,
            latency,
            publish_every,
            fault_every,
            send_every,
            hidden_align,
            history_limit,
            chaos_until,
            healed: false,
            socks: HashMap::new(),
            next_sock: 0,
            client_sock: None,
            online: true,
            visible: true,
            token_requests: 0,
            bad_tokens: 0,
            up: true,
            epoch_no: 0,
            streams,
            actions: HashMap::new(),
            applied: HashMap::new(),
            next_job: 0,
            sent_events: Vec::new(),
            lose_acks: 0,
            lose_live: 0,
            published: Vec::new(),
            positions: HashMap::new(),
            covers: Vec::new(),
            delivered: HashSet::new(),
            state: "idle",
            app_actions: HashMap::new(),
            next_n: 0,
            seen: std::collections::BTreeSet::new(),
        }
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            let _ = writeln!(t, "{:>7} {}", self.now, line());
        }
    }

    fn violate(&mut self, what: String) {
        self.log(|| format!("VIOLATION {what}"));
        if self.violation.is_none() {
            self.violation = Some(format!("at {} ms: {what}", self.now));
        }
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, ev)));
    }

    fn after(&mut self, d: u64, ev: Ev) {
        self.at(self.now + d, ev);
    }

    fn lat(&mut self) -> u64 {
        self.rng.random_range(self.latency.0..=self.latency.1)
    }

    fn run(&mut self) -> Result<(), String> {
        // The app watches its streams from their start.
        for s in STREAMS {
            self.client.restore_position(s, "e0", 0);
            self.positions.insert(s.to_owned(), ("e0".to_owned(), 0));
        }
        if self.rng.random_bool(0.3) {
            self.app_send();
        }
        self.client.connect(0);
        let d = self.publish_every;
        self.after(d, Ev::Publish);
        let d = self.fault_every;
        self.after(d, Ev::Fault);
        let d = self.send_every;
        self.after(d, Ev::AppSend);
        let t = self.chaos_until;
        self.at(t, Ev::Heal);

        let deadline = self.chaos_until + CONVERGE_MS;
        let mut steps = 0u64;
        loop {
            self.pump();
            if self.violation.is_some() {
                break;
            }
            if self.healed && self.converged() {
                break;
            }
            steps += 1;
            if steps > 500_000 {
                self.violate("livelock: too many steps".to_owned());
                break;
            }
            let ev_at = self.queue.peek().map(|Reverse((t, _, _))| *t);
            let timer_at = self.client.poll_timeout().map(|t| {
                let t = t.max(self.now);
                if self.visible {
                    t
                } else {
                    t.div_ceil(self.hidden_align) * self.hidden_align
                }
            });
            let next = match (ev_at, timer_at) {
                (Some(e), Some(t)) => Some(e.min(t)),
                (e, t) => e.or(t),
            };
            let Some(next) = next else {
                self.violate("nothing left to happen before convergence".to_owned());
                break;
            };
            if next > deadline {
                let why = self.why_not_converged();
                self.violate(format!("did not converge: {why}"));
                break;
            }
            if timer_at == Some(next) && ev_at.is_none_or(|e| e > next) {
                self.now = next;
                self.log(|| "client timer".to_owned());
                self.client.handle_timeout(next);
                continue;
            }
            let Some(Reverse((t, _, ev))) = self.queue.pop() else {
                continue;
            };
            self.now = t;
            self.handle(ev);
        }
        if self.violation.is_none() {
            self.final_checks();
        }
        match self.violation.take() {
            Some(v) => Err(format!(
                "{v} [seed {} latency {:?} publish every {} fault every {} history limit {:?}]",
                self.seed, self.latency, self.publish_every, self.fault_every, self.history_limit
            )),
            None => Ok(()),
        }
    }

    fn converged(&self) -> bool {
        self.client.state().is_connected()
            && self.client.queued() == 0
            && self.app_actions.values().all(|a| a.ended.is_some())
            && STREAMS.iter().all(|s| {
                let log = &self.streams[s];
                self.positions.get(*s) == Some(&(log.epoch.clone(), log.head))
            })
    }

    fn why_not_converged(&self) -> String {
        let streams: Vec<String> = STREAMS
            .iter()
            .map(|s| {
                let log = &self.streams[s];
                format!(
                    "{s}: app at {:?}, server at ({}, {})",
                    self.positions.get(*s),
                    log.epoch,
                    log.head
                )
            })
            .collect();
        format!(
            "state {:?}, queued {}, unended actions {}, {}",
            self.client.state(),
            self.client.queued(),
            self.app_actions
                .values()
                .filter(|a| a.ended.is_none())
                .count(),
            streams.join("; ")
        )
    }

    // ---- the driver: the client's output ----

    fn pump(&mut self) {
        while let Some(out) = self.client.poll_output() {
            self.log(|| format!("client -> {out:?}"));
            match out {
                Output::FetchToken => {
                    self.token_requests += 1;
                    let n = self.token_requests;
                    let d = self.rng.random_range(0..300);
                    self.after(d, Ev::Token(n));
                }
                Output::Open(_) => self.open_socket(),
                Output::SendText(text) => match self.client_sock {
                    Some(id) => self.send_to_server(id, text),
                    None => self.violate(format!("sent {text:?} with no socket")),
                },
                Output::SendBinary(_) => self.violate("sent a binary frame".to_owned()),
                Output::Close => {
                    if let Some(id) = self.client_sock.take() {
                        if let Some(s) = self.socks.get_mut(&id) {
                            s.client_gone = true;
                        }
                        self.send_to_server(id, CLOSE.to_owned());
                    }
                }
                Output::State(change) => self.on_state(
                    change.previous,
                    change.current.name(),
                    &change.reason,
                    &change.current,
                ),
                Output::Event(ev, _) => match ev.decode() {
                    Ok(ev) => self.on_event(ev),
                    Err(e) => self.violate(format!("undecodable event: {e}")),
                },
                Output::Invalid(e) => self.violate(format!("invalid event: {e}")),
                Output::Ack(id, result) => {
                    let result =
                        result.map(|raw| serde_json::from_str(&raw).unwrap_or(Value::Null));
                    self.on_ack(id, result)
                }
                Output::Queue(_) | Output::Server(_) => {}
                other => self.violate(format!("unknown output {other:?}")),
            }
        }
    }

    fn open_socket(&mut self) {
        if let Some(old) = self.client_sock {
            self.violate(format!("opened a socket while socket {old} is still open"));
        }
        self.next_sock += 1;
        let id = self.next_sock;
        self.client_sock = Some(id);
        let reachable = self.online && self.up;
        self.socks.insert(
            id,
            Sock {
                alive: reachable,
                ..Sock::default()
            },
        );
        let d = self.lat() * 2;
        if reachable {
            self.after(d, Ev::Opened(id));
        } else {
            self.after(d, Ev::Closed(id));
        }
    }

    fn send_to_server(&mut self, id: u64, text: String) {
        let d = self.lat();
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        if !s.alive {
            return;
        }
        let t = (self.now + d).max(s.to_server_at);
        s.to_server_at = t;
        self.at(t, Ev::ToServer(id, text));
    }

    fn send_to_client(&mut self, id: u64, text: String) {
        let d = self.lat();
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        if !s.alive || s.server_closed {
            return;
        }
        let t = (self.now + d).max(s.to_client_at).max(s.stall_until);
        s.to_client_at = t;
        self.at(t, Ev::ToClient(id, text));
    }

    /// The transport dies. With `notice`, the client hears about it;
    /// otherwise only its heartbeat can tell.
    fn kill_socket(&mut self, id: u64, notice: bool) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        if !s.alive {
            return;
        }
        s.alive = false;
        let t = s.to_client_at.max(self.now);
        if notice {
            let d = self.lat();
            self.at(t + d, Ev::Closed(id));
        }
    }

    fn current_live_socks(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .socks
            .iter()
            .filter(|(_, s)| s.alive && s.connected && !s.server_closed)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    // ---- what the app sees ----

    fn on_state(
        &mut self,
        previous: &'static str,
        current: &'static str,
        reason: &str,
        full: &ConnectionState,
    ) {
        if previous != self.state {
            self.violate(format!(
                "state change says previous {previous}, app saw {}",
                self.state
            ));
        }
        if !legal(previous, current) {
            self.violate(format!(
                "illegal transition {previous} -> {current} ({reason})"
            ));
        }
        if previous == "connected" && current == "connected" && reason != "queue changed" {
            self.violate(format!("connected again without a reason: {reason}"));
        }
        if let ConnectionState::Failed { .. } = full {
            let d = self.rng.random_range(500..3_000);
            self.after(d, Ev::AppConnect);
        }
        self.seen.insert(match current {
            "suspended" => "state:suspended",
            "offline" => "state:offline",
            "failed" => "state:failed",
            "closed" => "state:closed",
            _ => "state:other",
        });
        self.state = current;
    }

    fn on_event(&mut self, ev: ServerEvent) {
        match ev {
            ServerEvent::StreamRecovered(r) => {
                let Some((epoch, seq)) = self.positions.get(&r.stream).cloned() else {
                    self.violate(format!("notice for an unknown stream {r:?}"));
                    return;
                };
                if r.recovered {
                    if r.epoch != epoch || r.seq > seq {
                        self.violate(format!(
                            "recovered:true at ({}, {}) but the app is at ({epoch}, {seq})",
                            r.epoch, r.seq
                        ));
                    }
                    return;
                }
                if r.epoch == epoch && r.seq <= seq {
                    // Nothing beyond what the app has; harmless.
                    return;
                }
                self.seen.insert("recovered:false");
                self.positions
                    .insert(r.stream.clone(), (r.epoch.clone(), r.seq));
                self.covers.push(Cover {
                    stream: r.stream,
                    epoch: r.epoch,
                    seq: r.seq,
                    published_before: self.published.len(),
                });
            }
            ev => {
                let Some((stream, epoch, seq)) = ev.position() else {
                    self.violate(format!("unexpected event {ev:?}"));
                    return;
                };
                let expected = self.positions.get(stream).cloned();
                if expected.as_ref() != Some(&(epoch.to_owned(), seq.wrapping_sub(1))) {
                    let what =
                        if self
                            .delivered
                            .contains(&(stream.to_owned(), epoch.to_owned(), seq))
                        {
                            "delivered twice"
                        } else {
                            "out of order"
                        };
                    self.violate(format!(
                        "{stream} ({epoch}, {seq}) {what}; the app was at {expected:?}"
                    ));
                }
                self.positions
                    .insert(stream.to_owned(), (epoch.to_owned(), seq));
                self.delivered
                    .insert((stream.to_owned(), epoch.to_owned(), seq));
            }
        }
    }

    fn on_ack(&mut self, id: u64, result: Result<Value, ActionError>) {
        let Some(a) = self.app_actions.get_mut(&id) else {
            self.violate(format!("ack for unknown action {id}"));
            return;
        };
        if matches!(result, Err(ActionError::Expired)) {
            self.seen.insert("expired");
        }
        if let Some(first) = &a.ended {
            let msg = format!("action {id} ended twice: {first:?} then {result:?}");
            self.violate(msg);
            return;
        }
        a.ended = Some(result);
    }

    fn app_send(&mut self) {
        self.next_n += 1;
        let n = self.next_n;
        match self.client.send(
            contract::ACTION_JOB_START_V1,
            &json!({"n": n}).to_string(),
            self.now,
        ) {
            Ok(id) => {
                self.log(|| format!("app sends action {id} (n={n})"));
                self.app_actions.insert(id, AppAction { n, ended: None });
            }
            // A full outbox refuses with a clear error; that is allowed.
            Err(e) => self.log(|| format!("app send refused: {e}")),
        }
    }

    // ---- events ----

    fn handle(&mut self, ev: Ev) {
        self.log(|| format!("{ev:?}"));
        match ev {
            Ev::Token(_) => {
                let token = if self.bad_tokens > 0 {
                    self.bad_tokens -= 1;
                    if self.rng.random_bool(0.3) {
                        Err("auth service unavailable".to_owned())
                    } else {
                        Ok(format!("tok:{}", self.now.saturating_sub(1)))
                    }
                } else {
                    let life = self.rng.random_range(3_000..60_000);
                    Ok(format!("tok:{}", self.now + life))
                };
                self.client.handle_token(token, self.now);
            }
            Ev::Opened(id) => {
                let alive = self.socks.get(&id).is_some_and(|s| s.alive);
                if !alive {
                    return;
                }
                if self.client_sock == Some(id) {
                    self.client.handle_open(self.now);
                }
                let hs = format!(
                    r#"0{{"sid":"eio{id}","upgrades":[],"pingInterval":{PING_INTERVAL},"pingTimeout":{PING_TIMEOUT},"maxPayload":1000000}}"#
                );
                self.send_to_client(id, hs);
                self.after(PING_INTERVAL, Ev::Ping(id));
            }
            Ev::ToClient(id, text) => {
                let ok = self
                    .socks
                    .get(&id)
                    .is_some_and(|s| s.alive && !s.client_gone);
                if ok && self.client_sock == Some(id) {
                    self.client.handle_text(&text, self.now);
                }
            }
            Ev::ToServer(id, text) => self.server_frame(id, &text),
            Ev::Closed(id) => {
                if let Some(s) = self.socks.get_mut(&id) {
                    s.alive = false;
                    if self.client_sock == Some(id) && !s.client_gone {
                        s.client_gone = true;
                        self.client_sock = None;
                        self.client.handle_closed("socket closed", self.now);
                    }
                }
            }
            Ev::Ping(id) => self.ping(id),
            Ev::Publish => {
                self.publish();
                if !self.healed {
                    let d = self.rng.random_range(1..=self.publish_every * 2);
                    self.after(d, Ev::Publish);
                }
            }
            Ev::Fault => {
                if !self.healed {
                    self.fault();
                    let d = self.rng.random_range(1..=self.fault_every * 2);
                    self.after(d, Ev::Fault);
                }
            }
            Ev::AppSend => {
                if !self.healed {
                    self.app_send();
                    let d = self.rng.random_range(1..=self.send_every * 2);
                    self.after(d, Ev::AppSend);
                }
            }
            Ev::AppConnect => self.client.connect(self.now),
            Ev::Online => {
                if !self.online {
                    self.online = true;
                    self.client.handle_network(true, self.now);
                }
            }
            Ev::OfflineNotice => {
                if !self.online {
                    self.client.handle_network(false, self.now);
                }
            }
            Ev::Visible => {
                if !self.visible {
                    self.visible = true;
                    self.client.handle_visibility(true, self.now);
                }
            }
            Ev::ServerUp => self.up = true,
            Ev::Heal => self.heal(),
        }
    }

    fn heal(&mut self) {
        self.healed = true;
        self.bad_tokens = 0;
        self.lose_acks = 0;
        self.lose_live = 0;
        self.up = true;
        if !self.online {
            self.online = true;
            self.client.handle_network(true, self.now);
        }
        if !self.visible {
            self.visible = true;
            self.client.handle_visibility(true, self.now);
        }
        if matches!(self.state, "closed" | "failed") {
            self.client.connect(self.now);
        }
        // One more event per stream, so a tail lost in fan-out shows as a gap.
        for s in STREAMS {
            self.publish_on(s);
        }
    }

    fn fault(&mut self) {
        let live = self.current_live_socks();
        match self.rng.random_range(0..14) {
            0 | 1 => {
                // The socket resets (a frame was lost, so the socket died).
                if let Some(&id) = live.last() {
                    self.log(|| format!("fault: reset socket {id}"));
                    self.kill_socket(id, true);
                }
            }
            2 => {
                // Half-open: only the heartbeat can tell.
                if let Some(&id) = live.last() {
                    self.log(|| format!("fault: socket {id} goes silent"));
                    self.kill_socket(id, false);
                }
            }
            3 => {
                let stall = self.rng.random_range(100..5_000);
                self.log(|| format!("fault: frames to the client stall {stall} ms"));
                let until = self.now + stall;
                for s in self.socks.values_mut() {
                    s.stall_until = s.stall_until.max(until);
                }
            }
            4 | 5 => {
                // The server sends an event again.
                if let (Some(&id), false) = (live.last(), self.sent_events.is_empty()) {
                    let i = self.rng.random_range(0..self.sent_events.len());
                    let frame = self.sent_events[i].clone();
                    self.log(|| format!("fault: duplicate {frame}"));
                    self.send_to_client(id, frame);
                }
            }
            6 => {
                self.lose_live += self.rng.random_range(1..4);
                self.log(|| "fault: live fan-out loses events".to_owned());
            }
            7 => {
                self.lose_acks += 1;
                self.log(|| "fault: an ack is lost".to_owned());
            }
            8 => {
                let loss = self.rng.random_bool(0.5);
                let down = self.rng.random_range(200..8_000);
                self.log(|| format!("fault: gateway restart, history loss {loss}, down {down}"));
                self.up = false;
                let ids: Vec<u64> = self.socks.keys().copied().collect();
                for id in ids {
                    let notice = self.rng.random_bool(0.8);
                    self.kill_socket(id, notice);
                }
                if loss {
                    self.lose_history();
                }
                self.after(down, Ev::ServerUp);
            }
            9 => {
                self.log(|| "fault: redis loses history under a live gateway".to_owned());
                self.lose_history();
            }
            10 => {
                if self.online {
                    let d = self.rng.random_range(500..15_000);
                    self.log(|| format!("fault: offline for {d}"));
                    self.online = false;
                    let ids: Vec<u64> = self.socks.keys().copied().collect();
                    for id in ids {
                        self.kill_socket(id, false);
                    }
                    let notice = self.rng.random_range(0..1_000);
                    self.after(notice, Ev::OfflineNotice);
                    self.after(d, Ev::Online);
                }
            }
            11 => {
                if self.visible {
                    let d = self.rng.random_range(1_000..60_000);
                    self.log(|| format!("fault: hidden for {d}"));
                    self.visible = false;
                    self.client.handle_visibility(false, self.now);
                    self.after(d, Ev::Visible);
                }
            }
            12 => {
                self.bad_tokens += self.rng.random_range(1..3);
                self.log(|| "fault: getToken returns bad tokens".to_owned());
            }
            _ => {
                if self.rng.random_bool(0.5) {
                    self.log(|| "app: close, connect later".to_owned());
                    self.client.close(self.now);
                    let d = self.rng.random_range(100..5_000);
                    self.after(d, Ev::AppConnect);
                } else {
                    // An app send burst during whatever is going on.
                    for _ in 0..self.rng.random_range(1..5) {
                        self.app_send();
                    }
                }
            }
        }
    }

    // ---- the model gateway ----

    fn lose_history(&mut self) {
        self.epoch_no += 1;
        let epoch = format!("e{}", self.epoch_no);
        for log in self.streams.values_mut() {
            log.epoch = epoch.clone();
            log.head = 0;
            log.history.clear();
        }
    }

    fn publish(&mut self) {
        let s = STREAMS[self.rng.random_range(0..STREAMS.len())];
        self.publish_on(s);
    }

    fn publish_on(&mut self, stream: &'static str) {
        let now = self.now;
        let limit = self.history_limit;
        let log = self.streams.get_mut(stream).expect("known stream");
        log.head += 1;
        let seq = log.head;
        let env = json!({"stream": stream, "epoch": log.epoch, "seq": seq, "ts": now,
            "data": {"jobId": &stream[4..], "index": seq, "text": format!("t{seq}")}});
        let frame = format!("42{}", json!([contract::JOB_CHUNK_V1, env]));
        log.history.push((seq, frame.clone()));
        if let Some(limit) = limit {
            let excess = log.history.len().saturating_sub(limit);
            log.history.drain(..excess);
        }
        let epoch = log.epoch.clone();
        self.published.push(Published { stream, epoch, seq });
        for id in self.current_live_socks() {
            if self.lose_live > 0 {
                self.lose_live -= 1;
                self.seen.insert("gap");
                self.log(|| format!("fan-out loses {stream} {seq}"));
                continue;
            }
            self.send_event(id, frame.clone());
        }
    }

    fn send_event(&mut self, id: u64, frame: String) {
        self.sent_events.push(frame.clone());
        self.send_to_client(id, frame);
    }

    fn ping(&mut self, id: u64) {
        let Some(s) = self.socks.get(&id) else { return };
        if !s.alive || s.server_closed {
            return;
        }
        if s.connected && s.token_exp <= self.now {
            // The token expired on a live connection: disconnect, then close.
            self.send_to_client(id, "41".to_owned());
            if let Some(s) = self.socks.get_mut(&id) {
                s.server_closed = true;
                let t = s.to_client_at;
                let d = self.lat();
                self.at(t + d, Ev::Closed(id));
            }
            return;
        }
        self.send_to_client(id, "2".to_owned());
        self.after(PING_INTERVAL, Ev::Ping(id));
    }

    fn server_frame(&mut self, id: u64, text: &str) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        if !s.alive || s.server_closed {
            return;
        }
        if text == CLOSE {
            s.alive = false;
            return;
        }
        let packet = match EioPacket::decode(text) {
            Ok(EioPacket::Pong(_)) => return,
            Ok(EioPacket::Message(body)) => match Packet::decode(&body) {
                Ok((p, 0)) => p,
                other => {
                    self.violate(format!("server got a bad packet {text:?}: {other:?}"));
                    return;
                }
            },
            other => {
                self.violate(format!("server got a bad frame {text:?}: {other:?}"));
                return;
            }
        };
        match packet.kind {
            PacketType::Connect => {
                let auth = packet
                    .data
                    .and_then(|d| serde_json::from_str(&d).ok())
                    .unwrap_or(Value::Null);
                self.on_connect(id, auth)
            }
            PacketType::Event => {
                let connected = self.socks.get(&id).is_some_and(|s| s.connected);
                if !connected {
                    self.violate(format!("event before CONNECT was accepted: {text}"));
                    return;
                }
                let ack = packet.id;
                let Some((name, args, _)) = packet.into_event() else {
                    return;
                };
                let arg = args
                    .first()
                    .and_then(|a| serde_json::from_str(a).ok())
                    .unwrap_or(Value::Null);
                match (name.as_str(), ack) {
                    (contract::ACTION_STREAM_REPLAY_V1, _) => {
                        self.seen.insert("replay");
                        let stream = arg["stream"].as_str().unwrap_or_default().to_owned();
                        let epoch = arg["epoch"].as_str().unwrap_or_default().to_owned();
                        let seq = arg["seq"].as_u64().unwrap_or_default();
                        self.replay(id, &stream, &epoch, seq);
                    }
                    (contract::ACTION_JOB_START_V1, Some(ack)) => self.action(id, ack, &arg),
                    (contract::PROBE_V1, Some(ack)) => {
                        self.seen.insert("probe");
                        let frame = format!("43{ack}{}", json!([{"ok": true, "data": {}}]));
                        self.send_to_client(id, frame);
                    }
                    _ => self.violate(format!("server got an unexpected event {text}")),
                }
            }
            _ => self.violate(format!("server got an unexpected packet {text}")),
        }
    }

    fn on_connect(&mut self, id: u64, auth: Value) {
        let valid = auth["token"]
            .as_str()
            .and_then(|t| t.strip_prefix("tok:"))
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|exp| *exp > self.now);
        let Some(exp) = valid else {
            self.send_to_client(id, r#"44{"message":"unauthorized"}"#.to_owned());
            return;
        };
        if let Some(s) = self.socks.get_mut(&id) {
            s.connected = true;
            s.token_exp = exp;
        }
        self.send_to_client(id, format!(r#"40{{"sid":"sio{id}"}}"#));
        // Like the gateway, the welcome before anything else.
        self.send_to_client(
            id,
            format!(
                "42{}",
                json!([contract::SESSION_WELCOME_V1, {"protocol": 1}])
            ),
        );
        let mut resume: Vec<(String, String, u64)> = auth["resume"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(s, p)| {
                        (
                            s.clone(),
                            p["epoch"].as_str().unwrap_or_default().to_owned(),
                            p["seq"].as_u64().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        resume.sort();
        for (stream, epoch, seq) in resume {
            self.replay(id, &stream, &epoch, seq);
        }
    }

    /// Sends what follows `(epoch, seq)` on `stream`, then the outcome, the
    /// way the gateway resumes.
    fn replay(&mut self, id: u64, stream: &str, epoch: &str, seq: u64) {
        let notice = |recovered: bool, epoch: &str, seq: u64| {
            let n = json!({"stream": stream, "recovered": recovered, "epoch": epoch, "seq": seq});
            format!("42{}", json!([contract::STREAM_RECOVERED_V1, n]))
        };
        let Some(log) = self.streams.get(stream) else {
            let frame = notice(false, "", 0);
            self.send_to_client(id, frame);
            return;
        };
        let refused = notice(false, &log.epoch, log.head);
        if log.epoch != epoch || seq > log.head {
            self.send_to_client(id, refused);
            return;
        }
        let events: Vec<(u64, String)> = log
            .history
            .iter()
            .filter(|(s, _)| *s > seq)
            .cloned()
            .collect();
        let continues = events
            .first()
            .map_or(seq == log.head, |(s, _)| *s == seq + 1);
        if !continues {
            self.send_to_client(id, refused);
            return;
        }
        let done = notice(true, epoch, log.head);
        for (_, frame) in events {
            self.send_event(id, frame);
        }
        self.send_to_client(id, done);
    }

    fn action(&mut self, id: u64, ack: u64, arg: &Value) {
        let Some(key) = arg["key"].as_str() else {
            self.violate(format!("action without a key: {arg}"));
            return;
        };
        let n = arg["data"]["n"].as_u64().unwrap_or_default();
        let result = match self.actions.get(key).cloned() {
            Some((n0, result)) => {
                self.seen.insert("repeat key");
                if n0 != n {
                    self.violate(format!("key {key} reused for actions {n0} and {n}"));
                }
                result
            }
            None => {
                self.next_job += 1;
                let result = json!({"jobId": self.next_job.to_string()});
                self.actions.insert(key.to_owned(), (n, result.clone()));
                self.applied.entry(n).or_default().push(key.to_owned());
                self.log(|| format!("server applies action n={n} key={key}"));
                result
            }
        };
        if self.lose_acks > 0 {
            self.lose_acks -= 1;
            self.log(|| format!("ack {ack} lost"));
            return;
        }
        let frame = format!("43{ack}{}", json!([{"ok": true, "data": result}]));
        self.send_to_client(id, frame);
    }

    // ---- after the run ----

    fn final_checks(&mut self) {
        for (published_at, p) in self.published.iter().enumerate() {
            let key = (p.stream.to_owned(), p.epoch.clone(), p.seq);
            if self.delivered.contains(&key) {
                continue;
            }
            let covered = self.covers.iter().any(|c| {
                c.stream == p.stream
                    && if c.epoch == p.epoch {
                        p.seq <= c.seq
                    } else {
                        published_at < c.published_before
                    }
            });
            if !covered {
                let msg = format!(
                    "{} ({}, {}) was neither delivered nor covered by recovered:false",
                    p.stream, p.epoch, p.seq
                );
                self.violate(msg);
                return;
            }
        }
        let mut ids: Vec<u64> = self.app_actions.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let a = &self.app_actions[&id];
            let keys = self.applied.get(&a.n).cloned().unwrap_or_default();
            let msg = match &a.ended {
                _ if keys.len() > 1 => Some(format!(
                    "action {id} took effect {} times under keys {keys:?}",
                    keys.len()
                )),
                None => Some(format!("action {id} never ended")),
                Some(Ok(v)) => match keys.first() {
                    Some(k) if self.actions[k].1 == *v => None,
                    Some(k) => Some(format!(
                        "action {id} acked {v} but the server recorded {}",
                        self.actions[k].1
                    )),
                    None => Some(format!("action {id} acked {v} but never took effect")),
                },
                Some(Err(ActionError::Expired)) => None,
                Some(Err(e)) => Some(format!("action {id} failed: {e}")),
            };
            if let Some(msg) = msg {
                self.violate(msg);
                return;
            }
        }
    }
}
