//! `gantry key ...`: the KMS keys of an environment. Plaintext is read from stdin or a file
//! (never an argument) and decrypted plaintext is written to stdout as raw bytes.

use std::io::BufRead;

use client::Client;
use model::kms::{
    Ciphertext, CreateKey, DataKey, DecryptRequest, EncryptRequest, GenerateDataKey, KeyInfo,
    Plaintext, ScheduleDeletion, UpdateKey, MAX_ENCRYPT_PLAINTEXT,
};
use model::types::List;
use zeroize::Zeroize;

use crate::input::{b64, context, env_path, env_ref, read_material, unb64, write_raw, Ref};
use crate::output::{opt_t, print};
use crate::{CliError, Format, KeyCmd, Out};

const H: &[&str] = &[
    "key",
    "state",
    "version",
    "min decrypt",
    "rotation",
    "next rotation",
    "deletion",
    "description",
];

fn rows(items: &[KeyInfo]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|k| {
            vec![
                k.name.clone(),
                k.state.as_str().to_string(),
                k.current_version.to_string(),
                k.min_decrypt_version.to_string(),
                format!("{}d", k.rotation_days),
                opt_t(k.next_rotation_at),
                opt_t(k.deletion_at),
                k.description.clone(),
            ]
        })
        .collect()
}

fn show(out: &Out, k: &KeyInfo) -> Result<(), CliError> {
    print(out.output, k, H, rows(std::slice::from_ref(k)))
}

fn key(s: &str) -> Result<Ref, CliError> {
    Ref::parse(s, "key")
}

