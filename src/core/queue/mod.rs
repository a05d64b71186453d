//! The durable request queue: writes accepted while their service is down,
//! delivered in order of arrival once it is back, none lost, none doubled.
//!
//! This module is the queue's bookkeeping only. It performs no I/O: every
//! change a restart must see is also appended to [`WriteQueue::take_writes`]
//! as a full [`StoredWrite`] row, and the runtime commits those rows to the
//! [`journal`] before any reply of the same batch goes out. That is what
//! makes a "queued" (or `202 Accepted`) reply a promise: it is written only
//! after the request is on disk. Many rows from one burst share one commit
//! (group commit).
//!
//! Each service has its own line, first in, first out: only its oldest
//! pending write is attempted, and while that one backs off the ones behind
//! it wait, so writes reach a service in the order they were accepted, and
//! a service that is down holds up no other. What a write *is* (a
//! Maelstrom order, an HTTP request) is the front door's business: the
//! queue keeps it as a JSON object, and the key the service deduplicates
//! deliveries on.

pub mod journal;
#[cfg(test)]
mod tests;

use crate::core::ServiceId;
use crate::planted_bug::{PlantedBug, is_planted};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default first retry delay after a failed delivery.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(100);
/// Default cap on the retry delay.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_millis(30_000);
/// Default number of failed deliveries after which a request is dead-lettered.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// Default number of settled (created or dead-lettered) orders remembered
/// for idempotency and `get_order`.
pub const DEFAULT_ORDER_HISTORY: usize = 100_000;
/// Shortest wait between two attempts of one order, whatever the flags say:
/// with a zero retry delay an order would otherwise be attempted again and
/// again within one step, and a timer due "now" would keep the runtime
/// spinning.
pub const MIN_RETRY_DELAY: Duration = Duration::from_millis(1);
/// How many pending requests `get_queue` lists.
pub const QUEUE_LISTING_LIMIT: usize = 10;

/// Identifies one accepted write, across restarts (the Maelstrom node's
/// `request_id`).
pub type RequestId = u64;

/// Longest upstream answer body kept with a delivered write (for `GET
/// /grace/requests/{id}` and idempotent repeats); longer ones are cut.
pub const MAX_STORED_RESPONSE_BYTES: usize = 64 * 1024;

/// Where an accepted write stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteStatus {
    /// Waiting for its service.
    Queued,
    /// Its service answered it (on the Maelstrom wire: the order was
    /// `created`).
    Delivered,
    /// Every delivery attempt failed; kept for an operator, never dropped.
    DeadLetter,
}

impl WriteStatus {
    /// The status as the journal stores it (and as the Maelstrom node says
    /// it): `queued`, `created`, `dead_letter`. Stable across releases.
    pub const fn as_str(self) -> &'static str {
        match self {
            WriteStatus::Queued => "queued",
            WriteStatus::Delivered => "created",
            WriteStatus::DeadLetter => "dead_letter",
        }
    }

    pub fn from_journal(text: &str) -> Option<Self> {
        match text {
            "queued" => Some(WriteStatus::Queued),
            "created" => Some(WriteStatus::Delivered),
            "dead_letter" => Some(WriteStatus::DeadLetter),
            _ => None,
        }
    }

    /// Delivered or dead-lettered: nothing more will happen to it.
    pub fn is_settled(self) -> bool {
        self != WriteStatus::Queued
    }
}

/// A service's answer to a write, as much of it as is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    /// At most [`MAX_STORED_RESPONSE_BYTES`].
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// What is kept of `response`.
    pub fn of(response: &crate::core::Response) -> Self {
        let body = &response.body[..response.body.len().min(MAX_STORED_RESPONSE_BYTES)];
        StoredResponse {
            status: response.status,
            content_type: response
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string),
            body: body.to_vec(),
        }
    }
}

