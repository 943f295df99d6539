//! Validation and normalisation of the DNS names a certificate is requested for.
//!
//! Runs before any network traffic so that obviously bad requests (empty
//! lists, non-ASCII names, misplaced wildcards, wildcards with HTTP-01) fail
//! fast with a precise error. Must never: accept a name that could not appear
//! as a DNS SAN, or silently drop a requested name.

use crate::error::{AcmeError, Result};

/// Most names we put in one order. Let's Encrypt's limit is 100 SANs per certificate.
pub(crate) const MAX_NAMES: usize = 100;

/// Lower-cases, strips one trailing dot, checks syntax and removes duplicates
/// (keeping first-seen order). A wildcard is allowed only as the whole
/// left-most label (`*.example.com`).
pub(crate) fn normalize(domains: &[String]) -> Result<Vec<String>> {
    if domains.is_empty() {
        return Err(AcmeError::Config(
            "at least one domain name is required".into(),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(domains.len());
    for raw in domains {
        let name = normalize_one(raw)?;
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if out.len() > MAX_NAMES {
        return Err(AcmeError::Config(format!(
            "{} names requested, at most {MAX_NAMES} fit in one certificate",
            out.len()
        )));
    }
    Ok(out)
}

fn normalize_one(raw: &str) -> Result<String> {
    let bad = |reason: &'static str| AcmeError::InvalidDomain {
        domain: crate::error::one_line(raw),
        reason,
    };
    let name = raw.trim();
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if !name.is_ascii() {
        return Err(bad(
            "not ASCII; convert internationalised names to punycode (xn--)",
        ));
    }
    let name = name.to_ascii_lowercase();
    if name.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    let (wildcard, base) = match name.strip_prefix("*.") {
        Some(base) => (true, base),
        None => (false, name.as_str()),
    };
    if base.is_empty() {
        return Err(bad("a wildcard needs a parent domain"));
    }
    let labels: Vec<&str> = base.split('.').collect();
    if wildcard && labels.len() < 2 {
        return Err(bad("a wildcard must cover a name with at least two labels"));
    }
    for label in &labels {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > 63 {
            return Err(bad("a label is longer than 63 characters"));
        }
        if label.contains('*') {
            return Err(bad("a wildcard may only be the whole left-most label"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad("labels may contain only letters, digits and '-'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label may not start or end with '-'"));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("IP addresses are not supported, only DNS names"));
    }
    Ok(name)
}

/// `*.example.com` -> `example.com`; other names unchanged.
pub(crate) fn base_name(name: &str) -> &str {
    name.strip_prefix("*.").unwrap_or(name)
}

/// True for `*.example.com`.
pub(crate) fn is_wildcard(name: &str) -> bool {
    name.starts_with("*.")
}

/// The TXT record name DNS-01 uses for `name`: `_acme-challenge.<base>.` (absolute, trailing dot).
pub(crate) fn dns01_record(name: &str) -> String {
    format!("_acme-challenge.{}.", base_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: &[&str]) -> Result<Vec<String>> {
        normalize(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn normalizes_and_dedups() {
        assert_eq!(
            n(&["API.Example.com.", "api.example.com", "*.Example.com"]).unwrap(),
            vec!["api.example.com", "*.example.com"]
        );
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            ".",
            "a..b",
            "-a.b",
            "a-.b",
            "a_b.c",
            "*.com",
            "*",
            "a.*.b",
            "*a.b.c",
            "ex\u{e4}mple.com",
            "127.0.0.1",
            "a b.c",
        ] {
            assert!(n(&[bad]).is_err(), "{bad:?} should be rejected");
        }
        assert!(n(&[]).is_err());
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(n(&[long_label.as_str()]).is_err());
    }

    #[test]
    fn record_names() {
        assert_eq!(
            dns01_record("*.wild.example"),
            "_acme-challenge.wild.example."
        );
        assert_eq!(dns01_record("a.example"), "_acme-challenge.a.example.");
        assert!(is_wildcard("*.a.b"));
        assert!(!is_wildcard("a.b"));
    }
}
