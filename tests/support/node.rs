//! The harness for sans-IO tests of the whole Maelstrom node: typed request
//! builders, a node driven by explicit instants (no sleeping, no process,
//! no file), replies read back with their body's exact text, and restarts
//! that hand the journal rows a runtime would have committed to a fresh
//! node.
//!
//! A [`Harness`] wraps an [`InProcessNode`]: the node and the in-process
//! demo services. By default the demo services answer every call within
//! the step that made it, as the binary runs. A harness made with
//! [`Harness::holding_calls`] drives the [`Node`] itself and holds the calls
//! it makes instead, so a test decides when each is answered, how, or
//! whether it is left to reach its deadline.

use grace::core::breaker::{BreakerConfig, CircuitBreaker};
use grace::core::queue::journal::JournalInfo;
use grace::core::queue::{RecoveredQueue, SettledCounts, StoredWrite, WriteQueue};
use grace::core::{Call, CallId, CallResult, ServiceId, ServiceSpec};
use grace::demo::DemoData;
use grace::demo::in_process::{DemoCall, DemoServices};
use grace::maelstrom::node::{Effect, InProcessNode, Node, NodeConfig};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The client every request comes from, unless a test says otherwise.
pub const CLIENT: &str = "c1";
/// The node every request is addressed to.
pub const NODE_ID: &str = "n1";
/// The `msg_id` of a request unless a test sets another (or none).
pub const DEFAULT_MSG_ID: u64 = 1;
/// How many wake-ups [`Harness::run_timers_until`] allows before it calls
/// the timers stuck.
const MAX_WAKEUPS: usize = 10_000;

pub const MS: Duration = Duration::from_millis(1);
pub const SEC: Duration = Duration::from_secs(1);

/// `millis` milliseconds.
pub fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// One request: its envelope and its body's fields. Built by the functions
/// below (one per message type) and refined with the methods here.
#[derive(Debug, Clone)]
pub struct Request {
    src: String,
    dest: Option<String>,
    body: Map<String, Value>,
}

impl Request {
    /// A request of type `kind` from [`CLIENT`] to [`NODE_ID`] with
    /// `msg_id` [`DEFAULT_MSG_ID`].
    pub fn new(kind: &str) -> Self {
        let mut body = Map::new();
        body.insert("type".into(), kind.into());
        body.insert("msg_id".into(), DEFAULT_MSG_ID.into());
        Request {
            src: CLIENT.into(),
            dest: Some(NODE_ID.into()),
            body,
        }
    }

    /// Sets (or replaces) a body field.
    pub fn with(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.body.insert(field.into(), value.into());
        self
    }

    /// Removes a body field (`type` or a required one, to make it malformed).
    pub fn without(mut self, field: &str) -> Self {
        self.body.remove(field);
        self
    }

    pub fn msg_id(self, msg_id: u64) -> Self {
        self.with("msg_id", msg_id)
    }

    /// A request without `msg_id`: processed, answered without `in_reply_to`.
    pub fn without_msg_id(self) -> Self {
        self.without("msg_id")
    }

    /// From client `src` instead of [`CLIENT`].
    pub fn sent_by(mut self, src: &str) -> Self {
        self.src = src.into();
        self
    }

    /// An envelope without `dest`.
    pub fn without_dest(mut self) -> Self {
        self.dest = None;
        self
    }

    /// `force_failures: count`: that many calls fail before this request is
    /// served.
    pub fn force_failures(self, count: u64) -> Self {
        self.with("force_failures", count)
    }

    /// `service_unavailable: true`: this request's own call fails.
    pub fn service_unavailable(self) -> Self {
        self.with("service_unavailable", true)
    }

    pub fn idempotency_key(self, key: impl Into<Value>) -> Self {
        self.with("idempotency_key", key)
    }

    /// The body as JSON.
    pub fn body(&self) -> Value {
        Value::Object(self.body.clone())
    }

    /// The message as one input line.
    pub fn line(&self) -> String {
        let mut envelope = Map::new();
        envelope.insert("src".into(), self.src.clone().into());
        if let Some(dest) = &self.dest {
            envelope.insert("dest".into(), dest.clone().into());
        }
        envelope.insert("body".into(), self.body());
        Value::Object(envelope).to_string()
    }
}

pub fn init(node_id: &str, node_ids: &[&str]) -> Request {
    Request::new("init")
        .with("node_id", node_id)
        .with("node_ids", node_ids)
}

pub fn echo(echo: impl Into<Value>) -> Request {
    Request::new("echo").with("echo", echo)
}

