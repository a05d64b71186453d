//! The gateway's driver of the core: every change to the gateway's state
//! is an [`Event`] handled by the [`Engine`], one at a time.
//!
//! The engine does no I/O and never waits. A step ([`Engine::step`]) takes
//! an event (a client's request, a call's completion, a timeout, an
//! operator's request) and the time, and leaves the answers it can give in
//! the waiters' channels and the HTTP calls to make in its result; the
//! calls the demo services answer in-process are completed inside the step.
//! [`super::driver`] runs the steps where the events happen and makes the
//! calls. Answers that promise something about the queue (a `202`, a repeat
//! of a queued write) go out only after the journal rows of their step are
//! committed, on the journal's own thread ([`super::commits`]); the rest go
//! out at once.
//!
//! The engine is the only place where the gateway's state changes, and it
//! handles one event at a time, so what the admin listener shows is a
//! consistent snapshot.

use super::commits::{CommitJob, Commits, NotCommitted};
use super::config::{Fallback, GatewayConfig};
use super::exchange::{self, StoredRequest};
use super::metrics::Metrics;
use super::status::{self, StatusView};
use super::upstream::{HttpCall, HttpJob, Started, Upstreams};
use crate::core::breaker::BreakerState;
use crate::core::load_mode::{FeatureId, Mode};
use crate::core::queue::journal::JournalInfo;
use crate::core::queue::{RecoveredQueue, StoredWrite};
use crate::core::{
    CallFailure, CallId, CallResult, Core, CoreConfig, NewWrite, Outcome, ReadOutcome,
    RepeatPolicy, SendOutcome, ServiceId, Services, Sharing, WriteOutcome, WriteSnapshot,
};
use bytes::Bytes;
use http::header::HeaderName;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method};
use smallvec::SmallVec;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A client's request, as the engine needs it.
#[derive(Debug)]
pub struct Incoming {
    /// Index of the route it took.
    pub route: usize,
    pub method: Method,
    pub path_and_query: PathAndQuery,
    /// The headers the upstream is to get: the client's end-to-end ones,
    /// with its address in `X-Forwarded-For`
    /// ([`exchange::forward_request_headers`]). They are what the
    /// upstream's answer can vary on, so they are what its copy is keyed by.
    pub headers: HeaderMap,
    pub body: Bytes,
    pub reply: oneshot::Sender<Answer>,
}

/// What a client's request came to.
#[derive(Debug)]
pub enum Answer {
    Read(ReadOutcome, BreakerState),
    Sent(SendOutcome, BreakerState),
    Write {
        outcome: Box<WriteOutcome>,
        circuit: BreakerState,
        /// The id the write was given (for its `202` and `Location`).
        public_id: String,
        /// The fingerprint of this request (a repeat must match the first's).
        fingerprint: String,
    },
    /// The route's feature is switched off.
    Degraded,
    /// The engine stopped (shutdown, or the journal failed).
    Stopped(String),
}

impl From<NotCommitted> for Answer {
    fn from(NotCommitted(why): NotCommitted) -> Self {
        Answer::Stopped(why)
    }
}

/// What an operator asks through the admin listener.
#[derive(Debug)]
pub enum AdminRequest {
    Status(oneshot::Sender<StatusView>),
    /// `mode`: `normal`, `degraded`, `critical` or `auto`; `cpu_usage`
    /// overrides one sample.
    SetMode {
        mode: Option<String>,
        cpu_usage: Option<f64>,
        reply: oneshot::Sender<Result<StatusView, String>>,
    },
    SetFeature {
        feature: String,
        enabled: bool,
        reply: oneshot::Sender<Result<StatusView, String>>,
    },
    ProcessQueue(oneshot::Sender<(usize, usize)>),
    /// A queued write by its public id (`GET /grace/requests/{id}`).
    Write {
        public_id: String,
        reply: oneshot::Sender<Option<WriteSnapshot>>,
    },
}

