//! Writes through `grace serve` on a `fallback = "queue"` route, black-box:
//! passed through when the service takes them and nothing waits before
//! them; otherwise committed to the journal and answered `202` with an
//! unguessable id whose status the client can ask for; delivered later in
//! order, each delivery carrying the request's `Idempotency-Key`; repeats
//! of a key answered with the first request's outcome (`422` for another
//! body, `409` while the first is being sent).

mod support;

use serde_json::{Value, json};
use std::collections::HashSet;
use std::thread;
use support::gateway::{
    Gateway, GatewayBuilder, ScriptedUpstream, canned, demo_config, one_service_config, route,
};
use support::upstream::{DemoUpstream, Reply, http_agent};

/// Retries wait this long, so nothing is retried on its own during a test
/// that delivers with `POST /queue/process`.
const NO_RETRY_MS: &str = "600000";
/// No breaker in the way: the tests below fail the upstream many times.
const NO_BREAKER: &str = "breaker = { failure_threshold = 0 }";

fn order(item: u32) -> String {
    json!({ "user_id": 1, "product_id": item, "quantity": 1 }).to_string()
}

/// A gateway on the demo routes in front of `upstream`, retries parked.
fn demo_gateway(upstream: &DemoUpstream) -> Gateway {
    demo_builder(upstream)
        .args([
            "--retry-base-ms",
            NO_RETRY_MS,
            "--retry-max-ms",
            NO_RETRY_MS,
        ])
        .spawn()
}

fn demo_builder(upstream: &DemoUpstream) -> GatewayBuilder {
    Gateway::builder().config(&demo_config(&upstream.url(""), NO_BREAKER))
}

/// A gateway with one service `things` at `upstream` and the route `POST
/// /things/{id}` queued, retries parked.
fn things_gateway(upstream: &ScriptedUpstream) -> Gateway {
    let routes = route("POST", "/things/{id}", "things", "fallback = \"queue\"");
    Gateway::builder()
        .config(&one_service_config(
            "things",
            &upstream.url(),
            NO_BREAKER,
            &routes,
        ))
        .args([
            "--retry-base-ms",
            NO_RETRY_MS,
            "--retry-max-ms",
            NO_RETRY_MS,
        ])
        .spawn()
}

/// Checks a `202 Accepted` and returns the id it gives.
fn assert_accepted(reply: &Reply, position: u64) -> String {
    assert_eq!(reply.status, 202, "{reply:?}");
    let body = reply.json();
    let id = body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("202 names its id: {reply:?}"))
        .to_string();
    let location = format!("/grace/requests/{id}");
    assert_eq!(
        reply.header("location"),
        Some(location.as_str()),
        "{reply:?}"
    );
    assert_eq!(body["status"], "queued", "{reply:?}");
    assert_eq!(body["position"], position, "{reply:?}");
    id
}

fn request_status(gateway: &Gateway, id: &str) -> Value {
    let reply = gateway.get(&format!("/grace/requests/{id}"));
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

#[test]
fn a_write_passes_through_when_the_queue_is_empty_and_the_upstream_answers() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    let reply = gateway.post("/orders", &order(1), &[("idempotency-key", "first")]);
    assert_eq!(reply.status, 201, "the upstream's answer: {reply:?}");
    assert_eq!(
        reply.json(),
        json!({ "order_id": grace::demo::order_id_for("first"), "status": "created" })
    );
    assert_eq!(reply.header("grace-circuit-state"), Some("closed"));
    assert_eq!(upstream.stats()["orders_created"], 1);
    assert_eq!(gateway.status()["queue"]["depth"], 0);
}

