//! `gantry secret ...`: versioned secrets of an environment, and requests for them.
//!
//! A value is read from stdin or `--from-file`, exactly as given, never from an argument;
//! `secret get` writes it to stdout exactly as stored. Listing and metadata never carry
//! values, and every read of a value is audited by the server.

use std::io::IsTerminal;

use client::{q, Client, ClientError};
use model::kms::{
    ContentType, CreateSecretRequest, DestroySecret, PutSecret, SecretInfo, SecretRequest,
    SecretValue, SecretVersionInfo, MAX_SECRET_VALUE,
};
use model::types::List;
use model::Code;
use zeroize::Zeroize;

use crate::input::{b64, env_path, env_ref, invalid, read_material, unb64, write_raw, Ref};
use crate::output::{opt_t, print, t};
use crate::{CliError, Format, Out, SecretCmd};

const H: &[&str] = &[
    "secret",
    "state",
    "current",
    "previous",
    "updated",
    "updated by",
    "description",
];

fn rows(items: &[SecretInfo]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|s| {
            let state = match s.state {
                model::kms::SecretState::Active => "active".to_string(),
                model::kms::SecretState::Deleted => {
                    format!("deleted (purge {})", opt_t(s.purge_at))
                }
            };
            vec![
                s.name.clone(),
                state,
                s.current_version.to_string(),
                s.previous_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                t(s.updated_at),
                s.updated_by.clone(),
                s.description.clone(),
            ]
        })
        .collect()
}

fn show(out: &Out, s: &SecretInfo) -> Result<(), CliError> {
    print(out.output, s, H, rows(std::slice::from_ref(s)))
}

const RH: &[&str] = &[
    "id",
    "secret",
    "state",
    "requested by",
    "requested",
    "description",
];

fn request_rows(items: &[SecretRequest]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|r| {
            let state = match r.state {
                model::kms::RequestState::Open => "open",
                model::kms::RequestState::Fulfilled => "fulfilled",
                model::kms::RequestState::Cancelled => "cancelled",
            };
            vec![
                r.id.clone(),
                r.secret.clone(),
                state.to_string(),
                r.requested_by.clone(),
                t(r.requested_at),
                r.description.clone(),
            ]
        })
        .collect()
}

fn secret(s: &str) -> Result<Ref, CliError> {
    Ref::parse(s, "secret")
}

/// A secret request id as the server makes them (`req_` and hex); checked before it goes
/// into a path.
fn request_id(id: &str) -> Result<&str, CliError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(id)
    } else {
        Err(invalid(format!(
            "invalid request id {:?}",
            model::name::truncate(id)
        )))
    }
}

/// The body of a put: the value as text, JSON or base64, checked here so that a mistake
/// fails before anything is sent.
fn put_body(
    value: &[u8],
    json: bool,
    binary: bool,
    if_version: Option<u32>,
    description: Option<String>,
) -> Result<PutSecret, CliError> {
    let mut body = PutSecret {
        value: None,
        value_b64: None,
        content_type: None,
        if_version,
        description,
    };
    if binary {
        body.value_b64 = Some(b64(value));
        body.content_type = Some(ContentType::Binary);
        return Ok(body);
    }
    let text = std::str::from_utf8(value)
        .map_err(|_| invalid("the value is not UTF-8 text; use --binary"))?;
    if json {
        serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| invalid(format!("the value is not valid JSON (--json): {e}")))?;
        body.content_type = Some(ContentType::Json);
    } else {
        body.content_type = Some(ContentType::Text);
    }
    body.value = Some(text.to_string());
    Ok(body)
}

