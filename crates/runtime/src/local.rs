//! [`LocalProcessRuntime`]: replicas as supervised local processes.
//!
//! Per replica, one supervision task owns the process and:
//! * spawns it in a new session and process group (`setsid` in `pre_exec`: pgid = pid),
//!   in its working dir, with exactly the spec's environment (plus `PATH` and the port
//!   variable), as `run_as` if set, inside its cgroups ([`crate::limits`]);
//! * captures stdout and stderr through two FIFOs in the state dir into the log writer
//!   ([`crate::logs`]). The child holds its FIFO ends open read-write, so it never gets
//!   SIGPIPE when no supervisor reads: after a supervisor crash its output stays buffered
//!   in the FIFO (up to the pipe size, 1 MiB where the kernel allows; beyond that its
//!   writes block until a supervisor adopts it and reads again), and capture **resumes
//!   on adoption**, with the buffered lines stamped at the time they are read;
//! * on exit: kills what is left of its process group and cgroup, then restarts it after
//!   the policy's backoff (the sequence restarts once a process stayed up `reset_after`);
//! * on stop: SIGTERM to the group, SIGKILL to the group (and cgroup) after the grace
//!   period, removes its state file, FIFOs and cgroups.
//!
//! Processes are not `kill_on_drop`: dropping the runtime (or the supervisor dying)
//! leaves replicas running so that a new runtime can [`Runtime::adopt`] them. An adopted
//! process is not our child: its exit is noticed by polling `/proc` and its exit status
//! is unknown.
//!
//! This module must never write an environment value anywhere but into the child's
//! environment, and never signal a process group it did not create (a group is only
//! signalled while its recorded leader is, or was just, ours).

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Error, Result};
use crate::limits::{self, LimitEnforcer, PreExec};
use crate::logs::{self, LogFile, LogLine, LogRotation, Stream};
use crate::spec::{ReplicaId, ReplicaSpec, RestartMode};
use crate::state::{self, PersistedReplica};
use crate::status::{AdoptOutcome, ExitInfo, ReplicaHandle, ReplicaState, ReplicaStatus};
use crate::{BoxFuture, Runtime};

/// Where the local runtime keeps its files and how it limits replicas.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Log files, `<slug>.log[.N]` (created 0750).
    pub log_dir: PathBuf,
    /// State files `<slug>.json` and output FIFOs (created 0700).
    pub state_dir: PathBuf,
    pub rotation: LogRotation,
    pub limits: LimitEnforcer,
    /// How often an adopted process is checked for exit.
    pub adopted_poll: Duration,
    /// Home dirs of replicas that run as their own user, `<slug>` each (created 0711;
    /// each home 0700, owned by the replica's user).
    pub home_dir: PathBuf,
    /// The bubblewrap program for sandboxed replicas.
    pub bwrap: PathBuf,
}

