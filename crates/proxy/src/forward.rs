//! Serving and forwarding: the accept loop of a listener, the per-request path (route,
//! limits, endpoint choice, forward, retry, outlier accounting) and the JSON error answers.
//!
//! Retries: only for requests without a body, to another endpoint, at most `MAX_ATTEMPTS`
//! times, and only when no answer came: on a connect failure (the request never reached
//! the upstream), or, for idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE), on a
//! connection that failed before the response headers (a replica killed mid-request). A
//! request with a body, a non-idempotent one that may have reached the upstream, or one the
//! upstream answered is never sent twice; a timeout is never retried.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use model::{Code, ErrorBody};
use tls::linger::{Lingering, Unread};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::accept::{Accept, Balance, WorkerListener};
use crate::capped::Capped;
use crate::placement::Placement;
use crate::pool::{Checkin, Pool, SendError, UpBody, UpstreamBody};
use crate::snapshot::{Endpoint, Route, RouteTable, Upstream};

pub type RespBody = Either<UpstreamBody, Full<Bytes>>;

/// Most endpoints one request is tried on.
pub(crate) const MAX_ATTEMPTS: usize = 3;
/// Consecutive failures (connect errors, 502/503/504) that eject an endpoint.
const EJECT_AFTER: u32 = 5;
/// First ejection lasts this long; each further one adds as much, up to `MAX_EJECTION`.
const BASE_EJECTION: Duration = Duration::from_secs(10);
const MAX_EJECTION: Duration = Duration::from_secs(300);
/// A TLS client has this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Where ACME HTTP-01 challenges are asked for (RFC 8555 section 8.3).
const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The TLS configuration of an HTTPS listener, replaceable while it serves (a TLS policy
/// change): each new connection takes the configuration current when it is accepted.
#[derive(Debug)]
pub struct TlsConfig(ArcSwap<rustls::ServerConfig>);

impl TlsConfig {
    pub fn new(cfg: Arc<rustls::ServerConfig>) -> Arc<TlsConfig> {
        Arc::new(TlsConfig(ArcSwap::new(cfg)))
    }

    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.0.load_full()
    }

    pub fn update(&self, cfg: Arc<rustls::ServerConfig>) {
        self.0.store(cfg);
    }
}

/// Whether a listener speaks plain HTTP or HTTPS (for `x-forwarded-proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The upstream connections of `serve` and `handle`; each worker runtime has its own.
pub(crate) type Clients = Arc<Pool>;

/// The proxy of one listener: its current routing snapshot and its upstream connection pool
/// (one per worker runtime with `spawn_workers`).
pub struct Proxy {
    table: ArcSwap<RouteTable>,
    /// The pools of `serve` and `handle` (worker runtimes have their own).
    clients: Clients,
    epoch: Instant,
    unrouted: AtomicU64,
    connections: AtomicU64,
    handshake_failures: AtomicU64,
    access_log: std::sync::atomic::AtomicBool,
    /// When set, `GET /metrics` that matches no route answers what this returns.
    metrics_source: std::sync::OnceLock<MetricsSource>,
    /// Set on a plain-HTTP proxy whose routes also have an HTTPS listener: requests are
    /// redirected there (unless the route allows plain HTTP).
    https_port: std::sync::OnceLock<u16>,
    /// Answers ACME HTTP-01 challenges on plain HTTP.
    challenges: std::sync::OnceLock<ChallengeSource>,
}

/// The key authorization for an ACME HTTP-01 token, if one is pending.
pub type ChallengeSource = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Renders the metrics page (Prometheus text format).
pub type MetricsSource = Box<dyn Fn() -> String + Send + Sync>;

impl Proxy {
    pub fn new(table: RouteTable) -> Arc<Proxy> {
        Arc::new(Proxy {
            table: ArcSwap::from_pointee(table),
            clients: Arc::new(Pool::default()),
            epoch: Instant::now(),
            unrouted: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            access_log: std::sync::atomic::AtomicBool::new(false),
            metrics_source: std::sync::OnceLock::new(),
            https_port: std::sync::OnceLock::new(),
            challenges: std::sync::OnceLock::new(),
        })
    }

    /// Replaces the routing snapshot. Requests already routed finish on the old one.
    pub fn update(&self, table: RouteTable) {
        self.table.store(Arc::new(table));
    }

    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Turns JSON access logs (tracing target `gantry::access`) on or off.
    pub fn set_access_log(&self, on: bool) {
        self.access_log.store(on, Ordering::Relaxed);
    }

    /// Serves `GET /metrics` (when no route claims it) from `source`. Set once.
    pub fn serve_metrics(&self, source: MetricsSource) {
        let _ = self.metrics_source.set(source);
    }

    /// Redirects plain-HTTP requests to HTTPS on `port` (308), except on routes that allow
    /// plain HTTP. Set once.
    pub fn redirect_to_https(&self, port: u16) {
        let _ = self.https_port.set(port);
    }

    /// Answers `GET /.well-known/acme-challenge/TOKEN` on plain HTTP from `source`. Set once.
    pub fn serve_acme_challenges(&self, source: ChallengeSource) {
        let _ = self.challenges.set(source);
    }

