//! The audit trail: one event per change in the same transaction, the hash chain and its
//! verification against tampering done directly on the engine, listing filters, and
//! concurrent writers.

use std::sync::{Arc, Mutex};

use model::rbac::Role;
use model::types::{AuditEvent, AuditFilter, EnvKind, Outcome, VerifyReport};
use store::audit::NewEvent;
use store::{chain_hash, Actor, Store, GENESIS_HASH};

use crate::{actor, expect_err, name, principal, scope, snapshot, Arg, Ctx, START};

crate::engine_tests!(
    concurrent_records_are_group_committed_in_order,
    every_successful_mutation_adds_exactly_one_event,
    failed_mutations_add_no_event,
    change_and_event_commit_together,
    verify_empty_and_intact_chain,
    tamper_altered_event_is_detected,
    tamper_rehashed_event_breaks_the_next_link,
    tamper_removed_event_is_detected,
    tamper_reordered_events_are_detected,
    tamper_truncated_tail_is_detected,
    tamper_head_row_is_detected,
    tamper_appended_event_is_detected,
    untouched_chain_after_50_mixed_operations_verifies,
    record_adds_an_event_without_a_change,
    audit_events_filters,
    audit_events_visibility_callback,
    audit_events_pages_past_the_page_size,
    concurrent_tenant_creation_keeps_the_chain,
    audit_rows_upgraded_to_the_row_id_keep_the_chain,
);

/// All events, oldest first.
async fn all_events(store: &Store) -> Vec<AuditEvent> {
    store
        .audit_events(&AuditFilter::default(), |_| true)
        .await
        .unwrap()
}

/// Events with seq > `after`.
async fn events_after(store: &Store, after: i64) -> Vec<AuditEvent> {
    let f = AuditFilter {
        after_seq: Some(after),
        ..Default::default()
    };
    store.audit_events(&f, |_| true).await.unwrap()
}

async fn verify(store: &Store) -> VerifyReport {
    store.audit_verify().await.unwrap()
}

fn assert_intact(report: &VerifyReport, events: i64) {
    assert_eq!(
        report,
        &VerifyReport {
            intact: true,
            events,
            first_bad_seq: None,
            problem: None
        }
    );
}

fn assert_broken(report: &VerifyReport, seq: i64, word: &str) {
    assert!(!report.intact, "tampering not detected: {report:?}");
    assert_eq!(report.first_bad_seq, Some(seq), "{report:?}");
    assert_eq!(report.events, seq - 1, "{report:?}");
    let problem = report.problem.as_deref().unwrap_or("");
    assert!(
        problem.contains(word),
        "problem {problem:?} should mention {word:?}"
    );
}

/// Checks the chain as stored: consecutive seqs from 1, links, hashes, the head row.
async fn assert_chain_links(ctx: &Ctx) {
    let events = all_events(&ctx.store).await;
    let mut prev = GENESIS_HASH.to_string();
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev.seq, i as i64 + 1, "seqs must be consecutive from 1");
        assert_eq!(ev.prev_hash, prev, "event {} does not link", ev.seq);
        assert_eq!(chain_hash(ev), ev.hash, "event {} hash", ev.seq);
        assert_eq!(ev.hash.len(), 64);
        prev = ev.hash.clone();
    }
    let head = ctx
        .db
        .text_rows("SELECT hash FROM audit_head WHERE id = 1")
        .await;
    assert_eq!(head[0][0].1.as_deref(), Some(prev.as_str()));
    assert_eq!(
        ctx.db.int("SELECT seq FROM audit_head WHERE id = 1").await,
        events.len() as i64
    );
}

/// Runs one mutation and checks that it added exactly one event, with the given action and
/// scope, recorded with the actor and the clock's time. Returns the result and the event.
macro_rules! one_event {
    ($ctx:expr, $actor:expr, $action:expr, $scope:expr, $op:expr) => {{
        let before = $ctx.event_count().await;
        let out = $op.await.unwrap_or_else(|e| panic!("{}: {e}", $action));
        let new = events_after(&$ctx.store, before).await;
        assert_eq!(
            new.len(),
            1,
            "{} added {} events: {new:?}",
            $action,
            new.len()
        );
        assert_eq!($ctx.event_count().await, before + 1);
        let ev = new[0].clone();
        let actor: &Actor = $actor;
        assert_eq!(ev.seq, before + 1);
        assert_eq!(ev.action, $action);
        assert_eq!(ev.scope, $scope);
        assert_eq!(ev.outcome, Outcome::Success);
        assert_eq!(ev.principal, actor.principal);
        assert_eq!(ev.request_id, actor.request_id);
        assert_eq!(ev.source, actor.source);
        assert_eq!(ev.time, model::clock::Clock::now(&*$ctx.clock));
        (out, ev)
    }};
}

