//! The gateway's configuration file: the upstream services, the routes in
//! front of them, and which features each load mode switches off.
//!
//! A mistake in it stops grace at start with a message naming the line of
//! the key at fault (unknown field, unknown service, a URL that is not
//! `http://host:port`, a value out of range, a route declared twice or one
//! no request could take), rather than surfacing as odd behaviour under
//! traffic. Everything not set falls back to the defaults the flags give,
//! so a minimal file names only URLs and routes. `grace serve` without a
//! file runs [`GatewayConfig::demo`]: the built-in demo services, answered
//! in-process.

use super::routes::{PathPattern, PatternError};
use crate::core::breaker::{BreakerConfig, SlidingWindow};
use crate::core::load_mode::ModePolicy;
use crate::core::service::ServiceSpec;
use http::uri::Authority;
use http::{Method, StatusCode, Uri};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// Where a service's calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// An HTTP service at `http://<authority>/` (host and port).
    Http(Authority),
    /// The built-in demo services, answering in-process.
    Demo,
}

/// One configured service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub upstream: Upstream,
    pub spec: ServiceSpec,
}

/// What a route does when its service cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Serve the last good copy (stale-if-error).
    Cache,
    /// Accept the write durably and deliver it later.
    Queue,
    /// Answer that the service cannot answer.
    None,
}

/// The answer of a route whose feature is switched off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DegradedAnswer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: String,
}

impl Default for DegradedAnswer {
    fn default() -> Self {
        DegradedAnswer {
            status: StatusCode::OK,
            content_type: "application/json".into(),
            body: "{\"degraded\":true}".into(),
        }
    }
}

/// One route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub method: Method,
    pub path: PathPattern,
    /// The service's name (checked to exist).
    pub service: String,
    pub fallback: Fallback,
    /// The feature that switches this route off, if any.
    pub feature: Option<String>,
    pub degraded: DegradedAnswer,
}

/// The whole configuration, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// In the file's order (alphabetical: TOML tables have no order).
    pub services: Vec<(String, ServiceConfig)>,
    pub routes: Vec<RouteConfig>,
    pub modes: ModePolicy,
}

