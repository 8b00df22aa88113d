//! Resume under churn: a client that keeps dropping and coming back with its
//! position sees every event once, in order; when history is lost it gets
//! `recovered:false` and continues from the REST snapshot; `stream:replay:v1`
//! replays on request.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, header};
use common::{Backend, Client, Gateway};
use liveline_gateway::publish::Publisher;
use liveline_gateway::stream::Stream;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn publish(publisher: &Publisher, id: &str, n: u64) -> Value {
    let env = publisher
        .publish_for(
            "alice",
            &Stream::Job { id: id.to_owned() },
            "job:chunk:v1",
            json!({"jobId": id, "index": n, "text": "x"}),
        )
        .await
        .unwrap();
    serde_json::to_value(env).unwrap()
}

/// Reads events of `stream` until `until` accepts one, asserting each
/// envelope continues `last` by exactly one.
async fn read_contiguous(
    c: &mut Client,
    stream: &str,
    epoch: &str,
    last: &mut u64,
    until: impl Fn(u64) -> bool,
) -> Vec<Value> {
    let mut recovered = Vec::new();
    loop {
        let (name, env) = c.event().await;
        if name == "stream:recovered:v1" {
            recovered.push(env);
            continue;
        }
        assert_eq!(env["stream"], stream);
        assert_eq!(env["epoch"], epoch);
        assert_eq!(env["seq"], *last + 1, "hole or duplicate after {last}");
        *last += 1;
        if until(*last) {
            return recovered;
        }
    }
}

async fn reconnecting_fifty_times_mid_stream_loses_and_duplicates_nothing(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| {
        c.demo.enabled = false;
        c.history_len = 5000;
    })
    .await;
    let id = common::create_running_job(&gw, "alice").await;
    let stream = format!("job:{id}");
    let broker = gw.handle.state.publisher.clone();
    let mut client = gw.connect("alice").await;
    let first = publish(&broker, &id, 0).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    let mut last = 0;
    read_contiguous(&mut client, &stream, &epoch, &mut last, |s| s == 1).await;

    let running = Arc::new(AtomicBool::new(true));
    let publisher = {
        let (broker, id, running) = (broker.clone(), id.clone(), running.clone());
        tokio::spawn(async move {
            let mut n = 1;
            while running.load(Ordering::Relaxed) {
                publish(&broker, &id, n).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            n
        })
    };
    for i in 0..50u64 {
        client.close().await;
        // Miss a few events, sometimes none.
        tokio::time::sleep(Duration::from_millis(i % 4 * 5)).await;
        let auth = json!({"token": gw.token("alice"), "resume": {&stream: {"epoch": &epoch, "seq": last}}});
        client = Client::connect(gw.addr, auth).await.unwrap();
        let target = last + 3 + i % 5;
        let recovered =
            read_contiguous(&mut client, &stream, &epoch, &mut last, |s| s >= target).await;
        assert!(recovered.len() <= 1);
        if let Some(r) = recovered.first() {
            assert_eq!(r["recovered"], true, "{r}");
        }
    }
    running.store(false, Ordering::Relaxed);
    let published = publisher.await.unwrap();
    // (The publisher may have stopped right after the last resume caught up.)
    if last < published {
        read_contiguous(&mut client, &stream, &epoch, &mut last, |s| s == published).await;
    }
    // The last resume may have reached `published` inside its replay: its
    // `stream:recovered:v1` then follows; nothing else may.
    let mut extra = client.maybe_event(Duration::from_millis(200)).await;
    if let Some((name, r)) = &extra {
        if name == "stream:recovered:v1" && r["recovered"] == true && r["seq"] == published {
            extra = client.maybe_event(Duration::from_millis(200)).await;
        }
    }
    assert!(extra.is_none(), "after {published}: {extra:?}");
    client.close().await;
    gw.stop().await;
}

