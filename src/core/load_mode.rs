//! Load modes and feature flags: switching off expensive features under load.
//!
//! Recommendations, search and reviews are nice to have; answering the core
//! reads is not optional. Under high CPU grace moves to `degraded` or
//! `critical`, each of which switches off a configured set of features (by
//! default: recommendations and search, then reviews too), and a disabled
//! feature answers at once with its degraded answer instead of calling its
//! service. An operator can set the mode outright, or let it follow the CPU
//! usage with hysteresis so a load hovering at a threshold does not flap,
//! and can kill any one feature regardless of mode.
//!
//! Features are names from configuration; [`FeatureId`] is a feature's
//! position in the [`LoadShedder`]'s list, which is also the order in which
//! `disabled_features` lists them.

use crate::planted_bug::{PlantedBug, is_planted};
use serde::{Deserialize, Serialize};
use std::fmt;

/// CPU usage (percent) at which `auto` enters `degraded`.
pub const DEGRADED_ENTRY_CPU: f64 = 80.0;
/// CPU usage (percent) at which `auto` enters `critical`.
pub const CRITICAL_ENTRY_CPU: f64 = 95.0;
/// `auto` leaves a mode only when CPU is this far below its entry threshold.
pub const HYSTERESIS_CPU: f64 = 10.0;

/// How much the node is shedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Normal,
    Degraded,
    Critical,
}

impl Mode {
    /// The CPU usage at which `auto` enters this mode.
    fn entry_cpu(self) -> f64 {
        match self {
            Mode::Normal => 0.0,
            Mode::Degraded => DEGRADED_ENTRY_CPU,
            Mode::Critical => CRITICAL_ENTRY_CPU,
        }
    }

    /// The mode `auto` picks for `cpu` when currently in `self`: climb as
    /// soon as an entry threshold is reached, step down only below the
    /// threshold minus the hysteresis band.
    pub fn follow_cpu(self, cpu: f64) -> Mode {
        let by_entry = [Mode::Critical, Mode::Degraded]
            .into_iter()
            .find(|mode| cpu >= mode.entry_cpu())
            .unwrap_or(Mode::Normal);
        if by_entry >= self {
            return by_entry;
        }
        [Mode::Critical, Mode::Degraded]
            .into_iter()
            .filter(|&mode| mode <= self)
            .find(|mode| cpu >= mode.entry_cpu() - HYSTERESIS_CPU)
            .unwrap_or(Mode::Normal)
    }
}

impl Mode {
    /// The mode as named on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Degraded => "degraded",
            Mode::Critical => "critical",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The built-in features, in the order `disabled_features` lists them.
pub const DEFAULT_FEATURES: [&str; 3] = ["recommendations", "search", "reviews"];
/// What `degraded` switches off by default.
pub const DEFAULT_DEGRADED_FEATURES: [&str; 2] = ["recommendations", "search"];
/// What `critical` switches off by default (everything `degraded` does, and more).
pub const DEFAULT_CRITICAL_FEATURES: [&str; 3] = ["recommendations", "search", "reviews"];

/// A feature, by its position in the shedder's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeatureId(u16);

/// Which features each mode switches off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModePolicy {
    /// Every feature, in listing order.
    pub features: Vec<String>,
    /// Switched off in `degraded`.
    pub degraded: Vec<String>,
    /// Switched off in `critical`.
    pub critical: Vec<String>,
}

impl Default for ModePolicy {
    fn default() -> Self {
        let owned = |names: &[&str]| names.iter().map(|name| name.to_string()).collect();
        ModePolicy {
            features: owned(&DEFAULT_FEATURES),
            degraded: owned(&DEFAULT_DEGRADED_FEATURES),
            critical: owned(&DEFAULT_CRITICAL_FEATURES),
        }
    }
}

/// A feature name that is not configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFeature(pub String);

impl fmt::Display for UnknownFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown feature {:?}", self.0)
    }
}

/// One feature's switches.
#[derive(Debug, Clone)]
struct FeatureState {
    name: String,
    off_in_degraded: bool,
    off_in_critical: bool,
    killed: bool,
}

/// The current mode and the operator's kill switches.
#[derive(Debug, Clone)]
pub struct LoadShedder {
    mode: Mode,
    features: Vec<FeatureState>,
    last_cpu_usage: Option<f64>,
}

impl Default for LoadShedder {
    fn default() -> Self {
        Self::new(&ModePolicy::default())
    }
}

