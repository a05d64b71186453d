//! Command-line flags (each also read from a `GRACE_*` environment variable),
//! with their defaults taken from the modules that own them.
//!
//! [`Policies`] are the flags both front doors share: breakers, the cache,
//! the queue and its journal, logging. [`Config`] adds the Maelstrom node's
//! own; `grace serve` adds the gateway's (in `gateway::cli`).

use crate::core::breaker::{self, BreakerConfig, SlidingWindow};
use crate::core::cache;
use crate::core::queue::journal::DEFAULT_DATA_DIR;
use crate::core::queue::{self, QueueConfig};
use crate::core::service::{self, ServiceSpec};
use crate::maelstrom::node::NodeConfig;
use crate::protocol::framing::DEFAULT_MAX_MESSAGE_BYTES;
use clap::{Args, Parser};
use std::path::PathBuf;
use std::time::Duration;

const fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

// Bounds of the flags that size memory or time. A value beyond them is
// refused at start (exit 2, the reason on stderr) rather than failing later:
// an allocation that aborts, or a deadline that overflows the clock.

/// Longest wait a time flag accepts: one week.
pub const MAX_WAIT_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Oldest copy the cache may be told to serve: one year.
pub const MAX_STALE_MS: u64 = 365 * 24 * 60 * 60 * 1000;
/// Most records the cache, or the order history, may be told to hold.
/// Memory is taken as records arrive, so this bounds what a typo can do.
pub const MAX_RECORDS: u64 = 100_000_000;
/// Largest message size limit: 1 GiB.
pub const MAX_MESSAGE_BYTES_LIMIT: u64 = 1 << 30;

/// A `u64` flag in milliseconds, at most [`MAX_WAIT_MS`].
fn wait_ms() -> clap::builder::RangedU64ValueParser<u64> {
    clap::builder::RangedU64ValueParser::new().range(0..=MAX_WAIT_MS)
}

/// A `usize` flag within `range`.
fn count_in(range: std::ops::RangeInclusive<u64>) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(range)
}

/// A percentage from 0 to 100.
fn percent(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|err| format!("{err}"))?;
    if (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not a percentage from 0 to 100"))
    }
}

/// The policies every front door applies: breakers, the fallback cache,
/// the durable queue, logging.
#[derive(Debug, Clone, Args)]
pub struct Policies {
    /// Consecutive failures that open a service's circuit breaker.
    #[arg(long, env = "GRACE_FAILURE_THRESHOLD", default_value_t = breaker::DEFAULT_FAILURE_THRESHOLD,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub failure_threshold: u32,

