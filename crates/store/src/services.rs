//! Storage of services' desired state and their immutable revisions. A deploy writes a new
//! revision and points the service at it in one transaction; the service reconciler
//! records what it did (stable revision, revision status, messages), each change audited.
//! Every change bumps the `services` generation.

use model::services::{DeploySpec, RevisionInfo, RevisionStatus, ServiceInfo, ServiceState};
use model::Scope;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::audit::NewEvent;
use crate::routes::bump;
use crate::{parse_ts, ts, Actor, Result, Store, StoreError};

fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn enum_parse<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| StoreError::Corrupt(format!("unknown {what} {s:?}")))
}

const SVC_COLS: &str =
    "scope, name, state, desired_replicas, target_revision, stable_revision, message, updated_at";
const REV_COLS: &str = "scope, service, number, spec, status, message, created_at, created_by";

fn row_to_service(row: &AnyRow) -> Result<ServiceInfo> {
    let scope: String = row.try_get("scope")?;
    let name: String = row.try_get("name")?;
    Ok(ServiceInfo {
        name: format!("{scope}/{name}"),
        state: enum_parse(&row.try_get::<String, _>("state")?, "service state")?,
        desired_replicas: row.try_get::<i64, _>("desired_replicas")? as u32,
        target_revision: row.try_get::<i64, _>("target_revision")? as u64,
        stable_revision: row
            .try_get::<Option<i64>, _>("stable_revision")?
            .map(|n| n as u64),
        message: row.try_get("message")?,
        replicas: Vec::new(),
        updated_at: parse_ts(&row.try_get::<String, _>("updated_at")?)?,
        events: Vec::new(),
    })
}

fn row_to_revision(row: &AnyRow) -> Result<RevisionInfo> {
    let scope: String = row.try_get("scope")?;
    let service: String = row.try_get("service")?;
    Ok(RevisionInfo {
        service: format!("{scope}/{service}"),
        number: row.try_get::<i64, _>("number")? as u64,
        spec: serde_json::from_str(&row.try_get::<String, _>("spec")?)
            .map_err(|e| StoreError::Corrupt(format!("revision of {scope}/{service}: {e}")))?,
        status: enum_parse(&row.try_get::<String, _>("status")?, "revision status")?,
        message: row.try_get("message")?,
        created_at: parse_ts(&row.try_get::<String, _>("created_at")?)?,
        created_by: row.try_get("created_by")?,
    })
}

/// A change to a service's desired or observed state (`None`: unchanged).
#[derive(Debug, Default, Clone)]
pub struct ServiceChange {
    pub target_revision: Option<u64>,
    pub stable_revision: Option<Option<u64>>,
    pub desired_replicas: Option<u32>,
    pub state: Option<ServiceState>,
    pub message: Option<Option<String>>,
    /// Sets one revision's status (and message).
    pub revision_status: Option<(u64, RevisionStatus, Option<String>)>,
}

