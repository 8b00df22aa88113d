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
//! - `session:shutdown:v1` `{"retryInMs": n}` then DISCONNECT: the node is
//!   shutting down; reconnect after `n` ms (lands on another node).
//!
//! CONNECT refusals carry `{"message": m}` with `m` one of `unauthorized`
//! (any token problem, never more precise), `too_many_connections`,
//! `too_many_streams`, `unavailable` (broker down, or the node is shutting down).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use liveline::contract::{
    ACTION_JOB_CANCEL_V1, ACTION_JOB_START_V1, ACTION_STREAM_REPLAY_V1, ACTION_TOPIC_SUBSCRIBE_V1,
    ACTION_TOPIC_UNSUBSCRIBE_V1, AckReply, PROBE_V1, STREAM_RECOVERED_V1, StreamRecovered,
};
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;

use crate::actions;
use crate::auth::{Claims, unix_secs};
use crate::broker::{BrokerError, Feed, today};
use crate::hub::{
    AcquireError, WelcomeGate, close_socket, connected, emit, emit_paced, user_room, welcomed,
};
use crate::inbound::{self, ConnectRefusal, ResumePosition};
use crate::stream::{Stream, may_read};
use crate::{AppState, TokenRefused};

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

/// The public topics this socket subscribed to.
#[derive(Debug, Clone, Default)]
struct Topics(Arc<StdMutex<HashSet<String>>>);

/// Cancels the token-expiry close when the socket goes first.
#[derive(Debug, Clone)]
struct ExpiryTimer(tokio::task::AbortHandle);

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

/// Registers the `/` namespace on `io`.
pub fn register(io: &SocketIo, state: Arc<AppState>) {
    let mw_state = state.clone();
    let middleware = move |s: SocketRef, TryData(auth): TryData<Value>| {
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
    auth: Option<Value>,
) -> Result<(), Refused> {
    let result = admit(state, &s, auth).await;
    if result.is_err() {
        state.metrics.refused();
    }
    result
}

async fn admit(state: &Arc<AppState>, s: &SocketRef, auth: Option<Value>) -> Result<(), Refused> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(Refused("unavailable"));
    }
    let (token, resume) = match inbound::connect_auth(auth) {
        Ok(parsed) => parsed,
        Err(ConnectRefusal::Unauthorized) => return Err(Refused(UNAUTHORIZED)),
        Err(ConnectRefusal::TooManyStreams) => return Err(Refused("too_many_streams")),
    };
    let claims = match state.authenticate(&token).await {
        Ok(c) => c,
        Err(e @ TokenRefused::Unavailable(_)) => {
            tracing::error!(error = %e, "connect refused");
            return Err(Refused("unavailable"));
        }
        Err(e) => {
            tracing::info!(reason = %e, "connect refused");
            return Err(Refused(UNAUTHORIZED));
        }
    };
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
    // Authenticated: this connection no longer counts against the cap of
    // unauthenticated ones (see `edge::Pending`).
    if let Some(admission) = s
        .req_parts()
        .extensions
        .get::<Arc<crate::edge::Admission>>()
    {
        admission.release();
    }
    let exp = claims.exp;
    s.extensions.insert(claims);
    s.extensions.insert(Strikes::default());
    s.extensions.insert(Topics::default());
    if resuming {
        s.extensions.insert(Resume(Arc::new(resume)));
    } else {
        s.join(user_room(&user));
    }
    s.extensions.insert(WelcomeGate::default());
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
        let _ = emit(
            &socket,
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
    if let Some(Topics(topics)) = s.extensions.get::<Topics>() {
        let topics: Vec<String> = topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for topic in topics {
            state.hub.leave_topic(&topic, s.id).await;
        }
    }
    let session = s
        .extensions
        .remove::<Session>()
        .map(|Session(since)| since.elapsed().as_secs_f64());
    // The place in the cap and the session statistics are independent: asked
    // together, they share one write to Redis and one read back.
    let record = async {
        if let Some(secs) = session {
            state.metrics.disconnected(secs);
            if let Err(e) = state.broker.record_session(&today(), secs).await {
                tracing::debug!(error = %e, "analytics: session not recorded");
            }
        }
    };
    tokio::join!(state.hub.release(&claims.sub, s.id), record);
}

/// Why `user` may not act now, if so: over this node's limit (checked first,
/// it costs nothing), or over the limit every node shares. When the broker
/// cannot tell, the node's limit alone holds.
async fn over_limit(state: &AppState, user: &str) -> Option<&'static str> {
    if !state.limiter.allow(user) {
        return Some("too many actions; slow down");
    }
    let (rate, burst) = (state.config.action_rate_per_sec, state.config.action_burst);
    match state.broker.take_action(user, rate, burst).await {
        Ok(true) => None,
        Ok(false) => Some("too many actions across your connections; slow down"),
        Err(e) => {
            tracing::debug!(error = %e, "shared action limit unavailable; the node's holds");
            None
        }
    }
}

