//! HTTPS transport: the rustls client configuration (ring provider, public
//! web PKI roots plus optional extra roots) and the adapter that lets
//! instant-acme send its requests through `reqwest`.
//!
//! Must never: rely on or install a process-wide rustls `CryptoProvider`
//! (the ring provider is passed explicitly), disable certificate
//! verification, follow redirects, wait without a timeout, or buffer an
//! unbounded response body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::error::{chain, AcmeError, Result};

/// Largest response body we accept from the CA or the DNS webhook. Certificate
/// chains and ACME JSON objects are a few KiB.
const MAX_BODY: usize = 1024 * 1024;

const USER_AGENT: &str = concat!("gantry-acme/", env!("CARGO_PKG_VERSION"));

/// Builds the rustls client config: ring provider, Mozilla's root set
/// (webpki-roots) and, optionally, the PEM certificates in `extra_roots_pem`.
pub(crate) fn tls_config(extra_roots_pem: Option<&str>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_roots_pem {
        let mut added = 0usize;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert =
                cert.map_err(|e| AcmeError::BadPem(format!("extra roots: {}", chain(&e))))?;
            roots
                .add(cert)
                .map_err(|e| AcmeError::BadPem(format!("extra roots: {}", chain(&e))))?;
            added += 1;
        }
        if added == 0 {
            return Err(AcmeError::BadPem(
                "extra roots: no CERTIFICATE block found".into(),
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AcmeError::Config(format!("TLS setup: {}", chain(&e))))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A reqwest client with our TLS config, bounded connect/request times and no redirects.
pub(crate) fn http_client(
    tls: rustls::ClientConfig,
    request_timeout: Duration,
) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .user_agent(USER_AGENT)
        .connect_timeout(request_timeout.min(Duration::from_secs(10)))
        .timeout(request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| AcmeError::Config(format!("HTTP client: {}", chain(&e))))
}

/// Reads a response body, refusing more than [`MAX_BODY`] bytes.
pub(crate) async fn read_body(mut rsp: reqwest::Response) -> Result<Bytes, BodyError> {
    if rsp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = Vec::new();
    while let Some(chunk) = rsp.chunk().await.map_err(BodyError::Read)? {
        if buf.len() + chunk.len() > MAX_BODY {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("response body larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("reading response body: {0}")]
    Read(#[source] reqwest::Error),
}

/// instant-acme's [`HttpClient`] on top of reqwest.
pub(crate) struct ReqwestAcmeHttp {
    client: reqwest::Client,
}

impl ReqwestAcmeHttp {
    pub(crate) fn new(client: reqwest::Client) -> Self {
        Self { client }
    }
}

impl HttpClient for ReqwestAcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.client.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            // The request body is in memory already; collecting it cannot fail.
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let rsp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;

            let mut head = http::Response::new(());
            *head.status_mut() = rsp.status();
            *head.version_mut() = rsp.version();
            *head.headers_mut() = rsp.headers().clone();
            let (parts, ()) = head.into_parts();

            let body = read_body(rsp)
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            Ok(BytesResponse {
                parts,
                body: Box::new(body),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_pem_without_certificates() {
        let err = tls_config(Some("not pem at all")).unwrap_err();
        assert!(matches!(err, AcmeError::BadPem(_)), "{err}");
    }

    #[test]
    fn accepts_no_extra_roots() {
        assert!(tls_config(None).is_ok());
    }
}
