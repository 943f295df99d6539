//! The edge's own HTTP/1.1 path: serves a client connection request after request, routes
//! each one with the same `Proxy::dispatch` as the hyper path, writes the upstream request
//! head it prepared once to a pooled upstream connection, and copies the answer back, all
//! in the connection's task.
//!
//! Why by hand, when hyper serves HTTP/1.1 well: a proxy built from hyper's server and
//! client spends most of its instructions between them (a body channel, a dispatch task
//! per upstream connection, the upstream's answer parsed into a second header map and
//! written out again from it). This path parses with httparse (hyper's own parser), keeps
//! the upstream's header lines as bytes and copies them through, as nginx and Pingora do.
//!
//! It takes plain HTTP/1.1 requests without a body or with a `content-length` one. Anything
//! else (HTTP/1.0, `transfer-encoding`, `expect`, upgrades, CONNECT, targets not in origin
//! form, routes to h2c upstreams, HTTP/2's preface) hands the connection, with the bytes
//! already read, to hyper for the rest of its life (`Served::HandOver`).
//!
//! It must never send a request twice unless it cannot have reached the upstream (the
//! retry rules of `forward`), never reuse a client or upstream connection whose message
//! was not read to its end, and never forward a message whose length is ambiguous.

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Response, StatusCode};
use model::Code;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::forward::{
    json_error, new_request_id, sane_request_id, stripped_target,
    traceparent as new_traceparent_text, ClientInfo, Clients, Dispatch, Done, InFlight, Scheme,
    MAX_ATTEMPTS,
};
use crate::pool::{Raw, RAW_BUF, READ_ROOM};
use crate::snapshot::Route;
use crate::wire::{self, Framing, MAX_HEAD};
use crate::Proxy;

/// A client has this long to send a request head (waiting for the next request included).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Most header fields in a head on this path (more: 431 for a request, 502 for an answer),
/// as hyper's default.
const FIELDS: usize = 100;
/// Bytes read at a time while copying a body.
const COPY_BUF: usize = 32 * 1024;
/// HTTP/2's connection preface, which a client with prior knowledge starts with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// How a connection's service by this path ended.
pub(crate) enum Served<I> {
    /// The connection is done (closed by either side, timed out, or shut down).
    Done,
    /// Hyper serves the rest: the connection and the bytes already read from it.
    HandOver(I, Bytes),
}

/// A client connection's stream. A plain TCP stream is written at once when its socket
/// has room (`try_write`), before anything waits for it to be writable: the usual case,
/// and cheaper than a write through the async machinery. A TLS stream, which writes its
/// records through its own buffer, is written the usual way.
pub(crate) trait ClientIo: AsyncRead + AsyncWrite + Unpin {
    /// Writes what the socket takes now; `None` when the stream cannot be written so.
    fn try_write_now(&self, _buf: &[u8]) -> Option<std::io::Result<usize>> {
        None
    }
}

impl ClientIo for tokio::net::TcpStream {
    fn try_write_now(&self, buf: &[u8]) -> Option<std::io::Result<usize>> {
        Some(self.try_write(buf))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientIo for tokio_rustls::server::TlsStream<S> {}

/// What follows a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The next request on the same connection.
    Again,
    Close,
    HandOver,
}

/// A header field by its place in a head: name start and end, value start and end.
type Field = (u32, u32, u32, u32);

/// A client connection and its buffers, kept across its requests.
struct Conn<I> {
    io: I,
    /// Bytes read from the client and not used yet.
    buf: BytesMut,
    /// What is written to the client next.
    out: Vec<u8>,
    /// The upstream request head of the current request (sent again as is on a retry).
    up_head: Vec<u8>,
    /// The current request head.
    head: Vec<u8>,
    /// The header fields of the current request head.
    req_fields: Vec<Field>,
    /// The header fields of the current upstream answer.
    fields: Vec<Field>,
    /// The deadline of the current wait (request head, upstream answer, a stalled body).
    deadline: Deadline,
    /// When the last exchange ended, read after its last write when the upstream
    /// connection went back to the pool: the wait for the next head counts from it, so
    /// that a request costs one clock read less.
    ended: Option<Instant>,
}

/// The deadline of a connection's current wait, kept with one Tokio timer that is moved
/// only when a deadline comes earlier than the timer: a later one (the usual case: each
/// request's waits end later than the last ones did) leaves the timer where it is, and a
/// timer that fires before the deadline is moved to it then. Moving a Tokio timer costs
/// more than a request's other time keeping together, and it would move twice per request.
/// A wait still ends at its deadline exactly as with a timer set for it each time.
struct Deadline {
    timer: Pin<Box<Sleep>>,
    at: tokio::time::Instant,
}

impl Deadline {
    fn new(after: Duration) -> Deadline {
        let timer = Box::pin(tokio::time::sleep(after));
        let at = timer.deadline();
        Deadline { timer, at }
    }

    /// Sets the deadline of the next wait.
    fn set(&mut self, at: Instant) {
        let at = tokio::time::Instant::from_std(at);
        if at < self.timer.deadline() {
            self.timer.as_mut().reset(at);
        }
        self.at = at;
    }

    /// Ends when the deadline has passed.
    fn expired(&mut self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| loop {
            std::task::ready!(self.timer.as_mut().poll(cx));
            // The timer fired at its deadline; when that was before the current one (set
            // later since), it waits again for the rest.
            if self.timer.deadline() >= self.at {
                return std::task::Poll::Ready(());
            }
            self.timer.as_mut().reset(self.at);
        })
    }
}

/// An upstream's answer head, by places in its connection's buffer.
struct UpHead {
    status: u16,
    reason: (u32, u32),
    /// Where the head ends (the body starts) in the buffer.
    len: usize,
    framing: Framing,
    /// The `transfer-encoding` field, when the body is chunked.
    transfer_encoding: Option<(u32, u32)>,
    /// The `content-length` value (for the access log).
    length: Option<(u32, u32)>,
    /// Whether the upstream keeps the connection open after this answer.
    keep_alive: bool,
    /// Whether its `connection` fields name other fields (dropped too).
    lists_others: bool,
    /// Whether the request's whole body went to the upstream (an upstream may answer
    /// before reading it all).
    body_sent: bool,
}

