//! Interop: the SDK core, driven by the native driver, against the official
//! Node `socket.io` v4 server (`tests/interop/server.mjs`, pinned in
//! `tests/interop/package-lock.json`; `scripts/setup.sh` installs it).
#![cfg(not(target_arch = "wasm32"))]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use liveline::contract::ServerEvent;
use liveline::native::{Event, NativeClient};
use liveline::{Client, Config, ConnectionState, Output};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

/// How long any one expected thing may take.
const WAIT: Duration = Duration::from_secs(15);

/// A `node tests/interop/server.mjs` child on a free port, killed on drop.
struct NodeServer {
    child: Child,
    /// Held so the server also exits if this process dies (stdin EOF).
    _stdin: Option<ChildStdin>,
    url: String,
}

impl NodeServer {
    fn start(recovery: bool) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
        assert!(
            dir.join("node_modules/socket.io/package.json").is_file(),
            "the Node socket.io server is not installed: {} has no node_modules/socket.io; \
             run `bash scripts/setup.sh` (or `cd tests/interop && npm ci`)",
            dir.display()
        );
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("server.mjs")).arg("0");
        if recovery {
            cmd.arg("--recovery");
        }
        let mut child = cmd
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs (is Node installed?)");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("server prints its port");
        let Some(port) = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse::<u16>().ok())
        else {
            let _ = child.kill();
            panic!("server.mjs did not start: {line:?}");
        };
        Self {
            child,
            _stdin: stdin,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token source that always answers `token` and counts its calls.
fn tokens(
    token: &'static str,
) -> (
    impl Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let f = move || -> BoxFuture<'static, Result<String, String>> {
        counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(token.to_owned()) })
    };
    (f, calls)
}

/// Events received so far, kept for the failure message.
struct Events {
    rx: UnboundedReceiver<Event>,
    seen: Vec<Event>,
}

