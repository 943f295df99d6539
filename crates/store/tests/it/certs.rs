//! Certificates (one tenant per DNS name, material replaced in place, generations) and
//! service replicas.

use model::certs::{CertSource, CertStatus, Challenge, ReplicaState};
use model::Code;
use store::certs::{CertMaterial, CertRecord, CertUpdate};

use crate::{actor, expect_err, name, scope, Ctx, START};

crate::engine_tests!(
    certificates_round_trip_and_bump_the_generation,
    a_dns_name_belongs_to_one_tenant,
    replicas_register_drain_and_deregister,
    environments_holding_certificates_or_replicas_are_not_deleted,
);

async fn setup(ctx: &Ctx) {
    let s = &ctx.store;
    for t in ["acme", "globex"] {
        s.create_tenant(&actor("admin"), &name(t)).await.unwrap();
        s.create_environment(
            &actor("admin"),
            &name(t),
            &name("prod"),
            model::types::EnvKind::Production,
        )
        .await
        .unwrap();
    }
}

fn record(sc: &str, n: &str, domains: &[&str]) -> CertRecord {
    CertRecord {
        scope: scope(sc),
        name: n.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        source: CertSource::Acme,
        status: CertStatus::Pending,
        status_message: None,
        challenge: Some(Challenge::Dns01),
        material: None,
        renew_at: None,
        created_at: START,
        created_by: "admin".into(),
        updated_at: START,
    }
}

async fn certificates_round_trip_and_bump_the_generation(ctx: Ctx) {
    setup(&ctx).await;
    let s = &ctx.store;
    let g0 = s.generation("certificates").await.unwrap();
    let rec = record("acme/prod", "api", &["api.acme.test", "*.acme.test"]);
    s.create_cert(&actor("admin"), &rec).await.unwrap();
    assert_eq!(s.cert(&scope("acme/prod"), "api").await.unwrap(), rec);
    expect_err!(s.create_cert(&actor("admin"), &rec).await, AlreadyExists);
    let m = CertMaterial {
        chain_pem: "-----BEGIN CERTIFICATE-----".into(),
        key_ciphertext: "Z2sx".into(),
        not_before: START,
        not_after: START + time::Duration::days(90),
        fingerprint: "ab".into(),
    };
    let renew = Some(START + time::Duration::days(60));
    s.update_cert(
        &actor("system"),
        &scope("acme/prod"),
        "api",
        &CertUpdate {
            material: Some(&m),
            status: Some(CertStatus::Active),
            status_message: Some(None),
            renew_at: Some(renew),
        },
        "certificate.issue",
        String::new(),
    )
    .await
    .unwrap();
    let got = s.cert(&scope("acme/prod"), "api").await.unwrap();
    assert_eq!(
        (got.status, got.material.as_ref(), got.renew_at),
        (CertStatus::Active, Some(&m), renew)
    );
    assert_eq!(s.all_certs().await.unwrap().len(), 1);
    assert!(s.generation("certificates").await.unwrap() >= g0 + 2);
    s.delete_cert(&actor("admin"), &scope("acme/prod"), "api")
        .await
        .unwrap();
    expect_err!(s.cert(&scope("acme/prod"), "api").await, NotFound);
    expect_err!(
        s.delete_cert(&actor("admin"), &scope("acme/prod"), "api")
            .await,
        NotFound
    );
    // Its names are free again.
    s.create_cert(
        &actor("admin"),
        &record("globex/prod", "api", &["api.acme.test"]),
    )
    .await
    .unwrap();
}

