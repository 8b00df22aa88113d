//! The live message: what the publish script sends on a live channel,
//! `{"user":...,"event":...,"envelope":{"stream":...,"epoch":...,"seq":N,"ts":N,"data":...}}`
//! for one event, and for a batch `{"user":...,"event":...,"envelopes":[ENVELOPE,...]}`
//! (the batch's events in order, in one message or a few), as the gateway
//! reads it. Every delivered event goes through [`LiveMessage::parse`].
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
use smallvec::{SmallVec, smallvec};

/// The events of one live message, in order: most hold one.
pub type LiveMessages = SmallVec<[LiveMessage; 1]>;

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

    /// The events of a live message as the publish script wrote it, in
    /// order: one, or a batch's. The `user` it carries is not kept: the
    /// channel it came on already says whose it is. One event that does not
    /// read refuses the whole message.
    pub fn parse(json: &[u8]) -> Result<LiveMessages, serde_json::Error> {
        let text = std::str::from_utf8(json).map_err(serde::de::Error::custom)?;
        fast(text).map_or_else(|| slow(text), Ok)
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
fn slow(text: &str) -> Result<LiveMessages, serde_json::Error> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        event: String,
        #[serde(borrow, default)]
        envelope: Option<&'a RawValue>,
        #[serde(borrow, default)]
        envelopes: Option<Vec<&'a RawValue>>,
    }
    let wire: Wire<'_> = serde_json::from_str(text)?;
    let envelopes = match (wire.envelope, wire.envelopes) {
        (Some(one), None) => vec![one],
        (None, Some(many)) if !many.is_empty() => many,
        _ => {
            return Err(serde::de::Error::custom(
                "a live message holds an envelope or a non-empty array of envelopes",
            ));
        }
    };
    envelopes
        .into_iter()
        .map(|raw| {
            let position: Envelope<IgnoredAny> = serde_json::from_str(raw.get())?;
            Ok(LiveMessage {
                event: wire.event.clone(),
                position: position.map(|_| ()),
                envelope: raw.get().into(),
            })
        })
        .collect()
}

