//! The sans-IO core both front doors drive: breakers, the fallback cache,
//! request coalescing, load shedding and the durable write queue, with no
//! I/O and no clock.
//!
//! Events go in: a front door asks for a [`Core::read`] (with the cache as
//! fallback) or a [`Core::send`] (a plain call through the breaker) on
//! behalf of a *waiter*, its own token for the request that wants the
//! answer; a runtime reports how a call went ([`Core::complete`]); time
//! passes ([`Core::handle_timeout`]). Effects come out: calls to make
//! ([`Core::poll_call`]), answers for waiters ([`Core::poll_outcome`]), and
//! the next instant anything is due ([`Core::poll_timeout`]).
//!
//! What the core never does: read a clock, open a socket, touch a file, or
//! know what its keys and payloads mean. The Maelstrom node and the HTTP
//! gateway are two drivers of it, and the simulation a third.

pub mod breaker;
pub mod cache;
pub mod call;
pub mod load_mode;
pub mod queue;
pub mod service;
pub mod writes;

pub use call::{
    Call, CallFailure, CallId, CallRequest, CallResult, Delivery, Headers, Response, Storage,
};
pub use service::{ServiceId, ServiceSpec, Services};
pub use writes::{NewWrite, RepeatPolicy, WriteOutcome, WriteSnapshot};

use crate::planted_bug::{PlantedBug, is_planted};
use breaker::{BreakerState, CallVerdict, CircuitBreaker, Permit, Refusal, Transition};
use cache::{CachedCopy, FallbackCache, ServiceKey};
use load_mode::{LoadShedder, ModePolicy};
use queue::{QueueConfig, WriteQueue};
use slab::Slab;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use writes::{WritePurpose, WriteState};

/// Breaker transitions kept per service for `status` pages.
pub const RECENT_TRANSITIONS: usize = 16;

/// Everything that shapes a core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub services: Services,
    /// Copies the fallback cache holds, all services together.
    pub cache_capacity: usize,
    pub modes: ModePolicy,
    pub queue: QueueConfig,
    /// Seeds the queue's retry jitter, so a run can be replayed.
    pub seed: u64,
    /// Reads the id a service gave a delivered write from its answer (the
    /// Maelstrom node's `order_id`); `None` where there is no such thing.
    pub result_id: fn(&Response) -> Option<String>,
    /// Makes the copy of an answer the fallback cache keeps.
    pub kept_copy: cache::KeptCopy,
}

impl CoreConfig {
    /// `services` with every other setting at its default.
    pub fn new(services: Services) -> Self {
        CoreConfig {
            services,
            cache_capacity: cache::DEFAULT_CAPACITY,
            modes: ModePolicy::default(),
            queue: QueueConfig::default(),
            seed: 0,
            result_id: |_| None,
            kept_copy: Arc::clone,
        }
    }
}

/// Whether a read may share an identical read already in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Join the call in flight for the same (service, key), if any: one
    /// upstream call answers every waiter (request coalescing).
    Coalesce,
    /// Make a call of its own (its payload asks for something the others'
    /// does not, e.g. an injected fault).
    Alone,
}

/// Why a read could not be answered fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The breaker is open; probes are allowed from `until`.
    BreakerOpen { until: Instant },
    /// The breaker is half-open and every probe is out.
    ProbesOut,
    /// The call got no answer.
    Failed(CallFailure),
    /// The service answered with a status its policy counts as a failure.
    FailureStatus(u16),
}

/// What a read came to.
#[derive(Debug, Clone)]
pub enum ReadOutcome {
    /// The service answered (a status that is not a failure).
    Fresh(Arc<Response>),
    /// The service could not answer; this is the last good copy.
    Stale { copy: CachedCopy, cause: Cause },
    /// The service could not answer and no copy is young enough.
    Unavailable {
        cause: Cause,
        /// How long until the breaker lets a probe through, when it is open.
        retry_after: Option<Duration>,
    },
}

/// What a plain call came to.
#[derive(Debug, Clone)]
pub enum SendOutcome {
    /// The service answered; `failed` says whether its policy counts the
    /// status as a failure.
    Answered {
        response: Arc<Response>,
        failed: bool,
    },
    /// The call got no answer.
    Failed(CallFailure),
    /// The breaker refused the call.
    Refused {
        cause: Cause,
        retry_after: Option<Duration>,
    },
}

