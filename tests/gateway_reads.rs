//! Reads through `grace serve`, black-box: the real binary on loopback in
//! front of `grace demo-upstream` (which fails on demand) or a scripted
//! upstream (which says exactly what a test needs it to say). What a client
//! sees when the service answers (its answer, headers and all, hop-by-hop
//! ones excepted), when it cannot (the last good copy, marked stale, or a
//! `503` problem saying when to retry), and what is kept as a copy, keyed
//! by what, for how long.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::gateway::{
    Gateway, RawConnection, Scripted, ScriptedUpstream, canned, demo_config, one_service_config,
    route,
};
use support::upstream::{DemoUpstream, Reply};

/// `Cache-Status` of a stale copy (RFC 9211).
const STALE_IF_ERROR: &str = "grace; hit; detail=stale-if-error";

/// A gateway on the demo routes in front of `upstream`.
fn demo_gateway(upstream: &DemoUpstream, service_extra: &str) -> Gateway {
    Gateway::with_config(&demo_config(&upstream.url(""), service_extra))
}

/// A gateway with one service `things` at `upstream` and the route `GET
/// /things/{id}` with `fallback`.
fn things_gateway(upstream: &ScriptedUpstream, service_extra: &str, fallback: &str) -> Gateway {
    let routes = route(
        "GET",
        "/things/{id}",
        "things",
        &format!("fallback = \"{fallback}\""),
    );
    Gateway::with_config(&one_service_config(
        "things",
        &upstream.url(),
        service_extra,
        &routes,
    ))
}

fn assert_fresh(reply: &Reply, body: &str) {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, body, "{reply:?}");
    assert_eq!(reply.header("cache-status"), None, "{reply:?}");
    assert_eq!(reply.header("age"), None, "{reply:?}");
}

fn assert_stale(reply: &Reply, body: &str) {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, body, "{reply:?}");
    assert_eq!(
        reply.header("cache-status"),
        Some(STALE_IF_ERROR),
        "{reply:?}"
    );
    let age: u64 = reply
        .header("age")
        .and_then(|age| age.parse().ok())
        .unwrap_or_else(|| panic!("a stale copy carries Age in seconds: {reply:?}"));
    assert!(age < 60, "{reply:?}");
}

fn assert_unavailable(reply: &Reply, service: &str) {
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json"),
        "{reply:?}"
    );
    let problem = reply.json();
    assert_eq!(problem["status"], 503, "{reply:?}");
    assert_eq!(problem["service"], service, "{reply:?}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains(service)),
        "the problem says which service cannot answer: {reply:?}"
    );
    let retry_after: u64 = reply
        .header("retry-after")
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or_else(|| panic!("503 carries Retry-After in seconds: {reply:?}"));
    assert!(retry_after >= 1, "{reply:?}");
}

// ---------------------------------------------------------------------------
// Fresh answers

#[test]
fn a_fresh_answer_passes_status_body_and_end_to_end_headers_through() {
    let upstream = ScriptedUpstream::always(canned(
        201,
        &[
            ("content-type", "text/plain"),
            ("etag", "\"v1\""),
            ("x-custom", "kept"),
        ],
        "hello",
    ));
    let gateway = things_gateway(&upstream, "", "none");
    let reply = gateway.get("/things/1?x=y");
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.body, "hello");
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.header("etag"), Some("\"v1\""));
    assert_eq!(reply.header("x-custom"), Some("kept"));
    assert_eq!(reply.header("grace-circuit-state"), Some("closed"));
    let sent = upstream.wait_for_requests(1);
    assert_eq!(sent[0].method, "GET");
    assert_eq!(sent[0].target, "/things/1?x=y", "path and query as asked");
    let authority = upstream.url().trim_start_matches("http://").to_string();
    assert_eq!(
        sent[0].header("host"),
        Some(authority.as_str()),
        "the upstream's Host"
    );
}

