//! Resource limits and users: memory (cgroup or RLIMIT_AS, whichever this machine has),
//! CPU (cgroup only), the child inside its cgroup from the start, and `run_as`.

use std::time::Duration;

use runtime::{Limits, ReplicaState, RestartMode, RunAs, Runtime};

use crate::harness::*;

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn memory_above_the_limit_is_refused_or_killed() {
    let fx = Fixture::new();
    let rt = fx.runtime();
    // Allocate and touch 256 MiB under a 64 MiB limit.
    let script = match python3() {
        Some(py) => format!(
            "echo begin; exec {py} -c 'b = bytearray(256 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint(\"allocated\")'"
        ),
        None => "echo begin; x=$(head -c 268435456 /dev/zero | tr '\\0' a); echo allocated".into(),
    };
    let mut spec = sh(&fx, "hungry", &script);
    spec.limits = Limits {
        memory_bytes: Some(64 * MIB),
        cpu_millis: None,
    };
    spec.restart.mode = RestartMode::Never;
    let h = rt.start(spec).await.unwrap();
    let st = status_until(&rt, &h.id, 60, |s| s.state.is_final()).await;
    let memory: Vec<&String> = st
        .enforced_limits
        .iter()
        .filter(|l| l.starts_with("memory:"))
        .collect();
    eprintln!("enforced: {:?}", st.enforced_limits);
    assert_eq!(memory.len(), 1, "{:?}", st.enforced_limits);
    if memory[0].contains("NOT enforced") {
        eprintln!("SKIP: no memory limit mechanism on this machine");
        return;
    }
    let exit = st.last_exit.clone().unwrap();
    assert_eq!(st.state, ReplicaState::Failed, "{exit}");
    let lines = rt.logs_tail(&h.id, 50).await.unwrap();
    assert!(
        !lines.iter().any(|l| l.ends_with("| allocated")),
        "{lines:?}"
    );
    eprintln!("over-limit child ended with {exit}");

    // The same limit lets a modest process run.
    let mut small = sh(&fx, "modest", "echo fine; exec sleep 30");
    small.limits.memory_bytes = Some(64 * MIB);
    let s = rt.start(small).await.unwrap();
    log_until(&rt, &s.id, "fine", 10).await;
    assert_eq!(rt.status(&s.id).await.unwrap().state, ReplicaState::Running);
    rt.stop(&s.id, Some(Duration::from_secs(2))).await.unwrap();
    rt.stop(&h.id, None).await.unwrap();
}

#[tokio::test]
async fn cpu_limit_is_set_in_the_cgroup_the_child_starts_in() {
    let fx = Fixture::new();
    let rt = fx.runtime();
    let mut spec = sh(&fx, "busy", "exec sleep 30");
    spec.limits = Limits {
        memory_bytes: Some(128 * MIB),
        cpu_millis: Some(250),
    };
    let h = rt.start(spec).await.unwrap();
    let st = rt.status(&h.id).await.unwrap();
    eprintln!("enforced: {:?}", st.enforced_limits);
    let cpu = st
        .enforced_limits
        .iter()
        .find(|l| l.starts_with("cpu:"))
        .cloned()
        .expect("cpu is reported");
    if cpu.contains("NOT enforced") {
        eprintln!("SKIP: no writable cpu cgroup on this machine ({cpu})");
    } else {
        // 0.25 core = 25 ms per 100 ms period.
        assert!(cpu.contains("25000"), "{cpu}");
        let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", h.pid)).unwrap();
        assert!(cg.contains(&h.id.slug()), "child not in its cgroup: {cg}");
        assert!(cg.contains(&fx.cgroup_parent));
    }
    rt.stop(&h.id, Some(Duration::from_secs(2))).await.unwrap();
    // The replica's cgroups are removed with it.
    let dirs = fx.config().limits.parent_dirs();
    for d in dirs {
        assert!(!d.join(h.id.slug()).exists(), "{}", d.display());
    }
}

#[tokio::test]
async fn runs_as_an_unprivileged_user() {
    if !is_root() {
        eprintln!("SKIP: not root, cannot switch users");
        return;
    }
    let fx = Fixture::new();
    let rt = fx.runtime();
    let mut spec = sh(
        &fx,
        "tenant",
        "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); exec sleep 30",
    );
    spec.working_dir = "/".into();
    spec.run_as = Some(RunAs {
        uid: 65534,
        gid: 65534,
    });
    spec.limits.memory_bytes = Some(256 * MIB);
    let h = rt.start(spec).await.unwrap();
    let lines = log_until(&rt, &h.id, "uid=", 10).await;
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("uid=65534 gid=65534 groups=65534")),
        "{lines:?}"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", h.pid)).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );
    rt.stop(&h.id, Some(Duration::from_secs(2))).await.unwrap();
}

#[tokio::test]
async fn without_cgroups_memory_falls_back_to_rlimit_as() {
    let fx = Fixture::new();
    let mut cfg = fx.config();
    cfg.limits =
        runtime::LimitEnforcer::new(runtime::CgroupHierarchy::None, "unused", true).unwrap();
    let rt = runtime::LocalProcessRuntime::new(cfg).unwrap();
    let script = match python3() {
        Some(py) => {
            format!("exec {py} -c 'b = bytearray(512 * 1024 * 1024)\nprint(\"allocated\")'")
        }
        None => "x=$(head -c 536870912 /dev/zero | tr '\\0' a); echo allocated".into(),
    };
    let mut spec = sh(&fx, "hungry-rlimit", &script);
    spec.limits.memory_bytes = Some(128 * MIB);
    spec.limits.cpu_millis = Some(500);
    spec.restart.mode = RestartMode::Never;
    let h = rt.start(spec).await.unwrap();
    let st = status_until(&rt, &h.id, 60, |s| s.state.is_final()).await;
    assert!(
        st.enforced_limits.iter().any(|l| l.contains("RLIMIT_AS")),
        "{st:?}"
    );
    assert!(st
        .enforced_limits
        .iter()
        .any(|l| l.contains("cpu: NOT enforced")));
    assert_eq!(st.state, ReplicaState::Failed, "{:?}", st.last_exit);
    let lines = rt.logs_tail(&h.id, 50).await.unwrap();
    assert!(
        !lines.iter().any(|l| l.ends_with("| allocated")),
        "{lines:?}"
    );
    rt.stop(&h.id, None).await.unwrap();
}
