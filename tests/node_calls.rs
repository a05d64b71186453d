//! What the core adds under the Maelstrom node, seen with calls kept in
//! flight: the harness in `tests/support/node.rs` drives the `Node` itself
//! and holds every call it makes until the test answers it, fails it, or
//! lets its deadline pass. Time is passed in by hand; nothing sleeps.
//!
//! Covered: requests parked on their call (answered when it ends, or at its
//! deadline from the cache), request coalescing, exactly
//! `permitted_calls_in_half_open` probes however many requests arrive, late
//! answers, writes never sent twice at once (a delivery in flight, a repeat
//! of a create in flight, creates waiting behind a direct one in arrival
//! order), and the feature reads degrading through the product breaker.

mod support;

use grace::core::breaker::{BreakerConfig, BreakerState};
use grace::core::queue::WriteStatus;
use grace::core::{CallFailure, CallId, CallRequest, CallResult};
use grace::demo::in_process::DemoRequest;
use grace::maelstrom::node::NodeConfig;
use serde_json::json;
use std::time::Duration;
use support::node::{
    Harness, MS, Reply, Request, SEC, create_order, echo, get_order, get_product,
    get_recommendations, get_reviews, get_user, ms, process_queue, search, with_breaker,
};

/// Every default (a call's deadline is the service's default timeout).
fn config() -> NodeConfig {
    NodeConfig::default()
}

/// Every call's deadline, from when it was made.
fn call_timeout(h: &Harness) -> Duration {
    h.config().service.timeout
}

/// The one held call to `service`.
fn only_call(h: &Harness, service: &str) -> CallId {
    let ids = h.held_call_ids(service);
    assert_eq!(ids.len(), 1, "one call to {service} in flight: {ids:?}");
    ids[0]
}

fn refused() -> CallResult {
    CallResult::Failed(CallFailure::Refused)
}

/// The order request with `msg_id` (its default idempotency key).
fn order(msg_id: u64) -> Request {
    create_order(json!({"user_id": 1, "product_id": msg_id, "quantity": 1})).msg_id(msg_id)
}

/// The reply to `msg_id` among `replies`.
fn reply_to(replies: &[Reply], msg_id: u64) -> &Reply {
    replies
        .iter()
        .find(|reply| reply.in_reply_to() == Some(msg_id))
        .unwrap_or_else(|| panic!("no reply to {msg_id} in {replies:?}"))
}

// ---------------------------------------------------------------------------
// Parked reads
// ---------------------------------------------------------------------------

#[test]
fn read_is_parked_until_its_call_completes_while_other_requests_are_answered() {
    let mut h = Harness::holding_calls(config());
    let t0 = h.t0;
    h.park(&get_user(42).msg_id(1), t0);
    let call = only_call(&h, "user");
    // Requests that need no call are answered meanwhile.
    let echoed = h.send(&echo("meanwhile").msg_id(2), t0 + MS);
    assert_eq!(echoed.in_reply_to(), Some(2));

    let replies = h.answer(call, t0 + 10 * MS);
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].text,
        r#"{"type":"user_response","in_reply_to":1,"user":{"id":42,"name":"John Doe"},"circuit_state":"closed","from_cache":false}"#
    );
    assert_eq!(h.node().parked_requests(), 0);
    assert_eq!(h.node().core().calls_in_flight(), 0);
}

#[test]
fn read_whose_call_passes_its_deadline_is_answered_from_the_cache_then() {
    let mut h = Harness::holding_calls(config());
    let t0 = h.t0;
    h.park(&get_user(42), t0);
    h.park(&get_user(5000).msg_id(2), t0);
    let deadline = t0 + call_timeout(&h);
    assert_eq!(h.poll_timeout(), Some(deadline));
    assert!(h.handle_timeout(deadline - MS).is_empty(), "not yet");

    let replies = h.handle_timeout(deadline);
    assert_eq!(replies.len(), 2);
    assert_eq!(
        reply_to(&replies, 1).text,
        r#"{"type":"user_response","in_reply_to":1,"user":{"id":42,"name":"John Doe"},"circuit_state":"closed","from_cache":true}"#
    );
    // No copy of a never-fetched id: unavailable, at the deadline too.
    assert_eq!(reply_to(&replies, 2).code(), 11);
    let user = h.service("user");
    assert_eq!(h.node().core().stats(user).timeouts, 2);
    assert_eq!(h.breaker("user").consecutive_failures(), 2);
    assert_eq!(h.node().parked_requests(), 0);
}

