//! The durable request queue through the sans-IO node (the harness in
//! `tests/support/node.rs`): messages in, replies and journal rows out,
//! time passed in by hand. No process, no file, no sleep; a "restart" hands
//! the rows a runtime would have committed to a fresh node.

mod support;

use grace::core::breaker::BreakerConfig;
use grace::core::queue::{QUEUE_LISTING_LIMIT, QueueConfig, StoredWrite, WriteStatus};
use grace::maelstrom::node::NodeConfig;
use serde_json::{Value, json};
use std::time::Duration;
use support::node::{
    CLIENT, Harness, Request, create_order, durable_journal, get_order, get_order_by_order_id,
    get_queue, get_status, ms, process_queue, with_breaker,
};

const SEED: u64 = 11;

fn config() -> NodeConfig {
    NodeConfig {
        seed: SEED,
        ..NodeConfig::default()
    }
}

/// [`config`] with `queue`.
fn with_queue(queue: QueueConfig) -> NodeConfig {
    NodeConfig { queue, ..config() }
}

/// [`config`] with a breaker that opens only after `threshold` failures.
fn with_failure_threshold(threshold: u32) -> NodeConfig {
    NodeConfig {
        seed: SEED,
        ..with_breaker(BreakerConfig {
            failure_threshold: Some(threshold),
            ..BreakerConfig::default()
        })
    }
}

fn default_threshold() -> u64 {
    u64::from(BreakerConfig::default().failure_threshold.unwrap())
}

/// The order request with `msg_id` (its default idempotency key).
fn order(msg_id: u64) -> Request {
    create_order(json!({"user_id": 123, "product_id": msg_id, "quantity": 1})).msg_id(msg_id)
}

/// Sends `request` and returns its one reply's body.
fn call(h: &mut Harness, request: &Request, now: std::time::Instant) -> Value {
    h.send(request, now).body
}

fn create(h: &mut Harness, msg_id: u64, now: std::time::Instant) -> Value {
    call(h, &order(msg_id), now)
}

fn order_status(h: &mut Harness, request_id: u64, now: std::time::Instant) -> Value {
    call(h, &get_order(request_id).msg_id(2), now)
}

fn queue_status(h: &mut Harness, now: std::time::Instant) -> Value {
    let reply = call(h, &get_queue(), now);
    assert_eq!(reply["type"], "queue_status", "{reply}");
    reply
}

fn run_process_queue(h: &mut Harness, now: std::time::Instant) -> Value {
    let reply = call(h, &process_queue(), now);
    assert_eq!(reply["type"], "queue_processed", "{reply}");
    reply
}

fn request_id(reply: &Value) -> u64 {
    reply["request_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no request_id in {reply}"))
}

fn assert_queued(reply: &Value, position: u64) -> u64 {
    assert_eq!(reply["type"], "order_response", "{reply}");
    assert_eq!(reply["status"], "queued", "{reply}");
    assert_eq!(reply["queued"], true, "{reply}");
    assert_eq!(reply["queue_position"], position, "{reply}");
    request_id(reply)
}

fn assert_created(reply: &Value) -> String {
    assert_eq!(reply["type"], "order_response", "{reply}");
    assert_eq!(reply["status"], "created", "{reply}");
    assert_eq!(reply["queued"], false, "{reply}");
    reply["order_id"].as_str().expect("order_id").to_string()
}

fn assert_error(reply: &Value, code: u64) {
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], code, "{reply}");
}

// ---------------------------------------------------------------------------
// create_order
// ---------------------------------------------------------------------------

