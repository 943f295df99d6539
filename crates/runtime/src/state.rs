//! The small per-replica state file that lets a restarted supervisor re-adopt running
//! replicas, and the `/proc` checks that tell whether a pid is still the same process.
//!
//! A state file holds the pid, process group, port, the process's kernel start time, the
//! spec hash, the cgroup dirs and counters. It must never hold an environment value (the
//! spec's `Env` is not serializable on purpose) and is written 0600, atomically.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::spec::ReplicaId;

/// What is persisted about one running replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedReplica {
    pub id: ReplicaId,
    pub pid: i32,
    pub pgid: i32,
    pub port: Option<u16>,
    /// Field 22 of `/proc/PID/stat` (clock ticks since boot): with the pid, it identifies
    /// the process across pid reuse.
    pub proc_start_ticks: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub spec_hash: String,
    pub restarts: u32,
    pub cgroup_dirs: Vec<PathBuf>,
    pub enforced_limits: Vec<String>,
}

pub(crate) fn path(state_dir: &Path, slug: &str) -> PathBuf {
    state_dir.join(format!("{slug}.json"))
}

/// Writes atomically (temp file, fsync, rename) with mode 0600.
pub(crate) fn save(state_dir: &Path, slug: &str, st: &PersistedReplica) -> Result<()> {
    let final_path = path(state_dir, slug);
    let tmp = state_dir.join(format!(".{slug}.json.tmp"));
    write_json_atomic(&final_path, &tmp, st)
}

/// Writes `value` as JSON to `final_path` through `tmp` (mode 0600, fsync, rename), so a
/// reader sees the old document or the new one, never a part.
pub(crate) fn write_json_atomic<T: Serialize>(
    final_path: &Path,
    tmp: &Path,
    value: &T,
) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::CorruptState {
        path: final_path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| Error::io("create state file", tmp, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write state file", tmp, e))?;
    std::fs::rename(tmp, final_path).map_err(|e| Error::io("rename state file", tmp, e))
}

/// Reads a state file; `Ok(None)` when there is none.
pub(crate) fn load(state_dir: &Path, slug: &str) -> Result<Option<PersistedReplica>> {
    load_path(&path(state_dir, slug))
}

fn load_path(p: &Path) -> Result<Option<PersistedReplica>> {
    let bytes = match std::fs::read(p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read state file", p, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::CorruptState {
            path: p.to_path_buf(),
            message: e.to_string(),
        })
}

pub(crate) fn remove(state_dir: &Path, slug: &str) {
    let _ = std::fs::remove_file(path(state_dir, slug));
}

/// Every state file in the directory (unreadable ones are skipped with a warning).
pub(crate) fn load_all(state_dir: &Path) -> Result<Vec<PersistedReplica>> {
    let rd = match std::fs::read_dir(state_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list state dir", state_dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let p = entry.path();
        let is_state = p.extension().is_some_and(|e| e == "json")
            && !p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with('.') || n == crate::uids::FILE_NAME
            });
        if !is_state {
            continue;
        }
        match load_path(&p) {
            Ok(Some(st)) => out.push(st),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "skipping state file"),
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// `(state, start ticks)` from `/proc/PID/stat`; `None` if there is no such process.
pub(crate) fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything: parse after
    // the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?; // field 22 overall
    Some((state, start))
}

/// `(state, process group)` from `/proc/PID/stat`.
pub(crate) fn proc_group(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?; // field 5 overall
    Some((state, pgrp))
}

/// True if `pid` is a live (not zombie, not dead) process started at `start_ticks`.
pub(crate) fn same_process_alive(pid: i32, start_ticks: u64) -> bool {
    matches!(proc_stat(pid), Some((s, t)) if t == start_ticks && s != 'Z' && s != 'X')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_start_time() {
        let me = std::process::id() as i32;
        let (state, ticks) = proc_stat(me).unwrap();
        assert!(state != 'Z');
        assert!(same_process_alive(me, ticks));
        assert!(!same_process_alive(me, ticks + 1));
        assert!(proc_stat(i32::MAX).is_none());
    }

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let st = PersistedReplica {
            id: "a/b/c#1-0".parse().unwrap(),
            pid: 42,
            pgid: 42,
            port: Some(8080),
            proc_start_ticks: 7,
            started_at: OffsetDateTime::UNIX_EPOCH,
            spec_hash: "h".into(),
            restarts: 3,
            cgroup_dirs: vec![],
            enforced_limits: vec![],
        };
        save(dir.path(), "a.b.c.1-0", &st).unwrap();
        assert_eq!(load(dir.path(), "a.b.c.1-0").unwrap(), Some(st.clone()));
        assert_eq!(load_all(dir.path()).unwrap(), vec![st]);
        assert_eq!(load(dir.path(), "none").unwrap(), None);
        std::fs::write(path(dir.path(), "bad"), "{").unwrap();
        assert!(matches!(
            load(dir.path(), "bad"),
            Err(Error::CorruptState { .. })
        ));
    }
}
