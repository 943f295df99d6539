//! Request metrics of the data plane, kept in atomics on the hot path and rendered in the
//! Prometheus text format on demand. A route's `RouteStats` outlives snapshots (the
//! control side hands the same `Arc` to every snapshot of a route), so counters survive
//! route changes.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::snapshot::Route;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Counters of one route.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Answers by status class: 1xx .. 5xx.
    by_class: [AtomicU64; 5],
    /// Cumulative histogram counts, one per bucket of `BUCKETS`.
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl RouteStats {
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
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
        let n = s.by_class[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "gantry_edge_requests_total{{listener=\"{listener}\",route=\"{id}\",code=\"{class}\"}} {n}");
    }
    for (i, b) in BUCKETS.iter().enumerate() {
        let n = s.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "gantry_edge_request_duration_seconds_bucket{{listener=\"{listener}\",route=\"{id}\",le=\"{b}\"}} {n}");
    }
    let count = s.count.load(Ordering::Relaxed);
    let sum = s.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
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
        assert_eq!(s.by_class[1].load(Ordering::Relaxed), 1);
        assert_eq!(s.by_class[4].load(Ordering::Relaxed), 1);
        assert_eq!(s.buckets[0].load(Ordering::Relaxed), 1);
        assert_eq!(
            s.buckets[6].load(Ordering::Relaxed),
            2,
            "0.05 s bucket holds both"
        );
        assert_eq!(s.requests(), 2);
        assert_eq!(label("a\"b"), "a\\\"b");
    }
}
