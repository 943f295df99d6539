//! Protocols at the edge: WebSocket upgrades passed through, h2c upstreams, HTTPS with a
//! certificate picked by SNI (swapped without a restart), the HTTP to HTTPS redirect and
//! ACME HTTP-01 challenge answers.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy::{Balancer, CertEntry, CertTable, Endpoint, PathMatch, Proxy, RouteTable, SniResolver};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{route, Edge, Upstream1};

/// An HTTP/1.1 upstream that accepts `Upgrade: websocket` with 101 and then echoes every
/// byte back, prefixed by nothing (the proxy must not care what the bytes are).
async fn echo_upgrade_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(
                    |mut req: hyper::Request<hyper::body::Incoming>| async move {
                        let key = req
                            .headers()
                            .get("sec-websocket-key")
                            .cloned()
                            .unwrap_or_else(|| "none".parse().unwrap());
                        let on = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            if let Ok(up) = on.await {
                                let mut io = TokioIo::new(up);
                                let mut buf = [0u8; 1024];
                                while let Ok(n) = io.read(&mut buf).await {
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        });
                        let mut r = hyper::Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                        r.headers_mut()
                            .insert("upgrade", "websocket".parse().unwrap());
                        r.headers_mut()
                            .insert("connection", "upgrade".parse().unwrap());
                        r.headers_mut().insert("x-key-seen", key);
                        Ok::<_, std::convert::Infallible>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Reads an HTTP/1.1 response head from `s`.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn websocket_upgrades_pass_through_both_ways() {
    let up = echo_upgrade_upstream().await;
    let edge = Edge::start(vec![route(
        "ws",
        "ws.test",
        PathMatch::Prefix("/".into()),
        vec![Endpoint::new(up)],
        Balancer::RoundRobin,
    )])
    .await;
    let mut s = TcpStream::connect(edge.addr).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s))
        .await
        .unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 101"), "{head}");
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(
        lower.contains("x-key-seen: dghlihnhbxbszsbub25jzq=="),
        "{head}"
    );
    for msg in [&b"hello"[..], b"second frame", &[0u8, 255, 1, 2][..]] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, msg);
    }
    // A plain request on the same route still works.
    let mut plain = TcpStream::connect(edge.addr).await.unwrap();
    plain
        .write_all(b"GET /x HTTP/1.1\r\nHost: ws.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut plain).await;
    // The upstream answers 101 to everything; without an upgrade asked for, the edge must
    // refuse to switch rather than hand the client a connection it did not ask for.
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    edge.stop();
}

/// An upstream that speaks HTTP/2 only, over cleartext.
async fn h2c_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = format!("{:?} {}", req.version(), req.uri().path());
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                        body,
                    ))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn h2c_upstreams_are_reached_over_http2() {
    let up = h2c_upstream().await;
    let mut r = route(
        "h2c",
        "grpc.test",
        PathMatch::Prefix("/".into()),
        vec![Endpoint::new(up)],
        Balancer::RoundRobin,
    );
    r.h2c = true;
    let edge = Edge::start(vec![r]).await;
    for i in 0..5 {
        let resp = edge
            .http
            .get(edge.url(&format!("/svc/{i}")))
            .header("host", "grpc.test")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), format!("HTTP/2.0 /svc/{i}"));
    }
    edge.stop();
}

/// A CA and leaf certificates it signs, for the SNI tests.
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    fn leaf(&self, name: &str, domains: &[&str]) -> CertEntry {
        let key = rcgen::KeyPair::generate().unwrap();
        let p = rcgen::CertificateParams::new(
            domains.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        CertEntry::new(
            name,
            domains.iter().map(|s| s.to_string()).collect(),
            4_000_000_000,
            vec![cert.der().clone()],
            &der,
        )
        .unwrap()
    }

    fn client(&self, edge: SocketAddr, hosts: &[&str]) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let root = reqwest::Certificate::from_der(self.cert.der()).unwrap();
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root)
            .tls_info(true)
            .redirect(reqwest::redirect::Policy::none());
        for h in hosts {
            b = b.resolve(h, edge);
        }
        b.build().unwrap()
    }
}

/// The leaf certificate the server presented on `resp`.
fn peer_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info")
        .to_vec()
}

fn leaf_der(e: &CertEntry) -> &CertificateDer<'static> {
    &e.key.cert[0]
}