#[test]
fn one_callers_idempotency_key_never_answers_another_callers_order() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    let order_id = |reply: &Reply| reply.json()["order_id"].as_str().map(str::to_owned);
    // Passed through: the demo upstream scopes the key to the caller too.
    let alice = gateway.post(
        "/orders",
        &order(1),
        &[("idempotency-key", "k"), ("authorization", "Bearer alice")],
    );
    let bob = gateway.post(
        "/orders",
        &order(2),
        &[("idempotency-key", "k"), ("authorization", "Bearer bob")],
    );
    assert_eq!((alice.status, bob.status), (201, 201), "{alice:?} {bob:?}");
    assert_eq!(bob.header("idempotent-replayed"), None, "{bob:?}");
    assert_ne!(order_id(&alice), order_id(&bob));
    // Queued, then delivered: still two orders.
    upstream.set_faults(json!({ "mode": "refuse" }));
    let queued: Vec<String> = ["Bearer alice", "Bearer bob"]
        .iter()
        .enumerate()
        .map(|(at, caller)| {
            let reply = gateway.post(
                "/orders",
                &order(3),
                &[("idempotency-key", "q"), ("authorization", caller)],
            );
            assert_accepted(&reply, at as u64 + 1)
        })
        .collect();
    upstream.heal();
    gateway.process_queue();
    let delivered: Vec<Value> = queued
        .iter()
        .map(|id| request_status(&gateway, id))
        .collect();
    assert!(
        delivered
            .iter()
            .all(|status| status["status"] == "delivered"),
        "{delivered:?}"
    );
    assert_ne!(
        delivered[0]["response"]["body"], delivered[1]["response"]["body"],
        "{delivered:?}"
    );
    assert_eq!(upstream.stats()["orders_created"], 4);
}

#[test]
fn a_write_the_upstream_cannot_take_is_accepted_into_the_queue() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    upstream.set_faults(json!({ "mode": "refuse" }));
    let reply = gateway.post("/orders", &order(1), &[]);
    assert_eq!(
        reply.header("grace-circuit-state"),
        Some("closed"),
        "{reply:?}"
    );
    let first = assert_accepted(&reply, 1);
    let second = assert_accepted(&gateway.post("/orders", &order(2), &[]), 2);
    assert_ne!(first, second);
    let status = request_status(&gateway, &first);
    assert_eq!(status["id"], first.as_str());
    assert_eq!(status["status"], "queued");
    assert_eq!(status["position"], 1);
    assert_eq!(request_status(&gateway, &second)["position"], 2);
    assert_eq!(gateway.status()["queue"]["depth"], 2);
}

#[test]
fn a_write_the_upstream_fails_with_a_failure_status_is_queued() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    upstream.set_faults(json!({ "mode": "error", "error_status": 503 }));
    assert_accepted(&gateway.post("/orders", &order(1), &[]), 1);
}

#[test]
fn a_write_arriving_behind_queued_ones_is_queued_even_when_the_upstream_is_back() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    upstream.set_faults(json!({ "mode": "refuse" }));
    let first = assert_accepted(&gateway.post("/orders", &order(1), &[]), 1);
    upstream.heal();
    upstream.reset_stats();
    let second = assert_accepted(&gateway.post("/orders", &order(2), &[]), 2);
    assert_eq!(
        upstream.stats()["requests"],
        0,
        "it waits its turn instead of overtaking"
    );
    assert_eq!(
        gateway.process_queue(),
        json!({ "processed": 2, "remaining": 0 })
    );
    for id in [first, second] {
        assert_eq!(request_status(&gateway, &id)["status"], "delivered");
    }
}

#[test]
fn queued_writes_are_delivered_in_the_order_they_were_accepted() {
    let upstream = ScriptedUpstream::always(canned(503, &[], "down"));
    let gateway = things_gateway(&upstream);
    let ids: Vec<String> = (1..=5)
        .map(|n| {
            let reply = gateway.post(&format!("/things/{n}"), &order(n), &[]);
            assert_accepted(&reply, u64::from(n))
        })
        .collect();
    upstream.set_script(|_| canned(201, &[], "made"));
    let attempts_before = upstream.requests().len();
    assert_eq!(gateway.process_queue()["processed"], 5);
    let delivered: Vec<String> = upstream.requests()[attempts_before..]
        .iter()
        .map(|request| request.target.clone())
        .collect();
    assert_eq!(
        delivered,
        [
            "/things/1",
            "/things/2",
            "/things/3",
            "/things/4",
            "/things/5"
        ]
    );
    for id in ids {
        assert_eq!(request_status(&gateway, &id)["status"], "delivered");
    }
}

