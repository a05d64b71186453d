//! The admin listener: what an operator sees and switches.
//!
//! `GET /status`, `PUT /mode`, `PUT /features/{name}`, `GET /queue`,
//! `POST /queue/process`, `GET /metrics` (Prometheus text), and the
//! dashboard ([`super::dashboard`]): `GET /` and `GET /events`. It is a
//! listener of its own, on loopback unless `--admin-token` is set; with a
//! token every request must carry `Authorization: Bearer <token>` (else
//! `401`), except the dashboard's page, script and style, which hold no
//! data. None of these routes exists on the public listener. Every `GET`
//! route answers `HEAD` as well, and a `405` lists in `Allow` the methods
//! its path takes.

use super::dashboard::Dashboard;
use super::dashboard::events::EventStream;
use super::driver::Driver;
use super::engine::{AdminRequest, Engine, Event};
use super::exchange::{self, Body};
use super::metrics::Metrics;
use super::status::StatusView;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};

/// The body of an admin answer: whole, or the dashboard's event stream.
pub type AdminBody = Either<Body, EventStream>;

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// Where a feature's kill switch is, followed by the feature's name.
const FEATURES_PREFIX: &str = "/features/";

/// What the admin listener's tasks share.
pub struct Admin {
    driver: Arc<Driver>,
    metrics: Arc<Metrics>,
    token: Option<String>,
    dashboard: Dashboard,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetMode {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    cpu_usage: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFeature {
    enabled: bool,
}

impl Admin {
    /// `stop` turning true ends the dashboard's event streams.
    pub fn new(
        driver: Arc<Driver>,
        metrics: Arc<Metrics>,
        token: Option<String>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Admin {
            driver,
            metrics,
            token,
            dashboard: Dashboard::new(stop),
        }
    }

    /// Answers one admin request: the dashboard's files without the token,
    /// `GET /events` as a stream, every other route whole; all but the
    /// files under the token.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<AdminBody>, Infallible> {
        let reads = routed_as(request.method()) == Method::GET;
        if reads && let Some(page) = super::dashboard::asset(request.uri().path()) {
            return Ok(page.map(Either::Left));
        }
        if reads && request.uri().path() == "/events" {
            if !self.authorized(request.headers()) {
                return Ok(unauthorized().map(Either::Left));
            }
            return Ok(self.events());
        }
        Ok(self.route(request).await.map(Either::Left))
    }

    async fn route(&self, request: Request<Incoming>) -> Response<Body> {
        if !self.authorized(request.headers()) {
            return unauthorized();
        }
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_ADMIN_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(err) if err.is::<LengthLimitError>() => {
                return exchange::body_too_large(MAX_ADMIN_BODY);
            }
            Err(err) => return bad_request(&format!("the body could not be read: {err}")),
        };
        let path = parts.uri.path();
        match (routed_as(&parts.method), path) {
            (&Method::GET, "/status") => self.status().await,
            (&Method::GET, "/queue") => self.queue().await,
            (&Method::PUT, "/mode") => self.set_mode(&body).await,
            (&Method::PUT, feature) if feature.starts_with(FEATURES_PREFIX) => {
                let name = feature.trim_start_matches(FEATURES_PREFIX);
                self.set_feature(name, &body).await
            }
            (&Method::POST, "/queue/process") => self.process_queue().await,
            (&Method::GET, "/metrics") => text(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                {
                    let _ = self.driver.inspect(Engine::observe_gauges);
                    self.metrics.encode()
                },
            ),
            _ => match allowed_methods(path) {
                Some(allow) => exchange::method_not_allowed(
                    &format!("{} {path} is not an admin route", parts.method),
                    allow,
                ),
                None => exchange::problem(
                    StatusCode::NOT_FOUND,
                    &format!("no admin route {path}"),
                    serde_json::Value::Null,
                ),
            },
        }
    }

