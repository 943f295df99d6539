//! The authorization matrix: every endpoint x every role x a scope inside and outside the
//! principal's grant. The expected answer comes from the permission table in
//! `model::rbac`; the test proves the API enforces that table on every endpoint, and that
//! every refusal is audited.

use model::rbac::{authorize, can_see, role_allows, Action, Resource, RoleOn};
use model::{Role, Scope};
use serde_json::{json, Value};

use crate::harness::Server;

/// Where a principal's role is granted.
const GRANT_SCOPES: &[(&str, &str)] = &[("platform", "p"), ("acme", "t"), ("acme/staging", "e")];

struct Principal {
    account: String,
    roles: Vec<RoleOn>,
    token: String,
}

async fn principals(s: &Server) -> Vec<Principal> {
    let mut out = Vec::new();
    for role in Role::ALL {
        for (scope, tag) in GRANT_SCOPES {
            let account = match *tag {
                "p" => format!("{role}-p"),
                _ => format!("acme/{role}-{tag}"),
            };
            let token = s.principal(&account, role.as_str(), scope).await;
            out.push(Principal {
                account,
                roles: vec![RoleOn {
                    role: *role,
                    scope: Scope::parse(scope).unwrap(),
                }],
                token,
            });
        }
    }
    out
}

fn sc(s: &str) -> Scope {
    Scope::parse(s).unwrap()
}

/// How the expected outcome of a case is decided.
enum Rule {
    /// Allowed iff the table allows `action` on `resource` in the target scope.
    Table(Resource, Action, Scope),
    /// Allowed iff the principal may see the target (holds a role on or inside it).
    See(Resource, Scope),
    /// Allowed iff some role allows the action anywhere.
    Anywhere(Resource, Action),
    /// Allowed iff a role allowing the action is held on the target, above it or inside it.
    Within(Resource, Action, Scope),
    /// Always allowed to any authenticated principal.
    Always,
}

struct Case {
    method: &'static str,
    path: String,
    body: Option<Value>,
    rule: Rule,
}

