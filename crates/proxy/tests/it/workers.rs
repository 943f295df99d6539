//! Worker runtimes: one listening socket per worker (SO_REUSEPORT), each served by a
//! single-threaded runtime of its own; every worker serves, long-lived connections are spread
//! evenly over them, and shutdown drains them all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy::{Balancer, Endpoint, PathMatch, Proxy, RouteTable};

use crate::harness::{route, Upstream1};

const WORKERS: usize = 3;

fn proxy_to(up: SocketAddr) -> Arc<Proxy> {
    let mut r = route(
        "w",
        "app.test",
        PathMatch::Prefix("/".into()),
        vec![Endpoint::new(up)],
        Balancer::RoundRobin,
    );
    r.timeout = Duration::from_secs(5);
    Proxy::new(RouteTable::new(vec![r]))
}

/// `WORKERS` worker runtimes serving a proxy to `up` on a fresh port: the proxy, the
/// address, the shutdown switch and the workers.
fn serve_on_workers(
    up: SocketAddr,
    drain: Duration,
) -> (
    Arc<Proxy>,
    SocketAddr,
    tokio::sync::watch::Sender<bool>,
    proxy::Workers,
) {
    let proxy = proxy_to(up);
    let listeners = proxy::bind_workers("127.0.0.1:0".parse().unwrap(), WORKERS).unwrap();
    let addr = listeners[0].local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let workers = proxy
        .spawn_workers(listeners, None, rx, drain, proxy::Placement::Float)
        .unwrap();
    (proxy, addr, stop, workers)
}

/// A client that opens a new connection for every request.
fn fresh_connections() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn every_worker_runtime_serves_and_shares_the_snapshot() {
    let up = Upstream1::start("a").await;
    let proxy = proxy_to(up.addr);
    let listeners = proxy::bind_workers("127.0.0.1:0".parse().unwrap(), WORKERS).unwrap();
    assert_eq!(listeners.len(), WORKERS);
    let addr = listeners[0].local_addr().unwrap();
    assert_ne!(addr.port(), 0);
    for l in &listeners {
        assert_eq!(l.local_addr().unwrap(), addr, "one port for all workers");
    }
    let (stop, rx) = tokio::sync::watch::channel(false);
    let workers = proxy
        .spawn_workers(
            listeners,
            None,
            rx,
            Duration::from_secs(5),
            proxy::Placement::Float,
        )
        .unwrap();
    let http = fresh_connections();
    // The kernel spreads connections over the sockets by their addresses: with a new
    // connection per request, every worker gets some well before the bound.
    let mut sent = 0;
    while workers.accepted().contains(&0) && sent < 300 {
        let r = http
            .get(format!("http://{addr}/x"))
            .header("host", "app.test")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["upstream"], "a");
        sent += 1;
    }
    let accepted = workers.accepted();
    assert!(
        accepted.iter().all(|&n| n > 0),
        "every worker accepted connections: {accepted:?} after {sent} requests"
    );
    // A snapshot swap reaches every worker.
    proxy.update(RouteTable::new(vec![]));
    for _ in 0..20 {
        let r = http
            .get(format!("http://{addr}/x"))
            .header("host", "app.test")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), workers.join())
        .await
        .expect("workers stop after shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens after shutdown"
    );
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight_on_every_worker() {
    let up = Upstream1::start("a").await;
    let (proxy, addr, stop, workers) = serve_on_workers(up.addr, Duration::from_secs(10));
    // Slow requests (the upstream waits 2 s) on separate connections, until every worker
    // holds at least one (bounded).
    let http = fresh_connections();
    let mut slow = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.len() < 64 && Instant::now() < deadline {
        let before = workers.accepted().iter().sum::<u64>();
        let (http, url) = (http.clone(), format!("http://{addr}/slow"));
        slow.push(tokio::spawn(async move {
            let r = http.get(url).header("host", "app.test").send().await?;
            let status = r.status().as_u16();
            r.text().await.map(|_| status)
        }));
        while workers.accepted().iter().sum::<u64>() == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if workers.accepted().iter().all(|&n| n > 0) {
            break;
        }
    }
    // Every connection made is accepted before shutdown (one still in a socket's backlog
    // when its worker stops listening would be reset by the kernel, not drained).
    let settle = Instant::now() + Duration::from_secs(10);
    while workers.accepted().iter().sum::<u64>() < slow.len() as u64 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let accepted = workers.accepted();
    assert_eq!(accepted.iter().sum::<u64>(), slow.len() as u64);
    assert!(
        accepted.iter().all(|&n| n > 0),
        "each worker has a slow request: {accepted:?}"
    );
    let active = |p: &Proxy| {
        p.metrics_text("w")
            .lines()
            .find(|l| l.starts_with("gantry_edge_active_connections"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap()
    };
    assert_eq!(active(&proxy), slow.len() as u64);
    let stopped = Instant::now();
    let _ = stop.send(true);
    // New connections are refused once the workers stopped accepting.
    let refused_by = Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < refused_by,
            "still accepting after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every request in flight finishes with its answer.
    for t in slow {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    tokio::time::timeout(Duration::from_secs(10), workers.join())
        .await
        .expect("workers stop once drained");
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "drained as requests finished, not at the drain bound"
    );
    assert_eq!(active(&proxy), 0, "no connection left counted");
}

/// One keep-alive request on `c`; the answer's body.
async fn ask(c: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    c.write_all(b"GET /x HTTP/1.1\r\nhost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before the answer");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|v| v.trim().parse().ok())
                .expect("a content-length");
            if body.len() >= len {
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                return body.to_string();
            }
        }
    }
}

#[tokio::test]
async fn long_lived_connections_are_spread_evenly_over_the_workers() {
    let up = Upstream1::start("a").await;
    let (_proxy, addr, stop, workers) = serve_on_workers(up.addr, Duration::from_secs(5));
    // Keep-alive connections opened one after the other: the kernel picks each one's
    // socket by its addresses, the workers even them out.
    let mut conns = Vec::new();
    for n in 1..=(4 * WORKERS) {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&ask(&mut c).await).unwrap();
        assert_eq!(body["upstream"], "a");
        conns.push(c);
        let open = workers.open();
        assert_eq!(open.iter().sum::<usize>(), n, "{open:?}");
        let (min, max) = (open.iter().min().unwrap(), open.iter().max().unwrap());
        assert!(max - min <= 1, "{n} connections spread as {open:?}");
    }
    assert_eq!(workers.open(), vec![4; WORKERS]);
    let served = workers.accepted();
    assert_eq!(served, vec![4; WORKERS], "served per worker");
    // A connection handed over goes on serving on the worker that took it.
    for c in &mut conns {
        let body: serde_json::Value = serde_json::from_str(&ask(c).await).unwrap();
        assert_eq!(body["upstream"], "a");
    }
    // Closed connections are no longer counted, wherever they were served.
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(5);
    while workers.open().iter().sum::<usize>() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(workers.open(), vec![0; WORKERS]);
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), workers.join())
        .await
        .expect("workers stop after shutdown");
}
