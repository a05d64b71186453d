//! The durable queue against real crashes: the `grace` binary is started,
//! fed orders while the order service is down, killed with SIGKILL, and
//! started again on the same data dir. Every order that got a "queued" reply
//! must be created exactly once after the restart: none lost, none doubled.
//!
//! Also the degraded cases: a second process on the same journal, and a data
//! dir that cannot be written, run with an in-memory queue and say so.

use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
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
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_grace"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--node-id", NODE_ID])
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).unwrap())
            .spawn()
            .expect("grace starts");
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

#[test]
fn second_process_on_the_same_journal_runs_with_an_in_memory_queue_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut owner = GraceProcess::start(&data_dir, dir.path(), "owner");
    // Answering at all means the owner opened (and locked) its journal.
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
    // Degraded, not dead: it still takes orders.
    second.set_order_service(false);
    let replies = second.call_many(&[create_order(1)]);
    queued_request_ids(replies.into_values());
    second.set_order_service(true);
    second.wait_until_drained();
    let stderr = second.finish();
    assert!(
        stderr.contains("in memory") && stderr.contains("locked"),
        "stderr says why the queue is not durable: {stderr}"
    );

    // The owner kept its journal all along.
    assert_eq!(owner.queue_status()["durable"], true);
    owner.finish();
}

#[test]
fn unwritable_data_dir_gives_an_in_memory_queue_that_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("regular-file");
    fs::write(&not_a_dir, "not a directory").unwrap();
    let data_dir = not_a_dir.join("data");

    let mut node = GraceProcess::start(&data_dir, dir.path(), "unwritable");
    let status = node.queue_status();
    assert_eq!(status["durable"], false, "{status}");
    node.set_order_service(false);
    let replies = node.call_many(&(1..=3).map(create_order).collect::<Vec<_>>());
    assert_eq!(queued_request_ids(replies.into_values()).len(), 3);
    node.set_order_service(true);
    assert_eq!(node.wait_until_drained()["processed"], 3);
    let stderr = node.finish();
    assert!(stderr.contains("in memory"), "stderr: {stderr}");
}
