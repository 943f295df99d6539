//! The documents of the key hierarchy, KMS and secrets APIs.
//!
//! Plaintext and values travel base64-encoded (`*_b64` fields) or as UTF-8 text; no type here
//! implements `Display`, and the types that can hold a secret value (`PutSecret`,
//! `SecretValue`, `EncryptRequest`, `Plaintext`, `DataKey`, `Unseal`) print `..` for it in
//! `Debug`, so a value cannot reach a log line by accident.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::types::wire_time;
use crate::{Invalid, Name};

/// Default automatic rotation period of a key.
pub const DEFAULT_ROTATION_DAYS: u32 = 365;
/// Largest plaintext `encrypt` accepts (as AWS KMS).
pub const MAX_ENCRYPT_PLAINTEXT: usize = 4096;
/// Largest secret value.
pub const MAX_SECRET_VALUE: usize = 64 * 1024;
/// Recovery window bounds of deleted secrets and keys pending deletion.
pub const MIN_RECOVERY_DAYS: u32 = 7;
pub const MAX_RECOVERY_DAYS: u32 = 30;
pub const DEFAULT_SECRET_RECOVERY_DAYS: u32 = 30;
/// Encryption context limits.
pub const MAX_CONTEXT_PAIRS: usize = 16;
pub const MAX_CONTEXT_BYTES: usize = 1024;

macro_rules! redacted_debug {
    ($t:ident, $($field:ident),*) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($t))$(.field(stringify!($field), &"..") )*.finish_non_exhaustive()
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
    Destroyed,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "enabled",
            KeyState::Disabled => "disabled",
            KeyState::PendingDeletion => "pending_deletion",
            KeyState::Destroyed => "destroyed",
        }
    }
    pub fn parse(s: &str) -> Option<KeyState> {
        [
            KeyState::Enabled,
            KeyState::Disabled,
            KeyState::PendingDeletion,
            KeyState::Destroyed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A KMS key of an environment (metadata only; material never leaves the server).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyInfo {
    /// `TENANT/ENV/NAME`
    pub name: String,
    pub state: KeyState,
    pub current_version: u32,
    pub min_decrypt_version: u32,
    pub rotation_days: u32,
    #[serde(with = "wire_time::option")]
    pub next_rotation_at: Option<OffsetDateTime>,
    #[serde(with = "wire_time::option")]
    pub deletion_at: Option<OffsetDateTime>,
    pub description: String,
    #[serde(with = "wire_time")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: Name,
    #[serde(default)]
    pub rotation_days: Option<u32>,
    #[serde(default)]
    pub description: String,
}

/// Settings of a key that can change after creation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[serde(default)]
    pub rotation_days: Option<u32>,
    /// Versions below this one no longer decrypt.
    #[serde(default)]
    pub min_decrypt_version: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDeletion {
    pub days: u32,
}

pub type Context = BTreeMap<String, String>;

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncryptRequest {
    pub plaintext_b64: String,
    #[serde(default)]
    pub context: Context,
}
redacted_debug!(EncryptRequest, plaintext_b64);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ciphertext {
    pub ciphertext: String,
    pub key_version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DecryptRequest {
    pub ciphertext: String,
    #[serde(default)]
    pub context: Context,
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Plaintext {
    pub plaintext_b64: String,
    pub key_version: u32,
}
redacted_debug!(Plaintext, plaintext_b64);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GenerateDataKey {
    /// 16 or 32 (default 32).
    #[serde(default)]
    pub bytes: Option<u32>,
    #[serde(default)]
    pub context: Context,
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct DataKey {
    pub plaintext_b64: String,
    pub ciphertext: String,
    pub key_version: u32,
}
redacted_debug!(DataKey, plaintext_b64);

/// Checks an encryption context: bounded, printable keys.
pub fn check_context(c: &Context) -> Result<(), Invalid> {
    let bytes: usize = c.iter().map(|(k, v)| k.len() + v.len()).sum();
    if c.len() > MAX_CONTEXT_PAIRS || bytes > MAX_CONTEXT_BYTES {
        return Err(Invalid::new(format!(
            "encryption context too large: at most {MAX_CONTEXT_PAIRS} pairs and {MAX_CONTEXT_BYTES} bytes"
        )));
    }
    if c.keys()
        .any(|k| k.is_empty() || k.chars().any(char::is_control))
    {
        return Err(Invalid::new(
            "encryption context keys must be non-empty and printable",
        ));
    }
    Ok(())
}

// ---- secrets ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    Text,
    Json,
    Binary,
}

impl ContentType {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Text => "text",
            ContentType::Json => "json",
            ContentType::Binary => "binary",
        }
    }
    pub fn parse(s: &str) -> Option<ContentType> {
        [ContentType::Text, ContentType::Json, ContentType::Binary]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretState {
    Active,
    Deleted,
}

/// A secret's metadata. Never its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecretInfo {
    /// `TENANT/ENV/NAME`
    pub name: String,
    pub state: SecretState,
    pub current_version: u32,
    pub previous_version: Option<u32>,
    pub description: String,
    #[serde(with = "wire_time")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    #[serde(with = "wire_time")]
    pub updated_at: OffsetDateTime,
    pub updated_by: String,
    #[serde(with = "wire_time::option")]
    pub deleted_at: Option<OffsetDateTime>,
    /// When a deleted secret is destroyed for good.
    #[serde(with = "wire_time::option")]
    pub purge_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecretVersionInfo {
    pub version: u32,
    /// `current`, `previous`, or absent.
    pub stage: Option<String>,
    pub content_type: ContentType,
    pub size: u64,
    /// The key version the value is encrypted under.
    pub key_version: u32,
    #[serde(with = "wire_time")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

/// Puts a new version. Exactly one of `value` (UTF-8 text or JSON) or `value_b64` (binary).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub value_b64: Option<String>,
    /// Default `text` for `value`, `binary` for `value_b64`.
    #[serde(default)]
    pub content_type: Option<ContentType>,
    /// Check-and-set: the current version must be this (0: the secret must not exist).
    #[serde(default)]
    pub if_version: Option<u32>,
    #[serde(default)]
    pub description: Option<String>,
}
redacted_debug!(PutSecret, value, value_b64);

#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct SecretValue {
    pub name: String,
    pub version: u32,
    pub content_type: ContentType,
    /// Set for text and JSON values.
    pub value: Option<String>,
    /// Set for binary values.
    pub value_b64: Option<String>,
}
redacted_debug!(SecretValue, value, value_b64);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeleteSecret {
    #[serde(default)]
    pub recovery_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DestroySecret {
    /// Destroy now, inside the recovery window (admin only).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    Open,
    Fulfilled,
    Cancelled,
}

/// A developer's request that an operator put a secret's value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecretRequest {
    pub id: String,
    /// The secret to fill: `TENANT/ENV/NAME`.
    pub secret: String,
    pub description: String,
    pub state: RequestState,
    pub requested_by: String,
    #[serde(with = "wire_time")]
    pub requested_at: OffsetDateTime,
    pub closed_by: Option<String>,
    #[serde(with = "wire_time::option")]
    pub closed_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateSecretRequest {
    pub name: Name,
    #[serde(default)]
    pub description: String,
}

// ---- seal ----

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SealStatus {
    pub sealed: bool,
    /// `file`, `passphrase` or `pkcs11`.
    pub seal: String,
}

/// Unseals with a passphrase (passphrase seal) or a PIN (PKCS#11 seal).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Unseal {
    pub secret: String,
}
redacted_debug!(Unseal, secret);
