//! Integration tests of the store, run on both engines.
//!
//! Every test is one `async fn(Ctx)`; the `engine_tests!` macro turns it into
//! `sqlite::NAME` (a fresh temp dir per test) and `postgres::NAME` (a fresh database per
//! test on the server named by `GANTRY_TEST_PG`; run `. scripts/pg.sh` to start one).
//! Without `GANTRY_TEST_PG` the PostgreSQL tests fail, unless `GANTRY_SKIP_PG=1`.
//!
//! Every store is opened with a `ManualClock` starting at `START`, so times are
//! deterministic and tests move time instead of sleeping.

use std::future::Future;
use std::sync::Arc;

use model::clock::ManualClock;
use model::{Name, PrincipalName, Scope};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Column, Connection, Row};
use store::{Actor, Engine, Store};
use time::OffsetDateTime;

mod audit;
mod certs;
mod principals;
mod tenancy;
mod wal;

/// The time every test's clock starts at (a whole second, so stored times are exact).
pub const START: OffsetDateTime = time::macros::datetime!(2026-01-01 00:00:00 UTC);

/// What a test gets: the opened store, its clock, and raw access to the engine underneath.
pub struct Ctx {
    pub store: Store,
    pub clock: Arc<ManualClock>,
    pub db: Db,
}

/// Raw SQL access to the database the store runs on (for tamper tests and for looking at
/// what is really stored), bypassing the store.
pub struct Db {
    pub engine: Engine,
    pub url: String,
    pool: AnyPool,
}

impl Db {
    async fn connect(engine: Engine, url: &str) -> Db {
        sqlx::any::install_default_drivers();
        let opts: AnyConnectOptions = url.parse().expect("raw connect options");
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        sqlx::Executor::execute(&mut *conn, "PRAGMA busy_timeout=10000;").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .expect("raw connection to the test database");
        Db {
            engine,
            url: url.to_string(),
            pool,
        }
    }

    /// Runs one statement, returns the number of rows it affected.
    pub async fn exec(&self, sql: &str) -> u64 {
        sqlx::query(sql)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("raw SQL failed: {sql}: {e}"))
            .rows_affected()
    }

    /// Runs one statement with bound text/integer arguments.
    pub async fn exec_args(&self, sql: &str, args: &[Arg<'_>]) -> u64 {
        let mut q = sqlx::query(sql);
        for a in args {
            q = match a {
                Arg::Text(s) => q.bind(s.to_string()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q.execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("raw SQL failed: {sql}: {e}"))
            .rows_affected()
    }

    /// A transaction on its own connection (to hold locks).
    pub async fn begin(&self) -> sqlx::Transaction<'static, sqlx::Any> {
        self.pool.begin().await.expect("raw transaction")
    }

    /// A single BIGINT (or COUNT) value.
    pub async fn int(&self, sql: &str) -> i64 {
        sqlx::query(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("raw SQL failed: {sql}: {e}"))
            .try_get(0)
            .unwrap_or_else(|e| panic!("raw SQL result not an integer: {sql}: {e}"))
    }

    /// Rows of a query whose columns are all text (NULL as `None`), with column names.
    pub async fn text_rows(&self, sql: &str) -> Vec<Vec<(String, Option<String>)>> {
        let rows = sqlx::query(sql)
            .fetch_all(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("raw SQL failed: {sql}: {e}"));
        rows.iter()
            .map(|r| {
                r.columns()
                    .iter()
                    .map(|c| {
                        let v: Option<String> = r
                            .try_get(c.ordinal())
                            .unwrap_or_else(|e| panic!("column {} not text: {e}", c.name()));
                        (c.name().to_string(), v)
                    })
                    .collect()
            })
            .collect()
    }
}

pub enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

async fn open(engine: Engine, url: &str) -> Ctx {
    let clock = Arc::new(ManualClock::new(START));
    let store = Store::open_with_clock(url, clock.clone())
        .await
        .unwrap_or_else(|e| panic!("opening the store at {url}: {e}"));
    assert_eq!(store.engine(), engine);
    let db = Db::connect(engine, url).await;
    Ctx { store, clock, db }
}

/// Runs `body` in its own task so that cleanup happens even when it panics, then re-raises.
async fn run_body<F, Fut>(ctx: Ctx, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let result = tokio::spawn(body(ctx)).await;
    if let Err(e) = result {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("test task failed: {e}");
    }
}

pub async fn run_sqlite<F, Fut>(body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/gantry.db", dir.path().display());
    let ctx = open(Engine::Sqlite, &url).await;
    run_body(ctx, body).await;
    drop(dir);
}

pub async fn run_postgres<F, Fut>(body: F)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admin_url = match std::env::var("GANTRY_TEST_PG") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            if std::env::var("GANTRY_SKIP_PG").as_deref() == Ok("1") {
                eprintln!("GANTRY_SKIP_PG=1: skipping a PostgreSQL store test");
                return;
            }
            panic!(
                "GANTRY_TEST_PG is not set: run `. scripts/pg.sh` from the workspace root to \
                 start PostgreSQL and export it (or set GANTRY_SKIP_PG=1 to skip the \
                 PostgreSQL store tests)"
            );
        }
    };
    sqlx::any::install_default_drivers();
    let db_name = format!("gantry_t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::AnyConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to GANTRY_TEST_PG ({}): {e}; run `. scripts/pg.sh`",
                store::redact_url(&admin_url)
            )
        });
    sqlx::query(&format!("CREATE DATABASE {db_name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {db_name}: {e}"));
    let url = database_url(&admin_url, &db_name);
    // Opening happens inside the task too, so that the database is dropped even when the
    // store fails to open.
    let result = tokio::spawn(async move { body(open(Engine::Postgres, &url).await).await }).await;
    // The body owned the store and the raw pool; they are dropped by now. FORCE ends any
    // connection still closing.
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .execute(&mut admin)
        .await;
    let _ = admin.close().await;
    if let Err(e) = result {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("test task failed: {e}");
    }
    dropped.unwrap_or_else(|e| panic!("DROP DATABASE {db_name}: {e}"));
}

