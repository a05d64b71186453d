//! `get_user` and `get_product`: a read through the service's breaker,
//! falling back to the last good copy. The two differ only in their service
//! and their reply's keys (`user`/`from_cache` with the circuit's state;
//! the seed's `product`/`_cached`).

use super::Ctx;
use super::forced_failures::Forcing;
use crate::core::{Outcome, ReadOutcome, ServiceId, Sharing};
use crate::demo::in_process::{DemoCall, DemoRequest};
use crate::protocol::{self, ErrorCode, RecordId, Request};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Which record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Product,
}

#[derive(Deserialize)]
struct GetUser {
    user_id: RecordId,
    #[serde(default)]
    force_failures: u64,
    #[serde(default)]
    service_unavailable: bool,
}

#[derive(Deserialize)]
struct GetProduct {
    product_id: RecordId,
    #[serde(default)]
    force_failures: u64,
    #[serde(default)]
    service_unavailable: bool,
}

/// The reply to `get_user`: `user` (the record), `circuit_state` (the user
/// breaker's state after this request) and `from_cache`.
const USER_RESPONSE: &str = "user_response";

/// The reply to `get_product`: exactly the seed's keys, `product` and
/// `_cached`.
const PRODUCT_RESPONSE: &str = "product_response";

/// A read waiting for the core.
pub struct Waiting {
    kind: Kind,
    id: RecordId,
    service_unavailable: bool,
    /// Forced failures still under way; the read comes after them.
    forcing: Option<Forcing>,
}

impl Kind {
    fn service(self, ctx: &Ctx<'_>) -> ServiceId {
        match self {
            Kind::User => ctx.node.services.user,
            Kind::Product => ctx.node.services.product,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Product => "product",
        }
    }
}

pub fn start(kind: Kind, request: &Request<'_>, ctx: &mut Ctx<'_>) -> Option<super::Waiting> {
    let parsed = match plain_fields(kind, request) {
        Some(parsed) => Ok(parsed),
        None => match kind {
            Kind::User => request
                .parse_body::<GetUser>()
                .map(|r| (r.user_id, r.force_failures, r.service_unavailable)),
            Kind::Product => request
                .parse_body::<GetProduct>()
                .map(|r| (r.product_id, r.force_failures, r.service_unavailable)),
        },
    };
    let (id, force_failures, service_unavailable) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => {
            ctx.reply_error(&error);
            return None;
        }
    };
    let forcing = Forcing::start(force_failures, kind.service(ctx), ctx);
    let waiting = Waiting {
        kind,
        id,
        service_unavailable,
        forcing,
    };
    if waiting.forcing.is_none() {
        read(&waiting, ctx);
    }
    Some(super::Waiting::Record(waiting))
}

/// The request's fields read without serde when they are plain: each given
/// once, the id a non-negative integer of at most 18 digits, the flags
/// plain; `None` leaves them to `parse_body`, which reads them the same way
/// (and reports what is wrong). Other fields are ignored, as serde does.
fn plain_fields(kind: Kind, request: &Request<'_>) -> Option<(RecordId, u64, bool)> {
    let id_field = match kind {
        Kind::User => "user_id",
        Kind::Product => "product_id",
    };
    let (mut id, mut force_failures, mut service_unavailable) = (None, None, None);
    for (name, raw) in request.fields.iter() {
        let (slot, value) = match name {
            "force_failures" => (&mut force_failures, plain_u64(raw, 20)?),
            "service_unavailable" => (
                &mut service_unavailable,
                match raw {
                    "true" => 1,
                    "false" => 0,
                    _ => return None,
                },
            ),
            _ if name == id_field => (&mut id, plain_u64(raw, 18)?),
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return None;
        }
    }
    // At most 18 digits: the id fits an i64.
    let id = RecordId::Int(id? as i64);
    Some((
        id,
        force_failures.unwrap_or(0),
        service_unavailable == Some(1),
    ))
}

/// `raw` as a non-negative integer written in at most `max_digits` plain
/// digits (no leading zero, sign, fraction or exponent), else `None`.
fn plain_u64(raw: &str, max_digits: usize) -> Option<u64> {
    let digits = raw.as_bytes();
    if digits.len() > max_digits || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    protocol::plain_u64(digits)
}

fn read(waiting: &Waiting, ctx: &mut Ctx<'_>) {
    let mut digits = itoa::Buffer::new();
    // The key of the read: the id as JSON text (`123`, `"123"`).
    let key: std::borrow::Cow<str> = match &waiting.id {
        RecordId::Int(id) => digits.format(*id).into(),
        RecordId::BigInt(id) => digits.format(*id).into(),
        RecordId::Text(_) => serde_json::to_string(&waiting.id)
            .expect("ids serialize")
            .into(),
    };
    let (kind, fail) = (waiting.kind, waiting.service_unavailable);
    let call = || {
        let id = key.to_string();
        let request = match kind {
            Kind::User => DemoRequest::User { id },
            Kind::Product => DemoRequest::Product { id },
        };
        DemoCall::new(request).failing_if(fail)
    };
    // A read that asks for its own call to fail must not share anyone's.
    let sharing = if fail {
        Sharing::Alone
    } else {
        Sharing::Coalesce
    };
    let service = kind.service(ctx);
    ctx.core
        .read(ctx.waiter, service, key.as_bytes(), call, sharing, ctx.now);
}

