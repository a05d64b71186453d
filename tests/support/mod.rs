//! Shared helpers for the black-box tests: spawn the real `grace` binary in a
//! fresh temporary directory, talk to it over stdin/stdout, and look at what
//! it said on stderr.
//!
//! Every node runs with its working directory in its own tempdir and its
//! `--data-dir` inside it, so journals never leak between tests. Replies are
//! read by a background thread and handed over a channel, so a test can wait
//! for one with a timeout instead of blocking forever on a silent node.

#![allow(dead_code)] // each test file uses its own share of the helpers

pub mod gateway;
pub mod node;
pub mod process;
pub mod upstream;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a test waits for a reply it expects before giving up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits for the node to exit after its input ended.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// The client every request comes from, unless a test says otherwise.
pub const CLIENT: &str = "client";
/// The node every request is addressed to, unless a test says otherwise.
pub const NODE: &str = "api";

/// The path of the binary under test.
pub fn grace_bin() -> &'static str {
    env!("CARGO_BIN_EXE_grace")
}

/// A request line from [`CLIENT`] to [`NODE`] carrying `body`.
pub fn request(body: Value) -> String {
    request_from(CLIENT, NODE, body)
}

/// A request line from `src` to `dest` carrying `body`.
pub fn request_from(src: &str, dest: &str, body: Value) -> String {
    serde_json::json!({ "src": src, "dest": dest, "body": body }).to_string()
}

/// Parses a reply line, failing the test if it is not one JSON object.
pub fn parse_reply(line: &str) -> Value {
    let value: Value = serde_json::from_str(line)
        .unwrap_or_else(|err| panic!("stdout line is not JSON ({err}): {}", preview(line)));
    assert!(
        value.is_object(),
        "stdout line is not a JSON object: {}",
        preview(line)
    );
    value
}

/// The reply's `body` exactly as the node wrote it (key order included).
pub fn body_text(line: &str) -> String {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        body: &'a RawValue,
    }
    let envelope: Envelope = serde_json::from_str(line)
        .unwrap_or_else(|err| panic!("reply has no body ({err}): {}", preview(line)));
    envelope.body.get().to_string()
}

/// The keys of the reply body, in the order the node wrote them.
pub fn body_keys(line: &str) -> Vec<String> {
    let body = body_text(line);
    let mut keys = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_str(&body);
    struct KeyCollector<'k>(&'k mut Vec<String>);
    impl<'de> serde::de::Visitor<'de> for KeyCollector<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<serde::de::IgnoredAny>()?;
                self.0.push(key);
            }
            Ok(())
        }
    }
    serde::Deserializer::deserialize_map(&mut deserializer, KeyCollector(&mut keys))
        .expect("body is an object");
    keys
}

/// A line shortened for a failure message.
pub fn preview(line: &str) -> String {
    const LIMIT: usize = 300;
    if line.len() <= LIMIT {
        return line.to_string();
    }
    let mut end = LIMIT;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &line[..end], line.len())
}

/// How to start a node: extra flags and environment.
#[derive(Debug, Clone, Default)]
pub struct Grace {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    close_stdout: bool,
    close_stderr: bool,
    data_dir: Option<PathBuf>,
}

impl Grace {
    /// A node with default flags (plus a `--data-dir` in its tempdir).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds command-line arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the node.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Uses `dir` as `--data-dir` instead of a fresh one, so a restarted
    /// node finds the journal of the one before.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Closes the read end of the node's stdout right after start, as a
    /// reader that went away would.
    pub fn with_stdout_closed(mut self) -> Self {
        self.close_stdout = true;
        self
    }

    /// Closes the read end of the node's stderr right after start, as a
    /// supervisor that stopped collecting logs would.
    pub fn with_stderr_closed(mut self) -> Self {
        self.close_stderr = true;
        self
    }

    /// Starts the node.
    pub fn spawn(self) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let mut command = Command::new(grace_bin());
        command
            .current_dir(dir.path())
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&self.args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in &self.envs {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn grace");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout piped");
        let (sender, replies) = mpsc::channel();
        let stdout_reader = if self.close_stdout {
            drop(stdout);
            None
        } else {
            Some(thread::spawn(move || {
                let mut reader = BufReader::new(stdout);
                loop {
                    let mut line = Vec::new();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            let text = String::from_utf8(line).unwrap_or_else(|err| {
                                panic!("stdout is not UTF-8: {err}");
                            });
                            if sender.send(text).is_err() {
                                return;
                            }
                        }
                    }
                }
            }))
        };
        let stderr = child.stderr.take().expect("stderr piped");
        let (stderr_text, stderr_reader) = if self.close_stderr {
            drop(stderr);
            (Arc::default(), None)
        } else {
            let (text, reader) = process::collect(stderr);
            (text, Some(reader))
        };
        Node {
            child,
            stdin,
            replies,
            stdout_reader,
            stderr_reader,
            stderr: stderr_text,
            dir,
        }
    }

    /// Starts a node, feeds it `input`, closes stdin and waits for it to exit.
    pub fn run(self, input: &[u8]) -> Finished {
        let mut node = self.spawn();
        let mut stdin = node.stdin.take().expect("stdin open");
        let input = input.to_vec();
        // A writer thread, so a node that answers while we still write never
        // blocks on a full stdout pipe.
        let writer = thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let finished = node.finish();
        writer.join().expect("writer thread");
        finished
    }

    /// Runs the binary with these arguments only (no `--data-dir`, stdin
    /// empty), for `--help` and start-up errors.
    pub fn output_of(args: &[&str]) -> std::process::Output {
        let dir = tempfile::tempdir().expect("tempdir");
        Command::new(grace_bin())
            .current_dir(dir.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run grace")
    }
}

