//! Per-tenant unprivileged users: one uid (and a gid of the same number) per tenant,
//! allocated on this machine from a configured range and remembered in the runtime's
//! state dir (`tenant-uids.json`), so that a tenant keeps its uid across restarts of
//! Gantry (replicas left running are re-adopted under the same uid).
//!
//! Like systemd's dynamic users, the ids need no `/etc/passwd` entry; an id that is an
//! existing user in `/etc/passwd` (or group in `/etc/group`) is never handed out. The file
//! is written atomically (temp file, fsync, rename) under an exclusive `flock`, so two
//! runtimes on the same state dir never give one uid to two tenants.
//!
//! This module must never hand out one uid to two tenants, never change a tenant's uid
//! once allocated, and never hand out uid or gid 0.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use model::Name;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spec::RunAs;

/// The file (in the state dir) that holds the allocations.
pub const FILE_NAME: &str = "tenant-uids.json";

/// An inclusive range of ids, written `FIRST..LAST` (`200000..265535`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

impl Default for UidRange {
    /// `200000..265535`: above the usual system and login users, below nothing special.
    fn default() -> Self {
        UidRange {
            first: 200_000,
            last: 265_535,
        }
    }
}

impl fmt::Display for UidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.first, self.last)
    }
}

impl FromStr for UidRange {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid("uid range", format!("{s:?}: {why}"));
        let (a, b) = s
            .split_once("..")
            .ok_or_else(|| bad("expected FIRST..LAST, e.g. 200000..265535"))?;
        let b = b.strip_prefix('=').unwrap_or(b);
        let first: u32 = a.trim().parse().map_err(|_| bad("FIRST is not a number"))?;
        let last: u32 = b.trim().parse().map_err(|_| bad("LAST is not a number"))?;
        if first < 1000 {
            return Err(bad("ids below 1000 belong to the system"));
        }
        if last < first {
            return Err(bad("LAST is below FIRST"));
        }
        // (uid_t)-1 means "unchanged" to setuid-like calls; 65534 and friends are avoided
        // through /etc/passwd.
        if last >= u32::MAX - 1 {
            return Err(bad("LAST is too large"));
        }
        Ok(UidRange { first, last })
    }
}

impl UidRange {
    pub fn contains(&self, id: u32) -> bool {
        (self.first..=self.last).contains(&id)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Allocations {
    /// Tenant name → uid (the gid is the same number).
    tenants: BTreeMap<String, u32>,
}

/// The allocator. Cheap to share (`Arc`); every call re-reads the file under the lock.
#[derive(Debug)]
pub struct TenantUids {
    path: PathBuf,
    lock_path: PathBuf,
    range: UidRange,
    local: Mutex<()>,
}

impl TenantUids {
    /// Uses `<state_dir>/tenant-uids.json` (created on the first allocation).
    pub fn open(state_dir: &Path, range: UidRange) -> Result<Self> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| Error::io("create directory", state_dir, e))?;
        Ok(TenantUids {
            path: state_dir.join(FILE_NAME),
            lock_path: state_dir.join(".tenant-uids.lock"),
            range,
            local: Mutex::new(()),
        })
    }

    pub fn range(&self) -> UidRange {
        self.range
    }

    /// The tenant's user and group, allocated now if it has none yet. A tenant keeps the
    /// uid it got even if the range changes later.
    pub fn ids_for(&self, tenant: &Name) -> Result<RunAs> {
        let _local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let _file = self.flock()?;
        let mut all = self.read()?;
        if let Some(&uid) = all.tenants.get(tenant.as_str()) {
            return Ok(RunAs { uid, gid: uid });
        }
        let taken_users = system_ids(Path::new("/etc/passwd"));
        let taken_groups = system_ids(Path::new("/etc/group"));
        let used: std::collections::HashSet<u32> = all.tenants.values().copied().collect();
        let uid = (self.range.first..=self.range.last)
            .find(|id| {
                *id != 0
                    && !used.contains(id)
                    && !taken_users.contains(id)
                    && !taken_groups.contains(id)
            })
            .ok_or_else(|| {
                Error::Isolation(format!(
                    "no free uid left in {} for tenant {tenant}: widen --tenant-uids",
                    self.range
                ))
            })?;
        all.tenants.insert(tenant.as_str().to_string(), uid);
        self.write(&all)?;
        tracing::info!(tenant = %tenant, uid, "allocated a user for the tenant");
        Ok(RunAs { uid, gid: uid })
    }

    /// Every allocation, by tenant name.
    pub fn allocations(&self) -> Result<BTreeMap<String, u32>> {
        let _local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let _file = self.flock()?;
        Ok(self.read()?.tenants)
    }

    fn flock(&self) -> Result<std::fs::File> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(|e| Error::io("open lock file", &self.lock_path, e))?;
        // SAFETY: flock on an fd we own; released when the file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(
                "lock",
                &self.lock_path,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(f)
    }

    fn read(&self) -> Result<Allocations> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Allocations::default()),
            Err(e) => return Err(Error::io("read", &self.path, e)),
        };
        let all: Allocations = serde_json::from_slice(&bytes).map_err(|e| Error::CorruptState {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let mut seen = std::collections::HashSet::new();
        for (tenant, uid) in &all.tenants {
            if *uid == 0 || !seen.insert(*uid) {
                return Err(Error::CorruptState {
                    path: self.path.clone(),
                    message: format!("uid {uid} of tenant {tenant} is 0 or given twice"),
                });
            }
        }
        Ok(all)
    }

    fn write(&self, all: &Allocations) -> Result<()> {
        crate::state::write_json_atomic(&self.path, &self.path.with_extension("json.tmp"), all)?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// The numeric ids (third field) of a passwd- or group-style file; empty if unreadable.
fn system_ids(path: &Path) -> std::collections::HashSet<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges() {
        assert_eq!(
            "200000..265535".parse::<UidRange>().unwrap(),
            UidRange::default()
        );
        assert_eq!(
            "5000..=5001".parse::<UidRange>().unwrap(),
            UidRange {
                first: 5000,
                last: 5001
            }
        );
        for bad in [
            "",
            "5000",
            "10..20",
            "6000..5000",
            "a..b",
            "5000..4294967295",
        ] {
            assert!(bad.parse::<UidRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_system_ids() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        std::fs::write(
            &p,
            "root:x:0:0::/root:/bin/sh\nbad line\nu:x:1234:1234::/:/bin/sh\n",
        )
        .unwrap();
        let ids = system_ids(&p);
        assert!(ids.contains(&0) && ids.contains(&1234) && ids.len() == 2);
    }
}
