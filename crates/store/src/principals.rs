//! Principals and what they hold: accounts, their bearer tokens (kept only as SHA-256
//! hashes) and role grants on scopes.
//!
//! Invariants kept here: a tenant account only holds roles inside its own tenant; there is
//! always at least one account with `admin` on the platform; a token secret is returned
//! once, at creation, and never stored, logged or audited.

use model::rbac::{Role, RoleOn};
use model::types::{Account, Grant, NewToken, TokenInfo};
use model::{Name, PrincipalName, Scope};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use time::OffsetDateTime;

use crate::audit::NewEvent;
use crate::{parse_ts, ts, Actor, Result, Store, StoreError};

/// Prefix of every token secret, so scanners can recognise leaked Gantry tokens.
pub const TOKEN_PREFIX: &str = "gty_";

/// The principal behind a valid token.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticated {
    pub principal: PrincipalName,
    pub token_id: String,
    pub roles: Vec<RoleOn>,
}

fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

fn parse_principal(s: &str) -> Result<PrincipalName> {
    PrincipalName::parse(s).map_err(|e| StoreError::Corrupt(e.message))
}

fn row_to_account(row: &AnyRow) -> Result<Account> {
    Ok(Account {
        name: parse_principal(&row.try_get::<String, _>("name")?)?,
        description: row.try_get("description")?,
        created_at: parse_ts(&row.try_get::<String, _>("created_at")?)?,
        created_by: row.try_get("created_by")?,
    })
}

fn opt_ts(row: &AnyRow, col: &str) -> Result<Option<OffsetDateTime>> {
    row.try_get::<Option<String>, _>(col)?
        .map(|s| parse_ts(&s))
        .transpose()
}

fn row_to_token(row: &AnyRow) -> Result<TokenInfo> {
    Ok(TokenInfo {
        id: row.try_get("id")?,
        account: parse_principal(&row.try_get::<String, _>("account")?)?,
        description: row.try_get("description")?,
        created_at: parse_ts(&row.try_get::<String, _>("created_at")?)?,
        created_by: row.try_get("created_by")?,
        expires_at: opt_ts(row, "expires_at")?,
        revoked_at: opt_ts(row, "revoked_at")?,
    })
}

fn row_to_grant(row: &AnyRow) -> Result<Grant> {
    let role: String = row.try_get("role")?;
    let scope: String = row.try_get("scope")?;
    Ok(Grant {
        role: Role::parse(&role).map_err(|e| StoreError::Corrupt(e.message))?,
        principal: parse_principal(&row.try_get::<String, _>("principal")?)?,
        scope: Scope::parse(&scope).map_err(|e| StoreError::Corrupt(e.message))?,
        created_at: parse_ts(&row.try_get::<String, _>("created_at")?)?,
        created_by: row.try_get("created_by")?,
    })
}

const ACCOUNT_COLS: &str = "name, description, created_at, created_by";
const TOKEN_COLS: &str = "id, account, description, created_at, created_by, expires_at, revoked_at";
const GRANT_COLS: &str = "role, principal, scope, created_at, created_by";

async fn exists(tx: &mut Transaction<'static, Any>, sql: &str, args: &[&str]) -> Result<bool> {
    let mut q = sqlx::query(sql);
    for a in args {
        q = q.bind(*a);
    }
    Ok(q.fetch_optional(&mut **tx).await?.is_some())
}

/// Number of platform admin grants that would remain after removing those matching `sql`.
async fn platform_admins_left(
    tx: &mut Transaction<'static, Any>,
    removed_sql: &str,
    args: &[&str],
) -> Result<i64> {
    let total: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM grants WHERE role = 'admin' AND scope = 'platform'")
            .fetch_one(&mut **tx)
            .await?
            .try_get("n")?;
    let mut q = sqlx::query(removed_sql);
    for a in args {
        q = q.bind(*a);
    }
    let removed: i64 = q.fetch_one(&mut **tx).await?.try_get("n")?;
    Ok(total - removed)
}

