//! Services: deploys as immutable revisions, and the reconciler that makes the running
//! replicas match the desired state (which revision, how many, running or stopped).
//!
//! A rollout is a sequence of small steps, one per tick and service, each safe to stop at:
//! start a replica of the target revision, wait until its health check passes, register it
//! with the edge; then drain one replica of an older revision (no new requests), wait for
//! the edge to stop sending to it, deregister and stop it. A new revision that does not
//! become healthy within its deadline is undone: the service goes back to its last stable
//! revision (a deployment circuit breaker) and says why.
//!
//! Secret values are read from the keyring when a replica starts and handed to the runtime
//! in the process environment only. This crate must never store, log or return a value.
//!
//! Under isolation (`users` or `bubblewrap`), every replica runs as its tenant's own uid,
//! and the unpacked artifact is shared with that tenant's group only, read-only: this
//! crate must never make a tenant's files reachable by another tenant's uid.

mod autoscale;
mod reconcile;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use model::artifacts::ArtifactRef;
use model::services::{DeploySpec, RevisionInfo, ServiceInfo, ServiceReplica, ServiceState};
use model::{Code, Name, Scope};
use runtime::{ReplicaId, Runtime};
use store::services::ServiceChange;
use store::{Actor, Store, StoreError};

pub use autoscale::{AutoscaleConfig, LoadGauge};
pub use reconcile::TickReport;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] secrets::SecretsError),
    #[error(transparent)]
    Artifacts(#[from] artifacts::ArtifactError),
    #[error("runtime: {0}")]
    Runtime(#[from] runtime::Error),
    #[error("{0}")]
    Policy(String),
    #[error("{0}")]
    Conflict(String),
}

impl ServiceError {
    pub fn code(&self) -> Code {
        match self {
            ServiceError::Invalid(_) => Code::InvalidArgument,
            ServiceError::Store(e) => e.code(),
            ServiceError::Keys(e) => e.code(),
            ServiceError::Artifacts(e) => e.code(),
            ServiceError::Runtime(_) => Code::Internal,
            ServiceError::Policy(_) => Code::PolicyViolation,
            ServiceError::Conflict(_) => Code::Conflict,
        }
    }
}

pub type Result<T> = std::result::Result<T, ServiceError>;

/// Events `status` shows.
const STATUS_EVENTS: u32 = 8;

/// Timings of the reconciler.
#[derive(Debug, Clone)]
pub struct ServicesConfig {
    /// How often desired and running state are compared.
    pub tick: Duration,
    /// After draining a replica, how long the edge gets to stop sending to it before it
    /// is stopped (at least the edge's poll interval plus the longest request expected).
    pub drain: Duration,
    /// Where artifacts are unpacked (one directory per revision).
    pub work_dir: PathBuf,
    pub autoscale: AutoscaleConfig,
    pub isolation: Isolation,
}

/// How replicas are isolated from the machine and from each other (decided at start-up,
/// see `runtime::sandbox`).
#[derive(Debug, Clone)]
pub struct Isolation {
    pub mode: runtime::IsolationMode,
    /// The tenants' uids; required unless `mode` is `none`.
    pub uids: Option<Arc<runtime::TenantUids>>,
}

impl Default for Isolation {
    /// None: replicas run as Gantry's own user.
    fn default() -> Self {
        Isolation {
            mode: runtime::IsolationMode::None,
            uids: None,
        }
    }
}

/// Services of one installation, and the state the reconciler keeps between ticks.
pub struct Services {
    pub(crate) store: Arc<Store>,
    pub(crate) keyring: Arc<secrets::Keyring>,
    pub(crate) registry: Arc<artifacts::Registry>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) config: ServicesConfig,
    /// Replicas whose health check passed since they started.
    pub(crate) healthy: Mutex<HashSet<ReplicaId>>,
    /// Serializes ticks (a manual tick and the background loop).
    pub(crate) tick_lock: tokio::sync::Mutex<()>,
    /// Replicas a previous run left running, to adopt at the first tick.
    pub(crate) to_adopt: Mutex<Vec<runtime::PersistedReplica>>,
    pub(crate) autoscale_state: Mutex<autoscale::AutoscaleState>,
}

fn env_parts(scope: &Scope) -> Result<(Name, Name)> {
    match scope {
        Scope::Environment(t, e) => Ok((t.clone(), e.clone())),
        _ => Err(ServiceError::Invalid(
            "services live in an environment".into(),
        )),
    }
}

