//! The edge's control side, inside `gantry up` or alone as `gantry edge`: it binds the
//! listeners (public HTTP and HTTPS, internal HTTP), and runs the reconciler that turns the
//! routes, service replicas and certificates of a `Source` (this process's store, or a
//! remote control plane's API) into snapshots for the data plane (`proxy`).
//!
//! The reconciler polls the source's `routes` and `certificates` generations; when one
//! moved, it reloads that state, builds new snapshots (reusing the live `Endpoint` of an
//! address that stays, so in-flight counts and ejections carry over), swaps them, and then
//! drains the endpoints that left. It must never block the data plane: a failed reload keeps
//! the last good snapshot (certificates cannot be loaded while sealed; they are retried).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use model::certs::{ReplicaInfo, ReplicaState};
use model::routes::{BalancerKind, Listener, PathKind, RouteInfo, Target};
use proxy::{
    Balancer, CertEntry, CertTable, Endpoint, HeaderRules, PathMatch, Proxy, Route, RouteTable,
    SniResolver, Upstream,
};
use tokio::sync::watch;

pub mod source;

pub use source::{Local, Remote, Source, SourceError};

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("edge state: {0}")]
    Source(#[from] SourceError),
}

/// Where the edge listens (`None`: that listener is off) and how often it polls.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub public_http: Option<SocketAddr>,
    pub public_https: Option<SocketAddr>,
    /// TLS policy of the HTTPS listener.
    pub https_policy: tls::TlsPolicy,
    pub internal: Option<SocketAddr>,
    pub poll: Duration,
    /// JSON access logs (tracing target `gantry::access`), one line per routed request.
    pub access_log: bool,
    /// Each listener's worker `i` pinned to the `i`-th CPU the process may run on
    /// (`--edge-cpu-affinity auto`); otherwise the scheduler places them.
    pub pin_workers: bool,
    /// Worker threads per listener (`--edge-workers`); `None`: one per CPU the process may
    /// run on.
    pub workers: Option<usize>,
}

