//! The data plane against real upstream servers on loopback ports: routing, balancing,
//! retries, ejection, limits, timeouts, and snapshot swaps under load with zero failures.

mod harness;
mod protocols;
mod routing;
mod swaps;
mod workers;
