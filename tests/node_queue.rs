//! The durable request queue through the sans-IO node: messages in as JSON
//! text, replies and journal rows out, time passed in by hand. No process,
//! no file, no sleep; a "restart" hands the rows a runtime would have
//! committed to a fresh node.

use grace::backend::{Backend, Service};
use grace::breaker::BreakerConfig;
use grace::node::{Node, NodeConfig};
use grace::queue::journal::JournalInfo;
use grace::queue::{OrderStatus, QueueConfig, RecoveredQueue, SettledCounts, StoredOrder};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const CLIENT: &str = "c1";
const NODE_ID: &str = "n1";
const SEED: u64 = 11;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn config() -> NodeConfig {
    NodeConfig {
        seed: SEED,
        ..NodeConfig::default()
    }
}

/// A node and the instant it started.
struct Harness {
    node: Node,
    t0: Instant,
    next_msg_id: u64,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(config())
    }

    fn with_config(config: NodeConfig) -> Self {
        let t0 = Instant::now();
        Harness {
            node: Node::new(config, Backend::demo(), t0),
            t0,
            next_msg_id: 1000,
        }
    }

    fn at(&self, millis: u64) -> Instant {
        self.t0 + ms(millis)
    }

    /// Sends `body` from `src` at `now` and returns the reply lines' bodies.
    fn send_from(&mut self, src: &str, body: Value, now: Instant) -> Vec<Value> {
        let message = json!({"src": src, "dest": NODE_ID, "body": body}).to_string();
        self.node.handle_message(message.as_bytes(), 1, now);
        replies(&self.node.take_output())
    }

    /// Sends `body` from [`CLIENT`] and returns the one reply's body.
    fn call(&mut self, body: Value, now: Instant) -> Value {
        let mut replies = self.send_from(CLIENT, body.clone(), now);
        assert_eq!(replies.len(), 1, "one reply to {body}, got {replies:?}");
        replies.remove(0)
    }

    fn fresh_msg_id(&mut self) -> u64 {
        self.next_msg_id += 1;
        self.next_msg_id
    }

    fn create_order(&mut self, msg_id: u64, now: Instant) -> Value {
        self.call(create_order(msg_id), now)
    }

    fn set_order_service(&mut self, available: bool, now: Instant) {
        let msg_id = self.fresh_msg_id();
        let reply = self.call(
            json!({"type": "set_service_health", "msg_id": msg_id, "service": "order", "available": available}),
            now,
        );
        assert_eq!(reply["type"], "service_health_ok");
    }

    fn get_order(&mut self, request_id: u64, now: Instant) -> Value {
        let msg_id = self.fresh_msg_id();
        self.call(
            json!({"type": "get_order", "msg_id": msg_id, "request_id": request_id}),
            now,
        )
    }

    fn get_queue(&mut self, now: Instant) -> Value {
        let msg_id = self.fresh_msg_id();
        let reply = self.call(json!({"type": "get_queue", "msg_id": msg_id}), now);
        assert_eq!(reply["type"], "queue_status", "{reply}");
        reply
    }

    fn process_queue(&mut self, now: Instant) -> Value {
        let msg_id = self.fresh_msg_id();
        let reply = self.call(json!({"type": "process_queue", "msg_id": msg_id}), now);
        assert_eq!(reply["type"], "queue_processed", "{reply}");
        reply
    }

    fn order_calls(&self) -> u64 {
        self.node.backend().calls(Service::Order)
    }

    /// Runs the node's timer until nothing is left to do or `until` passes,
    /// as the runtime would; returns the instant it stopped at.
    fn run_timers_until(&mut self, until: Instant) -> Instant {
        let mut now = self.t0;
        for _ in 0..10_000 {
            match self.node.poll_timeout() {
                Some(deadline) if deadline <= until => {
                    now = now.max(deadline);
                    self.node.handle_timeout(now);
                    assert!(
                        self.node.take_output().is_empty(),
                        "no unsolicited messages to clients"
                    );
                }
                _ => return now,
            }
        }
        panic!("timers still busy after 10 000 wakeups");
    }
}

fn create_order(msg_id: u64) -> Value {
    json!({"type": "create_order", "msg_id": msg_id, "order": {"user_id": 123, "product_id": msg_id, "quantity": 1}})
}

