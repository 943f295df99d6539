//! Fast per-thread random numbers for the request path: request ids, trace ids and the
//! balancer's choices. A wyrand generator per thread, seeded once from the operating
//! system's randomness: unique and unpredictable enough for ids and load spreading, with no
//! lock and no reseeding on the hot path.
//!
//! It must never be used for anything secret (keys, tokens, nonces): use `rand`'s
//! cryptographic generator for those.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(rand::random::<u64>());
}

/// 64 random bits.
pub(crate) fn next_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x).wrapping_mul(u128::from(x ^ 0xe703_7ed1_a0b4_28db));
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A number in `0..n` (`n > 0`), without modulo bias worth speaking of for small `n`.
pub(crate) fn below(n: usize) -> usize {
    ((u128::from(next_u64()) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_differ_and_stay_in_range() {
        let a: Vec<u64> = (0..100).map(|_| next_u64()).collect();
        let mut b = a.clone();
        b.sort_unstable();
        b.dedup();
        assert_eq!(b.len(), 100);
        let mut seen = [false; 3];
        for _ in 0..200 {
            seen[below(3)] = true;
        }
        assert_eq!(seen, [true; 3]);
    }
}
