//! The Maelstrom wire format, kept apart from what the messages mean.
//!
//! A message is `{"src": .., "dest": .., "body": {"type": .., "msg_id": .., ...}}`.
//! This module turns one framed message into a [`Request`] whose body is left
//! raw, so that each handler parses exactly the fields it needs (and a
//! missing or ill-typed field is reported by name). Replies go the other way
//! through [`reply`].

pub mod error;
pub mod framing;
pub mod reply;

pub use error::{ErrorCode, RequestError};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// One incoming message whose envelope is valid and whose body is an object.
#[derive(Debug)]
pub struct Request<'a> {
    /// Who sent it: every reply goes back here.
    pub src: Cow<'a, str>,
    /// Whom it was sent to; becomes the reply's `src` until `init` names the node.
    pub dest: Option<Cow<'a, str>>,
    /// The request id to echo as `in_reply_to`, when the sender gave one.
    pub msg_id: Option<u64>,
    /// The body's `type`.
    pub kind: Cow<'a, str>,
    /// The whole body, still unparsed.
    pub body: &'a RawValue,
}

impl Request<'_> {
    /// Parses this request's body into the handler's own request type.
    ///
    /// The fast path is a plain serde parse; only when that fails is the body
    /// parsed again with the path of the offending field, so the error text
    /// can name it (`force_failures: invalid value: integer -1, ...`).
    pub fn parse_body<T: DeserializeOwned>(&self) -> Result<T, RequestError> {
        match serde_json::from_str(self.body.get()) {
            Ok(parsed) => Ok(parsed),
            Err(_) => {
                let mut deserializer = serde_json::Deserializer::from_str(self.body.get());
                match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
                    Ok(parsed) => Ok(parsed),
                    Err(err) => Err(RequestError::malformed(describe_field_error(&err))),
                }
            }
        }
    }
}

fn describe_field_error(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = err.path().to_string();
    let inner = err.inner().to_string();
    // serde_json appends " at line 1 column 17"; the field name says more.
    let inner = inner
        .rsplit_once(" at line ")
        .map_or(inner.as_str(), |(message, _)| message);
    if path == "." {
        inner.to_string()
    } else {
        format!("{path}: {inner}")
    }
}

/// A message that could not become a [`Request`].
#[derive(Debug)]
pub enum Rejected<'a> {
    /// No reply can be addressed (not JSON, no `src`, no object body, or no
    /// `type` and no `msg_id`): the reason goes to stderr.
    Unaddressable(String),
    /// The envelope is fine but the body is not: answer with this error.
    Malformed {
        src: Cow<'a, str>,
        dest: Option<Cow<'a, str>>,
        msg_id: Option<u64>,
        error: RequestError,
    },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    src: Option<Cow<'a, str>>,
    /// Kept raw: an ill-typed `dest` is the sender's mistake to be told
    /// about, not a reason to leave the request unanswered.
    #[serde(borrow, default)]
    dest: Option<&'a RawValue>,
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct BodyHead<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    msg_id: Option<&'a RawValue>,
}

/// Parses one framed message.
pub fn parse_request(message: &[u8]) -> Result<Request<'_>, Rejected<'_>> {
    // serde would also read a struct from a JSON array; a message is an object.
    if message.trim_ascii_start().first() != Some(&b'{') {
        return Err(Rejected::Unaddressable("not a JSON object".into()));
    }
    // Validated once here, the text is not checked again string by string.
    let text = std::str::from_utf8(message)
        .map_err(|err| Rejected::Unaddressable(format!("not valid UTF-8: {err}")))?;
    let envelope: Envelope = serde_json::from_str(text)
        .map_err(|err| Rejected::Unaddressable(format!("not a valid message: {err}")))?;
    let Some(src) = envelope.src else {
        return Err(Rejected::Unaddressable("message has no \"src\"".into()));
    };
    let body = match envelope.body {
        Some(body) if body.get().starts_with('{') => body,
        Some(_) => return Err(Rejected::Unaddressable("\"body\" is not an object".into())),
        None => return Err(Rejected::Unaddressable("message has no \"body\"".into())),
    };
    let head: BodyHead = serde_json::from_str(body.get())
        .map_err(|err| Rejected::Unaddressable(format!("body is not valid: {err}")))?;
    let dest = envelope
        .dest
        .map(|raw| serde_json::from_str::<Option<Cow<str>>>(raw.get()));
    let (dest, dest_is_ill_typed) = match dest {
        Some(Ok(dest)) => (dest, false),
        Some(Err(_)) => (None, true),
        None => (None, false),
    };
    let msg_id = match head.msg_id.map(parse_msg_id).transpose() {
        Ok(msg_id) => msg_id.flatten(),
        Err(error) => {
            return Err(Rejected::Malformed {
                src,
                dest,
                msg_id: None,
                error,
            });
        }
    };
    if dest_is_ill_typed {
        let error = RequestError::malformed("dest: must be a string");
        return Err(Rejected::Malformed {
            src,
            dest,
            msg_id,
            error,
        });
    }
    let kind = match head
        .kind
        .map(|raw| serde_json::from_str::<Cow<str>>(raw.get()))
    {
        Some(Ok(kind)) => kind,
        Some(Err(_)) => {
            let error = RequestError::malformed("type: must be a string");
            return Err(Rejected::Malformed {
                src,
                dest,
                msg_id,
                error,
            });
        }
        None if msg_id.is_some() => {
            let error = RequestError::malformed("type: missing field");
            return Err(Rejected::Malformed {
                src,
                dest,
                msg_id,
                error,
            });
        }
        None => {
            return Err(Rejected::Unaddressable(
                "body has neither \"type\" nor \"msg_id\"".into(),
            ));
        }
    };
    Ok(Request {
        src,
        dest,
        msg_id,
        kind,
        body,
    })
}

