//! The Maelstrom wire format, kept apart from what the messages mean.
//!
//! A message is `{"src": .., "dest": .., "body": {"type": .., "msg_id": .., ...}}`.
//! This module turns one framed message into a [`Request`] in one pass over
//! its text: the envelope's fields, the body's `type` and `msg_id`, and every
//! other body field kept raw, so that each handler parses exactly the fields
//! it needs (and a missing or ill-typed field is reported by name) without
//! the body being read again. Replies go the other way through [`reply`].

pub mod error;
pub mod framing;
mod plain;
pub(crate) use plain::plain_u64;
pub mod reply;

pub use error::{ErrorCode, RequestError};

use serde::Deserialize;
use serde::de::value::MapDeserializer;
use serde::de::{
    DeserializeOwned, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
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
    /// The body's other fields, in order, their values still unparsed.
    pub fields: BodyFields<'a>,
}

/// Fields a message body usually has besides `type` and `msg_id`: room
/// for them is taken once.
const USUAL_BODY_FIELDS: usize = 4;

/// A body's fields other than `type` and `msg_id`: names and raw values
/// (valid JSON text), borrowed from the message.
#[derive(Debug, Default)]
pub struct BodyFields<'a>(Vec<(Cow<'a, str>, &'a str)>);

impl<'a> BodyFields<'a> {
    /// Room for the usual few fields.
    fn new() -> Self {
        BodyFields(Vec::with_capacity(USUAL_BODY_FIELDS))
    }

    fn push(&mut self, name: Cow<'a, str>, value: &'a str) {
        self.0.push((name, value));
    }

    /// The raw JSON text of field `name`, if present.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(field, _)| field == name)
            .map(|&(_, value)| value)
    }

    /// Every field, in order: its name and raw JSON text.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &'a str)> {
        self.0.iter().map(|(name, value)| (name.as_ref(), *value))
    }

    fn deserializer(
        &self,
    ) -> MapDeserializer<'a, impl Iterator<Item = (&str, RawField<'a>)>, serde_json::Error> {
        MapDeserializer::new(
            self.0
                .iter()
                .map(|(name, value)| (name.as_ref(), RawField(value))),
        )
    }
}

impl Request<'_> {
    /// Parses this request's body into the handler's own request type.
    ///
    /// The fast path is a plain serde parse of the fields already split
    /// out; only when that fails is it done again keeping the path of the
    /// offending field, so the error text can name it (`force_failures:
    /// invalid value: integer -1, ...`). A field given twice is an error.
    pub fn parse_body<T: DeserializeOwned>(&self) -> Result<T, RequestError> {
        match T::deserialize(self.fields.deserializer()) {
            Ok(parsed) => Ok(parsed),
            Err(_) => match serde_path_to_error::deserialize::<_, T>(self.fields.deserializer()) {
                Ok(parsed) => Ok(parsed),
                Err(err) => Err(RequestError::malformed(describe_field_error(&err))),
            },
        }
    }
}

/// One body field's raw value (valid JSON text) as a serde `Deserializer`:
/// the handler's types read it with `serde_json`, as if it stood alone.
#[derive(Clone, Copy)]
struct RawField<'a>(&'a str);

impl<'de> IntoDeserializer<'de, serde_json::Error> for RawField<'de> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// Forwards `Deserializer` methods to a `serde_json` deserializer over the
/// field's text.
macro_rules! forward_to_json {
    ($($method:ident $(($($arg:ident: $ty:ty),*))?;)*) => {
        $(fn $method<V: Visitor<'de>>(self, $($($arg: $ty,)*)? visitor: V) -> Result<V::Value, serde_json::Error> {
            let mut json = serde_json::Deserializer::from_str(self.0);
            json.$method($($($arg,)*)? visitor)
        })*
    };
}

