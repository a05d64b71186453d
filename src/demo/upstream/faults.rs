//! The faults the demo upstream is told to show, and what they mean for one
//! request.
//!
//! The gateway in front of the upstream is tested against the ways real
//! services fail: gone (connections refused), failing (an error status),
//! stuck (a request accepted and never answered), slow, and failing now and
//! then. An operator or a test sets them through the control listener; this
//! module holds the settings, checks what the control API is given, and
//! decides for each request, without doing any I/O, whether it is answered,
//! failed or held. The failure draws are a pure function of the seed and the
//! request's rank, so a run with a seed fails the same requests every time.

use crate::config::MAX_WAIT_MS;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The status an injected failure answers unless told otherwise.
pub const DEFAULT_ERROR_STATUS: u16 = 503;
/// Longest latency the control API accepts (the node's bound on waits).
pub const MAX_LATENCY_MS: u64 = MAX_WAIT_MS;

/// How the main listener behaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every request is answered (subject to latency and the failure rate).
    #[default]
    Healthy,
    /// The listening socket is closed: connects are refused, and open
    /// connections are closed.
    Refuse,
    /// Every request in scope is answered `error_status` at once.
    Error,
    /// Every request in scope is read and held, unanswered, until the
    /// settings change.
    Hang,
}

/// The fault settings, as `GET /faults` shows them and `PUT /faults` sets
/// them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Faults {
    pub mode: Mode,
    /// The status of injected failures (`error` mode and the failure rate).
    pub error_status: u16,
    /// Delay before every answer in scope.
    pub latency_ms: u64,
    /// Share of requests in scope (0..=1) answered `error_status`.
    pub failure_rate: f64,
    /// Path prefix the faults apply to (`None`: every path); `refuse` is the
    /// whole listener whatever this says.
    pub only: Option<String>,
    /// Seed of the failure draws: given, or chosen at random and shown so
    /// that the run can be repeated.
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            mode: Mode::Healthy,
            error_status: DEFAULT_ERROR_STATUS,
            latency_ms: 0,
            failure_rate: 0.0,
            only: None,
            seed: 0,
        }
    }
}

impl Faults {
    /// Parses a `PUT /faults` body: a JSON object whose fields are all
    /// optional (absent ones take their defaults) and whose unknown fields
    /// are refused. `random_seed` gives the seed when the body has none.
    pub fn from_json(body: &[u8], random_seed: impl FnOnce() -> u64) -> Result<Faults, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Settings {
            mode: Option<Mode>,
            error_status: Option<u16>,
            latency_ms: Option<u64>,
            failure_rate: Option<f64>,
            only: Option<String>,
            seed: Option<u64>,
        }
        let settings: Settings = serde_json::from_slice(body).map_err(|err| err.to_string())?;
        let defaults = Faults::default();
        let faults = Faults {
            mode: settings.mode.unwrap_or(defaults.mode),
            error_status: settings.error_status.unwrap_or(defaults.error_status),
            latency_ms: settings.latency_ms.unwrap_or(defaults.latency_ms),
            failure_rate: settings.failure_rate.unwrap_or(defaults.failure_rate),
            only: settings.only,
            seed: settings.seed.unwrap_or_else(random_seed),
        };
        faults.validate()?;
        Ok(faults)
    }

    fn validate(&self) -> Result<(), String> {
        if !(400..=599).contains(&self.error_status) {
            return Err(format!(
                "error_status must be an error status (400..=599), not {}",
                self.error_status
            ));
        }
        if self.latency_ms > MAX_LATENCY_MS {
            return Err(format!(
                "latency_ms must be at most {MAX_LATENCY_MS} (one week), not {}",
                self.latency_ms
            ));
        }
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err(format!(
                "failure_rate must be within 0..=1, not {}",
                self.failure_rate
            ));
        }
        if let Some(only) = &self.only
            && !only.starts_with('/')
        {
            return Err(format!(
                "only must be a path prefix starting with /, not {only:?}"
            ));
        }
        Ok(())
    }

    /// Whether the per-request faults (all but `refuse`) apply to `path`.
    pub fn applies_to(&self, path: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|prefix| path.starts_with(prefix))
    }

    /// Whether the settings do anything to a request at all (the fast path
    /// skips the rest when they don't).
    fn is_inert(&self) -> bool {
        matches!(self.mode, Mode::Healthy | Mode::Refuse)
            && self.latency_ms == 0
            && self.failure_rate == 0.0
    }
}

/// What the faults make of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer it, after `delay`.
    Serve { delay: Duration },
    /// Answer it with this status instead, after `delay`.
    Fail { status: u16, delay: Duration },
    /// Hold it unanswered until the settings change.
    Hold,
}

/// Settings in force, with the count of failure draws made under them.
#[derive(Debug, Default)]
pub struct ActiveFaults {
    pub faults: Faults,
    draws: AtomicU64,
}

impl ActiveFaults {
    pub fn new(faults: Faults) -> Self {
        ActiveFaults {
            faults,
            draws: AtomicU64::new(0),
        }
    }

    /// The verdict on a request for `path`. Each request in scope under a
    /// failure rate takes the next draw: the n-th such request since the
    /// settings were made fails or not as `seed` and n say, whatever the
    /// timing.
    pub fn verdict(&self, path: &str) -> Verdict {
        let faults = &self.faults;
        if faults.is_inert() || !faults.applies_to(path) {
            return Verdict::Serve {
                delay: Duration::ZERO,
            };
        }
        let delay = Duration::from_millis(faults.latency_ms);
        match faults.mode {
            Mode::Hang => Verdict::Hold,
            Mode::Error => Verdict::Fail {
                status: faults.error_status,
                delay,
            },
            Mode::Healthy | Mode::Refuse => {
                if faults.failure_rate > 0.0 {
                    let draw = self.draws.fetch_add(1, Ordering::Relaxed);
                    if draw_fails(faults.seed, draw, faults.failure_rate) {
                        return Verdict::Fail {
                            status: faults.error_status,
                            delay,
                        };
                    }
                }
                Verdict::Serve { delay }
            }
        }
    }
}