/// Why an exchange with an upstream gave no answer head.
enum Failure {
    /// No connection could be opened: the request never reached the upstream.
    Connect(std::io::Error),
    /// The upstream closed or broke the connection before its answer head ended;
    /// `stale` when that was a reused connection that gave back nothing at all.
    Broken {
        stale: bool,
    },
    /// The answer head was not HTTP/1.1 this path can pass on.
    Malformed,
    TimedOut,
    /// The client went away while its body was being read.
    ClientGone,
}

impl Proxy {
    /// Serves a client connection on this path until it ends or must go to hyper.
    pub(crate) async fn serve_h1<I>(
        &self,
        io: I,
        client: &ClientInfo,
        clients: &Clients,
        shutdown: watch::Receiver<bool>,
    ) -> Served<I>
    where
        I: ClientIo,
    {
        let mut c = Conn {
            io,
            buf: BytesMut::with_capacity(RAW_BUF),
            out: Vec::with_capacity(1024),
            up_head: Vec::with_capacity(1024),
            head: Vec::with_capacity(1024),
            req_fields: Vec::with_capacity(16),
            fields: Vec::with_capacity(16),
            deadline: Deadline::new(HEAD_TIMEOUT),
            ended: None,
        };
        // Shutdown closes a connection between requests (an idle one at once).
        let mut signal = shutdown.clone();
        let stop = async move {
            let _ = signal.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stop);
        let mut first = true;
        loop {
            let now = c.ended.take().unwrap_or_else(Instant::now);
            c.deadline.set(now + HEAD_TIMEOUT);
            let parsed = match read_request_head(&mut c, stop.as_mut(), first).await {
                Head::Parsed(p) => p,
                Head::Preface => {
                    let pre = c.buf.split().freeze();
                    return Served::HandOver(c.io, pre);
                }
                Head::End => return Served::Done,
            };
            first = false;
            // The head moves to a buffer of its own; the bytes after it stay (a body, the
            // next requests).
            let mut head = std::mem::take(&mut c.head);
            head.clear();
            head.extend_from_slice(&c.buf[..parsed.len]);
            c.buf.advance(parsed.len);
            // Whether closing now may leave bytes of this request unread (a bad head's
            // body is unknown): then the close lingers (`tls::linger`).
            let mut unread = true;
            let next = match parsed.request(&head) {
                Err((status, message)) => {
                    let resp = json_error(status, Code::BadRequest, message);
                    write_answer(&mut c, resp, None, false, false).await;
                    Next::Close
                }
                Ok(None) => Next::HandOver,
                Ok(Some(req)) => {
                    unread = req.length > 0;
                    let keep = !parsed.connection.close && !*shutdown.borrow();
                    self.exchange(&mut c, &req, &head, keep, client, clients)
                        .await
                }
            };
            match next {
                Next::Again => c.head = head,
                Next::Close => {
                    let _ = tls::linger::shutdown(&mut c.io, unread).await;
                    return Served::Done;
                }
                Next::HandOver => {
                    let mut pre = BytesMut::with_capacity(head.len() + c.buf.len());
                    pre.extend_from_slice(&head);
                    pre.extend_from_slice(&c.buf);
                    return Served::HandOver(c.io, pre.freeze());
                }
            }
        }
    }