/// `get_user` of `id` (a JSON integer or string, or anything to test
/// malformed ids).
pub fn get_user(id: impl Into<Value>) -> Request {
    Request::new("get_user").with("user_id", id)
}

pub fn get_product(id: impl Into<Value>) -> Request {
    Request::new("get_product").with("product_id", id)
}

pub fn get_recommendations(user_id: impl Into<Value>) -> Request {
    Request::new("get_recommendations").with("user_id", user_id)
}

pub fn search(query: &str) -> Request {
    Request::new("search").with("query", query)
}

pub fn get_reviews(product_id: impl Into<Value>) -> Request {
    Request::new("get_reviews").with("product_id", product_id)
}

/// `set_mode` with an explicit `mode` (an operator override).
pub fn set_mode(mode: &str) -> Request {
    Request::new("set_mode").with("mode", mode)
}

/// `set_mode` without `mode`: the mode follows `cpu_usage`.
pub fn report_cpu(cpu_usage: impl Into<Value>) -> Request {
    Request::new("set_mode").with("cpu_usage", cpu_usage)
}

pub fn set_feature(feature: &str, enabled: bool) -> Request {
    Request::new("set_feature")
        .with("feature", feature)
        .with("enabled", enabled)
}

pub fn set_service_health(service: &str, available: bool) -> Request {
    Request::new("set_service_health")
        .with("service", service)
        .with("available", available)
}

pub fn get_status() -> Request {
    Request::new("get_status")
}

/// `create_order` of `order` (a JSON object, or anything to test malformed
/// orders).
pub fn create_order(order: impl Into<Value>) -> Request {
    Request::new("create_order").with("order", order)
}

/// `get_order` by the queue's `request_id`.
pub fn get_order(request_id: u64) -> Request {
    Request::new("get_order").with("request_id", request_id)
}

/// `get_order` by the order service's `order_id`.
pub fn get_order_by_order_id(order_id: &str) -> Request {
    Request::new("get_order").with("order_id", order_id)
}

pub fn get_queue() -> Request {
    Request::new("get_queue")
}

pub fn process_queue() -> Request {
    Request::new("process_queue")
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

/// One reply line, its body kept both as the exact text written and parsed.
#[derive(Debug, Clone)]
pub struct Reply {
    pub src: String,
    pub dest: String,
    /// The body exactly as written (key order included).
    pub text: String,
    pub body: Value,
}

impl Reply {
    fn parse(line: &str) -> Reply {
        #[derive(Deserialize)]
        struct Line {
            src: String,
            dest: String,
            body: Box<RawValue>,
        }
        let parsed: Line = serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"));
        Reply {
            src: parsed.src,
            dest: parsed.dest,
            text: parsed.body.get().to_owned(),
            body: serde_json::from_str(parsed.body.get()).unwrap(),
        }
    }

    /// The body's `type`.
    pub fn kind(&self) -> &str {
        self.body["type"].as_str().expect("a reply has a type")
    }

    /// The error code; fails the test if this is not an error.
    pub fn code(&self) -> u64 {
        assert_eq!(self.kind(), "error", "expected an error: {}", self.text);
        self.body["code"].as_u64().expect("error code")
    }

    pub fn error_text(&self) -> &str {
        self.body["text"].as_str().expect("error text")
    }

    pub fn in_reply_to(&self) -> Option<u64> {
        self.body.get("in_reply_to").and_then(Value::as_u64)
    }
}

/// Reply lines written, in order.
fn parse_replies(output: Vec<u8>) -> Vec<Reply> {
    let out = String::from_utf8(output).expect("replies are UTF-8");
    assert!(
        out.is_empty() || out.ends_with('\n'),
        "unterminated reply: {out:?}"
    );
    out.lines().map(Reply::parse).collect()
}

// ---------------------------------------------------------------------------
// The journal a runtime would have committed
// ---------------------------------------------------------------------------

/// What a journal holds after `rows` were committed in turn: the last row
/// of each request id, in id order (as the journal hands them back).
pub fn committed(rows: impl IntoIterator<Item = StoredWrite>) -> RecoveredQueue {
    let mut by_id = BTreeMap::new();
    for row in rows {
        by_id.insert(row.request_id, row);
    }
    RecoveredQueue::from_rows(by_id.into_values().collect(), SettledCounts::default(), 0)
}

/// A durable journal, as the runtime opens it.
pub fn durable_journal() -> JournalInfo {
    JournalInfo::durable(Some(PathBuf::from(format!(
        "/data/{NODE_ID}.journal.sqlite"
    ))))
}

// ---------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------

/// The default configuration with `breaker` for every service.
pub fn with_breaker(breaker: BreakerConfig) -> NodeConfig {
    let defaults = NodeConfig::default();
    NodeConfig {
        service: ServiceSpec {
            breaker,
            ..defaults.service.clone()
        },
        ..defaults
    }
}

// ---------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------

/// Who answers the node's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// The demo services, within the step that made the call (the binary's
    /// way).
    AnsweredAtOnce,
    /// Nobody until the test says so: calls stay in flight.
    Held,
}

