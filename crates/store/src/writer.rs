//! Group commit: one writer task joins concurrent writes into one database transaction.
//!
//! A write is either a change with its audit event (a `Change`) or an event that goes with
//! no change (a read, a refusal). The task takes every write waiting in its queue, holds the
//! store's writer lock, begins one transaction, runs each change in its own savepoint (a
//! change that fails is rolled back alone and answered with its own error), appends the
//! events of the changes that succeeded and of the event-only writes to the chain with one
//! read and one move of the head, commits once (one fsync), and only then answers each
//! caller. Under load this turns N transactions and N fsyncs into one.
//!
//! On SQLite the writer is a thread that owns its connection (`lite`): a batch runs there
//! from its BEGIN to its COMMIT with no hand-off between threads. Its COMMIT writes the
//! log without waiting for the disk; a second thread (`Syncer`) syncs the log and only
//! then answers the batch, so the next batch runs while the disk works. When no write
//! waits at that moment, the writer syncs and answers the batch itself, sparing it the
//! sync thread's wake-up. On PostgreSQL it
//! is a task on a pooled connection. The batch itself is the same code for both
//! (`run_batch`).
//!
//! This module must never answer a caller before the commit that holds its write is
//! durable, never let one change's failure undo or leak into another's, and never commit a
//! change without its event.

use std::any::Any as StdAny;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::audit::{append_all, NewEvent};
use crate::db::{run_now, Conn};
use crate::lite::Lite;
use crate::{Actor, Engine, Result, StoreError};

/// A boxed future that may borrow for `'c`.
pub(crate) type BoxFut<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// A change run by the writer inside the batch's transaction. It makes its checks and its
/// change with the connection it is given and returns what its caller gets back and its
/// audit event. On an error it may have changed rows: the writer rolls them back.
pub(crate) trait Change: Send + 'static {
    type Output: Send + 'static;
    fn apply<'c>(self, conn: &'c mut Conn<'_>) -> BoxFut<'c, Result<(Self::Output, NewEvent)>>;
}

/// Most writes one group commit holds.
const MAX_BATCH: usize = 256;

type Erased = Box<dyn StdAny + Send>;

/// A type-erased `Change`.
trait Run: Send {
    fn run<'c>(self: Box<Self>, conn: &'c mut Conn<'_>) -> BoxFut<'c, Result<(Erased, NewEvent)>>;
}

impl<C: Change> Run for C {
    fn run<'c>(self: Box<Self>, conn: &'c mut Conn<'_>) -> BoxFut<'c, Result<(Erased, NewEvent)>> {
        let fut = (*self).apply(conn);
        Box::pin(async move {
            let (out, ev) = fut.await?;
            Ok((Box::new(out) as Erased, ev))
        })
    }
}

enum Work {
    Change(Box<dyn Run>),
    Event(NewEvent),
}

struct Pending {
    actor: Actor,
    work: Work,
    done: tokio::sync::oneshot::Sender<Result<Option<Erased>>>,
}

pub(crate) struct Writer {
    queue: tokio::sync::mpsc::Sender<Pending>,
}

/// Takes the next batch: the first write, then every write already waiting (up to
/// `MAX_BATCH`).
fn fill(first: Pending, rx: &mut tokio::sync::mpsc::Receiver<Pending>) -> Vec<Pending> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
    batch
}

