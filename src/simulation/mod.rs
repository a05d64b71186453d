//! Deterministic simulation: the sans-IO Maelstrom node driven by a seeded
//! random world and checked after every event, in the spirit of
//! FoundationDB's and TigerBeetle's simulation testing.
//!
//! The world owns a virtual clock, a simulated network to the demo services
//! ([`network`]: call latency per service, answers that never come back,
//! answers after the deadline, a service that hangs), the services
//! themselves (which outlive node restarts, as remote services do, outages
//! included) and a model of the journal that keeps exactly what was
//! committed. It drives [`Node`] directly: requests go in, the node's
//! [`Effect`]s come out and are performed by the network, and their answers
//! go back in when the world says they arrive. A seed decides every
//! request (valid and malformed, with fault flags), the breaker's policy,
//! every latency and lost answer, every hang and outage, every jump of the
//! clock, and every restart: clean, or a crash with calls in flight and
//! requests waiting, where everything not committed is lost while the dead
//! node's calls still reach their services.
//!
//! After each event the [`checker`] compares the node with a simple model;
//! at the end the world calms down (no hangs, quick answers, every service
//! up) long enough for every queued order to settle.
//!
//! A failing seed is printed with the one-line command that replays it.
//! Each invariant has a test that plants the bug it guards against
//! ([`crate::planted_bug`]) and sees the simulator catch it.

mod checker;
mod network;
mod workload;

#[cfg(test)]
mod tests;

pub use checker::{Invariant, Violation};

use crate::core::CallResult;
use crate::core::breaker::{BreakerConfig, SlidingWindow};
use crate::core::queue::journal::JournalInfo;
use crate::core::queue::{QueueConfig, RecoveredQueue, SettledCounts, StoredWrite};
use crate::core::service::ServiceSpec;
use crate::demo::DemoData;
use crate::maelstrom::node::{Effect, Node, NodeConfig};
use checker::{Before, Checked, Checker, CheckerTally, EventKind, Observed};
use network::{Network, NetworkTally, SERVICE_COUNT, ServiceProfile, describe_call};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};
use workload::{Outgoing, Step, Workload};

/// Steps in one simulated run.
pub const STEPS_PER_RUN: usize = 300;
/// Lines of the run (steps, calls, answers) kept for the failure report.
const TRACE_LINES: usize = 40;
/// Events at one instant beyond which the node is looping.
const MAX_EVENTS_AT_ONE_INSTANT: usize = 10_000;
/// Call timeouts a clean restart waits at most for every request to be
/// answered.
const DRAIN_TIMEOUTS: u32 = 200;

/// The journal as a restart finds it: only what was committed.
#[derive(Default)]
struct CommittedJournal {
    rows: BTreeMap<u64, StoredWrite>,
    openings: u64,
}

impl CommittedJournal {
    fn commit(&mut self, rows: Vec<StoredWrite>) {
        for row in rows {
            self.rows.insert(row.request_id, row);
        }
    }