/// Prepares the target of case `i` (as admin) and describes the request.
async fn cases(s: &Server, i: usize) -> Vec<Case> {
    let mut v = Vec::new();
    let c = |method, path: String, body, rule| Case {
        method,
        path,
        body,
        rule,
    };
    v.push(c("GET", "/v1/status".into(), None, Rule::Always));
    v.push(c("GET", "/v1/whoami".into(), None, Rule::Always));
    v.push(c(
        "POST",
        "/v1/tenants".into(),
        Some(json!({"name": format!("new-{i}")})),
        Rule::Table(Resource::Tenant, Action::Create, Scope::Platform),
    ));
    s.ok(
        "POST",
        "/v1/tenants",
        Some(json!({"name": format!("del-{i}")})),
    )
    .await;
    v.push(c(
        "DELETE",
        format!("/v1/tenants/del-{i}"),
        None,
        Rule::Table(Resource::Tenant, Action::Delete, Scope::Platform),
    ));
    for t in ["acme", "globex"] {
        v.push(c(
            "GET",
            format!("/v1/tenants/{t}"),
            None,
            Rule::See(Resource::Tenant, sc(t)),
        ));
        v.push(c(
            "GET",
            format!("/v1/tenants/{t}/environments"),
            None,
            Rule::See(Resource::Tenant, sc(t)),
        ));
        v.push(c(
            "POST",
            format!("/v1/tenants/{t}/environments"),
            Some(json!({"name": format!("new-{i}"), "kind": "development"})),
            Rule::Table(Resource::Environment, Action::Create, sc(t)),
        ));
        s.ok(
            "POST",
            &format!("/v1/tenants/{t}/environments"),
            Some(json!({"name": format!("del-{i}"), "kind": "development"})),
        )
        .await;
        v.push(c(
            "DELETE",
            format!("/v1/tenants/{t}/environments/del-{i}"),
            None,
            Rule::Table(Resource::Environment, Action::Delete, sc(t)),
        ));
        v.push(c(
            "GET",
            format!("/v1/tenants/{t}/accounts"),
            None,
            Rule::Table(Resource::Account, Action::Read, sc(t)),
        ));
        v.push(c(
            "POST",
            format!("/v1/tenants/{t}/accounts"),
            Some(json!({"name": format!("{t}/new-{i}")})),
            Rule::Table(Resource::Account, Action::Create, sc(t)),
        ));
        v.push(c(
            "GET",
            format!("/v1/tenants/{t}/accounts/bot"),
            None,
            Rule::Table(Resource::Account, Action::Read, sc(t)),
        ));
        s.ok(
            "POST",
            &format!("/v1/tenants/{t}/accounts"),
            Some(json!({"name": format!("{t}/del-{i}")})),
        )
        .await;
        v.push(c(
            "DELETE",
            format!("/v1/tenants/{t}/accounts/del-{i}"),
            None,
            Rule::Table(Resource::Account, Action::Delete, sc(t)),
        ));
        v.push(c(
            "GET",
            format!("/v1/tokens?account={t}/bot"),
            None,
            Rule::Table(Resource::Token, Action::Read, sc(t)),
        ));
        v.push(c(
            "POST",
            "/v1/tokens".into(),
            Some(json!({"account": format!("{t}/bot"), "ttl_seconds": 60})),
            Rule::Table(Resource::Token, Action::Create, sc(t)),
        ));
        let tok = s
            .ok(
                "POST",
                "/v1/tokens",
                Some(json!({"account": format!("{t}/bot"), "ttl_seconds": 60})),
            )
            .await;
        let id = tok["id"].as_str().unwrap().to_string();
        v.push(c(
            "GET",
            format!("/v1/tokens/{id}"),
            None,
            Rule::Table(Resource::Token, Action::Read, sc(t)),
        ));
        v.push(c(
            "POST",
            format!("/v1/tokens/{id}/revoke"),
            None,
            Rule::Table(Resource::Token, Action::Delete, sc(t)),
        ));
        let env = format!("{t}/staging");
        v.push(c(
            "POST",
            "/v1/grants".into(),
            Some(json!({"role": "viewer", "principal": format!("{t}/bot"), "scope": env})),
            Rule::Table(Resource::Grant, Action::Create, sc(&env)),
        ));
        key_and_secret_cases(s, i, t, &mut v).await;
        let r = s
            .admin(
                "POST",
                "/v1/grants",
                Some(json!({"role": "auditor", "principal": format!("{t}/bot"), "scope": env})),
            )
            .await;
        assert!(r.status == 201 || r.code() == "already_exists");
        v.push(c(
            "DELETE",
            format!("/v1/grants?role=auditor&principal={t}/bot&scope={env}"),
            None,
            Rule::Table(Resource::Grant, Action::Delete, sc(&env)),
        ));
    }
    for e in ["acme/staging", "acme/production", "globex/staging"] {
        let (t, n) = e.split_once('/').unwrap();
        v.push(c(
            "GET",
            format!("/v1/tenants/{t}/environments/{n}"),
            None,
            Rule::See(Resource::Environment, sc(e)),
        ));
    }
    v.push(c(
        "GET",
        "/v1/accounts".into(),
        None,
        Rule::Table(Resource::Account, Action::Read, Scope::Platform),
    ));
    v.push(c(
        "POST",
        "/v1/accounts".into(),
        Some(json!({"name": format!("new-{i}")})),
        Rule::Table(Resource::Account, Action::Create, Scope::Platform),
    ));
    v.push(c(
        "GET",
        "/v1/accounts/admin".into(),
        None,
        Rule::Table(Resource::Account, Action::Read, Scope::Platform),
    ));
    s.ok(
        "POST",
        "/v1/accounts",
        Some(json!({"name": format!("del-{i}")})),
    )
    .await;
    v.push(c(
        "DELETE",
        format!("/v1/accounts/del-{i}"),
        None,
        Rule::Table(Resource::Account, Action::Delete, Scope::Platform),
    ));
    v.push(c("GET", "/v1/tokens".into(), None, Rule::Always));
    v.push(c("GET", "/v1/grants".into(), None, Rule::Always));
    v.push(c("GET", "/v1/tenants".into(), None, Rule::Always));
    v.push(c(
        "GET",
        "/v1/audit/events".into(),
        None,
        Rule::Anywhere(Resource::Audit, Action::Read),
    ));
    v.push(c(
        "GET",
        "/v1/audit/verify".into(),
        None,
        Rule::Anywhere(Resource::Audit, Action::Verify),
    ));
    artifact_cases(s, i, &mut v).await;
    v.push(c(
        "GET",
        "/v1/edge/settings".into(),
        None,
        Rule::Table(Resource::EdgeConfig, Action::Read, Scope::Platform),
    ));
    v.push(c(
        "PUT",
        "/v1/edge/settings".into(),
        Some(json!({"https_policy": null})),
        Rule::Table(Resource::EdgeConfig, Action::Update, Scope::Platform),
    ));
    // The vulnerability database: read by any role anywhere, changed on the platform only.
    for path in [
        "/v1/advisories",
        "/v1/advisories/GHSA-authz-test",
        "/v1/artifact-policy",
    ] {
        v.push(c(
            "GET",
            path.into(),
            None,
            Rule::Anywhere(Resource::Advisory, Action::Read),
        ));
    }
    v.push(c(
        "POST",
        "/v1/advisories".into(),
        Some(json!({"advisories": [{"id": format!("GHSA-authz-{i}"), "modified": "2024-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "npm", "name": "left-pad"}, "versions": ["1.0.0"]}]}]})),
        Rule::Table(Resource::Advisory, Action::Create, Scope::Platform),
    ));
    v.push(c(
        "PUT",
        "/v1/artifact-policy".into(),
        Some(json!({"production": "critical", "certification": "none", "staging": "none", "development": "none"})),
        Rule::Table(Resource::Advisory, Action::Update, Scope::Platform),
    ));
    for path in ["/v1/edge/generations", "/v1/edge/snapshot"] {
        v.push(c(
            "GET",
            path.into(),
            None,
            Rule::Table(Resource::EdgeConfig, Action::ReadValue, Scope::Platform),
        ));
    }
    v
}

/// Cases of the environment-scoped KMS, secret and secret-request endpoints in `t/staging`.
async fn key_and_secret_cases(s: &Server, i: usize, t: &str, v: &mut Vec<Case>) {
    let base = format!("/v1/tenants/{t}/environments/staging");
    let env = sc(&format!("{t}/staging"));
    let c = |method, path: String, body, res, act| Case {
        method,
        path,
        body,
        rule: Rule::Table(res, act, env.clone()),
    };
    use Action::*;
    use Resource::{Key, Secret, SecretRequest};
    // Fixtures made by the admin: a key k, a ciphertext, a secret s, and per-case targets.
    if i == 0 {
        s.ok("POST", &format!("{base}/keys"), Some(json!({"name": "k"})))
            .await;
        s.ok(
            "PUT",
            &format!("{base}/secrets/s"),
            Some(json!({"value": "v"})),
        )
        .await;
    }
    let ct = s
        .ok(
            "POST",
            &format!("{base}/keys/k/encrypt"),
            Some(json!({"plaintext_b64": "aGk="})),
        )
        .await["ciphertext"]
        .clone();
    s.ok(
        "POST",
        &format!("{base}/keys"),
        Some(json!({"name": format!("del-{i}")})),
    )
    .await;
    s.ok(
        "PUT",
        &format!("{base}/secrets/del-{i}"),
        Some(json!({"value": "v"})),
    )
    .await;
    let req = s
        .ok(
            "POST",
            &format!("{base}/secret-requests"),
            Some(json!({"name": format!("req-{i}")})),
        )
        .await;
    let req_id = req["id"].as_str().unwrap().to_string();
    v.push(c("GET", format!("{base}/keys"), None, Key, Read));
    v.push(c(
        "POST",
        format!("{base}/keys"),
        Some(json!({"name": format!("new-{i}")})),
        Key,
        Create,
    ));
    v.push(c("GET", format!("{base}/keys/k"), None, Key, Read));
    v.push(c(
        "POST",
        format!("{base}/keys/k/settings"),
        Some(json!({"rotation_days": 100})),
        Key,
        Update,
    ));
    v.push(c(
        "POST",
        format!("{base}/keys/k/rotate"),
        None,
        Key,
        Update,
    ));
    v.push(c(
        "POST",
        format!("{base}/keys/del-{i}/disable"),
        None,
        Key,
        Update,
    ));
    v.push(c(
        "POST",
        format!("{base}/keys/del-{i}/enable"),
        None,
        Key,
        Update,
    ));
    v.push(c(
        "POST",
        format!("{base}/keys/k/encrypt"),
        Some(json!({"plaintext_b64": "aGk="})),
        Key,
        Use,
    ));
    v.push(c(
        "POST",
        format!("{base}/keys/k/decrypt"),
        Some(json!({"ciphertext": ct})),
        Key,
        Use,
    ));
    v.push(c(
        "POST",
        format!("{base}/keys/k/generate-data-key"),
        Some(json!({})),
        Key,
        Use,
    ));
    v.push(c(
        "POST",
        format!("{base}/keys/k/rewrap"),
        Some(json!({"ciphertext": ct})),
        Key,
        Use,
    ));
    v.push(c(
        "POST",
        format!("{base}/keys/del-{i}/schedule-deletion"),
        Some(json!({"days": 7})),
        Key,
        Delete,
    ));
    v.push(c(
        "POST",
        format!("{base}/keys/del-{i}/cancel-deletion"),
        None,
        Key,
        Delete,
    ));
    v.push(c("GET", format!("{base}/secrets"), None, Secret, Read));
    v.push(c("GET", format!("{base}/secrets/s"), None, Secret, Read));
    v.push(c(
        "GET",
        format!("{base}/secrets/s/versions"),
        None,
        Secret,
        Read,
    ));
    v.push(c(
        "PUT",
        format!("{base}/secrets/s"),
        Some(json!({"value": format!("v{i}")})),
        Secret,
        Create,
    ));
    v.push(c(
        "GET",
        format!("{base}/secrets/s/value"),
        None,
        Secret,
        ReadValue,
    ));
    v.push(c(
        "POST",
        format!("{base}/secrets/s/rewrap"),
        None,
        Secret,
        Create,
    ));
    v.push(c(
        "DELETE",
        format!("{base}/secrets/del-{i}"),
        None,
        Secret,
        Delete,
    ));
    v.push(c(
        "POST",
        format!("{base}/secrets/del-{i}/restore"),
        None,
        Secret,
        Delete,
    ));
    v.push(c(
        "POST",
        format!("{base}/secrets/del-{i}/destroy"),
        None,
        Secret,
        Destroy,
    ));
    v.push(c(
        "GET",
        format!("{base}/secret-requests"),
        None,
        SecretRequest,
        Read,
    ));
    v.push(c(
        "POST",
        format!("{base}/secret-requests"),
        Some(json!({"name": format!("r-{i}")})),
        SecretRequest,
        Create,
    ));
    v.push(c(
        "POST",
        format!("{base}/secret-requests/{req_id}/cancel"),
        None,
        SecretRequest,
        Update,
    ));
    route_cases(s, i, t, &base, &env, v).await;
    edge_cases(s, i, t, &base, &env, v).await;
    service_cases(&base, &env, v);
}

/// Cases of the service endpoints (the service does not exist: allowed roles get 4xx
/// answers other than 403, denied ones 403).
fn service_cases(base: &str, env: &Scope, v: &mut Vec<Case>) {
    let mut c = |method, path: String, body, act| {
        v.push(Case {
            method,
            path,
            body,
            rule: Rule::Table(Resource::Service, act, env.clone()),
        })
    };
    let svc = format!("{base}/services/svc");
    c("GET", format!("{base}/services"), None, Action::Read);
    c("GET", svc.clone(), None, Action::Read);
    c("GET", format!("{svc}/revisions"), None, Action::Read);
    c("GET", format!("{svc}/logs"), None, Action::Read);
    c(
        "POST",
        format!("{svc}/deploy"),
        Some(json!({"artifact": "absent@1", "command": ["./app"]})),
        Action::Create,
    );
    c(
        "POST",
        format!("{svc}/rollback"),
        Some(json!({})),
        Action::Update,
    );
    c(
        "POST",
        format!("{svc}/scale"),
        Some(json!({"replicas": 2})),
        Action::Update,
    );
    c("POST", format!("{svc}/stop"), None, Action::Update);
    c("POST", format!("{svc}/start"), None, Action::Update);
    c("DELETE", svc, None, Action::Delete);
}

/// Cases of the artifact endpoints of tenant acme: a role allowing the action anywhere in
/// the tenant allows it (the registry is shared by the tenant's environments).
async fn artifact_cases(s: &Server, i: usize, v: &mut Vec<Case>) {
    let base = "/v1/tenants/acme/artifacts";
    let versions: Vec<String> = if i == 0 {
        vec!["1".into(), format!("del-{i}")]
    } else {
        vec![format!("del-{i}")]
    };
    for version in versions {
        let r = s
            .push_artifact(&format!("{base}/app/versions/{version}"))
            .await;
        assert!(r.status == 201 || r.status == 200, "{}", r.body);
    }
    let rule = |act| Rule::Within(Resource::Artifact, act, Scope::parse("acme").unwrap());
    let mut c = |method, path: String, act| {
        v.push(Case {
            method,
            path,
            body: None,
            rule: rule(act),
        })
    };
    c("GET", base.to_string(), Action::Read);
    c("GET", format!("{base}/app/versions/1"), Action::Read);
    c("GET", format!("{base}/app/versions/1/blob"), Action::Read);
    c(
        "DELETE",
        format!("{base}/app/versions/del-{i}"),
        Action::Delete,
    );
    // Push needs a binary body: sent as a raw case.
    v.push(Case {
        method: "POST",
        path: format!("{base}/app/versions/new-{i}"),
        body: Some(json!({"gzip": true})),
        rule: rule(Action::Create),
    });
}

/// Cases of the certificate and replica endpoints in `t/staging`.
async fn edge_cases(s: &Server, i: usize, t: &str, base: &str, env: &Scope, v: &mut Vec<Case>) {
    let c = |method, path: String, body, res, act| Case {
        method,
        path,
        body,
        rule: Rule::Table(res, act, env.clone()),
    };
    let issue = |n: String, d: String| json!({"name": n, "domains": [d]});
    if i == 0 {
        s.ok(
            "POST",
            &format!("{base}/certificates/issue"),
            Some(issue("c".into(), format!("c.{t}.test"))),
        )
        .await;
        s.ok(
            "POST",
            &format!("{base}/services/svc/replicas"),
            Some(json!({"address": "127.0.0.1:9"})),
        )
        .await;
    }
    s.ok(
        "POST",
        &format!("{base}/certificates/issue"),
        Some(issue(format!("del-{i}"), format!("del{i}.{t}.test"))),
    )
    .await;
    s.ok(
        "POST",
        &format!("{base}/services/svc/replicas"),
        Some(json!({"address": format!("127.0.0.1:{}", 30000 + i)})),
    )
    .await;
    use Action::{Create, Delete, Read, Update};
    use Resource::{Certificate, Replica};
    v.push(c(
        "GET",
        format!("{base}/certificates"),
        None,
        Certificate,
        Read,
    ));
    v.push(c(
        "GET",
        format!("{base}/certificates/c"),
        None,
        Certificate,
        Read,
    ));
    v.push(c(
        "POST",
        format!("{base}/certificates/issue"),
        Some(issue(format!("new-{i}"), format!("new{i}.{t}.test"))),
        Certificate,
        Create,
    ));
    // Authorization comes before the body is looked at: allowed roles get 400 here.
    v.push(c(
        "POST",
        format!("{base}/certificates"),
        Some(json!({"name": format!("up-{i}"), "cert_pem": "x", "key_pem": "y"})),
        Certificate,
        Create,
    ));
    v.push(c(
        "POST",
        format!("{base}/certificates/c/renew"),
        None,
        Certificate,
        Update,
    ));
    v.push(c(
        "DELETE",
        format!("{base}/certificates/del-{i}"),
        None,
        Certificate,
        Delete,
    ));
    v.push(c(
        "GET",
        format!("{base}/services/svc/replicas"),
        None,
        Replica,
        Read,
    ));
    v.push(c(
        "POST",
        format!("{base}/services/svc/replicas"),
        Some(json!({"address": format!("127.0.0.1:{}", 20000 + i)})),
        Replica,
        Create,
    ));
    v.push(c(
        "PUT",
        format!("{base}/services/svc/replicas/127.0.0.1:9"),
        Some(json!({"state": "draining"})),
        Replica,
        Update,
    ));
    v.push(c(
        "DELETE",
        format!("{base}/services/svc/replicas/127.0.0.1:{}", 30000 + i),
        None,
        Replica,
        Delete,
    ));
}

/// Cases of the route endpoints in `t/staging`; hosts are unique per case and tenant.
async fn route_cases(s: &Server, i: usize, t: &str, base: &str, env: &Scope, v: &mut Vec<Case>) {
    let up = json!({"upstream": ["127.0.0.1:9"]});
    let c = |method, path: String, body, act| Case {
        method,
        path,
        body,
        rule: Rule::Table(Resource::Route, act, env.clone()),
    };
    if i == 0 {
        s.ok(
            "POST",
            &format!("{base}/routes"),
            Some(json!({"name": "r", "host": format!("r.{t}.test"), "to": up})),
        )
        .await;
    }
    s.ok(
        "POST",
        &format!("{base}/routes"),
        Some(json!({"name": format!("del-{i}"), "host": format!("del{i}.{t}.test"), "to": up})),
    )
    .await;
    v.push(c("GET", format!("{base}/routes"), None, Action::Read));
    v.push(c("GET", format!("{base}/routes/r"), None, Action::Read));
    let new = json!({"name": format!("new-{i}"), "host": format!("new{i}.{t}.test"), "to": up});
    v.push(c(
        "POST",
        format!("{base}/routes"),
        Some(new),
        Action::Create,
    ));
    v.push(c(
        "DELETE",
        format!("{base}/routes/del-{i}"),
        None,
        Action::Delete,
    ));
}

fn expected(p: &Principal, rule: &Rule) -> bool {
    match rule {
        Rule::Table(res, act, scope) => authorize(&p.roles, *res, *act, scope),
        Rule::See(res, scope) => can_see(&p.roles, *res, scope),
        Rule::Anywhere(res, act) => p.roles.iter().any(|g| role_allows(g.role, *res, *act)),
        Rule::Within(res, act, scope) => p.roles.iter().any(|g| {
            role_allows(g.role, *res, *act) && (g.scope.contains(scope) || scope.contains(&g.scope))
        }),
        Rule::Always => true,
    }
}

#[tokio::test]
async fn every_endpoint_every_role_in_and_out_of_scope() {
    let s = Server::start().await;
    for t in ["acme", "globex"] {
        s.ok("POST", "/v1/tenants", Some(json!({"name": t}))).await;
        s.ok(
            "POST",
            &format!("/v1/tenants/{t}/environments"),
            Some(json!({"name": "staging", "kind": "staging"})),
        )
        .await;
        s.ok(
            "POST",
            &format!("/v1/tenants/{t}/accounts"),
            Some(json!({"name": format!("{t}/bot")})),
        )
        .await;
    }
    s.ok(
        "POST",
        "/v1/tenants/acme/environments",
        Some(json!({"name": "production", "kind": "production"})),
    )
    .await;
    let ps = principals(&s).await;
    let mut checked = 0;
    let mut routes_seen = std::collections::HashSet::new();
    for (i, p) in ps.iter().enumerate() {
        for case in cases(&s, i).await {
            let before = audit_count(&s).await;
            let r = s
                .call(case.method, &case.path, Some(&p.token), case.body.clone())
                .await;
            let allowed = expected(p, &case.rule);
            let what = format!(
                "{} {} as {} ({:?}): {} {}",
                case.method, case.path, p.account, p.roles, r.status, r.body
            );
            if allowed {
                assert_ne!(r.status, 403, "should be allowed: {what}");
                assert_ne!(r.status, 401, "{what}");
            } else {
                assert_eq!(r.status, 403, "should be denied: {what}");
                assert_eq!(r.code(), "permission_denied");
                // The denial is audited with the principal and outcome `denied`.
                let ev = last_event(&s).await;
                assert_eq!(
                    audit_count(&s).await,
                    before + 1,
                    "denial not audited: {what}"
                );
                assert_eq!(ev["principal"], p.account.as_str(), "{what}");
                assert_eq!(ev["outcome"], "denied", "{what}");
            }
            if let api::routes::Match::Found(route, _) =
                api::routes::route(case.method, case.path.split('?').next().unwrap())
            {
                routes_seen.insert(route.id.to_string() + route.path);
            }
            checked += 1;
        }
    }
    // Every authenticated route of the table was exercised.
    use api::routes::Op;
    for route in api::routes::ROUTES {
        // Unauthenticated endpoints, and sealing (which stops the server answering), are
        // covered by their own tests.
        if !matches!(
            route.op,
            Op::Health | Op::OpenApi | Op::SealStatus | Op::Unseal | Op::Seal
        ) {
            assert!(
                routes_seen.contains(&(route.id.to_string() + route.path)),
                "route {} {} not in the matrix",
                route.method,
                route.path
            );
        }
    }
    assert!(checked > 15 * 40, "{checked}");
    s.stop().await;
}

async fn audit_count(s: &Server) -> i64 {
    s.ok("GET", "/v1/status", None).await["counts"]["audit_events"]
        .as_i64()
        .unwrap()
}

async fn last_event(s: &Server) -> Value {
    let n = audit_count(s).await;
    let l = s
        .ok("GET", &format!("/v1/audit/events?after={}", n - 1), None)
        .await;
    l["items"][0].clone()
}

#[tokio::test]
async fn lists_show_only_what_the_principal_may_see() {
    let s = Server::start().await;
    for t in ["acme", "globex"] {
        s.ok("POST", "/v1/tenants", Some(json!({"name": t}))).await;
        for e in ["staging", "production"] {
            s.ok(
                "POST",
                &format!("/v1/tenants/{t}/environments"),
                Some(json!({"name": e, "kind": e})),
            )
            .await;
        }
    }
    let dev = s.principal("acme/dev", "developer", "acme/staging").await;
    let tenants = s.call("GET", "/v1/tenants", Some(&dev), None).await.body;
    let names: Vec<&str> = tenants["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["acme"]);
    let envs = s
        .call("GET", "/v1/tenants/acme/environments", Some(&dev), None)
        .await
        .body;
    let names: Vec<&str> = envs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["staging"]);
    // A developer cannot grant roles, not even on its own environment.
    let r = s
        .call(
            "POST",
            "/v1/grants",
            Some(&dev),
            Some(json!({"role": "developer", "principal": "acme/dev", "scope": "acme/production"})),
        )
        .await;
    assert_eq!(r.status, 403);
    // A tenant auditor reads only its tenant's events, and verifies the chain.
    let aud = s.principal("acme/aud", "auditor", "acme").await;
    let evs = s
        .call("GET", "/v1/audit/events", Some(&aud), None)
        .await
        .body;
    let items = evs["items"].as_array().unwrap();
    assert!(!items.is_empty());
    for e in items {
        let scope = e["scope"].as_str().unwrap();
        assert!(scope == "acme" || scope.starts_with("acme/"), "{e}");
    }
    let v = s.call("GET", "/v1/audit/verify", Some(&aud), None).await;
    assert_eq!(v.body["intact"], true);
    // An auditor changes nothing.
    for (m, p, b) in [
        (
            "POST",
            "/v1/tenants/acme/environments",
            Some(json!({"name": "x", "kind": "staging"})),
        ),
        ("DELETE", "/v1/tenants/acme/environments/staging", None),
        (
            "POST",
            "/v1/tenants/acme/accounts",
            Some(json!({"name": "acme/x"})),
        ),
    ] {
        assert_eq!(s.call(m, p, Some(&aud), b).await.status, 403);
    }
    // Grants on other tenants are not listed to a tenant viewer.
    let viewer = s.principal("globex/viewer", "viewer", "globex").await;
    let gl = s.call("GET", "/v1/grants", Some(&viewer), None).await.body;
    for g in gl["items"].as_array().unwrap() {
        assert!(g["scope"].as_str().unwrap().starts_with("globex"), "{g}");
    }
    s.stop().await;
}

#[tokio::test]
async fn unauthenticated_requests_are_refused_and_audited_on_every_endpoint() {
    let s = Server::start().await;
    let mut n = 0;
    for route in api::routes::ROUTES {
        let path = route
            .path
            .replace("{tenant}", "acme")
            .replace("{environment}", "staging")
            .replace("{account}", "bot")
            .replace("{token}", "tok_1");
        let r = s.call(route.method, &path, None, None).await;
        if matches!(
            route.op,
            api::routes::Op::Health | api::routes::Op::OpenApi | api::routes::Op::SealStatus
        ) {
            assert_eq!(r.status, 200, "{path}");
            continue;
        }
        if route.op == api::routes::Op::Unseal {
            continue;
        }
        assert_eq!(r.status, 401, "{} {path}: {}", route.method, r.body);
        assert_eq!(r.code(), "unauthenticated");
        n += 1;
        if n >= 15 {
            break; // stay under the failed-authentication rate limit
        }
    }
    let events = s
        .ok("GET", "/v1/audit/events?principal=anonymous", None)
        .await;
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), n);
    assert!(items.iter().all(|e| e["outcome"] == "unauthenticated"
        && e["source"].as_str().unwrap().starts_with("127.0.0.1:")));
    s.stop().await;
}

#[tokio::test]
async fn bad_revoked_and_garbage_tokens_are_refused_then_rate_limited() {
    let s = Server::start().await;
    s.ok("POST", "/v1/accounts", Some(json!({"name": "ops"})))
        .await;
    let t = s
        .ok(
            "POST",
            "/v1/tokens",
            Some(json!({"account": "ops", "ttl_seconds": 600})),
        )
        .await;
    let (secret, id) = (
        t["token"].as_str().unwrap().to_string(),
        t["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(
        s.call("GET", "/v1/whoami", Some(&secret), None)
            .await
            .status,
        200
    );
    s.ok("POST", &format!("/v1/tokens/{id}/revoke"), None).await;
    assert_eq!(
        s.call("GET", "/v1/whoami", Some(&secret), None)
            .await
            .status,
        401
    );
    // The secret is nowhere in the token list or the audit trail.
    let all = s.ok("GET", "/v1/tokens", None).await.to_string()
        + &s.ok("GET", "/v1/audit/events", None).await.to_string();
    assert!(!all.contains(&secret));
    for bad in ["", "Bearer", "gty_00", "not-a-token", &"x".repeat(5000)] {
        let r = s
            .check(
                "GET",
                "/v1/whoami",
                s.http
                    .get(format!("{}/v1/whoami", s.base))
                    .header("authorization", format!("Bearer {bad}")),
            )
            .await;
        assert_eq!(r.status, 401);
    }
    let mut limited = false;
    for _ in 0..30 {
        let r = s.call("GET", "/v1/whoami", Some("gty_wrong"), None).await;
        if r.status == 429 {
            assert_eq!(r.code(), "rate_limited");
            limited = true;
            break;
        }
        assert_eq!(r.status, 401);
    }
    assert!(limited, "failed authentications were never rate limited");
    s.stop().await;
}

#[tokio::test]
async fn tenant_accounts_cannot_be_granted_roles_elsewhere_and_the_last_admin_stays() {
    let s = Server::start().await;
    for t in ["acme", "globex"] {
        s.ok("POST", "/v1/tenants", Some(json!({"name": t}))).await;
    }
    s.ok(
        "POST",
        "/v1/tenants/acme/accounts",
        Some(json!({"name": "acme/bot"})),
    )
    .await;
    let r = s
        .admin(
            "POST",
            "/v1/grants",
            Some(json!({"role": "viewer", "principal": "acme/bot", "scope": "globex"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "unprocessable"));
    let r = s
        .admin(
            "POST",
            "/v1/grants",
            Some(json!({"role": "viewer", "principal": "acme/bot", "scope": "platform"})),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = s
        .admin(
            "DELETE",
            "/v1/grants?role=admin&principal=admin&scope=platform",
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "conflict"));
    let r = s.admin("DELETE", "/v1/accounts/admin", None).await;
    assert_eq!(r.status, 409);
    // A tenant admin manages its tenant but not the platform nor another tenant.
    let ta = s.principal("acme/boss", "admin", "acme").await;
    assert_eq!(
        s.call(
            "POST",
            "/v1/tenants/acme/environments",
            Some(&ta),
            Some(json!({"name": "qa", "kind": "certification"}))
        )
        .await
        .status,
        201
    );
    assert_eq!(
        s.call(
            "POST",
            "/v1/grants",
            Some(&ta),
            Some(json!({"role": "developer", "principal": "acme/bot", "scope": "acme/qa"}))
        )
        .await
        .status,
        201
    );
    assert_eq!(
        s.call(
            "POST",
            "/v1/tenants",
            Some(&ta),
            Some(json!({"name": "mine"}))
        )
        .await
        .status,
        403
    );
    assert_eq!(
        s.call(
            "POST",
            "/v1/tenants/globex/accounts",
            Some(&ta),
            Some(json!({"name": "globex/x"}))
        )
        .await
        .status,
        403
    );
    assert_eq!(
        s.call(
            "POST",
            "/v1/grants",
            Some(&ta),
            Some(json!({"role": "admin", "principal": "acme/boss", "scope": "platform"}))
        )
        .await
        .status,
        403
    );
    s.stop().await;
}

#[tokio::test]
async fn only_platform_admins_seal_and_sealed_means_503_until_unsealed() {
    let s = Server::start().await;
    s.ok("POST", "/v1/tenants", Some(json!({"name": "acme"})))
        .await;
    s.ok(
        "POST",
        "/v1/tenants/acme/environments",
        Some(json!({"name": "staging", "kind": "staging"})),
    )
    .await;
    let ps = principals(&s).await;
    for p in &ps {
        if p.account == "admin-p" {
            continue;
        }
        let r = s.call("POST", "/v1/sys/seal", Some(&p.token), None).await;
        assert_eq!(r.status, 403, "{} may not seal", p.account);
    }
    let status = s.call("GET", "/v1/sys/seal-status", None, None).await.body;
    assert_eq!(status, json!({"sealed": false, "seal": "file"}));
    let admin_p = &ps.iter().find(|p| p.account == "admin-p").unwrap().token;
    let r = s.call("POST", "/v1/sys/seal", Some(admin_p), None).await;
    assert_eq!(r.body["sealed"], true);
    // Everything but health, the document, seal status and unseal answers 503 `sealed`.
    for (m, path) in [
        ("GET", "/v1/whoami"),
        ("GET", "/v1/tenants"),
        ("GET", "/v1/tenants/acme/environments/staging/secrets"),
        ("POST", "/v1/sys/seal"),
    ] {
        let r = s.call(m, path, Some(&s.admin.clone()), None).await;
        assert_eq!((r.status, r.code()), (503, "sealed"), "{m} {path}");
    }
    assert_eq!(s.call("GET", "/v1/health", None, None).await.status, 200);
    assert_eq!(
        s.call("GET", "/v1/sys/seal-status", None, None).await.body["sealed"],
        true
    );
    // The file seal unseals by re-reading its key file.
    let r = s
        .call("POST", "/v1/sys/unseal", None, Some(json!({"secret": ""})))
        .await;
    assert_eq!((r.status, r.body["sealed"].as_bool()), (200, Some(false)));
    assert_eq!(s.admin("GET", "/v1/whoami", None).await.status, 200);
    let ev = s.ok("GET", "/v1/audit/events?action=seal.*", None).await;
    let actions: Vec<&str> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.ends_with(&["seal.seal", "seal.unseal"]),
        "{actions:?}"
    );
    s.stop().await;
}