impl Writer {
    pub(crate) fn spawn(
        pool: sqlx::AnyPool,
        engine: Engine,
        lite: Option<Arc<Lite>>,
        lock: Arc<tokio::sync::Mutex<()>>,
        clock: Arc<dyn model::clock::Clock>,
    ) -> Result<Writer> {
        let (queue, mut rx) = tokio::sync::mpsc::channel::<Pending>(4096);
        match lite {
            Some(lite) => {
                let (mut conn, wal) = lite.connect_writer()?;
                let (mut syncer, mut checkpointer) = match wal {
                    Some((wal, checkpointer)) => (Some(Syncer::spawn(wal)?), Some(checkpointer)),
                    None => (None, None),
                };
                std::thread::Builder::new()
                    .name("store-writer".into())
                    .spawn(move || {
                        while let Some(first) = rx.blocking_recv() {
                            let batch = fill(first, &mut rx);
                            let guard = lock.blocking_lock();
                            let ended = write_lite(&mut conn, clock.as_ref(), batch);
                            drop(guard);
                            match (&mut syncer, ended) {
                                (_, None) => {}
                                // Committed: answered once the log is synced, here when no
                                // write waits (no hand-off to wait for), else beside the
                                // next batch.
                                (Some(s), Some((answers, Ok(())))) if rx.is_empty() => {
                                    s.sync_here(answers)
                                }
                                (Some(s), Some((answers, Ok(())))) => s.after_sync(answers),
                                (_, Some((answers, result))) => answer(answers, result),
                            }
                            if let Some(c) = &mut checkpointer {
                                c.committed(&conn);
                            }
                        }
                    })
                    .map_err(|e| StoreError::Unavailable(format!("no writer thread: {e}")))?;
            }
            None => {
                tokio::spawn(async move {
                    while let Some(first) = rx.recv().await {
                        let batch = fill(first, &mut rx);
                        let _guard = lock.lock().await;
                        write_any(&pool, engine, clock.as_ref(), batch).await;
                    }
                });
            }
        }
        Ok(Writer { queue })
    }

    async fn submit(&self, actor: Actor, work: Work) -> Result<Option<Erased>> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let closed = || StoreError::Unavailable("the store is closing".into());
        self.queue
            .send(Pending { actor, work, done })
            .await
            .map_err(|_| closed())?;
        wait.await.map_err(|_| closed())?
    }

    /// Records an event that goes with no change; returns once it is durable.
    pub(crate) async fn record(&self, actor: Actor, event: NewEvent) -> Result<()> {
        self.submit(actor, Work::Event(event)).await.map(|_| ())
    }

    /// Runs `change` in the next group commit; returns its output once it is durable, or
    /// its own error (then nothing of it was committed).
    pub(crate) async fn change<C: Change>(&self, actor: Actor, change: C) -> Result<C::Output> {
        let out = self
            .submit(actor, Work::Change(Box::new(change)))
            .await?
            .ok_or_else(|| StoreError::Corrupt("a change answered without output".into()))?;
        out.downcast::<C::Output>()
            .map(|b| *b)
            .map_err(|_| StoreError::Corrupt("a change answered with another type".into()))
    }
}

fn unavailable(e: &StoreError) -> StoreError {
    StoreError::Unavailable(format!("write failed: {}", e.code().as_str()))
}

/// What became of one write of the batch before the commit.
enum Outcome {
    /// Its change (if any) is in the transaction; its event is to be appended.
    Ready(Option<Erased>, NewEvent),
    /// Its change failed and was rolled back; nothing of it is committed.
    Refused(StoreError),
}

type Answers = Vec<(
    tokio::sync::oneshot::Sender<Result<Option<Erased>>>,
    Outcome,
)>;

/// Answers every write of a batch once its transaction has ended with `result`.
fn answer(answers: Answers, result: Result<()>) {
    if let Err(e) = &result {
        tracing::error!(error = %e, writes = answers.len(), "write batch failed");
    }
    for (done, outcome) in answers {
        let answer = match (outcome, &result) {
            (Outcome::Refused(e), _) => Err(e),
            (Outcome::Ready(out, _), Ok(())) => Ok(out),
            (Outcome::Ready(..), Err(e)) => Err(unavailable(e)),
        };
        let _ = done.send(answer);
    }
}

fn refuse_all(batch: Vec<Pending>, e: StoreError) {
    tracing::error!(error = %e, writes = batch.len(), "write batch failed to begin");
    for p in batch {
        let _ = p.done.send(Err(unavailable(&e)));
    }
}

