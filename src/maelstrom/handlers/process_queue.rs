//! `process_queue`: an operator's "deliver now": every pending request is
//! tried in order, skipping retry waits but still respecting the breaker,
//! until one fails.

use super::Ctx;
use crate::core::Outcome;
use crate::protocol::reply::ReplyBody;
use serde::Serialize;

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

pub fn start(ctx: &mut Ctx<'_>) -> Option<super::Waiting> {
    ctx.core.process_queue(ctx.waiter, ctx.now);
    Some(super::Waiting::ProcessQueue)
}

pub fn resume(outcome: Outcome, ctx: &mut Ctx<'_>) -> Option<super::Waiting> {
    let Outcome::QueueProcessed {
        processed,
        remaining,
    } = outcome
    else {
        unreachable!("a queue run is answered with its totals");
    };
    ctx.reply(&QueueProcessed {
        processed,
        remaining,
    });
    None
}
