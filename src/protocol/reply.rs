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

#[derive(Serialize)]
struct Body<'a, B: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    in_reply_to: Option<u64>,
    #[serde(flatten)]
    fields: &'a B,
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

/// Appends a reply's body after its envelope head, and ends the line.
pub fn write_body<B: ReplyBody>(out: &mut Vec<u8>, in_reply_to: Option<u64>, fields: &B) {
    let body = Body {
        kind: B::TYPE,
        in_reply_to,
        fields,
    };
    // Serializing plain structs of strings, numbers and raw JSON into a Vec
    // cannot fail.
    serde_json::to_writer(&mut *out, &body).expect("reply serializes");
    out.extend_from_slice(b"}\n");
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
