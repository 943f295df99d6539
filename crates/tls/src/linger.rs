//! Lingering close: a connection that answered a request before reading all of its body is
//! shut down for writing first, and what the client still sends is read and dropped for a
//! bounded time before the socket is closed, as nginx's `lingering_close` does.
//!
//! Why: a server answers such a request (a 413 for a body over the limit, a 415 for the
//! wrong content type, a 401 before the body is looked at) and then closes the connection,
//! since it cannot be reused. Closing a socket with unread bytes in its receive queue makes
//! the kernel send a reset instead of a FIN: the client's sending of the rest of its body
//! fails, and most clients (Python's requests among them) then report that failure and
//! never read the JSON error that was sent. hyper has no such option, so the API's and the
//! edge's client streams are wrapped (the edge's own HTTP/1.1 path shuts down through the
//! same wrapper).
//!
//! The wrapper lingers only when `Unread::mark` was called for its connection (a response
//! may have left request bytes unread), so a connection closed after ordinary requests
//! closes at once. It must never read for longer than `LINGER_TIME`, nor hold a connection
//! open after the client has closed its side.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Longest a closing connection reads and drops what its client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// Longest it waits for the client's next bytes (or its close) while lingering.
pub const LINGER_IDLE: Duration = Duration::from_secs(1);

/// Set when a response may leave request bytes unread on its connection.
#[derive(Clone, Default)]
pub struct Unread(Arc<AtomicBool>);

impl Unread {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Records an answer: a request that came with a body and was answered with an error
    /// status (`status` 400 or more) may have been answered before its body was read.
    pub fn answered(&self, had_body: bool, status: u16) {
        if had_body && status >= 400 {
            self.mark();
        }
    }

    fn is_marked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

enum State {
    Open,
    Draining {
        deadline: Instant,
        idle: Pin<Box<Sleep>>,
    },
    Closed,
}

/// A stream whose shutdown lingers when its connection was marked `Unread`.
pub struct Lingering<S> {
    inner: S,
    unread: Unread,
    state: State,
}

impl<S> Lingering<S> {
    pub fn new(inner: S, unread: Unread) -> Lingering<S> {
        Lingering {
            inner,
            unread,
            state: State::Open,
        }
    }
}

/// Shuts `io` down for writing, lingering first if `unread` (for a server that drives its
/// connection itself rather than through hyper).
pub async fn shutdown<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    unread: bool,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let flag = Unread::default();
    if unread {
        flag.mark();
    }
    Lingering::new(io, flag).shutdown().await
}

impl<S: AsyncRead + Unpin> AsyncRead for Lingering<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Open => {
                    // The answer and (over TLS) close_notify go out, then the FIN.
                    std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    if !this.unread.is_marked() {
                        this.state = State::Closed;
                        continue;
                    }
                    this.state = State::Draining {
                        deadline: Instant::now() + LINGER_TIME,
                        idle: Box::pin(tokio::time::sleep(LINGER_IDLE)),
                    };
                }
                State::Draining { deadline, idle } => {
                    if idle.as_mut().poll(cx).is_ready() {
                        this.state = State::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 8192];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                        Poll::Pending => return Poll::Pending,
                        // The client closed its side (or broke the stream): done.
                        Poll::Ready(Err(_)) => this.state = State::Closed,
                        Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                            this.state = State::Closed
                        }
                        Poll::Ready(Ok(())) => {
                            let now = Instant::now();
                            if now >= *deadline {
                                this.state = State::Closed;
                            } else {
                                let next = (now + LINGER_IDLE).min(*deadline);
                                idle.as_mut().reset(next);
                            }
                        }
                    }
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}
