//! The demo's orders: jobs of kind `order` started with `job:start:v1`,
//! cancelled with `job:cancel:v1`, with the demo worker's `trade:order:v1`
//! events on the job's stream. The gateway knows nothing of orders.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, Client, Gateway};
use serde_json::{Value, json};

fn is_job_end(name: &str, arg: &Value) -> bool {
    name == "job:status:v1"
        && matches!(
            arg["data"]["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
}

async fn place(client: &mut Client, key: &str, params: Value) -> String {
    let ack = client
        .call(
            "job:start:v1",
            json!({"key": key, "data": {"kind": "order", "params": params}}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    ack["data"]["jobId"].as_str().unwrap().to_owned()
}

fn trades(events: &[(String, Value)]) -> Vec<&Value> {
    events
        .iter()
        .filter(|(n, _)| n == "trade:order:v1")
        .map(|(_, e)| e)
        .collect()
}

async fn market_order_goes_accepted_partially_filled_filled_on_its_job_stream(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    let id = place(
        &mut alice,
        "o-1",
        json!({"symbol": "BTC-USD", "side": "buy", "qty": 2.0}),
    )
    .await;
    let events = alice.events_until(is_job_end).await;
    let stream = format!("job:{id}");
    for (i, (_, env)) in events.iter().enumerate() {
        assert_eq!(env["stream"], stream.as_str());
        assert_eq!(env["seq"], (i + 1) as u64, "contiguous: {events:?}");
    }
    let trades = trades(&events);
    let statuses: Vec<&str> = trades
        .iter()
        .map(|e| e["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses[0], "accepted", "{statuses:?}");
    assert_eq!(*statuses.last().unwrap(), "filled", "{statuses:?}");
    assert!(
        statuses[1..statuses.len() - 1]
            .iter()
            .all(|s| *s == "partially_filled"),
        "{statuses:?}"
    );
    let mut last_filled = 0.0;
    for e in &trades[1..] {
        assert_eq!(e["data"]["orderId"], id.as_str());
        let filled = e["data"]["filledQty"].as_f64().unwrap();
        assert!(filled > last_filled, "filledQty grows: {trades:?}");
        last_filled = filled;
    }
    assert_eq!(last_filled, 2.0);
    let (_, done) = events.last().unwrap();
    assert_eq!(done["data"]["status"], "completed");
    // The REST snapshot and the list by kind agree.
    let snap = get_json(&gw, &format!("/api/v1/jobs/{id}"), "alice").await;
    assert_eq!(snap["status"], "completed", "{snap}");
    assert_eq!(snap["kind"], "order");
    assert_eq!(snap["params"]["symbol"], "BTC-USD");
    assert_eq!(snap["seq"], events.len() as u64);
    let orders = get_json(&gw, "/api/v1/jobs?kind=order", "alice").await;
    assert_eq!(orders["jobs"][0]["id"], id.as_str(), "{orders}");
    let research = get_json(&gw, "/api/v1/jobs?kind=research", "alice").await;
    assert_eq!(research["jobs"], json!([]));
    alice.close().await;
    gw.stop().await;
}

async fn same_key_three_times_places_one_order(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    let params = json!({"symbol": "ETH-USD", "side": "sell", "qty": 1.5});
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(place(&mut alice, "same-key", params.clone()).await);
    }
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let orders = get_json(&gw, "/api/v1/jobs?kind=order", "alice").await;
    assert_eq!(orders["jobs"].as_array().unwrap().len(), 1, "{orders}");
    let events = alice.events_until(is_job_end).await;
    let accepted = trades(&events)
        .iter()
        .filter(|e| e["data"]["status"] == "accepted")
        .count();
    assert_eq!(accepted, 1, "one order runs: {events:?}");
    alice.close().await;
    gw.stop().await;
}

/// A limit buy far below the market stays open (it never fills at its
/// limit), and cancelling it ends the job: nothing follows.
async fn a_limit_order_waits_for_the_market_and_cancels(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.demo.step = Duration::from_millis(50)).await;
    let mut alice = gw.connect("alice").await;
    let id = place(
        &mut alice,
        "o-l",
        json!({"symbol": "BTC-USD", "side": "buy", "qty": 1, "price": 1.0}),
    )
    .await;
    let open = alice
        .events_until(|n, e| n == "job:status:v1" && e["data"]["message"] == "open")
        .await;
    assert_eq!(trades(&open)[0]["data"]["status"], "accepted");
    // Many demo steps pass with no fill: the worker checks the market each step.
    let quiet = alice.maybe_event(Duration::from_millis(600)).await;
    assert!(quiet.is_none(), "a $1 bid on BTC filled: {quiet:?}");
    let cancel = alice
        .call(
            "job:cancel:v1",
            json!({"key": "c-1", "data": {"jobId": id}}),
        )
        .await;
    assert_eq!(
        cancel,
        json!({"ok": true, "data": {"jobId": id, "status": "cancelled"}})
    );
    let (name, env) = alice.event().await;
    assert_eq!(name, "job:status:v1");
    assert_eq!(env["data"]["status"], "cancelled");
    let more = alice.maybe_event(Duration::from_millis(300)).await;
    assert!(more.is_none(), "after cancelled: {more:?}");
    alice.close().await;
    gw.stop().await;
}

/// A limit sell below the market crosses at once and fills at the market
/// price, not at its limit.
async fn a_crossing_limit_order_fills_at_the_market_price(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    place(
        &mut alice,
        "o-x",
        json!({"symbol": "BTC-USD", "side": "sell", "qty": 0.5, "price": 1.0}),
    )
    .await;
    let events = alice.events_until(is_job_end).await;
    let filled = trades(&events).last().unwrap()["data"].clone();
    assert_eq!(filled["status"], "filled", "{events:?}");
    assert!(
        filled["price"].as_f64().unwrap() > 1000.0,
        "filled at the market, not the $1 limit: {filled}"
    );
    alice.close().await;
    gw.stop().await;
}

async fn cancel_after_fill_acks_completed_without_event(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    let id = place(
        &mut alice,
        "o-f",
        json!({"symbol": "BTC-USD", "side": "sell", "qty": 0.1}),
    )
    .await;
    alice.events_until(is_job_end).await;
    let cancel = alice
        .call(
            "job:cancel:v1",
            json!({"key": "c-2", "data": {"jobId": id}}),
        )
        .await;
    assert_eq!(
        cancel,
        json!({"ok": true, "data": {"jobId": id, "status": "completed"}})
    );
    assert!(
        alice
            .maybe_event(Duration::from_millis(300))
            .await
            .is_none()
    );
    alice.close().await;
    gw.stop().await;
}

async fn another_users_cancel_is_not_found(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    let mut mallory = gw.connect("mallory").await;
    let id = place(
        &mut alice,
        "o-m",
        json!({"symbol": "BTC-USD", "side": "buy", "qty": 1}),
    )
    .await;
    let cancel = mallory
        .call(
            "job:cancel:v1",
            json!({"key": "m-1", "data": {"jobId": id}}),
        )
        .await;
    assert_eq!(cancel["error"]["code"], "not_found", "{cancel}");
    let events = alice.events_until(is_job_end).await;
    assert_eq!(events.last().unwrap().1["data"]["status"], "completed");
    alice.close().await;
    mallory.close().await;
    gw.stop().await;
}

/// Orders the demo cannot take are rejected on their stream, with a reason;
/// the job fails.
async fn bad_orders_are_rejected_with_a_reason(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    for (i, (params, why)) in [
        (
            json!({"symbol": "DOGE-USD", "side": "buy", "qty": 1}),
            "BTC-USD",
        ),
        (
            json!({"symbol": "BTC-USD", "side": "hold", "qty": 1}),
            "params",
        ),
        (json!({"symbol": "BTC-USD", "side": "buy", "qty": 0}), "qty"),
        (
            json!({"symbol": "BTC-USD", "side": "buy", "qty": 1, "price": -5}),
            "price",
        ),
        (json!({"symbol": "BTC-USD", "side": "buy"}), "params"),
    ]
    .into_iter()
    .enumerate()
    {
        place(&mut alice, &format!("bad-{i}"), params.clone()).await;
        let events = alice.events_until(is_job_end).await;
        assert_eq!(trades(&events)[0]["data"]["status"], "rejected", "{params}");
        let (_, end) = events.last().unwrap();
        assert_eq!(end["data"]["status"], "failed");
        let message = end["data"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("rejected: ") && message.contains(why),
            "{params}: {message}"
        );
    }
    alice.close().await;
    gw.stop().await;
}

async fn get_json(gw: &Gateway, path: &str, user: &str) -> Value {
    use tower::ServiceExt;
    let req = axum::http::Request::get(path)
        .header("authorization", format!("Bearer {}", gw.token(user)))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = gw.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

on_every_broker!(
    market_order_goes_accepted_partially_filled_filled_on_its_job_stream,
    same_key_three_times_places_one_order,
    a_limit_order_waits_for_the_market_and_cancels,
    a_crossing_limit_order_fills_at_the_market_price,
    cancel_after_fill_acks_completed_without_event,
    another_users_cancel_is_not_found,
    bad_orders_are_rejected_with_a_reason,
);
