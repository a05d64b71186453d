//! What must hold whatever grace is fed: the checks shared by the fuzz
//! targets and by the CI-sized property test (`tests/fuzz_properties.rs`
//! includes this file with `#[path]`, so there is one copy of them).
//!
//! - Framing: the frames of an input do not depend on how it was split into
//!   chunks; an input that is a stream of JSON objects separated by
//!   whitespace is framed into exactly those objects, on their lines
//!   ([`expected_frames`], worked out by serde_json's stream reader, not by
//!   grace's framer); and framing costs at most
//!   [`MAX_SCANS_PER_BYTE`] scans per input byte ([`check_framing`]).
//! - Node: [`Driver`] feeds bytes through a [`Framer`] into a [`Node`] the way
//!   the runtime does, on a synthetic clock, and checks after every message
//!   that the node's output is whole reply lines, each one JSON envelope
//!   ([`parse_reply_lines`]), and that the message got the answer the
//!   protocol promises for it ([`promise_for`]): exactly one reply to its
//!   sender echoing its `msg_id`, or nothing when no reply can be addressed.
//!   It also checks that [`InProcessNode::handle_timeout`] leaves no work due, since
//!   the runtime would otherwise wake up again at once, forever.
//!
//! The promise is worked out by a parser that shares nothing with grace's:
//! `serde_json::Value`, with the envelope's and the body's keys listed as
//! they come so repeated ones are seen. Where the two parsers may disagree
//! (numbers beyond `f64`, lone surrogates) the promise is only "at most one
//! reply".
//!
//! Each bug the fuzzers found is pinned by a regression test in
//! `tests/fuzz_properties.rs` (see `fuzz/README.md` for the list).

use grace::demo::DemoData;
use grace::maelstrom::node::{InProcessNode, NodeConfig};
use grace::protocol::framing::{Frame, FrameSink, Framer, MAX_SCANS_PER_BYTE, Offer};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::fmt;
use std::time::{Duration, Instant};

/// The message types grace answers, each with the `type` of its success
/// reply. The property test checks this against `grace::maelstrom::handlers::MESSAGE_TYPES`.
pub const REPLY_TYPES: [(&str, &str); 15] = [
    ("init", "init_ok"),
    ("echo", "echo_ok"),
    ("get_user", "user_response"),
    ("get_product", "product_response"),
    ("set_mode", "mode_changed"),
    ("set_feature", "feature_set"),
    ("get_recommendations", "recommendations_response"),
    ("search", "search_response"),
    ("get_reviews", "reviews_response"),
    ("set_service_health", "service_health_ok"),
    ("get_status", "status"),
    ("create_order", "order_response"),
    ("get_order", "order_status"),
    ("get_queue", "queue_status"),
    ("process_queue", "queue_processed"),
];

/// Maelstrom's "not supported" code, for an unknown `type`.
pub const CODE_NOT_SUPPORTED: u64 = 10;
/// Maelstrom's "malformed request" code.
pub const CODE_MALFORMED: u64 = 12;

// ---------------------------------------------------------------------------
// Framing

/// A frame with its bytes copied out, so runs can be compared.
#[derive(Clone, PartialEq, Eq)]
pub enum OwnedFrame {
    Message { line: u64, bytes: Vec<u8> },
    Oversized { line: u64 },
    Unterminated { line: u64 },
}

impl From<Frame<'_>> for OwnedFrame {
    fn from(frame: Frame<'_>) -> Self {
        match frame {
            Frame::Message { line, bytes } => OwnedFrame::Message {
                line,
                bytes: bytes.to_vec(),
            },
            Frame::Oversized { line } => OwnedFrame::Oversized { line },
            Frame::Unterminated { line } => OwnedFrame::Unterminated { line },
        }
    }
}

impl fmt::Debug for OwnedFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The bytes as text, which is what a reader of a failure wants.
            OwnedFrame::Message { line, bytes } => f
                .debug_struct("Message")
                .field("line", line)
                .field("bytes", &String::from_utf8_lossy(bytes))
                .finish(),
            OwnedFrame::Oversized { line } => {
                f.debug_struct("Oversized").field("line", line).finish()
            }
            OwnedFrame::Unterminated { line } => {
                f.debug_struct("Unterminated").field("line", line).finish()
            }
        }
    }
}

