//! OSV records (<https://ossf.github.io/osv-schema/>) into advisories: the affected packages
//! of the ecosystems Gantry scans with their ranges and versions, and one severity: the
//! CVSS v3 base score when the record has a vector, else the database's own label (GitHub's
//! `CRITICAL`/`HIGH`/`MODERATE`/`LOW`), else unknown.

use std::str::FromStr;

use model::scan::{Advisory, Affected, Ecosystem, Event, Range, RangeKind, Severity};
use serde_json::Value;

use crate::ScanError;

/// What a record becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalized {
    Advisory(Advisory),
    /// The record was withdrawn: it must not be reported (and is removed if stored).
    Withdrawn(String),
    /// The record affects no ecosystem Gantry scans.
    Ignored(String),
}

const MAX_ID: usize = 128;
const MAX_SUMMARY: usize = 300;
const MAX_AFFECTED: usize = 2_000;
const MAX_EVENTS: usize = 2_000;

fn bad(id: &str, why: impl std::fmt::Display) -> ScanError {
    ScanError(format!("{id}: {why}"))
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn label(v: Option<&Value>) -> Option<Severity> {
    Some(match v?.as_str()?.to_ascii_uppercase().as_str() {
        "CRITICAL" => Severity::Critical,
        "HIGH" => Severity::High,
        "MODERATE" | "MEDIUM" => Severity::Medium,
        "LOW" => Severity::Low,
        _ => return None,
    })
}

fn cvss_severity(s: cvss::Severity) -> Severity {
    match s {
        cvss::Severity::None => Severity::Unknown,
        cvss::Severity::Low => Severity::Low,
        cvss::Severity::Medium => Severity::Medium,
        cvss::Severity::High => Severity::High,
        cvss::Severity::Critical => Severity::Critical,
    }
}

/// The record's severity and the CVSS score it comes from.
fn severity(doc: &Value) -> (Severity, Option<f64>) {
    let mut best: Option<(Severity, f64)> = None;
    for s in doc
        .get("severity")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let vector = s.get("score").and_then(Value::as_str).unwrap_or("");
        if s.get("type").and_then(Value::as_str) != Some("CVSS_V3") {
            continue;
        }
        if let Ok(base) = cvss::v3::Base::from_str(vector) {
            let score = base.score();
            let sev = cvss_severity(score.severity());
            if best.is_none_or(|(_, b)| score.value() > b) {
                best = Some((sev, score.value()));
            }
        }
    }
    if let Some((sev, score)) = best {
        return (sev, Some(score));
    }
    let db = label(doc.get("database_specific").and_then(|d| d.get("severity")));
    let per_package = doc
        .get("affected")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| {
            label(
                a.get("ecosystem_specific")
                    .and_then(|d| d.get("severity"))
                    .or_else(|| a.get("database_specific").and_then(|d| d.get("severity"))),
            )
        })
        .max();
    (db.or(per_package).unwrap_or(Severity::Unknown), None)
}

fn events(id: &str, raw: &Value) -> Result<Vec<Event>, ScanError> {
    let list = raw
        .as_array()
        .ok_or_else(|| bad(id, "a range without events"))?;
    if list.len() > MAX_EVENTS {
        return Err(bad(id, "too many events in a range"));
    }
    let mut out = Vec::with_capacity(list.len());
    for e in list {
        let obj = e
            .as_object()
            .ok_or_else(|| bad(id, "an event is not an object"))?;
        let (k, v) = obj.iter().next().ok_or_else(|| bad(id, "an empty event"))?;
        let v = v
            .as_str()
            .ok_or_else(|| bad(id, "an event's version is not a string"))?
            .to_string();
        out.push(match k.as_str() {
            "introduced" => Event::Introduced(v),
            "fixed" => Event::Fixed(v),
            "last_affected" => Event::LastAffected(v),
            "limit" => Event::Limit(v),
            other => return Err(bad(id, format!("unknown event {other:?}"))),
        });
    }
    Ok(out)
}

