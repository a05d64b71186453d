//! Writes through the core: sent straight to the service when it can take
//! them, accepted into the durable queue when it cannot, delivered later in
//! order of arrival, and never sent twice at once.
//!
//! Each service has a *lane*: at most one write call in flight (the head's
//! delivery, or a new write's direct attempt), and the writes that arrived
//! meanwhile waiting in line behind it. A new write goes straight to the
//! service only when the lane is idle and nothing is queued for it: older
//! writes go first. So a service sees one write at a time, in the order
//! they were accepted. A write waiting in line is decided when the lane
//! goes idle, or when it has waited as long as the service's timeout
//! (then it is queued: an accepted write is better than a client held
//! while a backlog drains).
//!
//! A repeat of an idempotency key is never sent again: it gets the first
//! write's outcome (the Maelstrom node waits for it when the first is still
//! in flight; the gateway answers `409` instead, as the front door chooses),
//! and the queue's journal rows come out as they change, for the runtime
//! to commit before any reply that promises them.

use super::call::{CallId, CallRequest, CallResult, Delivery, Response};
use super::queue::journal::{JournalInfo, UnjournaledOrders};
use super::queue::{
    Accepted, RecoveredQueue, RequestId, StoredResponse, StoredWrite, WriteQueue, WriteStatus,
};
use super::{Core, Outcome, Purpose, ServiceId, Waiters};
use crate::planted_bug::{PlantedBug, is_planted};
use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// A write a front door asks the core to make.
#[derive(Debug)]
pub struct NewWrite<P> {
    /// The key the service deduplicates on, and repeats are known by.
    pub idempotency_key: String,
    /// What the write says, hashed, when repeats must say the same.
    pub fingerprint: Option<String>,
    /// An id the front door gives a queued write (the gateway's unguessable
    /// `/grace/requests/{id}`).
    pub public_id: Option<String>,
    /// The write as the queue keeps it and delivers it later: a JSON object.
    pub stored: Arc<RawValue>,
    /// What the runtime needs to make the direct attempt.
    pub direct: P,
}

/// What a repeat of a key still in flight is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepeatPolicy {
    /// Wait for the first write's outcome and share it.
    AwaitFirst,
    /// Answer at once that the first is still being sent.
    Conflict,
}

/// What a write came to.
#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// The service took it directly; its answer.
    Delivered {
        request_id: RequestId,
        response: Arc<Response>,
    },
    /// Accepted into the queue; `durable` says whether it is in a journal
    /// (the reply may go out once the journal rows are committed).
    Queued {
        request_id: RequestId,
        position: usize,
        durable: bool,
    },
    /// A repeat of an accepted key: where the first stands now.
    Repeat(Box<WriteSnapshot>),
    /// A repeat of a key whose write is being sent right now.
    InFlight,
    /// The service cannot take it now and the queue cannot promise to keep
    /// it (no journal can be written, and no volatile queue was asked for);
    /// `reason` says why the journal cannot be written.
    Refused { reason: String },
}

/// An accepted write as a repeat or a status query sees it.
#[derive(Debug, Clone)]
pub struct WriteSnapshot {
    pub write: StoredWrite,
    /// Position in its service's line, while queued.
    pub position: Option<usize>,
    /// Whether it is in a journal.
    pub durable: bool,
}

/// A write waiting in its lane.
pub(super) struct Arrival<W, P> {
    waiters: Waiters<W>,
    write: NewWrite<P>,
    /// When it stops waiting and is queued.
    deadline: Instant,
}

/// One service's writes in motion.
pub(super) struct Lane<W, P> {
    /// The write call in flight, if any.
    in_flight: Option<CallId>,
    arrivals: VecDeque<Arrival<W, P>>,
    /// An operator's `process_queue` run is going through this lane.
    forced: bool,
}

impl<W, P> Default for Lane<W, P> {
    fn default() -> Self {
        Lane {
            in_flight: None,
            arrivals: VecDeque::new(),
            forced: false,
        }
    }
}

