//! The queue's logic against explicit instants: backoff, dead-lettering,
//! first-in-first-out delivery per service, positions, the journal rows
//! every change produces, recovery, and compaction in the journal. No
//! sleeps: time is an `Instant` the test moves by hand.

use super::journal::SqliteJournal;
use super::*;

const SEED: u64 = 7;
/// The service of most tests: the queue's first line.
const ORDER: ServiceId = ServiceId::from_index(0);
/// A second service, for the tests of lines being independent.
const PAYMENT: ServiceId = ServiceId::from_index(1);
const SERVICES: [&str; 2] = ["order", "payment"];

fn order_json(n: u64) -> Arc<RawValue> {
    Arc::from(RawValue::from_string(format!("{{\"sku\":{n},\"quantity\":1}}")).unwrap())
}

fn config() -> QueueConfig {
    QueueConfig::default()
}

/// A queue with a line for `order` and one for `payment`.
fn queue_with(config: QueueConfig) -> WriteQueue {
    WriteQueue::new(config, SEED, SERVICES)
}

fn service_name(service: ServiceId) -> String {
    SERVICES[service.index()].to_string()
}

/// A write for `service` with a fresh request id, its key derived from it.
fn accepted(queue: &mut WriteQueue, service: ServiceId) -> Accepted {
    let request_id = queue.allocate_request_id();
    Accepted {
        request_id,
        service: service_name(service),
        idempotency_key: Some(format!("msg:client:{request_id}")),
        public_id: None,
        fingerprint: None,
        payload: order_json(request_id),
    }
}

/// Enqueues a fresh order the way `create_order` does: allocate, then queue.
fn accept(queue: &mut WriteQueue, now: Instant) -> (RequestId, usize) {
    accept_for(queue, ORDER, now)
}

/// Enqueues a fresh write for `service`.
fn accept_for(queue: &mut WriteQueue, service: ServiceId, now: Instant) -> (RequestId, usize) {
    let accepted = accepted(queue, service);
    let request_id = accepted.request_id;
    let position = queue.enqueue(accepted, now);
    (request_id, position)
}

/// The order service's answer to a create.
fn created(order_id: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        content_type: None,
        body: format!("{{\"order_id\":\"{order_id}\",\"status\":\"created\"}}").into_bytes(),
    }
}

/// The head of the order line was delivered as `order_id`.
fn deliver(queue: &mut WriteQueue, request_id: RequestId, order_id: &str) {
    queue.record_delivered(request_id, Some(order_id.into()), created(order_id));
}

/// Order `request_id`, which the service took straight away as `order_id`.
fn create_directly(
    queue: &mut WriteQueue,
    request_id: RequestId,
    key: Option<String>,
    order_id: &str,
    now: Instant,
) {
    let accepted = Accepted {
        request_id,
        service: service_name(ORDER),
        idempotency_key: key,
        public_id: None,
        fingerprint: None,
        payload: order_json(request_id),
    };
    queue.record_delivered_directly(accepted, Some(order_id.into()), created(order_id), now);
}

/// The request id of the oldest pending write of `service`, if due.
fn due_head(queue: &WriteQueue, service: ServiceId, now: Instant) -> Option<RequestId> {
    queue
        .next_due(service, now, false)
        .map(|write| write.request_id)
}

