//! Automatic rotation with a moved clock (no sleeping), deletion and purge schedules.

use std::collections::BTreeMap;

use model::kms::{ContentType, KeyState};
use secrets::Rotator;

use crate::harness::{actor, scope, H};

#[tokio::test]
async fn keys_rotate_by_themselves_when_due() {
    let h = H::new().await;
    let a = actor("admin");
    let st = scope("acme/staging");
    let none = BTreeMap::new();
    h.kr.create_kms_key(&a, &st, "yearly", None, "")
        .await
        .unwrap();
    h.kr.create_kms_key(&a, &st, "monthly", Some(30), "")
        .await
        .unwrap();
    h.kr.put_secret(
        &a,
        &st,
        "db",
        b"s3cret-value-1",
        ContentType::Text,
        None,
        None,
    )
    .await
    .unwrap();
    let old = h.kr.encrypt(&st, "yearly", b"before", &none).await.unwrap();
    let rot = Rotator::new(h.kr.clone());

    // Nothing is due yet.
    assert!(rot.tick().await.unwrap().rotated.is_empty());
    // 31 days later only the monthly key rotates.
    h.clock.advance(time::Duration::days(31));
    let r = rot.tick().await.unwrap();
    assert_eq!(r.rotated, vec!["kms/acme/staging/monthly".to_string()]);
    assert_eq!(
        h.kr.kms_key_info(&st, "monthly")
            .await
            .unwrap()
            .current_version,
        2
    );
    // A year later every key rotates: KMS, environment and secret keys; nobody acted.
    h.clock.advance(time::Duration::days(340));
    let r = rot.tick().await.unwrap();
    for id in [
        "kms/acme/staging/yearly",
        "environment/acme/staging",
        "secret/acme/staging/db",
    ] {
        assert!(
            r.rotated.contains(&id.to_string()),
            "{id} not rotated: {:?}",
            r.rotated
        );
    }
    assert_eq!(
        h.kr.kms_key_info(&st, "yearly")
            .await
            .unwrap()
            .current_version,
        2
    );
    // Old data still decrypts; the secret was rewrapped under its new key version.
    assert!(h
        .kr
        .decrypt(&st, "yearly", &old.ciphertext, &none)
        .await
        .is_ok());
    let versions = h.kr.secret_versions(&st, "db").await.unwrap();
    assert_eq!(versions[0].key_version, 2);
    let v =
        h.kr.read_secret(&a, &st, "db", secrets::Which::Current)
            .await
            .unwrap();
    assert_eq!(v.value.as_deref(), Some("s3cret-value-1"));
    // Rotations are audited as the system.
    let events = h
        .store
        .audit_events(&Default::default(), |_| true)
        .await
        .unwrap();
    assert!(events
        .iter()
        .any(|e| e.action == "key.auto-rotate" && e.principal == "system"));
    // A fresh keyring (restart) still reads everything through the rewrapped chain.
    let setup = crate::harness::file_setup(h.dir.path());
    let h = h.reopen(setup).await;
    let v =
        h.kr.read_secret(&a, &st, "db", secrets::Which::Current)
            .await
            .unwrap();
    assert_eq!(v.value.as_deref(), Some("s3cret-value-1"));
    assert!(h
        .kr
        .decrypt(&st, "yearly", &old.ciphertext, &none)
        .await
        .is_ok());
}

#[tokio::test]
async fn scheduled_deletion_and_recovery_windows_run_out() {
    let h = H::new().await;
    let a = actor("admin");
    let st = scope("acme/staging");
    h.kr.create_kms_key(&a, &st, "old", None, "").await.unwrap();
    h.kr.schedule_kms_key_deletion(&a, &st, "old", 7)
        .await
        .unwrap();
    h.kr.put_secret(&a, &st, "gone", b"x", ContentType::Text, None, None)
        .await
        .unwrap();
    h.kr.delete_secret(&a, &st, "gone", Some(10)).await.unwrap();
    let rot = Rotator::new(h.kr.clone());
    h.clock.advance(time::Duration::days(6));
    let r = rot.tick().await.unwrap();
    assert!(r.destroyed_keys.is_empty() && r.purged_secrets.is_empty());
    h.clock.advance(time::Duration::days(2));
    let r = rot.tick().await.unwrap();
    assert_eq!(r.destroyed_keys, vec!["kms/acme/staging/old".to_string()]);
    assert!(
        h.kr.kms_key_info(&st, "old").await.is_err(),
        "a destroyed key is gone"
    );
    let stored = h.store.key("kms/acme/staging/old").await.unwrap().unwrap();
    assert_eq!(stored.state, KeyState::Destroyed);
    assert!(
        h.store
            .key_versions(&stored.id)
            .await
            .unwrap()
            .iter()
            .all(|v| v.wrapped.is_empty()),
        "material erased"
    );
    h.clock.advance(time::Duration::days(3));
    let r = rot.tick().await.unwrap();
    assert_eq!(r.purged_secrets, vec!["acme/staging/gone".to_string()]);
    assert!(h.kr.secret_info(&st, "gone").await.is_err());
}
