//! The downstream services grace stands in front of, as configuration.
//!
//! A service is a name and its policies: how long a call may take, which
//! answers count as failures, how its breaker behaves and how old a copy of
//! its answers may be served. The core knows services only by a
//! [`ServiceId`]; the Maelstrom node uses the demo's `user`, `product` and
//! `order`, the gateway whatever its configuration file names.

use super::breaker::BreakerConfig;
use std::fmt;
use std::time::Duration;

/// Default time a call may take before it counts as failed.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Default answers that count as failures: the server errors that mean
/// "could not answer", not "answered no".
pub const DEFAULT_FAILURE_STATUSES: [u16; 4] = [500, 502, 503, 504];
/// Default age beyond which a copy is no longer served: 24 hours.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 60 * 60);

/// A service, by its position in the [`Services`] it was configured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(u16);

impl ServiceId {
    pub(crate) const fn from_index(index: usize) -> Self {
        ServiceId(index as u16)
    }

    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// Two bytes that start every cache and coalescing key of this service.
    pub(crate) const fn key_prefix(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
}

/// One service and its policies.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    /// A call without a full answer by then is a failure.
    pub timeout: Duration,
    /// Statuses that count as failures; every other status is an answer.
    pub failure_statuses: Vec<u16>,
    pub breaker: BreakerConfig,
    /// Oldest copy of this service's answers that may be served.
    pub max_stale: Duration,
}

impl ServiceSpec {
    /// A service with every policy at its default.
    pub fn named(name: impl Into<String>) -> Self {
        ServiceSpec {
            name: name.into(),
            timeout: DEFAULT_CALL_TIMEOUT,
            failure_statuses: DEFAULT_FAILURE_STATUSES.to_vec(),
            breaker: BreakerConfig::default(),
            max_stale: DEFAULT_MAX_STALE,
        }
    }

    /// Whether an answer with `status` is a failure of the service.
    pub fn is_failure_status(&self, status: u16) -> bool {
        self.failure_statuses.contains(&status)
    }
}

/// Every configured service, in the order they were configured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Services {
    specs: Vec<ServiceSpec>,
}

/// A service name that is not configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownService(pub String);

impl fmt::Display for UnknownService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown service {:?}", self.0)
    }
}

impl Services {
    /// Adds a service; its id is its position. Names must be unique (the
    /// configuration checks that before it gets here).
    pub fn add(&mut self, spec: ServiceSpec) -> ServiceId {
        debug_assert!(
            self.id(&spec.name).is_err(),
            "duplicate service {}",
            spec.name
        );
        let id = ServiceId(u16::try_from(self.specs.len()).expect("fewer than 65536 services"));
        self.specs.push(spec);
        id
    }

    pub fn id(&self, name: &str) -> Result<ServiceId, UnknownService> {
        self.specs
            .iter()
            .position(|spec| spec.name == name)
            .map(|index| ServiceId(index as u16))
            .ok_or_else(|| UnknownService(name.to_string()))
    }

    pub fn spec(&self, id: ServiceId) -> &ServiceSpec {
        &self.specs[id.index()]
    }

    pub fn name(&self, id: ServiceId) -> &str {
        &self.specs[id.index()].name
    }

    /// Every service with its id, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = (ServiceId, &ServiceSpec)> {
        self.specs
            .iter()
            .enumerate()
            .map(|(index, spec)| (ServiceId(index as u16), spec))
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_found_by_name_in_configuration_order() {
        let mut services = Services::default();
        let user = services.add(ServiceSpec::named("user"));
        let order = services.add(ServiceSpec::named("order"));
        assert_eq!(services.id("order"), Ok(order));
        assert_eq!(services.name(user), "user");
        assert_eq!(services.id("nope"), Err(UnknownService("nope".into())));
        let names: Vec<&str> = services
            .iter()
            .map(|(_, spec)| spec.name.as_str())
            .collect();
        assert_eq!(names, ["user", "order"]);
    }

    #[test]
    fn only_configured_statuses_are_failures() {
        let spec = ServiceSpec::named("user");
        assert!(spec.is_failure_status(503));
        assert!(!spec.is_failure_status(404));
        assert!(!spec.is_failure_status(501));
    }
}
