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
struct Envelope<'a, B: Serialize> {
    src: &'a str,
    dest: &'a str,
    body: Body<'a, B>,
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
    let envelope = Envelope {
        src: to.node_id,
        dest: to.client,
        body: Body {
            kind: B::TYPE,
            in_reply_to: to.in_reply_to,
            fields,
        },
    };
    // Serializing plain structs of strings, numbers and raw JSON into a Vec
    // cannot fail.
    serde_json::to_writer(&mut *out, &envelope).expect("reply serializes");
    out.push(b'\n');
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
    write_reply(
        out,
        to,
        &ErrorReply {
            code: error.code,
            text: &error.text,
        },
    );
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