    fn open(&mut self) -> RecoveredQueue {
        self.openings += 1;
        let writes = self.rows.values().cloned().collect();
        RecoveredQueue::from_rows(writes, SettledCounts::default(), self.openings)
    }
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A random but valid configuration: small thresholds and timeouts so that
/// breakers, backoffs, evictions and dead letters all happen within a run,
/// and a breaker policy drawn among those the core offers.
pub fn config_for(seed: u64) -> NodeConfig {
    let mut rng = fastrand::Rng::with_seed(seed);
    let timeout = millis(rng.u64(20..=1_000));
    let retry_base = millis(rng.u64(5..=200));
    NodeConfig {
        service: ServiceSpec {
            timeout,
            breaker: breaker_for(&mut rng, timeout),
            max_stale: millis([2_000, 60_000, 86_400_000][rng.usize(0..3)]),
            ..ServiceSpec::named("demo")
        },
        cache_capacity: [20, 300, 100_000][rng.usize(0..3)],
        queue: QueueConfig {
            retry_base,
            retry_max: retry_base * rng.u32(1..=50),
            max_attempts: rng.u32(1..=8),
            order_history: 1_000_000,
        },
        seed,
    }
}

/// One of the breaker policies: consecutive failures only; a failure rate
/// over a count or a time window (with or without the consecutive rule);
/// a slow-call rate. Half-open lets 1 to 3 probes through, with or
/// without a bound on how long it may wait for them.
///
/// Every policy opens, sooner or later, under nothing but failures: a
/// window always fills up to its minimum (calls fail within the timeout,
/// under a second, so a window of N seconds sees at least N - 1 of them),
/// so `force_failures: 1000000000000` ends.
fn breaker_for(rng: &mut fastrand::Rng, timeout: Duration) -> BreakerConfig {
    let open_timeout = millis(rng.u64(20..=2_000));
    let mut config = BreakerConfig {
        failure_threshold: Some(rng.u32(1..=6)),
        open_timeout,
        open_timeout_max: open_timeout * rng.u32(1..=8),
        permitted_calls_in_half_open: rng.u32(1..=3),
        max_wait_in_half_open: rng.bool().then(|| millis(rng.u64(10..=3_000))),
        ..BreakerConfig::default()
    };
    let window = |config: &mut BreakerConfig, rng: &mut fastrand::Rng| {
        if rng.bool() {
            config.sliding_window = SlidingWindow::Count;
            config.sliding_window_size = rng.u32(2..=20);
            config.minimum_calls = rng.u32(1..=config.sliding_window_size);
        } else {
            config.sliding_window = SlidingWindow::Time;
            config.sliding_window_size = rng.u32(2..=10);
            config.minimum_calls = rng.u32(1..config.sliding_window_size);
        }
    };
    match rng.u32(0..4) {
        0 => {}
        1 | 2 => {
            if rng.bool() {
                config.failure_threshold = None;
            }
            config.failure_rate_threshold = Some(f64::from(rng.u32(20..=100)));
            window(&mut config, rng);
        }
        _ => {
            config.slow_call_rate_threshold = Some(f64::from(rng.u32(20..=100)));
            config.slow_call_duration = timeout * rng.u32(20..=90) / 100;
            window(&mut config, rng);
        }
    }
    config
}

/// What went wrong in a run.
#[derive(Debug)]
pub enum Broken {
    /// An invariant did not hold.
    Invariant(Violation),
    /// The node panicked (the message).
    Panic(String),
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Invariant(violation) => write!(f, "broke {violation}"),
            Broken::Panic(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// Why a run failed, and how to see it again.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub step: usize,
    pub broken: Broken,
    pub trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} {} at step {}",
            self.seed, self.broken, self.step
        )?;
        writeln!(f, "last steps and events:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        write!(f, "replay: {}", replay_command(self.seed))
    }
}

/// The one-line command that replays `seed`.
pub fn replay_command(seed: u64) -> String {
    format!(
        "GRACE_SIM_SEED={seed} cargo test --lib simulation::tests::replay_seed -- --ignored --nocapture"
    )
}

/// What one run went through, for the long-run report.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunReport {
    pub steps: u64,
    pub crashes: u64,
    pub checker: CheckerTally,
    pub network: NetworkTally,
}

impl RunReport {
    pub fn add(&mut self, other: &RunReport) {
        self.steps += other.steps;
        self.crashes += other.crashes;
        let (c, o) = (&mut self.checker, &other.checker);
        c.events += o.events;
        c.replies += o.replies;
        c.late_answers += o.late_answers;
        c.calls_timed_out += o.calls_timed_out;
        c.requests_lost_in_crashes += o.requests_lost_in_crashes;
        c.repeated_order_deliveries += o.repeated_order_deliveries;
        c.stale_replies += o.stale_replies;
        let (n, o) = (&mut self.network, &other.network);
        n.calls += o.calls;
        n.answers_lost += o.answers_lost;
        n.calls_to_a_hung_service += o.calls_to_a_hung_service;
        n.calls_outliving_their_node += o.calls_outliving_their_node;
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, n) = (&self.checker, &self.network);
        write!(
            f,
            "{} steps, {} events, {} replies, {} calls ({} timed out, {} answered late, \
             {} answers lost, {} to a hung service, {} outliving their node), {} crashes \
             ({} requests lost with them), {} repeated order deliveries, {} stale replies",
            self.steps,
            c.events,
            c.replies,
            n.calls,
            c.calls_timed_out,
            c.late_answers,
            n.answers_lost,
            n.calls_to_a_hung_service,
            n.calls_outliving_their_node,
            self.crashes,
            c.requests_lost_in_crashes,
            c.repeated_order_deliveries,
            c.stale_replies
        )
    }
}

/// When the journal rows and replies produced so far are committed and sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitPoint {
    /// After every event: the node is idle between them, as a runtime
    /// commits whenever no input is waiting.
    EveryEvent,
    /// At the end of the burst being handled.
    EndOfBurst,
}

