//! `gantry service ...`: deploys, status, history, rollback, scaling and logs.

use std::collections::BTreeMap;

use client::Client;
use model::services::{DeploySpec, RevisionInfo, Rollback, Scale, ServiceInfo};
use model::types::List;

use crate::input::{invalid, Ref};
use crate::output::{print, t};
use crate::{CliError, ServiceCmd};

const H: &[&str] = &[
    "service", "state", "replicas", "target", "stable", "running", "message",
];

fn rows(items: &[ServiceInfo]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|s| {
            let healthy = s.replicas.iter().filter(|r| r.healthy).count();
            vec![
                s.name.clone(),
                format!("{:?}", s.state).to_lowercase(),
                s.desired_replicas.to_string(),
                s.target_revision.to_string(),
                s.stable_revision
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                format!("{}/{} healthy", healthy, s.replicas.len()),
                s.message.clone().unwrap_or_default(),
            ]
        })
        .collect()
}

const RH: &[&str] = &[
    "revision", "artifact", "status", "deployed", "by", "message",
];

fn revision_rows(items: &[RevisionInfo]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|r| {
            vec![
                r.number.to_string(),
                r.spec.artifact.clone(),
                format!("{:?}", r.status).to_lowercase(),
                t(r.created_at),
                r.created_by.clone(),
                r.message.clone().unwrap_or_default(),
            ]
        })
        .collect()
}

fn pairs(flag: &str, items: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut out = BTreeMap::new();
    for p in items {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            invalid(format!(
                "invalid {flag} {:?}: use NAME=VALUE",
                model::name::truncate(p)
            ))
        })?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