/// Like [`due_head`], skipping the backoff (as `process_queue` does).
fn due_ignoring_backoff(queue: &WriteQueue, service: ServiceId, now: Instant) -> Option<RequestId> {
    queue
        .next_due(service, now, true)
        .map(|write| write.request_id)
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// The equal-jitter bounds of the delay after `attempts` failures.
fn jitter_bounds(config: &QueueConfig, attempts: u32) -> (Duration, Duration) {
    let ceiling = config
        .retry_base
        .saturating_mul(1 << attempts.saturating_sub(1).min(31))
        .min(config.retry_max);
    (ceiling - ceiling / 2, ceiling)
}

#[test]
fn retry_delay_doubles_per_attempt_within_equal_jitter_bounds() {
    let config = config();
    let mut rng = fastrand::Rng::with_seed(SEED);
    for attempts in 1..=12 {
        let (low, high) = jitter_bounds(&config, attempts);
        for _ in 0..200 {
            let delay = retry_delay(&config, attempts, &mut rng);
            assert!(
                low <= delay && delay <= high,
                "attempt {attempts}: {delay:?} outside [{low:?}, {high:?}]"
            );
        }
    }
    // The documented schedule: 100 ms, 200 ms, 400 ms ... ceilings.
    assert_eq!(jitter_bounds(&config, 1), (ms(50), ms(100)));
    assert_eq!(jitter_bounds(&config, 2), (ms(100), ms(200)));
    assert_eq!(jitter_bounds(&config, 4), (ms(400), ms(800)));
}

#[test]
fn retry_delay_is_capped_at_retry_max_however_many_attempts() {
    let config = config();
    let mut rng = fastrand::Rng::with_seed(SEED);
    for attempts in [9, 10, 20, 32, 33, 1000, u32::MAX] {
        let delay = retry_delay(&config, attempts, &mut rng);
        assert!(delay <= DEFAULT_RETRY_MAX, "attempt {attempts}: {delay:?}");
        assert!(
            delay >= DEFAULT_RETRY_MAX / 2,
            "attempt {attempts}: {delay:?}"
        );
    }
}

#[test]
fn retry_delay_jitter_spreads_retries_apart() {
    let config = config();
    let mut rng = fastrand::Rng::with_seed(SEED);
    let delays: std::collections::HashSet<Duration> = (0..100)
        .map(|_| retry_delay(&config, 5, &mut rng))
        .collect();
    assert!(
        delays.len() > 20,
        "only {} distinct delays out of 100",
        delays.len()
    );
}

#[test]
fn retry_delay_is_replayable_from_its_seed() {
    let config = config();
    let draw = |seed| {
        let mut rng = fastrand::Rng::with_seed(seed);
        (1..=10)
            .map(|attempts| retry_delay(&config, attempts, &mut rng))
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(3), draw(3));
}

#[test]
fn new_request_is_first_due_one_base_delay_after_it_was_accepted() {
    let mut queue = queue_with(config());
    let t0 = Instant::now();
    let (id, _) = accept(&mut queue, t0);
    assert_eq!(queue.next_attempt_at(ORDER), Some(t0 + DEFAULT_RETRY_BASE));
    assert_eq!(due_head(&queue, ORDER, t0 + ms(99)), None);
    assert_eq!(due_head(&queue, ORDER, t0 + ms(100)), Some(id));
}

#[test]
fn failed_attempts_back_off_exponentially_from_the_time_of_failure() {
    let config = config();
    let mut queue = queue_with(config);
    let t0 = Instant::now();
    let (id, _) = accept(&mut queue, t0);
    let mut now = t0 + DEFAULT_RETRY_BASE;
    for attempts in 1..config.max_attempts {
        assert_eq!(due_head(&queue, ORDER, now), Some(id));
        assert_eq!(queue.record_failed_attempt(id, now), WriteStatus::Queued);
        let (low, high) = jitter_bounds(&config, attempts);
        let due = queue.next_attempt_at(ORDER).unwrap();
        assert!(
            now + low <= due && due <= now + high,
            "after attempt {attempts}: due in {:?}, expected [{low:?}, {high:?}]",
            due - now
        );
        assert_eq!(due_head(&queue, ORDER, due - ms(1)), None);
        now = due;
    }
    assert_eq!(queue.find_by_request_id(id).unwrap().attempts, 9);
}

#[test]
fn request_is_dead_lettered_after_max_attempts_and_kept_visible() {
    let config = QueueConfig {
        max_attempts: 3,
        ..QueueConfig::default()
    };
    let mut queue = queue_with(config);
    let t0 = Instant::now();
    let (id, _) = accept(&mut queue, t0);
    let (behind, _) = accept(&mut queue, t0);
    let mut now = t0;
    for _ in 0..2 {
        now += DEFAULT_RETRY_MAX;
        assert_eq!(queue.record_failed_attempt(id, now), WriteStatus::Queued);
    }
    now += DEFAULT_RETRY_MAX;
    assert_eq!(
        queue.record_failed_attempt(id, now),
        WriteStatus::DeadLetter
    );

    let dead = queue.find_by_request_id(id).expect("dead letters are kept");
    assert_eq!(dead.status, WriteStatus::DeadLetter);
    assert_eq!(dead.attempts, 3);
    assert!(dead.payload.is_some(), "the order is kept for an operator");
    assert!(dead.result_id.is_none());
    assert_eq!(queue.dead_letters(), 1);
    assert_eq!(queue.depth(), 1);
    assert_eq!(queue.position(id), None);
    // The request behind it moves up and is attempted next.
    assert_eq!(queue.position(behind), Some(1));
    assert_eq!(due_head(&queue, ORDER, now), Some(behind));
    // Its idempotency key still finds it.
    let key = format!("msg:client:{id}");
    assert_eq!(
        queue.find_by_key(&key).unwrap().status,
        WriteStatus::DeadLetter
    );
}

#[test]
fn one_attempt_is_all_a_max_attempts_of_one_allows() {
    let mut queue = queue_with(QueueConfig {
        max_attempts: 1,
        ..QueueConfig::default()
    });
    let t0 = Instant::now();
    let (id, _) = accept(&mut queue, t0);
    assert_eq!(queue.record_failed_attempt(id, t0), WriteStatus::DeadLetter);
    assert_eq!(queue.depth(), 0);
    assert_eq!(queue.next_attempt_at(ORDER), None);
}

#[test]
fn only_the_oldest_request_is_due_and_its_backoff_holds_back_the_rest() {
    let mut queue = queue_with(config());
    let t0 = Instant::now();
    let (first, _) = accept(&mut queue, t0);
    let (second, _) = accept(&mut queue, t0 + ms(1));
    let (third, _) = accept(&mut queue, t0 + ms(2));
    let now = t0 + ms(500);
    assert_eq!(due_head(&queue, ORDER, now), Some(first));
    queue.record_failed_attempt(first, now);
    // `second` and `third` are long past their own first due time, but the
    // head is backing off, so nothing is due.
    let head_due = queue.next_attempt_at(ORDER).unwrap();
    assert!(head_due > now);
    assert_eq!(due_head(&queue, ORDER, head_due - ms(1)), None);
    assert_eq!(due_head(&queue, ORDER, head_due), Some(first));

    deliver(&mut queue, first, "ord-1");
    assert_eq!(due_head(&queue, ORDER, head_due), Some(second));
    deliver(&mut queue, second, "ord-2");
    assert_eq!(due_head(&queue, ORDER, head_due), Some(third));
    deliver(&mut queue, third, "ord-3");
    assert_eq!(due_head(&queue, ORDER, head_due), None);
    assert_eq!(queue.processed(), 3);
}

#[test]
fn order_queued_behind_others_is_due_as_soon_as_it_reaches_the_head() {
    let mut queue = queue_with(config());
    let t0 = Instant::now();
    let (first, _) = accept(&mut queue, t0);
    let (second, _) = accept(&mut queue, t0 + ms(90));
    let due = t0 + DEFAULT_RETRY_BASE;
    assert_eq!(due_head(&queue, ORDER, due), Some(first));
    deliver(&mut queue, first, "ord-1");
    // `second` made no call of its own: no base delay to wait out.
    assert_eq!(due_head(&queue, ORDER, due), Some(second));
}

#[test]
fn ignoring_backoff_makes_the_head_due_at_once_but_only_the_head() {
    let mut queue = queue_with(config());
    let t0 = Instant::now();
    let (first, _) = accept(&mut queue, t0);
    accept(&mut queue, t0);
    assert_eq!(due_head(&queue, ORDER, t0), None);
    assert_eq!(due_ignoring_backoff(&queue, ORDER, t0), Some(first));
    queue.record_failed_attempt(first, t0);
    assert_eq!(due_ignoring_backoff(&queue, ORDER, t0), Some(first));
}

#[test]
fn empty_queue_has_nothing_due_and_no_deadline() {
    let queue = queue_with(config());
    let now = Instant::now();
    assert_eq!(due_ignoring_backoff(&queue, ORDER, now), None);
    assert_eq!(queue.next_attempt_at(ORDER), None);
    assert!(queue.pending_items(now, QUEUE_LISTING_LIMIT).is_empty());
}

#[test]
fn queue_position_counts_from_one_among_pending_requests() {
    let mut queue = queue_with(config());
    let t0 = Instant::now();
    let accepted: Vec<(RequestId, usize)> = (0..5).map(|_| accept(&mut queue, t0)).collect();
    let positions: Vec<usize> = accepted.iter().map(|&(_, position)| position).collect();
    assert_eq!(positions, vec![1, 2, 3, 4, 5]);
    for &(id, position) in &accepted {
        assert_eq!(queue.position(id), Some(position));
    }
    deliver(&mut queue, accepted[0].0, "ord-1");
    assert_eq!(queue.position(accepted[0].0), None);
    assert_eq!(queue.position(accepted[1].0), Some(1));
    assert_eq!(queue.position(accepted[4].0), Some(4));
    // An order created directly takes no place in the queue.
    let direct = queue.allocate_request_id();
    create_directly(&mut queue, direct, None, &format!("ord-{direct}"), t0);
    assert_eq!(queue.position(direct), None);
    assert_eq!(accept(&mut queue, t0).1, 5);
    assert_eq!(queue.position(9999), None);
}

#[test]
fn request_ids_are_unique_and_increasing() {
    let mut queue = queue_with(config());
    let ids: Vec<RequestId> = (0..100).map(|_| queue.allocate_request_id()).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(ids[0], 1);
}

#[test]
fn pending_items_list_the_oldest_with_attempts_and_time_to_next_attempt() {
    let mut queue = queue_with(config());
    let t0 = Instant::now();
    let ids: Vec<RequestId> = (0..QUEUE_LISTING_LIMIT + 5)
        .map(|_| accept(&mut queue, t0).0)
        .collect();
    let now = t0 + ms(100);
    queue.record_failed_attempt(ids[0], now);
    let due_in = queue.next_attempt_at(ORDER).unwrap() - now;
    let items = queue.pending_items(now + ms(10), QUEUE_LISTING_LIMIT);
    assert_eq!(items.len(), QUEUE_LISTING_LIMIT);
    assert_eq!(
        items[0],
        PendingItem {
            request_id: ids[0],
            attempts: 1,
            next_attempt_in_ms: (due_in - ms(10)).as_millis() as u64,
        }
    );
    // The others are due already: zero, never negative.
    assert_eq!(
        items[1],
        PendingItem {
            request_id: ids[1],
            attempts: 0,
            next_attempt_in_ms: 0,
        }
    );
    let listed: Vec<RequestId> = items.iter().map(|item| item.request_id).collect();
    assert_eq!(listed, ids[..QUEUE_LISTING_LIMIT]);
}

#[test]
fn every_state_change_produces_a_journal_row() {
    let mut queue = queue_with(QueueConfig {
        max_attempts: 2,
        ..QueueConfig::default()
    });
    let t0 = Instant::now();
    assert!(!queue.has_writes());

    let (delivered, _) = accept(&mut queue, t0);
    let (dead, _) = accept(&mut queue, t0);
    let rows = queue.take_writes();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|row| row.status == WriteStatus::Queued
        && row.attempts == 0
        && row.was_queued
        && row.payload.is_some()));
    assert!(!queue.has_writes());

    queue.record_failed_attempt(delivered, t0);
    assert_eq!(
        queue.take_writes(),
        vec![queue.find_by_request_id(delivered).unwrap().clone()]
    );
    assert_eq!(queue.find_by_request_id(delivered).unwrap().attempts, 1);

    deliver(&mut queue, delivered, "ord-1");
    let rows = queue.take_writes();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, WriteStatus::Delivered);
    assert_eq!(rows[0].attempts, 2);
    assert_eq!(rows[0].result_id.as_deref(), Some("ord-1"));
    assert!(
        rows[0].payload.is_none(),
        "a created order's body is dropped"
    );

    queue.record_failed_attempt(dead, t0);
    queue.record_failed_attempt(dead, t0);
    let rows = queue.take_writes();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].status, WriteStatus::DeadLetter);
    assert_eq!(rows[1].attempts, 2);

    let direct = queue.allocate_request_id();
    create_directly(&mut queue, direct, Some("key:\"k\"".into()), "ord-3", t0);
    let rows = queue.take_writes();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, WriteStatus::Delivered);
    assert!(!rows[0].was_queued);
}

