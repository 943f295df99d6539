//! Storage of the key hierarchy: the seal's configuration, keys and their versions. Key
//! material is stored only wrapped (by the root key or by the parent key); this module
//! never sees plaintext material and never unwraps anything (the `secrets` crate does).
//!
//! Every change of a key is audited in its own transaction; version numbers only grow and a
//! new version is added with a check on the current one, so two rotations cannot collide.

use model::kms::KeyState;
use model::Scope;
use sqlx::Row;
use time::OffsetDateTime;

use crate::audit::NewEvent;
use crate::db::{self, Cols, Conn};
use crate::{parse_ts, ts, Actor, Result, Store, StoreError};

/// What a key protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// An environment's key: wraps the environment's KMS and secret keys.
    Environment,
    /// A KMS key used by applications.
    Kms,
    /// The key of one secret.
    Secret,
    /// The key that encrypts one TLS certificate's private key.
    Certificate,
    /// The key of one artifact blob (content-addressed, tenant-wide).
    Artifact,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Environment => "environment",
            KeyPurpose::Kms => "kms",
            KeyPurpose::Secret => "secret",
            KeyPurpose::Certificate => "certificate",
            KeyPurpose::Artifact => "artifact",
        }
    }
    fn parse(s: &str) -> Result<KeyPurpose> {
        match s {
            "environment" => Ok(KeyPurpose::Environment),
            "kms" => Ok(KeyPurpose::Kms),
            "secret" => Ok(KeyPurpose::Secret),
            "certificate" => Ok(KeyPurpose::Certificate),
            "artifact" => Ok(KeyPurpose::Artifact),
            _ => Err(StoreError::Corrupt(format!("unknown key purpose {s:?}"))),
        }
    }
}

/// A key as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// `environment/acme/staging`, `kms/acme/staging/payments`, `secret/acme/staging/db`.
    pub id: String,
    pub purpose: KeyPurpose,
    /// The environment the key belongs to.
    pub scope: Scope,
    /// The KMS key's or secret's name (empty for environment keys).
    pub name: String,
    /// The key that wraps this key's versions; `None`: the root key.
    pub parent: Option<String>,
    pub state: KeyState,
    pub current_version: u32,
    pub min_decrypt_version: u32,
    pub rotation_days: u32,
    pub next_rotation_at: Option<OffsetDateTime>,
    pub deletion_at: Option<OffsetDateTime>,
    pub description: String,
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

impl KeyRecord {
    pub fn id_for(purpose: KeyPurpose, scope: &Scope, name: &str) -> String {
        match purpose {
            KeyPurpose::Environment => format!("environment/{scope}"),
            _ => format!("{}/{scope}/{name}", purpose.as_str()),
        }
    }
}

/// One version of a key: its material wrapped by the parent (or root) key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyVersion {
    pub key_id: String,
    pub version: u32,
    /// Wrapped material (a `gk1` ciphertext of the parent key, or a root-key wrap), base64.
    pub wrapped: String,
    pub created_at: OffsetDateTime,
}

/// Changes to a key's settings or state; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyChange {
    pub state: Option<KeyState>,
    pub rotation_days: Option<u32>,
    pub min_decrypt_version: Option<u32>,
    pub next_rotation_at: Option<Option<OffsetDateTime>>,
    pub deletion_at: Option<Option<OffsetDateTime>>,
}

/// Binds a key's fields as `$1..$14`, in `KEY_COLS` order.
pub(crate) fn bind_key<'q>(q: db::Query<'q>, key: &KeyRecord) -> db::Query<'q> {
    q.bind(&key.id)
        .bind(key.purpose.as_str())
        .bind(key.scope.to_string())
        .bind(&key.name)
        .bind(key.parent.clone())
        .bind(key.state.as_str())
        .bind(key.current_version as i64)
        .bind(key.min_decrypt_version as i64)
        .bind(key.rotation_days as i64)
        .bind(key.next_rotation_at.map(ts))
        .bind(key.deletion_at.map(ts))
        .bind(&key.description)
        .bind(ts(key.created_at))
        .bind(&key.created_by)
}

