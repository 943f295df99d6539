//! Services end to end: `examples/customers-mngr` (a real HTTP service) built, pushed as
//! an artifact, deployed with a secret, routed by the edge; under a constant bounded load
//! through the edge, a new revision is rolled out, rolled back, scaled up and down, a
//! replica is killed with SIGKILL, and a revision whose health check fails is undone
//! automatically: not one request fails.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{ok, Gantry};

/// Builds the example service (bounded) and returns its binary.
fn build_example() -> PathBuf {
    let workspace = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("customers-mngr-example");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(workspace.join("examples/customers-mngr/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .spawn()
        .expect("cargo runs");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "building examples/customers-mngr failed");
            return target.join("debug/customers-mngr");
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("building examples/customers-mngr took more than 300 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether `pid` runs (a zombie waiting for its reaper does not).
fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A temp dir that tenant users can traverse (a fresh one is 0700), as a data dir's
/// parent must be for `--isolation auto` to choose tenant users.
fn tempdir_for_tenants() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

/// Whether this machine isolates replicas fully (root and bwrap): then `auto` must have
/// chosen the sandbox.
fn sandbox_expected() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let bwrap = std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !root || !bwrap {
        eprintln!("SKIP (isolation checks): not root or no bwrap");
    }
    root && bwrap
}

/// `Uid:` of /proc/PID/status: real, effective, saved, filesystem.
fn uids_of(pid: u64) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|u| u.parse().unwrap())
        .collect()
}

/// The processes of a replica's group that run in another mount namespace than ours
/// (the program in its sandbox).
fn sandboxed_members(pgid: u64) -> Vec<u64> {
    let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let pgrp = rest
            .split_whitespace()
            .nth(2)
            .and_then(|g| g.parse::<u64>().ok());
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
        if pgrp == Some(pgid) && ns.is_some_and(|n| n != ours) {
            out.push(pid);
        }
    }
    out
}

/// Every replica runs sandboxed as the tenant's own (non-root) uid, the same for all
/// replicas of the tenant; that uid cannot read the data dir's keys, store or token, and
/// the program's view of the machine has no data dir at all. Returns the uid.
fn assert_isolated(g: &Gantry, s: &serde_json::Value) -> Option<u64> {
    if !sandbox_expected() {
        return None;
    }
    let out = g.output();
    assert!(
        out.contains("\"isolation\":\"bubblewrap (tenant uids"),
        "the ready line names the isolation: {out}"
    );
    let reps = s["replicas"].as_array().unwrap();
    let uid = reps[0]["uid"].as_u64().expect("a replica has its own uid");
    assert_ne!(uid, 0);
    for r in reps {
        assert_eq!(r["isolation"], "bubblewrap", "{s}");
        assert_eq!(r["uid"].as_u64(), Some(uid), "one uid per tenant: {s}");
        let pid = r["pid"].as_u64().unwrap();
        assert!(
            uids_of(pid).iter().all(|&u| u64::from(u) == uid),
            "replica {pid} runs as {:?}, not {uid}",
            uids_of(pid)
        );
        let inside = sandboxed_members(pid);
        assert!(!inside.is_empty(), "no sandboxed process under {pid}");
        for p in inside {
            assert!(uids_of(p).iter().all(|&u| u64::from(u) == uid));
            let root = PathBuf::from(format!("/proc/{p}/root"));
            let seen = |x: &std::path::Path| root.join(x.strip_prefix("/").unwrap()).exists();
            assert!(
                !seen(&g.data.join("seal.key")),
                "the sandbox shows the key file"
            );
            assert!(
                !seen(&g.data.join("gantry.db")),
                "the sandbox shows the store"
            );
            assert!(seen(std::path::Path::new("/usr/bin")));
        }
    }
    // The tenant's uid, outside any sandbox, is refused the data dir's secrets.
    for f in [
        "seal.key",
        "gantry.db",
        "gantry.db-wal",
        "admin.token",
        "ca.key",
    ] {
        let path = g.data.join(f);
        if !path.exists() {
            continue;
        }
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new("cat")
            .arg(&path)
            .uid(uid as u32)
            .gid(uid as u32)
            .output()
            .unwrap();
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "tenant uid {uid} read {}",
            path.display()
        );
    }
    Some(uid)
}

