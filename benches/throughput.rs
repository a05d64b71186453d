//! Throughput bench: `grace` against `grace-floor`, in the same run.
//!
//! Writes a deterministic mixed request stream to a temporary file, then feeds
//! it to each binary several times, alternating between them, with stdout to
//! `/dev/null`. A first, unmeasured run of each binary reads the replies back
//! and checks there is exactly one per request. Prints, per binary, the median
//! messages per second, the median wall time and the peak RSS, then the
//! throughput ratio and whether grace meets its targets: at least 60 % of the
//! floor's throughput on 1M messages, and under 50 MB peak RSS on 1M messages
//! with 1M distinct ids.
//!
//! Settings (environment variables):
//! - `GRACE_BENCH_MESSAGES`: requests in the stream (default 1 000 000).
//! - `GRACE_BENCH_IDS`: `distinct` (a new id per message, the default) or
//!   `hot` (ids 1..=100).
//! - `GRACE_BENCH_ROUNDS`: measured runs of each binary (default 5).
//! - `GRACE_BENCH_ARGS`: extra arguments for grace, split on whitespace.
//! - `GRACE_BENCH_SEED`: the generator's seed.
//!
//! Peak RSS comes from GNU time (`/usr/bin/time -f %M`); without it the bench
//! still measures throughput and says how to get RSS figures.
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs as a smoke
//! test: 10 000 messages, one round, unless the variables above say otherwise.

#[path = "support/mod.rs"]
mod support;

use std::env;
use std::time::Instant;

use support::Result;
use support::run::{Binary, Lab, ReplyTally, Run, Summary, alternating, megabytes, verdict};
use support::settings::{self, BenchEnv};
use support::stream::{IdSpace, StreamFile};

/// Requests in a full run; the targets are defined for this size.
const TARGET_MESSAGES: u64 = 1_000_000;
/// Requests in a smoke run (`cargo test`).
const SMOKE_MESSAGES: u64 = 10_000;
/// Measured runs of each binary in a full run, unless `GRACE_BENCH_ROUNDS`
/// says otherwise.
const DEFAULT_ROUNDS: usize = 5;
/// Seed of the request stream, unless `GRACE_BENCH_SEED` says otherwise.
const DEFAULT_SEED: u64 = 42;
/// grace must reach this share of the floor's throughput.
const TARGET_THROUGHPUT_RATIO: f64 = 0.60;
/// grace's peak RSS must stay below this many bytes on 1M distinct ids.
const TARGET_PEAK_RSS_BYTES: u64 = 50_000_000;

/// What to run, read from the environment.
struct Settings {
    messages: u64,
    ids: IdSpace,
    rounds: usize,
    seed: u64,
    grace_args: Vec<String>,
    bench: BenchEnv,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let bench = BenchEnv::read();
        let ids = match env::var("GRACE_BENCH_IDS") {
            Ok(name) => IdSpace::parse(&name).ok_or_else(|| {
                format!("GRACE_BENCH_IDS: expected distinct or hot, got {name:?}")
            })?,
            Err(_) => IdSpace::Distinct,
        };
        Ok(Settings {
            messages: bench.count("GRACE_BENCH_MESSAGES", TARGET_MESSAGES, SMOKE_MESSAGES)?,
            ids,
            rounds: bench.rounds(DEFAULT_ROUNDS)?,
            seed: settings::seed(DEFAULT_SEED)?,
            grace_args: settings::grace_args(),
            bench,
        })
    }
}

fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    let dir = tempfile::tempdir()?;

    let start = Instant::now();
    let stream = StreamFile::mixed(
        dir.path().join("requests.jsonl"),
        settings.messages,
        settings.ids,
        settings.seed,
    )?;
    println!(
        "throughput: {} messages, ids {}, seed {}, {} round(s){}; stream of {:.1} MB written in {:.2?}",
        settings.messages,
        settings.ids,
        settings.seed,
        settings.rounds,
        settings.bench.smoke_note(),
        stream.megabytes()?,
        start.elapsed(),
    );

    let mut lab = Lab::new(dir.path());
    lab.print_rss_note();
    let binaries = [
        Binary {
            name: "grace",
            path: env!("CARGO_BIN_EXE_grace"),
            needs_data_dir: true,
            extra_args: settings.grace_args.clone(),
        },
        Binary {
            name: "grace-floor",
            path: env!("CARGO_BIN_EXE_grace-floor"),
            needs_data_dir: false,
            extra_args: Vec::new(),
        },
    ];

    // Unmeasured: checks one reply per request, and warms the page cache.
    for binary in &binaries {
        let mut tally = ReplyTally::default();
        lab.run(binary, &stream.path, Some(&mut tally))?;
        println!(
            "check {:<12} {} replies ({} errors, {} from the fallback cache)",
            binary.name, tally.lines, tally.errors, tally.fallbacks
        );
        tally.expect_one_per_request(binary.name, stream.messages)?;
    }

    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for round in 0..settings.rounds {
        for index in alternating(round) {
            runs[index].push(lab.run(&binaries[index], &stream.path, None)?);
        }
    }

    println!(
        "{:<12} {:>14} {:>12} {:>14}",
        "binary", "msgs/s median", "wall median", "peak RSS max"
    );
    let [grace, floor] = runs.map(|runs| Summary::of(&runs, settings.messages));
    for (binary, summary) in binaries.iter().zip([&grace, &floor]) {
        println!(
            "{:<12} {:>14.0} {:>12.3?} {:>14}",
            binary.name,
            summary.rate,
            summary.wall,
            summary.peak_rss_text()
        );
    }

    let full_size = settings.messages >= TARGET_MESSAGES;
    let caveat = if full_size {
        ""
    } else {
        ", but the target is set for 1M messages"
    };
    let ratio = grace.rate / floor.rate;
    println!(
        "grace/floor throughput: {:.1} % (target >= {:.0} %: {}{caveat})",
        ratio * 100.0,
        TARGET_THROUGHPUT_RATIO * 100.0,
        verdict(ratio >= TARGET_THROUGHPUT_RATIO),
    );
    match grace.peak_rss_kib {
        Some(kib) if full_size && settings.ids == IdSpace::Distinct => println!(
            "grace peak RSS: {:.1} MB (target < {:.0} MB on 1M distinct ids: {})",
            megabytes(kib),
            TARGET_PEAK_RSS_BYTES as f64 / 1e6,
            verdict(kib * 1024 < TARGET_PEAK_RSS_BYTES),
        ),
        Some(_) => println!("grace peak RSS: target not checked (needs 1M distinct ids)"),
        None => println!("grace peak RSS: not measured"),
    }
    Ok(())
}
