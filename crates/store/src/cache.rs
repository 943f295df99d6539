//! In-process caches of records read on every request: authenticated principals (token
//! hash -> principal and roles), KMS keys by id and environments by name.
//!
//! These rows change rarely and are read by nearly every request, so a hit saves a
//! statement on the hot path. Correctness rules, the same for every cache:
//!
//! - Every change made through this process empties the caches it could make stale right
//!   after its commit (`invalidate` bumps the generation): a revoked token, a changed grant,
//!   a disabled or rotated key or a deleted environment takes effect on the next request.
//! - A lookup that started before a bump is stored with the generation it read before its
//!   query, so it can never outlive the bump.
//! - An entry lives at most `TTL`: another control plane sharing the same PostgreSQL
//!   database (which cannot bump this process's generation) is seen within that time.
//! - Only rows found are cached: a miss always goes to the store. For principals, expiry is
//!   checked against the clock on every hit, and unknown, revoked and expired tokens are
//!   never cached (each failure goes to the store and is audited).
//!
//! A cache must never hand out a value read before a change this process has committed.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::principals::Authenticated;

/// Longest life of a cached entry.
pub const TTL: Duration = Duration::from_secs(1);

/// Most entries a cache holds; past it the cache starts over.
const MAX_ENTRIES: usize = 10_000;

struct Entry<V> {
    generation: u64,
    filled: Instant,
    value: V,
}

/// Values by key, emptied by `invalidate` and expired after `TTL`.
pub(crate) struct Cache<K, V> {
    generation: AtomicU64,
    entries: Mutex<HashMap<K, Entry<V>>>,
}

impl<K, V> Default for Cache<K, V> {
    fn default() -> Self {
        Cache {
            generation: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, V: Clone> Cache<K, V> {
    /// The generation to pass to `put` for a lookup that starts now.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Forgets every entry. Call after committing a change that could make one stale.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.lock().clear();
    }

    /// The value cached for `key`, if still valid.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let generation = self.generation();
        let mut entries = self.lock();
        let e = entries.get(key)?;
        if e.generation != generation || e.filled.elapsed() >= TTL {
            entries.remove(key);
            return None;
        }
        Some(e.value.clone())
    }

    /// Caches a value read from the store by a lookup that started at `generation`.
    pub(crate) fn put(&self, key: K, generation: u64, value: V) {
        let mut entries = self.lock();
        // Checked under the lock that `invalidate` also takes: a bump since the lookup
        // started means the row read may be stale.
        if generation != self.generation() {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                generation,
                filled: Instant::now(),
                value,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry<V>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Authenticated principals by token hash, with their token's expiry.
#[derive(Default)]
pub(crate) struct AuthCache(Cache<String, (Option<OffsetDateTime>, Authenticated)>);

impl AuthCache {
    pub(crate) fn generation(&self) -> u64 {
        self.0.generation()
    }

    pub(crate) fn invalidate(&self) {
        self.0.invalidate()
    }

    /// The principal cached for `hash`, if still valid at `now`.
    pub(crate) fn get(&self, hash: &str, now: OffsetDateTime) -> Option<Authenticated> {
        let (expires_at, who) = self.0.get(hash)?;
        if expires_at.is_some_and(|x| x <= now) {
            return None;
        }
        Some(who)
    }

    /// Caches a principal read from the store by a lookup that started at `generation`.
    pub(crate) fn put(
        &self,
        hash: String,
        generation: u64,
        expires_at: Option<OffsetDateTime>,
        who: Authenticated,
    ) {
        self.0.put(hash, generation, (expires_at, who))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_that_started_before_an_invalidation_is_not_kept() {
        let c: Cache<String, u32> = Cache::default();
        let g = c.generation();
        c.invalidate();
        c.put("a".into(), g, 1);
        assert_eq!(c.get("a"), None);
        let g = c.generation();
        c.put("a".into(), g, 2);
        assert_eq!(c.get("a"), Some(2));
        c.invalidate();
        assert_eq!(c.get("a"), None);
    }
}
