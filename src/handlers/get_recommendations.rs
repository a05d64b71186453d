//! `get_recommendations`: an expensive, non-critical feature; shed first
//! under load.

use crate::backend::Record;
use crate::load_mode::Feature;
use crate::node::Node;
use crate::protocol::reply::ReplyBody;
use crate::protocol::{RecordId, Request, RequestError};
use serde::{Deserialize, Serialize};

/// How many products a recommendation lists.
pub const RECOMMENDATION_COUNT: usize = 3;

#[derive(Deserialize)]
struct GetRecommendations {
    #[allow(dead_code)]
    user_id: RecordId,
}

#[derive(Serialize)]
pub struct RecommendationsResponse {
    recommendations: Vec<Record>,
    degraded: bool,
}

impl ReplyBody for RecommendationsResponse {
    const TYPE: &'static str = "recommendations_response";
}

pub fn handle(
    node: &mut Node,
    request: &Request<'_>,
) -> Result<RecommendationsResponse, RequestError> {
    let _: GetRecommendations = request.parse_body()?;
    let (recommendations, degraded) = super::unless_shed(node, Feature::Recommendations, |node| {
        node.backend.sample_products(RECOMMENDATION_COUNT)
    });
    Ok(RecommendationsResponse {
        recommendations,
        degraded,
    })
}