#[test]
fn idempotency_keys_and_order_ids_find_the_accepted_order() {
    let mut queue = queue_with(config());
    let t0 = Instant::now();
    let (queued, _) = accept(&mut queue, t0);
    let direct = queue.allocate_request_id();
    create_directly(&mut queue, direct, Some("key:\"abc\"".into()), "ord-2", t0);

    assert_eq!(
        queue
            .find_by_key(&format!("msg:client:{queued}"))
            .unwrap()
            .request_id,
        queued
    );
    assert_eq!(queue.find_by_key("key:\"abc\"").unwrap().request_id, direct);
    assert_eq!(queue.find_by_result_id("ord-2").unwrap().request_id, direct);
    assert!(queue.find_by_key("key:\"other\"").is_none());
    assert!(queue.find_by_result_id("ord-1").is_none());

    deliver(&mut queue, queued, "ord-1");
    let created = queue.find_by_result_id("ord-1").unwrap();
    assert_eq!(created.request_id, queued);
    assert_eq!(created.status, WriteStatus::Delivered);
}

#[test]
fn created_orders_beyond_the_history_are_forgotten_but_pending_ones_never() {
    let mut queue = queue_with(QueueConfig {
        order_history: 3,
        ..QueueConfig::default()
    });
    let t0 = Instant::now();
    let (pending, _) = accept(&mut queue, t0);
    let mut created = Vec::new();
    for _ in 0..5 {
        let id = queue.allocate_request_id();
        create_directly(
            &mut queue,
            id,
            Some(format!("k{id}")),
            &format!("ord-{id}"),
            t0,
        );
        created.push(id);
    }
    for &old in &created[..2] {
        assert!(queue.find_by_request_id(old).is_none());
        assert!(queue.find_by_key(&format!("k{old}")).is_none());
        assert!(queue.find_by_result_id(&format!("ord-{old}")).is_none());
    }
    for &kept in &created[2..] {
        assert!(queue.find_by_request_id(kept).is_some());
    }
    assert_eq!(
        queue.find_by_request_id(pending).unwrap().status,
        WriteStatus::Queued
    );
    assert_eq!(queue.depth(), 1);
}

