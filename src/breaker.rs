//! A circuit breaker per downstream service.
//!
//! A service that keeps failing is usually overloaded or down; calling it
//! more only adds load and makes every caller wait for a timeout. The
//! breaker counts consecutive failures and, past a threshold, stops calling
//! (`open`). After a wait it lets one probe through (`half_open`): success
//! closes the breaker, failure opens it again for twice as long, up to a cap.
//!
//! The breaker reads no clock: every method takes the current instant, so
//! the timeouts are tested by passing instants, never by sleeping.

use crate::planted_bug::{PlantedBug, is_planted};
use serde::Serialize;
use std::fmt;
use std::time::{Duration, Instant};

/// Default number of consecutive failures that opens a closed breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// Default wait in `open` before the first probe.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_millis(5_000);
/// Default cap on the open wait after repeated failed probes.
pub const DEFAULT_OPEN_TIMEOUT_MAX: Duration = Duration::from_millis(60_000);

/// How a breaker behaves. Every field has a default above and a flag in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures in `closed` that open the breaker.
    pub failure_threshold: u32,
    /// How long `open` lasts before a probe is allowed.
    pub open_timeout: Duration,
    /// Each failed probe doubles the open wait, up to this.
    pub open_timeout_max: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            open_timeout: DEFAULT_OPEN_TIMEOUT,
            open_timeout_max: DEFAULT_OPEN_TIMEOUT_MAX,
        }
    }
}

/// The three states, as named on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls are short-circuited until the open wait has passed.
    Open,
    /// One probe call decides whether to close or open again.
    HalfOpen,
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        })
    }
}