// ---------------------------------------------------------------------------
// Coalescing
// ---------------------------------------------------------------------------

#[test]
fn concurrent_reads_of_one_id_share_one_call_and_each_gets_its_own_reply() {
    let mut h = Harness::holding_calls(config());
    let t0 = h.t0;
    h.park(&get_user(7).msg_id(1), t0);
    h.park(&get_user(7).msg_id(2).sent_by("c2"), t0 + MS);
    h.park(&get_user(7).msg_id(3), t0 + 2 * MS);
    // Another id, and a read asking for its own call to fail, share nothing.
    h.park(&get_user(8).msg_id(4), t0 + 3 * MS);
    h.park(&get_user(7).msg_id(5).service_unavailable(), t0 + 4 * MS);
    assert_eq!(h.calls_made("user"), 3);
    let user = h.service("user");
    assert_eq!(h.node().core().stats(user).coalesced, 2);

    let shared = h.held_call_ids("user")[0];
    let replies = h.answer(shared, t0 + 5 * MS);
    assert_eq!(replies.len(), 3, "{replies:?}");
    for (msg_id, client) in [(1, "c1"), (2, "c2"), (3, "c1")] {
        let reply = reply_to(&replies, msg_id);
        assert_eq!(reply.dest, client);
        assert_eq!(
            reply.text,
            format!(
                r#"{{"type":"user_response","in_reply_to":{msg_id},"user":{{"id":7,"name":"John Doe"}},"circuit_state":"closed","from_cache":false}}"#
            )
        );
    }
    // The others are still waiting on their own calls.
    assert_eq!(h.node().parked_requests(), 2);
}

#[test]
fn a_read_after_the_shared_call_ended_makes_a_call_of_its_own() {
    let mut h = Harness::holding_calls(config());
    let t0 = h.t0;
    h.park(&get_user(7), t0);
    let first = only_call(&h, "user");
    h.answer(first, t0 + MS);
    h.park(&get_user(7).msg_id(2), t0 + 2 * MS);
    assert_eq!(h.calls_made("user"), 2);
}

// ---------------------------------------------------------------------------
// Half-open probes
// ---------------------------------------------------------------------------

/// A breaker that opens at the first failure for a second and then lets
/// `probes` probes through.
fn probing(probes: u32) -> NodeConfig {
    with_breaker(BreakerConfig {
        failure_threshold: Some(1),
        open_timeout: SEC,
        permitted_calls_in_half_open: probes,
        ..BreakerConfig::default()
    })
}

#[test]
fn half_open_lets_exactly_the_permitted_probes_through_and_answers_the_rest_from_the_cache() {
    let mut h = Harness::holding_calls(probing(2));
    let t0 = h.t0;
    h.park(&get_user(1).service_unavailable(), t0);
    let opened = h.answer(only_call(&h, "user"), t0);
    assert_eq!(opened[0].body["circuit_state"], "open");

    let half_open = t0 + SEC;
    let before = h.calls_made("user");
    h.park(&get_user(11).msg_id(11), half_open);
    h.park(&get_user(12).msg_id(12), half_open);
    for id in 13..=15 {
        let reply = h.send(&get_user(id).msg_id(id), half_open);
        assert_eq!(
            reply.text,
            format!(
                r#"{{"type":"user_response","in_reply_to":{id},"user":{{"id":{id},"name":"John Doe"}},"circuit_state":"half_open","from_cache":true}}"#
            )
        );
    }
    assert_eq!(h.calls_made("user") - before, 2, "exactly two probes");
    assert_eq!(h.breaker("user").probes_out(), 2);

    let probes = h.held_call_ids("user");
    let first = h.answer(probes[0], half_open + MS);
    assert_eq!(first[0].body["from_cache"], false);
    assert_eq!(
        first[0].body["circuit_state"], "half_open",
        "one success of two"
    );
    // Still no third probe.
    assert_eq!(
        h.send(&get_user(16).msg_id(16), half_open + MS).body["from_cache"],
        true
    );
    let second = h.answer(probes[1], half_open + 2 * MS);
    assert_eq!(second[0].body["circuit_state"], "closed");
    assert_eq!(h.breaker("user").state(), BreakerState::Closed);
}

