//! Gateway bench: what `grace serve` costs in front of a service, and how
//! fast it answers when the service is gone.
//!
//! Starts `grace demo-upstream`, then loads it over keep-alive connections
//! with the bench's own load generator (`support::http_load`), in four or
//! five scenarios:
//!
//! - the upstream alone (the baseline);
//! - grace in front of it, healthy (every request is a call);
//! - grace with the upstream hung (it accepts and never answers): once the
//!   breaker opens, every answer is a stale copy;
//! - grace with the upstream refusing connections: the breaker open, stale
//!   copies;
//! - when nginx is installed, nginx as a plain reverse proxy in front of the
//!   same upstream (`benches/outage/nginx-plain.conf`: two workers,
//!   upstream keep-alive, no cache): a reference for what a lean proxy
//!   costs on this machine, not a target.
//!
//! Each grace scenario starts a fresh `grace serve` (so no breaker carries
//! over), GETs every key once while the upstream is healthy (so every key
//! has a copy), breaks the upstream, waits for the breaker to open, then
//! measures. Closed loop: the most each can answer, and p50/p99 latency at
//! that load. Then, because latency at saturation is mostly queueing, the
//! upstream alone and healthy grace are also loaded open-loop at a fixed
//! rate well below saturation, where the p99 grace adds is its own.
//!
//! Each round rotates the order of the scenarios, except that the upstream
//! alone and healthy grace always run back to back (in alternating order):
//! their ratio is taken round by round, so that a drift of the machine's
//! speed between rounds cancels out, as the project's benches compare.
//!
//! Each closed-loop run also reads, from `/proc`, the CPU time the client
//! (this process), the upstream and the proxy spent per answered request,
//! the proxy's split into user and system ([`support::cpu`]): what the
//! rates are made of when the three share the cores, and where a proxy
//! spends more than another.
//!
//! Prints the medians over rounds and the targets: healthy grace at least
//! 50 % of the upstream alone's throughput (the median of the per-round
//! ratios), p99 added by grace under 1 ms (the median of the per-round
//! differences of the two fixed-rate passes, which also run back to back),
//! stale answers with the upstream hung at least at the healthy rate. The
//! verdicts are printed, never asserted; the bench fails only when an
//! answer is wrong (not 2xx, or not stale where it must be).
//!
//! Settings (environment variables): `GRACE_BENCH_ROUNDS` (default 5),
//! `GRACE_GATEWAY_SECONDS` (measured seconds per scenario, default 5),
//! `GRACE_GATEWAY_CONNECTIONS` (default 32), `GRACE_GATEWAY_RATE` (requests
//! per second of the fixed-rate pass, default 2 000).
//!
//! Under `cargo test --benches` it runs as a smoke test: one round of
//! 0.3 s per scenario with 4 connections, checking every answer.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::Result;
use support::cpu::{CpuMeter, CpuTime};
use support::http_load::{
    self, ClosedLoop, ClosedLoopReport, Connections, Latencies, OpenLoop, ms,
};
use support::run::{median, verdict};
use support::servers::{self, DemoUpstream, Fault, Gateway, Nginx, Peer};
use support::settings::BenchEnv;

/// Users in the key set (`GET /users/1` ... `/users/100`).
const KEYS: usize = 100;
/// grace's route timeout: how long a call to the hung upstream is waited
/// for before its copy is served.
const ROUTE_TIMEOUT_MS: u64 = 200;
/// Unmeasured time at the start of each scenario.
const WARMUP: Duration = Duration::from_millis(500);
/// Measured milliseconds per scenario in a full run and in a smoke run.
const DEFAULT_MEASURED_MS: u64 = 5_000;
const SMOKE_MEASURED_MS: u64 = 300;
/// Measured rounds in a full run.
const DEFAULT_ROUNDS: usize = 5;
/// grace's healthy throughput must reach this share of the upstream alone's.
const TARGET_THROUGHPUT_RATIO: f64 = 0.50;
/// grace may add at most this to the p99 latency (at the fixed rate).
const TARGET_ADDED_P99: Duration = Duration::from_millis(1);
/// The header grace names its breaker's state in.
const CIRCUIT_STATE: &str = "grace-circuit-state";

/// What to run, read from the environment.
struct Settings {
    rounds: usize,
    measured: Duration,
    connections: usize,
    fixed_rate: f64,
    bench: BenchEnv,
}

