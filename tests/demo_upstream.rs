//! `grace demo-upstream` through the real binary over real HTTP on
//! loopback: every endpoint and status, ids as given, idempotent orders,
//! each fault mode (refused connections that recover, held requests,
//! error statuses, latency, a seeded failure rate, path scope), the
//! statistics, signals and start-up errors.

mod support;

use serde_json::{Value, json};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use support::upstream::{DemoUpstream, IDEMPOTENT_REPLAYED, Reply, get, http_agent};

/// How long a test watches for something that must not happen (a held
/// request answered, a closed connection).
const QUIET_SPELL: Duration = Duration::from_millis(300);

fn assert_json_reply(reply: &Reply, status: u16, body: Value) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{reply:?}"
    );
    assert_eq!(reply.json(), body, "{reply:?}");
}

fn assert_error_reply(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{reply:?}"
    );
    assert!(reply.json()["error"].is_string(), "{reply:?}");
}

#[test]
fn start_line_is_one_json_object_with_both_bound_addresses_and_nothing_follows_it() {
    let upstream = DemoUpstream::spawn();
    let line: Value = serde_json::from_str(upstream.start_line()).unwrap();
    assert_eq!(
        line,
        json!({"listen": upstream.listen_addr().to_string(),
               "control": upstream.control_addr().to_string()})
    );
    assert_ne!(upstream.listen_addr().port(), 0);
    assert_ne!(upstream.control_addr().port(), 0);
    assert_ne!(upstream.listen_addr(), upstream.control_addr());
    assert_eq!(upstream.get("/users/1").status, 200);
    upstream.set_faults(json!({"mode": "error"}));
    upstream.signal("TERM");
    let exited = upstream.wait();
    assert!(exited.status.success(), "{exited:?}");
    assert_eq!(
        exited.stdout_lines,
        Vec::<String>::new(),
        "only the start line"
    );
    assert!(
        exited.stderr.contains("faults set"),
        "logs on stderr: {exited:?}"
    );
}

#[test]
fn users_answer_integer_ids_as_integers_and_anything_else_as_strings() {
    let upstream = DemoUpstream::spawn();
    for (path, id) in [
        ("/users/123", json!(123)),
        ("/users/-7", json!(-7)),
        ("/users/alice", json!("alice")),
        ("/users/007", json!("007")),
        ("/users/99999999999999999999", json!("99999999999999999999")),
        ("/users/a%20b%2Fc", json!("a b/c")),
        ("/users/%22q%22", json!("\"q\"")),
    ] {
        let reply = upstream.get(path);
        assert_json_reply(&reply, 200, json!({"id": id, "name": "John Doe"}));
    }
    assert_eq!(
        upstream.get("/users/123").body,
        r#"{"id":123,"name":"John Doe"}"#,
        "the record as the demo data has it"
    );
}

#[test]
fn products_reviews_recommendations_and_search_answer_the_demo_data() {
    let upstream = DemoUpstream::spawn();
    assert_json_reply(
        &upstream.get("/products/5"),
        200,
        json!({"id": 5, "name": "Product"}),
    );
    assert_json_reply(
        &upstream.get("/products/p-9/reviews"),
        200,
        json!([{"product_id": "p-9", "rating": 5, "text": "Great product"},
               {"product_id": "p-9", "rating": 4, "text": "Does the job"}]),
    );
    assert_json_reply(
        &upstream.get("/recommendations/42"),
        200,
        json!([{"id": 1, "name": "Product"}, {"id": 2, "name": "Product"},
               {"id": 3, "name": "Product"}]),
    );
    let found = upstream.get("/search?q=PROD");
    assert_eq!(found.status, 200);
    assert_eq!(found.json().as_array().unwrap().len(), 10, "{found:?}");
    assert_json_reply(&upstream.get("/search?q=nothing+like+it"), 200, json!([]));
    assert_json_reply(&upstream.get("/search?q=duc%74"), 200, found.json());
    assert_error_reply(&upstream.get("/search"), 400);
    assert_error_reply(&upstream.get("/search?query=prod"), 400);
}

