//! The admin listener of `grace serve`, black-box: status per configured
//! service, load modes and kill switches (and what a client of a switched
//! off feature sees), the queue, auto mode's own CPU samples, Prometheus
//! metrics, and the admin token.

mod support;

use serde_json::{Value, json};
use support::gateway::{Gateway, demo_config, one_service_config, route};
use support::upstream::{DemoUpstream, Reply};

fn demo_gateway(upstream: &DemoUpstream) -> Gateway {
    Gateway::with_config(&demo_config(&upstream.url(""), ""))
}

fn assert_degraded(reply: &Reply, feature: &str, body: Value) {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("grace-degraded"), Some(feature), "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json(), body, "{reply:?}");
}

fn assert_served(reply: &Reply) {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("grace-degraded"), None, "{reply:?}");
}

fn calls_to(upstream: &DemoUpstream, route: &str) -> u64 {
    upstream.stats()["by_route"][route].as_u64().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Modes and features

#[test]
fn degraded_mode_switches_recommendations_and_search_off_without_calling_upstream() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    assert_served(&gateway.get("/recommendations/1"));
    let status = gateway.set_mode(json!({ "mode": "degraded" }));
    assert_eq!(status["mode"], "degraded");
    assert_eq!(
        status["disabled_features"],
        json!(["recommendations", "search"])
    );
    upstream.reset_stats();
    assert_degraded(
        &gateway.get("/recommendations/1"),
        "recommendations",
        json!({ "recommendations": [], "degraded": true }),
    );
    assert_degraded(
        &gateway.get("/search?q=prod"),
        "search",
        json!({ "results": [], "degraded": true }),
    );
    assert_served(&gateway.get("/products/1/reviews"));
    assert_served(&gateway.get("/users/1"));
    assert_eq!(calls_to(&upstream, "GET /recommendations/{user_id}"), 0);
    assert_eq!(calls_to(&upstream, "GET /search"), 0);
    assert_eq!(calls_to(&upstream, "GET /products/{id}/reviews"), 1);
}

#[test]
fn critical_mode_also_switches_reviews_off_and_normal_switches_all_back_on() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    let status = gateway.set_mode(json!({ "mode": "critical" }));
    assert_eq!(
        status["disabled_features"],
        json!(["recommendations", "search", "reviews"])
    );
    assert_degraded(
        &gateway.get("/products/1/reviews"),
        "reviews",
        json!({ "reviews": [], "degraded": true }),
    );
    assert_served(&gateway.get("/products/1"));
    gateway.set_mode(json!({ "mode": "normal" }));
    for path in ["/products/1/reviews", "/recommendations/1", "/search?q=p"] {
        assert_served(&gateway.get(path));
    }
}

#[test]
fn a_kill_switch_turns_a_feature_off_whatever_the_mode_until_turned_back_on() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    let status = gateway.set_feature("reviews", false);
    assert_eq!(status["killed_features"], json!(["reviews"]));
    upstream.reset_stats();
    assert_degraded(
        &gateway.get("/products/9/reviews"),
        "reviews",
        json!({ "reviews": [], "degraded": true }),
    );
    assert_eq!(calls_to(&upstream, "GET /products/{id}/reviews"), 0);
    gateway.set_mode(json!({ "mode": "normal" }));
    assert_eq!(
        gateway.get("/products/9/reviews").header("grace-degraded"),
        Some("reviews"),
        "normal mode does not undo a kill switch"
    );
    gateway.set_feature("reviews", true);
    assert_served(&gateway.get("/products/9/reviews"));
}

#[test]
fn which_features_each_mode_switches_off_is_configuration() {
    let upstream = DemoUpstream::spawn();
    let routes = [
        route(
            "GET",
            "/users/{id}",
            "user",
            "feature = \"profiles\"\ndegraded = { status = 503, body = 'profiles are off' }",
        ),
        route("GET", "/search", "user", "feature = \"search\""),
    ]
    .concat();
    let config = format!(
        "[modes]\ndegraded = [\"profiles\"]\ncritical = [\"profiles\", \"search\"]\n\n{}",
        one_service_config("user", &upstream.url(""), "", &routes)
    );
    let gateway = Gateway::with_config(&config);
    gateway.set_mode(json!({ "mode": "degraded" }));
    let off = gateway.get("/users/1");
    assert_eq!(off.status, 503, "the configured status: {off:?}");
    assert_eq!(off.body, "profiles are off");
    assert_eq!(off.header("grace-degraded"), Some("profiles"));
    assert_eq!(
        gateway.get("/search?q=x").header("grace-degraded"),
        None,
        "search is not in this configuration's degraded mode"
    );
    gateway.set_mode(json!({ "mode": "critical" }));
    assert_eq!(
        gateway.get("/search?q=x").header("grace-degraded"),
        Some("search")
    );
}

