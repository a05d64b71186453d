//! `set_service_health`: a sticky outage (or recovery) of one simulated
//! service, for demos and tests.

use crate::backend::Service;
use crate::node::Node;
use crate::protocol::reply::ReplyBody;
use crate::protocol::{Request, RequestError};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize)]
pub struct ServiceHealth {
    service: Service,
    available: bool,
}

impl ReplyBody for ServiceHealth {
    const TYPE: &'static str = "service_health_ok";
}

pub fn handle(node: &mut Node, request: &Request<'_>) -> Result<ServiceHealth, RequestError> {
    let health: ServiceHealth = request.parse_body()?;
    node.backend.set_available(health.service, health.available);
    tracing::info!(service = %health.service, available = health.available, "service health set");
    Ok(health)
}