impl<'de> Deserializer<'de> for RawField<'de> {
    type Error = serde_json::Error;

    forward_to_json! {
        deserialize_any; deserialize_bool; deserialize_i8; deserialize_i16; deserialize_i32;
        deserialize_i64; deserialize_i128; deserialize_u8; deserialize_u16; deserialize_u32;
        deserialize_u64; deserialize_u128; deserialize_f32; deserialize_f64; deserialize_char;
        deserialize_str; deserialize_string; deserialize_bytes; deserialize_byte_buf;
        deserialize_option; deserialize_unit; deserialize_seq; deserialize_map;
        deserialize_identifier;
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
    }

    /// A field no handler reads costs nothing more.
    fn deserialize_ignored_any<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        visitor.visit_unit()
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

/// A field read once, or seen more than once: a repeated field is the
/// sender's mistake to be told about (when a reply can be addressed), not a
/// reason to pick one of its values. (On the lenient path `T` is an
/// `Option`, so that `null` counts as absent.)
#[derive(Debug, Default)]
enum Field<T> {
    #[default]
    Absent,
    Given(T),
    Repeated,
}

impl<T> Field<T> {
    /// Reads the next map value into the field, or skips it if the field
    /// was already there.
    fn read<'de, A>(&mut self, map: &mut A) -> Result<(), A::Error>
    where
        A: MapAccess<'de>,
        T: Deserialize<'de>,
    {
        match self {
            Field::Absent => *self = Field::Given(map.next_value()?),
            Field::Given(_) | Field::Repeated => {
                map.next_value::<IgnoredAny>()?;
                *self = Field::Repeated;
            }
        }
        Ok(())
    }

    /// The value (`None` when absent), or `Err(())` when repeated.
    fn once(self) -> Result<Option<T>, ()> {
        match self {
            Field::Absent => Ok(None),
            Field::Given(value) => Ok(Some(value)),
            Field::Repeated => Err(()),
        }
    }
}

impl<T> Field<Option<T>> {
    /// The value (`None` when absent or `null`), or `Err(())` when repeated.
    fn once_non_null(self) -> Result<Option<T>, ()> {
        self.once().map(Option::flatten)
    }
}

/// The envelope's fields, borrowed from the message, each read as its type
/// parameter says: typed on the fast path, raw (and `null` allowed) on the
/// lenient one.
struct Envelope<S, D, B> {
    src: Field<S>,
    dest: Field<D>,
    body: Field<B>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum EnvelopeKey {
    Src,
    Dest,
    Body,
    #[serde(other)]
    Other,
}

impl<'de, S, D, B> Deserialize<'de> for Envelope<S, D, B>
where
    S: Deserialize<'de>,
    D: Deserialize<'de>,
    B: Deserialize<'de>,
{
    fn deserialize<De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        struct EnvelopeVisitor<S, D, B>(std::marker::PhantomData<(S, D, B)>);
        impl<'de, S, D, B> Visitor<'de> for EnvelopeVisitor<S, D, B>
        where
            S: Deserialize<'de>,
            D: Deserialize<'de>,
            B: Deserialize<'de>,
        {
            type Value = Envelope<S, D, B>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut envelope = Envelope {
                    src: Field::Absent,
                    dest: Field::Absent,
                    body: Field::Absent,
                };
                while let Some(key) = map.next_key()? {
                    match key {
                        EnvelopeKey::Src => envelope.src.read(&mut map)?,
                        EnvelopeKey::Dest => envelope.dest.read(&mut map)?,
                        EnvelopeKey::Body => envelope.body.read(&mut map)?,
                        EnvelopeKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(envelope)
            }
        }
        deserializer.deserialize_map(EnvelopeVisitor(std::marker::PhantomData))
    }
}

/// The `body` as read in the envelope's pass.
enum Body<'a, K, M> {
    Object(BodyHead<'a, K, M>),
    /// Not an object (consumed, and only reported).
    NotObject,
}

impl<'de, K: Deserialize<'de>, M: Deserialize<'de>> Deserialize<'de> for Body<'de, K, M> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BodyVisitor<K, M>(std::marker::PhantomData<(K, M)>);
        impl<'de, K: Deserialize<'de>, M: Deserialize<'de>> Visitor<'de> for BodyVisitor<K, M> {
            type Value = Body<'de, K, M>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a body")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                BodyHead::read(map).map(Body::Object)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Body::NotObject)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Body::NotObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Body::NotObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Body::NotObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Body::NotObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Body::NotObject)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Body::NotObject)
            }
        }
        deserializer.deserialize_any(BodyVisitor(std::marker::PhantomData))
    }
}