/// A journal row of an order in `status`.
fn stored(request_id: RequestId, status: WriteStatus) -> StoredWrite {
    stored_for(ORDER, request_id, status)
}

/// A journal row of a write for `service` in `status`.
fn stored_for(service: ServiceId, request_id: RequestId, status: WriteStatus) -> StoredWrite {
    let delivered = status == WriteStatus::Delivered;
    StoredWrite {
        request_id,
        service: service_name(service),
        idempotency_key: Some(format!("msg:client:{request_id}")),
        public_id: None,
        fingerprint: None,
        payload: (!delivered).then(|| order_json(request_id)),
        status,
        attempts: match status {
            WriteStatus::Queued => 2,
            WriteStatus::Delivered => 1,
            WriteStatus::DeadLetter => DEFAULT_MAX_ATTEMPTS,
        },
        result_id: delivered.then(|| format!("ord-{request_id}")),
        response: delivered.then(|| created(&format!("ord-{request_id}"))),
        was_queued: true,
    }
}

#[test]
fn recovery_resumes_pending_requests_in_arrival_order_due_at_once() {
    let mut queue = queue_with(config());
    let now = Instant::now();
    // The journal hands rows back in id order, but the queue must not rely on it.
    let orders = vec![
        stored(7, WriteStatus::Queued),
        stored(2, WriteStatus::Delivered),
        stored(5, WriteStatus::Queued),
        stored(3, WriteStatus::DeadLetter),
        stored(4, WriteStatus::Queued),
    ];
    queue.recover(
        RecoveredQueue {
            writes: orders,
            processed: 11,
            dead_letters: 1,
            ..RecoveredQueue::default()
        },
        now,
    );
    assert_eq!(queue.depth(), 3);
    assert_eq!(queue.dead_letters(), 1);
    assert_eq!(queue.processed(), 11);
    let order: Vec<RequestId> = queue
        .pending_items(now, QUEUE_LISTING_LIMIT)
        .iter()
        .map(|item| item.request_id)
        .collect();
    assert_eq!(order, vec![4, 5, 7]);
    assert_eq!(queue.position(7), Some(3));
    assert_eq!(due_head(&queue, ORDER, now), Some(4));
    assert_eq!(queue.find_by_request_id(4).unwrap().attempts, 2);
    assert_eq!(queue.find_by_key("msg:client:2").unwrap().request_id, 2);
    assert_eq!(queue.find_by_result_id("ord-2").unwrap().request_id, 2);
    assert!(!queue.has_writes(), "recovering rewrites nothing");
}