    /// Routes and answers one request whose head (`head`) was read.
    async fn exchange<I>(
        &self,
        c: &mut Conn<I>,
        req: &Req<'_>,
        head: &[u8],
        keep: bool,
        client: &ClientInfo,
        clients: &Clients,
    ) -> Next
    where
        I: ClientIo,
    {
        let started = Instant::now();
        let head_req = req.method == Method::HEAD;
        let new_id;
        let request_id = match req.id {
            Some(id) => id,
            None => {
                new_id = new_request_id();
                std::str::from_utf8(&new_id).unwrap_or("-")
            }
        };
        let mut table = self.table();
        let mut routings = 0;
        loop {
            routings += 1;
            let dispatched = self.dispatch(
                &table,
                client.scheme,
                &req.method,
                req.host,
                req.path,
                req.target,
            );
            let route = match dispatched {
                Dispatch::Answer(resp) => {
                    let keep = keep && skip_body(&mut c.buf, req.length);
                    return write_answer(c, resp, None, keep, head_req).await;
                }
                Dispatch::Forward(route) => route,
            };
            if route.h2c {
                return Next::HandOver;
            }
            let mut done = Done {
                route,
                host: req.host,
                method: &req.method,
                path: req.path,
                request_id,
                peer: client.peer,
                started,
                upstream: None,
            };
            if req.length > route.max_body {
                let message = format!(
                    "request body is larger than this route's limit ({} bytes)",
                    route.max_body
                );
                let resp = json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Code::PayloadTooLarge,
                    &message,
                );
                return self.fail(c, &done, resp, false, head_req).await;
            }
            let sent = Sent {
                route,
                length: req.length,
                keep,
                head_req,
            };
            match self
                .forward_h1(c, clients, req, head, &sent, client, &mut done)
                .await
            {
                Some(next) => return next,
                None => {
                    // No endpoint was available before anything was tried: route again on
                    // a newer snapshot, if there is one.
                    let fresh = self.table();
                    if routings < 3 && !std::sync::Arc::ptr_eq(&fresh, &table) {
                        table = fresh;
                        continue;
                    }
                    let resp = json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        Code::Unavailable,
                        "no healthy upstream for this route",
                    );
                    let keep = keep && skip_body(&mut c.buf, req.length);
                    return self.fail(c, &done, resp, keep, head_req).await;
                }
            }
        }
    }

    /// Forwards a routed request: endpoint choice, retries, outlier accounting, the answer
    /// copied back. `None` when no endpoint was available before anything was tried.
    #[allow(clippy::too_many_arguments)]
    async fn forward_h1<I>(
        &self,
        c: &mut Conn<I>,
        clients: &Clients,
        req: &Req<'_>,
        head: &[u8],
        sent: &Sent<'_>,
        client: &ClientInfo,
        done: &mut Done<'_>,
    ) -> Option<Next>
    where
        I: ClientIo,
    {
        let route = sent.route;
        let bodiless = sent.length == 0;
        let idempotent = req.method.is_idempotent();
        let mut tried = [0usize; MAX_ATTEMPTS];
        let mut attempts = 0;
        let mut prepared = false;
        loop {
            // The first attempt starts as the request was routed (its clock read serves
            // the balancer, the pool and the attempt's deadline); a retry reads it again.
            let now = if attempts == 0 {
                done.started
            } else {
                Instant::now()
            };
            let Some((idx, ep)) = route.upstream.pick(self.ms_at(now), &tried[..attempts]) else {
                if attempts == 0 {
                    return None;
                }
                let resp = json_error(
                    StatusCode::BAD_GATEWAY,
                    Code::BadGateway,
                    "no upstream could be reached",
                );
                return Some(
                    self.fail(c, done, resp, sent.keep && bodiless, sent.head_req)
                        .await,
                );
            };
            tried[attempts] = idx;
            attempts += 1;
            if !prepared {
                let stripped = stripped_target(route, req.path, req.query);
                let up = Upstreamed {
                    req,
                    target: stripped.as_deref().unwrap_or(req.target),
                    client,
                    request_id: done.request_id,
                };
                request_head(&mut c.up_head, &up, head, &c.req_fields, route);
                prepared = true;
            }
            let _flight = InFlight::new(ep);
            let result = attempt(c, clients, ep.addr, now, route.timeout, sent).await;
            let failure = match result {
                Ok((up, head)) => {
                    let failed = matches!(head.status, 502..=504);
                    self.account(&route.upstream, ep, failed);
                    done.upstream = Some(ep.addr);
                    return Some(self.relay(c, clients, ep.addr, up, head, sent, done).await);
                }
                Err(f) => f,
            };
            let (status, code, message, retry) = match &failure {
                Failure::ClientGone => return Some(Next::Close),
                Failure::Connect(e) => {
                    tracing::debug!(route = %route.id, upstream = %ep.addr, error = %e, "upstream connect failed");
                    let m = "the upstream could not be reached";
                    (StatusCode::BAD_GATEWAY, Code::BadGateway, m, bodiless)
                }
                Failure::Broken { .. } | Failure::Malformed => {
                    let retry = idempotent && bodiless && matches!(failure, Failure::Broken { .. });
                    let m = "the upstream could not be reached";
                    (StatusCode::BAD_GATEWAY, Code::BadGateway, m, retry)
                }
                Failure::TimedOut => {
                    let m = "the upstream did not answer in time";
                    (StatusCode::GATEWAY_TIMEOUT, Code::GatewayTimeout, m, false)
                }
            };
            self.account(&route.upstream, ep, true);
            if retry && attempts < MAX_ATTEMPTS {
                continue;
            }
            // A body may have been read in part: the connection cannot carry another request.
            let keep = sent.keep && bodiless;
            let resp = json_error(status, code, message);
            return Some(self.fail(c, done, resp, keep, sent.head_req).await);
        }
    }

    /// Writes the answer head and copies the answer's body to the client; gives the
    /// upstream connection back when the exchange ended cleanly.
    #[allow(clippy::too_many_arguments)]
    async fn relay<I>(
        &self,
        c: &mut Conn<I>,
        clients: &Clients,
        addr: std::net::SocketAddr,
        mut up: Raw,
        head: UpHead,
        sent: &Sent<'_>,
        done: &Done<'_>,
    ) -> Next
    where
        I: ClientIo,
    {
        let keep = sent.keep && head.body_sent && head.framing != Framing::Close;
        answer_head(
            &mut c.out,
            &up.buf,
            &head,
            &c.fields,
            sent.route,
            done.request_id,
            keep,
        );
        let bytes = head
            .length
            .map_or(&b"-"[..], |(s, e)| &up.buf[s as usize..e as usize]);
        self.record(done, head.status, bytes);
        up.buf.advance(head.len);
        let clean = match copy_body(
            &mut c.io,
            &mut c.out,
            &mut up,
            head.framing,
            &mut c.deadline,
            sent.route.timeout,
        )
        .await
        {
            Ok(clean) => clean,
            Err(_) => return Next::Close,
        };
        if bounded(&mut c.deadline, sent.route.timeout, c.io.flush())
            .await
            .is_err()
        {
            return Next::Close;
        }
        if clean && head.keep_alive && head.body_sent {
            let now = Instant::now();
            clients.checkin_raw(addr, up, now);
            c.ended = Some(now);
        }
        if keep {
            Next::Again
        } else {
            Next::Close
        }
    }

    /// Answers a routed request with an error of the edge's own, counted in the route's
    /// metrics and access log.
    async fn fail<I>(
        &self,
        c: &mut Conn<I>,
        done: &Done<'_>,
        resp: Response<Bytes>,
        keep: bool,
        head_req: bool,
    ) -> Next
    where
        I: ClientIo,
    {
        let bytes = resp.body().len().to_string();
        self.record(done, resp.status().as_u16(), bytes.as_bytes());
        write_answer(c, resp, Some(done.request_id), keep, head_req).await
    }
}

/// What a forwarded request carries along its attempts.
struct Sent<'a> {
    route: &'a Route,
    /// The request body's length (`content-length`; 0 without one).
    length: u64,
    /// Whether the client keeps its connection open after this request.
    keep: bool,
    head_req: bool,
}

/// What reading a request head gave.
enum Head {
    Parsed(Parsed),
    /// HTTP/2's connection preface (prior knowledge): hyper's.
    Preface,
    /// The connection is over: closed, timed out, shut down, or a bad head was answered.
    End,
}

