//! Queue bench: how fast grace accepts orders it has to queue durably, with
//! group commit against one commit per request, in the same run; and how
//! long delivering a queue takes per request, at 1k and at 100k pending.
//!
//! Writes: a stream of `create_order`s (from `support/stream.rs`), led by a
//! `set_service_health` that takes the order service down, is piped into a
//! fresh grace on a fresh `--data-dir`, stdout read back by a thread that
//! checks every order reply says "queued". The clock runs from spawn to
//! exit, so it includes start-up and the final commit. Rounds alternate the
//! two modes. Target: at least 20 000 queued writes/s with group commit.
//!
//! Delivery, at each depth N (1k and 100k pending by default), three ways:
//! - live: a grace with N orders queued (the service down, and a retry
//!   delay so long that nothing is retried) is told the service is back,
//!   then sent `process_queue`; the round trip of that one request is the
//!   delivery of all N and the commit of their rows, since its reply goes
//!   out only after the commit;
//! - restart: a journal left with N pending orders is reopened by a fresh
//!   grace (the service is up in a fresh process), timed from spawn until
//!   `get_queue` reports depth 0, less the same for an empty journal; at
//!   small depths this is within the noise of starting a process;
//! - core: the same journal opened in this process through the sans-IO
//!   core: `SqliteJournal::open` (load), `InProcessNode::handle_timeout`
//!   (delivery, the demo order service answering in-process),
//!   `SqliteJournal::commit` (one transaction for every delivered order).
//!
//! Delivery time per request must not grow with the depth of the queue.
//!
//! Settings (environment variables):
//! - `GRACE_BENCH_ORDERS`: orders per group-commit run (default 100 000).
//! - `GRACE_BENCH_PER_REQUEST_ORDERS`: orders per commit-per-request run
//!   (default 10 000: every order costs an fsync, so 100 000 would add
//!   about 15 s per round here; the rate is per order either way).
//! - `GRACE_BENCH_ROUNDS`: measured rounds (default 3).
//! - `GRACE_BENCH_DEPTHS`: queue depths for the delivery part, comma
//!   separated (default `1000,100000`).
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs as a smoke
//! test: 2 000 orders, one round, depths 100 and 2 000.

#[path = "support/mod.rs"]
mod support;

use grace::core::queue::journal::{JournalInfo, SqliteJournal};
use grace::demo::DemoData;
use grace::maelstrom::node::{InProcessNode, NodeConfig};
use std::env;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::Result;
use support::run::{Binary, Lab, ReplyTally, alternating, median, verdict};
use support::settings::{self, BenchEnv};
use support::stream::StreamFile;

/// Orders per group-commit run in a full run.
const DEFAULT_ORDERS: u64 = 100_000;
/// Orders per commit-per-request run in a full run.
const DEFAULT_PER_REQUEST_ORDERS: u64 = 10_000;
/// Orders per run in a smoke run (`cargo test --benches`).
const SMOKE_ORDERS: u64 = 2_000;
const DEFAULT_ROUNDS: usize = 3;
const DEFAULT_DEPTHS: [u64; 2] = [1_000, 100_000];
const SMOKE_DEPTHS: [u64; 2] = [100, 2_000];
/// Queued writes per second grace must reach with group commit.
const TARGET_QUEUED_WRITES_PER_SEC: f64 = 20_000.0;
/// Seed of the order stream.
const SEED: u64 = 42;
/// The node id every run's journal is named after.
const NODE_ID: &str = "bench";
/// How long a restarted node may take to drain its queue.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Pause between two `get_queue` polls.
const POLL_INTERVAL: Duration = Duration::from_micros(500);

/// What to run, read from the environment.
struct Settings {
    orders: u64,
    per_request_orders: u64,
    rounds: usize,
    depths: Vec<u64>,
    bench: BenchEnv,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let bench = BenchEnv::read();
        let orders = bench.count("GRACE_BENCH_ORDERS", DEFAULT_ORDERS, SMOKE_ORDERS)?;
        let per_request_orders = settings::count("GRACE_BENCH_PER_REQUEST_ORDERS")?
            .unwrap_or(DEFAULT_PER_REQUEST_ORDERS)
            .min(orders);
        let depths = match env::var("GRACE_BENCH_DEPTHS") {
            Ok(list) => list
                .split(',')
                .map(|depth| settings::parse_count("GRACE_BENCH_DEPTHS", depth))
                .collect::<Result<Vec<u64>>>()?,
            Err(_) if bench.smoke => SMOKE_DEPTHS.to_vec(),
            Err(_) => DEFAULT_DEPTHS.to_vec(),
        };
        if orders == 0 || per_request_orders == 0 {
            return Err(
                "GRACE_BENCH_ORDERS and GRACE_BENCH_PER_REQUEST_ORDERS must be at least 1".into(),
            );
        }
        Ok(Settings {
            orders,
            per_request_orders,
            rounds: bench.rounds(DEFAULT_ROUNDS)?,
            depths,
            bench,
        })
    }
}