impl Events {
    fn new(rx: UnboundedReceiver<Event>) -> Self {
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first next event `f` picks; panics with what came instead.
    async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(ev)) => {
                    let picked = f(&ev);
                    self.seen.push(ev);
                    if let Some(t) = picked {
                        return t;
                    }
                }
                Ok(None) => panic!(
                    "client stopped while waiting for {what}; saw {:#?}",
                    self.seen
                ),
                Err(_) => panic!("timed out waiting for {what}; saw {:#?}", self.seen),
            }
        }
    }

    async fn state(&mut self, name: &str) -> ConnectionState {
        self.expect(&format!("state {name}"), |ev| match ev {
            Event::State(s) if s.current.name() == name => Some(s.current.clone()),
            _ => None,
        })
        .await
    }

    /// The next event the SDK does not know, by name: its args and ack id.
    async fn unsupported(&mut self, name: &str) -> (Vec<Value>, Option<u64>) {
        self.expect(&format!("event {name}"), |ev| match ev {
            Event::Server(ServerEvent::Unsupported { name: n, args }, ack) if n == name => {
                Some((args.clone(), *ack))
            }
            _ => None,
        })
        .await
    }

    fn invalid(&self) -> Vec<&Event> {
        self.seen
            .iter()
            .filter(|e| matches!(e, Event::Invalid(_)))
            .collect()
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn connect(server: &NodeServer, token: &'static str) -> (NativeClient, Events, Arc<AtomicUsize>) {
    let (get_token, calls) = tokens(token);
    let (client, rx) = NativeClient::spawn(Config::new(server.url.clone()), get_token);
    (client, Events::new(rx), calls)
}

#[tokio::test]
async fn connects_with_auth_and_receives_events() {
    let server = NodeServer::start(false);
    let (client, mut events, calls) = connect(&server, "good");

    events.state("connected").await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one token per connect");
    let (welcome, ack) = events.unsupported("welcome").await;
    assert_eq!(ack, None);
    assert_eq!(welcome.len(), 1, "no offset without recovery: {welcome:?}");
    assert_eq!(welcome[0]["recovery"], json!(false));
    let status = events
        .expect("job:status:v1", |ev| match ev {
            Event::Server(ServerEvent::JobStatus(env), None) => Some(env.clone()),
            _ => None,
        })
        .await;
    assert_eq!((status.seq, status.epoch.as_str()), (1, "e1"));
    assert_eq!(status.data.message, "hi");

    // A plain event without an ack reaches the server's handler.
    client.emit("shout", vec![json!("hey"), json!({"n": 1})]);
    let (heard, _) = events.unsupported("heard").await;
    assert_eq!(heard, vec![json!(["hey", {"n": 1}])]);

    client.close();
    events.state("closed").await;
    assert!(events.invalid().is_empty(), "{:?}", events.invalid());
}

#[tokio::test]
async fn acks_both_ways() {
    let server = NodeServer::start(false);
    let (client, mut events, _) = connect(&server, "good");
    events.state("connected").await;

    // Client to server: the ack's arguments come back as the server sent them.
    let echoed = within(
        "echo ack",
        client.emit_with_ack("echo", vec![json!({"a": [1, 2]}), json!("two"), json!(3)]),
    )
    .await;
    assert_eq!(
        echoed,
        Ok(vec![json!({"a": [1, 2]}), json!("two"), json!(3)])
    );
    // An ack shaped like Liveline's is a plain server's value, nothing more.
    let shaped = within(
        "echo of an ok-shaped value",
        client.emit_with_ack("echo", vec![json!({"ok": true, "data": 1, "more": 2})]),
    )
    .await;
    assert_eq!(shaped, Ok(vec![json!({"ok": true, "data": 1, "more": 2})]));
    // A durable action reaches a plain server as `{key, data}`; its ack's
    // first argument is the result as it is.
    let received = within("order ack", client.send("order:v1", json!({"qty": 2})))
        .await
        .expect("acked");
    assert_eq!(received["received"]["data"], json!({"qty": 2}));
    assert_eq!(
        received["received"]["key"].as_str().map(str::len),
        Some(32),
        "{received}"
    );

    // Server to client: the event carries an ack id; the reply goes back.
    within("ask ack", client.emit_with_ack("ask", vec![json!(41)]))
        .await
        .expect("ask accepted");
    let (args, ack) = events.unsupported("ask").await;
    assert_eq!(args, vec![json!(41)]);
    let ack = ack.expect("the server asked for an ack");
    client.reply(ack, vec![json!(42), json!("and more")]);
    let (answer, _) = events.unsupported("answer").await;
    assert_eq!(answer, vec![json!([42, "and more"])]);
    client.close();
}

#[tokio::test]
async fn binary_event_arrives_with_its_bytes() {
    let server = NodeServer::start(false);
    let (client, mut events, _) = connect(&server, "good");
    events.state("connected").await;

    within("bin ack", client.emit_with_ack("bin", vec![]))
        .await
        .expect("bin accepted");
    let (args, _) = events.unsupported("bin").await;
    assert_eq!(args, vec![json!([1, 2, 3]), json!({"nested": [4, 5]})]);

    // The link is still in step after the binary frames.
    let echoed = within(
        "echo after binary",
        client.emit_with_ack("echo", vec![json!("still here")]),
    )
    .await;
    assert_eq!(echoed, Ok(vec![json!("still here")]));
    client.close();
}

#[tokio::test]
async fn events_from_a_recovery_server_decode_despite_the_offset_argument() {
    let server = NodeServer::start(true);
    let (client, mut events, _) = connect(&server, "good");
    events.state("connected").await;

    let (welcome, _) = events.unsupported("welcome").await;
    assert_eq!(welcome[0]["recovery"], json!(true));
    assert_eq!(
        welcome.len(),
        1,
        "the offset a recovery server appends is not the app's argument: {welcome:?}"
    );
    let status = events
        .expect("job:status:v1", |ev| match ev {
            Event::Server(ServerEvent::JobStatus(env), _) => Some(env.clone()),
            _ => None,
        })
        .await;
    assert_eq!(status.seq, 1);

    let sent = within(
        "ticks ack",
        client.emit_with_ack("ticks", vec![json!({"n": 3})]),
    )
    .await;
    assert_eq!(sent, Ok(vec![json!({"sent": 3})]));
    let mut ticks = Vec::new();
    for _ in 0..3 {
        let tick = events
            .expect("market:tick:v1", |ev| match ev {
                Event::Server(ServerEvent::MarketTick(env), _) => Some(env.clone()),
                _ => None,
            })
            .await;
        ticks.push((tick.stream, tick.seq, tick.data.symbol, tick.data.price));
    }
    assert_eq!(
        ticks,
        (1..=3)
            .map(|s| (
                "market:BTC-USD".to_owned(),
                s,
                "BTC-USD".to_owned(),
                100.0 + s as f64
            ))
            .collect::<Vec<_>>()
    );
    let (mystery, _) = events.unsupported("mystery:event:v7").await;
    assert_eq!(mystery[0], json!({"x": 1}));
    assert_eq!(
        mystery.len(),
        1,
        "unsupported events keep their arguments, not the offset: {mystery:?}"
    );
    assert!(events.invalid().is_empty(), "{:?}", events.invalid());
    client.close();
}

/// The `tick` numbers received, in order, until `n` of them came.
async fn ticks(events: &mut Events, name: &str, n: usize) -> Vec<i64> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let (args, _) = events.unsupported(name).await;
        assert_eq!(args.len(), 1, "one argument, no offset: {args:?}");
        got.push(args[0].as_i64().expect("a number"));
    }
    got
}

