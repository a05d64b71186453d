//! Plausible messages for the structured fuzz target and the property test:
//! every message type grace answers, with the fields its handler reads, each
//! given a value worth trying (a good one, or one of the wrong type, out of
//! range, huge or negative), or left out.
//!
//! A generator (the `arbitrary` one in the fuzz crate, the `proptest` one in
//! `tests/fuzz_properties.rs`) builds a [`Plan`] of [`MessageSpec`]s, garbage
//! lines and clock jumps; [`MessageSpec::render`] writes a message as JSON
//! text, compact or pretty-printed (values are kept as raw JSON text, so
//! numbers beyond `u64` and `f64` can be written too); [`check_node_on_plan`]
//! runs the plan through a node.
//!
//! [`ObjectStream`] is the framing's counterpart: JSON objects in every
//! layout (compact, pretty, nested values at column 0, `\r\n`, blank lines),
//! back to back or separated by whitespace, which the framer must read as
//! exactly those objects ([`check_object_stream`]).

use crate::oracle::{Driver, LONG_WAIT, OwnedFrame, check_framing_seeded, frames_of};
use std::time::Duration;

/// One body field a handler reads, with values worth sending in it (raw
/// JSON text; the first few are the plausible ones).
pub struct FieldKind {
    pub name: &'static str,
    pub values: &'static [&'static str],
}

/// One message type: its name and the fields its handler reads.
pub struct MessageKind {
    pub name: &'static str,
    pub fields: &'static [FieldKind],
}

const RECORD_IDS: &[&str] = &[
    "123",
    "1",
    "7",
    "1000",
    "1001",
    "\"alice\"",
    "\"123\"",
    "0",
    "-5",
    "9223372036854775807",
    "18446744073709551615",
];
const FORCE_FAILURES: &[&str] = &["0", "1", "3", "5", "6", "100", "18446744073709551615"];
const FLAGS: &[&str] = &["true", "false"];

