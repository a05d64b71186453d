//! An HTTP load generator for the gateway benches, run inside the bench's
//! own process on a tokio runtime.
//!
//! Two ways to load a server, because they answer different questions:
//!
//! - [`closed_loop`]: a fixed number of keep-alive connections, each sending
//!   its next request as soon as the last one is answered. It finds the
//!   most a server can answer per second; its latencies include the wait
//!   behind the other connections.
//! - [`open_loop`]: requests sent at a fixed rate whatever the answers, each
//!   timed from the instant it was due, so a server that stalls is seen
//!   stalling (no coordinated omission: a slow answer does not hold back the
//!   requests after it). Over keep-alive, a request takes an idle
//!   connection or opens a new one; or every request has its own
//!   connection.
//!
//! Every answer is read whole and classified: its status, and whether it is
//! a stale copy as each proxy under test says it (`Cache-Status: ...
//! stale-if-error` from grace, `X-Cache-Status: STALE` or `UPDATING` from
//! nginx and from the bench's Varnish configuration).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http::header::{CONNECTION, HOST, HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// RFC 9211's header, as grace sets it on a stale copy.
const CACHE_STATUS: &str = "cache-status";
/// The header nginx (`$upstream_cache_status`) and the bench's Varnish
/// configuration set.
const X_CACHE_STATUS: &str = "x-cache-status";

/// A runtime for the load generator: two worker threads, as many as the
/// machine has cores (the servers under test share them).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Whether an answer's headers say it is a stale copy.
pub fn is_stale(headers: &HeaderMap) -> bool {
    let cache_status_stale = headers
        .get(CACHE_STATUS)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("stale"));
    let x_cache_status_stale = headers
        .get(X_CACHE_STATUS)
        .is_some_and(|value| value == "STALE" || value == "UPDATING");
    cache_status_stale || x_cache_status_stale
}

/// How requests travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// Connections are kept open and reused.
    KeepAlive,
    /// Each request opens its own connection and asks the server to close
    /// it (`Connection: close`).
    PerRequest,
}

impl Connections {
    pub fn label(self) -> &'static str {
        match self {
            Connections::KeepAlive => "keep-alive",
            Connections::PerRequest => "connection per request",
        }
    }
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer, read whole.
    Answered { status: u16, stale: bool },
    /// The connection could not be opened.
    ConnectFailed,
    /// The connection broke before the answer was read.
    Broken,
    /// No answer within the client's timeout.
    TimedOut,
}

impl Outcome {
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Answered { status, .. } if (200..300).contains(&status))
    }

    pub fn is_stale(self) -> bool {
        matches!(self, Outcome::Answered { stale: true, .. })
    }

    pub fn is_answer(self) -> bool {
        matches!(self, Outcome::Answered { .. })
    }

    /// How the per-request log writes it.
    pub fn status_text(self) -> String {
        match self {
            Outcome::Answered { status, .. } => status.to_string(),
            Outcome::ConnectFailed => "connect-failed".into(),
            Outcome::Broken => "broken".into(),
            Outcome::TimedOut => "timed-out".into(),
        }
    }
}

/// A keep-alive HTTP/1.1 client connection.
struct Connection {
    sender: SendRequest<Empty<Bytes>>,
}

impl Connection {
    async fn open(address: SocketAddr) -> Option<Connection> {
        let stream = TcpStream::connect(address).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Some(Connection { sender })
    }

    /// GETs `path` and reads the answer whole: its status and headers, or
    /// `None` when the connection broke first.
    async fn exchange(
        &mut self,
        host: &HeaderValue,
        path: &str,
        close: bool,
    ) -> Option<(u16, HeaderMap)> {
        self.sender.ready().await.ok()?;
        let mut request = Request::get(path).header(HOST, host);
        if close {
            request = request.header(CONNECTION, "close");
        }
        let request = request.body(Empty::new()).expect("a valid request");
        let response = self.sender.send_request(request).await.ok()?;
        let (parts, body) = response.into_parts();
        body.collect().await.ok()?;
        Some((parts.status.as_u16(), parts.headers))
    }

    /// GETs `path`, read whole.
    async fn get(&mut self, host: &HeaderValue, path: &str, close: bool) -> Outcome {
        match self.exchange(host, path, close).await {
            Some((status, headers)) => Outcome::Answered {
                status,
                stale: is_stale(&headers),
            },
            None => Outcome::Broken,
        }
    }

    fn is_usable(&self) -> bool {
        !self.sender.is_closed()
    }
}

/// The `Host` header for requests to `address`.
fn host_header(address: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&address.to_string()).expect("an address is a valid header")
}

/// Sorted latencies and the percentiles the benches print.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    sorted: Vec<Duration>,
}

