//! What `GET /status` (and the dashboard) shows: a snapshot of the core,
//! per configured service, and the requests counted so far.

use super::metrics::Metrics;
use crate::core::Core;
use crate::core::breaker::{BreakerSnapshot, BreakerState};
use crate::core::load_mode::Mode;
use crate::core::queue::{PendingItem, QUEUE_LISTING_LIMIT};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// The whole snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub mode: Mode,
    /// Whether the mode follows the sampled CPU use.
    pub auto: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_usage: Option<f64>,
    /// Every feature a mode or a route names.
    pub features: Vec<String>,
    pub disabled_features: Vec<String>,
    /// Features switched off by an operator, whatever the mode.
    pub killed_features: Vec<String>,
    pub services: Vec<ServiceView>,
    pub cache: CacheView,
    pub queue: QueueView,
    /// Client requests so far, by outcome.
    pub requests: BTreeMap<&'static str, u64>,
    /// Answers that came after their call had timed out.
    pub late_answers: u64,
    pub uptime_ms: u64,
    /// Dashboards (and other readers) of `GET /events` connected now; the
    /// admin listener fills it in, the core knows nothing of them.
    pub event_streams: usize,
}

/// One service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub name: String,
    #[serde(flatten)]
    pub breaker: BreakerSnapshot,
    pub calls: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub short_circuited: u64,
    pub coalesced: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p99_ms: Option<f64>,
    /// The last transitions, oldest first.
    pub transitions: Vec<TransitionView>,
}

/// One breaker transition.
#[derive(Debug, Clone, Serialize)]
pub struct TransitionView {
    /// How long ago it happened.
    pub ago_ms: u64,
    pub from: BreakerState,
    pub to: BreakerState,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheView {
    pub entries: usize,
    pub capacity: usize,
    pub fallbacks_served: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    pub depth: usize,
    pub processed: u64,
    pub dead_letters: u64,
    pub durable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded_reason: Option<String>,
    /// The oldest pending writes.
    pub pending: Vec<PendingItem>,
}

/// The snapshot of `core` at `now`.
pub fn view<W, P>(
    core: &Core<W, P>,
    auto: bool,
    metrics: &Metrics,
    now: Instant,
    started: Instant,
) -> StatusView {
    let shedder = core.shedder();
    let owned = |names: Vec<&str>| names.into_iter().map(str::to_string).collect();
    let services = core
        .services()
        .iter()
        .map(|(id, spec)| {
            let breaker = core.breaker(id);
            let stats = core.stats(id);
            let ms = |duration: std::time::Duration| duration.as_secs_f64() * 1000.0;
            ServiceView {
                name: spec.name.clone(),
                breaker: breaker.snapshot(now),
                calls: stats.calls,
                failures: stats.failures,
                timeouts: stats.timeouts,
                short_circuited: stats.short_circuited,
                coalesced: stats.coalesced,
                latency_p50_ms: metrics.latency_quantile(id, 0.50).map(ms),
                latency_p99_ms: metrics.latency_quantile(id, 0.99).map(ms),
                transitions: core
                    .recent_transitions(id)
                    .map(|record| TransitionView {
                        ago_ms: now.saturating_duration_since(record.at).as_millis() as u64,
                        from: record.transition.from,
                        to: record.transition.to,
                        reason: record.transition.reason.to_string(),
                    })
                    .collect(),
            }
        })
        .collect();
    let journal = core.journal();
    let queue = core.queue();
    StatusView {
        mode: shedder.mode(),
        auto,
        cpu_usage: shedder.last_cpu_usage(),
        features: shedder.feature_names().map(str::to_string).collect(),
        disabled_features: owned(shedder.disabled_features()),
        killed_features: owned(shedder.killed_features()),
        services,
        cache: CacheView {
            entries: core.cache().len(),
            capacity: core.cache().capacity(),
            fallbacks_served: core.cache().fallbacks_served(),
        },
        queue: QueueView {
            depth: queue.depth(),
            processed: queue.processed(),
            dead_letters: queue.dead_letters(),
            durable: journal.durable,
            journal: journal.path.clone(),
            degraded_reason: journal.degraded_reason.clone(),
            pending: queue.pending_items(now, QUEUE_LISTING_LIMIT),
        },
        requests: metrics.outcome_totals().into_iter().collect(),
        late_answers: core.late_answers(),
        uptime_ms: now.saturating_duration_since(started).as_millis() as u64,
        event_streams: 0,
    }
}
