//! The edge inside the control plane: routes written to the store reach the data plane
//! through the reconciler, without a restart and without failing requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use model::routes::{BalancerKind, Listener, PathKind, RouteSpec, Target};
use model::types::EnvKind;
use model::{Name, Scope};
use store::{Actor, Store};

async fn upstream(name: &'static str) -> SocketAddr {
    upstream_with_health(name, Arc::new(AtomicBool::new(true))).await
}

/// An upstream whose `/health` answers 200 while `healthy` is set, 503 otherwise; every
/// other path answers its name.
async fn upstream_with_health(name: &'static str, healthy: Arc<AtomicBool>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let healthy = healthy.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let healthy = healthy.clone();
                    async move {
                        let mut r = hyper::Response::new(Full::new(Bytes::from(name)));
                        if req.uri().path() == "/health" && !healthy.load(Ordering::Relaxed) {
                            *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn spec(host: &str, path: &str, to: &[SocketAddr], listener: Listener) -> RouteSpec {
    RouteSpec {
        host: host.into(),
        path: path.into(),
        path_kind: PathKind::Prefix,
        strip_prefix: false,
        to: Target::Upstream(to.iter().map(|a| a.to_string()).collect()),
        listener,
        balancer: BalancerKind::RoundRobin,
        timeout_ms: None,
        max_body: None,
        request_headers: Default::default(),
        response_headers: Default::default(),
        health: None,
        // These tests speak plain HTTP; the redirect has its own test.
        allow_http: true,
        upstream_protocol: Default::default(),
    }
}

mod certs_and_replicas;

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    certs: Arc<certs::Certs>,
    edge: edge::RunningEdge,
    http: reqwest::Client,
}

async fn setup() -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(&format!("sqlite://{}", dir.path().join("g.db").display()))
            .await
            .unwrap(),
    );
    let a = Actor::system();
    for t in ["acme", "globex"] {
        store
            .create_tenant(&a, &Name::parse(t).unwrap())
            .await
            .unwrap();
        store
            .create_environment(
                &a,
                &Name::parse(t).unwrap(),
                &Name::parse("staging").unwrap(),
                EnvKind::Staging,
            )
            .await
            .unwrap();
    }
    let cfg = edge::EdgeConfig {
        public_http: Some("127.0.0.1:0".parse().unwrap()),
        public_https: Some("127.0.0.1:0".parse().unwrap()),
        https_policy: tls::TlsPolicy::Compatible,
        internal: Some("127.0.0.1:0".parse().unwrap()),
        poll: Duration::from_millis(20),
        access_log: true,
        pin_workers: false,
        workers: None,
    };
    let keyring = Arc::new(
        secrets::Keyring::open(
            store.clone(),
            secrets::SealSetup::File {
                key_path: dir.path().join("seal.key"),
            },
            Arc::new(model::clock::SystemClock),
        )
        .await
        .unwrap(),
    );
    let ca = Arc::new(tls::InternalCa::load_or_create(dir.path()).unwrap());
    let certs = certs::Certs::new(
        store.clone(),
        keyring,
        ca,
        Arc::new(model::clock::SystemClock),
        certs::CertsConfig::default(),
    );
    let source = Arc::new(edge::Local {
        store: store.clone(),
        certs: certs.clone(),
    });
    let edge = edge::start(source, cfg).await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    Setup {
        _dir: dir,
        store,
        certs,
        edge,
        http,
    }
}

