//! The wire protocol, breakers, fallback cache, load modes and status,
//! driven through the real `grace` binary over stdin/stdout.
//!
//! The first group replays the shared acceptance cases (`shared/cases/`)
//! with the seed's samples compared byte for byte; the rest pins down the
//! transport and each degradation path.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Grace, body_keys, body_text, parse_reply, request, request_from};

/// The seed's first sample, exactly as the node must write it.
const SEED_OPEN_CIRCUIT_BODY: &str = r#"{"type":"user_response","in_reply_to":1,"user":{"id":123,"name":"John Doe"},"circuit_state":"open","from_cache":true}"#;
/// The seed's second sample.
const SEED_CACHED_PRODUCT_BODY: &str = r#"{"type":"product_response","in_reply_to":1,"product":{"id":123,"name":"Product"},"_cached":true}"#;
/// The seed's third example.
const SEED_SET_MODE_BODY: &str = r#"{"type":"mode_changed","in_reply_to":3,"mode":"degraded","disabled_features":["recommendations","search"]}"#;

fn user_body(msg_id: u64, circuit_state: &str, from_cache: bool) -> String {
    format!(
        r#"{{"type":"user_response","in_reply_to":{msg_id},"user":{{"id":123,"name":"John Doe"}},"circuit_state":"{circuit_state}","from_cache":{from_cache}}}"#
    )
}

fn status(node: &mut support::Node, msg_id: u64) -> Value {
    let body = node.call_body(json!({"type": "get_status", "msg_id": msg_id}));
    assert_eq!(body["type"], "status", "{body}");
    body
}

// ---------------------------------------------------------------------------
// The shared cases, in Rust.
// ---------------------------------------------------------------------------

#[test]
fn seed_forced_failures_open_the_breaker_and_serve_the_cached_user() {
    let mut node = Grace::new().spawn();
    let line =
        node.call(json!({"type": "get_user", "msg_id": 1, "user_id": 123, "force_failures": 6}));
    assert_eq!(body_text(&line), SEED_OPEN_CIRCUIT_BODY);
    node.finish().assert_clean_exit();
}

#[test]
fn seed_unavailable_product_service_serves_the_stale_cached_product() {
    let mut node = Grace::new().spawn();
    let line = node.call(
        json!({"type": "get_product", "msg_id": 1, "product_id": 123, "service_unavailable": true}),
    );
    assert_eq!(body_text(&line), SEED_CACHED_PRODUCT_BODY);
    node.finish().assert_clean_exit();
}

#[test]
fn seed_degraded_mode_disables_recommendations_and_search() {
    let mut node = Grace::new().spawn();
    let line =
        node.call(json!({"type": "set_mode", "msg_id": 3, "mode": "degraded", "cpu_usage": 85}));
    assert_eq!(body_text(&line), SEED_SET_MODE_BODY);
    node.finish().assert_clean_exit();
}

#[test]
fn seed_samples_sent_pretty_printed_get_the_same_exact_replies() {
    // The seed shows its inputs pretty-printed; they must work as shown.
    let input = "{\n\"src\": \"client\",\n\"dest\": \"api\",\n\"body\": {\n\"type\": \"get_user\",\n\"msg_id\": 1,\n\"user_id\": 123,\n\"force_failures\": 6\n}\n}\n\
                 {\n\"src\": \"client\",\n\"dest\": \"api\",\n\"body\": {\n\"type\": \"get_product\",\n\"msg_id\": 1,\n\"product_id\": 123,\n\"service_unavailable\": true\n}\n}\n";
    let finished = Grace::new().run(input.as_bytes());
    finished.assert_clean_exit();
    assert_eq!(finished.lines.len(), 2, "{:?}", finished.lines);
    assert_eq!(body_text(&finished.lines[0]), SEED_OPEN_CIRCUIT_BODY);
    assert_eq!(body_text(&finished.lines[1]), SEED_CACHED_PRODUCT_BODY);
}

#[test]
fn reply_comes_from_the_request_dest_before_init() {
    let mut node = Grace::new().spawn();
    node.send(&request_from(
        "c9",
        "api",
        json!({"type": "get_user", "msg_id": 7, "user_id": 123}),
    ));
    let line = node.recv_line();
    assert_eq!(
        line,
        format!(
            r#"{{"src":"api","dest":"c9","body":{}}}"#,
            user_body(7, "closed", false)
        )
    );
    node.finish().assert_clean_exit();
}