impl Settings {
    fn read() -> Result<Settings> {
        let bench = BenchEnv::read();
        let measured_ms = match support::settings::count("GRACE_GATEWAY_SECONDS")? {
            Some(seconds) => seconds * 1_000,
            None if bench.smoke => SMOKE_MEASURED_MS,
            None => DEFAULT_MEASURED_MS,
        };
        Ok(Settings {
            rounds: bench.rounds(DEFAULT_ROUNDS)?,
            measured: Duration::from_millis(measured_ms.max(100)),
            connections: bench.count("GRACE_GATEWAY_CONNECTIONS", 32, 4)?.max(1) as usize,
            fixed_rate: bench.count("GRACE_GATEWAY_RATE", 2_000, 500)?.max(1) as f64,
            bench,
        })
    }
}

/// The closed-loop scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    UpstreamAlone,
    GraceHealthy,
    GraceUpstreamHung,
    GraceUpstreamRefused,
    NginxPlain,
}

impl Scenario {
    /// Every scenario this machine can run: nginx's only where it is
    /// installed. The first is the baseline, the second healthy grace.
    fn all() -> Vec<Scenario> {
        let mut all = vec![
            Scenario::UpstreamAlone,
            Scenario::GraceHealthy,
            Scenario::GraceUpstreamHung,
            Scenario::GraceUpstreamRefused,
        ];
        if servers::find_program(Peer::Nginx.program()).is_some() {
            all.push(Scenario::NginxPlain);
        }
        all
    }

    fn label(self) -> &'static str {
        match self {
            Scenario::UpstreamAlone => "upstream alone",
            Scenario::GraceHealthy => "grace, upstream healthy",
            Scenario::GraceUpstreamHung => "grace, upstream hung (stale)",
            Scenario::GraceUpstreamRefused => "grace, upstream refused (breaker open)",
            Scenario::NginxPlain => "nginx, plain proxy (reference)",
        }
    }

    /// The fault the upstream shows while measured.
    fn fault(self) -> Fault {
        match self {
            Scenario::UpstreamAlone | Scenario::GraceHealthy | Scenario::NginxPlain => {
                Fault::Healthy
            }
            Scenario::GraceUpstreamHung => Fault::Hang,
            Scenario::GraceUpstreamRefused => Fault::Refuse,
        }
    }

    /// Every answer must be a stale copy.
    fn expects_stale(self) -> bool {
        self.fault() != Fault::Healthy
    }
}

/// grace's configuration: one cached route in front of the upstream.
fn grace_config(upstream: SocketAddr) -> String {
    format!(
        r#"[services.user]
url = "http://{upstream}"
timeout_ms = {ROUTE_TIMEOUT_MS}

[[routes]]
method = "GET"
path = "/users/{{id}}"
service = "user"
fallback = "cache"
"#
    )
}

fn user_paths() -> Arc<Vec<String>> {
    Arc::new((1..=KEYS).map(|id| format!("/users/{id}")).collect())
}

/// The bench's world: the upstream, its own directory, a runtime for the
/// load generator.
struct Bench {
    settings: Settings,
    upstream: DemoUpstream,
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    paths: Arc<Vec<String>>,
    gateways_started: usize,
    /// `None` where `/proc` cannot be read: no CPU figures then.
    cpu: Option<CpuMeter>,
}

/// CPU time per answered request (user + system) in each process on the
/// path, over the measured part of a closed-loop run.
#[derive(Clone, Copy, Default)]
struct CpuPerRequest {
    /// The bench itself: the load generator.
    client: Duration,
    upstream: Duration,
    /// Zero for the upstream alone.
    proxy: CpuTime,
}

impl CpuPerRequest {
    fn total(&self) -> Duration {
        self.client + self.upstream + self.proxy.total()
    }
}

/// One closed-loop run of a scenario.
struct Measured {
    report: ClosedLoopReport,
    cpu: Option<CpuPerRequest>,
}