/// The durable form of one accepted write: what the journal stores and what
/// a restart recovers. The journal keeps one row per request id and each
/// change replaces the row, so the journal's size follows the number of
/// writes, not the number of attempts.
#[derive(Debug, Clone)]
pub struct StoredWrite {
    pub request_id: RequestId,
    /// The service it is for, by name (names outlive configurations).
    pub service: String,
    /// The key the service deduplicates deliveries on (and repeats of the
    /// request are recognised by).
    pub idempotency_key: Option<String>,
    /// An unguessable id a front door may give the write (the gateway's
    /// `/grace/requests/{id}`).
    pub public_id: Option<String>,
    /// What the write said, hashed: a repeat with the same key must say the
    /// same.
    pub fingerprint: Option<String>,
    /// The write as the front door stored it (a JSON object); dropped once
    /// delivered.
    pub payload: Option<Arc<RawValue>>,
    pub status: WriteStatus,
    pub attempts: u32,
    /// The id the service gave the write (the Maelstrom node's `order_id`).
    pub result_id: Option<String>,
    /// The service's answer, once delivered.
    pub response: Option<StoredResponse>,
    /// Whether the write went through the queue (counts as `processed`).
    pub was_queued: bool,
}

impl StoredWrite {
    /// The key the service deduplicates on (front doors always set one).
    pub fn delivery_key(&self) -> String {
        self.idempotency_key
            .clone()
            .unwrap_or_else(|| format!("request:{}", self.request_id))
    }
}

impl PartialEq for StoredWrite {
    fn eq(&self, other: &Self) -> bool {
        self.request_id == other.request_id
            && self.service == other.service
            && self.idempotency_key == other.idempotency_key
            && self.public_id == other.public_id
            && self.fingerprint == other.fingerprint
            && self.payload.as_ref().map(|payload| payload.get())
                == other.payload.as_ref().map(|payload| payload.get())
            && self.status == other.status
            && self.attempts == other.attempts
            && self.result_id == other.result_id
            && self.response == other.response
            && self.was_queued == other.was_queued
    }
}

/// What the journal hands back at start.
#[derive(Debug, Clone, Default)]
pub struct RecoveredQueue {
    /// Every stored row, in request id order.
    pub writes: Vec<StoredWrite>,
    /// Queued writes delivered over the journal's life, including those
    /// whose rows were compacted away.
    pub processed: u64,
    /// Writes dead-lettered over the journal's life, likewise.
    pub dead_letters: u64,
    /// The highest request id the journal holds, counting rows that were
    /// skipped because they failed validation: new requests are numbered
    /// above it, so no row on disk is ever overwritten by another write.
    pub highest_request_id: RequestId,
    /// Sets this run apart from every other run of the node, with or
    /// without a journal: the delivery key of a request without an
    /// idempotency key includes it. The runtime draws it from the operating
    /// system's randomness; a simulation may count its restarts.
    pub run_id: u64,
}

impl RecoveredQueue {
    /// What a journal holding `writes` hands back; the `compacted` counts
    /// are those of settled writes whose rows were compacted away.
    pub fn from_rows(writes: Vec<StoredWrite>, compacted: SettledCounts, run_id: u64) -> Self {
        let held = SettledCounts::of(&writes);
        RecoveredQueue {
            highest_request_id: writes.iter().map(|w| w.request_id).max().unwrap_or(0),
            writes,
            processed: compacted.processed + held.processed,
            dead_letters: compacted.dead_letters + held.dead_letters,
            run_id,
        }
    }
}

/// How many settled writes were delivered from the queue or dead-lettered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettledCounts {
    pub processed: u64,
    pub dead_letters: u64,
}

impl SettledCounts {
    pub fn of(writes: &[StoredWrite]) -> Self {
        let count =
            |wanted: fn(&StoredWrite) -> bool| writes.iter().filter(|w| wanted(w)).count() as u64;
        SettledCounts {
            processed: count(|write| write.was_queued && write.status == WriteStatus::Delivered),
            dead_letters: count(|write| write.status == WriteStatus::DeadLetter),
        }
    }
}

