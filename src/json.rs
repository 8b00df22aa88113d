//! A small JSON reader and writer for the protocol's needs.
//!
//! The core never builds a JSON tree for an event's payload: it validates the
//! text, reads the few fields it needs (an event's name, an envelope's
//! `stream`, `epoch` and `seq`, an ack's `ok`), and hands the payload on as
//! raw JSON text. In the browser, `JSON.parse` then builds the objects the app
//! sees, once, at native speed; and the wasm carries no general-purpose JSON
//! library (serde_json with its number formatting is most of a browser
//! SDK's size budget). Native users decode payloads into the typed contracts
//! with serde (see [`crate::contract`]).
//!
//! Every function takes untrusted input: errors, never panics, and nesting is
//! bounded so hostile input cannot exhaust the stack.

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 128;

/// Why a text is not the JSON expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// Not valid JSON; the byte offset where reading stopped.
    #[error("invalid json at byte {0}")]
    Syntax(usize),
    /// Arrays or objects nested deeper than [`MAX_DEPTH`].
    #[error("json nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Valid JSON of another type than needed.
    #[error("json of the wrong type")]
    WrongType,
}

struct Reader<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            s,
            b: s.as_bytes(),
            i: 0,
        }
    }

    fn err(&self) -> JsonError {
        JsonError::Syntax(self.i)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Result<(), JsonError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err())
        }
    }

    fn lit(&mut self, word: &str) -> Result<(), JsonError> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err())
        }
    }

    /// Skips one value (after leading white space); returns its slice.
    fn value(&mut self, depth: usize) -> Result<&'a str, JsonError> {
        self.ws();
        let start = self.i;
        match self.peek().ok_or_else(|| self.err())? {
            b'{' => {
                if depth >= MAX_DEPTH {
                    return Err(JsonError::TooDeep);
                }
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        self.value(depth + 1)?;
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(self.err()),
                        }
                    }
                }
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return Err(JsonError::TooDeep);
                }
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                } else {
                    loop {
                        self.value(depth + 1)?;
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(self.err()),
                        }
                    }
                }
            }
            b'"' => self.string()?,
            b't' => self.lit("true")?,
            b'f' => self.lit("false")?,
            b'n' => self.lit("null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return Err(self.err()),
        }
        self.s.get(start..self.i).ok_or_else(|| self.err())
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<(), JsonError> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err()),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err());
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err());
            }
        }
        Ok(())
    }

    fn string(&mut self) -> Result<(), JsonError> {
        self.eat(b'"')?;
        loop {
            match self.peek().ok_or_else(|| self.err())? {
                b'"' => {
                    self.i += 1;
                    return Ok(());
                }
                b'\\' => {
                    self.i += 1;
                    match self.peek().ok_or_else(|| self.err())? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            self.i += 1;
                            for _ in 0..4 {
                                match self.peek() {
                                    Some(c) if c.is_ascii_hexdigit() => self.i += 1,
                                    _ => return Err(self.err()),
                                }
                            }
                        }
                        _ => return Err(self.err()),
                    }
                }
                0x00..=0x1f => return Err(self.err()),
                _ => self.i += 1,
            }
        }
    }

    fn end(&mut self) -> Result<(), JsonError> {
        self.ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err(self.err())
        }
    }
}

/// Checks that `text` is exactly one JSON value (white space around allowed).
pub fn validate(text: &str) -> Result<(), JsonError> {
    let mut r = Reader::new(text);
    r.value(0)?;
    r.end()
}

/// The elements of a JSON array, as raw slices of `text`.
pub fn array(text: &str) -> Result<Vec<&str>, JsonError> {
    let mut r = Reader::new(text);
    r.ws();
    if r.peek() != Some(b'[') {
        r.value(0)?;
        r.end()?;
        return Err(JsonError::WrongType);
    }
    r.i += 1;
    let mut items = Vec::new();
    r.ws();
    if r.peek() == Some(b']') {
        r.i += 1;
    } else {
        loop {
            let v = r.value(1)?;
            items.push(v);
            r.ws();
            match r.peek() {
                Some(b',') => r.i += 1,
                Some(b']') => {
                    r.i += 1;
                    break;
                }
                _ => return Err(r.err()),
            }
        }
    }
    r.end()?;
    Ok(items)
}

/// The members of a JSON object: raw key slices (with their quotes) and raw
/// value slices.
pub fn object(text: &str) -> Result<Vec<(&str, &str)>, JsonError> {
    let mut r = Reader::new(text);
    r.ws();
    if r.peek() != Some(b'{') {
        r.value(0)?;
        r.end()?;
        return Err(JsonError::WrongType);
    }
    r.i += 1;
    let mut members = Vec::new();
    r.ws();
    if r.peek() == Some(b'}') {
        r.i += 1;
    } else {
        loop {
            r.ws();
            let start = r.i;
            r.string()?;
            let key = text.get(start..r.i).ok_or_else(|| r.err())?;
            r.ws();
            r.eat(b':')?;
            let v = r.value(1)?;
            members.push((key, v));
            r.ws();
            match r.peek() {
                Some(b',') => r.i += 1,
                Some(b'}') => {
                    r.i += 1;
                    break;
                }
                _ => return Err(r.err()),
            }
        }
    }
    r.end()?;
    Ok(members)
}