impl Latencies {
    pub fn new(mut latencies: Vec<Duration>) -> Latencies {
        latencies.sort_unstable();
        Latencies { sorted: latencies }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The latency below which `fraction` of the requests were answered
    /// (nearest rank); zero when there are none.
    pub fn percentile(&self, fraction: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = (fraction * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    pub fn p50(&self) -> Duration {
        self.percentile(0.50)
    }

    pub fn p99(&self) -> Duration {
        self.percentile(0.99)
    }

    pub fn max(&self) -> Duration {
        self.sorted.last().copied().unwrap_or_default()
    }
}

/// Milliseconds, as the benches print latencies.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// A closed-loop run.
#[derive(Debug, Clone, Copy)]
pub struct ClosedLoop {
    pub connections: usize,
    /// Answers in this first part are not counted (connections open, caches
    /// and branch predictors warm).
    pub warmup: Duration,
    pub measured: Duration,
}

/// What a closed-loop run measured (over its measured part only).
#[derive(Debug, Clone, Default)]
pub struct ClosedLoopReport {
    pub answers: u64,
    pub successes: u64,
    pub stale: u64,
    /// Requests that got no answer (the connection is then opened again).
    pub failures: u64,
    pub latencies: Latencies,
    pub elapsed: Duration,
}

impl ClosedLoopReport {
    /// Answers per second.
    pub fn rate(&self) -> f64 {
        self.answers as f64 / self.elapsed.as_secs_f64()
    }
}

/// Loads `address` with `plan.connections` keep-alive connections, each
/// GETting the paths in turn (each connection starting at its own place).
pub async fn closed_loop(
    address: SocketAddr,
    paths: Arc<Vec<String>>,
    plan: ClosedLoop,
) -> ClosedLoopReport {
    let host = host_header(address);
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.measured;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..plan.connections {
        let paths = Arc::clone(&paths);
        let host = host.clone();
        tasks.spawn(async move {
            let mut report = ClosedLoopReport::default();
            let mut latencies = Vec::new();
            let mut next = worker * paths.len() / plan.connections.max(1);
            let mut connection = None;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let counted = sent >= measure_from;
                let conn = match connection.take() {
                    Some(conn) => Some(conn),
                    None => Connection::open(address).await,
                };
                let outcome = match conn {
                    Some(mut conn) => {
                        let outcome = conn.get(&host, &paths[next], false).await;
                        if conn.is_usable() {
                            connection = Some(conn);
                        }
                        outcome
                    }
                    None => Outcome::ConnectFailed,
                };
                next = (next + 1) % paths.len();
                if !counted {
                    continue;
                }
                if outcome.is_answer() {
                    report.answers += 1;
                    latencies.push(sent.elapsed());
                } else {
                    report.failures += 1;
                    // Don't spin on a server that refuses.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                report.successes += u64::from(outcome.is_success());
                report.stale += u64::from(outcome.is_stale());
            }
            (report, latencies)
        });
    }
    let mut total = ClosedLoopReport::default();
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (report, mut mine) = done.expect("a load task panicked");
        total.answers += report.answers;
        total.successes += report.successes;
        total.stale += report.stale;
        total.failures += report.failures;
        latencies.append(&mut mine);
    }
    total.elapsed = Instant::now().saturating_duration_since(measure_from);
    total.latencies = Latencies::new(latencies);
    total
}

/// An open-loop run: `requests` requests, one every `1 / rate` seconds from
/// `start`.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    pub start: Instant,
    pub rate: f64,
    pub requests: usize,
    pub connections: Connections,
    /// A request with no answer by then counts as [`Outcome::TimedOut`].
    pub timeout: Duration,
}

impl OpenLoop {
    /// When request `index` is due.
    pub fn due(&self, index: usize) -> Instant {
        self.start + Duration::from_secs_f64(index as f64 / self.rate)
    }
}

/// One request of an open-loop run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was due, from the run's start.
    pub sent: Duration,
    /// From when it was due until its answer was read whole (or it failed).
    pub latency: Duration,
    pub outcome: Outcome,
}

/// Runs `plan` against `address`; request `i` GETs `path_of(i)`. Returns
/// one sample per request, in the order they were due.
pub async fn open_loop(
    address: SocketAddr,
    plan: OpenLoop,
    path_of: impl Fn(usize) -> String,
) -> Vec<Sample> {
    let host = host_header(address);
    let idle: Arc<Mutex<Vec<Connection>>> = Arc::default();
    let mut requests = Vec::with_capacity(plan.requests);
    for index in 0..plan.requests {
        let due = plan.due(index);
        tokio::time::sleep_until(due.into()).await;
        let path = path_of(index);
        let host = host.clone();
        let idle = Arc::clone(&idle);
        requests.push(tokio::spawn(async move {
            let outcome = within(plan.timeout, async {
                match plan.connections {
                    Connections::KeepAlive => {
                        let reused = take_idle(&idle);
                        let conn = match reused {
                            Some(conn) => Some(conn),
                            None => Connection::open(address).await,
                        };
                        let Some(mut conn) = conn else {
                            return Outcome::ConnectFailed;
                        };
                        let outcome = conn.get(&host, &path, false).await;
                        if conn.is_usable() {
                            idle.lock().expect("idle pool").push(conn);
                        }
                        outcome
                    }
                    Connections::PerRequest => match Connection::open(address).await {
                        Some(mut conn) => conn.get(&host, &path, true).await,
                        None => Outcome::ConnectFailed,
                    },
                }
            })
            .await;
            Sample {
                sent: due.saturating_duration_since(plan.start),
                latency: Instant::now().saturating_duration_since(due),
                outcome,
            }
        }));
    }
    let mut samples = Vec::with_capacity(requests.len());
    for request in requests {
        samples.push(request.await.expect("a request task panicked"));
    }
    samples
}

/// An idle keep-alive connection that is still open, if any.
fn take_idle(idle: &Mutex<Vec<Connection>>) -> Option<Connection> {
    let mut idle = idle.lock().expect("idle pool");
    while let Some(conn) = idle.pop() {
        if conn.is_usable() {
            return Some(conn);
        }
    }
    None
}

/// `work`'s outcome, or [`Outcome::TimedOut`] after `timeout`.
async fn within(timeout: Duration, work: impl Future<Output = Outcome>) -> Outcome {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Outcome::TimedOut)
}

/// GETs `path` once on a new connection (for readiness checks and
/// priming): the status and headers, or `None` when there was no answer
/// within `timeout`.
pub async fn get_once(
    address: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Option<(u16, HeaderMap)> {
    let host = host_header(address);
    tokio::time::timeout(timeout, async {
        let mut conn = Connection::open(address).await?;
        conn.exchange(&host, path, true).await
    })
    .await
    .ok()
    .flatten()
}
