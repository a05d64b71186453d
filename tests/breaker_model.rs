//! The circuit breaker checked against a model simple enough to be obviously
//! right, over random sequences of calls, outcomes and instants.
//!
//! The model is the spec, sentence by sentence: `closed` opens after
//! `failure_threshold` consecutive failures (a success resets the count);
//! `open` lets nothing through until its wait has passed, then `half_open`;
//! in `half_open` a success closes and a failure opens again for twice the
//! previous wait, capped at `open_timeout_max`; closing resets the wait.
//! An outcome recorded while `open` (a call let through before it opened)
//! changes nothing.

use grace::breaker::{BreakerConfig, BreakerState, CircuitBreaker, Transition, TransitionReason};
use proptest::prelude::*;
use std::time::{Duration, Instant};

/// The breaker as the spec describes it, with nothing clever in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

#[derive(Debug)]
struct Model {
    config: BreakerConfig,
    state: ModelState,
    /// The wait the next re-open from `half_open` doubles; the base wait
    /// whenever the breaker is closed.
    wait: Duration,
    times_opened: u64,
}

impl Model {
    fn new(config: BreakerConfig) -> Self {
        Model {
            config,
            state: ModelState::Closed { failures: 0 },
            wait: config.open_timeout,
            times_opened: 0,
        }
    }

    fn public_state(&self) -> BreakerState {
        match self.state {
            ModelState::Closed { .. } => BreakerState::Closed,
            ModelState::Open { .. } => BreakerState::Open,
            ModelState::HalfOpen => BreakerState::HalfOpen,
        }
    }

    fn open_for(&mut self, wait: Duration, now: Instant) {
        self.state = ModelState::Open { until: now + wait };
        self.times_opened += 1;
    }

    /// Returns the reason when the state changed.
    fn poll(&mut self, now: Instant) -> Option<TransitionReason> {
        match self.state {
            ModelState::Open { until } if now >= until => {
                self.state = ModelState::HalfOpen;
                Some(TransitionReason::OpenTimeoutElapsed)
            }
            _ => None,
        }
    }

    fn allows_call(&mut self, now: Instant) -> bool {
        self.poll(now);
        !matches!(self.state, ModelState::Open { .. })
    }

    fn record_success(&mut self) -> Option<TransitionReason> {
        match self.state {
            ModelState::Closed { .. } => {
                self.state = ModelState::Closed { failures: 0 };
                None
            }
            ModelState::HalfOpen => {
                self.state = ModelState::Closed { failures: 0 };
                self.wait = self.config.open_timeout;
                Some(TransitionReason::ProbeSucceeded)
            }
            ModelState::Open { .. } => None,
        }
    }

