//! Secrets endpoints: put, read (audited), versions, delete/restore/destroy, rewrap, and
//! secret requests. Listing and metadata never carry values; reading a value is its own
//! permission.

use model::kms::{ContentType, CreateSecretRequest, DestroySecret, PutSecret};
use model::{Code, Role};
use secrets::Which;

use model::rbac::{Action, Resource};

use super::{created, env_target, name, ok, Reply, Req};
use crate::auth::Ctx;
use crate::error::ApiError;
use crate::http::{get, no_content, read_body, read_json, read_secret_json};
use crate::routes::Op;

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidArgument, m)
}

/// The bytes and content type of a put: exactly one of `value` and `value_b64`.
fn value_of(p: &PutSecret) -> Result<(zeroize::Zeroizing<Vec<u8>>, ContentType), ApiError> {
    use base64::Engine as _;
    match (&p.value, &p.value_b64) {
        (Some(v), None) => Ok((
            zeroize::Zeroizing::new(v.as_bytes().to_vec()),
            p.content_type.unwrap_or(ContentType::Text),
        )),
        (None, Some(b)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|_| invalid("value_b64 is not valid base64"))?;
            Ok((
                zeroize::Zeroizing::new(bytes),
                p.content_type.unwrap_or(ContentType::Binary),
            ))
        }
        _ => Err(invalid(
            "give exactly one of value (text or JSON) and value_b64 (binary)",
        )),
    }
}

/// What each secret operation needs, on the environment.
pub fn permission(op: Op) -> Option<(Resource, Action)> {
    Some(match op {
        Op::ListSecrets | Op::GetSecret | Op::ListSecretVersions => {
            (Resource::Secret, Action::Read)
        }
        Op::PutSecret | Op::RewrapSecret => (Resource::Secret, Action::Create),
        Op::GetSecretValue => (Resource::Secret, Action::ReadValue),
        Op::DeleteSecret | Op::RestoreSecret => (Resource::Secret, Action::Delete),
        Op::DestroySecret => (Resource::Secret, Action::Destroy),
        Op::ListSecretRequests => (Resource::SecretRequest, Action::Read),
        Op::CreateSecretRequest => (Resource::SecretRequest, Action::Create),
        Op::CancelSecretRequest => (Resource::SecretRequest, Action::Update),
        _ => return None,
    })
}

pub async fn call(ctx: &Ctx<'_>, op: Op, params: &[&str], q: &[(&str, String)], req: Req) -> Reply {
    let scope = env_target(ctx, params, op).await?;
    let kr = &ctx.state.keyring;
    let store = &ctx.state.store;
    let actor = &ctx.actor;
    match op {
        Op::ListSecrets => {
            return ok(&model::types::List {
                items: kr.secret_list(&scope).await?,
            });
        }
        Op::ListSecretRequests => {
            return ok(&model::types::List {
                items: store.secret_requests(&scope).await?,
            });
        }
        Op::CreateSecretRequest => {
            let body: CreateSecretRequest = read_json(&req.headers, req.body).await?;
            model::types::check_description(&body.description)?;
            let r = ctx
                .mutate(
                    &scope,
                    kr.request_secret(actor, &scope, body.name.as_str(), &body.description),
                )
                .await?;
            return created(&r);
        }
        Op::CancelSecretRequest => {
            let id = params[2];
            let r = store.secret_request(id).await?;
            if !r.secret.starts_with(&format!("{scope}/")) {
                return Err(ApiError::new(
                    Code::NotFound,
                    format!("secret request {id} not found in {scope}"),
                ));
            }
            return ok(&ctx
                .mutate(&scope, store.cancel_secret_request(actor, id))
                .await?);
        }
        _ => {}
    }
    let secret = name(params[2])?;
    let secret = secret.as_str();
    match op {
        Op::GetSecret => ok(&kr.secret_info(&scope, secret).await?),
        Op::ListSecretVersions => ok(&model::types::List {
            items: kr.secret_versions(&scope, secret).await?,
        }),
        Op::PutSecret => {
            let body: PutSecret = read_secret_json(&req.headers, req.body).await?;
            if let Some(d) = &body.description {
                model::types::check_description(d)?;
            }
            let (value, ctype) = value_of(&body)?;
            let info = ctx
                .mutate(
                    &scope,
                    kr.put_secret(
                        actor,
                        &scope,
                        secret,
                        &value,
                        ctype,
                        body.if_version,
                        body.description.as_deref(),
                    ),
                )
                .await?;
            ok(&info)
        }
        Op::GetSecretValue => {
            let which = match (get(q, "version"), get(q, "stage")) {
                (Some(_), Some(_)) => return Err(invalid("give version or stage, not both")),
                (Some(v), None) => Which::Version(
                    v.parse::<u32>()
                        .ok()
                        .filter(|v| *v > 0)
                        .ok_or_else(|| invalid("version must be a positive integer"))?,
                ),
                (None, Some("previous")) => Which::Previous,
                (None, Some("current")) | (None, None) => Which::Current,
                (None, Some(_)) => return Err(invalid("stage must be current or previous")),
            };
            ok(&kr.read_secret(actor, &scope, secret, which).await?)
        }
        Op::DeleteSecret => {
            let days = get(q, "recovery_days")
                .map(|d| {
                    d.parse::<u32>()
                        .map_err(|_| invalid("recovery_days must be an integer"))
                })
                .transpose()?;
            ok(&ctx
                .mutate(&scope, kr.delete_secret(actor, &scope, secret, days))
                .await?)
        }
        Op::RestoreSecret => ok(&ctx
            .mutate(&scope, kr.restore_secret(actor, &scope, secret))
            .await?),
        Op::DestroySecret => {
            let body = read_body(&req.headers, req.body).await?;
            let force = if body.is_empty() {
                false
            } else {
                serde_json::from_slice::<DestroySecret>(&body)
                    .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?
                    .force
            };
            // Forcing a destruction inside the recovery window is an admin's decision.
            if force
                && !ctx
                    .who
                    .roles
                    .iter()
                    .any(|g| g.role == Role::Admin && g.scope.contains(&scope))
            {
                return Err(ctx.deny(&scope).await);
            }
            ctx.mutate(&scope, kr.destroy_secret(actor, &scope, secret, force))
                .await?;
            Ok(no_content())
        }
        Op::RewrapSecret => {
            let n = ctx
                .mutate(&scope, kr.rewrap_secret(actor, &scope, secret))
                .await?;
            ok(&serde_json::json!({ "rewrapped_versions": n }))
        }
        _ => Err(ApiError::new(Code::Internal, "unroutable secret operation")),
    }
}
