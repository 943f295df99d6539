//! The keyring: the unsealed root key (or none, while sealed) and a cache of unwrapped key
//! versions. Every other module gets key material from here.
//!
//! Sealing drops the root key and zeroizes the cache. Unwrapping a version walks up its
//! parents: a KMS or secret key version is a `gk1` ciphertext under a version of its
//! environment key, which is wrapped by the root key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use keys::envelope::{self, Header};
use keys::seal::{self, Argon2Params, Pkcs11Slot, RootKey, SealConfig, UnsealKey};
use keys::KeyMaterial;
use model::clock::Clock;
use model::kms::{KeyState, DEFAULT_ROTATION_DAYS};
use model::Scope;
use store::keyring::{KeyPurpose, KeyRecord};
use store::{Actor, Store};
use time::OffsetDateTime;

use crate::{b64, unb64, Result, SecretsError};

/// How the installation's root key is sealed, from `gantry up` flags. Its `Debug` never
/// shows the passphrase or the PIN.
#[derive(Clone)]
pub enum SealSetup {
    /// A key file (development): unsealed automatically on start.
    File { key_path: PathBuf },
    /// A passphrase: starts sealed. `initial` is needed on the very first start only.
    Passphrase {
        initial: Option<String>,
        params: Argon2Params,
    },
    /// An HSM: unsealed on start when `pin` is given, else sealed until `gantry unseal`.
    Pkcs11 {
        slot: Pkcs11Slot,
        key_label: String,
        pin: Option<String>,
    },
}

impl std::fmt::Debug for SealSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealSetup::File { key_path } => write!(f, "File({})", key_path.display()),
            SealSetup::Passphrase { .. } => f.write_str("Passphrase(..)"),
            SealSetup::Pkcs11 {
                slot, key_label, ..
            } => {
                write!(
                    f,
                    "Pkcs11({}, {}, {key_label})",
                    slot.module.display(),
                    slot.token_label
                )
            }
        }
    }
}

pub struct Keyring {
    pub(crate) store: Arc<Store>,
    pub(crate) clock: Arc<dyn Clock>,
    config: SealConfig,
    pkcs11: Option<Pkcs11Slot>,
    key_file: Option<PathBuf>,
    root: RwLock<Option<Arc<dyn RootKey>>>,
    cache: Mutex<HashMap<(String, u32), KeyMaterial>>,
}

fn root_aad(key_id: &str, version: u32) -> Vec<u8> {
    format!("gantry/keyring/v1|{key_id}|{version}").into_bytes()
}

/// The binding of a child key version wrapped under its parent.
fn child_binding(key_id: &str, version: u32) -> Vec<u8> {
    envelope::binding(&format!("key:{key_id}#{version}"), &Default::default())
}

