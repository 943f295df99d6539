//! The seal through the real binary and CLI: the file seal sealed and unsealed on request,
//! the passphrase seal (sealed on every start but the first), and the PKCS#11 seal against
//! SoftHSM2. The passphrase and the PIN never appear in the server's output or its files.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::{fails, leaks, ok, read_all, stderr, Gantry};

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A CLI command with no token at all (none in env, no profile).
fn anonymous(g: &Gantry, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    g.cli_with(args, &[], stdin)
}

fn seal_status(g: &Gantry) -> Value {
    json(&ok(anonymous(g, &["seal-status", "-o", "json"], None)))
}

fn put_secret(g: &Gantry, value: &str) {
    ok(g.cli(&["tenant", "create", "acme"]));
    ok(g.cli(&["env", "create", "acme/staging", "--kind", "staging"]));
    let token = format!("@{}", g.data.join("admin.token").display());
    ok(g.cli_with(
        &["secret", "put", "acme/staging/db"],
        &[("GANTRY_TOKEN", &token)],
        Some(value),
    ));
    assert_eq!(ok(g.cli(&["secret", "get", "acme/staging/db"])), value);
}

/// While sealed: the status says so, everything else is refused with exit 10 `sealed`.
fn assert_sealed(g: &Gantry, kind: &str) {
    let st = seal_status(g);
    assert_eq!(st["sealed"], true, "{st}");
    assert_eq!(st["seal"], kind);
    let table = ok(anonymous(g, &["seal-status"], None));
    assert!(table.contains("sealed  yes"), "{table}");
    for args in [
        vec!["whoami"],
        vec!["secret", "get", "acme/staging/db"],
        vec!["secret", "list", "acme/staging"],
        vec!["key", "list", "acme/staging"],
        vec!["audit", "verify"],
    ] {
        let err = fails(g.cli(&args), 10);
        assert!(err.contains("sealed"), "{args:?}: {err}");
    }
}

#[test]
fn file_seal_seals_and_unseals_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), None);
    let st = seal_status(&g);
    assert_eq!(
        (st["sealed"].clone(), st["seal"].clone()),
        (false.into(), "file".into())
    );
    put_secret(&g, "file-sealed value");
    // Only a platform admin seals.
    ok(g.cli(&["account", "create", "acme/ops"]));
    ok(g.cli(&["role", "grant", "admin", "--to", "acme/ops", "--on", "acme"]));
    let t = json(&ok(g.cli(&[
        "token",
        "create",
        "--account",
        "acme/ops",
        "-o",
        "json",
    ])));
    fails(g.cli_as(t["token"].as_str().unwrap(), &["seal"]), 5);
    assert_eq!(
        ok(anonymous(&g, &["unseal"], None)).trim(),
        "not sealed (file seal): nothing to do"
    );

    let out = ok(g.cli(&["seal"]));
    assert!(out.starts_with("sealed"), "{out}");
    assert_sealed(&g, "file");
    // The file seal re-reads its key file: nothing is read from stdin.
    let st = json(&ok(anonymous(&g, &["unseal", "-o", "json"], None)));
    assert_eq!(st["sealed"], false);
    assert_eq!(
        ok(g.cli(&["secret", "get", "acme/staging/db"])),
        "file-sealed value"
    );
    g.stop();
}

const PASSPHRASE: &str = "correct horse battery staple 7f3a";

