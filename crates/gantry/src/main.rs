//! `gantry`: one binary for the whole product. This file only parses flags into typed
//! configuration, builds the parts and runs them; everything else lives in the crates
//! (see ARCHITECTURE.md).

use std::process::ExitCode;

mod allocator;
mod log;
mod logfmt;

use clap::Parser;
use cli::{Args, Command, EdgeArgs, EdgeListen, LogFormat, SealKind, UpArgs};

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match args.command {
        Command::Up(ref up) => match rt.block_on(up_main(up.clone())) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Edge(ref e) => match rt.block_on(edge_main(&args.global, e.clone())) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        _ => match rt.block_on(cli::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code.clamp(1, 255) as u8)
            }
        },
    }
}

/// Logs go to stderr through `log::Sink`'s writer thread, so a request's log line (the edge
/// and the API write one per request) never waits on a write(2) on the serving thread. Keep
/// the returned sink alive: dropping it writes what is queued.
fn init_logging(format: LogFormat) -> anyhow::Result<log::Sink> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let stderr = std::io::stderr();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stderr);
    let (sink, writer) = log::Sink::start(stderr, Some(fd))?;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text if terminal => builder.init(),
        LogFormat::Text => builder.event_format(logfmt::Plain).init(),
    }
    Ok(sink)
}

async fn up_main(up: UpArgs) -> anyhow::Result<()> {
    let _log_sink = init_logging(up.log_format)?;
    let started = std::time::Instant::now();
    let mut config = api::Config::new(up.data.clone(), up.api);
    config.store_url = up.store.clone();
    config.tls_names = up.tls_names.clone();
    config.rotation_interval = up.rotation_check;
    config.seal = Some(seal_setup(&up));
    config.certs = certs_config(&up)?;
    config.renew_interval = up.renew_check;
    config.objects = up.objects.clone();
    if !(up.autoscale_cpu > 0.0 && up.autoscale_cpu <= 64.0) {
        anyhow::bail!("--autoscale-cpu must be between 0 and 64 cores");
    }
    config.autoscale = services::AutoscaleConfig {
        target_cpu: up.autoscale_cpu,
        cooldown: up.autoscale_cooldown,
    };
    config.isolation = match up.isolation {
        cli::Isolation::Auto => api::IsolationChoice::Auto,
        cli::Isolation::Bubblewrap => api::IsolationChoice::Bubblewrap,
        cli::Isolation::Users => api::IsolationChoice::Users,
        cli::Isolation::None => api::IsolationChoice::None,
    };
    config.tenant_uids = up.tenant_uids;
    let running = api::start(config).await?;
    let edge_config = edge_config(&up.edge, std::time::Duration::from_millis(250));
    let source = std::sync::Arc::new(edge::Local {
        store: running.store.clone(),
        certs: running.certs.clone(),
    });
    let edge = edge::start(source, edge_config).await?;
    running
        .services
        .set_load_gauge(std::sync::Arc::new(EdgeLoad(vec![
            edge.public.clone(),
            edge.internal_proxy.clone(),
        ])));
    if let Some(token) = &running.admin_token {
        // Printed once, on the very first start; also in <data>/admin.token (0600).
        println!(
            "first start: admin token (also in {}):",
            up.data.join("admin.token").display()
        );
        println!("{token}");
    }
    let show =
        |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "off".into());
    tracing::info!(
        api = %format!("https://{}", running.addr),
        edge_https = %show(edge.public_https),
        edge_http = %show(edge.public_http),
        edge_internal = %show(edge.internal),
        store = %running.store_description,
        isolation = %running.isolation,
        ca = %up.data.join("ca.pem").display(),
        ready_ms = started.elapsed().as_millis() as u64,
        "gantry is ready"
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    edge.shutdown().await;
    running.shutdown().await;
    Ok(())
}

/// `gantry edge`: the edge alone, its state from a remote control plane.
/// The edge's in-flight counts, for the services autoscaler.
struct EdgeLoad(Vec<std::sync::Arc<proxy::Proxy>>);

impl services::LoadGauge for EdgeLoad {
    fn in_flight(&self) -> std::collections::HashMap<std::net::SocketAddr, usize> {
        let mut out = std::collections::HashMap::new();
        for p in &self.0 {
            for (addr, n) in p.table().in_flight_by_addr() {
                *out.entry(addr).or_insert(0) += n;
            }
        }
        out
    }
}

async fn edge_main(global: &cli::Global, args: EdgeArgs) -> anyhow::Result<()> {
    let _log_sink = init_logging(args.log_format)?;
    let ep = cli::endpoint(global).map_err(|e| anyhow::anyhow!("{e}"))?;
    let server = ep.server.clone();
    let client = client::Client::new(&ep)?;
    let source = std::sync::Arc::new(edge::Remote::new(client));
    let edge = edge::start(source, edge_config(&args.listen, args.poll)).await?;
    let show =
        |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "off".into());
    tracing::info!(
        control_plane = %server,
        edge_https = %show(edge.public_https),
        edge_http = %show(edge.public_http),
        edge_internal = %show(edge.internal),
        "gantry edge is ready"
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    edge.shutdown().await;
    Ok(())
}

fn edge_config(l: &EdgeListen, poll: std::time::Duration) -> edge::EdgeConfig {
    edge::EdgeConfig {
        public_http: l.http.0,
        public_https: l.https.0,
        https_policy: tls::TlsPolicy::parse(&l.https_policy).unwrap_or(tls::TlsPolicy::Compatible),
        internal: l.internal.0,
        poll,
        access_log: l.access_log == "on",
        pin_workers: l.edge_cpu_affinity == "auto",
        workers: l.edge_workers.map(usize::from),
    }
}

/// Certificate settings from the flags (the ACME CA file is read here).
fn certs_config(up: &UpArgs) -> anyhow::Result<certs::CertsConfig> {
    let acme = match &up.acme_directory {
        None => None,
        Some(url) => {
            let ca_pem = match &up.acme_ca {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| anyhow::anyhow!("--acme-ca {}: {e}", p.display()))?,
                ),
                None => None,
            };
            Some(certs::AcmeConfig {
                directory_url: url.clone(),
                ca_pem,
                contact_email: up.acme_email.clone(),
                dns_webhook: up.acme_dns_webhook.clone(),
            })
        }
    };
    Ok(certs::CertsConfig {
        acme,
        renew_before: up.renew_before,
        retry_after: up.renew_retry,
    })
}

/// Reads a secret from the environment and removes it, so no child process inherits it.
fn take_env(name: &str) -> Option<String> {
    let v = std::env::var(name).ok().filter(|v| !v.is_empty());
    std::env::remove_var(name);
    v
}

fn seal_setup(up: &UpArgs) -> secrets::SealSetup {
    match up.seal {
        SealKind::File => secrets::SealSetup::File {
            key_path: up.data.join("seal.key"),
        },
        SealKind::Passphrase => secrets::SealSetup::Passphrase {
            initial: take_env("GANTRY_SEAL_PASSPHRASE"),
            params: Default::default(),
        },
        SealKind::Pkcs11 => secrets::SealSetup::Pkcs11 {
            slot: keys::seal::Pkcs11Slot {
                module: up.pkcs11_module.clone(),
                token_label: up.pkcs11_token.clone(),
            },
            key_label: up.pkcs11_key_label.clone(),
            pin: take_env("GANTRY_PKCS11_PIN"),
        },
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
