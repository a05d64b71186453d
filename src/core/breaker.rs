//! A circuit breaker per downstream service, with the policies resilience4j
//! made familiar, all in one breaker.
//!
//! A service that keeps failing is usually overloaded or down; calling it
//! more only adds load and makes every caller wait for a timeout. The
//! breaker watches call outcomes and, when a rule trips, stops calling
//! (`open`). After a wait it hands out a fixed number of probe permits
//! (`half_open`): if every probe succeeds it closes, if one fails it opens
//! again for twice as long, up to a cap.
//!
//! Three rules can open a closed breaker; any one is enough:
//! - **consecutive failures** (the default, and today's only rule unless
//!   configured otherwise): `failure_threshold` failures in a row;
//! - **failure rate**: over a sliding window (the last N calls, or the last
//!   N seconds) at least `failure_rate_threshold` percent of calls failed,
//!   once `minimum_calls` were seen;
//! - **slow-call rate**: likewise for calls slower than
//!   `slow_call_duration`, even if every one of them succeeded.
//!
//! Calls go through a [`Permit`]: [`CircuitBreaker::try_acquire`] gives one
//! or refuses, and the outcome is recorded against it. A permit remembers
//! which state it was given in, so an answer that arrives after the breaker
//! moved on (a call let through just before it opened) changes nothing, and
//! `half_open` hands out exactly `permitted_calls_in_half_open` probes
//! however many requests arrive at once. A probe that never answers is
//! failed by its caller at its deadline, and `max_wait_in_half_open`, when
//! set, bounds the state itself.
//!
//! Deciding what counts as a failure (a status, a timeout, a refused
//! connection) is the caller's business ([`CallVerdict`]); this module only
//! counts. It reads no clock: every method takes the current instant, so
//! each rule is tested by passing instants, never by sleeping.

use crate::planted_bug::{PlantedBug, is_planted};
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Default number of consecutive failures that opens a closed breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// Default wait in `open` before the first probe.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_millis(5_000);
/// Default cap on the open wait after repeated failed probes.
pub const DEFAULT_OPEN_TIMEOUT_MAX: Duration = Duration::from_millis(60_000);
/// Default number of probes `half_open` lets through.
pub const DEFAULT_PERMITTED_CALLS_IN_HALF_OPEN: u32 = 1;
/// Default size of the sliding window: 100 calls, or 100 seconds.
pub const DEFAULT_SLIDING_WINDOW_SIZE: u32 = 100;
/// Default number of calls the window must hold before a rate can trip.
pub const DEFAULT_MINIMUM_CALLS: u32 = 10;

/// What the failure and slow-call rates are measured over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlidingWindow {
    /// The last `size` calls.
    Count,
    /// The calls of the last `size` seconds.
    Time,
}

/// How a breaker behaves. Every field has a default above; the Maelstrom
/// node sets them from flags, the gateway from its configuration file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures in `closed` that open the breaker; `None`
    /// switches the rule off.
    pub failure_threshold: Option<u32>,
    /// How long `open` lasts before probes are allowed.
    pub open_timeout: Duration,
    /// Each failed probe doubles the open wait, up to this.
    pub open_timeout_max: Duration,
    /// Opens when at least this percentage of the window's calls failed;
    /// `None` switches the rule off.
    pub failure_rate_threshold: Option<f64>,
    /// Opens when at least this percentage of the window's calls were slow;
    /// `None` switches the rule off.
    pub slow_call_rate_threshold: Option<f64>,
    /// A call that takes longer than this is slow.
    pub slow_call_duration: Duration,
    /// Whether the window counts calls or seconds.
    pub sliding_window: SlidingWindow,
    /// Calls (or seconds) in the window.
    pub sliding_window_size: u32,
    /// Calls the window must hold before either rate can open the breaker.
    pub minimum_calls: u32,
    /// Probes `half_open` lets through; the rest are refused as if open.
    pub permitted_calls_in_half_open: u32,
    /// The longest `half_open` may last without a decision before it opens
    /// again; `None`: as long as it takes (each probe has its own deadline).
    pub max_wait_in_half_open: Option<Duration>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: Some(DEFAULT_FAILURE_THRESHOLD),
            open_timeout: DEFAULT_OPEN_TIMEOUT,
            open_timeout_max: DEFAULT_OPEN_TIMEOUT_MAX,
            failure_rate_threshold: None,
            slow_call_rate_threshold: None,
            slow_call_duration: Duration::from_secs(60),
            sliding_window: SlidingWindow::Count,
            sliding_window_size: DEFAULT_SLIDING_WINDOW_SIZE,
            minimum_calls: DEFAULT_MINIMUM_CALLS,
            permitted_calls_in_half_open: DEFAULT_PERMITTED_CALLS_IN_HALF_OPEN,
            max_wait_in_half_open: None,
        }
    }
}

