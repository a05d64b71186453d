//! One module per message type: the request's fields, its reply, and what
//! handling it means.
//!
//! A handler gets a [`Ctx`]: the core to ask, the node's own state it may
//! touch, and where its reply goes. It either answers at once or asks the
//! core for something (a read, a plain call, a write) and returns what it
//! is [`Waiting`] for; the node parks it and [`resume`]s it with the core's
//! [`Outcome`]. Each handler parses its own body, so a missing or ill-typed
//! field is reported by name, and every reply or error goes out through
//! [`Ctx::reply`] or [`Ctx::reply_error`], in one place.

mod create_order;
mod echo;
mod feature_read;
mod forced_failures;
mod get_order;
mod get_queue;
mod get_record;
mod get_status;
mod init;
mod process_queue;
mod set_feature;
mod set_mode;
mod set_service_health;

use super::node::{Addressing, NodeState, Waiter};
use crate::core::{Core, Outcome};
use crate::demo::in_process::DemoCall;
use crate::protocol::reply::{self, ReplyBody};
use crate::protocol::{ErrorCode, Request, RequestError};
use std::time::Instant;

/// Every message type grace answers, for `--help`, the README and the fuzzers.
pub const MESSAGE_TYPES: [&str; 15] = [
    "init",
    "echo",
    "get_user",
    "get_product",
    "set_mode",
    "set_feature",
    "get_recommendations",
    "search",
    "get_reviews",
    "set_service_health",
    "get_status",
    "create_order",
    "get_order",
    "get_queue",
    "process_queue",
];

/// What a handler works with.
pub struct Ctx<'a> {
    /// The core, for reads, calls and writes on behalf of [`Self::waiter`].
    pub core: &'a mut Core<Waiter, DemoCall>,
    /// The node's own state: its name, the demo's services and features.
    pub node: &'a mut NodeState,
    /// This request's token: the core's outcomes for it come back with it.
    pub waiter: Waiter,
    pub now: Instant,
    /// Where the reply goes.
    addressing: Addressing<'a>,
    out: &'a mut Vec<u8>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(
        core: &'a mut Core<Waiter, DemoCall>,
        node: &'a mut NodeState,
        waiter: Waiter,
        now: Instant,
        addressing: Addressing<'a>,
        out: &'a mut Vec<u8>,
    ) -> Self {
        Ctx {
            core,
            node,
            waiter,
            now,
            addressing,
            out,
        }
    }

    /// Writes the reply's envelope head, unless the reply is dropped;
    /// whether its body is to be written.
    #[inline]
    fn start_reply(&mut self) -> bool {
        if self.addressing.drops_reply() {
            return false;
        }
        self.addressing
            .write_head(self.out, self.node.node_id.as_deref());
        true
    }

    /// Writes `body` as the reply.
    pub fn reply<B: ReplyBody>(&mut self, body: &B) {
        if !self.start_reply() {
            return;
        }
        reply::write_body(self.out, self.addressing.in_reply_to(), body);
    }

    /// Writes a reply whose body borrows the core or the node's state (a
    /// status, the features switched off): `build` gets them and a
    /// [`BodyWriter`] to write the body with.
    pub fn reply_with(
        &mut self,
        build: impl FnOnce(&Core<Waiter, DemoCall>, &NodeState, BodyWriter<'_>),
    ) {
        if !self.start_reply() {
            return;
        }
        let writer = BodyWriter {
            out: self.out,
            in_reply_to: self.addressing.in_reply_to(),
        };
        build(self.core, self.node, writer);
    }

    /// Writes the reply with its fields written one by one (see
    /// [`reply::write_body_fields`]): for the replies nearly every request
    /// gets.
    pub fn reply_fields(
        &mut self,
        type_name: &'static str,
        fields: impl FnOnce(&mut reply::FieldWriter<'_>),
    ) {
        if !self.start_reply() {
            return;
        }
        reply::write_body_fields(self.out, type_name, self.addressing.in_reply_to(), fields);
    }

    /// Writes an `error` reply.
    pub fn reply_error(&mut self, error: &RequestError) {
        self.reply_error_text(error.code, &[&error.text]);
    }

    /// Writes an `error` reply whose text is `text_parts`, one after the
    /// other, written straight into the reply line.
    pub fn reply_error_text(&mut self, code: ErrorCode, text_parts: &[&str]) {
        if !self.start_reply() {
            return;
        }
        reply::write_error_body(self.out, self.addressing.in_reply_to(), code, text_parts);
    }

    /// Writes `result`: the reply, or the error.
    pub fn respond<B: ReplyBody>(&mut self, result: Result<B, RequestError>) {
        match result {
            Ok(body) => self.reply(&body),
            Err(error) => self.reply_error(&error),
        }
    }
}

/// Writes one reply body, after its envelope head (see [`Ctx::reply_with`]).
pub struct BodyWriter<'a> {
    out: &'a mut Vec<u8>,
    in_reply_to: Option<u64>,
}