/// A body object: the fields every request shares (read as `K` and `M`),
/// and the others, raw.
struct BodyHead<'a, K, M> {
    kind: Field<K>,
    msg_id: Field<M>,
    fields: BodyFields<'a>,
}

impl<'de, K: Deserialize<'de>, M: Deserialize<'de>> BodyHead<'de, K, M> {
    fn read<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut head = BodyHead {
            kind: Field::Absent,
            msg_id: Field::Absent,
            fields: BodyFields::new(),
        };
        while let Some(BorrowedStr(key)) = map.next_key()? {
            match key.as_ref() {
                "type" => head.kind.read(&mut map)?,
                "msg_id" => head.msg_id.read(&mut map)?,
                _ => {
                    let value: &RawValue = map.next_value()?;
                    head.fields.push(key, value.get());
                }
            }
        }
        Ok(head)
    }
}

/// A JSON string, borrowed from the message unless it holds escapes.
struct BorrowedStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for BorrowedStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = BorrowedStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<BorrowedStr<'de>, E> {
                Ok(BorrowedStr(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<BorrowedStr<'de>, E> {
                Ok(BorrowedStr(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E>(self, text: String) -> Result<BorrowedStr<'de>, E> {
                Ok(BorrowedStr(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// The error for a field that appears more than once.
fn repeated(field: &str) -> RequestError {
    RequestError::malformed(format!("{field}: duplicate field"))
}

/// Parses one framed message.
///
/// A well-formed message is read in one pass with its `dest`, `type` and
/// `msg_id` typed. Anything else (an ill-typed or repeated field, a missing
/// one, JSON that is not a message) is read again, leniently, to say
/// exactly what is wrong and to whom, if anyone, the error goes.
pub fn parse_request(message: &[u8]) -> Result<Request<'_>, Rejected<'_>> {
    // serde would also read a struct from a JSON array; a message is an object.
    if message.trim_ascii_start().first() != Some(&b'{') {
        return Err(Rejected::Unaddressable("not a JSON object".into()));
    }
    // Validated once here, the text is not checked again string by string.
    let text = std::str::from_utf8(message)
        .map_err(|err| Rejected::Unaddressable(format!("not valid UTF-8: {err}")))?;
    if let Some(request) = well_formed(text) {
        return Ok(request);
    }
    parse_leniently(text)
}

/// Parses `text` only if it is exactly one well-formed message (one JSON
/// object, with nothing after it but JSON whitespace): what
/// [`parse_request`] would make of it, or `None` with nothing reported.
/// A complete input line that passes is a whole message, so the framer need
/// not scan it (see `framing::FrameSink::whole_line`).
pub fn parse_well_formed(text: &[u8]) -> Option<Request<'_>> {
    well_formed(std::str::from_utf8(text).ok()?)
}

/// How the fast path reads a message.
type TypedEnvelope<'a> = Envelope<BorrowedStr<'a>, BorrowedStr<'a>, Body<'a, BorrowedStr<'a>, u64>>;
/// How the lenient path reads one: every field raw, or `null`.
type RawEnvelope<'a> = Envelope<
    Option<BorrowedStr<'a>>,
    Option<&'a RawValue>,
    Option<Body<'a, Option<&'a RawValue>, Option<&'a RawValue>>>,
>;

/// The fast path: `Some` only for a message with every shared field well
/// typed and given once. A plain message (see [`plain`]) is read by hand,
/// any other in one typed serde pass.
fn well_formed(text: &str) -> Option<Request<'_>> {
    plain::plain_message(text).or_else(|| well_formed_by_serde(text))
}

/// The fast path's typed serde pass.
fn well_formed_by_serde(text: &str) -> Option<Request<'_>> {
    let envelope: TypedEnvelope = serde_json::from_str(text).ok()?;
    let BorrowedStr(src) = envelope.src.once().ok()??;
    let Some(Body::Object(head)) = envelope.body.once().ok()? else {
        return None;
    };
    let dest = envelope.dest.once().ok()?.map(|BorrowedStr(dest)| dest);
    let msg_id = head.msg_id.once().ok()?;
    let BorrowedStr(kind) = head.kind.once().ok()??;
    Some(Request {
        src,
        dest,
        msg_id,
        kind,
        fields: head.fields,
    })
}

/// The lenient path: every field raw, checked one by one.
fn parse_leniently(text: &str) -> Result<Request<'_>, Rejected<'_>> {
    let envelope: RawEnvelope = serde_json::from_str(text)
        .map_err(|err| Rejected::Unaddressable(format!("not a valid message: {err}")))?;
    // A repeated `src` or `body` leaves no one sender or request to answer.
    let src = envelope
        .src
        .once_non_null()
        .map_err(|()| Rejected::Unaddressable("\"src\" appears more than once".into()))?;
    let Some(BorrowedStr(src)) = src else {
        return Err(Rejected::Unaddressable("message has no \"src\"".into()));
    };
    let body = envelope
        .body
        .once_non_null()
        .map_err(|()| Rejected::Unaddressable("\"body\" appears more than once".into()))?;
    let head = match body {
        Some(Body::Object(head)) => head,
        Some(Body::NotObject) => {
            return Err(Rejected::Unaddressable("\"body\" is not an object".into()));
        }
        None => return Err(Rejected::Unaddressable("message has no \"body\"".into())),
    };
    let (dest, dest_error) = match envelope.dest.once_non_null() {
        Ok(None) => (None, None),
        Ok(Some(raw)) => match serde_json::from_str::<Option<Cow<str>>>(raw.get()) {
            Ok(dest) => (dest, None),
            Err(_) => (
                None,
                Some(RequestError::malformed("dest: must be a string")),
            ),
        },
        Err(()) => (None, Some(repeated("dest"))),
    };
    let malformed = |msg_id, error| Rejected::Malformed {
        src: src.clone(),
        dest: dest.clone(),
        msg_id,
        error,
    };
    let msg_id = match head.msg_id.once_non_null() {
        Ok(raw) => match raw.map(parse_msg_id).transpose() {
            Ok(msg_id) => msg_id,
            Err(error) => return Err(malformed(None, error)),
        },
        Err(()) => return Err(malformed(None, repeated("msg_id"))),
    };
    if let Some(error) = dest_error {
        return Err(malformed(msg_id, error));
    }
    let kind = match head.kind.once_non_null() {
        Ok(Some(raw)) => match serde_json::from_str::<Cow<str>>(raw.get()) {
            Ok(kind) => kind,
            Err(_) => {
                return Err(malformed(
                    msg_id,
                    RequestError::malformed("type: must be a string"),
                ));
            }
        },
        Err(()) => return Err(malformed(msg_id, repeated("type"))),
        Ok(None) if msg_id.is_some() => {
            return Err(malformed(
                msg_id,
                RequestError::malformed("type: missing field"),
            ));
        }
        Ok(None) => {
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
        fields: head.fields,
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
        Ok(request) if request.kind == "init" => match request.parse_body::<InitBody>() {
            Ok(init) => Some(init.node_id),
            Err(_) => request.dest.map(Cow::into_owned),
        },
        Ok(request) => request.dest.map(Cow::into_owned),
        Err(Rejected::Malformed { dest, .. }) => dest.map(Cow::into_owned),
        Err(Rejected::Unaddressable(_)) => None,
    }
}

/// `msg_id` must be a non-negative integer; `-0` is the integer 0 (see
/// [`is_negative_zero`]).
fn parse_msg_id(raw: &RawValue) -> Result<u64, RequestError> {
    match serde_json::from_str::<u64>(raw.get()) {
        Ok(msg_id) => Ok(msg_id),
        Err(_) if serde_json::from_str(raw.get()).is_ok_and(is_negative_zero) => Ok(0),
        Err(_) => Err(RequestError::malformed(
            "msg_id: must be a non-negative integer",
        )),
    }
}

/// Whether a JSON number read as `value` is a negative zero, which grace
/// reads as the integer 0 wherever it reads an integer id (`msg_id`, user
/// and product ids), as JSON readers of other languages read `-0`. serde_json
/// reads `-0` as the float -0.0, the same value as `-0.0`, so that spelling
/// is taken as 0 too; other numbers with a fraction or an exponent (`0.0`,
/// `1.5`) are refused.
fn is_negative_zero(value: f64) -> bool {
    value == 0.0 && value.is_sign_negative()
}

/// How many bytes `text` starts with that a JSON string holds as they are:
/// up to the first `"`, `\\` or control character (below 0x20), or all of
/// it. Eight bytes at a time, as serde_json finds the end of a string.
pub(crate) fn plain_run(text: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH_BITS: u64 = ONES * 0x80;
    let mut at = 0;
    while let Some(chunk) = text.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // A byte's high bit is set in `hits` where it is below 0x20 or is
        // `"` or `\\` (equal: zero after the XOR); only bytes above a real
        // hit can be set falsely, so the lowest set bit is the first hit.
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let hits = (word.wrapping_sub(ONES * 0x20) & !word)
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash);
        let hits = hits & HIGH_BITS;
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let rest = &text[at..];
    at + rest
        .iter()
        .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
        .unwrap_or(rest.len())
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
/// `"123"` are different records; `-0` is the integer 0 (see
/// [`is_negative_zero`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(untagged)]
pub enum RecordId {
    Int(i64),
    BigInt(u64),
    Text(Box<str>),
}

impl<'de> Deserialize<'de> for RecordId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RecordIdVisitor;
        impl Visitor<'_> for RecordIdVisitor {
            type Value = RecordId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E>(self, id: i64) -> Result<RecordId, E> {
                Ok(RecordId::Int(id))
            }
            fn visit_u64<E>(self, id: u64) -> Result<RecordId, E> {
                Ok(i64::try_from(id).map_or(RecordId::BigInt(id), RecordId::Int))
            }
            fn visit_f64<E: serde::de::Error>(self, id: f64) -> Result<RecordId, E> {
                if is_negative_zero(id) {
                    Ok(RecordId::Int(0))
                } else {
                    Err(E::invalid_type(serde::de::Unexpected::Float(id), &self))
                }
            }
            fn visit_str<E>(self, id: &str) -> Result<RecordId, E> {
                Ok(RecordId::Text(id.into()))
            }
        }
        deserializer.deserialize_any(RecordIdVisitor)
    }
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordId::Int(id) => f.write_str(itoa::Buffer::new().format(*id)),
            RecordId::BigInt(id) => f.write_str(itoa::Buffer::new().format(*id)),
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
        assert_eq!(request.fields.get("user_id"), Some("1"));
    }

    #[test]
    fn body_fields_beyond_the_usual_few_are_kept_in_order() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct Last {
            f6: u8,
        }
        for input in [
            r#"{"src":"c","body":{"type":"t","f1":1,"f2":2,"f3":3,"f4":4,"f5":5,"f6":6}}"#,
            r#"{"src":"c\u0031","body":{"type":"t","f1":1,"f2":2,"f3":3,"f4":4,"f5":5,"f6":6}}"#,
        ] {
            let request = parse_request(input.as_bytes()).unwrap();
            let names: Vec<&str> = request.fields.iter().map(|(name, _)| name).collect();
            assert_eq!(names, ["f1", "f2", "f3", "f4", "f5", "f6"]);
            assert_eq!(request.fields.get("f5"), Some("5"));
            assert_eq!(request.parse_body::<Last>().unwrap(), Last { f6: 6 });
        }
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
    fn plain_run_stops_at_the_first_byte_a_json_string_escapes() {
        for len in 0..20 {
            for stop in [b'"', b'\\', 0x00, 0x1f] {
                for at in 0..=len {
                    let mut text = vec![b'a'; len];
                    text.extend_from_slice("é\u{7f} ".as_bytes());
                    if at < len {
                        text[at] = stop;
                        text[len - 1] = b'"';
                    }
                    let expected = if at < len { at } else { text.len() };
                    assert_eq!(plain_run(&text), expected, "{text:?}");
                }
            }
        }
    }

    #[test]
    fn record_ids_keep_their_json_type() {
        let int: RecordId = serde_json::from_str("123").unwrap();
        let text: RecordId = serde_json::from_str("\"123\"").unwrap();
        assert_ne!(int, text);
        assert_eq!(serde_json::to_string(&text).unwrap(), "\"123\"");
        assert!(serde_json::from_str::<RecordId>("1.5").is_err());
    }

    // Issue 7, item 10: a repeated `type` or `msg_id` went unanswered while
    // a repeated handler field got code 12.
    #[test]
    fn repeated_type_msg_id_or_dest_is_malformed_but_answered() {
        let (msg_id, text) =
            malformed_text(r#"{"src":"c","body":{"type":"echo","type":"echo","msg_id":4}}"#);
        assert_eq!((msg_id, text.as_str()), (Some(4), "type: duplicate field"));
        let (msg_id, text) =
            malformed_text(r#"{"src":"c","body":{"type":"echo","msg_id":4,"msg_id":4}}"#);
        assert_eq!((msg_id, text.as_str()), (None, "msg_id: duplicate field"));
        let (msg_id, text) = malformed_text(
            r#"{"src":"c","dest":"n","dest":"n","body":{"type":"echo","msg_id":4}}"#,
        );
        assert_eq!((msg_id, text.as_str()), (Some(4), "dest: duplicate field"));
        // Even without a msg_id: the sender is known.
        let (msg_id, _) = malformed_text(r#"{"src":"c","body":{"type":"a","type":"b"}}"#);
        assert_eq!(msg_id, None);
    }

    #[test]
    fn repeated_src_or_body_leaves_no_one_to_answer() {
        assert!(rejected_reason(r#"{"src":"a","src":"b","body":{"type":"echo"}}"#).contains("src"));
        assert!(
            rejected_reason(r#"{"src":"a","body":{"type":"echo"},"body":{"type":"echo"}}"#)
                .contains("body")
        );
    }

    #[test]
    fn escaped_src_and_null_fields_read_as_before() {
        let request =
            parse_request(br#"{"src":"c\u0031","dest":null,"body":{"type":"echo","msg_id":null}}"#)
                .unwrap();
        assert_eq!(
            (request.src.as_ref(), request.dest, request.msg_id),
            ("c1", None, None)
        );
        assert!(rejected_reason(r#"{"src":null,"body":{"type":"echo"}}"#).contains("src"));
        assert!(rejected_reason(r#"{"src":5,"body":{"type":"echo"}}"#).contains("not a valid"));
    }

    // Issue 7, item 10: `msg_id: -0` was refused as negative.
    #[test]
    fn negative_zero_is_the_integer_zero_in_msg_id_and_record_ids() {
        let request = parse_request(br#"{"src":"c","body":{"type":"echo","msg_id":-0}}"#).unwrap();
        assert_eq!(request.msg_id, Some(0));
        assert_eq!(
            serde_json::from_str::<RecordId>("-0").unwrap(),
            RecordId::Int(0)
        );
        let (msg_id, _) = malformed_text(r#"{"src":"c","body":{"type":"echo","msg_id":0.0}}"#);
        assert_eq!(msg_id, None);
        assert!(serde_json::from_str::<RecordId>("0.0").is_err());
        assert!(serde_json::from_str::<RecordId>("-1.5").is_err());
    }

    #[test]
    fn record_ids_beyond_i64_are_kept_and_beyond_u64_refused() {
        assert_eq!(
            serde_json::from_str::<RecordId>("18446744073709551615").unwrap(),
            RecordId::BigInt(u64::MAX)
        );
        assert_eq!(
            serde_json::from_str::<RecordId>("-5").unwrap(),
            RecordId::Int(-5)
        );
        assert!(serde_json::from_str::<RecordId>("18446744073709551616").is_err());
        for not_an_id in ["null", "true", "[1]", "{}"] {
            assert!(
                serde_json::from_str::<RecordId>(not_an_id).is_err(),
                "{not_an_id}"
            );
        }
    }
}