/// What both front doors' status reports show of a breaker.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    /// Failures in a row counted towards the threshold (0 unless `closed`).
    pub consecutive_failures: u32,
    /// The open wait that applies now (doubled by failed probes).
    pub open_timeout_ms: u64,
    /// Time until an open breaker lets a probe through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub half_open_in_ms: Option<u64>,
    pub times_opened: u64,
}

/// The three states, as named on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through; outcomes are counted.
    Closed,
    /// Calls are refused until the open wait has passed.
    Open,
    /// A fixed number of probes decide whether to close or open again.
    HalfOpen,
}

impl BreakerState {
    /// Every state, in the order declared (so `state as usize` indexes it).
    pub const ALL: [BreakerState; 3] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One state change, with the reason it happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    pub reason: TransitionReason,
}

/// Why a breaker changed state, with the figures that decided it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TransitionReason {
    /// `closed` → `open`: this many consecutive failures.
    FailureThreshold(u32),
    /// `closed` → `open`: this share of the window's calls failed.
    FailureRate(RateFigures),
    /// `closed` → `open`: this share of the window's calls were slow.
    SlowCallRate(RateFigures),
    /// `open` → `half_open`: the open wait is over.
    OpenTimeoutElapsed,
    /// `half_open` → `closed`: every probe succeeded.
    ProbeSucceeded,
    /// `half_open` → `open`: a probe failed (or was slow, or never answered
    /// by its deadline); open for this long.
    ProbeFailed(Duration),
    /// `half_open` → `open`: no decision within `max_wait_in_half_open`;
    /// open for this long.
    HalfOpenTimedOut(Duration),
}

/// A rate that tripped, and what it was measured over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateFigures {
    /// Percent of the window's calls.
    pub rate: f64,
    /// The configured threshold, in percent.
    pub threshold: f64,
    /// Calls in the window.
    pub calls: u32,
    pub window: SlidingWindow,
    pub window_size: u32,
}

impl fmt::Display for RateFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let window = match self.window {
            SlidingWindow::Count => format!("the last {} calls", self.window_size),
            SlidingWindow::Time => format!("the last {} s", self.window_size),
        };
        write!(
            f,
            "{:.1}% >= {}% of {} calls over {window}",
            self.rate, self.threshold, self.calls
        )
    }
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitionReason::FailureThreshold(n) => write!(f, "{n} consecutive failures"),
            TransitionReason::FailureRate(figures) => write!(f, "failure rate {figures}"),
            TransitionReason::SlowCallRate(figures) => write!(f, "slow-call rate {figures}"),
            TransitionReason::OpenTimeoutElapsed => f.write_str("open timeout elapsed"),
            TransitionReason::ProbeSucceeded => f.write_str("probe call succeeded"),
            TransitionReason::ProbeFailed(wait) => {
                write!(
                    f,
                    "probe call failed; next probe in {} ms",
                    wait.as_millis()
                )
            }
            TransitionReason::HalfOpenTimedOut(wait) => write!(
                f,
                "no decision within max_wait_in_half_open; next probe in {} ms",
                wait.as_millis()
            ),
        }
    }
}