/// Runs one action: rate limit, then `run`, then the ack and the metrics.
async fn act<E, F, Fut>(
    state: &Arc<AppState>,
    s: &SocketRef,
    name: &str,
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
    let reply = if let Some(why) = over_limit(state, &claims.sub).await {
        let n = strikes.0.fetch_add(1, Ordering::Relaxed) + 1;
        let reply = AckReply::err(RATE_LIMITED, why);
        if n > state.config.rate_limit_strikes {
            state.metrics.action(name, RATE_LIMITED);
            if let Some(ack) = ack {
                send_ack(state, s, ack, &reply).await;
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
        send_ack(state, s, ack, &reply).await;
    }
}

/// Sends an action's ack. An ack is never dropped in silence: when it cannot
/// be queued (the socket's outgoing buffer is full), the socket is closed, so
/// the client reconnects, resumes and resends the action under the same
/// idempotency key (which answers with the recorded result); the
/// `liveline_acks_undelivered_total` metric counts it.
async fn send_ack(state: &AppState, s: &SocketRef, ack: AckSender, reply: &AckReply) {
    welcomed(s).await;
    if let Err(e) = ack.send(reply) {
        state.metrics.ack_undelivered();
        if s.connected() {
            tracing::info!(error = %e, "ack could not be queued: socket closed, the client resends");
            close_socket(s.clone());
        }
    }
}

/// Registers an acked action whose handler only needs the user and payload.
fn on_action<F, Fut>(state: &Arc<AppState>, s: &SocketRef, name: &'static str, run: F)
where
    F: Fn(Arc<AppState>, SocketRef, String, Value) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = AckReply> + Send + 'static,
{
    let st = state.clone();
    s.on(
        name,
        move |s: SocketRef, TryData(data): TryData<Value>, ack: AckSender| {
            let state = st.clone();
            let run = run.clone();
            async move {
                let socket = s.clone();
                act(&state, &s, name, data, Some(ack), |st, user, v| {
                    run(st, socket, user, v)
                })
                .await;
            }
        },
    );
}

fn register_actions(state: &Arc<AppState>, s: &SocketRef) {
    on_action(
        state,
        s,
        ACTION_TOPIC_SUBSCRIBE_V1,
        |st, s, _user, v| async move { topic_subscribe(&st, &s, v).await },
    );
    on_action(
        state,
        s,
        ACTION_TOPIC_UNSUBSCRIBE_V1,
        |st, s, _user, v| async move { topic_unsubscribe(&st, &s, v).await },
    );
    on_action(
        state,
        s,
        ACTION_JOB_START_V1,
        |st, _s, user, v| async move { actions::job_start(&st, &user, v).await },
    );
    on_action(
        state,
        s,
        ACTION_JOB_CANCEL_V1,
        |st, _s, user, v| async move { actions::job_cancel(&st, &user, v).await },
    );
    // The SDK's liveness probe on wake: answered at once, outside the rate
    // limit, so a sleeping laptop learns within a moment whether its link
    // survived.
    // Every other event: an app's action goes to workers (rate-limited and
    // counted like the built-in ones; metrics label them `app` unless the
    // gateway lists its actions, so clients cannot grow the label set).
    // Anything else with an ack id is answered at once with
    // `unknown_action`, so a client's promise settles instead of waiting out
    // its deadline.
    let st = state.clone();
    s.on_fallback(
        move |s: SocketRef, Event(name): Event, TryData(data): TryData<Value>, ack: AckSender| {
            let state = st.clone();
            async move {
                if !actions::is_app_action(&state, &name) {
                    let shown: String = name.chars().take(64).collect();
                    let reply = AckReply::err(
                        "unknown_action",
                        format!("this gateway has no action {shown:?}"),
                    );
                    send_ack(&state, &s, ack, &reply).await;
                    return;
                }
                let label = if state.config.actions.is_empty() {
                    "app".to_owned()
                } else {
                    name.clone()
                };
                act(
                    &state,
                    &s,
                    &label,
                    data,
                    Some(ack),
                    |st, user, v| async move { actions::app_action(&st, &user, &name, v).await },
                )
                .await;
            }
        },
    );
    let st = state.clone();
    s.on(PROBE_V1, move |s: SocketRef, ack: AckSender| {
        let state = st.clone();
        async move { send_ack(&state, &s, ack, &AckReply::ok(json!({}))).await }
    });
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
                    |st, _user, v| async move { replay_request(&st, &socket, v).await },
                )
                .await;
            }
        },
    );
}

