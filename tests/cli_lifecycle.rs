//! The process around the node: how it ends (EOF, SIGTERM, SIGINT, a reader
//! that closes stdout), its flags and environment variables, and the
//! fixtures file that replaces the demo data.

mod support;

use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::{Grace, body_text, parse_reply, request};

fn echo(msg_id: u64) -> Value {
    json!({"type": "echo", "msg_id": msg_id, "echo": msg_id})
}

/// Asserts that `lines` answer msg_ids 1, 2, ..., n in order, with no gap
/// and no duplicate, and returns n.
fn assert_in_order_prefix(lines: &[String]) -> u64 {
    for (expected, line) in (1u64..).zip(lines) {
        assert_eq!(
            parse_reply(line)["body"]["in_reply_to"],
            expected,
            "replies must answer the requests read, in order: {line}"
        );
    }
    lines.len() as u64
}

// ---------------------------------------------------------------------------
// Ending.
// ---------------------------------------------------------------------------

#[test]
fn eof_without_any_input_exits_zero_and_writes_nothing() {
    let finished = Grace::new().run(b"");
    finished.assert_clean_exit();
    assert!(finished.lines.is_empty(), "{:?}", finished.lines);
}

#[test]
fn eof_exits_zero_after_answering_every_request() {
    let input: String = (1..=50).map(|id| request(echo(id)) + "\n").collect();
    let finished = Grace::new().run(input.as_bytes());
    finished.assert_clean_exit();
    assert_eq!(assert_in_order_prefix(&finished.lines), 50);
}

#[test]
fn sigterm_mid_stream_exits_zero_with_every_reply_for_requests_already_read() {
    let mut node = Grace::new().spawn();
    for msg_id in 1..=10 {
        node.send_body(echo(msg_id));
    }
    let replies: Vec<String> = (0..10).map(|_| node.recv_line()).collect();
    assert_eq!(assert_in_order_prefix(&replies), 10);
    // stdin stays open: the signal alone must end the node.
    node.terminate();
    let finished = node.wait();
    finished.assert_clean_exit();
    assert!(finished.lines.is_empty(), "{:?}", finished.lines);
}

#[test]
fn sigterm_during_a_burst_answers_every_request_it_read_in_order() {
    let mut node = Grace::new().spawn();
    node.call(echo(1));
    let burst: String = (2..=20_000).map(|id| request(echo(id)) + "\n").collect();
    node.send_raw(burst.as_bytes()).expect("write burst");
    node.terminate();
    let finished = node.wait();
    finished.assert_clean_exit();
    // Replies 2..=k for some k: whatever was read is answered, in order,
    // each once.
    for (expected, line) in (2u64..).zip(&finished.lines) {
        assert_eq!(parse_reply(line)["body"]["in_reply_to"], expected, "{line}");
    }
}