#[test]
fn a_route_feature_may_name_a_feature_no_mode_switches_off() {
    let upstream = DemoUpstream::spawn();
    let routes = route("GET", "/users/{id}", "user", "feature = \"beta-profiles\"");
    let gateway = Gateway::with_config(&one_service_config("user", &upstream.url(""), "", &routes));
    assert!(
        gateway.status()["features"]
            .as_array()
            .unwrap()
            .contains(&json!("beta-profiles"))
    );
    gateway.set_mode(json!({ "mode": "critical" }));
    assert_served(&gateway.get("/users/1"));
    gateway.set_feature("beta-profiles", false);
    assert_degraded(
        &gateway.get("/users/1"),
        "beta-profiles",
        json!({ "degraded": true }),
    );
}

#[test]
fn unknown_modes_and_features_are_refused() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    let mode = gateway.admin_send("PUT", "/mode", r#"{"mode":"panic"}"#, &[]);
    assert_eq!(mode.status, 400, "{mode:?}");
    let cpu = gateway.admin_send("PUT", "/mode", r#"{"mode":"auto","cpu_usage":101}"#, &[]);
    assert_eq!(cpu.status, 400, "{cpu:?}");
    let feature = gateway.admin_send("PUT", "/features/teleport", r#"{"enabled":false}"#, &[]);
    assert_eq!(feature.status, 404, "{feature:?}");
    let body = gateway.admin_send("PUT", "/features/search", r#"{"on":false}"#, &[]);
    assert_eq!(body.status, 400, "{body:?}");
    assert_eq!(gateway.status()["mode"], "normal");
}

#[test]
fn a_json_array_is_refused_as_an_admin_body_and_changes_nothing() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    for (path, body) in [
        ("/mode", "[]"),
        ("/mode", r#"["critical"]"#),
        ("/mode", r#"["auto", 99]"#),
        ("/features/search", "[false]"),
    ] {
        let reply = gateway.admin_send("PUT", path, body, &[]);
        assert_eq!(reply.status, 400, "PUT {path} {body}: {reply:?}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json")
        );
        let detail = reply.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            detail.contains("the body is an array, not an object"),
            "PUT {path} {body}: {detail}"
        );
    }
    let status = gateway.status();
    assert_eq!(status["mode"], "normal", "{status}");
    assert_eq!(status["auto"], false, "{status}");
    assert_eq!(status["killed_features"], json!([]), "{status}");
}

#[test]
fn an_admin_body_beyond_the_limit_gets_413_and_changes_nothing() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    let padded =
        |mode: &str, spaces: usize| format!(r#"{{"mode":"{mode}"}}{}"#, " ".repeat(spaces));
    let within = gateway.admin_send("PUT", "/mode", &padded("degraded", 60_000), &[]);
    assert_eq!(within.status, 200, "{within:?}");
    let beyond = gateway.admin_send("PUT", "/mode", &padded("critical", 70_000), &[]);
    assert_eq!(beyond.status, 413, "{beyond:?}");
    assert_eq!(
        beyond.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(gateway.status()["mode"], "degraded");
}

#[test]
fn auto_mode_follows_the_cpu_usage_sent_with_the_thresholds_and_hysteresis() {
    let upstream = DemoUpstream::spawn();
    // Samples far apart, so only the values sent decide in this test.
    let gateway = Gateway::builder()
        .config(&demo_config(&upstream.url(""), ""))
        .args(["--cpu-sample-ms", "600000"])
        .spawn();
    let mode_at =
        |cpu: f64| gateway.set_mode(json!({ "mode": "auto", "cpu_usage": cpu }))["mode"].clone();
    assert_eq!(mode_at(50.0), "normal");
    assert_eq!(mode_at(80.0), "degraded");
    assert_eq!(mode_at(75.0), "degraded", "left only 10 points below 80");
    assert_eq!(mode_at(96.0), "critical");
    assert_eq!(mode_at(86.0), "critical", "left only 10 points below 95");
    assert_eq!(mode_at(84.0), "degraded");
    assert_eq!(mode_at(69.0), "normal");
}

#[test]
fn auto_mode_samples_the_machines_cpu_itself() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::builder()
        .config(&demo_config(&upstream.url(""), ""))
        .args(["--cpu-sample-ms", "100"])
        .spawn();
    let status = gateway.set_mode(json!({ "mode": "auto", "cpu_usage": 42.5 }));
    assert_eq!(status["auto"], true);
    assert_eq!(status["cpu_usage"], 42.5);
    // The value sent stands for one sample; the next comes from the OS.
    let sampled = gateway.wait_for_status("a CPU sample of its own", |status| {
        status["cpu_usage"].as_f64().is_some_and(|cpu| cpu != 42.5)
    });
    let cpu = sampled["cpu_usage"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&cpu), "{sampled}");
}

#[test]
fn an_explicit_mode_is_not_changed_by_samples() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::builder()
        .config(&demo_config(&upstream.url(""), ""))
        .args(["--cpu-sample-ms", "100"])
        .spawn();
    gateway.set_mode(json!({ "mode": "critical" }));
    let before = gateway.status()["uptime_ms"].as_u64().unwrap();
    let later = gateway.wait_for_status("a few samples later", |status| {
        status["uptime_ms"].as_u64().unwrap() > before + 500
    });
    assert_eq!(later["mode"], "critical");
    assert_eq!(later["auto"], false);
}

