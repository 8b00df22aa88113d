//! Arbitrary bytes through the gateway's own inbound parsing: as the CONNECT
//! auth payload and as the payload of every action, when they are JSON. The
//! first byte picks an action name, unknown ones included. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveline_gateway::inbound;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    let _ = inbound::connect_auth(Some(value.clone()));
    let name = inbound::ACTIONS
        .get(usize::from(pick))
        .copied()
        .unwrap_or("app:unknown:v1");
    let _ = inbound::check(name, value.clone());
    for name in inbound::ACTIONS {
        let _ = inbound::check(name, value.clone());
    }
});
