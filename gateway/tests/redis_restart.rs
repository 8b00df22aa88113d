//! A Redis restart: the pub/sub connection comes back and resubscribes; the
//! sockets whose live feed was cut are told to resume, and live events flow
//! again. Runs its own `redis-server` on a spare port.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, Client, Gateway};
use serde_json::json;

fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private `redis-server`, killed when dropped (also when the test panics).
struct Server(std::process::Child);

impl Server {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_server(port: u16) -> Server {
    Server(
        std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH"),
    )
}

async fn wait_up(url: &str) {
    for _ in 0..100 {
        if let Ok(c) = redis::Client::open(url) {
            if c.get_multiplexed_async_connection().await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("redis-server did not start");
}

#[tokio::test]
async fn pubsub_reconnects_after_redis_restart_and_cut_sockets_resume() {
    let port = spare_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut server = redis_server(port);
    wait_up(&url).await;
    let u = url.clone();
    let gw = Gateway::start_with(Backend::Redis, move |c| c.redis_url = Some(u)).await;
    let mut alice = gw.connect("alice").await;
    server.kill();
    // The live feed is gone: the socket is told to reconnect.
    alice.until_closed(Duration::from_secs(5)).await;
    let _server = redis_server(port);
    wait_up(&url).await;
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