/// Sends SIGTERM or SIGINT to a node whose stdin never stops (`yes` piped
/// into it) and checks that it stops reading: it exits 0 within a few
/// seconds, its memory stays bounded, and what it wrote is a clean prefix
/// of answers.
fn signal_during_an_endless_flood(signal: &str) {
    /// How long the node may take from the signal to its exit.
    const EXIT_WITHIN: Duration = Duration::from_secs(5);
    /// Peak memory allowed: the node runs in about 10 MB; reading on after
    /// the signal without writing grew it past 1 GB.
    const PEAK_RSS_LIMIT: u64 = 200 * 1024 * 1024;
    let mut node = Grace::new().spawn();
    let mut stdin = node.take_stdin();
    let block = (request(echo(7)) + "\n").repeat(1000);
    let flood = std::thread::spawn(move || {
        use std::io::Write;
        while stdin.write_all(block.as_bytes()).is_ok() {}
    });
    // Let the flood get going, with replies flowing.
    node.recv_line();
    std::thread::sleep(Duration::from_millis(500));
    node.signal(signal);
    let signalled = Instant::now();
    let mut peak = 0;
    while node.try_status().is_none() {
        peak = peak.max(node.peak_rss_bytes().unwrap_or(0));
        assert!(
            signalled.elapsed() < EXIT_WITHIN,
            "still running {EXIT_WITHIN:?} after SIG{signal} (peak RSS {peak} bytes)"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        peak < PEAK_RSS_LIMIT,
        "peak RSS {peak} bytes after SIG{signal}"
    );
    let finished = node.wait();
    finished.assert_clean_exit();
    flood.join().expect("flood writer");
    for line in &finished.lines {
        assert_eq!(parse_reply(line)["body"]["type"], "echo_ok", "{line}");
    }
}

#[test]
fn sigterm_during_an_endless_flood_stops_reading_and_exits_promptly() {
    signal_during_an_endless_flood("TERM");
}

#[test]
fn sigint_during_an_endless_flood_stops_reading_and_exits_promptly() {
    signal_during_an_endless_flood("INT");
}

#[test]
fn sigint_ends_the_node_like_sigterm() {
    let mut node = Grace::new().spawn();
    let line = node.call(echo(1));
    assert_eq!(parse_reply(&line)["body"]["in_reply_to"], 1);
    node.signal("INT");
    node.wait().assert_clean_exit();
}

#[test]
fn orders_queued_before_sigterm_are_still_queued_after_a_restart() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut node = Grace::new().data_dir(data.path()).spawn();
    node.call(
        json!({"type": "set_service_health", "msg_id": 1, "service": "order", "available": false}),
    );
    for msg_id in 2..=6 {
        let body = node
            .call_body(json!({"type": "create_order", "msg_id": msg_id, "order": {"n": msg_id}}));
        assert_eq!(body["status"], "queued", "{body}");
    }
    node.terminate();
    node.wait().assert_clean_exit();
    let mut restarted = Grace::new().data_dir(data.path()).spawn();
    // The order service is up again: each order is pending or delivered.
    let status = restarted.call_body(json!({"type": "get_status", "msg_id": 2}));
    let survived = status["queue"]["depth"].as_u64().unwrap_or(0)
        + status["queue"]["processed"].as_u64().unwrap_or(0);
    assert_eq!(
        survived, 5,
        "every queued order survives the restart: {status}"
    );
    restarted.finish().assert_clean_exit();
}

#[test]
fn node_exits_quietly_when_its_reader_closes_stdout() {
    let mut node = Grace::new().with_stdout_closed().spawn();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut msg_id = 0;
    // Keep sending: each request makes the node write to the closed pipe.
    while node.try_status().is_none() {
        assert!(
            Instant::now() < deadline,
            "node kept running with stdout closed"
        );
        msg_id += 1;
        let line = request(echo(msg_id)) + "\n";
        if node.send_raw(line.as_bytes()).is_err() {
            break; // the node is gone and so is its stdin
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let finished = node.wait();
    assert!(!finished.stderr.contains("panicked"), "{}", finished.stderr);
    assert!(
        finished.status.success(),
        "exit {}: {}",
        finished.status,
        finished.stderr
    );
}

#[test]
fn node_exits_quietly_when_stdout_is_closed_during_a_flood() {
    let node = Grace::new().with_stdout_closed();
    let input: String = (1..=20_000).map(|id| request(echo(id)) + "\n").collect();
    let finished = node.run(input.as_bytes());
    assert!(!finished.stderr.contains("panicked"), "{}", finished.stderr);
    assert!(finished.status.success(), "{}", finished.stderr);
}

#[test]
fn node_keeps_answering_when_its_stderr_is_closed() {
    let mut input = String::from("not json\n");
    input.push_str(&request(
        json!({"type": "get_user", "msg_id": 1, "user_id": 1, "force_failures": 5}),
    ));
    input.push('\n');
    input.push_str(&request(echo(2)));
    input.push('\n');
    let finished = Grace::new().with_stderr_closed().run(input.as_bytes());
    assert!(finished.status.success(), "exit {}", finished.status);
    assert_eq!(finished.lines.len(), 2, "{:?}", finished.lines);
    assert_eq!(finished.body_for(2)["echo"], 2);
}

// ---------------------------------------------------------------------------
// Flags and environment.
// ---------------------------------------------------------------------------

/// Each documented flag and the default the spec gives it.
const DOCUMENTED_DEFAULTS: [(&str, &str); 9] = [
    ("--failure-threshold", "5"),
    ("--open-timeout-ms", "5000"),
    ("--open-timeout-max-ms", "60000"),
    ("--cache-max-stale-ms", "86400000"),
    ("--cache-capacity", "100000"),
    ("--data-dir", "./grace-data"),
    ("--retry-base-ms", "100"),
    ("--retry-max-ms", "30000"),
    ("--max-attempts", "10"),
];

/// `--help` split into one block of text per option.
fn help_blocks(help: &str) -> Vec<(String, String)> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let is_option = trimmed.starts_with('-') && line.len() > trimmed.len();
        if is_option {
            let long = trimmed
                .split([',', ' ', '='])
                .map(str::trim)
                .find(|word| word.starts_with("--"))
                .unwrap_or(trimmed)
                .to_string();
            blocks.push((long, line.to_string()));
        } else if let Some((_, text)) = blocks.last_mut() {
            text.push('\n');
            text.push_str(line);
        }
    }
    blocks
}

