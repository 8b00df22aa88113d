//! The gateway's own pub/sub reader against real Redis servers: what it
//! drops, what it delivers, how it signs in, and what it does when its
//! connection is cut or a message passes its bound. Each test but the first
//! runs its own `redis-server` on a spare port.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, Client, Gateway, RedisServer, spare_port};
use liveline_gateway::broker::RedisBroker;
use serde_json::json;

/// `user`'s live channel on the gateway's Redis.
fn live_channel(gw: &Gateway, user: &str) -> String {
    format!("{}{{u:{}:{user}}}:live", gw.config.key_prefix, user.len())
}

async fn publish(url: &str, channel: &str, message: &[u8]) {
    let _: i64 = common::redis_query(url, redis::cmd("PUBLISH").arg(channel).arg(message)).await;
}

async fn subscribed(url: &str, channel: &str) -> bool {
    let (_, n): (String, i64) =
        common::redis_query(url, redis::cmd("PUBSUB").arg("NUMSUB").arg(channel)).await;
    n >= 1
}

fn note(seq: u64, data: &str) -> String {
    format!(
        r#"{{"user":"alice","event":"note:added:v1","envelope":{{"stream":"notes","epoch":"e1","seq":{seq},"ts":5,"data":{data}}}}}"#
    )
}

/// Connects `user` again until the gateway admits it (its Redis may be on
/// the way back).
async fn reconnect(gw: &Gateway, user: &str) -> Client {
    let admitted = std::sync::Mutex::new(None);
    let slot = &admitted;
    common::eventually_within(
        "admitted again",
        Duration::from_secs(10),
        move || async move {
            let attempt = Client::connect(gw.addr, json!({"token": gw.token(user)}));
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(c)) => {
                    *slot.lock().unwrap() = Some(c);
                    true
                }
                _ => false,
            }
        },
    )
    .await;
    admitted.into_inner().unwrap().unwrap()
}

async fn live_again(gw: &Gateway, url: &str, user: &str) {
    let mut again = reconnect(gw, user).await;
    let channel = live_channel(gw, user);
    common::eventually("subscribed again", || subscribed(url, &channel)).await;
    publish(url, &channel, note(1, r#"{"n":"again"}"#).as_bytes()).await;
    let (name, env) = again.event().await;
    assert_eq!(
        (name.as_str(), &env["data"]),
        ("note:added:v1", &json!({"n": "again"}))
    );
    again.close().await;
}

#[tokio::test]
async fn messages_that_are_not_live_messages_are_dropped_and_the_rest_delivered() {
    let gw = Gateway::start(Backend::Redis).await;
    let url = common::REDIS_URL;
    let mut alice = gw.connect("alice").await;
    let channel = live_channel(&gw, "alice");
    common::eventually("alice's feed subscribed", || subscribed(url, &channel)).await;
    for junk in [
        "not json".to_owned(),
        r#"{"user":"alice","event":"note:added:v1"}"#.to_owned(),
        // What Lua's JSON decoder lets through but no client could parse.
        note(1, "0x10"),
        note(1, "NaN"),
        note(1, r#"{"a":1"#),
    ] {
        publish(url, &channel, junk.as_bytes()).await;
    }
    publish(url, &channel, &[0xff, 0xfe]).await;
    // The script's own layout, then the same fields in another order with
    // escapes (read field by field): both arrive, as sent.
    publish(url, &channel, note(2, r#"{"n":1}"#).as_bytes()).await;
    let other = r#"{"event":"note:added:v1","envelope":{"seq":3,"data":[1,"\u00e9"],"stream":"no\u0074es","ts":6,"epoch":"e1"},"user":"alice"}"#;
    publish(url, &channel, other.as_bytes()).await;
    let (name, env) = alice.event().await;
    assert_eq!(name, "note:added:v1");
    assert_eq!(
        env,
        json!({"stream":"notes","epoch":"e1","seq":2,"ts":5,"data":{"n":1}})
    );
    let (_, env) = alice.event().await;
    assert_eq!(
        env,
        json!({"seq":3,"data":[1,"é"],"stream":"notes","ts":6,"epoch":"e1"})
    );
    assert!(
        alice
            .maybe_event(Duration::from_millis(200))
            .await
            .is_none(),
        "nothing else"
    );
    alice.close().await;
    common::delete_keys(url, &gw.config.key_prefix).await;
    gw.handle.shutdown();
}

#[tokio::test]
async fn a_cut_pubsub_connection_cuts_live_sockets_and_comes_back() {
    let port = spare_port();
    let url = format!("redis://127.0.0.1:{port}");
    let _server = RedisServer::start(port).await;
    let u = url.clone();
    let gw = Gateway::start_with(Backend::Redis, move |c| c.redis_url = Some(u)).await;
    let mut alice = gw.connect("alice").await;
    let channel = live_channel(&gw, "alice");
    common::eventually("alice's feed subscribed", || subscribed(&url, &channel)).await;
    let killed: i64 = common::redis_query(
        &url,
        redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"),
    )
    .await;
    assert_eq!(killed, 1, "the gateway's one pub/sub connection");
    // Events may have been missed: the socket is told to reconnect.
    alice.until_closed(Duration::from_secs(5)).await;
    live_again(&gw, &url, "alice").await;
    gw.handle.shutdown();
}

#[tokio::test]
async fn pubsub_signs_in_with_the_urls_password() {
    let port = spare_port();
    let _server = RedisServer::start_with(port, &["--requirepass", "s3cret"]).await;
    // AUTH with a password alone, and with a user and a password.
    for url in [
        format!("redis://:s3cret@127.0.0.1:{port}"),
        format!("redis://default:s3cret@127.0.0.1:{port}"),
    ] {
        let u = url.clone();
        let gw = Gateway::start_with(Backend::Redis, move |c| c.redis_url = Some(u)).await;
        live_again(&gw, &url, "alice").await;
        gw.handle.shutdown();
    }
    let wrong = format!("redis://:nope@127.0.0.1:{port}");
    let err = RedisBroker::connect(&wrong, "llwrong:", 10)
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("pass"),
        "a clear error: {err}"
    );
}

#[tokio::test]
async fn a_message_over_the_readers_bound_cuts_the_connection_and_it_comes_back() {
    let port = spare_port();
    let url = format!("redis://127.0.0.1:{port}");
    // Redis's own limit on a subscriber's output (32 MiB) lifted, so that
    // what stops the message is the gateway's reader.
    let _server =
        RedisServer::start_with(port, &["--client-output-buffer-limit", "pubsub 0 0 0"]).await;
    let u = url.clone();
    let gw = Gateway::start_with(Backend::Redis, move |c| c.redis_url = Some(u)).await;
    let mut alice = gw.connect("alice").await;
    let channel = live_channel(&gw, "alice");
    common::eventually("alice's feed subscribed", || subscribed(&url, &channel)).await;
    // A large message within the bound is delivered whole.
    let big = "x".repeat(4 << 20);
    publish(&url, &channel, note(1, &format!("\"{big}\"")).as_bytes()).await;
    let (_, env) = alice.event().await;
    assert_eq!(env["data"].as_str().map(str::len), Some(big.len()));
    // One over 32 MiB is refused as its length is read: the connection is
    // dropped (its sockets resume) and dialled again. (Read whole, it would
    // be dropped as no live message, and the socket would stay open.)
    publish(&url, &channel, "x".repeat((32 << 20) + 1).as_bytes()).await;
    alice.until_closed(Duration::from_secs(10)).await;
    live_again(&gw, &url, "alice").await;
    gw.handle.shutdown();
}
