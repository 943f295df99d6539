//! Vulnerability database and artifact policy endpoints. The database is installation-wide
//! public knowledge (OSV records an operator loads offline): every role may read it, only
//! an admin may load it or change the policy. Loads are validated record by record: a bad
//! record is named in the report, never silently stored.

use model::rbac::{Action, Resource};
use model::scan::{ArtifactPolicy, LoadAdvisories, LoadReport};
use model::Scope;

use super::{ok, Reply, Req};
use crate::auth::Ctx;
use crate::error::ApiError;
use crate::http::{read_json, read_json_up_to};
use crate::routes::Op;

/// Largest load request, and most records in one.
const MAX_LOAD_BODY: usize = 8 * 1024 * 1024;
const MAX_RECORDS: usize = 2_000;
/// Rejections named in a report (the rest are counted).
const MAX_REJECTIONS_SHOWN: usize = 20;

pub fn permission(op: Op) -> Option<(Resource, Action)> {
    Some(match op {
        Op::AdvisoryStatus | Op::GetAdvisory | Op::GetArtifactPolicy => {
            (Resource::Advisory, Action::Read)
        }
        Op::LoadAdvisories => (Resource::Advisory, Action::Create),
        Op::SetArtifactPolicy => (Resource::Advisory, Action::Update),
        _ => return None,
    })
}

pub async fn call(ctx: &Ctx<'_>, op: Op, params: &[&str], req: Req) -> Reply {
    let (resource, action) = permission(op)
        .ok_or_else(|| ApiError::new(model::Code::Internal, "operation without a permission"))?;
    if action == Action::Read {
        // Any grant whose role reads it, on any scope: the database is the same for all.
        if !ctx
            .who
            .roles
            .iter()
            .any(|g| model::rbac::role_allows(g.role, resource, action))
        {
            return Err(ctx.deny(&Scope::Platform).await);
        }
    } else {
        // Changes are installation-wide: a platform grant only.
        ctx.allow(resource, action, &Scope::Platform).await?;
    }
    let store = &ctx.state.store;
    match op {
        Op::AdvisoryStatus => ok(&store.advisory_status().await?),
        Op::GetAdvisory => ok(&store.advisory(params[0]).await?),
        Op::GetArtifactPolicy => ok(&store.artifact_policy().await?),
        Op::SetArtifactPolicy => {
            let p: ArtifactPolicy = read_json(&req.headers, req.body).await?;
            ctx.mutate(&Scope::Platform, store.set_artifact_policy(&ctx.actor, &p))
                .await?;
            ok(&p)
        }
        Op::LoadAdvisories => {
            let body: LoadAdvisories =
                read_json_up_to(&req.headers, req.body, MAX_LOAD_BODY).await?;
            if body.advisories.len() > MAX_RECORDS {
                return Err(ApiError::new(
                    model::Code::PayloadTooLarge,
                    format!("at most {MAX_RECORDS} records per load; send them in batches"),
                ));
            }
            let mut report = LoadReport {
                received: body.advisories.len() as u64,
                ..LoadReport::default()
            };
            let mut batch = store::advisories::AdvisoryBatch::default();
            let mut rejected = 0usize;
            for doc in &body.advisories {
                match scan::normalize(doc) {
                    Ok(scan::Normalized::Advisory(a)) => batch.advisories.push(a),
                    Ok(scan::Normalized::Withdrawn(id)) => batch.withdrawn.push(id),
                    Ok(scan::Normalized::Ignored(_)) => report.ignored += 1,
                    Err(e) => {
                        rejected += 1;
                        if report.rejected.len() < MAX_REJECTIONS_SHOWN {
                            report.rejected.push(e.0);
                        }
                    }
                }
            }
            if rejected > report.rejected.len() {
                report
                    .rejected
                    .push(format!("and {} more", rejected - report.rejected.len()));
            }
            ctx.mutate(
                &Scope::Platform,
                store.load_advisories(&ctx.actor, &batch, &mut report),
            )
            .await?;
            ok(&report)
        }
        _ => Err(ApiError::new(
            model::Code::Internal,
            "operation without a handler",
        )),
    }
}