/// `topic:subscribe:v1`: joins the socket to a public topic's live events and
/// answers `{topic, epoch, seq}`, the topic's head when it joined (empty
/// epoch and 0 before the first event). A repeat is a no-op with a fresh head.
async fn topic_subscribe(state: &AppState, s: &SocketRef, payload: Value) -> AckReply {
    let Some(claims) = s.extensions.get::<Claims>() else {
        return AckReply::err(UNAUTHORIZED, "not authenticated");
    };
    let stream = match actions::topic_of(state, &claims, payload).await {
        Ok(t) => t,
        Err(reply) => return reply,
    };
    let topic = stream.name();
    let topics = s.extensions.get::<Topics>().unwrap_or_default();
    let added = {
        let mut set = topics.0.lock().unwrap_or_else(|e| e.into_inner());
        if !set.contains(&topic) && set.len() >= state.config.max_topics_per_socket {
            return AckReply::err(
                "too_many_topics",
                format!(
                    "at most {} topics per connection",
                    state.config.max_topics_per_socket
                ),
            );
        }
        set.insert(topic.clone())
    };
    if added {
        if let Err(e) = state.hub.join_topic(&topic, s, false).await {
            topics
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&topic);
            tracing::error!(error = %e, "topic subscription failed");
            return AckReply::err("unavailable", "could not subscribe; retry later");
        }
        // Disconnected meanwhile: its disconnect handler may have run already.
        if !s.connected() {
            state.hub.leave_topic(&topic, s.id).await;
        }
    }
    // Read after joining: every event above this head arrives live.
    match state.broker.head(&stream).await {
        Ok(head) => {
            let (epoch, seq) = head.map(|h| (h.epoch, h.seq)).unwrap_or_default();
            AckReply::ok(json!({"topic": topic, "epoch": epoch, "seq": seq}))
        }
        Err(e) => {
            tracing::error!(error = %e, "topic head failed");
            AckReply::err("unavailable", "could not read the topic; retry later")
        }
    }
}

/// `topic:unsubscribe:v1`: leaves a public topic (a no-op when not
/// subscribed); answers `{topic}`.
async fn topic_unsubscribe(state: &AppState, s: &SocketRef, payload: Value) -> AckReply {
    // Leaving needs no permission, only a well-formed topic name.
    let topic = match crate::inbound::topic(payload) {
        Ok(t) => t.topic,
        Err(reply) => return reply,
    };
    let topics = s.extensions.get::<Topics>().unwrap_or_default();
    let removed = topics
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&topic);
    if removed {
        state.hub.leave_topic(&topic, s.id).await;
    }
    AckReply::ok(json!({ "topic": topic }))
}

/// `stream:replay:v1` `{stream, epoch, seq}`: emits the stream's events after
/// `seq`, then a `stream:recovered:v1` with the outcome. Live events may
/// interleave (the socket stays in its room); the client drops any seq it has.
async fn replay_request(state: &AppState, s: &SocketRef, payload: Value) -> AckReply {
    let req = match inbound::replay(payload) {
        Ok(r) => r,
        Err(reply) => {
            if let AckReply::Err { error, .. } = &reply {
                welcomed(s).await;
                let _ = emit(
                    s,
                    "error",
                    &json!({"code": error.code, "message": error.message}),
                );
            }
            return reply;
        }
    };
    let pos = ResumePosition {
        epoch: req.epoch,
        seq: req.seq,
    };
    let Some(claims) = s.extensions.get::<Claims>() else {
        return AckReply::err(UNAUTHORIZED, "not authenticated");
    };
    let outcome = match recover(state, s, &claims, &req.stream, &pos, None).await {
        Ok(outcome) => outcome,
        Err(e) => {
            broker_down(s, &e);
            return AckReply::err("unavailable", "could not read the stream; retry later");
        }
    };
    let _ = emit(s, STREAM_RECOVERED_V1, &outcome);
    AckReply::ok(serde_json::to_value(&outcome).unwrap_or(Value::Null))
}

async fn on_connect(state: &Arc<AppState>, s: SocketRef) {
    // The first event on every connection: it tells the SDK this is a
    // Liveline gateway (`liveline::contract::SESSION_WELCOME_V1`).
    connected(&s);
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
    let mut last = HashMap::new();
    let mut streams: Vec<_> = resume.iter().collect();
    streams.sort_by(|a, b| a.0.cmp(b.0));
    let mut topics = Vec::new();
    for (name, pos) in streams {
        let outcome = match recover(state, &s, &claims, name, pos, Some(&mut topics)).await {
            Ok(outcome) => outcome,
            Err(e) => {
                broker_down(&s, &e);
                return;
            }
        };
        last.insert(name.clone(), (outcome.epoch.clone(), outcome.seq));
        let _ = emit(&s, STREAM_RECOVERED_V1, &outcome);
    }
    state
        .hub
        .finish_resume(Feed::User(&claims.sub), &s, &last)
        .await;
    for topic in &topics {
        state.hub.finish_resume(Feed::Topic(topic), &s, &last).await;
    }
}

