//! The node's behaviour as a specification: every test drives a
//! [`grace::node::Node`] with messages and explicit instants (no sleeping)
//! and reads its replies from the outbox.
//!
//! Reply bodies are compared as the exact JSON text the node wrote, so key
//! order (`type`, `in_reply_to`, then the documented fields) is part of
//! what is checked.

use grace::backend::{Backend, DEMO_WARM_IDS, Service};
use grace::breaker::{BreakerConfig, BreakerState, Transition, TransitionReason};
use grace::node::{Node, NodeConfig};
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// A node in front of the demo services, its cache warmed at the returned instant.
fn start(config: NodeConfig) -> (Node, Instant) {
    let t0 = Instant::now();
    (Node::new(config, Backend::demo(), t0), t0)
}

/// A node with every default.
fn demo_node() -> (Node, Instant) {
    start(NodeConfig::default())
}

/// Defaults, except the breaker.
fn with_breaker(
    failure_threshold: u32,
    open_timeout: Duration,
    open_timeout_max: Duration,
) -> NodeConfig {
    NodeConfig {
        breaker: BreakerConfig {
            failure_threshold,
            open_timeout,
            open_timeout_max,
        },
        ..NodeConfig::default()
    }
}

/// One reply line, its body kept both as the exact text written and parsed.
#[derive(Debug)]
struct Reply {
    src: String,
    dest: String,
    /// The body exactly as written (key order included).
    text: String,
    body: Value,
}

impl Reply {
    fn code(&self) -> u64 {
        assert_eq!(
            self.body["type"], "error",
            "expected an error: {}",
            self.text
        );
        self.body["code"].as_u64().expect("error code")
    }

    fn error_text(&self) -> &str {
        self.body["text"].as_str().expect("error text")
    }
}

fn parse_reply(line: &str) -> Reply {
    #[derive(Deserialize)]
    struct Line {
        src: String,
        dest: String,
        body: Box<RawValue>,
    }
    let parsed: Line = serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"));
    Reply {
        src: parsed.src,
        dest: parsed.dest,
        text: parsed.body.get().to_owned(),
        body: serde_json::from_str(parsed.body.get()).unwrap(),
    }
}

/// Every reply line in the outbox, emptying it.
fn replies(node: &mut Node) -> Vec<Reply> {
    let out = String::from_utf8(node.take_output()).expect("replies are UTF-8");
    assert!(
        out.is_empty() || out.ends_with('\n'),
        "unterminated reply: {out:?}"
    );
    out.lines().map(parse_reply).collect()
}

/// Feeds one raw input line and returns whatever replies it produced.
fn feed(node: &mut Node, line: &[u8], now: Instant) -> Vec<Reply> {
    node.handle_message(line, 1, now);
    replies(node)
}