/// The write side of the core's state.
pub(super) struct WriteState<W, P> {
    pub(super) queue: WriteQueue,
    pub(super) journal: JournalInfo,
    pub(super) lanes: Vec<Lane<W, P>>,
    /// The id a service gave a delivered write, read from its answer.
    pub(super) result_id: fn(&Response) -> Option<String>,
    /// `process_queue` callers waiting for the run to end.
    queue_runs: Vec<W>,
    /// Writes delivered by the current run.
    run_delivered: usize,
}

impl<W, P> WriteState<W, P> {
    pub(super) fn new(
        queue: WriteQueue,
        services: usize,
        result_id: fn(&Response) -> Option<String>,
    ) -> Self {
        WriteState {
            queue,
            journal: JournalInfo::in_memory("no journal opened"),
            lanes: (0..services).map(|_| Lane::default()).collect(),
            result_id,
            queue_runs: Vec::new(),
            run_delivered: 0,
        }
    }
}

/// What a write call in flight is for.
pub(super) enum WritePurpose<W> {
    /// A new write's direct attempt; its waiters get the outcome.
    Direct {
        waiters: Waiters<W>,
        accepted: Accepted,
    },
    /// A queued write's delivery.
    Delivery { request_id: RequestId },
}

impl<W, P> Core<W, P> {
    /// Resumes the queue from its journal (`recovered`, as `journal` says
    /// it was read); pending writes are due at `now`.
    pub fn recover_queue(&mut self, journal: JournalInfo, recovered: RecoveredQueue, now: Instant) {
        let pending = recovered
            .writes
            .iter()
            .filter(|write| write.status == WriteStatus::Queued)
            .count();
        if pending > 0 {
            tracing::info!(
                pending,
                "resuming delivery of queued writes from the journal"
            );
        }
        for service in recovered
            .writes
            .iter()
            .filter(|write| write.status == WriteStatus::Queued)
            .map(|write| write.service.as_str())
        {
            if self.names.id(service).is_err() {
                tracing::warn!(
                    service,
                    "the journal holds queued writes for a service that is not configured; \
                     they wait until it is"
                );
            }
        }
        self.writes.journal = journal;
        self.writes.queue.recover(recovered, now);
    }

    /// Writes for `waiter` to `service`: directly when the service can take
    /// it now, else into the queue.
    pub fn write(
        &mut self,
        waiter: W,
        service: ServiceId,
        write: NewWrite<P>,
        repeat: RepeatPolicy,
        now: Instant,
    ) {
        let key = write.idempotency_key.as_str();
        if !is_planted(PlantedBug::IgnoreIdempotencyKey) {
            match self.join_write_in_progress(key, waiter, repeat) {
                Ok(()) => return,
                Err(waiter_back) => {
                    if let Some(snapshot) = self.accepted_write(key) {
                        let delivering = self.is_being_delivered(snapshot.write.request_id);
                        let outcome = if repeat == RepeatPolicy::Conflict && delivering {
                            WriteOutcome::InFlight
                        } else {
                            WriteOutcome::Repeat(Box::new(snapshot))
                        };
                        self.outcomes
                            .push_back((waiter_back, Outcome::Write(outcome)));
                        return;
                    }
                    return self.arrive(waiter_back, service, write, now);
                }
            }
        }
        self.arrive(waiter, service, write, now)
    }

    fn arrive(&mut self, waiter: W, service: ServiceId, write: NewWrite<P>, now: Instant) {
        let deadline = now + self.services[service.index()].spec.timeout;
        self.writes.lanes[service.index()]
            .arrivals
            .push_back(Arrival {
                waiters: Waiters::one(waiter),
                write,
                deadline,
            });
        self.settle_lane(service, now);
    }

    /// Adds `waiter` to a write of `key` that is in flight or waiting in a
    /// lane (or answers it `InFlight`); gives the waiter back if none is.
    fn join_write_in_progress(
        &mut self,
        key: &str,
        waiter: W,
        repeat: RepeatPolicy,
    ) -> Result<(), W> {
        let direct = self
            .calls
            .iter_mut()
            .find_map(|(_, call)| match &mut call.purpose {
                Purpose::Write(WritePurpose::Direct { waiters, accepted })
                    if accepted.idempotency_key.as_deref() == Some(key) =>
                {
                    Some(waiters)
                }
                _ => None,
            });
        let waiting = direct.or_else(|| {
            self.writes.lanes.iter_mut().find_map(|lane| {
                lane.arrivals
                    .iter_mut()
                    .find(|arrival| arrival.write.idempotency_key == key)
                    .map(|arrival| &mut arrival.waiters)
            })
        });
        let Some(waiters) = waiting else {
            return Err(waiter);
        };
        match repeat {
            RepeatPolicy::AwaitFirst => waiters.more.push(waiter),
            RepeatPolicy::Conflict => self
                .outcomes
                .push_back((waiter, Outcome::Write(WriteOutcome::InFlight))),
        }
        Ok(())
    }

