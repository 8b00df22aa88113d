//! A Redis Cluster master killed with `kill -9` mid-stream, on a private
//! local cluster: its replica takes over, `/readyz` is 503 during the gap and
//! 200 after, and the SDK (its native client) loses nothing silently.
//!
//! A checker reads what the SDK hands the app for the stream, in order:
//! events and `recovered:false` notices. It counts events duplicated,
//! reordered or skipped (a hole in an epoch with no notice), and events the
//! publisher was told were stored that the app neither got nor was told it
//! lost (a `recovered:false` covers its own epoch up to its seq, and every
//! earlier epoch: the app then reads the REST snapshot).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Backend, Gateway, LocalCluster};
use liveline::contract::ServerEvent;
use liveline::native::{Event, NativeClient};
use liveline_gateway::stream::Stream;
use serde_json::json;
use tower::ServiceExt;

/// Events published; the kill comes after [`KILL_AFTER`] of them.
const EVENTS: u64 = 600;
const KILL_AFTER: u64 = 150;

/// One thing the app got for the stream.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Event(String, u64),
    /// `recovered:false`: the app restarts from this (epoch, seq).
    Lost(String, u64),
}

/// The checker's counts over what the app saw, against what was stored.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    duplicated: usize,
    reordered: usize,
    skipped: usize,
    lost: usize,
}

fn check(seen: &[Seen], stored: &[(String, u64)]) -> Counts {
    let mut counts = Counts::default();
    let mut taken: Vec<(String, u64)> = Vec::new();
    let mut at: Option<(String, u64)> = None;
    for item in seen {
        match item {
            Seen::Lost(epoch, seq) => at = Some((epoch.clone(), *seq)),
            Seen::Event(epoch, seq) => {
                let key = (epoch.clone(), *seq);
                if taken.contains(&key) {
                    counts.duplicated += 1;
                    continue;
                }
                match &at {
                    Some((e, s)) if e == epoch && seq < s => counts.reordered += 1,
                    Some((e, s)) if e == epoch && *seq > s + 1 => counts.skipped += 1,
                    _ => {}
                }
                taken.push(key.clone());
                at = Some(key);
            }
        }
    }
    let mut order: Vec<&String> = Vec::new();
    for (epoch, _) in stored {
        if !order.contains(&epoch) {
            order.push(epoch);
        }
    }
    let rank = |epoch: &String| order.iter().position(|e| *e == epoch);
    let covered = |epoch: &String, seq: u64| {
        seen.iter().any(|item| match item {
            Seen::Lost(e, s) => {
                (e == epoch && *s >= seq) || rank(e).zip(rank(epoch)).is_some_and(|(t, x)| t > x)
            }
            Seen::Event(..) => false,
        })
    };
    counts.lost = stored
        .iter()
        .filter(|(epoch, seq)| !taken.contains(&(epoch.clone(), *seq)) && !covered(epoch, *seq))
        .count();
    counts
}

#[test]
fn the_checker_counts_what_it_should() {
    let ev = |e: &str, s| Seen::Event(e.to_owned(), s);
    let stored: Vec<(String, u64)> = (1..=4).map(|s| ("a".to_owned(), s)).collect();
    let fine = [ev("a", 1), ev("a", 2), ev("a", 3), ev("a", 4)];
    assert_eq!(check(&fine, &stored), Counts::default());
    let bad = [ev("a", 1), ev("a", 3), ev("a", 2), ev("a", 3)];
    let counts = check(&bad, &stored);
    assert_eq!(
        (counts.duplicated, counts.reordered, counts.skipped),
        (1, 1, 1)
    );
    assert_eq!(check(&[ev("a", 1), ev("a", 2)], &stored).lost, 2);
    let told = [ev("a", 1), Seen::Lost("a".to_owned(), 3), ev("a", 4)];
    assert_eq!(check(&told, &stored), Counts::default());
}

