//! `get_product`: a read through the product service's breaker, falling back
//! to the last good copy (marked `_cached`).

use crate::backend::{Record, Service};
use crate::node::{Node, ReadOutcome};
use crate::protocol::reply::ReplyBody;
use crate::protocol::{RecordId, Request, RequestError};
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Deserialize)]
struct GetProduct {
    product_id: RecordId,
    #[serde(default)]
    force_failures: u64,
    #[serde(default)]
    service_unavailable: bool,
}

/// Exactly the seed's keys: `product` and `_cached`.
#[derive(Serialize)]
pub struct ProductResponse {
    product: Record,
    #[serde(rename = "_cached")]
    cached: bool,
}

impl ReplyBody for ProductResponse {
    const TYPE: &'static str = "product_response";
}

pub fn handle(
    node: &mut Node,
    request: &Request<'_>,
    now: Instant,
) -> Result<ProductResponse, RequestError> {
    let GetProduct {
        product_id,
        force_failures,
        service_unavailable,
    } = request.parse_body()?;
    let faults = super::faults(force_failures, service_unavailable);
    match node.read_through(Service::Product, &product_id, faults, now)? {
        Some(ReadOutcome::Fresh(product)) => Ok(ProductResponse {
            product,
            cached: false,
        }),
        Some(ReadOutcome::Cached(product)) => Ok(ProductResponse {
            product,
            cached: true,
        }),
        None => Err(RequestError::not_found(format!(
            "product {product_id} does not exist"
        ))),
    }
}