async fn every_successful_mutation_adds_exactly_one_event(ctx: Ctx) {
    let s = &ctx.store;
    let a = &actor("alice");
    let (acme, prod) = (name("acme"), name("prod"));
    let bot = principal("acme/bot");
    let tick = || ctx.clock.advance(time::Duration::seconds(7));

    let (boot, ev) = one_event!(
        ctx,
        &Actor::system(),
        "platform.bootstrap",
        "platform",
        s.bootstrap()
    );
    let boot = boot.expect("bootstrap token");
    assert_eq!(ev.resource, "accounts/admin");
    assert!(ev.detail.contains(&boot.info.id), "{}", ev.detail);
    tick();
    let (_, ev) = one_event!(ctx, a, "tenant.create", "acme", s.create_tenant(a, &acme));
    assert_eq!(ev.resource, "tenants/acme");
    tick();
    let (_, ev) = one_event!(
        ctx,
        a,
        "environment.create",
        "acme/prod",
        s.create_environment(a, &acme, &prod, EnvKind::Production)
    );
    assert_eq!(ev.resource, "tenants/acme/environments/prod");
    assert_eq!(ev.detail, "kind=production");
    tick();
    let (_, ev) = one_event!(
        ctx,
        a,
        "account.create",
        "acme",
        s.create_account(a, &bot, "bot")
    );
    assert_eq!(ev.resource, "accounts/acme/bot");
    tick();
    let (_, ev) = one_event!(
        ctx,
        a,
        "account.create",
        "platform",
        s.create_account(a, &principal("ops"), "")
    );
    assert_eq!(ev.resource, "accounts/ops");
    tick();
    let (tok, ev) = one_event!(
        ctx,
        a,
        "token.create",
        "acme",
        s.create_token(a, &bot, Some(time::Duration::hours(1)), "")
    );
    assert_eq!(ev.resource, format!("tokens/{}", tok.info.id));
    assert!(!ev.detail.contains(&tok.token[4..]));
    tick();
    let (_, ev) = one_event!(
        ctx,
        a,
        "role.grant",
        "acme/prod",
        s.grant(a, Role::Developer, &bot, &scope("acme/prod"))
    );
    assert_eq!(ev.resource, "grants/developer/acme/bot/acme/prod");
    assert_eq!(ev.detail, "role=developer principal=acme/bot");
    tick();
    let (_, ev) = one_event!(
        ctx,
        a,
        "role.grant",
        "platform",
        s.grant(a, Role::Admin, &principal("ops"), &scope("platform"))
    );
    assert_eq!(ev.resource, "grants/admin/ops/platform");
    tick();
    let (_, ev) = one_event!(
        ctx,
        a,
        "token.revoke",
        "acme",
        s.revoke_token(a, &tok.info.id)
    );
    assert_eq!(ev.resource, format!("tokens/{}", tok.info.id));
    tick();
    let (_, ev) = one_event!(
        ctx,
        a,
        "role.revoke",
        "acme/prod",
        s.revoke(a, Role::Developer, &bot, &scope("acme/prod"))
    );
    assert_eq!(ev.resource, "grants/developer/acme/bot/acme/prod");
    tick();
    let (_, ev) = one_event!(
        ctx,
        a,
        "role.revoke",
        "platform",
        s.revoke(a, Role::Admin, &principal("ops"), &scope("platform"))
    );
    assert_eq!(ev.detail, "role=admin principal=ops");
    tick();
    let (_, ev) = one_event!(
        ctx,
        a,
        "environment.delete",
        "acme/prod",
        s.delete_environment(a, &acme, &prod)
    );
    assert_eq!(ev.resource, "tenants/acme/environments/prod");
    tick();
    // Deleting an account with tokens and grants is still one event.
    s.create_token(a, &bot, None, "").await.unwrap();
    s.grant(a, Role::Viewer, &bot, &scope("acme"))
        .await
        .unwrap();
    let (_, ev) = one_event!(ctx, a, "account.delete", "acme", s.delete_account(a, &bot));
    assert_eq!(ev.resource, "accounts/acme/bot");
    tick();
    let (_, ev) = one_event!(ctx, a, "tenant.delete", "acme", s.delete_tenant(a, &acme));
    assert_eq!(ev.resource, "tenants/acme");

    let n = ctx.event_count().await;
    assert_eq!(n, 16);
    assert_intact(&verify(s).await, n);
    assert_chain_links(&ctx).await;
}

async fn failed_mutations_add_no_event(ctx: Ctx) {
    let s = &ctx.store;
    let a = &actor("alice");
    s.bootstrap().await.unwrap();
    s.create_tenant(a, &name("acme")).await.unwrap();
    s.create_environment(a, &name("acme"), &name("prod"), EnvKind::Production)
        .await
        .unwrap();
    let bot = principal("acme/bot");
    s.create_account(a, &bot, "").await.unwrap();
    s.grant(a, Role::Viewer, &bot, &scope("acme/prod"))
        .await
        .unwrap();
    let tok = s.create_token(a, &bot, None, "").await.unwrap();
    s.revoke_token(a, &tok.info.id).await.unwrap();
    let before = snapshot(s).await;
    let events = ctx.event_count().await;
    assert_eq!(events, 7);

    expect_err!(s.create_tenant(a, &name("acme")).await, AlreadyExists);
    expect_err!(s.create_tenant(a, &name("platform")).await, Unprocessable);
    expect_err!(s.delete_tenant(a, &name("ghost")).await, NotFound);
    expect_err!(s.delete_tenant(a, &name("acme")).await, Conflict);
    expect_err!(
        s.create_environment(a, &name("acme"), &name("prod"), EnvKind::Staging)
            .await,
        AlreadyExists
    );
    expect_err!(
        s.delete_environment(a, &name("acme"), &name("prod")).await,
        Conflict
    );
    expect_err!(
        s.delete_environment(a, &name("acme"), &name("ghost")).await,
        NotFound
    );
    expect_err!(s.create_account(a, &bot, "").await, AlreadyExists);
    expect_err!(s.delete_account(a, &principal("ghost")).await, NotFound);
    expect_err!(s.delete_account(a, &principal("admin")).await, Conflict);
    expect_err!(
        s.create_token(a, &principal("ghost"), None, "").await,
        NotFound
    );
    expect_err!(s.revoke_token(a, &tok.info.id).await, Conflict);
    expect_err!(s.revoke_token(a, "tok_ghost").await, NotFound);
    expect_err!(
        s.grant(a, Role::Viewer, &bot, &scope("acme/prod")).await,
        AlreadyExists
    );
    expect_err!(
        s.grant(a, Role::Viewer, &bot, &scope("platform")).await,
        Unprocessable
    );
    expect_err!(
        s.revoke(a, Role::Admin, &principal("admin"), &scope("platform"))
            .await,
        Conflict
    );
    expect_err!(
        s.revoke(a, Role::Operator, &bot, &scope("acme")).await,
        NotFound
    );
    assert_eq!(s.bootstrap().await.unwrap(), None);

    assert_eq!(ctx.event_count().await, events);
    assert_eq!(snapshot(s).await, before);
    assert_intact(&verify(s).await, events);
    assert_chain_links(&ctx).await;
}

/// Inserts a bare event row at `seq` (its content does not matter).
async fn insert_raw_event(ctx: &Ctx, seq: i64, scope: &str) {
    ctx.db
        .exec_args(
            "INSERT INTO audit_events (seq, time, principal, action, resource, scope, outcome, \
             request_id, source, detail, prev_hash, hash) \
             VALUES ($1, '2026-01-01T00:00:00.000Z', 'raw', 'raw.insert', 'raw', $2, 'success', \
             '', '', '', '', '')",
            &[Arg::Int(seq), Arg::Text(scope)],
        )
        .await;
}