#[test]
fn hop_by_hop_headers_are_not_forwarded_either_way() {
    // The upstream's answer names a private header in Connection, and
    // sends every hop-by-hop header, its body chunked.
    let answer = "HTTP/1.1 200 OK\r\n\
        connection: x-upstream-private\r\n\
        keep-alive: timeout=5\r\n\
        proxy-authenticate: Basic\r\n\
        proxy-authentication-info: nextnonce=\"x\"\r\n\
        upgrade: h2c\r\n\
        trailer: x-checksum\r\n\
        x-upstream-private: 1\r\n\
        x-end-to-end: answer\r\n\
        transfer-encoding: chunked\r\n\r\n\
        5\r\nhello\r\n0\r\n\r\n";
    let upstream = ScriptedUpstream::always(Scripted::Respond(answer.as_bytes().to_vec()));
    let gateway = things_gateway(&upstream, "", "none");
    let mut client = RawConnection::open(gateway.listen_addr());
    client
        .write(
            b"GET /things/1 HTTP/1.1\r\n\
            host: grace\r\n\
            connection: keep-alive, x-client-private\r\n\
            keep-alive: timeout=5\r\n\
            te: trailers\r\n\
            upgrade: websocket\r\n\
            proxy-authorization: Basic Zm9vOmJhcg==\r\n\
            proxy-connection: keep-alive\r\n\
            proxy-trace: on\r\n\
            x-client-private: 1\r\n\
            x-end-to-end: request\r\n\r\n",
        )
        .unwrap();
    let reply = client.read_response().expect("an answer");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.body_text(),
        "hello",
        "the body arrives whole, re-framed"
    );
    assert_eq!(reply.header("x-end-to-end"), Some("answer"), "{reply:?}");
    for name in [
        "keep-alive",
        "proxy-authenticate",
        "proxy-authentication-info",
        "upgrade",
        "trailer",
        "x-upstream-private",
        "transfer-encoding",
    ] {
        assert_eq!(reply.header(name), None, "{name} crossed: {reply:?}");
    }
    assert!(
        !reply
            .header("connection")
            .is_some_and(|value| value.contains("x-upstream-private")),
        "{reply:?}"
    );

    let sent = &upstream.wait_for_requests(1)[0];
    assert_eq!(sent.header("x-end-to-end"), Some("request"), "{sent:?}");
    for name in [
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "proxy-trace",
        "x-client-private",
    ] {
        assert_eq!(sent.header(name), None, "{name} crossed: {sent:?}");
    }
    assert!(
        !sent
            .header("connection")
            .is_some_and(|value| value.contains("x-client-private")),
        "{sent:?}"
    );
}

#[test]
fn x_forwarded_for_is_added_with_the_client_address() {
    let upstream = ScriptedUpstream::always(canned(200, &[], "ok"));
    let gateway = things_gateway(&upstream, "", "none");
    gateway.get("/things/1");
    gateway.get_with("/things/2", &[("x-forwarded-for", "203.0.113.9")]);
    // Two header lines are one list (RFC 9110 §5.3).
    support::gateway::raw_exchange(
        gateway.listen_addr(),
        b"GET /things/3 HTTP/1.1\r\nhost: grace\r\n\
          x-forwarded-for: 198.51.100.1\r\nx-forwarded-for: 198.51.100.2\r\n\r\n",
    );
    let sent = upstream.wait_for_requests(3);
    assert_eq!(sent[0].header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        sent[1].header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1"),
        "appended to the chain the client brought"
    );
    assert_eq!(
        sent[2].header("x-forwarded-for"),
        Some("198.51.100.1, 198.51.100.2, 127.0.0.1")
    );
}

