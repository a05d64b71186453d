//! The node's behaviour as a specification: every test drives the
//! Maelstrom node (with the demo services answering in-process) through
//! the harness in `tests/support/node.rs`, with messages and explicit
//! instants (no sleeping), and reads its replies.
//!
//! Reply bodies are compared as the exact JSON text the node wrote, so key
//! order (`type`, `in_reply_to`, then the documented fields) is part of
//! what is checked.

mod support;

use grace::core::breaker::{BreakerConfig, BreakerState, Transition, TransitionReason};
use grace::core::cache::DEFAULT_CAPACITY;
use grace::demo::{DEMO_WARM_IDS, DemoData};
use grace::maelstrom::node::NodeConfig;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::node::{
    Harness, MS, Reply, Request, SEC, echo, get_product, get_recommendations, get_reviews,
    get_user, init, report_cpu, search, set_feature, set_mode, set_service_health, with_breaker,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Defaults, except the consecutive-failure breaker.
fn breaker(
    failure_threshold: u32,
    open_timeout: Duration,
    open_timeout_max: Duration,
) -> NodeConfig {
    with_breaker(BreakerConfig {
        failure_threshold: Some(failure_threshold),
        open_timeout,
        open_timeout_max,
        ..BreakerConfig::default()
    })
}

/// A node with `config`, and the instant its cache was warmed.
fn start(config: NodeConfig) -> (Harness, Instant) {
    let h = Harness::new(config);
    let t0 = h.t0;
    (h, t0)
}

/// A node with every default.
fn demo_node() -> (Harness, Instant) {
    start(NodeConfig::default())
}

/// Fails user reads until the user breaker opens; returns the calls it took.
fn open_user_breaker(h: &mut Harness, now: Instant) -> u64 {
    let before = h.calls_made("user");
    let reply = h.send(&get_user(1).force_failures(1000), now);
    assert_eq!(reply.body["circuit_state"], "open");
    h.calls_made("user") - before
}

// ---------------------------------------------------------------------------
// The seed's examples, exactly
// ---------------------------------------------------------------------------

#[test]
fn seed_circuit_opens_sample_body_is_exact() {
    let (mut h, t0) = demo_node();
    let input = br#"{"src":"client","dest":"api","body":{"type":"get_user","msg_id":1,"user_id":123,"force_failures":6}}"#;
    let replies = h.feed(input, t0);
    assert_eq!(replies.len(), 1);
    assert_eq!(
        (replies[0].src.as_str(), replies[0].dest.as_str()),
        ("api", "client")
    );
    assert_eq!(
        replies[0].text,
        r#"{"type":"user_response","in_reply_to":1,"user":{"id":123,"name":"John Doe"},"circuit_state":"open","from_cache":true}"#
    );
}

#[test]
fn seed_cached_product_sample_body_is_exact() {
    let (mut h, t0) = demo_node();
    let input = br#"{"src":"client","dest":"api","body":{"type":"get_product","msg_id":1,"product_id":123,"service_unavailable":true}}"#;
    let replies = h.feed(input, t0);
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].text,
        r#"{"type":"product_response","in_reply_to":1,"product":{"id":123,"name":"Product"},"_cached":true}"#
    );
}

#[test]
fn seed_set_mode_example_body_is_exact() {
    let (mut h, t0) = demo_node();
    let reply = h.send(&set_mode("degraded").with("cpu_usage", 85).msg_id(3), t0);
    assert_eq!(
        reply.text,
        r#"{"type":"mode_changed","in_reply_to":3,"mode":"degraded","disabled_features":["recommendations","search"]}"#
    );
}

#[test]
fn seed_case_input_pretty_printed_with_crlf_is_answered_the_same() {
    // The framer joins the lines; the node sees one message.
    let (mut h, t0) = demo_node();
    let input = "{\r\n\"src\": \"client\",\r\n\"dest\": \"api\",\r\n\"body\": {\r\n\"type\": \"get_user\",\r\n\"msg_id\": 1,\r\n\"user_id\": 123,\r\n\"force_failures\": 6\r\n}\r\n}";
    let replies = h.feed(input.as_bytes(), t0);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].body["from_cache"], true);
}

// ---------------------------------------------------------------------------
// Circuit breaker
// ---------------------------------------------------------------------------

#[test]
fn breaker_stays_closed_below_the_threshold_and_opens_at_it() {
    let (mut h, t0) = start(breaker(3, SEC, 10 * SEC));
    for failure in 1..=2 {
        let reply = h.send(&get_user(7).service_unavailable(), t0);
        assert_eq!(reply.body["circuit_state"], "closed");
        assert_eq!(reply.body["from_cache"], true, "the failed call falls back");
        assert_eq!(h.breaker("user").consecutive_failures(), failure);
    }
    let reply = h.send(&get_user(7).service_unavailable(), t0);
    assert_eq!(
        reply.text,
        r#"{"type":"user_response","in_reply_to":1,"user":{"id":7,"name":"John Doe"},"circuit_state":"open","from_cache":true}"#
    );
    assert_eq!(h.breaker("user").state(), BreakerState::Open);
    assert_eq!(h.calls_made("user"), 3);
    // The other services' breakers are untouched.
    assert_eq!(h.breaker("product").state(), BreakerState::Closed);
}

