//! The demo services as an in-process executor of the core's calls.
//!
//! The Maelstrom node has no network behind it: its `user`, `product` and
//! `order` services are [`DemoServices`], which answer each call the
//! moment it is made, inside the same step, so a stream of requests is
//! answered in order and as fast as the node can go. Faults come from the
//! wire: a call can carry its own failure (`force_failures`,
//! `service_unavailable`), and `set_service_health` makes a service fail
//! every call until it is back.
//!
//! Answers are what an HTTP service would give: 200 with the record, 404
//! for an unknown id, 201 for a created order, and no answer at all
//! (connection refused) for a service that is down.

use super::{DemoData, OrderBook};
use crate::core::{Call, CallFailure, CallRequest, CallResult, Response, ServiceId, Storage};
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::Arc;

/// What the Maelstrom node asks a demo service for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoCall {
    pub request: DemoRequest,
    /// This call fails whatever the service's health (fault injection).
    pub fail: bool,
}

/// The demo API, one variant per endpoint. Ids are JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoRequest {
    User {
        id: String,
    },
    Product {
        id: String,
    },
    Reviews {
        product_id: String,
    },
    Recommendations {
        user_id: String,
    },
    Search {
        query: String,
    },
    /// A direct create; queued orders come back as deliveries instead.
    CreateOrder {
        idempotency_key: String,
    },
    /// A call whose only purpose is to fail (`force_failures`).
    Failure,
}

impl DemoCall {
    pub fn new(request: DemoRequest) -> Self {
        DemoCall {
            request,
            fail: false,
        }
    }

    /// The same call, failing if `fail`.
    pub fn failing_if(mut self, fail: bool) -> Self {
        self.fail = fail;
        self
    }
}

/// The body the demo order service answers a create with.
pub fn created_order_body(order_id: &str) -> Bytes {
    Bytes::from(format!(
        "{{\"order_id\":\"{order_id}\",\"status\":\"created\"}}"
    ))
}

/// The order id in a demo order service's answer.
pub fn order_id_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Created {
        order_id: String,
    }
    serde_json::from_slice::<Created>(body)
        .ok()
        .map(|created| created.order_id)
}

/// The demo services: their data, the orders taken, and which are down.
#[derive(Debug, Clone)]
pub struct DemoServices {
    data: DemoData,
    orders: OrderBook,
    down: HashSet<ServiceId>,
}

impl DemoServices {
    pub fn new(data: DemoData) -> Self {
        DemoServices {
            data,
            orders: OrderBook::default(),
            down: HashSet::new(),
        }
    }

    pub fn data(&self) -> &DemoData {
        &self.data
    }

    /// Makes `service` fail every call (or recover).
    pub fn set_available(&mut self, service: ServiceId, available: bool) {
        if available {
            self.down.remove(&service);
        } else {
            self.down.insert(service);
        }
    }

    pub fn is_available(&self, service: ServiceId) -> bool {
        !self.down.contains(&service)
    }

    /// The orders the order service holds.
    pub fn orders(&self) -> &OrderBook {
        &self.orders
    }

    /// Answers `call` at once.
    pub fn answer(&mut self, call: &Call<DemoCall>) -> CallResult {
        let fail = match &call.request {
            CallRequest::Send(demo) => demo.fail,
            CallRequest::Deliver(_) => false,
        };
        if fail || self.down.contains(&call.service) {
            return CallResult::Failed(CallFailure::Refused);
        }
        let response = match &call.request {
            CallRequest::Deliver(delivery) => self.create_order(&delivery.idempotency_key),
            CallRequest::Send(demo) => match &demo.request {
                DemoRequest::User { id } => found(self.data.user(id)),
                DemoRequest::Product { id } => found(self.data.product(id)),
                DemoRequest::Reviews { product_id } => found(self.data.reviews(product_id)),
                DemoRequest::Recommendations { user_id } => {
                    found(Some(self.data.recommendations(user_id)))
                }
                DemoRequest::Search { query } => found(Some(self.data.search(query))),
                DemoRequest::CreateOrder { idempotency_key } => self.create_order(idempotency_key),
                DemoRequest::Failure => return CallResult::Failed(CallFailure::Refused),
            },
        };
        CallResult::Answered(Arc::new(response))
    }

    fn create_order(&mut self, idempotency_key: &str) -> Response {
        let order_id = self.orders.create(idempotency_key);
        Response::new(201, created_order_body(&order_id), Storage::DoNotStore)
    }
}

/// 200 with the record (kept as a fallback), or 404.
fn found(record: Option<Bytes>) -> Response {
    match record {
        Some(body) => Response::new(200, body, Storage::Keep { max_stale: None }),
        None => Response::new(404, "{\"error\":\"not found\"}", Storage::DoNotStore),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{CallId, Delivery, ServiceSpec, Services};
    use std::time::Instant;

    fn call(service: ServiceId, request: CallRequest<DemoCall>) -> Call<DemoCall> {
        Call {
            id: CallId::new(0, 0),
            service,
            request,
            deadline: Instant::now(),
        }
    }

    fn body(result: &CallResult) -> (u16, &[u8]) {
        match result {
            CallResult::Answered(response) => (response.status, &response.body),
            CallResult::Failed(failure) => panic!("failed: {failure}"),
        }
    }

    #[test]
    fn answers_reads_and_not_found_like_an_http_service() {
        let mut services = Services::default();
        let user = services.add(ServiceSpec::named("user"));
        let mut demo =
            DemoServices::new(DemoData::from_fixtures_json(r#"{"users":[{"id":1}]}"#).unwrap());
        let read = |id: &str| CallRequest::Send(DemoCall::new(DemoRequest::User { id: id.into() }));
        assert_eq!(
            body(&demo.answer(&call(user, read("1")))),
            (200, &b"{\"id\":1}"[..])
        );
        assert_eq!(body(&demo.answer(&call(user, read("2")))).0, 404);
    }

    #[test]
    fn a_down_service_and_a_failing_call_get_no_answer() {
        let mut services = Services::default();
        let user = services.add(ServiceSpec::named("user"));
        let mut demo = DemoServices::new(DemoData::builtin());
        let request = DemoCall::new(DemoRequest::User { id: "1".into() });
        let failing = CallRequest::Send(request.clone().failing_if(true));
        assert!(matches!(
            demo.answer(&call(user, failing)),
            CallResult::Failed(_)
        ));
        demo.set_available(user, false);
        let plain = CallRequest::Send(request);
        assert!(matches!(
            demo.answer(&call(user, plain)),
            CallResult::Failed(_)
        ));
    }

    #[test]
    fn deliveries_and_direct_creates_share_the_idempotent_order_book() {
        let mut services = Services::default();
        let order = services.add(ServiceSpec::named("order"));
        let mut demo = DemoServices::new(DemoData::builtin());
        let direct = CallRequest::Send(DemoCall::new(DemoRequest::CreateOrder {
            idempotency_key: "k1".into(),
        }));
        let first = demo.answer(&call(order, direct));
        let delivery = CallRequest::Deliver(Delivery {
            request_id: 1,
            idempotency_key: Arc::from("k1"),
            payload: Bytes::from_static(b"{}"),
        });
        let again = demo.answer(&call(order, delivery));
        assert_eq!(body(&first), body(&again));
        assert_eq!(
            order_id_of(body(&first).1),
            Some(super::super::order_id_for("k1"))
        );
        assert_eq!(demo.orders().repeated_deliveries(), 1);
    }
}