#[test]
fn init_names_the_node_for_every_later_reply() {
    let mut node = Grace::new().spawn();
    node.send(&request_from(
        "c0",
        "n1",
        json!({"type": "init", "msg_id": 1, "node_id": "n1", "node_ids": ["n1", "n2"]}),
    ));
    assert_eq!(
        node.recv_line(),
        r#"{"src":"n1","dest":"c0","body":{"type":"init_ok","in_reply_to":1}}"#
    );
    node.send(&request_from(
        "c1",
        "n1",
        json!({"type": "get_product", "msg_id": 2, "product_id": 123}),
    ));
    assert_eq!(
        node.recv_line(),
        r#"{"src":"n1","dest":"c1","body":{"type":"product_response","in_reply_to":2,"product":{"id":123,"name":"Product"},"_cached":false}}"#
    );
    // Once named, the node keeps its name even when a request is addressed
    // to some other dest.
    node.send(&request_from(
        "c2",
        "elsewhere",
        json!({"type": "echo", "msg_id": 3, "echo": "x"}),
    ));
    let reply = node.recv();
    assert_eq!(reply["src"], "n1");
    assert_eq!(reply["dest"], "c2");
    node.finish().assert_clean_exit();
}

#[test]
fn fewer_failures_than_the_threshold_keep_the_breaker_closed() {
    let mut node = Grace::new().spawn();
    let line =
        node.call(json!({"type": "get_user", "msg_id": 1, "user_id": 123, "force_failures": 4}));
    assert_eq!(body_text(&line), user_body(1, "closed", false));
    node.finish().assert_clean_exit();
}

#[test]
fn open_breaker_serves_stale_copy_without_calling_service() {
    let mut node = Grace::new().spawn();
    let line =
        node.call(json!({"type": "get_user", "msg_id": 1, "user_id": 123, "force_failures": 5}));
    assert_eq!(body_text(&line), user_body(1, "open", true));
    let calls_before = status(&mut node, 2)["circuits"]["user"]["calls"].clone();
    assert_eq!(calls_before, 5, "the threshold's worth of failed calls");
    let line = node.call(json!({"type": "get_user", "msg_id": 3, "user_id": 123}));
    assert_eq!(body_text(&line), user_body(3, "open", true));
    let after = status(&mut node, 4);
    assert_eq!(
        after["circuits"]["user"]["calls"], calls_before,
        "an open breaker must not call the service: {after}"
    );
    assert!(
        after["cache"]["fallbacks_served"].as_u64() >= Some(2),
        "{after}"
    );
    node.finish().assert_clean_exit();
}

#[test]
fn successful_probe_after_the_open_timeout_closes_the_breaker() {
    let mut node = Grace::new().args(["--open-timeout-ms", "200"]).spawn();
    let line =
        node.call(json!({"type": "get_user", "msg_id": 1, "user_id": 123, "force_failures": 5}));
    assert_eq!(body_text(&line), user_body(1, "open", true));
    std::thread::sleep(Duration::from_millis(300));
    let line = node.call(json!({"type": "get_user", "msg_id": 2, "user_id": 123}));
    assert_eq!(body_text(&line), user_body(2, "closed", false));
    node.finish().assert_clean_exit();
}

#[test]
fn unknown_type_is_not_supported() {
    let mut node = Grace::new().spawn();
    let body = node.call_body(json!({"type": "frobnicate", "msg_id": 4}));
    assert_eq!(body["type"], "error");
    assert_eq!(body["in_reply_to"], 4);
    assert_eq!(body["code"], 10);
    node.finish().assert_clean_exit();
}

#[test]
fn request_missing_a_required_field_is_malformed() {
    let mut node = Grace::new().spawn();
    let body = node.call_body(json!({"type": "get_user", "msg_id": 5}));
    assert_eq!(body["code"], 12, "{body}");
    assert_eq!(body["in_reply_to"], 5);
    node.finish().assert_clean_exit();
}

#[test]
fn garbage_line_is_skipped_and_the_next_message_answered() {
    let input = format!(
        "this is not json {{\n{}\n",
        request(json!({"type": "get_product", "msg_id": 6, "product_id": 123}))
    );
    let finished = Grace::new().run(input.as_bytes());
    finished.assert_clean_exit();
    assert_eq!(finished.lines.len(), 1, "{:?}", finished.lines);
    assert_eq!(
        body_text(&finished.lines[0]),
        r#"{"type":"product_response","in_reply_to":6,"product":{"id":123,"name":"Product"},"_cached":false}"#
    );
}

#[test]
fn normal_mode_disables_nothing() {
    let mut node = Grace::new().spawn();
    node.call(json!({"type": "set_mode", "msg_id": 1, "mode": "degraded", "cpu_usage": 85}));
    let line =
        node.call(json!({"type": "set_mode", "msg_id": 2, "mode": "normal", "cpu_usage": 20}));
    assert_eq!(
        body_text(&line),
        r#"{"type":"mode_changed","in_reply_to":2,"mode":"normal","disabled_features":[]}"#
    );
    node.finish().assert_clean_exit();
}

#[test]
fn disabled_feature_answers_degraded_instead_of_failing() {
    let mut node = Grace::new().spawn();
    node.call(json!({"type": "set_mode", "msg_id": 1, "mode": "degraded", "cpu_usage": 85}));
    let body = node.call_body(json!({"type": "get_recommendations", "msg_id": 2, "user_id": 123}));
    assert_eq!(body["type"], "recommendations_response");
    assert_eq!(body["recommendations"], json!([]));
    assert_eq!(body["degraded"], true);
    node.finish().assert_clean_exit();
}

