//! KMS: encrypt/decrypt round trips, context binding, tampering, key states, versions.

use std::collections::BTreeMap;

use model::kms::{KeyState, UpdateKey};
use model::Code;
use secrets::SecretsError;

use crate::harness::{actor, scope, unb64, H};

fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn code(e: SecretsError) -> Code {
    e.code()
}

#[tokio::test]
async fn encrypt_decrypt_with_context_and_refusals() {
    let h = H::new().await;
    let a = actor("admin");
    let st = scope("acme/staging");
    let k =
        h.kr.create_kms_key(&a, &st, "payments", None, "cards")
            .await
            .unwrap();
    assert_eq!(
        (k.name.as_str(), k.current_version, k.rotation_days),
        ("acme/staging/payments", 1, 365)
    );
    let c = ctx(&[("order", "42")]);
    let ct =
        h.kr.encrypt(&st, "payments", b"4111-1111", &c)
            .await
            .unwrap();
    let pt =
        h.kr.decrypt(&st, "payments", &ct.ciphertext, &c)
            .await
            .unwrap();
    assert_eq!(unb64(&pt.plaintext_b64), b"4111-1111");

    // Wrong or missing context: refused with invalid_ciphertext, never wrong plaintext.
    for bad in [ctx(&[("order", "43")]), ctx(&[])] {
        let e =
            h.kr.decrypt(&st, "payments", &ct.ciphertext, &bad)
                .await
                .unwrap_err();
        assert_eq!(code(e), Code::InvalidCiphertext);
    }
    // Every flipped bit is refused.
    let raw = unb64(&ct.ciphertext);
    for i in 0..raw.len() {
        let mut b = raw.clone();
        b[i] ^= 0x01;
        let e =
            h.kr.decrypt(&st, "payments", &crate::harness::b64(&b), &c)
                .await;
        assert!(e.is_err(), "bit flip at byte {i} accepted");
    }
    // A ciphertext of another key (same name in another tenant) is refused.
    let g = scope("globex/staging");
    h.kr.create_kms_key(&a, &g, "payments", None, "")
        .await
        .unwrap();
    let e =
        h.kr.decrypt(&g, "payments", &ct.ciphertext, &c)
            .await
            .unwrap_err();
    assert_eq!(code(e), Code::InvalidCiphertext);
    // Garbage and base64 garbage.
    assert_eq!(
        code(h.kr.decrypt(&st, "payments", "%%%", &c).await.unwrap_err()),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            h.kr.decrypt(&st, "payments", "aGVsbG8=", &c)
                .await
                .unwrap_err()
        ),
        Code::InvalidCiphertext
    );
    // 4 KiB limit.
    assert!(h
        .kr
        .encrypt(&st, "payments", &[0u8; 4096], &c)
        .await
        .is_ok());
    assert_eq!(
        code(
            h.kr.encrypt(&st, "payments", &[0u8; 4097], &c)
                .await
                .unwrap_err()
        ),
        Code::InvalidArgument
    );
    // Duplicate and missing keys, and a missing environment.
    assert_eq!(
        code(
            h.kr.create_kms_key(&a, &st, "payments", None, "")
                .await
                .unwrap_err()
        ),
        Code::AlreadyExists
    );
    assert_eq!(
        code(h.kr.encrypt(&st, "nope", b"x", &c).await.unwrap_err()),
        Code::NotFound
    );
    assert_eq!(
        code(
            h.kr.create_kms_key(&a, &scope("acme/nope"), "k", None, "")
                .await
                .unwrap_err()
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            h.kr.create_kms_key(&a, &st, "k", Some(0), "")
                .await
                .unwrap_err()
        ),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn disabled_and_scheduled_keys_refuse_and_come_back() {
    let h = H::new().await;
    let a = actor("admin");
    let st = scope("acme/staging");
    h.kr.create_kms_key(&a, &st, "k", None, "").await.unwrap();
    let ct = h.kr.encrypt(&st, "k", b"data", &ctx(&[])).await.unwrap();
    let k = h.kr.set_kms_key_enabled(&a, &st, "k", false).await.unwrap();
    assert_eq!(k.state, KeyState::Disabled);
    for r in [
        h.kr.encrypt(&st, "k", b"x", &ctx(&[])).await.map(|_| ()),
        h.kr.decrypt(&st, "k", &ct.ciphertext, &ctx(&[]))
            .await
            .map(|_| ()),
    ] {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Code::Conflict);
        assert!(e.to_string().contains("disabled"));
    }
    assert!(
        h.kr.set_kms_key_enabled(&a, &st, "k", false).await.is_err(),
        "already disabled"
    );
    h.kr.set_kms_key_enabled(&a, &st, "k", true).await.unwrap();
    // Scheduling: 7-30 days.
    for bad in [6, 31] {
        assert_eq!(
            h.kr.schedule_kms_key_deletion(&a, &st, "k", bad)
                .await
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
    }
    let k =
        h.kr.schedule_kms_key_deletion(&a, &st, "k", 7)
            .await
            .unwrap();
    assert_eq!(k.state, KeyState::PendingDeletion);
    let e =
        h.kr.decrypt(&st, "k", &ct.ciphertext, &ctx(&[]))
            .await
            .unwrap_err();
    assert!(e.to_string().contains("scheduled for deletion"), "{e}");
    let k = h.kr.cancel_kms_key_deletion(&a, &st, "k").await.unwrap();
    assert_eq!(k.state, KeyState::Disabled);
    h.kr.set_kms_key_enabled(&a, &st, "k", true).await.unwrap();
    assert_eq!(
        unb64(
            &h.kr
                .decrypt(&st, "k", &ct.ciphertext, &ctx(&[]))
                .await
                .unwrap()
                .plaintext_b64
        ),
        b"data"
    );
}

#[tokio::test]
async fn rotation_versions_retirement_and_rewrap() {
    let h = H::new().await;
    let a = actor("admin");
    let st = scope("acme/staging");
    h.kr.create_kms_key(&a, &st, "k", None, "").await.unwrap();
    let v1 =
        h.kr.encrypt(&st, "k", b"plain-one-7f3a", &ctx(&[]))
            .await
            .unwrap();
    assert_eq!(v1.key_version, 1);
    let k = h.kr.rotate_kms_key(&a, &st, "k").await.unwrap();
    assert_eq!(k.current_version, 2);
    let v2 =
        h.kr.encrypt(&st, "k", b"plain-two-9c1d", &ctx(&[]))
            .await
            .unwrap();
    assert_eq!(v2.key_version, 2);
    // Old versions keep decrypting.
    let p =
        h.kr.decrypt(&st, "k", &v1.ciphertext, &ctx(&[]))
            .await
            .unwrap();
    assert_eq!(
        (unb64(&p.plaintext_b64), p.key_version),
        (b"plain-one-7f3a".to_vec(), 1)
    );
    // Rewrap moves data to the newest version.
    let r =
        h.kr.rewrap(&st, "k", &v1.ciphertext, &ctx(&[]))
            .await
            .unwrap();
    assert_eq!(r.key_version, 2);
    // Retiring version 1: its ciphertexts are refused, the rewrapped one still opens.
    let upd = UpdateKey {
        min_decrypt_version: Some(2),
        ..Default::default()
    };
    h.kr.update_kms_key(&a, &st, "k", &upd).await.unwrap();
    let e =
        h.kr.decrypt(&st, "k", &v1.ciphertext, &ctx(&[]))
            .await
            .unwrap_err();
    assert!(e.to_string().contains("retired"), "{e}");
    assert_eq!(
        unb64(
            &h.kr
                .decrypt(&st, "k", &r.ciphertext, &ctx(&[]))
                .await
                .unwrap()
                .plaintext_b64
        ),
        b"plain-one-7f3a"
    );
    let bad = UpdateKey {
        min_decrypt_version: Some(3),
        ..Default::default()
    };
    assert_eq!(
        h.kr.update_kms_key(&a, &st, "k", &bad)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // Data keys: plaintext and its wrapped form agree.
    let dk =
        h.kr.generate_data_key(&st, "k", None, &ctx(&[("file", "a.csv")]))
            .await
            .unwrap();
    assert_eq!(unb64(&dk.plaintext_b64).len(), 32);
    let back =
        h.kr.decrypt(&st, "k", &dk.ciphertext, &ctx(&[("file", "a.csv")]))
            .await
            .unwrap();
    assert_eq!(back.plaintext_b64, dk.plaintext_b64);
    assert_eq!(
        h.kr.generate_data_key(&st, "k", Some(24), &ctx(&[]))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // Every change was audited, with no plaintext in the trail.
    let events = h
        .store
        .audit_events(&Default::default(), |_| true)
        .await
        .unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    for want in ["key.create", "key.rotate", "key.update"] {
        assert!(actions.contains(&want), "{want} not audited: {actions:?}");
    }
    let all = format!("{events:?}");
    assert!(
        !all.contains("plain-one-7f3a")
            && !all.contains("plain-two-9c1d")
            && !all.contains("a.csv")
    );
}