/// Makes the gateway lose the history of `id` after seq 2: Redis deletes the
/// stream's keys (a new epoch starts); memory trims it past the client.
async fn lose_history(gw: &Gateway, id: &str) {
    if let Some(url) = &gw.config.redis_url {
        let p = &gw.config.key_prefix;
        let _: () = common::redis_query(
            url,
            redis::cmd("DEL")
                .arg(format!("{p}{{job:{id}}}:seq"))
                .arg(format!("{p}{{job:{id}}}:epoch"))
                .arg(format!("{p}{{job:{id}}}:hist")),
        )
        .await;
    }
    for n in 0..10 {
        publish(&gw.handle.state.publisher, id, 100 + n).await;
    }
}

async fn lost_history_reports_recovered_false_and_rest_snapshot_continues(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| {
        c.demo.enabled = false;
        c.history_len = 4;
    })
    .await;
    let id = common::create_running_job(&gw, "alice").await;
    let stream = format!("job:{id}");
    let broker = gw.handle.state.publisher.clone();
    let mut client = gw.connect("alice").await;
    let first = publish(&broker, &id, 0).await;
    publish(&broker, &id, 1).await;
    let old_epoch = first["epoch"].as_str().unwrap().to_owned();
    let mut last = 0;
    read_contiguous(&mut client, &stream, &old_epoch, &mut last, |s| s == 2).await;
    client.close().await;
    lose_history(&gw, &id).await;

    let auth =
        json!({"token": gw.token("alice"), "resume": {&stream: {"epoch": &old_epoch, "seq": 2}}});
    let mut client = Client::connect(gw.addr, auth).await.unwrap();
    let (name, rec) = client.event().await;
    assert_eq!(name, "stream:recovered:v1");
    assert_eq!(rec["recovered"], false, "{rec}");
    // The snapshot carries the position to continue from.
    let req = Request::get(format!("/api/v1/jobs/{id}"))
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", gw.token("alice")),
        )
        .body(Body::empty())
        .unwrap();
    let res = gw.router.clone().oneshot(req).await.unwrap();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let snap: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(snap["epoch"], rec["epoch"]);
    assert_eq!(snap["seq"], rec["seq"]);
    let epoch = snap["epoch"].as_str().unwrap().to_owned();
    if backend != Backend::Memory {
        assert_ne!(epoch, old_epoch, "lost history means a new epoch");
    }
    let mut last = snap["seq"].as_u64().unwrap();
    for n in 0..5 {
        publish(&broker, &id, 200 + n).await;
    }
    let end = last + 5;
    read_contiguous(&mut client, &stream, &epoch, &mut last, |s| s == end).await;
    client.close().await;
    gw.stop().await;
}

async fn stream_replay_request_replays_after_the_given_seq(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.demo.enabled = false).await;
    let id = common::create_running_job(&gw, "alice").await;
    let stream = format!("job:{id}");
    let broker = gw.handle.state.publisher.clone();
    let mut alice = gw.connect("alice").await;
    let first = publish(&broker, &id, 0).await;
    for n in 1..6 {
        publish(&broker, &id, n).await;
    }
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    let mut last = 0;
    read_contiguous(&mut alice, &stream, &epoch, &mut last, |s| s == 6).await;
    alice
        .emit(
            "stream:replay:v1",
            json!({"stream": &stream, "epoch": &epoch, "seq": 3}),
        )
        .await;
    let mut again = 3;
    read_contiguous(&mut alice, &stream, &epoch, &mut again, |s| s == 6).await;
    let (name, rec) = alice.event().await;
    assert_eq!(name, "stream:recovered:v1");
    assert_eq!(rec["recovered"], true);
    assert_eq!(rec["seq"], 6);
    // Another user cannot replay alice's stream.
    let mut bob = gw.connect("bob").await;
    bob.emit(
        "stream:replay:v1",
        json!({"stream": &stream, "epoch": &epoch, "seq": 0}),
    )
    .await;
    let (name, rec) = bob.event().await;
    assert_eq!(name, "stream:recovered:v1");
    assert_eq!(rec["recovered"], false);
    assert!(bob.maybe_event(Duration::from_millis(200)).await.is_none());
    alice.close().await;
    bob.close().await;
    gw.stop().await;
}

on_every_broker!(
    reconnecting_fifty_times_mid_stream_loses_and_duplicates_nothing,
    lost_history_reports_recovered_false_and_rest_snapshot_continues,
    stream_replay_request_replays_after_the_given_seq,
);
