//! `echo`: Maelstrom's smoke test, answered with the same value.

use crate::protocol::reply::ReplyBody;
use crate::protocol::{self, Request, RequestError};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct EchoRequest {
    echo: Box<RawValue>,
}

#[derive(Serialize)]
pub struct Echo {
    echo: Box<RawValue>,
}

impl ReplyBody for Echo {
    const TYPE: &'static str = "echo_ok";
}

/// Echoes the value with its keys in their order, on one line. It is
/// parsed once as a `Value` only to enforce serde_json's nesting limit: a
/// reply nested 100 000 deep is one no ordinary JSON reader could read.
pub fn handle(request: &Request<'_>) -> Result<Echo, RequestError> {
    let EchoRequest { echo } = request.parse_body()?;
    if serde_json::from_str::<serde_json::Value>(echo.get()).is_err() {
        return Err(RequestError::malformed("echo: nested too deeply"));
    }
    let compact = RawValue::from_string(protocol::compact_json(echo.get()))
        .expect("compacting keeps JSON valid");
    Ok(Echo { echo: compact })
}
