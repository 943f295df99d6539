//! The documents of the edge's TLS certificates and of service replicas: what a user adds
//! or asks to have issued, and what the API shows back (never a private key).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::types::wire_time;
use crate::{Invalid, Name};

/// Most DNS names one certificate may cover.
pub const MAX_DOMAINS: usize = 100;
/// Largest PEM accepted for a chain or a key.
pub const MAX_PEM: usize = 64 * 1024;
/// Certificates issued by the internal CA or ACME are renewed this long before expiry.
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// Where a certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertSource {
    /// Added by a user (`cert add`); never renewed by Gantry.
    Uploaded,
    /// Issued by the installation's internal CA; renewed automatically.
    Internal,
    /// Issued through ACME; renewed automatically.
    Acme,
}

/// Whether a certificate is being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertStatus {
    /// Asked for, not issued yet.
    Pending,
    /// Served by the edge.
    Active,
    /// Issuance or the last renewal failed; `status_message` says why. An active
    /// certificate whose renewal failed stays served until it expires.
    Failed,
}

/// The ACME challenge that proves control of the domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Challenge {
    /// A token served by the edge's HTTP listener on `/.well-known/acme-challenge/`.
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// A TXT record set through the configured DNS provider (needed for wildcards).
    #[serde(rename = "dns-01")]
    Dns01,
}

/// Who issues a certificate asked for with `cert issue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Issuer {
    #[default]
    Internal,
    Acme,
}

/// `POST .../certificates`: a certificate and its key, PEM. The key is encrypted at rest
/// under the certificate's own key in the environment's key hierarchy.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddCert {
    pub name: Name,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for AddCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddCert")
            .field("name", &self.name)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// `POST .../certificates/issue`: have a certificate issued for `domains`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssueCert {
    pub name: Name,
    pub domains: Vec<String>,
    #[serde(default)]
    pub issuer: Issuer,
    #[serde(default)]
    pub challenge: Challenge,
}

impl IssueCert {
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_domains(&self.domains)?;
        if self.issuer == Issuer::Acme
            && self.challenge == Challenge::Http01
            && self.domains.iter().any(|d| d.starts_with("*."))
        {
            return Err(Invalid::new(
                "a wildcard certificate needs the dns-01 challenge",
            ));
        }
        Ok(())
    }
}

/// A certificate as the API shows it (public parts and state only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertInfo {
    /// `TENANT/ENV/NAME`
    pub name: String,
    pub domains: Vec<String>,
    pub source: CertSource,
    pub status: CertStatus,
    pub status_message: Option<String>,
    #[serde(with = "wire_time::option")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(with = "wire_time::option")]
    pub not_after: Option<OffsetDateTime>,
    /// SHA-256 of the leaf certificate (DER), hex.
    pub fingerprint: Option<String>,
    /// When Gantry renews it (internal and ACME certificates).
    #[serde(with = "wire_time::option")]
    pub renew_at: Option<OffsetDateTime>,
    pub challenge: Option<Challenge>,
    /// Advice that does not block, e.g. that a wildcard covers more than it should.
    pub warnings: Vec<String>,
    #[serde(with = "wire_time")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    #[serde(with = "wire_time")]
    pub updated_at: OffsetDateTime,
}

/// The warning given for wildcard names.
pub fn wildcard_warnings(domains: &[String]) -> Vec<String> {
    domains
        .iter()
        .filter(|d| d.starts_with("*."))
        .map(|d| {
            format!(
                "{d} is a wildcard: it is valid for every host under it; prefer one certificate per host"
            )
        })
        .collect()
}

/// Checks a list of DNS names (optionally `*.` wildcards one label deep).
pub fn validate_domains(domains: &[String]) -> Result<(), Invalid> {
    if domains.is_empty() {
        return Err(Invalid::new("give at least one domain"));
    }
    if domains.len() > MAX_DOMAINS {
        return Err(Invalid::new(format!(
            "at most {MAX_DOMAINS} domains per certificate"
        )));
    }
    for d in domains {
        let host = d.strip_prefix("*.").unwrap_or(d);
        crate::routes::check_host(host).map_err(|_| {
            Invalid::new(format!(
                "invalid domain {:?}: use a DNS name such as api.acme.test or *.acme.test",
                crate::name::truncate(d)
            ))
        })?;
        if host.contains('*') || !host.contains('.') {
            return Err(Invalid::new(format!(
                "invalid domain {:?}: use a DNS name such as api.acme.test or *.acme.test",
                crate::name::truncate(d)
            )));
        }
    }
    Ok(())
}

/// Whether a replica takes new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaState {
    /// Receives new requests.
    #[default]
    Active,
    /// Receives no new requests; in-flight ones finish. Removing it drains it too.
    Draining,
}

