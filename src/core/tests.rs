//! The core driven by hand: requests, completions and instants go in, calls
//! and outcomes come out. No runtime, no sleep.

use super::breaker::{BreakerConfig, BreakerState, TransitionReason};
use super::*;

const MS: Duration = Duration::from_millis(1);

/// A core in front of one service `user` (timeout 100 ms, threshold 2,
/// open 1 s) with waiters numbered by the test.
struct World {
    core: Core<u32, &'static str>,
    user: ServiceId,
    t0: Instant,
}

impl World {
    fn new() -> Self {
        Self::with_breaker(BreakerConfig {
            failure_threshold: Some(2),
            open_timeout: 1000 * MS,
            ..BreakerConfig::default()
        })
    }

    fn with_breaker(breaker: BreakerConfig) -> Self {
        let mut services = Services::default();
        let user = services.add(ServiceSpec {
            timeout: 100 * MS,
            breaker,
            ..ServiceSpec::named("user")
        });
        let core = Core::new(CoreConfig {
            cache_capacity: 100,
            ..CoreConfig::new(services)
        });
        World {
            core,
            user,
            t0: Instant::now(),
        }
    }

    fn at(&self, millis: u64) -> Instant {
        self.t0 + Duration::from_millis(millis)
    }

    fn read(&mut self, waiter: u32, key: &str, now: Instant) {
        self.core.read(
            waiter,
            self.user,
            key.as_bytes(),
            || "read",
            Sharing::Coalesce,
            now,
        );
    }

    fn calls(&mut self) -> Vec<Call<&'static str>> {
        std::iter::from_fn(|| self.core.poll_call()).collect()
    }

    fn outcomes(&mut self) -> Vec<(u32, Outcome)> {
        std::iter::from_fn(|| self.core.poll_outcome()).collect()
    }

    fn answer(&mut self, call: &Call<&'static str>, status: u16, body: &'static str, now: Instant) {
        let response = Response::new(status, body, Storage::Keep { max_stale: None });
        self.core
            .complete(call.id, CallResult::Answered(Arc::new(response)), now);
    }

    fn fail(&mut self, call: &Call<&'static str>, now: Instant) {
        self.core
            .complete(call.id, CallResult::Failed(CallFailure::Refused), now);
    }

    /// Reads `key` once and answers it with `body` (a fresh copy to fall back on).
    fn fetch(&mut self, waiter: u32, key: &str, body: &'static str, now: Instant) {
        self.read(waiter, key, now);
        let call = self.calls().pop().expect("a call");
        self.answer(&call, 200, body, now);
        self.outcomes();
    }

    /// Fails reads of `key` until the breaker opens.
    fn open_breaker(&mut self, now: Instant) {
        while self.core.breaker_state(self.user) == BreakerState::Closed {
            self.read(99, "trip", now);
            let call = self.calls().pop().expect("a call while closed");
            self.fail(&call, now);
        }
        self.outcomes();
    }
}

fn fresh_body(outcome: &Outcome) -> &[u8] {
    match outcome {
        Outcome::Read(ReadOutcome::Fresh(response)) => &response.body,
        other => panic!("expected a fresh read, got {other:?}"),
    }
}

fn stale_body(outcome: &Outcome) -> &[u8] {
    match outcome {
        Outcome::Read(ReadOutcome::Stale { copy, .. }) => &copy.response.body,
        other => panic!("expected a stale read, got {other:?}"),
    }
}

#[test]
fn read_emits_one_call_and_answers_fresh_when_the_service_answers() {
    let mut world = World::new();
    let t0 = world.at(0);
    world.read(1, "123", t0);
    assert!(
        world.outcomes().is_empty(),
        "no answer before the call completes"
    );
    let calls = world.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].deadline, t0 + 100 * MS);
    assert!(matches!(calls[0].request, CallRequest::Send("read")));
    world.answer(&calls[0], 200, "alice", t0 + 5 * MS);
    let outcomes = world.outcomes();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].0, 1);
    assert_eq!(fresh_body(&outcomes[0].1), b"alice");
}

#[test]
fn concurrent_reads_of_one_key_share_one_call_and_each_gets_its_answer() {
    let mut world = World::new();
    let t0 = world.at(0);
    for waiter in 1..=5 {
        world.read(waiter, "123", t0);
    }
    world.read(6, "456", t0);
    let calls = world.calls();
    assert_eq!(calls.len(), 2, "one call per key");
    world.answer(&calls[0], 200, "shared", t0 + 10 * MS);
    let outcomes = world.outcomes();
    let waiters: Vec<u32> = outcomes.iter().map(|(waiter, _)| *waiter).collect();
    assert_eq!(waiters, [1, 2, 3, 4, 5]);
    assert!(
        outcomes
            .iter()
            .all(|(_, outcome)| fresh_body(outcome) == b"shared")
    );
    assert_eq!(world.core.stats(world.user).coalesced, 4);
    assert_eq!(world.core.stats(world.user).calls, 2);
}

