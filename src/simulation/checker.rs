//! The invariants, and the simple model of grace the simulator checks the
//! real node against after every event.
//!
//! An *event* is one thing the node is handed: a request, a call's answer,
//! or the time. The checker sees what went in and what came out (breaker
//! transitions, calls made, reply lines, journal rows) and judges them
//! against a model that is deliberately naive: it recomputes from first
//! principles what the node should have done (which calls are in flight,
//! which of them ended in this event, which features should be off) instead
//! of reusing the node's own code.

use super::network::{Arrival, SERVICE_COUNT, write_key};
use super::workload::{NODE_ID, Outgoing};
use crate::core::breaker::BreakerState;
use crate::core::{Call, CallId, CallRequest, CallResult, ServiceStats, TransitionRecord};
use crate::demo::DemoData;
use crate::demo::in_process::{DemoCall, DemoRequest};
use crate::maelstrom::node::{Node, NodeConfig};
use crate::protocol::RecordId;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::Instant;

/// The demo services by index, as the node adds them.
pub const USER: usize = 0;
pub const PRODUCT: usize = 1;
pub const ORDER: usize = 2;
const SERVICE_NAMES: [&str; SERVICE_COUNT] = ["user", "product", "order"];

/// The promises the simulator checks, one per kind of violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invariant {
    /// Every request with a `msg_id` gets exactly one reply, addressed to
    /// its sender, and every reply is a valid envelope (only a crash may
    /// take a reply with it).
    OneReplyPerRequest,
    /// Breakers move only closed→open, open→half_open, half_open→closed|open.
    AllowedBreakerTransitions,
    /// No call leaves while its service's breaker is open and waiting.
    NoCallThroughOpenBreaker,
    /// Cached data is served only when the service could not answer (the
    /// breaker refused, the call failed or timed out), and it is a copy
    /// that was really fetched (or warmed) before.
    CacheOnlyWhenServiceCannotAnswer,
    /// Every order acknowledged "queued" is created exactly once or
    /// dead-lettered, across crashes; one idempotency key, one order; an
    /// order reported created exists at the order service.
    OrdersNeverLostOrDoubled,
    /// `disabled_features` is what the mode and the kill switches imply.
    DisabledFeaturesMatchModeAndSwitches,
    /// Time-driven work makes progress: after a timer fires, the next one
    /// is later (no timer due again at once, no loop within an instant).
    TimersMakeProgress,
    /// A half-open breaker lets at most `permitted_calls_in_half_open`
    /// probes through before it decides.
    ProbesWithinPermits,
    /// A request waiting on a call is answered only when a call of its
    /// service ended (answered or timed out); one answered at once had no
    /// call to wait for (the breaker refused it, or the feature is off).
    NoReplyBeforeCallEnded,
    /// Identical reads in flight together share one upstream call.
    OneCallPerCoalescedGroup,
    /// At most one delivery (or direct create) of an order is in flight.
    OneDeliveryInFlightPerOrder,
    /// An answer that comes after its call timed out changes nothing.
    LateAnswerChangesNothing,
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

pub fn violated(invariant: Invariant, detail: impl Into<String>) -> Checked {
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

/// What the node is handed in one event.
pub enum EventKind<'a> {
    Request(&'a Outgoing),
    /// A call's answer (or its failure) came back.
    Answer {
        id: CallId,
        result: &'a CallResult,
    },
    /// The time the node asked to be woken at.
    Timeout,
}

/// What came out of the node in one event.
pub struct Observed {
    pub transitions: Vec<TransitionRecord>,
    pub calls: Vec<Call<DemoCall>>,
    pub health_changes: usize,
    pub output: Vec<u8>,
    pub journal_rows: usize,
    /// The node's next deadline after the event.
    pub next_timeout: Option<Instant>,
}

/// The node as it looked just before an event, so the event's effects can
/// be judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Before {
    states: [BreakerState; SERVICE_COUNT],
    reopens_at: [Option<Instant>; SERVICE_COUNT],
    consecutive_failures: [u32; SERVICE_COUNT],
    stats: [ServiceStats; SERVICE_COUNT],
    parked: usize,
    calls_in_flight: usize,
    cache_entries: usize,
    queue_depth: usize,
    late_answers: u64,
}

