//! Tenants and environments: the isolation boundaries every other resource lives in.
//!
//! Deleting a tenant or an environment is refused while it still holds anything; the
//! store never cascades a delete across a boundary the caller did not name.

use model::name::RESERVED_TENANT_NAMES;
use model::types::{EnvKind, Environment, Tenant};
use model::{Name, Scope};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::audit::NewEvent;
use crate::db::{self, Cols, Conn};
use crate::{parse_ts, ts, Actor, Result, Store, StoreError};

fn row_to_tenant(row: &AnyRow) -> Result<Tenant> {
    Ok(Tenant {
        name: parse_name(row.try_get("name")?)?,
        created_at: parse_ts(&row.try_get::<String, _>("created_at")?)?,
        created_by: row.try_get("created_by")?,
    })
}

fn row_to_env(row: &impl Cols) -> Result<Environment> {
    let kind = row.text("kind")?;
    Ok(Environment {
        tenant: parse_name(row.text("tenant")?)?,
        name: parse_name(row.text("name")?)?,
        kind: EnvKind::parse(&kind).map_err(|e| StoreError::Corrupt(e.message))?,
        created_at: parse_ts(&row.text("created_at")?)?,
        created_by: row.text("created_by")?,
    })
}

/// `Store::environment` on `conn`.
async fn environment_on(conn: &mut Conn<'_>, tenant: &Name, name: &Name) -> Result<Environment> {
    conn.fetch_optional(
        db::query(
            "SELECT tenant, name, kind, created_at, created_by FROM environments \
             WHERE tenant = $1 AND name = $2",
        )
        .bind(tenant.as_str())
        .bind(name.as_str()),
    )
    .await?
    .map(|r| row_to_env(&r))
    .unwrap_or_else(|| {
        Err(StoreError::NotFound(format!(
            "environment {tenant}/{name} not found"
        )))
    })
}

pub(crate) fn parse_name(s: String) -> Result<Name> {
    Name::parse(&s).map_err(|e| StoreError::Corrupt(e.message))
}