#[test]
fn every_proxied_answer_says_the_state_of_its_services_breaker() {
    let upstream = ScriptedUpstream::always(canned(503, &[], "down"));
    let gateway = things_gateway(
        &upstream,
        "timeout_ms = 3000\nbreaker = { failure_threshold = 2, open_timeout_ms = 400 }",
        "none",
    );
    let first = gateway.get("/things/1");
    assert_eq!(first.status, 503, "{first:?}");
    assert_eq!(first.body, "down", "the upstream's own answer");
    assert_eq!(first.header("grace-circuit-state"), Some("closed"));
    let second = gateway.get("/things/1");
    assert_eq!(
        second.header("grace-circuit-state"),
        Some("open"),
        "the second failure opened it: {second:?}"
    );
    let refused = gateway.get("/things/1");
    assert_unavailable(&refused, "things");
    assert_eq!(refused.header("grace-circuit-state"), Some("open"));
    assert_eq!(upstream.requests().len(), 2, "an open breaker calls nobody");

    // Half-open: one probe goes out (and hangs); the next request is
    // refused while it is out.
    upstream.set_script(|_| Scripted::Hang);
    gateway.wait_for_status("the breaker half-open", |status| {
        status["services"][0]["state"] == "half_open"
    });
    let probe = {
        let url = gateway.url("/things/1");
        std::thread::spawn(move || {
            support::gateway::send(&support::upstream::http_agent(), "GET", &url, &[], None)
        })
    };
    upstream.wait_for_requests(3);
    let during_probe = gateway.get("/things/2");
    assert_unavailable(&during_probe, "things");
    assert_eq!(
        during_probe.header("grace-circuit-state"),
        Some("half_open"),
        "{during_probe:?}"
    );
    let probe = probe.join().unwrap();
    assert_eq!(probe.status, 504, "the probe timed out: {probe:?}");
    assert_eq!(probe.header("grace-circuit-state"), Some("open"));
}

// ---------------------------------------------------------------------------
// Stale copies

#[test]
fn an_upstream_answering_a_failure_status_is_covered_by_the_last_good_copy() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream, "");
    let fresh = gateway.get("/users/7");
    assert_fresh(&fresh, r#"{"id":7,"name":"John Doe"}"#);
    upstream.set_faults(json!({ "mode": "error", "error_status": 502 }));
    let stale = gateway.get("/users/7");
    assert_stale(&stale, r#"{"id":7,"name":"John Doe"}"#);
    assert_eq!(stale.header("content-type"), Some("application/json"));
    assert_eq!(stale.header("grace-circuit-state"), Some("closed"));
}

#[test]
fn an_upstream_refusing_connections_is_covered_by_the_last_good_copy() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream, "");
    assert_fresh(&gateway.get("/products/3"), r#"{"id":3,"name":"Product"}"#);
    upstream.set_faults(json!({ "mode": "refuse" }));
    assert_stale(&gateway.get("/products/3"), r#"{"id":3,"name":"Product"}"#);
}

#[test]
fn an_upstream_that_times_out_is_covered_by_the_last_good_copy_at_the_timeout() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream, "timeout_ms = 300");
    assert_fresh(&gateway.get("/users/8"), r#"{"id":8,"name":"John Doe"}"#);
    upstream.set_faults(json!({ "mode": "hang" }));
    let asked = Instant::now();
    let stale = gateway.get("/users/8");
    let took = asked.elapsed();
    assert_stale(&stale, r#"{"id":8,"name":"John Doe"}"#);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn an_open_breaker_serves_the_copy_without_calling_the_upstream() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(
        &upstream,
        "breaker = { failure_threshold = 2, open_timeout_ms = 60000 }",
    );
    assert_fresh(&gateway.get("/users/1"), r#"{"id":1,"name":"John Doe"}"#);
    upstream.set_faults(json!({ "mode": "error" }));
    gateway.get("/users/1");
    gateway.get("/users/1");
    assert_eq!(gateway.service_status("user")["state"], "open");
    upstream.reset_stats();
    for _ in 0..3 {
        let stale = gateway.get("/users/1");
        assert_stale(&stale, r#"{"id":1,"name":"John Doe"}"#);
        assert_eq!(stale.header("grace-circuit-state"), Some("open"));
    }
    assert_eq!(upstream.stats()["requests"], 0, "the breaker called nobody");
}

#[test]
fn the_copy_kept_is_the_last_good_answer_whichever_part_of_it_changed() {
    let upstream = ScriptedUpstream::start(|_| canned(500, &[], "not yet"));
    let gateway = things_gateway(&upstream, "", "cache");
    let answered_with = |path: &str, etag: &'static str, body: &'static str| {
        upstream.set_script(move |_| canned(200, &[("etag", etag)], body));
        let reply = gateway.get(path);
        assert_fresh(&reply, body);
        assert_eq!(reply.header("etag"), Some(etag), "{reply:?}");
    };
    // Each copy sees the same answer again (kept), then one part of it
    // change alone (replaced), then that answer again.
    answered_with("/things/1", "\"1\"", "first");
    answered_with("/things/1", "\"1\"", "first");
    answered_with("/things/1", "\"2\"", "first");
    answered_with("/things/1", "\"2\"", "first");
    answered_with("/things/2", "\"1\"", "first");
    answered_with("/things/2", "\"1\"", "first");
    answered_with("/things/2", "\"1\"", "later");
    answered_with("/things/2", "\"1\"", "later");
    fail_from_now_on(&upstream);
    let header_changed = gateway.get("/things/1");
    assert_stale(&header_changed, "first");
    assert_eq!(
        header_changed.header("etag"),
        Some("\"2\""),
        "{header_changed:?}"
    );
    let body_changed = gateway.get("/things/2");
    assert_stale(&body_changed, "later");
    assert_eq!(
        body_changed.header("etag"),
        Some("\"1\""),
        "{body_changed:?}"
    );
}

#[test]
fn age_counts_the_seconds_since_the_copy_was_fetched() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream, "");
    let before_fetch = Instant::now();
    gateway.get("/users/5");
    let after_fetch = Instant::now();
    upstream.set_faults(json!({ "mode": "error" }));
    let age_of = |reply: &Reply| -> u64 { reply.header("age").unwrap().parse().unwrap() };
    assert!(age_of(&gateway.get("/users/5")) <= 1);
    let reply = gateway.wait_until("Age: 2", || {
        let asked = Instant::now();
        let reply = gateway.get("/users/5");
        (age_of(&reply) >= 2).then_some((reply, asked))
    });
    let (reply, asked) = reply;
    let answered = Instant::now();
    let age = age_of(&reply);
    assert!(
        Duration::from_secs(age) <= answered - before_fetch,
        "Age {age} is more than the time since the fetch"
    );
    assert!(
        Duration::from_secs(age) + Duration::from_secs(1) > asked - after_fetch,
        "Age {age} lags the time since the fetch"
    );
}