    fn record_failure(&mut self, now: Instant) -> Option<TransitionReason> {
        match self.state {
            ModelState::Closed { failures } => {
                let failures = failures + 1;
                if failures >= self.config.failure_threshold {
                    self.open_for(self.config.open_timeout, now);
                    Some(TransitionReason::FailureThreshold(failures))
                } else {
                    self.state = ModelState::Closed { failures };
                    None
                }
            }
            ModelState::HalfOpen => {
                self.wait = (self.wait * 2).min(self.config.open_timeout_max);
                self.open_for(self.wait, now);
                Some(TransitionReason::ProbeFailed(self.wait))
            }
            ModelState::Open { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    AllowsCall,
    RecordSuccess,
    RecordFailure,
    Poll,
}

/// One step: move the clock, then act.
#[derive(Debug, Clone, Copy)]
enum Clock {
    /// Forward by this many milliseconds (often 0, so failures pile up at
    /// one instant).
    Forward(u64),
    /// To the open breaker's deadline plus this offset (-1, 0 or +1 ms), if
    /// that is not in the past: the boundary is where off-by-ones live.
    NearDeadline(i64),
}

fn arb_config() -> impl Strategy<Value = BreakerConfig> {
    (1u32..=10, 1u64..=1000, 0u64..=5000).prop_map(|(threshold, timeout, extra)| BreakerConfig {
        failure_threshold: threshold,
        open_timeout: Duration::from_millis(timeout),
        open_timeout_max: Duration::from_millis(timeout + extra),
    })
}

fn arb_step() -> impl Strategy<Value = (Clock, Action)> {
    let clock = prop_oneof![
        4 => Just(Clock::Forward(0)),
        3 => (1u64..50).prop_map(Clock::Forward),
        2 => (50u64..3000).prop_map(Clock::Forward),
        2 => (-1i64..=1).prop_map(Clock::NearDeadline),
    ];
    let action = prop_oneof![
        3 => Just(Action::AllowsCall),
        2 => Just(Action::RecordSuccess),
        4 => Just(Action::RecordFailure),
        2 => Just(Action::Poll),
    ];
    (clock, action)
}

/// The only edges the spec allows.
fn is_allowed_edge(from: BreakerState, to: BreakerState) -> bool {
    use BreakerState::*;
    matches!(
        (from, to),
        (Closed, Open) | (Open, HalfOpen) | (HalfOpen, Closed) | (HalfOpen, Open)
    )
}

fn check_transition(
    step: usize,
    before: BreakerState,
    after: BreakerState,
    got: Option<Transition>,
    expected_reason: Option<TransitionReason>,
) -> Result<(), TestCaseError> {
    match (got, expected_reason) {
        (None, None) => prop_assert_eq!(before, after, "step {}: silent state change", step),
        (Some(transition), Some(reason)) => {
            prop_assert_eq!(transition.from, before, "step {}", step);
            prop_assert_eq!(transition.to, after, "step {}", step);
            prop_assert_eq!(transition.reason, reason, "step {}", step);
        }
        (got, expected) => {
            prop_assert!(
                false,
                "step {}: transition {:?}, model expected {:?}",
                step,
                got,
                expected
            )
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn breaker_follows_the_model_step_by_step(
        config in arb_config(),
        steps in prop::collection::vec(arb_step(), 1..150),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut breaker = CircuitBreaker::new(config);
        let mut model = Model::new(config);

        for (step, &(clock, action)) in steps.iter().enumerate() {
            match clock {
                Clock::Forward(ms) => now += Duration::from_millis(ms),
                Clock::NearDeadline(offset) => {
                    if let ModelState::Open { until } = model.state {
                        let target = if offset < 0 {
                            until.checked_sub(Duration::from_millis(1)).unwrap_or(until)
                        } else {
                            until + Duration::from_millis(offset as u64)
                        };
                        now = now.max(target);
                    }
                }
            }

            let before = breaker.state();
            prop_assert_eq!(before, model.public_state(), "step {}: before", step);
            let open_deadline = breaker.reopens_at();

            match action {
                Action::AllowsCall => {
                    let allowed = breaker.allows_call(now);
                    prop_assert_eq!(allowed, model.allows_call(now), "step {}: allows_call", step);
                    if let Some(until) = open_deadline
                        && now < until
                    {
                        prop_assert!(!allowed, "step {}: call allowed while open before its deadline", step);
                    }
                }
                Action::Poll => {
                    let got = breaker.poll(now);
                    let expected = model.poll(now);
                    check_transition(step, before, breaker.state(), got, expected)?;
                }
                Action::RecordSuccess => {
                    let got = breaker.record_success();
                    let expected = model.record_success();
                    check_transition(step, before, breaker.state(), got, expected)?;
                }
                Action::RecordFailure => {
                    let got = breaker.record_failure(now);
                    let expected = model.record_failure(now);
                    check_transition(step, before, breaker.state(), got, expected)?;
                }
            }

            let after = breaker.state();
            prop_assert_eq!(after, model.public_state(), "step {}: after {:?}", step, action);
            if after != before {
                prop_assert!(
                    is_allowed_edge(before, after),
                    "step {}: forbidden transition {:?} -> {:?}", step, before, after
                );
            }
            let expected_failures = match model.state {
                ModelState::Closed { failures } => failures,
                _ => 0,
            };
            prop_assert_eq!(breaker.consecutive_failures(), expected_failures, "step {}", step);
            let expected_deadline = match model.state {
                ModelState::Open { until } => Some(until),
                _ => None,
            };
            prop_assert_eq!(breaker.reopens_at(), expected_deadline, "step {}: reopens_at", step);
            prop_assert_eq!(breaker.times_opened(), model.times_opened, "step {}: times_opened", step);
            prop_assert_eq!(breaker.current_open_timeout(), model.wait, "step {}: open timeout", step);
            prop_assert!(breaker.current_open_timeout() <= config.open_timeout_max);
            // Polling leaves no breaker open past its deadline (recording an
            // outcome does not poll, so there it may stay `open` late).
            if matches!(action, Action::AllowsCall | Action::Poll)
                && let Some(until) = breaker.reopens_at()
            {
                prop_assert!(until > now, "step {}: still open after its deadline", step);
            }
        }
    }
}

/// A long losing streak never waits longer than the cap, and one success
/// after it brings the base wait back.
#[test]
fn open_wait_doubles_per_failed_probe_and_resets_on_close() {
    let ms = Duration::from_millis;
    let config = BreakerConfig {
        failure_threshold: 2,
        open_timeout: ms(30),
        open_timeout_max: ms(100),
    };
    let t0 = Instant::now();
    let mut breaker = CircuitBreaker::new(config);
    breaker.record_failure(t0);
    breaker.record_failure(t0);
    let mut waits = vec![breaker.reopens_at().unwrap() - t0];
    for _ in 0..4 {
        let now = breaker.reopens_at().unwrap();
        assert!(breaker.allows_call(now));
        breaker.record_failure(now);
        waits.push(breaker.reopens_at().unwrap() - now);
    }
    assert_eq!(waits, vec![ms(30), ms(60), ms(100), ms(100), ms(100)]);
    let now = breaker.reopens_at().unwrap();
    assert!(breaker.allows_call(now));
    breaker.record_success();
    assert_eq!(breaker.state(), BreakerState::Closed);
    breaker.record_failure(now);
    breaker.record_failure(now);
    assert_eq!(breaker.reopens_at(), Some(now + ms(30)));
    assert_eq!(breaker.times_opened(), 6);
}