/// The script's own layout in one pass; `None` for anything else (then
/// [`slow`] reads it, or says why it does not read).
fn fast(text: &str) -> Option<LiveMessages> {
    let mut rest = text.strip_prefix(r#"{"user":"#)?;
    let _user = string(&mut rest)?;
    rest = rest.strip_prefix(r#","event":"#)?;
    let event = string(&mut rest)?;
    rest = rest.strip_prefix(r#","envelope"#)?;
    if let Some(one) = rest.strip_prefix(r#"":"#) {
        let (msg, rest) = envelope(event, one)?;
        return (rest == "}").then(|| smallvec![msg]);
    }
    rest = rest.strip_prefix(r#"s":["#)?;
    let mut out = LiveMessages::new();
    loop {
        let (msg, after) = envelope(event, rest)?;
        out.push(msg);
        match after.strip_prefix(',') {
            Some(next) => rest = next,
            None => return (after == "]}").then_some(out),
        }
    }
}

/// The envelope at the start of `text` in the script's layout, and what
/// follows it.
fn envelope<'a>(event: &str, text: &'a str) -> Option<(LiveMessage, &'a str)> {
    let mut rest = text.strip_prefix(r#"{"stream":"#)?;
    let stream = string(&mut rest)?;
    rest = rest.strip_prefix(r#","epoch":"#)?;
    let epoch = string(&mut rest)?;
    rest = rest.strip_prefix(r#","seq":"#)?;
    let seq = number(&mut rest)?;
    rest = rest.strip_prefix(r#","ts":"#)?;
    let ts = number(&mut rest)?;
    rest = rest.strip_prefix(r#","data":"#)?;
    // The data is one JSON value, what clients will parse; it ends where
    // serde_json stops reading it. (The head was checked above, field by
    // field.)
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<IgnoredAny>();
    values.next()?.ok()?;
    rest = rest[values.byte_offset()..].strip_prefix('}')?;
    let msg = LiveMessage {
        event: event.to_owned(),
        position: Envelope {
            stream: stream.to_owned(),
            epoch: epoch.to_owned(),
            seq,
            ts,
            data: (),
        },
        envelope: text[..text.len() - rest.len()].into(),
    };
    Some((msg, rest))
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

    /// A batch as the script writes it: data that end in a number, in
    /// brackets, and strings that look like the layout.
    const BATCH: &str = r#"{"user":"ann","event":"job:chunk:v1","envelopes":[{"stream":"job:42","epoch":"e1","seq":7,"ts":9,"data":12},{"stream":"job:42","epoch":"e1","seq":8,"ts":9,"data":[{"a":"}]},{"},"x"]},{"stream":"job:42","epoch":"e1","seq":9,"ts":9,"data":"\"}]}"}]}"#;

    fn same(text: &str) {
        let a = LiveMessage::parse(text.as_bytes());
        let b = slow(text);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.len(), b.len(), "{text}");
                for (a, b) in a.iter().zip(&b) {
                    assert_eq!(a.event, b.event, "{text}");
                    assert_eq!(a.position, b.position, "{text}");
                    assert_eq!(a.envelope(), b.envelope(), "{text}");
                }
            }
            (Err(_), Err(_)) => {}
            (a, b) => panic!("{text}: fast {a:?}, field by field {b:?}"),
        }
    }

    #[test]
    fn the_scripts_layout_is_read_in_one_pass() {
        let msgs = fast(SCRIPTS).expect("the script's layout");
        let [msg] = &msgs[..] else {
            panic!("one event: {msgs:?}")
        };
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
    fn a_batch_is_read_in_one_pass_its_events_in_order() {
        let msgs = fast(BATCH).expect("the script's batch layout");
        let envelopes: Vec<&str> = msgs.iter().map(LiveMessage::envelope).collect();
        assert_eq!(
            envelopes,
            [
                r#"{"stream":"job:42","epoch":"e1","seq":7,"ts":9,"data":12}"#,
                r#"{"stream":"job:42","epoch":"e1","seq":8,"ts":9,"data":[{"a":"}]},{"},"x"]}"#,
                r#"{"stream":"job:42","epoch":"e1","seq":9,"ts":9,"data":"\"}]}"}"#,
            ]
        );
        let seqs: Vec<u64> = msgs.iter().map(|m| m.position.seq).collect();
        assert_eq!(seqs, [7, 8, 9]);
        assert!(msgs.iter().all(|m| m.event == "job:chunk:v1"));
        same(BATCH);
    }

    #[test]
    fn any_other_layout_reads_the_same_field_by_field() {
        for text in [
            // Escapes in names, another order, spaces, no user (a topic's is "").
            r#"{"user":"a\"b","event":"job:chunk:v1","envelope":{"stream":"s\u00e9","epoch":"e","seq":1,"ts":2,"data":null}}"#,
            r#"{"event":"e:n:v1","user":"u","envelope":{"epoch":"e","stream":"s","ts":2,"seq":1,"data":[1,2]}}"#,
            r#"{ "user" : "u", "event":"e:n:v1", "envelope": {"stream":"s","epoch":"e","seq":1,"ts":2,"data":1} }"#,
            r#"{"user":"","event":"e:n:v1","envelope":{"stream":"s","epoch":"e","seq":01,"ts":2,"data":1}}"#,
            r#"{"user":"u","event":"e:n:v1","envelope":{"stream":"s","epoch":"e","seq":1,"ts":2,"data":1,"more":2}}"#,
            r#"{"user":"u","event":"e:n:v1","envelopes":[ {"stream":"s","epoch":"e","seq":1,"ts":2,"data":1} ]}"#,
            r#"{"user":"u","event":"e:n:v1","envelopes":[{"stream":"s","epoch":"e","seq":1,"ts":2,"data":1},{"seq":2,"stream":"s","epoch":"e","ts":2,"data":1}]}"#,
        ] {
            assert!(fast(text).is_none(), "not the fast path: {text}");
            same(text);
        }
        // (A leading zero is not JSON; the rest read.)
        let read = |text: &str| LiveMessage::parse(text.as_bytes()).map(|m| m.len()).ok();
        assert_eq!(
            read(
                r#"{"user":"","event":"e:n:v1","envelope":{"stream":"s","epoch":"e","seq":01,"ts":2,"data":1}}"#
            ),
            None
        );
        assert_eq!(
            read(
                r#"{"user":"u","event":"e:n:v1","envelope":{"stream":"s","epoch":"e","seq":1,"ts":2,"data":1,"more":2}}"#
            ),
            Some(1)
        );
        assert_eq!(
            read(
                r#"{"user":"u","event":"e:n:v1","envelopes":[{"stream":"s","epoch":"e","seq":1,"ts":2,"data":1},{"seq":2,"stream":"s","epoch":"e","ts":2,"data":1}]}"#
            ),
            Some(2)
        );
    }

    #[test]
    fn data_that_is_not_one_json_value_is_refused_either_way() {
        for data in ["0x10", "NaN", "{\"a\":1", "1 2", "\"\\x\"", "", "{}}"] {
            let one = format!(
                r#"{{"user":"u","event":"e:n:v1","envelope":{{"stream":"s","epoch":"e","seq":1,"ts":2,"data":{data}}}}}"#
            );
            // The second event of a batch refuses the whole message.
            let batch = format!(
                r#"{{"user":"u","event":"e:n:v1","envelopes":[{{"stream":"s","epoch":"e","seq":1,"ts":2,"data":1}},{{"stream":"s","epoch":"e","seq":2,"ts":2,"data":{data}}}]}}"#
            );
            for text in [one, batch] {
                assert!(LiveMessage::parse(text.as_bytes()).is_err(), "{text}");
                same(&text);
            }
        }
        assert!(LiveMessage::parse(b"{\"user\":\"\xff\"}").is_err());
    }

    #[test]
    fn a_message_without_exactly_one_of_envelope_and_envelopes_is_refused() {
        let env = r#"{"stream":"s","epoch":"e","seq":1,"ts":2,"data":1}"#;
        for text in [
            r#"{"user":"u","event":"e:n:v1"}"#.to_owned(),
            r#"{"user":"u","event":"e:n:v1","envelopes":[]}"#.to_owned(),
            r#"{"user":"u","event":"e:n:v1","envelope":null}"#.to_owned(),
            format!(r#"{{"user":"u","event":"e:n:v1","envelope":{env},"envelopes":[{env}]}}"#),
        ] {
            assert!(LiveMessage::parse(text.as_bytes()).is_err(), "{text}");
            same(&text);
        }
    }

    #[test]
    fn every_cut_and_change_of_the_scripts_layout_reads_as_field_by_field() {
        for text in [SCRIPTS, BATCH] {
            let bytes = text.as_bytes();
            for i in 0..bytes.len() {
                if let Ok(cut) = std::str::from_utf8(&bytes[..i]) {
                    same(cut);
                }
                for b in [b'"', b'\\', b'}', b'{', b',', b'0', b' ', b'x', b']', b'['] {
                    let mut changed = bytes.to_vec();
                    changed[i] = b;
                    same(std::str::from_utf8(&changed).expect("ASCII changes keep UTF-8"));
                }
            }
        }
    }
}