pub async fn run(c: &Client, cmd: KeyCmd) -> Result<(), CliError> {
    match cmd {
        KeyCmd::Create {
            key: k,
            rotation_days,
            description,
            out,
        } => {
            let r = key(&k)?;
            model::types::check_description(&description)?;
            let body = CreateKey {
                name: r.name.clone(),
                rotation_days,
                description,
            };
            let x: KeyInfo = c
                .post(&format!("{}/keys", env_path(&r.tenant, &r.env)), &body)
                .await?;
            show(&out, &x)
        }
        KeyCmd::List { env, out } => {
            let (tn, en) = env_ref(&env)?;
            let l: List<KeyInfo> = c.get(&format!("{}/keys", env_path(&tn, &en))).await?;
            print(out.output, &l, H, rows(&l.items))
        }
        KeyCmd::Show { key: k, out } => {
            let x: KeyInfo = c.get(&key(&k)?.path("keys")).await?;
            show(&out, &x)
        }
        KeyCmd::Rotate { key: k, out } => lifecycle(c, &k, "rotate", out).await,
        KeyCmd::Enable { key: k, out } => lifecycle(c, &k, "enable", out).await,
        KeyCmd::Disable { key: k, out } => lifecycle(c, &k, "disable", out).await,
        KeyCmd::CancelDeletion { key: k, out } => lifecycle(c, &k, "cancel-deletion", out).await,
        KeyCmd::ScheduleDeletion { key: k, days, out } => {
            let r = key(&k)?;
            let x: KeyInfo = c
                .post(
                    &format!("{}/schedule-deletion", r.path("keys")),
                    &ScheduleDeletion { days },
                )
                .await?;
            show(&out, &x)
        }
        KeyCmd::Set {
            key: k,
            rotation_days,
            min_decrypt_version,
            out,
        } => {
            let r = key(&k)?;
            if rotation_days.is_none() && min_decrypt_version.is_none() {
                return Err(CliError::usage(
                    "nothing to change: give --rotation-days or --min-decrypt-version",
                ));
            }
            let body = UpdateKey {
                rotation_days,
                min_decrypt_version,
            };
            let x: KeyInfo = c
                .post(&format!("{}/settings", r.path("keys")), &body)
                .await?;
            show(&out, &x)
        }
        KeyCmd::Encrypt {
            key: k,
            context: ctx,
            from_file,
            out,
        } => {
            let r = key(&k)?;
            let context = context(&ctx)?;
            let pt = read_material(
                from_file.as_deref(),
                MAX_ENCRYPT_PLAINTEXT,
                "plaintext",
                model::Code::InvalidArgument,
            )
                .map_err(|mut e| {
                    if e.message.contains("larger than") {
                        e.message.push_str(
                            " of key encrypt; encrypt larger data locally with a data key (key generate-data-key)",
                        );
                    }
                    e
                })?;
            let mut body = EncryptRequest {
                plaintext_b64: b64(&pt),
                context,
            };
            let res = c
                .post::<_, Ciphertext>(&format!("{}/encrypt", r.path("keys")), &body)
                .await;
            body.plaintext_b64.zeroize();
            let x = res?;
            match out.output {
                Format::Json => print(out.output, &x, &[], vec![]),
                Format::Table => {
                    println!("{}", x.ciphertext);
                    Ok(())
                }
            }
        }
        KeyCmd::Decrypt {
            key: k,
            ciphertext,
            context: ctx,
            out,
        } => {
            let r = key(&k)?;
            let context = context(&ctx)?;
            let ciphertext = if ciphertext == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut s)
                    .map_err(|e| CliError::usage(format!("cannot read stdin: {e}")))?;
                s.trim().to_string()
            } else {
                ciphertext.trim().to_string()
            };
            if ciphertext.is_empty() {
                return Err(crate::input::invalid("empty ciphertext"));
            }
            let x: Plaintext = c
                .post(
                    &format!("{}/decrypt", r.path("keys")),
                    &DecryptRequest {
                        ciphertext,
                        context,
                    },
                )
                .await?;
            let mut x = x;
            let res = match out.output {
                Format::Json => print(out.output, &x, &[], vec![]),
                Format::Table => {
                    unb64(&x.plaintext_b64, "plaintext_b64").and_then(|pt| write_raw(&pt))
                }
            };
            x.plaintext_b64.zeroize();
            res
        }
        KeyCmd::GenerateDataKey {
            key: k,
            bytes,
            context: ctx,
            out,
        } => {
            let r = key(&k)?;
            let body = GenerateDataKey {
                bytes: bytes
                    .map(|b| {
                        b.parse::<u32>()
                            .map_err(|_| crate::input::invalid("--bytes must be 16 or 32"))
                    })
                    .transpose()?,
                context: context(&ctx)?,
            };
            let mut x: DataKey = c
                .post(&format!("{}/generate-data-key", r.path("keys")), &body)
                .await?;
            let res = match out.output {
                Format::Json => print(out.output, &x, &[], vec![]),
                Format::Table => {
                    println!("plaintext_b64  {}", x.plaintext_b64);
                    println!("ciphertext     {}", x.ciphertext);
                    println!("key_version    {}", x.key_version);
                    Ok(())
                }
            };
            x.plaintext_b64.zeroize();
            res
        }
        KeyCmd::Rewrap {
            key: k,
            context: ctx,
        } => {
            let r = key(&k)?;
            let context = context(&ctx)?;
            let path = format!("{}/rewrap", r.path("keys"));
            for (i, line) in std::io::stdin().lock().lines().enumerate() {
                let line = line.map_err(|e| CliError::usage(format!("cannot read stdin: {e}")))?;
                let ct = line.trim();
                // A blank line stays blank, so output lines match input lines.
                if ct.is_empty() {
                    println!();
                    continue;
                }
                let x: Ciphertext = c
                    .post(
                        &path,
                        &DecryptRequest {
                            ciphertext: ct.to_string(),
                            context: context.clone(),
                        },
                    )
                    .await
                    .map_err(|e| {
                        let mut e = CliError::from(e);
                        e.message = format!("line {}: {}", i + 1, e.message);
                        e
                    })?;
                println!("{}", x.ciphertext);
            }
            Ok(())
        }
    }
}

async fn lifecycle(c: &Client, k: &str, op: &str, out: Out) -> Result<(), CliError> {
    let x: KeyInfo = c
        .post_empty(&format!("{}/{op}", key(k)?.path("keys")))
        .await?;
    show(&out, &x)
}