/// A running node.
pub struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: Receiver<String>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr_reader: Option<JoinHandle<()>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    dir: TempDir,
}

/// A node that has exited, with everything it wrote.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Every stdout line, without its `\n`.
    pub lines: Vec<String>,
    pub stderr: String,
}

impl Finished {
    /// Every stdout line parsed; fails the test if one is not a JSON object.
    pub fn replies(&self) -> Vec<Value> {
        self.lines.iter().map(|line| parse_reply(line)).collect()
    }

    /// The reply bodies, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.replies()
            .into_iter()
            .map(|reply| reply["body"].clone())
            .collect()
    }

    /// The body answering `msg_id`; fails unless there is exactly one.
    pub fn body_for(&self, msg_id: u64) -> Value {
        let matching: Vec<Value> = self
            .bodies()
            .into_iter()
            .filter(|body| body["in_reply_to"] == msg_id)
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "expected exactly one reply to msg_id {msg_id}; stdout:\n{}\nstderr:\n{}",
            self.lines.join("\n"),
            self.stderr
        );
        matching.into_iter().next().unwrap()
    }

    /// Asserts a clean exit: status 0, every stdout line a JSON object, no panic.
    pub fn assert_clean_exit(&self) {
        for line in &self.lines {
            parse_reply(line);
        }
        assert!(
            !self.stderr.contains("panicked"),
            "node panicked:\n{}",
            self.stderr
        );
        assert!(
            self.status.success(),
            "node exited with {}; stderr:\n{}",
            self.status,
            self.stderr
        );
    }
}

impl Node {
    /// The node's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one line (a `\n` is appended) and flushes it.
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes())
            .unwrap_or_else(|err| panic!("cannot write to the node: {err}"));
    }

    /// Sends a request from [`CLIENT`] to [`NODE`] with `body`.
    pub fn send_body(&mut self, body: Value) {
        self.send(&request(body));
    }

    /// Sends bytes as they are; an error means the node closed its stdin.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(bytes)?;
        stdin.flush()
    }

    /// Sends `body` and waits for the next reply line.
    pub fn call(&mut self, body: Value) -> String {
        self.send_body(body);
        self.recv_line()
    }

    /// Sends `body` and waits for the next reply, parsed.
    pub fn call_body(&mut self, body: Value) -> Value {
        let line = self.call(body);
        parse_reply(&line)["body"].clone()
    }

    /// The next reply line, waiting up to [`REPLY_TIMEOUT`].
    pub fn recv_line(&mut self) -> String {
        self.recv_line_within(REPLY_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "no reply within {REPLY_TIMEOUT:?}; stderr:\n{}",
                self.stderr()
            )
        })
    }

    /// The next reply line if one arrives within `timeout`.
    pub fn recv_line_within(&mut self, timeout: Duration) -> Option<String> {
        match self.replies.recv_timeout(timeout) {
            Ok(line) => Some(line.trim_end_matches('\n').to_string()),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The next reply, parsed.
    pub fn recv(&mut self) -> Value {
        let line = self.recv_line();
        parse_reply(&line)
    }

    /// The next reply's body.
    pub fn recv_body(&mut self) -> Value {
        self.recv()["body"].clone()
    }

    /// Asserts that no reply arrives within `wait`.
    pub fn assert_silent_for(&mut self, wait: Duration) {
        if let Some(line) = self.recv_line_within(wait) {
            panic!("unexpected reply: {}", preview(&line));
        }
    }

    /// What the node has written to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until stderr contains `needle`, up to [`REPLY_TIMEOUT`].
    pub fn wait_for_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let text = self.stderr();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "stderr never mentioned {needle:?}:\n{text}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status if the node has exited already.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Sends a signal (`"TERM"`, `"INT"`, ...) to the node with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Takes the node's stdin, for a writer thread of the test's own (a
    /// flood that never stops, say).
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("stdin still open")
    }

    /// The node's peak resident memory so far, in bytes (`VmHWM`), or
    /// `None` once it has exited.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kilobytes * 1024)
    }

    /// Closes the node's stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Sends SIGTERM to the node.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Waits for the node to exit on its own (stdin is left as it is).
    pub fn wait(mut self) -> Finished {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "node did not exit within {EXIT_TIMEOUT:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        self.stdin.take();
        if let Some(reader) = self.stdout_reader.take() {
            reader.join().expect("stdout reader");
        }
        if let Some(reader) = self.stderr_reader.take() {
            reader.join().expect("stderr reader");
        }
        let lines = self
            .replies
            .try_iter()
            .map(|line| line.trim_end_matches('\n').to_string())
            .collect();
        Finished {
            status,
            lines,
            stderr: self.stderr(),
        }
    }

    /// Closes stdin and waits for the node to exit; returns the replies not
    /// yet received and everything on stderr.
    pub fn finish(mut self) -> Finished {
        self.close_stdin();
        self.wait()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A test that failed half-way must not leave its node running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The stderr lines that mention input line `line_no` (as `line=N`,
/// `line N` or `line: N`), for checking that a skipped input was reported
/// once, with where it was.
pub fn stderr_lines_about_input_line(stderr: &str, line_no: u64) -> Vec<&str> {
    let number = line_no.to_string();
    stderr
        .lines()
        .filter(|text| {
            ["line=", "line ", "line: "].iter().any(|prefix| {
                let needle = format!("{prefix}{number}");
                text.match_indices(&needle).any(|(at, _)| {
                    let after = text[at + needle.len()..].chars().next();
                    !after.is_some_and(|c| c.is_ascii_digit())
                })
            })
        })
        .collect()
}
