//! Vulnerability scanning of artifacts, offline: reads the lockfiles an artifact carries
//! (`Cargo.lock`, `package-lock.json`, `requirements.txt`) into an inventory of pinned
//! packages, normalizes OSV records (the format of the OSV exports an operator loads) into
//! advisories, and matches the two.
//!
//! Pure functions over bytes and values: this crate must never do I/O, reach the network,
//! or guess. A version it cannot compare is not reported as affected by a range (it may
//! still match an advisory's explicit version list), and what could not be read is said.

mod lockfiles;
mod matching;
mod osv;

pub use lockfiles::{inventory, is_lockfile, MAX_LOCKFILE_BYTES};
pub use matching::{affects, findings};
pub use osv::{normalize, Normalized};

/// An OSV record that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScanError(pub String);