async fn change_and_event_commit_together(ctx: Ctx) {
    let s = &ctx.store;
    let a = &actor("alice");
    s.create_tenant(a, &name("acme")).await.unwrap();
    // Occupy the seq the next event will take, so that appending it fails: the change of
    // the same transaction must then not happen either.
    insert_raw_event(&ctx, 2, "x").await;
    let before = snapshot(s).await;

    // (Which error the failed append surfaces as is not the point here; that it fails and
    // takes the change with it is.)
    assert!(s.create_tenant(a, &name("globex")).await.is_err());
    expect_err!(s.tenant(&name("globex")).await, NotFound);
    assert!(s.delete_tenant(a, &name("acme")).await.is_err());
    s.tenant(&name("acme")).await.unwrap();
    assert!(s.create_account(a, &principal("ops"), "").await.is_err());
    expect_err!(s.account(&principal("ops")).await, NotFound);
    assert!(s.bootstrap().await.is_err());
    expect_err!(s.account(&principal("admin")).await, NotFound);
    assert_eq!(snapshot(s).await, before);
    assert_eq!(
        ctx.db.int("SELECT seq FROM audit_head WHERE id = 1").await,
        1
    );

    // Once the obstacle is gone, the same changes go through, each with its event.
    assert_eq!(
        ctx.db.exec("DELETE FROM audit_events WHERE seq = 2").await,
        1
    );
    s.create_tenant(a, &name("globex")).await.unwrap();
    s.delete_tenant(a, &name("acme")).await.unwrap();
    assert_intact(&verify(s).await, 3);
    assert_chain_links(&ctx).await;
}

async fn verify_empty_and_intact_chain(ctx: Ctx) {
    let s = &ctx.store;
    assert_intact(&verify(s).await, 0);
    assert!(all_events(s).await.is_empty());
    let a = &actor("alice");
    for i in 0..5 {
        s.create_tenant(a, &name(&format!("t{i}"))).await.unwrap();
        ctx.clock.advance(time::Duration::milliseconds(1500));
    }
    assert_intact(&verify(s).await, 5);
    assert_chain_links(&ctx).await;
    let evs = all_events(s).await;
    assert_eq!(evs[0].prev_hash, GENESIS_HASH);
    assert_eq!(evs[4].time, START + time::Duration::milliseconds(6000));
    assert_eq!(s.counts().await.unwrap().audit_events, 5);
}

/// Builds a chain of `n` events (n tenants), one second apart.
async fn chain_of(ctx: &Ctx, n: usize) {
    for i in 0..n {
        ctx.store
            .create_tenant(&actor(&format!("user{i}")), &name(&format!("t{i}")))
            .await
            .unwrap();
        ctx.clock.advance(time::Duration::seconds(1));
    }
    assert_intact(&verify(&ctx.store).await, n as i64);
}

async fn tamper_altered_event_is_detected(ctx: Ctx) {
    chain_of(&ctx, 10).await;
    let n = ctx
        .db
        .exec("UPDATE audit_events SET principal = 'mallory' WHERE seq = 4")
        .await;
    assert_eq!(n, 1);
    let report = verify(&ctx.store).await;
    assert_broken(&report, 4, "altered");
    // Same for another field and another event: the first bad one is reported.
    ctx.db
        .exec("UPDATE audit_events SET detail = 'x' WHERE seq = 2")
        .await;
    assert_broken(&verify(&ctx.store).await, 2, "altered");
}

async fn tamper_rehashed_event_breaks_the_next_link(ctx: Ctx) {
    chain_of(&ctx, 10).await;
    // An attacker who edits event 6 and recomputes its hash (and even the head's, were it
    // the last) still breaks the link from event 7.
    let mut ev = all_events(&ctx.store).await[5].clone();
    assert_eq!(ev.seq, 6);
    ev.principal = "mallory".into();
    let forged = chain_hash(&ev);
    ctx.db
        .exec_args(
            "UPDATE audit_events SET principal = 'mallory', hash = $1 WHERE seq = 6",
            &[Arg::Text(&forged)],
        )
        .await;
    let report = verify(&ctx.store).await;
    assert_broken(&report, 7, "reordered or removed");
}

async fn tamper_removed_event_is_detected(ctx: Ctx) {
    chain_of(&ctx, 10).await;
    assert_eq!(
        ctx.db.exec("DELETE FROM audit_events WHERE seq = 5").await,
        1
    );
    assert_broken(&verify(&ctx.store).await, 5, "removed");
    // The first event too.
    assert_eq!(
        ctx.db.exec("DELETE FROM audit_events WHERE seq = 1").await,
        1
    );
    assert_broken(&verify(&ctx.store).await, 1, "removed");
}

async fn tamper_reordered_events_are_detected(ctx: Ctx) {
    chain_of(&ctx, 10).await;
    for sql in [
        "UPDATE audit_events SET seq = -1 WHERE seq = 6",
        "UPDATE audit_events SET seq = 6 WHERE seq = 7",
        "UPDATE audit_events SET seq = 7 WHERE seq = -1",
    ] {
        assert_eq!(ctx.db.exec(sql).await, 1, "{sql}");
    }
    let evs = all_events(&ctx.store).await;
    assert_eq!(evs.len(), 10);
    assert_eq!(evs[5].principal, "user6", "the swap happened");
    let report = verify(&ctx.store).await;
    assert!(!report.intact, "reordering not detected: {report:?}");
    assert_eq!(report.first_bad_seq, Some(6), "{report:?}");
    assert_eq!(report.events, 5, "{report:?}");
    assert!(report.problem.is_some(), "{report:?}");
}

async fn tamper_truncated_tail_is_detected(ctx: Ctx) {
    chain_of(&ctx, 10).await;
    assert_eq!(
        ctx.db.exec("DELETE FROM audit_events WHERE seq = 10").await,
        1
    );
    let report = verify(&ctx.store).await;
    assert_broken(&report, 10, "removed");
    assert!(
        report.problem.as_deref().unwrap().contains("10"),
        "{report:?}"
    );
    // Several events at the tail: the first missing one is reported.
    assert_eq!(
        ctx.db.exec("DELETE FROM audit_events WHERE seq >= 8").await,
        2
    );
    assert_broken(&verify(&ctx.store).await, 8, "removed");
    // All of them.
    ctx.db.exec("DELETE FROM audit_events").await;
    assert_broken(&verify(&ctx.store).await, 1, "removed");
}

async fn tamper_head_row_is_detected(ctx: Ctx) {
    chain_of(&ctx, 3).await;
    ctx.db
        .exec_args(
            "UPDATE audit_head SET hash = $1 WHERE id = 1",
            &[Arg::Text(&"f".repeat(64))],
        )
        .await;
    let report = verify(&ctx.store).await;
    assert!(!report.intact, "{report:?}");
    assert!(
        report.problem.as_deref().unwrap_or("").contains("altered"),
        "{report:?}"
    );
}

