//! Where the edge's worker threads run: wherever the scheduler puts them (the default), or
//! each pinned to a CPU of its own, as nginx's `worker_cpu_affinity auto` and HAProxy's
//! `cpu-map` do. Pinning keeps a worker's connections, its upstream pool and its caches on
//! one core; it is for machines whose cores the edge does not share with busier work,
//! because a pinned worker cannot move away from a busy core.
//!
//! This module must never fail a worker: a CPU that cannot be set is logged and the worker
//! runs unpinned.

/// How the workers of one listener are placed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Placement {
    /// The scheduler places and moves them.
    #[default]
    Float,
    /// Worker `i` runs on CPU `cpus[i % cpus.len()]` only.
    Pinned(Vec<usize>),
}

impl Placement {
    /// One worker per CPU this process may run on, each pinned to its own.
    pub fn pinned() -> Placement {
        Placement::Pinned(allowed_cpus())
    }

    /// The CPU worker `i` is pinned to, if any.
    pub fn cpu_for(&self, i: usize) -> Option<usize> {
        match self {
            Placement::Pinned(cpus) if !cpus.is_empty() => Some(cpus[i % cpus.len()]),
            _ => None,
        }
    }
}

/// The CPUs this process may run on (its affinity mask), in order.
pub fn allowed_cpus() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `set` is a zeroed cpu_set_t owned here; sched_getaffinity writes at most
        // its size, and CPU_ISSET reads within it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                return (0..libc::CPU_SETSIZE as usize)
                    .filter(|&c| libc::CPU_ISSET(c, &set))
                    .collect();
            }
        }
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n).collect()
}

/// Pins the calling thread to `cpu`; logs and leaves it unpinned if the system refuses.
pub(crate) fn pin_current_thread(cpu: usize) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `set` is a zeroed cpu_set_t owned here; CPU_SET writes within it (cpu is
        // below CPU_SETSIZE, checked) and sched_setaffinity(0) applies to the calling thread.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if cpu >= libc::CPU_SETSIZE as usize {
                -1
            } else {
                libc::CPU_SET(cpu, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
            }
        };
        if rc != 0 {
            tracing::warn!(cpu, error = %std::io::Error::last_os_error(), "cannot pin an edge worker");
        }
    }
    #[cfg(not(target_os = "linux"))]
    tracing::warn!(cpu, "pinning edge workers is supported on Linux only");
}