/// Reads a whole request head into the connection's buffer and parses it. A bad or too
/// large head is answered (400, 431) here. `first`: no request was read on the connection
/// yet (only then can HTTP/2's preface come).
async fn read_request_head<I, S>(c: &mut Conn<I>, mut stop: Pin<&mut S>, mut first: bool) -> Head
where
    I: ClientIo,
    S: std::future::Future<Output = ()>,
{
    loop {
        if !c.buf.is_empty() {
            if first {
                let n = c.buf.len().min(H2_PREFACE.len());
                if c.buf[..n] == H2_PREFACE[..n] {
                    if n == H2_PREFACE.len() {
                        return Head::Preface;
                    }
                } else {
                    first = false;
                }
            }
            if !first {
                match parse_request(&c.buf, &mut c.req_fields) {
                    Ok(Some(p)) => return Head::Parsed(p),
                    Ok(None) if c.buf.len() >= MAX_HEAD => {
                        let resp = json_error(
                            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                            Code::BadRequest,
                            "the request head is too large",
                        );
                        write_answer(c, resp, None, false, false).await;
                        return Head::End;
                    }
                    Ok(None) => {}
                    Err(status) => {
                        let message = if status == StatusCode::BAD_REQUEST {
                            "the request is not valid HTTP/1.1"
                        } else {
                            "the request has too many header fields"
                        };
                        let resp = json_error(status, Code::BadRequest, message);
                        write_answer(c, resp, None, false, false).await;
                        return Head::End;
                    }
                }
            }
        }
        c.buf.reserve(READ_ROOM);
        tokio::select! {
            biased;
            r = c.io.read_buf(&mut c.buf) => match r {
                Ok(0) | Err(_) => return Head::End,
                Ok(_) => {}
            },
            _ = stop.as_mut(), if c.buf.is_empty() => return Head::End,
            () = c.deadline.expired() => return Head::End,
        }
    }
}

/// A request head parsed in place: where its parts are in the connection's buffer, and
/// what its fields say about the connection and the body.
struct Parsed {
    /// The head's length.
    len: usize,
    method: (usize, usize),
    target: (usize, usize),
    /// What its `connection` fields say (`close`: the client closes after this request;
    /// `upgrade`: hyper must take it).
    connection: wire::ConnectionTokens,
    /// Hyper must take the request (HTTP/1.0, `transfer-encoding`, `expect`, an upgrade,
    /// CONNECT).
    hand_over: bool,
    /// The body's length by `content-length`; `Err` when its fields disagree.
    length: wire::ContentLength,
    /// The first `host` field's value, and how many there are.
    host: Option<(usize, usize)>,
    hosts: usize,
    /// The first `x-request-id` field's value.
    id: Option<(usize, usize)>,
}

/// A request on this path, read from its head.
struct Req<'h> {
    method: Method,
    /// The request target as sent, in origin form (`/path?query`).
    target: &'h str,
    path: &'h str,
    query: Option<&'h str>,
    /// The `host` field's value (port included).
    host: &'h str,
    /// The client's request id, when it sent a sane one.
    id: Option<&'h str>,
    /// The body's length (`content-length`; 0 without one).
    length: u64,
    /// Whether its `connection` fields name other fields (dropped too).
    lists_others: bool,
}

/// Parses a request head at the start of `buf` (its fields' places into `fields`):
/// `Ok(None)` until it is whole.
fn parse_request(buf: &[u8], fields: &mut Vec<Field>) -> Result<Option<Parsed>, StatusCode> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        }
        Err(_) => return Err(StatusCode::BAD_REQUEST),
    };
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        (start, start + s.len())
    };
    let method = req.method.unwrap_or("");
    let mut p = Parsed {
        len,
        method: at(method.as_bytes()),
        target: at(req.path.unwrap_or("").as_bytes()),
        connection: Default::default(),
        hand_over: req.version != Some(1) || method == "CONNECT",
        length: Default::default(),
        host: None,
        hosts: 0,
        id: None,
    };
    fields.clear();
    for h in req.headers.iter() {
        let ((ns, ne), (vs, ve)) = (at(h.name.as_bytes()), at(h.value));
        fields.push((ns as u32, ne as u32, vs as u32, ve as u32));
        let name = h.name.as_bytes();
        let is = |n: &[u8]| name.len() == n.len() && name.eq_ignore_ascii_case(n);
        if is(b"content-length") {
            p.length.read(h.value);
        } else if is(b"transfer-encoding") || is(b"expect") || is(b"upgrade") {
            p.hand_over = true;
        } else if is(b"connection") {
            p.connection.read(h.value);
        } else if is(b"host") {
            p.hosts += 1;
            p.host.get_or_insert((vs, ve));
        } else if is(b"x-request-id") {
            p.id.get_or_insert((vs, ve));
        }
    }
    p.hand_over |= p.connection.upgrade;
    Ok(Some(p))
}

impl Parsed {
    /// The request as this path reads it; `Ok(None)` when hyper must take it (see the
    /// module's comment; also a target that is not in origin form).
    fn request<'h>(&self, head: &'h [u8]) -> Result<Option<Req<'h>>, (StatusCode, &'static str)> {
        if self.hand_over {
            return Ok(None);
        }
        let bad = |m| (StatusCode::BAD_REQUEST, m);
        let text = |(s, e): (usize, usize)| std::str::from_utf8(&head[s..e]);
        let length = self
            .length
            .value()
            .map_err(|()| bad("content-length is not one number"))?
            .unwrap_or(0);
        let target = text(self.target).map_err(|_| bad("invalid request target"))?;
        if !target.starts_with('/') {
            return Ok(None);
        }
        let method = Method::from_bytes(&head[self.method.0..self.method.1])
            .map_err(|_| bad("invalid method"))?;
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let host = match (self.host, self.hosts) {
            (None, _) => return Err(bad("the request has no host")),
            (Some(_), 2..) => return Err(bad("the request has more than one host")),
            (Some(at), _) => text(at)
                .ok()
                .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or(bad("invalid host"))?,
        };
        let id = self
            .id
            .filter(|&(s, e)| sane_request_id(&head[s..e]))
            .and_then(|at| text(at).ok());
        Ok(Some(Req {
            method,
            target,
            path,
            query,
            host,
            id,
            length,
            lists_others: self.connection.others,
        }))
    }
}

