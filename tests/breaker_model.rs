//! The circuit breaker checked against a model simple enough to be obviously
//! right, over random sequences of permits asked for, outcomes recorded
//! (in any order, some never), polls and instants.
//!
//! The model is the spec, sentence by sentence: `closed` gives a permit to
//! every call and opens after `failure_threshold` consecutive failures (a
//! success resets the count); `open` refuses every call until its wait has
//! passed, then `half_open`; `half_open` gives exactly
//! `permitted_calls_in_half_open` probe permits and refuses the rest; one
//! failed probe opens it again for twice the previous wait, capped at
//! `open_timeout_max`, and that many successful probes close it; closing
//! resets the wait. A permit belongs to the state it was given in: its
//! outcome, recorded after the breaker changed state (a call let through
//! before it opened, a probe of an earlier `half_open`), changes nothing.

use grace::core::breaker::{
    BreakerConfig, BreakerState, CallVerdict, CircuitBreaker, Permit, Refusal, Transition,
    TransitionReason,
};
use proptest::prelude::*;
use proptest::sample::Index;
use std::time::{Duration, Instant};

/// The breaker as the spec describes it, with nothing clever in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probes_out: u32, succeeded: u32 },
}

/// A permit as the model sees it: the state it was given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ModelPermit {
    /// How many transitions had happened when it was given.
    epoch: u64,
    probe: bool,
}

#[derive(Debug)]
struct Model {
    config: BreakerConfig,
    state: ModelState,
    /// Transitions so far: a permit of an earlier epoch is stale.
    epoch: u64,
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
            epoch: 0,
            wait: config.open_timeout,
            times_opened: 0,
        }
    }

    fn threshold(&self) -> u32 {
        self.config
            .failure_threshold
            .expect("the model has a threshold")
    }

    fn probes(&self) -> u32 {
        self.config.permitted_calls_in_half_open
    }

    fn public_state(&self) -> BreakerState {
        match self.state {
            ModelState::Closed { .. } => BreakerState::Closed,
            ModelState::Open { .. } => BreakerState::Open,
            ModelState::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn go(&mut self, state: ModelState, reason: TransitionReason) -> Option<TransitionReason> {
        self.state = state;
        self.epoch += 1;
        Some(reason)
    }

    fn open_for(
        &mut self,
        wait: Duration,
        now: Instant,
        reason: TransitionReason,
    ) -> Option<TransitionReason> {
        self.times_opened += 1;
        self.go(ModelState::Open { until: now + wait }, reason)
    }

    /// Returns the reason when the state changed.
    fn poll(&mut self, now: Instant) -> Option<TransitionReason> {
        match self.state {
            ModelState::Open { until } if now >= until => self.go(
                ModelState::HalfOpen {
                    probes_out: 0,
                    succeeded: 0,
                },
                TransitionReason::OpenTimeoutElapsed,
            ),
            _ => None,
        }
    }

    fn try_acquire(
        &mut self,
        now: Instant,
    ) -> (Result<ModelPermit, Refusal>, Option<TransitionReason>) {
        let transition = self.poll(now);
        let epoch = self.epoch;
        let permit = match &mut self.state {
            ModelState::Closed { .. } => Ok(ModelPermit {
                epoch,
                probe: false,
            }),
            ModelState::Open { until } => Err(Refusal::Open { until: *until }),
            ModelState::HalfOpen { probes_out, .. } => {
                if *probes_out < self.config.permitted_calls_in_half_open {
                    *probes_out += 1;
                    Ok(ModelPermit { epoch, probe: true })
                } else {
                    Err(Refusal::ProbesOut)
                }
            }
        };
        (permit, transition)
    }

    fn is_stale(&self, permit: ModelPermit) -> bool {
        permit.epoch != self.epoch
    }

    fn record(
        &mut self,
        permit: ModelPermit,
        failed: bool,
        now: Instant,
    ) -> Option<TransitionReason> {
        if self.is_stale(permit) {
            return None;
        }
        match self.state {
            ModelState::Closed { failures } if failed => {
                let failures = failures + 1;
                if failures >= self.threshold() {
                    self.open_for(
                        self.config.open_timeout,
                        now,
                        TransitionReason::FailureThreshold(failures),
                    )
                } else {
                    self.state = ModelState::Closed { failures };
                    None
                }
            }
            ModelState::Closed { .. } => {
                self.state = ModelState::Closed { failures: 0 };
                None
            }
            ModelState::HalfOpen { .. } if failed => {
                self.wait = (self.wait * 2).min(self.config.open_timeout_max);
                self.open_for(self.wait, now, TransitionReason::ProbeFailed(self.wait))
            }
            ModelState::HalfOpen {
                probes_out,
                succeeded,
            } => {
                let succeeded = succeeded + 1;
                if succeeded == self.probes() {
                    self.wait = self.config.open_timeout;
                    self.go(
                        ModelState::Closed { failures: 0 },
                        TransitionReason::ProbeSucceeded,
                    )
                } else {
                    self.state = ModelState::HalfOpen {
                        probes_out,
                        succeeded,
                    };
                    None
                }
            }
            ModelState::Open { .. } => unreachable!("no permit is given while open"),
        }
    }
}

/// What a test can see of a breaker without changing it.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    state: BreakerState,
    consecutive_failures: u32,
    reopens_at: Option<Instant>,
    next_deadline: Option<Instant>,
    current_open_timeout: Duration,
    times_opened: u64,
    probes_out: u32,
}

