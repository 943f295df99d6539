//! Does an advisory affect a package version? OSV's evaluation: a version is affected when
//! it is listed, or when, walking a range's events in version order, the last event at or
//! below it is an `introduced` (`fixed` and `limit` end a stretch at their version,
//! `last_affected` just after it). crates.io and npm compare as semantic versions, PyPI as
//! PEP 440 versions. A version that does not parse matches no range.

use std::cmp::Ordering;
use std::str::FromStr;

use model::scan::{Advisory, Ecosystem, Event, Finding, Package};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    Semver(semver::Version),
    Pep440(pep440_rs::Version),
}

fn parse(eco: Ecosystem, s: &str) -> Option<Version> {
    match eco {
        Ecosystem::CratesIo | Ecosystem::Npm => {
            let s = s.trim().trim_start_matches(['v', '=']);
            semver::Version::parse(s).ok().map(Version::Semver)
        }
        Ecosystem::PyPi => pep440_rs::Version::from_str(s.trim())
            .ok()
            .map(Version::Pep440),
    }
}

/// `Some(fixed version, if any)` when `v` falls in the range.
fn in_range(eco: Ecosystem, v: &Version, events: &[Event]) -> Option<Option<String>> {
    // (version, order among equal versions, event); "introduced: 0" is below everything.
    let mut sorted: Vec<(Option<Version>, &Event)> = Vec::with_capacity(events.len());
    for e in events {
        let raw = match e {
            Event::Introduced(s) if s == "0" => {
                sorted.push((None, e));
                continue;
            }
            Event::Introduced(s) | Event::Fixed(s) | Event::LastAffected(s) | Event::Limit(s) => s,
        };
        // An event that cannot be compared makes the whole range unusable: guessing could
        // only invent or hide findings.
        sorted.push((Some(parse(eco, raw)?), e));
    }
    sorted.sort_by(|a, b| match (&a.0, &b.0) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.cmp(y),
    });
    let mut affected = false;
    for (ev_v, e) in &sorted {
        let at_or_below = ev_v.as_ref().is_none_or(|x| x <= v);
        match e {
            Event::Introduced(_) if at_or_below => affected = true,
            Event::Fixed(_) | Event::Limit(_) if at_or_below => affected = false,
            Event::LastAffected(_) if ev_v.as_ref().is_some_and(|x| x < v) => affected = false,
            _ => {}
        }
    }
    if !affected {
        return None;
    }
    let fixed = sorted.iter().find_map(|(ev_v, e)| match (ev_v, e) {
        (Some(x), Event::Fixed(s)) if x > v => Some(s.clone()),
        _ => None,
    });
    Some(fixed)
}

/// The finding when `adv` affects `pkg`.
pub fn affects(adv: &Advisory, pkg: &Package) -> Option<Finding> {
    let name = pkg.ecosystem.normalize(&pkg.name);
    let version = parse(pkg.ecosystem, &pkg.version);
    for a in &adv.affected {
        if a.ecosystem != pkg.ecosystem || a.package != name {
            continue;
        }
        let listed = a.versions.iter().any(|v| {
            v == &pkg.version
                || matches!((&version, parse(pkg.ecosystem, v)), (Some(x), Some(y)) if *x == y)
        });
        let mut hit = listed.then_some(None);
        if let (None, Some(v)) = (&hit, &version) {
            hit = a
                .ranges
                .iter()
                .find_map(|r| in_range(pkg.ecosystem, v, &r.events));
        }
        if let Some(fixed) = hit {
            return Some(Finding {
                advisory: adv.id.clone(),
                aliases: adv.aliases.clone(),
                severity: adv.severity,
                ecosystem: pkg.ecosystem,
                package: pkg.name.clone(),
                version: pkg.version.clone(),
                fixed,
                summary: adv.summary.clone(),
                lockfile: pkg.lockfile.clone(),
            });
        }
    }
    None
}

