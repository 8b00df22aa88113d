//! The Socket.IO namespace `/`: JWT auth at CONNECT, the user's room, resume,
//! replay, limits, and the action handlers.
//!
//! Reasons a server closes a socket, as the client sees them:
//! - `session:expired:v1` `{"reason":"token_expired","exp":..}` then DISCONNECT:
//!   the token's `exp` (plus leeway) passed; fetch a new token and reconnect.
//! - `session:revoked:v1` `{"reason":"revoked"}` then DISCONNECT: an
//!   administrator revoked the user.
//! - an ack with error code `rate_limited`; after [`crate::Config::rate_limit_strikes`]
//!   of them in a row, DISCONNECT.
//! - DISCONNECT alone (or the connection closing): the client was too slow to
//!   read, sent an oversized message, or its subscription was lost; resume.
//!
//! CONNECT refusals carry `{"message": m}` with `m` one of `unauthorized`
//! (any token problem, never more precise), `too_many_connections`,
//! `too_many_streams`, `unavailable`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use liveline::contract::{
    ACTION_JOB_CANCEL_V1, ACTION_JOB_START_V1, ACTION_STREAM_REPLAY_V1, AckReply,
    STREAM_RECOVERED_V1, StreamRecovered,
};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;

use crate::AppState;
use crate::actions;
use crate::auth::{Claims, unix_secs};
use crate::broker::today;
use crate::hub::{AcquireError, close_socket, emit_paced, user_room};

/// The message of every refused CONNECT. The reason is never told to the client.
pub const UNAUTHORIZED: &str = "unauthorized";

/// Sent before a socket is closed because its token expired.
pub const SESSION_EXPIRED_V1: &str = "session:expired:v1";

/// The ack error code of a rate-limited action.
pub const RATE_LIMITED: &str = "rate_limited";

/// When the socket connected (for session durations).
#[derive(Debug, Clone, Copy)]
struct Session(Instant);

/// Rate-limited actions in a row on this socket.
#[derive(Debug, Clone, Default)]
struct Strikes(Arc<AtomicU32>);

/// Cancels the token-expiry close when the socket goes first.
#[derive(Debug, Clone)]
struct ExpiryTimer(tokio::task::AbortHandle);

/// The CONNECT auth payload.
#[derive(Debug, Default, Deserialize)]
struct ConnectAuth {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    resume: Option<HashMap<String, ResumePosition>>,
}

/// A client's position in one stream.
#[derive(Debug, Clone, Deserialize)]
struct ResumePosition {
    epoch: String,
    seq: u64,
}

/// Streams to resume, kept on the socket between middleware and handler.
#[derive(Debug, Clone)]
struct Resume(Arc<HashMap<String, ResumePosition>>);

#[derive(Debug)]
struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Most streams one CONNECT may ask to resume.
pub const MAX_RESUME_STREAMS: usize = 64;

/// Registers the `/` namespace on `io`.
pub fn register(io: &SocketIo, state: Arc<AppState>) {
    let mw_state = state.clone();
    let middleware = move |s: SocketRef, TryData(auth): TryData<ConnectAuth>| {
        let state = mw_state.clone();
        async move { authenticate(&state, s, auth.ok()).await }
    };
    let handler = move |s: SocketRef| {
        let state = state.clone();
        async move { on_connect(&state, s).await }
    };
    io.ns("/", handler.with(middleware));
}

async fn authenticate(
    state: &Arc<AppState>,
    s: SocketRef,
    auth: Option<ConnectAuth>,
) -> Result<(), Refused> {
    let result = admit(state, &s, auth).await;
    if result.is_err() {
        state.metrics.refused();
    }
    result
}

async fn admit(
    state: &Arc<AppState>,
    s: &SocketRef,
    auth: Option<ConnectAuth>,
) -> Result<(), Refused> {
    let auth = auth.unwrap_or_default();
    let Some(token) = auth.token.as_deref() else {
        return Err(Refused(UNAUTHORIZED));
    };
    let claims = match state.auth.verify(token) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(reason = %e, "connect refused");
            return Err(Refused(UNAUTHORIZED));
        }
    };
    let resume = auth.resume.unwrap_or_default();
    if resume.len() > MAX_RESUME_STREAMS {
        return Err(Refused("too_many_streams"));
    }
    let user = claims.sub.clone();
    let resuming = !resume.is_empty();
    match state.hub.acquire(&user, s.id, resuming).await {
        Ok(()) => {}
        Err(AcquireError::TooManyConnections) => return Err(Refused("too_many_connections")),
        Err(e) => {
            tracing::error!(error = %e, "live subscription failed");
            return Err(Refused("unavailable"));
        }
    }
    let exp = claims.exp;
    s.extensions.insert(claims);
    s.extensions.insert(Strikes::default());
    if resuming {
        s.extensions.insert(Resume(Arc::new(resume)));
    } else {
        s.join(user_room(&user));
    }
    register_actions(state, s);
    let disc_state = state.clone();
    s.on_disconnect(move |s: SocketRef| {
        let state = disc_state.clone();
        async move { on_disconnect(&state, s).await }
    });
    arm_expiry(state, s, exp);
    // If the CONNECT reply cannot be sent, socketioxide never calls the
    // disconnect handler: release the socket here instead (release is
    // idempotent per socket id).
    let guard_state = state.clone();
    let guard = s.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if !guard.connected() {
            on_disconnect(&guard_state, guard).await;
        }
    });
    Ok(())
}

