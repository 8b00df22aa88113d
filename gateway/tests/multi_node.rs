//! Several gateway nodes (separate Socket.IO servers and Redis connections)
//! on one Redis and on the local Redis Cluster: each user's events reach that
//! user's sockets on every node, a socket resumes on another node without a
//! gap, and a revocation closes the user's sockets everywhere.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Backend, Client, Gateway, is_completed, start_job};
use serde_json::json;
use tower::ServiceExt;

async fn two_nodes(backend: Backend) -> (Gateway, Gateway) {
    let a = Gateway::start(backend).await;
    let prefix = a.config.key_prefix.clone();
    let b = Gateway::start_with(backend, move |c| c.key_prefix = prefix).await;
    (a, b)
}

/// Runs a scenario on one Redis and on the cluster.
macro_rules! on_redis_and_cluster {
    ($($name:ident),* $(,)?) => {
        mod on_redis {
            $(#[tokio::test]
            async fn $name() { super::$name(super::Backend::Redis).await }) *
        }
        mod on_cluster {
            $(#[tokio::test]
            async fn $name() { super::$name(super::Backend::Cluster).await }) *
        }
    };
}

on_redis_and_cluster!(
    clients_on_two_nodes_get_their_own_users_events_and_never_anothers,
    admin_revoke_closes_the_users_sockets_on_every_node_only,
    gateway_processes_deliver_each_users_events_to_that_user_only,
    a_socket_resumes_on_another_process_without_a_gap,
);

async fn clients_on_two_nodes_get_their_own_users_events_and_never_anothers(backend: Backend) {
    let (a, b) = two_nodes(backend).await;
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

async fn admin_revoke_closes_the_users_sockets_on_every_node_only(backend: Backend) {
    let (a, b) = two_nodes(backend).await;
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
    async fn spawn(redis_url: &str, prefix: &str) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_liveline-gateway"))
            .args(["serve", "--port", "0", "--redis-url", redis_url])
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

/// Gateway processes on one Redis (two) or the cluster (three), with a
/// node in this process only to mint tokens and clean the prefix up after.
async fn processes(backend: Backend) -> (Gateway, Vec<Process>) {
    let keeper = Gateway::start(backend).await;
    let url = keeper.config.redis_url.clone().unwrap();
    let n = if backend == Backend::Cluster { 3 } else { 2 };
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Process::spawn(&url, &keeper.config.key_prefix).await);
    }
    (keeper, nodes)
}

async fn gateway_processes_deliver_each_users_events_to_that_user_only(backend: Backend) {
    let (keeper, nodes) = processes(backend).await;
    let auth = |sub: &str| json!({ "token": keeper.token(sub) });
    let mut alices = Vec::new();
    let mut bobs = Vec::new();
    for node in &nodes {
        alices.push(Client::connect(node.addr, auth("alice")).await.unwrap());
        bobs.push(Client::connect(node.addr, auth("bob")).await.unwrap());
    }
    one_users_job_reaches_that_user_on_every_node("alice", &mut alices, &mut bobs).await;
    one_users_job_reaches_that_user_on_every_node("bob", &mut bobs, &mut alices).await;
    for c in alices.into_iter().chain(bobs) {
        c.close().await;
    }
    drop(nodes);
    keeper.stop().await;
}

/// Starts a job on `who`'s socket on the last node; each of `mine` (one
/// socket per node) gets the same events once and in order, `others` none.
async fn one_users_job_reaches_that_user_on_every_node(
    who: &str,
    mine: &mut [Client],
    others: &mut [Client],
) {
    let starter = mine.last_mut().unwrap();
    let id = start_job(starter, &format!("k-proc-{who}"), "research").await;
    let first = mine[0].events_until(is_completed).await;
    for (i, (_, env)) in first.iter().enumerate() {
        assert_eq!(env["stream"], format!("job:{id}").as_str());
        assert_eq!(env["seq"], (i + 1) as u64, "once, in order: {first:?}");
    }
    for socket in mine.iter_mut().skip(1) {
        let seen = socket.events_until(is_completed).await;
        assert_eq!(
            seen, first,
            "{who}'s sockets on every node get the same events"
        );
    }
    for other in others.iter_mut() {
        assert!(
            other
                .maybe_event(Duration::from_millis(200))
                .await
                .is_none()
        );
    }
}

async fn a_socket_resumes_on_another_process_without_a_gap(backend: Backend) {
    let (keeper, nodes) = processes(backend).await;
    let auth = json!({ "token": keeper.token("alice") });
    let mut first = Client::connect(nodes[0].addr, auth).await.unwrap();
    let id = start_job(&mut first, "k-hop", "research").await;
    let stream = format!("job:{id}");
    // Read three events on the first node, then leave mid-job.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let (name, env) = first.event().await;
        if env["stream"] == stream.as_str() {
            seen.push((name, env));
        }
    }
    first.close().await;
    let epoch = seen[2].1["epoch"].clone();
    let resume = json!({
        "token": keeper.token("alice"),
        "resume": {&stream: {"epoch": epoch, "seq": 3}},
    });
    let mut again = Client::connect(nodes.last().unwrap().addr, resume)
        .await
        .unwrap();
    let rest = again.events_until(is_completed).await;
    let recovered: Vec<_> = rest
        .iter()
        .filter(|(n, _)| n == "stream:recovered:v1")
        .collect();
    assert_eq!(recovered.len(), 1, "{rest:?}");
    assert_eq!(recovered[0].1["recovered"], true, "{rest:?}");
    seen.extend(rest.into_iter().filter(|(n, _)| n != "stream:recovered:v1"));
    for (i, (_, env)) in seen.iter().enumerate() {
        assert_eq!(env["seq"], (i + 1) as u64, "no gap, no repeat: {seen:?}");
        assert_eq!(env["epoch"], epoch);
    }
    again.close().await;
    drop(nodes);
    keeper.stop().await;
}
