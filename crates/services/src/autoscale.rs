//! Autoscaling between a revision's `replicas` (minimum) and `max_replicas` on the CPU its
//! replicas use: each tick samples the CPU time of every replica's process group (from
//! `/proc`), and when the average use per replica stays above or below the target, sets
//! the service's desired replicas to `ceil(replicas x use / target)`, within the bounds,
//! at most once per cool-down. The rollout machinery does the rest.
//!
//! It must never go outside the revision's bounds, and never act on a single sample.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use model::services::{RevisionInfo, ServiceInfo};
use model::{Name, Scope};
use runtime::{ReplicaId, ReplicaStatus};
use store::services::ServiceChange;
use store::Actor;

use crate::{Result, Services};

/// Autoscaler settings.
#[derive(Debug, Clone)]
pub struct AutoscaleConfig {
    /// Target CPU per replica, in cores (0.6 = 60% of one core).
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
    /// Last change per service.
    changed: HashMap<String, Instant>,
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
        let min = rev.spec.replicas;
        let now = Instant::now();
        let mut use_sum = 0.0;
        let mut measured = 0u32;
        {
            let mut st = self
                .autoscale_state
                .lock()
                .unwrap_or_else(|e| e.into_inner());
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
            if measured == 0 || measured < mine.len() as u32 {
                return Ok(());
            }
            if st
                .changed
                .get(&s.name)
                .is_some_and(|t| now.duration_since(*t) < self.config.autoscale.cooldown)
            {
                return Ok(());
            }
        }
        let per_replica = use_sum / measured as f64;
        let current = s.desired_replicas;
        let wanted = ((current as f64 * per_replica / self.config.autoscale.target_cpu).ceil()
            as u32)
            .clamp(min, max);
        if wanted == current {
            return Ok(());
        }
        let msg = format!(
            "autoscaled from {current} to {wanted} replicas ({per_replica:.2} cores per replica, target {:.2})",
            self.config.autoscale.target_cpu
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
        self.autoscale_state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .changed
            .insert(s.name.clone(), now);
        Ok(())
    }
}
