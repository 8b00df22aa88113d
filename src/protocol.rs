//! Engine.IO v4 and Socket.IO v5 codec, client side, WebSocket transport.
//!
//! Text frames carry an Engine.IO packet (`0` open, `1` close, `2` ping,
//! `3` pong, `4` message, `5` upgrade, `6` noop); a `4` message carries a
//! Socket.IO packet `<type>[<attachments>-][<nsp>,][<ack id>][<json>]`.
//! Binary frames carry the attachments of a binary event or ack, in order,
//! right after the text frame that announced them.
//!
//! Malformed input is a [`ProtocolError`], never a panic.

use crate::json;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An empty text frame.
    #[error("empty frame")]
    Empty,
    /// The first character is not a known Engine.IO packet type.
    #[error("unknown engine.io packet type '{0}'")]
    UnknownEioType(char),
    /// The first character of a message is not a known Socket.IO packet type.
    #[error("unknown socket.io packet type '{0}'")]
    UnknownSioType(char),
    /// The open packet's handshake is not the expected JSON.
    #[error("bad handshake: {0}")]
    BadHandshake(String),
    /// The attachment count of a binary packet is missing or not a number.
    #[error("bad attachment count")]
    BadAttachments,
    /// The ack id is not a number that fits in 64 bits.
    #[error("bad ack id")]
    BadAckId,
    /// The payload is not valid JSON.
    #[error("bad json payload: {0}")]
    BadJson(String),
    /// The payload is valid JSON but not the shape this packet type needs.
    #[error("bad payload for {0}")]
    BadPayload(&'static str),
    /// A binary frame arrived while no binary packet was waiting for one.
    #[error("unexpected binary frame")]
    UnexpectedBinary,
}

/// The Engine.IO handshake, sent by the server in the open packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// Engine.IO session id.
    pub sid: String,
    /// Transports the server offers to upgrade to (empty over WebSocket).
    pub upgrades: Vec<String>,
    /// Milliseconds between the server's pings.
    pub ping_interval: u64,
    /// Milliseconds the server waits for a pong.
    pub ping_timeout: u64,
    /// Largest payload the server accepts, in bytes (0 when not said).
    pub max_payload: u64,
}

impl Handshake {
    /// Reads the open packet's JSON.
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        let bad = |what: &str| ProtocolError::BadHandshake(what.to_owned());
        json::validate(text).map_err(|e| ProtocolError::BadHandshake(e.to_string()))?;
        let field = |k: &str| json::get(text, k);
        let number = |k: &str| field(k).and_then(json::u64);
        let upgrades = match field("upgrades") {
            None => Vec::new(),
            Some(raw) => json::array(raw)
                .map_err(|_| bad("upgrades must be an array"))?
                .into_iter()
                .map(|u| json::string(u).ok_or_else(|| bad("upgrades must be strings")))
                .collect::<Result<_, _>>()?,
        };
        Ok(Self {
            sid: field("sid")
                .and_then(json::string)
                .ok_or_else(|| bad("sid must be a string"))?,
            upgrades,
            ping_interval: number("pingInterval")
                .ok_or_else(|| bad("pingInterval must be an integer"))?,
            ping_timeout: number("pingTimeout")
                .ok_or_else(|| bad("pingTimeout must be an integer"))?,
            max_payload: match field("maxPayload") {
                None => 0,
                Some(raw) => json::u64(raw).ok_or_else(|| bad("maxPayload must be an integer"))?,
            },
        })
    }

    /// The open packet's JSON, as a server sends it.
    pub fn to_json(&self) -> String {
        let upgrades: Vec<String> = self.upgrades.iter().map(|u| json::quote(u)).collect();
        format!(
            "{{\"sid\":{},\"upgrades\":[{}],\"pingInterval\":{},\"pingTimeout\":{},\"maxPayload\":{}}}",
            json::quote(&self.sid),
            upgrades.join(","),
            self.ping_interval,
            self.ping_timeout,
            self.max_payload
        )
    }
}