/// Closes `s` with [`SESSION_EXPIRED_V1`] when `exp` plus the leeway passes.
fn arm_expiry(state: &Arc<AppState>, s: &SocketRef, exp: u64) {
    let deadline = exp.saturating_add(state.auth.leeway());
    let wait = deadline.saturating_sub(unix_secs());
    let socket = s.clone();
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        if !socket.connected() {
            return;
        }
        let _ = socket.emit(
            SESSION_EXPIRED_V1,
            &json!({"reason": "token_expired", "exp": exp}),
        );
        close_socket(socket);
    });
    s.extensions.insert(ExpiryTimer(task.abort_handle()));
}

async fn on_disconnect(state: &Arc<AppState>, s: SocketRef) {
    if let Some(ExpiryTimer(timer)) = s.extensions.remove::<ExpiryTimer>() {
        timer.abort();
    }
    let Some(claims) = s.extensions.get::<Claims>() else {
        return;
    };
    state.hub.release(&claims.sub, s.id).await;
    if let Some(Session(since)) = s.extensions.remove::<Session>() {
        let secs = since.elapsed().as_secs_f64();
        state.metrics.disconnected(secs);
        if let Err(e) = state.broker.record_session(&today(), secs).await {
            tracing::debug!(error = %e, "analytics: session not recorded");
        }
    }
}

/// Runs one action: rate limit, then `run`, then the ack and the metrics.
async fn act<E, F, Fut>(
    state: &Arc<AppState>,
    s: &SocketRef,
    name: &'static str,
    data: Result<Value, E>,
    ack: Option<AckSender>,
    run: F,
) where
    F: FnOnce(Arc<AppState>, String, Value) -> Fut,
    Fut: std::future::Future<Output = AckReply>,
{
    let Some(claims) = s.extensions.get::<Claims>() else {
        return;
    };
    let strikes = s.extensions.get::<Strikes>().unwrap_or_default();
    let reply = if !state.limiter.allow(&claims.sub) {
        let n = strikes.0.fetch_add(1, Ordering::Relaxed) + 1;
        let reply = AckReply::err(RATE_LIMITED, "too many actions; slow down");
        if n > state.config.rate_limit_strikes {
            state.metrics.action(name, RATE_LIMITED);
            if let Some(ack) = ack {
                let _ = ack.send(&reply);
            }
            tracing::info!("socket closed: rate limit exceeded repeatedly");
            close_socket(s.clone());
            return;
        }
        reply
    } else {
        strikes.0.store(0, Ordering::Relaxed);
        match data {
            Ok(v) => run(state.clone(), claims.sub, v).await,
            Err(_) => AckReply::err("invalid_payload", "payload is not JSON"),
        }
    };
    let outcome = match &reply {
        AckReply::Ok { .. } => "ok",
        AckReply::Err { error, .. } => error.code.as_str(),
    };
    state.metrics.action(name, outcome);
    if let Some(ack) = ack {
        let _ = ack.send(&reply);
    }
}

fn register_actions(state: &Arc<AppState>, s: &SocketRef) {
    let st = state.clone();
    s.on(
        ACTION_JOB_START_V1,
        move |s: SocketRef, TryData(data): TryData<Value>, ack: AckSender| {
            let state = st.clone();
            async move {
                act(
                    &state,
                    &s,
                    ACTION_JOB_START_V1,
                    data,
                    Some(ack),
                    |st, user, v| async move { actions::job_start(&st, &user, v).await },
                )
                .await;
            }
        },
    );
    let st = state.clone();
    s.on(
        ACTION_JOB_CANCEL_V1,
        move |s: SocketRef, TryData(data): TryData<Value>, ack: AckSender| {
            let state = st.clone();
            async move {
                act(
                    &state,
                    &s,
                    ACTION_JOB_CANCEL_V1,
                    data,
                    Some(ack),
                    |st, user, v| async move { actions::job_cancel(&st, &user, v).await },
                )
                .await;
            }
        },
    );
    let st = state.clone();
    s.on(
        ACTION_STREAM_REPLAY_V1,
        move |s: SocketRef, TryData(data): TryData<Value>| {
            let state = st.clone();
            async move {
                let socket = s.clone();
                act(
                    &state,
                    &s,
                    ACTION_STREAM_REPLAY_V1,
                    data,
                    None,
                    |st, user, v| async move { replay_request(&st, &socket, &user, v).await },
                )
                .await;
            }
        },
    );
}

