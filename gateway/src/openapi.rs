//! The OpenAPI 3 document of the REST API, served at `GET /api/v1/openapi.json`.
//! Generated with `utoipa` from the handlers' `#[utoipa::path]` attributes and
//! the request and response types; a test checks that every route of
//! [`crate::http::routes`] is in it and every documented path is served.

use std::sync::LazyLock;

use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::broker::{DayStats, JobRecord, JobStats};
use crate::http;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Liveline gateway REST API",
        version = "1.0.0",
        description = "REST side of the Liveline gateway. Live events flow over Socket.IO at \
            `/socket.io/` (WebSocket, and long-polling unless `--websocket-only`); see \
            docs/contracts.md. Errors are `{\"error\": {\"code\", \"message\"}}` (codes in \
            docs/errors.md). User routes answer only the owner: another user's job is 404."
    ),
    paths(
        http::healthz,
        http::readyz,
        http::metrics,
        http::openapi,
        http::jobs,
        http::job,
        http::job_events,
        http::publish,
        http::publish_batch,
        http::analytics_summary,
        http::revoke,
        http::dev_token,
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        EnvelopeDoc,
        JobRecord,
        JobStateDoc,
        JobList,
        JobSnapshot,
        StreamEvents,
        StreamEvent,
        DaySummary,
        DayStats,
        JobStats,
        Latency,
        TokenResponse,
        http::PublishRequest,
        http::PublishBatchRequest,
        http::RevokeRequest,
        http::DevTokenRequest,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The document as pretty JSON, generated once.
pub fn document() -> &'static str {
    static DOC: LazyLock<String> = LazyLock::new(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    });
    &DOC
}

/// Declares the `bearerAuth` scheme the operations name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".to_owned());
        http.description = Some(
            "A JWT signed with the gateway's pinned algorithm (HS256, RS256 or EdDSA with \
             `kid`), with `sub`, `exp`, `iss`, `aud`, and optionally `topics`. Publishing and \
             analytics need a `role` claim of `service` or `admin`; revocation needs `admin`."
                .to_owned(),
        );
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearerAuth", SecurityScheme::Http(http));
    }
}

/// Every error: `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// An error's code (docs/errors.md) and message.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    #[schema(example = "not_found")]
    code: String,
    message: String,
}

/// An event as stored and delivered.
#[derive(Serialize, ToSchema)]
#[schema(as = Envelope)]
pub struct EnvelopeDoc {
    /// The stream: `job:{id}`, a topic, or a private stream's name.
    #[schema(example = "job:42")]
    stream: String,
    /// Changes when the stream's history was lost.
    epoch: String,
    /// Contiguous per stream, from 1.
    #[schema(minimum = 1)]
    seq: u64,
    /// Publish time, ms since the Unix epoch.
    ts: u64,
    /// The event's data.
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// A job's status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = JobState)]
pub enum JobStateDoc {
    /// Waiting for a worker.
    Queued,
    /// A worker runs it.
    Running,
    /// Done.
    Completed,
    /// Ended in error.
    Failed,
    /// Cancelled by its owner.
    Cancelled,
}

/// `GET /api/v1/jobs`.
#[derive(Serialize, ToSchema)]
pub struct JobList {
    jobs: Vec<JobRecord>,
}

/// A job with its stream position.
#[derive(Serialize, ToSchema)]
pub struct JobSnapshot {
    #[serde(flatten)]
    job: JobRecord,
    /// `job:{id}`.
    stream: String,
    /// Empty before the first event.
    epoch: String,
    /// Head seq (0 before the first event).
    seq: u64,
}

/// A stream's events after a seq.
#[derive(Serialize, ToSchema)]
pub struct StreamEvents {
    stream: String,
    epoch: String,
    /// The head seq.
    seq: u64,
    /// False when history no longer reaches back to after+1, or has a hole:
    /// reload the snapshot.
    complete: bool,
    events: Vec<StreamEvent>,
}

/// One event of [`StreamEvents`].
#[derive(Serialize, ToSchema)]
pub struct StreamEvent {
    #[schema(example = "job:status:v1")]
    event: String,
    envelope: EnvelopeDoc,
}

/// `GET /api/v1/analytics/summary`.
#[derive(Serialize, ToSchema)]
pub struct DaySummary {
    #[serde(flatten)]
    day: DayStats,
    /// This node's delivery latency quantiles, seconds (null before any delivery).
    latency: Latency,
    /// Sockets connected to this node.
    connections: i64,
}

/// Delivery latency quantiles, seconds.
#[derive(Serialize, ToSchema)]
pub struct Latency {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    count: u64,
}

/// `POST /api/v1/dev/token`.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    token: String,
}
