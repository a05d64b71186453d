//! The public listener: accepts clients, holds them to the limits, and
//! turns each request into an event for the engine and its [`Answer`]
//! into a response.
//!
//! Limits, each a flag with a default: a client that does not send its
//! headers in time is dropped (slowloris), one that does not send its
//! body in time gets `408`, headers too large get `431`, a body too large
//! `413`, and beyond `--max-in-flight` requests at once a
//! request gets `503` with `Retry-After` at once (a bulkhead: nothing
//! queues up in memory). The admin routes are not served here, ever.

use super::config::{GatewayConfig, RouteConfig};
use super::driver::Driver;
use super::engine::{AdminRequest, Answer, Event, Incoming};
use super::exchange::{self, Body, ClientAddress};
use super::metrics::{Metrics, RequestOutcome};
use super::routes::Router;
use crate::core::queue::WriteStatus;
use crate::core::{CallFailure, Cause, ReadOutcome, SendOutcome, WriteOutcome, WriteSnapshot};
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming as IncomingBody;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, oneshot};

/// Where request status is asked for, on the public listener.
const REQUEST_STATUS_PREFIX: &str = "/grace/requests/";

/// The limits a client is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    /// From the end of the headers to the end of the body.
    pub body_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub max_in_flight: usize,
}

/// What every connection task shares.
pub struct Public {
    routes: Vec<RouteConfig>,
    router: Router,
    driver: Arc<Driver>,
    metrics: Arc<Metrics>,
    in_flight: Arc<Semaphore>,
    limits: Limits,
}

impl Public {
    pub fn new(
        config: &GatewayConfig,
        driver: Arc<Driver>,
        metrics: Arc<Metrics>,
        limits: Limits,
    ) -> Self {
        Public {
            router: Router::new(
                config
                    .routes
                    .iter()
                    .map(|route| (&route.method, &route.path)),
            ),
            routes: config.routes.clone(),
            driver,
            metrics,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Answers one request from `client`.
    pub async fn handle(
        self: Arc<Self>,
        client: ClientAddress,
        request: Request<IncomingBody>,
    ) -> Result<Response<Body>, Infallible> {
        let path = request.uri().path();
        let body_unread = Unread::of(&request);
        if path.split('/').any(is_dot_segment) {
            let answer = exchange::problem(
                StatusCode::BAD_REQUEST,
                &format!("the path {path} has a \".\" or \"..\" segment"),
                serde_json::Value::Null,
            );
            self.metrics.request(None, RequestOutcome::Rejected);
            return Ok(body_unread.close_after(answer));
        }
        if let Some(public_id) = path.strip_prefix(REQUEST_STATUS_PREFIX) {
            let answer = self.request_status(request.method(), public_id).await;
            return Ok(body_unread.close_after(answer));
        }
        let Some(route) = self.router.route(request.method(), path) else {
            let allowed = self.router.methods_for(path);
            let answer = if !allowed.is_empty() {
                let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
                exchange::method_not_allowed(
                    &format!("no route takes {} {path}", request.method()),
                    &allow.join(", "),
                )
            } else {
                exchange::problem(
                    StatusCode::NOT_FOUND,
                    &format!("no route matches {path}"),
                    serde_json::Value::Null,
                )
            };
            self.metrics.request(None, RequestOutcome::Rejected);
            return Ok(body_unread.close_after(answer));
        };
        let (answer, outcome) = self.forward(route, &client, request, body_unread).await;
        self.metrics.request(Some(route), outcome);
        Ok(answer)
    }

    async fn forward(
        &self,
        route: usize,
        client: &ClientAddress,
        request: Request<IncomingBody>,
        body_unread: Unread,
    ) -> (Response<Body>, RequestOutcome) {
        let rejected = |answer| (answer, RequestOutcome::Rejected);
        // A bulkhead, not a queue: beyond the limit, say so at once.
        let Ok(_permit) = self.in_flight.try_acquire() else {
            let mut answer = exchange::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests in flight; retry shortly",
                serde_json::Value::Null,
            );
            answer
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return rejected(body_unread.close_after(answer));
        };
        let (parts, body) = request.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.limits.max_body_bytes as u64) {
            return rejected(self.too_large());
        }
        let body = match body_unread {
            // No body: nothing to read, nothing to time.
            Unread::Nothing => Bytes::new(),
            Unread::Body => match self.read_body(body).await {
                Ok(body) => body,
                Err(answer) => return rejected(answer),
            },
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut headers = parts.headers;
        exchange::forward_request_headers(&mut headers, client);
        let answer = self
            .driver
            .request(|reply| Incoming {
                route,
                method: parts.method,
                path_and_query,
                headers,
                body,
                reply,
            })
            .await;
        respond(&self.routes[route], answer)
    }

    /// A request's whole body, or the answer to give instead when it is
    /// larger than allowed or does not arrive in time.
    async fn read_body(&self, body: IncomingBody) -> Result<Bytes, Response<Body>> {
        let read = Limited::new(body, self.limits.max_body_bytes).collect();
        match tokio::time::timeout(self.limits.body_read_timeout, read).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(_)) => Err(self.too_large()),
            Err(_) => {
                // A slow body holds a place in flight: give it back, and
                // end the connection (the rest of the body never came).
                let answer = exchange::problem(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!(
                        "the body did not arrive within {} ms",
                        self.limits.body_read_timeout.as_millis()
                    ),
                    serde_json::Value::Null,
                );
                Err(Unread::Body.close_after(answer))
            }
        }
    }

    /// `413`, the connection closed after it: the body is never read to its end.
    fn too_large(&self) -> Response<Body> {
        exchange::body_too_large(self.limits.max_body_bytes)
    }

    /// `GET /grace/requests/{id}`: where a queued write stands.
    async fn request_status(&self, method: &Method, public_id: &str) -> Response<Body> {
        if method != Method::GET {
            return exchange::problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET",
                serde_json::Value::Null,
            );
        }
        let (reply, snapshot) = oneshot::channel();
        let asked = AdminRequest::Write {
            public_id: public_id.to_string(),
            reply,
        };
        if self.driver.send(Event::Admin(asked)).is_err() {
            return stopped("grace is stopping");
        }
        match snapshot.await {
            Ok(Some(snapshot)) => write_status(&snapshot),
            Ok(None) => exchange::problem(
                StatusCode::NOT_FOUND,
                "no request with this id",
                serde_json::Value::Null,
            ),
            Err(_) => stopped("grace is stopping"),
        }
    }
}

