//! Outage bench: grace, nginx (`proxy_cache_use_stale`) and Varnish (grace
//! mode) in front of the same failing service, on the same load, in one run.
//!
//! One `grace demo-upstream` serves every proxy in turn. For each proxy,
//! started fresh on its committed configuration (`benches/outage/`), the
//! bench sends the same open-loop load, requests due at a fixed rate
//! whatever the answers, while the upstream goes through four phases:
//!
//! | seconds | upstream |
//! |---|---|
//! | 0–10 | healthy (every key is fetched at least once) |
//! | 10–20 | hangs: accepts, never answers |
//! | 20–25 | refuses connections |
//! | 25–35 | healthy again |
//!
//! Each request is logged with when it was due, its status, its latency
//! (from when it was due, so a stall is never hidden) and whether it was a
//! stale copy; the upstream's request count is read at each phase boundary.
//! The whole scenario runs twice per proxy: over keep-alive connections and
//! with a connection per request.
//!
//! It prints a table per phase and proxy (share of 2xx, share stale,
//! p50/p99/max latency, answers per second, calls that reached the
//! upstream) and draws them over time in one SVG. A full run at full
//! length writes both to `docs/` (`outage.svg`, `outage-results.md`, shown
//! in the README); a shortened or smoke run writes them, and every run the
//! per-request logs (CSV), to the target directory.
//!
//! Then, in the same run, the price of each proxy's logic when nothing
//! fails: closed-loop throughput and p99 in front of a fast healthy
//! upstream (nginx serving static files), for nginx as a plain proxy, nginx
//! with its cache, Varnish and grace, each as a ratio to the plain proxy.
//!
//! nginx and Varnish are Debian's packages: a full run as root installs
//! them when missing (`apt-get install -y nginx varnish`), otherwise it says
//! what to run and measures grace alone. They run as foreground processes
//! on loopback ports with their files in a temporary directory.
//!
//! Settings (environment variables): `GRACE_OUTAGE_RATE` (requests per
//! second, default 300), `GRACE_OUTAGE_PROXIES` (default
//! `grace,nginx,varnish`), `GRACE_BENCH_ROUNDS` (rounds of the fast-upstream
//! comparison, default 3), `GRACE_OUTAGE_FAST_MS` (measured milliseconds per
//! proxy and round there, default 5 000), `GRACE_OUTAGE_CONNECTIONS`
//! (closed-loop connections there, default 32), `GRACE_OUTAGE_PHASE_PERCENT`
//! (the phases' length as a percentage of the table above, default 100: a
//! quick full run with `GRACE_OUTAGE_PHASE_PERCENT=20`).
//!
//! Under `cargo test --benches` it runs as a smoke test: the phases a tenth
//! as long at 100 requests/s, a short fast-upstream comparison, results in
//! the target directory, nginx and Varnish skipped if not installed.

#[path = "support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use plotters::style::RGBColor;
use support::Result;
use support::http_load::{self, ClosedLoop, ClosedLoopReport, Connections, OpenLoop, Sample, ms};
use support::outage_report::{self, Phase, ProxyRun};
use support::run::median;
use support::servers::{self, DemoUpstream, Fault, Gateway, Install, Nginx, Peer, Server, Varnish};
use support::settings::BenchEnv;

/// Users in the key set (`GET /users/1` ... `/users/100`).
const KEYS: usize = 100;
/// Seed of the order keys are asked in.
const KEY_ORDER_SEED: u64 = 10;
/// Longest the load generator waits for an answer (every proxy gives up
/// on the upstream long before).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time between starting a proxy and the first request.
const LEAD_IN: Duration = Duration::from_millis(300);
/// The phases of a full run: (name, upstream fault, seconds).
const PHASES: [(&str, Fault, f64); 4] = [
    ("healthy", Fault::Healthy, 10.0),
    ("upstream hangs", Fault::Hang, 10.0),
    ("upstream refuses connections", Fault::Refuse, 5.0),
    ("healthy again", Fault::Healthy, 10.0),
];
/// A smoke run's phases are this percentage of a full run's.
const SMOKE_PHASE_PERCENT: u64 = 10;
/// Unmeasured time at the start of each closed-loop measurement.
const WARMUP: Duration = Duration::from_millis(500);
/// Where a full run at full length writes its figure and tables.
const RESULTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs");

/// The proxies under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proxy {
    Grace,
    Nginx,
    Varnish,
}