/// Everything that reaches the engine.
#[derive(Debug)]
pub enum Event {
    Request(Box<Incoming>),
    Completed {
        id: CallId,
        result: CallResult,
        service: ServiceId,
        took: Duration,
    },
    /// A call got no answer by its deadline (the core fails it there on
    /// its own); counted in the metrics.
    TimedOut {
        service: ServiceId,
        took: Duration,
    },
    /// An answer of `route` varied on headers its cache key did not hold.
    LearnVary {
        route: usize,
        names: Vec<HeaderName>,
    },
    Admin(AdminRequest),
    /// The machine's CPU use, in percent, over the last sample.
    CpuSample(f64),
    /// The deadline [`Engine::arm_timer`] gave has come.
    Timeout,
}

/// Who waits for a core outcome.
#[derive(Debug)]
pub enum Waiter {
    Client {
        reply: oneshot::Sender<Answer>,
        service: ServiceId,
        /// For writes: the id given and the request's fingerprint.
        write: Option<(String, String)>,
    },
    QueueRun(oneshot::Sender<(usize, usize)>),
}

/// A route as the engine runs it.
struct RouteRuntime {
    service: ServiceId,
    fallback: Fallback,
    feature: Option<FeatureId>,
    /// Request headers this route's answers vary on (learned).
    vary: Vec<HeaderName>,
}

/// The engine's state.
pub struct Engine {
    core: Core<Waiter, HttpCall>,
    routes: Vec<RouteRuntime>,
    upstreams: Upstreams,
    commits: Option<Commits<Answer>>,
    /// Whether the mode follows the sampled CPU use (from `PUT /mode`
    /// `{"mode": "auto"}`; grace starts in `normal`, so a busy machine
    /// switches nothing off until the operator asks for it).
    auto_mode: bool,
    metrics: std::sync::Arc<Metrics>,
    started: Instant,
    /// The deadline the timer sleeps until (see [`Engine::arm_timer`]).
    armed: Option<Instant>,
}

/// The calls a step starts: most start one (a client's request) or none,
/// so one is held without an allocation.
pub type Calls = SmallVec<[HttpJob; 1]>;

/// What a step leaves to do.
pub struct Step {
    /// HTTP calls to make; their ends come back as events.
    pub calls: Calls,
    /// The next deadline is now earlier than the one the timer sleeps until.
    pub wake_timer: bool,
}

impl Engine {
    /// An engine over `config`'s services and routes.
    pub fn new(
        config: &GatewayConfig,
        core_config: CoreConfig,
        upstreams: Upstreams,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        let mut core: Core<Waiter, HttpCall> = Core::new(core_config);
        // The metrics count every transition.
        core.record_transitions(true);
        let routes = config
            .routes
            .iter()
            .map(|route| RouteRuntime {
                service: core
                    .services()
                    .id(&route.service)
                    .expect("checked by the configuration"),
                fallback: route.fallback,
                feature: route.feature.as_deref().map(|name| {
                    core.shedder()
                        .feature(name)
                        .expect("route features are configured")
                }),
                vary: Vec::new(),
            })
            .collect();
        Engine {
            core,
            routes,
            upstreams,
            commits: None,
            auto_mode: false,
            metrics,
            started: Instant::now(),
            armed: None,
        }
    }

    /// The services of a gateway configuration, for the core.
    pub fn services(config: &GatewayConfig) -> Services {
        let mut services = Services::default();
        for (name, service) in &config.services {
            services.add(crate::core::ServiceSpec {
                name: name.clone(),
                ..service.spec.clone()
            });
        }
        services
    }

    /// Resumes the queue from its journal; rows are committed by `commits`
    /// from now on (none: the queue is not durable).
    pub fn recover(
        &mut self,
        journal: JournalInfo,
        recovered: RecoveredQueue,
        commits: Option<Commits<Answer>>,
    ) {
        self.core.recover_queue(journal, recovered, Instant::now());
        self.commits = commits;
    }

