//! One function per operation: parse the path and body into typed values, authorize against
//! the permission table, call the store, shape the answer.
//!
//! Handlers never talk SQL and never build audit events for successful changes (the store
//! writes those in the change's transaction); they only decide who may ask.

use http::{Response, StatusCode};
use hyper::body::Incoming;
use model::rbac::{Action, Resource};
use model::types::{
    check_description, AuditFilter, CreateAccount, CreateEnvironment, CreateTenant, CreateToken,
    GrantRole, List, Status, Whoami, MAX_TOKEN_TTL_SECONDS,
};
use model::{Code, Name, PrincipalName, Role, Scope};

mod artifact_ops;
mod edge_ops;
mod key_ops;
mod route_ops;
mod scan_ops;
mod secret_ops;
mod service_ops;

use crate::auth::Ctx;
use crate::error::ApiError;
use crate::http::{get, json, no_content, query, read_json, Body};
use crate::routes::Op;

type Reply = Result<Response<Body>, ApiError>;

fn ok<T: serde::Serialize>(v: &T) -> Reply {
    Ok(json(StatusCode::OK, v))
}

fn created<T: serde::Serialize>(v: &T) -> Reply {
    Ok(json(StatusCode::CREATED, v))
}

fn name(s: &str) -> Result<Name, ApiError> {
    Ok(Name::parse(s)?)
}

/// The environment an environment-scoped operation targets: parsed, authorized for `op`
/// (the refusal audited), then checked to exist. Authorization comes first so that a
/// principal learns nothing about environments it may not see.
async fn env_target(ctx: &Ctx<'_>, params: &[&str], op: Op) -> Result<Scope, ApiError> {
    let (t, e) = (name(params[0])?, name(params[1])?);
    let scope = Scope::Environment(t.clone(), e.clone());
    let (resource, action) = key_ops::permission(op)
        .or_else(|| secret_ops::permission(op))
        .or_else(|| route_ops::permission(op))
        .or_else(|| edge_ops::permission(op))
        .or_else(|| service_ops::permission(op))
        .ok_or_else(|| ApiError::new(Code::Internal, "operation without a permission"))?;
    ctx.allow(resource, action, &scope).await?;
    // A value read checks the environment in the statement that reads the secret.
    if op != Op::GetSecretValue {
        ctx.state.store.environment(&t, &e).await?;
    }
    Ok(scope)
}

/// A request: its headers, query string and (not yet read) body.
pub struct Req {
    pub headers: http::HeaderMap,
    pub query: Option<String>,
    pub body: Incoming,
}