#[test]
fn help_lists_every_flag_with_its_default() {
    let output = Grace::output_of(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("help is UTF-8");
    let blocks = help_blocks(&help);
    for (flag, default) in DOCUMENTED_DEFAULTS {
        let (_, text) = blocks
            .iter()
            .find(|(name, _)| name == flag)
            .unwrap_or_else(|| panic!("--help does not list {flag}:\n{help}"));
        assert!(
            text.contains(&format!("[default: {default}]")),
            "{flag} should show its default {default}:\n{text}"
        );
    }
    for flag in ["--fixtures", "--log-level"] {
        assert!(
            blocks.iter().any(|(name, _)| name == flag),
            "--help does not list {flag}"
        );
    }
    // Every flag that takes a value says what it defaults to, and every flag
    // names its GRACE_* environment variable.
    for (flag, text) in &blocks {
        if flag == "--help" || flag == "--version" {
            continue;
        }
        let first_line = text.lines().next().unwrap_or("");
        if first_line.contains('<') {
            assert!(
                text.to_lowercase().contains("default"),
                "{flag} does not document its default:\n{text}"
            );
        }
        assert!(
            text.contains("GRACE_"),
            "{flag} does not name its environment variable:\n{text}"
        );
    }
}

#[test]
fn environment_variable_sets_the_failure_threshold() {
    let mut node = Grace::new().env("GRACE_FAILURE_THRESHOLD", "2").spawn();
    let line =
        node.call(json!({"type": "get_user", "msg_id": 1, "user_id": 123, "force_failures": 2}));
    assert_eq!(
        body_text(&line),
        r#"{"type":"user_response","in_reply_to":1,"user":{"id":123,"name":"John Doe"},"circuit_state":"open","from_cache":true}"#
    );
    node.finish().assert_clean_exit();
}

#[test]
fn command_line_flag_wins_over_the_environment() {
    let mut node = Grace::new()
        .env("GRACE_FAILURE_THRESHOLD", "2")
        .args(["--failure-threshold", "3"])
        .spawn();
    let body = node
        .call_body(json!({"type": "get_user", "msg_id": 1, "user_id": 123, "force_failures": 2}));
    assert_eq!(body["circuit_state"], "closed", "{body}");
    node.finish().assert_clean_exit();
}

#[test]
fn environment_variables_set_the_breaker_timeouts_and_cache_size() {
    let mut node = Grace::new()
        .env("GRACE_OPEN_TIMEOUT_MS", "1234")
        .env("GRACE_CACHE_CAPACITY", "5000")
        .spawn();
    let status = node.call_body(json!({"type": "get_status", "msg_id": 1}));
    assert_eq!(
        status["circuits"]["user"]["open_timeout_ms"], 1234,
        "{status}"
    );
    assert_eq!(status["cache"]["capacity"], 5000, "{status}");
    node.finish().assert_clean_exit();
}

#[test]
fn invalid_flag_value_is_refused_at_start() {
    for args in [
        &["--failure-threshold", "0"][..],
        &["--failure-threshold", "many"],
        &["--open-timeout-ms", "-5"],
        &["--no-such-flag"],
    ] {
        let output = Grace::output_of(args);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(output.stdout.is_empty(), "{args:?} wrote to stdout");
        assert!(!output.stderr.is_empty(), "{args:?} gave no reason");
    }
}

#[test]
fn flags_that_size_memory_or_time_are_refused_beyond_their_bounds_with_exit_2() {
    for args in [
        &["--cache-capacity", "1000000000"][..],
        &["--cache-capacity", "0"],
        &["--order-history", "1000000000"],
        &["--max-message-bytes", "0"],
        &["--max-message-bytes", "2000000000"],
        &["--open-timeout-ms", "18446744073709551615"],
        &["--open-timeout-max-ms", "18446744073709551615"],
        &["--retry-base-ms", "18446744073709551615"],
        &["--retry-max-ms", "18446744073709551615"],
        &["--cache-max-stale-ms", "18446744073709551615"],
    ] {
        let output = Grace::output_of(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(output.stdout.is_empty(), "{args:?} wrote to stdout");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(args[0]),
            "{args:?}: the reason names the flag: {stderr}"
        );
    }
}

#[test]
fn largest_accepted_flag_values_run_in_small_memory_and_never_overflow_the_clock() {
    let input = [
        request(json!({"type": "get_user", "msg_id": 1, "user_id": 1})),
        // Opens the breaker for the longest wait: its deadline must not overflow.
        request(json!({"type": "get_user", "msg_id": 2, "user_id": 2, "force_failures": 5})),
        request(json!({"type": "create_order", "msg_id": 3, "order": {"n": 1}, "service_unavailable": true})),
        request(json!({"type": "get_status", "msg_id": 4})),
    ]
    .join("\n");
    let week_ms = (7u64 * 24 * 60 * 60 * 1000).to_string();
    let mut node = Grace::new()
        .args([
            "--cache-capacity",
            "100000000",
            "--order-history",
            "100000000",
        ])
        .args([
            "--open-timeout-ms",
            &week_ms,
            "--open-timeout-max-ms",
            &week_ms,
        ])
        .args(["--retry-base-ms", &week_ms, "--retry-max-ms", &week_ms])
        .args([
            "--cache-max-stale-ms",
            "31536000000",
            "--max-message-bytes",
            "1073741824",
        ])
        .spawn();
    node.send(&input);
    for msg_id in 1..=4 {
        let body = node.recv_body();
        assert_eq!(body["in_reply_to"], msg_id, "{body}");
    }
    let peak = node.peak_rss_bytes().expect("node still running");
    assert!(
        peak < 100 * 1024 * 1024,
        "peak RSS {peak} bytes: memory taken up front"
    );
    node.finish().assert_clean_exit();
}

#[test]
fn log_level_flag_quiets_stderr_and_stdout_carries_only_replies() {
    let input = [
        request(json!({"type": "get_user", "msg_id": 1, "user_id": 1, "force_failures": 5})),
        request(json!({"type": "set_mode", "msg_id": 2, "cpu_usage": 99})),
    ]
    .join("\n");
    let quiet = Grace::new()
        .args(["--log-level", "error"])
        .run(input.as_bytes());
    quiet.assert_clean_exit();
    assert!(
        !quiet.stderr.contains("circuit"),
        "info lines at --log-level error:\n{}",
        quiet.stderr
    );
    let chatty = Grace::new()
        .args(["--log-level", "trace"])
        .run(input.as_bytes());
    chatty.assert_clean_exit();
    assert!(chatty.stderr.contains("circuit"), "{}", chatty.stderr);
    assert_eq!(
        chatty.lines.len(),
        2,
        "stdout has replies only: {:?}",
        chatty.lines
    );
}

#[test]
fn rust_log_sets_the_level_unless_log_level_is_given() {
    let input =
        request(json!({"type": "get_user", "msg_id": 1, "user_id": 1, "force_failures": 5}));
    let quiet = Grace::new().env("RUST_LOG", "error").run(input.as_bytes());
    quiet.assert_clean_exit();
    assert!(!quiet.stderr.contains("circuit"), "{}", quiet.stderr);
    let flag_wins = Grace::new()
        .env("RUST_LOG", "error")
        .args(["--log-level", "info"])
        .run(input.as_bytes());
    flag_wins.assert_clean_exit();
    assert!(flag_wins.stderr.contains("circuit"), "{}", flag_wins.stderr);
    let by_env = Grace::new()
        .env("GRACE_LOG_LEVEL", "error")
        .run(input.as_bytes());
    by_env.assert_clean_exit();
    assert!(!by_env.stderr.contains("circuit"), "{}", by_env.stderr);
}

#[test]
fn breaker_transition_is_logged_on_stderr_with_its_reason() {
    let input =
        request(json!({"type": "get_user", "msg_id": 1, "user_id": 1, "force_failures": 5}));
    let finished = Grace::new().run(input.as_bytes());
    finished.assert_clean_exit();
    let transition = finished
        .stderr
        .lines()
        .find(|line| line.contains("closed") && line.contains("open") && line.contains("user"))
        .unwrap_or_else(|| panic!("no transition logged:\n{}", finished.stderr));
    assert!(
        transition.contains('5'),
        "the reason names the failures: {transition}"
    );
}

#[test]
fn journal_lives_in_the_data_dir() {
    let mut node = Grace::new().spawn();
    let status = node.call_body(json!({"type": "get_status", "msg_id": 1}));
    let queue = &status["queue"];
    assert_eq!(queue["durable"], true, "{status}");
    let journal = PathBuf::from(queue["journal"].as_str().expect("journal path"));
    let data_dir = node.dir().join("data");
    assert!(
        journal.starts_with(&data_dir),
        "{journal:?} not under {data_dir:?}"
    );
    node.finish().assert_clean_exit();
}

/// Runs a node on `data_dir` with `args`, feeds it `lines` (each one input
/// line) and returns what it did once its input ended.
fn run_on(data_dir: &std::path::Path, args: &[&str], lines: &[String]) -> support::Finished {
    let mut input = lines.join("\n");
    input.push('\n');
    let finished = Grace::new()
        .data_dir(data_dir)
        .args(args.iter().copied())
        .run(input.as_bytes());
    finished.assert_clean_exit();
    finished
}

/// A request line from [`support::CLIENT`] to `node_id`.
fn to_node(node_id: &str, body: Value) -> String {
    support::request_from(support::CLIENT, node_id, body)
}

fn init(node_id: &str, msg_id: u64) -> String {
    to_node(
        node_id,
        json!({"type": "init", "msg_id": msg_id, "node_id": node_id, "node_ids": [node_id]}),
    )
}

fn order_service(node_id: &str, msg_id: u64, available: bool) -> String {
    to_node(
        node_id,
        json!({"type": "set_service_health", "msg_id": msg_id, "service": "order", "available": available}),
    )
}

fn create_order_line(node_id: &str, msg_id: u64) -> String {
    to_node(
        node_id,
        json!({"type": "create_order", "msg_id": msg_id, "order": {"sku": msg_id}}),
    )
}

#[test]
fn a_first_line_that_is_not_a_request_does_not_name_the_journal() {
    for garbage in ["x", r#"{"src":"c1","dest":"zz","body":{}}"#] {
        let data = tempfile::tempdir().expect("tempdir");
        let first = run_on(
            data.path(),
            &[],
            &[
                garbage.to_string(),
                init("n1", 1),
                order_service("n1", 2, false),
                create_order_line("n1", 3),
            ],
        );
        let queued = first.body_for(3);
        assert_eq!(queued["status"], "queued", "{queued}");
        assert_eq!(queued["request_id"], 1, "{queued}");

        // The next run starts cleanly with `init n1`: it finds the order
        // (delivered at once, the order service being up) and recognises a
        // resent create as the same one.
        let second = run_on(
            data.path(),
            &[],
            &[
                init("n1", 1),
                to_node(
                    "n1",
                    json!({"type": "get_order", "msg_id": 10, "request_id": 1}),
                ),
                create_order_line("n1", 3),
            ],
        );
        let found = second.body_for(10);
        assert_eq!(
            found["type"], "order_status",
            "after a first line {garbage:?}: {found}\n{}",
            second.stderr
        );
        assert_eq!(found["request_id"], 1, "{found}");
        let repeat = second.body_for(3);
        assert_eq!(repeat["status"], "created", "{repeat}");
        assert_eq!(
            repeat["order_id"], found["order_id"],
            "no second order: {repeat}"
        );
    }
}

#[test]
fn requests_without_msg_id_get_distinct_delivery_keys_in_every_run_without_a_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_dir = dir.path().join("regular-file");
    std::fs::write(&not_a_dir, "not a directory").expect("write");
    let data_dir = not_a_dir.join("data");
    let order_ids: Vec<Value> = (0..2)
        .map(|_| {
            let finished = run_on(
                &data_dir,
                &[],
                &[
                    to_node("n1", json!({"type": "create_order", "order": {"sku": 1}})),
                    to_node("n1", json!({"type": "echo", "msg_id": 1, "echo": 1})),
                ],
            );
            let created = finished.bodies()[0].clone();
            assert_eq!(created["status"], "created", "{created}");
            created["order_id"].clone()
        })
        .collect();
    assert_ne!(
        order_ids[0], order_ids[1],
        "two anonymous orders in two runs must not share a delivery key"
    );
}

