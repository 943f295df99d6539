//! The certificate snapshot of the HTTPS listener and the SNI resolver that reads it.
//!
//! Like routes, certificates are an immutable table swapped atomically: a handshake reads
//! the table it finds, so adding, renewing or removing a certificate never disturbs a
//! connection. Lookup is exact host first, then a wildcard one label deep (`*.acme.test`
//! covers `api.acme.test`, not `a.b.acme.test` nor `acme.test`), then the default
//! certificate (for clients that send no SNI or a name nothing covers).
//!
//! This module holds parsed keys only; it never reads files, the store or the keyring.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// One certificate as served: its chain and signing key, and what metrics show of it.
#[derive(Debug, Clone)]
pub struct CertEntry {
    /// `tenant/env/name`, or `default`.
    pub name: String,
    /// DNS names it covers (lowercase; `*.x` for wildcards).
    pub domains: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub not_after: i64,
    pub key: Arc<CertifiedKey>,
}

#[derive(Debug, thiserror::Error)]
#[error("the private key cannot be used for TLS: {0}")]
pub struct BadKey(String);

impl CertEntry {
    /// Builds an entry from a DER chain (leaf first) and its private key.
    pub fn new(
        name: impl Into<String>,
        domains: Vec<String>,
        not_after: i64,
        chain: Vec<CertificateDer<'static>>,
        key: &PrivateKeyDer<'static>,
    ) -> Result<CertEntry, BadKey> {
        let signer = rustls::crypto::ring::sign::any_supported_type(key)
            .map_err(|e| BadKey(e.to_string()))?;
        Ok(CertEntry {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            not_after,
            key: Arc::new(CertifiedKey::new(chain, signer)),
        })
    }
}

/// The certificates of one HTTPS listener.
#[derive(Debug, Default)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.acme.test` is kept under `acme.test`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    entries: Vec<CertEntry>,
}

impl CertTable {
    /// A table of `entries`; when two cover the same name, the one that expires last wins
    /// (a renewed certificate takes over before the old one is removed).
    pub fn new(mut entries: Vec<CertEntry>, default: Option<CertEntry>) -> CertTable {
        entries.sort_by_key(|e| e.not_after);
        let mut t = CertTable {
            default: default.as_ref().map(|d| d.key.clone()),
            ..Default::default()
        };
        for e in &entries {
            for d in &e.domains {
                match d.strip_prefix("*.") {
                    Some(parent) => t.wildcard.insert(parent.to_string(), e.key.clone()),
                    None => t.exact.insert(d.clone(), e.key.clone()),
                };
            }
        }
        t.entries = entries;
        t.entries.extend(default);
        t
    }

    /// The certificate for `server_name` (lowercase), if any covers it.
    pub fn find(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        if let Some(k) = self.exact.get(name) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return Some(k.clone());
            }
        }
        self.default.clone()
    }

    pub fn entries(&self) -> &[CertEntry] {
        &self.entries
    }
}

/// The rustls resolver of an HTTPS listener: picks a certificate from the current table.
#[derive(Debug, Default)]
pub struct SniResolver {
    table: ArcSwap<CertTable>,
}

impl SniResolver {
    pub fn new(table: CertTable) -> Arc<SniResolver> {
        Arc::new(SniResolver {
            table: ArcSwap::from_pointee(table),
        })
    }

    /// Replaces the table; handshakes already past certificate selection are unaffected.
    pub fn update(&self, table: CertTable) {
        self.table.store(Arc::new(table));
    }

    pub fn table(&self) -> Arc<CertTable> {
        self.table.load_full()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls hands over SNI already lowercased and validated as a DNS name.
        self.table.load().find(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, domains: &[&str], not_after: i64) -> CertEntry {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(
            domains.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        CertEntry::new(
            name,
            domains.iter().map(|s| s.to_string()).collect(),
            not_after,
            vec![cert.der().clone()],
            &der,
        )
        .unwrap()
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let exact = entry("a/b/exact", &["api.acme.test"], 10);
        let wild = entry("a/b/wild", &["*.acme.test"], 10);
        let def = entry("default", &["gantry"], 10);
        let t = CertTable::new(vec![exact.clone(), wild.clone()], Some(def.clone()));
        let same = |a: Option<Arc<CertifiedKey>>, b: &CertEntry| Arc::ptr_eq(&a.unwrap(), &b.key);
        assert!(same(t.find(Some("api.acme.test")), &exact));
        assert!(same(t.find(Some("www.acme.test")), &wild));
        assert!(same(t.find(Some("a.b.acme.test")), &def));
        assert!(same(t.find(Some("acme.test")), &def));
        assert!(same(t.find(None), &def));
        let none = CertTable::new(vec![exact], None);
        assert!(none.find(Some("other.test")).is_none());
    }

    #[test]
    fn the_certificate_that_expires_last_wins() {
        let old = entry("a/b/old", &["api.acme.test"], 10);
        let new = entry("a/b/new", &["api.acme.test"], 20);
        let t = CertTable::new(vec![new.clone(), old], None);
        assert!(Arc::ptr_eq(
            &t.find(Some("api.acme.test")).unwrap(),
            &new.key
        ));
    }
}