/// An answer for a waiter.
#[derive(Debug, Clone)]
pub enum Outcome {
    Read(ReadOutcome),
    Sent(SendOutcome),
    Write(WriteOutcome),
    /// An operator's `process_queue` run ended: writes it delivered, and
    /// writes still pending.
    QueueProcessed {
        processed: usize,
        remaining: usize,
    },
}

/// A breaker transition, when it happened, for whoever watches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransitionRecord {
    pub service: ServiceId,
    pub at: Instant,
    pub transition: Transition,
}

/// Counts per service, for `status` pages and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Calls handed to a runtime.
    pub calls: u64,
    /// Calls that failed (no answer, or a failure status).
    pub failures: u64,
    /// Calls failed by the core at their deadline.
    pub timeouts: u64,
    /// Reads that joined a call already in flight.
    pub coalesced: u64,
    /// Reads refused by the breaker.
    pub short_circuited: u64,
}

/// What a call in flight is for.
enum Purpose<W> {
    /// A read; every waiter gets the answer, or the fallback.
    Read {
        key: ServiceKey,
        waiters: Waiters<W>,
    },
    /// A plain call for one waiter.
    Send { waiter: W },
    /// A write: a direct attempt, or a queued write's delivery.
    Write(WritePurpose<W>),
}

/// One waiter, or several once reads are coalesced (no allocation for the
/// usual single one).
struct Waiters<W> {
    first: W,
    more: Vec<W>,
}

impl<W> Waiters<W> {
    fn one(first: W) -> Self {
        Waiters {
            first,
            more: Vec::new(),
        }
    }

    fn all(self) -> impl Iterator<Item = W> {
        std::iter::once(self.first).chain(self.more)
    }
}

/// A call handed to a runtime and not yet answered.
struct InFlight<W> {
    generation: u32,
    service: ServiceId,
    permit: Permit,
    started: Instant,
    purpose: Purpose<W>,
}

/// Per-service state.
struct ServiceState {
    spec: ServiceSpec,
    breaker: CircuitBreaker,
    stats: ServiceStats,
    /// Deadlines of this service's calls in the order they were made; all
    /// share the service's timeout, so the front is the earliest. Entries
    /// of calls already answered are dropped lazily.
    deadlines: VecDeque<(Instant, CallId)>,
    recent_transitions: VecDeque<TransitionRecord>,
}

/// The core. `W` is the front door's token for a request waiting on an
/// answer; `P` is what its runtime needs to make a call.
pub struct Core<W, P> {
    services: Vec<ServiceState>,
    names: Services,
    cache: FallbackCache,
    calls: Slab<InFlight<W>>,
    /// Bumped for every call, so a slot reused later gets a new id.
    next_generation: u32,
    /// The coalescible read in flight for each (service, key).
    reads_in_flight: HashMap<ServiceKey, CallId, foldhash::fast::RandomState>,
    /// Builds lookup keys without allocating.
    key_scratch: Vec<u8>,
    /// Answers that came after their call had timed out, and were ignored.
    late_answers: u64,
    outgoing: VecDeque<Call<P>>,
    outcomes: VecDeque<(W, Outcome)>,
    shedder: LoadShedder,
    writes: WriteState<W, P>,
    /// Every transition since the last [`Self::take_transitions`], when on.
    recorded_transitions: Option<Vec<TransitionRecord>>,
}

impl<W, P> Core<W, P> {
    pub fn new(config: CoreConfig) -> Self {
        let service_count = config.services.len();
        let queue = WriteQueue::new(
            config.queue,
            config.seed,
            config.services.iter().map(|(_, spec)| spec.name.as_str()),
        );
        let services = config
            .services
            .iter()
            .map(|(_, spec)| ServiceState {
                breaker: CircuitBreaker::new(spec.breaker),
                spec: spec.clone(),
                stats: ServiceStats::default(),
                deadlines: VecDeque::new(),
                recent_transitions: VecDeque::new(),
            })
            .collect();
        Core {
            services,
            names: config.services,
            cache: FallbackCache::new(config.cache_capacity, config.kept_copy),
            calls: Slab::new(),
            next_generation: 0,
            reads_in_flight: HashMap::default(),
            key_scratch: Vec::new(),
            late_answers: 0,
            outgoing: VecDeque::new(),
            outcomes: VecDeque::new(),
            shedder: LoadShedder::new(&config.modes),
            writes: WriteState::new(queue, service_count, config.result_id),
            recorded_transitions: None,
        }
    }

