//! One connection type for the hot paths of both engines, so their statements are written
//! once: `Conn::Lite` drives a SQLite connection in place (each statement runs on the
//! calling thread, with no hand-off to a worker thread), `Conn::Any` is sqlx's connection
//! (PostgreSQL, or SQLite outside the hot paths).
//!
//! Statements use `$1`, `$2`, ... placeholders on both engines. A future made of `Conn::Lite`
//! statements never waits, so the SQLite engine runs it to the end with one poll
//! (`run_now`) on whatever thread holds the connection.
//!
//! This module must never log or put a bound value in an error: values may be secrets'
//! ciphertexts, and errors name statements' failures only.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Executor, Row as _};

use crate::{Result, StoreError};

/// A bound value. Nulls carry their type: PostgreSQL checks it.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(Some(v))
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Value {
        Value::Int(v)
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(Some(v))
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(Some(v.clone()))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(Some(v.to_string()))
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Value {
        Value::Text(v)
    }
}
impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Value {
        Value::Text(v.map(str::to_string))
    }
}

/// A statement and its bound values.
pub(crate) struct Query<'q> {
    sql: &'q str,
    args: Vec<Value>,
}

/// A statement to bind values to, like `sqlx::query`.
pub(crate) fn query(sql: &str) -> Query<'_> {
    Query {
        sql,
        args: Vec::new(),
    }
}

impl Query<'_> {
    pub(crate) fn bind(mut self, v: impl Into<Value>) -> Self {
        self.args.push(v.into());
        self
    }
}

/// A row of either engine, read by column name.
pub(crate) enum Row {
    Lite(LiteRow),
    Any(AnyRow),
}

/// A row read from SQLite in place: its values, and the column names shared by every row
/// of the query (read once per query, not once per row and column).
pub(crate) struct LiteRow {
    names: Arc<[Box<str>]>,
    vals: Vec<Value>,
}

/// Reading a row's columns by name; for `Row` and for sqlx's `AnyRow`.
pub(crate) trait Cols {
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;

    fn text(&self, col: &str) -> Result<String> {
        self.opt_text(col)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {col} is null")))
    }
    fn int(&self, col: &str) -> Result<i64> {
        self.opt_int(col)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {col} is null")))
    }
}

impl Cols for AnyRow {
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.try_get::<Option<String>, _>(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.try_get::<Option<i64>, _>(col)?)
    }
}

impl LiteRow {
    fn get(&self, col: &str) -> Result<&Value> {
        self.names
            .iter()
            .position(|c| &**c == col)
            .and_then(|i| self.vals.get(i))
            .ok_or_else(|| StoreError::Corrupt(format!("no column {col}")))
    }
}

impl Cols for LiteRow {
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        match self.get(col)? {
            Value::Text(v) => Ok(v.clone()),
            Value::Int(None) => Ok(None),
            Value::Int(Some(_)) => Err(StoreError::Corrupt(format!("column {col} is not text"))),
        }
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        match self.get(col)? {
            Value::Int(v) => Ok(*v),
            Value::Text(None) => Ok(None),
            Value::Text(Some(_)) => Err(StoreError::Corrupt(format!(
                "column {col} is not an integer"
            ))),
        }
    }
}

/// A row's columns named with a prefix (`k_id` for `id` in a join), read by their plain
/// names. The full name is built on the stack: reading a record is a dozen columns.
pub(crate) struct Prefixed<'a, R> {
    pub row: &'a R,
    pub prefix: &'a str,
}

impl<R: Cols> Prefixed<'_, R> {
    fn with<T>(&self, col: &str, f: impl FnOnce(&str) -> T) -> T {
        if self.prefix.is_empty() {
            return f(col);
        }
        let (p, n) = (self.prefix.len(), self.prefix.len() + col.len());
        let mut buf = [0u8; 64];
        if let Some(name) = buf.get_mut(..n) {
            name[..p].copy_from_slice(self.prefix.as_bytes());
            name[p..].copy_from_slice(col.as_bytes());
            if let Ok(name) = std::str::from_utf8(name) {
                return f(name);
            }
        }
        f(&format!("{}{col}", self.prefix))
    }
}

impl<R: Cols> Cols for Prefixed<'_, R> {
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        self.with(col, |c| self.row.opt_text(c))
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        self.with(col, |c| self.row.opt_int(c))
    }
}

impl Cols for Row {
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        match self {
            Row::Lite(r) => r.opt_text(col),
            Row::Any(r) => r.opt_text(col),
        }
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        match self {
            Row::Lite(r) => r.opt_int(col),
            Row::Any(r) => r.opt_int(col),
        }
    }
}

