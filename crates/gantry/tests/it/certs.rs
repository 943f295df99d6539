//! Certificates and replicas through the CLI and the real edge: a certificate issued by the
//! internal CA or added from files is served by SNI on the HTTPS listener (probed with
//! OpenSSL's client: TLS 1.1 refused, the chain verifies), plain HTTP redirects, the
//! `modern` policy refuses TLS 1.2, and a service route follows replicas registered,
//! drained and deregistered with the CLI.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::edge::Upstream;
use crate::harness::{fails, ok, stderr, Gantry};
use crate::tls::s_client_at;

/// An HTTPS GET through the edge for `host`, trusting `ca_pem`; status and body.
pub(crate) fn https_get(
    edge: &str,
    host: &str,
    path: &str,
    ca_pem: &str,
) -> Result<(u16, String), String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let addr: std::net::SocketAddr = edge.parse().unwrap();
        let c = reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .resolve(host, addr)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let r = c
            .get(format!("https://{host}:{}{path}", addr.port()))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok((r.status().as_u16(), r.text().await.unwrap_or_default()))
    })
}

/// A certificate's field from `cert show -o json`.
pub(crate) fn cert_field(g: &Gantry, cert: &str, field: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&ok(g.cli(&["cert", "show", cert, "-o", "json"]))).unwrap();
    match &v[field] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The SHA-256 of the leaf that `openssl s_client` received for `host`.
fn served_fingerprint(edge: &str, ca: &std::path::Path, host: &str) -> String {
    let out = s_client_at(edge, ca, &["-servername", host, "-showcerts"]);
    let pem: String = out
        .split_inclusive('\n')
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .take_while(|l| !l.starts_with("-----END CERTIFICATE-----"))
        .collect::<String>()
        + "-----END CERTIFICATE-----\n";
    let der = tls::parse_certs(pem.as_bytes())
        .map(|c| c[0].to_vec())
        .unwrap_or_default();
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(der))
}

#[test]
fn certificates_from_the_cli_are_served_by_sni_with_the_tls_policy() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), None);
    ok(g.cli(&["tenant", "create", "acme"]));
    ok(g.cli(&["env", "create", "acme/staging", "--kind", "staging"]));
    let up = Upstream::start(&dir.path().join("www"), "served over https");
    let to = format!("upstream:127.0.0.1:{}", up.1);
    for host in ["web.acme.test", "up.acme.test"] {
        let name = format!("acme/staging/{}", host.split('.').next().unwrap());
        ok(g.cli(&["route", "create", &name, "--host", host, "--to", &to]));
    }
    let issued = g.cli(&[
        "cert",
        "issue",
        "acme/staging/web",
        "--domain",
        "web.acme.test",
        "-o",
        "json",
    ]);
    let info: serde_json::Value = serde_json::from_str(&ok(issued)).unwrap();
    assert_eq!(info["status"], "active");
    assert_eq!(info["source"], "internal");
    let fp = info["fingerprint"].as_str().unwrap().to_string();
    let ca = g.data.join("ca.pem");
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    let start = Instant::now();
    loop {
        if let Ok((200, body)) = https_get(&g.edge_https, "web.acme.test", "/", &ca_pem) {
            assert_eq!(body, "served over https");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never served over HTTPS"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // OpenSSL as an outside peer: the issued leaf, verified; TLS 1.1 refused.
    assert_eq!(served_fingerprint(&g.edge_https, &ca, "web.acme.test"), fp);
    let out = s_client_at(
        &g.edge_https,
        &ca,
        &["-servername", "web.acme.test", "-verify_return_error"],
    );
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    for old in ["-tls1", "-tls1_1"] {
        let out = s_client_at(
            &g.edge_https,
            &ca,
            &[
                "-servername",
                "web.acme.test",
                old,
                "-cipher",
                "DEFAULT@SECLEVEL=0",
            ],
        );
        assert!(
            out.contains("alert"),
            "{old} must be refused by the edge: {out}"
        );
    }

    // The TLS policy changes for every edge without a restart.
    let tls12 = || {
        s_client_at(
            &g.edge_https,
            &ca,
            &["-servername", "web.acme.test", "-tls1_2"],
        )
    };
    assert!(tls12().contains("Verify return code: 0 (ok)"));
    ok(g.cli(&["tls-policy", "set", "modern"]));
    let start = Instant::now();
    while !tls12().contains("alert") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "TLS 1.2 still accepted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok(g.cli(&["tls-policy", "show"])).contains("modern"));
    fails(g.cli(&["tls-policy", "set", "legacy"]), 3);
    ok(g.cli(&["tls-policy", "set", "default"]));
    let start = Instant::now();
    while !tls12().contains("Verify return code: 0 (ok)") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "TLS 1.2 not back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A certificate added from files (made by OpenSSL), its key sent once.
    let key = dir.path().join("up.key");
    let crt = dir.path().join("up.crt");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=up.acme.test",
            "-addext",
            "subjectAltName=DNS:up.acme.test",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let added = ok(g.cli(&[
        "cert",
        "add",
        "acme/staging/up",
        "--cert",
        crt.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "-o",
        "json",
    ]));
    let added: serde_json::Value = serde_json::from_str(&added).unwrap();
    assert_eq!(added["source"], "uploaded");
    let start = Instant::now();
    while served_fingerprint(&g.edge_https, &crt, "up.acme.test")
        != added["fingerprint"].as_str().unwrap()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the added certificate is never served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The key file's content is nowhere in the data directory.
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let body_line = key_pem.lines().nth(1).unwrap();
    for entry in std::fs::read_dir(&g.data).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(body_line),
                "{} holds the key",
                p.display()
            );
        }
    }
    assert!(
        !g.output().contains(body_line),
        "the key reached the server's output"
    );
    // An unreadable key file: a one-line reason, usage exit code.
    let o = g.cli(&[
        "cert",
        "add",
        "acme/staging/bad",
        "--cert",
        crt.to_str().unwrap(),
        "--key",
        dir.path().join("none").to_str().unwrap(),
    ]);
    fails(o, 2);
    // A wildcard is warned about.
    let o = g.cli(&[
        "cert",
        "issue",
        "acme/staging/wild",
        "--domain",
        "*.wild.acme.test",
    ]);
    assert!(stderr(&o).contains("wildcard"), "{}", stderr(&o));
    let list = ok(g.cli(&["cert", "list", "acme/staging"]));
    assert!(
        list.contains("acme/staging/web") && list.contains("acme/staging/up"),
        "{list}"
    );

    // Plain HTTP redirects to HTTPS.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, location) = rt.block_on(async {
        let r = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("http://{}/a?b=1", g.edge_http))
            .header("host", "web.acme.test")
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap().to_string(),
        )
    });
    let port = g.edge_https.rsplit_once(':').unwrap().1;
    assert_eq!(
        (status, location.as_str()),
        (308, format!("https://web.acme.test:{port}/a?b=1").as_str())
    );

    ok(g.cli(&["cert", "delete", "acme/staging/up"]));
    fails(g.cli(&["cert", "show", "acme/staging/up"]), 6);
    let ev = ok(g.cli(&["audit", "list", "--action", "certificate.*", "-o", "json"]));
    assert!(
        ev.contains("certificate.create") && ev.contains("certificate.delete"),
        "{ev}"
    );
    g.stop();
}

