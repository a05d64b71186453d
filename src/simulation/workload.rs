//! The random world's schedule: what clients send, when time jumps, when
//! a service hangs, when the node restarts or crashes.
//!
//! Everything comes from one seeded generator, so a seed names a whole run.
//! Ids are drawn from small pools so that reads hit the cache, retries hit
//! their idempotency keys and the breakers see streaks of failures.

use serde_json::{Value, json};
use std::time::Duration;

/// The node id the simulated clients address (and `init` assigns).
pub const NODE_ID: &str = "n1";
/// Clients sending requests.
const CLIENTS: [&str; 3] = ["c1", "c2", "c3"];
/// Explicit idempotency keys clients reuse, so repeats happen.
const ORDER_KEYS: u64 = 12;

/// One step of a run.
#[derive(Debug, Clone)]
pub enum Step {
    /// Requests arriving together; the node handles them as one burst and
    /// commits its journal before the replies go out.
    Burst(Vec<Outgoing>),
    /// A burst cut short by a crash after `handled` of its requests: their
    /// replies and uncommitted journal rows are lost.
    CrashDuringBurst {
        requests: Vec<Outgoing>,
        handled: usize,
    },
    /// The clock moves on; due timers fire on the way.
    Advance(Duration),
    /// A clean restart: every request waiting is answered, everything
    /// committed, the process replaced (its calls in flight go unheard).
    Restart,
    /// The process dies between steps: what was committed survives; calls
    /// in flight and requests waiting on them are lost with it.
    Crash,
    /// A service stops answering at all for this many steps: calls reach
    /// it and are never processed, so every one of them times out.
    Hang { service: usize, steps: usize },
}

/// One line a client sends.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub src: &'static str,
    pub msg_id: Option<u64>,
    /// The request body, when the line is a well-formed envelope.
    pub body: Option<Value>,
    /// The exact line sent.
    pub line: String,
}

impl Outgoing {
    fn envelope(src: &'static str, msg_id: Option<u64>, mut body: Value) -> Self {
        if let Some(msg_id) = msg_id {
            body["msg_id"] = json!(msg_id);
        }
        let line = json!({"src": src, "dest": NODE_ID, "body": body}).to_string();
        Outgoing {
            src,
            msg_id,
            body: Some(body),
            line,
        }
    }

    fn raw(line: &str) -> Self {
        Outgoing {
            src: CLIENTS[0],
            msg_id: None,
            body: None,
            line: line.to_string(),
        }
    }

    /// The body's `type`, if any.
    pub fn kind(&self) -> Option<&str> {
        self.body.as_ref()?.get("type")?.as_str()
    }
}

/// Draws steps for one run.
pub struct Workload {
    rng: fastrand::Rng,
    next_msg_id: u64,
    /// Request ids the node has handed out, for `get_order`.
    known_request_ids: Vec<u64>,
}

impl Workload {
    pub fn new(seed: u64) -> Self {
        Workload {
            rng: fastrand::Rng::with_seed(seed ^ 0x0005_eed0_fa11),
            next_msg_id: 1,
            known_request_ids: Vec::new(),
        }
    }

    /// Lets `get_order` ask about ids that really exist.
    pub fn learn_request_id(&mut self, request_id: u64) {
        if self.known_request_ids.len() < 512 {
            self.known_request_ids.push(request_id);
        }
    }

    /// A request from the first client with `body` and a fresh `msg_id`.
    pub fn request_with(&mut self, body: Value) -> Outgoing {
        let msg_id = self.next_msg_id;
        self.next_msg_id += 1;
        Outgoing::envelope(CLIENTS[0], Some(msg_id), body)
    }

    pub fn next_step(&mut self) -> Step {
        match self.rng.u32(0..100) {
            0..=49 => Step::Burst(self.burst()),
            50..=51 => {
                let requests = self.burst();
                let handled = self.rng.usize(0..=requests.len());
                Step::CrashDuringBurst { requests, handled }
            }
            52 => Step::Crash,
            53..=54 => Step::Restart,
            55 => Step::Hang {
                service: self.rng.usize(0..3),
                steps: self.rng.usize(1..=40),
            },
            _ => Step::Advance(self.time_jump()),
        }
    }

    fn time_jump(&mut self) -> Duration {
        Duration::from_millis(match self.rng.u32(0..10) {
            0..=5 => self.rng.u64(0..=50),
            6..=8 => self.rng.u64(50..=3_000),
            _ => self.rng.u64(3_000..=120_000),
        })
    }

    fn burst(&mut self) -> Vec<Outgoing> {
        let size = self.rng.usize(1..=6);
        (0..size).map(|_| self.request()).collect()
    }

    fn msg_id(&mut self) -> Option<u64> {
        if self.rng.u32(0..100) < 3 {
            return None;
        }
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        Some(id)
    }

