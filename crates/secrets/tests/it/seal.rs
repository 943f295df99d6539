//! Sealing: the passphrase seal starts sealed and refuses everything until unsealed; the
//! file seal needs its key file; a keyring can be sealed again.

use model::kms::ContentType;
use model::Code;
use secrets::SealSetup;

use crate::harness::{actor, scope, FAST_ARGON, H};

fn pass_setup(initial: Option<&str>) -> SealSetup {
    SealSetup::Passphrase {
        initial: initial.map(str::to_string),
        params: FAST_ARGON,
    }
}

#[tokio::test]
async fn passphrase_seal_starts_sealed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gantry.db").display());
    // First start without the initial passphrase: a clear error.
    let store = std::sync::Arc::new(store::Store::open(&url).await.unwrap());
    let clock = std::sync::Arc::new(model::clock::SystemClock);
    let err = secrets::Keyring::open(store.clone(), pass_setup(None), clock)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("GANTRY_SEAL_PASSPHRASE"), "{err}");
    store.close().await;

    let h = H::with(dir, url, pass_setup(Some("correct horse battery staple"))).await;
    assert!(!h.kr.is_sealed(), "unsealed right after initialization");
    let a = actor("admin");
    let st = scope("acme/staging");
    h.kr.put_secret(&a, &st, "db", b"pw-123456", ContentType::Text, None, None)
        .await
        .unwrap();

    let h = h.reopen(pass_setup(None)).await;
    assert!(h.kr.is_sealed());
    let e =
        h.kr.read_secret(&a, &st, "db", secrets::Which::Current)
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::Sealed);
    let e =
        h.kr.put_secret(&a, &st, "db2", b"x", ContentType::Text, None, None)
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::Sealed);
    let e = h.kr.unseal("wrong horse battery staple").unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(h.kr.is_sealed());
    h.kr.unseal("correct horse battery staple").unwrap();
    let v =
        h.kr.read_secret(&a, &st, "db", secrets::Which::Current)
            .await
            .unwrap();
    assert_eq!(v.value.as_deref(), Some("pw-123456"));
    h.kr.seal();
    assert_eq!(
        h.kr.read_secret(&a, &st, "db", secrets::Which::Current)
            .await
            .unwrap_err()
            .code(),
        Code::Sealed
    );
    // A restart with another seal kind is refused.
    let other = crate::harness::file_setup(h.dir.path());
    let url = h.url.clone();
    h.store.close().await;
    let store = std::sync::Arc::new(store::Store::open(&url).await.unwrap());
    let err = secrets::Keyring::open(store, other, std::sync::Arc::new(model::clock::SystemClock))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("passphrase"), "{err}");
}

#[tokio::test]
async fn file_seal_needs_its_key_file() {
    let h = H::new().await;
    let a = actor("admin");
    h.kr.put_secret(
        &a,
        &scope("acme/staging"),
        "db",
        b"v",
        ContentType::Text,
        None,
        None,
    )
    .await
    .unwrap();
    std::fs::remove_file(h.dir.path().join("seal.key")).unwrap();
    let url = h.url.clone();
    let store = std::sync::Arc::new(store::Store::open(&url).await.unwrap());
    let setup = crate::harness::file_setup(h.dir.path());
    let err = secrets::Keyring::open(store, setup, std::sync::Arc::new(model::clock::SystemClock))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("missing"), "{err}");
}
