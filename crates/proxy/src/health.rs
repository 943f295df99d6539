//! Active health checks: one task per endpoint sends `GET path` every interval and flips
//! the endpoint's `healthy` flag after N failures or M successes in a row, as Envoy does.
//! A check task ends by itself when its endpoint is drained (it left the snapshot).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::snapshot::Endpoint;

/// How an endpoint is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// The HTTP client of the health checks.
pub type CheckerClient = Client<HttpConnector, Empty<Bytes>>;

/// The client health checks share (keep-alive per endpoint saves a handshake per check).
pub fn checker_client() -> CheckerClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(1)
        .build(c)
}

/// Starts checking `ep`; the task stops when the endpoint is drained.
pub fn spawn(
    client: CheckerClient,
    ep: Arc<Endpoint>,
    check: HealthCheck,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (mut ok_run, mut fail_run) = (0u32, 0u32);
        let mut tick = tokio::time::interval(check.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if ep.is_draining() {
                return;
            }
            let ok = probe(&client, &ep, &check).await;
            if ok {
                ok_run += 1;
                fail_run = 0;
                if !ep.is_healthy() && ok_run >= check.healthy_threshold {
                    ep.set_healthy(true);
                    tracing::info!(endpoint = %ep.addr, "health check: endpoint is healthy again");
                }
            } else {
                fail_run += 1;
                ok_run = 0;
                if ep.is_healthy() && fail_run >= check.unhealthy_threshold {
                    ep.set_healthy(false);
                    tracing::warn!(endpoint = %ep.addr, path = %check.path, "health check: endpoint is unhealthy");
                }
            }
        }
    })
}

async fn probe(client: &CheckerClient, ep: &Endpoint, check: &HealthCheck) -> bool {
    let Ok(uri) = format!("http://{}{}", ep.addr, check.path).parse::<http::Uri>() else {
        return false;
    };
    let req = http::Request::get(uri)
        .header(http::header::USER_AGENT, "gantry-health-check")
        .body(Empty::new());
    let Ok(req) = req else { return false };
    match tokio::time::timeout(check.timeout, client.request(req)).await {
        Ok(Ok(resp)) => resp.status().is_success(),
        _ => false,
    }
}
