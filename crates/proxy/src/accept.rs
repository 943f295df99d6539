//! Where the accept loop gets its connections: a plain listener, or a worker's listener
//! that keeps the workers of one address evenly loaded.
//!
//! Each worker runtime has a socket of its own (`SO_REUSEPORT`), and the kernel picks the
//! socket of a new connection by a hash of its addresses: fine for many short connections,
//! uneven for a few long-lived ones (64 keep-alive connections over 2 workers split 40/24
//! often enough), and then one worker's thread does most of the work while the other
//! idles. So, as Envoy's exact connection balancer does, a worker that accepts a
//! connection while another worker has fewer open hands it over (the socket moves to the
//! other runtime before any byte is read). A connection is moved at most once, at accept
//! time; nothing here touches requests.
//!
//! Must never lose a connection while the workers run: when the hand-over fails (the
//! other worker is stopping, its queue is full), the accepting worker serves it. At
//! shutdown, one handed over and not yet taken is closed, like one still in the kernel's
//! backlog.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Connections handed to one worker and not yet taken; beyond it, the accepting worker
/// serves the connection itself.
const HANDOVER_QUEUE: usize = 1024;

/// A listening socket for the accept loop. `Open` lives as long as the connection's task.
pub(crate) trait Accept: Send {
    type Open: Send + 'static;

    fn accept(
        &mut self,
    ) -> impl std::future::Future<Output = std::io::Result<(TcpStream, SocketAddr, Self::Open)>> + Send;
}

impl Accept for TcpListener {
    type Open = ();

    async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr, ())> {
        let (tcp, peer) = TcpListener::accept(self).await?;
        Ok((tcp, peer, ()))
    }
}

type Handover = (std::net::TcpStream, SocketAddr);

/// The open connections of each worker of one address, and the way to hand one over.
pub(crate) struct Balance {
    open: Box<[AtomicUsize]>,
    queues: Vec<mpsc::Sender<Handover>>,
}

impl Balance {
    /// A balance over `workers` workers, and each worker's queue of handed-over connections.
    pub(crate) fn new(workers: usize) -> (Arc<Balance>, Vec<mpsc::Receiver<Handover>>) {
        let (queues, inboxes) = (0..workers).map(|_| mpsc::channel(HANDOVER_QUEUE)).unzip();
        let open = (0..workers).map(|_| AtomicUsize::new(0)).collect();
        (Arc::new(Balance { open, queues }), inboxes)
    }

    /// The open connections of each worker.
    pub(crate) fn open(&self) -> Vec<usize> {
        self.open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// The worker with the fewest open connections, `me` unless another has fewer.
    fn least_busy(&self, me: usize) -> usize {
        let load = |i: usize| self.open[i].load(Ordering::Relaxed);
        let mut best = me;
        for i in 0..self.open.len() {
            if load(i) < load(best) {
                best = i;
            }
        }
        best
    }

    /// Counts a connection open on worker `i` until the returned guard drops.
    fn opened(self: &Arc<Balance>, i: usize) -> Open {
        self.open[i].fetch_add(1, Ordering::Relaxed);
        self.counted(i)
    }

    /// The guard of a connection counted on worker `i` already.
    fn counted(self: &Arc<Balance>, i: usize) -> Open {
        Open {
            balance: self.clone(),
            worker: i,
        }
    }
}

/// One open connection on one worker, counted while it lives.
pub(crate) struct Open {
    balance: Arc<Balance>,
    worker: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.balance.open[self.worker].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Worker `me`'s listener: its own socket and the connections other workers hand it,
/// counting the connections it serves.
pub(crate) struct WorkerListener<'a> {
    pub(crate) inner: TcpListener,
    pub(crate) me: usize,
    pub(crate) balance: Arc<Balance>,
    pub(crate) inbox: mpsc::Receiver<Handover>,
    pub(crate) served: &'a AtomicU64,
}

impl WorkerListener<'_> {
    /// Takes a connection accepted here, or hands it to a worker with fewer open
    /// connections (then `None`).
    fn place(&self, tcp: TcpStream, peer: SocketAddr) -> Option<(TcpStream, SocketAddr, Open)> {
        let target = self.balance.least_busy(self.me);
        if target == self.me {
            return Some((tcp, peer, self.balance.opened(self.me)));
        }
        // Counted there at once, so the next accept (here or there) sees it; the receiving
        // worker takes over the count (`adopt`).
        let there = &self.balance.open[target];
        there.fetch_add(1, Ordering::Relaxed);
        let back = match tcp.into_std() {
            Ok(std) => match self.balance.queues[target].try_send((std, peer)) {
                Ok(()) => return None,
                Err(mpsc::error::TrySendError::Full(h) | mpsc::error::TrySendError::Closed(h)) => h,
            },
            Err(e) => {
                there.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(client = %peer, error = %e, "connection lost before hand-over");
                return None;
            }
        };
        there.fetch_sub(1, Ordering::Relaxed);
        self.adopt_as(back, self.balance.opened(self.me))
    }

    /// A connection handed over by another worker (counted here already).
    fn adopt(&self, h: Handover) -> Option<(TcpStream, SocketAddr, Open)> {
        self.adopt_as(h, self.balance.counted(self.me))
    }

    fn adopt_as(&self, (std, peer): Handover, open: Open) -> Option<(TcpStream, SocketAddr, Open)> {
        match TcpStream::from_std(std) {
            Ok(tcp) => Some((tcp, peer, open)),
            Err(e) => {
                tracing::warn!(client = %peer, error = %e, "connection lost in hand-over");
                None
            }
        }
    }
}

impl Accept for WorkerListener<'_> {
    type Open = Open;

    async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr, Open)> {
        loop {
            let got = tokio::select! {
                biased;
                Some(h) = self.inbox.recv() => self.adopt(h),
                r = self.inner.accept() => {
                    let (tcp, peer) = r?;
                    self.place(tcp, peer)
                }
            };
            if let Some(conn) = got {
                self.served.fetch_add(1, Ordering::Relaxed);
                return Ok(conn);
            }
        }
    }
}
