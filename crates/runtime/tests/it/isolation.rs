//! Isolation: tenant uids (allocation, persistence), replicas as their tenant's user, and
//! the bubblewrap sandbox (its view of the machine, stop, restart, cgroups, adoption).
//! Tests that switch users need root; sandbox tests need `bwrap`: they are skipped, with
//! a message, only when one of those is missing.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use model::Name;
use runtime::{
    AdoptOutcome, IsolationMode, ReplicaSpec, ReplicaState, RunAs, Runtime, TenantUids, UidRange,
};

use crate::harness::*;

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn range(first: u32, last: u32) -> UidRange {
    UidRange { first, last }
}

#[tokio::test]
async fn tenants_get_distinct_uids_that_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let uids = TenantUids::open(dir.path(), range(300_000, 300_009)).unwrap();
    let a = uids.ids_for(&name("acme")).unwrap();
    let b = uids.ids_for(&name("globex")).unwrap();
    assert_ne!(a.uid, b.uid);
    assert_eq!((a.uid, a.gid), (300_000, 300_000));
    assert_eq!(uids.ids_for(&name("acme")).unwrap(), a, "stable while open");
    drop(uids);
    // Re-opened (a restart of Gantry), even with another range: same ids.
    let again = TenantUids::open(dir.path(), range(400_000, 400_009)).unwrap();
    assert_eq!(again.ids_for(&name("globex")).unwrap(), b);
    assert_eq!(again.ids_for(&name("acme")).unwrap(), a);
    let c = again.ids_for(&name("initech")).unwrap();
    assert_eq!(c.uid, 400_000);
    assert_eq!(again.allocations().unwrap().len(), 3);
    // The file is the runtime's, 0600, and not mistaken for a replica's state.
    let file = dir.path().join(runtime::uids::FILE_NAME);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let rt = runtime::LocalProcessRuntime::new(
        runtime::LocalConfig::new(dir.path().join("logs"), dir.path()).unwrap(),
    )
    .unwrap();
    assert!(rt.persisted().unwrap().is_empty());
}

#[test]
fn a_full_range_is_an_error_and_system_users_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let small = TenantUids::open(dir.path(), range(300_100, 300_101)).unwrap();
    small.ids_for(&name("a")).unwrap();
    small.ids_for(&name("b")).unwrap();
    let err = small.ids_for(&name("c")).unwrap_err().to_string();
    assert!(err.contains("no free uid"), "{err}");
    // An id that is a user in /etc/passwd is never handed out.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let taken: Option<u32> = passwd
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .find(|&id| (1000..u32::MAX - 2).contains(&id));
    let Some(taken) = taken else {
        eprintln!("SKIP (part): no user >= 1000 in /etc/passwd to collide with");
        return;
    };
    let dir2 = tempfile::tempdir().unwrap();
    let around = TenantUids::open(dir2.path(), range(taken, taken + 1)).unwrap();
    let got = around.ids_for(&name("x")).unwrap();
    assert_ne!(got.uid, taken, "an existing user's uid was handed out");
}

/// Root and `bwrap`, or why not.
fn sandbox_ready() -> bool {
    if !is_root() {
        eprintln!("SKIP: not root, cannot switch users");
        return false;
    }
    if runtime::sandbox::find_bwrap().is_none() {
        eprintln!("SKIP: bwrap is not installed (Debian package bubblewrap)");
        return false;
    }
    true
}

/// A fixture whose dir tenants can traverse (0711, like the data dir under isolation),
/// with a working dir readable by the tenant's group, and a root-only secret beside it.
struct Iso {
    fx: Fixture,
    work: PathBuf,
    secret: PathBuf,
    ids: RunAs,
}

