//! `process_queue`: an operator's "deliver now": every pending request is
//! tried in order, skipping retry waits but still respecting the breaker.

use crate::node::Node;
use crate::protocol::RequestError;
use crate::protocol::reply::ReplyBody;
use serde::Serialize;
use std::time::Instant;

#[derive(Serialize)]
pub struct QueueProcessed {
    /// Orders created by this run.
    processed: usize,
    /// Requests still pending.
    remaining: usize,
}

impl ReplyBody for QueueProcessed {
    const TYPE: &'static str = "queue_processed";
}

pub fn handle(node: &mut Node, now: Instant) -> Result<QueueProcessed, RequestError> {
    let processed = node.deliver_due(now, true);
    Ok(QueueProcessed {
        processed,
        remaining: node.queue.depth(),
    })
}