pub async fn run(c: &Client, cmd: SecretCmd) -> Result<(), CliError> {
    match cmd {
        SecretCmd::Put {
            secret: s,
            from_file,
            json,
            binary,
            if_version,
            description,
            out,
        } => {
            let r = secret(&s)?;
            if let Some(d) = &description {
                model::types::check_description(d)?;
            }
            // Over the limit is what the server answers 413 for: the same exit code.
            let value = read_material(
                from_file.as_deref(),
                MAX_SECRET_VALUE,
                "secret value",
                Code::PayloadTooLarge,
            )?;
            let size = value.len();
            let mut body = put_body(&value, json, binary, if_version, description)?;
            let res = c.put::<_, SecretInfo>(&r.path("secrets"), &body).await;
            body.value.zeroize();
            body.value_b64.zeroize();
            let x = res.map_err(|e| match e {
                // The value fits the limit but its request body does not (JSON escapes can
                // make text up to six times larger): say so, not just "body too large".
                ClientError::Api {
                    code: Code::PayloadTooLarge,
                    message,
                    ..
                } => CliError {
                    exit_code: Code::PayloadTooLarge.exit_code(),
                    message: if message.starts_with("request body") {
                        format!(
                            "the secret value ({size} bytes) is too large to send: {} it makes a request over the server's limit ({message}){}",
                            if binary { "base64-encoded," } else { "escaped as JSON," },
                            if binary || json { "" } else { "; try --binary" }
                        )
                    } else {
                        format!("the secret value ({size} bytes) is too large: {message}")
                    },
                },
                e => e.into(),
            })?;
            show(&out, &x)
        }
        SecretCmd::Get {
            secret: s,
            version,
            previous,
            out,
        } => {
            let r = secret(&s)?;
            let query = match (version, previous) {
                (Some(v), _) => format!("?version={}", q(&v.to_string())),
                (None, true) => "?stage=previous".to_string(),
                (None, false) => String::new(),
            };
            let mut x: SecretValue = c
                .get(&format!("{}/value{query}", r.path("secrets")))
                .await?;
            let res = match out.output {
                Format::Json => print(out.output, &x, &[], vec![]),
                Format::Table => write_value(&x),
            };
            x.value.zeroize();
            x.value_b64.zeroize();
            res
        }
        SecretCmd::List { env, out } => {
            let (tn, en) = env_ref(&env)?;
            let l: List<SecretInfo> = c.get(&format!("{}/secrets", env_path(&tn, &en))).await?;
            print(out.output, &l, H, rows(&l.items))
        }
        SecretCmd::Show { secret: s, out } => {
            let x: SecretInfo = c.get(&secret(&s)?.path("secrets")).await?;
            show(&out, &x)
        }
        SecretCmd::Versions { secret: s, out } => {
            let l: List<SecretVersionInfo> = c
                .get(&format!("{}/versions", secret(&s)?.path("secrets")))
                .await?;
            let rows = l
                .items
                .iter()
                .map(|v| {
                    vec![
                        v.version.to_string(),
                        v.stage.clone().unwrap_or_else(|| "-".into()),
                        v.content_type.as_str().to_string(),
                        v.size.to_string(),
                        v.key_version.to_string(),
                        t(v.created_at),
                        v.created_by.clone(),
                    ]
                })
                .collect();
            print(
                out.output,
                &l,
                &[
                    "version",
                    "stage",
                    "type",
                    "size",
                    "key version",
                    "created",
                    "created by",
                ],
                rows,
            )
        }
        SecretCmd::Delete {
            secret: s,
            recovery_days,
            out,
        } => {
            let r = secret(&s)?;
            let query = recovery_days
                .map(|d| format!("?recovery_days={}", q(&d.to_string())))
                .unwrap_or_default();
            let x: SecretInfo = c
                .delete_json(&format!("{}{query}", r.path("secrets")))
                .await?;
            match out.output {
                Format::Json => print(out.output, &x, &[], vec![]),
                Format::Table => {
                    println!(
                        "secret {r} deleted; `gantry secret restore {r}` brings it back until {}",
                        opt_t(x.purge_at)
                    );
                    Ok(())
                }
            }
        }
        SecretCmd::Restore { secret: s, out } => {
            let x: SecretInfo = c
                .post_empty(&format!("{}/restore", secret(&s)?.path("secrets")))
                .await?;
            show(&out, &x)
        }
        SecretCmd::Destroy { secret: s, force } => {
            let r = secret(&s)?;
            let _: serde_json::Value = c
                .post(
                    &format!("{}/destroy", r.path("secrets")),
                    &DestroySecret { force },
                )
                .await?;
            println!("secret {r} destroyed");
            Ok(())
        }
        SecretCmd::Rewrap { secret: s, out } => {
            let r = secret(&s)?;
            let x: serde_json::Value = c
                .post_empty(&format!("{}/rewrap", r.path("secrets")))
                .await?;
            match out.output {
                Format::Json => print(out.output, &x, &[], vec![]),
                Format::Table => {
                    println!("secret {r}: {} versions rewrapped", x["rewrapped_versions"]);
                    Ok(())
                }
            }
        }
        SecretCmd::Request {
            secret: s,
            description,
            out,
        } => {
            let r = secret(&s)?;
            model::types::check_description(&description)?;
            let x: SecretRequest = c
                .post(
                    &format!("{}/secret-requests", env_path(&r.tenant, &r.env)),
                    &CreateSecretRequest {
                        name: r.name.clone(),
                        description,
                    },
                )
                .await?;
            print(out.output, &x, RH, request_rows(std::slice::from_ref(&x)))
        }
        SecretCmd::Requests { env, out } => {
            let (tn, en) = env_ref(&env)?;
            let l: List<SecretRequest> = c
                .get(&format!("{}/secret-requests", env_path(&tn, &en)))
                .await?;
            print(out.output, &l, RH, request_rows(&l.items))
        }
        SecretCmd::CancelRequest { env, id, out } => {
            let (tn, en) = env_ref(&env)?;
            let id = request_id(&id)?;
            let x: SecretRequest = c
                .post_empty(&format!(
                    "{}/secret-requests/{id}/cancel",
                    env_path(&tn, &en)
                ))
                .await?;
            print(out.output, &x, RH, request_rows(std::slice::from_ref(&x)))
        }
    }
}

