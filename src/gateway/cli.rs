//! The flags of `grace serve` (each also a `GRACE_*` environment variable):
//! the policies every front door shares, where to listen, the
//! configuration file, and the limits clients are held to.

use crate::config::Policies;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of `grace serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub policies: Policies,

    /// Where clients connect.
    #[arg(long, env = "GRACE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where the admin routes are served (status, modes, kill switches,
    /// queue, metrics, dashboard). An address that is not loopback needs
    /// --admin-token.
    #[arg(long, env = "GRACE_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,

    /// The configuration file (TOML: services, routes, modes) [default:
    /// none, the built-in demo services, answered in-process].
    #[arg(long, env = "GRACE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Every admin request must carry `Authorization: Bearer <token>`
    /// [default: none, admin open on loopback only].
    #[arg(long, env = "GRACE_ADMIN_TOKEN")]
    pub admin_token: Option<String>,

    /// Names the queue's journal in --data-dir.
    #[arg(long, env = "GRACE_NODE_ID", default_value = "gateway")]
    pub node_id: String,

    /// A client that has not sent its request headers by then is dropped (ms).
    #[arg(long, env = "GRACE_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=crate::config::MAX_WAIT_MS))]
    pub header_read_timeout_ms: u64,

    /// A client that has not sent its whole request body by then, once its
    /// headers are in, is answered 408 and dropped (ms).
    #[arg(long, env = "GRACE_BODY_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=crate::config::MAX_WAIT_MS))]
    pub body_read_timeout_ms: u64,

    /// Largest request head (request line and headers) accepted; beyond it, 431.
    #[arg(long, env = "GRACE_MAX_HEADER_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u64).range(8192..=1_048_576))]
    pub max_header_bytes: u64,

    /// Largest request body accepted; beyond it, 413.
    #[arg(long, env = "GRACE_MAX_BODY_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(0..=crate::config::MAX_MESSAGE_BYTES_LIMIT))]
    pub max_body_bytes: u64,

    /// Requests handled at once; beyond it, 503 with Retry-After at once.
    #[arg(long, env = "GRACE_MAX_IN_FLIGHT", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_in_flight: u64,

    /// On SIGTERM/SIGINT, how long requests in flight may take to finish (ms).
    #[arg(long, env = "GRACE_SHUTDOWN_GRACE_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=crate::config::MAX_WAIT_MS))]
    pub shutdown_grace_ms: u64,

    /// How often auto mode samples the machine's CPU use (ms).
    #[arg(long, env = "GRACE_CPU_SAMPLE_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(100..=crate::config::MAX_WAIT_MS))]
    pub cpu_sample_ms: u64,

    /// Runtime worker threads.
    #[arg(long, env = "GRACE_WORKERS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub workers: u64,
}
