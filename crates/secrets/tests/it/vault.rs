//! Secrets: versions and stages, check-and-set, limits, delete/restore/destroy, requests,
//! tampering in the store, and no plaintext anywhere on disk.

use model::kms::{ContentType, SecretState};
use model::Code;
use secrets::Which;

use crate::harness::{actor, b64, scope, H};

#[tokio::test]
async fn versions_stages_and_check_and_set() {
    let h = H::new().await;
    let a = actor("acme/ci-bot");
    let st = scope("acme/staging");
    let i =
        h.kr.put_secret(
            &a,
            &st,
            "db-password",
            b"first-pw",
            ContentType::Text,
            Some(0),
            Some("the DB"),
        )
        .await
        .unwrap();
    assert_eq!((i.current_version, i.previous_version), (1, None));
    // if_version 0 on an existing secret, or a stale version: 409.
    let e =
        h.kr.put_secret(
            &a,
            &st,
            "db-password",
            b"x",
            ContentType::Text,
            Some(0),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Conflict);
    let i =
        h.kr.put_secret(
            &a,
            &st,
            "db-password",
            b"second-pw",
            ContentType::Text,
            Some(1),
            None,
        )
        .await
        .unwrap();
    assert_eq!((i.current_version, i.previous_version), (2, Some(1)));
    assert_eq!(
        h.kr.put_secret(
            &a,
            &st,
            "db-password",
            b"x",
            ContentType::Text,
            Some(1),
            None
        )
        .await
        .unwrap_err()
        .code(),
        Code::Conflict
    );
    h.kr.put_secret(
        &a,
        &st,
        "db-password",
        b"third-pw",
        ContentType::Text,
        None,
        None,
    )
    .await
    .unwrap();

    let cur =
        h.kr.read_secret(&a, &st, "db-password", Which::Current)
            .await
            .unwrap();
    assert_eq!((cur.version, cur.value.as_deref()), (3, Some("third-pw")));
    let prev =
        h.kr.read_secret(&a, &st, "db-password", Which::Previous)
            .await
            .unwrap();
    assert_eq!(
        (prev.version, prev.value.as_deref()),
        (2, Some("second-pw"))
    );
    let v1 =
        h.kr.read_secret(&a, &st, "db-password", Which::Version(1))
            .await
            .unwrap();
    assert_eq!(v1.value.as_deref(), Some("first-pw"));
    assert_eq!(
        h.kr.read_secret(&a, &st, "db-password", Which::Version(9))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let versions = h.kr.secret_versions(&st, "db-password").await.unwrap();
    let stages: Vec<Option<&str>> = versions.iter().map(|v| v.stage.as_deref()).collect();
    assert_eq!(stages, vec![Some("current"), Some("previous"), None]);
    // Every read is audited with the version, never the value.
    let reads: Vec<_> = h
        .store
        .audit_events(&Default::default(), |_| true)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "secret.read-value")
        .collect();
    assert_eq!(
        reads.len(),
        3,
        "three values were read (the missing version is not)"
    );
    assert_eq!(reads[0].detail, "version=3");
    assert_eq!(reads[0].principal, "acme/ci-bot");
    let all = format!(
        "{:?}",
        h.store
            .audit_events(&Default::default(), |_| true)
            .await
            .unwrap()
    );
    for v in ["first-pw", "second-pw", "third-pw"] {
        assert!(!all.contains(v));
    }
}

