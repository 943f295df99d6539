//! Certificates and service replicas from the store reach the data plane: SNI picks the
//! stored certificate, plain HTTP redirects, a service route follows its replicas, a
//! draining replica gets no new requests while its in-flight ones finish, and 100 changes
//! of certificates, replicas and routes under load fail nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use model::certs::{Challenge, IssueCert, Issuer, ReplicaState};
use model::routes::{Listener, Target};
use model::Name;
use store::Actor;

use super::{scope, setup, spec, upstream, Setup};

/// An HTTPS client trusting only the installation's internal CA, resolving `hosts` to the
/// edge's HTTPS listener.
fn https_client(s: &Setup, hosts: &[&str]) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(s.certs.ca_pem().as_bytes()).unwrap();
    let addr = s.edge.public_https.unwrap();
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none());
    for h in hosts {
        b = b.resolve(h, addr);
    }
    b.build().unwrap()
}

fn leaf_fingerprint(r: &reqwest::Response) -> String {
    use sha2::Digest;
    let der = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .unwrap()
        .to_vec();
    hex::encode(sha2::Sha256::digest(der))
}

async fn issue(s: &Setup, env: &str, name: &str, domains: &[&str]) -> String {
    let info = s
        .certs
        .issue(
            &Actor::system(),
            &scope(env),
            &IssueCert {
                name: Name::parse(name).unwrap(),
                domains: domains.iter().map(|d| d.to_string()).collect(),
                issuer: Issuer::Internal,
                challenge: Challenge::Http01,
            },
        )
        .await
        .unwrap();
    info.fingerprint.unwrap()
}