#[test]
fn request_ids_after_recovery_never_reuse_a_journalled_id() {
    let mut queue = queue_with(config());
    let now = Instant::now();
    queue.recover(
        RecoveredQueue {
            writes: vec![
                stored(41, WriteStatus::Delivered),
                stored(3, WriteStatus::Queued),
            ],
            processed: 1,
            ..RecoveredQueue::default()
        },
        now,
    );
    assert_eq!(queue.allocate_request_id(), 42);
    let (next, position) = accept(&mut queue, now);
    assert_eq!((next, position), (43, 2));
}

#[test]
fn queue_rows_committed_to_the_journal_come_back_identical_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let config = QueueConfig {
        max_attempts: 2,
        ..QueueConfig::default()
    };
    let mut queue = queue_with(config);
    let (journal_rows, depth) = {
        let (mut journal, recovered) =
            SqliteJournal::open(dir.path(), "n1", config.order_history).unwrap();
        queue.recover(recovered, t0);
        let ids: Vec<RequestId> = (0..4).map(|_| accept(&mut queue, t0).0).collect();
        journal.commit(&queue.take_writes()).unwrap();
        deliver(&mut queue, ids[0], "ord-1");
        queue.record_failed_attempt(ids[1], t0);
        queue.record_failed_attempt(ids[1], t0);
        queue.record_failed_attempt(ids[2], t0);
        journal.commit(&queue.take_writes()).unwrap();
        let rows: Vec<StoredWrite> = ids
            .iter()
            .map(|&id| queue.find_by_request_id(id).unwrap().clone())
            .collect();
        (rows, queue.depth())
    };
    let (_journal, recovered) =
        SqliteJournal::open(dir.path(), "n1", config.order_history).unwrap();
    assert_eq!(recovered.writes, journal_rows);
    assert_eq!(recovered.processed, 1);

    let mut restarted = queue_with(config);
    restarted.recover(recovered, t0);
    assert_eq!(restarted.depth(), depth);
    assert_eq!(restarted.dead_letters(), 1);
    assert_eq!(
        due_head(&restarted, ORDER, t0),
        Some(journal_rows[2].request_id)
    );
    assert_eq!(restarted.find_by_request_id(3).unwrap().attempts, 1);
    assert_eq!(restarted.allocate_request_id(), 5);
}