/// `POST .../services/{service}/replicas`: register a replica's address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterReplica {
    /// `IP:PORT`
    pub address: String,
    #[serde(default)]
    pub state: ReplicaState,
}

/// `PUT .../replicas/{address}`: change a replica's state.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateReplica {
    pub state: ReplicaState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// `TENANT/ENV/SERVICE`
    pub service: String,
    pub address: String,
    pub state: ReplicaState,
    #[serde(with = "wire_time")]
    pub registered_at: OffsetDateTime,
    pub registered_by: String,
}

/// Checks a replica address: an IP and a port.
pub fn validate_replica_address(a: &str) -> Result<std::net::SocketAddr, Invalid> {
    a.parse::<std::net::SocketAddr>()
        .ok()
        .filter(|s| s.port() != 0)
        .ok_or_else(|| {
            Invalid::new(format!(
                "invalid replica address {:?}: use IP:PORT",
                crate::name::truncate(a)
            ))
        })
}

/// The generations of the edge's desired state, the HTTPS policy and the pending ACME
/// HTTP-01 answers: what an edge polls (`GET /v1/edge/generations`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeGenerations {
    pub routes: i64,
    pub certificates: i64,
    /// ACME HTTP-01 token -> key authorization, for orders in progress.
    pub acme_http01: std::collections::BTreeMap<String, String>,
    /// The HTTPS listeners' TLS policy, when one was set (else each edge's flag).
    #[serde(default)]
    pub https_policy: Option<HttpsPolicy>,
}

/// Named TLS policies of the HTTPS listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpsPolicy {
    /// TLS 1.3 only.
    Modern,
    /// TLS 1.2 and 1.3, ECDHE with AEAD suites only.
    Compatible,
}

impl HttpsPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpsPolicy::Modern => "modern",
            HttpsPolicy::Compatible => "compatible",
        }
    }

    pub fn parse(s: &str) -> Result<HttpsPolicy, Invalid> {
        match s {
            "modern" => Ok(HttpsPolicy::Modern),
            "compatible" => Ok(HttpsPolicy::Compatible),
            _ => Err(Invalid::new(format!(
                "unknown TLS policy {:?}: use modern or compatible",
                crate::name::truncate(s)
            ))),
        }
    }
}

/// `GET`/`PUT /v1/edge/settings`: settings every edge follows, changed without a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSettings {
    /// `None`: each edge uses its `--https-policy` flag.
    #[serde(default)]
    pub https_policy: Option<HttpsPolicy>,
}

/// Everything an edge serves (`GET /v1/edge/snapshot`): routes, replicas and certificates
/// with their private keys. Only for edges (it carries keys); never logged.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeSnapshot {
    pub generations: EdgeGenerations,
    pub routes: Vec<crate::routes::RouteInfo>,
    pub replicas: Vec<ReplicaInfo>,
    /// `None` while the control plane is sealed (keys cannot be decrypted).
    pub certificates: Option<Vec<EdgeCert>>,
}

impl std::fmt::Debug for EdgeSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeSnapshot")
            .field("generations", &self.generations)
            .field("routes", &self.routes.len())
            .field("replicas", &self.replicas.len())
            .field("certificates", &self.certificates.as_ref().map(Vec::len))
            .finish()
    }
}

/// A certificate as an edge receives it: chain and private key (PEM).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeCert {
    /// `TENANT/ENV/NAME`
    pub name: String,
    pub domains: Vec<String>,
    pub chain_pem: String,
    pub key_pem: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

impl std::fmt::Debug for EdgeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeCert")
            .field("name", &self.name)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        let ok =
            |d: &[&str]| validate_domains(&d.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(ok(&["api.acme.test"]).is_ok());
        assert!(ok(&["*.acme.test", "acme.test"]).is_ok());
        for bad in [
            &[][..],
            &["*"],
            &["a.*.test"],
            &["localhost"],
            &["api acme"],
            &["*.*.x.test"],
        ] {
            assert!(ok(bad).is_err(), "{bad:?}");
        }
        let wild = IssueCert {
            name: Name::parse("w").unwrap(),
            domains: vec!["*.acme.test".into()],
            issuer: Issuer::Acme,
            challenge: Challenge::Http01,
        };
        assert!(wild.validate().unwrap_err().message.contains("dns-01"));
        assert_eq!(wildcard_warnings(&wild.domains).len(), 1);
    }

    #[test]
    fn replica_addresses() {
        assert!(validate_replica_address("10.0.0.5:8080").is_ok());
        assert!(validate_replica_address("[::1]:80").is_ok());
        for bad in ["10.0.0.5", "host:80", "10.0.0.5:0", ""] {
            assert!(validate_replica_address(bad).is_err(), "{bad}");
        }
    }
}
