//! ACME against a real CA: pebble and pebble-challtestsrv (Debian's packages) on loopback.
//! `gantry up` serves HTTP-01 challenges on its real HTTP listener (pebble's validation
//! port), sets DNS-01 records through the webhook (challtestsrv's API), serves what it got
//! by SNI, renews automatically, and says clearly why an order failed.

use std::time::{Duration, Instant};

use crate::certs::{cert_field, https_get};
use crate::harness::{ok, stderr, Gantry};

/// Waits (bounded) until `cert show` says `status` for `cert`.
fn until_status(g: &Gantry, cert: &str, status: &str) {
    let start = Instant::now();
    loop {
        let now = cert_field(g, cert, "status");
        if now == status {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{cert} is {now} ({}), wanted {status}\n{}",
            cert_field(g, cert, "status_message"),
            g.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `gantry up` ordering from `pebble` (trusting its TLS CA), its HTTP listener on pebble's
/// HTTP-01 validation port, with `extra` flags.
fn start_against(pebble: &acme::testkit::Pebble, dir: &std::path::Path, extra: &[&str]) -> Gantry {
    let ca_file = dir.join("pebble-tls-ca.pem");
    std::fs::write(&ca_file, &pebble.tls_ca_pem).unwrap();
    let http = format!("127.0.0.1:{}", pebble.http01_port);
    let mut args = vec![
        "--http",
        &http,
        "--acme-directory",
        &pebble.directory_url,
        "--acme-ca",
        ca_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Gantry::start_with(&dir.join("data"), None, &args, &[])
}

#[test]
fn acme_certificates_are_issued_served_renewed_and_failures_explained() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(pebble) = rt.block_on(acme::testkit::Pebble::start()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let g = start_against(
        &pebble,
        dir.path(),
        &[
            "--acme-email",
            "ops@acme.test",
            "--acme-dns-webhook",
            &pebble.challtestsrv_url,
            "--renew-check",
            "1s",
            "--renew-retry",
            "1s",
        ],
    );
    ok(g.cli(&["tenant", "create", "acme"]));
    ok(g.cli(&["env", "create", "acme/staging", "--kind", "staging"]));
    let up = crate::edge::Upstream::start(&dir.path().join("www"), "acme served");
    ok(g.cli(&[
        "route",
        "create",
        "acme/staging/api",
        "--host",
        "api.acme.test",
        "--to",
        &format!("upstream:127.0.0.1:{}", up.1),
    ]));

    // HTTP-01: pebble fetches the token from the edge's HTTP listener.
    let o = ok(g.cli(&[
        "cert",
        "issue",
        "acme/staging/api",
        "--issuer",
        "acme",
        "--domain",
        "api.acme.test",
        "-o",
        "json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["challenge"].as_str()),
        (Some("pending"), Some("http-01"))
    );
    until_status(&g, "acme/staging/api", "active");
    let fp = cert_field(&g, "acme/staging/api", "fingerprint");
    let root = rt.block_on(pebble.issuing_root_pem());
    let start = Instant::now();
    loop {
        match https_get(&g.edge_https, "api.acme.test", "/", &root) {
            Ok((200, body)) => {
                assert_eq!(body, "acme served");
                break;
            }
            other => assert!(start.elapsed() < Duration::from_secs(10), "{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // DNS-01 through the webhook, for a wildcard (warned about).
    let o = g.cli(&[
        "cert",
        "issue",
        "acme/staging/wild",
        "--issuer",
        "acme",
        "--challenge",
        "dns-01",
        "--domain",
        "*.wild.acme.test",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("wildcard"), "{}", stderr(&o));
    until_status(&g, "acme/staging/wild", "active");

    // Renewal on demand gives a new certificate, served without a restart.
    ok(g.cli(&["cert", "renew", "acme/staging/api"]));
    let renewed = cert_field(&g, "acme/staging/api", "fingerprint");
    assert_ne!(renewed, fp);

    // A name whose HTTP-01 check cannot reach the edge (challtestsrv resolves it to an
    // address nothing listens on) fails with the CA's reason, and is retried.
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{}/add-a", pebble.challtestsrv_url))
            .json(&serde_json::json!({"host": "down.acme.test.", "addresses": ["127.0.0.2"]}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    });
    ok(g.cli(&[
        "cert",
        "issue",
        "acme/staging/down",
        "--issuer",
        "acme",
        "--domain",
        "down.acme.test",
    ]));
    until_status(&g, "acme/staging/down", "failed");
    let why = cert_field(&g, "acme/staging/down", "status_message");
    assert!(
        why.contains("http-01") && why.contains("down.acme.test"),
        "{why}"
    );
    let ev = ok(g.cli(&["audit", "list", "--action", "certificate.*", "-o", "json"]));
    for action in [
        "certificate.issue",
        "certificate.renew",
        "certificate.issue-failed",
    ] {
        assert!(ev.contains(action), "{action} not audited: {ev}");
    }
    // The ACME account key is stored wrapped by the root key, never in plaintext.
    let db = std::fs::read(g.data.join("gantry.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains("PRIVATE KEY"));
    g.stop();
    drop(pebble);
}

#[test]
fn acme_certificates_renew_automatically_before_expiry() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(pebble) = rt.block_on(acme::testkit::Pebble::start()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Renew when less than 100 years are left: every certificate is due at once, so the
    // renewer's schedule is visible in seconds.
    let g = start_against(
        &pebble,
        dir.path(),
        &["--renew-check", "1s", "--renew-before", "36500days"],
    );
    ok(g.cli(&["tenant", "create", "acme"]));
    ok(g.cli(&["env", "create", "acme/staging", "--kind", "staging"]));
    ok(g.cli(&[
        "cert",
        "issue",
        "acme/staging/api",
        "--issuer",
        "acme",
        "--domain",
        "api.acme.test",
    ]));
    until_status(&g, "acme/staging/api", "active");
    let first = cert_field(&g, "acme/staging/api", "fingerprint");
    let start = Instant::now();
    while cert_field(&g, "acme/staging/api", "fingerprint") == first {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never renewed\n{}",
            g.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ev = ok(g.cli(&[
        "audit",
        "list",
        "--action",
        "certificate.renew",
        "-o",
        "json",
    ]));
    assert!(ev.contains("\"system\""), "renewed by the reconciler: {ev}");
    g.stop();
    drop(pebble);
}
