//! Upstream calls as data: what the core asks for, and what came back.
//!
//! The core never calls a service itself. It emits a [`Call`] (an id, the
//! service, what is asked, and a deadline) that a runtime performs: the demo
//! services answer in-process within the same step, the gateway's HTTP
//! client over the network. The runtime hands the [`CallResult`] back with
//! the current instant. A call that has no result by its deadline is failed
//! by the core itself ([`CallFailure::TimedOut`]); a result that arrives
//! after that is ignored and counted.

use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Identifies one call for as long as the core remembers it, and never
/// again afterwards (a late answer cannot be mistaken for a newer call's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub(crate) u64);

impl CallId {
    pub(crate) fn new(slot: usize, generation: u32) -> Self {
        CallId(((generation as u64) << 32) | slot as u64)
    }

    pub(crate) fn slot(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// A call for a runtime to make.
#[derive(Debug)]
pub struct Call<P> {
    pub id: CallId,
    pub service: super::ServiceId,
    pub request: CallRequest<P>,
    /// The core fails the call at this instant if no result came.
    pub deadline: Instant,
}

/// What a call asks of its service.
#[derive(Debug)]
pub enum CallRequest<P> {
    /// What a front door asked for (a read, or any call it makes through
    /// the breaker), in the front door's own terms.
    Send(P),
    /// A queued write, delivered (again, possibly: the service deduplicates
    /// on `idempotency_key`).
    Deliver(Delivery),
}

/// A queued write on its way to its service.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The queue's id for the write.
    pub request_id: u64,
    /// The key the service deduplicates on.
    pub idempotency_key: Arc<str>,
    /// The write as the front door stored it.
    pub payload: Bytes,
}

/// How a call ended, as the runtime saw it.
#[derive(Debug, Clone)]
pub enum CallResult {
    /// The service answered (any status: which ones are failures is the
    /// service's policy).
    Answered(Arc<Response>),
    /// No answer: the connection was refused or broke, or the runtime's own
    /// timer fired.
    Failed(CallFailure),
}

/// Why a call got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// Nothing listening, or the service is down.
    Refused,
    /// The call's deadline passed without a full answer.
    TimedOut,
    /// Anything else that broke the exchange, described.
    Broken(String),
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallFailure::Refused => f.write_str("refused"),
            CallFailure::TimedOut => f.write_str("timed out"),
            CallFailure::Broken(reason) => f.write_str(reason),
        }
    }
}

/// A service's answer: opaque bytes and what the core needs to know about
/// them.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    /// End-to-end headers, kept with a cached copy (content type among them).
    pub headers: Headers,
    pub body: Bytes,
    /// Whether the answer may be kept as a fallback, and for how long.
    pub storage: Storage,
}

impl Response {
    /// A `status` answer with `body` and no headers.
    pub fn new(status: u16, body: impl Into<Bytes>, storage: Storage) -> Self {
        Response {
            status,
            headers: Headers::default(),
            body: body.into(),
            storage,
        }
    }

    /// Whether `other` is this answer again: the same status, the same
    /// headers in the same order, the same body, kept the same way. (A
    /// healthy service answers a read with the same bytes over and over.)
    pub fn is_same_answer(&self, other: &Response) -> bool {
        self.status == other.status
            && self.storage == other.storage
            && self.body == other.body
            && self.headers.same_in_order(&other.headers)
    }
}

/// An answer's headers, taking no room when there are none: the cache keeps
/// a hundred thousand answers, and the demo's have no headers at all (an
/// empty `HeaderMap` inline is about a hundred bytes each).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers(Option<Box<http::HeaderMap>>);

impl From<http::HeaderMap> for Headers {
    fn from(headers: http::HeaderMap) -> Self {
        Headers((!headers.is_empty()).then(|| Box::new(headers)))
    }
}

impl Headers {
    /// The map itself, for a caller that has the only copy of the answer.
    pub fn into_map(self) -> http::HeaderMap {
        self.0.map(|headers| *headers).unwrap_or_default()
    }

    /// Equal names and values, in the same order (no lookups: an answer
    /// repeated by the same service lists its headers the same way).
    fn same_in_order(&self, other: &Headers) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(ours), Some(theirs)) => {
                ours.len() == theirs.len() && ours.iter().eq(theirs.iter())
            }
            _ => false,
        }
    }
}

impl std::ops::Deref for Headers {
    type Target = http::HeaderMap;

    fn deref(&self) -> &http::HeaderMap {
        static EMPTY: std::sync::LazyLock<http::HeaderMap> =
            std::sync::LazyLock::new(http::HeaderMap::new);
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

/// What the runtime that read an answer says about keeping it: the core
/// does not know HTTP's caching rules or the demo's, only this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Must not be kept (an error, `no-store`, a method that is not a read).
    DoNotStore,
    /// May be served as a fallback, up to the service's max staleness or
    /// this, whichever is shorter (`stale-if-error=N`).
    Keep { max_stale: Option<Duration> },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_differing_in_status_headers_or_storage_is_not_the_same_answer() {
        let base = Response::new(200, "x", Storage::Keep { max_stale: None });
        assert!(base.is_same_answer(&base.clone()));
        let status = Response {
            status: 203,
            ..base.clone()
        };
        let storage = Response {
            storage: Storage::Keep {
                max_stale: Some(Duration::from_secs(1)),
            },
            ..base.clone()
        };
        let mut map = http::HeaderMap::new();
        map.insert("etag", http::HeaderValue::from_static("\"1\""));
        let headers = Response {
            headers: map.clone().into(),
            ..base.clone()
        };
        map.insert("etag", http::HeaderValue::from_static("\"2\""));
        let other_headers = Response {
            headers: map.into(),
            ..base.clone()
        };
        for different in [&status, &storage, &headers] {
            assert!(!base.is_same_answer(different));
            assert!(!different.is_same_answer(&base));
        }
        assert!(!headers.is_same_answer(&other_headers));
        assert!(headers.is_same_answer(&headers.clone()));
    }

    #[test]
    fn call_ids_keep_slot_and_generation_apart() {
        let id = CallId::new(7, 3);
        assert_eq!((id.slot(), id.generation()), (7, 3));
        assert_ne!(id, CallId::new(7, 4), "a reused slot gets a new id");
    }
}