    /// How long an open breaker waits before letting a probe call through (ms).
    #[arg(long, env = "GRACE_OPEN_TIMEOUT_MS", default_value_t = millis(breaker::DEFAULT_OPEN_TIMEOUT),
          value_parser = wait_ms())]
    pub open_timeout_ms: u64,

    /// Cap on the open wait, which doubles after each failed probe (ms).
    #[arg(long, env = "GRACE_OPEN_TIMEOUT_MAX_MS", default_value_t = millis(breaker::DEFAULT_OPEN_TIMEOUT_MAX),
          value_parser = wait_ms())]
    pub open_timeout_max_ms: u64,

    /// Also open a breaker when at least this percentage of the calls in its
    /// sliding window failed (once --minimum-calls were seen) [default: off].
    #[arg(long, env = "GRACE_FAILURE_RATE_THRESHOLD", value_parser = percent)]
    pub failure_rate_threshold: Option<f64>,

    /// Also open a breaker when at least this percentage of the calls in its
    /// sliding window were slower than --slow-call-duration-ms, even if all
    /// succeeded [default: off].
    #[arg(long, env = "GRACE_SLOW_CALL_RATE_THRESHOLD", value_parser = percent)]
    pub slow_call_rate_threshold: Option<f64>,

    /// A call slower than this counts as slow (ms).
    #[arg(long, env = "GRACE_SLOW_CALL_DURATION_MS", default_value_t = 60_000, value_parser = wait_ms())]
    pub slow_call_duration_ms: u64,

    /// What the rates are measured over: the last N calls (`count`) or the
    /// calls of the last N seconds (`time`).
    #[arg(long, env = "GRACE_SLIDING_WINDOW", default_value = "count", value_parser = ["count", "time"])]
    pub sliding_window: String,

    /// N: calls, or seconds, in the sliding window.
    #[arg(long, env = "GRACE_SLIDING_WINDOW_SIZE", default_value_t = breaker::DEFAULT_SLIDING_WINDOW_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub sliding_window_size: u32,

    /// Calls the window must hold before a rate can open the breaker.
    #[arg(long, env = "GRACE_MINIMUM_CALLS", default_value_t = breaker::DEFAULT_MINIMUM_CALLS,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub minimum_calls: u32,

    /// Probes a half-open breaker lets through at once; every other request
    /// is answered as if it were open.
    #[arg(long, env = "GRACE_PERMITTED_CALLS_IN_HALF_OPEN",
          default_value_t = breaker::DEFAULT_PERMITTED_CALLS_IN_HALF_OPEN,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub permitted_calls_in_half_open: u32,

    /// Longest a breaker may stay half-open without a decision before it
    /// opens again (ms; 0: as long as its probes take, each bounded by the
    /// call timeout).
    #[arg(long, env = "GRACE_MAX_WAIT_IN_HALF_OPEN_MS", default_value_t = 0, value_parser = wait_ms())]
    pub max_wait_in_half_open_ms: u64,

    /// How long a call to a service may take before it counts as failed (ms).
    #[arg(long, env = "GRACE_CALL_TIMEOUT_MS", default_value_t = millis(service::DEFAULT_CALL_TIMEOUT),
          value_parser = clap::value_parser!(u64).range(1..=MAX_WAIT_MS))]
    pub call_timeout_ms: u64,

    /// Records kept in the fallback cache; the least recently used go first.
    #[arg(long, env = "GRACE_CACHE_CAPACITY", default_value_t = cache::DEFAULT_CAPACITY,
          value_parser = count_in(1..=MAX_RECORDS))]
    pub cache_capacity: usize,

    /// Oldest copy the fallback cache will still serve (ms; default 24 h).
    #[arg(long, env = "GRACE_CACHE_MAX_STALE_MS", default_value_t = millis(service::DEFAULT_MAX_STALE),
          value_parser = clap::value_parser!(u64).range(0..=MAX_STALE_MS))]
    pub cache_max_stale_ms: u64,

    /// Directory of the durable queue's journals (one per node id).
    #[arg(long, env = "GRACE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// When no journal can be written (unwritable data dir, journal locked by
    /// another process), keep writes the service cannot take in memory,
    /// answering "queued" with "durable": false; they are lost at exit.
    /// Without it they are refused (code 11, or 503).
    #[arg(long, env = "GRACE_VOLATILE_QUEUE")]
    pub volatile_queue: bool,

    /// First retry delay for a queued request (ms); doubles per attempt, with jitter.
    #[arg(long, env = "GRACE_RETRY_BASE_MS", default_value_t = millis(queue::DEFAULT_RETRY_BASE),
          value_parser = wait_ms())]
    pub retry_base_ms: u64,

    /// Cap on the retry delay (ms).
    #[arg(long, env = "GRACE_RETRY_MAX_MS", default_value_t = millis(queue::DEFAULT_RETRY_MAX),
          value_parser = wait_ms())]
    pub retry_max_ms: u64,

    /// Failed deliveries after which a queued request moves to the dead-letter list.
    #[arg(long, env = "GRACE_MAX_ATTEMPTS", default_value_t = queue::DEFAULT_MAX_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,

    /// Settled writes remembered (for idempotency and get_order) before compaction.
    #[arg(long, env = "GRACE_ORDER_HISTORY", default_value_t = queue::DEFAULT_ORDER_HISTORY,
          value_parser = count_in(0..=MAX_RECORDS))]
    pub order_history: usize,

    /// Commit the journal after every request instead of once per burst
    /// (slower; exists to measure what group commit saves).
    #[arg(long, env = "GRACE_COMMIT_PER_REQUEST")]
    pub commit_per_request: bool,

    /// Seed for the retry jitter [default: none, seeded from the clock].
    #[arg(long, env = "GRACE_SEED")]
    pub seed: Option<u64>,

    /// Log level on stderr (error, warn, info, debug, trace, or a RUST_LOG-style
    /// filter) [default: RUST_LOG if set, else info].
    #[arg(long, env = "GRACE_LOG_LEVEL")]
    pub log_level: Option<String>,
}