/// Bootstraps, then runs `n` successful mutations of every kind (and, between them, refused
/// ones that must add nothing), the clock moving one second each. Returns the number of
/// events they must have added (n + 1).
async fn mixed_operations(ctx: &Ctx, n: usize) -> i64 {
    let s = &ctx.store;
    let a = &actor("alice");
    let mut token_id = String::new();
    s.bootstrap().await.unwrap().expect("bootstrap");
    for k in 0..n {
        let g = k / 10;
        let t = name(&format!("t{g}"));
        let bot = principal(&format!("t{g}/bot"));
        let env = name("prod");
        let env_scope = scope(&format!("t{g}/prod"));
        match k % 10 {
            0 => drop(s.create_tenant(a, &t).await.unwrap()),
            1 => drop(
                s.create_environment(a, &t, &env, EnvKind::Production)
                    .await
                    .unwrap(),
            ),
            2 => drop(s.create_account(a, &bot, "").await.unwrap()),
            3 => drop(s.grant(a, Role::Developer, &bot, &env_scope).await.unwrap()),
            4 => {
                token_id = s
                    .create_token(a, &bot, Some(time::Duration::hours(1)), "")
                    .await
                    .unwrap()
                    .info
                    .id
            }
            5 => drop(s.revoke_token(a, &token_id).await.unwrap()),
            6 => s
                .revoke(a, Role::Developer, &bot, &env_scope)
                .await
                .unwrap(),
            7 => s.delete_environment(a, &t, &env).await.unwrap(),
            8 => s.delete_account(a, &bot).await.unwrap(),
            _ => s
                .record(
                    a,
                    NewEvent {
                        outcome: Outcome::Denied,
                        ..NewEvent::success("tenant.delete", format!("tenants/{t}"), t_scope(&t))
                    },
                )
                .await
                .unwrap(),
        }
        // A refused change in between.
        assert!(s.create_tenant(a, &t).await.is_err());
        ctx.clock.advance(time::Duration::seconds(1));
    }
    n as i64 + 1
}

fn t_scope(t: &model::Name) -> model::Scope {
    model::Scope::Tenant(t.clone())
}

async fn untouched_chain_after_50_mixed_operations_verifies(ctx: Ctx) {
    let n = mixed_operations(&ctx, 50).await;
    assert_eq!(n, 51);
    assert_eq!(ctx.event_count().await, n);
    assert_intact(&verify(&ctx.store).await, n);
    assert_chain_links(&ctx).await;
    let evs = all_events(&ctx.store).await;
    assert_eq!(
        evs.last().unwrap().time,
        START + time::Duration::seconds(49)
    );
    assert_eq!(
        evs.iter().filter(|e| e.outcome == Outcome::Denied).count(),
        5
    );
    // Reopening the store changes nothing.
    let url = ctx.db.url.clone();
    let again = Store::open(&url).await.unwrap();
    assert_intact(&again.audit_verify().await.unwrap(), n);
    again.close().await;
}

async fn record_adds_an_event_without_a_change(ctx: Ctx) {
    let s = &ctx.store;
    s.create_tenant(&actor("alice"), &name("acme"))
        .await
        .unwrap();
    let before = snapshot(s).await;
    let anon = Actor {
        principal: "anonymous".into(),
        request_id: "r-1".into(),
        source: "10.0.0.1:5555".into(),
    };
    let mut ev = NewEvent::success("tenant.delete", "tenants/acme".into(), scope("acme"));
    ev.outcome = Outcome::Unauthenticated;
    ev.detail = "code=unauthenticated".into();
    ctx.clock.advance(time::Duration::seconds(3));
    s.record(&anon, ev).await.unwrap();
    let mut after = snapshot(s).await;
    assert_eq!(after.counts.audit_events, 2);
    after.counts.audit_events = 1;
    assert_eq!(after, before, "record changed something besides the trail");

    let evs = all_events(s).await;
    let got = &evs[1];
    assert_eq!(
        (
            got.seq,
            got.principal.as_str(),
            got.action.as_str(),
            got.resource.as_str(),
            got.scope.as_str(),
            got.outcome,
            got.request_id.as_str(),
            got.source.as_str(),
            got.detail.as_str(),
        ),
        (
            2,
            "anonymous",
            "tenant.delete",
            "tenants/acme",
            "acme",
            Outcome::Unauthenticated,
            "r-1",
            "10.0.0.1:5555",
            "code=unauthenticated",
        )
    );
    assert_eq!(got.time, START + time::Duration::seconds(3));
    assert_eq!(got.prev_hash, evs[0].hash);
    assert_intact(&verify(s).await, 2);
}

/// A fixed history for the filter tests. Returns all its events.
async fn filter_history(ctx: &Ctx) -> Vec<AuditEvent> {
    let s = &ctx.store;
    let (alice, bob, carol) = (&actor("alice"), &actor("bob"), &actor("carol"));
    let hour = time::Duration::hours(1);
    s.create_tenant(alice, &name("acme")).await.unwrap(); // 1 acme
    s.create_tenant(alice, &name("acme-2")).await.unwrap(); // 2 acme-2
    s.create_tenant(bob, &name("globex")).await.unwrap(); // 3 globex
    s.create_environment(bob, &name("acme"), &name("prod"), EnvKind::Production)
        .await
        .unwrap(); // 4 acme/prod
    s.create_environment(bob, &name("acme-2"), &name("prod"), EnvKind::Production)
        .await
        .unwrap(); // 5 acme-2/prod
    ctx.clock.advance(hour);
    s.create_account(alice, &principal("acme/bot"), "")
        .await
        .unwrap(); // 6 acme
    s.create_account(carol, &principal("ops"), "")
        .await
        .unwrap(); // 7 platform
    s.grant(carol, Role::Viewer, &principal("ops"), &scope("acme/prod"))
        .await
        .unwrap(); // 8 acme/prod
    ctx.clock.advance(hour);
    s.create_environment(carol, &name("globex"), &name("dev"), EnvKind::Development)
        .await
        .unwrap(); // 9 globex/dev
    s.delete_environment(bob, &name("globex"), &name("dev"))
        .await
        .unwrap(); // 10 globex/dev
    s.delete_tenant(alice, &name("globex")).await.unwrap(); // 11 globex
    let evs = all_events(s).await;
    assert_eq!(evs.len(), 11);
    evs
}

