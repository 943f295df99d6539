//! The one error type of the runtime crate.
//!
//! Messages name the replica, the path or the operation that failed. They must never
//! contain an environment variable's value (secrets travel in the environment).

use std::path::PathBuf;

/// Everything the runtime can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A replica id, command line or spec field that does not validate.
    #[error("invalid {what}: {message}")]
    Invalid { what: &'static str, message: String },

    /// `start` for a replica this runtime already supervises.
    #[error("replica {0} is already supervised")]
    AlreadyRunning(String),

    /// An operation on a replica this runtime does not supervise.
    #[error("replica {0} is not supervised by this runtime")]
    NotFound(String),

    /// No free loopback port could be allocated.
    #[error("could not allocate a loopback port: {0}")]
    Port(#[source] std::io::Error),

    /// The process could not be spawned (bad command, working dir, permissions).
    #[error("could not spawn replica {id} (`{program}`): {source}")]
    Spawn {
        id: String,
        program: String,
        #[source]
        source: std::io::Error,
    },

    /// A file or directory operation of the runtime's own dirs (logs, state, cgroups).
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A persisted state file that cannot be read back.
    #[error("corrupt state file {}: {message}", path.display())]
    CorruptState { path: PathBuf, message: String },

    /// Tenant users or the sandbox cannot be set up (no free uid, no working `bwrap`,
    /// a directory tenants cannot reach).
    #[error("isolation: {0}")]
    Isolation(String),

    /// The supervision task of a replica is gone (it panicked or the runtime shut down).
    #[error("the supervisor of replica {0} is gone")]
    SupervisorGone(String),
}

impl Error {
    pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            message: message.into(),
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
