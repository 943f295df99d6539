//! The client commands: each turns its arguments into typed values, makes one or two API
//! calls and prints the answer. Validation happens here too so that a typo fails before
//! any request is sent, but the server stays the authority.

use client::{q, Client};
use model::types::{
    Account, AuditEvent, CreateAccount, CreateEnvironment, CreateTenant, CreateToken, EnvKind,
    Environment, Grant, GrantRole, List, NewToken, Status, Tenant, TokenInfo, VerifyReport, Whoami,
};
use model::{Name, PrincipalName, Role, Scope};

use crate::output::{opt_t, print, t};
use crate::profile::{read_ca, read_token, Profile};
use crate::{
    AccountCmd, Args, AuditCmd, CliError, Command, EnvCmd, Format, RoleCmd, TenantCmd, TokenCmd,
    EXIT_AUDIT_BROKEN,
};

fn env_ref(s: &str) -> Result<(Name, Name), CliError> {
    match Scope::parse(s)? {
        Scope::Environment(t, e) => Ok((t, e)),
        _ => Err(CliError::usage(format!(
            "{s:?} is not an environment: use TENANT/ENV"
        ))),
    }
}

fn account_path(p: &PrincipalName) -> String {
    match &p.tenant {
        Some(t) => format!("/v1/tenants/{t}/accounts/{}", p.name),
        None => format!("/v1/accounts/{}", p.name),
    }
}

/// Parses a lifetime like `30d` or `12h` into seconds.
pub fn parse_ttl(s: &str) -> Result<u64, CliError> {
    let d = humantime::parse_duration(s)
        .map_err(|e| CliError::usage(format!("invalid duration {s:?}: {e} (use e.g. 30d, 12h)")))?;
    Ok(d.as_secs())
}

/// Runs a client command (everything but `up`).
/// Where `global` (flags, env, then the saved profile) says the control plane is.
pub fn endpoint(global: &crate::Global) -> Result<client::Endpoint, CliError> {
    Profile::load()?.resolve(global)
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let profile = Profile::load()?;
    if let Command::Login(_) = args.command {
        return login(&args, profile).await;
    }
    if let Command::SealStatus(_) | Command::Unseal(_) = args.command {
        // No token is needed (a sealed server cannot check one): none is sent.
        let mut ep = profile.resolve(&crate::Global {
            token: None,
            ..args.global.clone()
        })?;
        ep.token = None;
        let client = Client::new(&ep)?;
        return match args.command {
            Command::Unseal(out) => crate::seal::unseal(&client, out).await,
            Command::SealStatus(out) => crate::seal::status(&client, out).await,
            _ => Err(CliError::usage("internal: not a seal command")),
        };
    }
    let client = Client::new(&profile.resolve(&args.global)?)?;
    match args.command {
        Command::Up(_)
        | Command::Edge(_)
        | Command::Login(_)
        | Command::SealStatus(_)
        | Command::Unseal(_) => Err(CliError::usage("internal: not a client command")),
        Command::Status(out) => {
            let s: Status = client.get("/v1/status").await?;
            let c = &s.counts;
            let rows = vec![
                vec!["version".into(), s.version.clone()],
                vec!["store".into(), s.store.clone()],
                vec!["uptime".into(), format!("{}s", s.uptime_seconds)],
                vec!["tenants".into(), c.tenants.to_string()],
                vec!["environments".into(), c.environments.to_string()],
                vec!["accounts".into(), c.accounts.to_string()],
                vec!["tokens".into(), c.tokens.to_string()],
                vec!["role grants".into(), c.grants.to_string()],
                vec!["audit events".into(), c.audit_events.to_string()],
            ];
            print(out.output, &s, &["field", "value"], rows)
        }
        Command::Whoami(out) => {
            let w: Whoami = client.get("/v1/whoami").await?;
            let rows = w
                .roles
                .iter()
                .map(|r| {
                    vec![
                        w.principal.to_string(),
                        r.role.to_string(),
                        r.scope.to_string(),
                    ]
                })
                .collect();
            print(out.output, &w, &["principal", "role", "scope"], rows)
        }
        Command::Tenant(cmd) => tenant(&client, cmd).await,
        Command::Env(cmd) => env(&client, cmd).await,
        Command::Account(cmd) => account(&client, cmd).await,
        Command::Token(cmd) => token(&client, cmd).await,
        Command::Role(cmd) => role(&client, cmd).await,
        Command::Audit(cmd) => audit(&client, cmd).await,
        Command::Seal(out) => crate::seal::seal(&client, out).await,
        Command::Key(cmd) => crate::keys::run(&client, cmd).await,
        Command::Secret(cmd) => crate::secrets::run(&client, cmd).await,
        Command::Route(cmd) => crate::routes::run(&client, cmd).await,
        Command::Cert(cmd) => crate::certs::run(&client, cmd).await,
        Command::Replica(cmd) => crate::certs::run_replicas(&client, cmd).await,
        Command::Artifact(cmd) => crate::artifacts::run(&client, cmd).await,
        Command::Service(cmd) => crate::services::run(&client, cmd).await,
        Command::TlsPolicy(cmd) => crate::certs::tls_policy(&client, cmd).await,
        Command::Advisory(cmd) => crate::advisories::run(&client, cmd).await,
    }
}

