//! Starting and stopping `gantry up` as a child process and running CLI commands against it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_gantry");

pub struct Gantry {
    pub child: Child,
    pub data: PathBuf,
    pub api: String,
    pub config: PathBuf,
    pub first_token: Option<String>,
    /// The edge's public HTTPS and HTTP and internal listeners (`127.0.0.1:PORT`).
    pub edge_https: String,
    pub edge_http: String,
    pub edge_internal: String,
    /// Every line the server printed (stdout as `OUT ...`, stderr as `ERR ...`).
    pub log: Arc<Mutex<Vec<String>>>,
    drain: Option<std::thread::JoinHandle<()>>,
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
        Gantry::start_with(data, store, &[], &[])
    }

    /// `start` with extra `gantry up` arguments and environment variables. The seal's
    /// secrets are removed from the inherited environment: only `env` can set them.
    pub fn start_with(
        data: &Path,
        store: Option<String>,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Gantry {
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
                // The edge on loopback ports the kernel picks (the ready line says which).
                .args(["--https", "127.0.0.1:0", "--internal", "127.0.0.1:0"])
                .args(extra_args)
                .env_remove("GANTRY_STORE")
                .env_remove("GANTRY_SEAL")
                .env_remove("GANTRY_SEAL_PASSPHRASE")
                .env_remove("GANTRY_PKCS11_PIN")
                .env_remove("GANTRY_UNSEAL_SECRET")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(s) = &store {
                cmd.arg("--store").arg(s);
            }
            // The HTTP listener on a port the kernel picks, unless the test names one.
            if !extra_args.contains(&"--http") {
                cmd.args(["--http", "127.0.0.1:0"]);
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
            let log = Arc::new(Mutex::new(Vec::new()));
            while let Ok(l) = rx.recv_timeout(Duration::from_secs(30)) {
                log.lock().unwrap().push(l.clone());
                if let Some(t) = l.strip_prefix("OUT ").filter(|t| t.starts_with("gty_")) {
                    first_token = Some(t.to_string());
                }
                if l.contains("gantry is ready") {
                    let ready: serde_json::Value =
                        serde_json::from_str(l.trim_start_matches("ERR ")).unwrap_or_default();
                    let field = |k: &str| ready["fields"][k].as_str().unwrap_or("").to_string();
                    let (edge_https, edge_http, edge_internal) = (
                        field("edge_https"),
                        field("edge_http"),
                        field("edge_internal"),
                    );
                    // stdout and stderr arrive on two threads: collect what stdout printed
                    // before the ready line (the first-start token).
                    while let Ok(l) = rx.recv_timeout(Duration::from_millis(300)) {
                        log.lock().unwrap().push(l.clone());
                        if let Some(t) = l.strip_prefix("OUT ").filter(|t| t.starts_with("gty_")) {
                            first_token = Some(t.to_string());
                        }
                    }
                    // Keep draining (and keeping) output so the child never blocks on a
                    // full pipe.
                    let keep = log.clone();
                    let drain = std::thread::spawn(move || {
                        while let Ok(l) = rx.recv() {
                            keep.lock().unwrap().push(l);
                        }
                    });
                    return Gantry {
                        child,
                        data: data.to_path_buf(),
                        api: format!("https://127.0.0.1:{port}"),
                        config: data.parent().unwrap().join(format!("profile-{port}.json")),
                        first_token,
                        edge_https,
                        edge_http,
                        edge_internal,
                        log,
                        drain: Some(drain),
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
        self.cli_bytes(args, env, stdin.map(str::as_bytes))
    }

    /// Runs a CLI command with any bytes on stdin (`None`: stdin is /dev/null).
    pub fn cli_bytes(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("GANTRY_SERVER", &self.api)
            .env("GANTRY_CA", self.data.join("ca.pem"))
            .env("GANTRY_CONFIG", &self.config)
            .env_remove("GANTRY_TOKEN")
            .env_remove("GANTRY_UNSEAL_SECRET");
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
        let writer = stdin.map(|input| {
            let mut pipe = child.stdin.take().unwrap();
            let input = input.to_vec();
            // From a thread, so a child that fails before reading everything (a broken
            // pipe here) or that writes while we write cannot block the test.
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(&input);
            })
        });
        let out = child.wait_with_output().unwrap();
        if let Some(w) = writer {
            w.join().unwrap();
        }
        out
    }

    /// Everything the server printed so far, one line each.
    pub fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
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

    /// Stops like `stop` and returns everything the server printed, to its last line.
    pub fn stop_and_log(mut self) -> String {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "gantry up exited with {status}");
        if let Some(d) = self.drain.take() {
            d.join().unwrap();
        }
        self.output()
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

/// Standard base64 (with padding), written out here to keep the tests' dependencies small.
pub fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The forms a secret could leak in: raw, standard base64 and lowercase hex.
pub fn leak_forms(secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![
        ("raw".into(), secret.to_vec()),
        ("base64".into(), b64(secret).into_bytes()),
        ("hex".into(), hex(secret).into_bytes()),
    ]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                out.push(p);
            }
        }
    }
    out
}

/// Where any of `secrets` (in any of its leak forms) occurs in `blobs` (name, bytes):
/// "name: form of secret #i" for each hit.
pub fn leaks(blobs: &[(String, Vec<u8>)], secrets: &[&[u8]]) -> Vec<String> {
    let mut hits = Vec::new();
    for (name, bytes) in blobs {
        for (i, s) in secrets.iter().enumerate() {
            for (form, needle) in leak_forms(s) {
                if contains(bytes, &needle) {
                    hits.push(format!("{name}: {form} of secret #{i}"));
                }
            }
        }
    }
    hits
}

/// The files under `dir` as (path, bytes).
pub fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn encoders_match_the_standards() {
    assert_eq!(b64(b""), "");
    assert_eq!(b64(b"f"), "Zg==");
    assert_eq!(b64(b"fo"), "Zm8=");
    assert_eq!(b64(b"foo"), "Zm9v");
    assert_eq!(b64(b"foobar"), "Zm9vYmFy");
    assert_eq!(b64(&[0xff, 0xfe, 0x00, 0x01]), "//4AAQ==");
    assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
    let blobs = vec![("f".to_string(), b"xx Zm9vYmFy yy".to_vec())];
    assert_eq!(leaks(&blobs, &[b"foobar"]), vec!["f: base64 of secret #0"]);
    assert!(leaks(&blobs, &[b"other"]).is_empty());
}
