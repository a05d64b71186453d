//! `create_order`: a write that is never refused. When the order service
//! cannot take it (down, failing, or its breaker open) it is queued durably
//! and delivered later; a repeat with the same idempotency key gets the
//! first outcome and never makes a second order.

use crate::backend::{Service, ServiceDown};
use crate::node::Node;
use crate::planted_bug::{PlantedBug, is_planted};
use crate::protocol::reply::ReplyBody;
use crate::protocol::{RecordId, Request, RequestError};
use crate::queue::{OrderStatus, RequestId, StoredOrder};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Instant;

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

impl OrderResponse {
    fn created(order_id: String) -> Self {
        OrderResponse::Created {
            status: OrderStatus::Created,
            queued: false,
            order_id,
        }
    }

    fn queued(request_id: RequestId, queue_position: usize) -> Self {
        OrderResponse::Queued {
            status: OrderStatus::Queued,
            queued: true,
            request_id,
            queue_position,
        }
    }

    /// What a repeat of an accepted request is told: where it stands now.
    fn for_existing(node: &Node, existing: &StoredOrder) -> Self {
        match existing.status {
            OrderStatus::Created => {
                Self::created(existing.order_id.clone().expect("created order has an id"))
            }
            OrderStatus::Queued => Self::queued(
                existing.request_id,
                node.queue.position(existing.request_id).unwrap_or(1),
            ),
            OrderStatus::DeadLetter => OrderResponse::DeadLetter {
                status: OrderStatus::DeadLetter,
                queued: false,
                request_id: existing.request_id,
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
/// restarts through the journal's epoch.
fn anonymous_key(epoch: u64, request_id: RequestId) -> String {
    format!("anon:{epoch}:{request_id}")
}

pub fn handle(
    node: &mut Node,
    request: &Request<'_>,
    now: Instant,
) -> Result<OrderResponse, RequestError> {
    let CreateOrder {
        order,
        idempotency_key: explicit_key,
        force_failures,
        service_unavailable,
    } = request.parse_body()?;
    if !order.get().starts_with('{') {
        return Err(RequestError::malformed("order: must be an object"));
    }
    let key = idempotency_key(request, explicit_key);
    let repeat = key.as_deref().and_then(|key| node.queue.find_by_key(key));
    if let Some(existing) = repeat.filter(|_| !is_planted(PlantedBug::IgnoreIdempotencyKey)) {
        return Ok(OrderResponse::for_existing(node, existing));
    }
    let faults = super::faults(force_failures, service_unavailable);
    node.inject_failures(Service::Order, faults, now);
    // Older queued orders go first; a new order may only skip the queue
    // when nothing is waiting in it.
    node.deliver_due(now, false);
    let request_id = node.queue.allocate_request_id();
    let key = key.unwrap_or_else(|| anonymous_key(node.queue.epoch(), request_id));
    if node.queue.depth() == 0 && node.call_permitted(Service::Order, now) {
        match node.backend.create_order(&key, service_unavailable) {
            Ok(order_id) => {
                node.record_outcome(Service::Order, Ok(()), now);
                node.queue
                    .record_created_directly(request_id, Some(key), order_id.clone(), now);
                return Ok(OrderResponse::created(order_id));
            }
            Err(ServiceDown) => node.record_outcome(Service::Order, Err(ServiceDown), now),
        }
    }
    let position = node
        .queue
        .enqueue(request_id, Some(key), Arc::from(order), now);
    tracing::debug!(request_id, position, "order queued");
    Ok(OrderResponse::queued(request_id, position))
}
