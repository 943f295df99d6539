//! Test-side helpers on top of [`acme::testkit::Pebble`] (the pebble +
//! pebble-challtestsrv process harness, shared with other crates' tests):
//! an HTTP-01 responder and a TLS-client-style check of issued certificates.
//!
//! Must never: talk to anything but 127.0.0.1, wait without a bound, or
//! outlive the `Pebble` guard (the HTTP-01 server is attached to it).

use std::sync::Arc;
use std::time::Duration;

use acme::testkit::Pebble;
use acme::{Http01Tokens, Issued};
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::KeyPair;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// Starts pebble for one test, or returns from the test (after `Pebble::start`
/// printed SKIPPED) when pebble is not installed.
macro_rules! pebble_or_skip {
    () => {
        match acme::testkit::Pebble::start().await {
            Some(p) => p,
            None => return,
        }
    };
}
pub(crate) use pebble_or_skip;

/// Serves `tokens` on 127.0.0.1:<httpPort> (where pebble's VA connects) until
/// `pebble` is dropped.
pub async fn serve_http01(pebble: &mut Pebble, tokens: Http01Tokens) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", pebble.http01_port))
        .await
        .expect("bind HTTP-01 port");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let tokens = tokens.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let answer = tokens.answer(req.uri().path());
                    async move {
                        match answer {
                            Some(body) => Response::builder()
                                .status(StatusCode::OK)
                                .header("content-type", "text/plain")
                                .body(Full::new(Bytes::from(body))),
                            None => Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::new())),
                        }
                    }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
            });
        }
    });
    pebble.attach(task);
}

/// Checks an issued certificate the way a TLS client would, plus key/cert consistency.
pub fn verify_issued(issued: &Issued, root_pem: &str, server_names: &[&str]) {
    // The chain parses and starts with the leaf.
    let chain = acme::chain_der(&issued.chain_pem).expect("chain parses");
    assert!(
        chain.len() >= 2,
        "expected leaf + intermediate, got {}",
        chain.len()
    );
    let info = acme::leaf_info(&issued.chain_pem).expect("leaf parses");
    assert_eq!(info.not_after, issued.not_after);
    assert!(
        issued.not_after > time::OffsetDateTime::now_utc(),
        "not_after {} is not in the future",
        issued.not_after
    );
    let mut sans = info.dns_names.clone();
    sans.sort();
    let mut want = issued.domains.clone();
    want.sort();
    assert_eq!(sans, want, "SANs of the issued certificate");

    // The key is PKCS#8 ECDSA P-256 and belongs to the certificate.
    assert!(issued.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let rc_key = KeyPair::from_pem(&issued.key_pem).expect("key parses");
    assert_eq!(rc_key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
    let key_der = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key pem");
    assert!(
        matches!(key_der, PrivateKeyDer::Pkcs8(_)),
        "key must be PKCS#8"
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .expect("ring loads the key");
    rustls::sign::CertifiedKey::new(chain.clone(), signing_key)
        .keys_match()
        .expect("private key matches the certificate");

    // The chain verifies against pebble's root for each name.
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(cert.expect("root pem")).expect("add root");
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier");
    for name in server_names {
        let server_name = ServerName::try_from(name.to_string()).expect("server name");
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], UnixTime::now())
            .unwrap_or_else(|e| panic!("chain does not verify for {name}: {e}"));
    }
}