#[derive(Debug, Deserialize)]
struct ReplayRequest {
    stream: String,
    epoch: String,
    seq: u64,
}

/// `stream:replay:v1` `{stream, epoch, seq}`: emits the stream's events after
/// `seq`, then a `stream:recovered:v1` with the outcome. Live events may
/// interleave (the socket stays in its room); the client drops any seq it has.
async fn replay_request(state: &AppState, s: &SocketRef, user: &str, payload: Value) -> AckReply {
    let req: ReplayRequest = match serde_json::from_value(payload) {
        Ok(r) => r,
        Err(e) => {
            let _ = s.emit(
                "error",
                &json!({"code": "invalid_payload", "message": e.to_string()}),
            );
            return AckReply::err(
                "invalid_payload",
                format!("expected {{stream, epoch, seq}}: {e}"),
            );
        }
    };
    let pos = ResumePosition {
        epoch: req.epoch,
        seq: req.seq,
    };
    let outcome = replay(state, s, user, &req.stream, &pos).await;
    let _ = s.emit(STREAM_RECOVERED_V1, &outcome);
    AckReply::ok(serde_json::to_value(&outcome).unwrap_or(Value::Null))
}

async fn on_connect(state: &Arc<AppState>, s: SocketRef) {
    if let Some(claims) = s.extensions.get::<Claims>() {
        s.extensions.insert(Session(Instant::now()));
        state.metrics.connected();
        if let Err(e) = state.broker.record_active(&claims.sub, &today()).await {
            tracing::debug!(error = %e, "analytics: active user not recorded");
        }
    }
    let (Some(claims), Some(Resume(resume))) = (
        s.extensions.get::<Claims>(),
        s.extensions.remove::<Resume>(),
    ) else {
        return;
    };
    let user = claims.sub;
    let mut last = HashMap::new();
    let mut streams: Vec<_> = resume.iter().collect();
    streams.sort_by(|a, b| a.0.cmp(b.0));
    for (stream, pos) in streams {
        let outcome = replay(state, &s, &user, stream, pos).await;
        last.insert(stream.clone(), outcome.seq);
        let _ = s.emit(STREAM_RECOVERED_V1, &outcome);
    }
    state.hub.finish_resume(&user, &s, &last).await;
}

/// Replays `stream` after `pos` to `s` when `user` owns it; the outcome tells
/// whether every missed event was sent.
async fn replay(
    state: &AppState,
    s: &SocketRef,
    user: &str,
    stream: &str,
    pos: &ResumePosition,
) -> StreamRecovered {
    let refused = |epoch: String, seq: u64| StreamRecovered {
        stream: stream.to_owned(),
        recovered: false,
        epoch,
        seq,
    };
    if !owns(state, user, stream).await {
        return refused(String::new(), 0);
    }
    let head = match state.broker.head(stream).await {
        Ok(Some(h)) => h,
        Ok(None) => return refused(String::new(), 0),
        Err(e) => {
            tracing::warn!(error = %e, "resume: head failed");
            return refused(String::new(), 0);
        }
    };
    if head.epoch != pos.epoch || pos.seq > head.seq {
        return refused(head.epoch, head.seq);
    }
    let events = match state.broker.history(stream, pos.seq).await {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!(error = %e, "resume: history failed");
            return refused(head.epoch, head.seq);
        }
    };
    // History must continue the client's position without a hole, in its epoch.
    let mut expected = pos.seq + 1;
    for (_, env) in &events {
        if env.seq != expected || env.epoch != pos.epoch {
            return refused(head.epoch, head.seq);
        }
        expected += 1;
    }
    if expected <= head.seq {
        return refused(head.epoch, head.seq);
    }
    let mut seq = pos.seq;
    for (event, env) in &events {
        if !emit_paced(s, event, env).await {
            return refused(head.epoch, head.seq);
        }
        seq = env.seq;
    }
    StreamRecovered {
        stream: stream.to_owned(),
        recovered: true,
        epoch: pos.epoch.clone(),
        seq,
    }
}

async fn owns(state: &AppState, user: &str, stream: &str) -> bool {
    let Some(id) = stream.strip_prefix("job:") else {
        return false;
    };
    matches!(state.broker.job(id).await, Ok(Some(job)) if job.owner == user)
}
