//! Helpers for the gateway's black-box tests: start the real `grace serve`
//! on free loopback ports with a configuration written to a file, learn its
//! addresses from its one stdout line, talk to its public and admin
//! listeners over real HTTP (or raw bytes, where a test needs to say what a
//! well-behaved client never would), stop it with a signal or `kill -9`,
//! and start it again on the same data directory.
//!
//! Where a test needs an upstream that misbehaves in ways
//! `grace demo-upstream` cannot (a `Vary` header, `no-store`, hop-by-hop
//! headers, a look at exactly what grace forwarded), [`ScriptedUpstream`]
//! is a plain-std HTTP/1.1 server whose answers the test writes, and which
//! records every request it was sent.
//!
//! Every wait is bounded by [`GATEWAY_TIMEOUT`] and fails the test with
//! grace's stderr when what it waits for does not come; nothing sleeps to
//! let something happen that can be polled for.

pub use super::process::Exited;
use super::process::ServerProcess;
use super::upstream::{Reply, http_agent};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Longest a test waits for an answer it expects, the start-up line, a
/// state to be reached, or the process to exit. Generous: the machine the
/// tests run on is shared and loaded.
pub const GATEWAY_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(10);

/// How to start `grace serve`: a configuration, flags and environment.
#[derive(Debug, Clone, Default)]
pub struct GatewayBuilder {
    config: Option<String>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
    addresses_from_env: bool,
}

impl GatewayBuilder {
    /// Runs with this configuration text (written to a file and passed
    /// with `--config`).
    pub fn config(mut self, text: &str) -> Self {
        self.config = Some(text.to_string());
        self
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

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Uses `dir` as `--data-dir` (instead of one of its own), so a
    /// restarted gateway finds the journal of the one before.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Leaves out `--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0`.
    pub fn addresses_from_env(mut self) -> Self {
        self.addresses_from_env = true;
        self
    }

    fn command(&self, dir: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_grace"));
        command.current_dir(dir).arg("serve");
        if !self.addresses_from_env {
            command.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
        }
        let data_dir = self.data_dir.clone().unwrap_or_else(|| dir.join("data"));
        command.arg("--data-dir").arg(data_dir);
        if let Some(config) = &self.config {
            let path = dir.join("grace.toml");
            std::fs::write(&path, config).expect("write the configuration");
            command.arg("--config").arg(path);
        }
        command
            .args(&self.args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in &self.envs {
            command.env(key, value);
        }
        command
    }

    /// Starts it and waits for the line that says where it listens.
    pub fn spawn(&self) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let process = ServerProcess::start("grace serve", self.command(dir.path()));
        let line = process
            .stdout_lines
            .recv_timeout(GATEWAY_TIMEOUT)
            .unwrap_or_else(|_| {
                panic!(
                    "grace serve printed no addresses within {GATEWAY_TIMEOUT:?}; stderr:\n{}",
                    process.stderr()
                )
            });
        let addresses: Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("start-up line is not JSON ({err}): {line}"));
        let address = |key: &str| -> SocketAddr {
            addresses[key]
                .as_str()
                .and_then(|text| text.parse().ok())
                .unwrap_or_else(|| panic!("start-up line has no {key:?} address: {line}"))
        };
        Gateway {
            listen: address("listen"),
            admin: address("admin"),
            start_line: line,
            agent: http_agent(),
            process,
            dir,
        }
    }

    /// Runs it expecting it to exit on its own (a start-up error).
    pub fn run_to_exit(&self) -> Exited {
        let dir = tempfile::tempdir().expect("tempdir");
        ServerProcess::start("grace serve", self.command(dir.path())).wait(GATEWAY_TIMEOUT)
    }
}

/// A running `grace serve`.
pub struct Gateway {
    listen: SocketAddr,
    admin: SocketAddr,
    start_line: String,
    agent: ureq::Agent,
    process: ServerProcess,
    /// Its working directory (configuration file, default data dir).
    dir: TempDir,
}

/// A header for a request: name and value.
pub type Header<'a> = (&'a str, &'a str);

impl Gateway {
    /// How to start one.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// One with `config`, every flag at its default.
    pub fn with_config(config: &str) -> Gateway {
        Gateway::builder().config(config).spawn()
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn start_line(&self) -> &str {
        &self.start_line
    }

    /// Its working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of `path` on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// The URL of `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// GET `path` on the public listener.
    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", &self.url(path), &[], None)
    }

    /// GET `path` with `headers`.
    pub fn get_with(&self, path: &str, headers: &[Header]) -> Reply {
        self.request("GET", &self.url(path), headers, None)
    }

