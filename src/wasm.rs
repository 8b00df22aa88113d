//! The WebAssembly face of the sans-IO [`Client`]: a narrow handle (`Core`)
//! that takes numbers, strings and bytes and hands back its outputs as short
//! tagged strings.
//!
//! The browser driver that owns the `WebSocket`, the timer, the page
//! listeners, the app's callbacks and the outbox storage is `pkg/index.js`.
//! Keeping every JavaScript object on the JavaScript side is what keeps the
//! package inside its size budget: a driver built from web-sys closures and
//! futures measured 17 KB gzip more than this handle plus the JS driver, and
//! nothing here can leak a JS listener or timer.
//!
//! Output tags returned by [`Core::poll`] (the rest of the string follows the tag):
//!
//! | tag | meaning | rest |
//! |-----|---------|------|
//! | `t` | ask `getToken()`, answer with [`Core::token`] | — |
//! | `o` | open a WebSocket | the URL |
//! | `s` | send a text frame | the frame |
//! | `b` | send a binary frame | — ([`Core::bytes`] holds it) |
//! | `c` | close the socket | — |
//! | `z` | the state changed | a JSON snapshot object |
//! | `q` | the outbox changed: save [`Core::outbox`] | the number queued |
//! | `e` | an event | JSON `[ackId or null, attachments, name, [args...]]` |
//! | `a` | an action ended | JSON `[id, true, result]` or `[id, false, code, message]` |
//! | `r` | a raw emit's ack | JSON `[id, true, attachments, [args...]]` or `[id, false, code, message]` |
//! | `i` | an event broke its contract and was dropped | the reason |
//! | `w` | the server said what it is (its first event) | `liveline` or `socket.io` |

use wasm_bindgen::prelude::*;

use crate::client::{Client, Config, ConnectionState, Output, ServerKind, StateChange};
use crate::json;
use crate::outbox::{self, ActionError, SendError};
use crate::protocol::tagged;

/// The sans-IO client behind `pkg/index.js`. Not for direct use.
#[wasm_bindgen]
pub struct Core {
    client: Client,
    bytes: Vec<u8>,
    attachments: Vec<Vec<u8>>,
    /// Attachments of the next `emit`, added by `attach`.
    outgoing: Vec<Vec<u8>>,
}

/// Milliseconds from JavaScript: `performance.now()` (the monotonic clock
/// the core's timers run on) or, where named `wall`, `Date.now()`.
fn ms(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v as u64
    } else {
        0
    }
}

/// A tunable from JavaScript: a finite, non-negative number, else the default.
fn opt(v: Option<&f64>) -> Option<u64> {
    v.filter(|v| v.is_finite() && **v >= 0.0).map(|v| *v as u64)
}

fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

/// The state as a JSON object: `{current, previous, reason, queued,
/// attempt, retryIn, error, recovered}`.
fn snapshot(change: &StateChange) -> String {
    let (attempt, retry_in, error) = match &change.current {
        ConnectionState::Reconnecting {
            attempt,
            retry_in_ms,
            last_error,
        } => (*attempt, Some(*retry_in_ms), Some(last_error.as_str())),
        ConnectionState::Suspended { retry_in_ms } => (0, Some(*retry_in_ms), None),
        ConnectionState::Failed { reason } => (0, None, Some(reason.as_str())),
        _ => (0, None, None),
    };
    let mut s = String::from("z{\"current\":");
    json::write_string(&mut s, change.current.name());
    s.push_str(",\"previous\":");
    json::write_string(&mut s, change.previous);
    s.push_str(",\"reason\":");
    json::write_string(&mut s, &change.reason);
    s.push_str(",\"queued\":");
    push_u64(&mut s, change.queued as u64);
    s.push_str(",\"attempt\":");
    push_u64(&mut s, u64::from(attempt));
    s.push_str(",\"retryIn\":");
    match retry_in {
        Some(v) => push_u64(&mut s, v),
        None => s.push_str("null"),
    }
    s.push_str(",\"error\":");
    match error {
        Some(e) => json::write_string(&mut s, e),
        None => s.push_str("null"),
    }
    s.push_str(",\"recovered\":");
    s.push_str(if change.recovered { "true" } else { "false" });
    s.push('}');
    s
}

/// Pushes `"code","message"` of a failed action or emit.
fn push_error(s: &mut String, e: ActionError) {
    let (code, message) = match e {
        ActionError::Rejected { code, message } => (code, message),
        e => ("expired".to_owned(), e.to_string()),
    };
    json::write_string(s, &code);
    s.push(',');
    json::write_string(s, &message);
}