    /// This listener's series in the Prometheus text format (without HELP/TYPE headers;
    /// see `metrics::render_headers`).
    pub fn metrics_text(&self, listener: &str) -> String {
        let mut out = String::new();
        let table = self.table.load();
        let now = self.now_ms();
        for route in table.routes() {
            crate::metrics::render_route(&mut out, listener, route, &|ep| ep.is_ejected(now));
        }
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(
                "gantry_edge_unrouted_total{{listener=\"{listener}\"}} {}\ngantry_edge_active_connections{{listener=\"{listener}\"}} {}\ngantry_edge_tls_handshake_failures_total{{listener=\"{listener}\"}} {}\n",
                self.unrouted.load(Ordering::Relaxed),
                self.connections.load(Ordering::Relaxed),
                self.handshake_failures.load(Ordering::Relaxed)
            ),
        );
        out
    }

    /// Whether `ep` is ejected now (passive outlier detection).
    pub fn is_ejected(&self, ep: &Endpoint) -> bool {
        ep.is_ejected(self.now_ms())
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// `t` in the milliseconds of `now_ms` (for a caller that read the clock already).
    pub(crate) fn ms_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Serves `listener` until `shutdown` turns true, then lets open connections finish
    /// their requests (bounded by `drain`). With `tls`, every connection is a TLS one
    /// (handshake bounded by `HANDSHAKE_TIMEOUT`; ALPN picks HTTP/2 or HTTP/1.1).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<Arc<TlsConfig>>,
        shutdown: watch::Receiver<bool>,
        drain: Duration,
    ) {
        let clients = self.clients.clone();
        self.serve_with(listener, tls, shutdown, drain, clients)
            .await
    }

    /// Serves `listeners` (from `bind_workers`), each on a thread of its own running a
    /// single-threaded runtime with its own upstream connection pools, so that a request is
    /// accepted, forwarded and answered on one thread, as nginx's workers do; a new
    /// connection goes to the worker with the fewest open (`accept::Balance`). Each worker
    /// stops as `serve` does when `shutdown` turns true; `Workers::join` waits for all. The
    /// worker threads run where `placement` says (`Placement::Float`: where the scheduler
    /// puts them).
    pub fn spawn_workers(
        self: &Arc<Self>,
        listeners: Vec<std::net::TcpListener>,
        tls: Option<Arc<TlsConfig>>,
        shutdown: watch::Receiver<bool>,
        drain: Duration,
        placement: Placement,
    ) -> std::io::Result<Workers> {
        let accepted: Arc<[AtomicU64]> = listeners.iter().map(|_| AtomicU64::new(0)).collect();
        let mut done = Vec::with_capacity(listeners.len());
        let (balance, inboxes) = Balance::new(listeners.len());
        for ((i, listener), inbox) in listeners.into_iter().enumerate().zip(inboxes) {
            listener.set_nonblocking(true)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let (proxy, tls, shutdown) = (self.clone(), tls.clone(), shutdown.clone());
            let (accepted, balance) = (accepted.clone(), balance.clone());
            let cpu = placement.cpu_for(i);
            std::thread::Builder::new()
                .name(format!("gantry-edge-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        crate::placement::pin_current_thread(cpu);
                    }
                    rt.block_on(async move {
                        let listener = match TcpListener::from_std(listener) {
                            Ok(l) => l,
                            Err(e) => {
                                tracing::error!(error = %e, "edge worker cannot listen");
                                return;
                            }
                        };
                        let clients: Clients = Arc::new(Pool::default());
                        let worker = WorkerListener {
                            inner: listener,
                            me: i,
                            balance,
                            inbox,
                            served: &accepted[i],
                        };
                        proxy
                            .serve_with(worker, tls, shutdown, drain, clients)
                            .await;
                    });
                    // Connections still open past the drain bound end with the runtime.
                    drop(rt);
                    let _ = tx.send(());
                })?;
            done.push(rx);
        }
        Ok(Workers {
            done,
            accepted,
            balance,
        })
    }

    async fn serve_with<L: Accept>(
        self: Arc<Self>,
        mut listener: L,
        tls: Option<Arc<TlsConfig>>,
        mut shutdown: watch::Receiver<bool>,
        drain: Duration,
        clients: Clients,
    ) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256);
        let builder = Arc::new(builder);
        let scheme = if tls.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let acceptor = tls;
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let (tcp, peer, open) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "edge accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let _ = tcp.set_nodelay(true);
            let proxy = self.clone();
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let acceptor = acceptor.clone();
            let clients = clients.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                proxy.connections.fetch_add(1, Ordering::Relaxed);
                let conn = Accepted {
                    peer,
                    scheme,
                    clients,
                    shutdown,
                };
                match acceptor {
                    None => {
                        proxy
                            .clone()
                            .serve_conn(&builder, watcher, tcp, conn, false)
                            .await
                    }
                    Some(tls) => {
                        // The configuration current at accept time (a policy change applies
                        // to new connections; open ones keep theirs).
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => {
                                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                                proxy
                                    .clone()
                                    .serve_conn(&builder, watcher, tls, conn, h2)
                                    .await
                            }
                            Ok(Err(e)) => {
                                proxy.handshake_failures.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                proxy.handshake_failures.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(client = %peer, "TLS handshake timed out");
                            }
                        }
                    }
                }
                proxy.connections.fetch_sub(1, Ordering::Relaxed);
                drop(open);
            });
        }
        drop(listener);
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(drain) => {}
        }
    }

    /// Serves one accepted connection: HTTP/1.1 on the edge's own path (`h1`); HTTP/2 (by
    /// ALPN, or its preface on plain HTTP) and whatever that path hands over on hyper's,
    /// with upgrades.
    async fn serve_conn<I>(
        self: Arc<Self>,
        builder: &auto::Builder<TokioExecutor>,
        watcher: hyper_util::server::graceful::Watcher,
        io: I,
        conn: Accepted,
        h2: bool,
    ) where
        I: crate::h1::ClientIo + Send + 'static,
    {
        let Accepted {
            peer,
            scheme,
            clients,
            shutdown,
        } = conn;
        let client = ClientInfo::new(peer, scheme);
        // The watcher lives as long as the connection: graceful shutdown waits for it.
        let (io, pre) = if h2 {
            (io, Bytes::new())
        } else {
            match self.serve_h1(io, &client, &clients, shutdown).await {
                crate::h1::Served::Done => return,
                crate::h1::Served::HandOver(io, pre) => (io, pre),
            }
        };
        // What every request of the connection needs, shared by reference counts that only
        // this connection's thread touches (the proxy's own count is shared by the workers).
        // The client's address as a header value is made once per connection.
        let ctx = Arc::new((self, clients, client));
        let unread = Unread::default();
        let io = TokioIo::new(crate::wire::Rewind::new(
            pre,
            Lingering::new(io, unread.clone()),
        ));
        let svc = service_fn(move |req: Request<Incoming>| {
            let ctx = ctx.clone();
            let unread = unread.clone();
            async move {
                let (proxy, clients, client) = &*ctx;
                let has_body = !req.body().is_end_stream();
                let resp = proxy.handle_with(clients, req, client).await;
                unread.answered(has_body, resp.status().as_u16());
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = builder.serve_connection_with_upgrades(io, svc);
        let _ = watcher.watch(conn.into_owned()).await;
    }

    /// Routes and forwards one request. Never fails: errors are JSON answers.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        scheme: Scheme,
    ) -> Response<RespBody> {
        self.handle_with(&self.clients, req, &ClientInfo::new(peer, scheme))
            .await
    }

    async fn handle_with(
        &self,
        clients: &Clients,
        req: Request<Incoming>,
        client: &ClientInfo,
    ) -> Response<RespBody> {
        let (peer, scheme) = (client.peer, client.scheme);
        let mut table = self.table.load_full();
        // What outlives `req` (moved into `forward`) is kept as clones of its URI and header
        // values, which share the request's buffers: no copy.
        let uri = req.uri().clone();
        // The host as the client gave it, port included: the URI's authority (HTTP/2, an
        // absolute target) or the `host` field.
        let host_value = match uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => req.headers().get(header::HOST).cloned(),
        };
        let Some(host) = uri
            .host()
            .or_else(|| host_value.as_ref().and_then(|v| v.to_str().ok()))
        else {
            return error(
                StatusCode::BAD_REQUEST,
                Code::BadRequest,
                "the request has no host",
            );
        };
        let mut req = req;
        // Room for the headers the edge adds (request id, forwarding headers, trace
        // context), made once rather than grown insert by insert.
        req.headers_mut().reserve(6);
        let request_id = ensure_request_id(req.headers_mut());
        let (method, path) = (req.method().clone(), uri.path());
        let started = Instant::now();
        // A request that finds no available endpoint on its snapshot is routed again on a
        // newer one (an endpoint it could have used may have moved there); bounded.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let pq = uri.path_and_query().map_or("/", |p| p.as_str());
            let route = match self.dispatch(&table, scheme, &method, host, path, pq) {
                Dispatch::Answer(resp) => return full(resp),
                Dispatch::Forward(route) => route,
            };
            let fwd = Forwarded {
                host,
                host_value: host_value.as_ref(),
                client,
            };
            let (resp, upstream) = match self.forward(clients, route, req, &fwd).await {
                Ok(answer) => answer,
                Err(back) => {
                    let fresh = self.table.load_full();
                    if attempts < 3 && !Arc::ptr_eq(&fresh, &table) {
                        table = fresh;
                        req = back;
                        continue;
                    }
                    let resp = error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        Code::Unavailable,
                        "no healthy upstream for this route",
                    );
                    (resp, None)
                }
            };
            let done = Done {
                route,
                host,
                method: &method,
                path,
                request_id: request_id.to_str().unwrap_or("-"),
                peer,
                started,
                upstream,
            };
            return self.finish(done, &request_id, resp);
        }
    }

    /// What the edge does with a request before forwarding it: ACME HTTP-01 challenges,
    /// the route it matches (or `/metrics`, or 404), the redirect to HTTPS.
    pub(crate) fn dispatch<'t>(
        &self,
        table: &'t RouteTable,
        scheme: Scheme,
        method: &http::Method,
        host: &str,
        path: &str,
        path_and_query: &str,
    ) -> Dispatch<'t> {
        if scheme == Scheme::Http && method == http::Method::GET {
            if let (Some(token), Some(source)) = (
                path.strip_prefix(ACME_CHALLENGE_PREFIX),
                self.challenges.get(),
            ) {
                return Dispatch::Answer(match source(token) {
                    Some(auth) => plain_response(auth),
                    None => json_error(
                        StatusCode::NOT_FOUND,
                        Code::NotFound,
                        "no pending ACME challenge for this token",
                    ),
                });
            }
        }
        let Some(route) = table.find(host, path) else {
            if let Some(source) = self.metrics_source.get() {
                if path == "/metrics" && method == http::Method::GET {
                    return Dispatch::Answer(metrics_response(source()));
                }
            }
            self.unrouted.fetch_add(1, Ordering::Relaxed);
            return Dispatch::Answer(json_error(
                StatusCode::NOT_FOUND,
                Code::NotFound,
                "no route for this host and path",
            ));
        };
        if let (Scheme::Http, Some(port), false) = (scheme, self.https_port.get(), route.allow_http)
        {
            return Dispatch::Answer(redirect(host, *port, path_and_query));
        }
        Dispatch::Forward(route)
    }

    /// Records a routed request's metrics and access log line and sets its request id.
    fn finish(
        &self,
        d: Done<'_>,
        request_id: &HeaderValue,
        mut resp: Response<RespBody>,
    ) -> Response<RespBody> {
        let bytes = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .map_or(&b"-"[..], |v| v.as_bytes());
        self.record(&d, resp.status().as_u16(), bytes);
        resp.headers_mut().insert(X_REQUEST_ID, request_id.clone());
        resp
    }

    /// Counts a routed request in its route's metrics and writes its access log line.
    /// `bytes` is the response's length as it says (`-` when unknown), read as text only
    /// for the log line.
    pub(crate) fn record(&self, d: &Done<'_>, status: u16, bytes: &[u8]) {
        let elapsed = d.started.elapsed();
        d.route.stats.record(status, elapsed);
        if self.access_log.load(Ordering::Relaxed) {
            let bytes = std::str::from_utf8(bytes).unwrap_or("-");
            let upstream = d.upstream.map(|u| u.to_string());
            tracing::info!(
                target: "gantry::access",
                route = %d.route.id,
                method = %d.method,
                host = %d.host,
                path = %d.path,
                status = status,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                upstream = upstream.as_deref().unwrap_or("-"),
                bytes = bytes,
                request_id = d.request_id,
                client = %d.peer.ip(),
                "access"
            );
        }
    }

    /// Forwards a routed request (limits, endpoint choice, retries, outlier accounting) and
    /// answers with the endpoint that answered, if one did. When no endpoint of `route` is
    /// available before anything was tried, gives the request back (`Err`) so the caller
    /// can route it on a newer snapshot.
    async fn forward(
        &self,
        clients: &Clients,
        route: &Route,
        req: Request<Incoming>,
        fwd: &Forwarded<'_>,
    ) -> Result<(Response<RespBody>, Option<SocketAddr>), Request<Incoming>> {
        // An answer without an endpoint (the `Err` side is the request given back, large).
        #[allow(clippy::result_large_err)]
        let answer = |resp| Ok((resp, None));
        let length = content_length(req.headers());
        let too_large = || {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::PayloadTooLarge,
                &format!(
                    "request body is larger than this route's limit ({} bytes)",
                    route.max_body
                ),
            )
        };
        if length.is_some_and(|n| n > route.max_body) {
            return answer(too_large());
        }
        let (mut parts, body) = req.into_parts();
        // No body: none announced and none to come (an HTTP/2 request has a body without
        // `content-length` or `transfer-encoding` unless its HEADERS frame ended the stream).
        let bodiless = length.unwrap_or(0) == 0
            && !parts.headers.contains_key(header::TRANSFER_ENCODING)
            && body.is_end_stream();
        let idempotent = parts.method.is_idempotent();
        let upgrade = upgrade_protocol(&parts);
        let mut body = Some(body);
        // Set if the body (of unannounced length) went over the route's limit on its way.
        let mut over = None;
        // The upstream's path and query, once the head is prepared (first attempt).
        let mut pq: Option<http::uri::PathAndQuery> = None;
        let mut tried = [0usize; MAX_ATTEMPTS];
        let mut attempts = 0;
        loop {
            let now = self.now_ms();
            let Some((idx, ep)) = route.upstream.pick(now, &tried[..attempts]) else {
                if attempts == 0 {
                    if let Some(b) = body.take() {
                        return Err(Request::from_parts(parts, b));
                    }
                }
                return answer(error(
                    StatusCode::BAD_GATEWAY,
                    Code::BadGateway,
                    "no upstream could be reached",
                ));
            };
            tried[attempts] = idx;
            attempts += 1;
            let up_body = match (bodiless, body.take()) {
                (true, _) => Either::Right(Empty::new()),
                (false, Some(b)) => {
                    let capped = Capped::new(b, route.max_body);
                    over = Some(capped.over());
                    Either::Left(capped)
                }
                // A body is sent once: requests with one are never retried (see `retry`).
                (false, None) => {
                    return answer(error(
                        StatusCode::BAD_GATEWAY,
                        Code::BadGateway,
                        "the upstream could not be reached",
                    ))
                }
            };
            let pq = match &pq {
                Some(pq) => pq,
                None => match prepare_upstream(&mut parts, route, fwd, upgrade.as_ref()) {
                    Ok(p) => pq.insert(p),
                    Err(m) => return answer(error(StatusCode::BAD_REQUEST, Code::BadRequest, m)),
                },
            };
            // The head is copied for another attempt only when one may follow a request that
            // reached the upstream: an idempotent one without a body, with an endpoint not
            // tried yet. After a connect failure the request comes back whole instead.
            let keep = bodiless
                && idempotent
                && attempts < MAX_ATTEMPTS
                && route.upstream.endpoints.len() > attempts;
            let headers = if keep {
                parts.headers.clone()
            } else {
                std::mem::take(&mut parts.headers)
            };
            let up_req = match upstream_request(&parts, pq, headers, up_body, route, &ep.authority)
            {
                Ok(r) => r,
                Err(m) => return answer(error(StatusCode::BAD_REQUEST, Code::BadRequest, m)),
            };
            let _flight = InFlight::new(ep);
            let sent = async {
                if route.h2c {
                    let resp = clients.send_h2c(ep.addr, up_req).await?;
                    Ok((resp, None))
                } else {
                    let (resp, checkin) = clients.send_http1(ep.addr, up_req).await?;
                    Ok((resp, Some(checkin)))
                }
            };
            let result: Result<Result<_, SendError>, _> =
                tokio::time::timeout(route.timeout, sent).await;
            match result {
                Ok(Ok((resp, checkin))) => {
                    let failed = matches!(resp.status().as_u16(), 502..=504);
                    self.account(&route.upstream, ep, failed);
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        // The connection now belongs to the upgrade: never back to the pool.
                        drop(checkin);
                        let resp = switch_protocols(&mut parts, resp, route);
                        return Ok((resp, Some(ep.addr)));
                    }
                    return Ok((downstream_response(resp, checkin, route), Some(ep.addr)));
                }
                Ok(Err(mut e)) => {
                    // The client's body broke the exchange, not the upstream.
                    if over.as_ref().is_some_and(|o| o.load(Ordering::Relaxed)) {
                        return answer(too_large());
                    }
                    self.account(&route.upstream, ep, true);
                    if let Some(back) = e.take_request() {
                        if !keep {
                            parts.headers = back.into_parts().0.headers;
                        }
                    }
                    let retry =
                        (e.is_connect() || idempotent) && bodiless && attempts < MAX_ATTEMPTS;
                    tracing::debug!(route = %route.id, upstream = %ep.addr, error = %e, retry, "upstream request failed");
                    if !retry {
                        return answer(error(
                            StatusCode::BAD_GATEWAY,
                            Code::BadGateway,
                            "the upstream could not be reached",
                        ));
                    }
                }
                Err(_) => {
                    self.account(&route.upstream, ep, true);
                    return answer(error(
                        StatusCode::GATEWAY_TIMEOUT,
                        Code::GatewayTimeout,
                        "the upstream did not answer in time",
                    ));
                }
            }
        }
    }

    /// Passive outlier detection: consecutive failures eject an endpoint for a growing
    /// interval, unless it is the last one available.
    pub(crate) fn account(&self, upstream: &Upstream, ep: &Endpoint, failed: bool) {
        if !failed {
            // Read first: a write on every success would bounce the endpoint's cache line
            // between the workers' cores.
            if ep.consecutive_failures.load(Ordering::Relaxed) != 0 {
                ep.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let n = ep.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.now_ms();
        if n >= EJECT_AFTER && !upstream.last_available(now) {
            let times = ep.ejections.fetch_add(1, Ordering::Relaxed) + 1;
            let dur = (BASE_EJECTION * times).min(MAX_EJECTION);
            ep.ejected_until_ms
                .store(now + dur.as_millis() as u64, Ordering::Relaxed);
            ep.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::warn!(upstream = %upstream.name, endpoint = %ep.addr, seconds = dur.as_secs(), "ejected a failing endpoint");
        }
    }
}

/// An accepted connection's context.
struct Accepted {
    peer: SocketAddr,
    scheme: Scheme,
    clients: Clients,
    /// Turns true when the listener shuts down.
    shutdown: watch::Receiver<bool>,
}

/// The worker threads serving one address (`Proxy::spawn_workers`).
pub struct Workers {
    done: Vec<tokio::sync::oneshot::Receiver<()>>,
    accepted: Arc<[AtomicU64]>,
    balance: Arc<Balance>,
}

impl Workers {
    /// Connections open on each worker now (see `accept`: a new connection goes to the
    /// worker with the fewest).
    pub fn open(&self) -> Vec<usize> {
        self.balance.open()
    }

    /// Connections each worker has served so far: accepted on its own socket, or handed
    /// to it by another worker.
    pub fn accepted(&self) -> Vec<u64> {
        self.accepted
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }

    /// Waits until every worker has stopped (after shutdown and its drain).
    pub async fn join(self) {
        for rx in self.done {
            let _ = rx.await;
        }
    }
}

/// Binds `addr` `workers` times (at least once) with `SO_REUSEPORT`: the kernel spreads new
/// connections over the sockets. With port 0, every socket gets the first one's port.
pub fn bind_workers(
    addr: SocketAddr,
    workers: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut out: Vec<std::net::TcpListener> = Vec::new();
    let mut addr = addr;
    for _ in 0..workers.max(1) {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        if out.is_empty() {
            addr = listener.local_addr()?;
        }
        out.push(listener);
        if cfg!(not(all(
            unix,
            not(any(target_os = "solaris", target_os = "illumos"))
        ))) {
            break;
        }
    }
    Ok(out)
}

/// Counts a request in flight on an endpoint for as long as it lives.
pub(crate) struct InFlight<'a>(&'a Endpoint);