// ---------------------------------------------------------------------------
// Status, queue, metrics

#[test]
fn status_reports_every_configured_service() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    gateway.get("/users/1");
    let status = gateway.status();
    let mut names: Vec<&str> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|service| service["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["order", "product", "user"], "{status}");
    let user = gateway.service_status("user");
    assert_eq!(user["state"], "closed");
    assert_eq!(user["calls"], 1);
    for field in ["consecutive_failures", "open_timeout_ms", "times_opened"] {
        assert!(user[field].is_u64(), "{field}: {user}");
    }
    assert_eq!(status["mode"], "normal");
    assert_eq!(status["cache"]["entries"], 1);
    assert_eq!(status["queue"]["durable"], true);
}

#[test]
fn the_queue_is_listed_and_processed_on_demand() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::builder()
        .config(&demo_config(&upstream.url(""), ""))
        .args(["--retry-base-ms", "600000"])
        .spawn();
    upstream.set_faults(json!({ "mode": "refuse" }));
    let reply = gateway.post("/orders", r#"{"item":1}"#, &[]);
    assert_eq!(reply.status, 202, "{reply:?}");
    let queue = gateway.admin_get("/queue").json();
    assert_eq!(queue["depth"], 1, "{queue}");
    assert_eq!(queue["pending"].as_array().unwrap().len(), 1, "{queue}");
    upstream.heal();
    assert_eq!(
        gateway.process_queue(),
        json!({ "processed": 1, "remaining": 0 })
    );
    let queue = gateway.admin_get("/queue").json();
    assert_eq!(
        (queue["depth"].as_u64(), queue["processed"].as_u64()),
        (Some(0), Some(1))
    );
}

/// The value of the sample `name{labels}` in Prometheus text.
fn sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name_and_labels).then(|| value.parse().ok())?
    })
}

