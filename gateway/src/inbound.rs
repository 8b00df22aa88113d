//! Parsing of everything a client sends the gateway: the CONNECT auth
//! payload and the action payloads. Pure functions of the JSON value, so the
//! fuzz target (`fuzz/fuzz_targets/gateway_inbound.rs`) and the property
//! tests drive exactly the code the socket handlers run.

use std::collections::HashMap;

use liveline::contract::{
    ACTION_JOB_CANCEL_V1, ACTION_JOB_START_V1, ACTION_STREAM_REPLAY_V1, ACTION_TOPIC_SUBSCRIBE_V1,
    ACTION_TOPIC_UNSUBSCRIBE_V1, AckReply, JobCancel, JobStart, TopicSubscribe,
};
use serde::Deserialize;
use serde_json::Value;

/// Longest accepted idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 128;

/// Most streams one CONNECT may ask to resume.
pub const MAX_RESUME_STREAMS: usize = 64;

/// Longest stream name a client may name, in bytes.
pub const MAX_STREAM_LEN: usize = 256;

/// The CONNECT auth payload: `{"token": "...", "resume": {stream: {epoch, seq}}}`.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectAuth {
    /// The JWT.
    #[serde(default)]
    pub token: Option<String>,
    /// The streams to resume, with the client's position in each.
    #[serde(default)]
    pub resume: Option<HashMap<String, ResumePosition>>,
}

/// A client's position in one stream.
#[derive(Debug, Clone, Deserialize)]
pub struct ResumePosition {
    /// The stream's epoch the client saw.
    pub epoch: String,
    /// The last seq the client has.
    pub seq: u64,
}

/// Why a CONNECT payload is refused; the message is what the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectRefusal {
    /// No token, or a payload that is not the expected shape.
    #[error("unauthorized")]
    Unauthorized,
    /// More than [`MAX_RESUME_STREAMS`] streams to resume, or a stream name
    /// over [`MAX_STREAM_LEN`] bytes.
    #[error("too_many_streams")]
    TooManyStreams,
}