impl<'a> InFlight<'a> {
    pub(crate) fn new(ep: &'a Endpoint) -> InFlight<'a> {
        ep.in_flight.add(1);
        InFlight(ep)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.add(-1);
    }
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1), never forwarded. `connection` first.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
/// The index of `name` in `HOP_BY_HOP`, by its text (cheaper than comparing it with each).
fn hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    })
}

/// Whether `token` (from `connection`) names a hop-by-hop header, in any case.
fn is_hop_name(token: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|n| n.as_str().as_bytes().eq_ignore_ascii_case(token))
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Removes hop-by-hop headers and those `connection` lists. One pass over the names finds
/// which are there, so a map without any is left untouched.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut found = [false; 9];
    let mut any = false;
    // Whether `connection` lists a name that is not hop-by-hop already (`close`, or an
    // extension header): only then are the map's names searched for it.
    let mut lists_others = false;
    for (name, value) in h.iter() {
        if let Some(i) = hop_index(name) {
            found[i] = true;
            any = true;
            if i == 0 && !lists_others {
                lists_others = value
                    .as_bytes()
                    .split(|b| *b == b',')
                    .map(<[u8]>::trim_ascii)
                    .any(|t| !t.is_empty() && !is_hop_name(t));
            }
        }
    }
    if !any {
        return;
    }
    if lists_others {
        // Names `connection` lists that the map holds and that are not hop-by-hop already
        // (usually none: `keep-alive`, `close`, `upgrade`).
        let mut listed: Vec<HeaderName> = Vec::new();
        for v in h.get_all(header::CONNECTION) {
            for token in v.to_str().unwrap_or("").split(',') {
                let t = token.trim();
                if t.is_empty()
                    || HOP_BY_HOP
                        .iter()
                        .any(|n| n.as_str().eq_ignore_ascii_case(t))
                {
                    continue;
                }
                if let Some(name) = h.keys().find(|k| k.as_str().eq_ignore_ascii_case(t)) {
                    listed.push(name.clone());
                }
            }
        }
        for name in listed {
            h.remove(name);
        }
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if found[i] {
            h.remove(n);
        }
    }
}