fn observe(breaker: &CircuitBreaker) -> Observed {
    Observed {
        state: breaker.state(),
        consecutive_failures: breaker.consecutive_failures(),
        reopens_at: breaker.reopens_at(),
        next_deadline: breaker.next_deadline(),
        current_open_timeout: breaker.current_open_timeout(),
        times_opened: breaker.times_opened(),
        probes_out: breaker.probes_out(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    /// Ask for a permit.
    Acquire,
    /// Record the outcome of one permit still held (picked by the index),
    /// as a success or a failure; `slow` counts for nothing without a
    /// slow-call rule.
    Record {
        pick: Index,
        failed: bool,
        slow: bool,
    },
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
    (1u32..=10, 1u64..=1000, 0u64..=5000, 1u32..=4).prop_map(
        |(threshold, timeout, extra, probes)| BreakerConfig {
            failure_threshold: Some(threshold),
            open_timeout: Duration::from_millis(timeout),
            open_timeout_max: Duration::from_millis(timeout + extra),
            permitted_calls_in_half_open: probes,
            ..BreakerConfig::default()
        },
    )
}

fn arb_step() -> impl Strategy<Value = (Clock, Action)> {
    let clock = prop_oneof![
        4 => Just(Clock::Forward(0)),
        3 => (1u64..50).prop_map(Clock::Forward),
        2 => (50u64..3000).prop_map(Clock::Forward),
        2 => (-1i64..=1).prop_map(Clock::NearDeadline),
    ];
    let action = prop_oneof![
        4 => Just(Action::Acquire),
        2 => (any::<Index>(), any::<bool>()).prop_map(|(pick, slow)| Action::Record {
            pick,
            failed: false,
            slow,
        }),
        4 => (any::<Index>(), any::<bool>()).prop_map(|(pick, slow)| Action::Record {
            pick,
            failed: true,
            slow,
        }),
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
        // Permits given and not yet recorded, with the model's view of each.
        let mut held: Vec<(Permit, ModelPermit)> = Vec::new();
        // Probe permits given since the breaker last half-opened.
        let mut probes_given = 0u32;

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
                Action::Acquire => {
                    let (got, transition) = breaker.try_acquire(now);
                    let (expected, expected_transition) = model.try_acquire(now);
                    let half_opened = transition.is_some();
                    check_transition(step, before, breaker.state(), transition, expected_transition)?;
                    if half_opened {
                        probes_given = 0;
                    }
                    match (got, expected) {
                        (Ok(permit), Ok(model_permit)) => {
                            prop_assert_eq!(permit.is_probe(), model_permit.probe, "step {}", step);
                            if permit.is_probe() {
                                probes_given += 1;
                            }
                            held.push((permit, model_permit));
                        }
                        (Err(refusal), Err(expected)) => {
                            prop_assert_eq!(refusal, expected, "step {}: refusal", step)
                        }
                        (got, expected) => prop_assert!(
                            false,
                            "step {}: got {:?}, model expected {:?}", step, got, expected
                        ),
                    }
                    if let Some(until) = open_deadline
                        && now < until
                    {
                        prop_assert!(got.is_err(), "step {}: permit given while open before its deadline", step);
                    }
                    prop_assert!(
                        probes_given <= config.permitted_calls_in_half_open,
                        "step {}: {} probes given, {} permitted", step, probes_given,
                        config.permitted_calls_in_half_open
                    );
                }
                Action::Poll => {
                    let got = breaker.poll(now);
                    let expected = model.poll(now);
                    if got.is_some() {
                        probes_given = 0;
                    }
                    check_transition(step, before, breaker.state(), got, expected)?;
                }
                Action::Record { pick, failed, slow } => {
                    if held.is_empty() {
                        continue;
                    }
                    let (permit, model_permit) = held.remove(pick.index(held.len()));
                    let stale = model.is_stale(model_permit);
                    let observed = observe(&breaker);
                    let got = breaker.record(permit, CallVerdict { failed, slow }, now);
                    let expected = model.record(model_permit, failed, now);
                    check_transition(step, before, breaker.state(), got, expected)?;
                    if stale {
                        prop_assert_eq!(
                            observe(&breaker), observed,
                            "step {}: a stale permit changed the breaker", step
                        );
                    }
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
            let (expected_failures, expected_probes_out) = match model.state {
                ModelState::Closed { failures } => (failures, 0),
                ModelState::HalfOpen { probes_out, .. } => (0, probes_out),
                ModelState::Open { .. } => (0, 0),
            };
            prop_assert_eq!(breaker.consecutive_failures(), expected_failures, "step {}", step);
            prop_assert_eq!(breaker.probes_out(), expected_probes_out, "step {}: probes out", step);
            let expected_deadline = match model.state {
                ModelState::Open { until } => Some(until),
                _ => None,
            };
            prop_assert_eq!(breaker.reopens_at(), expected_deadline, "step {}: reopens_at", step);
            prop_assert_eq!(breaker.next_deadline(), expected_deadline, "step {}: next_deadline", step);
            prop_assert_eq!(breaker.times_opened(), model.times_opened, "step {}: times_opened", step);
            prop_assert_eq!(breaker.current_open_timeout(), model.wait, "step {}: open timeout", step);
            prop_assert!(breaker.current_open_timeout() <= config.open_timeout_max);
            // Polling leaves no breaker open past its deadline (recording an
            // outcome does not poll, so there it may stay `open` late).
            if matches!(action, Action::Acquire | Action::Poll)
                && let Some(until) = breaker.reopens_at()
            {
                prop_assert!(until > now, "step {}: still open after its deadline", step);
            }
        }
    }
}

const MS: Duration = Duration::from_millis(1);

/// A breaker that opens at the first failure, with `probes` probes.
fn opening_at_once(probes: u32) -> CircuitBreaker {
    CircuitBreaker::new(BreakerConfig {
        failure_threshold: Some(1),
        open_timeout: 30 * MS,
        open_timeout_max: 100 * MS,
        permitted_calls_in_half_open: probes,
        ..BreakerConfig::default()
    })
}

/// Makes one call at `now` that records `verdict`; panics if refused.
fn call(breaker: &mut CircuitBreaker, verdict: CallVerdict, now: Instant) -> Option<Transition> {
    let permit = breaker.try_acquire(now).0.expect("a permit");
    breaker.record(permit, verdict, now)
}

/// A long losing streak never waits longer than the cap, and one success
/// after it brings the base wait back.
#[test]
fn open_wait_doubles_per_failed_probe_and_resets_on_close() {
    let t0 = Instant::now();
    let mut breaker = CircuitBreaker::new(BreakerConfig {
        failure_threshold: Some(2),
        open_timeout: 30 * MS,
        open_timeout_max: 100 * MS,
        ..BreakerConfig::default()
    });
    call(&mut breaker, CallVerdict::FAILURE, t0);
    call(&mut breaker, CallVerdict::FAILURE, t0);
    let mut waits = vec![breaker.reopens_at().unwrap() - t0];
    for _ in 0..4 {
        let now = breaker.reopens_at().unwrap();
        call(&mut breaker, CallVerdict::FAILURE, now);
        waits.push(breaker.reopens_at().unwrap() - now);
    }
    assert_eq!(waits, vec![30 * MS, 60 * MS, 100 * MS, 100 * MS, 100 * MS]);
    let now = breaker.reopens_at().unwrap();
    call(&mut breaker, CallVerdict::SUCCESS, now);
    assert_eq!(breaker.state(), BreakerState::Closed);
    call(&mut breaker, CallVerdict::FAILURE, now);
    call(&mut breaker, CallVerdict::FAILURE, now);
    assert_eq!(breaker.reopens_at(), Some(now + 30 * MS));
    assert_eq!(breaker.times_opened(), 6);
}

/// A probe of an earlier `half_open` that answers during a later one is not
/// one of the later one's probes: it neither closes it nor takes a place.
#[test]
fn probe_of_an_earlier_half_open_does_not_count_in_the_next_one() {
    let t0 = Instant::now();
    let mut breaker = opening_at_once(2);
    call(&mut breaker, CallVerdict::FAILURE, t0);
    let first_half_open = t0 + 30 * MS;
    let slow_probe = breaker.try_acquire(first_half_open).0.unwrap();
    // The other probe fails: open again, for 60 ms.
    call(&mut breaker, CallVerdict::FAILURE, first_half_open);
    let second_half_open = first_half_open + 60 * MS;
    let probe = breaker.try_acquire(second_half_open).0.unwrap();
    assert_eq!(breaker.probes_out(), 1);

    assert_eq!(
        breaker.record(slow_probe, CallVerdict::SUCCESS, second_half_open),
        None
    );
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(breaker.probes_out(), 1, "the stale probe took no place");
    // Closing still takes two successes of this half-open's own probes.
    assert_eq!(
        breaker.record(probe, CallVerdict::SUCCESS, second_half_open),
        None
    );
    let last = breaker.try_acquire(second_half_open).0.unwrap();
    assert_eq!(
        breaker.try_acquire(second_half_open).0,
        Err(Refusal::ProbesOut)
    );
    let closed = breaker
        .record(last, CallVerdict::SUCCESS, second_half_open)
        .unwrap();
    assert_eq!(closed.reason, TransitionReason::ProbeSucceeded);
}

/// A failure let through while closed and recorded once the breaker is
/// half-open neither re-opens it nor counts against the next closed period.
#[test]
fn failure_given_while_closed_and_recorded_after_it_opened_changes_nothing() {
    let t0 = Instant::now();
    let mut breaker = opening_at_once(1);
    let early = breaker.try_acquire(t0).0.unwrap();
    call(&mut breaker, CallVerdict::FAILURE, t0);
    let probe = breaker.try_acquire(t0 + 30 * MS).0.unwrap();
    assert_eq!(
        breaker.record(early, CallVerdict::FAILURE, t0 + 30 * MS),
        None
    );
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    breaker.record(probe, CallVerdict::SUCCESS, t0 + 30 * MS);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.consecutive_failures(), 0);
    assert_eq!(breaker.current_open_timeout(), 30 * MS);
}
