//! Integration tests of the `acme` crate against a real ACME server: pebble
//! and pebble-challtestsrv (Debian package `pebble`), started per test on
//! 127.0.0.1 by [`acme::testkit::Pebble`] (HTTP-01 serving and certificate
//! checks in [`harness`]).
//!
//! Must never: contact anything but loopback, wait without a bound, or fail
//! merely because pebble is not installed (those tests print SKIPPED and pass).

mod account;
mod dns01;
mod failure;
mod harness;
mod http01;