/// The client of a connection, as the forwarding headers tell it.
#[derive(Clone)]
pub(crate) struct ClientInfo {
    pub(crate) peer: SocketAddr,
    pub(crate) scheme: Scheme,
    /// `peer`'s IP address as a header value (`x-forwarded-for`).
    pub(crate) ip: HeaderValue,
}

impl ClientInfo {
    fn new(peer: SocketAddr, scheme: Scheme) -> ClientInfo {
        let ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ClientInfo { peer, scheme, ip }
    }
}

/// What a forwarded request says about where it came from.
struct Forwarded<'a> {
    /// The host the request was routed by.
    host: &'a str,
    /// The host as the client gave it (port included).
    host_value: Option<&'a HeaderValue>,
    client: &'a ClientInfo,
}

/// Turns the client's request head into the upstream's, once, before the first attempt:
/// the path as the upstream sees it (prefix stripped), the forwarding headers
/// (`forward_headers`), the route's request header rules and, for an upgrade, `connection`
/// and `upgrade` again.
fn prepare_upstream(
    parts: &mut http::request::Parts,
    route: &Route,
    fwd: &Forwarded<'_>,
    upgrade: Option<&HeaderValue>,
) -> Result<http::uri::PathAndQuery, &'static str> {
    let pq: http::uri::PathAndQuery =
        match stripped_target(route, parts.uri.path(), parts.uri.query()) {
            Some(pq) => pq.parse().map_err(|_| "invalid request path")?,
            // The common case reuses the client's path and query as they are (no copy).
            None => parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        };
    forward_headers(&mut parts.headers, fwd);
    route.request_headers.apply(&mut parts.headers);
    if let Some(proto) = upgrade {
        let h = &mut parts.headers;
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, proto.clone());
    }
    Ok(pq)
}

