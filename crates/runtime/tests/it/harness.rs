//! Shared helpers: a runtime in a temp dir with its own cgroup parent, specs for `sh`
//! scripts, bounded waits, a tiny HTTP/1.0 client.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use runtime::{
    LimitEnforcer, LocalConfig, LocalProcessRuntime, LogRotation, ReplicaId, ReplicaSpec,
    ReplicaStatus, RestartPolicy, Runtime,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A temp dir with `logs/` and `state/`, and a unique cgroup parent removed on drop.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub cgroup_parent: String,
    pub rotation: LogRotation,
}

impl Fixture {
    pub fn new() -> Fixture {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
            cgroup_parent: format!("gantry-test-{}-{n}", std::process::id()),
            rotation: LogRotation::default(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> LocalConfig {
        let mut cfg =
            LocalConfig::new(self.path().join("logs"), self.path().join("state")).expect("config");
        cfg.limits = LimitEnforcer::detect(&self.cgroup_parent).expect("limits");
        cfg.rotation = self.rotation;
        cfg.adopted_poll = Duration::from_millis(100);
        cfg
    }

    pub fn runtime(&self) -> LocalProcessRuntime {
        LocalProcessRuntime::new(self.config()).expect("runtime")
    }

    /// Every regular file under the runtime's dirs (FIFOs are skipped: reading one
    /// would block).
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    walk(&e.path(), out);
                } else if ft.is_file() {
                    out.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        walk(self.path(), &mut out);
        out
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Ok(l) = LimitEnforcer::detect(&self.cgroup_parent) {
            for d in l.parent_dirs() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

pub fn id(service: &str) -> ReplicaId {
    format!("acme/staging/{service}#7-2").parse().expect("id")
}

/// `sh -c SCRIPT` in the fixture dir, restarting quickly (100 ms .. 400 ms).
pub fn sh(fx: &Fixture, service: &str, script: &str) -> ReplicaSpec {
    let mut spec = ReplicaSpec::new(
        id(service),
        fx.path(),
        vec!["sh".into(), "-c".into(), script.into()],
    );
    spec.restart = RestartPolicy {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        ..RestartPolicy::default()
    };
    spec.grace = Duration::from_secs(5);
    spec
}

/// Polls `check` every 50 ms for up to `secs` seconds.
pub async fn eventually<F: FnMut() -> bool>(secs: u64, what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {secs}s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until the replica's status satisfies `pred`.
pub async fn status_until<F: FnMut(&ReplicaStatus) -> bool>(
    rt: &impl Runtime,
    id: &ReplicaId,
    secs: u64,
    mut pred: F,
) -> ReplicaStatus {
    let mut rx = rt.watch(id).expect("watch");
    let found =
        match tokio::time::timeout(Duration::from_secs(secs), rx.wait_for(|s| pred(s))).await {
            Ok(Ok(s)) => Some(s.clone()),
            _ => None,
        };
    match found {
        Some(s) => s,
        None => panic!("timed out after {secs}s; status: {:?}", *rx.borrow()),
    }
}

/// Waits (bounded) until the logs contain a line with `needle`; returns the tail.
pub async fn log_until(rt: &impl Runtime, id: &ReplicaId, needle: &str, secs: u64) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let lines = rt.logs_tail(id, 10_000).await.expect("tail");
        if lines.iter().any(|l| l.contains(needle)) {
            return lines;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {secs}s waiting for log {needle:?}; have {lines:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// `GET path` over HTTP/1.0 on 127.0.0.1:port: (status, body). Bounded to 15 s.
pub async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(15), fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "http timeout"))?
}

/// Waits until `GET path` answers `want`.
pub async fn http_until(port: u16, path: &str, want: u16, secs: u64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok((status, body)) = http_get(port, path).await {
            if status == want {
                return body;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {secs}s waiting for {want} on 127.0.0.1:{port}{path}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real python3 executable (not a pyenv shim, which needs the caller's environment).
pub fn python3() -> Option<String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let p = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !p.is_empty()).then_some(p)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
