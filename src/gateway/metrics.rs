//! What the gateway counts, for Prometheus (`GET /metrics`) and the status
//! page: requests by route and outcome, upstream calls by service and
//! result with their latency, breaker states and transitions, the cache,
//! the queue and the mode.
//!
//! Counters are updated where things happen (a connection task counts its
//! request's outcome, a call's result is counted when it reaches the
//! engine), through handles made at start for every route, service and
//! outcome, so counting is an atomic add; gauges are read off the core
//! when they are asked for.

use crate::core::breaker::BreakerState;
use crate::core::load_mode::Mode;
use crate::core::{CallFailure, CallResult, Core, ServiceId};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a client's request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// The service answered.
    Fresh,
    /// A last good copy, because the service could not answer.
    Stale,
    /// The route's feature is switched off.
    Degraded,
    /// A write accepted into the queue (`202`).
    Queued,
    /// Nothing to answer with: the service cannot, and there is no copy.
    Unavailable,
    /// Refused before reaching a service: no route, a limit, a conflict.
    Rejected,
}

impl RequestOutcome {
    pub const ALL: [RequestOutcome; 6] = [
        RequestOutcome::Fresh,
        RequestOutcome::Stale,
        RequestOutcome::Degraded,
        RequestOutcome::Queued,
        RequestOutcome::Unavailable,
        RequestOutcome::Rejected,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Fresh => "fresh",
            RequestOutcome::Stale => "stale",
            RequestOutcome::Degraded => "degraded",
            RequestOutcome::Queued => "queued",
            RequestOutcome::Unavailable => "unavailable",
            RequestOutcome::Rejected => "rejected",
        }
    }
}

/// How a call ended, as the metrics name it.
const CALL_RESULTS: [&str; 5] = ["answered", "server_error", "refused", "timed_out", "broken"];

fn call_result_index(result: &CallResult) -> usize {
    match result {
        CallResult::Answered(response) if response.status < 500 => 0,
        CallResult::Answered(_) => 1,
        CallResult::Failed(CallFailure::Refused) => 2,
        CallResult::Failed(CallFailure::TimedOut) => 3,
        CallResult::Failed(CallFailure::Broken(_)) => 4,
    }
}

/// The route a request matched no route is counted under.
pub const NO_ROUTE: &str = "none";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    service: String,
    to: String,
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    /// By route (the last: requests matching none), then outcome.
    requests: Vec<[Counter; RequestOutcome::ALL.len()]>,
    /// The same, summed over routes, for the status page.
    outcomes: [AtomicU64; RequestOutcome::ALL.len()],
    /// By service, then [`CALL_RESULTS`].
    calls: Vec<[Counter; CALL_RESULTS.len()]>,
    /// By service.
    latency: Vec<Histogram>,
    breaker_state: Vec<Gauge>,
    /// Recent call latencies, for percentiles.
    windows: Vec<Mutex<LatencyWindow>>,
    /// By service, then the state entered ([`BreakerState::ALL`]).
    transitions: Vec<[Counter; BreakerState::ALL.len()]>,
    cache_entries: Gauge,
    fallbacks_served: Counter,
    queue_depth: Gauge,
    dead_letters: Gauge,
    mode: Gauge,
    /// Fallbacks already counted (the core keeps a running total).
    fallbacks_counted: AtomicU64,
}

/// One counter of `family` per row and column, made at start, so that each
/// is listed at 0 from the start: a counter that appears only once it counts
/// reads as "no data", not as "never happened", on a dashboard. Counting
/// then indexes the grid, with no label set built per count.
fn counter_grid<L, R, C: Copy, const N: usize>(
    family: &Family<L, Counter>,
    rows: impl IntoIterator<Item = R>,
    columns: [C; N],
    labels: impl Fn(&R, C) -> L,
) -> Vec<[Counter; N]>
where
    L: Clone + std::hash::Hash + Eq,
{
    rows.into_iter()
        .map(|row| columns.map(|column| family.get_or_create(&labels(&row, column)).clone()))
        .collect()
}

