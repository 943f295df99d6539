//! Autoscaling between a revision's `replicas` (minimum) and `max_replicas` on one of two
//! metrics, as the revision says (`--autoscale`):
//! - `cpu`: each tick samples the CPU time of every replica's process group (from
//!   `/proc`); the use per replica is the CPU time between two samples over the wall time.
//! - `in_flight`: each tick samples the requests the edge has in flight to each replica
//!   (through a [`LoadGauge`]); the load per replica is the mean of the last samples.
//!
//! When the load per replica is off its target, the service's desired replicas become
//! `ceil(replicas x load / target)`, within the bounds, at most once per cool-down. The
//! rollout machinery does the rest.
//!
//! It must never go outside the revision's bounds, and never act on a single sample.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::services::{AutoscaleMetric, AutoscaleSpec, RevisionInfo, ServiceInfo};
use model::{Name, Scope};
use runtime::{ReplicaId, ReplicaStatus};
use store::services::ServiceChange;
use store::Actor;

use crate::{Result, Services};

/// In-flight samples averaged per decision, and the fewest a decision needs.
const IN_FLIGHT_WINDOW: usize = 10;
const IN_FLIGHT_MIN_SAMPLES: usize = 5;

/// Where the autoscaler reads the requests in flight to each replica: the edge that runs
/// beside the control plane implements it over its routing snapshots.
pub trait LoadGauge: Send + Sync {
    /// Requests in flight now, per upstream address.
    fn in_flight(&self) -> HashMap<SocketAddr, usize>;
}

/// Autoscaler settings.
#[derive(Debug, Clone)]
pub struct AutoscaleConfig {
    /// Target CPU per replica, in cores (0.6 = 60% of one core), for revisions that do
    /// not say what to follow.
    pub target_cpu: f64,
    /// Least time between two changes of one service.
    pub cooldown: Duration,
}

impl Default for AutoscaleConfig {
    fn default() -> Self {
        AutoscaleConfig {
            target_cpu: 0.6,
            cooldown: Duration::from_secs(60),
        }
    }
}

/// What the autoscaler remembers between ticks.
#[derive(Default)]
pub(crate) struct AutoscaleState {
    /// Last CPU sample per replica: (CPU seconds, when).
    samples: HashMap<ReplicaId, (f64, Instant)>,
    /// Last in-flight samples (per replica) per service.
    in_flight: HashMap<String, VecDeque<f64>>,
    /// Last change per service.
    changed: HashMap<String, Instant>,
    /// The edge's gauge, once the edge runs.
    pub(crate) gauge: Option<Arc<dyn LoadGauge>>,
}

/// CPU seconds used so far by every process in process group `pgid`.
fn group_cpu_seconds(pgid: u32) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    let mut total = 0u64;
    let mut seen = false;
    for entry in std::fs::read_dir("/proc").ok()? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command (which may hold spaces): state ppid pgrp ... utime(14)
        // stime(15), counted from the field after ")".
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 13 || f[2].parse::<u32>().ok() != Some(pgid) {
            continue;
        }
        let (u, s) = (
            f[11].parse::<u64>().unwrap_or(0),
            f[12].parse::<u64>().unwrap_or(0),
        );
        total += u + s;
        seen = true;
    }
    seen.then_some(total as f64 / ticks)
}

impl Services {
    /// Gives the autoscaler the edge's in-flight counts (for `in_flight` revisions).
    pub fn set_load_gauge(&self, gauge: Arc<dyn LoadGauge>) {
        self.autoscale_state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .gauge = Some(gauge);
    }

    /// The load per replica of `mine` on `metric`, when there is enough to decide on.
    fn load_per_replica(
        &self,
        st: &mut AutoscaleState,
        service: &str,
        metric: AutoscaleMetric,
        mine: &[&ReplicaStatus],
        now: Instant,
    ) -> Option<f64> {
        match metric {
            AutoscaleMetric::Cpu => {
                let mut use_sum = 0.0;
                let mut measured = 0usize;
                for r in mine {
                    let Some(pid) = r.pid else { continue };
                    let Some(cpu) = group_cpu_seconds(pid) else {
                        continue;
                    };
                    if let Some((before, at)) = st.samples.insert(r.id.clone(), (cpu, now)) {
                        let wall = now.duration_since(at).as_secs_f64();
                        if wall > 0.2 && cpu >= before {
                            use_sum += (cpu - before) / wall;
                            measured += 1;
                        }
                    }
                }
                (measured > 0 && measured == mine.len()).then(|| use_sum / measured as f64)
            }
            AutoscaleMetric::InFlight => {
                let counts = st.gauge.as_ref()?.in_flight();
                let mut total = 0usize;
                for r in mine {
                    let port = r.port?;
                    total += counts
                        .get(&SocketAddr::from(([127, 0, 0, 1], port)))
                        .copied()
                        .unwrap_or(0);
                }
                let window = st.in_flight.entry(service.to_string()).or_default();
                window.push_back(total as f64 / mine.len().max(1) as f64);
                while window.len() > IN_FLIGHT_WINDOW {
                    window.pop_front();
                }
                (window.len() >= IN_FLIGHT_MIN_SAMPLES)
                    .then(|| window.iter().sum::<f64>() / window.len() as f64)
            }
        }
    }

    /// One autoscaling decision for service `s` running revision `rev` with `mine`.
    pub(crate) async fn autoscale(
        &self,
        s: &ServiceInfo,
        scope: &Scope,
        name: &Name,
        rev: &RevisionInfo,
        mine: &[&ReplicaStatus],
    ) -> Result<()> {
        let Some(max) = rev.spec.max_replicas.filter(|m| *m > rev.spec.replicas) else {
            return Ok(());
        };
        if mine.is_empty() {
            return Ok(());
        }
        let min = rev.spec.replicas;
        let spec = rev.spec.autoscale.unwrap_or(AutoscaleSpec {
            metric: AutoscaleMetric::Cpu,
            target: self.config.autoscale.target_cpu,
        });
        let now = Instant::now();
        let per_replica = {
            let mut st = self
                .autoscale_state
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let Some(load) = self.load_per_replica(&mut st, &s.name, spec.metric, mine, now) else {
                return Ok(());
            };
            if st
                .changed
                .get(&s.name)
                .is_some_and(|t| now.duration_since(*t) < self.config.autoscale.cooldown)
            {
                return Ok(());
            }
            load
        };
        let current = s.desired_replicas;
        let wanted = ((current as f64 * per_replica / spec.target).ceil() as u32).clamp(min, max);
        if wanted == current {
            return Ok(());
        }
        let unit = match spec.metric {
            AutoscaleMetric::Cpu => "cores",
            AutoscaleMetric::InFlight => "requests in flight",
        };
        let msg = format!(
            "autoscaled from {current} to {wanted} replicas ({per_replica:.2} {unit} per replica, target {:.2})",
            spec.target
        );
        tracing::info!(service = %s.name, "{msg}");
        let change = ServiceChange {
            desired_replicas: Some(wanted),
            message: Some(Some(msg.clone())),
            ..Default::default()
        };
        self.store
            .update_service(
                &Actor::system(),
                scope,
                name.as_str(),
                &change,
                "service.autoscale",
                msg,
            )
            .await?;
        let mut st = self
            .autoscale_state
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        st.changed.insert(s.name.clone(), now);
        // The next decision measures the new replica count afresh.
        st.in_flight.remove(&s.name);
        Ok(())
    }
}
