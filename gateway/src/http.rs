//! HTTP routes: health, readiness, metrics, jobs (list, snapshot, events),
//! worker publishing, analytics, revocation, dev tokens, and the Origin check
//! in front of the WebSocket upgrade.
//!
//! Errors are `{"error": {"code", "message"}}`. User routes answer only the
//! owner (another user's job is `404`); `/api/v1/publish` and
//! `/api/v1/analytics/summary` need a token whose `role` is `service` or
//! `admin` (the summary also `analytics`); `/api/v1/admin/revoke` needs
//! `admin`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use liveline::contract::Envelope;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Claims;
use crate::broker::{JobRecord, MAX_BATCH, today};
use crate::edge::read_body;
use crate::openapi::{
    DaySummary, EnvelopeDoc, ErrorBody, JobList, JobSnapshot, StreamEvents, TokenResponse,
};
use crate::publish::{PublishError, lost_reply};
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
        .route("/api/v1/publish/batch", post(publish_batch))
        .route("/api/v1/analytics/summary", get(analytics_summary))
        .route("/api/v1/admin/revoke", post(revoke));
    if state.config.dev_tokens {
        router = router.route("/api/v1/dev/token", post(dev_token));
    }
    router.with_state(state)
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "The process is up.", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the broker (Redis) answers and the node is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses(
    (status = 200, description = "Ready.", body = String),
    (status = 503, description = "Broker unreachable, or shutting down (take the node out of the load balancer).", body = String)))]
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
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

/// Largest body `POST /api/v1/publish` accepts (one event, or a whole batch).
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

/// Prometheus metrics of this node (OpenMetrics text); with `--metrics-token`,
/// only for that bearer token.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), responses(
    (status = 200, description = "Metrics, OpenMetrics text format.", body = String, content_type = "application/openmetrics-text"),
    (status = 401, description = "A metrics token is configured and was not given.", body = String)))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(want) = &state.config.metrics_token {
        let given = bearer_token(&headers).unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), want.as_bytes()) {
            if let Err(refused) = caller(&state, &headers, Claims::is_service).await {
                return refused;
            }
        }
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// At most this many (default 50, at most 100).
    #[param(maximum = 100)]
    limit: Option<usize>,
    /// Only jobs of this kind.
    kind: Option<String>,
}

/// Jobs read to answer a list filtered by kind (the newest this many).
const KIND_SCAN: usize = 1000;

/// The caller's jobs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery), security(("bearerAuth" = [])), responses(
    (status = 200, description = "The jobs.", body = JobList), (status = 401, description = "Missing or invalid bearer token (`unauthorized`).", body = ErrorBody), (status = 503, description = "The broker is unreachable (`unavailable`); retry later.", body = ErrorBody)))]
pub(crate) async fn jobs(
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

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI 3 document.", body = Object)))]
pub(crate) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    after: Option<u64>,
}

/// A job's events still in history after a seq.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs",
    params(("id" = String, Path, description = "The job id."), EventsQuery), security(("bearerAuth" = [])), responses(
    (status = 200, description = "The events.", body = StreamEvents),
    (status = 404, description = "No such job for this user (`not_found`).", body = ErrorBody), (status = 401, description = "Missing or invalid bearer token (`unauthorized`).", body = ErrorBody), (status = 503, description = "The broker is unreachable (`unavailable`); retry later.", body = ErrorBody)))]
pub(crate) async fn job_events(
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
    // Complete: history reaches back to after+1 and has no hole (an entry
    // no reader takes is left out of it).
    let complete = if events.is_empty() {
        after >= seq
    } else {
        (after.saturating_add(1)..)
            .zip(&events)
            .all(|(want, (_, e))| e.seq == want)
    };
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishRequest {
    /// The owner: required for a private stream, checked against the record
    /// of a job when given, absent for a topic.
    #[serde(default)]
    user: Option<String>,
    /// `job:{id}`, a topic, or the name of the user's private stream.
    #[schema(max_length = 256, example = "job:42")]
    stream: String,
    /// The event name, `domain:name:vN`.
    #[schema(pattern = "^[a-z0-9_]+:[a-z0-9_]+:v[0-9]+$", example = "job:status:v1")]
    event: String,
    /// The event's data, any JSON.
    #[schema(value_type = Object)]
    data: Value,
}

/// Publish one event (workers; service or admin token), through the
/// gateway's one publish path. A `job:{id}` stream must exist and not have
/// ended; when `user` is given it must be the job's owner; a `job:status:v1`
/// also updates the job record. A stream under a topic prefix is a topic
/// (leave `user` out); any other stream is `user`'s private stream.
#[utoipa::path(post, path = "/api/v1/publish", tag = "publishing", request_body = PublishRequest, security(("bearerAuth" = [])), responses(
    (status = 200, description = "The published envelope.", body = EnvelopeDoc),
    (status = 400, description = "Malformed body, stream or event name, or a user given for a topic or missing for a private stream (`invalid_payload`).", body = ErrorBody),
    (status = 403, description = "The token's role is not service or admin (`forbidden`).", body = ErrorBody),
    (status = 404, description = "No such job for this user (`not_found`).", body = ErrorBody),
    (status = 409, description = "The job already ended (`job_ended`).", body = ErrorBody), (status = 401, description = "Missing or invalid bearer token (`unauthorized`).", body = ErrorBody), (status = 503, description = "The broker is unreachable (`unavailable`); retry later.", body = ErrorBody)))]
