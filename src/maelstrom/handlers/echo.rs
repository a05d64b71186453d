//! `echo`: Maelstrom's smoke test, answered with the same value.

use crate::protocol::framing::nesting_depth;
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

/// Deepest echo value accepted: serde_json's own limit, which readers of
/// the reply are likely to have too.
pub const MAX_ECHO_DEPTH: usize = 128;

/// Echoes the value verbatim (keys in their order, numbers as written) on
/// one line. Its nesting is checked first: a reply nested 100 000 deep is
/// one no ordinary JSON reader could read.
pub fn handle(request: &Request<'_>) -> Result<Echo, RequestError> {
    let EchoRequest { echo } = request.parse_body()?;
    if nesting_depth(echo.get().as_bytes()) > MAX_ECHO_DEPTH {
        return Err(RequestError::malformed(format!(
            "echo: nested deeper than {MAX_ECHO_DEPTH} levels"
        )));
    }
    let compact = RawValue::from_string(protocol::compact_json(echo.get()))
        .expect("compacting keeps JSON valid");
    Ok(Echo { echo: compact })
}
