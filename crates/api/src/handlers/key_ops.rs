//! KMS endpoints: key lifecycle (create, settings, rotate, enable/disable, deletion) and
//! use (encrypt, decrypt, data keys, rewrap). Uses are not audited one by one (they change
//! nothing); every lifecycle change is, by the store.

use model::kms::{
    CreateKey, DecryptRequest, EncryptRequest, GenerateDataKey, ScheduleDeletion, UpdateKey,
};

use model::rbac::{Action, Resource};

use super::{created, env_target, name, ok, Reply, Req};
use crate::auth::Ctx;
use crate::error::ApiError;
use crate::http::{read_json, read_secret_json};
use crate::routes::Op;

fn b64_plaintext(s: &str) -> Result<Vec<u8>, ApiError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| {
            ApiError::new(
                model::Code::InvalidArgument,
                "plaintext_b64 is not valid base64",
            )
        })
}

/// What each key operation needs, on the environment.
pub fn permission(op: Op) -> Option<(Resource, Action)> {
    Some(match op {
        Op::ListKeys | Op::GetKey => (Resource::Key, Action::Read),
        Op::CreateKey => (Resource::Key, Action::Create),
        Op::UpdateKey | Op::RotateKey | Op::EnableKey | Op::DisableKey => {
            (Resource::Key, Action::Update)
        }
        Op::ScheduleKeyDeletion | Op::CancelKeyDeletion => (Resource::Key, Action::Delete),
        Op::Encrypt | Op::Decrypt | Op::GenerateDataKey | Op::Rewrap => {
            (Resource::Key, Action::Use)
        }
        _ => return None,
    })
}

pub async fn call(ctx: &Ctx<'_>, op: Op, params: &[&str], req: Req) -> Reply {
    let scope = env_target(ctx, params, op).await?;
    let kr = &ctx.state.keyring;
    let actor = &ctx.actor;
    match op {
        Op::ListKeys => ok(&model::types::List {
            items: kr.kms_keys(&scope).await?,
        }),
        Op::CreateKey => {
            let body: CreateKey = read_json(&req.headers, req.body).await?;
            model::types::check_description(&body.description)?;
            let k = ctx
                .mutate(
                    &scope,
                    kr.create_kms_key(
                        actor,
                        &scope,
                        body.name.as_str(),
                        body.rotation_days,
                        &body.description,
                    ),
                )
                .await?;
            created(&k)
        }
        _ => {
            let key = name(params[2])?;
            let key = key.as_str();
            match op {
                Op::GetKey => ok(&kr.kms_key_info(&scope, key).await?),
                Op::UpdateKey => {
                    let body: UpdateKey = read_json(&req.headers, req.body).await?;
                    ok(&ctx
                        .mutate(&scope, kr.update_kms_key(actor, &scope, key, &body))
                        .await?)
                }
                Op::RotateKey => ok(&ctx
                    .mutate(&scope, kr.rotate_kms_key(actor, &scope, key))
                    .await?),
                Op::EnableKey | Op::DisableKey => {
                    let on = op == Op::EnableKey;
                    ok(&ctx
                        .mutate(&scope, kr.set_kms_key_enabled(actor, &scope, key, on))
                        .await?)
                }
                Op::ScheduleKeyDeletion => {
                    let body: ScheduleDeletion = read_json(&req.headers, req.body).await?;
                    ok(&ctx
                        .mutate(
                            &scope,
                            kr.schedule_kms_key_deletion(actor, &scope, key, body.days),
                        )
                        .await?)
                }
                Op::CancelKeyDeletion => ok(&ctx
                    .mutate(&scope, kr.cancel_kms_key_deletion(actor, &scope, key))
                    .await?),
                Op::Encrypt => {
                    let body: EncryptRequest = read_secret_json(&req.headers, req.body).await?;
                    let pt = zeroize::Zeroizing::new(b64_plaintext(&body.plaintext_b64)?);
                    ok(&kr.encrypt(&scope, key, &pt, &body.context).await?)
                }
                Op::Decrypt => {
                    let body: DecryptRequest = read_json(&req.headers, req.body).await?;
                    ok(&kr
                        .decrypt(&scope, key, &body.ciphertext, &body.context)
                        .await?)
                }
                Op::GenerateDataKey => {
                    let body: GenerateDataKey = read_json(&req.headers, req.body).await?;
                    ok(&kr
                        .generate_data_key(&scope, key, body.bytes, &body.context)
                        .await?)
                }
                Op::Rewrap => {
                    let body: DecryptRequest = read_json(&req.headers, req.body).await?;
                    ok(&kr
                        .rewrap(&scope, key, &body.ciphertext, &body.context)
                        .await?)
                }
                _ => Err(ApiError::new(
                    model::Code::Internal,
                    "unroutable key operation",
                )),
            }
        }
    }
}