#[test]
fn a_delivery_repeats_the_request_with_its_idempotency_key() {
    let upstream = ScriptedUpstream::always(canned(503, &[], "down"));
    let gateway = things_gateway(&upstream);
    let reply = gateway.post(
        "/things/7?dry_run=no",
        r#"{"size":"large"}"#,
        &[
            ("idempotency-key", "key-7"),
            ("x-tenant", "acme"),
            ("authorization", "Bearer alice"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "private"),
        ],
    );
    assert_accepted(&reply, 1);
    upstream.set_script(|_| canned(201, &[("content-type", "application/json")], "{}"));
    gateway.process_queue();
    let requests = upstream.requests();
    let (direct, delivery) = (&requests[0], requests.last().unwrap());
    assert_eq!(requests.len(), 2, "{requests:?}");
    for sent in [direct, delivery] {
        assert_eq!(sent.method, "POST");
        assert_eq!(sent.target, "/things/7?dry_run=no");
        assert_eq!(sent.body_text(), r#"{"size":"large"}"#);
        assert_eq!(sent.header("idempotency-key"), Some("key-7"));
        assert_eq!(sent.header("x-tenant"), Some("acme"));
        assert_eq!(sent.header("authorization"), Some("Bearer alice"));
        assert_eq!(sent.header("content-type"), Some("application/json"));
        assert_eq!(sent.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(sent.header("x-hop"), None, "hop-by-hop: {sent:?}");
    }
}

#[test]
fn a_request_without_a_key_is_given_one_that_every_delivery_carries() {
    let upstream = ScriptedUpstream::always(canned(503, &[], "down"));
    let gateway = things_gateway(&upstream);
    assert_accepted(&gateway.post("/things/1", "{}", &[]), 1);
    assert_accepted(&gateway.post("/things/2", "{}", &[]), 2);
    // A delivery that fails is tried again later under the same key.
    gateway.process_queue();
    upstream.set_script(|_| canned(201, &[], "made"));
    gateway.process_queue();
    let keys = |target: &str| -> Vec<String> {
        upstream
            .requests()
            .iter()
            .filter(|request| request.target == target)
            .map(|request| {
                request
                    .header("idempotency-key")
                    .unwrap_or_else(|| panic!("every call carries a key: {request:?}"))
                    .to_string()
            })
            .collect()
    };
    let (first, second) = (keys("/things/1"), keys("/things/2"));
    assert_eq!(first.len(), 3, "direct attempt, failed delivery, delivery");
    assert!(first.iter().all(|key| *key == first[0]), "{first:?}");
    assert!(second.iter().all(|key| *key == second[0]), "{second:?}");
    assert_ne!(first[0], second[0], "each request its own key");
}

#[test]
fn queued_ids_are_unguessable() {
    let upstream = ScriptedUpstream::always(canned(503, &[], "down"));
    let gateway = things_gateway(&upstream);
    let ids: Vec<String> = (1..=10)
        .map(|n| assert_accepted(&gateway.post("/things/1", "{}", &[]), n))
        .collect();
    for id in &ids {
        assert!(
            id.len() >= 32 && id.bytes().all(|byte| byte.is_ascii_hexdigit()),
            "at least 128 bits: {id}"
        );
    }
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    // A neighbour of a real id names nothing.
    let mut neighbour = ids[0].clone().into_bytes();
    let last = neighbour.last_mut().unwrap();
    *last = if *last == b'0' { b'1' } else { b'0' };
    let neighbour = String::from_utf8(neighbour).unwrap();
    let reply = gateway.get(&format!("/grace/requests/{neighbour}"));
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
}

#[test]
fn the_status_of_a_delivered_request_holds_the_upstreams_answer_and_attempts() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    upstream.set_faults(json!({ "mode": "error" }));
    let id = assert_accepted(
        &gateway.post("/orders", &order(1), &[("idempotency-key", "k-delivered")]),
        1,
    );
    gateway.process_queue();
    let failed_once = request_status(&gateway, &id);
    assert_eq!(failed_once["status"], "queued");
    assert_eq!(failed_once["attempts"], 1, "{failed_once}");
    upstream.heal();
    gateway.process_queue();
    let status = request_status(&gateway, &id);
    assert_eq!(status["status"], "delivered", "{status}");
    assert_eq!(status["attempts"], 2, "{status}");
    assert_eq!(status["response"]["status"], 201, "{status}");
    let body: Value = serde_json::from_str(status["response"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["order_id"], grace::demo::order_id_for("k-delivered"));
    assert_eq!(status.get("position"), None, "no longer in line: {status}");
}

#[test]
fn a_delivered_answer_is_reported_bounded_in_size() {
    let upstream = ScriptedUpstream::always(canned(503, &[], "down"));
    let gateway = things_gateway(&upstream);
    let id = assert_accepted(&gateway.post("/things/1", "{}", &[]), 1);
    let huge = "x".repeat(1024 * 1024);
    upstream.set_script(move |_| canned(201, &[("content-type", "text/plain")], &huge));
    gateway.process_queue();
    let status = request_status(&gateway, &id);
    assert_eq!(status["status"], "delivered");
    let body = status["response"]["body"].as_str().unwrap();
    assert!(
        !body.is_empty() && body.len() <= 64 * 1024,
        "kept {} bytes",
        body.len()
    );
}

#[test]
fn a_write_that_keeps_failing_becomes_a_dead_letter() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_builder(&upstream)
        .args([
            "--max-attempts",
            "2",
            "--retry-base-ms",
            "10",
            "--retry-max-ms",
            "20",
        ])
        .spawn();
    upstream.set_faults(json!({ "mode": "error" }));
    let id = assert_accepted(&gateway.post("/orders", &order(1), &[]), 1);
    let status = gateway.wait_until("the write dead-lettered", || {
        let status = request_status(&gateway, &id);
        (status["status"] == "dead_letter").then_some(status)
    });
    assert_eq!(status["attempts"], 2, "{status}");
    let queue = gateway.admin_get("/queue").json();
    assert_eq!(queue["dead_letters"], 1, "{queue}");
    assert_eq!(queue["depth"], 0, "{queue}");
}

// ---------------------------------------------------------------------------
// Idempotency

#[test]
fn a_repeat_with_the_same_key_and_body_gets_the_first_requests_202() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    upstream.set_faults(json!({ "mode": "refuse" }));
    let key = [("idempotency-key", "repeat-me")];
    let first = assert_accepted(&gateway.post("/orders", &order(1), &key), 1);
    let again = assert_accepted(&gateway.post("/orders", &order(1), &key), 1);
    assert_eq!(first, again);
    assert_eq!(gateway.status()["queue"]["depth"], 1, "queued once");
}

