//! `grace serve`'s life, black-box: starting with no configuration or with
//! one (and refusing a bad one, naming the line), flags and their
//! environment variables, the example configuration, stopping on
//! SIGTERM/SIGINT with requests in flight, and `kill -9` in the middle of
//! a burst of writes: every write answered `202` is delivered after a
//! restart, and none twice to an upstream that deduplicates.

mod support;

use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::gateway::{Exited, Gateway, demo_config, send, try_send};
use support::upstream::{DemoUpstream, http_agent};

fn assert_clean_exit(exited: &Exited) {
    assert_eq!(exited.status.code(), Some(0), "{exited:?}");
    assert!(!exited.stderr.contains("panicked"), "{}", exited.stderr);
    assert!(
        exited.stdout_lines.is_empty(),
        "nothing on stdout after the start-up line: {exited:?}"
    );
}

#[test]
fn with_no_configuration_it_serves_the_built_in_demo_services() {
    let gateway = Gateway::builder().spawn();
    let user = gateway.get("/users/123");
    assert_eq!(user.status, 200, "{user:?}");
    assert_eq!(user.json(), json!({ "id": 123, "name": "John Doe" }));
    assert_eq!(user.header("grace-circuit-state"), Some("closed"));
    assert_eq!(gateway.get("/products/1/reviews").status, 200);
    assert_eq!(gateway.get("/search?q=Product").status, 200);
    let order = gateway.post("/orders", r#"{"item":1}"#, &[("idempotency-key", "demo")]);
    assert_eq!(order.status, 201, "{order:?}");
    assert_eq!(order.json()["order_id"], grace::demo::order_id_for("demo"));
}

#[test]
fn it_prints_both_bound_addresses_as_one_json_line() {
    let gateway = Gateway::builder().spawn();
    let line: Value = serde_json::from_str(gateway.start_line()).unwrap();
    assert_eq!(
        line,
        json!({
            "listen": gateway.listen_addr().to_string(),
            "admin": gateway.admin_addr().to_string(),
        })
    );
    assert_ne!(
        gateway.listen_addr().port(),
        gateway.admin_addr().port(),
        "port 0 twice: two free ports"
    );
    gateway.signal("TERM");
    assert_clean_exit(&gateway.wait());
}

#[test]
fn listeners_and_configuration_come_from_grace_environment_variables() {
    let upstream = DemoUpstream::spawn();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("from-env.toml");
    std::fs::write(&config, demo_config(&upstream.url(""), "")).unwrap();
    let gateway = Gateway::builder()
        .addresses_from_env()
        .env("GRACE_LISTEN", "127.0.0.1:0")
        .env("GRACE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("GRACE_CONFIG", config.to_str().unwrap())
        .env("GRACE_MAX_BODY_BYTES", "10")
        .spawn();
    assert_eq!(gateway.get("/users/1").status, 200);
    assert_eq!(
        upstream.stats()["requests"],
        1,
        "through the configured upstream"
    );
    assert_eq!(gateway.post("/orders", r#"{"item":1234}"#, &[]).status, 413);
}

#[test]
fn help_names_every_flag_with_its_default_and_environment_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_grace"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for (flag, env, default) in [
        ("--listen", "GRACE_LISTEN", Some("127.0.0.1:8080")),
        (
            "--admin-listen",
            "GRACE_ADMIN_LISTEN",
            Some("127.0.0.1:8081"),
        ),
        ("--config", "GRACE_CONFIG", None),
        ("--admin-token", "GRACE_ADMIN_TOKEN", None),
        (
            "--header-read-timeout-ms",
            "GRACE_HEADER_READ_TIMEOUT_MS",
            Some("10000"),
        ),
        (
            "--max-header-bytes",
            "GRACE_MAX_HEADER_BYTES",
            Some("16384"),
        ),
        ("--max-body-bytes", "GRACE_MAX_BODY_BYTES", Some("1048576")),
        ("--max-in-flight", "GRACE_MAX_IN_FLIGHT", Some("1024")),
        (
            "--shutdown-grace-ms",
            "GRACE_SHUTDOWN_GRACE_MS",
            Some("10000"),
        ),
    ] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
        assert!(
            help.contains(&format!("env: {env}=")),
            "{env} missing:\n{help}"
        );
        if let Some(default) = default {
            assert!(
                help.contains(&format!("default: {default}")),
                "{flag} default {default} missing:\n{help}"
            );
        }
    }
}

/// Runs `grace serve` on `config`; expects exit 2 naming `line` and
/// saying `says`.
fn assert_refused_config(config: &str, line: usize, says: &str) {
    let exited = Gateway::builder().config(config).run_to_exit();
    assert_eq!(exited.status.code(), Some(2), "{exited:?}");
    assert!(exited.stdout_lines.is_empty(), "{exited:?}");
    assert!(
        exited.stderr.contains(&format!("grace.toml:{line}:")),
        "names line {line}: {}",
        exited.stderr
    );
    assert!(
        exited.stderr.contains(says),
        "says {says:?}: {}",
        exited.stderr
    );
}

const ONE_SERVICE: &str = "[services.user]\nurl = \"http://127.0.0.1:9\"\n";

#[test]
fn a_route_naming_an_unknown_service_stops_it_at_start() {
    let config =
        format!("{ONE_SERVICE}\n[[routes]]\nmethod = \"GET\"\npath = \"/x\"\nservice = \"usr\"\n");
    assert_refused_config(&config, 7, "unknown service \"usr\"");
}

#[test]
fn a_bad_url_stops_it_at_start() {
    assert_refused_config(
        "[services.user]\n\nurl = \"localhost:9001\"\n",
        3,
        "bad url",
    );
}

#[test]
fn a_url_no_connection_could_use_stops_it_at_start() {
    for (url, says) in [
        ("http://127.0.0.1:99999", "not a number from 1 to 65535"),
        ("http://127.0.0.1:0", "port 0"),
        ("http://127.0.0.1:29001#frag", "no fragment"),
    ] {
        assert_refused_config(&format!("[services.user]\n\nurl = \"{url}\"\n"), 3, says);
    }
}

#[test]
fn a_url_with_a_password_stops_it_at_start_without_printing_the_password() {
    let exited = Gateway::builder()
        .config("[services.user]\nurl = \"http://user:hunter2@127.0.0.1:29001\"\n")
        .run_to_exit();
    assert_eq!(exited.status.code(), Some(2), "{exited:?}");
    assert!(exited.stderr.contains("grace.toml:2:"), "{}", exited.stderr);
    assert!(
        exited.stderr.contains("no user or password"),
        "{}",
        exited.stderr
    );
    assert!(!exited.stderr.contains("hunter2"), "{}", exited.stderr);
}

#[test]
fn a_bad_service_value_stops_it_naming_the_keys_own_line() {
    assert_refused_config(
        &format!("{ONE_SERVICE}failure_statuses = [500, 1000]\n"),
        3,
        "1000 is not an HTTP status",
    );
    assert_refused_config(
        &format!("{ONE_SERVICE}\ntimeout_ms = 0\n"),
        4,
        "timeout_ms: must be at least 1",
    );
}

#[test]
fn a_route_that_could_never_be_taken_stops_it_at_start() {
    let route = |path: &str, extra: &str| {
        format!(
            "{ONE_SERVICE}\n[[routes]]\nmethod = \"GET\"\npath = \"{path}\"\nservice = \"user\"\n{extra}"
        )
    };
    assert_refused_config(&route("/a b", ""), 6, "percent-encoded (%20)");
    assert_refused_config(&route("/a/{id}/{id}", ""), 6, "{id} appears twice");
    assert_refused_config(
        &route("/a", "degraded = { status = 200 }\n"),
        8,
        "no `feature`",
    );
}

#[test]
fn an_unknown_field_stops_it_at_start() {
    assert_refused_config(&format!("{ONE_SERVICE}timeout = 5\n"), 3, "timeout");
    let route =
        "\n[[routes]]\nmethod = \"GET\"\npath = \"/x\"\nservice = \"user\"\nfallbak = \"cache\"\n";
    assert_refused_config(&format!("{ONE_SERVICE}{route}"), 8, "fallbak");
}

#[test]
fn a_duplicate_route_stops_it_at_start() {
    let route = |path: &str| {
        format!("\n[[routes]]\nmethod = \"GET\"\npath = \"{path}\"\nservice = \"user\"\n")
    };
    let config = format!(
        "{ONE_SERVICE}{}{}",
        route("/users/{id}"),
        route("/users/{name}")
    );
    assert_refused_config(&config, 9, "duplicate route");
}

#[test]
fn a_configuration_file_that_cannot_be_read_stops_it_at_start() {
    let exited = Gateway::builder()
        .args(["--config", "/nonexistent/grace.toml"])
        .run_to_exit();
    assert_eq!(exited.status.code(), Some(2), "{exited:?}");
    assert!(
        exited.stderr.contains("/nonexistent/grace.toml"),
        "{}",
        exited.stderr
    );
}

#[test]
fn an_address_it_cannot_bind_stops_it_with_exit_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let exited = Gateway::builder()
        .addresses_from_env()
        .args(["--listen", &address, "--admin-listen", "127.0.0.1:0"])
        .run_to_exit();
    assert_eq!(exited.status.code(), Some(1), "{exited:?}");
    assert!(exited.stderr.contains(&address), "{}", exited.stderr);
}

