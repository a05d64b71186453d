//! Keep-alive connections to one upstream, each driven by the task that
//! makes a call on it.
//!
//! hyper's pooled client gives every connection a task of its own, and a
//! call crosses to that task and back through channels: two wake-ups per
//! call on the gateway's hottest path. Here a call takes an idle
//! connection (or opens one), drives it itself while it writes the request
//! and reads the whole answer, and puts it back. An idle connection the
//! upstream closed is seen as closed when it is taken; a request that never
//! left is sent again on a fresh connection, and one that did leave is never
//! sent twice.

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream; more are closed as they come back.
const MAX_IDLE: usize = 1024;

/// The future that does a connection's reading and writing.
type ConnectionIo = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// One connection: the handle requests go through, and the future that
/// does its I/O.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    io: ConnectionIo,
}

/// Why a call got no answer.
#[derive(Debug)]
pub enum ExchangeError {
    /// No connection could be opened.
    Connect(std::io::Error),
    /// The request or its answer failed on the way (an answer's body
    /// longer than allowed too).
    Http(String),
}

/// The idle connections to one upstream.
pub struct Pool {
    authority: Authority,
    /// The `Host` every request carries: the upstream's authority.
    host: Option<http::HeaderValue>,
    /// Boxed: a connection's state is large, and it moves in and out of
    /// here on every call.
    idle: Mutex<Vec<(Box<Connection>, Instant)>>,
}

/// How one exchange on a connection went.
enum Exchanged {
    Answered(Response<Bytes>),
    /// The connection was closed before the request left: it may be sent
    /// on another.
    NotSent(Request<Full<Bytes>>),
    Failed(ExchangeError),
}

impl Pool {
    pub fn new(authority: Authority) -> Self {
        Pool {
            host: http::HeaderValue::from_str(authority.as_str()).ok(),
            authority,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` (origin-form URI; `Host` is set here) and reads its
    /// whole answer, its body bounded by `max_body` bytes.
    pub async fn exchange(
        &self,
        mut request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Response<Bytes>, ExchangeError> {
        if let Some(host) = &self.host {
            request
                .headers_mut()
                .insert(http::header::HOST, host.clone());
        }
        loop {
            let (mut connection, reused) = match self.take() {
                Some(connection) => (connection, true),
                None => (self.connect().await?, false),
            };
            match connection.exchange(request, max_body).await {
                Exchanged::Answered(response) => {
                    self.put_back(connection);
                    return Ok(response);
                }
                // An idle connection closed under us: try the next one.
                Exchanged::NotSent(unsent) if reused => request = unsent,
                Exchanged::NotSent(_) => {
                    return Err(ExchangeError::Http(
                        "the connection closed before the request was sent".into(),
                    ));
                }
                Exchanged::Failed(err) => return Err(err),
            }
        }
    }

    /// An idle connection that is still open, if there is one.
    fn take(&self) -> Option<Box<Connection>> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((mut connection, since)) = idle.pop() {
            if now.duration_since(since) < IDLE_TIMEOUT && connection.is_open() {
                return Some(connection);
            }
        }
        None
    }

    /// Keeps `connection` for the next call. Whether the upstream closed it
    /// meanwhile is seen when it is taken.
    fn put_back(&self, connection: Box<Connection>) {
        if connection.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // The longest idle are first: those past their time are closed.
        let expired = idle
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT)
            .count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE {
            idle.push((connection, now));
        }
    }

    async fn connect(&self) -> Result<Box<Connection>, ExchangeError> {
        let address = format!(
            "{}:{}",
            self.authority.host(),
            self.authority.port_u16().unwrap_or(80)
        );
        let stream = TcpStream::connect(address)
            .await
            .map_err(ExchangeError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, io) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| ExchangeError::Http(err.to_string()))?;
        Ok(Box::new(Connection { sender, io }))
    }
}

impl Connection {
    /// Whether the connection can take another request: its I/O is given a
    /// look (an upstream's close is read here) without waiting.
    fn is_open(&mut self) -> bool {
        let mut context = Context::from_waker(Waker::noop());
        match Pin::new(&mut self.io).poll(&mut context) {
            Poll::Ready(_) => false,
            Poll::Pending => !self.sender.is_closed(),
        }
    }

    /// Sends `request` and reads its answer, driving the connection's I/O
    /// meanwhile.
    async fn exchange(&mut self, request: Request<Full<Bytes>>, max_body: usize) -> Exchanged {
        let Connection { sender, io } = self;
        let call = async move {
            if sender.ready().await.is_err() {
                return Exchanged::NotSent(request);
            }
            let response = match sender.try_send_request(request).await {
                Ok(response) => response,
                Err(mut err) => {
                    return match err.take_message() {
                        Some(unsent) => Exchanged::NotSent(unsent),
                        None => {
                            Exchanged::Failed(ExchangeError::Http(err.into_error().to_string()))
                        }
                    };
                }
            };
            let (parts, body) = response.into_parts();
            match Limited::new(body, max_body).collect().await {
                Ok(collected) => {
                    Exchanged::Answered(Response::from_parts(parts, collected.to_bytes()))
                }
                Err(err) => Exchanged::Failed(ExchangeError::Http(format!("answer body: {err}"))),
            }
        };
        let mut call = std::pin::pin!(call);
        let mut io_ended = false;
        // The call's steps and the connection's I/O hand over to each other
        // (a request queued, an answer parsed, its body read) within one
        // wake-up: the call is looked at again after the I/O ran, rather
        // than in a further wake-up of the task.
        std::future::poll_fn(|cx| {
            if let Poll::Ready(exchanged) = call.as_mut().poll(cx) {
                return Poll::Ready(exchanged);
            }
            if !io_ended {
                // The connection ended; what it had delivered is still read.
                io_ended = Pin::new(&mut *io).poll(cx).is_ready();
                return call.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await
    }
}