/// An Engine.IO v4 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EioPacket {
    /// `0`: the handshake.
    Open(Handshake),
    /// `1`: the transport closes.
    Close,
    /// `2`: heartbeat (the server pings in v4); `2probe` during upgrades.
    Ping(String),
    /// `3`: the answer to a ping.
    Pong(String),
    /// `4`: a Socket.IO packet.
    Message(String),
    /// `5`: upgrade (not used over WebSocket).
    Upgrade,
    /// `6`: noop.
    Noop,
}

impl EioPacket {
    /// Decodes a text frame.
    pub fn decode(frame: &str) -> Result<Self, ProtocolError> {
        let mut chars = frame.chars();
        let kind = chars.next().ok_or(ProtocolError::Empty)?;
        let rest = chars.as_str();
        Ok(match kind {
            '0' => Self::Open(Handshake::parse(rest)?),
            '1' => Self::Close,
            '2' => Self::Ping(rest.to_owned()),
            '3' => Self::Pong(rest.to_owned()),
            '4' => Self::Message(rest.to_owned()),
            '5' => Self::Upgrade,
            '6' => Self::Noop,
            other => return Err(ProtocolError::UnknownEioType(other)),
        })
    }

    /// Encodes a packet as a text frame. `Open` is server-only and is
    /// encoded with the fields a server sends.
    pub fn encode(&self) -> String {
        match self {
            Self::Open(h) => format!("0{}", h.to_json()),
            Self::Close => "1".to_owned(),
            Self::Ping(d) => tagged('2', d),
            Self::Pong(d) => tagged('3', d),
            Self::Message(d) => tagged('4', d),
            Self::Upgrade => "5".to_owned(),
            Self::Noop => "6".to_owned(),
        }
    }
}

/// Socket.IO v5 packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// `0`: connect to a namespace (client: auth payload; server: `{sid, pid?}`).
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event `[name, ...args]`.
    Event,
    /// `3`: an acknowledgement `[...args]`.
    Ack,
    /// `4`: the server refused the connection (`{message, data?}`).
    ConnectError,
    /// `5`: an event with binary attachments.
    BinaryEvent,
    /// `6`: an ack with binary attachments.
    BinaryAck,
}

impl PacketType {
    fn from_char(c: char) -> Result<Self, ProtocolError> {
        Ok(match c {
            '0' => Self::Connect,
            '1' => Self::Disconnect,
            '2' => Self::Event,
            '3' => Self::Ack,
            '4' => Self::ConnectError,
            '5' => Self::BinaryEvent,
            '6' => Self::BinaryAck,
            other => return Err(ProtocolError::UnknownSioType(other)),
        })
    }

    fn as_char(self) -> char {
        match self {
            Self::Connect => '0',
            Self::Disconnect => '1',
            Self::Event => '2',
            Self::Ack => '3',
            Self::ConnectError => '4',
            Self::BinaryEvent => '5',
            Self::BinaryAck => '6',
        }
    }

    fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// A Socket.IO v5 packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// The packet type.
    pub kind: PacketType,
    /// The namespace, `/` by default.
    pub nsp: String,
    /// The ack id, for events that want an ack and for acks.
    pub id: Option<u64>,
    /// The JSON payload as raw text, validated. In binary packets,
    /// attachments stand in it as `{"_placeholder":true,"num":N}`.
    pub data: Option<String>,
    /// Binary attachments, in order (binary packets only).
    pub attachments: Vec<Vec<u8>>,
}

impl Packet {
    /// A packet on the default namespace.
    pub fn new(kind: PacketType, id: Option<u64>, data: Option<String>) -> Self {
        Self {
            kind,
            nsp: "/".to_owned(),
            id,
            data,
            attachments: Vec::new(),
        }
    }

