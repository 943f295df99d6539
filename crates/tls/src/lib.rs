//! TLS for every Gantry listener: the internal certificate authority (created on first
//! start, `ca.pem` beside the data), leaf certificates it issues, and rustls server
//! configurations built from named policies.
//!
//! Only TLS 1.2 and 1.3 with AEAD (ECDHE) suites exist here: rustls implements no CBC,
//! RC4, static-RSA or export suite, so no policy can enable one. This crate must never write
//! a private key with permissions wider than 0600 or log key material.

pub mod linger;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Config(#[from] rustls::Error),
    #[error("{0}")]
    Pem(String),
}

pub type Result<T> = std::result::Result<T, TlsError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Named TLS policies, like a load balancer's security policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// TLS 1.3 only.
    Modern,
    /// TLS 1.2 and 1.3, ECDHE with AEAD suites only.
    Compatible,
}

impl TlsPolicy {
    pub fn parse(s: &str) -> Option<TlsPolicy> {
        match s {
            "modern" => Some(TlsPolicy::Modern),
            "compatible" => Some(TlsPolicy::Compatible),
            _ => None,
        }
    }
    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static MODERN: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        static COMPATIBLE: &[&rustls::SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        match self {
            TlsPolicy::Modern => MODERN,
            TlsPolicy::Compatible => COMPATIBLE,
        }
    }
}

/// Writes `data` to `path` atomically with mode 0600 (owner only).
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
        f.write_all(data).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// The internal certificate authority of one Gantry installation.
pub struct InternalCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

impl InternalCa {
    /// Loads `dir/ca.pem` and `dir/ca.key`, or creates them on first start.
    pub fn load_or_create(dir: &Path) -> Result<InternalCa> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        if cert_path.exists() && key_path.exists() {
            let pem = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
            let key_pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
            let key = KeyPair::from_pem(&key_pem)?;
            let params = CertificateParams::from_ca_cert_pem(&pem)?;
            // Re-signing the parsed parameters yields an issuer with the same name and key,
            // which is all a signature on a leaf depends on; `ca.pem` stays the trust anchor.
            let cert = params.self_signed(&key)?;
            return Ok(InternalCa { cert, key, pem });
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Gantry internal CA");
        dn.push(DnType::OrganizationName, "Gantry");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        let pem = cert.pem();
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        fs::write(&cert_path, &pem).map_err(io_err(&cert_path))?;
        Ok(InternalCa { cert, key, pem })
    }

    /// The CA certificate (PEM), the trust anchor clients pin with `--ca`.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses), valid 90 days.
    pub fn issue_server(&self, names: &[String]) -> Result<CertifiedKey> {
        let (cert, key) = self.sign_server(names, time::OffsetDateTime::now_utc())?;
        Ok(CertifiedKey {
            chain: vec![cert.der().clone(), self.cert.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der())
                .map_err(|e| TlsError::Pem(e.to_string()))?,
        })
    }

    /// Like `issue_server`, valid from `now`, as PEM: the chain (leaf, then this CA) and
    /// the PKCS#8 key.
    pub fn issue_server_pem(
        &self,
        names: &[String],
        now: time::OffsetDateTime,
    ) -> Result<(String, zeroize::Zeroizing<String>)> {
        let (cert, key) = self.sign_server(names, now)?;
        Ok((
            format!("{}{}", cert.pem(), self.pem),
            zeroize::Zeroizing::new(key.serialize_pem()),
        ))
    }

    fn sign_server(
        &self,
        names: &[String],
        now: time::OffsetDateTime,
    ) -> Result<(rcgen::Certificate, KeyPair)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_else(|| "gantry".into()),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
            })
            .collect::<std::result::Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(90);
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert, key))
    }
}

/// A self-signed server certificate for `names`, valid 90 days (for an edge that has no CA
/// of its own: what it serves to clients whose SNI no certificate covers).
pub fn self_signed(names: &[String]) -> Result<CertifiedKey> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(90);
    let cert = params.self_signed(&key)?;
    Ok(CertifiedKey {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| TlsError::Pem(e.to_string()))?,
    })
}

/// A certificate chain and its private key.
pub struct CertifiedKey {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A rustls server configuration for `policy` serving one certificate, offering HTTP/2 and
/// HTTP/1.1 through ALPN.
pub fn server_config(policy: TlsPolicy, ck: CertifiedKey) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(policy.versions())?
        .with_no_client_auth()
        .with_single_cert(ck.chain, ck.key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A rustls server configuration for `policy` whose certificate `resolver` picks per
/// handshake (SNI), offering HTTP/2 and HTTP/1.1 through ALPN.
pub fn server_config_with_resolver(
    policy: TlsPolicy,
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(policy.versions())?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Parses PEM certificates (for clients that pin the internal CA).
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs: std::result::Result<Vec<_>, _> =
        rustls_pemfile::certs(&mut std::io::Cursor::new(pem)).collect();
    let certs = certs.map_err(|e| TlsError::Pem(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no certificate found in PEM".into()));
    }
    Ok(certs)
}