#[test]
fn order_is_created_at_once_when_the_service_is_up() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    let body = h.send(&create_order(json!({"sku": "a"})), now).text;
    let order_id = body
        .strip_prefix(
            r#"{"type":"order_response","in_reply_to":1,"status":"created","queued":false,"order_id":""#,
        )
        .and_then(|rest| rest.strip_suffix(r#""}"#))
        .unwrap_or_else(|| panic!("unexpected body {body}"));
    assert!(!order_id.is_empty());
    assert_eq!(h.queue().depth(), 0);
}

#[test]
fn order_is_queued_when_the_service_is_down_with_positions_counting_from_one() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    // With a journal, as the binary runs: without one the reply would add
    // `"durable": false`.
    h.recover([], now);
    h.set_service_health("order", false, now);
    let body = h.send(&create_order(json!({"sku": "a"})), now).text;
    assert_eq!(
        body,
        r#"{"type":"order_response","in_reply_to":1,"status":"queued","queued":true,"request_id":1,"queue_position":1}"#
    );
    for msg_id in 2..=5 {
        let reply = create(&mut h, msg_id, now);
        assert_eq!(assert_queued(&reply, msg_id), msg_id);
    }
    assert_eq!(queue_status(&mut h, now)["depth"], 5);
}

#[test]
fn order_is_queued_when_only_this_request_finds_the_service_down() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    assert_queued(&call(&mut h, &order(1).service_unavailable(), now), 1);
    assert_eq!(h.calls_made("order"), 1);
}

#[test]
fn order_is_queued_without_a_call_when_the_order_breaker_is_open() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    let request = order(1).force_failures(1_000_000_000_000);
    assert_queued(&call(&mut h, &request, now), 1);
    // The breaker opened at its threshold; the order itself made no call.
    assert_eq!(h.calls_made("order"), default_threshold());
    assert_queued(&create(&mut h, 2, now), 2);
    assert_eq!(h.calls_made("order"), default_threshold());
}

#[test]
fn order_that_is_not_a_json_object_is_malformed() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    for (msg_id, order) in [
        (1, json!([1])),
        (2, json!("x")),
        (3, json!(null)),
        (4, json!(7)),
    ] {
        let reply = call(&mut h, &create_order(order).msg_id(msg_id), now);
        assert_error(&reply, 12);
        assert!(reply["text"].as_str().unwrap().contains("order"), "{reply}");
    }
    let missing = call(&mut h, &Request::new("create_order").msg_id(5), now);
    assert_error(&missing, 12);
    assert!(missing["text"].as_str().unwrap().contains("order"));
    assert_eq!(h.calls_made("order"), 0);
    assert!(h.take_journal_writes().is_empty());
}

// ---------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------

#[test]
fn repeat_with_the_same_src_and_msg_id_gets_the_same_request_and_no_second_order() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    h.set_service_health("order", false, now);
    let first = create(&mut h, 1, now);
    let other = create(&mut h, 2, now);
    let repeat = create(&mut h, 1, now + ms(10));
    assert_eq!(repeat, first);
    assert_eq!(assert_queued(&repeat, 1), request_id(&first));
    assert_eq!(queue_status(&mut h, now)["depth"], 2);
    // A repeat of the second keeps the second's position.
    assert_eq!(create(&mut h, 2, now), other);
}

#[test]
fn same_msg_id_from_another_client_is_another_request() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    h.set_service_health("order", false, now);
    let mine = create(&mut h, 1, now);
    let theirs = call(&mut h, &order(1).sent_by("c2"), now);
    assert_ne!(request_id(&mine), request_id(&theirs));
    assert_eq!(queue_status(&mut h, now)["depth"], 2);
}

#[test]
fn explicit_idempotency_key_matches_across_msg_ids_and_clients() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    h.set_service_health("order", false, now);
    let request = order(1).idempotency_key("order-abc");
    let first = call(&mut h, &request, now);
    let again = call(&mut h, &request.clone().msg_id(2), now);
    assert_eq!(request_id(&again), request_id(&first));
    let from_elsewhere = call(&mut h, &request.clone().msg_id(2).sent_by("c2"), now);
    assert_eq!(request_id(&from_elsewhere), request_id(&first));
    // Integer keys work too, and do not collide with the string "7".
    let numeric = call(&mut h, &request.clone().idempotency_key(7), now);
    let textual = call(&mut h, &request.idempotency_key("7"), now);
    assert_ne!(request_id(&numeric), request_id(&textual));
    assert_eq!(queue_status(&mut h, now)["depth"], 3);
}

