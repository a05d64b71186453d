//! What the main listener has seen, for `GET /stats`: a test or a bench
//! checks with it how many calls the gateway really made (a breaker that is
//! open must not call, a cache hit must not call, a retried order must not
//! create twice). Counters are atomics, so counting costs the request path
//! no lock.

use super::api::Route;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters and gauges of the main listener.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    by_route: [AtomicU64; Route::ALL.len()],
    in_flight: AtomicU64,
    hung: AtomicU64,
    orders_created: AtomicU64,
    repeated_order_deliveries: AtomicU64,
}

/// Increments a gauge while alive.
#[must_use]
pub struct GaugeGuard<'a>(&'a AtomicU64);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn raise(gauge: &AtomicU64) -> GaugeGuard<'_> {
    gauge.fetch_add(1, Ordering::Relaxed);
    GaugeGuard(gauge)
}

impl Stats {
    /// Counts a request that reached the listener; it is in flight until
    /// the guard drops (answered, or its client gone).
    pub fn request(&self, route: Route) -> GaugeGuard<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.by_route[route.index()].fetch_add(1, Ordering::Relaxed);
        raise(&self.in_flight)
    }

    /// A request held by `hang` until the guard drops.
    pub fn hold(&self) -> GaugeGuard<'_> {
        raise(&self.hung)
    }

    /// An order created for the first time.
    pub fn order_created(&self) {
        self.orders_created.fetch_add(1, Ordering::Relaxed);
    }

    /// An order create that repeated a key (answered with the same order).
    pub fn order_repeated(&self) {
        self.repeated_order_deliveries
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Zeroes the counters (the gauges `in_flight` and `hung` say what is
    /// happening now, and stay).
    pub fn reset(&self) {
        let counters = [
            &self.requests,
            &self.orders_created,
            &self.repeated_order_deliveries,
        ];
        for counter in counters.into_iter().chain(&self.by_route) {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// The counts now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: load(&self.requests),
            by_route: Route::ALL
                .iter()
                .map(|route| (route.label(), load(&self.by_route[route.index()])))
                .collect(),
            in_flight: load(&self.in_flight),
            hung: load(&self.hung),
            orders_created: load(&self.orders_created),
            repeated_order_deliveries: load(&self.repeated_order_deliveries),
        }
    }
}

/// What `GET /stats` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Requests that reached the main listener, whatever answered them.
    pub requests: u64,
    /// The same, by route ([`Route::label`]).
    pub by_route: BTreeMap<&'static str, u64>,
    /// Requests being handled now.
    pub in_flight: u64,
    /// Requests held by `hang` now.
    pub hung: u64,
    /// Orders created (first deliveries of a key).
    pub orders_created: u64,
    /// Order creates that repeated a key.
    pub repeated_order_deliveries: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value, json};

    fn json_of(stats: &Stats) -> Value {
        serde_json::to_value(stats.snapshot()).unwrap()
    }

    #[test]
    fn requests_count_by_route_and_gauges_fall_when_their_guards_drop() {
        let stats = Stats::default();
        let first = stats.request(Route::User);
        let second = stats.request(Route::Other);
        let held = stats.hold();
        let json = json_of(&stats);
        assert_eq!(json["requests"], 2);
        assert_eq!(json["by_route"]["GET /users/{id}"], 1);
        assert_eq!(json["by_route"]["other"], 1);
        assert_eq!(json["by_route"]["POST /orders"], 0);
        assert_eq!(
            (json["in_flight"].clone(), json["hung"].clone()),
            (json!(2), json!(1))
        );
        drop((first, second, held));
        let json = json_of(&stats);
        assert_eq!(
            (json["in_flight"].clone(), json["hung"].clone()),
            (json!(0), json!(0))
        );
    }

    #[test]
    fn reset_zeroes_counters_but_not_what_is_in_flight() {
        let stats = Stats::default();
        let _in_flight = stats.request(Route::CreateOrder);
        stats.order_created();
        stats.order_repeated();
        stats.reset();
        assert_eq!(
            json_of(&stats),
            json!({"requests": 0, "by_route": Route::ALL.iter()
                       .map(|route| (route.label().to_string(), json!(0))).collect::<Map<_, _>>(),
                   "in_flight": 1, "hung": 0, "orders_created": 0, "repeated_order_deliveries": 0})
        );
    }
}
