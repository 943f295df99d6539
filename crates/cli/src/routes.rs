//! `gantry route ...`: the edge's routes. Arguments are checked here (so a typo fails
//! before any request) with the same validation the server applies.

use client::Client;
use model::routes::{
    BalancerKind, CreateRoute, HeaderRuleSpec, HealthCheckSpec, Listener, PathKind, RouteInfo,
    RouteSpec, Target, UpstreamProtocol,
};
use model::types::List;

use crate::input::{env_path, env_ref, invalid, Ref};
use crate::output::{print, t};
use crate::{CliError, RouteCmd};

const H: &[&str] = &[
    "route",
    "listener",
    "host",
    "path",
    "to",
    "created",
    "created by",
];

fn rows(items: &[RouteInfo]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|r| {
            let path = match r.spec.path_kind {
                PathKind::Prefix => format!("{}*", r.spec.path),
                PathKind::Exact => r.spec.path.clone(),
            };
            let to = match &r.spec.to {
                Target::Upstream(a) => format!("upstream:{}", a.join(",")),
                Target::Service(s) => format!("service:{s}"),
            };
            let listener = match r.spec.listener {
                Listener::Public => "public",
                Listener::Internal => "internal",
            };
            vec![
                r.name.clone(),
                listener.into(),
                r.spec.host.clone(),
                path,
                to,
                t(r.created_at),
                r.created_by.clone(),
            ]
        })
        .collect()
}

/// A duration flag (`30s`, `500ms`) in milliseconds.
fn millis(flag: &str, s: &str) -> Result<u64, CliError> {
    humantime::parse_duration(s)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| CliError::usage(format!("invalid {flag} {s:?}: use e.g. 5s or 500ms")))
}

/// `upstream:A,B` or `service:NAME`.
fn target(s: &str) -> Result<Target, CliError> {
    match s.split_once(':') {
        Some(("upstream", list)) => Ok(Target::Upstream(
            list.split(',').map(|a| a.trim().to_string()).collect(),
        )),
        Some(("service", name)) => Ok(Target::Service(model::Name::parse(name)?)),
        _ => Err(invalid(format!(
            "invalid --to {:?}: use upstream:IP:PORT[,IP:PORT...] or service:NAME",
            model::name::truncate(s)
        ))),
    }
}

fn header_rules(set: &[String], remove: &[String]) -> Result<HeaderRuleSpec, CliError> {
    let mut rules = HeaderRuleSpec {
        remove: remove.to_vec(),
        ..Default::default()
    };
    for p in set {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            invalid(format!(
                "invalid header {:?}: use NAME=VALUE",
                model::name::truncate(p)
            ))
        })?;
        rules.set.insert(k.to_ascii_lowercase(), v.to_string());
    }
    Ok(rules)
}

pub async fn run(c: &Client, cmd: RouteCmd) -> Result<(), CliError> {
    match cmd {
        RouteCmd::Create {
            route,
            host,
            path,
            exact,
            strip_prefix,
            to,
            listener,
            balancer,
            timeout,
            max_body,
            set_header,
            remove_header,
            set_response_header,
            remove_response_header,
            health,
            health_interval,
            health_timeout,
            healthy_threshold,
            unhealthy_threshold,
            allow_http,
            upstream_protocol,
            out,
        } => {
            let r = Ref::parse(&route, "route")?;
            let listener = match listener.as_str() {
                "public" => Listener::Public,
                "internal" => Listener::Internal,
                other => {
                    return Err(invalid(format!(
                        "invalid --listener {other:?}: use public or internal"
                    )))
                }
            };
            let balancer = match balancer.as_str() {
                "least-outstanding" => BalancerKind::LeastOutstanding,
                "round-robin" => BalancerKind::RoundRobin,
                other => {
                    return Err(invalid(format!(
                        "invalid --balancer {other:?}: use least-outstanding or round-robin"
                    )))
                }
            };
            let upstream_protocol = match upstream_protocol.as_str() {
                "http1" => UpstreamProtocol::Http1,
                "h2c" => UpstreamProtocol::H2c,
                other => {
                    return Err(invalid(format!(
                        "invalid --upstream-protocol {other:?}: use http1 or h2c"
                    )))
                }
            };
            let timeout_ms = timeout.map(|s| millis("--timeout", &s)).transpose()?;
            let health = match health {
                Some(path) => Some(HealthCheckSpec {
                    path,
                    interval_ms: millis("--health-interval", &health_interval)?,
                    timeout_ms: millis("--health-timeout", &health_timeout)?,
                    healthy_threshold,
                    unhealthy_threshold,
                }),
                None => None,
            };
            let spec = RouteSpec {
                host,
                path,
                path_kind: if exact {
                    PathKind::Exact
                } else {
                    PathKind::Prefix
                },
                strip_prefix,
                to: target(&to)?,
                listener,
                balancer,
                timeout_ms,
                max_body,
                request_headers: header_rules(&set_header, &remove_header)?,
                response_headers: header_rules(&set_response_header, &remove_response_header)?,
                health,
                allow_http,
                upstream_protocol,
            };
            spec.validate()?;
            let body = CreateRoute {
                name: r.name.clone(),
                spec,
            };
            let path = format!("{}/routes", env_path(&r.tenant, &r.env));
            let x: RouteInfo = c.post(&path, &body).await?;
            print(out.output, &x, H, rows(std::slice::from_ref(&x)))
        }
        RouteCmd::List { env, out } => {
            let (tn, en) = env_ref(&env)?;
            let l: List<RouteInfo> = c.get(&format!("{}/routes", env_path(&tn, &en))).await?;
            print(out.output, &l, H, rows(&l.items))
        }
        RouteCmd::Show { route, out } => {
            let r = Ref::parse(&route, "route")?;
            let x: RouteInfo = c.get(&r.path("routes")).await?;
            print(out.output, &x, H, rows(std::slice::from_ref(&x)))
        }
        RouteCmd::Delete { route } => {
            let r = Ref::parse(&route, "route")?;
            c.delete(&r.path("routes")).await?;
            println!("route {r} deleted");
            Ok(())
        }
    }
}
