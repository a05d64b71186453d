//! The fuzz targets' bodies, kept here so the three files in `fuzz_targets/`
//! stay one line each and all share the checks of [`oracle`].
//!
//! - [`fuzz_framing`]: arbitrary bytes through the framer, in arbitrary chunks.
//! - [`fuzz_framing_stream`]: an [`ObjectStream`] (JSON objects in every
//!   layout, generated with `arbitrary`) through the framer: exactly those
//!   objects come out.
//! - [`fuzz_node`]: arbitrary bytes through framer and node.
//! - [`fuzz_node_structured`]: a [`Plan`] of plausible messages and clock
//!   jumps, generated with `arbitrary` (the impls below), through framer
//!   and node.
//!
//! [`oracle`] and [`messages`] are also compiled into the CI property test
//! (`tests/fuzz_properties.rs`), so they depend on nothing but grace's own
//! dependencies.

pub mod messages;
pub mod oracle;

use arbitrary::{Arbitrary, Result, Unstructured};
use grace::protocol::framing::DEFAULT_MAX_MESSAGE_BYTES;
use messages::{
    BodySpec, CATALOGUE, FieldValue, HOSTILE_VALUES, Json, KindSpec, Layout, MessageSpec, NAMES,
    ObjectStream, Plan, SEPARATORS, Slot, Step, check_node_on_plan, check_object_stream,
};
use oracle::{check_framing_seeded, check_node_on_bytes};
use std::time::Duration;

/// Bytes at the start of a byte-level fuzz input that choose how the rest
/// is run (limit, piece sizes, clock), not fed to the framer.
pub const HEADER_BYTES: usize = 4;

/// Splits a byte-level input into its header's seed and the payload.
fn split_header(data: &[u8]) -> (u32, &[u8]) {
    let mut header = [0; HEADER_BYTES];
    let take = data.len().min(HEADER_BYTES);
    header[..take].copy_from_slice(&data[..take]);
    (u32::from_le_bytes(header), &data[take..])
}

/// Framing target: the payload pushed whole and in pieces chosen by the
/// header gives the same frames. The header's top bit picks a small size
/// limit (1 to 512 bytes) instead of the default, to reach the oversized paths.
pub fn fuzz_framing(data: &[u8]) {
    let (seed, input) = split_header(data);
    let max_message_bytes = if seed & 0x8000_0000 != 0 {
        1 + (seed >> 16) as usize % 512
    } else {
        DEFAULT_MAX_MESSAGE_BYTES
    };
    check_framing_seeded(input, u64::from(seed), max_message_bytes);
}

/// Stream target: see [`check_object_stream`].
pub fn fuzz_framing_stream(stream: &ObjectStream) {
    check_object_stream(stream);
}

/// Node target: see [`check_node_on_bytes`].
pub fn fuzz_node(data: &[u8]) {
    let (seed, input) = split_header(data);
    check_node_on_bytes(input, u64::from(seed));
}

/// Structured target: see [`check_node_on_plan`].
pub fn fuzz_node_structured(plan: &Plan) {
    check_node_on_plan(plan);
}

impl<'a> Arbitrary<'a> for Plan {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let seed = u.arbitrary()?;
        let mut steps = Vec::new();
        while !u.is_empty() && steps.len() < 200 {
            steps.push(step(u)?);
        }
        Ok(Plan { seed, steps })
    }
}

impl<'a> Arbitrary<'a> for ObjectStream {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let leading = *u.choose(SEPARATORS)?;
        let seed = u.arbitrary()?;
        let max_message_bytes = if u.ratio(1, 4)? {
            u.int_in_range(1..=512)?
        } else {
            DEFAULT_MAX_MESSAGE_BYTES
        };
        let mut objects = Vec::new();
        while !u.is_empty() && objects.len() < 50 {
            let object = json(u, 3)?;
            objects.push((object, *u.choose(&Layout::ALL)?, *u.choose(SEPARATORS)?));
        }
        Ok(ObjectStream {
            leading,
            objects,
            seed,
            max_message_bytes,
        })
    }
}

