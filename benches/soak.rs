//! Soak bench: does grace's memory or cost per message grow with traffic?
//!
//! Writes two deterministic mixed request streams with distinct ids (every
//! message names a new id), 1M and 10M messages by default, to a temporary
//! directory. With the same seed the small stream is the first part of the
//! large one, so the large run is the small run continued. A first,
//! unmeasured run reads grace's replies to the small stream back and checks
//! there is exactly one per request. Then grace runs on each stream several
//! times, alternating which goes first, with stdout to `/dev/null`, each run
//! with a fresh `--data-dir`. Prints, per stream, the median messages per
//! second, the median wall time and the peak RSS (the largest over the
//! rounds), then the two ratios large/small and whether each holds:
//! - peak RSS on the large stream at most 10 % above that on the small one
//!   (memory does not grow with traffic);
//! - throughput on the large stream at most 10 % below that on the small one
//!   (cost per message does not grow).
//!
//! It prints figures and verdicts; it does not fail on a missed target.
//!
//! Settings (environment variables):
//! - `GRACE_SOAK_SMALL`: requests in the small stream (default 1 000 000).
//! - `GRACE_SOAK_LARGE`: requests in the large stream (default 10 000 000).
//! - `GRACE_BENCH_ROUNDS`: measured runs on each stream (default 3).
//! - `GRACE_BENCH_ARGS`: extra arguments for grace, split on whitespace; run
//!   once as is and once with `--failure-threshold 1000000000` (breakers stay
//!   closed, every read is a real call whose copy goes into the fallback
//!   cache).
//! - `GRACE_BENCH_SEED`: the generator's seed.
//!
//! The streams are large (about 100 bytes a message: 1 GB for 10M) and are
//! deleted at the end. Peak RSS comes from GNU time (`/usr/bin/time -f %M`).
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs as a smoke
//! test: 10 000 and 100 000 messages, one round, unless the variables above
//! say otherwise.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Instant;

use support::Result;
use support::run::{Binary, Lab, ReplyTally, Run, Summary, alternating, verdict};
use support::settings::{self, BenchEnv};
use support::stream::{IdSpace, StreamFile};

/// Requests in the small stream of a full run.
const DEFAULT_SMALL: u64 = 1_000_000;
/// Requests in the large stream of a full run; the targets compare it with
/// [`DEFAULT_SMALL`].
const DEFAULT_LARGE: u64 = 10_000_000;
/// Requests in the two streams of a smoke run (`cargo test --benches`).
const SMOKE_SMALL: u64 = 10_000;
const SMOKE_LARGE: u64 = 100_000;
/// Measured runs on each stream, unless `GRACE_BENCH_ROUNDS` says otherwise.
const DEFAULT_ROUNDS: usize = 3;
/// Seed of the request streams, unless `GRACE_BENCH_SEED` says otherwise.
const DEFAULT_SEED: u64 = 42;
/// Peak RSS on the large stream may be at most this share of that on the small.
const TARGET_MAX_RSS_RATIO: f64 = 1.10;
/// Throughput on the large stream must be at least this share of that on the small.
const TARGET_MIN_THROUGHPUT_RATIO: f64 = 0.90;

/// What to run, read from the environment.
struct Settings {
    small: u64,
    large: u64,
    rounds: usize,
    seed: u64,
    grace_args: Vec<String>,
    bench: BenchEnv,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let bench = BenchEnv::read();
        let small = bench.count("GRACE_SOAK_SMALL", DEFAULT_SMALL, SMOKE_SMALL)?;
        let large = bench.count("GRACE_SOAK_LARGE", DEFAULT_LARGE, SMOKE_LARGE)?;
        if small == 0 || large <= small {
            return Err(format!(
                "GRACE_SOAK_SMALL ({small}) must be at least 1 and below GRACE_SOAK_LARGE ({large})"
            )
            .into());
        }
        Ok(Settings {
            small,
            large,
            rounds: bench.rounds(DEFAULT_ROUNDS)?,
            seed: settings::seed(DEFAULT_SEED)?,
            grace_args: settings::grace_args(),
            bench,
        })
    }
}

