//! Routing, balancing, forwarding headers, retries, ejection, limits and timeouts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proxy::{Balancer, Endpoint, PathMatch, RouteTable};

use crate::harness::{route, Edge, Upstream1};

#[tokio::test]
async fn routes_by_host_and_path_with_forwarding_headers() {
    let (a, b) = (Upstream1::start("a").await, Upstream1::start("b").await);
    let mut api = route(
        "acme/staging/api",
        "api.acme.test",
        PathMatch::Prefix("/customers".into()),
        vec![Endpoint::new(a.addr)],
        Balancer::RoundRobin,
    );
    api.strip_prefix = true;
    api.request_headers
        .set
        .push(("x-tenant".parse().unwrap(), "acme".parse().unwrap()));
    api.response_headers.remove.push("server".parse().unwrap());
    let other = route(
        "acme/staging/web",
        "web.acme.test",
        PathMatch::Prefix("/".into()),
        vec![Endpoint::new(b.addr)],
        Balancer::RoundRobin,
    );
    let edge = Edge::start(vec![api, other]).await;

    let r = edge
        .http
        .get(edge.url("/customers/42?x=1"))
        .header("host", "api.acme.test")
        .header("x-forwarded-for", "10.9.9.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("server").is_none(),
        "response header rule removes server"
    );
    assert_eq!(r.headers()["x-upstream"], "a");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["path"], "/42?x=1", "prefix stripped, query kept");
    let h = &body["headers"];
    assert_eq!(h["x-forwarded-for"], "10.9.9.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.acme.test");
    assert_eq!(h["host"], "api.acme.test");
    assert_eq!(h["x-tenant"], "acme");
    let tp = h["traceparent"].as_str().unwrap();
    assert!(tp.starts_with("00-") && tp.len() == 55, "{tp}");

    assert_eq!(
        edge.get("web.acme.test", "/anything").await.1["upstream"],
        "b"
    );
    assert_eq!(
        edge.get("API.ACME.TEST:8080", "/customers").await.1["upstream"],
        "a"
    );
    let (status, body) = edge.get("api.acme.test", "/customersx").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(edge.get("nobody.test", "/").await.0, 404);
    // A client's traceparent is kept.
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = edge
        .http
        .get(edge.url("/"))
        .header("host", "web.acme.test")
        .header("traceparent", tp)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["headers"]["traceparent"],
        tp
    );
    edge.stop();
}

#[tokio::test]
async fn round_robin_is_even_and_least_outstanding_uses_all() {
    let ups = [
        Upstream1::start("a").await,
        Upstream1::start("b").await,
        Upstream1::start("c").await,
    ];
    let eps = ups
        .iter()
        .map(|u| Endpoint::new(u.addr))
        .collect::<Vec<_>>();
    let rr = route(
        "rr",
        "rr.test",
        PathMatch::Prefix("/".into()),
        eps.clone(),
        Balancer::RoundRobin,
    );
    let lo = route(
        "lo",
        "lo.test",
        PathMatch::Prefix("/".into()),
        eps,
        Balancer::LeastOutstanding,
    );
    let edge = Edge::start(vec![rr, lo]).await;
    let mut count: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let (_, b) = edge.get("rr.test", "/").await;
        *count
            .entry(b["upstream"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        count.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{count:?}"
    );
    let mut seen = std::collections::HashSet::new();
    for _ in 0..60 {
        seen.insert(
            edge.get("lo.test", "/").await.1["upstream"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(seen.len(), 3);
    edge.stop();
}

#[tokio::test]
async fn a_dead_endpoint_is_retried_around_then_ejected() {
    let (a, b) = (Upstream1::start("a").await, Upstream1::start("b").await);
    let ea = Endpoint::new(a.addr);
    let eb = Endpoint::new(b.addr);
    let r = route(
        "r",
        "r.test",
        PathMatch::Prefix("/".into()),
        vec![ea.clone(), eb.clone()],
        Balancer::RoundRobin,
    );
    let edge = Edge::start(vec![r]).await;
    a.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Bodiless requests never fail: a connect error is retried on the other endpoint.
    for _ in 0..20 {
        let (status, body) = edge.get("r.test", "/").await;
        assert_eq!((status, body["upstream"].as_str()), (200, Some("b")));
    }
    // After 5 consecutive failures the dead endpoint is ejected (no more attempts on it).
    assert!(
        edge.proxy.is_ejected(&ea),
        "the dead endpoint was not ejected"
    );
    assert!(!edge.proxy.is_ejected(&eb));
    // A request with a body is never retried: it fails with 502 if it hits the dead one,
    // so use an upstream with only the dead endpoint to see that.
    let dead_only = route(
        "d",
        "d.test",
        PathMatch::Prefix("/".into()),
        vec![Endpoint::new(a.addr)],
        Balancer::RoundRobin,
    );
    edge.proxy.update(RouteTable::new(vec![dead_only]));
    let r = edge
        .http
        .post(edge.url("/"))
        .header("host", "d.test")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_gateway");
    edge.stop();
}

#[tokio::test]
async fn the_last_endpoint_is_never_ejected_and_no_healthy_means_503() {
    let a = Upstream1::start("a").await;
    let ea = Endpoint::new(a.addr);
    let edge = Edge::start(vec![route(
        "r",
        "r.test",
        PathMatch::Prefix("/".into()),
        vec![ea.clone()],
        Balancer::LeastOutstanding,
    )])
    .await;
    for _ in 0..10 {
        assert_eq!(edge.get("r.test", "/fail").await.0, 503);
    }
    assert!(!edge.proxy.is_ejected(&ea), "a lone endpoint stays in");
    assert_eq!(edge.get("r.test", "/").await.0, 200);
    ea.set_healthy(false);
    let t = Instant::now();
    let (status, body) = edge.get("r.test", "/").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    edge.stop();
}

#[tokio::test]
async fn timeouts_and_body_limits() {
    let a = Upstream1::start("a").await;
    let mut r = route(
        "r",
        "r.test",
        PathMatch::Prefix("/".into()),
        vec![Endpoint::new(a.addr)],
        Balancer::RoundRobin,
    );
    r.timeout = Duration::from_millis(300);
    r.max_body = 100;
    let edge = Edge::start(vec![r]).await;
    let (status, body) = edge.get("r.test", "/slow").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (504, Some("gateway_timeout"))
    );
    let big = edge
        .http
        .post(edge.url("/"))
        .header("host", "r.test")
        .body(vec![b'x'; 101])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let ok = edge
        .http
        .post(edge.url("/"))
        .header("host", "r.test")
        .body(vec![b'x'; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.json::<serde_json::Value>().await.unwrap()["body_len"],
        100
    );
    edge.stop();
}

#[tokio::test]
async fn http2_clients_are_served() {
    let a = Upstream1::start("a").await;
    // HTTP/2 routes by the :authority, here the edge's address.
    let edge = Edge::start(vec![route(
        "r",
        "127.0.0.1",
        PathMatch::Prefix("/".into()),
        vec![Endpoint::new(a.addr)],
        Balancer::RoundRobin,
    )])
    .await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let r = h2.get(edge.url("/h2")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (body["upstream"].as_str(), body["path"].as_str()),
        (Some("a"), Some("/h2"))
    );
    edge.stop();
}