impl Store {
    pub async fn accounts(&self, tenant: Option<&Name>) -> Result<Vec<Account>> {
        let filter = tenant.map(|t| ("tenant", t.to_string()));
        let select = format!("SELECT {ACCOUNT_COLS} FROM accounts");
        let rows = self.rows_where(&select, filter, "name").await?;
        rows.iter().map(row_to_account).collect()
    }

    /// `select`, optionally filtered on one column's value, in `order`.
    async fn rows_where(
        &self,
        select: &str,
        filter: Option<(&str, String)>,
        order: &str,
    ) -> Result<Vec<AnyRow>> {
        Ok(match filter {
            Some((col, v)) => {
                sqlx::query(&format!("{select} WHERE {col} = $1 ORDER BY {order}"))
                    .bind(v)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(&format!("{select} ORDER BY {order}"))
                    .fetch_all(&self.pool)
                    .await?
            }
        })
    }

    pub async fn account(&self, name: &PrincipalName) -> Result<Account> {
        sqlx::query(&format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE name = $1"
        ))
        .bind(name.to_string())
        .fetch_optional(&self.pool)
        .await?
        .map(|r| row_to_account(&r))
        .unwrap_or_else(|| Err(StoreError::NotFound(format!("account {name} not found"))))
    }

    pub async fn create_account(
        &self,
        actor: &Actor,
        name: &PrincipalName,
        description: &str,
    ) -> Result<Account> {
        let mut w = self.begin_write().await?;
        let created_at = self
            .insert_account(&mut w.tx, actor, name, description)
            .await?;
        let account = Account {
            name: name.clone(),
            description: description.to_string(),
            created_at,
            created_by: actor.principal.clone(),
        };
        w.commit_principals(
            actor,
            NewEvent::success("account.create", format!("accounts/{name}"), name.scope()),
        )
        .await?;
        Ok(account)
    }

    async fn insert_account(
        &self,
        tx: &mut Transaction<'static, Any>,
        actor: &Actor,
        name: &PrincipalName,
        description: &str,
    ) -> Result<OffsetDateTime> {
        let now = parse_ts(&ts(self.now()))?;
        if let Some(t) = &name.tenant {
            if !exists(
                tx,
                "SELECT 1 AS x FROM tenants WHERE name = $1",
                &[t.as_str()],
            )
            .await?
            {
                return Err(StoreError::NotFound(format!("tenant {t} not found")));
            }
        }
        let full = name.to_string();
        if exists(tx, "SELECT 1 AS x FROM accounts WHERE name = $1", &[&full]).await? {
            return Err(StoreError::AlreadyExists(format!(
                "account {name} already exists"
            )));
        }
        sqlx::query(
            "INSERT INTO accounts (name, tenant, description, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&full)
        .bind(name.tenant.as_ref().map(|t| t.to_string()))
        .bind(description)
        .bind(ts(now))
        .bind(&actor.principal)
        .execute(&mut **tx)
        .await?;
        Ok(now)
    }

    /// Deletes an account with its tokens and grants.
    pub async fn delete_account(&self, actor: &Actor, name: &PrincipalName) -> Result<()> {
        let mut w = self.begin_write().await?;
        let full = name.to_string();
        if !exists(
            &mut w.tx,
            "SELECT 1 AS x FROM accounts WHERE name = $1",
            &[&full],
        )
        .await?
        {
            return Err(StoreError::NotFound(format!("account {name} not found")));
        }
        let holds_admin = exists(
            &mut w.tx,
            "SELECT 1 AS x FROM grants WHERE role = 'admin' AND scope = 'platform' AND principal = $1",
            &[&full],
        )
        .await?;
        if holds_admin {
            let left = platform_admins_left(
                &mut w.tx,
                "SELECT COUNT(*) AS n FROM grants WHERE role = 'admin' AND scope = 'platform' AND principal = $1",
                &[&full],
            )
            .await?;
            if left < 1 {
                return Err(StoreError::Conflict(format!(
                    "account {name} holds the last platform admin role; grant admin on platform to another account first"
                )));
            }
        }
        for sql in [
            "DELETE FROM grants WHERE principal = $1",
            "DELETE FROM tokens WHERE account = $1",
            "DELETE FROM accounts WHERE name = $1",
        ] {
            sqlx::query(sql).bind(&full).execute(&mut *w.tx).await?;
        }
        w.commit_principals(
            actor,
            NewEvent::success("account.delete", format!("accounts/{name}"), name.scope()),
        )
        .await
    }

    /// Creates a token for `account`. `ttl` of `None` means it never expires (only the
    /// bootstrap token; the API always passes a lifetime).
    pub async fn create_token(
        &self,
        actor: &Actor,
        account: &PrincipalName,
        ttl: Option<time::Duration>,
        description: &str,
    ) -> Result<NewToken> {
        let mut w = self.begin_write().await?;
        let full = account.to_string();
        if !exists(
            &mut w.tx,
            "SELECT 1 AS x FROM accounts WHERE name = $1",
            &[&full],
        )
        .await?
        {
            return Err(StoreError::NotFound(format!("account {account} not found")));
        }
        let new = self
            .insert_token(&mut w.tx, actor, account, ttl, description)
            .await?;
        w.commit_principals(
            actor,
            NewEvent::success(
                "token.create",
                format!("tokens/{}", new.info.id),
                account.scope(),
            ),
        )
        .await?;
        Ok(new)
    }

    async fn insert_token(
        &self,
        tx: &mut Transaction<'static, Any>,
        actor: &Actor,
        account: &PrincipalName,
        ttl: Option<time::Duration>,
        description: &str,
    ) -> Result<NewToken> {
        let secret = format!("{TOKEN_PREFIX}{}", random_hex(32));
        let now = parse_ts(&ts(self.now()))?;
        let info = TokenInfo {
            id: format!("tok_{}", random_hex(8)),
            account: account.clone(),
            description: description.to_string(),
            created_at: now,
            created_by: actor.principal.clone(),
            expires_at: ttl.map(|d| now + d),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO tokens (id, account, hash, description, created_at, created_by, expires_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
        )
        .bind(&info.id)
        .bind(account.to_string())
        .bind(hash_token(&secret))
        .bind(description)
        .bind(ts(now))
        .bind(&info.created_by)
        .bind(info.expires_at.map(ts))
        .execute(&mut **tx)
        .await?;
        Ok(NewToken {
            token: secret,
            info,
        })
    }

    pub async fn tokens(&self, account: Option<&PrincipalName>) -> Result<Vec<TokenInfo>> {
        let filter = account.map(|a| ("account", a.to_string()));
        let select = format!("SELECT {TOKEN_COLS} FROM tokens");
        let rows = self.rows_where(&select, filter, "created_at, id").await?;
        rows.iter().map(row_to_token).collect()
    }

    pub async fn token(&self, id: &str) -> Result<TokenInfo> {
        sqlx::query(&format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| row_to_token(&r))
            .unwrap_or_else(|| Err(StoreError::NotFound(format!("token {id} not found"))))
    }

    pub async fn revoke_token(&self, actor: &Actor, id: &str) -> Result<TokenInfo> {
        let mut w = self.begin_write().await?;
        let row = sqlx::query(&format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *w.tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("token {id} not found")))?;
        let mut info = row_to_token(&row)?;
        if info.revoked_at.is_some() {
            return Err(StoreError::Conflict(format!(
                "token {id} is already revoked"
            )));
        }
        let now = parse_ts(&ts(self.now()))?;
        sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2")
            .bind(ts(now))
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        info.revoked_at = Some(now);
        w.commit_principals(
            actor,
            NewEvent::success("token.revoke", format!("tokens/{id}"), info.account.scope()),
        )
        .await?;
        Ok(info)
    }

    /// Resolves a bearer token to its principal and roles. `None` for unknown, expired or
    /// revoked tokens (the caller does not learn which).
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Authenticated>> {
        if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 128 {
            return Ok(None);
        }
        let hash = hash_token(secret);
        let now = self.now();
        if let Some(who) = self.auth_cache.get(&hash, now) {
            return Ok(Some(who));
        }
        let generation = self.auth_cache.generation();
        // One statement on a cache miss: the token and its account's grants together (one
        // row per grant; a single row with NULL role when the account holds none).
        let rows = sqlx::query(
            "SELECT t.id, t.account, t.description, t.created_at, t.created_by, t.expires_at, \
             t.revoked_at, g.role AS role, g.scope AS scope \
             FROM tokens t LEFT JOIN grants g ON g.principal = t.account \
             WHERE t.hash = $1 ORDER BY g.scope, g.role",
        )
        .bind(&hash)
        .fetch_all(&self.pool)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let info = row_to_token(first)?;
        if info.revoked_at.is_some() || info.expires_at.is_some_and(|e| e <= now) {
            return Ok(None);
        }
        let mut roles = Vec::new();
        for row in &rows {
            let (role, scope): (Option<String>, Option<String>) =
                (row.try_get("role")?, row.try_get("scope")?);
            if let (Some(role), Some(scope)) = (role, scope) {
                roles.push(RoleOn {
                    role: Role::parse(&role).map_err(|e| StoreError::Corrupt(e.message))?,
                    scope: Scope::parse(&scope).map_err(|e| StoreError::Corrupt(e.message))?,
                });
            }
        }
        let who = Authenticated {
            principal: info.account,
            token_id: info.id,
            roles,
        };
        self.auth_cache
            .put(hash, generation, info.expires_at, who.clone());
        Ok(Some(who))
    }

    pub async fn roles_of(&self, principal: &PrincipalName) -> Result<Vec<RoleOn>> {
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLS} FROM grants WHERE principal = $1 ORDER BY scope, role"
        ))
        .bind(principal.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                row_to_grant(r).map(|g| RoleOn {
                    role: g.role,
                    scope: g.scope,
                })
            })
            .collect()
    }

    pub async fn grants(&self) -> Result<Vec<Grant>> {
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLS} FROM grants ORDER BY scope, principal, role"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_grant).collect()
    }

    pub async fn grant(
        &self,
        actor: &Actor,
        role: Role,
        principal: &PrincipalName,
        scope: &Scope,
    ) -> Result<Grant> {
        let mut w = self.begin_write().await?;
        let created_at = self
            .insert_grant(&mut w.tx, actor, role, principal, scope)
            .await?;
        let mut ev = NewEvent::success(
            "role.grant",
            format!("grants/{role}/{principal}/{scope}"),
            scope.clone(),
        );
        ev.detail = format!("role={role} principal={principal}");
        w.commit_principals(actor, ev).await?;
        Ok(Grant {
            role,
            principal: principal.clone(),
            scope: scope.clone(),
            created_at,
            created_by: actor.principal.clone(),
        })
    }

    async fn insert_grant(
        &self,
        tx: &mut Transaction<'static, Any>,
        actor: &Actor,
        role: Role,
        principal: &PrincipalName,
        scope: &Scope,
    ) -> Result<OffsetDateTime> {
        let now = parse_ts(&ts(self.now()))?;
        let full = principal.to_string();
        if !exists(tx, "SELECT 1 AS x FROM accounts WHERE name = $1", &[&full]).await? {
            return Err(StoreError::NotFound(format!(
                "account {principal} not found"
            )));
        }
        match scope {
            Scope::Platform => {}
            Scope::Tenant(t) => {
                if !exists(
                    tx,
                    "SELECT 1 AS x FROM tenants WHERE name = $1",
                    &[t.as_str()],
                )
                .await?
                {
                    return Err(StoreError::NotFound(format!("tenant {t} not found")));
                }
            }
            Scope::Environment(t, e) => {
                let sql = "SELECT 1 AS x FROM environments WHERE tenant = $1 AND name = $2";
                if !exists(tx, sql, &[t.as_str(), e.as_str()]).await? {
                    return Err(StoreError::NotFound(format!(
                        "environment {t}/{e} not found"
                    )));
                }
            }
        }
        if let Some(home) = &principal.tenant {
            if scope.tenant() != Some(home) {
                return Err(StoreError::Unprocessable(format!(
                    "account {principal} belongs to tenant {home} and can only hold roles inside it, not on {scope}"
                )));
            }
        }
        let scope_s = scope.to_string();
        let sql = "SELECT 1 AS x FROM grants WHERE role = $1 AND principal = $2 AND scope = $3";
        if exists(tx, sql, &[role.as_str(), &full, &scope_s]).await? {
            return Err(StoreError::AlreadyExists(format!(
                "{principal} already holds {role} on {scope}"
            )));
        }
        sqlx::query(
            "INSERT INTO grants (role, principal, scope, tenant, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(role.as_str())
        .bind(&full)
        .bind(&scope_s)
        .bind(scope.tenant().map(|t| t.to_string()))
        .bind(ts(now))
        .bind(&actor.principal)
        .execute(&mut **tx)
        .await?;
        Ok(now)
    }

    pub async fn revoke(
        &self,
        actor: &Actor,
        role: Role,
        principal: &PrincipalName,
        scope: &Scope,
    ) -> Result<()> {
        let mut w = self.begin_write().await?;
        let (full, scope_s) = (principal.to_string(), scope.to_string());
        let args = [role.as_str(), full.as_str(), scope_s.as_str()];
        let sql = "SELECT 1 AS x FROM grants WHERE role = $1 AND principal = $2 AND scope = $3";
        if !exists(&mut w.tx, sql, &args).await? {
            return Err(StoreError::NotFound(format!(
                "{principal} does not hold {role} on {scope}"
            )));
        }
        if role == Role::Admin && *scope == Scope::Platform {
            let left = platform_admins_left(
                &mut w.tx,
                "SELECT COUNT(*) AS n FROM grants WHERE role = 'admin' AND scope = 'platform' AND principal = $1",
                &[&full],
            )
            .await?;
            if left < 1 {
                return Err(StoreError::Conflict(
                    "this is the last platform admin role; grant it to another account first"
                        .into(),
                ));
            }
        }
        sqlx::query("DELETE FROM grants WHERE role = $1 AND principal = $2 AND scope = $3")
            .bind(args[0])
            .bind(args[1])
            .bind(args[2])
            .execute(&mut *w.tx)
            .await?;
        let mut ev = NewEvent::success(
            "role.revoke",
            format!("grants/{role}/{principal}/{scope}"),
            scope.clone(),
        );
        ev.detail = format!("role={role} principal={principal}");
        w.commit_principals(actor, ev).await
    }

    /// On an empty store, creates the platform account `admin` with `admin` on the platform
    /// and a token that does not expire, and returns that token's secret. Returns `None`
    /// when any account already exists.
    pub async fn bootstrap(&self) -> Result<Option<NewToken>> {
        let mut w = self.begin_write().await?;
        let any = sqlx::query("SELECT 1 AS x FROM accounts LIMIT 1")
            .fetch_optional(&mut *w.tx)
            .await?;
        if any.is_some() {
            return Ok(None);
        }
        let actor = Actor::system();
        let admin = PrincipalName::parse("admin").map_err(|e| StoreError::Corrupt(e.message))?;
        self.insert_account(
            &mut w.tx,
            &actor,
            &admin,
            "first administrator, created by gantry up",
        )
        .await?;
        self.insert_grant(&mut w.tx, &actor, Role::Admin, &admin, &Scope::Platform)
            .await?;
        let token = self
            .insert_token(&mut w.tx, &actor, &admin, None, "bootstrap token")
            .await?;
        let mut ev = NewEvent::success(
            "platform.bootstrap",
            "accounts/admin".into(),
            Scope::Platform,
        );
        ev.detail = format!("account=admin role=admin token={}", token.info.id);
        w.commit_principals(&actor, ev).await?;
        Ok(Some(token))
    }

    pub async fn counts(&self) -> Result<model::types::Counts> {
        let mut n = [0i64; 6];
        for (i, table) in [
            "tenants",
            "environments",
            "accounts",
            "tokens",
            "grants",
            "audit_events",
        ]
        .iter()
        .enumerate()
        {
            n[i] = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
        }
        Ok(model::types::Counts {
            tenants: n[0],
            environments: n[1],
            accounts: n[2],
            tokens: n[3],
            grants: n[4],
            audit_events: n[5],
        })
    }
}