#[test]
fn a_repeat_after_delivery_gets_the_delivered_answer() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    let key = [("idempotency-key", "done-once")];
    let first = gateway.post("/orders", &order(1), &key);
    assert_eq!(first.status, 201, "{first:?}");
    let again = gateway.post("/orders", &order(1), &key);
    assert_eq!(again.status, 201, "{again:?}");
    assert_eq!(again.json(), first.json());
    assert_eq!(again.header("content-type"), Some("application/json"));
    assert_eq!(again.header("grace-circuit-state"), Some("closed"));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.header("idempotent-replayed"), None);
    let stats = upstream.stats();
    assert_eq!(
        (
            stats["orders_created"].as_u64(),
            stats["by_route"]["POST /orders"].as_u64()
        ),
        (Some(1), Some(1)),
        "the repeat was answered by grace: {stats}"
    );

    // The same for a write delivered from the queue.
    upstream.set_faults(json!({ "mode": "refuse" }));
    let queued_key = [("idempotency-key", "queued-once")];
    assert_accepted(&gateway.post("/orders", &order(2), &queued_key), 1);
    upstream.heal();
    gateway.process_queue();
    let repeat = gateway.post("/orders", &order(2), &queued_key);
    assert_eq!(repeat.status, 201, "{repeat:?}");
    assert_eq!(
        repeat.json()["order_id"],
        grace::demo::order_id_for("queued-once")
    );
}

#[test]
fn the_same_key_with_a_different_body_gets_422() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    let key = [("idempotency-key", "one-body")];
    assert_eq!(gateway.post("/orders", &order(1), &key).status, 201);
    let other = gateway.post("/orders", &order(2), &key);
    assert_eq!(other.status, 422, "{other:?}");
    assert_eq!(
        other.header("content-type"),
        Some("application/problem+json")
    );
    // Queued, too.
    upstream.set_faults(json!({ "mode": "refuse" }));
    let queued = [("idempotency-key", "queued-body")];
    assert_accepted(&gateway.post("/orders", &order(1), &queued), 1);
    assert_eq!(gateway.post("/orders", &order(3), &queued).status, 422);
    assert_eq!(upstream.stats()["orders_created"], 1);
}

