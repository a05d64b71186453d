//! The simulation as tests: many seeds must hold every invariant, and every
//! invariant must catch the bug planted against it.

use super::{Broken, Failure, Invariant, RunReport, run_seed};
use crate::planted_bug::{PlantedBug, plant};
use std::collections::BTreeMap;
use std::time::Instant;

/// Seeds run by `cargo test`; `GRACE_SIM_SEEDS` asks for more (or fewer).
const DEFAULT_SEEDS: u64 = 300;
/// Seeds a planted bug gets to show itself in.
const SEEDS_TO_CATCH_A_PLANTED_BUG: u64 = 300;

fn seed_count() -> u64 {
    std::env::var("GRACE_SIM_SEEDS")
        .ok()
        .and_then(|seeds| seeds.parse().ok())
        .unwrap_or(DEFAULT_SEEDS)
}

/// `GRACE_SIM_FIRST_SEED` starts the range elsewhere, for long local runs.
fn first_seed() -> u64 {
    std::env::var("GRACE_SIM_FIRST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0)
}

/// With `GRACE_SIM_KEEP_GOING` set, a long run goes on past failing seeds
/// and ends with every invariant broken, how often, and the first seeds.
fn keep_going() -> bool {
    std::env::var_os("GRACE_SIM_KEEP_GOING").is_some()
}

#[test]
fn random_worlds_hold_every_invariant() {
    let first = first_seed();
    let count = seed_count();
    let started = Instant::now();
    let mut total = RunReport::default();
    let mut broken: BTreeMap<String, (u64, Vec<u64>)> = BTreeMap::new();
    for seed in first..first + count {
        match run_seed(seed) {
            Ok(report) => total.add(&report),
            Err(failure) if keep_going() => {
                let what = match &failure.broken {
                    Broken::Invariant(violation) => format!("{:?}", violation.invariant),
                    Broken::Panic(message) => format!("panic: {message}"),
                };
                let (times, seeds) = broken.entry(what).or_default();
                if seeds.is_empty() {
                    println!("{failure}");
                }
                *times += 1;
                if seeds.len() < 5 {
                    seeds.push(seed);
                }
            }
            Err(failure) => panic!("{failure}"),
        }
    }
    println!(
        "seeds {first}..{}: {total}, in {:.1} s",
        first + count,
        started.elapsed().as_secs_f64()
    );
    for (invariant, (times, seeds)) in &broken {
        println!("{invariant} broken in {times} seeds, first {seeds:?}");
    }
    assert!(broken.is_empty(), "invariants broken: {broken:?}");
}

/// Replays one seed: `GRACE_SIM_SEED=N cargo test --lib simulation::tests::replay_seed -- --ignored --nocapture`.
#[test]
#[ignore = "replays the seed in GRACE_SIM_SEED"]
fn replay_seed() {
    let seed: u64 = std::env::var("GRACE_SIM_SEED")
        .expect("set GRACE_SIM_SEED to the seed to replay")
        .parse()
        .expect("GRACE_SIM_SEED is a number");
    match run_seed(seed) {
        Ok(report) => println!("seed {seed} holds every invariant: {report}"),
        Err(failure) => panic!("{failure}"),
    }
}

/// The first failure among the seeds with `bug` planted.
fn first_failure_with(bug: PlantedBug) -> Failure {
    let _planted = plant(bug);
    (0..SEEDS_TO_CATCH_A_PLANTED_BUG)
        .find_map(|seed| run_seed(seed).err())
        .unwrap_or_else(|| panic!("{bug:?} went unnoticed in {SEEDS_TO_CATCH_A_PLANTED_BUG} seeds"))
}

fn assert_caught(bug: PlantedBug, invariant: Invariant) {
    let failure = first_failure_with(bug);
    let caught = match &failure.broken {
        Broken::Invariant(violation) => Some(violation.invariant),
        Broken::Panic(_) => None,
    };
    assert_eq!(caught, Some(invariant), "{failure}");
    println!("{bug:?} caught: {failure}");
}

#[test]
fn dropped_reply_is_caught() {
    assert_caught(PlantedBug::DropReply, Invariant::OneReplyPerRequest);
}

#[test]
fn breaker_closing_without_a_probe_is_caught() {
    assert_caught(
        PlantedBug::CloseWithoutProbe,
        Invariant::AllowedBreakerTransitions,
    );
}

#[test]
fn call_through_an_open_breaker_is_caught() {
    assert_caught(
        PlantedBug::CallThroughOpenBreaker,
        Invariant::NoCallThroughOpenBreaker,
    );
}

#[test]
fn cache_served_while_the_service_is_up_is_caught() {
    assert_caught(
        PlantedBug::CacheWhileServiceUp,
        Invariant::CacheOnlyWhenServiceCannotAnswer,
    );
}

#[test]
fn queued_order_lost_in_a_restart_is_caught() {
    assert_caught(
        PlantedBug::SkipJournalOnQueue,
        Invariant::OrdersNeverLostOrDoubled,
    );
}

#[test]
fn second_order_for_one_idempotency_key_is_caught() {
    assert_caught(
        PlantedBug::IgnoreIdempotencyKey,
        Invariant::OrdersNeverLostOrDoubled,
    );
}

#[test]
fn kill_switch_ignored_in_degraded_mode_is_caught() {
    assert_caught(
        PlantedBug::KillSwitchIgnoredWhenDegraded,
        Invariant::DisabledFeaturesMatchModeAndSwitches,
    );
}

#[test]
fn extra_half_open_probe_is_caught() {
    assert_caught(
        PlantedBug::ExtraHalfOpenProbe,
        Invariant::ProbesWithinPermits,
    );
}

#[test]
fn reply_before_the_call_ended_is_caught() {
    assert_caught(
        PlantedBug::ReplyBeforeCallEnds,
        Invariant::NoReplyBeforeCallEnded,
    );
}

#[test]
fn identical_reads_each_making_a_call_is_caught() {
    assert_caught(
        PlantedBug::NoCoalescing,
        Invariant::OneCallPerCoalescedGroup,
    );
}

#[test]
fn second_delivery_of_an_order_in_flight_is_caught() {
    assert_caught(
        PlantedBug::SecondDeliveryInFlight,
        Invariant::OneDeliveryInFlightPerOrder,
    );
}

#[test]
fn late_answer_taken_for_a_newer_call_is_caught() {
    assert_caught(
        PlantedBug::LateAnswerTakenAsCurrent,
        Invariant::LateAnswerChangesNothing,
    );
}

#[test]
fn timer_due_again_at_once_is_caught() {
    assert_caught(
        PlantedBug::HalfOpenWakesAtOnce,
        Invariant::TimersMakeProgress,
    );
}
