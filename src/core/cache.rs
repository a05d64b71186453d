//! The fallback cache: the last good answer for every (service, key),
//! served only when its service cannot answer (stale-if-error).
//!
//! Normal reads always go to the service, so a healthy service is never
//! answered for by an old copy. When the breaker is open, the call fails or
//! times out, a copy up to its max staleness old is better than an error.
//! Copies are opaque bytes with what was known when they were fetched (the
//! answer's status, headers and body, and the instant); what the key means
//! (a demo record id, an HTTP method, path, query and credentials) is the
//! front door's business. The cache holds at most `capacity` copies and
//! forgets the least recently used, taking memory as copies arrive, so it
//! stays flat however many distinct keys pass through.

use super::ServiceId;
use super::call::Response;
use bytes::Bytes;
use lru::LruCache;
use std::borrow::Borrow;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default number of copies kept.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A key within one service: the service's two-byte prefix, then the
/// front door's key bytes. One allocation, shared by the cache and the
/// in-flight call that will fill it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceKey(Bytes);

impl ServiceKey {
    pub fn new(service: ServiceId, key: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(2 + key.len());
        bytes.extend_from_slice(&service.key_prefix());
        bytes.extend_from_slice(key);
        ServiceKey(Bytes::from(bytes))
    }

    /// The front door's key, without the service prefix.
    pub fn key(&self) -> &[u8] {
        &self.0[2..]
    }
}

impl Borrow<[u8]> for ServiceKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

/// One kept answer.
#[derive(Debug, Clone)]
pub struct CachedCopy {
    pub response: Arc<Response>,
    pub fetched_at: Instant,
    /// Past this age the copy is no longer served.
    pub max_stale: Duration,
}

impl CachedCopy {
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.fetched_at)
    }
}

/// Makes the copy the cache keeps of an answer. The demo's answers own
/// their bytes and are shared as they are; the gateway's are slices of
/// hyper's read buffer, and a kept copy must own its bytes or it would keep
/// the whole buffer alive.
pub type KeptCopy = fn(&Arc<Response>) -> Arc<Response>;

/// Last good answers, least recently used forgotten first.
pub struct FallbackCache {
    entries: LruCache<ServiceKey, CachedCopy>,
    capacity: NonZeroUsize,
    kept_copy: KeptCopy,
    /// Builds lookup keys without allocating.
    scratch: Vec<u8>,
    fallbacks_served: u64,
}

impl FallbackCache {
    /// A cache of at most `capacity` copies (at least one), each made by
    /// `kept_copy`.
    pub fn new(capacity: usize, kept_copy: KeptCopy) -> Self {
        FallbackCache {
            entries: LruCache::unbounded(),
            capacity: NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            kept_copy,
            scratch: Vec::new(),
            fallbacks_served: 0,
        }
    }

    /// Keeps a copy of `answer`, fetched at `fetched_at`, under `key`,
    /// replacing any older one.
    ///
    /// When the copy already kept is the same answer (a healthy service
    /// answers a read with the same bytes over and over), it is only made
    /// younger: no copy is made and none released, which on a busy key is
    /// every answer but the first.
    pub fn keep(
        &mut self,
        key: ServiceKey,
        answer: &Arc<Response>,
        fetched_at: Instant,
        max_stale: Duration,
    ) {
        let kept_copy = self.kept_copy;
        if let Some(kept) = self.entries.get_mut(&key) {
            if !kept.response.is_same_answer(answer) {
                kept.response = kept_copy(answer);
            }
            kept.fetched_at = fetched_at;
            kept.max_stale = max_stale;
            return;
        }
        if self.entries.len() >= self.capacity.get() {
            self.entries.pop_lru();
        }
        let copy = CachedCopy {
            response: kept_copy(answer),
            fetched_at,
            max_stale,
        };
        self.entries.put(key, copy);
    }