/// The token and resume positions of a CONNECT auth payload (`None` when the
/// client sent none).
pub fn connect_auth(
    payload: Option<Value>,
) -> Result<(String, HashMap<String, ResumePosition>), ConnectRefusal> {
    let auth: ConnectAuth = match payload {
        Some(v) if v.is_object() => {
            serde_json::from_value(v).map_err(|_| ConnectRefusal::Unauthorized)?
        }
        _ => return Err(ConnectRefusal::Unauthorized),
    };
    let token = auth.token.ok_or(ConnectRefusal::Unauthorized)?;
    let resume = auth.resume.unwrap_or_default();
    if resume.len() > MAX_RESUME_STREAMS || resume.keys().any(|s| s.len() > MAX_STREAM_LEN) {
        return Err(ConnectRefusal::TooManyStreams);
    }
    Ok((token, resume))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionPayload {
    key: String,
    data: Value,
}

/// `Err(invalid_payload)` unless `payload` is a JSON object (serde would
/// also take a struct from an array of its fields in order).
fn object(payload: &Value, expected: &str) -> Result<(), AckReply> {
    if payload.is_object() {
        Ok(())
    } else {
        Err(AckReply::err(
            "invalid_payload",
            format!("expected an object {expected}"),
        ))
    }
}

/// The idempotency key and typed data of an action payload
/// `{"key": "...", "data": {...}}`; `Err` is the ack to answer with.
pub fn action<T: serde::de::DeserializeOwned>(payload: Value) -> Result<(String, T), AckReply> {
    object(&payload, "{\"key\": string, \"data\": object}")?;
    let p: ActionPayload = serde_json::from_value(payload).map_err(|e| {
        AckReply::err(
            "invalid_payload",
            format!("expected {{\"key\": string, \"data\": object}}: {e}"),
        )
    })?;
    if p.key.is_empty() || p.key.len() > MAX_KEY_LEN {
        return Err(AckReply::err(
            "invalid_payload",
            format!("key must be 1 to {MAX_KEY_LEN} bytes"),
        ));
    }
    let data = serde_json::from_value(p.data)
        .map_err(|e| AckReply::err("invalid_payload", format!("data: {e}")))?;
    Ok((p.key, data))
}

/// The data of a `topic:subscribe:v1` / `topic:unsubscribe:v1` payload:
/// `{key, data: {topic}}`, or `{topic}` alone.
pub fn topic(payload: Value) -> Result<TopicSubscribe, AckReply> {
    object(&payload, "{topic} or {key, data: {topic}}")?;
    if payload.get("topic").is_some() {
        serde_json::from_value(payload)
            .map_err(|e| AckReply::err("invalid_payload", format!("expected {{topic}}: {e}")))
    } else {
        Ok(action(payload)?.1)
    }
}

/// A `stream:replay:v1` request: the stream and the client's position in it.
#[derive(Debug, Deserialize)]
pub struct ReplayRequest {
    /// The stream to replay.
    pub stream: String,
    /// The client's epoch of it.
    pub epoch: String,
    /// The last seq the client has.
    pub seq: u64,
}

/// The `stream:replay:v1` payload `{stream, epoch, seq}`.
pub fn replay(payload: Value) -> Result<ReplayRequest, AckReply> {
    object(&payload, "{stream, epoch, seq}")?;
    let req: ReplayRequest = serde_json::from_value(payload).map_err(|e| {
        AckReply::err(
            "invalid_payload",
            format!("expected {{stream, epoch, seq}}: {e}"),
        )
    })?;
    if req.stream.len() > MAX_STREAM_LEN {
        return Err(AckReply::err(
            "invalid_payload",
            format!("stream must be at most {MAX_STREAM_LEN} bytes"),
        ));
    }
    Ok(req)
}

/// The event domains the layer keeps for its own contracts: an app's action
/// cannot use them, and an unknown action under them is `unknown_action`.
pub const RESERVED_DOMAINS: &[&str] = &["job", "stream", "session", "topic", "probe", "action"];

/// Whether `name` can be an app's action: `domain:name:vN` outside
/// [`RESERVED_DOMAINS`].
pub fn app_action_name(name: &str) -> bool {
    let domain = name.split(':').next().unwrap_or_default();
    crate::publish::valid_event_name(name) && !RESERVED_DOMAINS.contains(&domain)
}

/// The idempotency key and data of an app's action, `{key, data}` with
/// `data` an object.
pub fn app_action(payload: Value) -> Result<(String, Value), AckReply> {
    let (key, data): (String, Value) = action(payload)?;
    if !data.is_object() {
        return Err(AckReply::err("invalid_payload", "data must be an object"));
    }
    if data.get("jobId").is_some_and(|j| !j.is_string()) {
        return Err(AckReply::err(
            "invalid_payload",
            "data.jobId must be a string",
        ));
    }
    Ok((key, data))
}

/// Parses `payload` as the action `name` would, without running it: `Ok` when
/// the handler would go on to act, `Err` with the ack it would answer. An
/// app's action (any gateway forwards them unless it lists its actions) is
/// checked for its shape; any other name is `unknown_action`. For fuzzing
/// and property tests.
pub fn check(name: &str, payload: Value) -> Result<(), AckReply> {
    match name {
        ACTION_JOB_START_V1 => action::<JobStart>(payload).map(drop),
        ACTION_JOB_CANCEL_V1 => action::<JobCancel>(payload).map(drop),
        ACTION_TOPIC_SUBSCRIBE_V1 | ACTION_TOPIC_UNSUBSCRIBE_V1 => topic(payload).map(drop),
        ACTION_STREAM_REPLAY_V1 => replay(payload).map(drop),
        _ if app_action_name(name) => app_action(payload).map(drop),
        _ => Err(AckReply::err("unknown_action", format!("no action {name}"))),
    }
}

/// Every action name [`check`] knows.
pub const ACTIONS: &[&str] = &[
    ACTION_JOB_START_V1,
    ACTION_JOB_CANCEL_V1,
    ACTION_TOPIC_SUBSCRIBE_V1,
    ACTION_TOPIC_UNSUBSCRIBE_V1,
    ACTION_STREAM_REPLAY_V1,
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connect_payloads_are_refused_with_the_right_reason() {
        assert_eq!(connect_auth(None).err(), Some(ConnectRefusal::Unauthorized));
        assert_eq!(
            connect_auth(Some(json!({"token": 5}))).err(),
            Some(ConnectRefusal::Unauthorized)
        );
        assert_eq!(
            connect_auth(Some(json!(["t"]))).err(),
            Some(ConnectRefusal::Unauthorized),
            "only an object"
        );
        let many: serde_json::Map<String, Value> = (0..=MAX_RESUME_STREAMS)
            .map(|i| (format!("job:{i}"), json!({"epoch": "e", "seq": 1})))
            .collect();
        assert_eq!(
            connect_auth(Some(json!({"token": "t", "resume": many}))).err(),
            Some(ConnectRefusal::TooManyStreams)
        );
        let long = "s".repeat(MAX_STREAM_LEN + 1);
        assert_eq!(
            connect_auth(Some(
                json!({"token": "t", "resume": {long: {"epoch": "e", "seq": 1}}})
            ))
            .err(),
            Some(ConnectRefusal::TooManyStreams)
        );
        let (token, resume) = connect_auth(Some(json!({"token": "t"}))).unwrap();
        assert_eq!((token.as_str(), resume.len()), ("t", 0));
    }

    #[test]
    fn action_keys_are_bounded() {
        let long = "k".repeat(MAX_KEY_LEN + 1);
        assert!(
            check(
                ACTION_JOB_CANCEL_V1,
                json!({"key": long, "data": {"jobId": "1"}})
            )
            .is_err()
        );
        assert!(
            check(
                ACTION_JOB_CANCEL_V1,
                json!({"key": "", "data": {"jobId": "1"}})
            )
            .is_err()
        );
        assert!(
            check(
                ACTION_JOB_CANCEL_V1,
                json!({"key": "k", "data": {"jobId": "1"}})
            )
            .is_ok()
        );
        assert!(check("nope:v1", json!({})).is_err());
        assert!(
            check(ACTION_JOB_CANCEL_V1, json!(["k", {"jobId": "1"}])).is_err(),
            "only objects"
        );
    }
}