#[tokio::test]
async fn a_burst_of_a_thousand_plain_events_arrives_whole_and_in_order() {
    for recovery in [false, true] {
        let server = NodeServer::start(recovery);
        let (client, mut events, _) = connect(&server, "good");
        events.state("connected").await;
        client.emit("burst", vec![json!({"n": 1000})]);
        let got = ticks(&mut events, "tick", 1000).await;
        assert_eq!(got, (1..=1000).collect::<Vec<_>>(), "recovery {recovery}");
        client.close();
    }
}

#[tokio::test]
async fn connection_state_recovery_replays_what_was_emitted_while_away() {
    let server = NodeServer::start(true);
    let (client, mut events, _) = connect(&server, "good");
    let first = events
        .expect("connected", |ev| match ev {
            Event::State(s) if s.current.is_connected() => Some(s.clone()),
            _ => None,
        })
        .await;
    assert!(!first.recovered, "a first connection recovers nothing");
    // An event with an offset, so there is something to recover from.
    let (welcome, _) = events.unsupported("welcome").await;
    // The server closes the transport, then emits 50 events to the gone socket.
    client.emit("away", vec![json!(50)]);
    events.state("reconnecting").await;
    let back = events
        .expect("connected again", |ev| match ev {
            Event::State(s) if s.current.is_connected() => Some(s.clone()),
            _ => None,
        })
        .await;
    assert!(back.recovered, "{back:?}");
    assert_eq!(back.reason, "connected; the server recovered the session");
    let got = ticks(&mut events, "missed", 50).await;
    assert_eq!(got, (1..=50).collect::<Vec<_>>());
    // The server agrees: the same session id, recovered.
    let (again, _) = events.unsupported("welcome").await;
    assert_eq!(again[0]["sid"], welcome[0]["sid"]);
    assert_eq!(again[0]["recovered"], json!(true));
    client.close();
}

#[tokio::test]
async fn heartbeats_keep_an_idle_connection_alive() {
    let server = NodeServer::start(false);
    let (client, mut events, calls) = connect(&server, "good");
    events.state("connected").await;
    // The server pings every 500 ms and gives up 500 ms after a missed pong.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let echoed = within(
        "echo after idling",
        client.emit_with_ack("echo", vec![json!("awake")]),
    )
    .await;
    assert_eq!(echoed, Ok(vec![json!("awake")]));
    while let Ok(ev) = events.rx.try_recv() {
        events.seen.push(ev);
    }
    let changes: Vec<_> = events
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::State(s) => Some((s.current.name(), s.reason.as_str())),
            _ => None,
        })
        .filter(|(name, _)| *name != "connected")
        .collect();
    assert_eq!(changes, [("connecting", "connect called")]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    client.close();
}

