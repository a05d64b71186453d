//! `get_recommendations`, `search` and `get_reviews`: non-critical features
//! that read from the product service.
//!
//! A feature switched off (by the load mode or a kill switch) answers at
//! once with an empty list and `"degraded": true`, without calling anyone.
//! Otherwise it reads through the product service's breaker like any read;
//! when the service cannot answer it degrades instead of pretending: the
//! last good answer to the same question if there is one, else an empty
//! list, and `"degraded": true` either way.

use super::Ctx;
use crate::core::load_mode::FeatureId;
use crate::core::{Outcome, ReadOutcome, Sharing};
use crate::demo::in_process::{DemoCall, DemoRequest};
use crate::protocol::reply::ReplyBody;
use crate::protocol::{RecordId, Request, RequestError};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Which feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Recommendations,
    Search,
    Reviews,
}

#[derive(Deserialize)]
struct GetRecommendations {
    user_id: RecordId,
}

#[derive(Deserialize)]
struct Search {
    query: String,
}

#[derive(Deserialize)]
struct GetReviews {
    product_id: RecordId,
}

/// A feature's reply: its list under the feature's own key, and whether it
/// was degraded.
struct FeatureResponse<'a> {
    kind: Kind,
    items: &'a RawValue,
    degraded: bool,
}

impl Serialize for FeatureResponse<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut reply = serializer.serialize_struct("FeatureResponse", 2)?;
        reply.serialize_field(self.kind.list_key(), self.items)?;
        reply.serialize_field("degraded", &self.degraded)?;
        reply.end()
    }
}

/// `reply` as a typed reply body of `kind`.
macro_rules! typed_reply {
    ($name:ident, $type:literal) => {
        struct $name<'a>(FeatureResponse<'a>);
        impl Serialize for $name<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(serializer)
            }
        }
        impl ReplyBody for $name<'_> {
            const TYPE: &'static str = $type;
        }
    };
}

typed_reply!(RecommendationsResponse, "recommendations_response");
typed_reply!(SearchResponse, "search_response");
typed_reply!(ReviewsResponse, "reviews_response");

impl Kind {
    fn feature(self, ctx: &Ctx<'_>) -> FeatureId {
        let features = &ctx.node.features;
        match self {
            Kind::Recommendations => features.recommendations,
            Kind::Search => features.search,
            Kind::Reviews => features.reviews,
        }
    }

    fn list_key(self) -> &'static str {
        match self {
            Kind::Recommendations => "recommendations",
            Kind::Search => "results",
            Kind::Reviews => "reviews",
        }
    }

    /// The question and the product service's key for it: distinct from
    /// product ids (JSON text never starts with a letter) and from each
    /// other.
    fn request(self, request: &Request<'_>) -> Result<(DemoRequest, String), RequestError> {
        let id_json = |id: &RecordId| serde_json::to_string(id).expect("ids serialize");
        Ok(match self {
            Kind::Recommendations => {
                let user_id = id_json(&request.parse_body::<GetRecommendations>()?.user_id);
                let key = format!("recommendations/{user_id}");
                (DemoRequest::Recommendations { user_id }, key)
            }
            Kind::Search => {
                let query = request.parse_body::<Search>()?.query;
                let key = format!("search?{query}");
                (DemoRequest::Search { query }, key)
            }
            Kind::Reviews => {
                let product_id = id_json(&request.parse_body::<GetReviews>()?.product_id);
                let key = format!("reviews/{product_id}");
                (DemoRequest::Reviews { product_id }, key)
            }
        })
    }
}

/// A feature read waiting for the product service.
pub struct Waiting {
    kind: Kind,
    /// What the read was about, for a not-found error (a review's product).
    subject: String,
}

pub fn start(kind: Kind, request: &Request<'_>, ctx: &mut Ctx<'_>) -> Option<super::Waiting> {
    let (demo_request, key) = match kind.request(request) {
        Ok(parsed) => parsed,
        Err(error) => {
            ctx.reply_error(&error);
            return None;
        }
    };
    if !ctx.core.shedder().is_enabled(kind.feature(ctx)) {
        reply(kind, EMPTY_LIST, true, ctx);
        return None;
    }
    let product = ctx.node.services.product;
    let subject = match &demo_request {
        DemoRequest::Reviews { product_id } => product_id.clone(),
        _ => String::new(),
    };
    let call = DemoCall::new(demo_request);
    ctx.core.read(
        ctx.waiter,
        product,
        key.as_bytes(),
        || call,
        Sharing::Coalesce,
        ctx.now,
    );
    Some(super::Waiting::FeatureRead(Waiting { kind, subject }))
}

const EMPTY_LIST: &[u8] = b"[]";

pub fn resume(waiting: Waiting, outcome: Outcome, ctx: &mut Ctx<'_>) -> Option<super::Waiting> {
    let Outcome::Read(outcome) = outcome else {
        unreachable!("a feature read is answered with a read outcome");
    };
    match &outcome {
        ReadOutcome::Fresh(response) if response.status == 404 => {
            let error = format!("product {} does not exist", waiting.subject);
            ctx.reply_error(&RequestError::not_found(error));
        }
        ReadOutcome::Fresh(response) => reply(waiting.kind, &response.body, false, ctx),
        ReadOutcome::Stale { copy, .. } => reply(waiting.kind, &copy.response.body, true, ctx),
        ReadOutcome::Unavailable { .. } => reply(waiting.kind, EMPTY_LIST, true, ctx),
    }
    None
}

fn reply(kind: Kind, list: &[u8], degraded: bool, ctx: &mut Ctx<'_>) {
    let items = serde_json::from_slice::<&RawValue>(list)
        .unwrap_or_else(|_| serde_json::from_slice(EMPTY_LIST).expect("[] is JSON"));
    let response = FeatureResponse {
        kind,
        items,
        degraded,
    };
    match kind {
        Kind::Recommendations => ctx.reply(&RecommendationsResponse(response)),
        Kind::Search => ctx.reply(&SearchResponse(response)),
        Kind::Reviews => ctx.reply(&ReviewsResponse(response)),
    }
}