/// A configuration that cannot be used, with where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when the configuration came from one.
    pub file: Option<String>,
    /// 1-based line of the mistake, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: {}", self.message),
            (Some(file), None) => write!(f, "{file}: {}", self.message),
            (None, Some(line)) => write!(f, "line {line}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

// The file as written: every field optional where it has a default, unknown
// fields refused, spans kept where a later check needs to name a line.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    services: BTreeMap<String, Spanned<RawService>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    modes: Option<RawModes>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    url: Option<Spanned<String>>,
    timeout_ms: Option<Spanned<u64>>,
    failure_statuses: Option<Vec<Spanned<u16>>>,
    max_stale_ms: Option<Spanned<u64>>,
    #[serde(default)]
    breaker: RawBreaker,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    failure_threshold: Option<u32>,
    open_timeout_ms: Option<Spanned<u64>>,
    open_timeout_max_ms: Option<Spanned<u64>>,
    failure_rate_threshold: Option<Spanned<f64>>,
    slow_call_rate_threshold: Option<Spanned<f64>>,
    slow_call_duration_ms: Option<Spanned<u64>>,
    sliding_window: Option<SlidingWindow>,
    sliding_window_size: Option<u32>,
    minimum_calls: Option<u32>,
    permitted_calls_in_half_open: Option<u32>,
    max_wait_in_half_open_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    method: Spanned<String>,
    path: Spanned<String>,
    service: Spanned<String>,
    #[serde(default)]
    fallback: Option<Spanned<Fallback>>,
    #[serde(default)]
    feature: Option<String>,
    #[serde(default)]
    degraded: Option<Spanned<RawDegraded>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDegraded {
    status: Option<Spanned<u16>>,
    body: Option<String>,
    content_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModes {
    degraded: Option<Vec<String>>,
    critical: Option<Vec<String>>,
}

/// Longest a time setting may be: one week (the flags' bound too).
const MAX_MS: u64 = crate::config::MAX_WAIT_MS;

impl GatewayConfig {
    /// Reads and checks the file at `path`; services start from `defaults`.
    pub fn load(path: &Path, defaults: &ServiceSpec) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            file: Some(file.clone()),
            line: None,
            message: format!("cannot read: {err}"),
        })?;
        Self::parse(&text, defaults).map_err(|err| ConfigError {
            file: Some(file),
            ..err
        })
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str, defaults: &ServiceSpec) -> Result<Self, ConfigError> {
        let at = |span: Range<usize>, message: String| ConfigError {
            file: None,
            line: Some(line_of(text, span.start)),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|err| ConfigError {
            file: None,
            line: err.span().map(|span| line_of(text, span.start)),
            message: err.message().trim().to_string(),
        })?;
        let mut services = Vec::new();
        for (name, raw_service) in raw.services {
            let span = raw_service.span();
            let service = build_service(&name, raw_service.into_inner(), defaults).map_err(
                |(span_inside, message)| at(span_inside.unwrap_or(span.clone()), message),
            )?;
            services.push((name, service));
        }
        let mut routes: Vec<RouteConfig> = Vec::new();
        let mut declared: Vec<(Method, String, usize)> = Vec::new();
        for raw_route in raw.routes {
            let span = raw_route.span();
            let raw_route = raw_route.into_inner();
            let route = build_route(raw_route, &services)
                .map_err(|(inside, message)| at(inside.unwrap_or(span.clone()), message))?;
            let shape = route.path.shape();
            if let Some((_, _, first)) = declared
                .iter()
                .find(|(method, other, _)| *method == route.method && *other == shape)
            {
                return Err(at(
                    span,
                    format!(
                        "duplicate route: {} {} is already declared on line {first}",
                        route.method, route.path
                    ),
                ));
            }
            declared.push((route.method.clone(), shape, line_of(text, span.start)));
            routes.push(route);
        }
        let defaults_modes = ModePolicy::default();
        let modes = match raw.modes {
            None => defaults_modes,
            Some(modes) => ModePolicy {
                features: Vec::new(),
                degraded: modes.degraded.unwrap_or(defaults_modes.degraded),
                critical: modes.critical.unwrap_or(defaults_modes.critical),
            },
        };
        let mut modes = modes;
        for feature in routes.iter().filter_map(|route| route.feature.as_ref()) {
            if !modes.features.contains(feature) {
                modes.features.push(feature.clone());
            }
        }
        Ok(GatewayConfig {
            services,
            routes,
            modes,
        })
    }

    /// `grace serve` with no file: the demo API (`/users/{id}`,
    /// `/products/{id}`, its reviews, recommendations, search, `POST
    /// /orders`) in front of the built-in demo services, answered in-process.
    pub fn demo(defaults: &ServiceSpec) -> Self {
        Self::parse(DEMO_ROUTES, defaults)
            .map(|mut config| {
                for (_, service) in &mut config.services {
                    service.upstream = Upstream::Demo;
                }
                config
            })
            .expect("the demo configuration is valid")
    }
}

/// The demo API's routes: also what `examples/grace.toml` configures
/// against `grace demo-upstream`.
pub const DEMO_ROUTES: &str = r#"
[services.user]
url = "http://127.0.0.1:9001"
[services.product]
url = "http://127.0.0.1:9001"
[services.order]
url = "http://127.0.0.1:9001"

[[routes]]
method = "GET"
path = "/users/{id}"
service = "user"
fallback = "cache"

[[routes]]
method = "GET"
path = "/products/{id}"
service = "product"
fallback = "cache"

[[routes]]
method = "GET"
path = "/products/{id}/reviews"
service = "product"
fallback = "cache"
feature = "reviews"
degraded = { status = 200, body = '{"reviews":[],"degraded":true}' }

[[routes]]
method = "GET"
path = "/recommendations/{user_id}"
service = "product"
fallback = "cache"
feature = "recommendations"
degraded = { status = 200, body = '{"recommendations":[],"degraded":true}' }

[[routes]]
method = "GET"
path = "/search"
service = "product"
fallback = "cache"
feature = "search"
degraded = { status = 200, body = '{"results":[],"degraded":true}' }

[[routes]]
method = "POST"
path = "/orders"
service = "order"
fallback = "queue"
"#;

type Located = (Option<Range<usize>>, String);

