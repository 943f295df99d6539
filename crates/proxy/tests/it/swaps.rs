//! Zero drop: under a constant bounded load, routes and endpoints are added, removed and
//! drained through 100 snapshot swaps; not one request fails.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proxy::{Balancer, Endpoint, PathMatch, RouteTable};

use crate::harness::{route, Edge, Upstream1};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_swaps_under_load_fail_nothing() {
    let ups = [
        Upstream1::start("a").await,
        Upstream1::start("b").await,
        Upstream1::start("c").await,
    ];
    let eps: Vec<Arc<Endpoint>> = ups.iter().map(|u| Endpoint::new(u.addr)).collect();
    let base = |eps: Vec<Arc<Endpoint>>| {
        route(
            "main",
            "app.test",
            PathMatch::Prefix("/".into()),
            eps,
            Balancer::LeastOutstanding,
        )
    };
    let edge = Edge::start(vec![base(eps.clone())]).await;
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (http, url) = (edge.http.clone(), edge.url("/"));
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            // Bounded: at most 5000 requests per worker and until told to stop.
            for _ in 0..5000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match http.get(&url).header("host", "app.test").send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        // Say why, for the failure message's reader.
                        eprintln!("failed request: {:?}", other.map(|r| r.status()));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    // Endpoint objects per upstream; one that leaves is drained, and comes back later as a
    // fresh registration (as the control plane does).
    let mut current: Vec<Arc<Endpoint>> = eps.clone();
    for i in 0..100 {
        let leaving = i % 3;
        current[leaving].drain();
        let serving: Vec<Arc<Endpoint>> = current
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != leaving)
            .map(|(_, e)| e.clone())
            .collect();
        let mut routes = vec![base(serving)];
        if i % 2 == 0 {
            routes.push(route(
                &format!("extra-{i}"),
                &format!("extra{i}.test"),
                PathMatch::Prefix("/".into()),
                current.clone(),
                Balancer::RoundRobin,
            ));
        }
        edge.proxy.update(RouteTable::new(routes));
        current[leaving] = Endpoint::new(ups[leaving].addr);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 500, "the load ran ({ok} requests)");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during swaps",
        ok + failed
    );
    edge.stop();
}
