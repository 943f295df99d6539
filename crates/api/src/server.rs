//! Starting the control plane: data directory (locked against a second process), store,
//! internal CA and server certificate, bootstrap admin, and the HTTPS accept loop with
//! connection limits, timeouts and graceful shutdown.
//!
//! Must never start serving before the store is migrated, and never write the admin token
//! anywhere but `<data>/admin.token` with mode 0600.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use model::types::Health;
use model::Code;
use tls::linger::{Lingering, Unread};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::auth::{self, Ctx};
use crate::error::ApiError;
use crate::handlers::{self, Req};
use crate::http::{self as h, Body};
use crate::routes::{self, Match, Op};
use crate::State;

/// Typed configuration of the control plane (built by the binary from flags and env).
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub api_addr: SocketAddr,
    /// `None`: SQLite in the data directory.
    pub store_url: Option<String>,
    /// Extra DNS names or addresses for the API certificate.
    pub tls_names: Vec<String>,
    /// How the root key is sealed; `None`: a key file in the data directory.
    pub seal: Option<secrets::SealSetup>,
    /// How often the rotation reconciler looks for due keys.
    pub rotation_interval: Duration,
    /// Certificate issuance (ACME) and renewal settings.
    pub certs: certs::CertsConfig,
    /// How often the certificate renewer looks for due certificates.
    pub renew_interval: Duration,
    /// Object store for artifacts: `file:///dir` or `s3://bucket/prefix`; `None`: the
    /// `objects` directory in the data directory.
    pub objects: Option<String>,
    /// How often the service reconciler compares desired and running replicas.
    pub services_tick: Duration,
    pub autoscale: services::AutoscaleConfig,
    /// How replicas are isolated (`gantry up` passes `auto`).
    pub isolation: IsolationChoice,
    /// The range tenants' uids are allocated from.
    pub tenant_uids: runtime::UidRange,
}

/// What `--isolation` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationChoice {
    /// The strongest this machine supports: bubblewrap if `bwrap` works and Gantry runs
    /// as root, else tenant users if root, else none (with a warning saying so).
    Auto,
    /// Tenant uids inside a bubblewrap sandbox; start-up fails if that is not possible.
    Bubblewrap,
    /// Tenant uids without a sandbox; start-up fails if not root.
    Users,
    /// Replicas run as Gantry's own user.
    None,
}

impl std::fmt::Display for IsolationChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IsolationChoice::Auto => "auto",
            IsolationChoice::Bubblewrap => "bubblewrap",
            IsolationChoice::Users => "users",
            IsolationChoice::None => "none",
        })
    }
}