/// Runs `input` through a framer limited to `max_message_bytes`, pushed in
/// pieces of the given sizes (the rest in one last piece), then `finish`.
pub fn frames_of(input: &[u8], piece_sizes: &[usize], max_message_bytes: usize) -> Vec<OwnedFrame> {
    framing_run(input, piece_sizes, max_message_bytes).0
}

/// [`frames_of`], with the framer's work ([`Framer::bytes_scanned`]).
pub fn framing_run(
    input: &[u8],
    piece_sizes: &[usize],
    max_message_bytes: usize,
) -> (Vec<OwnedFrame>, u64) {
    let mut framer = Framer::new(max_message_bytes);
    let mut frames = Vec::new();
    let mut collect = |frame: Frame<'_>| frames.push(OwnedFrame::from(frame));
    let mut rest = input;
    for &size in piece_sizes {
        let (piece, after) = rest.split_at(size.min(rest.len()));
        framer.push(piece, &mut collect);
        rest = after;
    }
    framer.push(rest, &mut collect);
    framer.finish(&mut collect);
    (frames, framer.bytes_scanned())
}

/// [`framing_run`] pushed whole to a sink that takes every line offered
/// whole that serde_json reads as exactly one value (as the runtime takes
/// the well-formed messages among them), each as the message it is.
pub fn framing_run_taking_whole_lines(
    input: &[u8],
    max_message_bytes: usize,
) -> (Vec<OwnedFrame>, u64) {
    struct TakingWholeLines(Vec<OwnedFrame>);
    impl FrameSink for TakingWholeLines {
        fn frame(&mut self, frame: Frame<'_>) {
            self.0.push(OwnedFrame::from(frame));
        }
        fn whole_line(&mut self, line: u64, bytes: &[u8]) -> Offer {
            if serde_json::from_slice::<IgnoredAny>(bytes).is_err() {
                return Offer::Declined;
            }
            // Only JSON whitespace follows the object.
            let object = bytes.trim_ascii_end().to_vec();
            self.0.push(OwnedFrame::Message {
                line,
                bytes: object,
            });
            Offer::Taken
        }
    }
    let mut framer = Framer::new(max_message_bytes);
    let mut sink = TakingWholeLines(Vec::new());
    framer.push_to(input, &mut sink);
    framer.finish_to(&mut sink);
    (sink.0, framer.bytes_scanned())
}

/// Checks the framer on `input`: pushed whole or in the given pieces it
/// gives the same frames; every message starts at a token and is within the
/// limit, and line numbers never go back or past the input's last line; if
/// the input is a stream of JSON objects, the frames are exactly those
/// objects ([`expected_frames`]); the work stays within
/// [`MAX_SCANS_PER_BYTE`] per byte. Panics on failure.
pub fn check_framing(input: &[u8], piece_sizes: &[usize], max_message_bytes: usize) {
    let (whole, whole_work) = framing_run(input, &[], max_message_bytes);
    let (pieces, pieces_work) = framing_run(input, piece_sizes, max_message_bytes);
    let lines = 1 + input.iter().filter(|&&byte| byte == b'\n').count() as u64;
    for frames in [&whole, &pieces] {
        check_frame_sequence(frames, lines);
    }
    for frame in whole.iter().chain(&pieces) {
        if let OwnedFrame::Message { bytes, .. } = frame {
            // The limit is on a message's content, without the whitespace
            // around it.
            let size = bytes.trim_ascii().len();
            assert!(
                size <= max_message_bytes,
                "message of {size} bytes passed the limit of {max_message_bytes}"
            );
        }
    }
    assert_eq!(
        whole, pieces,
        "frames differ when the input is pushed in pieces {piece_sizes:?} (limit {max_message_bytes})"
    );
    let (taken, taken_work) = framing_run_taking_whole_lines(input, max_message_bytes);
    assert_eq!(
        whole, taken,
        "taking the lines that are one JSON value whole changed the frames (limit {max_message_bytes})"
    );
    assert!(
        taken_work <= whole_work,
        "taking whole lines cost more work"
    );
    if let Some(expected) = expected_frames(input, max_message_bytes) {
        assert_eq!(
            whole, expected,
            "a stream of JSON objects was not framed into exactly those objects (limit {max_message_bytes})"
        );
    }
    let bound = MAX_SCANS_PER_BYTE * input.len() as u64;
    for (work, how) in [(whole_work, "whole"), (pieces_work, "in pieces")] {
        assert!(
            work <= bound,
            "framing scanned {work} bytes for {} bytes of input pushed {how}",
            input.len()
        );
    }
}