pub(crate) const KEY_COLS: &str =
    "id, purpose, scope, name, parent, state, current_version, min_decrypt_version, \
    rotation_days, next_rotation_at, deletion_at, description, created_at, created_by";

fn opt_time(row: &impl Cols, col: &str) -> Result<Option<OffsetDateTime>> {
    row.opt_text(col)?.map(|s| parse_ts(&s)).transpose()
}

fn u32_col(row: &impl Cols, col: &str) -> Result<u32> {
    let v = row.int(col)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} out of range")))
}

fn row_to_key(row: &impl Cols) -> Result<KeyRecord> {
    row_to_key_p(row, "")
}

/// `row_to_key` for columns named with `prefix` (in a join).
pub(crate) fn row_to_key_p(row: &impl Cols, prefix: &str) -> Result<KeyRecord> {
    let row = &db::Prefixed { row, prefix };
    let state = row.text("state")?;
    let scope = row.text("scope")?;
    Ok(KeyRecord {
        id: row.text("id")?,
        purpose: KeyPurpose::parse(&row.text("purpose")?)?,
        scope: Scope::parse(&scope).map_err(|e| StoreError::Corrupt(e.message))?,
        name: row.text("name")?,
        parent: row.opt_text("parent")?,
        state: KeyState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown key state {state:?}")))?,
        current_version: u32_col(row, "current_version")?,
        min_decrypt_version: u32_col(row, "min_decrypt_version")?,
        rotation_days: u32_col(row, "rotation_days")?,
        next_rotation_at: opt_time(row, "next_rotation_at")?,
        deletion_at: opt_time(row, "deletion_at")?,
        description: row.text("description")?,
        created_at: parse_ts(&row.text("created_at")?)?,
        created_by: row.text("created_by")?,
    })
}

/// Key columns as `k_`-prefixed aliases of table alias `k`, for joins.
pub(crate) const KEY_COLS_K: &str =
    "k.id AS k_id, k.purpose AS k_purpose, k.scope AS k_scope, k.name AS k_name, \
    k.parent AS k_parent, k.state AS k_state, k.current_version AS k_current_version, \
    k.min_decrypt_version AS k_min_decrypt_version, k.rotation_days AS k_rotation_days, \
    k.next_rotation_at AS k_next_rotation_at, k.deletion_at AS k_deletion_at, \
    k.description AS k_description, k.created_at AS k_created_at, k.created_by AS k_created_by";

/// The audit resource of a key: its id.
fn resource(id: &str) -> String {
    format!("keys/{id}")
}