    /// The copy to serve as a fallback at `now`, if one is young enough;
    /// counts as a fallback served. A copy too old is forgotten.
    pub fn fallback(&mut self, service: ServiceId, key: &[u8], now: Instant) -> Option<CachedCopy> {
        self.scratch.clear();
        self.scratch.extend_from_slice(&service.key_prefix());
        self.scratch.extend_from_slice(key);
        let copy = self.entries.get(self.scratch.as_slice())?;
        if copy.age(now) > copy.max_stale {
            self.entries.pop(self.scratch.as_slice());
            return None;
        }
        let copy = copy.clone();
        self.fallbacks_served += 1;
        Some(copy)
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

    /// How many answers were served from this cache.
    pub fn fallbacks_served(&self) -> u64 {
        self.fallbacks_served
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::call::Storage;
    use crate::core::{ServiceSpec, Services};

    const SEC: Duration = Duration::from_secs(1);

    fn services() -> (ServiceId, ServiceId) {
        let mut services = Services::default();
        (
            services.add(ServiceSpec::named("user")),
            services.add(ServiceSpec::named("product")),
        )
    }

    fn answer(body: &'static str) -> Arc<Response> {
        Arc::new(Response::new(200, body, Storage::Keep { max_stale: None }))
    }

    fn cache(capacity: usize) -> FallbackCache {
        FallbackCache::new(capacity, Arc::clone)
    }

    /// Keeps `body` under `key` of `service`, fetched at `at`.
    fn keep(
        cache: &mut FallbackCache,
        service: ServiceId,
        key: &[u8],
        body: &'static str,
        at: Instant,
    ) {
        cache.keep(ServiceKey::new(service, key), &answer(body), at, 60 * SEC);
    }

    #[test]
    fn serves_the_last_stored_copy_and_counts_it() {
        let (user, _) = services();
        let t0 = Instant::now();
        let mut cache = cache(10);
        keep(&mut cache, user, b"1", "old", t0);
        keep(&mut cache, user, b"1", "new", t0 + SEC);
        let hit = cache.fallback(user, b"1", t0 + 2 * SEC).unwrap();
        assert_eq!(hit.response.body, "new");
        assert_eq!(hit.age(t0 + 2 * SEC), SEC);
        assert_eq!(cache.fallbacks_served(), 1);
    }

    #[test]
    fn the_same_answer_again_makes_the_kept_copy_younger_and_makes_no_copy() {
        let (user, _) = services();
        let t0 = Instant::now();
        let mut cache = cache(10);
        let first = answer("same");
        cache.keep(ServiceKey::new(user, b"1"), &first, t0, 60 * SEC);
        cache.keep(
            ServiceKey::new(user, b"1"),
            &answer("same"),
            t0 + SEC,
            30 * SEC,
        );
        let hit = cache.fallback(user, b"1", t0 + 2 * SEC).unwrap();
        assert!(Arc::ptr_eq(&hit.response, &first), "no new copy is made");
        assert_eq!(hit.age(t0 + 2 * SEC), SEC, "younger: fetched again");
        assert_eq!(
            hit.max_stale,
            30 * SEC,
            "with the latest answer's staleness"
        );

        let changed = answer("changed");
        cache.keep(
            ServiceKey::new(user, b"1"),
            &changed,
            t0 + 3 * SEC,
            60 * SEC,
        );
        let hit = cache.fallback(user, b"1", t0 + 3 * SEC).unwrap();
        assert!(Arc::ptr_eq(&hit.response, &changed));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn services_are_separate_key_spaces() {
        let (user, product) = services();
        let t0 = Instant::now();
        let mut cache = cache(10);
        keep(&mut cache, user, b"1", "u", t0);
        assert!(cache.fallback(product, b"1", t0).is_none());
        assert!(cache.fallback(user, b"\"1\"", t0).is_none());
    }

    #[test]
    fn copy_older_than_its_max_stale_is_not_served_and_is_forgotten() {
        let (user, _) = services();
        let t0 = Instant::now();
        let mut cache = cache(10);
        keep(&mut cache, user, b"1", "u", t0);
        assert!(cache.fallback(user, b"1", t0 + 60 * SEC).is_some());
        assert!(cache.fallback(user, b"1", t0 + 61 * SEC).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn least_recently_used_copy_is_evicted_at_capacity() {
        let (user, _) = services();
        let t0 = Instant::now();
        let mut cache = cache(2);
        keep(&mut cache, user, b"1", "1", t0);
        keep(&mut cache, user, b"2", "2", t0);
        cache.fallback(user, b"1", t0);
        keep(&mut cache, user, b"3", "3", t0);
        assert_eq!(cache.len(), 2);
        assert!(cache.fallback(user, b"2", t0).is_none());
        assert!(cache.fallback(user, b"1", t0).is_some());
    }

    #[test]
    fn a_huge_capacity_takes_no_memory_up_front() {
        let cache = cache(100_000_000);
        assert_eq!(cache.capacity(), 100_000_000);
        assert!(cache.is_empty());
    }
}