pub(crate) async fn publish(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let expected = "{user?, stream, event, data}";
    let published = publish_items(&state, &headers, body, expected, |r: PublishRequest| {
        (r.user, r.stream, r.event, vec![r.data])
    })
    .await;
    match published.map(Vec::into_iter).map(|mut envs| envs.next()) {
        Ok(Some(env)) => Json(env).into_response(),
        Ok(None) => publish_error(&lost_reply()),
        Err(refused) => refused,
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishBatchRequest {
    /// As in a single publish.
    #[serde(default)]
    user: Option<String>,
    /// As in a single publish.
    #[schema(max_length = 256, example = "job:42")]
    stream: String,
    /// The event name of every item, `domain:name:vN` (not `job:status:v1`,
    /// which is published one at a time).
    #[schema(pattern = "^[a-z0-9_]+:[a-z0-9_]+:v[0-9]+$", example = "job:chunk:v1")]
    event: String,
    /// One event's data per item, in order: 1 to 256 items.
    #[schema(value_type = Vec<Object>, min_items = 1, max_items = 256)]
    data: Batch,
}

/// The items of a batch, refused while parsing past [`MAX_BATCH`], so a
/// body of a million tiny items costs no more than its bytes.
#[derive(Debug)]
pub(crate) struct Batch(Vec<Value>);

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items;
        impl<'de> serde::de::Visitor<'de> for Items {
            type Value = Batch;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "an array of 1 to {MAX_BATCH} events' data")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Batch, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    if items.len() == MAX_BATCH {
                        return Err(serde::de::Error::invalid_length(MAX_BATCH + 1, &self));
                    }
                    items.push(item);
                }
                Ok(Batch(items))
            }
        }
        d.deserialize_seq(Items)
    }
}

/// Publish up to 256 events of one name on one stream in one step (a worker
/// streaming many chunks): consecutive seqs, in order, one broker round trip,
/// all or none. The rules of a single publish apply to each.
#[utoipa::path(post, path = "/api/v1/publish/batch", tag = "publishing", request_body = PublishBatchRequest, security(("bearerAuth" = [])), responses(
    (status = 200, description = "`{events: [...]}`: the published envelopes, in order.", body = Object),
    (status = 400, description = "Malformed body, stream or event name, no item or more than 256, a `job:status:v1`, or a user given for a topic or missing for a private stream (`invalid_payload`).", body = ErrorBody),
    (status = 403, description = "The token's role is not service or admin (`forbidden`).", body = ErrorBody),
    (status = 404, description = "No such job for this user (`not_found`).", body = ErrorBody),
    (status = 409, description = "The job already ended (`job_ended`).", body = ErrorBody), (status = 401, description = "Missing or invalid bearer token (`unauthorized`).", body = ErrorBody), (status = 503, description = "The broker is unreachable (`unavailable`); retry later.", body = ErrorBody)))]
pub(crate) async fn publish_batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let expected = format!("{{user?, stream, event, data: [1 to {MAX_BATCH} items]}}");
    let published = publish_items(
        &state,
        &headers,
        body,
        &expected,
        |r: PublishBatchRequest| (r.user, r.stream, r.event, r.data.0),
    )
    .await;
    match published {
        Ok(events) => Json(json!({ "events": events })).into_response(),
        Err(refused) => refused,
    }
}