fn grace(data_dir: &Path, stderr: &Path, extra: &[&str]) -> Result<Command> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_grace"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--node-id", NODE_ID])
        .args(extra)
        .stderr(File::create(stderr)?);
    Ok(command)
}

/// One commit mode under test.
struct Mode {
    name: &'static str,
    /// grace on a fresh `--data-dir`, with the flags of this mode.
    binary: Binary,
    orders: u64,
    stream: StreamFile,
}

impl Mode {
    /// grace with `flags` on `stream`, under the node id every journal in
    /// this bench is named after, as the other parts run it.
    fn new(name: &'static str, flags: &[&str], stream: StreamFile) -> Mode {
        let mut extra_args = vec!["--node-id".to_string(), NODE_ID.to_string()];
        extra_args.extend(flags.iter().map(|flag| flag.to_string()));
        Mode {
            name,
            binary: Binary {
                name: "grace",
                path: env!("CARGO_BIN_EXE_grace").into(),
                needs_data_dir: true,
                extra_args,
            },
            // One request takes the service down, the rest are orders.
            orders: stream.messages - 1,
            stream,
        }
    }
}

/// Runs grace on `mode`'s stream once, checks every order was queued, and
/// returns queued writes per second.
fn measure_writes(lab: &mut Lab, mode: &Mode) -> Result<f64> {
    let mut tally = ReplyTally::default();
    let run = lab
        .run(&mode.binary, &mode.stream.path, Some(&mut tally))
        .map_err(|err| format!("{}: {err}", mode.name))?;
    tally.expect_one_per_request(mode.name, mode.stream.messages)?;
    if tally.not_queued != 0 {
        return Err(format!("{}: {} orders not queued", mode.name, tally.not_queued).into());
    }
    // Each run leaves a journal of every order it queued.
    fs::remove_dir_all(&run.dir)?;
    Ok(mode.orders as f64 / run.wall.as_secs_f64())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

/// A journal with `depth` pending orders, left by a grace that exited with
/// the order service down.
fn fill_journal(dir: &Path, depth: u64) -> Result<PathBuf> {
    let stream = StreamFile::orders(dir.join(format!("fill-{depth}.jsonl")), depth, SEED)?.path;
    let data_dir = dir.join(format!("filled-{depth}"));
    let status = grace(&data_dir, &dir.join(format!("fill-{depth}.stderr")), &[])?
        .stdin(File::open(&stream)?)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(
            format!("filling a journal with {depth} orders: grace exited with {status}").into(),
        );
    }
    fs::remove_file(&stream)?;
    Ok(data_dir)
}

/// A restarted grace, polled with `get_queue` until its queue is empty.
struct Restart {
    child: Child,
}

impl Restart {
    /// Time from spawn until `get_queue` reports depth 0.
    fn time_to_drain(data_dir: &Path, stderr: &Path) -> Result<Duration> {
        let start = Instant::now();
        let child = grace(data_dir, stderr, &[])?
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut restart = Restart { child };
        let mut stdin = restart.child.stdin.take().expect("stdin piped");
        let mut replies = BufReader::new(restart.child.stdout.take().expect("stdout piped"));
        let mut line = String::new();
        for msg_id in 1.. {
            writeln!(
                stdin,
                r#"{{"src":"client","dest":"api","body":{{"type":"get_queue","msg_id":{msg_id}}}}}"#
            )?;
            stdin.flush()?;
            line.clear();
            if replies.read_line(&mut line)? == 0 {
                return Err("grace exited while draining its queue".into());
            }
            if line.contains(r#""depth":0,"#) {
                break;
            }
            if start.elapsed() > DRAIN_TIMEOUT {
                return Err(format!("queue not drained in {DRAIN_TIMEOUT:?}: {line}").into());
            }
            thread::sleep(POLL_INTERVAL);
        }
        let drained = start.elapsed();
        drop(stdin);
        let status = restart.child.wait()?;
        if !status.success() {
            return Err(format!("restarted grace exited with {status}").into());
        }
        Ok(drained)
    }
}

impl Drop for Restart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Per-request figures of the sans-IO core at one depth, in microseconds.
#[derive(Default)]
struct CoreDelivery {
    load_us: Vec<f64>,
    deliver_us: Vec<f64>,
    commit_us: Vec<f64>,
}

