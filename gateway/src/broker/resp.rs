//! What a Redis connection in pub/sub mode reads and writes (RESP2), sans-IO.
//!
//! [`parse`] takes the bytes read so far and returns the first whole frame
//! and how many bytes it took, or `None` until one is whole: a channel's
//! message, the confirmation of a SUBSCRIBE or an UNSUBSCRIBE, the answer to
//! AUTH or PING, or an error. [`command`] encodes a command.
//!
//! The rest of the broker talks to Redis through redis-rs. Its reader parses
//! every value through a general parser (`combine`): about 8,000
//! instructions per message, a fifth of what the gateway spent on a
//! delivered event (docs/benchmarks.md). Pub/sub has a handful of shapes;
//! this reads those in a few hundred.

/// The longest bulk string taken: Redis's own hard limit on a pub/sub
/// client's output (`client-output-buffer-limit pubsub 32mb`). A longer
/// message would have closed the connection on Redis's side; one announced
/// here is refused as soon as its length is read, before its bytes arrive.
pub const MAX_BULK: usize = 32 << 20;

/// The longest line (a length, a status, an error message) before its CRLF.
pub const MAX_LINE: usize = 64 << 10;

/// Most items of an array: pub/sub's are 2 (`pong`), 3 (`message`,
/// `subscribe`, `unsubscribe`) or 4 (`pmessage`).
const MAX_ITEMS: usize = 4;

/// One whole frame, borrowing the bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push<'a> {
    /// A message published on a subscribed channel.
    Message {
        /// The channel it was published on.
        channel: &'a [u8],
        /// What was published.
        payload: &'a [u8],
    },
    /// A SUBSCRIBE took effect for `channel`.
    Subscribed(&'a [u8]),
    /// An UNSUBSCRIBE took effect for `channel`.
    Unsubscribed(&'a [u8]),
    /// The answer to a PING in pub/sub mode.
    Pong,
    /// `+OK` (AUTH) or another status.
    Status(&'a [u8]),
    /// A command was refused: `-ERR ...`.
    Error(&'a [u8]),
    /// Anything else well formed (another kind of push): skipped.
    Other,
}

/// Bytes that are not RESP, or a bound passed: the connection cannot be
/// read on and must be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed pub/sub reply: {0}")]
pub struct Malformed(pub &'static str);

type Parsed<'a, T> = Result<Option<(T, usize)>, Malformed>;

/// The line starting at `at`, without its CRLF, and where the next begins.
fn line(buf: &[u8], at: usize) -> Parsed<'_, &[u8]> {
    let rest = &buf[at..];
    let window = &rest[..rest.len().min(MAX_LINE + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some((&rest[..end], at + end + 2))),
        None if window.len() == MAX_LINE + 2 => Err(Malformed("a line longer than 64 KiB")),
        None => Ok(None),
    }
}

fn integer(digits: &[u8]) -> Result<i64, Malformed> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Malformed("a length or integer that is not a number"))
}

/// One item of an array: a bulk string, an integer or a nil.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item<'a> {
    Bulk(&'a [u8]),
    Int(i64),
    Nil,
}

/// The item starting at `at`.
fn item(buf: &[u8], at: usize) -> Parsed<'_, Item<'_>> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((head, next)) = line(buf, at + 1)? else {
        return Ok(None);
    };
    match kind {
        b':' => Ok(Some((Item::Int(integer(head)?), next))),
        b'$' => {
            let len = integer(head)?;
            if len == -1 {
                return Ok(Some((Item::Nil, next)));
            }
            let len = usize::try_from(len).map_err(|_| Malformed("a negative length"))?;
            if len > MAX_BULK {
                return Err(Malformed("a bulk string longer than 32 MiB"));
            }
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(Malformed("a bulk string not ended by CRLF"));
            }
            Ok(Some((Item::Bulk(&buf[next..end]), end + 2)))
        }
        _ => Err(Malformed("an item that is not a bulk string or an integer")),
    }
}

/// The first whole frame of `buf` and how many bytes it took; `None` while
/// it is not whole yet.
pub fn parse(buf: &[u8]) -> Parsed<'_, Push<'_>> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some((head, mut at)) = line(buf, 1)? else {
        return Ok(None);
    };
    match kind {
        b'+' => return Ok(Some((Push::Status(head), at))),
        b'-' => return Ok(Some((Push::Error(head), at))),
        b':' => {
            integer(head)?;
            return Ok(Some((Push::Other, at)));
        }
        b'*' => {}
        b'$' => {
            return match item(buf, 0)? {
                Some((_, end)) => Ok(Some((Push::Other, end))),
                None => Ok(None),
            };
        }
        _ => return Err(Malformed("an unknown type byte")),
    }
    let n = integer(head)?;
    let n = usize::try_from(n).map_err(|_| Malformed("a nil or negative array"))?;
    if n > MAX_ITEMS {
        return Err(Malformed("an array of more than 4 items"));
    }
    let mut items = [Item::Nil; MAX_ITEMS];
    for slot in items.iter_mut().take(n) {
        let Some((it, next)) = item(buf, at)? else {
            return Ok(None);
        };
        *slot = it;
        at = next;
    }
    let push = match items[..n] {
        [
            Item::Bulk(b"message"),
            Item::Bulk(channel),
            Item::Bulk(payload),
        ] => Push::Message { channel, payload },
        [Item::Bulk(b"subscribe"), Item::Bulk(channel), Item::Int(_)] => Push::Subscribed(channel),
        [
            Item::Bulk(b"unsubscribe"),
            Item::Bulk(channel),
            Item::Int(_),
        ] => Push::Unsubscribed(channel),
        [Item::Bulk(b"pong"), _] => Push::Pong,
        _ => Push::Other,
    };
    Ok(Some((push, at)))
}

