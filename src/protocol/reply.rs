//! Writing replies: one compact JSON line per reply.
//!
//! Every reply body starts with `type` and `in_reply_to`, then the fields of
//! the handler's own reply struct in declaration order. The envelope swaps
//! `src` and `dest` here, in one place, so no handler can get it wrong.
//!
//! A body is serialized with serde ([`write_body`]), or, for the replies
//! that go out for nearly every request (a record, an error), written field
//! by field with a [`FieldWriter`] ([`write_body_fields`]): the same bytes,
//! without serde's machinery in the hot path.

use super::{ErrorCode, RequestError};
use serde::Serialize;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};

/// This node's id when neither `init` nor the request's `dest` names it
/// (also the journal's name then).
pub const UNNAMED_NODE_ID: &str = "grace";

/// A handler's reply body: its fields, plus the `type` it goes out as.
pub trait ReplyBody: Serialize {
    /// The reply's `type` on the wire.
    const TYPE: &'static str;
}

/// Where a reply goes and what it answers.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTo<'a> {
    /// This node's id: the reply's `src`.
    pub node_id: &'a str,
    /// The request's `src`: the reply's `dest`.
    pub client: &'a str,
    /// The request's `msg_id`, if it had one.
    pub in_reply_to: Option<u64>,
}

/// Appends one reply line (with its `\n`) to `out`.
pub fn write_reply<B: ReplyBody>(out: &mut Vec<u8>, to: ReplyTo<'_>, fields: &B) {
    write_envelope_head(out, to.node_id, to.client);
    write_body(out, to.in_reply_to, fields);
}

/// Appends the part of a reply line known before its body:
/// `{"src":NODE,"dest":CLIENT,"body":`. A request that waits on a call keeps
/// this instead of its request's strings.
pub fn write_envelope_head(out: &mut Vec<u8>, node_id: &str, client: &str) {
    const SRC: &[u8] = b"{\"src\":\"";
    const DEST: &[u8] = b"\",\"dest\":\"";
    const BODY: &[u8] = b"\",\"body\":";
    // Room for the usual case, no escapes, taken once.
    out.reserve(SRC.len() + node_id.len() + DEST.len() + client.len() + BODY.len());
    out.extend_from_slice(SRC);
    write_json_str_contents(out, node_id);
    out.extend_from_slice(DEST);
    write_json_str_contents(out, client);
    out.extend_from_slice(BODY);
}

/// Appends `text` as a JSON string, escaped exactly as `serde_json` does.
pub fn write_json_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    write_json_str_contents(out, text);
    out.push(b'"');
}

/// Appends `text` escaped as the inside of a JSON string: `"`, `\\` and
/// the control characters, as `serde_json` escapes them (`\n`, `\u001f`).
fn write_json_str_contents(out: &mut Vec<u8>, text: &str) {
    let mut rest = text.as_bytes();
    loop {
        let run = super::plain_run(rest);
        out.extend_from_slice(&rest[..run]);
        let Some(&byte) = rest.get(run) else {
            return;
        };
        let escape = match byte {
            b'"' => CharEscape::Quote,
            b'\\' => CharEscape::ReverseSolidus,
            0x08 => CharEscape::Backspace,
            b'\t' => CharEscape::Tab,
            b'\n' => CharEscape::LineFeed,
            0x0c => CharEscape::FormFeed,
            b'\r' => CharEscape::CarriageReturn,
            _ => CharEscape::AsciiControl(byte),
        };
        // Writing into a Vec cannot fail.
        CompactFormatter
            .write_char_escape(out, escape)
            .expect("writes to a Vec");
        rest = &rest[run + 1..];
    }
}

/// Appends `{"type":T` and, if there is one, `,"in_reply_to":N`: the start
/// of every reply body.
fn open_body(out: &mut Vec<u8>, type_name: &'static str, in_reply_to: Option<u64>) {
    debug_assert!(is_plain_name(type_name));
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(type_name.as_bytes());
    out.push(b'"');
    if let Some(id) = in_reply_to {
        out.extend_from_slice(b",\"in_reply_to\":");
        out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    }
}

