//! The OpenAPI 3 document of the API, generated from the route table plus the schemas
//! below, served at `/v1/openapi.json`. Tests check real responses against it.
//!
//! When a request or response type in `model::types` changes, its schema here must change
//! with it; the end-to-end tests validate live responses against these schemas.

use serde_json::{json, Map, Value};

use crate::routes::{query_params, Op, ROUTES};

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn list_of(name: &str) -> Value {
    json!({ "type": "object", "additionalProperties": false, "required": ["items"],
            "properties": { "items": { "type": "array", "items": r(name) } } })
}

/// (request body schema, success status, response schema) of each operation.
fn io(op: Op) -> (Option<Value>, u16, Option<Value>) {
    use Op::*;
    match op {
        Health => (None, 200, Some(r("Health"))),
        OpenApi => (None, 200, Some(json!({ "type": "object" }))),
        Status => (None, 200, Some(r("Status"))),
        Whoami => (None, 200, Some(r("Whoami"))),
        ListTenants => (None, 200, Some(list_of("Tenant"))),
        CreateTenant => (Some(r("CreateTenant")), 201, Some(r("Tenant"))),
        GetTenant => (None, 200, Some(r("Tenant"))),
        ListEnvironments => (None, 200, Some(list_of("Environment"))),
        CreateEnvironment => (Some(r("CreateEnvironment")), 201, Some(r("Environment"))),
        GetEnvironment => (None, 200, Some(r("Environment"))),
        ListPlatformAccounts | ListTenantAccounts => (None, 200, Some(list_of("Account"))),
        CreatePlatformAccount | CreateTenantAccount => {
            (Some(r("CreateAccount")), 201, Some(r("Account")))
        }
        GetPlatformAccount | GetTenantAccount => (None, 200, Some(r("Account"))),
        ListTokens => (None, 200, Some(list_of("TokenInfo"))),
        CreateToken => (Some(r("CreateToken")), 201, Some(r("NewToken"))),
        GetToken | RevokeToken => (None, 200, Some(r("TokenInfo"))),
        ListGrants => (None, 200, Some(list_of("Grant"))),
        CreateGrant => (Some(r("GrantRole")), 201, Some(r("Grant"))),
        ListAuditEvents => (None, 200, Some(list_of("AuditEvent"))),
        VerifyAudit => (None, 200, Some(r("VerifyReport"))),
        DeleteTenant
        | DeleteEnvironment
        | DeletePlatformAccount
        | DeleteTenantAccount
        | DeleteGrant
        | DestroySecret => (None, 204, None),
        SealStatus | Seal => (None, 200, Some(r("SealStatus"))),
        Unseal => (Some(r("Unseal")), 200, Some(r("SealStatus"))),
        ListKeys => (None, 200, Some(list_of("KeyInfo"))),
        CreateKey => (Some(r("CreateKey")), 201, Some(r("KeyInfo"))),
        GetKey | RotateKey | EnableKey | DisableKey | CancelKeyDeletion => {
            (None, 200, Some(r("KeyInfo")))
        }
        UpdateKey => (Some(r("UpdateKey")), 200, Some(r("KeyInfo"))),
        ScheduleKeyDeletion => (Some(r("ScheduleDeletion")), 200, Some(r("KeyInfo"))),
        Encrypt => (Some(r("EncryptRequest")), 200, Some(r("Ciphertext"))),
        Decrypt => (Some(r("DecryptRequest")), 200, Some(r("Plaintext"))),
        GenerateDataKey => (Some(r("GenerateDataKey")), 200, Some(r("DataKey"))),
        Rewrap => (Some(r("DecryptRequest")), 200, Some(r("Ciphertext"))),
        ListSecrets => (None, 200, Some(list_of("SecretInfo"))),
        GetSecret | DeleteSecret | RestoreSecret => (None, 200, Some(r("SecretInfo"))),
        PutSecret => (Some(r("PutSecret")), 200, Some(r("SecretInfo"))),
        GetSecretValue => (None, 200, Some(r("SecretValue"))),
        ListSecretVersions => (None, 200, Some(list_of("SecretVersionInfo"))),
        RewrapSecret => (None, 200, Some(r("Rewrapped"))),
        ListSecretRequests => (None, 200, Some(list_of("SecretRequest"))),
        CreateSecretRequest => (
            Some(r("CreateSecretRequest")),
            201,
            Some(r("SecretRequest")),
        ),
        CancelSecretRequest => (None, 200, Some(r("SecretRequest"))),
        ListRoutes => (None, 200, Some(list_of("RouteInfo"))),
        CreateRoute => (Some(r("CreateRoute")), 201, Some(r("RouteInfo"))),
        GetRoute => (None, 200, Some(r("RouteInfo"))),
        DeleteRoute => (None, 204, None),
        ListCertificates => (None, 200, Some(list_of("CertInfo"))),
        AddCertificate => (Some(r("AddCert")), 201, Some(r("CertInfo"))),
        IssueCertificate => (Some(r("IssueCert")), 201, Some(r("CertInfo"))),
        GetCertificate | RenewCertificate => (None, 200, Some(r("CertInfo"))),
        DeleteCertificate | DeregisterReplica => (None, 204, None),
        ListReplicas => (None, 200, Some(list_of("ReplicaInfo"))),
        RegisterReplica => (Some(r("RegisterReplica")), 201, Some(r("ReplicaInfo"))),
        UpdateReplica => (Some(r("UpdateReplica")), 200, Some(r("ReplicaInfo"))),
        EdgeGenerations => (None, 200, Some(r("EdgeGenerations"))),
        EdgeSnapshot => (None, 200, Some(r("EdgeSnapshot"))),
        GetEdgeSettings => (None, 200, Some(r("EdgeSettings"))),
        SetEdgeSettings => (Some(r("EdgeSettings")), 200, Some(r("EdgeSettings"))),
        ListArtifacts => (None, 200, Some(list_of("ArtifactInfo"))),
        PushArtifact => (None, 201, Some(r("ArtifactInfo"))),
        GetArtifact => (None, 200, Some(r("ArtifactInfo"))),
        PullArtifact => (None, 200, None),
        DeleteArtifact | DeleteService => (None, 204, None),
        ListServices => (None, 200, Some(list_of("ServiceInfo"))),
        DeployService => (Some(r("DeploySpec")), 201, Some(r("RevisionInfo"))),
        GetService | StopService | StartService => (None, 200, Some(r("ServiceInfo"))),
        ServiceHistory => (None, 200, Some(list_of("RevisionInfo"))),
        ServiceLogs => (
            None,
            200,
            Some(
                json!({ "type": "object", "required": ["items"], "properties": { "items": { "type": "array", "items": { "type": "string" } } } }),
            ),
        ),
        RollbackService => (Some(r("Rollback")), 200, Some(r("ServiceInfo"))),
        ScaleService => (Some(r("Scale")), 200, Some(r("ServiceInfo"))),
        AdvisoryStatus => (None, 200, Some(r("DatabaseStatus"))),
        LoadAdvisories => (Some(r("LoadAdvisories")), 200, Some(r("LoadReport"))),
        GetAdvisory => (None, 200, Some(r("Advisory"))),
        GetArtifactPolicy => (None, 200, Some(r("ArtifactPolicy"))),
        SetArtifactPolicy => (Some(r("ArtifactPolicy")), 200, Some(r("ArtifactPolicy"))),
    }
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({ "type": "object", "additionalProperties": false, "required": required, "properties": props })
}