    fn request(&mut self) -> Outgoing {
        let src = CLIENTS[self.rng.usize(0..CLIENTS.len())];
        if self.rng.u32(0..100) < 4 {
            return self.malformed_line();
        }
        let msg_id = self.msg_id();
        let body = match self.rng.u32(0..100) {
            0..=17 => self.read("get_user", "user_id"),
            18..=35 => self.read("get_product", "product_id"),
            36..=41 => self.service_health(),
            42..=47 => self.set_mode(),
            48..=50 => {
                json!({"type": "set_feature", "feature": self.feature(), "enabled": self.rng.bool()})
            }
            51..=53 => json!({"type": "get_recommendations", "user_id": self.record_id()}),
            54..=55 => {
                let query = ["prod", "x", ""][self.rng.usize(0..3)];
                json!({"type": "search", "query": query})
            }
            56..=57 => json!({"type": "get_reviews", "product_id": self.record_id()}),
            58..=77 => self.create_order(),
            78..=82 => self.get_order(),
            83..=85 => json!({"type": "get_queue"}),
            86..=88 => json!({"type": "process_queue"}),
            89..=92 => json!({"type": "get_status"}),
            93 => json!({"type": "init", "node_id": NODE_ID, "node_ids": [NODE_ID]}),
            94..=95 => json!({"type": "echo", "echo": {"n": self.rng.u32(..)}}),
            _ => self.malformed_body(),
        };
        Outgoing::envelope(src, msg_id, body)
    }

    fn record_id(&mut self) -> Value {
        match self.rng.u32(0..10) {
            0..=5 => json!(self.rng.u64(1..=12)),
            6 => json!(self.rng.u64(995..=1005)),
            7 => json!(self.rng.u64(5_000..=5_004)),
            8 => json!(format!("s{}", self.rng.u32(1..=3))),
            _ => json!(self.rng.u64(1..=3).to_string()),
        }
    }

    fn service(&mut self) -> &'static str {
        ["user", "product", "order"][self.rng.usize(0..3)]
    }

    fn feature(&mut self) -> &'static str {
        ["recommendations", "search", "reviews"][self.rng.usize(0..3)]
    }

    fn add_faults(&mut self, body: &mut Value) {
        match self.rng.u32(0..100) {
            0..=9 => body["force_failures"] = json!(self.rng.u64(1..=7)),
            10..=11 => body["force_failures"] = json!(1_000_000_000_000u64),
            12..=21 => body["service_unavailable"] = json!(true),
            _ => {}
        }
    }

    fn read(&mut self, kind: &str, id_field: &str) -> Value {
        let mut body = json!({"type": kind, id_field: self.record_id()});
        self.add_faults(&mut body);
        body
    }

    fn service_health(&mut self) -> Value {
        // Recoveries a little more often than outages, so services come back.
        let available = self.rng.u32(0..100) < 60;
        json!({"type": "set_service_health", "service": self.service(), "available": available})
    }

    fn set_mode(&mut self) -> Value {
        let cpu = self.rng.u32(0..=100);
        match self.rng.u32(0..10) {
            0..=3 => json!({"type": "set_mode", "mode": "auto", "cpu_usage": cpu}),
            4 => json!({"type": "set_mode", "cpu_usage": cpu}),
            5..=8 => {
                let mode = ["normal", "degraded", "critical"][self.rng.usize(0..3)];
                json!({"type": "set_mode", "mode": mode, "cpu_usage": cpu})
            }
            _ => json!({"type": "set_mode", "mode": "turbo"}),
        }
    }

    fn create_order(&mut self) -> Value {
        let mut body = json!({
            "type": "create_order",
            "order": {"user_id": self.rng.u32(1..=9), "product_id": self.rng.u32(1..=9), "quantity": 1},
        });
        if self.rng.u32(0..100) < 35 {
            body["idempotency_key"] = json!(format!("k{}", self.rng.u64(0..ORDER_KEYS)));
        }
        self.add_faults(&mut body);
        body
    }

    fn get_order(&mut self) -> Value {
        if !self.known_request_ids.is_empty() && self.rng.u32(0..10) < 8 {
            let index = self.rng.usize(0..self.known_request_ids.len());
            json!({"type": "get_order", "request_id": self.known_request_ids[index]})
        } else {
            json!({"type": "get_order", "request_id": self.rng.u64(1..=10_000)})
        }
    }

    fn malformed_body(&mut self) -> Value {
        match self.rng.u32(0..6) {
            0 => json!({"type": "frobnicate"}),
            1 => json!({"type": "get_user"}),
            2 => json!({"type": "get_user", "user_id": 1.5}),
            3 => json!({"type": "get_product", "product_id": 1, "force_failures": -1}),
            4 => json!({"type": "create_order", "order": [1, 2]}),
            _ => json!({"type": "set_feature", "feature": "teleport", "enabled": false}),
        }
    }

    fn malformed_line(&mut self) -> Outgoing {
        let lines = [
            "this is not json {",
            "[1,2,3]",
            r#"{"dest":"n1","body":{"type":"echo","msg_id":1,"echo":1}}"#,
            r#"{"src":"c1","dest":"n1","body":"get_user"}"#,
            r#"{"src":"c1","dest":"n1","body":{"user_id":3}}"#,
            "",
        ];
        Outgoing::raw(lines[self.rng.usize(0..lines.len())])
    }
}