#[test]
fn one_failed_probe_of_several_reopens_and_the_others_answers_change_nothing() {
    let mut h = Harness::holding_calls(probing(2));
    let t0 = h.t0;
    h.park(&get_user(1).service_unavailable(), t0);
    h.answer(only_call(&h, "user"), t0);
    let half_open = t0 + SEC;
    h.park(&get_user(11).msg_id(11), half_open);
    h.park(&get_user(12).msg_id(12), half_open);
    let probes = h.held_call_ids("user");

    let failed = h.complete(probes[0], refused(), half_open + MS);
    assert_eq!(failed[0].body["from_cache"], true);
    assert_eq!(failed[0].body["circuit_state"], "open");
    let reopens_at = h.breaker("user").reopens_at();
    assert_eq!(reopens_at, Some(half_open + MS + 2 * SEC));

    // The other probe's success is that of a probe of a state now gone.
    let late_probe = h.answer(probes[1], half_open + 2 * MS);
    assert_eq!(late_probe[0].body["from_cache"], false);
    assert_eq!(late_probe[0].body["circuit_state"], "open");
    assert_eq!(h.breaker("user").state(), BreakerState::Open);
    assert_eq!(h.breaker("user").reopens_at(), reopens_at);
}

// ---------------------------------------------------------------------------
// Late answers
// ---------------------------------------------------------------------------

#[test]
fn late_answer_to_a_timed_out_call_changes_nothing_and_is_counted() {
    let mut h = Harness::holding_calls(config());
    let t0 = h.t0;
    h.park(&get_user(5000), t0);
    let call = only_call(&h, "user");
    let deadline = t0 + call_timeout(&h);
    let timed_out = h.handle_timeout(deadline);
    assert_eq!(timed_out[0].code(), 11);
    assert_eq!(h.breaker("user").consecutive_failures(), 1);

    let late = h.answer(call, deadline + 5 * MS);
    assert!(late.is_empty(), "nobody is waiting any more: {late:?}");
    assert_eq!(h.node().core().late_answers(), 1);
    assert_eq!(
        h.breaker("user").consecutive_failures(),
        1,
        "the late success does not reset the count"
    );
    assert_eq!(h.node().core().calls_in_flight(), 0);
    assert_eq!(h.poll_timeout(), None);
    // Nor did it leave a copy in the cache.
    h.park(
        &get_user(5000).msg_id(2).service_unavailable(),
        deadline + 6 * MS,
    );
    let failing = only_call(&h, "user");
    let without_copy = h.answer(failing, deadline + 6 * MS);
    assert_eq!(without_copy[0].code(), 11);
}

// ---------------------------------------------------------------------------
// Writes never sent twice at once
// ---------------------------------------------------------------------------

#[test]
fn order_whose_delivery_is_in_flight_is_not_sent_again() {
    let mut h = Harness::holding_calls(config());
    let t0 = h.t0;
    h.park(&order(1), t0);
    let queued = h.complete(only_call(&h, "order"), refused(), t0 + MS);
    assert_eq!(queued[0].body["status"], "queued");
    let request_id = queued[0].body["request_id"].as_u64().unwrap();

    let retry = h.poll_timeout().expect("the queued order's retry");
    assert!(h.handle_timeout(retry).is_empty());
    let delivery = only_call(&h, "order");
    assert!(matches!(
        h.held_call(delivery).request,
        CallRequest::Deliver(_)
    ));

    // While it is in flight: the timer, an operator's process_queue and a
    // repeat of the create send nothing more.
    let meanwhile = retry + 100 * MS;
    assert!(h.handle_timeout(meanwhile).is_empty());
    h.park(&process_queue().msg_id(2), meanwhile);
    let repeat = h.send(&order(1), meanwhile);
    assert_eq!(repeat.body["status"], "queued");
    assert_eq!(repeat.body["request_id"], request_id);
    assert_eq!(h.held_call_ids("order"), vec![delivery]);
    assert_eq!(
        h.calls_made("order"),
        2,
        "the direct attempt and one delivery"
    );

    // The delivery ends the operator's run too.
    let replies = h.answer(delivery, meanwhile + MS);
    assert_eq!(
        reply_to(&replies, 2).text,
        r#"{"type":"queue_processed","in_reply_to":2,"processed":1,"remaining":0}"#
    );
    let status = h.send(&get_order(request_id).msg_id(3), meanwhile + MS);
    assert_eq!(status.body["status"], "created");
    assert_eq!(status.body["attempts"], 1);
    assert_eq!(h.demo_services().orders().len(), 1);
    assert_eq!(h.demo_services().orders().repeated_deliveries(), 0);
}