/// What both publish routes do: a service caller (checked before the body
/// is read), the body (at most [`MAX_BODY_BYTES`]), the stream it names for
/// its user, then the one publish path with its items. `Err` is the answer.
async fn publish_items<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    expected: &str,
    parts: impl FnOnce(T) -> (Option<String>, String, String, Vec<Value>),
) -> Result<Vec<Envelope<Value>>, Response> {
    caller(state, headers, Claims::is_service).await?;
    let (user, stream, event, data) = parts(json_body(body, MAX_BODY_BYTES, expected).await?);
    let user = user.as_deref();
    let stream = Stream::for_publisher(&stream, user, &state.topics)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid_payload", &e.to_string()))?;
    state
        .publisher
        .publish_batch_as(user, &stream, &event, data)
        .await
        .map_err(|e| publish_error(&e))
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SummaryQuery {
    /// `YYYY-MM-DD`, UTC; today when left out.
    day: Option<String>,
}

/// Analytics of one UTC day (an analytics, service or admin token).
#[utoipa::path(get, path = "/api/v1/analytics/summary", tag = "analytics", params(SummaryQuery), security(("bearerAuth" = [])), responses(
    (status = 200, description = "The day's analytics (all nodes) plus this node's latency quantiles and connections.", body = DaySummary),
    (status = 400, description = "Bad day (`invalid_payload`).", body = ErrorBody),
    (status = 403, description = "Not an analytics, service or admin token (`forbidden`).", body = ErrorBody), (status = 401, description = "Missing or invalid bearer token (`unauthorized`).", body = ErrorBody), (status = 503, description = "The broker is unreachable (`unavailable`); retry later.", body = ErrorBody)))]
pub(crate) async fn analytics_summary(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<SummaryQuery>,
) -> Response {
    if let Err(refused) = caller(&state, &headers, Claims::may_read_analytics).await {
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct RevokeRequest {
    /// The user whose sockets close.
    user: String,
}

/// Close a user's sockets on every node (admin token).
#[utoipa::path(post, path = "/api/v1/admin/revoke", tag = "operations", request_body = RevokeRequest, security(("bearerAuth" = [])), responses(
    (status = 202, description = "Revocation broadcast; each socket gets `session:revoked:v1` then DISCONNECT.", body = Object),
    (status = 403, description = "Not an admin token (`forbidden`).", body = ErrorBody), (status = 401, description = "Missing or invalid bearer token (`unauthorized`).", body = ErrorBody), (status = 503, description = "The broker is unreachable (`unavailable`); retry later.", body = ErrorBody)))]
pub(crate) async fn revoke(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
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

/// A job's snapshot with its stream position.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job id.")), security(("bearerAuth" = [])), responses(
    (status = 200, description = "The job.", body = JobSnapshot),
    (status = 404, description = "No such job for this user (`not_found`).", body = ErrorBody), (status = 401, description = "Missing or invalid bearer token (`unauthorized`).", body = ErrorBody), (status = 503, description = "The broker is unreachable (`unavailable`); retry later.", body = ErrorBody)))]
pub(crate) async fn job(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    snapshot(&state, &headers, &id).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct DevTokenRequest {
    /// The user (1 to 128 bytes).
    sub: String,
    /// `analytics` for the analytics page, `service` or `admin` for worker demos.
    #[serde(default)]
    role: Option<String>,
}

/// Mint a 1-hour HS256 token for any user (only with `--dev-tokens`;
/// development).
#[utoipa::path(post, path = "/api/v1/dev/token", tag = "operations", request_body = DevTokenRequest, security(()), responses(
    (status = 200, description = "A token.", body = TokenResponse),
    (status = 400, description = "Bad sub (`invalid_payload`).", body = ErrorBody),
    (status = 404, description = "Not served: the gateway runs without --dev-tokens.", body = ErrorBody)))]
pub(crate) async fn dev_token(State(state): State<Arc<AppState>>, body: Body) -> Response {
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
    if !matches!(
        req.role.as_deref(),
        None | Some("service" | "admin" | "analytics")
    ) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            "role must be service, admin or analytics when given",
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

/// Why a WebSocket or Socket.IO request with these `Origin` headers is
/// refused, if it is: several of them, or one not in `allowed` (when
/// `allowed` is not empty; no header passes, as from non-browser clients).
pub fn origin_refusal<'a>(
    mut origins: impl Iterator<Item = &'a [u8]>,
    allowed: &[String],
) -> Option<&'static str> {
    let origin = origins.next();
    if origins.next().is_some() {
        return Some("several Origin headers");
    }
    match origin {
        Some(origin) if !allowed.is_empty() => {
            let ok = std::str::from_utf8(origin).is_ok_and(|o| allowed.iter().any(|a| a == o));
            (!ok).then_some("origin not allowed")
        }
        _ => None,
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
        let origins = req.headers().get_all(header::ORIGIN).iter();
        if let Some(why) = origin_refusal(origins.map(|o| o.as_bytes()), &allowed) {
            return (StatusCode::FORBIDDEN, why).into_response();
        }
    }
    next.run(req).await
}