impl Bench {
    /// Starts a fresh grace in front of the upstream and readies it for
    /// `scenario`: every key fetched once while healthy, then the fault put
    /// in force and the breaker seen open.
    fn ready_grace(&mut self, scenario: Scenario) -> Result<Gateway> {
        self.gateways_started += 1;
        let name = format!("grace-{}", self.gateways_started);
        let gateway = Gateway::start(&name, &grace_config(self.upstream.listen), self.dir.path())?;
        let address = gateway.listen;
        for path in self.paths.iter() {
            match self.get(address, path) {
                Some((200, _)) => {}
                other => {
                    return Err(format!(
                        "priming GET {path} through grace: {other:?}\n{}",
                        gateway.server.stderr_tail()
                    )
                    .into());
                }
            }
        }
        if scenario.fault() != Fault::Healthy {
            self.upstream.set(scenario.fault())?;
            self.wait_for_open_breaker(&gateway)?;
        }
        Ok(gateway)
    }

    /// GETs keys until grace says its breaker is open.
    fn wait_for_open_breaker(&self, gateway: &Gateway) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        for path in self.paths.iter().cycle() {
            let answer = self.get(gateway.listen, path);
            if let Some((_, headers)) = &answer
                && headers
                    .get(CIRCUIT_STATE)
                    .is_some_and(|state| state == "open")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "grace's breaker did not open within 10 s; last answer {answer:?}\n{}",
                    gateway.server.stderr_tail()
                )
                .into());
            }
        }
        unreachable!("the key set is not empty")
    }

    fn get(&self, address: SocketAddr, path: &str) -> Option<(u16, http::HeaderMap)> {
        self.runtime
            .block_on(http_load::get_once(address, path, Duration::from_secs(5)))
    }

    /// Loads `address` closed-loop, reading the CPU time of the client, the
    /// upstream and the proxy whose process id is `proxy` (if any), its
    /// child processes with it (nginx's workers; grace has none), over the
    /// measured part.
    fn closed_loop(&self, address: SocketAddr, proxy: Option<u32>) -> Measured {
        let plan = ClosedLoop {
            connections: self.settings.connections,
            warmup: WARMUP,
            measured: self.settings.measured,
        };
        let cpu_now = || -> Option<[CpuTime; 3]> {
            let meter = self.cpu.as_ref()?;
            let proxy = match proxy {
                None => CpuTime::default(),
                Some(pid) => meter.with_children(pid)?,
            };
            Some([
                meter.process(std::process::id())?,
                meter.process(self.upstream.pid())?,
                proxy,
            ])
        };
        let (report, before) = self.runtime.block_on(async {
            let measured_from = async {
                tokio::time::sleep(WARMUP).await;
                cpu_now()
            };
            tokio::join!(
                http_load::closed_loop(address, Arc::clone(&self.paths), plan),
                measured_from
            )
        });
        let after = cpu_now();
        let cpu = before.zip(after).map(|(before, after)| {
            let answers = report.answers.max(1) as u32;
            let per_request = |which: usize| after[which].since(before[which]).per(answers);
            CpuPerRequest {
                client: per_request(0).total(),
                upstream: per_request(1).total(),
                proxy: per_request(2),
            }
        });
        Measured { report, cpu }
    }

    /// Runs `scenario` once.
    fn run(&mut self, scenario: Scenario) -> Result<Measured> {
        let measured = match scenario {
            Scenario::UpstreamAlone => self.closed_loop(self.upstream.listen, None),
            Scenario::NginxPlain => {
                let nginx = Nginx::start(
                    "nginx-plain",
                    "nginx-plain.conf",
                    &[("UPSTREAM", self.upstream.listen.to_string())],
                    self.dir.path(),
                )?;
                self.closed_loop(nginx.listen, Some(nginx.server.pid()))
            }
            _ => {
                let gateway = self.ready_grace(scenario)?;
                let measured = self.closed_loop(gateway.listen, Some(gateway.server.pid()));
                drop(gateway);
                self.upstream.set(Fault::Healthy)?;
                measured
            }
        };
        check(scenario, &measured.report)?;
        Ok(measured)
    }

    /// The fixed-rate pass against `address`: latencies of every request.
    fn fixed_rate(&self, address: SocketAddr) -> Result<Latencies> {
        let rate = self.settings.fixed_rate;
        let requests = (rate * (WARMUP + self.settings.measured).as_secs_f64()) as usize;
        let plan = OpenLoop {
            start: Instant::now() + Duration::from_millis(20),
            rate,
            requests,
            connections: Connections::KeepAlive,
            timeout: Duration::from_secs(5),
        };
        let paths = Arc::clone(&self.paths);
        let samples = self
            .runtime
            .block_on(http_load::open_loop(address, plan, |i| {
                paths[i % paths.len()].clone()
            }));
        let failed = samples.iter().filter(|s| !s.outcome.is_success()).count();
        if failed > 0 {
            return Err(format!("{failed} of {requests} fixed-rate requests failed").into());
        }
        Ok(Latencies::new(
            samples
                .iter()
                .filter(|sample| sample.sent >= WARMUP)
                .map(|sample| sample.latency)
                .collect(),
        ))
    }
}

