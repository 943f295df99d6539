//! The documents of the artifact registry: immutable, content-addressed versions of what a
//! service runs (a directory packed as .tar.gz), with the manifest recorded at push.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::types::wire_time;
use crate::{Invalid, Name};

/// Largest artifact (the .tar.gz as pushed).
pub const MAX_ARTIFACT_BYTES: usize = 256 * 1024 * 1024;
/// Largest unpacked size and file count an artifact may declare.
pub const MAX_UNPACKED_BYTES: u64 = 1024 * 1024 * 1024;
pub const MAX_FILES: usize = 20_000;

/// `TENANT/NAME@VERSION`, e.g. `acme/customers-mngr@1.4.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRef {
    pub tenant: Name,
    pub name: Name,
    pub version: String,
}

impl ArtifactRef {
    pub fn parse(s: &str) -> Result<ArtifactRef, Invalid> {
        let bad = || {
            Invalid::new(format!(
                "invalid artifact {:?}: use TENANT/NAME@VERSION, e.g. acme/customers-mngr@1.4.0",
                crate::name::truncate(s)
            ))
        };
        let (path, version) = s.split_once('@').ok_or_else(bad)?;
        let (tenant, name) = path.split_once('/').ok_or_else(bad)?;
        check_version(version)?;
        Ok(ArtifactRef {
            tenant: Name::parse(tenant)?,
            name: Name::parse(name)?,
            version: version.to_string(),
        })
    }
}

impl std::fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.tenant, self.name, self.version)
    }
}

/// A version: 1-64 of `A-Za-z0-9._+-`, starting with a letter or digit (semver fits).
pub fn check_version(v: &str) -> Result<(), Invalid> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.as_bytes()[0].is_ascii_alphanumeric()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(format!(
            "invalid version {:?}: 1-64 letters, digits, '.', '_', '+' or '-'",
            crate::name::truncate(v)
        )))
    }
}

/// One file of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    pub size: u64,
    /// SHA-256 of the file's content, hex.
    pub sha256: String,
    /// Executable by its owner.
    pub executable: bool,
}

/// An artifact version as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// `TENANT/NAME`
    pub name: String,
    pub version: String,
    /// `sha256:<hex>` of the .tar.gz as pushed.
    pub digest: String,
    /// Bytes of the .tar.gz.
    pub size: u64,
    pub files: u64,
    pub unpacked_size: u64,
    /// The files (in `show` only; empty in lists).
    #[serde(default)]
    pub manifest: Vec<ManifestEntry>,
    #[serde(with = "wire_time")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    /// The vulnerability scan against the database as it is now (in `show` only; absent
    /// for versions pushed before scanning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<crate::scan::ScanReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        let r = ArtifactRef::parse("acme/customers-mngr@1.4.0").unwrap();
        assert_eq!(r.to_string(), "acme/customers-mngr@1.4.0");
        for bad in [
            "acme/x",
            "x@1",
            "acme/x@",
            "acme/x@-1",
            "acme/x@1 2",
            "Acme/x@1",
            "acme/x@a/b",
        ] {
            assert!(ArtifactRef::parse(bad).is_err(), "{bad}");
        }
        assert!(check_version("1.4.0+build.7").is_ok());
        assert!(check_version(&"1".repeat(65)).is_err());
    }
}
