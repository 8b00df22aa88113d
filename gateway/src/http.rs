//! HTTP routes: health, readiness, metrics, jobs (list, snapshot, events),
//! worker publishing, analytics, revocation, dev tokens, and the Origin check
//! in front of the WebSocket upgrade.
//!
//! Errors are `{"error": {"code", "message"}}`. User routes answer only the
//! owner (another user's job is `404`); `/api/v1/publish` and
//! `/api/v1/analytics/summary` need a token whose `role` is `service` or
//! `admin`; `/api/v1/admin/revoke` needs `admin`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Claims;
use crate::broker::{JobRecord, today};
use crate::edge::read_body;
use crate::publish::PublishError;
use crate::stream::Stream;
use crate::{AppState, TokenRefused};

/// Lifetime of a token from `POST /api/v1/dev/token`, in seconds.
pub const DEV_TOKEN_TTL_SECS: u64 = 3600;

/// The HTTP routes (without Socket.IO and static files).
pub fn routes(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/jobs/{id}", get(job))
        .route("/api/v1/jobs/{id}/events", get(job_events))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/publish", post(publish))
        .route("/api/v1/analytics/summary", get(analytics_summary))
        .route("/api/v1/admin/revoke", post(revoke));
    if state.config.dev_tokens {
        router = router.route("/api/v1/dev/token", post(dev_token));
    }
    router.with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    match state.broker.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "broker unreachable").into_response()
        }
    }
}

/// Largest body `POST /api/v1/publish` accepts (one event).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Largest body of the other routes (a user id, a role).
const SMALL_BODY_BYTES: usize = 4096;

/// Reads a JSON body of at most `limit` bytes; `Err` is the answer: 400
/// `invalid_payload` ("expected {expected}") when it is not that JSON, or the
/// status of a body too large, too slow or broken. Routes call it after
/// checking their caller.
async fn json_body<T: serde::de::DeserializeOwned>(
    body: Body,
    limit: usize,
    expected: &str,
) -> Result<T, Response> {
    let bytes = read_body(body, limit)
        .await
        .map_err(|e| error(e.status(), e.code(), &e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            &format!("expected {expected}"),
        )
    })
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The claims of the request's bearer token; `Err` is the answer to give:
/// 401 when it is missing, invalid or revoked, 503 when the revocation check
/// could not reach the broker (a broker failure is never an auth failure).
async fn bearer(state: &AppState, headers: &HeaderMap) -> Result<Claims, Response> {
    let token = bearer_token(headers).ok_or_else(unauthorized)?;
    match state.authenticate(token).await {
        Ok(claims) => Ok(claims),
        Err(TokenRefused::Unavailable(e)) => Err(unavailable(e)),
        Err(_) => Err(unauthorized()),
    }
}

/// The token of the `Authorization: Bearer …` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    Some(value.strip_prefix("Bearer ")?.trim())
}

/// The claims of a caller whose token is valid (else 401) and whose role
/// `allowed` accepts (else 403).
async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    allowed: fn(&Claims) -> bool,
) -> Result<Claims, Response> {
    let claims = bearer(state, headers).await?;
    if allowed(&claims) {
        Ok(claims)
    } else {
        Err(forbidden())
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid bearer token is required",
    )
}

