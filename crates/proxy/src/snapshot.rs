//! The routing snapshot: an immutable table of routes (host + path → upstream group) that
//! the data plane reads without locks. Endpoints are shared `Arc`s so that their live
//! state (in-flight count, ejection) carries over from one snapshot to the next.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::balance::Balancer;

/// How a route's path matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// `/customers` matches `/customers` and `/customers/...`, not `/customersx`.
    Prefix(String),
    Exact(String),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => {
                p == "/"
                    || path == p
                    || (path.starts_with(p.as_str())
                        && (p.ends_with('/') || path.as_bytes().get(p.len()) == Some(&b'/')))
            }
        }
    }

    /// Exact routes win over prefixes; longer prefixes over shorter ones.
    fn rank(&self) -> (u8, usize) {
        match self {
            PathMatch::Exact(p) => (1, p.len()),
            PathMatch::Prefix(p) => (0, p.len()),
        }
    }
}

/// Headers to set and remove on requests or responses.
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderRules {
    /// Whether a rule removes or sets `name` (any case).
    ///
    /// Inlined down to two length checks for a route without rules (most of them): every
    /// field of every head on the edge's HTTP/1.1 path is checked.
    #[inline]
    pub(crate) fn touches(&self, name: &[u8]) -> bool {
        !(self.remove.is_empty() && self.set.is_empty()) && self.names(name)
    }

    fn names(&self, name: &[u8]) -> bool {
        let is = |n: &HeaderName| n.as_str().as_bytes().eq_ignore_ascii_case(name);
        self.remove.iter().any(is) || self.set.iter().any(|(n, _)| is(n))
    }

    pub(crate) fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// One upstream address and its live state.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `addr` as a URI authority, made once (every forwarded request uses it).
    pub(crate) authority: http::uri::Authority,
    /// Requests in flight, counted per thread (`ShardedGauge`).
    pub(crate) in_flight: crate::metrics::ShardedGauge,
    /// Set by active health checks.
    pub(crate) healthy: AtomicBool,
    /// Being removed: no new requests, in-flight ones finish.
    pub(crate) draining: AtomicBool,
    pub(crate) consecutive_failures: AtomicU32,
    pub(crate) ejections: AtomicU32,
    /// Milliseconds since the proxy's epoch until which the endpoint is ejected.
    pub(crate) ejected_until_ms: AtomicU64,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            addr,
            authority: addr
                .to_string()
                .parse()
                .unwrap_or_else(|_| http::uri::Authority::from_static("invalid")),
            in_flight: Default::default(),
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Marks the endpoint as draining: no new requests are sent to it.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Whether new requests may go here at `now_ms`.
    pub(crate) fn available(&self, now_ms: u64) -> bool {
        self.is_healthy() && !self.is_draining() && !self.is_ejected(now_ms)
    }
}

/// A group of endpoints behind one balancer.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub balancer: Balancer,
    pub(crate) cursor: AtomicUsize,
}

impl Upstream {
    pub fn new(
        name: impl Into<String>,
        endpoints: Vec<Arc<Endpoint>>,
        balancer: Balancer,
    ) -> Arc<Upstream> {
        Arc::new(Upstream {
            name: name.into(),
            endpoints,
            balancer,
            cursor: AtomicUsize::new(0),
        })
    }
}

/// One route.
#[derive(Debug, Clone)]
pub struct Route {
    /// `tenant/env/name`, for logs and metrics.
    pub id: String,
    /// Lowercase host without port; `*` matches any host (internal listener).
    pub host: String,
    pub path: PathMatch,
    /// Remove the matched prefix before forwarding.
    pub strip_prefix: bool,
    pub upstream: Arc<Upstream>,
    pub timeout: Duration,
    /// Largest request body (by `content-length`); larger is refused with 413.
    pub max_body: u64,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    /// Serve this route on plain HTTP too, instead of redirecting to HTTPS.
    pub allow_http: bool,
    /// Speak HTTP/2 over cleartext (prior knowledge) to the upstreams.
    pub h2c: bool,
    /// Counters of the route; the same `Arc` across snapshots keeps them.
    pub stats: Arc<crate::metrics::RouteStats>,
}