#[tokio::test]
async fn stored_certificates_are_served_by_sni_and_http_redirects() {
    let s = setup().await;
    let a = upstream("a").await;
    let act = Actor::system();
    let mut route = spec("api.acme.test", "/", &[a], Listener::Public);
    route.allow_http = false;
    s.store
        .create_route(&act, &scope("acme/staging"), "api", &route)
        .await
        .unwrap();
    let fp = issue(&s, "acme/staging", "api", &["api.acme.test"]).await;
    let https = s.edge.public_https.unwrap();
    let client = https_client(&s, &["api.acme.test"]);
    let url = format!("https://api.acme.test:{}/x", https.port());
    let mut served = None;
    for _ in 0..200 {
        if let Ok(r) = client.get(&url).send().await {
            if r.status() == 200 && leaf_fingerprint(&r) == fp {
                served = Some(r);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = served.expect("the stored certificate is served");
    assert_eq!(r.text().await.unwrap(), "a");
    // Plain HTTP redirects to the HTTPS listener.
    let r = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://{}/x?y=1", s.edge.public_http.unwrap()))
        .header("host", "api.acme.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://api.acme.test:{}/x?y=1", https.port()).as_str()
    );
    // The certificate's expiry is a metric.
    let (_, metrics) = s.get(s.edge.internal.unwrap(), "metrics", "/metrics").await;
    assert!(
        metrics.contains(
            "gantry_edge_certificate_expiry_timestamp_seconds{certificate=\"acme/staging/api\"}"
        ),
        "{metrics}"
    );
    // Deleted: the edge falls back to the default certificate, which does not cover the
    // name, so a verifying client refuses it.
    s.certs
        .delete(&act, &scope("acme/staging"), "api")
        .await
        .unwrap();
    let mut refused = false;
    for _ in 0..200 {
        if https_client(&s, &["api.acme.test"])
            .get(&url)
            .send()
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "a deleted certificate stops being served");
    s.edge.shutdown().await;
}

/// Waits (bounded) until `n` requests to `host` are all answered by `want`.
async fn until_served_by(s: &Setup, listener: SocketAddr, host: &str, want: &[&str]) {
    let want: std::collections::HashSet<String> = want.iter().map(|w| w.to_string()).collect();
    for _ in 0..300 {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..8 {
            let (status, body) = s.get(listener, host, "/").await;
            if status == 200 {
                seen.insert(body);
            }
        }
        if seen == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{host} never served by exactly {want:?}");
}

#[tokio::test]
async fn service_routes_follow_registered_replicas_and_drain() {
    let s = setup().await;
    let (a, b) = (upstream("a").await, upstream("b").await);
    let act = Actor::system();
    let st = scope("acme/staging");
    let public = s.edge.public_http.unwrap();
    let mut route = spec("customers.acme.test", "/", &[], Listener::Public);
    route.to = Target::Service(Name::parse("customers").unwrap());
    s.store
        .create_route(&act, &st, "customers", &route)
        .await
        .unwrap();
    // No replica yet: 503, quickly.
    s.until(public, "customers.acme.test", "/", 503).await;
    for addr in [a, b] {
        s.store
            .register_replica(
                &act,
                &st,
                "customers",
                &addr.to_string(),
                ReplicaState::Active,
            )
            .await
            .unwrap();
    }
    until_served_by(&s, public, "customers.acme.test", &["a", "b"]).await;
    // A replica of another environment's service of the same name is not used.
    s.store
        .register_replica(
            &act,
            &scope("globex/staging"),
            "customers",
            "127.0.0.1:9",
            ReplicaState::Active,
        )
        .await
        .unwrap();
    // Draining b: only a gets new requests.
    s.store
        .update_replica(
            &act,
            &st,
            "customers",
            &b.to_string(),
            ReplicaState::Draining,
        )
        .await
        .unwrap();
    until_served_by(&s, public, "customers.acme.test", &["a"]).await;
    s.store
        .update_replica(&act, &st, "customers", &b.to_string(), ReplicaState::Active)
        .await
        .unwrap();
    until_served_by(&s, public, "customers.acme.test", &["a", "b"]).await;
    s.store
        .delete_replica(&act, &st, "customers", &a.to_string())
        .await
        .unwrap();
    until_served_by(&s, public, "customers.acme.test", &["b"]).await;
    s.edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_certificate_replica_and_route_changes_under_https_load_fail_nothing() {
    let s = setup().await;
    let (a, b, c) = (
        upstream("a").await,
        upstream("b").await,
        upstream("c").await,
    );
    let act = Actor::system();
    let st = scope("acme/staging");
    let mut route = spec("app.acme.test", "/", &[], Listener::Public);
    route.to = Target::Service(Name::parse("app").unwrap());
    s.store
        .create_route(&act, &st, "app", &route)
        .await
        .unwrap();
    s.store
        .register_replica(&act, &st, "app", &a.to_string(), ReplicaState::Active)
        .await
        .unwrap();
    let fp = issue(&s, "acme/staging", "app", &["app.acme.test"]).await;
    let https = s.edge.public_https.unwrap();
    let url = format!("https://app.acme.test:{}/", https.port());
    let client = https_client(&s, &["app.acme.test"]);
    for i in 0.. {
        if let Ok(r) = client.get(&url).send().await {
            if r.status() == 200 && leaf_fingerprint(&r) == fp {
                break;
            }
        }
        assert!(i < 300, "the certificate never came up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for w in 0..6 {
        // Half the workers open a new TLS connection for every request, so handshakes run
        // while certificates change; the others reuse theirs.
        let fresh = w % 2 == 0;
        let (ok, failed, stop, url) = (ok.clone(), failed.clone(), stop.clone(), url.clone());
        let mut http = https_client(&s, &["app.acme.test"]);
        let s_ca = s.certs.ca_pem().to_string();
        load.push(tokio::spawn(async move {
            for _ in 0..3000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if fresh {
                    let root = reqwest::Certificate::from_pem(s_ca.as_bytes()).unwrap();
                    http = reqwest::Client::builder()
                        .no_proxy()
                        .tls_built_in_root_certs(false)
                        .add_root_certificate(root)
                        .resolve("app.acme.test", https)
                        .build()
                        .unwrap();
                }
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    // 100 changes: certificates of other names come and go, replicas b and c are added,
    // drained and removed (a stays), and routes come and go.
    for i in 0..20 {
        issue(
            &s,
            "acme/staging",
            &format!("extra-{i}"),
            &[&format!("x{i}.acme.test")],
        )
        .await;
        let r = if i % 2 == 0 { b } else { c };
        s.store
            .register_replica(&act, &st, "app", &r.to_string(), ReplicaState::Active)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        s.store
            .update_replica(&act, &st, "app", &r.to_string(), ReplicaState::Draining)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        s.store
            .delete_replica(&act, &st, "app", &r.to_string())
            .await
            .unwrap();
        s.certs
            .delete(&act, &st, &format!("extra-{i}"))
            .await
            .unwrap();
        let mut extra = spec(&format!("r{i}.acme.test"), "/", &[b], Listener::Public);
        extra.allow_http = false;
        s.store
            .create_route(&act, &st, &format!("r{i}"), &extra)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 100, "the load ran ({ok})");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    s.edge.shutdown().await;
}

#[tokio::test]
async fn the_tls_policy_changes_without_a_restart() {
    let s = setup().await;
    let a = upstream("a").await;
    let act = Actor::system();
    let mut route = spec("api.acme.test", "/", &[a], Listener::Public);
    route.allow_http = false;
    s.store
        .create_route(&act, &scope("acme/staging"), "api", &route)
        .await
        .unwrap();
    issue(&s, "acme/staging", "api", &["api.acme.test"]).await;
    let https = s.edge.public_https.unwrap();
    let url = format!("https://api.acme.test:{}/", https.port());
    let tls12 = || {
        let root = reqwest::Certificate::from_pem(s.certs.ca_pem().as_bytes()).unwrap();
        reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root)
            .max_tls_version(reqwest::tls::Version::TLS_1_2)
            .resolve("api.acme.test", https)
            .build()
            .unwrap()
    };
    // `compatible` (the flag): TLS 1.2 is served once the certificate is loaded.
    let mut served = false;
    for _ in 0..300 {
        if let Ok(r) = tls12().get(&url).send().await {
            served = r.status() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served, "TLS 1.2 served under compatible");
    // Set centrally to `modern`: new TLS 1.2 connections are refused, no restart.
    s.store
        .set_https_policy(&act, Some(model::certs::HttpsPolicy::Modern))
        .await
        .unwrap();
    let mut refused = false;
    for _ in 0..300 {
        if tls12().get(&url).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        refused,
        "TLS 1.2 still accepted after the policy became modern"
    );
    // TLS 1.3 still works.
    let r = https_client(&s, &["api.acme.test"])
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Back to the default (the flag): TLS 1.2 again.
    s.store.set_https_policy(&act, None).await.unwrap();
    let mut back = false;
    for _ in 0..300 {
        if tls12().get(&url).send().await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(back);
    s.edge.shutdown().await;
}