impl Store {
    /// Records `spec` as the next revision of `service` (creating the service on its first
    /// deploy) and makes it the target. Returns the revision.
    pub async fn deploy_revision(
        &self,
        actor: &Actor,
        scope: &Scope,
        service: &str,
        spec: &DeploySpec,
    ) -> Result<RevisionInfo> {
        let scope_s = scope.to_string();
        let mut w = self.begin_write().await?;
        w.require_environment(scope, "services").await?;
        let last: i64 = sqlx::query(
            "SELECT COALESCE(MAX(number), 0) AS n FROM revisions WHERE scope = $1 AND service = $2",
        )
        .bind(&scope_s)
        .bind(service)
        .fetch_one(&mut *w.tx)
        .await?
        .try_get("n")?;
        let number = last + 1;
        let now = parse_ts(&ts(self.now()))?;
        let json = serde_json::to_string(spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(&format!(
            "INSERT INTO revisions ({REV_COLS}) VALUES ($1, $2, $3, $4, $5, NULL, $6, $7)"
        ))
        .bind(&scope_s)
        .bind(service)
        .bind(number)
        .bind(&json)
        .bind(enum_str(&RevisionStatus::Rolling))
        .bind(ts(now))
        .bind(&actor.principal)
        .execute(&mut *w.tx)
        .await?;
        let exists = sqlx::query("SELECT 1 AS x FROM services WHERE scope = $1 AND name = $2")
            .bind(&scope_s)
            .bind(service)
            .fetch_optional(&mut *w.tx)
            .await?
            .is_some();
        if exists {
            sqlx::query(
                "UPDATE services SET target_revision = $1, desired_replicas = $2, state = $3, \
                 message = NULL, updated_at = $4 WHERE scope = $5 AND name = $6",
            )
            .bind(number)
            .bind(spec.replicas as i64)
            .bind(enum_str(&ServiceState::Running))
            .bind(ts(now))
            .bind(&scope_s)
            .bind(service)
            .execute(&mut *w.tx)
            .await?;
        } else {
            sqlx::query(&format!(
                "INSERT INTO services ({SVC_COLS}) VALUES ($1, $2, $3, $4, $5, NULL, NULL, $6)"
            ))
            .bind(&scope_s)
            .bind(service)
            .bind(enum_str(&ServiceState::Running))
            .bind(spec.replicas as i64)
            .bind(number)
            .bind(ts(now))
            .execute(&mut *w.tx)
            .await?;
        }
        bump(&mut w.tx, "services").await?;
        let mut ev = NewEvent::success(
            "service.deploy",
            format!("services/{scope}/{service}"),
            scope.clone(),
        );
        ev.detail = format!("revision={number} artifact={}", spec.artifact);
        w.commit(actor, ev).await?;
        Ok(RevisionInfo {
            service: format!("{scope}/{service}"),
            number: number as u64,
            spec: spec.clone(),
            status: RevisionStatus::Rolling,
            message: None,
            created_at: now,
            created_by: actor.principal.clone(),
        })
    }

    /// Applies `change` to a service, audited as `action`.
    pub async fn update_service(
        &self,
        actor: &Actor,
        scope: &Scope,
        service: &str,
        change: &ServiceChange,
        action: &str,
        detail: String,
    ) -> Result<ServiceInfo> {
        let scope_s = scope.to_string();
        let mut w = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT {SVC_COLS} FROM services WHERE scope = $1 AND name = $2"
        ))
        .bind(&scope_s)
        .bind(service)
        .fetch_optional(&mut *w.tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("service {scope}/{service} not found")))?;
        let mut s = row_to_service(&row)?;
        if let Some(t) = change.target_revision {
            let known = sqlx::query(
                "SELECT 1 AS x FROM revisions WHERE scope = $1 AND service = $2 AND number = $3",
            )
            .bind(&scope_s)
            .bind(service)
            .bind(t as i64)
            .fetch_optional(&mut *w.tx)
            .await?;
            if known.is_none() {
                return Err(StoreError::NotFound(format!(
                    "service {scope}/{service} has no revision {t}"
                )));
            }
            s.target_revision = t;
        }
        if let Some(v) = change.stable_revision {
            s.stable_revision = v;
        }
        if let Some(v) = change.desired_replicas {
            s.desired_replicas = v;
        }
        if let Some(v) = change.state {
            s.state = v;
        }
        if let Some(m) = &change.message {
            s.message = m.clone();
        }
        s.updated_at = parse_ts(&ts(self.now()))?;
        sqlx::query(
            "UPDATE services SET state = $1, desired_replicas = $2, target_revision = $3, \
             stable_revision = $4, message = $5, updated_at = $6 WHERE scope = $7 AND name = $8",
        )
        .bind(enum_str(&s.state))
        .bind(s.desired_replicas as i64)
        .bind(s.target_revision as i64)
        .bind(s.stable_revision.map(|n| n as i64))
        .bind(s.message.as_deref())
        .bind(ts(s.updated_at))
        .bind(&scope_s)
        .bind(service)
        .execute(&mut *w.tx)
        .await?;
        if let Some((n, status, message)) = &change.revision_status {
            sqlx::query(
                "UPDATE revisions SET status = $1, message = $2 WHERE scope = $3 AND service = $4 AND number = $5",
            )
            .bind(enum_str(status))
            .bind(message.as_deref())
            .bind(&scope_s)
            .bind(service)
            .bind(*n as i64)
            .execute(&mut *w.tx)
            .await?;
        }
        bump(&mut w.tx, "services").await?;
        let mut ev =
            NewEvent::success(action, format!("services/{scope}/{service}"), scope.clone());
        ev.detail = detail;
        w.commit(actor, ev).await?;
        Ok(s)
    }

    /// The last `limit` audit events of a service, newest first.
    pub async fn service_events(
        &self,
        scope: &Scope,
        service: &str,
        limit: u32,
    ) -> Result<Vec<model::services::ServiceEvent>> {
        let rows = sqlx::query(
            "SELECT time, principal, action, outcome, detail FROM audit_events \
             WHERE resource = $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(format!("services/{scope}/{service}"))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(model::services::ServiceEvent {
                    time: parse_ts(&r.try_get::<String, _>("time")?)?,
                    action: r.try_get("action")?,
                    principal: r.try_get("principal")?,
                    outcome: r.try_get("outcome")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    pub async fn service(&self, scope: &Scope, service: &str) -> Result<ServiceInfo> {
        sqlx::query(&format!(
            "SELECT {SVC_COLS} FROM services WHERE scope = $1 AND name = $2"
        ))
        .bind(scope.to_string())
        .bind(service)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| row_to_service(&r))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("service {scope}/{service} not found")))
    }

    pub async fn services(&self, scope: &Scope) -> Result<Vec<ServiceInfo>> {
        let rows = sqlx::query(&format!(
            "SELECT {SVC_COLS} FROM services WHERE scope = $1 ORDER BY name"
        ))
        .bind(scope.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_service).collect()
    }

    /// Every service of every tenant (for the reconciler).
    pub async fn all_services(&self) -> Result<Vec<ServiceInfo>> {
        let rows = sqlx::query(&format!(
            "SELECT {SVC_COLS} FROM services ORDER BY scope, name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_service).collect()
    }

    /// Revisions of a service, newest first.
    pub async fn revisions(&self, scope: &Scope, service: &str) -> Result<Vec<RevisionInfo>> {
        let rows = sqlx::query(&format!(
            "SELECT {REV_COLS} FROM revisions WHERE scope = $1 AND service = $2 ORDER BY number DESC"
        ))
        .bind(scope.to_string())
        .bind(service)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_revision).collect()
    }

    pub async fn revision(&self, scope: &Scope, service: &str, n: u64) -> Result<RevisionInfo> {
        sqlx::query(&format!(
            "SELECT {REV_COLS} FROM revisions WHERE scope = $1 AND service = $2 AND number = $3"
        ))
        .bind(scope.to_string())
        .bind(service)
        .bind(n as i64)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| row_to_revision(&r))
        .transpose()?
        .ok_or_else(|| {
            StoreError::NotFound(format!("service {scope}/{service} has no revision {n}"))
        })
    }

    /// Deletes a service and its revisions (the reconciler stops what still runs).
    pub async fn delete_service(&self, actor: &Actor, scope: &Scope, service: &str) -> Result<()> {
        let mut w = self
            .begin_write()
            .await?
            .change_one(
                sqlx::query("DELETE FROM services WHERE scope = $1 AND name = $2")
                    .bind(scope.to_string())
                    .bind(service),
                || format!("service {scope}/{service} not found"),
            )
            .await?;
        sqlx::query("DELETE FROM revisions WHERE scope = $1 AND service = $2")
            .bind(scope.to_string())
            .bind(service)
            .execute(&mut *w.tx)
            .await?;
        bump(&mut w.tx, "services").await?;
        w.commit(
            actor,
            NewEvent::success(
                "service.delete",
                format!("services/{scope}/{service}"),
                scope.clone(),
            ),
        )
        .await
    }
}