#[test]
fn uncommitted_rows_are_lost_by_a_crash_but_committed_ones_survive() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let mut queue = queue_with(config());
    {
        let (mut journal, _) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
        accept(&mut queue, t0);
        accept(&mut queue, t0);
        journal.commit(&queue.take_writes()).unwrap();
        // Accepted, but the crash comes before the burst's commit (and so
        // before its reply was written).
        accept(&mut queue, t0);
    }
    let (_journal, recovered) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
    let ids: Vec<RequestId> = recovered.writes.iter().map(|o| o.request_id).collect();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn journal_compacts_settled_orders_on_its_own_and_keeps_their_counts() {
    let dir = tempfile::tempdir().unwrap();
    let history = 100;
    let t0 = Instant::now();
    let config = QueueConfig {
        order_history: history,
        max_attempts: 1,
        ..QueueConfig::default()
    };
    let mut queue = queue_with(config);
    let (mut journal, _) = SqliteJournal::open(dir.path(), "n1", history).unwrap();
    // A dead letter first: the oldest settled order, so compaction takes
    // it too once `history` newer orders have settled, and counts it.
    let (dead, _) = accept(&mut queue, t0);
    queue.record_failed_attempt(dead, t0);
    journal.commit(&queue.take_writes()).unwrap();

    // Bursts of queued orders, each delivered in turn, well past the point
    // where the journal compacts on its own.
    let total = 5_000;
    let burst = 250;
    let mut most_rows = 0;
    for _ in 0..total / burst {
        let ids: Vec<RequestId> = (0..burst).map(|_| accept(&mut queue, t0).0).collect();
        journal.commit(&queue.take_writes()).unwrap();
        for id in ids {
            deliver(&mut queue, id, &format!("ord-{id}"));
        }
        journal.commit(&queue.take_writes()).unwrap();
        most_rows = most_rows.max(journal.row_count().unwrap());
    }
    // Between compactions the journal may hold up to about a thousand
    // settled rows beyond the history, never all of them.
    assert!(
        most_rows <= (history + 1000 + 2 * burst) as u64,
        "journal held {most_rows} rows for {total} delivered orders"
    );
    let (stuck, _) = accept(&mut queue, t0);
    journal.commit(&queue.take_writes()).unwrap();
    journal.compact_now().unwrap();
    assert_eq!(journal.row_count().unwrap(), history as u64 + 1);
    drop(journal);

    let (_journal, recovered) = SqliteJournal::open(dir.path(), "n1", history).unwrap();
    assert_eq!(recovered.processed, total as u64);
    assert_eq!(
        recovered.dead_letters, 1,
        "the compacted dead letter is counted"
    );
    assert!(recovered.writes.iter().all(|o| o.request_id != dead));
    // The newest created orders are the ones kept.
    let newest_created = stuck - 1;
    assert!(
        recovered
            .writes
            .iter()
            .any(|o| o.request_id == newest_created)
    );

    let mut restarted = queue_with(config);
    restarted.recover(recovered, t0);
    assert_eq!(restarted.processed(), total as u64);
    assert_eq!(restarted.depth(), 1);
    assert_eq!(due_head(&restarted, ORDER, t0), Some(stuck));
    assert_eq!(restarted.dead_letters(), 1);
    assert_eq!(restarted.allocate_request_id(), stuck + 1);
}

