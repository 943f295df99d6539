//! Tenants and environments.

use model::rbac::Role;
use model::types::EnvKind;
use model::Code;
use store::Store;

use crate::{actor, expect_err, name, principal, scope, snapshot, Ctx, START};

crate::engine_tests!(
    tenant_create_get_list_delete,
    tenant_duplicate_is_already_exists,
    tenant_missing_is_not_found,
    tenant_reserved_name_is_unprocessable,
    environment_create_get_list_delete,
    environment_duplicate_is_already_exists,
    environment_missing_is_not_found,
    delete_tenant_holding_environment_is_conflict,
    delete_tenant_holding_account_is_conflict,
    delete_tenant_holding_grant_is_conflict,
    delete_environment_holding_grant_is_conflict,
    reopen_keeps_data_and_migrates_once,
);

async fn tenant_create_get_list_delete(ctx: Ctx) {
    let s = &ctx.store;
    assert!(s.tenants().await.unwrap().is_empty());
    let globex = s
        .create_tenant(&actor("alice"), &name("globex"))
        .await
        .unwrap();
    assert_eq!(globex.name, name("globex"));
    assert_eq!(globex.created_by, "alice");
    assert_eq!(globex.created_at, START);
    ctx.clock.advance(time::Duration::minutes(5));
    let acme = s.create_tenant(&actor("bob"), &name("acme")).await.unwrap();
    assert_eq!(acme.created_at, START + time::Duration::minutes(5));

    // Listed by name, and read back exactly as returned.
    let list = s.tenants().await.unwrap();
    assert_eq!(list, vec![acme.clone(), globex.clone()]);
    assert_eq!(s.tenant(&name("acme")).await.unwrap(), acme);
    assert_eq!(s.tenant(&name("globex")).await.unwrap(), globex);

    s.delete_tenant(&actor("alice"), &name("acme"))
        .await
        .unwrap();
    let msg = expect_err!(s.tenant(&name("acme")).await, NotFound);
    assert!(msg.contains("acme"), "{msg}");
    assert_eq!(s.tenants().await.unwrap(), vec![globex]);

    // The name is free again after the delete.
    s.create_tenant(&actor("alice"), &name("acme"))
        .await
        .unwrap();
    assert_eq!(s.tenants().await.unwrap().len(), 2);
    assert_eq!(s.counts().await.unwrap().tenants, 2);
}