#[test]
fn passphrase_seal_starts_sealed_and_unseals_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--seal", "passphrase"];
    // The first start sets the passphrase and is unsealed.
    let g = Gantry::start_with(
        &data,
        None,
        &args,
        &[("GANTRY_SEAL_PASSPHRASE", PASSPHRASE)],
    );
    let st = seal_status(&g);
    assert_eq!(st["sealed"], false, "{st}");
    assert_eq!(st["seal"], "passphrase");
    put_secret(&g, "behind a passphrase");
    let mut logs = vec![g.stop_and_log()];

    // Without a passphrase, it starts sealed.
    let g = Gantry::start_with(&data, None, &args, &[]);
    assert_sealed(&g, "passphrase");
    // A wrong passphrase is refused (exit 4) and the server stays sealed.
    let err = fails(
        anonymous(&g, &["unseal"], Some("wrong horse battery staple\n")),
        4,
    );
    assert!(!err.contains("wrong horse"), "{err}");
    assert_eq!(seal_status(&g)["sealed"], true);
    // No passphrase at all: a usage error, nothing sent.
    let err = fails(anonymous(&g, &["unseal"], Some("")), 2);
    assert!(err.contains("no passphrase"), "{err}");
    fails(anonymous(&g, &["unseal"], None), 2);
    // The right one, as the first line of stdin (the rest is ignored).
    let out = ok(anonymous(
        &g,
        &["unseal"],
        Some(&format!("{PASSPHRASE}\nignored second line\n")),
    ));
    assert_eq!(out.trim(), "unsealed (passphrase seal)");
    assert_eq!(seal_status(&g)["sealed"], false);
    assert_eq!(
        ok(g.cli(&["secret", "get", "acme/staging/db"])),
        "behind a passphrase"
    );

    // Sealed again on request, unsealed from GANTRY_UNSEAL_SECRET (a CRLF line works too).
    ok(g.cli(&["seal"]));
    assert_sealed(&g, "passphrase");
    let o = g.cli_with(
        &["unseal", "-o", "json"],
        &[("GANTRY_UNSEAL_SECRET", PASSPHRASE)],
        None,
    );
    assert_eq!(json(&ok(o))["sealed"], false);
    ok(g.cli(&["seal"]));
    ok(anonymous(
        &g,
        &["unseal"],
        Some(&format!("{PASSPHRASE}\r\n")),
    ));
    assert_eq!(
        ok(g.cli(&["secret", "get", "acme/staging/db"])),
        "behind a passphrase"
    );

    // Every attempt is audited, the wrong one as failed.
    let ev = json(&ok(
        g.cli(&["audit", "list", "--action", "seal.*", "-o", "json"])
    ));
    let outcomes: Vec<(String, String)> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let count = |a: &str, o: &str| outcomes.iter().filter(|x| x.0 == a && x.1 == o).count();
    assert_eq!(count("seal.unseal", "failed"), 1, "{outcomes:?}");
    assert_eq!(count("seal.unseal", "success"), 3, "{outcomes:?}");
    assert_eq!(count("seal.seal", "success"), 2, "{outcomes:?}");
    let audit = ok(g.cli(&["audit", "list", "--limit", "1000", "-o", "json"]));
    logs.push(g.stop_and_log());

    // The passphrase is nowhere: not in the server's output, its files or the audit trail.
    assert_no_secret(
        &data,
        &logs,
        &audit,
        &[PASSPHRASE.as_bytes(), b"wrong horse battery staple"],
    );
}

fn assert_no_secret(data: &Path, logs: &[String], audit: &str, secrets: &[&[u8]]) {
    let mut blobs = read_all(data);
    assert!(blobs.iter().any(|(n, _)| n.ends_with("gantry.db")));
    for (i, l) in logs.iter().enumerate() {
        assert!(l.contains("gantry is ready"), "{l}");
        blobs.push((format!("server output #{i}"), l.clone().into_bytes()));
    }
    blobs.push(("audit trail".into(), audit.as_bytes().to_vec()));
    let hits = leaks(&blobs, secrets);
    assert!(hits.is_empty(), "secret found: {hits:?}");
}

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "1234-5678";

/// A fresh SoftHSM2 token labelled `gantry` in `dir`; returns its config file.
fn softhsm_token(dir: &Path) -> String {
    let conf = dir.join("softhsm2.conf");
    let tokens = dir.join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "gantry",
            "--pin",
            PIN,
            "--so-pin",
            "8765-4321",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util is installed");
    assert!(out.status.success(), "{}", stderr(&out));
    conf.display().to_string()
}

#[test]
fn pkcs11_seal_with_softhsm() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = tempfile::tempdir().unwrap();
    let conf = softhsm_token(hsm.path());
    let data = dir.path().join("data");
    let args = [
        "--seal",
        "pkcs11",
        "--pkcs11-module",
        MODULE,
        "--pkcs11-token",
        "gantry",
    ];
    // With the PIN in its env, it creates the root key in the token and starts unsealed.
    let g = Gantry::start_with(
        &data,
        None,
        &args,
        &[("SOFTHSM2_CONF", &conf), ("GANTRY_PKCS11_PIN", PIN)],
    );
    let st = seal_status(&g);
    assert_eq!(st["sealed"], false, "{st}");
    assert_eq!(st["seal"], "pkcs11");
    put_secret(&g, "behind an HSM");
    let mut logs = vec![g.stop_and_log()];

    // Without the PIN: sealed.
    let g = Gantry::start_with(&data, None, &args, &[("SOFTHSM2_CONF", &conf)]);
    assert_sealed(&g, "pkcs11");
    fails(anonymous(&g, &["unseal"], Some("0000-0000\n")), 4);
    assert_eq!(seal_status(&g)["sealed"], true);
    let err = fails(anonymous(&g, &["unseal"], None), 2);
    assert!(err.contains("no HSM PIN"), "{err}");
    let out = ok(anonymous(&g, &["unseal"], Some(&format!("{PIN}\n"))));
    assert_eq!(out.trim(), "unsealed (pkcs11 seal)");
    assert_eq!(
        ok(g.cli(&["secret", "get", "acme/staging/db"])),
        "behind an HSM"
    );
    let audit = ok(g.cli(&["audit", "list", "--limit", "1000", "-o", "json"]));
    logs.push(g.stop_and_log());
    assert_no_secret(&data, &logs, &audit, &[PIN.as_bytes()]);
}