/// A running edge.
pub struct RunningEdge {
    pub public_http: Option<SocketAddr>,
    pub public_https: Option<SocketAddr>,
    pub internal: Option<SocketAddr>,
    pub public: Arc<Proxy>,
    pub internal_proxy: Arc<Proxy>,
    pub certs: Arc<SniResolver>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningEdge {
    /// Stops accepting and lets in-flight requests finish (bounded).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds the listeners, loads the first snapshots and starts serving and reconciling.
pub async fn start(source: Arc<dyn Source>, cfg: EdgeConfig) -> Result<RunningEdge, EdgeError> {
    let mut rec = Reconciler::default();
    let generations = source.generations().await?;
    let first = source.load(true, true).await?;
    let (routes, replicas) = first.routes.unwrap_or_default();
    let (public_table, internal_table, leaving) = rec.build(&routes, &replicas);
    leaving.drain();
    let public = Proxy::new(public_table);
    let internal_proxy = Proxy::new(internal_table);
    public.set_access_log(cfg.access_log);
    internal_proxy.set_access_log(cfg.access_log);
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Some(a) = cfg.public_https.filter(|a| !a.ip().is_unspecified()) {
        names.push(a.ip().to_string());
    }
    let default = entry(source.default_cert(&names)?);
    let loaded = first.certificates.map(entries);
    if loaded.is_none() {
        tracing::warn!("edge: certificates cannot be loaded yet (sealed); serving the default one");
    }
    let resolver = SniResolver::new(CertTable::new(
        loaded.clone().unwrap_or_default(),
        default.clone(),
    ));
    // Prometheus metrics of both listeners and the certificates, on the internal one.
    let (p, i, r) = (
        Arc::downgrade(&public),
        Arc::downgrade(&internal_proxy),
        Arc::downgrade(&resolver),
    );
    internal_proxy.serve_metrics(Box::new(move || {
        let mut out = String::new();
        proxy::metrics::render_headers(&mut out);
        for (name, proxy) in [("public", &p), ("internal", &i)] {
            if let Some(proxy) = proxy.upgrade() {
                out.push_str(&proxy.metrics_text(name));
            }
        }
        if let Some(r) = r.upgrade() {
            proxy::metrics::render_certs(&mut out, &r.table());
        }
        out
    }));
    let challenges = source.clone();
    public.serve_acme_challenges(Box::new(move |token| challenges.challenge(token)));
    let (stop, rx) = watch::channel(false);
    // Every listener has as many workers, placed alike.
    let mut listening = Listening {
        workers: cfg
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        placement: if cfg.pin_workers {
            proxy::Placement::pinned()
        } else {
            proxy::Placement::Float
        },
        stop: rx.clone(),
        tasks: Vec::new(),
    };
    let policy = effective_policy(generations.https_policy, cfg.https_policy);
    let https_tls =
        proxy::TlsConfig::new(tls::server_config_with_resolver(policy, resolver.clone())?);
    let public_https = listening
        .listen(cfg.public_https, &public, Some(https_tls.clone()))
        .await?;
    if let Some(a) = public_https {
        public.redirect_to_https(a.port());
    }
    let public_http = listening.listen(cfg.public_http, &public, None).await?;
    let internal = listening
        .listen(cfg.internal, &internal_proxy, None)
        .await?;
    let mut tasks = listening.tasks;
    let seen = Seen {
        routes: generations.routes,
        certs: if loaded.is_some() {
            generations.certificates
        } else {
            -1
        },
    };
    let snapshots = Snapshots {
        public: public.clone(),
        internal: internal_proxy.clone(),
        certs: resolver.clone(),
        default,
        tls: https_tls,
        flag_policy: cfg.https_policy,
        policy,
    };
    tasks.push(tokio::spawn(reconcile_loop(
        source, rec, seen, snapshots, cfg.poll, rx,
    )));
    Ok(RunningEdge {
        public_http,
        public_https,
        internal,
        public,
        internal_proxy,
        certs: resolver,
        stop,
        tasks,
    })
}

fn entry(c: certs::ServedCert) -> Option<CertEntry> {
    match CertEntry::new(c.name.clone(), c.domains, c.not_after, c.chain, &c.key) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(certificate = %c.name, error = %e, "cannot serve a certificate");
            None
        }
    }
}

fn entries(list: Vec<certs::ServedCert>) -> Vec<CertEntry> {
    list.into_iter().filter_map(entry).collect()
}