/// Sends `body` from client `c1` to node `n1` and returns the one reply.
fn send(node: &mut Node, body: &str, now: Instant) -> Reply {
    let line = format!(r#"{{"src":"c1","dest":"n1","body":{body}}}"#);
    let mut replies = feed(node, line.as_bytes(), now);
    assert_eq!(
        replies.len(),
        1,
        "expected one reply to {body}, got {replies:?}"
    );
    replies.remove(0)
}

/// The `status` body at `now`.
fn status(node: &mut Node, now: Instant) -> Value {
    let reply = send(node, r#"{"type":"get_status","msg_id":999}"#, now);
    assert_eq!(reply.body["type"], "status");
    reply.body
}

fn get_user(node: &mut Node, id: &str, extra: &str, now: Instant) -> Reply {
    send(
        node,
        &format!(r#"{{"type":"get_user","msg_id":1,"user_id":{id}{extra}}}"#),
        now,
    )
}

fn get_product(node: &mut Node, id: &str, extra: &str, now: Instant) -> Reply {
    send(
        node,
        &format!(r#"{{"type":"get_product","msg_id":1,"product_id":{id}{extra}}}"#),
        now,
    )
}

const DOWN: &str = r#","service_unavailable":true"#;

fn set_health(node: &mut Node, service: &str, available: bool, now: Instant) {
    let reply = send(
        node,
        &format!(
            r#"{{"type":"set_service_health","msg_id":1,"service":"{service}","available":{available}}}"#
        ),
        now,
    );
    assert_eq!(reply.body["type"], "service_health_ok", "{}", reply.text);
}

/// Fails user reads until the user breaker opens; returns the calls it took.
fn open_user_breaker(node: &mut Node, now: Instant) -> u64 {
    let before = node.backend().calls(Service::User);
    let reply = get_user(node, "1", r#","force_failures":1000"#, now);
    assert_eq!(reply.body["circuit_state"], "open");
    node.backend().calls(Service::User) - before
}

// ---------------------------------------------------------------------------
// The seed's examples, exactly
// ---------------------------------------------------------------------------

#[test]
fn seed_circuit_opens_sample_body_is_exact() {
    let (mut node, t0) = demo_node();
    let input = br#"{"src":"client","dest":"api","body":{"type":"get_user","msg_id":1,"user_id":123,"force_failures":6}}"#;
    let replies = feed(&mut node, input, t0);
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
    let (mut node, t0) = demo_node();
    let input = br#"{"src":"client","dest":"api","body":{"type":"get_product","msg_id":1,"product_id":123,"service_unavailable":true}}"#;
    let replies = feed(&mut node, input, t0);
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].text,
        r#"{"type":"product_response","in_reply_to":1,"product":{"id":123,"name":"Product"},"_cached":true}"#
    );
}

#[test]
fn seed_set_mode_example_body_is_exact() {
    let (mut node, t0) = demo_node();
    let reply = send(
        &mut node,
        r#"{"type":"set_mode","msg_id":3,"mode":"degraded","cpu_usage":85}"#,
        t0,
    );
    assert_eq!(
        reply.text,
        r#"{"type":"mode_changed","in_reply_to":3,"mode":"degraded","disabled_features":["recommendations","search"]}"#
    );
}

#[test]
fn seed_case_input_pretty_printed_with_crlf_is_answered_the_same() {
    // The framer joins the lines; the node sees one message.
    let (mut node, t0) = demo_node();
    let input = "{\r\n\"src\": \"client\",\r\n\"dest\": \"api\",\r\n\"body\": {\r\n\"type\": \"get_user\",\r\n\"msg_id\": 1,\r\n\"user_id\": 123,\r\n\"force_failures\": 6\r\n}\r\n}";
    let replies = feed(&mut node, input.as_bytes(), t0);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].body["from_cache"], true);
}

// ---------------------------------------------------------------------------
// Circuit breaker
// ---------------------------------------------------------------------------

#[test]
fn breaker_stays_closed_below_the_threshold_and_opens_at_it() {
    let (mut node, t0) = start(with_breaker(3, SEC, 10 * SEC));
    for failure in 1..=2 {
        let reply = get_user(&mut node, "7", DOWN, t0);
        assert_eq!(reply.body["circuit_state"], "closed");
        assert_eq!(reply.body["from_cache"], true, "the failed call falls back");
        assert_eq!(node.breaker(Service::User).consecutive_failures(), failure);
    }
    let reply = get_user(&mut node, "7", DOWN, t0);
    assert_eq!(
        reply.text,
        r#"{"type":"user_response","in_reply_to":1,"user":{"id":7,"name":"John Doe"},"circuit_state":"open","from_cache":true}"#
    );
    assert_eq!(node.breaker(Service::User).state(), BreakerState::Open);
    assert_eq!(node.backend().calls(Service::User), 3);
    // The other services' breakers are untouched.
    assert_eq!(node.breaker(Service::Product).state(), BreakerState::Closed);
}

#[test]
fn success_in_closed_resets_the_failure_count() {
    let (mut node, t0) = start(with_breaker(3, SEC, 10 * SEC));
    get_user(&mut node, "7", DOWN, t0);
    get_user(&mut node, "7", DOWN, t0);
    let fresh = get_user(&mut node, "7", "", t0);
    assert_eq!(fresh.body["from_cache"], false);
    assert_eq!(node.breaker(Service::User).consecutive_failures(), 0);
    get_user(&mut node, "7", DOWN, t0);
    let reply = get_user(&mut node, "7", DOWN, t0);
    assert_eq!(reply.body["circuit_state"], "closed");
}

#[test]
fn open_breaker_serves_stale_copy_without_calling_service() {
    let (mut node, t0) = demo_node();
    open_user_breaker(&mut node, t0);
    let calls = node.backend().calls(Service::User);
    for id in ["1", "123", "1000"] {
        let reply = get_user(&mut node, id, "", t0 + 10 * MS);
        assert_eq!(reply.body["from_cache"], true);
        assert_eq!(reply.body["circuit_state"], "open");
        assert_eq!(reply.body["user"]["id"].to_string(), id);
    }
    // Fault flags on a short-circuited request do not reach the service either.
    get_user(&mut node, "5", DOWN, t0 + 20 * MS);
    get_user(&mut node, "5", r#","force_failures":3"#, t0 + 30 * MS);
    assert_eq!(node.backend().calls(Service::User), calls);
}

#[test]
fn open_breaker_with_no_copy_answers_temporarily_unavailable() {
    let (mut node, t0) = demo_node();
    open_user_breaker(&mut node, t0);
    let calls = node.backend().calls(Service::User);
    let reply = get_user(&mut node, "5000", "", t0);
    assert_eq!(reply.code(), 11);
    assert!(
        reply
            .text
            .starts_with(r#"{"type":"error","in_reply_to":1,"code":11,"text":"#),
        "{}",
        reply.text
    );
    assert_eq!(node.backend().calls(Service::User), calls);
}

#[test]
fn open_breaker_half_opens_when_handle_timeout_reaches_its_deadline() {
    let (mut node, t0) = start(with_breaker(5, SEC, 10 * SEC));
    open_user_breaker(&mut node, t0);
    assert_eq!(node.poll_timeout(), Some(t0 + SEC));
    assert_eq!(node.breaker(Service::User).reopens_at(), Some(t0 + SEC));

    node.handle_timeout(t0 + SEC - MS);
    assert_eq!(node.breaker(Service::User).state(), BreakerState::Open);
    assert_eq!(node.poll_timeout(), Some(t0 + SEC));

    node.handle_timeout(t0 + SEC);
    assert_eq!(node.breaker(Service::User).state(), BreakerState::HalfOpen);
    assert_eq!(node.poll_timeout(), None);
    assert!(node.take_output().is_empty(), "timeouts write no replies");
}

#[test]
fn successful_probe_closes_the_breaker_and_reads_are_fresh_again() {
    let (mut node, t0) = start(with_breaker(5, SEC, 10 * SEC));
    open_user_breaker(&mut node, t0);
    node.handle_timeout(t0 + SEC);
    let calls = node.backend().calls(Service::User);
    let probe = get_user(&mut node, "42", "", t0 + SEC);
    assert_eq!(
        probe.text,
        r#"{"type":"user_response","in_reply_to":1,"user":{"id":42,"name":"John Doe"},"circuit_state":"closed","from_cache":false}"#
    );
    assert_eq!(node.backend().calls(Service::User), calls + 1);
    assert_eq!(node.breaker(Service::User).consecutive_failures(), 0);
    assert_eq!(node.poll_timeout(), None);
}

#[test]
fn request_arriving_after_the_deadline_is_the_probe_without_handle_timeout() {
    let (mut node, t0) = start(with_breaker(5, SEC, 10 * SEC));
    open_user_breaker(&mut node, t0);
    let probe = get_user(&mut node, "42", "", t0 + 3 * SEC);
    assert_eq!(probe.body["circuit_state"], "closed");
    assert_eq!(probe.body["from_cache"], false);
}

#[test]
fn failed_probe_doubles_the_open_timeout_up_to_the_max() {
    let (mut node, t0) = start(with_breaker(2, SEC, 3 * SEC));
    open_user_breaker(&mut node, t0);
    let mut deadline = t0 + SEC;
    let mut waits = vec![SEC];
    for _ in 0..3 {
        assert_eq!(node.poll_timeout(), Some(deadline));
        node.handle_timeout(deadline);
        assert_eq!(node.breaker(Service::User).state(), BreakerState::HalfOpen);
        let probe = get_user(&mut node, "9", DOWN, deadline);
        assert_eq!(probe.body["circuit_state"], "open");
        assert_eq!(probe.body["from_cache"], true);
        let next = node.poll_timeout().expect("open again");
        waits.push(next - deadline);
        deadline = next;
    }
    assert_eq!(waits, vec![SEC, 2 * SEC, 3 * SEC, 3 * SEC]);
    let user_circuit = &status(&mut node, deadline - 3 * SEC)["circuits"]["user"];
    assert_eq!(user_circuit["open_timeout_ms"], 3000);
    assert_eq!(user_circuit["half_open_in_ms"], 3000);

    // A successful probe resets the wait to its base.
    node.handle_timeout(deadline);
    get_user(&mut node, "9", "", deadline);
    assert_eq!(node.breaker(Service::User).current_open_timeout(), SEC);
    open_user_breaker(&mut node, deadline);
    assert_eq!(node.poll_timeout(), Some(deadline + SEC));
}

#[test]
fn force_failures_in_the_trillions_costs_only_threshold_calls() {
    let (mut node, t0) = demo_node();
    let reply = get_user(&mut node, "123", r#","force_failures":1000000000000"#, t0);
    assert_eq!(reply.body["circuit_state"], "open");
    assert_eq!(reply.body["from_cache"], true);
    let threshold = u64::from(node.config().breaker.failure_threshold);
    assert_eq!(node.backend().calls(Service::User), threshold);

    // While open, another such request costs nothing at all.
    get_user(
        &mut node,
        "123",
        r#","force_failures":1000000000000"#,
        t0 + MS,
    );
    assert_eq!(node.backend().calls(Service::User), threshold);
}

#[test]
fn force_failures_on_a_half_open_breaker_is_the_failed_probe() {
    let (mut node, t0) = start(with_breaker(3, SEC, 10 * SEC));
    open_user_breaker(&mut node, t0);
    node.handle_timeout(t0 + SEC);
    let calls = node.backend().calls(Service::User);
    let reply = get_user(&mut node, "9", r#","force_failures":50"#, t0 + SEC);
    assert_eq!(reply.body["circuit_state"], "open");
    assert_eq!(node.backend().calls(Service::User), calls + 1);
    assert_eq!(node.poll_timeout(), Some(t0 + 3 * SEC));
}

#[test]
fn zero_force_failures_is_a_normal_read() {
    let (mut node, t0) = demo_node();
    let reply = get_user(&mut node, "9", r#","force_failures":0"#, t0);
    assert_eq!(reply.body["from_cache"], false);
    assert_eq!(node.backend().calls(Service::User), 1);
}

#[test]
fn sticky_outage_opens_the_breaker_and_recovery_closes_it_through_a_probe() {
    let (mut node, t0) = start(with_breaker(2, SEC, 10 * SEC));
    let reply = send(
        &mut node,
        r#"{"type":"set_service_health","msg_id":4,"service":"product","available":false}"#,
        t0,
    );
    assert_eq!(
        reply.text,
        r#"{"type":"service_health_ok","in_reply_to":4,"service":"product","available":false}"#
    );
    assert_eq!(get_product(&mut node, "3", "", t0).body["_cached"], true);
    assert_eq!(get_product(&mut node, "3", "", t0).body["_cached"], true);
    assert_eq!(node.breaker(Service::Product).state(), BreakerState::Open);

    set_health(&mut node, "product", true, t0 + MS);
    // Still open: recovery is only noticed by the probe after the wait.
    assert_eq!(
        get_product(&mut node, "3", "", t0 + 2 * MS).body["_cached"],
        true
    );
    let probe = get_product(&mut node, "3", "", t0 + SEC);
    assert_eq!(
        probe.text,
        r#"{"type":"product_response","in_reply_to":1,"product":{"id":3,"name":"Product"},"_cached":false}"#
    );
    assert_eq!(node.breaker(Service::Product).state(), BreakerState::Closed);
}

#[test]
fn record_transitions_lists_every_transition_in_order() {
    let (mut node, t0) = start(with_breaker(2, SEC, 10 * SEC));
    node.record_transitions(true);
    open_user_breaker(&mut node, t0);
    node.handle_timeout(t0 + SEC);
    get_user(&mut node, "1", DOWN, t0 + SEC);
    node.handle_timeout(t0 + 3 * SEC);
    get_user(&mut node, "1", "", t0 + 3 * SEC);

    use BreakerState::*;
    let transition = |from, to, reason| (Service::User, Transition { from, to, reason });
    assert_eq!(
        node.take_transitions(),
        vec![
            transition(Closed, Open, TransitionReason::FailureThreshold(2)),
            transition(Open, HalfOpen, TransitionReason::OpenTimeoutElapsed),
            transition(HalfOpen, Open, TransitionReason::ProbeFailed(2 * SEC)),
            transition(Open, HalfOpen, TransitionReason::OpenTimeoutElapsed),
            transition(HalfOpen, Closed, TransitionReason::ProbeSucceeded),
        ]
    );
    assert!(
        node.take_transitions().is_empty(),
        "taking empties the list"
    );
}

#[test]
fn transitions_are_not_kept_unless_recording_is_on() {
    let (mut node, t0) = demo_node();
    open_user_breaker(&mut node, t0);
    assert!(node.take_transitions().is_empty());
}

// ---------------------------------------------------------------------------
// Fallback cache
// ---------------------------------------------------------------------------

fn with_max_stale(max_stale: Duration) -> NodeConfig {
    NodeConfig {
        cache_max_stale: max_stale,
        ..NodeConfig::default()
    }
}

#[test]
fn normal_read_never_comes_from_cache_when_service_is_up() {
    let (mut node, t0) = demo_node();
    for id in ["1", "123", "1000", "1001", "\"x\""] {
        let user = get_user(&mut node, id, "", t0);
        assert_eq!(user.body["from_cache"], false, "user {id}");
        let product = get_product(&mut node, id, "", t0);
        assert_eq!(product.body["_cached"], false, "product {id}");
    }
    assert_eq!(node.backend().calls(Service::User), 5);
    assert_eq!(node.backend().calls(Service::Product), 5);
    assert_eq!(status(&mut node, t0)["cache"]["fallbacks_served"], 0);
}

#[test]
fn successful_read_refreshes_the_cached_copy() {
    let (mut node, t0) = start(with_max_stale(10 * SEC));
    assert_eq!(
        get_user(&mut node, "1", "", t0 + 8 * SEC).body["from_cache"],
        false
    );
    // At t0+15s the warm copies (fetched at t0) are too old; user 1's copy
    // was refreshed at t0+8s and still serves.
    let refreshed = get_user(&mut node, "1", DOWN, t0 + 15 * SEC);
    assert_eq!(refreshed.body["from_cache"], true);
    let expired = get_user(&mut node, "2", DOWN, t0 + 15 * SEC);
    assert_eq!(expired.code(), 11);
}

#[test]
fn copy_older_than_cache_max_stale_is_not_served() {
    let (mut node, t0) = start(with_max_stale(10 * SEC));
    let at_limit = get_product(&mut node, "1", DOWN, t0 + 10 * SEC);
    assert_eq!(
        at_limit.body["_cached"], true,
        "a copy exactly max_stale old still serves"
    );
    let too_old = get_product(&mut node, "2", DOWN, t0 + 10 * SEC + MS);
    assert_eq!(too_old.code(), 11);
    assert_eq!(too_old.body["in_reply_to"], 1);
}

#[test]
fn open_breaker_does_not_serve_a_copy_older_than_cache_max_stale() {
    let config = NodeConfig {
        cache_max_stale: 10 * SEC,
        ..with_breaker(2, 60 * SEC, 60 * SEC)
    };
    let (mut node, t0) = start(config);
    open_user_breaker(&mut node, t0 + 9 * SEC);
    assert_eq!(
        get_user(&mut node, "3", "", t0 + 10 * SEC).body["from_cache"],
        true
    );
    let expired = get_user(&mut node, "4", "", t0 + 11 * SEC);
    assert_eq!(expired.code(), 11);
    assert_eq!(node.breaker(Service::User).state(), BreakerState::Open);
}

#[test]
fn ids_outside_the_warm_set_are_unavailable_when_the_service_is_down() {
    let (mut node, t0) = demo_node();
    assert_eq!(get_user(&mut node, "5000", DOWN, t0).code(), 11);
    assert_eq!(get_product(&mut node, "5000", DOWN, t0).code(), 11);
    assert_eq!(get_user(&mut node, "0", DOWN, t0).code(), 11);
    assert_eq!(get_user(&mut node, "1001", DOWN, t0).code(), 11);
}

#[test]
fn after_one_fresh_read_an_id_is_served_from_cache_when_down() {
    let (mut node, t0) = demo_node();
    assert_eq!(
        get_user(&mut node, "5000", "", t0).body["from_cache"],
        false
    );
    let fallback = get_user(&mut node, "5000", DOWN, t0 + SEC);
    assert_eq!(
        fallback.text,
        r#"{"type":"user_response","in_reply_to":1,"user":{"id":5000,"name":"John Doe"},"circuit_state":"closed","from_cache":true}"#
    );
    // The user copy says nothing about the product of the same id.
    assert_eq!(get_product(&mut node, "5000", DOWN, t0 + SEC).code(), 11);
}

fn with_capacity(capacity: usize) -> NodeConfig {
    NodeConfig {
        cache_capacity: capacity,
        ..NodeConfig::default()
    }
}

#[test]
fn cache_capacity_evicts_the_least_recently_used_copy() {
    let (mut node, t0) = start(with_capacity(3));
    let cache = &status(&mut node, t0)["cache"];
    assert_eq!(
        (cache["entries"].as_u64(), cache["capacity"].as_u64()),
        (Some(3), Some(3))
    );

    for id in ["5001", "5002", "5003", "5001", "5004"] {
        assert_eq!(get_user(&mut node, id, "", t0).body["from_cache"], false);
    }
    // 5001 was refreshed after 5002, so 5002 is the one that went.
    set_health(&mut node, "user", false, t0);
    assert_eq!(get_user(&mut node, "5002", "", t0).code(), 11);
    for id in ["5001", "5003", "5004"] {
        assert_eq!(
            get_user(&mut node, id, "", t0).body["from_cache"],
            true,
            "user {id}"
        );
    }
    assert_eq!(status(&mut node, t0)["cache"]["entries"], 3);
}

#[test]
fn cache_entries_stay_flat_however_many_ids_pass_through() {
    let (mut node, t0) = start(with_capacity(100));
    for id in 10_000..30_000 {
        let reply = if id % 2 == 0 {
            get_user(&mut node, &id.to_string(), "", t0)
        } else {
            get_product(&mut node, &format!("\"p{id}\""), "", t0)
        };
        assert_ne!(reply.body["type"], "error");
        if id % 1000 == 0 {
            assert!(status(&mut node, t0)["cache"]["entries"].as_u64().unwrap() <= 100);
        }
    }
    let cache = &status(&mut node, t0)["cache"];
    assert_eq!(cache["entries"], 100);
    assert_eq!(cache["capacity"], 100);
}

#[test]
fn string_and_integer_ids_are_distinct_and_echoed_as_given() {
    let (mut node, t0) = demo_node();
    // "123" (a string) was never fetched; 123 (an integer) is warm.
    assert_eq!(get_user(&mut node, r#""123""#, DOWN, t0).code(), 11);
    assert_eq!(get_user(&mut node, "123", DOWN, t0).body["user"]["id"], 123);

    let text = get_user(&mut node, r#""123""#, "", t0);
    assert_eq!(
        text.body["user"].to_string(),
        r#"{"id":"123","name":"John Doe"}"#
    );
    assert!(
        text.text
            .contains(r#""user":{"id":"123","name":"John Doe"}"#)
    );
    let cached = get_user(&mut node, r#""123""#, DOWN, t0);
    assert!(
        cached
            .text
            .contains(r#""user":{"id":"123","name":"John Doe"}"#)
    );
    assert_eq!(cached.body["from_cache"], true);

    for id in [
        r#""a \"quoted\" id""#,
        r#""ünïcødé""#,
        "-5",
        "18446744073709551615",
    ] {
        let product = get_product(&mut node, id, "", t0);
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
    let (mut node, t0) = demo_node();
    for id in ["1.5", "null", "[1]", "{}", "true"] {
        let reply = get_user(&mut node, id, "", t0);
        assert_eq!(reply.code(), 12, "user_id {id}");
        assert!(reply.error_text().contains("user_id"), "{}", reply.text);
    }
    assert_eq!(node.backend().calls(Service::User), 0);
}

#[test]
fn fixtures_unknown_id_is_not_found_and_not_a_failure() {
    let t0 = Instant::now();
    let backend =
        Backend::from_fixtures_json(r#"{"users":[{"id":1,"name":"Ada"}],"products":[]}"#).unwrap();
    let mut node = Node::new(NodeConfig::default(), backend, t0);
    let missing = get_user(&mut node, "2", "", t0);
    assert_eq!(missing.code(), 20);
    assert_eq!(node.breaker(Service::User).consecutive_failures(), 0);
    let warm = get_user(&mut node, "1", DOWN, t0);
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

fn set_mode(node: &mut Node, fields: &str, now: Instant) -> Reply {
    send(
        node,
        &format!(r#"{{"type":"set_mode","msg_id":1{fields}}}"#),
        now,
    )
}

fn set_feature(node: &mut Node, feature: &str, enabled: bool, now: Instant) -> Reply {
    send(
        node,
        &format!(
            r#"{{"type":"set_feature","msg_id":1,"feature":"{feature}","enabled":{enabled}}}"#
        ),
        now,
    )
}

#[test]
fn explicit_mode_is_an_override_whatever_the_cpu() {
    let (mut node, t0) = demo_node();
    let critical = set_mode(&mut node, r#","mode":"critical","cpu_usage":10"#, t0);
    assert_eq!(
        critical.text,
        r#"{"type":"mode_changed","in_reply_to":1,"mode":"critical","disabled_features":["recommendations","search","reviews"]}"#
    );
    let normal = set_mode(&mut node, r#","mode":"normal","cpu_usage":99"#, t0);
    assert_eq!(
        normal.text,
        r#"{"type":"mode_changed","in_reply_to":1,"mode":"normal","disabled_features":[]}"#
    );
    let without_cpu = set_mode(&mut node, r#","mode":"degraded""#, t0);
    assert_eq!(without_cpu.body["mode"], "degraded");
}

#[test]
fn auto_mode_follows_cpu_with_hysteresis() {
    let (mut node, t0) = demo_node();
    let steps = [
        (r#","cpu_usage":79.9"#, "normal"),
        (r#","cpu_usage":80"#, "degraded"),
        (r#","cpu_usage":79"#, "degraded"),
        (r#","mode":"auto","cpu_usage":70"#, "degraded"),
        (r#","cpu_usage":69.9"#, "normal"),
        (r#","cpu_usage":95"#, "critical"),
        (r#","cpu_usage":85"#, "critical"),
        (r#","cpu_usage":84.9"#, "degraded"),
        (r#","cpu_usage":94"#, "degraded"),
        (r#","mode":"auto","cpu_usage":100"#, "critical"),
        (r#","mode":"auto","cpu_usage":0"#, "normal"),
    ];
    for (fields, expected) in steps {
        let reply = set_mode(&mut node, fields, t0);
        assert_eq!(reply.body["mode"], expected, "after {fields}");
    }
}

#[test]
fn load_hovering_at_a_threshold_does_not_flap() {
    let (mut node, t0) = demo_node();
    set_mode(&mut node, r#","cpu_usage":81"#, t0);
    for cpu in [79, 80, 78, 81, 75, 80, 72] {
        let reply = set_mode(&mut node, &format!(r#","cpu_usage":{cpu}"#), t0);
        assert_eq!(reply.body["mode"], "degraded", "cpu {cpu}");
    }
}

#[test]
fn bad_set_mode_requests_are_malformed_naming_the_field() {
    let (mut node, t0) = demo_node();
    for (fields, field) in [
        (r#","mode":"turbo","cpu_usage":10"#, "mode"),
        (r#","mode":7"#, "mode"),
        (r#","mode":"auto""#, "cpu_usage"),
        (r#""#, "cpu_usage"),
        (r#","cpu_usage":"high""#, "cpu_usage"),
        (r#","cpu_usage":101"#, "cpu_usage"),
        (r#","cpu_usage":-1"#, "cpu_usage"),
    ] {
        let reply = set_mode(&mut node, fields, t0);
        assert_eq!(reply.code(), 12, "{fields}");
        assert!(
            reply.error_text().contains(field),
            "{fields}: {}",
            reply.text
        );
    }
    assert_eq!(
        status(&mut node, t0)["mode"],
        "normal",
        "rejected requests change nothing"
    );
}

#[test]
fn kill_switch_disables_a_feature_regardless_of_mode() {
    let (mut node, t0) = demo_node();
    let killed = set_feature(&mut node, "search", false, t0);
    assert_eq!(
        killed.text,
        r#"{"type":"feature_set","in_reply_to":1,"disabled_features":["search"]}"#
    );
    let search = send(
        &mut node,
        r#"{"type":"search","msg_id":2,"query":"Product"}"#,
        t0,
    );
    assert_eq!(
        search.text,
        r#"{"type":"search_response","in_reply_to":2,"results":[],"degraded":true}"#
    );

    let critical = set_mode(&mut node, r#","mode":"critical""#, t0);
    assert_eq!(
        critical.body["disabled_features"],
        serde_json::json!(["recommendations", "search", "reviews"])
    );
    let normal = set_mode(&mut node, r#","mode":"normal""#, t0);
    assert_eq!(
        normal.body["disabled_features"],
        serde_json::json!(["search"])
    );

    let revived = set_feature(&mut node, "search", true, t0);
    assert_eq!(revived.body["disabled_features"], serde_json::json!([]));
    let search = send(
        &mut node,
        r#"{"type":"search","msg_id":3,"query":"Product"}"#,
        t0,
    );
    assert_eq!(search.body["degraded"], false);
    assert!(!search.body["results"].as_array().unwrap().is_empty());
}

#[test]
fn unknown_feature_is_malformed_naming_the_field() {
    let (mut node, t0) = demo_node();
    let reply = set_feature(&mut node, "checkout", false, t0);
    assert_eq!(reply.code(), 12);
    assert!(reply.error_text().contains("feature"), "{}", reply.text);
    let reply = send(
        &mut node,
        r#"{"type":"set_feature","msg_id":1,"feature":"search"}"#,
        t0,
    );
    assert_eq!(reply.code(), 12);
    assert!(reply.error_text().contains("enabled"), "{}", reply.text);
}

/// What each feature request answers, as `(items listed, degraded)`.
fn feature_replies(node: &mut Node, now: Instant) -> [(usize, bool); 3] {
    let requests = [
        (
            r#"{"type":"get_recommendations","msg_id":1,"user_id":1}"#,
            "recommendations",
        ),
        (r#"{"type":"search","msg_id":1,"query":"prod"}"#, "results"),
        (
            r#"{"type":"get_reviews","msg_id":1,"product_id":1}"#,
            "reviews",
        ),
    ];
    requests.map(|(body, key)| {
        let reply = send(node, body, now);
        let list = reply.body[key]
            .as_array()
            .unwrap_or_else(|| panic!("{}", reply.text));
        (list.len(), reply.body["degraded"].as_bool().unwrap())
    })
}

#[test]
fn features_answer_fully_in_normal_mode_and_empty_when_shed() {
    let (mut node, t0) = demo_node();
    let normal = feature_replies(&mut node, t0);
    assert!(
        normal.iter().all(|&(len, degraded)| len > 0 && !degraded),
        "{normal:?}"
    );

    set_mode(&mut node, r#","mode":"degraded""#, t0);
    let degraded = feature_replies(&mut node, t0);
    assert_eq!(degraded[0], (0, true));
    assert_eq!(degraded[1], (0, true));
    assert!(degraded[2].0 > 0 && !degraded[2].1);

    set_mode(&mut node, r#","mode":"critical""#, t0);
    assert_eq!(feature_replies(&mut node, t0), [(0, true); 3]);
}

#[test]
fn shed_features_answer_with_the_documented_empty_bodies() {
    let (mut node, t0) = demo_node();
    set_mode(&mut node, r#","mode":"critical""#, t0);
    let cases = [
        (
            r#"{"type":"get_recommendations","msg_id":5,"user_id":1}"#,
            r#"{"type":"recommendations_response","in_reply_to":5,"recommendations":[],"degraded":true}"#,
        ),
        (
            r#"{"type":"get_reviews","msg_id":6,"product_id":"p"}"#,
            r#"{"type":"reviews_response","in_reply_to":6,"reviews":[],"degraded":true}"#,
        ),
    ];
    for (request, expected) in cases {
        assert_eq!(send(&mut node, request, t0).text, expected);
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
        let (mut node, t0) = demo_node();
        let mut killed = [false; 3];
        for control in &controls {
            let reply = match *control {
                Control::Mode(mode, cpu) => {
                    let mut fields = String::new();
                    if let Some(mode) = mode {
                        fields.push_str(&format!(r#","mode":"{mode}""#));
                    }
                    if let Some(cpu) = cpu {
                        fields.push_str(&format!(r#","cpu_usage":{cpu}"#));
                    }
                    let reply = set_mode(&mut node, &fields, t0);
                    if let Some(explicit) = mode.filter(|&mode| mode != "auto") {
                        prop_assert_eq!(&reply.body["mode"], explicit);
                    }
                    reply
                }
                Control::Feature(feature, enabled) => {
                    killed[feature] = !enabled;
                    set_feature(&mut node, FEATURES[feature], enabled, t0)
                }
            };
            let status = status(&mut node, t0);
            let mode = status["mode"].as_str().unwrap().to_owned();
            let expected: Vec<&str> = FEATURES
                .iter()
                .enumerate()
                .filter(|&(i, feature)| killed[i] || shed_by_mode(&mode).contains(feature))
                .map(|(_, feature)| *feature)
                .collect();
            prop_assert_eq!(&reply.body["disabled_features"], &serde_json::json!(expected));
            prop_assert_eq!(&status["disabled_features"], &serde_json::json!(expected));
            let answered = feature_replies(&mut node, t0);
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
    let (mut node, t0) = demo_node();
    let reply = send(&mut node, r#"{"type":"get_status","msg_id":8}"#, t0);
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
    assert_eq!(cache["capacity"], grace::cache::DEFAULT_CAPACITY);
    assert_eq!(cache["fallbacks_served"], 0);
}

#[test]
fn status_reports_failures_open_circuits_and_fallbacks() {
    let (mut node, t0) = start(with_breaker(3, 5 * SEC, 60 * SEC));
    get_user(&mut node, "1", DOWN, t0);
    get_user(&mut node, "2", DOWN, t0);
    let status_closed = status(&mut node, t0);
    assert_eq!(status_closed["circuits"]["user"]["state"], "closed");
    assert_eq!(status_closed["circuits"]["user"]["consecutive_failures"], 2);
    assert_eq!(status_closed["cache"]["fallbacks_served"], 2);

    get_product(&mut node, "1", r#","force_failures":3"#, t0);
    let status_open = status(&mut node, t0 + 1200 * MS);
    let product = &status_open["circuits"]["product"];
    assert_eq!(product["state"], "open");
    assert_eq!(product["half_open_in_ms"], 3800);
    assert_eq!(status_open["circuits"]["user"]["consecutive_failures"], 2);
    assert_eq!(status_open["circuits"]["order"]["state"], "closed");
    assert_eq!(status_open["cache"]["fallbacks_served"], 3);

    node.handle_timeout(t0 + 5 * SEC);
    let status_half_open = status(&mut node, t0 + 5 * SEC);
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
    let (mut node, t0) = demo_node();
    set_mode(&mut node, r#","mode":"degraded","cpu_usage":85"#, t0);
    set_feature(&mut node, "reviews", false, t0);
    let status = status(&mut node, t0);
    assert_eq!(status["mode"], "degraded");
    assert_eq!(
        status["disabled_features"],
        serde_json::json!(["recommendations", "search", "reviews"])
    );
}

// ---------------------------------------------------------------------------
// Protocol: envelopes, errors, bad input
// ---------------------------------------------------------------------------

#[test]
fn unknown_type_is_not_supported() {
    let (mut node, t0) = demo_node();
    let reply = send(&mut node, r#"{"type":"teleport","msg_id":5}"#, t0);
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
    let (mut node, t0) = demo_node();
    let cases = [
        (r#"{"type":"get_user","msg_id":1}"#, "user_id"),
        (r#"{"type":"get_product","msg_id":1}"#, "product_id"),
        (
            r#"{"type":"get_user","msg_id":1,"user_id":1,"force_failures":-1}"#,
            "force_failures",
        ),
        (
            r#"{"type":"get_user","msg_id":1,"user_id":1,"force_failures":"many"}"#,
            "force_failures",
        ),
        (
            r#"{"type":"get_product","msg_id":1,"product_id":1,"service_unavailable":"yes"}"#,
            "service_unavailable",
        ),
        (
            r#"{"type":"set_service_health","msg_id":1,"available":false}"#,
            "service",
        ),
        (
            r#"{"type":"set_service_health","msg_id":1,"service":"billing","available":false}"#,
            "service",
        ),
        (r#"{"type":"search","msg_id":1}"#, "query"),
        (r#"{"type":"get_reviews","msg_id":1}"#, "product_id"),
        (r#"{"type":"get_recommendations","msg_id":1}"#, "user_id"),
        (r#"{"type":"echo","msg_id":1}"#, "echo"),
        (r#"{"type":"init","msg_id":1}"#, "node_id"),
        (r#"{"msg_id":1,"user_id":1}"#, "type"),
        (r#"{"type":7,"msg_id":1}"#, "type"),
    ];
    for (body, field) in cases {
        let reply = send(&mut node, body, t0);
        assert_eq!(reply.code(), 12, "{body}: {}", reply.text);
        assert_eq!(reply.body["in_reply_to"], 1, "{body}");
        assert!(reply.error_text().contains(field), "{body}: {}", reply.text);
    }
    assert_eq!(
        node.backend().calls(Service::User),
        0,
        "nothing malformed reaches a service"
    );
}

#[test]
fn request_without_msg_id_is_processed_and_answered_without_in_reply_to() {
    let (mut node, t0) = demo_node();
    let reply = send(
        &mut node,
        r#"{"type":"set_service_health","service":"user","available":false}"#,
        t0,
    );
    assert_eq!(
        reply.text,
        r#"{"type":"service_health_ok","service":"user","available":false}"#
    );
    assert!(
        !node.backend().is_available(Service::User),
        "still processed"
    );

    let read = send(&mut node, r#"{"type":"get_user","user_id":3}"#, t0);
    assert_eq!(
        read.text,
        r#"{"type":"user_response","user":{"id":3,"name":"John Doe"},"circuit_state":"closed","from_cache":true}"#
    );
    let error = send(&mut node, r#"{"type":"nope"}"#, t0);
    assert!(
        error.text.starts_with(r#"{"type":"error","code":10,"#),
        "{}",
        error.text
    );
    let null_id = send(&mut node, r#"{"type":"echo","msg_id":null,"echo":1}"#, t0);
    assert_eq!(null_id.text, r#"{"type":"echo_ok","echo":1}"#);
}

#[test]
fn ill_typed_msg_id_is_malformed_without_in_reply_to() {
    let (mut node, t0) = demo_node();
    let reply = send(
        &mut node,
        r#"{"type":"echo","msg_id":"seven","echo":1}"#,
        t0,
    );
    assert_eq!(reply.code(), 12);
    assert!(reply.body.get("in_reply_to").is_none());
    assert!(reply.error_text().contains("msg_id"));
}

#[test]
fn unaddressable_lines_write_nothing_and_are_counted() {
    let (mut node, t0) = demo_node();
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
        let replies = feed(&mut node, line, t0);
        assert!(replies.is_empty(), "line {i} was answered: {replies:?}");
        assert_eq!(node.unaddressable_lines(), i as u64 + 1, "line {i}");
    }
    // The node carries on.
    let echo = send(
        &mut node,
        r#"{"type":"echo","msg_id":2,"echo":"still here"}"#,
        t0,
    );
    assert_eq!(
        echo.text,
        r#"{"type":"echo_ok","in_reply_to":2,"echo":"still here"}"#
    );
}

#[test]
fn a_one_megabyte_message_is_answered() {
    let (mut node, t0) = demo_node();
    let big = "x".repeat(1 << 20);
    let echo = send(
        &mut node,
        &format!(r#"{{"type":"echo","msg_id":1,"echo":"{big}"}}"#),
        t0,
    );
    assert_eq!(echo.body["echo"].as_str().map(str::len), Some(1 << 20));
}

#[test]
fn extra_top_level_keys_are_ignored() {
    let (mut node, t0) = demo_node();
    let line = br#"{"id":17,"src":"c9","dest":"n3","body":{"type":"echo","msg_id":4,"echo":[1,{"a":null}]}}"#;
    let replies = feed(&mut node, line, t0);
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
    let (mut node, t0) = demo_node();
    let before = send(&mut node, r#"{"type":"echo","msg_id":1,"echo":0}"#, t0);
    assert_eq!((before.src.as_str(), before.dest.as_str()), ("n1", "c1"));

    let init = send(
        &mut node,
        r#"{"type":"init","msg_id":2,"node_id":"n7","node_ids":["n7","n8"]}"#,
        t0,
    );
    assert_eq!(init.text, r#"{"type":"init_ok","in_reply_to":2}"#);
    assert_eq!(init.src, "n7", "init_ok already comes from the new name");

    // Requests still addressed to "n1" are answered from "n7".
    let after = send(&mut node, r#"{"type":"echo","msg_id":3,"echo":0}"#, t0);
    assert_eq!((after.src.as_str(), after.dest.as_str()), ("n7", "c1"));
    let error = send(&mut node, r#"{"type":"nope","msg_id":4}"#, t0);
    assert_eq!(error.src, "n7");
    let malformed = send(&mut node, r#"{"msg_id":5}"#, t0);
    assert_eq!(malformed.src, "n7");
}

#[test]
fn request_without_dest_is_still_answered() {
    let (mut node, t0) = demo_node();
    let replies = feed(
        &mut node,
        br#"{"src":"c1","body":{"type":"echo","msg_id":1,"echo":1}}"#,
        t0,
    );
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].dest, "c1");
}
