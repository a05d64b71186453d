//! `create_order`: a write that is not lost. When the order service cannot
//! take it (down, failing, or its breaker open) it is queued durably and
//! delivered later; a repeat with the same idempotency key gets the first
//! outcome (waiting for it if the first is still being sent) and never
//! makes a second order.
//!
//! "Queued" is a promise that the order is on disk. When no journal can be
//! written the promise is not made: the order is refused with code 11,
//! unless the operator asked for a volatile queue, and then the reply says
//! `"durable": false`.

use super::Ctx;
use super::forced_failures::Forcing;
use crate::core::queue::{RequestId, StoredWrite, WriteStatus};
use crate::core::{NewWrite, Outcome, RepeatPolicy, WriteOutcome, WriteSnapshot};
use crate::demo::in_process::{DemoCall, DemoRequest, order_id_of};
use crate::protocol::reply::ReplyBody;
use crate::protocol::{RecordId, Request, RequestError};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;

#[derive(Deserialize)]
struct CreateOrder {
    order: Box<RawValue>,
    #[serde(default)]
    idempotency_key: Option<RecordId>,
    #[serde(default)]
    force_failures: u64,
    #[serde(default)]
    service_unavailable: bool,
}

/// The order's status as the wire names it.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Queued,
    Created,
    DeadLetter,
}

/// The three outcomes, each with exactly its documented keys.
#[derive(Serialize)]
#[serde(untagged)]
pub enum OrderResponse {
    Created {
        status: OrderStatus,
        queued: bool,
        order_id: String,
    },
    Queued {
        status: OrderStatus,
        queued: bool,
        request_id: RequestId,
        queue_position: usize,
        /// Written (as `false`) only for an order held in memory.
        #[serde(skip_serializing_if = "is_on_disk")]
        durable: bool,
    },
    DeadLetter {
        status: OrderStatus,
        queued: bool,
        request_id: RequestId,
    },
}

impl ReplyBody for OrderResponse {
    const TYPE: &'static str = "order_response";
}

fn is_on_disk(durable: &bool) -> bool {
    *durable
}

impl OrderResponse {
    fn created(order_id: String) -> Self {
        OrderResponse::Created {
            status: OrderStatus::Created,
            queued: false,
            order_id,
        }
    }

    fn queued(request_id: RequestId, queue_position: usize, durable: bool) -> Self {
        OrderResponse::Queued {
            status: OrderStatus::Queued,
            queued: true,
            request_id,
            queue_position,
            durable,
        }
    }

    /// What a repeat of an accepted request is told: where it stands now.
    fn for_existing(snapshot: &WriteSnapshot) -> Self {
        let write: &StoredWrite = &snapshot.write;
        match write.status {
            // Rows are validated, so a created order always has its id.
            WriteStatus::Delivered => Self::created(write.result_id.clone().unwrap_or_default()),
            WriteStatus::Queued => Self::queued(
                write.request_id,
                snapshot.position.unwrap_or(1),
                snapshot.durable,
            ),
            WriteStatus::DeadLetter => OrderResponse::DeadLetter {
                status: OrderStatus::DeadLetter,
                queued: false,
                request_id: write.request_id,
            },
        }
    }
}

/// The key that makes a repeat recognisable: the client's own, or else the
/// request's `src` and `msg_id`; none when the request has neither. It is
/// also the key the order service deduplicates on, so a client retrying a
/// create whose reply was lost in a crash finds its first order. The kinds
/// are namespaced so they cannot collide.
fn idempotency_key(request: &Request<'_>, explicit: Option<RecordId>) -> Option<String> {
    match (explicit, request.msg_id) {
        (Some(key), _) => Some(format!("key:{}", serde_json::to_string(&key).ok()?)),
        (None, Some(msg_id)) => Some(format!("msg:{}:{msg_id}", request.src)),
        (None, None) => None,
    }
}

