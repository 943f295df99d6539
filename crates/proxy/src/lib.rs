//! The edge's data plane: an HTTP reverse proxy that routes by host and path to groups of
//! upstream endpoints, balances load, retries safely, ejects failing endpoints, and reads
//! its configuration from an immutable routing snapshot swapped atomically.
//!
//! This crate depends on snapshots only: it never reads the store or calls the API. The
//! control plane builds a `RouteTable` and calls `Proxy::update`; requests in flight keep
//! the snapshot they started with, new requests see the new one, none is dropped.

mod accept;
mod balance;
mod capped;
pub mod certs;
mod forward;
mod h1;
pub mod health;
pub mod metrics;
pub mod placement;
mod pool;
mod rng;
mod snapshot;
mod wire;

pub use balance::Balancer;
pub use certs::{CertEntry, CertTable, SniResolver};
pub use forward::{
    bind_workers, ChallengeSource, MetricsSource, Proxy, Scheme, TlsConfig, Workers,
};
pub use health::HealthCheck;
pub use metrics::RouteStats;
pub use placement::Placement;
pub use snapshot::{Endpoint, HeaderRules, PathMatch, Route, RouteTable, Upstream};
