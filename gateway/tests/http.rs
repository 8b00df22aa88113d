//! HTTP routes: health, readiness, job snapshots, dev tokens, static files,
//! the Origin check in every header form, and long-polling (on by default).
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Backend, Gateway, is_completed, start_job};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower::ServiceExt;

async fn send(router: &axum::Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, body.to_vec())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

async fn health_and_readiness_answer_ok(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let router = gw.router.clone();
    assert_eq!(send(&router, get("/healthz")).await.0, StatusCode::OK);
    assert_eq!(send(&router, get("/readyz")).await.0, StatusCode::OK);
    gw.stop().await;
}

async fn job_snapshot_is_served_to_its_owner_only_with_seq_and_epoch(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    let id = start_job(&mut alice, "k-h", "research").await;
    let events = alice.events_until(is_completed).await;
    let router = gw.router.clone();
    let uri = format!("/api/v1/jobs/{id}");
    let authed = |sub: &str| {
        Request::get(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", gw.token(sub)))
            .body(Body::empty())
            .unwrap()
    };
    let (status, body) = send(&router, authed("alice")).await;
    assert_eq!(status, StatusCode::OK);
    let job: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["owner"], "alice");
    assert_eq!(job["kind"], "research");
    assert_eq!(job["status"], "completed");
    assert_eq!(job["progress"], 1.0);
    assert_eq!(job["seq"], events.len() as u64);
    assert_eq!(job["epoch"], events[0].1["epoch"]);
    assert_eq!(send(&router, authed("bob")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(&router, get(&uri)).await.0, StatusCode::UNAUTHORIZED);
    alice.close().await;
    gw.stop().await;
}

on_every_broker!(
    health_and_readiness_answer_ok,
    job_snapshot_is_served_to_its_owner_only_with_seq_and_epoch,
);

fn token_request() -> Request<Body> {
    Request::post("/api/v1/dev/token")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"sub": "carol"}).to_string()))
        .unwrap()
}

