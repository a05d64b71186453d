//! Bugs planted on purpose, in test builds only, to show that the
//! simulator's invariants catch what they guard against.
//!
//! A checker that never fails proves nothing. Each [`PlantedBug`] breaks one
//! promise grace makes; the simulation tests switch one on for their thread
//! and expect the matching invariant to fail. In a normal build
//! [`is_planted`] is a constant `false` and the checks compile away.

/// One deliberate defect, named after the promise it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// Some requests get no reply.
    DropReply,
    /// An open breaker lets calls through.
    CallThroughOpenBreaker,
    /// An open breaker closes when its wait is over, skipping the probe.
    CloseWithoutProbe,
    /// Reads are answered from the cache although the service answered.
    CacheWhileServiceUp,
    /// A queued order's journal row is never committed, so a restart loses it.
    SkipJournalOnQueue,
    /// A repeated idempotency key makes a second order.
    IgnoreIdempotencyKey,
    /// Kill switches are ignored while the mode is `degraded`.
    KillSwitchIgnoredWhenDegraded,
    /// A half-open breaker lets one probe more through than permitted.
    ExtraHalfOpenProbe,
    /// A read that could join a call in flight is answered at once from
    /// the cache instead of waiting for the call.
    ReplyBeforeCallEnds,
    /// Identical reads in flight together each make their own call.
    NoCoalescing,
    /// A queued write's delivery starts again while one is in flight.
    SecondDeliveryInFlight,
    /// An answer is matched to its call by slot alone, so a late answer
    /// completes whichever newer call took the slot.
    LateAnswerTakenAsCurrent,
    /// A half-open breaker asks to be woken at the instant it half-opened,
    /// again and again.
    HalfOpenWakesAtOnce,
}

#[cfg(test)]
thread_local! {
    static PLANTED: std::cell::Cell<Option<PlantedBug>> = const { std::cell::Cell::new(None) };
}

/// Whether `bug` is planted on this thread (never, outside test builds).
#[inline]
pub fn is_planted(bug: PlantedBug) -> bool {
    #[cfg(test)]
    {
        PLANTED.with(|planted| planted.get() == Some(bug))
    }
    #[cfg(not(test))]
    {
        let _ = bug;
        false
    }
}

/// Plants `bug` on this thread until the guard is dropped.
#[cfg(test)]
pub fn plant(bug: PlantedBug) -> PlantedGuard {
    PLANTED.with(|planted| planted.set(Some(bug)));
    PlantedGuard
}

/// Removes the planted bug when dropped.
#[cfg(test)]
pub struct PlantedGuard;

#[cfg(test)]
impl Drop for PlantedGuard {
    fn drop(&mut self) {
        PLANTED.with(|planted| planted.set(None));
    }
}