// ---------------------------------------------------------------------------
// No copy

#[test]
fn without_a_copy_the_answer_is_a_503_problem_naming_the_service() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream, "");
    upstream.set_faults(json!({ "mode": "error" }));
    let reply = gateway.get("/users/99");
    assert_unavailable(&reply, "user");
    assert_eq!(
        reply.header("retry-after"),
        Some("1"),
        "closed breaker: at least 1"
    );
}

#[test]
fn retry_after_says_when_the_open_breaker_half_opens() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(
        &upstream,
        "breaker = { failure_threshold = 1, open_timeout_ms = 30000 }",
    );
    upstream.set_faults(json!({ "mode": "error" }));
    gateway.get("/users/1");
    let reply = gateway.get("/users/2");
    assert_unavailable(&reply, "user");
    let seconds: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (20..=30).contains(&seconds),
        "about 30 s until half-open: {reply:?}"
    );
}

// ---------------------------------------------------------------------------
// What counts as an answer

#[test]
fn a_404_from_the_upstream_is_an_answer_that_counts_as_a_success() {
    let upstream = ScriptedUpstream::start(|request| match request.target.as_str() {
        "/things/missing" => canned(404, &[("x-why", "gone")], "no such thing"),
        _ => canned(500, &[], "broken"),
    });
    let gateway = things_gateway(
        &upstream,
        "breaker = { failure_threshold = 2, open_timeout_ms = 60000 }",
        "cache",
    );
    assert_unavailable(&gateway.get("/things/broken"), "things");
    let missing = gateway.get("/things/missing");
    assert_eq!(missing.status, 404, "passed through: {missing:?}");
    assert_eq!(missing.body, "no such thing");
    assert_eq!(missing.header("x-why"), Some("gone"));
    assert_eq!(missing.header("grace-circuit-state"), Some("closed"));
    assert_unavailable(&gateway.get("/things/broken"), "things");
    let service = gateway.service_status("things");
    assert_eq!(
        (
            service["state"].as_str(),
            service["consecutive_failures"].as_u64()
        ),
        (Some("closed"), Some(1)),
        "the 404 reset the failure count: {service}"
    );
    // And it was not kept as a copy: only 2xx answers are.
    upstream.set_script(|_| canned(500, &[], "broken"));
    assert_unavailable(&gateway.get("/things/missing"), "things");
}