impl Store {
    pub async fn tenants(&self) -> Result<Vec<Tenant>> {
        let rows = sqlx::query("SELECT name, created_at, created_by FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_tenant).collect()
    }

    pub async fn tenant(&self, name: &Name) -> Result<Tenant> {
        sqlx::query("SELECT name, created_at, created_by FROM tenants WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| row_to_tenant(&r))
            .unwrap_or_else(|| Err(StoreError::NotFound(format!("tenant {name} not found"))))
    }

    pub async fn create_tenant(&self, actor: &Actor, name: &Name) -> Result<Tenant> {
        if RESERVED_TENANT_NAMES.contains(&name.as_str()) {
            return Err(StoreError::Unprocessable(format!(
                "tenant name {name} is reserved"
            )));
        }
        let mut w = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 AS x FROM tenants WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&mut *w.tx)
            .await?;
        if exists.is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "tenant {name} already exists"
            )));
        }
        let tenant = Tenant {
            name: name.clone(),
            created_at: parse_ts(&ts(self.now()))?,
            created_by: actor.principal.clone(),
        };
        sqlx::query("INSERT INTO tenants (name, created_at, created_by) VALUES ($1, $2, $3)")
            .bind(name.as_str())
            .bind(ts(tenant.created_at))
            .bind(&tenant.created_by)
            .execute(&mut *w.tx)
            .await?;
        let scope = Scope::Tenant(name.clone());
        w.commit(
            actor,
            NewEvent::success("tenant.create", format!("tenants/{name}"), scope),
        )
        .await?;
        Ok(tenant)
    }

    pub async fn delete_tenant(&self, actor: &Actor, name: &Name) -> Result<()> {
        let mut w = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 AS x FROM tenants WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&mut *w.tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("tenant {name} not found")));
        }
        let held = holdings(
            &mut w.tx,
            &[
                (
                    "environments",
                    "SELECT COUNT(*) AS n FROM environments WHERE tenant = $1",
                ),
                (
                    "accounts",
                    "SELECT COUNT(*) AS n FROM accounts WHERE tenant = $1",
                ),
                (
                    "role grants",
                    "SELECT COUNT(*) AS n FROM grants WHERE tenant = $1",
                ),
                (
                    "artifacts",
                    "SELECT COUNT(*) AS n FROM artifacts WHERE tenant = $1",
                ),
            ],
            &[name.as_str()],
        )
        .await?;
        if !held.is_empty() {
            return Err(StoreError::Conflict(format!(
                "tenant {name} still holds {}; delete them first",
                held.join(", ")
            )));
        }
        // The tenant-wide key and the keys of its deleted artifacts go with it.
        for sql in [
            "DELETE FROM key_versions WHERE key_id IN (SELECT id FROM keys WHERE scope = $1)",
            "DELETE FROM keys WHERE scope = $1",
            "DELETE FROM tenants WHERE name = $1",
        ] {
            sqlx::query(sql)
                .bind(name.as_str())
                .execute(&mut *w.tx)
                .await?;
        }
        w.commit(
            actor,
            NewEvent::success(
                "tenant.delete",
                format!("tenants/{name}"),
                Scope::Tenant(name.clone()),
            ),
        )
        .await
    }

    pub async fn environments(&self, tenant: &Name) -> Result<Vec<Environment>> {
        self.tenant(tenant).await?;
        let rows = sqlx::query(
            "SELECT tenant, name, kind, created_at, created_by FROM environments \
             WHERE tenant = $1 ORDER BY name",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_env).collect()
    }

    pub async fn environment(&self, tenant: &Name, name: &Name) -> Result<Environment> {
        let key = (tenant.clone(), name.clone());
        if let Some(env) = self.envs_cache.get(&key) {
            return Ok(env);
        }
        let generation = self.envs_cache.generation();
        let env = read_with!(self, |c| environment_on(c, tenant, name))?;
        self.envs_cache.put(key, generation, env.clone());
        Ok(env)
    }

    pub async fn create_environment(
        &self,
        actor: &Actor,
        tenant: &Name,
        name: &Name,
        kind: EnvKind,
    ) -> Result<Environment> {
        let mut w = self.begin_write().await?;
        let t = sqlx::query("SELECT 1 AS x FROM tenants WHERE name = $1")
            .bind(tenant.as_str())
            .fetch_optional(&mut *w.tx)
            .await?;
        if t.is_none() {
            return Err(StoreError::NotFound(format!("tenant {tenant} not found")));
        }
        let e = sqlx::query("SELECT 1 AS x FROM environments WHERE tenant = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(name.as_str())
            .fetch_optional(&mut *w.tx)
            .await?;
        if e.is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "environment {tenant}/{name} already exists"
            )));
        }
        let env = Environment {
            tenant: tenant.clone(),
            name: name.clone(),
            kind,
            created_at: parse_ts(&ts(self.now()))?,
            created_by: actor.principal.clone(),
        };
        sqlx::query(
            "INSERT INTO environments (tenant, name, kind, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant.as_str())
        .bind(name.as_str())
        .bind(kind.as_str())
        .bind(ts(env.created_at))
        .bind(&env.created_by)
        .execute(&mut *w.tx)
        .await?;
        let mut ev = NewEvent::success(
            "environment.create",
            format!("tenants/{tenant}/environments/{name}"),
            env.scope(),
        );
        ev.detail = format!("kind={}", kind.as_str());
        w.commit(actor, ev).await?;
        Ok(env)
    }

    pub async fn delete_environment(
        &self,
        actor: &Actor,
        tenant: &Name,
        name: &Name,
    ) -> Result<()> {
        let mut w = self.begin_write().await?;
        let e = sqlx::query("SELECT 1 AS x FROM environments WHERE tenant = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(name.as_str())
            .fetch_optional(&mut *w.tx)
            .await?;
        if e.is_none() {
            return Err(StoreError::NotFound(format!(
                "environment {tenant}/{name} not found"
            )));
        }
        let scope = Scope::Environment(tenant.clone(), name.clone());
        let scope_str = scope.to_string();
        let held = holdings(
            &mut w.tx,
            &[
                (
                    "role grants",
                    "SELECT COUNT(*) AS n FROM grants WHERE scope = $1",
                ),
                (
                    "KMS keys",
                    "SELECT COUNT(*) AS n FROM keys WHERE scope = $1 AND purpose = 'kms' AND state <> 'destroyed'",
                ),
                (
                    "secrets",
                    "SELECT COUNT(*) AS n FROM secrets WHERE scope = $1",
                ),
                (
                    "routes",
                    "SELECT COUNT(*) AS n FROM routes WHERE scope = $1",
                ),
                (
                    "certificates",
                    "SELECT COUNT(*) AS n FROM certificates WHERE scope = $1",
                ),
                (
                    "services",
                    "SELECT COUNT(*) AS n FROM services WHERE scope = $1",
                ),
                (
                    "service replicas",
                    "SELECT COUNT(*) AS n FROM replicas WHERE scope = $1",
                ),
                (
                    "open secret requests",
                    "SELECT COUNT(*) AS n FROM secret_requests WHERE scope = $1 AND state = 'open'",
                ),
            ],
            &[scope_str.as_str()],
        )
        .await?;
        if !held.is_empty() {
            return Err(StoreError::Conflict(format!(
                "environment {scope} still holds {}; remove them first",
                held.join(", ")
            )));
        }
        // What is left of the environment's keys is the environment key itself and destroyed
        // keys without material: they go with it.
        for sql in [
            "DELETE FROM key_versions WHERE key_id IN (SELECT id FROM keys WHERE scope = $1)",
            "DELETE FROM keys WHERE scope = $1",
            "DELETE FROM secret_requests WHERE scope = $1",
        ] {
            sqlx::query(sql)
                .bind(&scope_str)
                .execute(&mut *w.tx)
                .await?;
        }
        sqlx::query("DELETE FROM environments WHERE tenant = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(name.as_str())
            .execute(&mut *w.tx)
            .await?;
        w.commit(
            actor,
            NewEvent::success(
                "environment.delete",
                format!("tenants/{tenant}/environments/{name}"),
                scope,
            ),
        )
        .await
    }
}

/// Counts what a scope still holds: returns "N things" for each non-empty kind.
async fn holdings(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    checks: &[(&str, &str)],
    args: &[&str],
) -> Result<Vec<String>> {
    let mut held = Vec::new();
    for (what, sql) in checks {
        let mut q = sqlx::query(sql);
        for a in args {
            q = q.bind(*a);
        }
        let n: i64 = q.fetch_one(&mut **tx).await?.try_get("n")?;
        if n > 0 {
            held.push(format!("{n} {what}"));
        }
    }
    Ok(held)
}
