//! Load balancing over the available endpoints of an upstream: round robin, and
//! power-of-two-choices least-outstanding-requests (the default), which picks two
//! endpoints at random and sends to the one with fewer requests in flight.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::snapshot::{Endpoint, Upstream};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balancer {
    RoundRobin,
    #[default]
    LeastOutstanding,
}

impl Balancer {
    pub fn parse(s: &str) -> Option<Balancer> {
        match s {
            "round-robin" => Some(Balancer::RoundRobin),
            "least-outstanding" | "p2c" => Some(Balancer::LeastOutstanding),
            _ => None,
        }
    }
}

impl Upstream {
    /// Picks an endpoint that is available at `now_ms`, skipping `exclude` (endpoints that
    /// already failed this request). `None` when none is available.
    pub(crate) fn pick(&self, now_ms: u64, exclude: &[usize]) -> Option<(usize, &Arc<Endpoint>)> {
        let n = self.endpoints.len();
        let ok = |i: usize| !exclude.contains(&i) && self.endpoints[i].available(now_ms);
        match self.balancer {
            Balancer::RoundRobin => {
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| ok(i))
                    .map(|i| (i, &self.endpoints[i]))
            }
            Balancer::LeastOutstanding => {
                if n <= 1 {
                    // Nothing to choose from (a route with one endpoint is common): no random
                    // numbers, no in-flight counts to sum.
                    return (n == 1 && ok(0)).then(|| (0, &self.endpoints[0]));
                }
                let a = crate::rng::below(n);
                let b = (a + 1 + crate::rng::below(n - 1)) % n;
                let pick = match (ok(a), ok(b)) {
                    (true, true) => {
                        let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
                        Some(if eb.in_flight() < ea.in_flight() {
                            b
                        } else {
                            a
                        })
                    }
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    // Both unavailable: scan from a random start for any available one.
                    (false, false) => (0..n).map(|k| (a + k) % n).find(|&i| ok(i)),
                };
                pick.map(|i| (i, &self.endpoints[i]))
            }
        }
    }

    /// Whether ejecting one more endpoint would leave none available.
    pub(crate) fn last_available(&self, now_ms: u64) -> bool {
        self.endpoints
            .iter()
            .filter(|e| e.available(now_ms))
            .count()
            <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ups(b: Balancer, n: u16) -> Arc<Upstream> {
        let eps = (0..n)
            .map(|i| Endpoint::new(([127, 0, 0, 1], 10000 + i).into()))
            .collect();
        Upstream::new("u", eps, b)
    }

    #[test]
    fn round_robin_cycles_and_skips_unavailable() {
        let u = ups(Balancer::RoundRobin, 3);
        let picks: Vec<usize> = (0..6).map(|_| u.pick(0, &[]).unwrap().0).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        u.endpoints[1].set_healthy(false);
        assert!((0..6).all(|_| u.pick(0, &[]).unwrap().0 != 1));
        assert!((0..6).all(|_| u.pick(0, &[0]).unwrap().0 == 2));
        u.endpoints[0].drain();
        u.endpoints[2].set_healthy(false);
        assert!(u.pick(0, &[]).is_none());
    }

    #[test]
    fn least_outstanding_prefers_idle_endpoints() {
        let u = ups(Balancer::LeastOutstanding, 2);
        u.endpoints[0].in_flight.add(10);
        assert!((0..50).all(|_| u.pick(0, &[]).unwrap().0 == 1));
        u.endpoints[1]
            .ejected_until_ms
            .store(100, Ordering::Relaxed);
        assert_eq!(u.pick(50, &[]).unwrap().0, 0);
        assert_eq!(u.pick(150, &[]).unwrap().0, 1);
        assert!(u.pick(0, &[0, 1]).is_none());
        assert!(ups(Balancer::LeastOutstanding, 0).pick(0, &[]).is_none());
    }
}
