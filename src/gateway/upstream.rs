//! The gateway's executor of the core's calls: HTTP to real services, or
//! the built-in demo services in-process.
//!
//! An HTTP call is a job made on a pooled keep-alive client, in the task of
//! the client it passes on or in a task of its own; it ends by its deadline
//! whatever the upstream does (a hung service costs a task until then,
//! never a client more than its route's timeout), with its result and how
//! long it took ([`CallEnd`]), which the driver steps into the engine. The
//! answer's hop-by-hop headers are dropped here, and whether it may be kept
//! as a fallback copy is decided here, where its headers are at hand.

use super::config::Upstream;
use super::exchange::{self, StoredRequest};
use super::pool::{ExchangeError, Pool};
use crate::core::{
    Call, CallFailure, CallId, CallRequest, CallResult, Response, ServiceId, Storage,
};
use crate::demo::DemoData;
use crate::demo::upstream::api::{self, Endpoint, OrderDesk};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest upstream answer body read; a longer one is a failed call.
pub const MAX_UPSTREAM_BODY_BYTES: usize = 16 * 1024 * 1024;

/// What the gateway asks a service for.
#[derive(Debug)]
pub struct HttpCall {
    pub method: Method,
    pub path_and_query: PathAndQuery,
    /// End-to-end headers to send (hop-by-hop ones already gone).
    pub headers: HeaderMap,
    pub body: Bytes,
    /// For a GET on a cache route: the route, and the request headers its
    /// cache key holds (an answer varying on others is not kept).
    pub keep: Option<(usize, Vec<HeaderName>)>,
}

/// The demo services, answering in-process.
struct Demo {
    data: DemoData,
    orders: OrderDesk,
}

/// Who answers one service's calls.
enum Executor {
    /// Its upstream, over its keep-alive connections.
    Http(Arc<Pool>),
    Demo,
}

/// Every service's executor.
pub struct Upstreams {
    /// By service id.
    executors: Vec<Executor>,
    demo: Arc<Demo>,
}

impl Upstreams {
    /// Executors for services whose calls go to `upstreams` (in
    /// [`ServiceId`] order).
    pub fn new<'a>(upstreams: impl Iterator<Item = &'a Upstream>, data: DemoData) -> Self {
        let executors = upstreams
            .map(|upstream| match upstream {
                Upstream::Http(authority) => Executor::Http(Arc::new(Pool::new(authority.clone()))),
                Upstream::Demo => Executor::Demo,
            })
            .collect();
        Upstreams {
            executors,
            demo: Arc::new(Demo {
                data,
                orders: OrderDesk::new(exchange::random_id()),
            }),
        }
    }

    /// Starts `call`: an in-process answer is there at once; an HTTP call
    /// is a job for whoever runs it ([`HttpJob::run`]).
    pub fn start(&self, call: Call<HttpCall>) -> Started {
        let (id, service, deadline) = (call.id, call.service, call.deadline);
        let for_its_client = matches!(call.request, CallRequest::Send(_));
        let request = match outgoing(call) {
            Ok(request) => request,
            Err(reason) => {
                return Started::Answered(CallResult::Failed(CallFailure::Broken(reason)));
            }
        };
        match &self.executors[service.index()] {
            Executor::Demo => Started::Answered(self.demo.answer(request)),
            Executor::Http(pool) => Started::Http(HttpJob {
                pool: Arc::clone(pool),
                request,
                id,
                service,
                deadline,
                for_its_client,
            }),
        }
    }
}

/// What starting a call gave.
#[expect(
    clippy::large_enum_variant,
    reason = "made once per call and moved once, into the step's calls"
)]
pub enum Started {
    /// Answered in-process, at once.
    Answered(CallResult),
    /// To be made over HTTP.
    Http(HttpJob),
}

/// An HTTP call ready to be made.
pub struct HttpJob {
    pool: Arc<Pool>,
    request: Outgoing,
    id: CallId,
    service: ServiceId,
    deadline: Instant,
    /// The call passes a client's request on (a queue's delivery does not).
    for_its_client: bool,
}

/// How an HTTP call ended.
pub struct CallEnd {
    pub id: CallId,
    pub service: ServiceId,
    pub took: Duration,
    /// `None`: no answer by the deadline (the core fails the call there on
    /// its own; this is only a count).
    pub result: Option<CallResult>,
    /// A route whose answers vary on headers its cache key did not hold.
    pub learned: Option<(usize, Vec<HeaderName>)>,
}

impl HttpJob {
    /// Whether this call passes a client's request on, so that the client's
    /// own task can make it.
    pub fn is_for_its_client(&self) -> bool {
        self.for_its_client
    }