/// Fails when an answer is not what the scenario must give.
fn check(scenario: Scenario, report: &ClosedLoopReport) -> Result<()> {
    let label = scenario.label();
    if report.answers == 0 {
        return Err(format!("{label}: no answer at all").into());
    }
    if report.failures > 0 || report.successes != report.answers {
        return Err(format!(
            "{label}: {} of {} answers were not 2xx, {} requests got no answer",
            report.answers - report.successes,
            report.answers,
            report.failures
        )
        .into());
    }
    let stale = report.stale;
    match scenario.expects_stale() {
        true if stale != report.answers => Err(format!(
            "{label}: only {stale} of {} answers were stale copies",
            report.answers
        )
        .into()),
        false if stale > 0 => Err(format!("{label}: {stale} stale answers").into()),
        _ => Ok(()),
    }
}

/// Medians of one scenario over the rounds.
struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

fn figures(reports: &[ClosedLoopReport]) -> Figures {
    let of = |f: &dyn Fn(&ClosedLoopReport) -> f64| median(reports.iter().map(f).collect());
    Figures {
        rate: of(&|r| r.rate()),
        p50: Duration::from_secs_f64(of(&|r| r.latencies.p50().as_secs_f64())),
        p99: Duration::from_secs_f64(of(&|r| r.latencies.p99().as_secs_f64())),
    }
}

fn median_duration(values: impl Iterator<Item = Duration>) -> Duration {
    Duration::from_secs_f64(median(values.map(|d| d.as_secs_f64()).collect()))
}

fn main() -> Result<()> {
    let settings = Settings::read()?;
    let dir = tempfile::tempdir()?;
    let upstream = DemoUpstream::start(dir.path())?;
    println!(
        "gateway bench{}: {} rounds, {:.1} s per scenario after {:.1} s warm-up, {} keep-alive \
         connections, {KEYS} keys, route timeout {ROUTE_TIMEOUT_MS} ms; grace {}",
        settings.bench.smoke_note(),
        settings.rounds,
        settings.measured.as_secs_f64(),
        WARMUP.as_secs_f64(),
        settings.connections,
        servers::GRACE,
    );
    print_load_average();
    let mut bench = Bench {
        settings,
        upstream,
        runtime: http_load::runtime()?,
        dir,
        paths: user_paths(),
        gateways_started: 0,
        cpu: CpuMeter::new(),
    };
    let scenarios = Scenario::all();
    let mut reports: Vec<Vec<ClosedLoopReport>> = vec![Vec::new(); scenarios.len()];
    let mut cpu: Vec<Vec<CpuPerRequest>> = vec![Vec::new(); scenarios.len()];
    let mut fixed: [Vec<Latencies>; 2] = [Vec::new(), Vec::new()];
    for round in 0..bench.settings.rounds {
        for index in round_order(round, scenarios.len()) {
            let scenario = scenarios[index];
            let Measured { report, cpu: used } = bench.run(scenario)?;
            println!(
                "  round {}: {:<40} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms{}",
                round + 1,
                scenario.label(),
                report.rate(),
                ms(report.latencies.p50()),
                ms(report.latencies.p99()),
                used.map_or(String::new(), |used| format!(
                    "  CPU {:.1} µs/req",
                    micros(used.total())
                )),
            );
            reports[index].push(report);
            cpu[index].extend(used);
        }
        let order = support::run::alternating(round);
        for which in order {
            let latencies = if which == 0 {
                bench.fixed_rate(bench.upstream.listen)?
            } else {
                let gateway = bench.ready_grace(Scenario::GraceHealthy)?;
                bench.fixed_rate(gateway.listen)?
            };
            fixed[which].push(latencies);
        }
    }
    report(&bench.settings, &scenarios, &reports, &cpu, &fixed);
    Ok(())
}

