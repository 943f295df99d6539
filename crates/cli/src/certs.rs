//! `gantry cert ...` and `gantry replica ...`: the edge's certificates and the replicas of
//! services. A private key is read from its file and sent once; it is never printed.

use client::Client;
use model::certs::{
    AddCert, CertInfo, Challenge, IssueCert, Issuer, RegisterReplica, ReplicaInfo, ReplicaState,
    UpdateReplica,
};
use model::types::List;
use model::Code;

use crate::input::{env_path, env_ref, invalid, read_material, Ref};
use crate::output::{print, t};
use crate::{CertCmd, CliError, ReplicaCmd, TlsPolicyCmd};

const H: &[&str] = &[
    "certificate",
    "domains",
    "source",
    "status",
    "expires",
    "renews",
    "note",
];

fn rows(items: &[CertInfo]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|c| {
            let when = |x: Option<time::OffsetDateTime>| x.map(t).unwrap_or_else(|| "-".into());
            let mut note: Vec<String> = c.status_message.iter().cloned().collect();
            note.extend(c.warnings.iter().cloned());
            vec![
                c.name.clone(),
                c.domains.join(","),
                format!("{:?}", c.source).to_lowercase(),
                format!("{:?}", c.status).to_lowercase(),
                when(c.not_after),
                when(c.renew_at),
                note.join("; "),
            ]
        })
        .collect()
}

fn pem(path: &std::path::Path, what: &str) -> Result<String, CliError> {
    let bytes = read_material(
        Some(path),
        model::certs::MAX_PEM,
        what,
        Code::PayloadTooLarge,
    )?;
    String::from_utf8(bytes.to_vec()).map_err(|_| invalid(format!("the {what} is not PEM text")))
}

pub async fn run(c: &Client, cmd: CertCmd) -> Result<(), CliError> {
    match cmd {
        CertCmd::Add {
            cert,
            cert_file,
            key_file,
            out,
        } => {
            let r = Ref::parse(&cert, "certificate")?;
            let body = AddCert {
                name: r.name.clone(),
                cert_pem: pem(&cert_file, "certificate")?,
                key_pem: pem(&key_file, "private key")?,
            };
            let path = format!("{}/certificates", env_path(&r.tenant, &r.env));
            let x: CertInfo = c.post(&path, &body).await?;
            warn(&x);
            print(out.output, &x, H, rows(std::slice::from_ref(&x)))
        }
        CertCmd::Issue {
            cert,
            domains,
            issuer,
            challenge,
            out,
        } => {
            let r = Ref::parse(&cert, "certificate")?;
            let issuer = match issuer.as_str() {
                "internal" => Issuer::Internal,
                "acme" => Issuer::Acme,
                o => {
                    return Err(invalid(format!(
                        "invalid --issuer {o:?}: use internal or acme"
                    )))
                }
            };
            let challenge = match challenge.as_str() {
                "http-01" => Challenge::Http01,
                "dns-01" => Challenge::Dns01,
                o => {
                    return Err(invalid(format!(
                        "invalid --challenge {o:?}: use http-01 or dns-01"
                    )))
                }
            };
            let body = IssueCert {
                name: r.name.clone(),
                domains,
                issuer,
                challenge,
            };
            body.validate()?;
            let path = format!("{}/certificates/issue", env_path(&r.tenant, &r.env));
            let x: CertInfo = c.post(&path, &body).await?;
            warn(&x);
            print(out.output, &x, H, rows(std::slice::from_ref(&x)))
        }
        CertCmd::List { env, out } => {
            let (tn, en) = env_ref(&env)?;
            let l: List<CertInfo> = c
                .get(&format!("{}/certificates", env_path(&tn, &en)))
                .await?;
            print(out.output, &l, H, rows(&l.items))
        }
        CertCmd::Show { cert, out } => {
            let r = Ref::parse(&cert, "certificate")?;
            let x: CertInfo = c.get(&r.path("certificates")).await?;
            print(out.output, &x, H, rows(std::slice::from_ref(&x)))
        }
        CertCmd::Renew { cert, out } => {
            let r = Ref::parse(&cert, "certificate")?;
            let x: CertInfo = c
                .post_empty(&format!("{}/renew", r.path("certificates")))
                .await?;
            print(out.output, &x, H, rows(std::slice::from_ref(&x)))
        }
        CertCmd::Delete { cert } => {
            let r = Ref::parse(&cert, "certificate")?;
            c.delete(&r.path("certificates")).await?;
            println!("certificate {r} deleted");
            Ok(())
        }
    }
}