impl Proxy {
    fn name(self) -> &'static str {
        match self {
            Proxy::Grace => "grace",
            Proxy::Nginx => "nginx",
            Proxy::Varnish => "varnish",
        }
    }

    fn color(self) -> RGBColor {
        match self {
            Proxy::Grace => RGBColor(31, 119, 180),
            Proxy::Nginx => RGBColor(44, 160, 44),
            Proxy::Varnish => RGBColor(214, 39, 40),
        }
    }

    fn peer(self) -> Option<Peer> {
        match self {
            Proxy::Grace => None,
            Proxy::Nginx => Some(Peer::Nginx),
            Proxy::Varnish => Some(Peer::Varnish),
        }
    }

    fn parse(name: &str) -> Result<Proxy> {
        match name.trim() {
            "grace" => Ok(Proxy::Grace),
            "nginx" => Ok(Proxy::Nginx),
            "varnish" => Ok(Proxy::Varnish),
            other => Err(format!(
                "GRACE_OUTAGE_PROXIES: unknown proxy {other:?} (grace, nginx, varnish)"
            )
            .into()),
        }
    }
}

/// What to run, read from the environment.
struct Settings {
    rate: f64,
    /// The phases' length as a percentage of [`PHASES`].
    phase_percent: u64,
    proxies: Vec<Proxy>,
    phases: Vec<(Phase, Fault)>,
    rounds: usize,
    fast_measured: Duration,
    fast_connections: usize,
    bench: BenchEnv,
}

impl Settings {
    fn read() -> Result<Settings> {
        let bench = BenchEnv::read();
        let phase_percent = bench
            .count("GRACE_OUTAGE_PHASE_PERCENT", 100, SMOKE_PHASE_PERCENT)?
            .max(1);
        let scale = phase_percent as f64 / 100.0;
        let mut phases = Vec::new();
        let mut start = Duration::ZERO;
        for (name, fault, seconds) in PHASES {
            let end = start + Duration::from_secs_f64(seconds * scale);
            let shade = match fault {
                Fault::Healthy => None,
                Fault::Hang => Some(RGBColor(255, 140, 0)),
                Fault::Refuse => Some(RGBColor(200, 0, 0)),
            };
            phases.push((
                Phase {
                    name,
                    start,
                    end,
                    shade,
                },
                fault,
            ));
            start = end;
        }
        let proxies = match std::env::var("GRACE_OUTAGE_PROXIES") {
            Ok(list) => list
                .split(',')
                .filter(|name| !name.trim().is_empty())
                .map(Proxy::parse)
                .collect::<Result<Vec<_>>>()?,
            Err(_) => vec![Proxy::Grace, Proxy::Nginx, Proxy::Varnish],
        };
        Ok(Settings {
            rate: bench.count("GRACE_OUTAGE_RATE", 300, 100)?.max(1) as f64,
            phase_percent,
            proxies,
            phases,
            rounds: bench.rounds(3)?,
            fast_measured: Duration::from_secs_f64(
                bench.count("GRACE_OUTAGE_FAST_MS", 5_000, 300)? as f64 / 1e3,
            ),
            fast_connections: bench.count("GRACE_OUTAGE_CONNECTIONS", 32, 4)?.max(1) as usize,
            bench,
        })
    }

    fn duration(&self) -> Duration {
        self.phases
            .last()
            .map_or(Duration::ZERO, |(phase, _)| phase.end)
    }

    fn phases(&self) -> Vec<Phase> {
        self.phases.iter().map(|(phase, _)| *phase).collect()
    }
}

/// A proxy started for one run, stopped when dropped.
struct Running {
    listen: SocketAddr,
    _server: Server,
}

/// Starts `proxy` on its committed config in front of `upstream`.
fn start_proxy(proxy: Proxy, name: &str, upstream: SocketAddr, dir: &Path) -> Result<Running> {
    Ok(match proxy {
        Proxy::Grace => {
            let config =
                servers::outage_config("grace.toml", &[("UPSTREAM", upstream.to_string())])?;
            let gateway = Gateway::start(name, &config, dir)?;
            Running {
                listen: gateway.listen,
                _server: gateway.server,
            }
        }
        Proxy::Nginx => {
            let nginx = Nginx::start(
                name,
                "nginx.conf",
                &[("UPSTREAM", upstream.to_string())],
                dir,
            )?;
            Running {
                listen: nginx.listen,
                _server: nginx.server,
            }
        }
        Proxy::Varnish => {
            let varnish = Varnish::start(name, upstream, dir)?;
            Running {
                listen: varnish.listen,
                _server: varnish.server,
            }
        }
    })
}