impl Before {
    pub fn capture(node: &Node) -> Self {
        let core = node.core();
        let ids = node.services();
        let services = [ids.user, ids.product, ids.order];
        Before {
            states: services.map(|s| core.breaker_state(s)),
            reopens_at: services.map(|s| core.breaker(s).reopens_at()),
            consecutive_failures: services.map(|s| core.breaker(s).consecutive_failures()),
            stats: services.map(|s| core.stats(s)),
            parked: node.parked_requests(),
            calls_in_flight: core.calls_in_flight(),
            cache_entries: core.cache().len(),
            queue_depth: core.queue().depth(),
            late_answers: core.late_answers(),
        }
    }

    fn open_and_waiting(&self, service: usize, now: Instant) -> bool {
        self.states[service] == BreakerState::Open
            && self.reopens_at[service].is_some_and(|until| now < until)
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
    /// Request ids acknowledged "queued" (their reply was sent).
    acknowledged: BTreeSet<u64>,
    /// Per idempotency key: every request id and order id it was answered with.
    by_key: HashMap<String, (BTreeSet<u64>, BTreeSet<String>)>,
}

/// A call of the running node that has not ended, as the world saw it leave.
#[derive(Debug, Clone)]
struct CallRecord {
    service: usize,
    /// What a front-door call asked for; `None` for a queued delivery.
    asked: Option<DemoCall>,
    /// The order it writes, for a delivery or a direct create.
    write_key: Option<String>,
    deadline: Instant,
}

/// How a call ended within the event being checked.
#[derive(Debug, Clone)]
struct Ended {
    record: CallRecord,
    /// The answer, when it was answered with a status that is not a
    /// failure; `None` when it failed or timed out.
    answered: Option<Value>,
}

/// A read as the model expects it to be served.
#[derive(Debug, Clone)]
struct ExpectedRead {
    service: usize,
    /// The call that answers it (a coalesced read shares it).
    call: DemoCall,
    /// The service's own copy, for comparing what is served.
    record: Value,
    /// For feature reads: whether the model had the feature off when the
    /// request came.
    feature_off: Option<bool>,
}

/// What a request expects of its reply.
#[derive(Debug, Clone)]
enum Expectation {
    /// A user or product read, or a feature read.
    Read(ExpectedRead),
    /// Fields the handler must refuse with code 12.
    Malformed,
    /// An order: created, queued, or told where its first stands.
    Order { key: Option<String> },
    /// An operator's queue run: answered when it ends.
    QueueRun,
    /// Answered in its own event (modes, status, echo, ...).
    AtOnce,
}

/// A request waiting for its reply.
#[derive(Debug, Clone)]
struct Outstanding {
    request: Outgoing,
    /// The event that handed it to the node.
    event: u64,
    expectation: Expectation,
}

/// What a run saw, for the long-run report.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckerTally {
    pub events: u64,
    pub replies: u64,
    pub late_answers: u64,
    pub calls_timed_out: u64,
    pub requests_lost_in_crashes: u64,
    pub repeated_order_deliveries: u64,
    pub stale_replies: u64,
}

/// The checker: the model plus what has been observed so far.
pub struct Checker {
    data: DemoData,
    max_attempts: u32,
    permitted_probes: u32,
    last_states: [BreakerState; SERVICE_COUNT],
    /// Calls made in the current half-open episode of each breaker.
    probes: [u32; SERVICE_COUNT],
    /// Calls of the running node that have not ended.
    calls: BTreeMap<CallId, CallRecord>,
    /// Reads whose answers a node really received (or warmed at start).
    fetched: HashSet<(usize, String)>,
    /// Delivery keys the order service has created an order for.
    created_keys: HashSet<String>,
    modes: ModeModel,
    orders: OrderLedger,
    /// Order outcomes produced but not yet sent, confirmed when committed.
    unconfirmed: Vec<(Option<String>, Value)>,
    /// Requests with a `msg_id` waiting for their reply.
    outstanding: BTreeMap<u64, Outstanding>,
    /// Requests without a `msg_id` (but with a type) waiting, oldest first.
    /// Their replies say not which request they answer: one in the
    /// request's own event is its own, a later one is counted only.
    outstanding_anonymous: Vec<Outstanding>,
    /// Requests whose replies went down with a crashed node.
    lost: HashSet<u64>,
    event: u64,
    /// Calls that ended in the event being checked.
    ended: Vec<Ended>,
    /// The event is an answer to a call that had already timed out.
    late: bool,
    /// The event is the node's timer.
    timer_event: bool,
    /// Statuses the services' policy counts as failures.
    failure_statuses: Vec<u16>,
    tally: CheckerTally,
}

