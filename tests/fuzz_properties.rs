//! The fuzz targets of `fuzz/`, CI-sized: proptest generates arbitrary byte
//! streams and plausible message sequences, and runs them through the same
//! checks (`fuzz/src/oracle.rs` and `fuzz/src/messages.rs` are compiled in
//! here, so the fuzzers and this test cannot drift apart):
//!
//! - the framer gives the same frames however its input is chunked, reads
//!   any stream of JSON objects (in every layout, split anywhere) as exactly
//!   those objects on their lines, and scans each input byte a bounded
//!   number of times, whatever the shape of the input;
//! - the node, fed through the framer on a synthetic clock, never panics,
//!   leaves no timer due after `handle_timeout`, writes only whole reply
//!   lines that are each one JSON envelope, and answers each message as the
//!   protocol promises (one reply to its sender echoing its `msg_id`, or
//!   nothing when no reply can be addressed).
//!
//! Bugs the fuzzers found are pinned below as regression tests (a new one
//! goes in `#[ignore = "bug: ..."]` until `src/` is fixed). Longer runs:
//! see `fuzz/README.md`.

#[path = "../fuzz/src/messages.rs"]
mod messages;
#[path = "../fuzz/src/oracle.rs"]
mod oracle;

use messages::{
    BodySpec, CATALOGUE, FieldValue, HOSTILE_VALUES, Json, KindSpec, Layout, MessageSpec, NAMES,
    ObjectStream, Plan, SEPARATORS, Slot, Step, check_node_on_plan, check_object_stream,
};
use oracle::{
    Driver, OwnedFrame, REPLY_TYPES, check_framing, check_framing_seeded, check_node_on_bytes,
    frames_of,
};
use proptest::prelude::*;
use proptest::sample::select;
use std::time::Duration;

/// Cases per property unless `PROPTEST_CASES` says otherwise: together the
/// three properties take a few seconds in a debug build.
const CASES: u32 = 4000;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(CASES);
    ProptestConfig::with_cases(cases)
}

// ---------------------------------------------------------------------------
// Strategies

/// Pieces of JSON and of framing trouble that random bytes rarely hit.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    "\\",
    ":",
    ",",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    "\n\n",
    "{\n",
    "\n}",
    "\"src\":\"c1\",",
    "\"dest\":\"n1\",",
    "\"body\":",
    "\"type\":\"echo\",",
    "\"msg_id\":",
    "\"msg_id\":7",
    "\"echo\":",
    "\"type\":\"get_user\",\"user_id\":1",
    "\"force_failures\":6,",
    "1e999",
    "-1",
    "18446744073709551616",
    "\"\\ud800\"",
    "null",
    "\u{e9}",
    "\u{ff}",
];

/// A byte stream made of tokens, whole rendered messages and random bytes.
fn input_bytes() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        6 => select(TOKENS).prop_map(|token| token.as_bytes().to_vec()),
        2 => message().prop_map(|message| message.render()),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(fragment, 0..40).prop_map(|fragments| fragments.concat())
}

fn text() -> impl Strategy<Value = String> {
    "[a-z_\u{e9}\"\\\\{}\n\t ]{0,8}"
}

fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        select(HOSTILE_VALUES).prop_map(|value| Json::Raw(value.into())),
        any::<i64>().prop_map(|number| Json::Raw(number.to_string())),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |number| number.is_finite())
            .prop_map(|number| Json::Raw(serde_json::to_string(&number).unwrap())),
        text().prop_map(Json::Str),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Json::Array),
            prop::collection::vec((text(), inner), 0..3).prop_map(Json::Object),
        ]
    })
}

/// Mostly the right thing, sometimes missing or hostile.
fn slot<T: Clone + std::fmt::Debug>(
    given: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Slot<T>> {
    prop_oneof![
        1 => Just(Slot::Missing),
        1 => json().prop_map(Slot::Hostile),
        14 => given.prop_map(Slot::Given),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![9 => select(NAMES).prop_map(String::from), 1 => text()]
}

fn field_names() -> Vec<&'static str> {
    CATALOGUE
        .iter()
        .flat_map(|kind| kind.fields.iter().map(|field| field.name))
        .collect()
}

fn body() -> impl Strategy<Value = BodySpec> {
    let kind = prop_oneof![
        19 => (0..CATALOGUE.len()).prop_map(KindSpec::Known),
        1 => "[a-z_]{0,12}".prop_map(KindSpec::Unknown),
    ];
    let msg_id = prop_oneof![9 => 0..=20u64, 1 => any::<u64>()];
    let field = prop_oneof![
        1 => Just(FieldValue::Missing),
        1 => (0..HOSTILE_VALUES.len()).prop_map(FieldValue::Hostile),
        1 => json().prop_map(FieldValue::Any),
        7 => any::<u8>().prop_map(|index| FieldValue::Listed(index.into())),
    ];
    let extra = prop::collection::vec((select(field_names()).prop_map(String::from), json()), 0..2);
    (
        slot(kind),
        slot(msg_id),
        prop::collection::vec(field, 0..=4),
        extra,
    )
        .prop_map(|(kind, msg_id, fields, extra)| BodySpec {
            kind,
            msg_id,
            fields,
            extra,
        })
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        3 => Just(Layout::Compact),
        1 => select(&Layout::ALL[..]),
    ]
}