/// The order of the scenarios in round `round`: rotated, so no scenario
/// always runs first, except that the upstream alone and healthy grace (the
/// first two) always run back to back, in alternating order. Their ratio is
/// taken round by round, and the machine's speed drifts less between two
/// neighbours than across a round.
fn round_order(round: usize, scenarios: usize) -> Vec<usize> {
    // The pair counts as one unit in the rotation.
    let units = scenarios - 1;
    let mut order = Vec::with_capacity(scenarios);
    for step in 0..units {
        match (round + step) % units {
            0 => order.extend(support::run::alternating(round)),
            unit => order.push(unit + 1),
        }
    }
    order
}

/// The median over rounds of `of`'s rate over `to`'s, each pair measured
/// in the same round.
fn paired_ratio(of: &[ClosedLoopReport], to: &[ClosedLoopReport]) -> (f64, Vec<f64>) {
    let ratios: Vec<f64> = of
        .iter()
        .zip(to)
        .map(|(of, to)| of.rate() / to.rate())
        .collect();
    (median(ratios.clone()), ratios)
}

/// The median over rounds of the p99 `through` adds to `direct`'s, in
/// milliseconds (negative where it was lower), each pair measured in the
/// same round; and the per-round figures.
fn paired_p99_added(through: &[Latencies], direct: &[Latencies]) -> (f64, Vec<f64>) {
    let added: Vec<f64> = through
        .iter()
        .zip(direct)
        .map(|(through, direct)| ms(through.p99()) - ms(direct.p99()))
        .collect();
    (median(added.clone()), added)
}

fn percentages(ratios: &[f64]) -> String {
    let shown: Vec<String> = ratios
        .iter()
        .map(|ratio| format!("{:.1}", 100.0 * ratio))
        .collect();
    format!("{} %", shown.join(", "))
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// Prints the CPU time per answered request of each process on the path,
/// and what it implies for the throughput target: when client, proxy and
/// upstream are bound by the same cores, a rate is the cores' time over
/// the CPU time a request costs them all.
fn report_cpu(scenarios: &[Scenario], nginx: Option<usize>, cpu: &[Vec<CpuPerRequest>]) {
    println!();
    if cpu.iter().any(Vec::is_empty) {
        println!("CPU per request: not measured (no /proc or getconf here)");
        return;
    }
    let median_of = |used: &[CpuPerRequest], part: fn(&CpuPerRequest) -> Duration| {
        median(used.iter().map(|used| micros(part(used))).collect())
    };
    println!(
        "CPU per answered request (user + system, µs), medians of {} rounds:",
        cpu[0].len()
    );
    println!(
        "| scenario | client | upstream | proxy | proxy user | proxy system | all three |\n\
         |---|---|---|---|---|---|---|"
    );
    for (scenario, used) in scenarios.iter().zip(cpu) {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            scenario.label(),
            median_of(used, |used| used.client),
            median_of(used, |used| used.upstream),
            median_of(used, |used| used.proxy.total()),
            median_of(used, |used| used.proxy.user),
            median_of(used, |used| used.proxy.system),
            median_of(used, CpuPerRequest::total),
        );
    }
    let alone = median_of(&cpu[0], CpuPerRequest::total);
    let healthy = median_of(&cpu[1], CpuPerRequest::total);
    println!(
        "CPU-bound share: the upstream alone's CPU per request over healthy grace's path's: {:.1} %",
        100.0 * alone / healthy
    );
    if let Some(nginx) = nginx {
        let proxy =
            |index: usize, part: fn(&CpuPerRequest) -> Duration| median_of(&cpu[index], part);
        let total = |used: &CpuPerRequest| used.proxy.total();
        let user = |used: &CpuPerRequest| used.proxy.user;
        let system = |used: &CpuPerRequest| used.proxy.system;
        println!(
            "reference: grace's own CPU per request is {:.1} % of nginx's ({:.1} against {:.1} µs; \
             user {:.1} against {:.1}, system {:.1} against {:.1})",
            100.0 * proxy(1, total) / proxy(nginx, total),
            proxy(1, total),
            proxy(nginx, total),
            proxy(1, user),
            proxy(nginx, user),
            proxy(1, system),
            proxy(nginx, system),
        );
    }
}