    fn is_being_delivered(&self, request_id: RequestId) -> bool {
        self.writes.lanes.iter().any(|lane| {
            lane.in_flight.is_some_and(|id| {
                matches!(
                    self.calls.get(id.slot()).map(|call| &call.purpose),
                    Some(Purpose::Write(WritePurpose::Delivery { request_id: delivering }))
                        if *delivering == request_id
                )
            })
        })
    }

    /// The accepted write of `key`, as a repeat sees it.
    pub fn accepted_write(&self, key: &str) -> Option<WriteSnapshot> {
        let write = self.writes.queue.find_by_key(key)?;
        Some(self.snapshot(write))
    }

    /// Whether a write of `key` is accepted, in flight or waiting in a lane:
    /// a repeat, that must not be made again.
    pub fn knows_write(&self, key: &str) -> bool {
        if is_planted(PlantedBug::IgnoreIdempotencyKey) {
            return false;
        }
        self.writes.queue.find_by_key(key).is_some()
            || self.calls.iter().any(|(_, call)| {
                matches!(&call.purpose, Purpose::Write(WritePurpose::Direct { accepted, .. })
                    if accepted.idempotency_key.as_deref() == Some(key))
            })
            || self.writes.lanes.iter().any(|lane| {
                lane.arrivals
                    .iter()
                    .any(|arrival| arrival.write.idempotency_key == key)
            })
    }

    /// A stored write as status queries see it.
    pub fn snapshot(&self, write: &StoredWrite) -> WriteSnapshot {
        WriteSnapshot {
            position: self.writes.queue.position(write.request_id),
            durable: self.writes.journal.durable
                || self.writes.queue.is_from_journal(write.request_id),
            write: write.clone(),
        }
    }

    /// Delivers what can go and decides the writes waiting in `service`'s
    /// lane, until a call is in flight or nothing is left to do.
    fn settle_lane(&mut self, service: ServiceId, now: Instant) {
        loop {
            self.pump(service, now);
            let lane = &mut self.writes.lanes[service.index()];
            if lane.in_flight.is_some() {
                break;
            }
            let Some(arrival) = lane.arrivals.pop_front() else {
                break;
            };
            self.decide(service, arrival, now);
        }
        self.end_queue_run_if_done();
    }

    /// Starts the delivery of `service`'s head write if it is due and the
    /// breaker lets it through.
    fn pump(&mut self, service: ServiceId, now: Instant) {
        let index = service.index();
        if self.writes.lanes[index].in_flight.is_some()
            && !is_planted(PlantedBug::SecondDeliveryInFlight)
        {
            return;
        }
        let forced = self.writes.lanes[index].forced;
        let Some(head) = self.writes.queue.next_due(service, now, forced) else {
            self.writes.lanes[index].forced = false;
            return;
        };
        let delivery = Delivery {
            request_id: head.request_id,
            idempotency_key: Arc::from(head.delivery_key()),
            payload: head
                .payload
                .as_ref()
                .map(|payload| Bytes::copy_from_slice(payload.get().as_bytes()))
                .unwrap_or_default(),
        };
        match self.acquire(service, now) {
            Ok(permit) => {
                let purpose = Purpose::Write(WritePurpose::Delivery {
                    request_id: delivery.request_id,
                });
                let id = self.start_call(
                    service,
                    permit,
                    CallRequest::Deliver(delivery),
                    purpose,
                    now,
                );
                self.writes.lanes[index].in_flight = Some(id);
            }
            // The breaker holds the line; its reopening wakes it.
            Err(_) => self.writes.lanes[index].forced = false,
        }
    }

