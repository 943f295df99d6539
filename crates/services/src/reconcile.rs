//! One reconciler tick: for every service, compare what should run with what runs and
//! take the next step of the difference. Steps wait for health and for drains, so a tick
//! can take seconds; ticks never overlap.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use model::artifacts::ArtifactRef;
use model::certs::ReplicaState as EdgeState;
use model::services::{RevisionInfo, RevisionStatus, ServiceInfo, ServiceState};
use model::{Name, Scope};
use runtime::{Env, IsolationMode, Limits, ReplicaId, ReplicaSpec, ReplicaStatus};
use store::services::ServiceChange;
use store::{Actor, StoreError};

use crate::{env_parts, Result, ServiceError, Services};

/// What a tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub rolled_back: Vec<String>,
}

fn service_scope(s: &ServiceInfo) -> Option<(Scope, Name)> {
    let (scope, name) = s.name.rsplit_once('/')?;
    Some((Scope::parse(scope).ok()?, Name::parse(name).ok()?))
}

/// A process-unique number for temporary names.
fn id_suffix() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Most replicas started side by side in one step.
const MAX_PARALLEL_STARTS: usize = 8;

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

impl Services {
    /// Converges every service once. Does nothing while sealed (secrets cannot be read).
    pub async fn tick(&self) -> Result<TickReport> {
        let _one = self.tick_lock.lock().await;
        let mut report = TickReport::default();
        if self.keyring.is_sealed() {
            return Ok(report);
        }
        let services = self.store.all_services().await?;
        let adopt = std::mem::take(&mut *self.to_adopt.lock().unwrap_or_else(|e| e.into_inner()));
        for p in adopt {
            self.adopt(p).await;
        }
        let running = self.runtime.list().await;
        // Replicas of services that no longer exist: drained and stopped.
        for r in &running {
            let known = services.iter().any(|s| {
                service_scope(s).is_some_and(|(scope, name)| {
                    scope == Scope::Environment(r.id.tenant.clone(), r.id.environment.clone())
                        && name == r.id.service
                })
            });
            if !known {
                self.remove(r, &mut report).await;
            }
        }
        for s in services {
            let Some((scope, name)) = service_scope(&s) else {
                continue;
            };
            if let Err(e) = self
                .converge(&s, &scope, &name, &running, &mut report)
                .await
            {
                tracing::warn!(service = %s.name, error = %e, "cannot converge a service");
            }
        }
        Ok(report)
    }

