//! Seals: what protects the root key of an installation.
//!
//! The root key wraps every entry of the keyring (the versions of every tenant, environment,
//! KMS and secret key); it is never stored in plaintext. Three seals:
//!
//! - `file`: a random key-encryption key in `<data>/seal.key` (0600) wraps the root key.
//!   Convenient for development; anyone who can read the data directory holds the key.
//! - `passphrase`: the key-encryption key is derived from a passphrase with Argon2id (the
//!   parameters and salt are stored, never the passphrase). The server starts sealed.
//! - `pkcs11`: the root key is a non-extractable AES-256 key inside an HSM; wrapping and
//!   unwrapping happen in the device (AES-GCM), so the root key never leaves it.
//!
//! `SealConfig` is what gets stored (public parameters and the wrapped root key, if any);
//! `RootKey` is the unsealed capability to wrap and unwrap. Nothing here may log a
//! passphrase, a PIN or key material.

use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{KeyError, KeyMaterial, Result};

/// The unsealed root key: wraps and unwraps keyring entries.
pub trait RootKey: Send + Sync {
    fn wrap(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>>;
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>>;
}

/// A root key held in memory (file and passphrase seals).
pub struct SoftRoot(KeyMaterial);

impl RootKey for SoftRoot {
    fn wrap(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        self.0.seal(aad, plaintext)
    }
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.0.open(aad, wrapped)
    }
}

/// Argon2id cost parameters (RFC 9106 second recommended option by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Argon2Params {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Argon2Params {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

/// The stored, public part of a seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SealConfig {
    File {
        /// The root key wrapped by the key file (base64).
        wrapped_root: String,
    },
    Passphrase {
        params: Argon2Params,
        salt: String,
        wrapped_root: String,
    },
    Pkcs11 {
        token_label: String,
        key_label: String,
    },
}

impl SealConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SealConfig::File { .. } => "file",
            SealConfig::Passphrase { .. } => "passphrase",
            SealConfig::Pkcs11 { .. } => "pkcs11",
        }
    }
}

const ROOT_AAD: &[u8] = b"gantry/root-key/v1";
fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}
fn unb64(s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| KeyError::Config("seal configuration is corrupt".into()))
}

fn wrap_new_root(kek: &KeyMaterial) -> Result<(String, SoftRoot)> {
    let root = KeyMaterial::generate()?;
    let wrapped = kek.seal(ROOT_AAD, root.as_bytes())?;
    Ok((b64(&wrapped), SoftRoot(root)))
}

fn unwrap_root(kek: &KeyMaterial, wrapped_root: &str) -> Result<SoftRoot> {
    let pt = kek
        .open(ROOT_AAD, &unb64(wrapped_root)?)
        .map_err(|_| KeyError::BadUnsealKey)?;
    Ok(SoftRoot(KeyMaterial::from_slice(&pt)?))
}

// ---- file seal ----

/// Reads an existing key file; a missing file is an error (a new key could not unseal).
pub fn load_existing_key_file(path: &Path) -> Result<KeyMaterial> {
    if !path.exists() {
        return Err(KeyError::Config(format!(
            "the seal key file {} is missing; restore it from backup",
            path.display()
        )));
    }
    load_or_create_key_file(path)
}

/// Reads `<path>` (hex key), creating it with a fresh key (mode 0600) if missing.
pub fn load_or_create_key_file(path: &Path) -> Result<KeyMaterial> {
    let io = |e: std::io::Error| KeyError::Config(format!("{}: {e}", path.display()));
    if path.exists() {
        let s = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let bytes = Zeroizing::new(
            hex::decode(s.trim())
                .map_err(|_| KeyError::Config(format!("{} is not a hex key", path.display())))?,
        );
        return KeyMaterial::from_slice(&bytes);
    }
    let k = KeyMaterial::generate()?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(k.as_bytes())));
    write_private(path, text.as_bytes()).map_err(io)?;
    Ok(k)
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

pub fn init_file(kek: &KeyMaterial) -> Result<(SealConfig, SoftRoot)> {
    let (wrapped_root, root) = wrap_new_root(kek)?;
    Ok((SealConfig::File { wrapped_root }, root))
}

// ---- passphrase seal ----

