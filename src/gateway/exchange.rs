//! HTTP on both sides of the core: what is forwarded, what is kept, and
//! what a client is answered.
//!
//! This module holds the gateway's HTTP rules as plain functions, apart
//! from the sockets: which headers cross (hop-by-hop ones never do;
//! `X-Forwarded-For` is added), what a cached copy is keyed by (method,
//! path, query, the request's `Authorization` and `Cookie`, and the headers
//! the answer `Vary`s on, so one client's copy is never served to
//! another), which answers may be kept (`no-store`, `Set-Cookie` and
//! `Vary: *` never are; `stale-if-error=N` caps a copy's age), how a write
//! is stored in the queue and delivered again, and every answer a client
//! can get: fresh, stale, degraded, accepted, or a `problem+json` error.

use crate::core::breaker::BreakerState;
use crate::core::cache::CachedCopy;
use crate::core::queue::StoredResponse;
use crate::core::{Response as CoreResponse, Storage};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The body of every answer grace builds or forwards.
pub type Body = Full<Bytes>;

/// Says which breaker state the service was in when the answer was made.
pub const CIRCUIT_STATE: HeaderName = HeaderName::from_static("grace-circuit-state");
/// Says which feature was switched off.
pub const DEGRADED: HeaderName = HeaderName::from_static("grace-degraded");
/// RFC 9211: how a cache handled the request.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// The client's key for a write (IETF httpapi draft, Stripe).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Marks an answer that repeats the one a key's first request got (the
/// name Stripe and the demo upstream use).
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The chain of client addresses a proxy adds to.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `Cache-Status` of a stale copy served because the service failed.
const STALE_IF_ERROR: &str = "grace; hit; detail=stale-if-error";
/// The media type of RFC 9457 problem details.
const PROBLEM_JSON: &str = "application/problem+json";

/// Headers that describe one connection, not the message: never forwarded
/// either way (RFC 9110 §7.6.1), nor are the headers `Connection` names,
/// nor any `Proxy-*` header (they are between a client and its proxy).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
/// The prefix of the proxy headers (`Proxy-Authorization`,
/// `Proxy-Authenticate`, `Proxy-Authentication-Info`, `Proxy-Connection`).
const PROXY_PREFIX: &str = "proxy-";

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str().starts_with(PROXY_PREFIX)
}

/// Removes hop-by-hop headers, and those `Connection` lists.
///
/// Most messages have none: one look at each name settles that, and only
/// a message that has some pays for their removal.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut listed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    if listed.is_empty() {
        return;
    }
    // `Connection` is among them when it names any.
    listed.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()),
    );
    for name in listed {
        headers.remove(name);
    }
}

/// The address a client connected from, as the `X-Forwarded-For` entry it
/// makes: written once per connection rather than once per request.
#[derive(Debug, Clone)]
pub struct ClientAddress(HeaderValue);

impl ClientAddress {
    pub fn new(ip: IpAddr) -> Self {
        ClientAddress(
            HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value"),
        )
    }
}

/// Turns a client's headers into those its upstream request carries: the
/// end-to-end ones, without `Host` (the upstream's own is set by the
/// client library), with the client's address appended to
/// `X-Forwarded-For`.
pub fn forward_request_headers(headers: &mut HeaderMap, client: &ClientAddress) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    let mut earlier = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .peekable();
    if earlier.peek().is_none() {
        headers.insert(X_FORWARDED_FOR, client.0.clone());
        return;
    }
    // Several header lines are one comma-separated list.
    let mut chain = Vec::new();
    for earlier in earlier {
        chain.extend_from_slice(earlier.as_bytes());
        chain.extend_from_slice(b", ");
    }
    chain.extend_from_slice(client.0.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&chain) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// A request's key in the fallback cache: what makes two requests ask for
/// the same answer. The credentials are part of it, so a copy fetched with
/// one client's `Authorization` or `Cookie` is never served to another's;
/// so are the request headers the route's answers vary on.
pub fn cache_key(
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    vary: &[HeaderName],
) -> Vec<u8> {
    let mut key = Vec::with_capacity(64 + path_and_query.len());
    key.extend_from_slice(method.as_str().as_bytes());
    key.push(b' ');
    key.extend_from_slice(path_and_query.as_bytes());
    let mut part = |name: &HeaderName| {
        key.push(0);
        key.extend_from_slice(name.as_str().as_bytes());
        for value in headers.get_all(name) {
            key.push(0);
            key.extend_from_slice(value.as_bytes());
        }
    };
    part(&header::AUTHORIZATION);
    part(&header::COOKIE);
    for name in vary {
        part(name);
    }
    key
}

