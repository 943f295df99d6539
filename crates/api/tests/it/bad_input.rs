//! Bad input on every endpoint: malformed and oversized bodies, wrong media types, unknown
//! fields, bad names, unknown query parameters, unknown paths and methods. The answer is
//! always a 4xx with the right code (the harness also asserts: never a 5xx).

use serde_json::json;

use crate::harness::Server;

/// The POST endpoints with a valid body each, after `setup`.
fn posts() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("/v1/tenants", json!({"name": "t1"})),
        (
            "/v1/tenants/acme/environments",
            json!({"name": "e1", "kind": "staging"}),
        ),
        ("/v1/accounts", json!({"name": "a1"})),
        ("/v1/tenants/acme/accounts", json!({"name": "acme/a1"})),
        (
            "/v1/tokens",
            json!({"account": "acme/bot", "ttl_seconds": 60}),
        ),
        (
            "/v1/grants",
            json!({"role": "viewer", "principal": "acme/bot", "scope": "acme"}),
        ),
    ]
}

async fn setup() -> Server {
    let s = Server::start().await;
    s.ok("POST", "/v1/tenants", Some(json!({"name": "acme"})))
        .await;
    s.ok(
        "POST",
        "/v1/tenants/acme/accounts",
        Some(json!({"name": "acme/bot"})),
    )
    .await;
    s
}

