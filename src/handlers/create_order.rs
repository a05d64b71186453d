//! `create_order`: a write that is not lost. When the order service cannot
//! take it (down, failing, or its breaker open) it is queued durably and
//! delivered later; a repeat with the same idempotency key gets the first
//! outcome and never makes a second order.
//!
//! "Queued" is a promise that the order is on disk. When no journal can be
//! written the promise is not made: the order is refused with code 11,
//! unless the operator asked for a volatile queue, and then the reply says
//! `"durable": false`.

use crate::backend::{Service, ServiceDown};
use crate::node::Node;
use crate::planted_bug::{PlantedBug, is_planted};
use crate::protocol::reply::ReplyBody;
use crate::protocol::{RecordId, Request, RequestError};
use crate::queue::journal::UnjournaledOrders;
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

    fn queued(node: &Node, request_id: RequestId, queue_position: usize) -> Self {
        OrderResponse::Queued {
            status: OrderStatus::Queued,
            queued: true,
            request_id,
            queue_position,
            durable: node.journal.durable || node.queue.is_from_journal(request_id),
        }
    }

    /// What a repeat of an accepted request is told: where it stands now.
    fn for_existing(node: &Node, existing: &StoredOrder) -> Self {
        match existing.status {
            // Rows from the journal are validated, so a created order read
            // back always has its id.
            OrderStatus::Created => {
                Self::created(existing.order_id.clone().expect("created order has an id"))
            }
            OrderStatus::Queued => Self::queued(
                node,
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
/// restarts, journal or not, through the run's id.
fn anonymous_key(run_id: u64, request_id: RequestId) -> String {
    format!("anon:{run_id:016x}:{request_id}")
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
    let key = key.unwrap_or_else(|| anonymous_key(node.queue.run_id(), request_id));
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
    if !node.journal.durable && node.journal.unjournaled_orders == UnjournaledOrders::Refused {
        let reason = node
            .journal
            .degraded_reason
            .as_deref()
            .unwrap_or("no journal");
        return Err(RequestError::unavailable(format!(
            "not queued: the order service cannot take the order now and the queue is not \
             durable ({reason}); retry later"
        )));
    }
    let position = node
        .queue
        .enqueue(request_id, Some(key), Arc::from(order), now);
    tracing::debug!(request_id, position, "order queued");
    Ok(OrderResponse::queued(node, request_id, position))
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, Service};
    use crate::node::{Node, NodeConfig};
    use crate::queue::journal::{EarlierOrders, JournalInfo, UnjournaledOrders};
    use crate::queue::{OrderStatus, RecoveredQueue, SettledCounts, StoredOrder};
    use serde_json::value::RawValue;
    use serde_json::{Value, json};
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Instant;

    /// A node whose order service is down, resumed with `journal` and an
    /// order (request id 1, from msg_id 1) read from it.
    fn node_with_order_service_down(journal: JournalInfo, now: Instant) -> Node {
        let mut backend = Backend::demo();
        backend.set_available(Service::Order, false);
        let mut node = Node::new(NodeConfig::default(), backend, now);
        let on_disk = StoredOrder {
            request_id: 1,
            idempotency_key: Some("msg:c1:1".into()),
            order: Some(Arc::from(RawValue::from_string("{}".into()).unwrap())),
            status: OrderStatus::Queued,
            attempts: 0,
            order_id: None,
            was_queued: true,
        };
        let recovered = RecoveredQueue::from_rows(vec![on_disk], SettledCounts::default(), 7);
        node.recover(journal, recovered, now);
        node
    }

    fn create_order(node: &mut Node, msg_id: u64, now: Instant) -> Value {
        let message = json!({"src": "c1", "dest": "n1",
            "body": {"type": "create_order", "msg_id": msg_id, "order": {"sku": msg_id}}});
        node.handle_message(message.to_string().as_bytes(), 1, now);
        let output = node.take_output();
        let reply: Value = serde_json::from_slice(&output).unwrap();
        reply["body"].clone()
    }

    fn read_only(unjournaled: UnjournaledOrders) -> JournalInfo {
        JournalInfo::not_durable(
            Some(PathBuf::from("/data/n1.journal.sqlite")),
            "data dir is read-only",
            EarlierOrders::Visible,
            unjournaled,
        )
    }

    #[test]
    fn an_order_that_must_wait_is_refused_when_no_journal_can_hold_it() {
        let now = Instant::now();
        let mut node = node_with_order_service_down(read_only(UnjournaledOrders::Refused), now);
        let reply = create_order(&mut node, 2, now);
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], 11, "{reply}");
        assert!(
            reply["text"]
                .as_str()
                .unwrap()
                .contains("data dir is read-only"),
            "{reply}"
        );
        assert_eq!(node.queue().depth(), 1, "only the order on disk waits");
        assert!(
            node.take_journal_writes()
                .iter()
                .all(|row| row.request_id == 1),
            "no row for the refused order"
        );
    }

    #[test]
    fn a_volatile_queue_says_which_orders_are_not_on_disk() {
        let now = Instant::now();
        let mut node =
            node_with_order_service_down(read_only(UnjournaledOrders::KeptInMemory), now);
        let new = create_order(&mut node, 2, now);
        assert_eq!(new["status"], "queued", "{new}");
        assert_eq!(new["request_id"], 2, "{new}");
        assert_eq!(new["durable"], false, "{new}");
        assert_eq!(create_order(&mut node, 2, now)["durable"], false);
        // The order read from the journal is on disk: no caveat.
        let on_disk = create_order(&mut node, 1, now);
        assert_eq!(on_disk["request_id"], 1, "{on_disk}");
        assert_eq!(on_disk.get("durable"), None, "{on_disk}");
    }

    #[test]
    fn a_durable_queue_makes_no_caveat() {
        let now = Instant::now();
        let mut node = node_with_order_service_down(JournalInfo::durable(None), now);
        let reply = create_order(&mut node, 2, now);
        assert_eq!(reply["status"], "queued", "{reply}");
        assert_eq!(reply.get("durable"), None, "{reply}");
    }

    #[test]
    fn anonymous_keys_differ_between_runs() {
        let key = |run_id| super::anonymous_key(run_id, 1);
        assert_ne!(key(1), key(2));
        assert_eq!(key(0x2a), "anon:000000000000002a:1");
    }
}