impl LocalConfig {
    /// Detected cgroups under a `gantry` parent, 10 MiB × 3 log files, homes in `home`
    /// beside the state dir, `bwrap` from `PATH`.
    pub fn new(log_dir: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Result<Self> {
        let state_dir = state_dir.into();
        Ok(LocalConfig {
            log_dir: log_dir.into(),
            home_dir: state_dir.with_file_name("home"),
            state_dir,
            rotation: LogRotation::default(),
            limits: LimitEnforcer::detect("gantry")?,
            adopted_poll: Duration::from_millis(250),
            bwrap: crate::sandbox::find_bwrap().unwrap_or_else(|| PathBuf::from("bwrap")),
        })
    }
}

struct Entry {
    status: watch::Receiver<ReplicaStatus>,
    stop: watch::Sender<Option<Duration>>,
    grace: Duration,
    task: Option<JoinHandle<()>>,
    followers: broadcast::Sender<LogLine>,
}

/// Runs replicas as local processes. See the module documentation.
///
/// Dropping it stops supervising (the tasks end) but leaves the processes running, to be
/// adopted by the next instance; use [`LocalProcessRuntime::stop_all`] to stop them.
pub struct LocalProcessRuntime {
    cfg: LocalConfig,
    replicas: Mutex<HashMap<ReplicaId, Entry>>,
}

impl Drop for LocalProcessRuntime {
    fn drop(&mut self) {
        let map = self.replicas.get_mut().unwrap_or_else(|p| p.into_inner());
        for e in map.values_mut() {
            if let Some(t) = e.task.take() {
                t.abort();
            }
        }
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io("create directory", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod directory", path, e))
}

/// A free TCP port on 127.0.0.1 (bound, read, released: another process could take it
/// before the replica binds it, in which case the replica fails and is restarted).
pub fn allocate_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(Error::Port)?;
    Ok(l.local_addr().map_err(Error::Port)?.port())
}

impl LocalProcessRuntime {
    /// Creates the log and state dirs. Must be called inside a tokio runtime.
    pub fn new(cfg: LocalConfig) -> Result<Self> {
        mkdir(&cfg.log_dir, 0o750)?;
        mkdir(&cfg.state_dir, 0o700)?;
        mkdir(&cfg.home_dir, 0o711)?;
        Ok(LocalProcessRuntime {
            cfg,
            replicas: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &LocalConfig {
        &self.cfg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ReplicaId, Entry>> {
        self.replicas.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current log file of a replica.
    pub fn log_path(&self, id: &ReplicaId) -> PathBuf {
        self.cfg.log_dir.join(format!("{}.log", id.slug()))
    }

    /// The replicas a previous supervisor left state files for (to adopt, or to clean
    /// up).
    pub fn persisted(&self) -> Result<Vec<PersistedReplica>> {
        state::load_all(&self.cfg.state_dir)
    }

    /// Stops every supervised replica (each with its own grace period).
    pub async fn stop_all(&self) -> Vec<Result<ReplicaStatus>> {
        let ids: Vec<ReplicaId> = self.lock().keys().cloned().collect();
        let mut out = Vec::new();
        for id in ids {
            out.push(self.stop_replica(&id, None).await);
        }
        out
    }

    /// Takes a final entry out so the id can be started or adopted again.
    fn check_free(map: &mut HashMap<ReplicaId, Entry>, id: &ReplicaId) -> Result<()> {
        if let Some(e) = map.get(id) {
            if e.status.borrow().state.is_final() && e.task.as_ref().is_none_or(|t| t.is_finished())
            {
                map.remove(id);
            } else {
                return Err(Error::AlreadyRunning(id.to_string()));
            }
        }
        Ok(())
    }

    fn new_supervisor(
        &self,
        spec: ReplicaSpec,
        port: Option<u16>,
    ) -> Result<(Supervisor, Entry, watch::Receiver<Option<Duration>>)> {
        let slug = spec.id.slug();
        let log_file = self.log_path(&spec.id);
        let file = LogFile::open(log_file.clone(), self.cfg.rotation)?;
        let (lines_tx, lines_rx) = mpsc::channel(1024);
        let (followers, _) = broadcast::channel(1024);
        let mut writer = JoinSet::new();
        writer.spawn(logs::write_lines(file, lines_rx, followers.clone()));
        let initial = ReplicaStatus {
            id: spec.id.clone(),
            state: ReplicaState::Starting,
            pid: None,
            port,
            restarts: 0,
            last_exit: None,
            started_at: None,
            enforced_limits: Vec::new(),
            adopted: false,
            last_error: None,
            log_file,
            isolation: if spec.sandbox {
                crate::IsolationMode::Bubblewrap
            } else if spec.run_as.is_some() {
                crate::IsolationMode::Users
            } else {
                crate::IsolationMode::None
            },
            uid: spec.run_as.map(|u| u.uid),
        };
        let (status_tx, status_rx) = watch::channel(initial);
        let (stop_tx, stop_rx) = watch::channel(None);
        let grace = spec.grace;
        let home = spec.run_as.map(|_| self.cfg.home_dir.join(&slug));
        let sup = Supervisor {
            home,
            bwrap: self.cfg.bwrap.clone(),
            slug,
            port,
            state_dir: self.cfg.state_dir.clone(),
            limits: self.cfg.limits.clone(),
            poll: self.cfg.adopted_poll,
            status: status_tx,
            lines: Some(lines_tx),
            writer,
            cgroup_dirs: Vec::new(),
            enforced: Vec::new(),
            spec,
        };
        let entry = Entry {
            status: status_rx,
            stop: stop_tx,
            grace,
            task: None,
            followers,
        };
        Ok((sup, entry, stop_rx))
    }

    async fn start_replica(&self, spec: ReplicaSpec) -> Result<ReplicaHandle> {
        spec.validate()?;
        let mut map = self.lock();
        Self::check_free(&mut map, &spec.id)?;
        let port = match (&spec.port_env, spec.port) {
            (_, Some(p)) => Some(p),
            (Some(_), None) => Some(allocate_port()?),
            (None, None) => None,
        };
        let id = spec.id.clone();
        let (mut sup, mut entry, stop_rx) = self.new_supervisor(spec, port)?;
        let running = match sup.spawn() {
            Ok(r) => r,
            Err(e) => {
                sup.cleanup_files_sync();
                return Err(e);
            }
        };
        sup.mark_running(&running, false);
        let handle = ReplicaHandle {
            id: id.clone(),
            pid: running.pid as u32,
            port,
            log_file: self.log_path(&id),
        };
        tracing::info!(replica = %id, pid = running.pid, port, "replica started");
        entry.task = Some(tokio::spawn(sup.run(running, stop_rx)));
        map.insert(id, entry);
        Ok(handle)
    }

    async fn adopt_replica(&self, spec: ReplicaSpec) -> Result<AdoptOutcome> {
        spec.validate()?;
        let mut map = self.lock();
        Self::check_free(&mut map, &spec.id)?;
        let slug = spec.id.slug();
        let Some(st) = state::load(&self.cfg.state_dir, &slug)? else {
            return Ok(AdoptOutcome::NotFound);
        };
        if st.id != spec.id {
            return Err(Error::CorruptState {
                path: state::path(&self.cfg.state_dir, &slug),
                message: format!("it is for replica {}, not {}", st.id, spec.id),
            });
        }
        if !state::same_process_alive(st.pid, st.proc_start_ticks) {
            state::remove(&self.cfg.state_dir, &slug);
            remove_fifos(&self.cfg.state_dir, &slug);
            for d in &st.cgroup_dirs {
                let _ = std::fs::remove_dir(d);
            }
            tracing::info!(replica = %spec.id, pid = st.pid, "persisted replica is gone");
            return Ok(AdoptOutcome::Dead { last: st });
        }
        let spec_changed = st.spec_hash != spec.spec_hash();
        let id = spec.id.clone();
        let (mut sup, mut entry, stop_rx) = self.new_supervisor(spec, st.port)?;
        sup.cgroup_dirs = st.cgroup_dirs.clone();
        sup.enforced = st.enforced_limits.clone();
        let running = sup.adopted(&st);
        sup.status.send_modify(|s| s.restarts = st.restarts);
        sup.mark_running(&running, true);
        let handle = ReplicaHandle {
            id: id.clone(),
            pid: st.pid as u32,
            port: st.port,
            log_file: self.log_path(&id),
        };
        tracing::info!(replica = %id, pid = st.pid, spec_changed, "replica adopted");
        entry.task = Some(tokio::spawn(sup.run(running, stop_rx)));
        map.insert(id, entry);
        Ok(AdoptOutcome::Adopted {
            handle,
            spec_changed,
        })
    }

    async fn stop_replica(&self, id: &ReplicaId, grace: Option<Duration>) -> Result<ReplicaStatus> {
        let (task, mut status) = {
            let mut map = self.lock();
            let e = map
                .get_mut(id)
                .ok_or_else(|| Error::NotFound(id.to_string()))?;
            // The task may have ended already (final state): then nobody listens.
            let _ = e.stop.send(Some(grace.unwrap_or(e.grace)));
            (e.task.take(), e.status.clone())
        };
        if let Some(task) = task {
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::error!(replica = %id, "supervisor panicked");
                    self.lock().remove(id);
                    return Err(Error::SupervisorGone(id.to_string()));
                }
            }
        } else {
            // Another stop is in progress: wait for it to finish.
            let _ = status.wait_for(|s| s.state.is_final()).await;
        }
        let last = status.borrow().clone();
        self.lock().remove(id);
        Ok(last)
    }

    fn get_status(&self, id: &ReplicaId) -> Result<ReplicaStatus> {
        self.lock()
            .get(id)
            .map(|e| e.status.borrow().clone())
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }
}

impl Runtime for LocalProcessRuntime {
    fn start(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<ReplicaHandle>> {
        Box::pin(self.start_replica(spec))
    }

    fn stop<'a>(
        &'a self,
        id: &'a ReplicaId,
        grace: Option<Duration>,
    ) -> BoxFuture<'a, Result<ReplicaStatus>> {
        Box::pin(self.stop_replica(id, grace))
    }

    fn status<'a>(&'a self, id: &'a ReplicaId) -> BoxFuture<'a, Result<ReplicaStatus>> {
        Box::pin(async move { self.get_status(id) })
    }

    fn list(&self) -> BoxFuture<'_, Vec<ReplicaStatus>> {
        Box::pin(async move {
            let mut all: Vec<ReplicaStatus> = self
                .lock()
                .values()
                .map(|e| e.status.borrow().clone())
                .collect();
            all.sort_by(|a, b| a.id.cmp(&b.id));
            all
        })
    }

    fn adopt(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<AdoptOutcome>> {
        Box::pin(self.adopt_replica(spec))
    }

    fn watch(&self, id: &ReplicaId) -> Result<watch::Receiver<ReplicaStatus>> {
        self.lock()
            .get(id)
            .map(|e| e.status.clone())
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    fn logs_tail<'a>(&'a self, id: &'a ReplicaId, n: usize) -> BoxFuture<'a, Result<Vec<String>>> {
        let base = self.log_path(id);
        let rotation = self.cfg.rotation;
        Box::pin(async move {
            tokio::task::spawn_blocking(move || logs::tail(&base, n, rotation))
                .await
                .map_err(|_| Error::SupervisorGone(id.to_string()))?
        })
    }

    fn logs_follow(&self, id: &ReplicaId) -> Result<broadcast::Receiver<LogLine>> {
        self.lock()
            .get(id)
            .map(|e| e.followers.subscribe())
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }
}

// ---------------------------------------------------------------------------------------
// Supervision of one replica.

enum Proc {
    Child(tokio::process::Child),
    Adopted,
}

struct Running {
    proc: Proc,
    pid: i32,
    start_ticks: u64,
    started_at: OffsetDateTime,
    since: Instant,
    drain: watch::Sender<bool>,
    /// Aborted when dropped (a supervisor that is aborted stops reading).
    pumps: JoinSet<()>,
}

impl Running {
    /// Waits for the process to exit.
    async fn wait(&mut self, poll: Duration) -> ExitInfo {
        match &mut self.proc {
            Proc::Child(c) => match c.wait().await {
                Ok(st) => ExitInfo::from_status(st),
                Err(_) => ExitInfo::unknown(),
            },
            Proc::Adopted => loop {
                if !state::same_process_alive(self.pid, self.start_ticks) {
                    return ExitInfo::unknown();
                }
                tokio::time::sleep(poll).await;
            },
        }
    }

    /// The exit, if it happened.
    fn exited(&mut self) -> Option<ExitInfo> {
        match &mut self.proc {
            Proc::Child(c) => match c.try_wait() {
                Ok(Some(st)) => Some(ExitInfo::from_status(st)),
                Ok(None) => None,
                Err(_) => Some(ExitInfo::unknown()),
            },
            Proc::Adopted => {
                (!state::same_process_alive(self.pid, self.start_ticks)).then(ExitInfo::unknown)
            }
        }
    }

    /// Reads what is left in the FIFOs, then stops the pumps (bounded).
    async fn finish_logs(&mut self) {
        let _ = self.drain.send(true);
        let pumps = &mut self.pumps;
        let all = async { while pumps.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .is_err()
        {
            self.pumps.abort_all();
        }
    }
}

struct Supervisor {
    spec: ReplicaSpec,
    /// The replica's own writable dir, when it runs as its own user.
    home: Option<PathBuf>,
    bwrap: PathBuf,
    slug: String,
    port: Option<u16>,
    state_dir: PathBuf,
    limits: LimitEnforcer,
    poll: Duration,
    status: watch::Sender<ReplicaStatus>,
    lines: Option<mpsc::Sender<LogLine>>,
    /// The log writer; aborted if the supervisor is dropped without finishing.
    writer: JoinSet<()>,
    cgroup_dirs: Vec<PathBuf>,
    enforced: Vec<String>,
}

fn fifo_path(state_dir: &Path, slug: &str, stream: Stream) -> PathBuf {
    state_dir.join(format!("{slug}.{}", stream.as_str()))
}

fn remove_fifos(state_dir: &Path, slug: &str) {
    for s in [Stream::Stdout, Stream::Stderr] {
        let _ = std::fs::remove_file(fifo_path(state_dir, slug, s));
    }
}

/// Makes a fresh FIFO; returns our read end and the child's read-write end.
fn make_fifo(path: &Path) -> Result<(pipe::Receiver, std::fs::File)> {
    let _ = std::fs::remove_file(path);
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("state dir", "path contains a NUL byte"))?;
    // SAFETY: a valid C string; mkfifo only creates a file.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } < 0 {
        return Err(Error::io(
            "create fifo",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    let rx = open_fifo_reader(path)?;
    let child_end = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open fifo", path, e))?;
    // A larger buffer carries more output over a supervisor restart; the kernel may
    // refuse (pipe-max-size), which only means less buffering.
    // SAFETY: fcntl on an fd we own.
    unsafe { libc::fcntl(child_end.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    Ok((rx, child_end))
}

fn open_fifo_reader(path: &Path) -> Result<pipe::Receiver> {
    pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .map_err(|e| Error::io("open fifo", path, e))
}

fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals the group; no memory involved.
        unsafe { libc::kill(-pgid, sig) };
    }
}

/// Signals every live member of a process group except `except` (from `/proc`; a
/// process forked after the scan is caught by the SIGKILL that follows a grace period).
fn signal_members_but(pgid: i32, sig: i32, except: i32) {
    if pgid <= 1 {
        return;
    }
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return signal_group(pgid, sig);
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid != except && matches!(state::proc_group(pid), Some((_, g)) if g == pgid) {
            // SAFETY: kill(2) on a member of the replica's own process group.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// Creates (or takes back) a replica's home dir: a real directory, 0700, owned by its
/// user. A symlink left in its place is refused.
fn make_home(home: &Path, u: crate::RunAs) -> Result<()> {
    match std::fs::symlink_metadata(home) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::Isolation(format!(
                "{} exists and is not a directory",
                home.display()
            )))
        }
        Err(_) => std::fs::DirBuilder::new()
            .mode(0o700)
            .create(home)
            .map_err(|e| Error::io("create home", home, e))?,
    }
    std::os::unix::fs::lchown(home, Some(u.uid), Some(u.gid))
        .map_err(|e| Error::io("chown home", home, e))?;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("chmod home", home, e))
}

/// Live (non-zombie) members of a process group, from `/proc`.
fn group_alive(pgid: i32) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        // Without /proc, ask the kernel (zombies count as alive then).
        // SAFETY: signal 0 only checks.
        return unsafe { libc::kill(-pgid, 0) } == 0;
    };
    rd.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            return false;
        };
        matches!(state::proc_group(pid), Some((s, g)) if g == pgid && s != 'Z' && s != 'X')
    })
}

