//! `get_user` and `get_product`: a read through the service's breaker,
//! falling back to the last good copy. The two differ only in their service
//! and their reply's keys (`user`/`from_cache` with the circuit's state;
//! the seed's `product`/`_cached`).

use super::Ctx;
use super::forced_failures::Forcing;
use crate::core::{Outcome, ReadOutcome, ServiceId, Sharing};
use crate::demo::in_process::{DemoCall, DemoRequest};
use crate::protocol::{ErrorCode, RecordId, Request};
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
    let parsed = match kind {
        Kind::User => request
            .parse_body::<GetUser>()
            .map(|r| (r.user_id, r.force_failures, r.service_unavailable)),
        Kind::Product => request
            .parse_body::<GetProduct>()
            .map(|r| (r.product_id, r.force_failures, r.service_unavailable)),
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
            let name = waiting.kind.name();
            let id = &waiting.id;
            let text = format_args!("{name} {id} does not exist");
            ctx.reply_error_text(ErrorCode::KeyDoesNotExist, text);
            return None;
        }
        ReadOutcome::Fresh(response) => (&response.body, false),
        ReadOutcome::Stale { copy, .. } => (&copy.response.body, true),
        ReadOutcome::Unavailable { .. } => {
            let name = waiting.kind.name();
            let id = &waiting.id;
            let text =
                format_args!("{name} service cannot answer for id {id} and no cached copy exists");
            ctx.reply_error_text(ErrorCode::TemporarilyUnavailable, text);
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
