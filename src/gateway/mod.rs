//! Front door 2: `grace serve`, an HTTP gateway that keeps a real API
//! answering when the services behind it fail.
//!
//! The same core as the Maelstrom node decides everything; this module is
//! its HTTP runtime:
//!
//! - [`config`], [`routes`], [`cli`]: what to stand in front of, and how;
//! - [`exchange`]: the HTTP rules (headers, cache keys, answers), as plain
//!   functions;
//! - [`engine`]: the core's driver, one event at a time; [`driver`]: runs
//!   its steps in the tasks where the events happen;
//! - [`upstream`]: makes the core's calls (HTTP, or the demo in-process);
//!   [`pool`]: its keep-alive connections, driven by the calls' own tasks;
//! - [`commits`]: the journal's thread (a `202` waits for its commit);
//! - [`server`]: the public listener and its limits; [`admin`]: the admin
//!   listener; [`status`], [`metrics`]: what they show; [`dashboard`]: the
//!   admin listener's live page; [`cpu`]: auto mode's samples.
//!
//! `run` wires them: it reads the configuration, opens the journal, binds
//! both listeners (printing their addresses as one JSON line on stdout),
//! and serves until SIGTERM/SIGINT; then it stops accepting, lets requests
//! in flight finish (up to the grace period), commits the journal, and
//! exits 0.

pub mod admin;
pub mod cli;
pub mod commits;
pub mod config;
pub mod cpu;
pub mod dashboard;
pub mod driver;
pub mod engine;
pub mod exchange;
pub mod metrics;
pub mod pool;
pub mod routes;
pub mod server;
pub mod status;
pub mod upstream;

use crate::core::queue::journal::{self, UnjournaledOrders};
use crate::core::{CoreConfig, ServiceSpec};
use crate::demo::DemoData;
use cli::ServeArgs;
use commits::Commits;
use config::GatewayConfig;
use driver::Driver;
use engine::Engine;
use exchange::ClientAddress;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::Metrics;
use server::{Limits, Public};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use upstream::Upstreams;