#[test]
fn a_read_alone_does_not_join_nor_get_joined() {
    let mut world = World::new();
    let t0 = world.at(0);
    world
        .core
        .read(1, world.user, b"123", || "faulty", Sharing::Alone, t0);
    world.read(2, "123", t0);
    world.read(3, "123", t0);
    assert_eq!(world.calls().len(), 2, "the faulty read has its own call");
}

#[test]
fn a_coalesced_group_that_fails_falls_back_to_the_cache_for_every_waiter() {
    let mut world = World::new();
    let t0 = world.at(0);
    world.fetch(1, "123", "old", t0);
    world.read(2, "123", t0 + MS);
    world.read(3, "123", t0 + MS);
    let calls = world.calls();
    world.fail(&calls[0], t0 + 2 * MS);
    let outcomes = world.outcomes();
    assert_eq!(outcomes.len(), 2);
    for (_, outcome) in &outcomes {
        assert_eq!(stale_body(outcome), b"old");
    }
    assert_eq!(world.core.cache().fallbacks_served(), 2);
}

#[test]
fn a_call_past_its_deadline_fails_as_timed_out_and_its_late_answer_changes_nothing() {
    let mut world = World::new();
    let t0 = world.at(0);
    world.fetch(1, "123", "old", t0);
    world.read(2, "123", t0);
    let call = world.calls().pop().unwrap();
    assert_eq!(world.core.poll_timeout(), Some(t0 + 100 * MS));
    world.core.handle_timeout(t0 + 99 * MS);
    assert!(world.outcomes().is_empty());
    world.core.handle_timeout(t0 + 100 * MS);
    let outcomes = world.outcomes();
    let Outcome::Read(ReadOutcome::Stale { cause, .. }) = &outcomes[0].1 else {
        panic!("{outcomes:?}")
    };
    assert_eq!(*cause, Cause::Failed(CallFailure::TimedOut));
    assert_eq!(world.core.stats(world.user).timeouts, 1);
    // The answer arrives late: ignored and counted; the cache keeps "old".
    world.answer(&call, 200, "late", t0 + 150 * MS);
    assert!(world.outcomes().is_empty());
    assert_eq!(world.core.late_answers(), 1);
    world.open_breaker(t0 + 200 * MS);
    world.read(3, "123", t0 + 200 * MS);
    assert_eq!(stale_body(&world.outcomes()[0].1), b"old");
}

#[test]
fn open_breaker_answers_from_the_cache_without_calling() {
    let mut world = World::new();
    let t0 = world.at(0);
    world.fetch(1, "123", "copy", t0);
    world.open_breaker(t0);
    let calls_before = world.core.stats(world.user).calls;
    world.read(2, "123", t0 + 10 * MS);
    world.read(3, "999", t0 + 10 * MS);
    assert!(world.calls().is_empty());
    assert_eq!(world.core.stats(world.user).calls, calls_before);
    let outcomes = world.outcomes();
    assert_eq!(stale_body(&outcomes[0].1), b"copy");
    let Outcome::Read(ReadOutcome::Unavailable { retry_after, cause }) = &outcomes[1].1 else {
        panic!("{outcomes:?}")
    };
    assert_eq!(*retry_after, Some(990 * MS));
    assert!(matches!(cause, Cause::BreakerOpen { .. }));
}

#[test]
fn half_open_lets_exactly_the_permitted_probes_through_and_answers_the_rest_from_the_cache() {
    let mut world = World::with_breaker(BreakerConfig {
        failure_threshold: Some(1),
        open_timeout: 1000 * MS,
        permitted_calls_in_half_open: 2,
        ..BreakerConfig::default()
    });
    let t0 = world.at(0);
    for key in ["a", "b", "c", "d"] {
        world.fetch(1, key, "copy", t0);
    }
    world.open_breaker(t0);
    let later = t0 + 1000 * MS;
    for (waiter, key) in (10..).zip(["a", "b", "c", "d"]) {
        world.read(waiter, key, later);
    }
    let probes = world.calls();
    assert_eq!(probes.len(), 2, "exactly the permitted probes");
    let answered: Vec<u32> = world.outcomes().iter().map(|(waiter, _)| *waiter).collect();
    assert_eq!(answered, [12, 13], "the others are answered at once");
    world.answer(&probes[0], 200, "new a", later);
    assert_eq!(world.core.breaker_state(world.user), BreakerState::HalfOpen);
    world.answer(&probes[1], 200, "new b", later);
    assert_eq!(world.core.breaker_state(world.user), BreakerState::Closed);
}

