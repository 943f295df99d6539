//! Storage of secrets: metadata, encrypted versions (`gk1` ciphertexts under the secret's
//! own key) and secret requests. Values arrive here already encrypted; this module never
//! sees plaintext and never writes a value into an audit event.

use model::kms::{
    ContentType, RequestState, SecretInfo, SecretRequest, SecretState, SecretVersionInfo,
};
use model::Scope;
use time::OffsetDateTime;

use crate::audit::NewEvent;
use crate::db::{self, Cols, Conn};
use crate::keyring::{bind_key, insert_key, row_to_key_p, KeyRecord, KEY_COLS, KEY_COLS_K};
use crate::writer::{BoxFut, Change};
use crate::{parse_ts, ts, Actor, Result, Store, StoreError};

/// A secret version as stored.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub info: SecretVersionInfo,
    /// The `gk1` ciphertext, base64.
    pub ciphertext: String,
}

/// Which version `Store::secret_with_version` reads.
#[derive(Debug, Clone, Copy)]
pub enum VersionOf {
    Current,
    Previous,
    Number(u32),
}

/// A new version to store.
pub struct NewVersion<'a> {
    pub ciphertext: &'a str,
    pub content_type: ContentType,
    pub size: u64,
    pub key_version: u32,
}

const SECRET_COLS: &str =
    "scope, name, key_id, state, current_version, previous_version, description, \
    created_at, created_by, updated_at, updated_by, deleted_at, purge_at";
const VERSION_COLS: &str =
    "version, ciphertext, content_type, size, key_version, created_at, created_by";
const REQUEST_COLS: &str =
    "id, scope, name, description, state, requested_by, requested_at, closed_by, closed_at";

fn opt_time(row: &impl Cols, col: &str) -> Result<Option<OffsetDateTime>> {
    row.opt_text(col)?.map(|s| parse_ts(&s)).transpose()
}

fn u32_of(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} out of range")))
}

fn row_to_secret(row: &impl Cols) -> Result<(SecretInfo, String)> {
    let scope = row.text("scope")?;
    let name = row.text("name")?;
    let state = match row.text("state")?.as_str() {
        "active" => SecretState::Active,
        "deleted" => SecretState::Deleted,
        s => return Err(StoreError::Corrupt(format!("unknown secret state {s:?}"))),
    };
    let info = SecretInfo {
        name: format!("{scope}/{name}"),
        state,
        current_version: u32_of(row.int("current_version")?, "version")?,
        previous_version: row
            .opt_int("previous_version")?
            .map(|v| u32_of(v, "version"))
            .transpose()?,
        description: row.text("description")?,
        created_at: parse_ts(&row.text("created_at")?)?,
        created_by: row.text("created_by")?,
        updated_at: parse_ts(&row.text("updated_at")?)?,
        updated_by: row.text("updated_by")?,
        deleted_at: opt_time(row, "deleted_at")?,
        purge_at: opt_time(row, "purge_at")?,
    };
    Ok((info, row.text("key_id")?))
}

fn row_to_version(row: &impl Cols, current: u32, previous: Option<u32>) -> Result<StoredVersion> {
    row_to_version_p(row, "", current, previous)
}

/// `row_to_version` for columns named with `prefix` (in a join).
fn row_to_version_p(
    row: &impl Cols,
    prefix: &str,
    current: u32,
    previous: Option<u32>,
) -> Result<StoredVersion> {
    let row = &db::Prefixed { row, prefix };
    let version = u32_of(row.int("version")?, "version")?;
    let ct = row.text("content_type")?;
    let stage = if version == current {
        Some("current".to_string())
    } else if Some(version) == previous {
        Some("previous".to_string())
    } else {
        None
    };
    Ok(StoredVersion {
        info: SecretVersionInfo {
            version,
            stage,
            content_type: ContentType::parse(&ct)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown content type {ct:?}")))?,
            size: row.int("size")? as u64,
            key_version: u32_of(row.int("key_version")?, "key version")?,
            created_at: parse_ts(&row.text("created_at")?)?,
            created_by: row.text("created_by")?,
        },
        ciphertext: row.text("ciphertext")?,
    })
}

