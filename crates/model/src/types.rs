//! The resource documents of the API. The same types are produced by the store, served by
//! the API, decoded by the client and printed by the CLI, so the four cannot drift apart.
//!
//! Request documents reject unknown fields: a typo in a field name is an error, never a
//! silently ignored setting. No type here may hold a secret except `NewToken`, which is
//! shown once and never stored.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::rbac::{Role, RoleOn};
use crate::{Invalid, Name, PrincipalName, Scope};

/// Formats a time the way every document on the wire does (RFC 3339, UTC, milliseconds).
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses an RFC 3339 time.
pub fn parse_time(s: &str) -> Result<OffsetDateTime, Invalid> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|_| {
        Invalid::new(format!(
            "invalid time {:?}: use RFC 3339, like 2026-01-31T12:00:00Z",
            crate::name::truncate(s)
        ))
    })
}

pub mod wire_time {
    //! serde adapter for `OffsetDateTime` in the wire format.
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(*t))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_time(&s).map_err(serde::de::Error::custom)
    }
    pub mod option {
        use super::*;
        pub fn serialize<S: Serializer>(
            t: &Option<OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            let s = Option::<String>::deserialize(d)?;
            s.map(|s| crate::types::parse_time(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvKind {
    Production,
    Certification,
    Staging,
    Development,
}

impl EnvKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvKind::Production => "production",
            EnvKind::Certification => "certification",
            EnvKind::Staging => "staging",
            EnvKind::Development => "development",
        }
    }
    pub fn parse(s: &str) -> Result<EnvKind, Invalid> {
        [
            EnvKind::Production,
            EnvKind::Certification,
            EnvKind::Staging,
            EnvKind::Development,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| {
            Invalid::new(format!(
                "unknown environment kind {:?}: use production, certification, staging or development",
                crate::name::truncate(s)
            ))
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tenant {
    pub name: Name,
    #[serde(with = "wire_time")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Environment {
    pub tenant: Name,
    pub name: Name,
    pub kind: EnvKind,
    #[serde(with = "wire_time")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

impl Environment {
    pub fn scope(&self) -> Scope {
        Scope::Environment(self.tenant.clone(), self.name.clone())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Account {
    pub name: PrincipalName,
    pub description: String,
    #[serde(with = "wire_time")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenInfo {
    /// Public identifier of the token (not the secret).
    pub id: String,
    pub account: PrincipalName,
    pub description: String,
    #[serde(with = "wire_time")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    #[serde(with = "wire_time::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "wire_time::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A freshly created token. `token` is the secret; it is shown once and only its hash is kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Grant {
    pub role: Role,
    pub principal: PrincipalName,
    pub scope: Scope,
    #[serde(with = "wire_time")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

/// The outcome recorded in an audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The change was applied (in the same transaction as this event).
    Success,
    /// Authenticated, but no role allows the action.
    Denied,
    /// No valid token.
    Unauthenticated,
    /// Authorized, but refused (conflict, not found, invalid); nothing changed.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Success,
            Outcome::Denied,
            Outcome::Unauthenticated,
            Outcome::Failed,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// One link of the audit chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEvent {
    pub seq: i64,
    #[serde(with = "wire_time")]
    pub time: OffsetDateTime,
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub scope: String,
    pub outcome: Outcome,
    pub request_id: String,
    pub source: String,
    /// Non-secret detail (an error code, a role granted). Never a secret value.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The result of walking the audit chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifyReport {
    pub intact: bool,
    pub events: i64,
    /// Sequence number of the first event that does not verify.
    pub first_bad_seq: Option<i64>,
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    pub tenants: i64,
    pub environments: i64,
    pub accounts: i64,
    pub tokens: i64,
    pub grants: i64,
    pub audit_events: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub version: String,
    pub store: String,
    pub uptime_seconds: u64,
    pub counts: Counts,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Whoami {
    pub principal: PrincipalName,
    pub roles: Vec<RoleOn>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// A list response: `{"items":[...]}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct List<T> {
    pub items: Vec<T>,
}

// ---- requests ----

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: Name,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironment {
    pub name: Name,
    pub kind: EnvKind,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    pub name: PrincipalName,
    #[serde(default)]
    pub description: String,
}

/// Longest allowed token lifetime (one year).
pub const MAX_TOKEN_TTL_SECONDS: u64 = 366 * 24 * 3600;
/// Longest allowed free-text description.
pub const MAX_DESCRIPTION_LEN: usize = 256;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub account: PrincipalName,
    pub ttl_seconds: u64,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrantRole {
    pub role: Role,
    pub principal: PrincipalName,
    pub scope: Scope,
}

/// Filters of `GET /v1/audit/events`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub tenant: Option<Name>,
    pub principal: Option<String>,
    pub action: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub after_seq: Option<i64>,
    pub limit: Option<i64>,
}

/// Checks a free-text description: bounded, printable.
pub fn check_description(s: &str) -> Result<(), Invalid> {
    if s.len() > MAX_DESCRIPTION_LEN || s.chars().any(|c| c.is_control()) {
        return Err(Invalid::new(format!(
            "invalid description: at most {MAX_DESCRIPTION_LEN} bytes, no control characters"
        )));
    }
    Ok(())
}