/// A type or field name of grace's own: plain ASCII, written as it is.
fn is_plain_name(name: &str) -> bool {
    name.bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

/// Writes a reply body's own fields, in order, after `type` and
/// `in_reply_to` (see [`write_body_fields`]).
pub struct FieldWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl FieldWriter<'_> {
    fn name(&mut self, name: &'static str) {
        debug_assert!(is_plain_name(name));
        self.out.extend_from_slice(b",\"");
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A field whose value is JSON text already (compact, on one line).
    pub fn raw_json(&mut self, name: &'static str, json: &[u8]) -> &mut Self {
        self.name(name);
        self.out.extend_from_slice(json);
        self
    }

    pub fn str(&mut self, name: &'static str, value: &str) -> &mut Self {
        self.name(name);
        write_json_str(self.out, value);
        self
    }

    /// A string field made of `parts`, one after the other (no `String`
    /// is made of them).
    pub fn str_parts(&mut self, name: &'static str, parts: &[&str]) -> &mut Self {
        self.name(name);
        self.out.push(b'"');
        for part in parts {
            write_json_str_contents(self.out, part);
        }
        self.out.push(b'"');
        self
    }

    /// A field whose value is an array of strings.
    pub fn str_list<'s>(
        &mut self,
        name: &'static str,
        items: impl IntoIterator<Item = &'s str>,
    ) -> &mut Self {
        self.name(name);
        self.out.push(b'[');
        for (at, item) in items.into_iter().enumerate() {
            if at > 0 {
                self.out.push(b',');
            }
            write_json_str(self.out, item);
        }
        self.out.push(b']');
        self
    }

    pub fn bool(&mut self, name: &'static str, value: bool) -> &mut Self {
        self.name(name);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    pub fn u64(&mut self, name: &'static str, value: u64) -> &mut Self {
        self.name(name);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }
}

/// Appends a reply's body after its envelope head, and ends the line, with
/// the body's own fields written by `fields`: the same bytes as
/// [`write_body`] with a struct of those fields in that order.
pub fn write_body_fields(
    out: &mut Vec<u8>,
    type_name: &'static str,
    in_reply_to: Option<u64>,
    fields: impl FnOnce(&mut FieldWriter<'_>),
) {
    open_body(out, type_name, in_reply_to);
    fields(&mut FieldWriter { out: &mut *out });
    out.extend_from_slice(b"}}\n");
}

/// Appends an `error` body for `code` whose text is `text_parts`, one
/// after the other (see [`write_body_fields`]).
pub fn write_error_body(
    out: &mut Vec<u8>,
    in_reply_to: Option<u64>,
    code: ErrorCode,
    text_parts: &[&str],
) {
    write_body_fields(out, ErrorReply::TYPE, in_reply_to, |fields| {
        fields
            .u64("code", code.code().into())
            .str_parts("text", text_parts);
    });
}

/// Appends a reply's body after its envelope head, and ends the line:
/// `{"type":T,"in_reply_to":N,` then the handler's own fields in order.
///
/// The fields are serialized as their own object whose opening brace is
/// then turned into the comma after `in_reply_to` (serde's `flatten` would
/// do the same through a slower map serializer). `T` is one of grace's own
/// type names, plain ASCII, written as it is.
pub fn write_body<B: ReplyBody>(out: &mut Vec<u8>, in_reply_to: Option<u64>, fields: &B) {
    open_body(out, B::TYPE, in_reply_to);
    let fields_start = out.len();
    // Serializing plain structs of strings, numbers and raw JSON into a Vec
    // cannot fail.
    serde_json::to_writer(&mut *out, fields).expect("reply serializes");
    debug_assert_eq!(
        out.get(fields_start),
        Some(&b'{'),
        "a reply body is an object"
    );
    if out.len() == fields_start + 2 {
        // `{}`: no fields of its own.
        out.truncate(fields_start);
    } else {
        out[fields_start] = b',';
        out.pop();
    }
    out.extend_from_slice(b"}}\n");
}

/// The body of an `error` reply.
#[derive(Debug, Serialize)]
pub struct ErrorReply<'a> {
    pub code: ErrorCode,
    pub text: &'a str,
}

impl ReplyBody for ErrorReply<'_> {
    const TYPE: &'static str = "error";
}