fn print_load_average() {
    if let Ok(loadavg) = std::fs::read_to_string("/proc/loadavg") {
        let fields: Vec<&str> = loadavg.split_whitespace().take(3).collect();
        println!("load average before: {}", fields.join(" "));
    }
}

fn report(
    settings: &Settings,
    scenarios: &[Scenario],
    reports: &[Vec<ClosedLoopReport>],
    cpu: &[Vec<CpuPerRequest>],
    fixed: &[Vec<Latencies>; 2],
) {
    let all: Vec<Figures> = reports.iter().map(|r| figures(r)).collect();
    let alone = all[0].rate;
    println!();
    println!(
        "closed loop, {} keep-alive connections, medians of {} rounds:",
        settings.connections, settings.rounds
    );
    println!("| scenario | req/s | p50 ms | p99 ms | vs upstream alone |\n|---|---|---|---|---|");
    for (scenario, figures) in scenarios.iter().zip(&all) {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.1} % |",
            scenario.label(),
            figures.rate,
            ms(figures.p50),
            ms(figures.p99),
            100.0 * figures.rate / alone,
        );
    }
    let p50 = |which: usize| median_duration(fixed[which].iter().map(Latencies::p50));
    let p99 = |which: usize| median_duration(fixed[which].iter().map(Latencies::p99));
    println!();
    println!(
        "open loop at {:.0} requests/s (keep-alive), medians of {} rounds:",
        settings.fixed_rate, settings.rounds
    );
    println!("| target | p50 ms | p99 ms |\n|---|---|---|");
    println!("| upstream alone | {:.3} | {:.3} |", ms(p50(0)), ms(p99(0)));
    println!(
        "| grace, upstream healthy | {:.3} | {:.3} |",
        ms(p50(1)),
        ms(p99(1))
    );
    let nginx = scenarios
        .iter()
        .position(|scenario| *scenario == Scenario::NginxPlain);
    report_cpu(scenarios, nginx, cpu);
    // Like the throughput ratio, the p99 added is taken round by round:
    // the two fixed-rate passes of a round run back to back.
    let (added, added_per_round) = paired_p99_added(&fixed[1], &fixed[0]);
    // The target is judged on the ratio taken round by round (the two run
    // back to back), not on the ratio of the two medians, which may come
    // from rounds run at different speeds of the machine.
    let (ratio, per_round) = paired_ratio(&reports[1], &reports[0]);
    println!();
    println!(
        "healthy grace / upstream alone, round by round (measured back to back): {}; median {:.1} %",
        percentages(&per_round),
        100.0 * ratio
    );
    if let Some(nginx) = nginx {
        let (nginx_share, nginx_per_round) = paired_ratio(&reports[nginx], &reports[0]);
        let (grace_to_nginx, _) = paired_ratio(&reports[1], &reports[nginx]);
        println!(
            "reference: nginx as a plain proxy / upstream alone, round by round: {}; median {:.1} %; \
             healthy grace reaches {:.1} % of nginx's rate (median over rounds)",
            percentages(&nginx_per_round),
            100.0 * nginx_share,
            100.0 * grace_to_nginx,
        );
    }
    println!(
        "p99 added by grace at {:.0} requests/s, round by round (measured back to back): {} ms; median {:.3} ms",
        settings.fixed_rate,
        added_per_round
            .iter()
            .map(|added| format!("{added:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        added,
    );
    if settings.bench.smoke {
        println!("smoke run: figures too short to judge the targets; every answer was checked");
    }
    println!(
        "target: healthy grace >= {:.0} % of the upstream alone's throughput (median over rounds): {:.1} % {}",
        100.0 * TARGET_THROUGHPUT_RATIO,
        100.0 * ratio,
        verdict(ratio >= TARGET_THROUGHPUT_RATIO)
    );
    println!(
        "target: p99 added by grace < {:.0} ms (at {:.0} req/s): {:.3} ms {}",
        ms(TARGET_ADDED_P99),
        settings.fixed_rate,
        added,
        verdict(added < ms(TARGET_ADDED_P99))
    );
    println!(
        "target: stale answers with the upstream hung >= the healthy rate: {:.0} vs {:.0} req/s {}",
        all[2].rate,
        all[1].rate,
        verdict(all[2].rate >= all[1].rate)
    );
    print_load_average();
}