fn seqs(evs: &[AuditEvent]) -> Vec<i64> {
    evs.iter().map(|e| e.seq).collect()
}

async fn audit_events_filters(ctx: Ctx) {
    let s = &ctx.store;
    let all = filter_history(&ctx).await;
    assert_eq!(seqs(&all), (1..=11).collect::<Vec<_>>());
    let run = |f: AuditFilter| async move { seqs(&s.audit_events(&f, |_| true).await.unwrap()) };
    let tenant = |t: &str| AuditFilter {
        tenant: Some(name(t)),
        ..Default::default()
    };

    // Tenant: the tenant's own scope and its environments, not a tenant whose name merely
    // starts the same.
    assert_eq!(run(tenant("acme")).await, vec![1, 4, 6, 8]);
    assert_eq!(run(tenant("acme-2")).await, vec![2, 5]);
    assert_eq!(run(tenant("globex")).await, vec![3, 9, 10, 11]);
    assert_eq!(run(tenant("initech")).await, Vec::<i64>::new());

    let by = |p: &str| AuditFilter {
        principal: Some(p.into()),
        ..Default::default()
    };
    assert_eq!(run(by("alice")).await, vec![1, 2, 6, 11]);
    assert_eq!(run(by("bob")).await, vec![3, 4, 5, 10]);
    assert_eq!(run(by("carol")).await, vec![7, 8, 9]);
    assert_eq!(
        run(by("ali")).await,
        Vec::<i64>::new(),
        "principal is exact"
    );

    let act = |a: &str| AuditFilter {
        action: Some(a.into()),
        ..Default::default()
    };
    assert_eq!(run(act("tenant.create")).await, vec![1, 2, 3]);
    assert_eq!(run(act("tenant.*")).await, vec![1, 2, 3, 11]);
    assert_eq!(run(act("environment.*")).await, vec![4, 5, 9, 10]);
    assert_eq!(run(act("environment.delete")).await, vec![10]);
    assert_eq!(run(act("role.*")).await, vec![8]);
    assert_eq!(
        run(act("tenant")).await,
        Vec::<i64>::new(),
        "action is exact"
    );
    assert_eq!(run(act("tenant.")).await, Vec::<i64>::new());
    assert_eq!(run(act("tenant.%")).await, Vec::<i64>::new());
    assert_eq!(
        run(act("ten.*")).await,
        Vec::<i64>::new(),
        "prefix is a whole part"
    );

    let since = |h: i64| AuditFilter {
        since: Some(START + time::Duration::hours(h)),
        ..Default::default()
    };
    assert_eq!(run(since(0)).await, (1..=11).collect::<Vec<_>>());
    assert_eq!(
        run(since(1)).await,
        (6..=11).collect::<Vec<_>>(),
        "since is inclusive"
    );
    assert_eq!(run(since(2)).await, vec![9, 10, 11]);
    assert_eq!(run(since(3)).await, Vec::<i64>::new());
    let just_after = AuditFilter {
        since: Some(START + time::Duration::hours(1) + time::Duration::milliseconds(1)),
        ..Default::default()
    };
    assert_eq!(run(just_after).await, vec![9, 10, 11]);

    let after = |n: i64| AuditFilter {
        after_seq: Some(n),
        ..Default::default()
    };
    assert_eq!(run(after(0)).await, (1..=11).collect::<Vec<_>>());
    assert_eq!(run(after(8)).await, vec![9, 10, 11]);
    assert_eq!(run(after(11)).await, Vec::<i64>::new());

    let limit = |n: i64| AuditFilter {
        limit: Some(n),
        ..Default::default()
    };
    assert_eq!(run(limit(3)).await, vec![1, 2, 3]);
    assert_eq!(run(limit(1)).await, vec![1]);
    assert_eq!(run(limit(0)).await, vec![1], "limit is at least 1");
    assert_eq!(run(limit(-5)).await, vec![1]);
    assert_eq!(run(limit(100_000)).await.len(), 11);

    // Filters combine, and paging with after_seq + limit walks a filtered list.
    let combined = AuditFilter {
        tenant: Some(name("acme")),
        action: Some("environment.*".into()),
        principal: Some("bob".into()),
        ..Default::default()
    };
    assert_eq!(run(combined).await, vec![4]);
    let page = |after: i64| AuditFilter {
        tenant: Some(name("acme")),
        after_seq: Some(after),
        limit: Some(2),
        ..Default::default()
    };
    assert_eq!(run(page(0)).await, vec![1, 4]);
    assert_eq!(run(page(4)).await, vec![6, 8]);
    assert_eq!(run(page(8)).await, Vec::<i64>::new());
    let combo = AuditFilter {
        tenant: Some(name("globex")),
        since: Some(START + time::Duration::hours(2)),
        principal: Some("bob".into()),
        ..Default::default()
    };
    assert_eq!(run(combo).await, vec![10]);

    // Returned events are complete and verify.
    let evs = s.audit_events(&tenant("acme"), |_| true).await.unwrap();
    for e in &evs {
        assert_eq!(e, &all[(e.seq - 1) as usize]);
        assert_eq!(chain_hash(e), e.hash);
    }
}

async fn audit_events_visibility_callback(ctx: Ctx) {
    let s = &ctx.store;
    filter_history(&ctx).await;
    let seen = Mutex::new(Vec::<String>::new());
    let acme_only = |sc: &str| {
        seen.lock().unwrap().push(sc.to_string());
        sc == "acme" || sc.starts_with("acme/")
    };
    let evs = s
        .audit_events(&AuditFilter::default(), acme_only)
        .await
        .unwrap();
    assert_eq!(seqs(&evs), vec![1, 4, 6, 8]);
    // Asked once per event, with its scope.
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![
            "acme",
            "acme-2",
            "globex",
            "acme/prod",
            "acme-2/prod",
            "acme",
            "platform",
            "acme/prod",
            "globex/dev",
            "globex/dev",
            "globex"
        ]
    );
    // The limit counts visible events only.
    let f = AuditFilter {
        limit: Some(3),
        ..Default::default()
    };
    let evs = s
        .audit_events(&f, |sc| sc == "acme" || sc.starts_with("acme/"))
        .await
        .unwrap();
    assert_eq!(seqs(&evs), vec![1, 4, 6]);
    // Visibility combines with the filters.
    let f = AuditFilter {
        principal: Some("carol".into()),
        ..Default::default()
    };
    let evs = s.audit_events(&f, |sc| sc != "platform").await.unwrap();
    assert_eq!(seqs(&evs), vec![8, 9]);
    // Nothing visible: nothing returned.
    assert!(s
        .audit_events(&AuditFilter::default(), |_| false)
        .await
        .unwrap()
        .is_empty());
}