/// The path and query the upstream sees when the route strips its prefix from them
/// (`None`: the client's, unchanged).
pub(crate) fn stripped_target(route: &Route, path: &str, query: Option<&str>) -> Option<String> {
    match (&route.path, route.strip_prefix) {
        (crate::PathMatch::Prefix(p), true) if p != "/" => {
            let rest = &path[p.len().min(path.len())..];
            let rest = if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            };
            Some(match query {
                Some(q) => format!("{rest}?{q}"),
                None => rest,
            })
        }
        _ => None,
    }
}

/// One attempt's request to the endpoint at `authority`, with the prepared head.
fn upstream_request(
    parts: &http::request::Parts,
    pq: &http::uri::PathAndQuery,
    headers: HeaderMap,
    body: UpBody,
    route: &Route,
    authority: &http::uri::Authority,
) -> Result<Request<UpBody>, &'static str> {
    // HTTP/2 needs the scheme and authority (its pseudo-headers); HTTP/1.1 sends the
    // origin form (`/path?query`), or the authority form for CONNECT.
    let (uri, version) = if route.h2c {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        uri.authority = Some(authority.clone());
        uri.path_and_query = Some(pq.clone());
        let uri = Uri::from_parts(uri).map_err(|_| "invalid request path")?;
        (uri, http::Version::HTTP_2)
    } else if parts.method == http::Method::CONNECT {
        (Uri::from(authority.clone()), http::Version::HTTP_11)
    } else {
        (Uri::from(pq.clone()), http::Version::HTTP_11)
    };
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Turns the client's headers into the upstream's, in place: hop-by-hop headers removed,
/// `x-forwarded-for` appended to (or set), `x-forwarded-proto` and `x-forwarded-host` set,
/// a `traceparent` added when there is none, and `host` when the client sent none
/// (HTTP/2). Values are shared with the client's request, not copied.
fn forward_headers(h: &mut HeaderMap, fwd: &Forwarded<'_>) {
    let (mut hop, mut has_xff, mut has_traceparent, mut has_host) = (false, false, false, false);
    for name in h.keys() {
        if hop_index(name).is_some() {
            hop = true;
        } else if *name == X_FORWARDED_FOR {
            has_xff = true;
        } else if *name == TRACEPARENT {
            has_traceparent = true;
        } else if *name == header::HOST {
            has_host = true;
        }
    }
    if hop {
        strip_hop_by_hop(h);
    }
    // The first `x-forwarded-for` the client sent, with the client's address appended.
    let xff = match h
        .get(X_FORWARDED_FOR)
        .filter(|_| has_xff)
        .map(|v| v.to_str())
    {
        Some(Ok(prev)) => HeaderValue::from_str(&format!("{prev}, {}", fwd.client.peer.ip()))
            .unwrap_or_else(|_| fwd.client.ip.clone()),
        _ => fwd.client.ip.clone(),
    };
    h.insert(X_FORWARDED_FOR, xff);
    h.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(fwd.client.scheme.as_str()),
    );
    let host = match fwd.host_value {
        Some(v) => Some(v.clone()),
        None => HeaderValue::from_str(fwd.host).ok(),
    };
    match host {
        Some(host) => {
            if !has_host {
                h.insert(header::HOST, host.clone());
            }
            h.insert(X_FORWARDED_HOST, host);
        }
        None => {
            h.remove(X_FORWARDED_HOST);
        }
    }
    if !has_traceparent {
        h.insert(TRACEPARENT, new_traceparent());
    }
}

