//! HTTP/1.1 on the wire, for the edge's own HTTP/1.1 path (`h1`): how a message's body is
//! delimited (RFC 9112 section 6), a decoder that finds where a chunked body ends, the
//! writing of heads, and an IO that replays bytes already read (to hand a connection over
//! to hyper part-way).
//!
//! Parsing of heads is httparse's (the parser hyper uses); this module holds only what
//! the edge needs around it. It must never guess a message's length: anything ambiguous
//! (two different lengths, a length that is not a number) is an error, never a choice,
//! because a proxy and its upstream that disagree on where a message ends can be made to
//! smuggle requests.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest request or response head read.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding, to its last chunk and trailers.
    Chunked,
    /// Until the sender closes the connection (responses only).
    Close,
}

/// A message's `content-length` fields, read one by one as a head is parsed: one number,
/// or the same number repeated (`5, 5` or two fields of `5`); anything else is `Err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContentLength(Result<Option<u64>, ()>);

impl Default for ContentLength {
    fn default() -> ContentLength {
        ContentLength(Ok(None))
    }
}

impl ContentLength {
    /// Adds one `content-length` field's value.
    pub(crate) fn read(&mut self, value: &[u8]) {
        // The usual value, one number, is read without splitting it.
        if !value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit) {
            let n = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            self.add(n);
            return;
        }
        for part in value.split(|b| *b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                self.0 = Err(());
                return;
            }
            let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            self.add(n);
        }
    }

    /// Adds one number: the same as those before, or the whole is `Err`.
    fn add(&mut self, n: u64) {
        match self.0 {
            Ok(Some(m)) if m != n => self.0 = Err(()),
            Ok(_) => self.0 = Ok(Some(n)),
            Err(()) => {}
        }
    }

    /// The length the fields give, if any.
    pub(crate) fn value(self) -> Result<Option<u64>, ()> {
        self.0
    }
}

/// Whether the last transfer coding of a `transfer-encoding` value is `chunked`.
pub(crate) fn ends_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// What a `connection` field's value says, read in one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionTokens {
    pub(crate) close: bool,
    pub(crate) keep_alive: bool,
    pub(crate) upgrade: bool,
    /// It names other fields (which are then hop-by-hop too).
    pub(crate) others: bool,
}

impl ConnectionTokens {
    /// Adds what `value` (one `connection` field) says.
    pub(crate) fn read(&mut self, value: &[u8]) {
        // The usual values, one token, are read without splitting them.
        if value.eq_ignore_ascii_case(b"keep-alive") {
            self.keep_alive = true;
            return;
        }
        if value.eq_ignore_ascii_case(b"close") {
            self.close = true;
            return;
        }
        for t in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if t.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if t.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if t.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else if !t.is_empty() && !is_hop_by_hop(t) {
                self.others = true;
            }
        }
    }
}

/// Whether a comma-separated header value lists `token` (any case).
pub(crate) fn lists(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether `name` is a hop-by-hop field (RFC 9110 section 7.6.1), in any case.
#[inline]
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    // By length first: every field of every head is checked, and most names have a length
    // no hop-by-hop name has.
    let names: &[&[u8]] = match name.len() {
        2 => &[b"te"],
        7 => &[b"trailer", b"upgrade"],
        10 => &[b"connection", b"keep-alive"],
        16 => &[b"proxy-connection"],
        17 => &[b"transfer-encoding"],
        18 => &[b"proxy-authenticate"],
        19 => &[b"proxy-authorization"],
        _ => return false,
    };
    names.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// The framing of a response (RFC 9112 section 6.3) with `status`, to a request that was
/// (`head`) or was not a HEAD, from its `transfer-encoding` and `content-length` values.
pub(crate) fn response_framing(
    status: u16,
    head: bool,
    transfer_encoding: Option<&[u8]>,
    length: Option<u64>,
) -> Framing {
    if head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Framing::Empty;
    }
    match (transfer_encoding, length) {
        (Some(te), _) if ends_chunked(te) => Framing::Chunked,
        (Some(_), _) => Framing::Close,
        (None, Some(0)) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::Close,
    }
}

