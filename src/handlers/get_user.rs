//! `get_user`: a read through the user service's breaker, falling back to
//! the last good copy.

use crate::backend::{Record, Service};
use crate::breaker::BreakerState;
use crate::node::{Node, ReadOutcome};
use crate::protocol::reply::ReplyBody;
use crate::protocol::{RecordId, Request, RequestError};
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Deserialize)]
struct GetUser {
    user_id: RecordId,
    #[serde(default)]
    force_failures: u64,
    #[serde(default)]
    service_unavailable: bool,
}

#[derive(Serialize)]
pub struct UserResponse {
    user: Record,
    /// The user breaker's state after this request.
    circuit_state: BreakerState,
    from_cache: bool,
}

impl ReplyBody for UserResponse {
    const TYPE: &'static str = "user_response";
}

pub fn handle(
    node: &mut Node,
    request: &Request<'_>,
    now: Instant,
) -> Result<UserResponse, RequestError> {
    let GetUser {
        user_id,
        force_failures,
        service_unavailable,
    } = request.parse_body()?;
    let faults = super::faults(force_failures, service_unavailable);
    let (user, from_cache) = match node.read_through(Service::User, &user_id, faults, now)? {
        Some(ReadOutcome::Fresh(user)) => (user, false),
        Some(ReadOutcome::Cached(user)) => (user, true),
        None => {
            return Err(RequestError::not_found(format!(
                "user {user_id} does not exist"
            )));
        }
    };
    Ok(UserResponse {
        user,
        circuit_state: node.breaker(Service::User).state(),
        from_cache,
    })
}