#[test]
fn success_in_closed_resets_the_failure_count() {
    let (mut h, t0) = start(breaker(3, SEC, 10 * SEC));
    h.send(&get_user(7).service_unavailable(), t0);
    h.send(&get_user(7).service_unavailable(), t0);
    let fresh = h.send(&get_user(7), t0);
    assert_eq!(fresh.body["from_cache"], false);
    assert_eq!(h.breaker("user").consecutive_failures(), 0);
    h.send(&get_user(7).service_unavailable(), t0);
    let reply = h.send(&get_user(7).service_unavailable(), t0);
    assert_eq!(reply.body["circuit_state"], "closed");
}

#[test]
fn open_breaker_serves_stale_copy_without_calling_service() {
    let (mut h, t0) = demo_node();
    open_user_breaker(&mut h, t0);
    let calls = h.calls_made("user");
    for id in [1, 123, 1000] {
        let reply = h.send(&get_user(id), t0 + 10 * MS);
        assert_eq!(reply.body["from_cache"], true);
        assert_eq!(reply.body["circuit_state"], "open");
        assert_eq!(reply.body["user"]["id"], id);
    }
    // Fault flags on a short-circuited request do not reach the service either.
    h.send(&get_user(5).service_unavailable(), t0 + 20 * MS);
    h.send(&get_user(5).force_failures(3), t0 + 30 * MS);
    assert_eq!(h.calls_made("user"), calls);
}

