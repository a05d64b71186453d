//! The demo API that the main listener serves: which path is which
//! endpoint, how an id in a path becomes the JSON id the demo data knows,
//! and what each endpoint answers. No sockets here: the server hands in the
//! method, path, query, headers and body, and gets back a status and a JSON
//! body.

use crate::demo::{DemoData, OrderBook};
use bytes::Bytes;
use http::header::{AUTHORIZATION, COOKIE, HeaderName};
use http::{HeaderMap, Method, StatusCode};
use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The endpoints, as the statistics name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    User,
    Product,
    Reviews,
    Recommendations,
    Search,
    CreateOrder,
    /// A path that is no endpoint, or a method an endpoint does not take.
    Other,
}

impl Route {
    /// Every route, in the order the statistics list them.
    pub const ALL: [Route; 7] = [
        Route::User,
        Route::Product,
        Route::Reviews,
        Route::Recommendations,
        Route::Search,
        Route::CreateOrder,
        Route::Other,
    ];

    /// The route's name in `GET /stats`.
    pub fn label(self) -> &'static str {
        match self {
            Route::User => "GET /users/{id}",
            Route::Product => "GET /products/{id}",
            Route::Reviews => "GET /products/{id}/reviews",
            Route::Recommendations => "GET /recommendations/{user_id}",
            Route::Search => "GET /search",
            Route::CreateOrder => "POST /orders",
            Route::Other => "other",
        }
    }

    /// The route's position in [`Route::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A request resolved to what it asks for; ids are the raw path segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint<'a> {
    User(&'a str),
    Product(&'a str),
    Reviews(&'a str),
    Recommendations(&'a str),
    Search,
    CreateOrder,
    /// A known path asked with a method it does not take (`allow` is the one
    /// it does).
    WrongMethod {
        allow: Method,
    },
    NotFound,
}

impl Endpoint<'_> {
    pub fn route(&self) -> Route {
        match self {
            Endpoint::User(_) => Route::User,
            Endpoint::Product(_) => Route::Product,
            Endpoint::Reviews(_) => Route::Reviews,
            Endpoint::Recommendations(_) => Route::Recommendations,
            Endpoint::Search => Route::Search,
            Endpoint::CreateOrder => Route::CreateOrder,
            Endpoint::WrongMethod { .. } | Endpoint::NotFound => Route::Other,
        }
    }
}

/// Resolves `method` and `path` (without the query) to an endpoint.
pub fn resolve<'a>(method: &Method, path: &'a str) -> Endpoint<'a> {
    let Some(rest) = path.strip_prefix('/') else {
        return Endpoint::NotFound;
    };
    let mut segments = rest.split('/');
    let first = segments.next().unwrap_or_default();
    let second = segments.next();
    let third = segments.next();
    let fourth = segments.next();
    let (found, allow) = match (first, second, third, fourth) {
        ("users", Some(id), None, None) if !id.is_empty() => (Endpoint::User(id), Method::GET),
        ("products", Some(id), None, None) if !id.is_empty() => {
            (Endpoint::Product(id), Method::GET)
        }
        ("products", Some(id), Some("reviews"), None) if !id.is_empty() => {
            (Endpoint::Reviews(id), Method::GET)
        }
        ("recommendations", Some(id), None, None) if !id.is_empty() => {
            (Endpoint::Recommendations(id), Method::GET)
        }
        ("search", None, None, None) => (Endpoint::Search, Method::GET),
        ("orders", None, None, None) => (Endpoint::CreateOrder, Method::POST),
        _ => return Endpoint::NotFound,
    };
    if *method == allow {
        found
    } else {
        Endpoint::WrongMethod { allow }
    }
}

/// The JSON text of the id in a path segment: the segment percent-decoded,
/// as a JSON integer if it is one written canonically (no sign but `-`, no
/// leading zero, fits an i64), else as a JSON string. `None` if the decoded
/// bytes are not UTF-8.
pub fn id_json(segment: &str) -> Option<Cow<'_, str>> {
    let decoded = percent_decode_str(segment).decode_utf8().ok()?;
    if is_canonical_i64(&decoded) {
        return Some(decoded);
    }
    Some(Cow::Owned(
        serde_json::to_string(decoded.as_ref()).expect("strings serialize"),
    ))
}

