//! Keys and secrets through the real CLI: KMS encrypt/decrypt with contexts, rotation,
//! disabling; secrets with versions, check-and-set, delete/restore/destroy, roles and the
//! audit trail of every read; a scan of everything the server wrote (SQLite files, the
//! PostgreSQL dump, logs) for plaintext; and bad input.

use serde_json::Value;

use crate::harness::{fails, leaks, ok, pg_database, read_all, stderr, stdout, Gantry};

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Tenant `acme` with environment `acme/staging`.
fn setup(g: &Gantry) {
    ok(g.cli(&["tenant", "create", "acme"]));
    ok(g.cli(&["env", "create", "acme/staging", "--kind", "staging"]));
}

/// Runs a CLI command as the admin with `stdin`.
fn admin_in(g: &Gantry, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let token = format!("@{}", g.data.join("admin.token").display());
    g.cli_bytes(args, &[("GANTRY_TOKEN", &token)], Some(stdin))
}

/// A token for a new service account `acme/NAME` with `role` on acme/staging.
fn token_for(g: &Gantry, name: &str, role: &str) -> String {
    let account = format!("acme/{name}");
    ok(g.cli(&["account", "create", &account]));
    ok(g.cli(&[
        "role",
        "grant",
        role,
        "--to",
        &account,
        "--on",
        "acme/staging",
    ]));
    let t = json(&ok(g.cli(&[
        "token",
        "create",
        "--account",
        &account,
        "-o",
        "json",
    ])));
    t["token"].as_str().unwrap().to_string()
}

