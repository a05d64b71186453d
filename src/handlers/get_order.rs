//! `get_order`: where an accepted order stands, by request id or order id.

use crate::node::Node;
use crate::protocol::reply::ReplyBody;
use crate::protocol::{Request, RequestError};
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
        return Err(RequestError::not_found(format!("no order with {which}")));
    };
    Ok(OrderStatusReply {
        request_id: order.request_id,
        status: order.status,
        attempts: order.attempts,
        order_id: order.order_id.clone(),
    })
}