#[test]
fn metrics_count_requests_calls_breakers_cache_queue_and_mode() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::builder()
        .config(&demo_config(
            &upstream.url(""),
            "breaker = { failure_threshold = 1, open_timeout_ms = 60000 }",
        ))
        .args(["--retry-base-ms", "600000"])
        .spawn();
    gateway.get("/users/1");
    upstream.set_faults(json!({ "mode": "error" }));
    gateway.get("/users/1"); // stale, and the breaker opens
    gateway.get("/users/2"); // unavailable
    gateway.post("/orders", "{}", &[]); // queued
    gateway.set_mode(json!({ "mode": "degraded" }));
    gateway.get("/search?q=x"); // degraded
    gateway.get("/nowhere"); // rejected
    let metrics = gateway.metrics();
    let expect = |key: &str, value: f64| {
        assert_eq!(sample(&metrics, key), Some(value), "{key} in:\n{metrics}");
    };
    expect(
        r#"grace_requests_total{route="GET /users/{id}",outcome="fresh"}"#,
        1.0,
    );
    expect(
        r#"grace_requests_total{route="GET /users/{id}",outcome="stale"}"#,
        1.0,
    );
    expect(
        r#"grace_requests_total{route="GET /users/{id}",outcome="unavailable"}"#,
        1.0,
    );
    expect(
        r#"grace_requests_total{route="POST /orders",outcome="queued"}"#,
        1.0,
    );
    expect(
        r#"grace_requests_total{route="GET /search",outcome="degraded"}"#,
        1.0,
    );
    expect(
        r#"grace_requests_total{route="none",outcome="rejected"}"#,
        1.0,
    );
    expect(
        r#"grace_upstream_calls_total{service="user",result="answered"}"#,
        1.0,
    );
    expect(
        r#"grace_upstream_calls_total{service="user",result="server_error"}"#,
        1.0,
    );
    expect(
        r#"grace_upstream_call_duration_seconds_count{service="user"}"#,
        2.0,
    );
    expect(r#"grace_breaker_state{service="user"}"#, 2.0);
    expect(r#"grace_breaker_state{service="product"}"#, 0.0);
    expect(
        r#"grace_breaker_transitions_total{service="user",to="open"}"#,
        1.0,
    );
    expect("grace_cache_entries", 1.0);
    expect("grace_cache_fallbacks_served_total", 1.0);
    expect("grace_queue_depth", 1.0);
    expect("grace_queue_dead_letters", 0.0);
    expect("grace_mode", 1.0);
}

#[test]
fn metrics_list_every_breaker_transition_at_zero_before_any_happens() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    let metrics = gateway.metrics();
    assert!(
        metrics.contains("# TYPE grace_breaker_transitions counter"),
        "{metrics}"
    );
    for service in ["order", "product", "user"] {
        for to in ["closed", "open", "half_open"] {
            let key =
                format!(r#"grace_breaker_transitions_total{{service="{service}",to="{to}"}}"#);
            assert_eq!(sample(&metrics, &key), Some(0.0), "{key} in:\n{metrics}");
        }
    }
}

// ---------------------------------------------------------------------------
// Methods

#[test]
fn a_405_on_the_admin_listener_lists_the_methods_its_path_takes() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    for (method, path, allow) in [
        ("GET", "/mode", "PUT"),
        ("POST", "/mode", "PUT"),
        ("GET", "/features/search", "PUT"),
        ("DELETE", "/status", "GET, HEAD"),
        ("PUT", "/queue", "GET, HEAD"),
        ("GET", "/queue/process", "POST"),
        ("POST", "/metrics", "GET, HEAD"),
        ("POST", "/events", "GET, HEAD"),
        ("DELETE", "/", "GET, HEAD"),
        ("PUT", "/dashboard.js", "GET, HEAD"),
    ] {
        let reply = gateway.request(method, &gateway.admin_url(path), &[], None);
        assert_eq!(reply.status, 405, "{method} {path}: {reply:?}");
        assert_eq!(
            reply.header("allow"),
            Some(allow),
            "RFC 9110: a 405 says what is allowed; {method} {path}: {reply:?}"
        );
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json")
        );
    }
    let nowhere = gateway.request("DELETE", &gateway.admin_url("/nowhere"), &[], None);
    assert_eq!(nowhere.status, 404, "{nowhere:?}");
    assert_eq!(nowhere.header("allow"), None);
}

#[test]
fn head_on_an_admin_route_answers_as_get_does_without_the_body() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    for path in [
        "/status",
        "/queue",
        "/metrics",
        "/",
        "/dashboard.css",
        "/dashboard.js",
    ] {
        let get = gateway.admin_get(path);
        let head = gateway.request("HEAD", &gateway.admin_url(path), &[], None);
        assert_eq!(head.status, 200, "HEAD {path}: {head:?}");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "HEAD {path}"
        );
        assert_eq!(head.body, "", "HEAD {path}");
    }
    // The page does not change between two requests: its length is GET's.
    let page = gateway.admin_get("/");
    let head = gateway.request("HEAD", &gateway.admin_url("/"), &[], None);
    assert_eq!(
        head.header("content-length"),
        Some(page.body.len().to_string().as_str())
    );
    let events = gateway.request("HEAD", &gateway.admin_url("/events"), &[], None);
    assert_eq!(events.status, 200, "{events:?}");
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    assert_eq!(events.body, "");
    gateway.wait_for_status("the stream behind HEAD /events to end", |status| {
        status["event_streams"] == 0
    });
}

// ---------------------------------------------------------------------------
// Who may use it