    async fn converge(
        &self,
        s: &ServiceInfo,
        scope: &Scope,
        name: &Name,
        running: &[ReplicaStatus],
        report: &mut TickReport,
    ) -> Result<()> {
        let (t, e) = env_parts(scope)?;
        let mine: Vec<&ReplicaStatus> = running
            .iter()
            .filter(|r| r.id.tenant == t && r.id.environment == e && &r.id.service == name)
            .collect();
        if s.state == ServiceState::Stopped {
            for r in mine {
                self.remove(r, report).await;
            }
            return Ok(());
        }
        self.forget_stale(scope, name, &mine).await;
        let target = s.target_revision;
        let (new, old): (Vec<&ReplicaStatus>, Vec<&ReplicaStatus>) =
            mine.into_iter().partition(|r| r.id.revision == target);
        let desired = s.desired_replicas as usize;
        // 1. Too few replicas of the target: start some, side by side. During a rollout
        // (older replicas still serve) first retire up to `max_unavailable` old ones while
        // at least `desired - max_unavailable` keep serving, then start as many as keep
        // the total within `desired + max_surge`; otherwise (a first deploy, a scale-up)
        // start every missing one, up to `MAX_PARALLEL_STARTS`.
        if new.len() < desired {
            let rev = self.store.revision(scope, name.as_str(), target).await?;
            let missing = desired - new.len();
            let n = if old.is_empty() {
                missing.min(MAX_PARALLEL_STARTS)
            } else {
                let serving = old.len() + new.len();
                let floor = desired.saturating_sub(rev.spec.max_unavailable as usize);
                let retire = serving.saturating_sub(floor).min(old.len()).min(missing);
                for r in old.iter().take(retire) {
                    self.remove(r, report).await;
                }
                (desired + rev.spec.max_surge as usize)
                    .saturating_sub(serving - retire)
                    .min(missing)
                    .min(MAX_PARALLEL_STARTS)
            };
            let mut used: Vec<u32> = new.iter().map(|r| r.id.index).collect();
            let mut ids = Vec::new();
            for _ in 0..n {
                let index = (0..).find(|i| !used.contains(i)).unwrap_or(0);
                used.push(index);
                ids.push(ReplicaId::new(
                    t.clone(),
                    e.clone(),
                    name.clone(),
                    target,
                    index,
                ));
            }
            let results =
                futures::future::join_all(ids.iter().map(|id| self.start_healthy(scope, id, &rev)))
                    .await;
            let mut failure = None;
            for (id, result) in ids.iter().zip(results) {
                match result {
                    Ok(port) => {
                        self.register(scope, name, port).await?;
                        report.started.push(id.to_string());
                    }
                    Err(why) => failure = Some(why),
                }
            }
            if let Some(why) = failure {
                if s.stable_revision == Some(target) {
                    // The stable revision itself (a scale-up or a replacement): not a bad
                    // rollout; say why and try again next tick.
                    tracing::warn!(service = %s.name, "a replica of the stable revision did not become healthy: {why}");
                    let change = ServiceChange {
                        message: Some(Some(format!(
                            "a new replica did not become healthy ({why}); retrying"
                        ))),
                        ..Default::default()
                    };
                    self.store
                        .update_service(
                            &Actor::system(),
                            scope,
                            name.as_str(),
                            &change,
                            "service.replica-unhealthy",
                            why,
                        )
                        .await?;
                } else {
                    self.undo_rollout(s, scope, name, &rev, &why, report)
                        .await?;
                }
            }
            return Ok(());
        }
        // 2. Enough of the target: retire one replica of an older revision per tick.
        if let Some(r) = old.first() {
            self.remove(r, report).await;
            return Ok(());
        }
        // 3. More than wanted (scaled down): remove the highest indexes.
        if new.len() > desired {
            let mut extra = new.clone();
            extra.sort_by_key(|r| std::cmp::Reverse(r.id.index));
            for r in extra.into_iter().take(new.len() - desired) {
                self.remove(r, report).await;
            }
            return Ok(());
        }
        // 4. Converged: the target is the stable revision now; the autoscaler may move the
        // number of replicas within the revision's bounds.
        if s.stable_revision == Some(target) {
            let rev = self.store.revision(scope, name.as_str(), target).await?;
            self.autoscale(s, scope, name, &rev, &new).await?;
        }
        if s.stable_revision != Some(target) {
            let change = ServiceChange {
                stable_revision: Some(Some(target)),
                message: Some(None),
                revision_status: Some((target, RevisionStatus::Active, None)),
                ..Default::default()
            };
            self.store
                .update_service(
                    &Actor::system(),
                    scope,
                    name.as_str(),
                    &change,
                    "service.rolled-out",
                    format!("revision={target}"),
                )
                .await?;
            if let Some(prev) = s.stable_revision {
                let change = ServiceChange {
                    revision_status: Some((prev, RevisionStatus::Superseded, None)),
                    ..Default::default()
                };
                self.store
                    .update_service(
                        &Actor::system(),
                        scope,
                        name.as_str(),
                        &change,
                        "service.superseded",
                        format!("revision={prev}"),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Resumes supervising a replica a previous run left running, if its revision still
    /// exists; a dead one is left to the normal convergence (started again).
    async fn adopt(&self, p: runtime::PersistedReplica) {
        let id = p.id.clone();
        let scope = Scope::Environment(id.tenant.clone(), id.environment.clone());
        let Ok(rev) = self
            .store
            .revision(&scope, id.service.as_str(), id.revision)
            .await
        else {
            tracing::warn!(replica = %id, "a replica left running belongs to no known revision; leaving it alone");
            return;
        };
        let mut spec = match self.replica_spec(&scope, &id, &rev).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(replica = %id, error = %e, "cannot rebuild a replica's spec to adopt it");
                return;
            }
        };
        spec.port = p.port;
        match self.runtime.adopt(spec).await {
            Ok(runtime::AdoptOutcome::Adopted { handle, .. }) => {
                if let Some(port) = handle.port {
                    if check_health(port, &rev.spec.health).await.is_ok() {
                        self.healthy
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(id.clone());
                        let _ = self.register(&scope, &id.service, port).await;
                    }
                }
                tracing::info!(replica = %id, "adopted a replica left running by the previous run");
            }
            Ok(_) => {
                tracing::info!(replica = %id, "a replica of the previous run is gone; it will be started again")
            }
            Err(e) => tracing::warn!(replica = %id, error = %e, "cannot adopt a replica"),
        }
    }

    /// Deregisters edge registrations of a managed service that no running replica backs
    /// (left by a replica that died with the previous run).
    async fn forget_stale(&self, scope: &Scope, name: &Name, mine: &[&ReplicaStatus]) {
        let Ok(registered) = self.store.replicas(scope, name.as_str()).await else {
            return;
        };
        for r in registered {
            let backed = mine
                .iter()
                .any(|m| m.port.map(addr).as_deref() == Some(r.address.as_str()));
            if !backed {
                let _ = self
                    .store
                    .delete_replica(&Actor::system(), scope, name.as_str(), &r.address)
                    .await;
            }
        }
    }

    /// The rollout of `rev` failed: back to the stable revision, and say why.
    async fn undo_rollout(
        &self,
        s: &ServiceInfo,
        scope: &Scope,
        name: &Name,
        rev: &RevisionInfo,
        why: &str,
        report: &mut TickReport,
    ) -> Result<()> {
        let msg = match s.stable_revision {
            Some(stable) if stable != rev.number => format!(
                "revision {} did not become healthy ({why}); rolled back to revision {stable}",
                rev.number
            ),
            _ => format!("revision {} did not become healthy ({why})", rev.number),
        };
        tracing::warn!(service = %s.name, "{msg}");
        let mut change = ServiceChange {
            message: Some(Some(msg.clone())),
            revision_status: Some((rev.number, RevisionStatus::Failed, Some(why.to_string()))),
            ..Default::default()
        };
        match s.stable_revision {
            Some(stable) if stable != rev.number => change.target_revision = Some(stable),
            // Nothing to go back to: stop trying (a new deploy starts again).
            _ => change.state = Some(ServiceState::Stopped),
        }
        self.store
            .update_service(
                &Actor::system(),
                scope,
                name.as_str(),
                &change,
                "service.rollback-automatic",
                msg,
            )
            .await?;
        report.rolled_back.push(s.name.clone());
        Ok(())
    }

    /// Starts replica `id` of `rev` and waits until its health check passes; on failure
    /// the replica is stopped and the reason returned.
    async fn start_healthy(
        &self,
        scope: &Scope,
        id: &ReplicaId,
        rev: &RevisionInfo,
    ) -> std::result::Result<u16, String> {
        let spec = self
            .replica_spec(scope, id, rev)
            .await
            .map_err(|e| e.to_string())?;
        let handle = self.runtime.start(spec).await.map_err(|e| e.to_string())?;
        let port = handle
            .port
            .ok_or_else(|| "the runtime gave the replica no port".to_string())?;
        let deadline = Instant::now() + Duration::from_secs(rev.spec.health_deadline_secs);
        let mut last;
        loop {
            match check_health(port, &rev.spec.health).await {
                Ok(()) => {
                    self.healthy
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id.clone());
                    return Ok(port);
                }
                Err(why) => last = why,
            }
            if let Ok(st) = self.runtime.status(id).await {
                if st.restarts >= 3 {
                    last = format!(
                        "it exited {} times{}",
                        st.restarts,
                        st.last_error.map(|e| format!(": {e}")).unwrap_or_default()
                    );
                    break;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = self.runtime.stop(id, Some(Duration::from_secs(2))).await;
        Err(format!("health check {} failed: {last}", rev.spec.health))
    }

    /// Registers a healthy replica with the edge (idempotent).
    async fn register(&self, scope: &Scope, name: &Name, port: u16) -> Result<()> {
        match self
            .store
            .register_replica(
                &Actor::system(),
                scope,
                name.as_str(),
                &addr(port),
                EdgeState::Active,
            )
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Drains a replica at the edge, waits for the drain, deregisters and stops it.
    async fn remove(&self, r: &ReplicaStatus, report: &mut TickReport) {
        let scope = Scope::Environment(r.id.tenant.clone(), r.id.environment.clone());
        let service = r.id.service.as_str();
        if let Some(port) = r.port {
            let a = addr(port);
            let system = Actor::system();
            if self
                .store
                .update_replica(&system, &scope, service, &a, EdgeState::Draining)
                .await
                .is_ok()
            {
                tokio::time::sleep(self.config.drain).await;
            }
            let _ = self
                .store
                .delete_replica(&system, &scope, service, &a)
                .await;
        }
        if let Err(e) = self.runtime.stop(&r.id, None).await {
            tracing::warn!(replica = %r.id, error = %e, "cannot stop a replica");
        }
        self.healthy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&r.id);
        report.stopped.push(r.id.to_string());
    }

    /// The runtime spec of replica `id` of `rev`: the unpacked artifact, the command, the
    /// variables and the secrets' current values (read now, audited).
    async fn replica_spec(
        &self,
        scope: &Scope,
        id: &ReplicaId,
        rev: &RevisionInfo,
    ) -> Result<ReplicaSpec> {
        let dir = self.unpacked(scope, &id.service, rev).await?;
        let mut spec = ReplicaSpec::new(id.clone(), dir, rev.spec.command.clone());
        let mut env = Env::new();
        for (k, v) in &rev.spec.env {
            env.set(k.clone(), v.clone())?;
        }
        let reader = Actor {
            principal: format!("service:{scope}/{}", id.service),
            request_id: format!("replica-{id}"),
            source: "reconciler".into(),
        };
        for (var, secret) in &rev.spec.secrets {
            let v = self
                .keyring
                .read_secret(&reader, scope, secret, secrets::Which::Current)
                .await?;
            let value = v.value.ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "secret {scope}/{secret} is binary; only text secrets go into variables"
                ))
            })?;
            env.set(var.clone(), value)?;
        }
        spec.env = env;
        spec.port_env = Some(rev.spec.port_env.clone());
        spec.limits = Limits {
            memory_bytes: rev.spec.memory_mb.map(|m| m * 1024 * 1024),
            cpu_millis: rev.spec.cpu_millis,
        };
        spec.grace = Duration::from_secs(rev.spec.grace_secs);
        let iso = &self.config.isolation;
        if iso.mode != IsolationMode::None {
            let uids = iso.uids.as_ref().ok_or_else(|| {
                ServiceError::Invalid("isolation is on but no tenant uids are set up".into())
            })?;
            let ids = uids.ids_for(&id.tenant)?;
            let (work, unpacked, gid) = (
                self.config.work_dir.clone(),
                spec.working_dir.clone(),
                ids.gid,
            );
            tokio::task::spawn_blocking(move || share_with_group(&work, &unpacked, gid))
                .await
                .map_err(|e| ServiceError::Invalid(e.to_string()))?
                .map_err(|e| {
                    ServiceError::Invalid(format!("cannot share the artifact with its tenant: {e}"))
                })?;
            spec.run_as = Some(ids);
            spec.sandbox = iso.mode == IsolationMode::Bubblewrap;
        }
        Ok(spec)
    }

