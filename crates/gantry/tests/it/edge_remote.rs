//! `gantry edge` on its own, as on a second machine: it serves what the control plane's API
//! says (routes, replicas, certificates with their keys), follows changes without a
//! restart, and needs a token allowed to read the edge's configuration.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::certs::https_get;
use crate::edge::Upstream;
use crate::harness::{ok, Gantry, BIN};

/// A platform account `NAME` with `role` on the platform; its token.
fn platform_token(g: &Gantry, name: &str, role: &str) -> String {
    ok(g.cli(&["account", "create", name]));
    ok(g.cli(&["role", "grant", role, "--to", name, "--on", "platform"]));
    let t: serde_json::Value = serde_json::from_str(&ok(g.cli(&[
        "token",
        "create",
        "--account",
        name,
        "-o",
        "json",
    ])))
    .unwrap();
    t["token"].as_str().unwrap().to_string()
}

struct RemoteEdge {
    child: Child,
    https: String,
    http: String,
}

impl Drop for RemoteEdge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `gantry edge` against `g` with `token`: the ready line's listeners, or the
/// process's output if it exited instead.
fn start_edge(g: &Gantry, token: &str) -> Result<RemoteEdge, String> {
    let mut child = Command::new(BIN)
        .args(["edge", "--https", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args([
            "--internal",
            "127.0.0.1:0",
            "--poll",
            "100ms",
            "--log-format",
            "json",
        ])
        .env("GANTRY_SERVER", &g.api)
        .env("GANTRY_TOKEN", token)
        .env("GANTRY_CA", g.data.join("ca.pem"))
        .env("GANTRY_CONFIG", g.data.join("no-profile.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(20)) {
        if l.contains("gantry edge is ready") {
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            let f = |k: &str| v["fields"][k].as_str().unwrap().to_string();
            // Keep reading so the child never blocks on a full pipe.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return Ok(RemoteEdge {
                https: f("edge_https"),
                http: f("edge_http"),
                child,
            });
        }
        seen.push(l);
    }
    let status = child.wait().unwrap();
    Err(format!("{status}: {}", seen.join("\n")))
}

#[test]
fn a_remote_edge_serves_what_the_control_plane_says() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), None);
    ok(g.cli(&["tenant", "create", "acme"]));
    ok(g.cli(&["env", "create", "acme/staging", "--kind", "staging"]));
    let up = Upstream::start(&dir.path().join("www"), "via the second edge");
    ok(g.cli(&[
        "route",
        "create",
        "acme/staging/web",
        "--host",
        "web.acme.test",
        "--to",
        &format!("upstream:127.0.0.1:{}", up.1),
    ]));
    ok(g.cli(&[
        "cert",
        "issue",
        "acme/staging/web",
        "--domain",
        "web.acme.test",
    ]));

    // A viewer may not read the edge's configuration (it holds private keys).
    let viewer = platform_token(&g, "watcher", "viewer");
    let refused = start_edge(&g, &viewer)
        .err()
        .expect("a viewer's edge must not start");
    assert!(refused.contains("permission denied"), "{refused}");

    let token = platform_token(&g, "edge-2", "operator");
    let e = start_edge(&g, &token).unwrap();
    let ca_pem = std::fs::read_to_string(g.data.join("ca.pem")).unwrap();
    let (status, body) = https_get(&e.https, "web.acme.test", "/", &ca_pem).unwrap();
    assert_eq!((status, body.as_str()), (200, "via the second edge"));
    // Plain HTTP redirects to the remote edge's own HTTPS port.
    let (status, _) = crate::edge::get_no_redirect(&e.http, "web.acme.test", "/");
    assert_eq!(status, 308);

    // Changes reach it without a restart.
    ok(g.cli(&["route", "delete", "acme/staging/web"]));
    let start = Instant::now();
    loop {
        if let Ok((404, _)) = https_get(&e.https, "web.acme.test", "/", &ca_pem) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the deletion never reached the edge"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Taking the keys is on the record, with who took them.
    let ev = ok(g.cli(&["audit", "list", "--action", "edge.snapshot", "-o", "json"]));
    assert!(ev.contains("edge-2"), "{ev}");
    drop(e);
    g.stop();
}
