//! Request metrics of the data plane, kept in atomics on the hot path (sharded per thread,
//! so that worker threads never contend on them) and rendered in the Prometheus text
//! format on demand. A route's `RouteStats` outlives snapshots (the
//! control side hands the same `Arc` to every snapshot of a route), so counters survive
//! route changes.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::snapshot::Route;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Counter shards per route: each thread adds to its own (worker threads get distinct
/// ones), so workers on different cores never write to the same cache line; a scrape sums
/// them.
const SHARDS: usize = 8;

/// One thread's share of a route's counters, on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// Answers by status class: 1xx .. 5xx.
    by_class: [AtomicU64; 5],
    /// Requests per bucket of `BUCKETS` (the first bucket that holds them), then above the
    /// last one; made cumulative when rendered.
    buckets: [AtomicU64; 13],
    sum_micros: AtomicU64,
}

/// A gauge added to from many threads (requests in flight on an endpoint): each thread
/// moves its own shard, so workers never write to the same cache line; reading sums them.
#[derive(Debug, Default)]
pub(crate) struct ShardedGauge {
    shards: [PaddedI64; SHARDS],
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct PaddedI64(AtomicI64);

impl ShardedGauge {
    pub(crate) fn add(&self, n: i64) {
        self.shards[shard_index()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The sum of every shard (a shard may be negative when a value moved threads).
    pub(crate) fn get(&self) -> usize {
        let sum: i64 = self
            .shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum();
        sum.max(0) as usize
    }
}

/// The shard of the current thread.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// Counters of one route.
#[derive(Debug, Default)]
pub struct RouteStats {
    shards: [Shard; SHARDS],
}

impl RouteStats {
    pub fn record(&self, status: u16, elapsed: Duration) {
        let s = &self.shards[shard_index()];
        let class = (status / 100).clamp(1, 5) as usize - 1;
        s.by_class[class].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        s.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        s.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        (0..5).map(|c| self.class(c)).sum()
    }

    /// Answers of status class `c + 1` (0 for 1xx .. 4 for 5xx).
    fn class(&self, c: usize) -> u64 {
        self.sum(|s| &s.by_class[c])
    }

    /// Requests that took at most `BUCKETS[i]` (`i == BUCKETS.len()`: all of them).
    fn cumulative(&self, i: usize) -> u64 {
        (0..=i).map(|b| self.sum(|s| &s.buckets[b])).sum()
    }

    fn sum(&self, field: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| field(s).load(Ordering::Relaxed))
            .sum()
    }
}

/// Escapes a label value (backslash, quote, newline).
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes the HELP/TYPE headers of every metric family.
pub fn render_headers(out: &mut String) {
    for (name, kind, help) in [
        (
            "gantry_edge_requests_total",
            "counter",
            "Requests answered, by route and status class.",
        ),
        (
            "gantry_edge_request_duration_seconds",
            "histogram",
            "Time from routing to the upstream's response headers.",
        ),
        (
            "gantry_edge_upstream_healthy",
            "gauge",
            "1 when the endpoint passes its health checks.",
        ),
        (
            "gantry_edge_upstream_ejected",
            "gauge",
            "1 while passive outlier detection has ejected the endpoint.",
        ),
        (
            "gantry_edge_upstream_in_flight",
            "gauge",
            "Requests in flight to the endpoint.",
        ),
        (
            "gantry_edge_unrouted_total",
            "counter",
            "Requests that matched no route.",
        ),
        (
            "gantry_edge_active_connections",
            "gauge",
            "Open client connections.",
        ),
        (
            "gantry_edge_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
        ),
        (
            "gantry_edge_certificate_expiry_timestamp_seconds",
            "gauge",
            "When a served certificate expires (Unix time).",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
}

/// Writes the expiry of every certificate in `table`.
pub fn render_certs(out: &mut String, table: &crate::CertTable) {
    for e in table.entries() {
        let _ = writeln!(
            out,
            "gantry_edge_certificate_expiry_timestamp_seconds{{certificate=\"{}\"}} {}",
            label(&e.name),
            e.not_after
        );
    }
}

/// Writes the series of `route` on `listener`; `ejected` says whether an endpoint is
/// ejected now.
pub fn render_route(
    out: &mut String,
    listener: &str,
    route: &Route,
    ejected: &dyn Fn(&crate::Endpoint) -> bool,
) {
    let id = label(&route.id);
    let s = &route.stats;
    for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        let n = s.class(i);
        let _ = writeln!(out, "gantry_edge_requests_total{{listener=\"{listener}\",route=\"{id}\",code=\"{class}\"}} {n}");
    }
    for (i, b) in BUCKETS.iter().enumerate() {
        let n = s.cumulative(i);
        let _ = writeln!(out, "gantry_edge_request_duration_seconds_bucket{{listener=\"{listener}\",route=\"{id}\",le=\"{b}\"}} {n}");
    }
    let count = s.cumulative(BUCKETS.len());
    let sum = s.sum(|s| &s.sum_micros) as f64 / 1e6;
    let _ = writeln!(out, "gantry_edge_request_duration_seconds_bucket{{listener=\"{listener}\",route=\"{id}\",le=\"+Inf\"}} {count}");
    let _ = writeln!(
        out,
        "gantry_edge_request_duration_seconds_sum{{listener=\"{listener}\",route=\"{id}\"}} {sum}"
    );
    let _ = writeln!(out, "gantry_edge_request_duration_seconds_count{{listener=\"{listener}\",route=\"{id}\"}} {count}");
    for ep in &route.upstream.endpoints {
        let l = format!(
            "listener=\"{listener}\",route=\"{id}\",endpoint=\"{}\"",
            ep.addr
        );
        let _ = writeln!(
            out,
            "gantry_edge_upstream_healthy{{{l}}} {}",
            u8::from(ep.is_healthy())
        );
        let _ = writeln!(
            out,
            "gantry_edge_upstream_ejected{{{l}}} {}",
            u8::from(ejected(ep))
        );
        let _ = writeln!(
            out,
            "gantry_edge_upstream_in_flight{{{l}}} {}",
            ep.in_flight()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let s = RouteStats::default();
        s.record(200, Duration::from_micros(300));
        s.record(503, Duration::from_millis(30));
        s.record(200, Duration::from_secs(10));
        assert_eq!(s.class(1), 2);
        assert_eq!(s.class(4), 1);
        assert_eq!(s.cumulative(0), 1);
        assert_eq!(s.cumulative(6), 2, "0.05 s bucket holds both");
        assert_eq!(s.cumulative(BUCKETS.len() - 1), 2, "10 s is above 5 s");
        assert_eq!(s.cumulative(BUCKETS.len()), 3);
        assert_eq!(s.requests(), 3);
        // Another thread's requests land in another shard and count as well.
        std::thread::scope(|t| {
            t.spawn(|| s.record(404, Duration::from_millis(1)));
        });
        assert_eq!(s.class(3), 1);
        assert_eq!(s.requests(), 4);
        assert_eq!(label("a\"b"), "a\\\"b");
    }
}