const fn field(name: &'static str, values: &'static [&'static str]) -> FieldKind {
    FieldKind { name, values }
}

/// Every message type grace answers, in the order of
/// `grace::maelstrom::handlers::MESSAGE_TYPES` (the property test checks this).
pub const CATALOGUE: [MessageKind; 15] = [
    MessageKind {
        name: "init",
        fields: &[
            field("node_id", &["\"n1\"", "\"n2\"", "\"\""]),
            field("node_ids", &["[\"n1\"]", "[\"n1\",\"n2\"]", "[]"]),
        ],
    },
    MessageKind {
        name: "echo",
        fields: &[field(
            "echo",
            &[
                "\"hello\"",
                "1",
                "{\"a\":[1,2,{\"b\":null}]}",
                "[]",
                "\"\\u00e9\\n\\\"\"",
                "-0.5e-3",
            ],
        )],
    },
    MessageKind {
        name: "get_user",
        fields: &[
            field("user_id", RECORD_IDS),
            field("force_failures", FORCE_FAILURES),
            field("service_unavailable", FLAGS),
        ],
    },
    MessageKind {
        name: "get_product",
        fields: &[
            field("product_id", RECORD_IDS),
            field("force_failures", FORCE_FAILURES),
            field("service_unavailable", FLAGS),
        ],
    },
    MessageKind {
        name: "set_mode",
        fields: &[
            field(
                "mode",
                &[
                    "\"normal\"",
                    "\"degraded\"",
                    "\"critical\"",
                    "\"auto\"",
                    "\"turbo\"",
                ],
            ),
            field(
                "cpu_usage",
                &[
                    "10", "50.5", "79.9", "80", "95", "100", "0", "-1", "100.1", "1e308",
                ],
            ),
        ],
    },
    MessageKind {
        name: "set_feature",
        fields: &[
            field(
                "feature",
                &[
                    "\"recommendations\"",
                    "\"search\"",
                    "\"reviews\"",
                    "\"checkout\"",
                ],
            ),
            field("enabled", FLAGS),
        ],
    },
    MessageKind {
        name: "get_recommendations",
        fields: &[field("user_id", RECORD_IDS)],
    },
    MessageKind {
        name: "search",
        fields: &[field(
            "query",
            &[
                "\"product\"",
                "\"\"",
                "\"PROD\"",
                "\"\u{e9}\u{0130}\"",
                "\"zzz\"",
            ],
        )],
    },
    MessageKind {
        name: "get_reviews",
        fields: &[field("product_id", RECORD_IDS)],
    },
    MessageKind {
        name: "set_service_health",
        fields: &[
            field(
                "service",
                &["\"order\"", "\"user\"", "\"product\"", "\"inventory\""],
            ),
            field("available", FLAGS),
        ],
    },
    MessageKind {
        name: "get_status",
        fields: &[],
    },
    MessageKind {
        name: "create_order",
        fields: &[
            field(
                "order",
                &[
                    "{\"item\":\"book\",\"qty\":1}",
                    "{}",
                    "{\"n\":[1,2,3]}",
                    "[]",
                ],
            ),
            field("idempotency_key", &["\"k1\"", "\"k2\"", "1", "2", "null"]),
            field("force_failures", FORCE_FAILURES),
            field("service_unavailable", FLAGS),
        ],
    },
    MessageKind {
        name: "get_order",
        fields: &[
            field(
                "request_id",
                &["1", "2", "3", "4", "0", "18446744073709551615"],
            ),
            field("order_id", &["\"ord-0000000000000000\"", "\"\""]),
        ],
    },
    MessageKind {
        name: "get_queue",
        fields: &[],
    },
    MessageKind {
        name: "process_queue",
        fields: &[],
    },
];

/// Values of the wrong type, out of range or beyond what `u64`/`f64` hold,
/// tried in any field.
pub const HOSTILE_VALUES: &[&str] = &[
    "null",
    "true",
    "-1",
    "-9223372036854775809",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "1e999",
    "-1e999",
    "1.5",
    "-0",
    "\"\"",
    "\"x\"",
    "\"\\ud800\"",
    "[]",
    "{}",
    "[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]",
    "{\"type\":\"echo\",\"msg_id\":1}",
];

/// Client and node names the generators use.
pub const NAMES: &[&str] = &["c1", "c2", "n1", "client", "", "n\u{e9}"];

/// A JSON value as a generator builds it.
#[derive(Debug, Clone)]
pub enum Json {
    /// Any literal written as is: `null`, `true`, a number.
    Raw(String),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// A top-level field of a message: a value of the right type, left out, or
/// something else entirely.
#[derive(Debug, Clone)]
pub enum Slot<T> {
    Given(T),
    Missing,
    Hostile(Json),
}

/// The body's `type`.
#[derive(Debug, Clone)]
pub enum KindSpec {
    /// An index into [`CATALOGUE`].
    Known(usize),
    Unknown(String),
}

/// The value of one catalogue field.
#[derive(Debug, Clone)]
pub enum FieldValue {
    /// An index into the field's own values.
    Listed(usize),
    /// An index into [`HOSTILE_VALUES`].
    Hostile(usize),
    Any(Json),
    Missing,
}

/// How the message is laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Compact,
    /// Indented over several lines, as people paste requests.
    Pretty,
    /// Pretty, with `\r\n` line ends.
    PrettyCrlf,
    /// Over several lines with nothing indented: nested objects and arrays
    /// start at column 0.
    Unindented,
    /// Unindented, with `\r\n` line ends, and a blank line and a line of
    /// whitespace after every line.
    Loose,
}

impl Layout {
    pub const ALL: [Layout; 5] = [
        Layout::Compact,
        Layout::Pretty,
        Layout::PrettyCrlf,
        Layout::Unindented,
        Layout::Loose,
    ];

    fn style(self) -> Option<Style> {
        let style = |line_end, indent| Some(Style { line_end, indent });
        match self {
            Layout::Compact => None,
            Layout::Pretty => style("\n", "  "),
            Layout::PrettyCrlf => style("\r\n", "  "),
            Layout::Unindented => style("\n", ""),
            Layout::Loose => style("\r\n\r\n \t \r\n", ""),
        }
    }
}

/// How a layout spreads JSON over lines.
#[derive(Clone, Copy)]
struct Style {
    /// Ends each line (blank lines included).
    line_end: &'static str,
    /// Once per level of nesting at the start of each line.
    indent: &'static str,
}

/// `json` as text in `layout`, without a final line end.
pub fn render_json(json: &Json, layout: Layout) -> String {
    let mut out = String::new();
    write_json(&mut out, json, layout.style(), 0);
    out
}

/// What goes between objects in a stream: JSON's whitespace, or nothing.
pub const SEPARATORS: &[&str] = &["", " ", "\n", "\r\n", "\n\n", "\t \r\n  \n", "\n\r\n\n"];

/// JSON objects one after another, each in its own layout and followed by
/// a separator: the input every framing must read as exactly these objects.
#[derive(Debug, Clone)]
pub struct ObjectStream {
    /// Before the first object.
    pub leading: &'static str,
    /// Each a [`Json::Object`] (other values are wrapped in one).
    pub objects: Vec<(Json, Layout, &'static str)>,
    /// Seeds the piece sizes the stream is pushed in.
    pub seed: u64,
    pub max_message_bytes: usize,
}

impl ObjectStream {
    /// The stream's bytes and the frames they must give: each object, on
    /// the line its `{` is on, or `Oversized` there if over the limit.
    pub fn render(&self) -> (Vec<u8>, Vec<OwnedFrame>) {
        let mut input = self.leading.to_owned();
        let mut frames = Vec::new();
        for (object, layout, separator) in &self.objects {
            let object = match object {
                Json::Object(_) => object.clone(),
                value => Json::Object(vec![("value".into(), value.clone())]),
            };
            let line = 1 + input.matches('\n').count() as u64;
            let text = render_json(&object, *layout);
            frames.push(if text.len() > self.max_message_bytes {
                OwnedFrame::Oversized { line }
            } else {
                OwnedFrame::Message {
                    line,
                    bytes: text.clone().into_bytes(),
                }
            });
            input.push_str(&text);
            input.push_str(separator);
        }
        (input.into_bytes(), frames)
    }
}

/// Checks that the framer reads `stream`, pushed whole or in pieces, as
/// exactly its objects, with every check of [`check_framing_seeded`] (which
/// also works the frames out with serde_json, a second opinion).
pub fn check_object_stream(stream: &ObjectStream) {
    let (input, expected) = stream.render();
    assert_eq!(
        frames_of(&input, &[], stream.max_message_bytes),
        expected,
        "stream of objects not framed as written: {:?}",
        String::from_utf8_lossy(&input)
    );
    check_framing_seeded(&input, stream.seed, stream.max_message_bytes);
}

/// A message's body.
#[derive(Debug, Clone)]
pub struct BodySpec {
    pub kind: Slot<KindSpec>,
    pub msg_id: Slot<u64>,
    /// Values for the catalogue fields of a known kind, in order; a field
    /// without one gets its first listed value.
    pub fields: Vec<FieldValue>,
    /// More fields; `type` and `msg_id` are left out here.
    pub extra: Vec<(String, Json)>,
}

/// One message as a generator describes it.
#[derive(Debug, Clone)]
pub struct MessageSpec {
    pub src: Slot<String>,
    pub dest: Slot<String>,
    pub body: Slot<BodySpec>,
    pub layout: Layout,
}

impl MessageSpec {
    /// The `msg_id` and sender of the one reply this message must get: it
    /// has a string `src`, an object `body` and an integer `msg_id` (whatever
    /// its `dest`: an ill-typed one is answered with an error).
    pub fn owed_reply(&self) -> Option<(u64, &str)> {
        match (&self.src, &self.body) {
            (Slot::Given(src), Slot::Given(body)) => match body.msg_id {
                Slot::Given(msg_id) => Some((msg_id, src)),
                _ => None,
            },
            _ => None,
        }
    }

    /// The message as one line of JSON, or several for a pretty layout,
    /// ending with a newline.
    pub fn render(&self) -> Vec<u8> {
        let mut out = render_json(&self.to_json(), self.layout);
        out.push('\n');
        out.into_bytes()
    }

    fn to_json(&self) -> Json {
        let mut envelope = Vec::new();
        slot_field(&mut envelope, "src", &self.src, |src| {
            Json::Str(src.clone())
        });
        slot_field(&mut envelope, "dest", &self.dest, |dest| {
            Json::Str(dest.clone())
        });
        slot_field(&mut envelope, "body", &self.body, BodySpec::to_json);
        Json::Object(envelope)
    }
}

impl BodySpec {
    fn to_json(&self) -> Json {
        let mut body = Vec::new();
        slot_field(&mut body, "type", &self.kind, |kind| match kind {
            KindSpec::Known(index) => Json::Str(CATALOGUE[index % CATALOGUE.len()].name.into()),
            KindSpec::Unknown(name) => Json::Str(name.clone()),
        });
        slot_field(&mut body, "msg_id", &self.msg_id, |id| {
            Json::Raw(id.to_string())
        });
        if let Slot::Given(KindSpec::Known(index)) = &self.kind {
            let kind = &CATALOGUE[index % CATALOGUE.len()];
            for (position, field) in kind.fields.iter().enumerate() {
                let value = match self.fields.get(position) {
                    None => Json::Raw(field.values[0].into()),
                    Some(FieldValue::Listed(index)) => {
                        Json::Raw(field.values[index % field.values.len()].into())
                    }
                    Some(FieldValue::Hostile(index)) => {
                        Json::Raw(HOSTILE_VALUES[index % HOSTILE_VALUES.len()].into())
                    }
                    Some(FieldValue::Any(json)) => json.clone(),
                    Some(FieldValue::Missing) => continue,
                };
                body.push((field.name.into(), value));
            }
        }
        for (name, value) in &self.extra {
            if name != "type" && name != "msg_id" {
                body.push((name.clone(), value.clone()));
            }
        }
        Json::Object(body)
    }
}

fn slot_field<T>(
    object: &mut Vec<(String, Json)>,
    name: &str,
    slot: &Slot<T>,
    given: impl FnOnce(&T) -> Json,
) {
    match slot {
        Slot::Given(value) => object.push((name.into(), given(value))),
        Slot::Missing => {}
        Slot::Hostile(json) => object.push((name.into(), json.clone())),
    }
}

/// Writes `json`; with a style, spread over lines, nested lines indented
/// as the style says.
fn write_json(out: &mut String, json: &Json, style: Option<Style>, depth: usize) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(style) = style {
            out.push_str(style.line_end);
            out.push_str(&style.indent.repeat(depth));
        }
    };
    match json {
        Json::Raw(text) => out.push_str(text),
        Json::Str(text) => out.push_str(&serde_json::to_string(text).expect("strings serialize")),
        Json::Array(items) => {
            out.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_json(out, item, style, depth + 1);
            }
            if !items.is_empty() {
                newline(out, depth);
            }
            out.push(']');
        }
        Json::Object(fields) => {
            out.push('{');
            for (position, (name, value)) in fields.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                out.push_str(&serde_json::to_string(name).expect("strings serialize"));
                out.push(':');
                if style.is_some() {
                    out.push(' ');
                }
                write_json(out, value, style, depth + 1);
            }
            if !fields.is_empty() {
                newline(out, depth);
            }
            out.push('}');
        }
    }
}