    /// Reads `key` of `service` for `waiter`: from the service when its
    /// breaker allows, else (or when the call fails) from the cache.
    /// `payload` makes what the runtime needs for the call, only if one is
    /// made (a read the breaker refuses, or one that joins a call in
    /// flight, builds nothing).
    pub fn read(
        &mut self,
        waiter: W,
        service: ServiceId,
        key: &[u8],
        payload: impl FnOnce() -> P,
        sharing: Sharing,
        now: Instant,
    ) {
        if sharing == Sharing::Coalesce
            && !is_planted(PlantedBug::NoCoalescing)
            && let Some(id) = self.read_in_flight(service, key)
        {
            if is_planted(PlantedBug::ReplyBeforeCallEnds) {
                let outcome = self.fallback(service, key, Cause::ProbesOut, now);
                self.outcomes.push_back((waiter, Outcome::Read(outcome)));
                return;
            }
            let call = self
                .calls
                .get_mut(id.slot())
                .expect("reads in flight are current");
            if let Purpose::Read { waiters, .. } = &mut call.purpose {
                waiters.more.push(waiter);
            }
            self.services[service.index()].stats.coalesced += 1;
            return;
        }
        self.read_with_call(waiter, service, key, payload, sharing, now)
    }

    /// The coalescible read of `key` in flight, if any.
    fn read_in_flight(&mut self, service: ServiceId, key: &[u8]) -> Option<CallId> {
        if self.reads_in_flight.is_empty() {
            return None;
        }
        self.key_scratch.clear();
        self.key_scratch.extend_from_slice(&service.key_prefix());
        self.key_scratch.extend_from_slice(key);
        self.reads_in_flight
            .get(self.key_scratch.as_slice())
            .copied()
    }

    fn read_with_call(
        &mut self,
        waiter: W,
        service: ServiceId,
        key: &[u8],
        payload: impl FnOnce() -> P,
        sharing: Sharing,
        now: Instant,
    ) {
        match self.acquire(service, now) {
            Ok(permit) => {
                let key = ServiceKey::new(service, key);
                let purpose = Purpose::Read {
                    key: key.clone(),
                    waiters: Waiters {
                        first: waiter,
                        more: Vec::new(),
                    },
                };
                let request = CallRequest::Send(payload());
                let id = self.start_call(service, permit, request, purpose, now);
                if sharing == Sharing::Coalesce {
                    self.reads_in_flight.insert(key, id);
                }
            }
            Err(cause) => {
                self.services[service.index()].stats.short_circuited += 1;
                let outcome = self.fallback(service, key, cause, now);
                self.outcomes.push_back((waiter, Outcome::Read(outcome)));
            }
        }
    }

    /// Makes a plain call for `waiter` through `service`'s breaker: no
    /// cache, no coalescing.
    pub fn send(&mut self, waiter: W, service: ServiceId, payload: P, now: Instant) {
        match self.acquire(service, now) {
            Ok(permit) => {
                let purpose = Purpose::Send { waiter };
                self.start_call(service, permit, CallRequest::Send(payload), purpose, now);
            }
            Err(cause) => {
                self.services[service.index()].stats.short_circuited += 1;
                let retry_after = self.retry_after(service, now);
                let refused = SendOutcome::Refused { cause, retry_after };
                self.outcomes.push_back((waiter, Outcome::Sent(refused)));
            }
        }
    }

    /// A permit from `service`'s breaker, or why not.
    fn acquire(&mut self, service: ServiceId, now: Instant) -> Result<Permit, Cause> {
        let (permit, transition) = self.services[service.index()].breaker.try_acquire(now);
        if let Some(transition) = transition {
            self.note_transition(service, transition, now);
        }
        permit.map_err(|refusal| match refusal {
            Refusal::Open { until } => Cause::BreakerOpen { until },
            Refusal::ProbesOut => Cause::ProbesOut,
        })
    }

    fn start_call(
        &mut self,
        service: ServiceId,
        permit: Permit,
        request: CallRequest<P>,
        purpose: Purpose<W>,
        now: Instant,
    ) -> CallId {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let slot = self.calls.insert(InFlight {
            generation,
            service,
            permit,
            started: now,
            purpose,
        });
        let id = CallId::new(slot, generation);
        let state = &mut self.services[service.index()];
        let deadline = now + state.spec.timeout;
        state.stats.calls += 1;
        state.deadlines.push_back((deadline, id));
        self.outgoing.push_back(Call {
            id,
            service,
            request,
            deadline,
        });
        id
    }

