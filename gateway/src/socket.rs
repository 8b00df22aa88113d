//! The Socket.IO namespace `/`: JWT auth at CONNECT, the user's room, resume,
//! replay, limits, and the action handlers. Nothing here knows which
//! Engine.IO/Socket.IO layer serves a connection: a front ([`crate::sio`])
//! calls [`admit`] on CONNECT, [`on_connect`] once the reply went out,
//! [`on_event`] per event and [`on_disconnect`] when the socket closes.
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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use liveline::contract::{
    ACTION_JOB_CANCEL_V1, ACTION_JOB_START_V1, ACTION_STREAM_REPLAY_V1, ACTION_TOPIC_SUBSCRIBE_V1,
    ACTION_TOPIC_UNSUBSCRIBE_V1, AckReply, PROBE_V1, STREAM_RECOVERED_V1, StreamRecovered,
};
use serde_json::{Value, json};

use crate::AppState;
use crate::actions;
use crate::auth::{Claims, unix_secs};
use crate::broker::{BrokerError, Feed, today};
use crate::conn::{Ack, Conn, lock};
use crate::hub::AcquireError;
use crate::inbound::{self, ConnectRefusal, ResumePosition};
use crate::stream::{Stream, may_read};

/// The message of every refused CONNECT. The reason is never told to the client.
pub const UNAUTHORIZED: &str = "unauthorized";

/// Sent before a socket is closed because its token expired.
pub const SESSION_EXPIRED_V1: &str = "session:expired:v1";

/// The ack error code of a rate-limited action.
pub const RATE_LIMITED: &str = "rate_limited";

/// Why a CONNECT was refused: the message the client gets.
#[derive(Debug)]
pub struct Refused(pub &'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Checks a CONNECT to `/` with payload `auth`: the token, the resume
/// request, the user's connection cap. Admitted, `conn` is counted in its
/// user's live feed (buffered while it resumes); the transport then sends
/// the CONNECT reply, calls [`on_connect`], and closes the socket with
/// [`expire`] once [`expires_in`] passes ([`arm_expiry`] does it with a
/// timer task of its own; the lean front in the connection's own loop).
pub async fn admit(state: &Arc<AppState>, conn: &Conn, auth: Option<Value>) -> Result<(), Refused> {
    let result = check(state, conn, auth).await;
    if result.is_err() {
        state.metrics.refused();
    }
    result
}

async fn check(state: &Arc<AppState>, conn: &Conn, auth: Option<Value>) -> Result<(), Refused> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(Refused("unavailable"));
    }
    let (token, resume) = match inbound::connect_auth(auth) {
        Ok(parsed) => parsed,
        Err(ConnectRefusal::Unauthorized) => return Err(Refused(UNAUTHORIZED)),
        Err(ConnectRefusal::TooManyStreams) => return Err(Refused("too_many_streams")),
    };
    let claims = match state.auth.verify(&token) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(reason = %e, "connect refused");
            return Err(Refused(UNAUTHORIZED));
        }
    };
    let resuming = !resume.is_empty();
    match state
        .hub
        .acquire(&claims.sub, conn, resuming, claims.iat)
        .await
    {
        Ok(()) => {}
        Err(AcquireError::TooManyConnections) => return Err(Refused("too_many_connections")),
        Err(e @ AcquireError::Revoked) => {
            tracing::info!(reason = %e, "connect refused");
            return Err(Refused(UNAUTHORIZED));
        }
        Err(e) => {
            tracing::error!(error = %e, "connect refused");
            return Err(Refused("unavailable"));
        }
    }
    let session = conn.session();
    let _ = session.claims.set(claims);
    if resuming {
        *lock(&session.resume) = Some(resume);
    }
    Ok(())
}

/// How long until the admitted `conn`'s token expires, leeway included.
pub fn expires_in(state: &AppState, conn: &Conn) -> Option<Duration> {
    let exp = conn.session().claims.get()?.exp;
    let deadline = exp.saturating_add(state.auth.leeway());
    Some(Duration::from_secs(deadline.saturating_sub(unix_secs())))
}

/// Tells `conn` its token expired ([`SESSION_EXPIRED_V1`]) and closes it.
pub fn expire(conn: &Conn) {
    if !conn.connected() {
        return;
    }
    let exp = conn.session().claims.get().map_or(0, |c| c.exp);
    let _ = conn.emit(
        SESSION_EXPIRED_V1,
        &json!({"reason": "token_expired", "exp": exp}),
    );
    conn.close();
}

