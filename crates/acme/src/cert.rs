//! Reading issued certificates (validity and DNS SANs of the leaf of a PEM
//! chain) and the renewal policy.
//!
//! Must never: panic on malformed input (everything here reads data that came
//! from the network or from storage), or treat an unparseable certificate as
//! "not due for renewal".

use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{AcmeError, Result};

/// Default renewal policy: renew 30 days before `not_after`.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// What the edge needs to know about an installed certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity of the leaf certificate.
    pub not_before: OffsetDateTime,
    /// End of validity of the leaf certificate.
    pub not_after: OffsetDateTime,
    /// DNS names in the leaf's subjectAltName extension, in certificate order
    /// (wildcards as `*.example.com`).
    pub dns_names: Vec<String>,
}

/// True if a certificate valid until `not_after` should be renewed at `now`,
/// i.e. when `now` is within `before` of `not_after` (or past it).
///
/// Use [`DEFAULT_RENEW_BEFORE`] for the default 30-day policy.
pub fn renewal_due(not_after: OffsetDateTime, now: OffsetDateTime, before: Duration) -> bool {
    let remaining = not_after - now;
    match time::Duration::try_from(before) {
        Ok(before) => remaining <= before,
        // `before` is longer than any representable span: always due.
        Err(_) => true,
    }
}

/// Parses the first certificate (the leaf) of a PEM chain.
pub fn leaf_info(chain_pem: &str) -> Result<CertInfo> {
    let leaf = first_cert(chain_pem)?;
    cert_info(&leaf)
}

/// All certificates of a PEM chain as DER, leaf first. Fails on bad PEM or an empty chain.
pub fn chain_der(chain_pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| AcmeError::BadPem(crate::error::chain(&e)))?;
    if certs.is_empty() {
        return Err(AcmeError::BadPem("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

fn first_cert(chain_pem: &str) -> Result<CertificateDer<'static>> {
    chain_der(chain_pem)?
        .into_iter()
        .next()
        .ok_or_else(|| AcmeError::BadPem("no CERTIFICATE block found".into()))
}

pub(crate) fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|e| AcmeError::BadPem(format!("certificate does not parse: {e}")))?;
    if !rest.is_empty() {
        return Err(AcmeError::BadPem(
            "trailing data after the certificate".into(),
        ));
    }
    Ok(cert)
}

pub(crate) fn cert_info(der: &[u8]) -> Result<CertInfo> {
    let cert = parse_der(der)?;
    let validity = cert.validity();
    let mut dns_names = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| AcmeError::BadPem(format!("bad subjectAltName extension: {e}")))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                dns_names.push(dns.to_ascii_lowercase());
            }
        }
    }
    Ok(CertInfo {
        not_before: validity.not_before.to_datetime(),
        not_after: validity.not_after.to_datetime(),
        dns_names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    #[test]
    fn renewal_policy() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let day = time::Duration::days(1);
        // 60 days left: not due with the 30-day default.
        assert!(!renewal_due(now + day * 60, now, DEFAULT_RENEW_BEFORE));
        // 31 days left: not yet.
        assert!(!renewal_due(now + day * 31, now, DEFAULT_RENEW_BEFORE));
        // Exactly 30 days left: due.
        assert!(renewal_due(now + day * 30, now, DEFAULT_RENEW_BEFORE));
        // 29 days left: due.
        assert!(renewal_due(now + day * 29, now, DEFAULT_RENEW_BEFORE));
        // Already expired: due.
        assert!(renewal_due(now - day, now, DEFAULT_RENEW_BEFORE));
        // Zero margin: due only once expired.
        assert!(!renewal_due(now + day, now, Duration::ZERO));
        assert!(renewal_due(now, now, Duration::ZERO));
        // Custom margin.
        assert!(renewal_due(now + day * 6, now, 7 * DAY));
        assert!(!renewal_due(now + day * 8, now, 7 * DAY));
        // Absurd margin: always due, no overflow panic.
        assert!(renewal_due(now + day * 8, now, Duration::MAX));
    }

    #[test]
    fn reads_self_signed_leaf() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["a.example".into(), "*.b.example".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = leaf_info(&cert.pem()).unwrap();
        assert_eq!(info.dns_names, vec!["a.example", "*.b.example"]);
        assert!(info.not_after > info.not_before);
    }

    #[test]
    fn bad_pem_is_an_error_not_a_panic() {
        assert!(matches!(leaf_info(""), Err(AcmeError::BadPem(_))));
        assert!(matches!(leaf_info("garbage"), Err(AcmeError::BadPem(_))));
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(leaf_info(broken), Err(AcmeError::BadPem(_))));
        let unterminated = "-----BEGIN CERTIFICATE-----\nAAAA\n";
        assert!(matches!(leaf_info(unterminated), Err(AcmeError::BadPem(_))));
    }
}