impl Services {
    pub fn new(
        store: Arc<Store>,
        keyring: Arc<secrets::Keyring>,
        registry: Arc<artifacts::Registry>,
        runtime: Arc<dyn Runtime>,
        config: ServicesConfig,
    ) -> Arc<Services> {
        Arc::new(Services {
            store,
            keyring,
            registry,
            runtime,
            config,
            healthy: Mutex::new(HashSet::new()),
            tick_lock: tokio::sync::Mutex::new(()),
            to_adopt: Mutex::new(Vec::new()),
            autoscale_state: Mutex::new(Default::default()),
        })
    }

    /// Replicas a previous run of Gantry left running (from the runtime's state): the first
    /// tick adopts those that still belong to a service, so a restart (even after SIGKILL)
    /// does not restart them.
    pub fn adopt_on_start(&self, replicas: Vec<runtime::PersistedReplica>) {
        *self.to_adopt.lock().unwrap_or_else(|e| e.into_inner()) = replicas;
    }

    /// Records `spec` as a new revision and makes it the target; the reconciler rolls it
    /// out. The artifact and the secrets must exist now (their values are read at start).
    pub async fn deploy(
        &self,
        actor: &Actor,
        scope: &Scope,
        service: &Name,
        spec: &DeploySpec,
    ) -> Result<RevisionInfo> {
        spec.validate()
            .map_err(|e| ServiceError::Invalid(e.message))?;
        let (tenant, _) = env_parts(scope)?;
        let r = ArtifactRef::parse(&format!("{tenant}/{}", spec.artifact))
            .map_err(|e| ServiceError::Invalid(e.message))?;
        let artifact = self.registry.record(&r).await.map_err(|e| match e {
            artifacts::ArtifactError::Store(StoreError::NotFound(_)) => {
                ServiceError::Invalid(format!("artifact {r} does not exist: push it first"))
            }
            e => e.into(),
        })?;
        self.check_policy(scope, &r).await?;
        // A program given by a relative path must be an executable file of the artifact.
        let program = &spec.command[0];
        if !program.starts_with('/') && program.contains('/') {
            let rel = program.trim_start_matches("./");
            match artifact.manifest.iter().find(|f| f.path == rel) {
                Some(f) if f.executable => {}
                Some(_) => {
                    return Err(ServiceError::Invalid(format!(
                        "{program} is not executable in artifact {r}: set its executable bit and push a new version"
                    )))
                }
                None => {
                    return Err(ServiceError::Invalid(format!(
                        "artifact {r} has no file {program}: the command runs in the unpacked artifact"
                    )))
                }
            }
        }
        for (var, name) in &spec.secrets {
            match self.keyring.secret_info(scope, name).await {
                Ok(_) => {}
                Err(secrets::SecretsError::Store(StoreError::NotFound(_))) => {
                    return Err(ServiceError::Invalid(format!(
                        "secret {scope}/{name} (for {var}) does not exist"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
        let created = self.ensure_routes(actor, scope, service, spec).await?;
        match self
            .store
            .deploy_revision(actor, scope, service.as_str(), spec)
            .await
        {
            Ok(rev) => Ok(rev),
            Err(e) => {
                self.undo_routes(actor, scope, &created).await;
                Err(e.into())
            }
        }
    }

    /// Removes the routes a refused deploy created: it leaves nothing behind.
    async fn undo_routes(&self, actor: &Actor, scope: &Scope, created: &[Name]) {
        for name in created {
            if let Err(e) = self.store.delete_route(actor, scope, name.as_str()).await {
                tracing::warn!(route = %name, error = %e, "cannot remove a route a refused deploy created");
            }
        }
    }

    /// Checks the deploy's routes: an existing one must send to this service (and have
    /// the host given, if one is); a missing one with a host is created. Returns the
    /// routes created.
    async fn ensure_routes(
        &self,
        actor: &Actor,
        scope: &Scope,
        service: &Name,
        spec: &DeploySpec,
    ) -> Result<Vec<Name>> {
        use model::routes::{RouteSpec, Target};
        let mut missing = Vec::new();
        for r in &spec.routes {
            match self.store.route(scope, r.name.as_str()).await {
                Ok(info) => {
                    if info.spec.to != Target::Service(service.clone()) {
                        return Err(ServiceError::Conflict(format!(
                            "route {} sends traffic elsewhere, not to service:{service}; delete it or give another route",
                            info.name
                        )));
                    }
                    if r.host
                        .as_ref()
                        .is_some_and(|h| !h.eq_ignore_ascii_case(&info.spec.host))
                        || r.path.as_ref().is_some_and(|p| *p != info.spec.path)
                    {
                        return Err(ServiceError::Conflict(format!(
                            "route {} exists with host {} and path {}",
                            info.name, info.spec.host, info.spec.path
                        )));
                    }
                }
                Err(StoreError::NotFound(_)) => {
                    let Some(host) = &r.host else {
                        return Err(ServiceError::Invalid(format!(
                            "route {scope}/{} does not exist: give its host (--route {}=HOST[/PATH]) or create it with `gantry route create`",
                            r.name, r.name
                        )));
                    };
                    let rs = RouteSpec::to_service(
                        host,
                        r.path.as_deref().unwrap_or("/"),
                        service.clone(),
                    );
                    rs.validate()
                        .map_err(|e| ServiceError::Invalid(format!("route {}: {e}", r.name)))?;
                    missing.push((r.name.clone(), rs));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut created = Vec::new();
        for (name, rs) in missing {
            match self
                .store
                .create_route(actor, scope, name.as_str(), &rs)
                .await
            {
                Ok(_) => created.push(name),
                Err(e) => {
                    self.undo_routes(actor, scope, &created).await;
                    return Err(e.into());
                }
            }
        }
        Ok(created)
    }

    /// Refuses an artifact whose findings the artifact policy blocks in this kind of
    /// environment. Rollbacks are not checked: returning to a revision that ran is how an
    /// incident ends, and the policy must not stand in its way.
    async fn check_policy(&self, scope: &Scope, r: &ArtifactRef) -> Result<()> {
        let (tenant, env) = env_parts(scope)?;
        let kind = self.store.environment(&tenant, &env).await?.kind;
        let block = self.store.artifact_policy().await?.for_kind(kind);
        // Scanned only when the policy could refuse something here.
        if block == model::scan::BlockAt::None {
            return Ok(());
        }
        let Some(scan) = self.registry.scan(r).await? else {
            return Ok(());
        };
        let blocked: Vec<_> = scan
            .findings
            .iter()
            .filter(|f| block.blocks(f.severity))
            .collect();
        if blocked.is_empty() {
            return Ok(());
        }
        let mut named: Vec<String> = blocked
            .iter()
            .take(5)
            .map(|f| {
                format!(
                    "{} ({}, {}@{})",
                    f.advisory,
                    f.severity.as_str(),
                    f.package,
                    f.version
                )
            })
            .collect();
        if blocked.len() > 5 {
            named.push(format!("and {} more", blocked.len() - 5));
        }
        Err(ServiceError::Policy(format!(
            "the artifact policy refuses {r} in {} environments: {} finding(s) of a refused severity: {}; upgrade the packages and push a new version (see `gantry artifact show`)",
            kind.as_str(),
            blocked.len(),
            named.join(", ")
        )))
    }

    /// A service's desired state and its replicas as the runtime sees them.
    pub async fn status(&self, scope: &Scope, service: &Name) -> Result<ServiceInfo> {
        let mut info = self.store.service(scope, service.as_str()).await?;
        info.replicas = self.replicas_of(scope, service).await;
        info.events = self
            .store
            .service_events(scope, service.as_str(), STATUS_EVENTS)
            .await?;
        Ok(info)
    }

    pub async fn list(&self, scope: &Scope) -> Result<Vec<ServiceInfo>> {
        let mut out = self.store.services(scope).await?;
        for s in &mut out {
            if let Some(name) = s.name.rsplit('/').next().and_then(|n| Name::parse(n).ok()) {
                s.replicas = self.replicas_of(scope, &name).await;
            }
        }
        Ok(out)
    }

    pub(crate) async fn replicas_of(&self, scope: &Scope, service: &Name) -> Vec<ServiceReplica> {
        let healthy = self
            .healthy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Ok((t, e)) = env_parts(scope) else {
            return Vec::new();
        };
        self.runtime
            .list()
            .await
            .into_iter()
            .filter(|r| r.id.tenant == t && r.id.environment == e && &r.id.service == service)
            .map(|r| ServiceReplica {
                id: r.id.to_string(),
                revision: r.id.revision,
                state: format!("{:?}", r.state).to_lowercase(),
                healthy: healthy.contains(&r.id),
                port: r.port,
                pid: r.pid,
                restarts: r.restarts,
                isolation: Some(r.isolation.to_string()),
                uid: r.uid,
            })
            .collect()
    }

    pub async fn history(&self, scope: &Scope, service: &Name) -> Result<Vec<RevisionInfo>> {
        self.store.service(scope, service.as_str()).await?;
        Ok(self.store.revisions(scope, service.as_str()).await?)
    }

    /// Makes an earlier revision the target again: `to`, or the last stable one.
    pub async fn rollback(
        &self,
        actor: &Actor,
        scope: &Scope,
        service: &Name,
        to: Option<u64>,
    ) -> Result<ServiceInfo> {
        let s = self.store.service(scope, service.as_str()).await?;
        let to = match to {
            Some(n) => n,
            None => {
                // The newest revision before the target that ran healthy.
                let revs = self.store.revisions(scope, service.as_str()).await?;
                revs.iter()
                    .filter(|r| r.number < s.target_revision)
                    .find(|r| {
                        matches!(
                            r.status,
                            model::services::RevisionStatus::Active
                                | model::services::RevisionStatus::Superseded
                        )
                    })
                    .map(|r| r.number)
                    .ok_or_else(|| {
                        ServiceError::Invalid(format!(
                            "service {scope}/{service} has no earlier healthy revision to return to"
                        ))
                    })?
            }
        };
        if to == s.target_revision {
            return Err(ServiceError::Invalid(format!(
                "service {scope}/{service} already runs revision {to}"
            )));
        }
        let change = ServiceChange {
            target_revision: Some(to),
            state: Some(ServiceState::Running),
            message: Some(Some(format!(
                "rolled back to revision {to} by {}",
                actor.principal
            ))),
            ..Default::default()
        };
        Ok(self
            .store
            .update_service(
                actor,
                scope,
                service.as_str(),
                &change,
                "service.rollback",
                format!("to={to}"),
            )
            .await?)
    }

    pub async fn scale(
        &self,
        actor: &Actor,
        scope: &Scope,
        service: &Name,
        replicas: u32,
    ) -> Result<ServiceInfo> {
        if replicas == 0 || replicas > model::services::MAX_REPLICAS {
            return Err(ServiceError::Invalid(format!(
                "replicas must be 1..{} (use `service stop` to run none)",
                model::services::MAX_REPLICAS
            )));
        }
        let change = ServiceChange {
            desired_replicas: Some(replicas),
            ..Default::default()
        };
        Ok(self
            .store
            .update_service(
                actor,
                scope,
                service.as_str(),
                &change,
                "service.scale",
                format!("replicas={replicas}"),
            )
            .await?)
    }

    pub async fn set_running(
        &self,
        actor: &Actor,
        scope: &Scope,
        service: &Name,
        running: bool,
    ) -> Result<ServiceInfo> {
        let (state, action) = if running {
            (ServiceState::Running, "service.start")
        } else {
            (ServiceState::Stopped, "service.stop")
        };
        let change = ServiceChange {
            state: Some(state),
            ..Default::default()
        };
        Ok(self
            .store
            .update_service(
                actor,
                scope,
                service.as_str(),
                &change,
                action,
                String::new(),
            )
            .await?)
    }

    pub async fn delete(&self, actor: &Actor, scope: &Scope, service: &Name) -> Result<()> {
        Ok(self
            .store
            .delete_service(actor, scope, service.as_str())
            .await?)
    }

    /// The last `lines` log lines of the service's replicas (or of replica `index`).
    pub async fn logs(
        &self,
        scope: &Scope,
        service: &Name,
        index: Option<u32>,
        lines: usize,
    ) -> Result<Vec<String>> {
        self.store.service(scope, service.as_str()).await?;
        let (t, e) = env_parts(scope)?;
        let mut out = Vec::new();
        for r in self.runtime.list().await {
            if r.id.tenant == t
                && r.id.environment == e
                && &r.id.service == service
                && index.is_none_or(|i| r.id.index == i)
            {
                for l in self.runtime.logs_tail(&r.id, lines).await? {
                    out.push(format!("{} {l}", r.id));
                }
            }
        }
        Ok(out)
    }

    /// Runs `tick` every `config.tick` until the task is dropped.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(self.config.tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if let Err(e) = self.tick().await {
                    tracing::warn!(error = %e, "service reconciler tick failed; retrying next tick");
                }
            }
        })
    }
}
