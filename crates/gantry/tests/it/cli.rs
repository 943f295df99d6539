//! The CLI end to end against a real `gantry up`: the README's quick start, JSON output,
//! exit codes and one-line reasons for bad input, an address refused after repeated failed
//! authentications, login profiles, and `audit verify` catching tampering done directly in
//! the store.

use serde_json::Value;

use crate::harness::{fails, ok, pg_database, stderr, stdout, Gantry};

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn quick_start(g: &Gantry) {
    ok(g.cli(&["tenant", "create", "acme"]));
    ok(g.cli(&["env", "create", "acme/staging", "--kind", "staging"]));
    ok(g.cli(&["env", "create", "acme/production", "--kind", "production"]));
    ok(g.cli(&[
        "account",
        "create",
        "acme/ci-bot",
        "--description",
        "CI pipeline",
    ]));
    ok(g.cli(&[
        "role",
        "grant",
        "developer",
        "--to",
        "acme/ci-bot",
        "--on",
        "acme/staging",
    ]));
    let tok = json(&ok(g.cli(&[
        "token",
        "create",
        "--account",
        "acme/ci-bot",
        "--ttl",
        "30d",
        "-o",
        "json",
    ])));
    let secret = tok["token"].as_str().unwrap().to_string();

    // The developer sees its environment, and nothing else of the tenant.
    let envs = json(&ok(
        g.cli_as(&secret, &["env", "list", "acme", "-o", "json"])
    ));
    assert_eq!(envs["items"].as_array().unwrap().len(), 1);
    let err = fails(g.cli_as(&secret, &["env", "show", "acme/production"]), 5);
    assert!(err.contains("permission denied"), "{err}");
    fails(
        g.cli_as(
            &secret,
            &[
                "role",
                "grant",
                "developer",
                "--to",
                "acme/ci-bot",
                "--on",
                "acme/production",
            ],
        ),
        5,
    );
    fails(g.cli_as(&secret, &["tenant", "create", "globex"]), 5);

    // Tables for people, JSON for scripts.
    let table = ok(g.cli(&["env", "list", "acme"]));
    assert!(table.starts_with("ENVIRONMENT"), "{table}");
    assert!(table.contains("acme/production") && table.contains("acme/staging"));
    let tenants = json(&ok(g.cli(&["tenant", "list", "-o", "json"])));
    assert_eq!(tenants["items"][0]["name"], "acme");
    let st = json(&ok(g.cli(&["status", "-o", "json"])));
    assert_eq!(st["counts"]["environments"], 2);
    let roles = json(&ok(g.cli(&["role", "list", "--on", "acme", "-o", "json"])));
    assert_eq!(roles["items"].as_array().unwrap().len(), 1);
    let toks = json(&ok(g.cli(&[
        "token",
        "list",
        "--account",
        "acme/ci-bot",
        "-o",
        "json",
    ])));
    assert_eq!(toks["items"].as_array().unwrap().len(), 1);
    assert!(
        !toks.to_string().contains(&secret),
        "token list must not show secrets"
    );

    // Deleting what still holds resources is refused with the reason.
    let err = fails(g.cli(&["tenant", "delete", "acme"]), 7);
    assert!(err.contains("still holds"), "{err}");

    // Revoked tokens stop working.
    let id = tok["id"].as_str().unwrap();
    ok(g.cli(&["token", "revoke", id]));
    fails(g.cli_as(&secret, &["whoami"]), 4);

    // The audit trail has it all, filters work, and the chain verifies.
    let ev = json(&ok(g.cli(&[
        "audit",
        "list",
        "--tenant",
        "acme",
        "--action",
        "environment.*",
        "-o",
        "json",
    ])));
    assert!(ev["items"].as_array().unwrap().len() >= 3, "{ev}");
    let denied = json(&ok(g.cli(&[
        "audit",
        "list",
        "--principal",
        "acme/ci-bot",
        "--since",
        "1h",
        "-o",
        "json",
    ])));
    assert!(denied["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["outcome"] == "denied"));
    assert_eq!(denied["items"].as_array().unwrap().len(), 3);
    let out = ok(g.cli(&["audit", "verify"]));
    assert!(out.starts_with("chain intact: "), "{out}");
}

#[test]
fn quick_start_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), None);
    assert!(
        g.first_token
            .as_deref()
            .is_some_and(|t| t.starts_with("gty_")),
        "token printed once on first start"
    );
    quick_start(&g);
    g.stop();
    // A restart does not print a new token, and everything is still there.
    let g = Gantry::start(&dir.path().join("data"), None);
    assert!(g.first_token.is_none());
    assert!(ok(g.cli(&["env", "list", "acme"])).contains("acme/staging"));
    g.stop();
}