#[test]
fn fixtures_replace_the_data_and_unknown_ids_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = dir.path().join("fixtures.json");
    std::fs::write(
        &fixtures,
        r#"{"users": [{"id": 1, "name": "Ada"}, {"id": "bob", "name": "Bob"}],
            "products": [{"id": 10, "name": "Pen"}, {"id": 11, "name": "Paper"}]}"#,
    )
    .unwrap();
    let upstream = DemoUpstream::builder()
        .args(["--fixtures", fixtures.to_str().unwrap()])
        .spawn();
    assert_json_reply(
        &upstream.get("/users/1"),
        200,
        json!({"id": 1, "name": "Ada"}),
    );
    assert_json_reply(
        &upstream.get("/users/bob"),
        200,
        json!({"id": "bob", "name": "Bob"}),
    );
    assert_json_reply(
        &upstream.get("/users/2"),
        404,
        json!({"error": "not found"}),
    );
    assert_json_reply(
        &upstream.get("/users/01"),
        404,
        json!({"error": "not found"}),
    );
    assert_json_reply(
        &upstream.get("/products/12"),
        404,
        json!({"error": "not found"}),
    );
    assert_json_reply(
        &upstream.get("/products/12/reviews"),
        404,
        json!({"error": "not found"}),
    );
    assert_json_reply(
        &upstream.get("/search?q=pap"),
        200,
        json!([{"id": 11, "name": "Paper"}]),
    );
}

#[test]
fn bad_fixtures_exit_2_naming_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, r#"{"users": [{"name": "no id"}]}"#).unwrap();
    let missing = dir.path().join("missing.json");
    for (path, reason) in [(&broken, "users[0]"), (&missing, "cannot read")] {
        let exited = DemoUpstream::builder()
            .args(["--fixtures", path.to_str().unwrap()])
            .run_to_exit();
        assert_eq!(exited.status.code(), Some(2), "{exited:?}");
        assert_eq!(exited.stdout_lines, Vec::<String>::new(), "{exited:?}");
        assert!(exited.stderr.contains(path.to_str().unwrap()), "{exited:?}");
        assert!(exited.stderr.contains(reason), "{exited:?}");
    }
}

#[test]
fn an_address_already_in_use_exits_1_with_the_reason() {
    let upstream = DemoUpstream::spawn();
    let taken = upstream.listen_addr().to_string();
    let exited = DemoUpstream::builder()
        .addresses_from_env()
        .args(["--listen", &taken, "--control-listen", "127.0.0.1:0"])
        .run_to_exit();
    assert_eq!(exited.status.code(), Some(1), "{exited:?}");
    assert!(exited.stderr.contains(&taken), "{exited:?}");
}

#[test]
fn addresses_can_come_from_the_environment() {
    let upstream = DemoUpstream::builder()
        .addresses_from_env()
        .env("GRACE_DEMO_LISTEN", "127.0.0.1:0")
        .env("GRACE_DEMO_CONTROL_LISTEN", "127.0.0.1:0")
        .spawn();
    assert_eq!(upstream.get("/users/1").status, 200);
    assert_eq!(upstream.faults()["mode"], "healthy");
}

#[test]
fn orders_are_created_once_per_idempotency_key_and_repeats_are_marked() {
    let upstream = DemoUpstream::spawn();
    let order = r#"{"user_id": 1, "product_id": 2, "quantity": 1}"#;
    let first = upstream.post_order(order, Some("key-1"));
    let expected = json!({"order_id": grace::demo::order_id_for("key-1"), "status": "created"});
    assert_json_reply(&first, 201, expected.clone());
    assert_eq!(first.header(IDEMPOTENT_REPLAYED), None);
    let repeat = upstream.post_order(order, Some("key-1"));
    assert_json_reply(&repeat, 201, expected);
    assert_eq!(repeat.header(IDEMPOTENT_REPLAYED), Some("true"));

    let keyless: Vec<Value> = (0..2)
        .map(|_| {
            let reply = upstream.post_order(order, None);
            assert_eq!(reply.status, 201, "{reply:?}");
            assert_eq!(reply.header(IDEMPOTENT_REPLAYED), None);
            reply.json()["order_id"].clone()
        })
        .collect();
    assert_ne!(keyless[0], keyless[1], "each keyless order is new");
    let stats = upstream.stats();
    assert_eq!(stats["orders_created"], 3, "{stats}");
    assert_eq!(stats["repeated_order_deliveries"], 1, "{stats}");
}