/// Runs [`expire`] on the admitted `conn` when [`expires_in`] passes, on a
/// timer task of its own (cancelled by [`on_disconnect`]).
pub fn arm_expiry(state: &Arc<AppState>, conn: &Conn) {
    let Some(wait) = expires_in(state, conn) else {
        return;
    };
    let socket = conn.clone();
    let task = tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        expire(&socket);
    });
    *lock(&conn.session().expiry) = Some(task.abort_handle());
}

/// The socket closed (or its CONNECT reply never went out): it leaves its
/// user's and topics' feeds and its place in the cap. Idempotent.
pub async fn on_disconnect(state: &Arc<AppState>, conn: &Conn) {
    let session = conn.session();
    if let Some(timer) = lock(&session.expiry).take() {
        timer.abort();
    }
    let Some(claims) = session.claims.get() else {
        return;
    };
    let topics: Vec<String> = lock(&session.topics).drain().collect();
    for topic in topics {
        state.hub.leave_topic(&topic, conn.id()).await;
    }
    let since = lock(&session.since).take();
    let session = since.map(|since| since.elapsed().as_secs_f64());
    if let Some(secs) = session {
        state.metrics.disconnected(secs);
        if let Err(e) = state.broker.record_session(&today(), secs).await {
            tracing::debug!(error = %e, "analytics: session not recorded");
        }
    }
    state.hub.release(&claims.sub, conn.id()).await;
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
/// `data` is `None` when the payload was not JSON.
async fn act<F, Fut>(
    state: &Arc<AppState>,
    conn: &Conn,
    name: &str,
    data: Option<Value>,
    ack: Option<Ack>,
    run: F,
) where
    F: FnOnce(Arc<AppState>, String, Value) -> Fut,
    Fut: std::future::Future<Output = AckReply>,
{
    let session = conn.session();
    let Some(claims) = session.claims.get() else {
        return;
    };
    let reply = if let Some(why) = over_limit(state, &claims.sub).await {
        let n = session.strikes.fetch_add(1, Ordering::Relaxed) + 1;
        let reply = AckReply::err(RATE_LIMITED, why);
        if n > state.config.rate_limit_strikes {
            state.metrics.action(name, RATE_LIMITED);
            if let Some(ack) = ack {
                send_ack(state, conn, ack, &reply).await;
            }
            tracing::info!("socket closed: rate limit exceeded repeatedly");
            conn.close();
            return;
        }
        reply
    } else {
        session.strikes.store(0, Ordering::Relaxed);
        match data {
            Some(v) => run(state.clone(), claims.sub.clone(), v).await,
            None => AckReply::err("invalid_payload", "payload is not JSON"),
        }
    };
    let outcome = match &reply {
        AckReply::Ok { .. } => "ok",
        AckReply::Err { error, .. } => error.code.as_str(),
    };
    state.metrics.action(name, outcome);
    if let Some(ack) = ack {
        send_ack(state, conn, ack, &reply).await;
    }
}

/// Sends an action's ack. An ack is never dropped in silence: when it cannot
/// be queued (the socket's outgoing buffer is full), the socket is closed, so
/// the client reconnects, resumes and resends the action under the same
/// idempotency key (which answers with the recorded result); the
/// `liveline_acks_undelivered_total` metric counts it.
async fn send_ack(state: &AppState, conn: &Conn, ack: Ack, reply: &AckReply) {
    conn.welcomed().await;
    let sent = serde_json::value::to_raw_value(reply)
        .map_err(|_| crate::conn::EmitError::Closed)
        .and_then(|raw| ack(&raw));
    if let Err(e) = sent {
        state.metrics.ack_undelivered();
        if conn.connected() {
            tracing::info!(error = %e, "ack could not be queued: socket closed, the client resends");
            conn.close();
        }
    }
}

/// One event from the client, with its first argument (`None` when it is not
/// JSON) and its ack, if it asked for one.
///
/// The built-in actions, the SDK's liveness probe (answered at once, outside
/// the rate limit, so a sleeping laptop learns within a moment whether its
/// link survived) and replay requests; every other event is an app's action
/// for workers (rate-limited and counted like the built-in ones; metrics
/// label them `app` unless the gateway lists its actions, so clients cannot
/// grow the label set). Anything else with an ack id is answered at once
/// with `unknown_action`, so a client's promise settles instead of waiting
/// out its deadline.
pub async fn on_event(
    state: &Arc<AppState>,
    conn: &Conn,
    name: String,
    data: Option<Value>,
    ack: Option<Ack>,
) {
    let _busy = state.metrics.handling();
    match name.as_str() {
        PROBE_V1 => {
            if let Some(ack) = ack {
                send_ack(state, conn, ack, &AckReply::ok(json!({}))).await;
            }
        }
        ACTION_STREAM_REPLAY_V1 => {
            act(state, conn, &name, data, None, |st, _user, v| async move {
                replay_request(&st, conn, v).await
            })
            .await;
        }
        ACTION_TOPIC_SUBSCRIBE_V1 => {
            act(state, conn, &name, data, ack, |st, _user, v| async move {
                topic_subscribe(&st, conn, v).await
            })
            .await;
        }
        ACTION_TOPIC_UNSUBSCRIBE_V1 => {
            act(state, conn, &name, data, ack, |st, _user, v| async move {
                topic_unsubscribe(&st, conn, v).await
            })
            .await;
        }
        ACTION_JOB_START_V1 => {
            act(state, conn, &name, data, ack, |st, user, v| async move {
                actions::job_start(&st, &user, v).await
            })
            .await;
        }
        ACTION_JOB_CANCEL_V1 => {
            act(state, conn, &name, data, ack, |st, user, v| async move {
                actions::job_cancel(&st, &user, v).await
            })
            .await;
        }
        _ if actions::is_app_action(state, &name) => {
            let label = if state.config.actions.is_empty() {
                "app".to_owned()
            } else {
                name.clone()
            };
            act(state, conn, &label, data, ack, |st, user, v| async move {
                actions::app_action(&st, &user, &name, v).await
            })
            .await;
        }
        _ => {
            if let Some(ack) = ack {
                let shown: String = name.chars().take(64).collect();
                let reply = AckReply::err(
                    "unknown_action",
                    format!("this gateway has no action {shown:?}"),
                );
                send_ack(state, conn, ack, &reply).await;
            }
        }
    }
}

/// `topic:subscribe:v1`: joins the socket to a public topic's live events and
/// answers `{topic, epoch, seq}`, the topic's head when it joined (empty
/// epoch and 0 before the first event). A repeat is a no-op with a fresh head.
async fn topic_subscribe(state: &AppState, conn: &Conn, payload: Value) -> AckReply {
    let Some(claims) = conn.session().claims.get() else {
        return AckReply::err(UNAUTHORIZED, "not authenticated");
    };
    let stream = match actions::topic_of(state, claims, payload).await {
        Ok(t) => t,
        Err(reply) => return reply,
    };
    let topic = stream.name();
    let topics = &conn.session().topics;
    let added = {
        let mut set = lock(topics);
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
        if let Err(e) = state.hub.join_topic(&topic, conn, false).await {
            lock(topics).remove(&topic);
            tracing::error!(error = %e, "topic subscription failed");
            return AckReply::err("unavailable", "could not subscribe; retry later");
        }
        // Disconnected meanwhile: its disconnect handler may have run already.
        if !conn.connected() {
            state.hub.leave_topic(&topic, conn.id()).await;
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
async fn topic_unsubscribe(state: &AppState, conn: &Conn, payload: Value) -> AckReply {
    // Leaving needs no permission, only a well-formed topic name.
    let topic = match crate::inbound::topic(payload) {
        Ok(t) => t.topic,
        Err(reply) => return reply,
    };
    let removed = lock(&conn.session().topics).remove(&topic);
    if removed {
        state.hub.leave_topic(&topic, conn.id()).await;
    }
    AckReply::ok(json!({ "topic": topic }))
}

/// `stream:replay:v1` `{stream, epoch, seq}`: emits the stream's events after
/// `seq`, then a `stream:recovered:v1` with the outcome. Live events may
/// interleave (the socket stays in its room); the client drops any seq it has.
async fn replay_request(state: &AppState, conn: &Conn, payload: Value) -> AckReply {
    let req = match inbound::replay(payload) {
        Ok(r) => r,
        Err(reply) => {
            if let AckReply::Err { error, .. } = &reply {
                conn.welcomed().await;
                let _ = conn.emit(
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
    let Some(claims) = conn.session().claims.get() else {
        return AckReply::err(UNAUTHORIZED, "not authenticated");
    };
    let outcome = match recover(state, conn, claims, &req.stream, &pos, None).await {
        Ok(outcome) => outcome,
        Err(e) => {
            broker_down(conn, &e);
            return AckReply::err("unavailable", "could not read the stream; retry later");
        }
    };
    let _ = conn.emit(STREAM_RECOVERED_V1, &outcome);
    AckReply::ok(serde_json::to_value(&outcome).unwrap_or(Value::Null))
}

/// The CONNECT reply went out: the welcome, the session's start, then the
/// replay of every stream the client resumes, and its live events after.
pub async fn on_connect(state: &Arc<AppState>, conn: &Conn) {
    started(state, conn).await;
    resume(state, conn).await;
}

/// The first half of [`on_connect`]: the welcome and the session's start.
/// It waits on nothing but the analytics tally.
pub async fn started(state: &Arc<AppState>, conn: &Conn) {
    // The first event on every connection: it tells the SDK this is a
    // Liveline gateway (`liveline::contract::SESSION_WELCOME_V1`).
    conn.ready();
    let session = conn.session();
    let Some(claims) = session.claims.get() else {
        return;
    };
    *lock(&session.since) = Some(Instant::now());
    state.metrics.connected();
    if let Err(e) = state.broker.record_active(&claims.sub, &today()).await {
        tracing::debug!(error = %e, "analytics: active user not recorded");
    }
}

/// Whether the admitted `conn` asked to resume streams ([`resume`] has work).
pub fn resuming(conn: &Conn) -> bool {
    lock(&conn.session().resume).is_some()
}

/// The second half of [`on_connect`]: the replay of every stream the client
/// resumes, then its live events. It waits on the broker.
pub async fn resume(state: &Arc<AppState>, conn: &Conn) {
    let session = conn.session();
    let Some(claims) = session.claims.get() else {
        return;
    };
    let Some(resume) = lock(&session.resume).take() else {
        return;
    };
    let mut last = HashMap::new();
    let mut streams: Vec<_> = resume.iter().collect();
    streams.sort_by(|a, b| a.0.cmp(b.0));
    let mut topics = Vec::new();
    for (name, pos) in streams {
        let outcome = match recover(state, conn, claims, name, pos, Some(&mut topics)).await {
            Ok(outcome) => outcome,
            Err(e) => {
                broker_down(conn, &e);
                return;
            }
        };
        last.insert(name.clone(), (outcome.epoch.clone(), outcome.seq));
        let _ = conn.emit(STREAM_RECOVERED_V1, &outcome);
    }
    state
        .hub
        .finish_resume(Feed::User(&claims.sub), conn, &last)
        .await;
    for topic in &topics {
        state
            .hub
            .finish_resume(Feed::Topic(topic), conn, &last)
            .await;
    }
}

/// Adds topic `name` to the socket's subscriptions, its live events buffered
/// for the resume; `false` when the socket has no room for another topic or
/// the subscription failed (the client subscribes again itself).
async fn resume_topic(state: &AppState, conn: &Conn, name: &str) -> bool {
    let topics = &conn.session().topics;
    {
        let mut set = lock(topics);
        if set.contains(name) || set.len() >= state.config.max_topics_per_socket {
            return false;
        }
        set.insert(name.to_owned());
    }
    if let Err(e) = state.hub.join_topic(name, conn, true).await {
        tracing::warn!(error = %e, "resume: topic subscription failed");
        lock(topics).remove(name);
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
    conn: &Conn,
    claims: &Claims,
    name: &str,
    pos: &ResumePosition,
    topics: Option<&mut Vec<String>>,
) -> Result<StreamRecovered, BrokerError> {
    let Some(stream) = readable(state, claims, name).await? else {
        return Ok(unknown(name));
    };
    if let Some(topics) = topics {
        if stream.is_topic() && resume_topic(state, conn, name).await {
            topics.push(name.to_owned());
        }
    }
    replay(state, conn, &stream, pos).await
}

/// The broker failed while a socket resumed a stream. That is not "history
/// lost", only down for now: the socket closes, and its client resumes from
/// its position later.
fn broker_down(conn: &Conn, e: &BrokerError) {
    tracing::warn!(error = %e, "resume: broker unavailable; closing the socket");
    conn.close();
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
    conn: &Conn,
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
        if !conn.emit_paced(event, env).await {
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