/// acme/staging with the secret `db-password`, the example pushed as
/// `acme/customers-mngr@1.0.0`, and a route to service `customers`.
fn prepare(g: &Gantry, dir: &std::path::Path, bin: &std::path::Path, secret: &str) {
    ok(g.cli(&["tenant", "create", "acme"]));
    ok(g.cli(&["env", "create", "acme/staging", "--kind", "staging"]));
    ok(g.cli_with(
        &["secret", "put", "acme/staging/db-password"],
        &[(
            "GANTRY_TOKEN",
            &format!("@{}", g.data.join("admin.token").display()),
        )],
        Some(secret),
    ));
    let dist = dir.join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::copy(bin, dist.join("customers-mngr")).unwrap();
    ok(g.cli(&[
        "artifact",
        "push",
        "acme/customers-mngr@1.0.0",
        dist.to_str().unwrap(),
    ]));
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
}

fn status(g: &Gantry) -> serde_json::Value {
    serde_json::from_str(&ok(g.cli(&[
        "service",
        "status",
        "acme/staging/customers",
        "-o",
        "json",
    ])))
    .unwrap()
}

/// Waits (bounded) until the service's stable revision is `rev` with `n` healthy replicas
/// of it and no other replica.
fn until_stable(g: &Gantry, rev: u64, n: usize) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let s = status(g);
        let reps = s["replicas"].as_array().cloned().unwrap_or_default();
        let good = reps.len() == n
            && reps
                .iter()
                .all(|r| r["revision"] == rev && r["healthy"] == true);
        if s["stable_revision"] == rev && good {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "never stable on revision {rev} with {n} replicas: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn rollouts_rollbacks_and_failed_revisions_under_load_fail_nothing() {
    let bin = build_example();
    let dir = tempdir_for_tenants();
    let g = Gantry::start(&dir.path().join("data"), None);
    prepare(&g, dir.path(), &bin, "s3cr3t-db-pass");
    let deploy = |version: &str, health: &str| {
        g.cli(&[
            "service",
            "deploy",
            "acme/staging/customers",
            "--artifact",
            "customers-mngr@1.0.0",
            "--cmd",
            "./customers-mngr",
            "--replicas",
            "2",
            "--env",
            &format!("VERSION={version}"),
            "--secret",
            "DB_PASSWORD=db-password",
            "--health",
            health,
            "--health-deadline",
            "5s",
        ])
    };
    ok(deploy("v1", "/health"));
    let s1 = until_stable(&g, 1, 2);
    assert_isolated(&g, &s1);

    // The edge routes to it (it reads new registrations within its poll interval).
    let start = Instant::now();
    while crate::edge::get(&g.edge_http, "customers.acme.test", "/customers").0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the edge never routed to v1"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Constant load through the edge, bounded in count and time.
    let (okc, failed, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let edge = g.edge_http.clone();
    let mut load = Vec::new();
    for _ in 0..3 {
        let (okc, failed, stop, edge) = (okc.clone(), failed.clone(), stop.clone(), edge.clone());
        load.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let c = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let started = Instant::now();
                for _ in 0..200_000 {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(240)
                    {
                        break;
                    }
                    match c
                        .get(format!("http://{edge}/customers"))
                        .header("host", "customers.acme.test")
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 200 => okc.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!(
                                "failed request after {:?}: {:?}",
                                started.elapsed(),
                                other.map(|r| r.status())
                            );
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }));
    }
    // A new revision rolls out...
    ok(deploy("v2", "/health"));
    until_stable(&g, 2, 2);
    // ... is rolled back by hand ...
    ok(g.cli(&["service", "rollback", "acme/staging/customers", "--to", "1"]));
    until_stable(&g, 1, 2);
    // Scaled up and down, and a replica killed with SIGKILL (the runtime restarts it; the
    // edge retries around it): still no failed request.
    ok(g.cli(&["service", "scale", "acme/staging/customers", "3"]));
    let s3 = until_stable(&g, 1, 3);
    let victim = s3["replicas"][0]["pid"]
        .as_u64()
        .expect("a running replica has a pid");
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    let start = Instant::now();
    loop {
        let s = status(&g);
        let restarted = s["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["restarts"].as_u64().unwrap_or(0) > 0 && r["state"] == "running");
        if restarted {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the killed replica never came back: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(g.cli(&["service", "scale", "acme/staging/customers", "2"]));
    until_stable(&g, 1, 2);
    // ... and a revision that never becomes healthy is undone automatically.
    ok(deploy("v3", "/nope"));
    let start = Instant::now();
    loop {
        let s = status(&g);
        if s["target_revision"] == 1
            && s["message"]
                .as_str()
                .is_some_and(|m| m.contains("revision 3 did not become healthy"))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no automatic rollback: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    until_stable(&g, 1, 2);
    // A rollout in place (--max-surge 0 --max-unavailable 1): one old replica goes before
    // its replacement starts, never more than two run, and the other keeps serving.
    ok(g.cli(&[
        "service",
        "deploy",
        "acme/staging/customers",
        "--artifact",
        "customers-mngr@1.0.0",
        "--cmd",
        "./customers-mngr",
        "--replicas",
        "2",
        "--env",
        "VERSION=v4",
        "--secret",
        "DB_PASSWORD=db-password",
        "--max-surge",
        "0",
        "--max-unavailable",
        "1",
    ]));
    let start = Instant::now();
    loop {
        let s = status(&g);
        let reps = s["replicas"].as_array().unwrap();
        assert!(
            reps.len() <= 2,
            "more than 2 replicas in an in-place rollout: {s}"
        );
        if s["stable_revision"] == 4
            && reps.len() == 2
            && reps
                .iter()
                .all(|r| r["revision"] == 4 && r["healthy"] == true)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the in-place rollout never finished: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let (n, f) = (okc.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(n > 100, "the load ran ({n})");
    assert_eq!(f, 0, "{f} of {} requests failed", n + f);

    // History says who deployed what; revision 3 failed with its reason.
    let h: serde_json::Value = serde_json::from_str(&ok(g.cli(&[
        "service",
        "history",
        "acme/staging/customers",
        "-o",
        "json",
    ])))
    .unwrap();
    let revs = h["items"].as_array().unwrap();
    assert_eq!(revs.len(), 4);
    assert_eq!(revs[0]["status"], "active");
    assert_eq!(revs[1]["status"], "failed");
    assert_eq!(revs[1]["created_by"], "admin");
    // The secret's value is nowhere: not in the revision, the status, the logs or files.
    let logs = ok(g.cli(&["service", "logs", "acme/staging/customers"]));
    assert!(logs.contains("GET /customers"), "{logs}");
    for text in [h.to_string(), status(&g).to_string(), logs, g.output()] {
        assert!(
            !text.contains("s3cr3t-db-pass"),
            "the secret leaked: {text}"
        );
    }
    let mut stack = vec![g.data.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let bytes = std::fs::read(&p).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains("s3cr3t-db-pass"),
                    "{} holds the secret",
                    p.display()
                );
            }
        }
    }
    ok(g.cli(&["service", "stop", "acme/staging/customers"]));
    let start = Instant::now();
    while !status(&g)["replicas"].as_array().unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "replicas still running after stop"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    g.stop();
}

#[test]
fn replicas_survive_a_sigkill_of_gantry_and_are_adopted() {
    let bin = build_example();
    let dir = tempdir_for_tenants();
    let data = dir.path().join("data");
    let g = Gantry::start(&data, None);
    prepare(&g, dir.path(), &bin, "another-secret");
    ok(g.cli(&[
        "service",
        "deploy",
        "acme/staging/customers",
        "--artifact",
        "customers-mngr@1.0.0",
        "--cmd",
        "./customers-mngr",
        "--replicas",
        "2",
        "--secret",
        "DB_PASSWORD=db-password",
    ]));
    let before = until_stable(&g, 1, 2);
    let uid = assert_isolated(&g, &before);
    let pids = |s: &serde_json::Value| {
        let mut p: Vec<u64> = s["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["pid"].as_u64())
            .collect();
        p.sort();
        p
    };
    let old = pids(&before);
    assert_eq!(old.len(), 2);
    g.kill9();
    // The replicas outlive the control plane.
    for pid in &old {
        assert!(alive(*pid), "replica {pid} died with gantry");
    }
    let g = Gantry::start(&data, None);
    let start = Instant::now();
    let after = loop {
        let s = status(&g);
        if pids(&s) == old
            && s["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["healthy"] == true)
        {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not adopted: {s} (before: {old:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(after["stable_revision"], 1);
    // Adopted under the same uid: the allocation survived the restart.
    assert_eq!(assert_isolated(&g, &after), uid);
    // They serve through the new edge, and nothing was started twice.
    let start = Instant::now();
    loop {
        let (status, body) = crate::edge::get(&g.edge_http, "customers.acme.test", "/customers");
        if status == 200 {
            assert!(body.contains("customers"), "{body}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(pids(&status(&g)), old);
    // `service logs --follow` prints lines as they come.
    let mut follow = std::process::Command::new(crate::harness::BIN)
        .args([
            "service",
            "logs",
            "acme/staging/customers",
            "--lines",
            "5",
            "--follow",
        ])
        .env("GANTRY_SERVER", &g.api)
        .env("GANTRY_CA", g.data.join("ca.pem"))
        .env(
            "GANTRY_TOKEN",
            format!("@{}", g.data.join("admin.token").display()),
        )
        .env("GANTRY_CONFIG", g.data.join("no-profile.json"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    let (st, _) = crate::edge::get(&g.edge_http, "customers.acme.test", "/customers/2");
    assert_eq!(st, 200);
    let start = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.contains("/customers/2") => break,
            _ => assert!(
                start.elapsed() < Duration::from_secs(15),
                "--follow never printed the request"
            ),
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    ok(g.cli(&["service", "stop", "acme/staging/customers"]));
    let start = Instant::now();
    while !status(&g)["replicas"].as_array().unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "replicas still running after stop"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for pid in &old {
        assert!(!alive(*pid), "replica {pid} still running");
    }
    g.stop();
}

#[test]
fn a_busy_service_is_autoscaled_up_to_its_maximum() {
    let dir = tempdir_for_tenants();
    let g = Gantry::start_with(
        &dir.path().join("data"),
        None,
        &["--autoscale-cpu", "0.15", "--autoscale-cooldown", "1s"],
        &[],
    );
    ok(g.cli(&["tenant", "create", "acme"]));
    ok(g.cli(&["env", "create", "acme/staging", "--kind", "staging"]));
    // A replica that answers its health check and keeps a CPU busy.
    let dist = dir.path().join("busy");
    std::fs::create_dir_all(&dist).unwrap();
    let script = dist.join("run.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\npython3 -m http.server \"$PORT\" --bind 127.0.0.1 >/dev/null 2>&1 &\nwhile :; do :; done\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    ok(g.cli(&["artifact", "push", "acme/busy@1", dist.to_str().unwrap()]));
    ok(g.cli(&[
        "service",
        "deploy",
        "acme/staging/busy",
        "--artifact",
        "busy@1",
        "--cmd",
        "./run.sh",
        "--replicas",
        "1..3",
        "--health",
        "/",
        "--cpu-millis",
        "300",
    ]));
    let start = Instant::now();
    let status = |g: &Gantry| -> serde_json::Value {
        serde_json::from_str(&ok(g.cli(&[
            "service",
            "status",
            "acme/staging/busy",
            "-o",
            "json",
        ])))
        .unwrap()
    };
    loop {
        let s = status(&g);
        if s["desired_replicas"] == 3 && s["replicas"].as_array().unwrap().len() == 3 {
            if sandbox_expected() {
                assert!(
                    s["replicas"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|r| r["isolation"] == "bubblewrap"),
                    "{s}"
                );
            }
            assert!(
                s["message"].as_str().unwrap_or("").contains("autoscaled"),
                "{s}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never scaled to 3: {s}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let ev = ok(g.cli(&[
        "audit",
        "list",
        "--action",
        "service.autoscale",
        "-o",
        "json",
    ]));
    assert!(ev.contains("service.autoscale"), "{ev}");
    // The artifact a revision runs cannot be deleted.
    let err = crate::harness::fails(g.cli(&["artifact", "delete", "acme/busy@1"]), 7);
    assert!(err.contains("used by revision 1"), "{err}");
    ok(g.cli(&["service", "stop", "acme/staging/busy"]));
    let start = Instant::now();
    while !status(&g)["replicas"].as_array().unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "replicas still running"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    g.stop();
}

/// `--route NAME=HOST` creates the route with the deploy (a missing route without a host,
/// or a route to something else, refuses the deploy and leaves nothing behind), and a
/// revision that autoscales on in-flight requests grows under concurrent slow requests
/// through the edge and shrinks back when they stop.
#[test]
fn deploy_routes_and_in_flight_autoscaling() {
    let bin = build_example();
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start_with(
        &dir.path().join("data"),
        None,
        &["--autoscale-cooldown", "1s"],
        &[],
    );
    ok(g.cli(&["tenant", "create", "acme"]));
    ok(g.cli(&["env", "create", "acme/staging", "--kind", "staging"]));
    ok(g.cli_with(
        &["secret", "put", "acme/staging/db-password"],
        &[(
            "GANTRY_TOKEN",
            &format!("@{}", g.data.join("admin.token").display()),
        )],
        Some("load-test-pass"),
    ));
    let dist = dir.path().join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::copy(&bin, dist.join("customers-mngr")).unwrap();
    ok(g.cli(&[
        "artifact",
        "push",
        "acme/customers-mngr@1.0.0",
        dist.to_str().unwrap(),
    ]));
    let deploy = |route: &str| {
        g.cli(&[
            "service",
            "deploy",
            "acme/staging/customers",
            "--artifact",
            "customers-mngr@1.0.0",
            "--cmd",
            "./customers-mngr",
            "--replicas",
            "1..3",
            "--autoscale",
            "in-flight=2",
            "--secret",
            "DB_PASSWORD=db-password",
            "--route",
            route,
        ])
    };
    let err = crate::harness::fails(deploy("nope"), 3);
    assert!(err.contains("does not exist"), "{err}");
    crate::harness::fails(g.cli(&["service", "status", "acme/staging/customers"]), 6);
    ok(g.cli(&[
        "route",
        "create",
        "acme/staging/other",
        "--host",
        "other.acme.test",
        "--to",
        "upstream:127.0.0.1:9",
    ]));
    let err = crate::harness::fails(deploy("other"), 7);
    assert!(err.contains("sends traffic elsewhere"), "{err}");
    ok(deploy("load=load.acme.test/debug"));
    let route: serde_json::Value = serde_json::from_str(&ok(g.cli(&[
        "route",
        "show",
        "acme/staging/load",
        "-o",
        "json",
    ])))
    .unwrap();
    assert_eq!(route["host"], "load.acme.test", "{route}");
    assert_eq!(route["path"], "/debug", "{route}");
    assert_eq!(
        route["to"],
        serde_json::json!({"service": "customers"}),
        "{route}"
    );
    let rev: serde_json::Value = serde_json::from_str(&ok(g.cli(&[
        "service",
        "history",
        "acme/staging/customers",
        "-o",
        "json",
    ])))
    .unwrap();
    assert_eq!(
        rev["items"][0]["spec"]["autoscale"],
        serde_json::json!({"metric": "in_flight", "target": 2.0})
    );
    until_stable(&g, 1, 1);
    ok(g.cli(&[
        "cert",
        "issue",
        "acme/staging/load",
        "--domain",
        "load.acme.test",
    ]));
    let ca_pem = std::fs::read_to_string(g.data.join("ca.pem")).unwrap();
    // The edge serves the new certificate within a poll.
    let start = Instant::now();
    while !matches!(
        crate::certs::https_get(&g.edge_https, "load.acme.test", "/debug/slow?ms=1", &ca_pem),
        Ok((200, _))
    ) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the edge never served load.acme.test"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // 12 clients keep slow requests in flight (bounded in time and count).
    let (okc, failed, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let addr: std::net::SocketAddr = g.edge_https.parse().unwrap();
    let load = {
        let (okc, failed, stop) = (okc.clone(), failed.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let c = reqwest::Client::builder()
                    .no_proxy()
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(
                        reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap(),
                    )
                    .resolve("load.acme.test", addr)
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut tasks = Vec::new();
                for _ in 0..12 {
                    let (c, okc, failed, stop) =
                        (c.clone(), okc.clone(), failed.clone(), stop.clone());
                    tasks.push(tokio::spawn(async move {
                        let started = Instant::now();
                        for _ in 0..1_000 {
                            if stop.load(Ordering::Relaxed)
                                || started.elapsed() > Duration::from_secs(120)
                            {
                                break;
                            }
                            let url =
                                format!("https://load.acme.test:{}/debug/slow?ms=300", addr.port());
                            match c.get(url).send().await {
                                Ok(r) if r.status() == 200 => okc.fetch_add(1, Ordering::Relaxed),
                                other => {
                                    eprintln!("failed request: {:?}", other.map(|r| r.status()));
                                    failed.fetch_add(1, Ordering::Relaxed)
                                }
                            };
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        })
    };
    let start = Instant::now();
    loop {
        let s = status(&g);
        let msg = s["message"].as_str().unwrap_or("").to_string();
        if s["desired_replicas"] == 3 {
            assert!(msg.contains("requests in flight"), "{s}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "never scaled to 3 on in-flight requests ({} answered): {s}",
            okc.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    until_stable(&g, 1, 3);
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(okc.load(Ordering::Relaxed) > 20);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests");
    // No load: back to the minimum.
    let start = Instant::now();
    while status(&g)["desired_replicas"] != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never scaled back to 1"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    until_stable(&g, 1, 1);
    // Status shows the last changes, newest first: the autoscaler's and the deploy.
    let s = status(&g);
    let actions: Vec<&str> = s["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.first(), Some(&"service.autoscale"), "{s}");
    assert!(actions.contains(&"service.deploy"), "{s}");
    assert_eq!(s["events"][0]["principal"], "system", "{s}");
    let table = ok(g.cli(&["service", "status", "acme/staging/customers"]));
    assert!(table.contains("service.autoscale"), "{table}");
    ok(g.cli(&["service", "stop", "acme/staging/customers"]));
    let start = Instant::now();
    while !status(&g)["replicas"].as_array().unwrap().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(200));
    }
    g.stop();
}

/// Bad deploys are refused with a one-line reason and the right exit code, before any
/// state is written; a replica that never opens its port is reported, not left pending.
#[test]
fn bad_deploys_are_refused_with_the_reason() {
    use crate::harness::fails;
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), None);
    ok(g.cli(&["tenant", "create", "acme"]));
    ok(g.cli(&["env", "create", "acme/staging", "--kind", "staging"]));
    let dist = dir.path().join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dist.join("run.sh"), "#!/bin/sh\nexec sleep 20\n").unwrap();
    std::fs::write(dist.join("notes.txt"), "not a program\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dist.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    ok(g.cli(&["artifact", "push", "acme/app@1", dist.to_str().unwrap()]));
    let deploy = |artifact: &str, cmd: &str, extra: &[&str]| {
        let mut args = vec![
            "service",
            "deploy",
            "acme/staging/app",
            "--artifact",
            artifact,
            "--cmd",
            cmd,
        ];
        args.extend_from_slice(extra);
        g.cli(&args)
    };
    for (artifact, cmd, extra, says) in [
        ("app@2", "./run.sh", &[][..], "push it first"),
        ("app", "./run.sh", &[][..], "NAME@VERSION"),
        ("app@1", "./missing.sh", &[][..], "has no file ./missing.sh"),
        ("app@1", "./notes.txt", &[][..], "not executable"),
        ("app@1", "", &[][..], "command"),
        ("app@1", "./run.sh", &["--replicas", "0"][..], "replicas"),
        (
            "app@1",
            "./run.sh",
            &["--replicas", "3..1"][..],
            "max_replicas",
        ),
        ("app@1", "./run.sh", &["--replicas", "x"][..], "--replicas"),
        (
            "app@1",
            "./run.sh",
            &["--autoscale", "memory=1"][..],
            "invalid autoscale",
        ),
        ("app@1", "./run.sh", &["--route", "Bad"][..], "invalid"),
        (
            "app@1",
            "./run.sh",
            &["--secret", "DB=missing"][..],
            "does not exist",
        ),
        ("app@1", "./run.sh", &["--env", "NOVALUE"][..], "NAME=VALUE"),
        (
            "app@1",
            "./run.sh",
            &["--health", "health"][..],
            "health path",
        ),
    ] {
        let err = fails(deploy(artifact, cmd, extra), 3);
        assert!(err.contains(says), "{cmd} {extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: {err}");
    }
    // Nothing was created by the refusals.
    fails(g.cli(&["service", "status", "acme/staging/app"]), 6);
    fails(
        g.cli(&[
            "service",
            "deploy",
            "acme/nope/app",
            "--artifact",
            "app@1",
            "--cmd",
            "./run.sh",
        ]),
        6,
    );
    // A port never opened: the revision fails its health check and says so.
    ok(deploy("app@1", "./run.sh", &["--health-deadline", "2s"]));
    let start = Instant::now();
    loop {
        let s: serde_json::Value = serde_json::from_str(&ok(g.cli(&[
            "service",
            "status",
            "acme/staging/app",
            "-o",
            "json",
        ])))
        .unwrap();
        let msg = s["message"].as_str().unwrap_or("");
        if msg.contains("did not become healthy") {
            assert!(s["stable_revision"].is_null(), "{s}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "never reported: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(g.cli(&["service", "delete", "acme/staging/app"]));
    g.stop();
}