/// Request headers that make a GET ask something narrower than the
/// resource: a part of it (`Range`), or an answer only if it changed (the
/// preconditions of RFC 9110 §13).
const NARROWING: [HeaderName; 6] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// Whether a GET asks for a part of its resource or sets a precondition:
/// its answer (a `206`, a `304`) answers no other request, so it is neither
/// shared with identical requests in flight nor kept as a copy.
pub fn is_partial_or_conditional(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| NARROWING.contains(name))
}

/// Whether a fresh answer to a GET on a cache route may be kept, and for
/// how long. `vary_known` is whether every header the answer varies on was
/// part of the request's key (otherwise a copy would be served to requests
/// it does not answer).
pub fn storage_for(status: StatusCode, headers: &HeaderMap, vary_known: bool) -> Storage {
    if !status.is_success() || headers.contains_key(header::SET_COOKIE) || !vary_known {
        return Storage::DoNotStore;
    }
    let directives: Vec<String> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|directive| directive.trim().to_ascii_lowercase())
        .collect();
    if directives.iter().any(|directive| directive == "no-store") {
        return Storage::DoNotStore;
    }
    let stale_if_error = directives.iter().find_map(|directive| {
        let seconds = directive.strip_prefix("stale-if-error=")?;
        seconds.trim_matches('"').parse::<u64>().ok()
    });
    Storage::Keep {
        max_stale: stale_if_error.map(Duration::from_secs),
    }
}

/// The copy of an answer the fallback cache keeps: its headers and body in
/// one allocation of their own.
///
/// hyper hands an answer's header values and body out as slices of its
/// read buffer, and a slice keeps the whole buffer alive: a cached copy of
/// a two-byte body held on to more than 5 KB. A copy that is kept is made
/// to own just its bytes. The cache makes one only when an answer differs
/// from the copy it has.
pub fn kept_copy(answer: &Arc<CoreResponse>) -> Arc<CoreResponse> {
    let (headers, body) = detached(&answer.headers, &answer.body);
    Arc::new(CoreResponse {
        status: answer.status,
        headers: headers.into(),
        body,
        storage: answer.storage,
    })
}

fn detached(headers: &HeaderMap, body: &Bytes) -> (HeaderMap, Bytes) {
    let values: usize = headers.values().map(|value| value.len()).sum();
    let mut bytes = BytesMut::with_capacity(values + body.len());
    for value in headers.values() {
        bytes.extend_from_slice(value.as_bytes());
    }
    bytes.extend_from_slice(body);
    let bytes = bytes.freeze();
    // The same map, each value then pointed at its copy.
    let mut copy = headers.clone();
    let mut start = 0;
    for value in copy.values_mut() {
        let end = start + value.len();
        let sensitive = value.is_sensitive();
        *value = HeaderValue::from_maybe_shared(bytes.slice(start..end))
            .expect("the bytes of a valid header value");
        value.set_sensitive(sensitive);
        start = end;
    }
    (copy, bytes.slice(start..))
}

/// The header names an answer varies on; `None` for `Vary: *` (it varies
/// on things no key can hold).
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        for name in value.to_str().ok()?.split(',') {
            let name = name.trim();
            if name == "*" {
                return None;
            }
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                names.push(name);
            }
        }
    }
    Some(names)
}