    /// The answer of a read that got none fresh: the cache's copy, or why not.
    fn fallback(
        &mut self,
        service: ServiceId,
        key: &[u8],
        cause: Cause,
        now: Instant,
    ) -> ReadOutcome {
        match self.cache.fallback(service, key, now) {
            Some(copy) => ReadOutcome::Stale { copy, cause },
            None => ReadOutcome::Unavailable {
                retry_after: self.retry_after(service, now),
                cause,
            },
        }
    }

    /// How long until `service`'s breaker lets a probe through.
    fn retry_after(&self, service: ServiceId, now: Instant) -> Option<Duration> {
        self.services[service.index()]
            .breaker
            .reopens_at()
            .map(|at| at.saturating_duration_since(now))
    }

    /// A runtime reports how call `id` went, at `now`. An answer to a call
    /// that already timed out (or was never made) is ignored and counted.
    pub fn complete(&mut self, id: CallId, result: CallResult, now: Instant) {
        let current = self.calls.get(id.slot()).is_some_and(|call| {
            call.generation == id.generation() || is_planted(PlantedBug::LateAnswerTakenAsCurrent)
        });
        if !current {
            self.late_answers += 1;
            tracing::debug!(
                call = id.0,
                "late answer ignored: its call had already ended"
            );
            return;
        }
        let call = self.calls.remove(id.slot());
        self.drop_answered_deadlines(call.service);
        let state = &mut self.services[call.service.index()];
        let failed = match &result {
            CallResult::Answered(response) => state.spec.is_failure_status(response.status),
            CallResult::Failed(_) => true,
        };
        let slow =
            now.saturating_duration_since(call.started) > state.spec.breaker.slow_call_duration;
        if failed {
            state.stats.failures += 1;
        }
        if matches!(result, CallResult::Failed(CallFailure::TimedOut)) {
            state.stats.timeouts += 1;
        }
        let transition = state
            .breaker
            .record(call.permit, CallVerdict { failed, slow }, now);
        if let Some(transition) = transition {
            self.note_transition(call.service, transition, now);
        }
        match call.purpose {
            Purpose::Read { key, waiters, .. } => {
                if self.reads_in_flight.get(&key) == Some(&id) {
                    self.reads_in_flight.remove(&key);
                }
                self.answer_read(call.service, key, waiters, result, failed, now);
            }
            Purpose::Send { waiter } => {
                let outcome = match result {
                    CallResult::Answered(response) => SendOutcome::Answered { response, failed },
                    CallResult::Failed(failure) => SendOutcome::Failed(failure),
                };
                self.outcomes.push_back((waiter, Outcome::Sent(outcome)));
            }
            Purpose::Write(purpose) => {
                self.complete_write(call.service, purpose, result, failed, now)
            }
        }
    }

    fn answer_read(
        &mut self,
        service: ServiceId,
        key: ServiceKey,
        waiters: Waiters<W>,
        result: CallResult,
        failed: bool,
        now: Instant,
    ) {
        let cause = match result {
            CallResult::Answered(response)
                if !failed && is_planted(PlantedBug::CacheWhileServiceUp) =>
            {
                // A planted bug: the cache answers although the service did.
                match self.cache.fallback(service, key.key(), now) {
                    Some(copy) => {
                        for waiter in waiters.all() {
                            let stale = ReadOutcome::Stale {
                                copy: copy.clone(),
                                cause: Cause::FailureStatus(response.status),
                            };
                            self.outcomes.push_back((waiter, Outcome::Read(stale)));
                        }
                        return;
                    }
                    None => Cause::FailureStatus(response.status),
                }
            }
            CallResult::Answered(response) if !failed => {
                if let Storage::Keep { max_stale } = response.storage {
                    let service_max = self.services[service.index()].spec.max_stale;
                    let max_stale = max_stale.map_or(service_max, |own| own.min(service_max));
                    self.cache.keep(key, &response, now, max_stale);
                }
                for waiter in waiters.all() {
                    let fresh = ReadOutcome::Fresh(Arc::clone(&response));
                    self.outcomes.push_back((waiter, Outcome::Read(fresh)));
                }
                return;
            }
            CallResult::Answered(response) => Cause::FailureStatus(response.status),
            CallResult::Failed(failure) => Cause::Failed(failure),
        };
        for waiter in waiters.all() {
            let outcome = self.fallback(service, key.key(), cause.clone(), now);
            self.outcomes.push_back((waiter, Outcome::Read(outcome)));
        }
    }

