//! The live message: what the publish script sends on a live channel,
//! `{"user":...,"event":...,"envelope":{"stream":...,"epoch":...,"seq":N,"ts":N,"data":...}}`,
//! as the gateway reads it. Every delivered event goes through [`LiveMessage::parse`].
//!
//! The script always writes that layout, with its fields in that order.
//! [`LiveMessage::parse`] reads the head's fields where they stand and
//! checks the data is one JSON value, in one pass. Anything else (another
//! order, escapes in a name, spaces) goes through serde_json field by field,
//! which reads the same message the same way in two passes and about 2.5
//! times the instructions (docs/benchmarks.md).

use liveline::contract::Envelope;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One event on its way to a user's or a topic's sockets.
#[derive(Debug, Clone)]
pub struct LiveMessage {
    /// The contract name, e.g. `job:status:v1`.
    pub event: String,
    /// Where the event stands in its stream: the envelope without its data.
    pub position: Envelope<()>,
    /// The envelope, emitted as the event's single argument: the text it
    /// arrived as, checked to be one JSON value. The gateway reads its
    /// position, never the payload, and emits the text as it is.
    envelope: Box<str>,
}

impl LiveMessage {
    /// The envelope: the text of one JSON value.
    pub fn envelope(&self) -> &str {
        &self.envelope
    }

    /// A live message as the publish script wrote it. The `user` it carries
    /// is not kept: the channel it came on already says whose it is.
    pub fn parse(json: &[u8]) -> Result<Self, serde_json::Error> {
        let text = std::str::from_utf8(json).map_err(serde::de::Error::custom)?;
        fast(text).unwrap_or_else(|| slow(text))
    }

    /// The message of an envelope published here (the memory broker).
    pub fn new<T: Serialize>(
        event: &str,
        envelope: &Envelope<T>,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            event: event.to_owned(),
            position: Envelope {
                stream: envelope.stream.clone(),
                epoch: envelope.epoch.clone(),
                seq: envelope.seq,
                ts: envelope.ts,
                data: (),
            },
            envelope: serde_json::to_string(envelope)?.into(),
        })
    }
}

/// Field by field, whatever the layout.
fn slow(text: &str) -> Result<LiveMessage, serde_json::Error> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        event: String,
        #[serde(borrow)]
        envelope: &'a RawValue,
    }
    let wire: Wire<'_> = serde_json::from_str(text)?;
    let position: Envelope<IgnoredAny> = serde_json::from_str(wire.envelope.get())?;
    Ok(LiveMessage {
        event: wire.event,
        position: position.map(|_| ()),
        envelope: wire.envelope.get().into(),
    })
}

