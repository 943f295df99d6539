//! What a replica is: its id, command, environment, port, limits, restart policy and
//! grace period, plus the shell-like command-line splitter.
//!
//! This module is pure data. It must never print or persist an environment value: the
//! `Debug` of [`Env`] (and so of [`ReplicaSpec`]) shows names only, and
//! [`ReplicaSpec::spec_hash`] covers names only.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use model::Name;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One replica of one revision of a service: `acme/staging/customers-mngr#7-2` is replica
/// 2 of revision 7 of the service `customers-mngr` in the environment `acme/staging`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaId {
    pub tenant: Name,
    pub environment: Name,
    pub service: Name,
    pub revision: u64,
    pub index: u32,
}

impl ReplicaId {
    pub fn new(tenant: Name, environment: Name, service: Name, revision: u64, index: u32) -> Self {
        ReplicaId {
            tenant,
            environment,
            service,
            revision,
            index,
        }
    }

    /// A file-name-safe, injective form (`acme.staging.customers-mngr.7-2`) used for log
    /// files, state files and cgroup names. Names never contain dots, so it is unambiguous.
    pub fn slug(&self) -> String {
        format!(
            "{}.{}.{}.{}-{}",
            self.tenant.as_str(),
            self.environment.as_str(),
            self.service.as_str(),
            self.revision,
            self.index
        )
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}#{}-{}",
            self.tenant.as_str(),
            self.environment.as_str(),
            self.service.as_str(),
            self.revision,
            self.index
        )
    }
}

impl FromStr for ReplicaId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "replica id",
                format!(
                    "{:?}: expected TENANT/ENVIRONMENT/SERVICE#REVISION-INDEX",
                    model::name::truncate(s)
                ),
            )
        };
        let (path, num) = s.split_once('#').ok_or_else(bad)?;
        let mut parts = path.split('/');
        let (Some(t), Some(e), Some(svc), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let (rev, idx) = num.split_once('-').ok_or_else(bad)?;
        let name = |x: &str| Name::parse(x).map_err(|e| Error::invalid("replica id", e.message));
        Ok(ReplicaId {
            tenant: name(t)?,
            environment: name(e)?,
            service: name(svc)?,
            revision: rev.parse().map_err(|_| bad())?,
            index: idx.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for ReplicaId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ReplicaId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The environment of a replica. Values may be secrets: they are only ever passed to the
/// child's environment. `Debug` prints names with `<redacted>` values; there is no
/// `Serialize`/`Display` on purpose.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    pub fn new() -> Self {
        Env::default()
    }

    /// Sets a variable. Names must be non-empty without `=` or NUL; values without NUL.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> Result<()> {
        let name = name.into();
        let value = value.into();
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(Error::invalid(
                "environment variable name",
                format!("{:?}", model::name::truncate(&name)),
            ));
        }
        if value.contains('\0') {
            // Never echo the value: it may be a secret.
            return Err(Error::invalid(
                "environment variable value",
                format!("the value of {name} contains a NUL byte"),
            ));
        }
        self.0.insert(name, value);
        Ok(())
    }

    /// Builder form of [`Env::set`].
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Result<Self> {
        self.set(name, value)?;
        Ok(self)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

/// Resource limits of one replica. What enforces them on a given machine is reported in
/// [`crate::ReplicaStatus::enforced_limits`]; see [`crate::limits`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory in bytes (cgroup `memory.max` / `memory.limit_in_bytes`; fallback
    /// `RLIMIT_AS`, which limits address space, not resident memory).
    pub memory_bytes: Option<u64>,
    /// CPU in thousandths of a core (`500` = half a core, `2000` = two cores).
    pub cpu_millis: Option<u32>,
}

/// When a replica that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// After any exit (a service is meant to run forever).
    Always,
    /// After an exit with a non-zero status or a signal.
    OnFailure,
    /// Never: the replica ends `stopped` (status 0) or `failed`.
    Never,
}

/// Restart with exponential backoff: `initial`, `2*initial`, `4*initial`... capped at
/// `max`; the sequence starts over once a process stayed up for `reset_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub mode: RestartMode,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            mode: RestartMode::Always,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            reset_after: Duration::from_secs(30),
        }
    }
}

impl RestartPolicy {
    /// The delay before restart number `attempt` (0-based) of the current sequence.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// The unprivileged user a replica runs as (applied with `setgid`/`setuid` before exec;
/// supplementary groups are cleared by the standard library when a uid is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// Everything needed to run one replica.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    pub id: ReplicaId,
    /// The unpacked artifact; the process starts there.
    pub working_dir: PathBuf,
    /// argv: `command[0]` is the program (looked up in `PATH` if it has no `/`).
    pub command: Vec<String>,
    /// The child's whole environment: nothing of the supervisor's environment is inherited
    /// except `PATH` (when `env` has none), so the supervisor's own secrets never leak.
    pub env: Env,
    /// The variable that carries the port (`PORT`); `None` runs without a port.
    pub port_env: Option<String>,
    /// A fixed loopback port; `None` lets the runtime pick a free one on 127.0.0.1.
    pub port: Option<u16>,
    pub limits: Limits,
    pub restart: RestartPolicy,
    /// Time between SIGTERM and SIGKILL when stopping.
    pub grace: Duration,
    /// Run as this user and group (needs root); `None` runs as the supervisor's user.
    /// The replica then also gets a writable home dir of its own (`HOME`, unless `env`
    /// sets it), owned by that user.
    pub run_as: Option<RunAs>,
    /// Run inside a bubblewrap sandbox ([`crate::sandbox`]); a supervisor running as
    /// root must set `run_as` too.
    pub sandbox: bool,
}