/// Whether draw number `draw` under `seed` falls below `rate`: a splitmix64
/// hash of the two, read as a number in [0, 1).
fn draw_fails(seed: u64, draw: u64, rate: f64) -> bool {
    let mut x = seed.wrapping_add(draw.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    const UNIT: f64 = 1.0 / (1u64 << 53) as f64;
    ((x >> 11) as f64) * UNIT < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Faults, String> {
        Faults::from_json(json.as_bytes(), || 42)
    }

    fn serve(delay_ms: u64) -> Verdict {
        Verdict::Serve {
            delay: Duration::from_millis(delay_ms),
        }
    }

    #[test]
    fn an_empty_object_means_healthy_with_every_default() {
        let faults = parse("{}").unwrap();
        assert_eq!(
            faults,
            Faults {
                seed: 42,
                ..Faults::default()
            }
        );
        assert_eq!(
            serde_json::to_value(&faults).unwrap(),
            serde_json::json!({"mode": "healthy", "error_status": 503, "latency_ms": 0,
                               "failure_rate": 0.0, "only": null, "seed": 42})
        );
    }

    #[test]
    fn what_get_shows_can_be_put_back_unchanged() {
        let faults = parse(r#"{"mode":"hang","only":"/users","seed":7,"latency_ms":5}"#).unwrap();
        let shown = serde_json::to_vec(&faults).unwrap();
        assert_eq!(Faults::from_json(&shown, || 0).unwrap(), faults);
    }

    #[test]
    fn unknown_fields_and_out_of_range_values_are_refused_with_the_field_named() {
        for (json, field) in [
            (r#"{"mood":"hang"}"#, "mood"),
            (r#"{"mode":"sleepy"}"#, "sleepy"),
            (r#"{"error_status":200}"#, "error_status"),
            (r#"{"error_status":1000}"#, "error_status"),
            (r#"{"failure_rate":1.5}"#, "failure_rate"),
            (r#"{"failure_rate":-0.1}"#, "failure_rate"),
            (r#"{"latency_ms":604800001}"#, "latency_ms"),
            (r#"{"only":"users"}"#, "only"),
            ("[]", "struct"),
            ("not json", "expected"),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(field), "{json}: {err}");
        }
    }

    #[test]
    fn only_scopes_error_hang_and_latency_to_a_path_prefix() {
        let active = ActiveFaults::new(parse(r#"{"mode":"error","only":"/users"}"#).unwrap());
        assert_eq!(
            active.verdict("/users/1"),
            Verdict::Fail {
                status: 503,
                delay: Duration::ZERO
            }
        );
        assert_eq!(active.verdict("/products/1"), serve(0));
        let active = ActiveFaults::new(parse(r#"{"mode":"hang","only":"/search"}"#).unwrap());
        assert_eq!(active.verdict("/search"), Verdict::Hold);
        assert_eq!(active.verdict("/users/1"), serve(0));
        let active = ActiveFaults::new(parse(r#"{"latency_ms":30,"only":"/users"}"#).unwrap());
        assert_eq!(active.verdict("/users/1"), serve(30));
        assert_eq!(active.verdict("/orders"), serve(0));
    }

    #[test]
    fn latency_delays_injected_failures_too() {
        let active = ActiveFaults::new(
            parse(r#"{"mode":"error","error_status":500,"latency_ms":20}"#).unwrap(),
        );
        assert_eq!(
            active.verdict("/users/1"),
            Verdict::Fail {
                status: 500,
                delay: Duration::from_millis(20)
            }
        );
    }

    #[test]
    fn refuse_leaves_requests_that_slipped_through_to_be_served() {
        let active = ActiveFaults::new(parse(r#"{"mode":"refuse"}"#).unwrap());
        assert_eq!(active.verdict("/users/1"), serve(0));
    }

    fn failures_among(active: &ActiveFaults, requests: usize) -> Vec<bool> {
        (0..requests)
            .map(|_| matches!(active.verdict("/users/1"), Verdict::Fail { .. }))
            .collect()
    }

    #[test]
    fn the_failure_rate_fails_that_share_the_same_way_for_the_same_seed() {
        let settings = r#"{"failure_rate":0.3,"seed":2024}"#;
        let first = failures_among(&ActiveFaults::new(parse(settings).unwrap()), 10_000);
        let again = failures_among(&ActiveFaults::new(parse(settings).unwrap()), 10_000);
        assert_eq!(first, again, "same seed, same failures");
        let share = first.iter().filter(|&&failed| failed).count() as f64 / 10_000.0;
        assert!((share - 0.3).abs() < 0.02, "share {share}");
        let other_seed = r#"{"failure_rate":0.3,"seed":2025}"#;
        let other = failures_among(&ActiveFaults::new(parse(other_seed).unwrap()), 10_000);
        assert_ne!(first, other, "another seed, other failures");
    }

    #[test]
    fn failure_rates_of_zero_and_one_are_never_and_always() {
        let never = ActiveFaults::new(parse(r#"{"failure_rate":0}"#).unwrap());
        assert!(!failures_among(&never, 1000).contains(&true));
        let always = ActiveFaults::new(parse(r#"{"failure_rate":1}"#).unwrap());
        assert!(!failures_among(&always, 1000).contains(&false));
    }
}
