//! The audit trail: an append-only SHA-256 hash chain of events.
//!
//! Each event's hash covers its content and the previous event's hash, so editing,
//! removing or reordering an event breaks the chain at that point; the head row (last seq
//! and hash) catches truncation of the tail. `seq` is the event's position; it is not
//! hashed, so reordering shows as a broken link rather than as an edit.
//!
//! Events never carry secret values: callers pass names, codes and roles only.

use model::types::{AuditEvent, AuditFilter, Outcome, VerifyReport};
use model::Scope;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use time::OffsetDateTime;

use crate::db::{self, Cols, Conn};
use crate::{parse_ts, ts, Actor, Engine, Result, Store, StoreError};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a caller says about an event; the chain adds time, links and hashes.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub action: String,
    pub resource: String,
    pub scope: Scope,
    pub outcome: Outcome,
    pub detail: String,
}

impl NewEvent {
    pub fn success(action: &str, resource: String, scope: Scope) -> NewEvent {
        NewEvent {
            action: action.to_string(),
            resource,
            scope,
            outcome: Outcome::Success,
            detail: String::new(),
        }
    }
}

/// The hashed content of an event, in a fixed field order.
#[derive(Serialize)]
struct Hashed<'a> {
    time: &'a str,
    principal: &'a str,
    action: &'a str,
    resource: &'a str,
    scope: &'a str,
    outcome: &'a str,
    request_id: &'a str,
    source: &'a str,
    detail: &'a str,
    prev_hash: &'a str,
}

/// The hash of an event: SHA-256 over the canonical JSON of its content and `prev_hash`.
pub fn chain_hash(ev: &AuditEvent) -> String {
    let time = ts(ev.time);
    let h = Hashed {
        time: &time,
        principal: &ev.principal,
        action: &ev.action,
        resource: &ev.resource,
        scope: &ev.scope,
        outcome: ev.outcome.as_str(),
        request_id: &ev.request_id,
        source: &ev.source,
        detail: &ev.detail,
        prev_hash: &ev.prev_hash,
    };
    let bytes = serde_json::to_vec(&h).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

/// Appends one event inside `tx`, locking the chain head for the rest of the transaction.
pub(crate) async fn append(
    tx: &mut Transaction<'static, Any>,
    engine: Engine,
    actor: &Actor,
    new: &NewEvent,
    now: OffsetDateTime,
) -> Result<()> {
    append_all(&mut Conn::Any(tx), engine, &[(actor, new)], now).await
}

/// Rows of one multi-row insert (12 parameters each, well below both engines' limits).
const INSERT_CHUNK: usize = 64;

/// Appends `events` in order inside `tx`: the chain head is read (and locked) once, the
/// events are linked and inserted in a few multi-row statements, and the head is moved once.
pub(crate) async fn append_all(
    conn: &mut Conn<'_>,
    engine: Engine,
    events: &[(&Actor, &NewEvent)],
    now: OffsetDateTime,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let head_sql = match engine {
        Engine::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        Engine::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
    };
    let head = conn.fetch_one(db::query(head_sql)).await?;
    let mut seq: i64 = head.int("seq")?;
    let mut prev_hash: String = head.text("hash")?;
    // Millisecond precision is what is stored and hashed.
    let now = parse_ts(&ts(now))?;
    let mut linked = Vec::with_capacity(events.len());
    for (actor, new) in events {
        seq += 1;
        let mut ev = AuditEvent {
            seq,
            time: now,
            principal: actor.principal.clone(),
            action: new.action.clone(),
            resource: new.resource.clone(),
            scope: new.scope.to_string(),
            outcome: new.outcome,
            request_id: actor.request_id.clone(),
            source: actor.source.clone(),
            detail: new.detail.clone(),
            prev_hash,
            hash: String::new(),
        };
        ev.hash = chain_hash(&ev);
        prev_hash = ev.hash.clone();
        linked.push(ev);
    }
    let time = ts(now);
    for chunk in linked.chunks(INSERT_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO audit_events (seq, time, principal, action, resource, scope, outcome, \
             request_id, source, detail, prev_hash, hash) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 12;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for j in 1..=12 {
                if j > 1 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", b + j));
            }
            sql.push(')');
        }
        let mut q = db::query(&sql);
        for ev in chunk {
            q = q
                .bind(ev.seq)
                .bind(time.as_str())
                .bind(&ev.principal)
                .bind(&ev.action)
                .bind(&ev.resource)
                .bind(&ev.scope)
                .bind(ev.outcome.as_str())
                .bind(&ev.request_id)
                .bind(&ev.source)
                .bind(&ev.detail)
                .bind(&ev.prev_hash)
                .bind(&ev.hash);
        }
        conn.execute(q).await?;
    }
    conn.execute(
        db::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(&prev_hash),
    )
    .await?;
    Ok(())
}