#[test]
fn statuses_outside_failure_statuses_are_answers() {
    let upstream = ScriptedUpstream::always(canned(503, &[("retry-after", "9")], "busy"));
    let gateway = things_gateway(
        &upstream,
        "failure_statuses = [500]\nbreaker = { failure_threshold = 1 }",
        "cache",
    );
    for _ in 0..3 {
        let reply = gateway.get("/things/1");
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(reply.body, "busy", "the upstream's answer, not a problem");
        assert_eq!(reply.header("retry-after"), Some("9"));
        assert_eq!(reply.header("grace-circuit-state"), Some("closed"));
    }
    assert_eq!(gateway.service_status("things")["failures"], 0);
}

// ---------------------------------------------------------------------------
// What is kept, keyed by what

/// An upstream that answers each request with who asked (its
/// `Authorization` and `Cookie`), path and query, plus `headers`.
fn echoing_upstream(headers: &'static [(&'static str, &'static str)]) -> ScriptedUpstream {
    ScriptedUpstream::start(move |request| {
        let body = format!(
            "{} for {}/{}",
            request.target,
            request.header("authorization").unwrap_or("-"),
            request.header("cookie").unwrap_or("-")
        );
        canned(200, headers, &body)
    })
}

fn fail_from_now_on(upstream: &ScriptedUpstream) {
    upstream.set_script(|_| canned(500, &[], "broken"));
}

#[test]
fn a_copy_fetched_with_one_users_credentials_is_never_served_to_another() {
    let upstream = echoing_upstream(&[]);
    let gateway = things_gateway(&upstream, "", "cache");
    let alice = [("authorization", "Bearer alice")];
    let alice_cookie = [("cookie", "session=alice")];
    let alice_copy = gateway.get_with("/things/1", &alice).body;
    assert_eq!(alice_copy, "/things/1 for Bearer alice/-");
    let cookie_copy = gateway.get_with("/things/1", &alice_cookie).body;
    assert_eq!(cookie_copy, "/things/1 for -/session=alice");
    fail_from_now_on(&upstream);

    assert_stale(&gateway.get_with("/things/1", &alice), &alice_copy);
    assert_stale(&gateway.get_with("/things/1", &alice_cookie), &cookie_copy);
    for other in [
        vec![("authorization", "Bearer bob")],
        vec![("cookie", "session=bob")],
        vec![("authorization", "Bearer alice"), ("cookie", "session=bob")],
        vec![],
    ] {
        let reply = gateway.get_with("/things/1", &other);
        assert_unavailable(&reply, "things");
    }
}

#[test]
fn copies_are_keyed_by_path_and_query() {
    let upstream = echoing_upstream(&[]);
    let gateway = things_gateway(&upstream, "", "cache");
    let copy = gateway.get("/things/1?page=1").body;
    fail_from_now_on(&upstream);
    assert_stale(&gateway.get("/things/1?page=1"), &copy);
    assert_unavailable(&gateway.get("/things/1?page=2"), "things");
    assert_unavailable(&gateway.get("/things/1"), "things");
    assert_unavailable(&gateway.get("/things/2?page=1"), "things");
}