impl Checker {
    pub fn new(config: &NodeConfig, data: &DemoData) -> Self {
        let mut fetched = HashSet::new();
        for (id, _) in data.warm_users() {
            fetched.insert((USER, read_key(&DemoRequest::User { id })));
        }
        for (id, _) in data.warm_products() {
            fetched.insert((PRODUCT, read_key(&DemoRequest::Product { id })));
        }
        Checker {
            data: data.clone(),
            max_attempts: config.queue.max_attempts,
            permitted_probes: config.service.breaker.permitted_calls_in_half_open.max(1),
            last_states: [BreakerState::Closed; SERVICE_COUNT],
            probes: [0; SERVICE_COUNT],
            calls: BTreeMap::new(),
            fetched,
            created_keys: HashSet::new(),
            modes: ModeModel::default(),
            orders: OrderLedger::default(),
            unconfirmed: Vec::new(),
            outstanding: BTreeMap::new(),
            outstanding_anonymous: Vec::new(),
            lost: HashSet::new(),
            event: 0,
            ended: Vec::new(),
            late: false,
            timer_event: false,
            failure_statuses: config.service.failure_statuses.clone(),
            tally: CheckerTally::default(),
        }
    }

    pub fn tally(&self) -> CheckerTally {
        self.tally
    }

    /// A new process: breakers, mode and switches start afresh; the old
    /// process's calls will never be answered to anyone.
    pub fn node_restarted(&mut self) {
        self.last_states = [BreakerState::Closed; SERVICE_COUNT];
        self.probes = [0; SERVICE_COUNT];
        self.calls.clear();
        self.modes = ModeModel::default();
    }

    /// The node crashed: replies not sent are lost, and so are the replies
    /// of every request still waiting.
    pub fn crashed(&mut self) {
        self.unconfirmed.clear();
        self.tally.requests_lost_in_crashes +=
            (self.outstanding.len() + self.outstanding_anonymous.len()) as u64;
        self.lost.extend(self.outstanding.keys());
        self.outstanding.clear();
        self.outstanding_anonymous.clear();
    }

    /// A service processed a call (whoever made it, whether or not the
    /// answer gets back): an order it created exists from now on.
    pub fn service_processed(&mut self, arrival: &Arrival) {
        if let Some(key) = write_key(&arrival.call)
            && let CallResult::Answered(response) = &arrival.result
            && response.status == 201
        {
            self.created_keys.insert(key.to_string());
        }
    }

    /// Starts an event at `now`: which calls it ends, and the request it
    /// brings.
    pub fn begin_event(&mut self, kind: &EventKind<'_>, now: Instant) {
        self.event += 1;
        self.timer_event = matches!(kind, EventKind::Timeout);
        self.tally.events += 1;
        self.ended.clear();
        self.late = false;
        match kind {
            EventKind::Answer { id, result } => match self.calls.remove(id) {
                Some(record) => {
                    let answered = match result {
                        CallResult::Answered(response)
                            if !self.failure_statuses.contains(&response.status) =>
                        {
                            Some(serde_json::from_slice(&response.body).unwrap_or(Value::Null))
                        }
                        _ => None,
                    };
                    if answered.is_some()
                        && let Some(asked) = &record.asked
                    {
                        self.fetched
                            .insert((record.service, read_key(&asked.request)));
                    }
                    self.ended.push(Ended { record, answered });
                }
                None => {
                    self.late = true;
                    self.tally.late_answers += 1;
                }
            },
            EventKind::Request(request) => {
                // A request first does whatever time has made due.
                self.time_out_calls(now);
                self.expect_reply(request);
            }
            EventKind::Timeout => self.time_out_calls(now),
        }
    }