fn row_to_request(row: &impl Cols) -> Result<SecretRequest> {
    let scope = row.text("scope")?;
    let name = row.text("name")?;
    let state = match row.text("state")?.as_str() {
        "open" => RequestState::Open,
        "fulfilled" => RequestState::Fulfilled,
        "cancelled" => RequestState::Cancelled,
        s => return Err(StoreError::Corrupt(format!("unknown request state {s:?}"))),
    };
    Ok(SecretRequest {
        id: row.text("id")?,
        secret: format!("{scope}/{name}"),
        description: row.text("description")?,
        state,
        requested_by: row.text("requested_by")?,
        requested_at: parse_ts(&row.text("requested_at")?)?,
        closed_by: row.opt_text("closed_by")?,
        closed_at: opt_time(row, "closed_at")?,
    })
}

fn resource(scope: &Scope, name: &str) -> String {
    format!("secrets/{scope}/{name}")
}

async fn fetch_secret(
    conn: &mut Conn<'_>,
    scope: &str,
    name: &str,
) -> Result<Option<(SecretInfo, String)>> {
    let sql = format!("SELECT {SECRET_COLS} FROM secrets WHERE scope = $1 AND name = $2");
    conn.fetch_optional(db::query(&sql).bind(scope).bind(name))
        .await?
        .map(|r| row_to_secret(&r))
        .transpose()
}

/// A put of a secret version, run by the group-commit writer.
struct PutSecret {
    principal: String,
    scope: Scope,
    name: String,
    ciphertext: String,
    content_type: ContentType,
    size: u64,
    key_version: u32,
    if_version: Option<u32>,
    description: Option<String>,
    new_key: Option<(KeyRecord, String)>,
    now: String,
}

impl Change for PutSecret {
    type Output = SecretInfo;

    fn apply<'c>(self, conn: &'c mut Conn<'_>) -> BoxFut<'c, Result<(SecretInfo, NewEvent)>> {
        Box::pin(async move {
            // The common cases first, in as few statements as possible: each first statement
            // makes its checks in its WHERE clause and changes nothing when one fails; then
            // the checks are made one by one to find which (`put_checked`).
            let fast = match (&self.new_key, self.if_version) {
                (Some(_), Some(0)) => self.create_fast(conn).await?,
                (None, Some(n)) if n > 0 => self.update_fast(conn).await?,
                _ => None,
            };
            let (info, v) = match fast {
                Some(done) => done,
                None => self.put_checked(conn).await?,
            };
            // Putting the value fulfils open requests for this secret.
            conn.execute(
                db::query(
                    "UPDATE secret_requests SET state = 'fulfilled', closed_by = $1, closed_at = $2 \
                     WHERE scope = $3 AND name = $4 AND state = 'open'",
                )
                .bind(&self.principal)
                .bind(&self.now)
                .bind(self.scope.to_string())
                .bind(&self.name),
            )
            .await?;
            let mut ev =
                NewEvent::success("secret.put", resource(&self.scope, &self.name), self.scope);
            ev.detail = format!("version={v}");
            Ok((info, ev))
        })
    }
}