/// What the framer must make of `input` if it is a stream of JSON objects
/// separated by (JSON) whitespace, worked out by serde_json's stream reader:
/// each object, as its bytes and the line its `{` is on, or `Oversized` on
/// that line if it is longer than `max_message_bytes`. `None` when the
/// input is not such a stream (not JSON, a value that is not an object, or
/// more than serde_json reads: nesting deeper than 128).
pub fn expected_frames(input: &[u8], max_message_bytes: usize) -> Option<Vec<OwnedFrame>> {
    let mut values = serde_json::Deserializer::from_slice(input).into_iter::<IgnoredAny>();
    let mut frames = Vec::new();
    let mut end = 0;
    let mut line = 1;
    while let Some(value) = values.next() {
        value.ok()?;
        let skipped = input[end..]
            .iter()
            .take_while(|byte| matches!(byte, b' ' | b'\t' | b'\r' | b'\n'))
            .count();
        let start = end + skipped;
        line += input[end..start]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count() as u64;
        end = values.byte_offset();
        let object = &input[start..end];
        if object.first() != Some(&b'{') {
            return None;
        }
        frames.push(if object.len() > max_message_bytes {
            OwnedFrame::Oversized { line }
        } else {
            OwnedFrame::Message {
                line,
                bytes: object.to_vec(),
            }
        });
        line += object.iter().filter(|&&byte| byte == b'\n').count() as u64;
    }
    Some(frames)
}

/// [`check_framing`] with piece sizes drawn from `seed`.
pub fn check_framing_seeded(input: &[u8], seed: u64, max_message_bytes: usize) {
    let pieces = SplitMix::new(seed).piece_sizes(input.len());
    check_framing(input, &pieces, max_message_bytes);
}

fn check_frame_sequence(frames: &[OwnedFrame], lines: u64) {
    let mut previous = 1;
    for frame in frames {
        let line = match frame {
            OwnedFrame::Message { line, bytes } => {
                // A multi-line message keeps its lines' own whitespace,
                // but every message starts at its first token.
                assert!(
                    bytes
                        .first()
                        .is_some_and(|byte| !byte.is_ascii_whitespace()),
                    "message frame empty or not trimmed: {frames:?}"
                );
                *line
            }
            OwnedFrame::Oversized { line } | OwnedFrame::Unterminated { line } => *line,
        };
        assert!(
            (previous..=lines).contains(&line),
            "frame line {line} out of order or past the input's {lines} lines: {frames:?}"
        );
        previous = line;
    }
}

// ---------------------------------------------------------------------------
// Reply lines

/// One reply line, as checked by [`parse_reply_lines`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub src: String,
    pub dest: String,
    pub kind: String,
    pub in_reply_to: Option<u64>,
    /// The error code, for an `error` reply.
    pub code: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope {
    src: String,
    dest: String,
    body: Box<RawValue>,
}

#[derive(Deserialize)]
struct WireBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, deserialize_with = "present")]
    in_reply_to: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    code: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    text: Option<Box<RawValue>>,
}

/// A field that is there, even as `null` (which `Option` would hide).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

/// Splits a node's output into reply lines and checks each one: UTF-8,
/// no `\r` (a reader splitting on it would see two lines), exactly one JSON
/// object with string `src` and `dest` and an object `body` and nothing else,
/// the body with a string `type`, an integer `in_reply_to` if present, and
/// for an `error` an integer `code` and a string `text`. Panics on failure.
pub fn parse_reply_lines(output: &[u8]) -> Vec<Reply> {
    if output.is_empty() {
        return Vec::new();
    }
    assert!(
        output.ends_with(b"\n"),
        "output does not end with a newline: {:?}",
        String::from_utf8_lossy(output)
    );
    output[..output.len() - 1]
        .split(|&byte| byte == b'\n')
        .map(parse_reply_line)
        .collect()
}