#[test]
fn the_modern_policy_refuses_tls12_and_replicas_follow_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start_with(
        &dir.path().join("data"),
        None,
        &["--https-policy", "modern"],
        &[],
    );
    ok(g.cli(&["tenant", "create", "acme"]));
    ok(g.cli(&["env", "create", "acme/staging", "--kind", "staging"]));
    ok(g.cli(&[
        "cert",
        "issue",
        "acme/staging/api",
        "--domain",
        "api.acme.test",
    ]));
    let ca = g.data.join("ca.pem");
    let start = Instant::now();
    loop {
        let out = s_client_at(
            &g.edge_https,
            &ca,
            &["-servername", "api.acme.test", "-tls1_3"],
        );
        if out.contains("Verify return code: 0 (ok)") && out.contains("CN = api.acme.test") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{out}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = s_client_at(
        &g.edge_https,
        &ca,
        &["-servername", "api.acme.test", "-tls1_2"],
    );
    assert!(out.contains("alert"), "TLS 1.2 accepted by modern: {out}");

    // Replicas registered with the CLI back a service route.
    let (a, b) = (
        Upstream::start(&dir.path().join("a"), "replica a"),
        Upstream::start(&dir.path().join("b"), "replica b"),
    );
    ok(g.cli(&[
        "route",
        "create",
        "acme/staging/customers",
        "--host",
        "customers.acme.test",
        "--to",
        "service:customers",
        "--allow-http",
    ]));
    for u in [&a, &b] {
        ok(g.cli(&[
            "replica",
            "register",
            "acme/staging/customers",
            &format!("127.0.0.1:{}", u.1),
        ]));
    }
    let seen = |want: &[&str]| {
        let start = Instant::now();
        loop {
            let mut got = std::collections::BTreeSet::new();
            for _ in 0..10 {
                let (s, body) = crate::edge::get(&g.edge_http, "customers.acme.test", "/");
                if s == 200 {
                    got.insert(body);
                }
            }
            if got.iter().map(String::as_str).collect::<Vec<_>>() == want {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "served by {got:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    seen(&["replica a", "replica b"]);
    ok(g.cli(&[
        "replica",
        "drain",
        "acme/staging/customers",
        &format!("127.0.0.1:{}", b.1),
    ]));
    seen(&["replica a"]);
    let list = ok(g.cli(&["replica", "list", "acme/staging/customers", "-o", "json"]));
    assert!(list.contains("draining"), "{list}");
    ok(g.cli(&[
        "replica",
        "activate",
        "acme/staging/customers",
        &format!("127.0.0.1:{}", b.1),
    ]));
    seen(&["replica a", "replica b"]);
    ok(g.cli(&[
        "replica",
        "deregister",
        "acme/staging/customers",
        &format!("127.0.0.1:{}", a.1),
    ]));
    seen(&["replica b"]);
    fails(
        g.cli(&["replica", "register", "acme/staging/customers", "nowhere"]),
        3,
    );
    g.stop();
}