/// Why a chunked body could not be read.
#[derive(Debug)]
pub(crate) struct BadChunk;

/// Follows a chunked body (RFC 9112 section 7.1) through the bytes of the stream without
/// copying them: the caller passes them on as they are and learns where the body ends.
#[derive(Debug, Default)]
pub(crate) struct ChunkedEnd {
    state: Chunk,
    /// Data bytes left in the current chunk.
    left: u64,
    /// Bytes of the current size line or trailer line (bounded).
    line: usize,
    /// Whether the current trailer line has anything in it.
    trailer_text: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Hex digits of a chunk's size.
    #[default]
    Size,
    /// After the size: extensions, up to CR LF.
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// Trailer fields after the last chunk, ending with an empty line.
    Trailer,
    TrailerLf,
    Done,
}

/// Longest chunk-size line or trailer line accepted.
const MAX_LINE: usize = 4096;

impl ChunkedEnd {
    pub(crate) fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Reads `input`; answers how many of its bytes belong to the body (all of them, unless
    /// the body ends inside `input`).
    pub(crate) fn feed(&mut self, input: &[u8]) -> Result<usize, BadChunk> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                Chunk::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        if self.left >> 59 != 0 {
                            return Err(BadChunk);
                        }
                        self.left = self.left * 16 + d;
                        self.line += 1;
                    }
                    b';' | b' ' | b'\t' if self.line > 0 => self.state = Chunk::Ext,
                    b'\r' if self.line > 0 => self.state = Chunk::SizeLf,
                    _ => return Err(BadChunk),
                },
                Chunk::Ext => {
                    self.line += 1;
                    if b == b'\r' {
                        self.state = Chunk::SizeLf;
                    } else if b == b'\n' || self.line > MAX_LINE {
                        return Err(BadChunk);
                    }
                }
                Chunk::SizeLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.line = 0;
                    self.state = if self.left == 0 {
                        self.trailer_text = false;
                        Chunk::Trailer
                    } else {
                        Chunk::Data
                    };
                }
                Chunk::Data => {
                    let n = (self.left).min((input.len() - i) as u64) as usize;
                    self.left -= n as u64;
                    i += n;
                    if self.left == 0 {
                        self.state = Chunk::DataCr;
                    }
                    continue;
                }
                Chunk::DataCr => {
                    if b != b'\r' {
                        return Err(BadChunk);
                    }
                    self.state = Chunk::DataLf;
                }
                Chunk::DataLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.state = Chunk::Size;
                }
                Chunk::Trailer => {
                    self.line += 1;
                    if b == b'\r' {
                        self.state = Chunk::TrailerLf;
                    } else if b == b'\n' || self.line > MAX_LINE {
                        return Err(BadChunk);
                    } else {
                        self.trailer_text = true;
                    }
                }
                Chunk::TrailerLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.line = 0;
                    if self.trailer_text {
                        self.trailer_text = false;
                        self.state = Chunk::Trailer;
                    } else {
                        self.state = Chunk::Done;
                        return Ok(i + 1);
                    }
                }
                Chunk::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }
}