/// The key of every request: each run of `KEYS` requests asks every key
/// once, in an order drawn afresh, the same for every proxy.
fn key_order(requests: usize) -> Arc<Vec<u16>> {
    let mut rng = fastrand::Rng::with_seed(KEY_ORDER_SEED);
    let mut keys = Vec::with_capacity(requests + KEYS);
    while keys.len() < requests {
        let mut cycle: Vec<u16> = (1..=KEYS as u16).collect();
        rng.shuffle(&mut cycle);
        keys.extend(cycle);
    }
    keys.truncate(requests);
    Arc::new(keys)
}

/// Runs the outage scenario against `proxy` over `connections`.
fn run_outage(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    upstream: &DemoUpstream,
    proxy: Proxy,
    connections: Connections,
    dir: &Path,
) -> Result<ProxyRun> {
    upstream.set(Fault::Healthy)?;
    let name = format!(
        "{}-{}",
        proxy.name(),
        match connections {
            Connections::KeepAlive => "keepalive",
            Connections::PerRequest => "per-request",
        }
    );
    let running = start_proxy(proxy, &name, upstream.listen, dir)?;
    let requests = (settings.rate * settings.duration().as_secs_f64()).round() as usize;
    let keys = key_order(requests);
    let start = Instant::now() + LEAD_IN;
    let plan = OpenLoop {
        start,
        rate: settings.rate,
        requests,
        connections,
        timeout: CLIENT_TIMEOUT,
    };
    let load = runtime.spawn(http_load::open_loop(running.listen, plan, move |index| {
        format!("/users/{}", keys[index])
    }));
    // The upstream's count at each phase boundary, read as the fault changes.
    let mut counts = Vec::new();
    for (phase, fault) in &settings.phases {
        sleep_until(start + phase.start);
        counts.push(upstream.requests_seen()?);
        upstream.set(*fault)?;
    }
    sleep_until(start + settings.duration());
    counts.push(upstream.requests_seen()?);
    let samples = runtime.block_on(load)?;
    drop(running);
    upstream.set(Fault::Healthy)?;
    let run = ProxyRun {
        proxy: proxy.name(),
        color: proxy.color(),
        connections,
        samples,
        upstream_calls: counts.windows(2).map(|pair| pair[1] - pair[0]).collect(),
    };
    let first = run.phase(0, &settings.phases[0].0);
    if first.good_share < 0.9 || first.upstream_calls == 0 {
        return Err(format!(
            "{} ({}): only {:.1} % 2xx while the upstream was healthy, {} calls reached it",
            proxy.name(),
            connections.label(),
            100.0 * first.good_share,
            first.upstream_calls
        )
        .into());
    }
    Ok(run)
}

fn sleep_until(when: Instant) {
    let now = Instant::now();
    if when > now {
        thread::sleep(when - now);
    }
}

/// Writes the per-request log of `run` as CSV.
fn write_log(run: &ProxyRun, path: &Path) -> Result<()> {
    let mut text = String::from("proxy,connections,sent_ms,status,latency_ms,stale\n");
    for Sample {
        sent,
        latency,
        outcome,
    } in &run.samples
    {
        writeln!(
            text,
            "{},{},{:.3},{},{:.3},{}",
            run.proxy,
            run.connections.label(),
            ms(*sent),
            outcome.status_text(),
            ms(*latency),
            outcome.is_stale()
        )?;
    }
    fs::write(path, text)?;
    Ok(())
}

/// The fast-upstream comparison: each proxy in front of nginx serving
/// static files, closed loop.
struct FastFigures {
    label: &'static str,
    rate: f64,
    p99: Duration,
}

