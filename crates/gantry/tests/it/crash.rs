//! Crash safety: `gantry up` is killed with SIGKILL while a client creates resources in a
//! loop; after a restart every acknowledged change is there and the audit chain verifies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{ok, pg_database, Gantry};

fn client(ca: &[u8]) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for c in tls::parse_certs(ca).unwrap() {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Creates tenants from 4 concurrent workers until stopped; returns the acknowledged names.
async fn load(
    api: String,
    token: String,
    ca: Vec<u8>,
    round: usize,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (api, token, acked, stop) = (api.clone(), token.clone(), acked.clone(), stop.clone());
        let http = client(&ca);
        tasks.push(tokio::spawn(async move {
            // Bounded: at most 2000 requests per worker, whatever happens.
            for i in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("r{round}-w{w}-{i}");
                let r = http
                    .post(format!("{api}/v1/tenants"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "name": name }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 201 => acked.lock().unwrap().push(name),
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => break, // the server died mid-request: not acknowledged
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v = acked.lock().unwrap().clone();
    v
}

fn crash_rounds(store: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut all_acked: Vec<String> = Vec::new();
    for round in 0..3 {
        let g = Gantry::start(&data, store.clone());
        let token = std::fs::read_to_string(data.join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        let ca = std::fs::read(data.join("ca.pem")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = rt.spawn(load(g.api.clone(), token, ca, round, stop.clone()));
        // Let the load run, then kill -9 in the middle of it.
        std::thread::sleep(Duration::from_millis(400 + 300 * round as u64));
        let pid = g.child.id();
        g.kill9();
        stop.store(true, Ordering::Relaxed);
        let acked = rt.block_on(handle).unwrap();
        assert!(
            !acked.is_empty(),
            "round {round}: no request was acknowledged before the kill (pid {pid})"
        );
        all_acked.extend(acked);

        let g = Gantry::start(&data, store.clone());
        let listed: serde_json::Value =
            serde_json::from_str(&ok(g.cli(&["tenant", "list", "-o", "json"]))).unwrap();
        let names: std::collections::HashSet<String> = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        for n in &all_acked {
            assert!(
                names.contains(n),
                "round {round}: acknowledged tenant {n} was lost"
            );
        }
        let out = ok(g.cli(&["audit", "verify"]));
        assert!(out.starts_with("chain intact"), "{out}");
        // Every tenant has exactly one creation event: no change without its event.
        let st: serde_json::Value =
            serde_json::from_str(&ok(g.cli(&["status", "-o", "json"]))).unwrap();
        // Pages of at most 1000 events, following the sequence numbers.
        let (mut events, mut after) = (0usize, 0i64);
        loop {
            let page: serde_json::Value = serde_json::from_str(&ok(g.cli(&[
                "audit",
                "list",
                "--action",
                "tenant.create",
                "--limit",
                "1000",
                "--after",
                &after.to_string(),
                "-o",
                "json",
            ])))
            .unwrap();
            let items = page["items"].as_array().unwrap();
            let Some(last) = items.last() else { break };
            events += items.len();
            after = last["seq"].as_i64().unwrap();
        }
        assert_eq!(
            st["counts"]["tenants"].as_u64().unwrap() as usize,
            names.len()
        );
        assert_eq!(events, names.len(), "no event without its change");
        g.stop();
    }
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_change_sqlite() {
    crash_rounds(None);
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_change_postgres() {
    crash_rounds(Some(pg_database()));
}
