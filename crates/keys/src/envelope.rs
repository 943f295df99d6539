//! The ciphertext format of everything Gantry encrypts under a versioned key:
//!
//! ```text
//! "gk1" | u8 id_len | key id (UTF-8) | u32 BE key version | nonce (12) | ciphertext | tag (16)
//! ```
//!
//! The AAD is the header (everything before the nonce) followed by a *binding*: the
//! resource the data belongs to and the caller's encryption context. A ciphertext copied to
//! another resource, another tenant, another key or another context fails to decrypt, and so
//! does a header edited to point at another key or version.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::{KeyError, KeyMaterial, Result};

const MAGIC: &[u8; 3] = b"gk1";

/// What a ciphertext says about the key that opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key_id: String,
    pub version: u32,
}

/// The canonical bytes of a binding: the resource and the sorted encryption context, each
/// field length-prefixed so no two different bindings share an encoding.
pub fn binding(resource: &str, context: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let mut field = |b: &[u8]| {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    };
    field(resource.as_bytes());
    for (k, v) in context {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    out
}

fn header_bytes(h: &Header) -> Result<Vec<u8>> {
    let id = h.key_id.as_bytes();
    if id.is_empty() || id.len() > 255 {
        return Err(KeyError::Malformed("key id must be 1-255 bytes".into()));
    }
    let mut out = Vec::with_capacity(8 + id.len());
    out.extend_from_slice(MAGIC);
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out.extend_from_slice(&h.version.to_be_bytes());
    Ok(out)
}

fn aad(header: &[u8], binding: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(header.len() + 1 + binding.len());
    a.extend_from_slice(header);
    a.push(0);
    a.extend_from_slice(binding);
    a
}

/// Encrypts `plaintext` under version `h.version` of key `h.key_id`.
pub fn encrypt(h: &Header, key: &KeyMaterial, binding: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = header_bytes(h)?;
    let sealed = key.seal(&aad(&out, binding), plaintext)?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Reads the header of a ciphertext; returns it and the header's length.
pub fn header(ct: &[u8]) -> Result<(Header, usize)> {
    let bad = |m: &str| KeyError::Malformed(m.to_string());
    if ct.len() < 4 || &ct[..3] != MAGIC {
        return Err(bad("not a Gantry ciphertext"));
    }
    let n = ct[3] as usize;
    if n == 0 || ct.len() < 4 + n + 4 {
        return Err(bad("truncated header"));
    }
    let key_id = std::str::from_utf8(&ct[4..4 + n])
        .map_err(|_| bad("key id is not UTF-8"))?
        .to_string();
    let mut v = [0u8; 4];
    v.copy_from_slice(&ct[4 + n..8 + n]);
    Ok((
        Header {
            key_id,
            version: u32::from_be_bytes(v),
        },
        8 + n,
    ))
}

/// Decrypts with `key`, which the caller picked from the header.
pub fn decrypt(key: &KeyMaterial, ct: &[u8], binding: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let (_, len) = header(ct)?;
    key.open(&aad(&ct[..len], binding), &ct[len..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bound_to_resource_context_and_header() {
        let k = KeyMaterial::generate().unwrap();
        let h = Header {
            key_id: "acme/staging/payments".into(),
            version: 3,
        };
        let b = binding("kms:acme/staging/payments", &ctx(&[("order", "42")]));
        let ct = encrypt(&h, &k, &b, b"card").unwrap();
        assert_eq!(header(&ct).unwrap().0, h);
        assert_eq!(&decrypt(&k, &ct, &b).unwrap()[..], b"card");
        // Another resource, another context, no context: refused.
        for other in [
            binding("kms:globex/staging/payments", &ctx(&[("order", "42")])),
            binding("kms:acme/staging/payments", &ctx(&[("order", "43")])),
            binding("kms:acme/staging/payments", &ctx(&[])),
        ] {
            assert!(matches!(decrypt(&k, &ct, &other), Err(KeyError::Decrypt)));
        }
        // A header pointing at another version is refused too.
        let mut edited = ct.clone();
        let vpos = 4 + h.key_id.len() + 3;
        edited[vpos] ^= 1;
        assert!(decrypt(&k, &edited, &b).is_err());
        // Field boundaries cannot be shifted: ("ab","c") differs from ("a","bc").
        assert_ne!(
            binding("r", &ctx(&[("ab", "c")])),
            binding("r", &ctx(&[("a", "bc")]))
        );
        assert!(header(b"xx").is_err() && header(b"gk1\x05ab").is_err());
    }
}
