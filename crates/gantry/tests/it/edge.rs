//! The edge inside `gantry up`, driven by the CLI: a route to a real upstream process
//! (Python's http.server) takes effect without a restart, a dead upstream answers a JSON
//! error quickly, and a deleted route stops routing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{fails, ok, Gantry};

pub(crate) struct Upstream(Child, pub(crate) u16);

impl Upstream {
    pub(crate) fn start(dir: &std::path::Path, body: &str) -> Upstream {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("index.html"), body).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is installed");
        // Owned from here on: dropping it kills and waits for the process.
        let up = Upstream(child, port);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return up;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("upstream did not start");
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GETs `http://{edge}{path}` with `host`; status and body.
pub(crate) fn get(edge: &str, host: &str, path: &str) -> (u16, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let c = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let r = c
            .get(format!("http://{edge}{path}"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

/// GETs `http://{edge}{path}` with `host` without following redirects; status and body.
pub(crate) fn get_no_redirect(edge: &str, host: &str, path: &str) -> (u16, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
            .get(format!("http://{edge}{path}"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

/// Waits (bounded: 5 s) until `host/path` answers `want`.
fn until(edge: &str, host: &str, path: &str, want: u16) -> String {
    let start = Instant::now();
    loop {
        let (status, body) = get(edge, host, path);
        if status == want {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{host}{path}: {status} {body}, wanted {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn routes_made_with_the_cli_reach_a_real_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), None);
    assert!(
        g.edge_http.starts_with("127.0.0.1:"),
        "edge address in the ready line: {:?}",
        g.edge_http
    );
    ok(g.cli(&["tenant", "create", "acme"]));
    ok(g.cli(&["env", "create", "acme/staging", "--kind", "staging"]));
    let up = Upstream::start(&dir.path().join("www"), "hello from the upstream");
    let to = format!("upstream:127.0.0.1:{}", up.1);
    ok(g.cli(&[
        "route",
        "create",
        "acme/staging/web",
        "--host",
        "web.acme.test",
        "--to",
        &to,
        "--set-response-header",
        "x-served-by=gantry",
        "--allow-http",
    ]));
    let body = until(&g.edge_http, "web.acme.test", "/", 200);
    assert_eq!(body, "hello from the upstream");
    // One JSON access log line per routed request: route, status, upstream, request id.
    // The server writes it before answering; the harness reads the pipe on its own thread.
    let access_line = || {
        g.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                serde_json::from_str::<serde_json::Value>(l.trim_start_matches("ERR ")).ok()
            })
            .find(|v| v["target"] == "gantry::access" && v["fields"]["status"] == 200)
    };
    let start = Instant::now();
    let hit = loop {
        if let Some(v) = access_line() {
            break v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "no access log line for the 200"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(hit["fields"]["route"], "acme/staging/web");
    assert_eq!(hit["fields"]["upstream"], format!("127.0.0.1:{}", up.1));
    assert_eq!(hit["fields"]["request_id"].as_str().unwrap().len(), 32);
    let list = ok(g.cli(&["route", "list", "acme/staging", "-o", "json"]));
    assert!(list.contains("web.acme.test"), "{list}");
    // The public route is not served on the internal listener.
    assert_eq!(get(&g.edge_internal, "web.acme.test", "/").0, 404);
    // Bad routes are refused before anything changes.
    fails(
        g.cli(&[
            "route",
            "create",
            "acme/staging/x",
            "--host",
            "*.acme.test",
            "--to",
            &to,
        ]),
        3,
    );
    fails(
        g.cli(&[
            "route",
            "create",
            "acme/staging/x",
            "--host",
            "x.acme.test",
            "--to",
            "upstream:nowhere",
        ]),
        3,
    );
    fails(
        g.cli(&[
            "route",
            "create",
            "acme/staging/x",
            "--host",
            "x.acme.test",
            "--to",
            "ftp:1",
        ]),
        3,
    );
    // A dead upstream: a JSON error, quickly.
    drop(up);
    let start = Instant::now();
    let (status, body) = get(&g.edge_http, "web.acme.test", "/");
    assert!(status == 502 || status == 503, "{status} {body}");
    assert!(body.contains("\"error\""), "{body}");
    assert!(start.elapsed() < Duration::from_secs(6));
    // Deleted: the edge stops routing it, without a restart.
    ok(g.cli(&["route", "delete", "acme/staging/web"]));
    until(&g.edge_http, "web.acme.test", "/", 404);
    // Every change is in the audit trail.
    let ev = ok(g.cli(&["audit", "list", "--action", "route.*", "-o", "json"]));
    assert!(
        ev.contains("route.create") && ev.contains("route.delete"),
        "{ev}"
    );
    g.stop();
}
