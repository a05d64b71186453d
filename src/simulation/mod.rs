//! Deterministic simulation: the sans-IO node driven by a seeded random
//! world and checked after every step, in the spirit of FoundationDB's and
//! TigerBeetle's simulation testing.
//!
//! The world owns a virtual clock, the simulated services (which outlive
//! node restarts, as real remote services would) and a model of the
//! journal that keeps exactly what was committed. A seed decides every
//! request (valid and malformed, with fault flags), every outage and
//! recovery, every jump of the clock across breaker timeouts and retry
//! backoffs, and every restart, clean or in the middle of a burst, where
//! everything not committed is lost. After each step the [`checker`]
//! compares the node with a simple model; at the end every service stays
//! up long enough for all queued orders to settle.
//!
//! A failing seed is printed with the one-line command that replays it.
//! Each invariant has a test that plants the bug it guards against
//! ([`crate::planted_bug`]) and sees the simulator catch it.

mod checker;
mod workload;

#[cfg(test)]
mod tests;

pub use checker::{Invariant, Violation};

use crate::backend::Backend;
use crate::breaker::BreakerConfig;
use crate::node::{Node, NodeConfig};
use crate::queue::journal::JournalInfo;
use crate::queue::{QueueConfig, RecoveredQueue, SettledCounts, StoredOrder};
use checker::{Before, Checked, Checker};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};
use workload::{Outgoing, Step, Workload};

/// Steps in one simulated run.
pub const STEPS_PER_RUN: usize = 300;
/// Steps of the run kept for the failure report.
const TRACE_STEPS: usize = 12;
/// Timer firings in one clock jump beyond which the node is looping.
const MAX_TIMER_FIRINGS: usize = 10_000;

/// The journal as a restart finds it: only what was committed.
#[derive(Default)]
struct CommittedJournal {
    rows: BTreeMap<u64, StoredOrder>,
    openings: u64,
}

impl CommittedJournal {
    fn commit(&mut self, rows: Vec<StoredOrder>) {
        for row in rows {
            self.rows.insert(row.request_id, row);
        }
    }

    fn open(&mut self) -> RecoveredQueue {
        self.openings += 1;
        let orders = self.rows.values().cloned().collect();
        RecoveredQueue::from_rows(orders, SettledCounts::default(), self.openings)
    }
}

/// A random but valid configuration: small thresholds and timeouts so that
/// breakers, backoffs, evictions and dead letters all happen within a run.
pub fn config_for(seed: u64) -> NodeConfig {
    let mut rng = fastrand::Rng::with_seed(seed);
    let open_timeout = Duration::from_millis(rng.u64(20..=2_000));
    let retry_base = Duration::from_millis(rng.u64(5..=200));
    NodeConfig {
        breaker: BreakerConfig {
            failure_threshold: rng.u32(1..=6),
            open_timeout,
            open_timeout_max: open_timeout * rng.u32(1..=8),
        },
        cache_capacity: [20, 300, 100_000][rng.usize(0..3)],
        cache_max_stale: Duration::from_millis([2_000, 60_000, 86_400_000][rng.usize(0..3)]),
        queue: QueueConfig {
            retry_base,
            retry_max: retry_base * rng.u32(1..=50),
            max_attempts: rng.u32(1..=8),
            order_history: 1_000_000,
        },
        seed,
    }
}

/// Why a run failed, and how to see it again.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub step: usize,
    pub violation: Violation,
    pub trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} broke {} at step {}",
            self.seed, self.violation, self.step
        )?;
        writeln!(f, "last steps:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        write!(
            f,
            "replay: GRACE_SIM_SEED={} cargo test --lib simulation::tests::replay_seed -- --ignored --nocapture",
            self.seed
        )
    }
}

/// One seeded world around one node.
pub struct Simulation {
    seed: u64,
    config: NodeConfig,
    now: Instant,
    node: Option<Node>,
    journal: CommittedJournal,
    checker: Checker,
    workload: Workload,
    incarnation: u64,
    line_no: u64,
    trace: VecDeque<String>,
}

impl Simulation {
    pub fn new(seed: u64) -> Self {
        let config = config_for(seed);
        let now = Instant::now();
        let backend = Backend::demo();
        let mut simulation = Simulation {
            seed,
            checker: Checker::new(&config, &backend),
            config,
            now,
            node: None,
            journal: CommittedJournal::default(),
            workload: Workload::new(seed),
            incarnation: 0,
            line_no: 0,
            trace: VecDeque::new(),
        };
        simulation.start_node(backend);
        simulation
    }

    fn node(&mut self) -> &mut Node {
        self.node.as_mut().expect("a node is running")
    }

    fn start_node(&mut self, backend: Backend) {
        self.incarnation += 1;
        let mut config = self.config.clone();
        config.seed = self.seed ^ self.incarnation.rotate_left(32);
        let mut node = Node::new(config, backend, self.now);
        node.record_transitions(true);
        node.recover(JournalInfo::durable(None), self.journal.open(), self.now);
        self.node = Some(node);
        self.checker.node_restarted();
    }

    /// Replaces the process; with `crash`, whatever was not committed is lost.
    fn restart(&mut self, crash: bool) {
        let mut node = self.node.take().expect("a node is running");
        let uncommitted = node.take_journal_writes();
        if !crash {
            self.journal.commit(uncommitted);
        }
        self.start_node(node.into_backend());
    }