#[test]
fn quick_start_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), Some(pg_database()));
    quick_start(&g);
    let st = json(&ok(g.cli(&["status", "-o", "json"])));
    assert!(st["store"].as_str().unwrap().starts_with("postgres"));
    g.stop();
}

#[test]
fn bad_input_gets_an_exit_code_and_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), None);
    ok(g.cli(&["tenant", "create", "acme"]));
    // Invalid names, kinds, scopes, roles and durations: exit 3 or 2, before any request.
    let err = fails(g.cli(&["tenant", "create", "ACME"]), 3);
    assert!(err.contains("invalid name"), "{err}");
    fails(g.cli(&["env", "create", "acme", "--kind", "staging"]), 2);
    fails(g.cli(&["env", "create", "acme/qa", "--kind", "prod"]), 3);
    fails(
        g.cli(&["role", "grant", "root", "--to", "admin", "--on", "platform"]),
        3,
    );
    fails(
        g.cli(&["role", "grant", "viewer", "--to", "admin", "--on", "a/b/c"]),
        3,
    );
    fails(
        g.cli(&["token", "create", "--account", "admin", "--ttl", "forever"]),
        2,
    );
    let err = fails(
        g.cli(&["token", "create", "--account", "admin", "--ttl", "400d"]),
        3,
    );
    assert!(err.contains("ttl"), "{err}");
    // Server-side refusals keep their codes.
    fails(g.cli(&["tenant", "create", "acme"]), 7);
    fails(g.cli(&["tenant", "show", "nope"]), 6);
    fails(g.cli(&["env", "create", "nope/qa", "--kind", "staging"]), 6);
    // Authentication and connection problems.
    fails(g.cli_as("gty_0000", &["whoami"]), 4);
    fails(g.cli_as("@/nonexistent/token", &["whoami"]), 2);
    let o = g.cli_with(
        &["whoami"],
        &[
            ("GANTRY_TOKEN", "x"),
            ("GANTRY_SERVER", "https://127.0.0.1:1"),
        ],
        None,
    );
    let err = fails(o, 11);
    assert!(err.contains("cannot reach"), "{err}");
    fails(
        g.cli_with(
            &["whoami"],
            &[
                ("GANTRY_TOKEN", "x"),
                ("GANTRY_SERVER", "http://127.0.0.1:1"),
            ],
            None,
        ),
        2,
    );
    fails(
        g.cli_with(
            &["whoami"],
            &[("GANTRY_TOKEN", "x"), ("GANTRY_CA", "/nonexistent.pem")],
            None,
        ),
        2,
    );
    // A CA that did not sign the server's certificate is a connection failure, not a bypass.
    let other = tempfile::tempdir().unwrap();
    tls::InternalCa::load_or_create(other.path()).unwrap();
    let other_ca = other.path().join("ca.pem");
    let o = g.cli_with(
        &["whoami"],
        &[
            ("GANTRY_TOKEN", "x"),
            ("GANTRY_CA", other_ca.to_str().unwrap()),
        ],
        None,
    );
    fails(o, 11);
    // Unknown commands and flags: clap's usage error, exit 2.
    let o = g.cli(&["tenant", "explode"]);
    assert_eq!(o.status.code(), Some(2));
    // The token never appears in any error output.
    let token = std::fs::read_to_string(g.data.join("admin.token")).unwrap();
    let o = g.cli(&["tenant", "show", "BAD"]);
    assert!(!stderr(&o).contains(token.trim()) && !stdout(&o).contains(token.trim()));
    g.stop();
}

