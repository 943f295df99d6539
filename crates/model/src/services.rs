//! The documents of services: a deploy request (artifact, command, environment, secret
//! references, health check, replicas, rollout settings) becomes an immutable revision;
//! a service's desired state names the revision to run and how many replicas.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::types::wire_time;
use crate::{Invalid, Name};

pub const MAX_REPLICAS: u32 = 64;
pub const MAX_ENV: usize = 128;

fn default_port_env() -> String {
    "PORT".into()
}
fn default_health() -> String {
    "/health".into()
}
fn one() -> u32 {
    1
}
fn default_deadline() -> u64 {
    60
}
fn default_grace() -> u64 {
    10
}

/// `POST .../services/{service}/deploy`: what to run. Becomes revision N+1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    /// `NAME@VERSION` of an artifact of the service's tenant.
    pub artifact: String,
    /// The program and its arguments, relative to the unpacked artifact.
    pub command: Vec<String>,
    /// The environment variable that carries the replica's port.
    #[serde(default = "default_port_env")]
    pub port_env: String,
    /// `GET` path that answers 2xx when a replica is ready.
    #[serde(default = "default_health")]
    pub health: String,
    /// Replicas to run (the autoscaler's lower bound).
    #[serde(default = "one")]
    pub replicas: u32,
    /// The autoscaler's upper bound (defaults to `replicas`).
    #[serde(default)]
    pub max_replicas: Option<u32>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment variable -> secret name (in the service's environment), injected at
    /// start; never stored in the revision.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub cpu_millis: Option<u32>,
    /// New replicas started ahead of removing old ones.
    #[serde(default = "one")]
    pub max_surge: u32,
    /// Old replicas that may be removed before their replacements are healthy (capacity
    /// traded for room: with `max_surge` 0, a rollout replaces replicas in place).
    #[serde(default)]
    pub max_unavailable: u32,
    /// How long a new replica has to pass its health check before the rollout is undone.
    #[serde(default = "default_deadline")]
    pub health_deadline_secs: u64,
    /// SIGTERM to SIGKILL, when a replica stops.
    #[serde(default = "default_grace")]
    pub grace_secs: u64,
    /// Routes of the environment that send traffic to this service: checked at deploy,
    /// created when a host is given and the route does not exist yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<DeployRoute>,
    /// What the autoscaler follows between `replicas` and `max_replicas` (default: CPU,
    /// at the installation's target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleSpec>,
}

/// A route a deploy uses: `NAME`, or `NAME=HOST[/PATH]` to create it if missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRoute {
    pub name: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl DeployRoute {
    /// Parses `NAME` or `NAME=HOST[/PATH]`.
    pub fn parse(s: &str) -> Result<DeployRoute, Invalid> {
        let (name, rest) = match s.split_once('=') {
            None => (s, None),
            Some((n, r)) => (n, Some(r)),
        };
        let name = Name::parse(name)?;
        let (host, path) = match rest {
            None => (None, None),
            Some(r) => match r.find('/') {
                Some(i) => (Some(r[..i].to_string()), Some(r[i..].to_string())),
                None => (Some(r.to_string()), None),
            },
        };
        if host.as_deref() == Some("") {
            return Err(Invalid::new(format!(
                "invalid route {:?}: use NAME or NAME=HOST[/PATH]",
                crate::name::truncate(s)
            )));
        }
        Ok(DeployRoute { name, host, path })
    }
}

/// The metric the autoscaler follows, and its target per replica.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleSpec {
    pub metric: AutoscaleMetric,
    /// Cores per replica (`cpu`) or requests in flight per replica (`in_flight`).
    pub target: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoscaleMetric {
    /// CPU time of the replicas' processes.
    Cpu,
    /// Requests the edge has in flight to the replicas.
    InFlight,
}

