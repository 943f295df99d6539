//! The secrets store: versioned values, each secret under its own key, with stages
//! (`current`, `previous`), check-and-set, soft delete with a recovery window, restore,
//! destroy, and requests that an operator fills.
//!
//! A version's ciphertext is bound to the secret's name and the version number, so a value
//! copied to another secret, tenant or version does not decrypt. Every read of a value is
//! audited (who, which secret, which version) before the value is returned.

use keys::envelope::{self, Header};
use model::kms::{
    ContentType, SecretInfo, SecretRequest, SecretState, SecretValue, SecretVersionInfo,
    DEFAULT_SECRET_RECOVERY_DAYS, MAX_RECOVERY_DAYS, MAX_SECRET_VALUE, MIN_RECOVERY_DAYS,
};
use model::types::Outcome;
use model::Scope;
use store::audit::NewEvent;
use store::keyring::KeyPurpose;
use store::secrets::{NewVersion, VersionOf};
use store::{Actor, StoreError};

use crate::{b64, unb64, Keyring, Result, SecretsError};

fn binding(scope: &Scope, name: &str, version: u32) -> Vec<u8> {
    envelope::binding(
        &format!("secret:{scope}/{name}#{version}"),
        &Default::default(),
    )
}

/// Which version to read.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    Current,
    Previous,
    Version(u32),
}