/// What one call came to, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallVerdict {
    /// The call failed (a failure status, a refused connection, a timeout).
    pub failed: bool,
    /// The call took longer than `slow_call_duration`.
    pub slow: bool,
}

impl CallVerdict {
    pub const SUCCESS: CallVerdict = CallVerdict {
        failed: false,
        slow: false,
    };
    pub const FAILURE: CallVerdict = CallVerdict {
        failed: true,
        slow: false,
    };
}

/// Leave to make one call. Record its outcome with
/// [`CircuitBreaker::record`]; a permit whose call is abandoned must be
/// recorded as a failure (a probe must never be lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a permit's call outcome must be recorded"]
pub struct Permit {
    /// The breaker's generation when the permit was given: outcomes of
    /// permits from an earlier state are ignored.
    generation: u64,
    probe: bool,
}

impl Permit {
    /// Whether this call is one of `half_open`'s probes.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// Why no permit was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Open: probes are allowed from this instant.
    Open { until: Instant },
    /// Half-open with every probe out; the breaker decides when they return.
    ProbesOut,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        since: Instant,
        probes_out: u32,
        probes_succeeded: u32,
    },
}

/// The recent outcomes a rate is measured over.
#[derive(Debug, Clone)]
enum Window {
    /// The last `size` calls, oldest first.
    Calls {
        size: usize,
        outcomes: VecDeque<CallVerdict>,
        failures: u32,
        slow: u32,
    },
    /// Per-second buckets of the last `size` seconds.
    Seconds {
        size: u64,
        /// Counts per second, keyed by seconds since `origin`, oldest first.
        buckets: VecDeque<(u64, Bucket)>,
        origin: Option<Instant>,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    calls: u32,
    failures: u32,
    slow: u32,
}

impl Window {
    fn new(config: &BreakerConfig) -> Self {
        let size = config.sliding_window_size.max(1);
        match config.sliding_window {
            SlidingWindow::Count => Window::Calls {
                size: size as usize,
                outcomes: VecDeque::new(),
                failures: 0,
                slow: 0,
            },
            SlidingWindow::Time => Window::Seconds {
                size: u64::from(size),
                buckets: VecDeque::new(),
                origin: None,
            },
        }
    }

    fn record(&mut self, verdict: CallVerdict, now: Instant) {
        self.expire(now);
        match self {
            Window::Calls {
                size,
                outcomes,
                failures,
                slow,
            } => {
                if outcomes.len() == *size
                    && let Some(oldest) = outcomes.pop_front()
                {
                    *failures -= u32::from(oldest.failed);
                    *slow -= u32::from(oldest.slow);
                }
                outcomes.push_back(verdict);
                *failures += u32::from(verdict.failed);
                *slow += u32::from(verdict.slow);
            }
            Window::Seconds {
                buckets, origin, ..
            } => {
                let second = seconds_since(origin, now);
                match buckets.back_mut() {
                    Some((at, bucket)) if *at == second => bucket.add(verdict),
                    _ => {
                        let mut bucket = Bucket::default();
                        bucket.add(verdict);
                        buckets.push_back((second, bucket));
                    }
                }
            }
        }
    }

    /// Drops the buckets that left a time window.
    fn expire(&mut self, now: Instant) {
        if let Window::Seconds {
            size,
            buckets,
            origin,
        } = self
        {
            let second = seconds_since(origin, now);
            while buckets.front().is_some_and(|(at, _)| at + *size <= second) {
                buckets.pop_front();
            }
        }
    }

    /// Calls, failures and slow calls in the window at `now`.
    fn totals(&mut self, now: Instant) -> Bucket {
        self.expire(now);
        match self {
            Window::Calls {
                outcomes,
                failures,
                slow,
                ..
            } => Bucket {
                calls: outcomes.len() as u32,
                failures: *failures,
                slow: *slow,
            },
            Window::Seconds { buckets, .. } => {
                buckets
                    .iter()
                    .fold(Bucket::default(), |mut sum, (_, bucket)| {
                        sum.calls += bucket.calls;
                        sum.failures += bucket.failures;
                        sum.slow += bucket.slow;
                        sum
                    })
            }
        }
    }