fn schemas() -> Value {
    let name = json!({ "type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$" });
    let principal =
        json!({ "type": "string", "description": "`NAME` (platform account) or `TENANT/NAME`" });
    let scope = json!({ "type": "string", "description": "`platform`, `TENANT` or `TENANT/ENV`" });
    let time = json!({ "type": "string", "format": "date-time" });
    let time_or_null = json!({ "type": ["string", "null"], "format": "date-time" });
    let role = json!({ "type": "string", "enum": ["admin", "operator", "developer", "viewer", "auditor"] });
    let kind = json!({ "type": "string", "enum": ["production", "certification", "staging", "development"] });
    let text = json!({ "type": "string" });
    let int = json!({ "type": "integer" });
    let severity =
        json!({ "type": "string", "enum": ["unknown", "low", "medium", "high", "critical"] });
    let block_at = json!({ "type": "string", "enum": ["none", "low", "medium", "high", "critical"], "description": "the lowest severity that refuses a deploy" });
    let ecosystem = json!({ "type": "string", "enum": ["crates.io", "npm", "PyPI"] });
    let token_props = json!({
        "id": text, "account": principal, "description": text, "created_at": time,
        "created_by": text, "expires_at": time_or_null, "revoked_at": time_or_null
    });
    let mut new_token_props = token_props.clone();
    new_token_props["token"] = json!({ "type": "string", "description": "the secret, shown once" });
    let token_req = [
        "id",
        "account",
        "description",
        "created_at",
        "created_by",
        "expires_at",
        "revoked_at",
    ];
    let mut new_token_req = token_req.to_vec();
    new_token_req.push("token");
    json!({
        "Error": obj(&["error"], json!({ "error": obj(&["code", "message"], json!({ "code": text, "message": text })) })),
        "Health": obj(&["status", "version"], json!({ "status": text, "version": text })),
        "Status": obj(&["version", "store", "uptime_seconds", "counts"], json!({
            "version": text, "store": text, "uptime_seconds": int,
            "counts": obj(&["tenants", "environments", "accounts", "tokens", "grants", "audit_events"], json!({
                "tenants": int, "environments": int, "accounts": int, "tokens": int, "grants": int, "audit_events": int
            }))
        })),
        "RoleOn": obj(&["role", "scope"], json!({ "role": role, "scope": scope })),
        "Whoami": obj(&["principal", "roles"], json!({ "principal": principal, "roles": { "type": "array", "items": r("RoleOn") } })),
        "Tenant": obj(&["name", "created_at", "created_by"], json!({ "name": name, "created_at": time, "created_by": text })),
        "CreateTenant": obj(&["name"], json!({ "name": name })),
        "Environment": obj(&["tenant", "name", "kind", "created_at", "created_by"], json!({
            "tenant": name, "name": name, "kind": kind, "created_at": time, "created_by": text })),
        "CreateEnvironment": obj(&["name", "kind"], json!({ "name": name, "kind": kind })),
        "Account": obj(&["name", "description", "created_at", "created_by"], json!({
            "name": principal, "description": text, "created_at": time, "created_by": text })),
        "CreateAccount": obj(&["name"], json!({ "name": principal, "description": { "type": "string", "maxLength": 256 } })),
        "TokenInfo": obj(&token_req, token_props),
        "NewToken": obj(&new_token_req, new_token_props),
        "CreateToken": obj(&["account", "ttl_seconds"], json!({
            "account": principal, "ttl_seconds": { "type": "integer", "minimum": 1, "maximum": model::types::MAX_TOKEN_TTL_SECONDS },
            "description": { "type": "string", "maxLength": 256 } })),
        "Grant": obj(&["role", "principal", "scope", "created_at", "created_by"], json!({
            "role": role, "principal": principal, "scope": scope, "created_at": time, "created_by": text })),
        "GrantRole": obj(&["role", "principal", "scope"], json!({ "role": role, "principal": principal, "scope": scope })),
        "AuditEvent": obj(&["seq", "time", "principal", "action", "resource", "scope", "outcome", "request_id", "source", "detail", "prev_hash", "hash"], json!({
            "seq": int, "time": time, "principal": text, "action": text, "resource": text, "scope": text,
            "outcome": { "type": "string", "enum": ["success", "denied", "unauthenticated", "failed"] },
            "request_id": text, "source": text, "detail": text, "prev_hash": text, "hash": text })),
        "SealStatus": obj(&["sealed", "seal"], json!({ "sealed": { "type": "boolean" }, "seal": { "type": "string", "enum": ["file", "passphrase", "pkcs11"] } })),
        "Unseal": obj(&["secret"], json!({ "secret": { "type": "string", "description": "the passphrase or the HSM PIN" } })),
        "KeyInfo": obj(&["name", "state", "current_version", "min_decrypt_version", "rotation_days", "next_rotation_at", "deletion_at", "description", "created_at", "created_by"], json!({
            "name": text, "state": { "type": "string", "enum": ["enabled", "disabled", "pending_deletion", "destroyed"] },
            "current_version": int, "min_decrypt_version": int, "rotation_days": int,
            "next_rotation_at": time_or_null, "deletion_at": time_or_null, "description": text, "created_at": time, "created_by": text })),
        "CreateKey": obj(&["name"], json!({ "name": name, "rotation_days": { "type": ["integer", "null"], "minimum": 1, "maximum": 3650 }, "description": { "type": "string", "maxLength": 256 } })),
        "UpdateKey": obj(&[], json!({ "rotation_days": { "type": ["integer", "null"] }, "min_decrypt_version": { "type": ["integer", "null"] } })),
        "ScheduleDeletion": obj(&["days"], json!({ "days": { "type": "integer", "minimum": 7, "maximum": 30 } })),
        "Context": { "type": "object", "additionalProperties": { "type": "string" }, "description": "encryption context: bound into the AAD, required again to decrypt" },
        "EncryptRequest": obj(&["plaintext_b64"], json!({ "plaintext_b64": text, "context": r("Context") })),
        "DecryptRequest": obj(&["ciphertext"], json!({ "ciphertext": text, "context": r("Context") })),
        "GenerateDataKey": obj(&[], json!({ "bytes": { "type": ["integer", "null"], "enum": [16, 32, null] }, "context": r("Context") })),
        "Ciphertext": obj(&["ciphertext", "key_version"], json!({ "ciphertext": text, "key_version": int })),
        "Plaintext": obj(&["plaintext_b64", "key_version"], json!({ "plaintext_b64": text, "key_version": int })),
        "DataKey": obj(&["plaintext_b64", "ciphertext", "key_version"], json!({ "plaintext_b64": text, "ciphertext": text, "key_version": int })),
        "SecretInfo": obj(&["name", "state", "current_version", "previous_version", "description", "created_at", "created_by", "updated_at", "updated_by", "deleted_at", "purge_at"], json!({
            "name": text, "state": { "type": "string", "enum": ["active", "deleted"] }, "current_version": int,
            "previous_version": { "type": ["integer", "null"] }, "description": text, "created_at": time, "created_by": text,
            "updated_at": time, "updated_by": text, "deleted_at": time_or_null, "purge_at": time_or_null })),
        "SecretVersionInfo": obj(&["version", "stage", "content_type", "size", "key_version", "created_at", "created_by"], json!({
            "version": int, "stage": { "type": ["string", "null"], "enum": ["current", "previous", null] },
            "content_type": { "type": "string", "enum": ["text", "json", "binary"] }, "size": int, "key_version": int,
            "created_at": time, "created_by": text })),
        "PutSecret": obj(&[], json!({ "value": { "type": ["string", "null"] }, "value_b64": { "type": ["string", "null"] },
            "content_type": { "type": ["string", "null"], "enum": ["text", "json", "binary", null] },
            "if_version": { "type": ["integer", "null"] }, "description": { "type": ["string", "null"] } })),
        "SecretValue": obj(&["name", "version", "content_type", "value", "value_b64"], json!({ "name": text, "version": int,
            "content_type": { "type": "string", "enum": ["text", "json", "binary"] },
            "value": { "type": ["string", "null"] }, "value_b64": { "type": ["string", "null"] } })),
        "CreateRoute": route_schema(true),
        "AddCert": obj(&["name", "cert_pem", "key_pem"], json!({ "name": name, "cert_pem": { "type": "string", "description": "PEM chain, leaf first" },
            "key_pem": { "type": "string", "description": "PEM private key; encrypted at rest, never returned" } })),
        "IssueCert": obj(&["name", "domains"], json!({ "name": name, "domains": { "type": "array", "items": text },
            "issuer": { "type": "string", "enum": ["internal", "acme"] }, "challenge": { "type": "string", "enum": ["http-01", "dns-01"] } })),
        "CertInfo": obj(&["name", "domains", "source", "status", "status_message", "not_before", "not_after", "fingerprint", "renew_at", "challenge", "warnings", "created_at", "created_by", "updated_at"], json!({
            "name": text, "domains": { "type": "array", "items": text },
            "source": { "type": "string", "enum": ["uploaded", "internal", "acme"] },
            "status": { "type": "string", "enum": ["pending", "active", "failed"] },
            "status_message": { "type": ["string", "null"] }, "not_before": time_or_null, "not_after": time_or_null,
            "fingerprint": { "type": ["string", "null"] }, "renew_at": time_or_null,
            "challenge": { "type": ["string", "null"], "enum": ["http-01", "dns-01", null] },
            "warnings": { "type": "array", "items": text }, "created_at": time, "created_by": text, "updated_at": time })),
        "EdgeGenerations": obj(&["routes", "certificates", "acme_http01", "https_policy"], json!({ "routes": int, "certificates": int,
            "acme_http01": { "type": "object", "additionalProperties": { "type": "string" } },
            "https_policy": { "type": ["string", "null"], "enum": ["modern", "compatible", null] } })),
        "EdgeSettings": obj(&["https_policy"], json!({
            "https_policy": { "type": ["string", "null"], "enum": ["modern", "compatible", null], "description": "null: each edge's --https-policy" } })),
        "EdgeSnapshot": obj(&["generations", "routes", "replicas", "certificates"], json!({ "generations": r("EdgeGenerations"),
            "routes": { "type": "array", "items": r("RouteInfo") }, "replicas": { "type": "array", "items": r("ReplicaInfo") },
            "certificates": { "type": ["array", "null"], "items": obj(&["name", "domains", "chain_pem", "key_pem", "not_after"], json!({
                "name": text, "domains": { "type": "array", "items": text }, "chain_pem": text,
                "key_pem": { "type": "string", "description": "private key, PEM" }, "not_after": int })) } })),
        "ArtifactInfo": obj(&["name", "version", "digest", "size", "files", "unpacked_size", "manifest", "created_at", "created_by"], json!({
            "name": text, "version": text, "digest": text, "size": int, "files": int, "unpacked_size": int,
            "manifest": { "type": "array", "items": obj(&["path", "size", "sha256", "executable"], json!({
                "path": text, "size": int, "sha256": text, "executable": { "type": "boolean" } })) },
            "created_at": time, "created_by": text, "scan": r("ScanReport") })),
        "ScanReport": obj(&["lockfiles", "packages", "findings", "database_advisories"], json!({
            "lockfiles": { "type": "array", "items": text }, "packages": int,
            "unpinned": { "type": "array", "items": text }, "unreadable": { "type": "array", "items": text },
            "findings": { "type": "array", "items": r("Finding") }, "database_advisories": int })),
        "Finding": obj(&["advisory", "severity", "ecosystem", "package", "version", "summary", "lockfile"], json!({
            "advisory": text, "aliases": { "type": "array", "items": text }, "severity": severity.clone(),
            "ecosystem": ecosystem.clone(), "package": text, "version": text, "fixed": text, "summary": text, "lockfile": text })),
        "Advisory": obj(&["id", "severity", "modified", "affected"], json!({
            "id": text, "aliases": { "type": "array", "items": text }, "summary": text, "severity": severity,
            "score": { "type": "number" }, "modified": text,
            "affected": { "type": "array", "items": obj(&["ecosystem", "package"], json!({
                "ecosystem": ecosystem, "package": text,
                "ranges": { "type": "array", "items": obj(&["kind", "events"], json!({
                    "kind": { "type": "string", "enum": ["semver", "ecosystem"] },
                    "events": { "type": "array", "items": { "type": "object", "minProperties": 1, "maxProperties": 1,
                        "additionalProperties": text } } })) },
                "versions": { "type": "array", "items": text } })) } })),
        "LoadAdvisories": obj(&["advisories"], json!({
            "advisories": { "type": "array", "maxItems": 2000, "items": { "type": "object", "description": "an OSV record" } } })),
        "LoadReport": obj(&["received", "loaded", "unchanged", "withdrawn", "ignored", "rejected"], json!({
            "received": int, "loaded": int, "unchanged": int, "withdrawn": int, "ignored": int,
            "rejected": { "type": "array", "items": text } })),
        "DatabaseStatus": obj(&["advisories", "by_ecosystem"], json!({
            "advisories": int,
            "by_ecosystem": { "type": "array", "items": { "type": "array", "prefixItems": [text, int], "minItems": 2, "maxItems": 2 } },
            "loaded_at": time })),
        "ArtifactPolicy": obj(&["production", "certification", "staging", "development"], json!({
            "production": block_at.clone(), "certification": block_at.clone(), "staging": block_at.clone(), "development": block_at })),
        "DeploySpec": obj(&["artifact", "command"], json!({
            "artifact": { "type": "string", "description": "NAME@VERSION of an artifact of the tenant" },
            "command": { "type": "array", "items": text }, "port_env": text, "health": text,
            "replicas": int, "max_replicas": { "type": ["integer", "null"] },
            "env": { "type": "object", "additionalProperties": text },
            "secrets": { "type": "object", "additionalProperties": text, "description": "VARIABLE -> secret name in the environment" },
            "memory_mb": { "type": ["integer", "null"] }, "cpu_millis": { "type": ["integer", "null"] },
            "max_surge": int, "max_unavailable": int, "health_deadline_secs": int, "grace_secs": int,
            "routes": { "type": "array", "maxItems": 16, "items": obj(&["name"], json!({
                "name": name.clone(), "host": text, "path": text })), "description": "routes to this service: checked, or created when a host is given" },
            "autoscale": obj(&["metric", "target"], json!({
                "metric": { "type": "string", "enum": ["cpu", "in_flight"] },
                "target": { "type": "number", "description": "cores (cpu) or requests in flight (in_flight) per replica" } })) })),
        "RevisionInfo": obj(&["service", "number", "spec", "status", "message", "created_at", "created_by"], json!({
            "service": text, "number": int, "spec": r("DeploySpec"),
            "status": { "type": "string", "enum": ["rolling", "active", "superseded", "failed"] },
            "message": { "type": ["string", "null"] }, "created_at": time, "created_by": text })),
        "ServiceInfo": obj(&["name", "state", "desired_replicas", "target_revision", "stable_revision", "message", "replicas", "updated_at"], json!({
            "name": text, "state": { "type": "string", "enum": ["running", "stopped"] }, "desired_replicas": int,
            "target_revision": int, "stable_revision": { "type": ["integer", "null"] }, "message": { "type": ["string", "null"] },
            "replicas": { "type": "array", "items": obj(&["id", "revision", "state", "healthy", "port", "pid", "restarts"], json!({
                "id": text, "revision": int, "state": text, "healthy": { "type": "boolean" },
                "port": { "type": ["integer", "null"] }, "pid": { "type": ["integer", "null"] }, "restarts": int,
                "isolation": { "type": "string", "enum": ["none", "users", "bubblewrap"] }, "uid": int })) },
            "updated_at": time,
            "events": { "type": "array", "description": "the last changes, newest first (status only)",
                "items": obj(&["time", "action", "principal", "outcome", "detail"], json!({
                    "time": time, "action": text, "principal": text, "outcome": text, "detail": text })) } })),
        "Rollback": obj(&[], json!({ "to": { "type": ["integer", "null"] } })),
        "Scale": obj(&["replicas"], json!({ "replicas": int })),
        "RegisterReplica": obj(&["address"], json!({ "address": { "type": "string", "description": "IP:PORT" }, "state": { "type": "string", "enum": ["active", "draining"] } })),
        "UpdateReplica": obj(&["state"], json!({ "state": { "type": "string", "enum": ["active", "draining"] } })),
        "ReplicaInfo": obj(&["service", "address", "state", "registered_at", "registered_by"], json!({ "service": text, "address": text,
            "state": { "type": "string", "enum": ["active", "draining"] }, "registered_at": time, "registered_by": text })),
        "RouteInfo": route_schema(false),
        "DestroySecret": obj(&[], json!({ "force": { "type": "boolean", "description": "destroy inside the recovery window (admin only)" } })),
        "Rewrapped": obj(&["rewrapped_versions"], json!({ "rewrapped_versions": int })),
        "SecretRequest": obj(&["id", "secret", "description", "state", "requested_by", "requested_at", "closed_by", "closed_at"], json!({
            "id": text, "secret": text, "description": text, "state": { "type": "string", "enum": ["open", "fulfilled", "cancelled"] },
            "requested_by": text, "requested_at": time, "closed_by": { "type": ["string", "null"] }, "closed_at": time_or_null })),
        "CreateSecretRequest": obj(&["name"], json!({ "name": name, "description": { "type": "string", "maxLength": 256 } })),
        "VerifyReport": obj(&["intact", "events", "first_bad_seq", "problem"], json!({
            "intact": { "type": "boolean" }, "events": int,
            "first_bad_seq": { "type": ["integer", "null"] }, "problem": { "type": ["string", "null"] } })),
    })
}

