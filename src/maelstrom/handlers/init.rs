//! `init`: Maelstrom's handshake, which names this node.

use super::Ctx;
use crate::protocol::reply::ReplyBody;
use crate::protocol::{Request, RequestError};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Init {
    node_id: String,
    #[serde(default)]
    #[allow(dead_code)]
    node_ids: Vec<String>,
}

#[derive(Serialize)]
pub struct InitOk {}

impl ReplyBody for InitOk {
    const TYPE: &'static str = "init_ok";
}

/// From now on replies come from `node_id`.
pub fn handle(request: &Request<'_>, ctx: &mut Ctx<'_>) -> Result<InitOk, RequestError> {
    let init: Init = request.parse_body()?;
    if let Some(previous) = ctx.node.node_id.as_deref().filter(|&id| id != init.node_id) {
        tracing::warn!(previous, new = %init.node_id, "init renames the node");
    }
    ctx.node.node_id = Some(init.node_id);
    Ok(InitOk {})
}