/// Shortest passphrase accepted.
pub const MIN_PASSPHRASE: usize = 12;

fn derive(pass: &str, salt: &[u8], p: Argon2Params) -> Result<KeyMaterial> {
    let params = argon2::Params::new(p.m_kib, p.t, p.p, Some(32))
        .map_err(|e| KeyError::Config(format!("argon2 parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(pass.as_bytes(), salt, out.as_mut())
        .map_err(|e| KeyError::Config(format!("argon2: {e}")))?;
    KeyMaterial::from_slice(out.as_ref())
}

pub fn init_passphrase(pass: &str, params: Argon2Params) -> Result<(SealConfig, SoftRoot)> {
    if pass.chars().count() < MIN_PASSPHRASE {
        return Err(KeyError::Config(format!(
            "the passphrase must have at least {MIN_PASSPHRASE} characters"
        )));
    }
    let mut salt = [0u8; 16];
    crate::random(&mut salt)?;
    let kek = derive(pass, &salt, params)?;
    let (wrapped_root, root) = wrap_new_root(&kek)?;
    Ok((
        SealConfig::Passphrase {
            params,
            salt: b64(&salt),
            wrapped_root,
        },
        root,
    ))
}

// ---- unsealing ----

/// What an operator supplies to unseal.
pub enum UnsealKey<'a> {
    File(&'a KeyMaterial),
    Passphrase(&'a str),
    Pkcs11(&'a Pkcs11Slot, &'a str),
}

/// Unseals `config` with `key`. A wrong key is `KeyError::BadUnsealKey`.
pub fn unseal(config: &SealConfig, key: UnsealKey<'_>) -> Result<Box<dyn RootKey>> {
    match (config, key) {
        (SealConfig::File { wrapped_root }, UnsealKey::File(kek)) => {
            Ok(Box::new(unwrap_root(kek, wrapped_root)?))
        }
        (
            SealConfig::Passphrase {
                params,
                salt,
                wrapped_root,
            },
            UnsealKey::Passphrase(p),
        ) => {
            let kek = derive(p, &unb64(salt)?, *params)?;
            Ok(Box::new(unwrap_root(&kek, wrapped_root)?))
        }
        (
            SealConfig::Pkcs11 {
                token_label,
                key_label,
            },
            UnsealKey::Pkcs11(slot, pin),
        ) => Ok(Box::new(HsmRoot::open(
            slot,
            token_label,
            key_label,
            pin,
            false,
        )?)),
        (c, _) => Err(KeyError::Config(format!(
            "this installation is sealed with `{}`; unseal it with that",
            c.kind()
        ))),
    }
}

// ---- PKCS#11 seal ----

/// Where the HSM is: the PKCS#11 module and the token's label.
#[derive(Debug, Clone)]
pub struct Pkcs11Slot {
    pub module: std::path::PathBuf,
    pub token_label: String,
}

/// Creates (or finds) the root key in the HSM and returns the seal configuration.
pub fn init_pkcs11(
    slot: &Pkcs11Slot,
    key_label: &str,
    pin: &str,
) -> Result<(SealConfig, Box<dyn RootKey>)> {
    let root = HsmRoot::open(slot, &slot.token_label, key_label, pin, true)?;
    Ok((
        SealConfig::Pkcs11 {
            token_label: slot.token_label.clone(),
            key_label: key_label.to_string(),
        },
        Box::new(root),
    ))
}

/// A root key that lives in an HSM. Wrap and unwrap are AES-256-GCM operations performed
/// by the device with a fresh 96-bit IV each time (`iv || ciphertext || tag`).
pub struct HsmRoot {
    session: Mutex<cryptoki::session::Session>,
    key: cryptoki::object::ObjectHandle,
    _ctx: cryptoki::context::Pkcs11,
}

fn hsm<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> KeyError {
    move |e| KeyError::Hsm(format!("{what}: {e}"))
}

impl HsmRoot {
    fn open(
        slot: &Pkcs11Slot,
        token_label: &str,
        key_label: &str,
        pin: &str,
        create: bool,
    ) -> Result<HsmRoot> {
        use cryptoki::context::{CInitializeArgs, Pkcs11};
        use cryptoki::mechanism::Mechanism;
        use cryptoki::object::{Attribute, ObjectClass};
        use cryptoki::session::UserType;
        use cryptoki::types::AuthPin;

        let ctx = Pkcs11::new(&slot.module).map_err(hsm("loading the PKCS#11 module"))?;
        ctx.initialize(CInitializeArgs::OsThreads)
            .map_err(hsm("initializing the module"))?;
        let mut found = None;
        for s in ctx.get_slots_with_token().map_err(hsm("listing slots"))? {
            let info = ctx.get_token_info(s).map_err(hsm("reading token info"))?;
            if info.label().trim_end() == token_label {
                found = Some(s);
                break;
            }
        }
        let s = found.ok_or_else(|| KeyError::Hsm(format!("no token labelled {token_label:?}")))?;
        let session = ctx.open_rw_session(s).map_err(hsm("opening a session"))?;
        session
            .login(UserType::User, Some(&AuthPin::from(pin.to_string())))
            .map_err(|_| KeyError::BadUnsealKey)?;
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(key_label.as_bytes().to_vec()),
        ];
        let existing = session
            .find_objects(&template)
            .map_err(hsm("finding the root key"))?;
        let key = match existing.first() {
            Some(k) => *k,
            None if create => session
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::ValueLen(32.into()),
                        Attribute::Label(key_label.as_bytes().to_vec()),
                    ],
                )
                .map_err(hsm("generating the root key"))?,
            None => {
                return Err(KeyError::Hsm(format!(
                    "the root key {key_label:?} is not on token {token_label:?}"
                )))
            }
        };
        Ok(HsmRoot {
            session: Mutex::new(session),
            key,
            _ctx: ctx,
        })
    }
}

impl RootKey for HsmRoot {
    fn wrap(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        use cryptoki::mechanism::{aead::GcmParams, Mechanism};
        let mut iv = [0u8; 12];
        crate::random(&mut iv)?;
        let mut iv_param = iv;
        let params =
            GcmParams::new(&mut iv_param, aad, 128.into()).map_err(hsm("GCM parameters"))?;
        let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let ct = session
            .encrypt(&Mechanism::AesGcm(params), self.key, plaintext)
            .map_err(hsm("encrypting in the HSM"))?;
        let mut out = iv.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        use cryptoki::mechanism::{aead::GcmParams, Mechanism};
        if wrapped.len() < 12 + 16 {
            return Err(KeyError::Decrypt);
        }
        let mut iv = [0u8; 12];
        iv.copy_from_slice(&wrapped[..12]);
        let params = GcmParams::new(&mut iv, aad, 128.into()).map_err(hsm("GCM parameters"))?;
        let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        session
            .decrypt(&Mechanism::AesGcm(params), self.key, &wrapped[12..])
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Argon2Params = Argon2Params {
        m_kib: 1024,
        t: 1,
        p: 1,
    };

    #[test]
    fn file_seal_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        let kek = load_or_create_key_file(&path).unwrap();
        let (cfg, root) = init_file(&kek).unwrap();
        let wrapped = root.wrap(b"a", b"entry").unwrap();
        let again = load_or_create_key_file(&path).unwrap();
        let root2 = unseal(&cfg, UnsealKey::File(&again)).unwrap();
        assert_eq!(&root2.unwrap(b"a", &wrapped).unwrap()[..], b"entry");
        let other = KeyMaterial::generate().unwrap();
        assert!(matches!(
            unseal(&cfg, UnsealKey::File(&other)),
            Err(KeyError::BadUnsealKey)
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[test]
    fn passphrase_seal_round_trip() {
        assert!(init_passphrase("short", FAST).is_err());
        let (cfg, root) = init_passphrase("correct horse battery staple", FAST).unwrap();
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(!text.contains("correct horse"));
        let wrapped = root.wrap(b"a", b"entry").unwrap();
        let root2 = unseal(&cfg, UnsealKey::Passphrase("correct horse battery staple")).unwrap();
        assert_eq!(&root2.unwrap(b"a", &wrapped).unwrap()[..], b"entry");
        assert!(matches!(
            unseal(&cfg, UnsealKey::Passphrase("wrong horse battery staple")),
            Err(KeyError::BadUnsealKey)
        ));
        assert!(unseal(&cfg, UnsealKey::File(&KeyMaterial::generate().unwrap())).is_err());
    }
}