#[test]
fn the_example_configuration_parses_and_serves() {
    let upstream = DemoUpstream::spawn();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/grace.toml"))
            .expect("examples/grace.toml");
    assert!(
        example.contains("127.0.0.1:9001"),
        "written for the demo upstream's default address"
    );
    let config = example.replace("127.0.0.1:9001", &upstream.listen_addr().to_string());
    let gateway = Gateway::with_config(&config);
    for path in [
        "/users/1",
        "/products/1",
        "/products/1/reviews",
        "/recommendations/1",
        "/search?q=Prod",
    ] {
        let reply = gateway.get(path);
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        assert_eq!(reply.header("grace-degraded"), None, "{path}");
    }
    assert_eq!(gateway.post("/orders", "{}", &[]).status, 201);
    assert_eq!(
        upstream.stats()["requests"],
        6,
        "every request went to the demo upstream"
    );
    upstream.set_faults(json!({ "mode": "error" }));
    assert_eq!(
        gateway.get("/users/1").header("cache-status"),
        Some("grace; hit; detail=stale-if-error")
    );
}

// ---------------------------------------------------------------------------
// Stopping

/// Whether a new connection to `address` is refused.
fn refuses_connections(address: std::net::SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err()
}

#[test]
fn sigterm_stops_accepting_lets_the_request_in_flight_finish_and_exits_0() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::with_config(&demo_config(&upstream.url(""), "timeout_ms = 20000"));
    upstream.set_faults(json!({ "mode": "hang" }));
    let in_flight = {
        let url = gateway.url("/users/1");
        thread::spawn(move || send(&http_agent(), "GET", &url, &[], None))
    };
    upstream.wait_for_stats("the request held upstream", |stats| stats["hung"] == 1);
    gateway.signal("TERM");
    let address = gateway.listen_addr();
    gateway.wait_until("new connections refused", || {
        refuses_connections(address).then_some(())
    });
    upstream.heal();
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200, "finished, not cut: {reply:?}");
    assert_eq!(reply.json(), json!({ "id": 1, "name": "John Doe" }));
    assert_clean_exit(&gateway.wait());
}

