//! Helpers for tests that need the demo upstream (`grace demo-upstream`):
//! start it on free ports, learn them from its one stdout line, talk to it
//! over real HTTP, set its faults and read its statistics.
//!
//! The gateway's tests start one of these behind `grace serve` and break it
//! on purpose; its own tests (`tests/demo_upstream.rs`) check that each
//! fault does what it says. Every wait is bounded: a helper that expects
//! something panics with the upstream's stderr when it does not come.

pub use super::process::Exited;
use super::process::ServerProcess;
use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Longest a test waits for an HTTP answer it expects, the start-up line,
/// a statistic to reach a value, or the process to exit.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// The header carrying an order's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// The header marking an order answer as a repeat.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

/// A blocking HTTP client for tests: statuses are answers, not errors;
/// every call gives up after [`UPSTREAM_TIMEOUT`].
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(UPSTREAM_TIMEOUT))
        .build()
        .into()
}

/// An HTTP answer, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    fn read(response: Result<http::Response<ureq::Body>, ureq::Error>, what: &str) -> Reply {
        let response = response.unwrap_or_else(|err| panic!("{what}: {err}"));
        let status = response.status().as_u16();
        let (parts, mut body) = response.into_parts();
        let body = body
            .read_to_string()
            .unwrap_or_else(|err| panic!("{what}: reading the body: {err}"));
        Reply {
            status,
            headers: parts.headers,
            body,
        }
    }

    /// The body as JSON; fails the test if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", self.body))
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// GET `url`.
pub fn get(agent: &ureq::Agent, url: &str) -> Reply {
    Reply::read(agent.get(url).call(), &format!("GET {url}"))
}

/// How to start a demo upstream: extra flags and environment.
#[derive(Debug, Clone, Default)]
pub struct DemoUpstreamBuilder {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    addresses_from_env: bool,
}

impl DemoUpstreamBuilder {
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

    /// Leaves out `--listen 127.0.0.1:0 --control-listen 127.0.0.1:0`, so
    /// the addresses come from the environment (or the defaults).
    pub fn addresses_from_env(mut self) -> Self {
        self.addresses_from_env = true;
        self
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_grace"));
        command.arg("demo-upstream");
        if !self.addresses_from_env {
            command.args(["--listen", "127.0.0.1:0", "--control-listen", "127.0.0.1:0"]);
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
    pub fn spawn(self) -> DemoUpstream {
        let process = ServerProcess::start("grace demo-upstream", self.command());
        let line = process
            .stdout_lines
            .recv_timeout(UPSTREAM_TIMEOUT)
            .unwrap_or_else(|_| {
                panic!(
                    "demo-upstream printed no addresses within {UPSTREAM_TIMEOUT:?}; stderr:\n{}",
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
        DemoUpstream {
            listen: address("listen"),
            control: address("control"),
            start_line: line,
            agent: http_agent(),
            process,
        }
    }

    /// Runs it expecting it to exit on its own (a start-up error).
    pub fn run_to_exit(self) -> Exited {
        ServerProcess::start("grace demo-upstream", self.command()).wait(UPSTREAM_TIMEOUT)
    }
}

/// A running `grace demo-upstream`.
pub struct DemoUpstream {
    listen: SocketAddr,
    control: SocketAddr,
    start_line: String,
    agent: ureq::Agent,
    process: ServerProcess,
}

impl DemoUpstream {
    /// Starts one on free loopback ports with the built-in data.
    pub fn spawn() -> DemoUpstream {
        DemoUpstream::builder().spawn()
    }

    /// Starts one with flags or environment of the test's choosing.
    pub fn builder() -> DemoUpstreamBuilder {
        DemoUpstreamBuilder::default()
    }

    /// Where the demo API listens.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Where the control API listens.
    pub fn control_addr(&self) -> SocketAddr {
        self.control
    }

    /// The start-up line, as printed.
    pub fn start_line(&self) -> &str {
        &self.start_line
    }

    /// The URL of `path` (with its query, if any) on the demo API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// The URL of `path` on the control API.
    pub fn control_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.control)
    }

    /// The client the helpers use (keep-alive connections are pooled).
    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    /// GET `path` on the demo API.
    pub fn get(&self, path: &str) -> Reply {
        get(&self.agent, &self.url(path))
    }

    /// POST `/orders` with `body`, under `idempotency_key` if given.
    pub fn post_order(&self, body: &str, idempotency_key: Option<&str>) -> Reply {
        let url = self.url("/orders");
        let mut request = self.agent.post(&url).content_type("application/json");
        if let Some(key) = idempotency_key {
            request = request.header(IDEMPOTENCY_KEY, key);
        }
        Reply::read(request.send(body), &format!("POST {url}"))
    }

    /// PUT `/faults` with `body` as it is, whatever the answer.
    pub fn put_faults(&self, body: &str) -> Reply {
        let url = self.control_url("/faults");
        Reply::read(
            self.agent
                .put(&url)
                .content_type("application/json")
                .send(body),
            &format!("PUT {url}"),
        )
    }

    /// Replaces the fault settings (fields left out take their defaults)
    /// and returns them as now in force; fails the test unless accepted.
    pub fn set_faults(&self, faults: Value) -> Value {
        let reply = self.put_faults(&faults.to_string());
        assert_eq!(
            reply.status, 200,
            "PUT /faults {faults} refused: {}",
            reply.body
        );
        reply.json()
    }

    /// Back to healthy: no fault at all.
    pub fn heal(&self) {
        self.set_faults(serde_json::json!({}));
    }

    /// The fault settings in force.
    pub fn faults(&self) -> Value {
        self.control_get("/faults")
    }

    /// What the main listener has seen (`GET /stats`).
    pub fn stats(&self) -> Value {
        self.control_get("/stats")
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        let url = self.control_url("/stats/reset");
        let reply = Reply::read(self.agent.post(&url).send_empty(), &format!("POST {url}"));
        assert_eq!(reply.status, 200, "POST /stats/reset: {}", reply.body);
    }

    /// Waits (up to [`UPSTREAM_TIMEOUT`]) until the stats satisfy `check`,
    /// and returns them; `what` names the wait in the failure message.
    pub fn wait_for_stats(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + UPSTREAM_TIMEOUT;
        loop {
            let stats = self.stats();
            if check(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "stats never showed {what}: {stats}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn control_get(&self, path: &str) -> Value {
        let reply = get(&self.agent, &self.control_url(path));
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        reply.json()
    }

    /// What it has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// The process id.
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

    /// Waits for it to exit (after a signal, say).
    pub fn wait(self) -> Exited {
        self.process.wait(UPSTREAM_TIMEOUT)
    }
}