impl Keyring {
    /// Loads the seal configuration (initializing it on the first start) and unseals when
    /// the seal allows it without an operator.
    pub async fn open(
        store: Arc<Store>,
        setup: SealSetup,
        clock: Arc<dyn Clock>,
    ) -> Result<Keyring> {
        let existing = store.seal_config().await?;
        let pkcs11 = match &setup {
            SealSetup::Pkcs11 { slot, .. } => Some(slot.clone()),
            _ => None,
        };
        let key_file = match &setup {
            SealSetup::File { key_path } => Some(key_path.clone()),
            _ => None,
        };
        let (config, root): (SealConfig, Option<Box<dyn RootKey>>) = match existing {
            Some(json) => {
                let config: SealConfig = serde_json::from_str(&json).map_err(|_| {
                    SecretsError::Config("the stored seal configuration is corrupt".into())
                })?;
                let root = match (&config, &setup) {
                    (SealConfig::File { .. }, SealSetup::File { key_path }) => {
                        let kek = seal::load_existing_key_file(key_path)?;
                        Some(seal::unseal(&config, UnsealKey::File(&kek))?)
                    }
                    (SealConfig::Passphrase { .. }, SealSetup::Passphrase { .. }) => None,
                    (SealConfig::Pkcs11 { .. }, SealSetup::Pkcs11 { slot, pin, .. }) => match pin {
                        Some(pin) => Some(seal::unseal(&config, UnsealKey::Pkcs11(slot, pin))?),
                        None => None,
                    },
                    (c, _) => {
                        return Err(SecretsError::Config(format!(
                            "this installation is sealed with `{}`; start it with --seal {}",
                            c.kind(),
                            c.kind()
                        )))
                    }
                };
                (config, root)
            }
            None => {
                let (config, root): (SealConfig, Box<dyn RootKey>) = match &setup {
                    SealSetup::File { key_path } => {
                        let kek = seal::load_or_create_key_file(key_path)?;
                        let (c, r) = seal::init_file(&kek)?;
                        (c, Box::new(r))
                    }
                    SealSetup::Passphrase { initial, params } => {
                        let pass = initial.as_deref().ok_or_else(|| {
                            SecretsError::Config(
                                "first start with --seal passphrase: set GANTRY_SEAL_PASSPHRASE to the new passphrase".into(),
                            )
                        })?;
                        let (c, r) = seal::init_passphrase(pass, *params)?;
                        (c, Box::new(r))
                    }
                    SealSetup::Pkcs11 {
                        slot,
                        key_label,
                        pin,
                    } => {
                        let pin = pin.as_deref().ok_or_else(|| {
                            SecretsError::Config(
                                "first start with --seal pkcs11: set GANTRY_PKCS11_PIN".into(),
                            )
                        })?;
                        seal::init_pkcs11(slot, key_label, pin)?
                    }
                };
                let json = serde_json::to_string(&config)
                    .map_err(|e| SecretsError::Config(e.to_string()))?;
                store
                    .init_seal(&Actor::system(), &json, config.kind())
                    .await?;
                (config, Some(root))
            }
        };
        Ok(Keyring {
            store,
            clock,
            config,
            pkcs11,
            key_file,
            root: RwLock::new(root.map(Arc::from)),
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn is_sealed(&self) -> bool {
        self.root
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    pub fn seal_kind(&self) -> &'static str {
        self.config.kind()
    }

    /// Unseals with a passphrase or an HSM PIN (the file seal re-reads its key file). A wrong
    /// one is `KeyError::BadUnsealKey`.
    pub fn unseal(&self, secret: &str) -> Result<()> {
        let root =
            match &self.config {
                SealConfig::Passphrase { .. } => {
                    seal::unseal(&self.config, UnsealKey::Passphrase(secret))?
                }
                SealConfig::Pkcs11 { .. } => {
                    let slot = self.pkcs11.as_ref().ok_or_else(|| {
                        SecretsError::Config("no PKCS#11 module configured".into())
                    })?;
                    seal::unseal(&self.config, UnsealKey::Pkcs11(slot, secret))?
                }
                // The file seal ignores `secret`: unsealing re-reads the key file.
                SealConfig::File { .. } => {
                    let path = self.key_file.as_ref().ok_or_else(|| {
                        SecretsError::Config("no seal key file configured".into())
                    })?;
                    let kek = seal::load_existing_key_file(path)?;
                    seal::unseal(&self.config, UnsealKey::File(&kek))?
                }
            };
        *self.root.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::from(root));
        Ok(())
    }

    /// Forgets the root key and every unwrapped key.
    pub fn seal(&self) {
        *self.root.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub(crate) fn root(&self) -> Result<Arc<dyn RootKey>> {
        self.root
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(SecretsError::Sealed)
    }

    pub(crate) fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// The material of version `version` of key `id`.
    pub(crate) async fn material(&self, id: &str, version: u32) -> Result<KeyMaterial> {
        let root = self.root()?;
        if let Some(k) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(id.to_string(), version))
        {
            return Ok(k.clone());
        }
        let key = self
            .store
            .key(id)
            .await?
            .ok_or_else(|| SecretsError::NotFound(format!("key {id} not found")))?;
        if key.state == KeyState::Destroyed {
            return Err(SecretsError::Conflict(format!("key {id} was destroyed")));
        }
        let v = self.store.key_version(id, version).await?.ok_or_else(|| {
            SecretsError::BadCiphertext(format!("key {id} has no version {version}"))
        })?;
        let wrapped = unb64(&v.wrapped, "wrapped key")?;
        let material = match &key.parent {
            None => {
                let pt = root.unwrap(&root_aad(id, version), &wrapped)?;
                KeyMaterial::from_slice(&pt)?
            }
            Some(parent) => {
                let (h, _) = envelope::header(&wrapped)?;
                if &h.key_id != parent {
                    return Err(SecretsError::Config(format!(
                        "key {id} version {version} is not wrapped by {parent}"
                    )));
                }
                let pk = Box::pin(self.material(parent, h.version)).await?;
                let pt = envelope::decrypt(&pk, &wrapped, &child_binding(id, version))?;
                KeyMaterial::from_slice(&pt)?
            }
        };
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((id.to_string(), version), material.clone());
        Ok(material)
    }

    /// Wraps `material` as version `version` of `key` (under the root or its parent's
    /// current version); returns the stored (base64) form.
    pub(crate) async fn wrap(
        &self,
        key: &KeyRecord,
        version: u32,
        material: &KeyMaterial,
    ) -> Result<String> {
        match &key.parent {
            None => Ok(b64(&self
                .root()?
                .wrap(&root_aad(&key.id, version), material.as_bytes())?)),
            Some(parent) => {
                let p = self
                    .store
                    .key(parent)
                    .await?
                    .ok_or_else(|| SecretsError::NotFound(format!("key {parent} not found")))?;
                let pk = self.material(&p.id, p.current_version).await?;
                let h = Header {
                    key_id: p.id.clone(),
                    version: p.current_version,
                };
                Ok(b64(&envelope::encrypt(
                    &h,
                    &pk,
                    &child_binding(&key.id, version),
                    material.as_bytes(),
                )?))
            }
        }
    }

    /// The environment key of `scope`, created on first use.
    pub(crate) async fn environment_key(&self, scope: &Scope) -> Result<KeyRecord> {
        let id = KeyRecord::id_for(KeyPurpose::Environment, scope, "");
        if let Some(k) = self.store.key(&id).await? {
            return Ok(k);
        }
        let key = self.new_record(
            KeyPurpose::Environment,
            scope,
            "",
            None,
            DEFAULT_ROTATION_DAYS,
            "environment key",
            "system",
        );
        let material = KeyMaterial::generate()?;
        let wrapped = self.wrap(&key, 1, &material).await?;
        match self
            .store
            .create_key(&Actor::system(), &key, &wrapped)
            .await
        {
            Ok(()) => {}
            // Created concurrently by another request: use that one.
            Err(store::StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.store
            .key(&id)
            .await?
            .ok_or_else(|| SecretsError::NotFound(format!("key {id} not found")))
    }

    /// A new key record (not stored) with version 1 current.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_record(
        &self,
        purpose: KeyPurpose,
        scope: &Scope,
        name: &str,
        parent: Option<String>,
        rotation_days: u32,
        description: &str,
        created_by: &str,
    ) -> KeyRecord {
        let now =
            model::types::parse_time(&model::types::format_time(self.now())).unwrap_or(self.now());
        KeyRecord {
            id: KeyRecord::id_for(purpose, scope, name),
            purpose,
            scope: scope.clone(),
            name: name.to_string(),
            parent,
            state: KeyState::Enabled,
            current_version: 1,
            min_decrypt_version: 1,
            rotation_days,
            next_rotation_at: Some(now + time::Duration::days(rotation_days as i64)),
            deletion_at: None,
            description: description.to_string(),
            created_at: now,
            created_by: created_by.to_string(),
        }
    }

    /// A new child key of the environment `scope` with fresh material; returns the record,
    /// its wrapped version 1 (ready to store) and the material itself.
    pub(crate) async fn new_child(
        &self,
        purpose: KeyPurpose,
        scope: &Scope,
        name: &str,
        rotation_days: u32,
        description: &str,
        actor: &Actor,
    ) -> Result<(KeyRecord, String, KeyMaterial)> {
        let env = self.environment_key(scope).await?;
        let key = self.new_record(
            purpose,
            scope,
            name,
            Some(env.id),
            rotation_days,
            description,
            &actor.principal,
        );
        let material = KeyMaterial::generate()?;
        let wrapped = self.wrap(&key, 1, &material).await?;
        Ok((key, wrapped, material))
    }

    /// Adds a new version to `key` (fresh material) and returns its number.
    pub(crate) async fn rotate(&self, actor: &Actor, key: &KeyRecord, action: &str) -> Result<u32> {
        let v = key.current_version + 1;
        let material = KeyMaterial::generate()?;
        let wrapped = self.wrap(key, v, &material).await?;
        let next = Some(self.now() + time::Duration::days(key.rotation_days as i64));
        let v = self
            .store
            .add_key_version(actor, &key.id, key.current_version, &wrapped, next, action)
            .await?;
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((key.id.clone(), v), material);
        Ok(v)
    }

    /// Re-wraps every version of each child of `parent` under the parent's current version.
    pub(crate) async fn rewrap_children(&self, actor: &Actor, parent: &KeyRecord) -> Result<usize> {
        let mut n = 0;
        for purpose in [
            KeyPurpose::Kms,
            KeyPurpose::Secret,
            KeyPurpose::Certificate,
            KeyPurpose::Artifact,
        ] {
            for child in self.store.keys_in(&parent.scope, purpose).await? {
                if child.state == KeyState::Destroyed
                    || child.parent.as_deref() != Some(parent.id.as_str())
                {
                    continue;
                }
                let mut rewrapped = Vec::new();
                for v in self.store.key_versions(&child.id).await? {
                    let m = self.material(&child.id, v.version).await?;
                    rewrapped.push((v.version, self.wrap(&child, v.version, &m).await?));
                }
                self.store
                    .rewrap_key_versions(actor, &child.id, &rewrapped)
                    .await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Drops cached material of `id` (after destroying it).
    pub(crate) fn forget(&self, id: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(k, _), _| k != id);
    }
}
