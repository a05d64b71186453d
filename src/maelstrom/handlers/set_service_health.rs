//! `set_service_health`: a sticky outage (or recovery) of one demo service,
//! for demos and tests. The node only passes it on: the demo services are
//! the ones that go down.

use super::Ctx;
use crate::maelstrom::node::Effect;
use crate::protocol::reply::ReplyBody;
use crate::protocol::{Request, RequestError};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize)]
pub struct ServiceHealth {
    service: String,
    available: bool,
}

impl ReplyBody for ServiceHealth {
    const TYPE: &'static str = "service_health_ok";
}

pub fn handle(request: &Request<'_>, ctx: &mut Ctx<'_>) -> Result<ServiceHealth, RequestError> {
    let health: ServiceHealth = request.parse_body()?;
    let Ok(service) = ctx.core.services().id(&health.service) else {
        let known: Vec<&str> = ctx
            .core
            .services()
            .iter()
            .map(|(_, spec)| spec.name.as_str())
            .collect();
        return Err(RequestError::malformed(format!(
            "service: unknown service {:?}, expected one of {}",
            health.service,
            known.join(", ")
        )));
    };
    ctx.node.effects.push_back(Effect::SetServiceHealth {
        service,
        available: health.available,
    });
    tracing::info!(service = %health.service, available = health.available, "service health set");
    Ok(health)
}
