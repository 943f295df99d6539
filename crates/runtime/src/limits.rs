//! Resource limits of replicas: what is enforced, where, and how.
//!
//! * **cgroup v2** (a `cgroup2` mount whose `cgroup.controllers` offers `memory`/`cpu`):
//!   one cgroup per replica at `<mount>/<parent>/<replica slug>`, with `memory.max`
//!   (plus `memory.swap.max = 0` where present) and `cpu.max = "<quota> 100000"`.
//! * **cgroup v1** (separate `memory` and `cpu` hierarchies): one cgroup per replica in
//!   each, with `memory.limit_in_bytes` (plus `memory.memsw.limit_in_bytes` where
//!   present), `cpu.cfs_quota_us`/`cpu.cfs_period_us` (a hard cap) and `cpu.shares`
//!   (the weight: 1024 per core).
//! * The child joins its cgroups **before exec**: the runtime opens the `cgroup.procs`
//!   files before forking, and the forked child writes `0` ("myself") to them in
//!   `pre_exec`, so no instruction of the tenant's program, and no process it forks,
//!   ever runs outside the limits.
//! * **Fallback** when no writable hierarchy exists for memory: `setrlimit(RLIMIT_AS)` in
//!   `pre_exec`. It limits *address space*, not resident memory, per process (children
//!   inherit it, each gets its own budget); runtimes that reserve large virtual areas
//!   (Go, the JVM) may fail to start under it. CPU has no fallback: it is then reported
//!   as not enforced.
//!
//! What was actually applied is returned as human-readable lines and shown in
//! `ReplicaStatus::enforced_limits`.
//!
//! This module must never kill a process outside a replica's own cgroup, and must never
//! let a failed limit pass silently: every limit that is not applied is reported.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::spec::Limits;

/// The CFS period used for CPU quotas (100 ms, the kernel default).
const CPU_PERIOD_US: u64 = 100_000;

/// The cgroup hierarchies found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupHierarchy {
    /// A unified hierarchy with the memory and/or cpu controllers.
    V2 {
        mount: PathBuf,
        memory: bool,
        cpu: bool,
    },
    /// Legacy hierarchies, one mount per controller.
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
    },
    /// No usable cgroup controller.
    None,
}

