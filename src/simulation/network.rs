//! The simulated network and the services behind it: the node's calls
//! travel with a latency the world draws per service, and some never come
//! back or come back after their deadline.
//!
//! The services are the demo services ([`DemoServices`]), with their sticky
//! outages (`set_service_health`) and their idempotent order book: they
//! outlive node restarts, as remote services do. A call reaches its service
//! after its latency and is answered there; the answer comes back at the
//! same instant, unless the world lost it (a *hang*: the node hears
//! nothing, and its deadline fails the call). A call made by a node that has
//! since crashed still reaches its service (an order may be created that
//! the node never heard of); only its answer goes nowhere.
//!
//! Each seed gives each service a latency profile (fast, steady, slow,
//! erratic: the slow ones answer late now and then) and a rate of lost
//! answers; the workload can also make a service hang outright, taking
//! calls and never processing them, until it recovers.

use crate::core::{Call, CallId, CallRequest, CallResult, ServiceId};
use crate::demo::DemoData;
use crate::demo::in_process::{DemoCall, DemoServices};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// The demo's three services, by index.
pub const SERVICE_COUNT: usize = 3;

/// How one service answers, for a whole run.
#[derive(Debug, Clone, Copy)]
pub struct ServiceProfile {
    /// Shortest and longest latency, in milliseconds (both included).
    pub latency_ms: (u64, u64),
    /// Percent of answers lost on the way back (the call hangs).
    pub lost_answer_percent: u32,
}

impl ServiceProfile {
    /// A random profile for calls whose deadline is `timeout` away: some
    /// services answer at once, some slowly, some later than the deadline.
    pub fn draw(rng: &mut fastrand::Rng, timeout: Duration) -> Self {
        let timeout = timeout.as_millis() as u64;
        let (latency_ms, lost_answer_percent) = match rng.u32(0..4) {
            0 => ((0, (timeout / 4).min(5)), 0),
            1 => ((timeout / 10, timeout / 2), 0),
            2 => ((timeout / 3, timeout * 3 / 2), 1),
            _ => ((0, timeout * 2), 5),
        };
        ServiceProfile {
            latency_ms,
            lost_answer_percent,
        }
    }
}

/// What became of a call whose time had come.
#[derive(Debug)]
pub struct Arrival {
    pub call: Call<DemoCall>,
    /// The node process that made it.
    pub incarnation: u64,
    /// What the service answered.
    pub result: CallResult,
    /// The answer never made it back: the call hangs.
    pub answer_lost: bool,
}

/// A call on its way, ordered by when it arrives (then by when it was sent).
#[derive(Debug)]
struct OnTheWay {
    at: Instant,
    sequence: u64,
    call: Call<DemoCall>,
    incarnation: u64,
    answer_lost: bool,
}

impl PartialEq for OnTheWay {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}

impl Eq for OnTheWay {}

impl PartialOrd for OnTheWay {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OnTheWay {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.sequence).cmp(&(other.at, other.sequence))
    }
}

/// What the network did over a run, for the long-run report.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetworkTally {
    pub calls: u64,
    pub answers_lost: u64,
    pub calls_to_a_hung_service: u64,
    /// Calls that arrived after the node that made them was gone.
    pub calls_outliving_their_node: u64,
}

/// The services and the calls on their way to them.
pub struct Network {
    services: DemoServices,
    profiles: [ServiceProfile; SERVICE_COUNT],
    hanging: [bool; SERVICE_COUNT],
    /// At the end of a run: no hangs, no lost answers, quick answers.
    calm_latency_ms: Option<u64>,
    rng: fastrand::Rng,
    on_the_way: BinaryHeap<Reverse<OnTheWay>>,
    sequence: u64,
    tally: NetworkTally,
}

