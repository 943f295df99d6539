//! The SQLite engine of the hot paths: connections driven in place (`db::Conn::Lite`).
//!
//! sqlx runs every SQLite connection on a worker thread of its own and hands each statement
//! (and each row) to it and back, so on a busy server most CPU time went to switching
//! threads rather than to SQLite. Here a point read runs on the calling thread with a
//! connection from a small pool (a WAL read takes microseconds and never waits for the
//! writer), and the group-commit writer owns one connection on its own thread, so a whole
//! batch is one hand-off in and one out.
//!
//! Same file, same settings as sqlx's connections (WAL, `synchronous=FULL`, foreign keys,
//! busy timeout); writers are still serialized by the store's writer lock. The one
//! difference is the group-commit writer's connection: it commits without waiting for the
//! disk (`synchronous=NORMAL`) and `WalSync` makes each commit durable on another thread
//! before any of its writes is answered (see `writer`).

use std::sync::Mutex;

use crate::db::{lite_error, Conn};
use crate::Result;

/// Most idle read connections kept.
const MAX_IDLE_READERS: usize = 8;

pub(crate) struct Lite {
    path: String,
    readers: Mutex<Vec<rusqlite::Connection>>,
}

impl Lite {
    /// The engine of the database at `url` (`sqlite://PATH[?options]`).
    pub(crate) fn new(url: &str) -> Lite {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        let path = path.split_once('?').map(|(p, _)| p).unwrap_or(path);
        Lite {
            path: path.to_string(),
            readers: Mutex::new(Vec::new()),
        }
    }

    /// A new connection to the database (which exists: sqlx created and migrated it).
    pub(crate) fn connect(&self) -> Result<rusqlite::Connection> {
        use rusqlite::OpenFlags;
        let c = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(lite_error)?;
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
             PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000;",
        )
        .map_err(lite_error)?;
        c.set_prepared_statement_cache_capacity(64);
        Ok(c)
    }

    /// The group-commit writer's connection, and the handle that makes its commits durable:
    /// in WAL mode its commits write the log without syncing it (`synchronous=NORMAL`,
    /// which still syncs around every checkpoint) and the caller must `WalSync::sync`
    /// after a commit before answering for it. Without WAL (a database that cannot use
    /// it) the connection keeps `synchronous=FULL` and there is no `WalSync`.
    pub(crate) fn connect_writer(&self) -> Result<(rusqlite::Connection, Option<WalSync>)> {
        let c = self.connect()?;
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(lite_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Ok((c, None));
        }
        c.execute_batch("PRAGMA synchronous=NORMAL;")
            .map_err(lite_error)?;
        Ok((
            c,
            Some(WalSync {
                path: format!("{}-wal", self.path),
                file: None,
            }),
        ))
    }

    /// Runs `f` with a read connection, on this thread.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&mut Conn<'_>) -> Result<T>) -> Result<T> {
        let idle = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut c = match idle {
            Some(c) => c,
            None => self.connect()?,
        };
        let out = f(&mut Conn::Lite(&mut c));
        // A connection left inside a transaction (a bug) is not reused.
        if c.is_autocommit() {
            let mut idle = self.readers.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE_READERS {
                idle.push(c);
            }
        }
        out
    }
}

/// Makes what the writer's connection committed to the write-ahead log durable:
/// `fdatasync` of the log file, through a descriptor of its own. A sync covers every write
/// to the file that returned before it began, so one sync after a commit returns makes
/// that commit (and every earlier one) durable. The log file lives as long as a connection
/// to the database is open (the writer's is, for the store's life), and checkpoints and
/// restarts of the log reuse the same file.
pub(crate) struct WalSync {
    path: String,
    file: Option<std::fs::File>,
}

impl WalSync {
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(std::fs::File::open(&self.path)?),
        };
        file.sync_data()
    }
}