async fn status(gw: &Gateway, path: &str) -> StatusCode {
    let req = Request::get(path).body(Body::empty()).unwrap();
    gw.router.clone().oneshot(req).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_stream_loses_nothing_silently() {
    let cluster = LocalCluster::start();
    let url = cluster.url.clone();
    let gw = Gateway::start_with(Backend::Cluster, move |c| {
        c.redis_url = Some(url);
        c.demo.enabled = false;
        c.history_len = 10_000;
    })
    .await;
    let id = common::create_running_job(&gw, "alice").await;
    let stream = format!("job:{id}");
    let key = format!("{}{{job:{id}}}:seq", gw.config.key_prefix);
    let master = cluster.master_of(&key).await;

    // The app: the SDK's native client, which resumes by itself.
    let jwt = gw.jwt();
    let (client, mut events) = NativeClient::spawn(
        liveline::Config::new(format!("http://{}", gw.addr)),
        move || {
            let token = jwt.mint("alice", 600).map_err(|e| e.to_string());
            Box::pin(async move { token })
        },
    );
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
    let reader = {
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut connected = Some(connected_tx);
            while let Some(event) = events.recv().await {
                let ev = match event {
                    Event::Server(ev, _) => ev,
                    Event::State(change) if change.current.name() == "connected" => {
                        if let Some(tx) = connected.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                let item = match &ev {
                    ServerEvent::StreamRecovered(r) if r.stream == stream && !r.recovered => {
                        Seen::Lost(r.epoch.clone(), r.seq)
                    }
                    _ => match ev.position() {
                        Some((s, epoch, seq)) if s == stream => Seen::Event(epoch.to_owned(), seq),
                        _ => continue,
                    },
                };
                if seen_tx.send(item).is_err() {
                    return;
                }
            }
        })
    };

    tokio::time::timeout(Duration::from_secs(10), connected_rx)
        .await
        .expect("the SDK connected")
        .unwrap();

    // The publisher: at least once, as fast as it goes. An event that was
    // not stored is published again once the gateway says it is ready.
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut failed = 0u64;
    let (mut saw_503, mut ready_again) = (false, false);
    let publisher = gw.handle.state.publisher.clone();
    for n in 0..EVENTS {
        if n == KILL_AFTER {
            cluster.kill(master);
        }
        loop {
            let data = json!({"jobId": &id, "index": n, "text": "x"});
            match publisher
                .publish(&Stream::Job { id: id.clone() }, "job:chunk:v1", data)
                .await
            {
                Ok(env) => {
                    acked.push((env.epoch.clone(), env.seq));
                    break;
                }
                Err(_) => failed += 1,
            }
            saw_503 |= status(&gw, "/readyz").await == StatusCode::SERVICE_UNAVAILABLE;
            common::eventually_within("the cluster serves again", Duration::from_secs(60), || {
                let gw = &gw;
                async move { status(gw, "/readyz").await == StatusCode::OK }
            })
            .await;
            ready_again = saw_503;
        }
    }
    // What the app saw, until it holds the last event stored (taken, or
    // covered by a recovered:false).
    let last = acked.last().cloned().unwrap();
    let mut seen = Vec::new();
    let got_last = |seen: &[Seen]| {
        seen.iter().any(|item| match item {
            Seen::Event(e, s) | Seen::Lost(e, s) => (e, *s) == (&last.0, last.1),
        })
    };
    while !got_last(&seen) {
        match tokio::time::timeout(Duration::from_secs(30), seen_rx.recv()).await {
            Ok(Some(item)) => seen.push(item),
            _ => panic!("the app never got to {last:?}; it saw {seen:?}"),
        }
    }
    client.close();
    reader.abort();
    let counts = check(&seen, &acked);
    let epochs: std::collections::BTreeSet<&String> = acked.iter().map(|(e, _)| e).collect();
    let told: Vec<&Seen> = seen
        .iter()
        .filter(|i| matches!(i, Seen::Lost(..)))
        .collect();
    println!(
        "failover: published {EVENTS} (failed attempts {failed}), epochs {}, app got {} events, told lost {told:?}, {counts:?}",
        epochs.len(),
        seen.len() - told.len(),
    );
    assert!(failed > 0, "the kill fell mid-stream");
    assert_eq!(epochs.len(), 2, "the promoted master wrote a new epoch");
    assert!(saw_503, "/readyz said 503 during the gap");
    assert!(ready_again, "/readyz said 200 after the failover");
    assert_eq!(counts, Counts::default(), "{seen:?}");
    gw.stop().await;
}