    /// Handles `event` at `now`: the answers it settles are sent (or
    /// handed to the journal's thread), the calls it starts are returned.
    pub fn step(&mut self, event: Event, now: Instant) -> Step {
        self.handle(event, now);
        let calls = self.settle(now);
        let next = self.core.poll_timeout();
        let wake_timer = match (next, self.armed) {
            (Some(next), Some(armed)) => next < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        Step { calls, wake_timer }
    }

    /// The deadline the timer is to sleep until (none: until woken), now
    /// remembered so that a step bringing it forward wakes the timer.
    pub fn arm_timer(&mut self) -> Option<Instant> {
        self.armed = self.core.poll_timeout();
        self.armed
    }

    /// Commits what the core still holds and gives the journal's thread
    /// back, to be closed; nothing is handled after this. Calls still in
    /// flight are abandoned: a delivery cut so is made again after a
    /// restart, under the same idempotency key.
    pub fn finish(mut self) -> Option<Commits<Answer>> {
        let rows = self.core.take_journal_writes();
        self.commit_then_send(rows, Vec::new());
        self.commits.take()
    }

    fn handle(&mut self, event: Event, now: Instant) {
        match event {
            Event::Request(incoming) => self.request(*incoming, now),
            Event::Completed {
                id,
                result,
                service,
                took,
            } => {
                self.metrics.upstream_call(service, &result, took);
                self.core.complete(id, result, now);
            }
            Event::TimedOut { service, took } => {
                let timed_out = CallResult::Failed(CallFailure::TimedOut);
                self.metrics.upstream_call(service, &timed_out, took);
            }
            Event::LearnVary { route, names } => {
                let vary = &mut self.routes[route].vary;
                for name in names {
                    if !vary.contains(&name) {
                        tracing::info!(route, header = %name, "answers vary on a header: it joins the cache key");
                        vary.push(name);
                    }
                }
            }
            Event::Admin(request) => self.admin(request, now),
            Event::CpuSample(cpu) => {
                if self.auto_mode {
                    self.follow_cpu(cpu);
                }
            }
            Event::Timeout => self.core.handle_timeout(now),
        }
    }

    fn follow_cpu(&mut self, cpu: f64) {
        let shedder = self.core.shedder_mut();
        let before = shedder.mode();
        let mode = shedder.follow_cpu(cpu);
        if mode != before {
            tracing::info!(from = %before, to = %mode, cpu_usage = cpu, "load mode changed");
        }
    }

    fn request(&mut self, incoming: Incoming, now: Instant) {
        let route = &self.routes[incoming.route];
        let service = route.service;
        if let Some(feature) = route.feature
            && !self.core.shedder().is_enabled(feature)
        {
            let _ = incoming.reply.send(Answer::Degraded);
            return;
        }
        match route.fallback {
            Fallback::Cache => {
                let key = exchange::cache_key(
                    &incoming.method,
                    incoming.path_and_query.as_str(),
                    &incoming.headers,
                    &route.vary,
                );
                // A range or a precondition asks what no other request
                // asks: its own call, and its answer is not kept (on
                // failure it still gets the whole copy, if there is one).
                let (sharing, keep) = if exchange::is_partial_or_conditional(&incoming.headers) {
                    (Sharing::Alone, None)
                } else {
                    (
                        Sharing::Coalesce,
                        Some((incoming.route, route.vary.clone())),
                    )
                };
                let (waiter, call) = passed_on(incoming, service, keep);
                self.core.read(waiter, service, &key, || call, sharing, now);
            }
            Fallback::None => {
                let (waiter, call) = passed_on(incoming, service, None);
                self.core.send(waiter, service, call, now);
            }
            Fallback::Queue => self.write(incoming, now),
        }
    }

    fn write(&mut self, incoming: Incoming, now: Instant) {
        let Incoming {
            route,
            method,
            path_and_query,
            mut headers,
            body,
            reply,
        } = incoming;
        let service = self.routes[route].service;
        let fingerprint = exchange::fingerprint(&method, path_and_query.as_str(), &body);
        let client_key = headers
            .get(&exchange::IDEMPOTENCY_KEY)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let public_id = exchange::random_id();
        // The key the upstream deduplicates on: the client's, or one of ours.
        let delivery_key = client_key
            .clone()
            .unwrap_or_else(|| format!("grace-{public_id}"));
        let scoped_key = match &client_key {
            Some(key) => format!("{}:{key}", exchange::key_scope(&headers)),
            None => format!("grace:{public_id}"),
        };
        let stored = StoredRequest::new(
            &method,
            path_and_query.as_str(),
            &headers,
            &body,
            &delivery_key,
        );
        if let Ok(value) = http::HeaderValue::from_str(&delivery_key) {
            headers.insert(exchange::IDEMPOTENCY_KEY, value);
        }
        let write = NewWrite {
            idempotency_key: scoped_key,
            fingerprint: Some(fingerprint.clone()),
            public_id: Some(public_id.clone()),
            stored: stored.to_json(),
            direct: HttpCall {
                method,
                path_and_query,
                headers,
                body,
                keep: None,
            },
        };
        let waiter = Waiter::Client {
            reply,
            service,
            write: Some((public_id, fingerprint)),
        };
        self.core
            .write(waiter, service, write, RepeatPolicy::Conflict, now);
    }

    fn admin(&mut self, request: AdminRequest, now: Instant) {
        match request {
            AdminRequest::Status(reply) => {
                let _ = reply.send(self.status(now));
            }
            AdminRequest::SetMode {
                mode,
                cpu_usage,
                reply,
            } => {
                let result = self
                    .set_mode(mode.as_deref(), cpu_usage)
                    .map(|()| self.status(now));
                let _ = reply.send(result);
            }
            AdminRequest::SetFeature {
                feature,
                enabled,
                reply,
            } => {
                let result = match self.core.shedder().feature(&feature) {
                    Ok(id) => {
                        self.core.shedder_mut().set_feature(id, enabled);
                        tracing::info!(%feature, enabled, "feature kill switch set");
                        Ok(self.status(now))
                    }
                    Err(err) => Err(err.to_string()),
                };
                let _ = reply.send(result);
            }
            AdminRequest::ProcessQueue(reply) => {
                self.core.process_queue(Waiter::QueueRun(reply), now)
            }
            AdminRequest::Write { public_id, reply } => {
                let snapshot = self
                    .core
                    .queue()
                    .find_by_public_id(&public_id)
                    .map(|write| self.core.snapshot(write));
                let _ = reply.send(snapshot);
            }
        }
    }

    fn set_mode(&mut self, mode: Option<&str>, cpu_usage: Option<f64>) -> Result<(), String> {
        if let Some(cpu) = cpu_usage
            && !(0.0..=100.0).contains(&cpu)
        {
            return Err(format!(
                "cpu_usage: must be a percentage from 0 to 100, got {cpu}"
            ));
        }
        let explicit = match mode {
            None | Some("auto") => None,
            Some("normal") => Some(Mode::Normal),
            Some("degraded") => Some(Mode::Degraded),
            Some("critical") => Some(Mode::Critical),
            Some(other) => {
                return Err(format!(
                    "mode: unknown mode {other:?}, expected normal, degraded, critical or auto"
                ));
            }
        };
        match explicit {
            Some(mode) => {
                self.auto_mode = false;
                let before = self.core.shedder().mode();
                self.core.shedder_mut().set_mode(mode, cpu_usage);
                if mode != before {
                    tracing::info!(from = %before, to = %mode, "load mode set by the operator");
                }
            }
            None => {
                self.auto_mode = true;
                if let Some(cpu) = cpu_usage {
                    self.follow_cpu(cpu);
                }
            }
        }
        Ok(())
    }

    /// Brings the metrics' gauges up to date (before they are shown).
    pub fn observe_gauges(&mut self) {
        self.metrics.observe_gauges(&self.core);
    }

    fn status(&self, now: Instant) -> StatusView {
        status::view(&self.core, self.auto_mode, &self.metrics, now, self.started)
    }

    /// Starts the calls the core emitted and sends the answers it has;
    /// returns the HTTP calls to make.
    fn settle(&mut self, now: Instant) -> Calls {
        let mut jobs = Calls::new();
        loop {
            let mut progressed = false;
            while let Some(call) = self.core.poll_call() {
                progressed = true;
                let started = Instant::now();
                let (id, service) = (call.id, call.service);
                match self.upstreams.start(call) {
                    Started::Http(job) => jobs.push(job),
                    Started::Answered(result) => {
                        // Answered in-process, at once; counted like any call.
                        self.metrics
                            .upstream_call(service, &result, started.elapsed());
                        self.core.complete(id, result, now);
                    }
                }
            }
            let mut held = Vec::new();
            while let Some((waiter, outcome)) = self.core.poll_outcome() {
                progressed = true;
                self.answer(waiter, outcome, &mut held);
            }
            let rows = self.core.take_journal_writes();
            self.commit_then_send(rows, held);
            if !progressed {
                break;
            }
        }
        self.metrics.count_transitions(&mut self.core);
        jobs
    }

    fn answer(
        &mut self,
        waiter: Waiter,
        outcome: Outcome,
        held: &mut Vec<(oneshot::Sender<Answer>, Answer)>,
    ) {
        match (waiter, outcome) {
            (
                Waiter::QueueRun(reply),
                Outcome::QueueProcessed {
                    processed,
                    remaining,
                },
            ) => {
                let _ = reply.send((processed, remaining));
            }
            (
                Waiter::Client {
                    reply,
                    service,
                    write,
                },
                outcome,
            ) => {
                let circuit = self.core.breaker_state(service);
                let answer = match (outcome, write) {
                    (Outcome::Read(read), _) => Answer::Read(read, circuit),
                    (Outcome::Sent(sent), _) => Answer::Sent(sent, circuit),
                    (Outcome::Write(outcome), Some((public_id, fingerprint))) => {
                        // Whatever a write is answered must not get ahead of
                        // the commits before it.
                        held.push((
                            reply,
                            Answer::Write {
                                outcome: Box::new(outcome),
                                circuit,
                                public_id,
                                fingerprint,
                            },
                        ));
                        return;
                    }
                    (other, _) => Answer::Stopped(format!("unexpected outcome {other:?}")),
                };
                let _ = reply.send(answer);
            }
            (Waiter::QueueRun(_), other) => {
                tracing::error!(?other, "a queue run got an outcome that is not its totals");
            }
        }
    }

    /// Commits `rows`, then sends `held`, in order with earlier commits.
    fn commit_then_send(
        &mut self,
        rows: Vec<StoredWrite>,
        held: Vec<(oneshot::Sender<Answer>, Answer)>,
    ) {
        if rows.is_empty() && held.is_empty() {
            return;
        }
        match &self.commits {
            Some(commits) => commits.submit(CommitJob {
                rows,
                replies: held,
            }),
            None => {
                for (reply, answer) in held {
                    let _ = reply.send(answer);
                }
            }
        }
    }
}

/// Reads the stored request of a queued write back (for deliveries).
pub fn stored_request(payload: &[u8]) -> Result<StoredRequest, String> {
    StoredRequest::from_json(payload)
}

/// A read or plain call that passes `incoming` on to `service`: the
/// client waiting for it, and the call.
fn passed_on(
    incoming: Incoming,
    service: ServiceId,
    keep: Option<(usize, Vec<HeaderName>)>,
) -> (Waiter, HttpCall) {
    let waiter = Waiter::Client {
        reply: incoming.reply,
        service,
        write: None,
    };
    let call = HttpCall {
        method: incoming.method,
        path_and_query: incoming.path_and_query,
        headers: incoming.headers,
        body: incoming.body,
        keep,
    };
    (waiter, call)
}