/// Drops a request body of `length` bytes when it is all read already (a request the edge
/// answers itself); `false` when it is not, and the connection must close after the answer.
fn skip_body(buf: &mut BytesMut, length: u64) -> bool {
    if length == 0 {
        return true;
    }
    if buf.len() as u64 >= length {
        buf.advance(length as usize);
        return true;
    }
    false
}

/// Writes an answer of the edge's own (JSON error, redirect, metrics, ACME challenge).
async fn write_answer<I>(
    c: &mut Conn<I>,
    resp: Response<Bytes>,
    request_id: Option<&str>,
    keep: bool,
    head_req: bool,
) -> Next
where
    I: ClientIo,
{
    let out = &mut c.out;
    out.clear();
    wire::status_line(out, resp.status());
    for (name, value) in resp.headers() {
        wire::field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"content-length: ");
    wire::decimal(out, resp.body().len() as u64);
    out.extend_from_slice(b"\r\n");
    if let Some(id) = request_id {
        wire::field(out, b"x-request-id", id.as_bytes());
    }
    if !keep {
        wire::field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    if !head_req {
        out.extend_from_slice(resp.body());
    }
    let written = write_bounded(&mut c.io, out, &mut c.deadline, HEAD_TIMEOUT)
        .await
        .is_ok()
        && bounded(&mut c.deadline, HEAD_TIMEOUT, c.io.flush())
            .await
            .is_ok();
    if written && keep {
        Next::Again
    } else {
        Next::Close
    }
}

/// What the upstream request head is made of besides the client's fields.
struct Upstreamed<'a> {
    req: &'a Req<'a>,
    /// The target the upstream sees (the route may strip a prefix).
    target: &'a str,
    client: &'a ClientInfo,
    request_id: &'a str,
}