fn build_service(
    name: &str,
    raw: RawService,
    defaults: &ServiceSpec,
) -> Result<ServiceConfig, Located> {
    let upstream = match raw.url {
        None => return Err((None, format!("service {name:?} needs a `url`"))),
        Some(url) => {
            let span = url.span();
            Upstream::Http(parse_base_url(url.get_ref()).map_err(|message| (Some(span), message))?)
        }
    };
    // Each check below names the value's own span, so the error points at
    // the offending key's line rather than the `[services.NAME]` header.
    let millis = |value: Option<Spanned<u64>>,
                  field: &str,
                  default: Duration|
     -> Result<Duration, Located> {
        match value {
            None => Ok(default),
            Some(ms) if *ms.get_ref() <= MAX_MS => Ok(Duration::from_millis(*ms.get_ref())),
            Some(ms) => Err((
                Some(ms.span()),
                format!(
                    "services.{name}.{field}: {} is more than {MAX_MS} ms",
                    ms.get_ref()
                ),
            )),
        }
    };
    if let Some(zero) = raw.timeout_ms.as_ref().filter(|ms| *ms.get_ref() == 0) {
        return Err((
            Some(zero.span()),
            format!("services.{name}.timeout_ms: must be at least 1"),
        ));
    }
    let timeout = millis(raw.timeout_ms, "timeout_ms", defaults.timeout)?;
    let failure_statuses = match raw.failure_statuses {
        None => defaults.failure_statuses.clone(),
        Some(statuses) => {
            if let Some(bad) = statuses
                .iter()
                .find(|status| !(100..=599).contains(status.get_ref()))
            {
                return Err((
                    Some(bad.span()),
                    format!(
                        "services.{name}.failure_statuses: {} is not an HTTP status",
                        bad.get_ref()
                    ),
                ));
            }
            statuses.into_iter().map(Spanned::into_inner).collect()
        }
    };
    let b = raw.breaker;
    let d = defaults.breaker;
    let percent = |value: Option<Spanned<f64>>, field: &str| -> Result<Option<f64>, Located> {
        match value {
            Some(p) if !(0.0..=100.0).contains(p.get_ref()) || p.get_ref().is_nan() => Err((
                Some(p.span()),
                format!(
                    "services.{name}.breaker.{field}: {} is not a percentage from 0 to 100",
                    p.get_ref()
                ),
            )),
            other => Ok(other.map(Spanned::into_inner)),
        }
    };
    let breaker = BreakerConfig {
        failure_threshold: match b.failure_threshold {
            Some(0) => None,
            Some(n) => Some(n),
            None => d.failure_threshold,
        },
        open_timeout: millis(b.open_timeout_ms, "breaker.open_timeout_ms", d.open_timeout)?,
        open_timeout_max: millis(
            b.open_timeout_max_ms,
            "breaker.open_timeout_max_ms",
            d.open_timeout_max,
        )?,
        failure_rate_threshold: percent(b.failure_rate_threshold, "failure_rate_threshold")?
            .or(d.failure_rate_threshold),
        slow_call_rate_threshold: percent(b.slow_call_rate_threshold, "slow_call_rate_threshold")?
            .or(d.slow_call_rate_threshold),
        slow_call_duration: millis(
            b.slow_call_duration_ms,
            "breaker.slow_call_duration_ms",
            d.slow_call_duration,
        )?,
        sliding_window: b.sliding_window.unwrap_or(d.sliding_window),
        sliding_window_size: b
            .sliding_window_size
            .unwrap_or(d.sliding_window_size)
            .max(1),
        minimum_calls: b.minimum_calls.unwrap_or(d.minimum_calls).max(1),
        permitted_calls_in_half_open: b
            .permitted_calls_in_half_open
            .unwrap_or(d.permitted_calls_in_half_open)
            .max(1),
        max_wait_in_half_open: match b.max_wait_in_half_open_ms {
            Some(ms) if *ms.get_ref() == 0 => None,
            Some(ms) => Some(millis(
                Some(ms),
                "breaker.max_wait_in_half_open_ms",
                Duration::ZERO,
            )?),
            None => d.max_wait_in_half_open,
        },
    };
    Ok(ServiceConfig {
        upstream,
        spec: ServiceSpec {
            name: name.to_string(),
            timeout,
            failure_statuses,
            breaker,
            max_stale: millis(raw.max_stale_ms, "max_stale_ms", defaults.max_stale)?,
        },
    })
}