/// Appends an `error` reply for `error`.
pub fn write_error(out: &mut Vec<u8>, to: ReplyTo<'_>, error: &RequestError) {
    write_envelope_head(out, to.node_id, to.client);
    write_error_body(out, to.in_reply_to, error.code, &[&error.text]);
}

impl<'a> From<&'a RequestError> for ErrorReply<'a> {
    fn from(error: &'a RequestError) -> Self {
        ErrorReply {
            code: error.code,
            text: &error.text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Pong {
        zebra: u8,
        apple: u8,
    }

    impl ReplyBody for Pong {
        const TYPE: &'static str = "pong";
    }

    #[test]
    fn reply_body_starts_with_type_and_in_reply_to_then_fields_in_order() {
        let mut out = Vec::new();
        let to = ReplyTo {
            node_id: "n1",
            client: "c1",
            in_reply_to: Some(9),
        };
        write_reply(&mut out, to, &Pong { zebra: 1, apple: 2 });
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"src\":\"n1\",\"dest\":\"c1\",\"body\":{\"type\":\"pong\",\"in_reply_to\":9,\"zebra\":1,\"apple\":2}}\n"
        );
    }

    #[test]
    fn fields_written_one_by_one_are_the_bytes_serde_writes() {
        #[derive(Serialize)]
        struct Probe<'a> {
            record: &'a serde_json::value::RawValue,
            name: &'a str,
            note: String,
            list: Vec<&'a str>,
            empty: Vec<&'a str>,
            count: u64,
            cached: bool,
        }
        impl ReplyBody for Probe<'_> {
            const TYPE: &'static str = "probe";
        }
        let record = serde_json::value::RawValue::from_string(r#"{"id":"a\"b"}"#.into()).unwrap();
        for in_reply_to in [None, Some(7)] {
            let (name, id) = ("q\"\\\u{1}\u{1f}\n\té✓", "\"x\u{7f}\"");
            let mut by_serde = Vec::new();
            write_body(
                &mut by_serde,
                in_reply_to,
                &Probe {
                    record: &record,
                    name,
                    note: format!("id {id} of {name}"),
                    list: vec![name, id],
                    empty: Vec::new(),
                    count: u64::MAX,
                    cached: true,
                },
            );
            let mut by_fields = Vec::new();
            write_body_fields(&mut by_fields, Probe::TYPE, in_reply_to, |fields| {
                fields
                    .raw_json("record", record.get().as_bytes())
                    .str("name", name)
                    .str_parts("note", &["id ", id, " of ", name])
                    .str_list("list", [name, id])
                    .str_list("empty", [])
                    .u64("count", u64::MAX)
                    .bool("cached", true);
            });
            assert_eq!(String::from_utf8(by_fields), String::from_utf8(by_serde));
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let every_ascii: String = (0u8..=0x7f).map(char::from).collect();
        for text in [every_ascii.as_str(), "", "plain", "é✓𝄞\u{2028}"] {
            let mut out = Vec::new();
            write_json_str(&mut out, text);
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn reply_without_msg_id_has_no_in_reply_to() {
        let mut out = Vec::new();
        let to = ReplyTo {
            node_id: "n1",
            client: "c1",
            in_reply_to: None,
        };
        write_error(&mut out, to, &RequestError::not_supported("x"));
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(value["body"].get("in_reply_to").is_none());
        assert_eq!(value["body"]["code"], 10);
    }
}