/// Longest a stopping gateway waits for its last journal commit.
const JOURNAL_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `grace serve` until SIGTERM/SIGINT.
pub fn run(args: ServeArgs) -> ExitCode {
    let defaults = ServiceSpec {
        name: String::new(),
        ..args.policies.service_defaults()
    };
    let config = match &args.config {
        Some(path) => match GatewayConfig::load(path, &defaults) {
            Ok(config) => config,
            Err(err) => {
                eprintln!("grace serve: {err}");
                return ExitCode::from(2);
            }
        },
        None => GatewayConfig::demo(&defaults),
    };
    if args.admin_token.as_deref().is_some_and(str::is_empty) {
        eprintln!(
            "grace serve: --admin-token (GRACE_ADMIN_TOKEN) is empty: no request could match it"
        );
        return ExitCode::from(2);
    }
    if !args.admin_listen.ip().is_loopback() && args.admin_token.is_none() {
        eprintln!(
            "grace serve: --admin-listen {} is not a loopback address: set --admin-token (GRACE_ADMIN_TOKEN) \
             to expose the admin routes there",
            args.admin_listen
        );
        return ExitCode::from(2);
    }
    // Port 0 asks the OS for a free port: two of those never collide.
    if args.admin_listen == args.listen && args.listen.port() != 0 {
        eprintln!(
            "grace serve: --listen and --admin-listen must differ: admin routes are never public"
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers as usize)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("grace serve: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let status = runtime.block_on(serve(args, config));
    runtime.shutdown_timeout(Duration::from_secs(1));
    status
}

async fn serve(args: ServeArgs, config: GatewayConfig) -> ExitCode {
    let (public_listener, admin_listener) = match (
        TcpListener::bind(args.listen).await,
        TcpListener::bind(args.admin_listen).await,
    ) {
        (Ok(public), Ok(admin)) => (public, admin),
        (Err(err), _) => {
            eprintln!("grace serve: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
        (_, Err(err)) => {
            eprintln!("grace serve: cannot listen on {}: {err}", args.admin_listen);
            return ExitCode::FAILURE;
        }
    };
    let addresses = (
        public_listener.local_addr().unwrap_or(args.listen),
        admin_listener.local_addr().unwrap_or(args.admin_listen),
    );
    let policies = &args.policies;
    let opened = journal::open_for(
        &policies.data_dir,
        &args.node_id,
        policies.order_history,
        UnjournaledOrders::when_volatile(policies.volatile_queue),
    );
    let (failed_tx, mut failed) = watch::channel(None::<String>);
    let commits = opened
        .journal
        .map(|journal| Commits::start(journal, failed_tx));
    let metrics = Arc::new(Metrics::new(
        &config
            .routes
            .iter()
            .map(|route| format!("{} {}", route.method, route.path))
            .collect::<Vec<_>>(),
        &config
            .services
            .iter()
            .map(|(name, _)| name.clone())
            .collect::<Vec<_>>(),
    ));
    let core_config = CoreConfig {
        cache_capacity: policies.cache_capacity,
        modes: config.modes.clone(),
        queue: policies.queue(),
        seed: policies.seed.unwrap_or_else(|| {
            u64::from_le_bytes(
                exchange::random_id().as_bytes()[..8]
                    .try_into()
                    .expect("eight bytes"),
            )
        }),
        kept_copy: exchange::kept_copy,
        ..CoreConfig::new(Engine::services(&config))
    };
    let mut engine = Engine::new(
        &config,
        core_config,
        Upstreams::new(
            config.services.iter().map(|(_, service)| &service.upstream),
            DemoData::builtin(),
        ),
        Arc::clone(&metrics),
    );
    engine.recover(opened.info, opened.recovered, commits);
    let driver = Driver::new(engine);
    let (stop_timer, timer_stop) = watch::channel(false);
    let timer = tokio::spawn(Arc::clone(&driver).keep_time(timer_stop));
    let sampler = tokio::spawn(cpu::sample(
        Duration::from_millis(args.cpu_sample_ms),
        Arc::clone(&driver),
    ));
    let limits = Limits {
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
        body_read_timeout: Duration::from_millis(args.body_read_timeout_ms),
        max_header_bytes: args.max_header_bytes as usize,
        max_body_bytes: args.max_body_bytes as usize,
        max_in_flight: args.max_in_flight as usize,
    };
    let public = Arc::new(Public::new(
        &config,
        Arc::clone(&driver),
        Arc::clone(&metrics),
        limits,
    ));
    let (stop_tx, stop) = watch::channel(false);
    let admin = Arc::new(admin::Admin::new(
        Arc::clone(&driver),
        Arc::clone(&metrics),
        args.admin_token.clone(),
        stop.clone(),
    ));
    let public_connections = tokio::spawn(accept(
        public_listener,
        limits,
        stop.clone(),
        move |peer: SocketAddr| {
            let public = Arc::clone(&public);
            let client = ClientAddress::new(peer.ip());
            move |request| Arc::clone(&public).handle(client.clone(), request)
        },
    ));
    let admin_connections = tokio::spawn(accept(admin_listener, limits, stop.clone(), move |_| {
        let admin = Arc::clone(&admin);
        move |request| Arc::clone(&admin).handle(request)
    }));
    println!(
        "{}",
        serde_json::json!({ "listen": addresses.0.to_string(), "admin": addresses.1.to_string() })
    );
    tracing::info!(listen = %addresses.0, admin = %addresses.1, "grace serve is listening");
    // Without a journal (none could be opened) there is no commit to fail:
    // the sender is gone from the start, and only a signal stops grace.
    let journal_failed = tokio::select! {
        () = shutdown_signal() => false,
        Ok(_) = failed.wait_for(Option::is_some) => true,
    };
    tracing::info!("stopping: no new connections; finishing the requests in flight");
    let _ = stop_tx.send(true);
    let grace = Duration::from_millis(args.shutdown_grace_ms);
    let drained = tokio::time::timeout(grace, async {
        for connections in [public_connections, admin_connections] {
            if let Ok(mut connections) = connections.await {
                while connections.join_next().await.is_some() {}
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_ms = args.shutdown_grace_ms,
            "requests still in flight after the grace period"
        );
    }
    sampler.abort();
    let _ = sampler.await;
    // Every request is answered (or the grace period is over): the engine
    // commits what is left and closes the journal.
    let _ = stop_timer.send(true);
    let _ = timer.await;
    if tokio::time::timeout(JOURNAL_CLOSE_TIMEOUT, driver.finish())
        .await
        .is_err()
    {
        tracing::error!("the journal did not close in time; pending rows may be lost");
    }
    if journal_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Accepts connections on `listener` until `stop`, serving each with the
/// request handler `connected` makes for its peer, under `limits`; returns
/// the connections still open.
async fn accept<C, H, F, B>(
    listener: TcpListener,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    connected: C,
) -> JoinSet<()>
where
    C: Fn(SocketAddr) -> H,
    H: Fn(Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopping| *stopping) => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handle = connected(peer);
        let mut stop = stop.clone();
        connections.spawn(async move {
            let service = service_fn(handle);
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let stopping = tokio::select! {
                // The connection is what wakes this task; the stop, once.
                biased;
                _ = connection.as_mut() => false,
                stopped = stop.wait_for(|stopping| *stopping) => stopped.is_ok(),
            };
            if stopping {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        });
    }
    connections
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot catch SIGTERM/SIGINT; stopping on ctrl-c only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The journal a gateway's node id names under `data_dir` (for tests and
/// operators).
pub fn journal_path(data_dir: &std::path::Path, node_id: &str) -> std::path::PathBuf {
    journal::journal_path(data_dir, node_id)
}