    /// Runs `steps` random steps, then lets every queued order settle.
    pub fn run(&mut self, steps: usize) -> Result<(), Failure> {
        for step_index in 0..steps {
            let step = self.workload.next_step();
            self.note(format!("{step_index}: {}", describe(&step)));
            self.step(step)
                .map_err(|violation| self.failure(step_index, violation))?;
        }
        self.note("settle: every service up, time passes".into());
        self.settle()
            .map_err(|violation| self.failure(steps, violation))
    }

    fn failure(&self, step: usize, violation: Violation) -> Failure {
        Failure {
            seed: self.seed,
            step,
            violation,
            trace: self.trace.iter().cloned().collect(),
        }
    }

    fn note(&mut self, line: String) {
        if self.trace.len() == TRACE_STEPS {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn step(&mut self, step: Step) -> Checked {
        match step {
            Step::Burst(requests) => {
                for request in &requests {
                    self.handle(request)?;
                }
                self.commit()
            }
            Step::CrashDuringBurst { requests, handled } => {
                for request in &requests[..handled] {
                    self.handle(request)?;
                }
                self.checker.burst_lost();
                self.restart(true);
                Ok(())
            }
            Step::Advance(by) => self.advance(by),
            Step::Restart => {
                self.commit()?;
                self.restart(false);
                Ok(())
            }
        }
    }

    /// One request through the node, checked.
    fn handle(&mut self, request: &Outgoing) -> Checked {
        self.line_no += 1;
        let (now, line_no) = (self.now, self.line_no);
        let node = self.node.as_mut().expect("a node is running");
        let before = Before::capture(node, now);
        node.handle_message(request.line.as_bytes(), line_no, now);
        let transitions = node.take_transitions();
        self.checker.check_step(node, &before, transitions)?;
        let output = node.take_output();
        self.checker
            .check_replies(node, request, &before, &output)?;
        for line in String::from_utf8_lossy(&output).lines() {
            let reply: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            if let Some(request_id) = reply["body"]["request_id"].as_u64() {
                self.workload.learn_request_id(request_id);
            }
        }
        Ok(())
    }

    /// The burst is over: its journal rows are committed, its replies sent.
    fn commit(&mut self) -> Checked {
        let rows = self.node().take_journal_writes();
        self.journal.commit(rows);
        self.checker.burst_committed()
    }

    /// Moves the clock, firing every timer due on the way, in order.
    fn advance(&mut self, by: Duration) -> Checked {
        let target = self.now + by;
        for _ in 0..MAX_TIMER_FIRINGS {
            let node = self.node.as_mut().expect("a node is running");
            let Some(due) = node.poll_timeout().filter(|due| *due <= target) else {
                self.now = target;
                return self.commit();
            };
            self.now = self.now.max(due);
            let before = Before::capture(node, self.now);
            node.handle_timeout(self.now);
            let transitions = node.take_transitions();
            self.checker.check_step(node, &before, transitions)?;
            let unsolicited = node.take_output();
            if !unsolicited.is_empty() {
                return Err(Violation {
                    invariant: Invariant::OneReplyPerRequest,
                    detail: format!(
                        "unsolicited output from a timer: {}",
                        String::from_utf8_lossy(&unsolicited)
                    ),
                });
            }
        }
        Err(Violation {
            invariant: Invariant::TimersMakeProgress,
            detail: format!("{MAX_TIMER_FIRINGS} timer firings within {by:?}"),
        })
    }

    /// Every service comes back and stays up long enough for every queued
    /// order to be delivered; then the orders are checked.
    fn settle(&mut self) -> Checked {
        let recoveries: Vec<Outgoing> = ["user", "product", "order"]
            .iter()
            .map(|service| {
                self.workload.request_with(
                    json!({"type": "set_service_health", "service": service, "available": true}),
                )
            })
            .collect();
        for request in &recoveries {
            self.handle(request)?;
        }
        self.commit()?;
        let breaker = self.config.breaker;
        let longest_wait = breaker.open_timeout_max.max(self.config.queue.retry_max);
        for _ in 0..(self.config.queue.max_attempts as usize + 20) {
            if self.node().queue().depth() == 0 {
                break;
            }
            self.advance(longest_wait + Duration::from_millis(1))?;
        }
        let node = self.node.as_ref().expect("a node is running");
        self.checker.check_orders_settled(node)
    }
}

/// A short description of a step for the failure trace.
fn describe(step: &Step) -> String {
    let lines = |requests: &[Outgoing]| {
        requests
            .iter()
            .map(|request| request.line.clone())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    match step {
        Step::Burst(requests) => format!("burst {}", lines(requests)),
        Step::CrashDuringBurst { requests, handled } => {
            format!("crash after {handled} of: {}", lines(requests))
        }
        Step::Advance(by) => format!("advance {} ms", by.as_millis()),
        Step::Restart => "restart".into(),
    }
}

/// Runs one seed for [`STEPS_PER_RUN`] steps.
pub fn run_seed(seed: u64) -> Result<(), Failure> {
    Simulation::new(seed).run(STEPS_PER_RUN)
}