/// What the edge's listeners share: how many workers each gets and where they run, the
/// stop signal, and the tasks that wait for their workers.
struct Listening {
    workers: usize,
    placement: proxy::Placement,
    stop: watch::Receiver<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Listening {
    /// Binds `addr` (if any) once per worker and serves `proxy` on it with one
    /// single-threaded worker runtime per socket (`Proxy::spawn_workers`); returns the bound
    /// address.
    async fn listen(
        &mut self,
        addr: Option<SocketAddr>,
        proxy: &Arc<Proxy>,
        tls: Option<Arc<proxy::TlsConfig>>,
    ) -> Result<Option<SocketAddr>, EdgeError> {
        let Some(addr) = addr else { return Ok(None) };
        let bind_error = |source| EdgeError::Bind { addr, source };
        let listeners = proxy::bind_workers(addr, self.workers).map_err(bind_error)?;
        let local = listeners[0].local_addr().map_err(bind_error)?;
        let drain = Duration::from_secs(10);
        let placement = self.placement.clone();
        let workers = proxy
            .spawn_workers(listeners, tls, self.stop.clone(), drain, placement)
            .map_err(bind_error)?;
        self.tasks.push(tokio::spawn(workers.join()));
        Ok(Some(local))
    }
}

/// The generations the current snapshots were built from (`-1`: not loaded yet).
struct Seen {
    routes: i64,
    certs: i64,
}

/// Where new snapshots go.
struct Snapshots {
    public: Arc<Proxy>,
    internal: Arc<Proxy>,
    certs: Arc<SniResolver>,
    default: Option<CertEntry>,
    /// The HTTPS listener's configuration, rebuilt when the TLS policy changes.
    tls: Arc<proxy::TlsConfig>,
    /// The policy of the `--https-policy` flag (used while none is set centrally).
    flag_policy: tls::TlsPolicy,
    policy: tls::TlsPolicy,
}

/// The policy set centrally, else the edge's flag.
fn effective_policy(
    set: Option<model::certs::HttpsPolicy>,
    flag: tls::TlsPolicy,
) -> tls::TlsPolicy {
    match set {
        Some(model::certs::HttpsPolicy::Modern) => tls::TlsPolicy::Modern,
        Some(model::certs::HttpsPolicy::Compatible) => tls::TlsPolicy::Compatible,
        None => flag,
    }
}

async fn reconcile_loop(
    source: Arc<dyn Source>,
    mut rec: Reconciler,
    mut seen: Seen,
    mut to: Snapshots,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(poll);
    // Said once per outage, not once per poll.
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let g = match source.generations().await {
            Ok(g) => g,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "edge: cannot reach the desired state; keeping the current snapshots");
                    failing = true;
                }
                continue;
            }
        };
        let policy = effective_policy(g.https_policy, to.flag_policy);
        if policy != to.policy {
            match tls::server_config_with_resolver(policy, to.certs.clone()) {
                Ok(cfg) => {
                    to.tls.update(cfg);
                    to.policy = policy;
                    tracing::info!(policy = ?policy, "edge: HTTPS listener now uses a new TLS policy for new connections");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "edge: cannot build the TLS configuration; keeping the current one")
                }
            }
        }
        let (routes, certs) = (g.routes != seen.routes, g.certificates != seen.certs);
        if !routes && !certs {
            failing = false;
            continue;
        }
        let loaded = match source.load(routes, certs).await {
            Ok(l) => l,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "edge: cannot load the desired state; keeping the current snapshots");
                    failing = true;
                }
                continue;
            }
        };
        failing = false;
        if let Some((routes, replicas)) = loaded.routes {
            let (p, i, leaving) = rec.build(&routes, &replicas);
            let (public, internal) = (p.len(), i.len());
            to.public.update(p);
            to.internal.update(i);
            // Only now: a request routed on the replaced snapshot may still pick them.
            leaving.drain();
            tracing::info!(
                generation = g.routes,
                public,
                internal,
                "edge: swapped routing snapshot"
            );
            seen.routes = g.routes;
        }
        if let Some(list) = loaded.certificates {
            let list = entries(list);
            tracing::info!(
                generation = g.certificates,
                certificates = list.len(),
                "edge: swapped certificate snapshot"
            );
            to.certs.update(CertTable::new(list, to.default.clone()));
            seen.certs = g.certificates;
        }
    }
}

/// Builds snapshots from routes, keeping endpoint identity across builds, and starts the
/// active health checks of new endpoints (a check ends when its endpoint is drained).
#[derive(Default)]
pub struct Reconciler {
    endpoints: HashMap<(String, SocketAddr), Arc<Endpoint>>,
    stats: HashMap<String, Arc<proxy::RouteStats>>,
    checker: Option<proxy::health::CheckerClient>,
}