#[test]
fn an_order_that_is_not_a_json_object_is_refused_and_creates_nothing() {
    let upstream = DemoUpstream::spawn();
    for body in ["not json", "[1, 2]", "", "{\"unterminated\": "] {
        assert_error_reply(&upstream.post_order(body, Some("key")), 400);
    }
    let stats = upstream.stats();
    assert_eq!(stats["orders_created"], 0, "{stats}");
    let created = upstream.post_order("{}", Some("key"));
    assert_eq!(
        created.header(IDEMPOTENT_REPLAYED),
        None,
        "the key is still new"
    );
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405_with_json_errors() {
    let upstream = DemoUpstream::spawn();
    for path in [
        "/",
        "/users",
        "/users/",
        "/users/1/extra",
        "/products/1/ratings",
        "/nope",
    ] {
        assert_json_reply(&upstream.get(path), 404, json!({"error": "not found"}));
    }
    let get_orders = upstream.get("/orders");
    assert_error_reply(&get_orders, 405);
    assert_eq!(get_orders.header("allow"), Some("POST"));
    let agent = upstream.agent();
    let post_user = agent.post(upstream.url("/users/1")).send("{}").unwrap();
    assert_eq!(post_user.status(), 405);
    assert_eq!(post_user.headers()["allow"], "GET");
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let upstream = DemoUpstream::spawn();
    let mut connection = TcpStream::connect(upstream.listen_addr()).unwrap();
    connection
        .set_read_timeout(Some(support::upstream::UPSTREAM_TIMEOUT))
        .unwrap();
    for id in 1..=3 {
        let answer = exchange(&mut connection, &format!("/users/{id}"));
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.ends_with(&format!(r#"{{"id":{id},"name":"John Doe"}}"#)),
            "{answer}"
        );
    }
}

/// Writes a GET for `path` on `connection` and reads one whole answer.
fn exchange(connection: &mut TcpStream, path: &str) -> String {
    write!(connection, "GET {path} HTTP/1.1\r\nHost: upstream\r\n\r\n").unwrap();
    read_answer(connection).expect("an answer")
}

/// Reads one answer (head and `Content-Length` body); `None` at EOF.
fn read_answer(connection: &mut TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    while !received.ends_with(b"\r\n\r\n") {
        match connection.read(&mut byte) {
            Ok(0) => return None,
            Ok(_) => received.push(byte[0]),
            Err(err) => panic!("reading an answer: {err}"),
        }
    }
    let head = String::from_utf8(received.clone()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .expect("content-length")
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    connection.read_exact(&mut body).unwrap();
    received.extend_from_slice(&body);
    Some(String::from_utf8(received).unwrap())
}

#[test]
fn refuse_closes_the_listener_and_open_connections_then_recovers_on_the_same_address() {
    let upstream = DemoUpstream::spawn();
    let mut open = TcpStream::connect(upstream.listen_addr()).unwrap();
    open.set_read_timeout(Some(support::upstream::UPSTREAM_TIMEOUT))
        .unwrap();
    assert!(exchange(&mut open, "/users/1").starts_with("HTTP/1.1 200"));

    let settings = upstream.set_faults(json!({"mode": "refuse"}));
    assert_eq!(settings["mode"], "refuse");
    let refused = TcpStream::connect(upstream.listen_addr()).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    let mut rest = Vec::new();
    match open.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "nothing more was sent: {rest:?}"),
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}"),
    }
    assert_eq!(
        upstream.faults()["mode"],
        "refuse",
        "the control API stays up"
    );

    upstream.heal();
    let reply = get(&http_agent(), &upstream.url("/users/2"));
    assert_json_reply(&reply, 200, json!({"id": 2, "name": "John Doe"}));
}

