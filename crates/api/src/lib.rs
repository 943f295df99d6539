//! The control plane's HTTPS API: the one way to read and change desired state. The CLI,
//! `gantry apply` and the console are its clients.
//!
//! A request flows: TLS accept -> request id -> route table -> authentication (audited on
//! failure) -> handler (authorization against `model::rbac`, audited on denial) -> store
//! (change and audit event in one transaction) -> JSON answer. This crate must never let a
//! client-caused error become a 500, and never log a token or a request body.

// The OpenAPI schemas are one large `json!` literal.
#![recursion_limit = "512"]

mod auth;
mod error;
mod handlers;
mod http;
pub mod openapi;
pub mod routes;
mod server;

use std::sync::Arc;
use std::time::Instant;

pub use error::ApiError;
pub use server::{start, Config, IsolationChoice, Running, StartError};

/// The version of this build, reported by `/v1/health` and `/v1/status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Shared state of the API server.
pub struct State {
    pub store: Arc<store::Store>,
    pub keyring: Arc<secrets::Keyring>,
    pub certs: Arc<certs::Certs>,
    pub registry: Arc<artifacts::Registry>,
    pub services: Arc<services::Services>,
    pub started: Instant,
    pub limiter: auth::AuthLimiter,
}

/// The seal status document.
pub(crate) fn seal_status(st: &State) -> model::kms::SealStatus {
    model::kms::SealStatus {
        sealed: st.keyring.is_sealed(),
        seal: st.keyring.seal_kind().to_string(),
    }
}
