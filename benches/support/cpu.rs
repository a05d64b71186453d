//! CPU time spent by the processes on a request's path, read from `/proc`.
//!
//! A rate says how fast a path answered; the CPU time each process spent
//! per answered request says where the time went. When client, proxy and
//! upstream are bound by the same cores, the rates are made of it: a proxy
//! reaches half of the upstream alone's rate when its own CPU per request
//! is no more than the client's and the upstream's together. It moves with
//! this machine's speed as the rates do, so compare it within one run.

use std::fs;
use std::process::Command;
use std::time::Duration;

/// CPU time a process spent, all threads: in its own code (user) and in
/// the kernel on its behalf (system).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    /// What was spent between `earlier` and this reading.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    /// The time per each of `count` requests.
    pub fn per(self, count: u32) -> CpuTime {
        CpuTime {
            user: self.user / count,
            system: self.system / count,
        }
    }

    fn plus(self, other: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }
}

/// Reads processes' CPU time.
pub struct CpuMeter {
    ticks_per_second: f64,
}

impl CpuMeter {
    /// A meter, where `/proc` and `getconf CLK_TCK` are there to read.
    pub fn new() -> Option<CpuMeter> {
        let output = Command::new("getconf").arg("CLK_TCK").output().ok()?;
        let ticks_per_second: f64 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .ok()?;
        let meter = CpuMeter { ticks_per_second };
        meter.process(std::process::id())?;
        Some(meter)
    }

    /// The CPU time process `pid` has spent so far.
    pub fn process(&self, pid: u32) -> Option<CpuTime> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the command name, which may hold spaces: state
        // is the first of them, utime the 12th and stime the 13th.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let seconds = |field: usize| -> Option<Duration> {
            let ticks: u64 = fields.get(field)?.parse().ok()?;
            Some(Duration::from_secs_f64(
                ticks as f64 / self.ticks_per_second,
            ))
        };
        Some(CpuTime {
            user: seconds(11)?,
            system: seconds(12)?,
        })
    }

    /// The CPU time process `pid` and its child processes (nginx's workers)
    /// have spent so far.
    pub fn with_children(&self, pid: u32) -> Option<CpuTime> {
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children
            .split_whitespace()
            .filter_map(|child| child.parse().ok())
            .try_fold(self.process(pid)?, |total, child| {
                Some(total.plus(self.process(child)?))
            })
    }
}
