//! Arbitrary bytes into the decoder: as a text frame when they are UTF-8,
//! as binary frames, and as an event name and arguments for the contract
//! decoder. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveline::contract::{self, Incoming};
use liveline::json;
use liveline::protocol::{Decoded, Decoder, EioPacket, Packet};

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::default();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = EioPacket::decode(text);
        let _ = Packet::decode(text);
        // As a whole frame, then split at each newline into a frame sequence.
        for frame in std::iter::once(text).chain(text.split('\n')) {
            if let Ok(Decoded::Socket(p)) = decoder.text(frame) {
                if let Some((name, args, attachments)) = p.clone().into_event() {
                    let ev = Incoming { name, args, attachments };
                    let _ = ev.position();
                    let _ = ev.recovered();
                    let _ = ev.payload_json();
                    let _ = ev.decode();
                }
                let _ = p.into_ack_args();
            }
        }
        // The JSON reader on its own, against serde_json as the reference.
        let ours = json::validate(text).is_ok();
        let reference = serde_json::from_str::<serde_json::Value>(text);
        let deep = text.bytes().filter(|b| *b == b'[' || *b == b'{').count() >= json::MAX_DEPTH;
        // serde_json refuses lone surrogate escapes and numbers beyond f64,
        // which the JSON grammar (and JSON.parse, and we) accept.
        let stricter = reference.as_ref().err().is_some_and(|e| {
            let e = e.to_string();
            e.contains("surrogate") || e.contains("out of range") || e.contains("hex escape")
        });
        assert!(ours || reference.is_err() || deep, "json::validate refuses valid json {text:?}");
        assert!(!ours || reference.is_ok() || stricter, "json::validate accepts invalid json {text:?}");
        let _ = json::array(text);
        let _ = json::object(text);
        let _ = json::string(text);
        let _ = json::u64(text);
        if let Ok(serde_json::Value::Array(mut items)) = serde_json::from_str(text) {
            if let Some(serde_json::Value::String(name)) = items.first().cloned() {
                items.remove(0);
                let _ = contract::decode_event(&name, items);
            }
        }
    }
    // The same bytes as attachments of whatever is pending, then alone.
    for chunk in data.chunks(7) {
        let _ = decoder.binary(chunk);
    }
    let _ = Decoder::default().binary(data);
    // Every known event name with the bytes' JSON, if any, as its argument.
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        for name in [
            contract::JOB_STATUS_V1,
            contract::JOB_CHUNK_V1,
            contract::JOB_RESULT_V1,
            contract::JOB_ERROR_V1,
            contract::TRADE_ORDER_V1,
            contract::MARKET_TICK_V1,
            contract::STREAM_RECOVERED_V1,
            "x:y:v9",
        ] {
            let _ = contract::decode_event(name, vec![v.clone()]);
        }
    }
});
