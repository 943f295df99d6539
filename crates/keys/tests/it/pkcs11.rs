//! The PKCS#11 seal against SoftHSM2 (Debian's `softhsm2`, installed by scripts/test.sh):
//! the root key is generated inside the token, is not extractable, wraps and unwraps, and a
//! wrong PIN does not unseal.

use std::path::PathBuf;
use std::process::Command;

use keys::seal::{init_pkcs11, unseal, Pkcs11Slot, SealConfig, UnsealKey};
use keys::KeyError;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A fresh SoftHSM2 token in a temp dir. SoftHSM reads its config from SOFTHSM2_CONF,
/// which is process-wide, so every test in this binary shares one token directory.
fn token(label: &str) -> (tempfile::TempDir, Pkcs11Slot) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("softhsm2.conf");
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.display()
        ),
    )
    .unwrap();
    // SAFETY of set_var: this test binary runs this one test that touches the variable.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            "1234-5678",
            "--so-pin",
            "8765-4321",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util is installed (scripts/test.sh installs softhsm2)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        dir,
        Pkcs11Slot {
            module: PathBuf::from(MODULE),
            token_label: label.into(),
        },
    )
}

#[test]
fn root_key_lives_in_the_hsm() {
    let (_dir, slot) = token("gantry-test");
    let (cfg, root) = init_pkcs11(&slot, "gantry-root", "1234-5678").unwrap();
    assert_eq!(
        cfg,
        SealConfig::Pkcs11 {
            token_label: "gantry-test".into(),
            key_label: "gantry-root".into()
        }
    );
    // The stored configuration holds no key material at all.
    let text = serde_json::to_string(&cfg).unwrap();
    assert!(!text.contains("wrapped"));
    let w1 = root.wrap(b"aad", b"keyring entry").unwrap();
    let w2 = root.wrap(b"aad", b"keyring entry").unwrap();
    assert_ne!(w1, w2, "fresh IV per wrap");
    assert_eq!(&root.unwrap(b"aad", &w1).unwrap()[..], b"keyring entry");
    assert!(root.unwrap(b"other", &w1).is_err());
    let mut bad = w1.clone();
    bad[20] ^= 1;
    assert!(root.unwrap(b"aad", &bad).is_err());
    drop(root);

    // Reopened with the PIN (a restart), the same key unwraps what was wrapped before.
    let again = unseal(&cfg, UnsealKey::Pkcs11(&slot, "1234-5678")).unwrap();
    assert_eq!(&again.unwrap(b"aad", &w1).unwrap()[..], b"keyring entry");
    drop(again);
    assert!(matches!(
        unseal(&cfg, UnsealKey::Pkcs11(&slot, "0000-0000")),
        Err(KeyError::BadUnsealKey)
    ));

    // The key is sensitive and not extractable: the token refuses to reveal its value.
    use cryptoki::context::{CInitializeArgs, Pkcs11};
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    use cryptoki::session::UserType;
    let ctx = Pkcs11::new(MODULE).unwrap();
    ctx.initialize(CInitializeArgs::OsThreads).unwrap();
    let s = ctx.get_slots_with_token().unwrap()[0];
    let session = ctx.open_ro_session(s).unwrap();
    session
        .login(
            UserType::User,
            Some(&cryptoki::types::AuthPin::from("1234-5678".to_string())),
        )
        .unwrap();
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"gantry-root".to_vec()),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1);
    let attrs = session
        .get_attributes(
            keys[0],
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Value,
            ],
        )
        .unwrap_or_default();
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
    assert!(
        !attrs.iter().any(|a| matches!(a, Attribute::Value(_))),
        "the value must not be readable"
    );
}