/// Appends `args` to `out` as one command.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut n = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(n.format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(n.format(arg.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_BULK, MAX_LINE, Malformed, Push, command, parse};

    fn whole(bytes: &[u8]) -> Push<'_> {
        let (push, n) = parse(bytes).expect("well formed").expect("whole");
        assert_eq!(n, bytes.len(), "the frame takes every byte");
        push
    }

    #[test]
    fn reads_each_shape_pub_sub_has() {
        assert_eq!(
            whole(b"*3\r\n$7\r\nmessage\r\n$5\r\nll:ch\r\n$7\r\n{\"a\":1}\r\n"),
            Push::Message {
                channel: b"ll:ch",
                payload: b"{\"a\":1}"
            }
        );
        assert_eq!(
            whole(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"),
            Push::Subscribed(b"ch")
        );
        assert_eq!(
            whole(b"*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n"),
            Push::Unsubscribed(b"ch")
        );
        assert_eq!(whole(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"), Push::Pong);
        assert_eq!(whole(b"+OK\r\n"), Push::Status(b"OK"));
        assert_eq!(
            whole(b"-WRONGPASS invalid password\r\n"),
            Push::Error(b"WRONGPASS invalid password")
        );
        assert_eq!(
            whole(b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$1\r\nc\r\n$1\r\np\r\n"),
            Push::Other
        );
        assert_eq!(whole(b":3\r\n"), Push::Other);
        assert_eq!(whole(b"$-1\r\n"), Push::Other);
        assert_eq!(whole(b"*0\r\n"), Push::Other);
    }

    #[test]
    fn a_payload_may_hold_crlf_and_any_byte() {
        let payload = b"a\r\nb\x00\xff";
        let mut frame = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$6\r\n".to_vec();
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\n");
        assert_eq!(
            whole(&frame),
            Push::Message {
                channel: b"c",
                payload
            }
        );
    }

    #[test]
    fn a_frame_cut_anywhere_waits_for_the_rest_then_reads_the_same() {
        let frame: &[u8] = b"*3\r\n$7\r\nmessage\r\n$5\r\nll:ch\r\n$11\r\nhello world\r\n";
        for cut in 0..frame.len() {
            assert_eq!(parse(&frame[..cut]), Ok(None), "cut at {cut}");
        }
        let mut two = frame.to_vec();
        two.extend_from_slice(b"+OK\r\n");
        let (first, n) = parse(&two).expect("well formed").expect("whole");
        assert_eq!(n, frame.len(), "only the first frame is taken");
        assert!(matches!(first, Push::Message { .. }));
        assert_eq!(parse(&two[n..]), Ok(Some((Push::Status(b"OK"), 5))));
    }

    #[test]
    fn a_bulk_string_over_the_bound_is_refused_before_its_bytes_arrive() {
        let header = format!("*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n${}\r\n", MAX_BULK + 1);
        assert_eq!(
            parse(header.as_bytes()),
            Err(Malformed("a bulk string longer than 32 MiB"))
        );
        // At the bound itself: waits for the bytes.
        let header = format!("*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n${MAX_BULK}\r\n");
        assert_eq!(parse(header.as_bytes()), Ok(None));
    }

    #[test]
    fn a_line_over_the_bound_is_refused_without_waiting_for_its_end() {
        let mut long = b"-ERR ".to_vec();
        long.resize(MAX_LINE + 8, b'x');
        assert_eq!(parse(&long), Err(Malformed("a line longer than 64 KiB")));
        let mut just = b"-".to_vec();
        just.resize(MAX_LINE + 1, b'x');
        assert_eq!(parse(&just), Ok(None), "at the bound: not whole yet");
        just.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&just), Ok(Some((Push::Error(_), _)))));
    }

    #[test]
    fn what_is_not_resp_is_refused() {
        for bad in [
            &b"?\r\n"[..],
            b"*x\r\n",
            b"*5\r\n",
            b"*-1\r\n",
            b"*1\r\n*1\r\n:1\r\n",
            b"*1\r\n$-2\r\n",
            b"*1\r\n$3\r\nabcd\r\n",
            b"*1\r\n?\r\n",
            b":one\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"SUBSCRIBE", b"ll:{u:1:a}:live"]);
        command(&mut out, &[b"PING"]);
        assert_eq!(
            out,
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$15\r\nll:{u:1:a}:live\r\n*1\r\n$4\r\nPING\r\n"
        );
    }

    #[test]
    fn any_bytes_parse_or_fail_without_panicking() {
        // A cheap fuzz: every prefix and every one-byte change of some frames.
        let frames: [&[u8]; 3] = [
            b"*3\r\n$7\r\nmessage\r\n$5\r\nll:ch\r\n$2\r\n{}\r\n",
            b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n",
            b"-ERR x\r\n",
        ];
        for frame in frames {
            for i in 0..frame.len() {
                for b in [0u8, b'\r', b'\n', b'$', b'*', b'-', b'9', 0xff] {
                    let mut f = frame.to_vec();
                    f[i] = b;
                    for cut in 0..=f.len() {
                        if let Ok(Some((_, n))) = parse(&f[..cut]) {
                            assert!(n <= cut);
                        }
                    }
                }
            }
        }
    }
}
