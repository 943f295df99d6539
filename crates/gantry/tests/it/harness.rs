//! Starting and stopping `gantry up` as a child process and running CLI commands against it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_gantry");

pub struct Gantry {
    pub child: Child,
    pub data: PathBuf,
    pub api: String,
    pub config: PathBuf,
    pub first_token: Option<String>,
}

/// A fresh PostgreSQL database from GANTRY_TEST_PG, created with sqlx.
pub fn pg_database() -> String {
    let base = std::env::var("GANTRY_TEST_PG")
        .expect("GANTRY_TEST_PG is not set: run `. scripts/pg.sh` first (or use scripts/test.sh)");
    let name = format!("gantry_e2e_{}", uuid::Uuid::new_v4().simple());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&base).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Gantry {
    /// Starts `gantry up` on `data` and waits until it says it is ready.
    pub fn start(data: &Path, store: Option<String>) -> Gantry {
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(BIN);
            cmd.arg("up")
                .arg("--data")
                .arg(data)
                .arg("--api")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--log-format")
                .arg("json")
                .env_remove("GANTRY_STORE")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(s) = &store {
                cmd.arg("--store").arg(s);
            }
            let mut child = cmd.spawn().expect("spawn gantry up");
            let stdout = child.stdout.take().unwrap();
            let stderr = child.stderr.take().unwrap();
            let (tx, rx) = mpsc::channel::<String>();
            let tx2 = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx2.send(format!("OUT {l}"));
                }
            });
            std::thread::spawn(move || {
                for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = tx.send(format!("ERR {l}"));
                }
            });
            let mut first_token = None;
            let mut lines = Vec::new();
            while let Ok(l) = rx.recv_timeout(Duration::from_secs(30)) {
                if let Some(t) = l.strip_prefix("OUT ").filter(|t| t.starts_with("gty_")) {
                    first_token = Some(t.to_string());
                }
                if l.contains("gantry is ready") {
                    // stdout and stderr arrive on two threads: collect what stdout printed
                    // before the ready line (the first-start token).
                    while let Ok(l) = rx.recv_timeout(Duration::from_millis(300)) {
                        if let Some(t) = l.strip_prefix("OUT ").filter(|t| t.starts_with("gty_")) {
                            first_token = Some(t.to_string());
                        }
                    }
                    // Keep draining output so the child never blocks on a full pipe.
                    std::thread::spawn(move || while rx.recv().is_ok() {});
                    return Gantry {
                        child,
                        data: data.to_path_buf(),
                        api: format!("https://127.0.0.1:{port}"),
                        config: data.parent().unwrap().join(format!("profile-{port}.json")),
                        first_token,
                    };
                }
                lines.push(l);
            }
            let _ = child.kill();
            let _ = child.wait();
            last_err = lines.join("\n");
            if !last_err.contains("cannot listen") {
                break;
            }
        }
        panic!("gantry up did not become ready:\n{last_err}");
    }

    /// Runs a CLI command as the bootstrap admin (through env, as CI would).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_as(
            &format!("@{}", self.data.join("admin.token").display()),
            args,
        )
    }

    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        self.cli_with(args, &[("GANTRY_TOKEN", token)], None)
    }

    pub fn cli_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("GANTRY_SERVER", &self.api)
            .env("GANTRY_CA", self.data.join("ca.pem"))
            .env("GANTRY_CONFIG", &self.config)
            .env_remove("GANTRY_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }

    pub fn stop(mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Gantry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({:?}): {}{}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Asserts failure with `code` and a one-line reason on stderr.
#[track_caller]
pub fn fails(o: Output, code: i32) -> String {
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {} stderr: {err}",
        stdout(&o)
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one-line reason expected: {err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    err
}
