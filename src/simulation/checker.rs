//! The invariants, and the simple model of grace the simulator checks the
//! real node against after every step.
//!
//! The model is deliberately naive: it recomputes from first principles
//! what the node should have done (could the service answer? which
//! features should be off?) instead of reusing the node's own code.

use super::workload::{NODE_ID, Outgoing};
use crate::backend::{Backend, Service};
use crate::breaker::{BreakerState, Transition};
use crate::node::{Node, NodeConfig};
use crate::protocol::RecordId;
use crate::queue::OrderStatus;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::Instant;

/// The promises the simulator checks, one per kind of violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invariant {
    /// Every request with a `msg_id` gets exactly one reply, addressed to
    /// its sender, and every reply is a valid envelope.
    OneReplyPerRequest,
    /// Breakers move only closed→open, open→half_open, half_open→closed|open.
    AllowedBreakerTransitions,
    /// No call reaches a service while its breaker is open and waiting.
    NoCallThroughOpenBreaker,
    /// Cached data is served only when the service could not answer, and
    /// it is a copy that was really fetched (or warmed) before.
    CacheOnlyWhenServiceCannotAnswer,
    /// Every order acknowledged "queued" is created exactly once or
    /// dead-lettered, across restarts; one idempotency key, one order.
    OrdersNeverLostOrDoubled,
    /// `disabled_features` is what the mode and the kill switches imply.
    DisabledFeaturesMatchModeAndSwitches,
    /// Time-driven work makes progress (no timer firing in a loop).
    TimersMakeProgress,
}

/// A broken invariant, with what showed it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub invariant: Invariant,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.invariant, self.detail)
    }
}

pub type Checked = Result<(), Violation>;

fn violated(invariant: Invariant, detail: impl Into<String>) -> Checked {
    Err(Violation {
        invariant,
        detail: detail.into(),
    })
}

fn check(condition: bool, invariant: Invariant, detail: impl FnOnce() -> String) -> Checked {
    if condition {
        Ok(())
    } else {
        violated(invariant, detail())
    }
}

/// What the breakers and services looked like just before a step, so the
/// step's effects can be judged.
pub struct Before {
    states: [BreakerState; 3],
    open_and_waiting: [bool; 3],
    consecutive_failures: [u32; 3],
    calls: [u64; 3],
    available: [bool; 3],
}

impl Before {
    pub fn capture(node: &Node, now: Instant) -> Self {
        Before {
            states: Service::ALL.map(|s| node.breaker(s).state()),
            open_and_waiting: Service::ALL
                .map(|s| node.breaker(s).reopens_at().is_some_and(|at| now < at)),
            consecutive_failures: Service::ALL.map(|s| node.breaker(s).consecutive_failures()),
            calls: Service::ALL.map(|s| node.backend().calls(s)),
            available: Service::ALL.map(|s| node.backend().is_available(s)),
        }
    }
}

/// The model's view of the load mode, written independently of `load_mode.rs`.
#[derive(Debug, Clone, Copy, Default)]
struct ModeModel {
    /// 0 normal, 1 degraded, 2 critical.
    level: u8,
    killed: [bool; 3],
}

const FEATURES: [&str; 3] = ["recommendations", "search", "reviews"];

impl ModeModel {
    fn follow_cpu(&mut self, cpu: f64) {
        let entered = if cpu >= 95.0 {
            2
        } else if cpu >= 80.0 {
            1
        } else {
            0
        };
        if entered >= self.level {
            self.level = entered;
            return;
        }
        // Step down only below entry - 10: critical holds from 85, degraded from 70.
        self.level = if self.level == 2 && cpu >= 85.0 {
            2
        } else if cpu >= 70.0 {
            1
        } else {
            0
        };
    }

    fn disabled(&self) -> Vec<&'static str> {
        let by_mode = [self.level >= 1, self.level >= 1, self.level >= 2];
        FEATURES
            .iter()
            .enumerate()
            .filter(|&(i, _)| by_mode[i] || self.killed[i])
            .map(|(_, name)| *name)
            .collect()
    }

    fn mode_name(&self) -> &'static str {
        ["normal", "degraded", "critical"][self.level as usize]
    }
}

/// Everything the client side has learned about orders.
#[derive(Default)]
struct OrderLedger {
    /// Request ids acknowledged "queued" (their burst committed).
    acknowledged: BTreeSet<u64>,
    /// Per idempotency key: every request id and order id it was answered with.
    by_key: HashMap<String, (BTreeSet<u64>, BTreeSet<String>)>,
}