/// How the queue retries. Every field has a default above and a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub max_attempts: u32,
    pub order_history: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            retry_base: DEFAULT_RETRY_BASE,
            retry_max: DEFAULT_RETRY_MAX,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            order_history: DEFAULT_ORDER_HISTORY,
        }
    }
}

/// The delay before retry number `attempts + 1`: exponential from `base`,
/// capped at `max`, with "equal jitter" (a random point in the upper half)
/// so many queued requests do not retry in lockstep.
pub fn retry_delay(config: &QueueConfig, attempts: u32, rng: &mut fastrand::Rng) -> Duration {
    let exponent = attempts.saturating_sub(1).min(31);
    let ceiling = config
        .retry_base
        .saturating_mul(1 << exponent)
        .min(config.retry_max);
    let half = ceiling / 2;
    let jitter_ms = rng.u64(0..=half.as_millis() as u64);
    ((ceiling - half) + Duration::from_millis(jitter_ms)).max(MIN_RETRY_DELAY)
}

/// One write the queue knows about.
#[derive(Debug, Clone)]
struct Entry {
    stored: StoredWrite,
    /// When the next delivery may be attempted (queued writes only).
    next_attempt_at: Instant,
}

/// A pending request as `get_queue` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingItem {
    pub request_id: RequestId,
    pub attempts: u32,
    pub next_attempt_in_ms: u64,
}

/// A write being accepted.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub request_id: RequestId,
    pub service: String,
    pub idempotency_key: Option<String>,
    pub public_id: Option<String>,
    pub fingerprint: Option<String>,
    pub payload: Arc<RawValue>,
}

/// One service's pending writes, oldest first (request ids increase).
#[derive(Debug, Default)]
struct Line {
    pending: VecDeque<RequestId>,
}

/// The queue's state: every write it remembers, the pending ones in order.
pub struct WriteQueue {
    config: QueueConfig,
    entries: HashMap<RequestId, Entry>,
    /// Each service's line, by service id: the configured services first,
    /// then any other service named by the journal (whose writes wait until
    /// it is configured again).
    lines: Vec<Line>,
    line_of: HashMap<String, ServiceId>,
    /// Pending writes, every line together.
    pending_total: usize,
    by_key: HashMap<String, RequestId>,
    by_result_id: HashMap<String, RequestId>,
    by_public_id: HashMap<String, RequestId>,
    /// Delivered and dead-lettered writes, oldest first, forgotten beyond
    /// `history` (the journal compacts them the same way).
    settled: VecDeque<RequestId>,
    /// Writes dead-lettered over the journal's life.
    dead_letters: u64,
    processed: u64,
    next_request_id: RequestId,
    /// The first request id this run handed out: lower ids came from the
    /// journal.
    first_request_id_of_run: RequestId,
    run_id: u64,
    writes: Vec<StoredWrite>,
    rng: fastrand::Rng,
}