/// The immutable routing table of one listener.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_host: HashMap<String, Vec<Route>>,
    any_host: Vec<Route>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> RouteTable {
        let mut by_host: HashMap<String, Vec<Route>> = HashMap::new();
        let mut any_host = Vec::new();
        for r in routes {
            if r.host == "*" {
                any_host.push(r);
            } else {
                by_host
                    .entry(r.host.to_ascii_lowercase())
                    .or_default()
                    .push(r);
            }
        }
        let order = |v: &mut Vec<Route>| v.sort_by_key(|r| std::cmp::Reverse(r.path.rank()));
        by_host.values_mut().for_each(order);
        order(&mut any_host);
        RouteTable { by_host, any_host }
    }

    /// The most specific route for `host` (port ignored, case-insensitive) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        let host = strip_port(host);
        let found = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_host.get(&host.to_ascii_lowercase())
        } else {
            self.by_host.get(host)
        };
        found
            .and_then(|routes| routes.iter().find(|r| r.path.matches(path)))
            .or_else(|| self.any_host.iter().find(|r| r.path.matches(path)))
    }

    /// Every route, in no particular order.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.by_host.values().flatten().chain(self.any_host.iter())
    }

    pub fn len(&self) -> usize {
        self.by_host.values().map(Vec::len).sum::<usize>() + self.any_host.len()
    }

    /// Requests in flight per upstream address over every route (an endpoint that
    /// several routes share counts once).
    pub fn in_flight_by_addr(&self) -> std::collections::HashMap<SocketAddr, usize> {
        let mut seen = std::collections::HashSet::new();
        let mut out = std::collections::HashMap::new();
        for r in self.routes() {
            for ep in &r.upstream.endpoints {
                if seen.insert(Arc::as_ptr(ep)) {
                    *out.entry(ep.addr).or_insert(0) += ep.in_flight();
                }
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `host:port` → `host`; `[::1]:8080` → `::1`.
pub(crate) fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map(|(h, _)| h).unwrap_or(host);
    }
    // One pass back over the port's digits to the last ':' (every request is routed by
    // its host: cheaper than splitting and searching the text twice).
    let b = host.as_bytes();
    let mut i = b.len();
    while i > 0 && b[i - 1].is_ascii_digit() {
        i -= 1;
    }
    match i.checked_sub(1) {
        Some(colon) if b[colon] == b':' && !b[..colon].contains(&b':') => &host[..colon],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: &str, path: PathMatch) -> Route {
        Route {
            id: format!("{host}{path:?}"),
            host: host.into(),
            path,
            strip_prefix: false,
            upstream: Upstream::new("u", vec![], Balancer::RoundRobin),
            timeout: Duration::from_secs(1),
            max_body: 1024,
            request_headers: HeaderRules::default(),
            response_headers: HeaderRules::default(),
            allow_http: false,
            h2c: false,
            stats: Default::default(),
        }
    }

    #[test]
    fn most_specific_route_wins() {
        let t = RouteTable::new(vec![
            route("api.acme.test", PathMatch::Prefix("/".into())),
            route("api.acme.test", PathMatch::Prefix("/customers".into())),
            route(
                "api.acme.test",
                PathMatch::Exact("/customers/health".into()),
            ),
            route("*", PathMatch::Prefix("/internal".into())),
        ]);
        let id = |h: &str, p: &str| t.find(h, p).map(|r| r.id.clone());
        assert_eq!(
            id("api.acme.test", "/customers/1"),
            id("api.acme.test", "/customers")
        );
        assert!(id("api.acme.test", "/customers/1")
            .unwrap()
            .contains("Prefix(\"/customers\")"));
        assert!(id("API.acme.test:8443", "/customers/health")
            .unwrap()
            .contains("Exact"));
        assert!(id("api.acme.test", "/customersx")
            .unwrap()
            .contains("Prefix(\"/\")"));
        assert!(id("other.test", "/internal/x").unwrap().starts_with('*'));
        assert_eq!(id("other.test", "/x"), None);
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        for (host, bare) in [
            ("api.acme.test", "api.acme.test"),
            ("api.acme.test:8443", "api.acme.test"),
            ("api.acme.test:", "api.acme.test"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("1234", "1234"),
            (":80", ""),
            ("", ""),
            ("a:b:80", "a:b:80"),
            ("a.test:8x", "a.test:8x"),
            ("[::1]:8080", "::1"),
            ("[::1]", "::1"),
            ("::1", "::1"),
        ] {
            assert_eq!(strip_port(host), bare, "{host}");
        }
    }
}