    /// Decides a write whose turn has come: straight to the service if
    /// nothing is queued for it and the breaker allows, else the queue.
    fn decide(&mut self, service: ServiceId, arrival: Arrival<W, P>, now: Instant) {
        let name = self.services[service.index()].spec.name.clone();
        if self.writes.queue.depth_of(service) == 0
            && let Ok(permit) = self.acquire(service, now)
        {
            let Arrival { waiters, write, .. } = arrival;
            let NewWrite {
                idempotency_key,
                fingerprint,
                public_id,
                stored,
                direct,
            } = write;
            let accepted = Accepted {
                request_id: self.writes.queue.allocate_request_id(),
                service: name,
                idempotency_key: Some(idempotency_key),
                public_id,
                fingerprint,
                payload: stored,
            };
            let purpose = Purpose::Write(WritePurpose::Direct { waiters, accepted });
            let id = self.start_call(service, permit, CallRequest::Send(direct), purpose, now);
            self.writes.lanes[service.index()].in_flight = Some(id);
            return;
        }
        let Arrival { waiters, write, .. } = arrival;
        let accepted = Accepted {
            request_id: self.writes.queue.allocate_request_id(),
            service: name,
            idempotency_key: Some(write.idempotency_key),
            public_id: write.public_id,
            fingerprint: write.fingerprint,
            payload: write.stored,
        };
        self.enqueue_or_refuse(waiters, accepted, now);
    }

    /// Queues `accepted` for its waiters, unless the queue cannot keep the
    /// promise a "queued" answer makes.
    fn enqueue_or_refuse(&mut self, waiters: Waiters<W>, accepted: Accepted, now: Instant) {
        let journal = &self.writes.journal;
        if !journal.durable && journal.unjournaled_orders == UnjournaledOrders::Refused {
            let reason = journal
                .degraded_reason
                .clone()
                .unwrap_or_else(|| "no journal".into());
            for waiter in waiters.all() {
                let refused = WriteOutcome::Refused {
                    reason: reason.clone(),
                };
                self.outcomes.push_back((waiter, Outcome::Write(refused)));
            }
            return;
        }
        let request_id = accepted.request_id;
        let position = self.writes.queue.enqueue(accepted, now);
        tracing::debug!(request_id, position, "write queued");
        let durable = self.writes.journal.durable;
        for waiter in waiters.all() {
            let queued = WriteOutcome::Queued {
                request_id,
                position,
                durable,
            };
            self.outcomes.push_back((waiter, Outcome::Write(queued)));
        }
    }

    /// A write call ended.
    pub(super) fn complete_write(
        &mut self,
        service: ServiceId,
        purpose: WritePurpose<W>,
        result: CallResult,
        failed: bool,
        now: Instant,
    ) {
        self.writes.lanes[service.index()].in_flight = None;
        let answer = match result {
            CallResult::Answered(response) if !failed => Some(response),
            _ => None,
        };
        match purpose {
            WritePurpose::Direct { waiters, accepted } => match answer {
                Some(response) => {
                    let request_id = accepted.request_id;
                    let result_id = (self.writes.result_id)(&response);
                    let stored = StoredResponse::of(&response);
                    self.writes
                        .queue
                        .record_delivered_directly(accepted, result_id, stored, now);
                    for waiter in waiters.all() {
                        let delivered = WriteOutcome::Delivered {
                            request_id,
                            response: Arc::clone(&response),
                        };
                        self.outcomes.push_back((waiter, Outcome::Write(delivered)));
                    }
                }
                None => self.enqueue_or_refuse(waiters, accepted, now),
            },
            WritePurpose::Delivery { request_id } => match answer {
                Some(response) => {
                    let result_id = (self.writes.result_id)(&response);
                    tracing::debug!(request_id, "queued write delivered");
                    self.writes.queue.record_delivered(
                        request_id,
                        result_id,
                        StoredResponse::of(&response),
                    );
                    if self.writes.lanes[service.index()].forced {
                        self.writes.run_delivered += 1;
                    }
                }
                None => {
                    let status = self.writes.queue.record_failed_attempt(request_id, now);
                    if status == WriteStatus::DeadLetter {
                        tracing::warn!(request_id, "write dead-lettered after its last attempt");
                    }
                    // An operator's run stops at the first failure, so the
                    // order of arrival is kept.
                    self.writes.lanes[service.index()].forced = false;
                }
            },
        }
        self.settle_lane(service, now);
    }

