//! Integration tests of the keys crate against real peers: SoftHSM2 over PKCS#11.

mod pkcs11;