/// The protocol a client asks to switch to (`Connection: upgrade` + `Upgrade: X`), if any.
/// Only HTTP/1.1 has upgrades; the edge passes them through to the upstream.
fn upgrade_protocol(parts: &http::request::Parts) -> Option<HeaderValue> {
    if parts.version != http::Version::HTTP_11 {
        return None;
    }
    let asks = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        parts.headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// The upstream agreed to switch protocols (WebSocket): answers the client with the
/// upstream's 101 and, once both sides have upgraded, copies bytes both ways until either
/// side closes.
fn switch_protocols(
    client_parts: &mut http::request::Parts,
    mut up_resp: Response<Incoming>,
    route: &Route,
) -> Response<RespBody> {
    let Some(client_upgrade) = client_parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return error(
            StatusCode::BAD_GATEWAY,
            Code::BadGateway,
            "the upstream switched protocols without being asked to",
        );
    };
    let up_upgrade = hyper::upgrade::on(&mut up_resp);
    let route_id = route.id.clone();
    tokio::spawn(async move {
        let (client, up) = match tokio::try_join!(client_upgrade, up_upgrade) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(route = %route_id, error = %e, "protocol upgrade failed");
                return;
            }
        };
        let (mut client, mut up) = (TokioIo::new(client), TokioIo::new(up));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut up).await {
            tracing::debug!(route = %route_id, error = %e, "upgraded connection ended");
        }
    });
    let (mut parts, _) = up_resp.into_parts();
    let (conn, upgrade) = (
        parts.headers.remove(header::CONNECTION),
        parts.headers.remove(header::UPGRADE),
    );
    strip_hop_by_hop(&mut parts.headers);
    route.response_headers.apply(&mut parts.headers);
    parts.headers.extend(conn.map(|v| (header::CONNECTION, v)));
    parts.headers.extend(upgrade.map(|v| (header::UPGRADE, v)));
    Response::from_parts(parts, Either::Right(Full::new(Bytes::new())))
}

