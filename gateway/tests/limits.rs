//! Limits: message size, action rate, connections per user, slow readers,
//! clients that never CONNECT.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, Client, Gateway};
use futures_util::StreamExt;
use liveline_gateway::broker::Hold;
use liveline_gateway::stream::{Stream, TopicRules};
use serde_json::json;

async fn oversized_message_closes_the_socket(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.max_message_bytes = 4096).await;
    let mut alice = gw.connect("alice").await;
    let big =
        json!({"key": "k", "data": {"kind": "research", "params": {"q": "x".repeat(10_000)}}});
    alice.emit("job:start:v1", big).await;
    alice.until_closed(Duration::from_secs(3)).await;
    // A normal-sized message on another socket is fine.
    let mut bob = gw.connect("bob").await;
    let ack = bob
        .call(
            "job:cancel:v1",
            json!({"key": "k", "data": {"jobId": "nope"}}),
        )
        .await;
    assert_eq!(ack["error"]["code"], "not_found");
    bob.close().await;
    gw.stop().await;
}

async fn rate_limited_user_gets_rate_limited_acks_then_is_disconnected_others_unaffected(
    backend: Backend,
) {
    let gw = Gateway::start_with(backend, |c| {
        c.action_rate_per_sec = 0.5;
        c.action_burst = 3;
        c.rate_limit_strikes = 3;
    })
    .await;
    let mut alice = gw.connect("alice").await;
    let mut bob = gw.connect("bob").await;
    let cancel = json!({"key": "k", "data": {"jobId": "nope"}});
    let mut codes = Vec::new();
    for _ in 0..6 {
        let ack = alice.call("job:cancel:v1", cancel.clone()).await;
        codes.push(ack["error"]["code"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        codes,
        [
            "not_found",
            "not_found",
            "not_found",
            "rate_limited",
            "rate_limited",
            "rate_limited"
        ]
    );
    // Bob has his own budget.
    let ack = bob.call("job:cancel:v1", cancel.clone()).await;
    assert_eq!(ack["error"]["code"], "not_found");
    // Going on closes alice's socket.
    alice.emit("job:cancel:v1", cancel.clone()).await;
    alice.until_closed(Duration::from_secs(3)).await;
    let ack = bob.call("job:cancel:v1", cancel).await;
    assert_eq!(ack["error"]["code"], "not_found");
    bob.close().await;
    gw.stop().await;
}

async fn connections_per_user_are_capped(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.max_connections_per_user = 2).await;
    let a1 = gw.connect("alice").await;
    let a2 = gw.connect("alice").await;
    let refused = Client::connect(gw.addr, json!({"token": gw.token("alice")}))
        .await
        .err()
        .expect("third socket must be refused");
    assert_eq!(refused, json!({"message": "too_many_connections"}));
    let b = gw.connect("bob").await;
    a1.close().await;
    let hub = &gw.handle.state.hub;
    common::until_hub(hub, "the node counts the closed socket out", || async {
        hub.sockets_of("alice").await == 1
    })
    .await;
    let again = Client::connect(gw.addr, json!({"token": gw.token("alice")}))
        .await
        .expect("a slot frees up when a socket leaves");
    for c in [a2, b, again] {
        c.close().await;
    }
    gw.stop().await;
}

/// A user with a socket on each of three nodes (one Redis, or the cluster)
/// meets one action limit in total, not one per node.
async fn a_user_on_three_nodes_meets_one_shared_action_limit(backend: Backend) {
    let limit = |c: &mut liveline_gateway::Config| {
        c.action_rate_per_sec = 0.5;
        c.action_burst = 3;
        c.rate_limit_strikes = 20;
    };
    let first = Gateway::start_with(backend, limit).await;
    let prefix = first.config.key_prefix.clone();
    let mut nodes = vec![first];
    for _ in 0..2 {
        let prefix = prefix.clone();
        nodes.push(
            Gateway::start_with(backend, move |c| {
                limit(c);
                c.key_prefix = prefix;
            })
            .await,
        );
    }
    let mut sockets = Vec::new();
    for node in &nodes {
        sockets.push(node.connect("alice").await);
    }
    let started = std::time::Instant::now();
    let cancel = json!({"key": "k", "data": {"jobId": "nope"}});
    let (mut done, mut limited) = (0, Vec::new());
    for _ in 0..3 {
        for socket in &mut sockets {
            let ack = socket.call("job:cancel:v1", cancel.clone()).await;
            match ack["error"]["code"].as_str().unwrap() {
                "not_found" => done += 1,
                "rate_limited" => limited.push(ack["error"]["message"].clone()),
                other => panic!("unexpected {other}: {ack}"),
            }
        }
    }
    // Three at once, then one per two seconds: per node it would be nine.
    let refilled = (started.elapsed().as_secs_f64() * 0.5).floor() as usize;
    assert!(
        (3..=3 + refilled).contains(&done),
        "{done} actions went through"
    );
    assert!(
        limited
            .iter()
            .all(|m| m == "too many actions across your connections; slow down"),
        "{limited:?}"
    );
    for socket in sockets {
        socket.close().await;
    }
    for node in nodes {
        node.stop().await;
    }
}

/// A user's connections on three nodes together meet one cap
/// (`--max-connections-per-user`), not one per node.
async fn a_user_on_three_nodes_meets_one_shared_connection_cap(backend: Backend) {
    let cap = |c: &mut liveline_gateway::Config| c.max_connections_per_user = 2;
    let first = Gateway::start_with(backend, cap).await;
    let prefix = first.config.key_prefix.clone();
    let mut nodes = vec![first];
    for _ in 0..2 {
        let prefix = prefix.clone();
        nodes.push(
            Gateway::start_with(backend, move |c| {
                cap(c);
                c.key_prefix = prefix;
            })
            .await,
        );
    }
    let auth = |node: &Gateway| json!({"token": node.token("alice")});
    let on_first = nodes[0].connect("alice").await;
    let on_second = nodes[1].connect("alice").await;
    let refused = Client::connect(nodes[2].addr, auth(&nodes[2]))
        .await
        .err()
        .expect("a third socket on a third node is refused");
    assert_eq!(refused, json!({"message": "too_many_connections"}));
    // Another user is not affected.
    let bob = nodes[2].connect("bob").await;
    on_first.close().await;
    let hub = &nodes[0].handle.state.hub;
    common::until_hub(
        hub,
        "the first node counts the closed socket out",
        || async { hub.sockets_of("alice").await == 0 },
    )
    .await;
    let again = Client::connect(nodes[2].addr, auth(&nodes[2]))
        .await
        .expect("the freed place can be taken on any node");
    for c in [on_second, bob, again] {
        c.close().await;
    }
    for node in nodes {
        node.stop().await;
    }
}

/// A connection whose node stopped renewing it (it died) lapses, also while
/// the user's other places are renewed (and their key lives on).
async fn a_connection_not_renewed_lapses(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let broker = &gw.handle.state.broker;
    let ttl = Duration::from_millis(300);
    let hold = |id: &'static str| broker.hold_connection("carol", id, 2, ttl, 0);
    assert_eq!(hold("dead:1").await.unwrap(), Hold::Held);
    assert_eq!(hold("kept:1").await.unwrap(), Hold::Held);
    assert_eq!(hold("live:1").await.unwrap(), Hold::Full);
    broker
        .renew_connections("carol", &["dead:1".to_owned()], ttl)
        .await
        .unwrap();
    common::eventually("the unrenewed connection lapses", || async {
        broker
            .renew_connections("carol", &["kept:1".to_owned()], ttl)
            .await
            .unwrap();
        hold("live:1").await.unwrap() == Hold::Held
    })
    .await;
    // The kept place still counts: the cap is full again.
    assert_eq!(hold("more:1").await.unwrap(), Hold::Full);
    gw.stop().await;
}

/// A refused connection leaves nothing behind: once a place is free, the
/// next connection takes it and the one refused before is still refused.
async fn a_refused_connection_takes_no_place(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let broker = &gw.handle.state.broker;
    let ttl = Duration::from_secs(60);
    let hold = |id: &'static str| broker.hold_connection("fay", id, 1, ttl, 0);
    assert_eq!(hold("n:1").await.unwrap(), Hold::Held);
    assert_eq!(hold("n:2").await.unwrap(), Hold::Full);
    broker.drop_connection("fay", "n:1").await.unwrap();
    assert_eq!(hold("n:3").await.unwrap(), Hold::Held);
    assert_eq!(hold("n:2").await.unwrap(), Hold::Full);
    // Held already: renewed, not refused.
    assert_eq!(hold("n:3").await.unwrap(), Hold::Held);
    gw.stop().await;
}

/// The revocation check and the place are one step: a token issued at or
/// before the user's revocation (to the second) takes no place, one issued a
/// second later does; another user's tokens are not affected.
async fn a_revoked_token_takes_no_place(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let broker = &gw.handle.state.broker;
    let ttl = Duration::from_secs(60);
    let at = 1_700_000_000;
    broker
        .revoke_tokens("dave", at, Duration::from_secs(60))
        .await
        .unwrap();
    let hold = |user: &'static str, id: &'static str, issued: u64| {
        broker.hold_connection(user, id, 1, ttl, issued)
    };
    assert_eq!(hold("dave", "n:1", 0).await.unwrap(), Hold::Revoked);
    assert_eq!(hold("dave", "n:2", at).await.unwrap(), Hold::Revoked);
    assert_eq!(hold("erin", "n:3", at).await.unwrap(), Hold::Held);
    // The refused tries left dave's one place free.
    assert_eq!(hold("dave", "n:4", at + 1).await.unwrap(), Hold::Held);
    assert_eq!(hold("dave", "n:5", at + 1).await.unwrap(), Hold::Full);
    // Held already: renewed, whatever the cap.
    assert_eq!(hold("dave", "n:4", at + 1).await.unwrap(), Hold::Held);
    gw.stop().await;
}

/// The node renews every socket's place within one round of renewal buckets
/// (spread over a third of the place's lifetime): a place made to look
/// lapsed in Redis is back to a full lifetime after the round.
#[tokio::test]
async fn the_node_renews_every_place_within_a_round_of_buckets() {
    use liveline_gateway::hub::{CONNECTION_TTL, RENEW_BUCKETS};
    let gw = Gateway::start(Backend::Redis).await;
    let users = ["dave", "erin", "frank", "grace"];
    let mut clients = Vec::new();
    for u in users {
        clients.push(gw.connect(u).await);
    }
    let key = |u: &str| format!("{}{{u:{}:{u}}}:conns", gw.config.key_prefix, u.len());
    let url = common::REDIS_URL;
    for u in users {
        let places: Vec<String> =
            common::redis_query(url, redis::cmd("ZRANGE").arg(key(u)).arg(0).arg(-1)).await;
        assert_eq!(places.len(), 1, "{u}: {places:?}");
        let _: i64 =
            common::redis_query(url, redis::cmd("ZADD").arg(key(u)).arg(1).arg(&places[0])).await;
    }
    let before = liveline_gateway::auth::unix_secs() * 1000;
    for tick in 0..RENEW_BUCKETS {
        gw.handle.state.hub.renew_connections(tick).await;
    }
    for u in users {
        let scores: Vec<(String, f64)> = common::redis_query(
            url,
            redis::cmd("ZRANGE")
                .arg(key(u))
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES"),
        )
        .await;
        let deadline = scores[0].1 as u64;
        assert!(
            deadline >= before + CONNECTION_TTL.as_millis() as u64,
            "{u}: renewed to {deadline}, from {before}"
        );
    }
    for c in clients {
        c.close().await;
    }
    gw.stop().await;
}

on_every_broker!(
    a_connection_not_renewed_lapses,
    a_refused_connection_takes_no_place,
    a_revoked_token_takes_no_place,
    oversized_message_closes_the_socket,
    rate_limited_user_gets_rate_limited_acks_then_is_disconnected_others_unaffected,
    connections_per_user_are_capped,
);

mod shared {
    use super::Backend;

    #[tokio::test]
    async fn on_redis() {
        super::a_user_on_three_nodes_meets_one_shared_action_limit(Backend::Redis).await;
    }

    #[tokio::test]
    async fn on_cluster() {
        super::a_user_on_three_nodes_meets_one_shared_action_limit(Backend::Cluster).await;
    }

    #[tokio::test]
    async fn connections_on_redis() {
        super::a_user_on_three_nodes_meets_one_shared_connection_cap(Backend::Redis).await;
    }

    #[tokio::test]
    async fn connections_on_cluster() {
        super::a_user_on_three_nodes_meets_one_shared_connection_cap(Backend::Cluster).await;
    }
}

#[tokio::test]
async fn websocket_that_never_sends_connect_is_closed_after_connect_timeout() {
    let gw = Gateway::start_with(Backend::Memory, |c| {
        c.connect_timeout = Duration::from_millis(300)
    })
    .await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", gw.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
                | None
                | Some(Err(_)) => {
                    return;
                }
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after the connect timeout");
    gw.stop().await;
}

/// Waits for the server to close `tcp`; how long it took.
async fn closed_within(tcp: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let start = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        // Any answer (a 408) is read and skipped; the end is EOF or a reset.
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .ok()
    .map(|()| start.elapsed())
}

#[tokio::test]
async fn connections_that_never_finish_their_request_headers_are_closed() {
    use tokio::io::AsyncWriteExt;
    let gw = Gateway::start_with(Backend::Memory, |c| {
        c.header_timeout = Duration::from_millis(500)
    })
    .await;
    // Nothing at all, then half an upgrade request.
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    partial
        .write_all(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for tcp in [&mut silent, &mut partial] {
        let took = closed_within(tcp, Duration::from_secs(5)).await;
        assert!(
            took.is_some(),
            "still open 5 s after a 500 ms header timeout"
        );
    }
    // A WebSocket that finished its upgrade is not subject to it.
    let mut alice = gw.connect("alice").await;
    assert!(
        alice
            .maybe_event(Duration::from_millis(1200))
            .await
            .is_none()
    );
    let ack = alice
        .call(
            "job:cancel:v1",
            json!({"key": "k", "data": {"jobId": "nope"}}),
        )
        .await;
    assert_eq!(ack["error"]["code"], "not_found");
    alice.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn slow_reader_is_cut_off_and_disconnected_while_a_fast_one_gets_everything() {
    let gw = Gateway::start_with(Backend::Memory, |c| {
        c.max_buffer_packets = 16;
        c.history_len = 10;
    })
    .await;
    let mut slow = gw.connect("alice").await;
    let mut fast = gw.connect("alice").await;
    let publisher = gw.handle.state.publisher.clone();
    let blob = "x".repeat(16 * 1024);
    let total = 1500u64;
    // The fast socket reads each event as it comes; the slow one never reads.
    for seq in 1..=total {
        let stream = Stream::for_publisher("blob", Some("alice"), &TopicRules::default()).unwrap();
        publisher
            .publish(&stream, "blob:part:v1", json!({"i": seq, "blob": &blob}))
            .await
            .unwrap();
        let (_, env) = fast.event().await;
        assert_eq!(env["seq"], seq);
    }
    let metrics = gw.handle.state.metrics.render();
    assert!(
        metrics.contains("liveline_slow_clients_disconnected_total 1"),
        "{metrics}"
    );
    // Once it reads again it gets what was queued, then DISCONNECT: bounded, no growth.
    let seen = slow.until_closed(Duration::from_secs(15)).await;
    assert!((seen.len() as u64) < total, "the slow socket was cut off");
    for (i, (_, env)) in seen.iter().enumerate() {
        assert_eq!(env["seq"], (i + 1) as u64, "what it got has no hole");
    }
    fast.close().await;
    gw.stop().await;
}