async fn login(args: &Args, mut profile: Profile) -> Result<(), CliError> {
    let g = &args.global;
    if let Some(s) = &g.server {
        profile.server = Some(s.clone());
    }
    if let Some(tk) = &g.token {
        profile.token = Some(read_token(tk)?);
    }
    if let Some(ca) = &g.ca {
        profile.ca_pem = Some(read_ca(ca)?);
    }
    // Check the profile works before saving it.
    let client = Client::new(&profile.resolve(&crate::Global {
        server: None,
        token: None,
        ca: None,
    })?)?;
    let w: Whoami = client.get("/v1/whoami").await?;
    let path = profile.save()?;
    println!(
        "logged in to {} as {}; profile saved in {}",
        profile.server.as_deref().unwrap_or(""),
        w.principal,
        path.display()
    );
    Ok(())
}

fn tenant_rows(items: &[Tenant]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|x| vec![x.name.to_string(), t(x.created_at), x.created_by.clone()])
        .collect()
}

async fn tenant(c: &Client, cmd: TenantCmd) -> Result<(), CliError> {
    const H: &[&str] = &["name", "created", "created by"];
    match cmd {
        TenantCmd::Create { name, out } => {
            let body = CreateTenant {
                name: Name::parse(&name)?,
            };
            let x: Tenant = c.post("/v1/tenants", &body).await?;
            print(out.output, &x, H, tenant_rows(std::slice::from_ref(&x)))
        }
        TenantCmd::List(out) => {
            let l: List<Tenant> = c.get("/v1/tenants").await?;
            print(out.output, &l, H, tenant_rows(&l.items))
        }
        TenantCmd::Show { name, out } => {
            let n = Name::parse(&name)?;
            let x: Tenant = c.get(&format!("/v1/tenants/{n}")).await?;
            print(out.output, &x, H, tenant_rows(std::slice::from_ref(&x)))
        }
        TenantCmd::Delete { name } => {
            let n = Name::parse(&name)?;
            c.delete(&format!("/v1/tenants/{n}")).await?;
            println!("tenant {n} deleted");
            Ok(())
        }
    }
}

fn env_rows(items: &[Environment]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|x| {
            vec![
                format!("{}/{}", x.tenant, x.name),
                x.kind.as_str().to_string(),
                t(x.created_at),
                x.created_by.clone(),
            ]
        })
        .collect()
}

async fn env(c: &Client, cmd: EnvCmd) -> Result<(), CliError> {
    const H: &[&str] = &["environment", "kind", "created", "created by"];
    match cmd {
        EnvCmd::Create { env, kind, out } => {
            let (tn, en) = env_ref(&env)?;
            let body = CreateEnvironment {
                name: en,
                kind: EnvKind::parse(&kind)?,
            };
            let x: Environment = c
                .post(&format!("/v1/tenants/{tn}/environments"), &body)
                .await?;
            print(out.output, &x, H, env_rows(std::slice::from_ref(&x)))
        }
        EnvCmd::List { tenant, out } => {
            let tn = Name::parse(&tenant)?;
            let l: List<Environment> = c.get(&format!("/v1/tenants/{tn}/environments")).await?;
            print(out.output, &l, H, env_rows(&l.items))
        }
        EnvCmd::Show { env, out } => {
            let (tn, en) = env_ref(&env)?;
            let x: Environment = c
                .get(&format!("/v1/tenants/{tn}/environments/{en}"))
                .await?;
            print(out.output, &x, H, env_rows(std::slice::from_ref(&x)))
        }
        EnvCmd::Delete { env } => {
            let (tn, en) = env_ref(&env)?;
            c.delete(&format!("/v1/tenants/{tn}/environments/{en}"))
                .await?;
            println!("environment {tn}/{en} deleted");
            Ok(())
        }
    }
}