impl WriteQueue {
    /// An empty queue for `services` (in service id order); `seed` drives
    /// the retry jitter.
    pub fn new<'a>(
        config: QueueConfig,
        seed: u64,
        services: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let line_of: HashMap<String, ServiceId> = services
            .into_iter()
            .enumerate()
            .map(|(index, name)| (name.to_string(), ServiceId::from_index(index)))
            .collect();
        WriteQueue {
            config,
            entries: HashMap::new(),
            lines: (0..line_of.len()).map(|_| Line::default()).collect(),
            line_of,
            pending_total: 0,
            by_key: HashMap::new(),
            by_result_id: HashMap::new(),
            by_public_id: HashMap::new(),
            settled: VecDeque::new(),
            dead_letters: 0,
            processed: 0,
            next_request_id: 1,
            first_request_id_of_run: 1,
            run_id: 0,
            writes: Vec::new(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Rebuilds the queue from the journal; pending writes are due at `now`.
    pub fn recover(&mut self, recovered: RecoveredQueue, now: Instant) {
        self.processed = recovered.processed;
        self.dead_letters = recovered.dead_letters;
        self.run_id = recovered.run_id;
        self.next_request_id = self.next_request_id.max(recovered.highest_request_id + 1);
        let mut writes = recovered.writes;
        writes.sort_by_key(|write| write.request_id);
        // Sized up front, the maps are not rehashed again and again while a
        // deep queue is delivered.
        self.entries.reserve(writes.len());
        self.by_key.reserve(writes.len());
        for stored in writes {
            self.next_request_id = self.next_request_id.max(stored.request_id + 1);
            self.index(stored, now);
        }
        self.first_request_id_of_run = self.next_request_id;
    }

    fn index(&mut self, stored: StoredWrite, next_attempt_at: Instant) {
        let request_id = stored.request_id;
        if let Some(key) = &stored.idempotency_key {
            self.by_key.insert(key.clone(), request_id);
        }
        if let Some(result_id) = &stored.result_id {
            self.by_result_id.insert(result_id.clone(), request_id);
        }
        if let Some(public_id) = &stored.public_id {
            self.by_public_id.insert(public_id.clone(), request_id);
        }
        if stored.status.is_settled() {
            self.settled.push_back(request_id);
        } else {
            // Ids follow arrival, and a line keeps arrival order: a direct
            // write whose call failed joins the line ahead of the writes
            // that arrived after it and were queued while it was in flight.
            // (`position` relies on this order too.)
            let line = self.line_for(&stored.service);
            let pending = &mut self.lines[line.index()].pending;
            let at = pending.partition_point(|&id| id < request_id);
            pending.insert(at, request_id);
            self.pending_total += 1;
        }
        self.entries.insert(
            request_id,
            Entry {
                stored,
                next_attempt_at,
            },
        );
        self.forget_old_settled();
    }

    /// The line of `service`, made if the journal names a service that is
    /// not configured.
    fn line_for(&mut self, service: &str) -> ServiceId {
        if let Some(&line) = self.line_of.get(service) {
            return line;
        }
        let line = ServiceId::from_index(self.lines.len());
        self.lines.push(Line::default());
        self.line_of.insert(service.to_string(), line);
        line
    }

    /// Hands out the id for a new request.
    pub fn allocate_request_id(&mut self) -> RequestId {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    /// What sets this run apart from every other (see
    /// [`RecoveredQueue::run_id`]).
    pub fn run_id(&self) -> u64 {
        self.run_id
    }

    /// Whether `request_id` was read from the journal at start, rather than
    /// accepted by this run.
    pub fn is_from_journal(&self, request_id: RequestId) -> bool {
        request_id < self.first_request_id_of_run
    }

    /// The write already accepted under `key`, if any.
    pub fn find_by_key(&self, key: &str) -> Option<&StoredWrite> {
        let id = self.by_key.get(key)?;
        self.find_by_request_id(*id)
    }

    pub fn find_by_request_id(&self, request_id: RequestId) -> Option<&StoredWrite> {
        self.entries.get(&request_id).map(|entry| &entry.stored)
    }

    /// The write its service gave `result_id` (an `order_id`).
    pub fn find_by_result_id(&self, result_id: &str) -> Option<&StoredWrite> {
        let id = self.by_result_id.get(result_id)?;
        self.find_by_request_id(*id)
    }

    pub fn find_by_public_id(&self, public_id: &str) -> Option<&StoredWrite> {
        let id = self.by_public_id.get(public_id)?;
        self.find_by_request_id(*id)
    }

    /// Records a write its service took straight away.
    pub fn record_delivered_directly(
        &mut self,
        accepted: Accepted,
        result_id: Option<String>,
        response: StoredResponse,
        now: Instant,
    ) {
        let stored = StoredWrite {
            request_id: accepted.request_id,
            service: accepted.service,
            idempotency_key: accepted.idempotency_key,
            public_id: accepted.public_id,
            fingerprint: accepted.fingerprint,
            payload: None,
            status: WriteStatus::Delivered,
            attempts: 1,
            result_id,
            response: Some(response),
            was_queued: false,
        };
        self.writes.push(stored.clone());
        self.index(stored, now);
    }

    /// Accepts a write for later delivery. Returns its position among its
    /// service's pending writes (from 1).
    ///
    /// A write that becomes the head waits the base retry delay: it is
    /// queued because its own call just failed (or the breaker is open), so
    /// calling again at once would only fail again. A write queued behind
    /// others made no call of its own; it is due as soon as it reaches the
    /// head. Otherwise, once the service is back, every write arriving
    /// within a base delay of the one before would queue behind it, and a
    /// steady stream of writes would keep being queued by a healthy service.
    pub fn enqueue(&mut self, accepted: Accepted, now: Instant) -> usize {
        let line = self.line_for(&accepted.service);
        let pending = &self.lines[line.index()].pending;
        let becomes_head = pending
            .front()
            .is_none_or(|&head| accepted.request_id < head);
        let stored = StoredWrite {
            request_id: accepted.request_id,
            service: accepted.service,
            idempotency_key: accepted.idempotency_key,
            public_id: accepted.public_id,
            fingerprint: accepted.fingerprint,
            payload: Some(accepted.payload),
            status: WriteStatus::Queued,
            attempts: 0,
            result_id: None,
            response: None,
            was_queued: true,
        };
        if !is_planted(PlantedBug::SkipJournalOnQueue) {
            self.writes.push(stored.clone());
        }
        let first_attempt_at = if becomes_head {
            now + self.config.retry_base.max(MIN_RETRY_DELAY)
        } else {
            now
        };
        let request_id = stored.request_id;
        self.index(stored, first_attempt_at);
        self.position(request_id).expect("just queued")
    }

    /// The oldest pending write of `service`, if it may be attempted at
    /// `now` (`ignore_backoff` skips the wait, as `process_queue` does).
    pub fn next_due(
        &self,
        service: ServiceId,
        now: Instant,
        ignore_backoff: bool,
    ) -> Option<&StoredWrite> {
        let head = *self.lines.get(service.index())?.pending.front()?;
        let entry = &self.entries[&head];
        (ignore_backoff || entry.next_attempt_at <= now).then_some(&entry.stored)
    }

    /// When the oldest pending write of `service` may next be attempted.
    pub fn next_attempt_at(&self, service: ServiceId) -> Option<Instant> {
        let head = self.lines.get(service.index())?.pending.front()?;
        Some(self.entries[head].next_attempt_at)
    }

    /// Whether any write is pending.
    pub fn has_pending(&self) -> bool {
        self.pending_total > 0
    }

    /// The head write was delivered: its service answered with `response`.
    pub fn record_delivered(
        &mut self,
        request_id: RequestId,
        result_id: Option<String>,
        response: StoredResponse,
    ) {
        let entry = self.entries.get_mut(&request_id).expect("pending entry");
        let line = self.line_of[&entry.stored.service];
        let pending = &mut self.lines[line.index()].pending;
        debug_assert_eq!(pending.front(), Some(&request_id));
        pending.pop_front();
        self.pending_total -= 1;
        entry.stored.attempts += 1;
        entry.stored.status = WriteStatus::Delivered;
        entry.stored.payload = None;
        entry.stored.response = Some(response);
        if let Some(result_id) = &result_id {
            self.by_result_id.insert(result_id.clone(), request_id);
        }
        entry.stored.result_id = result_id;
        self.writes.push(entry.stored.clone());
        self.settled.push_back(request_id);
        self.processed += 1;
        self.forget_old_settled();
    }

    /// A delivery of the head write failed at `now`: back off, or
    /// dead-letter it once its attempts are used up. Returns the new status.
    pub fn record_failed_attempt(&mut self, request_id: RequestId, now: Instant) -> WriteStatus {
        let entry = self.entries.get_mut(&request_id).expect("pending entry");
        entry.stored.attempts += 1;
        let dead = entry.stored.attempts >= self.config.max_attempts;
        if dead {
            entry.stored.status = WriteStatus::DeadLetter;
        } else {
            let delay = retry_delay(&self.config, entry.stored.attempts, &mut self.rng);
            entry.next_attempt_at = now + delay;
        }
        self.writes.push(entry.stored.clone());
        let status = entry.stored.status;
        if dead {
            let line = self.line_of[&entry.stored.service];
            let pending = &mut self.lines[line.index()].pending;
            debug_assert_eq!(pending.front(), Some(&request_id));
            pending.pop_front();
            self.pending_total -= 1;
            self.dead_letters += 1;
            self.settled.push_back(request_id);
            self.forget_old_settled();
        }
        status
    }

    /// Drops the oldest settled writes beyond the configured history from
    /// memory (the journal compacts the same way).
    fn forget_old_settled(&mut self) {
        while self.settled.len() > self.config.order_history {
            let Some(old) = self.settled.pop_front() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&old) {
                if let Some(key) = &entry.stored.idempotency_key {
                    self.by_key.remove(key);
                }
                if let Some(result_id) = &entry.stored.result_id {
                    self.by_result_id.remove(result_id);
                }
                if let Some(public_id) = &entry.stored.public_id {
                    self.by_public_id.remove(public_id);
                }
            }
        }
    }

    /// Position (from 1) of a pending write in its service's line.
    ///
    /// Request ids are handed out in increasing order and a line only ever
    /// gains new ids at its tail and loses them at its head, so it is sorted
    /// and a binary search finds the position in O(log n), however deep the
    /// queue (a linear scan made every repeat of a queued request cost the
    /// whole queue).
    pub fn position(&self, request_id: RequestId) -> Option<usize> {
        let service = &self.entries.get(&request_id)?.stored.service;
        self.lines[self.line_of.get(service)?.index()]
            .pending
            .binary_search(&request_id)
            .ok()
            .map(|index| index + 1)
    }

    /// Pending writes, every service together.
    pub fn depth(&self) -> usize {
        self.pending_total
    }

    /// Pending writes of `service`.
    pub fn depth_of(&self, service: ServiceId) -> usize {
        self.lines
            .get(service.index())
            .map_or(0, |line| line.pending.len())
    }

    /// Pending writes accepted by this run (not read from the journal).
    pub fn pending_accepted_this_run(&self) -> usize {
        self.lines
            .iter()
            .map(|line| {
                let from_journal = line
                    .pending
                    .partition_point(|&id| id < self.first_request_id_of_run);
                line.pending.len() - from_journal
            })
            .sum()
    }

    /// Writes dead-lettered over the journal's life.
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters
    }

    pub fn processed(&self) -> u64 {
        self.processed
    }

    /// The oldest pending writes, every service together, at most `limit`.
    pub fn pending_items(&self, now: Instant, limit: usize) -> Vec<PendingItem> {
        let mut oldest: Vec<RequestId> = self
            .lines
            .iter()
            .flat_map(|line| line.pending.iter().take(limit).copied())
            .collect();
        oldest.sort_unstable();
        oldest.truncate(limit);
        oldest
            .into_iter()
            .map(|id| {
                let entry = &self.entries[&id];
                PendingItem {
                    request_id: id,
                    attempts: entry.stored.attempts,
                    next_attempt_in_ms: entry
                        .next_attempt_at
                        .saturating_duration_since(now)
                        .as_millis() as u64,
                }
            })
            .collect()
    }

    /// Rows changed since the last call, for the journal to commit.
    pub fn take_writes(&mut self) -> Vec<StoredWrite> {
        std::mem::take(&mut self.writes)
    }

    /// Whether rows are waiting to be committed.
    pub fn has_writes(&self) -> bool {
        !self.writes.is_empty()
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }
}
