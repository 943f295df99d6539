//! The data plane against real upstream servers on loopback ports: routing, balancing,
//! retries, ejection, limits, timeouts, snapshot swaps under load with zero failures, and
//! the edge's own HTTP/1.1 path on the wire.

mod h1;
mod harness;
mod protocols;
mod routing;
mod swaps;
mod workers;