/// `postgres://user@host:port/db?opts` with the database replaced by `db`.
fn database_url(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl Ctx {
    /// Number of audit events actually stored.
    pub async fn event_count(&self) -> i64 {
        self.db.int("SELECT COUNT(*) AS n FROM audit_events").await
    }
}

/// Generates `sqlite::NAME` and `postgres::NAME` for each `async fn NAME(ctx: Ctx)` listed.
/// An item may carry attributes (an ignore attribute, for example) for both variants.
#[macro_export]
macro_rules! engine_tests {
    ($( $(#[$attr:meta])* $name:ident ),* $(,)?) => {
        mod sqlite {
            $(
                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    $crate::run_sqlite(super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    $crate::run_postgres(super::$name).await;
                }
            )*
        }
    };
}

/// Asserts that `$e` is `Err(StoreError::$variant(_))` and returns the message.
#[macro_export]
macro_rules! expect_err {
    ($e:expr, $variant:ident) => {
        match $e {
            Err(store::StoreError::$variant(msg)) => msg,
            Err(other) => panic!(
                "expected StoreError::{}, got StoreError {:?}",
                stringify!($variant),
                other
            ),
            Ok(v) => panic!(
                "expected StoreError::{}, got Ok({:?})",
                stringify!($variant),
                v
            ),
        }
    };
}

// ---- small helpers shared by the modules ----

pub fn name(s: &str) -> Name {
    Name::parse(s).unwrap_or_else(|e| panic!("bad test name {s}: {e}"))
}

pub fn principal(s: &str) -> PrincipalName {
    PrincipalName::parse(s).unwrap_or_else(|e| panic!("bad test principal {s}: {e}"))
}

pub fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap_or_else(|e| panic!("bad test scope {s}: {e}"))
}

pub fn actor(p: &str) -> Actor {
    Actor {
        principal: p.to_string(),
        request_id: format!("req-{p}"),
        source: "127.0.0.1:4242".to_string(),
    }
}

/// A complete picture of the store's desired state (not the audit trail), to check that a
/// refused change changed nothing.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub tenants: Vec<model::types::Tenant>,
    pub environments: Vec<model::types::Environment>,
    pub accounts: Vec<model::types::Account>,
    pub tokens: Vec<model::types::TokenInfo>,
    pub grants: Vec<model::types::Grant>,
    pub counts: model::types::Counts,
}

pub async fn snapshot(store: &Store) -> Snapshot {
    let tenants = store.tenants().await.expect("tenants");
    let mut environments = Vec::new();
    for t in &tenants {
        environments.extend(store.environments(&t.name).await.expect("environments"));
    }
    Snapshot {
        tenants,
        environments,
        accounts: store.accounts(None).await.expect("accounts"),
        tokens: store.tokens(None).await.expect("tokens"),
        grants: store.grants().await.expect("grants"),
        counts: store.counts().await.expect("counts"),
    }
}

#[test]
fn database_url_replaces_the_database() {
    assert_eq!(
        database_url("postgres://postgres@127.0.0.1:55432/postgres", "x"),
        "postgres://postgres@127.0.0.1:55432/x"
    );
    assert_eq!(
        database_url("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(database_url("postgres://u@h:1", "x"), "postgres://u@h:1/x");
}