#[tokio::test]
async fn a_rejected_token_gets_connect_error_then_failed() {
    let server = NodeServer::start(false);
    let (_client, mut events, calls) = connect(&server, "bad");

    let retrying = events.state("reconnecting").await;
    let ConnectionState::Reconnecting { last_error, .. } = retrying else {
        unreachable!()
    };
    assert_eq!(last_error, "connection refused: unauthorized");
    let failed = events.state("failed").await;
    assert_eq!(
        failed,
        ConnectionState::Failed {
            reason: "connection refused: unauthorized".into()
        }
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "asks for a fresh token once"
    );
    let names: Vec<_> = events
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::State(s) => Some(s.current.name()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["connecting", "reconnecting", "failed"]);
    // Failed is final: no further attempt.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(events.rx.try_recv().is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn reconnects_after_the_server_drops_the_socket() {
    let server = NodeServer::start(false);
    let (client, mut events, calls) = connect(&server, "good");
    events.state("connected").await;
    let (first, _) = events.unsupported("welcome").await;

    // The server closes the WebSocket.
    within(
        "drop ack",
        client.emit_with_ack("drop", vec![json!("transport")]),
    )
    .await
    .expect("drop accepted");
    events.state("reconnecting").await;
    // An action sent while disconnected waits in the outbox.
    let queued = client.send("order:v1", json!("queued while down"));
    events.state("connected").await;
    let (second, _) = events.unsupported("welcome").await;
    assert_ne!(first[0]["sid"], second[0]["sid"], "a new session");
    assert_eq!(
        within("queued action", queued).await.expect("acked")["received"]["data"],
        json!("queued while down")
    );

    // The server leaves the namespace (DISCONNECT) but keeps the transport.
    within(
        "drop ack",
        client.emit_with_ack("drop", vec![json!("namespace")]),
    )
    .await
    .expect("drop accepted");
    events.state("reconnecting").await;
    events.state("connected").await;
    let (third, _) = events.unsupported("welcome").await;
    assert_ne!(second[0]["sid"], third[0]["sid"], "a new session");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "a fresh token per connect");
    // The transport the server kept open was closed, not leaked.
    let mut transports = Value::Null;
    for _ in 0..10 {
        transports = within("transports ack", client.emit_with_ack("transports", vec![]))
            .await
            .expect("transports accepted")
            .remove(0);
        if transports == json!(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(transports, json!(1), "the stale transport is still open");
    client.close();
    events.state("closed").await;
}

/// A DISCONNECT packet from the server (`41`) or an Engine.IO close (`1`)
/// must tell the driver to close the socket: socket.io keeps the transport
/// open after `41`, and a driver must not hold two sockets.
#[test]
fn a_server_disconnect_tells_the_driver_to_close_the_socket() {
    for frame in ["41", "1"] {
        let mut c = Client::new(Config::new("http://x"), 1);
        c.connect(0);
        c.handle_token(Ok("t".into()), 0);
        c.handle_open(0);
        c.handle_text(
            r#"0{"sid":"s","upgrades":[],"pingInterval":1000,"pingTimeout":500,"maxPayload":1}"#,
            0,
        );
        c.handle_text(r#"40{"sid":"a"}"#, 0);
        while c.poll_output().is_some() {}
        c.handle_text(frame, 1);
        let out: Vec<_> = std::iter::from_fn(|| c.poll_output()).collect();
        assert_eq!(c.state().name(), "reconnecting");
        assert!(
            out.contains(&Output::Close),
            "after {frame:?} the driver is not told to close: {out:?}"
        );
    }
}

#[tokio::test]
async fn connects_from_a_chosen_local_address() {
    let server = NodeServer::start(false);
    let (get_token, _) = tokens("good");
    let local = "127.0.0.2".parse().expect("address");
    let (client, rx) =
        NativeClient::spawn_bound(Config::new(server.url.clone()), 7, Some(local), get_token);
    let mut events = Events::new(rx);
    events.state("connected").await;
    let echoed = within(
        "echo from 127.0.0.2",
        client.emit_with_ack("echo", vec![json!(42)]),
    )
    .await;
    assert_eq!(echoed, Ok(vec![json!(42)]));
    client.close();
}
