//! `get_reviews`: a non-critical feature, shed only in `critical` mode.

use crate::load_mode::Feature;
use crate::node::Node;
use crate::protocol::reply::ReplyBody;
use crate::protocol::{RecordId, Request, RequestError};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct GetReviews {
    product_id: RecordId,
}

/// One demo review.
#[derive(Serialize)]
pub struct Review {
    product_id: RecordId,
    rating: u8,
    text: &'static str,
}

#[derive(Serialize)]
pub struct ReviewsResponse {
    reviews: Vec<Review>,
    degraded: bool,
}

impl ReplyBody for ReviewsResponse {
    const TYPE: &'static str = "reviews_response";
}

/// The demo reviews every product has.
const DEMO_REVIEWS: [(u8, &str); 2] = [(5, "Great product"), (4, "Does the job")];

pub fn handle(node: &mut Node, request: &Request<'_>) -> Result<ReviewsResponse, RequestError> {
    let GetReviews { product_id } = request.parse_body()?;
    let (reviews, degraded) = super::unless_shed(node, Feature::Reviews, |_| {
        DEMO_REVIEWS
            .iter()
            .map(|&(rating, text)| Review {
                product_id: product_id.clone(),
                rating,
                text,
            })
            .collect()
    });
    Ok(ReviewsResponse { reviews, degraded })
}
