//! Integration tests of the control API: a real server on a loopback port, real TLS, a
//! real store (SQLite, and PostgreSQL where noted), driven over HTTPS.
//!
//! Every response any test receives is checked against the OpenAPI document (see
//! `harness::Server::call`), which is how the document is kept true.

mod authz;
mod bad_input;
mod docs;
mod flows;
mod harness;
mod linger;
mod openapi;
