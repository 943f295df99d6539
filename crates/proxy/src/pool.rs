//! Upstream connections of one worker: per endpoint address, the idle HTTP/1.1 keep-alive
//! connections (most recently used first, at most `MAX_IDLE`, closed after `IDLE_TIMEOUT`)
//! and one shared HTTP/2 connection for h2c upstreams. A worker runtime has pools of its
//! own: their connections are tasks of that runtime and only its requests use them, so
//! the pool's lock is never contended. An HTTP/1.1 connection goes back to the pool when
//! its response body has been read to the end (`UpstreamBody`), not before.
//!
//! It must never hand a connection busy with a request to another one, nor send a request
//! twice: a request goes again to a new connection only when the reused one was closed
//! before any of the request was written.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

/// The body of a request sent upstream.
pub(crate) type UpBody = Either<crate::capped::Capped, Empty<Bytes>>;
type H1 = http1::SendRequest<UpBody>;
type H2 = http2::SendRequest<UpBody>;

/// An idle connection is closed after this long.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often idle connections are checked for `IDLE_TIMEOUT`.
const REAP_EVERY: Duration = Duration::from_secs(10);
/// Most idle HTTP/1.1 connections kept per endpoint (per worker).
const MAX_IDLE: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Initial read buffer of a connection of the edge's own HTTP/1.1 path.
pub(crate) const RAW_BUF: usize = 8 * 1024;
/// Room a read of a head into such a buffer asks for. Less than `RAW_BUF`: a buffer
/// emptied by each request serves many more before its start has to be moved back (each
/// request's bytes are consumed from the front, which shrinks the room behind them).
pub(crate) const READ_ROOM: usize = 4 * 1024;

/// Why a request got no answer from an endpoint.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened: the request never reached the upstream, and is given
    /// back for another endpoint (so the caller keeps no copy of it for a retry).
    Connect(std::io::Error, Option<Box<Request<UpBody>>>),
    /// The connection failed while the request was sent or its answer awaited.
    Http(hyper::Error),
}

impl SendError {
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(..))
    }

    /// The request, when it never reached the upstream (a connect failure).
    pub(crate) fn take_request(&mut self) -> Option<Request<UpBody>> {
        match self {
            SendError::Connect(_, req) => req.take().map(|r| *r),
            SendError::Http(_) => None,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e, _) => write!(f, "connect: {e}"),
            SendError::Http(e) => write!(f, "{e}"),
        }
    }
}

/// FNV-1a over the few bytes of a socket address: the pool's map needs no DoS-resistant
/// hash (its keys are the route table's addresses, not the clients').
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

#[derive(Default)]
struct Slot {
    idle: Vec<(H1, Instant)>,
    /// Idle connections of the edge's own HTTP/1.1 path (`h1`), each with the instant it
    /// expires (kept rather than when it went idle: no subtraction per request).
    raw: Vec<(Raw, Instant)>,
    h2: Option<H2>,
}

/// An HTTP/1.1 connection to an upstream for the edge's own HTTP/1.1 path: the socket and
/// its read buffer (empty whenever the connection is idle).
pub(crate) struct Raw {
    pub(crate) tcp: tokio::net::TcpStream,
    pub(crate) buf: bytes::BytesMut,
    /// Whether it served a request before (a reused connection may have been closed by
    /// the upstream meanwhile).
    pub(crate) reused: bool,
}

/// The upstream connections of one worker.
#[derive(Default)]
pub(crate) struct Pool {
    slots: Mutex<HashMap<SocketAddr, Slot, BuildHasherDefault<AddrHasher>>>,
    reaper: AtomicBool,
}

/// A connection to give back to its pool once its response body is read.
pub(crate) struct Checkin {
    pool: Arc<Pool>,
    addr: SocketAddr,
    conn: H1,
}