/// `http://host:port` (port 80 when left out, as any HTTP client reads it)
/// with nothing after it but an optional `/`: the request's own path and
/// query are appended unchanged, so the host and port are all there is to
/// keep. Whatever else a URL can hold is refused rather than dropped: a
/// user and password (grace sends no credentials upstream), a fragment,
/// and a port no connection can be made to.
fn parse_base_url(url: &str) -> Result<Authority, String> {
    let uri: Uri = url
        .parse()
        .map_err(|err| format!("bad url {url:?}: {err}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "bad url {url:?}: https upstreams are not supported; put a TLS terminator in front"
            ));
        }
        _ => return Err(format!("bad url {url:?}: must start with http://")),
    }
    let Some(authority) = uri
        .authority()
        .filter(|authority| !authority.host().is_empty())
    else {
        return Err(format!("bad url {url:?}: no host"));
    };
    if let Some((userinfo, _)) = authority.as_str().rsplit_once('@') {
        // Not repeated in the message: it may hold a password.
        let shown = url.replacen(userinfo, "…", 1);
        return Err(format!(
            "bad url {shown:?}: a base URL has no user or password (grace sends no credentials upstream)"
        ));
    }
    if url.contains('#') {
        return Err(format!(
            "bad url {url:?}: a base URL has no fragment (#...)"
        ));
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if path != "/" {
        return Err(format!(
            "bad url {url:?}: a base URL has no path or query (the request's own are forwarded)"
        ));
    }
    let port = port_text(authority);
    let number = port
        .filter(|digits| digits.bytes().all(|byte| byte.is_ascii_digit()))
        .and_then(|digits| digits.parse::<u16>().ok());
    match (port, number) {
        (None, _) => {} // port 80, as any HTTP client reads `http://host`
        (Some(""), _) => return Err(format!("bad url {url:?}: no port after the ':'")),
        (Some(_), Some(0)) => {
            return Err(format!("bad url {url:?}: port 0 cannot be connected to"));
        }
        (Some(_), Some(_)) => {}
        (Some(port), None) => {
            return Err(format!(
                "bad url {url:?}: port {port:?} is not a number from 1 to 65535"
            ));
        }
    }
    Ok(authority.clone())
}

/// What follows the host's `:` in `authority`, if anything does (a `:`
/// inside an IPv6 literal's brackets is part of the host). Read from the
/// text because [`Authority::port_u16`] says `None` alike for no port and
/// for one out of range.
fn port_text(authority: &Authority) -> Option<&str> {
    let text = authority.as_str();
    let after_host = text.rfind(']').map_or(0, |bracket| bracket + 1);
    text[after_host..]
        .find(':')
        .map(|colon| &text[after_host + colon + 1..])
}