/// One state change, with the reason it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    pub reason: TransitionReason,
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionReason {
    /// `closed` → `open`: this many consecutive failures.
    FailureThreshold(u32),
    /// `open` → `half_open`: the open wait is over.
    OpenTimeoutElapsed,
    /// `half_open` → `closed`: the probe succeeded.
    ProbeSucceeded,
    /// `half_open` → `open`: the probe failed; open for this long.
    ProbeFailed(Duration),
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitionReason::FailureThreshold(n) => write!(f, "{n} consecutive failures"),
            TransitionReason::OpenTimeoutElapsed => f.write_str("open timeout elapsed"),
            TransitionReason::ProbeSucceeded => f.write_str("probe call succeeded"),
            TransitionReason::ProbeFailed(wait) => {
                write!(
                    f,
                    "probe call failed; next probe in {} ms",
                    wait.as_millis()
                )
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// The breaker for one service.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: State,
    /// The open wait used the last time the breaker opened; doubles on each
    /// failed probe, resets when the breaker closes.
    current_open_timeout: Duration,
    /// How many times the breaker has opened since start.
    times_opened: u64,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: State::Closed {
                consecutive_failures: 0,
            },
            current_open_timeout: config.open_timeout,
            times_opened: 0,
        }
    }

    /// The state as of the last call; an `open` breaker whose wait has passed
    /// still reads `open` until [`Self::poll`] or [`Self::allows_call`] runs.
    pub fn state(&self) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// Failures counted towards the threshold (0 unless `closed`).
    pub fn consecutive_failures(&self) -> u32 {
        match self.state {
            State::Closed {
                consecutive_failures,
            } => consecutive_failures,
            _ => 0,
        }
    }

    /// When an `open` breaker will let a probe through.
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
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

    /// Moves `open` to `half_open` once its wait has passed.
    pub fn poll(&mut self, now: Instant) -> Option<Transition> {
        if is_planted(PlantedBug::CloseWithoutProbe)
            && matches!(self.state, State::Open { until } if now >= until)
        {
            let closed = State::Closed {
                consecutive_failures: 0,
            };
            return Some(self.transition(closed, TransitionReason::OpenTimeoutElapsed));
        }
        match self.state {
            State::Open { until } if now >= until => {
                Some(self.transition(State::HalfOpen, TransitionReason::OpenTimeoutElapsed))
            }
            _ => None,
        }
    }

    /// Whether a call may be made now. In `half_open` the one probe is let
    /// through; calls are synchronous here, so at most one is ever in flight.
    pub fn allows_call(&mut self, now: Instant) -> bool {
        self.poll(now);
        !matches!(self.state, State::Open { .. })
    }

    /// Records a successful call.
    pub fn record_success(&mut self) -> Option<Transition> {
        match self.state {
            State::Closed { .. } => {
                self.state = State::Closed {
                    consecutive_failures: 0,
                };
                None
            }
            State::HalfOpen => {
                self.current_open_timeout = self.config.open_timeout;
                Some(self.transition(
                    State::Closed {
                        consecutive_failures: 0,
                    },
                    TransitionReason::ProbeSucceeded,
                ))
            }
            // A call that was let through before the breaker opened; it
            // changes nothing about the wait.
            State::Open { .. } => None,
        }
    }

    /// Records a failed call made at `now`.
    pub fn record_failure(&mut self, now: Instant) -> Option<Transition> {
        match self.state {
            State::Closed {
                consecutive_failures,
            } => {
                let failures = consecutive_failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    let until = now + self.current_open_timeout;
                    Some(self.transition(
                        State::Open { until },
                        TransitionReason::FailureThreshold(failures),
                    ))
                } else {
                    self.state = State::Closed {
                        consecutive_failures: failures,
                    };
                    None
                }
            }
            State::HalfOpen => {
                self.current_open_timeout = self
                    .current_open_timeout
                    .saturating_mul(2)
                    .min(self.config.open_timeout_max);
                let wait = self.current_open_timeout;
                Some(self.transition(
                    State::Open { until: now + wait },
                    TransitionReason::ProbeFailed(wait),
                ))
            }
            State::Open { .. } => None,
        }
    }

    fn transition(&mut self, to: State, reason: TransitionReason) -> Transition {
        let from = self.state();
        self.state = to;
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

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            open_timeout: 100 * MS,
            open_timeout_max: 350 * MS,
        })
    }

    fn open(breaker: &mut CircuitBreaker, now: Instant) {
        while breaker.state() == BreakerState::Closed {
            breaker.record_failure(now);
        }
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = breaker();
        assert_eq!(b.record_failure(t0), None);
        assert_eq!(b.record_failure(t0), None);
        assert_eq!(b.consecutive_failures(), 2);
        let transition = b.record_failure(t0).unwrap();
        assert_eq!(transition.to, BreakerState::Open);
        assert_eq!(transition.reason, TransitionReason::FailureThreshold(3));
        assert!(!b.allows_call(t0));
    }

    #[test]
    fn success_in_closed_resets_the_failure_count() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.record_failure(t0);
        b.record_failure(t0);
        b.record_success();
        b.record_failure(t0);
        b.record_failure(t0);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn open_breaker_half_opens_exactly_at_its_timeout() {
        let t0 = Instant::now();
        let mut b = breaker();
        open(&mut b, t0);
        assert_eq!(b.reopens_at(), Some(t0 + 100 * MS));
        assert!(!b.allows_call(t0 + 99 * MS));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.allows_call(t0 + 100 * MS));
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn successful_probe_closes_and_resets_the_open_timeout() {
        let t0 = Instant::now();
        let mut b = breaker();
        open(&mut b, t0);
        b.poll(t0 + 100 * MS);
        b.record_failure(t0 + 100 * MS);
        assert_eq!(b.current_open_timeout(), 200 * MS);
        b.poll(t0 + 300 * MS);
        let closed = b.record_success().unwrap();
        assert_eq!(closed.to, BreakerState::Closed);
        assert_eq!(b.current_open_timeout(), 100 * MS);
    }

    #[test]
    fn each_failed_probe_doubles_the_open_timeout_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = breaker();
        open(&mut b, t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..4 {
            now = b.reopens_at().unwrap();
            assert!(b.allows_call(now));
            b.record_failure(now);
            waits.push(b.reopens_at().unwrap() - now);
        }
        assert_eq!(waits, vec![200 * MS, 350 * MS, 350 * MS, 350 * MS]);
        assert!(!b.allows_call(now + 349 * MS));
        assert_eq!(b.times_opened(), 5);
    }
}