fn message() -> impl Strategy<Value = MessageSpec> {
    let layout = layout();
    (slot(name()), slot(name()), slot(body()), layout).prop_map(|(src, dest, body, layout)| {
        MessageSpec {
            src,
            dest,
            body,
            layout,
        }
    })
}

fn plan() -> impl Strategy<Value = Plan> {
    let wait = |range: std::ops::RangeInclusive<u64>| {
        range.prop_map(|millis| Step::Wait(Duration::from_millis(millis)))
    };
    let step = prop_oneof![
        16 => message().prop_map(Step::Send),
        1 => prop::collection::vec(any::<u8>(), 0..16).prop_map(Step::Garbage),
        1 => wait(0..=500),
        1 => wait(1_000..=10_000),
        1 => wait(10_000..=120_000),
    ];
    (any::<u64>(), prop::collection::vec(step, 0..40))
        .prop_map(|(seed, steps)| Plan { seed, steps })
}

fn object_stream() -> impl Strategy<Value = ObjectStream> {
    let object = prop::collection::vec((text(), json()), 0..4).prop_map(Json::Object);
    (
        select(SEPARATORS),
        prop::collection::vec((object, layout(), select(SEPARATORS)), 0..10),
        any::<u64>(),
        prop_oneof![
            3 => Just(grace::protocol::framing::DEFAULT_MAX_MESSAGE_BYTES),
            1 => 1..256usize,
        ],
    )
        .prop_map(|(leading, objects, seed, max_message_bytes)| ObjectStream {
            leading,
            objects,
            seed,
            max_message_bytes,
        })
}

/// Shapes that have made framers do quadratic work or swallow what follows:
/// each fragment of an input is one of these, repeated.
const ADVERSARIAL: &[&str] = &[
    "{\n",
    "\n",
    "  \r\n",
    " \t",
    "{\"a\":[\n",
    "{\"a\":1,\n",
    "{\"a\":\n",
    "{\"b\":1}\n",
    "{}",
    "{} ",
    "}\n",
    "]\n",
    "\"",
    "\"}\"",
    "\\",
    "[",
    "x\n",
    "{\"a\n",
    "\u{feff}",
];

fn adversarial_input() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((select(ADVERSARIAL), 1..300usize), 1..8).prop_map(|runs| {
        runs.iter()
            .map(|(fragment, times)| fragment.repeat(*times))
            .collect::<String>()
            .into_bytes()
    })
}

// ---------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config())]

    #[test]
    fn framing_gives_the_same_frames_whatever_the_chunking(
        input in input_bytes(),
        seed in any::<u64>(),
        small_limit in prop::option::of(1..512usize),
    ) {
        let limit = small_limit.unwrap_or(grace::protocol::framing::DEFAULT_MAX_MESSAGE_BYTES);
        check_framing_seeded(&input, seed, limit);
    }

    #[test]
    fn framing_reads_every_stream_of_json_objects_as_exactly_those_objects(
        stream in object_stream(),
    ) {
        check_object_stream(&stream);
    }

    #[test]
    fn framing_work_stays_linear_whatever_the_shape_of_the_input(
        input in adversarial_input(),
        seed in any::<u64>(),
        small_limit in prop::option::of(1..512usize),
    ) {
        // check_framing bounds the work of every run; here the inputs are
        // long runs of the shapes that cost most.
        let limit = small_limit.unwrap_or(grace::protocol::framing::DEFAULT_MAX_MESSAGE_BYTES);
        check_framing_seeded(&input, seed, limit);
        // Pushed a byte at a time, too.
        check_framing(&input, &vec![1; input.len()], limit);
    }

    #[test]
    fn node_answers_arbitrary_bytes_only_with_valid_reply_lines(
        input in input_bytes(),
        seed in any::<u64>(),
    ) {
        check_node_on_bytes(&input, seed);
    }

    #[test]
    fn node_answers_every_plausible_message_with_an_integer_msg_id_exactly_once(plan in plan()) {
        check_node_on_plan(&plan);
    }
}

#[test]
fn catalogue_and_reply_types_cover_every_message_type() {
    let catalogue: Vec<&str> = CATALOGUE.iter().map(|kind| kind.name).collect();
    let reply_types: Vec<&str> = REPLY_TYPES.iter().map(|&(name, _)| name).collect();
    assert_eq!(catalogue, grace::maelstrom::handlers::MESSAGE_TYPES);
    assert_eq!(reply_types, grace::maelstrom::handlers::MESSAGE_TYPES);
}

