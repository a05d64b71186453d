//! The simulation as tests: many seeds must hold every invariant, and every
//! invariant must catch the bug planted against it.

use super::{Failure, Invariant, run_seed};
use crate::planted_bug::{PlantedBug, plant};

/// Seeds run by `cargo test`; `GRACE_SIM_SEEDS` asks for more (or fewer).
const DEFAULT_SEEDS: u64 = 2_000;
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

#[test]
fn random_worlds_hold_every_invariant() {
    let first = first_seed();
    for seed in first..first + seed_count() {
        if let Err(failure) = run_seed(seed) {
            panic!("{failure}");
        }
    }
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
        Ok(()) => println!("seed {seed} holds every invariant"),
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
    assert_eq!(failure.violation.invariant, invariant, "{failure}");
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