/// The upstream request head: the request line, the client's fields less hop-by-hop ones,
/// the forwarding fields (`x-forwarded-for` appended to, `x-forwarded-proto` and
/// `x-forwarded-host` set, a `traceparent` when there is none), the request id, then the
/// route's request rules, which win over all of these. The same rules as the hyper
/// path's `forward_headers`, written from the client's bytes without a header map.
fn request_head(
    out: &mut Vec<u8>,
    up: &Upstreamed<'_>,
    src: &[u8],
    fields: &[Field],
    route: &Route,
) {
    let slice = |s: u32, e: u32| &src[s as usize..e as usize];
    out.clear();
    out.extend_from_slice(up.req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(up.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let rules = &route.request_headers;
    let listed = Listed::new(src, fields, up.req.lists_others);
    let (mut forwarded_for, mut traceparent) = (None, false);
    let mut lines = Lines::new(src);
    for &field in fields {
        let (ns, ne, vs, ve) = field;
        let (name, value) = (slice(ns, ne), slice(vs, ve));
        let is = |n: &[u8]| name.len() == n.len() && name.eq_ignore_ascii_case(n);
        if wire::is_hop_by_hop(name) || listed.has(name) || rules.touches(name) {
            continue;
        }
        if is(b"x-forwarded-for") {
            forwarded_for.get_or_insert(value);
            continue;
        }
        if is(b"x-forwarded-proto") || is(b"x-forwarded-host") || is(b"x-request-id") {
            continue;
        }
        traceparent |= is(b"traceparent");
        lines.keep(out, field);
    }
    lines.flush(out);
    // The edge's own fields, each unless a rule of the route sets or removes it.
    if !rules.touches(b"x-forwarded-for") {
        out.extend_from_slice(b"x-forwarded-for: ");
        // The client's list, when it is plain text, with the client's address appended.
        let plain = |v: &&[u8]| v.iter().all(|b| *b == b' ' || b.is_ascii_graphic());
        if let Some(before) = forwarded_for.filter(plain) {
            out.extend_from_slice(before);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(up.client.ip.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !rules.touches(b"x-forwarded-proto") {
        out.extend_from_slice(match up.client.scheme {
            Scheme::Http => &b"x-forwarded-proto: http\r\n"[..],
            Scheme::Https => b"x-forwarded-proto: https\r\n",
        });
    }
    if !rules.touches(b"x-forwarded-host") {
        wire::field(out, b"x-forwarded-host", up.req.host.as_bytes());
    }
    if !traceparent && !rules.touches(b"traceparent") {
        wire::field(out, b"traceparent", &new_traceparent_text());
    }
    if !rules.touches(b"x-request-id") {
        wire::field(out, b"x-request-id", up.request_id.as_bytes());
    }
    for (name, value) in &rules.set {
        wire::field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// The header lines of a head that are passed on, written to `out` in their order: a run
/// of lines that are already as `wire::field` writes them (`name: value` and CR LF, one
/// after the other in the source) is copied at once, any other line field by field. The
/// bytes written are the same either way; most heads are one or two runs.
struct Lines<'a> {
    src: &'a [u8],
    /// The run not written yet, as a range of `src` (empty: none).
    run: (usize, usize),
}

impl<'a> Lines<'a> {
    fn new(src: &'a [u8]) -> Lines<'a> {
        Lines { src, run: (0, 0) }
    }

    /// Passes on the line of `field`.
    #[inline(always)]
    fn keep(&mut self, out: &mut Vec<u8>, (ns, ne, vs, ve): Field) {
        let (ns, ne, vs, ve) = (ns as usize, ne as usize, vs as usize, ve as usize);
        let end = ve + 2;
        if self.src.get(ne..vs) == Some(b": ") && self.src.get(ve..end) == Some(b"\r\n") {
            if self.run.0 == self.run.1 || self.run.1 != ns {
                self.flush(out);
                self.run.0 = ns;
            }
            self.run.1 = end;
        } else {
            self.flush(out);
            wire::field(out, &self.src[ns..ne], &self.src[vs..ve]);
        }
    }

    /// Writes the run not written yet.
    fn flush(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.src[self.run.0..self.run.1]);
        self.run = (0, 0);
    }
}

/// The names a head's `connection` fields list besides hop-by-hop ones (rare): such
/// fields are dropped too.
struct Listed<'a> {
    src: &'a [u8],
    fields: &'a [Field],
    any: bool,
}

impl<'a> Listed<'a> {
    /// `any`: whether the `connection` fields name anything besides hop-by-hop fields
    /// (`ConnectionTokens::others`, found while parsing).
    fn new(src: &'a [u8], fields: &'a [Field], any: bool) -> Listed<'a> {
        Listed { src, fields, any }
    }

    fn values(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let src = self.src;
        self.fields
            .iter()
            .filter(move |&&(ns, ne, _, _)| {
                src[ns as usize..ne as usize].eq_ignore_ascii_case(b"connection")
            })
            .map(move |&(_, _, vs, ve)| &src[vs as usize..ve as usize])
    }

    /// Whether the `connection` fields list `name`; at once when they list nothing else
    /// (a check made for every field).
    #[inline]
    fn has(&self, name: &[u8]) -> bool {
        self.any && self.lists(name)
    }

    fn lists(&self, name: &[u8]) -> bool {
        self.values().any(|v| wire::lists(v, name))
    }
}

/// One attempt on an endpoint started at `now`: a pooled connection (or a new one), the
/// request sent, the answer head read, within the route's timeout. A pooled connection the
/// upstream had closed is replaced by the next one when the request has no body.
async fn attempt<I>(
    c: &mut Conn<I>,
    clients: &Clients,
    addr: std::net::SocketAddr,
    now: Instant,
    timeout: Duration,
    sent: &Sent<'_>,
) -> Result<(Raw, UpHead), Failure>
where
    I: ClientIo,
{
    let Conn {
        io,
        buf,
        up_head,
        fields,
        deadline,
        ..
    } = c;
    deadline.set(now + timeout);
    let exchange = async {
        loop {
            let mut up = match clients.checkout_raw(addr, now) {
                Some(up) => up,
                None => clients.connect_raw(addr).await.map_err(Failure::Connect)?,
            };
            match roundtrip(io, buf, up_head, fields, &mut up, sent).await {
                Ok(head) => return Ok((up, head)),
                Err(Failure::Broken { stale: true }) if sent.length == 0 => continue,
                Err(e) => return Err(e),
            }
        }
    };
    tokio::select! {
        biased;
        r = exchange => r,
        () = deadline.expired() => Err(Failure::TimedOut),
    }
}

/// Why a request body could not be passed on.
enum BodyError {
    Client,
    Upstream,
}

/// Sends the request head (and body, while watching for an early answer) and reads the
/// answer head.
async fn roundtrip<I>(
    io: &mut I,
    buf: &mut BytesMut,
    up_head: &[u8],
    fields: &mut Vec<Field>,
    up: &mut Raw,
    sent: &Sent<'_>,
) -> Result<UpHead, Failure>
where
    I: AsyncRead + Unpin,
{
    let reused = up.reused;
    // The head is written at once in the usual case (the socket of an idle connection has
    // room): tried before anything waits for the socket to be writable.
    let written = match up.tcp.try_write(up_head) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(_) => return Err(Failure::Broken { stale: reused }),
    };
    let (mut r, mut w) = up.tcp.split();
    if written < up_head.len() && w.write_all(&up_head[written..]).await.is_err() {
        return Err(Failure::Broken { stale: reused });
    }
    if sent.length == 0 {
        return read_answer_head(&mut r, &mut up.buf, fields, sent.head_req, reused).await;
    }
    let send = send_body(io, buf, sent.length, &mut w);
    let recv = read_answer_head(&mut r, &mut up.buf, fields, sent.head_req, reused);
    tokio::pin!(send, recv);
    let (head, body_sent) = tokio::select! {
        biased;
        head = &mut recv => (head?, false),
        s = &mut send => match s {
            Ok(()) => ((&mut recv).await?, true),
            Err(BodyError::Client) => return Err(Failure::ClientGone),
            Err(BodyError::Upstream) => ((&mut recv).await?, false),
        },
    };
    Ok(UpHead { body_sent, ..head })
}

/// Copies a request body of `length` bytes from the client (what is read already first)
/// to the upstream.
async fn send_body<I, W>(
    io: &mut I,
    buf: &mut BytesMut,
    length: u64,
    up: &mut W,
) -> Result<(), BodyError>
where
    I: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut left = length;
    loop {
        let n = (buf.len() as u64).min(left) as usize;
        if n > 0 {
            up.write_all(&buf[..n])
                .await
                .map_err(|_| BodyError::Upstream)?;
            buf.advance(n);
            left -= n as u64;
        }
        if left == 0 {
            return Ok(());
        }
        buf.reserve(COPY_BUF);
        match io.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(BodyError::Client),
            Ok(_) => {}
        }
    }
}

/// Reads an answer head into `buf`. Interim answers (1xx) are not passed on.
async fn read_answer_head<R>(
    r: &mut R,
    buf: &mut BytesMut,
    fields: &mut Vec<Field>,
    head_req: bool,
    reused: bool,
) -> Result<UpHead, Failure>
where
    R: AsyncRead + Unpin,
{
    let mut got_any = false;
    loop {
        if !buf.is_empty() {
            got_any = true;
            match parse_response(buf, fields, head_req)? {
                Some(head) if (100..200).contains(&head.status) => buf.advance(head.len),
                Some(head) => return Ok(head),
                None if buf.len() >= MAX_HEAD => return Err(Failure::Malformed),
                None => {}
            }
            if !buf.is_empty() {
                continue;
            }
        }
        buf.reserve(READ_ROOM);
        match r.read_buf(buf).await {
            Ok(n) if n > 0 => {}
            _ => {
                return Err(Failure::Broken {
                    stale: reused && !got_any,
                })
            }
        }
    }
}

/// Parses an answer head at the start of `buf` (its fields' places into `fields`).
fn parse_response(
    buf: &[u8],
    fields: &mut Vec<Field>,
    head_req: bool,
) -> Result<Option<UpHead>, Failure> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Failure::Malformed),
    };
    let status = resp.code.unwrap_or(0);
    // This path never asks for an upgrade: an upstream switching protocols is wrong.
    if status == 101 {
        return Err(Failure::Malformed);
    }
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| {
        let start = (s.as_ptr() as usize - base) as u32;
        (start, start + s.len() as u32)
    };
    fields.clear();
    let (mut te, mut length_at) = (None, None);
    let mut length = wire::ContentLength::default();
    let mut connection = wire::ConnectionTokens::default();
    for h in resp.headers.iter() {
        let ((ns, ne), (vs, ve)) = (at(h.name.as_bytes()), at(h.value));
        fields.push((ns, ne, vs, ve));
        let name = h.name.as_bytes();
        let is = |n: &[u8]| name.len() == n.len() && name.eq_ignore_ascii_case(n);
        if is(b"content-length") {
            length.read(h.value);
            length_at = Some((vs, ve));
        } else if is(b"transfer-encoding") {
            if te.is_some() {
                return Err(Failure::Malformed);
            }
            te = Some((vs, ve));
        } else if is(b"connection") {
            connection.read(h.value);
        }
    }
    let length = length.value().map_err(|()| Failure::Malformed)?;
    // Both a length and a transfer coding: a message two parsers may read differently.
    if te.is_some() && length.is_some() {
        return Err(Failure::Malformed);
    }
    let te_value = te.map(|(s, e)| &buf[s as usize..e as usize]);
    let framing = wire::response_framing(status, head_req, te_value, length);
    let http10 = resp.version == Some(0);
    Ok(Some(UpHead {
        status,
        reason: at(resp.reason.unwrap_or("").as_bytes()),
        len,
        framing,
        transfer_encoding: te,
        length: length_at,
        keep_alive: !connection.close
            && (!http10 || connection.keep_alive)
            && framing != Framing::Close,
        lists_others: connection.others,
        body_sent: true,
    }))
}

