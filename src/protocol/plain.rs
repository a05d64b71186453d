//! The common message, read by hand: the cheapest first try of the fast path.
//!
//! Nearly every message on a stream is *plain*: an object of `src`, `dest`
//! and `body` whose strings hold no escape, whose `msg_id` is a plain
//! non-negative integer, and whose other fields are scalars (a plain
//! string, a number, `true`, `false`, `null`). Reading such a message with
//! serde costs more than everything else grace does for it; this reader
//! walks it once, byte by byte, and builds the same [`Request`].
//!
//! It answers `None` for anything it is not sure of (an escape, a nested
//! value, a repeated field, a float `msg_id`, anything malformed), and the
//! message then goes through serde exactly as before: what it accepts, it
//! reads exactly as serde's typed pass would (checked against it by the
//! tests below and by `tests/fuzz_properties.rs`).

use super::{BodyFields, Request};
use std::borrow::Cow;

/// `text` read as a plain message, or `None` (see the module's doc).
pub(super) fn plain_message(text: &str) -> Option<Request<'_>> {
    let mut reader = Reader { text, at: 0 };
    reader.expect(b'{')?;
    let (mut src, mut dest, mut body) = (None, None, None);
    loop {
        let key = reader.key(&[
            ("src", b"\"src\""),
            ("dest", b"\"dest\""),
            ("body", b"\"body\""),
        ])?;
        reader.expect(b':')?;
        match key {
            "src" => set_once(&mut src, reader.plain_str()?)?,
            "dest" => set_once(&mut dest, reader.plain_str()?)?,
            "body" => set_once(&mut body, reader.body()?)?,
            // serde skips what the envelope does not name.
            _ => {
                reader.scalar()?;
            }
        }
        if reader.end_of_object()? {
            break;
        }
    }
    reader.skip_whitespace();
    if reader.at != text.len() {
        return None;
    }
    let (kind, msg_id, fields) = body?;
    Some(Request {
        src: Cow::Borrowed(src?),
        dest: dest.map(Cow::Borrowed),
        msg_id,
        kind: Cow::Borrowed(kind),
        fields,
    })
}