#[test]
fn explicit_key_and_default_key_do_not_collide() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    h.set_service_health("order", false, now);
    let by_msg_id = create(&mut h, 1, now);
    let by_key = call(
        &mut h,
        &order(2).idempotency_key(format!("msg:{CLIENT}:1")),
        now,
    );
    assert_ne!(request_id(&by_msg_id), request_id(&by_key));
}

#[test]
fn repeat_after_delivery_reports_created_with_the_same_order_id() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    h.set_service_health("order", false, now);
    let queued = request_id(&create(&mut h, 1, now));
    h.set_service_health("order", true, now);
    let later = h.run_timers_until(h.at(60_000));
    assert_eq!(h.queue().depth(), 0);
    let order_id = order_status(&mut h, queued, later)["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    let calls = h.calls_made("order");
    let repeat = create(&mut h, 1, later);
    assert_eq!(assert_created(&repeat), order_id);
    assert_eq!(h.calls_made("order"), calls, "a repeat makes no call");
    assert_eq!(h.demo_services().orders().len(), 1);
    assert_eq!(h.demo_services().orders().repeated_deliveries(), 0);
}

#[test]
fn repeat_of_an_order_created_at_once_gets_the_same_order_id() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    let order_id = assert_created(&create(&mut h, 1, now));
    // Even with the service down now, the repeat is not queued.
    h.set_service_health("order", false, now);
    assert_eq!(assert_created(&create(&mut h, 1, now)), order_id);
    assert_eq!(h.demo_services().orders().len(), 1);
    assert_eq!(h.queue().depth(), 0);
}

#[test]
fn request_without_msg_id_has_no_default_key_and_is_a_new_order_each_time() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    h.set_service_health("order", false, now);
    let request = create_order(json!({"sku": 1})).without_msg_id();
    let first = call(&mut h, &request, now);
    let second = call(&mut h, &request, now);
    assert!(first.get("in_reply_to").is_none());
    assert_ne!(request_id(&first), request_id(&second));
}

// ---------------------------------------------------------------------------
// get_order and get_queue
// ---------------------------------------------------------------------------

#[test]
fn get_order_follows_an_order_from_queued_to_created() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    h.set_service_health("order", false, now);
    let id = request_id(&create(&mut h, 1, now));
    assert_eq!(
        call(&mut h, &get_order(id).msg_id(1002), now),
        json!({"type": "order_status", "in_reply_to": 1002, "request_id": id, "status": "queued", "attempts": 0})
    );
    h.set_service_health("order", true, now);
    let later = h.run_timers_until(h.at(60_000));
    let created = order_status(&mut h, id, later);
    assert_eq!(created["status"], "created");
    assert!(created["attempts"].as_u64().unwrap() >= 1);
    let order_id = created["order_id"].as_str().unwrap().to_string();
    let by_order_id = call(&mut h, &get_order_by_order_id(&order_id), later);
    assert_eq!(by_order_id["request_id"], id);
    assert_eq!(by_order_id["status"], "created");
}

#[test]
fn get_order_of_an_unknown_id_is_not_found_and_without_an_id_is_malformed() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    assert_error(&order_status(&mut h, 42, now), 20);
    let unknown_order = call(&mut h, &get_order_by_order_id("ord-9"), now);
    assert_error(&unknown_order, 20);
    assert_error(&call(&mut h, &Request::new("get_order").msg_id(2), now), 12);
    assert_error(
        &call(&mut h, &get_order(1).with("request_id", "x").msg_id(3), now),
        12,
    );
}

#[test]
fn get_queue_shows_depth_totals_and_the_oldest_pending_with_their_wait() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    h.set_service_health("order", false, now);
    for msg_id in 1..=15 {
        create(&mut h, msg_id, now);
    }
    let queue = queue_status(&mut h, now + ms(40));
    assert_eq!(queue["depth"], 15);
    assert_eq!(queue["processed"], 0);
    assert_eq!(queue["dead_letters"], 0);
    let pending = queue["pending"].as_array().unwrap();
    assert_eq!(pending.len(), QUEUE_LISTING_LIMIT);
    assert_eq!(
        pending[0],
        json!({"request_id": 1, "attempts": 0, "next_attempt_in_ms": 60})
    );
    let ids: Vec<u64> = pending.iter().map(request_id).collect();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
}