#[test]
fn with_nothing_in_flight_it_exits_at_once_on_sigterm() {
    // The default grace period is 10 s: an idle gateway waits for nothing.
    let gateway = Gateway::builder().spawn();
    assert_eq!(gateway.get("/users/1").status, 200);
    let stopped = Instant::now();
    gateway.signal("TERM");
    assert_clean_exit(&gateway.wait());
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?} to stop");
}

#[test]
fn sigint_stops_it_like_sigterm() {
    let gateway = Gateway::builder().spawn();
    assert_eq!(gateway.get("/users/1").status, 200);
    gateway.signal("INT");
    assert_clean_exit(&gateway.wait());
}

#[test]
fn shutdown_waits_no_longer_than_the_grace_period() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::builder()
        .config(&demo_config(&upstream.url(""), "timeout_ms = 60000"))
        .args(["--shutdown-grace-ms", "500"])
        .spawn();
    upstream.set_faults(json!({ "mode": "hang" }));
    let in_flight = {
        let url = gateway.url("/users/1");
        thread::spawn(move || try_send(&http_agent(), "GET", &url, &[], None))
    };
    upstream.wait_for_stats("the request held upstream", |stats| stats["hung"] == 1);
    let stopped = Instant::now();
    gateway.signal("TERM");
    let exited = gateway.wait();
    let took = stopped.elapsed();
    assert_eq!(exited.status.code(), Some(0), "{exited:?}");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    if let Ok(reply) = in_flight.join().unwrap() {
        assert_ne!(reply.status, 200, "the upstream never answered: {reply:?}");
    }
}