impl Keyring {
    /// Stores `value` as a new version. `if_version` is a check-and-set on the current
    /// version (0: the secret must not exist yet).
    #[allow(clippy::too_many_arguments)]
    pub async fn put_secret(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        value: &[u8],
        content_type: ContentType,
        if_version: Option<u32>,
        description: Option<&str>,
    ) -> Result<SecretInfo> {
        if value.len() > MAX_SECRET_VALUE {
            return Err(SecretsError::TooLarge(format!(
                "secret values are limited to {MAX_SECRET_VALUE} bytes"
            )));
        }
        if content_type == ContentType::Json
            && serde_json::from_slice::<serde_json::Value>(value).is_err()
        {
            return Err(SecretsError::Invalid(
                "the value is not valid JSON (content_type json)".into(),
            ));
        }
        if content_type == ContentType::Text && std::str::from_utf8(value).is_err() {
            return Err(SecretsError::Invalid(
                "the value is not UTF-8 text; use binary".into(),
            ));
        }
        // The version number is part of the binding, so encrypt for the version the store
        // will assign, and retry if another writer got there first (unless the caller asked
        // for check-and-set, which then fails as asked).
        for _ in 0..8 {
            let existing = self.store.secret_and_key(scope, name).await?;
            let current = existing
                .as_ref()
                .map(|(i, _)| i.current_version)
                .unwrap_or(0);
            let expected = if_version.unwrap_or(current);
            let v = expected + 1;
            let (key, material, new_key) = match existing {
                Some((_, k)) => {
                    let m = self.material(&k.id, k.current_version).await?;
                    (k, m, None)
                }
                None => {
                    let (k, wrapped, m) = self
                        .new_child(
                            KeyPurpose::Secret,
                            scope,
                            name,
                            model::kms::DEFAULT_ROTATION_DAYS,
                            "secret key",
                            actor,
                        )
                        .await?;
                    (k.clone(), m, Some((k, wrapped)))
                }
            };
            let h = Header {
                key_id: key.id.clone(),
                version: key.current_version,
            };
            let ct = b64(&envelope::encrypt(
                &h,
                &material,
                &binding(scope, name, v),
                value,
            )?);
            let version = NewVersion {
                ciphertext: &ct,
                content_type,
                size: value.len() as u64,
                key_version: key.current_version,
            };
            let new_key_ref = new_key.as_ref().map(|(k, w)| (k, w.as_str()));
            match self
                .store
                .put_secret(
                    actor,
                    scope,
                    name,
                    version,
                    Some(expected),
                    description,
                    new_key_ref,
                )
                .await
            {
                Ok(info) => return Ok(info),
                Err(StoreError::VersionMismatch(_)) if if_version.is_none() => continue,
                Err(StoreError::AlreadyExists(_)) if if_version.is_none() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SecretsError::Conflict(format!(
            "secret {scope}/{name} is being changed concurrently; retry"
        )))
    }

    pub async fn secret_info(&self, scope: &Scope, name: &str) -> Result<SecretInfo> {
        Ok(self.store.secret(scope, name).await?.0)
    }

    pub async fn secret_list(&self, scope: &Scope) -> Result<Vec<SecretInfo>> {
        Ok(self.store.secrets(scope).await?)
    }

    pub async fn secret_versions(
        &self,
        scope: &Scope,
        name: &str,
    ) -> Result<Vec<SecretVersionInfo>> {
        Ok(self
            .store
            .secret_versions(scope, name)
            .await?
            .into_iter()
            .map(|v| v.info)
            .collect())
    }

    /// Reads a value. The read is audited before the value is decrypted and returned.
    pub async fn read_secret(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        which: Which,
    ) -> Result<SecretValue> {
        if self.is_sealed() {
            return Err(SecretsError::Sealed);
        }
        let sel = match which {
            Which::Current => VersionOf::Current,
            Which::Previous => VersionOf::Previous,
            Which::Version(v) => VersionOf::Number(v),
        };
        // The environment, the secret and the version in one statement.
        let (info, key_id, stored) = self.store.secret_with_version(scope, name, sel).await?;
        if info.state == SecretState::Deleted {
            return Err(SecretsError::Conflict(format!(
                "secret {scope}/{name} is deleted; restore it to read it"
            )));
        }
        let v = match which {
            Which::Current => info.current_version,
            Which::Version(v) => v,
            Which::Previous => info.previous_version.ok_or_else(|| {
                SecretsError::NotFound(format!("secret {scope}/{name} has no previous version"))
            })?,
        };
        let stored = stored.ok_or_else(|| {
            SecretsError::NotFound(format!("secret {scope}/{name} has no version {v}"))
        })?;
        self.store
            .record(
                actor,
                NewEvent {
                    action: "secret.read-value".into(),
                    resource: format!("secrets/{scope}/{name}"),
                    scope: scope.clone(),
                    outcome: Outcome::Success,
                    detail: format!("version={v}"),
                },
            )
            .await?;
        let ct = unb64(&stored.ciphertext, "stored ciphertext")?;
        let (h, _) = envelope::header(&ct)?;
        if h.key_id != key_id {
            return Err(SecretsError::BadCiphertext(format!(
                "secret {scope}/{name} version {v} is not under its own key"
            )));
        }
        let material = self.material(&key_id, h.version).await?;
        let pt = envelope::decrypt(&material, &ct, &binding(scope, name, v))?;
        let ctype = stored.info.content_type;
        let (value, value_b64) =
            match ctype {
                ContentType::Binary => (None, Some(b64(&pt))),
                _ => (
                    Some(String::from_utf8(pt.to_vec()).map_err(|_| {
                        SecretsError::BadCiphertext("stored text is not UTF-8".into())
                    })?),
                    None,
                ),
            };
        Ok(SecretValue {
            name: info.name,
            version: v,
            content_type: ctype,
            value,
            value_b64,
        })
    }

    pub async fn delete_secret(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        recovery_days: Option<u32>,
    ) -> Result<SecretInfo> {
        let days = recovery_days.unwrap_or(DEFAULT_SECRET_RECOVERY_DAYS);
        if !(MIN_RECOVERY_DAYS..=MAX_RECOVERY_DAYS).contains(&days) {
            return Err(SecretsError::Invalid(format!(
                "recovery_days must be between {MIN_RECOVERY_DAYS} and {MAX_RECOVERY_DAYS}"
            )));
        }
        let purge_at = self.now() + time::Duration::days(days as i64);
        self.store
            .delete_secret(actor, scope, name, purge_at)
            .await?;
        self.secret_info(scope, name).await
    }

    pub async fn restore_secret(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
    ) -> Result<SecretInfo> {
        self.store.restore_secret(actor, scope, name).await?;
        self.secret_info(scope, name).await
    }

    /// Destroys a deleted secret after its recovery window, or at once with `force` (the
    /// caller checked that the actor may force).
    pub async fn destroy_secret(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        force: bool,
    ) -> Result<()> {
        let (info, key_id) = self.store.secret(scope, name).await?;
        if !force {
            let due = info.state == SecretState::Deleted
                && info.purge_at.is_some_and(|p| p <= self.now());
            if !due {
                return Err(SecretsError::Conflict(format!(
                    "secret {scope}/{name} can be destroyed only after it is deleted and its recovery window ends{}; an admin can force it",
                    info.purge_at.map(|p| format!(" ({})", model::types::format_time(p))).unwrap_or_default()
                )));
            }
        }
        self.store
            .destroy_secret(
                actor,
                scope,
                name,
                if force { "force".into() } else { String::new() },
            )
            .await?;
        self.forget(&key_id);
        Ok(())
    }

    /// Re-encrypts every version of a secret under its key's current version.
    pub async fn rewrap_secret(&self, actor: &Actor, scope: &Scope, name: &str) -> Result<usize> {
        let (_, key_id) = self.store.secret(scope, name).await?;
        let key = self
            .store
            .key(&key_id)
            .await?
            .ok_or_else(|| SecretsError::NotFound(format!("key {key_id} not found")))?;
        let current = self.material(&key.id, key.current_version).await?;
        let mut rewrapped = Vec::new();
        for v in self.store.secret_versions(scope, name).await? {
            let ct = unb64(&v.ciphertext, "stored ciphertext")?;
            let (h, _) = envelope::header(&ct)?;
            if h.version == key.current_version {
                continue;
            }
            let old = self.material(&key.id, h.version).await?;
            let b = binding(scope, name, v.info.version);
            let pt = envelope::decrypt(&old, &ct, &b)?;
            let nh = Header {
                key_id: key.id.clone(),
                version: key.current_version,
            };
            rewrapped.push((
                v.info.version,
                b64(&envelope::encrypt(&nh, &current, &b, &pt)?),
                key.current_version,
            ));
        }
        let n = rewrapped.len();
        if n > 0 {
            self.store
                .rewrap_secret(actor, scope, name, &rewrapped)
                .await?;
        }
        Ok(n)
    }

    pub async fn request_secret(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        description: &str,
    ) -> Result<SecretRequest> {
        let mut id_bytes = [0u8; 8];
        keys::random(&mut id_bytes)?;
        let id = format!("req_{}", hex::encode(id_bytes));
        Ok(self
            .store
            .create_secret_request(actor, &id, scope, name, description)
            .await?)
    }
}
