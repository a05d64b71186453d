//! Throughput bench: grace against the floor, side by side, in one run.
//!
//! The floor is `../shared/floor/` (built by the bench) when it is beside
//! the repository, and `grace-floor` (this repository's copy of the same
//! work) always; the stream is the one the shared floor's
//! `gen_workload.py` writes (else the bench's own generator). Two streams
//! are measured: the mixed one the throughput target is quoted on
//! (`gen_workload.py 1000000 7`: half `get_user`, 40 % `get_product`, 10 %
//! `set_mode`, ids drawn from 1..=2000, a few fault flags), and the one with
//! a new id in every request (`... distinct`), on which the memory target
//! is. A first, unmeasured run of each binary reads the replies back and
//! checks there is exactly one per request. Then every binary runs
//! `GRACE_BENCH_ROUNDS` times per stream, in rotating order. Printed per
//! stream and binary: median messages per second, median wall time, peak
//! RSS; then grace's share of the floor's throughput and its peak RSS,
//! against the targets (>= 60 % of the floor on the mixed stream, < 50 MiB
//! on 1M distinct ids). Beside the share from the medians, the median of
//! the per-round shares: each round runs every binary once, one after the
//! other, so a burst of load from elsewhere tends to slow both sides of a
//! round's share, and that figure moves less from run to run.
//!
//! Settings (environment variables):
//! - `GRACE_BENCH_MESSAGES`: requests per stream (default 1 000 000).
//! - `GRACE_BENCH_ROUNDS`: measured runs of each binary (default 5).
//! - `GRACE_BENCH_ARGS`: extra arguments for grace, split on whitespace.
//! - `GRACE_BENCH_SEED`: the generator's seed (default 7).
//! - `GRACE_SHARED_DIR`: where the shared floor is (default `../shared`).
//!
//! Peak RSS comes from GNU time (`/usr/bin/time -f %M`).
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs as a smoke
//! test: 10 000 messages, one round, unless the variables above say otherwise.

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::Instant;

use support::Result;
use support::floor;
use support::run::{Binary, Lab, ReplyTally, Run, Summary, median, megabytes, rotated, verdict};
use support::settings::{self, BenchEnv};
use support::stream::{IdSpace, StreamFile};

/// Requests in a full run; the targets are defined for this size.
const TARGET_MESSAGES: u64 = 1_000_000;
/// Requests in a smoke run (`cargo test`).
const SMOKE_MESSAGES: u64 = 10_000;
/// Measured runs of each binary in a full run.
const DEFAULT_ROUNDS: usize = 5;
/// Seed of the stream: the one the issue quotes (`gen_workload.py 1000000 7`).
const DEFAULT_SEED: u64 = 7;
/// grace must reach this share of the floor's throughput.
const TARGET_THROUGHPUT_RATIO: f64 = 0.60;
/// What the throughput target aims for.
const AIMED_THROUGHPUT_RATIO: f64 = 0.75;
/// grace's peak RSS must stay below this many bytes on 1M distinct ids.
const TARGET_PEAK_RSS_BYTES: u64 = 50 * 1024 * 1024;
/// Ids the bench's own mixed stream draws from, like `gen_workload.py`'s.
const MIXED_IDS: u64 = 2000;

/// One of the two streams.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Mixed,
    Distinct,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Mixed => "mixed",
            Workload::Distinct => "distinct",
        }
    }
}

fn main() -> Result<()> {
    let bench = BenchEnv::read();
    let messages = bench.count("GRACE_BENCH_MESSAGES", TARGET_MESSAGES, SMOKE_MESSAGES)?;
    let rounds = bench.rounds(DEFAULT_ROUNDS)?;
    let seed = settings::seed(DEFAULT_SEED)?;
    let dir = tempfile::tempdir()?;
    let shared = floor::shared_floor_dir();

    let mut binaries = vec![
        Binary {
            name: "grace",
            path: env!("CARGO_BIN_EXE_grace").into(),
            needs_data_dir: true,
            extra_args: settings::grace_args(),
        },
        Binary {
            name: "grace-floor",
            path: env!("CARGO_BIN_EXE_grace-floor").into(),
            needs_data_dir: false,
            extra_args: Vec::new(),
        },
    ];
    match &shared {
        Some(floor_dir) => {
            let built = floor::build_shared_floor(floor_dir, &dir.path().join("floor-target"))?;
            println!(
                "shared floor: {} (built from {})",
                built.display(),
                floor_dir.display()
            );
            binaries.push(Binary {
                name: "shared-floor",
                path: built,
                needs_data_dir: false,
                extra_args: Vec::new(),
            });
        }
        None => println!("shared floor: not found beside the repository; grace-floor stands in"),
    }
    // The floor the ratio is quoted against: the shared one when present.
    let reference = binaries.len() - 1;

    let mut lab = Lab::new(dir.path());
    lab.print_rss_note();
    for workload in [Workload::Mixed, Workload::Distinct] {
        let path = dir.path().join(format!("{}.jsonl", workload.name()));
        let start = Instant::now();
        write_stream(&shared, &path, workload, messages, seed)?;
        println!(
            "\n== stream {}: {messages} messages, seed {seed}, {rounds} round(s){}; written in {:.2?}",
            workload.name(),
            bench.smoke_note(),
            start.elapsed()
        );
        let runs = measure(&mut lab, &binaries, &path, messages, rounds)?;
        report(workload, &binaries, &runs, reference, messages);
    }
    Ok(())
}

