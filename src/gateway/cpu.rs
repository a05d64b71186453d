//! The machine's CPU use, sampled from `/proc/stat`, for auto mode.
//!
//! Every sample is the share of time the CPUs were busy since the one
//! before; the engine applies it with the hysteresis of the load modes.

use super::driver::Driver;
use super::engine::Event;
use std::sync::Arc;
use std::time::Duration;

/// The CPU counters of `/proc/stat`'s first line: busy and total ticks.
fn read_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    let total: u64 = ticks.iter().take(8).sum();
    Some((total - idle, total))
}

/// Busy percent between two readings.
fn busy_percent(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.1.checked_sub(before.1)?;
    let busy = after.0.checked_sub(before.0)?;
    (total > 0).then(|| busy as f64 * 100.0 / total as f64)
}

/// Sends a sample every `every` until the engine is gone.
pub async fn sample(every: Duration, driver: Arc<Driver>) {
    let Some(mut before) = read_ticks() else {
        tracing::warn!(
            "cannot read /proc/stat: auto mode follows only the cpu_usage sent to PUT /mode"
        );
        return;
    };
    let mut interval = tokio::time::interval(every);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(after) = read_ticks() else { continue };
        if let Some(percent) = busy_percent(before, after)
            && driver.send(Event::CpuSample(percent)).is_err()
        {
            return;
        }
        before = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_share_between_two_readings() {
        assert_eq!(busy_percent((100, 1000), (150, 1100)), Some(50.0));
        assert_eq!(busy_percent((100, 1000), (100, 1000)), None);
        assert!(read_ticks().is_some(), "linux has /proc/stat");
    }
}