/// One seeded world around one node.
pub struct Simulation {
    seed: u64,
    config: NodeConfig,
    data: DemoData,
    now: Instant,
    node: Option<Node>,
    /// Counts node processes; calls carry the one that made them.
    incarnation: u64,
    network: Network,
    journal: CommittedJournal,
    /// Journal rows produced since the last commit.
    uncommitted: Vec<StoredWrite>,
    checker: Checker,
    workload: Workload,
    line_no: u64,
    trace: VecDeque<String>,
    report: RunReport,
    /// The step at which each hanging service answers again.
    hang_ends: [Option<usize>; SERVICE_COUNT],
}

impl Simulation {
    pub fn new(seed: u64) -> Self {
        let config = config_for(seed);
        let data = DemoData::builtin();
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x05e4_1ce5);
        let profiles: [ServiceProfile; SERVICE_COUNT] =
            std::array::from_fn(|_| ServiceProfile::draw(&mut rng, config.service.timeout));
        let mut simulation = Simulation {
            seed,
            checker: Checker::new(&config, &data),
            network: Network::new(data.clone(), profiles, seed),
            config,
            data,
            now: Instant::now(),
            node: None,
            incarnation: 0,
            journal: CommittedJournal::default(),
            uncommitted: Vec::new(),
            workload: Workload::new(seed),
            line_no: 0,
            trace: VecDeque::new(),
            report: RunReport::default(),
            hang_ends: [None; SERVICE_COUNT],
        };
        simulation.start_node();
        simulation
    }

    fn node(&self) -> &Node {
        self.node.as_ref().expect("a node is running")
    }

    fn start_node(&mut self) {
        self.incarnation += 1;
        let mut config = self.config.clone();
        config.seed = self.seed ^ self.incarnation.rotate_left(32);
        let mut node = Node::new(config, &self.data, self.now);
        node.core_mut().record_transitions(true);
        node.recover(JournalInfo::durable(None), self.journal.open(), self.now);
        let ids = node.services();
        debug_assert_eq!(
            [ids.user, ids.product, ids.order].map(|id| id.index()),
            [checker::USER, checker::PRODUCT, checker::ORDER]
        );
        self.node = Some(node);
        self.checker.node_restarted();
    }

    /// The process dies: whatever was not committed is lost, and so are
    /// its calls in flight (they still reach their services).
    fn crash(&mut self) {
        self.report.crashes += 1;
        self.uncommitted.clear();
        self.checker.crashed();
        self.start_node();
    }

    /// A clean restart: every waiting request answered, everything
    /// committed, then a new process.
    fn restart(&mut self) -> Checked {
        self.drain()?;
        self.commit()?;
        self.checker.check_all_answered("at a clean restart")?;
        self.start_node();
        Ok(())
    }

    /// Runs `steps` random steps, then lets every queued order settle.
    pub fn run(&mut self, steps: usize) -> Result<RunReport, Failure> {
        for step_index in 0..steps {
            let step = self.workload.next_step();
            self.note(format!("step {step_index}: {}", describe(&step)));
            self.report.steps += 1;
            for service in 0..SERVICE_COUNT {
                if self.hang_ends[service].is_some_and(|end| end <= step_index) {
                    self.hang_ends[service] = None;
                    self.network.set_hanging(service, false);
                }
            }
            self.guarded(step_index, |simulation| simulation.step(step))?;
        }
        self.note("settle: every service up and quick, time passes".into());
        self.guarded(steps, Simulation::settle)?;
        self.report.checker = self.checker.tally();
        self.report.network = self.network.tally();
        Ok(self.report)
    }

    /// Runs `work` for step `step`, turning a violation or a panic into the
    /// run's failure.
    fn guarded(
        &mut self,
        step: usize,
        work: impl FnOnce(&mut Self) -> Checked,
    ) -> Result<(), Failure> {
        let broken = match panic::catch_unwind(AssertUnwindSafe(|| work(self))) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(violation)) => Broken::Invariant(violation),
            Err(panic) => Broken::Panic(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                    .unwrap_or_default(),
            ),
        };
        Err(Failure {
            seed: self.seed,
            step,
            broken,
            trace: self.trace.iter().cloned().collect(),
        })
    }

    fn note(&mut self, line: String) {
        if self.trace.len() == TRACE_LINES {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn step(&mut self, step: Step) -> Checked {
        match step {
            Step::Burst(requests) => {
                for request in &requests {
                    self.request(request)?;
                    self.run_until(self.now, CommitPoint::EndOfBurst)?;
                }
                self.commit()
            }
            Step::CrashDuringBurst { requests, handled } => {
                for request in &requests[..handled] {
                    self.request(request)?;
                    self.run_until(self.now, CommitPoint::EndOfBurst)?;
                }
                self.crash();
                Ok(())
            }
            Step::Advance(by) => self.run_until(self.now + by, CommitPoint::EveryEvent),
            Step::Restart => self.restart(),
            Step::Crash => {
                self.crash();
                Ok(())
            }
            Step::Hang { service, steps } => {
                self.network.set_hanging(service, true);
                self.hang_ends[service] = Some(self.report.steps as usize + steps);
                Ok(())
            }
        }
    }

    /// Hands the node one event and checks what came out.
    fn event(&mut self, kind: EventKind<'_>, act: impl FnOnce(&mut Node, Instant)) -> Checked {
        let now = self.now;
        let node = self.node.as_mut().expect("a node is running");
        let before = Before::capture(node);
        self.checker.begin_event(&kind, now);
        act(node, now);
        let mut calls = Vec::new();
        let mut health = Vec::new();
        while let Some(effect) = node.poll_effect() {
            match effect {
                Effect::Call(call) => calls.push(call),
                Effect::SetServiceHealth { service, available } => {
                    health.push((service, available))
                }
            }
        }
        let rows = node.take_journal_writes();
        let observed = Observed {
            transitions: node.core_mut().take_transitions(),
            calls,
            health_changes: health.len(),
            output: node.take_output(),
            journal_rows: rows.len(),
            next_timeout: node.poll_timeout(),
        };
        self.uncommitted.extend(rows);
        let checked = self
            .checker
            .check_event(node, now, &before, &kind, &observed);
        let quiet = observed.calls.is_empty()
            && observed.output.is_empty()
            && observed.transitions.is_empty();
        if matches!(kind, EventKind::Timeout) && !quiet {
            self.note("  timer".into());
        }
        for record in &observed.transitions {
            let transition = record.transition;
            self.note(format!(
                "  breaker {}: {} -> {} ({})",
                ["user", "product", "order"][record.service.index()],
                transition.from,
                transition.to,
                transition.reason
            ));
        }
        for call in &observed.calls {
            self.note(format!("  made {}", describe_call(call.id, call)));
        }
        for line in String::from_utf8_lossy(&observed.output).lines() {
            self.note(format!("  reply {line}"));
            let reply: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            if let Some(request_id) = reply["body"]["request_id"].as_u64() {
                self.workload.learn_request_id(request_id);
            }
        }
        checked?;
        for (service, available) in health {
            self.network.set_available(service, available);
        }
        for call in observed.calls {
            self.network.send(call, self.incarnation, now);
        }
        Ok(())
    }

    /// One request through the node.
    fn request(&mut self, request: &Outgoing) -> Checked {
        self.line_no += 1;
        let line_no = self.line_no;
        self.note(format!("  request {}", request.line));
        self.event(EventKind::Request(request), |node, now| {
            node.handle_message(request.line.as_bytes(), line_no, now)
        })
    }

    /// The next call due reaches its service; its answer, if it has one
    /// and its node is still running, goes back to the node.
    fn arrival(&mut self) -> Checked {
        let arrival = self
            .network
            .arrive(self.now, self.incarnation)
            .expect("an arrival is due");
        self.checker.service_processed(&arrival);
        let id = arrival.call.id;
        let result = match &arrival.result {
            CallResult::Answered(response) => format!("{}", response.status),
            CallResult::Failed(failure) => failure.to_string(),
        };
        let fate = if arrival.incarnation != self.incarnation {
            format!("{result}, after its node was gone")
        } else if arrival.answer_lost {
            format!("{result}, the answer lost")
        } else {
            result
        };
        self.note(format!("  {}: {fate}", describe_call(id, &arrival.call)));
        if arrival.incarnation != self.incarnation || arrival.answer_lost {
            return Ok(());
        }
        let result = arrival.result;
        self.event(
            EventKind::Answer {
                id,
                result: &result,
            },
            |node, now| node.complete(id, result.clone(), now),
        )
    }

    /// The node's timer fires.
    fn timer(&mut self) -> Checked {
        self.event(EventKind::Timeout, |node, now| node.handle_timeout(now))
    }

    /// Moves the clock to `target`, delivering every arrival and firing
    /// every timer due on the way, in order (arrivals first at equal
    /// instants).
    fn run_until(&mut self, target: Instant, commit: CommitPoint) -> Checked {
        let mut at_this_instant = 0;
        loop {
            let arrival = self.network.next_arrival().filter(|at| *at <= target);
            let timer = self.node().poll_timeout().filter(|at| *at <= target);
            let (at, is_arrival) = match (arrival, timer) {
                (None, None) => break,
                (Some(arrival), Some(timer)) if arrival <= timer => (arrival, true),
                (Some(arrival), None) => (arrival, true),
                (_, Some(timer)) => (timer, false),
            };
            if at > self.now {
                self.now = at;
                at_this_instant = 0;
            }
            at_this_instant += 1;
            if at_this_instant > MAX_EVENTS_AT_ONE_INSTANT {
                return checker::violated(
                    Invariant::TimersMakeProgress,
                    format!("{MAX_EVENTS_AT_ONE_INSTANT} events at one instant"),
                );
            }
            if is_arrival {
                self.arrival()?;
            } else {
                self.timer()?;
            }
            if commit == CommitPoint::EveryEvent {
                self.commit()?;
            }
        }
        self.now = self.now.max(target);
        Ok(())
    }

    /// Journal rows are committed, then the replies go out.
    fn commit(&mut self) -> Checked {
        self.journal.commit(std::mem::take(&mut self.uncommitted));
        self.checker.replies_sent()
    }

    /// Lets time pass until no request waits for the node.
    fn drain(&mut self) -> Checked {
        let span = self.config.service.timeout + millis(1);
        for _ in 0..DRAIN_TIMEOUTS {
            if self.node().parked_requests() == 0 {
                return Ok(());
            }
            self.run_until(self.now + span, CommitPoint::EveryEvent)?;
        }
        let waiting = self.node().parked_requests();
        checker::violated(
            Invariant::OneReplyPerRequest,
            format!("{waiting} request(s) still waiting after {DRAIN_TIMEOUTS} call timeouts"),
        )
    }

    /// The world calms down (no hangs, quick answers) and every service
    /// comes back, long enough for every queued order to be delivered;
    /// then every request must have its reply and every order its end.
    fn settle(&mut self) -> Checked {
        let breaker = self.config.service.breaker;
        let quick = [
            self.config.service.timeout,
            breaker.slow_call_duration,
            breaker.max_wait_in_half_open.unwrap_or(Duration::MAX),
        ]
        .into_iter()
        .min()
        .expect("three")
            / 2;
        self.network.calm_down(quick);
        let recoveries: Vec<Outgoing> = ["user", "product", "order"]
            .iter()
            .map(|service| {
                self.workload.request_with(
                    json!({"type": "set_service_health", "service": service, "available": true}),
                )
            })
            .collect();
        for request in &recoveries {
            self.request(request)?;
            self.run_until(self.now, CommitPoint::EndOfBurst)?;
        }
        self.commit()?;
        let longest_wait = breaker
            .open_timeout_max
            .max(self.config.queue.retry_max)
            .max(self.config.service.timeout)
            + self.config.service.timeout
            + millis(1);
        for _ in 0..(self.config.queue.max_attempts as usize + 20) {
            let node = self.node();
            if node.core().queue().depth() == 0 && node.parked_requests() == 0 {
                break;
            }
            self.run_until(self.now + longest_wait, CommitPoint::EveryEvent)?;
        }
        self.drain()?;
        self.checker.check_all_answered("at the end")?;
        let repeated = self.network.services().orders().repeated_deliveries();
        let node = self.node.as_ref().expect("a node is running");
        self.checker.check_orders_settled(node, repeated)
    }
}

/// A short description of a step for the failure trace.
fn describe(step: &Step) -> String {
    match step {
        Step::Burst(requests) => format!("burst of {}", requests.len()),
        Step::CrashDuringBurst { requests, handled } => {
            format!("crash after {handled} of a burst of {}", requests.len())
        }
        Step::Advance(by) => format!("advance {} ms", by.as_millis()),
        Step::Restart => "clean restart".into(),
        Step::Crash => "crash".into(),
        Step::Hang { service, steps } => format!(
            "service {} hangs for {steps} steps",
            ["user", "product", "order"][*service]
        ),
    }
}

/// Runs one seed for [`STEPS_PER_RUN`] steps.
pub fn run_seed(seed: u64) -> Result<RunReport, Failure> {
    Simulation::new(seed).run(STEPS_PER_RUN)
}
