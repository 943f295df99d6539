//! The crate's single error type, [`AcmeError`], and helpers that turn errors
//! from the ACME server, the HTTP stack and the DNS provider into one-line
//! reasons an operator can act on.
//!
//! Must never: include private keys, account keys, key authorizations or any
//! other secret in a message; embed multi-line or unbounded text from the
//! network (server text is flattened to one line and truncated).

use std::fmt::Write as _;
use std::time::Duration;

/// Result alias used throughout the crate.
pub type Result<T, E = AcmeError> = std::result::Result<T, E>;

/// Boxed error returned by [`DnsProvider`](crate::DnsProvider) implementations.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while talking to an ACME CA.
///
/// Every variant renders as a single line that says what failed and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    /// The caller passed a configuration the client cannot use (bad URL, bad roots, ...).
    #[error("invalid ACME configuration: {0}")]
    Config(String),

    /// Trusted roots passed as PEM could not be parsed, or a PEM certificate
    /// chain could not be read.
    #[error("bad PEM: {0}")]
    BadPem(String),

    /// The ACME directory could not be fetched (network, TLS, or not an ACME directory).
    #[error("ACME directory {url} unreachable: {reason}")]
    DirectoryUnreachable {
        /// The directory URL that was tried.
        url: String,
        /// Why it failed.
        reason: String,
    },

    /// The CA refused to create or load the account.
    #[error("ACME account refused: {0}")]
    AccountRefused(String),

    /// An operation needs an account, but neither `create_account` nor `restore` succeeded yet.
    #[error("no ACME account: call create_account or restore first")]
    NoAccount,

    /// A requested domain name is not a valid DNS name for a certificate.
    #[error("invalid domain {domain:?}: {reason}")]
    InvalidDomain {
        /// The name as given by the caller.
        domain: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A wildcard name was requested with the HTTP-01 solver; only DNS-01 can prove wildcards.
    #[error("wildcard domain {0} can only be validated with DNS-01, not HTTP-01")]
    WildcardNeedsDns01(String),

    /// The CA did not offer the challenge type of the configured solver.
    #[error("the CA offered no {kind} challenge for {domain}")]
    ChallengeUnavailable {
        /// The identifier of the authorization.
        domain: String,
        /// The challenge type we looked for (`http-01` or `dns-01`).
        kind: &'static str,
    },

    /// The CA tried to validate a challenge and it failed; `problem` is the CA's problem detail.
    #[error("{kind} challenge for {domain} failed: {problem}")]
    ChallengeFailed {
        /// The identifier of the authorization.
        domain: String,
        /// The challenge type (`http-01` or `dns-01`).
        kind: &'static str,
        /// The CA's problem document, flattened to one line.
        problem: String,
    },

    /// The order (or one of its authorizations) ended in a state from which no certificate can come.
    #[error("ACME order invalid: {0}")]
    OrderInvalid(String),

    /// A request to the CA failed during issuance (transport error or unexpected problem document).
    #[error("ACME {step} failed: {reason}")]
    Protocol {
        /// Which step of the protocol failed (e.g. `new-order`, `finalize`).
        step: &'static str,
        /// Why it failed.
        reason: String,
    },

    /// The DNS provider could not publish or remove a TXT record.
    #[error("DNS provider could not {action} TXT record {fqdn}: {reason}")]
    Dns {
        /// `set` or `clear`.
        action: &'static str,
        /// The record name, e.g. `_acme-challenge.example.com.`.
        fqdn: String,
        /// Why it failed.
        reason: String,
    },

    /// A bounded wait ran out.
    #[error("timed out after {}s waiting for {what}", waited.as_secs())]
    Timeout {
        /// What we were waiting for.
        what: &'static str,
        /// How long we waited.
        waited: Duration,
    },

    /// Generating the certificate key or CSR, or checking the issued certificate, failed.
    #[error("certificate error: {0}")]
    Certificate(String),
}

/// Longest piece of foreign (server- or library-provided) text kept in an error.
const MAX_REASON: usize = 400;