impl Setup {
    async fn get(&self, listener: SocketAddr, host: &str, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("http://{listener}{path}"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Which upstreams answered `n` requests to `host` (every one must succeed).
    async fn served_by(
        &self,
        listener: SocketAddr,
        host: &str,
        n: usize,
    ) -> std::collections::HashSet<String> {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..n {
            let (status, body) = self.get(listener, host, "/").await;
            assert_eq!(status, 200, "{body}");
            seen.insert(body);
        }
        seen
    }

    /// Waits (bounded) until the edge answers `want` status for host/path.
    async fn until(&self, listener: SocketAddr, host: &str, path: &str, want: u16) {
        for _ in 0..200 {
            if self.get(listener, host, path).await.0 == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{host}{path} never answered {want}");
    }
}

fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap()
}

#[tokio::test]
async fn routes_in_the_store_reach_the_listeners() {
    let s = setup().await;
    let (a, b) = (upstream("a").await, upstream("b").await);
    let public = s.edge.public_http.unwrap();
    let internal = s.edge.internal.unwrap();
    let act = Actor::system();
    assert_eq!(s.get(public, "api.acme.test", "/").await.0, 404);
    s.store
        .create_route(
            &act,
            &scope("acme/staging"),
            "api",
            &spec("api.acme.test", "/", &[a], Listener::Public),
        )
        .await
        .unwrap();
    s.store
        .create_route(
            &act,
            &scope("acme/staging"),
            "svc",
            &spec("svc.internal", "/", &[b], Listener::Internal),
        )
        .await
        .unwrap();
    s.until(public, "api.acme.test", "/", 200).await;
    assert_eq!(s.get(public, "api.acme.test", "/x").await.1, "a");
    s.until(internal, "svc.internal", "/", 200).await;
    assert_eq!(s.get(internal, "svc.internal", "/").await.1, "b");
    // An internal route is not on the public listener, and vice versa.
    assert_eq!(s.get(public, "svc.internal", "/").await.0, 404);
    assert_eq!(s.get(internal, "api.acme.test", "/").await.0, 404);
    // Another tenant cannot take the host.
    let e = s
        .store
        .create_route(
            &act,
            &scope("globex/staging"),
            "steal",
            &spec("api.acme.test", "/admin", &[b], Listener::Public),
        )
        .await;
    assert!(matches!(e, Err(store::StoreError::Conflict(_))), "{e:?}");
    // The same host and path twice is ambiguous.
    let e = s
        .store
        .create_route(
            &act,
            &scope("acme/staging"),
            "dup",
            &spec("api.acme.test", "/", &[b], Listener::Public),
        )
        .await;
    assert!(matches!(e, Err(store::StoreError::Conflict(_))), "{e:?}");
    // The environment holds routes: it cannot be deleted.
    let e = s
        .store
        .delete_environment(
            &act,
            &Name::parse("acme").unwrap(),
            &Name::parse("staging").unwrap(),
        )
        .await;
    assert!(matches!(e, Err(store::StoreError::Conflict(m)) if m.contains("routes")));
    s.store
        .delete_route(&act, &scope("acme/staging"), "api")
        .await
        .unwrap();
    s.until(public, "api.acme.test", "/", 404).await;
    s.edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn route_changes_under_load_fail_nothing() {
    let s = setup().await;
    let (a, b) = (upstream("a").await, upstream("b").await);
    let public = s.edge.public_http.unwrap();
    let act = Actor::system();
    let st = scope("acme/staging");
    s.store
        .create_route(
            &act,
            &st,
            "main",
            &spec("app.acme.test", "/", &[a, b], Listener::Public),
        )
        .await
        .unwrap();
    s.until(public, "app.acme.test", "/", 200).await;
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..6 {
        let (http, ok, failed, stop) = (s.http.clone(), ok.clone(), failed.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            for _ in 0..5000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match http
                    .get(format!("http://{public}/"))
                    .header("host", "app.acme.test")
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // 100 changes: extra routes come and go, each one swapping the snapshot.
    for i in 0..50 {
        let name = format!("extra-{i}");
        s.store
            .create_route(
                &act,
                &st,
                &name,
                &spec(&format!("x{i}.acme.test"), "/", &[b], Listener::Public),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
        s.store.delete_route(&act, &st, &name).await.unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 300, "the load ran ({ok})");
    assert_eq!(
        failed, 0,
        "{failed} requests failed during 100 route changes"
    );
    s.edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn active_health_checks_take_endpoints_out_and_back() {
    let s = setup().await;
    let flag_a = Arc::new(AtomicBool::new(true));
    let a = upstream_with_health("a", flag_a.clone()).await;
    let b = upstream("b").await;
    let public = s.edge.public_http.unwrap();
    let mut sp = spec("hc.acme.test", "/", &[a, b], Listener::Public);
    sp.health = Some(model::routes::HealthCheckSpec {
        path: "/health".into(),
        interval_ms: 100,
        timeout_ms: 100,
        healthy_threshold: 2,
        unhealthy_threshold: 2,
    });
    s.store
        .create_route(&Actor::system(), &scope("acme/staging"), "hc", &sp)
        .await
        .unwrap();
    s.until(public, "hc.acme.test", "/", 200).await;
    assert_eq!(
        s.served_by(public, "hc.acme.test", 20).await.len(),
        2,
        "both endpoints serve"
    );
    // a fails its checks: after two failed checks it gets no more traffic, and no request fails.
    flag_a.store(false, Ordering::Relaxed);
    let mut only_b = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.served_by(public, "hc.acme.test", 10).await
            == std::collections::HashSet::from(["b".to_string()])
        {
            only_b = true;
            break;
        }
    }
    assert!(only_b, "the unhealthy endpoint kept receiving traffic");
    // a passes again: it comes back.
    flag_a.store(true, Ordering::Relaxed);
    let mut back = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.served_by(public, "hc.acme.test", 10).await.contains("a") {
            back = true;
            break;
        }
    }
    assert!(back, "the recovered endpoint did not come back");
    s.edge.shutdown().await;
}

#[tokio::test]
async fn the_internal_listener_serves_prometheus_metrics() {
    let s = setup().await;
    let a = upstream("a").await;
    let (public, internal) = (s.edge.public_http.unwrap(), s.edge.internal.unwrap());
    let st = scope("acme/staging");
    s.store
        .create_route(
            &Actor::system(),
            &st,
            "api",
            &spec("api.acme.test", "/", &[a], Listener::Public),
        )
        .await
        .unwrap();
    s.until(public, "api.acme.test", "/", 200).await;
    for _ in 0..9 {
        assert_eq!(s.get(public, "api.acme.test", "/").await.0, 200);
    }
    assert_eq!(s.get(public, "nobody.test", "/").await.0, 404);
    let r = s
        .http
        .get(format!("http://{internal}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    let ok = line(
        r#"gantry_edge_requests_total{listener="public",route="acme/staging/api",code="2xx"}"#,
    );
    assert!(ok >= 10.0, "{ok}");
    assert!(line(r#"gantry_edge_unrouted_total{listener="public"}"#) >= 1.0);
    assert_eq!(
        line(&format!(
            r#"gantry_edge_upstream_healthy{{listener="public",route="acme/staging/api",endpoint="{a}"}}"#
        )),
        1.0
    );
    let count = line(
        r#"gantry_edge_request_duration_seconds_count{listener="public",route="acme/staging/api"}"#,
    );
    let inf = line(
        r#"gantry_edge_request_duration_seconds_bucket{listener="public",route="acme/staging/api",le="+Inf"}"#,
    );
    assert_eq!(count, inf);
    assert!(text.contains("# TYPE gantry_edge_requests_total counter"));
    // Counters survive a route change elsewhere (a new snapshot).
    s.store
        .create_route(
            &Actor::system(),
            &st,
            "other",
            &spec("other.acme.test", "/", &[a], Listener::Public),
        )
        .await
        .unwrap();
    s.until(public, "other.acme.test", "/", 200).await;
    let text = s
        .http
        .get(format!("http://{internal}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let again = text
        .lines()
        .find(|l| l.starts_with(r#"gantry_edge_requests_total{listener="public",route="acme/staging/api",code="2xx"}"#))
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse::<f64>()
        .unwrap();
    assert!(again >= ok, "{again} < {ok}");
    // The public listener does not serve metrics.
    assert_eq!(s.get(public, "api2.acme.test", "/metrics").await.0, 404);
    s.edge.shutdown().await;
}

/// An endpoint that leaves the routing stays undrained until the snapshot without it is in
/// place: drained during the build, requests still being routed on the replaced snapshot
/// would find no endpoint (503) while the new one stood ready.
#[test]
fn endpoints_leaving_a_build_are_drained_after_the_swap() {
    let (a, b): (SocketAddr, SocketAddr) = (
        "127.0.0.1:9001".parse().unwrap(),
        "127.0.0.1:9002".parse().unwrap(),
    );
    let info = |to: &[SocketAddr]| model::routes::RouteInfo {
        name: "acme/staging/web".into(),
        spec: spec("web.test", "/", to, Listener::Public),
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        created_by: "admin".into(),
    };
    let mut rec = edge::Reconciler::default();
    let (first, _, leaving) = rec.build(&[info(&[a])], &[]);
    assert!(leaving.addrs().is_empty());
    leaving.drain();
    let old = first.routes().next().unwrap().upstream.endpoints[0].clone();
    assert_eq!(old.addr, a);

    let (second, _, leaving) = rec.build(&[info(&[b])], &[]);
    assert_eq!(leaving.addrs(), [a]);
    assert!(
        !old.is_draining(),
        "drained before the new snapshot is in place"
    );
    let eps: Vec<SocketAddr> = second
        .routes()
        .next()
        .unwrap()
        .upstream
        .endpoints
        .iter()
        .map(|e| e.addr)
        .collect();
    assert_eq!(eps, [b]);
    leaving.drain();
    assert!(old.is_draining());

    // An address that stays keeps its endpoint (and its counters), undrained.
    let (third, _, leaving) = rec.build(&[info(&[b, a])], &[]);
    assert!(leaving.addrs().is_empty());
    let kept = &third.routes().next().unwrap().upstream.endpoints[0];
    assert!(Arc::ptr_eq(
        kept,
        &second.routes().next().unwrap().upstream.endpoints[0]
    ));
    assert!(!kept.is_draining());
}
