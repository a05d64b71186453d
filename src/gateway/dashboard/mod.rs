//! The dashboard: one page on the admin listener that shows, live, which
//! breakers are open and what clients are getting, and where an operator
//! switches the mode and the kill switches.
//!
//! - `GET /` serves the page; `GET /dashboard.css` and `GET /dashboard.js`
//!   its style and script. The three files live beside this module and are
//!   built into the binary: no CDN, no build step, no network needed. They
//!   hold no data, so they are served without the admin token (a browser
//!   cannot send one when it opens a page); a strict
//!   `Content-Security-Policy` lets the page run its own script only and
//!   talk to this listener only.
//! - `GET /events` ([`events`]) streams the `/status` snapshot once a
//!   second as Server-Sent Events, under the same `Authorization` as every
//!   admin route. The page reads it with `fetch` (not `EventSource`, which
//!   cannot send a header), so the token never appears in a URL.
//!
//! Everything the page changes goes through the admin routes
//! (`PUT /mode`, `PUT /features/{name}`), with the token the page asks
//! for and keeps in the tab's `sessionStorage`.

pub mod events;

use super::exchange::{self, Body};
use bytes::Bytes;
use events::{EventStream, LiveStreams};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use std::future::Future;
use tokio::sync::watch;

/// The page.
const INDEX_HTML: &str = include_str!("index.html");
/// Its style.
const DASHBOARD_CSS: &str = include_str!("dashboard.css");
/// Its script.
const DASHBOARD_JS: &str = include_str!("dashboard.js");

/// What the page may load and where it may connect: its own script and
/// style from this listener, nothing inline, nothing from elsewhere, never
/// in a frame.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The answer to `GET path` when `path` is one of the page's files.
pub fn asset(path: &str) -> Option<Response<Body>> {
    let (content_type, text) = match path {
        "/" => ("text/html; charset=utf-8", INDEX_HTML),
        "/dashboard.css" => ("text/css; charset=utf-8", DASHBOARD_CSS),
        "/dashboard.js" => ("text/javascript; charset=utf-8", DASHBOARD_JS),
        _ => return None,
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A new binary may bring a new page: always ask again.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(exchange::response(
        StatusCode::OK,
        headers,
        Bytes::from_static(text.as_bytes()),
    ))
}

/// The admin listener's part in the dashboard: its open event streams, and
/// the signal that ends them when grace stops.
#[derive(Debug)]
pub struct Dashboard {
    streams: LiveStreams,
    stop: watch::Receiver<bool>,
}

impl Dashboard {
    /// Streams end when `stop` turns true.
    pub fn new(stop: watch::Receiver<bool>) -> Self {
        Dashboard {
            streams: LiveStreams::default(),
            stop,
        }
    }

    /// `GET /events` streams open now.
    pub fn live_streams(&self) -> usize {
        self.streams.count()
    }

    /// `GET /events`: a stream of what `snapshot` gives (the status as one
    /// line of JSON, `None` once the engine is gone); `None` when
    /// [`events::MAX_EVENT_STREAMS`] are open already.
    pub fn events<S, F>(&self, snapshot: S) -> Option<Response<EventStream>>
    where
        S: FnMut() -> F + Send + 'static,
        F: Future<Output = Option<String>> + Send,
    {
        let slot = self.streams.try_open()?;
        let mut answer = Response::new(events::open(snapshot, slot, self.stop.clone()));
        let headers = answer.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Proxies in front of the admin listener must pass events at once.
        headers.insert(
            http::HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
        Some(answer)
    }
}