/// A W3C trace context for a request that came without one.
fn new_traceparent() -> HeaderValue {
    HeaderValue::from_bytes(&traceparent()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A new W3C trace context (`00-TRACEID-PARENTID-01`), as text.
pub(crate) fn traceparent() -> [u8; 55] {
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-01";
    hex_into(&mut buf[3..19], crate::rng::next_u64());
    hex_into(&mut buf[19..35], crate::rng::next_u64());
    hex_into(&mut buf[36..52], crate::rng::next_u64() | 1);
    buf
}

/// A new request id: 32 lowercase hex digits.
pub(crate) fn new_request_id() -> [u8; 32] {
    let mut buf = [0u8; 32];
    hex_into(&mut buf[..16], crate::rng::next_u64());
    hex_into(&mut buf[16..], crate::rng::next_u64());
    buf
}

/// Whether a client's request id may be passed on: 1-128 letters, digits and `-_.:`.
pub(crate) fn sane_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// Writes `v` as 16 lowercase hex digits into `out`.
fn hex_into(out: &mut [u8], v: u64) {
    /// Each byte's two hex digits.
    const PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [HEX[i >> 4], HEX[i & 0xf]];
            i += 1;
        }
        t
    };
    for (pair, byte) in out.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair.copy_from_slice(&PAIRS[byte as usize]);
    }
}