impl Policies {
    /// Every service's policies, before a configuration file overrides them.
    pub fn service_defaults(&self) -> ServiceSpec {
        ServiceSpec {
            name: String::new(),
            timeout: Duration::from_millis(self.call_timeout_ms),
            failure_statuses: service::DEFAULT_FAILURE_STATUSES.to_vec(),
            breaker: self.breaker(),
            max_stale: Duration::from_millis(self.cache_max_stale_ms),
        }
    }

    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: Some(self.failure_threshold),
            open_timeout: Duration::from_millis(self.open_timeout_ms),
            open_timeout_max: Duration::from_millis(
                self.open_timeout_max_ms.max(self.open_timeout_ms),
            ),
            failure_rate_threshold: self.failure_rate_threshold,
            slow_call_rate_threshold: self.slow_call_rate_threshold,
            slow_call_duration: Duration::from_millis(self.slow_call_duration_ms),
            sliding_window: match self.sliding_window.as_str() {
                "time" => SlidingWindow::Time,
                _ => SlidingWindow::Count,
            },
            sliding_window_size: self.sliding_window_size,
            minimum_calls: self.minimum_calls,
            permitted_calls_in_half_open: self.permitted_calls_in_half_open,
            max_wait_in_half_open: (self.max_wait_in_half_open_ms > 0)
                .then(|| Duration::from_millis(self.max_wait_in_half_open_ms)),
        }
    }

    pub fn queue(&self) -> QueueConfig {
        QueueConfig {
            retry_base: Duration::from_millis(self.retry_base_ms),
            retry_max: Duration::from_millis(self.retry_max_ms.max(self.retry_base_ms)),
            max_attempts: self.max_attempts,
            order_history: self.order_history,
        }
    }
}

/// grace: a Maelstrom node that keeps answering when the services behind it fail.
///
/// Reads JSON messages on stdin (one per line, or pretty-printed), writes one
/// JSON reply line per request on stdout, logs to stderr. Exits 0 at the end
/// of input or on SIGTERM/SIGINT.
#[derive(Debug, Clone, Parser)]
#[command(version, about, long_about)]
pub struct Config {
    #[command(flatten)]
    pub policies: Policies,

    /// Fixture records replacing the demo data: {"users": [...], "products": [...]}
    /// [default: none, the built-in demo data answers every id].
    #[arg(long, env = "GRACE_FIXTURES")]
    pub fixtures: Option<PathBuf>,

    /// Node id that names the journal, known before any message arrives.
    /// Without it the first request names it (a line that is not a request,
    /// one that cannot be answered, names nothing): `init`'s node_id, else
    /// the request's `dest`, else "grace" [default: none].
    #[arg(long, env = "GRACE_NODE_ID")]
    pub node_id: Option<String>,

    /// Largest message accepted (bytes); longer ones are skipped with a log line.
    #[arg(long, env = "GRACE_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES,
          value_parser = count_in(1..=MAX_MESSAGE_BYTES_LIMIT))]
    pub max_message_bytes: usize,
}

impl Config {
    /// The node's share of the configuration.
    pub fn node_config(&self, seed: u64) -> NodeConfig {
        NodeConfig {
            service: self.policies.service_defaults(),
            cache_capacity: self.policies.cache_capacity,
            queue: self.policies.queue(),
            seed,
        }
    }
}