#[test]
fn distinct_node_ids_never_share_a_journal() {
    for (first, second) in [("n.1", "n_1"), ("é", "ü"), ("a/b", "a%2Fb")] {
        let data = tempfile::tempdir().expect("tempdir");
        let queued = run_on(
            data.path(),
            &["--node-id", first],
            &[order_service(first, 1, false), create_order_line(first, 2)],
        );
        assert_eq!(queued.body_for(2)["status"], "queued");

        // The other node, its order service up, must neither see nor
        // deliver the first node's order.
        let other = run_on(
            data.path(),
            &["--node-id", second],
            &[to_node(second, json!({"type": "get_status", "msg_id": 1}))],
        );
        let queue = &other.body_for(1)["queue"];
        assert_eq!(queue["durable"], true, "{queue}");
        assert_eq!(
            queue["depth"], 0,
            "{second:?} sees {first:?}'s order: {queue}"
        );
        assert_eq!(
            queue["processed"], 0,
            "{second:?} delivered {first:?}'s order: {queue}"
        );

        let again = run_on(
            data.path(),
            &["--node-id", first],
            &[to_node(
                first,
                json!({"type": "get_order", "msg_id": 1, "request_id": 1}),
            )],
        );
        assert_eq!(
            again.body_for(1)["type"],
            "order_status",
            "{first:?}: {}",
            again.stderr
        );
    }
}