fn downstream_response(
    resp: Response<Incoming>,
    checkin: Option<Checkin>,
    route: &Route,
) -> Response<RespBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    route.response_headers.apply(&mut parts.headers);
    Response::from_parts(parts, Either::Left(UpstreamBody::new(body, checkin)))
}

/// What the edge does with a request before forwarding it (`Proxy::dispatch`).
pub(crate) enum Dispatch<'t> {
    /// Answered by the edge itself.
    Answer(Response<Bytes>),
    Forward(&'t Route),
}

/// What `record` needs to know about a routed request.
pub(crate) struct Done<'a> {
    pub(crate) route: &'a Route,
    pub(crate) host: &'a str,
    pub(crate) method: &'a http::Method,
    pub(crate) path: &'a str,
    pub(crate) request_id: &'a str,
    pub(crate) peer: SocketAddr,
    pub(crate) started: Instant,
    /// The endpoint that answered, if one did.
    pub(crate) upstream: Option<SocketAddr>,
}

/// The request's `x-request-id` when it is sane, or a new one set on the request; the
/// upstream sees it and the client gets it back.
fn ensure_request_id(h: &mut HeaderMap) -> HeaderValue {
    // One lookup of the name, whether the client sent an id or not.
    let entry = h.entry(X_REQUEST_ID);
    if let header::Entry::Occupied(e) = &entry {
        if sane_request_id(e.get().as_bytes()) {
            return e.get().clone();
        }
    }
    let id = HeaderValue::from_bytes(&new_request_id())
        .unwrap_or_else(|_| HeaderValue::from_static("-"));
    match entry {
        header::Entry::Occupied(mut e) => {
            e.insert(id.clone());
        }
        header::Entry::Vacant(e) => {
            e.insert(id.clone());
        }
    }
    id
}

/// `308 Permanent Redirect` to the same host, path and query on HTTPS (`port`).
fn redirect(host: &str, port: u16, pq: &str) -> Response<Bytes> {
    let host = crate::snapshot::strip_port(host);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let location = match port {
        443 => format!("https://{host}{pq}"),
        p => format!("https://{host}:{p}{pq}"),
    };
    let Ok(location) = HeaderValue::from_str(&location) else {
        return json_error(StatusCode::BAD_REQUEST, Code::BadRequest, "invalid host");
    };
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    r.headers_mut().insert(header::LOCATION, location);
    r
}

fn plain_response(text: String) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

fn metrics_response(text: String) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// An answer of the edge's own for the hyper path.
fn full(r: Response<Bytes>) -> Response<RespBody> {
    r.map(|b| Either::Right(Full::new(b)))
}

fn error(status: StatusCode, code: Code, message: &str) -> Response<RespBody> {
    full(json_error(status, code, message))
}

/// A JSON error answer (`{"error":{"code","message"}}`).
pub(crate) fn json_error(status: StatusCode, code: Code, message: &str) -> Response<Bytes> {
    let body = serde_json::to_vec(&ErrorBody::new(code, message)).unwrap_or_default();
    let mut r = Response::new(Bytes::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
