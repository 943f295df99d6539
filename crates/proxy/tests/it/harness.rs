//! Upstream servers and a proxy on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy::{Balancer, Endpoint, HeaderRules, PathMatch, Proxy, Route, RouteTable, Upstream};
use tokio::net::TcpListener;

/// An upstream that answers `{"upstream": NAME, "path": ..., "headers": {...}}`, or sleeps
/// when the path contains `/slow`, or answers 503 on `/fail`.
pub struct Upstream1 {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream1 {
    pub async fn start(name: &str) -> Upstream1 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let name = name.clone();
                        async move {
                            let path = req.uri().to_string();
                            let headers: serde_json::Map<String, serde_json::Value> = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                                .collect();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().len())
                                .unwrap_or(0);
                            if path.contains("/slow") {
                                tokio::time::sleep(Duration::from_secs(2)).await;
                            }
                            let status = if path.contains("/fail") { 503 } else { 200 };
                            let doc = serde_json::json!({"upstream": name, "path": path, "headers": headers, "body_len": body});
                            let mut r =
                                hyper::Response::new(Full::new(Bytes::from(doc.to_string())));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            r.headers_mut().insert("x-upstream", name.parse().unwrap());
                            r.headers_mut()
                                .insert("server", "test-upstream".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Upstream1 { addr, task }
    }

    /// Stops listening: new connections are refused.
    pub fn kill(&self) {
        self.task.abort();
    }
}

pub fn route(id: &str, host: &str, path: PathMatch, eps: Vec<Arc<Endpoint>>, b: Balancer) -> Route {
    Route {
        id: id.into(),
        host: host.into(),
        path,
        strip_prefix: false,
        upstream: Upstream::new(id, eps, b),
        timeout: Duration::from_secs(1),
        max_body: 1024 * 1024,
        request_headers: HeaderRules::default(),
        response_headers: HeaderRules::default(),
        allow_http: false,
        h2c: false,
        stats: Default::default(),
    }
}

pub struct Edge {
    pub proxy: Arc<Proxy>,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Edge {
    pub async fn start(routes: Vec<Route>) -> Edge {
        Edge::start_with(Proxy::new(RouteTable::new(routes)), None).await
    }

    /// Serves `proxy` on a loopback port, with TLS when `tls` is given.
    pub async fn start_with(proxy: Arc<Proxy>, tls: Option<Arc<rustls::ServerConfig>>) -> Edge {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(proxy.clone().serve(
            listener,
            tls.map(proxy::TlsConfig::new),
            rx,
            Duration::from_secs(5),
        ));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        Edge {
            proxy,
            addr,
            http,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET with a Host header; returns status and JSON body.
    pub async fn get(&self, host: &str, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(self.url(path))
            .header("host", host)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}