impl PutSecret {
    async fn insert_version(&self, conn: &mut Conn<'_>, v: u32) -> Result<()> {
        let sql = format!(
            "INSERT INTO secret_versions (scope, name, {VERSION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
        conn.execute(
            db::query(&sql)
                .bind(self.scope.to_string())
                .bind(&self.name)
                .bind(v as i64)
                .bind(&self.ciphertext)
                .bind(self.content_type.as_str())
                .bind(self.size as i64)
                .bind(self.key_version as i64)
                .bind(&self.now)
                .bind(&self.principal),
        )
        .await?;
        Ok(())
    }

    /// A new secret: its key inserted only if the environment exists and neither the key
    /// nor the secret does; `None` (nothing changed) otherwise.
    async fn create_fast(&self, conn: &mut Conn<'_>) -> Result<Option<(SecretInfo, u32)>> {
        let (Some((key, wrapped)), Scope::Environment(t, e)) = (&self.new_key, &self.scope) else {
            return Ok(None);
        };
        // $3 is the key's scope, which must be the secret's.
        if key.scope != self.scope {
            return Err(StoreError::Corrupt(
                "a secret's key must live in the secret's scope".into(),
            ));
        }
        let sql = format!(
            "INSERT INTO keys ({KEY_COLS}) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 \
             FROM environments WHERE tenant = $15 AND name = $16 \
             AND NOT EXISTS (SELECT 1 FROM keys WHERE id = $1) \
             AND NOT EXISTS (SELECT 1 FROM secrets WHERE scope = $3 AND name = $17)"
        );
        let inserted = conn
            .execute(
                bind_key(db::query(&sql), key)
                    .bind(t.as_str())
                    .bind(e.as_str())
                    .bind(&self.name),
            )
            .await?;
        if inserted == 0 {
            return Ok(None);
        }
        conn.execute(
            db::query(
                "INSERT INTO key_versions (key_id, version, wrapped, created_at) VALUES ($1, 1, $2, $3)",
            )
            .bind(&key.id)
            .bind(wrapped.as_str())
            .bind(ts(key.created_at)),
        )
        .await?;
        let info = self.insert_secret(conn, &key.id).await?;
        Ok(Some((info, 1)))
    }

    async fn insert_secret(&self, conn: &mut Conn<'_>, key_id: &str) -> Result<SecretInfo> {
        let description = self.description.as_deref().unwrap_or("");
        let sql = format!(
            "INSERT INTO secrets ({SECRET_COLS}) VALUES ($1, $2, $3, 'active', 1, NULL, $4, $5, $6, $5, $6, NULL, NULL)"
        );
        conn.execute(
            db::query(&sql)
                .bind(self.scope.to_string())
                .bind(&self.name)
                .bind(key_id)
                .bind(description)
                .bind(&self.now)
                .bind(&self.principal),
        )
        .await?;
        self.insert_version(conn, 1).await?;
        let at = parse_ts(&self.now)?;
        Ok(SecretInfo {
            name: format!("{}/{}", self.scope, self.name),
            state: SecretState::Active,
            current_version: 1,
            previous_version: None,
            description: description.to_string(),
            created_at: at,
            created_by: self.principal.clone(),
            updated_at: at,
            updated_by: self.principal.clone(),
            deleted_at: None,
            purge_at: None,
        })
    }

    /// A new version of an active secret at version `if_version`, the secret as it now
    /// stands returned by the update itself; `None` (nothing changed) otherwise.
    async fn update_fast(&self, conn: &mut Conn<'_>) -> Result<Option<(SecretInfo, u32)>> {
        let expected = self.if_version.unwrap_or(0);
        let sql = format!(
            "UPDATE secrets SET current_version = current_version + 1, \
             previous_version = current_version, updated_at = $1, updated_by = $2, \
             description = COALESCE($3, description) \
             WHERE scope = $4 AND name = $5 AND state = 'active' AND current_version = $6 \
             RETURNING {SECRET_COLS}"
        );
        let row = conn
            .fetch_optional(
                db::query(&sql)
                    .bind(&self.now)
                    .bind(&self.principal)
                    .bind(self.description.clone())
                    .bind(self.scope.to_string())
                    .bind(&self.name)
                    .bind(expected as i64),
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (info, _) = row_to_secret(&row)?;
        let v = info.current_version;
        self.insert_version(conn, v).await?;
        Ok(Some((info, v)))
    }

    /// Every check one by one, then the change: the path that names the check that failed.
    async fn put_checked(&self, conn: &mut Conn<'_>) -> Result<(SecretInfo, u32)> {
        let (scope, name) = (&self.scope, self.name.as_str());
        let scope_s = scope.to_string();
        let existing = fetch_secret(conn, &scope_s, name).await?;
        let current = existing
            .as_ref()
            .map(|(i, _)| i.current_version)
            .unwrap_or(0);
        if let Some(expected) = self.if_version {
            if expected != current {
                return Err(StoreError::VersionMismatch(format!(
                    "secret {scope}/{name} is at version {current}, not {expected}"
                )));
            }
        }
        if let Some((info, _)) = &existing {
            if info.state == SecretState::Deleted {
                return Err(StoreError::Conflict(format!(
                    "secret {scope}/{name} is deleted; restore it first"
                )));
            }
        }
        let v = current + 1;
        match existing {
            None => {
                let (key, wrapped) = self
                    .new_key
                    .as_ref()
                    .ok_or_else(|| StoreError::Corrupt("a new secret needs its key".into()))?;
                insert_key(conn, key, wrapped).await?;
                let info = self.insert_secret(conn, &key.id).await?;
                Ok((info, v))
            }
            Some((old, _)) => {
                conn.execute(
                    db::query(
                        "UPDATE secrets SET current_version = $1, previous_version = $2, updated_at = $3, \
                         updated_by = $4, description = COALESCE($5, description) WHERE scope = $6 AND name = $7",
                    )
                    .bind(v as i64)
                    .bind(old.current_version as i64)
                    .bind(&self.now)
                    .bind(&self.principal)
                    .bind(self.description.clone())
                    .bind(scope_s.as_str())
                    .bind(name),
                )
                .await?;
                self.insert_version(conn, v).await?;
                let at = parse_ts(&self.now)?;
                let info = SecretInfo {
                    current_version: v,
                    previous_version: Some(old.current_version),
                    description: self.description.clone().unwrap_or(old.description),
                    updated_at: at,
                    updated_by: self.principal.clone(),
                    ..old
                };
                Ok((info, v))
            }
        }
    }
}

impl Store {
    /// A secret's metadata and the id of its key.
    pub async fn secret(&self, scope: &Scope, name: &str) -> Result<(SecretInfo, String)> {
        sqlx::query(&format!(
            "SELECT {SECRET_COLS} FROM secrets WHERE scope = $1 AND name = $2"
        ))
        .bind(scope.to_string())
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| row_to_secret(&r))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("secret {scope}/{name} not found")))
    }

    /// A secret's metadata with its key's record, in one statement; `None` when the secret
    /// does not exist.
    pub async fn secret_and_key(
        &self,
        scope: &Scope,
        name: &str,
    ) -> Result<Option<(SecretInfo, KeyRecord)>> {
        read_with!(self, |c| secret_and_key_on(c, scope, name))
    }

    pub async fn secrets(&self, scope: &Scope) -> Result<Vec<SecretInfo>> {
        let rows = sqlx::query(&format!(
            "SELECT {SECRET_COLS} FROM secrets WHERE scope = $1 ORDER BY name"
        ))
        .bind(scope.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| row_to_secret(r).map(|s| s.0)).collect()
    }

    /// Every version of a secret, newest first.
    pub async fn secret_versions(&self, scope: &Scope, name: &str) -> Result<Vec<StoredVersion>> {
        let (info, _) = self.secret(scope, name).await?;
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLS} FROM secret_versions WHERE scope = $1 AND name = $2 ORDER BY version DESC"
        ))
        .bind(scope.to_string())
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| row_to_version(r, info.current_version, info.previous_version))
            .collect()
    }

    /// Stores a new version of a secret, creating the secret (and its key, `new_key`) on the
    /// first put. `if_version` is a check-and-set on the current version (0: must not exist).
    ///
    /// Group-committed (`Store::change`): concurrent puts share one transaction and one
    /// fsync, each in its own savepoint with its own check-and-set result.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_secret(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        version: NewVersion<'_>,
        if_version: Option<u32>,
        description: Option<&str>,
        new_key: Option<(&KeyRecord, &str)>,
    ) -> Result<SecretInfo> {
        let put = PutSecret {
            principal: actor.principal.clone(),
            scope: scope.clone(),
            name: name.to_string(),
            ciphertext: version.ciphertext.to_string(),
            content_type: version.content_type,
            size: version.size,
            key_version: version.key_version,
            if_version,
            description: description.map(str::to_string),
            new_key: new_key.map(|(k, w)| (k.clone(), w.to_string())),
            now: ts(self.now()),
        };
        self.change(actor, put).await
    }

    /// A secret (with its key id) and one of its versions, in one statement that also
    /// checks the environment: `NotFound` names the environment or the secret that is
    /// missing; the version is `None` when the secret has no such version.
    pub async fn secret_with_version(
        &self,
        scope: &Scope,
        name: &str,
        which: VersionOf,
    ) -> Result<(SecretInfo, String, Option<StoredVersion>)> {
        read_with!(self, |c| secret_with_version_on(c, scope, name, which))
    }

    /// One version (by number) of a secret.
    /// `info` is the secret's metadata the caller already read (it gives the stages).
    pub async fn secret_version(
        &self,
        scope: &Scope,
        name: &str,
        info: &SecretInfo,
        version: u32,
    ) -> Result<StoredVersion> {
        sqlx::query(&format!(
            "SELECT {VERSION_COLS} FROM secret_versions WHERE scope = $1 AND name = $2 AND version = $3"
        ))
        .bind(scope.to_string())
        .bind(name)
        .bind(version as i64)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| row_to_version(&r, info.current_version, info.previous_version))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("secret {scope}/{name} has no version {version}")))
    }

    /// Marks a secret deleted; it can be restored until `purge_at`.
    pub async fn delete_secret(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        purge_at: OffsetDateTime,
    ) -> Result<()> {
        self.set_secret_state(actor, scope, name, true, Some(purge_at))
            .await
    }

    pub async fn restore_secret(&self, actor: &Actor, scope: &Scope, name: &str) -> Result<()> {
        self.set_secret_state(actor, scope, name, false, None).await
    }

    async fn set_secret_state(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        delete: bool,
        purge_at: Option<OffsetDateTime>,
    ) -> Result<()> {
        let mut w = self.begin_write().await?;
        let scope_s = scope.to_string();
        let (info, _) = fetch_secret(&mut Conn::Any(&mut w.tx), &scope_s, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("secret {scope}/{name} not found")))?;
        let is_deleted = info.state == SecretState::Deleted;
        if delete == is_deleted {
            return Err(StoreError::Conflict(format!(
                "secret {scope}/{name} is {}",
                if is_deleted {
                    "already deleted"
                } else {
                    "not deleted"
                }
            )));
        }
        let now = self.now();
        sqlx::query("UPDATE secrets SET state = $1, deleted_at = $2, purge_at = $3, updated_at = $4, updated_by = $5 WHERE scope = $6 AND name = $7")
            .bind(if delete { "deleted" } else { "active" })
            .bind(delete.then(|| ts(now)))
            .bind(purge_at.map(ts))
            .bind(ts(now))
            .bind(&actor.principal)
            .bind(&scope_s)
            .bind(name)
            .execute(&mut *w.tx)
            .await?;
        let action = if delete {
            "secret.delete"
        } else {
            "secret.restore"
        };
        let mut ev = NewEvent::success(action, resource(scope, name), scope.clone());
        if let Some(p) = purge_at {
            ev.detail = format!("purge_at={}", ts(p));
        }
        w.commit(actor, ev).await
    }

    /// Destroys a secret for good: its versions, its row and its key's material.
    pub async fn destroy_secret(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        detail: String,
    ) -> Result<()> {
        let mut w = self.begin_write().await?;
        let scope_s = scope.to_string();
        let (_, key_id) = fetch_secret(&mut Conn::Any(&mut w.tx), &scope_s, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("secret {scope}/{name} not found")))?;
        for sql in [
            "DELETE FROM secret_versions WHERE scope = $1 AND name = $2",
            "DELETE FROM secrets WHERE scope = $1 AND name = $2",
        ] {
            sqlx::query(sql)
                .bind(&scope_s)
                .bind(name)
                .execute(&mut *w.tx)
                .await?;
        }
        for sql in [
            "DELETE FROM key_versions WHERE key_id = $1",
            "DELETE FROM keys WHERE id = $1",
        ] {
            sqlx::query(sql).bind(&key_id).execute(&mut *w.tx).await?;
        }
        let mut ev = NewEvent::success("secret.destroy", resource(scope, name), scope.clone());
        ev.detail = detail;
        w.commit(actor, ev).await
    }

    /// Deleted secrets whose recovery window has ended.
    pub async fn secrets_due_purge(&self, now: OffsetDateTime) -> Result<Vec<SecretInfo>> {
        let rows = sqlx::query(&format!(
            "SELECT {SECRET_COLS} FROM secrets WHERE state = 'deleted' AND purge_at <= $1 ORDER BY scope, name"
        ))
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| row_to_secret(r).map(|s| s.0)).collect()
    }

    /// Replaces the ciphertexts of versions (rewrap under the newest key version).
    pub async fn rewrap_secret(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        rewrapped: &[(u32, String, u32)],
    ) -> Result<()> {
        let mut w = self.begin_write().await?;
        let scope_s = scope.to_string();
        for (v, ct, kv) in rewrapped {
            sqlx::query("UPDATE secret_versions SET ciphertext = $1, key_version = $2 WHERE scope = $3 AND name = $4 AND version = $5")
                .bind(ct)
                .bind(*kv as i64)
                .bind(&scope_s)
                .bind(name)
                .bind(*v as i64)
                .execute(&mut *w.tx)
                .await?;
        }
        let mut ev = NewEvent::success("secret.rewrap", resource(scope, name), scope.clone());
        ev.detail = format!("versions={}", rewrapped.len());
        w.commit(actor, ev).await
    }

    // ---- requests ----

    pub async fn create_secret_request(
        &self,
        actor: &Actor,
        id: &str,
        scope: &Scope,
        name: &str,
        description: &str,
    ) -> Result<SecretRequest> {
        let mut w = self.begin_write().await?;
        if let Scope::Environment(t, e) = scope {
            let env =
                sqlx::query("SELECT 1 AS x FROM environments WHERE tenant = $1 AND name = $2")
                    .bind(t.as_str())
                    .bind(e.as_str())
                    .fetch_optional(&mut *w.tx)
                    .await?;
            if env.is_none() {
                return Err(StoreError::NotFound(format!(
                    "environment {scope} not found"
                )));
            }
        }
        let now = self.now();
        sqlx::query(&format!("INSERT INTO secret_requests ({REQUEST_COLS}) VALUES ($1, $2, $3, $4, 'open', $5, $6, NULL, NULL)"))
            .bind(id)
            .bind(scope.to_string())
            .bind(name)
            .bind(description)
            .bind(&actor.principal)
            .bind(ts(now))
            .execute(&mut *w.tx)
            .await?;
        let mut ev = NewEvent::success(
            "secret-request.create",
            format!("secret-requests/{id}"),
            scope.clone(),
        );
        ev.detail = format!("secret={name}");
        w.commit(actor, ev).await?;
        Ok(SecretRequest {
            id: id.to_string(),
            secret: format!("{scope}/{name}"),
            description: description.to_string(),
            state: RequestState::Open,
            requested_by: actor.principal.clone(),
            requested_at: parse_ts(&ts(now))?,
            closed_by: None,
            closed_at: None,
        })
    }

    pub async fn secret_requests(&self, scope: &Scope) -> Result<Vec<SecretRequest>> {
        let rows = sqlx::query(&format!(
            "SELECT {REQUEST_COLS} FROM secret_requests WHERE scope = $1 ORDER BY requested_at, id"
        ))
        .bind(scope.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_request).collect()
    }

    pub async fn secret_request(&self, id: &str) -> Result<SecretRequest> {
        sqlx::query(&format!(
            "SELECT {REQUEST_COLS} FROM secret_requests WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| row_to_request(&r))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("secret request {id} not found")))
    }

    pub async fn cancel_secret_request(&self, actor: &Actor, id: &str) -> Result<SecretRequest> {
        let mut w = self.begin_write().await?;
        let mut req = sqlx::query(&format!(
            "SELECT {REQUEST_COLS} FROM secret_requests WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *w.tx)
        .await?
        .map(|r| row_to_request(&r))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("secret request {id} not found")))?;
        if req.state != RequestState::Open {
            return Err(StoreError::Conflict(format!(
                "secret request {id} is not open"
            )));
        }
        let now = self.now();
        sqlx::query("UPDATE secret_requests SET state = 'cancelled', closed_by = $1, closed_at = $2 WHERE id = $3")
            .bind(&actor.principal)
            .bind(ts(now))
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        req.state = RequestState::Cancelled;
        req.closed_by = Some(actor.principal.clone());
        req.closed_at = Some(parse_ts(&ts(now))?);
        let scope = req.secret.rsplit_once('/').map(|(s, _)| s).unwrap_or("");
        let scope = Scope::parse(scope).map_err(|e| StoreError::Corrupt(e.message))?;
        w.commit(
            actor,
            NewEvent::success(
                "secret-request.cancel",
                format!("secret-requests/{id}"),
                scope,
            ),
        )
        .await?;
        Ok(req)
    }
}

/// `Store::secret_and_key` on `conn`.
async fn secret_and_key_on(
    conn: &mut Conn<'_>,
    scope: &Scope,
    name: &str,
) -> Result<Option<(SecretInfo, KeyRecord)>> {
    let cols = SECRET_COLS
        .split(", ")
        .map(|c| format!("s.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {cols}, {KEY_COLS_K} FROM secrets s LEFT JOIN keys k ON k.id = s.key_id \
         WHERE s.scope = $1 AND s.name = $2"
    );
    conn.fetch_optional(db::query(&sql).bind(scope.to_string()).bind(name))
        .await?
        .map(|r| {
            let (info, key_id) = row_to_secret(&r)?;
            if r.opt_text("k_id")?.is_none() {
                return Err(StoreError::NotFound(format!("key {key_id} not found")));
            }
            Ok((info, row_to_key_p(&r, "k_")?))
        })
        .transpose()
}

/// `Store::secret_with_version` on `conn`.
async fn secret_with_version_on(
    conn: &mut Conn<'_>,
    scope: &Scope,
    name: &str,
    which: VersionOf,
) -> Result<(SecretInfo, String, Option<StoredVersion>)> {
    let Scope::Environment(t, e) = scope else {
        return Err(StoreError::NotFound(format!(
            "secret {scope}/{name} not found"
        )));
    };
    let sel = match which {
        VersionOf::Current => "s.current_version",
        VersionOf::Previous => "s.previous_version",
        VersionOf::Number(_) => "$5",
    };
    let sql = format!(
        "SELECT e.name AS env, s.scope, s.name, s.key_id, s.state, s.current_version, \
         s.previous_version, s.description, s.created_at, s.created_by, s.updated_at, \
         s.updated_by, s.deleted_at, s.purge_at, v.version AS v_version, \
         v.ciphertext AS v_ciphertext, v.content_type AS v_content_type, v.size AS v_size, \
         v.key_version AS v_key_version, v.created_at AS v_created_at, \
         v.created_by AS v_created_by \
         FROM environments e \
         LEFT JOIN secrets s ON s.scope = $3 AND s.name = $4 \
         LEFT JOIN secret_versions v ON v.scope = s.scope AND v.name = s.name AND v.version = {sel} \
         WHERE e.tenant = $1 AND e.name = $2"
    );
    let mut q = db::query(&sql)
        .bind(t.as_str())
        .bind(e.as_str())
        .bind(scope.to_string())
        .bind(name);
    if let VersionOf::Number(n) = which {
        q = q.bind(n as i64);
    }
    let row = conn
        .fetch_optional(q)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("environment {t}/{e} not found")))?;
    if row.opt_text("scope")?.is_none() {
        return Err(StoreError::NotFound(format!(
            "secret {scope}/{name} not found"
        )));
    }
    let (info, key_id) = row_to_secret(&row)?;
    let version = if row.opt_int("v_version")?.is_some() {
        Some(row_to_version_p(
            &row,
            "v_",
            info.current_version,
            info.previous_version,
        )?)
    } else {
        None
    };
    Ok((info, key_id, version))
}