/// Normalizes one OSV record.
pub fn normalize(doc: &Value) -> Result<Normalized, ScanError> {
    let id = doc
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ScanError("a record without an \"id\"".into()))?;
    if id.len() > MAX_ID || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(ScanError(format!(
            "invalid advisory id {:?}",
            cut(id, MAX_ID)
        )));
    }
    if doc.get("withdrawn").is_some_and(|w| !w.is_null()) {
        return Ok(Normalized::Withdrawn(id.to_string()));
    }
    let modified = doc
        .get("modified")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(id, "no \"modified\" time"))?;
    let raw_affected = doc
        .get("affected")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if raw_affected.len() > MAX_AFFECTED {
        return Err(bad(id, "too many affected packages"));
    }
    let mut affected = Vec::new();
    for a in raw_affected {
        let pkg = a.get("package");
        let eco = pkg
            .and_then(|p| p.get("ecosystem"))
            .and_then(Value::as_str)
            .and_then(Ecosystem::parse);
        let name = pkg.and_then(|p| p.get("name")).and_then(Value::as_str);
        let (Some(eco), Some(name)) = (eco, name) else {
            continue;
        };
        let mut ranges = Vec::new();
        for r in a
            .get("ranges")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let kind = match r.get("type").and_then(Value::as_str) {
                Some("SEMVER") => RangeKind::Semver,
                Some("ECOSYSTEM") => RangeKind::Ecosystem,
                _ => continue, // GIT ranges name commits, not releases.
            };
            ranges.push(Range {
                kind,
                events: events(id, r.get("events").unwrap_or(&Value::Null))?,
            });
        }
        let versions: Vec<String> = a
            .get("versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        if ranges.is_empty() && versions.is_empty() {
            continue;
        }
        affected.push(Affected {
            ecosystem: eco,
            package: eco.normalize(name),
            ranges,
            versions,
        });
    }
    if affected.is_empty() {
        return Ok(Normalized::Ignored(id.to_string()));
    }
    let (severity, score) = severity(doc);
    let summary = doc
        .get("summary")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            doc.get("details")
                .and_then(Value::as_str)
                .and_then(|d| d.lines().find(|l| !l.trim().is_empty()))
        })
        .unwrap_or("");
    let aliases = doc
        .get("aliases")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(|s| cut(s, MAX_ID)))
        .take(20)
        .collect();
    Ok(Normalized::Advisory(Advisory {
        id: id.to_string(),
        aliases,
        summary: cut(summary.trim(), MAX_SUMMARY),
        severity,
        score,
        modified: cut(modified, 64),
        affected,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ghsa_record_with_cvss() {
        let doc = json!({
            "id": "GHSA-jf85-cpcp-j695",
            "modified": "2024-01-01T00:00:00Z",
            "aliases": ["CVE-2019-10744"],
            "summary": "Prototype Pollution in lodash",
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:H/A:H"}],
            "affected": [{"package": {"ecosystem": "npm", "name": "lodash"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "4.17.12"}]}]}],
            "database_specific": {"severity": "CRITICAL"}
        });
        let Normalized::Advisory(a) = normalize(&doc).unwrap() else {
            panic!()
        };
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.score, Some(9.1));
        assert_eq!(a.aliases, vec!["CVE-2019-10744"]);
        assert_eq!(a.affected[0].package, "lodash");
    }

    #[test]
    fn label_when_no_vector_and_ignored_ecosystems() {
        let doc = json!({"id": "GHSA-x", "modified": "m", "database_specific": {"severity": "MODERATE"},
            "affected": [{"package": {"ecosystem": "PyPI", "name": "PyYAML"}, "versions": ["5.3.1"]}]});
        let Normalized::Advisory(a) = normalize(&doc).unwrap() else {
            panic!()
        };
        assert_eq!(a.severity, Severity::Medium);
        assert_eq!(a.affected[0].package, "pyyaml");
        let go = json!({"id": "GO-1", "modified": "m",
            "affected": [{"package": {"ecosystem": "Go", "name": "x"}, "versions": ["1"]}]});
        assert_eq!(normalize(&go).unwrap(), Normalized::Ignored("GO-1".into()));
        let w = json!({"id": "GHSA-w", "modified": "m", "withdrawn": "2024-01-01T00:00:00Z"});
        assert_eq!(
            normalize(&w).unwrap(),
            Normalized::Withdrawn("GHSA-w".into())
        );
    }

    #[test]
    fn bad_records() {
        assert!(normalize(&json!({"modified": "m"})).is_err());
        assert!(normalize(&json!({"id": "a/b", "modified": "m"})).is_err());
        assert!(normalize(&json!({"id": "X", "affected": []})).is_err());
        let bad_event = json!({"id": "X", "modified": "m", "affected": [{"package": {"ecosystem": "npm", "name": "a"},
            "ranges": [{"type": "SEMVER", "events": [{"broken": "1"}]}]}]});
        assert!(normalize(&bad_event)
            .unwrap_err()
            .0
            .contains("unknown event"));
    }
}