#[test]
fn a_very_long_node_id_gets_a_durable_journal_of_its_own() {
    let data = tempfile::tempdir().expect("tempdir");
    let long = "n".repeat(300);
    let longer = format!("{long}x");
    let queued = run_on(
        data.path(),
        &["--node-id", &long],
        &[
            order_service(&long, 1, false),
            create_order_line(&long, 2),
            to_node(&long, json!({"type": "get_status", "msg_id": 3})),
        ],
    );
    assert_eq!(queued.body_for(2)["status"], "queued");
    assert_eq!(
        queued.body_for(3)["queue"]["durable"],
        true,
        "{}",
        queued.stderr
    );

    let other = run_on(
        data.path(),
        &["--node-id", &longer],
        &[to_node(&longer, json!({"type": "get_status", "msg_id": 1}))],
    );
    assert_eq!(other.body_for(1)["queue"]["depth"], 0);

    let again = run_on(
        data.path(),
        &["--node-id", &long],
        &[to_node(
            &long,
            json!({"type": "get_order", "msg_id": 1, "request_id": 1}),
        )],
    );
    assert_eq!(
        again.body_for(1)["type"],
        "order_status",
        "{}",
        again.stderr
    );
}

#[test]
fn a_journal_under_the_old_naming_scheme_is_reported_not_ignored() {
    let data = tempfile::tempdir().expect("tempdir");
    // Before, "n.1" was stored as n_1.journal.sqlite.
    let old = data.path().join("n_1.journal.sqlite");
    std::fs::write(&old, "").expect("write");
    let finished = run_on(
        data.path(),
        &["--node-id", "n.1"],
        &[to_node("n.1", json!({"type": "get_status", "msg_id": 1}))],
    );
    let journal = finished.body_for(1)["queue"]["journal"].clone();
    assert_ne!(
        journal,
        json!(old.to_string_lossy()),
        "n.1 has a journal of its own"
    );
    let old_name = old.to_string_lossy();
    assert!(
        finished
            .stderr
            .lines()
            .any(|line| line.contains(&*old_name) && line.contains("naming")),
        "stderr names the journal left under the old naming scheme: {}",
        finished.stderr
    );
    assert!(old.exists(), "the old journal is left where it is");
}