fn replies(output: &[u8]) -> Vec<Value> {
    output
        .split(|&byte| byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            let envelope: Value = serde_json::from_slice(line).expect("reply is JSON");
            assert_eq!(envelope["src"], NODE_ID);
            envelope["body"].clone()
        })
        .collect()
}

fn reply_text(node: &mut Node, message: &str, now: Instant) -> String {
    node.handle_message(message.as_bytes(), 1, now);
    let output = String::from_utf8(node.take_output()).unwrap();
    let envelope: Value = serde_json::from_str(output.trim_end()).unwrap();
    // The body exactly as written: key order is part of the protocol.
    let start = output.find("\"body\":").unwrap() + "\"body\":".len();
    let body = output.trim_end()[start..output.trim_end().len() - 1].to_string();
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        envelope["body"]
    );
    body
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
    let mut h = Harness::new();
    let now = h.at(0);
    let body = reply_text(
        &mut h.node,
        r#"{"src":"c1","dest":"n1","body":{"type":"create_order","msg_id":1,"order":{"sku":"a"}}}"#,
        now,
    );
    let order_id = body
        .strip_prefix(
            r#"{"type":"order_response","in_reply_to":1,"status":"created","queued":false,"order_id":""#,
        )
        .and_then(|rest| rest.strip_suffix(r#""}"#))
        .unwrap_or_else(|| panic!("unexpected body {body}"));
    assert!(!order_id.is_empty());
    assert_eq!(h.node.queue().depth(), 0);
}

#[test]
fn order_is_queued_when_the_service_is_down_with_positions_counting_from_one() {
    let mut h = Harness::new();
    let now = h.at(0);
    // With a journal, as the binary runs: without one the reply would add
    // `"durable": false`.
    h.node.recover(durable(), RecoveredQueue::default(), now);
    h.set_order_service(false, now);
    let body = reply_text(
        &mut h.node,
        r#"{"src":"c1","dest":"n1","body":{"type":"create_order","msg_id":1,"order":{"sku":"a"}}}"#,
        now,
    );
    assert_eq!(
        body,
        r#"{"type":"order_response","in_reply_to":1,"status":"queued","queued":true,"request_id":1,"queue_position":1}"#
    );
    for msg_id in 2..=5 {
        let reply = h.create_order(msg_id, now);
        assert_eq!(assert_queued(&reply, msg_id), msg_id);
    }
    assert_eq!(h.get_queue(now)["depth"], 5);
}

#[test]
fn order_is_queued_when_only_this_request_finds_the_service_down() {
    let mut h = Harness::new();
    let now = h.at(0);
    let mut request = create_order(1);
    request["service_unavailable"] = json!(true);
    assert_queued(&h.call(request, now), 1);
    assert_eq!(h.order_calls(), 1);
}

#[test]
fn order_is_queued_without_a_call_when_the_order_breaker_is_open() {
    let mut h = Harness::new();
    let now = h.at(0);
    let mut request = create_order(1);
    request["force_failures"] = json!(1_000_000_000_000u64);
    assert_queued(&h.call(request, now), 1);
    // The breaker opened at its threshold; the order itself made no call.
    assert_eq!(
        h.order_calls(),
        u64::from(BreakerConfig::default().failure_threshold)
    );
    assert_queued(&h.create_order(2, now), 2);
    assert_eq!(
        h.order_calls(),
        u64::from(BreakerConfig::default().failure_threshold)
    );
}

#[test]
fn order_that_is_not_a_json_object_is_malformed() {
    let mut h = Harness::new();
    let now = h.at(0);
    for (msg_id, order) in [
        (1, json!([1])),
        (2, json!("x")),
        (3, json!(null)),
        (4, json!(7)),
    ] {
        let reply = h.call(
            json!({"type": "create_order", "msg_id": msg_id, "order": order}),
            now,
        );
        assert_error(&reply, 12);
        assert!(reply["text"].as_str().unwrap().contains("order"), "{reply}");
    }
    let missing = h.call(json!({"type": "create_order", "msg_id": 5}), now);
    assert_error(&missing, 12);
    assert!(missing["text"].as_str().unwrap().contains("order"));
    assert_eq!(h.order_calls(), 0);
    assert!(h.node.take_journal_writes().is_empty());
}

// ---------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------

#[test]
fn repeat_with_the_same_src_and_msg_id_gets_the_same_request_and_no_second_order() {
    let mut h = Harness::new();
    let now = h.at(0);
    h.set_order_service(false, now);
    let first = h.create_order(1, now);
    let other = h.create_order(2, now);
    let repeat = h.create_order(1, now + ms(10));
    assert_eq!(repeat, first);
    assert_eq!(assert_queued(&repeat, 1), request_id(&first));
    assert_eq!(h.get_queue(now)["depth"], 2);
    // A repeat of the second keeps the second's position.
    assert_eq!(h.create_order(2, now), other);
}

#[test]
fn same_msg_id_from_another_client_is_another_request() {
    let mut h = Harness::new();
    let now = h.at(0);
    h.set_order_service(false, now);
    let mine = h.create_order(1, now);
    let mut theirs = h.send_from("c2", create_order(1), now);
    assert_ne!(request_id(&mine), request_id(&theirs.remove(0)));
    assert_eq!(h.get_queue(now)["depth"], 2);
}

#[test]
fn explicit_idempotency_key_matches_across_msg_ids_and_clients() {
    let mut h = Harness::new();
    let now = h.at(0);
    h.set_order_service(false, now);
    let mut request = create_order(1);
    request["idempotency_key"] = json!("order-abc");
    let first = h.call(request.clone(), now);
    request["msg_id"] = json!(2);
    let again = h.call(request.clone(), now);
    assert_eq!(request_id(&again), request_id(&first));
    let mut from_elsewhere = h.send_from("c2", request.clone(), now);
    assert_eq!(request_id(&from_elsewhere.remove(0)), request_id(&first));
    // Integer keys work too, and do not collide with the string "7".
    request["idempotency_key"] = json!(7);
    let numeric = h.call(request.clone(), now);
    request["idempotency_key"] = json!("7");
    let textual = h.call(request, now);
    assert_ne!(request_id(&numeric), request_id(&textual));
    assert_eq!(h.get_queue(now)["depth"], 3);
}

#[test]
fn explicit_key_and_default_key_do_not_collide() {
    let mut h = Harness::new();
    let now = h.at(0);
    h.set_order_service(false, now);
    let by_msg_id = h.create_order(1, now);
    let mut request = create_order(2);
    request["idempotency_key"] = json!(format!("msg:{CLIENT}:1"));
    let by_key = h.call(request, now);
    assert_ne!(request_id(&by_msg_id), request_id(&by_key));
}

#[test]
fn repeat_after_delivery_reports_created_with_the_same_order_id() {
    let mut h = Harness::new();
    let now = h.at(0);
    h.set_order_service(false, now);
    let queued = request_id(&h.create_order(1, now));
    h.set_order_service(true, now);
    let later = h.run_timers_until(h.at(60_000));
    assert_eq!(h.node.queue().depth(), 0);
    let order_id = h.get_order(queued, later)["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    let calls = h.order_calls();
    let repeat = h.create_order(1, later);
    assert_eq!(assert_created(&repeat), order_id);
    assert_eq!(h.order_calls(), calls, "a repeat makes no call");
    assert_eq!(h.node.backend().orders_created(), 1);
    assert_eq!(h.node.backend().repeated_order_deliveries(), 0);
}

#[test]
fn repeat_of_an_order_created_at_once_gets_the_same_order_id() {
    let mut h = Harness::new();
    let now = h.at(0);
    let order_id = assert_created(&h.create_order(1, now));
    // Even with the service down now, the repeat is not queued.
    h.set_order_service(false, now);
    assert_eq!(assert_created(&h.create_order(1, now)), order_id);
    assert_eq!(h.node.backend().orders_created(), 1);
    assert_eq!(h.node.queue().depth(), 0);
}

#[test]
fn request_without_msg_id_has_no_default_key_and_is_a_new_order_each_time() {
    let mut h = Harness::new();
    let now = h.at(0);
    h.set_order_service(false, now);
    let body = json!({"type": "create_order", "order": {"sku": 1}});
    let first = h.call(body.clone(), now);
    let second = h.call(body, now);
    assert!(first.get("in_reply_to").is_none());
    assert_ne!(request_id(&first), request_id(&second));
}

// ---------------------------------------------------------------------------
// get_order and get_queue
// ---------------------------------------------------------------------------

#[test]
fn get_order_follows_an_order_from_queued_to_created() {
    let mut h = Harness::new();
    let now = h.at(0);
    h.set_order_service(false, now);
    let id = request_id(&h.create_order(1, now));
    assert_eq!(
        h.get_order(id, now),
        json!({"type": "order_status", "in_reply_to": 1001 + 1, "request_id": id, "status": "queued", "attempts": 0})
    );
    h.set_order_service(true, now);
    let later = h.run_timers_until(h.at(60_000));
    let created = h.get_order(id, later);
    assert_eq!(created["status"], "created");
    assert!(created["attempts"].as_u64().unwrap() >= 1);
    let order_id = created["order_id"].as_str().unwrap().to_string();
    let by_order_id = h.call(
        json!({"type": "get_order", "msg_id": 1, "order_id": order_id}),
        later,
    );
    assert_eq!(by_order_id["request_id"], id);
    assert_eq!(by_order_id["status"], "created");
}

#[test]
fn get_order_of_an_unknown_id_is_not_found_and_without_an_id_is_malformed() {
    let mut h = Harness::new();
    let now = h.at(0);
    assert_error(&h.get_order(42, now), 20);
    let unknown_order = h.call(
        json!({"type": "get_order", "msg_id": 1, "order_id": "ord-9"}),
        now,
    );
    assert_error(&unknown_order, 20);
    assert_error(&h.call(json!({"type": "get_order", "msg_id": 2}), now), 12);
    assert_error(
        &h.call(
            json!({"type": "get_order", "msg_id": 3, "request_id": "x"}),
            now,
        ),
        12,
    );
}

#[test]
fn get_queue_shows_depth_totals_and_the_oldest_pending_with_their_wait() {
    let mut h = Harness::new();
    let now = h.at(0);
    h.set_order_service(false, now);
    for msg_id in 1..=15 {
        h.create_order(msg_id, now);
    }
    let queue = h.get_queue(h.at(40));
    assert_eq!(queue["depth"], 15);
    assert_eq!(queue["processed"], 0);
    assert_eq!(queue["dead_letters"], 0);
    let pending = queue["pending"].as_array().unwrap();
    assert_eq!(pending.len(), grace::queue::QUEUE_LISTING_LIMIT);
    assert_eq!(
        pending[0],
        json!({"request_id": 1, "attempts": 0, "next_attempt_in_ms": 60})
    );
    let ids: Vec<u64> = pending.iter().map(request_id).collect();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
}

#[test]
fn get_queue_counts_the_open_breaker_in_the_wait_before_the_next_attempt() {
    let mut h = Harness::new();
    let open_timeout = BreakerConfig::default().open_timeout;
    let now = h.at(0);
    let mut first = create_order(1);
    first["force_failures"] = json!(BreakerConfig::default().failure_threshold);
    h.call(first, now);
    h.create_order(2, now);
    // Both are past their own backoff, but nothing is tried before the
    // breaker half-opens.
    let at = now + ms(1_000);
    let queue = h.get_queue(at);
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
    let mut h = Harness::new();
    let now = h.at(0);
    h.set_order_service(false, now);
    h.create_order(1, now);
    let status = h.call(json!({"type": "get_status", "msg_id": 1}), now);
    assert_eq!(status["queue"]["depth"], 1);
    assert_eq!(status["queue"]["dead_letters"], 0);
    assert_eq!(status["queue"]["durable"], false);

    let mut durable = Harness::new();
    let journal = PathBuf::from("/data/n1.journal.sqlite");
    durable.node.recover(
        JournalInfo::durable(Some(journal.clone())),
        RecoveredQueue::default(),
        now,
    );
    let status = durable.call(json!({"type": "get_status", "msg_id": 1}), now);
    assert_eq!(status["queue"]["durable"], true);
    assert_eq!(status["queue"]["journal"], journal.to_str().unwrap());
}

// ---------------------------------------------------------------------------
// Delivery
// ---------------------------------------------------------------------------

#[test]
fn queued_orders_are_delivered_by_the_timer_once_the_order_breaker_half_opens() {
    let mut h = Harness::new();
    let open_timeout = BreakerConfig::default().open_timeout;
    let now = h.at(0);
    let mut first = create_order(1);
    first["force_failures"] = json!(BreakerConfig::default().failure_threshold);
    assert_queued(&h.call(first, now), 1);
    for msg_id in 2..=4 {
        assert_queued(&h.create_order(msg_id, h.at(msg_id)), msg_id);
    }
    let calls = h.order_calls();
    // The head is due after the base delay, but the breaker holds it back
    // until it half-opens.
    assert_eq!(h.node.poll_timeout(), Some(now + open_timeout));
    h.node.handle_timeout(now + open_timeout - ms(1));
    assert_eq!(h.order_calls(), calls, "an open breaker makes no call");
    assert_eq!(h.node.queue().depth(), 4);

    h.node.take_journal_writes();
    h.node.handle_timeout(now + open_timeout);
    assert!(h.node.take_output().is_empty(), "no unsolicited messages");
    assert_eq!(h.node.queue().depth(), 0);
    assert_eq!(h.order_calls(), calls + 4);
    assert_eq!(h.node.poll_timeout(), None);
    // Delivered in order of arrival, each once.
    assert_eq!(
        delivered_in_order(&h.node.take_journal_writes()),
        vec![1, 2, 3, 4]
    );
    let mut order_ids = Vec::new();
    for id in 1..=4 {
        let order = h.get_order(id, now + open_timeout);
        assert_eq!(order["status"], "created");
        assert_eq!(order["attempts"], 1);
        order_ids.push(order["order_id"].as_str().unwrap().to_string());
    }
    assert_distinct(&order_ids);
    assert_eq!(h.node.backend().orders_created(), 4);
    assert_eq!(h.get_queue(now + open_timeout)["processed"], 4);
}

#[test]
fn failed_probe_reopens_the_breaker_and_the_head_waits_for_both_breaker_and_backoff() {
    let mut h = Harness::new();
    let breaker = BreakerConfig::default();
    let now = h.at(0);
    h.set_order_service(false, now);
    let mut first = create_order(1);
    first["force_failures"] = json!(breaker.failure_threshold);
    assert_queued(&h.call(first, now), 1);
    let probe_at = h.node.poll_timeout().unwrap();
    assert_eq!(probe_at, now + breaker.open_timeout);
    h.node.handle_timeout(probe_at);
    assert_eq!(h.get_order(1, probe_at)["attempts"], 1);
    // The breaker re-opened with a doubled wait; the head's own backoff is
    // shorter, so the breaker decides the next wake-up.
    assert_eq!(
        h.node.poll_timeout(),
        Some(probe_at + breaker.open_timeout * 2)
    );
}

#[test]
fn only_the_head_is_attempted_and_its_backoff_holds_back_the_rest() {
    let mut h = Harness::with_config(NodeConfig {
        breaker: BreakerConfig {
            failure_threshold: 1000,
            ..BreakerConfig::default()
        },
        ..config()
    });
    let now = h.at(0);
    h.set_order_service(false, now);
    for msg_id in 1..=3 {
        h.create_order(msg_id, now);
    }
    let calls = h.order_calls();
    let mut at = now;
    for attempt in 1..=5u64 {
        let deadline = h.node.poll_timeout().unwrap();
        assert!(deadline > at);
        h.node.handle_timeout(deadline - ms(1));
        assert_eq!(h.order_calls(), calls + attempt - 1, "not due yet");
        h.node.handle_timeout(deadline);
        at = deadline;
        assert_eq!(h.order_calls(), calls + attempt, "one call per wake-up");
        assert_eq!(h.get_order(1, at)["attempts"], attempt);
        assert_eq!(h.get_order(2, at)["attempts"], 0);
        assert_eq!(h.get_order(3, at)["attempts"], 0);
    }
    // The service comes back: the head first, then the rest, in order.
    h.node.take_journal_writes();
    h.set_order_service(true, at);
    h.run_timers_until(at + Duration::from_secs(60));
    assert_eq!(
        delivered_in_order(&h.node.take_journal_writes()),
        vec![1, 2, 3]
    );
}

#[test]
fn new_order_never_overtakes_queued_ones() {
    let mut h = Harness::new();
    let now = h.at(0);
    h.set_order_service(false, now);
    assert_queued(&h.create_order(1, now), 1);
    h.set_order_service(true, now);
    // The head is not due yet, so the newcomer queues behind it.
    assert_queued(&h.create_order(2, h.at(50)), 2);
    // Once the head is due, a newcomer finds the queue delivered first,
    // and with nothing left waiting, is created at once.
    h.node.take_journal_writes();
    assert_created(&h.create_order(3, h.at(100)));
    let rows = h.node.take_journal_writes();
    assert_eq!(delivered_in_order(&rows), vec![1, 2]);
    assert_eq!(
        statuses(&rows).last(),
        Some(&(3, OrderStatus::Created, 1)),
        "created after the queued ones"
    );
}

#[test]
fn steady_stream_of_orders_is_created_again_soon_after_the_service_returns() {
    let mut h = Harness::new();
    let now = h.at(0);
    h.set_order_service(false, now);
    assert_queued(&h.create_order(1, now), 1);
    h.set_order_service(true, now);
    // An order every 50 ms, faster than the base retry delay: the queue
    // must drain, not keep every newcomer waiting behind the one before.
    let mut answers = Vec::new();
    for step in 1..=40 {
        let reply = h.create_order(1 + step, h.at(10 + 50 * step));
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
    let mut h = Harness::new();
    let now = h.at(0);
    h.set_order_service(false, now);
    for msg_id in 1..=3 {
        h.create_order(msg_id, now);
    }
    h.set_order_service(true, now);
    // Long before the head's first retry is due.
    let reply = h.process_queue(h.at(1));
    assert_eq!(reply["processed"], 3);
    assert_eq!(reply["remaining"], 0);
    assert_eq!(h.get_queue(h.at(1))["processed"], 3);
    assert_eq!(h.node.poll_timeout(), None);
}

#[test]
fn process_queue_respects_an_open_breaker() {
    let mut h = Harness::new();
    let now = h.at(0);
    let mut first = create_order(1);
    first["force_failures"] = json!(BreakerConfig::default().failure_threshold);
    h.call(first, now);
    h.create_order(2, now);
    let calls = h.order_calls();
    let reply = h.process_queue(h.at(1));
    assert_eq!(reply["processed"], 0);
    assert_eq!(reply["remaining"], 2);
    assert_eq!(h.order_calls(), calls, "an open breaker makes no call");
    assert_eq!(h.get_order(1, h.at(1))["attempts"], 0);
}

#[test]
fn process_queue_stops_at_the_first_failure_to_keep_arrival_order() {
    let mut h = Harness::new();
    let now = h.at(0);
    h.set_order_service(false, now);
    for msg_id in 1..=3 {
        h.create_order(msg_id, now);
    }
    let reply = h.process_queue(h.at(1));
    assert_eq!(reply["processed"], 0);
    assert_eq!(reply["remaining"], 3);
    assert_eq!(h.get_order(1, h.at(1))["attempts"], 1);
    assert_eq!(h.get_order(2, h.at(1))["attempts"], 0);
}

#[test]
fn order_is_dead_lettered_after_its_last_attempt_kept_and_visible() {
    let max_attempts = 3;
    let mut h = Harness::with_config(NodeConfig {
        queue: QueueConfig {
            max_attempts,
            ..QueueConfig::default()
        },
        ..config()
    });
    let now = h.at(0);
    h.set_order_service(false, now);
    let doomed = request_id(&h.create_order(1, now));
    let behind = request_id(&h.create_order(2, now));
    // Let the head fail its attempts (the breaker opens and half-opens on
    // the way; the timer handles that).
    let mut at = now;
    while h.node.queue().dead_letters() == 0 {
        at = h.node.poll_timeout().expect("work is pending");
        h.node.handle_timeout(at);
        assert!(at < now + Duration::from_secs(3600), "never dead-lettered");
    }
    let dead = h.get_order(doomed, at);
    assert_eq!(dead["status"], "dead_letter");
    assert_eq!(dead["attempts"], max_attempts);
    assert!(dead.get("order_id").is_none());
    assert_eq!(h.get_order(behind, at)["status"], "queued");

    h.set_order_service(true, at);
    let end = h.run_timers_until(at + Duration::from_secs(3600));
    assert_eq!(h.get_order(behind, end)["status"], "created");
    let queue = h.get_queue(end);
    assert_eq!(queue["depth"], 0);
    assert_eq!(queue["dead_letters"], 1);
    assert_eq!(queue["processed"], 1);
    let status = h.call(json!({"type": "get_status", "msg_id": 1}), end);
    assert_eq!(status["queue"]["dead_letters"], 1);
    // Still there, never retried, and a repeat reports it.
    assert_eq!(h.get_order(doomed, end)["status"], "dead_letter");
    let repeat = h.create_order(1, end);
    assert_eq!(repeat["status"], "dead_letter");
    assert_eq!(repeat["request_id"], doomed);
    assert_eq!(h.node.backend().orders_created(), 1);
}

#[test]
fn nothing_to_wake_up_for_when_nothing_waits() {
    let mut h = Harness::new();
    assert_eq!(h.node.poll_timeout(), None);
    h.create_order(1, h.at(0));
    assert_eq!(h.node.poll_timeout(), None);
}

// ---------------------------------------------------------------------------
// Journal rows
// ---------------------------------------------------------------------------

/// Request ids of the queued orders delivered by `rows`, in delivery order.
fn delivered_in_order(rows: &[StoredOrder]) -> Vec<u64> {
    rows.iter()
        .filter(|row| row.status == OrderStatus::Created && row.was_queued)
        .map(|row| row.request_id)
        .collect()
}

fn assert_distinct(order_ids: &[String]) {
    let distinct: std::collections::HashSet<&String> = order_ids.iter().collect();
    assert_eq!(distinct.len(), order_ids.len(), "{order_ids:?}");
}

fn statuses(rows: &[StoredOrder]) -> Vec<(u64, OrderStatus, u32)> {
    rows.iter()
        .map(|row| (row.request_id, row.status, row.attempts))
        .collect()
}

#[test]
fn every_state_change_yields_a_journal_row_and_reads_yield_none() {
    let mut h = Harness::with_config(NodeConfig {
        queue: QueueConfig {
            max_attempts: 2,
            ..QueueConfig::default()
        },
        breaker: BreakerConfig {
            failure_threshold: 1000,
            ..BreakerConfig::default()
        },
        ..config()
    });
    let now = h.at(0);
    assert_created(&h.create_order(1, now));
    let rows = h.node.take_journal_writes();
    assert_eq!(statuses(&rows), vec![(1, OrderStatus::Created, 1)]);
    assert!(!rows[0].was_queued);

    h.set_order_service(false, now);
    assert!(h.node.take_journal_writes().is_empty());
    h.create_order(2, now);
    h.create_order(3, now);
    let rows = h.node.take_journal_writes();
    assert_eq!(
        statuses(&rows),
        vec![(2, OrderStatus::Queued, 0), (3, OrderStatus::Queued, 0)]
    );
    assert_eq!(
        rows[0].order.as_ref().unwrap().get(),
        r#"{"product_id":2,"quantity":1,"user_id":123}"#,
        "the order is stored as the client sent it"
    );

    // Repeats and reads change nothing.
    h.create_order(2, now);
    h.get_order(2, now);
    h.get_queue(now);
    h.call(json!({"type": "get_status", "msg_id": 9}), now);
    assert!(h.node.take_journal_writes().is_empty());

    // A failed attempt, then the dead letter.
    let retry = h.node.poll_timeout().unwrap();
    h.node.handle_timeout(retry);
    assert_eq!(
        statuses(&h.node.take_journal_writes()),
        vec![(2, OrderStatus::Queued, 1)]
    );
    let retry = h.node.poll_timeout().unwrap();
    h.node.handle_timeout(retry);
    // The dead letter makes way, so the next request is attempted at once.
    assert_eq!(
        statuses(&h.node.take_journal_writes()),
        vec![(2, OrderStatus::DeadLetter, 2), (3, OrderStatus::Queued, 1)]
    );

    // A delivery.
    h.set_order_service(true, retry);
    h.process_queue(retry);
    let rows = h.node.take_journal_writes();
    assert_eq!(statuses(&rows), vec![(3, OrderStatus::Created, 2)]);
    let order_id = rows[0]
        .order_id
        .clone()
        .expect("created row has its order id");
    assert_eq!(h.get_order(3, retry)["order_id"], order_id);
    assert!(rows[0].was_queued);
}

// ---------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------

/// What a journal holds after `rows` were committed in turn: the last row of
/// each request id, in id order.
fn committed(rows: impl IntoIterator<Item = StoredOrder>) -> RecoveredQueue {
    let mut by_id = BTreeMap::new();
    for row in rows {
        by_id.insert(row.request_id, row);
    }
    RecoveredQueue::from_rows(by_id.into_values().collect(), SettledCounts::default(), 0)
}

fn durable() -> JournalInfo {
    JournalInfo::durable(Some(PathBuf::from("/data/n1.journal.sqlite")))
}

#[test]
fn restarted_node_resumes_pending_orders_in_order_and_keeps_request_ids_unique() {
    let mut before = Harness::new();
    let now = before.at(0);
    assert_created(&before.create_order(1, now));
    before.set_order_service(false, now);
    for msg_id in 2..=5 {
        before.create_order(msg_id, now);
    }
    let mut rows = before.node.take_journal_writes();
    // Accepted after the last commit, so never answered: lost by the crash.
    before.create_order(6, now);
    drop(before);
    rows.reverse(); // the journal hands rows back in id order whatever the order of writes
    let recovered = committed(rows);

    let mut after = Harness::new();
    let restart = after.at(0);
    // Down for a moment, so the queue can be looked at before it drains.
    after.set_order_service(false, restart);
    after.node.recover(durable(), recovered, restart);
    // Pending orders are due at once.
    assert_eq!(after.node.poll_timeout(), Some(restart));
    let queue = after.get_queue(restart);
    assert_eq!(queue["depth"], 4);
    let ids: Vec<u64> = queue["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(request_id)
        .collect();
    assert_eq!(ids, vec![2, 3, 4, 5]);

    // A repeat finds its request; a new request gets a fresh id.
    assert_eq!(assert_queued(&after.create_order(3, restart), 2), 3);
    let fresh = request_id(&after.create_order(7, restart));
    assert_eq!(fresh, 6, "the lost request's id was never answered");
    after.set_order_service(true, restart);
    after.run_timers_until(restart + Duration::from_secs(60));
    assert_eq!(after.node.queue().depth(), 0);
    assert_eq!(
        delivered_in_order(&after.node.take_journal_writes()),
        vec![2, 3, 4, 5, 6]
    );
    let mut order_ids: Vec<String> = (2..=6)
        .map(|id| {
            let order = after.get_order(id, restart);
            assert_eq!(order["status"], "created", "{order}");
            order["order_id"].as_str().unwrap().to_string()
        })
        .collect();
    // The order created before the crash is still known by its key.
    order_ids.push(assert_created(&after.create_order(1, restart)));
    assert_distinct(&order_ids);
    assert_eq!(after.get_queue(restart)["processed"], 5);
    assert_eq!(after.node.backend().orders_created(), 5);
}

#[test]
fn delivery_interrupted_before_its_commit_is_repeated_with_the_same_order_id() {
    let mut before = Harness::new();
    let now = before.at(0);
    before.set_order_service(false, now);
    before.create_order(1, now);
    let rows = before.node.take_journal_writes();
    before.set_order_service(true, now);
    before.process_queue(now);
    let delivered_as = before.get_order(1, now)["order_id"].clone();
    // Crash before the "created" row was committed.
    drop(before);

    let mut after = Harness::new();
    after.node.recover(durable(), committed(rows), after.at(0));
    after.node.handle_timeout(after.at(0));
    let order = after.get_order(1, after.at(0));
    assert_eq!(order["status"], "created");
    assert_eq!(
        order["order_id"], delivered_as,
        "the order service sees the same delivery key"
    );
}

#[test]
fn recovered_dead_letters_stay_dead_and_visible() {
    let mut before = Harness::with_config(NodeConfig {
        queue: QueueConfig {
            max_attempts: 1,
            ..QueueConfig::default()
        },
        ..config()
    });
    let now = before.at(0);
    before.set_order_service(false, now);
    before.create_order(1, now);
    before.process_queue(now);
    let rows = before.node.take_journal_writes();
    assert_eq!(rows.last().unwrap().status, OrderStatus::DeadLetter);

    let mut after = Harness::new();
    after.node.recover(durable(), committed(rows), after.at(0));
    after.run_timers_until(after.at(60_000));
    assert_eq!(after.get_order(1, after.at(0))["status"], "dead_letter");
    assert_eq!(after.get_queue(after.at(0))["dead_letters"], 1);
    assert_eq!(after.order_calls(), 0);
}

#[test]
fn queued_reply_is_still_true_in_the_same_instant_even_with_a_zero_retry_delay() {
    // One attempt allowed and no wait between attempts: an order attempted
    // again inside the step that queued it would be dead-lettered before
    // its "queued" reply went out.
    let mut harness = Harness::with_config(NodeConfig {
        queue: QueueConfig {
            retry_base: Duration::ZERO,
            retry_max: Duration::ZERO,
            max_attempts: 1,
            ..QueueConfig::default()
        },
        ..config()
    });
    let t0 = harness.at(0);
    harness.set_order_service(false, t0);
    let queued = harness.create_order(1, t0);
    assert_eq!(queued["status"], "queued", "{queued}");
    let status = harness.call(
        json!({"type": "get_order", "msg_id": 2, "request_id": queued["request_id"]}),
        t0,
    );
    assert_eq!(
        status["status"], "queued",
        "still true at the same instant: {status}"
    );
    assert_eq!(status["attempts"], 0, "{status}");
}
