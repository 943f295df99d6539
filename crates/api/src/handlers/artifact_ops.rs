//! Artifact registry endpoints. Artifacts belong to a tenant (every environment deploys
//! from the same registry): a role that allows the action anywhere inside the tenant
//! allows it on the tenant's artifacts. Blobs go up as the request body (a .tar.gz) and
//! come down decrypted and verified.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use model::artifacts::ArtifactRef;
use model::rbac::{Action, Resource};
use model::types::List;
use model::{Name, Scope};

use super::{name, ok, Reply, Req};
use crate::auth::Ctx;
use crate::error::ApiError;
use crate::http::{json, no_content, read_body_within};
use crate::routes::Op;

/// Slow links get this long to send an artifact.
const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(50);

pub fn permission(op: Op) -> Option<(Resource, Action)> {
    Some(match op {
        Op::ListArtifacts | Op::GetArtifact | Op::PullArtifact => {
            (Resource::Artifact, Action::Read)
        }
        Op::PushArtifact => (Resource::Artifact, Action::Create),
        Op::DeleteArtifact => (Resource::Artifact, Action::Delete),
        _ => return None,
    })
}

/// Authorizes `op` on the tenant (any grant inside it whose role allows the action), then
/// checks the tenant exists.
async fn tenant_target(ctx: &Ctx<'_>, tenant: &str, op: Op) -> Result<Name, ApiError> {
    let t = name(tenant)?;
    let scope = Scope::Tenant(t.clone());
    let (resource, action) = permission(op)
        .ok_or_else(|| ApiError::new(model::Code::Internal, "operation without a permission"))?;
    let allowed = ctx.who.roles.iter().any(|g| {
        model::rbac::role_allows(g.role, resource, action)
            && (g.scope.contains(&scope) || scope.contains(&g.scope))
    });
    if !allowed {
        return Err(ctx.deny(&scope).await);
    }
    ctx.state.store.tenant(&t).await?;
    Ok(t)
}

fn artifact_ref(t: &Name, artifact: &str, version: &str) -> Result<ArtifactRef, ApiError> {
    Ok(ArtifactRef::parse(&format!("{t}/{artifact}@{version}"))?)
}

pub async fn call(ctx: &Ctx<'_>, op: Op, params: &[&str], req: Req) -> Reply {
    let t = tenant_target(ctx, params[0], op).await?;
    let reg = &ctx.state.registry;
    let scope = Scope::Tenant(t.clone());
    if op == Op::ListArtifacts {
        return ok(&List {
            items: reg.list(&t).await?,
        });
    }
    let r = artifact_ref(&t, params[1], params[2])?;
    match op {
        Op::GetArtifact => ok(&reg.show(&r).await?),
        Op::PushArtifact => {
            let ct = req
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !matches!(ct, "application/gzip" | "application/octet-stream") {
                return Err(ApiError::new(
                    model::Code::UnsupportedMediaType,
                    "send the artifact as application/gzip (a .tar.gz)",
                ));
            }
            let body = read_body_within(
                &req.headers,
                req.body,
                model::artifacts::MAX_ARTIFACT_BYTES,
                UPLOAD_TIMEOUT,
            )
            .await?;
            let (info, created) = ctx.mutate(&scope, reg.push(&ctx.actor, &r, body)).await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json(status, &info))
        }
        Op::PullArtifact => {
            let (info, bytes) = reg.pull(&r).await?;
            Ok(blob(&info.digest, bytes))
        }
        Op::DeleteArtifact => {
            ctx.mutate(&scope, reg.delete(&ctx.actor, &r)).await?;
            Ok(no_content())
        }
        _ => Err(ApiError::new(
            model::Code::Internal,
            "unroutable artifact operation",
        )),
    }
}

fn blob(digest: &str, bytes: Bytes) -> Response<crate::http::Body> {
    let mut r = Response::new(http_body_util::Full::new(bytes));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = http::HeaderValue::from_str(digest) {
        r.headers_mut().insert("x-gantry-digest", v);
    }
    r
}