#[test]
fn refuse_can_be_set_again_and_again() {
    let upstream = DemoUpstream::spawn();
    for _ in 0..3 {
        upstream.set_faults(json!({"mode": "refuse"}));
        upstream.set_faults(json!({"mode": "refuse", "latency_ms": 1}));
        assert!(TcpStream::connect(upstream.listen_addr()).is_err());
        upstream.set_faults(json!({"mode": "error"}));
        assert_eq!(get(&http_agent(), &upstream.url("/users/1")).status, 503);
    }
}

#[test]
fn error_mode_answers_the_error_status_at_once() {
    let upstream = DemoUpstream::spawn();
    upstream.set_faults(json!({"mode": "error"}));
    assert_json_reply(
        &upstream.get("/users/1"),
        503,
        json!({"error": "injected fault"}),
    );
    upstream.set_faults(json!({"mode": "error", "error_status": 500}));
    for path in ["/products/1", "/search?q=x", "/nope"] {
        assert_json_reply(&upstream.get(path), 500, json!({"error": "injected fault"}));
    }
    let order = upstream.post_order("{}", Some("during-outage"));
    assert_eq!(order.status, 500);
    upstream.heal();
    let order = upstream.post_order("{}", Some("during-outage"));
    assert_eq!(
        order.header(IDEMPOTENT_REPLAYED),
        None,
        "the failed one created nothing"
    );
}

#[test]
fn only_scopes_faults_to_a_path_prefix() {
    let upstream = DemoUpstream::spawn();
    upstream.set_faults(json!({"mode": "error", "only": "/users"}));
    assert_eq!(upstream.get("/users/1").status, 503);
    assert_eq!(upstream.get("/products/1").status, 200);
    assert_eq!(upstream.post_order("{}", None).status, 201);
    upstream.set_faults(json!({"mode": "hang", "only": "/search"}));
    assert_eq!(upstream.get("/users/1").status, 200, "only /search hangs");
}