fn is_canonical_i64(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical_digits = match digits.as_bytes() {
        [] => false,
        [b'0'] => digits.len() == text.len(), // "0", not "-0"
        [b'0', ..] => false,
        bytes => bytes.iter().all(u8::is_ascii_digit),
    };
    canonical_digits && text.parse::<i64>().is_ok()
}

/// An answer: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    /// The answer repeats an order created earlier under the same key.
    pub replayed: Replayed,
}

/// Whether an order answer repeats an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    No,
    Yes,
}

impl Answer {
    pub fn ok(body: Bytes) -> Self {
        Answer {
            status: StatusCode::OK,
            body,
            replayed: Replayed::No,
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: StatusCode, message: &str) -> Self {
        Answer {
            status,
            body: error_body(message),
            replayed: Replayed::No,
        }
    }

    pub fn not_found() -> Self {
        Answer::error(StatusCode::NOT_FOUND, "not found")
    }
}

/// `{"error": message}`.
pub fn error_body(message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "error": message }).to_string())
}

fn bad_id() -> Answer {
    Answer::error(
        StatusCode::BAD_REQUEST,
        "id is not UTF-8 once percent-decoded",
    )
}

/// Answers a read: a user, a product, its reviews, recommendations, or a
/// search (`query` is the request's query string, if any).
pub fn read(data: &DemoData, endpoint: Endpoint<'_>, query: Option<&str>) -> Answer {
    let found = match endpoint {
        Endpoint::User(segment) => match id_json(segment) {
            Some(id) => data.user(&id),
            None => return bad_id(),
        },
        Endpoint::Product(segment) => match id_json(segment) {
            Some(id) => data.product(&id),
            None => return bad_id(),
        },
        Endpoint::Reviews(segment) => match id_json(segment) {
            Some(id) => data.reviews(&id),
            None => return bad_id(),
        },
        Endpoint::Recommendations(segment) => match id_json(segment) {
            Some(id) => Some(data.recommendations(&id)),
            None => return bad_id(),
        },
        Endpoint::Search => {
            let text = query.and_then(|query| {
                form_urlencoded::parse(query.as_bytes())
                    .find(|(name, _)| name == "q")
                    .map(|(_, text)| text)
            });
            match text {
                Some(text) => Some(data.search(&text)),
                None => {
                    return Answer::error(StatusCode::BAD_REQUEST, "missing query parameter q");
                }
            }
        }
        Endpoint::CreateOrder | Endpoint::WrongMethod { .. } | Endpoint::NotFound => {
            return Answer::not_found();
        }
    };
    found.map_or_else(Answer::not_found, Answer::ok)
}

/// The order service: an [`OrderBook`] behind a lock, keys for requests
/// that bring none, and the counts `GET /stats` shows.
#[derive(Debug)]
pub struct OrderDesk {
    book: Mutex<OrderBook>,
    /// Prefix of the keys given to requests without one: unique to this run.
    run_id: String,
    anonymous: AtomicU64,
}

/// What creating an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub order_id: String,
    pub replayed: Replayed,
}

impl OrderDesk {
    /// An empty desk; `run_id` makes the keys it invents unique to this run.
    pub fn new(run_id: String) -> Self {
        OrderDesk {
            book: Mutex::new(OrderBook::default()),
            run_id,
            anonymous: AtomicU64::new(0),
        }
    }

    /// Creates the order under `idempotency_key` (a fresh key if `None`).
    pub fn create(&self, idempotency_key: Option<&str>) -> Created {
        let invented;
        let key = match idempotency_key {
            Some(key) => key,
            None => {
                let number = self.anonymous.fetch_add(1, Ordering::Relaxed);
                invented = format!("demo-upstream-{}-{number}", self.run_id);
                &invented
            }
        };
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let repeats_before = book.repeated_deliveries();
        let order_id = book.create(key);
        let replayed = if book.repeated_deliveries() > repeats_before {
            Replayed::Yes
        } else {
            Replayed::No
        };
        Created { order_id, replayed }
    }
}