/// Advice from the server (wildcards) goes to stderr, so `-o json` stays parseable.
fn warn(c: &CertInfo) {
    for w in &c.warnings {
        eprintln!("warning: {w}");
    }
}

const RH: &[&str] = &["service", "address", "state", "registered", "by"];

fn replica_rows(items: &[ReplicaInfo]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|r| {
            vec![
                r.service.clone(),
                r.address.clone(),
                format!("{:?}", r.state).to_lowercase(),
                t(r.registered_at),
                r.registered_by.clone(),
            ]
        })
        .collect()
}

fn address(a: &str) -> Result<String, CliError> {
    Ok(model::certs::validate_replica_address(a)?.to_string())
}

pub async fn run_replicas(c: &Client, cmd: ReplicaCmd) -> Result<(), CliError> {
    let base = |s: &str| -> Result<(Ref, String), CliError> {
        let r = Ref::parse(s, "service")?;
        let p = format!("{}/replicas", r.path("services"));
        Ok((r, p))
    };
    match cmd {
        ReplicaCmd::List { service, out } => {
            let (_, p) = base(&service)?;
            let l: List<ReplicaInfo> = c.get(&p).await?;
            print(out.output, &l, RH, replica_rows(&l.items))
        }
        ReplicaCmd::Register {
            service,
            address: a,
            out,
        } => {
            let (_, p) = base(&service)?;
            let body = RegisterReplica {
                address: address(&a)?,
                state: ReplicaState::Active,
            };
            let x: ReplicaInfo = c.post(&p, &body).await?;
            print(out.output, &x, RH, replica_rows(std::slice::from_ref(&x)))
        }
        ReplicaCmd::Drain {
            service,
            address: a,
            out,
        } => set_state(c, &base(&service)?.1, &a, ReplicaState::Draining, out).await,
        ReplicaCmd::Activate {
            service,
            address: a,
            out,
        } => set_state(c, &base(&service)?.1, &a, ReplicaState::Active, out).await,
        ReplicaCmd::Deregister {
            service,
            address: a,
        } => {
            let (_, p) = base(&service)?;
            c.delete(&format!("{p}/{}", address(&a)?)).await?;
            println!("replica {a} of {service} deregistered (drained)");
            Ok(())
        }
    }
}

async fn set_state(
    c: &Client,
    replicas: &str,
    a: &str,
    state: ReplicaState,
    out: crate::Out,
) -> Result<(), CliError> {
    let x: ReplicaInfo = c
        .put(
            &format!("{replicas}/{}", address(a)?),
            &UpdateReplica { state },
        )
        .await?;
    print(out.output, &x, RH, replica_rows(std::slice::from_ref(&x)))
}

/// `gantry tls-policy show|set`.
pub async fn tls_policy(c: &Client, cmd: TlsPolicyCmd) -> Result<(), CliError> {
    use model::certs::{EdgeSettings, HttpsPolicy};
    let show = |s: &EdgeSettings| {
        vec![vec![s
            .https_policy
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| {
                "default (each edge's --https-policy)".into()
            })]]
    };
    match cmd {
        TlsPolicyCmd::Show(out) => {
            let s: EdgeSettings = c.get("/v1/edge/settings").await?;
            print(out.output, &s, &["https policy"], show(&s))
        }
        TlsPolicyCmd::Set { policy, out } => {
            let https_policy = match policy.as_str() {
                "default" => None,
                p => Some(HttpsPolicy::parse(p)?),
            };
            let s: EdgeSettings = c
                .put("/v1/edge/settings", &EdgeSettings { https_policy })
                .await?;
            print(out.output, &s, &["https policy"], show(&s))
        }
    }
}