fn forbidden() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this route needs a service or admin token",
    )
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "broker call failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "retry later",
    )
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(want) = &state.config.metrics_token {
        let given = bearer_token(&headers).unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), want.as_bytes()) {
            if let Err(refused) = caller(&state, &headers, Claims::is_service).await {
                return refused;
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    /// Only jobs of this kind.
    kind: Option<String>,
}

/// Jobs read to answer a list filtered by kind (the newest this many).
const KIND_SCAN: usize = 1000;

/// `GET /api/v1/jobs?limit=N&kind=K`: the caller's jobs (of kind `K` when
/// given), newest first, at most `N` (50 unless given, at most 100).
async fn jobs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let claims = match bearer(&state, &headers).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let limit = q.limit.unwrap_or(50).min(100);
    let scan = if q.kind.is_some() { KIND_SCAN } else { limit };
    match state.broker.jobs_of(&claims.sub, scan).await {
        Ok(jobs) => {
            let jobs: Vec<&JobRecord> = jobs
                .iter()
                .filter(|j| q.kind.as_ref().is_none_or(|k| *k == j.kind))
                .take(limit)
                .collect();
            Json(json!({ "jobs": jobs })).into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// The caller's job `id`, or the `404`/`503` to answer.
async fn own_job(state: &AppState, claims: &Claims, id: &str) -> Result<JobRecord, Response> {
    match state.broker.job(id).await {
        Ok(Some(job)) if job.owner == claims.sub => Ok(job),
        Ok(_) => Err(error(StatusCode::NOT_FOUND, "not_found", "no such job")),
        Err(e) => Err(unavailable(e)),
    }
}

/// The caller's snapshot of their job `id`: the record with its stream,
/// epoch and head seq; `404` when it is missing or someone else's.
async fn snapshot(state: &AppState, headers: &HeaderMap, id: &str) -> Response {
    let claims = match bearer(state, headers).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let job = match own_job(state, &claims, id).await {
        Ok(job) => job,
        Err(refused) => return refused,
    };
    let stream = job.stream();
    let head = match state.broker.head(&stream).await {
        Ok(h) => h,
        Err(e) => return unavailable(e),
    };
    let (epoch, seq) = head.map(|h| (h.epoch, h.seq)).unwrap_or_default();
    let mut body = serde_json::to_value(&job).unwrap_or_default();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("stream".into(), json!(stream.name()));
        obj.insert("epoch".into(), json!(epoch));
        obj.insert("seq".into(), json!(seq));
    }
    Json(body).into_response()
}

/// `GET /api/v1/openapi.json`: the OpenAPI 3 document of this API.
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::OPENAPI_JSON,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    after: Option<u64>,
}

/// `GET /api/v1/jobs/{id}/events?after=N`: the owner's events with seq > N
/// still in history, with the stream's epoch and head seq. `complete` is
/// false when history no longer reaches back to N+1 (reload the snapshot).
async fn job_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Response {
    events(&state, &headers, &id, q).await
}

/// The owner's view of the history of a job's stream after `q.after`.
async fn events(state: &AppState, headers: &HeaderMap, id: &str, q: EventsQuery) -> Response {
    let claims = match bearer(state, headers).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let stream = match own_job(state, &claims, id).await {
        Ok(job) => job.stream(),
        Err(refused) => return refused,
    };
    let after = q.after.unwrap_or(0);
    let (head, events) = match (
        state.broker.head(&stream).await,
        state.broker.history(&stream, after).await,
    ) {
        (Ok(h), Ok(ev)) => (h, ev),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let (epoch, seq) = head.map(|h| (h.epoch, h.seq)).unwrap_or_default();
    let complete = events
        .first()
        .map_or(after >= seq, |(_, e)| e.seq == after + 1);
    let events: Vec<Value> = events
        .into_iter()
        .map(|(event, envelope)| json!({"event": event, "envelope": envelope}))
        .collect();
    Json(json!({
        "stream": stream.name(),
        "epoch": epoch,
        "seq": seq,
        "complete": complete,
        "events": events,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    /// The owner: required for a private stream, checked against the record
    /// of a job when given, absent for a topic.
    #[serde(default)]
    user: Option<String>,
    /// `job:{id}`, a topic, or the name of the user's private stream.
    stream: String,
    /// The contract name, `domain:name:vN`.
    event: String,
    data: Value,
}

/// `POST /api/v1/publish` (service token): publishes one event through the
/// one publish path ([`crate::publish::Publisher`]).
async fn publish(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    if let Err(refused) = caller(&state, &headers, Claims::is_service).await {
        return refused;
    }
    let req: PublishRequest =
        match json_body(body, MAX_BODY_BYTES, "{user?, stream, event, data}").await {
            Ok(req) => req,
            Err(refused) => return refused,
        };
    let user = req.user.as_deref();
    let stream = match Stream::for_publisher(&req.stream, user, &state.topics) {
        Ok(stream) => stream,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_payload", &e.to_string()),
    };
    let published = match user {
        Some(user) => {
            state
                .publisher
                .publish_for(user, &stream, &req.event, req.data)
                .await
        }
        None => state.publisher.publish(&stream, &req.event, req.data).await,
    };
    match published {
        Ok(env) => Json(env).into_response(),
        Err(e) => publish_error(&e),
    }
}

/// The HTTP answer to a refused publish.
fn publish_error(e: &PublishError) -> Response {
    let status = match e {
        PublishError::Invalid(_) => StatusCode::BAD_REQUEST,
        PublishError::NotFound => StatusCode::NOT_FOUND,
        PublishError::Ended => StatusCode::CONFLICT,
        PublishError::Unavailable(e) => return unavailable(e),
    };
    error(status, e.code(), &e.to_string())
}

#[derive(Debug, Deserialize)]
struct SummaryQuery {
    day: Option<String>,
}

/// `GET /api/v1/analytics/summary?day=YYYY-MM-DD` (service token): DAU,
/// sessions and jobs of the day (all nodes), plus this node's delivery
/// latency quantiles.
async fn analytics_summary(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<SummaryQuery>,
) -> Response {
    if let Err(refused) = caller(&state, &headers, Claims::is_service).await {
        return refused;
    }
    let day = q.day.unwrap_or_else(today);
    let valid_day = day.len() == 10
        && day.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !valid_day {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            "day must be YYYY-MM-DD",
        );
    }
    match state.broker.day_stats(&day).await {
        Ok(stats) => {
            let mut body = serde_json::to_value(&stats).unwrap_or_default();
            if let Some(obj) = body.as_object_mut() {
                obj.insert("latency".into(), state.metrics.latency_quantiles());
                obj.insert("connections".into(), json!(state.metrics.connections()));
            }
            Json(body).into_response()
        }
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Deserialize)]
struct RevokeRequest {
    user: String,
}

/// `POST /api/v1/admin/revoke` `{user}` (admin token): closes the user's
/// sockets on every node, each after a `session:revoked:v1` event.
async fn revoke(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    if let Err(refused) = caller(&state, &headers, Claims::is_admin).await {
        return refused;
    }
    let req: RevokeRequest = match json_body(body, SMALL_BODY_BYTES, "{user}").await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    match state.revoke(&req.user).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({"ok": true}))).into_response(),
        Err(e) => unavailable(e),
    }
}

/// `GET /api/v1/jobs/{id}`: the owner's snapshot of a job with its stream position.
async fn job(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    snapshot(&state, &headers, &id).await
}

#[derive(Debug, Deserialize)]
struct DevTokenRequest {
    sub: String,
    /// `service` or `admin` for the analytics page and worker demos.
    #[serde(default)]
    role: Option<String>,
}

/// `POST /api/v1/dev/token`: a token for any `sub`. Only with `dev_tokens` on.
async fn dev_token(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let req: DevTokenRequest = match json_body(body, SMALL_BODY_BYTES, "{sub, role?}").await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    if req.sub.is_empty() || req.sub.len() > 128 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            "sub must be 1 to 128 bytes",
        );
    }
    if !matches!(req.role.as_deref(), None | Some("service" | "admin")) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            "role must be service or admin when given",
        );
    }
    match state
        .auth
        .mint_with_role(&req.sub, DEV_TOKEN_TTL_SECS, req.role.as_deref())
    {
        Ok(token) => Json(json!({"token": token})).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "minting failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "could not mint a token",
            )
        }
    }
}

/// Refuses (403) a request that upgrades, or that reaches the Socket.IO
/// endpoint (WebSocket or long-polling), when its `Origin` is not exactly one
/// of the allowed origins, or when it carries several `Origin` headers. An
/// empty list allows every origin (development); a request without `Origin`
/// (not a browser) passes. Any `Upgrade` header counts, whatever its form
/// (`websocket`, `WebSocket, foo`, ...).
pub async fn origin_check(
    State(allowed): State<Arc<Vec<String>>>,
    req: Request,
    next: Next,
) -> Response {
    let guarded =
        req.headers().contains_key(header::UPGRADE) || req.uri().path().starts_with("/socket.io");
    if guarded {
        let mut origins = req.headers().get_all(header::ORIGIN).iter();
        let origin = origins.next();
        if origins.next().is_some() {
            return (StatusCode::FORBIDDEN, "several Origin headers").into_response();
        }
        if let (Some(origin), false) = (origin, allowed.is_empty()) {
            let ok = origin
                .to_str()
                .is_ok_and(|o| allowed.iter().any(|a| a == o));
            if !ok {
                return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
            }
        }
    }
    next.run(req).await
}
