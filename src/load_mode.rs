//! Load modes and feature flags: switching off expensive features under load.
//!
//! Recommendations, search and reviews are nice to have; answering the core
//! reads is not optional. Under high CPU the node moves to `degraded` (no
//! recommendations, no search) or `critical` (no reviews either), and a
//! disabled feature answers at once with an empty result instead of an
//! error. An operator can set the mode outright, or let it follow
//! `cpu_usage` with hysteresis so a load hovering at a threshold does not
//! flap, and can kill any one feature regardless of mode.

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

    /// Features this mode switches off.
    fn disables(self, feature: Feature) -> bool {
        match self {
            Mode::Normal => false,
            Mode::Degraded => matches!(feature, Feature::Recommendations | Feature::Search),
            Mode::Critical => true,
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

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Normal => "normal",
            Mode::Degraded => "degraded",
            Mode::Critical => "critical",
        })
    }
}

/// A non-critical feature that can be switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    Recommendations,
    Search,
    Reviews,
}

impl Feature {
    /// Every feature, in the order `disabled_features` lists them.
    pub const ALL: [Feature; 3] = [Feature::Recommendations, Feature::Search, Feature::Reviews];
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Feature::Recommendations => "recommendations",
            Feature::Search => "search",
            Feature::Reviews => "reviews",
        })
    }
}

/// The current mode and the operator's kill switches.
#[derive(Debug, Clone)]
pub struct LoadShedder {
    mode: Mode,
    killed: [bool; 3],
    last_cpu_usage: Option<f64>,
}

impl Default for LoadShedder {
    fn default() -> Self {
        LoadShedder {
            mode: Mode::Normal,
            killed: [false; 3],
            last_cpu_usage: None,
        }
    }
}

impl LoadShedder {
    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn last_cpu_usage(&self) -> Option<f64> {
        self.last_cpu_usage
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
    pub fn set_feature(&mut self, feature: Feature, enabled: bool) {
        self.killed[feature as usize] = !enabled;
    }

    pub fn is_enabled(&self, feature: Feature) -> bool {
        let killed = self.killed[feature as usize]
            && !(is_planted(PlantedBug::KillSwitchIgnoredWhenDegraded)
                && self.mode == Mode::Degraded);
        !killed && !self.mode.disables(feature)
    }

    /// The features switched off now, by mode or kill switch, in canonical order.
    pub fn disabled_features(&self) -> Vec<Feature> {
        Feature::ALL
            .into_iter()
            .filter(|&feature| !self.is_enabled(feature))
            .collect()
    }

    /// Features killed by the operator, whatever the mode.
    pub fn killed_features(&self) -> Vec<Feature> {
        Feature::ALL
            .into_iter()
            .filter(|&feature| self.killed[feature as usize])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_disable_their_features_in_canonical_order() {
        let mut shedder = LoadShedder::default();
        assert!(shedder.disabled_features().is_empty());
        shedder.set_mode(Mode::Degraded, Some(85.0));
        assert_eq!(
            shedder.disabled_features(),
            vec![Feature::Recommendations, Feature::Search]
        );
        shedder.set_mode(Mode::Critical, None);
        assert_eq!(shedder.disabled_features(), Feature::ALL.to_vec());
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
        shedder.set_feature(Feature::Reviews, false);
        assert_eq!(shedder.disabled_features(), vec![Feature::Reviews]);
        shedder.set_mode(Mode::Degraded, None);
        assert_eq!(shedder.disabled_features(), Feature::ALL.to_vec());
        shedder.set_feature(Feature::Reviews, true);
        shedder.set_mode(Mode::Normal, None);
        assert!(shedder.disabled_features().is_empty());
    }
}