// ---------------------------------------------------------------------------
// Regressions found by fuzzing

fn echo(msg_id: u64) -> String {
    format!(
        r#"{{"src":"c1","dest":"n1","body":{{"type":"echo","msg_id":{msg_id},"echo":{msg_id}}}}}"#
    )
}

/// Feeds `input` in one piece and returns the `in_reply_to` of every reply.
fn answered(input: &str) -> Vec<Option<u64>> {
    let mut driver = Driver::new(0);
    let mut replies = driver.push(input.as_bytes()).replies;
    replies.extend(driver.finish().replies);
    replies.iter().map(|reply| reply.in_reply_to).collect()
}

#[test]
fn empty_line_after_a_truncated_object_does_not_kill_the_node() {
    let input = format!("{}\n{{\n\n{}\n", echo(1), echo(2));
    assert_eq!(answered(&input), [Some(1), Some(2)]);
}

#[test]
fn empty_line_inside_a_pretty_printed_message_is_whitespace() {
    let input = "{\n  \"src\": \"c1\",\n\n  \"dest\": \"n1\",\n  \"body\": {\"type\": \"echo\", \"msg_id\": 1, \"echo\": 1}\n}\n";
    assert_eq!(answered(input), [Some(1)]);
}

#[test]
fn oversized_pretty_message_is_skipped_whole_however_it_arrives() {
    let nested_request = r#"{"src":"c1","dest":"n1","body":{"type":"set_service_health","msg_id":9,"service":"order","available":false}}"#;
    let input = format!(
        "{{\n  \"src\": \"c1\",\n  \"padding\": \"{}\",\n  \"batch\": [\n    {nested_request}\n  ]\n}}\n{}\n",
        "x".repeat(300),
        echo(1)
    );
    let limit = 150;
    let expected = [
        OwnedFrame::Oversized { line: 1 },
        OwnedFrame::Message {
            line: 8,
            bytes: echo(1).into_bytes(),
        },
    ];
    assert_eq!(
        frames_of(input.as_bytes(), &[], limit),
        expected,
        "pushed whole"
    );
    // As reads from a pipe come: the limit is crossed inside a line that has
    // not fully arrived.
    let mid_padding = input.find("\"padding\"").unwrap() + limit;
    assert_eq!(
        frames_of(input.as_bytes(), &[mid_padding], limit),
        expected,
        "pushed in two pieces"
    );
}

#[test]
fn size_limit_does_not_depend_on_where_a_read_ends() {
    let message = r#"{"a":1}"#;
    let input = format!("{message}\r\n");
    let limit = message.len();
    let whole = frames_of(input.as_bytes(), &[], limit);
    assert_eq!(
        whole,
        [OwnedFrame::Message {
            line: 1,
            bytes: message.as_bytes().to_vec(),
        }]
    );
    // The read ends after the `\r`, before the newline.
    assert_eq!(frames_of(input.as_bytes(), &[limit + 1], limit), whole);
}

#[test]
fn message_after_a_truncated_object_survives_a_read_ending_inside_it() {
    let truncated = "{\"a\": [1, 2, 3,\n";
    let input = format!("{truncated}{}\n{}\n", echo(1), echo(2));
    // Each message fits; the truncated object and most of the next do not.
    let limit = echo(1).len() + 10;
    let whole = frames_of(input.as_bytes(), &[], limit);
    assert_eq!(
        whole,
        [
            OwnedFrame::Unterminated { line: 1 },
            OwnedFrame::Message {
                line: 2,
                bytes: echo(1).into_bytes(),
            },
            OwnedFrame::Message {
                line: 3,
                bytes: echo(2).into_bytes(),
            },
        ]
    );
    let inside_second_line = truncated.len() + echo(1).len() - 1;
    assert_eq!(
        frames_of(input.as_bytes(), &[inside_second_line], limit),
        whole
    );
}

#[test]
fn oversized_object_ends_on_the_same_line_however_it_arrives() {
    // Not valid JSON (a string cannot hold a line break), but framing must
    // still not depend on where a read ends.
    let input = "{\"\\\r\n\"}\nnot json\n";
    let limit = 1;
    let whole = frames_of(input.as_bytes(), &[], limit);
    assert_eq!(frames_of(input.as_bytes(), &[2], limit), whole);
}

#[test]
fn oversized_object_nested_deeper_than_the_limit_keeps_its_values_at_column_zero() {
    // Past the size limit and nested deeper than it, the framer stops
    // tracking the grammar; the `{` at column 0 is still a nested value of a
    // valid object, not the next message.
    let input = "{\n\"a\": [\n{}\n]\n}\n{}\n";
    assert_eq!(
        frames_of(input.as_bytes(), &[], 1),
        [
            OwnedFrame::Oversized { line: 1 },
            OwnedFrame::Oversized { line: 6 }
        ]
    );
}
