//! The limits `grace serve` holds clients and upstreams to, black-box: a
//! slow client is dropped while others are served, oversized heads and
//! bodies get `431` and `413`, requests beyond `--max-in-flight` get `503`
//! at once, a hung upstream holds nobody past its route's timeout, an open
//! breaker answers at once, and connections are kept alive on both sides.

mod support;

use serde_json::json;
use std::thread;
use std::time::{Duration, Instant};
use support::gateway::{
    Gateway, RawConnection, Scripted, ScriptedUpstream, canned, demo_config, one_service_config,
    raw_exchange, route, send,
};
use support::upstream::{DemoUpstream, http_agent};

#[test]
fn a_client_too_slow_to_send_its_headers_is_dropped_while_others_are_served() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::builder()
        .config(&demo_config(&upstream.url(""), ""))
        .args(["--header-read-timeout-ms", "1000"])
        .spawn();
    let address = gateway.listen_addr();
    // Slowloris: a header line every 100 ms, never the blank line.
    let slow = thread::spawn(move || {
        let mut client = RawConnection::open(address);
        let started = Instant::now();
        client
            .write(b"GET /users/1 HTTP/1.1\r\nhost: grace\r\n")
            .unwrap();
        while started.elapsed() < Duration::from_secs(15) {
            if client.write(b"x-slow: 1\r\n").is_err()
                || client.closed_within(Duration::from_millis(100))
            {
                return Some(started.elapsed());
            }
        }
        None
    });
    // A client that sends nothing at all.
    let mut silent = RawConnection::open(address);
    let silent_since = Instant::now();
    // Everyone else is served meanwhile.
    let served_from = Instant::now();
    while served_from.elapsed() < Duration::from_millis(1500) {
        let reply = gateway.get("/users/1");
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let dropped_after = slow
        .join()
        .unwrap()
        .expect("the slow client was never dropped");
    assert!(
        dropped_after >= Duration::from_millis(900),
        "dropped before its time: {dropped_after:?}"
    );
    assert!(
        silent.closed_within(Duration::from_secs(10)),
        "the silent client is dropped too"
    );
    assert!(silent_since.elapsed() >= Duration::from_millis(900));
    assert_eq!(gateway.get("/users/2").status, 200);
}

#[test]
fn a_client_too_slow_to_send_its_body_gets_408_and_frees_its_place() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::builder()
        .config(&demo_config(&upstream.url(""), ""))
        .args(["--max-in-flight", "1", "--body-read-timeout-ms", "1000"])
        .spawn();
    // It must take the only place before anyone else does: a probe
    // answered 503 says it has. A probe that came first may have turned it
    // away: then start over on a fresh connection.
    let send_slowly = || {
        let mut slow = RawConnection::open(gateway.listen_addr());
        slow.write(
            b"POST /orders HTTP/1.1\r\nhost: grace\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"item\":",
        )
        .unwrap();
        (slow, Instant::now())
    };
    let mut candidate = send_slowly();
    gateway.wait_until("the slow client in flight", || {
        if gateway.get("/users/1").status == 503 {
            return Some(());
        }
        if candidate.0.has_news_within(Duration::from_millis(1)) {
            candidate = send_slowly();
        }
        None
    });
    let (mut slow, started) = candidate;
    // It holds the place until its time is up; then others get it.
    let served = gateway.wait_until("another client served", || {
        let reply = gateway.get("/users/1");
        (reply.status == 200).then_some(Instant::now())
    });
    let reply = slow.read_response().expect("an answer before the close");
    assert_eq!(reply.status, 408, "{reply:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(served - started >= Duration::from_millis(900));
    assert!(
        slow.closed_within(Duration::from_secs(5)),
        "and the connection closed"
    );
    assert_eq!(upstream.stats()["by_route"]["POST /orders"], 0);
}

#[test]
fn request_headers_beyond_the_limit_get_431() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::builder()
        .config(&demo_config(&upstream.url(""), ""))
        .args(["--max-header-bytes", "8192"])
        .spawn();
    upstream.reset_stats();
    let big = "a".repeat(20_000);
    let request = format!("GET /users/1 HTTP/1.1\r\nhost: grace\r\nx-big: {big}\r\n\r\n");
    let reply = raw_exchange(gateway.listen_addr(), request.as_bytes());
    assert_eq!(reply.status, 431, "{reply:?}");
    let fits = format!(
        "GET /users/1 HTTP/1.1\r\nhost: grace\r\nx-big: {}\r\n\r\n",
        &big[..4000]
    );
    assert_eq!(
        raw_exchange(gateway.listen_addr(), fits.as_bytes()).status,
        200
    );
    assert_eq!(
        upstream.stats()["requests"],
        1,
        "the big one was never sent on"
    );
}