#[test]
fn get_queue_counts_the_open_breaker_in_the_wait_before_the_next_attempt() {
    let mut h = Harness::new(config());
    let open_timeout = BreakerConfig::default().open_timeout;
    let now = h.at(0);
    call(&mut h, &order(1).force_failures(default_threshold()), now);
    create(&mut h, 2, now);
    // Both are past their own backoff, but nothing is tried before the
    // breaker half-opens.
    let at = now + ms(1_000);
    let queue = queue_status(&mut h, at);
    let waits: Vec<&Value> = queue["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| &item["next_attempt_in_ms"])
        .collect();
    let breaker_wait = (open_timeout - ms(1_000)).as_millis() as u64;
    assert_eq!(waits, vec![&json!(breaker_wait), &json!(breaker_wait)]);
}

#[test]
fn get_status_reports_the_queue_and_whether_it_is_durable() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    h.set_service_health("order", false, now);
    create(&mut h, 1, now);
    let status = call(&mut h, &get_status(), now);
    assert_eq!(status["queue"]["depth"], 1);
    assert_eq!(status["queue"]["dead_letters"], 0);
    assert_eq!(status["queue"]["durable"], false);

    let mut durable = Harness::new(config());
    durable.recover([], now);
    let status = call(&mut durable, &get_status(), now);
    assert_eq!(status["queue"]["durable"], true);
    let journal = durable_journal()
        .path
        .expect("a durable journal has a path");
    assert_eq!(status["queue"]["journal"], journal.to_str().unwrap());
}

// ---------------------------------------------------------------------------
// Delivery
// ---------------------------------------------------------------------------

#[test]
fn queued_orders_are_delivered_by_the_timer_once_the_order_breaker_half_opens() {
    let mut h = Harness::new(config());
    let open_timeout = BreakerConfig::default().open_timeout;
    let now = h.at(0);
    let first = order(1).force_failures(default_threshold());
    assert_queued(&call(&mut h, &first, now), 1);
    for msg_id in 2..=4 {
        assert_queued(&create(&mut h, msg_id, now + ms(msg_id)), msg_id);
    }
    let calls = h.calls_made("order");
    // The head is due after the base delay, but the breaker holds it back
    // until it half-opens.
    assert_eq!(h.poll_timeout(), Some(now + open_timeout));
    h.handle_timeout(now + open_timeout - ms(1));
    assert_eq!(
        h.calls_made("order"),
        calls,
        "an open breaker makes no call"
    );
    assert_eq!(h.queue().depth(), 4);

    h.take_journal_writes();
    let replies = h.handle_timeout(now + open_timeout);
    assert!(replies.is_empty(), "no unsolicited messages");
    assert_eq!(h.queue().depth(), 0);
    assert_eq!(h.calls_made("order"), calls + 4);
    assert_eq!(h.poll_timeout(), None);
    // Delivered in order of arrival, each once.
    assert_eq!(
        delivered_in_order(&h.take_journal_writes()),
        vec![1, 2, 3, 4]
    );
    let mut order_ids = Vec::new();
    for id in 1..=4 {
        let order = order_status(&mut h, id, now + open_timeout);
        assert_eq!(order["status"], "created");
        assert_eq!(order["attempts"], 1);
        order_ids.push(order["order_id"].as_str().unwrap().to_string());
    }
    assert_distinct(&order_ids);
    assert_eq!(h.demo_services().orders().len(), 4);
    assert_eq!(queue_status(&mut h, now + open_timeout)["processed"], 4);
}