/// The checker: the model plus what has been observed so far.
pub struct Checker {
    failure_threshold: u32,
    max_attempts: u32,
    last_states: [BreakerState; 3],
    /// Copies that really were fetched (or warmed at start).
    fetched: HashSet<(Service, RecordId)>,
    modes: ModeModel,
    orders: OrderLedger,
    /// Outcomes seen in the burst in progress, confirmed when it commits.
    unconfirmed: Vec<(Option<String>, Value)>,
}

impl Checker {
    pub fn new(config: &NodeConfig, backend: &Backend) -> Self {
        let mut fetched = HashSet::new();
        for (service, id, _) in backend.warm_records() {
            fetched.insert((service, id));
        }
        Checker {
            failure_threshold: config.breaker.failure_threshold,
            max_attempts: config.queue.max_attempts,
            last_states: [BreakerState::Closed; 3],
            fetched,
            modes: ModeModel::default(),
            orders: OrderLedger::default(),
            unconfirmed: Vec::new(),
        }
    }

    /// A new process: breakers, mode and switches start afresh.
    pub fn node_restarted(&mut self) {
        self.last_states = [BreakerState::Closed; 3];
        self.modes = ModeModel::default();
        self.unconfirmed.clear();
    }

    /// Checks the transitions and calls of one step (a request or a timer).
    pub fn check_step(
        &mut self,
        node: &mut Node,
        before: &Before,
        transitions: Vec<(Service, Transition)>,
    ) -> Checked {
        for (service, transition) in transitions {
            let i = service.index();
            let allowed = matches!(
                (transition.from, transition.to),
                (BreakerState::Closed, BreakerState::Open)
                    | (BreakerState::Open, BreakerState::HalfOpen)
                    | (BreakerState::HalfOpen, BreakerState::Closed)
                    | (BreakerState::HalfOpen, BreakerState::Open)
            );
            check(
                allowed && transition.from == self.last_states[i],
                Invariant::AllowedBreakerTransitions,
                || {
                    format!(
                        "{service}: {} -> {} (last seen {})",
                        transition.from, transition.to, self.last_states[i]
                    )
                },
            )?;
            self.last_states[i] = transition.to;
        }
        for service in Service::ALL {
            let i = service.index();
            check(
                self.last_states[i] == node.breaker(service).state(),
                Invariant::AllowedBreakerTransitions,
                || format!("{service}: changed state without a recorded transition"),
            )?;
            let calls = node.backend().calls(service) - before.calls[i];
            check(
                !(before.open_and_waiting[i] && calls > 0),
                Invariant::NoCallThroughOpenBreaker,
                || format!("{calls} call(s) reached {service} while its breaker was open"),
            )?;
        }
        Ok(())
    }

    /// Checks the replies one request produced.
    pub fn check_replies(
        &mut self,
        node: &Node,
        request: &Outgoing,
        before: &Before,
        output: &[u8],
    ) -> Checked {
        let text = std::str::from_utf8(output).map_err(|_| Violation {
            invariant: Invariant::OneReplyPerRequest,
            detail: "output is not UTF-8".into(),
        })?;
        let mut replies = Vec::new();
        for line in text.lines() {
            let reply: Value = serde_json::from_str(line).map_err(|err| Violation {
                invariant: Invariant::OneReplyPerRequest,
                detail: format!("reply is not JSON ({err}): {line}"),
            })?;
            let valid = reply["src"] == NODE_ID
                && reply["dest"] == request.src
                && reply["body"]["type"].is_string();
            check(valid, Invariant::OneReplyPerRequest, || {
                format!("bad envelope {reply} for {}", request.line)
            })?;
            replies.push(reply);
        }
        let expected = match (&request.body, request.msg_id) {
            (None, _) => 0,
            (Some(_), Some(_)) => 1,
            // No msg_id: answered only when the body has a type.
            (Some(body), None) => usize::from(body.get("type").is_some()),
        };
        check(
            replies.len() == expected,
            Invariant::OneReplyPerRequest,
            || {
                format!(
                    "{} replies to {} (expected {expected})",
                    replies.len(),
                    request.line
                )
            },
        )?;
        let Some(reply) = replies.pop() else {
            return Ok(());
        };
        let body = &reply["body"];
        check(
            body.get("in_reply_to").and_then(Value::as_u64) == request.msg_id,
            Invariant::OneReplyPerRequest,
            || format!("in_reply_to mismatch: {reply} for {}", request.line),
        )?;
        self.check_meaning(node, request, before, body)
    }