#[test]
fn open_breaker_with_no_copy_answers_temporarily_unavailable() {
    let (mut h, t0) = demo_node();
    open_user_breaker(&mut h, t0);
    let calls = h.calls_made("user");
    let reply = h.send(&get_user(5000), t0);
    assert_eq!(reply.code(), 11);
    assert!(
        reply
            .text
            .starts_with(r#"{"type":"error","in_reply_to":1,"code":11,"text":"#),
        "{}",
        reply.text
    );
    assert_eq!(h.calls_made("user"), calls);
}

#[test]
fn open_breaker_half_opens_when_handle_timeout_reaches_its_deadline() {
    let (mut h, t0) = start(breaker(5, SEC, 10 * SEC));
    open_user_breaker(&mut h, t0);
    assert_eq!(h.poll_timeout(), Some(t0 + SEC));
    assert_eq!(h.breaker("user").reopens_at(), Some(t0 + SEC));

    assert!(h.handle_timeout(t0 + SEC - MS).is_empty());
    assert_eq!(h.breaker("user").state(), BreakerState::Open);
    assert_eq!(h.poll_timeout(), Some(t0 + SEC));

    let replies = h.handle_timeout(t0 + SEC);
    assert_eq!(h.breaker("user").state(), BreakerState::HalfOpen);
    assert_eq!(h.poll_timeout(), None);
    assert!(replies.is_empty(), "timeouts write no replies");
}

#[test]
fn successful_probe_closes_the_breaker_and_reads_are_fresh_again() {
    let (mut h, t0) = start(breaker(5, SEC, 10 * SEC));
    open_user_breaker(&mut h, t0);
    h.handle_timeout(t0 + SEC);
    let calls = h.calls_made("user");
    let probe = h.send(&get_user(42), t0 + SEC);
    assert_eq!(
        probe.text,
        r#"{"type":"user_response","in_reply_to":1,"user":{"id":42,"name":"John Doe"},"circuit_state":"closed","from_cache":false}"#
    );
    assert_eq!(h.calls_made("user"), calls + 1);
    assert_eq!(h.breaker("user").consecutive_failures(), 0);
    assert_eq!(h.poll_timeout(), None);
}

#[test]
fn request_arriving_after_the_deadline_is_the_probe_without_handle_timeout() {
    let (mut h, t0) = start(breaker(5, SEC, 10 * SEC));
    open_user_breaker(&mut h, t0);
    let probe = h.send(&get_user(42), t0 + 3 * SEC);
    assert_eq!(probe.body["circuit_state"], "closed");
    assert_eq!(probe.body["from_cache"], false);
}

#[test]
fn failed_probe_doubles_the_open_timeout_up_to_the_max() {
    let (mut h, t0) = start(breaker(2, SEC, 3 * SEC));
    open_user_breaker(&mut h, t0);
    let mut deadline = t0 + SEC;
    let mut waits = vec![SEC];
    for _ in 0..3 {
        assert_eq!(h.poll_timeout(), Some(deadline));
        h.handle_timeout(deadline);
        assert_eq!(h.breaker("user").state(), BreakerState::HalfOpen);
        let probe = h.send(&get_user(9).service_unavailable(), deadline);
        assert_eq!(probe.body["circuit_state"], "open");
        assert_eq!(probe.body["from_cache"], true);
        let next = h.poll_timeout().expect("open again");
        waits.push(next - deadline);
        deadline = next;
    }
    assert_eq!(waits, vec![SEC, 2 * SEC, 3 * SEC, 3 * SEC]);
    let user_circuit = &h.status(deadline - 3 * SEC)["circuits"]["user"];
    assert_eq!(user_circuit["open_timeout_ms"], 3000);
    assert_eq!(user_circuit["half_open_in_ms"], 3000);

    // A successful probe resets the wait to its base.
    h.handle_timeout(deadline);
    h.send(&get_user(9), deadline);
    assert_eq!(h.breaker("user").current_open_timeout(), SEC);
    open_user_breaker(&mut h, deadline);
    assert_eq!(h.poll_timeout(), Some(deadline + SEC));
}

#[test]
fn force_failures_in_the_trillions_costs_only_threshold_calls() {
    let (mut h, t0) = demo_node();
    let reply = h.send(&get_user(123).force_failures(1_000_000_000_000), t0);
    assert_eq!(reply.body["circuit_state"], "open");
    assert_eq!(reply.body["from_cache"], true);
    let threshold = u64::from(h.config().service.breaker.failure_threshold.unwrap());
    assert_eq!(h.calls_made("user"), threshold);

    // While open, another such request costs nothing at all.
    h.send(&get_user(123).force_failures(1_000_000_000_000), t0 + MS);
    assert_eq!(h.calls_made("user"), threshold);
}

#[test]
fn force_failures_on_a_half_open_breaker_is_the_failed_probe() {
    let (mut h, t0) = start(breaker(3, SEC, 10 * SEC));
    open_user_breaker(&mut h, t0);
    h.handle_timeout(t0 + SEC);
    let calls = h.calls_made("user");
    let reply = h.send(&get_user(9).force_failures(50), t0 + SEC);
    assert_eq!(reply.body["circuit_state"], "open");
    assert_eq!(h.calls_made("user"), calls + 1);
    assert_eq!(h.poll_timeout(), Some(t0 + 3 * SEC));
}

#[test]
fn zero_force_failures_is_a_normal_read() {
    let (mut h, t0) = demo_node();
    let reply = h.send(&get_user(9).force_failures(0), t0);
    assert_eq!(reply.body["from_cache"], false);
    assert_eq!(h.calls_made("user"), 1);
}

#[test]
fn sticky_outage_opens_the_breaker_and_recovery_closes_it_through_a_probe() {
    let (mut h, t0) = start(breaker(2, SEC, 10 * SEC));
    let reply = h.send(&set_service_health("product", false).msg_id(4), t0);
    assert_eq!(
        reply.text,
        r#"{"type":"service_health_ok","in_reply_to":4,"service":"product","available":false}"#
    );
    assert_eq!(h.send(&get_product(3), t0).body["_cached"], true);
    assert_eq!(h.send(&get_product(3), t0).body["_cached"], true);
    assert_eq!(h.breaker("product").state(), BreakerState::Open);

    h.set_service_health("product", true, t0 + MS);
    // Still open: recovery is only noticed by the probe after the wait.
    assert_eq!(h.send(&get_product(3), t0 + 2 * MS).body["_cached"], true);
    let probe = h.send(&get_product(3), t0 + SEC);
    assert_eq!(
        probe.text,
        r#"{"type":"product_response","in_reply_to":1,"product":{"id":3,"name":"Product"},"_cached":false}"#
    );
    assert_eq!(h.breaker("product").state(), BreakerState::Closed);
}

#[test]
fn record_transitions_lists_every_transition_in_order() {
    let (mut h, t0) = start(breaker(2, SEC, 10 * SEC));
    h.node_mut().core_mut().record_transitions(true);
    open_user_breaker(&mut h, t0);
    h.handle_timeout(t0 + SEC);
    h.send(&get_user(1).service_unavailable(), t0 + SEC);
    h.handle_timeout(t0 + 3 * SEC);
    h.send(&get_user(1), t0 + 3 * SEC);

    use BreakerState::*;
    let user = h.service("user");
    let transition = |from, to, reason| (user, Transition { from, to, reason });
    let recorded: Vec<_> = h
        .node_mut()
        .core_mut()
        .take_transitions()
        .into_iter()
        .map(|record| (record.service, record.transition))
        .collect();
    assert_eq!(
        recorded,
        vec![
            transition(Closed, Open, TransitionReason::FailureThreshold(2)),
            transition(Open, HalfOpen, TransitionReason::OpenTimeoutElapsed),
            transition(HalfOpen, Open, TransitionReason::ProbeFailed(2 * SEC)),
            transition(Open, HalfOpen, TransitionReason::OpenTimeoutElapsed),
            transition(HalfOpen, Closed, TransitionReason::ProbeSucceeded),
        ]
    );
    assert!(
        h.node_mut().core_mut().take_transitions().is_empty(),
        "taking empties the list"
    );
}

#[test]
fn transitions_are_not_kept_unless_recording_is_on() {
    let (mut h, t0) = demo_node();
    open_user_breaker(&mut h, t0);
    assert!(h.node_mut().core_mut().take_transitions().is_empty());
}

// ---------------------------------------------------------------------------
// Fallback cache
// ---------------------------------------------------------------------------

fn with_max_stale(max_stale: Duration) -> NodeConfig {
    let mut config = NodeConfig::default();
    config.service.max_stale = max_stale;
    config
}

#[test]
fn normal_read_never_comes_from_cache_when_service_is_up() {
    let (mut h, t0) = demo_node();
    for id in [json!(1), json!(123), json!(1000), json!(1001), json!("x")] {
        let user = h.send(&get_user(id.clone()), t0);
        assert_eq!(user.body["from_cache"], false, "user {id}");
        let product = h.send(&get_product(id.clone()), t0);
        assert_eq!(product.body["_cached"], false, "product {id}");
    }
    assert_eq!(h.calls_made("user"), 5);
    assert_eq!(h.calls_made("product"), 5);
    assert_eq!(h.status(t0)["cache"]["fallbacks_served"], 0);
}

#[test]
fn successful_read_refreshes_the_cached_copy() {
    let (mut h, t0) = start(with_max_stale(10 * SEC));
    assert_eq!(h.send(&get_user(1), t0 + 8 * SEC).body["from_cache"], false);
    // At t0+15s the warm copies (fetched at t0) are too old; user 1's copy
    // was refreshed at t0+8s and still serves.
    let refreshed = h.send(&get_user(1).service_unavailable(), t0 + 15 * SEC);
    assert_eq!(refreshed.body["from_cache"], true);
    let expired = h.send(&get_user(2).service_unavailable(), t0 + 15 * SEC);
    assert_eq!(expired.code(), 11);
}

#[test]
fn copy_older_than_cache_max_stale_is_not_served() {
    let (mut h, t0) = start(with_max_stale(10 * SEC));
    let at_limit = h.send(&get_product(1).service_unavailable(), t0 + 10 * SEC);
    assert_eq!(
        at_limit.body["_cached"], true,
        "a copy exactly max_stale old still serves"
    );
    let too_old = h.send(&get_product(2).service_unavailable(), t0 + 10 * SEC + MS);
    assert_eq!(too_old.code(), 11);
    assert_eq!(too_old.body["in_reply_to"], 1);
}

#[test]
fn open_breaker_does_not_serve_a_copy_older_than_cache_max_stale() {
    let mut config = breaker(2, 60 * SEC, 60 * SEC);
    config.service.max_stale = 10 * SEC;
    let (mut h, t0) = start(config);
    open_user_breaker(&mut h, t0 + 9 * SEC);
    assert_eq!(h.send(&get_user(3), t0 + 10 * SEC).body["from_cache"], true);
    let expired = h.send(&get_user(4), t0 + 11 * SEC);
    assert_eq!(expired.code(), 11);
    assert_eq!(h.breaker("user").state(), BreakerState::Open);
}

#[test]
fn ids_outside_the_warm_set_are_unavailable_when_the_service_is_down() {
    let (mut h, t0) = demo_node();
    assert_eq!(h.send(&get_user(5000).service_unavailable(), t0).code(), 11);
    assert_eq!(
        h.send(&get_product(5000).service_unavailable(), t0).code(),
        11
    );
    assert_eq!(h.send(&get_user(0).service_unavailable(), t0).code(), 11);
    assert_eq!(h.send(&get_user(1001).service_unavailable(), t0).code(), 11);
}

#[test]
fn after_one_fresh_read_an_id_is_served_from_cache_when_down() {
    let (mut h, t0) = demo_node();
    assert_eq!(h.send(&get_user(5000), t0).body["from_cache"], false);
    let fallback = h.send(&get_user(5000).service_unavailable(), t0 + SEC);
    assert_eq!(
        fallback.text,
        r#"{"type":"user_response","in_reply_to":1,"user":{"id":5000,"name":"John Doe"},"circuit_state":"closed","from_cache":true}"#
    );
    // The user copy says nothing about the product of the same id.
    assert_eq!(
        h.send(&get_product(5000).service_unavailable(), t0 + SEC)
            .code(),
        11
    );
}

fn with_capacity(capacity: usize) -> NodeConfig {
    NodeConfig {
        cache_capacity: capacity,
        ..NodeConfig::default()
    }
}

#[test]
fn cache_capacity_evicts_the_least_recently_used_copy() {
    let (mut h, t0) = start(with_capacity(3));
    let cache = &h.status(t0)["cache"];
    assert_eq!(
        (cache["entries"].as_u64(), cache["capacity"].as_u64()),
        (Some(3), Some(3))
    );

    for id in [5001, 5002, 5003, 5001, 5004] {
        assert_eq!(h.send(&get_user(id), t0).body["from_cache"], false);
    }
    // 5001 was refreshed after 5002, so 5002 is the one that went.
    h.set_service_health("user", false, t0);
    assert_eq!(h.send(&get_user(5002), t0).code(), 11);
    for id in [5001, 5003, 5004] {
        assert_eq!(
            h.send(&get_user(id), t0).body["from_cache"],
            true,
            "user {id}"
        );
    }
    assert_eq!(h.status(t0)["cache"]["entries"], 3);
}

#[test]
fn cache_entries_stay_flat_however_many_ids_pass_through() {
    let (mut h, t0) = start(with_capacity(100));
    for id in 10_000..30_000 {
        let reply = if id % 2 == 0 {
            h.send(&get_user(id), t0)
        } else {
            h.send(&get_product(format!("p{id}")), t0)
        };
        assert_ne!(reply.body["type"], "error");
        if id % 1000 == 0 {
            assert!(h.status(t0)["cache"]["entries"].as_u64().unwrap() <= 100);
        }
    }
    let cache = &h.status(t0)["cache"];
    assert_eq!(cache["entries"], 100);
    assert_eq!(cache["capacity"], 100);
}

#[test]
fn string_and_integer_ids_are_distinct_and_echoed_as_given() {
    let (mut h, t0) = demo_node();
    // "123" (a string) was never fetched; 123 (an integer) is warm.
    assert_eq!(
        h.send(&get_user("123").service_unavailable(), t0).code(),
        11
    );
    assert_eq!(
        h.send(&get_user(123).service_unavailable(), t0).body["user"]["id"],
        123
    );

    let text = h.send(&get_user("123"), t0);
    assert_eq!(
        text.body["user"].to_string(),
        r#"{"id":"123","name":"John Doe"}"#
    );
    assert!(
        text.text
            .contains(r#""user":{"id":"123","name":"John Doe"}"#)
    );
    let cached = h.send(&get_user("123").service_unavailable(), t0);
    assert!(
        cached
            .text
            .contains(r#""user":{"id":"123","name":"John Doe"}"#)
    );
    assert_eq!(cached.body["from_cache"], true);

    for id in [
        json!("a \"quoted\" id"),
        json!("ünïcødé"),
        json!(-5),
        json!(18446744073709551615u64),
    ] {
        let product = h.send(&get_product(id.clone()), t0);
        let expected = format!(r#""product":{{"id":{id},"name":"Product"}}"#);
        assert!(
            product.text.contains(&expected),
            "{} lacks {expected}",
            product.text
        );
    }
}

#[test]
fn ill_typed_ids_are_malformed_requests_naming_the_field() {
    let (mut h, t0) = demo_node();
    for id in [json!(1.5), Value::Null, json!([1]), json!({}), json!(true)] {
        let reply = h.send(&get_user(id.clone()), t0);
        assert_eq!(reply.code(), 12, "user_id {id}");
        assert!(reply.error_text().contains("user_id"), "{}", reply.text);
    }
    assert_eq!(h.calls_made("user"), 0);
}

#[test]
fn fixtures_unknown_id_is_not_found_and_not_a_failure() {
    let data =
        DemoData::from_fixtures_json(r#"{"users":[{"id":1,"name":"Ada"}],"products":[]}"#).unwrap();
    let mut h = Harness::with_data(NodeConfig::default(), data);
    let t0 = h.t0;
    let missing = h.send(&get_user(2), t0);
    assert_eq!(missing.code(), 20);
    assert_eq!(h.breaker("user").consecutive_failures(), 0);
    let warm = h.send(&get_user(1).service_unavailable(), t0);
    assert!(
        warm.text.contains(r#""user":{"id":1,"name":"Ada"}"#),
        "{}",
        warm.text
    );
    assert_eq!(warm.body["from_cache"], true);
}

// ---------------------------------------------------------------------------
// Load modes and feature flags
// ---------------------------------------------------------------------------

#[test]
fn explicit_mode_is_an_override_whatever_the_cpu() {
    let (mut h, t0) = demo_node();
    let critical = h.send(&set_mode("critical").with("cpu_usage", 10), t0);
    assert_eq!(
        critical.text,
        r#"{"type":"mode_changed","in_reply_to":1,"mode":"critical","disabled_features":["recommendations","search","reviews"]}"#
    );
    let normal = h.send(&set_mode("normal").with("cpu_usage", 99), t0);
    assert_eq!(
        normal.text,
        r#"{"type":"mode_changed","in_reply_to":1,"mode":"normal","disabled_features":[]}"#
    );
    let without_cpu = h.send(&set_mode("degraded"), t0);
    assert_eq!(without_cpu.body["mode"], "degraded");
}

#[test]
fn auto_mode_follows_cpu_with_hysteresis() {
    let (mut h, t0) = demo_node();
    let auto = |cpu: f64| set_mode("auto").with("cpu_usage", cpu);
    let steps = [
        (report_cpu(79.9), "normal"),
        (report_cpu(80), "degraded"),
        (report_cpu(79), "degraded"),
        (auto(70.0), "degraded"),
        (report_cpu(69.9), "normal"),
        (report_cpu(95), "critical"),
        (report_cpu(85), "critical"),
        (report_cpu(84.9), "degraded"),
        (report_cpu(94), "degraded"),
        (auto(100.0), "critical"),
        (auto(0.0), "normal"),
    ];
    for (request, expected) in steps {
        let reply = h.send(&request, t0);
        assert_eq!(reply.body["mode"], expected, "after {}", request.line());
    }
}

#[test]
fn load_hovering_at_a_threshold_does_not_flap() {
    let (mut h, t0) = demo_node();
    h.send(&report_cpu(81), t0);
    for cpu in [79, 80, 78, 81, 75, 80, 72] {
        let reply = h.send(&report_cpu(cpu), t0);
        assert_eq!(reply.body["mode"], "degraded", "cpu {cpu}");
    }
}

#[test]
fn bad_set_mode_requests_are_malformed_naming_the_field() {
    let (mut h, t0) = demo_node();
    for (request, field) in [
        (set_mode("turbo").with("cpu_usage", 10), "mode"),
        (Request::new("set_mode").with("mode", 7), "mode"),
        (set_mode("auto"), "cpu_usage"),
        (Request::new("set_mode"), "cpu_usage"),
        (report_cpu("high"), "cpu_usage"),
        (report_cpu(101), "cpu_usage"),
        (report_cpu(-1), "cpu_usage"),
    ] {
        let reply = h.send(&request, t0);
        assert_eq!(reply.code(), 12, "{}", request.line());
        assert!(
            reply.error_text().contains(field),
            "{}: {}",
            request.line(),
            reply.text
        );
    }
    assert_eq!(
        h.status(t0)["mode"],
        "normal",
        "rejected requests change nothing"
    );
}

#[test]
fn kill_switch_disables_a_feature_regardless_of_mode() {
    let (mut h, t0) = demo_node();
    let killed = h.send(&set_feature("search", false), t0);
    assert_eq!(
        killed.text,
        r#"{"type":"feature_set","in_reply_to":1,"disabled_features":["search"]}"#
    );
    let search_reply = h.send(&search("Product").msg_id(2), t0);
    assert_eq!(
        search_reply.text,
        r#"{"type":"search_response","in_reply_to":2,"results":[],"degraded":true}"#
    );

    let critical = h.send(&set_mode("critical"), t0);
    assert_eq!(
        critical.body["disabled_features"],
        json!(["recommendations", "search", "reviews"])
    );
    let normal = h.send(&set_mode("normal"), t0);
    assert_eq!(normal.body["disabled_features"], json!(["search"]));

    let revived = h.send(&set_feature("search", true), t0);
    assert_eq!(revived.body["disabled_features"], json!([]));
    let search_reply = h.send(&search("Product").msg_id(3), t0);
    assert_eq!(search_reply.body["degraded"], false);
    assert!(!search_reply.body["results"].as_array().unwrap().is_empty());
}

#[test]
fn unknown_feature_is_malformed_naming_the_field() {
    let (mut h, t0) = demo_node();
    let reply = h.send(&set_feature("checkout", false), t0);
    assert_eq!(reply.code(), 12);
    assert!(reply.error_text().contains("feature"), "{}", reply.text);
    let reply = h.send(&set_feature("search", true).without("enabled"), t0);
    assert_eq!(reply.code(), 12);
    assert!(reply.error_text().contains("enabled"), "{}", reply.text);
}

/// What each feature request answers, as `(items listed, degraded)`.
fn feature_replies(h: &mut Harness, now: Instant) -> [(usize, bool); 3] {
    let requests = [
        (get_recommendations(1), "recommendations"),
        (search("prod"), "results"),
        (get_reviews(1), "reviews"),
    ];
    requests.map(|(request, key)| {
        let reply = h.send(&request, now);
        let list = reply.body[key]
            .as_array()
            .unwrap_or_else(|| panic!("{}", reply.text));
        (list.len(), reply.body["degraded"].as_bool().unwrap())
    })
}

#[test]
fn features_answer_fully_in_normal_mode_and_empty_when_shed() {
    let (mut h, t0) = demo_node();
    let normal = feature_replies(&mut h, t0);
    assert!(
        normal.iter().all(|&(len, degraded)| len > 0 && !degraded),
        "{normal:?}"
    );

    h.send(&set_mode("degraded"), t0);
    let degraded = feature_replies(&mut h, t0);
    assert_eq!(degraded[0], (0, true));
    assert_eq!(degraded[1], (0, true));
    assert!(degraded[2].0 > 0 && !degraded[2].1);

    h.send(&set_mode("critical"), t0);
    assert_eq!(feature_replies(&mut h, t0), [(0, true); 3]);
}

#[test]
fn shed_features_answer_with_the_documented_empty_bodies() {
    let (mut h, t0) = demo_node();
    h.send(&set_mode("critical"), t0);
    let cases = [
        (
            get_recommendations(1).msg_id(5),
            r#"{"type":"recommendations_response","in_reply_to":5,"recommendations":[],"degraded":true}"#,
        ),
        (
            get_reviews("p").msg_id(6),
            r#"{"type":"reviews_response","in_reply_to":6,"reviews":[],"degraded":true}"#,
        ),
    ];
    for (request, expected) in cases {
        assert_eq!(h.send(&request, t0).text, expected);
    }
}

const FEATURES: [&str; 3] = ["recommendations", "search", "reviews"];

/// The features a mode switches off by itself.
fn shed_by_mode(mode: &str) -> &'static [&'static str] {
    match mode {
        "normal" => &[],
        "degraded" => &["recommendations", "search"],
        "critical" => &FEATURES,
        other => panic!("unknown mode {other}"),
    }
}

#[derive(Debug, Clone)]
enum Control {
    Mode(Option<&'static str>, Option<u8>),
    Feature(usize, bool),
}

fn arb_control() -> impl Strategy<Value = Control> {
    let mode = prop_oneof![
        Just(None),
        Just(Some("auto")),
        Just(Some("normal")),
        Just(Some("degraded")),
        Just(Some("critical")),
    ];
    prop_oneof![
        (mode, prop::option::of(0u8..=100))
            .prop_filter("auto needs a cpu", |(mode, cpu)| {
                cpu.is_some() || !matches!(mode, None | Some("auto"))
            })
            .prop_map(|(mode, cpu)| Control::Mode(mode, cpu)),
        (0usize..3, any::<bool>())
            .prop_map(|(feature, enabled)| Control::Feature(feature, enabled)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the order of mode changes and kill switches, the disabled
    /// list is exactly what the mode sheds plus what is killed, in canonical
    /// order, and the feature requests agree with it.
    #[test]
    fn disabled_features_always_equal_what_mode_and_kill_switches_imply(
        controls in prop::collection::vec(arb_control(), 1..25),
    ) {
        let (mut h, t0) = demo_node();
        let mut killed = [false; 3];
        for control in &controls {
            let reply = match *control {
                Control::Mode(mode, cpu) => {
                    let mut request = Request::new("set_mode");
                    if let Some(mode) = mode {
                        request = request.with("mode", mode);
                    }
                    if let Some(cpu) = cpu {
                        request = request.with("cpu_usage", cpu);
                    }
                    let reply = h.send(&request, t0);
                    if let Some(explicit) = mode.filter(|&mode| mode != "auto") {
                        prop_assert_eq!(&reply.body["mode"], explicit);
                    }
                    reply
                }
                Control::Feature(feature, enabled) => {
                    killed[feature] = !enabled;
                    h.send(&set_feature(FEATURES[feature], enabled), t0)
                }
            };
            let status = h.status(t0);
            let mode = status["mode"].as_str().unwrap().to_owned();
            let expected: Vec<&str> = FEATURES
                .iter()
                .enumerate()
                .filter(|&(i, feature)| killed[i] || shed_by_mode(&mode).contains(feature))
                .map(|(_, feature)| *feature)
                .collect();
            prop_assert_eq!(&reply.body["disabled_features"], &json!(expected));
            prop_assert_eq!(&status["disabled_features"], &json!(expected));
            let answered = feature_replies(&mut h, t0);
            for (i, feature) in FEATURES.iter().enumerate() {
                prop_assert_eq!(answered[i].1, expected.contains(feature), "{}", feature);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------

#[test]
fn status_of_a_fresh_node() {
    let (mut h, t0) = demo_node();
    let reply = h.send(&Request::new("get_status").msg_id(8), t0);
    assert!(
        reply.text.starts_with(
            r#"{"type":"status","in_reply_to":8,"mode":"normal","disabled_features":[]"#
        ),
        "{}",
        reply.text
    );
    for service in ["user", "product", "order"] {
        let circuit = &reply.body["circuits"][service];
        assert_eq!(circuit["state"], "closed", "{service}");
        assert_eq!(circuit["consecutive_failures"], 0, "{service}");
        assert!(circuit.get("half_open_in_ms").is_none(), "{service}");
    }
    let cache = &reply.body["cache"];
    assert_eq!(
        cache["entries"],
        2 * DEMO_WARM_IDS,
        "users and products 1..=1000 are warm"
    );
    assert_eq!(cache["capacity"], DEFAULT_CAPACITY);
    assert_eq!(cache["fallbacks_served"], 0);
}

#[test]
fn status_reports_failures_open_circuits_and_fallbacks() {
    let (mut h, t0) = start(breaker(3, 5 * SEC, 60 * SEC));
    h.send(&get_user(1).service_unavailable(), t0);
    h.send(&get_user(2).service_unavailable(), t0);
    let status_closed = h.status(t0);
    assert_eq!(status_closed["circuits"]["user"]["state"], "closed");
    assert_eq!(status_closed["circuits"]["user"]["consecutive_failures"], 2);
    assert_eq!(status_closed["cache"]["fallbacks_served"], 2);

    h.send(&get_product(1).force_failures(3), t0);
    let status_open = h.status(t0 + 1200 * MS);
    let product = &status_open["circuits"]["product"];
    assert_eq!(product["state"], "open");
    assert_eq!(product["half_open_in_ms"], 3800);
    assert_eq!(status_open["circuits"]["user"]["consecutive_failures"], 2);
    assert_eq!(status_open["circuits"]["order"]["state"], "closed");
    assert_eq!(status_open["cache"]["fallbacks_served"], 3);

    h.handle_timeout(t0 + 5 * SEC);
    let status_half_open = h.status(t0 + 5 * SEC);
    assert_eq!(
        status_half_open["circuits"]["product"]["state"],
        "half_open"
    );
    assert!(
        status_half_open["circuits"]["product"]
            .get("half_open_in_ms")
            .is_none()
    );
}

#[test]
fn status_shows_the_mode_and_disabled_features() {
    let (mut h, t0) = demo_node();
    h.send(&set_mode("degraded").with("cpu_usage", 85), t0);
    h.send(&set_feature("reviews", false), t0);
    let status = h.status(t0);
    assert_eq!(status["mode"], "degraded");
    assert_eq!(
        status["disabled_features"],
        json!(["recommendations", "search", "reviews"])
    );
}

// ---------------------------------------------------------------------------
// Protocol: envelopes, errors, bad input
// ---------------------------------------------------------------------------

#[test]
fn unknown_type_is_not_supported() {
    let (mut h, t0) = demo_node();
    let reply = h.send(&Request::new("teleport").msg_id(5), t0);
    assert_eq!(reply.code(), 10);
    assert!(
        reply
            .text
            .starts_with(r#"{"type":"error","in_reply_to":5,"code":10,"text":"#),
        "{}",
        reply.text
    );
    assert!(reply.error_text().contains("teleport"));
}

#[test]
fn missing_or_ill_typed_field_is_malformed_naming_the_field() {
    let (mut h, t0) = demo_node();
    let cases = [
        (Request::new("get_user"), "user_id"),
        (Request::new("get_product"), "product_id"),
        (get_user(1).with("force_failures", -1), "force_failures"),
        (get_user(1).with("force_failures", "many"), "force_failures"),
        (
            get_product(1).with("service_unavailable", "yes"),
            "service_unavailable",
        ),
        (
            set_service_health("user", false).without("service"),
            "service",
        ),
        (set_service_health("billing", false), "service"),
        (Request::new("search"), "query"),
        (Request::new("get_reviews"), "product_id"),
        (Request::new("get_recommendations"), "user_id"),
        (Request::new("echo"), "echo"),
        (Request::new("init"), "node_id"),
        (get_user(1).without("type"), "type"),
        (Request::new("echo").with("type", 7), "type"),
    ];
    for (request, field) in cases {
        let reply = h.send(&request, t0);
        let body = request.body();
        assert_eq!(reply.code(), 12, "{body}: {}", reply.text);
        assert_eq!(reply.body["in_reply_to"], 1, "{body}");
        assert!(reply.error_text().contains(field), "{body}: {}", reply.text);
    }
    assert_eq!(
        h.calls_made("user"),
        0,
        "nothing malformed reaches a service"
    );
}

#[test]
fn request_without_msg_id_is_processed_and_answered_without_in_reply_to() {
    let (mut h, t0) = demo_node();
    let reply = h.send(&set_service_health("user", false).without_msg_id(), t0);
    assert_eq!(
        reply.text,
        r#"{"type":"service_health_ok","service":"user","available":false}"#
    );
    let user = h.service("user");
    assert!(!h.demo_services().is_available(user), "still processed");

    let read = h.send(&get_user(3).without_msg_id(), t0);
    assert_eq!(
        read.text,
        r#"{"type":"user_response","user":{"id":3,"name":"John Doe"},"circuit_state":"closed","from_cache":true}"#
    );
    let error = h.send(&Request::new("nope").without_msg_id(), t0);
    assert!(
        error.text.starts_with(r#"{"type":"error","code":10,"#),
        "{}",
        error.text
    );
    let null_id = h.send(&echo(1).with("msg_id", Value::Null), t0);
    assert_eq!(null_id.text, r#"{"type":"echo_ok","echo":1}"#);
}

#[test]
fn ill_typed_msg_id_is_malformed_without_in_reply_to() {
    let (mut h, t0) = demo_node();
    let reply = h.send(&echo(1).with("msg_id", "seven"), t0);
    assert_eq!(reply.code(), 12);
    assert!(reply.body.get("in_reply_to").is_none());
    assert!(reply.error_text().contains("msg_id"));
}

#[test]
fn unaddressable_lines_write_nothing_and_are_counted() {
    let (mut h, t0) = demo_node();
    let deep = format!(
        r#"{{"src":"c1","dest":"n1","body":{}}}"#,
        "[".repeat(100_000)
    );
    let bad_lines: Vec<Vec<u8>> = vec![
        b"this is not json".to_vec(),
        b"{".to_vec(),
        b"[1,2,3]".to_vec(),
        b"42".to_vec(),
        br#"{"dest":"n1","body":{"type":"echo","msg_id":1,"echo":1}}"#.to_vec(),
        br#"{"src":7,"dest":"n1","body":{"type":"echo","msg_id":1}}"#.to_vec(),
        br#"{"src":"c1","dest":"n1"}"#.to_vec(),
        br#"{"src":"c1","dest":"n1","body":[1]}"#.to_vec(),
        br#"{"src":"c1","dest":"n1","body":"get_user"}"#.to_vec(),
        br#"{"src":"c1","dest":"n1","body":{"user_id":1}}"#.to_vec(),
        b"{\"src\":\"c1\",\"dest\":\"n1\",\"body\":{\"type\":\"echo\",\"msg_id\":1,\"echo\":\"\xff\xfe\"}}".to_vec(),
        b"\xff\xfe\xfd".to_vec(),
        deep.into_bytes(),
    ];
    for (i, line) in bad_lines.iter().enumerate() {
        let replies = h.feed(line, t0);
        assert!(replies.is_empty(), "line {i} was answered: {replies:?}");
        assert_eq!(h.node().unaddressable_lines(), i as u64 + 1, "line {i}");
    }
    // The node carries on.
    let echo_reply = h.send(&echo("still here").msg_id(2), t0);
    assert_eq!(
        echo_reply.text,
        r#"{"type":"echo_ok","in_reply_to":2,"echo":"still here"}"#
    );
}

#[test]
fn a_one_megabyte_message_is_answered() {
    let (mut h, t0) = demo_node();
    let big = "x".repeat(1 << 20);
    let echo_reply = h.send(&echo(big), t0);
    assert_eq!(
        echo_reply.body["echo"].as_str().map(str::len),
        Some(1 << 20)
    );
}

#[test]
fn extra_top_level_keys_are_ignored() {
    let (mut h, t0) = demo_node();
    let line = br#"{"id":17,"src":"c9","dest":"n3","body":{"type":"echo","msg_id":4,"echo":[1,{"a":null}]}}"#;
    let replies = h.feed(line, t0);
    assert_eq!(replies.len(), 1);
    assert_eq!(
        (replies[0].src.as_str(), replies[0].dest.as_str()),
        ("n3", "c9")
    );
    assert_eq!(
        replies[0].text,
        r#"{"type":"echo_ok","in_reply_to":4,"echo":[1,{"a":null}]}"#
    );
}

#[test]
fn init_names_the_node_for_every_later_reply() {
    let (mut h, t0) = demo_node();
    let before: Reply = h.send(&echo(0), t0);
    assert_eq!((before.src.as_str(), before.dest.as_str()), ("n1", "c1"));

    let init_reply = h.send(&init("n7", &["n7", "n8"]).msg_id(2), t0);
    assert_eq!(init_reply.text, r#"{"type":"init_ok","in_reply_to":2}"#);
    assert_eq!(
        init_reply.src, "n7",
        "init_ok already comes from the new name"
    );

    // Requests still addressed to "n1" are answered from "n7".
    let after = h.send(&echo(0).msg_id(3), t0);
    assert_eq!((after.src.as_str(), after.dest.as_str()), ("n7", "c1"));
    let error = h.send(&Request::new("nope").msg_id(4), t0);
    assert_eq!(error.src, "n7");
    let malformed = h.send(&Request::new("echo").without("type").msg_id(5), t0);
    assert_eq!(malformed.src, "n7");
}

#[test]
fn request_without_dest_is_still_answered() {
    let (mut h, t0) = demo_node();
    let replies = h.replies_to(&echo(1).without_dest(), t0);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].dest, "c1");
}