fn build_route(
    raw: RawRoute,
    services: &[(String, ServiceConfig)],
) -> Result<RouteConfig, Located> {
    let method_span = raw.method.span();
    let method =
        Method::from_bytes(raw.method.get_ref().to_ascii_uppercase().as_bytes()).map_err(|_| {
            (
                Some(method_span.clone()),
                format!("bad method {:?}", raw.method.get_ref()),
            )
        })?;
    let path_span = raw.path.span();
    let path = PathPattern::parse(raw.path.get_ref()).map_err(|err: PatternError| {
        (
            Some(path_span.clone()),
            format!("bad path {:?}: {err}", raw.path.get_ref()),
        )
    })?;
    let service_span = raw.service.span();
    let service = raw.service.into_inner();
    if !services.iter().any(|(name, _)| *name == service) {
        let known: Vec<&str> = services.iter().map(|(name, _)| name.as_str()).collect();
        return Err((
            Some(service_span),
            format!(
                "route {method} {path} names unknown service {service:?} (configured: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    let (fallback, fallback_span) = match raw.fallback {
        Some(fallback) => {
            let span = fallback.span();
            (fallback.into_inner(), Some(span))
        }
        None => (Fallback::None, None),
    };
    match fallback {
        Fallback::Cache if method != Method::GET => {
            return Err((
                fallback_span,
                format!(
                    "route {method} {path}: fallback = \"cache\" serves copies of GET answers only"
                ),
            ));
        }
        Fallback::Queue if method == Method::GET || method == Method::HEAD => {
            return Err((
                fallback_span,
                format!("route {method} {path}: fallback = \"queue\" is for writes, not {method}"),
            ));
        }
        _ => {}
    }
    let degraded = match raw.degraded {
        None => DegradedAnswer::default(),
        Some(raw_degraded) if raw.feature.is_none() => {
            return Err((
                Some(raw_degraded.span()),
                format!(
                    "route {method} {path}: `degraded` is the answer while the route's `feature` \
                     is off, and the route has no `feature`, so it would never be used"
                ),
            ));
        }
        Some(raw_degraded) => {
            let raw_degraded = raw_degraded.into_inner();
            let defaults = DegradedAnswer::default();
            let status = match raw_degraded.status {
                None => defaults.status,
                Some(code) => StatusCode::from_u16(*code.get_ref())
                    .ok()
                    .filter(|status| (100..=599).contains(&status.as_u16()))
                    .ok_or_else(|| {
                        (
                            Some(code.span()),
                            format!("degraded.status {} is not an HTTP status", code.get_ref()),
                        )
                    })?,
            };
            DegradedAnswer {
                status,
                content_type: raw_degraded.content_type.unwrap_or(defaults.content_type),
                body: raw_degraded.body.unwrap_or(defaults.body),
            }
        }
    };
    Ok(RouteConfig {
        method,
        path,
        service,
        fallback,
        feature: raw.feature,
        degraded,
    })
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::parse(text, &ServiceSpec::named("defaults"))
    }

    const ONE_SERVICE: &str = "[services.user]\nurl = \"http://127.0.0.1:9001\"\n";

    #[test]
    fn the_issue_example_parses_with_its_defaults() {
        let text = r#"
[services.user]
url = "http://127.0.0.1:9001"   # base URL
timeout_ms = 1000
failure_statuses = [500, 502, 503, 504]

[services.product]
url = "http://127.0.0.1:9002"

[[routes]]
method = "GET"
path = "/users/{id}"
service = "user"
fallback = "cache"

[[routes]]
method = "GET"
path = "/search"
service = "product"
feature = "search"
degraded = { status = 200, body = '{"results":[],"degraded":true}' }
"#;
        let config = parse(text).unwrap();
        assert_eq!(config.services.len(), 2);
        assert_eq!(config.routes[0].fallback, Fallback::Cache);
        assert_eq!(config.routes[1].fallback, Fallback::None);
        assert_eq!(
            config.routes[1].degraded.body,
            r#"{"results":[],"degraded":true}"#
        );
        assert_eq!(config.modes.degraded, ["recommendations", "search"]);
        let (_, user) = &config.services[1];
        assert_eq!(user.spec.timeout, Duration::from_millis(1000));
    }

    #[test]
    fn breaker_settings_override_the_defaults_per_service() {
        let text = format!(
            "{ONE_SERVICE}[services.user.breaker]\nfailure_threshold = 0\nfailure_rate_threshold = 50\nsliding_window = \"time\"\nsliding_window_size = 10\npermitted_calls_in_half_open = 3\n"
        );
        let config = parse(&text).unwrap();
        let breaker = config.services[0].1.spec.breaker;
        assert_eq!(breaker.failure_threshold, None, "0 switches the rule off");
        assert_eq!(breaker.failure_rate_threshold, Some(50.0));
        assert_eq!(breaker.sliding_window, SlidingWindow::Time);
        assert_eq!(breaker.permitted_calls_in_half_open, 3);
    }

    fn error_of(text: &str) -> ConfigError {
        parse(text).expect_err("a bad configuration")
    }

    #[test]
    fn an_unknown_field_is_refused_with_its_line() {
        let err = error_of(&format!("{ONE_SERVICE}timeout = 5\n"));
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("timeout"), "{err}");
    }

    #[test]
    fn a_route_naming_an_unknown_service_is_refused_with_its_line() {
        let text = format!(
            "{ONE_SERVICE}\n[[routes]]\nmethod = \"GET\"\npath = \"/x\"\nservice = \"nope\"\n"
        );
        let err = error_of(&text);
        assert_eq!(err.line, Some(7), "{err}");
        assert!(err.message.contains("unknown service \"nope\""), "{err}");
    }

    #[test]
    fn bad_urls_are_refused_with_their_line() {
        for url in [
            "ftp://x",
            "127.0.0.1:9001",
            "https://x",
            "http://x/api",
            "http://",
        ] {
            let err = error_of(&format!("[services.user]\nurl = \"{url}\"\n"));
            assert_eq!(err.line, Some(2), "{url}: {err}");
            assert!(err.message.contains("bad url"), "{url}: {err}");
        }
    }

    #[test]
    fn urls_no_connection_could_use_are_refused_saying_why() {
        for (url, says) in [
            ("http://127.0.0.1:99999", "not a number from 1 to 65535"),
            ("http://127.0.0.1:65536", "not a number from 1 to 65535"),
            ("http://127.0.0.1:-1", "not a number from 1 to 65535"),
            ("http://127.0.0.1:+80", "not a number from 1 to 65535"),
            ("http://127.0.0.1:0", "port 0"),
            ("http://127.0.0.1:", "no port after the ':'"),
            ("http://127.0.0.1:29001#frag", "no fragment"),
            ("http://127.0.0.1:29001/#", "no fragment"),
        ] {
            let err = error_of(&format!("[services.user]\nurl = \"{url}\"\n"));
            assert_eq!(err.line, Some(2), "{url}: {err}");
            assert!(err.message.contains("bad url"), "{url}: {err}");
            assert!(err.message.contains(says), "{url}: {err}");
        }
    }

    #[test]
    fn a_url_with_a_user_or_password_is_refused_without_repeating_them() {
        let err = error_of("[services.user]\nurl = \"http://user:secret@127.0.0.1:29001\"\n");
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.message.contains("no user or password"), "{err}");
        assert!(!err.message.contains("secret"), "{err}");
        assert!(err.message.contains("127.0.0.1:29001"), "{err}");
    }

    #[test]
    fn a_url_without_a_port_means_port_80() {
        for url in ["http://127.0.0.1", "http://localhost/", "http://[::1]"] {
            let config = parse(&format!("[services.user]\nurl = \"{url}\"\n")).unwrap();
            let Upstream::Http(authority) = &config.services[0].1.upstream else {
                panic!("{url}: an HTTP upstream");
            };
            assert_eq!(authority.port_u16(), None, "{url}: the pool dials 80");
        }
        let config = parse("[services.user]\nurl = \"http://[::1]:8080\"\n").unwrap();
        let Upstream::Http(authority) = &config.services[0].1.upstream else {
            panic!("an HTTP upstream");
        };
        assert_eq!(authority.port_u16(), Some(8080));
    }

    #[test]
    fn value_errors_in_a_service_name_the_offending_keys_line() {
        let too_long = MAX_MS + 1;
        let cases: [(String, usize, String); 8] = [
            (
                "failure_statuses = [500, 1000]\n".into(),
                3,
                "1000 is not an HTTP status".into(),
            ),
            (
                "failure_statuses = [\n  500,\n  99,\n]\n".into(),
                5,
                "99 is not an HTTP status".into(),
            ),
            (
                "timeout_ms = 0\n".into(),
                3,
                "timeout_ms: must be at least 1".into(),
            ),
            (
                format!("\ntimeout_ms = {too_long}\n"),
                4,
                format!("timeout_ms: {too_long} is more than {MAX_MS} ms"),
            ),
            (
                format!("max_stale_ms = {too_long}\n"),
                3,
                "max_stale_ms".into(),
            ),
            (
                "[services.user.breaker]\nminimum_calls = 5\nfailure_rate_threshold = 101\n".into(),
                5,
                "failure_rate_threshold: 101 is not a percentage".into(),
            ),
            (
                format!("[services.user.breaker]\nopen_timeout_ms = {too_long}\n"),
                4,
                "breaker.open_timeout_ms".into(),
            ),
            (
                format!("breaker = {{ max_wait_in_half_open_ms = {too_long} }}\n"),
                3,
                "breaker.max_wait_in_half_open_ms".into(),
            ),
        ];
        for (settings, line, says) in cases {
            let err = error_of(&format!("{ONE_SERVICE}{settings}"));
            assert_eq!(err.line, Some(line), "{settings}: {err}");
            assert!(err.message.contains(&says), "{settings}: {err}");
        }
    }

    /// One route under [`ONE_SERVICE`], its `[[routes]]` header on line 4.
    fn one_route(path: &str, extra: &str) -> String {
        format!(
            "{ONE_SERVICE}\n[[routes]]\nmethod = \"GET\"\npath = \"{path}\"\nservice = \"user\"\n{extra}"
        )
    }

    #[test]
    fn a_path_no_request_could_match_is_refused_with_its_line() {
        for (path, says) in [
            ("/a b", "write it percent-encoded (%20)"),
            ("/a/{id}/{id}", "{id} appears twice"),
            ("/a/{}", "needs a name"),
            ("/a/{id", "a parameter is a whole segment"),
            ("/a/id}", "a parameter is a whole segment"),
            ("a/{id}", "starts with /"),
        ] {
            let err = error_of(&one_route(path, ""));
            assert_eq!(err.line, Some(6), "{path}: {err}");
            assert!(err.message.contains("bad path"), "{path}: {err}");
            assert!(err.message.contains(says), "{path}: {err}");
        }
    }

    #[test]
    fn a_degraded_answer_on_a_route_without_a_feature_is_refused_with_its_line() {
        let err = error_of(&one_route("/x", "degraded = { status = 200 }\n"));
        assert_eq!(err.line, Some(8), "{err}");
        assert!(err.message.contains("no `feature`"), "{err}");
        let with_feature = one_route("/x", "feature = \"x\"\ndegraded = { status = 200 }\n");
        assert!(parse(&with_feature).is_ok());
    }

    #[test]
    fn a_bad_degraded_status_names_its_own_line() {
        let err = error_of(&one_route(
            "/x",
            "feature = \"x\"\n[routes.degraded]\nbody = \"off\"\nstatus = 99\n",
        ));
        assert_eq!(err.line, Some(11), "{err}");
        assert!(err.message.contains("99 is not an HTTP status"), "{err}");
    }

    #[test]
    fn a_duplicate_route_is_refused_naming_both_lines() {
        let route = |path: &str| {
            format!("\n[[routes]]\nmethod = \"GET\"\npath = \"{path}\"\nservice = \"user\"\n")
        };
        let text = format!(
            "{ONE_SERVICE}{}{}",
            route("/users/{id}"),
            route("/users/{name}")
        );
        let err = error_of(&text);
        assert_eq!(err.line, Some(9), "{err}");
        assert!(err.message.contains("line 4"), "{err}");
        let text = format!(
            "{ONE_SERVICE}{}{}",
            route("/users/{id}"),
            route("/users/me")
        );
        assert!(
            parse(&text).is_ok(),
            "a literal segment is a different route"
        );
    }

    #[test]
    fn fallbacks_must_fit_their_method() {
        let text = format!(
            "{ONE_SERVICE}[[routes]]\nmethod = \"POST\"\npath = \"/x\"\nservice = \"user\"\nfallback = \"cache\"\n"
        );
        assert!(error_of(&text).message.contains("GET answers only"));
        let text = format!(
            "{ONE_SERVICE}[[routes]]\nmethod = \"GET\"\npath = \"/x\"\nservice = \"user\"\nfallback = \"queue\"\n"
        );
        assert!(error_of(&text).message.contains("for writes"));
    }

    #[test]
    fn route_features_join_the_mode_features() {
        let text = format!(
            "{ONE_SERVICE}[modes]\ndegraded = [\"images\"]\n[[routes]]\nmethod = \"GET\"\npath = \"/x\"\nservice = \"user\"\nfeature = \"x-ray\"\n"
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.modes.degraded, ["images"]);
        assert_eq!(config.modes.features, ["x-ray"]);
    }

    #[test]
    fn the_demo_configuration_is_valid_and_answered_in_process() {
        let config = GatewayConfig::demo(&ServiceSpec::named("d"));
        assert_eq!(config.routes.len(), 6);
        assert!(
            config
                .services
                .iter()
                .all(|(_, s)| s.upstream == Upstream::Demo)
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let err = ConfigError {
            file: Some("grace.toml".into()),
            line: Some(7),
            message: "bad".into(),
        };
        assert_eq!(err.to_string(), "grace.toml:7: bad");
    }
}
