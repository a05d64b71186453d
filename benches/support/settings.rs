//! The environment knobs grace's benches share.
//!
//! Every bench reads its sizes, rounds, seed and extra grace flags from
//! environment variables, and runs small when started by `cargo test
//! --benches` rather than `cargo bench`. These helpers read them the same way
//! in every bench, so `GRACE_BENCH_ROUNDS=3` or `1_000_000` means the same
//! thing everywhere and a bad value names the variable it came from.

use std::env;

use super::Result;

/// Whether the bench runs full size (`cargo bench`) or as a smoke test
/// (`cargo test --benches`), which decides the defaults of its knobs.
pub struct BenchEnv {
    /// A smoke run: small sizes and one round, unless a variable says otherwise.
    pub smoke: bool,
}

impl BenchEnv {
    /// Reads how the bench was started: `cargo bench` passes `--bench`,
    /// `cargo test --benches` does not.
    pub fn read() -> BenchEnv {
        BenchEnv {
            smoke: !env::args().any(|arg| arg == "--bench"),
        }
    }

    /// The count in the variable `name` when it is set, else `smoke` in a
    /// smoke run and `full` in a full run.
    pub fn count(&self, name: &str, full: u64, smoke: u64) -> Result<u64> {
        Ok(count(name)?.unwrap_or(if self.smoke { smoke } else { full }))
    }

    /// Measured rounds: `GRACE_BENCH_ROUNDS` when set, else 1 in a smoke run
    /// and `full` in a full run. A bench needs at least one round to report.
    pub fn rounds(&self, full: usize) -> Result<usize> {
        let rounds = self.count("GRACE_BENCH_ROUNDS", full as u64, 1)? as usize;
        if rounds == 0 {
            return Err("GRACE_BENCH_ROUNDS must be at least 1".into());
        }
        Ok(rounds)
    }

    /// What a bench's first line adds to say its figures come from a smoke run.
    pub fn smoke_note(&self) -> &'static str {
        if self.smoke { " (smoke run)" } else { "" }
    }
}

/// The count in the variable `name`, or `None` when it is not set.
/// Underscores are allowed as separators (`1_000_000`), as in Rust literals.
pub fn count(name: &str) -> Result<Option<u64>> {
    match env::var(name) {
        Ok(value) => Ok(Some(parse_count(name, &value)?)),
        Err(_) => Ok(None),
    }
}

/// Parses one count of the variable `name`; the error names the variable.
pub fn parse_count(name: &str, value: &str) -> Result<u64> {
    Ok(value
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|err| format!("{name}={value:?}: {err}"))?)
}

/// The seed of the request streams: `GRACE_BENCH_SEED` when set, else
/// `default`. The same seed gives the same stream, so runs can be compared.
pub fn seed(default: u64) -> Result<u64> {
    Ok(count("GRACE_BENCH_SEED")?.unwrap_or(default))
}

/// Extra flags for grace from `GRACE_BENCH_ARGS`, split on whitespace (none
/// when unset), so a bench can measure grace under other settings.
pub fn grace_args() -> Vec<String> {
    env::var("GRACE_BENCH_ARGS")
        .map(|args| args.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}
