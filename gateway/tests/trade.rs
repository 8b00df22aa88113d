//! `trade:place:v1` / `trade:cancel:v1`: validation, idempotency, ownership,
//! and the demo worker's `trade:order:v1` events on `order:{id}`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, Client, Gateway};
use serde_json::{Value, json};

fn is_order_end(name: &str, arg: &Value) -> bool {
    name == "trade:order:v1"
        && matches!(
            arg["data"]["status"].as_str(),
            Some("filled" | "cancelled" | "rejected")
        )
}

async fn place(client: &mut Client, key: &str, data: Value) -> Value {
    client
        .call("trade:place:v1", json!({"key": key, "data": data}))
        .await
}

async fn placed_order_goes_accepted_partially_filled_filled_with_contiguous_seq(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    let ack = place(
        &mut alice,
        "o-1",
        json!({"symbol": "BTC-USD", "side": "buy", "qty": 2.0}),
    )
    .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let id = ack["data"]["orderId"].as_str().unwrap().to_owned();
    let events: Vec<_> = alice
        .events_until(is_order_end)
        .await
        .into_iter()
        .filter(|(n, _)| n == "trade:order:v1")
        .collect();
    let stream = format!("order:{id}");
    let statuses: Vec<&str> = events
        .iter()
        .map(|(_, e)| e["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses[0], "accepted", "{statuses:?}");
    assert_eq!(*statuses.last().unwrap(), "filled", "{statuses:?}");
    let partials = statuses
        .iter()
        .filter(|s| **s == "partially_filled")
        .count();
    assert!((1..=2).contains(&partials), "{statuses:?}");
    assert_eq!(statuses.len(), partials + 2, "{statuses:?}");
    let mut last_filled = -1.0;
    for (i, (_, env)) in events.iter().enumerate() {
        assert_eq!(env["stream"], stream.as_str());
        assert_eq!(env["seq"], (i + 1) as u64, "contiguous: {events:?}");
        assert_eq!(env["data"]["orderId"], id.as_str());
        assert_eq!(env["data"]["symbol"], "BTC-USD");
        assert_eq!(env["data"]["side"], "buy");
        assert_eq!(env["data"]["qty"], 2.0);
        let filled = env["data"]["filledQty"].as_f64().unwrap();
        assert!(
            filled > last_filled || i == 0,
            "filledQty grows: {events:?}"
        );
        last_filled = filled;
    }
    assert_eq!(last_filled, 2.0);
    assert!(events.last().unwrap().1["data"]["price"].as_f64().unwrap() > 0.0);

    // The REST snapshot agrees, with the stream position.
    let http = reqwest_get(&gw, &format!("/api/v1/orders/{id}"), "alice").await;
    assert_eq!(http["status"], "filled", "{http}");
    assert_eq!(http["filledQty"], 2.0);
    assert_eq!(http["stream"], stream.as_str());
    assert_eq!(http["seq"], events.len() as u64);
    let list = reqwest_get(&gw, "/api/v1/orders", "alice").await;
    assert_eq!(list["orders"][0]["id"], id.as_str(), "{list}");
    let foreign = reqwest_status(&gw, &format!("/api/v1/orders/{id}"), "mallory").await;
    assert_eq!(foreign, 404);
    // Its history after seq 1, as for jobs: the same envelopes, in order.
    let after = reqwest_get(&gw, &format!("/api/v1/orders/{id}/events?after=1"), "alice").await;
    assert_eq!(after["stream"], stream.as_str());
    assert_eq!(after["complete"], true, "{after}");
    let history: Vec<&Value> = after["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["envelope"])
        .collect();
    let live: Vec<&Value> = events.iter().skip(1).map(|(_, e)| e).collect();
    assert_eq!(history, live);
    let uri = format!("/api/v1/orders/{id}/events");
    assert_eq!(reqwest_status(&gw, &uri, "mallory").await, 404);
    alice.close().await;
    gw.stop().await;
}

async fn same_key_three_times_places_one_order(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    let data = json!({"symbol": "ETH-USD", "side": "sell", "qty": 1.5, "price": 3000.0});
    let mut ids = Vec::new();
    for _ in 0..3 {
        let ack = place(&mut alice, "same-key", data.clone()).await;
        assert_eq!(ack["ok"], true, "{ack}");
        ids.push(ack["data"]["orderId"].as_str().unwrap().to_owned());
    }
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let list = reqwest_get(&gw, "/api/v1/orders", "alice").await;
    assert_eq!(list["orders"].as_array().unwrap().len(), 1, "{list}");
    let events = alice.events_until(is_order_end).await;
    let accepted = events
        .iter()
        .filter(|(_, e)| e["data"]["status"] == "accepted")
        .count();
    assert_eq!(accepted, 1, "one order runs: {events:?}");
    // A limit order fills at its limit price.
    assert_eq!(events.last().unwrap().1["data"]["price"], 3000.0);
    alice.close().await;
    gw.stop().await;
}

async fn cancel_before_fill_publishes_cancelled_and_stops(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.demo_step = Duration::from_millis(300)).await;
    let mut alice = gw.connect("alice").await;
    let ack = place(
        &mut alice,
        "o-c",
        json!({"symbol": "SOL-USD", "side": "buy", "qty": 10}),
    )
    .await;
    let id = ack["data"]["orderId"].as_str().unwrap().to_owned();
    let cancel = alice
        .call(
            "trade:cancel:v1",
            json!({"key": "c-1", "data": {"orderId": id}}),
        )
        .await;
    assert_eq!(
        cancel,
        json!({"ok": true, "data": {"orderId": id, "status": "cancelled"}})
    );
    let events = alice.events_until(is_order_end).await;
    assert_eq!(events.last().unwrap().1["data"]["status"], "cancelled");
    // Nothing follows the cancel.
    let more = alice.maybe_event(Duration::from_millis(900)).await;
    assert!(more.is_none(), "after cancelled: {more:?}");
    let snap = reqwest_get(&gw, &format!("/api/v1/orders/{id}"), "alice").await;
    assert_eq!(snap["status"], "cancelled");
    alice.close().await;
    gw.stop().await;
}

async fn cancel_after_fill_acks_filled_without_event(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    let ack = place(
        &mut alice,
        "o-f",
        json!({"symbol": "BTC-USD", "side": "sell", "qty": 0.1}),
    )
    .await;
    let id = ack["data"]["orderId"].as_str().unwrap().to_owned();
    alice.events_until(is_order_end).await;
    let cancel = alice
        .call(
            "trade:cancel:v1",
            json!({"key": "c-2", "data": {"orderId": id}}),
        )
        .await;
    assert_eq!(
        cancel,
        json!({"ok": true, "data": {"orderId": id, "status": "filled"}})
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

async fn foreign_cancel_is_not_found(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.demo_step = Duration::from_millis(300)).await;
    let mut alice = gw.connect("alice").await;
    let mut mallory = gw.connect("mallory").await;
    let ack = place(
        &mut alice,
        "o-x",
        json!({"symbol": "BTC-USD", "side": "buy", "qty": 1}),
    )
    .await;
    let id = ack["data"]["orderId"].as_str().unwrap().to_owned();
    let cancel = mallory
        .call(
            "trade:cancel:v1",
            json!({"key": "m-1", "data": {"orderId": id}}),
        )
        .await;
    assert_eq!(cancel["ok"], false);
    assert_eq!(cancel["error"]["code"], "not_found");
    let unknown = mallory
        .call(
            "trade:cancel:v1",
            json!({"key": "m-2", "data": {"orderId": "nope"}}),
        )
        .await;
    assert_eq!(unknown["error"]["code"], "not_found");
    // Alice's order still fills.
    let events = alice.events_until(is_order_end).await;
    assert_eq!(events.last().unwrap().1["data"]["status"], "filled");
    assert!(
        mallory
            .maybe_event(Duration::from_millis(200))
            .await
            .is_none()
    );
    alice.close().await;
    mallory.close().await;
    gw.stop().await;
}

async fn invalid_orders_are_invalid_payload(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    for (i, data) in [
        json!({"symbol": "DOGE-USD", "side": "buy", "qty": 1}),
        json!({"symbol": "BTC-USD", "side": "hold", "qty": 1}),
        json!({"symbol": "BTC-USD", "side": "buy", "qty": 0}),
        json!({"symbol": "BTC-USD", "side": "buy", "qty": -1}),
        json!({"symbol": "BTC-USD", "side": "buy", "qty": 1, "price": -5}),
        json!({"symbol": "BTC-USD", "side": "buy"}),
    ]
    .into_iter()
    .enumerate()
    {
        let ack = place(&mut alice, &format!("bad-{i}"), data.clone()).await;
        assert_eq!(ack["ok"], false, "{data} -> {ack}");
        assert_eq!(ack["error"]["code"], "invalid_payload", "{data} -> {ack}");
    }
    let ack = place(
        &mut alice,
        "bad-sym",
        json!({"symbol": "DOGE-USD", "side": "buy", "qty": 1}),
    )
    .await;
    let msg = ack["error"]["message"].as_str().unwrap();
    assert!(msg.contains("DOGE-USD") && msg.contains("BTC-USD"), "{msg}");
    let list = reqwest_get(&gw, "/api/v1/orders", "alice").await;
    assert_eq!(list["orders"], json!([]));
    alice.close().await;
    gw.stop().await;
}

/// An order stream resumes like a job stream: the owner gets the missed
/// events; another user gets `recovered: false`.
async fn order_stream_resumes_for_its_owner_only(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    let ack = place(
        &mut alice,
        "o-r",
        json!({"symbol": "ETH-USD", "side": "buy", "qty": 3}),
    )
    .await;
    let id = ack["data"]["orderId"].as_str().unwrap().to_owned();
    let events = alice.events_until(is_order_end).await;
    let first = &events[0].1;
    let stream = format!("order:{id}");
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    alice.close().await;

    let resume =
        json!({"token": gw.token("alice"), "resume": {stream.clone(): {"epoch": epoch, "seq": 1}}});
    let mut again = Client::connect(gw.addr, resume).await.unwrap();
    let replayed = again.events_until(|n, _| n == "stream:recovered:v1").await;
    let (_, outcome) = replayed.last().unwrap();
    assert_eq!(outcome["recovered"], true, "{replayed:?}");
    let seqs: Vec<u64> = replayed[..replayed.len() - 1]
        .iter()
        .map(|(_, e)| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (2..=events.len() as u64).collect::<Vec<_>>());
    again.close().await;

    let resume = json!({"token": gw.token("mallory"), "resume": {stream.clone(): {"epoch": epoch, "seq": 1}}});
    let mut mallory = Client::connect(gw.addr, resume).await.unwrap();
    let (name, outcome) = mallory.event().await;
    assert_eq!(name, "stream:recovered:v1");
    assert_eq!(outcome["recovered"], false);
    assert_eq!(outcome["seq"], 0, "nothing about the stream leaks");
    mallory.close().await;
    gw.stop().await;
}

async fn reqwest_get(gw: &Gateway, path: &str, user: &str) -> Value {
    let (status, body) = get(gw, path, user).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn reqwest_status(gw: &Gateway, path: &str, user: &str) -> u16 {
    get(gw, path, user).await.0
}

async fn get(gw: &Gateway, path: &str, user: &str) -> (u16, String) {
    use tower::ServiceExt;
    let req = axum::http::Request::get(path)
        .header("authorization", format!("Bearer {}", gw.token(user)))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = gw.router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

on_both_brokers!(
    placed_order_goes_accepted_partially_filled_filled_with_contiguous_seq,
    same_key_three_times_places_one_order,
    cancel_before_fill_publishes_cancelled_and_stops,
    cancel_after_fill_acks_filled_without_event,
    foreign_cancel_is_not_found,
    invalid_orders_are_invalid_payload,
    order_stream_resumes_for_its_owner_only,
);