impl Pool {
    /// Sends `req` to `addr` over HTTP/1.1 on an idle connection, or a new one. With the
    /// response comes the connection, to be given back (`UpstreamBody`) once its body is
    /// read.
    pub(crate) async fn send_http1(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut req: Request<UpBody>,
    ) -> Result<(Response<Incoming>, Checkin), SendError> {
        while let Some(mut conn) = self.checkout(addr) {
            if !conn.is_ready() && conn.ready().await.is_err() {
                continue;
            }
            match conn.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.checkin_later(addr, conn))),
                Err(mut e) => match e.take_message() {
                    // Closed before anything was written: try the next connection.
                    Some(back) => req = back,
                    None => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        let io = match self.connect(addr).await {
            Ok(tcp) => TokioIo::new(tcp),
            Err(e) => return Err(SendError::Connect(e, Some(Box::new(req)))),
        };
        let (mut conn, task) = match http1::Builder::new().handshake(io).await {
            Ok(c) => c,
            Err(e) => {
                let e = std::io::Error::other(e);
                return Err(SendError::Connect(e, Some(Box::new(req))));
            }
        };
        tokio::spawn(async move {
            if let Err(e) = task.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        let resp = conn.send_request(req).await.map_err(SendError::Http)?;
        Ok((resp, self.checkin_later(addr, conn)))
    }

    /// Sends `req` to `addr` over HTTP/2 (prior knowledge), on the endpoint's shared
    /// connection or a new one.
    pub(crate) async fn send_h2c(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut req: Request<UpBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let shared = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .get(&addr)
                .and_then(|s| s.h2.as_ref())
                .filter(|c| !c.is_closed())
                .cloned()
        };
        if let Some(mut conn) = shared {
            if conn.ready().await.is_ok() {
                match conn.try_send_request(req).await {
                    Ok(resp) => return Ok(resp),
                    Err(mut e) => match e.take_message() {
                        Some(back) => req = back,
                        None => return Err(SendError::Http(e.into_error())),
                    },
                }
            }
        }
        let io = match self.connect(addr).await {
            Ok(tcp) => TokioIo::new(tcp),
            Err(e) => return Err(SendError::Connect(e, Some(Box::new(req)))),
        };
        let handshake = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await;
        let (mut conn, task) = match handshake {
            Ok(c) => c,
            Err(e) => {
                let e = std::io::Error::other(e);
                return Err(SendError::Connect(e, Some(Box::new(req))));
            }
        };
        tokio::spawn(async move {
            if let Err(e) = task.await {
                tracing::debug!(error = %e, "upstream h2c connection ended");
            }
        });
        {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(addr).or_default().h2 = Some(conn.clone());
        }
        conn.send_request(req).await.map_err(SendError::Http)
    }

    async fn connect(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            }
        };
        let _ = tcp.set_nodelay(true);
        self.start_reaper();
        Ok(tcp)
    }

    /// A new connection to `addr` for the edge's own HTTP/1.1 path.
    pub(crate) async fn connect_raw(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<Raw> {
        let tcp = self.connect(addr).await?;
        Ok(Raw {
            tcp,
            buf: bytes::BytesMut::with_capacity(RAW_BUF),
            reused: false,
        })
    }

    /// The most recently used idle connection of the edge's own HTTP/1.1 path to `addr`
    /// that is still open: one the upstream closed (or sent bytes on, unasked) is dropped.
    /// The check costs no system call while the socket has not turned readable. `now`: the
    /// caller's clock reading, taken just before.
    pub(crate) fn checkout_raw(&self, addr: SocketAddr, now: Instant) -> Option<Raw> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots.get_mut(&addr)?;
        while let Some((mut conn, expires)) = slot.raw.pop() {
            if now >= expires {
                continue;
            }
            match conn.tcp.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    conn.reused = true;
                    return Some(conn);
                }
                _ => continue,
            }
        }
        None
    }

    /// Gives back a connection of the edge's own HTTP/1.1 path whose exchange ended
    /// cleanly (the whole response read, nothing more), idle from `now` (read just before).
    pub(crate) fn checkin_raw(&self, addr: SocketAddr, mut conn: Raw, now: Instant) {
        conn.buf.clear();
        // A buffer grown by a large answer is not kept idle.
        if conn.buf.capacity() > 4 * RAW_BUF {
            conn.buf = bytes::BytesMut::with_capacity(RAW_BUF);
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up before it is made: the slot is there but for the first connection.
        let slot = match slots.get_mut(&addr) {
            Some(slot) => slot,
            None => slots.entry(addr).or_default(),
        };
        if slot.raw.len() < MAX_IDLE {
            slot.raw.push((conn, now + IDLE_TIMEOUT));
        }
    }

    /// The most recently used idle connection to `addr` that is still open.
    fn checkout(&self, addr: SocketAddr) -> Option<H1> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots.get_mut(&addr)?;
        let now = Instant::now();
        while let Some((conn, since)) = slot.idle.pop() {
            if !conn.is_closed() && now.duration_since(since) < IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    fn checkin_later(self: &Arc<Self>, addr: SocketAddr, conn: H1) -> Checkin {
        Checkin {
            pool: self.clone(),
            addr,
            conn,
        }
    }

    fn checkin(&self, addr: SocketAddr, conn: H1) {
        if conn.is_closed() {
            return;
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots.entry(addr).or_default();
        if slot.idle.len() < MAX_IDLE {
            slot.idle.push((conn, Instant::now()));
        }
    }

    /// Closes idle connections past `IDLE_TIMEOUT` every `REAP_EVERY`, on the runtime of
    /// the first connection, for as long as the pool lives.
    fn start_reaper(self: &Arc<Self>) {
        if self.reaper.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Pool> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.reap(Instant::now());
            }
        });
    }

    fn reap(&self, now: Instant) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|_, slot| {
            slot.idle
                .retain(|(c, since)| !c.is_closed() && now.duration_since(*since) < IDLE_TIMEOUT);
            slot.raw.retain(|(_, expires)| now < *expires);
            if slot.h2.as_ref().is_some_and(|c| c.is_closed()) {
                slot.h2 = None;
            }
            !slot.idle.is_empty() || !slot.raw.is_empty() || slot.h2.is_some()
        });
    }

    /// Idle HTTP/1.1 connections to `addr` (tests).
    #[cfg(test)]
    fn idle(&self, addr: SocketAddr) -> usize {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.get(&addr).map_or(0, |s| s.idle.len())
    }
}