fn parse_reply_line(line: &[u8]) -> Reply {
    let shown = || String::from_utf8_lossy(line).into_owned();
    assert!(
        !line.contains(&b'\r'),
        "reply line contains \\r: {:?}",
        shown()
    );
    let envelope: WireEnvelope = serde_json::from_slice(line)
        .unwrap_or_else(|err| panic!("reply line is not one JSON envelope ({err}): {:?}", shown()));
    assert!(
        envelope.body.get().starts_with('{'),
        "reply body is not an object: {:?}",
        shown()
    );
    let body: WireBody = serde_json::from_str(envelope.body.get())
        .unwrap_or_else(|err| panic!("reply body is not valid ({err}): {:?}", shown()));
    let integer = |field: &str, raw: &RawValue| {
        serde_json::from_str::<u64>(raw.get())
            .unwrap_or_else(|_| panic!("reply {field} is not an integer: {:?}", shown()))
    };
    let in_reply_to = body
        .in_reply_to
        .as_deref()
        .map(|raw| integer("in_reply_to", raw));
    let code = body.code.as_deref().map(|raw| integer("code", raw));
    if body.kind == "error" {
        assert!(code.is_some(), "error reply without code: {:?}", shown());
        let text_is_string = body
            .text
            .as_deref()
            .is_some_and(|raw| serde_json::from_str::<String>(raw.get()).is_ok());
        assert!(
            text_is_string,
            "error reply without string text: {:?}",
            shown()
        );
    }
    Reply {
        src: envelope.src,
        dest: envelope.dest,
        kind: body.kind,
        in_reply_to,
        code,
    }
}

// ---------------------------------------------------------------------------
// What a message is owed

/// What the protocol promises for one framed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Promise {
    /// Not JSON, or nobody to answer: nothing may be written.
    Silence,
    /// Exactly one reply, to `to`, echoing `in_reply_to`.
    Reply {
        to: String,
        in_reply_to: Option<u64>,
        answer: Answer,
    },
    /// The strict parser and grace's may disagree: at most one reply.
    AtMostOne,
}

/// Which reply a request may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A known type: its own reply type, or any error.
    SuccessOrError(&'static str),
    /// An error with this code.
    Error(u64),
}

/// The message's type, when it is a known one.
pub fn known_type(kind: &str) -> Option<(&'static str, &'static str)> {
    REPLY_TYPES.iter().copied().find(|&(name, _)| name == kind)
}

/// Works out what `message` is owed from its bytes alone.
pub fn promise_for(message: &[u8]) -> Promise {
    if serde_json::from_slice::<IgnoredAny>(message).is_err() {
        // Grace's own parse accepts less than this one, so it fails too.
        return Promise::Silence;
    }
    if serde_json::from_slice::<Value>(message).is_err() {
        // Valid JSON that `Value` cannot hold: grace may read it or not.
        return Promise::AtMostOne;
    }
    // A message is an object, never an array or a scalar.
    let Some(envelope) = entries(message) else {
        return Promise::Silence;
    };
    // Repeated, `src` or `body` leaves no one sender or request to answer.
    let (Once::Given(Value::String(src)), Once::Given(Value::Object(_))) =
        (field(&envelope, "src"), field(&envelope, "body"))
    else {
        return Promise::Silence;
    };
    let body = entries(
        raw_field(&envelope, "body")
            .expect("body is there")
            .as_bytes(),
    )
    .expect("body is an object");
    let reply = |in_reply_to, answer| Promise::Reply {
        to: src.clone(),
        in_reply_to,
        answer,
    };
    let malformed = |in_reply_to| reply(in_reply_to, Answer::Error(CODE_MALFORMED));
    let msg_id = match field(&body, "msg_id") {
        Once::Absent => None,
        Once::Given(value) => match integer_id(&value) {
            Some(id) => Some(id),
            None => return malformed(None),
        },
        Once::Repeated => return malformed(None),
    };
    match field(&envelope, "dest") {
        Once::Absent | Once::Given(Value::String(_)) => {}
        // The sender's mistake, told to the sender.
        Once::Given(_) | Once::Repeated => return malformed(msg_id),
    }
    match field(&body, "type") {
        Once::Absent if msg_id.is_none() => Promise::Silence,
        Once::Absent => malformed(msg_id),
        Once::Given(Value::String(kind)) => match known_type(&kind) {
            Some((_, reply_type)) => reply(msg_id, Answer::SuccessOrError(reply_type)),
            None => reply(msg_id, Answer::Error(CODE_NOT_SUPPORTED)),
        },
        Once::Given(_) | Once::Repeated => malformed(msg_id),
    }
}

/// An integer id as grace reads one: a non-negative integer, or `-0`
/// (read as a negative zero, as JSON readers of other languages read it).
fn integer_id(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|&number| number == 0.0 && number.is_sign_negative())
            .map(|_| 0)
    })
}

/// A key of an object: absent (or `null`), there once, or repeated.
enum Once {
    Absent,
    Given(Value),
    Repeated,
}