fn row_to_event(row: &AnyRow) -> Result<AuditEvent> {
    let outcome: String = row.try_get("outcome")?;
    Ok(AuditEvent {
        seq: row.try_get("seq")?,
        time: parse_ts(&row.try_get::<String, _>("time")?)?,
        principal: row.try_get("principal")?,
        action: row.try_get("action")?,
        resource: row.try_get("resource")?,
        scope: row.try_get("scope")?,
        outcome: Outcome::parse(&outcome)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown outcome {outcome:?}")))?,
        request_id: row.try_get("request_id")?,
        source: row.try_get("source")?,
        detail: row.try_get("detail")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Default and maximum page size of `audit list`.
pub const MAX_AUDIT_PAGE: i64 = 1000;

impl Store {
    /// Records an event that goes with no change (a denied or unauthenticated attempt, a
    /// refused request), in its own transaction.
    ///
    /// Such events are group-committed (`writer`): concurrent callers share one transaction
    /// (and one fsync), and each call returns only once its event is durable.
    pub async fn record(&self, actor: &Actor, event: NewEvent) -> Result<()> {
        self.writer.record(actor.clone(), event).await
    }

    /// Events matching `filter`, oldest first. Scope visibility is applied by the caller
    /// through `visible` (evaluated per event).
    pub async fn audit_events(
        &self,
        filter: &AuditFilter,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Vec<AuditEvent>> {
        let limit = filter
            .limit
            .unwrap_or(MAX_AUDIT_PAGE)
            .clamp(1, MAX_AUDIT_PAGE);
        let mut sql = String::from(
            "SELECT seq, time, principal, action, resource, scope, outcome, request_id, source, \
             detail, prev_hash, hash FROM audit_events WHERE seq > $1",
        );
        // $1 is the paging cursor; filter values follow.
        let mut args: Vec<String> = Vec::new();
        let mut arg = |v: String| {
            args.push(v);
            format!("${}", args.len() + 1)
        };
        if let Some(t) = &filter.tenant {
            let (a, b) = (arg(t.to_string()), arg(format!("{t}/%")));
            sql.push_str(&format!(" AND (scope = {a} OR scope LIKE {b})"));
        }
        if let Some(p) = &filter.principal {
            sql.push_str(&format!(" AND principal = {}", arg(p.clone())));
        }
        if let Some(a) = &filter.action {
            let cond = match a.strip_suffix(".*") {
                // Not LIKE: it ignores case on SQLite and treats `_` as a wildcard.
                Some(prefix) => {
                    let p = arg(format!("{prefix}."));
                    format!(" AND substr(action, 1, length({p})) = {p}")
                }
                None => format!(" AND action = {}", arg(a.clone())),
            };
            sql.push_str(&cond);
        }
        if let Some(s) = filter.since {
            sql.push_str(&format!(" AND time >= {}", arg(ts(s))));
        }
        sql.push_str(" ORDER BY seq");
        // Visibility is filtered after the query, so page through until `limit` visible rows.
        let mut out = Vec::new();
        let mut after = filter.after_seq.unwrap_or(0);
        loop {
            let page_sql = format!("{sql} LIMIT {MAX_AUDIT_PAGE}");
            let mut q = sqlx::query(&page_sql).bind(after);
            for a in &args {
                q = q.bind(a.as_str());
            }
            let rows = q.fetch_all(&self.pool).await?;
            let full = rows.len() as i64 == MAX_AUDIT_PAGE;
            for row in &rows {
                let ev = row_to_event(row)?;
                after = ev.seq;
                if visible(&ev.scope) {
                    out.push(ev);
                    if out.len() as i64 >= limit {
                        return Ok(out);
                    }
                }
            }
            if !full {
                return Ok(out);
            }
        }
    }

    /// Walks the whole chain and reports the first event that does not verify.
    pub async fn audit_verify(&self) -> Result<VerifyReport> {
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        let head_seq: i64 = head.try_get("seq")?;
        let head_hash: String = head.try_get("hash")?;
        let mut expected_seq = 1i64;
        let mut prev_hash = GENESIS_HASH.to_string();
        let broken = |seq: i64, problem: String| VerifyReport {
            intact: false,
            events: seq - 1,
            first_bad_seq: Some(seq),
            problem: Some(problem),
        };
        loop {
            let rows = sqlx::query(
                "SELECT seq, time, principal, action, resource, scope, outcome, request_id, \
                 source, detail, prev_hash, hash FROM audit_events WHERE seq >= $1 ORDER BY seq LIMIT 5000",
            )
            .bind(expected_seq)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let ev = match row_to_event(row) {
                    Ok(ev) => ev,
                    Err(e) => {
                        let seq: i64 = row.try_get("seq").unwrap_or(expected_seq);
                        return Ok(broken(
                            seq,
                            format!("event {seq} is unreadable ({e}): altered"),
                        ));
                    }
                };
                if ev.seq != expected_seq {
                    return Ok(broken(
                        expected_seq,
                        format!("event {expected_seq} is missing: removed"),
                    ));
                }
                if chain_hash(&ev) != ev.hash {
                    return Ok(broken(
                        ev.seq,
                        format!("event {} does not match its hash: altered", ev.seq),
                    ));
                }
                if ev.prev_hash != prev_hash {
                    return Ok(broken(
                        ev.seq,
                        format!(
                            "event {} does not follow event {}: events were reordered or removed",
                            ev.seq,
                            ev.seq - 1
                        ),
                    ));
                }
                prev_hash = ev.hash;
                expected_seq += 1;
            }
        }
        let last = expected_seq - 1;
        if last != head_seq || prev_hash != head_hash {
            let problem = if last < head_seq {
                format!("events {} to {head_seq} are missing: removed", last + 1)
            } else {
                format!("the chain head does not match event {last}: altered")
            };
            return Ok(broken(last.min(head_seq) + 1, problem));
        }
        Ok(VerifyReport {
            intact: true,
            events: last,
            first_bad_seq: None,
            problem: None,
        })
    }
}
