//! The demo's data: what the built-in downstream services know.
//!
//! grace ships with three pretend services so that it can be tried, tested
//! and benchmarked with nothing else running: `user` (users by id),
//! `product` (products, their reviews, recommendations and search) and
//! `order` (takes orders). The Maelstrom node asks them in-process; `grace
//! demo-upstream` serves the same data over real HTTP for the gateway.
//!
//! Ids are JSON text, as a client wrote them: `123` and `"123"` are
//! different records, and a record echoes its id as given. The built-in
//! data answers every id (`{"id": ID, "name": "John Doe"}` for users,
//! `"Product"` for products); `--fixtures` replaces it with a fixed set of
//! records, and then an unknown id is a definite not-found.

pub mod in_process;
pub mod upstream;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Name of every built-in user (the seed's sample record).
pub const DEMO_USER_NAME: &str = "John Doe";
/// Name of every built-in product (the seed's sample record).
pub const DEMO_PRODUCT_NAME: &str = "Product";
/// Built-in ids 1..=this are in the fallback cache at start.
pub const DEMO_WARM_IDS: i64 = 1000;
/// The reviews every built-in product has: rating and text.
pub const DEMO_REVIEWS: [(u8, &str); 2] = [(5, "Great product"), (4, "Does the job")];
/// How many products a recommendation lists.
pub const RECOMMENDATION_COUNT: usize = 3;
/// Most results one search returns.
pub const SEARCH_RESULT_LIMIT: usize = 10;

/// Where a service gets its records.
#[derive(Debug, Clone)]
enum Directory {
    /// Every id exists and is `{"id": id, "name": name}`.
    Builtin { name: &'static str },
    /// Only these records exist, in the order the fixtures list them,
    /// indexed by the compact JSON text of their id.
    Fixed {
        records: Vec<(String, Bytes)>,
        index: HashMap<String, usize>,
    },
}

impl Directory {
    fn fixed(records: Vec<(String, Bytes)>) -> Self {
        let index = records
            .iter()
            .enumerate()
            .map(|(position, (id, _))| (id.clone(), position))
            .collect();
        Directory::Fixed { records, index }
    }

    fn lookup(&self, id: &str) -> Option<Bytes> {
        match self {
            Directory::Builtin { name } => Some(builtin_record(id, name)),
            Directory::Fixed { records, index } => index.get(id).map(|&at| records[at].1.clone()),
        }
    }

    /// The first `limit` records, in order (built-in: ids 1, 2, ...).
    fn first(&self, limit: usize) -> Vec<Bytes> {
        match self {
            Directory::Builtin { name } => (1..=limit)
                .map(|id| builtin_record(&id.to_string(), name))
                .collect(),
            Directory::Fixed { records, .. } => records
                .iter()
                .take(limit)
                .map(|(_, record)| record.clone())
                .collect(),
        }
    }

    /// Records whose `name` contains `query`, ignoring case.
    fn search(&self, query: &str, limit: usize) -> Vec<Bytes> {
        let query = query.to_lowercase();
        let matches = |name: &str| name.to_lowercase().contains(&query);
        match self {
            Directory::Builtin { name } if matches(name) => self.first(limit),
            Directory::Builtin { .. } => Vec::new(),
            Directory::Fixed { records, .. } => {
                #[derive(Deserialize)]
                struct Named {
                    name: Option<String>,
                }
                records
                    .iter()
                    .filter(|(_, record)| {
                        serde_json::from_slice::<Named>(record)
                            .ok()
                            .and_then(|named| named.name)
                            .is_some_and(|name| matches(&name))
                    })
                    .take(limit)
                    .map(|(_, record)| record.clone())
                    .collect()
            }
        }
    }

    /// The records the fallback cache starts with: id and record.
    fn warm_records(&self) -> Vec<(String, Bytes)> {
        match self {
            Directory::Builtin { name } => (1..=DEMO_WARM_IDS)
                .map(|id| {
                    let id = id.to_string();
                    let record = builtin_record(&id, name);
                    (id, record)
                })
                .collect(),
            Directory::Fixed { records, .. } => records.clone(),
        }
    }
}

/// `{"id": id, "name": name}`, built directly: this runs for every read.
fn builtin_record(id_json: &str, name: &str) -> Bytes {
    let mut json = Vec::with_capacity(20 + id_json.len() + name.len());
    json.extend_from_slice(b"{\"id\":");
    json.extend_from_slice(id_json.as_bytes());
    json.extend_from_slice(b",\"name\":");
    serde_json::to_writer(&mut json, name).expect("names serialize");
    json.push(b'}');
    Bytes::from(json)
}

/// A JSON array of `items` (each valid JSON).
fn json_array(items: &[Bytes]) -> Bytes {
    let mut json = Vec::with_capacity(2 + items.iter().map(|item| item.len() + 1).sum::<usize>());
    json.push(b'[');
    for (position, item) in items.iter().enumerate() {
        if position > 0 {
            json.push(b',');
        }
        json.extend_from_slice(item);
    }
    json.push(b']');
    Bytes::from(json)
}

/// What the demo services know.
#[derive(Debug, Clone)]
pub struct DemoData {
    users: Directory,
    products: Directory,
}

impl DemoData {
    /// The built-in data: every id exists.
    pub fn builtin() -> Self {
        DemoData {
            users: Directory::Builtin {
                name: DEMO_USER_NAME,
            },
            products: Directory::Builtin {
                name: DEMO_PRODUCT_NAME,
            },
        }
    }

    /// Records from a fixtures document: `{"users": [...], "products": [...]}`,
    /// each record an object with an `id` (integer or string).
    pub fn from_fixtures_json(json: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fixtures {
            #[serde(default)]
            users: Vec<Box<RawValue>>,
            #[serde(default)]
            products: Vec<Box<RawValue>>,
        }
        #[derive(Deserialize)]
        struct WithId {
            id: crate::protocol::RecordId,
        }
        fn index(kind: &str, records: Vec<Box<RawValue>>) -> Result<Directory, String> {
            let mut with_ids = Vec::with_capacity(records.len());
            for (position, record) in records.into_iter().enumerate() {
                let WithId { id } = serde_json::from_str(record.get()).map_err(|err| {
                    format!("{kind}[{position}] needs an \"id\" (integer or string): {err}")
                })?;
                let id = serde_json::to_string(&id).expect("ids serialize");
                let compact = crate::protocol::compact_json(record.get());
                with_ids.push((id, Bytes::from(compact)));
            }
            Ok(Directory::fixed(with_ids))
        }
        let fixtures: Fixtures =
            serde_json::from_str(json).map_err(|err| format!("fixtures: {err}"))?;
        Ok(DemoData {
            users: index("users", fixtures.users)?,
            products: index("products", fixtures.products)?,
        })
    }

    /// Reads a fixtures file (see [`Self::from_fixtures_json`]).
    pub fn from_fixtures_file(path: &Path) -> Result<Self, String> {
        let json = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read fixtures {}: {err}", path.display()))?;
        Self::from_fixtures_json(&json).map_err(|err| format!("{}: {err}", path.display()))
    }

    /// The user whose id is the JSON text `id`.
    pub fn user(&self, id: &str) -> Option<Bytes> {
        self.users.lookup(id)
    }

    /// The product whose id is the JSON text `id`.
    pub fn product(&self, id: &str) -> Option<Bytes> {
        self.products.lookup(id)
    }

    /// The reviews of a product, as a JSON array; `None` if there is no
    /// such product.
    pub fn reviews(&self, product_id: &str) -> Option<Bytes> {
        self.products.lookup(product_id)?;
        let reviews: Vec<Bytes> = DEMO_REVIEWS
            .iter()
            .map(|&(rating, text)| {
                let mut json = Vec::with_capacity(64 + product_id.len());
                json.extend_from_slice(b"{\"product_id\":");
                json.extend_from_slice(product_id.as_bytes());
                json.extend_from_slice(format!(",\"rating\":{rating},\"text\":").as_bytes());
                serde_json::to_writer(&mut json, text).expect("texts serialize");
                json.push(b'}');
                Bytes::from(json)
            })
            .collect();
        Some(json_array(&reviews))
    }

    /// Products recommended to a user, as a JSON array (the same few for
    /// everyone: the point is the feature, not the engine).
    pub fn recommendations(&self, _user_id: &str) -> Bytes {
        json_array(&self.products.first(RECOMMENDATION_COUNT))
    }

    /// Products whose name contains `query`, as a JSON array.
    pub fn search(&self, query: &str) -> Bytes {
        json_array(&self.products.search(query, SEARCH_RESULT_LIMIT))
    }

    /// Users the fallback cache starts with: id (JSON text) and record.
    pub fn warm_users(&self) -> Vec<(String, Bytes)> {
        self.users.warm_records()
    }

    /// Products the fallback cache starts with.
    pub fn warm_products(&self) -> Vec<(String, Bytes)> {
        self.products.warm_records()
    }
}

/// The order service's memory: which delivery keys it has created an order
/// for. Like a well-behaved remote API it is idempotent on the key (grace
/// passes the client's idempotency key down) and derives the order id from
/// it, so a delivery repeated after a crash, or a client's retry of a create
/// whose reply was lost, finds the same order instead of making a second.
#[derive(Debug, Default, Clone)]
pub struct OrderBook {
    created: HashSet<String>,
    repeated_deliveries: u64,
}

impl OrderBook {
    /// Creates the order for `idempotency_key` (once) and returns its id.
    pub fn create(&mut self, idempotency_key: &str) -> String {
        if !self.created.insert(idempotency_key.to_owned()) {
            self.repeated_deliveries += 1;
        }
        order_id_for(idempotency_key)
    }

    /// Distinct orders created.
    pub fn len(&self) -> usize {
        self.created.len()
    }

    pub fn is_empty(&self) -> bool {
        self.created.is_empty()
    }

    /// Creates that repeated a key already created (answered with the same
    /// order id instead of a second order).
    pub fn repeated_deliveries(&self) -> u64 {
        self.repeated_deliveries
    }
}

/// `ord-` and the 64-bit FNV-1a hash of the key, in hex: stable across
/// restarts and releases, distinct for distinct keys in practice.
pub fn order_id_for(idempotency_key: &str) -> String {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0100_0000_01b3;
    let hash = idempotency_key.bytes().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    format!("ord-{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_data_answers_every_id_echoing_it_as_given() {
        let data = DemoData::builtin();
        assert_eq!(data.user("123").unwrap(), r#"{"id":123,"name":"John Doe"}"#);
        assert_eq!(
            data.product(r#""a\"b""#).unwrap(),
            r#"{"id":"a\"b","name":"Product"}"#
        );
        assert_eq!(
            data.reviews("7").unwrap(),
            r#"[{"product_id":7,"rating":5,"text":"Great product"},{"product_id":7,"rating":4,"text":"Does the job"}]"#
        );
        assert_eq!(
            data.recommendations("1"),
            r#"[{"id":1,"name":"Product"},{"id":2,"name":"Product"},{"id":3,"name":"Product"}]"#
        );
        assert_eq!(data.search("nothing like it"), "[]");
        assert_eq!(data.warm_users().len(), DEMO_WARM_IDS as usize);
    }

    #[test]
    fn fixtures_replace_the_builtin_data_and_unknown_ids_are_not_found() {
        let json = r#"{"users":[{"id":1,"name":"Ada","tier":"gold"}],
                       "products":[{"id":"p1","name":"Pen"},{"id":2,"name":"Paper"}]}"#;
        let data = DemoData::from_fixtures_json(json).unwrap();
        assert_eq!(
            data.user("1").unwrap(),
            r#"{"id":1,"name":"Ada","tier":"gold"}"#
        );
        assert_eq!(data.user("2"), None);
        assert_eq!(data.user(r#""1""#), None, "\"1\" is not 1");
        assert_eq!(data.search("pap"), r#"[{"id":2,"name":"Paper"}]"#);
        assert_eq!(data.reviews("3"), None);
        assert_eq!(data.warm_products().len(), 2);
    }

    #[test]
    fn fixtures_without_ids_are_rejected_with_the_position() {
        let err = DemoData::from_fixtures_json(r#"{"users":[{"name":"x"}]}"#).unwrap_err();
        assert!(err.contains("users[0]"), "{err}");
    }

    #[test]
    fn a_repeated_order_key_finds_the_same_order() {
        let mut book = OrderBook::default();
        let first = book.create("k7");
        assert_eq!(book.create("k7"), first);
        assert_ne!(book.create("k8"), first);
        assert_eq!((book.len(), book.repeated_deliveries()), (2, 1));
    }
}