// ---------------------------------------------------------------------------
// Fixtures.
// ---------------------------------------------------------------------------

/// Writes `text` to a fixtures file in its own tempdir.
fn fixtures_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fixtures.json");
    std::fs::write(&path, text).expect("write fixtures");
    (dir, path)
}

const FIXTURES: &str = r#"{"users":[{"name":"Ada","id":1,"tier":"gold","tags":["a","b"]},{"id":"u2","name":"Grace"}],"products":[{"id":10,"name":"Pen","price":1.5},{"id":11,"name":"Paper"}]}"#;

fn fixtures_node(text: &str) -> (tempfile::TempDir, support::Node) {
    let (dir, path) = fixtures_file(text);
    let node = Grace::new()
        .args(["--fixtures".to_string(), path.display().to_string()])
        .spawn();
    (dir, node)
}

#[test]
fn fixtures_serve_known_records_verbatim_with_their_extra_keys() {
    let (_dir, mut node) = fixtures_node(FIXTURES);
    let line = node.call(json!({"type": "get_user", "msg_id": 1, "user_id": 1}));
    assert_eq!(
        body_text(&line),
        r#"{"type":"user_response","in_reply_to":1,"user":{"name":"Ada","id":1,"tier":"gold","tags":["a","b"]},"circuit_state":"closed","from_cache":false}"#
    );
    let line = node.call(json!({"type": "get_user", "msg_id": 2, "user_id": "u2"}));
    assert_eq!(
        parse_reply(&line)["body"]["user"],
        json!({"id": "u2", "name": "Grace"})
    );
    let line = node.call(json!({"type": "get_product", "msg_id": 3, "product_id": 10}));
    assert_eq!(
        body_text(&line),
        r#"{"type":"product_response","in_reply_to":3,"product":{"id":10,"name":"Pen","price":1.5},"_cached":false}"#
    );
    node.finish().assert_clean_exit();
}

