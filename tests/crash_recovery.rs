//! The durable queue against real crashes: the `grace` binary is started,
//! fed orders while the order service is down, killed with SIGKILL, and
//! started again on the same data dir. Every order that got a "queued" reply
//! must be created exactly once after the restart: none lost, none doubled.
//!
//! Also the degraded and damaged cases: a second process on the same
//! journal, a data dir that cannot be written (with or without a journal in
//! it), a journal that fails its integrity check, and a hand-edited row.
//! Without a journal it can write, grace refuses to promise "queued" (code
//! 11) unless `--volatile-queue` asks for an in-memory queue, and then says
//! `"durable": false` in every such reply.

use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const NODE_ID: &str = "n1";
const CLIENT: &str = "client";
/// How long to wait for one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a restarted node may take to deliver its whole queue.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Message ids of the bookkeeping requests, far from the orders' 1, 2, ...
const CONTROL_MSG_IDS: u64 = 1_000_000;

fn request(body: Value) -> String {
    json!({"src": CLIENT, "dest": NODE_ID, "body": body}).to_string()
}

fn create_order(msg_id: u64) -> String {
    request(json!({
        "type": "create_order",
        "msg_id": msg_id,
        "order": {"user_id": msg_id % 97, "product_id": msg_id, "quantity": 1}
    }))
}

/// Who a `grace` process runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunAs {
    /// The user running the tests.
    TestUser,
    /// A user without write access to a directory made read-only, even
    /// when the tests run as root.
    Unprivileged,
}

/// The uid and gid of `nobody`.
const NOBODY: u32 = 65534;

fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// Makes `data_dir` read-only, and the directories above it (up to `top`)
/// traversable by the unprivileged user.
fn make_read_only(top: &Path, data_dir: &Path) {
    fs::set_permissions(top, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(data_dir, fs::Permissions::from_mode(0o555)).unwrap();
}

/// A running `grace` process: requests go to its stdin, its stdout lines
/// arrive on a channel (so a test can wait with a timeout), and its stderr
/// goes to a file to read once it is gone.
struct GraceProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: Receiver<Value>,
    reader: Option<JoinHandle<()>>,
    stderr_path: PathBuf,
    next_control_id: u64,
}

impl GraceProcess {
    /// Starts grace with its journal under `data_dir`, known as [`NODE_ID`].
    fn start(data_dir: &Path, log_dir: &Path, name: &str) -> Self {
        Self::start_with(data_dir, log_dir, name, &[], RunAs::TestUser)
    }