#[test]
fn failed_authentications_block_the_address_with_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), None);
    // Twenty failures are refused one by one (exit 4, unauthenticated)...
    for _ in 0..20 {
        fails(g.cli_as("gty_0000", &["whoami"]), 4);
    }
    // ... then the address is refused (exit 9, rate_limited), a good token included.
    for _ in 0..5 {
        fails(g.cli_as("gty_0000", &["whoami"]), 9);
    }
    fails(g.cli(&["whoami"]), 9);
    // One warning says so; the refused requests do not each add one.
    let log = g.stop_and_log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("too many failed authentications"))
        .count();
    assert_eq!(warnings, 1, "{log}");
}

#[test]
fn login_saves_a_private_profile_and_env_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), None);
    let token_file = format!("@{}", g.data.join("admin.token").display());
    let ca = g.data.join("ca.pem");
    let out = ok(g.cli_with(
        &[
            "login",
            "--server",
            &g.api,
            "--token",
            &token_file,
            "--ca",
            ca.to_str().unwrap(),
        ],
        &[],
        None,
    ));
    assert!(out.contains("as admin"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&g.config).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // With the profile alone (no env), commands work.
    let mut cmd = std::process::Command::new(crate::harness::BIN);
    let o = cmd
        .args(["whoami", "-o", "json"])
        .env("GANTRY_CONFIG", &g.config)
        .env_remove("GANTRY_SERVER")
        .env_remove("GANTRY_TOKEN")
        .env_remove("GANTRY_CA")
        .output()
        .unwrap();
    assert_eq!(json(&ok(o))["principal"], "admin");
    // Env overrides the profile.
    fails(
        g.cli_with(&["whoami"], &[("GANTRY_TOKEN", "gty_bad")], None),
        4,
    );
    // A bad login is not saved.
    let before = std::fs::read(&g.config).unwrap();
    fails(g.cli_with(&["login", "--token", "gty_bad"], &[], None), 4);
    assert_eq!(std::fs::read(&g.config).unwrap(), before);
    g.stop();
}

/// Runs raw SQL on the stopped installation's SQLite store.
fn sqlite_exec(data: &std::path::Path, sql: &str) {
    let url = format!("sqlite://{}", data.join("gantry.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    });
}

#[test]
fn audit_verify_names_the_tampered_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let g = Gantry::start(&data, None);
    for t in ["a1", "a2", "a3", "a4", "a5", "a6"] {
        ok(g.cli(&["tenant", "create", t]));
    }
    assert_eq!(
        ok(g.cli(&["audit", "verify"])).trim(),
        "chain intact: 8 events"
    );
    g.stop();
    // Altered: an event's principal rewritten.
    sqlite_exec(
        &data,
        "UPDATE audit_events SET principal = 'mallory' WHERE seq = 3",
    );
    let g = Gantry::start(&data, None);
    let err = fails(g.cli(&["audit", "verify"]), 12);
    assert!(err.contains("event 3") && err.contains("altered"), "{err}");
    let report = json(&stdout(&g.cli(&["audit", "verify", "-o", "json"])));
    assert_eq!(report["first_bad_seq"], 3);
    g.stop();
    // Removed: restore nothing, delete event 5 as well; the first problem is still reported first.
    sqlite_exec(
        &data,
        "UPDATE audit_events SET principal = 'admin' WHERE seq = 3",
    );
    sqlite_exec(&data, "DELETE FROM audit_events WHERE seq = 5");
    let g = Gantry::start(&data, None);
    let err = fails(g.cli(&["audit", "verify"]), 12);
    assert!(err.contains("event 5") && err.contains("removed"), "{err}");
    g.stop();
}

/// The CPUs a `/proc/.../status` file allows (`Cpus_allowed_list`, e.g. `0-1,3`).
fn cpus_allowed(status: &std::path::Path) -> Vec<usize> {
    let text = std::fs::read_to_string(status).unwrap_or_default();
    let list = text
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_default()
        .trim()
        .to_string();
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// Each edge worker thread's number and allowed CPUs.
fn edge_workers(pid: u32) -> Vec<(usize, Vec<usize>)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if let Some(i) = comm.trim().strip_prefix("gantry-edge-") {
            out.push((i.parse().unwrap(), cpus_allowed(&path.join("status"))));
        }
    }
    out
}

