//! `force_failures: K`: K calls that fail before a request is served, each
//! recorded by the breaker, stopping as soon as the breaker refuses (an open
//! breaker makes no call, so a huge K costs no more than the threshold).
//!
//! Reads and writes share this first step: the handler keeps a
//! [`Forcing`] while it waits, and feeds each outcome to [`Forcing::next`].

use super::Ctx;
use crate::core::{Outcome, SendOutcome, ServiceId};
use crate::demo::in_process::{DemoCall, DemoRequest};

/// Forced failures still to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forcing {
    remaining: u64,
}

impl Forcing {
    /// Starts forcing `count` failures of `service`; `None` when there are
    /// none to force.
    pub fn start(count: u64, service: ServiceId, ctx: &mut Ctx<'_>) -> Option<Self> {
        if count == 0 {
            return None;
        }
        send_failure(service, ctx);
        Some(Forcing { remaining: count })
    }

    /// One forced call ended with `outcome`: the next one is under way
    /// (`Some`), or forcing is over (`None`).
    pub fn next(self, outcome: &Outcome, service: ServiceId, ctx: &mut Ctx<'_>) -> Option<Self> {
        let refused = matches!(outcome, Outcome::Sent(SendOutcome::Refused { .. }));
        let remaining = self.remaining - 1;
        if refused || remaining == 0 {
            return None;
        }
        send_failure(service, ctx);
        Some(Forcing { remaining })
    }
}

fn send_failure(service: ServiceId, ctx: &mut Ctx<'_>) {
    let call = DemoCall::new(DemoRequest::Failure);
    ctx.core.send(ctx.waiter, service, call, ctx.now);
}
