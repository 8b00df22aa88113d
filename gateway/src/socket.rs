//! The Socket.IO namespace `/`: JWT auth at CONNECT, the user's room, resume,
//! and the action handlers.

use std::collections::HashMap;
use std::sync::Arc;

use liveline::contract::{
    ACTION_JOB_CANCEL_V1, ACTION_JOB_START_V1, STREAM_RECOVERED_V1, StreamRecovered,
};
use serde::Deserialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;

use crate::AppState;
use crate::actions;
use crate::auth::Claims;
use crate::hub::user_room;

/// The message of every refused CONNECT. The reason is never told to the client.
pub const UNAUTHORIZED: &str = "unauthorized";

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
    if let Err(e) = state.hub.acquire(&user, s.id, resuming).await {
        tracing::error!(error = %e, "live subscription failed");
        return Err(Refused("unavailable"));
    }
    s.extensions.insert(claims);
    if resuming {
        s.extensions.insert(Resume(Arc::new(resume)));
    } else {
        s.join(user_room(&user));
    }
    register_actions(state, &s);
    let disc_state = state.clone();
    s.on_disconnect(move |s: SocketRef| {
        let state = disc_state.clone();
        async move {
            if let Some(claims) = s.extensions.get::<Claims>() {
                state.hub.release(&claims.sub, s.id).await;
            }
        }
    });
    Ok(())
}

fn register_actions(state: &Arc<AppState>, s: &SocketRef) {
    let st = state.clone();
    s.on(
        ACTION_JOB_START_V1,
        move |s: SocketRef, TryData(data): TryData<Value>, ack: AckSender| {
            let state = st.clone();
            async move {
                let Some(claims) = s.extensions.get::<Claims>() else {
                    return;
                };
                let reply = match data {
                    Ok(v) => actions::job_start(&state, &claims.sub, v).await,
                    Err(_) => {
                        liveline::contract::AckReply::err("invalid_payload", "payload is not JSON")
                    }
                };
                let _ = ack.send(&reply);
            }
        },
    );
    let st = state.clone();
    s.on(
        ACTION_JOB_CANCEL_V1,
        move |s: SocketRef, TryData(data): TryData<Value>, ack: AckSender| {
            let state = st.clone();
            async move {
                let Some(claims) = s.extensions.get::<Claims>() else {
                    return;
                };
                let reply = match data {
                    Ok(v) => actions::job_cancel(&state, &claims.sub, v).await,
                    Err(_) => {
                        liveline::contract::AckReply::err("invalid_payload", "payload is not JSON")
                    }
                };
                let _ = ack.send(&reply);
            }
        },
    );
}

async fn on_connect(state: &Arc<AppState>, s: SocketRef) {
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
        let _ = s.emit(event, env);
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