/// A run of the structured checks: messages, garbage and clock jumps.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Seeds the small clock steps between messages.
    pub seed: u64,
    pub steps: Vec<Step>,
}

/// One step of a [`Plan`].
#[derive(Debug, Clone)]
pub enum Step {
    Send(MessageSpec),
    /// A line of arbitrary bytes (its newlines are dropped).
    Garbage(Vec<u8>),
    /// The clock jumps, running the work that falls due.
    Wait(Duration),
}

/// Runs `plan` through a fresh node with every check of the
/// [`Driver`](crate::oracle::Driver), plus: every message with an integer
/// `msg_id` (and a string `src`, an object `body`) gets exactly one reply,
/// to its sender, with that `in_reply_to`.
pub fn check_node_on_plan(plan: &Plan) {
    let mut driver = Driver::new(plan.seed);
    for step in &plan.steps {
        match step {
            Step::Send(message) => {
                let pushed = driver.push(&message.render());
                if let Some((msg_id, src)) = message.owed_reply() {
                    let answers = pushed
                        .replies
                        .iter()
                        .filter(|reply| reply.in_reply_to == Some(msg_id) && reply.dest == src)
                        .count();
                    assert_eq!(
                        (answers, pushed.replies.len()),
                        (1, 1),
                        "msg_id {msg_id} not answered exactly once: {:?}\n{message:?}",
                        pushed.replies
                    );
                }
            }
            Step::Garbage(bytes) => {
                driver.push(&garbage_line(bytes));
            }
            Step::Wait(by) => driver.advance(*by),
        }
    }
    driver.finish();
    driver.advance(LONG_WAIT);
}

/// `bytes` as one input line that does not open an object. An object left
/// open where a value may follow (`{"a": [`) may legitimately take the
/// pretty-printed message after it for a nested, unindented value, so a
/// plan's garbage never opens one; the `node` target covers that case.
fn garbage_line(bytes: &[u8]) -> Vec<u8> {
    let mut line: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|&byte| byte != b'\n')
        .collect();
    if line.trim_ascii_start().starts_with(b"{") {
        line.insert(0, b'#');
    }
    line.push(b'\n');
    line
}