/// The header a client names its order's idempotency key in.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The key an order is made under: the client's `Idempotency-Key`, scoped
/// to its credentials (`Authorization` and `Cookie`) as Stripe scopes keys
/// to an account, so that the same key from two callers names two orders
/// and neither is answered with the other's. `None` without a key; an
/// error if the key is not UTF-8.
fn scoped_order_key(headers: &HeaderMap) -> Result<Option<String>, Answer> {
    let Some(key) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let Ok(key) = std::str::from_utf8(key.as_bytes()) else {
        return Err(Answer::error(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key is not UTF-8",
        ));
    };
    let mut credentials = Sha256::new();
    let mut anonymous = true;
    for name in [AUTHORIZATION, COOKIE] {
        for value in headers.get_all(&name) {
            anonymous = false;
            credentials.update(name.as_str());
            credentials.update(b":");
            credentials.update(value.as_bytes());
            credentials.update(b"\n");
        }
    }
    if anonymous {
        return Ok(Some(key.to_owned()));
    }
    let caller: String = credentials.finalize()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok(Some(format!("{key} (caller {caller})")))
}

/// Answers `POST /orders` once its body has arrived.
pub fn create_order(desk: &OrderDesk, headers: &HeaderMap, body: &[u8]) -> Answer {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(_)) => {}
        Ok(_) => return Answer::error(StatusCode::BAD_REQUEST, "the order must be a JSON object"),
        Err(err) => {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                &format!("the order is not valid JSON: {err}"),
            );
        }
    }
    let key = match scoped_order_key(headers) {
        Ok(key) => key,
        Err(answer) => return answer,
    };
    let created = desk.create(key.as_deref());
    let body = serde_json::json!({ "order_id": created.order_id, "status": "created" });
    Answer {
        status: StatusCode::CREATED,
        body: Bytes::from(body.to_string()),
        replayed: created.replayed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_endpoints_with_their_raw_ids() {
        let get = Method::GET;
        assert_eq!(resolve(&get, "/users/12"), Endpoint::User("12"));
        assert_eq!(resolve(&get, "/products/a%2Fb"), Endpoint::Product("a%2Fb"));
        assert_eq!(resolve(&get, "/products/7/reviews"), Endpoint::Reviews("7"));
        assert_eq!(
            resolve(&get, "/recommendations/3"),
            Endpoint::Recommendations("3")
        );
        assert_eq!(resolve(&get, "/search"), Endpoint::Search);
        assert_eq!(resolve(&Method::POST, "/orders"), Endpoint::CreateOrder);
        for unknown in [
            "/",
            "/users",
            "/users/",
            "/users/1/2",
            "/products/1/other",
            "/nope",
            "",
        ] {
            assert_eq!(resolve(&get, unknown), Endpoint::NotFound, "{unknown:?}");
        }
    }

    #[test]
    fn a_known_path_with_the_wrong_method_names_the_right_one() {
        assert_eq!(
            resolve(&Method::POST, "/users/1"),
            Endpoint::WrongMethod { allow: Method::GET }
        );
        assert_eq!(
            resolve(&Method::GET, "/orders"),
            Endpoint::WrongMethod {
                allow: Method::POST
            }
        );
        assert_eq!(resolve(&Method::DELETE, "/nope"), Endpoint::NotFound);
    }

    #[test]
    fn canonical_integers_are_json_integers_and_everything_else_a_json_string() {
        let cases = [
            ("123", "123"),
            ("0", "0"),
            ("-5", "-5"),
            ("9223372036854775807", "9223372036854775807"),
            ("9223372036854775808", r#""9223372036854775808""#),
            ("-0", r#""-0""#),
            ("007", r#""007""#),
            ("+1", r#""+1""#),
            ("1.5", r#""1.5""#),
            ("alice", r#""alice""#),
            ("a%20b", r#""a b""#),
            ("%31%32", "12"),
            ("say%22hi%22", r#""say\"hi\"""#),
            ("caf%C3%A9", r#""café""#),
        ];
        for (segment, json) in cases {
            assert_eq!(id_json(segment).unwrap(), json, "{segment}");
        }
        assert_eq!(id_json("%FF"), None, "not UTF-8");
    }

    #[test]
    fn reads_answer_the_demo_data_and_not_found_for_unknown_fixture_ids() {
        let data = DemoData::builtin();
        let user = read(&data, Endpoint::User("alice"), None);
        assert_eq!(
            user,
            Answer::ok(Bytes::from(r#"{"id":"alice","name":"John Doe"}"#))
        );
        let search = read(&data, Endpoint::Search, Some("q=prod&x=1"));
        assert_eq!(search.status, StatusCode::OK);
        assert!(search.body.starts_with(br#"[{"id":1,"name":"Product"}"#));
        let missing = read(&data, Endpoint::Search, Some("x=1"));
        assert_eq!(missing.status, StatusCode::BAD_REQUEST);

        let fixtures = DemoData::from_fixtures_json(r#"{"users":[{"id":1}]}"#).unwrap();
        assert_eq!(
            read(&fixtures, Endpoint::User("1"), None).status,
            StatusCode::OK
        );
        assert_eq!(
            read(&fixtures, Endpoint::User("2"), None),
            Answer::not_found()
        );
        assert_eq!(
            read(&fixtures, Endpoint::Reviews("1"), None),
            Answer::not_found()
        );
    }

    /// Request headers: each `(name, value)`.
    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    http::HeaderValue::from_bytes(value).unwrap(),
                )
            })
            .collect()
    }

    fn keyed(key: &str) -> HeaderMap {
        headers(&[("idempotency-key", key.as_bytes())])
    }

    #[test]
    fn orders_are_idempotent_on_the_key_and_keyless_ones_are_all_new() {
        let desk = OrderDesk::new("test".into());
        let first = create_order(&desk, &keyed("k1"), b"{}");
        assert_eq!(first.status, StatusCode::CREATED);
        assert_eq!(first.replayed, Replayed::No);
        let again = create_order(&desk, &keyed("k1"), br#"{"other":"body"}"#);
        assert_eq!(
            (again.status, again.replayed),
            (StatusCode::CREATED, Replayed::Yes)
        );
        assert_eq!(again.body, first.body);
        let body: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
        assert_eq!(body["order_id"], crate::demo::order_id_for("k1"));
        assert_eq!(body["status"], "created");

        let one = create_order(&desk, &HeaderMap::new(), b"{}");
        let two = create_order(&desk, &HeaderMap::new(), b"{}");
        assert_ne!(one.body, two.body);
        assert_eq!(two.replayed, Replayed::No);
    }

    #[test]
    fn an_order_that_is_not_a_json_object_is_a_bad_request() {
        let desk = OrderDesk::new("test".into());
        for body in [&b"not json"[..], b"[1]", b"", b"{\"a\":"] {
            let answer = create_order(&desk, &keyed("k"), body);
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body:?}");
        }
        assert_eq!(
            create_order(&desk, &headers(&[("idempotency-key", b"\xff")]), b"{}").status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn the_same_key_from_two_callers_names_two_orders() {
        let desk = OrderDesk::new("test".into());
        let order_of = |answer: Answer| {
            assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
            let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
            (
                body["order_id"].as_str().unwrap().to_owned(),
                answer.replayed,
            )
        };
        let as_caller = |credentials: &[(&str, &[u8])]| {
            let mut with_key = headers(credentials);
            with_key.insert(IDEMPOTENCY_KEY, http::HeaderValue::from_static("k"));
            order_of(create_order(&desk, &with_key, b"{}"))
        };
        let alice = as_caller(&[("authorization", b"Bearer alice")]);
        let bob = as_caller(&[("authorization", b"Bearer bob")]);
        let carol = as_caller(&[("cookie", b"session=carol")]);
        let anonymous = as_caller(&[]);
        let orders = [&alice.0, &bob.0, &carol.0, &anonymous.0];
        let distinct: std::collections::HashSet<_> = orders.iter().collect();
        assert_eq!(distinct.len(), 4, "{orders:?}");
        assert!(
            [&alice, &bob, &carol, &anonymous]
                .iter()
                .all(|(_, replayed)| *replayed == Replayed::No)
        );
        // A caller's repeat is still its own order, replayed.
        assert_eq!(
            as_caller(&[("authorization", b"Bearer bob")]),
            (bob.0.clone(), Replayed::Yes)
        );
    }
}