#[test]
fn fixtures_unknown_id_is_not_found() {
    let (_dir, mut node) = fixtures_node(FIXTURES);
    let cases = [
        json!({"type": "get_user", "msg_id": 1, "user_id": 123}),
        json!({"type": "get_user", "msg_id": 2, "user_id": "1"}),
        json!({"type": "get_product", "msg_id": 3, "product_id": 12}),
    ];
    for (msg_id, request) in (1u64..).zip(cases) {
        let body = node.call_body(request);
        assert_eq!(body["type"], "error", "{body}");
        assert_eq!(body["in_reply_to"], msg_id);
        assert_eq!(body["code"], 20, "{body}");
    }
    node.finish().assert_clean_exit();
}

#[test]
fn not_found_does_not_count_as_a_service_failure() {
    let (_dir, mut node) = fixtures_node(FIXTURES);
    for msg_id in 1..=10 {
        let body = node.call_body(json!({"type": "get_user", "msg_id": msg_id, "user_id": 999}));
        assert_eq!(body["code"], 20, "{body}");
    }
    let status = node.call_body(json!({"type": "get_status", "msg_id": 11}));
    assert_eq!(status["circuits"]["user"]["state"], "closed", "{status}");
    assert_eq!(
        status["circuits"]["user"]["consecutive_failures"], 0,
        "{status}"
    );
    let body = node.call_body(json!({"type": "get_user", "msg_id": 12, "user_id": 1}));
    assert_eq!(body["from_cache"], false, "{body}");
    node.finish().assert_clean_exit();
}