impl AutoscaleSpec {
    /// Parses `cpu=0.6` or `in-flight=20`.
    pub fn parse(s: &str) -> Result<AutoscaleSpec, Invalid> {
        let bad = || {
            Invalid::new(format!(
                "invalid autoscale {:?}: use cpu=CORES (e.g. cpu=0.6) or in-flight=REQUESTS (e.g. in-flight=20)",
                crate::name::truncate(s)
            ))
        };
        let (m, t) = s.split_once('=').ok_or_else(bad)?;
        let metric = match m {
            "cpu" => AutoscaleMetric::Cpu,
            "in-flight" | "in_flight" => AutoscaleMetric::InFlight,
            _ => return Err(bad()),
        };
        let spec = AutoscaleSpec {
            metric,
            target: t.parse().map_err(|_| bad())?,
        };
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        let ok = match self.metric {
            AutoscaleMetric::Cpu => self.target > 0.0 && self.target <= 64.0,
            AutoscaleMetric::InFlight => self.target >= 0.1 && self.target <= 100_000.0,
        };
        if ok {
            Ok(())
        } else {
            Err(Invalid::new(
                "the autoscale target must be 0-64 cores (cpu) or 0.1-100000 requests (in-flight)",
            ))
        }
    }
}

impl DeploySpec {
    pub fn validate(&self) -> Result<(), Invalid> {
        let (name, version) = self.artifact.split_once('@').ok_or_else(|| {
            Invalid::new(format!(
                "invalid artifact {:?}: use NAME@VERSION",
                crate::name::truncate(&self.artifact)
            ))
        })?;
        Name::parse(name)?;
        crate::artifacts::check_version(version)?;
        if self.command.is_empty() || self.command[0].trim().is_empty() {
            return Err(Invalid::new("the command is empty"));
        }
        if self.command.iter().any(|a| a.contains('\0')) || self.command.len() > 256 {
            return Err(Invalid::new("invalid command"));
        }
        if !self.health.starts_with('/') || self.health.len() > 256 {
            return Err(Invalid::new("the health path must start with /"));
        }
        let var = |v: &str| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !v.as_bytes()[0].is_ascii_digit()
        };
        if !var(&self.port_env) {
            return Err(Invalid::new("invalid port_env: a variable name like PORT"));
        }
        if self.env.len() + self.secrets.len() > MAX_ENV {
            return Err(Invalid::new(format!("at most {MAX_ENV} variables")));
        }
        for (k, v) in &self.env {
            if !var(k) || v.contains('\0') || v.len() > 4096 {
                return Err(Invalid::new(format!(
                    "invalid variable {:?}",
                    crate::name::truncate(k)
                )));
            }
        }
        for (k, s) in &self.secrets {
            if !var(k) {
                return Err(Invalid::new(format!(
                    "invalid variable {:?}",
                    crate::name::truncate(k)
                )));
            }
            Name::parse(s)?;
            if self.env.contains_key(k) {
                return Err(Invalid::new(format!("{k} is both a variable and a secret")));
            }
        }
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            return Err(Invalid::new(format!("replicas must be 1..{MAX_REPLICAS}")));
        }
        if self
            .max_replicas
            .is_some_and(|m| m < self.replicas || m > MAX_REPLICAS)
        {
            return Err(Invalid::new("max_replicas must be between replicas and 64"));
        }
        if self.max_surge > MAX_REPLICAS || self.max_unavailable > MAX_REPLICAS {
            return Err(Invalid::new("max_surge and max_unavailable must be 0..64"));
        }
        if self.max_surge == 0 && self.max_unavailable == 0 {
            return Err(Invalid::new(
                "max_surge and max_unavailable cannot both be 0: a rollout could never make progress",
            ));
        }
        if !(1..=3600).contains(&self.health_deadline_secs) || self.grace_secs > 600 {
            return Err(Invalid::new(
                "health_deadline_secs must be 1..3600 and grace_secs at most 600",
            ));
        }
        if self.routes.len() > 16 {
            return Err(Invalid::new("at most 16 routes"));
        }
        for (i, r) in self.routes.iter().enumerate() {
            if self.routes[..i].iter().any(|o| o.name == r.name) {
                return Err(Invalid::new(format!("route {} is given twice", r.name)));
            }
            if r.host.is_none() && r.path.is_some() {
                return Err(Invalid::new(format!(
                    "route {}: a path needs a host (NAME=HOST/PATH)",
                    r.name
                )));
            }
        }
        if let Some(a) = &self.autoscale {
            a.validate()?;
        }
        Ok(())
    }
}

