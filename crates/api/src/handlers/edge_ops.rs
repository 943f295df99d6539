//! Certificate and replica endpoints: the rest of the edge's desired state. A change is
//! stored (and audited); the edge reconciler sees the new generation and swaps its
//! snapshot. A certificate's private key comes in once, in a request body that is never
//! echoed, and never goes out again.

use model::certs::{
    AddCert, EdgeGenerations, EdgeSettings, EdgeSnapshot, IssueCert, RegisterReplica, UpdateReplica,
};
use model::rbac::{Action, Resource};
use model::types::List;
use model::Scope;

use super::{created, env_target, name, ok, Reply, Req};
use crate::auth::Ctx;
use crate::error::ApiError;
use crate::http::{no_content, read_json, read_sensitive_json};
use crate::routes::Op;

/// Largest certificate upload (chain and key, PEM, in JSON).
const MAX_CERT_BODY: usize = 160 * 1024;

/// What each operation needs, on the environment.
pub fn permission(op: Op) -> Option<(Resource, Action)> {
    Some(match op {
        Op::ListCertificates | Op::GetCertificate => (Resource::Certificate, Action::Read),
        Op::AddCertificate | Op::IssueCertificate => (Resource::Certificate, Action::Create),
        Op::RenewCertificate => (Resource::Certificate, Action::Update),
        Op::DeleteCertificate => (Resource::Certificate, Action::Delete),
        Op::ListReplicas => (Resource::Replica, Action::Read),
        Op::RegisterReplica => (Resource::Replica, Action::Create),
        Op::UpdateReplica => (Resource::Replica, Action::Update),
        Op::DeregisterReplica => (Resource::Replica, Action::Delete),
        _ => return None,
    })
}

/// A replica address from a body or a path segment (where IPv6 brackets and colons may
/// come percent-encoded).
fn replica_address(s: &str) -> Result<String, ApiError> {
    let decoded = s
        .replace("%5B", "[")
        .replace("%5b", "[")
        .replace("%5D", "]")
        .replace("%5d", "]")
        .replace("%3A", ":")
        .replace("%3a", ":");
    Ok(model::certs::validate_replica_address(&decoded)?.to_string())
}

/// `GET`/`PUT /v1/edge/settings`: the settings every edge follows.
pub async fn settings(ctx: &Ctx<'_>, op: Op, req: Req) -> Reply {
    let st = &ctx.state;
    if op == Op::GetEdgeSettings {
        ctx.allow(Resource::EdgeConfig, Action::Read, &Scope::Platform)
            .await?;
        return ok(&EdgeSettings {
            https_policy: st.store.https_policy().await?,
        });
    }
    ctx.allow(Resource::EdgeConfig, Action::Update, &Scope::Platform)
        .await?;
    let body: EdgeSettings = read_json(&req.headers, req.body).await?;
    ctx.mutate(
        &Scope::Platform,
        st.store.set_https_policy(&ctx.actor, body.https_policy),
    )
    .await?;
    ok(&body)
}

/// `GET /v1/edge/generations` and `GET /v1/edge/snapshot`: for remote edges (a platform
/// grant that may read the edge's configuration, keys included).
pub async fn remote(ctx: &Ctx<'_>, op: Op) -> Reply {
    ctx.allow(Resource::EdgeConfig, Action::ReadValue, &Scope::Platform)
        .await?;
    let st = &ctx.state;
    let generations = EdgeGenerations {
        routes: st.store.generation("routes").await?,
        certificates: st.store.generation("certificates").await?,
        acme_http01: st.certs.http01_tokens().entries().into_iter().collect(),
        https_policy: st.store.https_policy().await?,
    };
    if op == Op::EdgeGenerations {
        return ok(&generations);
    }
    let snapshot = EdgeSnapshot {
        generations,
        routes: st.store.all_routes().await?,
        replicas: st.store.all_replicas().await?,
        certificates: Some(st.certs.served_pem().await?),
    };
    // Private keys leave the control plane: who took them is on the record.
    let mut ev = store::audit::NewEvent::success("edge.snapshot", "edge".into(), Scope::Platform);
    ev.detail = format!(
        "routes={} certificates={}",
        snapshot.generations.routes, snapshot.generations.certificates
    );
    st.store.record(&ctx.actor, ev).await?;
    ok(&snapshot)
}

pub async fn call(ctx: &Ctx<'_>, op: Op, params: &[&str], req: Req) -> Reply {
    let scope = env_target(ctx, params, op).await?;
    let st = &ctx.state;
    let store = &st.store;
    match op {
        Op::ListCertificates => ok(&List {
            items: st.certs.list(&scope).await?,
        }),
        Op::GetCertificate => ok(&st.certs.show(&scope, name(params[2])?.as_str()).await?),
        Op::AddCertificate => {
            let body: AddCert = read_sensitive_json(&req.headers, req.body, MAX_CERT_BODY).await?;
            let c = ctx
                .mutate(&scope, st.certs.add(&ctx.actor, &scope, &body))
                .await?;
            created(&c)
        }
        Op::IssueCertificate => {
            let body: IssueCert = read_json(&req.headers, req.body).await?;
            body.validate()?;
            let c = ctx
                .mutate(&scope, st.certs.issue(&ctx.actor, &scope, &body))
                .await?;
            created(&c)
        }
        Op::RenewCertificate => {
            let n = name(params[2])?;
            let c = ctx
                .mutate(&scope, st.certs.renew(&ctx.actor, &scope, n.as_str()))
                .await?;
            ok(&c)
        }
        Op::DeleteCertificate => {
            let n = name(params[2])?;
            ctx.mutate(&scope, st.certs.delete(&ctx.actor, &scope, n.as_str()))
                .await?;
            Ok(no_content())
        }
        Op::ListReplicas => {
            let svc = name(params[2])?;
            ok(&List {
                items: store.replicas(&scope, svc.as_str()).await?,
            })
        }
        Op::RegisterReplica => {
            let svc = name(params[2])?;
            let body: RegisterReplica = read_json(&req.headers, req.body).await?;
            let addr = replica_address(&body.address)?;
            let r = ctx
                .mutate(
                    &scope,
                    store.register_replica(&ctx.actor, &scope, svc.as_str(), &addr, body.state),
                )
                .await?;
            created(&r)
        }
        Op::UpdateReplica => {
            let svc = name(params[2])?;
            let addr = replica_address(params[3])?;
            let body: UpdateReplica = read_json(&req.headers, req.body).await?;
            let r = ctx
                .mutate(
                    &scope,
                    store.update_replica(&ctx.actor, &scope, svc.as_str(), &addr, body.state),
                )
                .await?;
            ok(&r)
        }
        Op::DeregisterReplica => {
            let svc = name(params[2])?;
            let addr = replica_address(params[3])?;
            ctx.mutate(
                &scope,
                store.delete_replica(&ctx.actor, &scope, svc.as_str(), &addr),
            )
            .await?;
            Ok(no_content())
        }
        _ => Err(ApiError::new(
            model::Code::Internal,
            "unroutable edge operation",
        )),
    }
}