/// Pushes `[a,b,...]` of JSON texts.
fn push_array(s: &mut String, items: &[String]) {
    s.push('[');
    for (i, a) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(a);
    }
    s.push(']');
}

/// The JS code of an error `send` or `emit` throws, then its message.
fn send_error(e: SendError) -> String {
    let mut s = match e {
        SendError::OutboxFull(_) => String::from("outbox_full "),
        SendError::PayloadTooLarge { .. } => String::from("payload_too_large "),
        SendError::Failed(_) => String::from("failed "),
        SendError::BufferFull(_) => String::from("buffer_full "),
        _ => String::from("invalid_argument "),
    };
    s.push_str(&e.to_string());
    s
}

/// An ended action: `[id, true, result]` or `[id, false, code, message]`.
fn settled(id: u64, result: Result<String, ActionError>) -> String {
    let mut s = String::from("a[");
    push_u64(&mut s, id);
    match result {
        Ok(v) => {
            s.push_str(",true,");
            s.push_str(&v);
        }
        Err(e) => {
            s.push_str(",false,");
            push_error(&mut s, e);
        }
    }
    s.push(']');
    s
}

#[wasm_bindgen]
impl Core {
    /// `new Core(url, seedHigh, seedLow, tunables)`; `tunables` is
    /// `[initialMs, maxMs, ackTimeoutMs, outboxCapacity, connectTimeoutMs,
    /// probeTimeoutMs, livenessProbe (0 = off), emitBuffer]`, each NaN for the default.
    #[wasm_bindgen(constructor)]
    pub fn new(url: String, seed_high: u32, seed_low: u32, tunables: &[f64]) -> Core {
        let mut config = Config::new(url);
        let t = |i: usize| opt(tunables.get(i));
        if let Some(v) = t(0) {
            config.backoff.initial_ms = v;
        }
        if let Some(v) = t(1) {
            config.backoff.max_ms = v.max(1);
        }
        if let Some(v) = t(2) {
            config.ack_timeout_ms = v;
        }
        if let Some(v) = t(3) {
            config.outbox_capacity = v as usize;
        }
        if let Some(v) = t(4) {
            config.connect_timeout_ms = v;
        }
        if let Some(v) = t(5) {
            config.probe_timeout_ms = v;
        }
        if t(6) == Some(0) {
            config.liveness_probe = false;
        }
        if let Some(v) = t(7) {
            config.emit_buffer = v as usize;
        }
        let seed = (u64::from(seed_high) << 32) | u64::from(seed_low);
        Core {
            client: Client::new(config, seed),
            bytes: Vec::new(),
            attachments: Vec::new(),
            outgoing: Vec::new(),
        }
    }

    /// Tells the client what happened: `kind` is one of the `INPUT_*`
    /// numbers of `pkg/index.js`; `text` is the frame, token, error or
    /// close reason where the kind has one (else empty).
    pub fn input(&mut self, kind: u32, text: String, now: f64) {
        let c = &mut self.client;
        let now = ms(now);
        match kind {
            0 => c.connect(now),
            1 => c.close(now),
            2 => c.handle_open(now),
            3 => c.handle_text(&text, now),
            4 => c.handle_closed(&text, now),
            5 => c.handle_timeout(now),
            6 => c.handle_token(Ok(text), now),
            7 => c.handle_token(Err(text), now),
            8 | 9 => c.handle_network(kind == 8, now),
            10 | 11 => c.handle_visibility(kind == 10, now),
            _ => {}
        }
    }

    /// Queues an action (JSON `data`); returns its id. Throws `"<code> <message>"`.
    pub fn send(&mut self, name: &str, data: &str, now: f64) -> Result<f64, String> {
        self.client
            .send(name, data, ms(now))
            .map(|id| id as f64)
            .map_err(send_error)
    }

    /// Adds a binary attachment to the next `emit`.
    pub fn attach(&mut self, bytes: Vec<u8>) {
        self.outgoing.push(bytes);
    }

