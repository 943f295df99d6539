//! Test support, not part of the production API: runs a private pebble +
//! pebble-challtestsrv pair (Debian package `pebble`, binaries in `/usr/bin`)
//! on loopback for integration tests, in this crate and in other crates.
//!
//! It is compiled unconditionally so that a plain `cargo test` (without any
//! feature) still runs every pebble test; it is `#[doc(hidden)]` and has no
//! dependencies beyond the crate's own. Production code paths must never use
//! it: it spawns processes, writes to the temp dir and panics on failure
//! (like any test helper), which the rest of this crate must never do.
//!
//! Must never: talk to anything but 127.0.0.1, wait without a bound, or leave
//! a pebble process running (the [`Pebble`] guard kills both processes on
//! drop, including when a test panics).
//!
//! ```no_run
//! # async fn demo() {
//! let Some(pebble) = acme::testkit::Pebble::start().await else {
//!     return; // pebble is not installed: SKIPPED was printed
//! };
//! // Serve HTTP-01 responses on 127.0.0.1:{pebble.http01_port}, then:
//! let mut client = pebble.acme_client();
//! # let _ = &mut client; }
//! ```

use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::{AcmeClient, Timeouts};

/// The pebble ACME server binary.
pub const PEBBLE: &str = "/usr/bin/pebble";
/// The pebble-challtestsrv binary (DNS server and its management API).
pub const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";

/// How long pebble and challtestsrv get to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one readiness probe (TCP connect to challtestsrv).
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// Timeouts small enough that a broken test fails fast, large enough for a loaded CI box.
pub fn test_timeouts() -> Timeouts {
    Timeouts {
        request: Duration::from_secs(10),
        poll: Duration::from_secs(30),
        dns_propagation: Duration::ZERO,
        total: Duration::from_secs(60),
    }
}

/// A running pebble + challtestsrv pair on 127.0.0.1. Dropping it aborts the
/// attached tasks, kills both processes and removes its temp dir (printing
/// both processes' logs first when the thread is panicking).
///
/// Nothing listens on [`Pebble::http01_port`]: the test binds it and serves
/// the HTTP-01 responses itself (and may [`Pebble::attach`] that task).
pub struct Pebble {
    children: Vec<(&'static str, Child)>,
    dir: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// `https://127.0.0.1:<port>/dir`
    pub directory_url: String,
    /// PEM of the test CA that issued pebble's own HTTPS certificate.
    pub tls_ca_pem: String,
    /// `https://127.0.0.1:<port>` — pebble's management interface.
    pub management_url: String,
    /// `http://127.0.0.1:<port>` — challtestsrv's management API (the DNS webhook target).
    pub challtestsrv_url: String,
    /// Port on 127.0.0.1 that pebble's VA connects to for HTTP-01 (free when
    /// `start` returns; the test binds it).
    pub http01_port: u16,
}

impl Pebble {
    /// Starts a fresh pebble + challtestsrv pair and waits (bounded) until both
    /// are ready. Returns `None`, after printing `SKIPPED: ...` to stderr, when
    /// [`PEBBLE`] is not installed.
    ///
    /// # Panics
    ///
    /// When the processes cannot be started, exit early or are not ready
    /// within 30 s (the message includes their logs).
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
        // Ports are picked free, then bound by the processes: another process may take
        // one in between. Such a start is retried with new ports (bounded).
        let mut last = String::new();
        for _ in 0..5 {
            match Pebble::spawn_once().await {
                Ok(p) => return Some(p),
                Err(e) if e.contains("address already in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("pebble could not bind its ports after 5 attempts:\n{last}");
    }

    async fn spawn_once() -> Result<Pebble, String> {
        let dir = temp_dir();
        let mut pebble = Pebble {
            children: Vec::new(),
            dir: dir.clone(),
            tasks: Vec::new(),
            directory_url: String::new(),
            tls_ca_pem: String::new(),
            management_url: String::new(),
            challtestsrv_url: String::new(),
            http01_port: 0,
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
        fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).expect("encode pebble config"),
        )
        .expect("write config");
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

        pebble.wait_ready(challtest_port).await?;
        Ok(pebble)
    }

    /// Waits (bounded) until challtestsrv accepts connections and pebble serves its directory.
    async fn wait_ready(&mut self, challtest_port: u16) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let client = self.https_client();
        let mut challtest_up = false;
        loop {
            self.running()?;
            if !challtest_up {
                challtest_up = matches!(
                    tokio::time::timeout(
                        PROBE_TIMEOUT,
                        tokio::net::TcpStream::connect(("127.0.0.1", challtest_port)),
                    )
                    .await,
                    Ok(Ok(_))
                );
            }
            if challtest_up {
                if let Ok(rsp) = client.get(&self.directory_url).send().await {
                    if rsp.status().is_success() {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "pebble/challtestsrv not ready after {STARTUP_TIMEOUT:?}\n{}",
                    self.logs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An error (with both logs) when a process exited early.
    fn running(&mut self) -> Result<(), String> {
        let mut dead = Vec::new();
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                dead.push(format!("{name} exited early: {status}"));
            }
        }
        if dead.is_empty() {
            Ok(())
        } else {
            Err(format!("{}\n{}", dead.join("\n"), self.logs()))
        }
    }

    /// Both processes' output so far, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["challtestsrv.log", "pebble.log"] {
            let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            out.push_str(&format!("----- {name} -----\n{text}\n"));
        }
        out
    }

    /// An HTTPS client trusting only the test CA (for pebble's directory and
    /// management interface), with a 5 s request timeout.
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

    /// Pebble's issuing root (fresh per pebble run), from the management
    /// interface: the trust anchor for certificates this pebble issues.
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

    /// An ACME client for this pebble, trusting the test CA for the
    /// directory's HTTPS, with [`test_timeouts`].
    pub fn acme_client(&self) -> AcmeClient {
        AcmeClient::new(&self.directory_url, Some(&self.tls_ca_pem))
            .expect("acme client")
            .with_timeouts(test_timeouts())
    }

    /// Ties a background task (e.g. the test's HTTP-01 server) to this guard:
    /// it is aborted when the `Pebble` is dropped, before the processes are killed.
    pub fn attach(&mut self, task: tokio::task::JoinHandle<()>) {
        self.tasks.push(task);
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for task in self.tasks.drain(..) {
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

fn tls_materials() -> (String, String, String) {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "acme testkit CA");
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
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir =
        std::env::temp_dir().join(format!("acme-testkit-{}-{seq}-{nanos}", std::process::id()));
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
