//! The documents of the edge's routes: where a host and path go (static upstreams now,
//! services when the runtime lands), on which listener, with which limits and header rules.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::types::wire_time;
use crate::{Invalid, Name};

/// Defaults and bounds of a route.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const MAX_TIMEOUT_MS: u64 = 600_000;
pub const DEFAULT_MAX_BODY: u64 = 10 * 1024 * 1024;
pub const MAX_MAX_BODY: u64 = 1024 * 1024 * 1024;
pub const MAX_UPSTREAMS: usize = 64;
pub const MAX_HEADER_RULES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Listener {
    #[default]
    Public,
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    #[default]
    Prefix,
    Exact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BalancerKind {
    RoundRobin,
    #[default]
    LeastOutstanding,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRuleSpec {
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// What a route sends traffic to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Target {
    /// Static upstream addresses (`10.0.0.5:8080`).
    Upstream(Vec<String>),
    /// The replicas of a service of the same environment.
    Service(Name),
}

/// The desired state of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub host: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default)]
    pub path_kind: PathKind,
    #[serde(default)]
    pub strip_prefix: bool,
    pub to: Target,
    #[serde(default)]
    pub listener: Listener,
    #[serde(default)]
    pub balancer: BalancerKind,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_body: Option<u64>,
    #[serde(default)]
    pub request_headers: HeaderRuleSpec,
    #[serde(default)]
    pub response_headers: HeaderRuleSpec,
    /// Active health checks of the upstreams; none: endpoints count as healthy.
    #[serde(default)]
    pub health: Option<HealthCheckSpec>,
    /// Serve this route on the plain-HTTP listener too. By default a public route is
    /// redirected from HTTP to HTTPS when the HTTPS listener is on.
    #[serde(default)]
    pub allow_http: bool,
    /// How the edge speaks to the upstreams.
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
}

/// The protocol between the edge and a route's upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with pooled keep-alive connections (and WebSocket upgrades).
    #[default]
    Http1,
    /// HTTP/2 over cleartext TCP (prior knowledge), multiplexed.
    H2c,
}

/// An active health check: `GET path` on every endpoint every `interval_ms`; a 2xx within
/// `timeout_ms` is a success. `unhealthy_threshold` failures in a row take an endpoint out,
/// `healthy_threshold` successes in a row bring it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    pub path: String,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    #[serde(default = "default_check_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_healthy")]
    pub healthy_threshold: u32,
    #[serde(default = "default_unhealthy")]
    pub unhealthy_threshold: u32,
}

fn default_interval() -> u64 {
    5_000
}
fn default_check_timeout() -> u64 {
    1_000
}
fn default_healthy() -> u32 {
    2
}
fn default_unhealthy() -> u32 {
    3
}

fn default_path() -> String {
    "/".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoute {
    pub name: Name,
    #[serde(flatten)]
    pub spec: RouteSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// `TENANT/ENV/NAME`
    pub name: String,
    #[serde(flatten)]
    pub spec: RouteSpec,
    #[serde(with = "wire_time")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

fn bad(m: String) -> Invalid {
    Invalid::new(m)
}

/// A valid host: lowercase DNS name (labels of `a-z0-9-`), no port, no wildcard.
pub fn check_host(h: &str) -> Result<(), Invalid> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "invalid host {:?}: a lowercase DNS name without port or wildcard",
            crate::name::truncate(h)
        )))
    }
}

impl RouteSpec {
    /// A public route of `host` and path prefix `path` to the replicas of `service`, with
    /// every other setting at its default.
    pub fn to_service(host: &str, path: &str, service: Name) -> RouteSpec {
        RouteSpec {
            host: host.to_string(),
            path: path.to_string(),
            path_kind: PathKind::default(),
            strip_prefix: false,
            to: Target::Service(service),
            listener: Listener::default(),
            balancer: BalancerKind::default(),
            timeout_ms: None,
            max_body: None,
            request_headers: HeaderRuleSpec::default(),
            response_headers: HeaderRuleSpec::default(),
            health: None,
            allow_http: false,
            upstream_protocol: UpstreamProtocol::default(),
        }
    }

