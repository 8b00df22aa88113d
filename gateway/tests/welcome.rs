//! `session:welcome:v1` is the first event on every connection, even when a
//! live event and an ack race it: a burst of events is published to the
//! user's private stream as each socket sends its CONNECT, and each socket
//! sends an acked probe the moment it reads the CONNECT reply. On a
//! multi-threaded runtime, so the connect task, the live fan-out and the
//! action handler really run side by side.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, Gateway};
use futures_util::{SinkExt, StreamExt};
use liveline_gateway::stream::Stream;
use serde_json::json;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

/// How many connections race a burst.
const CONNECTIONS: usize = 150;
/// Events published as each connection sends its CONNECT.
const BURST: u64 = 20;

async fn welcome_comes_first_whatever_races_it(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.demo.enabled = false).await;
    let publisher = gw.handle.state.publisher.clone();
    let stream = Stream::Private {
        user: "racer".to_owned(),
        name: "ticks".to_owned(),
    };
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", gw.addr);
    for i in 0..CONNECTIONS {
        let (mut ws, _) = connect_async(&url).await.unwrap();
        let token = gw.token("racer");
        let mut connected = false;
        let mut first: Option<String> = None;
        loop {
            let Some(Ok(msg)) = ws.next().await else {
                panic!("connection {i} ended");
            };
            let Message::Text(frame) = msg else { continue };
            let frame = frame.to_string();
            if frame.starts_with('0') {
                ws.send(Message::text(format!("40{}", json!({ "token": token }))))
                    .await
                    .unwrap();
                // Live events for this user while the gateway admits the socket.
                let (publisher, stream) = (publisher.clone(), stream.clone());
                tokio::spawn(async move {
                    for n in 0..BURST {
                        publisher
                            .publish(&stream, "race:tick:v1", json!({ "n": n }))
                            .await
                            .unwrap();
                    }
                });
            } else if frame == "2" {
                ws.send(Message::text("3")).await.unwrap();
            } else if frame.starts_with("40") && !connected {
                connected = true;
                // An acked action at once, racing the welcome.
                ws.send(Message::text(r#"421["probe:v1"]"#)).await.unwrap();
            } else if frame.starts_with("42") || frame.starts_with("43") {
                first.get_or_insert_with(|| frame.clone());
                if frame.starts_with("431") {
                    break;
                }
            }
        }
        assert_eq!(
            first.as_deref(),
            Some(r#"42["session:welcome:v1",{"protocol":1}]"#),
            "connection {i}: the first event"
        );
        let _ = ws.close(None).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_comes_first_whatever_races_it_on_memory() {
    welcome_comes_first_whatever_races_it(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_comes_first_whatever_races_it_on_redis() {
    welcome_comes_first_whatever_races_it(Backend::Redis).await;
}