/// Writes a value exactly as stored. Only when stdout is a terminal does a text value
/// without a final newline get one, so the prompt does not run into it.
fn write_value(x: &SecretValue) -> Result<(), CliError> {
    match (x.content_type, &x.value, &x.value_b64) {
        (ContentType::Binary, _, Some(b)) => write_raw(&unb64(b, "value_b64")?),
        (_, Some(v), _) => {
            write_raw(v.as_bytes())?;
            if std::io::stdout().is_terminal() && !v.ends_with('\n') {
                write_raw(b"\n")?;
            }
            Ok(())
        }
        _ => Err(CliError {
            exit_code: 1,
            message: "unexpected response from the server: the value is missing".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let b = put_body(b"s3cret", false, false, Some(2), None).unwrap();
        assert_eq!(b.value.as_deref(), Some("s3cret"));
        assert_eq!(b.content_type, Some(ContentType::Text));
        assert_eq!(b.if_version, Some(2));
        let b = put_body(&[0, 255, 1], false, true, None, None).unwrap();
        assert_eq!(b.value_b64.as_deref(), Some("AP8B"));
        assert!(b.value.is_none());
        assert_eq!(
            put_body(&[0, 255], false, false, None, None)
                .unwrap_err()
                .exit_code,
            3
        );
        assert_eq!(
            put_body(b"{nope", true, false, None, None)
                .unwrap_err()
                .exit_code,
            3
        );
        let b = put_body(br#"{"a":1}"#, true, false, None, None).unwrap();
        assert_eq!(b.content_type, Some(ContentType::Json));
        assert!(request_id("req_0123abcd").is_ok());
        assert!(request_id("../x").is_err());
        assert!(request_id("").is_err());
    }
}