impl Config {
    /// The defaults of `gantry up` for a data directory and an address.
    pub fn new(data_dir: PathBuf, api_addr: SocketAddr) -> Config {
        Config {
            data_dir,
            api_addr,
            store_url: None,
            tls_names: Vec::new(),
            seal: None,
            rotation_interval: Duration::from_secs(60),
            certs: certs::CertsConfig::default(),
            renew_interval: Duration::from_secs(60),
            objects: None,
            services_tick: Duration::from_secs(1),
            autoscale: services::AutoscaleConfig::default(),
            isolation: IsolationChoice::None,
            tenant_uids: runtime::UidRange::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another gantry process")]
    Locked(PathBuf),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("key hierarchy: {0}")]
    Keys(#[from] secrets::SecretsError),
    #[error("artifacts: {0}")]
    Artifacts(#[from] artifacts::ArtifactError),
    #[error("service runtime: {0}")]
    Runtime(String),
    #[error("isolation: {0}")]
    Isolation(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Most concurrent connections the API accepts; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;
/// Longest time a handler may run.
const HANDLER_TIMEOUT: Duration = Duration::from_secs(60);

/// A started control plane.
pub struct Running {
    pub addr: SocketAddr,
    /// The bootstrap admin token, only on the very first start.
    pub admin_token: Option<String>,
    pub store_description: String,
    /// What isolates replicas, e.g. `bubblewrap (tenant uids 200000..265535)`.
    pub isolation: String,
    /// The store, for the parts that run beside the API (the edge).
    pub store: Arc<store::Store>,
    /// Certificate management, for the edge (decrypted certificates, HTTP-01 tokens).
    pub certs: Arc<certs::Certs>,
    /// The services reconciler, for the edge's load gauge (in-flight autoscaling).
    pub services: Arc<services::Services>,
    shutdown: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
    _lock: std::fs::File,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (bounded), closes the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.done.await;
    }
}

/// Decides what isolates replicas on this machine (see [`IsolationChoice`]) and says so in
/// the log. An explicit choice that cannot be had fails the start with the reason; `auto`
/// falls back and warns about what is (not) enforced.
fn resolve_isolation(
    choice: IsolationChoice,
    range: runtime::UidRange,
    data_dir: &std::path::Path,
    state_dir: &std::path::Path,
    bwrap: &std::path::Path,
) -> Result<services::Isolation, StartError> {
    use runtime::IsolationMode as M;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if choice == IsolationChoice::None {
        tracing::info!("service isolation: none (--isolation none): replicas run as uid {euid}, Gantry's own user");
        return Ok(services::Isolation::default());
    }
    let refuse = |why: String| {
        if choice == IsolationChoice::Auto {
            tracing::warn!("service isolation: none: {why}; replicas run as uid {euid}, Gantry's own user, and see what it sees");
            Ok(services::Isolation::default())
        } else {
            Err(StartError::Isolation(format!(
                "--isolation {choice}: {why}"
            )))
        }
    };
    if euid != 0 {
        return refuse("tenant users need Gantry to run as root".into());
    }
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    if let Some(closed) = absolute.ancestors().skip(1).find(|a| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 == 0)
    }) {
        return refuse(format!(
            "{} is not searchable by other users, so tenant users cannot reach their files in {} (chmod o+x it, or choose another --data)",
            closed.display(),
            absolute.display()
        ));
    }
    let uids = Arc::new(
        runtime::TenantUids::open(state_dir, range)
            .map_err(|e| StartError::Isolation(e.to_string()))?,
    );
    let probe_as = runtime::RunAs {
        uid: range.first,
        gid: range.first,
    };
    let mode = match choice {
        IsolationChoice::Users => M::Users,
        _ => match runtime::sandbox::probe(bwrap, Some(probe_as)) {
            Ok(()) => M::Bubblewrap,
            Err(why) if choice == IsolationChoice::Bubblewrap => {
                return Err(StartError::Isolation(format!(
                    "--isolation bubblewrap: the sandbox does not work here: {why}"
                )))
            }
            Err(why) => {
                tracing::warn!("service isolation: users, without a sandbox: bubblewrap does not work here ({why}); replicas run as their tenant's own uid but see the machine's files as that user");
                M::Users
            }
        },
    };
    tracing::info!(mode = %mode, tenant_uids = %range, "service isolation: every tenant's replicas run as its own uid{}", if mode == M::Bubblewrap { ", in a bubblewrap sandbox" } else { "" });
    Ok(services::Isolation {
        mode,
        uids: Some(uids),
    })
}

/// Under isolation, tenant users must reach their own artifacts and homes under
/// `<data>/services`, and nothing else: every other entry of the data dir loses its
/// group and other permissions, the data dir and `services` become 0711 (search, no
/// listing); logs (0750) and state (0700) stay closed; `work` and `home` are 0711 and
/// their per-tenant and per-replica entries are closed to other tenants.
fn open_to_tenants(dir: &std::path::Path, services_dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
    };
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_name() == "services" {
            continue;
        }
        let meta = std::fs::symlink_metadata(e.path())?;
        if !meta.file_type().is_symlink() {
            chmod(&e.path(), meta.permissions().mode() & 0o700)?;
        }
    }
    std::fs::create_dir_all(services_dir.join("work"))?;
    chmod(&services_dir.join("work"), 0o711)?;
    chmod(&services_dir.join("logs"), 0o750)?;
    chmod(&services_dir.join("state"), 0o700)?;
    chmod(services_dir, 0o711)?;
    chmod(dir, 0o711)
}

fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    let path = dir.join("gantry.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StartError::DataDir {
            path: path.clone(),
            source,
        })?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // flock is released by the kernel when the process dies, even on SIGKILL.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(StartError::Locked(dir.to_path_buf()));
        }
    }
    Ok(f)
}