#[test]
fn queued_writes_survive_a_sigterm_and_restart() {
    let upstream = DemoUpstream::spawn();
    let data = tempfile::tempdir().unwrap();
    let builder = Gateway::builder()
        .config(&demo_config(&upstream.url(""), ""))
        .data_dir(data.path())
        .args(["--retry-base-ms", "600000"]);
    let gateway = builder.spawn();
    upstream.set_faults(json!({ "mode": "refuse" }));
    let reply = gateway.post("/orders", "{}", &[("idempotency-key", "survivor")]);
    assert_eq!(reply.status, 202, "{reply:?}");
    let id = reply.json()["id"].as_str().unwrap().to_string();
    gateway.signal("TERM");
    assert_clean_exit(&gateway.wait());
    let left: Vec<String> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().any(|name| name.ends_with(".journal.sqlite"))
            && !left.iter().any(|name| name.ends_with("-wal")),
        "the journal was closed, its log folded in: {left:?}"
    );

    upstream.heal();
    // Pending writes resume at start.
    let restarted = builder.spawn();
    let status = restarted.wait_until("the write delivered", || {
        let status = restarted.get(&format!("/grace/requests/{id}")).json();
        (status["status"] == "delivered").then_some(status)
    });
    assert_eq!(
        status["response"]["body"],
        json!({ "order_id": grace::demo::order_id_for("survivor"), "status": "created" })
            .to_string()
    );
    assert_eq!(upstream.stats()["orders_created"], 1);
}

