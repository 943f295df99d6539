//! Storage of the edge's routes, and the generation counter data planes poll to know when
//! their snapshot is stale.
//!
//! A host belongs to one tenant: a route on a host another tenant already routes is refused.

use model::routes::{RouteInfo, RouteSpec};
use model::Scope;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::audit::NewEvent;
use crate::{parse_ts, ts, Actor, Result, Store, StoreError};

const COLS: &str = "scope, name, spec, created_at, created_by";

fn row_to_route(row: &AnyRow) -> Result<RouteInfo> {
    let scope: String = row.try_get("scope")?;
    let name: String = row.try_get("name")?;
    let spec: RouteSpec = serde_json::from_str(&row.try_get::<String, _>("spec")?)
        .map_err(|e| StoreError::Corrupt(format!("route {scope}/{name}: {e}")))?;
    Ok(RouteInfo {
        name: format!("{scope}/{name}"),
        spec,
        created_at: parse_ts(&row.try_get::<String, _>("created_at")?)?,
        created_by: row.try_get("created_by")?,
    })
}

impl Store {
    pub async fn create_route(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        spec: &RouteSpec,
    ) -> Result<RouteInfo> {
        let Scope::Environment(tenant, _) = scope else {
            return Err(StoreError::Unprocessable(
                "routes live in an environment".into(),
            ));
        };
        let mut w = self.begin_write().await?;
        w.require_environment(scope, "routes").await?;
        let owner =
            sqlx::query("SELECT tenant FROM routes WHERE host = $1 AND tenant <> $2 UNION ALL SELECT tenant FROM certificate_domains WHERE domain = $1 AND tenant <> $2 LIMIT 1")
                .bind(&spec.host)
                .bind(tenant.as_str())
                .fetch_optional(&mut *w.tx)
                .await?;
        if owner.is_some() {
            return Err(StoreError::Conflict(format!(
                "host {} belongs to another tenant",
                spec.host
            )));
        }
        let scope_s = scope.to_string();
        let dup = sqlx::query("SELECT 1 AS x FROM routes WHERE scope = $1 AND name = $2")
            .bind(&scope_s)
            .bind(name)
            .fetch_optional(&mut *w.tx)
            .await?;
        if dup.is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "route {scope}/{name} already exists"
            )));
        }
        // The same host, path, match kind and listener twice would make routing ambiguous.
        for row in sqlx::query("SELECT scope, name, spec FROM routes WHERE host = $1")
            .bind(&spec.host)
            .fetch_all(&mut *w.tx)
            .await?
        {
            let other: RouteSpec = serde_json::from_str(&row.try_get::<String, _>("spec")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if other.path == spec.path
                && other.path_kind == spec.path_kind
                && other.listener == spec.listener
            {
                let (s, n): (String, String) = (row.try_get("scope")?, row.try_get("name")?);
                return Err(StoreError::Conflict(format!(
                    "route {s}/{n} already routes {}{} on that listener",
                    spec.host, spec.path
                )));
            }
        }
        let now = parse_ts(&ts(self.now()))?;
        let json = serde_json::to_string(spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query("INSERT INTO routes (scope, name, tenant, host, spec, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&scope_s)
            .bind(name)
            .bind(tenant.as_str())
            .bind(&spec.host)
            .bind(&json)
            .bind(ts(now))
            .bind(&actor.principal)
            .execute(&mut *w.tx)
            .await?;
        bump(&mut w.tx, "routes").await?;
        let mut ev = NewEvent::success(
            "route.create",
            format!("routes/{scope}/{name}"),
            scope.clone(),
        );
        ev.detail = format!("host={} path={}", spec.host, spec.path);
        w.commit(actor, ev).await?;
        Ok(RouteInfo {
            name: format!("{scope}/{name}"),
            spec: spec.clone(),
            created_at: now,
            created_by: actor.principal.clone(),
        })
    }

    pub async fn routes(&self, scope: &Scope) -> Result<Vec<RouteInfo>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM routes WHERE scope = $1 ORDER BY name"
        ))
        .bind(scope.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_route).collect()
    }

    /// Every route of every tenant (for the edge's snapshot).
    pub async fn all_routes(&self) -> Result<Vec<RouteInfo>> {
        let rows = sqlx::query(&format!("SELECT {COLS} FROM routes ORDER BY scope, name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_route).collect()
    }

    pub async fn route(&self, scope: &Scope, name: &str) -> Result<RouteInfo> {
        sqlx::query(&format!(
            "SELECT {COLS} FROM routes WHERE scope = $1 AND name = $2"
        ))
        .bind(scope.to_string())
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| row_to_route(&r))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("route {scope}/{name} not found")))
    }

    pub async fn delete_route(&self, actor: &Actor, scope: &Scope, name: &str) -> Result<()> {
        let mut w = self
            .begin_write()
            .await?
            .change_one(
                sqlx::query("DELETE FROM routes WHERE scope = $1 AND name = $2")
                    .bind(scope.to_string())
                    .bind(name),
                || format!("route {scope}/{name} not found"),
            )
            .await?;
        bump(&mut w.tx, "routes").await?;
        w.commit(
            actor,
            NewEvent::success(
                "route.delete",
                format!("routes/{scope}/{name}"),
                scope.clone(),
            ),
        )
        .await
    }

    /// The generation of `name` (e.g. `routes`): it grows with every change.
    pub async fn generation(&self, name: &str) -> Result<i64> {
        Ok(sqlx::query("SELECT value FROM generations WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get("value"))
            .transpose()?
            .unwrap_or(0))
    }
}

pub(crate) async fn bump(tx: &mut sqlx::Transaction<'static, sqlx::Any>, name: &str) -> Result<()> {
    sqlx::query("UPDATE generations SET value = value + 1 WHERE name = $1")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
