//! The vocabulary of Gantry: names, scopes, roles, the permission table, the error-code
//! table and the resource types that the API, the store, the client and the CLI exchange.
//!
//! This crate is pure data and pure functions. It must never do I/O, hold state, or depend
//! on any other Gantry crate: every other crate depends on it.

pub mod artifacts;
pub mod certs;
pub mod clock;
pub mod codes;
pub mod kms;
pub mod name;
pub mod rbac;
pub mod routes;
pub mod scan;
pub mod services;
pub mod types;

pub use codes::{Code, ErrorBody, ErrorDetail};
pub use name::{Name, PrincipalName, Scope};
pub use rbac::{Action, Resource, Role};

/// A value that failed validation. Carries the code the API answers with and a message
/// that is safe to show to the caller (it never contains secret material).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub code: Code,
    pub message: String,
}

impl Invalid {
    pub fn new(message: impl Into<String>) -> Self {
        Invalid {
            code: Code::InvalidArgument,
            message: message.into(),
        }
    }
}
