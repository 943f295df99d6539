//! Certificate material: checking what a user uploads (PEM chain and key that match, valid
//! now, with names Gantry accepts) and turning stored material into what the edge serves.
//!
//! Keys are held in `Zeroizing` buffers and never formatted into errors.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use store::certs::CertMaterial;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::{CertsError, Result};

/// A checked upload.
pub(crate) struct Parsed {
    pub domains: Vec<String>,
    pub chain_pem: String,
    pub key_pem: Zeroizing<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub fingerprint: String,
}

impl Parsed {
    pub fn material(&self, key_ciphertext: String) -> CertMaterial {
        CertMaterial {
            chain_pem: self.chain_pem.clone(),
            key_ciphertext,
            not_before: self.not_before,
            not_after: self.not_after,
            fingerprint: self.fingerprint.clone(),
        }
    }
}

/// A certificate ready for the edge.
pub struct ServedCert {
    /// `tenant/env/name`
    pub name: String,
    pub domains: Vec<String>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

fn invalid(m: impl Into<String>) -> CertsError {
    CertsError::Invalid(m.into())
}

fn parse_key(key_pem: &str) -> Result<PrivateKeyDer<'static>> {
    let mut reader = std::io::Cursor::new(key_pem.as_bytes());
    match rustls_pemfile::private_key(&mut reader) {
        Ok(Some(k)) => Ok(k),
        _ => Err(invalid(
            "the key is not a PEM private key (PKCS#8, PKCS#1 or SEC1)",
        )),
    }
}

/// Checks an uploaded chain and key.
pub(crate) fn parse(cert_pem: &str, key_pem: &str, now: OffsetDateTime) -> Result<Parsed> {
    if cert_pem.len() > model::certs::MAX_PEM || key_pem.len() > model::certs::MAX_PEM {
        return Err(CertsError::Invalid(format!(
            "certificate and key are limited to {} bytes of PEM each",
            model::certs::MAX_PEM
        )));
    }
    let chain = acme::chain_der(cert_pem)
        .map_err(|_| invalid("the certificate is not a PEM certificate chain"))?;
    let info =
        acme::leaf_info(cert_pem).map_err(|_| invalid("the leaf certificate cannot be parsed"))?;
    let key = parse_key(key_pem)?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| {
        invalid("the key type is not supported (use ECDSA P-256/P-384, Ed25519 or RSA)")
    })?;
    rustls::sign::CertifiedKey::new(chain.clone(), signer)
        .keys_match()
        .map_err(|_| invalid("the key does not match the certificate"))?;
    if info.not_after <= now {
        return Err(invalid(format!(
            "the certificate expired on {}",
            model::types::format_time(info.not_after)
        )));
    }
    let mut domains: Vec<String> = info
        .dns_names
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    domains.sort();
    domains.dedup();
    model::certs::validate_domains(&domains).map_err(|e| {
        invalid(format!(
            "the certificate's DNS names cannot be served: {}",
            e.message
        ))
    })?;
    let chain_pem = chain.iter().map(der_to_pem).collect::<String>();
    Ok(Parsed {
        domains,
        chain_pem,
        key_pem: Zeroizing::new(key_pem.trim().to_string() + "\n"),
        not_before: info.not_before,
        not_after: info.not_after,
        fingerprint: hex::encode(Sha256::digest(chain[0].as_ref())),
    })
}

impl ServedCert {
    /// Parses a certificate as the control plane hands it to edges.
    pub fn from_pem(c: &model::certs::EdgeCert) -> Result<ServedCert> {
        let chain = acme::chain_der(&c.chain_pem).map_err(|_| invalid("the chain is not PEM"))?;
        let key = parse_key(&c.key_pem)?;
        Ok(ServedCert {
            name: c.name.clone(),
            domains: c.domains.clone(),
            chain,
            key,
            not_after: c.not_after,
        })
    }
}

fn der_to_pem(der: &CertificateDer<'_>) -> String {
    use std::fmt::Write;
    let b64 = base64_encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        let _ = writeln!(out, "{}", String::from_utf8_lossy(line));
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}
