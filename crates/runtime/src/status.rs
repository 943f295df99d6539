//! What a runtime reports about replicas: state, pid, port, restarts, last exit, the
//! limits in force. Pure data; it must never carry an environment value.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use time::OffsetDateTime;

use crate::sandbox::IsolationMode;
use crate::spec::ReplicaId;
use crate::state::PersistedReplica;

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaState {
    /// Being spawned.
    Starting,
    /// The process is up.
    Running,
    /// It exited; waiting before the next start.
    Backoff,
    /// SIGTERM sent; waiting for the group to exit (SIGKILL after the grace period).
    Stopping,
    /// Stopped on request, or exited with status 0 under a policy that does not restart.
    Stopped,
    /// Exited unsuccessfully under a policy that does not restart it.
    Failed,
}

impl ReplicaState {
    /// Stopped or failed: nothing runs and nothing will.
    pub fn is_final(self) -> bool {
        matches!(self, ReplicaState::Stopped | ReplicaState::Failed)
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal, if a signal ended it.
    pub signal: Option<i32>,
    /// False for an adopted process (not our child: its status cannot be collected).
    pub known: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl ExitInfo {
    pub(crate) fn from_status(st: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        ExitInfo {
            code: st.code(),
            signal: st.signal(),
            known: true,
            at: OffsetDateTime::now_utc(),
        }
    }

    pub(crate) fn unknown() -> Self {
        ExitInfo {
            code: None,
            signal: None,
            known: false,
            at: OffsetDateTime::now_utc(),
        }
    }

    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit status {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            (None, None) => write!(f, "unknown (adopted process)"),
        }
    }
}

/// A replica as a runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaStatus {
    pub id: ReplicaId,
    pub state: ReplicaState,
    /// The process (group leader) while one runs.
    pub pid: Option<u32>,
    /// The loopback port the replica listens on (127.0.0.1).
    pub port: Option<u16>,
    /// How many times it was started again after an exit.
    pub restarts: u32,
    pub last_exit: Option<ExitInfo>,
    /// When the current process started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// Which limits are enforced and how (see [`crate::limits`]).
    pub enforced_limits: Vec<String>,
    /// Re-adopted from a previous supervisor (until its next restart).
    pub adopted: bool,
    /// The last spawn error, if the last start failed.
    pub last_error: Option<String>,
    /// The current log file.
    pub log_file: PathBuf,
    /// What isolates it: `none`, `users` (its own uid) or `bubblewrap` (its own uid in a
    /// sandbox).
    pub isolation: IsolationMode,
    /// The uid it runs as, when not the supervisor's.
    pub uid: Option<u32>,
}

/// What `start` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaHandle {
    pub id: ReplicaId,
    pub pid: u32,
    pub port: Option<u16>,
    pub log_file: PathBuf,
}

/// What `adopt` found.
#[derive(Debug)]
pub enum AdoptOutcome {
    /// The same process is alive and now supervised again. `spec_changed` says that it
    /// was started from a different spec (it keeps running as it is; the new spec is used
    /// when it is restarted).
    Adopted {
        handle: ReplicaHandle,
        spec_changed: bool,
    },
    /// A state file exists but its process is gone (or the pid now belongs to another
    /// process): the caller should start the replica again. The state file is removed.
    Dead { last: PersistedReplica },
    /// Nothing is known about this replica.
    NotFound,
}
