//! `set_feature`: a kill switch for one feature, whatever the mode.

use crate::load_mode::Feature;
use crate::node::Node;
use crate::protocol::reply::ReplyBody;
use crate::protocol::{Request, RequestError};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct SetFeature {
    feature: Feature,
    enabled: bool,
}

#[derive(Serialize)]
pub struct FeatureSet {
    disabled_features: Vec<Feature>,
}

impl ReplyBody for FeatureSet {
    const TYPE: &'static str = "feature_set";
}

pub fn handle(node: &mut Node, request: &Request<'_>) -> Result<FeatureSet, RequestError> {
    let SetFeature { feature, enabled } = request.parse_body()?;
    node.shedder.set_feature(feature, enabled);
    tracing::info!(%feature, enabled, "feature kill switch set");
    Ok(FeatureSet {
        disabled_features: node.shedder.disabled_features(),
    })
}
