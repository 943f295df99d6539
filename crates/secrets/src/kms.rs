//! KMS for applications: per-environment keys with versions, automatic and manual rotation,
//! enable/disable, scheduled deletion, and encrypt / decrypt / generate-data-key / rewrap
//! with an optional encryption context bound into the AAD.
//!
//! Decryption refuses (never returns wrong plaintext): a ciphertext of another key, a
//! modified one, a wrong context, a disabled key, a key pending deletion, a retired version.

use keys::envelope::{self, Header};
use keys::KeyMaterial;
use model::kms::{
    check_context, Ciphertext, Context, DataKey, KeyInfo, KeyState, Plaintext, UpdateKey,
    MAX_ENCRYPT_PLAINTEXT, MAX_RECOVERY_DAYS, MIN_RECOVERY_DAYS,
};
use model::Scope;
use store::keyring::{KeyChange, KeyPurpose, KeyRecord};
use store::Actor;

use crate::{b64, unb64, Keyring, Result, SecretsError};

/// Longest rotation period accepted (10 years).
pub const MAX_ROTATION_DAYS: u32 = 3650;

fn info(k: &KeyRecord) -> KeyInfo {
    KeyInfo {
        name: format!("{}/{}", k.scope, k.name),
        state: k.state,
        current_version: k.current_version,
        min_decrypt_version: k.min_decrypt_version,
        rotation_days: k.rotation_days,
        next_rotation_at: k.next_rotation_at,
        deletion_at: k.deletion_at,
        description: k.description.clone(),
        created_at: k.created_at,
        created_by: k.created_by.clone(),
    }
}

fn check_rotation(days: u32) -> Result<()> {
    if days == 0 || days > MAX_ROTATION_DAYS {
        return Err(SecretsError::Invalid(format!(
            "rotation_days must be between 1 and {MAX_ROTATION_DAYS}"
        )));
    }
    Ok(())
}

fn binding(key_id: &str, context: &Context) -> Vec<u8> {
    envelope::binding(&format!("kms:{key_id}"), context)
}

impl Keyring {
    async fn kms_key(&self, scope: &Scope, name: &str) -> Result<KeyRecord> {
        let id = KeyRecord::id_for(KeyPurpose::Kms, scope, name);
        match self.store.key(&id).await? {
            Some(k) if k.state != KeyState::Destroyed => Ok(k),
            _ => Err(SecretsError::NotFound(format!(
                "key {scope}/{name} not found"
            ))),
        }
    }