impl CgroupHierarchy {
    /// Reads `/proc/self/mountinfo`. Prefers v2 when it carries a controller we need.
    pub fn detect() -> CgroupHierarchy {
        match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(text) => Self::from_mountinfo(&text, |p| {
                std::fs::read_to_string(p.join("cgroup.controllers")).unwrap_or_default()
            }),
            Err(_) => CgroupHierarchy::None,
        }
    }

    fn from_mountinfo(text: &str, controllers: impl Fn(&Path) -> String) -> CgroupHierarchy {
        let mut v1_memory = None;
        let mut v1_cpu = None;
        for line in text.lines() {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount) = left.split_whitespace().nth(4) else {
                continue;
            };
            let mut r = right.split_whitespace();
            let fstype = r.next().unwrap_or("");
            let super_opts = r.nth(1).unwrap_or("");
            let mount = PathBuf::from(mount.replace("\\040", " "));
            match fstype {
                "cgroup2" => {
                    let c = controllers(&mount);
                    let memory = c.split_whitespace().any(|x| x == "memory");
                    let cpu = c.split_whitespace().any(|x| x == "cpu");
                    if memory || cpu {
                        return CgroupHierarchy::V2 { mount, memory, cpu };
                    }
                }
                "cgroup" => {
                    for opt in super_opts.split(',') {
                        match opt {
                            "memory" if v1_memory.is_none() => v1_memory = Some(mount.clone()),
                            "cpu" if v1_cpu.is_none() => v1_cpu = Some(mount.clone()),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if v1_memory.is_some() || v1_cpu.is_some() {
            CgroupHierarchy::V1 {
                memory: v1_memory,
                cpu: v1_cpu,
            }
        } else {
            CgroupHierarchy::None
        }
    }
}

/// How limits are applied by one runtime.
#[derive(Debug, Clone)]
pub struct LimitEnforcer {
    hierarchy: CgroupHierarchy,
    parent: String,
    rlimit_fallback: bool,
}

/// The limits prepared for one spawn of one replica.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    /// The replica's cgroup directories (removed when the replica stops).
    pub dirs: Vec<PathBuf>,
    /// Open `cgroup.procs` files the child writes `0` to before exec.
    pub procs: Vec<OwnedFd>,
    /// `RLIMIT_AS` to set before exec.
    pub rlimit_as: Option<u64>,
    /// What is enforced, for the status.
    pub enforced: Vec<String>,
}

impl LimitEnforcer {
    /// `parent` is the cgroup directory (one path component) under which replica cgroups
    /// are made, e.g. `gantry`. `hierarchy: None` disables cgroups.
    pub fn new(hierarchy: CgroupHierarchy, parent: &str, rlimit_fallback: bool) -> Result<Self> {
        if parent.is_empty() || parent.contains('/') || parent.starts_with('.') {
            return Err(Error::invalid("cgroup parent", format!("{parent:?}")));
        }
        Ok(LimitEnforcer {
            hierarchy,
            parent: parent.to_string(),
            rlimit_fallback,
        })
    }

    /// Detects this machine's hierarchy; cgroups go under `parent`.
    pub fn detect(parent: &str) -> Result<Self> {
        Self::new(CgroupHierarchy::detect(), parent, true)
    }

    pub fn hierarchy(&self) -> &CgroupHierarchy {
        &self.hierarchy
    }

    /// The parent cgroup directories (one per hierarchy in use).
    pub fn parent_dirs(&self) -> Vec<PathBuf> {
        match &self.hierarchy {
            CgroupHierarchy::V2 { mount, .. } => vec![mount.join(&self.parent)],
            CgroupHierarchy::V1 { memory, cpu } => memory
                .iter()
                .chain(cpu.iter())
                .map(|m| m.join(&self.parent))
                .collect(),
            CgroupHierarchy::None => Vec::new(),
        }
    }

    /// Creates the replica's cgroups, writes the limits and opens `cgroup.procs`. Never
    /// fails: what cannot be applied is reported in `enforced` (or falls back).
    pub(crate) fn prepare(&self, slug: &str, limits: &Limits) -> Prepared {
        let mut p = Prepared::default();
        let mut memory_done = false;
        let mut cpu_done = false;
        let wants = limits.memory_bytes.is_some() || limits.cpu_millis.is_some();
        if wants {
            match &self.hierarchy {
                CgroupHierarchy::V2 { mount, memory, cpu } => {
                    if let Some(dir) = self.v2_dir(mount, *memory, *cpu, slug, &mut p.enforced) {
                        if let (Some(bytes), true) = (limits.memory_bytes, *memory) {
                            if write(&dir.join("memory.max"), &bytes.to_string()) {
                                let _ = write(&dir.join("memory.swap.max"), "0");
                                p.enforced.push(format!(
                                    "memory: cgroup v2 memory.max={bytes} ({})",
                                    dir.display()
                                ));
                                memory_done = true;
                            }
                        }
                        if let (Some(m), true) = (limits.cpu_millis, *cpu) {
                            let quota = u64::from(m) * CPU_PERIOD_US / 1000;
                            let v = format!("{quota} {CPU_PERIOD_US}");
                            if write(&dir.join("cpu.max"), &v) {
                                p.enforced.push(format!("cpu: cgroup v2 cpu.max=\"{v}\""));
                                cpu_done = true;
                            }
                        }
                        self.join(&dir, &mut p);
                    }
                }
                CgroupHierarchy::V1 { memory, cpu } => {
                    if let (Some(bytes), Some(mount)) = (limits.memory_bytes, memory) {
                        if let Some(dir) = self.v1_dir(mount, slug, &mut p.enforced) {
                            let s = bytes.to_string();
                            if write(&dir.join("memory.limit_in_bytes"), &s) {
                                let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &s);
                                p.enforced.push(format!(
                                    "memory: cgroup v1 memory.limit_in_bytes={bytes} ({})",
                                    dir.display()
                                ));
                                memory_done = true;
                                self.join(&dir, &mut p);
                            } else {
                                let _ = std::fs::remove_dir(&dir);
                            }
                        }
                    }
                    if let (Some(m), Some(mount)) = (limits.cpu_millis, cpu) {
                        if let Some(dir) = self.v1_dir(mount, slug, &mut p.enforced) {
                            let quota = u64::from(m) * CPU_PERIOD_US / 1000;
                            let shares = (u64::from(m) * 1024 / 1000).max(2);
                            let ok =
                                write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())
                                    && write(&dir.join("cpu.cfs_quota_us"), &quota.to_string());
                            let shares_ok = write(&dir.join("cpu.shares"), &shares.to_string());
                            if ok || shares_ok {
                                let mut what = Vec::new();
                                if ok {
                                    what.push(format!(
                                        "cpu.cfs_quota_us={quota}/cpu.cfs_period_us={CPU_PERIOD_US}"
                                    ));
                                }
                                if shares_ok {
                                    what.push(format!("cpu.shares={shares}"));
                                }
                                p.enforced
                                    .push(format!("cpu: cgroup v1 {}", what.join(", ")));
                                cpu_done = true;
                                self.join(&dir, &mut p);
                            } else {
                                let _ = std::fs::remove_dir(&dir);
                            }
                        }
                    }
                }
                CgroupHierarchy::None => {}
            }
        }
        if let (Some(bytes), false) = (limits.memory_bytes, memory_done) {
            if self.rlimit_fallback {
                p.rlimit_as = Some(bytes);
                p.enforced.push(format!(
                    "memory: setrlimit(RLIMIT_AS)={bytes} per process (no writable memory cgroup)"
                ));
            } else {
                p.enforced
                    .push("memory: NOT enforced (no writable memory cgroup)".to_string());
            }
        }
        if limits.cpu_millis.is_some() && !cpu_done {
            p.enforced
                .push("cpu: NOT enforced (no writable cpu cgroup)".to_string());
        }
        p
    }

    fn v1_dir(&self, mount: &Path, slug: &str, notes: &mut Vec<String>) -> Option<PathBuf> {
        let dir = mount.join(&self.parent).join(slug);
        match std::fs::create_dir_all(&dir) {
            Ok(()) => Some(dir),
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "cgroup not writable");
                notes.push(format!("cgroup {} not writable: {e}", dir.display()));
                None
            }
        }
    }

    fn v2_dir(
        &self,
        mount: &Path,
        memory: bool,
        cpu: bool,
        slug: &str,
        notes: &mut Vec<String>,
    ) -> Option<PathBuf> {
        let parent = mount.join(&self.parent);
        let dir = parent.join(slug);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            notes.push(format!("cgroup {} not writable: {e}", dir.display()));
            return None;
        }
        // Controllers must be enabled in every ancestor's subtree_control.
        let mut want = Vec::new();
        if memory {
            want.push("+memory");
        }
        if cpu {
            want.push("+cpu");
        }
        let want = want.join(" ");
        let _ = write(&mount.join("cgroup.subtree_control"), &want);
        let _ = write(&parent.join("cgroup.subtree_control"), &want);
        Some(dir)
    }

    fn join(&self, dir: &Path, p: &mut Prepared) {
        let procs = dir.join("cgroup.procs");
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&procs)
        {
            Ok(f) => {
                p.procs.push(OwnedFd::from(f));
                if !p.dirs.contains(&dir.to_path_buf()) {
                    p.dirs.push(dir.to_path_buf());
                }
            }
            Err(e) => p
                .enforced
                .push(format!("cgroup {} cannot be joined: {e}", procs.display())),
        }
    }
}

