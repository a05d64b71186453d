//! Writing replies: one compact JSON line per reply.
//!
//! Every reply body starts with `type` and `in_reply_to`, then the fields of
//! the handler's own reply struct in declaration order. The envelope swaps
//! `src` and `dest` here, in one place, so no handler can get it wrong.

use super::{ErrorCode, RequestError};
use serde::Serialize;

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
    out.extend_from_slice(b"{\"src\":");
    // Serializing a string into a Vec cannot fail.
    serde_json::to_writer(&mut *out, node_id).expect("strings serialize");
    out.extend_from_slice(b",\"dest\":");
    serde_json::to_writer(&mut *out, client).expect("strings serialize");
    out.extend_from_slice(b",\"body\":");
}

/// Appends a reply's body after its envelope head, and ends the line:
/// `{"type":T,"in_reply_to":N,` then the handler's own fields in order.
///
/// The fields are serialized as their own object whose opening brace is
/// then turned into the comma after `in_reply_to` (serde's `flatten` would
/// do the same through a slower map serializer). `T` is one of grace's own
/// type names, plain ASCII, written as it is.
pub fn write_body<B: ReplyBody>(out: &mut Vec<u8>, in_reply_to: Option<u64>, fields: &B) {
    debug_assert!(
        B::TYPE
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
    );
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(B::TYPE.as_bytes());
    out.push(b'"');
    if let Some(id) = in_reply_to {
        out.extend_from_slice(b",\"in_reply_to\":");
        out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    }
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
    write_reply(out, to, &ErrorReply::from(error));
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