#[test]
fn fixtures_replace_the_demo_data_in_the_warm_cache() {
    let (_dir, mut node) = fixtures_node(FIXTURES);
    let line = node
        .call(json!({"type": "get_user", "msg_id": 1, "user_id": 1, "service_unavailable": true}));
    let body = parse_reply(&line)["body"].clone();
    assert_eq!(body["from_cache"], true, "fixture records are warm: {line}");
    assert_eq!(body["user"]["tier"], "gold");
    // A demo id is not in the cache any more: no data anywhere.
    let body = node.call_body(
        json!({"type": "get_user", "msg_id": 2, "user_id": 123, "service_unavailable": true}),
    );
    assert_eq!(body["code"], 11, "{body}");
    let status = node.call_body(json!({"type": "get_status", "msg_id": 3}));
    assert_eq!(status["cache"]["entries"], 4, "{status}");
    node.finish().assert_clean_exit();
}

#[test]
fn fixtures_feed_search_and_recommendations() {
    let (_dir, mut node) = fixtures_node(FIXTURES);
    let body = node.call_body(json!({"type": "search", "msg_id": 1, "query": "pAp"}));
    assert_eq!(
        body["results"],
        json!([{"id": 11, "name": "Paper"}]),
        "{body}"
    );
    let body = node.call_body(json!({"type": "get_recommendations", "msg_id": 2, "user_id": 1}));
    let recommended = body["recommendations"].as_array().expect("list");
    assert!(!recommended.is_empty(), "{body}");
    assert!(
        recommended.iter().all(|p| p["id"] == 10 || p["id"] == 11),
        "{body}"
    );
    node.finish().assert_clean_exit();
}

#[test]
fn pretty_printed_fixtures_are_served_on_one_compact_line() {
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(FIXTURES).unwrap()).unwrap();
    let (_dir, mut node) = fixtures_node(&pretty);
    node.send_body(json!({"type": "get_user", "msg_id": 1, "user_id": "u2"}));
    node.send_body(echo(2));
    let first = node.recv_line();
    assert_eq!(
        body_text(&first),
        r#"{"type":"user_response","in_reply_to":1,"user":{"id":"u2","name":"Grace"},"circuit_state":"closed","from_cache":false}"#
    );
    node.finish().assert_clean_exit();
}

#[test]
fn bad_fixtures_file_stops_the_node_with_a_reason() {
    let bad = [
        "{\"users\": [",
        "not json",
        "[1, 2]",
        r#"{"users": [{"name": "no id"}]}"#,
        r#"{"users": [{"id": 1.5}]}"#,
        r#"{"users": {"id": 1}}"#,
        r#"{"users": [], "pruducts": []}"#,
    ];
    for text in bad {
        let (_dir, path) = fixtures_file(text);
        let output = Grace::output_of(&["--fixtures", path.to_str().unwrap()]);
        assert!(!output.status.success(), "accepted fixtures {text:?}");
        assert!(
            output.stdout.is_empty(),
            "fixtures {text:?} wrote to stdout"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("fixtures"),
            "no reason for {text:?}: {stderr}"
        );
    }
    let output = Grace::output_of(&["--fixtures", "/nonexistent/grace-fixtures.json"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("grace-fixtures.json"));
}
