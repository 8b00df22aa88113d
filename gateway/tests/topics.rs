//! Topics: `topic:subscribe:v1` joins a topic's live events (here the demo's
//! public `market:{symbol}` ticks), `topic:unsubscribe:v1` leaves, resume
//! replays a topic's bounded history; a non-public topic needs the token's
//! `topics` claim.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, Client, Gateway};
use serde_json::{Value, json};

async fn start(backend: Backend) -> Gateway {
    Gateway::start_with(backend, |c| c.demo.market_tick = Duration::from_millis(40)).await
}

async fn subscribe(client: &mut Client, topic: &str) -> Value {
    client
        .call(
            "topic:subscribe:v1",
            json!({"key": format!("sub-{topic}"), "data": {"topic": topic}}),
        )
        .await
}

async fn ticks(client: &mut Client, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let (name, env) = client.event().await;
        if name == "market:tick:v1" {
            out.push(env);
        }
    }
    out
}

async fn subscribed_socket_gets_ticks_with_contiguous_seq(backend: Backend) {
    let gw = start(backend).await;
    let mut alice = gw.connect("alice").await;
    let ack = subscribe(&mut alice, "market:BTC-USD").await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["data"]["topic"], "market:BTC-USD");
    let head = ack["data"]["seq"].as_u64().unwrap();
    let got = ticks(&mut alice, 5).await;
    for w in got.windows(2) {
        assert_eq!(
            w[1]["seq"].as_u64().unwrap(),
            w[0]["seq"].as_u64().unwrap() + 1,
            "{got:?}"
        );
    }
    for t in &got {
        assert_eq!(t["stream"], "market:BTC-USD");
        assert_eq!(t["data"]["symbol"], "BTC-USD");
        assert!(t["data"]["price"].as_f64().unwrap() > 0.0);
    }
    // Nothing at or below the acked head is missing: the first live tick
    // continues it (or repeats it, which the client drops).
    assert!(got[0]["seq"].as_u64().unwrap() <= head + 1, "{ack} {got:?}");
    if head > 0 {
        assert_eq!(got[0]["epoch"], ack["data"]["epoch"]);
    }
    // Only the subscribed market arrives.
    assert!(got.iter().all(|t| t["stream"] == "market:BTC-USD"));
    // Another user who did not subscribe gets nothing.
    let mut bob = gw.connect("bob").await;
    assert!(bob.maybe_event(Duration::from_millis(200)).await.is_none());
    bob.close().await;
    alice.close().await;
    gw.stop().await;
}

async fn unsubscribe_stops_ticks(backend: Backend) {
    let gw = start(backend).await;
    let mut alice = gw.connect("alice").await;
    subscribe(&mut alice, "market:ETH-USD").await;
    ticks(&mut alice, 2).await;
    let ack = alice
        .call(
            "topic:unsubscribe:v1",
            json!({"key": "u-1", "data": {"topic": "market:ETH-USD"}}),
        )
        .await;
    assert_eq!(
        ack,
        json!({"ok": true, "data": {"topic": "market:ETH-USD"}})
    );
    // Ticks already queued before the ack may still be read; then silence.
    while alice
        .maybe_event(Duration::from_millis(150))
        .await
        .is_some()
    {}
    assert!(
        alice
            .maybe_event(Duration::from_millis(300))
            .await
            .is_none()
    );
    assert_eq!(gw.handle.state.hub.subscribed_topics().await, 0);
    alice.close().await;
    gw.stop().await;
}

async fn two_sockets_share_one_node_subscription(backend: Backend) {
    let gw = start(backend).await;
    let mut a = gw.connect("alice").await;
    let mut b = gw.connect("bob").await;
    subscribe(&mut a, "market:SOL-USD").await;
    subscribe(&mut b, "market:SOL-USD").await;
    // A repeat on the same socket is a no-op.
    assert_eq!(subscribe(&mut a, "market:SOL-USD").await["ok"], true);
    assert_eq!(gw.handle.state.hub.subscribed_topics().await, 1);
    ticks(&mut b, 2).await;
    a.close().await;
    // Bob still gets ticks after Alice left.
    ticks(&mut b, 3).await;
    b.close().await;
    let hub = &gw.handle.state.hub;
    common::until_hub(hub, "the node unsubscribes the topic", || async {
        hub.subscribed_topics().await == 0
    })
    .await;
    gw.stop().await;
}

async fn invalid_topics_are_refused(backend: Backend) {
    let gw = start(backend).await;
    let mut alice = gw.connect("alice").await;
    // Not under a topic prefix: a private stream name, not a topic.
    let ack = subscribe(&mut alice, "user:bob").await;
    assert_eq!(ack["error"]["code"], "invalid_payload", "{ack}");
    let ack = subscribe(&mut alice, "market:{x}").await;
    assert_eq!(ack["error"]["code"], "invalid_payload", "{ack}");
    let ack = alice
        .call("topic:subscribe:v1", json!({"key": "k", "data": {}}))
        .await;
    assert_eq!(ack["error"]["code"], "invalid_payload", "{ack}");
    assert!(
        alice
            .maybe_event(Duration::from_millis(200))
            .await
            .is_none()
    );
    alice.close().await;
    gw.stop().await;
}