/// A batch on SQLite, on the writer's thread: every statement in place. Returns the
/// batch's answers and how its transaction ended, `Ok` meaning committed (on a connection
/// that does not sync its commits, not yet durable: see `Syncer`), or `None` when the
/// batch ended before its statements and its callers are answered already.
fn write_lite(
    conn: &mut rusqlite::Connection,
    clock: &dyn model::clock::Clock,
    batch: Vec<Pending>,
) -> Option<(Answers, Result<()>)> {
    let mut c = Conn::Lite(conn);
    // IMMEDIATE: the write lock is taken at BEGIN, so no statement of the batch can meet a
    // busy database halfway (another process holding it waits for the busy timeout).
    if let Err(e) = run_now(c.batch("BEGIN IMMEDIATE")) {
        refuse_all(batch, e);
        return None;
    }
    let ran = run_now(async { Ok(run_batch(&mut c, Engine::Sqlite, clock, batch).await) });
    let (answers, keep) = match ran {
        Ok(r) => r,
        Err(e) => {
            // Unreachable (a batch on SQLite never waits): nothing can be answered, so the
            // callers see the writer's channel closed.
            tracing::error!(error = %e, "write batch failed");
            let _ = run_now(c.batch("ROLLBACK"));
            return None;
        }
    };
    let result = match keep {
        Ok(true) => run_now(c.batch("COMMIT")),
        Ok(false) => run_now(c.batch("ROLLBACK")),
        Err(e) => {
            let _ = run_now(c.batch("ROLLBACK"));
            Err(e)
        }
    };
    if result.is_err() && !conn_autocommit(&c) {
        let _ = run_now(c.batch("ROLLBACK"));
    }
    Some((answers, result))
}

/// Answers committed batches once the write-ahead log holding them is synced, on a thread
/// of its own: while it waits for the disk, the writer already runs the next batch, so a
/// commit's fsync overlaps the next batch's statements instead of following them. Every
/// batch committed while a sync runs is answered by the next one (group commit of the
/// syncs themselves). If a sync fails, its batches are answered with an error (their
/// changes may or may not survive a power loss; the error is logged) and the next batch
/// is synced again from the start.
struct Syncer {
    queue: std::sync::mpsc::Sender<Answers>,
    /// The writer's own handle on the log, for `sync_here`.
    wal: crate::lite::WalSync,
}