/// The delivery key of a request no client can repeat: unique across
/// restarts, journal or not, through the run's id.
fn anonymous_key(run_id: u64, sequence: u64) -> String {
    format!("anon:{run_id:016x}:{sequence}")
}

/// A create waiting for its forced failures, then for its write.
pub struct Waiting {
    forcing: Option<Forcing>,
    write: Option<NewWrite<DemoCall>>,
}

pub fn start(request: &Request<'_>, ctx: &mut Ctx<'_>) -> Option<super::Waiting> {
    let CreateOrder {
        order,
        idempotency_key: explicit_key,
        force_failures,
        service_unavailable,
    } = match request.parse_body() {
        Ok(parsed) => parsed,
        Err(error) => {
            ctx.reply_error(&error);
            return None;
        }
    };
    if !order.get().starts_with('{') {
        ctx.reply_error(&RequestError::malformed("order: must be an object"));
        return None;
    }
    let key = idempotency_key(request, explicit_key).unwrap_or_else(|| {
        ctx.node.anonymous_orders += 1;
        anonymous_key(ctx.core.queue().run_id(), ctx.node.anonymous_orders)
    });
    let repeat = ctx.core.knows_write(&key);
    let create = DemoCall::new(DemoRequest::CreateOrder {
        idempotency_key: key.clone(),
    });
    let write = NewWrite {
        idempotency_key: key,
        fingerprint: None,
        public_id: None,
        stored: Arc::from(order),
        direct: create.failing_if(service_unavailable),
    };
    // A repeat is told where its first stands, and changes nothing.
    let forcing = if repeat {
        None
    } else {
        Forcing::start(force_failures, ctx.node.services.order, ctx)
    };
    let mut waiting = Waiting {
        forcing,
        write: Some(write),
    };
    if waiting.forcing.is_none() {
        send_write(&mut waiting, ctx);
    }
    Some(super::Waiting::CreateOrder(waiting))
}

fn send_write(waiting: &mut Waiting, ctx: &mut Ctx<'_>) {
    let write = waiting.write.take().expect("the write is sent once");
    let order = ctx.node.services.order;
    ctx.core
        .write(ctx.waiter, order, write, RepeatPolicy::AwaitFirst, ctx.now);
}

pub fn resume(mut waiting: Waiting, outcome: Outcome, ctx: &mut Ctx<'_>) -> Option<super::Waiting> {
    if let Some(forcing) = waiting.forcing.take() {
        waiting.forcing = forcing.next(&outcome, ctx.node.services.order, ctx);
        if waiting.forcing.is_none() {
            send_write(&mut waiting, ctx);
        }
        return Some(super::Waiting::CreateOrder(waiting));
    }
    let Outcome::Write(outcome) = outcome else {
        unreachable!("a create is answered with a write outcome");
    };
    let reply = match outcome {
        WriteOutcome::Delivered { response, .. } => match order_id_of(&response.body) {
            Some(order_id) => Ok(OrderResponse::created(order_id)),
            None => Err(RequestError::unavailable(
                "the order service answered without an order id",
            )),
        },
        WriteOutcome::Queued {
            request_id,
            position,
            durable,
        } => Ok(OrderResponse::queued(request_id, position, durable)),
        WriteOutcome::Repeat(snapshot) => Ok(OrderResponse::for_existing(&snapshot)),
        WriteOutcome::InFlight => Err(RequestError::unavailable(
            "an order with this key is being created; retry to learn its outcome",
        )),
        WriteOutcome::Refused { reason } => Err(RequestError::unavailable(format!(
            "not queued: the order service cannot take the order now and the queue is not \
             durable ({reason}); retry later"
        ))),
    };
    ctx.respond(reply);
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn anonymous_keys_differ_between_runs() {
        let key = |run_id| super::anonymous_key(run_id, 1);
        assert_ne!(key(1), key(2));
        assert_eq!(key(0x2a), "anon:000000000000002a:1");
    }
}