/// The value of `digits`, ASCII digits only, as a plain integer: `None`
/// for none, a leading zero, or a value beyond `u64`.
pub(crate) fn plain_u64(digits: &[u8]) -> Option<u64> {
    debug_assert!(digits.iter().all(u8::is_ascii_digit));
    if digits.is_empty() || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// Sets `slot`, or `None` if it was already set (a repeated field is for
/// serde's pass to report).
fn set_once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

/// A body: its `type`, its `msg_id`, its other fields as raw JSON text.
type PlainBody<'a> = (&'a str, Option<u64>, BodyFields<'a>);

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// Skips JSON whitespace (exactly the four bytes serde_json skips).
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes().get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// After a member: `,` (more follow) or `}` (the object ends: `true`).
    fn end_of_object(&mut self) -> Option<bool> {
        let byte = self.peek()?;
        self.at += 1;
        match byte {
            b',' => Some(false),
            b'}' => Some(true),
            _ => None,
        }
    }

    /// A member's key: one of the `known` ones, matched as the quoted text
    /// it is written as (no scan), else any plain string.
    fn key(&mut self, known: &[(&'static str, &[u8])]) -> Option<&'a str> {
        self.skip_whitespace();
        let rest = &self.bytes()[self.at..];
        for &(key, quoted) in known {
            if rest.starts_with(quoted) {
                self.at += quoted.len();
                return Some(key);
            }
        }
        self.plain_str()
    }

    /// A string without escapes or control characters: its contents.
    fn plain_str(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let end = start + super::plain_run(&self.bytes()[start..]);
        if self.bytes().get(end) != Some(&b'"') {
            return None;
        }
        self.at = end + 1;
        // `"` is ASCII, so both ends are character boundaries.
        Some(&self.text[start..end])
    }

    /// A non-negative integer in plain digits that fits a `u64`.
    fn plain_u64(&mut self) -> Option<u64> {
        self.skip_whitespace();
        let digits = self.digits();
        let text = &self.bytes()[digits..self.at];
        if let Some(b'.' | b'e' | b'E') = self.bytes().get(self.at) {
            return None;
        }
        plain_u64(text)
    }

    /// Skips ASCII digits; where they started.
    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.bytes().get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        start
    }

    /// A scalar value: a plain string (quotes included), a number as JSON
    /// writes it, `true`, `false` or `null`. Its text, exactly.
    fn scalar(&mut self) -> Option<&'a str> {
        let start = match self.peek()? {
            b'"' => {
                let start = self.at;
                self.plain_str()?;
                start
            }
            b't' => self.literal("true")?,
            b'f' => self.literal("false")?,
            b'n' => self.literal("null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return None,
        };
        Some(&self.text[start..self.at])
    }

    fn literal(&mut self, word: &str) -> Option<usize> {
        let start = self.at;
        self.bytes()[start..]
            .starts_with(word.as_bytes())
            .then(|| self.at += word.len())?;
        Some(start)
    }

    /// JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<usize> {
        let start = self.at;
        if self.bytes()[self.at] == b'-' {
            self.at += 1;
        }
        let int = self.digits();
        match self.at - int {
            0 => return None,
            1 => {}
            _ if self.bytes()[int] == b'0' => return None,
            _ => {}
        }
        if self.bytes().get(self.at) == Some(&b'.') {
            self.at += 1;
            let fraction = self.digits();
            if self.at == fraction {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.bytes().get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.bytes().get(self.at) {
                self.at += 1;
            }
            let exponent = self.digits();
            if self.at == exponent {
                return None;
            }
        }
        Some(start)
    }

    /// The body object: `type` (required), `msg_id`, and the other fields.
    fn body(&mut self) -> Option<PlainBody<'a>> {
        self.expect(b'{')?;
        let (mut kind, mut msg_id) = (None, None);
        let mut fields = BodyFields::new();
        loop {
            let key = self.key(&[("type", b"\"type\""), ("msg_id", b"\"msg_id\"")])?;
            self.expect(b':')?;
            match key {
                "type" => set_once(&mut kind, self.plain_str()?)?,
                "msg_id" => set_once(&mut msg_id, self.plain_u64()?)?,
                _ => {
                    let value = self.scalar()?;
                    fields.push(Cow::Borrowed(key), value);
                }
            }
            if self.end_of_object()? {
                break;
            }
        }
        Some((kind?, msg_id, fields))
    }
}

#[cfg(test)]
mod tests {
    use super::super::well_formed_by_serde;
    use super::*;
    use proptest::prelude::*;

    /// What serde's typed pass makes of `text`, to compare with.
    fn by_serde(text: &str) -> Option<String> {
        well_formed_by_serde(text).map(|request| format!("{request:?}"))
    }

    fn by_hand(text: &str) -> Option<String> {
        plain_message(text).map(|request| format!("{request:?}"))
    }

    #[test]
    fn plain_messages_read_as_serde_reads_them() {
        for text in [
            r#"{"src": "c1", "dest": "api", "body": {"type": "get_user", "msg_id": 1, "user_id": 309}}"#,
            r#"{"src":"c1","body":{"type":"echo"}}"#,
            "\t{ \"id\" : 3 ,\r\n\"src\":\"é✓\",\"body\":{\"msg_id\":18446744073709551615,\"type\":\"\",\"\":null}} \n",
            r#"{"body":{"type":"t","a":-0,"b":0.5e-3,"c":1E+2,"d":true,"e":false,"f":"x y","g":-12},"src":"s","dest":"d"}"#,
            r#"{"src":"c","body":{"type":"t","a":1,"a":2}}"#,
            r#"{"src":"a client name of more than sixteen bytes","body":{"type":"0123456789abcdef"}}"#,
        ] {
            assert_eq!(by_hand(text), by_serde(text), "{text}");
            assert!(by_hand(text).is_some(), "{text}");
        }
    }

    /// Pieces messages are made of: plain and unusual ones.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "\"src\"",
            "\"dest\"",
            "\"body\"",
            "\"type\"",
            "\"msg_id\"",
            "\"id\"",
            "\"c1\"",
            "\"é\"",
            "\"\\u0041\"",
            "\"\\\"\"",
            "\"\"",
            ":",
            ",",
            "{",
            "}",
            "[",
            "]",
            " ",
            "\t",
            "\r\n",
            "0",
            "7",
            "-0",
            "01",
            "1.5",
            "2e3",
            "-",
            "18446744073709551616",
            "true",
            "null",
            "fals",
        ])
    }

    /// A plain message with its members in any order, and its values
    /// any scalar.
    fn message() -> impl Strategy<Value = String> {
        let scalar = prop::sample::select(vec![
            "1", "-0", "0.25", "3E-2", "\"x\"", "true", "false", "null", "\"\"",
        ]);
        (
            prop::collection::vec(scalar, 0..4),
            any::<u64>(),
            any::<bool>(),
            prop::sample::select(vec!["", " ", "\n", "\t\r"]),
        )
            .prop_map(|(values, msg_id, with_dest, space)| {
                let mut body = format!("{{\"type\":\"t\",{space}\"msg_id\":{msg_id}");
                for (at, value) in values.iter().enumerate() {
                    body.push_str(&format!(",\"f{}\"{space}:{value}", at % 2));
                }
                body.push('}');
                let dest = if with_dest { ",\"dest\":\"n1\"" } else { "" };
                format!("{space}{{\"body\":{body}{dest},{space}\"src\":\"c\"}}{space}")
            })
    }

    proptest! {
        #[test]
        fn what_is_read_by_hand_is_what_serde_reads(
            text in message(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), piece(), any::<bool>()), 1..4),
        ) {
            // A plain message with pieces put in, or put in place of a byte.
            let mut text = text.into_bytes();
            for (at, piece, replace) in edits {
                let at = at.index(text.len());
                let end = if replace { at + 1 } else { at };
                text.splice(at..end, piece.bytes());
            }
            if let Ok(text) = String::from_utf8(text)
                && let Some(request) = by_hand(&text)
            {
                prop_assert_eq!(Some(request), by_serde(&text), "{}", text);
            }
        }

        #[test]
        fn plain_messages_are_all_read_by_hand(text in message()) {
            prop_assert!(by_hand(&text).is_some(), "{}", text);
            prop_assert_eq!(by_hand(&text), by_serde(&text), "{}", text);
        }
    }

    #[test]
    fn anything_unusual_is_left_to_serde() {
        for text in [
            // Escapes, nested values, repeated or missing shared fields.
            r#"{"src":"c\u0031","body":{"type":"echo"}}"#,
            r#"{"src":"a client name of more than sixteen\tbytes","body":{"type":"echo"}}"#,
            "{\"src\":\"a client name of more than sixteen\u{1f}\",\"body\":{\"type\":\"echo\"}}",
            r#"{"src":"c","body":{"type":"0123456789abcdef"#,
            r#"{"src":"c","body":{"type":"echo","echo":{"a":1}}}"#,
            r#"{"src":"c","body":{"type":"echo","echo":[1]}}"#,
            r#"{"src":"c","id":{},"body":{"type":"echo"}}"#,
            r#"{"src":"c","src":"c","body":{"type":"echo"}}"#,
            r#"{"src":"c","body":{"type":"echo","type":"echo"}}"#,
            r#"{"src":"c","body":{"type":"echo","msg_id":1,"msg_id":1}}"#,
            r#"{"src":"c","body":{"msg_id":1}}"#,
            r#"{"body":{"type":"echo"}}"#,
            r#"{"src":"c","dest":null,"body":{"type":"echo"}}"#,
            // msg_id that is not a plain u64.
            r#"{"src":"c","body":{"type":"echo","msg_id":-0}}"#,
            r#"{"src":"c","body":{"type":"echo","msg_id":1.0}}"#,
            r#"{"src":"c","body":{"type":"echo","msg_id":1e2}}"#,
            r#"{"src":"c","body":{"type":"echo","msg_id":01}}"#,
            r#"{"src":"c","body":{"type":"echo","msg_id":18446744073709551616}}"#,
            // Not JSON, or more than one value.
            r#"{"src":"c","body":{"type":"echo","n":01}}"#,
            r#"{"src":"c","body":{"type":"echo","n":1.}}"#,
            r#"{"src":"c","body":{"type":"echo","n":-}}"#,
            r#"{"src":"c","body":{"type":"echo","n":1e}}"#,
            r#"{"src":"c","body":{"type":"echo","n":tru}}"#,
            r#"{"src":"c","body":{"type":"echo",}}"#,
            r#"{"src":"c","body":{"type":"echo"}} x"#,
            r#"{"src":"c","body":{"type":"echo"}}{}"#,
            "{\"src\":\"c\u{1}\",\"body\":{\"type\":\"echo\"}}",
            "\u{c}{\"src\":\"c\",\"body\":{\"type\":\"echo\"}}",
            r#"{"src":"c","body":{"type":"echo"}"#,
            "{}",
            "",
        ] {
            assert_eq!(by_hand(text), None, "{text}");
        }
    }
}