#[test]
fn answers_marked_no_store_are_never_kept() {
    let upstream = ScriptedUpstream::start(|request| {
        let headers: &[(&str, &str)] = if request.target == "/things/private" {
            &[("cache-control", "private, no-store")]
        } else {
            &[("cache-control", "max-age=0")]
        };
        canned(200, headers, "answer")
    });
    let gateway = things_gateway(&upstream, "", "cache");
    assert_fresh(&gateway.get("/things/private"), "answer");
    assert_fresh(&gateway.get("/things/public"), "answer");
    fail_from_now_on(&upstream);
    assert_unavailable(&gateway.get("/things/private"), "things");
    assert_stale(&gateway.get("/things/public"), "answer");
    assert_eq!(gateway.status()["cache"]["entries"], 1);
}

#[test]
fn answers_setting_a_cookie_are_never_kept() {
    let upstream = ScriptedUpstream::start(|request| {
        if request.target == "/things/login" {
            canned(200, &[("set-cookie", "session=s3cret")], "welcome")
        } else {
            canned(200, &[], "plain")
        }
    });
    let gateway = things_gateway(&upstream, "", "cache");
    gateway.get("/things/login");
    gateway.get("/things/plain");
    fail_from_now_on(&upstream);
    assert_unavailable(&gateway.get("/things/login"), "things");
    assert_stale(&gateway.get("/things/plain"), "plain");
}

#[test]
fn stale_if_error_caps_how_old_a_served_copy_may_be() {
    let upstream = ScriptedUpstream::start(|request| {
        if request.target == "/things/short" {
            canned(
                200,
                &[("cache-control", "max-age=0, stale-if-error=1")],
                "short",
            )
        } else {
            canned(200, &[], "long")
        }
    });
    let gateway = things_gateway(&upstream, "", "cache");
    let fetched = Instant::now();
    gateway.get("/things/short");
    gateway.get("/things/long");
    fail_from_now_on(&upstream);
    let first = gateway.get("/things/short");
    if fetched.elapsed() < Duration::from_millis(900) {
        assert_stale(&first, "short");
    }
    gateway.wait_until("the short copy no longer served", || {
        (gateway.get("/things/short").status == 503).then_some(())
    });
    assert!(
        fetched.elapsed() >= Duration::from_secs(1),
        "served for its whole second"
    );
    assert_stale(&gateway.get("/things/long"), "long");
}

#[test]
fn max_stale_bounds_every_copy() {
    let upstream = echoing_upstream(&[]);
    let gateway = things_gateway(&upstream, "max_stale_ms = 1000", "cache");
    let fetched = Instant::now();
    let copy = gateway.get("/things/1").body;
    fail_from_now_on(&upstream);
    let first = gateway.get("/things/1");
    if fetched.elapsed() < Duration::from_millis(900) {
        assert_stale(&first, &copy);
    }
    gateway.wait_until("the copy no longer served", || {
        (gateway.get("/things/1").status == 503).then_some(())
    });
    assert!(fetched.elapsed() >= Duration::from_secs(1));
}

#[test]
fn vary_adds_the_named_request_headers_to_the_key() {
    let upstream = ScriptedUpstream::start(|request| {
        let language = request
            .header("accept-language")
            .unwrap_or("en")
            .to_string();
        canned(
            200,
            &[("vary", "Accept-Language")],
            &format!("in {language}"),
        )
    });
    let gateway = things_gateway(&upstream, "", "cache");
    let french = [("accept-language", "fr")];
    let german = [("accept-language", "de")];
    // The first answer teaches grace the route varies on the header; from
    // then on the header is part of the key.
    gateway.get_with("/things/1", &french);
    assert_fresh(&gateway.get_with("/things/1", &french), "in fr");
    assert_fresh(&gateway.get_with("/things/1", &german), "in de");
    fail_from_now_on(&upstream);
    assert_stale(&gateway.get_with("/things/1", &french), "in fr");
    assert_stale(&gateway.get_with("/things/1", &german), "in de");
    assert_unavailable(
        &gateway.get_with("/things/1", &[("accept-language", "it")]),
        "things",
    );
}

#[test]
fn an_answer_varying_on_everything_is_never_kept() {
    let upstream = ScriptedUpstream::always(canned(200, &[("vary", "*")], "moody"));
    let gateway = things_gateway(&upstream, "", "cache");
    gateway.get("/things/1");
    gateway.get("/things/1");
    fail_from_now_on(&upstream);
    assert_unavailable(&gateway.get("/things/1"), "things");
}

