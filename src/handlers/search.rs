//! `search`: an expensive, non-critical feature; shed under load.

use crate::backend::Record;
use crate::load_mode::Feature;
use crate::node::Node;
use crate::protocol::reply::ReplyBody;
use crate::protocol::{Request, RequestError};
use serde::{Deserialize, Serialize};

/// Most results one search returns.
pub const SEARCH_RESULT_LIMIT: usize = 10;

#[derive(Deserialize)]
struct Search {
    query: String,
}

#[derive(Serialize)]
pub struct SearchResponse {
    results: Vec<Record>,
    degraded: bool,
}

impl ReplyBody for SearchResponse {
    const TYPE: &'static str = "search_response";
}

pub fn handle(node: &mut Node, request: &Request<'_>) -> Result<SearchResponse, RequestError> {
    let Search { query } = request.parse_body()?;
    let (results, degraded) = super::unless_shed(node, Feature::Search, |node| {
        node.backend.search_products(&query, SEARCH_RESULT_LIMIT)
    });
    Ok(SearchResponse { results, degraded })
}
