//! The edge's control side inside `gantry up` (and, later, `gantry edge`): it binds the
//! listeners, and runs the reconciler that turns the routes in the store into routing
//! snapshots for the data plane (`proxy`).
//!
//! The reconciler polls the store's `routes` generation; when it moved, it reloads every
//! route, builds new snapshots (reusing the live `Endpoint` of an address that stays, so
//! in-flight counts and ejections carry over; draining the ones that leave) and swaps them.
//! It must never block the data plane: a failed reload keeps the last good snapshot.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use model::routes::{BalancerKind, Listener, PathKind, RouteInfo, Target};
use proxy::{Balancer, Endpoint, HeaderRules, PathMatch, Proxy, Route, RouteTable, Upstream};
use store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Where the edge listens (`None`: that listener is off) and how often it polls.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub public_http: Option<SocketAddr>,
    pub internal: Option<SocketAddr>,
    pub poll: Duration,
    /// JSON access logs (tracing target `gantry::access`), one line per routed request.
    pub access_log: bool,
}

/// A running edge.
pub struct RunningEdge {
    pub public_http: Option<SocketAddr>,
    pub internal: Option<SocketAddr>,
    pub public: Arc<Proxy>,
    pub internal_proxy: Arc<Proxy>,
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

/// Binds the listeners, loads the first snapshot and starts serving and reconciling.
pub async fn start(store: Arc<Store>, cfg: EdgeConfig) -> Result<RunningEdge, EdgeError> {
    let mut rec = Reconciler::default();
    let routes = store.all_routes().await?;
    let (public_table, internal_table) = rec.build(&routes);
    let public = Proxy::new(public_table);
    let internal_proxy = Proxy::new(internal_table);
    public.set_access_log(cfg.access_log);
    internal_proxy.set_access_log(cfg.access_log);
    // Prometheus metrics of both listeners, on the internal one.
    let (p, i) = (Arc::downgrade(&public), Arc::downgrade(&internal_proxy));
    internal_proxy.serve_metrics(Box::new(move || {
        let mut out = String::new();
        proxy::metrics::render_headers(&mut out);
        for (name, proxy) in [("public", &p), ("internal", &i)] {
            if let Some(proxy) = proxy.upgrade() {
                out.push_str(&proxy.metrics_text(name));
            }
        }
        out
    }));
    let (stop, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let public_http = listen(cfg.public_http, &public, &rx, &mut tasks).await?;
    let internal = listen(cfg.internal, &internal_proxy, &rx, &mut tasks).await?;
    let generation = store.generation("routes").await?;
    tasks.push(tokio::spawn(reconcile_loop(
        store,
        rec,
        generation,
        public.clone(),
        internal_proxy.clone(),
        cfg.poll,
        rx,
    )));
    Ok(RunningEdge {
        public_http,
        internal,
        public,
        internal_proxy,
        stop,
        tasks,
    })
}

/// Binds `addr` (if any) and serves `proxy` on it; returns the bound address.
async fn listen(
    addr: Option<SocketAddr>,
    proxy: &Arc<Proxy>,
    stop: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Option<SocketAddr>, EdgeError> {
    let Some(addr) = addr else { return Ok(None) };
    let l = TcpListener::bind(addr)
        .await
        .map_err(|source| EdgeError::Bind { addr, source })?;
    let local = l
        .local_addr()
        .map_err(|source| EdgeError::Bind { addr, source })?;
    let serve = proxy
        .clone()
        .serve(l, None, stop.clone(), Duration::from_secs(10));
    tasks.push(tokio::spawn(serve));
    Ok(Some(local))
}

async fn reconcile_loop(
    store: Arc<Store>,
    mut rec: Reconciler,
    mut seen: i64,
    public: Arc<Proxy>,
    internal: Arc<Proxy>,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(poll);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let generation = match store.generation("routes").await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "edge: cannot read the routes generation; keeping the current snapshot");
                continue;
            }
        };
        if generation == seen {
            continue;
        }
        match store.all_routes().await {
            Ok(routes) => {
                let (p, i) = rec.build(&routes);
                tracing::info!(
                    generation,
                    public = p.len(),
                    internal = i.len(),
                    "edge: swapped routing snapshot"
                );
                public.update(p);
                internal.update(i);
                seen = generation;
            }
            Err(e) => {
                tracing::warn!(error = %e, "edge: cannot load routes; keeping the current snapshot")
            }
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
    /// (public table, internal table) for `routes`; endpoints that are no longer routed
    /// are drained.
    pub fn build(&mut self, routes: &[RouteInfo]) -> (RouteTable, RouteTable) {
        let mut next: HashMap<(String, SocketAddr), Arc<Endpoint>> = HashMap::new();
        let mut next_stats: HashMap<String, Arc<proxy::RouteStats>> = HashMap::new();
        let (mut public, mut internal) = (Vec::new(), Vec::new());
        for r in routes {
            let addrs: Vec<SocketAddr> = match &r.spec.to {
                Target::Upstream(a) => a.iter().filter_map(|s| s.parse().ok()).collect(),
                // Services get their replicas from the runtime; until then, none.
                Target::Service(_) => Vec::new(),
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
        for (key, ep) in &self.endpoints {
            if !next.contains_key(key) {
                ep.drain();
            }
        }
        self.endpoints = next;
        self.stats = next_stats;
        (RouteTable::new(public), RouteTable::new(internal))
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
