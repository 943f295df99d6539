//! The `customers-mngr` example service under the runtime: port, secret, version, request
//! logs, and a graceful stop that finishes a request in flight.

use std::path::PathBuf;
use std::time::Duration;

use runtime::{Env, ReplicaSpec, ReplicaState, Runtime};

use crate::harness::*;

/// Builds the example (bounded) into its own target dir (the outer `cargo test` holds
/// the lock of the main one). `None` (with a message) if it cannot be built.
async fn build_example() -> Option<PathBuf> {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let workspace = manifest_dir.parent()?.parent()?.to_path_buf();
    let manifest = workspace.join("examples/customers-mngr/Cargo.toml");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("customers-mngr-example");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = tokio::process::Command::new(cargo);
    cmd.arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(300), cmd.status()).await {
        Ok(Ok(s)) if s.success() => Some(target.join("debug/customers-mngr")),
        Ok(Ok(s)) => {
            eprintln!("SKIP: building customers-mngr failed ({s})");
            None
        }
        Ok(Err(e)) => {
            eprintln!("SKIP: cargo is unavailable: {e}");
            None
        }
        Err(_) => {
            eprintln!("SKIP: building customers-mngr took more than 300 s");
            None
        }
    }
}

#[tokio::test]
async fn runs_the_customers_service() {
    let Some(bin) = build_example().await else {
        return;
    };
    const SECRET: &str = "example-db-password-5521";
    let fx = Fixture::new();
    let rt = fx.runtime();
    let mut spec = ReplicaSpec::new(
        id("customers-mngr"),
        fx.path(),
        vec![bin.display().to_string()],
    );
    spec.env = Env::new()
        .with("DB_PASSWORD", SECRET)
        .unwrap()
        .with("VERSION", "7")
        .unwrap();
    spec.grace = Duration::from_secs(15);
    let h = rt.start(spec).await.unwrap();
    let port = h.port.unwrap();

    let health = http_until(port, "/health", 200, 30).await;
    assert_eq!(health, r#"{"status":"ok"}"#);
    let (status, body) = http_get(port, "/customers").await.unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["version"], "7");
    assert!(v["customers"].as_array().is_some_and(|c| c.len() == 3));
    let (status, body) = http_get(port, "/customers/2").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("Grace Hopper"));
    assert_eq!(http_get(port, "/customers/99").await.unwrap().0, 404);
    log_until(&rt, &h.id, "GET /customers/2 200", 10).await;

    // A request in flight when the stop comes is answered before the process exits.
    let slow = tokio::spawn(http_get(port, "/debug/slow?ms=1500"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let end = rt.stop(&h.id, None).await.unwrap();
    let (status, body) = slow.await.unwrap().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(end.state, ReplicaState::Stopped);
    assert_eq!(
        end.last_exit.unwrap().code,
        Some(0),
        "exited by itself on SIGTERM"
    );

    let lines = rt.logs_tail(&h.id, 100).await.unwrap();
    assert!(lines
        .iter()
        .any(|l| l.contains("finishing requests in flight")));
    for f in fx.files() {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(!text.contains(SECRET), "secret in {}", f.display());
    }

    // Without the secret, health says so.
    let rt2 = fx.runtime();
    let spec = ReplicaSpec::new(
        id("customers-mngr"),
        fx.path(),
        vec![bin.display().to_string()],
    );
    let h = rt2.start(spec).await.unwrap();
    http_until(h.port.unwrap(), "/health", 503, 30).await;
    rt2.stop(&h.id, Some(Duration::from_secs(5))).await.unwrap();
}
