//! The in-process cache of authenticated principals: token hash -> principal and roles.
//!
//! Authentication runs on every request, and tokens and grants change rarely, so a hit
//! saves a statement on the hot path. Correctness rules:
//!
//! - Every change to accounts, tokens or grants made through this process bumps the
//!   generation after its commit, which empties the cache at once: a revoked token, a
//!   deleted account or a changed grant takes effect on the next request.
//! - A lookup that started before a bump is stored with the generation it read before its
//!   query, so it can never outlive the bump.
//! - An entry lives at most `TTL`: another control plane sharing the same PostgreSQL
//!   database (which cannot bump this process's generation) is seen within that time.
//! - Expiry is checked against the clock on every hit, not cached; unknown, revoked and
//!   expired tokens are never cached (each failure goes to the store and is audited).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::principals::Authenticated;

/// Longest life of a cached principal.
pub const TTL: Duration = Duration::from_secs(1);

/// Most principals cached; past it the cache starts over.
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    generation: u64,
    filled: Instant,
    expires_at: Option<OffsetDateTime>,
    who: Authenticated,
}

#[derive(Default)]
pub(crate) struct AuthCache {
    generation: AtomicU64,
    entries: Mutex<HashMap<String, Entry>>,
}

impl AuthCache {
    /// The generation to pass to `put` for a lookup that starts now.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Forgets every cached principal. Call after committing a change to accounts, tokens
    /// or grants.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The principal cached for `hash`, if still valid at `now`.
    pub(crate) fn get(&self, hash: &str, now: OffsetDateTime) -> Option<Authenticated> {
        let generation = self.generation();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = entries.get(hash)?;
        if e.generation != generation || e.filled.elapsed() >= TTL {
            entries.remove(hash);
            return None;
        }
        if e.expires_at.is_some_and(|x| x <= now) {
            return None;
        }
        Some(e.who.clone())
    }

    /// Caches a principal read from the store by a lookup that started at `generation`.
    pub(crate) fn put(
        &self,
        hash: String,
        generation: u64,
        expires_at: Option<OffsetDateTime>,
        who: Authenticated,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock that `invalidate` also takes: a bump since the lookup
        // started means the row read may be stale.
        if generation != self.generation() {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            hash,
            Entry {
                generation,
                filled: Instant::now(),
                expires_at,
                who,
            },
        );
    }
}