impl Reconciler {
    /// (public table, internal table) for `routes`, a service route's endpoints being the
    /// active `replicas` of that service, and the endpoints that are no longer routed (or
    /// whose replica is draining), to drain once the tables are swapped in.
    pub fn build(
        &mut self,
        routes: &[RouteInfo],
        replicas: &[ReplicaInfo],
    ) -> (RouteTable, RouteTable, Leaving) {
        let mut by_service: HashMap<&str, Vec<SocketAddr>> = HashMap::new();
        for r in replicas.iter().filter(|r| r.state == ReplicaState::Active) {
            if let Ok(a) = r.address.parse() {
                by_service.entry(r.service.as_str()).or_default().push(a);
            }
        }
        let mut next: HashMap<(String, SocketAddr), Arc<Endpoint>> = HashMap::new();
        let mut next_stats: HashMap<String, Arc<proxy::RouteStats>> = HashMap::new();
        let (mut public, mut internal) = (Vec::new(), Vec::new());
        for r in routes {
            let addrs: Vec<SocketAddr> = match &r.spec.to {
                Target::Upstream(a) => a.iter().filter_map(|s| s.parse().ok()).collect(),
                // `tenant/env/route` routes to `tenant/env/service`.
                Target::Service(svc) => {
                    let scope = r.name.rsplit_once('/').map(|(s, _)| s).unwrap_or("");
                    by_service
                        .get(format!("{scope}/{svc}").as_str())
                        .cloned()
                        .unwrap_or_default()
                }
            };
            let check = r.spec.health.as_ref().map(|h| proxy::HealthCheck {
                path: h.path.clone(),
                interval: Duration::from_millis(h.interval_ms),
                timeout: Duration::from_millis(h.timeout_ms),
                healthy_threshold: h.healthy_threshold,
                unhealthy_threshold: h.unhealthy_threshold,
            });
            let mut eps = Vec::new();
            for a in addrs {
                let key = (r.name.clone(), a);
                let ep = match self.endpoints.get(&key) {
                    Some(ep) => ep.clone(),
                    None => {
                        let ep = Endpoint::new(a);
                        if let Some(check) = &check {
                            let client = self
                                .checker
                                .get_or_insert_with(proxy::health::checker_client)
                                .clone();
                            proxy::health::spawn(client, ep.clone(), check.clone());
                        }
                        ep
                    }
                };
                next.insert(key, ep.clone());
                eps.push(ep);
            }
            let balancer = match r.spec.balancer {
                BalancerKind::RoundRobin => Balancer::RoundRobin,
                BalancerKind::LeastOutstanding => Balancer::LeastOutstanding,
            };
            let route = Route {
                id: r.name.clone(),
                host: r.spec.host.clone(),
                path: match r.spec.path_kind {
                    PathKind::Prefix => PathMatch::Prefix(r.spec.path.clone()),
                    PathKind::Exact => PathMatch::Exact(r.spec.path.clone()),
                },
                strip_prefix: r.spec.strip_prefix,
                upstream: Upstream::new(r.name.clone(), eps, balancer),
                timeout: Duration::from_millis(
                    r.spec
                        .timeout_ms
                        .unwrap_or(model::routes::DEFAULT_TIMEOUT_MS),
                ),
                max_body: r.spec.max_body.unwrap_or(model::routes::DEFAULT_MAX_BODY),
                request_headers: rules(&r.spec.request_headers),
                response_headers: rules(&r.spec.response_headers),
                allow_http: r.spec.allow_http,
                h2c: r.spec.upstream_protocol == model::routes::UpstreamProtocol::H2c,
                stats: next_stats
                    .entry(r.name.clone())
                    .or_insert_with(|| self.stats.get(&r.name).cloned().unwrap_or_default())
                    .clone(),
            };
            match r.spec.listener {
                Listener::Public => public.push(route),
                Listener::Internal => internal.push(route),
            }
        }
        let leaving = self
            .endpoints
            .iter()
            .filter(|(key, _)| !next.contains_key(*key))
            .map(|(_, ep)| ep.clone())
            .collect();
        self.endpoints = next;
        self.stats = next_stats;
        (
            RouteTable::new(public),
            RouteTable::new(internal),
            Leaving(leaving),
        )
    }
}

/// Endpoints a build left out. They are drained once the snapshots without them are in
/// place: drained before, a request being routed on the replaced snapshot would find its
/// only endpoints draining and get a 503 while the new ones stand ready.
#[must_use = "drain the endpoints once the new snapshots are swapped in"]
pub struct Leaving(Vec<Arc<Endpoint>>);

impl Leaving {
    pub fn drain(self) {
        for ep in self.0 {
            ep.drain();
        }
    }

    /// The endpoints' addresses.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.0.iter().map(|ep| ep.addr).collect()
    }
}

fn rules(spec: &model::routes::HeaderRuleSpec) -> HeaderRules {
    HeaderRules {
        set: spec
            .set
            .iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v.parse().ok()?)))
            .collect(),
        remove: spec.remove.iter().filter_map(|k| k.parse().ok()).collect(),
    }
}
