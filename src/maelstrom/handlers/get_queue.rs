//! `get_queue`: the queue's depth, totals and the oldest pending requests.

use super::Ctx;
use crate::core::queue::{PendingItem, QUEUE_LISTING_LIMIT};
use crate::protocol::RequestError;
use crate::protocol::reply::ReplyBody;
use serde::Serialize;

#[derive(Serialize)]
pub struct QueueStatus {
    depth: usize,
    processed: u64,
    dead_letters: u64,
    /// The oldest pending requests, at most [`QUEUE_LISTING_LIMIT`].
    pending: Vec<PendingItem>,
}

impl ReplyBody for QueueStatus {
    const TYPE: &'static str = "queue_status";
}

pub fn handle(ctx: &mut Ctx<'_>) -> Result<QueueStatus, RequestError> {
    let queue = ctx.core.queue();
    let mut pending = queue.pending_items(ctx.now, QUEUE_LISTING_LIMIT);
    // No request is attempted while the order breaker is open, whatever its
    // own backoff says: an operator asking "when is the next attempt" is
    // told the later of the two, not "now" while nothing is being tried.
    if let Some(reopens_at) = ctx.core.breaker(ctx.node.services.order).reopens_at() {
        let breaker_wait_ms = reopens_at.saturating_duration_since(ctx.now).as_millis() as u64;
        for item in &mut pending {
            item.next_attempt_in_ms = item.next_attempt_in_ms.max(breaker_wait_ms);
        }
    }
    Ok(QueueStatus {
        depth: queue.depth(),
        processed: queue.processed(),
        dead_letters: queue.dead_letters(),
        pending,
    })
}