fn kms_flow(g: &Gantry) {
    const K: &str = "acme/staging/app-key";
    let k = json(&ok(g.cli(&[
        "key",
        "create",
        K,
        "--rotation-days",
        "90",
        "--description",
        "app data",
        "-o",
        "json",
    ])));
    assert_eq!(k["name"], K);
    assert_eq!(k["state"], "enabled");
    assert_eq!(k["current_version"], 1);
    assert_eq!(k["rotation_days"], 90);
    let table = ok(g.cli(&["key", "list", "acme/staging"]));
    assert!(table.starts_with("KEY") && table.contains(K), "{table}");
    let l = json(&ok(g.cli(&["key", "list", "acme/staging", "-o", "json"])));
    assert_eq!(l["items"].as_array().unwrap().len(), 1);

    // Encrypt from stdin with a context; the ciphertext is one base64 line.
    let out = ok(admin_in(
        g,
        &["key", "encrypt", K, "--context", "app=billing"],
        b"hello kms",
    ));
    assert!(
        out.ends_with('\n') && out.trim().lines().count() == 1,
        "{out}"
    );
    let ct1 = out.trim().to_string();
    let pt = g.cli(&["key", "decrypt", K, &ct1, "--context", "app=billing"]);
    assert_eq!(ok(pt), "hello kms");
    // The ciphertext can come from stdin too.
    let pt = admin_in(
        g,
        &["key", "decrypt", K, "-", "--context", "app=billing"],
        format!("{ct1}\n").as_bytes(),
    );
    assert_eq!(ok(pt), "hello kms");
    // A wrong or missing context does not decrypt: exit 3, one line.
    let err = fails(
        g.cli(&["key", "decrypt", K, &ct1, "--context", "app=payroll"]),
        3,
    );
    assert!(!err.contains("hello kms"), "{err}");
    fails(g.cli(&["key", "decrypt", K, &ct1]), 3);
    // Another key does not decrypt it either.
    ok(g.cli(&["key", "create", "acme/staging/other-key"]));
    fails(
        g.cli(&[
            "key",
            "decrypt",
            "acme/staging/other-key",
            &ct1,
            "--context",
            "app=billing",
        ]),
        3,
    );

    // Rotation: a new version is current, the old ciphertext still decrypts.
    let k = json(&ok(g.cli(&["key", "rotate", K, "-o", "json"])));
    assert_eq!(k["current_version"], 2);
    let pt = g.cli(&["key", "decrypt", K, &ct1, "--context", "app=billing"]);
    assert_eq!(ok(pt), "hello kms");
    let c2 = json(&ok(admin_in(
        g,
        &["key", "encrypt", K, "-o", "json"],
        b"second",
    )));
    assert_eq!(c2["key_version"], 2);
    let ct2 = c2["ciphertext"].as_str().unwrap();
    let d = json(&ok(g.cli(&["key", "decrypt", K, ct2, "-o", "json"])));
    assert_eq!(d["plaintext_b64"], crate::harness::b64(b"second"));
    assert_eq!(d["key_version"], 2);

    // Rewrap: one ciphertext per line in, one per line out, blank lines kept.
    let input = format!("{ct1}\n\n{ct1}\n");
    let out = ok(admin_in(
        g,
        &["key", "rewrap", K, "--context", "app=billing"],
        input.as_bytes(),
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[1].is_empty());
    for l in [lines[0], lines[2]] {
        assert_ne!(l, ct1);
        let d = json(&ok(g.cli(&[
            "key",
            "decrypt",
            K,
            l,
            "--context",
            "app=billing",
            "-o",
            "json",
        ])));
        assert_eq!(d["key_version"], 2);
        assert_eq!(d["plaintext_b64"], crate::harness::b64(b"hello kms"));
    }
    // A bad line names its number.
    let err = fails(
        admin_in(g, &["key", "rewrap", K], format!("{ct1}\n").as_bytes()),
        3,
    );
    assert!(err.contains("line 1"), "{err}");

    // Data keys: the plaintext and its encrypted form agree.
    let dk = json(&ok(g.cli(&[
        "key",
        "generate-data-key",
        K,
        "--bytes",
        "16",
        "--context",
        "file=report.pdf",
        "-o",
        "json",
    ])));
    assert_eq!(dk["plaintext_b64"].as_str().unwrap().len(), 24, "{dk}");
    let d = json(&ok(g.cli(&[
        "key",
        "decrypt",
        K,
        dk["ciphertext"].as_str().unwrap(),
        "--context",
        "file=report.pdf",
        "-o",
        "json",
    ])));
    assert_eq!(d["plaintext_b64"], dk["plaintext_b64"]);

    // Retiring version 1: its ciphertexts are refused, the rewrapped ones still work.
    let k = json(&ok(g.cli(&[
        "key",
        "set",
        K,
        "--min-decrypt-version",
        "2",
        "--rotation-days",
        "30",
        "-o",
        "json",
    ])));
    assert_eq!(k["min_decrypt_version"], 2);
    assert_eq!(k["rotation_days"], 30);
    fails(
        g.cli(&["key", "decrypt", K, &ct1, "--context", "app=billing"]),
        7,
    );
    let pt = g.cli(&["key", "decrypt", K, lines[0], "--context", "app=billing"]);
    assert_eq!(ok(pt), "hello kms");

    // Disabled: every use is refused; enabled again: it works.
    let k = json(&ok(g.cli(&["key", "disable", K, "-o", "json"])));
    assert_eq!(k["state"], "disabled");
    let err = fails(admin_in(g, &["key", "encrypt", K], b"x"), 7);
    assert!(err.contains("disabled"), "{err}");
    fails(g.cli(&["key", "decrypt", K, ct2]), 7);
    ok(g.cli(&["key", "enable", K]));
    assert_eq!(ok(g.cli(&["key", "decrypt", K, ct2])), "second");

    // Deletion is scheduled, then cancelled: the key comes back disabled.
    let k = json(&ok(g.cli(&[
        "key",
        "schedule-deletion",
        K,
        "--days",
        "7",
        "-o",
        "json",
    ])));
    assert_eq!(k["state"], "pending_deletion");
    assert!(k["deletion_at"].is_string());
    fails(g.cli(&["key", "decrypt", K, ct2]), 7);
    let k = json(&ok(g.cli(&["key", "cancel-deletion", K, "-o", "json"])));
    assert_eq!(k["state"], "disabled");
    let k = json(&ok(g.cli(&["key", "show", K, "-o", "json"])));
    assert_eq!(k["state"], "disabled");
    assert_eq!(k["description"], "app data");
}

/// Returns how many values were read successfully (each must be audited).
fn secrets_flow(g: &Gantry, viewer: &str, developer: &str) -> usize {
    const S: &str = "acme/staging/db-password";
    let reads = std::cell::Cell::new(0);
    let get = |args: &[&str]| {
        let o = g.cli(args);
        if o.status.success() {
            reads.set(reads.get() + 1);
        }
        o
    };

    let s = json(&ok(admin_in(
        g,
        &[
            "secret",
            "put",
            S,
            "--description",
            "the database",
            "-o",
            "json",
        ],
        b"s3cret-v1",
    )));
    assert_eq!(s["name"], S);
    assert_eq!(s["current_version"], 1);
    assert_eq!(s["description"], "the database");
    // Written exactly, no newline added.
    assert_eq!(ok(get(&["secret", "get", S])), "s3cret-v1");
    ok(admin_in(g, &["secret", "put", S], b"s3cret-v2\n"));
    assert_eq!(ok(get(&["secret", "get", S])), "s3cret-v2\n");
    assert_eq!(ok(get(&["secret", "get", S, "--previous"])), "s3cret-v1");
    assert_eq!(
        ok(get(&["secret", "get", S, "--version", "1"])),
        "s3cret-v1"
    );
    let v = json(&ok(get(&["secret", "get", S, "-o", "json"])));
    assert_eq!(v["version"], 2);
    assert_eq!(v["content_type"], "text");
    assert_eq!(v["value"], "s3cret-v2\n");
    fails(get(&["secret", "get", S, "--version", "9"]), 6);

    // Check-and-set: a stale version is a conflict (exit 7); the right one goes through.
    let err = fails(
        admin_in(g, &["secret", "put", S, "--if-version", "1"], b"lost"),
        7,
    );
    assert!(!err.contains("lost"), "{err}");
    let s = json(&ok(admin_in(
        g,
        &["secret", "put", S, "--if-version", "2", "-o", "json"],
        b"s3cret-v3",
    )));
    assert_eq!(s["current_version"], 3);
    assert_eq!(s["previous_version"], 2);
    let err = fails(
        admin_in(
            g,
            &["secret", "put", "acme/staging/fresh", "--if-version", "1"],
            b"x",
        ),
        7,
    );
    assert!(err.contains("version 0"), "{err}");
    ok(admin_in(
        g,
        &["secret", "put", "acme/staging/fresh", "--if-version", "0"],
        b"x",
    ));
    fails(
        admin_in(
            g,
            &["secret", "put", "acme/staging/fresh", "--if-version", "0"],
            b"y",
        ),
        7,
    );

    // Versions and stages; metadata never carries the value.
    let vs = json(&ok(g.cli(&["secret", "versions", S, "-o", "json"])));
    let items = vs["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let stage = |n: u64| {
        items.iter().find(|i| i["version"] == n).unwrap()["stage"]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(stage(3).as_deref(), Some("current"));
    assert_eq!(stage(2).as_deref(), Some("previous"));
    assert_eq!(stage(1), None);
    assert_eq!(items[0]["content_type"], "text");
    let table = ok(g.cli(&["secret", "versions", S]));
    assert!(table.starts_with("VERSION"), "{table}");
    let show = ok(g.cli(&["secret", "show", S, "-o", "json"]));
    let list = ok(g.cli(&["secret", "list", "acme/staging", "-o", "json"]));
    for doc in [&show, &list, &vs.to_string(), &table] {
        assert!(!doc.contains("s3cret"), "{doc}");
    }
    assert_eq!(json(&list)["items"].as_array().unwrap().len(), 2);

    // JSON and binary values, from files; binary comes back byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let jf = dir.path().join("cfg.json");
    std::fs::write(&jf, br#"{"user":"app","password":"j-s3cret"}"#).unwrap();
    ok(g.cli(&[
        "secret",
        "put",
        "acme/staging/cfg",
        "--json",
        "--from-file",
        jf.to_str().unwrap(),
    ]));
    let v = json(&ok(get(&[
        "secret",
        "get",
        "acme/staging/cfg",
        "-o",
        "json",
    ])));
    assert_eq!(v["content_type"], "json");
    assert_eq!(
        ok(get(&["secret", "get", "acme/staging/cfg"])),
        r#"{"user":"app","password":"j-s3cret"}"#
    );
    let bin: Vec<u8> = (0..=255u8).rev().chain([0, 0, 10, 13]).collect();
    ok(admin_in(
        g,
        &["secret", "put", "acme/staging/tls-key", "--binary"],
        &bin,
    ));
    let o = get(&["secret", "get", "acme/staging/tls-key"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, bin);
    let v = json(&ok(get(&[
        "secret",
        "get",
        "acme/staging/tls-key",
        "-o",
        "json",
    ])));
    assert_eq!(v["content_type"], "binary");
    assert_eq!(v["value_b64"], crate::harness::b64(&bin));

    // Roles: a viewer lists and shows, but may not read a value (exit 5); a developer may.
    let listed = json(&ok(
        g.cli_as(viewer, &["secret", "list", "acme/staging", "-o", "json"])
    ));
    assert_eq!(listed["items"].as_array().unwrap().len(), 4);
    ok(g.cli_as(viewer, &["secret", "show", S]));
    let err = fails(g.cli_as(viewer, &["secret", "get", S]), 5);
    assert!(err.contains("permission denied"), "{err}");
    let o = g.cli_bytes(
        &["key", "encrypt", "acme/staging/app-key"],
        &[("GANTRY_TOKEN", viewer)],
        Some(b"x"),
    );
    fails(o, 5);
    let o = g.cli_as(developer, &["secret", "get", S]);
    assert_eq!(ok(o), "s3cret-v3");
    reads.set(reads.get() + 1);
    // Forcing a destruction is an admin's decision.
    fails(g.cli_as(developer, &["secret", "destroy", S, "--force"]), 5);

    // Rewrap re-encrypts the versions not under the secret key's current version: all
    // three are (the key has not rotated), so there is nothing to do.
    let r = json(&ok(g.cli(&["secret", "rewrap", S, "-o", "json"])));
    assert_eq!(r["rewrapped_versions"], 0);
    let out = ok(g.cli(&["secret", "rewrap", S]));
    assert_eq!(out.trim(), format!("secret {S}: 0 versions rewrapped"));
    assert_eq!(
        ok(get(&["secret", "get", S, "--version", "1"])),
        "s3cret-v1"
    );

    // Delete, restore, delete, destroy.
    let d = json(&ok(g.cli(&[
        "secret",
        "delete",
        S,
        "--recovery-days",
        "7",
        "-o",
        "json",
    ])));
    assert_eq!(d["state"], "deleted");
    assert!(d["purge_at"].is_string());
    let err = fails(get(&["secret", "get", S]), 7);
    assert!(err.contains("deleted"), "{err}");
    let table = ok(g.cli(&["secret", "list", "acme/staging"]));
    assert!(table.contains("deleted"), "{table}");
    let r = json(&ok(g.cli(&["secret", "restore", S, "-o", "json"])));
    assert_eq!(r["state"], "active");
    assert_eq!(ok(get(&["secret", "get", S])), "s3cret-v3");
    let out = ok(g.cli(&["secret", "delete", S]));
    assert!(out.contains("restore"), "{out}");
    // Inside the recovery window, only --force destroys.
    fails(g.cli(&["secret", "destroy", S]), 7);
    let out = ok(g.cli(&["secret", "destroy", S, "--force"]));
    assert_eq!(out.trim(), format!("secret {S} destroyed"));
    fails(g.cli(&["secret", "show", S]), 6);
    fails(get(&["secret", "get", S]), 6);

    // Secret requests: asked by a developer, listed, cancelled by the admin.
    let r = json(&ok(g.cli_as(
        developer,
        &[
            "secret",
            "request",
            "acme/staging/stripe-key",
            "--description",
            "for payments",
            "-o",
            "json",
        ],
    )));
    assert_eq!(r["secret"], "acme/staging/stripe-key");
    assert_eq!(r["state"], "open");
    let id = r["id"].as_str().unwrap().to_string();
    let l = json(&ok(g.cli(&[
        "secret",
        "requests",
        "acme/staging",
        "-o",
        "json",
    ])));
    assert_eq!(l["items"][0]["id"], id);
    assert!(ok(g.cli(&["secret", "requests", "acme/staging"])).contains(&id));
    fails(
        g.cli_as(
            developer,
            &["secret", "cancel-request", "acme/staging", &id],
        ),
        5,
    );
    let c = json(&ok(g.cli(&[
        "secret",
        "cancel-request",
        "acme/staging",
        &id,
        "-o",
        "json",
    ])));
    assert_eq!(c["state"], "cancelled");
    fails(g.cli(&["secret", "cancel-request", "acme/staging", &id]), 7);
    fails(
        g.cli(&["secret", "cancel-request", "acme/staging", "req_00000000"]),
        6,
    );
    reads.get()
}

/// The audit trail: one `secret.read-value` success per value read, the viewer's refusal,
/// and no value anywhere in it.
fn check_audit(g: &Gantry, reads: usize, values: &[&[u8]]) {
    let ev = json(&ok(g.cli(&[
        "audit",
        "list",
        "--action",
        "secret.read-value",
        "--limit",
        "1000",
        "-o",
        "json",
    ])));
    let read_values: Vec<&Value> = ev["items"].as_array().unwrap().iter().collect();
    assert!(read_values
        .iter()
        .all(|e| e["action"] == "secret.read-value"));
    let ok_reads = read_values
        .iter()
        .filter(|e| e["outcome"] == "success")
        .count();
    assert_eq!(ok_reads, reads, "{ev}");
    assert!(read_values
        .iter()
        .any(|e| e["outcome"] == "denied" && e["principal"] == "acme/viewer-bot"));
    for e in &read_values {
        assert_eq!(e["scope"], "acme/staging", "{e}");
        if e["outcome"] == "success" {
            let r = e["resource"].as_str().unwrap();
            assert!(r.starts_with("secrets/acme/staging/"), "{e}");
            assert!(e["detail"].as_str().unwrap().starts_with("version="), "{e}");
        }
    }
    let all = ok(g.cli(&["audit", "list", "--limit", "10000", "-o", "json"]));
    let blobs = vec![("audit".to_string(), all.into_bytes())];
    let hits = leaks(&blobs, values);
    assert!(hits.is_empty(), "values in the audit trail: {hits:?}");
    assert!(ok(g.cli(&["audit", "verify"])).starts_with("chain intact"));
}

#[test]
fn keys_and_secrets_quick_flow() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), None);
    setup(&g);
    let viewer = token_for(&g, "viewer-bot", "viewer");
    let developer = token_for(&g, "dev-bot", "developer");
    kms_flow(&g);
    let reads = secrets_flow(&g, &viewer, &developer);
    assert_eq!(reads, 12);
    check_audit(
        &g,
        reads,
        &[
            b"s3cret-v1",
            b"s3cret-v2",
            b"s3cret-v3",
            b"j-s3cret",
            b"hello kms",
            b"second",
        ],
    );
    g.stop();
}

/// Values that must never be stored, logged or dumped in the clear.
struct Plain {
    text: String,
    json_inner: String,
    binary: Vec<u8>,
    kms: String,
}

impl Plain {
    fn new() -> Plain {
        let u = uuid::Uuid::new_v4().simple().to_string();
        Plain {
            text: format!("text-secret-{u}"),
            json_inner: format!("json-secret-{u}"),
            // Not valid UTF-8, not compressible.
            binary: (0..48u8)
                .map(|i| i.wrapping_mul(37) ^ 0xA5)
                .chain(u.bytes())
                .collect(),
            kms: format!("kms-plaintext-{u}"),
        }
    }

    fn all(&self) -> Vec<&[u8]> {
        vec![
            self.text.as_bytes(),
            self.json_inner.as_bytes(),
            &self.binary,
            self.kms.as_bytes(),
        ]
    }

    /// Puts the values (several versions, a rewrap, a rotation) and reads them back.
    fn put_and_read(&self, g: &Gantry) -> Vec<u8> {
        setup(g);
        ok(admin_in(
            g,
            &["secret", "put", "acme/staging/text"],
            self.text.as_bytes(),
        ));
        ok(admin_in(
            g,
            &["secret", "put", "acme/staging/text"],
            format!("{}-v2", self.text).as_bytes(),
        ));
        let j = format!(r#"{{"password":"{}"}}"#, self.json_inner);
        ok(admin_in(
            g,
            &["secret", "put", "acme/staging/json", "--json"],
            j.as_bytes(),
        ));
        ok(admin_in(
            g,
            &["secret", "put", "acme/staging/bin", "--binary"],
            &self.binary,
        ));
        ok(g.cli(&["secret", "rewrap", "acme/staging/text"]));
        let o = g.cli(&["secret", "get", "acme/staging/text", "--previous"]);
        assert_eq!(ok(o), self.text);
        assert_eq!(ok(g.cli(&["secret", "get", "acme/staging/json"])), j);
        assert_eq!(
            g.cli(&["secret", "get", "acme/staging/bin"]).stdout,
            self.binary
        );
        ok(g.cli(&["key", "create", "acme/staging/k"]));
        let ct = ok(admin_in(
            g,
            &["key", "encrypt", "acme/staging/k", "--context", "a=b"],
            self.kms.as_bytes(),
        ));
        ok(g.cli(&["key", "rotate", "acme/staging/k"]));
        let o = g.cli(&[
            "key",
            "decrypt",
            "acme/staging/k",
            ct.trim(),
            "--context",
            "a=b",
        ]);
        assert_eq!(ok(o), self.kms);
        // A data key's plaintext is returned once and never kept.
        let dk = json(&ok(g.cli(&[
            "key",
            "generate-data-key",
            "acme/staging/k",
            "-o",
            "json",
        ])));
        let b64 = dk["plaintext_b64"].as_str().unwrap();
        assert_eq!(b64.len(), 44);
        decode_b64(b64)
    }
}

fn decode_b64(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        bits = (bits << 6) | A.iter().position(|a| *a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    assert_eq!(crate::harness::b64(&out), s);
    out
}

#[test]
fn no_plaintext_on_disk_or_in_logs_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let g = Gantry::start(&data, None);
    let p = Plain::new();
    let data_key = p.put_and_read(&g);
    let log = g.stop_and_log();
    let mut blobs = read_all(&data);
    let names: Vec<&str> = blobs.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.iter().any(|n| n.ends_with("gantry.db")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("seal.key")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("ca.pem")), "{names:?}");
    assert!(log.contains("gantry is ready"), "{log}");
    // The scan reads the real store: the secrets' names are in it.
    let db: Vec<u8> = blobs
        .iter()
        .filter(|(n, _)| n.contains("gantry.db"))
        .flat_map(|(_, b)| b.clone())
        .collect();
    assert!(
        db.windows(17).any(|w| w == b"acme/staging/text"),
        "the store holds no secret: {names:?}"
    );
    blobs.push(("server output".into(), log.into_bytes()));
    let mut secrets = p.all();
    secrets.push(&data_key);
    let hits = leaks(&blobs, &secrets);
    assert!(hits.is_empty(), "plaintext found: {hits:?}");
    // The scan does find what is there: the values are in the CLI's own output.
    let self_check = vec![("probe".to_string(), p.text.clone().into_bytes())];
    assert_eq!(leaks(&self_check, &secrets).len(), 1);
}

#[test]
fn no_plaintext_on_disk_or_in_logs_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let url = pg_database();
    let g = Gantry::start(&data, Some(url.clone()));
    let p = Plain::new();
    let data_key = p.put_and_read(&g);
    let log = g.stop_and_log();
    let dump = dir.path().join("dump.sql");
    let o = std::process::Command::new("/usr/lib/postgresql/15/bin/pg_dump")
        .arg("--dbname")
        .arg(&url)
        .arg("--file")
        .arg(&dump)
        .output()
        .expect("pg_dump");
    assert!(o.status.success(), "pg_dump: {}", stderr(&o));
    let dump_text = std::fs::read_to_string(&dump).unwrap();
    // The dump holds the store: the secret versions and the KMS key are in it, encrypted.
    assert!(dump_text.contains("secret_versions"), "{dump_text}");
    assert!(dump_text.contains("acme/staging"), "{dump_text}");
    let mut blobs = read_all(&data);
    blobs.push(("pg_dump".into(), dump_text.into_bytes()));
    blobs.push(("server output".into(), log.into_bytes()));
    let mut secrets = p.all();
    secrets.push(&data_key);
    let hits = leaks(&blobs, &secrets);
    assert!(hits.is_empty(), "plaintext found: {hits:?}");
}