fn stopped(why: &str) -> Response<Body> {
    exchange::problem(
        StatusCode::SERVICE_UNAVAILABLE,
        why,
        serde_json::Value::Null,
    )
}

/// The response to a request on `route` whose core outcome is `answer`.
fn respond(route: &RouteConfig, answer: Answer) -> (Response<Body>, RequestOutcome) {
    let service = route.service.as_str();
    match answer {
        Answer::Degraded => {
            let degraded = &route.degraded;
            let feature = route.feature.as_deref().unwrap_or_default();
            (
                exchange::degraded(
                    degraded.status,
                    &degraded.content_type,
                    &degraded.body,
                    feature,
                ),
                RequestOutcome::Degraded,
            )
        }
        Answer::Read(ReadOutcome::Fresh(response), circuit) => {
            (exchange::fresh(response, circuit), RequestOutcome::Fresh)
        }
        Answer::Read(ReadOutcome::Stale { copy, .. }, circuit) => {
            let age = copy.age(Instant::now());
            (exchange::stale(&copy, age, circuit), RequestOutcome::Stale)
        }
        Answer::Read(ReadOutcome::Unavailable { cause, retry_after }, circuit) => (
            exchange::unavailable(service, retry_after, circuit, &describe(&cause)),
            RequestOutcome::Unavailable,
        ),
        Answer::Sent(SendOutcome::Answered { response, failed }, circuit) => {
            let outcome = if failed {
                RequestOutcome::Unavailable
            } else {
                RequestOutcome::Fresh
            };
            (exchange::fresh(response, circuit), outcome)
        }
        Answer::Sent(SendOutcome::Failed(failure), circuit) => {
            let status = match failure {
                CallFailure::TimedOut => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            };
            let mut answer = exchange::problem(
                status,
                &format!("service {service:?} did not answer: {failure}"),
                serde_json::json!({ "service": service }),
            );
            answer.headers_mut().insert(
                exchange::CIRCUIT_STATE,
                HeaderValue::from_static(circuit.as_str()),
            );
            (answer, RequestOutcome::Unavailable)
        }
        Answer::Sent(SendOutcome::Refused { cause, retry_after }, circuit) => (
            exchange::unavailable(service, retry_after, circuit, &describe(&cause)),
            RequestOutcome::Unavailable,
        ),
        Answer::Write {
            outcome,
            circuit,
            public_id,
            fingerprint,
        } => respond_write(service, *outcome, circuit, &public_id, &fingerprint),
        Answer::Stopped(why) => (stopped(&why), RequestOutcome::Unavailable),
    }
}