fn fast_comparison(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    peers: &[Peer],
    dir: &Path,
) -> Result<Option<Vec<FastFigures>>> {
    if !peers.contains(&Peer::Nginx) {
        println!(
            "skipped: the fast-upstream comparison needs nginx (the static upstream and the baseline)"
        );
        return Ok(None);
    }
    let root = dir.join("static");
    fs::create_dir_all(root.join("users"))?;
    for id in 1..=KEYS {
        fs::write(
            root.join("users").join(id.to_string()),
            format!("{{\"id\":{id},\"name\":\"John Doe\"}}"),
        )?;
    }
    let origin = Nginx::start(
        "static-origin",
        "nginx-static.conf",
        &[("ROOT", root.display().to_string())],
        dir,
    )?;
    let upstream = [("UPSTREAM", origin.listen.to_string())];
    let mut proxies: Vec<(&'static str, Running)> = Vec::new();
    let plain = Nginx::start("fast-nginx-plain", "nginx-plain.conf", &upstream, dir)?;
    proxies.push((
        "nginx, plain proxy",
        Running {
            listen: plain.listen,
            _server: plain.server,
        },
    ));
    let cached = Nginx::start("fast-nginx-cache", "nginx.conf", &upstream, dir)?;
    proxies.push((
        "nginx, proxy_cache",
        Running {
            listen: cached.listen,
            _server: cached.server,
        },
    ));
    if peers.contains(&Peer::Varnish) {
        proxies.push((
            "varnish",
            start_proxy(Proxy::Varnish, "fast-varnish", origin.listen, dir)?,
        ));
    }
    proxies.push((
        "grace",
        start_proxy(Proxy::Grace, "fast-grace", origin.listen, dir)?,
    ));
    let paths: Arc<Vec<String>> = Arc::new((1..=KEYS).map(|id| format!("/users/{id}")).collect());
    let mut reports: Vec<Vec<ClosedLoopReport>> = proxies.iter().map(|_| Vec::new()).collect();
    for round in 0..settings.rounds {
        for step in 0..proxies.len() {
            let index = (round + step) % proxies.len();
            let (label, proxy) = &proxies[index];
            let report = runtime.block_on(http_load::closed_loop(
                proxy.listen,
                Arc::clone(&paths),
                ClosedLoop {
                    connections: settings.fast_connections,
                    warmup: WARMUP,
                    measured: settings.fast_measured,
                },
            ));
            if report.answers == 0 || report.successes != report.answers || report.failures > 0 {
                return Err(format!(
                    "{label} in front of static files: {} answers, {} 2xx, {} failures",
                    report.answers, report.successes, report.failures
                )
                .into());
            }
            println!(
                "  round {}: {label:<20} {:>9.0} req/s  p99 {:>6.2} ms",
                round + 1,
                report.rate(),
                ms(report.latencies.p99())
            );
            reports[index].push(report);
        }
    }
    Ok(Some(
        proxies
            .iter()
            .zip(&reports)
            .map(|((label, _), reports)| FastFigures {
                label,
                rate: median(reports.iter().map(ClosedLoopReport::rate).collect()),
                p99: Duration::from_secs_f64(median(
                    reports
                        .iter()
                        .map(|r| r.latencies.p99().as_secs_f64())
                        .collect(),
                )),
            })
            .collect(),
    ))
}

fn fast_table(settings: &Settings, figures: &[FastFigures]) -> String {
    let base = &figures[0];
    let mut text = format!(
        "\nFast healthy upstream (nginx serving static files), closed loop, {} keep-alive \
         connections, {:.1} s per proxy, medians of {} rounds:\n\n\
         | proxy | req/s | p99 ms | throughput vs nginx plain | p99 vs nginx plain |\n\
         |---|---|---|---|---|\n",
        settings.fast_connections,
        settings.fast_measured.as_secs_f64(),
        settings.rounds
    );
    for figure in figures {
        text.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.1} % | {:.2}x |\n",
            figure.label,
            figure.rate,
            ms(figure.p99),
            100.0 * figure.rate / base.rate,
            figure.p99.as_secs_f64() / base.p99.as_secs_f64(),
        ));
    }
    text
}