impl Store {
    /// The seal configuration (JSON), if the installation was initialized.
    pub async fn seal_config(&self) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT config FROM seal WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get("config"))
            .transpose()?)
    }

    /// Stores the seal configuration once; a second initialization is a conflict.
    pub async fn init_seal(&self, actor: &Actor, config: &str, kind: &str) -> Result<()> {
        let mut w = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 AS x FROM seal WHERE id = 1")
            .fetch_optional(&mut *w.tx)
            .await?;
        if exists.is_some() {
            return Err(StoreError::Conflict(
                "the seal is already initialized".into(),
            ));
        }
        sqlx::query("INSERT INTO seal (id, config, created_at) VALUES (1, $1, $2)")
            .bind(config)
            .bind(ts(self.now()))
            .execute(&mut *w.tx)
            .await?;
        let mut ev = NewEvent::success("seal.init", "seal".into(), Scope::Platform);
        ev.detail = format!("seal={kind}");
        w.commit(actor, ev).await
    }

    pub async fn key(&self, id: &str) -> Result<Option<KeyRecord>> {
        if let Some(k) = self.keys_cache.get(id) {
            return Ok(Some(k));
        }
        let generation = self.keys_cache.generation();
        let key = read_with!(self, |c| key_on(c, id))?;
        if let Some(k) = &key {
            self.keys_cache.put(id.to_string(), generation, k.clone());
        }
        Ok(key)
    }

    /// Keys of an environment with a purpose, by name.
    pub async fn keys_in(&self, scope: &Scope, purpose: KeyPurpose) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM keys WHERE scope = $1 AND purpose = $2 ORDER BY name"
        ))
        .bind(scope.to_string())
        .bind(purpose.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_key).collect()
    }

    /// Enabled keys whose rotation is due at `now`.
    pub async fn keys_due_rotation(&self, now: OffsetDateTime) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM keys WHERE state = 'enabled' AND next_rotation_at IS NOT NULL \
             AND next_rotation_at <= $1 ORDER BY id"
        ))
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_key).collect()
    }

    /// Keys pending deletion whose date has come.
    pub async fn keys_due_deletion(&self, now: OffsetDateTime) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM keys WHERE state = 'pending_deletion' AND deletion_at <= $1 ORDER BY id"
        ))
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_key).collect()
    }

    pub async fn key_version(&self, id: &str, version: u32) -> Result<Option<KeyVersion>> {
        sqlx::query("SELECT key_id, version, wrapped, created_at FROM key_versions WHERE key_id = $1 AND version = $2")
            .bind(id)
            .bind(version as i64)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| {
                Ok(KeyVersion {
                    key_id: r.try_get("key_id")?,
                    version: u32_col(&r, "version")?,
                    wrapped: r.try_get("wrapped")?,
                    created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
                })
            })
            .transpose()
    }

    /// All versions of a key, oldest first.
    pub async fn key_versions(&self, id: &str) -> Result<Vec<KeyVersion>> {
        let rows = sqlx::query(
            "SELECT key_id, version, wrapped, created_at FROM key_versions WHERE key_id = $1 ORDER BY version",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyVersion {
                    key_id: r.try_get("key_id")?,
                    version: u32_col(r, "version")?,
                    wrapped: r.try_get("wrapped")?,
                    created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
                })
            })
            .collect()
    }

    /// Creates a key with its first version. The environment must exist.
    pub async fn create_key(&self, actor: &Actor, key: &KeyRecord, wrapped_v1: &str) -> Result<()> {
        let mut w = self.begin_write().await?;
        insert_key(&mut Conn::Any(&mut w.tx), key, wrapped_v1).await?;
        let mut ev = NewEvent::success("key.create", resource(&key.id), key.scope.clone());
        ev.detail = format!(
            "purpose={} rotation_days={}",
            key.purpose.as_str(),
            key.rotation_days
        );
        w.commit(actor, ev).await
    }

    /// Adds version `expected_current + 1` (refused if another rotation got there first)
    /// and makes it current.
    pub async fn add_key_version(
        &self,
        actor: &Actor,
        id: &str,
        expected_current: u32,
        wrapped: &str,
        next_rotation_at: Option<OffsetDateTime>,
        action: &str,
    ) -> Result<u32> {
        let mut w = self.begin_write().await?;
        let key = key_in(&mut w.tx, id).await?;
        if key.current_version != expected_current {
            return Err(StoreError::Conflict(format!(
                "key {id} was rotated concurrently (now version {})",
                key.current_version
            )));
        }
        let v = expected_current + 1;
        sqlx::query("INSERT INTO key_versions (key_id, version, wrapped, created_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(v as i64)
            .bind(wrapped)
            .bind(ts(self.now()))
            .execute(&mut *w.tx)
            .await?;
        sqlx::query("UPDATE keys SET current_version = $1, next_rotation_at = $2 WHERE id = $3")
            .bind(v as i64)
            .bind(next_rotation_at.map(ts))
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        let mut ev = NewEvent::success(action, resource(id), key.scope.clone());
        ev.detail = format!("version={v}");
        w.commit(actor, ev).await?;
        Ok(v)
    }

    /// Applies `change` to a key, audited as `action` with `detail`.
    pub async fn update_key(
        &self,
        actor: &Actor,
        id: &str,
        change: &KeyChange,
        action: &str,
        detail: String,
    ) -> Result<KeyRecord> {
        let mut w = self.begin_write().await?;
        let mut key = key_in(&mut w.tx, id).await?;
        if let Some(s) = change.state {
            key.state = s;
        }
        if let Some(d) = change.rotation_days {
            key.rotation_days = d;
        }
        if let Some(m) = change.min_decrypt_version {
            key.min_decrypt_version = m;
        }
        if let Some(n) = change.next_rotation_at {
            key.next_rotation_at = n;
        }
        if let Some(d) = change.deletion_at {
            key.deletion_at = d;
        }
        sqlx::query(
            "UPDATE keys SET state = $1, rotation_days = $2, min_decrypt_version = $3, \
             next_rotation_at = $4, deletion_at = $5 WHERE id = $6",
        )
        .bind(key.state.as_str())
        .bind(key.rotation_days as i64)
        .bind(key.min_decrypt_version as i64)
        .bind(key.next_rotation_at.map(ts))
        .bind(key.deletion_at.map(ts))
        .bind(id)
        .execute(&mut *w.tx)
        .await?;
        if key.state == KeyState::Destroyed {
            // Destroying a key erases its material: nothing it encrypted can be read again.
            sqlx::query("UPDATE key_versions SET wrapped = '' WHERE key_id = $1")
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
        }
        let mut ev = NewEvent::success(action, resource(id), key.scope.clone());
        ev.detail = detail;
        w.commit(actor, ev).await?;
        Ok(key)
    }

    /// Replaces the wrapped material of existing versions (rewrapping under a newer parent
    /// version), in one transaction.
    pub async fn rewrap_key_versions(
        &self,
        actor: &Actor,
        id: &str,
        rewrapped: &[(u32, String)],
    ) -> Result<()> {
        let mut w = self.begin_write().await?;
        let scope: String = sqlx::query("SELECT scope FROM keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *w.tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("key {id} not found")))?
            .try_get("scope")?;
        for (v, wrapped) in rewrapped {
            sqlx::query("UPDATE key_versions SET wrapped = $1 WHERE key_id = $2 AND version = $3")
                .bind(wrapped)
                .bind(id)
                .bind(*v as i64)
                .execute(&mut *w.tx)
                .await?;
        }
        let scope = Scope::parse(&scope).map_err(|e| StoreError::Corrupt(e.message))?;
        let mut ev = NewEvent::success("key.rewrap", resource(id), scope);
        ev.detail = format!("versions={}", rewrapped.len());
        w.commit(actor, ev).await
    }
}

/// Reads key `id`, if it exists.
async fn key_on(conn: &mut Conn<'_>, id: &str) -> Result<Option<KeyRecord>> {
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("SELECT {KEY_COLS} FROM keys WHERE id = $1"));
    conn.fetch_optional(db::query(&SQL).bind(id))
        .await?
        .map(|r| row_to_key(&r))
        .transpose()
}

