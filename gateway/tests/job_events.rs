//! A started job's events reach its owner in order, enveloped, seq contiguous.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, Gateway, is_completed, start_job};

async fn started_research_job_streams_status_in_order_with_contiguous_seq_through_completed(
    backend: Backend,
) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    let id = start_job(&mut alice, "k-1", "research").await;
    let events = alice.events_until(is_completed).await;

    let stream = format!("job:{id}");
    let epoch = events[0].1["epoch"].as_str().unwrap().to_owned();
    for (i, (_, env)) in events.iter().enumerate() {
        assert_eq!(env["stream"], stream.as_str());
        assert_eq!(env["epoch"], epoch.as_str());
        assert_eq!(
            env["seq"],
            (i + 1) as u64,
            "seq must be contiguous: {events:?}"
        );
        assert_eq!(env["data"]["jobId"], id.as_str());
    }
    let statuses: Vec<_> = events
        .iter()
        .filter(|(n, _)| n == "job:status:v1")
        .map(|(_, e)| {
            (
                e["data"]["status"].as_str().unwrap().to_owned(),
                e["data"]["progress"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses.first().unwrap(), &("queued".to_owned(), 0.0));
    assert!(statuses.iter().any(|(s, _)| s == "running"));
    assert_eq!(statuses.last().unwrap(), &("completed".to_owned(), 1.0));
    let progress: Vec<f64> = statuses.iter().map(|s| s.1).collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress never goes back: {progress:?}"
    );
    assert!(events.iter().any(|(n, _)| n == "job:result:v1"));
    alice.close().await;
    gw.stop().await;
}

async fn started_llm_job_streams_chunks_then_result(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    start_job(&mut alice, "k-llm", "llm").await;
    let events = alice.events_until(is_completed).await;
    let chunks: Vec<_> = events.iter().filter(|(n, _)| n == "job:chunk:v1").collect();
    assert!(chunks.len() >= 3);
    for (i, (_, env)) in chunks.iter().enumerate() {
        assert_eq!(env["data"]["index"], i as u64);
    }
    let result = events
        .iter()
        .position(|(n, _)| n == "job:result:v1")
        .unwrap();
    let last_chunk = events
        .iter()
        .rposition(|(n, _)| n == "job:chunk:v1")
        .unwrap();
    assert!(last_chunk < result);
    alice.close().await;
    gw.stop().await;
}

async fn cancelled_job_stops_with_cancelled_status(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| {
        c.demo.step = std::time::Duration::from_millis(200)
    })
    .await;
    let mut alice = gw.connect("alice").await;
    let id = start_job(&mut alice, "k-c", "research").await;
    let ack = alice
        .call(
            "job:cancel:v1",
            serde_json::json!({"key": "c-1", "data": {"jobId": id}}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["data"]["status"], "cancelled");
    let events = alice
        .events_until(|n, e| n == "job:status:v1" && e["data"]["status"] == "cancelled")
        .await;
    for (i, (_, env)) in events.iter().enumerate() {
        assert_eq!(env["seq"], (i + 1) as u64);
    }
    assert!(
        alice
            .maybe_event(std::time::Duration::from_millis(700))
            .await
            .is_none(),
        "nothing after cancelled"
    );
    let mut bob = gw.connect("bob").await;
    let ack = bob
        .call(
            "job:cancel:v1",
            serde_json::json!({"key": "c-2", "data": {"jobId": id}}),
        )
        .await;
    assert_eq!(ack["error"]["code"], "not_found");
    alice.close().await;
    bob.close().await;
    gw.stop().await;
}

on_every_broker!(
    started_research_job_streams_status_in_order_with_contiguous_seq_through_completed,
    started_llm_job_streams_chunks_then_result,
    cancelled_job_stops_with_cancelled_status,
);