/// The entries of the JSON object `json`, in order, repeated keys kept
/// (`Value` would keep only the last); `None` if it is not an object.
fn entries(json: &[u8]) -> Option<Vec<(String, Box<RawValue>)>> {
    serde_json::from_slice::<Entries>(json)
        .ok()
        .map(|Entries(entries)| entries)
}

fn raw_field<'a>(entries: &'a [(String, Box<RawValue>)], key: &str) -> Option<&'a str> {
    entries
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.get())
}

fn field(entries: &[(String, Box<RawValue>)], key: &str) -> Once {
    let mut values = entries.iter().filter(|(name, _)| name == key);
    match (values.next(), values.next()) {
        (None, _) => Once::Absent,
        (Some(_), Some(_)) => Once::Repeated,
        (Some((_, raw)), None) => match serde_json::from_str(raw.get()) {
            Ok(Value::Null) => Once::Absent,
            Ok(value) => Once::Given(value),
            // Checked before: the whole message reads as a `Value`.
            Err(err) => unreachable!("a field of a readable message is unreadable: {err}"),
        },
    }
}

struct Entries(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Entries(entries))
    }
}

/// Checks the replies one message produced against its promise. Panics on failure.
pub fn check_promise(message: &[u8], promise: &Promise, replies: &[Reply]) {
    let shown = || String::from_utf8_lossy(message).into_owned();
    match promise {
        Promise::Silence => assert!(
            replies.is_empty(),
            "unanswerable message got replies {replies:?}: {:?}",
            shown()
        ),
        Promise::AtMostOne => assert!(
            replies.len() <= 1,
            "message got {} replies {replies:?}: {:?}",
            replies.len(),
            shown()
        ),
        Promise::Reply {
            to,
            in_reply_to,
            answer,
        } => {
            let [reply] = replies else {
                panic!(
                    "message got {} replies instead of one {replies:?}: {:?}",
                    replies.len(),
                    shown()
                );
            };
            assert_eq!(&reply.dest, to, "reply to the wrong client: {:?}", shown());
            assert_eq!(
                reply.in_reply_to,
                *in_reply_to,
                "reply answers the wrong msg_id: {:?}",
                shown()
            );
            let fits = match *answer {
                Answer::SuccessOrError(reply_type) => {
                    reply.kind == reply_type || reply.kind == "error"
                }
                Answer::Error(code) => reply.kind == "error" && reply.code == Some(code),
            };
            assert!(fits, "expected {answer:?}, got {reply:?}: {:?}", shown());
        }
    }
}

// ---------------------------------------------------------------------------
// Driving a node

/// A small deterministic generator (SplitMix64) for piece sizes and clock
/// steps, so one seed taken from the fuzz input replays the same run.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// Sizes of the pieces to push `len` bytes in: mostly small (down to
    /// empty), now and then large, as reads from a pipe come.
    pub fn piece_sizes(&mut self, len: usize) -> Vec<usize> {
        let mut sizes = Vec::new();
        let mut covered = 0;
        while covered < len {
            let size = match self.below(10) {
                0 => 0,
                1..=6 => 1 + self.below(8) as usize,
                7 | 8 => 1 + self.below(64) as usize,
                _ => 1 + self.below(1024) as usize,
            };
            sizes.push(size);
            covered += size;
        }
        sizes
    }

    /// How far the clock moves before the next message: mostly a few
    /// milliseconds, sometimes past a breaker's open wait or a retry's
    /// backoff, rarely past the longest of them.
    pub fn clock_step(&mut self) -> Duration {
        match self.below(100) {
            0..=89 => Duration::from_millis(self.below(10)),
            90..=97 => Duration::from_millis(1_000 + self.below(9_000)),
            _ => Duration::from_millis(30_000 + self.below(90_000)),
        }
    }
}

/// What one push into the [`Driver`] produced.
#[derive(Debug, Default)]
pub struct Pushed {
    /// Every reply written, in order, each already checked.
    pub replies: Vec<Reply>,
    /// Messages handed to the node.
    pub messages: usize,
}

/// A node fed the way the runtime feeds it (framer → node, journal rows
/// taken after every message), on a synthetic clock that the seed moves a
/// little before each message. Every message is checked as it is handled.
pub struct Driver {
    framer: Framer,
    node: NodeUnderTest,
}

struct NodeUnderTest {
    /// The node with the demo services answering in-process, as the binary runs it.
    node: InProcessNode,
    now: Instant,
    clock: SplitMix,
}