pub async fn start(config: Config) -> Result<Running, StartError> {
    let dir = &config.data_dir;
    let dir_err = |source| StartError::DataDir {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(dir_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
    }
    let lock = lock_data_dir(dir)?;

    let url = match &config.store_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", dir.join("gantry.db").display()),
    };
    let store = Arc::new(store::Store::open(&url).await?);

    let ca = Arc::new(tls::InternalCa::load_or_create(dir)?);
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if !config.api_addr.ip().is_unspecified() {
        names.push(config.api_addr.ip().to_string());
    }
    for n in &config.tls_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let tls_config = tls::server_config(tls::TlsPolicy::Compatible, ca.issue_server(&names)?)?;

    let seal = config.seal.clone().unwrap_or(secrets::SealSetup::File {
        key_path: dir.join("seal.key"),
    });
    if matches!(seal, secrets::SealSetup::File { .. }) {
        tracing::warn!("the root key is sealed by a key file in the data directory: fine for development; use --seal passphrase or --seal pkcs11 in production");
    }
    let clock: Arc<dyn model::clock::Clock> = Arc::new(model::clock::SystemClock);
    let keyring = Arc::new(secrets::Keyring::open(store.clone(), seal, clock.clone()).await?);
    let certs = certs::Certs::new(
        store.clone(),
        keyring.clone(),
        ca.clone(),
        clock,
        config.certs.clone(),
    );
    let renewer = certs.clone().spawn_renewer(config.renew_interval);
    let objects_url = match &config.objects {
        Some(u) => u.clone(),
        None => format!(
            "file://{}",
            std::path::absolute(dir.join("objects"))
                .map_err(dir_err)?
                .display()
        ),
    };
    let registry = Arc::new(artifacts::Registry::new(
        store.clone(),
        keyring.clone(),
        artifacts::open_objects(&objects_url)?,
        Arc::new(model::clock::SystemClock),
    ));
    let services_dir = dir.join("services");
    let local_config =
        runtime::LocalConfig::new(services_dir.join("logs"), services_dir.join("state"))
            .map_err(|e| StartError::Runtime(e.to_string()))?;
    let isolation = resolve_isolation(
        config.isolation,
        config.tenant_uids,
        dir,
        &local_config.state_dir,
        &local_config.bwrap,
    )?;
    let local = runtime::LocalProcessRuntime::new(local_config)
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    let isolation_description = match isolation.mode {
        runtime::IsolationMode::None => "none".to_string(),
        m => format!("{m} (tenant uids {})", config.tenant_uids),
    };
    if isolation.mode != runtime::IsolationMode::None {
        open_to_tenants(dir, &services_dir).map_err(dir_err)?;
    }
    // Replicas a previous run left running are adopted, not restarted.
    let left_running = local.persisted().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the runtime's state; replicas left running will be restarted");
        Vec::new()
    });
    let services = services::Services::new(
        store.clone(),
        keyring.clone(),
        registry.clone(),
        Arc::new(local),
        services::ServicesConfig {
            tick: config.services_tick,
            drain: Duration::from_secs(2),
            work_dir: services_dir.join("work"),
            autoscale: config.autoscale.clone(),
            isolation,
        },
    );
    services.adopt_on_start(left_running);
    let reconciler = services.clone().spawn();
    if keyring.is_sealed() {
        tracing::warn!(
            seal = keyring.seal_kind(),
            "started sealed: run `gantry unseal`"
        );
    }
    let rotator = secrets::Rotator::new(keyring.clone()).spawn(config.rotation_interval);

    let admin_token = match store.bootstrap().await? {
        Some(t) => {
            tls::write_private(
                &dir.join("admin.token"),
                format!("{}\n", t.token).as_bytes(),
            )?;
            Some(t.token)
        }
        None => None,
    };

    let listener = TcpListener::bind(config.api_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.api_addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.api_addr,
        source,
    })?;

    let state = Arc::new(State {
        store: store.clone(),
        keyring,
        certs: certs.clone(),
        registry,
        services: services.clone(),
        started: Instant::now(),
        limiter: auth::AuthLimiter::default(),
    });
    let (tx, rx) = watch::channel(false);
    let done = tokio::spawn(async move {
        accept_loop(listener, TlsAcceptor::from(tls_config), state, rx).await;
        rotator.abort();
        renewer.abort();
        reconciler.abort();
    });
    Ok(Running {
        addr,
        admin_token,
        store_description: store.describe().to_string(),
        isolation: isolation_description,
        store: store.clone(),
        certs,
        services,
        shutdown: tx,
        done,
        _lock: lock,
    })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(64 * 1024);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            // The peer's address as text, once per connection: every request's access log
            // line and audit actor carry it.
            let source: Arc<str> = peer.to_string().into();
            let unread = Unread::default();
            let io = TokioIo::new(Lingering::new(tls, unread.clone()));
            let svc = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                let source = source.clone();
                let unread = unread.clone();
                async move {
                    let has_body = !req.body().is_end_stream();
                    let resp = handle(&state, peer, &source, req).await;
                    unread.answered(has_body, resp.status().as_u16());
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = builder.serve_connection(io, svc).into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("connections still open after 10s; closing them");
        }
    }
    state.store.close().await;
}

/// Serves one request: never fails, always answers JSON.
async fn handle(
    state: &State,
    peer: SocketAddr,
    source: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let rid = h::request_id(req.headers());
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let (mut resp, principal) =
        match tokio::time::timeout(HANDLER_TIMEOUT, dispatch(state, peer, source, &rid, req)).await
        {
            Ok(r) => r,
            Err(_) => (
                h::error(&ApiError::new(
                    Code::Unavailable,
                    "the request took too long",
                )),
                String::new(),
            ),
        };
    h::set_request_id(&mut resp, &rid);
    tracing::info!(
        request_id = %rid,
        %method,
        path = %model::name::truncate(&path),
        status = resp.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        principal = %principal,
        source = %source,
        "api request"
    );
    resp
}