fn write(path: &Path, value: &str) -> bool {
    match std::fs::write(path, value) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "cgroup write failed");
            false
        }
    }
}

/// The pids in a replica's cgroups.
pub(crate) fn cgroup_pids(dirs: &[PathBuf]) -> Vec<i32> {
    let mut pids = Vec::new();
    for d in dirs {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes a replica's cgroups (they must be empty; killed processes leave them a moment
/// later, so this retries for up to ~1 s).
pub(crate) async fn remove_cgroups(dirs: &[PathBuf]) {
    for d in dirs {
        for _ in 0..20 {
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }
}

/// The part of the child's setup that runs between fork and exec. Only async-signal-safe
/// calls: `setsid`, `write` of a constant, `setrlimit`.
pub(crate) struct PreExec {
    pub procs: Vec<i32>,
    pub rlimit_as: Option<u64>,
}

impl PreExec {
    pub(crate) fn from_prepared(p: &Prepared) -> Self {
        PreExec {
            procs: p.procs.iter().map(|f| f.as_raw_fd()).collect(),
            rlimit_as: p.rlimit_as,
        }
    }

    /// Runs in the forked child.
    pub(crate) fn run(&self) -> std::io::Result<()> {
        // A new session and process group (pgid = pid): the whole tree can be signalled
        // with killpg, and it survives the supervisor's terminal going away.
        // SAFETY: plain syscalls on this process.
        unsafe {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for &fd in &self.procs {
                if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(bytes) = self.rlimit_as {
                let lim = libc::rlimit {
                    rlim_cur: bytes as libc::rlim_t,
                    rlim_max: bytes as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 23 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn detects_v1_when_v2_has_no_controllers() {
        let h = CgroupHierarchy::from_mountinfo(HYBRID, |_| String::new());
        assert_eq!(
            h,
            CgroupHierarchy::V1 {
                memory: Some("/sys/fs/cgroup/memory".into()),
                cpu: Some("/sys/fs/cgroup/cpu".into())
            }
        );
    }

    #[test]
    fn detects_v2_with_controllers() {
        let text = "25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = CgroupHierarchy::from_mountinfo(text, |_| "cpuset cpu io memory pids".into());
        assert_eq!(
            h,
            CgroupHierarchy::V2 {
                mount: "/sys/fs/cgroup".into(),
                memory: true,
                cpu: true
            }
        );
        assert_eq!(
            CgroupHierarchy::from_mountinfo("", |_| String::new()),
            CgroupHierarchy::None
        );
    }

    #[test]
    fn without_cgroups_memory_falls_back_to_rlimit_and_cpu_is_reported() {
        let e = LimitEnforcer::new(CgroupHierarchy::None, "gantry", true).unwrap();
        let p = e.prepare(
            "a.b.c.1-0",
            &Limits {
                memory_bytes: Some(1 << 26),
                cpu_millis: Some(500),
            },
        );
        assert_eq!(p.rlimit_as, Some(1 << 26));
        assert!(p.enforced.iter().any(|l| l.contains("RLIMIT_AS")));
        assert!(p.enforced.iter().any(|l| l.contains("cpu: NOT enforced")));
        assert!(LimitEnforcer::new(CgroupHierarchy::None, "../x", true).is_err());
    }
}
