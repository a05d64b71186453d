//! Which route a request takes: its method and path against the configured
//! patterns.
//!
//! A pattern is a path whose segments are literal or `{name}`, which
//! matches exactly one non-empty segment; a path without braces matches
//! exactly (no prefix matching, no trailing-slash folding). When several
//! routes match, the one with more literal segments wins (`/users/me`
//! before `/users/{id}`), then the one declared first. The query string
//! never takes part: it is forwarded as it is.

use http::Method;
use http::uri::PathAndQuery;
use std::fmt;

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
}

/// Why a pattern is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError(String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PathPattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PatternError("a path starts with /".into()));
        };
        if text.contains(['?', '#']) {
            return Err(PatternError(
                "a path pattern has no query or fragment".into(),
            ));
        }
        let mut segments = Vec::new();
        if !rest.is_empty() {
            for segment in rest.split('/') {
                let parsed = match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) if !name.is_empty() && !name.contains(['{', '}']) => {
                        if segments.contains(&Segment::Param(name.to_string())) {
                            return Err(PatternError(format!(
                                "parameter {{{name}}} appears twice; each needs its own name"
                            )));
                        }
                        Segment::Param(name.to_string())
                    }
                    Some("") => {
                        return Err(PatternError("a parameter needs a name, like {id}".into()));
                    }
                    Some(_) => return Err(PatternError(format!("bad parameter {segment:?}"))),
                    None if segment.contains(['{', '}']) => {
                        return Err(PatternError(format!(
                            "{segment:?}: a parameter is a whole segment in braces, like {{id}}"
                        )));
                    }
                    None => {
                        if let Some(never) = segment.chars().find(|&c| !can_appear_in_a_path(c)) {
                            return Err(PatternError(format!(
                                "{never:?} never appears as it is in a request's path, so this \
                                 route could never match; write it percent-encoded ({})",
                                percent_encoded(never)
                            )));
                        }
                        Segment::Literal(segment.to_string())
                    }
                };
                segments.push(parsed);
            }
        }
        Ok(PathPattern {
            text: text.to_string(),
            segments,
        })
    }

    /// The pattern with parameter names erased: two patterns with the same
    /// shape match the same paths.
    pub fn shape(&self) -> String {
        let mut shape = String::new();
        for segment in &self.segments {
            shape.push('/');
            match segment {
                Segment::Literal(literal) => shape.push_str(literal),
                Segment::Param(_) => shape.push_str("{}"),
            }
        }
        if shape.is_empty() {
            shape.push('/');
        }
        shape
    }

    fn literal_segments(&self) -> usize {
        self.segments
            .iter()
            .filter(|segment| matches!(segment, Segment::Literal(_)))
            .count()
    }

    /// Whether `path` (without its query) matches.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        if rest.is_empty() {
            return self.segments.is_empty();
        }
        let mut parts = rest.split('/');
        for segment in &self.segments {
            let Some(part) = parts.next() else {
                return false;
            };
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Param(_) if !part.is_empty() => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

/// Whether `c` can arrive unencoded in a request's path, as the server reads
/// request targets (with the `http` crate's own parser): a literal segment
/// holding any other character (a space, `<`, a control character) could
/// never equal a segment of a request, so its route would never be taken.
fn can_appear_in_a_path(c: char) -> bool {
    format!("/{c}").parse::<PathAndQuery>().is_ok()
}

/// `c` as a request carries it: `%` and two hex digits per UTF-8 byte.
fn percent_encoded(c: char) -> String {
    let mut utf8 = [0; 4];
    c.encode_utf8(&mut utf8)
        .bytes()
        .map(|byte| format!("%{byte:02X}"))
        .collect()
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The routes, ordered for matching.
#[derive(Debug, Clone)]
pub struct Router {
    /// (method, pattern, index in the configuration), most specific first.
    routes: Vec<(Method, PathPattern, usize)>,
}

impl Router {
    /// A router over `routes` (method and pattern), in declaration order.
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a Method, &'a PathPattern)>) -> Self {
        let mut routes: Vec<(Method, PathPattern, usize)> = routes
            .into_iter()
            .enumerate()
            .map(|(index, (method, pattern))| (method.clone(), pattern.clone(), index))
            .collect();
        // Stable: declaration order breaks ties.
        routes.sort_by_key(|(_, pattern, _)| std::cmp::Reverse(pattern.literal_segments()));
        Router { routes }
    }

    /// The configured index of the route `method` and `path` take.
    pub fn route(&self, method: &Method, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .find(|(route_method, pattern, _)| route_method == method && pattern.matches(path))
            .map(|&(_, _, index)| index)
    }

    /// The methods some route takes `path` with, in declaration order
    /// (none: a 404; some, not the one asked: a 405 with `Allow`).
    pub fn methods_for(&self, path: &str) -> Vec<Method> {
        let mut matching: Vec<(usize, &Method)> = self
            .routes
            .iter()
            .filter(|(_, pattern, _)| pattern.matches(path))
            .map(|(method, _, index)| (*index, method))
            .collect();
        matching.sort_by_key(|(index, _)| *index);
        let mut methods: Vec<Method> = Vec::new();
        for (_, method) in matching {
            if !methods.contains(method) {
                methods.push(method.clone());
            }
        }
        methods
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> PathPattern {
        PathPattern::parse(text).unwrap()
    }

    #[test]
    fn params_match_exactly_one_non_empty_segment() {
        let users = pattern("/users/{id}");
        assert!(users.matches("/users/123"));
        assert!(!users.matches("/users/"));
        assert!(!users.matches("/users"));
        assert!(!users.matches("/users/1/reviews"));
        assert!(pattern("/products/{id}/reviews").matches("/products/9/reviews"));
    }

    #[test]
    fn a_path_without_braces_matches_exactly() {
        let search = pattern("/search");
        assert!(search.matches("/search"));
        assert!(!search.matches("/search/"));
        assert!(!search.matches("/searching"));
        assert!(pattern("/").matches("/"));
        assert!(!pattern("/").matches("/x"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in [
            "users",
            "",
            "/users/{",
            "/users/}",
            "/users/{}",
            "/users/x{id}",
            "/users/{id}x",
            "/users/{{id}}",
            "/a?b",
            "/a#b",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_character_no_request_path_holds_is_refused_with_its_encoding() {
        for (bad, encoded) in [("/a b", "%20"), ("/a<b", "%3C"), ("/a\tb", "%09")] {
            let err = PathPattern::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(encoded), "{bad}: {err}");
        }
        let encoded = pattern("/a%20b");
        assert!(
            encoded.matches("/a%20b"),
            "the encoded form is the one requests carry"
        );
        assert!(
            pattern("/caf\u{e9}").matches("/caf\u{e9}"),
            "UTF-8 arrives as it is"
        );
    }

    #[test]
    fn a_parameter_named_twice_is_refused() {
        let err = PathPattern::parse("/a/{id}/{id}").unwrap_err().to_string();
        assert!(err.contains("{id} appears twice"), "{err}");
        assert!(PathPattern::parse("/a/{id}/{other}").is_ok());
    }

    #[test]
    fn empty_and_trailing_segments_are_literal_and_match_as_written() {
        assert!(pattern("/a//b").matches("/a//b"));
        assert!(pattern("/a/").matches("/a/"));
        assert!(!pattern("/a/").matches("/a"));
    }

    #[test]
    fn the_most_literal_route_wins_then_the_first_declared() {
        let get = Method::GET;
        let patterns = [
            pattern("/users/{id}"),
            pattern("/users/me"),
            pattern("/{any}/me"),
        ];
        let router = Router::new(patterns.iter().map(|p| (&get, p)));
        assert_eq!(router.route(&get, "/users/me"), Some(1));
        assert_eq!(router.route(&get, "/users/7"), Some(0));
        assert_eq!(router.route(&get, "/teams/me"), Some(2));
        assert_eq!(router.route(&Method::POST, "/users/7"), None);
        assert_eq!(router.methods_for("/users/7"), [Method::GET]);
        assert!(router.methods_for("/nothing").is_empty());
    }

    #[test]
    fn shapes_ignore_parameter_names() {
        assert_eq!(
            pattern("/users/{id}").shape(),
            pattern("/users/{name}").shape()
        );
        assert_ne!(pattern("/users/{id}").shape(), pattern("/users/me").shape());
    }
}