#[test]
fn the_cache_holds_at_most_its_capacity_forgetting_the_least_recently_used() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::builder()
        .config(&demo_config(&upstream.url(""), ""))
        .args(["--cache-capacity", "2"])
        .spawn();
    for id in 1..=3 {
        gateway.get(&format!("/users/{id}"));
    }
    assert_eq!(gateway.status()["cache"]["entries"], 2);
    upstream.set_faults(json!({ "mode": "error" }));
    assert_unavailable(&gateway.get("/users/1"), "user");
    assert_stale(&gateway.get("/users/2"), r#"{"id":2,"name":"John Doe"}"#);
    assert_stale(&gateway.get("/users/3"), r#"{"id":3,"name":"John Doe"}"#);
}

#[test]
fn a_route_without_the_cache_fallback_keeps_no_copy() {
    let upstream = echoing_upstream(&[]);
    let gateway = things_gateway(&upstream, "", "none");
    gateway.get("/things/1");
    fail_from_now_on(&upstream);
    let reply = gateway.get("/things/1");
    assert_eq!(
        reply.status, 500,
        "the upstream's failure, as it came: {reply:?}"
    );
    assert_eq!(gateway.status()["cache"]["entries"], 0);
}

#[test]
fn a_partial_answer_to_a_range_request_is_never_served_as_the_whole() {
    let upstream = ScriptedUpstream::start(|request| match request.header("range") {
        Some(_) => canned(206, &[("content-range", "bytes 0-2/11")], "hel"),
        None => canned(200, &[], "hello world"),
    });
    let gateway = things_gateway(&upstream, "", "cache");
    let part = gateway.get_with("/things/1", &[("range", "bytes=0-2")]);
    assert_eq!((part.status, part.body.as_str()), (206, "hel"), "{part:?}");
    fail_from_now_on(&upstream);
    assert_unavailable(&gateway.get("/things/1"), "things");
}

#[test]
fn a_conditional_request_in_flight_is_not_shared_with_a_plain_one() {
    let upstream = ScriptedUpstream::start(|request| match request.header("if-none-match") {
        Some(_) => {
            // Slow, so the plain request arrives while it is in flight.
            std::thread::sleep(Duration::from_millis(500));
            canned(304, &[("etag", "\"v1\"")], "")
        }
        None => canned(200, &[("etag", "\"v1\"")], "full"),
    });
    let gateway = things_gateway(&upstream, "", "cache");
    let conditional = {
        let url = gateway.url("/things/1");
        std::thread::spawn(move || {
            support::gateway::send(
                &support::upstream::http_agent(),
                "GET",
                &url,
                &[("if-none-match", "\"v1\"")],
                None,
            )
        })
    };
    upstream.wait_for_requests(1);
    let plain = gateway.get("/things/1");
    assert_eq!(plain.status, 200, "{plain:?}");
    assert_eq!(plain.body, "full");
    assert_eq!(conditional.join().unwrap().status, 304);
}

#[test]
fn a_call_outlives_the_client_that_caused_it_for_the_requests_sharing_it() {
    // The call of a fresh read is made in its client's task; when that
    // client goes away, a request coalesced onto the call still gets its
    // answer when the call ends, not a 503 at the deadline.
    let upstream = ScriptedUpstream::start(|_| {
        std::thread::sleep(Duration::from_millis(600));
        canned(200, &[], "full")
    });
    let gateway = things_gateway(&upstream, "timeout_ms = 5000", "cache");
    let mut leaving = RawConnection::open(gateway.listen_addr());
    leaving
        .write(b"GET /things/1 HTTP/1.1\r\nhost: grace\r\n\r\n")
        .unwrap();
    upstream.wait_for_requests(1);
    let sharing = {
        let url = gateway.url("/things/1");
        std::thread::spawn(move || {
            let started = Instant::now();
            let reply =
                support::gateway::send(&support::upstream::http_agent(), "GET", &url, &[], None);
            (reply, started.elapsed())
        })
    };
    // The second request has joined the call; the first client leaves.
    std::thread::sleep(Duration::from_millis(200));
    drop(leaving);
    let (reply, took) = sharing.join().unwrap();
    assert_fresh(&reply, "full");
    assert!(
        took < Duration::from_secs(3),
        "answered after {took:?}, not when the shared call ended"
    );
    assert_eq!(upstream.requests().len(), 1, "one call for both requests");
}

// ---------------------------------------------------------------------------
// Routes

fn assert_problem(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json"),
        "{reply:?}"
    );
    assert_eq!(reply.json()["status"], status, "{reply:?}");
}