/// The fingerprint of a write: a repeat under the same key must carry the
/// same method, path, query and body.
pub fn fingerprint(method: &Method, path_and_query: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(path_and_query.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    hex(&hasher.finalize())
}

/// Who a write's idempotency key belongs to: keys are scoped by the
/// client's credentials, so one client's key can never name another's
/// write (Stripe scopes keys to the account the same way).
pub fn key_scope(headers: &HeaderMap) -> String {
    let mut hasher = Sha256::new();
    for name in [header::AUTHORIZATION, header::COOKIE] {
        for value in headers.get_all(&name) {
            hasher.update(name.as_str().as_bytes());
            hasher.update([0]);
            hasher.update(value.as_bytes());
            hasher.update([0]);
        }
    }
    hex(&hasher.finalize()[..16])
}

/// 128 random bits from the operating system, in hex: an id nobody can
/// guess (queued requests are not enumerable).
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A write as the queue keeps it: everything needed to send it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRequest {
    pub method: String,
    pub path_and_query: String,
    /// End-to-end headers, values as bytes in base64.
    pub headers: Vec<(String, String)>,
    /// The body, in base64.
    pub body: String,
    /// The key sent upstream with every delivery.
    pub idempotency_key: String,
}

impl StoredRequest {
    pub fn new(
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
        idempotency_key: &str,
    ) -> Self {
        let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        StoredRequest {
            method: method.as_str().to_string(),
            path_and_query: path_and_query.to_string(),
            headers: headers
                .iter()
                .filter(|(name, _)| **name != IDEMPOTENCY_KEY)
                .map(|(name, value)| (name.as_str().to_string(), encode(value.as_bytes())))
                .collect(),
            body: encode(body),
            idempotency_key: idempotency_key.to_string(),
        }
    }

    /// As the queue stores it: a JSON object.
    pub fn to_json(&self) -> Arc<RawValue> {
        let json = serde_json::to_string(self).expect("a stored request serializes");
        Arc::from(RawValue::from_string(json).expect("serde_json writes JSON"))
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|err| format!("not a stored request: {err}"))
    }

    /// The method, headers and body to send again, `Idempotency-Key` set.
    pub fn decode(&self) -> Result<(Method, HeaderMap, Bytes), String> {
        let decode = |text: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|err| format!("bad base64: {err}"))
        };
        let method = Method::from_bytes(self.method.as_bytes()).map_err(|err| err.to_string())?;
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|err| err.to_string())?;
            let value = HeaderValue::from_bytes(&decode(value)?).map_err(|err| err.to_string())?;
            headers.append(name, value);
        }
        let key = HeaderValue::from_str(&self.idempotency_key).map_err(|err| err.to_string())?;
        headers.insert(IDEMPOTENCY_KEY, key);
        Ok((method, headers, Bytes::from(decode(&self.body)?)))
    }
}

/// A response with `status`, `headers` and `body`.
pub fn response(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn with_circuit(mut response: Response<Body>, circuit: BreakerState) -> Response<Body> {
    response
        .headers_mut()
        .insert(CIRCUIT_STATE, HeaderValue::from_static(circuit.as_str()));
    response
}

/// The service's own answer, as it came (its hop-by-hop headers already
/// gone). The only holder of an answer hands its headers on as they are;
/// an answer shared (with other requests that joined its call) is copied.
pub fn fresh(answer: Arc<CoreResponse>, circuit: BreakerState) -> Response<Body> {
    match Arc::try_unwrap(answer) {
        Ok(answer) => with_circuit(
            response(status_of(&answer), answer.headers.into_map(), answer.body),
            circuit,
        ),
        Err(shared) => copied(&shared, circuit),
    }
}

fn status_of(answer: &CoreResponse) -> StatusCode {
    StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY)
}

/// An answer that others hold too, as a response of its own.
fn copied(answer: &CoreResponse, circuit: BreakerState) -> Response<Body> {
    let status = status_of(answer);
    // Room for the headers grace adds (its circuit, and a stale copy's
    // two), so that adding them never grows the map.
    let mut headers = HeaderMap::with_capacity(answer.headers.len() + 3);
    for (name, value) in answer.headers.iter() {
        headers.append(name.clone(), value.clone());
    }
    with_circuit(response(status, headers, answer.body.clone()), circuit)
}