#[test]
fn write_is_queued_when_its_service_is_down() {
    let mut node = Grace::new().spawn();
    let body = node.call_body(json!({
        "type": "create_order", "msg_id": 1,
        "order": {"user_id": 123, "product_id": 123, "quantity": 1},
        "service_unavailable": true
    }));
    assert_eq!(body["type"], "order_response", "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["queued"], true);
    assert_eq!(body["queue_position"], 1);
    node.finish().assert_clean_exit();
}

#[test]
fn status_reports_mode_features_circuits_and_cache() {
    let mut node = Grace::new().spawn();
    node.call(json!({"type": "get_user", "msg_id": 1, "user_id": 123, "force_failures": 6}));
    let line = node.call(json!({"type": "get_status", "msg_id": 2}));
    let body = parse_reply(&line)["body"].clone();
    assert_eq!(&body_keys(&line)[..2], ["type", "in_reply_to"]);
    assert_eq!(body["mode"], "normal");
    assert_eq!(body["disabled_features"], json!([]));
    assert_eq!(body["circuits"]["user"]["state"], "open");
    assert_eq!(body["circuits"]["product"]["state"], "closed");
    assert_eq!(body["circuits"]["order"]["state"], "closed");
    assert_eq!(body["circuits"]["product"]["consecutive_failures"], 0);
    // The cache was warmed with users and products 1..=1000.
    assert!(body["cache"]["entries"].as_u64() >= Some(2000), "{body}");
    assert_eq!(body["cache"]["capacity"], 100_000);
    node.finish().assert_clean_exit();
}

// ---------------------------------------------------------------------------
// Transport.
// ---------------------------------------------------------------------------

#[test]
fn pretty_printed_object_over_several_lines_is_one_message() {
    let input = "{\n  \"src\": \"client\",\n  \"dest\": \"api\",\n  \"body\": {\n    \"type\": \"echo\",\n    \"msg_id\": 1,\n    \"echo\": \"}{\"\n  }\n}\n";
    let finished = Grace::new().run(input.as_bytes());
    finished.assert_clean_exit();
    assert_eq!(finished.lines.len(), 1, "{:?}", finished.lines);
    assert_eq!(
        body_text(&finished.lines[0]),
        r#"{"type":"echo_ok","in_reply_to":1,"echo":"}{"}"#
    );
}

#[test]
fn pretty_printed_echo_value_is_answered_on_one_compact_line() {
    let input = "{\n  \"src\": \"client\",\n  \"dest\": \"api\",\n  \"body\": {\n    \"type\": \"echo\",\n    \"msg_id\": 1,\n    \"echo\": {\"nested\": [1,\n      2, \"}{\"]}\n  }\n}\n";
    let finished = Grace::new().run(input.as_bytes());
    finished.assert_clean_exit();
    assert_eq!(finished.lines.len(), 1, "{:?}", finished.lines);
    assert_eq!(
        body_text(&finished.lines[0]),
        r#"{"type":"echo_ok","in_reply_to":1,"echo":{"nested":[1,2,"}{"]}}"#
    );
}

#[test]
fn pretty_printed_without_indentation_with_objects_in_arrays_is_one_message() {
    let input = "{\n\"src\": \"client\",\n\"dest\": \"api\",\n\"body\": {\n\"type\": \"echo\",\n\"msg_id\": 1,\n\"echo\": [\n{\n\"sku\": 1\n},\n{\n\"sku\": 2\n}\n]\n}\n}\n";
    let finished = Grace::new().run(input.as_bytes());
    finished.assert_clean_exit();
    assert_eq!(finished.lines.len(), 1, "{}", finished.stderr);
    assert_eq!(
        body_text(&finished.lines[0]),
        r#"{"type":"echo_ok","in_reply_to":1,"echo":[{"sku":1},{"sku":2}]}"#
    );
}

#[test]
fn crlf_line_endings_and_blank_lines_are_accepted() {
    let mut input = String::from("\r\n\n");
    for msg_id in 1..=3 {
        input.push_str(&request(
            json!({"type": "echo", "msg_id": msg_id, "echo": msg_id}),
        ));
        input.push_str("\r\n\r\n   \n");
    }
    // A pretty-printed object with CRLF endings too.
    input.push_str("{\r\n \"src\": \"client\",\r\n \"dest\": \"api\",\r\n \"body\": {\"type\": \"echo\", \"msg_id\": 4, \"echo\": 4}\r\n}\r\n");
    let finished = Grace::new().run(input.as_bytes());
    finished.assert_clean_exit();
    let answered: Vec<Value> = finished
        .bodies()
        .iter()
        .map(|b| b["in_reply_to"].clone())
        .collect();
    assert_eq!(answered, [json!(1), json!(2), json!(3), json!(4)]);
}

#[test]
fn last_line_without_a_newline_is_still_answered() {
    let input = request(json!({"type": "echo", "msg_id": 1, "echo": "end"}));
    let finished = Grace::new().run(input.as_bytes());
    finished.assert_clean_exit();
    assert_eq!(finished.body_for(1)["echo"], "end");
}

#[test]
fn extra_top_level_keys_are_ignored() {
    let mut node = Grace::new().spawn();
    node.send(r#"{"id":42,"src":"c1","dest":"api","body":{"type":"echo","msg_id":1,"echo":"hi"},"trace":{"x":[1]}}"#);
    assert_eq!(
        node.recv_line(),
        r#"{"src":"api","dest":"c1","body":{"type":"echo_ok","in_reply_to":1,"echo":"hi"}}"#
    );
    node.finish().assert_clean_exit();
}

#[test]
fn request_without_msg_id_gets_a_reply_without_in_reply_to() {
    let mut node = Grace::new().spawn();
    let line = node.call(json!({"type": "get_user", "user_id": 123}));
    assert_eq!(
        body_text(&line),
        r#"{"type":"user_response","user":{"id":123,"name":"John Doe"},"circuit_state":"closed","from_cache":false}"#
    );
    // Errors too.
    let line = node.call(json!({"type": "nope"}));
    let body = parse_reply(&line)["body"].clone();
    assert_eq!(body["code"], 10);
    assert!(body.get("in_reply_to").is_none(), "{body}");
    node.finish().assert_clean_exit();
}

#[test]
fn echo_returns_the_same_value() {
    let mut node = Grace::new().spawn();
    let value =
        json!({"b": [1, {"c": null}], "a": "é", "n": -1.5e3, "s": "line\nbreak \"quoted\""});
    let line = node.call(json!({"type": "echo", "msg_id": 9, "echo": value}));
    assert_eq!(body_keys(&line), ["type", "in_reply_to", "echo"]);
    assert_eq!(parse_reply(&line)["body"]["echo"], value);
    node.finish().assert_clean_exit();
}

#[test]
fn echo_keeps_keys_in_their_order_on_one_compact_line() {
    let mut node = Grace::new().spawn();
    node.send(r#"{"src":"client","dest":"api","body":{"type":"echo","msg_id":9,"echo":{ "b" : [1, {"c": null}],  "a": "é x", "big": 12345678901234567890123 }}}"#);
    assert_eq!(
        body_text(&node.recv_line()),
        r#"{"type":"echo_ok","in_reply_to":9,"echo":{"b":[1,{"c":null}],"a":"é x","big":12345678901234567890123}}"#
    );
    node.finish().assert_clean_exit();
}

#[test]
fn echo_returns_valid_json_it_cannot_represent_verbatim() {
    let mut node = Grace::new().spawn();
    node.send(r#"{"src":"client","dest":"api","body":{"type":"echo","msg_id":1,"echo":[1e400,"\ud800"]}}"#);
    let line = node.recv_line();
    assert_eq!(
        body_text(&line),
        r#"{"type":"echo_ok","in_reply_to":1,"echo":[1e400,"\ud800"]}"#
    );
    node.finish().assert_clean_exit();
}

#[test]
fn every_reply_body_starts_with_type_then_in_reply_to() {
    let requests = [
        json!({"type": "init", "msg_id": 1, "node_id": "n1", "node_ids": ["n1"]}),
        json!({"type": "echo", "msg_id": 2, "echo": 1}),
        json!({"type": "get_user", "msg_id": 3, "user_id": 1}),
        json!({"type": "get_product", "msg_id": 4, "product_id": 1}),
        json!({"type": "set_mode", "msg_id": 5, "mode": "normal", "cpu_usage": 1}),
        json!({"type": "set_feature", "msg_id": 6, "feature": "search", "enabled": true}),
        json!({"type": "get_recommendations", "msg_id": 7, "user_id": 1}),
        json!({"type": "search", "msg_id": 8, "query": "prod"}),
        json!({"type": "get_reviews", "msg_id": 9, "product_id": 1}),
        json!({"type": "set_service_health", "msg_id": 10, "service": "product", "available": true}),
        json!({"type": "get_status", "msg_id": 11}),
        json!({"type": "create_order", "msg_id": 12, "order": {"item": 1}}),
        json!({"type": "get_queue", "msg_id": 13}),
        json!({"type": "process_queue", "msg_id": 14}),
        json!({"type": "unknown_thing", "msg_id": 15}),
        json!({"type": "get_user", "msg_id": 16}),
    ];
    let input: String = requests
        .iter()
        .map(|body| request(body.clone()) + "\n")
        .collect();
    let finished = Grace::new().run(input.as_bytes());
    finished.assert_clean_exit();
    assert_eq!(finished.lines.len(), requests.len(), "{:?}", finished.lines);
    for (msg_id, line) in (1..).zip(&finished.lines) {
        let keys = body_keys(line);
        assert_eq!(keys[..2], ["type", "in_reply_to"], "{line}");
        assert_eq!(parse_reply(line)["body"]["in_reply_to"], msg_id, "{line}");
        // Envelope order: src, dest, body.
        assert!(
            line.starts_with(r#"{"src":"n1","dest":"client","body":{"#),
            "{line}"
        );
    }
}

#[test]
fn reply_is_flushed_while_stdin_stays_open() {
    let mut node = Grace::new().spawn();
    let started = Instant::now();
    node.send_body(json!({"type": "get_user", "msg_id": 1, "user_id": 123}));
    let line = node
        .recv_line_within(Duration::from_secs(2))
        .expect("a single request is answered at once, without waiting for more input");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(body_text(&line), user_body(1, "closed", false));
    // And again after a pause: the node flushes every burst, not only the first.
    std::thread::sleep(Duration::from_millis(50));
    node.send_body(json!({"type": "echo", "msg_id": 2, "echo": 2}));
    let line = node
        .recv_line_within(Duration::from_secs(2))
        .expect("second reply flushed");
    assert_eq!(parse_reply(&line)["body"]["in_reply_to"], 2);
    node.finish().assert_clean_exit();
}

#[test]
fn hundred_thousand_piped_requests_are_all_answered_in_order() {
    const COUNT: u64 = 100_000;
    let mut input = Vec::with_capacity(COUNT as usize * 90);
    for msg_id in 1..=COUNT {
        let body = match msg_id % 4 {
            0 => json!({"type": "get_user", "msg_id": msg_id, "user_id": msg_id}),
            1 => json!({"type": "get_product", "msg_id": msg_id, "product_id": msg_id}),
            2 => json!({"type": "echo", "msg_id": msg_id, "echo": msg_id}),
            _ => json!({"type": "get_reviews", "msg_id": msg_id, "product_id": msg_id}),
        };
        input.extend_from_slice(request(body).as_bytes());
        input.push(b'\n');
    }
    let finished = Grace::new().run(&input);
    assert!(finished.status.success(), "{}", finished.stderr);
    assert_eq!(finished.lines.len() as u64, COUNT);
    for (expected, line) in (1..=COUNT).zip(&finished.lines) {
        let reply = parse_reply(line);
        assert_eq!(reply["body"]["in_reply_to"], expected, "{line}");
        assert_ne!(reply["body"]["type"], "error", "{line}");
    }
}

// ---------------------------------------------------------------------------
// Reads, the fallback cache and fault injection.
// ---------------------------------------------------------------------------

#[test]
fn ids_are_echoed_back_as_given_integer_or_string() {
    let mut node = Grace::new().spawn();
    let line = node.call(json!({"type": "get_user", "msg_id": 1, "user_id": "u-7"}));
    assert_eq!(
        body_text(&line),
        r#"{"type":"user_response","in_reply_to":1,"user":{"id":"u-7","name":"John Doe"},"circuit_state":"closed","from_cache":false}"#
    );
    let line = node.call(json!({"type": "get_product", "msg_id": 2, "product_id": "123"}));
    assert_eq!(
        body_text(&line),
        r#"{"type":"product_response","in_reply_to":2,"product":{"id":"123","name":"Product"},"_cached":false}"#
    );
    node.finish().assert_clean_exit();
}

#[test]
fn service_down_with_no_cached_copy_is_temporarily_unavailable() {
    let mut node = Grace::new().spawn();
    // Only ids 1..=1000 are warm at start.
    let body = node.call_body(
        json!({"type": "get_user", "msg_id": 1, "user_id": 5000, "service_unavailable": true}),
    );
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["code"], 11);
    node.finish().assert_clean_exit();
}

#[test]
fn fresh_read_refreshes_the_cache_for_later_fallbacks() {
    let mut node = Grace::new().spawn();
    let fresh = node.call(json!({"type": "get_product", "msg_id": 1, "product_id": 5000}));
    assert_eq!(
        body_text(&fresh),
        r#"{"type":"product_response","in_reply_to":1,"product":{"id":5000,"name":"Product"},"_cached":false}"#
    );
    let stale = node.call(json!({"type": "get_product", "msg_id": 2, "product_id": 5000, "service_unavailable": true}));
    assert_eq!(
        body_text(&stale),
        r#"{"type":"product_response","in_reply_to":2,"product":{"id":5000,"name":"Product"},"_cached":true}"#
    );
    node.finish().assert_clean_exit();
}

#[test]
fn copies_older_than_max_stale_are_not_served() {
    let mut node = Grace::new().args(["--cache-max-stale-ms", "100"]).spawn();
    // The warm copies date from the node's start (its first message).
    node.call(json!({"type": "echo", "msg_id": 1, "echo": 1}));
    std::thread::sleep(Duration::from_millis(200));
    let body = node.call_body(
        json!({"type": "get_user", "msg_id": 2, "user_id": 123, "service_unavailable": true}),
    );
    assert_eq!(
        body["code"], 11,
        "a copy past --cache-max-stale-ms is no fallback: {body}"
    );
    // A fresh read gives a new copy, young enough to serve.
    node.call(json!({"type": "get_user", "msg_id": 3, "user_id": 123}));
    let line = node.call(
        json!({"type": "get_user", "msg_id": 4, "user_id": 123, "service_unavailable": true}),
    );
    assert_eq!(body_text(&line), user_body(4, "closed", true));
    node.finish().assert_clean_exit();
}

#[test]
fn cache_keeps_at_most_its_capacity_evicting_the_least_recently_used() {
    let mut node = Grace::new().args(["--cache-capacity", "2"]).spawn();
    for (msg_id, user_id) in [(1, 5001), (2, 5002), (3, 5001), (4, 5003)] {
        let body =
            node.call_body(json!({"type": "get_user", "msg_id": msg_id, "user_id": user_id}));
        assert_eq!(body["from_cache"], false, "{body}");
    }
    let status = status(&mut node, 5);
    assert_eq!(status["cache"]["entries"], 2, "{status}");
    // 5002 was the least recently used when 5003 came in.
    let down = |msg_id: u64, user_id: u64| json!({"type": "get_user", "msg_id": msg_id, "user_id": user_id, "service_unavailable": true});
    assert_eq!(node.call_body(down(6, 5002))["code"], 11);
    assert_eq!(node.call_body(down(7, 5001))["from_cache"], true);
    assert_eq!(node.call_body(down(8, 5003))["from_cache"], true);
    node.finish().assert_clean_exit();
}

#[test]
fn success_in_closed_resets_the_failure_count() {
    let mut node = Grace::new().spawn();
    // 4 failures, then the request's own call succeeds and resets the count.
    node.call(json!({"type": "get_user", "msg_id": 1, "user_id": 1, "force_failures": 4}));
    let line =
        node.call(json!({"type": "get_user", "msg_id": 2, "user_id": 1, "force_failures": 4}));
    assert_eq!(
        parse_reply(&line)["body"]["circuit_state"],
        "closed",
        "{line}"
    );
    assert_eq!(
        status(&mut node, 3)["circuits"]["user"]["consecutive_failures"],
        0
    );
    node.finish().assert_clean_exit();
}

#[test]
fn each_service_has_its_own_breaker() {
    let mut node = Grace::new().spawn();
    node.call(json!({"type": "get_product", "msg_id": 1, "product_id": 1, "force_failures": 5}));
    let line = node.call(json!({"type": "get_user", "msg_id": 2, "user_id": 123}));
    assert_eq!(body_text(&line), user_body(2, "closed", false));
    let body = status(&mut node, 3);
    assert_eq!(body["circuits"]["product"]["state"], "open");
    assert_eq!(body["circuits"]["user"]["state"], "closed");
    node.finish().assert_clean_exit();
}

#[test]
fn sticky_outage_fails_every_call_until_the_service_is_back() {
    let mut node = Grace::new().spawn();
    let line = node.call(
        json!({"type": "set_service_health", "msg_id": 1, "service": "user", "available": false}),
    );
    assert_eq!(
        body_text(&line),
        r#"{"type":"service_health_ok","in_reply_to":1,"service":"user","available":false}"#
    );
    for msg_id in 2..=5 {
        let line = node.call(json!({"type": "get_user", "msg_id": msg_id, "user_id": 123}));
        assert_eq!(body_text(&line), user_body(msg_id, "closed", true));
    }
    let line = node.call(json!({"type": "get_user", "msg_id": 6, "user_id": 123}));
    assert_eq!(
        body_text(&line),
        user_body(6, "open", true),
        "the fifth failure opens it"
    );
    let line = node.call(
        json!({"type": "set_service_health", "msg_id": 7, "service": "user", "available": true}),
    );
    assert_eq!(
        body_text(&line),
        r#"{"type":"service_health_ok","in_reply_to":7,"service":"user","available":true}"#
    );
    // Products were never affected.
    let line = node.call(json!({"type": "get_product", "msg_id": 8, "product_id": 123}));
    assert_eq!(parse_reply(&line)["body"]["_cached"], false);
    node.finish().assert_clean_exit();
}

#[test]
fn open_breaker_half_opens_at_its_deadline_without_any_request() {
    // Long enough that a loaded machine still asks for the status before
    // the breaker half-opens.
    let mut node = Grace::new().args(["--open-timeout-ms", "1000"]).spawn();
    let line =
        node.call(json!({"type": "get_user", "msg_id": 1, "user_id": 123, "force_failures": 5}));
    assert_eq!(body_text(&line), user_body(1, "open", true));
    let open = status(&mut node, 2);
    assert_eq!(open["circuits"]["user"]["state"], "open");
    assert_eq!(open["circuits"]["user"]["open_timeout_ms"], 1000);
    // Nothing is sent now: the runtime must wake itself at the deadline and
    // log the transition.
    node.wait_for_stderr("half_open");
    let body = status(&mut node, 3);
    assert_eq!(body["circuits"]["user"]["state"], "half_open", "{body}");
    node.finish().assert_clean_exit();
}

#[test]
fn failed_probe_reopens_the_breaker_with_a_doubled_timeout() {
    let mut node = Grace::new().args(["--open-timeout-ms", "200"]).spawn();
    node.call(json!({"type": "get_user", "msg_id": 1, "user_id": 123, "force_failures": 5}));
    std::thread::sleep(Duration::from_millis(300));
    let body = status(&mut node, 2);
    assert_eq!(body["circuits"]["user"]["state"], "half_open", "{body}");
    let line = node.call(
        json!({"type": "get_user", "msg_id": 3, "user_id": 123, "service_unavailable": true}),
    );
    assert_eq!(body_text(&line), user_body(3, "open", true));
    let body = status(&mut node, 4);
    assert_eq!(body["circuits"]["user"]["state"], "open", "{body}");
    assert_eq!(body["circuits"]["user"]["open_timeout_ms"], 400, "{body}");
    // After the doubled wait, a successful probe closes it and resets the wait.
    std::thread::sleep(Duration::from_millis(450));
    let line = node.call(json!({"type": "get_user", "msg_id": 5, "user_id": 123}));
    assert_eq!(body_text(&line), user_body(5, "closed", false));
    let body = status(&mut node, 6);
    assert_eq!(body["circuits"]["user"]["open_timeout_ms"], 200, "{body}");
    let finished = node.finish();
    finished.assert_clean_exit();
    // Every transition is on stderr: closed→open, open→half_open (twice),
    // half_open→open after the failed probe, half_open→closed.
    let transitions: Vec<&str> = finished
        .stderr
        .lines()
        .filter(|line| line.contains("user"))
        .filter(|line| line.contains("half_open") || line.contains("open"))
        .filter(|line| !line.contains("journal"))
        .collect();
    assert!(transitions.len() >= 5, "{}", finished.stderr);
    assert!(
        transitions.iter().any(|line| line.contains("probe")),
        "the failed probe is named as the reason: {}",
        finished.stderr
    );
}

#[test]
fn open_breaker_reports_time_until_half_open() {
    let mut node = Grace::new().args(["--open-timeout-ms", "60000"]).spawn();
    node.call(json!({"type": "get_user", "msg_id": 1, "user_id": 123, "force_failures": 5}));
    let body = status(&mut node, 2);
    let remaining = body["circuits"]["user"]["half_open_in_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("half_open_in_ms missing: {body}"));
    assert!((50_000..=60_000).contains(&remaining), "{body}");
    node.finish().assert_clean_exit();
}

// ---------------------------------------------------------------------------
// Load modes and feature flags.
// ---------------------------------------------------------------------------

fn set_mode(node: &mut support::Node, msg_id: u64, fields: Value) -> String {
    let mut body = json!({"type": "set_mode", "msg_id": msg_id});
    for (key, value) in fields.as_object().expect("object") {
        body[key] = value.clone();
    }
    node.call(body)
}

fn mode_changed(msg_id: u64, mode: &str, disabled: &[&str]) -> String {
    format!(
        r#"{{"type":"mode_changed","in_reply_to":{msg_id},"mode":"{mode}","disabled_features":{}}}"#,
        serde_json::to_string(disabled).unwrap()
    )
}

#[test]
fn auto_mode_follows_cpu_with_hysteresis() {
    let mut node = Grace::new().spawn();
    let steps: [(Value, &str, &[&str]); 6] = [
        (
            json!({"cpu_usage": 85}),
            "degraded",
            &["recommendations", "search"],
        ),
        (
            json!({"mode": "auto", "cpu_usage": 75}),
            "degraded",
            &["recommendations", "search"],
        ),
        (json!({"cpu_usage": 65}), "normal", &[]),
        (json!({"cpu_usage": 79}), "normal", &[]),
        (
            json!({"mode": "auto", "cpu_usage": 96}),
            "critical",
            &["recommendations", "search", "reviews"],
        ),
        (
            json!({"cpu_usage": 86}),
            "critical",
            &["recommendations", "search", "reviews"],
        ),
    ];
    for (msg_id, (fields, mode, disabled)) in (1..).zip(steps) {
        let line = set_mode(&mut node, msg_id, fields.clone());
        assert_eq!(
            body_text(&line),
            mode_changed(msg_id, mode, disabled),
            "after {fields}"
        );
    }
    let line = set_mode(&mut node, 7, json!({"cpu_usage": 84}));
    assert_eq!(
        body_text(&line),
        mode_changed(7, "degraded", &["recommendations", "search"])
    );
    node.finish().assert_clean_exit();
}

#[test]
fn explicit_mode_overrides_the_cpu_reading() {
    let mut node = Grace::new().spawn();
    let line = set_mode(&mut node, 1, json!({"mode": "normal", "cpu_usage": 99}));
    assert_eq!(body_text(&line), mode_changed(1, "normal", &[]));
    let line = set_mode(&mut node, 2, json!({"mode": "critical", "cpu_usage": 5}));
    assert_eq!(
        body_text(&line),
        mode_changed(2, "critical", &["recommendations", "search", "reviews"])
    );
    let body = node.call_body(json!({"type": "get_reviews", "msg_id": 3, "product_id": 1}));
    assert_eq!(body["reviews"], json!([]));
    assert_eq!(body["degraded"], true);
    // Back to auto: the mode follows the cpu again.
    let line = set_mode(&mut node, 4, json!({"mode": "auto", "cpu_usage": 10}));
    assert_eq!(body_text(&line), mode_changed(4, "normal", &[]));
    let status = status(&mut node, 5);
    assert_eq!(status["mode"], "normal");
    assert_eq!(status["disabled_features"], json!([]));
    node.finish().assert_clean_exit();
}

#[test]
fn feature_kill_switch_disables_one_feature_regardless_of_mode() {
    let mut node = Grace::new().spawn();
    let line = node
        .call(json!({"type": "set_feature", "msg_id": 1, "feature": "reviews", "enabled": false}));
    assert_eq!(
        body_text(&line),
        r#"{"type":"feature_set","in_reply_to":1,"disabled_features":["reviews"]}"#
    );
    let body = node.call_body(json!({"type": "get_reviews", "msg_id": 2, "product_id": 7}));
    assert_eq!(body["type"], "reviews_response");
    assert_eq!(body["reviews"], json!([]));
    assert_eq!(body["degraded"], true);
    // Other features still work.
    let body = node.call_body(json!({"type": "search", "msg_id": 3, "query": "product"}));
    assert_eq!(body["degraded"], false);
    // In degraded mode, the kill switch adds to what the mode disables.
    set_mode(&mut node, 4, json!({"mode": "degraded", "cpu_usage": 85}));
    let body = status(&mut node, 5);
    assert_eq!(
        body["disabled_features"],
        json!(["recommendations", "search", "reviews"])
    );
    // Back to normal: only the killed feature stays off.
    let line = set_mode(&mut node, 6, json!({"mode": "normal", "cpu_usage": 1}));
    assert_eq!(body_text(&line), mode_changed(6, "normal", &["reviews"]));
    let line = node
        .call(json!({"type": "set_feature", "msg_id": 7, "feature": "reviews", "enabled": true}));
    assert_eq!(
        body_text(&line),
        r#"{"type":"feature_set","in_reply_to":7,"disabled_features":[]}"#
    );
    let body = node.call_body(json!({"type": "get_reviews", "msg_id": 8, "product_id": 7}));
    assert_eq!(body["degraded"], false);
    assert!(!body["reviews"].as_array().unwrap().is_empty(), "{body}");
    node.finish().assert_clean_exit();
}

#[test]
fn enabled_features_answer_with_non_empty_lists_and_degraded_false() {
    let mut node = Grace::new().spawn();
    let cases = [
        (
            json!({"type": "get_recommendations", "msg_id": 1, "user_id": 123}),
            "recommendations_response",
            "recommendations",
        ),
        (
            json!({"type": "search", "msg_id": 2, "query": "Product"}),
            "search_response",
            "results",
        ),
        (
            json!({"type": "get_reviews", "msg_id": 3, "product_id": 123}),
            "reviews_response",
            "reviews",
        ),
    ];
    for (request, reply_type, list) in cases {
        let line = node.call(request);
        let body = parse_reply(&line)["body"].clone();
        assert_eq!(body["type"], reply_type, "{line}");
        assert_eq!(body["degraded"], false, "{line}");
        let items = body[list]
            .as_array()
            .unwrap_or_else(|| panic!("{list} missing: {line}"));
        assert!(!items.is_empty(), "{line}");
        assert_eq!(body_keys(&line), ["type", "in_reply_to", list, "degraded"]);
    }
    node.finish().assert_clean_exit();
}

#[test]
fn disabled_features_answer_empty_lists_and_degraded_true() {
    let mut node = Grace::new().spawn();
    set_mode(&mut node, 1, json!({"mode": "critical", "cpu_usage": 99}));
    let cases = [
        (
            json!({"type": "get_recommendations", "msg_id": 2, "user_id": 123}),
            r#"{"type":"recommendations_response","in_reply_to":2,"recommendations":[],"degraded":true}"#,
        ),
        (
            json!({"type": "search", "msg_id": 3, "query": "Product"}),
            r#"{"type":"search_response","in_reply_to":3,"results":[],"degraded":true}"#,
        ),
        (
            json!({"type": "get_reviews", "msg_id": 4, "product_id": 123}),
            r#"{"type":"reviews_response","in_reply_to":4,"reviews":[],"degraded":true}"#,
        ),
    ];
    for (request, expected) in cases {
        let line = node.call(request);
        assert_eq!(body_text(&line), expected);
    }
    // Core reads still work in critical mode.
    let line = node.call(json!({"type": "get_user", "msg_id": 5, "user_id": 123}));
    assert_eq!(body_text(&line), user_body(5, "closed", false));
    node.finish().assert_clean_exit();
}