/// A connection of either engine (see the module's doc).
pub(crate) enum Conn<'a> {
    Lite(&'a mut rusqlite::Connection),
    Any(&'a mut AnyConnection),
}

fn bind_any<'q>(
    q: &'q Query<'q>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let mut s = sqlx::query(q.sql);
    for v in &q.args {
        s = match v {
            Value::Int(i) => s.bind(*i),
            Value::Text(t) => s.bind(t.as_deref()),
        };
    }
    s
}

impl Conn<'_> {
    /// Runs a statement; returns how many rows it changed.
    pub(crate) async fn execute(&mut self, q: Query<'_>) -> Result<u64> {
        match self {
            Conn::Lite(c) => lite_execute(c, &q),
            Conn::Any(c) => Ok(bind_any(&q).execute(&mut **c).await?.rows_affected()),
        }
    }

    /// Runs a query; returns its first row, if any.
    pub(crate) async fn fetch_optional(&mut self, q: Query<'_>) -> Result<Option<Row>> {
        match self {
            Conn::Lite(c) => Ok(lite_fetch(c, &q, 1)?.pop().map(Row::Lite)),
            Conn::Any(c) => Ok(bind_any(&q).fetch_optional(&mut **c).await?.map(Row::Any)),
        }
    }

    /// Runs a query; returns its one row.
    pub(crate) async fn fetch_one(&mut self, q: Query<'_>) -> Result<Row> {
        self.fetch_optional(q)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a query returned no row".into()))
    }

    /// Runs statements without values (transaction control), several separated by `;`.
    pub(crate) async fn batch(&mut self, sql: &str) -> Result<()> {
        match self {
            // One statement (BEGIN, COMMIT, a savepoint) is prepared once and kept.
            Conn::Lite(c) if !sql.contains(';') => lite_execute(c, &query(sql)).map(|_| ()),
            Conn::Lite(c) => c.execute_batch(sql).map_err(lite_error),
            Conn::Any(c) => {
                c.execute(sql).await?;
                Ok(())
            }
        }
    }
}

/// Binds `q`'s values to `stmt` by placeholder name (`$N` is the Nth value).
fn lite_bind(stmt: &mut rusqlite::Statement<'_>, q: &Query<'_>, shape: &Shape) -> Result<()> {
    for (i, &n) in shape.params.iter().enumerate() {
        let v = q
            .args
            .get(n - 1)
            .ok_or_else(|| StoreError::Corrupt(format!("no value bound for ${n}")))?;
        match v {
            Value::Int(x) => stmt.raw_bind_parameter(i + 1, x),
            Value::Text(x) => stmt.raw_bind_parameter(i + 1, x.as_deref()),
        }
        .map_err(lite_error)?;
    }
    Ok(())
}

fn lite_execute(c: &rusqlite::Connection, q: &Query<'_>) -> Result<u64> {
    let mut stmt = c.prepare_cached(q.sql).map_err(lite_error)?;
    let shape = shape(q.sql, &stmt)?;
    lite_bind(&mut stmt, q, &shape)?;
    let n = stmt.raw_execute().map_err(lite_error)?;
    Ok(n as u64)
}

/// What a prepared query's text fixes: its column names, and for each of its parameters
/// the argument it takes (`$N` is argument N). SQLite finds a parameter's name by walking
/// a list, so naming every parameter of a multi-row insert each time cost quadratic time.
struct Shape {
    columns: Arc<[Box<str>]>,
    params: Box<[usize]>,
}

/// The shape of a prepared query, remembered per thread by its SQL text: the schema is
/// migrated before any query runs, so a text's shape never changes while the process lives.
fn shape(sql: &str, stmt: &rusqlite::Statement<'_>) -> Result<Arc<Shape>> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    /// Texts remembered per thread before the map starts over (queries built with a
    /// varying number of placeholders would otherwise grow it without bound).
    const MAX_TEXTS: usize = 512;
    thread_local! {
        static SHAPES: RefCell<HashMap<String, Arc<Shape>>> = RefCell::new(HashMap::new());
    }
    if let Some(s) = SHAPES.with(|m| m.borrow().get(sql).cloned()) {
        return Ok(s);
    }
    let columns: Arc<[Box<str>]> = (0..stmt.column_count())
        .map(|i| stmt.column_name(i).map(Box::from).map_err(lite_error))
        .collect::<Result<_>>()?;
    let params = (1..=stmt.parameter_count())
        .map(|i| match stmt.parameter_name(i) {
            Some(name) => name
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| StoreError::Corrupt(format!("unsupported placeholder {name}"))),
            None => Ok(i),
        })
        .collect::<Result<_>>()?;
    let shape = Arc::new(Shape { columns, params });
    SHAPES.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= MAX_TEXTS {
            m.clear();
        }
        m.insert(sql.to_string(), shape.clone());
    });
    Ok(shape)
}