#[test]
fn failed_probe_reopens_the_breaker_and_the_head_waits_for_both_breaker_and_backoff() {
    let mut h = Harness::new(config());
    let breaker = BreakerConfig::default();
    let now = h.at(0);
    h.set_service_health("order", false, now);
    assert_queued(
        &call(&mut h, &order(1).force_failures(default_threshold()), now),
        1,
    );
    let probe_at = h.poll_timeout().unwrap();
    assert_eq!(probe_at, now + breaker.open_timeout);
    h.handle_timeout(probe_at);
    assert_eq!(order_status(&mut h, 1, probe_at)["attempts"], 1);
    // The breaker re-opened with a doubled wait; the head's own backoff is
    // shorter, so the breaker decides the next wake-up.
    assert_eq!(h.poll_timeout(), Some(probe_at + breaker.open_timeout * 2));
}

#[test]
fn only_the_head_is_attempted_and_its_backoff_holds_back_the_rest() {
    let mut h = Harness::new(with_failure_threshold(1000));
    let now = h.at(0);
    h.set_service_health("order", false, now);
    for msg_id in 1..=3 {
        create(&mut h, msg_id, now);
    }
    let calls = h.calls_made("order");
    let mut at = now;
    for attempt in 1..=5u64 {
        let deadline = h.poll_timeout().unwrap();
        assert!(deadline > at);
        h.handle_timeout(deadline - ms(1));
        assert_eq!(h.calls_made("order"), calls + attempt - 1, "not due yet");
        h.handle_timeout(deadline);
        at = deadline;
        assert_eq!(
            h.calls_made("order"),
            calls + attempt,
            "one call per wake-up"
        );
        assert_eq!(order_status(&mut h, 1, at)["attempts"], attempt);
        assert_eq!(order_status(&mut h, 2, at)["attempts"], 0);
        assert_eq!(order_status(&mut h, 3, at)["attempts"], 0);
    }
    // The service comes back: the head first, then the rest, in order.
    h.take_journal_writes();
    h.set_service_health("order", true, at);
    h.run_timers_until(at + Duration::from_secs(60));
    assert_eq!(delivered_in_order(&h.take_journal_writes()), vec![1, 2, 3]);
}

#[test]
fn new_order_never_overtakes_queued_ones() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    h.set_service_health("order", false, now);
    assert_queued(&create(&mut h, 1, now), 1);
    h.set_service_health("order", true, now);
    // The head is not due yet, so the newcomer queues behind it.
    assert_queued(&create(&mut h, 2, now + ms(50)), 2);
    // Once the head is due, a newcomer finds the queue delivered first,
    // and with nothing left waiting, is created at once.
    h.take_journal_writes();
    assert_created(&create(&mut h, 3, now + ms(100)));
    let rows = h.take_journal_writes();
    assert_eq!(delivered_in_order(&rows), vec![1, 2]);
    assert_eq!(
        statuses(&rows).last(),
        Some(&(3, WriteStatus::Delivered, 1)),
        "created after the queued ones"
    );
}

#[test]
fn steady_stream_of_orders_is_created_again_soon_after_the_service_returns() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    h.set_service_health("order", false, now);
    assert_queued(&create(&mut h, 1, now), 1);
    h.set_service_health("order", true, now);
    // An order every 50 ms, faster than the base retry delay: the queue
    // must drain, not keep every newcomer waiting behind the one before.
    let mut answers = Vec::new();
    for step in 1..=40 {
        let reply = create(&mut h, 1 + step, now + ms(10 + 50 * step));
        answers.push(reply["status"].as_str().unwrap().to_string());
    }
    let first_created = answers.iter().position(|status| status == "created");
    assert!(
        first_created.is_some_and(|index| index <= 2),
        "answers: {answers:?}"
    );
    assert!(
        answers[first_created.unwrap()..]
            .iter()
            .all(|status| status == "created"),
        "answers: {answers:?}"
    );
}

#[test]
fn process_queue_delivers_everything_now_skipping_backoff() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    h.set_service_health("order", false, now);
    for msg_id in 1..=3 {
        create(&mut h, msg_id, now);
    }
    h.set_service_health("order", true, now);
    // Long before the head's first retry is due.
    let reply = run_process_queue(&mut h, now + ms(1));
    assert_eq!(reply["processed"], 3);
    assert_eq!(reply["remaining"], 0);
    assert_eq!(queue_status(&mut h, now + ms(1))["processed"], 3);
    assert_eq!(h.poll_timeout(), None);
}