    /// Calls past their deadline end in this event (the node fails them).
    fn time_out_calls(&mut self, now: Instant) {
        let due: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, record)| record.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let record = self.calls.remove(&id).expect("listed");
            self.tally.calls_timed_out += 1;
            self.ended.push(Ended {
                record,
                answered: None,
            });
        }
    }

    fn expect_reply(&mut self, request: &Outgoing) {
        let Some(body) = &request.body else {
            return;
        };
        let outstanding = Outstanding {
            request: request.clone(),
            event: self.event,
            expectation: self.expectation(request, body),
        };
        match request.msg_id {
            Some(msg_id) => {
                self.outstanding.insert(msg_id, outstanding);
            }
            None if body.get("type").is_some() => self.outstanding_anonymous.push(outstanding),
            None => {}
        }
    }

    /// What the model expects of the reply to `body`.
    fn expectation(&self, request: &Outgoing, body: &Value) -> Expectation {
        let id_text = |field: &str| {
            serde_json::from_value::<RecordId>(body[field].clone())
                .ok()
                .map(|id| serde_json::to_string(&id).expect("ids serialize"))
        };
        let record = |bytes: Option<bytes::Bytes>| {
            bytes.map_or(Value::Null, |bytes| {
                serde_json::from_slice(&bytes).expect("demo records are JSON")
            })
        };
        let faults = || {
            let forced = body.get("force_failures").map_or(Some(0), Value::as_u64);
            let unavailable = body
                .get("service_unavailable")
                .map_or(Some(false), Value::as_bool);
            forced.zip(unavailable)
        };
        let feature = |index: usize, request: Option<DemoRequest>| match request {
            Some(request) => Expectation::Read(ExpectedRead {
                service: PRODUCT,
                record: record(match &request {
                    DemoRequest::Recommendations { user_id } => {
                        Some(self.data.recommendations(user_id))
                    }
                    DemoRequest::Search { query } => Some(self.data.search(query)),
                    DemoRequest::Reviews { product_id } => self.data.reviews(product_id),
                    _ => None,
                }),
                call: DemoCall::new(request),
                feature_off: Some(self.modes.disabled().contains(&FEATURES[index])),
            }),
            None => Expectation::Malformed,
        };
        match request.kind() {
            Some(kind @ ("get_user" | "get_product")) => {
                let (service, field) = if kind == "get_user" {
                    (USER, "user_id")
                } else {
                    (PRODUCT, "product_id")
                };
                let (Some(id), Some((_, unavailable))) = (id_text(field), faults()) else {
                    return Expectation::Malformed;
                };
                let (asked, copy) = if service == USER {
                    (DemoRequest::User { id: id.clone() }, self.data.user(&id))
                } else {
                    (
                        DemoRequest::Product { id: id.clone() },
                        self.data.product(&id),
                    )
                };
                Expectation::Read(ExpectedRead {
                    service,
                    call: DemoCall::new(asked).failing_if(unavailable),
                    record: record(copy),
                    feature_off: None,
                })
            }
            Some("get_recommendations") => feature(
                0,
                id_text("user_id").map(|user_id| DemoRequest::Recommendations { user_id }),
            ),
            Some("search") => feature(
                1,
                body["query"].as_str().map(|query| DemoRequest::Search {
                    query: query.to_string(),
                }),
            ),
            Some("get_reviews") => feature(
                2,
                id_text("product_id").map(|product_id| DemoRequest::Reviews { product_id }),
            ),
            Some("create_order") => Expectation::Order {
                key: order_key(request, body),
            },
            Some("process_queue") => Expectation::QueueRun,
            _ => Expectation::AtOnce,
        }
    }

    /// Checks one event: what the node did, against the model.
    pub fn check_event(
        &mut self,
        node: &Node,
        now: Instant,
        before: &Before,
        kind: &EventKind<'_>,
        observed: &Observed,
    ) -> Checked {
        if self.late {
            self.check_late_answer_changed_nothing(node, before, observed)?;
        }
        let seen_states = self.check_transitions(node, before, observed)?;
        if matches!(kind, EventKind::Timeout) {
            check(
                observed.next_timeout.is_none_or(|due| due > now),
                Invariant::TimersMakeProgress,
                || {
                    let overdue = observed
                        .next_timeout
                        .map(|due| now.saturating_duration_since(due))
                        .unwrap_or_default();
                    format!(
                        "the timer fired and the node is due again at once ({overdue:?} ago): \
                         a runtime sleeping until then would spin"
                    )
                },
            )?;
        }
        self.check_calls(now, before, observed)?;
        self.check_replies(&observed.output, &seen_states)
    }

    fn check_late_answer_changed_nothing(
        &self,
        node: &Node,
        before: &Before,
        observed: &Observed,
    ) -> Checked {
        let after = Before::capture(node);
        let expected = Before {
            late_answers: before.late_answers + 1,
            ..before.clone()
        };
        let invariant = Invariant::LateAnswerChangesNothing;
        check(observed.output.is_empty(), invariant, || {
            format!(
                "a late answer produced replies: {}",
                String::from_utf8_lossy(&observed.output)
            )
        })?;
        check(
            observed.calls.is_empty()
                && observed.transitions.is_empty()
                && observed.journal_rows == 0
                && observed.health_changes == 0,
            invariant,
            || {
                format!(
                    "a late answer made {} call(s), {} transition(s), {} journal row(s)",
                    observed.calls.len(),
                    observed.transitions.len(),
                    observed.journal_rows
                )
            },
        )?;
        check(after == expected, invariant, || {
            format!("a late answer changed the node: before {before:?}, after {after:?}")
        })
    }

    /// Checks the event's breaker transitions; returns every state each
    /// breaker was in during the event.
    fn check_transitions(
        &mut self,
        node: &Node,
        before: &Before,
        observed: &Observed,
    ) -> Result<[Vec<BreakerState>; SERVICE_COUNT], Violation> {
        let mut seen: [Vec<BreakerState>; SERVICE_COUNT] = before.states.map(|state| vec![state]);
        for record in &observed.transitions {
            let i = record.service.index();
            let transition = record.transition;
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
                        "{}: {} -> {} (last seen {})",
                        SERVICE_NAMES[i], transition.from, transition.to, self.last_states[i]
                    )
                },
            )?;
            if transition.to == BreakerState::HalfOpen {
                self.probes[i] = 0;
            }
            self.last_states[i] = transition.to;
            seen[i].push(transition.to);
        }
        let ids = node.services();
        for (i, service) in [ids.user, ids.product, ids.order].into_iter().enumerate() {
            check(
                self.last_states[i] == node.core().breaker_state(service),
                Invariant::AllowedBreakerTransitions,
                || format!("{}: changed state without a transition", SERVICE_NAMES[i]),
            )?;
        }
        Ok(seen)
    }

    /// Checks the calls the event made, then tracks them.
    fn check_calls(&mut self, now: Instant, before: &Before, observed: &Observed) -> Checked {
        let mut made = [0u32; SERVICE_COUNT];
        for call in &observed.calls {
            made[call.service.index()] += 1;
        }
        for i in 0..SERVICE_COUNT {
            let stayed_open = observed
                .transitions
                .iter()
                .all(|record| record.service.index() != i);
            check(
                made[i] == 0 || !(before.open_and_waiting(i, now) && stayed_open),
                Invariant::NoCallThroughOpenBreaker,
                || {
                    format!(
                        "{} call(s) to {} while its breaker was open until +{:?}",
                        made[i],
                        SERVICE_NAMES[i],
                        before.reopens_at[i].map(|until| until.saturating_duration_since(now))
                    )
                },
            )?;
            if self.last_states[i] == BreakerState::HalfOpen {
                self.probes[i] += made[i];
                check(
                    self.probes[i] <= self.permitted_probes,
                    Invariant::ProbesWithinPermits,
                    || {
                        format!(
                            "{} probes to {} in one half-open spell, {} permitted",
                            self.probes[i], SERVICE_NAMES[i], self.permitted_probes
                        )
                    },
                )?;
            }
        }
        for call in &observed.calls {
            let i = call.service.index();
            let record = CallRecord {
                service: i,
                asked: match &call.request {
                    CallRequest::Send(demo) => Some(demo.clone()),
                    CallRequest::Deliver(_) => None,
                },
                write_key: write_key(call).map(str::to_string),
                deadline: call.deadline,
            };
            if let Some(asked) = record.asked.as_ref().filter(|asked| is_coalescible(asked)) {
                let twin = self
                    .calls
                    .values()
                    .find(|other| other.service == i && other.asked.as_ref() == Some(asked));
                check(twin.is_none(), Invariant::OneCallPerCoalescedGroup, || {
                    format!(
                        "a second call to {} for {:?} while one is in flight",
                        SERVICE_NAMES[i], asked.request
                    )
                })?;
            }
            if let Some(key) = &record.write_key {
                let twin = self
                    .calls
                    .values()
                    .find(|other| other.write_key.as_ref() == Some(key));
                check(
                    twin.is_none(),
                    Invariant::OneDeliveryInFlightPerOrder,
                    || format!("a second write of order {key} while one is in flight"),
                )?;
            }
            self.calls.insert(call.id, record);
        }
        Ok(())
    }

    /// Checks the reply lines one event produced.
    fn check_replies(
        &mut self,
        output: &[u8],
        seen_states: &[Vec<BreakerState>; SERVICE_COUNT],
    ) -> Checked {
        let invariant = Invariant::OneReplyPerRequest;
        let text = std::str::from_utf8(output).map_err(|_| Violation {
            invariant,
            detail: "output is not UTF-8".into(),
        })?;
        for line in text.lines() {
            self.tally.replies += 1;
            let reply: Value = serde_json::from_str(line).map_err(|err| Violation {
                invariant,
                detail: format!("reply is not JSON ({err}): {line}"),
            })?;
            let body = &reply["body"];
            check(
                reply["src"] == NODE_ID && reply["dest"].is_string() && body["type"].is_string(),
                invariant,
                || format!("bad envelope {reply}"),
            )?;
            let Some(in_reply_to) = body.get("in_reply_to") else {
                let client = reply["dest"].as_str().unwrap_or_default();
                let own = self.outstanding_anonymous.iter().position(|waiting| {
                    waiting.event == self.event && waiting.request.src == client
                });
                if let Some(own) = own {
                    let outstanding = self.outstanding_anonymous.remove(own);
                    self.check_meaning(&outstanding, body, seen_states)?;
                    continue;
                }
                let Some(oldest) = self
                    .outstanding_anonymous
                    .iter()
                    .position(|waiting| waiting.request.src == client)
                else {
                    return violated(invariant, format!("a reply nobody waits for: {reply}"));
                };
                self.outstanding_anonymous.remove(oldest);
                continue;
            };
            let msg_id = in_reply_to.as_u64();
            let Some(outstanding) = msg_id.and_then(|id| self.outstanding.remove(&id)) else {
                let lost = msg_id.is_some_and(|id| self.lost.contains(&id));
                return violated(
                    invariant,
                    format!(
                        "a second reply, or one nobody waits for (lost in a crash: {lost}): {reply}"
                    ),
                );
            };
            check(reply["dest"] == outstanding.request.src, invariant, || {
                format!(
                    "reply {reply} to the wrong client for {}",
                    outstanding.request.line
                )
            })?;
            self.check_meaning(&outstanding, body, seen_states)?;
        }
        Ok(())
    }

    /// What the reply says, against the model.
    fn check_meaning(
        &mut self,
        outstanding: &Outstanding,
        body: &Value,
        seen_states: &[Vec<BreakerState>; SERVICE_COUNT],
    ) -> Checked {
        let request = &outstanding.request;
        let sent = request
            .body
            .as_ref()
            .expect("answered requests have bodies");
        let own_event = outstanding.event == self.event;
        match &outstanding.expectation {
            Expectation::Malformed => check(
                body["code"] == 12 && own_event,
                Invariant::OneReplyPerRequest,
                || format!("malformed {} answered {body}", request.line),
            ),
            Expectation::Read(read) => self.check_read(outstanding, read, body, seen_states),
            Expectation::Order { key } => {
                self.check_answered_when_something_ended(outstanding, body)?;
                if body["type"] != "order_response" {
                    return Ok(());
                }
                if body["status"] == "created"
                    && let Some(key) = key
                {
                    check(
                        self.created_keys.contains(key),
                        Invariant::OrdersNeverLostOrDoubled,
                        || {
                            format!(
                                "order {key} reported created, but the order service never created it: {body}"
                            )
                        },
                    )?;
                }
                self.unconfirmed.push((key.clone(), body.clone()));
                Ok(())
            }
            Expectation::QueueRun => self.check_answered_when_something_ended(outstanding, body),
            Expectation::AtOnce => {
                check(own_event, Invariant::OneReplyPerRequest, || {
                    format!("{} answered later: {body}", request.line)
                })?;
                self.check_at_once(sent, body, seen_states)
            }
        }
    }

    /// A reply that waited comes when a call ended or a deadline passed.
    fn check_answered_when_something_ended(
        &self,
        outstanding: &Outstanding,
        body: &Value,
    ) -> Checked {
        let own_event = outstanding.event == self.event;
        check(
            own_event || !self.ended.is_empty() || self.timer_event,
            Invariant::NoReplyBeforeCallEnded,
            || {
                format!(
                    "{} answered {body} in an event that ended no call",
                    outstanding.request.line
                )
            },
        )
    }

    fn check_at_once(
        &mut self,
        sent: &Value,
        body: &Value,
        seen_states: &[Vec<BreakerState>; SERVICE_COUNT],
    ) -> Checked {
        match sent["type"].as_str() {
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
                for (i, name) in SERVICE_NAMES.iter().enumerate() {
                    let shown = &body["circuits"][name]["state"];
                    check(
                        seen_states[i].iter().any(|state| *shown == json!(state)),
                        Invariant::AllowedBreakerTransitions,
                        || format!("status shows {name} {shown}, seen {:?}", seen_states[i]),
                    )?;
                }
                self.check_features(body)
            }
            _ => Ok(()),
        }
    }

    fn check_features(&self, body: &Value) -> Checked {
        let expected = self.modes.disabled();
        check(
            body["disabled_features"] == json!(expected)
                && (body["mode"] == self.modes.mode_name() || body["mode"].is_null()),
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
        outstanding: &Outstanding,
        read: &ExpectedRead,
        body: &Value,
        seen_states: &[Vec<BreakerState>; SERVICE_COUNT],
    ) -> Checked {
        let request = &outstanding.request;
        let own_event = outstanding.event == self.event;
        let service = read.service;
        let feature_list = match request.kind() {
            Some("get_recommendations") => Some("recommendations"),
            Some("search") => Some("results"),
            Some("get_reviews") => Some("reviews"),
            _ => None,
        };
        if read.feature_off == Some(true) {
            return check(
                own_event
                    && body["degraded"] == true
                    && feature_list.is_some_and(|list| body[list] == json!([])),
                Invariant::DisabledFeaturesMatchModeAndSwitches,
                || {
                    format!(
                        "{} answered {body} (in its own event: {own_event}) with the feature off in {:?}",
                        request.line, self.modes
                    )
                },
            );
        }
        // Answered at once only when there was no call to wait for.
        let refusing = self.refusing(service);
        let invariant = Invariant::NoReplyBeforeCallEnded;
        if own_event {
            check(refusing, invariant, || {
                format!(
                    "{} answered {body} at once, although {}'s breaker ({}) let calls through",
                    request.line, SERVICE_NAMES[service], self.last_states[service]
                )
            })?;
        } else {
            check(
                self.ended
                    .iter()
                    .any(|ended| ended.record.service == service),
                invariant,
                || {
                    format!(
                        "{} answered {body} in an event that ended no call to {}",
                        request.line, SERVICE_NAMES[service]
                    )
                },
            )?;
        }
        // Fresh exactly when this event brought the service's answer to it.
        let answer = self.ended.iter().find_map(|ended| {
            (ended.record.service == service && ended.record.asked.as_ref() == Some(&read.call))
                .then_some(ended.answered.as_ref())
                .flatten()
        });
        let invariant = Invariant::CacheOnlyWhenServiceCannotAnswer;
        let (served, from_cache) = match (request.kind(), feature_list) {
            (_, Some(list)) => (&body[list], body["degraded"].as_bool()),
            (Some("get_user"), _) => (&body["user"], body["from_cache"].as_bool()),
            _ => (&body["product"], body["_cached"].as_bool()),
        };
        if body["type"] == "error" {
            return check(body["code"] == 11 && answer.is_none(), invariant, || {
                format!(
                    "{} answered error {body} although the service answered it",
                    request.line
                )
            });
        }
        let Some(from_cache) = from_cache else {
            return violated(invariant, format!("{} answered {body}", request.line));
        };
        if from_cache {
            self.tally.stale_replies += 1;
            check(answer.is_none(), invariant, || {
                format!(
                    "{} served {body} from the cache although the service's answer came in this event",
                    request.line
                )
            })?;
            let nothing = feature_list.is_some() && *served == json!([]);
            let key = (service, read_key(&read.call.request));
            check(
                nothing || (*served == read.record && self.fetched.contains(&key)),
                invariant,
                || format!("{} served {served}, a copy never fetched", request.line),
            )
        } else {
            check(
                answer.is_some_and(|answer| answer == served) && *served == read.record,
                invariant,
                || {
                    format!(
                        "{} claims a fresh answer {served} the service did not give in this event ({answer:?})",
                        request.line
                    )
                },
            )?;
            if service == USER {
                check(
                    seen_states[USER]
                        .iter()
                        .any(|state| body["circuit_state"] == json!(state)),
                    Invariant::AllowedBreakerTransitions,
                    || {
                        format!(
                            "circuit_state {} is none of {:?}",
                            body["circuit_state"], seen_states[USER]
                        )
                    },
                )?;
            }
            Ok(())
        }
    }

    /// Whether `service`'s breaker refuses calls now: open and waiting, or
    /// half-open with every probe out.
    fn refusing(&self, service: usize) -> bool {
        match self.last_states[service] {
            BreakerState::Open => true,
            BreakerState::HalfOpen => self.probes[service] >= self.permitted_probes,
            BreakerState::Closed => false,
        }
    }

    /// The replies produced since the last commit were sent: their order
    /// outcomes are now promises.
    pub fn replies_sent(&mut self) -> Checked {
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

    /// Every request not lost in a crash has had its reply.
    pub fn check_all_answered(&self, when: &str) -> Checked {
        let invariant = Invariant::OneReplyPerRequest;
        if let Some((msg_id, outstanding)) = self.outstanding.iter().next() {
            return violated(
                invariant,
                format!(
                    "{when}: request {msg_id} never answered: {}",
                    outstanding.request.line
                ),
            );
        }
        match self.outstanding_anonymous.first() {
            Some(outstanding) => violated(
                invariant,
                format!(
                    "{when}: a request without msg_id never answered: {}",
                    outstanding.request.line
                ),
            ),
            None => Ok(()),
        }
    }

    /// At the end, after every service stayed up long enough: every
    /// acknowledged order is created or dead-lettered, and each key maps to
    /// one order, which the order service holds.
    pub fn check_orders_settled(&mut self, node: &Node, repeated_deliveries: u64) -> Checked {
        let invariant = Invariant::OrdersNeverLostOrDoubled;
        self.tally.repeated_order_deliveries = repeated_deliveries;
        let mut order_of_request = BTreeMap::new();
        for &request_id in &self.orders.acknowledged {
            let Some(write) = node.core().queue().find_by_request_id(request_id) else {
                return violated(invariant, format!("queued request {request_id} was lost"));
            };
            match write.status {
                crate::core::queue::WriteStatus::Delivered => {
                    let key = write.delivery_key();
                    check(self.created_keys.contains(&key), invariant, || {
                        format!("request {request_id} delivered, but {key} was never created")
                    })?;
                    order_of_request.insert(request_id, write.result_id.clone().expect("id"));
                }
                crate::core::queue::WriteStatus::DeadLetter => {
                    check(write.attempts >= self.max_attempts, invariant, || {
                        format!(
                            "request {request_id} dead-lettered after {} attempts",
                            write.attempts
                        )
                    })?
                }
                crate::core::queue::WriteStatus::Queued => {
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

/// Whether reads asking this share a call (a read that asks for its own
/// failure does not; writes and forced failures never do).
fn is_coalescible(asked: &DemoCall) -> bool {
    !asked.fail
        && matches!(
            asked.request,
            DemoRequest::User { .. }
                | DemoRequest::Product { .. }
                | DemoRequest::Reviews { .. }
                | DemoRequest::Recommendations { .. }
                | DemoRequest::Search { .. }
        )
}

/// A read's identity, for the set of copies really fetched.
fn read_key(request: &DemoRequest) -> String {
    match request {
        DemoRequest::User { id } => format!("user/{id}"),
        DemoRequest::Product { id } => format!("product/{id}"),
        DemoRequest::Reviews { product_id } => format!("reviews/{product_id}"),
        DemoRequest::Recommendations { user_id } => format!("recommendations/{user_id}"),
        DemoRequest::Search { query } => format!("search?{query}"),
        DemoRequest::CreateOrder { idempotency_key } => format!("order/{idempotency_key}"),
        DemoRequest::Failure => "failure".into(),
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
