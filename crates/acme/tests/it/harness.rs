//! Test harness: runs a private pebble + pebble-challtestsrv pair on
//! loopback, serves HTTP-01 responses, and checks issued certificates.
//!
//! Must never: talk to anything but 127.0.0.1, wait without a bound, or leave
//! a pebble process running (the `Pebble` guard kills both processes on drop,
//! including when a test panics).

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use acme::{AcmeClient, Http01Tokens, Issued, Timeouts};
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

pub const PEBBLE: &str = "/usr/bin/pebble";
pub const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";

/// How long pebble and challtestsrv get to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts pebble for one test, or returns `None` (after saying so) when pebble is not installed.
macro_rules! pebble_or_skip {
    () => {
        match $crate::harness::Pebble::start().await {
            Some(p) => p,
            None => return,
        }
    };
}
pub(crate) use pebble_or_skip;

/// Timeouts small enough that a broken test fails fast, large enough for a loaded CI box.
pub fn test_timeouts() -> Timeouts {
    Timeouts {
        request: Duration::from_secs(10),
        poll: Duration::from_secs(30),
        dns_propagation: Duration::ZERO,
        total: Duration::from_secs(60),
    }
}

/// A running pebble + challtestsrv pair. Dropping it kills both and removes its temp dir.
pub struct Pebble {
    children: Vec<(&'static str, Child)>,
    dir: PathBuf,
    /// `https://127.0.0.1:<port>/dir`
    pub directory_url: String,
    /// PEM of the test CA that issued pebble's own HTTPS certificate.
    pub tls_ca_pem: String,
    /// `https://127.0.0.1:<port>` — pebble's management interface.
    pub management_url: String,
    /// `http://127.0.0.1:<port>` — challtestsrv's management API (the DNS webhook target).
    pub challtestsrv_url: String,
    /// Port pebble's VA connects to for HTTP-01.
    pub http01_port: u16,
    http01_server: Option<tokio::task::JoinHandle<()>>,
}

impl Pebble {
    pub async fn start() -> Option<Pebble> {
        if !Path::new(PEBBLE).exists() {
            eprintln!(
                "SKIPPED: {PEBBLE} is missing; install the Debian package `pebble` to run the ACME integration tests"
            );
            return None;
        }
        assert!(
            Path::new(CHALLTESTSRV).exists(),
            "{PEBBLE} exists but {CHALLTESTSRV} does not"
        );

        let dir = temp_dir();
        let mut pebble = Pebble {
            children: Vec::new(),
            dir: dir.clone(),
            directory_url: String::new(),
            tls_ca_pem: String::new(),
            management_url: String::new(),
            challtestsrv_url: String::new(),
            http01_port: 0,
            http01_server: None,
        };

        // pebble's own HTTPS certificate, issued by a throwaway CA we trust in the client.
        let (ca_pem, cert_pem, key_pem) = tls_materials();
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        fs::write(&cert_path, cert_pem).expect("write cert");
        fs::write(&key_path, key_pem).expect("write key");
        pebble.tls_ca_pem = ca_pem;

        let dns_port = free_tcp_udp_port();
        let challtest_port = free_tcp_port();
        let acme_port = free_tcp_port();
        let mgmt_port = free_tcp_port();
        let http01_port = free_tcp_port();
        let tls_port = free_tcp_port();

        // 1. challtestsrv: DNS on loopback only (A -> 127.0.0.1, no AAAA), management API;
        //    its own HTTP-01/HTTPS/TLS-ALPN servers are off (the test serves HTTP-01 itself).
        let challtest = Command::new(CHALLTESTSRV)
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-management", &format!("127.0.0.1:{challtest_port}")])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(log_file(&dir, "challtestsrv.log"))
            .stderr(log_file(&dir, "challtestsrv.log"))
            .spawn()
            .expect("spawn pebble-challtestsrv");
        pebble.children.push(("pebble-challtestsrv", challtest));
        pebble.challtestsrv_url = format!("http://127.0.0.1:{challtest_port}");

        // 2. pebble, resolving through challtestsrv.
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
                "certificate": cert_path,
                "privateKey": key_path,
                "httpPort": http01_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = dir.join("pebble-config.json");
        fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).expect("write config");
        let pebble_child = Command::new(PEBBLE)
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(log_file(&dir, "pebble.log"))
            .stderr(log_file(&dir, "pebble.log"))
            .spawn()
            .expect("spawn pebble");
        pebble.children.push(("pebble", pebble_child));
        pebble.directory_url = format!("https://127.0.0.1:{acme_port}/dir");
        pebble.management_url = format!("https://127.0.0.1:{mgmt_port}");
        pebble.http01_port = http01_port;

        pebble.wait_ready(challtest_port).await;
        Some(pebble)
    }

    /// Waits (bounded) until challtestsrv accepts connections and pebble serves its directory.
    async fn wait_ready(&mut self, challtest_port: u16) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let client = self.https_client();
        let mut challtest_up = false;
        loop {
            self.assert_running();
            if !challtest_up {
                challtest_up = TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], challtest_port)),
                    Duration::from_millis(200),
                )
                .is_ok();
            }
            if challtest_up {
                if let Ok(rsp) = client.get(&self.directory_url).send().await {
                    if rsp.status().is_success() {
                        return;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "pebble/challtestsrv not ready after {STARTUP_TIMEOUT:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn assert_running(&mut self) {
        let mut dead = Vec::new();
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                dead.push(format!("{name} exited early: {status}"));
            }
        }
        if !dead.is_empty() {
            panic!("{}\n{}", dead.join("\n"), self.logs());
        }
    }

    /// Both processes' output, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["challtestsrv.log", "pebble.log"] {
            let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            out.push_str(&format!("----- {name} -----\n{text}\n"));
        }
        out
    }

    /// An HTTPS client trusting only the test CA (for pebble's management interface).
    pub fn https_client(&self) -> reqwest::Client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.tls_ca_pem.as_bytes()) {
            roots.add(cert.expect("test CA pem")).expect("add test CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(5))
            .build()
            .expect("reqwest client")
    }

    /// Pebble's issuing root (fresh per pebble run), from the management interface.
    pub async fn issuing_root_pem(&self) -> String {
        let url = format!("{}/roots/0", self.management_url);
        let rsp = self
            .https_client()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(rsp.status().is_success(), "GET {url}: {}", rsp.status());
        rsp.text().await.expect("root body")
    }

    /// An ACME client for this pebble, trusting the test CA for the directory's HTTPS.
    pub fn acme_client(&self) -> AcmeClient {
        AcmeClient::new(&self.directory_url, Some(&self.tls_ca_pem))
            .expect("acme client")
            .with_timeouts(test_timeouts())
    }

    /// Serves `tokens` on 127.0.0.1:<httpPort> (where pebble's VA connects) until
    /// this `Pebble` is dropped.
    pub async fn serve_http01(&mut self, tokens: Http01Tokens) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.http01_port))
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
                    let conn =
                        http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
                });
            }
        });
        self.http01_server = Some(task);
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        if let Some(task) = self.http01_server.take() {
            task.abort();
        }
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
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

fn tls_materials() -> (String, String, String) {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "acme crate test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("leaf key");
    let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("leaf params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("leaf cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn temp_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("acme-it-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("open log file");
    Stdio::from(file)
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A port free for both TCP and UDP (challtestsrv's DNS listens on both).
fn free_tcp_udp_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
        let port = udp.local_addr().expect("udp addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP after 50 tries");
}
