//! The node: grace's whole behaviour as a state machine without I/O.
//!
//! The node takes framed messages and the current instant and produces reply
//! lines; [`Node::poll_timeout`] and [`Node::handle_timeout`] do the work that
//! time triggers (a breaker leaving `open`, a queued order's next delivery).
//! It reads no clock and touches no file or socket, so every behaviour,
//! timeouts and backoffs included, is tested by passing instants. The
//! runtime (`runtime.rs`) moves the bytes, feeds the clock and commits the
//! queue's journal rows before it writes the replies.

use crate::backend::{Backend, Record, Service, ServiceDown};
use crate::breaker::{BreakerConfig, BreakerState, CircuitBreaker, Transition};
use crate::cache::{self, FallbackCache};
use crate::handlers;
use crate::load_mode::LoadShedder;
use crate::planted_bug::{PlantedBug, is_planted};
use crate::protocol::reply::{self, ReplyBody, ReplyTo, UNNAMED_NODE_ID};
use crate::protocol::{self, RecordId, Rejected, Request, RequestError};
use crate::queue::journal::JournalInfo;
use crate::queue::{OrderQueue, OrderStatus, QueueConfig, RecoveredQueue, StoredOrder};
use std::time::{Duration, Instant};

/// Everything that shapes a node's behaviour; the runtime fills it from flags.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub breaker: BreakerConfig,
    pub cache_capacity: usize,
    pub cache_max_stale: Duration,
    pub queue: QueueConfig,
    /// Seeds the retry jitter, so a run can be replayed.
    pub seed: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            breaker: BreakerConfig::default(),
            cache_capacity: cache::DEFAULT_CAPACITY,
            cache_max_stale: cache::DEFAULT_MAX_STALE,
            queue: QueueConfig::default(),
            seed: 0,
        }
    }
}

/// Faults a request asks to have injected before it is served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// This many calls fail first (each recorded by the breaker), stopping
    /// as soon as the breaker opens.
    pub force_failures: u64,
    /// The service is down for this request's own call.
    pub service_unavailable: bool,
}

/// How a read was answered.
#[derive(Debug, Clone)]
pub enum ReadOutcome {
    /// The service answered.
    Fresh(Record),
    /// The service could not answer; this is the last good copy.
    Cached(Record),
}

/// Addresses a reply: from this node (its `init` id, else the request's
/// `dest`) back to the request's `src`.
fn reply_to<'a>(
    node_id: Option<&'a str>,
    request_dest: Option<&'a str>,
    client: &'a str,
    in_reply_to: Option<u64>,
) -> ReplyTo<'a> {
    ReplyTo {
        node_id: node_id.or(request_dest).unwrap_or(UNNAMED_NODE_ID),
        client,
        in_reply_to,
    }
}

/// The node's state. Handlers (in `handlers/`) reach into it through the
/// `pub(crate)` fields.
pub struct Node {
    pub(crate) config: NodeConfig,
    /// Set by `init`; until then replies come from the request's `dest`.
    pub(crate) node_id: Option<String>,
    pub(crate) backend: Backend,
    pub(crate) breakers: [CircuitBreaker; 3],
    pub(crate) cache: FallbackCache,
    pub(crate) shedder: LoadShedder,
    pub(crate) queue: OrderQueue,
    pub(crate) journal: JournalInfo,
    /// Reply lines not yet taken by the runtime.
    outbox: Vec<u8>,
    /// Breaker transitions since the last [`Node::take_transitions`], kept
    /// only when `record_transitions` is on (simulation and tests).
    transitions: Vec<(Service, Transition)>,
    record_transitions: bool,
    /// Lines that could not be answered at all.
    unaddressable: u64,
}

impl Node {
    /// A node in front of `backend`, its cache warmed as if every record of
    /// the backend's warm set had been fetched at `now`.
    pub fn new(config: NodeConfig, backend: Backend, now: Instant) -> Self {
        let mut cache = FallbackCache::new(config.cache_capacity, config.cache_max_stale);
        for (service, id, record) in backend.warm_records() {
            cache.store(service, id, record, now);
        }
        Node {
            breakers: Service::ALL.map(|_| CircuitBreaker::new(config.breaker)),
            cache,
            shedder: LoadShedder::default(),
            queue: OrderQueue::new(config.queue, config.seed),
            journal: JournalInfo::in_memory("no journal opened"),
            node_id: None,
            backend,
            config,
            outbox: Vec::new(),
            transitions: Vec::new(),
            record_transitions: false,
            unaddressable: 0,
        }
    }

