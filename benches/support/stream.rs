//! Deterministic request streams for grace's benches.
//!
//! Each function writes Maelstrom messages, one compact JSON object per line,
//! addressed from `client` to `api`, with `msg_id` counting up from 1. The same
//! seed always gives the same stream, so runs and binaries can be compared.
//! [`StreamFile`] writes a stream to a file, the form the benches feed to a
//! binary.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

/// Share of messages, in percent, that are `set_mode`; the rest are reads,
/// split evenly between `get_user` and `get_product`.
const SET_MODE_PERCENT: u32 = 10;

/// Share of reads, in percent, that carry a fault flag.
const FAULT_PERCENT: u32 = 3;

/// The largest `force_failures` a faulty read asks for: a little above grace's
/// default failure threshold (5), so some faults open a breaker and some don't.
const MAX_FORCED_FAILURES: u32 = 6;

/// Which ids the requests name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdSpace {
    /// Every message names a new id (its own `msg_id`): a million messages
    /// touch a million ids, the worst case for anything that remembers ids.
    Distinct,
    /// Ids are drawn from `1..=count`: a small, hot working set.
    Hot { count: u64 },
}

impl IdSpace {
    /// The hot working set the benches use by default: well inside the
    /// 1..=1000 users and products grace warms its fallback cache with.
    pub const HOT: IdSpace = IdSpace::Hot { count: 100 };

    /// Parses `distinct` or `hot` (the bench's `GRACE_BENCH_IDS` values).
    pub fn parse(name: &str) -> Option<IdSpace> {
        match name {
            "distinct" => Some(IdSpace::Distinct),
            "hot" => Some(IdSpace::HOT),
            _ => None,
        }
    }

    /// The id for message `msg_id`.
    fn pick(self, rng: &mut fastrand::Rng, msg_id: u64) -> u64 {
        match self {
            IdSpace::Distinct => msg_id,
            IdSpace::Hot { count } => rng.u64(1..=count),
        }
    }
}

impl fmt::Display for IdSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdSpace::Distinct => write!(f, "distinct"),
            IdSpace::Hot { count } => write!(f, "hot (1..={count})"),
        }
    }
}

/// Writes `messages` mixed requests: about 45 % `get_user`, 45 % `get_product`
/// and 10 % `set_mode` (half explicit modes, half `auto`, all with a
/// `cpu_usage`), with about 3 % of the reads carrying `force_failures: 1..=6`
/// or `service_unavailable: true`.
pub fn write_mixed_stream(
    mut w: impl Write,
    messages: u64,
    ids: IdSpace,
    seed: u64,
) -> io::Result<()> {
    const EXPLICIT_MODES: [&str; 3] = ["normal", "degraded", "critical"];
    let mut rng = fastrand::Rng::with_seed(seed);
    for msg_id in 1..=messages {
        write!(w, r#"{{"src":"client","dest":"api","body":{{"type":"#)?;
        if rng.u32(..100) < SET_MODE_PERCENT {
            let mode = if rng.bool() {
                EXPLICIT_MODES[rng.usize(..EXPLICIT_MODES.len())]
            } else {
                "auto"
            };
            let cpu_usage = rng.u32(0..=100);
            write!(
                w,
                r#""set_mode","msg_id":{msg_id},"mode":"{mode}","cpu_usage":{cpu_usage}"#
            )?;
        } else {
            let (kind, id_key) = if rng.bool() {
                ("get_user", "user_id")
            } else {
                ("get_product", "product_id")
            };
            let id = ids.pick(&mut rng, msg_id);
            write!(w, r#""{kind}","msg_id":{msg_id},"{id_key}":{id}"#)?;
            if rng.u32(..100) < FAULT_PERCENT {
                if rng.bool() {
                    let failures = rng.u32(1..=MAX_FORCED_FAILURES);
                    write!(w, r#","force_failures":{failures}"#)?;
                } else {
                    write!(w, r#","service_unavailable":true"#)?;
                }
            }
        }
        writeln!(w, "}}}}")?;
    }
    w.flush()
}

/// Writes `messages` `create_order` requests for one unit of a product each,
/// all with `service_unavailable: true`, so every order has to be queued.
pub fn write_order_stream(
    mut w: impl Write,
    messages: u64,
    ids: IdSpace,
    seed: u64,
) -> io::Result<()> {
    let mut rng = fastrand::Rng::with_seed(seed);
    for msg_id in 1..=messages {
        let user_id = ids.pick(&mut rng, msg_id);
        let product_id = ids.pick(&mut rng, msg_id);
        writeln!(
            w,
            r#"{{"src":"client","dest":"api","body":{{"type":"create_order","msg_id":{msg_id},"order":{{"user_id":{user_id},"product_id":{product_id},"quantity":1}},"service_unavailable":true}}}}"#
        )?;
    }
    w.flush()
}

/// A request stream written to a file, to be fed to a binary's stdin.
///
/// The benches time the binary, not the generator: each stream is written
/// once, before any measured run, and every run reads the same file.
pub struct StreamFile {
    pub path: PathBuf,
    /// Requests in the file, so one reply is expected for each.
    pub messages: u64,
}

impl StreamFile {
    /// Writes `messages` mixed requests (see [`write_mixed_stream`]) to `path`.
    pub fn mixed(path: PathBuf, messages: u64, ids: IdSpace, seed: u64) -> io::Result<StreamFile> {
        write_mixed_stream(BufWriter::new(File::create(&path)?), messages, ids, seed)?;
        Ok(StreamFile { path, messages })
    }

    /// Writes a `set_service_health` that takes the order service down, then
    /// `orders` orders with distinct ids (see [`write_order_stream`]) to
    /// `path`: every order has to be queued durably, whichever way grace
    /// checks for the outage.
    pub fn orders(path: PathBuf, orders: u64, seed: u64) -> io::Result<StreamFile> {
        let mut out = BufWriter::new(File::create(&path)?);
        writeln!(
            out,
            r#"{{"src":"client","dest":"api","body":{{"type":"set_service_health","msg_id":0,"service":"order","available":false}}}}"#
        )?;
        write_order_stream(out, orders, IdSpace::Distinct, seed)?;
        Ok(StreamFile {
            path,
            messages: orders + 1,
        })
    }

    /// The file's size in MB, for the bench's first line.
    pub fn megabytes(&self) -> io::Result<f64> {
        Ok(fs::metadata(&self.path)?.len() as f64 / 1e6)
    }
}