impl Syncer {
    fn spawn(mut wal: crate::lite::WalSync) -> Result<Syncer> {
        let own = wal.another();
        let (queue, rx) = std::sync::mpsc::channel::<Answers>();
        std::thread::Builder::new()
            .name("store-sync".into())
            .spawn(move || {
                // Ends when the writer thread (the only sender) ends.
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let synced = synced(&mut wal);
                    for answers in waiting {
                        answer(answers, synced.clone().map_err(StoreError::Unavailable));
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("no sync thread: {e}")))?;
        Ok(Syncer { queue, wal: own })
    }

    /// Syncs the log on the calling (writer's) thread and answers `answers`: for a batch
    /// no other write waits behind, where handing it to the sync thread would only add that
    /// thread's wake-up to its latency.
    fn sync_here(&mut self, answers: Answers) {
        let result = synced(&mut self.wal).map_err(StoreError::Unavailable);
        answer(answers, result);
    }

    /// Answers `answers` (of a committed batch) once the log is synced.
    fn after_sync(&self, answers: Answers) {
        if let Err(std::sync::mpsc::SendError(answers)) = self.queue.send(answers) {
            // The sync thread is gone (it never ends before the writer): nothing is durable.
            answer(
                answers,
                Err(StoreError::Unavailable("the log sync thread ended".into())),
            );
        }
    }
}

/// Syncs the log; a failure is logged, and its message is every waiting caller's error.
fn synced(wal: &mut crate::lite::WalSync) -> std::result::Result<(), String> {
    wal.sync().map_err(|e| {
        tracing::error!(error = %e, "syncing the write-ahead log failed");
        format!("the disk did not take the write: {e}")
    })
}

fn conn_autocommit(c: &Conn<'_>) -> bool {
    match c {
        Conn::Lite(c) => c.is_autocommit(),
        Conn::Any(_) => true,
    }
}

/// A batch on sqlx's connection (PostgreSQL).
async fn write_any(
    pool: &sqlx::AnyPool,
    engine: Engine,
    clock: &dyn model::clock::Clock,
    batch: Vec<Pending>,
) {
    let mut tx = match crate::begin(pool, engine).await {
        Ok(tx) => tx,
        Err(e) => return refuse_all(batch, e),
    };
    let (answers, keep) = run_batch(&mut Conn::Any(&mut tx), engine, clock, batch).await;
    let result = match keep {
        Ok(true) => tx.commit().await.map_err(StoreError::from),
        Ok(false) => tx.rollback().await.map_err(StoreError::from),
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    };
    answer(answers, result);
}

/// Runs a batch's writes inside the open transaction: each change in its own savepoint,
/// then the events of the writes that stand. Returns each write's outcome and what to do
/// with the transaction: commit it (`Ok(true)`), roll it back because it holds nothing
/// (`Ok(false)`: the batch's only write was refused), or roll it back because it broke.
async fn run_batch(
    conn: &mut Conn<'_>,
    engine: Engine,
    clock: &dyn model::clock::Clock,
    batch: Vec<Pending>,
) -> (Answers, Result<bool>) {
    // A lone write needs no savepoint: if it fails, the whole transaction is rolled back.
    let savepoints = batch.len() > 1;
    let mut answers = Vec::with_capacity(batch.len());
    let mut actors = Vec::with_capacity(batch.len());
    let mut broken: Option<StoreError> = None;
    for p in batch {
        let outcome = match p.work {
            Work::Event(ev) => Outcome::Ready(None, ev),
            Work::Change(_) if broken.is_some() => {
                Outcome::Refused(unavailable(broken.as_ref().expect("checked")))
            }
            Work::Change(run) => {
                let mut failed_savepoint = None;
                if savepoints {
                    if let Err(e) = conn.batch("SAVEPOINT gantry_write").await {
                        failed_savepoint = Some(e);
                    }
                }
                match failed_savepoint {
                    Some(e) => {
                        broken = Some(e);
                        Outcome::Refused(unavailable(broken.as_ref().expect("set")))
                    }
                    None => match run.run(conn).await {
                        Ok((out, ev)) => {
                            if savepoints {
                                if let Err(e) = conn.batch("RELEASE SAVEPOINT gantry_write").await {
                                    broken = Some(e);
                                }
                            }
                            Outcome::Ready(Some(out), ev)
                        }
                        Err(e) => {
                            if !savepoints {
                                // The only write of the batch: roll it all back.
                                answers.push((p.done, Outcome::Refused(e)));
                                return (answers, Ok(false));
                            }
                            if let Err(re) = conn
                                .batch(
                                    "ROLLBACK TO SAVEPOINT gantry_write; \
                                     RELEASE SAVEPOINT gantry_write",
                                )
                                .await
                            {
                                broken = Some(re);
                            }
                            Outcome::Refused(e)
                        }
                    },
                }
            }
        };
        actors.push(p.actor);
        answers.push((p.done, outcome));
    }
    if let Some(e) = broken {
        return (answers, Err(e));
    }
    let events: Vec<(&Actor, &NewEvent)> = answers
        .iter()
        .zip(&actors)
        .filter_map(|((_, o), a)| match o {
            Outcome::Ready(_, ev) => Some((a, ev)),
            Outcome::Refused(_) => None,
        })
        .collect();
    let appended = append_all(conn, engine, &events, clock.now()).await;
    drop(events);
    match appended {
        Ok(()) => (answers, Ok(true)),
        Err(e) => (answers, Err(e)),
    }
}