#[test]
fn a_repeat_while_the_first_is_being_sent_gets_409() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::with_config(&demo_config(&upstream.url(""), "timeout_ms = 10000"));
    upstream.set_faults(json!({ "mode": "hang" }));
    let first = {
        let url = gateway.url("/orders");
        thread::spawn(move || {
            support::gateway::send(
                &http_agent(),
                "POST",
                &url,
                &[
                    ("idempotency-key", "slow"),
                    ("content-type", "application/json"),
                ],
                Some(&order(1)),
            )
        })
    };
    upstream.wait_for_stats("the first write held", |stats| stats["hung"] == 1);
    let repeat = gateway.post("/orders", &order(1), &[("idempotency-key", "slow")]);
    assert_eq!(repeat.status, 409, "{repeat:?}");
    assert_eq!(
        repeat.header("content-type"),
        Some("application/problem+json")
    );
    upstream.heal();
    let first = first.join().unwrap();
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(upstream.stats()["orders_created"], 1);
}

#[test]
fn a_repeat_while_the_queued_first_is_being_delivered_gets_409() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::builder()
        .config(&demo_config(
            &upstream.url(""),
            &format!("timeout_ms = 10000\n{NO_BREAKER}"),
        ))
        .args([
            "--retry-base-ms",
            NO_RETRY_MS,
            "--retry-max-ms",
            NO_RETRY_MS,
        ])
        .spawn();
    upstream.set_faults(json!({ "mode": "refuse" }));
    let key = [("idempotency-key", "delivering")];
    assert_accepted(&gateway.post("/orders", &order(1), &key), 1);
    upstream.set_faults(json!({ "mode": "hang" }));
    let run = {
        let url = gateway.admin_url("/queue/process");
        thread::spawn(move || support::gateway::send(&http_agent(), "POST", &url, &[], Some("")))
    };
    upstream.wait_for_stats("the delivery held", |stats| stats["hung"] == 1);
    let repeat = gateway.post("/orders", &order(1), &key);
    assert_eq!(repeat.status, 409, "{repeat:?}");
    upstream.heal();
    assert_eq!(run.join().unwrap().json()["processed"], 1);
    assert_eq!(gateway.post("/orders", &order(1), &key).status, 201);
}

#[test]
fn idempotency_keys_are_scoped_to_the_clients_credentials() {
    let upstream = ScriptedUpstream::always(canned(503, &[], "down"));
    let gateway = things_gateway(&upstream);
    let alice = gateway.post(
        "/things/1",
        r#"{"from":"alice"}"#,
        &[("idempotency-key", "k"), ("authorization", "Bearer alice")],
    );
    let bob = gateway.post(
        "/things/1",
        r#"{"from":"bob"}"#,
        &[("idempotency-key", "k"), ("authorization", "Bearer bob")],
    );
    assert_ne!(
        assert_accepted(&alice, 1),
        assert_accepted(&bob, 2),
        "bob's key names bob's write, not alice's"
    );
}

#[test]
fn without_a_journal_grace_serves_on_and_refuses_the_writes_that_must_wait() {
    let upstream = ScriptedUpstream::always(canned(503, &[], "down"));
    let routes = route("POST", "/things/{id}", "things", "fallback = \"queue\"");
    let config = one_service_config("things", &upstream.url(), NO_BREAKER, &routes);
    // A data dir that cannot be created: its parent is a file.
    let scratch = tempfile::tempdir().expect("tempdir");
    let a_file = scratch.path().join("a-file");
    std::fs::write(&a_file, "not a directory").expect("write a file");
    for (flags, status) in [(&[][..], 503), (&["--volatile-queue"][..], 202)] {
        let gateway = Gateway::builder()
            .config(&config)
            .data_dir(&a_file.join("data"))
            .args(flags.iter().copied())
            .spawn();
        for thing in 1..=2 {
            let reply = gateway.post(&format!("/things/{thing}"), "{}", &[]);
            assert_eq!(
                reply.status,
                status,
                "{flags:?}: {reply:?}\n{}",
                gateway.stderr()
            );
            if status == 202 {
                assert_eq!(reply.json()["durable"], false, "{reply:?}");
            }
        }
        assert_eq!(gateway.status()["queue"]["durable"], false);
    }
}
