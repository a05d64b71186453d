//! The durable request queue: writes accepted while their service is down,
//! delivered in order of arrival once it is back, none lost.
//!
//! This module is the queue's logic only. It performs no I/O: every change a
//! restart must see is also appended to [`OrderQueue::take_writes`] as a full
//! [`StoredOrder`] row, and the runtime commits those rows to the
//! [`journal`] before any reply of the same batch goes out. That is what
//! makes a "queued" reply a promise: it is written only after the request is
//! on disk. Many rows from one burst share one commit (group commit).
//!
//! Delivery is strictly first in, first out: only the oldest pending request
//! is attempted, and while it backs off the ones behind it wait, so orders
//! reach the service in the order they were accepted.

pub mod journal;
#[cfg(test)]
mod tests;

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

/// Identifies one accepted `create_order`, across restarts.
pub type RequestId = u64;

/// Where an accepted order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Waiting for the order service.
    Queued,
    /// The order service created it.
    Created,
    /// Every delivery attempt failed; kept for an operator, never dropped.
    DeadLetter,
}

impl OrderStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Queued => "queued",
            OrderStatus::Created => "created",
            OrderStatus::DeadLetter => "dead_letter",
        }
    }
}

/// The durable form of one accepted order: what the journal stores and what
/// a restart recovers. The journal keeps one row per request id and each
/// write replaces the row, so the journal's size follows the number of
/// orders, not the number of attempts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredOrder {
    pub request_id: RequestId,
    pub idempotency_key: Option<String>,
    /// The order as the client sent it; dropped once created.
    pub order: Option<Arc<RawValue>>,
    pub status: OrderStatus,
    pub attempts: u32,
    pub order_id: Option<String>,
    /// Whether the order went through the queue (counts as `processed`).
    pub was_queued: bool,
}

impl StoredOrder {
    /// The key the order service deduplicates on: the idempotency key
    /// (`create_order` always sets one).
    pub fn delivery_key(&self) -> String {
        self.idempotency_key
            .clone()
            .unwrap_or_else(|| format!("request:{}", self.request_id))
    }
}

impl PartialEq for StoredOrder {
    fn eq(&self, other: &Self) -> bool {
        self.request_id == other.request_id
            && self.idempotency_key == other.idempotency_key
            && self.order.as_ref().map(|order| order.get())
                == other.order.as_ref().map(|order| order.get())
            && self.status == other.status
            && self.attempts == other.attempts
            && self.order_id == other.order_id
            && self.was_queued == other.was_queued
    }
}

/// What the journal hands back at start.
#[derive(Debug, Clone, Default)]
pub struct RecoveredQueue {
    /// Every stored row, in request id order.
    pub orders: Vec<StoredOrder>,
    /// Queued orders delivered over the journal's life, including those
    /// whose rows were compacted away.
    pub processed: u64,
    /// Orders dead-lettered over the journal's life, likewise.
    pub dead_letters: u64,
    /// The highest request id the journal holds, counting rows that were
    /// skipped because they failed validation: new requests are numbered
    /// above it, so no row on disk is ever overwritten by another order.
    pub highest_request_id: RequestId,
    /// Sets this run apart from every other run of the node, with or
    /// without a journal: the delivery key of a request without an
    /// idempotency key includes it. The runtime draws it from the operating
    /// system's randomness; a simulation may count its restarts.
    pub run_id: u64,
}

impl RecoveredQueue {
    /// What a journal holding `orders` hands back; the `compacted` counts
    /// are those of settled orders whose rows were compacted away.
    pub fn from_rows(orders: Vec<StoredOrder>, compacted: SettledCounts, run_id: u64) -> Self {
        let held = SettledCounts::of(&orders);
        RecoveredQueue {
            highest_request_id: orders.iter().map(|o| o.request_id).max().unwrap_or(0),
            orders,
            processed: compacted.processed + held.processed,
            dead_letters: compacted.dead_letters + held.dead_letters,
            run_id,
        }
    }
}

/// How many settled orders were delivered from the queue or dead-lettered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettledCounts {
    pub processed: u64,
    pub dead_letters: u64,
}