/// The raw value of `key` in a JSON object (`None` if absent or not an
/// object). A key given twice yields the last, as `JSON.parse` does.
pub fn get<'a>(obj: &'a str, key: &str) -> Option<&'a str> {
    object(obj)
        .ok()?
        .into_iter()
        .rev()
        .find(|(k, _)| string(k).as_deref() == Some(key))
        .map(|(_, v)| v)
}

/// The text of a JSON string value, unescaped. Lone surrogates become
/// U+FFFD, as `TextDecoder` would make them.
pub fn string(raw: &str) -> Option<String> {
    let raw = raw.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(inner.to_owned());
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hex = |chars: &mut std::str::Chars<'_>| -> Option<u32> {
                    let h: String = chars.by_ref().take(4).collect();
                    if h.len() == 4 {
                        u32::from_str_radix(&h, 16).ok()
                    } else {
                        None
                    }
                };
                let hi = hex(&mut chars)?;
                let c = if (0xD800..0xDC00).contains(&hi) {
                    let mut ahead = chars.clone();
                    if ahead.next() == Some('\\') && ahead.next() == Some('u') {
                        match hex(&mut ahead) {
                            Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                                chars = ahead;
                                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                            }
                            _ => None,
                        }
                    } else {
                        None
                    }
                } else {
                    char::from_u32(hi)
                };
                out.push(c.unwrap_or('\u{FFFD}'));
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A non-negative integer (no fraction, no exponent) that fits in 64 bits.
pub fn u64(raw: &str) -> Option<u64> {
    let raw = raw.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
    if raw.is_empty()
        || !raw.bytes().all(|b| b.is_ascii_digit())
        || (raw.len() > 1 && raw.starts_with('0'))
    {
        return None;
    }
    raw.parse().ok()
}

/// `true` or `false`.
pub fn bool(raw: &str) -> Option<bool> {
    match raw.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 0xf] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `s` as a JSON string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    write_string(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_what_json_allows_and_nothing_else() {
        for ok in [
            "0",
            "-0",
            "1.5e+3",
            " [1, \"a\", {\"b\": null}] ",
            "\"\\u00e9\\n\"",
            "true",
            "{}",
            "[]",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "01",
            "1.",
            "-",
            "[1,]",
            "{\"a\"}",
            "{a:1}",
            "\"\u{1}\"",
            "tru",
            "[1] 2",
            "\"\\x\"",
            "1e",
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        assert_eq!(validate(&deep), Err(JsonError::TooDeep));
        let fine = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(validate(&fine), Ok(()));
    }

    #[test]
    fn arrays_and_objects_split_into_raw_members() {
        assert_eq!(
            array(r#"["ev", {"a": [1, 2]}, "x"]"#),
            Ok(vec![r#""ev""#, r#"{"a": [1, 2]}"#, r#""x""#])
        );
        assert_eq!(array("{}"), Err(JsonError::WrongType));
        let env = r#"{"stream":"job:1","seq":3,"seq":4,"data":{"seq":9}}"#;
        assert_eq!(get(env, "seq").and_then(u64), Some(4));
        assert_eq!(
            get(env, "stream").and_then(string).as_deref(),
            Some("job:1")
        );
        assert_eq!(get(env, "missing"), None);
        assert_eq!(get("[1]", "a"), None);
    }

    #[test]
    fn strings_unescape_including_surrogate_pairs() {
        assert_eq!(string(r#""a\"b\\c\/\n""#).as_deref(), Some("a\"b\\c/\n"));
        assert_eq!(string(r#""\ud83d\ude00""#).as_deref(), Some("😀"));
        assert_eq!(string(r#""\ud83d!""#).as_deref(), Some("\u{FFFD}!"));
        assert_eq!(string("5"), None);
    }

    #[test]
    fn numbers_read_only_plain_unsigned_integers() {
        assert_eq!(u64("42"), Some(42));
        assert_eq!(u64("18446744073709551615"), Some(u64::MAX));
        for bad in ["-1", "1.0", "1e3", "007", "18446744073709551616", ""] {
            assert_eq!(u64(bad), None, "{bad}");
        }
    }

    #[test]
    fn written_strings_read_back() {
        for s in [
            "plain",
            "quote\" back\\ slash",
            "ctl \u{1}\u{1f}\t\r\n",
            "😀 é",
        ] {
            let q = quote(s);
            assert_eq!(validate(&q), Ok(()));
            assert_eq!(string(&q).as_deref(), Some(s));
        }
    }
}