// ---------------------------------------------------------------------------
// One line per service
// ---------------------------------------------------------------------------

#[test]
fn a_service_that_keeps_failing_holds_up_no_other_service() {
    let mut queue = queue_with(config());
    let t0 = Instant::now();
    let (stuck, _) = accept_for(&mut queue, ORDER, t0);
    let (behind_stuck, _) = accept_for(&mut queue, ORDER, t0);
    let (payment, _) = accept_for(&mut queue, PAYMENT, t0);
    let (next_payment, _) = accept_for(&mut queue, PAYMENT, t0);
    let mut now = t0;
    for _ in 0..3 {
        now = queue.next_attempt_at(ORDER).unwrap();
        assert_eq!(due_head(&queue, ORDER, now), Some(stuck));
        queue.record_failed_attempt(stuck, now);
    }
    // The order line backs off; the payment line is due all the same and
    // delivers its writes in order.
    assert_eq!(due_head(&queue, ORDER, now), None);
    assert_eq!(due_head(&queue, PAYMENT, now), Some(payment));
    queue.record_delivered(payment, None, created("pay-1"));
    assert_eq!(due_head(&queue, PAYMENT, now), Some(next_payment));
    queue.record_delivered(next_payment, None, created("pay-2"));
    assert_eq!(due_head(&queue, PAYMENT, now), None);
    assert_eq!(queue.depth_of(PAYMENT), 0);
    // The order line is untouched: its head still first, nothing skipped.
    assert_eq!(queue.depth_of(ORDER), 2);
    assert_eq!(queue.position(stuck), Some(1));
    assert_eq!(queue.position(behind_stuck), Some(2));
    assert_eq!(queue.find_by_request_id(stuck).unwrap().attempts, 3);
}

#[test]
fn a_dead_letter_moves_up_only_its_own_line() {
    let mut queue = queue_with(QueueConfig {
        max_attempts: 1,
        ..QueueConfig::default()
    });
    let t0 = Instant::now();
    let (doomed, _) = accept_for(&mut queue, ORDER, t0);
    let (payment, _) = accept_for(&mut queue, PAYMENT, t0);
    let (behind_doomed, _) = accept_for(&mut queue, ORDER, t0);
    assert_eq!(
        queue.record_failed_attempt(doomed, t0),
        WriteStatus::DeadLetter
    );
    assert_eq!(due_head(&queue, ORDER, t0), Some(behind_doomed));
    assert_eq!(queue.position(behind_doomed), Some(1));
    assert_eq!(queue.position(payment), Some(1));
    assert_eq!(queue.depth(), 2);
}

#[test]
fn positions_count_within_each_service_line() {
    let mut queue = queue_with(config());
    let t0 = Instant::now();
    let mut positions = Vec::new();
    let mut ids = Vec::new();
    for service in [ORDER, PAYMENT, ORDER, PAYMENT, PAYMENT] {
        let (id, position) = accept_for(&mut queue, service, t0);
        ids.push(id);
        positions.push(position);
    }
    assert_eq!(positions, vec![1, 1, 2, 2, 3]);
    assert_eq!((queue.depth_of(ORDER), queue.depth_of(PAYMENT)), (2, 3));
    assert_eq!(queue.depth(), 5);
    for (&id, &position) in ids.iter().zip(&positions) {
        assert_eq!(queue.position(id), Some(position));
    }
    // Delivering the order head moves up the order line only.
    deliver(&mut queue, ids[0], "ord-1");
    assert_eq!(queue.position(ids[2]), Some(1));
    assert_eq!(queue.position(ids[1]), Some(1));
    assert_eq!(queue.position(ids[4]), Some(3));
    // A newcomer takes its place at the end of its own line.
    assert_eq!(accept_for(&mut queue, ORDER, t0).1, 2);
    assert_eq!(accept_for(&mut queue, PAYMENT, t0).1, 4);
}