pub async fn run(c: &Client, cmd: ServiceCmd) -> Result<(), CliError> {
    match cmd {
        ServiceCmd::Deploy {
            service,
            artifact,
            cmd,
            port_env,
            health,
            replicas,
            env,
            secrets,
            memory_mb,
            cpu_millis,
            max_surge,
            max_unavailable,
            health_deadline,
            routes,
            autoscale,
            out,
        } => {
            let r = Ref::parse(&service, "service")?;
            let command = runtime::split_command(&cmd).map_err(|e| invalid(e.to_string()))?;
            let (min, max) = match replicas.split_once("..") {
                Some((a, b)) => (a.parse().ok(), Some(b.parse().ok())),
                None => (replicas.parse().ok(), None),
            };
            let replicas = min.ok_or_else(|| invalid("invalid --replicas: use N or MIN..MAX"))?;
            let max_replicas = match max {
                Some(m) => Some(m.ok_or_else(|| invalid("invalid --replicas: use N or MIN..MAX"))?),
                None => None,
            };
            let deadline = humantime::parse_duration(&health_deadline)
                .map_err(|_| invalid("invalid --health-deadline: use e.g. 60s"))?;
            let spec = DeploySpec {
                artifact,
                command,
                port_env,
                health,
                replicas,
                max_replicas,
                env: pairs("--env", &env)?,
                secrets: pairs("--secret", &secrets)?,
                memory_mb,
                cpu_millis,
                max_surge,
                max_unavailable,
                health_deadline_secs: deadline.as_secs().max(1),
                grace_secs: 10,
                routes: routes
                    .iter()
                    .map(|r| model::services::DeployRoute::parse(r))
                    .collect::<Result<_, _>>()?,
                autoscale: autoscale
                    .as_deref()
                    .map(model::services::AutoscaleSpec::parse)
                    .transpose()?,
            };
            spec.validate()?;
            let x: RevisionInfo = c
                .post(&format!("{}/deploy", r.path("services")), &spec)
                .await?;
            print(out.output, &x, RH, revision_rows(std::slice::from_ref(&x)))
        }
        ServiceCmd::List { env, out } => {
            let (tn, en) = crate::input::env_ref(&env)?;
            let l: List<ServiceInfo> = c
                .get(&format!("{}/services", crate::input::env_path(&tn, &en)))
                .await?;
            print(out.output, &l, H, rows(&l.items))
        }
        ServiceCmd::Status { service, out } => {
            let r = Ref::parse(&service, "service")?;
            let x: ServiceInfo = c.get(&r.path("services")).await?;
            let mut table = rows(std::slice::from_ref(&x));
            for rep in &x.replicas {
                table.push(vec![
                    format!("  {}", rep.id),
                    rep.state.clone(),
                    String::new(),
                    rep.revision.to_string(),
                    String::new(),
                    if rep.healthy {
                        "healthy".into()
                    } else {
                        "not ready".into()
                    },
                    format!(
                        "port {} restarts {}{}",
                        rep.port.map(|p| p.to_string()).unwrap_or_default(),
                        rep.restarts,
                        match (&rep.isolation, rep.uid) {
                            (Some(i), Some(uid)) => format!(" {i} uid {uid}"),
                            (Some(i), None) => format!(" {i}"),
                            _ => String::new(),
                        }
                    ),
                ]);
            }
            for ev in &x.events {
                table.push(vec![
                    format!("  {}", crate::output::t(ev.time)),
                    ev.action.clone(),
                    String::new(),
                    String::new(),
                    String::new(),
                    ev.outcome.clone(),
                    format!("{} {}", ev.principal, ev.detail),
                ]);
            }
            print(out.output, &x, H, table)
        }
        ServiceCmd::History { service, out } => {
            let r = Ref::parse(&service, "service")?;
            let l: List<RevisionInfo> = c.get(&format!("{}/revisions", r.path("services"))).await?;
            print(out.output, &l, RH, revision_rows(&l.items))
        }
        ServiceCmd::Rollback { service, to, out } => {
            let r = Ref::parse(&service, "service")?;
            let x: ServiceInfo = c
                .post(
                    &format!("{}/rollback", r.path("services")),
                    &Rollback { to },
                )
                .await?;
            print(out.output, &x, H, rows(std::slice::from_ref(&x)))
        }
        ServiceCmd::Scale {
            service,
            replicas,
            out,
        } => {
            let r = Ref::parse(&service, "service")?;
            let x: ServiceInfo = c
                .post(
                    &format!("{}/scale", r.path("services")),
                    &Scale { replicas },
                )
                .await?;
            print(out.output, &x, H, rows(std::slice::from_ref(&x)))
        }
        ServiceCmd::Stop { service, out } => set_running(c, &service, "stop", out).await,
        ServiceCmd::Start { service, out } => set_running(c, &service, "start", out).await,
        ServiceCmd::Delete { service } => {
            let r = Ref::parse(&service, "service")?;
            c.delete(&r.path("services")).await?;
            println!("service {r} deleted (its replicas are being drained and stopped)");
            Ok(())
        }
        ServiceCmd::Logs {
            service,
            replica,
            lines,
            follow,
        } => {
            let r = Ref::parse(&service, "service")?;
            let mut path = format!("{}/logs?lines={lines}", r.path("services"));
            if let Some(i) = replica {
                path.push_str(&format!("&replica={i}"));
            }
            // Lines carry their replica and a nanosecond timestamp: a line printed once is
            // recognised on the next poll (the memory is bounded).
            let mut seen = std::collections::HashSet::new();
            let mut order = std::collections::VecDeque::new();
            loop {
                let l: List<String> = c.get(&path).await?;
                for line in l.items {
                    if seen.insert(line.clone()) {
                        println!("{line}");
                        order.push_back(line);
                        if order.len() > 100_000 {
                            if let Some(old) = order.pop_front() {
                                seen.remove(&old);
                            }
                        }
                    }
                }
                if !follow {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

async fn set_running(
    c: &Client,
    service: &str,
    verb: &str,
    out: crate::Out,
) -> Result<(), CliError> {
    let r = Ref::parse(service, "service")?;
    let x: ServiceInfo = c
        .post_empty(&format!("{}/{verb}", r.path("services")))
        .await?;
    print(out.output, &x, H, rows(std::slice::from_ref(&x)))
}