impl Driver {
    /// A node with the default configuration in front of the demo services.
    pub fn new(seed: u64) -> Self {
        let now = Instant::now();
        Driver {
            framer: Framer::default(),
            node: NodeUnderTest {
                node: InProcessNode::new(NodeConfig::default(), DemoData::builtin(), now),
                now,
                clock: SplitMix::new(seed),
            },
        }
    }

    /// Feeds one chunk of input.
    pub fn push(&mut self, chunk: &[u8]) -> Pushed {
        let mut feeding = Feeding {
            node: &mut self.node,
            pushed: Pushed::default(),
        };
        self.framer.push_to(chunk, &mut feeding);
        feeding.pushed
    }

    /// Ends the input, as EOF does.
    pub fn finish(&mut self) -> Pushed {
        let mut feeding = Feeding {
            node: &mut self.node,
            pushed: Pushed::default(),
        };
        self.framer.finish_to(&mut feeding);
        feeding.pushed
    }

    /// Moves the clock on by `by`, doing the work that falls due.
    pub fn advance(&mut self, by: Duration) {
        self.node.now += by;
        self.node.run_due_timeouts();
    }
}

/// Feeds `input` to a fresh node in pieces drawn from `seed`, the clock
/// moving between messages as `seed` says, then ends the input and waits
/// long enough for every pending retry to run. Every message is checked as
/// it is handled.
pub fn check_node_on_bytes(input: &[u8], seed: u64) {
    let mut driver = Driver::new(seed);
    let mut rest = input;
    for size in SplitMix::new(seed ^ 0x5eed).piece_sizes(input.len()) {
        let (piece, after) = rest.split_at(size.min(rest.len()));
        driver.push(piece);
        rest = after;
    }
    driver.finish();
    driver.advance(LONG_WAIT);
}

/// Longer than any breaker wait or retry backoff with the default
/// configuration, so after it nothing is left waiting on the clock.
pub const LONG_WAIT: Duration = Duration::from_secs(600);

/// The node as the framer's sink, as the runtime feeds it: complete lines
/// that are one well-formed message are taken whole, the rest framed.
struct Feeding<'n> {
    node: &'n mut NodeUnderTest,
    pushed: Pushed,
}

impl FrameSink for Feeding<'_> {
    fn frame(&mut self, frame: Frame<'_>) {
        if let Frame::Message { line, bytes } = frame {
            self.node
                .handle(bytes, Handling::Framed(line), &mut self.pushed);
        }
    }

    fn whole_line(&mut self, _line: u64, bytes: &[u8]) -> Offer {
        if grace::protocol::parse_well_formed(bytes).is_none() {
            return Offer::Declined;
        }
        self.node
            .handle(bytes, Handling::WholeLine, &mut self.pushed);
        Offer::Taken
    }
}

/// How a message reached the node.
enum Handling {
    /// Framed, starting on this line.
    Framed(u64),
    /// A whole line, already known to be one well-formed message.
    WholeLine,
}

impl NodeUnderTest {
    fn handle(&mut self, bytes: &[u8], handling: Handling, pushed: &mut Pushed) {
        self.now += self.clock.clock_step();
        self.run_due_timeouts();
        let promise = promise_for(bytes);
        match handling {
            Handling::Framed(line) => self.node.handle_message(bytes, line, self.now),
            Handling::WholeLine => assert!(
                self.node.handle_well_formed(bytes, self.now),
                "a well-formed message was not handled whole"
            ),
        }
        pushed.messages += 1;
        // The runtime commits these before writing the replies.
        self.node.node.take_journal_writes();
        let replies = parse_reply_lines(&self.node.node.take_output());
        check_promise(bytes, &promise, &replies);
        pushed.replies.extend(replies);
    }

    /// Calls `handle_timeout` while the node says work is due, as the
    /// runtime's loop does when no input comes.
    fn run_due_timeouts(&mut self) {
        let Some(due) = self.node.poll_timeout() else {
            return;
        };
        if due > self.now {
            return;
        }
        self.node.handle_timeout(self.now);
        self.node.node.take_journal_writes();
        let output = self.node.node.take_output();
        assert!(
            output.is_empty(),
            "handle_timeout wrote output: {:?}",
            String::from_utf8_lossy(&output)
        );
        if let Some(next) = self.node.poll_timeout() {
            assert!(
                next > self.now,
                "handle_timeout left work due now: the runtime would spin"
            );
        }
    }
}
