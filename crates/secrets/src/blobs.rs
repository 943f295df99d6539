//! Encryption of other parts' private material under the key hierarchy: a resource's blob
//! (a TLS private key) under that resource's own key, wrapped by its environment key; and
//! an installation-wide blob (the ACME account key) wrapped by the root key itself.
//!
//! The ciphertext is bound to the resource (purpose, environment, name), so a blob copied
//! to another resource or tenant does not decrypt. Like the rest of this crate, it never
//! returns plaintext in an error and refuses everything while sealed.

use keys::envelope::{self, Header};
use model::kms::{KeyState, DEFAULT_ROTATION_DAYS};
use model::Scope;
use store::keyring::{KeyPurpose, KeyRecord};
use store::{Actor, StoreError};
use zeroize::Zeroizing;

use crate::{b64, unb64, Keyring, Result, SecretsError};

fn binding(purpose: KeyPurpose, scope: &Scope, name: &str) -> Vec<u8> {
    envelope::binding(
        &format!("{}:{scope}/{name}", purpose.as_str()),
        &Default::default(),
    )
}

fn installation_aad(label: &str) -> Vec<u8> {
    format!("gantry/installation/v1|{label}").into_bytes()
}

impl Keyring {
    /// The key of resource `name` (created on first use, under the environment key).
    async fn resource_key(
        &self,
        actor: &Actor,
        purpose: KeyPurpose,
        scope: &Scope,
        name: &str,
    ) -> Result<KeyRecord> {
        let id = KeyRecord::id_for(purpose, scope, name);
        if let Some(k) = self.store.key(&id).await? {
            return Ok(k);
        }
        let (key, wrapped, _) = self
            .new_child(
                purpose,
                scope,
                name,
                DEFAULT_ROTATION_DAYS,
                &format!("{} key", purpose.as_str()),
                actor,
            )
            .await?;
        match self.store.create_key(actor, &key, &wrapped).await {
            Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.store
            .key(&id)
            .await?
            .ok_or_else(|| SecretsError::NotFound(format!("key {id} not found")))
    }

    /// Encrypts `plaintext` for resource `name` of `purpose` in `scope`, under the current
    /// version of the resource's own key. Returns the stored (base64 `gk1`) form.
    pub async fn seal_resource(
        &self,
        actor: &Actor,
        purpose: KeyPurpose,
        scope: &Scope,
        name: &str,
        plaintext: &[u8],
    ) -> Result<String> {
        let k = self.resource_key(actor, purpose, scope, name).await?;
        if k.state != KeyState::Enabled {
            return Err(SecretsError::Conflict(format!(
                "key {} is not enabled",
                k.id
            )));
        }
        let material = self.material(&k.id, k.current_version).await?;
        let h = Header {
            key_id: k.id.clone(),
            version: k.current_version,
        };
        Ok(b64(&envelope::encrypt(
            &h,
            &material,
            &binding(purpose, scope, name),
            plaintext,
        )?))
    }

    /// Decrypts what `seal_resource` made for the same resource.
    pub async fn open_resource(
        &self,
        purpose: KeyPurpose,
        scope: &Scope,
        name: &str,
        ciphertext: &str,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let ct = unb64(ciphertext, "stored ciphertext")?;
        let (h, _) = envelope::header(&ct)?;
        let id = KeyRecord::id_for(purpose, scope, name);
        if h.key_id != id {
            return Err(SecretsError::BadCiphertext(format!(
                "the ciphertext of {scope}/{name} is not under its own key"
            )));
        }
        let k = self
            .store
            .key(&id)
            .await?
            .ok_or_else(|| SecretsError::NotFound(format!("key {id} not found")))?;
        if h.version < k.min_decrypt_version {
            return Err(SecretsError::Conflict(format!(
                "version {} of key {id} is retired; rewrap first",
                h.version
            )));
        }
        let material = self.material(&id, h.version).await?;
        Ok(envelope::decrypt(
            &material,
            &ct,
            &binding(purpose, scope, name),
        )?)
    }

    /// Wraps an installation-wide blob with the root key (bound to `label`).
    pub fn seal_installation(&self, label: &str, plaintext: &[u8]) -> Result<String> {
        Ok(b64(&self
            .root()?
            .wrap(&installation_aad(label), plaintext)?))
    }

    /// Unwraps what `seal_installation` made with the same label.
    pub fn open_installation(&self, label: &str, wrapped: &str) -> Result<Zeroizing<Vec<u8>>> {
        let w = unb64(wrapped, "stored ciphertext")?;
        Ok(self.root()?.unwrap(&installation_aad(label), &w)?)
    }
}