#[test]
fn admin_routes_are_never_served_on_the_public_listener() {
    let upstream = DemoUpstream::spawn();
    let gateway = demo_gateway(&upstream);
    for (method, path) in [
        ("GET", "/status"),
        ("GET", "/metrics"),
        ("GET", "/queue"),
        ("GET", "/events"),
        ("POST", "/queue/process"),
        ("PUT", "/mode"),
        ("PUT", "/features/search"),
    ] {
        let reply = gateway.request(
            method,
            &gateway.url(path),
            &[],
            Some(r#"{"mode":"critical","enabled":false}"#),
        );
        assert_eq!(reply.status, 404, "{method} {path}: {reply:?}");
    }
    assert_eq!(gateway.status()["mode"], "normal");
    assert_eq!(gateway.status()["killed_features"], json!([]));
}

#[test]
fn with_a_token_every_admin_request_needs_it() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::builder()
        .config(&demo_config(&upstream.url(""), ""))
        .args(["--admin-token", "s3cret-token"])
        .spawn();
    for (method, path) in [
        ("GET", "/status"),
        ("GET", "/metrics"),
        ("GET", "/queue"),
        ("GET", "/events"),
        ("PUT", "/mode"),
        ("PUT", "/features/search"),
        ("POST", "/queue/process"),
    ] {
        for authorization in [
            None,
            Some("Bearer wrong"),
            Some("s3cret-token"),
            Some("Bearer s3cret-token-and-more"),
        ] {
            let headers: Vec<(&str, &str)> = authorization
                .map(|value| ("authorization", value))
                .into_iter()
                .collect();
            let reply = gateway.admin_send(method, path, r#"{"mode":"critical"}"#, &headers);
            assert_eq!(
                reply.status, 401,
                "{method} {path} {authorization:?}: {reply:?}"
            );
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
            // Its body unread, the connection is not reused.
            assert_eq!(reply.header("connection"), Some("close"));
        }
    }
    // The scheme's name is case-insensitive.
    for authorization in ["bearer s3cret-token", "BEARER s3cret-token"] {
        let reply = gateway.admin_send("GET", "/status", "", &[("authorization", authorization)]);
        assert_eq!(reply.status, 200, "{authorization}: {reply:?}");
    }
    let good = [("authorization", "Bearer s3cret-token")];
    assert_eq!(
        gateway.status_with(&good)["mode"],
        "normal",
        "nothing changed"
    );
    let reply = gateway.admin_send("PUT", "/mode", r#"{"mode":"degraded"}"#, &good);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(gateway.status_with(&good)["mode"], "degraded");
}

#[test]
fn an_admin_address_that_is_not_loopback_needs_a_token() {
    let refused = Gateway::builder()
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .addresses_from_env()
        .run_to_exit();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        refused.stderr.contains("--admin-token"),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout_lines.is_empty(), "{refused:?}");
    // An empty token would pass that check and match no request.
    let empty = Gateway::builder()
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .addresses_from_env()
        .env("GRACE_ADMIN_TOKEN", "")
        .run_to_exit();
    assert_eq!(empty.status.code(), Some(2), "{empty:?}");
    assert!(empty.stderr.contains("empty"), "{}", empty.stderr);

    let gateway = Gateway::builder()
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .addresses_from_env()
        .env("GRACE_ADMIN_TOKEN", "from-env")
        .spawn();
    let url = format!("http://127.0.0.1:{}/status", gateway.admin_addr().port());
    let anonymous = gateway.request("GET", &url, &[], None);
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let allowed = gateway.request("GET", &url, &[("authorization", "Bearer from-env")], None);
    assert_eq!(allowed.status, 200, "{allowed:?}");
}

#[test]
fn metrics_count_calls_to_the_built_in_demo_services_too() {
    let gateway = Gateway::builder().spawn();
    gateway.get("/users/1");
    gateway.get("/products/1");
    let metrics = gateway.metrics();
    for service in ["user", "product"] {
        let calls =
            format!(r#"grace_upstream_calls_total{{service="{service}",result="answered"}}"#);
        assert_eq!(
            sample(&metrics, &calls),
            Some(1.0),
            "{calls} in:\n{metrics}"
        );
        let timed = format!(r#"grace_upstream_call_duration_seconds_count{{service="{service}"}}"#);
        assert_eq!(
            sample(&metrics, &timed),
            Some(1.0),
            "{timed} in:\n{metrics}"
        );
    }
}

#[test]
fn a_call_that_times_out_is_counted_once_and_is_no_late_answer() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::with_config(&demo_config(&upstream.url(""), "timeout_ms = 300"));
    upstream.set_faults(json!({ "mode": "hang" }));
    for id in 1..=3 {
        assert_eq!(gateway.get(&format!("/users/{id}")).status, 503);
    }
    let key = r#"grace_upstream_calls_total{service="user",result="timed_out"}"#;
    gateway.wait_until("three timed-out calls counted", || {
        (sample(&gateway.metrics(), key) == Some(3.0)).then_some(())
    });
    let status = gateway.status();
    assert_eq!(gateway.service_status("user")["timeouts"], 3, "{status}");
    assert_eq!(status["late_answers"], 0, "no answer came at all: {status}");
}