/// Reads key `id` inside an open transaction.
async fn key_in(tx: &mut sqlx::Transaction<'static, sqlx::Any>, id: &str) -> Result<KeyRecord> {
    sqlx::query(&format!("SELECT {KEY_COLS} FROM keys WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| row_to_key(&r))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("key {id} not found")))
}

/// Inserts a key and its version 1 inside an open transaction.
pub(crate) async fn insert_key(
    conn: &mut Conn<'_>,
    key: &KeyRecord,
    wrapped_v1: &str,
) -> Result<()> {
    if let Scope::Environment(t, e) = &key.scope {
        let env = conn
            .fetch_optional(
                db::query("SELECT 1 AS x FROM environments WHERE tenant = $1 AND name = $2")
                    .bind(t.as_str())
                    .bind(e.as_str()),
            )
            .await?;
        if env.is_none() {
            return Err(StoreError::NotFound(format!(
                "environment {t}/{e} not found"
            )));
        }
    }
    let exists = conn
        .fetch_optional(db::query("SELECT 1 AS x FROM keys WHERE id = $1").bind(&key.id))
        .await?;
    if exists.is_some() {
        return Err(StoreError::AlreadyExists(format!(
            "key {} already exists",
            key.id
        )));
    }
    let sql = format!(
        "INSERT INTO keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    );
    conn.execute(bind_key(db::query(&sql), key)).await?;
    conn.execute(
        db::query(
            "INSERT INTO key_versions (key_id, version, wrapped, created_at) VALUES ($1, 1, $2, $3)",
        )
        .bind(&key.id)
        .bind(wrapped_v1)
        .bind(ts(key.created_at)),
    )
    .await?;
    Ok(())
}