    /// Resumes the queue from its journal; pending orders are due at `now`.
    pub fn recover(&mut self, journal: JournalInfo, recovered: RecoveredQueue, now: Instant) {
        let pending = recovered
            .orders
            .iter()
            .filter(|order| order.status == OrderStatus::Queued)
            .count();
        if pending > 0 {
            tracing::info!(
                pending,
                "resuming delivery of queued orders from the journal"
            );
        }
        self.journal = journal;
        self.queue.recover(recovered, now);
    }

    /// Handles one framed message that started on input line `line`.
    pub fn handle_message(&mut self, message: &[u8], line: u64, now: Instant) {
        match protocol::parse_request(message) {
            Ok(request) => self.dispatch(&request, now),
            Err(Rejected::Malformed {
                src,
                dest,
                msg_id,
                error,
            }) => {
                let to = reply_to(self.node_id.as_deref(), dest.as_deref(), &src, msg_id);
                reply::write_error(&mut self.outbox, to, &error);
            }
            Err(Rejected::Unaddressable(reason)) => {
                self.unaddressable += 1;
                tracing::warn!(line, "skipping input: {reason}");
            }
        }
    }

    fn dispatch(&mut self, request: &Request<'_>, now: Instant) {
        self.poll_breakers(now);
        handlers::dispatch(self, request, now);
        // A request may have let the queue's head become deliverable (a
        // breaker closed, a service came back): deliver before replying.
        self.deliver_due(now, false);
    }

    /// Writes `fields` as the reply to `request`.
    pub(crate) fn reply<B: ReplyBody>(&mut self, request: &Request<'_>, fields: &B) {
        if is_planted(PlantedBug::DropReply) && request.msg_id.is_some_and(|id| id % 7 == 3) {
            return;
        }
        let dest = request.dest.as_deref();
        let to = reply_to(self.node_id.as_deref(), dest, &request.src, request.msg_id);
        reply::write_reply(&mut self.outbox, to, fields);
    }

    /// Writes an `error` reply to `request`.
    pub(crate) fn reply_error(&mut self, request: &Request<'_>, error: &RequestError) {
        let dest = request.dest.as_deref();
        let to = reply_to(self.node_id.as_deref(), dest, &request.src, request.msg_id);
        reply::write_error(&mut self.outbox, to, error);
    }

