//! The gateway's inbound parsing (CONNECT auth and action payloads, the code
//! the socket handlers run) never panics and never accepts what breaks a
//! bound, on arbitrary JSON. The same functions run under cargo-fuzz
//! (`fuzz/fuzz_targets/gateway_inbound.rs`, see docs/fuzzing.md).
#![allow(clippy::unwrap_used)]

use liveline_gateway::inbound::{self, ACTIONS, MAX_KEY_LEN, MAX_RESUME_STREAMS, MAX_STREAM_LEN};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Arbitrary JSON, biased towards the shapes the gateway expects.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z:_0-9]{0,12}".prop_map(Value::String),
        ".{0,300}".prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("key".to_owned()),
        Just("data".to_owned()),
        Just("token".to_owned()),
        Just("resume".to_owned()),
        Just("topic".to_owned()),
        Just("stream".to_owned()),
        Just("epoch".to_owned()),
        Just("seq".to_owned()),
        Just("jobId".to_owned()),
        Just("kind".to_owned()),
        Just("params".to_owned()),
        "[a-zA-Z]{1,8}",
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn connect_auth_never_panics_and_keeps_its_bounds(v in json_value()) {
        if let Ok((_, resume)) = inbound::connect_auth(Some(v)) {
            prop_assert!(resume.len() <= MAX_RESUME_STREAMS);
            prop_assert!(resume.keys().all(|s| s.len() <= MAX_STREAM_LEN));
        }
    }

    #[test]
    fn action_payloads_never_panic_and_keys_stay_bounded(v in json_value(), pick in 0..ACTIONS.len() + 1) {
        let name = ACTIONS.get(pick).copied().unwrap_or("app:unknown:v1");
        let accepted = inbound::check(name, v.clone()).is_ok();
        // Every action but a bare `{topic}` and `stream:replay:v1` is keyed.
        let keyed = v.get("topic").is_none() && name != "stream:replay:v1";
        if accepted && keyed {
            let key = v["key"].as_str();
            prop_assert!(key.is_some_and(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN), "{v}");
        }
        prop_assert!(ACTIONS.contains(&name) || !accepted, "unknown actions are refused");
    }
}