impl Network {
    pub fn new(data: DemoData, profiles: [ServiceProfile; SERVICE_COUNT], seed: u64) -> Self {
        Network {
            services: DemoServices::new(data),
            profiles,
            hanging: [false; SERVICE_COUNT],
            calm_latency_ms: None,
            rng: fastrand::Rng::with_seed(seed ^ 0x0000_1a7e_c0de),
            on_the_way: BinaryHeap::new(),
            sequence: 0,
            tally: NetworkTally::default(),
        }
    }

    pub fn services(&self) -> &DemoServices {
        &self.services
    }

    pub fn tally(&self) -> NetworkTally {
        self.tally
    }

    /// `set_service_health`: the demo service's own sticky state.
    pub fn set_available(&mut self, service: ServiceId, available: bool) {
        self.services.set_available(service, available);
    }

    /// Makes `service` hang (take calls and never answer) or recover.
    pub fn set_hanging(&mut self, service: usize, hanging: bool) {
        self.hanging[service] = hanging;
    }

    /// From now on every call is answered within `latency_max`: no hang,
    /// no lost answer. Calls already on their way keep their fate.
    pub fn calm_down(&mut self, latency_max: Duration) {
        self.hanging = [false; SERVICE_COUNT];
        self.calm_latency_ms = Some(latency_max.as_millis() as u64);
    }

    /// Sends `call`, made by node process `incarnation` at `now`.
    pub fn send(&mut self, call: Call<DemoCall>, incarnation: u64, now: Instant) {
        let index = call.service.index();
        self.tally.calls += 1;
        if self.hanging[index] {
            // A hung service takes the call and never gets to it.
            self.tally.calls_to_a_hung_service += 1;
            return;
        }
        let profile = self.profiles[index];
        let (latency_ms, answer_lost) = match self.calm_latency_ms {
            Some(max) => (self.rng.u64(0..=max), false),
            None => {
                let (low, high) = profile.latency_ms;
                let lost = self.rng.u32(0..100) < profile.lost_answer_percent;
                (self.rng.u64(low..=high.max(low)), lost)
            }
        };
        self.tally.answers_lost += u64::from(answer_lost);
        self.sequence += 1;
        self.on_the_way.push(Reverse(OnTheWay {
            at: now + Duration::from_millis(latency_ms),
            sequence: self.sequence,
            call,
            incarnation,
            answer_lost,
        }));
    }

    /// When the next call arrives, if any is on its way.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.on_the_way.peek().map(|Reverse(next)| next.at)
    }

    /// The next call due at or before `now`, processed by its service.
    pub fn arrive(&mut self, now: Instant, current_incarnation: u64) -> Option<Arrival> {
        if self.next_arrival()? > now {
            return None;
        }
        let Reverse(next) = self.on_the_way.pop()?;
        let result = self.services.answer(&next.call);
        if next.incarnation != current_incarnation {
            self.tally.calls_outliving_their_node += 1;
        }
        Some(Arrival {
            result,
            answer_lost: next.answer_lost,
            call: next.call,
            incarnation: next.incarnation,
        })
    }
}

/// The delivery key a write call carries: a queued delivery's, or a direct
/// create's.
pub fn write_key(call: &Call<DemoCall>) -> Option<&str> {
    match &call.request {
        CallRequest::Deliver(delivery) => Some(&delivery.idempotency_key),
        CallRequest::Send(DemoCall {
            request: crate::demo::in_process::DemoRequest::CreateOrder { idempotency_key },
            ..
        }) => Some(idempotency_key),
        CallRequest::Send(_) => None,
    }
}

/// A short description of a call for the failure trace.
pub fn describe_call(id: CallId, call: &Call<DemoCall>) -> String {
    let what = match &call.request {
        CallRequest::Deliver(delivery) => format!(
            "deliver #{} {}",
            delivery.request_id, delivery.idempotency_key
        ),
        CallRequest::Send(demo) if demo.fail => format!("{:?} (failing)", demo.request),
        CallRequest::Send(demo) => format!("{:?}", demo.request),
    };
    format!("call {} to service {}: {what}", id.0, call.service.index())
}