#[test]
fn a_body_beyond_the_limit_gets_413() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::builder()
        .config(&demo_config(&upstream.url(""), ""))
        .args(["--max-body-bytes", "1000"])
        .spawn();
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
    let declared = gateway.post("/orders", &big, &[]);
    assert_eq!(declared.status, 413, "{declared:?}");
    assert_eq!(
        declared.header("content-type"),
        Some("application/problem+json")
    );
    // Chunked: no length declared up front.
    let chunked = format!(
        "POST /orders HTTP/1.1\r\nhost: grace\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let reply = raw_exchange(gateway.listen_addr(), chunked.as_bytes());
    assert_eq!(reply.status, 413, "{reply:?}");
    let small = gateway.post("/orders", r#"{"item":1}"#, &[]);
    assert_eq!(small.status, 201, "{small:?}");
    assert_eq!(upstream.stats()["orders_created"], 1);
}

#[test]
fn requests_beyond_max_in_flight_get_503_with_retry_after_at_once() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::builder()
        .config(&demo_config(&upstream.url(""), "timeout_ms = 20000"))
        .args(["--max-in-flight", "2"])
        .spawn();
    upstream.set_faults(json!({ "mode": "hang" }));
    let held: Vec<_> = (1..=2)
        .map(|id| {
            let url = gateway.url(&format!("/users/{id}"));
            thread::spawn(move || send(&http_agent(), "GET", &url, &[], None))
        })
        .collect();
    upstream.wait_for_stats("two requests held", |stats| stats["hung"] == 2);
    let asked = Instant::now();
    let beyond = gateway.get("/users/3");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(beyond.status, 503, "{beyond:?}");
    assert_eq!(beyond.header("retry-after"), Some("1"));
    assert_eq!(
        beyond.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        upstream.stats()["by_route"]["GET /users/{id}"],
        2,
        "never sent on"
    );
    upstream.heal();
    for request in held {
        assert_eq!(request.join().unwrap().status, 200);
    }
    assert_eq!(gateway.get("/users/3").status, 200, "the permits came back");
}

#[test]
fn a_hung_upstream_never_holds_a_client_longer_than_its_routes_timeout() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::with_config(&demo_config(&upstream.url(""), "timeout_ms = 500"));
    upstream.set_faults(json!({ "mode": "hang" }));
    for (method, path, status) in [("GET", "/users/1", 503), ("POST", "/orders", 202)] {
        let asked = Instant::now();
        let reply = gateway.request(method, &gateway.url(path), &[], Some("{}"));
        let took = asked.elapsed();
        assert_eq!(reply.status, status, "{method} {path}: {reply:?}");
        assert!(
            took >= Duration::from_millis(500),
            "{method} {path}: {took:?}"
        );
        assert!(took < Duration::from_secs(4), "{method} {path}: {took:?}");
    }
}

#[test]
fn a_hung_upstream_on_a_route_without_fallback_is_a_504_at_its_timeout() {
    let upstream = ScriptedUpstream::start(|_| support::gateway::Scripted::Hang);
    let routes = route("GET", "/things/{id}", "things", "");
    let gateway = Gateway::with_config(&one_service_config(
        "things",
        &upstream.url(),
        "timeout_ms = 400",
        &routes,
    ));
    let asked = Instant::now();
    let reply = gateway.get("/things/1");
    let took = asked.elapsed();
    assert_eq!(reply.status, 504, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[test]
fn an_open_breaker_answers_at_once_without_calling_the_upstream() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::with_config(&demo_config(
        &upstream.url(""),
        "breaker = { failure_threshold = 1, open_timeout_ms = 600000 }",
    ));
    upstream.set_faults(json!({ "mode": "error" }));
    gateway.get("/users/1");
    upstream.reset_stats();
    // One keep-alive connection; the fastest of many round trips is
    // grace's own time plus loopback.
    let agent = http_agent();
    let url = gateway.url("/users/2");
    let mut round_trips: Vec<Duration> = (0..100)
        .map(|_| {
            let asked = Instant::now();
            let reply = send(&agent, "GET", &url, &[], None);
            let took = asked.elapsed();
            assert_eq!(reply.status, 503, "{reply:?}");
            took
        })
        .collect();
    round_trips.sort_unstable();
    let (fastest, median) = (round_trips[0], round_trips[round_trips.len() / 2]);
    eprintln!("open breaker, client round trip: fastest {fastest:?}, median {median:?}");
    assert!(fastest < Duration::from_millis(1), "fastest {fastest:?}");
    assert_eq!(upstream.stats()["requests"], 0);
}

#[test]
fn upstream_connections_are_pooled_and_kept_alive() {
    let upstream = ScriptedUpstream::always(canned(200, &[], "ok"));
    let routes = route("GET", "/things/{id}", "things", "");
    let gateway = Gateway::with_config(&one_service_config("things", &upstream.url(), "", &routes));
    for id in 0..20 {
        assert_eq!(gateway.get(&format!("/things/{id}")).status, 200);
    }
    assert_eq!(upstream.requests().len(), 20);
    assert_eq!(upstream.connections(), 1, "one connection, kept alive");
}

#[test]
fn an_upstream_closing_idle_connections_costs_no_request() {
    // Every answer is followed by a close the upstream does not announce:
    // each call must find its pooled connection gone and open another.
    let Scripted::Respond(answer) = canned(200, &[], "ok") else {
        unreachable!("canned responds")
    };
    let upstream = ScriptedUpstream::always(Scripted::RespondAndClose(answer));
    let routes = route("GET", "/things/{id}", "things", "");
    let gateway = Gateway::with_config(&one_service_config("things", &upstream.url(), "", &routes));
    for id in 0..10 {
        let reply = gateway.get(&format!("/things/{id}"));
        assert_eq!(reply.status, 200, "request {id}: {reply:?}");
        // Time for the close to arrive before the next call.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(upstream.requests().len(), 10);
    assert_eq!(upstream.connections(), 10, "a new connection for each");
}

#[test]
fn a_client_connection_is_kept_alive_across_requests() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::with_config(&demo_config(&upstream.url(""), ""));
    let mut client = RawConnection::open(gateway.listen_addr());
    for id in 1..=3 {
        client
            .write(format!("GET /users/{id} HTTP/1.1\r\nhost: grace\r\n\r\n").as_bytes())
            .unwrap();
        let reply = client
            .read_response()
            .expect("an answer on the same connection");
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(
            reply.body_text(),
            format!(r#"{{"id":{id},"name":"John Doe"}}"#)
        );
    }
}