#[test]
fn bad_input_on_keys_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), None);
    setup(&g);
    ok(g.cli(&["key", "create", "acme/staging/k"]));
    const S: &str = "acme/staging/s";

    // No value (stdin is /dev/null, or empty, or an empty file): refused, exit 3.
    let err = fails(g.cli(&["secret", "put", S]), 3);
    assert!(err.contains("empty secret value"), "{err}");
    fails(admin_in(&g, &["secret", "put", S], b""), 3);
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    fails(
        g.cli(&["secret", "put", S, "--from-file", empty.to_str().unwrap()]),
        3,
    );
    let err = fails(
        g.cli(&["secret", "put", S, "--from-file", "/nonexistent/file"]),
        2,
    );
    assert!(err.contains("/nonexistent/file"), "{err}");
    // A value is never taken from an argument.
    let o = g.cli(&["secret", "put", S, "hunter2-argument"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    fails(g.cli(&["secret", "show", S]), 6);

    // Over 64 KiB: refused before sending with the code the server answers (413, exit 8).
    let big = vec![b'a'; 64 * 1024 + 1];
    let err = fails(admin_in(&g, &["secret", "put", S], &big), 8);
    assert!(err.contains("larger than 65536 bytes"), "{err}");
    fails(g.cli(&["secret", "show", S]), 6);
    // Exactly 64 KiB works, as text and as binary.
    let edge = vec![b'a'; 64 * 1024];
    ok(admin_in(&g, &["secret", "put", S], &edge));
    assert_eq!(g.cli(&["secret", "get", S]).stdout, edge);
    let bin: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    ok(admin_in(&g, &["secret", "put", S, "--binary"], &bin));
    assert_eq!(g.cli(&["secret", "get", S]).stdout, bin);
    // A value within the limit whose JSON escapes (\u0001: six bytes each) make the request
    // body too large: 413, exit 8, and a message that says why and what to do.
    let escaped = vec![1u8; 60 * 1024];
    let err = fails(admin_in(&g, &["secret", "put", S], &escaped), 8);
    assert!(
        err.contains("too large to send") && err.contains("--binary"),
        "{err}"
    );
    ok(admin_in(&g, &["secret", "put", S, "--binary"], &escaped));
    assert_eq!(g.cli(&["secret", "get", S]).stdout, escaped);
    ok(admin_in(&g, &["secret", "put", S], &vec![b'b'; 1000]));

    // Wrong content: not UTF-8 as text, not JSON with --json.
    let err = fails(admin_in(&g, &["secret", "put", S], &[0xff, 0xfe]), 3);
    assert!(err.contains("--binary"), "{err}");
    let err = fails(
        admin_in(&g, &["secret", "put", S, "--json"], b"{not json"),
        3,
    );
    assert!(err.contains("JSON"), "{err}");
    let o = admin_in(&g, &["secret", "put", S, "--json", "--binary"], b"{}");
    assert_eq!(o.status.code(), Some(2));

    // Bad names and paths: exit 3, one line, before any request.
    for (args, want) in [
        (vec!["secret", "get", "ACME/staging/s"], "invalid name"),
        (vec!["secret", "get", "acme/staging"], "TENANT/ENV/NAME"),
        (vec!["secret", "get", "acme/staging/s/x"], "TENANT/ENV/NAME"),
        (
            vec!["secret", "show", "acme/staging/bad_name"],
            "invalid name",
        ),
        (vec!["secret", "list", "acme"], "TENANT/ENV"),
        (vec!["secret", "list", "acme/Staging"], "invalid name"),
        (vec!["key", "create", "acme/staging/-k"], "invalid name"),
        (vec!["key", "show", "acme//k"], "invalid name"),
        (vec!["key", "list", "a/b/c"], "TENANT/ENV"),
        (
            vec!["secret", "cancel-request", "acme/staging", "../../x"],
            "invalid request id",
        ),
    ] {
        let err = fails(g.cli(&args), 3);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let err = fails(admin_in(&g, &["secret", "put", "acme/staging/S"], b"v"), 3);
    assert!(err.contains("invalid name"), "{err}");
    // Unknown tenants and environments: the server's answer.
    fails(g.cli(&["secret", "list", "acme/prod"]), 6);
    fails(g.cli(&["key", "list", "nope/staging"]), 6);
    fails(g.cli(&["secret", "get", "acme/staging/nope"]), 6);

    // KMS: at most 4096 bytes of plaintext; none is an error too.
    let err = fails(
        admin_in(&g, &["key", "encrypt", "acme/staging/k"], &[b'x'; 4097]),
        3,
    );
    assert!(err.contains("4096"), "{err}");
    ok(admin_in(
        &g,
        &["key", "encrypt", "acme/staging/k"],
        &[b'x'; 4096],
    ));
    let err = fails(g.cli(&["key", "encrypt", "acme/staging/k"]), 3);
    assert!(err.contains("empty plaintext"), "{err}");
    // Contexts: KEY=VALUE, no duplicates, bounded.
    for ctx in ["novalue", "=v"] {
        fails(
            admin_in(
                &g,
                &["key", "encrypt", "acme/staging/k", "--context", ctx],
                b"x",
            ),
            3,
        );
    }
    fails(
        admin_in(
            &g,
            &[
                "key",
                "encrypt",
                "acme/staging/k",
                "--context",
                "a=1",
                "--context",
                "a=2",
            ],
            b"x",
        ),
        3,
    );
    let long = format!("a={}", "v".repeat(2000));
    fails(
        admin_in(
            &g,
            &["key", "encrypt", "acme/staging/k", "--context", &long],
            b"x",
        ),
        3,
    );
    fails(
        g.cli(&["key", "decrypt", "acme/staging/k", "not-a-ciphertext"]),
        3,
    );
    fails(
        admin_in(&g, &["key", "decrypt", "acme/staging/k", "-"], b"\n"),
        3,
    );
    let o = g.cli(&[
        "key",
        "generate-data-key",
        "acme/staging/k",
        "--bytes",
        "64",
    ]);
    assert_eq!(o.status.code(), Some(2));
    // Settings and deletion windows.
    fails(g.cli(&["key", "set", "acme/staging/k"]), 2);
    fails(
        g.cli(&["key", "set", "acme/staging/k", "--min-decrypt-version", "5"]),
        3,
    );
    fails(
        g.cli(&["key", "schedule-deletion", "acme/staging/k", "--days", "3"]),
        3,
    );
    fails(g.cli(&["key", "create", "acme/staging/k"]), 7);
    // Secrets: version and stage flags.
    let o = g.cli(&["secret", "get", S, "--version", "1", "--previous"]);
    assert_eq!(o.status.code(), Some(2));
    let err = fails(g.cli(&["secret", "get", S, "--version", "99"]), 6);
    assert!(err.contains("99"), "{err}");
    fails(g.cli(&["secret", "delete", S, "--recovery-days", "400"]), 3);
    // Nothing above leaked a value into an error.
    let o = admin_in(
        &g,
        &["secret", "put", S, "--if-version", "99"],
        b"hunter2-conflict",
    );
    let err = fails(o, 7);
    assert!(!err.contains("hunter2"), "{err}");
    assert!(
        !stdout(&g.cli(&["audit", "list", "-o", "json", "--limit", "1000"])).contains("hunter2")
    );
    g.stop();
}
