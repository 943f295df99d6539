//! `gantry seal-status`, `gantry seal` and `gantry unseal`.
//!
//! The unseal passphrase or PIN is read from GANTRY_UNSEAL_SECRET or the first line of
//! stdin, never from an argument; it is sent only in the unseal request's body.

use client::Client;
use model::kms::{SealStatus, Unseal};

use crate::input::read_secret_line;
use crate::output::print;
use crate::{CliError, Format, Out};

/// The env variable an unseal secret may come from (for automation).
pub const UNSEAL_ENV: &str = "GANTRY_UNSEAL_SECRET";

fn rows(s: &SealStatus) -> Vec<Vec<String>> {
    vec![
        vec!["sealed".into(), if s.sealed { "yes" } else { "no" }.into()],
        vec!["seal".into(), s.seal.clone()],
    ]
}

pub async fn status(c: &Client, out: Out) -> Result<(), CliError> {
    let s: SealStatus = c.get("/v1/sys/seal-status").await?;
    print(out.output, &s, &["field", "value"], rows(&s))
}

pub async fn seal(c: &Client, out: Out) -> Result<(), CliError> {
    let s: SealStatus = c.post_empty("/v1/sys/seal").await?;
    match out.output {
        Format::Json => print(out.output, &s, &[], vec![]),
        Format::Table => {
            println!("sealed: every request is refused until `gantry unseal`");
            Ok(())
        }
    }
}

pub async fn unseal(c: &Client, out: Out) -> Result<(), CliError> {
    let before: SealStatus = c.get("/v1/sys/seal-status").await?;
    let was_sealed = before.sealed;
    let s = if !was_sealed {
        before
    } else {
        // The file seal re-reads its key file: there is nothing to ask for.
        let secret = if before.seal == "file" {
            zeroize::Zeroizing::new(String::new())
        } else {
            let what = if before.seal == "pkcs11" {
                "HSM PIN"
            } else {
                "passphrase"
            };
            let secret = match std::env::var(UNSEAL_ENV).ok().filter(|v| !v.is_empty()) {
                Some(v) => zeroize::Zeroizing::new(v),
                None => read_secret_line(&format!("unseal {what}"))?,
            };
            if secret.is_empty() {
                return Err(CliError::usage(format!(
                    "no {what}: give it on stdin (first line) or in {UNSEAL_ENV}"
                )));
            }
            secret
        };
        let mut body = Unseal {
            secret: secret.to_string(),
        };
        let r = c.post::<_, SealStatus>("/v1/sys/unseal", &body).await;
        zeroize::Zeroize::zeroize(&mut body.secret);
        r?
    };
    match out.output {
        Format::Json => print(out.output, &s, &[], vec![]),
        Format::Table => {
            if was_sealed {
                println!("unsealed ({} seal)", s.seal);
            } else {
                println!("not sealed ({} seal): nothing to do", s.seal);
            }
            Ok(())
        }
    }
}