impl BodyWriter<'_> {
    pub fn write<B: ReplyBody>(self, body: &B) {
        reply::write_body(self.out, self.in_reply_to, body);
    }

    /// Writes the body field by field (see [`reply::write_body_fields`]).
    pub fn write_fields(
        self,
        type_name: &'static str,
        fields: impl FnOnce(&mut reply::FieldWriter<'_>),
    ) {
        reply::write_body_fields(self.out, type_name, self.in_reply_to, fields);
    }
}

/// What a parked request is waiting for, per message type.
pub enum Waiting {
    Record(get_record::Waiting),
    FeatureRead(feature_read::Waiting),
    CreateOrder(create_order::Waiting),
    ProcessQueue,
}

/// Starts handling `request`: replies at once, or says what it waits for.
pub fn start(request: &Request<'_>, ctx: &mut Ctx<'_>) -> Option<Waiting> {
    macro_rules! answer {
        ($handled:expr) => {{
            let result = $handled;
            ctx.respond(result);
            None
        }};
    }
    /// For handlers that write their own reply (one that borrows the core).
    macro_rules! replied {
        ($handled:expr) => {{
            if let Err(error) = $handled {
                ctx.reply_error(&error);
            }
            None
        }};
    }
    match request.kind.as_ref() {
        "init" => answer!(init::handle(request, ctx)),
        "echo" => answer!(echo::handle(request)),
        "get_user" => get_record::start(get_record::Kind::User, request, ctx),
        "get_product" => get_record::start(get_record::Kind::Product, request, ctx),
        "set_mode" => replied!(set_mode::handle(request, ctx)),
        "set_feature" => replied!(set_feature::handle(request, ctx)),
        "get_recommendations" => {
            feature_read::start(feature_read::Kind::Recommendations, request, ctx)
        }
        "search" => feature_read::start(feature_read::Kind::Search, request, ctx),
        "get_reviews" => feature_read::start(feature_read::Kind::Reviews, request, ctx),
        "set_service_health" => answer!(set_service_health::handle(request, ctx)),
        "get_status" => {
            get_status::handle(ctx);
            None
        }
        "create_order" => create_order::start(request, ctx),
        "get_order" => answer!(get_order::handle(request, ctx)),
        "get_queue" => answer!(get_queue::handle(ctx)),
        "process_queue" => process_queue::start(ctx),
        other => {
            ctx.reply_error(&RequestError::not_supported(other));
            None
        }
    }
}

/// Continues a parked request with the core's `outcome`.
pub fn resume(waiting: Waiting, outcome: Outcome, ctx: &mut Ctx<'_>) -> Option<Waiting> {
    match waiting {
        Waiting::Record(waiting) => get_record::resume(waiting, outcome, ctx),
        Waiting::FeatureRead(waiting) => feature_read::resume(waiting, outcome, ctx),
        Waiting::CreateOrder(waiting) => create_order::resume(waiting, outcome, ctx),
        Waiting::ProcessQueue => process_queue::resume(outcome, ctx),
    }
}
