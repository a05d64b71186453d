//! `get_status`: what an operator needs to see at a glance: the mode, what
//! is switched off, each breaker, the cache and the queue.

use super::Ctx;
use crate::core::Core;
use crate::core::ServiceId;
use crate::core::breaker::BreakerSnapshot;
use crate::core::load_mode::Mode;
use crate::core::queue::journal::UnjournaledOrders;
use crate::demo::in_process::DemoCall;
use crate::maelstrom::node::{NodeState, Waiter};
use crate::protocol::reply::ReplyBody;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Serialize)]
pub struct Status<'a> {
    mode: Mode,
    disabled_features: Vec<&'a str>,
    /// Features switched off by `set_feature`, whatever the mode.
    killed_features: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_usage: Option<f64>,
    circuits: Circuits,
    cache: CacheStatus,
    queue: QueueSection,
}

#[derive(Serialize)]
struct Circuits {
    user: CircuitStatus,
    product: CircuitStatus,
    order: CircuitStatus,
}

#[derive(Serialize)]
struct CircuitStatus {
    #[serde(flatten)]
    breaker: BreakerSnapshot,
    /// Calls that reached the service, failed or not.
    calls: u64,
}

#[derive(Serialize)]
struct CacheStatus {
    entries: usize,
    capacity: usize,
    max_stale_ms: u64,
    fallbacks_served: u64,
}

#[derive(Serialize)]
struct QueueSection {
    depth: usize,
    processed: u64,
    dead_letters: u64,
    durable: bool,
    journal: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    degraded_reason: Option<String>,
    /// When not durable: whether orders the service cannot take are kept
    /// in memory (`--volatile-queue`) or refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    volatile_queue: Option<bool>,
}

impl ReplyBody for Status<'_> {
    const TYPE: &'static str = "status";
}

pub fn handle(ctx: &mut Ctx<'_>) {
    let now = ctx.now;
    ctx.reply_with(|core, node, writer| writer.write(&status(core, node, now)));
}

fn status<'a>(core: &'a Core<Waiter, DemoCall>, node: &NodeState, now: Instant) -> Status<'a> {
    let circuit = |service: ServiceId| CircuitStatus {
        breaker: core.breaker(service).snapshot(now),
        calls: core.stats(service).calls,
    };
    let services = node.services;
    let shedder = core.shedder();
    let cache = core.cache();
    let queue = core.queue();
    let journal = core.journal();
    Status {
        mode: shedder.mode(),
        disabled_features: shedder.disabled_features(),
        killed_features: shedder.killed_features(),
        cpu_usage: shedder.last_cpu_usage(),
        circuits: Circuits {
            user: circuit(services.user),
            product: circuit(services.product),
            order: circuit(services.order),
        },
        cache: CacheStatus {
            entries: cache.len(),
            capacity: cache.capacity(),
            max_stale_ms: core.services().spec(services.user).max_stale.as_millis() as u64,
            fallbacks_served: cache.fallbacks_served(),
        },
        queue: QueueSection {
            depth: queue.depth(),
            processed: queue.processed(),
            dead_letters: queue.dead_letters(),
            durable: journal.durable,
            journal: journal.path.clone(),
            degraded_reason: journal.degraded_reason.clone(),
            volatile_queue: (!journal.durable)
                .then_some(journal.unjournaled_orders == UnjournaledOrders::KeptInMemory),
        },
    }
}