/// Appends a status line for `status` (`HTTP/1.1 200 OK\r\n`).
pub(crate) fn status_line(out: &mut Vec<u8>, status: http::StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one header field line. Inlined: a head's writer calls it for nearly every field.
#[inline]
pub(crate) fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends a decimal number.
pub(crate) fn decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// An IO that first yields bytes already read from it (a request head read by the edge's
/// own HTTP/1.1 path, handed with its connection to hyper), then reads from it again.
pub(crate) struct Rewind<I> {
    pre: Bytes,
    inner: I,
}

impl<I> Rewind<I> {
    pub(crate) fn new(pre: Bytes, inner: I) -> Rewind<I> {
        Rewind { pre, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
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
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_lengths_must_agree() {
        let cl = |v: &[&[u8]]| {
            let mut length = ContentLength::default();
            v.iter().for_each(|value| length.read(value));
            length.value()
        };
        assert_eq!(cl(&[]), Ok(None));
        assert_eq!(cl(&[b"42"]), Ok(Some(42)));
        assert_eq!(cl(&[b"42, 42"]), Ok(Some(42)));
        assert_eq!(cl(&[b"42", b"42"]), Ok(Some(42)));
        assert_eq!(cl(&[b"42", b"43"]), Err(()));
        assert_eq!(cl(&[b"-1"]), Err(()));
        assert_eq!(cl(&[b"+1"]), Err(()));
        assert_eq!(cl(&[b""]), Err(()));
        assert_eq!(cl(&[b"1e3"]), Err(()));
        assert_eq!(cl(&[b"99999999999999999999999"]), Err(()));
        assert_eq!(cl(&[b"9999999999999999999"]), Ok(Some(9999999999999999999)));
        assert_eq!(cl(&[b"42", b"42, 42"]), Ok(Some(42)));
        assert_eq!(cl(&[b"42, 43", b"42"]), Err(()));
        assert_eq!(cl(&[b"42", b" 42 "]), Ok(Some(42)));
        assert_eq!(cl(&[b"x", b"42"]), Err(()));
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        use Framing::*;
        assert_eq!(response_framing(200, false, None, Some(5)), Length(5));
        assert_eq!(response_framing(200, true, None, Some(5)), Empty);
        assert_eq!(response_framing(204, false, None, None), Empty);
        assert_eq!(response_framing(304, false, None, Some(5)), Empty);
        assert_eq!(
            response_framing(200, false, Some(b"chunked"), Some(5)),
            Chunked
        );
        assert_eq!(
            response_framing(200, false, Some(b"gzip, Chunked"), None),
            Chunked
        );
        assert_eq!(response_framing(200, false, Some(b"gzip"), None), Close);
        assert_eq!(response_framing(200, false, None, None), Close);
        assert_eq!(response_framing(200, false, None, Some(0)), Empty);
    }

    fn end_of(body: &[u8], step: usize) -> Result<Option<usize>, BadChunk> {
        let mut c = ChunkedEnd::default();
        let mut at = 0;
        while at < body.len() {
            let piece = &body[at..(at + step).min(body.len())];
            let n = c.feed(piece)?;
            at += n;
            if c.is_done() {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    #[test]
    fn chunked_bodies_end_where_they_end_whatever_the_reads() {
        let body =
            b"5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for step in [1, 2, 3, 7, 100] {
            assert_eq!(end_of(body, step).unwrap(), Some(end), "step {step}");
        }
        assert_eq!(end_of(b"0\r\n\r\n", 1).unwrap(), Some(5));
        assert_eq!(end_of(b"5\r\nhel", 2).unwrap(), None);
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloX\r\n",
            b"5\nhello",
            b"fffffffffffffffff\r\n",
            b"0\r\nbad\n",
        ] {
            assert!(
                end_of(bad, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn connection_tokens() {
        let read = |v: &[u8]| {
            let mut t = ConnectionTokens::default();
            t.read(v);
            t
        };
        assert_eq!(
            read(b"Keep-Alive"),
            ConnectionTokens {
                keep_alive: true,
                ..Default::default()
            }
        );
        let t = read(b" close ,Upgrade, x-secret,,te");
        assert!(t.close && t.upgrade && t.others && !t.keep_alive);
        assert!(!read(b"te, trailer").others);
        assert!(read(b"CLOSE").close);
        assert!(read(b"keep-alive, close").close);
    }

    #[test]
    fn hop_by_hop_names_in_any_case() {
        for name in [
            &b"connection"[..],
            b"Keep-Alive",
            b"proxy-connection",
            b"Proxy-Authenticate",
            b"proxy-authorization",
            b"TE",
            b"trailer",
            b"Transfer-Encoding",
            b"upgrade",
        ] {
            assert!(is_hop_by_hop(name), "{}", String::from_utf8_lossy(name));
        }
        for name in [
            &b"host"[..],
            b"tf",
            b"trailers",
            b"upgrade-x",
            b"content-length",
            b"",
        ] {
            assert!(!is_hop_by_hop(name), "{}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
