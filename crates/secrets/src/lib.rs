//! The key hierarchy at work: the keyring (sealed or unsealed root, unwrapped key versions),
//! KMS operations for applications, the secrets store, and the rotation reconciler.
//!
//! ```text
//! root key (sealed: key file | passphrase/Argon2id | HSM over PKCS#11)
//!   └─ environment key  environment/acme/staging      versions wrapped by the root key
//!        ├─ KMS key     kms/acme/staging/payments     versions wrapped by the environment key
//!        │    └─ application data (encrypt, data keys)   gk1 ciphertexts held by applications
//!        ├─ secret key  secret/acme/staging/db        versions wrapped by the environment key
//!        │    └─ secret versions                        gk1 ciphertexts in the store
//!        └─ certificate key  certificate/acme/staging/api   wraps the TLS private key
//! root key ── installation blobs (the ACME account key), wrapped directly
//! ```
//!
//! This crate is the only place key material is unwrapped. It must never put plaintext or
//! material in an error, a log line or an audit event, and it refuses everything while sealed.

mod blobs;
mod keyring;
mod kms;
mod rotation;
mod vault;

pub use keyring::{Keyring, SealSetup};
pub use rotation::{Rotator, TickReport};
pub use vault::Which;

use model::Code;
use store::StoreError;

/// Errors of the key hierarchy. Messages are safe to show: they name keys and versions,
/// never values.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("the server is sealed; run `gantry unseal`")]
    Sealed,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Crypto(#[from] keys::KeyError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadCiphertext(String),
    #[error("{0}")]
    Config(String),
}

impl SecretsError {
    pub fn code(&self) -> Code {
        match self {
            SecretsError::Sealed => Code::Sealed,
            SecretsError::Store(e) => e.code(),
            SecretsError::Crypto(keys::KeyError::Decrypt)
            | SecretsError::Crypto(keys::KeyError::Malformed(_)) => Code::InvalidCiphertext,
            SecretsError::Crypto(keys::KeyError::BadUnsealKey) => Code::Unauthenticated,
            SecretsError::Crypto(_) => Code::Internal,
            SecretsError::Invalid(_) => Code::InvalidArgument,
            SecretsError::Conflict(_) => Code::Conflict,
            SecretsError::TooLarge(_) => Code::PayloadTooLarge,
            SecretsError::NotFound(_) => Code::NotFound,
            SecretsError::BadCiphertext(_) => Code::InvalidCiphertext,
            SecretsError::Config(_) => Code::Internal,
        }
    }
}

pub type Result<T> = std::result::Result<T, SecretsError>;

pub(crate) fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub(crate) fn unb64(s: &str, what: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| SecretsError::Invalid(format!("{what} is not valid base64")))
}
