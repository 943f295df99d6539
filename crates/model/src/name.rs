//! Validated names: DNS-label names of tenants, environments and accounts, the scopes roles
//! are granted on (`platform`, `acme`, `acme/staging`) and principal names (`admin`,
//! `acme/ci-bot`).
//!
//! A value of these types is valid by construction: parse at the edge, pass typed values
//! inward. Never build one from an unchecked string without `parse`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Invalid;

/// A lowercase DNS label (RFC 1123): 1-63 chars of `a-z`, `0-9` and `-`, starting and
/// ending with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

/// Names that cannot be used for tenants because they mean something in a scope string.
pub const RESERVED_TENANT_NAMES: &[&str] = &["platform"];

impl Name {
    pub fn parse(s: &str) -> Result<Name, Invalid> {
        let ok_len = !s.is_empty() && s.len() <= 63;
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let ok_ends = !s.starts_with('-') && !s.ends_with('-');
        if ok_len && ok_chars && ok_ends {
            Ok(Name(s.to_string()))
        } else {
            Err(Invalid::new(format!(
                "invalid name {:?}: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit",
                truncate(s)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Shortens untrusted input before it is echoed in an error message.
pub fn truncate(s: &str) -> String {
    if s.chars().count() > 80 {
        let mut t: String = s.chars().take(80).collect();
        t.push('…');
        t
    } else {
        s.to_string()
    }
}

/// Where a role is granted and where a resource lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Platform,
    Tenant(Name),
    Environment(Name, Name),
}

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, Invalid> {
        if s == "platform" {
            return Ok(Scope::Platform);
        }
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [t] => Ok(Scope::Tenant(Name::parse(t)?)),
            [t, e] => Ok(Scope::Environment(Name::parse(t)?, Name::parse(e)?)),
            _ => Err(Invalid::new(format!(
                "invalid scope {:?}: use `platform`, `TENANT` or `TENANT/ENV`",
                truncate(s)
            ))),
        }
    }

    /// True when a grant on `self` covers a resource living in `other`.
    pub fn contains(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::Platform, _) => true,
            (Scope::Tenant(t), Scope::Tenant(u)) => t == u,
            (Scope::Tenant(t), Scope::Environment(u, _)) => t == u,
            (Scope::Environment(t, e), Scope::Environment(u, f)) => t == u && e == f,
            _ => false,
        }
    }

    pub fn tenant(&self) -> Option<&Name> {
        match self {
            Scope::Platform => None,
            Scope::Tenant(t) | Scope::Environment(t, _) => Some(t),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Platform => f.write_str("platform"),
            Scope::Tenant(t) => write!(f, "{t}"),
            Scope::Environment(t, e) => write!(f, "{t}/{e}"),
        }
    }
}

/// The name of a principal: a platform account (`admin`) or a tenant account (`acme/ci-bot`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrincipalName {
    pub tenant: Option<Name>,
    pub name: Name,
}

impl PrincipalName {
    pub fn parse(s: &str) -> Result<PrincipalName, Invalid> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [n] => Ok(PrincipalName {
                tenant: None,
                name: Name::parse(n)?,
            }),
            [t, n] => Ok(PrincipalName {
                tenant: Some(Name::parse(t)?),
                name: Name::parse(n)?,
            }),
            _ => Err(Invalid::new(format!(
                "invalid account {:?}: use `NAME` (platform) or `TENANT/NAME`",
                truncate(s)
            ))),
        }
    }

    /// The scope the account lives in.
    pub fn scope(&self) -> Scope {
        match &self.tenant {
            None => Scope::Platform,
            Some(t) => Scope::Tenant(t.clone()),
        }
    }
}

impl fmt::Display for PrincipalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            None => write!(f, "{}", self.name),
            Some(t) => write!(f, "{t}/{}", self.name),
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! string_serde {
    ($t:ty) => {
        impl FromStr for $t {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                <$t>::parse(s)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
string_serde!(Name);
string_serde!(Scope);
string_serde!(PrincipalName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "acme", "a-1", "0", &"x".repeat(63)] {
            assert!(Name::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Acme",
            "a_b",
            "a.b",
            "á",
            &"x".repeat(64),
            "a/b",
        ] {
            assert!(Name::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes() {
        let p = Scope::parse("platform").unwrap();
        let t = Scope::parse("acme").unwrap();
        let e = Scope::parse("acme/staging").unwrap();
        let o = Scope::parse("globex/staging").unwrap();
        let e2 = Scope::parse("acme/production").unwrap();
        assert!(p.contains(&t) && p.contains(&e) && t.contains(&e) && e.contains(&e));
        assert!(!e.contains(&t) && !t.contains(&o) && !e.contains(&e2) && !t.contains(&p));
        assert!(Scope::parse("a/b/c").is_err() && Scope::parse("").is_err());
        assert_eq!(e.to_string(), "acme/staging");
    }

    #[test]
    fn principals() {
        let p = PrincipalName::parse("acme/ci-bot").unwrap();
        assert_eq!(p.scope(), Scope::parse("acme").unwrap());
        assert_eq!(
            PrincipalName::parse("admin").unwrap().scope(),
            Scope::Platform
        );
        assert!(PrincipalName::parse("a/b/c").is_err());
    }
}
