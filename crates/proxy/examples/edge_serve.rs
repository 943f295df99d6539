//! A bare edge data plane for profiling: `edge_serve LISTEN UPSTREAM [WORKERS] [SECONDS]`
//! serves every host and path on LISTEN by forwarding to UPSTREAM (plain HTTP/1.1, one
//! route, default settings) with WORKERS worker runtimes (default 1), for SECONDS (default
//! 30), then prints the number of requests it answered; with `EDGE_SERVE_TLS=1` it serves
//! HTTPS with a self-signed certificate (policy `compatible`). Load it with wrk and run it under
//! `valgrind --tool=callgrind` or `perf` to see where the instructions per request go.
//! It must never be used to serve real traffic: it has no TLS, no limits of its own and no
//! control side.

use std::time::Duration;

use proxy::{Balancer, Endpoint, HeaderRules, PathMatch, Proxy, Route, RouteTable, Upstream};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .get(1)
        .expect("LISTEN")
        .parse()
        .expect("LISTEN address");
    let upstream = args
        .get(2)
        .expect("UPSTREAM")
        .parse()
        .expect("UPSTREAM address");
    let workers: usize = args.get(3).map_or(1, |w| w.parse().expect("WORKERS"));
    let seconds: u64 = args.get(4).map_or(30, |s| s.parse().expect("SECONDS"));
    let route = Route {
        id: "bench/prod/hello".into(),
        host: "*".into(),
        path: PathMatch::Prefix("/".into()),
        strip_prefix: false,
        upstream: Upstream::new("u", vec![Endpoint::new(upstream)], Balancer::default()),
        timeout: Duration::from_secs(30),
        max_body: 10 << 20,
        request_headers: HeaderRules::default(),
        response_headers: HeaderRules::default(),
        allow_http: true,
        h2c: false,
        stats: Default::default(),
    };
    let stats = route.stats.clone();
    let proxy = Proxy::new(RouteTable::new(vec![route]));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listeners = proxy::bind_workers(listen, workers).expect("bind");
        let (stop, rx) = tokio::sync::watch::channel(false);
        let tls = std::env::var("EDGE_SERVE_TLS")
            .is_ok_and(|v| v == "1")
            .then(|| {
                let ck = tls::self_signed(&["bench.test".to_string()]).expect("certificate");
                let cfg = tls::server_config(tls::TlsPolicy::Compatible, ck).expect("TLS config");
                proxy::TlsConfig::new(cfg)
            });
        let w = proxy
            .spawn_workers(
                listeners,
                tls,
                rx,
                Duration::from_secs(1),
                proxy::Placement::Float,
            )
            .expect("workers");
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let _ = stop.send(true);
        eprintln!("connections accepted per worker: {:?}", w.accepted());
        w.join().await;
    });
    println!("requests {}", stats.requests());
}