async fn dispatch(
    state: &State,
    peer: SocketAddr,
    source: &str,
    rid: &str,
    req: Request<Incoming>,
) -> (Response<Body>, String) {
    let path = req.uri().path().to_string();
    let route = match routes::route(req.method().as_str(), &path) {
        Match::Found(r, params) => (
            r,
            params.into_iter().map(str::to_string).collect::<Vec<_>>(),
        ),
        Match::WrongMethod(allowed) => {
            let mut r = h::error(&ApiError::new(
                Code::MethodNotAllowed,
                format!(
                    "{} is not allowed here; use {}",
                    req.method(),
                    allowed.join(", ")
                ),
            ));
            if let Ok(v) = http::HeaderValue::from_str(&allowed.join(", ")) {
                r.headers_mut().insert(http::header::ALLOW, v);
            }
            return (r, String::new());
        }
        Match::NotFound => {
            let e = ApiError::new(Code::NotFound, "no such endpoint; see /v1/openapi.json");
            return (h::error(&e), String::new());
        }
    };
    let (route, params) = route;
    match route.op {
        Op::Health => {
            let health = Health {
                status: "ok".into(),
                version: crate::VERSION.into(),
            };
            return (h::json(StatusCode::OK, &health), String::new());
        }
        Op::OpenApi => {
            return (
                h::json(StatusCode::OK, &crate::openapi::document()),
                String::new(),
            )
        }
        Op::SealStatus => {
            return (
                h::json(StatusCode::OK, &crate::seal_status(state)),
                String::new(),
            )
        }
        Op::Unseal => {
            let (parts, body) = req.into_parts();
            let r = unseal(state, peer, rid, &parts.headers, body, &path).await;
            return (r.unwrap_or_else(|e| h::error(&e)), String::new());
        }
        _ => {}
    }
    if state.keyring.is_sealed() {
        let e = ApiError::new(Code::Sealed, "the server is sealed; run `gantry unseal`");
        return (h::error(&e), String::new());
    }
    let (parts, body) = req.into_parts();
    let who = match auth::authenticate(state, &parts.headers, peer, rid, route, &path).await {
        Ok(w) => w,
        Err(e) => return (h::error(&e), String::new()),
    };
    let principal = who.principal.to_string();
    let ctx = Ctx {
        state,
        actor: store::Actor {
            principal: principal.clone(),
            request_id: rid.to_string(),
            source: source.to_string(),
        },
        who,
        route,
        path,
    };
    let params: Vec<&str> = params.iter().map(String::as_str).collect();
    let req = Req {
        headers: parts.headers,
        query: parts.uri.query().map(str::to_string),
        body,
    };
    let resp = match handlers::call(&ctx, route.op, &params, req).await {
        Ok(r) => r,
        Err(e) => h::error(&e),
    };
    (resp, principal)
}

/// `POST /v1/sys/unseal`: no token (the passphrase or PIN is the credential); failures are
/// rate limited like failed authentications, and every attempt is audited.
async fn unseal(
    state: &State,
    peer: SocketAddr,
    rid: &str,
    headers: &http::HeaderMap,
    body: Incoming,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    if state.limiter.blocked(peer.ip()) {
        return Err(ApiError::new(
            Code::RateLimited,
            "too many failed attempts from this address; retry in a minute",
        ));
    }
    let req: model::kms::Unseal = h::read_secret_json(headers, body).await?;
    if !state.keyring.is_sealed() {
        return Ok(h::json(StatusCode::OK, &crate::seal_status(state)));
    }
    let keyring = state.keyring.clone();
    // Argon2id is deliberately slow: keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || keyring.unseal(&req.secret))
        .await
        .map_err(|_| ApiError::new(Code::Internal, "unseal task failed"))?;
    let actor = store::Actor {
        principal: "anonymous".into(),
        request_id: rid.to_string(),
        source: peer.to_string(),
    };
    let mut event =
        store::audit::NewEvent::success("seal.unseal", path.to_string(), model::Scope::Platform);
    if let Err(e) = &result {
        event.outcome = model::types::Outcome::Failed;
        event.detail = e.code().as_str().to_string();
        state.limiter.failed(peer.ip());
    }
    state.store.record(&actor, event).await?;
    result?;
    tracing::info!(source = %peer, "unsealed");
    Ok(h::json(StatusCode::OK, &crate::seal_status(state)))
}