/// `uptime`'s three load averages.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// What the peers say their versions are.
fn peer_versions(peers: &[Peer]) -> String {
    peers
        .iter()
        .filter_map(|peer| {
            let flag = match peer {
                Peer::Nginx => "-v",
                Peer::Varnish => "-V",
            };
            let output = Command::new(servers::find_program(peer.program())?)
                .arg(flag)
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&output.stderr).into_owned()
                + &String::from_utf8_lossy(&output.stdout);
            text.lines().next().map(|line| line.trim().to_string())
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A directory the peers' unprivileged workers can reach (nginx's workers
/// run as `nobody` when it is started as root).
fn bench_dir() -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("grace-outage-").tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

fn main() -> Result<()> {
    let settings = Settings::read()?;
    let load_before = load_average();
    println!(
        "outage bench{}: {:.0} requests/s open loop, phases {}, proxies {}; load average {load_before}",
        settings.bench.smoke_note(),
        settings.rate,
        settings
            .phases
            .iter()
            .map(|(phase, _)| format!(
                "{:.1}-{:.1} s {}",
                phase.start.as_secs_f64(),
                phase.end.as_secs_f64(),
                phase.name
            ))
            .collect::<Vec<_>>()
            .join(", "),
        settings
            .proxies
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", "),
    );
    let wanted: Vec<Peer> = settings.proxies.iter().filter_map(|p| p.peer()).collect();
    let install = if settings.bench.smoke {
        Install::Never
    } else {
        Install::WhenMissing
    };
    let peers = servers::available_peers(&wanted, install);
    let proxies: Vec<Proxy> = settings
        .proxies
        .iter()
        .copied()
        .filter(|proxy| proxy.peer().is_none_or(|peer| peers.contains(&peer)))
        .collect();
    let dir = bench_dir()?;
    let runtime = http_load::runtime()?;
    let upstream = DemoUpstream::start(dir.path())?;
    let logs_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("outage");
    fs::create_dir_all(&logs_dir)?;

    let mut runs = Vec::new();
    for connections in [Connections::KeepAlive, Connections::PerRequest] {
        for &proxy in &proxies {
            let run = run_outage(
                &settings,
                &runtime,
                &upstream,
                proxy,
                connections,
                dir.path(),
            )
            .map_err(|err| format!("{err}\n{}", upstream.stderr_tail()))?;
            let log = logs_dir.join(format!(
                "requests-{}-{}.csv",
                proxy.name(),
                if connections == Connections::KeepAlive {
                    "keepalive"
                } else {
                    "per-request"
                }
            ));
            write_log(&run, &log)?;
            let calls: Vec<String> = run.upstream_calls.iter().map(u64::to_string).collect();
            println!(
                "  {:<8} {:<22} {} requests, calls to upstream per phase {}; log {}",
                proxy.name(),
                connections.label(),
                run.samples.len(),
                calls.join("/"),
                log.display()
            );
            runs.push(run);
        }
    }

    let phases = settings.phases();
    let mut results = String::new();
    for connections in [Connections::KeepAlive, Connections::PerRequest] {
        let these: Vec<&ProxyRun> = runs
            .iter()
            .filter(|r| r.connections == connections)
            .collect();
        results.push_str(&format!(
            "\n### Outage, {}, {:.0} requests/s open loop\n",
            connections.label(),
            settings.rate
        ));
        results.push_str(&outage_report::phase_tables(&these, &phases));
    }
    let fast = fast_comparison(&settings, &runtime, &peers, dir.path())?;
    if let Some(figures) = &fast {
        results.push_str("\n### Price of the logic\n");
        results.push_str(&fast_table(&settings, figures));
    }
    let load_after = load_average();
    println!("{results}");
    println!("load average: before {load_before}, after {load_after}");

    let out_dir = if settings.bench.smoke || settings.phase_percent != 100 {
        logs_dir.clone()
    } else {
        PathBuf::from(RESULTS_DIR)
    };
    fs::create_dir_all(&out_dir)?;
    let svg = out_dir.join("outage.svg");
    let title = format!(
        "Upstream hangs at {:.0} s, refuses at {:.0} s, heals at {:.0} s; {:.0} requests/s open loop, same {KEYS} keys",
        phases[1].start.as_secs_f64(),
        phases[2].start.as_secs_f64(),
        phases[3].start.as_secs_f64(),
        settings.rate
    );
    outage_report::draw(&svg, &title, &runs, &phases)?;
    let header = format!(
        "# Outage bench results\n\nMade by `cargo bench --bench outage`{} on a {}-core machine; \
         load average (1, 5, 15 min) {load_before} before, {load_after} after. grace {}, {}.\n\
         Per-request logs: `{}`.\n",
        settings.bench.smoke_note(),
        thread::available_parallelism().map_or(0, |n| n.get()),
        env!("CARGO_PKG_VERSION"),
        peer_versions(&peers),
        logs_dir.display(),
    );
    let results_path = out_dir.join("outage-results.md");
    fs::write(&results_path, header + &results)?;
    println!("wrote {} and {}", svg.display(), results_path.display());
    Ok(())
}