/// Adds topic `name` to the socket's subscriptions, its live events buffered
/// for the resume; `false` when the socket has no room for another topic or
/// the subscription failed (the client subscribes again itself).
async fn resume_topic(state: &AppState, s: &SocketRef, name: &str) -> bool {
    let topics = s.extensions.get::<Topics>().unwrap_or_default();
    {
        let mut set = topics.0.lock().unwrap_or_else(|e| e.into_inner());
        if set.contains(name) || set.len() >= state.config.max_topics_per_socket {
            return false;
        }
        set.insert(name.to_owned());
    }
    if let Err(e) = state.hub.join_topic(name, s, true).await {
        tracing::warn!(error = %e, "resume: topic subscription failed");
        topics
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        return false;
    }
    true
}

/// The outcome of resuming a stream that does not exist or is not the
/// reader's: not recovered, and nothing told about it.
fn unknown(name: &str) -> StreamRecovered {
    StreamRecovered {
        stream: name.to_owned(),
        recovered: false,
        epoch: String::new(),
        seq: 0,
    }
}

/// Replays stream `name` to `s` after `pos` when the holder of `claims` may
/// read it ([`unknown`] when not). With `topics`, a resumed topic keeps its
/// live subscription (joined before the replay, its live events wait until
/// the replay ended) and its name is added there.
async fn recover(
    state: &AppState,
    s: &SocketRef,
    claims: &Claims,
    name: &str,
    pos: &ResumePosition,
    topics: Option<&mut Vec<String>>,
) -> Result<StreamRecovered, BrokerError> {
    let Some(stream) = readable(state, claims, name).await? else {
        return Ok(unknown(name));
    };
    if let Some(topics) = topics {
        if stream.is_topic() && resume_topic(state, s, name).await {
            topics.push(name.to_owned());
        }
    }
    replay(state, s, &stream, pos).await
}

/// The broker failed while a socket resumed a stream. That is not "history
/// lost", only down for now: the socket closes, and its client resumes from
/// its position later.
fn broker_down(s: &SocketRef, e: &BrokerError) {
    tracing::warn!(error = %e, "resume: broker unavailable; closing the socket");
    close_socket(s.clone());
}

/// The stream `name` when the holder of `claims` may read it; `Err` when
/// the broker could not tell.
async fn readable(
    state: &AppState,
    claims: &Claims,
    name: &str,
) -> Result<Option<Stream>, BrokerError> {
    let Ok(stream) = Stream::for_reader(name, &claims.sub, &state.topics) else {
        return Ok(None);
    };
    let may = may_read(&stream, claims, &state.topics, &*state.broker).await?;
    Ok(may.then_some(stream))
}

/// Replays `stream` after `pos` to `s` (its reader may read it); the
/// outcome tells whether every missed event was sent.
async fn replay(
    state: &AppState,
    s: &SocketRef,
    stream: &Stream,
    pos: &ResumePosition,
) -> Result<StreamRecovered, BrokerError> {
    let name = stream.name();
    let refused = |epoch: String, seq: u64| StreamRecovered {
        stream: name.clone(),
        recovered: false,
        epoch,
        seq,
    };
    let Some(head) = state.broker.head(stream).await? else {
        return Ok(refused(String::new(), 0));
    };
    if head.epoch != pos.epoch || pos.seq > head.seq {
        return Ok(refused(head.epoch, head.seq));
    }
    let events = state.broker.history(stream, pos.seq).await?;
    // History must continue the client's position without a hole, in its epoch.
    let mut expected = pos.seq + 1;
    for (_, env) in &events {
        if env.seq != expected || env.epoch != pos.epoch {
            return Ok(refused(head.epoch, head.seq));
        }
        expected += 1;
    }
    if expected <= head.seq {
        return Ok(refused(head.epoch, head.seq));
    }
    let mut seq = pos.seq;
    for (event, env) in &events {
        if !emit_paced(s, event, env).await {
            return Ok(refused(head.epoch, head.seq));
        }
        seq = env.seq;
    }
    Ok(StreamRecovered {
        stream: name,
        recovered: true,
        epoch: pos.epoch.clone(),
        seq,
    })
}