#[tokio::test]
async fn malformed_bodies_on_every_post() {
    let s = setup().await;
    let admin = s.admin.clone();
    for (path, good) in posts() {
        let send = |body: Vec<u8>, ct: &'static str| {
            s.http
                .post(format!("{}{path}", s.base))
                .bearer_auth(&admin)
                .header("content-type", ct)
                .body(body)
        };
        let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
            (b"{".to_vec(), "application/json", 400, "bad_request"),
            (b"[]".to_vec(), "application/json", 400, "bad_request"),
            (b"null".to_vec(), "application/json", 400, "bad_request"),
            (b"".to_vec(), "application/json", 400, "bad_request"),
            (
                vec![0xff, 0xfe, 0x00],
                "application/json",
                400,
                "bad_request",
            ),
            (
                good.to_string().into_bytes(),
                "text/plain",
                415,
                "unsupported_media_type",
            ),
            (
                vec![b' '; 70 * 1024],
                "application/json",
                413,
                "payload_too_large",
            ),
        ];
        for (body, ct, status, code) in cases {
            let r = s.check("POST", path, send(body, ct)).await;
            assert_eq!(
                (r.status, r.code()),
                (status, code),
                "POST {path}: {}",
                r.body
            );
        }
        // An unknown field, a missing field and a wrong type.
        let mut extra = good.clone();
        extra["surprise"] = json!(1);
        let r = s.admin("POST", path, Some(extra)).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request"),
            "{path}: {}",
            r.body
        );
        assert!(r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("surprise"));
        let first_key = good.as_object().unwrap().keys().next().unwrap().clone();
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove(&first_key);
        assert_eq!(
            s.admin("POST", path, Some(missing)).await.status,
            400,
            "{path}"
        );
        let mut wrong = good.clone();
        wrong[&first_key] = json!(42);
        assert_eq!(
            s.admin("POST", path, Some(wrong)).await.status,
            400,
            "{path}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn bad_values_are_named_in_the_error() {
    let s = setup().await;
    let bad_names = [
        "ACME",
        "-x",
        "x-",
        "a_b",
        "a.b",
        "ü",
        &"x".repeat(64),
        "",
        "platform/x/y",
    ];
    for n in bad_names {
        let r = s
            .admin("POST", "/v1/tenants", Some(json!({"name": n})))
            .await;
        assert_eq!(r.status, 400, "{n:?}: {}", r.body);
    }
    let r = s
        .admin("POST", "/v1/tenants", Some(json!({"name": "platform"})))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = s
        .admin(
            "POST",
            "/v1/tenants/acme/environments",
            Some(json!({"name": "x", "kind": "prod"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("prod"));
    for ttl in [0u64, 400 * 86400] {
        let r = s
            .admin(
                "POST",
                "/v1/tokens",
                Some(json!({"account": "acme/bot", "ttl_seconds": ttl})),
            )
            .await;
        assert_eq!((r.status, r.code()), (400, "invalid_argument"), "{ttl}");
    }
    let r = s
        .admin(
            "POST",
            "/v1/tokens",
            Some(json!({"account": "acme/bot", "ttl_seconds": -5})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .admin(
            "POST",
            "/v1/grants",
            Some(json!({"role": "root", "principal": "acme/bot", "scope": "acme"})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .admin(
            "POST",
            "/v1/grants",
            Some(json!({"role": "viewer", "principal": "acme/bot", "scope": "a/b/c"})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .admin(
            "POST",
            "/v1/accounts",
            Some(json!({"name": "x", "description": "a\u{0007}b"})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .admin(
            "POST",
            "/v1/accounts",
            Some(json!({"name": "x", "description": "d".repeat(300)})),
        )
        .await;
    assert_eq!(r.status, 400);
    // A tenant account posted to the platform collection, or to another tenant.
    let r = s
        .admin("POST", "/v1/accounts", Some(json!({"name": "acme/x"})))
        .await;
    assert_eq!(r.status, 422);
    s.stop().await;
}

#[tokio::test]
async fn bad_paths_queries_and_methods() {
    let s = setup().await;
    for path in [
        "/v1/tenants/ACME",
        "/v1/tenants/a_b/environments",
        "/v1/tenants/acme/environments/Bad",
        "/v1/accounts/UPPER",
        "/v1/tenants/acme/accounts/x.y",
        "/v1/tokens/..%2f..",
        &format!("/v1/tenants/{}", "x".repeat(64)),
    ] {
        let r = s.admin("GET", path, None).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
    }
    for path in [
        "/v1/tenants/nope",
        "/v1/tenants/acme/environments/nope",
        "/v1/accounts/nope",
        "/v1/tokens/tok_0000",
        "/v1/nothing",
        "/",
        "/v2/tenants",
    ] {
        let r = s.admin("GET", path, None).await;
        assert_eq!(
            (r.status, r.code()),
            (404, "not_found"),
            "{path}: {}",
            r.body
        );
    }
    let r = s.admin("PUT", "/v1/tenants", None).await;
    assert_eq!((r.status, r.code()), (405, "method_not_allowed"));
    assert_eq!(r.headers["allow"], "GET, POST");
    for q in [
        "/v1/tenants?x=1",
        "/v1/grants?scope=acme&scope=acme",
        "/v1/audit/events?limit=-1",
        "/v1/audit/events?limit=x",
        "/v1/audit/events?since=yesterday",
        "/v1/audit/events?tenant=BAD",
        "/v1/audit/events?action=DROP%20TABLE",
        "/v1/tokens?account=a/b/c",
        "/v1/grants?scope=a/b/c",
    ] {
        let r = s.admin("GET", q, None).await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
    }
    for q in [
        "/v1/grants?role=viewer&principal=acme/bot",
        "/v1/grants?role=boss&principal=acme/bot&scope=acme",
    ] {
        assert_eq!(s.admin("DELETE", q, None).await.status, 400, "{q}");
    }
    let long = format!("/v1/tenants?{}", "a=b&".repeat(1000));
    assert_eq!(s.admin("GET", &long, None).await.status, 400);
    s.stop().await;
}

#[tokio::test]
async fn conflicts_and_missing_parents() {
    let s = setup().await;
    let r = s
        .admin("POST", "/v1/tenants", Some(json!({"name": "acme"})))
        .await;
    assert_eq!((r.status, r.code()), (409, "already_exists"));
    let r = s
        .admin(
            "POST",
            "/v1/tenants/nope/environments",
            Some(json!({"name": "e", "kind": "staging"})),
        )
        .await;
    assert_eq!(r.status, 404);
    s.ok(
        "POST",
        "/v1/tenants/acme/environments",
        Some(json!({"name": "staging", "kind": "staging"})),
    )
    .await;
    s.ok(
        "POST",
        "/v1/grants",
        Some(json!({"role": "developer", "principal": "acme/bot", "scope": "acme/staging"})),
    )
    .await;
    // An environment holding a role grant, a tenant holding environments: refused, clearly.
    let r = s
        .admin("DELETE", "/v1/tenants/acme/environments/staging", None)
        .await;
    assert_eq!((r.status, r.code()), (409, "conflict"));
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("role grant"),
        "{}",
        r.body
    );
    let r = s.admin("DELETE", "/v1/tenants/acme", None).await;
    assert_eq!(r.status, 409);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("environment"));
    // Still there, and the refusals are audited as failed.
    s.ok("GET", "/v1/tenants/acme/environments/staging", None)
        .await;
    let evs = s
        .ok("GET", "/v1/audit/events?action=tenant.delete", None)
        .await;
    assert_eq!(evs["items"][0]["outcome"], "failed");
    assert_eq!(evs["items"][0]["detail"], "conflict");
    // Emptied, both go.
    s.ok(
        "DELETE",
        "/v1/grants?role=developer&principal=acme/bot&scope=acme/staging",
        None,
    )
    .await;
    s.ok("DELETE", "/v1/tenants/acme/environments/staging", None)
        .await;
    s.ok("DELETE", "/v1/tenants/acme/accounts/bot", None).await;
    s.ok("DELETE", "/v1/tenants/acme", None).await;
    assert_eq!(s.admin("GET", "/v1/tenants/acme", None).await.status, 404);
    let r = s.admin("POST", "/v1/tokens/tok_00/revoke", None).await;
    assert_eq!(r.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn secret_bodies_never_echo_values_and_limits_hold() {
    let s = setup().await;
    s.ok(
        "POST",
        "/v1/tenants/acme/environments",
        Some(json!({"name": "staging", "kind": "staging"})),
    )
    .await;
    let base = "/v1/tenants/acme/environments/staging";
    s.ok("POST", &format!("{base}/keys"), Some(json!({"name": "k"})))
        .await;
    // Wrong types in secret-bearing bodies: 400, and the value is not quoted back.
    for (m, path, body, needle) in [
        (
            "PUT",
            format!("{base}/secrets/x"),
            json!({"value": 31415926535u64}),
            "31415926535",
        ),
        (
            "PUT",
            format!("{base}/secrets/x"),
            json!({"value": ["hunter2-in-a-list"]}),
            "hunter2",
        ),
        (
            "POST",
            format!("{base}/keys/k/encrypt"),
            json!({"plaintext_b64": 27182818284u64}),
            "27182818284",
        ),
        (
            "POST",
            "/v1/sys/unseal".to_string(),
            json!({"secret": 16180339887u64}),
            "16180339887",
        ),
    ] {
        let r = s.admin(m, &path, Some(body)).await;
        assert_eq!(r.status, 400, "{m} {path}: {}", r.body);
        assert!(
            !r.body.to_string().contains(needle),
            "{m} {path} echoed the value: {}",
            r.body
        );
    }
    // Exactly one of value and value_b64; base64 must decode.
    for body in [
        json!({}),
        json!({"value": "a", "value_b64": "YQ=="}),
        json!({"value_b64": "***"}),
    ] {
        let r = s
            .admin("PUT", &format!("{base}/secrets/x"), Some(body))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_argument"),
            "{}",
            r.body
        );
    }
    // A 64 KiB value fits; one byte more is 413; a body beyond the limit is 413 too.
    let ok = "a".repeat(64 * 1024);
    assert_eq!(
        s.admin(
            "PUT",
            &format!("{base}/secrets/big"),
            Some(json!({"value": ok}))
        )
        .await
        .status,
        200
    );
    let over = "a".repeat(64 * 1024 + 1);
    let r = s
        .admin(
            "PUT",
            &format!("{base}/secrets/big"),
            Some(json!({"value": over})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (413, "payload_too_large"),
        "{}",
        r.body
    );
    let huge = "a".repeat(200 * 1024);
    let r = s
        .admin(
            "PUT",
            &format!("{base}/secrets/big"),
            Some(json!({"value": huge})),
        )
        .await;
    assert_eq!(r.status, 413);
    // KMS: 4 KiB plaintext limit, bad contexts, bad queries.
    let pt = base64_of(&vec![0u8; 4097]);
    let r = s
        .admin(
            "POST",
            &format!("{base}/keys/k/encrypt"),
            Some(json!({"plaintext_b64": pt})),
        )
        .await;
    assert_eq!(r.status, 400);
    let ctx: serde_json::Map<String, serde_json::Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let r = s
        .admin(
            "POST",
            &format!("{base}/keys/k/encrypt"),
            Some(json!({"plaintext_b64": "aGk=", "context": ctx})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .admin(
            "POST",
            &format!("{base}/keys/k/decrypt"),
            Some(json!({"ciphertext": "Z2sxAAAA"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_ciphertext"));
    for q in [
        "version=0",
        "version=x",
        "stage=old",
        "version=1&stage=current",
    ] {
        let r = s
            .admin("GET", &format!("{base}/secrets/big/value?{q}"), None)
            .await;
        assert_eq!(r.status, 400, "{q}");
    }
    assert_eq!(
        s.admin(
            "DELETE",
            &format!("{base}/secrets/big?recovery_days=3"),
            None
        )
        .await
        .status,
        400
    );
    // Missing environments and keys are 404, after authorization.
    assert_eq!(
        s.admin("GET", "/v1/tenants/acme/environments/nope/secrets", None)
            .await
            .status,
        404
    );
    assert_eq!(
        s.admin("GET", &format!("{base}/keys/nope"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        s.admin("GET", &format!("{base}/secrets/nope/value"), None)
            .await
            .status,
        404
    );
    s.stop().await;
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn bad_routes_are_refused_with_the_reason() {
    let s = setup().await;
    s.ok("POST", "/v1/tenants", Some(json!({"name": "globex"})))
        .await;
    for t in ["acme", "globex"] {
        s.ok(
            "POST",
            &format!("/v1/tenants/{t}/environments"),
            Some(json!({"name": "staging", "kind": "staging"})),
        )
        .await;
    }
    let base = "/v1/tenants/acme/environments/staging/routes";
    let up = json!({"upstream": ["127.0.0.1:9"]});
    for (body, needle) in [
        (
            json!({"name": "r", "host": "*.acme.test", "to": up}),
            "host",
        ),
        (json!({"name": "r", "host": "a.test:80", "to": up}), "host"),
        (
            json!({"name": "r", "host": "a.test", "path": "nope", "to": up}),
            "path",
        ),
        (
            json!({"name": "r", "host": "a.test", "to": {"upstream": ["nowhere"]}}),
            "upstream",
        ),
        (
            json!({"name": "r", "host": "a.test", "to": {"upstream": []}}),
            "upstream",
        ),
        (
            json!({"name": "r", "host": "a.test", "to": up, "timeout_ms": 0}),
            "timeout_ms",
        ),
        (
            json!({"name": "r", "host": "a.test", "to": up, "request_headers": {"set": {"bad header": "v"}}}),
            "header",
        ),
        (
            json!({"name": "r", "host": "a.test", "to": up, "path_kind": "exact", "strip_prefix": true}),
            "strip_prefix",
        ),
    ] {
        let r = s.admin("POST", base, Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{body}: {}",
            r.body
        );
    }
    for body in [
        json!({"name": "r", "host": "a.test"}),
        json!({"name": "r", "host": "a.test", "to": {"nowhere": 1}}),
        json!({"name": "r", "host": "a.test", "to": up, "extra": true}),
    ] {
        assert_eq!(s.admin("POST", base, Some(body)).await.status, 400);
    }
    s.ok(
        "POST",
        base,
        Some(json!({"name": "api", "host": "api.acme.test", "to": up})),
    )
    .await;
    let r = s
        .admin(
            "POST",
            base,
            Some(json!({"name": "api", "host": "other.acme.test", "to": up})),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "already_exists"));
    let r = s
        .admin(
            "POST",
            "/v1/tenants/globex/environments/staging/routes",
            Some(json!({"name": "x", "host": "api.acme.test", "path": "/other", "to": up})),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.body);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("another tenant"));
    assert_eq!(
        s.admin("GET", &format!("{base}/nope"), None).await.status,
        404
    );
    assert_eq!(
        s.admin("DELETE", &format!("{base}/nope"), None)
            .await
            .status,
        404
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_certificates_and_replicas_are_refused_with_the_reason() {
    let s = setup().await;
    s.ok(
        "POST",
        "/v1/tenants/acme/environments",
        Some(json!({"name": "staging", "kind": "staging"})),
    )
    .await;
    let base = "/v1/tenants/acme/environments/staging";
    let key = "-----BEGIN PRIVATE KEY-----\nTUlJQ2VxYXJlYWxseXNlY3JldGtleQ==\n-----END PRIVATE KEY-----\n";
    for (path, body, status, needle) in [
        (
            "certificates",
            json!({"name": "c", "cert_pem": "not pem", "key_pem": key}),
            400,
            "PEM certificate",
        ),
        (
            "certificates/issue",
            json!({"name": "c", "domains": []}),
            400,
            "domain",
        ),
        (
            "certificates/issue",
            json!({"name": "c", "domains": ["bad domain"]}),
            400,
            "domain",
        ),
        (
            "certificates/issue",
            json!({"name": "c", "domains": ["*.acme.test"], "issuer": "acme"}),
            400,
            "dns-01",
        ),
        (
            "certificates/issue",
            json!({"name": "c", "domains": ["a.acme.test"], "issuer": "acme", "challenge": "dns-01"}),
            400,
            "ACME is not configured",
        ),
        (
            "services/svc/replicas",
            json!({"address": "nowhere"}),
            400,
            "IP:PORT",
        ),
    ] {
        let r = s
            .admin("POST", &format!("{base}/{path}"), Some(body.clone()))
            .await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        let m = r.body["error"]["message"].as_str().unwrap();
        assert!(m.contains(needle), "{body}: {}", r.body);
        // A private key sent in a body is never repeated back.
        assert!(!m.contains("TUlJQ2VxYXJl"), "{m}");
    }
    // Malformed JSON around a key: the position, not the content.
    let path = format!("{base}/certificates");
    let req = s
        .http
        .post(format!("{}{path}", s.base))
        .bearer_auth(&s.admin)
        .header("content-type", "application/json")
        .body("{\"key_pem\": \"TUlJQ2VxYXJl");
    let r = s.check("POST", &path, req).await;
    assert_eq!(r.status, 400);
    assert!(!r.body.to_string().contains("TUlJQ2VxYXJl"), "{}", r.body);
    for (method, path) in [
        ("GET", "certificates/nope"),
        ("POST", "certificates/nope/renew"),
        ("DELETE", "certificates/nope"),
        ("DELETE", "services/svc/replicas/127.0.0.1:1"),
    ] {
        let r = s.admin(method, &format!("{base}/{path}"), None).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
    }
    let r = s
        .admin(
            "PUT",
            &format!("{base}/services/svc/replicas/127.0.0.1:1"),
            Some(json!({"state": "sleeping"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = s
        .admin(
            "PUT",
            &format!("{base}/services/svc/replicas/nope"),
            Some(json!({"state": "draining"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    s.ok(
        "POST",
        &format!("{base}/services/svc/replicas"),
        Some(json!({"address": "127.0.0.1:5000"})),
    )
    .await;
    let r = s
        .admin(
            "POST",
            &format!("{base}/services/svc/replicas"),
            Some(json!({"address": "127.0.0.1:5000"})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
}

#[tokio::test]
async fn bad_artifacts_are_refused_with_the_reason() {
    let s = setup().await;
    let base = "/v1/tenants/acme/artifacts";
    let raw = |path: String, ct: &'static str, body: Vec<u8>| {
        s.http
            .post(format!("{}{path}", s.base))
            .bearer_auth(&s.admin)
            .header("content-type", ct)
            .body(body)
    };
    for (path, ct, body, status, needle) in [
        (
            format!("{base}/app/versions/1"),
            "application/json",
            b"{}".to_vec(),
            415,
            "application/gzip",
        ),
        (
            format!("{base}/app/versions/1"),
            "application/gzip",
            b"plain text".to_vec(),
            400,
            "not a .tar.gz",
        ),
        (
            format!("{base}/app/versions/-bad"),
            "application/gzip",
            vec![0x1f, 0x8b],
            400,
            "version",
        ),
        (
            "/v1/tenants/nope/artifacts/app/versions/1".to_string(),
            "application/gzip",
            vec![0x1f, 0x8b],
            404,
            "tenant",
        ),
    ] {
        let r = s.check("POST", &path, raw(path.clone(), ct, body)).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{path}: {}",
            r.body
        );
    }
    // Versions are immutable.
    let first = s.push_artifact(&format!("{base}/app/versions/2")).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = s.push_artifact(&format!("{base}/app/versions/2")).await;
    assert_eq!(again.status, 200, "the same content again is not an error");
    let mut other = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    other.append_data(&mut h, "other", &b"abc"[..]).unwrap();
    let other = other.into_inner().unwrap().finish().unwrap();
    let path = format!("{base}/app/versions/2");
    let r = s
        .check("POST", &path, raw(path.clone(), "application/gzip", other))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    for (method, path) in [
        ("GET", format!("{base}/app/versions/9")),
        ("GET", format!("{base}/app/versions/9/blob")),
        ("DELETE", format!("{base}/app/versions/9")),
    ] {
        let r = s.admin(method, &path, None).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
    }
}

#[tokio::test]
async fn advisory_loads_and_the_artifact_policy_refuse_bad_input() {
    let s = setup().await;
    let admin = s.admin.clone();
    let post = |body: Vec<u8>, ct: &'static str| {
        s.http
            .post(format!("{}/v1/advisories", s.base))
            .bearer_auth(&admin)
            .header("content-type", ct)
            .body(body)
    };
    let record = |i: usize| {
        json!({"id": format!("GHSA-{i}"), "modified": "m",
            "affected": [{"package": {"ecosystem": "npm", "name": "x"}, "versions": ["1.0.0"]}]})
    };
    for (body, ct, status, code) in [
        (
            b"{\"advisories\": \"x\"}".to_vec(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            b"{\"advisories\": [], \"more\": 1}".to_vec(),
            "application/json",
            400,
            "bad_request",
        ),
        (b"{}".to_vec(), "application/json", 400, "bad_request"),
        (b"[]".to_vec(), "text/plain", 415, "unsupported_media_type"),
        (
            vec![b' '; 9 * 1024 * 1024],
            "application/json",
            413,
            "payload_too_large",
        ),
        (
            json!({"advisories": (0..2001).map(record).collect::<Vec<_>>()})
                .to_string()
                .into_bytes(),
            "application/json",
            413,
            "payload_too_large",
        ),
    ] {
        let r = s.check("POST", "/v1/advisories", post(body, ct)).await;
        assert_eq!((r.status, r.code()), (status, code), "{}", r.body);
    }
    // Bad records are named in the report; the good ones are stored.
    let r = s
        .admin(
            "POST",
            "/v1/advisories",
            Some(json!({"advisories": [record(1), {"id": 5}, {"id": "a/b", "modified": "m"}, "text",
                {"id": "X", "modified": "m", "affected": [{"package": {"ecosystem": "npm", "name": "y"},
                    "ranges": [{"type": "SEMVER", "events": [{"fixed": 1}]}]}]}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["loaded"], 1, "{}", r.body);
    assert_eq!(
        r.body["rejected"].as_array().unwrap().len(),
        4,
        "{}",
        r.body
    );
    let r = s
        .admin("GET", &format!("/v1/advisories/{}", "Z".repeat(300)), None)
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.body);
    for body in [
        json!({"production": "severe", "certification": "none", "staging": "none", "development": "none"}),
        json!({"production": "critical"}),
        json!({"production": "critical", "certification": "none", "staging": "none", "development": "none", "qa": "low"}),
    ] {
        let r = s.admin("PUT", "/v1/artifact-policy", Some(body)).await;
        assert_eq!((r.status, r.code()), (400, "bad_request"), "{}", r.body);
    }
    s.stop().await;
}
