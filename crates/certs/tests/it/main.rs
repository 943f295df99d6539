//! Certificate management against a real store and keyring in a temp dir: uploads are
//! checked (key matches, not expired, names), keys never reach the store in plaintext,
//! the internal CA issues and the renewer renews when the (manual) clock says so, and a
//! DNS name belongs to one tenant.

use std::sync::Arc;

use certs::{Certs, CertsConfig};
use model::certs::{AddCert, CertSource, CertStatus, Challenge, IssueCert, Issuer};
use model::clock::ManualClock;
use model::types::EnvKind;
use model::{Code, Name, Scope};
use secrets::{Keyring, SealSetup};
use store::{Actor, Store};

struct H {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    clock: Arc<ManualClock>,
    certs: Arc<Certs>,
}

fn actor(p: &str) -> Actor {
    Actor {
        principal: p.into(),
        request_id: "test".into(),
        source: "127.0.0.1:1".into(),
    }
}

fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap()
}

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

impl H {
    async fn new() -> H {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("gantry.db").display());
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
        let store = Arc::new(Store::open_with_clock(&url, clock.clone()).await.unwrap());
        let kr = Arc::new(
            Keyring::open(
                store.clone(),
                SealSetup::File {
                    key_path: dir.path().join("seal.key"),
                },
                clock.clone(),
            )
            .await
            .unwrap(),
        );
        for t in ["acme", "globex"] {
            store
                .create_tenant(&actor("admin"), &name(t))
                .await
                .unwrap();
            store
                .create_environment(
                    &actor("admin"),
                    &name(t),
                    &name("prod"),
                    EnvKind::Production,
                )
                .await
                .unwrap();
        }
        let ca = Arc::new(tls::InternalCa::load_or_create(dir.path()).unwrap());
        let certs = Certs::new(store.clone(), kr, ca, clock.clone(), CertsConfig::default());
        H {
            dir,
            store,
            clock,
            certs,
        }
    }
}

/// A self-signed certificate and its key for `names`, valid from `from` for `days`.
fn self_signed(names: &[&str], from: time::OffsetDateTime, days: i64) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    p.not_before = from;
    p.not_after = from + time::Duration::days(days);
    let cert = p.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn add(n: &str, cert: &str, key: &str) -> AddCert {
    AddCert {
        name: name(n),
        cert_pem: cert.into(),
        key_pem: key.into(),
    }
}

#[tokio::test]
async fn uploads_are_checked_and_keys_stored_encrypted() {
    let h = H::new().await;
    let now = time::OffsetDateTime::now_utc();
    let (cert, key) = self_signed(&["api.acme.test", "*.api.acme.test"], now, 90);
    let info = h
        .certs
        .add(&actor("op"), &scope("acme/prod"), &add("api", &cert, &key))
        .await
        .unwrap();
    assert_eq!(info.status, CertStatus::Active);
    assert_eq!(info.source, CertSource::Uploaded);
    assert_eq!(info.domains, vec!["*.api.acme.test", "api.acme.test"]);
    assert_eq!(info.warnings.len(), 1, "a wildcard is warned about");
    assert!(info.renew_at.is_none());
    assert_eq!(info.fingerprint.as_ref().unwrap().len(), 64);
    // The edge gets it decrypted.
    let served = h.certs.served().await.unwrap();
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].name, "acme/prod/api");

    // Bad uploads: clear reasons.
    let (other_cert, other_key) = self_signed(&["x.acme.test"], now, 90);
    let cases = [
        (add("a", &cert, &other_key), "does not match"),
        (add("b", "garbage", &key), "not a PEM certificate"),
        (add("c", &cert, "garbage"), "not a PEM private key"),
        (
            {
                let (c, k) = self_signed(&["old.acme.test"], now - time::Duration::days(100), 10);
                add("d", &c, &k)
            },
            "expired",
        ),
        (
            {
                let (c, k) = self_signed(&["localhost"], now, 10);
                add("e", &c, &k)
            },
            "DNS names",
        ),
    ];
    for (req, want) in cases {
        let e = h
            .certs
            .add(&actor("op"), &scope("acme/prod"), &req)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert!(e.to_string().contains(want), "{e} (want {want})");
        assert!(!e.to_string().contains("PRIVATE KEY"), "{e}");
    }
    let _ = other_cert;
    // Another tenant cannot take the names.
    let e = h
        .certs
        .add(
            &actor("op"),
            &scope("globex/prod"),
            &add("api", &cert, &key),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Conflict);

    // The key never reaches the database in plaintext.
    let body: String = key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    for entry in std::fs::read_dir(h.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.file_name().unwrap() != "ca.key" {
            let bytes = std::fs::read(&path).unwrap();
            let hay = String::from_utf8_lossy(&bytes);
            assert!(
                !hay.contains(&body[..40]),
                "{} holds the key",
                path.display()
            );
            assert!(
                !hay.contains("PRIVATE KEY"),
                "{} holds a PEM key",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn the_internal_ca_issues_and_the_renewer_renews_on_time() {
    let h = H::new().await;
    let req = IssueCert {
        name: name("web"),
        domains: vec!["web.acme.test".into(), "web.acme.test".into()],
        issuer: Issuer::Internal,
        challenge: Challenge::Http01,
    };
    let first = h
        .certs
        .issue(&actor("op"), &scope("acme/prod"), &req)
        .await
        .unwrap();
    assert_eq!(first.status, CertStatus::Active);
    assert_eq!(first.domains, vec!["web.acme.test"]);
    let not_after = first.not_after.unwrap();
    assert_eq!(
        first.renew_at.unwrap(),
        not_after - time::Duration::days(30)
    );
    // Nothing is due yet.
    assert!(h.certs.tick().await.unwrap().issued.is_empty());
    // 61 days later the renewal is due: a new certificate, same name.
    h.clock.advance(time::Duration::days(61));
    let report = h.certs.tick().await.unwrap();
    assert_eq!(report.issued, vec!["acme/prod/web".to_string()]);
    let renewed = h.certs.show(&scope("acme/prod"), "web").await.unwrap();
    assert_ne!(renewed.fingerprint, first.fingerprint);
    assert!(renewed.renew_at.unwrap() > first.renew_at.unwrap());
    let events = h
        .store
        .audit_events(&model::types::AuditFilter::default(), |_| true)
        .await
        .unwrap();
    assert!(events.iter().any(|e| e.action == "certificate.renew"));
    // Manual renewal of an uploaded certificate is refused.
    let (c, k) = self_signed(&["up.acme.test"], time::OffsetDateTime::now_utc(), 90);
    h.certs
        .add(&actor("op"), &scope("acme/prod"), &add("up", &c, &k))
        .await
        .unwrap();
    let e = h
        .certs
        .renew(&actor("op"), &scope("acme/prod"), "up")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn acme_without_configuration_is_refused_and_bad_requests_say_why() {
    let h = H::new().await;
    let mut req = IssueCert {
        name: name("a"),
        domains: vec!["a.acme.test".into()],
        issuer: Issuer::Acme,
        challenge: Challenge::Http01,
    };
    let e = h
        .certs
        .issue(&actor("op"), &scope("acme/prod"), &req)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--acme-directory"), "{e}");
    req.domains = vec!["*.acme.test".into()];
    let e = h
        .certs
        .issue(&actor("op"), &scope("acme/prod"), &req)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("dns-01"), "{e}");
    req.domains = vec![];
    req.issuer = Issuer::Internal;
    let e = h
        .certs
        .issue(&actor("op"), &scope("acme/prod"), &req)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = h.certs.show(&scope("acme/prod"), "nope").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}