/// Writes `workload`'s stream to `path`: the shared floor's script when it
/// is there, else the bench's own generator.
fn write_stream(
    shared: &Option<PathBuf>,
    path: &std::path::Path,
    workload: Workload,
    messages: u64,
    seed: u64,
) -> Result<()> {
    match shared {
        Some(floor_dir) => floor::write_shared_workload(
            floor_dir,
            path,
            messages,
            seed,
            workload == Workload::Distinct,
        ),
        None => {
            let ids = match workload {
                Workload::Mixed => IdSpace::Hot { count: MIXED_IDS },
                Workload::Distinct => IdSpace::Distinct,
            };
            StreamFile::mixed(path.to_path_buf(), messages, ids, seed)?;
            Ok(())
        }
    }
}

/// Checks one reply per request for each binary, then runs each `rounds`
/// times in rotating order; returns the runs of each binary, by round.
fn measure(
    lab: &mut Lab,
    binaries: &[Binary],
    stream: &std::path::Path,
    messages: u64,
    rounds: usize,
) -> Result<Vec<Vec<Run>>> {
    for binary in binaries {
        let mut tally = ReplyTally::default();
        lab.run(binary, stream, Some(&mut tally))?;
        println!(
            "check {:<13} {} replies ({} errors, {} from the fallback cache)",
            binary.name, tally.lines, tally.errors, tally.fallbacks
        );
        tally.expect_one_per_request(binary.name, messages)?;
    }
    let mut runs: Vec<Vec<Run>> = binaries.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for index in rotated(round, binaries.len()) {
            runs[index].push(lab.run(&binaries[index], stream, None)?);
        }
    }
    Ok(runs)
}

/// grace's share of the other binary's throughput in each round (the
/// other's wall time over grace's), and their median.
fn per_round_shares(grace: &[Run], other: &[Run]) -> (f64, Vec<f64>) {
    let shares: Vec<f64> = grace
        .iter()
        .zip(other)
        .map(|(grace, other)| other.wall.as_secs_f64() / grace.wall.as_secs_f64())
        .collect();
    (median(shares.clone()), shares)
}

fn report(
    workload: Workload,
    binaries: &[Binary],
    runs: &[Vec<Run>],
    reference: usize,
    messages: u64,
) {
    let summaries: Vec<Summary> = runs
        .iter()
        .map(|runs| Summary::of(runs, messages))
        .collect();
    println!(
        "{:<13} {:>14} {:>12} {:>14}",
        "binary", "msgs/s median", "wall median", "peak RSS max"
    );
    for (binary, summary) in binaries.iter().zip(&summaries) {
        println!(
            "{:<13} {:>14.0} {:>12.3?} {:>14}",
            binary.name,
            summary.rate,
            summary.wall,
            summary.peak_rss_text()
        );
    }
    let grace = &summaries[0];
    let full_size = messages >= TARGET_MESSAGES;
    let caveat = if full_size {
        ""
    } else {
        " (the targets are set for 1M messages)"
    };
    for (index, binary) in binaries.iter().enumerate().skip(1) {
        let (paired, shares) = per_round_shares(&runs[0], &runs[index]);
        let shares: Vec<String> = shares
            .iter()
            .map(|share| format!("{:.1}", share * 100.0))
            .collect();
        println!(
            "grace / {}: {:.1} % of its median; per round {} %, median {:.1} %",
            binary.name,
            grace.rate / summaries[index].rate * 100.0,
            shares.join(" "),
            paired * 100.0,
        );
    }
    match workload {
        Workload::Mixed => {
            let ratio = grace.rate / summaries[reference].rate;
            let (paired, _) = per_round_shares(&runs[0], &runs[reference]);
            println!(
                "throughput target, grace >= {:.0} % of {} (aim {:.0} %): {:.1} % {} (median of the per-round shares: {:.1} % {}){caveat}",
                TARGET_THROUGHPUT_RATIO * 100.0,
                binaries[reference].name,
                AIMED_THROUGHPUT_RATIO * 100.0,
                ratio * 100.0,
                verdict(ratio >= TARGET_THROUGHPUT_RATIO),
                paired * 100.0,
                verdict(paired >= TARGET_THROUGHPUT_RATIO),
            );
        }
        Workload::Distinct => match grace.peak_rss_kib {
            Some(kib) => println!(
                "memory target, grace peak RSS < {:.0} MiB on {} distinct ids: {:.1} MiB {}{caveat}",
                TARGET_PEAK_RSS_BYTES as f64 / (1024.0 * 1024.0),
                messages,
                megabytes(kib) * 1e6 / (1024.0 * 1024.0),
                verdict(kib * 1024 < TARGET_PEAK_RSS_BYTES),
            ),
            None => println!("memory target: peak RSS not measured (no GNU time)"),
        },
    }
}