    /// Drops deadline entries at the front whose calls were answered.
    fn drop_answered_deadlines(&mut self, service: ServiceId) {
        let state = &mut self.services[service.index()];
        while let Some(&(_, id)) = state.deadlines.front() {
            let in_flight = self
                .calls
                .get(id.slot())
                .is_some_and(|call| call.generation == id.generation());
            if in_flight {
                break;
            }
            state.deadlines.pop_front();
        }
    }

    /// The next instant at which [`Self::handle_timeout`] has work to do: a
    /// breaker's wait ending, a call's deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.next_write_deadline();
        for state in &self.services {
            let call = state.deadlines.front().map(|&(deadline, _)| deadline);
            for due in [state.breaker.next_deadline(), call].into_iter().flatten() {
                next = Some(next.map_or(due, |next| next.min(due)));
            }
        }
        next
    }

    /// Does what is due at `now`: breakers whose wait is over change state,
    /// calls past their deadline fail as timed out, due deliveries start.
    pub fn handle_timeout(&mut self, now: Instant) {
        for index in 0..self.services.len() {
            let service = ServiceId::from_index(index);
            if let Some(transition) = self.services[index].breaker.poll(now) {
                self.note_transition(service, transition, now);
            }
            while let Some(&(deadline, id)) = self.services[index].deadlines.front() {
                if deadline > now {
                    break;
                }
                self.services[index].deadlines.pop_front();
                let in_flight = self
                    .calls
                    .get(id.slot())
                    .is_some_and(|call| call.generation == id.generation());
                if in_flight {
                    self.complete(id, CallResult::Failed(CallFailure::TimedOut), now);
                }
            }
        }
        self.handle_write_timeouts(now);
    }

    fn note_transition(&mut self, service: ServiceId, transition: Transition, now: Instant) {
        let state = &mut self.services[service.index()];
        tracing::info!(
            service = %state.spec.name,
            from = %transition.from,
            to = %transition.to,
            reason = %transition.reason,
            "circuit breaker transition"
        );
        let record = TransitionRecord {
            service,
            at: now,
            transition,
        };
        if state.recent_transitions.len() == RECENT_TRANSITIONS {
            state.recent_transitions.pop_front();
        }
        state.recent_transitions.push_back(record);
        if let Some(recorded) = &mut self.recorded_transitions {
            recorded.push(record);
        }
    }

    /// The next call for a runtime to make.
    pub fn poll_call(&mut self) -> Option<Call<P>> {
        self.outgoing.pop_front()
    }

    /// The next answer for a waiter.
    pub fn poll_outcome(&mut self) -> Option<(W, Outcome)> {
        self.outcomes.pop_front()
    }

    /// Keeps every breaker transition for [`Self::take_transitions`].
    pub fn record_transitions(&mut self, on: bool) {
        self.recorded_transitions = on.then(Vec::new);
    }

    /// Breaker transitions since the last call (when recording is on).
    pub fn take_transitions(&mut self) -> Vec<TransitionRecord> {
        self.recorded_transitions
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    pub fn services(&self) -> &Services {
        &self.names
    }

    pub fn breaker(&self, service: ServiceId) -> &CircuitBreaker {
        &self.services[service.index()].breaker
    }

    pub fn breaker_state(&self, service: ServiceId) -> BreakerState {
        self.services[service.index()].breaker.state()
    }

    pub fn stats(&self, service: ServiceId) -> ServiceStats {
        self.services[service.index()].stats
    }

    /// The last [`RECENT_TRANSITIONS`] transitions of `service`, oldest first.
    pub fn recent_transitions(
        &self,
        service: ServiceId,
    ) -> impl Iterator<Item = &TransitionRecord> {
        self.services[service.index()].recent_transitions.iter()
    }

    pub fn cache(&self) -> &FallbackCache {
        &self.cache
    }

    /// Keeps `response` as if fetched at `now` (the demo's warm start).
    pub fn warm_cache(
        &mut self,
        service: ServiceId,
        key: &[u8],
        response: Arc<Response>,
        now: Instant,
    ) {
        let max_stale = self.services[service.index()].spec.max_stale;
        self.cache
            .keep(ServiceKey::new(service, key), &response, now, max_stale);
    }

    pub fn shedder(&self) -> &LoadShedder {
        &self.shedder
    }

    pub fn shedder_mut(&mut self) -> &mut LoadShedder {
        &mut self.shedder
    }

    /// Answers that came after their call had timed out (or for a call
    /// never made), and were ignored.
    pub fn late_answers(&self) -> u64 {
        self.late_answers
    }

    /// Calls handed out and not yet answered or timed out.
    pub fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }
}

#[cfg(test)]
mod tests;
