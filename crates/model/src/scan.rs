//! The documents of vulnerability scanning: the packages an artifact's lockfiles pin, the
//! advisories of the offline vulnerability database (normalized from OSV), the findings
//! that match the two, and the policy that refuses deploys with findings at or above a
//! severity.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::types::{wire_time, EnvKind};
use crate::Invalid;

/// The package ecosystems whose lockfiles are read (named as OSV names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Ecosystem {
    #[serde(rename = "crates.io")]
    CratesIo,
    #[serde(rename = "npm")]
    Npm,
    #[serde(rename = "PyPI")]
    PyPi,
}

impl Ecosystem {
    pub const ALL: [Ecosystem; 3] = [Ecosystem::CratesIo, Ecosystem::Npm, Ecosystem::PyPi];

    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::CratesIo => "crates.io",
            Ecosystem::Npm => "npm",
            Ecosystem::PyPi => "PyPI",
        }
    }

    /// The ecosystem OSV calls `s`; `None` for those Gantry does not scan.
    pub fn parse(s: &str) -> Option<Ecosystem> {
        Ecosystem::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// A package name as this ecosystem compares names (PyPI: PEP 503 normalization).
    pub fn normalize(self, name: &str) -> String {
        match self {
            Ecosystem::PyPi => {
                let mut out = String::with_capacity(name.len());
                let mut sep = false;
                for c in name.chars() {
                    if matches!(c, '-' | '_' | '.') {
                        sep = true;
                    } else {
                        if sep && !out.is_empty() {
                            out.push('-');
                        }
                        sep = false;
                        out.push(c.to_ascii_lowercase());
                    }
                }
                out
            }
            _ => name.to_string(),
        }
    }
}

/// Qualitative severity (the CVSS scale), ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The advisory gives no severity Gantry can read.
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A package pinned by a lockfile of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// The lockfile (path inside the artifact) that pins it.
    pub lockfile: String,
}

/// What a push found in an artifact's lockfiles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Lockfiles read (paths inside the artifact).
    pub lockfiles: Vec<String>,
    pub packages: Vec<Package>,
    /// Requirements that pin no exact version (`requirements.txt` lines without `==`):
    /// they cannot be checked.
    #[serde(default)]
    pub unpinned: Vec<String>,
    /// Lockfiles that could not be read, with the reason.
    #[serde(default)]
    pub unreadable: Vec<String>,
}

/// One event of an OSV range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

/// How a range's versions compare: semantic versions, or the ecosystem's own ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RangeKind {
    Semver,
    Ecosystem,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub kind: RangeKind,
    pub events: Vec<Event>,
}

/// The versions of one package an advisory affects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affected {
    pub ecosystem: Ecosystem,
    /// Normalized as [`Ecosystem::normalize`] does.
    pub package: String,
    #[serde(default)]
    pub ranges: Vec<Range>,
    /// Versions listed one by one.
    #[serde(default)]
    pub versions: Vec<String>,
}

/// An advisory of the vulnerability database (the parts of an OSV record Gantry uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advisory {
    pub id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub summary: String,
    pub severity: Severity,
    /// The CVSS base score the severity comes from, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The record's `modified` time, as the database gave it.
    pub modified: String,
    pub affected: Vec<Affected>,
}

/// An advisory that affects a package of an artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub advisory: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub severity: Severity,
    pub ecosystem: Ecosystem,
    pub package: String,
    pub version: String,
    /// The lowest fixed version the advisory names, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    pub summary: String,
    pub lockfile: String,
}

/// The scan of an artifact against the database as it is now (recomputed on every read,
/// so loading a newer database changes it at once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanReport {
    pub lockfiles: Vec<String>,
    pub packages: u64,
    #[serde(default)]
    pub unpinned: Vec<String>,
    #[serde(default)]
    pub unreadable: Vec<String>,
    /// Most severe first.
    pub findings: Vec<Finding>,
    /// Advisories in the database when the scan ran (0: no database is loaded).
    pub database_advisories: u64,
}