async fn audit_events_pages_past_the_page_size(ctx: Ctx) {
    let s = &ctx.store;
    // 1100 event rows (written raw: listing does not check the chain), the last 50 in
    // tenant globex.
    let total = 1100i64;
    let page = store::audit::MAX_AUDIT_PAGE;
    assert_eq!(page, 1000);
    for chunk in (1..=total).collect::<Vec<_>>().chunks(100) {
        let values: Vec<String> = chunk
            .iter()
            .map(|seq| {
                let sc = if *seq > total - 50 { "globex" } else { "acme" };
                format!(
                    "({seq}, '2026-01-01T00:00:00.000Z', 'raw', 'raw.insert', 'r', '{sc}', \
                     'success', '', '', '', '', '')"
                )
            })
            .collect();
        ctx.db
            .exec(&format!(
                "INSERT INTO audit_events (seq, time, principal, action, resource, scope, \
                 outcome, request_id, source, detail, prev_hash, hash) VALUES {}",
                values.join(", ")
            ))
            .await;
    }
    assert_eq!(ctx.event_count().await, total);

    let globex = |sc: &str| sc == "globex";
    let f = AuditFilter {
        limit: Some(20),
        ..Default::default()
    };
    let evs = s.audit_events(&f, globex).await.unwrap();
    assert_eq!(seqs(&evs), (1051..=1070).collect::<Vec<_>>());
    let evs = s
        .audit_events(&AuditFilter::default(), globex)
        .await
        .unwrap();
    assert_eq!(seqs(&evs), (1051..=1100).collect::<Vec<_>>());
    // Without a limit, one page at most.
    let evs = all_events(s).await;
    assert_eq!(seqs(&evs), (1..=page).collect::<Vec<_>>());
    let evs = events_after(s, page).await;
    assert_eq!(seqs(&evs), (page + 1..=total).collect::<Vec<_>>());
    // The tenant filter in SQL and visibility after it.
    let f = AuditFilter {
        tenant: Some(name("acme")),
        ..Default::default()
    };
    let evs = s.audit_events(&f, |sc| sc == "acme").await.unwrap();
    assert_eq!(evs.len() as i64, page);
    let f = AuditFilter {
        tenant: Some(name("acme")),
        after_seq: Some(1000),
        ..Default::default()
    };
    let evs = s.audit_events(&f, |_| true).await.unwrap();
    assert_eq!(seqs(&evs), (1001..=1050).collect::<Vec<_>>());
}

async fn concurrent_tenant_creation_keeps_the_chain(ctx: Ctx) {
    let Ctx { store, clock, db } = ctx;
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let a = actor(&format!("worker{i}"));
            let t = name(&format!("tenant-{i}"));
            store.create_tenant(&a, &t).await?;
            store
                .create_environment(&a, &t, &name("prod"), EnvKind::Production)
                .await?;
            store
                .create_account(&a, &principal(&format!("tenant-{i}/bot")), "")
                .await?;
            Ok::<_, store::StoreError>(())
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        t.await
            .expect("task panicked")
            .unwrap_or_else(|e| panic!("worker {i}: {e}"));
    }
    let tenants = store.tenants().await.unwrap();
    assert_eq!(
        tenants
            .iter()
            .map(|t| t.name.to_string())
            .collect::<Vec<_>>(),
        (0..8).map(|i| format!("tenant-{i}")).collect::<Vec<_>>()
    );
    for i in 0..8 {
        let t = name(&format!("tenant-{i}"));
        store.environment(&t, &name("prod")).await.unwrap();
        assert_eq!(store.accounts(Some(&t)).await.unwrap().len(), 1);
    }
    assert_intact(&store.audit_verify().await.unwrap(), 24);
    let evs = all_events(&store).await;
    for i in 0..8 {
        let who = format!("worker{i}");
        let mine: Vec<&str> = evs
            .iter()
            .filter(|e| e.principal == who)
            .map(|e| e.action.as_str())
            .collect();
        assert_eq!(
            mine,
            vec!["tenant.create", "environment.create", "account.create"]
        );
    }
    let ctx = Ctx {
        store: Arc::try_unwrap(store).ok().expect("tasks are done"),
        clock,
        db,
    };
    assert_chain_links(&ctx).await;
}

async fn tamper_appended_event_is_detected(ctx: Ctx) {
    chain_of(&ctx, 3).await;
    // A forged event, correctly linked and hashed, appended without touching the head.
    let last = all_events(&ctx.store).await.pop().unwrap();
    let mut forged = last.clone();
    forged.seq = 4;
    forged.principal = "mallory".into();
    forged.prev_hash = last.hash.clone();
    forged.hash = chain_hash(&forged);
    ctx.db
        .exec_args(
            "INSERT INTO audit_events (seq, time, principal, action, resource, scope, outcome, \
             request_id, source, detail, prev_hash, hash) \
             VALUES (4, $1, $2, $3, $4, $5, 'success', $6, $7, $8, $9, $10)",
            &[
                Arg::Text(&model::types::format_time(forged.time)),
                Arg::Text(&forged.principal),
                Arg::Text(&forged.action),
                Arg::Text(&forged.resource),
                Arg::Text(&forged.scope),
                Arg::Text(&forged.request_id),
                Arg::Text(&forged.source),
                Arg::Text(&forged.detail),
                Arg::Text(&forged.prev_hash),
                Arg::Text(&forged.hash),
            ],
        )
        .await;
    let evs = all_events(&ctx.store).await;
    assert_eq!(evs.len(), 4);
    assert_eq!(
        chain_hash(&evs[3]),
        evs[3].hash,
        "the forgery is self-consistent"
    );
    let report = verify(&ctx.store).await;
    assert!(!report.intact, "{report:?}");
    assert_eq!(report.first_bad_seq, Some(4), "{report:?}");
    assert!(
        report.problem.as_deref().unwrap_or("").contains("altered"),
        "{report:?}"
    );
}