/// Flattens text to one line (control characters become spaces) and bounds its length.
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_REASON));
    let mut last_space = false;
    for ch in text.chars() {
        let ch = if ch.is_control() { ' ' } else { ch };
        if ch == ' ' && last_space {
            continue;
        }
        last_space = ch == ' ';
        if out.len() + ch.len_utf8() > MAX_REASON {
            out.push('…');
            break;
        }
        out.push(ch);
    }
    out.trim().to_owned()
}

/// Renders an error and its `source()` chain as `outer: inner: innermost`, on one line.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        // Libraries often repeat their source in their own message; skip duplicates.
        if !out.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        source = inner.source();
    }
    one_line(&out)
}

/// Renders an ACME problem document (RFC 7807 / RFC 8555 §6.7) on one line.
pub(crate) fn problem(p: &instant_acme::Problem) -> String {
    let mut out = String::new();
    match (&p.detail, &p.r#type) {
        (Some(detail), Some(kind)) => {
            let _ = write!(out, "{detail} ({})", short_type(kind));
        }
        (Some(detail), None) => out.push_str(detail),
        (None, Some(kind)) => out.push_str(short_type(kind)),
        (None, None) => out.push_str("no problem detail given by the CA"),
    }
    for sub in &p.subproblems {
        out.push_str("; ");
        if let Some(instant_acme::Identifier::Dns(name)) = sub.identifier.as_ref() {
            let _ = write!(out, "{name}: ");
        }
        match (&sub.detail, &sub.r#type) {
            (Some(detail), Some(kind)) => {
                let _ = write!(out, "{detail} ({})", short_type(kind));
            }
            (Some(detail), None) => out.push_str(detail),
            (None, Some(kind)) => out.push_str(short_type(kind)),
            (None, None) => out.push_str("unspecified"),
        }
    }
    one_line(&out)
}

/// `urn:ietf:params:acme:error:rateLimited` -> `rateLimited`.
fn short_type(kind: &str) -> &str {
    kind.strip_prefix("urn:ietf:params:acme:error:")
        .unwrap_or(kind)
}

/// Renders any instant-acme error on one line, with problem documents rendered by [`problem`].
pub(crate) fn acme(err: &instant_acme::Error) -> String {
    match err {
        instant_acme::Error::Api(p) => problem(p),
        instant_acme::Error::Timeout(_) => {
            "the CA asked us to retry later than our deadline".into()
        }
        other => chain(other),
    }
}

/// Maps an instant-acme error from protocol step `step` to an [`AcmeError`].
pub(crate) fn protocol(step: &'static str, err: &instant_acme::Error) -> AcmeError {
    AcmeError::Protocol {
        step,
        reason: acme(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_flattens_and_bounds() {
        assert_eq!(one_line("a\n\n  b\tc"), "a b c");
        let long = "x".repeat(5000);
        let got = one_line(&long);
        assert!(got.len() <= MAX_REASON + '…'.len_utf8());
        assert!(got.ends_with('…'));
    }

    #[test]
    fn problem_is_one_line_with_short_type() {
        let p: instant_acme::Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:unauthorized",
            "detail": "The key authorization file\nwas not found",
            "status": 403,
            "subproblems": [{
                "type": "urn:ietf:params:acme:error:dns",
                "detail": "NXDOMAIN",
                "identifier": {"type": "dns", "value": "a.example"}
            }]
        }))
        .expect("valid problem json");
        assert_eq!(
            problem(&p),
            "The key authorization file was not found (unauthorized); a.example: NXDOMAIN (dns)"
        );
    }

    #[test]
    fn errors_render_on_one_line() {
        let e = AcmeError::Timeout {
            what: "the order to become ready",
            waited: Duration::from_secs(60),
        };
        assert_eq!(
            e.to_string(),
            "timed out after 60s waiting for the order to become ready"
        );
        assert!(!AcmeError::WildcardNeedsDns01("*.a.example".into())
            .to_string()
            .contains('\n'));
    }
}