impl LoadShedder {
    /// A shedder in `normal` mode. Features named only by a mode are added
    /// to the list after the declared ones; `critical` also switches off
    /// everything `degraded` does.
    pub fn new(policy: &ModePolicy) -> Self {
        let mut names: Vec<&str> = Vec::new();
        for name in policy
            .features
            .iter()
            .chain(&policy.degraded)
            .chain(&policy.critical)
        {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        let features = names
            .into_iter()
            .map(|name| {
                let off_in_degraded = policy.degraded.iter().any(|n| n == name);
                FeatureState {
                    name: name.to_string(),
                    off_in_degraded,
                    off_in_critical: off_in_degraded || policy.critical.iter().any(|n| n == name),
                    killed: false,
                }
            })
            .collect();
        LoadShedder {
            mode: Mode::Normal,
            features,
            last_cpu_usage: None,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn last_cpu_usage(&self) -> Option<f64> {
        self.last_cpu_usage
    }

    /// The feature called `name`.
    pub fn feature(&self, name: &str) -> Result<FeatureId, UnknownFeature> {
        self.features
            .iter()
            .position(|feature| feature.name == name)
            .map(|index| FeatureId(index as u16))
            .ok_or_else(|| UnknownFeature(name.to_string()))
    }

    pub fn feature_name(&self, feature: FeatureId) -> &str {
        &self.features[feature.0 as usize].name
    }

    /// Every feature's name, in listing order.
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|feature| feature.name.as_str())
    }

    /// An operator override: this mode, whatever the CPU.
    pub fn set_mode(&mut self, mode: Mode, cpu_usage: Option<f64>) -> Mode {
        self.last_cpu_usage = cpu_usage.or(self.last_cpu_usage);
        self.mode = mode;
        mode
    }

    /// `auto`: the mode follows the reported CPU usage.
    pub fn follow_cpu(&mut self, cpu_usage: f64) -> Mode {
        self.last_cpu_usage = Some(cpu_usage);
        self.mode = self.mode.follow_cpu(cpu_usage);
        self.mode
    }

    /// Turns one feature's kill switch on (`enabled: false`) or off.
    pub fn set_feature(&mut self, feature: FeatureId, enabled: bool) {
        self.features[feature.0 as usize].killed = !enabled;
    }

    pub fn is_enabled(&self, feature: FeatureId) -> bool {
        let state = &self.features[feature.0 as usize];
        let killed = state.killed
            && !(is_planted(PlantedBug::KillSwitchIgnoredWhenDegraded)
                && self.mode == Mode::Degraded);
        let off_by_mode = match self.mode {
            Mode::Normal => false,
            Mode::Degraded => state.off_in_degraded,
            Mode::Critical => state.off_in_critical,
        };
        !killed && !off_by_mode
    }

    /// The features switched off now, by mode or kill switch, in listing order.
    pub fn disabled_features(&self) -> Vec<&str> {
        (0..self.features.len())
            .map(|index| FeatureId(index as u16))
            .filter(|&feature| !self.is_enabled(feature))
            .map(|feature| self.feature_name(feature))
            .collect()
    }

    /// Features killed by the operator, whatever the mode.
    pub fn killed_features(&self) -> Vec<&str> {
        self.features
            .iter()
            .filter(|feature| feature.killed)
            .map(|feature| feature.name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(shedder: &LoadShedder, name: &str) -> FeatureId {
        shedder.feature(name).unwrap()
    }

    #[test]
    fn modes_disable_their_features_in_listing_order() {
        let mut shedder = LoadShedder::default();
        assert!(shedder.disabled_features().is_empty());
        shedder.set_mode(Mode::Degraded, Some(85.0));
        assert_eq!(shedder.disabled_features(), ["recommendations", "search"]);
        shedder.set_mode(Mode::Critical, None);
        assert_eq!(shedder.disabled_features(), DEFAULT_FEATURES);
    }

    #[test]
    fn configured_modes_switch_off_configured_features_and_critical_includes_degraded() {
        let policy = ModePolicy {
            features: vec!["search".into()],
            degraded: vec!["images".into()],
            critical: vec!["search".into()],
        };
        let mut shedder = LoadShedder::new(&policy);
        assert_eq!(
            shedder.feature_names().collect::<Vec<_>>(),
            ["search", "images"]
        );
        shedder.set_mode(Mode::Degraded, None);
        assert_eq!(shedder.disabled_features(), ["images"]);
        shedder.set_mode(Mode::Critical, None);
        assert_eq!(shedder.disabled_features(), ["search", "images"]);
        assert_eq!(shedder.feature("nope"), Err(UnknownFeature("nope".into())));
    }

    #[test]
    fn auto_climbs_at_entry_thresholds() {
        assert_eq!(Mode::Normal.follow_cpu(79.9), Mode::Normal);
        assert_eq!(Mode::Normal.follow_cpu(80.0), Mode::Degraded);
        assert_eq!(Mode::Normal.follow_cpu(95.0), Mode::Critical);
        assert_eq!(Mode::Degraded.follow_cpu(96.0), Mode::Critical);
    }

    #[test]
    fn auto_steps_down_only_below_the_hysteresis_band() {
        assert_eq!(Mode::Degraded.follow_cpu(79.0), Mode::Degraded);
        assert_eq!(Mode::Degraded.follow_cpu(70.0), Mode::Degraded);
        assert_eq!(Mode::Degraded.follow_cpu(69.9), Mode::Normal);
        assert_eq!(Mode::Critical.follow_cpu(85.0), Mode::Critical);
        assert_eq!(Mode::Critical.follow_cpu(84.9), Mode::Degraded);
        assert_eq!(Mode::Critical.follow_cpu(60.0), Mode::Normal);
    }

    #[test]
    fn load_hovering_at_a_threshold_does_not_flap() {
        let mut shedder = LoadShedder::default();
        let modes: Vec<Mode> = [79.0, 81.0, 78.0, 80.5, 75.0, 79.9]
            .into_iter()
            .map(|cpu| shedder.follow_cpu(cpu))
            .collect();
        assert_eq!(modes[0], Mode::Normal);
        assert!(modes[1..].iter().all(|&mode| mode == Mode::Degraded));
    }

    #[test]
    fn kill_switch_disables_a_feature_regardless_of_mode() {
        let mut shedder = LoadShedder::default();
        let reviews = feature(&shedder, "reviews");
        shedder.set_feature(reviews, false);
        assert_eq!(shedder.disabled_features(), ["reviews"]);
        shedder.set_mode(Mode::Degraded, None);
        assert_eq!(shedder.disabled_features(), DEFAULT_FEATURES);
        shedder.set_feature(reviews, true);
        shedder.set_mode(Mode::Normal, None);
        assert!(shedder.disabled_features().is_empty());
        assert!(shedder.killed_features().is_empty());
    }
}
