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

#[path = "support/run.rs"]
mod run;
#[allow(dead_code)] // each bench uses its own part of the shared generator
#[path = "support/stream.rs"]
mod stream;

use std::env;
use std::error::Error;
use std::fs::{self, File};
use std::io::BufWriter;
use std::time::Instant;

use run::{Binary, GNU_TIME, Lab, ReplyTally, Run, Summary, megabytes, verdict};
use stream::IdSpace;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Requests in a full run; the targets are defined for this size.
const TARGET_MESSAGES: u64 = 1_000_000;
/// Requests in a smoke run (`cargo test`).
const SMOKE_MESSAGES: u64 = 10_000;
/// Measured runs of each binary, unless `GRACE_BENCH_ROUNDS` says otherwise.
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
    smoke: bool,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        // `cargo bench` passes `--bench`; `cargo test --benches` does not.
        let smoke = !env::args().any(|arg| arg == "--bench");
        let messages = match env::var("GRACE_BENCH_MESSAGES") {
            Ok(value) => value.replace('_', "").parse()?,
            Err(_) if smoke => SMOKE_MESSAGES,
            Err(_) => TARGET_MESSAGES,
        };
        let ids = match env::var("GRACE_BENCH_IDS") {
            Ok(name) => IdSpace::parse(&name).ok_or_else(|| {
                format!("GRACE_BENCH_IDS: expected distinct or hot, got {name:?}")
            })?,
            Err(_) => IdSpace::Distinct,
        };
        let rounds = match env::var("GRACE_BENCH_ROUNDS") {
            Ok(value) => value.parse()?,
            Err(_) if smoke => 1,
            Err(_) => DEFAULT_ROUNDS,
        };
        let seed = match env::var("GRACE_BENCH_SEED") {
            Ok(value) => value.parse()?,
            Err(_) => DEFAULT_SEED,
        };
        let grace_args = env::var("GRACE_BENCH_ARGS")
            .map(|args| args.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        if rounds == 0 {
            return Err("GRACE_BENCH_ROUNDS must be at least 1".into());
        }
        Ok(Settings {
            messages,
            ids,
            rounds,
            seed,
            grace_args,
            smoke,
        })
    }
}

fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    let dir = tempfile::tempdir()?;
    let stream = dir.path().join("requests.jsonl");

    let start = Instant::now();
    stream::write_mixed_stream(
        BufWriter::new(File::create(&stream)?),
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
        if settings.smoke { " (smoke run)" } else { "" },
        fs::metadata(&stream)?.len() as f64 / 1e6,
        start.elapsed(),
    );

    let mut lab = Lab::new(dir.path());
    if !lab.measures_rss() {
        println!(
            "note: no GNU time at {GNU_TIME}; peak RSS is not measured (apt-get install time)"
        );
    }
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
        lab.run(binary, &stream, Some(&mut tally))?;
        println!(
            "check {:<12} {} replies ({} errors, {} from the fallback cache)",
            binary.name, tally.lines, tally.errors, tally.fallbacks
        );
        if tally.lines != settings.messages {
            return Err(format!(
                "{} wrote {} replies to {} requests",
                binary.name, tally.lines, settings.messages
            )
            .into());
        }
    }

    // Alternate which binary goes first, so neither always runs on a warmer machine.
    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for round in 0..settings.rounds {
        let order = if round.is_multiple_of(2) {
            [0, 1]
        } else {
            [1, 0]
        };
        for index in order {
            runs[index].push(lab.run(&binaries[index], &stream, None)?);
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