/// Runs a query and reads at most `limit` rows of it.
fn lite_fetch(c: &rusqlite::Connection, q: &Query<'_>, limit: usize) -> Result<Vec<LiteRow>> {
    use rusqlite::types::ValueRef;
    let mut stmt = c.prepare_cached(q.sql).map_err(lite_error)?;
    let shape = shape(q.sql, &stmt)?;
    lite_bind(&mut stmt, q, &shape)?;
    let names = shape.columns.clone();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(row) = rows.next().map_err(lite_error)? else {
            break;
        };
        let mut cols = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let v = match row.get_ref(i).map_err(lite_error)? {
                ValueRef::Null => Value::Int(None),
                ValueRef::Integer(x) => Value::Int(Some(x)),
                ValueRef::Text(t) => Value::Text(Some(
                    std::str::from_utf8(t)
                        .map_err(|_| StoreError::Corrupt(format!("column {name} is not UTF-8")))?
                        .to_string(),
                )),
                ValueRef::Real(_) | ValueRef::Blob(_) => {
                    return Err(StoreError::Corrupt(format!(
                        "column {name} has an unexpected type"
                    )))
                }
            };
            cols.push(v);
        }
        out.push(LiteRow {
            names: names.clone(),
            vals: cols,
        });
    }
    Ok(out)
}

/// A SQLite error as the store's: a unique key's violation is `AlreadyExists`, like sqlx's.
pub(crate) fn lite_error(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        {
            return StoreError::AlreadyExists("the resource already exists".into());
        }
    }
    StoreError::Engine(e.to_string())
}

/// Runs a future that never waits (one made of `Conn::Lite` statements) to its end on this
/// thread. A future that does wait is a bug of this crate: it is reported, never blocked on.
pub(crate) fn run_now<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => Err(StoreError::Corrupt(
            "a SQLite statement waited where none can".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lite() -> rusqlite::Connection {
        let c = rusqlite::Connection::open_in_memory().expect("open");
        c.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER, note TEXT)")
            .expect("schema");
        c
    }

    #[test]
    fn placeholders_bind_by_number_in_any_order_and_repeated() {
        let mut c = lite();
        let mut conn = Conn::Lite(&mut c);
        let row = run_now(
            conn.fetch_one(
                query("SELECT $2 AS a, $1 AS b, $2 AS c, $3 AS d")
                    .bind("one")
                    .bind(2i64)
                    .bind(None::<String>),
            ),
        )
        .expect("select");
        assert_eq!(row.int("a").expect("a"), 2);
        assert_eq!(row.text("b").expect("b"), "one");
        assert_eq!(row.int("c").expect("c"), 2);
        assert_eq!(row.opt_text("d").expect("d"), None);
        assert!(row.text("d").is_err(), "a null is not a text");
        assert!(row.int("b").is_err(), "a text is not an integer");
        assert!(row.text("nope").is_err(), "no such column");
    }

    #[test]
    fn execute_counts_rows_and_a_duplicate_key_is_already_exists() {
        let mut c = lite();
        let mut conn = Conn::Lite(&mut c);
        let ins = "INSERT INTO t (id, n, note) VALUES ($1, $2, $3)";
        let n = run_now(conn.execute(query(ins).bind("a").bind(1i64).bind(None::<&str>)));
        assert_eq!(n.expect("insert"), 1);
        let dup = run_now(conn.execute(query(ins).bind("a").bind(2i64).bind("x")));
        assert!(matches!(dup, Err(StoreError::AlreadyExists(_))), "{dup:?}");
        let n = run_now(conn.execute(query("UPDATE t SET n = n + 1 WHERE id = $1").bind("zz")));
        assert_eq!(n.expect("update"), 0);
        let none = run_now(conn.fetch_optional(query("SELECT id FROM t WHERE id = $1").bind("b")));
        assert!(none.expect("select").is_none());
    }

    #[test]
    fn a_missing_value_is_an_error_not_a_null() {
        let mut c = lite();
        let mut conn = Conn::Lite(&mut c);
        let r = run_now(conn.fetch_one(query("SELECT $1 AS a, $2 AS b").bind(1i64)));
        assert!(matches!(r, Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn run_now_reports_a_future_that_waits() {
        let r: Result<()> = run_now(async {
            std::future::pending::<()>().await;
            Ok(())
        });
        assert!(matches!(r, Err(StoreError::Corrupt(_))));
    }
}
