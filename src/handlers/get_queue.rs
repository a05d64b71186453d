//! `get_queue`: the queue's depth, totals and the oldest pending requests.

use crate::node::Node;
use crate::protocol::RequestError;
use crate::protocol::reply::ReplyBody;
use crate::queue::{PendingItem, QUEUE_LISTING_LIMIT};
use serde::Serialize;
use std::time::Instant;

#[derive(Serialize)]
pub struct QueueStatus {
    depth: usize,
    processed: u64,
    dead_letters: usize,
    /// The oldest pending requests, at most [`QUEUE_LISTING_LIMIT`].
    pending: Vec<PendingItem>,
}

impl ReplyBody for QueueStatus {
    const TYPE: &'static str = "queue_status";
}

pub fn handle(node: &mut Node, now: Instant) -> Result<QueueStatus, RequestError> {
    Ok(QueueStatus {
        depth: node.queue.depth(),
        processed: node.queue.processed(),
        dead_letters: node.queue.dead_letters(),
        pending: node.queue.pending_items(now, QUEUE_LISTING_LIMIT),
    })
}
