//! The admin listener: what an operator sees and switches.
//!
//! `GET /status`, `PUT /mode`, `PUT /features/{name}`, `GET /queue`,
//! `POST /queue/process`, `GET /metrics` (Prometheus text). It is a listener
//! of its own, on loopback unless `--admin-token` is set; with a token every
//! request must carry `Authorization: Bearer <token>` (else `401`). None of
//! these routes exists on the public listener.

use super::engine::{AdminRequest, Event};
use super::exchange::{self, Body};
use super::metrics::Metrics;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// What the admin listener's tasks share.
pub struct Admin {
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
    token: Option<String>,
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
    pub fn new(events: mpsc::Sender<Event>, metrics: Arc<Metrics>, token: Option<String>) -> Self {
        Admin {
            events,
            metrics,
            token,
        }
    }

    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        if !self.authorized(request.headers()) {
            let mut answer = exchange::problem(
                StatusCode::UNAUTHORIZED,
                "admin routes need Authorization: Bearer <token>",
                serde_json::Value::Null,
            );
            answer
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Ok(answer);
        }
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_ADMIN_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return Ok(bad_request("the body is too large")),
        };
        let path = parts.uri.path();
        Ok(match (&parts.method, path) {
            (&Method::GET, "/status") => self.status().await,
            (&Method::GET, "/queue") => self.queue().await,
            (&Method::PUT, "/mode") => self.set_mode(&body).await,
            (&Method::PUT, feature) if feature.starts_with("/features/") => {
                let name = feature.trim_start_matches("/features/");
                self.set_feature(name, &body).await
            }
            (&Method::POST, "/queue/process") => self.process_queue().await,
            (&Method::GET, "/metrics") => text(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.encode(),
            ),
            (_, "/status" | "/queue" | "/mode" | "/queue/process" | "/metrics") => {
                exchange::problem(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("{} {path} is not an admin route", parts.method),
                    serde_json::Value::Null,
                )
            }
            _ => exchange::problem(
                StatusCode::NOT_FOUND,
                &format!("no admin route {path}"),
                serde_json::Value::Null,
            ),
        })
    }

    /// Whether the request may use the admin routes.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
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
        self.events.send(Event::Admin(request(reply))).await.ok()?;
        answer.await.ok()
    }

    async fn status(&self) -> Response<Body> {
        match self.ask(AdminRequest::Status).await {
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
        let SetMode { mode, cpu_usage } = match serde_json::from_slice(body) {
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
            Some(Ok(status)) => json(StatusCode::OK, &status),
            Some(Err(reason)) => bad_request(&reason),
            None => stopping(),
        }
    }

    async fn set_feature(&self, name: &str, body: &[u8]) -> Response<Body> {
        let SetFeature { enabled } = match serde_json::from_slice(body) {
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
            Some(Ok(status)) => json(StatusCode::OK, &status),
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