    fn clear(&mut self) {
        match self {
            Window::Calls {
                outcomes,
                failures,
                slow,
                ..
            } => {
                outcomes.clear();
                *failures = 0;
                *slow = 0;
            }
            Window::Seconds { buckets, .. } => buckets.clear(),
        }
    }
}

/// Whole seconds from the window's first call to `now`.
fn seconds_since(origin: &mut Option<Instant>, now: Instant) -> u64 {
    let origin = *origin.get_or_insert(now);
    now.saturating_duration_since(origin).as_secs()
}

impl Bucket {
    fn add(&mut self, verdict: CallVerdict) {
        self.calls += 1;
        self.failures += u32::from(verdict.failed);
        self.slow += u32::from(verdict.slow);
    }
}

/// The breaker for one service.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: State,
    /// Bumped on every transition; permits carry it.
    generation: u64,
    consecutive_failures: u32,
    /// Only kept when a rate rule is on.
    window: Option<Window>,
    /// The open wait used the last time the breaker opened; doubles on each
    /// failed probe, resets when the breaker closes.
    current_open_timeout: Duration,
    /// How many times the breaker has opened since start.
    times_opened: u64,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        let rates_on =
            config.failure_rate_threshold.is_some() || config.slow_call_rate_threshold.is_some();
        CircuitBreaker {
            window: rates_on.then(|| Window::new(&config)),
            config,
            state: State::Closed,
            generation: 0,
            consecutive_failures: 0,
            current_open_timeout: config.open_timeout,
            times_opened: 0,
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state as of the last call; an `open` breaker whose wait has passed
    /// still reads `open` until [`Self::poll`] or [`Self::try_acquire`] runs.
    pub fn state(&self) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Failures in a row counted towards the threshold (0 unless `closed`).
    pub fn consecutive_failures(&self) -> u32 {
        match self.state {
            State::Closed => self.consecutive_failures,
            _ => 0,
        }
    }

    /// When an `open` breaker will let probes through.
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Half-open with every permitted probe out: no call is let through
    /// until a probe's outcome (or the end of `max_wait_in_half_open`)
    /// decides, so waiting for the clock alone would be spinning.
    pub fn awaits_probes(&self) -> bool {
        match self.state {
            State::HalfOpen { probes_out, .. } => {
                probes_out >= self.config.permitted_calls_in_half_open.max(1)
            }
            _ => false,
        }
    }

    /// The next instant at which [`Self::poll`] changes something: the end
    /// of the open wait, or of `max_wait_in_half_open`.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            State::HalfOpen { since, .. } if is_planted(PlantedBug::HalfOpenWakesAtOnce) => {
                Some(since)
            }
            State::HalfOpen { since, .. } => {
                self.config.max_wait_in_half_open.map(|max| since + max)
            }
            State::Closed => None,
        }
    }

    /// The open wait that applies now (doubled by failed probes).
    pub fn current_open_timeout(&self) -> Duration {
        self.current_open_timeout
    }

    /// How many times this breaker has opened.
    pub fn times_opened(&self) -> u64 {
        self.times_opened
    }

    /// The breaker as an operator sees it at `now`.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        BreakerSnapshot {
            state: self.state(),
            consecutive_failures: self.consecutive_failures(),
            open_timeout_ms: self.current_open_timeout().as_millis() as u64,
            half_open_in_ms: self
                .reopens_at()
                .map(|at| at.saturating_duration_since(now).as_millis() as u64),
            times_opened: self.times_opened,
        }
    }

    /// Probes out and not yet answered (0 unless `half_open`).
    pub fn probes_out(&self) -> u32 {
        match self.state {
            State::HalfOpen { probes_out, .. } => probes_out,
            _ => 0,
        }
    }

    /// Does what time alone decides: `open` becomes `half_open` once its
    /// wait is over, and `half_open` opens again past its max wait.
    pub fn poll(&mut self, now: Instant) -> Option<Transition> {
        match self.state {
            State::Open { until } if now >= until => {
                if is_planted(PlantedBug::CloseWithoutProbe) {
                    self.consecutive_failures = 0;
                    return Some(
                        self.transition(State::Closed, TransitionReason::OpenTimeoutElapsed),
                    );
                }
                let half_open = State::HalfOpen {
                    since: now,
                    probes_out: 0,
                    probes_succeeded: 0,
                };
                Some(self.transition(half_open, TransitionReason::OpenTimeoutElapsed))
            }
            State::HalfOpen { since, .. }
                if self
                    .config
                    .max_wait_in_half_open
                    .is_some_and(|max| now >= since + max) =>
            {
                let wait = self.lengthen_open_timeout();
                let open = State::Open { until: now + wait };
                Some(self.transition(open, TransitionReason::HalfOpenTimedOut(wait)))
            }
            _ => None,
        }
    }

    /// Asks to make a call at `now`: a permit, or why not. Half-opens first
    /// if the open wait is over (the transition is returned too).
    pub fn try_acquire(&mut self, now: Instant) -> (Result<Permit, Refusal>, Option<Transition>) {
        let transition = self.poll(now);
        let permit = match &mut self.state {
            State::Closed => Ok(Permit {
                generation: self.generation,
                probe: false,
            }),
            State::Open { until } => {
                if is_planted(PlantedBug::CallThroughOpenBreaker) {
                    Ok(Permit {
                        generation: self.generation,
                        probe: false,
                    })
                } else {
                    Err(Refusal::Open { until: *until })
                }
            }
            State::HalfOpen { probes_out, .. } => {
                let extra = u32::from(is_planted(PlantedBug::ExtraHalfOpenProbe));
                if *probes_out < self.config.permitted_calls_in_half_open.max(1) + extra {
                    *probes_out += 1;
                    Ok(Permit {
                        generation: self.generation,
                        probe: true,
                    })
                } else {
                    Err(Refusal::ProbesOut)
                }
            }
        };
        (permit, transition)
    }

    /// Records how the call made under `permit` went, at `now`. Outcomes of
    /// permits given before the breaker last changed state are ignored.
    pub fn record(
        &mut self,
        permit: Permit,
        verdict: CallVerdict,
        now: Instant,
    ) -> Option<Transition> {
        if permit.generation != self.generation {
            return None;
        }
        match self.state {
            State::Closed => self.record_closed(verdict, now),
            State::HalfOpen {
                since,
                probes_out,
                probes_succeeded,
            } => {
                let failed = verdict.failed
                    || (verdict.slow && self.config.slow_call_rate_threshold.is_some());
                if failed {
                    let wait = self.lengthen_open_timeout();
                    let open = State::Open { until: now + wait };
                    return Some(self.transition(open, TransitionReason::ProbeFailed(wait)));
                }
                let probes_succeeded = probes_succeeded + 1;
                if probes_succeeded >= self.config.permitted_calls_in_half_open.max(1) {
                    self.current_open_timeout = self.config.open_timeout;
                    self.consecutive_failures = 0;
                    if let Some(window) = &mut self.window {
                        window.clear();
                    }
                    return Some(self.transition(State::Closed, TransitionReason::ProbeSucceeded));
                }
                self.state = State::HalfOpen {
                    since,
                    probes_out,
                    probes_succeeded,
                };
                None
            }
            // A permit of this generation is never given while open.
            State::Open { .. } => None,
        }
    }

    fn record_closed(&mut self, verdict: CallVerdict, now: Instant) -> Option<Transition> {
        self.consecutive_failures = if verdict.failed {
            self.consecutive_failures.saturating_add(1)
        } else {
            0
        };
        if let Some(threshold) = self.config.failure_threshold
            && self.consecutive_failures >= threshold
        {
            let reason = TransitionReason::FailureThreshold(self.consecutive_failures);
            return Some(self.open(reason, now));
        }
        let window = self.window.as_mut()?;
        window.record(verdict, now);
        let totals = window.totals(now);
        if totals.calls < self.config.minimum_calls.max(1) {
            return None;
        }
        let figures = |count: u32, threshold: f64| RateFigures {
            rate: f64::from(count) * 100.0 / f64::from(totals.calls),
            threshold,
            calls: totals.calls,
            window: self.config.sliding_window,
            window_size: self.config.sliding_window_size,
        };
        let tripped = self
            .config
            .failure_rate_threshold
            .map(|threshold| figures(totals.failures, threshold))
            .filter(|figures| figures.rate >= figures.threshold)
            .map(TransitionReason::FailureRate)
            .or_else(|| {
                self.config
                    .slow_call_rate_threshold
                    .map(|threshold| figures(totals.slow, threshold))
                    .filter(|figures| figures.rate >= figures.threshold)
                    .map(TransitionReason::SlowCallRate)
            })?;
        Some(self.open(tripped, now))
    }

    /// `closed` → `open` for the current wait.
    fn open(&mut self, reason: TransitionReason, now: Instant) -> Transition {
        if let Some(window) = &mut self.window {
            window.clear();
        }
        let until = now + self.current_open_timeout;
        self.transition(State::Open { until }, reason)
    }

    /// Doubles the open wait (up to the cap) and returns it.
    fn lengthen_open_timeout(&mut self) -> Duration {
        self.current_open_timeout = self
            .current_open_timeout
            .saturating_mul(2)
            .min(self.config.open_timeout_max.max(self.config.open_timeout));
        self.current_open_timeout
    }

    fn transition(&mut self, to: State, reason: TransitionReason) -> Transition {
        let from = self.state();
        self.state = to;
        self.generation += 1;
        if matches!(to, State::Open { .. }) {
            self.times_opened += 1;
        }
        Transition {
            from,
            to: self.state(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn consecutive(threshold: u32) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: Some(threshold),
            open_timeout: 100 * MS,
            open_timeout_max: 350 * MS,
            ..BreakerConfig::default()
        }
    }

    /// Makes one call at `now` and records `verdict`; `None` if refused.
    fn call(
        b: &mut CircuitBreaker,
        verdict: CallVerdict,
        now: Instant,
    ) -> Option<Option<Transition>> {
        let (permit, _) = b.try_acquire(now);
        permit.ok().map(|permit| b.record(permit, verdict, now))
    }

    fn fail(b: &mut CircuitBreaker, now: Instant) -> Option<Option<Transition>> {
        call(b, CallVerdict::FAILURE, now)
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(consecutive(3));
        assert_eq!(fail(&mut b, t0), Some(None));
        assert_eq!(fail(&mut b, t0), Some(None));
        assert_eq!(b.consecutive_failures(), 2);
        let transition = fail(&mut b, t0).unwrap().unwrap();
        assert_eq!(transition.to, BreakerState::Open);
        assert_eq!(transition.reason, TransitionReason::FailureThreshold(3));
        assert_eq!(
            b.try_acquire(t0).0,
            Err(Refusal::Open {
                until: t0 + 100 * MS
            })
        );
    }

    #[test]
    fn success_in_closed_resets_the_failure_count() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(consecutive(3));
        fail(&mut b, t0);
        fail(&mut b, t0);
        call(&mut b, CallVerdict::SUCCESS, t0);
        fail(&mut b, t0);
        fail(&mut b, t0);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn open_breaker_half_opens_exactly_at_its_timeout() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(consecutive(1));
        fail(&mut b, t0);
        assert_eq!(b.reopens_at(), Some(t0 + 100 * MS));
        assert!(b.try_acquire(t0 + 99 * MS).0.is_err());
        assert_eq!(b.state(), BreakerState::Open);
        let (permit, transition) = b.try_acquire(t0 + 100 * MS);
        assert!(permit.unwrap().is_probe());
        assert_eq!(transition.unwrap().to, BreakerState::HalfOpen);
    }

    #[test]
    fn each_failed_probe_doubles_the_open_timeout_up_to_the_cap_and_success_resets_it() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(consecutive(1));
        fail(&mut b, t0);
        let mut waits = Vec::new();
        for _ in 0..4 {
            let now = b.reopens_at().unwrap();
            fail(&mut b, now).expect("probe permitted");
            waits.push(b.reopens_at().unwrap() - now);
        }
        assert_eq!(waits, vec![200 * MS, 350 * MS, 350 * MS, 350 * MS]);
        assert_eq!(b.times_opened(), 5);
        let now = b.reopens_at().unwrap();
        let closed = call(&mut b, CallVerdict::SUCCESS, now).unwrap().unwrap();
        assert_eq!(closed.reason, TransitionReason::ProbeSucceeded);
        assert_eq!(b.current_open_timeout(), 100 * MS);
    }

    #[test]
    fn half_open_gives_exactly_the_permitted_probes_however_many_ask() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            permitted_calls_in_half_open: 3,
            ..consecutive(1)
        });
        fail(&mut b, t0);
        let now = t0 + 100 * MS;
        let results: Vec<_> = (0..50).map(|_| b.try_acquire(now).0).collect();
        let permits: Vec<Permit> = results.iter().filter_map(|r| r.ok()).collect();
        assert_eq!(permits.len(), 3);
        assert!(
            results
                .iter()
                .filter(|r| r.is_err())
                .all(|r| *r == Err(Refusal::ProbesOut))
        );
        // Two succeed: still half-open, and still no fourth probe.
        assert_eq!(b.record(permits[0], CallVerdict::SUCCESS, now), None);
        assert_eq!(b.record(permits[1], CallVerdict::SUCCESS, now), None);
        assert_eq!(b.try_acquire(now).0, Err(Refusal::ProbesOut));
        let closed = b.record(permits[2], CallVerdict::SUCCESS, now).unwrap();
        assert_eq!(closed.to, BreakerState::Closed);
    }

    #[test]
    fn one_failed_probe_of_several_opens_and_the_late_ones_change_nothing() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            permitted_calls_in_half_open: 2,
            ..consecutive(1)
        });
        fail(&mut b, t0);
        let now = t0 + 100 * MS;
        let first = b.try_acquire(now).0.unwrap();
        let second = b.try_acquire(now).0.unwrap();
        let opened = b.record(first, CallVerdict::FAILURE, now).unwrap();
        assert_eq!(opened.reason, TransitionReason::ProbeFailed(200 * MS));
        assert_eq!(b.record(second, CallVerdict::SUCCESS, now), None);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn outcome_of_a_call_let_through_before_the_breaker_opened_changes_nothing() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(consecutive(2));
        let early = b.try_acquire(t0).0.unwrap();
        fail(&mut b, t0);
        fail(&mut b, t0);
        assert_eq!(b.state(), BreakerState::Open);
        let now = t0 + 100 * MS;
        let probe = b.try_acquire(now).0.unwrap();
        // The early call's success must not close the half-open breaker.
        assert_eq!(b.record(early, CallVerdict::SUCCESS, now), None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.record(probe, CallVerdict::SUCCESS, now).is_some());
    }

    #[test]
    fn half_open_past_its_max_wait_opens_again() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            max_wait_in_half_open: Some(50 * MS),
            ..consecutive(1)
        });
        fail(&mut b, t0);
        let probe = b.try_acquire(t0 + 100 * MS).0.unwrap();
        assert_eq!(b.next_deadline(), Some(t0 + 150 * MS));
        assert_eq!(b.poll(t0 + 149 * MS), None);
        let opened = b.poll(t0 + 150 * MS).unwrap();
        assert_eq!(opened.reason, TransitionReason::HalfOpenTimedOut(200 * MS));
        // The stuck probe's answer, when it finally comes, changes nothing.
        assert_eq!(b.record(probe, CallVerdict::SUCCESS, t0 + 151 * MS), None);
        assert_eq!(b.state(), BreakerState::Open);
    }

    fn rates(window: SlidingWindow, size: u32, minimum_calls: u32) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: None,
            failure_rate_threshold: Some(50.0),
            sliding_window: window,
            sliding_window_size: size,
            minimum_calls,
            ..consecutive(1)
        }
    }

    #[test]
    fn failure_rate_over_the_last_calls_opens_once_minimum_calls_were_seen() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(rates(SlidingWindow::Count, 4, 4));
        // Alternating: never two failures in a row, 50 % failed.
        for verdict in [
            CallVerdict::FAILURE,
            CallVerdict::SUCCESS,
            CallVerdict::FAILURE,
        ] {
            assert_eq!(call(&mut b, verdict, t0), Some(None), "below minimum_calls");
        }
        let opened = call(&mut b, CallVerdict::SUCCESS, t0).unwrap().unwrap();
        let TransitionReason::FailureRate(figures) = opened.reason else {
            panic!("{opened:?}")
        };
        assert_eq!((figures.rate, figures.calls), (50.0, 4));
        assert_eq!(
            opened.reason.to_string(),
            "failure rate 50.0% >= 50% of 4 calls over the last 4 calls"
        );
    }

    #[test]
    fn count_window_holds_only_the_last_calls() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(rates(SlidingWindow::Count, 4, 4));
        for _ in 0..4 {
            call(&mut b, CallVerdict::SUCCESS, t0);
        }
        call(&mut b, CallVerdict::FAILURE, t0);
        // Over all six calls 2 failed (33 %); over the last four, 50 %.
        let opened = fail(&mut b, t0).unwrap().unwrap();
        let TransitionReason::FailureRate(figures) = opened.reason else {
            panic!("{opened:?}")
        };
        assert_eq!((figures.rate, figures.calls), (50.0, 4));
    }

    #[test]
    fn time_window_counts_only_the_last_seconds() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut b = CircuitBreaker::new(rates(SlidingWindow::Time, 2, 4));
        fail(&mut b, t0);
        fail(&mut b, t0);
        // Two seconds later those failures have left the window: counting
        // them, 3 of 5 would have failed and the breaker opened.
        let later = t0 + 2 * second;
        call(&mut b, CallVerdict::SUCCESS, later);
        call(&mut b, CallVerdict::SUCCESS, later);
        fail(&mut b, later);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "3 calls: below minimum_calls"
        );
        let opened = fail(&mut b, later + second / 2).unwrap().unwrap();
        let TransitionReason::FailureRate(figures) = opened.reason else {
            panic!("{opened:?}")
        };
        assert_eq!((figures.rate, figures.calls), (50.0, 4));
    }

    #[test]
    fn slow_calls_open_the_breaker_even_when_every_call_succeeds() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            failure_threshold: Some(5),
            slow_call_rate_threshold: Some(80.0),
            slow_call_duration: 200 * MS,
            sliding_window_size: 5,
            minimum_calls: 5,
            ..consecutive(5)
        });
        let slow = CallVerdict {
            failed: false,
            slow: true,
        };
        for _ in 0..3 {
            call(&mut b, slow, t0);
        }
        call(&mut b, CallVerdict::SUCCESS, t0);
        assert_eq!(b.state(), BreakerState::Closed, "below the minimum");
        let opened = call(&mut b, slow, t0).unwrap().unwrap();
        let TransitionReason::SlowCallRate(figures) = opened.reason else {
            panic!("{opened:?}")
        };
        assert_eq!((figures.rate, figures.calls), (80.0, 5));
    }

    #[test]
    fn consecutive_rule_can_be_switched_off() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            failure_threshold: None,
            ..consecutive(1)
        });
        for _ in 0..1000 {
            fail(&mut b, t0);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