#[test]
fn writes_answered_202_survive_kill_9_and_are_delivered_after_restart() {
    let upstream = DemoUpstream::spawn();
    let data = tempfile::tempdir().unwrap();
    let builder = Gateway::builder()
        .config(&demo_config(&upstream.url(""), ""))
        .data_dir(data.path());
    let gateway = builder.spawn();
    upstream.set_faults(json!({ "mode": "refuse" }));
    let ids: Vec<(String, String)> = (0..3)
        .map(|n| {
            let key = format!("crash-{n}");
            let reply = gateway.post("/orders", "{}", &[("idempotency-key", &key)]);
            assert_eq!(reply.status, 202, "{reply:?}");
            (reply.json()["id"].as_str().unwrap().to_string(), key)
        })
        .collect();
    gateway.kill9();

    upstream.heal();
    let restarted = builder.spawn();
    restarted.wait_for_status("the queue drained", |status| status["queue"]["depth"] == 0);
    for (id, key) in &ids {
        let status = restarted.get(&format!("/grace/requests/{id}")).json();
        assert_eq!(status["status"], "delivered", "{status}");
        let body: Value =
            serde_json::from_str(status["response"]["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["order_id"], grace::demo::order_id_for(key));
    }
    let stats = upstream.stats();
    assert_eq!(stats["orders_created"], 3, "{stats}");
    assert_eq!(stats["repeated_order_deliveries"], 0, "{stats}");
}

/// What a client of the burst learned about one write.
#[derive(Debug, Clone)]
enum Learned {
    /// `201`: the upstream took it directly.
    Created,
    /// `202` with this id.
    Accepted(String),
}

#[test]
fn kill_9_during_a_burst_of_writes_loses_no_answered_write_and_delivers_none_twice() {
    const CLIENTS: usize = 4;
    const WRITES_PER_CLIENT: usize = 60;
    let upstream = DemoUpstream::spawn();
    // Some writes go through, some are queued, and deliveries are going
    // on when the gateway dies.
    upstream.set_faults(json!({ "failure_rate": 0.5, "latency_ms": 5, "seed": 7 }));
    let data = tempfile::tempdir().unwrap();
    let builder = Gateway::builder()
        .config(&demo_config(
            &upstream.url(""),
            "breaker = { failure_threshold = 0 }",
        ))
        .data_dir(data.path())
        .args(["--retry-base-ms", "10", "--retry-max-ms", "50"]);
    let gateway = builder.spawn();
    let learned: Arc<Mutex<HashMap<String, Learned>>> = Arc::default();
    let unanswered = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let url = gateway.url("/orders");
            let (learned, unanswered) = (Arc::clone(&learned), Arc::clone(&unanswered));
            thread::spawn(move || {
                let agent = http_agent();
                // Until the gateway dies under it.
                for n in 0..WRITES_PER_CLIENT {
                    let key = format!("burst-{client}-{n}");
                    let body = json!({ "client": client, "n": n }).to_string();
                    let headers = [
                        ("idempotency-key", key.as_str()),
                        ("content-type", "application/json"),
                    ];
                    match try_send(&agent, "POST", &url, &headers, Some(&body)) {
                        Ok(reply) if reply.status == 201 => {
                            learned.lock().unwrap().insert(key, Learned::Created);
                        }
                        Ok(reply) if reply.status == 202 => {
                            let id = reply.json()["id"].as_str().unwrap().to_string();
                            learned.lock().unwrap().insert(key, Learned::Accepted(id));
                        }
                        Ok(reply) => panic!("unexpected answer: {reply:?}"),
                        Err(_) => {
                            unanswered.lock().unwrap().push(key);
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    // Dies once a good share of the burst was answered.
    gateway.wait_until("a third of the burst answered", || {
        (learned.lock().unwrap().len() >= CLIENTS * WRITES_PER_CLIENT / 3).then_some(())
    });
    gateway.kill9();
    for client in clients {
        client.join().unwrap();
    }
    let learned = learned.lock().unwrap().clone();
    let unanswered = unanswered.lock().unwrap().clone();
    let accepted = learned
        .values()
        .filter(|learned| matches!(learned, Learned::Accepted(_)))
        .count();
    assert!(accepted > 0, "some writes were queued: {learned:?}");

    upstream.heal();
    let restarted = builder.spawn();
    restarted.wait_for_status("the queue drained", |status| status["queue"]["depth"] == 0);
    for (key, learned) in &learned {
        if let Learned::Accepted(id) = learned {
            let status = restarted.get(&format!("/grace/requests/{id}")).json();
            assert_eq!(status["status"], "delivered", "{key}: {status}");
            let body: Value =
                serde_json::from_str(status["response"]["body"].as_str().unwrap()).unwrap();
            assert_eq!(body["order_id"], grace::demo::order_id_for(key), "{key}");
        }
    }
    // Every answered write made its order once; a client repeating any of
    // them gets the first answer and makes nothing new.
    let created = upstream.stats()["orders_created"].as_u64().unwrap() as usize;
    assert!(
        created >= learned.len() && created <= learned.len() + unanswered.len(),
        "{created} orders for {} answered and {} unanswered writes",
        learned.len(),
        unanswered.len()
    );
    for (key, _) in learned.iter().take(40) {
        let (client, n) = key.trim_start_matches("burst-").split_once('-').unwrap();
        let body =
            json!({ "client": client.parse::<usize>().unwrap(), "n": n.parse::<usize>().unwrap() })
                .to_string();
        let reply = restarted.post("/orders", &body, &[("idempotency-key", key)]);
        assert_eq!(reply.status, 201, "{key}: {reply:?}");
        assert_eq!(reply.json()["order_id"], grace::demo::order_id_for(key));
    }
    let stats = upstream.stats();
    assert_eq!(
        stats["orders_created"].as_u64().unwrap() as usize,
        created,
        "repeats made nothing new: {stats}"
    );
    // A delivery the upstream took just before the crash, and the journal
    // had not yet recorded, is made again after the restart under the same
    // key: the upstream's deduplication makes it a repeat, not a second
    // order (counted above).
    eprintln!(
        "{} answered ({accepted} queued), {} unanswered, {created} orders, {} repeated deliveries",
        learned.len(),
        unanswered.len(),
        stats["repeated_order_deliveries"]
    );
}