/// The node id a message implies before `init` has been seen: `init`'s
/// `node_id`, else the message's `dest`. `None` when the message names none.
pub fn node_id_hint(message: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct InitBody {
        node_id: String,
    }
    match parse_request(message) {
        Ok(request) if request.kind == "init" => {
            match serde_json::from_str::<InitBody>(request.body.get()) {
                Ok(init) => Some(init.node_id),
                Err(_) => request.dest.map(Cow::into_owned),
            }
        }
        Ok(request) => request.dest.map(Cow::into_owned),
        Err(Rejected::Malformed { dest, .. }) => dest.map(Cow::into_owned),
        Err(Rejected::Unaddressable(_)) => None,
    }
}

/// `msg_id` must be a non-negative integer; `null` counts as absent.
fn parse_msg_id(raw: &RawValue) -> Result<Option<u64>, RequestError> {
    serde_json::from_str::<Option<u64>>(raw.get())
        .map_err(|_| RequestError::malformed("msg_id: must be a non-negative integer"))
}

/// `json` (valid JSON) without the whitespace between tokens, keys in
/// their order: a value that arrived pretty-printed (a fixture, an echo)
/// must still go out on one reply line.
pub fn compact_json(json: &str) -> String {
    let mut compact = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c.is_ascii_whitespace() {
            continue;
        } else {
            in_string = c == '"';
        }
        compact.push(c);
    }
    compact
}

/// The id of a user, product or order record as the client wrote it: a JSON
/// integer or a string. It is echoed back exactly as given, so `123` and
/// `"123"` are different records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(untagged, expecting = "an integer or a string")]
pub enum RecordId {
    Int(i64),
    BigInt(u64),
    Text(Box<str>),
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordId::Int(id) => write!(f, "{id}"),
            RecordId::BigInt(id) => write!(f, "{id}"),
            RecordId::Text(id) => write!(f, "{id:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected_reason(input: &str) -> String {
        match parse_request(input.as_bytes()) {
            Err(Rejected::Unaddressable(reason)) => reason,
            other => panic!("expected an unaddressable rejection, got {other:?}"),
        }
    }

    fn malformed_text(input: &str) -> (Option<u64>, String) {
        match parse_request(input.as_bytes()) {
            Err(Rejected::Malformed { msg_id, error, .. }) => {
                assert_eq!(error.code, ErrorCode::MalformedRequest);
                (msg_id, error.text)
            }
            other => panic!("expected a malformed rejection, got {other:?}"),
        }
    }

    #[test]
    fn parses_envelope_and_keeps_body_raw() {
        let input =
            r#"{"id":3,"src":"c1","dest":"n1","body":{"type":"get_user","msg_id":7,"user_id":1}}"#;
        let request = parse_request(input.as_bytes()).unwrap();
        assert_eq!(request.src, "c1");
        assert_eq!(request.dest.as_deref(), Some("n1"));
        assert_eq!(request.msg_id, Some(7));
        assert_eq!(request.kind, "get_user");
        assert!(request.body.get().contains("\"user_id\":1"));
    }

    #[test]
    fn message_without_src_or_object_body_is_unaddressable() {
        assert!(rejected_reason(r#"{"dest":"n1","body":{"type":"echo"}}"#).contains("src"));
        assert!(rejected_reason(r#"{"src":"c","body":[1]}"#).contains("object"));
        assert!(rejected_reason(r#"{"src":"c"}"#).contains("body"));
        assert!(rejected_reason("not json").contains("not a JSON object"));
        assert!(rejected_reason("{not json").contains("not a valid message"));
        assert!(rejected_reason(r#"["c","n",{"type":"echo"}]"#).contains("object"));
        assert!(rejected_reason(r#"{"src":"c","body":{"x":1}}"#).contains("type"));
    }

    #[test]
    fn ill_typed_dest_is_malformed_but_answered() {
        let (msg_id, text) =
            malformed_text(r#"{"src":"c","dest":5,"body":{"type":"echo","msg_id":4,"echo":1}}"#);
        assert_eq!(msg_id, Some(4));
        assert!(text.contains("dest"));
    }

    #[test]
    fn body_without_type_but_with_msg_id_is_malformed() {
        let (msg_id, text) = malformed_text(r#"{"src":"c","body":{"msg_id":4}}"#);
        assert_eq!(msg_id, Some(4));
        assert!(text.contains("type"));
    }

    #[test]
    fn ill_typed_msg_id_is_malformed() {
        let (_, text) = malformed_text(r#"{"src":"c","body":{"type":"echo","msg_id":"x"}}"#);
        assert!(text.contains("msg_id"));
    }

    #[test]
    fn body_field_errors_name_the_field() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Probe {
            count: u64,
        }
        let input = r#"{"src":"c","body":{"type":"t","msg_id":1,"count":-3}}"#;
        let request = parse_request(input.as_bytes()).unwrap();
        let error = request.parse_body::<Probe>().unwrap_err();
        assert!(error.text.starts_with("count:"), "{}", error.text);
        let input = r#"{"src":"c","body":{"type":"t","msg_id":1}}"#;
        let request = parse_request(input.as_bytes()).unwrap();
        let error = request.parse_body::<Probe>().unwrap_err();
        assert!(error.text.contains("count"), "{}", error.text);
    }

    #[test]
    fn record_ids_keep_their_json_type() {
        let int: RecordId = serde_json::from_str("123").unwrap();
        let text: RecordId = serde_json::from_str("\"123\"").unwrap();
        assert_ne!(int, text);
        assert_eq!(serde_json::to_string(&text).unwrap(), "\"123\"");
        assert!(serde_json::from_str::<RecordId>("1.5").is_err());
    }
}
