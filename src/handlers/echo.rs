//! `echo`: Maelstrom's smoke test, answered with the same value.

use crate::protocol::reply::ReplyBody;
use crate::protocol::{Request, RequestError};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Deserialize, Serialize)]
pub struct Echo {
    echo: Box<RawValue>,
}

impl ReplyBody for Echo {
    const TYPE: &'static str = "echo_ok";
}

pub fn handle(request: &Request<'_>) -> Result<Echo, RequestError> {
    request.parse_body()
}
