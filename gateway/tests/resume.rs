//! Reconnecting with `resume` replays what was missed exactly once.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, Client, Gateway, is_completed, start_job};
use serde_json::json;

async fn resume_after_disconnect_replays_missed_events_once_with_recovered_true(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.demo.step = Duration::from_millis(80)).await;
    let mut alice = gw.connect("alice").await;
    let id = start_job(&mut alice, "k-r", "llm").await;
    let stream = format!("job:{id}");
    let (_, first) = alice.event().await;
    let (_, second) = alice.event().await;
    assert_eq!(second["seq"], 2);
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    // A second tab of alice's watches the job while the first is away.
    let mut watcher = gw.connect("alice").await;
    alice.close().await;
    // Miss a few events while the job keeps running, then come back mid-stream.
    watcher
        .events_until(|_, e| e["seq"].as_u64().is_some_and(|s| s >= 5))
        .await;
    watcher.close().await;
    let auth = json!({"token": gw.token("alice"), "resume": {&stream: {"epoch": epoch, "seq": 2}}});
    let mut again = Client::connect(gw.addr, auth).await.unwrap();
    let events = again.events_until(is_completed).await;

    let recovered: Vec<_> = events
        .iter()
        .filter(|(n, _)| n == "stream:recovered:v1")
        .collect();
    assert_eq!(recovered.len(), 1, "{events:?}");
    assert_eq!(recovered[0].1["recovered"], true);
    assert_eq!(recovered[0].1["stream"], stream.as_str());
    assert_eq!(recovered[0].1["epoch"], epoch.as_str());
    let seqs: Vec<u64> = events
        .iter()
        .filter(|(n, _)| n != "stream:recovered:v1")
        .map(|(_, e)| e["seq"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (3..3 + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "no hole, no duplicate, in order");
    assert!(
        recovered[0].1["seq"].as_u64().unwrap() >= 3,
        "some events were missed and replayed"
    );
    assert!(
        again
            .maybe_event(Duration::from_millis(400))
            .await
            .is_none()
    );
    again.close().await;
    gw.stop().await;
}

async fn resume_after_job_finished_replays_the_rest_then_recovers(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    let id = start_job(&mut alice, "k-r2", "research").await;
    let all = alice.events_until(is_completed).await;
    alice.close().await;
    let epoch = all[0].1["epoch"].as_str().unwrap().to_owned();
    let stream = format!("job:{id}");
    let auth = json!({"token": gw.token("alice"), "resume": {&stream: {"epoch": epoch, "seq": 1}}});
    let mut again = Client::connect(gw.addr, auth).await.unwrap();
    let events = again.events_until(|n, _| n == "stream:recovered:v1").await;
    let replayed: Vec<_> = events[..events.len() - 1].to_vec();
    assert_eq!(replayed, all[1..].to_vec());
    let rec = &events.last().unwrap().1;
    assert_eq!(rec["recovered"], true);
    assert_eq!(rec["seq"], all.len() as u64);
    again.close().await;
    gw.stop().await;
}

async fn resume_with_unknown_epoch_or_foreign_stream_reports_recovered_false(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    let id = start_job(&mut alice, "k-r3", "research").await;
    let all = alice.events_until(is_completed).await;
    alice.close().await;
    let stream = format!("job:{id}");
    let auth =
        json!({"token": gw.token("alice"), "resume": {&stream: {"epoch": "stale", "seq": 1}}});
    let mut again = Client::connect(gw.addr, auth).await.unwrap();
    let (name, rec) = again.event().await;
    assert_eq!(name, "stream:recovered:v1");
    assert_eq!(rec["recovered"], false);
    assert_eq!(rec["seq"], all.len() as u64);
    assert_eq!(rec["epoch"], all[0].1["epoch"]);
    again.close().await;

    // Bob cannot replay Alice's job.
    let auth = json!({"token": gw.token("bob"), "resume": {&stream: {"epoch": all[0].1["epoch"], "seq": 0}}});
    let mut bob = Client::connect(gw.addr, auth).await.unwrap();
    let (name, rec) = bob.event().await;
    assert_eq!(name, "stream:recovered:v1");
    assert_eq!(rec["recovered"], false);
    // Nothing about alice's stream is told: no epoch, no head, no event.
    assert_eq!(rec["epoch"], "", "{rec}");
    assert_eq!(rec["seq"], 0, "{rec}");
    assert!(bob.maybe_event(Duration::from_millis(300)).await.is_none());
    bob.close().await;
    gw.stop().await;
}

on_every_broker!(
    resume_after_disconnect_replays_missed_events_once_with_recovered_true,
    resume_after_job_finished_replays_the_rest_then_recovers,
    resume_with_unknown_epoch_or_foreign_stream_reports_recovered_false,
);
