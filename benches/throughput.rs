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

#[allow(dead_code)] // each bench uses its own part of the shared generator
#[path = "support/stream.rs"]
mod stream;

use std::env;
use std::error::Error;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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
/// GNU time, which reports a child's peak RSS (`%M`, in KiB).
const GNU_TIME: &str = "/usr/bin/time";

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

/// A binary under test.
struct Binary {
    name: &'static str,
    path: &'static str,
    /// grace gets a fresh `--data-dir` per run, so no run sees another's state.
    needs_data_dir: bool,
    extra_args: Vec<String>,
}

/// What one run of a binary measured.
struct Run {
    wall: Duration,
    /// Peak resident set size in KiB, when GNU time is available.
    peak_rss_kib: Option<u64>,
}

/// A tally of the replies, from the verifying run.
#[derive(Default)]
struct ReplyTally {
    lines: u64,
    errors: u64,
    fallbacks: u64,
}

/// Where runs keep their files, and how they measure memory.
struct Lab {
    dir: PathBuf,
    stream: PathBuf,
    gnu_time: bool,
    runs: u32,
}

impl Lab {
    /// Runs `binary` on the stream once; with `tally`, reads its replies back.
    fn run(&mut self, binary: &Binary, tally: Option<&mut ReplyTally>) -> Result<Run> {
        self.runs += 1;
        let run_dir = self.dir.join(format!("run-{}-{}", self.runs, binary.name));
        fs::create_dir(&run_dir)?;
        let rss_file = run_dir.join("peak-rss");
        let stderr_file = run_dir.join("stderr");

        let mut command = if self.gnu_time {
            let mut time = Command::new(GNU_TIME);
            time.arg("-f").arg("%M").arg("-o").arg(&rss_file);
            time.arg(binary.path);
            time
        } else {
            Command::new(binary.path)
        };
        if binary.needs_data_dir {
            let data_dir = run_dir.join("data");
            fs::create_dir(&data_dir)?;
            command.arg("--data-dir").arg(data_dir);
        }
        command
            .args(&binary.extra_args)
            .stdin(File::open(&self.stream)?)
            .stderr(File::create(&stderr_file)?)
            .stdout(if tally.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });

        let start = Instant::now();
        let mut child = command.spawn()?;
        let reader = child.stdout.take().map(|stdout| {
            thread::spawn(move || -> std::io::Result<ReplyTally> {
                let mut counted = ReplyTally::default();
                for line in BufReader::new(stdout).lines() {
                    let line = line?;
                    counted.lines += 1;
                    counted.errors += u64::from(line.contains(r#""type":"error""#));
                    counted.fallbacks += u64::from(
                        line.contains(r#""from_cache":true"#) || line.contains(r#""_cached":true"#),
                    );
                }
                Ok(counted)
            })
        });
        let status = child.wait()?;
        let wall = start.elapsed();
        if let (Some(reader), Some(tally)) = (reader, tally) {
            *tally = reader.join().map_err(|_| "reply reader panicked")??;
        }

        if !status.success() {
            let stderr = fs::read_to_string(&stderr_file).unwrap_or_default();
            let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
            for line in tail.iter().rev() {
                eprintln!("  {} stderr: {line}", binary.name);
            }
            return Err(format!("{} exited with {status}", binary.name).into());
        }
        // GNU time writes `%M` last, after any "Command exited ..." line.
        let peak_rss_kib = if self.gnu_time {
            let report = fs::read_to_string(&rss_file)?;
            let last = report.lines().last().unwrap_or_default();
            Some(last.trim().parse()?)
        } else {
            None
        };
        Ok(Run { wall, peak_rss_kib })
    }
}

/// Whether GNU time is installed and understands `-f %M -o FILE`.
fn gnu_time_available() -> bool {
    Command::new(GNU_TIME)
        .args(["-f", "%M", "-o", "/dev/null", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}

fn megabytes(kib: u64) -> f64 {
    (kib * 1024) as f64 / 1e6
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT MET" }
}

/// The figures of one binary over all measured rounds.
struct Summary {
    rate: f64,
    wall: Duration,
    peak_rss_kib: Option<u64>,
}

impl Summary {
    fn of(runs: &[Run], messages: u64) -> Summary {
        let rates = runs
            .iter()
            .map(|run| messages as f64 / run.wall.as_secs_f64())
            .collect();
        let walls = runs.iter().map(|run| run.wall.as_secs_f64()).collect();
        Summary {
            rate: median(rates),
            wall: Duration::from_secs_f64(median(walls)),
            peak_rss_kib: runs.iter().filter_map(|run| run.peak_rss_kib).max(),
        }
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

    let gnu_time = gnu_time_available();
    if !gnu_time {
        println!(
            "note: no GNU time at {GNU_TIME}; peak RSS is not measured (apt-get install time)"
        );
    }
    let mut lab = Lab {
        dir: dir.path().to_path_buf(),
        stream,
        gnu_time,
        runs: 0,
    };
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
        lab.run(binary, Some(&mut tally))?;
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
            runs[index].push(lab.run(&binaries[index], None)?);
        }
    }

    println!(
        "{:<12} {:>14} {:>12} {:>14}",
        "binary", "msgs/s median", "wall median", "peak RSS max"
    );
    let [grace, floor] = runs.map(|runs| Summary::of(&runs, settings.messages));
    for (binary, summary) in binaries.iter().zip([&grace, &floor]) {
        let rss = summary
            .peak_rss_kib
            .map_or("n/a".to_string(), |kib| format!("{:.1} MB", megabytes(kib)));
        println!(
            "{:<12} {:>14.0} {:>12.3?} {:>14}",
            binary.name, summary.rate, summary.wall, rss
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
