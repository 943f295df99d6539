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
//! busy timeout); writers are still serialized by the store's writer lock.

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