impl ReplicaSpec {
    /// A spec with defaults: `PORT`, no limits, restart always (1 s..60 s, reset after
    /// 30 s), a 10 s grace period, the supervisor's user, no sandbox.
    pub fn new(id: ReplicaId, working_dir: impl Into<PathBuf>, command: Vec<String>) -> Self {
        ReplicaSpec {
            id,
            working_dir: working_dir.into(),
            command,
            env: Env::new(),
            port_env: Some("PORT".to_string()),
            port: None,
            limits: Limits::default(),
            restart: RestartPolicy::default(),
            grace: Duration::from_secs(10),
            run_as: None,
            sandbox: false,
        }
    }

    /// Checks what can be checked before spawning.
    pub fn validate(&self) -> Result<()> {
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(Error::invalid("command", "the command is empty"));
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err(Error::invalid("command", "an argument contains a NUL byte"));
        }
        if let Some(p) = &self.port_env {
            if p.is_empty() || p.contains('=') || p.contains('\0') {
                return Err(Error::invalid("port variable", format!("{p:?}")));
            }
        }
        if self.restart.initial_backoff.is_zero() {
            return Err(Error::invalid(
                "restart policy",
                "initial backoff must be > 0",
            ));
        }
        if self.limits.cpu_millis == Some(0) || self.limits.memory_bytes == Some(0) {
            return Err(Error::invalid(
                "limits",
                "a limit of 0 would never let it run",
            ));
        }
        Ok(())
    }

    /// A SHA-256 over everything that defines the replica except environment *values*
    /// (names are included): persisted next to the pid to tell, on adoption, whether the
    /// running process was started from the same spec.
    pub fn spec_hash(&self) -> String {
        #[derive(Serialize)]
        struct HashInput<'a> {
            id: String,
            working_dir: &'a std::path::Path,
            command: &'a [String],
            env_names: Vec<&'a str>,
            port_env: &'a Option<String>,
            limits: &'a Limits,
            run_as: &'a Option<RunAs>,
            // Left out when false, so the hash of an unsandboxed spec is unchanged.
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            sandbox: bool,
        }
        let input = HashInput {
            id: self.id.to_string(),
            working_dir: &self.working_dir,
            command: &self.command,
            env_names: self.env.names().collect(),
            port_env: &self.port_env,
            limits: &self.limits,
            run_as: &self.run_as,
            sandbox: self.sandbox,
        };
        // Serializing plain strings, numbers and paths cannot fail; fall back to Debug
        // of the same (value-free) data rather than panic.
        let bytes = serde_json::to_vec(&input)
            .unwrap_or_else(|_| format!("{:?}", (&input.id, input.command)).into_bytes());
        hex::encode(Sha256::digest(bytes))
    }
}

/// Splits a command line like a POSIX shell's word splitting and quote removal, without
/// any expansion: whitespace separates words; `'...'` is literal; inside `"..."` a
/// backslash escapes `"`, `\`, `$`, `` ` `` and newline; outside quotes a backslash
/// escapes the next character. No variables, globs, pipes or redirections: `$HOME` stays
/// `$HOME`, `a|b` is one word.
pub fn split_command(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(Error::invalid("command line", "unterminated '")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(Error::invalid("command line", "unterminated \"")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(Error::invalid("command line", "unterminated \"")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    cur.push(c);
                }
                None => return Err(Error::invalid("command line", "trailing backslash")),
            },
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    if words.is_empty() {
        return Err(Error::invalid("command line", "the command is empty"));
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_id_round_trips() {
        let id: ReplicaId = "acme/staging/customers-mngr#7-2".parse().unwrap();
        assert_eq!(id.revision, 7);
        assert_eq!(id.index, 2);
        assert_eq!(id.to_string(), "acme/staging/customers-mngr#7-2");
        assert_eq!(id.slug(), "acme.staging.customers-mngr.7-2");
        for bad in [
            "",
            "a/b/c",
            "a/b#1-2",
            "a/b/c/d#1-2",
            "a/b/C#1-2",
            "a/b/c#x-2",
            "a/b/c#1",
        ] {
            assert!(bad.parse::<ReplicaId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn env_debug_redacts_values() {
        let env = Env::new().with("DB_PASSWORD", "hunter2").unwrap();
        let dbg = format!("{env:?}");
        assert!(
            dbg.contains("DB_PASSWORD") && !dbg.contains("hunter2"),
            "{dbg}"
        );
        let err = Env::new().with("X", "a\0b").unwrap_err().to_string();
        assert!(!err.contains("a\0b"));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RestartPolicy::default();
        let secs: Vec<u64> = (0..9).map(|a| p.backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(p.backoff(200).as_secs(), 60);
    }

    #[test]
    fn splits_like_a_shell() {
        let w = split_command(r#"python3 -m http.server --bind '127.0.0.1' "a b\"c" d\ e $HOME"#)
            .unwrap();
        assert_eq!(
            w,
            [
                "python3",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "a b\"c",
                "d e",
                "$HOME"
            ]
        );
        assert_eq!(split_command("''").unwrap(), [""]);
        assert!(split_command("a 'b").is_err());
        assert!(split_command("a \"b").is_err());
        assert!(split_command("   ").is_err());
    }

    #[test]
    fn spec_hash_ignores_env_values() {
        let id: ReplicaId = "a/b/c#1-0".parse().unwrap();
        let mut s1 = ReplicaSpec::new(id, "/tmp", vec!["true".into()]);
        s1.env.set("K", "one").unwrap();
        let mut s2 = s1.clone();
        s2.env.set("K", "two").unwrap();
        assert_eq!(s1.spec_hash(), s2.spec_hash());
        s2.command.push("x".into());
        assert_ne!(s1.spec_hash(), s2.spec_hash());
    }
}