pub async fn call(ctx: &Ctx<'_>, op: Op, params: &[&str], req: Req) -> Reply {
    let q_allowed = crate::routes::query_params(op);
    let q = query(req.query.as_deref(), q_allowed)?;
    let st = &ctx.state;
    match op {
        Op::Health | Op::OpenApi | Op::SealStatus | Op::Unseal => {
            Err(ApiError::new(Code::Internal, "unreachable"))
        }
        Op::Seal => {
            ctx.allow(Resource::System, Action::Update, &Scope::Platform)
                .await?;
            st.keyring.seal();
            st.store
                .record(
                    &ctx.actor,
                    store::audit::NewEvent::success("seal.seal", "seal".into(), Scope::Platform),
                )
                .await?;
            tracing::warn!(principal = %ctx.actor.principal, "sealed by request");
            ok(&crate::seal_status(st))
        }
        op if key_ops::permission(op).is_some() => key_ops::call(ctx, op, params, req).await,
        op if secret_ops::permission(op).is_some() => {
            secret_ops::call(ctx, op, params, &q, req).await
        }
        Op::Status => ok(&Status {
            version: crate::VERSION.to_string(),
            store: st.store.describe().to_string(),
            uptime_seconds: st.started.elapsed().as_secs(),
            counts: st.store.counts().await?,
        }),
        Op::Whoami => ok(&Whoami {
            principal: ctx.who.principal.clone(),
            roles: ctx.who.roles.clone(),
        }),

        // ---- tenants ----
        Op::ListTenants => {
            let items = st
                .store
                .tenants()
                .await?
                .into_iter()
                .filter(|t| ctx.can_see(Resource::Tenant, &Scope::Tenant(t.name.clone())))
                .collect();
            ok(&List { items })
        }
        Op::CreateTenant => {
            ctx.allow(Resource::Tenant, Action::Create, &Scope::Platform)
                .await?;
            let body: CreateTenant = read_json(&req.headers, req.body).await?;
            let scope = Scope::Tenant(body.name.clone());
            let t = ctx
                .mutate(&scope, st.store.create_tenant(&ctx.actor, &body.name))
                .await?;
            created(&t)
        }
        Op::GetTenant => {
            let t = name(params[0])?;
            ctx.allow_see(Resource::Tenant, &Scope::Tenant(t.clone()))
                .await?;
            ok(&st.store.tenant(&t).await?)
        }
        Op::DeleteTenant => {
            let t = name(params[0])?;
            ctx.allow(Resource::Tenant, Action::Delete, &Scope::Platform)
                .await?;
            let scope = Scope::Tenant(t.clone());
            ctx.mutate(&scope, st.store.delete_tenant(&ctx.actor, &t))
                .await?;
            Ok(no_content())
        }

        // ---- environments ----
        Op::ListEnvironments => {
            let t = name(params[0])?;
            ctx.allow_see(Resource::Tenant, &Scope::Tenant(t.clone()))
                .await?;
            let items = st
                .store
                .environments(&t)
                .await?
                .into_iter()
                .filter(|e| ctx.can_see(Resource::Environment, &e.scope()))
                .collect();
            ok(&List { items })
        }
        Op::CreateEnvironment => {
            let t = name(params[0])?;
            let tenant_scope = Scope::Tenant(t.clone());
            ctx.allow(Resource::Environment, Action::Create, &tenant_scope)
                .await?;
            let body: CreateEnvironment = read_json(&req.headers, req.body).await?;
            let scope = Scope::Environment(t.clone(), body.name.clone());
            let e = ctx
                .mutate(
                    &scope,
                    st.store
                        .create_environment(&ctx.actor, &t, &body.name, body.kind),
                )
                .await?;
            created(&e)
        }
        Op::GetEnvironment => {
            let (t, e) = (name(params[0])?, name(params[1])?);
            ctx.allow_see(
                Resource::Environment,
                &Scope::Environment(t.clone(), e.clone()),
            )
            .await?;
            ok(&st.store.environment(&t, &e).await?)
        }
        Op::DeleteEnvironment => {
            let (t, e) = (name(params[0])?, name(params[1])?);
            ctx.allow(
                Resource::Environment,
                Action::Delete,
                &Scope::Tenant(t.clone()),
            )
            .await?;
            let scope = Scope::Environment(t.clone(), e.clone());
            ctx.mutate(&scope, st.store.delete_environment(&ctx.actor, &t, &e))
                .await?;
            Ok(no_content())
        }

        // ---- accounts ----
        Op::ListPlatformAccounts | Op::ListTenantAccounts => {
            let tenant = match op {
                Op::ListTenantAccounts => Some(name(params[0])?),
                _ => None,
            };
            let scope = tenant.clone().map(Scope::Tenant).unwrap_or(Scope::Platform);
            ctx.allow(Resource::Account, Action::Read, &scope).await?;
            let mut items = st.store.accounts(tenant.as_ref()).await?;
            if tenant.is_none() {
                items.retain(|a| a.name.tenant.is_none());
            }
            ok(&List { items })
        }
        Op::CreatePlatformAccount | Op::CreateTenantAccount => {
            let tenant = match op {
                Op::CreateTenantAccount => Some(name(params[0])?),
                _ => None,
            };
            let scope = tenant.clone().map(Scope::Tenant).unwrap_or(Scope::Platform);
            ctx.allow(Resource::Account, Action::Create, &scope).await?;
            let body: CreateAccount = read_json(&req.headers, req.body).await?;
            check_description(&body.description)?;
            if body.name.tenant != tenant {
                return Err(ApiError::new(
                    Code::Unprocessable,
                    format!("account {} does not belong to {scope}", body.name),
                ));
            }
            let a = ctx
                .mutate(
                    &scope,
                    st.store
                        .create_account(&ctx.actor, &body.name, &body.description),
                )
                .await?;
            created(&a)
        }
        Op::GetPlatformAccount
        | Op::GetTenantAccount
        | Op::DeletePlatformAccount
        | Op::DeleteTenantAccount => {
            let account = match op {
                Op::GetTenantAccount | Op::DeleteTenantAccount => PrincipalName {
                    tenant: Some(name(params[0])?),
                    name: name(params[1])?,
                },
                _ => PrincipalName {
                    tenant: None,
                    name: name(params[0])?,
                },
            };
            let scope = account.scope();
            if matches!(op, Op::GetPlatformAccount | Op::GetTenantAccount) {
                ctx.allow(Resource::Account, Action::Read, &scope).await?;
                return ok(&st.store.account(&account).await?);
            }
            ctx.allow(Resource::Account, Action::Delete, &scope).await?;
            if account == ctx.who.principal {
                return Err(ApiError::new(
                    Code::Conflict,
                    "an account cannot delete itself",
                ));
            }
            ctx.mutate(&scope, st.store.delete_account(&ctx.actor, &account))
                .await?;
            Ok(no_content())
        }

        // ---- tokens ----
        Op::ListTokens => {
            let account = get(&q, "account").map(PrincipalName::parse).transpose()?;
            if let Some(a) = &account {
                ctx.allow(Resource::Token, Action::Read, &a.scope()).await?;
            }
            let items = st
                .store
                .tokens(account.as_ref())
                .await?
                .into_iter()
                .filter(|t| ctx.can(Resource::Token, Action::Read, &t.account.scope()))
                .collect();
            ok(&List { items })
        }
        Op::CreateToken => {
            let body: CreateToken = read_json(&req.headers, req.body).await?;
            let scope = body.account.scope();
            ctx.allow(Resource::Token, Action::Create, &scope).await?;
            check_description(&body.description)?;
            if body.ttl_seconds == 0 || body.ttl_seconds > MAX_TOKEN_TTL_SECONDS {
                return Err(ApiError::new(
                    Code::InvalidArgument,
                    format!("ttl_seconds must be between 1 and {MAX_TOKEN_TTL_SECONDS} (366 days)"),
                ));
            }
            let ttl = time::Duration::seconds(body.ttl_seconds as i64);
            let t = ctx
                .mutate(
                    &scope,
                    st.store
                        .create_token(&ctx.actor, &body.account, Some(ttl), &body.description),
                )
                .await?;
            created(&t)
        }
        Op::GetToken | Op::RevokeToken => {
            let id = params[0];
            if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ApiError::new(Code::InvalidArgument, "invalid token id"));
            }
            // The token's scope decides; an unknown id is checked against the platform.
            let (found, scope) = match st.store.token(id).await {
                Ok(t) => {
                    let scope = t.account.scope();
                    (Ok(t), scope)
                }
                Err(e @ store::StoreError::NotFound(_)) => (Err(e), Scope::Platform),
                Err(e) => return Err(e.into()),
            };
            if op == Op::GetToken {
                ctx.allow(Resource::Token, Action::Read, &scope).await?;
                return ok(&found?);
            }
            ctx.allow(Resource::Token, Action::Delete, &scope).await?;
            let t = ctx
                .mutate(&scope, st.store.revoke_token(&ctx.actor, id))
                .await?;
            ok(&t)
        }

        // ---- grants ----
        Op::ListGrants => {
            let scope = get(&q, "scope").map(Scope::parse).transpose()?;
            let principal = get(&q, "principal").map(PrincipalName::parse).transpose()?;
            let items = st
                .store
                .grants()
                .await?
                .into_iter()
                .filter(|g| ctx.can(Resource::Grant, Action::Read, &g.scope))
                .filter(|g| scope.as_ref().is_none_or(|s| s.contains(&g.scope)))
                .filter(|g| principal.as_ref().is_none_or(|p| *p == g.principal))
                .collect();
            ok(&List { items })
        }
        Op::CreateGrant => {
            let body: GrantRole = read_json(&req.headers, req.body).await?;
            ctx.allow(Resource::Grant, Action::Create, &body.scope)
                .await?;
            let g = ctx
                .mutate(
                    &body.scope,
                    st.store
                        .grant(&ctx.actor, body.role, &body.principal, &body.scope),
                )
                .await?;
            created(&g)
        }
        Op::DeleteGrant => {
            let need = |k: &str| {
                get(&q, k).ok_or_else(|| {
                    ApiError::bad_request(format!("query parameter {k} is required"))
                })
            };
            let role = Role::parse(need("role")?)?;
            let principal = PrincipalName::parse(need("principal")?)?;
            let scope = Scope::parse(need("scope")?)?;
            ctx.allow(Resource::Grant, Action::Delete, &scope).await?;
            ctx.mutate(
                &scope,
                st.store.revoke(&ctx.actor, role, &principal, &scope),
            )
            .await?;
            Ok(no_content())
        }

        // ---- audit ----
        Op::ListAuditEvents => {
            let readable: Vec<Scope> = ctx
                .who
                .roles
                .iter()
                .filter(|g| model::rbac::role_allows(g.role, Resource::Audit, Action::Read))
                .map(|g| g.scope.clone())
                .collect();
            if readable.is_empty() {
                return Err(ctx.deny(&ctx.who.principal.scope()).await);
            }
            let filter = audit_filter(&q)?;
            let items = st
                .store
                .audit_events(&filter, |scope| match Scope::parse(scope) {
                    Ok(s) => readable.iter().any(|r| r.contains(&s)),
                    Err(_) => readable.contains(&Scope::Platform),
                })
                .await?;
            ok(&List { items })
        }
        Op::VerifyAudit => {
            let may = ctx
                .who
                .roles
                .iter()
                .any(|g| model::rbac::role_allows(g.role, Resource::Audit, Action::Verify));
            if !may {
                return Err(ctx.deny(&ctx.who.principal.scope()).await);
            }
            ok(&st.store.audit_verify().await?)
        }
        op if route_ops::permission(op).is_some() => route_ops::call(ctx, op, params, req).await,
        op if edge_ops::permission(op).is_some() => edge_ops::call(ctx, op, params, req).await,
        Op::EdgeGenerations | Op::EdgeSnapshot => edge_ops::remote(ctx, op).await,
        Op::GetEdgeSettings | Op::SetEdgeSettings => edge_ops::settings(ctx, op, req).await,
        op if service_ops::permission(op).is_some() => {
            service_ops::call(ctx, op, params, req).await
        }
        op if artifact_ops::permission(op).is_some() => {
            artifact_ops::call(ctx, op, params, req).await
        }
        op if scan_ops::permission(op).is_some() => scan_ops::call(ctx, op, params, req).await,
        _ => Err(ApiError::new(Code::Internal, "operation without a handler")),
    }
}

fn audit_filter(q: &[(&str, String)]) -> Result<AuditFilter, ApiError> {
    let int = |k: &str| -> Result<Option<i64>, ApiError> {
        get(q, k)
            .map(|v| {
                v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    ApiError::new(
                        Code::InvalidArgument,
                        format!("{k} must be a non-negative integer"),
                    )
                })
            })
            .transpose()
    };
    let action = get(q, "action").map(str::to_string);
    if let Some(a) = &action {
        if a.len() > 64
            || !a
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'-' || b == b'*')
        {
            return Err(ApiError::new(
                Code::InvalidArgument,
                "invalid action filter; use e.g. tenant.create or tenant.*",
            ));
        }
    }
    let principal = get(q, "principal").map(str::to_string);
    if let Some(p) = &principal {
        if p.len() > 128 {
            return Err(ApiError::new(
                Code::InvalidArgument,
                "principal filter is too long",
            ));
        }
    }
    Ok(AuditFilter {
        tenant: get(q, "tenant").map(Name::parse).transpose()?,
        principal,
        action,
        since: get(q, "since").map(model::types::parse_time).transpose()?,
        after_seq: int("after")?,
        limit: int("limit")?,
    })
}