impl ScanReport {
    /// The most severe finding's severity.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

/// What `POST /v1/advisories` takes: OSV records, as JSON objects.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadAdvisories {
    pub advisories: Vec<serde_json::Value>,
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    pub received: u64,
    /// New or changed advisories stored.
    pub loaded: u64,
    /// Already stored with the same `modified` time.
    pub unchanged: u64,
    /// Withdrawn records (removed from the database if present).
    pub withdrawn: u64,
    /// Records that affect no scanned ecosystem.
    pub ignored: u64,
    /// Records refused, with the reason (at most 20 listed).
    pub rejected: Vec<String>,
}

/// The database's size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseStatus {
    pub advisories: u64,
    /// Advisories per ecosystem (an advisory affecting two counts in both).
    pub by_ecosystem: Vec<(String, u64)>,
    #[serde(
        default,
        with = "wire_time::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub loaded_at: Option<OffsetDateTime>,
}

/// The lowest severity a policy refuses, or `None` to refuse nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockAt {
    None,
    Low,
    Medium,
    High,
    Critical,
}

impl BlockAt {
    pub fn parse(s: &str) -> Result<BlockAt, Invalid> {
        Ok(match s {
            "none" => BlockAt::None,
            "low" => BlockAt::Low,
            "medium" => BlockAt::Medium,
            "high" => BlockAt::High,
            "critical" => BlockAt::Critical,
            _ => {
                return Err(Invalid::new(format!(
                    "invalid severity {:?}: use none, low, medium, high or critical",
                    crate::name::truncate(s)
                )))
            }
        })
    }

    /// True when a finding of `s` is refused. Findings of unknown severity never are.
    pub fn blocks(self, s: Severity) -> bool {
        let floor = match self {
            BlockAt::None => return false,
            BlockAt::Low => Severity::Low,
            BlockAt::Medium => Severity::Medium,
            BlockAt::High => Severity::High,
            BlockAt::Critical => Severity::Critical,
        };
        s != Severity::Unknown && s >= floor
    }
}

/// The installation's artifact policy: per kind of environment, the lowest severity of a
/// finding that refuses a deploy. By default production refuses critical findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactPolicy {
    pub production: BlockAt,
    pub certification: BlockAt,
    pub staging: BlockAt,
    pub development: BlockAt,
}

impl Default for ArtifactPolicy {
    fn default() -> Self {
        ArtifactPolicy {
            production: BlockAt::Critical,
            certification: BlockAt::None,
            staging: BlockAt::None,
            development: BlockAt::None,
        }
    }
}

impl ArtifactPolicy {
    pub fn for_kind(&self, kind: EnvKind) -> BlockAt {
        match kind {
            EnvKind::Production => self.production,
            EnvKind::Certification => self.certification,
            EnvKind::Staging => self.staging,
            EnvKind::Development => self.development,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pypi_names_normalize() {
        assert_eq!(Ecosystem::PyPi.normalize("PyYAML"), "pyyaml");
        assert_eq!(
            Ecosystem::PyPi.normalize("zope.interface"),
            "zope-interface"
        );
        assert_eq!(Ecosystem::PyPi.normalize("a__b-.c"), "a-b-c");
        assert_eq!(Ecosystem::Npm.normalize("@scope/Pkg"), "@scope/Pkg");
    }

    #[test]
    fn blocking() {
        assert!(BlockAt::Critical.blocks(Severity::Critical));
        assert!(!BlockAt::Critical.blocks(Severity::High));
        assert!(BlockAt::High.blocks(Severity::Critical));
        assert!(!BlockAt::Low.blocks(Severity::Unknown));
        assert!(!BlockAt::None.blocks(Severity::Critical));
        assert!(BlockAt::parse("severe").is_err());
        let p = ArtifactPolicy::default();
        assert_eq!(p.for_kind(EnvKind::Production), BlockAt::Critical);
        assert_eq!(p.for_kind(EnvKind::Staging), BlockAt::None);
    }
}