#[test]
fn process_queue_respects_an_open_breaker() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    call(&mut h, &order(1).force_failures(default_threshold()), now);
    create(&mut h, 2, now);
    let calls = h.calls_made("order");
    let reply = run_process_queue(&mut h, now + ms(1));
    assert_eq!(reply["processed"], 0);
    assert_eq!(reply["remaining"], 2);
    assert_eq!(
        h.calls_made("order"),
        calls,
        "an open breaker makes no call"
    );
    assert_eq!(order_status(&mut h, 1, now + ms(1))["attempts"], 0);
}

#[test]
fn process_queue_stops_at_the_first_failure_to_keep_arrival_order() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    h.set_service_health("order", false, now);
    for msg_id in 1..=3 {
        create(&mut h, msg_id, now);
    }
    let reply = run_process_queue(&mut h, now + ms(1));
    assert_eq!(reply["processed"], 0);
    assert_eq!(reply["remaining"], 3);
    assert_eq!(order_status(&mut h, 1, now + ms(1))["attempts"], 1);
    assert_eq!(order_status(&mut h, 2, now + ms(1))["attempts"], 0);
}

#[test]
fn order_is_dead_lettered_after_its_last_attempt_kept_and_visible() {
    let max_attempts = 3;
    let mut h = Harness::new(with_queue(QueueConfig {
        max_attempts,
        ..QueueConfig::default()
    }));
    let now = h.at(0);
    h.set_service_health("order", false, now);
    let doomed = request_id(&create(&mut h, 1, now));
    let behind = request_id(&create(&mut h, 2, now));
    // Let the head fail its attempts (the breaker opens and half-opens on
    // the way; the timer handles that).
    let mut at = now;
    while h.queue().dead_letters() == 0 {
        at = h.poll_timeout().expect("work is pending");
        h.handle_timeout(at);
        assert!(at < now + Duration::from_secs(3600), "never dead-lettered");
    }
    let dead = order_status(&mut h, doomed, at);
    assert_eq!(dead["status"], "dead_letter");
    assert_eq!(dead["attempts"], max_attempts);
    assert!(dead.get("order_id").is_none());
    assert_eq!(order_status(&mut h, behind, at)["status"], "queued");

    h.set_service_health("order", true, at);
    let end = h.run_timers_until(at + Duration::from_secs(3600));
    assert_eq!(order_status(&mut h, behind, end)["status"], "created");
    let queue = queue_status(&mut h, end);
    assert_eq!(queue["depth"], 0);
    assert_eq!(queue["dead_letters"], 1);
    assert_eq!(queue["processed"], 1);
    let status = call(&mut h, &get_status(), end);
    assert_eq!(status["queue"]["dead_letters"], 1);
    // Still there, never retried, and a repeat reports it.
    assert_eq!(order_status(&mut h, doomed, end)["status"], "dead_letter");
    let repeat = create(&mut h, 1, end);
    assert_eq!(repeat["status"], "dead_letter");
    assert_eq!(repeat["request_id"], doomed);
    assert_eq!(h.demo_services().orders().len(), 1);
}

#[test]
fn nothing_to_wake_up_for_when_nothing_waits() {
    let mut h = Harness::new(config());
    let now = h.at(0);
    assert_eq!(h.poll_timeout(), None);
    create(&mut h, 1, now);
    assert_eq!(h.poll_timeout(), None);
}

// ---------------------------------------------------------------------------
// Journal rows
// ---------------------------------------------------------------------------

/// Request ids of the queued orders delivered by `rows`, in delivery order.
fn delivered_in_order(rows: &[StoredWrite]) -> Vec<u64> {
    rows.iter()
        .filter(|row| row.status == WriteStatus::Delivered && row.was_queued)
        .map(|row| row.request_id)
        .collect()
}