#[tokio::test]
async fn https_picks_the_certificate_by_sni_and_swaps_without_restart() {
    let a = Upstream1::start("a").await;
    let routes = ["api.acme.test", "www.beta.test", "new.acme.test"]
        .iter()
        .map(|h| {
            let mut r = route(
                h,
                h,
                PathMatch::Prefix("/".into()),
                vec![Endpoint::new(a.addr)],
                Balancer::RoundRobin,
            );
            r.allow_http = false;
            r
        })
        .collect();
    let ca = TestCa::new();
    let api = ca.leaf("acme/prod/api", &["api.acme.test"]);
    let wild = ca.leaf("beta/prod/wild", &["*.beta.test"]);
    let resolver = SniResolver::new(CertTable::new(vec![api.clone(), wild.clone()], None));
    let cfg =
        tls::server_config_with_resolver(tls::TlsPolicy::Compatible, resolver.clone()).unwrap();
    let edge = Edge::start_with(Proxy::new(RouteTable::new(routes)), Some(cfg)).await;
    let port = edge.addr.port();
    let client = ca.client(
        edge.addr,
        &["api.acme.test", "www.beta.test", "new.acme.test"],
    );
    let r = client
        .get(format!("https://api.acme.test:{port}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(peer_cert(&r), leaf_der(&api).to_vec());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    let r = client
        .get(format!("https://www.beta.test:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(peer_cert(&r), leaf_der(&wild).to_vec());
    // No certificate covers new.acme.test and there is no default: the handshake fails.
    assert!(client
        .get(format!("https://new.acme.test:{port}/"))
        .send()
        .await
        .is_err());
    // Add one: the next handshake uses it, no restart.
    let new = ca.leaf("acme/prod/new", &["new.acme.test"]);
    resolver.update(CertTable::new(vec![api, wild, new.clone()], None));
    let fresh = ca.client(edge.addr, &["new.acme.test"]);
    let r = fresh
        .get(format!("https://new.acme.test:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(peer_cert(&r), leaf_der(&new).to_vec());
    // HTTP/2 through ALPN.
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    edge.stop();
}

#[tokio::test]
async fn plain_http_redirects_to_https_serves_acme_challenges_and_allowed_routes() {
    let a = Upstream1::start("a").await;
    let secure = route(
        "secure",
        "api.acme.test",
        PathMatch::Prefix("/".into()),
        vec![Endpoint::new(a.addr)],
        Balancer::RoundRobin,
    );
    let mut open = route(
        "open",
        "open.acme.test",
        PathMatch::Prefix("/".into()),
        vec![Endpoint::new(a.addr)],
        Balancer::RoundRobin,
    );
    open.allow_http = true;
    let proxy = Proxy::new(RouteTable::new(vec![secure, open]));
    proxy.redirect_to_https(8443);
    proxy.serve_acme_challenges(Box::new(|token| {
        (token == "tok123").then(|| "tok123.thumbprint".to_string())
    }));
    let edge = Edge::start_with(proxy, None).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(edge.url("/customers?page=2"))
        .header("host", "api.acme.test:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        "https://api.acme.test:8443/customers?page=2"
    );
    let r = client
        .get(edge.url("/.well-known/acme-challenge/tok123"))
        .header("host", "api.acme.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "tok123.thumbprint");
    let r = client
        .get(edge.url("/.well-known/acme-challenge/other"))
        .header("host", "api.acme.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (status, body) = edge.get("open.acme.test", "/plain").await;
    assert_eq!((status, body["upstream"].as_str()), (200, Some("a")));
    edge.stop();
}

#[tokio::test]
async fn a_tls_policy_refuses_old_protocols() {
    let a = Upstream1::start("a").await;
    let ca = TestCa::new();
    let api = ca.leaf("acme/prod/api", &["api.acme.test"]);
    let resolver = SniResolver::new(CertTable::new(vec![api], None));
    let cfg = tls::server_config_with_resolver(tls::TlsPolicy::Modern, resolver).unwrap();
    let routes = vec![route(
        "r",
        "api.acme.test",
        PathMatch::Prefix("/".into()),
        vec![Endpoint::new(a.addr)],
        Balancer::RoundRobin,
    )];
    let edge = Edge::start_with(Proxy::new(RouteTable::new(routes)), Some(cfg)).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = reqwest::Certificate::from_der(ca.cert.der()).unwrap();
    let tls12 = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .resolve("api.acme.test", edge.addr)
        .build()
        .unwrap();
    let url = format!("https://api.acme.test:{}/", edge.addr.port());
    assert!(
        tls12.get(&url).send().await.is_err(),
        "modern is TLS 1.3 only"
    );
    assert_eq!(
        ca.client(edge.addr, &["api.acme.test"])
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = edge.proxy.metrics_text("public");
    assert!(
        metrics.contains("gantry_edge_tls_handshake_failures_total{listener=\"public\"} 1"),
        "{metrics}"
    );
    edge.stop();
}

/// A request body of `chunks` frames of 512 bytes that does not announce its length.
struct Unsized {
    chunks: usize,
}

impl hyper::body::Body for Unsized {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.chunks == 0 {
            return std::task::Poll::Ready(None);
        }
        self.chunks -= 1;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(vec![
            b'x';
            512
        ])))))
    }
}

#[tokio::test]
async fn bodies_of_unannounced_length_are_held_to_the_route_limit_over_http2() {
    let (a, b) = (Upstream1::start("a").await, Upstream1::start("b").await);
    let mut r = route(
        "limits",
        "limits.test",
        PathMatch::Prefix("/".into()),
        vec![Endpoint::new(a.addr), Endpoint::new(b.addr)],
        Balancer::RoundRobin,
    );
    r.max_body = 1024;
    let edge = Edge::start(vec![r]).await;
    // HTTP/2 with prior knowledge on the plain listener.
    let tcp = TcpStream::connect(edge.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let post = |chunks| {
        hyper::Request::post("http://limits.test/up")
            .body(Unsized { chunks })
            .unwrap()
    };
    // Over the limit, ten times: refused, and no endpoint counted as failing for it.
    for _ in 0..10 {
        send.ready().await.unwrap();
        let resp = send.send_request(post(3)).await.unwrap();
        assert_eq!(resp.status(), 413);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "payload_too_large");
    }
    // At the limit: passed whole, and both endpoints still take requests.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        send.ready().await.unwrap();
        let resp = send.send_request(post(2)).await.unwrap();
        assert_eq!(resp.status(), 200);
        seen.insert(resp.headers()["x-upstream"].to_str().unwrap().to_string());
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["body_len"], 1024);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    edge.stop();
}