    /// What the reply says, against the model.
    fn check_meaning(
        &mut self,
        node: &Node,
        request: &Outgoing,
        before: &Before,
        body: &Value,
    ) -> Checked {
        let sent = request
            .body
            .as_ref()
            .expect("answered requests have bodies");
        match request.kind() {
            Some("get_user") => self.check_read(node, Service::User, sent, before, body),
            Some("get_product") => self.check_read(node, Service::Product, sent, before, body),
            Some("set_mode") if body["type"] == "mode_changed" => {
                match sent.get("mode").and_then(Value::as_str) {
                    Some("auto") | None => {
                        self.modes
                            .follow_cpu(sent["cpu_usage"].as_f64().expect("cpu"));
                    }
                    Some(mode) => {
                        self.modes.level = match mode {
                            "normal" => 0,
                            "degraded" => 1,
                            _ => 2,
                        }
                    }
                }
                self.check_features(body)
            }
            Some("set_feature") if body["type"] == "feature_set" => {
                let feature = sent["feature"].as_str().expect("feature");
                let index = FEATURES.iter().position(|f| *f == feature).expect("known");
                self.modes.killed[index] = !sent["enabled"].as_bool().expect("enabled");
                self.check_features(body)
            }
            Some("get_status") => {
                for service in Service::ALL {
                    // The status is taken mid-request: after a due breaker
                    // half-opened, before queued orders were delivered.
                    let i = service.index();
                    let shown = &body["circuits"][service.name()]["state"];
                    let half_opened =
                        before.states[i] == BreakerState::Open && !before.open_and_waiting[i];
                    let possible = [
                        Some(before.states[i]),
                        Some(node.breaker(service).state()),
                        half_opened.then_some(BreakerState::HalfOpen),
                    ];
                    check(
                        possible
                            .iter()
                            .flatten()
                            .any(|state| *shown == json!(state)),
                        Invariant::AllowedBreakerTransitions,
                        || format!("status shows {service} {shown}, possible {possible:?}"),
                    )?;
                }
                self.check_features(body)
            }
            Some(kind @ ("get_recommendations" | "search" | "get_reviews")) => {
                let feature = match kind {
                    "get_recommendations" => 0,
                    "search" => 1,
                    _ => 2,
                };
                let disabled = self.modes.disabled().contains(&FEATURES[feature]);
                check(
                    body["degraded"] == json!(disabled),
                    Invariant::DisabledFeaturesMatchModeAndSwitches,
                    || format!("{kind} answered {body} with model {:?}", self.modes),
                )
            }
            Some("create_order") if body["type"] == "order_response" => {
                let key = order_key(request, sent);
                self.unconfirmed.push((key, body.clone()));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn check_features(&self, body: &Value) -> Checked {
        let expected = self.modes.disabled();
        check(
            body["disabled_features"] == json!(expected) && body["mode"] == self.modes.mode_name()
                || body["mode"].is_null() && body["disabled_features"] == json!(expected),
            Invariant::DisabledFeaturesMatchModeAndSwitches,
            || {
                format!(
                    "reply {body}, model expects {expected:?} in {}",
                    self.modes.mode_name()
                )
            },
        )
    }

    fn check_read(
        &mut self,
        node: &Node,
        service: Service,
        sent: &Value,
        before: &Before,
        body: &Value,
    ) -> Checked {
        let (record_field, cache_flag) = match service {
            Service::User => ("user", "from_cache"),
            _ => ("product", "_cached"),
        };
        let id = serde_json::from_value::<RecordId>(sent[format!("{record_field}_id")].clone());
        let forced = sent.get("force_failures").map_or(Some(0), Value::as_u64);
        let unavailable = sent
            .get("service_unavailable")
            .map_or(Some(false), Value::as_bool);
        let (Ok(id), Some(forced), Some(unavailable)) = (id, forced, unavailable) else {
            return check(body["code"] == 12, Invariant::OneReplyPerRequest, || {
                format!("malformed read answered {body}")
            });
        };
        let i = service.index();
        let state = if before.states[i] == BreakerState::Open && !before.open_and_waiting[i] {
            BreakerState::HalfOpen
        } else {
            before.states[i]
        };
        let breaker_lets_call = match state {
            BreakerState::Closed => {
                forced + u64::from(before.consecutive_failures[i])
                    < u64::from(self.failure_threshold)
            }
            BreakerState::HalfOpen => forced == 0,
            BreakerState::Open => false,
        };
        let could_answer = before.available[i] && !unavailable && breaker_lets_call;
        let invariant = Invariant::CacheOnlyWhenServiceCannotAnswer;
        if body["type"] == "error" {
            return check(body["code"] == 11 && !could_answer, invariant, || {
                format!("error {body} although the service could answer")
            });
        }
        let from_cache = body[cache_flag].as_bool().expect("cache flag");
        let expected_record = json!({"id": id, "name": if service == Service::User { "John Doe" } else { "Product" }});
        check(body[record_field] == expected_record, invariant, || {
            format!(
                "record {} is not the service's copy of {id}",
                body[record_field]
            )
        })?;
        if from_cache {
            check(!could_answer, invariant, || {
                format!("served from cache although {service} could answer: {body}")
            })?;
            check(
                self.fetched.contains(&(service, id.clone())),
                invariant,
                || format!("served a copy of {service} {id} that was never fetched"),
            )
        } else {
            check(could_answer, invariant, || {
                format!("claims a fresh {service} answer the service could not give: {body}")
            })?;
            self.fetched.insert((service, id));
            if service == Service::User {
                check(
                    body["circuit_state"] == json!(node.breaker(service).state()),
                    Invariant::AllowedBreakerTransitions,
                    || {
                        format!(
                            "circuit_state {} is not the breaker's",
                            body["circuit_state"]
                        )
                    },
                )?;
            }
            Ok(())
        }
    }

    /// The burst committed: its order outcomes are now promises.
    pub fn burst_committed(&mut self) -> Checked {
        for (key, body) in std::mem::take(&mut self.unconfirmed) {
            let request_id = body["request_id"].as_u64();
            let order_id = body["order_id"].as_str().map(str::to_owned);
            if body["status"] == "queued" {
                self.orders
                    .acknowledged
                    .insert(request_id.expect("queued replies carry request_id"));
            }
            if let Some(key) = key {
                let (request_ids, order_ids) = self.orders.by_key.entry(key.clone()).or_default();
                request_ids.extend(request_id);
                order_ids.extend(order_id);
                check(
                    request_ids.len() <= 1 && order_ids.len() <= 1,
                    Invariant::OrdersNeverLostOrDoubled,
                    || format!("key {key} answered with {request_ids:?} / {order_ids:?}"),
                )?;
            }
        }
        Ok(())
    }

    /// The burst was lost in a crash: its replies were never sent.
    pub fn burst_lost(&mut self) {
        self.unconfirmed.clear();
    }

    /// At the end, after every service stayed up long enough: every
    /// acknowledged order is created or dead-lettered, and each key maps to
    /// one order.
    pub fn check_orders_settled(&self, node: &Node) -> Checked {
        let invariant = Invariant::OrdersNeverLostOrDoubled;
        let mut order_of_request = BTreeMap::new();
        for &request_id in &self.orders.acknowledged {
            let Some(order) = node.queue().find_by_request_id(request_id) else {
                return violated(invariant, format!("queued request {request_id} was lost"));
            };
            match order.status {
                OrderStatus::Created => {
                    order_of_request.insert(request_id, order.order_id.clone().expect("id"));
                }
                OrderStatus::DeadLetter => {
                    check(order.attempts >= self.max_attempts, invariant, || {
                        format!(
                            "request {request_id} dead-lettered after {} attempts",
                            order.attempts
                        )
                    })?
                }
                OrderStatus::Queued => {
                    return violated(
                        invariant,
                        format!("request {request_id} still queued after a long healthy spell"),
                    );
                }
            }
        }
        for (key, (request_ids, order_ids)) in &self.orders.by_key {
            let mut all_orders = order_ids.clone();
            all_orders.extend(
                request_ids
                    .iter()
                    .filter_map(|id| order_of_request.get(id).cloned()),
            );
            check(all_orders.len() <= 1, invariant, || {
                format!("key {key} has orders {all_orders:?}")
            })?;
        }
        Ok(())
    }
}

/// The idempotency key a client meant, as grace derives it.
fn order_key(request: &Outgoing, sent: &Value) -> Option<String> {
    match (sent.get("idempotency_key"), request.msg_id) {
        (Some(key), _) => Some(format!("key:{key}")),
        (None, Some(msg_id)) => Some(format!("msg:{}:{msg_id}", request.src)),
        (None, None) => None,
    }
}