async fn tenant_duplicate_is_already_exists(ctx: Ctx) {
    let s = &ctx.store;
    let first = s
        .create_tenant(&actor("alice"), &name("acme"))
        .await
        .unwrap();
    let events = ctx.event_count().await;
    let before = snapshot(s).await;
    ctx.clock.advance(time::Duration::hours(1));
    let err = s
        .create_tenant(&actor("bob"), &name("acme"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let msg = expect_err!(Err::<(), _>(err), AlreadyExists);
    assert!(msg.contains("acme"), "{msg}");
    // The original is untouched and no event was added.
    assert_eq!(s.tenant(&name("acme")).await.unwrap(), first);
    assert_eq!(snapshot(s).await, before);
    assert_eq!(ctx.event_count().await, events);
    assert!(s.audit_verify().await.unwrap().intact);
}

async fn tenant_missing_is_not_found(ctx: Ctx) {
    let s = &ctx.store;
    s.create_tenant(&actor("alice"), &name("acme"))
        .await
        .unwrap();
    let events = ctx.event_count().await;
    let ghost = name("ghost");
    let e = s.tenant(&ghost).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    expect_err!(s.tenant(&ghost).await, NotFound);
    expect_err!(s.delete_tenant(&actor("alice"), &ghost).await, NotFound);
    expect_err!(s.environments(&ghost).await, NotFound);
    expect_err!(
        s.create_environment(&actor("alice"), &ghost, &name("prod"), EnvKind::Production)
            .await,
        NotFound
    );
    expect_err!(
        s.create_account(&actor("alice"), &principal("ghost/bot"), "")
            .await,
        NotFound
    );
    assert_eq!(ctx.event_count().await, events);
    assert_eq!(s.tenants().await.unwrap().len(), 1);
}

async fn tenant_reserved_name_is_unprocessable(ctx: Ctx) {
    let s = &ctx.store;
    let err = s
        .create_tenant(&actor("alice"), &name("platform"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unprocessable);
    let msg = expect_err!(Err::<(), _>(err), Unprocessable);
    assert!(msg.contains("reserved"), "{msg}");
    assert!(s.tenants().await.unwrap().is_empty());
    assert_eq!(ctx.event_count().await, 0);
    // Names merely containing it are fine.
    s.create_tenant(&actor("alice"), &name("platform-team"))
        .await
        .unwrap();
}

async fn environment_create_get_list_delete(ctx: Ctx) {
    let s = &ctx.store;
    let a = actor("alice");
    s.create_tenant(&a, &name("acme")).await.unwrap();
    s.create_tenant(&a, &name("globex")).await.unwrap();
    assert!(s.environments(&name("acme")).await.unwrap().is_empty());

    let kinds = [
        ("staging", EnvKind::Staging),
        ("production", EnvKind::Production),
        ("cert", EnvKind::Certification),
        ("dev", EnvKind::Development),
    ];
    let mut created = Vec::new();
    for (n, k) in kinds {
        let env = s
            .create_environment(&a, &name("acme"), &name(n), k)
            .await
            .unwrap();
        assert_eq!(
            (env.tenant.as_str(), env.name.as_str(), env.kind),
            ("acme", n, k)
        );
        assert_eq!(env.created_by, "alice");
        assert_eq!(env.created_at, START);
        assert_eq!(env.scope(), scope(&format!("acme/{n}")));
        created.push(env);
    }
    // The same environment name in another tenant is a different environment.
    let g = s
        .create_environment(&a, &name("globex"), &name("staging"), EnvKind::Development)
        .await
        .unwrap();

    let mut expected = created.clone();
    expected.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(s.environments(&name("acme")).await.unwrap(), expected);
    assert_eq!(
        s.environments(&name("globex")).await.unwrap(),
        vec![g.clone()]
    );
    for env in &created {
        assert_eq!(&s.environment(&env.tenant, &env.name).await.unwrap(), env);
    }
    assert_eq!(
        s.environment(&name("globex"), &name("staging"))
            .await
            .unwrap()
            .kind,
        EnvKind::Development
    );
    assert_eq!(s.counts().await.unwrap().environments, 5);

    s.delete_environment(&a, &name("acme"), &name("staging"))
        .await
        .unwrap();
    expect_err!(
        s.environment(&name("acme"), &name("staging")).await,
        NotFound
    );
    // Only acme's staging went.
    assert_eq!(
        s.environment(&name("globex"), &name("staging"))
            .await
            .unwrap(),
        g
    );
    assert_eq!(s.environments(&name("acme")).await.unwrap().len(), 3);

    // A tenant is deletable once its environments are gone.
    for n in ["production", "cert", "dev"] {
        s.delete_environment(&a, &name("acme"), &name(n))
            .await
            .unwrap();
    }
    s.delete_tenant(&a, &name("acme")).await.unwrap();
    assert_eq!(s.tenants().await.unwrap().len(), 1);
}

async fn environment_duplicate_is_already_exists(ctx: Ctx) {
    let s = &ctx.store;
    let a = actor("alice");
    s.create_tenant(&a, &name("acme")).await.unwrap();
    let first = s
        .create_environment(&a, &name("acme"), &name("prod"), EnvKind::Production)
        .await
        .unwrap();
    let events = ctx.event_count().await;
    let before = snapshot(s).await;
    // Even with another kind, the name is taken.
    let msg = expect_err!(
        s.create_environment(&a, &name("acme"), &name("prod"), EnvKind::Staging)
            .await,
        AlreadyExists
    );
    assert!(msg.contains("acme/prod"), "{msg}");
    assert_eq!(
        s.environment(&name("acme"), &name("prod")).await.unwrap(),
        first
    );
    assert_eq!(snapshot(s).await, before);
    assert_eq!(ctx.event_count().await, events);
}

async fn environment_missing_is_not_found(ctx: Ctx) {
    let s = &ctx.store;
    let a = actor("alice");
    s.create_tenant(&a, &name("acme")).await.unwrap();
    let events = ctx.event_count().await;
    expect_err!(s.environment(&name("acme"), &name("prod")).await, NotFound);
    expect_err!(s.environment(&name("ghost"), &name("prod")).await, NotFound);
    let msg = expect_err!(
        s.delete_environment(&a, &name("acme"), &name("prod")).await,
        NotFound
    );
    assert!(msg.contains("acme/prod"), "{msg}");
    expect_err!(
        s.delete_environment(&a, &name("ghost"), &name("prod"))
            .await,
        NotFound
    );
    assert_eq!(ctx.event_count().await, events);
}

/// Asserts that deleting tenant `t` is refused with Conflict mentioning `what`, and that
/// nothing changed.
async fn assert_delete_tenant_refused(ctx: &Ctx, t: &str, what: &str) {
    let s: &Store = &ctx.store;
    let before = snapshot(s).await;
    let events = ctx.event_count().await;
    let err = s
        .delete_tenant(&actor("alice"), &name(t))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Conflict);
    let msg = expect_err!(Err::<(), _>(err), Conflict);
    assert!(msg.contains(what), "{msg:?} should mention {what:?}");
    assert_eq!(
        snapshot(s).await,
        before,
        "a refused delete changed the store"
    );
    assert_eq!(ctx.event_count().await, events);
    s.tenant(&name(t)).await.unwrap();
}

async fn delete_tenant_holding_environment_is_conflict(ctx: Ctx) {
    let s = &ctx.store;
    let a = actor("alice");
    s.create_tenant(&a, &name("acme")).await.unwrap();
    s.create_environment(&a, &name("acme"), &name("prod"), EnvKind::Production)
        .await
        .unwrap();
    assert_delete_tenant_refused(&ctx, "acme", "1 environments").await;
    s.delete_environment(&a, &name("acme"), &name("prod"))
        .await
        .unwrap();
    s.delete_tenant(&a, &name("acme")).await.unwrap();
    expect_err!(s.tenant(&name("acme")).await, NotFound);
}

async fn delete_tenant_holding_account_is_conflict(ctx: Ctx) {
    let s = &ctx.store;
    let a = actor("alice");
    s.bootstrap().await.unwrap().expect("bootstrap");
    s.create_tenant(&a, &name("acme")).await.unwrap();
    s.create_account(&a, &principal("acme/ci-bot"), "ci")
        .await
        .unwrap();
    s.create_token(
        &a,
        &principal("acme/ci-bot"),
        Some(time::Duration::hours(1)),
        "",
    )
    .await
    .unwrap();
    assert_delete_tenant_refused(&ctx, "acme", "1 accounts").await;
    s.delete_account(&a, &principal("acme/ci-bot"))
        .await
        .unwrap();
    s.delete_tenant(&a, &name("acme")).await.unwrap();
    assert!(s.tenants().await.unwrap().is_empty());
}

async fn delete_tenant_holding_grant_is_conflict(ctx: Ctx) {
    let s = &ctx.store;
    let a = actor("alice");
    s.create_tenant(&a, &name("acme")).await.unwrap();
    // A platform account (which does not live in the tenant) holding a role on it.
    s.create_account(&a, &principal("ops"), "").await.unwrap();
    s.grant(&a, Role::Operator, &principal("ops"), &scope("acme"))
        .await
        .unwrap();
    assert_delete_tenant_refused(&ctx, "acme", "1 role grants").await;
    s.revoke(&a, Role::Operator, &principal("ops"), &scope("acme"))
        .await
        .unwrap();
    s.delete_tenant(&a, &name("acme")).await.unwrap();
    // The account itself was never part of the tenant.
    s.account(&principal("ops")).await.unwrap();
}

async fn delete_environment_holding_grant_is_conflict(ctx: Ctx) {
    let s = &ctx.store;
    let a = actor("alice");
    s.create_tenant(&a, &name("acme")).await.unwrap();
    s.create_environment(&a, &name("acme"), &name("staging"), EnvKind::Staging)
        .await
        .unwrap();
    s.create_account(&a, &principal("acme/dev"), "")
        .await
        .unwrap();
    s.grant(
        &a,
        Role::Developer,
        &principal("acme/dev"),
        &scope("acme/staging"),
    )
    .await
    .unwrap();
    let before = snapshot(s).await;
    let events = ctx.event_count().await;
    let err = s
        .delete_environment(&a, &name("acme"), &name("staging"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Conflict);
    let msg = expect_err!(Err::<(), _>(err), Conflict);
    assert!(msg.contains("1 role grants"), "{msg}");
    assert_eq!(snapshot(s).await, before);
    assert_eq!(ctx.event_count().await, events);

    // The tenant itself is also held (by the environment, the account and the grant).
    let msg = expect_err!(s.delete_tenant(&a, &name("acme")).await, Conflict);
    for what in ["1 environments", "1 accounts", "1 role grants"] {
        assert!(msg.contains(what), "{msg:?} should mention {what:?}");
    }

    s.revoke(
        &a,
        Role::Developer,
        &principal("acme/dev"),
        &scope("acme/staging"),
    )
    .await
    .unwrap();
    s.delete_environment(&a, &name("acme"), &name("staging"))
        .await
        .unwrap();
    expect_err!(
        s.environment(&name("acme"), &name("staging")).await,
        NotFound
    );
}

async fn reopen_keeps_data_and_migrates_once(ctx: Ctx) {
    let a = actor("alice");
    ctx.store.create_tenant(&a, &name("acme")).await.unwrap();
    ctx.store
        .create_environment(&a, &name("acme"), &name("prod"), EnvKind::Production)
        .await
        .unwrap();
    let before = snapshot(&ctx.store).await;
    let migrations = ctx
        .db
        .int("SELECT COUNT(*) AS n FROM schema_migrations")
        .await;
    assert!(migrations >= 1);
    // Versions 1..=N, each once.
    assert_eq!(
        ctx.db
            .int("SELECT COUNT(DISTINCT version) AS n FROM schema_migrations WHERE version >= 1")
            .await,
        migrations
    );
    let applied = ctx
        .db
        .text_rows("SELECT applied_at FROM schema_migrations ORDER BY version")
        .await;
    ctx.store.close().await;

    // Later, the store is opened again: nothing is migrated twice.
    ctx.clock.advance(time::Duration::days(1));
    let again = Store::open_with_clock(&ctx.db.url, ctx.clock.clone())
        .await
        .unwrap();
    assert_eq!(snapshot(&again).await, before);
    assert_eq!(
        ctx.db
            .text_rows("SELECT applied_at FROM schema_migrations ORDER BY version")
            .await,
        applied
    );
    let report = again.audit_verify().await.unwrap();
    assert!(report.intact, "{report:?}");
    assert_eq!(report.events, 2);
    // The chain goes on where it stopped.
    again.create_tenant(&a, &name("globex")).await.unwrap();
    let report = again.audit_verify().await.unwrap();
    assert!(report.intact && report.events == 3, "{report:?}");
    again.close().await;
}