impl Metrics {
    /// Metrics for `routes` (as they are named: `GET /users/{id}`) and
    /// `services` (by [`ServiceId`] order).
    pub fn new(routes: &[String], services: &[String]) -> Self {
        let mut registry = Registry::with_prefix("grace");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Client requests by route and outcome",
            requests.clone(),
        );
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "upstream_calls",
            "Calls to upstream services by result",
            calls.clone(),
        );
        let latency = Family::<ServiceLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        registry.register(
            "upstream_call_duration_seconds",
            "How long upstream calls took",
            latency.clone(),
        );
        let breaker_state = Family::<ServiceLabels, Gauge>::default();
        registry.register(
            "breaker_state",
            "Circuit breaker state per service: 0 closed, 1 half-open, 2 open",
            breaker_state.clone(),
        );
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "breaker_transitions",
            "Circuit breaker transitions per service, by the state entered",
            transitions.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "cache_entries",
            "Copies in the fallback cache",
            cache_entries.clone(),
        );
        let fallbacks_served = Counter::default();
        registry.register(
            "cache_fallbacks_served",
            "Answers served from the fallback cache",
            fallbacks_served.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Writes waiting in the durable queue",
            queue_depth.clone(),
        );
        let dead_letters = Gauge::default();
        registry.register(
            "queue_dead_letters",
            "Writes dead-lettered over the journal's life",
            dead_letters.clone(),
        );
        let mode = Gauge::default();
        registry.register(
            "mode",
            "Load mode: 0 normal, 1 degraded, 2 critical",
            mode.clone(),
        );
        let requests = counter_grid(
            &requests,
            routes.iter().map(String::as_str).chain([NO_ROUTE]),
            RequestOutcome::ALL,
            |route, outcome| RequestLabels {
                route: route.to_string(),
                outcome: outcome.as_str().to_string(),
            },
        );
        let service_labels = |service: &String| ServiceLabels {
            service: service.clone(),
        };
        let calls = counter_grid(&calls, services, CALL_RESULTS, |service, result| {
            CallLabels {
                service: service.to_string(),
                result: result.to_string(),
            }
        });
        let transitions = counter_grid(&transitions, services, BreakerState::ALL, |service, to| {
            TransitionLabels {
                service: service.to_string(),
                to: to.as_str().to_string(),
            }
        });
        Metrics {
            registry,
            requests,
            outcomes: Default::default(),
            calls,
            latency: services
                .iter()
                .map(|service| latency.get_or_create(&service_labels(service)).clone())
                .collect(),
            breaker_state: services
                .iter()
                .map(|service| {
                    breaker_state
                        .get_or_create(&service_labels(service))
                        .clone()
                })
                .collect(),
            windows: services.iter().map(|_| Mutex::default()).collect(),
            transitions,
            cache_entries,
            fallbacks_served,
            queue_depth,
            dead_letters,
            mode,
            fallbacks_counted: AtomicU64::new(0),
        }
    }

    /// A client's request on `route` (none: it matched no route) ended
    /// with `outcome`.
    pub fn request(&self, route: Option<usize>, outcome: RequestOutcome) {
        let route = route.unwrap_or(self.requests.len() - 1);
        self.requests[route][outcome as usize].inc();
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests by outcome so far, summed over routes.
    pub fn outcome_totals(&self) -> Vec<(&'static str, u64)> {
        RequestOutcome::ALL
            .iter()
            .map(|&outcome| {
                (
                    outcome.as_str(),
                    self.outcomes[outcome as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// A call to `service` ended with `result` after `took`.
    pub fn upstream_call(&self, service: ServiceId, result: &CallResult, took: Duration) {
        let service = service.index();
        self.calls[service][call_result_index(result)].inc();
        self.latency[service].observe(took.as_secs_f64());
        self.windows[service]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .record(took);
    }

    /// The `q` quantile of `service`'s recent call latencies.
    pub fn latency_quantile(&self, service: ServiceId, q: f64) -> Option<Duration> {
        self.windows[service.index()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .quantile(q)
    }

    /// Counts the breaker transitions the core made since the last time.
    pub fn count_transitions<W, P>(&self, core: &mut Core<W, P>) {
        for record in core.take_transitions() {
            self.transitions[record.service.index()][record.transition.to as usize].inc();
        }
    }

    /// Reads the gauges off the core.
    pub fn observe_gauges<W, P>(&self, core: &Core<W, P>) {
        for (id, _) in core.services().iter() {
            let state = match core.breaker_state(id) {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            };
            self.breaker_state[id.index()].set(state);
        }
        let cache = core.cache();
        self.cache_entries.set(cache.len() as i64);
        let served = cache.fallbacks_served();
        let counted = self.fallbacks_counted.swap(served, Ordering::Relaxed);
        self.fallbacks_served.inc_by(served.saturating_sub(counted));
        self.queue_depth.set(core.queue().depth() as i64);
        self.dead_letters.set(core.queue().dead_letters() as i64);
        self.mode.set(match core.shedder().mode() {
            Mode::Normal => 0,
            Mode::Degraded => 1,
            Mode::Critical => 2,
        });
    }

    /// Everything, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Recent answers' latencies, for the status page's percentiles.
#[derive(Debug, Default)]
pub struct LatencyWindow {
    samples: VecDeque<Duration>,
}

impl LatencyWindow {
    /// Samples kept per service.
    const SIZE: usize = 1024;

    pub fn record(&mut self, took: Duration) {
        if self.samples.len() == Self::SIZE {
            self.samples.pop_front();
        }
        self.samples.push_back(took);
    }

    /// The `q` quantile (0..=1) of the recent samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<Duration> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        Some(sorted[index])
    }
}