/// Writes `messages` mixed requests with distinct ids into `dir`.
fn write_stream(dir: &Path, messages: u64, seed: u64) -> Result<StreamFile> {
    let path = dir.join(format!("requests-{messages}.jsonl"));
    Ok(StreamFile::mixed(path, messages, IdSpace::Distinct, seed)?)
}

/// `1M`, `10M`, `10k` for round counts; the plain number otherwise.
fn count_text(count: u64) -> String {
    match count {
        n if n >= 1_000_000 && n.is_multiple_of(1_000_000) => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n.is_multiple_of(1_000) => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    let dir = tempfile::Builder::new().prefix("grace-soak-").tempdir()?;

    let start = Instant::now();
    let streams = [
        write_stream(dir.path(), settings.small, settings.seed)?,
        write_stream(dir.path(), settings.large, settings.seed)?,
    ];
    println!(
        "soak: streams of {} and {} messages, ids distinct, seed {}, {} round(s){}, grace args: {}; {:.1} + {:.1} MB written in {:.2?}",
        settings.small,
        settings.large,
        settings.seed,
        settings.rounds,
        settings.bench.smoke_note(),
        if settings.grace_args.is_empty() {
            "none".to_string()
        } else {
            settings.grace_args.join(" ")
        },
        streams[0].megabytes()?,
        streams[1].megabytes()?,
        start.elapsed(),
    );

    let mut lab = Lab::new(dir.path());
    lab.print_rss_note();
    let grace = Binary {
        name: "grace",
        path: env!("CARGO_BIN_EXE_grace").into(),
        needs_data_dir: true,
        extra_args: settings.grace_args.clone(),
    };

    // Unmeasured: checks one reply per request on the small stream.
    let mut tally = ReplyTally::default();
    lab.run(&grace, &streams[0].path, Some(&mut tally))?;
    println!(
        "check {:<8} {} replies ({} errors, {} from the fallback cache)",
        count_text(settings.small),
        tally.lines,
        tally.errors,
        tally.fallbacks
    );
    tally.expect_one_per_request(grace.name, streams[0].messages)?;

    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for round in 0..settings.rounds {
        for index in alternating(round) {
            runs[index].push(lab.run(&grace, &streams[index].path, None)?);
        }
    }

    println!(
        "{:<8} {:>14} {:>12} {:>14}",
        "size", "msgs/s median", "wall median", "peak RSS max"
    );
    let [small, large] = [0, 1].map(|index| Summary::of(&runs[index], streams[index].messages));
    for (stream, summary) in streams.iter().zip([&small, &large]) {
        println!(
            "{:<8} {:>14.0} {:>12.3?} {:>14}",
            count_text(stream.messages),
            summary.rate,
            summary.wall,
            summary.peak_rss_text()
        );
    }

    let caveat = if (settings.small, settings.large) == (DEFAULT_SMALL, DEFAULT_LARGE) {
        ""
    } else {
        ", but the targets are set for 1M against 10M"
    };
    let sizes = format!(
        "{}/{}",
        count_text(settings.large),
        count_text(settings.small)
    );
    match (small.peak_rss_kib, large.peak_rss_kib) {
        (Some(small_kib), Some(large_kib)) => {
            let ratio = large_kib as f64 / small_kib as f64;
            println!(
                "peak RSS {sizes}: {:.1} % (target <= {:.0} %: {}{caveat})",
                ratio * 100.0,
                TARGET_MAX_RSS_RATIO * 100.0,
                verdict(ratio <= TARGET_MAX_RSS_RATIO),
            );
        }
        _ => println!("peak RSS {sizes}: not measured"),
    }
    let ratio = large.rate / small.rate;
    println!(
        "throughput {sizes}: {:.1} % (target >= {:.0} %: {}{caveat})",
        ratio * 100.0,
        TARGET_MIN_THROUGHPUT_RATIO * 100.0,
        verdict(ratio >= TARGET_MIN_THROUGHPUT_RATIO),
    );
    Ok(())
}
