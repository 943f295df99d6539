//! The route table: every operation of the API, its method and path pattern. The router
//! matches requests against it and the OpenAPI document is generated from it, so the two
//! cannot disagree.

/// One operation of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Health,
    OpenApi,
    Status,
    Whoami,
    ListTenants,
    CreateTenant,
    GetTenant,
    DeleteTenant,
    ListEnvironments,
    CreateEnvironment,
    GetEnvironment,
    DeleteEnvironment,
    ListPlatformAccounts,
    CreatePlatformAccount,
    GetPlatformAccount,
    DeletePlatformAccount,
    ListTenantAccounts,
    CreateTenantAccount,
    GetTenantAccount,
    DeleteTenantAccount,
    ListTokens,
    CreateToken,
    GetToken,
    RevokeToken,
    ListGrants,
    CreateGrant,
    DeleteGrant,
    ListAuditEvents,
    VerifyAudit,
    SealStatus,
    Unseal,
    Seal,
    ListKeys,
    CreateKey,
    GetKey,
    UpdateKey,
    RotateKey,
    EnableKey,
    DisableKey,
    ScheduleKeyDeletion,
    CancelKeyDeletion,
    Encrypt,
    Decrypt,
    GenerateDataKey,
    Rewrap,
    ListSecrets,
    GetSecret,
    PutSecret,
    GetSecretValue,
    ListSecretVersions,
    DeleteSecret,
    RestoreSecret,
    DestroySecret,
    RewrapSecret,
    ListSecretRequests,
    CreateSecretRequest,
    CancelSecretRequest,
    ListRoutes,
    CreateRoute,
    GetRoute,
    DeleteRoute,
    ListCertificates,
    AddCertificate,
    IssueCertificate,
    GetCertificate,
    RenewCertificate,
    DeleteCertificate,
    ListReplicas,
    RegisterReplica,
    UpdateReplica,
    DeregisterReplica,
    EdgeGenerations,
    EdgeSnapshot,
    GetEdgeSettings,
    SetEdgeSettings,
    ListArtifacts,
    PushArtifact,
    GetArtifact,
    PullArtifact,
    DeleteArtifact,
    AdvisoryStatus,
    LoadAdvisories,
    GetAdvisory,
    GetArtifactPolicy,
    SetArtifactPolicy,
    ListServices,
    DeployService,
    GetService,
    ServiceHistory,
    ServiceLogs,
    RollbackService,
    ScaleService,
    StopService,
    StartService,
    DeleteService,
}

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub op: Op,
    /// The operation id in the OpenAPI document, and the audit action name.
    pub id: &'static str,
    pub summary: &'static str,
}

macro_rules! routes {
    ($( $m:literal $p:literal => $op:ident, $id:literal, $sum:literal; )*) => {
        pub const ROUTES: &[Route] = &[ $( Route { method: $m, path: $p, op: Op::$op, id: $id, summary: $sum } ),* ];
    };
}

