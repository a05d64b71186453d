//! `get_status`: what an operator needs to see at a glance: the mode, what
//! is switched off, each breaker, the cache and the queue.

use crate::backend::Service;
use crate::breaker::BreakerState;
use crate::load_mode::{Feature, Mode};
use crate::node::Node;
use crate::protocol::RequestError;
use crate::protocol::reply::ReplyBody;
use crate::queue::journal::UnjournaledOrders;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Serialize)]
pub struct Status {
    mode: Mode,
    disabled_features: Vec<Feature>,
    /// Features switched off by `set_feature`, whatever the mode.
    killed_features: Vec<Feature>,
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
    state: BreakerState,
    consecutive_failures: u32,
    /// The open wait that applies now (doubled by failed probes).
    open_timeout_ms: u64,
    /// Time until an open breaker lets a probe through.
    #[serde(skip_serializing_if = "Option::is_none")]
    half_open_in_ms: Option<u64>,
    times_opened: u64,
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

impl ReplyBody for Status {
    const TYPE: &'static str = "status";
}

pub fn handle(node: &mut Node, now: Instant) -> Result<Status, RequestError> {
    let circuit = |service: Service| {
        let breaker = node.breaker(service);
        CircuitStatus {
            state: breaker.state(),
            consecutive_failures: breaker.consecutive_failures(),
            open_timeout_ms: breaker.current_open_timeout().as_millis() as u64,
            half_open_in_ms: breaker
                .reopens_at()
                .map(|at| at.saturating_duration_since(now).as_millis() as u64),
            times_opened: breaker.times_opened(),
            calls: node.backend.calls(service),
        }
    };
    let circuits = Circuits {
        user: circuit(Service::User),
        product: circuit(Service::Product),
        order: circuit(Service::Order),
    };
    Ok(Status {
        mode: node.shedder.mode(),
        disabled_features: node.shedder.disabled_features(),
        killed_features: node.shedder.killed_features(),
        cpu_usage: node.shedder.last_cpu_usage(),
        circuits,
        cache: CacheStatus {
            entries: node.cache.len(),
            capacity: node.cache.capacity(),
            max_stale_ms: node.cache.max_stale().as_millis() as u64,
            fallbacks_served: node.cache.fallbacks_served(),
        },
        queue: QueueSection {
            depth: node.queue.depth(),
            processed: node.queue.processed(),
            dead_letters: node.queue.dead_letters(),
            durable: node.journal.durable,
            journal: node.journal.path.clone(),
            degraded_reason: node.journal.degraded_reason.clone(),
            volatile_queue: (!node.journal.durable)
                .then_some(node.journal.unjournaled_orders == UnjournaledOrders::KeptInMemory),
        },
    })
}