    /// POST `body` (JSON) to `path` with `headers`.
    pub fn post(&self, path: &str, body: &str, headers: &[Header]) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.request("POST", &self.url(path), &all, Some(body))
    }

    /// GET `path` on the admin listener.
    pub fn admin_get(&self, path: &str) -> Reply {
        self.request("GET", &self.admin_url(path), &[], None)
    }

    /// `method` `path` with `body` on the admin listener.
    pub fn admin_send(&self, method: &str, path: &str, body: &str, headers: &[Header]) -> Reply {
        self.request(method, &self.admin_url(path), headers, Some(body))
    }

    /// `GET /status` on the admin listener, as JSON.
    pub fn status(&self) -> Value {
        self.status_with(&[])
    }

    /// `GET /status` with `headers` (a token), as JSON.
    pub fn status_with(&self, headers: &[Header]) -> Value {
        let reply = self.request("GET", &self.admin_url("/status"), headers, None);
        assert_eq!(reply.status, 200, "GET /status: {reply:?}");
        reply.json()
    }

    /// The status of service `name` from `GET /status`.
    pub fn service_status(&self, name: &str) -> Value {
        let status = self.status();
        status["services"]
            .as_array()
            .and_then(|services| services.iter().find(|service| service["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no service {name:?} in /status: {status}"))
    }

    /// `PUT /mode` with `body`; fails the test unless accepted.
    pub fn set_mode(&self, body: Value) -> Value {
        let reply = self.admin_send("PUT", "/mode", &body.to_string(), &[]);
        assert_eq!(reply.status, 200, "PUT /mode {body}: {reply:?}");
        reply.json()
    }

    /// `PUT /features/{name}`; fails the test unless accepted.
    pub fn set_feature(&self, name: &str, enabled: bool) -> Value {
        let body = serde_json::json!({ "enabled": enabled }).to_string();
        let reply = self.admin_send("PUT", &format!("/features/{name}"), &body, &[]);
        assert_eq!(reply.status, 200, "PUT /features/{name}: {reply:?}");
        reply.json()
    }

    /// `POST /queue/process`, as JSON.
    pub fn process_queue(&self) -> Value {
        let reply = self.admin_send("POST", "/queue/process", "", &[]);
        assert_eq!(reply.status, 200, "POST /queue/process: {reply:?}");
        reply.json()
    }

    /// `GET /metrics`, as text.
    pub fn metrics(&self) -> String {
        let reply = self.admin_get("/metrics");
        assert_eq!(reply.status, 200, "GET /metrics: {reply:?}");
        reply.body
    }

    /// Any request, with the test's client (statuses are answers).
    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[Header],
        body: Option<&str>,
    ) -> Reply {
        send(&self.agent, method, url, headers, body)
    }

    /// Polls `GET /status` until `check` holds; returns it.
    pub fn wait_for_status(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        self.wait_until(what, || {
            let status = self.status();
            check(&status).then_some(status)
        })
    }

    /// Polls `probe` until it gives something; fails the test with grace's
    /// stderr after [`GATEWAY_TIMEOUT`].
    pub fn wait_until<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + GATEWAY_TIMEOUT;
        loop {
            if let Some(found) = probe() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {what} within {GATEWAY_TIMEOUT:?}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(POLL);
        }
    }

    /// What it has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Sends a signal (`"TERM"`, `"INT"`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// `kill -9`, and waits until it is gone.
    pub fn kill9(self) -> Exited {
        self.signal("KILL");
        self.wait()
    }

    /// Waits for it to exit.
    pub fn wait(self) -> Exited {
        self.process.wait(GATEWAY_TIMEOUT)
    }
}

/// Sends one request with `agent`, reading the whole answer; fails the
/// test if there is none.
pub fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[Header],
    body: Option<&str>,
) -> Reply {
    try_send(agent, method, url, headers, body).unwrap_or_else(|err| panic!("{err}"))
}

/// Sends one request with `agent`: the whole answer, or why there is none
/// (the connection refused or cut).
pub fn try_send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[Header],
    body: Option<&str>,
) -> Result<Reply, String> {
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let what = format!("{method} {url}");
    let response = match body {
        Some(body) => agent.run(
            builder
                .body(body.to_string())
                .map_err(|err| format!("{what}: {err}"))?,
        ),
        None => agent.run(builder.body(()).map_err(|err| format!("{what}: {err}"))?),
    }
    .map_err(|err| format!("{what}: {err}"))?;
    let status = response.status().as_u16();
    let (parts, mut body) = response.into_parts();
    let body = body
        .read_to_string()
        .map_err(|err| format!("{what}: reading the body: {err}"))?;
    Ok(Reply {
        status,
        headers: parts.headers,
        body,
    })
}

