//! The `gantry` command line: flag parsing (clap) into typed commands, and the client
//! commands, which talk to the control API and nothing else.
//!
//! Every failure ends as one line on stderr and an exit code from the shared code table.
//! A token is never printed except by `token create` (once, by design) and never appears in
//! an error message. Secret values, plaintexts and unseal secrets are read from stdin or a
//! file, never from an argument, and are printed only by `secret get`, `key decrypt` and
//! `key generate-data-key`.

mod advisories;
mod artifacts;
mod certs;
mod commands;
mod input;
mod keys;
mod output;
mod profile;
mod routes;
mod seal;
mod secrets;
mod services;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};

pub use commands::{endpoint, run};
pub use profile::Profile;

/// A CLI failure: a one-line reason and the process exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub exit_code: i32,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            exit_code: 2,
            message: message.into(),
        }
    }
}

impl From<client::ClientError> for CliError {
    fn from(e: client::ClientError) -> CliError {
        CliError {
            exit_code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

impl From<model::Invalid> for CliError {
    fn from(e: model::Invalid) -> CliError {
        CliError {
            exit_code: e.code.exit_code(),
            message: e.message,
        }
    }
}

/// Exit code of `gantry audit verify` when the chain is broken.
pub const EXIT_AUDIT_BROKEN: i32 = 12;

#[derive(Debug, Parser)]
#[command(
    name = "gantry",
    version,
    about = "Gantry: a self-hosted platform for integration services and robots"
)]
pub struct Args {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the client commands connect. Flags win over env, env wins over the saved profile.
#[derive(Debug, Clone, ClapArgs)]
pub struct Global {
    /// Control API URL, e.g. https://127.0.0.1:7443
    #[arg(long, global = true, env = "GANTRY_SERVER")]
    pub server: Option<String>,
    /// API token, or @FILE to read it from a file
    #[arg(long, global = true, env = "GANTRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed the server's certificate
    #[arg(long, global = true, env = "GANTRY_CA")]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct Out {
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane on embedded defaults (SQLite and files in --data)
    Up(UpArgs),
    /// Run the edge alone against a remote control plane (a second edge machine); the
    /// token needs `edge-config read-value` on the platform (an operator or admin)
    Edge(EdgeArgs),
    /// Save the server, token and CA in the CLI profile (mode 0600)
    Login(LoginArgs),
    /// Show the server's version, store, uptime and counts
    Status(Out),
    /// Show who the token belongs to and its roles
    Whoami(Out),
    /// Manage tenants
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage environments (TENANT/ENV)
    #[command(subcommand)]
    Env(EnvCmd),
    /// Manage accounts: platform (NAME) and tenant service accounts (TENANT/NAME)
    #[command(subcommand)]
    Account(AccountCmd),
    /// Manage API tokens
    #[command(subcommand)]
    Token(TokenCmd),
    /// Grant, revoke and list roles
    #[command(subcommand)]
    Role(RoleCmd),
    /// Read and verify the audit trail
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Show whether the server is sealed (no token needed)
    SealStatus(Out),
    /// Seal the server: it forgets the root key and refuses everything until unsealed
    Seal(Out),
    /// Unseal with the passphrase or HSM PIN, read from stdin (first line) or
    /// GANTRY_UNSEAL_SECRET; never from an argument (no token needed)
    Unseal(Out),
    /// KMS keys of an environment (TENANT/ENV/NAME): lifecycle, encrypt and decrypt
    #[command(subcommand)]
    Key(KeyCmd),
    /// Secrets of an environment (TENANT/ENV/NAME); values come from stdin or a file only
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Routes of the edge (TENANT/ENV/NAME): host and path to upstreams or a service
    #[command(subcommand)]
    Route(RouteCmd),
    /// TLS certificates of the edge (TENANT/ENV/NAME): added, or issued by the internal CA
    /// or ACME and renewed automatically
    #[command(subcommand)]
    Cert(CertCmd),
    /// Replicas of a service (TENANT/ENV/SERVICE) that the edge routes `service:NAME` to
    #[command(subcommand)]
    Replica(ReplicaCmd),
    /// The artifact registry (TENANT/NAME@VERSION): what services run
    #[command(subcommand)]
    Artifact(ArtifactCmd),
    /// Services (TENANT/ENV/NAME): deploys, rollouts, rollback, scaling, logs
    #[command(subcommand)]
    Service(ServiceCmd),
    /// The TLS policy of every edge's HTTPS listener, changed without a restart
    #[command(subcommand)]
    TlsPolicy(TlsPolicyCmd),
    /// The offline vulnerability database (OSV records) artifacts are scanned against
    #[command(subcommand)]
    Advisory(AdvisoryCmd),
}

#[derive(Debug, Subcommand)]
pub enum AdvisoryCmd {
    /// Load OSV records: an OSV export (.zip, e.g. an ecosystem's all.zip), a directory
    /// of .json records, or .json files; newer records replace older ones
    Load {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        out: Out,
    },
    /// How many advisories the database holds, per ecosystem, and when it was loaded
    Status(Out),
    /// One advisory: severity, affected packages and versions
    Show {
        id: String,
        #[command(flatten)]
        out: Out,
    },
}

#[derive(Debug, Subcommand)]
pub enum ArtifactPolicyCmd {
    /// Which finding severities refuse a deploy, per kind of environment
    Show(Out),
    /// Change it: the lowest severity that refuses a deploy (none, low, medium, high,
    /// critical) for the kinds given; the others stay as they are
    Set {
        #[arg(long)]
        production: Option<String>,
        #[arg(long)]
        certification: Option<String>,
        #[arg(long)]
        staging: Option<String>,
        #[arg(long)]
        development: Option<String>,
        #[command(flatten)]
        out: Out,
    },
}

#[derive(Debug, Subcommand)]
pub enum TlsPolicyCmd {
    /// Show the policy set centrally (none: each edge's --https-policy)
    Show(Out),
    /// Set `modern` (TLS 1.3 only) or `compatible` (TLS 1.2+, ECDHE AEAD), or `default`
    /// to go back to each edge's --https-policy
    Set {
        policy: String,
        #[command(flatten)]
        out: Out,
    },
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing buys nothing
pub enum ServiceCmd {
    /// Deploy a new revision; the reconciler rolls it out (health-checked, zero downtime)
    Deploy {
        /// TENANT/ENV/NAME
        service: String,
        /// NAME@VERSION of an artifact of the tenant
        #[arg(long)]
        artifact: String,
        /// The command line, relative to the unpacked artifact (shell-like quoting)
        #[arg(long)]
        cmd: String,
        /// Variable that carries the replica's port
        #[arg(long, default_value = "PORT")]
        port_env: String,
        /// Health check path (2xx = ready)
        #[arg(long, default_value = "/health")]
        health: String,
        /// Replicas: N or MIN..MAX
        #[arg(long, default_value = "1")]
        replicas: String,
        /// Variable, K=V (repeatable)
        #[arg(long = "env")]
        env: Vec<String>,
        /// Secret as a variable, VAR=SECRET-NAME (repeatable; the value is read at start)
        #[arg(long = "secret")]
        secrets: Vec<String>,
        /// Memory limit in MiB
        #[arg(long)]
        memory_mb: Option<u64>,
        /// CPU limit in millicores
        #[arg(long)]
        cpu_millis: Option<u32>,
        /// New replicas started before old ones are removed
        #[arg(long, default_value_t = 1)]
        max_surge: u32,
        /// Old replicas that may be removed before their replacements are healthy
        #[arg(long, default_value_t = 0)]
        max_unavailable: u32,
        /// Time a new replica has to become healthy before the rollout is undone
        #[arg(long, default_value = "60s")]
        health_deadline: String,
        /// A route that sends traffic to this service: NAME (it must exist) or
        /// NAME=HOST[/PATH] (created if missing); repeatable
        #[arg(long = "route")]
        routes: Vec<String>,
        /// What autoscaling between MIN..MAX follows: cpu=CORES or in-flight=REQUESTS per
        /// replica (default: CPU at `gantry up --autoscale-cpu`)
        #[arg(long)]
        autoscale: Option<String>,
        #[command(flatten)]
        out: Out,
    },
    /// List the services of an environment (TENANT/ENV)
    List {
        env: String,
        #[command(flatten)]
        out: Out,
    },
    /// Desired state, stable revision, last message and the running replicas
    Status {
        service: String,
        #[command(flatten)]
        out: Out,
    },
    /// Revisions, newest first
    History {
        service: String,
        #[command(flatten)]
        out: Out,
    },
    /// Return to an earlier revision (default: the last healthy one)
    Rollback {
        service: String,
        #[arg(long)]
        to: Option<u64>,
        #[command(flatten)]
        out: Out,
    },
    /// Set the number of replicas
    Scale {
        service: String,
        replicas: u32,
        #[command(flatten)]
        out: Out,
    },
    /// Stop every replica (drained first)
    Stop {
        service: String,
        #[command(flatten)]
        out: Out,
    },
    /// Run the service again
    Start {
        service: String,
        #[command(flatten)]
        out: Out,
    },
    /// Delete the service; its replicas are drained and stopped
    Delete { service: String },
    /// The last log lines of the replicas
    Logs {
        service: String,
        #[arg(long)]
        replica: Option<u32>,
        #[arg(long, default_value_t = 100)]
        lines: usize,
        /// Keep printing new lines (every second) until interrupted
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ArtifactCmd {
    /// Push a directory (packed here) or a .tar.gz as an immutable version
    Push {
        /// TENANT/NAME@VERSION
        artifact: String,
        /// A directory or a .tar.gz file
        path: PathBuf,
        #[command(flatten)]
        out: Out,
    },
    /// List a tenant's artifact versions
    List {
        tenant: String,
        #[command(flatten)]
        out: Out,
    },
    /// Show a version: digest, sizes, files and its vulnerability findings
    Show {
        artifact: String,
        #[command(flatten)]
        out: Out,
    },
    /// Download a version's .tar.gz (verified against its digest)
    Pull {
        artifact: String,
        /// Where to write it
        #[arg(long = "to")]
        to: PathBuf,
    },
    /// Delete a version
    Delete { artifact: String },
    /// The policy that refuses deploys of artifacts with vulnerability findings
    #[command(subcommand)]
    Policy(ArtifactPolicyCmd),
}

#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Add a certificate chain and its private key (PEM files); the key is encrypted at rest
    Add {
        /// TENANT/ENV/NAME
        cert: String,
        /// PEM chain, leaf first
        #[arg(long = "cert")]
        cert_file: PathBuf,
        /// PEM private key
        #[arg(long = "key")]
        key_file: PathBuf,
        #[command(flatten)]
        out: Out,
    },
    /// Have a certificate issued: by the internal CA (at once) or through ACME (pending
    /// until the order completes; follow it with `cert show`)
    Issue {
        /// TENANT/ENV/NAME
        cert: String,
        /// DNS name to cover (repeatable); `*.x` needs --challenge dns-01
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
        /// `internal` or `acme`
        #[arg(long, default_value = "internal")]
        issuer: String,
        /// ACME challenge: `http-01` or `dns-01`
        #[arg(long, default_value = "http-01")]
        challenge: String,
        #[command(flatten)]
        out: Out,
    },
    /// List the certificates of an environment (TENANT/ENV)
    List {
        env: String,
        #[command(flatten)]
        out: Out,
    },
    /// Show a certificate, its expiry and renewal status
    Show {
        cert: String,
        #[command(flatten)]
        out: Out,
    },
    /// Renew an issued certificate now
    Renew {
        cert: String,
        #[command(flatten)]
        out: Out,
    },
    /// Delete a certificate; the edge stops serving it within a second
    Delete { cert: String },
}

#[derive(Debug, Subcommand)]
pub enum ReplicaCmd {
    /// List the replicas of a service (TENANT/ENV/SERVICE)
    List {
        service: String,
        #[command(flatten)]
        out: Out,
    },
    /// Register a replica (IP:PORT); the edge routes to it within a second
    Register {
        service: String,
        address: String,
        #[command(flatten)]
        out: Out,
    },
    /// Drain a replica: no new requests; in-flight ones finish
    Drain {
        service: String,
        address: String,
        #[command(flatten)]
        out: Out,
    },
    /// Make a drained replica active again
    Activate {
        service: String,
        address: String,
        #[command(flatten)]
        out: Out,
    },
    /// Deregister a replica (it is drained first)
    Deregister { service: String, address: String },
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing buys nothing
pub enum RouteCmd {
    /// Create a route; it takes effect on the edge within a second, without a restart
    Create {
        /// TENANT/ENV/NAME
        route: String,
        /// Host the route answers (a DNS name, no port, no wildcard)
        #[arg(long)]
        host: String,
        /// Path prefix (or exact path with --exact)
        #[arg(long, default_value = "/")]
        path: String,
        /// Match the path exactly instead of as a prefix
        #[arg(long)]
        exact: bool,
        /// Remove the matched prefix before forwarding
        #[arg(long)]
        strip_prefix: bool,
        /// `upstream:IP:PORT,IP:PORT` or `service:NAME`
        #[arg(long)]
        to: String,
        /// `public` or `internal`
        #[arg(long, default_value = "public")]
        listener: String,
        /// `least-outstanding` or `round-robin`
        #[arg(long, default_value = "least-outstanding")]
        balancer: String,
        /// Upstream timeout, e.g. 30s
        #[arg(long)]
        timeout: Option<String>,
        /// Largest request body in bytes
        #[arg(long)]
        max_body: Option<u64>,
        /// Request header to set, NAME=VALUE (repeatable)
        #[arg(long = "set-header")]
        set_header: Vec<String>,
        /// Request header to remove (repeatable)
        #[arg(long = "remove-header")]
        remove_header: Vec<String>,
        /// Response header to set, NAME=VALUE (repeatable)
        #[arg(long = "set-response-header")]
        set_response_header: Vec<String>,
        /// Response header to remove (repeatable)
        #[arg(long = "remove-response-header")]
        remove_response_header: Vec<String>,
        /// Active health check path of the upstreams (e.g. /health)
        #[arg(long)]
        health: Option<String>,
        /// Health check interval, e.g. 5s
        #[arg(long, default_value = "5s")]
        health_interval: String,
        /// Health check timeout, e.g. 1s
        #[arg(long, default_value = "1s")]
        health_timeout: String,
        /// Successes in a row that bring an endpoint back
        #[arg(long, default_value_t = 2)]
        healthy_threshold: u32,
        /// Failures in a row that take an endpoint out
        #[arg(long, default_value_t = 3)]
        unhealthy_threshold: u32,
        /// Serve on plain HTTP too (by default public routes redirect HTTP to HTTPS)
        #[arg(long)]
        allow_http: bool,
        /// Protocol to the upstreams: `http1` or `h2c` (HTTP/2 without TLS)
        #[arg(long, default_value = "http1")]
        upstream_protocol: String,
        #[command(flatten)]
        out: Out,
    },
    /// List the routes of an environment (TENANT/ENV)
    List {
        env: String,
        #[command(flatten)]
        out: Out,
    },
    /// Show a route
    Show {
        route: String,
        #[command(flatten)]
        out: Out,
    },
    /// Delete a route; the edge stops routing it within a second
    Delete { route: String },
}

#[derive(Debug, Clone, ClapArgs)]
pub struct UpArgs {
    /// Data directory (store, CA, keys)
    #[arg(long, env = "GANTRY_DATA", default_value = "./gantry-data")]
    pub data: PathBuf,
    /// Address of the control API
    #[arg(long, env = "GANTRY_API", default_value = "127.0.0.1:7443")]
    pub api: SocketAddr,
    /// Store URL: postgres://USER@HOST/DB (default: SQLite in the data directory)
    #[arg(long, env = "GANTRY_STORE", hide_env_values = true)]
    pub store: Option<String>,
    #[command(flatten)]
    pub edge: EdgeListen,
    /// Extra DNS name or IP address for the API certificate (repeatable)
    #[arg(long = "tls-name")]
    pub tls_names: Vec<String>,
    /// Log format
    #[arg(long, env = "GANTRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How the root key is sealed: `file` (a key file in --data; development), `passphrase`
    /// (Argon2id; starts sealed; the first start reads GANTRY_SEAL_PASSPHRASE) or `pkcs11`
    /// (an HSM; unsealed at start when GANTRY_PKCS11_PIN is set)
    #[arg(long, env = "GANTRY_SEAL", value_enum, default_value_t = SealKind::File)]
    pub seal: SealKind,
    /// PKCS#11 module of the HSM
    #[arg(
        long,
        env = "GANTRY_PKCS11_MODULE",
        default_value = "/usr/lib/softhsm/libsofthsm2.so"
    )]
    pub pkcs11_module: PathBuf,
    /// Label of the HSM token holding the root key
    #[arg(long, env = "GANTRY_PKCS11_TOKEN", default_value = "gantry")]
    pub pkcs11_token: String,
    /// Label of the root key on the token
    #[arg(long, env = "GANTRY_PKCS11_KEY_LABEL", default_value = "gantry-root")]
    pub pkcs11_key_label: String,
    /// Autoscaling target: CPU per replica in cores (0.6 = 60% of a core)
    #[arg(long, default_value_t = 0.6)]
    pub autoscale_cpu: f64,
    /// Least time between two autoscaling changes of a service, e.g. 60s
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub autoscale_cooldown: std::time::Duration,
    /// How replicas are isolated: `bubblewrap` (each tenant's own uid in a bwrap sandbox),
    /// `users` (each tenant's own uid), `none` (Gantry's user), or `auto` (the strongest
    /// this machine supports; a warning says what is enforced)
    #[arg(long, env = "GANTRY_ISOLATION", value_enum, default_value_t = Isolation::Auto)]
    pub isolation: Isolation,
    /// Range the tenants' uids (and gids) are allocated from, FIRST..LAST
    #[arg(long, default_value = "200000..265535", value_parser = parse_uid_range)]
    pub tenant_uids: runtime::UidRange,
    /// How often key rotation schedules are checked, e.g. 60s
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub rotation_check: std::time::Duration,
    /// Object store for artifacts: file:///DIR or s3://BUCKET[/PREFIX] (credentials and
    /// endpoint from AWS_* variables); default: `objects` in the data directory
    #[arg(long, env = "GANTRY_OBJECTS")]
    pub objects: Option<String>,
    /// ACME directory URL for `cert issue --issuer acme`
    /// (e.g. https://acme-v02.api.letsencrypt.org/directory)
    #[arg(long, env = "GANTRY_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,
    /// Contact email of the ACME account
    #[arg(long, env = "GANTRY_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// Extra CA certificate (PEM file) trusted for the ACME directory's HTTPS
    #[arg(long, env = "GANTRY_ACME_CA")]
    pub acme_ca: Option<PathBuf>,
    /// DNS-01 webhook base URL: Gantry POSTs {"host","value"} to URL/set-txt and
    /// {"host"} to URL/clear-txt
    #[arg(long, env = "GANTRY_ACME_DNS_WEBHOOK")]
    pub acme_dns_webhook: Option<String>,
    /// How often certificates are checked for renewal, e.g. 60s
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub renew_check: std::time::Duration,
    /// Renew issued certificates this long before they expire, e.g. 30days
    #[arg(long, default_value = "30days", value_parser = parse_duration)]
    pub renew_before: std::time::Duration,
    /// Wait this long after a failed issuance before trying again, e.g. 1h
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub renew_retry: std::time::Duration,
}

/// The edge's listeners, for `gantry up` and `gantry edge`.
#[derive(Debug, Clone, ClapArgs)]
pub struct EdgeListen {
    /// Public HTTPS listener of the edge (`off` to disable)
    #[arg(long, env = "GANTRY_HTTPS", default_value = "0.0.0.0:8443", value_parser = parse_listener)]
    pub https: Listen,
    /// TLS policy of the HTTPS listener: `modern` (TLS 1.3 only) or `compatible` (TLS 1.2+,
    /// ECDHE with AEAD suites only)
    #[arg(long, env = "GANTRY_HTTPS_POLICY", default_value = "compatible", value_parser = ["modern", "compatible"])]
    pub https_policy: String,
    /// Public HTTP listener of the edge: redirects to HTTPS (unless a route allows plain
    /// HTTP) and answers ACME HTTP-01 challenges (`off` to disable)
    #[arg(long, env = "GANTRY_HTTP", default_value = "0.0.0.0:8080", value_parser = parse_listener)]
    pub http: Listen,
    /// Internal listener of the edge, for service-to-service traffic (`off` to disable)
    #[arg(long, env = "GANTRY_INTERNAL", default_value = "127.0.0.1:8081", value_parser = parse_listener)]
    pub internal: Listen,
    /// JSON access log lines of the edge, one per routed request (`on` or `off`)
    #[arg(long, env = "GANTRY_ACCESS_LOG", default_value = "on", value_parser = ["on", "off"])]
    pub access_log: String,
    /// Where the edge's worker threads run: `off` (the scheduler places them) or `auto`
    /// (worker i of each listener pinned to the i-th CPU the process may run on, as nginx's
    /// `worker_cpu_affinity auto`; for machines whose cores the edge does not share)
    #[arg(long, env = "GANTRY_EDGE_CPU_AFFINITY", default_value = "off", value_parser = ["off", "auto"])]
    pub edge_cpu_affinity: String,
    /// Worker threads of each edge listener, 1-256 (default: one per CPU the process may
    /// run on, as nginx's `worker_processes auto`). Each serves its connections from accept
    /// to close; fewer workers than CPUs leave cores to the services on the same machine
    #[arg(long, env = "GANTRY_EDGE_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub edge_workers: Option<u16>,
}

/// `gantry edge`: the edge alone, serving what a control plane (`--server`, `--token`,
/// `--ca`, or the saved profile) says.
#[derive(Debug, Clone, ClapArgs)]
pub struct EdgeArgs {
    #[command(flatten)]
    pub listen: EdgeListen,
    /// How often the control plane is asked whether anything changed, e.g. 1s
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub poll: std::time::Duration,
    /// Log format
    #[arg(long, env = "GANTRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    Auto,
    Bubblewrap,
    Users,
    None,
}

fn parse_uid_range(s: &str) -> Result<runtime::UidRange, String> {
    s.parse::<runtime::UidRange>().map_err(|e| match e {
        runtime::Error::Invalid { message, .. } => message,
        e => e.to_string(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SealKind {
    File,
    Passphrase,
    Pkcs11,
}

/// A listener address, or none (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

fn parse_listener(s: &str) -> Result<Listen, String> {
    if s == "off" {
        return Ok(Listen(None));
    }
    s.parse()
        .map(|a| Listen(Some(a)))
        .map_err(|_| format!("{s:?} is not ADDRESS:PORT or off"))
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 60s, 5m)"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, ClapArgs)]
pub struct LoginArgs {
    // --server, --token and --ca are the global flags.
}

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Create a tenant
    Create {
        name: String,
        #[command(flatten)]
        out: Out,
    },
    /// List the tenants you can see
    List(Out),
    /// Show a tenant
    Show {
        name: String,
        #[command(flatten)]
        out: Out,
    },
    /// Delete a tenant (refused while it holds environments, accounts or roles)
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum EnvCmd {
    /// Create an environment: TENANT/ENV
    Create {
        env: String,
        /// production, certification, staging or development
        #[arg(long)]
        kind: String,
        #[command(flatten)]
        out: Out,
    },
    /// List a tenant's environments
    List {
        tenant: String,
        #[command(flatten)]
        out: Out,
    },
    /// Show an environment
    Show {
        env: String,
        #[command(flatten)]
        out: Out,
    },
    /// Delete an environment (refused while it holds resources)
    Delete { env: String },
}

#[derive(Debug, Subcommand)]
pub enum AccountCmd {
    /// Create an account: NAME (platform) or TENANT/NAME (service account)
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        out: Out,
    },
    /// List accounts: platform accounts, or a tenant's with --tenant
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        out: Out,
    },
    /// Show an account
    Show {
        name: String,
        #[command(flatten)]
        out: Out,
    },
    /// Delete an account with its tokens and roles
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token for an account; the secret is printed once
    Create {
        #[arg(long)]
        account: String,
        /// Lifetime, e.g. 30d, 12h (at most 366d)
        #[arg(long, default_value = "30d")]
        ttl: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        out: Out,
    },
    /// List tokens (metadata, never secrets)
    List {
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        out: Out,
    },
    /// Revoke a token by id
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum RoleCmd {
    /// Grant ROLE to an account on a scope
    Grant {
        role: String,
        #[arg(long)]
        to: String,
        /// platform, TENANT or TENANT/ENV
        #[arg(long)]
        on: String,
    },
    /// Revoke ROLE from an account on a scope
    Revoke {
        role: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        on: String,
    },
    /// List role grants
    List {
        #[arg(long)]
        on: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        out: Out,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit events
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        principal: Option<String>,
        /// An action (tenant.create) or a family (tenant.*)
        #[arg(long)]
        action: Option<String>,
        /// RFC 3339 time, or a duration ago (1h, 7d)
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Only events after this sequence number (to page through long lists)
        #[arg(long)]
        after: Option<i64>,
        #[command(flatten)]
        out: Out,
    },
    /// Verify the hash chain; exits non-zero if any event was altered, removed or reordered
    Verify(Out),
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create a KMS key: TENANT/ENV/NAME
    Create {
        #[arg(value_name = "TENANT/ENV/NAME")]
        key: String,
        /// Automatic rotation period in days (default 365)
        #[arg(long)]
        rotation_days: Option<u32>,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        out: Out,
    },
    /// List the KMS keys of an environment: TENANT/ENV
    List {
        #[arg(value_name = "TENANT/ENV")]
        env: String,
        #[command(flatten)]
        out: Out,
    },
    /// Show a key (metadata only; key material never leaves the server)
    Show {
        #[arg(value_name = "TENANT/ENV/NAME")]
        key: String,
        #[command(flatten)]
        out: Out,
    },
    /// Rotate now: a new version becomes current (old versions still decrypt)
    Rotate {
        #[arg(value_name = "TENANT/ENV/NAME")]
        key: String,
        #[command(flatten)]
        out: Out,
    },
    /// Enable a disabled key
    Enable {
        #[arg(value_name = "TENANT/ENV/NAME")]
        key: String,
        #[command(flatten)]
        out: Out,
    },
    /// Disable a key: every use is refused until it is enabled again
    Disable {
        #[arg(value_name = "TENANT/ENV/NAME")]
        key: String,
        #[command(flatten)]
        out: Out,
    },
    /// Schedule the key's destruction in 7-30 days
    ScheduleDeletion {
        #[arg(value_name = "TENANT/ENV/NAME")]
        key: String,
        #[arg(long)]
        days: u32,
        #[command(flatten)]
        out: Out,
    },
    /// Cancel a scheduled deletion (the key comes back disabled)
    CancelDeletion {
        #[arg(value_name = "TENANT/ENV/NAME")]
        key: String,
        #[command(flatten)]
        out: Out,
    },
    /// Change the rotation period, or retire versions below --min-decrypt-version
    Set {
        #[arg(value_name = "TENANT/ENV/NAME")]
        key: String,
        #[arg(long)]
        rotation_days: Option<u32>,
        /// Versions below this one no longer decrypt
        #[arg(long)]
        min_decrypt_version: Option<u32>,
        #[command(flatten)]
        out: Out,
    },
    /// Encrypt up to 4096 bytes read from stdin or --from-file; prints the ciphertext
    Encrypt {
        #[arg(value_name = "TENANT/ENV/NAME")]
        key: String,
        /// Encryption context KEY=VALUE (repeatable); decrypt needs the same context
        #[arg(long = "context", value_name = "KEY=VALUE")]
        context: Vec<String>,
        /// Read the plaintext from this file instead of stdin
        #[arg(long)]
        from_file: Option<PathBuf>,
        #[command(flatten)]
        out: Out,
    },
    /// Decrypt a ciphertext (`-`: read it from stdin); writes the raw plaintext to stdout
    Decrypt {
        #[arg(value_name = "TENANT/ENV/NAME")]
        key: String,
        /// The base64 ciphertext, or `-` to read it from stdin
        ciphertext: String,
        #[arg(long = "context", value_name = "KEY=VALUE")]
        context: Vec<String>,
        #[command(flatten)]
        out: Out,
    },
    /// A fresh data key, in plaintext and encrypted under the key
    GenerateDataKey {
        #[arg(value_name = "TENANT/ENV/NAME")]
        key: String,
        /// Length of the data key in bytes
        #[arg(long, value_parser = ["16", "32"])]
        bytes: Option<String>,
        #[arg(long = "context", value_name = "KEY=VALUE")]
        context: Vec<String>,
        #[command(flatten)]
        out: Out,
    },
    /// Re-encrypt ciphertexts (one per line on stdin) under the current version; prints
    /// the new ones one per line
    Rewrap {
        #[arg(value_name = "TENANT/ENV/NAME")]
        key: String,
        #[arg(long = "context", value_name = "KEY=VALUE")]
        context: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Put a new version of a secret; the value is read from stdin or --from-file, exactly
    /// as given (never from an argument)
    Put {
        #[arg(value_name = "TENANT/ENV/NAME")]
        secret: String,
        /// Read the value from this file instead of stdin
        #[arg(long)]
        from_file: Option<PathBuf>,
        /// The value is a JSON document
        #[arg(long, conflicts_with = "binary")]
        json: bool,
        /// The value is binary (any bytes)
        #[arg(long)]
        binary: bool,
        /// Check-and-set: the current version must be N (0: the secret must not exist)
        #[arg(long, value_name = "N")]
        if_version: Option<u32>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        out: Out,
    },
    /// Write a secret's value to stdout exactly as stored (the read is audited)
    Get {
        #[arg(value_name = "TENANT/ENV/NAME")]
        secret: String,
        /// Read this version instead of the current one
        #[arg(long, value_name = "N", conflicts_with = "previous")]
        version: Option<u32>,
        /// Read the previous version
        #[arg(long)]
        previous: bool,
        #[command(flatten)]
        out: Out,
    },
    /// List the secrets of an environment (metadata only): TENANT/ENV
    List {
        #[arg(value_name = "TENANT/ENV")]
        env: String,
        #[command(flatten)]
        out: Out,
    },
    /// Show a secret's metadata (never its value)
    Show {
        #[arg(value_name = "TENANT/ENV/NAME")]
        secret: String,
        #[command(flatten)]
        out: Out,
    },
    /// List a secret's versions and stages
    Versions {
        #[arg(value_name = "TENANT/ENV/NAME")]
        secret: String,
        #[command(flatten)]
        out: Out,
    },
    /// Delete a secret; it can be restored for 7-30 days (default 30)
    Delete {
        #[arg(value_name = "TENANT/ENV/NAME")]
        secret: String,
        #[arg(long, value_name = "N")]
        recovery_days: Option<u32>,
        #[command(flatten)]
        out: Out,
    },
    /// Restore a deleted secret
    Restore {
        #[arg(value_name = "TENANT/ENV/NAME")]
        secret: String,
        #[command(flatten)]
        out: Out,
    },
    /// Destroy a deleted secret for good (after its recovery window, or now with --force,
    /// which needs admin)
    Destroy {
        #[arg(value_name = "TENANT/ENV/NAME")]
        secret: String,
        #[arg(long)]
        force: bool,
    },
    /// Re-encrypt every version under the secret key's current version
    Rewrap {
        #[arg(value_name = "TENANT/ENV/NAME")]
        secret: String,
        #[command(flatten)]
        out: Out,
    },
    /// Ask an operator to put a secret: TENANT/ENV/NAME
    Request {
        #[arg(value_name = "TENANT/ENV/NAME")]
        secret: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        out: Out,
    },
    /// List the secret requests of an environment: TENANT/ENV
    Requests {
        #[arg(value_name = "TENANT/ENV")]
        env: String,
        #[command(flatten)]
        out: Out,
    },
    /// Cancel an open secret request: TENANT/ENV REQUEST_ID
    CancelRequest {
        #[arg(value_name = "TENANT/ENV")]
        env: String,
        #[arg(value_name = "REQUEST_ID")]
        id: String,
        #[command(flatten)]
        out: Out,
    },
}