    /// The revision's artifact, unpacked once into its own directory.
    async fn unpacked(&self, scope: &Scope, service: &Name, rev: &RevisionInfo) -> Result<PathBuf> {
        let (t, e) = env_parts(scope)?;
        let dir = self
            .config
            .work_dir
            .join(t.as_str())
            .join(e.as_str())
            .join(service.as_str())
            .join(format!("rev-{}", rev.number));
        if dir.exists() {
            return Ok(dir);
        }
        let r = ArtifactRef::parse(&format!("{t}/{}", rev.spec.artifact))
            .map_err(|e| ServiceError::Invalid(e.message))?;
        let (_, bytes) = self.registry.pull(&r).await?;
        // Each caller unpacks into its own directory and renames it into place; when
        // replicas start side by side, the first rename wins and the others use it.
        let tmp = dir.with_extension(format!("tmp-{}-{}", std::process::id(), id_suffix()));
        std::fs::create_dir_all(&tmp)
            .map_err(|e| ServiceError::Invalid(format!("{}: {e}", tmp.display())))?;
        let target = tmp.clone();
        let unpacked = tokio::task::spawn_blocking(move || artifacts::unpack(&bytes, &target))
            .await
            .map_err(|e| ServiceError::Invalid(e.to_string()));
        if let Err(e) = unpacked.and_then(|r| r.map_err(ServiceError::from)) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
            if !dir.exists() {
                return Err(ServiceError::Invalid(format!(
                    "cannot move the unpacked artifact to {}",
                    dir.display()
                )));
            }
        }
        Ok(dir)
    }
}

