//! ACME (RFC 8555) certificate issuance for Gantry's edge.
//!
//! The edge terminates TLS; this crate obtains and renews its certificates
//! from an ACME CA (Let's Encrypt, or pebble in tests) using `instant-acme`
//! for the protocol, rcgen for keys and CSRs, and rustls with the ring
//! provider for HTTPS.
//!
//! ```no_run
//! # async fn demo() -> Result<(), acme::AcmeError> {
//! use acme::{AcmeClient, ChallengeSolver, Http01Tokens};
//!
//! let tokens = Http01Tokens::new(); // also handed to the port-80 listener
//! let mut client = AcmeClient::new("https://acme-v02.api.letsencrypt.org/directory", None)?;
//! let credentials = client.create_account(Some("ops@example.com"), true).await?;
//! let stored = credentials.to_json()?; // persist encrypted; later: client.restore(&creds)
//! let issued = client
//!     .issue(&["www.example.com".to_string()], &ChallengeSolver::Http01(tokens))
//!     .await?;
//! println!("valid until {}", issued.not_after);
//! # let _ = stored; Ok(()) }
//! ```
//!
//! Must never: install or depend on a process-wide rustls crypto provider,
//! log or return private keys (certificate or account), wait without a
//! bound, or panic on data that came from the network.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cert;
mod client;
mod dns01;
mod domain;
mod error;
mod http01;
mod solver;
mod transport;

/// Test support (pebble process harness); never used by production code paths.
#[doc(hidden)]
pub mod testkit;

pub use cert::{chain_der, leaf_info, renewal_due, CertInfo, DEFAULT_RENEW_BEFORE};
pub use client::{AccountCredentials, AcmeClient, Issued, Timeouts};
pub use dns01::{BoxFuture, DnsProvider, WebhookDns};
pub use error::{AcmeError, BoxError, Result};
pub use http01::{Http01Tokens, HTTP01_PATH_PREFIX};
pub use solver::ChallengeSolver;