routes! {
    "GET" "/v1/health" => Health, "health.read", "Liveness and version (no token needed)";
    "GET" "/v1/openapi.json" => OpenApi, "openapi.read", "This document (no token needed)";
    "GET" "/v1/status" => Status, "status.read", "Server version, store, uptime and counts";
    "GET" "/v1/whoami" => Whoami, "whoami.read", "The calling principal and its roles";
    "GET" "/v1/tenants" => ListTenants, "tenant.list", "Tenants the caller can see";
    "POST" "/v1/tenants" => CreateTenant, "tenant.create", "Create a tenant";
    "GET" "/v1/tenants/{tenant}" => GetTenant, "tenant.read", "Show a tenant";
    "DELETE" "/v1/tenants/{tenant}" => DeleteTenant, "tenant.delete", "Delete an empty tenant";
    "GET" "/v1/tenants/{tenant}/environments" => ListEnvironments, "environment.list", "Environments of a tenant the caller can see";
    "POST" "/v1/tenants/{tenant}/environments" => CreateEnvironment, "environment.create", "Create an environment";
    "GET" "/v1/tenants/{tenant}/environments/{environment}" => GetEnvironment, "environment.read", "Show an environment";
    "DELETE" "/v1/tenants/{tenant}/environments/{environment}" => DeleteEnvironment, "environment.delete", "Delete an environment that holds nothing";
    "GET" "/v1/accounts" => ListPlatformAccounts, "account.list", "Platform accounts";
    "POST" "/v1/accounts" => CreatePlatformAccount, "account.create", "Create a platform account";
    "GET" "/v1/accounts/{account}" => GetPlatformAccount, "account.read", "Show a platform account";
    "DELETE" "/v1/accounts/{account}" => DeletePlatformAccount, "account.delete", "Delete a platform account with its tokens and roles";
    "GET" "/v1/tenants/{tenant}/accounts" => ListTenantAccounts, "account.list", "Service accounts of a tenant";
    "POST" "/v1/tenants/{tenant}/accounts" => CreateTenantAccount, "account.create", "Create a service account in a tenant";
    "GET" "/v1/tenants/{tenant}/accounts/{account}" => GetTenantAccount, "account.read", "Show a tenant's service account";
    "DELETE" "/v1/tenants/{tenant}/accounts/{account}" => DeleteTenantAccount, "account.delete", "Delete a tenant's service account with its tokens and roles";
    "GET" "/v1/tokens" => ListTokens, "token.list", "Tokens (metadata only) the caller can see";
    "POST" "/v1/tokens" => CreateToken, "token.create", "Create a token; the secret is returned once";
    "GET" "/v1/tokens/{token}" => GetToken, "token.read", "Show a token's metadata";
    "POST" "/v1/tokens/{token}/revoke" => RevokeToken, "token.revoke", "Revoke a token";
    "GET" "/v1/grants" => ListGrants, "role.list", "Role grants the caller can see";
    "POST" "/v1/grants" => CreateGrant, "role.grant", "Grant a role on a scope";
    "DELETE" "/v1/grants" => DeleteGrant, "role.revoke", "Revoke a role on a scope";
    "GET" "/v1/audit/events" => ListAuditEvents, "audit.list", "Audit events the caller can read";
    "GET" "/v1/audit/verify" => VerifyAudit, "audit.verify", "Verify the audit hash chain";
    "GET" "/v1/sys/seal-status" => SealStatus, "seal.status", "Whether the server is sealed (no token needed)";
    "POST" "/v1/sys/unseal" => Unseal, "seal.unseal", "Unseal with the passphrase or HSM PIN (no token needed)";
    "POST" "/v1/sys/seal" => Seal, "seal.seal", "Seal the server: forget the root key until unsealed";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/keys" => ListKeys, "key.list", "KMS keys of an environment";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/keys" => CreateKey, "key.create", "Create a KMS key";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/keys/{key}" => GetKey, "key.read", "Show a KMS key";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/keys/{key}/settings" => UpdateKey, "key.update", "Change the rotation period or retire old versions";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/keys/{key}/rotate" => RotateKey, "key.rotate", "Rotate now: a new version becomes current";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/keys/{key}/enable" => EnableKey, "key.enable", "Enable a disabled key";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/keys/{key}/disable" => DisableKey, "key.disable", "Disable a key (it refuses every use)";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/keys/{key}/schedule-deletion" => ScheduleKeyDeletion, "key.schedule-deletion", "Schedule the key's destruction in 7-30 days";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/keys/{key}/cancel-deletion" => CancelKeyDeletion, "key.cancel-deletion", "Cancel a scheduled deletion (the key comes back disabled)";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/keys/{key}/encrypt" => Encrypt, "key.encrypt", "Encrypt up to 4 KiB";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/keys/{key}/decrypt" => Decrypt, "key.decrypt", "Decrypt a ciphertext of this key";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/keys/{key}/generate-data-key" => GenerateDataKey, "key.generate-data-key", "A fresh data key, in plaintext and encrypted";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/keys/{key}/rewrap" => Rewrap, "key.rewrap", "Re-encrypt a ciphertext under the current version";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/secrets" => ListSecrets, "secret.list", "Secrets of an environment (metadata only)";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/secrets/{secret}" => GetSecret, "secret.read", "A secret's metadata";
    "PUT" "/v1/tenants/{tenant}/environments/{environment}/secrets/{secret}" => PutSecret, "secret.put", "Put a new version of a secret";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/secrets/{secret}/value" => GetSecretValue, "secret.read-value", "Read a value (audited)";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/secrets/{secret}/versions" => ListSecretVersions, "secret.versions", "A secret's versions and stages";
    "DELETE" "/v1/tenants/{tenant}/environments/{environment}/secrets/{secret}" => DeleteSecret, "secret.delete", "Delete (recoverable for 7-30 days)";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/secrets/{secret}/restore" => RestoreSecret, "secret.restore", "Restore a deleted secret";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/secrets/{secret}/destroy" => DestroySecret, "secret.destroy", "Destroy for good (after the window, or forced by an admin)";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/secrets/{secret}/rewrap" => RewrapSecret, "secret.rewrap", "Re-encrypt every version under the secret key's current version";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/secret-requests" => ListSecretRequests, "secret-request.list", "Requests for secrets";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/secret-requests" => CreateSecretRequest, "secret-request.create", "Ask an operator to put a secret";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/secret-requests/{request}/cancel" => CancelSecretRequest, "secret-request.cancel", "Cancel an open request";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/routes" => ListRoutes, "route.list", "Routes of an environment";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/routes" => CreateRoute, "route.create", "Route a host and path to upstreams (takes effect at once)";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/routes/{route}" => GetRoute, "route.read", "Show a route";
    "DELETE" "/v1/tenants/{tenant}/environments/{environment}/routes/{route}" => DeleteRoute, "route.delete", "Delete a route (takes effect at once)";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/certificates" => ListCertificates, "certificate.list", "TLS certificates of an environment (never their keys)";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/certificates" => AddCertificate, "certificate.create", "Add a certificate and its key (PEM); the key is encrypted at rest";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/certificates/issue" => IssueCertificate, "certificate.issue", "Have a certificate issued by the internal CA or through ACME";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/certificates/{certificate}" => GetCertificate, "certificate.read", "Show a certificate and its renewal status";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/certificates/{certificate}/renew" => RenewCertificate, "certificate.renew", "Renew an issued certificate now";
    "DELETE" "/v1/tenants/{tenant}/environments/{environment}/certificates/{certificate}" => DeleteCertificate, "certificate.delete", "Delete a certificate (the edge stops serving it at once)";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/services/{service}/replicas" => ListReplicas, "replica.list", "Replicas of a service";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/services/{service}/replicas" => RegisterReplica, "replica.register", "Register a replica (the edge routes to it at once)";
    "PUT" "/v1/tenants/{tenant}/environments/{environment}/services/{service}/replicas/{address}" => UpdateReplica, "replica.update", "Drain a replica (no new requests) or make it active again";
    "DELETE" "/v1/tenants/{tenant}/environments/{environment}/services/{service}/replicas/{address}" => DeregisterReplica, "replica.deregister", "Deregister a replica (drained: in-flight requests finish)";
    "GET" "/v1/edge/generations" => EdgeGenerations, "edge.generations", "What a remote edge polls: the generations of its state and pending ACME HTTP-01 answers";
    "GET" "/v1/edge/snapshot" => EdgeSnapshot, "edge.snapshot", "Everything an edge serves, private keys included (audited)";
    "GET" "/v1/edge/settings" => GetEdgeSettings, "edge.settings.read", "Settings every edge follows (the HTTPS TLS policy)";
    "PUT" "/v1/edge/settings" => SetEdgeSettings, "edge.settings.update", "Change them; edges apply them to new connections, without a restart";
    "GET" "/v1/tenants/{tenant}/artifacts" => ListArtifacts, "artifact.list", "Artifact versions of a tenant";
    "POST" "/v1/tenants/{tenant}/artifacts/{artifact}/versions/{version}" => PushArtifact, "artifact.push", "Push a version (body: the .tar.gz, application/gzip); versions are immutable";
    "GET" "/v1/tenants/{tenant}/artifacts/{artifact}/versions/{version}" => GetArtifact, "artifact.read", "Show a version and its manifest";
    "GET" "/v1/tenants/{tenant}/artifacts/{artifact}/versions/{version}/blob" => PullArtifact, "artifact.pull", "Download a version's .tar.gz (application/octet-stream), verified against its digest";
    "DELETE" "/v1/tenants/{tenant}/artifacts/{artifact}/versions/{version}" => DeleteArtifact, "artifact.delete", "Delete a version";
    "GET" "/v1/advisories" => AdvisoryStatus, "advisory.status", "The vulnerability database: advisories per ecosystem, when last loaded";
    "POST" "/v1/advisories" => LoadAdvisories, "advisory.load", "Load OSV records (up to 2,000 per call); newer records replace older ones, withdrawn ones are removed";
    "GET" "/v1/advisories/{advisory}" => GetAdvisory, "advisory.read", "One advisory as stored";
    "GET" "/v1/artifact-policy" => GetArtifactPolicy, "artifact-policy.read", "Which finding severities refuse a deploy, per kind of environment";
    "PUT" "/v1/artifact-policy" => SetArtifactPolicy, "artifact-policy.update", "Change the artifact policy (applies to the next deploys)";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/services" => ListServices, "service.list", "Services of an environment with their replicas";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/services/{service}/deploy" => DeployService, "service.deploy", "Deploy a new revision (rolled out by the reconciler)";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/services/{service}" => GetService, "service.read", "Desired state, revisions and running replicas";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/services/{service}/revisions" => ServiceHistory, "service.history", "Revisions, newest first, with who deployed them";
    "GET" "/v1/tenants/{tenant}/environments/{environment}/services/{service}/logs" => ServiceLogs, "service.logs", "The last log lines of the replicas";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/services/{service}/rollback" => RollbackService, "service.rollback", "Return to an earlier revision";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/services/{service}/scale" => ScaleService, "service.scale", "Set the number of replicas";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/services/{service}/stop" => StopService, "service.stop", "Stop every replica (drained first)";
    "POST" "/v1/tenants/{tenant}/environments/{environment}/services/{service}/start" => StartService, "service.start", "Run the service again";
    "DELETE" "/v1/tenants/{tenant}/environments/{environment}/services/{service}" => DeleteService, "service.delete", "Delete a service (its replicas are drained and stopped)";
}