fn assert_distinct(order_ids: &[String]) {
    let distinct: std::collections::HashSet<&String> = order_ids.iter().collect();
    assert_eq!(distinct.len(), order_ids.len(), "{order_ids:?}");
}

fn statuses(rows: &[StoredWrite]) -> Vec<(u64, WriteStatus, u32)> {
    rows.iter()
        .map(|row| (row.request_id, row.status, row.attempts))
        .collect()
}

#[test]
fn every_state_change_yields_a_journal_row_and_reads_yield_none() {
    let mut h = Harness::new(NodeConfig {
        queue: QueueConfig {
            max_attempts: 2,
            ..QueueConfig::default()
        },
        ..with_failure_threshold(1000)
    });
    let now = h.at(0);
    assert_created(&create(&mut h, 1, now));
    let rows = h.take_journal_writes();
    assert_eq!(statuses(&rows), vec![(1, WriteStatus::Delivered, 1)]);
    assert!(!rows[0].was_queued);

    h.set_service_health("order", false, now);
    assert!(h.take_journal_writes().is_empty());
    create(&mut h, 2, now);
    create(&mut h, 3, now);
    let rows = h.take_journal_writes();
    assert_eq!(
        statuses(&rows),
        vec![(2, WriteStatus::Queued, 0), (3, WriteStatus::Queued, 0)]
    );
    assert_eq!(
        rows[0].payload.as_ref().unwrap().get(),
        r#"{"product_id":2,"quantity":1,"user_id":123}"#,
        "the order is stored as the client sent it"
    );

    // Repeats and reads change nothing.
    create(&mut h, 2, now);
    order_status(&mut h, 2, now);
    queue_status(&mut h, now);
    call(&mut h, &get_status().msg_id(9), now);
    assert!(h.take_journal_writes().is_empty());

    // A failed attempt, then the dead letter.
    let retry = h.poll_timeout().unwrap();
    h.handle_timeout(retry);
    assert_eq!(
        statuses(&h.take_journal_writes()),
        vec![(2, WriteStatus::Queued, 1)]
    );
    let retry = h.poll_timeout().unwrap();
    h.handle_timeout(retry);
    // The dead letter makes way, so the next request is attempted at once.
    assert_eq!(
        statuses(&h.take_journal_writes()),
        vec![(2, WriteStatus::DeadLetter, 2), (3, WriteStatus::Queued, 1)]
    );

    // A delivery.
    h.set_service_health("order", true, retry);
    run_process_queue(&mut h, retry);
    let rows = h.take_journal_writes();
    assert_eq!(statuses(&rows), vec![(3, WriteStatus::Delivered, 2)]);
    let order_id = rows[0]
        .result_id
        .clone()
        .expect("created row has its order id");
    assert_eq!(order_status(&mut h, 3, retry)["order_id"], order_id);
    assert!(rows[0].was_queued);
}

// ---------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------