    /// Makes the call, ending by its deadline whatever the upstream does.
    pub async fn run(self) -> CallEnd {
        let started = Instant::now();
        let sent =
            tokio::time::timeout_at(self.deadline.into(), send(&self.pool, self.request)).await;
        let (result, learned) = match sent {
            Ok(Sent { result, learned }) => (Some(result), learned),
            Err(_) => (None, None),
        };
        CallEnd {
            id: self.id,
            service: self.service,
            took: started.elapsed(),
            result,
            learned,
        }
    }
}

/// A request ready to send.
struct Outgoing {
    method: Method,
    path_and_query: PathAndQuery,
    headers: HeaderMap,
    body: Bytes,
    keep: Option<(usize, Vec<HeaderName>)>,
}

/// What a call sends: the front door's request, or a queued write's stored one.
fn outgoing(call: Call<HttpCall>) -> Result<Outgoing, String> {
    Ok(match call.request {
        CallRequest::Send(http) => Outgoing {
            method: http.method,
            path_and_query: http.path_and_query,
            headers: http.headers,
            body: http.body,
            keep: http.keep,
        },
        CallRequest::Deliver(delivery) => {
            let stored = StoredRequest::from_json(&delivery.payload)?;
            let (method, headers, body) = stored.decode()?;
            let path_and_query = PathAndQuery::try_from(stored.path_and_query)
                .map_err(|err| format!("bad path: {err}"))?;
            Outgoing {
                method,
                path_and_query,
                headers,
                body,
                keep: None,
            }
        }
    })
}

/// A call's result, and the headers a route turned out to vary on.
struct Sent {
    result: CallResult,
    learned: Option<(usize, Vec<HeaderName>)>,
}

async fn send(pool: &Pool, request: Outgoing) -> Sent {
    let failed = |failure| Sent {
        result: CallResult::Failed(failure),
        learned: None,
    };
    let uri = Uri::from(request.path_and_query);
    let mut builder = Request::builder().method(request.method).uri(uri);
    if let Some(headers) = builder.headers_mut() {
        *headers = request.headers;
    }
    let outgoing = match builder.body(Full::new(request.body)) {
        Ok(outgoing) => outgoing,
        Err(err) => return failed(CallFailure::Broken(format!("bad request: {err}"))),
    };
    let answer = match pool.exchange(outgoing, MAX_UPSTREAM_BODY_BYTES).await {
        Ok(answer) => answer,
        Err(ExchangeError::Connect(_)) => return failed(CallFailure::Refused),
        Err(ExchangeError::Http(reason)) => return failed(CallFailure::Broken(reason)),
    };
    let (parts, body) = answer.into_parts();
    let mut headers = parts.headers;
    exchange::strip_hop_by_hop(&mut headers);
    let (storage, learned) = keep(request.keep, parts.status, &headers);
    Sent {
        result: CallResult::Answered(Arc::new(Response {
            status: parts.status.as_u16(),
            headers: headers.into(),
            body,
            storage,
        })),
        learned,
    }
}

/// Whether an answer may be kept, and the vary headers the route's key
/// still lacks.
fn keep(
    keep: Option<(usize, Vec<HeaderName>)>,
    status: StatusCode,
    headers: &HeaderMap,
) -> (Storage, Option<(usize, Vec<HeaderName>)>) {
    let Some((route, keyed)) = keep else {
        return (Storage::DoNotStore, None);
    };
    let Some(varied) = exchange::vary_names(headers) else {
        return (Storage::DoNotStore, None);
    };
    let missing: Vec<HeaderName> = varied
        .into_iter()
        .filter(|name| !keyed.contains(name))
        .collect();
    let storage = exchange::storage_for(status, headers, missing.is_empty());
    let learned = (!missing.is_empty()).then_some((route, missing));
    (storage, learned)
}

impl Demo {
    /// The demo API's answer, as if it came over HTTP.
    fn answer(&self, request: Outgoing) -> CallResult {
        let (path, query) = (
            request.path_and_query.path(),
            request.path_and_query.query(),
        );
        let answer = match api::resolve(&request.method, path) {
            Endpoint::CreateOrder => {
                api::create_order(&self.orders, &request.headers, &request.body)
            }
            endpoint => api::read(&self.data, endpoint, query),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let (storage, _) = keep(request.keep, answer.status, &headers);
        CallResult::Answered(Arc::new(Response {
            status: answer.status.as_u16(),
            headers: headers.into(),
            body: answer.body,
            storage,
        }))
    }
}
