//! `grace demo-upstream`: the demo data over real HTTP, with faults on
//! demand.
//!
//! The gateway (`grace serve`) sits in front of real HTTP services; its
//! tests, benches and README walkthrough need one that they can start in a
//! second and make fail at will. This program is that service: the demo
//! data ([`crate::demo`]) on a main listener, and a control listener that
//! sets faults (refused connections, error statuses, hung requests,
//! latency, a failure rate) and reports what the main listener saw. It is
//! also the "upstream alone" baseline the gateway's throughput is measured
//! against, so a read takes no exclusive lock and allocates little.
//!
//! - [`api`]: routes, ids and answers (no I/O);
//! - [`faults`]: fault settings and the verdict on each request (no I/O);
//! - [`stats`]: the counters of `GET /stats`;
//! - [`server`]: the main listener;
//! - [`control`]: the control listener.

pub mod api;
pub mod control;
pub mod faults;
pub mod server;
pub mod stats;

use crate::demo::DemoData;
use api::OrderDesk;
use server::Upstream;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Where the demo API listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9001";
/// Runtime worker threads unless told otherwise.
pub const DEFAULT_WORKERS: usize = 2;
/// How often gathered log lines are written to stderr.
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Fault changes waiting for the main listener (the control API waits for
/// each to be in force, so few ever wait).
const FAULT_CHANGE_QUEUE: usize = 16;

/// The contract, shown by `grace demo-upstream --help`.
const CONTRACT: &str = "\
At start one line goes to stdout, then nothing else: the bound addresses,
  {\"listen\":\"127.0.0.1:9001\",\"control\":\"127.0.0.1:9002\"}
(with port 0 this is how to learn the real ports). Logs go to stderr.
SIGTERM/SIGINT: exit 0. A bad --fixtures file: exit 2; an address that
cannot be bound: exit 1.

Main listener (HTTP/1.1, keep-alive; JSON bodies):
  GET  /users/{id}                 200 the user; 404 {\"error\":\"not found\"}
  GET  /products/{id}              200 the product; 404
  GET  /products/{id}/reviews      200 its reviews; 404
  GET  /recommendations/{user_id}  200 recommended products
  GET  /search?q=TEXT              200 matching products; 400 without q
  POST /orders                     201 {\"order_id\":\"ord-...\",\"status\":\"created\"}
An id is the path segment percent-decoded: a JSON integer if it is a
canonical integer that fits i64 (123), else a JSON string (\"alice\", \"007\").
An order is a JSON object (else 400), created once per Idempotency-Key
header (none: a fresh key); a repeat answers the same order id, 201, with
Idempotent-Replayed: true. Other paths 404, a wrong method 405.

Control listener (never faulted):
  GET  /faults        the settings in force
  PUT  /faults        replace them; answered once in force (unknown field: 400)
  GET  /stats         {\"requests\",\"by_route\",\"in_flight\",\"hung\",
                       \"orders_created\",\"repeated_order_deliveries\"}
  POST /stats/reset   zero the counters
Settings, every field optional (defaults shown):
  {\"mode\":\"healthy\",\"error_status\":503,\"latency_ms\":0,\"failure_rate\":0.0,
   \"only\":null,\"seed\":RANDOM}
  mode refuse: the listening socket and its connections are closed
    (connects get ECONNREFUSED) until the mode changes;
  mode error: every request in scope is answered error_status;
  mode hang: every request in scope is read and held until the settings
    change, then answered under the new ones;
  latency_ms delays every answer in scope (injected failures too);
  failure_rate answers error_status to that share of requests in scope,
    drawn from seed (the same seed fails the same requests);
  only: a path prefix (\"/users\") limiting all but refuse to matching paths.";

/// Flags of `grace demo-upstream`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = CONTRACT)]
pub struct Args {
    /// Address to serve the demo API on (port 0: any free port).
    #[arg(long, env = "GRACE_DEMO_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Address of the control API (faults and stats) [default: the
    /// --listen address with its port + 1, or any free port if that is 0].
    #[arg(long, env = "GRACE_DEMO_CONTROL_LISTEN")]
    pub control_listen: Option<SocketAddr>,

    /// JSON file of the records to serve instead of the built-in data
    /// (`{"users": [...], "products": [...]}`, as the node's --fixtures).
    #[arg(long, env = "GRACE_DEMO_FIXTURES")]
    pub fixtures: Option<PathBuf>,

    /// Runtime worker threads.
    #[arg(long, env = "GRACE_DEMO_WORKERS", default_value_t = DEFAULT_WORKERS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub workers: usize,

    /// Log level on stderr (error, warn, info, debug, trace, or a
    /// RUST_LOG-style filter) [default: RUST_LOG if set, else info].
    #[arg(long, env = "GRACE_DEMO_LOG_LEVEL")]
    pub log_level: Option<String>,
}

impl Args {
    /// The control listener's address: as given, else beside `--listen`.
    fn control_address(&self) -> Result<SocketAddr, String> {
        if let Some(address) = self.control_listen {
            return Ok(address);
        }
        let port = match self.listen.port() {
            0 => 0,
            port => port.checked_add(1).ok_or_else(|| {
                format!(
                    "--listen port {port} has no next port for the control listener: \
                     give --control-listen"
                )
            })?,
        };
        Ok(SocketAddr::new(self.listen.ip(), port))
    }
}

/// Runs the demo upstream until SIGTERM/SIGINT.
pub fn run(args: Args) -> ExitCode {
    let data = match &args.fixtures {
        Some(path) => match DemoData::from_fixtures_file(path) {
            Ok(data) => data,
            Err(err) => {
                eprintln!("grace demo-upstream: {err}");
                return ExitCode::from(2);
            }
        },
        None => DemoData::builtin(),
    };
    let control_address = match args.control_address() {
        Ok(address) => address,
        Err(err) => {
            eprintln!("grace demo-upstream: {err}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(args.workers).enable_all();
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("grace demo-upstream: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let status = runtime.block_on(serve(args.listen, control_address, data));
    // Held requests and open connections end with the process.
    runtime.shutdown_background();
    status
}

/// Binds both listeners, says where they are, serves until a signal.
async fn serve(listen: SocketAddr, control_address: SocketAddr, data: DemoData) -> ExitCode {
    let mut terminate = signal(SignalKind::terminate());
    let mut interrupt = signal(SignalKind::interrupt());
    if let Err(err) = terminate.as_ref().and(interrupt.as_ref()) {
        tracing::warn!("cannot catch SIGTERM/SIGINT: {err}");
    }
    let (main_listener, control_listener) = match (
        TcpListener::bind(listen).await,
        TcpListener::bind(control_address).await,
    ) {
        (Ok(main), Ok(control)) => (main, control),
        (Err(err), _) => return cannot_listen("", listen, &err),
        (_, Err(err)) => return cannot_listen("control ", control_address, &err),
    };
    let (Ok(main_address), Ok(control_address)) =
        (main_listener.local_addr(), control_listener.local_addr())
    else {
        eprintln!("grace demo-upstream: the listeners have no addresses");
        return ExitCode::FAILURE;
    };
    let upstream = Arc::new(Upstream::new(data, OrderDesk::new(run_id())));
    let (changes, change_receiver) = tokio::sync::mpsc::channel(FAULT_CHANGE_QUEUE);
    tokio::spawn(server::serve_main(
        Arc::clone(&upstream),
        main_listener,
        change_receiver,
    ));
    tokio::spawn(control::serve_control(
        Arc::clone(&upstream),
        control_listener,
        changes,
    ));
    tokio::spawn(flush_logs());
    announce(main_address, control_address);
    tracing::info!("demo upstream on http://{main_address}, control on http://{control_address}");
    tokio::select! {
        () = received(&mut terminate) => tracing::info!("SIGTERM: exiting"),
        () = received(&mut interrupt) => tracing::info!("SIGINT: exiting"),
    }
    ExitCode::SUCCESS
}

/// Waits for the next `signal` (forever if it could not be caught).
async fn received(signal: &mut std::io::Result<Signal>) {
    match signal {
        Ok(signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

fn cannot_listen(which: &str, address: SocketAddr, err: &std::io::Error) -> ExitCode {
    eprintln!("grace demo-upstream: cannot {which}listen on {address}: {err}");
    ExitCode::FAILURE
}

/// The one line on stdout: where the listeners are.
fn announce(main_address: SocketAddr, control_address: SocketAddr) {
    #[derive(serde::Serialize)]
    struct Addresses {
        listen: SocketAddr,
        control: SocketAddr,
    }
    let line = serde_json::to_string(&Addresses {
        listen: main_address,
        control: control_address,
    })
    .expect("addresses serialize");
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        tracing::warn!("cannot write the addresses to stdout: {err}");
    }
}

/// Unique to this run (the start time and process id): keys invented for
/// orders without one never meet those of an earlier run.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("{nanos:x}-{}", std::process::id())
}

/// Log lines are gathered in blocks (see [`crate::diagnostics`]); a server
/// has no natural moment to write them, so they go out on a timer.
async fn flush_logs() {
    let mut ticks = tokio::time::interval(LOG_FLUSH_INTERVAL);
    loop {
        ticks.tick().await;
        crate::diagnostics::flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: Args,
    }

    fn args(flags: &[&str]) -> Args {
        let argv = std::iter::once("demo-upstream").chain(flags.iter().copied());
        Command::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn the_control_listener_defaults_to_the_next_port_or_any_port_beside_port_0() {
        let control = |flags: &[&str]| args(flags).control_address();
        assert_eq!(
            control(&["--listen", "127.0.0.1:9001"]),
            Ok("127.0.0.1:9002".parse().unwrap())
        );
        assert_eq!(
            control(&["--listen", "0.0.0.0:0"]),
            Ok("0.0.0.0:0".parse().unwrap())
        );
        assert_eq!(
            control(&["--listen", "127.0.0.1:1", "--control-listen", "127.0.0.1:7"]),
            Ok("127.0.0.1:7".parse().unwrap())
        );
        let err = control(&["--listen", "127.0.0.1:65535"]).unwrap_err();
        assert!(err.contains("--control-listen"), "{err}");
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let args = args(&[]);
        assert_eq!(args.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(args.workers, DEFAULT_WORKERS);
        assert_eq!(
            args.control_address(),
            Ok("127.0.0.1:9002".parse().unwrap())
        );
    }
}
