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

#[path = "support/run.rs"]
mod run;
#[allow(dead_code)] // each bench uses its own part of the shared generator
#[path = "support/stream.rs"]
mod stream;

use std::env;
use std::error::Error;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Instant;

use run::{Binary, GNU_TIME, Lab, ReplyTally, Run, Summary, verdict};
use stream::IdSpace;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

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
    smoke: bool,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        // `cargo bench` passes `--bench`; `cargo test --benches` does not.
        let smoke = !env::args().any(|arg| arg == "--bench");
        let count = |name: &str, full: u64, smoke_default: u64| -> Result<u64> {
            match env::var(name) {
                Ok(value) => Ok(value.replace('_', "").parse()?),
                Err(_) if smoke => Ok(smoke_default),
                Err(_) => Ok(full),
            }
        };
        let small = count("GRACE_SOAK_SMALL", DEFAULT_SMALL, SMOKE_SMALL)?;
        let large = count("GRACE_SOAK_LARGE", DEFAULT_LARGE, SMOKE_LARGE)?;
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
        if small == 0 || large <= small {
            return Err(format!(
                "GRACE_SOAK_SMALL ({small}) must be at least 1 and below GRACE_SOAK_LARGE ({large})"
            )
            .into());
        }
        if rounds == 0 {
            return Err("GRACE_BENCH_ROUNDS must be at least 1".into());
        }
        Ok(Settings {
            small,
            large,
            rounds,
            seed,
            grace_args,
            smoke,
        })
    }
}

/// One of the two request streams.
struct Stream {
    messages: u64,
    path: PathBuf,
}

impl Stream {
    /// Writes `messages` mixed requests with distinct ids into `dir`.
    fn write(dir: &Path, messages: u64, seed: u64) -> Result<Stream> {
        let path = dir.join(format!("requests-{messages}.jsonl"));
        stream::write_mixed_stream(
            BufWriter::new(File::create(&path)?),
            messages,
            IdSpace::Distinct,
            seed,
        )?;
        Ok(Stream { messages, path })
    }

    /// The stream's size in MB.
    fn megabytes(&self) -> Result<f64> {
        Ok(fs::metadata(&self.path)?.len() as f64 / 1e6)
    }
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
        Stream::write(dir.path(), settings.small, settings.seed)?,
        Stream::write(dir.path(), settings.large, settings.seed)?,
    ];
    println!(
        "soak: streams of {} and {} messages, ids distinct, seed {}, {} round(s){}, grace args: {}; {:.1} + {:.1} MB written in {:.2?}",
        settings.small,
        settings.large,
        settings.seed,
        settings.rounds,
        if settings.smoke { " (smoke run)" } else { "" },
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
    if !lab.measures_rss() {
        println!(
            "note: no GNU time at {GNU_TIME}; peak RSS is not measured (apt-get install time)"
        );
    }
    let grace = Binary {
        name: "grace",
        path: env!("CARGO_BIN_EXE_grace"),
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
    if tally.lines != settings.small {
        return Err(format!(
            "grace wrote {} replies to {} requests",
            tally.lines, settings.small
        )
        .into());
    }

    // Alternate which stream goes first, so neither always runs on a warmer machine.
    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for round in 0..settings.rounds {
        let order = if round.is_multiple_of(2) {
            [0, 1]
        } else {
            [1, 0]
        };
        for index in order {
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