fn step(u: &mut Unstructured<'_>) -> Result<Step> {
    Ok(match u.int_in_range(0..=19)? {
        0 => Step::Garbage(u.arbitrary()?),
        1 => Step::Wait(Duration::from_millis(u.int_in_range(1_000..=10_000)?)),
        2 => Step::Wait(Duration::from_millis(u.int_in_range(10_000..=120_000)?)),
        3 => Step::Wait(Duration::from_millis(u.int_in_range(0..=500)?)),
        _ => Step::Send(message(u)?),
    })
}

fn message(u: &mut Unstructured<'_>) -> Result<MessageSpec> {
    Ok(MessageSpec {
        src: slot(u, name)?,
        dest: slot(u, name)?,
        body: slot(u, body)?,
        layout: if u.ratio(3, 4)? {
            Layout::Compact
        } else {
            *u.choose(&Layout::ALL)?
        },
    })
}

/// Mostly the right thing, sometimes missing or hostile.
fn slot<'a, T>(
    u: &mut Unstructured<'a>,
    given: impl FnOnce(&mut Unstructured<'a>) -> Result<T>,
) -> Result<Slot<T>> {
    Ok(match u.int_in_range(0..=15)? {
        0 => Slot::Missing,
        1 => Slot::Hostile(json(u, 2)?),
        _ => Slot::Given(given(u)?),
    })
}

fn name(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(if u.ratio(1, 10)? {
        u.arbitrary()?
    } else {
        (*u.choose(NAMES)?).to_owned()
    })
}

fn body(u: &mut Unstructured<'_>) -> Result<BodySpec> {
    let kind = slot(u, |u| {
        Ok(if u.ratio(1, 20)? {
            KindSpec::Unknown(u.arbitrary()?)
        } else {
            KindSpec::Known(u.choose_index(CATALOGUE.len())?)
        })
    })?;
    let msg_id = slot(u, |u| {
        Ok(if u.ratio(1, 10)? {
            u.arbitrary()?
        } else {
            u.int_in_range(0..=20)?
        })
    })?;
    let field_count = u.int_in_range(0..=4)?;
    let mut fields = Vec::with_capacity(field_count);
    for _ in 0..field_count {
        fields.push(match u.int_in_range(0..=9)? {
            0 => FieldValue::Missing,
            1 => FieldValue::Hostile(u.choose_index(HOSTILE_VALUES.len())?),
            2 => FieldValue::Any(json(u, 2)?),
            _ => FieldValue::Listed(u.arbitrary::<u8>()?.into()),
        });
    }
    let mut extra = Vec::new();
    if u.ratio(1, 8)? {
        let field_names: Vec<&str> = CATALOGUE
            .iter()
            .flat_map(|kind| kind.fields.iter().map(|field| field.name))
            .collect();
        extra.push(((*u.choose(&field_names)?).to_owned(), json(u, 2)?));
    }
    Ok(BodySpec {
        kind,
        msg_id,
        fields,
        extra,
    })
}

/// Any JSON value, nested at most `depth` levels.
fn json(u: &mut Unstructured<'_>, depth: u32) -> Result<Json> {
    let choice = u.int_in_range(0..=if depth == 0 { 3 } else { 5 })?;
    Ok(match choice {
        0 => Json::Raw((*u.choose(HOSTILE_VALUES)?).to_owned()),
        1 => Json::Raw(u.arbitrary::<i64>()?.to_string()),
        2 => Json::Raw(float(u.arbitrary()?)),
        3 => Json::Str(u.arbitrary()?),
        4 => {
            let len = u.int_in_range(0..=3)?;
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(json(u, depth - 1)?);
            }
            Json::Array(items)
        }
        _ => {
            let len = u.int_in_range(0..=3)?;
            let mut fields = Vec::with_capacity(len);
            for _ in 0..len {
                fields.push((name(u)?, json(u, depth - 1)?));
            }
            Json::Object(fields)
        }
    })
}

/// A float as JSON text; JSON has no NaN or infinity, so those become `null`.
fn float(value: f64) -> String {
    if value.is_finite() {
        serde_json::to_string(&value).expect("finite floats serialize")
    } else {
        "null".to_owned()
    }
}