/// The script's own layout in one pass; `None` when the text is laid out
/// any other way (then [`slow`] reads it), an error when the data is not
/// one JSON value.
fn fast(text: &str) -> Option<Result<LiveMessage, serde_json::Error>> {
    let mut rest = text.strip_prefix(r#"{"user":"#)?;
    let _user = string(&mut rest)?;
    rest = rest.strip_prefix(r#","event":"#)?;
    let event = string(&mut rest)?;
    rest = rest.strip_prefix(r#","envelope":"#)?;
    let envelope = rest.strip_suffix('}')?;
    rest = envelope.strip_prefix(r#"{"stream":"#)?;
    let stream = string(&mut rest)?;
    rest = rest.strip_prefix(r#","epoch":"#)?;
    let epoch = string(&mut rest)?;
    rest = rest.strip_prefix(r#","seq":"#)?;
    let seq = number(&mut rest)?;
    rest = rest.strip_prefix(r#","ts":"#)?;
    let ts = number(&mut rest)?;
    let data = rest.strip_prefix(r#","data":"#)?.strip_suffix('}')?;
    // The data is one JSON value and nothing more: what clients will parse.
    // (The head was checked above, field by field.)
    if let Err(e) = serde_json::from_str::<IgnoredAny>(data) {
        return Some(Err(e));
    }
    Some(Ok(LiveMessage {
        event: event.to_owned(),
        position: Envelope {
            stream: stream.to_owned(),
            epoch: epoch.to_owned(),
            seq,
            ts,
            data: (),
        },
        envelope: envelope.into(),
    }))
}

/// A JSON string with nothing to unescape at the start of `rest`, its
/// contents; moves `rest` past it. `None` for anything else.
fn string<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let body = rest.strip_prefix('"')?;
    let end = body
        .bytes()
        .position(|b| b == b'"' || b == b'\\' || b < 0x20)?;
    if body.as_bytes()[end] != b'"' {
        return None;
    }
    *rest = &body[end + 1..];
    Some(&body[..end])
}

/// An unsigned integer without a sign, exponent or leading zero at the start
/// of `rest`; moves `rest` past it.
fn number(rest: &mut &str) -> Option<u64> {
    let bytes = rest.as_bytes();
    let mut value: u64 = 0;
    let mut n = 0;
    while let Some(d) = bytes.get(n).filter(|b| b.is_ascii_digit()) {
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        n += 1;
    }
    if n == 0 || (n > 1 && bytes[0] == b'0') {
        return None;
    }
    *rest = &rest[n..];
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::{LiveMessage, fast, slow};

    const SCRIPTS: &str = r#"{"user":"ann","event":"job:chunk:v1","envelope":{"stream":"job:42","epoch":"0000abcd00001000","seq":7,"ts":1700000000000,"data":{"text":"hi"}}}"#;

    fn same(text: &str) {
        let a = LiveMessage::parse(text.as_bytes());
        let b = slow(text);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.event, b.event, "{text}");
                assert_eq!(a.position, b.position, "{text}");
                assert_eq!(a.envelope(), b.envelope(), "{text}");
            }
            (Err(_), Err(_)) => {}
            (a, b) => panic!("{text}: fast {a:?}, field by field {b:?}"),
        }
    }

    #[test]
    fn the_scripts_layout_is_read_in_one_pass() {
        let msg = fast(SCRIPTS).expect("the script's layout").expect("parses");
        assert_eq!(msg.event, "job:chunk:v1");
        assert_eq!(msg.position.stream, "job:42");
        assert_eq!(msg.position.epoch, "0000abcd00001000");
        assert_eq!((msg.position.seq, msg.position.ts), (7, 1_700_000_000_000));
        assert_eq!(
            msg.envelope(),
            r#"{"stream":"job:42","epoch":"0000abcd00001000","seq":7,"ts":1700000000000,"data":{"text":"hi"}}"#
        );
        same(SCRIPTS);
    }

    #[test]
    fn any_other_layout_reads_the_same_field_by_field() {
        for text in [
            // Escapes in names, another order, spaces, no user (a topic's is "").
            r#"{"user":"a\"b","event":"job:chunk:v1","envelope":{"stream":"s\u00e9","epoch":"e","seq":1,"ts":2,"data":null}}"#,
            r#"{"event":"e:n:v1","user":"u","envelope":{"epoch":"e","stream":"s","ts":2,"seq":1,"data":[1,2]}}"#,
            r#"{ "user" : "u", "event":"e:n:v1", "envelope": {"stream":"s","epoch":"e","seq":1,"ts":2,"data":1} }"#,
            r#"{"user":"","event":"e:n:v1","envelope":{"stream":"s","epoch":"e","seq":01,"ts":2,"data":1}}"#,
        ] {
            assert!(
                !matches!(fast(text), Some(Ok(_))),
                "not the fast path: {text}"
            );
            same(text);
        }
    }

    #[test]
    fn data_that_is_not_one_json_value_is_refused_either_way() {
        for data in ["0x10", "NaN", "{\"a\":1", "1 2", "\"\\x\"", "", "{}}"] {
            let text = format!(
                r#"{{"user":"u","event":"e:n:v1","envelope":{{"stream":"s","epoch":"e","seq":1,"ts":2,"data":{data}}}}}"#
            );
            assert!(LiveMessage::parse(text.as_bytes()).is_err(), "{text}");
            same(&text);
        }
        assert!(LiveMessage::parse(b"{\"user\":\"\xff\"}").is_err());
    }

    #[test]
    fn every_cut_and_change_of_the_scripts_layout_reads_as_field_by_field() {
        let bytes = SCRIPTS.as_bytes();
        for i in 0..bytes.len() {
            if let Ok(cut) = std::str::from_utf8(&bytes[..i]) {
                same(cut);
            }
            for b in [b'"', b'\\', b'}', b'{', b',', b'0', b' ', b'x'] {
                let mut changed = bytes.to_vec();
                changed[i] = b;
                same(std::str::from_utf8(&changed).expect("ASCII changes keep UTF-8"));
            }
        }
    }
}
