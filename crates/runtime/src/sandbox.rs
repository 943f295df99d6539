//! How replicas are isolated from the machine and from each other, and the bubblewrap
//! (`bwrap`) sandbox.
//!
//! [`IsolationMode`] says what is enforced: `none` (the supervisor's user), `users` (one
//! unprivileged uid/gid per tenant, see [`crate::uids`]) or `bubblewrap` (the tenant's uid
//! inside a bwrap sandbox). The sandbox gives the program:
//! * a read-only root of its own: `/usr`, the `/bin`, `/sbin`, `/lib*` links or dirs, and
//!   a fixed list of `/etc` files programs need ([`ETC`]: TLS roots, resolver, hosts,
//!   passwd, ...);
//! * its working dir (the unpacked artifact) read-only at the same path, its own writable
//!   home dir at the same path, a private `/tmp` (tmpfs), a new `/proc` of its own pid
//!   namespace and a minimal `/dev`;
//! * new user, pid, ipc, uts (and, where possible, cgroup) namespaces; the **network
//!   namespace is shared** (it binds a loopback port the edge connects to).
//!
//! bwrap is started already as the tenant's uid (set before exec), so it runs
//! unprivileged and builds its mounts inside a user namespace that maps only that uid:
//! the program's uid on the machine is the tenant's uid and it holds no capability there.
//! It is started **without** `--die-with-parent` (replicas outlive the supervisor and are
//! re-adopted) and **without** `--new-session`: the program stays in the process group the
//! supervisor created, so the group can be signalled. bwrap stays as a monitor process
//! (the recorded pid) and exits with the program's status; to keep that status, a
//! graceful stop sends SIGTERM to the group's members but the monitor (the pid namespace's
//! init ignores it, the program gets it), and SIGKILL to the whole group.
//!
//! This module must never make a path of the supervisor's data writable in a sandbox
//! other than the replica's own home dir, and never start bwrap as root (it would keep
//! every capability).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::spec::RunAs;

/// What isolates replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IsolationMode {
    /// The supervisor's user, the machine's view.
    None,
    /// A separate unprivileged uid/gid per tenant.
    Users,
    /// The tenant's uid inside a bubblewrap sandbox.
    Bubblewrap,
}

impl IsolationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationMode::None => "none",
            IsolationMode::Users => "users",
            IsolationMode::Bubblewrap => "bubblewrap",
        }
    }
}

impl fmt::Display for IsolationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Files and dirs of `/etc` visible (read-only) in the sandbox, when they exist.
pub const ETC: &[&str] = &[
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/crypto-policies",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/mime.types",
    "/etc/os-release",
];

/// Top-level program and library dirs: bound read-only, or recreated as the same
/// symlink on merged-/usr systems.
const ROOT_DIRS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// `bwrap` in `PATH` (or the usual places), if any.
pub fn find_bwrap() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join("bwrap"))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The sandbox's view of the machine, without the replica's own dirs.
fn base_args() -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(OsString::from));
    push(&[
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--ro-bind",
        "/usr",
        "/usr",
    ]);
    for d in ROOT_DIRS {
        match std::fs::symlink_metadata(d) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(d) {
                    a.push("--symlink".into());
                    a.push(target.into_os_string());
                    a.push(d.into());
                }
            }
            Ok(m) if m.is_dir() => {
                a.extend(["--ro-bind", d, d].map(OsString::from));
            }
            _ => {}
        }
    }
    for f in ETC {
        a.extend(["--ro-bind-try", f, f].map(OsString::from));
    }
    a.extend(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"].map(OsString::from));
    a
}

/// bwrap's arguments to run `command` in `working_dir` (read-only) with `home` writable.
pub(crate) fn bwrap_args(
    working_dir: &Path,
    home: Option<&Path>,
    command: &[String],
) -> Vec<OsString> {
    let mut a = base_args();
    let w = working_dir.as_os_str();
    a.extend(["--ro-bind".into(), w.to_owned(), w.to_owned()]);
    if let Some(h) = home {
        let h = h.as_os_str();
        a.extend(["--bind".into(), h.to_owned(), h.to_owned()]);
    }
    a.extend([
        "--remount-ro".into(),
        "/".into(),
        "--chdir".into(),
        w.to_owned(),
    ]);
    a.push("--".into());
    a.extend(command.iter().map(OsString::from));
    a
}

/// Checks that `bwrap` can build a sandbox here as `run_as` (or as this user): runs
/// `true` in one, bounded to 10 s. The error says why not (bwrap's own message).
pub fn probe(bwrap: &Path, run_as: Option<RunAs>) -> std::result::Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(bwrap);
    cmd.args(base_args())
        .args(["--remount-ro", "/", "--chdir", "/", "--", "true"])
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(u) = run_as {
        cmd.uid(u.uid).gid(u.gid);
    } else if is_root() {
        return Err("bwrap started by root would keep every capability".into());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                let err = err.trim();
                return Err(if err.is_empty() {
                    format!("{} failed ({st})", bwrap.display())
                } else {
                    format!("{}: {}", bwrap.display(), err.lines().next().unwrap_or(err))
                });
            }
            Ok(None) if start.elapsed() > Duration::from_secs(10) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not finish within 10 s", bwrap.display()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {}: {e}", bwrap.display())),
        }
    }
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replica_dirs_come_after_tmp_and_before_the_command() {
        let a = bwrap_args(
            Path::new("/tmp/d/work"),
            Some(Path::new("/tmp/d/home/x")),
            &["./run".into(), "--x".into()],
        );
        let s: Vec<String> = a.iter().map(|x| x.to_string_lossy().into_owned()).collect();
        let pos = |x: &str| s.iter().position(|y| y == x).unwrap();
        assert!(pos("--tmpfs") < pos("/tmp/d/work"));
        assert!(!s
            .iter()
            .any(|x| x == "--die-with-parent" || x == "--new-session"));
        assert!(!s.iter().any(|x| x == "--unshare-net"));
        let dd = pos("--");
        assert_eq!(&s[dd + 1..], ["./run", "--x"]);
        assert_eq!(s[pos("--chdir") + 1], "/tmp/d/work");
        assert_eq!(s[pos("--bind") + 1], "/tmp/d/home/x");
    }
}
