//! Service endpoints: deploy (a new revision), status, history, rollback, scale, stop,
//! start, delete and logs. Each change is desired state in the store, audited; the
//! service reconciler converges the running replicas to it.

use model::rbac::{Action, Resource};
use model::services::{DeploySpec, Rollback, Scale};
use model::types::List;

use super::{created, env_target, name, ok, Reply, Req};
use crate::auth::Ctx;
use crate::error::ApiError;
use crate::http::{get as get_param, no_content, query, read_json};
use crate::routes::Op;

pub fn permission(op: Op) -> Option<(Resource, Action)> {
    Some(match op {
        Op::ListServices | Op::GetService | Op::ServiceHistory | Op::ServiceLogs => {
            (Resource::Service, Action::Read)
        }
        Op::DeployService => (Resource::Service, Action::Create),
        Op::RollbackService | Op::ScaleService | Op::StopService | Op::StartService => {
            (Resource::Service, Action::Update)
        }
        Op::DeleteService => (Resource::Service, Action::Delete),
        _ => return None,
    })
}

pub async fn call(ctx: &Ctx<'_>, op: Op, params: &[&str], req: Req) -> Reply {
    let scope = env_target(ctx, params, op).await?;
    let svc = &ctx.state.services;
    if op == Op::ListServices {
        return ok(&List {
            items: svc.list(&scope).await?,
        });
    }
    let n = name(params[2])?;
    match op {
        Op::GetService => ok(&svc.status(&scope, &n).await?),
        Op::ServiceHistory => ok(&List {
            items: svc.history(&scope, &n).await?,
        }),
        Op::ServiceLogs => {
            let q = query(req.query.as_deref(), crate::routes::query_params(op))?;
            let lines = match get_param(&q, "lines") {
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| {
                        ApiError::new(model::Code::InvalidArgument, "lines must be 1..10000")
                    })?,
                None => 100,
            };
            let replica = match get_param(&q, "replica") {
                Some(v) => Some(v.parse::<u32>().map_err(|_| {
                    ApiError::new(model::Code::InvalidArgument, "replica must be a number")
                })?),
                None => None,
            };
            ok(&List {
                items: svc.logs(&scope, &n, replica, lines).await?,
            })
        }
        Op::DeployService => {
            let spec: DeploySpec = read_json(&req.headers, req.body).await?;
            spec.validate()?;
            // A deploy that may create routes needs the right to create them.
            if spec.routes.iter().any(|r| r.host.is_some()) {
                ctx.allow(Resource::Route, Action::Create, &scope).await?;
            }
            let r = ctx
                .mutate(&scope, svc.deploy(&ctx.actor, &scope, &n, &spec))
                .await?;
            created(&r)
        }
        Op::RollbackService => {
            let body: Rollback = read_json(&req.headers, req.body).await?;
            let r = ctx
                .mutate(&scope, svc.rollback(&ctx.actor, &scope, &n, body.to))
                .await?;
            ok(&r)
        }
        Op::ScaleService => {
            let body: Scale = read_json(&req.headers, req.body).await?;
            let r = ctx
                .mutate(&scope, svc.scale(&ctx.actor, &scope, &n, body.replicas))
                .await?;
            ok(&r)
        }
        Op::StopService | Op::StartService => {
            let running = op == Op::StartService;
            let r = ctx
                .mutate(&scope, svc.set_running(&ctx.actor, &scope, &n, running))
                .await?;
            ok(&r)
        }
        Op::DeleteService => {
            ctx.mutate(&scope, svc.delete(&ctx.actor, &scope, &n))
                .await?;
            Ok(no_content())
        }
        _ => Err(ApiError::new(
            model::Code::Internal,
            "unroutable service operation",
        )),
    }
}