async fn topic_position_resumes_from_history(backend: Backend) {
    let gw = start(backend).await;
    let mut alice = gw.connect("alice").await;
    subscribe(&mut alice, "market:BTC-USD").await;
    let got = ticks(&mut alice, 2).await;
    let (epoch, seq) = (
        got[1]["epoch"].as_str().unwrap().to_owned(),
        got[1]["seq"].as_u64().unwrap(),
    );
    alice.close().await;
    // Ticks go on while alice is away: bob sees two more.
    let mut bob = gw.connect("bob").await;
    subscribe(&mut bob, "market:BTC-USD").await;
    ticks(&mut bob, 2).await;
    bob.close().await;
    let auth = json!({"token": gw.token("alice"), "resume": {"market:BTC-USD": {"epoch": epoch, "seq": seq}}});
    let mut again = Client::connect(gw.addr, auth).await.unwrap();
    let replayed = again.events_until(|n, _| n == "stream:recovered:v1").await;
    let (_, outcome) = replayed.last().unwrap();
    assert_eq!(outcome["recovered"], true, "{replayed:?}");
    let seqs: Vec<u64> = replayed[..replayed.len() - 1]
        .iter()
        .map(|(_, e)| e["seq"].as_u64().unwrap())
        .collect();
    assert!(!seqs.is_empty());
    assert_eq!(seqs[0], seq + 1, "{seqs:?}");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    again.close().await;
    // A position older than the bounded history cannot be recovered.
    let auth = json!({"token": gw.token("alice"), "resume": {"market:BTC-USD": {"epoch": "other", "seq": 1}}});
    let mut stale = Client::connect(gw.addr, auth).await.unwrap();
    let (name, outcome) = stale.event().await;
    assert_eq!(name, "stream:recovered:v1");
    assert_eq!(outcome["recovered"], false);
    assert_eq!(outcome["epoch"], epoch.as_str(), "tells the current epoch");
    stale.close().await;
    gw.stop().await;
}

/// A worker publishes on a public topic over HTTP (no user): every
/// subscribed socket gets it, with the seq after the acked head.
async fn published_topic_event_reaches_subscribers(backend: Backend) {
    use tower::ServiceExt;
    let gw = Gateway::start_with(backend, |c| {
        c.demo.enabled = false;
        c.public_topic_prefixes = vec!["market:".to_owned()];
    })
    .await;
    let mut alice = gw.connect("alice").await;
    let mut bob = gw.connect("bob").await;
    let ack = subscribe(&mut alice, "market:SOL-USD").await;
    assert_eq!(
        ack["data"]["seq"], 0,
        "no ticks without a demo worker: {ack}"
    );
    subscribe(&mut bob, "market:SOL-USD").await;
    let body = json!({"stream": "market:SOL-USD", "event": "market:tick:v1", "data": {"symbol": "SOL-USD", "price": 151.5}});
    let req = axum::http::Request::post("/api/v1/publish")
        .header(
            "authorization",
            format!("Bearer {}", gw.role_token("worker-1", "service")),
        )
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let resp = gw.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    for c in [&mut alice, &mut bob] {
        let (name, env) = c.event().await;
        assert_eq!(name, "market:tick:v1");
        assert_eq!(env["seq"], 1);
        assert_eq!(env["data"]["price"], 151.5);
    }
    alice.close().await;
    bob.close().await;
    gw.stop().await;
}

/// A topic under a non-public prefix is read only by users whose token
/// lists it (exactly or by a `prefix*` pattern); publishing, subscribing and
/// resuming follow the same rule.
async fn private_topics_need_the_tokens_topics_claim(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| {
        c.demo.enabled = false;
        c.topic_prefixes = vec!["room:".to_owned()];
    })
    .await;
    let mut outsider = gw.connect("mallory").await;
    let ack = subscribe(&mut outsider, "room:42").await;
    assert_eq!(ack["error"]["code"], "forbidden", "{ack}");
    let member = |sub: &str, topics: &[&str]| {
        Client::connect(gw.addr, json!({"token": gw.topics_token(sub, topics)}))
    };
    let mut alice = member("alice", &["room:42"]).await.unwrap();
    let mut bob = member("bob", &["room:*"]).await.unwrap();
    for c in [&mut alice, &mut bob] {
        let ack = subscribe(c, "room:42").await;
        assert_eq!(ack["ok"], true, "{ack}");
    }
    let ack = subscribe(&mut alice, "room:43").await;
    assert_eq!(ack["error"]["code"], "forbidden", "{ack}");
    let env = gw
        .handle
        .state
        .publisher
        .publish(
            &liveline_gateway::stream::Stream::Topic {
                name: "room:42".to_owned(),
            },
            "chat:message:v1",
            json!({"text": "hi"}),
        )
        .await
        .unwrap();
    for c in [&mut alice, &mut bob] {
        let (name, got) = c.event().await;
        assert_eq!(name, "chat:message:v1");
        assert_eq!(got["seq"], env.seq);
    }
    // Resuming the topic needs the claim too: mallory's resume is refused.
    let auth = json!({"token": gw.token("mallory"), "resume": {"room:42": {"epoch": env.epoch, "seq": 0}}});
    let mut resumed = Client::connect(gw.addr, auth).await.unwrap();
    let (name, outcome) = resumed.event().await;
    assert_eq!(name, "stream:recovered:v1");
    assert_eq!(outcome["recovered"], false, "{outcome}");
    assert_eq!(outcome["seq"], 0, "tells nothing of the topic: {outcome}");
    for c in [outsider, alice, bob, resumed] {
        c.close().await;
    }
    gw.stop().await;
}

on_every_broker!(
    private_topics_need_the_tokens_topics_claim,
    published_topic_event_reaches_subscribers,
    subscribed_socket_gets_ticks_with_contiguous_seq,
    unsubscribe_stops_ticks,
    two_sockets_share_one_node_subscription,
    invalid_topics_are_refused,
    topic_position_resumes_from_history,
);
