//! The store: the one place desired state and the audit trail live, with two engines behind
//! one interface: SQLite (embedded default, WAL, synchronous=FULL) and PostgreSQL.
//!
//! Every mutation runs in one transaction that also appends its audit event to the hash
//! chain: no change without its event, no event without its change. Writers are serialized
//! (an in-process lock, plus a row lock on the chain head on PostgreSQL so several control
//! planes can share one database); concurrent writes may share one transaction through
//! the group-commit writer (`writer`), each change in its own savepoint.
//!
//! Most statements go through sqlx (`Any`) on both engines. On SQLite the hot paths (the
//! group-commit writer and a few point reads) drive the same file in place instead (`lite`),
//! with their statements written once for both engines (`db::Conn`).
//!
//! This crate must never decide who may do what (that is the API's job with
//! `model::rbac`), never log a token or a secret, and never depend on a higher crate.

/// Runs `$body`, a future of statements on `$c: &mut db::Conn`, with a read connection: on
/// SQLite in place on this thread (`lite`), on PostgreSQL with a pooled sqlx connection.
/// For point reads on hot paths, which SQLite answers in microseconds.
macro_rules! read_with {
    ($store:expr, |$c:ident| $body:expr) => {
        match &$store.lite {
            Some(lite) => lite.read(|$c| $crate::db::run_now($body)),
            None => {
                let mut pooled = $store.pool.acquire().await?;
                let $c = &mut $crate::db::Conn::Any(&mut *pooled);
                $body.await
            }
        }
    };
}

pub mod advisories;
pub mod artifacts;
pub mod audit;
mod cache;
pub mod certs;
mod db;
pub mod keyring;
mod lite;
mod principals;
mod routes;
mod schema;
pub mod secrets;
pub mod services;
mod tenancy;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use model::clock::{Clock, SystemClock};
use model::Code;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, Transaction};
use time::OffsetDateTime;

pub use audit::{chain_hash, GENESIS_HASH};
pub use cache::TTL as PRINCIPAL_CACHE_TTL;
pub use principals::Authenticated;

/// The store's error. `code()` maps it onto the shared error-code table.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Conflict(String),
    /// A check-and-set failed: the resource is at another version than expected.
    #[error("{0}")]
    VersionMismatch(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("invalid store URL: {0}")]
    BadUrl(String),
    /// The engine failed. Displayed with its cause (not chained as a `source`, so that
    /// printing the chain does not repeat it).
    #[error("store error: {0}")]
    Backend(sqlx::Error),
    #[error("store holds data this version cannot read: {0}")]
    Corrupt(String),
    /// The SQLite engine of the hot paths failed (see `lite`), with its cause.
    #[error("store error: {0}")]
    Engine(String),
    /// A batched write failed (the cause is logged once by the batch writer).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    pub fn code(&self) -> Code {
        match self {
            StoreError::NotFound(_) => Code::NotFound,
            StoreError::AlreadyExists(_) => Code::AlreadyExists,
            StoreError::Conflict(_) | StoreError::VersionMismatch(_) => Code::Conflict,
            StoreError::Unprocessable(_) => Code::Unprocessable,
            StoreError::BadUrl(_) => Code::InvalidArgument,
            StoreError::Backend(_) | StoreError::Engine(_) => Code::Unavailable,
            StoreError::Corrupt(_) => Code::Internal,
            StoreError::Unavailable(_) => Code::Unavailable,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        // Two control planes on one PostgreSQL database can race past an existence check;
        // the unique key then decides, and the loser gets the same answer as a sequential
        // duplicate would.
        if e.as_database_error()
            .is_some_and(|d| d.is_unique_violation())
        {
            return StoreError::AlreadyExists("the resource already exists".into());
        }
        StoreError::Backend(e)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

/// Who is doing something, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Principal name, `system` for Gantry itself, `anonymous` when unauthenticated.
    pub principal: String,
    pub request_id: String,
    /// Remote address of the request.
    pub source: String,
}

impl Actor {
    pub fn system() -> Actor {
        Actor {
            principal: "system".into(),
            request_id: String::new(),
            source: "local".into(),
        }
    }
}

pub struct Store {
    pool: AnyPool,
    engine: Engine,
    /// Serializes writers inside this process (SQLite allows one writer; on PostgreSQL it
    /// avoids queueing every writer on the chain-head row lock).
    write_lock: Arc<tokio::sync::Mutex<()>>,
    clock: Arc<dyn Clock>,
    url_display: String,
    /// The group-commit writer: events without a change (reads, refusals) and the changes
    /// written through `Store::change`.
    writer: writer::Writer,
    /// Authenticated principals by token hash (see `cache`).
    auth_cache: cache::AuthCache,
    /// KMS and data keys by id, and environments by tenant and name (see `cache`); emptied
    /// by every `WriteTx` commit.
    keys_cache: cache::Cache<String, keyring::KeyRecord>,
    envs_cache: cache::Cache<(model::Name, model::Name), model::types::Environment>,
    /// On SQLite, the connections of the hot paths, driven in place (see `lite`).
    lite: Option<Arc<lite::Lite>>,
}

impl Store {
    /// Opens (and migrates) the store at `url`: `sqlite://PATH` or `postgres://...`.
    pub async fn open(url: &str) -> Result<Store> {
        Store::open_with_clock(url, Arc::new(SystemClock)).await
    }