/// A configuration with one service `name` at `url` (extra service
/// settings in `service_extra`, TOML lines) and `routes` (TOML text).
pub fn one_service_config(name: &str, url: &str, service_extra: &str, routes: &str) -> String {
    format!("[services.{name}]\nurl = \"{url}\"\n{service_extra}\n{routes}")
}

/// A `[[routes]]` table.
pub fn route(method: &str, path: &str, service: &str, extra: &str) -> String {
    format!(
        "\n[[routes]]\nmethod = \"{method}\"\npath = \"{path}\"\nservice = \"{service}\"\n{extra}\n"
    )
}

// ---------------------------------------------------------------------------
// Raw HTTP, for what a well-behaved client library never sends.

/// An HTTP/1.1 response read off a socket.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection, written and read by hand.
pub struct RawConnection {
    reader: BufReader<TcpStream>,
}

impl RawConnection {
    pub fn open(address: SocketAddr) -> RawConnection {
        let stream = TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(GATEWAY_TIMEOUT))
            .expect("read timeout");
        RawConnection {
            reader: BufReader::new(stream),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Writes `bytes` as they are.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Reads one response (Content-Length or chunked body, or to the
    /// end); `None` if the connection closed before a status line.
    pub fn read_response(&mut self) -> Option<RawResponse> {
        read_message_head(&mut self.reader).map(|(start, headers)| {
            let status = start
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .unwrap_or_else(|| panic!("bad status line {start:?}"));
            let body = read_body(&mut self.reader, &headers, BodyEnd::CloseDelimited);
            RawResponse {
                status,
                headers,
                body,
            }
        })
    }

    /// Whether something arrived (bytes, or the end of the connection)
    /// within `within`; nothing is consumed.
    pub fn has_news_within(&mut self, within: Duration) -> bool {
        self.reader
            .get_ref()
            .set_read_timeout(Some(within))
            .expect("timeout");
        let news = self.reader.fill_buf().is_ok();
        self.reader
            .get_ref()
            .set_read_timeout(Some(GATEWAY_TIMEOUT))
            .expect("timeout");
        news
    }

    /// Whether the other side has closed (a read gives end of file or a
    /// reset) within `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let stream = self.reader.get_ref();
        stream.set_read_timeout(Some(within)).expect("timeout");
        let mut byte = [0u8; 1];
        let result = self.reader.read(&mut byte);
        self.reader
            .get_ref()
            .set_read_timeout(Some(GATEWAY_TIMEOUT))
            .expect("timeout");
        match result {
            Ok(0) => true,
            Ok(_) => false,
            Err(err) => !matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    }
}

/// Sends `request` on a new connection and reads one response.
pub fn raw_exchange(address: SocketAddr, request: &[u8]) -> RawResponse {
    let mut connection = RawConnection::open(address);
    connection.write(request).expect("write the request");
    connection
        .read_response()
        .expect("the connection closed without a response")
}

/// How a body without a length ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    /// A response: it runs to the end of the connection.
    CloseDelimited,
    /// A request: there is none.
    Empty,
}

/// The start line and headers (names lower-cased) of one message.
fn read_message_head(reader: &mut impl BufRead) -> Option<(String, Vec<(String, String)>)> {
    let mut start = String::new();
    loop {
        start.clear();
        match reader.read_line(&mut start) {
            Ok(0) | Err(_) => return None,
            Ok(_) if start.trim().is_empty() => continue,
            Ok(_) => break,
        }
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    Some((start.trim_end().to_string(), headers))
}

fn read_body(reader: &mut impl BufRead, headers: &[(String, String)], end: BodyEnd) -> Vec<u8> {
    let value = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.to_ascii_lowercase())
    };
    if value("transfer-encoding").is_some_and(|coding| coding.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap_or(0) == 0 {
                return body;
            }
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if size == 0 {
                let mut trailer = String::new();
                while reader.read_line(&mut trailer).unwrap_or(0) > 2 {
                    trailer.clear();
                }
                return body;
            }
            let mut chunk = vec![0u8; size + 2];
            if reader.read_exact(&mut chunk).is_err() {
                return body;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    if let Some(length) = value("content-length").and_then(|length| length.parse().ok()) {
        let mut body = vec![0u8; length];
        let _ = reader.read_exact(&mut body);
        return body;
    }
    let mut body = Vec::new();
    if end == BodyEnd::CloseDelimited {
        let _ = reader.read_to_end(&mut body);
    }
    body
}

// ---------------------------------------------------------------------------
// A scripted upstream.

/// A request the scripted upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which connection it came on (0 for the first accepted).
    pub connection: usize,
}

impl Recorded {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the scripted upstream does with a request.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// Writes these bytes (a whole response) and keeps the connection.
    Respond(Vec<u8>),
    /// Writes these bytes, then closes the connection without saying so
    /// (as an upstream does when a keep-alive connection idles out).
    RespondAndClose(Vec<u8>),
    /// Holds the request unanswered until the upstream is dropped.
    Hang,
}

/// A response with `status`, `headers` and `body`, `Content-Length` added.
pub fn canned(status: u16, headers: &[Header], body: &str) -> Scripted {
    let mut text = format!("HTTP/1.1 {status} Scripted\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    Scripted::Respond(text.into_bytes())
}

type Script = Box<dyn FnMut(&Recorded) -> Scripted + Send>;

/// An HTTP/1.1 upstream on a free loopback port that answers what its
/// script says and records every request (keep-alive: many requests per
/// connection).
pub struct ScriptedUpstream {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    connections: Arc<AtomicUsize>,
    script: Arc<Mutex<Script>>,
    stopped: Arc<AtomicBool>,
}

impl ScriptedUpstream {
    /// Starts one answering every request with `script`.
    pub fn start(script: impl FnMut(&Recorded) -> Scripted + Send + 'static) -> ScriptedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the scripted upstream");
        let address = listener.local_addr().expect("address");
        let upstream = ScriptedUpstream {
            address,
            requests: Arc::default(),
            connections: Arc::default(),
            script: Arc::new(Mutex::new(Box::new(script))),
            stopped: Arc::default(),
        };
        let (requests, connections, script, stopped) = (
            Arc::clone(&upstream.requests),
            Arc::clone(&upstream.connections),
            Arc::clone(&upstream.script),
            Arc::clone(&upstream.stopped),
        );
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let number = connections.fetch_add(1, Ordering::SeqCst);
                let (requests, script, stopped) = (
                    Arc::clone(&requests),
                    Arc::clone(&script),
                    Arc::clone(&stopped),
                );
                thread::spawn(move || serve_connection(stream, number, requests, script, stopped));
            }
        });
        upstream
    }

    /// Starts one answering every request with the same `response`.
    pub fn always(response: Scripted) -> ScriptedUpstream {
        ScriptedUpstream::start(move |_| response.clone())
    }

    /// Its base URL, for a configuration.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Answers from now on with `script`.
    pub fn set_script(&self, script: impl FnMut(&Recorded) -> Scripted + Send + 'static) {
        *self.script.lock().unwrap() = Box::new(script);
    }

    /// Every request so far, in the order they arrived.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits until `count` requests have arrived; returns them all.
    pub fn wait_for_requests(&self, count: usize) -> Vec<Recorded> {
        let deadline = Instant::now() + GATEWAY_TIMEOUT;
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "the scripted upstream got {} requests, not {count}: {requests:?}",
                requests.len()
            );
            thread::sleep(POLL);
        }
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so it sees the flag.
        let _ = TcpStream::connect(self.address);
    }
}