/// Every finding of `advisories` on `packages`, most severe first.
pub fn findings(packages: &[Package], advisories: &[Advisory]) -> Vec<Finding> {
    let mut out: Vec<Finding> = packages
        .iter()
        .flat_map(|p| advisories.iter().filter_map(move |a| affects(a, p)))
        .collect();
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.package.cmp(&b.package))
            .then_with(|| a.advisory.cmp(&b.advisory))
            .then_with(|| a.lockfile.cmp(&b.lockfile))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::scan::{Affected, Range, RangeKind, Severity};

    fn adv(eco: Ecosystem, name: &str, events: Vec<Event>, versions: &[&str]) -> Advisory {
        Advisory {
            id: "ADV-1".into(),
            aliases: vec![],
            summary: "s".into(),
            severity: Severity::High,
            score: None,
            modified: "m".into(),
            affected: vec![Affected {
                ecosystem: eco,
                package: eco.normalize(name),
                ranges: vec![Range {
                    kind: RangeKind::Ecosystem,
                    events,
                }],
                versions: versions.iter().map(|s| s.to_string()).collect(),
            }],
        }
    }

    fn pkg(eco: Ecosystem, name: &str, version: &str) -> Package {
        Package {
            ecosystem: eco,
            name: name.into(),
            version: version.into(),
            lockfile: "l".into(),
        }
    }

    use Event::*;

    #[test]
    fn introduced_fixed() {
        let a = adv(
            Ecosystem::Npm,
            "lodash",
            vec![Introduced("0".into()), Fixed("4.17.12".into())],
            &[],
        );
        let f = affects(&a, &pkg(Ecosystem::Npm, "lodash", "4.17.11")).unwrap();
        assert_eq!(f.fixed.as_deref(), Some("4.17.12"));
        assert!(affects(&a, &pkg(Ecosystem::Npm, "lodash", "4.17.12")).is_none());
        assert!(affects(&a, &pkg(Ecosystem::Npm, "lodash", "4.18.0")).is_none());
        assert!(affects(&a, &pkg(Ecosystem::Npm, "lodash", "4.17.12-rc.1")).is_some());
        assert!(affects(&a, &pkg(Ecosystem::Npm, "underscore", "1.0.0")).is_none());
        assert!(affects(&a, &pkg(Ecosystem::CratesIo, "lodash", "1.0.0")).is_none());
    }

    #[test]
    fn several_stretches_and_last_affected() {
        let a = adv(
            Ecosystem::CratesIo,
            "time",
            vec![
                Introduced("0.2.0".into()),
                Fixed("0.2.23".into()),
                Introduced("0.1.0".into()),
                LastAffected("0.1.45".into()),
            ],
            &[],
        );
        for (v, hit) in [
            ("0.0.9", false),
            ("0.1.0", true),
            ("0.1.45", true),
            ("0.1.46", false),
            ("0.2.22", true),
            ("0.2.23", false),
            ("0.3.0", false),
            ("not-a-version", false),
        ] {
            assert_eq!(
                affects(&a, &pkg(Ecosystem::CratesIo, "time", v)).is_some(),
                hit,
                "{v}"
            );
        }
    }

    #[test]
    fn pypi_pep440_and_listed_versions() {
        let a = adv(
            Ecosystem::PyPi,
            "PyYAML",
            vec![Introduced("0".into()), Fixed("5.4".into())],
            &[],
        );
        assert!(affects(&a, &pkg(Ecosystem::PyPi, "pyyaml", "5.3.1")).is_some());
        assert!(affects(&a, &pkg(Ecosystem::PyPi, "PyYAML", "5.4b2")).is_some());
        assert!(affects(&a, &pkg(Ecosystem::PyPi, "pyyaml", "5.4.0")).is_none());
        assert!(affects(&a, &pkg(Ecosystem::PyPi, "pyyaml", "5.10")).is_none());
        let listed = adv(Ecosystem::PyPi, "django", vec![], &["3.0.1", "3.0.2"]);
        assert!(affects(&listed, &pkg(Ecosystem::PyPi, "Django", "3.0.1")).is_some());
        assert!(affects(&listed, &pkg(Ecosystem::PyPi, "Django", "3.0.3")).is_none());
    }

    #[test]
    fn a_range_that_cannot_be_read_matches_nothing() {
        let a = adv(
            Ecosystem::Npm,
            "x",
            vec![Introduced("0".into()), Fixed("garbage".into())],
            &[],
        );
        assert!(affects(&a, &pkg(Ecosystem::Npm, "x", "1.0.0")).is_none());
    }

    #[test]
    fn findings_sorted_most_severe_first() {
        let mut low = adv(Ecosystem::Npm, "a", vec![Introduced("0".into())], &[]);
        low.severity = Severity::Low;
        low.id = "LOW".into();
        let mut crit = adv(Ecosystem::Npm, "b", vec![Introduced("0".into())], &[]);
        crit.severity = Severity::Critical;
        crit.id = "CRIT".into();
        let f = findings(
            &[
                pkg(Ecosystem::Npm, "a", "1.0.0"),
                pkg(Ecosystem::Npm, "b", "1.0.0"),
            ],
            &[low, crit],
        );
        let ids: Vec<_> = f.iter().map(|f| f.advisory.as_str()).collect();
        assert_eq!(ids, vec!["CRIT", "LOW"]);
    }
}