/// A repeat of a delivered write: the answer its delivery got, as the
/// queue kept it (status, content type, body up to its bound), marked as a
/// replay.
pub fn replayed(stored: &StoredResponse, circuit: BreakerState) -> Response<Body> {
    let mut headers = HeaderMap::new();
    if let Some(value) = stored
        .content_type
        .as_deref()
        .and_then(|content_type| HeaderValue::from_str(content_type).ok())
    {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    with_circuit(
        response(status, headers, Bytes::from(stored.body.clone())),
        circuit,
    )
}

/// The last good copy: its status, headers and body, with its `Age` and
/// `Cache-Status` saying it is stale.
pub fn stale(copy: &CachedCopy, age: Duration, circuit: BreakerState) -> Response<Body> {
    let mut answer = copied(&copy.response, circuit);
    let headers = answer.headers_mut();
    headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    headers.insert(CACHE_STATUS, HeaderValue::from_static(STALE_IF_ERROR));
    answer
}

/// An RFC 9457 problem: `status`, a title, and what went wrong.
pub fn problem(status: StatusCode, detail: &str, extra: serde_json::Value) -> Response<Body> {
    let mut body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let (Some(body), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response(status, headers, Bytes::from(body.to_string()))
}

/// `405`: the path takes only the methods `allow` lists (RFC 9110 asks
/// for `Allow` on every 405).
pub fn method_not_allowed(detail: &str, allow: &str) -> Response<Body> {
    let mut answer = problem(
        StatusCode::METHOD_NOT_ALLOWED,
        detail,
        serde_json::Value::Null,
    );
    if let Ok(value) = HeaderValue::from_str(allow) {
        answer.headers_mut().insert(header::ALLOW, value);
    }
    answer
}

/// `413`: the body is longer than `limit` bytes. The rest of it is never
/// read, so the connection closes after this answer.
pub fn body_too_large(limit: usize) -> Response<Body> {
    let mut answer = problem(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the body is larger than {limit} bytes"),
        serde_json::Value::Null,
    );
    answer
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    answer
}

/// `503`: `service` cannot answer and there is no copy; try again once the
/// breaker lets a probe through (at least a second from now).
pub fn unavailable(
    service: &str,
    retry_after: Option<Duration>,
    circuit: BreakerState,
    why: &str,
) -> Response<Body> {
    let detail = format!("service {service:?} cannot answer ({why}) and no cached copy exists");
    let mut answer = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        &detail,
        serde_json::json!({ "service": service }),
    );
    let seconds = retry_after
        .map_or(1, |wait| wait.as_secs_f64().ceil() as u64)
        .max(1);
    answer
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    with_circuit(answer, circuit)
}

/// A route whose feature is switched off: its configured answer.
pub fn degraded(
    status: StatusCode,
    content_type: &str,
    body: &str,
    feature: &str,
) -> Response<Body> {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(feature) {
        headers.insert(DEGRADED, value);
    }
    response(status, headers, Bytes::from(body.to_string()))
}

/// The path where a queued write's status is reported.
pub fn request_status_path(public_id: &str) -> String {
    format!("/grace/requests/{public_id}")
}

/// `202 Accepted`: the write is in the queue (on disk, unless `durable`
/// says otherwise); its status is at `Location`.
pub fn accepted(
    public_id: &str,
    position: Option<usize>,
    status: &str,
    durable: bool,
    circuit: BreakerState,
) -> Response<Body> {
    let location = request_status_path(public_id);
    let mut body = serde_json::json!({
        "id": public_id,
        "status": status,
        "location": location,
    });
    if let Some(position) = position {
        body["position"] = position.into();
    }
    if !durable {
        body["durable"] = false.into();
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    with_circuit(
        response(StatusCode::ACCEPTED, headers, Bytes::from(body.to_string())),
        circuit,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_not_forwarded() {
        let mut map = headers(&[
            ("connection", "close, x-secret"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authentication-info", "nextnonce=x"),
            ("x-secret", "1"),
            ("accept", "application/json"),
        ]);
        strip_hop_by_hop(&mut map);
        let names: Vec<&str> = map.keys().map(|name| name.as_str()).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn a_kept_copy_is_the_same_answer_and_holds_none_of_the_buffer() {
        // As hyper hands an answer out: every part a slice of one buffer.
        let buffer = Bytes::from(vec![b'x'; 8192]);
        let within = |bytes: &[u8]| {
            let start = buffer.as_ptr() as usize;
            (start..start + buffer.len()).contains(&(bytes.as_ptr() as usize))
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_maybe_shared(buffer.slice(0..10)).unwrap(),
        );
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_maybe_shared(buffer.slice(10..13)).unwrap(),
        );
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_maybe_shared(buffer.slice(13..14)).unwrap(),
        );
        let mut secret = HeaderValue::from_maybe_shared(buffer.slice(14..20)).unwrap();
        secret.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, secret);
        let body = buffer.slice(100..102);
        assert!(headers.values().all(|value| within(value.as_bytes())) && within(&body));

        let answer = Arc::new(CoreResponse {
            status: 200,
            headers: headers.clone().into(),
            body: body.clone(),
            storage: Storage::Keep { max_stale: None },
        });
        let kept = kept_copy(&answer);
        assert!(kept.is_same_answer(&answer));
        let (copy, copied_body) = (&*kept.headers, &kept.body);
        assert_eq!(*copy, headers);
        assert_eq!(*copied_body, body);
        assert!(copy.get(header::AUTHORIZATION).unwrap().is_sensitive());
        assert!(
            copy.values().all(|value| !within(value.as_bytes())) && !within(copied_body),
            "a kept copy must not hold on to the buffer it came in"
        );
    }

    #[test]
    fn forwarded_for_is_appended_to_and_host_dropped() {
        let client = ClientAddress::new("10.0.0.7".parse().unwrap());
        let mut forwarded = headers(&[
            ("host", "grace"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
        ]);
        forward_request_headers(&mut forwarded, &client);
        assert_eq!(
            forwarded.get(&X_FORWARDED_FOR).unwrap(),
            "1.2.3.4, 5.6.7.8, 10.0.0.7"
        );
        assert_eq!(forwarded.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert!(forwarded.get(header::HOST).is_none());
        let mut first_hop = headers(&[("accept", "*/*")]);
        forward_request_headers(&mut first_hop, &client);
        assert_eq!(first_hop.get(&X_FORWARDED_FOR).unwrap(), "10.0.0.7");
        assert_eq!(first_hop.get(header::ACCEPT).unwrap(), "*/*");
    }

    #[test]
    fn cache_keys_differ_by_credentials_and_varied_headers() {
        let key = |pairs: &[(&str, &str)], vary: &[HeaderName]| {
            cache_key(&Method::GET, "/users/1?x=1", &headers(pairs), vary)
        };
        let anonymous = key(&[], &[]);
        assert_ne!(anonymous, key(&[("authorization", "Bearer a")], &[]));
        assert_ne!(
            key(&[("authorization", "Bearer a")], &[]),
            key(&[("authorization", "Bearer b")], &[])
        );
        assert_ne!(anonymous, key(&[("cookie", "s=1")], &[]));
        let lang = [HeaderName::from_static("accept-language")];
        assert_ne!(
            key(&[("accept-language", "fr")], &lang),
            key(&[("accept-language", "de")], &lang)
        );
        assert_eq!(
            key(&[("accept-language", "fr")], &[]),
            anonymous,
            "not varied on: not keyed"
        );
    }

    #[test]
    fn ranges_and_preconditions_narrow_a_request() {
        assert!(!is_partial_or_conditional(&headers(&[("accept", "*/*")])));
        for name in [
            "range",
            "if-range",
            "if-none-match",
            "if-modified-since",
            "if-match",
            "if-unmodified-since",
        ] {
            assert!(
                is_partial_or_conditional(&headers(&[(name, "x")])),
                "{name}"
            );
        }
    }

    #[test]
    fn only_successful_storable_answers_are_kept() {
        let keep = |status: u16, pairs: &[(&str, &str)]| {
            storage_for(StatusCode::from_u16(status).unwrap(), &headers(pairs), true)
        };
        assert_eq!(keep(200, &[]), Storage::Keep { max_stale: None });
        assert_eq!(keep(404, &[]), Storage::DoNotStore);
        assert_eq!(
            keep(200, &[("cache-control", "public, no-store")]),
            Storage::DoNotStore
        );
        assert_eq!(keep(200, &[("set-cookie", "s=1")]), Storage::DoNotStore);
        assert_eq!(
            keep(200, &[("cache-control", "max-age=0, stale-if-error=30")]),
            Storage::Keep {
                max_stale: Some(Duration::from_secs(30))
            }
        );
        assert_eq!(
            storage_for(StatusCode::OK, &HeaderMap::new(), false),
            Storage::DoNotStore
        );
        assert_eq!(vary_names(&headers(&[("vary", "*")])), None);
        assert_eq!(
            vary_names(&headers(&[("vary", "Accept-Language, Accept")]))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn a_stored_request_comes_back_with_its_idempotency_key() {
        let original = headers(&[
            ("content-type", "application/json"),
            ("idempotency-key", "client-k"),
        ]);
        let stored = StoredRequest::new(
            &Method::POST,
            "/orders?x=1",
            &original,
            b"{\"a\":1}",
            "client-k",
        );
        let again = StoredRequest::from_json(stored.to_json().get().as_bytes()).unwrap();
        let (method, headers, body) = again.decode().unwrap();
        assert_eq!(method, Method::POST);
        assert_eq!(headers.get("idempotency-key").unwrap(), "client-k");
        assert_eq!(headers.get("content-type").unwrap(), "application/json");
        assert_eq!(body, "{\"a\":1}");
    }

    #[test]
    fn keys_are_scoped_by_credentials_and_ids_are_random() {
        assert_ne!(
            key_scope(&headers(&[("authorization", "a")])),
            key_scope(&headers(&[("authorization", "b")]))
        );
        assert_eq!(key_scope(&HeaderMap::new()), key_scope(&HeaderMap::new()));
        let (a, b) = (random_id(), random_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn unavailable_says_when_to_retry_at_least_one_second_ahead() {
        let answer = unavailable(
            "user",
            Some(Duration::from_millis(200)),
            BreakerState::Open,
            "breaker open",
        );
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers()["retry-after"], "1");
        assert_eq!(answer.headers()["content-type"], PROBLEM_JSON);
        assert_eq!(answer.headers()[CIRCUIT_STATE], "open");
        let later = unavailable(
            "user",
            Some(Duration::from_millis(4100)),
            BreakerState::Open,
            "x",
        );
        assert_eq!(later.headers()["retry-after"], "5");
    }
}