/// An upstream response body; an HTTP/1.1 connection goes back to its pool once the body
/// has been read to its end (a body dropped before that closes the connection instead).
pub struct UpstreamBody {
    inner: Incoming,
    checkin: Option<Checkin>,
}

impl UpstreamBody {
    pub(crate) fn new(inner: Incoming, checkin: Option<Checkin>) -> UpstreamBody {
        UpstreamBody { inner, checkin }
    }

    fn give_back(&mut self) {
        if let Some(c) = self.checkin.take() {
            c.pool.checkin(c.addr, c.conn);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.give_back(),
            Poll::Ready(Some(Err(_))) => this.checkin = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.checkin.is_some() && self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// An upstream answering "ok" on keep-alive connections; counts its connections.
    async fn upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (addr, conns)
    }

    fn get() -> Request<UpBody> {
        Request::get("/")
            .header(http::header::HOST, "up.test")
            .body(Either::Right(Empty::new()))
            .unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_is_read() {
        let (addr, conns) = upstream().await;
        let pool = Arc::new(Pool::default());
        for _ in 0..5 {
            let (resp, checkin) = pool.send_http1(addr, get()).await.unwrap();
            let body = UpstreamBody::new(resp.into_body(), Some(checkin));
            assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"ok");
            assert_eq!(pool.idle(addr), 1);
        }
        assert_eq!(conns.load(Ordering::Relaxed), 1);
        // Two at once: the busy connection is not handed out, a second one is opened.
        let (r1, c1) = pool.send_http1(addr, get()).await.unwrap();
        let (r2, c2) = pool.send_http1(addr, get()).await.unwrap();
        assert_eq!(conns.load(Ordering::Relaxed), 2);
        let b1 = UpstreamBody::new(r1.into_body(), Some(c1));
        let b2 = UpstreamBody::new(r2.into_body(), Some(c2));
        b1.collect().await.unwrap();
        b2.collect().await.unwrap();
        assert_eq!(pool.idle(addr), 2);
        // A body dropped before its end does not give its connection back.
        let (r3, c3) = pool.send_http1(addr, get()).await.unwrap();
        assert_eq!(pool.idle(addr), 1);
        drop(UpstreamBody::new(r3.into_body(), Some(c3)));
        assert_eq!(pool.idle(addr), 1);
        // Idle connections past the timeout are closed.
        pool.reap(Instant::now() + IDLE_TIMEOUT);
        assert_eq!(pool.idle(addr), 0);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let pool = Arc::new(Pool::default());
        let Err(e) = pool.send_http1(addr, get()).await else {
            panic!("a closed port answered");
        };
        assert!(e.is_connect(), "{e}");
    }
}