#[test]
fn the_first_write_of_a_line_waits_the_base_delay_whatever_the_other_lines_hold() {
    let mut queue = queue_with(config());
    let t0 = Instant::now();
    accept_for(&mut queue, ORDER, t0);
    accept_for(&mut queue, ORDER, t0);
    // Orders are waiting, but the payment line was empty: its first write
    // is queued because its own call failed, so it waits like any head.
    let later = t0 + ms(30);
    let (payment, position) = accept_for(&mut queue, PAYMENT, later);
    assert_eq!(position, 1);
    assert_eq!(
        queue.next_attempt_at(PAYMENT),
        Some(later + DEFAULT_RETRY_BASE)
    );
    assert_eq!(due_head(&queue, PAYMENT, later), None);
    assert_eq!(
        due_head(&queue, PAYMENT, later + DEFAULT_RETRY_BASE),
        Some(payment)
    );
    assert_eq!(queue.next_attempt_at(ORDER), Some(t0 + DEFAULT_RETRY_BASE));
}

#[test]
fn pending_items_list_every_line_together_oldest_first() {
    let mut queue = queue_with(config());
    let t0 = Instant::now();
    let ids: Vec<RequestId> = [PAYMENT, ORDER, PAYMENT, ORDER]
        .into_iter()
        .map(|service| accept_for(&mut queue, service, t0).0)
        .collect();
    let listed: Vec<RequestId> = queue
        .pending_items(t0, QUEUE_LISTING_LIMIT)
        .iter()
        .map(|item| item.request_id)
        .collect();
    assert_eq!(listed, ids);
    let first_two: Vec<RequestId> = queue
        .pending_items(t0, 2)
        .iter()
        .map(|item| item.request_id)
        .collect();
    assert_eq!(first_two, ids[..2]);
}

#[test]
fn recovery_puts_each_write_back_in_its_own_services_line() {
    let mut queue = queue_with(config());
    let now = Instant::now();
    queue.recover(
        RecoveredQueue {
            writes: vec![
                stored_for(ORDER, 2, WriteStatus::Queued),
                stored_for(PAYMENT, 3, WriteStatus::Queued),
                stored_for(ORDER, 5, WriteStatus::Queued),
                stored_for(PAYMENT, 6, WriteStatus::Delivered),
            ],
            ..RecoveredQueue::default()
        },
        now,
    );
    assert_eq!((queue.depth_of(ORDER), queue.depth_of(PAYMENT)), (2, 1));
    assert_eq!(due_head(&queue, ORDER, now), Some(2));
    assert_eq!(due_head(&queue, PAYMENT, now), Some(3));
    assert_eq!(queue.position(5), Some(2));
    assert_eq!(queue.position(3), Some(1));
}

#[test]
fn a_journalled_write_for_a_service_no_longer_configured_waits_in_a_line_of_its_own() {
    let mut queue = queue_with(config());
    let now = Instant::now();
    let mut billing = stored(4, WriteStatus::Queued);
    billing.service = "billing".into();
    queue.recover(
        RecoveredQueue {
            writes: vec![stored(2, WriteStatus::Queued), billing],
            ..RecoveredQueue::default()
        },
        now,
    );
    assert_eq!(queue.depth(), 2);
    assert_eq!(queue.position(4), Some(1), "first in its own line");
    assert_eq!(queue.depth_of(ORDER), 1);
    assert_eq!(queue.depth_of(PAYMENT), 0);
    assert_eq!(due_head(&queue, ORDER, now), Some(2));
    assert_eq!(due_head(&queue, PAYMENT, now), None);
    // Were billing configured again, its write would be next.
    let billing_line = ServiceId::from_index(SERVICES.len());
    assert_eq!(due_head(&queue, billing_line, now), Some(4));
}