    /// The next instant at which [`Self::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let breaker_wakeups = self.breakers.iter().filter_map(CircuitBreaker::reopens_at);
        let delivery = self.queue.next_attempt_at().map(|due| {
            // While the order breaker is open, the head waits for it.
            match self.breakers[Service::Order.index()].reopens_at() {
                Some(reopens) => due.max(reopens),
                None => due,
            }
        });
        breaker_wakeups.chain(delivery).min()
    }

    /// Does the work due at `now`: breakers whose wait is over half-open, and
    /// queued orders whose retry is due are delivered.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.poll_breakers(now);
        self.deliver_due(now, false);
    }

    fn poll_breakers(&mut self, now: Instant) {
        for service in Service::ALL {
            if let Some(transition) = self.breakers[service.index()].poll(now) {
                self.note_transition(service, transition);
            }
        }
    }

    /// Delivers pending orders, oldest first, while the order breaker lets
    /// calls through. Returns how many were created. A failed head waits
    /// out its backoff (at least [`crate::queue::MIN_RETRY_DELAY`], so one
    /// step attempts an order at most once whatever the retry flags), or is
    /// dead-lettered and makes way for the next. With `ignore_backoff` (an
    /// operator's `process_queue`) retry waits are skipped and the first
    /// failure stops the run, so order of arrival is kept.
    pub(crate) fn deliver_due(&mut self, now: Instant, ignore_backoff: bool) -> usize {
        let mut delivered = 0;
        while let Some(request_id) = self.queue.next_due(now, ignore_backoff) {
            if !self.call_permitted(Service::Order, now) {
                break;
            }
            let delivery_key = self
                .queue
                .find_by_request_id(request_id)
                .expect("pending order is known")
                .delivery_key();
            match self.backend.create_order(&delivery_key, false) {
                Ok(order_id) => {
                    self.record_outcome(Service::Order, Ok(()), now);
                    tracing::debug!(request_id, %order_id, "queued order delivered");
                    self.queue.record_delivered(request_id, order_id);
                    delivered += 1;
                }
                Err(ServiceDown) => {
                    self.record_outcome(Service::Order, Err(ServiceDown), now);
                    let status = self.queue.record_failed_attempt(request_id, now);
                    if status == OrderStatus::DeadLetter {
                        tracing::warn!(request_id, "order dead-lettered after its last attempt");
                    }
                    if ignore_backoff {
                        break;
                    }
                }
            }
        }
        delivered
    }

    /// Whether `service`'s breaker lets a call through now (half-opening it
    /// first if its wait is over).
    pub(crate) fn call_permitted(&mut self, service: Service, now: Instant) -> bool {
        let breaker = &mut self.breakers[service.index()];
        if let Some(transition) = breaker.poll(now) {
            self.note_transition(service, transition);
        }
        self.breakers[service.index()].state() != BreakerState::Open
            || is_planted(PlantedBug::CallThroughOpenBreaker)
    }

    /// Feeds a call's outcome to `service`'s breaker.
    pub(crate) fn record_outcome(
        &mut self,
        service: Service,
        outcome: Result<(), ServiceDown>,
        now: Instant,
    ) {
        let breaker = &mut self.breakers[service.index()];
        let transition = match outcome {
            Ok(()) => breaker.record_success(),
            Err(ServiceDown) => breaker.record_failure(now),
        };
        if let Some(transition) = transition {
            self.note_transition(service, transition);
        }
    }

    /// Makes `faults.force_failures` failed calls, stopping as soon as the
    /// breaker opens (an open breaker does not call, so a huge count costs
    /// no more than the threshold).
    pub(crate) fn inject_failures(&mut self, service: Service, faults: Faults, now: Instant) {
        for _ in 0..faults.force_failures {
            if !self.call_permitted(service, now) {
                break;
            }
            let outcome = self.backend.fail_call(service);
            self.record_outcome(service, outcome, now);
        }
    }

    /// A read through `service`'s breaker, falling back to the cache when the
    /// service cannot answer. `Ok(None)` is a definite not-found.
    pub(crate) fn read_through(
        &mut self,
        service: Service,
        id: &RecordId,
        faults: Faults,
        now: Instant,
    ) -> Result<Option<ReadOutcome>, RequestError> {
        self.inject_failures(service, faults, now);
        if self.call_permitted(service, now) {
            match self.backend.fetch(service, id, faults.service_unavailable) {
                Ok(found) => {
                    self.record_outcome(service, Ok(()), now);
                    let Some(record) = found else {
                        return Ok(None);
                    };
                    if is_planted(PlantedBug::CacheWhileServiceUp)
                        && let Some(copy) = self.cache.fallback(service, id, now)
                    {
                        return Ok(Some(ReadOutcome::Cached(copy.record)));
                    }
                    self.cache.store(service, id.clone(), record.clone(), now);
                    return Ok(Some(ReadOutcome::Fresh(record)));
                }
                Err(ServiceDown) => self.record_outcome(service, Err(ServiceDown), now),
            }
        }
        match self.cache.fallback(service, id, now) {
            Some(copy) => Ok(Some(ReadOutcome::Cached(copy.record))),
            None => Err(RequestError::unavailable(format!(
                "{service} service cannot answer for id {id} and no cached copy exists"
            ))),
        }
    }

    fn note_transition(&mut self, service: Service, transition: Transition) {
        tracing::info!(
            %service,
            from = %transition.from,
            to = %transition.to,
            reason = %transition.reason,
            "circuit breaker transition"
        );
        if self.record_transitions {
            self.transitions.push((service, transition));
        }
    }

    /// Keeps every breaker transition for [`Self::take_transitions`].
    pub fn record_transitions(&mut self, on: bool) {
        self.record_transitions = on;
    }

    /// Breaker transitions since the last call (when recording is on).
    pub fn take_transitions(&mut self) -> Vec<(Service, Transition)> {
        std::mem::take(&mut self.transitions)
    }

    /// Reply lines written since the last call, each ending in `\n`.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outbox)
    }

    /// Appends the pending reply lines to `out`, leaving the outbox empty
    /// (and its allocation in place).
    pub fn drain_output_into(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.outbox);
    }

    /// Bytes of replies waiting to be taken.
    pub fn output_len(&self) -> usize {
        self.outbox.len()
    }

    /// Journal rows to commit before the replies now in the outbox go out.
    pub fn take_journal_writes(&mut self) -> Vec<StoredOrder> {
        self.queue.take_writes()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Hands the simulated services back, e.g. to restart a node in front of
    /// the same backend.
    pub fn into_backend(self) -> Backend {
        self.backend
    }

    pub fn breaker(&self, service: Service) -> &CircuitBreaker {
        &self.breakers[service.index()]
    }

    pub fn queue(&self) -> &OrderQueue {
        &self.queue
    }

    pub fn load_shedder(&self) -> &LoadShedder {
        &self.shedder
    }

    pub fn journal_info(&self) -> &JournalInfo {
        &self.journal
    }

    /// Input lines that were skipped because no reply could be addressed.
    pub fn unaddressable_lines(&self) -> u64 {
        self.unaddressable
    }
}