#[test]
fn a_probe_that_never_answers_fails_at_its_deadline_and_reopens_the_breaker() {
    let mut world = World::with_breaker(BreakerConfig {
        failure_threshold: Some(1),
        open_timeout: 1000 * MS,
        ..BreakerConfig::default()
    });
    let t0 = world.at(0);
    world.open_breaker(t0);
    world.core.record_transitions(true);
    let probe_at = t0 + 1000 * MS;
    world.read(1, "123", probe_at);
    assert_eq!(world.calls().len(), 1);
    assert_eq!(world.core.poll_timeout(), Some(probe_at + 100 * MS));
    world.core.handle_timeout(probe_at + 100 * MS);
    assert_eq!(world.core.breaker_state(world.user), BreakerState::Open);
    let reasons: Vec<TransitionReason> = world
        .core
        .take_transitions()
        .iter()
        .map(|record| record.transition.reason)
        .collect();
    assert_eq!(
        reasons,
        [
            TransitionReason::OpenTimeoutElapsed,
            TransitionReason::ProbeFailed(2000 * MS)
        ]
    );
}

#[test]
fn failure_statuses_fall_back_and_other_statuses_are_answers() {
    let mut world = World::new();
    let t0 = world.at(0);
    world.fetch(1, "123", "copy", t0);
    world.read(2, "123", t0);
    let call = world.calls().pop().unwrap();
    world.answer(&call, 503, "busy", t0);
    let outcomes = world.outcomes();
    let Outcome::Read(ReadOutcome::Stale { cause, .. }) = &outcomes[0].1 else {
        panic!("{outcomes:?}")
    };
    assert_eq!(*cause, Cause::FailureStatus(503));
    world.read(3, "123", t0);
    let call = world.calls().pop().unwrap();
    world.answer(&call, 404, "no such user", t0);
    assert_eq!(fresh_body(&world.outcomes()[0].1), b"no such user");
    assert_eq!(world.core.breaker(world.user).consecutive_failures(), 0);
}

#[test]
fn answers_marked_do_not_store_are_never_served_as_fallback() {
    let mut world = World::new();
    let t0 = world.at(0);
    world.read(1, "private", t0);
    let call = world.calls().pop().unwrap();
    let response = Response::new(200, "secret", Storage::DoNotStore);
    world
        .core
        .complete(call.id, CallResult::Answered(Arc::new(response)), t0);
    world.outcomes();
    world.open_breaker(t0);
    world.read(2, "private", t0);
    assert!(matches!(
        world.outcomes()[0].1,
        Outcome::Read(ReadOutcome::Unavailable { .. })
    ));
}

#[test]
fn stale_if_error_caps_how_old_a_copy_may_be_served() {
    let mut world = World::with_breaker(BreakerConfig {
        failure_threshold: Some(1),
        open_timeout: Duration::from_secs(60),
        ..BreakerConfig::default()
    });
    let t0 = world.at(0);
    world.read(1, "123", t0);
    let call = world.calls().pop().unwrap();
    let storage = Storage::Keep {
        max_stale: Some(Duration::from_secs(10)),
    };
    let response = Response::new(200, "short-lived", storage);
    world
        .core
        .complete(call.id, CallResult::Answered(Arc::new(response)), t0);
    world.outcomes();
    world.open_breaker(t0);
    world.read(2, "123", t0 + Duration::from_secs(10));
    assert_eq!(stale_body(&world.outcomes()[0].1), b"short-lived");
    world.read(3, "123", t0 + Duration::from_secs(11));
    assert!(matches!(
        world.outcomes()[0].1,
        Outcome::Read(ReadOutcome::Unavailable { .. })
    ));
}

#[test]
fn slow_answers_open_a_breaker_with_a_slow_call_rule_though_all_succeeded() {
    let mut world = World::with_breaker(BreakerConfig {
        failure_threshold: None,
        slow_call_rate_threshold: Some(100.0),
        slow_call_duration: 50 * MS,
        minimum_calls: 3,
        sliding_window_size: 3,
        ..BreakerConfig::default()
    });
    let t0 = world.at(0);
    for (waiter, key) in (1..).zip(["a", "b", "c"]) {
        world.read(waiter, key, t0);
        let call = world.calls().pop().unwrap();
        world.answer(&call, 200, "slow but fine", t0 + 60 * MS);
    }
    assert_eq!(world.core.breaker_state(world.user), BreakerState::Open);
    assert_eq!(world.outcomes().len(), 3, "every read still got its answer");
}