async fn a_dns_name_belongs_to_one_tenant(ctx: Ctx) {
    setup(&ctx).await;
    let s = &ctx.store;
    s.create_cert(
        &actor("admin"),
        &record("acme/prod", "api", &["api.acme.test"]),
    )
    .await
    .unwrap();
    // Same tenant: fine (a renewal may overlap); another tenant: refused.
    s.create_cert(
        &actor("admin"),
        &record("acme/prod", "api2", &["api.acme.test"]),
    )
    .await
    .unwrap();
    let e = s
        .create_cert(
            &actor("admin"),
            &record("globex/prod", "x", &["api.acme.test"]),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Conflict);
    // A route of another tenant on a certificate's name is refused, and the other way round.
    let spec: model::routes::RouteSpec = serde_json::from_value(serde_json::json!({
        "host": "api.acme.test", "to": {"upstream": ["127.0.0.1:9"]}
    }))
    .unwrap();
    let e = s
        .create_route(&actor("admin"), &scope("globex/prod"), "r", &spec)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Conflict);
    let mut spec2 = spec.clone();
    spec2.host = "shop.globex.test".into();
    s.create_route(&actor("admin"), &scope("globex/prod"), "shop", &spec2)
        .await
        .unwrap();
    let e = s
        .create_cert(
            &actor("admin"),
            &record("acme/prod", "shop", &["shop.globex.test"]),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Conflict);
}

async fn replicas_register_drain_and_deregister(ctx: Ctx) {
    setup(&ctx).await;
    let s = &ctx.store;
    let sc = scope("acme/prod");
    let g0 = s.generation("routes").await.unwrap();
    let r = s
        .register_replica(
            &actor("deployer"),
            &sc,
            "customers",
            "127.0.0.1:9001",
            ReplicaState::Active,
        )
        .await
        .unwrap();
    assert_eq!(
        (r.service.as_str(), r.registered_by.as_str()),
        ("acme/prod/customers", "deployer")
    );
    s.register_replica(
        &actor("deployer"),
        &sc,
        "customers",
        "127.0.0.1:9002",
        ReplicaState::Active,
    )
    .await
    .unwrap();
    expect_err!(
        s.register_replica(
            &actor("deployer"),
            &sc,
            "customers",
            "127.0.0.1:9001",
            ReplicaState::Active
        )
        .await,
        AlreadyExists
    );
    let d = s
        .update_replica(
            &actor("deployer"),
            &sc,
            "customers",
            "127.0.0.1:9001",
            ReplicaState::Draining,
        )
        .await
        .unwrap();
    assert_eq!(d.state, ReplicaState::Draining);
    let all = s.replicas(&sc, "customers").await.unwrap();
    assert_eq!(all.len(), 2);
    s.delete_replica(&actor("deployer"), &sc, "customers", "127.0.0.1:9001")
        .await
        .unwrap();
    expect_err!(
        s.delete_replica(&actor("deployer"), &sc, "customers", "127.0.0.1:9001")
            .await,
        NotFound
    );
    expect_err!(
        s.update_replica(
            &actor("deployer"),
            &sc,
            "customers",
            "127.0.0.1:9001",
            ReplicaState::Active
        )
        .await,
        NotFound
    );
    expect_err!(
        s.register_replica(
            &actor("deployer"),
            &scope("acme/nope"),
            "c",
            "127.0.0.1:1",
            ReplicaState::Active
        )
        .await,
        NotFound
    );
    assert_eq!(s.all_replicas().await.unwrap().len(), 1);
    assert_eq!(s.generation("routes").await.unwrap(), g0 + 4);
}

async fn environments_holding_certificates_or_replicas_are_not_deleted(ctx: Ctx) {
    setup(&ctx).await;
    let s = &ctx.store;
    s.create_cert(
        &actor("admin"),
        &record("acme/prod", "api", &["api.acme.test"]),
    )
    .await
    .unwrap();
    s.register_replica(
        &actor("d"),
        &scope("globex/prod"),
        "svc",
        "127.0.0.1:1",
        ReplicaState::Active,
    )
    .await
    .unwrap();
    let m = expect_err!(
        s.delete_environment(&actor("admin"), &name("acme"), &name("prod"))
            .await,
        Conflict
    );
    assert!(m.contains("certificates"), "{m}");
    let m = expect_err!(
        s.delete_environment(&actor("admin"), &name("globex"), &name("prod"))
            .await,
        Conflict
    );
    assert!(m.contains("replicas"), "{m}");
}
