//! HTTP routes: health, readiness, the job snapshot, dev tokens, static files,
//! and the Origin check in front of the WebSocket upgrade.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::auth::Claims;

/// Lifetime of a token from `POST /api/v1/dev/token`, in seconds.
pub const DEV_TOKEN_TTL_SECS: u64 = 3600;

/// The HTTP routes (without Socket.IO and static files).
pub fn routes(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/jobs/{id}", get(job));
    if state.config.dev_tokens {
        router = router.route("/api/v1/dev/token", post(dev_token));
    }
    router.with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.broker.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "broker unreachable").into_response()
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn bearer(state: &AppState, headers: &HeaderMap) -> Option<Claims> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?;
    state.auth.verify(token.trim()).ok()
}

/// `GET /api/v1/jobs/{id}`: the owner's snapshot of a job with its stream position.
async fn job(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(claims) = bearer(&state, &headers) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        );
    };
    let job = match state.broker.job(&id).await {
        Ok(Some(job)) if job.owner == claims.sub => job,
        Ok(_) => return error(StatusCode::NOT_FOUND, "not_found", "no such job"),
        Err(e) => {
            tracing::error!(error = %e, "job lookup failed");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "retry later",
            );
        }
    };
    let head = match state.broker.head(&job.stream()).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "head lookup failed");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "retry later",
            );
        }
    };
    let (epoch, seq) = head.map(|h| (h.epoch, h.seq)).unwrap_or_default();
    let mut body = serde_json::to_value(&job).unwrap_or_default();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("stream".into(), json!(job.stream()));
        obj.insert("epoch".into(), json!(epoch));
        obj.insert("seq".into(), json!(seq));
    }
    Json(body).into_response()
}

#[derive(Debug, Deserialize)]
struct DevTokenRequest {
    sub: String,
}

/// `POST /api/v1/dev/token`: a token for any `sub`. Only with `dev_tokens` on.
async fn dev_token(
    State(state): State<Arc<AppState>>,
    Json(req): Json<DevTokenRequest>,
) -> Response {
    if req.sub.is_empty() || req.sub.len() > 128 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            "sub must be 1 to 128 bytes",
        );
    }
    match state.auth.mint(&req.sub, DEV_TOKEN_TTL_SECS) {
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

/// Refuses (403) a WebSocket upgrade whose `Origin` is not exactly one of the
/// allowed origins. An empty list allows every origin (development); a request
/// without `Origin` (not a browser) passes.
pub async fn origin_check(
    State(allowed): State<Arc<Vec<String>>>,
    req: Request,
    next: Next,
) -> Response {
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_upgrade && !allowed.is_empty() {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
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