#[test]
fn plain_sends_are_refused_by_an_open_breaker_and_carry_the_answer_otherwise() {
    let mut world = World::new();
    let t0 = world.at(0);
    world.core.send(1, world.user, "send", t0);
    let call = world.calls().pop().unwrap();
    world.answer(&call, 503, "down", t0);
    let outcomes = world.outcomes();
    assert!(matches!(
        &outcomes[0].1,
        Outcome::Sent(SendOutcome::Answered { failed: true, .. })
    ));
    world.open_breaker(t0);
    world.core.send(2, world.user, "send", t0);
    assert!(world.calls().is_empty());
    assert!(matches!(
        world.outcomes()[0].1,
        Outcome::Sent(SendOutcome::Refused { .. })
    ));
}

#[test]
fn answered_calls_leave_no_deadline_behind() {
    let mut world = World::new();
    let t0 = world.at(0);
    for waiter in 0..100 {
        world.fetch(waiter, "k", "v", t0);
    }
    assert_eq!(world.core.poll_timeout(), None);
    assert_eq!(world.core.calls_in_flight(), 0);
}

impl World {
    /// A write of `key` for `waiter`, to be sent directly as `direct`.
    fn write(&mut self, waiter: u32, key: &str, direct: &'static str, now: Instant) {
        let write = NewWrite {
            idempotency_key: key.to_string(),
            fingerprint: None,
            public_id: None,
            stored: serde_json::value::RawValue::from_string(format!(r#"{{"key":"{key}"}}"#))
                .expect("json")
                .into(),
            direct,
        };
        self.core
            .write(waiter, self.user, write, RepeatPolicy::AwaitFirst, now);
    }
}

fn queued_position(outcome: &Outcome) -> usize {
    match outcome {
        Outcome::Write(WriteOutcome::Queued { position, .. }) => *position,
        other => panic!("expected a queued write, got {other:?}"),
    }
}

#[test]
fn a_direct_write_that_fails_is_queued_ahead_of_the_writes_that_arrived_after_it() {
    let mut world = World::new();
    world.write(1, "x", "send x", world.at(0));
    let x = world.calls().pop().expect("x is sent directly");
    world.write(2, "a", "send a", world.at(10));
    world.write(3, "b", "send b", world.at(20));
    assert!(world.calls().is_empty(), "a and b wait behind x");

    world.answer(&x, 201, "x", world.at(90));
    let a = world.calls().pop().expect("a's turn: sent directly");
    assert!(matches!(a.request, CallRequest::Send("send a")));
    // b waited its service's timeout behind a's call: it is queued first.
    world.core.handle_timeout(world.at(120));
    let outcomes = world.outcomes();
    assert_eq!(outcomes[1].0, 3);
    assert_eq!(queued_position(&outcomes[1].1), 1);

    world.fail(&a, world.at(150));
    let outcomes = world.outcomes();
    assert_eq!(outcomes[0].0, 2);
    assert_eq!(queued_position(&outcomes[0].1), 1, "a arrived before b");
    // x took request id 1, a took 2 when it was sent, b 3 when queued.
    let queue = world.core.queue();
    assert_eq!((queue.position(2), queue.position(3)), (Some(1), Some(2)));

    let due = world.core.poll_timeout().expect("a delivery is due");
    world.core.handle_timeout(due);
    let delivery = world.calls().pop().expect("the head is delivered");
    match delivery.request {
        CallRequest::Deliver(delivery) => assert_eq!(&*delivery.idempotency_key, "a"),
        other => panic!("expected a delivery, got {other:?}"),
    }
}

#[test]
fn a_queued_write_waits_for_the_half_open_probe_without_spinning() {
    let mut world = World::new();
    world.open_breaker(world.at(0));
    world.write(1, "a", "send a", world.at(0));
    assert_eq!(queued_position(&world.outcomes()[0].1), 1);

    // The breaker half-opens and a read takes its only probe.
    world.read(2, "k", world.at(1000));
    let probe = world.calls().pop().expect("the probe");
    assert!(world.calls().is_empty(), "the write waits for the probe");
    let now = world.at(1001);
    world.core.handle_timeout(now);
    assert!(world.calls().is_empty());
    let next = world.core.poll_timeout().expect("the probe's deadline");
    assert!(next > now, "due again at once: a runtime would spin");

    world.answer(&probe, 200, "k", world.at(1010));
    let due = world.core.poll_timeout().expect("the write is due");
    world.core.handle_timeout(due.max(world.at(1010)));
    let delivery = world
        .calls()
        .pop()
        .expect("delivered once the probe closed it");
    assert!(matches!(delivery.request, CallRequest::Deliver(_)));
}
