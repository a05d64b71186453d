//! The control listener: where a test, a bench or an operator sets the
//! faults and reads the statistics. It is a listener of its own so that it
//! stays healthy whatever the main listener is told to do.
//!
//! - `GET /faults`: the settings in force;
//! - `PUT /faults`: replaces them (a JSON object, every field optional);
//!   answered once they are in force;
//! - `GET /stats`: what the main listener has seen;
//! - `POST /stats/reset`: zeroes the counters.

use super::api::error_body;
use super::faults::Faults;
use super::server::{ACCEPT_RETRY_DELAY, FaultChange, Upstream, respond};
use bytes::Bytes;
use http::header::{ALLOW, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// Largest `PUT /faults` body read.
const MAX_SETTINGS_BYTES: usize = 64 * 1024;

/// Runs the control listener until the process ends.
pub async fn serve_control(
    upstream: Arc<Upstream>,
    listener: TcpListener,
    changes: mpsc::Sender<FaultChange>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!("control accept failed: {err}");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let upstream = Arc::clone(&upstream);
        let changes = changes.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let service = service_fn(move |request| {
                let upstream = Arc::clone(&upstream);
                let changes = changes.clone();
                async move { Ok::<_, Infallible>(control(&upstream, &changes, request).await) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!("control connection ended: {err}");
            }
        });
    }
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("control answers serialize");
    respond(status, Bytes::from(body))
}

fn error_response(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(status, error_body(message))
}

async fn control(
    upstream: &Upstream,
    changes: &mpsc::Sender<FaultChange>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let allow = match request.uri().path() {
        "/faults" => match method {
            Method::GET => return json_response(StatusCode::OK, &upstream.faults()),
            Method::PUT => return put_faults(changes, request).await,
            _ => "GET, PUT",
        },
        "/stats" => match method {
            Method::GET => return json_response(StatusCode::OK, &upstream.stats.snapshot()),
            _ => "GET",
        },
        "/stats/reset" => match method {
            Method::POST => {
                upstream.stats.reset();
                return json_response(StatusCode::OK, &upstream.stats.snapshot());
            }
            _ => "POST",
        },
        _ => return error_response(StatusCode::NOT_FOUND, "not found"),
    };
    let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// `PUT /faults`: parses the settings and answers once the main listener
/// has them in force (its socket closed or open again as the mode says).
async fn put_faults(
    changes: &mpsc::Sender<FaultChange>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let body = match Limited::new(request.into_body(), MAX_SETTINGS_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(err) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the settings: {err}"),
            );
        }
    };
    let faults = match Faults::from_json(&body, || fastrand::u64(..)) {
        Ok(faults) => faults,
        Err(err) => return error_response(StatusCode::BAD_REQUEST, &format!("faults: {err}")),
    };
    let (applied, outcome) = oneshot::channel();
    let change = FaultChange {
        faults: faults.clone(),
        applied,
    };
    let stopped = || error_response(StatusCode::SERVICE_UNAVAILABLE, "the main listener stopped");
    if changes.send(change).await.is_err() {
        return stopped();
    }
    match outcome.await {
        Ok(Ok(())) => json_response(StatusCode::OK, &faults),
        Ok(Err(err)) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &err),
        Err(_) => stopped(),
    }
}