pub fn resume(mut waiting: Waiting, outcome: Outcome, ctx: &mut Ctx<'_>) -> Option<super::Waiting> {
    if let Some(forcing) = waiting.forcing.take() {
        waiting.forcing = forcing.next(&outcome, waiting.kind.service(ctx), ctx);
        if waiting.forcing.is_none() {
            read(&waiting, ctx);
        }
        return Some(super::Waiting::Record(waiting));
    }
    let Outcome::Read(outcome) = outcome else {
        unreachable!("a record read is answered with a read outcome");
    };
    let (body, from_cache) = match &outcome {
        ReadOutcome::Fresh(response) if response.status == 404 => {
            let mut digits = itoa::Buffer::new();
            let id = shown_id(&waiting.id, &mut digits);
            let text = [waiting.kind.name(), " ", &id, " does not exist"];
            ctx.reply_error_text(ErrorCode::KeyDoesNotExist, &text);
            return None;
        }
        ReadOutcome::Fresh(response) => (&response.body, false),
        ReadOutcome::Stale { copy, .. } => (&copy.response.body, true),
        ReadOutcome::Unavailable { .. } => {
            let mut digits = itoa::Buffer::new();
            let id = shown_id(&waiting.id, &mut digits);
            let text = [
                waiting.kind.name(),
                " service cannot answer for id ",
                &id,
                " and no cached copy exists",
            ];
            ctx.reply_error_text(ErrorCode::TemporarilyUnavailable, &text);
            return None;
        }
    };
    // The record goes out as the demo service wrote it: compact JSON made
    // by grace itself (see `crate::demo`), so it is not parsed again.
    debug_assert!(
        serde_json::from_slice::<&RawValue>(body).is_ok_and(|raw| raw.get().len() == body.len())
    );
    match waiting.kind {
        Kind::User => {
            let circuit_state = ctx.core.breaker_state(ctx.node.services.user);
            ctx.reply_fields(USER_RESPONSE, |fields| {
                fields
                    .raw_json("user", body)
                    .str("circuit_state", circuit_state.as_str())
                    .bool("from_cache", from_cache);
            });
        }
        Kind::Product => ctx.reply_fields(PRODUCT_RESPONSE, |fields| {
            fields.raw_json("product", body).bool("_cached", from_cache);
        }),
    }
    None
}

/// `id` as error texts show it (its `Display`), with no formatting
/// machinery for the usual integer id.
fn shown_id<'a>(id: &'a RecordId, digits: &'a mut itoa::Buffer) -> std::borrow::Cow<'a, str> {
    match id {
        RecordId::Int(id) => digits.format(*id).into(),
        RecordId::BigInt(id) => digits.format(*id).into(),
        RecordId::Text(_) => id.to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse_request;

    fn by_serde(kind: Kind, request: &Request<'_>) -> Option<(RecordId, u64, bool)> {
        match kind {
            Kind::User => request
                .parse_body::<GetUser>()
                .ok()
                .map(|r| (r.user_id, r.force_failures, r.service_unavailable)),
            Kind::Product => request
                .parse_body::<GetProduct>()
                .ok()
                .map(|r| (r.product_id, r.force_failures, r.service_unavailable)),
        }
    }

    #[test]
    fn plain_fields_read_as_serde_reads_them_or_are_left_to_it() {
        let bodies = [
            (r#""user_id":309"#, true),
            (
                r#""user_id":0,"force_failures":3,"service_unavailable":true"#,
                true,
            ),
            (
                r#""service_unavailable":false,"user_id":999999999999999999,"x":[1]"#,
                true,
            ),
            (r#""force_failures":18446744073709551615,"user_id":1"#, true),
            (r#""user_id":1,"product_id":"p""#, true),
            (r#""user_id":"309""#, false),
            (r#""user_id":-1"#, false),
            (r#""user_id":-0"#, false),
            (r#""user_id":1.0"#, false),
            (r#""user_id":9223372036854775807"#, false),
            (r#""user_id":1,"user_id":1"#, false),
            (r#""user_id":1,"force_failures":-1"#, false),
            (
                r#""user_id":1,"force_failures":18446744073709551616"#,
                false,
            ),
            (r#""user_id":1,"service_unavailable":null"#, false),
            (
                r#""user_id":1,"service_unavailable":true,"service_unavailable":true"#,
                false,
            ),
            (r#""force_failures":2"#, false),
        ];
        for (fields, plain) in bodies {
            let text = format!(r#"{{"src":"c","body":{{"type":"get_user",{fields}}}}}"#);
            let request = parse_request(text.as_bytes()).unwrap();
            let by_hand = plain_fields(Kind::User, &request);
            assert_eq!(by_hand.is_some(), plain, "{fields}");
            if by_hand.is_some() {
                assert_eq!(by_hand, by_serde(Kind::User, &request), "{fields}");
            }
        }
        let request =
            parse_request(br#"{"src":"c","body":{"type":"get_product","product_id":7}}"#).unwrap();
        assert_eq!(
            plain_fields(Kind::Product, &request),
            by_serde(Kind::Product, &request)
        );
        assert_eq!(
            plain_fields(Kind::Product, &request),
            Some((RecordId::Int(7), 0, false))
        );
    }
}
