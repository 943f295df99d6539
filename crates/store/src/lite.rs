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
//! before any of its writes is answered (see `writer`), and it does not copy the log back
//! into the database itself: `Checkpointer` does, on a third thread, so that no batch waits
//! behind a checkpoint.

use std::sync::Mutex;

use crate::db::{lite_error, Conn};
use crate::Result;

/// Most idle read connections kept.
const MAX_IDLE_READERS: usize = 8;

/// Log pages (16 MB) the writer appends before the checkpoint thread copies the log into
/// the database: four times SQLite's default interval. A pass copies each page once, however
/// often it was rewritten, and writes that update existing rows keep rewriting the same
/// pages (a secret's newest versions, its audit index leaf), so a pass costs about the same
/// at 4,000 pages as at 1,000 and comes a quarter as often: fewer requests wait behind one
/// for the core (a new version's p99 at one connection 2.1-2.3 ms at 1,000, 1.5-1.8 ms
/// here). Larger intervals help those writes further but make a pass of new rows, whose
/// pages are all new, long enough to delay the requests around it (docs/benchmarks.md).
const CHECKPOINT_PAGES: i64 = 4000;

/// Log size (pages, 64 MB) at which the writer checkpoints in place, as SQLite does by
/// default at 1,000: it copies what the checkpoint thread has not, lets the log start over
/// and keeps it bounded (see `Checkpointer`). The log file keeps its largest size, so
/// syncing it never needs to sync its size.
const WRITER_CHECKPOINT_PAGES: i64 = 4 * CHECKPOINT_PAGES;

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

    /// The group-commit writer's connection, and in WAL mode the two helpers of its
    /// commits: its commits write the log without syncing it (`synchronous=NORMAL`, which
    /// still syncs around every checkpoint) and the caller must `WalSync::sync` after a
    /// commit before answering for it, and tell the `Checkpointer` after each commit.
    /// Without WAL (a database that cannot use it) the connection keeps
    /// `synchronous=FULL` and there are no helpers.
    pub(crate) fn connect_writer(
        &self,
    ) -> Result<(rusqlite::Connection, Option<(WalSync, Checkpointer)>)> {
        let c = self.connect()?;
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(lite_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Ok((c, None));
        }
        c.execute_batch(&format!(
            "PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES};"
        ))
        .map_err(lite_error)?;
        let checkpointer = Checkpointer::spawn(self.connect()?)?;
        let wal = WalSync {
            path: format!("{}-wal", self.path),
            file: None,
        };
        Ok((c, Some((wal, checkpointer))))
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
    /// A second handle on the same log, for syncing from another thread.
    pub(crate) fn another(&self) -> WalSync {
        WalSync {
            path: self.path.clone(),
            file: None,
        }
    }

    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(std::fs::File::open(&self.path)?),
        };
        file.sync_data()
    }
}

/// Copies the write-ahead log back into the database on a thread of its own
/// ("store-ckpt", with a connection of its own), so that write batches do not wait for
/// checkpoints as they did when SQLite checkpointed in the writer every 1,000 pages.
///
/// Once the writer has appended `CHECKPOINT_PAGES` pages, the thread runs a PASSIVE
/// checkpoint, which never takes the write lock: the writer goes on committing while the
/// pages are copied and the database synced. The log starts over from its beginning (its
/// file overwritten in place, so syncing it needs no metadata) only when every frame is
/// copied as a write transaction begins, which a copy racing the writer does not see; that
/// happens when the writer checkpoints on its own, at `WRITER_CHECKPOINT_PAGES`, by then
/// copying only the pages appended since the thread's last pass. (Catching up after every
/// pass instead was measured: it keeps the log at 4 MB, but a checkpoint's cost is mostly
/// its two syncs, so the writer waited about as long as for a whole one.) The writer's
/// own checkpoint also bounds the log if the thread falls behind.
///
/// Never answers a write and never holds one up: a failed checkpoint is logged and the
/// next one copies what it left.
pub(crate) struct Checkpointer {
    /// Holds at most one request: a checkpoint asked for while one is pending is the same.
    wake: std::sync::mpsc::SyncSender<()>,
    appended: i64,
}

impl Checkpointer {
    fn spawn(conn: rusqlite::Connection) -> Result<Checkpointer> {
        let (wake, rx) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("store-ckpt".into())
            .spawn(move || {
                background_priority();
                // Ends when the writer (the only sender) drops its `Checkpointer`.
                while rx.recv().is_ok() {
                    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                        tracing::warn!(error = %e, "copying the write-ahead log failed");
                    }
                }
            })
            .map_err(|e| crate::StoreError::Unavailable(format!("no checkpoint thread: {e}")))?;
        Ok(Checkpointer { wake, appended: 0 })
    }

    /// Called by the writer after each commit on `conn`: asks the thread for a copy once
    /// enough pages were appended to the log.
    pub(crate) fn committed(&mut self, conn: &rusqlite::Connection) {
        self.appended += pages_written(conn);
        if self.appended >= CHECKPOINT_PAGES {
            self.appended = 0;
            // Full: a checkpoint is pending already and will copy these pages too.
            let _ = self.wake.try_send(());
        }
    }
}

/// Lowers the calling thread's CPU priority (nice 10, this thread only: Linux applies
/// `setpriority` to a thread id), so that copying the log never keeps a thread that answers
/// requests waiting for a CPU, as RocksDB lowers its compaction threads'. Nothing waits on
/// the checkpoint thread: the writer's own checkpoint bounds the log if it falls behind.
fn background_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id; no memory is shared.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            tracing::debug!(error = %e, "cannot lower the checkpoint thread's priority");
        }
    }
}

/// Pages `conn` wrote to the log since the last call: SQLite's per-connection counter of
/// pages written (in WAL mode, log frames appended), read and reset. rusqlite has no
/// wrapper for `sqlite3_db_status`, hence the direct call.
fn pages_written(conn: &rusqlite::Connection) -> i64 {
    use rusqlite::ffi;
    let (mut current, mut highest) = (0, 0);
    // SAFETY: `handle` is the live connection `conn` borrows, used on this thread only
    // (SQLite's connections are used from one thread at a time here); the two out-pointers
    // point at locals that outlive the call.
    let rc = unsafe {
        ffi::sqlite3_db_status(
            conn.handle(),
            ffi::SQLITE_DBSTATUS_CACHE_WRITE,
            &mut current,
            &mut highest,
            1,
        )
    };
    if rc == ffi::SQLITE_OK {
        i64::from(current)
    } else {
        0
    }
}