fn account_rows(items: &[Account]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|x| {
            vec![
                x.name.to_string(),
                x.description.clone(),
                t(x.created_at),
                x.created_by.clone(),
            ]
        })
        .collect()
}

async fn account(c: &Client, cmd: AccountCmd) -> Result<(), CliError> {
    const H: &[&str] = &["account", "description", "created", "created by"];
    match cmd {
        AccountCmd::Create {
            name,
            description,
            out,
        } => {
            let p = PrincipalName::parse(&name)?;
            let path = match &p.tenant {
                Some(tn) => format!("/v1/tenants/{tn}/accounts"),
                None => "/v1/accounts".to_string(),
            };
            let x: Account = c
                .post(
                    &path,
                    &CreateAccount {
                        name: p,
                        description,
                    },
                )
                .await?;
            print(out.output, &x, H, account_rows(std::slice::from_ref(&x)))
        }
        AccountCmd::List { tenant, out } => {
            let path = match tenant {
                Some(tn) => format!("/v1/tenants/{}/accounts", Name::parse(&tn)?),
                None => "/v1/accounts".into(),
            };
            let l: List<Account> = c.get(&path).await?;
            print(out.output, &l, H, account_rows(&l.items))
        }
        AccountCmd::Show { name, out } => {
            let p = PrincipalName::parse(&name)?;
            let x: Account = c.get(&account_path(&p)).await?;
            print(out.output, &x, H, account_rows(std::slice::from_ref(&x)))
        }
        AccountCmd::Delete { name } => {
            let p = PrincipalName::parse(&name)?;
            c.delete(&account_path(&p)).await?;
            println!("account {p} deleted");
            Ok(())
        }
    }
}

fn token_rows(items: &[TokenInfo]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|x| {
            let state = if x.revoked_at.is_some() {
                "revoked"
            } else {
                "active"
            };
            vec![
                x.id.clone(),
                x.account.to_string(),
                state.to_string(),
                t(x.created_at),
                opt_t(x.expires_at),
                x.description.clone(),
            ]
        })
        .collect()
}

async fn token(c: &Client, cmd: TokenCmd) -> Result<(), CliError> {
    const H: &[&str] = &[
        "id",
        "account",
        "state",
        "created",
        "expires",
        "description",
    ];
    match cmd {
        TokenCmd::Create {
            account,
            ttl,
            description,
            out,
        } => {
            let body = CreateToken {
                account: PrincipalName::parse(&account)?,
                ttl_seconds: parse_ttl(&ttl)?,
                description,
            };
            let x: NewToken = c.post("/v1/tokens", &body).await?;
            match out.output {
                Format::Json => print(out.output, &x, H, vec![]),
                Format::Table => {
                    println!("{}", x.token);
                    eprintln!(
                        "token {} for {} expires {}; it is shown only now, store it safely",
                        x.info.id,
                        x.info.account,
                        opt_t(x.info.expires_at)
                    );
                    Ok(())
                }
            }
        }
        TokenCmd::List { account, out } => {
            let path = match account {
                Some(a) => format!(
                    "/v1/tokens?account={}",
                    q(&PrincipalName::parse(&a)?.to_string())
                ),
                None => "/v1/tokens".into(),
            };
            let l: List<TokenInfo> = c.get(&path).await?;
            print(out.output, &l, H, token_rows(&l.items))
        }
        TokenCmd::Revoke { id } => {
            let x: TokenInfo = c
                .post_empty(&format!("/v1/tokens/{}/revoke", q(&id)))
                .await?;
            println!("token {} of {} revoked", x.id, x.account);
            Ok(())
        }
    }
}