    /// Emits `[name, ...args]` (`args`: a JSON array, binary ones as
    /// placeholders of the attachments `attach` added). Returns the id the
    /// `r` output will carry, or -1 without an ack. Throws `"<code> <message>"`.
    pub fn emit(&mut self, name: &str, args: &str, ack: bool) -> Result<f64, String> {
        let attachments = std::mem::take(&mut self.outgoing);
        let list = json::array(args).map_err(|e| format!("invalid_argument {e}"))?;
        self.client
            .emit(name, &list, attachments, ack)
            .map(|id| id.map_or(-1.0, |id| id as f64))
            .map_err(send_error)
    }

    /// Answers a server event that asked for an ack (`args`: a JSON array of the ack's arguments).
    pub fn reply(&mut self, ack_id: f64, args: &str) -> Result<(), String> {
        let list = json::array(args).map_err(|e| e.to_string())?;
        self.client
            .reply(ms(ack_id), &list)
            .map_err(|e| e.to_string())
    }

    /// The outbox as storage text (what `restore` reads after a reload);
    /// `wall` is `Date.now()`, `now` the monotonic time the core runs on.
    pub fn outbox(&self, wall: f64, now: f64) -> String {
        outbox::encode_actions(&self.client.outbox_snapshot(ms(wall), ms(now)))
    }

    /// Puts actions a previous page saved back in front of the outbox.
    /// Returns JSON `[[id, name], ...]`; throws when the text is unreadable.
    pub fn restore(&mut self, text: &str, wall: f64, now: f64) -> Result<String, String> {
        let saved = outbox::decode_actions(text).map_err(|e| e.to_string())?;
        let names: Vec<String> = saved.iter().map(|a| a.name.clone()).collect();
        let ids = self.client.restore_outbox(saved, ms(wall), ms(now));
        let mut s = String::from("[");
        for (i, (id, name)) in ids.into_iter().zip(names).enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('[');
            push_u64(&mut s, id);
            s.push(',');
            json::write_string(&mut s, &name);
            s.push(']');
        }
        s.push(']');
        Ok(s)
    }

    /// A binary frame arrived.
    pub fn binary(&mut self, frame: &[u8], now: f64) {
        self.client.handle_binary(frame, ms(now));
    }

    /// When the timer must fire next (`performance.now()` time), or -1 for never.
    pub fn deadline(&self) -> f64 {
        self.client.poll_timeout().map_or(-1.0, |t| t as f64)
    }

    /// The next output (see the module docs), or `undefined` when there is none.
    pub fn poll(&mut self) -> Option<String> {
        let out = self.client.poll_output()?;
        Some(match out {
            Output::FetchToken => "t".to_owned(),
            Output::Open(url) => tagged('o', &url),
            Output::SendText(text) => tagged('s', &text),
            Output::SendBinary(bytes) => {
                self.bytes = bytes;
                "b".to_owned()
            }
            Output::Close => "c".to_owned(),
            Output::State(change) => snapshot(&change),
            Output::Queue(n) => {
                let mut s = String::from("q");
                push_u64(&mut s, n as u64);
                s
            }
            Output::Event(ev, ack) => {
                let mut s = String::from("e[");
                match ack {
                    Some(id) => push_u64(&mut s, id),
                    None => s.push_str("null"),
                }
                s.push(',');
                push_u64(&mut s, ev.attachments.len() as u64);
                s.push(',');
                json::write_string(&mut s, &ev.name);
                s.push(',');
                push_array(&mut s, &ev.args);
                s.push(']');
                self.attachments = ev.attachments;
                s
            }
            Output::Replied(id, result) => {
                let mut s = String::from("r[");
                push_u64(&mut s, id);
                match result {
                    Ok(a) => {
                        s.push_str(",true,");
                        push_u64(&mut s, a.attachments.len() as u64);
                        s.push(',');
                        push_array(&mut s, &a.args);
                        self.attachments = a.attachments;
                    }
                    Err(e) => {
                        s.push_str(",false,");
                        push_error(&mut s, e);
                    }
                }
                s.push(']');
                s
            }
            Output::Ack(id, result) => settled(id, result),
            Output::Invalid(e) => tagged('i', &e.to_string()),
            Output::Server(kind) => tagged(
                'w',
                if kind == ServerKind::Liveline {
                    "liveline"
                } else {
                    "socket.io"
                },
            ),
        })
    }

    /// The frame of the last `b` output.
    pub fn bytes(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }

    /// Binary attachment `i` of the last `e` or `r` output.
    pub fn attachment(&mut self, i: usize) -> Vec<u8> {
        self.attachments
            .get_mut(i)
            .map(std::mem::take)
            .unwrap_or_default()
    }
}