fn iso(tenant_first_uid: u32) -> Iso {
    let fx = Fixture::new();
    std::fs::set_permissions(fx.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let uids = TenantUids::open(
        &fx.path().join("state"),
        range(tenant_first_uid, tenant_first_uid + 99),
    )
    .unwrap();
    let ids = uids.ids_for(&name("acme")).unwrap();
    let work = fx.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("data.txt"), "artifact data\n").unwrap();
    std::os::unix::fs::chown(&work, Some(0), Some(ids.gid)).unwrap();
    std::os::unix::fs::chown(work.join("data.txt"), Some(0), Some(ids.gid)).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(
        work.join("data.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let private = fx.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = private.join("root.key");
    std::fs::write(&secret, "TOP-SECRET-KEY\n").unwrap();
    Iso {
        fx,
        work,
        secret,
        ids,
    }
}

impl Iso {
    fn spec(&self, service: &str, script: &str, sandbox: bool) -> ReplicaSpec {
        let mut spec = sh(&self.fx, service, script);
        spec.working_dir = self.work.clone();
        spec.run_as = Some(self.ids);
        spec.sandbox = sandbox;
        spec
    }
}

fn uid_line(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string()
}

fn all_uids_are(pid: u32, uid: u32) -> bool {
    uid_line(pid)
        .split_whitespace()
        .skip(1)
        .all(|u| u == uid.to_string())
}

/// Pids of a process group (from /proc).
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f[2] == pgid.to_string() && f[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

const PROBE: &str = r#"echo uid=$(id -u) gid=$(id -g)
cat "$SECRET" >/dev/null 2>&1 && echo SECRET-READ || echo secret-refused
cat ./data.txt
ls /root >/dev/null 2>&1 && echo ROOT-LISTED || echo root-hidden
ls "$STATE" >/dev/null 2>&1 && echo STATE-LISTED || echo state-hidden
cat "$OUTSIDE" >/dev/null 2>&1 && echo outside-read || echo outside-hidden
touch ./written 2>/dev/null && echo WORKDIR-WRITTEN || echo workdir-readonly
touch "$HOME/scratch" && echo home-writable
echo tmp=$(touch /tmp/x && echo ok)
echo ready
exec sleep 60"#;

fn probe_env(spec: &mut ReplicaSpec, iso: &Iso) {
    spec.env
        .set("SECRET", iso.secret.to_str().unwrap())
        .unwrap();
    spec.env
        .set("STATE", iso.fx.path().join("state").to_str().unwrap())
        .unwrap();
    // World-readable, outside the replica's dirs: only the sandbox hides it.
    let outside = iso.fx.path().join("public");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(outside.join("readme"), "public\n").unwrap();
    std::fs::set_permissions(
        outside.join("readme"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    spec.env
        .set("OUTSIDE", outside.join("readme").to_str().unwrap())
        .unwrap();
}

#[tokio::test]
async fn a_sandboxed_replica_runs_as_its_tenant_and_sees_only_its_own_dirs() {
    if !sandbox_ready() {
        return;
    }
    let iso = iso(310_000);
    let rt = iso.fx.runtime();
    let mut spec = iso.spec("sandboxed", PROBE, true);
    probe_env(&mut spec, &iso);
    spec.limits.cpu_millis = Some(500);
    let h = rt.start(spec).await.unwrap();
    let lines = log_until(&rt, &h.id, "| ready", 15).await;
    let has = |s: &str| lines.iter().any(|l| l.ends_with(s));
    assert!(
        has(&format!("uid={} gid={}", iso.ids.uid, iso.ids.gid)),
        "{lines:?}"
    );
    for want in [
        "secret-refused",
        "artifact data",
        "root-hidden",
        "state-hidden",
        "outside-hidden",
        "workdir-readonly",
        "home-writable",
        "tmp=ok",
    ] {
        assert!(has(want), "missing {want:?}: {lines:?}");
    }
    let st = rt.status(&h.id).await.unwrap();
    assert_eq!(st.isolation, IsolationMode::Bubblewrap);
    assert_eq!(st.uid, Some(iso.ids.uid));
    // Every process of the replica (bwrap's monitor, the sandbox's init, the program)
    // runs as the tenant, in the replica's process group and cgroup.
    let members = group_members(h.pid);
    assert!(members.len() >= 3, "{members:?}");
    for pid in &members {
        assert!(all_uids_are(*pid, iso.ids.uid), "{pid}: {}", uid_line(*pid));
    }
    if st
        .enforced_limits
        .iter()
        .any(|l| l.starts_with("cpu: cgroup"))
    {
        for pid in &members {
            let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
            assert!(cg.contains(&h.id.slug()), "{pid} not in its cgroup: {cg}");
        }
    }
    // The tenant's scratch file is in its home, owned by it; the artifact is untouched.
    let home = iso.fx.path().join("home").join(h.id.slug());
    let meta = std::fs::metadata(home.join("scratch")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), iso.ids.uid);
    assert!(!iso.work.join("written").exists());

    let end = rt.stop(&h.id, Some(Duration::from_secs(5))).await.unwrap();
    assert_eq!(end.state, ReplicaState::Stopped);
    for pid in members {
        assert!(!alive(pid), "{pid} outlived the stop");
    }
    assert!(!home.exists(), "the home goes with the replica");
}

#[tokio::test]
async fn a_replica_as_its_tenant_user_cannot_read_root_only_files() {
    if !is_root() {
        eprintln!("SKIP: not root, cannot switch users");
        return;
    }
    let iso = iso(320_000);
    let rt = iso.fx.runtime();
    let mut spec = iso.spec("users", PROBE, false);
    probe_env(&mut spec, &iso);
    let h = rt.start(spec).await.unwrap();
    let lines = log_until(&rt, &h.id, "| ready", 15).await;
    let has = |s: &str| lines.iter().any(|l| l.ends_with(s));
    assert!(
        has(&format!("uid={} gid={}", iso.ids.uid, iso.ids.gid)),
        "{lines:?}"
    );
    for want in [
        "secret-refused",
        "artifact data",
        "root-hidden",
        "state-hidden",
        "outside-read",
        "workdir-readonly",
        "home-writable",
    ] {
        assert!(has(want), "missing {want:?}: {lines:?}");
    }
    let st = rt.status(&h.id).await.unwrap();
    assert_eq!(st.isolation, IsolationMode::Users);
    assert!(all_uids_are(h.pid, iso.ids.uid), "{}", uid_line(h.pid));
    rt.stop(&h.id, Some(Duration::from_secs(2))).await.unwrap();
}

#[tokio::test]
async fn a_sandboxed_replica_stops_gracefully_is_killed_after_grace_and_restarts() {
    if !sandbox_ready() {
        return;
    }
    let iso = iso(330_000);
    let rt = iso.fx.runtime();
    // SIGTERM reaches the program behind bwrap; its exit status comes back through it.
    let polite = iso.spec(
        "polite",
        "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
        true,
    );
    let h = rt.start(polite).await.unwrap();
    log_until(&rt, &h.id, "| ready", 15).await;
    let members = group_members(h.pid);
    let end = rt.stop(&h.id, Some(Duration::from_secs(20))).await.unwrap();
    let exit = end.last_exit.unwrap();
    assert_eq!(exit.code, Some(7), "the program's own status: {exit}");
    log_until(&rt, &h.id, "got TERM", 10).await;
    for pid in members {
        assert!(!alive(pid), "{pid} outlived the stop");
    }

    // A program that ignores SIGTERM is killed, with everything in its sandbox.
    let stubborn = iso.spec(
        "stubborn",
        "trap 'echo ignoring TERM' TERM; echo ready; while :; do sleep 0.1; done",
        true,
    );
    let h = rt.start(stubborn).await.unwrap();
    log_until(&rt, &h.id, "| ready", 15).await;
    let members = group_members(h.pid);
    let started = std::time::Instant::now();
    let end = rt
        .stop(&h.id, Some(Duration::from_millis(1500)))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert_eq!(end.state, ReplicaState::Stopped);
    log_until(&rt, &h.id, "ignoring TERM", 10).await;
    for pid in members {
        assert!(!alive(pid), "{pid} outlived SIGKILL");
    }

    // Exits are restarted with backoff, the status passed through bwrap.
    let crashy = iso.spec("crashy", "echo run; exit 3", true);
    let h = rt.start(crashy).await.unwrap();
    let st = status_until(&rt, &h.id, 20, |s| s.restarts >= 2).await;
    assert_eq!(
        st.last_exit.as_ref().and_then(|e| e.code),
        Some(3),
        "{st:?}"
    );
    rt.stop(&h.id, None).await.unwrap();

    // Killing the recorded pid (bwrap's monitor) takes the sandbox down; it restarts.
    let ticker = iso.spec("killed", "echo up; exec sleep 60", true);
    let h = rt.start(ticker).await.unwrap();
    log_until(&rt, &h.id, "| up", 15).await;
    let members = group_members(h.pid);
    // SAFETY: killing the test's own replica.
    unsafe { libc::kill(h.pid as i32, libc::SIGKILL) };
    let st = status_until(&rt, &h.id, 20, |s| {
        s.state == ReplicaState::Running && s.pid.is_some_and(|p| p != h.pid)
    })
    .await;
    for pid in members {
        assert!(!alive(pid), "{pid} of the killed sandbox is left");
    }
    assert!(all_uids_are(st.pid.unwrap(), iso.ids.uid));
    rt.stop(&h.id, Some(Duration::from_secs(2))).await.unwrap();
}

#[tokio::test]
async fn a_sandboxed_replica_is_adopted_by_a_new_supervisor() {
    if !sandbox_ready() {
        return;
    }
    let iso = iso(340_000);
    let spec = || {
        iso.spec(
            "adopted",
            "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done",
            true,
        )
    };
    let old = iso.fx.runtime();
    let h = old.start(spec()).await.unwrap();
    log_until(&old, &h.id, "tick 2", 15).await;
    drop(old);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alive(h.pid), "the sandbox outlives its supervisor");
    let members = group_members(h.pid);
    let new = iso.fx.runtime();
    let AdoptOutcome::Adopted { spec_changed, .. } = new.adopt(spec()).await.unwrap() else {
        panic!("not adopted");
    };
    assert!(!spec_changed);
    let mut rx = new.logs_follow(&h.id).unwrap();
    let line = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a line after adoption")
        .unwrap();
    assert!(line.text.starts_with("tick "), "{line:?}");
    let st = new.status(&h.id).await.unwrap();
    assert_eq!(
        (st.isolation, st.uid),
        (IsolationMode::Bubblewrap, Some(iso.ids.uid))
    );
    new.stop(&h.id, Some(Duration::from_secs(2))).await.unwrap();
    for pid in members {
        assert!(!alive(pid), "{pid} outlived the stop");
    }
}

#[tokio::test]
async fn root_without_a_user_gets_no_sandbox() {
    if !is_root() {
        eprintln!("SKIP: not root");
        return;
    }
    let fx = Fixture::new();
    let rt = fx.runtime();
    let mut spec = sh(&fx, "rootbox", "true");
    spec.sandbox = true;
    let err = rt.start(spec).await.unwrap_err().to_string();
    assert!(err.contains("needs a user"), "{err}");
}
