//! Route endpoints: the edge's desired state. A change is stored (and audited) here; the
//! edge reconciler sees the new generation and swaps its snapshot, without a restart.

use model::rbac::{Action, Resource};
use model::routes::CreateRoute;
use model::types::List;

use super::{created, env_target, name, ok, Reply, Req};
use crate::auth::Ctx;
use crate::error::ApiError;
use crate::http::{no_content, read_json};
use crate::routes::Op;

/// What each route operation needs, on the environment.
pub fn permission(op: Op) -> Option<(Resource, Action)> {
    Some(match op {
        Op::ListRoutes | Op::GetRoute => (Resource::Route, Action::Read),
        Op::CreateRoute => (Resource::Route, Action::Create),
        Op::DeleteRoute => (Resource::Route, Action::Delete),
        _ => return None,
    })
}

pub async fn call(ctx: &Ctx<'_>, op: Op, params: &[&str], req: Req) -> Reply {
    let scope = env_target(ctx, params, op).await?;
    let store = &ctx.state.store;
    match op {
        Op::ListRoutes => ok(&List {
            items: store.routes(&scope).await?,
        }),
        Op::CreateRoute => {
            let body: CreateRoute = read_json(&req.headers, req.body).await?;
            body.spec.validate()?;
            let r = ctx
                .mutate(
                    &scope,
                    store.create_route(&ctx.actor, &scope, body.name.as_str(), &body.spec),
                )
                .await?;
            created(&r)
        }
        Op::GetRoute => ok(&store.route(&scope, name(params[2])?.as_str()).await?),
        Op::DeleteRoute => {
            let n = name(params[2])?;
            ctx.mutate(&scope, store.delete_route(&ctx.actor, &scope, n.as_str()))
                .await?;
            Ok(no_content())
        }
        _ => Err(ApiError::new(
            model::Code::Internal,
            "unroutable route operation",
        )),
    }
}
