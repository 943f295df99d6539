//! The `gantry` command line: flag parsing (clap) into typed commands, and the client
//! commands, which talk to the control API and nothing else.
//!
//! Every failure ends as one line on stderr and an exit code from the shared code table.
//! A token is never printed except by `token create` (once, by design) and never appears in
//! an error message.

mod commands;
mod output;
mod profile;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};

pub use commands::run;
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
    /// How often key rotation schedules are checked, e.g. 60s
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub rotation_check: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SealKind {
    File,
    Passphrase,
    Pkcs11,
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
        #[command(flatten)]
        out: Out,
    },
    /// Verify the hash chain; exits non-zero if any event was altered, removed or reordered
    Verify(Out),
}