fn kill_cgroup(dirs: &[PathBuf]) {
    for pid in limits::cgroup_pids(dirs) {
        // SAFETY: kill(2) on a pid that is in this replica's own cgroup.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

impl Supervisor {
    fn spawn(&mut self) -> Result<Running> {
        let spec = &self.spec;
        let prepared = self.limits.prepare(&self.slug, &spec.limits);
        let (out_rx, out_child) =
            make_fifo(&fifo_path(&self.state_dir, &self.slug, Stream::Stdout))?;
        let (err_rx, err_child) =
            make_fifo(&fifo_path(&self.state_dir, &self.slug, Stream::Stderr))?;
        if spec.sandbox && spec.run_as.is_none() && crate::sandbox::is_root() {
            return Err(Error::Isolation(format!(
                "replica {}: a sandbox started by root needs a user to run as",
                spec.id
            )));
        }
        if let (Some(home), Some(u)) = (&self.home, spec.run_as) {
            make_home(home, u)?;
        }
        let mut cmd = if spec.sandbox {
            let mut c = tokio::process::Command::new(&self.bwrap);
            c.args(crate::sandbox::bwrap_args(
                &spec.working_dir,
                self.home.as_deref(),
                &spec.command,
            ))
            .current_dir("/");
            c
        } else {
            let mut c = tokio::process::Command::new(&spec.command[0]);
            c.args(&spec.command[1..]).current_dir(&spec.working_dir);
            c
        };
        cmd.env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_child))
            .stderr(Stdio::from(err_child))
            .kill_on_drop(false);
        if !spec.env.contains("PATH") {
            if let Some(p) = std::env::var_os("PATH") {
                cmd.env("PATH", p);
            }
        }
        for (k, v) in spec.env.iter() {
            cmd.env(k, v);
        }
        if let (Some(var), Some(port)) = (&spec.port_env, self.port) {
            cmd.env(var, port.to_string());
        }
        if let Some(home) = &self.home {
            if !spec.env.contains("HOME") {
                cmd.env("HOME", home);
            }
        }
        if let Some(u) = spec.run_as {
            cmd.uid(u.uid).gid(u.gid);
        }
        let pre = PreExec::from_prepared(&prepared);
        // SAFETY: `PreExec::run` only makes async-signal-safe syscalls and does not
        // allocate; the fds it writes to stay open until after `spawn` returns.
        unsafe {
            cmd.pre_exec(move || pre.run());
        }
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            id: spec.id.to_string(),
            program: if spec.sandbox {
                format!("{} (bwrap) {}", self.bwrap.display(), spec.command[0])
            } else {
                spec.command[0].clone()
            },
            source,
        })?;
        // The child joined its cgroups before exec; our copies can go.
        self.cgroup_dirs = prepared.dirs.clone();
        self.enforced = prepared.enforced.clone();
        drop(prepared);
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let start_ticks = state::proc_stat(pid).map(|(_, t)| t).unwrap_or(0);
        Ok(self.running(
            Proc::Child(child),
            pid,
            start_ticks,
            OffsetDateTime::now_utc(),
            Some((out_rx, err_rx)),
        ))
    }

    fn adopted(&mut self, st: &PersistedReplica) -> Running {
        let open = |s| {
            let p = fifo_path(&self.state_dir, &self.slug, s);
            let is_fifo = std::fs::metadata(&p).is_ok_and(|m| m.file_type().is_fifo());
            if is_fifo {
                open_fifo_reader(&p).ok()
            } else {
                None
            }
        };
        let fifos = match (open(Stream::Stdout), open(Stream::Stderr)) {
            (Some(o), Some(e)) => Some((o, e)),
            _ => None,
        };
        let mut r = self.running(
            Proc::Adopted,
            st.pid,
            st.proc_start_ticks,
            st.started_at,
            fifos,
        );
        let up = (OffsetDateTime::now_utc() - st.started_at).max(time::Duration::ZERO);
        let up = Duration::try_from(up).unwrap_or_default();
        r.since = Instant::now().checked_sub(up).unwrap_or_else(Instant::now);
        r
    }

    fn running(
        &self,
        proc: Proc,
        pid: i32,
        start_ticks: u64,
        started_at: OffsetDateTime,
        fifos: Option<(pipe::Receiver, pipe::Receiver)>,
    ) -> Running {
        let (drain, drain_rx) = watch::channel(false);
        let mut pumps = JoinSet::new();
        if let (Some((out, err)), Some(lines)) = (fifos, &self.lines) {
            pumps.spawn(logs::pump(
                out,
                Stream::Stdout,
                lines.clone(),
                drain_rx.clone(),
            ));
            pumps.spawn(logs::pump(err, Stream::Stderr, lines.clone(), drain_rx));
        }
        Running {
            proc,
            pid,
            start_ticks,
            started_at,
            since: Instant::now(),
            drain,
            pumps,
        }
    }

    fn mark_running(&self, r: &Running, adopted: bool) {
        let restarts = self.status.borrow().restarts;
        self.status.send_modify(|s| {
            s.state = ReplicaState::Running;
            s.pid = Some(r.pid as u32);
            s.port = self.port;
            s.started_at = Some(r.started_at);
            s.enforced_limits = self.enforced.clone();
            s.adopted = adopted;
            s.last_error = None;
        });
        let st = PersistedReplica {
            id: self.spec.id.clone(),
            pid: r.pid,
            pgid: r.pid,
            port: self.port,
            proc_start_ticks: r.start_ticks,
            started_at: r.started_at,
            spec_hash: self.spec.spec_hash(),
            restarts,
            cgroup_dirs: self.cgroup_dirs.clone(),
            enforced_limits: self.enforced.clone(),
        };
        if let Err(e) = state::save(&self.state_dir, &self.slug, &st) {
            tracing::warn!(replica = %self.spec.id, error = %e, "could not persist replica state");
        }
    }

    async fn run(mut self, first: Running, mut stop: watch::Receiver<Option<Duration>>) {
        let mut attempt: u32 = 0;
        let mut next = Some(first);
        loop {
            let mut running = match next.take() {
                Some(r) => r,
                None => {
                    self.status
                        .send_modify(|s| s.state = ReplicaState::Starting);
                    match self.spawn() {
                        Ok(r) => {
                            self.mark_running(&r, false);
                            r
                        }
                        Err(e) => {
                            tracing::warn!(replica = %self.spec.id, error = %e, "restart failed");
                            self.status
                                .send_modify(|s| s.last_error = Some(e.to_string()));
                            if !self.restarts_after(false) {
                                return self.finish(ReplicaState::Failed).await;
                            }
                            if self.backoff(&mut attempt, &mut stop).await {
                                return self.finish(ReplicaState::Stopped).await;
                            }
                            continue;
                        }
                    }
                }
            };
            let outcome = tokio::select! {
                exit = running.wait(self.poll) => Err(exit),
                grace = wait_stop(&mut stop) => Ok(grace),
            };
            match outcome {
                Ok(grace) => {
                    self.status
                        .send_modify(|s| s.state = ReplicaState::Stopping);
                    let exit = self.terminate(&mut running, grace).await;
                    running.finish_logs().await;
                    tracing::info!(replica = %self.spec.id, %exit, "replica stopped");
                    self.record_exit(exit);
                    return self.finish(ReplicaState::Stopped).await;
                }
                Err(exit) => {
                    // Whatever the leader left behind would hold the port: kill it.
                    signal_group(running.pid, libc::SIGKILL);
                    kill_cgroup(&self.cgroup_dirs);
                    running.finish_logs().await;
                    tracing::info!(replica = %self.spec.id, %exit, "replica exited");
                    let success = exit.success();
                    self.record_exit(exit);
                    state::remove(&self.state_dir, &self.slug);
                    if running.since.elapsed() >= self.spec.restart.reset_after {
                        attempt = 0;
                    }
                    drop(running);
                    if !self.restarts_after(success) {
                        let end = if success {
                            ReplicaState::Stopped
                        } else {
                            ReplicaState::Failed
                        };
                        return self.finish(end).await;
                    }
                    if self.backoff(&mut attempt, &mut stop).await {
                        return self.finish(ReplicaState::Stopped).await;
                    }
                }
            }
        }
    }

    fn restarts_after(&self, success: bool) -> bool {
        match self.spec.restart.mode {
            RestartMode::Always => true,
            RestartMode::OnFailure => !success,
            RestartMode::Never => false,
        }
    }

    /// Waits out the backoff; true if a stop came meanwhile.
    async fn backoff(
        &self,
        attempt: &mut u32,
        stop: &mut watch::Receiver<Option<Duration>>,
    ) -> bool {
        let delay = self.spec.restart.backoff(*attempt);
        *attempt = attempt.saturating_add(1);
        self.status.send_modify(|s| {
            s.state = ReplicaState::Backoff;
            s.pid = None;
            s.restarts = s.restarts.saturating_add(1);
        });
        tracing::info!(replica = %self.spec.id, delay_ms = delay.as_millis() as u64, "restarting after backoff");
        tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = wait_stop(stop) => true,
        }
    }

    fn record_exit(&self, exit: ExitInfo) {
        self.status.send_modify(|s| {
            s.pid = None;
            s.last_exit = Some(exit);
        });
    }

    /// SIGTERM to the group (in a sandbox: to every member but bwrap's monitor, which
    /// exits with the program's status); SIGKILL to the group and the cgroup after
    /// `grace`.
    async fn terminate(&self, r: &mut Running, grace: Duration) -> ExitInfo {
        if self.spec.sandbox {
            signal_members_but(r.pid, libc::SIGTERM, r.pid);
        } else {
            signal_group(r.pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        let mut exit = None;
        loop {
            if exit.is_none() {
                exit = r.exited();
            }
            if exit.is_some() && !group_alive(r.pid) {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::info!(replica = %self.spec.id, "grace period over: SIGKILL");
                signal_group(r.pid, libc::SIGKILL);
                kill_cgroup(&self.cgroup_dirs);
                if exit.is_none() {
                    exit = tokio::time::timeout(Duration::from_secs(10), r.wait(self.poll))
                        .await
                        .ok();
                }
                break;
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(50))).await;
        }
        exit.unwrap_or_else(ExitInfo::unknown)
    }

    /// The replica is done: remove its state, FIFOs and cgroups, flush the log.
    async fn finish(mut self, end: ReplicaState) {
        self.cleanup_files_sync();
        limits::remove_cgroups(&self.cgroup_dirs).await;
        self.lines = None;
        let writer = &mut self.writer;
        let flushed = async { while writer.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(5), flushed).await;
        self.status.send_modify(|s| {
            s.state = end;
            s.pid = None;
        });
    }

    fn cleanup_files_sync(&self) {
        state::remove(&self.state_dir, &self.slug);
        remove_fifos(&self.state_dir, &self.slug);
        if let Some(home) = &self.home {
            // Never follows the replica's symlinks (std's remove_dir_all does not).
            if let Err(e) = std::fs::remove_dir_all(home) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(replica = %self.spec.id, error = %e, "cannot remove the replica's home");
                }
            }
        }
    }
}

/// Resolves with the grace period once a stop is requested; never if the runtime is gone
/// (its tasks are aborted then).
async fn wait_stop(stop: &mut watch::Receiver<Option<Duration>>) -> Duration {
    loop {
        if let Some(g) = *stop.borrow_and_update() {
            return g;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