#[test]
fn restarted_node_resumes_pending_orders_in_order_and_keeps_request_ids_unique() {
    let mut before = Harness::new(config());
    let now = before.at(0);
    assert_created(&create(&mut before, 1, now));
    before.set_service_health("order", false, now);
    for msg_id in 2..=5 {
        create(&mut before, msg_id, now);
    }
    let mut rows = before.take_journal_writes();
    // Accepted after the last commit, so never answered: lost by the crash.
    create(&mut before, 6, now);
    rows.reverse(); // the journal hands rows back in id order whatever the order of writes
    let orders_before_the_crash = before.demo_services().orders().len();

    // The order service is still down, so the queue can be looked at
    // before it drains.
    let restart = before.at(1_000);
    let mut after = before.restart(rows, restart);
    // Pending orders are due at once.
    assert_eq!(after.poll_timeout(), Some(restart));
    after.set_service_health("order", false, restart);
    let queue = queue_status(&mut after, restart);
    assert_eq!(queue["depth"], 4);
    let ids: Vec<u64> = queue["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(request_id)
        .collect();
    assert_eq!(ids, vec![2, 3, 4, 5]);

    // A repeat finds its request; a new request gets a fresh id.
    assert_eq!(assert_queued(&create(&mut after, 3, restart), 2), 3);
    let fresh = request_id(&create(&mut after, 7, restart));
    assert_eq!(fresh, 6, "the lost request's id was never answered");
    after.set_service_health("order", true, restart);
    after.run_timers_until(restart + Duration::from_secs(60));
    assert_eq!(after.queue().depth(), 0);
    assert_eq!(
        delivered_in_order(&after.take_journal_writes()),
        vec![2, 3, 4, 5, 6]
    );
    let mut order_ids: Vec<String> = (2..=6)
        .map(|id| {
            let order = order_status(&mut after, id, restart);
            assert_eq!(order["status"], "created", "{order}");
            order["order_id"].as_str().unwrap().to_string()
        })
        .collect();
    // The order created before the crash is still known by its key.
    order_ids.push(assert_created(&create(&mut after, 1, restart)));
    assert_distinct(&order_ids);
    assert_eq!(queue_status(&mut after, restart)["processed"], 5);
    let orders = after.demo_services().orders();
    assert_eq!(orders.len() - orders_before_the_crash, 5);
    assert_eq!(orders.repeated_deliveries(), 0);
}

#[test]
fn delivery_interrupted_before_its_commit_is_repeated_with_the_same_order_id() {
    let mut before = Harness::new(config());
    let now = before.at(0);
    before.set_service_health("order", false, now);
    create(&mut before, 1, now);
    let rows = before.take_journal_writes();
    before.set_service_health("order", true, now);
    run_process_queue(&mut before, now);
    let delivered_as = order_status(&mut before, 1, now)["order_id"].clone();

    // Crash before the "created" row was committed.
    let restart = before.at(1_000);
    let mut after = before.restart(rows, restart);
    after.handle_timeout(restart);
    let order = order_status(&mut after, 1, restart);
    assert_eq!(order["status"], "created");
    assert_eq!(
        order["order_id"], delivered_as,
        "the order service sees the same delivery key"
    );
    let orders = after.demo_services().orders();
    assert_eq!((orders.len(), orders.repeated_deliveries()), (1, 1));
}

#[test]
fn recovered_dead_letters_stay_dead_and_visible() {
    let mut before = Harness::new(with_queue(QueueConfig {
        max_attempts: 1,
        ..QueueConfig::default()
    }));
    let now = before.at(0);
    before.set_service_health("order", false, now);
    create(&mut before, 1, now);
    run_process_queue(&mut before, now);
    let rows = before.take_journal_writes();
    assert_eq!(rows.last().unwrap().status, WriteStatus::DeadLetter);

    let restart = before.at(1_000);
    let mut after = before.restart(rows, restart);
    after.set_service_health("order", true, restart);
    after.run_timers_until(restart + Duration::from_secs(60));
    assert_eq!(
        order_status(&mut after, 1, restart)["status"],
        "dead_letter"
    );
    assert_eq!(queue_status(&mut after, restart)["dead_letters"], 1);
    assert_eq!(after.calls_made("order"), 0);
}

#[test]
fn queued_reply_is_still_true_in_the_same_instant_even_with_a_zero_retry_delay() {
    // One attempt allowed and no wait between attempts: an order attempted
    // again inside the step that queued it would be dead-lettered before
    // its "queued" reply went out.
    let mut h = Harness::new(with_queue(QueueConfig {
        retry_base: Duration::ZERO,
        retry_max: Duration::ZERO,
        max_attempts: 1,
        ..QueueConfig::default()
    }));
    let t0 = h.at(0);
    h.set_service_health("order", false, t0);
    let queued = create(&mut h, 1, t0);
    assert_eq!(queued["status"], "queued", "{queued}");
    let status = call(&mut h, &get_order(request_id(&queued)).msg_id(2), t0);
    assert_eq!(
        status["status"], "queued",
        "still true at the same instant: {status}"
    );
    assert_eq!(status["attempts"], 0, "{status}");
}
