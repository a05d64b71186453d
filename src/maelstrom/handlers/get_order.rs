//! `get_order`: where an accepted order stands, by request id or order id.
//!
//! "No such order" (code 20) is a definite answer, given only when the node
//! has read every order on disk for its node id. When a journal exists that
//! it could not read, an order it does not know of may be in there: the
//! answer is then code 11, with the reason.

use super::Ctx;
use crate::core::queue::RequestId;
use crate::core::queue::journal::EarlierOrders;
use crate::protocol::reply::ReplyBody;
use crate::protocol::{Request, RequestError};
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
    status: &'static str,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<String>,
}

impl ReplyBody for OrderStatusReply {
    const TYPE: &'static str = "order_status";
}

pub fn handle(request: &Request<'_>, ctx: &mut Ctx<'_>) -> Result<OrderStatusReply, RequestError> {
    let GetOrder {
        request_id,
        order_id,
    } = request.parse_body()?;
    let queue = ctx.core.queue();
    let (found, which) = match (request_id, order_id.as_deref()) {
        (Some(request_id), _) => (
            queue.find_by_request_id(request_id),
            format!("request_id {request_id}"),
        ),
        (None, Some(order_id)) => (
            queue.find_by_result_id(order_id),
            format!("order_id {order_id:?}"),
        ),
        (None, None) => {
            return Err(RequestError::malformed(
                "request_id: missing field (or give order_id)",
            ));
        }
    };
    let Some(order) = found else {
        let journal = ctx.core.journal();
        if journal.earlier_orders == EarlierOrders::Unseen {
            let reason = journal.degraded_reason.as_deref().unwrap_or("unknown");
            return Err(RequestError::unavailable(format!(
                "cannot tell whether an order with {which} exists: the journal could not be \
                 read ({reason})"
            )));
        }
        return Err(RequestError::not_found(format!("no order with {which}")));
    };
    Ok(OrderStatusReply {
        request_id: order.request_id,
        status: order.status.as_str(),
        attempts: order.attempts,
        order_id: order.result_id.clone(),
    })
}