impl SettledCounts {
    pub fn of(orders: &[StoredOrder]) -> Self {
        let count =
            |wanted: fn(&StoredOrder) -> bool| orders.iter().filter(|o| wanted(o)).count() as u64;
        SettledCounts {
            processed: count(|order| order.was_queued && order.status == OrderStatus::Created),
            dead_letters: count(|order| order.status == OrderStatus::DeadLetter),
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

/// One order the queue knows about.
#[derive(Debug, Clone)]
struct Entry {
    stored: StoredOrder,
    /// When the next delivery may be attempted (queued orders only).
    next_attempt_at: Instant,
}

/// A pending request as `get_queue` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingItem {
    pub request_id: RequestId,
    pub attempts: u32,
    pub next_attempt_in_ms: u64,
}

/// The queue's state: every order it remembers, the pending ones in order.
pub struct OrderQueue {
    config: QueueConfig,
    entries: HashMap<RequestId, Entry>,
    pending: VecDeque<RequestId>,
    by_key: HashMap<String, RequestId>,
    by_order_id: HashMap<String, RequestId>,
    /// Created and dead-lettered orders, oldest first, forgotten beyond
    /// `order_history` (the journal compacts them the same way).
    settled: VecDeque<RequestId>,
    /// Orders dead-lettered over the journal's life.
    dead_letters: u64,
    processed: u64,
    next_request_id: RequestId,
    /// The first request id this run handed out: lower ids came from the
    /// journal.
    first_request_id_of_run: RequestId,
    run_id: u64,
    writes: Vec<StoredOrder>,
    rng: fastrand::Rng,
}

impl OrderQueue {
    /// An empty queue; `seed` drives the retry jitter.
    pub fn new(config: QueueConfig, seed: u64) -> Self {
        OrderQueue {
            config,
            entries: HashMap::new(),
            pending: VecDeque::new(),
            by_key: HashMap::new(),
            by_order_id: HashMap::new(),
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

    /// Rebuilds the queue from the journal; pending orders are due at `now`.
    pub fn recover(&mut self, recovered: RecoveredQueue, now: Instant) {
        self.processed = recovered.processed;
        self.dead_letters = recovered.dead_letters;
        self.run_id = recovered.run_id;
        self.next_request_id = self.next_request_id.max(recovered.highest_request_id + 1);
        let mut orders = recovered.orders;
        orders.sort_by_key(|order| order.request_id);
        // Every recovered order gets an entry and (once created) an order
        // id: sized up front, the maps are not rehashed again and again
        // while a deep queue is delivered.
        self.entries.reserve(orders.len());
        self.by_key.reserve(orders.len());
        self.by_order_id.reserve(orders.len());
        for stored in orders {
            self.next_request_id = self.next_request_id.max(stored.request_id + 1);
            self.index(stored, now);
        }
        self.first_request_id_of_run = self.next_request_id;
    }

    fn index(&mut self, stored: StoredOrder, next_attempt_at: Instant) {
        let request_id = stored.request_id;
        if let Some(key) = &stored.idempotency_key {
            self.by_key.insert(key.clone(), request_id);
        }
        if let Some(order_id) = &stored.order_id {
            self.by_order_id.insert(order_id.clone(), request_id);
        }
        match stored.status {
            OrderStatus::Queued => self.pending.push_back(request_id),
            OrderStatus::Created | OrderStatus::DeadLetter => self.settled.push_back(request_id),
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

    /// Hands out the id for a new request; it doubles as the delivery key the
    /// order service deduplicates on.
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

    /// The order already accepted under `key`, if any.
    pub fn find_by_key(&self, key: &str) -> Option<&StoredOrder> {
        let id = self.by_key.get(key)?;
        self.entries.get(id).map(|entry| &entry.stored)
    }

    pub fn find_by_request_id(&self, request_id: RequestId) -> Option<&StoredOrder> {
        self.entries.get(&request_id).map(|entry| &entry.stored)
    }

    pub fn find_by_order_id(&self, order_id: &str) -> Option<&StoredOrder> {
        let id = self.by_order_id.get(order_id)?;
        self.find_by_request_id(*id)
    }

    /// Records an order the service created straight away.
    pub fn record_created_directly(
        &mut self,
        request_id: RequestId,
        idempotency_key: Option<String>,
        order_id: String,
        now: Instant,
    ) {
        let stored = StoredOrder {
            request_id,
            idempotency_key,
            order: None,
            status: OrderStatus::Created,
            attempts: 1,
            order_id: Some(order_id),
            was_queued: false,
        };
        self.writes.push(stored.clone());
        self.index(stored, now);
    }

    /// Accepts an order for later delivery. Returns its position among
    /// pending requests (from 1).
    ///
    /// An order that becomes the head waits the base retry delay: it is
    /// queued because its own call just failed (or the breaker is open), so
    /// calling again at once would only fail again. An order queued behind
    /// others made no call of its own; it is due as soon as it reaches the
    /// head. Otherwise, once the service is back, every order arriving
    /// within a base delay of the one before would queue behind it, and a
    /// steady stream of orders would keep being answered "queued" by a
    /// healthy service.
    pub fn enqueue(
        &mut self,
        request_id: RequestId,
        idempotency_key: Option<String>,
        order: Arc<RawValue>,
        now: Instant,
    ) -> usize {
        // `position` relies on pending ids increasing from head to tail.
        debug_assert!(self.pending.back().is_none_or(|&last| last < request_id));
        let stored = StoredOrder {
            request_id,
            idempotency_key,
            order: Some(order),
            status: OrderStatus::Queued,
            attempts: 0,
            order_id: None,
            was_queued: true,
        };
        if !is_planted(PlantedBug::SkipJournalOnQueue) {
            self.writes.push(stored.clone());
        }
        let first_attempt_at = if self.pending.is_empty() {
            now + self.config.retry_base.max(MIN_RETRY_DELAY)
        } else {
            now
        };
        self.index(stored, first_attempt_at);
        self.pending.len()
    }

    /// The oldest pending request, if it may be attempted at `now`
    /// (`ignore_backoff` skips the wait, as `process_queue` does).
    pub fn next_due(&self, now: Instant, ignore_backoff: bool) -> Option<RequestId> {
        let head = *self.pending.front()?;
        let entry = &self.entries[&head];
        (ignore_backoff || entry.next_attempt_at <= now).then_some(head)
    }

    /// When the oldest pending request may next be attempted.
    pub fn next_attempt_at(&self) -> Option<Instant> {
        let head = self.pending.front()?;
        Some(self.entries[head].next_attempt_at)
    }

    /// The service created the head request's order.
    pub fn record_delivered(&mut self, request_id: RequestId, order_id: String) {
        debug_assert_eq!(self.pending.front(), Some(&request_id));
        self.pending.pop_front();
        let entry = self.entries.get_mut(&request_id).expect("pending entry");
        entry.stored.attempts += 1;
        entry.stored.status = OrderStatus::Created;
        entry.stored.order = None;
        entry.stored.order_id = Some(order_id.clone());
        self.writes.push(entry.stored.clone());
        self.by_order_id.insert(order_id, request_id);
        self.settled.push_back(request_id);
        self.processed += 1;
        self.forget_old_settled();
    }

    /// A delivery of the head request failed at `now`: back off, or
    /// dead-letter it once its attempts are used up. Returns the new status.
    pub fn record_failed_attempt(&mut self, request_id: RequestId, now: Instant) -> OrderStatus {
        debug_assert_eq!(self.pending.front(), Some(&request_id));
        let entry = self.entries.get_mut(&request_id).expect("pending entry");
        entry.stored.attempts += 1;
        let dead = entry.stored.attempts >= self.config.max_attempts;
        if dead {
            entry.stored.status = OrderStatus::DeadLetter;
        } else {
            let delay = retry_delay(&self.config, entry.stored.attempts, &mut self.rng);
            entry.next_attempt_at = now + delay;
        }
        self.writes.push(entry.stored.clone());
        let status = entry.stored.status;
        if dead {
            self.pending.pop_front();
            self.dead_letters += 1;
            self.settled.push_back(request_id);
            self.forget_old_settled();
        }
        status
    }

    /// Drops the oldest settled orders beyond the configured history from
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
                if let Some(order_id) = &entry.stored.order_id {
                    self.by_order_id.remove(order_id);
                }
            }
        }
    }

    /// Position (from 1) of a pending request.
    ///
    /// Request ids are handed out in increasing order and the queue only
    /// ever appends new ids and removes from the front, so `pending` is
    /// sorted and a binary search finds the position in O(log n), however
    /// deep the queue (a linear scan made every repeat of a queued request
    /// cost the whole queue).
    pub fn position(&self, request_id: RequestId) -> Option<usize> {
        self.pending
            .binary_search(&request_id)
            .ok()
            .map(|index| index + 1)
    }

    pub fn depth(&self) -> usize {
        self.pending.len()
    }

    /// Pending requests accepted by this run (not read from the journal).
    pub fn pending_accepted_this_run(&self) -> usize {
        let from_journal = self
            .pending
            .partition_point(|&id| id < self.first_request_id_of_run);
        self.pending.len() - from_journal
    }

    /// Orders dead-lettered over the journal's life.
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters
    }

    pub fn processed(&self) -> u64 {
        self.processed
    }

    /// The first pending requests, oldest first.
    pub fn pending_items(&self, now: Instant, limit: usize) -> Vec<PendingItem> {
        self.pending
            .iter()
            .take(limit)
            .map(|id| {
                let entry = &self.entries[id];
                PendingItem {
                    request_id: *id,
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
    pub fn take_writes(&mut self) -> Vec<StoredOrder> {
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