/// The query parameters an operation accepts; any other is refused with 400.
pub fn query_params(op: Op) -> &'static [&'static str] {
    match op {
        Op::ListTokens => &["account"],
        Op::ListGrants => &["scope", "principal"],
        Op::DeleteGrant => &["role", "principal", "scope"],
        Op::ListAuditEvents => &["tenant", "principal", "action", "since", "after", "limit"],
        Op::GetSecretValue => &["version", "stage"],
        Op::DeleteSecret => &["recovery_days"],
        Op::ServiceLogs => &["replica", "lines"],
        _ => &[],
    }
}

/// The outcome of matching a method and path.
pub enum Match<'a> {
    Found(&'static Route, Vec<&'a str>),
    /// The path exists with other methods.
    WrongMethod(Vec<&'static str>),
    NotFound,
}

/// One segment of a route's path pattern.
enum Seg {
    Lit(&'static str),
    Param,
}

/// A route's path pattern in segments, with the route.
type Pattern = (Vec<Seg>, &'static Route);

/// The route table split into segments once, grouped by segment count: matching a request
/// compares its segments with the patterns of that many segments, in table order, without
/// allocating (the table has about 130 routes; splitting every pattern per request cost
/// more than the rest of routing and authorization together).
static COMPILED: std::sync::LazyLock<Vec<Vec<Pattern>>> = std::sync::LazyLock::new(|| {
    let mut by_len: Vec<Vec<Pattern>> = Vec::new();
    for r in ROUTES {
        let segs: Vec<Seg> = r
            .path
            .split('/')
            .map(|p| {
                if p.starts_with('{') {
                    Seg::Param
                } else {
                    Seg::Lit(p)
                }
            })
            .collect();
        if by_len.len() <= segs.len() {
            by_len.resize_with(segs.len() + 1, Vec::new);
        }
        by_len[segs.len()].push((segs, r));
    }
    by_len
});

/// The most segments a route has; longer paths are not found without splitting them all.
const MAX_SEGMENTS: usize = 16;

/// Matches `path` against the table; `{x}` segments match one non-empty segment.
pub fn route<'a>(method: &str, path: &'a str) -> Match<'a> {
    let trimmed = path.trim_end_matches('/');
    let mut segs = [""; MAX_SEGMENTS];
    let mut n = 0;
    for s in trimmed.split('/') {
        if n == MAX_SEGMENTS {
            return Match::NotFound;
        }
        segs[n] = s;
        n += 1;
    }
    let segs = &segs[..n];
    let Some(candidates) = COMPILED.get(n) else {
        return Match::NotFound;
    };
    let mut methods = Vec::new();
    for (pat, r) in candidates {
        let matched = pat.iter().zip(segs).all(|(p, s)| match p {
            Seg::Param => !s.is_empty(),
            Seg::Lit(l) => l == s,
        });
        if !matched {
            continue;
        }
        if r.method == method {
            let params = pat
                .iter()
                .zip(segs)
                .filter(|(p, _)| matches!(p, Seg::Param))
                .map(|(_, s)| *s)
                .collect();
            return Match::Found(r, params);
        }
        methods.push(r.method);
    }
    if methods.is_empty() {
        Match::NotFound
    } else {
        Match::WrongMethod(methods)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_params() {
        match route("GET", "/v1/tenants/acme/environments/staging") {
            Match::Found(r, p) => {
                assert_eq!(r.op, Op::GetEnvironment);
                assert_eq!(p, vec!["acme", "staging"]);
            }
            _ => panic!("no match"),
        }
        assert!(matches!(route("PUT", "/v1/tenants"), Match::WrongMethod(_)));
        assert!(matches!(route("GET", "/v1/nope"), Match::NotFound));
        assert!(matches!(
            route("GET", "/v1/tenants//environments"),
            Match::NotFound
        ));
        assert!(matches!(route("GET", &"/a".repeat(40)), Match::NotFound));
        assert!(matches!(route("GET", ""), Match::NotFound));
        assert!(matches!(route("GET", "/"), Match::NotFound));
    }

    /// Every route of the table is found by its own path, with its parameters in order,
    /// and a trailing slash does not change the match.
    #[test]
    fn every_route_is_found() {
        for r in ROUTES {
            let mut names = Vec::new();
            let path: String = r
                .path
                .split('/')
                .map(|p| {
                    if p.starts_with('{') {
                        names.push(format!("x{}", names.len()));
                        names.last().cloned().unwrap_or_default()
                    } else {
                        p.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            assert!(path.split('/').count() <= MAX_SEGMENTS, "{}", r.path);
            for p in [path.clone(), format!("{path}/")] {
                match route(r.method, &p) {
                    Match::Found(found, params) => {
                        assert_eq!(found.path, r.path, "{} {p}", r.method);
                        assert_eq!(found.method, r.method);
                        assert_eq!(params, names.iter().map(String::as_str).collect::<Vec<_>>());
                    }
                    _ => panic!("{} {p} not found", r.method),
                }
            }
        }
    }
}
