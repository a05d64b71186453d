//! `set_mode`: an operator override of the load mode, or `auto` to let it
//! follow the reported CPU usage.

use super::Ctx;
use crate::core::load_mode::Mode;
use crate::protocol::{Request, RequestError};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum RequestedMode {
    Normal,
    Degraded,
    Critical,
    Auto,
}

#[derive(Deserialize)]
struct SetMode {
    #[serde(default)]
    mode: Option<RequestedMode>,
    #[serde(default)]
    cpu_usage: Option<f64>,
}

/// The reply: `mode` (the mode now) and `disabled_features` (the features
/// switched off now).
const MODE_CHANGED: &str = "mode_changed";

pub fn handle(request: &Request<'_>, ctx: &mut Ctx<'_>) -> Result<(), RequestError> {
    let SetMode { mode, cpu_usage } = request.parse_body()?;
    if let Some(cpu) = cpu_usage
        && !(0.0..=100.0).contains(&cpu)
    {
        return Err(RequestError::malformed(format!(
            "cpu_usage: must be a percentage from 0 to 100, got {cpu}"
        )));
    }
    let explicit = match mode.unwrap_or(RequestedMode::Auto) {
        RequestedMode::Normal => Some(Mode::Normal),
        RequestedMode::Degraded => Some(Mode::Degraded),
        RequestedMode::Critical => Some(Mode::Critical),
        RequestedMode::Auto => None,
    };
    let shedder = ctx.core.shedder_mut();
    let before = shedder.mode();
    let mode = match (explicit, cpu_usage) {
        (Some(mode), cpu) => shedder.set_mode(mode, cpu),
        (None, Some(cpu)) => shedder.follow_cpu(cpu),
        (None, None) => {
            return Err(RequestError::malformed(
                "cpu_usage: required when mode is \"auto\" or absent",
            ));
        }
    };
    if mode != before {
        tracing::debug!(from = %before, to = %mode, cpu_usage, "load mode changed");
    }
    ctx.reply_with(|core, _, writer| {
        writer.write_fields(MODE_CHANGED, |fields| {
            fields
                .str("mode", mode.as_str())
                .str_list("disabled_features", core.shedder().disabled_features());
        })
    });
    Ok(())
}
