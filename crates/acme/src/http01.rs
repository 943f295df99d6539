//! HTTP-01 challenge responses (RFC 8555 §8.3): a shared, cheaply clonable
//! map from challenge token to key authorization.
//!
//! The ACME client inserts an entry while a challenge is pending and removes
//! it again once the order finished (successfully or not). The edge's plain
//! HTTP listener (port 80) answers
//! `GET /.well-known/acme-challenge/{token}` with [`Http01Tokens::answer`]:
//! a hit is served as `200 OK`, `Content-Type: text/plain`, body = the
//! returned string; a miss as `404`.
//!
//! Must never: answer for a path outside `/.well-known/acme-challenge/`,
//! answer a token that is not a base64url string, panic on a poisoned lock,
//! or log key authorizations.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The path prefix under which HTTP-01 responses are served.
pub const HTTP01_PATH_PREFIX: &str = "/.well-known/acme-challenge/";

/// Longest token we accept. RFC 8555 tokens carry 128 bits of entropy (22
/// base64url characters); CAs use a few dozen. Anything much longer is not a token.
const MAX_TOKEN_LEN: usize = 256;

/// Token -> key authorization map shared between the ACME client and the HTTP listener.
///
/// Cloning is cheap (an `Arc` bump); all clones see the same entries.
/// Entries are reference-counted: a CA may hand the same pending authorization
/// (same token) to two concurrent orders, and the first order to finish must
/// not withdraw the response the other one still needs.
#[derive(Clone, Default)]
pub struct Http01Tokens {
    inner: Arc<RwLock<HashMap<String, Entry>>>,
}

struct Entry {
    key_authorization: String,
    users: usize,
}

impl Http01Tokens {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key authorization to serve for `token`, if a challenge for it is pending.
    pub fn get(&self, token: &str) -> Option<String> {
        if !valid_token(token) {
            return None;
        }
        self.read().get(token).map(|e| e.key_authorization.clone())
    }

    /// Answers an HTTP request path: `Some(body)` for
    /// `/.well-known/acme-challenge/{token}` with a pending token, else `None`
    /// (respond `404`). A query string, if still attached, is ignored.
    pub fn answer(&self, path: &str) -> Option<String> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let token = path.strip_prefix(HTTP01_PATH_PREFIX)?;
        self.get(token)
    }

    /// Every pending token and its key authorization (for edges that answer challenges
    /// from a copy of this map).
    pub fn entries(&self) -> Vec<(String, String)> {
        self.read()
            .iter()
            .map(|(t, e)| (t.clone(), e.key_authorization.clone()))
            .collect()
    }

    /// Number of pending tokens.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when no challenge is pending.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    pub(crate) fn insert(&self, token: String, key_authorization: String) {
        let mut map = self.write();
        let entry = map.entry(token).or_insert(Entry {
            key_authorization: String::new(),
            users: 0,
        });
        entry.key_authorization = key_authorization;
        entry.users += 1;
    }

    pub(crate) fn remove(&self, token: &str) {
        let mut map = self.write();
        if let Some(entry) = map.get_mut(token) {
            entry.users = entry.users.saturating_sub(1);
            if entry.users == 0 {
                map.remove(token);
            }
        }
    }

    // No critical section can panic half-way through an update (they are plain
    // HashMap operations), so a poisoned lock is safe to reuse.
    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for Http01Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Entries are deliberately not printed.
        f.debug_struct("Http01Tokens")
            .field("pending", &self.len())
            .finish()
    }
}

/// Tokens are base64url without padding (RFC 8555 §8.3).
pub(crate) fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_pending_tokens_under_the_prefix() {
        let tokens = Http01Tokens::new();
        let clone = tokens.clone();
        tokens.insert("abc_DEF-123".into(), "abc_DEF-123.thumb".into());

        assert_eq!(
            clone.get("abc_DEF-123").as_deref(),
            Some("abc_DEF-123.thumb")
        );
        assert_eq!(
            clone
                .answer("/.well-known/acme-challenge/abc_DEF-123")
                .as_deref(),
            Some("abc_DEF-123.thumb")
        );
        assert_eq!(
            clone
                .answer("/.well-known/acme-challenge/abc_DEF-123?x=1")
                .as_deref(),
            Some("abc_DEF-123.thumb")
        );
        assert_eq!(clone.answer("/abc_DEF-123"), None);
        assert_eq!(clone.answer("/.well-known/acme-challenge/"), None);
        assert_eq!(clone.answer("/.well-known/acme-challenge/other"), None);
        assert_eq!(
            clone.answer("/.well-known/acme-challenge/../abc_DEF-123"),
            None
        );
        assert_eq!(clone.len(), 1);

        tokens.remove("abc_DEF-123");
        assert!(clone.is_empty());
        assert_eq!(clone.get("abc_DEF-123"), None);
    }

    #[test]
    fn shared_tokens_stay_until_the_last_user_is_done() {
        let tokens = Http01Tokens::new();
        tokens.insert("tok".into(), "tok.thumb".into());
        tokens.insert("tok".into(), "tok.thumb".into());
        tokens.remove("tok");
        assert_eq!(tokens.get("tok").as_deref(), Some("tok.thumb"));
        tokens.remove("tok");
        assert_eq!(tokens.get("tok"), None);
        tokens.remove("tok"); // removing again is harmless
        assert!(tokens.is_empty());
    }

    #[test]
    fn debug_hides_entries() {
        let tokens = Http01Tokens::new();
        tokens.insert("tok".into(), "secretish".into());
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("secretish"), "{shown}");
    }
}