/// Tests that only make sense on PostgreSQL: several control planes sharing one database
/// (the store promises that only there; on SQLite a second `Store` on the same file gets
/// "database is locked" errors).
mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_stores_share_one_chain() {
        crate::run_postgres(super::two_stores_share_one_chain).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_stores_racing_duplicate_is_already_exists() {
        crate::run_postgres(super::two_stores_racing_duplicate_is_already_exists).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_stores_leave_no_grant_on_a_deleted_tenant() {
        crate::run_postgres(super::two_stores_leave_no_grant_on_a_deleted_tenant).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_stores_keep_a_platform_admin() {
        crate::run_postgres(super::two_stores_keep_a_platform_admin).await;
    }
}

/// The same filter must mean the same on both engines.
mod engine_consistency {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_action_prefix_is_case_sensitive() {
        crate::run_sqlite(super::action_prefix_is_case_sensitive).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_action_prefix_is_case_sensitive() {
        crate::run_postgres(super::action_prefix_is_case_sensitive).await;
    }
}

/// Exact action filters are case-sensitive on both engines (`=`), so the prefix form must
/// be too: SQLite's LIKE ignores ASCII case, PostgreSQL's does not.
async fn action_prefix_is_case_sensitive(ctx: Ctx) {
    let s = &ctx.store;
    s.create_tenant(&actor("alice"), &name("acme"))
        .await
        .unwrap();
    let run = |a: &str| {
        let f = AuditFilter {
            action: Some(a.into()),
            ..Default::default()
        };
        async move { s.audit_events(&f, |_| true).await.unwrap().len() }
    };
    assert_eq!(run("tenant.create").await, 1);
    assert_eq!(run("tenant.*").await, 1);
    assert_eq!(run("TENANT.CREATE").await, 0);
    assert_eq!(run("TENANT.*").await, 0, "prefix filter ignored case");
}

/// Waits (for a condition, bounded at about 10 s, not for a time) until `n` sessions on
/// the test database are blocked on a lock, or all `tasks` are finished.
async fn wait_for_lock_waiters<T>(db: &crate::Db, n: i64, tasks: &[&tokio::task::JoinHandle<T>]) {
    for _ in 0..2000 {
        let waiting = db
            .int(
                "SELECT COUNT(*) AS n FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await;
        if waiting >= n || tasks.iter().all(|t| t.is_finished()) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Two control planes create the same tenant at once; both pass their existence check
/// before either commits (forced: a third connection holds the chain head until both are
/// blocked). The unique key decides, and the loser must get AlreadyExists, with nothing
/// changed by it.
async fn two_stores_racing_duplicate_is_already_exists(ctx: Ctx) {
    let other = Arc::new(Store::open(&ctx.db.url).await.unwrap());
    let Ctx {
        store,
        clock: _clock,
        db,
    } = ctx;
    let mine = Arc::new(store);
    let mut holder = db.begin().await;
    sqlx::query("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let t1 = {
        let s = mine.clone();
        tokio::spawn(async move { s.create_tenant(&actor("p1"), &name("acme")).await })
    };
    // The first must be inside its transaction (blocked on the head) before the second
    // starts, so that the second one's INSERT waits on the first one's uncommitted row.
    wait_for_lock_waiters(&db, 1, &[&t1]).await;
    let t2 = {
        let s = other.clone();
        tokio::spawn(async move { s.create_tenant(&actor("p2"), &name("acme")).await })
    };
    wait_for_lock_waiters(&db, 2, &[&t2]).await;
    holder.rollback().await.unwrap();
    let (r1, r2) = (t1.await.unwrap(), t2.await.unwrap());
    assert!(r1.is_ok(), "{r1:?}");
    expect_err!(r2, AlreadyExists);
    let t = mine.tenant(&name("acme")).await.unwrap();
    assert_eq!(t.created_by, "p1");
    assert_intact(&mine.audit_verify().await.unwrap(), 1);
    assert_eq!(all_events(&mine).await[0].principal, "p1");
}

/// One control plane deletes tenant `acme` while another grants a role on it. The delete
/// counts the tenant's grants before the grant commits, the grant sees the tenant before
/// the delete commits, and `grants` has no foreign key to the tenant, so both commit: a
/// grant on a tenant that no longer exists, which a new tenant of the same name inherits.
async fn two_stores_leave_no_grant_on_a_deleted_tenant(ctx: Ctx) {
    let a = actor("alice");
    ctx.store.bootstrap().await.unwrap().expect("bootstrap");
    ctx.store.create_tenant(&a, &name("acme")).await.unwrap();
    ctx.store
        .create_account(&a, &principal("ops"), "")
        .await
        .unwrap();
    let other = Arc::new(Store::open(&ctx.db.url).await.unwrap());
    let Ctx {
        store,
        clock: _clock,
        db,
    } = ctx;
    let mine = Arc::new(store);
    let mut holder = db.begin().await;
    sqlx::query("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let t1 = {
        let s = mine.clone();
        tokio::spawn(async move { s.delete_tenant(&actor("p1"), &name("acme")).await })
    };
    wait_for_lock_waiters(&db, 1, &[&t1]).await;
    let t2 = {
        let s = other.clone();
        tokio::spawn(async move {
            s.grant(
                &actor("p2"),
                Role::Viewer,
                &principal("ops"),
                &scope("acme"),
            )
            .await
        })
    };
    wait_for_lock_waiters(&db, 2, &[&t2]).await;
    holder.rollback().await.unwrap();
    let (r1, r2) = (t1.await.unwrap(), t2.await.unwrap());

    let tenant_gone = mine.tenant(&name("acme")).await.is_err();
    let orphans: Vec<_> = mine
        .grants()
        .await
        .unwrap()
        .into_iter()
        .filter(|g| g.scope == scope("acme"))
        .collect();
    assert!(
        !tenant_gone || orphans.is_empty(),
        "grant on deleted tenant acme: delete = {r1:?}, grant = {r2:?}, grants = {orphans:?}"
    );
}

/// Two control planes each revoke a different one of the two platform admins at the same
/// time. Each checks "another admin is left" before the other commits, and the head-row
/// lock (taken only when the event is appended, at the end) does not serialize those
/// checks, so both commit and no platform admin remains.
///
/// The interleaving is forced, not timed: a third connection holds the chain head's row
/// lock until both revokes are waiting for it.
async fn two_stores_keep_a_platform_admin(ctx: Ctx) {
    let a = actor("alice");
    let s = &ctx.store;
    s.bootstrap().await.unwrap().expect("bootstrap");
    s.create_account(&a, &principal("root2"), "").await.unwrap();
    s.grant(&a, Role::Admin, &principal("root2"), &scope("platform"))
        .await
        .unwrap();

    let other = Arc::new(Store::open(&ctx.db.url).await.unwrap());
    let Ctx {
        store,
        clock: _clock,
        db,
    } = ctx;
    let mine = Arc::new(store);

    let mut holder = db.begin().await;
    sqlx::query("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let t1 = {
        let s = mine.clone();
        tokio::spawn(async move {
            s.revoke(
                &actor("p1"),
                Role::Admin,
                &principal("admin"),
                &scope("platform"),
            )
            .await
        })
    };
    let t2 = {
        let s = other.clone();
        tokio::spawn(async move {
            s.revoke(
                &actor("p2"),
                Role::Admin,
                &principal("root2"),
                &scope("platform"),
            )
            .await
        })
    };
    wait_for_lock_waiters(&db, 2, &[&t1, &t2]).await;
    holder.rollback().await.unwrap();
    let r1 = t1.await.unwrap();
    let r2 = t2.await.unwrap();

    let admins = mine
        .grants()
        .await
        .unwrap()
        .into_iter()
        .filter(|g| g.role == Role::Admin && g.scope == scope("platform"))
        .count();
    assert!(
        admins >= 1,
        "no platform admin left: revoke 1 = {r1:?}, revoke 2 = {r2:?}"
    );
    assert!(r1.is_err() || r2.is_err(), "both revokes succeeded");
}

/// Two stores (two control planes) writing to one database at once: the chain head's row
/// lock must keep one chain.
async fn two_stores_share_one_chain(ctx: Ctx) {
    let other = Arc::new(Store::open(&ctx.db.url).await.unwrap());
    let mine = Arc::new(ctx.store);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 {
            mine.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            for j in 0..3 {
                s.create_tenant(&actor("w"), &name(&format!("t{i}-{j}")))
                    .await?;
            }
            Ok::<_, store::StoreError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(mine.tenants().await.unwrap().len(), 24);
    assert_intact(&mine.audit_verify().await.unwrap(), 24);
    assert_intact(&other.audit_verify().await.unwrap(), 24);
}

/// Many concurrent `record` calls (audited reads, refusals) interleaved with mutations: every
/// call returns only once its event is stored, none is lost, and the chain stays intact.
async fn concurrent_records_are_group_committed_in_order(ctx: Ctx) {
    let store = Arc::new(ctx.store);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let reader = store.clone();
        tasks.push(tokio::spawn(async move {
            let store = reader;
            let ev = NewEvent::success(
                "secret.read-value",
                format!("secrets/acme/staging/s{i}"),
                scope("acme/staging"),
            );
            store.record(&actor("reader"), ev).await.unwrap();
            // Once record returns, the event is there for everyone.
            let seen = store
                .audit_events(
                    &AuditFilter {
                        principal: Some("reader".into()),
                        ..Default::default()
                    },
                    |_| true,
                )
                .await
                .unwrap();
            assert!(seen
                .iter()
                .any(|e| e.resource == format!("secrets/acme/staging/s{i}")));
        }));
        if i % 50 == 0 {
            store
                .create_tenant(&actor("admin"), &name(&format!("t{i}")))
                .await
                .unwrap();
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = store.audit_verify().await.unwrap();
    assert!(report.intact, "{report:?}");
    assert_eq!(report.events, 204);
    let reads = store
        .audit_events(
            &AuditFilter {
                action: Some("secret.read-value".into()),
                ..Default::default()
            },
            |_| true,
        )
        .await
        .unwrap();
    assert_eq!(reads.len(), 200);
}

/// The audit table as the store leaves it on SQLite, and migration 9 run on a trail stored
/// the earlier way (its sequence number in a B-tree of its own beside the table).
async fn audit_rows_upgraded_to_the_row_id_keep_the_chain(ctx: Ctx) {
    chain_of(&ctx, 5).await;
    if ctx.db.engine != store::Engine::Sqlite {
        return;
    }
    let table_sql = "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'audit_events'";
    let autoindexes = "SELECT COUNT(*) AS n FROM sqlite_master \
                       WHERE name LIKE 'sqlite_autoindex_audit_events%'";
    let ddl = format!("{:?}", ctx.db.text_rows(table_sql).await);
    assert!(ddl.contains("seq INTEGER PRIMARY KEY"), "{ddl}");
    assert_eq!(ctx.db.int(autoindexes).await, 0);
    let before = all_events(&ctx.store).await;
    ctx.store.close().await;

    // The trail as migration 8 left it (one connection: another would prepare against
    // the schema it last read).
    let mut tx = ctx.db.begin().await;
    for sql in [
        "CREATE TABLE audit_events_v8 (seq BIGINT PRIMARY KEY, time TEXT NOT NULL, \
         principal TEXT NOT NULL, action TEXT NOT NULL, resource TEXT NOT NULL, \
         scope TEXT NOT NULL, outcome TEXT NOT NULL, request_id TEXT NOT NULL, \
         source TEXT NOT NULL, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, \
         hash TEXT NOT NULL)",
        "INSERT INTO audit_events_v8 SELECT * FROM audit_events",
        "DROP TABLE audit_events",
        "ALTER TABLE audit_events_v8 RENAME TO audit_events",
        "CREATE INDEX audit_time ON audit_events(time)",
        "CREATE INDEX audit_events_resource ON audit_events(resource, seq)",
        "DELETE FROM schema_migrations WHERE version = 9",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.expect(sql);
    }
    tx.commit().await.expect("downgrade");
    assert_eq!(ctx.db.int(autoindexes).await, 1);

    let again = Store::open_with_clock(&ctx.db.url, ctx.clock.clone())
        .await
        .unwrap();
    let ddl = format!("{:?}", ctx.db.text_rows(table_sql).await);
    assert!(ddl.contains("seq INTEGER PRIMARY KEY"), "{ddl}");
    assert_eq!(ctx.db.int(autoindexes).await, 0);
    assert_eq!(all_events(&again).await, before);
    assert_intact(&verify(&again).await, 5);
    // The chain goes on where it stopped, and the indexes answer again.
    again
        .create_tenant(&actor("zoe"), &name("t9"))
        .await
        .unwrap();
    assert_intact(&verify(&again).await, 6);
    let indexes = ctx
        .db
        .int(
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'index' \
             AND name IN ('audit_time', 'audit_events_resource')",
        )
        .await;
    assert_eq!(indexes, 2);
}
