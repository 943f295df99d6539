//! TLS of the control API, probed with OpenSSL's client as an outside peer: TLS 1.0/1.1 and
//! CBC suites are refused by the server (a handshake alert), TLS 1.2 with ECDHE+AEAD and
//! TLS 1.3 are accepted and the certificate verifies against `ca.pem`; and the edge's HTTPS
//! listener scanned with sslyze.

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

/// The edge's HTTPS listener scanned with sslyze (PyPI, installed by scripts/test.sh):
/// no SSL 3.0, TLS 1.0 or 1.1; TLS 1.2 only with ECDHE and AEAD suites; TLS 1.3 offered.
#[test]
fn the_edge_passes_an_sslyze_scan() {
    let probe = Command::new("python3")
        .args(["-m", "sslyze", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: sslyze is missing; scripts/test.sh installs it (pip install sslyze)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), None);
    let out = dir.path().join("sslyze.json");
    let run = Command::new("python3")
        .args([
            "-m",
            "sslyze",
            &g.edge_https,
            "--sslv3",
            "--tlsv1",
            "--tlsv1_1",
        ])
        .args(["--tlsv1_2", "--tlsv1_3", "--quiet", "--json_out"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(run.success(), "sslyze failed");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let scan = &doc["server_scan_results"][0]["scan_result"];
    let accepted = |k: &str| -> Vec<String> {
        scan[k]["result"]["accepted_cipher_suites"]
            .as_array()
            .unwrap_or_else(|| panic!("no {k} in the scan: {scan}"))
            .iter()
            .map(|c| c["cipher_suite"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    for old in [
        "ssl_3_0_cipher_suites",
        "tls_1_0_cipher_suites",
        "tls_1_1_cipher_suites",
    ] {
        assert!(accepted(old).is_empty(), "{old}: {:?}", accepted(old));
    }
    let tls12 = accepted("tls_1_2_cipher_suites");
    assert!(!tls12.is_empty());
    for suite in &tls12 {
        assert!(
            suite.starts_with("TLS_ECDHE_")
                && (suite.contains("_GCM_") || suite.contains("CHACHA20")),
            "TLS 1.2 suite {suite} is not ECDHE with AEAD"
        );
    }
    assert!(!accepted("tls_1_3_cipher_suites").is_empty());
    g.stop();
}
