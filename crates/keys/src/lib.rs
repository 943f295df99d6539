//! Key material and the cryptography of the key hierarchy: AES-256-GCM sealing, the
//! self-describing ciphertext format (key id + version in a header bound into the AAD),
//! and the seals that protect the root key (a key file, a passphrase through Argon2id, or an
//! HSM over PKCS#11 where the root key never leaves the device).
//!
//! This crate holds no state and talks to no store. It must never log, format or return
//! key material or plaintext in an error, and every buffer holding either is zeroized on drop.

pub mod envelope;
pub mod seal;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Errors of this crate. Messages never carry key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Authentication failed: wrong key, wrong AAD (resource or encryption context), or a
    /// modified ciphertext. Deliberately does not say which.
    #[error("decryption failed: the ciphertext was modified, or it belongs to another key, resource or encryption context")]
    Decrypt,
    #[error("malformed ciphertext: {0}")]
    Malformed(String),
    #[error("wrong unseal key or passphrase")]
    BadUnsealKey,
    #[error("HSM: {0}")]
    Hsm(String),
    #[error("{0}")]
    Config(String),
    #[error("random number generator failed")]
    Rng,
}

pub type Result<T> = std::result::Result<T, KeyError>;

/// A 256-bit AES key. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct KeyMaterial(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaterial(..)")
    }
}

impl KeyMaterial {
    pub fn generate() -> Result<KeyMaterial> {
        let mut k = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(k.as_mut())
            .map_err(|_| KeyError::Rng)?;
        Ok(KeyMaterial(k))
    }

    pub fn from_slice(b: &[u8]) -> Result<KeyMaterial> {
        if b.len() != 32 {
            return Err(KeyError::Malformed("a key must be 32 bytes".into()));
        }
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(b);
        Ok(KeyMaterial(k))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Encrypts with AES-256-GCM under a fresh random nonce: `nonce || ciphertext || tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let key = self.aead()?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KeyError::Rng)?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| KeyError::Rng)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens what `seal` produced; fails if anything (key, AAD, bytes) differs.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(KeyError::Decrypt);
        }
        let key = self.aead()?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[..NONCE_LEN]);
        let mut buf = Zeroizing::new(sealed[NONCE_LEN..].to_vec());
        let len = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| KeyError::Decrypt)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    fn aead(&self) -> Result<LessSafeKey> {
        let k = UnboundKey::new(&AES_256_GCM, self.0.as_ref()).map_err(|_| KeyError::Rng)?;
        Ok(LessSafeKey::new(k))
    }
}

/// Fills a buffer with random bytes.
pub fn random(buf: &mut [u8]) -> Result<()> {
    SystemRandom::new().fill(buf).map_err(|_| KeyError::Rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = KeyMaterial::generate().unwrap();
        let ct = k.seal(b"aad", b"hello").unwrap();
        assert_eq!(&k.open(b"aad", &ct).unwrap()[..], b"hello");
        assert!(k.open(b"other", &ct).is_err());
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 1;
            assert!(k.open(b"aad", &bad).is_err(), "bit flip at {i} accepted");
        }
        let other = KeyMaterial::generate().unwrap();
        assert!(other.open(b"aad", &ct).is_err());
        assert!(k.open(b"aad", &ct[..10]).is_err());
        assert_ne!(k.seal(b"aad", b"hello").unwrap(), ct, "nonces must differ");
        assert_eq!(format!("{k:?}"), "KeyMaterial(..)");
    }
}
