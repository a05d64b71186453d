//! One module per message type: the request's fields, its reply, and what
//! handling it means.
//!
//! Each handler parses its own body (so a missing or ill-typed field is
//! reported by name) and returns its reply or a [`RequestError`]; writing
//! either to the wire happens once, in [`dispatch`].

mod create_order;
mod echo;
mod get_order;
mod get_product;
mod get_queue;
mod get_recommendations;
mod get_reviews;
mod get_status;
mod get_user;
mod init;
mod process_queue;
mod search;
mod set_feature;
mod set_mode;
mod set_service_health;

use crate::node::{Faults, Node};
use crate::protocol::reply::ReplyBody;
use crate::protocol::{Request, RequestError};
use std::time::Instant;

/// Every message type grace answers, for `--help` and the README.
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

/// Routes `request` to its handler and writes the reply.
pub fn dispatch(node: &mut Node, request: &Request<'_>, now: Instant) {
    /// Evaluates a handler, then writes its reply or error.
    macro_rules! answer {
        ($handled:expr) => {{
            let result = $handled;
            respond(node, request, result)
        }};
    }
    match request.kind.as_ref() {
        "init" => answer!(init::handle(node, request)),
        "echo" => answer!(echo::handle(request)),
        "get_user" => answer!(get_user::handle(node, request, now)),
        "get_product" => answer!(get_product::handle(node, request, now)),
        "set_mode" => answer!(set_mode::handle(node, request)),
        "set_feature" => answer!(set_feature::handle(node, request)),
        "get_recommendations" => answer!(get_recommendations::handle(node, request)),
        "search" => answer!(search::handle(node, request)),
        "get_reviews" => answer!(get_reviews::handle(node, request)),
        "set_service_health" => answer!(set_service_health::handle(node, request)),
        "get_status" => answer!(get_status::handle(node, now)),
        "create_order" => answer!(create_order::handle(node, request, now)),
        "get_order" => answer!(get_order::handle(node, request)),
        "get_queue" => answer!(get_queue::handle(node, now)),
        "process_queue" => answer!(process_queue::handle(node, now)),
        other => node.reply_error(request, &RequestError::not_supported(other)),
    }
}

fn respond<B: ReplyBody>(node: &mut Node, request: &Request<'_>, result: Result<B, RequestError>) {
    match result {
        Ok(reply) => node.reply(request, &reply),
        Err(error) => node.reply_error(request, &error),
    }
}

/// The fault-injection fields a request may carry, as its handler parsed them.
fn faults(force_failures: u64, service_unavailable: bool) -> Faults {
    Faults {
        force_failures,
        service_unavailable,
    }
}

/// Runs a non-critical feature if it is enabled; a disabled one answers at
/// once with nothing and `degraded: true`, never an error.
fn unless_shed<T>(
    node: &Node,
    feature: crate::load_mode::Feature,
    produce: impl FnOnce(&Node) -> Vec<T>,
) -> (Vec<T>, bool) {
    if node.shedder.is_enabled(feature) {
        (produce(node), false)
    } else {
        (Vec::new(), true)
    }
}