/// A write's outcome as a response.
fn respond_write(
    service: &str,
    outcome: WriteOutcome,
    circuit: crate::core::breaker::BreakerState,
    public_id: &str,
    fingerprint: &str,
) -> (Response<Body>, RequestOutcome) {
    match outcome {
        WriteOutcome::Delivered { response, .. } => {
            (exchange::fresh(response, circuit), RequestOutcome::Fresh)
        }
        WriteOutcome::Queued {
            position, durable, ..
        } => (
            exchange::accepted(public_id, Some(position), "queued", durable, circuit),
            RequestOutcome::Queued,
        ),
        WriteOutcome::Repeat(snapshot) => {
            if snapshot.write.fingerprint.as_deref() != Some(fingerprint) {
                let answer = exchange::problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "this Idempotency-Key was used for a different request",
                    serde_json::Value::Null,
                );
                return (answer, RequestOutcome::Rejected);
            }
            let first_id = snapshot.write.public_id.clone().unwrap_or_default();
            match (&snapshot.write.status, &snapshot.write.response) {
                (WriteStatus::Delivered, Some(stored)) => {
                    (exchange::replayed(stored, circuit), RequestOutcome::Fresh)
                }
                (status, _) => (
                    exchange::accepted(
                        &first_id,
                        snapshot.position,
                        status_name(*status),
                        snapshot.durable,
                        circuit,
                    ),
                    RequestOutcome::Queued,
                ),
            }
        }
        WriteOutcome::InFlight => (
            exchange::problem(
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key is being sent; retry to learn its outcome",
                serde_json::Value::Null,
            ),
            RequestOutcome::Rejected,
        ),
        WriteOutcome::Refused { reason } => {
            let mut answer = exchange::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "service {service:?} cannot take the request now and the queue is not durable ({reason})"
                ),
                serde_json::json!({ "service": service }),
            );
            answer
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            (answer, RequestOutcome::Unavailable)
        }
    }
}

/// A write's status as the gateway names it.
fn status_name(status: WriteStatus) -> &'static str {
    match status {
        WriteStatus::Queued => "queued",
        WriteStatus::Delivered => "delivered",
        WriteStatus::DeadLetter => "dead_letter",
    }
}

/// `GET /grace/requests/{id}`'s answer.
fn write_status(snapshot: &WriteSnapshot) -> Response<Body> {
    let write = &snapshot.write;
    let mut body = serde_json::json!({
        "id": write.public_id,
        "status": status_name(write.status),
        "attempts": write.attempts,
    });
    if let Some(position) = snapshot.position {
        body["position"] = position.into();
    }
    if !snapshot.durable {
        body["durable"] = false.into();
    }
    if let Some(response) = &write.response {
        let mut delivered = serde_json::json!({ "status": response.status });
        match std::str::from_utf8(&response.body) {
            Ok(text) => delivered["body"] = text.into(),
            Err(_) => {
                use base64::Engine as _;
                delivered["body_base64"] = base64::engine::general_purpose::STANDARD
                    .encode(&response.body)
                    .into();
            }
        }
        if let Some(content_type) = &response.content_type {
            delivered["content_type"] = content_type.as_str().into();
        }
        body["response"] = delivered;
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    exchange::response(StatusCode::OK, headers, Bytes::from(body.to_string()))
}

fn describe(cause: &Cause) -> String {
    match cause {
        Cause::BreakerOpen { .. } => "its circuit breaker is open".into(),
        Cause::ProbesOut => "its circuit breaker is half-open and its probes are out".into(),
        Cause::Failed(failure) => format!("the call {failure}"),
        Cause::FailureStatus(status) => format!("it answered {status}"),
    }
}

/// Whether a request's body may still be unread when it is answered.
#[derive(Clone, Copy)]
enum Unread {
    /// Known to be empty: nothing is left on the connection.
    Nothing,
    /// Some of it may be waiting, unread.
    Body,
}

impl Unread {
    fn of(request: &Request<IncomingBody>) -> Self {
        if hyper::body::Body::is_end_stream(request.body()) {
            Unread::Nothing
        } else {
            Unread::Body
        }
    }

    /// `answer`, marked to close the connection when a body is left unread
    /// behind it: hyper closes such a connection anyway, and a client that
    /// was not told would send its next request into a closed connection.
    fn close_after(self, mut answer: Response<Body>) -> Response<Body> {
        if let Unread::Body = self {
            answer
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        answer
    }
}

/// Whether a path segment is `.` or `..`, plain or percent-encoded (`%2e`).
/// An upstream that resolves such segments (RFC 3986, section 5.2.4) would
/// answer `/users/..` as `/`, a path no route exposes, so the public
/// listener refuses them (`400`), where nginx would resolve them first;
/// `{name}` never matches one.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', after @ ..] => after,
            [b'%', b'2', e, after @ ..] if e.eq_ignore_ascii_case(&b'e') => after,
            _ => return false,
        };
        dots += 1;
    }
    (1..=2).contains(&dots)
}

#[cfg(test)]
mod tests {
    use super::is_dot_segment;

    #[test]
    fn dot_segments_are_found_plain_or_percent_encoded() {
        for dots in [".", "..", "%2e", "%2E%2e", ".%2e", "%2e."] {
            assert!(is_dot_segment(dots), "{dots}");
        }
        for other in ["", "...", "a.", ".a", "..%2f", "%2", "%2f", "users"] {
            assert!(!is_dot_segment(other), "{other}");
        }
    }
}
