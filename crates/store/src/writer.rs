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
//! This module must never answer a caller before the commit that holds its write, never
//! let one change's failure undo or leak into another's, and never commit a change without
//! its event.

use std::any::Any as StdAny;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::{AnyConnection, Executor};

use crate::audit::{append_all, NewEvent};
use crate::{Actor, Engine, Result, StoreError};

/// A boxed future that may borrow for `'c`.
pub(crate) type BoxFut<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// A change run by the writer inside the batch's transaction. It makes its checks and its
/// change with the connection it is given and returns what its caller gets back and its
/// audit event. On an error it may have changed rows: the writer rolls them back.
pub(crate) trait Change: Send + 'static {
    type Output: Send + 'static;
    fn apply(self, conn: &mut AnyConnection) -> BoxFut<'_, Result<(Self::Output, NewEvent)>>;
}

/// Most writes one group commit holds.
const MAX_BATCH: usize = 256;

type Erased = Box<dyn StdAny + Send>;

/// A type-erased `Change`.
trait Run: Send {
    fn run(self: Box<Self>, conn: &mut AnyConnection) -> BoxFut<'_, Result<(Erased, NewEvent)>>;
}

impl<C: Change> Run for C {
    fn run(self: Box<Self>, conn: &mut AnyConnection) -> BoxFut<'_, Result<(Erased, NewEvent)>> {
        Box::pin(async move {
            let (out, ev) = (*self).apply(conn).await?;
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

impl Writer {
    pub(crate) fn spawn(
        pool: sqlx::AnyPool,
        engine: Engine,
        lock: Arc<tokio::sync::Mutex<()>>,
        clock: Arc<dyn model::clock::Clock>,
    ) -> Writer {
        let (queue, mut rx) = tokio::sync::mpsc::channel::<Pending>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                write_batch(&pool, engine, &lock, clock.as_ref(), batch).await;
            }
        });
        Writer { queue }
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

async fn write_batch(
    pool: &sqlx::AnyPool,
    engine: Engine,
    lock: &tokio::sync::Mutex<()>,
    clock: &dyn model::clock::Clock,
    batch: Vec<Pending>,
) {
    let _guard = lock.lock().await;
    let mut tx = match crate::begin(pool, engine).await {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(error = %e, writes = batch.len(), "write batch failed to begin");
            for p in batch {
                let _ = p.done.send(Err(unavailable(&e)));
            }
            return;
        }
    };
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
                    if let Err(e) = (&mut *tx).execute("SAVEPOINT gantry_write").await {
                        failed_savepoint = Some(StoreError::from(e));
                    }
                }
                match failed_savepoint {
                    Some(e) => {
                        broken = Some(e);
                        Outcome::Refused(unavailable(broken.as_ref().expect("set")))
                    }
                    None => match run.run(&mut tx).await {
                        Ok((out, ev)) => {
                            if savepoints {
                                if let Err(e) =
                                    (&mut *tx).execute("RELEASE SAVEPOINT gantry_write").await
                                {
                                    broken = Some(e.into());
                                }
                            }
                            Outcome::Ready(Some(out), ev)
                        }
                        Err(e) => {
                            if savepoints {
                                if let Err(re) = (&mut *tx)
                                    .execute(
                                        "ROLLBACK TO SAVEPOINT gantry_write; \
                                         RELEASE SAVEPOINT gantry_write",
                                    )
                                    .await
                                {
                                    broken = Some(re.into());
                                }
                            } else {
                                // The only write of the batch: roll it all back.
                                let _ = tx.rollback().await;
                                let _ = p.done.send(Err(e));
                                return;
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
    let result = match broken {
        Some(e) => Err(e),
        None => {
            let events: Vec<(&Actor, &NewEvent)> = answers
                .iter()
                .zip(&actors)
                .filter_map(|((_, o), a)| match o {
                    Outcome::Ready(_, ev) => Some((a, ev)),
                    Outcome::Refused(_) => None,
                })
                .collect();
            match append_all(&mut tx, engine, &events, clock.now()).await {
                Ok(()) => tx.commit().await.map_err(StoreError::from),
                Err(e) => Err(e),
            }
        }
    };
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