    /// Decodes the text of a Socket.IO packet (the part after the Engine.IO
    /// `4`). A binary packet comes back with an attachment count to wait for;
    /// see [`Decoder`].
    pub fn decode(text: &str) -> Result<(Self, usize), ProtocolError> {
        let mut chars = text.char_indices();
        let (_, first) = chars.next().ok_or(ProtocolError::Empty)?;
        let kind = PacketType::from_char(first)?;
        // `get` rather than `[..]` on str: the wasm build then carries no
        // char-boundary panic (and its formatting), and none can happen here.
        let mut rest = text.get(first.len_utf8()..).unwrap_or_default();

        let mut attachments = 0;
        if kind.is_binary() {
            let (count, after) = rest.split_once('-').ok_or(ProtocolError::BadAttachments)?;
            attachments = digits(count)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or(ProtocolError::BadAttachments)?;
            rest = after;
        }

        let mut nsp = "/".to_owned();
        if rest.starts_with('/') {
            match rest.split_once(',') {
                Some((name, after)) => {
                    nsp = name.to_owned();
                    rest = after;
                }
                None => {
                    nsp = rest.to_owned();
                    rest = "";
                }
            }
        }

        let n = rest.bytes().take_while(u8::is_ascii_digit).count();
        let id = if n > 0 {
            let (id, after) = rest.split_at_checked(n).ok_or(ProtocolError::BadAckId)?;
            rest = after;
            Some(digits(id).ok_or(ProtocolError::BadAckId)?)
        } else {
            None
        };

        let data = if rest.is_empty() {
            None
        } else {
            json::validate(rest).map_err(|e| ProtocolError::BadJson(e.to_string()))?;
            Some(rest.to_owned())
        };

        let packet = Self {
            kind,
            nsp,
            id,
            data,
            attachments: Vec::new(),
        };
        packet.check_shape()?;
        Ok((packet, attachments))
    }

    fn check_shape(&self) -> Result<(), ProtocolError> {
        let data = self.data.as_deref();
        let is_object = |d: &str| d.trim_start().starts_with('{');
        let is_string = |d: &str| d.trim_start().starts_with('"');
        let ok = match self.kind {
            PacketType::Event | PacketType::BinaryEvent => data
                .and_then(|d| json::array(d).ok())
                .is_some_and(|items| items.first().is_some_and(|n| is_string(n))),
            PacketType::Ack | PacketType::BinaryAck => {
                self.id.is_some() && data.is_some_and(|d| d.trim_start().starts_with('['))
            }
            PacketType::Connect => data.is_none_or(is_object),
            PacketType::ConnectError => data.is_none_or(|d| is_object(d) || is_string(d)),
            PacketType::Disconnect => true,
        };
        if ok {
            Ok(())
        } else {
            Err(ProtocolError::BadPayload(match self.kind {
                PacketType::Event | PacketType::BinaryEvent => "event",
                PacketType::Ack | PacketType::BinaryAck => "ack",
                PacketType::Connect => "connect",
                PacketType::ConnectError => "connect_error",
                PacketType::Disconnect => "disconnect",
            }))
        }
    }

    /// Encodes the packet's text (without the Engine.IO `4`). A binary
    /// packet's attachments go out as separate binary frames after it.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        out.push(self.kind.as_char());
        if self.kind.is_binary() {
            out.push_str(&self.attachments.len().to_string());
            out.push('-');
        }
        if self.nsp != "/" {
            out.push_str(&self.nsp);
            out.push(',');
        }
        if let Some(id) = self.id {
            out.push_str(&id.to_string());
        }
        if let Some(data) = &self.data {
            out.push_str(data);
        }
        out
    }

    /// The event name and raw arguments of an event packet, and its
    /// attachments.
    pub fn into_event(self) -> Option<(String, Vec<String>, Vec<Vec<u8>>)> {
        if !matches!(self.kind, PacketType::Event | PacketType::BinaryEvent) {
            return None;
        }
        let data = self.data?;
        let items = json::array(&data).ok()?;
        let (name, args) = items.split_first()?;
        let name = json::string(name)?;
        Some((
            name,
            args.iter().map(|a| (*a).to_owned()).collect(),
            self.attachments,
        ))
    }

    /// The raw arguments of an ack packet, and its attachments.
    pub fn into_ack_args(self) -> Option<(Vec<String>, Vec<Vec<u8>>)> {
        if !matches!(self.kind, PacketType::Ack | PacketType::BinaryAck) {
            return None;
        }
        let data = self.data?;
        let items = json::array(&data).ok()?;
        Some((
            items.into_iter().map(str::to_owned).collect(),
            self.attachments,
        ))
    }
}

