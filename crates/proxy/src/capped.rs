//! A client's request body streamed upstream under its route's size limit, for bodies whose
//! length is not announced (chunked HTTP/1.1, HTTP/2 without `content-length`): a body that
//! announces its length is refused before anything is sent, one that does not is counted
//! as it passes and cut off with an error the moment it goes over, which aborts the
//! upstream request. `Capped::over` tells the forwarder that this, not the upstream, broke
//! the exchange, so the client gets a 413 and the endpoint is not counted as failing.
//!
//! It must never pass a byte beyond the limit.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// The error that ends a body over its limit.
#[derive(Debug)]
pub(crate) struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body is larger than the route's limit")
    }
}

impl std::error::Error for TooLarge {}

#[derive(Debug)]
pub(crate) struct Capped {
    inner: Incoming,
    /// Bytes still allowed.
    left: u64,
    over: Arc<AtomicBool>,
}

impl Capped {
    pub(crate) fn new(inner: Incoming, limit: u64) -> Capped {
        Capped {
            inner,
            left: limit,
            over: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Turns true once the body went over its limit (kept after the body is dropped).
    pub(crate) fn over(&self) -> Arc<AtomicBool> {
        self.over.clone()
    }
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len() as u64;
            if n > self.left {
                self.left = 0;
                self.over.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(Box::new(TooLarge))));
            }
            self.left -= n;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