#[test]
fn a_request_matching_no_route_gets_a_404_problem() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream, "");
    upstream.reset_stats();
    assert_problem(&gateway.get("/nowhere"), 404);
    assert_problem(&gateway.get("/"), 404);
    assert_eq!(upstream.stats()["requests"], 0, "nothing was sent on");
}

#[test]
fn an_answer_given_before_the_body_was_read_closes_the_connection() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream, "");
    // A body no route reads: the connection closes after the 404 and says
    // so, or a client reusing it would send into a closed connection.
    let answer = gateway.post("/nowhere", r#"{"item":1}"#, &[]);
    assert_problem(&answer, 404);
    assert_eq!(answer.header("connection"), Some("close"));
    let answer = gateway.post("/users/1", r#"{"item":1}"#, &[]);
    assert_eq!(answer.status, 405);
    assert_eq!(answer.header("connection"), Some("close"));
    // Without a body nothing is left unread: the connection stays open.
    let answer = gateway.get("/nowhere");
    assert_problem(&answer, 404);
    assert_eq!(answer.header("connection"), None);
}

#[test]
fn a_parameter_matches_one_segment_and_a_plain_path_matches_exactly() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream, "");
    assert_eq!(gateway.get("/users/alice").status, 200);
    assert_eq!(
        gateway.get("/users/a%2Fb").status,
        200,
        "an encoded slash is in the segment"
    );
    for path in [
        "/users",
        "/users/",
        "/users/1/2",
        "/search/",
        "/searching",
        "/orders/1",
    ] {
        assert_problem(&gateway.get(path), 404);
    }
    assert_eq!(
        gateway.get("/search?q=Pro").status,
        200,
        "the query is no part of the path"
    );
    assert_eq!(upstream.stats()["by_route"]["other"], 0);
}

#[test]
fn a_known_path_asked_with_another_method_gets_a_405_problem() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream, "");
    let reply = gateway.request("DELETE", &gateway.url("/users/1"), &[], None);
    assert_problem(&reply, 405);
    assert_eq!(
        reply.header("allow"),
        Some("GET"),
        "RFC 9110: a 405 says what is allowed"
    );
    let reply = gateway.get("/orders");
    assert_problem(&reply, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
}

#[test]
fn a_path_with_a_dot_segment_is_refused_and_never_reaches_the_upstream() {
    let upstream = ScriptedUpstream::always(canned(200, &[], "ok"));
    let gateway = things_gateway(&upstream, "", "none");
    for path in [
        "/things/..",
        "/things/.",
        "/things/%2e%2E",
        "/things/../admin",
    ] {
        let answer = support::gateway::raw_exchange(
            gateway.listen_addr(),
            format!("GET {path} HTTP/1.1\r\nhost: grace\r\n\r\n").as_bytes(),
        );
        assert_eq!(answer.status, 400, "{path}: {answer:?}");
        assert_eq!(
            answer.header("content-type"),
            Some("application/problem+json"),
            "{path}"
        );
    }
    // Dots that are not a whole `.` or `..` segment are an id like any other.
    assert_eq!(gateway.get("/things/...").status, 200);
    assert_eq!(gateway.get("/things/v1.2").status, 200);
    let sent = upstream.wait_for_requests(2);
    assert_eq!(
        sent.iter()
            .map(|request| request.target.as_str())
            .collect::<Vec<_>>(),
        ["/things/...", "/things/v1.2"]
    );
}