/// What one frame produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// An Engine.IO packet other than a message.
    Engine(EioPacket),
    /// A complete Socket.IO packet.
    Socket(Packet),
    /// A binary packet that still waits for attachments.
    Pending,
}

/// Reassembles binary packets from a text frame and the binary frames that
/// follow it.
#[derive(Debug, Default)]
pub struct Decoder {
    pending: Option<(Packet, usize)>,
}

impl Decoder {
    /// Decodes a text frame.
    pub fn text(&mut self, frame: &str) -> Result<Decoded, ProtocolError> {
        match EioPacket::decode(frame)? {
            EioPacket::Message(body) => {
                let (packet, attachments) = Packet::decode(&body)?;
                if attachments == 0 {
                    Ok(Decoded::Socket(packet))
                } else {
                    self.pending = Some((packet, attachments));
                    Ok(Decoded::Pending)
                }
            }
            other => Ok(Decoded::Engine(other)),
        }
    }

    /// Decodes a binary frame: the next attachment of the pending packet.
    pub fn binary(&mut self, frame: &[u8]) -> Result<Decoded, ProtocolError> {
        let (mut packet, wanted) = self.pending.take().ok_or(ProtocolError::UnexpectedBinary)?;
        packet.attachments.push(frame.to_vec());
        if packet.attachments.len() == wanted {
            Ok(Decoded::Socket(packet))
        } else {
            self.pending = Some((packet, wanted));
            Ok(Decoded::Pending)
        }
    }

    /// Forgets a half-received packet (the socket closed).
    pub fn reset(&mut self) {
        self.pending = None;
    }
}

/// `tag` followed by `rest` (the hot path of encoding: no formatting machinery).
pub(crate) fn tagged(tag: char, rest: &str) -> String {
    let mut s = String::with_capacity(rest.len() + 1);
    s.push(tag);
    s.push_str(rest);
    s
}