    /// Starts grace with extra `args`, as `user`.
    fn start_with(data_dir: &Path, log_dir: &Path, name: &str, args: &[&str], user: RunAs) -> Self {
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_grace"));
        command
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--node-id", NODE_ID])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).unwrap());
        if user == RunAs::Unprivileged && running_as_root() {
            // Root writes wherever it likes: only another user sees a
            // read-only directory as read-only.
            command.uid(NOBODY).gid(NOBODY);
        }
        let mut child = command.spawn().expect("grace starts");
        let stdout = child.stdout.take().unwrap();
        let (sender, replies) = mpsc::channel();
        let reader = thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match stdout.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                // A kill can cut the last write short: a line without its
                // newline was never a complete reply.
                if line.last() != Some(&b'\n') {
                    break;
                }
                let reply: Value = serde_json::from_slice(&line).unwrap_or_else(|err| {
                    panic!(
                        "reply is not JSON ({err}): {}",
                        String::from_utf8_lossy(&line)
                    )
                });
                if sender.send(reply).is_err() {
                    break;
                }
            }
        });
        GraceProcess {
            stdin: child.stdin.take(),
            child,
            replies,
            reader: Some(reader),
            stderr_path,
            next_control_id: CONTROL_MSG_IDS,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send_lines(&mut self, lines: &[String]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        let mut batch = String::new();
        for line in lines {
            batch.push_str(line);
            batch.push('\n');
        }
        stdin.write_all(batch.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// The next reply's body.
    fn next_body(&self) -> Value {
        let reply = self
            .replies
            .recv_timeout(REPLY_TIMEOUT)
            .expect("a reply in time");
        assert_eq!(reply["src"], NODE_ID, "{reply}");
        assert_eq!(reply["dest"], CLIENT, "{reply}");
        reply["body"].clone()
    }

    /// Sends one request and returns its reply's body.
    fn call(&mut self, mut body: Value) -> Value {
        self.next_control_id += 1;
        let msg_id = self.next_control_id;
        body["msg_id"] = json!(msg_id);
        self.send_lines(&[request(body)]);
        let reply = self.next_body();
        assert_eq!(reply["in_reply_to"], msg_id, "{reply}");
        reply
    }

    fn set_order_service(&mut self, available: bool) {
        let reply = self.call(
            json!({"type": "set_service_health", "service": "order", "available": available}),
        );
        assert_eq!(reply["type"], "service_health_ok", "{reply}");
    }

    fn get_queue(&mut self) -> Value {
        let reply = self.call(json!({"type": "get_queue"}));
        assert_eq!(reply["type"], "queue_status", "{reply}");
        reply
    }

    fn queue_status(&mut self) -> Value {
        let reply = self.call(json!({"type": "get_status"}));
        assert_eq!(reply["type"], "status", "{reply}");
        reply["queue"].clone()
    }

    /// Polls `get_queue` until nothing is pending.
    fn wait_until_drained(&mut self) -> Value {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let queue = self.get_queue();
            if queue["depth"] == 0 {
                return queue;
            }
            assert!(
                Instant::now() < deadline,
                "queue not drained in {DRAIN_TIMEOUT:?}: {queue}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends many requests at once and returns their replies' bodies by
    /// `in_reply_to`.
    fn call_many(&mut self, lines: &[String]) -> HashMap<u64, Value> {
        self.send_lines(lines);
        let mut bodies = HashMap::new();
        for _ in lines {
            let body = self.next_body();
            let msg_id = body["in_reply_to"].as_u64().expect("in_reply_to");
            assert!(
                bodies.insert(msg_id, body).is_none(),
                "two replies to {msg_id}"
            );
        }
        bodies
    }

    /// SIGKILL: no chance to flush, commit or clean up.
    fn kill_9(mut self) -> Vec<Value> {
        let status = Command::new("kill")
            .args(["-9", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(!exit.success(), "killed, not exited: {exit}");
        drop(self.stdin.take());
        // Replies already in the pipe when the process died were written,
        // and so committed, before the kill: they count as answered.
        self.reader.take().unwrap().join().unwrap();
        self.replies
            .try_iter()
            .map(|reply| reply["body"].clone())
            .collect()
    }

    /// Ends input and waits for a clean exit; returns stderr.
    fn finish(mut self) -> String {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "grace exited with {status}");
        self.reader.take().unwrap().join().unwrap();
        fs::read_to_string(&self.stderr_path).unwrap()
    }
}

impl Drop for GraceProcess {
    fn drop(&mut self) {
        // A failed assertion must not leave a process behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Request ids of queued replies, by the order's msg_id; checks each one.
fn queued_request_ids(replies: impl IntoIterator<Item = Value>) -> HashMap<u64, u64> {
    let mut request_ids = HashMap::new();
    let mut seen = HashSet::new();
    for body in replies {
        assert_eq!(body["type"], "order_response", "{body}");
        assert_eq!(body["status"], "queued", "{body}");
        assert_eq!(body["queued"], true, "{body}");
        let request_id = body["request_id"].as_u64().expect("request_id");
        assert!(
            seen.insert(request_id),
            "request id {request_id} handed out twice"
        );
        let msg_id = body["in_reply_to"].as_u64().unwrap();
        request_ids.insert(msg_id, request_id);
    }
    request_ids
}

/// Asks for every request id and checks each is created, under its own
/// order id. Returns the order ids by request id.
fn assert_all_created_once(
    node: &mut GraceProcess,
    request_ids: impl IntoIterator<Item = u64>,
) -> HashMap<u64, String> {
    let request_ids: Vec<u64> = request_ids.into_iter().collect();
    let lines: Vec<String> = request_ids
        .iter()
        .map(|&request_id| {
            request(json!({"type": "get_order", "msg_id": request_id, "request_id": request_id}))
        })
        .collect();
    let replies = node.call_many(&lines);
    let mut order_ids = HashMap::new();
    let mut owners: HashMap<String, u64> = HashMap::new();
    for request_id in request_ids {
        let body = &replies[&request_id];
        assert_eq!(body["type"], "order_status", "{body}");
        assert_eq!(body["request_id"], request_id, "{body}");
        assert_eq!(body["status"], "created", "request {request_id}: {body}");
        let order_id = body["order_id"].as_str().expect("order_id").to_string();
        if let Some(other) = owners.insert(order_id.clone(), request_id) {
            panic!("requests {other} and {request_id} share order {order_id}");
        }
        order_ids.insert(request_id, order_id);
    }
    order_ids
}

/// Sends the orders again with their original msg_ids: the node must answer
/// each with the first outcome (created, same order id) and make no second
/// order. Returns the order ids by msg_id.
fn resend_orders(
    node: &mut GraceProcess,
    msg_ids: impl Iterator<Item = u64>,
) -> HashMap<u64, String> {
    let lines: Vec<String> = msg_ids.map(create_order).collect();
    node.call_many(&lines)
        .into_iter()
        .map(|(msg_id, body)| {
            assert_eq!(body["status"], "created", "repeat of {msg_id}: {body}");
            (msg_id, body["order_id"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn every_queued_order_is_created_exactly_once_after_kill_9() {
    const ORDERS: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");

    let mut node = GraceProcess::start(&data_dir, dir.path(), "first");
    node.set_order_service(false);
    let lines: Vec<String> = (1..=ORDERS).map(create_order).collect();
    let replies = node.call_many(&lines);
    let request_ids = queued_request_ids(replies.into_values());
    assert_eq!(request_ids.len() as u64, ORDERS);
    assert_eq!(node.get_queue()["depth"], ORDERS);
    let after_kill = node.kill_9();
    assert!(after_kill.is_empty(), "nothing was left to answer");

    // The service is up in a fresh process.
    let mut node = GraceProcess::start(&data_dir, dir.path(), "restarted");
    let queue = node.wait_until_drained();
    assert_eq!(queue["processed"], ORDERS, "{queue}");
    assert_eq!(queue["dead_letters"], 0, "{queue}");
    let order_ids = assert_all_created_once(&mut node, request_ids.values().copied());
    assert_eq!(order_ids.len() as u64, ORDERS);

    // Repeats after the restart find the same orders and make none.
    let repeated = resend_orders(&mut node, 1..=ORDERS);
    for (msg_id, order_id) in &repeated {
        assert_eq!(order_id, &order_ids[&request_ids[msg_id]], "msg {msg_id}");
    }
    assert_eq!(node.get_queue()["processed"], ORDERS);
    let status = node.queue_status();
    assert_eq!(status["durable"], true, "{status}");
    assert_eq!(status["depth"], 0);
    let stderr = node.finish();
    assert!(stderr.contains("resuming delivery"), "stderr: {stderr}");
}

/// Writes `ORDERS` orders from a thread, in small bursts and at most
/// `IN_FLIGHT` ahead of the replies read, so the node is still busy with the
/// stream when SIGKILL lands after `kill_after` replies. Every order
/// answered "queued" must be created exactly once after the restart; orders
/// never answered may or may not exist, but none twice.
fn kill_9_in_the_middle_of_a_burst(kill_after: u64) {
    const ORDERS: u64 = 2000;
    const BURST: u64 = 25;
    const IN_FLIGHT: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");

    let mut node = GraceProcess::start(&data_dir, dir.path(), "first");
    node.set_order_service(false);
    let stdin = node.stdin.take().unwrap();
    let read = Arc::new(AtomicU64::new(0));
    let writer = {
        let read = Arc::clone(&read);
        thread::spawn(move || {
            let mut stdin = BufWriter::new(stdin);
            for first in (1..=ORDERS).step_by(BURST as usize) {
                while first > read.load(Ordering::Acquire) + IN_FLIGHT {
                    thread::sleep(Duration::from_micros(200));
                }
                for msg_id in first..(first + BURST).min(ORDERS + 1) {
                    if writeln!(stdin, "{}", create_order(msg_id)).is_err() {
                        return;
                    }
                }
                // The node may be dead already: a broken pipe ends the stream.
                if stdin.flush().is_err() {
                    return;
                }
            }
        })
    };
    let mut answered = Vec::new();
    while (answered.len() as u64) < kill_after {
        answered.push(node.next_body());
        read.fetch_add(1, Ordering::Release);
    }
    answered.extend(node.kill_9());
    // Release the writer, which finds the pipe broken.
    read.store(ORDERS, Ordering::Release);
    writer.join().unwrap();
    let answered_count = answered.len() as u64;
    assert!(
        answered_count < ORDERS,
        "the kill landed after the stream ({answered_count} replies)"
    );
    let request_ids = queued_request_ids(answered);

    let mut node = GraceProcess::start(&data_dir, dir.path(), "restarted");
    let queue = node.wait_until_drained();
    let processed = queue["processed"].as_u64().unwrap();
    assert_eq!(queue["dead_letters"], 0, "{queue}");
    eprintln!(
        "SIGKILL after {kill_after} replies read: {answered_count} answered, {processed} journalled"
    );
    // Every answered order survived; some unanswered ones may have too.
    assert!(
        processed >= request_ids.len() as u64 && processed <= ORDERS,
        "{processed} delivered, {} answered",
        request_ids.len()
    );
    let order_ids = assert_all_created_once(&mut node, request_ids.values().copied());

    // Send the whole stream again: answered orders report their order,
    // orders that were journalled but never answered report theirs, and the
    // rest are created now. Never a second order for one msg_id, never an
    // order id shared between two.
    let repeated = resend_orders(&mut node, 1..=ORDERS);
    for (msg_id, request_id) in &request_ids {
        assert_eq!(repeated[msg_id], order_ids[request_id], "msg {msg_id}");
    }
    let distinct: HashSet<&String> = repeated.values().collect();
    assert_eq!(distinct.len() as u64, ORDERS, "an order id was shared");
    let queue = node.get_queue();
    assert_eq!(
        queue["processed"], processed,
        "repeats were answered from the journal, not queued again: {queue}"
    );
    assert_eq!(queue["depth"], 0);
    node.finish();
}

#[test]
fn kill_9_early_in_a_burst_loses_no_answered_order() {
    kill_9_in_the_middle_of_a_burst(150);
}

#[test]
fn kill_9_late_in_a_burst_loses_no_answered_order() {
    kill_9_in_the_middle_of_a_burst(1100);
}

#[test]
fn orders_left_queued_at_a_clean_exit_are_delivered_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut node = GraceProcess::start(&data_dir, dir.path(), "first");
    node.set_order_service(false);
    let replies = node.call_many(&(1..=10).map(create_order).collect::<Vec<_>>());
    let request_ids = queued_request_ids(replies.into_values());
    let stderr = node.finish();
    assert!(
        !stderr.contains("lost"),
        "a durable queue loses nothing: {stderr}"
    );

    let mut node = GraceProcess::start(&data_dir, dir.path(), "restarted");
    assert_eq!(node.wait_until_drained()["processed"], 10);
    assert_all_created_once(&mut node, request_ids.into_values());
    node.finish();
}

/// Asserts `body` is a code 11 error whose text contains `reason`.
fn assert_unavailable(body: &Value, reason: &str) {
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["code"], 11, "{body}");
    let text = body["text"].as_str().expect("error text");
    assert!(text.contains(reason), "the text names {reason:?}: {body}");
}

/// Asserts `body` is a "queued" reply that says it is not on disk.
fn assert_queued_in_memory(body: &Value) {
    assert_eq!(body["status"], "queued", "{body}");
    assert_eq!(body["durable"], false, "a volatile queue says so: {body}");
}

#[test]
fn second_process_on_the_same_journal_refuses_to_queue_and_never_denies_an_order_it_cannot_see() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut owner = GraceProcess::start(&data_dir, dir.path(), "owner");
    owner.set_order_service(false);
    let owned = queued_request_ids(owner.call_many(&[create_order(1)]).into_values());
    let status = owner.queue_status();
    assert_eq!(status["durable"], true, "{status}");
    let journal = status["journal"]
        .as_str()
        .expect("journal path")
        .to_string();
    assert!(Path::new(&journal).starts_with(&data_dir), "{journal}");

    let mut second = GraceProcess::start(&data_dir, dir.path(), "second");
    let status = second.queue_status();
    assert_eq!(status["durable"], false, "{status}");
    // The owner's order is in a journal this process cannot read: not a
    // definite "does not exist".
    let unseen = second.call(json!({"type": "get_order", "request_id": owned[&1]}));
    assert_unavailable(&unseen, "locked");
    // Degraded, not dead: reads answer, orders the service takes are
    // created, and an order it cannot send is refused, not falsely promised.
    assert_eq!(second.get_queue()["type"], "queue_status");
    second.set_order_service(false);
    assert_unavailable(&second.call_many(&[create_order(2)])[&2], "not durable");
    second.set_order_service(true);
    assert_eq!(
        second.call_many(&[create_order(3)])[&3]["status"],
        "created"
    );
    let stderr = second.finish();
    assert!(
        stderr.contains("not durable") && stderr.contains("locked"),
        "stderr says why the queue is not durable: {stderr}"
    );

    // Asked for, the queue is kept in memory, and every reply says so.
    let mut volatile = GraceProcess::start_with(
        &data_dir,
        dir.path(),
        "volatile",
        &["--volatile-queue"],
        RunAs::TestUser,
    );
    volatile.set_order_service(false);
    assert_queued_in_memory(&volatile.call_many(&[create_order(4)])[&4]);
    assert_queued_in_memory(&volatile.call_many(&[create_order(4)])[&4]);
    volatile.set_order_service(true);
    volatile.wait_until_drained();
    let stderr = volatile.finish();
    assert!(stderr.contains("in memory"), "stderr: {stderr}");

    // The owner kept its journal all along.
    assert_eq!(owner.queue_status()["durable"], true);
    owner.finish();
}

#[test]
fn unwritable_data_dir_without_a_journal_refuses_to_queue_unless_asked_for_a_volatile_queue() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("regular-file");
    fs::write(&not_a_dir, "not a directory").unwrap();
    let data_dir = not_a_dir.join("data");

    let mut node = GraceProcess::start(&data_dir, dir.path(), "unwritable");
    let status = node.queue_status();
    assert_eq!(status["durable"], false, "{status}");
    node.set_order_service(false);
    assert_unavailable(&node.call_many(&[create_order(1)])[&1], "not durable");
    node.set_order_service(true);
    assert_eq!(node.call_many(&[create_order(2)])[&2]["status"], "created");
    // No journal can exist here, so nothing is hidden: a miss is definite.
    let missing = node.call(json!({"type": "get_order", "request_id": 99}));
    assert_eq!(missing["code"], 20, "{missing}");
    let stderr = node.finish();
    assert!(stderr.contains("not durable"), "stderr: {stderr}");

    let mut node = GraceProcess::start_with(
        &data_dir,
        dir.path(),
        "volatile",
        &["--volatile-queue"],
        RunAs::TestUser,
    );
    node.set_order_service(false);
    let replies = node.call_many(&(1..=3).map(create_order).collect::<Vec<_>>());
    for body in replies.values() {
        assert_queued_in_memory(body);
    }
    assert_eq!(queued_request_ids(replies.into_values()).len(), 3);
    node.set_order_service(true);
    assert_eq!(node.wait_until_drained()["processed"], 3);
    let stderr = node.finish();
    assert!(stderr.contains("in memory"), "stderr: {stderr}");
}

#[test]
fn read_only_data_dir_shows_the_orders_on_disk_and_promises_no_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut node = GraceProcess::start(&data_dir, dir.path(), "writer");
    node.set_order_service(false);
    let queued = queued_request_ids(node.call_many(&[create_order(1)]).into_values());
    assert_eq!(queued[&1], 1);
    node.finish();
    make_read_only(dir.path(), &data_dir);

    // The order service is up at start, so the order on disk may be
    // delivered at once: visible either way, never "does not exist".
    let mut node =
        GraceProcess::start_with(&data_dir, dir.path(), "reader", &[], RunAs::Unprivileged);
    let found = node.call(json!({"type": "get_order", "request_id": 1}));
    assert_eq!(
        found["type"], "order_status",
        "the order on disk is visible: {found}"
    );
    assert_eq!(found["request_id"], 1, "{found}");
    let status = node.queue_status();
    assert_eq!(status["durable"], false, "{status}");
    assert_eq!(
        status["journal"],
        json!(data_dir.join("n1.journal.sqlite")),
        "{status}"
    );
    node.set_order_service(false);
    assert_unavailable(&node.call_many(&[create_order(2)])[&2], "not durable");
    // Resent, the order on disk is recognised, not made again.
    let repeat = node.call_many(&[create_order(1)])[&1].clone();
    assert_eq!(repeat["type"], "order_response", "{repeat}");
    if repeat["status"] == "queued" {
        assert_eq!(repeat["request_id"], 1, "{repeat}");
    }
    node.finish();

    let mut node = GraceProcess::start_with(
        &data_dir,
        dir.path(),
        "volatile reader",
        &["--volatile-queue"],
        RunAs::Unprivileged,
    );
    node.set_order_service(false);
    let body = node.call_many(&[create_order(3)])[&3].clone();
    assert_queued_in_memory(&body);
    assert_eq!(
        body["request_id"], 2,
        "request ids continue after the journal's: {body}"
    );
    node.finish();
}

/// Queues `orders` orders in a fresh journal under `data_dir` and exits.
fn journal_with_pending_orders(data_dir: &Path, log_dir: &Path, orders: u64) -> PathBuf {
    let mut node = GraceProcess::start(data_dir, log_dir, "filler");
    node.set_order_service(false);
    let lines: Vec<String> = (1..=orders).map(create_order).collect();
    assert_eq!(
        queued_request_ids(node.call_many(&lines).into_values()).len() as u64,
        orders
    );
    node.finish();
    let journal = data_dir.join("n1.journal.sqlite");
    assert!(journal.exists());
    assert!(
        !data_dir.join("n1.journal.sqlite-wal").exists(),
        "a clean exit leaves everything in the main file"
    );
    journal
}

/// The files `<journal name>.corrupt-<timestamp>` beside the journal.
fn moved_aside(data_dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("n1.journal.sqlite.corrupt-")
                && !name.ends_with("-wal")
                && !name.ends_with("-shm")
        })
        .collect()
}

/// The number in stderr's `salvaged=N`.
fn salvaged_count(stderr: &str) -> u64 {
    let at = stderr
        .find("salvaged=")
        .unwrap_or_else(|| panic!("stderr says how many rows were salvaged: {stderr}"));
    stderr[at + "salvaged=".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Starts a node on a damaged journal and checks what it must do: move the
/// file aside untouched, say so, salvage what it can, open a fresh durable
/// journal, and keep what it acknowledges from then on. Returns how many
/// orders were salvaged.
fn recover_from_damaged_journal(dir: &Path, data_dir: &Path, damaged: &[u8]) -> u64 {
    let mut node = GraceProcess::start(data_dir, dir, "on the damaged journal");
    node.set_order_service(false);
    let status = node.queue_status();
    assert_eq!(
        status["durable"], true,
        "a fresh journal is opened: {status}"
    );
    // The order service is up at start: some may be delivered already.
    let known =
        |status: &Value| status["depth"].as_u64().unwrap() + status["processed"].as_u64().unwrap();
    let recovered = known(&status);
    let queued = queued_request_ids(node.call_many(&[create_order(1_000_001)]).into_values());
    let stderr = node.finish();

    let aside = moved_aside(data_dir);
    assert_eq!(
        aside.len(),
        1,
        "the damaged journal is moved aside: {aside:?}\n{stderr}"
    );
    assert_eq!(fs::read(&aside[0]).unwrap(), damaged, "and left as it was");
    assert!(
        stderr.contains(&*aside[0].to_string_lossy()) && stderr.contains("integrity"),
        "stderr says where it went and why: {stderr}"
    );
    let salvaged = salvaged_count(&stderr);
    assert_eq!(recovered, salvaged, "the salvaged orders are known again");

    let mut node = GraceProcess::start(data_dir, dir, "after the damage");
    node.set_order_service(false);
    let request_id = queued[&1_000_001];
    let found = node.call(json!({"type": "get_order", "request_id": request_id}));
    assert_eq!(
        found["type"], "order_status",
        "acknowledged after the damage, kept: {found}"
    );
    assert_eq!(known(&node.queue_status()), salvaged + 1);
    node.finish();
    assert_eq!(
        moved_aside(data_dir).len(),
        1,
        "the fresh journal passes its check"
    );
    salvaged
}

#[test]
fn journal_of_garbage_is_moved_aside_and_a_fresh_durable_one_opened() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    fs::create_dir_all(&data_dir).unwrap();
    let garbage = b"this is not a journal\n".repeat(1000);
    fs::write(data_dir.join("n1.journal.sqlite"), &garbage).unwrap();
    assert_eq!(
        recover_from_damaged_journal(dir.path(), &data_dir, &garbage),
        0
    );
}

#[test]
fn half_truncated_journal_is_moved_aside_and_its_readable_orders_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let journal = journal_with_pending_orders(&data_dir, dir.path(), 2000);
    let mut bytes = fs::read(&journal).unwrap();
    bytes.truncate(bytes.len() / 2);
    fs::write(&journal, &bytes).unwrap();
    let salvaged = recover_from_damaged_journal(dir.path(), &data_dir, &bytes);
    assert!(salvaged < 2000, "{salvaged}");
}

#[test]
fn journal_with_a_zeroed_page_is_moved_aside_and_its_readable_orders_salvaged() {
    const PAGE: usize = 4096;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let journal = journal_with_pending_orders(&data_dir, dir.path(), 2000);
    let mut bytes = fs::read(&journal).unwrap();
    let pages = bytes.len() / PAGE;
    assert!(pages > 8, "{pages} pages");
    // A page in the middle of the orders table holds some of the orders.
    let middle = pages / 2;
    bytes[middle * PAGE..(middle + 1) * PAGE].fill(0);
    fs::write(&journal, &bytes).unwrap();
    let salvaged = recover_from_damaged_journal(dir.path(), &data_dir, &bytes);
    assert!(salvaged < 2000, "the page's orders are lost: {salvaged}");
    assert!(
        salvaged > 1000,
        "the orders on other pages are salvaged: {salvaged}"
    );
}

#[test]
fn hand_edited_row_is_reported_and_skipped_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let journal = journal_with_pending_orders(&data_dir, dir.path(), 2);
    let edit = |sql: &str| {
        let conn = rusqlite::Connection::open(&journal).unwrap();
        conn.execute(sql, []).unwrap();
    };
    edit("UPDATE orders SET status = 'created', order_id = NULL WHERE request_id = 1");

    let mut node = GraceProcess::start(&data_dir, dir.path(), "on the edited journal");
    node.set_order_service(false);
    let replies = node.call_many(&[
        create_order(1),
        create_order(2),
        request(json!({"type": "echo", "msg_id": 3, "echo": 3})),
    ]);
    // The valid row is recognised: the repeat is its order, still queued,
    // or already delivered if the restarted node delivered it before the
    // order service was switched off (recovered orders are due at start;
    // on a busy machine the node can get there before the test's first
    // line). Not recognised, it would be a new order, queued under a new id.
    let repeat = &replies[&2];
    assert!(
        (repeat["status"] == "queued" && repeat["request_id"] == 2)
            || (repeat["status"] == "created" && repeat["order_id"].is_string()),
        "the valid row is recognised: {repeat}"
    );
    assert_eq!(replies[&3]["echo"], 3);
    assert_eq!(replies[&1]["status"], "queued", "{}", replies[&1]);
    assert_ne!(
        replies[&1]["request_id"], 1,
        "the skipped row's request id is not handed out again"
    );
    let stderr = node.finish();
    assert!(
        stderr
            .lines()
            .any(|line| line.contains("skipp") && line.contains("request_id=1")),
        "stderr reports the bad row: {stderr}"
    );
    let conn = rusqlite::Connection::open(&journal).unwrap();
    let status: String = conn
        .query_row(
            "SELECT status FROM orders WHERE request_id = 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        status, "created",
        "the bad row is left for the operator, not overwritten"
    );
}