/// A route document: the spec's fields plus `name` (and, for answers, who made it when).
fn route_schema(request: bool) -> Value {
    let text = json!({ "type": "string" });
    let rules = json!({ "type": "object", "additionalProperties": false, "properties": {
        "set": { "type": "object", "additionalProperties": { "type": "string" } },
        "remove": { "type": "array", "items": { "type": "string" } } } });
    let mut props = json!({
        "name": text,
        "host": text,
        "path": text,
        "path_kind": { "type": "string", "enum": ["prefix", "exact"] },
        "strip_prefix": { "type": "boolean" },
        "to": { "type": "object", "description": "{\"upstream\": [\"IP:PORT\", ...]} or {\"service\": \"NAME\"}",
                "additionalProperties": false,
                "properties": { "upstream": { "type": "array", "items": text }, "service": text } },
        "listener": { "type": "string", "enum": ["public", "internal"] },
        "balancer": { "type": "string", "enum": ["round-robin", "least-outstanding"] },
        "timeout_ms": { "type": ["integer", "null"] },
        "max_body": { "type": ["integer", "null"] },
        "request_headers": rules,
        "response_headers": rules,
        "health": { "type": ["object", "null"], "additionalProperties": false, "required": ["path"], "properties": {
            "path": text, "interval_ms": { "type": "integer" }, "timeout_ms": { "type": "integer" },
            "healthy_threshold": { "type": "integer" }, "unhealthy_threshold": { "type": "integer" } } },
        "allow_http": { "type": "boolean", "description": "serve on plain HTTP too instead of redirecting to HTTPS" },
        "upstream_protocol": { "type": "string", "enum": ["http1", "h2c"] },
    });
    let mut required = vec!["name", "host", "to"];
    if !request {
        props["created_at"] = json!({ "type": "string", "format": "date-time" });
        props["created_by"] = text;
        required = vec![
            "name",
            "host",
            "path",
            "path_kind",
            "strip_prefix",
            "to",
            "listener",
            "balancer",
            "timeout_ms",
            "max_body",
            "request_headers",
            "response_headers",
            "allow_http",
            "upstream_protocol",
            "created_at",
            "created_by",
        ];
    }
    json!({ "type": "object", "additionalProperties": false, "required": required, "properties": props })
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let (req, status, resp) = io(route.op);
        let mut params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        for q in query_params(route.op) {
            params.push(json!({ "name": q, "in": "query", "required": route.op == Op::DeleteGrant, "schema": { "type": "string" } }));
        }
        let mut responses = Map::new();
        let mut ok = json!({ "description": "success" });
        if let Some(s) = resp {
            ok["content"] = json!({ "application/json": { "schema": s } });
        }
        responses.insert(status.to_string(), ok);
        responses.insert(
            "default".into(),
            json!({ "description": "error", "content": { "application/json": { "schema": r("Error") } } }),
        );
        let mut op = json!({
            "operationId": format!("{}:{}", route.method.to_lowercase(), route.path),
            "summary": route.summary,
            "x-audit-action": route.id,
            "parameters": params,
            "responses": responses,
        });
        if !matches!(
            route.op,
            Op::Health | Op::OpenApi | Op::SealStatus | Op::Unseal
        ) {
            op["security"] = json!([{ "bearer": [] }]);
        }
        if let Some(s) = req {
            op["requestBody"] =
                json!({ "required": true, "content": { "application/json": { "schema": s } } });
        }
        // Artifacts travel as bytes, not JSON.
        let binary = json!({ "type": "string", "format": "binary" });
        if route.op == Op::PushArtifact {
            op["requestBody"] = json!({ "required": true, "content": { "application/gzip": { "schema": binary } } });
            op["responses"]["200"] = json!({ "description": "the same content was already there",
                "content": { "application/json": { "schema": r("ArtifactInfo") } } });
        }
        if route.op == Op::PullArtifact {
            op["responses"]["200"]["content"] =
                json!({ "application/octet-stream": { "schema": binary } });
        }
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Gantry control API", "version": crate::VERSION },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    })
}