#[test]
fn create_repeating_a_key_whose_first_create_is_in_flight_gets_the_first_outcome() {
    let mut h = Harness::holding_calls(config());
    let t0 = h.t0;
    h.park(&order(1).idempotency_key("k"), t0);
    h.park(&order(2).idempotency_key("k"), t0 + MS);
    h.park(&order(3).idempotency_key("k").sent_by("c2"), t0 + 2 * MS);
    let create = only_call(&h, "order");

    let replies = h.answer(create, t0 + 3 * MS);
    assert_eq!(replies.len(), 3);
    let order_id = reply_to(&replies, 1).body["order_id"].clone();
    for msg_id in 1..=3 {
        let reply = reply_to(&replies, msg_id);
        assert_eq!(reply.body["status"], "created", "{}", reply.text);
        assert_eq!(reply.body["order_id"], order_id);
    }
    assert_eq!(h.calls_made("order"), 1);
    assert_eq!(h.demo_services().orders().len(), 1);
}

#[test]
fn create_repeating_a_key_whose_first_create_fails_in_flight_is_queued_with_it() {
    let mut h = Harness::holding_calls(config());
    let t0 = h.t0;
    h.park(&order(1).idempotency_key("k"), t0);
    h.park(&order(2).idempotency_key("k"), t0 + MS);
    let replies = h.complete(only_call(&h, "order"), refused(), t0 + 2 * MS);
    assert_eq!(replies.len(), 2);
    for msg_id in 1..=2 {
        let reply = reply_to(&replies, msg_id);
        assert_eq!(
            reply.text,
            format!(
                r#"{{"type":"order_response","in_reply_to":{msg_id},"status":"queued","queued":true,"request_id":1,"queue_position":1,"durable":false}}"#
            )
        );
    }
    assert_eq!(h.queue().depth(), 1);
}

/// The idempotency key of the create a held call makes.
fn create_key(h: &Harness, id: CallId) -> String {
    match &h.held_call(id).request {
        CallRequest::Send(call) => match &call.request {
            DemoRequest::CreateOrder { idempotency_key } => idempotency_key.clone(),
            other => panic!("not a create: {other:?}"),
        },
        CallRequest::Deliver(delivery) => panic!("a delivery: {delivery:?}"),
    }
}

#[test]
fn creates_arriving_while_a_direct_create_is_in_flight_go_one_at_a_time_in_arrival_order() {
    let mut h = Harness::holding_calls(config());
    let t0 = h.t0;
    for msg_id in 1..=3 {
        h.park(&order(msg_id), t0 + ms(msg_id));
    }
    let mut created = Vec::new();
    for msg_id in 1..=3 {
        let call = only_call(&h, "order");
        assert_eq!(create_key(&h, call), format!("msg:c1:{msg_id}"));
        let replies = h.answer(call, t0 + ms(10 * msg_id));
        assert_eq!(replies.len(), 1);
        let reply = reply_to(&replies, msg_id);
        assert_eq!(reply.body["status"], "created", "{}", reply.text);
        created.push(reply.body["order_id"].clone());
    }
    assert!(h.held_calls().is_empty());
    let rows: Vec<(u64, WriteStatus)> = h
        .take_journal_writes()
        .iter()
        .map(|row| (row.request_id, row.status))
        .collect();
    assert_eq!(
        rows,
        vec![
            (1, WriteStatus::Delivered),
            (2, WriteStatus::Delivered),
            (3, WriteStatus::Delivered)
        ]
    );
    assert_ne!(created[0], created[1]);
}

#[test]
fn creates_waiting_behind_a_direct_create_that_fails_are_queued_behind_it_in_arrival_order() {
    let mut h = Harness::holding_calls(config());
    let t0 = h.t0;
    for msg_id in 1..=3 {
        h.park(&order(msg_id), t0 + ms(msg_id));
    }
    let replies = h.complete(only_call(&h, "order"), refused(), t0 + 10 * MS);
    assert_eq!(replies.len(), 3);
    for msg_id in 1..=3 {
        let reply = reply_to(&replies, msg_id);
        assert_eq!(reply.body["status"], "queued", "{}", reply.text);
        assert_eq!(reply.body["request_id"], msg_id);
        assert_eq!(reply.body["queue_position"], msg_id);
    }
    assert!(h.held_calls().is_empty(), "nothing is due yet");
    // Delivered later in the same order, one at a time: the head once its
    // retry is due, each next one as soon as the one before is delivered.
    let due = h.poll_timeout().expect("the head's retry");
    h.handle_timeout(due);
    let mut delivered = Vec::new();
    while h.queue().depth() > 0 {
        let delivery = only_call(&h, "order");
        match &h.held_call(delivery).request {
            CallRequest::Deliver(write) => delivered.push(write.request_id),
            other => panic!("not a delivery: {other:?}"),
        }
        h.answer(delivery, due);
    }
    assert_eq!(delivered, vec![1, 2, 3]);
}