    /// An operator's "deliver now": every service's pending writes are
    /// tried in order, skipping retry waits but still respecting the
    /// breaker, until one fails. `waiter` gets [`Outcome::QueueProcessed`]
    /// when the run ends.
    pub fn process_queue(&mut self, waiter: W, now: Instant) {
        self.writes.queue_runs.push(waiter);
        for lane in &mut self.writes.lanes {
            lane.forced = true;
        }
        for index in 0..self.writes.lanes.len() {
            self.settle_lane(ServiceId::from_index(index), now);
        }
        self.end_queue_run_if_done();
    }

    fn end_queue_run_if_done(&mut self) {
        if self.writes.queue_runs.is_empty() || self.writes.lanes.iter().any(|lane| lane.forced) {
            return;
        }
        let processed = std::mem::take(&mut self.writes.run_delivered);
        let remaining = self.writes.queue.depth();
        for waiter in std::mem::take(&mut self.writes.queue_runs) {
            self.outcomes.push_back((
                waiter,
                Outcome::QueueProcessed {
                    processed,
                    remaining,
                },
            ));
        }
    }

    /// Time-driven write work at `now`: due deliveries start, and writes
    /// that waited in line as long as their service's timeout are queued.
    pub(super) fn handle_write_timeouts(&mut self, now: Instant) {
        let queue_idle = !self.writes.queue.has_pending();
        for index in 0..self.writes.lanes.len() {
            let lane = &self.writes.lanes[index];
            if queue_idle && lane.arrivals.is_empty() && !lane.forced {
                continue;
            }
            let service = ServiceId::from_index(index);
            while self.writes.lanes[index]
                .arrivals
                .front()
                .is_some_and(|arrival| arrival.deadline <= now)
            {
                let arrival = self.writes.lanes[index]
                    .arrivals
                    .pop_front()
                    .expect("checked");
                let name = self.services[index].spec.name.clone();
                let Arrival { waiters, write, .. } = arrival;
                let accepted = Accepted {
                    request_id: self.writes.queue.allocate_request_id(),
                    service: name,
                    idempotency_key: Some(write.idempotency_key),
                    public_id: write.public_id,
                    fingerprint: write.fingerprint,
                    payload: write.stored,
                };
                self.enqueue_or_refuse(waiters, accepted, now);
            }
            self.settle_lane(service, now);
        }
    }

    /// The next instant write work is due: a lane's waiting write giving
    /// up, or a queued write's next attempt (not before its breaker lets
    /// calls through).
    pub(super) fn next_write_deadline(&self) -> Option<Instant> {
        if !self.writes.queue.has_pending()
            && self
                .writes
                .lanes
                .iter()
                .all(|lane| lane.arrivals.is_empty())
        {
            return None;
        }
        self.writes
            .lanes
            .iter()
            .enumerate()
            .flat_map(|(index, lane)| {
                let arrival = lane.arrivals.front().map(|arrival| arrival.deadline);
                let state = &self.services[index];
                // A half-open breaker whose probes are all out frees the
                // line only when one ends: a call's deadline already wakes
                // the core then.
                let delivery = (lane.in_flight.is_none() && !state.breaker.awaits_probes())
                    .then(|| {
                        self.writes
                            .queue
                            .next_attempt_at(ServiceId::from_index(index))
                    })
                    .flatten()
                    .map(|due| match state.breaker.reopens_at() {
                        Some(reopens) => due.max(reopens),
                        None => due,
                    });
                arrival.into_iter().chain(delivery)
            })
            .min()
    }

    /// The write queue.
    pub fn queue(&self) -> &WriteQueue {
        &self.writes.queue
    }

    /// How the queue's journal was opened.
    pub fn journal(&self) -> &JournalInfo {
        &self.writes.journal
    }

    /// Journal rows to commit before the outcomes now waiting go out.
    pub fn take_journal_writes(&mut self) -> Vec<StoredWrite> {
        self.writes.queue.take_writes()
    }
}