    pub async fn open_with_clock(url: &str, clock: Arc<dyn Clock>) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (engine, url_display) = if let Some(path) = url.strip_prefix("sqlite://") {
            (Engine::Sqlite, format!("sqlite ({path})"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Engine::Postgres, format!("postgres ({})", redact_url(url)))
        } else {
            return Err(StoreError::BadUrl(format!(
                "{}: use sqlite://PATH or postgres://USER@HOST/DB",
                redact_url(url)
            )));
        };
        let opts = AnyConnectOptions::from_str(&connect_url(engine, url))
            .map_err(|e| StoreError::BadUrl(format!("{}: {e}", redact_url(url))))?;
        let pool = AnyPoolOptions::new()
            .max_connections(match engine {
                Engine::Sqlite => 4,
                Engine::Postgres => 8,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                             PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        let write_lock = Arc::new(tokio::sync::Mutex::new(()));
        let lite = (engine == Engine::Sqlite).then(|| Arc::new(lite::Lite::new(url)));
        let writer = writer::Writer::spawn(
            pool.clone(),
            engine,
            lite.clone(),
            write_lock.clone(),
            clock.clone(),
        )?;
        let store = Store {
            pool,
            engine,
            write_lock,
            clock,
            url_display,
            writer,
            auth_cache: Default::default(),
            keys_cache: Default::default(),
            envs_cache: Default::default(),
            lite,
        };
        schema::migrate(&store).await?;
        Ok(store)
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// A description of the store safe to show (no password).
    pub fn describe(&self) -> &str {
        &self.url_display
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs `change` with its audit event in the next group commit (see `writer`): it
    /// shares one transaction and one fsync with the writes waiting beside it, in its own
    /// savepoint, and returns once it is durable or with its own error (nothing committed).
    pub(crate) async fn change<C: writer::Change>(
        &self,
        actor: &Actor,
        change: C,
    ) -> Result<C::Output> {
        self.writer.change(actor.clone(), change).await
    }

    /// Starts a write transaction. It must end with `WriteTx::commit`, which appends the
    /// audit event; dropping it rolls everything back.
    async fn begin_write(&self) -> Result<WriteTx<'_>> {
        let guard = self.write_lock.lock().await;
        let tx = begin(&self.pool, self.engine).await?;
        Ok(WriteTx {
            _guard: guard,
            tx,
            store: self,
        })
    }
}

/// An open write transaction holding the writer lock.
pub(crate) struct WriteTx<'a> {
    _guard: tokio::sync::MutexGuard<'a, ()>,
    pub(crate) tx: Transaction<'static, Any>,
    store: &'a Store,
}

impl WriteTx<'_> {
    /// Runs `q`, a change that must touch a row. When it touches none, rolls back at once
    /// (a dropped transaction is rolled back too, but later: the refusal's audit event,
    /// written on another connection, could wait on its write lock meanwhile) and fails
    /// with `NotFound(missing)`.
    pub(crate) async fn change_one<'q>(
        mut self,
        q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
        missing: impl FnOnce() -> String,
    ) -> Result<Self> {
        if q.execute(&mut *self.tx).await?.rows_affected() == 0 {
            self.tx.rollback().await?;
            return Err(StoreError::NotFound(missing()));
        }
        Ok(self)
    }

    /// Checks, inside this transaction, that `scope` is an existing environment (`what`
    /// names the resource for the error: "routes live in an environment").
    pub(crate) async fn require_environment(
        &mut self,
        scope: &model::Scope,
        what: &str,
    ) -> Result<()> {
        let model::Scope::Environment(t, e) = scope else {
            return Err(StoreError::Unprocessable(format!(
                "{what} live in an environment"
            )));
        };
        let found = sqlx::query("SELECT 1 AS x FROM environments WHERE tenant = $1 AND name = $2")
            .bind(t.as_str())
            .bind(e.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        match found {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound(format!(
                "environment {scope} not found"
            ))),
        }
    }

    /// Appends the audit event for this change and commits both together.
    pub(crate) async fn commit(mut self, actor: &Actor, event: audit::NewEvent) -> Result<()> {
        let now = self.store.clock.now();
        audit::append(&mut self.tx, self.store.engine, actor, &event, now).await?;
        let result = self.tx.commit().await;
        // Also on an error: the commit may have reached the database all the same. Keys and
        // environments change only through this path (the group-commit writer only adds
        // secrets and their keys), so this keeps their caches exact for this process.
        self.store.keys_cache.invalidate();
        self.store.envs_cache.invalidate();
        Ok(result?)
    }

    /// `commit` for a change to accounts, tokens or grants: it also empties the cache of
    /// authenticated principals, so the change applies to the very next request.
    pub(crate) async fn commit_principals(
        self,
        actor: &Actor,
        event: audit::NewEvent,
    ) -> Result<()> {
        let store = self.store;
        let result = self.commit(actor, event).await;
        // Also on an error: the commit may have reached the database all the same.
        store.auth_cache.invalidate();
        result
    }
}

/// Begins a write transaction. Call with the writer lock held.
pub(crate) async fn begin(pool: &AnyPool, engine: Engine) -> Result<Transaction<'static, Any>> {
    let mut tx = pool.begin().await?;
    if engine == Engine::Postgres {
        // Several control planes may share one database: take the chain head's row lock
        // before any check, so every write transaction (its checks, its change and its
        // event) runs serialized, not only the event append.
        sqlx::query("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
}

fn connect_url(engine: Engine, url: &str) -> String {
    match engine {
        Engine::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
        _ => url.to_string(),
    }
}

/// Removes a password from a URL before it is shown or logged.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            let user = userinfo.split(':').next().unwrap_or("");
            return format!("{scheme}://{user}@{host}");
        }
    }
    url.to_string()
}

pub(crate) fn ts(t: OffsetDateTime) -> String {
    model::types::format_time(t)
}

pub(crate) fn parse_ts(s: &str) -> Result<OffsetDateTime> {
    model::types::parse_time(s).map_err(|_| StoreError::Corrupt(format!("bad timestamp {s:?}")))
}