#[test]
fn hang_holds_the_request_on_an_open_connection_until_the_settings_change() {
    let upstream = DemoUpstream::spawn();
    upstream.set_faults(json!({"mode": "hang", "only": "/users"}));
    let mut held = TcpStream::connect(upstream.listen_addr()).unwrap();
    write!(held, "GET /users/7 HTTP/1.1\r\nHost: upstream\r\n\r\n").unwrap();
    upstream.wait_for_stats("one hung request", |stats| stats["hung"] == 1);

    held.set_read_timeout(Some(QUIET_SPELL)).unwrap();
    let mut byte = [0u8; 1];
    let silence = held.read(&mut byte).unwrap_err();
    assert!(
        matches!(silence.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "held open and silent, not closed: {silence}"
    );
    assert_eq!(
        upstream.get("/products/1").status,
        200,
        "other paths answer"
    );
    let stats = upstream.stats();
    assert_eq!(
        (stats["hung"].clone(), stats["in_flight"].clone()),
        (json!(1), json!(1))
    );

    upstream.set_faults(json!({"mode": "hang", "only": "/users", "latency_ms": 1}));
    assert_eq!(
        upstream.stats()["hung"],
        1,
        "still hang for /users: still held"
    );

    upstream.heal();
    held.set_read_timeout(Some(support::upstream::UPSTREAM_TIMEOUT))
        .unwrap();
    let answer = read_answer(&mut held).expect("answered once healthy");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with(r#"{"id":7,"name":"John Doe"}"#),
        "{answer}"
    );
    let stats = upstream.stats();
    assert_eq!(
        (stats["hung"].clone(), stats["in_flight"].clone()),
        (json!(0), json!(0))
    );
}

#[test]
fn a_held_request_is_answered_under_the_settings_that_release_it() {
    let upstream = DemoUpstream::spawn();
    upstream.set_faults(json!({"mode": "hang"}));
    let (answered, answers) = mpsc::channel();
    let url = upstream.url("/users/3");
    thread::spawn(move || {
        let _ = answered.send(get(&http_agent(), &url));
    });
    upstream.wait_for_stats("one hung request", |stats| stats["hung"] == 1);
    assert!(
        answers.recv_timeout(QUIET_SPELL).is_err(),
        "held, not answered"
    );
    upstream.set_faults(json!({"mode": "error", "error_status": 502}));
    let reply = answers
        .recv_timeout(support::upstream::UPSTREAM_TIMEOUT)
        .unwrap();
    assert_eq!(reply.status, 502, "{reply:?}");
}

#[test]
fn a_held_request_whose_client_goes_away_is_no_longer_counted_as_hung() {
    let upstream = DemoUpstream::spawn();
    upstream.set_faults(json!({"mode": "hang"}));
    let mut held = TcpStream::connect(upstream.listen_addr()).unwrap();
    write!(held, "GET /users/1 HTTP/1.1\r\nHost: upstream\r\n\r\n").unwrap();
    upstream.wait_for_stats("one hung request", |stats| stats["hung"] == 1);
    drop(held);
    upstream.wait_for_stats("no hung request", |stats| {
        stats["hung"] == 0 && stats["in_flight"] == 0
    });
}

#[test]
fn latency_delays_answers_in_scope_only() {
    const LATENCY: Duration = Duration::from_millis(250);
    let upstream = DemoUpstream::spawn();
    upstream.get("/users/1"); // a pooled connection, so timing is the answer's
    upstream.set_faults(json!({"latency_ms": LATENCY.as_millis() as u64, "only": "/users"}));
    let started = Instant::now();
    assert_eq!(upstream.get("/users/1").status, 200);
    let slow = started.elapsed();
    assert!(slow >= LATENCY, "{slow:?}");
    assert!(slow < LATENCY * 8, "{slow:?}");
    let started = Instant::now();
    assert_eq!(upstream.get("/products/1").status, 200);
    assert!(
        started.elapsed() < LATENCY,
        "out of scope: {:?}",
        started.elapsed()
    );

    upstream.set_faults(json!({"mode": "error", "latency_ms": LATENCY.as_millis() as u64}));
    let started = Instant::now();
    assert_eq!(upstream.get("/products/1").status, 503);
    assert!(started.elapsed() >= LATENCY, "failures are delayed too");
}

/// The statuses of `count` GETs of `/users/1`.
fn statuses(upstream: &DemoUpstream, count: usize) -> Vec<u16> {
    (0..count)
        .map(|_| upstream.get("/users/1").status)
        .collect()
}

#[test]
fn the_failure_rate_fails_that_share_of_requests_the_same_way_for_a_seed() {
    const REQUESTS: usize = 400;
    let upstream = DemoUpstream::spawn();
    let settings = json!({"failure_rate": 0.25, "seed": 7, "error_status": 500});
    assert_eq!(upstream.set_faults(settings.clone())["seed"], 7);
    let first = statuses(&upstream, REQUESTS);
    assert!(
        first.iter().all(|&status| status == 200 || status == 500),
        "{first:?}"
    );
    let failed = first.iter().filter(|&&status| status == 500).count();
    let share = failed as f64 / REQUESTS as f64;
    assert!((share - 0.25).abs() < 0.07, "share {share}");

    upstream.set_faults(settings);
    assert_eq!(
        statuses(&upstream, REQUESTS),
        first,
        "the same seed fails the same requests"
    );
    upstream.set_faults(json!({"failure_rate": 0.25, "seed": 8, "error_status": 500}));
    assert_ne!(
        statuses(&upstream, REQUESTS),
        first,
        "another seed, other failures"
    );
}

#[test]
fn fault_settings_round_trip_and_bad_ones_are_refused_leaving_the_old_in_force() {
    let upstream = DemoUpstream::spawn();
    let defaults = upstream.faults();
    assert_eq!(defaults["mode"], "healthy");
    assert_eq!(defaults["error_status"], 503);
    assert_eq!(defaults["latency_ms"], 0);
    assert_eq!(defaults["failure_rate"], 0.0);
    assert_eq!(defaults["only"], Value::Null);
    let set = upstream.set_faults(json!({"mode": "error", "only": "/users", "seed": 3}));
    assert_eq!(upstream.faults(), set);
    assert_eq!(
        set["error_status"], 503,
        "absent fields take their defaults"
    );
    for bad in [
        r#"{"mode": "error", "colour": "red"}"#,
        r#"{"mode": "sideways"}"#,
        r#"{"failure_rate": 2}"#,
        r#"{"error_status": 200}"#,
        r#"{"only": "users"}"#,
        "not json",
    ] {
        let reply = upstream.put_faults(bad);
        assert_error_reply(&reply, 400);
    }
    assert_eq!(upstream.faults(), set);
    let agent = upstream.agent();
    let wrong = agent
        .delete(upstream.control_url("/faults"))
        .call()
        .unwrap();
    assert_eq!(wrong.status(), 405);
    let unknown = get(agent, &upstream.control_url("/nope"));
    assert_error_reply(&unknown, 404);
}

#[test]
fn stats_count_every_request_by_route_whatever_answered_it_and_reset_zeroes_them() {
    let upstream = DemoUpstream::spawn();
    upstream.get("/users/1");
    upstream.get("/users/2");
    upstream.get("/products/1");
    upstream.get("/products/1/reviews");
    upstream.get("/recommendations/1");
    upstream.get("/search?q=a");
    upstream.get("/nope");
    upstream.post_order("{}", Some("k"));
    upstream.post_order("{}", Some("k"));
    upstream.set_faults(json!({"mode": "error"}));
    upstream.get("/users/3");
    let stats = upstream.stats();
    assert_eq!(
        stats,
        json!({"requests": 10, "in_flight": 0, "hung": 0,
               "orders_created": 1, "repeated_order_deliveries": 1,
               "by_route": {"GET /users/{id}": 3, "GET /products/{id}": 1,
                            "GET /products/{id}/reviews": 1,
                            "GET /recommendations/{user_id}": 1, "GET /search": 1,
                            "POST /orders": 2, "other": 1}})
    );
    upstream.reset_stats();
    let stats = upstream.stats();
    assert_eq!(stats["requests"], 0, "{stats}");
    assert_eq!(stats["by_route"]["GET /users/{id}"], 0, "{stats}");
    assert_eq!(stats["orders_created"], 0, "{stats}");
    upstream.heal();
    let repeat = upstream.post_order("{}", Some("k"));
    assert_eq!(
        repeat.header(IDEMPOTENT_REPLAYED),
        Some("true"),
        "reset forgets counts, not orders"
    );
}

#[test]
fn sigterm_and_sigint_exit_0_promptly_even_with_a_request_held() {
    for signal in ["TERM", "INT"] {
        let upstream = DemoUpstream::spawn();
        upstream.set_faults(json!({"mode": "hang"}));
        let mut held = TcpStream::connect(upstream.listen_addr()).unwrap();
        write!(held, "GET /users/1 HTTP/1.1\r\nHost: upstream\r\n\r\n").unwrap();
        upstream.wait_for_stats("one hung request", |stats| stats["hung"] == 1);
        upstream.signal(signal);
        let exited = upstream.wait();
        assert_eq!(exited.status.code(), Some(0), "SIG{signal}: {exited:?}");
        assert!(exited.stdout_lines.is_empty(), "{exited:?}");
    }
}

#[test]
fn log_level_filters_stderr_and_an_invalid_one_exits_2() {
    let quiet = DemoUpstream::builder()
        .args(["--log-level", "warn"])
        .spawn();
    quiet.set_faults(json!({"mode": "error"}));
    quiet.signal("TERM");
    let exited = quiet.wait();
    assert!(exited.status.success(), "{exited:?}");
    assert!(!exited.stderr.contains("faults set"), "{exited:?}");

    let exited = DemoUpstream::builder()
        .env("GRACE_DEMO_LOG_LEVEL", "a=b=c")
        .run_to_exit();
    assert_eq!(exited.status.code(), Some(2), "{exited:?}");
    assert!(exited.stderr.contains("log level"), "{exited:?}");
}

#[test]
fn help_documents_the_contract() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_grace"))
        .args(["demo-upstream", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "--listen",
        "GRACE_DEMO_LISTEN",
        "--control-listen",
        "GRACE_DEMO_CONTROL_LISTEN",
        "--fixtures",
        "GRACE_DEMO_FIXTURES",
        "--log-level",
        "GRACE_DEMO_LOG_LEVEL",
        "GET  /users/{id}",
        "POST /orders",
        "Idempotent-Replayed",
        "PUT  /faults",
        "failure_rate",
        "POST /stats/reset",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}