/// A non-empty run of ASCII digits as a number (`None` on anything else or overflow).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u64, |n, b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_packet_parses_the_handshake() {
        let p = EioPacket::decode(
            r#"0{"sid":"abc","upgrades":[],"pingInterval":10000,"pingTimeout":5000,"maxPayload":1000000}"#,
        )
        .expect("decodes");
        let EioPacket::Open(h) = p else {
            panic!("not open")
        };
        assert_eq!(
            (h.sid.as_str(), h.ping_interval, h.ping_timeout),
            ("abc", 10000, 5000)
        );
    }

    #[test]
    fn every_engine_packet_type_round_trips() {
        for text in ["1", "2", "2probe", "3", "3probe", "4hello", "5", "6"] {
            assert_eq!(EioPacket::decode(text).expect("decodes").encode(), text);
        }
        assert_eq!(
            EioPacket::decode("9"),
            Err(ProtocolError::UnknownEioType('9'))
        );
        assert_eq!(EioPacket::decode(""), Err(ProtocolError::Empty));
    }

    #[test]
    fn event_with_namespace_and_ack_id_decodes() {
        let (p, n) = Packet::decode(r#"2/admin,12["hello",{"a":1}]"#).expect("decodes");
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.id, n),
            (PacketType::Event, "/admin", Some(12), 0)
        );
        assert_eq!(p.encode(), r#"2/admin,12["hello",{"a":1}]"#);
        let (name, args, _) = p.into_event().expect("event");
        assert_eq!(name, "hello");
        assert_eq!(args, vec![r#"{"a":1}"#.to_owned()]);
    }

    #[test]
    fn connect_reply_with_pid_from_a_recovery_server_decodes() {
        let (p, _) = Packet::decode(r#"0{"sid":"s1","pid":"p1"}"#).expect("decodes");
        assert_eq!(p.kind, PacketType::Connect);
        assert_eq!(p.data.as_deref(), Some(r#"{"sid":"s1","pid":"p1"}"#));
    }

    #[test]
    fn binary_event_is_reassembled_from_its_attachments() {
        let mut d = Decoder::default();
        let first = d
            .text(r#"452-["upload",{"_placeholder":true,"num":0},{"x":{"_placeholder":true,"num":1}}]"#)
            .expect("decodes");
        assert_eq!(first, Decoded::Pending);
        assert_eq!(d.binary(&[1, 2]).expect("first"), Decoded::Pending);
        let Decoded::Socket(p) = d.binary(&[3]).expect("second") else {
            panic!("not complete")
        };
        let (name, args, attachments) = p.into_event().expect("event");
        assert_eq!(name, "upload");
        assert_eq!(args.len(), 2);
        assert_eq!(attachments, vec![vec![1, 2], vec![3]]);
        assert_eq!(d.binary(&[0]), Err(ProtocolError::UnexpectedBinary));
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        for bad in [
            "",
            "7",
            "2",
            "2{}",
            "3[1]",
            "5[\"a\"]",
            "5x-[\"a\"]",
            "2[\"a\"",
            "0[1]",
            "299999999999999999999999[\"a\"]",
        ] {
            assert!(Packet::decode(bad).is_err(), "{bad:?} should fail");
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::*;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // Binary fractions: serde_json without `float_roundtrip` may
            // misread the last digit of an arbitrary double.
            (-1_000_000i32..1_000_000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".*", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    fn kind() -> impl Strategy<Value = PacketType> {
        prop_oneof![
            Just(PacketType::Connect),
            Just(PacketType::Disconnect),
            Just(PacketType::Event),
            Just(PacketType::Ack),
            Just(PacketType::ConnectError),
            Just(PacketType::BinaryEvent),
            Just(PacketType::BinaryAck),
        ]
    }

    /// Data of the shape each packet type carries.
    fn data_for(kind: PacketType) -> BoxedStrategy<Option<Value>> {
        match kind {
            PacketType::Event | PacketType::BinaryEvent => {
                (".*", prop::collection::vec(json(), 0..3))
                    .prop_map(|(name, args)| {
                        let mut items = vec![Value::String(name)];
                        items.extend(args);
                        Some(Value::Array(items))
                    })
                    .boxed()
            }
            PacketType::Ack | PacketType::BinaryAck => prop::collection::vec(json(), 0..3)
                .prop_map(|a| Some(Value::Array(a)))
                .boxed(),
            PacketType::Connect => prop::option::of(
                prop::collection::btree_map(".*", json(), 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            )
            .boxed(),
            PacketType::ConnectError => prop_oneof![
                Just(None),
                ".*".prop_map(|s| Some(Value::String(s))),
                prop::collection::btree_map(".*", json(), 0..3)
                    .prop_map(|m| Some(Value::Object(m.into_iter().collect()))),
            ]
            .boxed(),
            PacketType::Disconnect => prop::option::of(json()).boxed(),
        }
    }

    fn packet() -> impl Strategy<Value = Packet> {
        (kind(), prop_oneof![Just("/".to_owned()), "/[a-z0-9_]{1,8}"])
            .prop_flat_map(|(kind, nsp)| {
                let id = if matches!(kind, PacketType::Ack | PacketType::BinaryAck) {
                    any::<u64>().prop_map(Some).boxed()
                } else if matches!(kind, PacketType::Event | PacketType::BinaryEvent) {
                    prop::option::of(any::<u64>()).boxed()
                } else {
                    Just(None).boxed()
                };
                let attachments = if kind.is_binary() {
                    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 1..3).boxed()
                } else {
                    Just(Vec::new()).boxed()
                };
                (Just(kind), Just(nsp), id, data_for(kind), attachments)
            })
            .prop_filter(
                "a disconnect's payload must not start with a digit after the type",
                |(kind, _, _, data, _)| {
                    // A number right after the type would read as an ack id.
                    !(matches!(kind, PacketType::Disconnect)
                        && matches!(data, Some(Value::Number(_))))
                },
            )
            .prop_map(|(kind, nsp, id, data, attachments)| Packet {
                kind,
                nsp,
                id,
                data: data.map(|d| d.to_string()),
                attachments,
            })
    }

    fn eio_packet() -> impl Strategy<Value = EioPacket> {
        prop_oneof![
            (
                "[a-zA-Z0-9_-]{0,20}",
                any::<u64>(),
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(|(sid, ping_interval, ping_timeout, max_payload)| {
                    EioPacket::Open(Handshake {
                        sid,
                        upgrades: Vec::new(),
                        ping_interval,
                        ping_timeout,
                        max_payload,
                    })
                }),
            Just(EioPacket::Close),
            ".*".prop_map(EioPacket::Ping),
            ".*".prop_map(EioPacket::Pong),
            ".*".prop_map(EioPacket::Message),
            Just(EioPacket::Upgrade),
            Just(EioPacket::Noop),
        ]
    }

    proptest! {
        #[test]
        fn any_packet_encodes_then_decodes_to_itself(p in packet()) {
            let text = p.encode();
            let (mut back, wanted) = Packet::decode(&text).map_err(|e| {
                TestCaseError::fail(format!("{text:?}: {e}"))
            })?;
            prop_assert_eq!(wanted, p.attachments.len());
            back.attachments = p.attachments.clone();
            prop_assert_eq!(back, p);
        }

        #[test]
        fn any_packet_survives_the_decoder_with_its_attachments(p in packet()) {
            let mut d = Decoder::default();
            let mut decoded = d.text(&EioPacket::Message(p.encode()).encode());
            for a in &p.attachments {
                prop_assert_eq!(decoded, Ok(Decoded::Pending));
                decoded = d.binary(a);
            }
            prop_assert_eq!(decoded, Ok(Decoded::Socket(p)));
        }

        #[test]
        fn any_engine_packet_encodes_then_decodes_to_itself(p in eio_packet()) {
            prop_assert_eq!(EioPacket::decode(&p.encode()), Ok(p));
        }

        #[test]
        fn decoding_arbitrary_text_never_panics(text in ".*") {
            let _ = Packet::decode(&text);
            let _ = EioPacket::decode(&text);
            let _ = Decoder::default().text(&text);
        }

        #[test]
        fn decoding_packet_shaped_text_never_panics(
            text in "[0-6][0-9-]{0,3}(/[a-z,]{0,4})?[0-9]{0,22}[\\[{\"a-z0-9,:}\\]]{0,12}"
        ) {
            let _ = Packet::decode(&text);
            let mut d = Decoder::default();
            let _ = d.text(&format!("4{text}"));
            let _ = d.binary(&[1, 2, 3]);
        }

        #[test]
        fn decoding_arbitrary_frames_never_panics(
            frames in prop::collection::vec(
                prop_oneof![
                    ".*".prop_map(Ok),
                    prop::collection::vec(any::<u8>(), 0..16).prop_map(Err),
                ],
                0..8,
            )
        ) {
            let mut d = Decoder::default();
            for f in frames {
                let _ = match f {
                    Ok(text) => d.text(&text),
                    Err(bytes) => d.binary(&bytes),
                };
            }
        }
    }
}
