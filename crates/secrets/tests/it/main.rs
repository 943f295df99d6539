//! Integration tests of the key hierarchy on a real store (SQLite, and PostgreSQL where
//! noted) with an injected clock: KMS, secrets, rotation, sealing, tampering, and a scan of
//! every file for plaintext.

mod harness;
mod kms;
mod rotation;
mod seal;
mod vault;
