//! One slow tab never delays another tab of the same user. Tab A resumes a
//! long history (13 MB, more than the loopback buffers hold) and reads one
//! frame every 25 ms, so its replay and the flush of the live events that
//! came meanwhile go at its pace for seconds. Tab B, connected all along,
//! gets every live event within milliseconds; A gets everything too, once,
//! in order. Run with `--nocapture` for B's latency figures.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Backend, Client, Gateway};
use liveline_gateway::stream::{Stream, TopicRules};
use serde_json::json;

fn micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn a_slow_resuming_tab_does_not_delay_the_users_other_tab(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| {
        c.demo.enabled = false;
        c.max_buffer_packets = 16;
    })
    .await;
    let publisher = gw.handle.state.publisher.clone();
    let stream = Stream::for_publisher("feed", Some("alice"), &TopicRules::default()).unwrap();
    let blob = "x".repeat(64 * 1024);
    let history = 200u64;
    let mut epoch = String::new();
    for i in 0..history {
        let env = publisher
            .publish(&stream, "feed:item:v1", json!({"i": i, "blob": &blob}))
            .await
            .unwrap();
        epoch = env.epoch;
    }
    let mut b = gw.connect("alice").await;
    let auth = json!({"token": gw.token("alice"), "resume": {"feed": {"epoch": epoch, "seq": 0}}});
    let mut a = Client::connect(gw.addr, auth).await.unwrap();
    let live = 200u64;
    let total = history + live;
    // A: one frame every 25 ms until the publisher is done, then at full
    // speed. This pause is the slowness under test (a slow reader), not a
    // wait for something to happen.
    let slow_a = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < total as usize {
            let (name, env) = a.event().await;
            if name == "stream:recovered:v1" {
                assert_eq!(env["recovered"], true, "{env}");
                continue;
            }
            seqs.push(env["seq"].as_u64().unwrap());
            if seqs.len() < (history + live / 2) as usize {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        a.close().await;
        seqs
    });
    // Live events every 20 ms, stamped with their publish time.
    let live_publisher = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        for i in 0..live {
            ticker.tick().await;
            publisher
                .publish(&stream, "feed:tick:v1", json!({"i": i, "t": micros()}))
                .await
                .unwrap();
        }
    });
    let mut latencies = Vec::new();
    while latencies.len() < live as usize {
        let (name, env) = b.event().await;
        assert_eq!(name, "feed:tick:v1");
        latencies.push(micros().saturating_sub(env["data"]["t"].as_u64().unwrap()));
    }
    live_publisher.await.unwrap();
    let seqs = slow_a.await.unwrap();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "A: every event once, in order"
    );
    latencies.sort_unstable();
    let (p50, p99, max) = (
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        *latencies.last().unwrap(),
    );
    println!("tab B while tab A resumed slowly: p50 {p50} µs, p99 {p99} µs, max {max} µs");
    // Before the fix the dispatcher waited on A's pace for seconds.
    assert!(max < 500_000, "tab B waited {max} µs for a live event");
    b.close().await;
    gw.stop().await;
}

/// A resuming tab that reads nothing while more than
/// `hub::MAX_RESUME_BUFFER` live events arrive is cut off (and counted), so
/// the gateway's memory stays bounded; the user's other tab gets them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_resuming_tab_is_cut_off_past_the_resume_buffer() {
    let gw = Gateway::start_with(Backend::Memory, |c| {
        c.demo.enabled = false;
        c.max_buffer_packets = 8;
    })
    .await;
    let publisher = gw.handle.state.publisher.clone();
    let stream = Stream::for_publisher("feed", Some("alice"), &TopicRules::default()).unwrap();
    // History big enough that A's replay stalls at once (A never reads).
    let blob = "x".repeat(256 * 1024);
    let mut epoch = String::new();
    for i in 0..64 {
        epoch = publisher
            .publish(&stream, "feed:item:v1", json!({"i": i, "blob": &blob}))
            .await
            .unwrap()
            .epoch;
    }
    let mut b = gw.connect("alice").await;
    let auth = json!({"token": gw.token("alice"), "resume": {"feed": {"epoch": epoch, "seq": 0}}});
    let mut a = Client::connect(gw.addr, auth).await.unwrap();
    // One event at a time, each read by B before the next: B keeps up,
    // while A's replay waits on its full buffer (it reads nothing).
    let bound = liveline_gateway::hub::MAX_RESUME_BUFFER as u64;
    for i in 0..=bound {
        publisher
            .publish(&stream, "feed:tick:v1", json!({"i": i}))
            .await
            .unwrap();
        let (_, env) = b.event().await;
        assert_eq!(env["data"]["i"], i);
    }
    let render = gw.handle.state.metrics.render();
    assert!(
        render.contains("liveline_slow_clients_disconnected_total 1"),
        "A was cut off for its resume buffer"
    );
    // The cut-off socket closes once its buffer drains (A reads now).
    a.until_closed(Duration::from_secs(20)).await;
    b.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_memory() {
    a_slow_resuming_tab_does_not_delay_the_users_other_tab(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis() {
    a_slow_resuming_tab_does_not_delay_the_users_other_tab(Backend::Redis).await;
}
