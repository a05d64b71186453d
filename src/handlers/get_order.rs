//! `get_order`: where an accepted order stands, by request id or order id.
//!
//! "No such order" (code 20) is a definite answer, given only when the node
//! has read every order on disk for its node id. When a journal exists that
//! it could not read, an order it does not know of may be in there: the
//! answer is then code 11, with the reason.

use crate::node::Node;
use crate::protocol::reply::ReplyBody;
use crate::protocol::{Request, RequestError};
use crate::queue::journal::EarlierOrders;
use crate::queue::{OrderStatus, RequestId};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct GetOrder {
    #[serde(default)]
    request_id: Option<RequestId>,
    #[serde(default)]
    order_id: Option<String>,
}

#[derive(Serialize)]
pub struct OrderStatusReply {
    request_id: RequestId,
    status: OrderStatus,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<String>,
}

impl ReplyBody for OrderStatusReply {
    const TYPE: &'static str = "order_status";
}

pub fn handle(node: &mut Node, request: &Request<'_>) -> Result<OrderStatusReply, RequestError> {
    let GetOrder {
        request_id,
        order_id,
    } = request.parse_body()?;
    let found = match (request_id, order_id.as_deref()) {
        (Some(request_id), _) => node.queue.find_by_request_id(request_id),
        (None, Some(order_id)) => node.queue.find_by_order_id(order_id),
        (None, None) => {
            return Err(RequestError::malformed(
                "request_id: missing field (or give order_id)",
            ));
        }
    };
    let Some(order) = found else {
        let which = match (request_id, order_id) {
            (Some(request_id), _) => format!("request_id {request_id}"),
            (None, Some(order_id)) => format!("order_id {order_id:?}"),
            (None, None) => unreachable!("checked above"),
        };
        if node.journal.earlier_orders == EarlierOrders::Unseen {
            let reason = node.journal.degraded_reason.as_deref().unwrap_or("unknown");
            return Err(RequestError::unavailable(format!(
                "cannot tell whether an order with {which} exists: the journal could not be \
                 read ({reason})"
            )));
        }
        return Err(RequestError::not_found(format!("no order with {which}")));
    };
    Ok(OrderStatusReply {
        request_id: order.request_id,
        status: order.status,
        attempts: order.attempts,
        order_id: order.order_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use crate::backend::Backend;
    use crate::node::{Node, NodeConfig};
    use crate::queue::RecoveredQueue;
    use crate::queue::journal::{EarlierOrders, JournalInfo, UnjournaledOrders};
    use serde_json::{Value, json};
    use std::time::Instant;

    fn get_order(journal: JournalInfo) -> Value {
        let now = Instant::now();
        let mut node = Node::new(NodeConfig::default(), Backend::demo(), now);
        node.recover(journal, RecoveredQueue::default(), now);
        let message = json!({"src": "c1", "dest": "n1",
            "body": {"type": "get_order", "msg_id": 1, "request_id": 5}});
        node.handle_message(message.to_string().as_bytes(), 1, now);
        let reply: Value = serde_json::from_slice(&node.take_output()).unwrap();
        reply["body"].clone()
    }

    #[test]
    fn an_unknown_order_is_definitely_absent_only_when_every_order_was_read() {
        assert_eq!(get_order(JournalInfo::durable(None))["code"], 20);
        let no_journal_anywhere = JournalInfo::not_durable(
            None,
            "cannot create data dir",
            EarlierOrders::Visible,
            UnjournaledOrders::Refused,
        );
        assert_eq!(get_order(no_journal_anywhere)["code"], 20);
        let unreadable = JournalInfo::not_durable(
            None,
            "locked by another grace process",
            EarlierOrders::Unseen,
            UnjournaledOrders::Refused,
        );
        let reply = get_order(unreadable);
        assert_eq!(reply["code"], 11, "{reply}");
        assert!(
            reply["text"].as_str().unwrap().contains("locked"),
            "{reply}"
        );
    }
}
