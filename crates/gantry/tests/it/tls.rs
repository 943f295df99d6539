//! TLS of the control API, probed with OpenSSL's client as an outside peer: TLS 1.0/1.1 and
//! CBC suites are refused by the server (a handshake alert), TLS 1.2 with ECDHE+AEAD and
//! TLS 1.3 are accepted and the certificate verifies against `ca.pem`.

use std::process::{Command, Stdio};

use crate::harness::Gantry;

/// Runs `openssl s_client` against the API with `args`; returns its combined output.
fn s_client(g: &Gantry, args: &[&str]) -> String {
    s_client_at(
        g.api.trim_start_matches("https://"),
        &g.data.join("ca.pem"),
        args,
    )
}

/// Runs `openssl s_client` against `addr` trusting `ca`; returns its combined output.
pub(crate) fn s_client_at(addr: &str, ca: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr)
        .arg("-CAfile")
        .arg(ca)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (scripts/test.sh installs it)");
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn only_tls12_and_tls13_with_aead_suites() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), None);
    // SECLEVEL=0 lets the client offer old protocols, so the refusal is the server's.
    for old in ["-tls1", "-tls1_1"] {
        let out = s_client(&g, &[old, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert!(
            out.contains("alert"),
            "{old} must be refused by the server: {out}"
        );
        assert!(out.contains("Cipher is (NONE)"), "{old}: {out}");
    }
    let cbc = s_client(
        &g,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA@SECLEVEL=0",
        ],
    );
    assert!(
        cbc.contains("alert") && cbc.contains("Cipher is (NONE)"),
        "CBC must be refused: {cbc}"
    );
    let t12 = s_client(&g, &["-tls1_2"]);
    assert!(
        t12.contains("Protocol  : TLSv1.2") || t12.contains("New, TLSv1.2"),
        "{t12}"
    );
    assert!(t12.contains("GCM") || t12.contains("CHACHA20"), "{t12}");
    assert!(t12.contains("Verify return code: 0 (ok)"), "{t12}");
    let t13 = s_client(&g, &["-tls1_3"]);
    assert!(
        t13.contains("TLSv1.3") && t13.contains("Verify return code: 0 (ok)"),
        "{t13}"
    );
    g.stop();
}
