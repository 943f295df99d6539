//! Input of the key and secret commands: `TENANT/ENV/NAME` references, encryption contexts,
//! and secret material read from stdin or a file (never from an argument, so it stays out
//! of shell history and `ps`).

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use model::kms::Context;
use model::{Code, Invalid, Name};
use zeroize::Zeroizing;

use crate::CliError;

/// An invalid value: exit code of `invalid_argument`.
pub fn invalid(message: impl Into<String>) -> CliError {
    CliError {
        exit_code: Code::InvalidArgument.exit_code(),
        message: message.into(),
    }
}

/// `TENANT/ENV/NAME`: a key or a secret of an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub tenant: Name,
    pub env: Name,
    pub name: Name,
}

impl Ref {
    /// Parses `TENANT/ENV/NAME`; `what` names the thing in the error ("key", "secret").
    pub fn parse(s: &str, what: &str) -> Result<Ref, CliError> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [t, e, n] => Ok(Ref {
                tenant: Name::parse(t)?,
                env: Name::parse(e)?,
                name: Name::parse(n)?,
            }),
            _ => Err(invalid(format!(
                "invalid {what} {:?}: use TENANT/ENV/NAME",
                model::name::truncate(s)
            ))),
        }
    }

    /// `/v1/tenants/{t}/environments/{e}/{collection}/{name}`
    pub fn path(&self, collection: &str) -> String {
        format!(
            "{}/{collection}/{}",
            env_path(&self.tenant, &self.env),
            self.name
        )
    }
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.env, self.name)
    }
}

/// `TENANT/ENV`.
pub fn env_ref(s: &str) -> Result<(Name, Name), CliError> {
    match s.split('/').collect::<Vec<_>>().as_slice() {
        [t, e] => Ok((Name::parse(t)?, Name::parse(e)?)),
        _ => Err(invalid(format!(
            "invalid environment {:?}: use TENANT/ENV",
            model::name::truncate(s)
        ))),
    }
}

pub fn env_path(t: &Name, e: &Name) -> String {
    format!("/v1/tenants/{t}/environments/{e}")
}

/// Parses repeated `--context KEY=VALUE` flags.
pub fn context(pairs: &[String]) -> Result<Context, CliError> {
    let mut c = Context::new();
    for p in pairs {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            invalid(format!(
                "invalid --context {:?}: use KEY=VALUE",
                model::name::truncate(p)
            ))
        })?;
        if c.insert(k.to_string(), v.to_string()).is_some() {
            return Err(invalid(format!(
                "--context {:?} is given twice",
                model::name::truncate(k)
            )));
        }
    }
    model::kms::check_context(&c).map_err(|e: Invalid| CliError::from(e))?;
    Ok(c)
}

/// Reads secret material from `file`, or from stdin, up to `limit` bytes. More than
/// `limit` is an error naming `what` and the limit, exiting as `too_large` would (the code
/// the server answers for it); nothing is an error too (invalid argument). The bytes are
/// kept exactly as given.
pub fn read_material(
    file: Option<&Path>,
    limit: usize,
    what: &str,
    too_large: Code,
) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let mut buf = Zeroizing::new(Vec::new());
    // One byte over the limit is enough to know it is too large.
    let cap = limit as u64 + 1;
    match file {
        Some(path) => {
            let f = std::fs::File::open(path)
                .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
            f.take(cap)
                .read_to_end(&mut buf)
                .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("reading the {what} from stdin; end it with Ctrl-D");
            }
            stdin
                .lock()
                .take(cap)
                .read_to_end(&mut buf)
                .map_err(|e| CliError::usage(format!("cannot read stdin: {e}")))?;
        }
    }
    if buf.len() > limit {
        return Err(CliError {
            exit_code: too_large.exit_code(),
            message: format!("the {what} is larger than {limit} bytes, the limit"),
        });
    }
    if buf.is_empty() {
        let from = match file {
            Some(p) => p.display().to_string(),
            None => "stdin".to_string(),
        };
        return Err(invalid(format!(
            "empty {what}: nothing was read from {from}"
        )));
    }
    Ok(buf)
}

/// Reads one line of text from stdin (for an unseal passphrase or PIN): the first line,
/// its line ending stripped. On a terminal it prompts on stderr and turns echo off.
pub fn read_secret_line(prompt: &str) -> Result<Zeroizing<String>, CliError> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let echo_off = if tty {
        eprint!("{prompt}: ");
        let _ = std::io::stderr().flush();
        EchoOff::new()
    } else {
        None
    };
    let read = first_line(&mut stdin.lock(), 4096);
    if echo_off.is_some() {
        drop(echo_off);
        eprintln!();
    }
    let bytes = read.map_err(|e| CliError::usage(format!("cannot read stdin: {e}")))?;
    let line = std::str::from_utf8(&bytes).map_err(|_| invalid("the input is not UTF-8 text"))?;
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    Ok(Zeroizing::new(line.to_string()))
}

/// The first line of `r` with its `\n`, byte by byte (so nothing past it is consumed and
/// no reallocation leaves copies behind), at most `max` bytes.
fn first_line(r: &mut impl Read, max: usize) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(max));
    let mut b = [0u8; 1];
    while bytes.len() < max && r.read(&mut b)? == 1 {
        bytes.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    Ok(bytes)
}

/// Turns terminal echo off on stdin until dropped.
struct EchoOff {
    #[cfg(unix)]
    saved: libc::termios,
}

impl EchoOff {
    #[cfg(unix)]
    fn new() -> Option<EchoOff> {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own; failures are ignored
        // (the prompt then echoes, as `read` would).
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(EchoOff { saved })
        }
    }

    #[cfg(not(unix))]
    fn new() -> Option<EchoOff> {
        None
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        #[cfg(unix)]
        // SAFETY: restores the attributes saved by `new`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}

/// Writes raw bytes to stdout and flushes.
pub fn write_raw(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(|e| CliError {
            exit_code: 1,
            message: format!("cannot write to stdout: {e}"),
        })
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(s: &str, what: &str) -> Result<Zeroizing<Vec<u8>>, CliError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map(Zeroizing::new)
        .map_err(|_| CliError {
            exit_code: 1,
            message: format!("unexpected response from the server: {what} is not base64"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        let r = Ref::parse("acme/staging/db-password", "secret").unwrap();
        assert_eq!(
            r.path("secrets"),
            "/v1/tenants/acme/environments/staging/secrets/db-password"
        );
        assert_eq!(r.to_string(), "acme/staging/db-password");
        for bad in [
            "acme/staging",
            "acme",
            "a/b/c/d",
            "acme/staging/DB",
            "acme//x",
            "acme/staging/a%2Fb",
            "",
        ] {
            assert_eq!(Ref::parse(bad, "key").unwrap_err().exit_code, 3, "{bad}");
        }
        assert!(env_ref("acme/staging").is_ok());
        assert_eq!(env_ref("acme").unwrap_err().exit_code, 3);
    }

    #[test]
    fn contexts() {
        let c = context(&["app=billing".into(), "x=a=b".into(), "empty=".into()]).unwrap();
        assert_eq!(c["x"], "a=b");
        assert_eq!(c["empty"], "");
        assert_eq!(context(&["novalue".into()]).unwrap_err().exit_code, 3);
        assert_eq!(context(&["=v".into()]).unwrap_err().exit_code, 3);
        assert_eq!(
            context(&["a=1".into(), "a=2".into()])
                .unwrap_err()
                .exit_code,
            3
        );
    }
}
