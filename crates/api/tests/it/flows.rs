//! Whole flows through the API, on both store engines: the quick start, request ids in the
//! audit trail, audit filters, a restart keeping state and the bootstrap token only once.

use serde_json::json;

use crate::harness::{pg_database, Server};

async fn quick_start(s: &Server) {
    s.ok("POST", "/v1/tenants", Some(json!({"name": "acme"})))
        .await;
    let env = s
        .ok(
            "POST",
            "/v1/tenants/acme/environments",
            Some(json!({"name": "staging", "kind": "staging"})),
        )
        .await;
    assert_eq!(env["kind"], "staging");
    s.ok(
        "POST",
        "/v1/tenants/acme/accounts",
        Some(json!({"name": "acme/ci-bot", "description": "CI"})),
    )
    .await;
    s.ok(
        "POST",
        "/v1/grants",
        Some(json!({"role": "developer", "principal": "acme/ci-bot", "scope": "acme/staging"})),
    )
    .await;
    let tok = s
        .ok(
            "POST",
            "/v1/tokens",
            Some(json!({"account": "acme/ci-bot", "ttl_seconds": 86400})),
        )
        .await;
    let secret = tok["token"].as_str().unwrap();
    assert!(secret.starts_with("gty_"));
    let me = s.call("GET", "/v1/whoami", Some(secret), None).await.body;
    assert_eq!(me["principal"], "acme/ci-bot");
    assert_eq!(
        me["roles"],
        json!([{"role": "developer", "scope": "acme/staging"}])
    );
    let status = s.ok("GET", "/v1/status", None).await;
    assert_eq!(status["counts"]["tenants"], 1);
    assert_eq!(status["counts"]["environments"], 1);
    let v = s.ok("GET", "/v1/audit/verify", None).await;
    assert_eq!(v["intact"], true);
    assert_eq!(v["events"], status["counts"]["audit_events"]);
}

#[tokio::test]
async fn quick_start_on_sqlite() {
    let s = Server::start().await;
    quick_start(&s).await;
    assert!(s.ok("GET", "/v1/status", None).await["store"]
        .as_str()
        .unwrap()
        .starts_with("sqlite"));
    s.stop().await;
}

#[tokio::test]
async fn quick_start_on_postgres() {
    let s = Server::start_with(Some(pg_database().await)).await;
    quick_start(&s).await;
    assert!(s.ok("GET", "/v1/status", None).await["store"]
        .as_str()
        .unwrap()
        .starts_with("postgres"));
    s.stop().await;
}

#[tokio::test]
async fn request_ids_reach_the_audit_trail() {
    let s = Server::start().await;
    let req = s
        .http
        .post(format!("{}/v1/tenants", s.base))
        .bearer_auth(&s.admin)
        .header("x-request-id", "ci-run-42.step-1")
        .json(&json!({"name": "acme"}));
    let r = s.check("POST", "/v1/tenants", req).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.headers["x-request-id"], "ci-run-42.step-1");
    let ev = s
        .ok("GET", "/v1/audit/events?action=tenant.create", None)
        .await;
    assert_eq!(ev["items"][0]["request_id"], "ci-run-42.step-1");
    // An unsafe request id is replaced, not echoed.
    let req = s
        .http
        .get(format!("{}/v1/health", s.base))
        .header("x-request-id", "bad id with spaces");
    let r = s.check("GET", "/v1/health", req).await;
    assert_ne!(r.headers["x-request-id"], "bad id with spaces");
    s.stop().await;
}

#[tokio::test]
async fn audit_filters() {
    let s = Server::start().await;
    for t in ["acme", "globex"] {
        s.ok("POST", "/v1/tenants", Some(json!({"name": t}))).await;
        s.ok(
            "POST",
            &format!("/v1/tenants/{t}/environments"),
            Some(json!({"name": "staging", "kind": "staging"})),
        )
        .await;
    }
    let count = |v: serde_json::Value| v["items"].as_array().unwrap().len();
    assert_eq!(
        count(s.ok("GET", "/v1/audit/events?tenant=acme", None).await),
        2
    );
    assert_eq!(
        count(
            s.ok("GET", "/v1/audit/events?action=environment.create", None)
                .await
        ),
        2
    );
    assert_eq!(
        count(s.ok("GET", "/v1/audit/events?action=tenant.*", None).await),
        2
    );
    assert_eq!(
        count(s.ok("GET", "/v1/audit/events?principal=admin", None).await),
        4
    );
    assert_eq!(
        count(s.ok("GET", "/v1/audit/events?limit=2", None).await),
        2
    );
    assert_eq!(
        count(
            s.ok("GET", "/v1/audit/events?since=2999-01-01T00:00:00Z", None)
                .await
        ),
        0
    );
    let all = s.ok("GET", "/v1/audit/events", None).await;
    let seqs: Vec<i64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    // seal.init, platform.bootstrap, then the four changes above.
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());
    assert_eq!(all["items"][0]["action"], "seal.init");
    assert_eq!(
        count(s.ok("GET", "/v1/audit/events?after=3", None).await),
        3
    );
    s.stop().await;
}

#[tokio::test]
async fn restart_keeps_state_and_bootstraps_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = api::Config::new(dir.path().join("d"), "127.0.0.1:0".parse().unwrap());
    config.tls_names = vec!["gantry.internal".into()];
    let first = api::start(config.clone()).await.unwrap();
    let token = first.admin_token.clone().unwrap();
    let file = std::fs::read_to_string(dir.path().join("d/admin.token")).unwrap();
    assert_eq!(file.trim(), token);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("d/admin.token"), 0o600);
        assert_eq!(mode("d/ca.key"), 0o600);
        assert_eq!(mode("d"), 0o700);
    }
    // A second process on the same data directory is refused.
    let second = api::start(config.clone()).await;
    assert!(matches!(second, Err(api::StartError::Locked(_))));
    first.shutdown().await;
    let again = api::start(config).await.unwrap();
    assert!(again.admin_token.is_none(), "bootstrap must run once");
    let ca = std::fs::read(dir.path().join("d/ca.pem")).unwrap();
    let http = crate::harness::client_for(&ca);
    let r = http
        .get(format!("https://localhost:{}/v1/whoami", again.addr.port()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the CA and token survive a restart");
    again.shutdown().await;
}
