//! The downstream services grace stands in front of, simulated in-process.
//!
//! Three services: `user` and `product` answer reads, `order` takes writes.
//! The built-in demo data answers every id; `--fixtures` replaces it with a
//! fixed set of records, and then an unknown id is a definite not-found.
//! Failures are injected per request (`service_unavailable`) or made sticky
//! (`set_service_health`), so every degradation path can be driven from the
//! wire.
//!
//! The backend counts the calls that reach each service, so tests can check
//! that an open breaker really stops calling.

use crate::protocol::{self, RecordId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// A record as JSON text, shared between the cache and the replies that
/// carry it; it is written out verbatim, keys in the order they came.
pub type Record = Arc<RawValue>;

/// Wraps JSON text known to be valid as a [`Record`].
pub fn record_from_json(json: String) -> Record {
    Arc::from(RawValue::from_string(json).expect("record is valid JSON"))
}

/// Name of every demo user (the seed's sample record).
pub const DEMO_USER_NAME: &str = "John Doe";
/// Name of every demo product (the seed's sample record).
pub const DEMO_PRODUCT_NAME: &str = "Product";
/// Demo ids 1..=this are in the fallback cache at start.
pub const DEMO_WARM_IDS: i64 = 1000;

/// A downstream service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    User,
    Product,
    Order,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::User, Service::Product, Service::Order];

    pub const fn index(self) -> usize {
        self as usize
    }

    pub const fn name(self) -> &'static str {
        match self {
            Service::User => "user",
            Service::Product => "product",
            Service::Order => "order",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A call that reached a service and failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceDown;

/// Where a read service gets its records.
enum Directory {
    /// Every id exists and is `{"id": id, "name": name}`.
    Demo { name: &'static str },
    /// Only these records exist, kept in the order the fixtures list them.
    Fixed {
        records: Vec<(RecordId, Record)>,
        index: HashMap<RecordId, usize>,
    },
}

impl Directory {
    fn fixed(records: Vec<(RecordId, Record)>) -> Self {
        let index = records
            .iter()
            .enumerate()
            .map(|(position, (id, _))| (id.clone(), position))
            .collect();
        Directory::Fixed { records, index }
    }

    fn lookup(&self, id: &RecordId) -> Option<Record> {
        match self {
            Directory::Demo { name } => Some(demo_record(id, name)),
            Directory::Fixed { records, index } => {
                index.get(id).map(|&position| records[position].1.clone())
            }
        }
    }

    /// The first `limit` records, in order (demo: ids 1, 2, ...).
    fn first(&self, limit: usize) -> Vec<Record> {
        match self {
            Directory::Demo { name } => (1..=limit as i64)
                .map(|id| demo_record(&RecordId::Int(id), name))
                .collect(),
            Directory::Fixed { records, .. } => records
                .iter()
                .take(limit)
                .map(|(_, record)| record.clone())
                .collect(),
        }
    }

    /// Records whose `name` contains `query`, ignoring case.
    fn search(&self, query: &str, limit: usize) -> Vec<Record> {
        let query = query.to_lowercase();
        let matches = |name: &str| name.to_lowercase().contains(&query);
        match self {
            Directory::Demo { name } if matches(name) => self.first(limit),
            Directory::Demo { .. } => Vec::new(),
            Directory::Fixed { records, .. } => {
                #[derive(Deserialize)]
                struct Named {
                    name: Option<String>,
                }
                records
                    .iter()
                    .filter(|(_, record)| {
                        serde_json::from_str::<Named>(record.get())
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

    /// The records the fallback cache starts with.
    fn warm_records(&self) -> Vec<(RecordId, Record)> {
        match self {
            Directory::Demo { name } => (1..=DEMO_WARM_IDS)
                .map(|id| (RecordId::Int(id), demo_record(&RecordId::Int(id), name)))
                .collect(),
            Directory::Fixed { records, .. } => records.clone(),
        }
    }
}

/// `{"id": id, "name": name}`, built directly: this runs for every demo read.
fn demo_record(id: &RecordId, name: &str) -> Record {
    let mut json = Vec::with_capacity(32 + name.len());
    json.extend_from_slice(b"{\"id\":");
    serde_json::to_writer(&mut json, id).expect("ids serialize");
    json.extend_from_slice(b",\"name\":");
    serde_json::to_writer(&mut json, name).expect("names serialize");
    json.push(b'}');
    record_from_json(String::from_utf8(json).expect("serde_json writes UTF-8"))
}

/// The order service: takes an order under a delivery key and returns its
/// order id. Like a well-behaved remote API it is idempotent on the key
/// (grace passes the client's idempotency key down), and it derives the
/// order id from the key, so a delivery repeated after a crash, or a
/// client's retry of a create whose reply was lost, finds the same order
/// instead of making a second one.
#[derive(Default)]
struct OrderService {
    created: HashSet<String>,
    repeated_deliveries: u64,
}

impl OrderService {
    fn create(&mut self, delivery_key: &str) -> String {
        if self.created.contains(delivery_key) {
            self.repeated_deliveries += 1;
        } else {
            self.created.insert(delivery_key.to_owned());
        }
        order_id_for(delivery_key)
    }
}

/// `ord-` and the 64-bit FNV-1a hash of the delivery key, in hex: stable
/// across restarts and releases, distinct for distinct keys in practice.
pub fn order_id_for(delivery_key: &str) -> String {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0100_0000_01b3;
    let hash = delivery_key.bytes().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    format!("ord-{hash:016x}")
}

/// The three simulated services and their health.
pub struct Backend {
    users: Directory,
    products: Directory,
    orders: OrderService,
    /// Sticky outages set by `set_service_health`.
    down: [bool; 3],
    /// Calls that reached each service.
    calls: [u64; 3],
}

impl Backend {
    /// The built-in demo data: every id exists.
    pub fn demo() -> Self {
        Self::with_directories(
            Directory::Demo {
                name: DEMO_USER_NAME,
            },
            Directory::Demo {
                name: DEMO_PRODUCT_NAME,
            },
        )
    }

    /// Records from a fixtures document: `{"users": [...], "products": [...]}`,
    /// each record an object with an `id`.
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
            id: RecordId,
        }
        fn index(kind: &str, records: Vec<Box<RawValue>>) -> Result<Directory, String> {
            let mut with_ids = Vec::with_capacity(records.len());
            for (position, record) in records.into_iter().enumerate() {
                let WithId { id } = serde_json::from_str(record.get()).map_err(|err| {
                    format!("{kind}[{position}] needs an \"id\" (integer or string): {err}")
                })?;
                with_ids.push((id, record_from_json(protocol::compact_json(record.get()))));
            }
            Ok(Directory::fixed(with_ids))
        }
        let fixtures: Fixtures =
            serde_json::from_str(json).map_err(|err| format!("fixtures: {err}"))?;
        Ok(Self::with_directories(
            index("users", fixtures.users)?,
            index("products", fixtures.products)?,
        ))
    }

    /// Reads a fixtures file (see [`Self::from_fixtures_json`]).
    pub fn from_fixtures_file(path: &Path) -> Result<Self, String> {
        let json = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read fixtures {}: {err}", path.display()))?;
        Self::from_fixtures_json(&json).map_err(|err| format!("{}: {err}", path.display()))
    }

    fn with_directories(users: Directory, products: Directory) -> Self {
        Backend {
            users,
            products,
            orders: OrderService::default(),
            down: [false; 3],
            calls: [0; 3],
        }
    }

    /// Calls a read service. `Ok(None)` is a definite not-found.
    pub fn fetch(
        &mut self,
        service: Service,
        id: &RecordId,
        down_for_this_call: bool,
    ) -> Result<Option<Record>, ServiceDown> {
        self.reach(service, down_for_this_call)?;
        Ok(match service {
            Service::User => self.users.lookup(id),
            Service::Product => self.products.lookup(id),
            Service::Order => None,
        })
    }

    /// Calls the order service to create the order under `delivery_key`.
    pub fn create_order(
        &mut self,
        delivery_key: &str,
        down_for_this_call: bool,
    ) -> Result<String, ServiceDown> {
        self.reach(Service::Order, down_for_this_call)?;
        Ok(self.orders.create(delivery_key))
    }

    /// A call to `service` that fails whatever its health (fault injection).
    pub fn fail_call(&mut self, service: Service) -> Result<(), ServiceDown> {
        self.reach(service, true)
    }

    fn reach(&mut self, service: Service, down_for_this_call: bool) -> Result<(), ServiceDown> {
        self.calls[service.index()] += 1;
        if down_for_this_call || self.down[service.index()] {
            Err(ServiceDown)
        } else {
            Ok(())
        }
    }

    /// Makes a service fail every call (or recover).
    pub fn set_available(&mut self, service: Service, available: bool) {
        self.down[service.index()] = !available;
    }

    pub fn is_available(&self, service: Service) -> bool {
        !self.down[service.index()]
    }

    /// Calls that reached `service`, failed or not.
    pub fn calls(&self, service: Service) -> u64 {
        self.calls[service.index()]
    }

    /// Distinct orders the order service holds.
    pub fn orders_created(&self) -> usize {
        self.orders.created.len()
    }

    /// Deliveries that repeated an order already created (answered with the
    /// same order id instead of a second order).
    pub fn repeated_order_deliveries(&self) -> u64 {
        self.orders.repeated_deliveries
    }

    /// A few products to recommend (the recommendation engine is not a
    /// separate service here; it is shed by mode, not guarded by a breaker).
    pub fn sample_products(&self, limit: usize) -> Vec<Record> {
        self.products.first(limit)
    }

    /// Products whose name contains `query`.
    pub fn search_products(&self, query: &str, limit: usize) -> Vec<Record> {
        self.products.search(query, limit)
    }

    /// User and product records the fallback cache starts with.
    pub fn warm_records(&self) -> impl Iterator<Item = (Service, RecordId, Record)> {
        let users = self.users.warm_records().into_iter();
        let products = self.products.warm_records().into_iter();
        users
            .map(|(id, record)| (Service::User, id, record))
            .chain(products.map(|(id, record)| (Service::Product, id, record)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_data_answers_every_id_echoing_it_as_given() {
        let mut backend = Backend::demo();
        let user = backend.fetch(Service::User, &RecordId::Int(123), false);
        assert_eq!(
            user.unwrap().unwrap().get(),
            r#"{"id":123,"name":"John Doe"}"#
        );
        let product = backend.fetch(Service::Product, &RecordId::Text("a\"b".into()), false);
        assert_eq!(
            product.unwrap().unwrap().get(),
            r#"{"id":"a\"b","name":"Product"}"#
        );
    }

    #[test]
    fn fixtures_replace_demo_data_and_unknown_ids_are_not_found() {
        let json = r#"{"users":[{"id":1,"name":"Ada","tier":"gold"}],"products":[{"id":"p1","name":"Pen"}]}"#;
        let mut backend = Backend::from_fixtures_json(json).unwrap();
        let ada = backend
            .fetch(Service::User, &RecordId::Int(1), false)
            .unwrap();
        assert_eq!(ada.unwrap().get(), r#"{"id":1,"name":"Ada","tier":"gold"}"#);
        assert!(matches!(
            backend.fetch(Service::User, &RecordId::Int(2), false),
            Ok(None)
        ));
        assert_eq!(backend.warm_records().count(), 2);
    }

    #[test]
    fn pretty_printed_fixtures_are_served_compact_with_strings_intact() {
        let json = "{\"users\": [\n  {\"id\": 1,\n   \"name\": \"Ada \\\" Lovelace\\\\\",\n   \"tags\": [\"a b\"]}\n]}";
        let mut backend = Backend::from_fixtures_json(json).unwrap();
        let ada = backend
            .fetch(Service::User, &RecordId::Int(1), false)
            .unwrap();
        assert_eq!(
            ada.unwrap().get(),
            r#"{"id":1,"name":"Ada \" Lovelace\\","tags":["a b"]}"#
        );
    }

    #[test]
    fn fixtures_without_ids_are_rejected_with_the_position() {
        let err = Backend::from_fixtures_json(r#"{"users":[{"name":"x"}]}"#)
            .err()
            .unwrap();
        assert!(err.contains("users[0]"), "{err}");
    }

    #[test]
    fn sticky_outage_fails_every_call_until_recovered() {
        let mut backend = Backend::demo();
        backend.set_available(Service::Order, false);
        assert_eq!(backend.create_order("k1", false), Err(ServiceDown));
        backend.set_available(Service::Order, true);
        assert_eq!(
            backend.create_order("k1", false).unwrap(),
            order_id_for("k1")
        );
        assert_eq!(backend.calls(Service::Order), 2);
    }

    #[test]
    fn repeated_delivery_returns_the_same_order() {
        let mut backend = Backend::demo();
        let first = backend.create_order("k7", false).unwrap();
        let again = backend.create_order("k7", false).unwrap();
        assert_eq!(first, again);
        assert_ne!(first, backend.create_order("k8", false).unwrap());
        assert_eq!(backend.orders_created(), 2);
        assert_eq!(backend.repeated_order_deliveries(), 1);
    }
}
