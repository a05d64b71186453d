//! `set_feature`: a kill switch for one feature, whatever the mode.

use super::Ctx;
use crate::protocol::reply::ReplyBody;
use crate::protocol::{Request, RequestError};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct SetFeature {
    feature: String,
    enabled: bool,
}

#[derive(Serialize)]
pub struct FeatureSet<'a> {
    disabled_features: Vec<&'a str>,
}

impl ReplyBody for FeatureSet<'_> {
    const TYPE: &'static str = "feature_set";
}

pub fn handle(request: &Request<'_>, ctx: &mut Ctx<'_>) -> Result<(), RequestError> {
    let SetFeature { feature, enabled } = request.parse_body()?;
    let shedder = ctx.core.shedder_mut();
    let Ok(id) = shedder.feature(&feature) else {
        let known: Vec<&str> = shedder.feature_names().collect();
        return Err(RequestError::malformed(format!(
            "feature: unknown feature {feature:?}, expected one of {}",
            known.join(", ")
        )));
    };
    shedder.set_feature(id, enabled);
    tracing::info!(%feature, enabled, "feature kill switch set");
    ctx.reply_with(|core, _, writer| {
        writer.write(&FeatureSet {
            disabled_features: core.shedder().disabled_features(),
        })
    });
    Ok(())
}