/// The answer head for the client: the upstream's status and fields as they came, less
/// hop-by-hop ones and those the route's rules replace, plus the rules' fields, the
/// request id and the framing and connection fields of the client's connection.
fn answer_head(
    out: &mut Vec<u8>,
    src: &[u8],
    head: &UpHead,
    fields: &[Field],
    route: &Route,
    request_id: &str,
    keep: bool,
) {
    let slice = |(s, e): (u32, u32)| &src[s as usize..e as usize];
    out.clear();
    let (rs, re) = (head.reason.0 as usize, head.reason.1 as usize);
    if head.status >= 100
        && rs == 13
        && re > rs
        && src.starts_with(b"HTTP/1.1 ")
        && src.get(re..re + 2) == Some(b"\r\n")
    {
        // The upstream's status line is already the one written below (HTTP/1.1, the three
        // digits of the status, a space, a reason): copied as it is.
        out.extend_from_slice(&src[..re + 2]);
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        wire::decimal(out, u64::from(head.status));
        out.push(b' ');
        let reason = slice(head.reason);
        if reason.is_empty() {
            let canonical = StatusCode::from_u16(head.status)
                .ok()
                .and_then(|s| s.canonical_reason());
            out.extend_from_slice(canonical.unwrap_or("").as_bytes());
        } else {
            out.extend_from_slice(reason);
        }
        out.extend_from_slice(b"\r\n");
    }
    let listed = Listed::new(src, fields, head.lists_others);
    let rules = &route.response_headers;
    let mut lines = Lines::new(src);
    for &field in fields {
        let name = slice((field.0, field.1));
        if wire::is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"x-request-id")
            || rules.touches(name)
            || listed.has(name)
        {
            continue;
        }
        lines.keep(out, field);
    }
    lines.flush(out);
    for (name, value) in &rules.set {
        wire::field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    wire::field(out, b"x-request-id", request_id.as_bytes());
    if let (Framing::Chunked, Some(te)) = (head.framing, head.transfer_encoding) {
        wire::field(out, b"transfer-encoding", slice(te));
    }
    if !keep {
        wire::field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

/// One read from the upstream or one write to the client while an answer is copied: done
/// at once (the common case, no deadline set), or within `limit`, so that a body that stalls
/// either way (an upstream that stops sending, a client that stops reading) ends the
/// exchange instead of holding its connections forever.
async fn bounded<T>(
    deadline: &mut Deadline,
    limit: Duration,
    step: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::pin!(step);
    // Polled once by itself first: no `select!` for the usual step done at once.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(step.as_mut().poll(cx)));
    if let std::task::Poll::Ready(r) = first.await {
        return r;
    }
    deadline.set(Instant::now() + limit);
    tokio::select! {
        biased;
        r = &mut step => r,
        () = deadline.expired() => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the answer's body stalled",
        )),
    }
}

/// Writes `buf` to the client: what the socket takes at once, the rest within `limit`
/// (`bounded`).
async fn write_bounded<I: ClientIo>(
    io: &mut I,
    buf: &[u8],
    deadline: &mut Deadline,
    limit: Duration,
) -> std::io::Result<()> {
    let done = match io.try_write_now(buf) {
        Some(Ok(n)) => n,
        Some(Err(e)) if e.kind() != std::io::ErrorKind::WouldBlock => return Err(e),
        Some(Err(_)) | None => 0,
    };
    if done < buf.len() {
        bounded(deadline, limit, io.write_all(&buf[done..])).await?;
    }
    Ok(())
}