async fn role(c: &Client, cmd: RoleCmd) -> Result<(), CliError> {
    match cmd {
        RoleCmd::Grant { role, to, on } => {
            let body = GrantRole {
                role: Role::parse(&role)?,
                principal: PrincipalName::parse(&to)?,
                scope: Scope::parse(&on)?,
            };
            let g: Grant = c.post("/v1/grants", &body).await?;
            println!("granted {} to {} on {}", g.role, g.principal, g.scope);
            Ok(())
        }
        RoleCmd::Revoke { role, from, on } => {
            let (r, p, s) = (
                Role::parse(&role)?,
                PrincipalName::parse(&from)?,
                Scope::parse(&on)?,
            );
            c.delete(&format!(
                "/v1/grants?role={r}&principal={}&scope={}",
                q(&p.to_string()),
                q(&s.to_string())
            ))
            .await?;
            println!("revoked {r} from {p} on {s}");
            Ok(())
        }
        RoleCmd::List { on, to, out } => {
            let mut params = Vec::new();
            if let Some(s) = on {
                params.push(format!("scope={}", q(&Scope::parse(&s)?.to_string())));
            }
            if let Some(p) = to {
                params.push(format!(
                    "principal={}",
                    q(&PrincipalName::parse(&p)?.to_string())
                ));
            }
            let path = if params.is_empty() {
                "/v1/grants".to_string()
            } else {
                format!("/v1/grants?{}", params.join("&"))
            };
            let l: List<Grant> = c.get(&path).await?;
            let rows = l
                .items
                .iter()
                .map(|g| {
                    vec![
                        g.role.to_string(),
                        g.principal.to_string(),
                        g.scope.to_string(),
                        t(g.created_at),
                        g.created_by.clone(),
                    ]
                })
                .collect();
            print(
                out.output,
                &l,
                &["role", "principal", "scope", "granted", "granted by"],
                rows,
            )
        }
    }
}

async fn audit(c: &Client, cmd: AuditCmd) -> Result<(), CliError> {
    match cmd {
        AuditCmd::List {
            tenant,
            principal,
            action,
            since,
            limit,
            after,
            out,
        } => {
            let mut params = vec![format!("limit={limit}")];
            if let Some(a) = after {
                params.push(format!("after={a}"));
            }
            if let Some(tn) = tenant {
                params.push(format!("tenant={}", Name::parse(&tn)?));
            }
            if let Some(p) = principal {
                params.push(format!("principal={}", q(&p)));
            }
            if let Some(a) = action {
                params.push(format!("action={}", q(&a)));
            }
            if let Some(s) = since {
                let at = match model::types::parse_time(&s) {
                    Ok(at) => at,
                    Err(_) => {
                        let d = humantime::parse_duration(&s).map_err(|_| {
                            CliError::usage(format!(
                                "invalid --since {s:?}: use RFC 3339 or a duration like 1h"
                            ))
                        })?;
                        time::OffsetDateTime::now_utc() - d
                    }
                };
                params.push(format!("since={}", q(&t(at))));
            }
            let l: List<AuditEvent> = c
                .get(&format!("/v1/audit/events?{}", params.join("&")))
                .await?;
            let rows = l
                .items
                .iter()
                .map(|e| {
                    vec![
                        e.seq.to_string(),
                        t(e.time),
                        e.principal.clone(),
                        e.action.clone(),
                        e.outcome.as_str().to_string(),
                        e.scope.clone(),
                        e.resource.clone(),
                        e.source.clone(),
                    ]
                })
                .collect();
            print(
                out.output,
                &l,
                &[
                    "seq",
                    "time",
                    "principal",
                    "action",
                    "outcome",
                    "scope",
                    "resource",
                    "source",
                ],
                rows,
            )
        }
        AuditCmd::Verify(out) => {
            let r: VerifyReport = c.get("/v1/audit/verify").await?;
            match out.output {
                Format::Json => print(out.output, &r, &[], vec![])?,
                Format::Table if r.intact => println!("chain intact: {} events", r.events),
                Format::Table => {}
            }
            if r.intact {
                Ok(())
            } else {
                Err(CliError {
                    exit_code: EXIT_AUDIT_BROKEN,
                    message: format!(
                        "chain broken: {}",
                        r.problem.unwrap_or_else(|| "unknown problem".into())
                    ),
                })
            }
        }
    }
}
