//! Two gateway nodes (separate Socket.IO servers and Redis connections) on one
//! Redis: each user's events reach that user's sockets on every node, and a
//! revocation closes the user's sockets everywhere.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Backend, Client, Gateway, is_completed, start_job};
use serde_json::json;
use tower::ServiceExt;

async fn two_nodes() -> (Gateway, Gateway) {
    let a = Gateway::start(Backend::Redis).await;
    let prefix = a.config.key_prefix.clone();
    let b = Gateway::start_with(Backend::Redis, move |c| c.key_prefix = prefix).await;
    (a, b)
}

#[tokio::test]
async fn clients_on_two_nodes_get_their_own_users_events_and_never_anothers() {
    let (a, b) = two_nodes().await;
    let mut alice_a = a.connect("alice").await;
    let mut alice_b = b.connect("alice").await;
    let mut bob_b = b.connect("bob").await;
    let id = start_job(&mut alice_a, "k-multi-a", "research").await;
    let on_a = alice_a.events_until(is_completed).await;
    let on_b = alice_b.events_until(is_completed).await;
    assert_eq!(on_a, on_b, "both of alice's sockets get the same events");
    assert!(
        on_a.iter()
            .all(|(_, e)| e["stream"] == format!("job:{id}").as_str())
    );
    for (i, (_, env)) in on_a.iter().enumerate() {
        assert_eq!(env["seq"], (i + 1) as u64, "the job ran once: {on_a:?}");
    }
    assert!(
        bob_b
            .maybe_event(Duration::from_millis(300))
            .await
            .is_none()
    );

    let bob_job = start_job(&mut bob_b, "k-multi-b", "research").await;
    let bobs = bob_b.events_until(is_completed).await;
    assert!(
        bobs.iter()
            .all(|(_, e)| e["stream"] == format!("job:{bob_job}").as_str())
    );
    assert!(
        alice_a
            .maybe_event(Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(
        alice_b
            .maybe_event(Duration::from_millis(100))
            .await
            .is_none()
    );
    for c in [alice_a, alice_b, bob_b] {
        c.close().await;
    }
    b.handle.shutdown();
    a.stop().await;
}

#[tokio::test]
async fn admin_revoke_closes_the_users_sockets_on_every_node_only() {
    let (a, b) = two_nodes().await;
    let old_token = a.token("alice");
    let mut alice_a = a.connect("alice").await;
    let mut alice_b = b.connect("alice").await;
    let mut bob_a = a.connect("bob").await;
    let revoke = |token: String| {
        Request::post("/api/v1/admin/revoke")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"user": "alice"}).to_string()))
            .unwrap()
    };
    let res = a
        .router
        .clone()
        .oneshot(revoke(a.token("mallory")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "users cannot revoke");
    let res = a
        .router
        .clone()
        .oneshot(revoke(a.role_token("ops", "admin")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    for alice in [&mut alice_a, &mut alice_b] {
        let seen = alice.until_closed(Duration::from_secs(3)).await;
        assert!(
            seen.iter()
                .any(|(n, e)| n == "session:revoked:v1" && e["reason"] == "revoked"),
            "{seen:?}"
        );
    }
    // Tokens issued before the revocation are refused on every node, on
    // CONNECT and on REST: a revoked session cannot simply reconnect.
    for node in [&a, &b] {
        let refused = Client::connect(node.addr, json!({ "token": old_token })).await;
        assert_eq!(
            refused.err().map(|e| e["message"].clone()),
            Some(json!("unauthorized"))
        );
        let res = node
            .router
            .clone()
            .oneshot(
                Request::get("/api/v1/jobs")
                    .header(header::AUTHORIZATION, format!("Bearer {old_token}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    // A token issued after it (a new sign-in) works. `iat` is in whole
    // seconds and the revocation covers the current one, so the new sign-in
    // is dated the next second rather than waited for.
    let later = b.claims_token("alice", liveline_gateway::auth::unix_secs() + 1, &[]);
    let mut alice_again = Client::connect(b.addr, json!({ "token": later }))
        .await
        .unwrap();
    start_job(&mut alice_again, "k-alice-again", "research").await;
    alice_again.close().await;
    // Bob is untouched and still gets his events.
    start_job(&mut bob_a, "k-bob", "research").await;
    bob_a.events_until(is_completed).await;
    bob_a.close().await;
    b.handle.shutdown();
    a.stop().await;
}

/// A gateway binary serving on its own port; killed on drop.
struct Process {
    #[allow(dead_code)] // held: dropping it kills the process
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
}

impl Process {
    /// Starts the binary on a free port and waits for its `listening on`
    /// line (it panics when the process exits or never listens).
    async fn spawn(prefix: &str) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_liveline-gateway"))
            .args(["serve", "--port", "0", "--redis-url", common::REDIS_URL])
            .args([
                "--key-prefix",
                prefix,
                "--demo-worker",
                "--demo-step-ms",
                "60",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr = common::listening(child.stdout.take().unwrap()).await;
        Self { child, addr }
    }
}

#[tokio::test]
async fn two_gateway_processes_on_one_redis_deliver_each_users_events_to_that_user_only() {
    // A node in this process only to mint tokens and clean the prefix up after.
    let keeper = Gateway::start(Backend::Redis).await;
    let prefix = keeper.config.key_prefix.clone();
    let (a, b) = (Process::spawn(&prefix).await, Process::spawn(&prefix).await);
    let auth = |sub: &str| json!({ "token": keeper.token(sub) });
    let mut alice_a = common::Client::connect(a.addr, auth("alice"))
        .await
        .unwrap();
    let mut alice_b = common::Client::connect(b.addr, auth("alice"))
        .await
        .unwrap();
    let mut bob_b = common::Client::connect(b.addr, auth("bob")).await.unwrap();

    let id = start_job(&mut alice_a, "k-proc-a", "research").await;
    let on_a = alice_a.events_until(is_completed).await;
    let on_b = alice_b.events_until(is_completed).await;
    assert_eq!(
        on_a, on_b,
        "alice's socket on the other process gets the same events"
    );
    for (i, (_, env)) in on_a.iter().enumerate() {
        assert_eq!(env["stream"], format!("job:{id}").as_str());
        assert_eq!(env["seq"], (i + 1) as u64, "once, in order: {on_a:?}");
    }
    assert!(
        bob_b
            .maybe_event(Duration::from_millis(300))
            .await
            .is_none()
    );

    let bob_job = start_job(&mut bob_b, "k-proc-b", "research").await;
    let bobs = bob_b.events_until(is_completed).await;
    assert!(
        bobs.iter()
            .all(|(_, e)| e["stream"] == format!("job:{bob_job}").as_str())
    );
    assert!(
        alice_b
            .maybe_event(Duration::from_millis(300))
            .await
            .is_none()
    );
    for c in [alice_a, alice_b, bob_b] {
        c.close().await;
    }
    drop((a, b));
    keeper.stop().await;
}