#[cfg(target_os = "linux")]
#[test]
fn the_number_of_edge_workers_is_a_setting() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start_with(
        &dir.path().join("a"),
        None,
        &["--edge-workers", "3", "--edge-cpu-affinity", "auto"],
        &[],
    );
    let allowed = cpus_allowed(&std::path::PathBuf::from(format!(
        "/proc/{}/status",
        g.child.id()
    )));
    let workers = edge_workers(g.child.id());
    // HTTPS, HTTP and internal listeners, three workers each, numbered 0-2 and pinned
    // round the allowed CPUs.
    assert_eq!(workers.len(), 9, "{workers:?}");
    for (i, cpus) in &workers {
        assert!(*i < 3, "{workers:?}");
        assert_eq!(*cpus, vec![allowed[i % allowed.len()]], "{workers:?}");
    }
    // And the edge serves with them (a host without a route: 404 from the edge itself).
    let http = g.edge_http.as_str();
    for _ in 0..6 {
        let mut s = std::net::TcpStream::connect(http).unwrap();
        std::io::Write::write_all(
            &mut s,
            b"GET / HTTP/1.1\r\nhost: nobody.test\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    }
    g.stop();

    // Out of range or not a number: refused with the flag's name, before anything starts.
    for bad in ["0", "257", "many", "-1"] {
        let data = dir.path().join(format!("bad-{bad}"));
        let out = std::process::Command::new(crate::harness::BIN)
            .args(["up", "--data", &data.display().to_string()])
            .arg(format!("--edge-workers={bad}"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            stderr(&out).contains("--edge-workers"),
            "{bad}: {}",
            stderr(&out)
        );
        assert!(!data.exists(), "{bad}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn edge_workers_are_pinned_one_per_cpu_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    // By default the scheduler places them: every worker may run on every allowed CPU.
    let g = Gantry::start(&dir.path().join("a"), None);
    let allowed = cpus_allowed(&std::path::PathBuf::from(format!(
        "/proc/{}/status",
        g.child.id()
    )));
    assert!(!allowed.is_empty());
    let workers = edge_workers(g.child.id());
    // HTTPS, HTTP and internal listeners, one worker per allowed CPU each.
    assert_eq!(workers.len(), 3 * allowed.len(), "{workers:?}");
    assert!(
        workers.iter().all(|(_, cpus)| *cpus == allowed),
        "{workers:?}"
    );
    g.stop();

    let g = Gantry::start_with(
        &dir.path().join("b"),
        None,
        &["--edge-cpu-affinity", "auto"],
        &[],
    );
    let workers = edge_workers(g.child.id());
    assert_eq!(workers.len(), 3 * allowed.len(), "{workers:?}");
    for (i, cpus) in &workers {
        assert_eq!(
            *cpus,
            vec![allowed[i % allowed.len()]],
            "worker {i}: {workers:?}"
        );
    }
    g.stop();

    // A value it does not know is refused with the flag's name, before anything starts.
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["up", "--edge-cpu-affinity", "sometimes"])
        .args(["--data", &dir.path().join("c").display().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--edge-cpu-affinity"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("c").exists());
}
