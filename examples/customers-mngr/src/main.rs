//! customers-mngr: a small HTTP service that Gantry's runtime runs in tests and demos.
//!
//! * listens on `127.0.0.1:$PORT`;
//! * `GET /health`: 200 `{"status":"ok"}` when `DB_PASSWORD` is set, else 503;
//! * `GET /customers`: a small JSON list, with the service version (`$VERSION`, or the
//!   compiled-in package version);
//! * `GET /customers/{id}`: one customer or 404;
//! * `GET /debug/slow?ms=N`: answers after N ms (at most 10 s), to show graceful stops;
//! * one log line per request on stdout;
//! * SIGTERM (or Ctrl-C): stops accepting, finishes the requests in flight (up to 20 s),
//!   exits 0.
//!
//! It must never print, log or return the value of `DB_PASSWORD`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

struct Config {
    version: String,
    /// Only whether the secret is there; the value is dropped at once.
    has_db_password: bool,
}

const CUSTOMERS: &[(u64, &str, &str)] = &[
    (1, "Ada Lovelace", "ada@example.com"),
    (2, "Grace Hopper", "grace@example.com"),
    (3, "Edsger Dijkstra", "edsger@example.com"),
];

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({ "error": { "message": message } }))
}

fn customer_json(c: &(u64, &str, &str)) -> serde_json::Value {
    json!({ "id": c.0, "name": c.1, "email": c.2 })
}

async fn route(cfg: &Config, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported");
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET"),
        );
        return r;
    }
    let path = req.uri().path();
    match path {
        "/health" => {
            if cfg.has_db_password {
                json_response(StatusCode::OK, json!({ "status": "ok" }))
            } else {
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "status": "unavailable", "reason": "DB_PASSWORD is not set" }),
                )
            }
        }
        "/customers" => json_response(
            StatusCode::OK,
            json!({
                "version": cfg.version,
                "customers": CUSTOMERS.iter().map(customer_json).collect::<Vec<_>>(),
            }),
        ),
        "/debug/slow" => {
            let ms = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ms=")))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1000)
                .min(10_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json_response(StatusCode::OK, json!({ "slept_ms": ms }))
        }
        _ => match path.strip_prefix("/customers/") {
            Some(id) => match id.parse::<u64>() {
                Ok(id) => match CUSTOMERS.iter().find(|c| c.0 == id) {
                    Some(c) => json_response(StatusCode::OK, customer_json(c)),
                    None => error(StatusCode::NOT_FOUND, "no such customer"),
                },
                Err(_) => error(StatusCode::BAD_REQUEST, "a customer id is a number"),
            },
            None => error(StatusCode::NOT_FOUND, "not found"),
        },
    }
}

async fn handle(
    cfg: Arc<Config>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let resp = route(&cfg, &req).await;
    // The path only: a query string could carry anything.
    println!(
        "{peer} {} {} {} {}ms",
        req.method(),
        req.uri().path(),
        resp.status().as_u16(),
        started.elapsed().as_millis()
    );
    Ok(resp)
}

fn main() {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("customers-mngr: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(serve()) {
        eprintln!("customers-mngr: {e}");
        std::process::exit(1);
    }
}

async fn serve() -> Result<(), String> {
    let port: u16 = std::env::var("PORT")
        .map_err(|_| "PORT is not set".to_string())?
        .parse()
        .map_err(|_| "PORT is not a port number".to_string())?;
    let cfg = Arc::new(Config {
        version: std::env::var("VERSION").unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_string()),
        has_db_password: std::env::var_os("DB_PASSWORD").is_some_and(|v| !v.is_empty()),
    });
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    println!(
        "customers-mngr {} listening on 127.0.0.1:{port} (database password {})",
        cfg.version,
        if cfg.has_db_password {
            "set"
        } else {
            "missing"
        }
    );
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        eprintln!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let cfg = cfg.clone();
                let conn = http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| handle(cfg.clone(), peer, req)),
                );
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        eprintln!("connection from {peer}: {e}");
                    }
                });
            }
            _ = term.recv() => { println!("SIGTERM: finishing requests in flight"); break; }
            _ = int.recv() => { println!("SIGINT: finishing requests in flight"); break; }
        }
    }
    drop(listener);
    match tokio::time::timeout(Duration::from_secs(20), graceful.shutdown()).await {
        Ok(()) => println!("all requests finished; bye"),
        Err(_) => println!("requests still in flight after 20s; exiting anyway"),
    }
    Ok(())
}