    /// Checks every field; the first problem is the error.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_host(&self.host)?;
        let p = &self.path;
        if !p.starts_with('/')
            || p.len() > 1024
            || p.contains("..")
            || p.bytes()
                .any(|b| b.is_ascii_control() || b == b'?' || b == b'#' || b == b' ')
        {
            return Err(bad(format!(
                "invalid path {:?}: an absolute path without query",
                crate::name::truncate(p)
            )));
        }
        if self.strip_prefix && self.path_kind == PathKind::Exact {
            return Err(bad("strip_prefix needs a prefix path".into()));
        }
        if let Target::Upstream(addrs) = &self.to {
            if addrs.is_empty() || addrs.len() > MAX_UPSTREAMS {
                return Err(bad(format!("give 1 to {MAX_UPSTREAMS} upstream addresses")));
            }
            for a in addrs {
                a.parse::<std::net::SocketAddr>().map_err(|_| {
                    bad(format!(
                        "invalid upstream {:?}: use IP:PORT",
                        crate::name::truncate(a)
                    ))
                })?;
            }
        }
        if let Some(t) = self.timeout_ms {
            if t == 0 || t > MAX_TIMEOUT_MS {
                return Err(bad(format!(
                    "timeout_ms must be between 1 and {MAX_TIMEOUT_MS}"
                )));
            }
        }
        if let Some(m) = self.max_body {
            if m > MAX_MAX_BODY {
                return Err(bad(format!("max_body must be at most {MAX_MAX_BODY}")));
            }
        }
        if let Some(h) = &self.health {
            if !h.path.starts_with('/')
                || h.path.len() > 1024
                || h.path.bytes().any(|b| b.is_ascii_control() || b == b' ')
            {
                return Err(bad(format!(
                    "invalid health check path {:?}",
                    crate::name::truncate(&h.path)
                )));
            }
            if !(100..=300_000).contains(&h.interval_ms)
                || h.timeout_ms == 0
                || h.timeout_ms > h.interval_ms
            {
                return Err(bad(
                    "health check: interval_ms 100-300000 and 0 < timeout_ms <= interval_ms".into(),
                ));
            }
            if !(1..=10).contains(&h.healthy_threshold)
                || !(1..=10).contains(&h.unhealthy_threshold)
            {
                return Err(bad(
                    "health check thresholds must be between 1 and 10".into()
                ));
            }
        }
        for rules in [&self.request_headers, &self.response_headers] {
            if rules.set.len() + rules.remove.len() > MAX_HEADER_RULES {
                return Err(bad(format!("at most {MAX_HEADER_RULES} header rules")));
            }
            for name in rules.set.keys().chain(rules.remove.iter()) {
                let ok = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !ok {
                    return Err(bad(format!(
                        "invalid header name {:?}",
                        crate::name::truncate(name)
                    )));
                }
            }
            for v in rules.set.values() {
                if v.bytes().any(|b| b.is_ascii_control()) || v.len() > 4096 {
                    return Err(bad("invalid header value".into()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(host: &str, path: &str) -> RouteSpec {
        RouteSpec {
            host: host.into(),
            path: path.into(),
            path_kind: PathKind::Prefix,
            strip_prefix: false,
            to: Target::Upstream(vec!["127.0.0.1:9000".into()]),
            listener: Listener::Public,
            balancer: BalancerKind::LeastOutstanding,
            timeout_ms: None,
            max_body: None,
            request_headers: Default::default(),
            response_headers: Default::default(),
            health: None,
            allow_http: false,
            upstream_protocol: UpstreamProtocol::Http1,
        }
    }

    #[test]
    fn validation() {
        assert!(spec("api.acme.test", "/customers").validate().is_ok());
        for (h, p) in [
            ("*.acme.test", "/"),
            ("API.acme.test", "/"),
            ("a.test:80", "/"),
            ("a.test", "x"),
            ("a.test", "/a?b"),
            ("a.test", "/../etc"),
        ] {
            assert!(spec(h, p).validate().is_err(), "{h} {p}");
        }
        let mut s = spec("a.test", "/");
        s.to = Target::Upstream(vec!["nowhere".into()]);
        assert!(s.validate().is_err());
        let mut s = spec("a.test", "/");
        s.request_headers
            .set
            .insert("bad header".into(), "v".into());
        assert!(s.validate().is_err());
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;

    #[test]
    fn create_route_refuses_unknown_fields() {
        let ok: CreateRoute = serde_json::from_str(
            r#"{"name":"api","host":"a.test","to":{"upstream":["127.0.0.1:1"]}}"#,
        )
        .unwrap();
        assert_eq!(ok.spec.path, "/");
        let bad = serde_json::from_str::<CreateRoute>(
            r#"{"name":"api","host":"a.test","to":{"upstream":["127.0.0.1:1"]},"surprise":1}"#,
        );
        assert!(bad.is_err(), "unknown field accepted");
        let bad = serde_json::from_str::<CreateRoute>(
            r#"{"name":"api","host":"a.test","to":{"service":"x","upstream":[]}}"#,
        );
        assert!(bad.is_err());
    }
}