/// A node in front of the demo services, and the instant it started.
pub struct Harness {
    pub grace: InProcessNode,
    config: NodeConfig,
    calls: Calls,
    /// Calls made and not yet answered by the test (with [`Calls::Held`]);
    /// a call the core timed out stays here until the test answers it late.
    held: Vec<Call<DemoCall>>,
    pub t0: Instant,
}

impl Harness {
    /// A node on the built-in demo data, its calls answered at once.
    pub fn new(config: NodeConfig) -> Self {
        Self::with_data(config, DemoData::builtin())
    }

    /// A node on `data` (fixtures), its calls answered at once.
    pub fn with_data(config: NodeConfig, data: DemoData) -> Self {
        let t0 = Instant::now();
        Harness {
            grace: InProcessNode::new(config.clone(), data, t0),
            config,
            calls: Calls::AnsweredAtOnce,
            held: Vec::new(),
            t0,
        }
    }

    /// A node on the built-in demo data whose calls stay in flight until
    /// the test answers them ([`Self::answer`], [`Self::complete`]).
    pub fn holding_calls(config: NodeConfig) -> Self {
        Harness {
            calls: Calls::Held,
            ..Self::new(config)
        }
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// `t0` plus `millis` milliseconds.
    pub fn at(&self, millis: u64) -> Instant {
        self.t0 + ms(millis)
    }

    pub fn node(&self) -> &Node {
        &self.grace.node
    }

    pub fn node_mut(&mut self) -> &mut Node {
        &mut self.grace.node
    }

    pub fn demo_services(&self) -> &DemoServices {
        &self.grace.demo
    }

    /// The id of a demo service by name (`user`, `product`, `order`).
    pub fn service(&self, name: &str) -> ServiceId {
        self.node()
            .core()
            .services()
            .id(name)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    pub fn breaker(&self, service: &str) -> &CircuitBreaker {
        self.node().core().breaker(self.service(service))
    }

    /// Calls made to `service` so far (answered or not).
    pub fn calls_made(&self, service: &str) -> u64 {
        self.node().core().stats(self.service(service)).calls
    }

    pub fn queue(&self) -> &WriteQueue {
        self.node().core().queue()
    }

    /// With [`Calls::Held`]: performs what the node asked of the runtime,
    /// holding its calls (service health changes at once).
    fn hold_effects(&mut self) {
        while let Some(effect) = self.grace.node.poll_effect() {
            match effect {
                Effect::SetServiceHealth { service, available } => {
                    self.grace.demo.set_available(service, available)
                }
                Effect::Call(call) => self.held.push(call),
            }
        }
    }

    fn take_replies(&mut self) -> Vec<Reply> {
        parse_replies(self.grace.node.take_output())
    }

    /// Feeds one raw input line and returns the replies written meanwhile.
    pub fn feed(&mut self, line: &[u8], now: Instant) -> Vec<Reply> {
        match self.calls {
            Calls::AnsweredAtOnce => self.grace.handle_message(line, 1, now),
            Calls::Held => {
                self.grace.node.handle_message(line, 1, now);
                self.hold_effects();
            }
        }
        self.take_replies()
    }

    /// Sends `request` and returns every reply written meanwhile (none for
    /// a request parked on a held call; a parked request's reply when a
    /// call ends may come with it).
    pub fn replies_to(&mut self, request: &Request, now: Instant) -> Vec<Reply> {
        self.feed(request.line().as_bytes(), now)
    }

    /// Sends `request` and returns its one reply.
    pub fn send(&mut self, request: &Request, now: Instant) -> Reply {
        let mut replies = self.replies_to(request, now);
        assert_eq!(
            replies.len(),
            1,
            "expected one reply to {}, got {replies:?}",
            request.line()
        );
        replies.remove(0)
    }

    /// Sends `request`, which must wait for a call: no reply yet, one more
    /// request parked.
    pub fn park(&mut self, request: &Request, now: Instant) {
        let parked = self.node().parked_requests();
        let replies = self.replies_to(request, now);
        assert!(
            replies.is_empty(),
            "{} was answered at once: {replies:?}",
            request.line()
        );
        assert_eq!(
            self.node().parked_requests(),
            parked + 1,
            "{} is not parked",
            request.line()
        );
    }

    /// The `status` body at `now`.
    pub fn status(&mut self, now: Instant) -> Value {
        let reply = self.send(&get_status().msg_id(999), now);
        assert_eq!(reply.kind(), "status", "{}", reply.text);
        reply.body
    }

    /// Takes a demo service down, or brings it back.
    pub fn set_service_health(&mut self, service: &str, available: bool, now: Instant) {
        let reply = self.send(&set_service_health(service, available), now);
        assert_eq!(reply.kind(), "service_health_ok", "{}", reply.text);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.grace.poll_timeout()
    }

    /// Does the work due at `now`; returns the replies it wrote (those of
    /// requests parked on calls that timed out, never unsolicited ones).
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Reply> {
        match self.calls {
            Calls::AnsweredAtOnce => self.grace.handle_timeout(now),
            Calls::Held => {
                self.grace.node.handle_timeout(now);
                self.hold_effects();
            }
        }
        self.take_replies()
    }

    /// Runs the node's timer until nothing is left to do or `until` passes,
    /// as the runtime would; returns the instant it stopped at.
    pub fn run_timers_until(&mut self, until: Instant) -> Instant {
        let mut now = self.t0;
        for _ in 0..MAX_WAKEUPS {
            match self.poll_timeout() {
                Some(deadline) if deadline <= until => {
                    now = now.max(deadline);
                    let replies = self.handle_timeout(now);
                    assert!(
                        replies.is_empty(),
                        "no unsolicited messages to clients: {replies:?}"
                    );
                }
                _ => return now,
            }
        }
        panic!("timers still busy after {MAX_WAKEUPS} wakeups");
    }

    /// Journal rows the runtime would commit now.
    pub fn take_journal_writes(&mut self) -> Vec<StoredWrite> {
        self.grace.node.take_journal_writes()
    }

    /// Resumes from a durable journal holding `rows` (committed in turn).
    pub fn recover(&mut self, rows: impl IntoIterator<Item = StoredWrite>, now: Instant) {
        self.grace
            .node
            .recover(durable_journal(), committed(rows), now);
    }

    /// A crash and restart at `now`: a fresh node with the same
    /// configuration resumes from a durable journal holding `rows` (what
    /// the runtime had committed). The demo services outlive it, as remote
    /// services would; nothing else does.
    pub fn restart(self, rows: impl IntoIterator<Item = StoredWrite>, now: Instant) -> Harness {
        let InProcessNode { demo, .. } = self.grace;
        let node = Node::new(self.config.clone(), demo.data(), now);
        let mut restarted = Harness {
            grace: InProcessNode { node, demo },
            config: self.config,
            calls: self.calls,
            held: Vec::new(),
            t0: self.t0,
        };
        restarted.recover(rows, now);
        restarted
    }

    // -- held calls ---------------------------------------------------------

    /// Calls made and not yet answered by the test, oldest first.
    pub fn held_calls(&self) -> &[Call<DemoCall>] {
        &self.held
    }

    /// Ids of the held calls to `service`, oldest first.
    pub fn held_call_ids(&self, service: &str) -> Vec<CallId> {
        let service = self.service(service);
        self.held
            .iter()
            .filter(|call| call.service == service)
            .map(|call| call.id)
            .collect()
    }

    /// The held call `id`.
    pub fn held_call(&self, id: CallId) -> &Call<DemoCall> {
        self.held
            .iter()
            .find(|call| call.id == id)
            .unwrap_or_else(|| panic!("no held call {id:?}"))
    }

    fn take_held(&mut self, id: CallId) -> Call<DemoCall> {
        let index = self
            .held
            .iter()
            .position(|call| call.id == id)
            .unwrap_or_else(|| panic!("no held call {id:?}"));
        self.held.remove(index)
    }

    /// The demo services answer held call `id` at `now`; returns the
    /// replies written.
    pub fn answer(&mut self, id: CallId, now: Instant) -> Vec<Reply> {
        let call = self.take_held(id);
        let result = self.grace.demo.answer(&call);
        self.finish(id, result, now)
    }

    /// Held call `id` ends with `result` at `now`; returns the replies
    /// written.
    pub fn complete(&mut self, id: CallId, result: CallResult, now: Instant) -> Vec<Reply> {
        self.take_held(id);
        self.finish(id, result, now)
    }

    fn finish(&mut self, id: CallId, result: CallResult, now: Instant) -> Vec<Reply> {
        self.grace.node.complete(id, result, now);
        self.hold_effects();
        self.take_replies()
    }
}