    fn usable(k: &KeyRecord) -> Result<()> {
        match k.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(SecretsError::Conflict(format!(
                "key {}/{} is disabled",
                k.scope, k.name
            ))),
            KeyState::PendingDeletion => Err(SecretsError::Conflict(format!(
                "key {}/{} is scheduled for deletion; cancel the deletion to use it",
                k.scope, k.name
            ))),
            KeyState::Destroyed => Err(SecretsError::NotFound(format!(
                "key {}/{} not found",
                k.scope, k.name
            ))),
        }
    }

    pub async fn create_kms_key(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        rotation_days: Option<u32>,
        description: &str,
    ) -> Result<KeyInfo> {
        let days = rotation_days.unwrap_or(model::kms::DEFAULT_ROTATION_DAYS);
        check_rotation(days)?;
        let (key, wrapped, _) = self
            .new_child(KeyPurpose::Kms, scope, name, days, description, actor)
            .await?;
        self.store.create_key(actor, &key, &wrapped).await?;
        Ok(info(&key))
    }

    pub async fn kms_keys(&self, scope: &Scope) -> Result<Vec<KeyInfo>> {
        Ok(self
            .store
            .keys_in(scope, KeyPurpose::Kms)
            .await?
            .iter()
            .filter(|k| k.state != KeyState::Destroyed)
            .map(info)
            .collect())
    }

    pub async fn kms_key_info(&self, scope: &Scope, name: &str) -> Result<KeyInfo> {
        Ok(info(&self.kms_key(scope, name).await?))
    }

    /// Manual rotation: a new version becomes current; old versions keep decrypting.
    pub async fn rotate_kms_key(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
    ) -> Result<KeyInfo> {
        if self.is_sealed() {
            return Err(SecretsError::Sealed);
        }
        let k = self.kms_key(scope, name).await?;
        Self::usable(&k)?;
        self.rotate(actor, &k, "key.rotate").await?;
        self.kms_key_info(scope, name).await
    }

    async fn change(
        &self,
        actor: &Actor,
        k: &KeyRecord,
        change: KeyChange,
        action: &str,
        detail: String,
    ) -> Result<KeyInfo> {
        Ok(info(
            &self
                .store
                .update_key(actor, &k.id, &change, action, detail)
                .await?,
        ))
    }

    pub async fn set_kms_key_enabled(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        enabled: bool,
    ) -> Result<KeyInfo> {
        let k = self.kms_key(scope, name).await?;
        let (from, to, action) = if enabled {
            (KeyState::Disabled, KeyState::Enabled, "key.enable")
        } else {
            (KeyState::Enabled, KeyState::Disabled, "key.disable")
        };
        if k.state != from {
            return Err(SecretsError::Conflict(format!(
                "key {scope}/{name} is {}; only a {} key can be {}",
                k.state.as_str(),
                from.as_str(),
                if enabled { "enabled" } else { "disabled" }
            )));
        }
        let change = KeyChange {
            state: Some(to),
            ..Default::default()
        };
        self.change(actor, &k, change, action, String::new()).await
    }

    pub async fn schedule_kms_key_deletion(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        days: u32,
    ) -> Result<KeyInfo> {
        if !(MIN_RECOVERY_DAYS..=MAX_RECOVERY_DAYS).contains(&days) {
            return Err(SecretsError::Invalid(format!(
                "days must be between {MIN_RECOVERY_DAYS} and {MAX_RECOVERY_DAYS}"
            )));
        }
        let k = self.kms_key(scope, name).await?;
        if k.state == KeyState::PendingDeletion {
            return Err(SecretsError::Conflict(format!(
                "key {scope}/{name} is already scheduled for deletion"
            )));
        }
        let at = self.now() + time::Duration::days(days as i64);
        let change = KeyChange {
            state: Some(KeyState::PendingDeletion),
            deletion_at: Some(Some(at)),
            ..Default::default()
        };
        self.change(
            actor,
            &k,
            change,
            "key.schedule-deletion",
            format!("days={days}"),
        )
        .await
    }

    /// Cancels a scheduled deletion; the key comes back disabled, as in AWS KMS.
    pub async fn cancel_kms_key_deletion(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
    ) -> Result<KeyInfo> {
        let k = self.kms_key(scope, name).await?;
        if k.state != KeyState::PendingDeletion {
            return Err(SecretsError::Conflict(format!(
                "key {scope}/{name} is not scheduled for deletion"
            )));
        }
        let change = KeyChange {
            state: Some(KeyState::Disabled),
            deletion_at: Some(None),
            ..Default::default()
        };
        self.change(actor, &k, change, "key.cancel-deletion", String::new())
            .await
    }

    pub async fn update_kms_key(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        u: &UpdateKey,
    ) -> Result<KeyInfo> {
        let k = self.kms_key(scope, name).await?;
        let mut change = KeyChange::default();
        let mut detail = Vec::new();
        if let Some(d) = u.rotation_days {
            check_rotation(d)?;
            change.rotation_days = Some(d);
            change.next_rotation_at = Some(Some(self.now() + time::Duration::days(d as i64)));
            detail.push(format!("rotation_days={d}"));
        }
        if let Some(m) = u.min_decrypt_version {
            if m == 0 || m > k.current_version {
                return Err(SecretsError::Invalid(format!(
                    "min_decrypt_version must be between 1 and the current version ({})",
                    k.current_version
                )));
            }
            change.min_decrypt_version = Some(m);
            detail.push(format!("min_decrypt_version={m}"));
        }
        if detail.is_empty() {
            return Err(SecretsError::Invalid(
                "nothing to change: give rotation_days or min_decrypt_version".into(),
            ));
        }
        self.change(actor, &k, change, "key.update", detail.join(" "))
            .await
    }

    pub async fn encrypt(
        &self,
        scope: &Scope,
        name: &str,
        plaintext: &[u8],
        context: &Context,
    ) -> Result<Ciphertext> {
        if plaintext.len() > MAX_ENCRYPT_PLAINTEXT {
            return Err(SecretsError::Invalid(format!(
                "plaintext is larger than {MAX_ENCRYPT_PLAINTEXT} bytes; encrypt a data key instead (generate-data-key)"
            )));
        }
        check_context(context).map_err(|e| SecretsError::Invalid(e.message))?;
        let k = self.kms_key(scope, name).await?;
        Self::usable(&k)?;
        let material = self.material(&k.id, k.current_version).await?;
        let h = Header {
            key_id: k.id.clone(),
            version: k.current_version,
        };
        let ct = envelope::encrypt(&h, &material, &binding(&k.id, context), plaintext)?;
        Ok(Ciphertext {
            ciphertext: b64(&ct),
            key_version: k.current_version,
        })
    }

    /// Decrypts; returns the plaintext and the key version it was encrypted under.
    pub async fn decrypt_raw(
        &self,
        scope: &Scope,
        name: &str,
        ciphertext: &str,
        context: &Context,
    ) -> Result<(zeroize::Zeroizing<Vec<u8>>, u32)> {
        check_context(context).map_err(|e| SecretsError::Invalid(e.message))?;
        let k = self.kms_key(scope, name).await?;
        Self::usable(&k)?;
        let ct = unb64(ciphertext, "ciphertext")?;
        let (h, _) = envelope::header(&ct)
            .map_err(|_| SecretsError::BadCiphertext("not a Gantry ciphertext".into()))?;
        if h.key_id != k.id {
            return Err(SecretsError::BadCiphertext(format!(
                "the ciphertext was not made by key {scope}/{name}"
            )));
        }
        if h.version < k.min_decrypt_version {
            return Err(SecretsError::Conflict(format!(
                "version {} of key {scope}/{name} is retired (minimum decryption version {}); rewrap older data first",
                h.version, k.min_decrypt_version
            )));
        }
        if h.version > k.current_version {
            return Err(SecretsError::BadCiphertext(format!(
                "key {scope}/{name} has no version {}",
                h.version
            )));
        }
        let material = self.material(&k.id, h.version).await?;
        let pt = envelope::decrypt(&material, &ct, &binding(&k.id, context))?;
        Ok((pt, h.version))
    }

    pub async fn decrypt(
        &self,
        scope: &Scope,
        name: &str,
        ciphertext: &str,
        context: &Context,
    ) -> Result<Plaintext> {
        let (pt, version) = self.decrypt_raw(scope, name, ciphertext, context).await?;
        Ok(Plaintext {
            plaintext_b64: b64(&pt),
            key_version: version,
        })
    }

    pub async fn generate_data_key(
        &self,
        scope: &Scope,
        name: &str,
        bytes: Option<u32>,
        context: &Context,
    ) -> Result<DataKey> {
        let n = bytes.unwrap_or(32);
        if n != 16 && n != 32 {
            return Err(SecretsError::Invalid("bytes must be 16 or 32".into()));
        }
        let dek = KeyMaterial::generate()?;
        let dek = &dek.as_bytes()[..n as usize];
        let ct = self.encrypt(scope, name, dek, context).await?;
        Ok(DataKey {
            plaintext_b64: b64(dek),
            ciphertext: ct.ciphertext,
            key_version: ct.key_version,
        })
    }

    /// Re-encrypts a ciphertext under the key's current version.
    pub async fn rewrap(
        &self,
        scope: &Scope,
        name: &str,
        ciphertext: &str,
        context: &Context,
    ) -> Result<Ciphertext> {
        let (pt, _) = self.decrypt_raw(scope, name, ciphertext, context).await?;
        self.encrypt(scope, name, &pt, context).await
    }
}
