//! The memory floor of a lean Engine.IO v4 / Socket.IO v5 server: how much
//! RSS an idle connection costs a server that keeps nothing but what the
//! protocol needs, on the same stack as the gateway (tokio,
//! tokio-tungstenite with a 1 KiB read buffer), one task per connection
//! holding the WebSocket and its heartbeat timer. No auth, no rooms, no
//! Redis: it answers the open packet, CONNECT (and the gateway's
//! `session:welcome:v1`) and pings every 25 s. `bench/eio-floor.sh` runs it
//! against its own client and prints KiB per connection, the figure to set
//! beside the gateway's (docs/benchmarks.md, "Where the 8 KiB target is").
//!
//! ```text
//! eio_floor server PORT          prints "listening PORT" (0: any free port); answers
//!                                "rss" on stdin with "rss_kb N"
//! eio_floor client PORT COUNT    opens COUNT connections, prints "held COUNT", holds them
//!                                until stdin closes
//! ```

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const PING_EVERY: Duration = Duration::from_secs(25);

fn rss_kb() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS in /proc/self/status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS without a value")?
        .parse()?)
}

/// One connection: the open packet, then CONNECT answered and pings sent
/// until the peer goes.
async fn connection(stream: TcpStream, n: u64) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let open = format!(
        r#"0{{"sid":"s{n:015}","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":65536}}"#
    );
    if ws.send(Message::text(open)).await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) if text.as_str().starts_with("40") => {
                    let _ = ws.feed(Message::text(format!(r#"40{{"sid":"c{n:015}"}}"#))).await;
                    let _ = ws.feed(Message::text(r#"42["session:welcome:v1",{"protocol":1}]"#)).await;
                    if ws.flush().await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            _ = ping.tick() => {
                if ws.send(Message::text("2")).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn server(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    // Asked on stdin ("rss"), answered on stdout: no timer in the process.
    tokio::spawn(async {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim() == "rss" {
                match rss_kb() {
                    Ok(kb) => println!("rss_kb {kb}"),
                    Err(e) => println!("error {e}"),
                }
            }
        }
    });
    println!("listening {}", listener.local_addr()?.port());
    let mut n = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        n += 1;
        tokio::spawn(connection(stream, n));
    }
}

fn expect(
    what: &str,
    frame: Option<Result<Message, impl std::fmt::Debug>>,
    prefix: &str,
) -> anyhow::Result<()> {
    match frame {
        Some(Ok(Message::Text(t))) if t.as_str().starts_with(prefix) => Ok(()),
        other => bail!("expected {what}, got {other:?}"),
    }
}

async fn client(port: u16, count: usize) -> anyhow::Result<()> {
    let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), tcp).await?;
        expect("the open packet", ws.next().await, "0{")?;
        ws.send(Message::text(r#"40{"token":"t"}"#)).await?;
        expect("the CONNECT reply", ws.next().await, "40{")?;
        expect("the welcome", ws.next().await, r#"42["session:welcome:v1""#)?;
        held.push(ws);
    }
    println!("held {}", held.len());
    // Hold them until told to stop (stdin closes).
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = lines.next_line().await {}
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: eio_floor server PORT | eio_floor client PORT COUNT";
    let port: u16 = args.get(2).context(usage)?.parse().context(usage)?;
    match args.get(1).map(String::as_str) {
        Some("server") => server(port).await,
        Some("client") => {
            let count = args.get(3).context(usage)?.parse().context(usage)?;
            client(port, count).await
        }
        _ => bail!(usage),
    }
}
