//! Both fronts, the lean one (the default for direct WebSocket connections)
//! and socketioxide (`--socketioxide-websocket`), speak the same protocol:
//! the heartbeat closes a peer that stops answering and releases its place,
//! keeps one that answers, and a CONNECT to another namespace is refused
//! while `/` stays open on the same connection. The lean front also bounds
//! the events of one connection handled at once.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, Gateway, RedisServer, eventually, spare_port, until_hub};
use futures_util::{SinkExt, StreamExt};
use liveline_gateway::lean::MAX_IN_FLIGHT;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const PING: Duration = Duration::from_millis(300);

async fn gateway(lean: bool) -> Gateway {
    Gateway::start_with(Backend::Memory, |c| {
        c.lean_websocket = lean;
        c.ping_interval = PING;
        c.ping_timeout = PING;
    })
    .await
}

/// The next text frame, or `None` once the server closed the connection.
async fn next(ws: &mut Ws, within: Duration) -> Option<String> {
    loop {
        let frame = tokio::time::timeout(within, ws.next())
            .await
            .expect("neither a frame nor a close within the wait");
        match frame {
            Some(Ok(Message::Text(t))) => return Some(t.to_string()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Opens a WebSocket session: the open packet, whose heartbeat is [`PING`].
async fn open(gw: &Gateway) -> Ws {
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", gw.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let open = next(&mut ws, Duration::from_secs(5)).await.unwrap();
    let open: serde_json::Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
    assert_eq!(open["pingInterval"], PING.as_millis() as u64, "{open}");
    assert_eq!(open["upgrades"], serde_json::json!([]), "{open}");
    ws
}

/// CONNECTs to `/` as `user`, reading up to the welcome (answering pings).
async fn connect(gw: &Gateway, ws: &mut Ws, user: &str) {
    let auth = serde_json::json!({ "token": gw.token(user) });
    ws.send(Message::text(format!("40{auth}"))).await.unwrap();
    loop {
        let frame = next(ws, Duration::from_secs(5)).await.expect("open");
        match frame.as_str() {
            "2" => ws.send(Message::text("3")).await.unwrap(),
            f if f.starts_with("40{\"sid\":") => {}
            r#"42["session:welcome:v1",{"protocol":1}]"# => return,
            f => panic!("unexpected frame while connecting: {f}"),
        }
    }
}

async fn a_peer_that_stops_answering_pings_is_closed_and_released(lean: bool) {
    let gw = gateway(lean).await;
    let mut ws = open(&gw).await;
    connect(&gw, &mut ws, "quiet").await;
    let hub = &gw.handle.state.hub;
    assert_eq!(hub.sockets_of("quiet").await, 1);
    // Pings are read and never answered: after one interval the ping, after
    // the timeout the close.
    let deadline = tokio::time::Instant::now() + (PING + PING) * 5;
    let mut pings = 0;
    while let Some(frame) = next(&mut ws, deadline - tokio::time::Instant::now()).await {
        // socketioxide says so (an Engine.IO close) before it closes.
        if frame == "1" {
            continue;
        }
        assert_eq!(frame, "2", "only pings come to an idle socket");
        pings += 1;
    }
    assert_eq!(pings, 1, "closed at the first unanswered ping");
    until_hub(hub, "the silent socket is released", || async {
        hub.sockets_of("quiet").await == 0
    })
    .await;
    gw.stop().await;
}

async fn pongs_keep_a_quiet_connection_open(lean: bool) {
    let gw = gateway(lean).await;
    let mut ws = open(&gw).await;
    connect(&gw, &mut ws, "steady").await;
    // Four rounds of the heartbeat, each answered.
    for _ in 0..4 {
        let frame = next(&mut ws, PING * 5).await.expect("still open");
        assert_eq!(frame, "2");
        ws.send(Message::text("3")).await.unwrap();
    }
    // Still served: the liveness probe is answered.
    ws.send(Message::text(r#"427["probe:v1"]"#)).await.unwrap();
    loop {
        match next(&mut ws, Duration::from_secs(5)).await.as_deref() {
            Some("2") => ws.send(Message::text("3")).await.unwrap(),
            Some(f) => {
                assert!(f.starts_with("437[{\"ok\":true"), "{f}");
                break;
            }
            None => panic!("closed although every ping was answered"),
        }
    }
    assert_eq!(gw.handle.state.hub.sockets_of("steady").await, 1);
    gw.stop().await;
}

async fn another_namespace_is_refused_and_the_connection_stays_usable(lean: bool) {
    let gw = gateway(lean).await;
    let mut ws = open(&gw).await;
    ws.send(Message::text("40/admin,")).await.unwrap();
    let refusal = loop {
        match next(&mut ws, Duration::from_secs(5)).await.as_deref() {
            Some("2") => ws.send(Message::text("3")).await.unwrap(),
            Some(f) => break f.to_owned(),
            None => panic!("closed instead of refusing the namespace"),
        }
    };
    assert_eq!(refusal, r#"44/admin,{"message":"Invalid namespace"}"#);
    connect(&gw, &mut ws, "nsp").await;
    assert_eq!(gw.handle.state.hub.sockets_of("nsp").await, 1);
    gw.stop().await;
}

macro_rules! on_both_fronts {
    ($($name:ident),* $(,)?) => {
        mod lean {
            $(#[tokio::test]
            async fn $name() { super::$name(true).await }) *
        }
        mod socketioxide {
            $(#[tokio::test]
            async fn $name() { super::$name(false).await }) *
        }
    };
}

on_both_fronts!(
    a_peer_that_stops_answering_pings_is_closed_and_released,
    pongs_keep_a_quiet_connection_open,
    another_namespace_is_refused_and_the_connection_stays_usable,
);

/// With Redis frozen, a flood of actions on one connection holds exactly
/// [`MAX_IN_FLIGHT`] handlers (the rest wait unread in the socket), still
/// after the connection's task ran again for a heartbeat; once Redis
/// answers, every action is acked.
#[tokio::test]
async fn the_lean_front_handles_at_most_max_in_flight_events_of_a_connection_and_loses_none() {
    let port = spare_port();
    let redis = RedisServer::start(port).await;
    let gw = Gateway::start_with(Backend::Redis, |c| {
        c.redis_url = Some(format!("redis://127.0.0.1:{port}"));
        c.redis_timeout = Duration::from_secs(30);
        c.action_rate_per_sec = 100_000.0;
        c.action_burst = 100_000;
        // A ping soon, and its pong (unread while the bound holds) not due
        // before the test ends.
        c.ping_interval = PING;
        c.ping_timeout = Duration::from_secs(30);
    })
    .await;
    let mut ws = open(&gw).await;
    connect(&gw, &mut ws, "flood").await;
    let metrics = &gw.handle.state.metrics;
    redis.signal("-STOP");
    let n = 4 * MAX_IN_FLIGHT;
    for i in 0..n {
        let action = json!(["job:start:v1", {"key": format!("flood-{i}"), "data": {"kind": "research", "params": {}}}]);
        ws.send(Message::text(format!("42{i}{action}")))
            .await
            .unwrap();
    }
    let bound = MAX_IN_FLIGHT as i64;
    eventually("the connection's handlers reach the bound", || async {
        metrics.events_in_flight() == bound
    })
    .await;
    // The connection's task runs again (it sends the next ping) and still
    // reads nothing more: without the bound, every frame sent above would
    // be read and handled by then.
    let frame = next(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(frame.as_deref(), Some("2"), "a heartbeat, nothing else");
    assert_eq!(metrics.events_in_flight(), bound);
    ws.send(Message::text("3")).await.unwrap();
    redis.signal("-CONT");
    let mut acked = std::collections::BTreeSet::new();
    while acked.len() < n {
        let frame = next(&mut ws, Duration::from_secs(10)).await.expect("open");
        if frame == "2" {
            ws.send(Message::text("3")).await.unwrap();
            continue;
        }
        // The jobs' queued statuses come too; the acks are counted.
        let Some(rest) = frame.strip_prefix("43") else {
            continue;
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let id: usize = rest[..digits].parse().unwrap();
        let args: Vec<serde_json::Value> = serde_json::from_str(&rest[digits..]).unwrap();
        assert_eq!(args[0]["ok"], true, "action {id}: {}", args[0]);
        assert!(acked.insert(id), "action {id} acked twice");
    }
    assert_eq!(metrics.events_in_flight(), 0);
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// The lean front reads each connection's first request head itself: what it
// takes, what it passes on to the HTTP server, what it refuses.

const WS_OPEN: &str = "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// Reads from `tcp` until `done` holds for what arrived (or the peer closes).
async fn read_until(tcp: &mut tokio::net::TcpStream, done: impl Fn(&str) -> bool) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&String::from_utf8_lossy(&got)) {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("the gateway answered within 5 s")
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

async fn raw(gw: &Gateway, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    tcp
}

#[tokio::test]
async fn requests_that_are_not_websocket_opens_reach_the_http_server_whole() {
    let gw = gateway(true).await;
    // Two pipelined requests in one write: the first read holds both.
    let two = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut tcp = raw(&gw, two.as_bytes()).await;
    let got = read_until(&mut tcp, |s| s.matches("HTTP/1.1 200").count() == 2).await;
    assert_eq!(got.matches("HTTP/1.1 200").count(), 2, "{got}");
    // Long-polling opens go to socketioxide.
    let poll = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut tcp = raw(&gw, poll.as_bytes()).await;
    let got = read_until(&mut tcp, |s| s.contains("\"sid\"")).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // A malformed head gets the HTTP server's 400.
    let mut tcp = raw(&gw, b"GET /x HTTP/1.1\r\nBad Header Line\r\n\r\n").await;
    let got = read_until(&mut tcp, |s| s.contains("\r\n\r\n")).await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    gw.stop().await;
}

#[tokio::test]
async fn a_websocket_open_is_read_in_pieces_or_with_the_first_frame_after_it() {
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let gw = gateway(true).await;
    // The head in pieces of 7 bytes.
    let head = format!("{WS_OPEN}\r\n");
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    for piece in head.as_bytes().chunks(7) {
        tcp.write_all(piece).await.unwrap();
        tcp.flush().await.unwrap();
    }
    let got = read_until(&mut tcp, |s| s.contains("\"pingInterval\"")).await;
    assert!(got.starts_with("HTTP/1.1 101"), "{got}");
    assert!(
        got.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{got}"
    );
    // The head and the CONNECT frame in one write: the frame is not lost.
    let auth = json!({ "token": gw.token("eager") });
    let mut frame = Frame::message(format!("40{auth}"), OpCode::Data(Data::Text), true);
    frame.header_mut().mask = Some([7, 1, 9, 3]);
    let mut bytes = head.into_bytes();
    frame.format(&mut bytes).unwrap();
    let mut tcp = raw(&gw, &bytes).await;
    let got = read_until(&mut tcp, |s| s.contains("session:welcome:v1")).await;
    assert!(got.contains("40{\"sid\":"), "{got}");
    assert!(got.contains("session:welcome:v1"), "{got}");
    gw.stop().await;
}

#[tokio::test]
async fn websocket_opens_with_a_bad_head_are_refused_and_closed() {
    let gw = Gateway::start_with(Backend::Memory, |c| {
        c.allowed_origins = vec!["https://app.example".to_owned()];
    })
    .await;
    let pad = "x".repeat(liveline_gateway::lean::MAX_HEAD);
    let cases = [
        (format!("{WS_OPEN}X-Pad: {pad}\r\n\r\n"), "HTTP/1.1 431"),
        (
            WS_OPEN.replace("Version: 13", "Version: 12") + "\r\n",
            "HTTP/1.1 400",
        ),
        (
            WS_OPEN.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "") + "\r\n",
            "HTTP/1.1 400",
        ),
        (
            format!("{WS_OPEN}Origin: https://evil.example\r\n\r\n"),
            "HTTP/1.1 403",
        ),
        (
            format!("{WS_OPEN}Origin: https://app.example\r\nOrigin: https://app.example\r\n\r\n"),
            "HTTP/1.1 403",
        ),
    ];
    for (head, want) in cases {
        let mut tcp = raw(&gw, head.as_bytes()).await;
        // Refused, then closed: the read ends.
        let got = read_until(&mut tcp, |_| false).await;
        assert!(got.starts_with(want), "{want}: {got}");
    }
    // A head just under the bound, from the allowed origin, is served.
    let fits = format!(
        "{WS_OPEN}Origin: https://app.example\r\nX-Pad: {}\r\n\r\n",
        &pad[..liveline_gateway::lean::MAX_HEAD - WS_OPEN.len() - 64]
    );
    let mut tcp = raw(&gw, fits.as_bytes()).await;
    let got = read_until(&mut tcp, |s| s.contains("\"pingInterval\"")).await;
    assert!(got.starts_with("HTTP/1.1 101"), "{got}");
    gw.stop().await;
}