// ---------------------------------------------------------------------------
// Feature reads through the product service
// ---------------------------------------------------------------------------

/// The three feature reads, and the key of each reply's list.
fn feature_reads() -> [(Request, &'static str); 3] {
    [
        (get_recommendations(1), "recommendations"),
        (search("Product"), "results"),
        (get_reviews(1), "reviews"),
    ]
}

#[test]
fn feature_reads_degrade_to_their_cached_copy_or_an_empty_list_when_the_product_service_fails() {
    let mut h = Harness::new(config());
    let t0 = h.t0;
    for (request, key) in feature_reads() {
        let fresh = h.send(&request.clone().msg_id(2), t0);
        assert_eq!(fresh.body["degraded"], false);
        let fresh_list = fresh.body[key].clone();
        assert!(!fresh_list.as_array().unwrap().is_empty());
        h.set_service_health("product", false, t0);
        let stale = h.send(&request, t0);
        assert_eq!(stale.body["degraded"], true, "{}", stale.text);
        assert_eq!(stale.body[key], fresh_list, "the last good answer");
        h.set_service_health("product", true, t0);
    }
    // Questions never answered before: nothing to fall back on.
    h.set_service_health("product", false, t0);
    for (request, key) in [
        (get_recommendations(99), "recommendations"),
        (search("Prod"), "results"),
        (get_reviews(99), "reviews"),
    ] {
        let empty = h.send(&request, t0);
        assert_eq!(empty.body[key], json!([]), "{}", empty.text);
        assert_eq!(empty.body["degraded"], true);
    }
}

#[test]
fn feature_reads_count_on_the_product_breaker_and_make_no_call_once_it_is_open() {
    // The failure-rate rule (as `--failure-rate-threshold 50
    // --minimum-calls 4`), the consecutive rule off.
    let mut h = Harness::new(with_breaker(BreakerConfig {
        failure_threshold: None,
        failure_rate_threshold: Some(50.0),
        minimum_calls: 4,
        sliding_window_size: 10,
        ..BreakerConfig::default()
    }));
    let t0 = h.t0;
    let fresh = h.send(&search("Product"), t0);
    h.send(&get_reviews(1), t0);
    h.set_service_health("product", false, t0);
    h.send(&search("Product"), t0);
    assert_eq!(h.breaker("product").state(), BreakerState::Closed);
    let fourth = h.send(&get_recommendations(1), t0);
    assert_eq!(fourth.body["degraded"], true);
    assert_eq!(
        h.breaker("product").state(),
        BreakerState::Open,
        "2 failures of 4 calls"
    );

    let calls = h.calls_made("product");
    let short_circuited = h.send(&search("Product"), t0 + MS);
    assert_eq!(short_circuited.body["degraded"], true);
    assert_eq!(short_circuited.body["results"], fresh.body["results"]);
    // The same breaker guards get_product.
    assert_eq!(h.send(&get_product(1), t0 + MS).body["_cached"], true);
    assert_eq!(
        h.calls_made("product"),
        calls,
        "an open breaker makes no call"
    );
    let status = h.status(t0 + MS);
    assert_eq!(status["circuits"]["product"]["state"], "open");
    assert_eq!(status["circuits"]["user"]["state"], "closed");
}

#[test]
fn feature_read_parked_past_its_deadline_answers_its_cached_copy_degraded() {
    let mut h = Harness::holding_calls(config());
    let t0 = h.t0;
    h.park(&search("Product"), t0);
    let fresh = h.answer(only_call(&h, "product"), t0 + MS);
    assert_eq!(fresh[0].body["degraded"], false);

    h.park(&search("Product").msg_id(2), t0 + 2 * MS);
    let deadline = t0 + 2 * MS + call_timeout(&h);
    let replies = h.handle_timeout(deadline);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].body["degraded"], true);
    assert_eq!(replies[0].body["results"], fresh[0].body["results"]);
    assert!(!replies[0].body["results"].as_array().unwrap().is_empty());
}