/// Where a revision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevisionStatus {
    /// Being rolled out.
    Rolling,
    /// Running (the service's stable revision).
    Active,
    /// Replaced by a newer revision.
    Superseded,
    /// Never became healthy: rolled back.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionInfo {
    /// `TENANT/ENV/SERVICE`
    pub service: String,
    pub number: u64,
    pub spec: DeploySpec,
    pub status: RevisionStatus,
    pub message: Option<String>,
    #[serde(with = "wire_time")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

/// Whether a service should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Running,
    Stopped,
}

/// A replica as `service status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceReplica {
    pub id: String,
    pub revision: u64,
    /// `starting`, `running`, `backoff`, `stopping`, `stopped`, `failed`.
    pub state: String,
    pub healthy: bool,
    pub port: Option<u16>,
    /// The process (group leader) while one runs.
    pub pid: Option<u32>,
    pub restarts: u32,
    /// What isolates it: `none`, `users` (its tenant's own uid) or `bubblewrap` (that
    /// uid in a sandbox). Absent from control planes that do not run replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// The uid it runs as, when it has one of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// `TENANT/ENV/SERVICE`
    pub name: String,
    pub state: ServiceState,
    pub desired_replicas: u32,
    /// The revision the service converges to.
    pub target_revision: u64,
    /// The last revision that ran healthy (what a failed rollout returns to).
    pub stable_revision: Option<u64>,
    pub message: Option<String>,
    /// Running replicas (from the runtime; empty when asked of a control plane that does
    /// not run them).
    #[serde(default)]
    pub replicas: Vec<ServiceReplica>,
    #[serde(with = "wire_time")]
    pub updated_at: OffsetDateTime,
    /// The last changes of the service, newest first (in `status` only): deploys,
    /// rollbacks, scaling and autoscaling, failed rollouts, from the audit trail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<ServiceEvent>,
}

/// One change of a service, as its audit event records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEvent {
    #[serde(with = "wire_time")]
    pub time: OffsetDateTime,
    pub action: String,
    pub principal: String,
    pub outcome: String,
    pub detail: String,
}

/// `POST .../services/{service}/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The revision to return to; default: the stable one before the current target.
    #[serde(default)]
    pub to: Option<u64>,
}

/// `POST .../services/{service}/scale`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    pub replicas: u32,
}

#[cfg(test)]
mod deploy_option_tests {
    use super::*;

    #[test]
    fn deploy_routes_parse() {
        let r = DeployRoute::parse("customers").unwrap();
        assert_eq!((r.name.as_str(), r.host, r.path), ("customers", None, None));
        let r = DeployRoute::parse("customers=api.acme.test/customers").unwrap();
        assert_eq!(r.host.as_deref(), Some("api.acme.test"));
        assert_eq!(r.path.as_deref(), Some("/customers"));
        let r = DeployRoute::parse("c=api.acme.test").unwrap();
        assert_eq!((r.host.as_deref(), r.path), (Some("api.acme.test"), None));
        for bad in ["", "Bad", "c=", "c=/x", "x y=h"] {
            assert!(DeployRoute::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn autoscale_specs_parse() {
        let a = AutoscaleSpec::parse("in-flight=20").unwrap();
        assert_eq!((a.metric, a.target), (AutoscaleMetric::InFlight, 20.0));
        let a = AutoscaleSpec::parse("cpu=0.6").unwrap();
        assert_eq!(a.metric, AutoscaleMetric::Cpu);
        for bad in [
            "cpu",
            "cpu=0",
            "cpu=65",
            "memory=1",
            "in-flight=x",
            "in-flight=0",
        ] {
            assert!(AutoscaleSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
