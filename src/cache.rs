//! The fallback cache: the last good copy of every record, served only when
//! its service cannot answer (stale-if-error).
//!
//! Normal reads always go to the service, so a healthy service is never
//! answered for by an old copy. When the breaker is open or the call fails,
//! a copy up to `max_stale` old is better than an error. The cache holds at
//! most `capacity` records and forgets the least recently used, so memory
//! stays flat however many distinct ids pass through.

use crate::backend::{Record, Service};
use crate::protocol::RecordId;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

/// Default number of records kept.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// Default age beyond which a copy is no longer served: 24 hours.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 60 * 60);

/// One cached copy and when it was fetched.
#[derive(Debug, Clone)]
pub struct CachedRecord {
    pub record: Record,
    pub fetched_at: Instant,
}

/// Last good copies of user and product records.
pub struct FallbackCache {
    /// Grows as copies arrive (never allocated up front for the whole
    /// capacity, which may be far more than will ever be used).
    entries: LruCache<(Service, RecordId), CachedRecord>,
    capacity: NonZeroUsize,
    max_stale: Duration,
    fallbacks_served: u64,
}

impl FallbackCache {
    /// A cache of at most `capacity` records (at least one).
    pub fn new(capacity: usize, max_stale: Duration) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        FallbackCache {
            entries: LruCache::unbounded(),
            capacity,
            max_stale,
            fallbacks_served: 0,
        }
    }

    /// Stores a copy fetched at `fetched_at`, replacing any older one.
    pub fn store(&mut self, service: Service, id: RecordId, record: Record, fetched_at: Instant) {
        let key = (service, id);
        if self.entries.len() >= self.capacity.get() && !self.entries.contains(&key) {
            self.entries.pop_lru();
        }
        self.entries.put(key, CachedRecord { record, fetched_at });
    }

    /// The copy to serve as a fallback at `now`, if one is young enough.
    /// Counts as a fallback served.
    pub fn fallback(
        &mut self,
        service: Service,
        id: &RecordId,
        now: Instant,
    ) -> Option<CachedRecord> {
        let key = (service, id.clone());
        let entry = self.entries.get(&key)?;
        if now.saturating_duration_since(entry.fetched_at) > self.max_stale {
            self.entries.pop(&key);
            return None;
        }
        let entry = entry.clone();
        self.fallbacks_served += 1;
        Some(entry)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity.get()
    }

    pub fn max_stale(&self) -> Duration {
        self.max_stale
    }

    /// How many requests were answered from this cache.
    pub fn fallbacks_served(&self) -> u64 {
        self.fallbacks_served
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::record_from_json;

    const SEC: Duration = Duration::from_secs(1);

    fn record(name: &str) -> Record {
        record_from_json(format!("{{\"name\":\"{name}\"}}"))
    }

    #[test]
    fn serves_the_last_stored_copy() {
        let t0 = Instant::now();
        let mut cache = FallbackCache::new(10, 60 * SEC);
        cache.store(Service::User, RecordId::Int(1), record("old"), t0);
        cache.store(Service::User, RecordId::Int(1), record("new"), t0 + SEC);
        let hit = cache
            .fallback(Service::User, &RecordId::Int(1), t0 + 2 * SEC)
            .unwrap();
        assert_eq!(hit.record.get(), "{\"name\":\"new\"}");
        assert_eq!(hit.fetched_at, t0 + SEC);
        assert_eq!(cache.fallbacks_served(), 1);
    }

    #[test]
    fn services_and_id_types_are_separate_keys() {
        let t0 = Instant::now();
        let mut cache = FallbackCache::new(10, 60 * SEC);
        cache.store(Service::User, RecordId::Int(1), record("u"), t0);
        assert!(
            cache
                .fallback(Service::Product, &RecordId::Int(1), t0)
                .is_none()
        );
        assert!(
            cache
                .fallback(Service::User, &RecordId::Text("1".into()), t0)
                .is_none()
        );
    }

    #[test]
    fn copy_older_than_max_stale_is_not_served() {
        let t0 = Instant::now();
        let mut cache = FallbackCache::new(10, 60 * SEC);
        cache.store(Service::User, RecordId::Int(1), record("u"), t0);
        assert!(
            cache
                .fallback(Service::User, &RecordId::Int(1), t0 + 60 * SEC)
                .is_some()
        );
        assert!(
            cache
                .fallback(Service::User, &RecordId::Int(1), t0 + 61 * SEC)
                .is_none()
        );
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn least_recently_used_record_is_evicted_at_capacity() {
        let t0 = Instant::now();
        let mut cache = FallbackCache::new(2, 60 * SEC);
        cache.store(Service::User, RecordId::Int(1), record("1"), t0);
        cache.store(Service::User, RecordId::Int(2), record("2"), t0);
        cache.fallback(Service::User, &RecordId::Int(1), t0);
        cache.store(Service::User, RecordId::Int(3), record("3"), t0);
        assert_eq!(cache.len(), 2);
        assert!(
            cache
                .fallback(Service::User, &RecordId::Int(2), t0)
                .is_none()
        );
        assert!(
            cache
                .fallback(Service::User, &RecordId::Int(1), t0)
                .is_some()
        );
    }
}