    /// `GET /events`: the status once a second, for as long as it is read.
    fn events(self: Arc<Self>) -> Response<AdminBody> {
        let admin = Arc::clone(&self);
        let snapshot = move || {
            let admin = Arc::clone(&admin);
            async move {
                let status = admin.status_view().await?;
                Some(serde_json::to_string(&status).expect("admin views serialize"))
            }
        };
        match self.dashboard.events(snapshot) {
            Some(stream) => stream.map(Either::Right),
            None => {
                let mut answer = exchange::problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many event streams are open; close one, or poll GET /status",
                    serde_json::Value::Null,
                );
                answer
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                answer.map(Either::Left)
            }
        }
    }

    /// The engine's snapshot, with what only this listener knows.
    async fn status_view(&self) -> Option<StatusView> {
        self.ask(AdminRequest::Status)
            .await
            .map(|status| self.completed(status))
    }

    /// `status` with the event streams open now.
    fn completed(&self, mut status: StatusView) -> StatusView {
        status.event_streams = self.dashboard.live_streams();
        status
    }

    /// Whether the request may use the admin routes.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        // The scheme's name is case-insensitive (RFC 9110, section 11.1).
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
            .map(|(_, token)| token);
        // Compared in full whatever matches, so timing says nothing.
        given.is_some_and(|given| {
            given.len() == token.len()
                && given
                    .bytes()
                    .zip(token.bytes())
                    .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                    == 0
        })
    }

    async fn ask<T>(&self, request: impl FnOnce(oneshot::Sender<T>) -> AdminRequest) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.driver.send(Event::Admin(request(reply))).ok()?;
        answer.await.ok()
    }

    async fn status(&self) -> Response<Body> {
        match self.status_view().await {
            Some(status) => json(StatusCode::OK, &status),
            None => stopping(),
        }
    }

    async fn queue(&self) -> Response<Body> {
        match self.ask(AdminRequest::Status).await {
            Some(status) => json(StatusCode::OK, &status.queue),
            None => stopping(),
        }
    }

    async fn set_mode(&self, body: &[u8]) -> Response<Body> {
        let SetMode { mode, cpu_usage } = match from_json_object(body) {
            Ok(parsed) => parsed,
            Err(err) => return bad_request(&format!("expected {{\"mode\": ...}}: {err}")),
        };
        let answer = self
            .ask(|reply| AdminRequest::SetMode {
                mode,
                cpu_usage,
                reply,
            })
            .await;
        match answer {
            Some(Ok(status)) => json(StatusCode::OK, &self.completed(status)),
            Some(Err(reason)) => bad_request(&reason),
            None => stopping(),
        }
    }

    async fn set_feature(&self, name: &str, body: &[u8]) -> Response<Body> {
        let SetFeature { enabled } = match from_json_object(body) {
            Ok(parsed) => parsed,
            Err(err) => {
                return bad_request(&format!("expected {{\"enabled\": true|false}}: {err}"));
            }
        };
        let feature = name.to_string();
        let answer = self
            .ask(|reply| AdminRequest::SetFeature {
                feature,
                enabled,
                reply,
            })
            .await;
        match answer {
            Some(Ok(status)) => json(StatusCode::OK, &self.completed(status)),
            Some(Err(reason)) => {
                exchange::problem(StatusCode::NOT_FOUND, &reason, serde_json::Value::Null)
            }
            None => stopping(),
        }
    }

    async fn process_queue(&self) -> Response<Body> {
        match self.ask(AdminRequest::ProcessQueue).await {
            Some((processed, remaining)) => json(
                StatusCode::OK,
                &serde_json::json!({ "processed": processed, "remaining": remaining }),
            ),
            None => stopping(),
        }
    }
}

/// `body` read as `T`, which it must spell as a JSON object. serde's
/// derived structs take a JSON array too, field by field in order, so
/// `["critical"]` would pass for `{"mode": "critical"}` and `[]` for `{}`:
/// anything but an object is refused before serde reads it as `T`.
fn from_json_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let first = body
        .iter()
        .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'));
    if first == Some(&b'{') {
        return serde_json::from_slice(body).map_err(|err| err.to_string());
    }
    // Not an object: read whole only to say what it is instead.
    match serde_json::from_slice(body) {
        Ok(value) => Err(format!("the body is {}, not an object", json_kind(&value))),
        Err(err) => Err(err.to_string()),
    }
}

/// What kind of JSON value `value` is, as a sentence names it.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The method a request is routed as: `HEAD` as `GET`, whose answer hyper
/// sends without its body (RFC 9110 asks a server to answer `HEAD` wherever
/// it answers `GET`, with the same headers).
fn routed_as(method: &Method) -> &Method {
    if method == Method::HEAD {
        &Method::GET
    } else {
        method
    }
}

/// The methods `path` takes, as a `405`'s `Allow` lists them (RFC 9110
/// requires it); `None` when `path` is no admin route at all (`404`).
fn allowed_methods(path: &str) -> Option<&'static str> {
    match path {
        "/status" | "/queue" | "/metrics" | "/events" | "/" | "/dashboard.css"
        | "/dashboard.js" => Some("GET, HEAD"),
        "/mode" => Some("PUT"),
        "/queue/process" => Some("POST"),
        _ if path.starts_with(FEATURES_PREFIX) => Some("PUT"),
        _ => None,
    }
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("admin views serialize");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    exchange::response(status, headers, Bytes::from(body))
}

fn text(content_type: &'static str, body: String) -> Response<Body> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    exchange::response(StatusCode::OK, headers, Bytes::from(body))
}

/// A `401`, given before any body the request carries is read (a client
/// without the token does not get to make grace read its upload), so the
/// connection closes after it: a client that reused it would find its next
/// request cut off by the unread bytes.
fn unauthorized() -> Response<Body> {
    let mut answer = exchange::problem(
        StatusCode::UNAUTHORIZED,
        "admin routes need Authorization: Bearer <token>",
        serde_json::Value::Null,
    );
    let headers = answer.headers_mut();
    headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    answer
}

fn bad_request(detail: &str) -> Response<Body> {
    exchange::problem(StatusCode::BAD_REQUEST, detail, serde_json::Value::Null)
}

fn stopping() -> Response<Body> {
    exchange::problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "grace is stopping",
        serde_json::Value::Null,
    )
}