/// Writes `out` (the answer head) and the answer's body, read from `up` as its framing
/// says, each step within `limit` (`bounded`). `Ok(true)` when the body ended exactly
/// where the upstream's bytes did (the connection may serve another request).
async fn copy_body<I>(
    io: &mut I,
    out: &mut Vec<u8>,
    up: &mut Raw,
    framing: Framing,
    deadline: &mut Deadline,
    limit: Duration,
) -> std::io::Result<bool>
where
    I: ClientIo,
{
    let truncated = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "answer cut short");
    match framing {
        Framing::Empty => {
            write_bounded(io, out, deadline, limit).await?;
            Ok(up.buf.is_empty())
        }
        Framing::Length(n) => {
            let take = (up.buf.len() as u64).min(n) as usize;
            out.extend_from_slice(&up.buf[..take]);
            up.buf.advance(take);
            write_bounded(io, out, deadline, limit).await?;
            let mut left = n - take as u64;
            while left > 0 {
                up.buf.clear();
                up.buf.reserve(COPY_BUF);
                if bounded(deadline, limit, up.tcp.read_buf(&mut up.buf)).await? == 0 {
                    return Err(truncated());
                }
                let take = (up.buf.len() as u64).min(left) as usize;
                write_bounded(io, &up.buf[..take], deadline, limit).await?;
                up.buf.advance(take);
                left -= take as u64;
            }
            Ok(up.buf.is_empty())
        }
        Framing::Chunked => {
            let mut end = wire::ChunkedEnd::default();
            let bad = |_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk");
            let n = end.feed(&up.buf).map_err(bad)?;
            out.extend_from_slice(&up.buf[..n]);
            up.buf.advance(n);
            write_bounded(io, out, deadline, limit).await?;
            while !end.is_done() {
                up.buf.clear();
                up.buf.reserve(COPY_BUF);
                if bounded(deadline, limit, up.tcp.read_buf(&mut up.buf)).await? == 0 {
                    return Err(truncated());
                }
                let n = end.feed(&up.buf).map_err(bad)?;
                write_bounded(io, &up.buf[..n], deadline, limit).await?;
                up.buf.advance(n);
            }
            Ok(up.buf.is_empty())
        }
        Framing::Close => {
            out.extend_from_slice(&up.buf);
            up.buf.clear();
            write_bounded(io, out, deadline, limit).await?;
            loop {
                up.buf.clear();
                up.buf.reserve(COPY_BUF);
                if bounded(deadline, limit, up.tcp.read_buf(&mut up.buf)).await? == 0 {
                    return Ok(false);
                }
                write_bounded(io, &up.buf, deadline, limit).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long until `d` expires, from now.
    async fn expires_after(d: &mut Deadline) -> Duration {
        let start = Instant::now();
        d.expired().await;
        start.elapsed()
    }

    #[tokio::test]
    async fn a_deadline_ends_a_wait_when_it_is_due_whether_it_moved_later_or_earlier() {
        let mut d = Deadline::new(Duration::from_millis(100));
        // Later than the timer: the timer fires first, and the wait goes on to the deadline.
        d.set(Instant::now() + Duration::from_millis(400));
        let waited = expires_after(&mut d).await;
        assert!(
            waited >= Duration::from_millis(390) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        // Earlier than the timer: the timer moves.
        d.set(Instant::now() + Duration::from_secs(30));
        d.set(Instant::now() + Duration::from_millis(50));
        let waited = expires_after(&mut d).await;
        assert!(
            waited >= Duration::from_millis(40) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        // A deadline already past ends the wait at once.
        d.set(Instant::now());
        assert!(expires_after(&mut d).await < Duration::from_secs(1));
    }

    /// The fields of an answer head (`parse_response`).
    fn answer_fields(src: &[u8]) -> (UpHead, Vec<Field>) {
        let mut fields = Vec::new();
        match parse_response(src, &mut fields, false) {
            Ok(Some(head)) => (head, fields),
            _ => panic!("not an answer head: {}", String::from_utf8_lossy(src)),
        }
    }

    const HEADS: [&[u8]; 4] = [
        b"HTTP/1.1 200 OK\r\nA: 1\r\nB:2\r\nC: 3\r\nD:  4\r\nE: 5\r\nF: \r\nG: 7\r\n\r\n",
        b"HTTP/1.1 200 OK\nA: 1\nB: 2\r\nC: 3\r\n\n",
        b"HTTP/1.1 200 OK\r\nA: 1 \r\nB: 2\t\r\nC: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: x\x80y\r\nB: 2\r\n\r\n",
    ];

    #[test]
    fn lines_copied_in_runs_are_the_lines_written_field_by_field() {
        for src in HEADS {
            let (_, fields) = answer_fields(src);
            // Each field left out in turn (a field dropped splits a run), and none.
            for skip in 0..=fields.len() {
                let (mut want, mut got) = (Vec::new(), Vec::new());
                let mut lines = Lines::new(src);
                for (_, &f) in fields.iter().enumerate().filter(|(i, _)| *i != skip) {
                    let (ns, ne, vs, ve) = (f.0 as usize, f.1 as usize, f.2 as usize, f.3 as usize);
                    wire::field(&mut want, &src[ns..ne], &src[vs..ve]);
                    lines.keep(&mut got, f);
                }
                lines.flush(&mut got);
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want),
                    "{}",
                    String::from_utf8_lossy(src)
                );
            }
        }
    }

    #[test]
    fn answer_heads_have_an_http_1_1_status_line_and_lose_hop_by_hop_fields() {
        let route = crate::snapshot::Route {
            id: "t/prod/r".into(),
            host: "*".into(),
            path: crate::snapshot::PathMatch::Prefix("/".into()),
            strip_prefix: false,
            upstream: crate::snapshot::Upstream::new("u", vec![], Default::default()),
            timeout: Duration::from_secs(1),
            max_body: 0,
            request_headers: Default::default(),
            response_headers: Default::default(),
            allow_http: true,
            h2c: false,
            stats: Default::default(),
        };
        for (src, want) in [
            (
                &b"HTTP/1.1 200 OK\r\nServer: s\r\nConnection: keep-alive\r\nX-Request-Id: a\r\nContent-Length: 0\r\n\r\n"[..],
                "HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 0\r\nx-request-id: id\r\n\r\n",
            ),
            (
                b"HTTP/1.0 404 Not Found\r\nA: 1\r\n\r\n",
                "HTTP/1.1 404 Not Found\r\nA: 1\r\nx-request-id: id\r\n\r\n",
            ),
            (
                b"HTTP/1.1 204 \r\nA:1\r\n\r\n",
                "HTTP/1.1 204 No Content\r\nA: 1\r\nx-request-id: id\r\n\r\n",
            ),
            (
                b"HTTP/1.1 299 Fine\nA: 1\n\n",
                "HTTP/1.1 299 Fine\r\nA: 1\r\nx-request-id: id\r\n\r\n",
            ),
        ] {
            let (head, fields) = answer_fields(src);
            let mut out = Vec::new();
            answer_head(&mut out, src, &head, &fields, &route, "id", true);
            assert_eq!(String::from_utf8_lossy(&out), want);
        }
    }
}