fn serve_connection(
    stream: TcpStream,
    number: usize,
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<Script>>,
    stopped: Arc<AtomicBool>,
) {
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    while let Some((start, headers)) = read_message_head(&mut reader) {
        let body = read_body(&mut reader, &headers, BodyEnd::Empty);
        let mut parts = start.split_whitespace();
        let recorded = Recorded {
            method: parts.next().unwrap_or_default().to_string(),
            target: parts.next().unwrap_or_default().to_string(),
            headers,
            body,
            connection: number,
        };
        requests.lock().unwrap().push(recorded.clone());
        let answer = (script.lock().unwrap())(&recorded);
        match answer {
            Scripted::Respond(bytes) => {
                if writer.write_all(&bytes).is_err() {
                    return;
                }
            }
            Scripted::RespondAndClose(bytes) => {
                let _ = writer.write_all(&bytes);
                return;
            }
            Scripted::Hang => {
                while !stopped.load(Ordering::SeqCst) {
                    thread::sleep(POLL);
                }
                return;
            }
        }
    }
}

/// Counts of the values of `key` in a list of JSON objects.
pub fn tally<'a>(items: impl IntoIterator<Item = &'a Value>, key: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for item in items {
        *counts.entry(item[key].to_string()).or_default() += 1;
    }
    counts
}

/// The demo API's routes (`grace serve`'s built-in ones) in front of the
/// HTTP service at `url`, with `service_extra` (TOML lines, e.g.
/// `timeout_ms = 300` or `breaker = { failure_threshold = 2 }`) in every
/// service's table.
pub fn demo_config(url: &str, service_extra: &str) -> String {
    let placeholder = "url = \"http://127.0.0.1:9001\"";
    let routes = grace::gateway::config::DEMO_ROUTES;
    assert_eq!(routes.matches(placeholder).count(), 3, "{routes}");
    routes.replace(placeholder, &format!("url = \"{url}\"\n{service_extra}"))
}