#[tokio::test]
async fn dev_token_route_exists_only_when_enabled() {
    let (off, _) = liveline_gateway::build(liveline_gateway::Config::default())
        .await
        .unwrap();
    assert_eq!(send(&off, token_request()).await.0, StatusCode::NOT_FOUND);
    let config = liveline_gateway::Config {
        dev_tokens: true,
        ..Default::default()
    };
    let (on, _) = liveline_gateway::build(config.clone()).await.unwrap();
    // The claims of the token a dev-token answer carries.
    let claims_of = |body: &[u8]| {
        let token: Value = serde_json::from_slice(body).unwrap();
        config
            .jwt()
            .unwrap()
            .verify(token["token"].as_str().unwrap())
            .unwrap()
    };
    let (status, body) = send(&on, token_request()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(claims_of(&body).sub, "carol");
    // The analytics page's dev login: a token that may read analytics only.
    let ask = |role: &str| {
        Request::post("/api/v1/dev/token")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"sub": "dana", "role": role}).to_string()))
            .unwrap()
    };
    let (status, body) = send(&on, ask("analytics")).await;
    assert_eq!(status, StatusCode::OK);
    let claims = claims_of(&body);
    assert!(claims.may_read_analytics() && !claims.is_service());
    assert_eq!(send(&on, ask("root")).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn static_dir_is_served_with_index_html_for_spa_routes() {
    let dir = std::env::temp_dir().join(format!(
        "ll-static-{}",
        liveline_gateway::broker::random_hex()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<h1>app</h1>").unwrap();
    std::fs::write(dir.join("app.js"), "console.log(1)").unwrap();
    let config = liveline_gateway::Config {
        static_dir: Some(dir.clone()),
        ..Default::default()
    };
    let (router, _) = liveline_gateway::build(config).await.unwrap();
    assert_eq!(
        send(&router, get("/app.js")).await,
        (StatusCode::OK, b"console.log(1)".to_vec())
    );
    assert_eq!(
        send(&router, get("/jobs/42")).await.1,
        b"<h1>app</h1>".to_vec()
    );
    assert_eq!(send(&router, get("/healthz")).await.0, StatusCode::OK);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn polling_is_served_by_default_and_refused_when_websocket_only() {
    let (router, _) = liveline_gateway::build(liveline_gateway::Config::default())
        .await
        .unwrap();
    let (status, body) = send(&router, get("/socket.io/?EIO=4&transport=polling")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "official clients start with polling"
    );
    let open = String::from_utf8(body).unwrap();
    assert!(
        open.starts_with("0{") && open.contains(r#""upgrades":["websocket"]"#),
        "{open}"
    );
    let config = liveline_gateway::Config {
        polling: false,
        ..Default::default()
    };
    let (router, _) = liveline_gateway::build(config).await.unwrap();
    let (status, _) = send(&router, get("/socket.io/?EIO=4&transport=polling")).await;
    assert!(
        status.is_client_error(),
        "websocket only: polling refused, got {status}"
    );
}

/// A request to the Socket.IO endpoint with these headers, through the app.
async fn socketio_request(router: &axum::Router, headers: &[(&str, &str)]) -> StatusCode {
    let mut req = Request::get("/socket.io/?EIO=4&transport=websocket");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(router, req.body(Body::empty()).unwrap()).await.0
}

#[tokio::test]
async fn the_origin_check_holds_whatever_the_form_of_the_headers() {
    let config = liveline_gateway::Config {
        allowed_origins: vec!["https://app.example".to_owned()],
        ..Default::default()
    };
    let (router, _) = liveline_gateway::build(config).await.unwrap();
    let evil = ("Origin", "https://evil.example");
    let good = ("Origin", "https://app.example");
    let upgrade_list = [("Connection", "Upgrade"), ("Upgrade", "websocket, foo")];
    for (name, headers) in [
        (
            "token list in Upgrade",
            vec![upgrade_list[0], upgrade_list[1], evil],
        ),
        (
            "mixed-case Upgrade",
            vec![upgrade_list[0], ("Upgrade", "WebSocket"), evil],
        ),
        ("no Upgrade header (polling)", vec![evil]),
        (
            "allowed then foreign Origin",
            vec![upgrade_list[0], ("Upgrade", "websocket"), good, evil],
        ),
    ] {
        assert_eq!(
            socketio_request(&router, &headers).await,
            StatusCode::FORBIDDEN,
            "{name}"
        );
    }
    let (status, _) = send(
        &router,
        Request::get("/socket.io/?EIO=4&transport=polling")
            .header("Origin", "https://evil.example")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "polling from a foreign origin"
    );
    let (status, _) = send(
        &router,
        Request::get("/socket.io/?EIO=4&transport=polling")
            .header("Origin", "https://app.example")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "polling from the allowed origin");
    // Several Origin headers are refused even with no allowlist.
    let (open, _) = liveline_gateway::build(liveline_gateway::Config::default())
        .await
        .unwrap();
    assert_eq!(
        socketio_request(&open, &[good, good]).await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn websocket_upgrade_from_a_foreign_origin_is_refused_with_403() {
    let gw = Gateway::start_with(Backend::Memory, |c| {
        c.allowed_origins = vec!["https://app.example".to_owned()];
    })
    .await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", gw.addr);
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), StatusCode::FORBIDDEN)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "https://app.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
    gw.stop().await;
}

/// Building the app has no side effects: the demo and the control listener
/// start with `Handle::start`, not before: an action queued after building is
/// still in the queue (no demo consumed it), and the broker's control
/// receiver was not taken.
#[tokio::test]
async fn building_the_app_starts_nothing_until_the_handle_starts_it() {
    use liveline_gateway::broker::{Broker, MemoryBroker, QueuedAction, WorkQueue};
    let broker = std::sync::Arc::new(MemoryBroker::new(100));
    let config = liveline_gateway::Config {
        demo: liveline_gateway::demo::Settings {
            enabled: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let (_router, handle) = liveline_gateway::app(config, broker.clone()).unwrap();
    let probe = QueuedAction {
        action: "doc:probe:v1".to_owned(),
        user: "alice".to_owned(),
        data: json!({}),
        key: None,
    };
    broker.enqueue_action(&probe).await.unwrap();
    let waiting = broker
        .read_actions("test", 16, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(waiting.len(), 1, "nothing read the queue before start()");
    let dyn_broker: &dyn Broker = &*broker;
    assert!(
        dyn_broker.take_control().is_some(),
        "no control listener before start()"
    );
    drop(handle);
}
