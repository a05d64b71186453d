//! Running a binary under test on a request file, for grace's benches.
//!
//! A [`Lab`] runs a [`Binary`] with a stream file on stdin and measures the
//! wall time from spawn to exit and, through GNU time, the peak resident set
//! size; asked for a [`ReplyTally`], it also reads the replies back and counts
//! them. [`Summary`] reduces the runs of one binary, or of one stream, to the
//! figures the benches print; [`median`], [`alternating`] and [`verdict`] are
//! the small pieces every bench needs the same way.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::Result;

/// GNU time, which reports a child's peak RSS (`%M`, in KiB).
const GNU_TIME: &str = "/usr/bin/time";

/// A binary under test.
pub struct Binary {
    pub name: &'static str,
    pub path: PathBuf,
    /// grace gets a fresh `--data-dir` per run, so no run sees another's state.
    pub needs_data_dir: bool,
    pub extra_args: Vec<String>,
}

/// What one run of a binary measured.
pub struct Run {
    pub wall: Duration,
    /// Peak resident set size in KiB, when GNU time is available.
    pub peak_rss_kib: Option<u64>,
    /// The run's own directory (its `--data-dir` and stderr), which a bench
    /// may delete once measured when runs leave large journals behind.
    pub dir: PathBuf,
}

/// A tally of the replies, from a verifying run.
#[derive(Default)]
pub struct ReplyTally {
    pub lines: u64,
    pub errors: u64,
    pub fallbacks: u64,
    /// `order_response`s whose status is not `queued`.
    pub not_queued: u64,
}

impl ReplyTally {
    /// Fails unless the binary `name` wrote exactly one reply per request:
    /// a bench's figures mean nothing if the binary skipped or added some.
    pub fn expect_one_per_request(&self, name: &str, requests: u64) -> Result<()> {
        if self.lines != requests {
            return Err(
                format!("{name} wrote {} replies to {requests} requests", self.lines).into(),
            );
        }
        Ok(())
    }
}

/// Where runs keep their files, and how they measure memory.
pub struct Lab {
    dir: PathBuf,
    gnu_time: bool,
    runs: u32,
}

impl Lab {
    /// A lab keeping each run's files in a directory of its own under `dir`;
    /// it measures peak RSS when GNU time is installed.
    pub fn new(dir: &Path) -> Lab {
        Lab {
            dir: dir.to_path_buf(),
            gnu_time: gnu_time_available(),
            runs: 0,
        }
    }

    /// A lab that measures wall time only, with the binary as the direct
    /// child of the clock: for a bench that reports no RSS, so GNU time
    /// would only add a process to what it measures.
    pub fn without_rss(dir: &Path) -> Lab {
        Lab {
            dir: dir.to_path_buf(),
            gnu_time: false,
            runs: 0,
        }
    }

    /// Says, before any figure, when runs will not report their peak RSS and
    /// how to get it, so a missing column is not mistaken for a failure.
    pub fn print_rss_note(&self) {
        if !self.gnu_time {
            println!(
                "note: no GNU time at {GNU_TIME}; peak RSS is not measured (apt-get install time)"
            );
        }
    }

    /// Runs `binary` once with `stream` on stdin; with `tally`, reads its
    /// replies back, else sends them to `/dev/null`.
    pub fn run(
        &mut self,
        binary: &Binary,
        stream: &Path,
        tally: Option<&mut ReplyTally>,
    ) -> Result<Run> {
        self.runs += 1;
        let run_dir = self.dir.join(format!("run-{}-{}", self.runs, binary.name));
        fs::create_dir(&run_dir)?;
        let rss_file = run_dir.join("peak-rss");
        let stderr_file = run_dir.join("stderr");

        let mut command = if self.gnu_time {
            let mut time = Command::new(GNU_TIME);
            time.arg("-f").arg("%M").arg("-o").arg(&rss_file);
            time.arg(&binary.path);
            time
        } else {
            Command::new(&binary.path)
        };
        if binary.needs_data_dir {
            let data_dir = run_dir.join("data");
            fs::create_dir(&data_dir)?;
            command.arg("--data-dir").arg(data_dir);
        }
        command
            .args(&binary.extra_args)
            .stdin(File::open(stream)?)
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
                    counted.not_queued += u64::from(
                        line.contains(r#""type":"order_response""#)
                            && !line.contains(r#""status":"queued""#),
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
        Ok(Run {
            wall,
            peak_rss_kib,
            dir: run_dir,
        })
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

/// The figures of a series of runs on the same stream.
pub struct Summary {
    /// Median messages per second.
    pub rate: f64,
    /// Median wall time.
    pub wall: Duration,
    /// Largest peak RSS of any run, in KiB, when measured.
    pub peak_rss_kib: Option<u64>,
}

impl Summary {
    /// Sums up `runs`, each over a stream of `messages` requests.
    pub fn of(runs: &[Run], messages: u64) -> Summary {
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

    /// The peak RSS in MB, or `n/a` when it was not measured.
    pub fn peak_rss_text(&self) -> String {
        self.peak_rss_kib
            .map_or("n/a".to_string(), |kib| format!("{:.1} MB", megabytes(kib)))
    }
}

/// The median of `values`: the benches report medians over rounds, so one
/// run disturbed by the rest of the machine does not move the figure.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}

/// KiB (as GNU time reports them) to decimal megabytes.
pub fn megabytes(kib: u64) -> f64 {
    (kib * 1024) as f64 / 1e6
}

/// How a bench prints a target's outcome.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT MET" }
}

/// Which of two things runs first in round `round` (`[0, 1]`, then `[1, 0]`,
/// and so on): alternating, so neither always runs on a warmer machine.
pub fn alternating(round: usize) -> [usize; 2] {
    if round.is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    }
}

/// The order in which `count` things run in round `round`: rotated, so
/// none always runs first (on a colder machine) or last.
pub fn rotated(round: usize, count: usize) -> Vec<usize> {
    (0..count).map(|index| (index + round) % count).collect()
}
