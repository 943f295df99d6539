//! End-to-end tests: the real `gantry` binary started on loopback ports, driven by the real
//! CLI (and, for load, by an HTTPS client), on both store engines.

mod acme;
mod artifacts;
mod certs;
mod cli;
mod crash;
mod edge;
mod edge_remote;
mod harness;
mod scan;
mod seal;
mod secrets;
mod services;
mod tls;
