//! A Redis restart: the pub/sub connection comes back and resubscribes; the
//! sockets whose live feed was cut are told to resume, and live events flow
//! again. Runs its own `redis-server` on a spare port.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, Client, Gateway, RedisServer, spare_port};
use serde_json::json;

#[tokio::test]
async fn pubsub_reconnects_after_redis_restart_and_cut_sockets_resume() {
    let port = spare_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut server = RedisServer::start(port).await;
    let u = url.clone();
    let gw = Gateway::start_with(Backend::Redis, move |c| c.redis_url = Some(u)).await;
    let mut alice = gw.connect("alice").await;
    server.kill();
    // The live feed is gone: the socket is told to reconnect.
    alice.until_closed(Duration::from_secs(5)).await;
    let _server = RedisServer::start(port).await;
    let mut again = None;
    for _ in 0..100 {
        let attempt = Client::connect(gw.addr, json!({"token": gw.token("alice")}));
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = again.expect("reconnects once Redis is back");
    let id = common::start_job(&mut again, "k-restart", "research").await;
    let events = again.events_until(common::is_completed).await;
    assert!(
        events
            .iter()
            .all(|(_, e)| e["stream"] == format!("job:{id}").as_str())
    );
    again.close().await;
    gw.handle.shutdown();
}
