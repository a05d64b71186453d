//! The main listener: the demo API over HTTP/1.1 (keep-alive), with the
//! faults in force applied to every request.
//!
//! One task owns the listening socket. It accepts connections and applies
//! fault changes, one at a time, so that when the control API says a change
//! is made it really is: in `refuse` the socket is closed (a connect is
//! refused) and every open connection is dropped; leaving `refuse` binds the
//! same address again. Each connection is a task serving requests one after
//! another; a request held by `hang` waits on the settings and is answered
//! under the new ones when they change.

use super::api::{self, Answer, Endpoint, OrderDesk, Replayed};
use super::faults::{ActiveFaults, Faults, Mode, Verdict};
use super::stats::Stats;
use crate::demo::DemoData;
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

/// Largest order body the main listener reads.
pub const MAX_ORDER_BYTES: usize = 1 << 20;
/// Pause after a failed accept (out of descriptors, say) before the next.
pub(super) const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(20);
/// The header that marks an order answer as a repeat of an earlier one.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The body of an injected failure.
const INJECTED_FAULT_BODY: &[u8] = br#"{"error":"injected fault"}"#;

/// What the main listener serves, and what it is told and counts.
#[derive(Debug)]
pub struct Upstream {
    data: DemoData,
    orders: OrderDesk,
    pub stats: Stats,
    faults: watch::Sender<ActiveFaults>,
}

/// A change of the fault settings, and where to say it is in force.
#[derive(Debug)]
pub struct FaultChange {
    pub faults: Faults,
    pub applied: oneshot::Sender<Result<(), String>>,
}

impl Upstream {
    pub fn new(data: DemoData, orders: OrderDesk) -> Self {
        Upstream {
            data,
            orders,
            stats: Stats::default(),
            faults: watch::Sender::new(ActiveFaults::default()),
        }
    }

    /// The settings in force.
    pub fn faults(&self) -> Faults {
        self.faults.borrow().faults.clone()
    }

    /// Answers one request on the main listener.
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        let endpoint = api::resolve(request.method(), path);
        let _in_flight = self.stats.request(endpoint.route());
        if let Some(status) = self.undergo_faults(path).await {
            return respond(status, Bytes::from_static(INJECTED_FAULT_BODY));
        }
        let answer = match endpoint {
            Endpoint::CreateOrder => self.create_order(request).await,
            Endpoint::WrongMethod { allow } => {
                let answer = Answer::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
                let mut response = respond(answer.status, answer.body);
                let allow = HeaderValue::from_str(allow.as_str()).expect("methods are tokens");
                response.headers_mut().insert(ALLOW, allow);
                return response;
            }
            read => api::read(&self.data, read, request.uri().query()),
        };
        let mut response = respond(answer.status, answer.body);
        if answer.replayed == Replayed::Yes {
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        response
    }

    /// Applies the faults in force to a request for `path`: waits out the
    /// latency and any hold, and returns the status to fail it with, if any.
    async fn undergo_faults(&self, path: &str) -> Option<StatusCode> {
        let mut verdict = self.faults.borrow().verdict(path);
        if verdict == Verdict::Hold {
            verdict = self.hold(path).await;
        }
        let (delay, failure) = match verdict {
            Verdict::Serve { delay } => (delay, None),
            Verdict::Fail { status, delay } => (delay, Some(status)),
            Verdict::Hold => unreachable!("hold returns another verdict"),
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        failure.map(|status| StatusCode::from_u16(status).expect("validated as 400..=599"))
    }

    /// Holds a request until the settings change to ones that don't hold
    /// it; returns the verdict of those. A client that goes away drops this
    /// future, and with it the count of hung requests.
    async fn hold(&self, path: &str) -> Verdict {
        let _hung = self.stats.hold();
        let mut changes = self.faults.subscribe();
        loop {
            let verdict = changes.borrow_and_update().verdict(path);
            if verdict != Verdict::Hold {
                return verdict;
            }
            if changes.changed().await.is_err() {
                // The settings are gone: the process is ending.
                return std::future::pending().await;
            }
        }
    }

    async fn create_order(&self, request: Request<Incoming>) -> Answer {
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_ORDER_BYTES).collect().await {
            Ok(body) => body.to_bytes(),
            Err(err) if err.is::<LengthLimitError>() => {
                return Answer::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the order is larger than {MAX_ORDER_BYTES} bytes"),
                );
            }
            Err(err) => {
                return Answer::error(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the order: {err}"),
                );
            }
        };
        let answer = api::create_order(&self.orders, &parts.headers, &body);
        if answer.status == StatusCode::CREATED {
            match answer.replayed {
                Replayed::No => self.stats.order_created(),
                Replayed::Yes => self.stats.order_repeated(),
            }
        }
        answer
    }
}

/// A JSON response.
pub fn respond(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Runs the main listener: accepts connections and applies fault changes
/// until the process ends.
pub async fn serve_main(
    upstream: Arc<Upstream>,
    listener: TcpListener,
    mut changes: mpsc::Receiver<FaultChange>,
) {
    let address = match listener.local_addr() {
        Ok(address) => address,
        Err(err) => {
            tracing::error!("main listener has no address: {err}");
            return;
        }
    };
    let mut listener = Some(listener);
    loop {
        tokio::select! {
            accepted = accept(listener.as_ref()) => match accepted {
                Ok(stream) => {
                    tokio::spawn(serve_connection(Arc::clone(&upstream), stream));
                }
                Err(err) => {
                    tracing::warn!("accept failed on {address}: {err}");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                }
            },
            change = changes.recv() => {
                let Some(FaultChange { faults, applied }) = change else {
                    return;
                };
                let result = apply(&upstream, &mut listener, address, faults).await;
                let _ = applied.send(result);
            }
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

/// Puts `faults` in force: closes or rebinds the listening socket as the
/// mode says, then publishes them (which releases held requests, and closes
/// open connections in `refuse`).
async fn apply(
    upstream: &Upstream,
    listener: &mut Option<TcpListener>,
    address: SocketAddr,
    faults: Faults,
) -> Result<(), String> {
    let refuse = faults.mode == Mode::Refuse;
    if refuse && listener.is_some() {
        *listener = None;
        tracing::info!("main listener {address} closed: connections are refused");
    } else if !refuse && listener.is_none() {
        let rebound = TcpListener::bind(address)
            .await
            .map_err(|err| format!("cannot listen on {address} again: {err}"))?;
        *listener = Some(rebound);
        tracing::info!("main listener {address} open again");
    }
    tracing::info!(
        "faults set: {}",
        serde_json::to_string(&faults).expect("faults serialize")
    );
    upstream.faults.send_replace(ActiveFaults::new(faults));
    Ok(())
}

/// Serves one connection until it closes, or until `refuse` drops it.
async fn serve_connection(upstream: Arc<Upstream>, stream: TcpStream) {
    // Answers are small and written whole: don't let Nagle hold them.
    let _ = stream.set_nodelay(true);
    let mut settings = upstream.faults.subscribe();
    let service_upstream = Arc::clone(&upstream);
    let service = service_fn(move |request| {
        let upstream = Arc::clone(&service_upstream);
        async move { Ok::<_, Infallible>(upstream.answer(request).await) }
    });
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        served = connection => {
            if let Err(err) = served {
                tracing::debug!("connection ended: {err}");
            }
        }
        refused = settings.wait_for(|active| active.faults.mode == Mode::Refuse) => {
            drop(refused);
            tracing::debug!("connection closed: the listener refuses");
        }
    }
}
