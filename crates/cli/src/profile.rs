//! The CLI profile: server URL, token and CA certificate saved by `gantry login` in
//! `$GANTRY_CONFIG` (default `~/.config/gantry/profile.json`), mode 0600.
//!
//! Flags and `GANTRY_SERVER` / `GANTRY_TOKEN` / `GANTRY_CA` override it (for CI). The file
//! is never written with wider permissions, and the token is never printed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{CliError, Global};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub server: Option<String>,
    pub token: Option<String>,
    /// The CA certificate itself (PEM), so the profile keeps working if the file moves.
    pub ca_pem: Option<String>,
}

pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("GANTRY_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("gantry").join("profile.json")
}

impl Profile {
    pub fn load() -> Result<Profile, CliError> {
        let p = path();
        match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| CliError::usage(format!("profile {} is not valid: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Profile::default()),
            Err(e) => Err(CliError::usage(format!(
                "cannot read profile {}: {e}",
                p.display()
            ))),
        }
    }

    pub fn save(&self) -> Result<PathBuf, CliError> {
        let p = path();
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::usage(format!("cannot create {}: {e}", dir.display())))?;
        }
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| CliError::usage(e.to_string()))?;
        tls::write_private(&p, &bytes)
            .map_err(|e| CliError::usage(format!("cannot write profile: {e}")))?;
        Ok(p)
    }

    /// The effective endpoint: flags/env over the saved profile.
    pub fn resolve(&self, g: &Global) -> Result<client::Endpoint, CliError> {
        let server = g.server.clone().or_else(|| self.server.clone()).ok_or_else(|| {
            CliError::usage("no server: run `gantry login --server URL --token @FILE --ca PEM` or set GANTRY_SERVER")
        })?;
        let token = match &g.token {
            Some(t) => Some(read_token(t)?),
            None => self.token.clone(),
        };
        let ca_pem = match &g.ca {
            Some(p) => Some(read_ca(p)?),
            None => self.ca_pem.clone(),
        };
        Ok(client::Endpoint {
            server,
            token,
            ca_pem,
        })
    }
}

/// A token given as `@FILE` is read from the file; otherwise it is the value itself.
pub fn read_token(v: &str) -> Result<String, CliError> {
    let t = match v.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| CliError::usage(format!("cannot read token file {file}: {e}")))?,
        None => v.to_string(),
    };
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(CliError::usage("the token is empty"));
    }
    Ok(t)
}

pub fn read_ca(p: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(p)
        .map_err(|e| CliError::usage(format!("cannot read CA file {}: {e}", p.display())))
}