#[tokio::test]
async fn value_kinds_and_limits() {
    let h = H::new().await;
    let a = actor("admin");
    let st = scope("acme/staging");
    h.kr.put_secret(
        &a,
        &st,
        "cfg",
        br#"{"user":"u","port":5432}"#,
        ContentType::Json,
        None,
        None,
    )
    .await
    .unwrap();
    let v =
        h.kr.read_secret(&a, &st, "cfg", Which::Current)
            .await
            .unwrap();
    assert_eq!(v.content_type, ContentType::Json);
    let bin = [0u8, 255, 1, 2, 254];
    h.kr.put_secret(&a, &st, "cert", &bin, ContentType::Binary, None, None)
        .await
        .unwrap();
    let v =
        h.kr.read_secret(&a, &st, "cert", Which::Current)
            .await
            .unwrap();
    assert_eq!(v.value_b64.as_deref(), Some(b64(&bin).as_str()));
    assert!(v.value.is_none());
    let e =
        h.kr.put_secret(&a, &st, "bad", b"{not json", ContentType::Json, None, None)
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e =
        h.kr.put_secret(&a, &st, "bad", &[0xff, 0xfe], ContentType::Text, None, None)
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(h
        .kr
        .put_secret(
            &a,
            &st,
            "big",
            &vec![b'a'; 64 * 1024],
            ContentType::Text,
            None,
            None
        )
        .await
        .is_ok());
    let e =
        h.kr.put_secret(
            &a,
            &st,
            "big",
            &vec![b'a'; 64 * 1024 + 1],
            ContentType::Text,
            None,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PayloadTooLarge);
    assert!(e.to_string().contains("65536"));
    let e =
        h.kr.put_secret(
            &a,
            &scope("acme/nope"),
            "x",
            b"v",
            ContentType::Text,
            None,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn delete_restore_destroy() {
    let h = H::new().await;
    let a = actor("admin");
    let st = scope("acme/staging");
    h.kr.put_secret(&a, &st, "tmp", b"v1", ContentType::Text, None, None)
        .await
        .unwrap();
    for bad in [6, 31] {
        assert_eq!(
            h.kr.delete_secret(&a, &st, "tmp", Some(bad))
                .await
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
    }
    let i = h.kr.delete_secret(&a, &st, "tmp", None).await.unwrap();
    assert_eq!(i.state, SecretState::Deleted);
    assert!(i.purge_at.unwrap() > i.deleted_at.unwrap() + time::Duration::days(29));
    assert_eq!(
        h.kr.read_secret(&a, &st, "tmp", Which::Current)
            .await
            .unwrap_err()
            .code(),
        Code::Conflict
    );
    assert_eq!(
        h.kr.put_secret(&a, &st, "tmp", b"v", ContentType::Text, None, None)
            .await
            .unwrap_err()
            .code(),
        Code::Conflict
    );
    assert_eq!(
        h.kr.delete_secret(&a, &st, "tmp", None)
            .await
            .unwrap_err()
            .code(),
        Code::Conflict
    );
    // Destroy inside the window needs force.
    let e =
        h.kr.destroy_secret(&a, &st, "tmp", false)
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::Conflict);
    assert!(e.to_string().contains("force"));
    h.kr.restore_secret(&a, &st, "tmp").await.unwrap();
    assert_eq!(
        h.kr.read_secret(&a, &st, "tmp", Which::Current)
            .await
            .unwrap()
            .value
            .as_deref(),
        Some("v1")
    );
    h.kr.destroy_secret(&a, &st, "tmp", true).await.unwrap();
    assert_eq!(
        h.kr.secret_info(&st, "tmp").await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(
        h.store
            .key("secret/acme/staging/tmp")
            .await
            .unwrap()
            .is_none(),
        "its key is gone too"
    );
    // A new secret of the same name starts over.
    let i =
        h.kr.put_secret(&a, &st, "tmp", b"again", ContentType::Text, None, None)
            .await
            .unwrap();
    assert_eq!(i.current_version, 1);
}

#[tokio::test]
async fn requests_are_fulfilled_by_putting_the_value() {
    let h = H::new().await;
    let st = scope("acme/staging");
    let r =
        h.kr.request_secret(
            &actor("acme/dev"),
            &st,
            "api-token",
            "token of the provider API",
        )
        .await
        .unwrap();
    assert_eq!(h.store.secret_requests(&st).await.unwrap().len(), 1);
    h.kr.put_secret(
        &actor("acme/ops"),
        &st,
        "api-token",
        b"tok-1",
        ContentType::Text,
        None,
        None,
    )
    .await
    .unwrap();
    let r = h.store.secret_request(&r.id).await.unwrap();
    assert_eq!(r.state, model::kms::RequestState::Fulfilled);
    assert_eq!(r.closed_by.as_deref(), Some("acme/ops"));
    // Requests never carry values.
    assert!(!format!("{r:?}").contains("tok-1"));
}

#[tokio::test]
async fn tampered_ciphertexts_fail_clearly() {
    let h = H::new().await;
    let a = actor("admin");
    let st = scope("acme/staging");
    let g = scope("globex/staging");
    h.kr.put_secret(
        &a,
        &st,
        "one",
        b"value-of-one",
        ContentType::Text,
        None,
        None,
    )
    .await
    .unwrap();
    h.kr.put_secret(
        &a,
        &st,
        "one",
        b"value-of-one-v2",
        ContentType::Text,
        None,
        None,
    )
    .await
    .unwrap();
    h.kr.put_secret(
        &a,
        &st,
        "two",
        b"value-of-two",
        ContentType::Text,
        None,
        None,
    )
    .await
    .unwrap();
    h.kr.put_secret(&a, &g, "one", b"globex-one", ContentType::Text, None, None)
        .await
        .unwrap();
    h.kr.put_secret(
        &a,
        &st,
        "fresh",
        b"value-of-fresh",
        ContentType::Text,
        None,
        None,
    )
    .await
    .unwrap();

    // Copy secret one's ciphertext over secret two (same environment): refused.
    h.sql("UPDATE secret_versions SET ciphertext = (SELECT ciphertext FROM secret_versions WHERE name = 'one' AND scope = 'acme/staging' AND version = 1) WHERE name = 'two' AND scope = 'acme/staging'").await;
    let e =
        h.kr.read_secret(&a, &st, "two", Which::Current)
            .await
            .unwrap_err();
    assert!(matches!(e.code(), Code::InvalidCiphertext), "{e}");
    // Copy across tenants: refused.
    h.sql("UPDATE secret_versions SET ciphertext = (SELECT ciphertext FROM secret_versions WHERE name = 'one' AND scope = 'acme/staging' AND version = 1) WHERE name = 'one' AND scope = 'globex/staging'").await;
    assert!(h
        .kr
        .read_secret(&a, &g, "one", Which::Current)
        .await
        .is_err());
    // Swap versions inside one secret (v1 ciphertext as v2): refused.
    h.sql("UPDATE secret_versions SET ciphertext = (SELECT ciphertext FROM secret_versions WHERE name = 'one' AND scope = 'acme/staging' AND version = 1) WHERE name = 'one' AND scope = 'acme/staging' AND version = 2").await;
    assert_eq!(
        h.kr.read_secret(&a, &st, "one", Which::Current)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidCiphertext
    );
    // A flipped bit in the stored ciphertext of v1.
    let ct = h.sql_string("SELECT ciphertext FROM secret_versions WHERE name = 'one' AND scope = 'acme/staging' AND version = 1").await;
    let mut raw = crate::harness::unb64(&ct);
    let last = raw.len() - 3;
    raw[last] ^= 0x10;
    h.sql(&format!("UPDATE secret_versions SET ciphertext = '{}' WHERE name = 'one' AND scope = 'acme/staging' AND version = 1", b64(&raw))).await;
    let e =
        h.kr.read_secret(&a, &st, "one", Which::Version(1))
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidCiphertext);
    assert!(
        !e.to_string().contains("value-of"),
        "errors never carry values"
    );
    // A wrapped key version replaced by another key's: the secret's key no longer opens
    // (checked after a restart, so nothing is served from the keyring's cache).
    h.sql("UPDATE key_versions SET wrapped = (SELECT wrapped FROM key_versions WHERE key_id = 'secret/acme/staging/one' AND version = 1) WHERE key_id = 'secret/acme/staging/fresh'").await;
    let dir = h.dir.path().to_path_buf();
    let h = h.reopen(crate::harness::file_setup(&dir)).await;
    let e =
        h.kr.read_secret(&a, &st, "fresh", Which::Current)
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidCiphertext, "{e}");
}

#[tokio::test]
async fn no_plaintext_anywhere_in_the_data_directory() {
    let h = H::new().await;
    let a = actor("admin");
    let st = scope("acme/staging");
    let secrets = [
        "Tr0ub4dor&3-correct-horse",
        "postgres://app:hunter2-db-pass@db/app",
        "AKIAEXAMPLESECRETKEY99",
    ];
    for (i, s) in secrets.iter().enumerate() {
        h.kr.put_secret(
            &a,
            &st,
            &format!("s{i}"),
            s.as_bytes(),
            ContentType::Text,
            None,
            None,
        )
        .await
        .unwrap();
        h.kr.read_secret(&a, &st, &format!("s{i}"), Which::Current)
            .await
            .unwrap();
    }
    h.kr.create_kms_key(&a, &st, "app", None, "").await.unwrap();
    let kms_pt = "kms-plaintext-card-4111111111111111";
    h.kr.encrypt(&st, "app", kms_pt.as_bytes(), &Default::default())
        .await
        .unwrap();
    // Every file, every form.
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for s in secrets.iter().chain([&kms_pt]) {
        needles.push(s.as_bytes().to_vec());
        needles.push(b64(s.as_bytes()).into_bytes());
        needles.push(hex::encode(s.as_bytes()).into_bytes());
    }
    let mut scanned = 0;
    for entry in std::fs::read_dir(h.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        scanned += data.len();
        for n in &needles {
            assert!(
                !data.windows(n.len()).any(|w| w == n.as_slice()),
                "{} holds a plaintext form {:?}",
                path.display(),
                String::from_utf8_lossy(n)
            );
        }
    }
    assert!(
        scanned > 10_000,
        "the scan must see the database files ({scanned} bytes)"
    );
}

#[tokio::test]
async fn value_reads_name_what_is_missing() {
    let h = H::new().await;
    let a = actor("acme/ci-bot");
    let st = scope("acme/staging");
    h.kr.put_secret(&a, &st, "db", b"v1", ContentType::Text, None, None)
        .await
        .unwrap();
    let missing = |e: secrets::SecretsError| {
        assert_eq!(e.code(), Code::NotFound);
        e.to_string()
    };
    let e =
        h.kr.read_secret(&a, &scope("acme/nowhere"), "db", Which::Current)
            .await
            .unwrap_err();
    assert!(missing(e).contains("environment acme/nowhere"));
    let e =
        h.kr.read_secret(&a, &st, "other", Which::Current)
            .await
            .unwrap_err();
    assert!(missing(e).contains("secret acme/staging/other"));
    let e =
        h.kr.read_secret(&a, &st, "db", Which::Previous)
            .await
            .unwrap_err();
    assert!(missing(e).contains("no previous version"));
    let e =
        h.kr.read_secret(&a, &st, "db", Which::Version(2))
            .await
            .unwrap_err();
    assert!(missing(e).contains("no version 2"));
    h.kr.put_secret(&a, &st, "db", b"v2", ContentType::Text, None, None)
        .await
        .unwrap();
    for (which, want, version) in [
        (Which::Current, "v2", 2),
        (Which::Previous, "v1", 1),
        (Which::Version(1), "v1", 1),
    ] {
        let v = h.kr.read_secret(&a, &st, "db", which).await.unwrap();
        assert_eq!((v.value.as_deref(), v.version), (Some(want), version));
    }
}

#[tokio::test]
async fn concurrent_puts_get_distinct_versions_and_one_event_each() {
    // Three writers per secret: a writer that loses a race retries, and can lose at most
    // twice, within the put's retries.
    let h = H::new().await;
    let st = scope("acme/staging");
    let mut tasks = Vec::new();
    for i in 0..12 {
        let kr = h.kr.clone();
        let st = st.clone();
        tasks.push(tokio::spawn(async move {
            let a = actor("acme/ci-bot");
            let name = format!("shared-{}", i % 4);
            let value = format!("value-{i}");
            let info = kr
                .put_secret(
                    &a,
                    &st,
                    &name,
                    value.as_bytes(),
                    ContentType::Text,
                    None,
                    None,
                )
                .await
                .unwrap();
            (name, info.current_version, value)
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        let (name, v, value) = t.await.unwrap();
        let read =
            h.kr.read_secret(&actor("acme/ci-bot"), &st, &name, Which::Version(v))
                .await
                .unwrap();
        assert_eq!(read.value.as_deref(), Some(value.as_str()));
        versions.push((name, v));
    }
    versions.sort();
    let want: Vec<(String, u32)> = (0..4)
        .flat_map(|s| (1..=3).map(move |v| (format!("shared-{s}"), v)))
        .collect();
    assert_eq!(versions, want);
    let mut got: Vec<(String, String)> = h
        .store
        .audit_events(&Default::default(), |_| true)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "secret.put")
        .map(|e| (e.resource, e.detail))
        .collect();
    got.sort();
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(n, v)| (format!("secrets/acme/staging/{n}"), format!("version={v}")))
        .collect();
    assert_eq!(got, want);
    assert!(h.store.audit_verify().await.unwrap().intact);
}

/// Puts that succeed and puts that are refused (stale check-and-set, deleted secret, missing
/// environment) all at once, with audited reads beside them: they share group commits, so a
/// refused put must change nothing and add no event, while the others commit with theirs.
async fn mixed_concurrent_puts(h: H) {
    let a = actor("acme/ci-bot");
    let st = scope("acme/staging");
    for n in ["cas", "gone", "read"] {
        h.kr.put_secret(&a, &st, n, b"v1", ContentType::Text, Some(0), None)
            .await
            .unwrap();
    }
    h.kr.delete_secret(&a, &st, "gone", None).await.unwrap();
    let before = h.store.audit_verify().await.unwrap().events;
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let kr = h.kr.clone();
        let st = st.clone();
        tasks.push(tokio::spawn(async move {
            let a = actor("acme/ci-bot");
            let r = match i % 5 {
                0 => kr
                    .put_secret(&a, &st, "cas", b"x", ContentType::Text, Some(7), None)
                    .await
                    .map(|_| ()),
                1 => kr
                    .put_secret(&a, &st, "gone", b"x", ContentType::Text, None, None)
                    .await
                    .map(|_| ()),
                2 => kr
                    .put_secret(
                        &a,
                        &scope("acme/nowhere"),
                        "s",
                        b"x",
                        ContentType::Text,
                        Some(0),
                        None,
                    )
                    .await
                    .map(|_| ()),
                3 => kr
                    .read_secret(&a, &st, "read", Which::Current)
                    .await
                    .map(|_| ()),
                _ => kr
                    .put_secret(
                        &a,
                        &st,
                        &format!("new-{i}"),
                        b"fresh",
                        ContentType::Text,
                        Some(0),
                        None,
                    )
                    .await
                    .map(|i| assert_eq!(i.current_version, 1)),
            };
            (i % 5, r.map_err(|e| e.code()))
        }));
    }
    for t in tasks {
        match t.await.unwrap() {
            (0, r) | (1, r) => assert_eq!(r, Err(Code::Conflict)),
            (2, r) => assert_eq!(r, Err(Code::NotFound)),
            (_, r) => r.unwrap(),
        }
    }
    // Refused puts changed nothing.
    assert_eq!(
        h.kr.secret_info(&st, "cas").await.unwrap().current_version,
        1
    );
    let gone = h.kr.secret_info(&st, "gone").await.unwrap();
    assert_eq!(
        (gone.current_version, gone.state),
        (1, SecretState::Deleted)
    );
    assert!(h.kr.secret_info(&scope("acme/nowhere"), "s").await.is_err());
    for i in (4..40).step_by(5) {
        let v =
            h.kr.read_secret(&a, &st, &format!("new-{i}"), Which::Current)
                .await
                .unwrap();
        assert_eq!(v.value.as_deref(), Some("fresh"));
    }
    // One event per successful put and read (8 + 8), none for the refusals, and the 8 reads
    // of the new secrets just made.
    let report = h.store.audit_verify().await.unwrap();
    assert!(report.intact);
    assert_eq!(report.events - before, 24);
}

#[tokio::test]
async fn refused_puts_in_a_group_commit_change_nothing_sqlite() {
    mixed_concurrent_puts(H::new().await).await;
}

#[tokio::test]
async fn refused_puts_in_a_group_commit_change_nothing_postgres() {
    let Some(url) = crate::harness::fresh_pg().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let setup = crate::harness::file_setup(dir.path());
    mixed_concurrent_puts(H::with(dir, url, setup).await).await;
}