/// Opens a copy of a filled journal, recovers a node from it, delivers the
/// whole queue and commits the result, timing each step.
fn measure_core(data_dir: &Path, depth: u64, into: &mut CoreDelivery) -> Result<()> {
    let per_request = |elapsed: Duration| elapsed.as_secs_f64() * 1e6 / depth as f64;
    let config = NodeConfig::default();
    let start = Instant::now();
    let (mut journal, recovered) =
        SqliteJournal::open(data_dir, NODE_ID, config.queue.order_history)
            .map_err(|err| err.to_string())?;
    into.load_us.push(per_request(start.elapsed()));
    let info = JournalInfo::durable(Some(journal.path().to_path_buf()));
    let now = Instant::now();
    let mut grace = InProcessNode::new(config, DemoData::builtin(), now);
    grace.node.recover(info, recovered, now);
    let pending = grace.node.core().queue().depth();
    if pending as u64 != depth {
        return Err(format!("journal holds {pending} pending, expected {depth}").into());
    }

    let start = Instant::now();
    grace.handle_timeout(now);
    into.deliver_us.push(per_request(start.elapsed()));
    let queue = grace.node.core().queue();
    if queue.depth() != 0 || queue.processed() != depth {
        return Err(format!("core left {} pending", queue.depth()).into());
    }

    let rows = grace.node.take_journal_writes();
    let start = Instant::now();
    journal.commit(&rows).map_err(|err| err.to_string())?;
    into.commit_us.push(per_request(start.elapsed()));
    Ok(())
}

/// The delivery figures at one depth (medians over the rounds).
struct DeliveryRow {
    depth: u64,
    live_us: f64,
    restart_ms: f64,
    baseline_ms: f64,
    load_us: f64,
    deliver_us: f64,
    commit_us: f64,
}

/// A retry delay no run outlives: queued orders wait for `process_queue`.
const NEVER_RETRY_MS: &str = "3600000";

/// Queues `depth` orders in a live grace, brings the service back, and
/// times one `process_queue`: the delivery of all `depth` and the commit of
/// their rows, whose reply goes out only after that commit.
fn measure_process_queue(run_dir: &Path, depth: u64) -> Result<Duration> {
    fs::create_dir_all(run_dir)?;
    let stream = StreamFile::orders(run_dir.join("orders.jsonl"), depth, SEED)?.path;
    let mut child = grace(
        &run_dir.join("data"),
        &run_dir.join("stderr"),
        &[
            "--retry-base-ms",
            NEVER_RETRY_MS,
            "--retry-max-ms",
            NEVER_RETRY_MS,
        ],
    )?
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin piped");
    let mut replies = BufReader::new(child.stdout.take().expect("stdout piped"));
    // Feed the stream from a thread while the replies are read here.
    let feeder = thread::spawn(move || -> std::io::Result<std::process::ChildStdin> {
        std::io::copy(&mut File::open(stream)?, &mut stdin)?;
        stdin.flush()?;
        Ok(stdin)
    });
    let mut line = String::new();
    for _ in 0..=depth {
        line.clear();
        if replies.read_line(&mut line)? == 0 {
            return Err("grace exited while orders were being queued".into());
        }
        if line.contains(r#""type":"order_response""#) && !line.contains(r#""status":"queued""#) {
            return Err(format!("order not queued: {line}").into());
        }
    }
    let mut stdin = feeder.join().map_err(|_| "stream feeder panicked")??;
    writeln!(
        stdin,
        r#"{{"src":"client","dest":"api","body":{{"type":"set_service_health","msg_id":0,"service":"order","available":true}}}}"#
    )?;
    stdin.flush()?;
    line.clear();
    replies.read_line(&mut line)?;

    let start = Instant::now();
    writeln!(
        stdin,
        r#"{{"src":"client","dest":"api","body":{{"type":"process_queue","msg_id":1}}}}"#
    )?;
    stdin.flush()?;
    line.clear();
    replies.read_line(&mut line)?;
    let elapsed = start.elapsed();
    if !line.contains(&format!(r#""processed":{depth},"remaining":0"#)) {
        return Err(format!("process_queue did not deliver all {depth}: {line}").into());
    }
    drop(stdin);
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("grace exited with {status}").into());
    }
    Ok(elapsed)
}

fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    let dir = tempfile::tempdir()?;
    println!(
        "queue bench: {} orders with group commit, {} with a commit per request, {} round(s){}",
        settings.orders,
        settings.per_request_orders,
        settings.rounds,
        settings.bench.smoke_note(),
    );

    // Queued writes per second.
    let modes = [
        Mode::new(
            "group commit",
            &[],
            StreamFile::orders(dir.path().join("orders-group.jsonl"), settings.orders, SEED)?,
        ),
        Mode::new(
            "commit per request",
            &["--commit-per-request"],
            StreamFile::orders(
                dir.path().join("orders-per-request.jsonl"),
                settings.per_request_orders,
                SEED,
            )?,
        ),
    ];
    let mut lab = Lab::without_rss(dir.path());
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..settings.rounds {
        for index in alternating(round) {
            let rate = measure_writes(&mut lab, &modes[index])?;
            println!(
                "  round {} {:<20} {:>10.0} queued writes/s",
                round + 1,
                modes[index].name,
                rate
            );
            rates[index].push(rate);
        }
    }
    let [group, per_request] = rates.map(median);
    println!(
        "{:<20} {:>8} {:>22}",
        "mode", "orders", "queued writes/s median"
    );
    for (mode, rate) in modes.iter().zip([group, per_request]) {
        println!("{:<20} {:>8} {:>22.0}", mode.name, mode.orders, rate);
    }
    println!(
        "group commit is {:.1}x one commit per request{}",
        group / per_request,
        if settings.per_request_orders < settings.orders {
            " (per-request mode ran a shorter stream; rates are per order)"
        } else {
            ""
        }
    );
    println!(
        "group commit: {group:.0} queued writes/s (target >= {TARGET_QUEUED_WRITES_PER_SEC:.0}: {})",
        verdict(group >= TARGET_QUEUED_WRITES_PER_SEC)
    );

    // Delivery time per request at each depth.
    let empty = dir.path().join("empty");
    fill_journal_empty(&empty)?;
    let mut rows = Vec::new();
    for &depth in &settings.depths {
        let filled = fill_journal(dir.path(), depth)?;
        let mut live_us = Vec::new();
        let mut restart_ms = Vec::new();
        let mut baseline_ms = Vec::new();
        let mut core = CoreDelivery::default();
        for round in 0..settings.rounds {
            let live_dir = dir.path().join(format!("live-{depth}-{round}"));
            let live = measure_process_queue(&live_dir, depth)?;
            live_us.push(live.as_secs_f64() * 1e6 / depth as f64);
            fs::remove_dir_all(&live_dir)?;

            let copy = dir.path().join(format!("drain-{depth}-{round}"));
            copy_dir(&empty, &copy)?;
            let baseline = Restart::time_to_drain(&copy, &dir.path().join("baseline.stderr"))?;
            baseline_ms.push(baseline.as_secs_f64() * 1e3);
            fs::remove_dir_all(&copy)?;
            copy_dir(&filled, &copy)?;
            let drained = Restart::time_to_drain(&copy, &dir.path().join("drain.stderr"))?;
            restart_ms.push(drained.as_secs_f64() * 1e3);
            fs::remove_dir_all(&copy)?;

            copy_dir(&filled, &copy)?;
            measure_core(&copy, depth, &mut core)?;
            fs::remove_dir_all(&copy)?;
        }
        let row = DeliveryRow {
            depth,
            live_us: median(live_us),
            restart_ms: median(restart_ms),
            baseline_ms: median(baseline_ms),
            load_us: median(core.load_us),
            deliver_us: median(core.deliver_us),
            commit_us: median(core.commit_us),
        };
        println!(
            "  depth {depth}: live {:.2} µs/request; restart to drained {:.1} ms (empty journal {:.1} ms); \
             core load {:.2}, deliver {:.2}, commit {:.2} µs/request",
            row.live_us,
            row.restart_ms,
            row.baseline_ms,
            row.load_us,
            row.deliver_us,
            row.commit_us
        );
        rows.push(row);
        fs::remove_dir_all(&filled)?;
    }
    println!(
        "{:>8} {:>16} {:>24} {:>12} {:>13} {:>12}",
        "pending",
        "live delivery",
        "restart→drained (net)",
        "core load",
        "core deliver",
        "core commit"
    );
    for row in &rows {
        let net_ms = (row.restart_ms - row.baseline_ms).max(0.0);
        println!(
            "{:>8} {:>10.2} µs/req {:>10.1} ms {:>6.2} µs/req {:>6.2} µs/req {:>6.2} µs/req {:>6.2} µs/req",
            row.depth,
            row.live_us,
            net_ms,
            net_ms * 1e3 / row.depth as f64,
            row.load_us,
            row.deliver_us,
            row.commit_us
        );
    }
    if let (Some(shallow), Some(deep)) = (rows.first(), rows.last())
        && rows.len() > 1
    {
        println!(
            "per-request delivery at {} pending vs {}: live {:.2}x; core deliver {:.2}x, core deliver+commit {:.2}x",
            deep.depth,
            shallow.depth,
            deep.live_us / shallow.live_us,
            deep.deliver_us / shallow.deliver_us,
            (deep.deliver_us + deep.commit_us) / (shallow.deliver_us + shallow.commit_us),
        );
    }
    Ok(())
}

/// A journal with nothing in it: the baseline a restart costs anyway.
fn fill_journal_empty(data_dir: &Path) -> Result<()> {
    let (journal, _) =
        SqliteJournal::open(data_dir, NODE_ID, NodeConfig::default().queue.order_history)
            .map_err(|err| err.to_string())?;
    drop(journal);
    Ok(())
}