/// Makes an unpacked artifact readable (executables executable) by the tenant's group
/// and by no one else, writable by no one but root: `root:GID`, directories 0750, files
/// 0640 or 0750. The directories from `work_dir` down to it get the same (so a tenant can
/// reach only its own artifacts); `work_dir` itself is 0711 (no listing).
fn share_with_group(work_dir: &Path, dir: &Path, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{lchown, PermissionsExt};
    let set = |p: &Path, mode: u32| -> std::io::Result<()> {
        lchown(p, Some(0), Some(gid))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
    };
    std::fs::set_permissions(work_dir, std::fs::Permissions::from_mode(0o711))?;
    let rel = dir.strip_prefix(work_dir).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "outside the work dir")
    })?;
    let mut p = work_dir.to_path_buf();
    for c in rel.components() {
        p.push(c);
        if p != dir {
            set(&p, 0o750)?;
        }
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        set(&d, 0o750)?;
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let meta = std::fs::symlink_metadata(e.path())?;
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                let exec = meta.permissions().mode() & 0o100 != 0;
                set(&e.path(), if exec { 0o750 } else { 0o640 })?;
            } else {
                // Symlinks and the like: the group, never followed.
                lchown(e.path(), Some(0), Some(gid))?;
            }
        }
    }
    Ok(())
}

/// `GET http://127.0.0.1:PORT{path}` answered 2xx within 2 s.
async fn check_health(port: u16, path: &str) -> std::result::Result<(), String> {
    use http_body_util::BodyExt;
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, format!("127.0.0.1:{port}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .map_err(|_| "timed out".to_string())?
}
