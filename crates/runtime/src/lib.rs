//! The service runtime: runs each replica of a service as a supervised process and
//! reports what it is doing.
//!
//! [`Runtime`] is the interface the platform programs against (a container or Kubernetes
//! runtime can implement it later); [`LocalProcessRuntime`] runs replicas as local
//! processes on this machine: one supervision task per replica spawns the process in its
//! own session and process group, captures its output into rotated log files, restarts it
//! with exponential backoff, stops it with SIGTERM then SIGKILL, applies resource limits
//! ([`limits`]), runs it as its tenant's own unprivileged user ([`uids`]) and inside a
//! bubblewrap sandbox where asked ([`sandbox`]), and persists enough state to re-adopt
//! replicas after the supervisor itself restarts ([`state`]).
//!
//! This crate must never write an environment value (secrets travel there) to disk, to a
//! log or to an error message, and never depends on the store or the API: it gets specs
//! and reports statuses.

pub mod error;
pub mod limits;
pub mod local;
pub mod logs;
pub mod sandbox;
pub mod spec;
pub mod state;
pub mod status;
pub mod uids;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

pub use error::{Error, Result};
pub use limits::{CgroupHierarchy, LimitEnforcer};
pub use local::{LocalConfig, LocalProcessRuntime};
pub use logs::{LogLine, LogRotation, Stream};
pub use sandbox::IsolationMode;
pub use spec::{
    split_command, Env, Limits, ReplicaId, ReplicaSpec, RestartMode, RestartPolicy, RunAs,
};
pub use state::PersistedReplica;
pub use status::{AdoptOutcome, ExitInfo, ReplicaHandle, ReplicaState, ReplicaStatus};
pub use uids::{TenantUids, UidRange};

/// A boxed future, so that [`Runtime`] can be used as `dyn Runtime`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs replicas somewhere. Implementations supervise what they start until `stop`.
pub trait Runtime: Send + Sync {
    /// Starts a replica and supervises it (restarts per its policy) until `stop`.
    /// Fails at once if the first spawn fails; later spawn failures are retried with
    /// backoff and shown in the status.
    fn start(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<ReplicaHandle>>;

    /// Stops a replica: SIGTERM to its process group, SIGKILL after `grace` (the spec's
    /// grace period when `None`), then forgets it. Returns its final status.
    fn stop<'a>(
        &'a self,
        id: &'a ReplicaId,
        grace: Option<Duration>,
    ) -> BoxFuture<'a, Result<ReplicaStatus>>;

    /// The current status of a supervised replica.
    fn status<'a>(&'a self, id: &'a ReplicaId) -> BoxFuture<'a, Result<ReplicaStatus>>;

    /// Every supervised replica, sorted by id.
    fn list(&self) -> BoxFuture<'_, Vec<ReplicaStatus>>;

    /// Resumes supervising a replica left running by a previous supervisor. `spec` is
    /// what to restart it with when it exits (its env values are not persisted).
    fn adopt(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<AdoptOutcome>>;

    /// Status changes of a supervised replica, as they happen.
    fn watch(&self, id: &ReplicaId) -> Result<watch::Receiver<ReplicaStatus>>;

    /// The last `n` log lines (`TIMESTAMP STREAM | TEXT`), oldest first.
    fn logs_tail<'a>(&'a self, id: &'a ReplicaId, n: usize) -> BoxFuture<'a, Result<Vec<String>>>;

    /// New log lines from now on (`service logs --follow`). A slow follower misses lines
    /// (`RecvError::Lagged`) rather than slowing the replica down.
    fn logs_follow(&self, id: &ReplicaId) -> Result<broadcast::Receiver<LogLine>>;
}
