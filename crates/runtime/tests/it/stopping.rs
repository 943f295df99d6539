//! Stopping: SIGTERM first, SIGKILL after the grace period, and the whole process group.

use std::time::Duration;

use runtime::{ReplicaState, Runtime};

use crate::harness::*;

#[tokio::test]
async fn a_child_that_exits_on_term_stops_gracefully() {
    let fx = Fixture::new();
    let rt = fx.runtime();
    let spec = sh(
        &fx,
        "polite",
        "trap 'echo got TERM, bye; exit 0' TERM; echo ready; while :; do sleep 0.1; done",
    );
    let h = rt.start(spec).await.unwrap();
    log_until(&rt, &h.id, "ready", 10).await;
    let end = rt.stop(&h.id, Some(Duration::from_secs(20))).await.unwrap();
    assert_eq!(end.state, ReplicaState::Stopped);
    assert_eq!(
        end.last_exit.unwrap().code,
        Some(0),
        "exited by itself on TERM"
    );
    // The last line reaches the log file once the output pipe is drained (bounded wait).
    log_until(&rt, &h.id, "got TERM, bye", 10).await;
}

#[tokio::test]
async fn a_child_that_ignores_term_is_killed_after_the_grace_period() {
    let fx = Fixture::new();
    let rt = fx.runtime();
    let spec = sh(
        &fx,
        "stubborn",
        "trap 'echo got TERM, ignoring' TERM; echo ready; while :; do sleep 0.1; done",
    );
    let h = rt.start(spec).await.unwrap();
    log_until(&rt, &h.id, "ready", 10).await;
    let end = rt
        .stop(&h.id, Some(Duration::from_millis(1500)))
        .await
        .unwrap();
    assert_eq!(end.state, ReplicaState::Stopped);
    let exit = end.last_exit.unwrap();
    assert_eq!(exit.signal, Some(libc::SIGKILL), "{exit}");
    assert!(!alive(h.pid));
    let lines = rt.logs_tail(&h.id, 10).await.unwrap();
    assert!(
        lines.iter().any(|l| l.ends_with("got TERM, ignoring")),
        "{lines:?}"
    );
}

fn grandchild_pid(lines: &[String]) -> u32 {
    lines
        .iter()
        .find_map(|l| l.split("grandchild ").nth(1))
        .and_then(|p| p.trim().parse().ok())
        .expect("grandchild pid in the log")
}

#[tokio::test]
async fn stop_kills_the_whole_process_group() {
    let fx = Fixture::new();
    let rt = fx.runtime();
    // The grandchild ignores TERM too: only the group SIGKILL ends it.
    let spec = sh(
        &fx,
        "family",
        "sh -c 'trap \"\" TERM; exec sleep 300' & echo grandchild $!; wait",
    );
    let h = rt.start(spec).await.unwrap();
    let lines = log_until(&rt, &h.id, "grandchild ", 10).await;
    let gc = grandchild_pid(&lines);
    assert!(alive(gc));
    rt.stop(&h.id, Some(Duration::from_secs(1))).await.unwrap();
    eventually(10, "child and grandchild gone", || {
        !alive(h.pid) && !alive(gc)
    })
    .await;
}

#[tokio::test]
async fn leftovers_of_an_exited_leader_are_killed_before_the_restart() {
    let fx = Fixture::new();
    let rt = fx.runtime();
    let spec = sh(
        &fx,
        "orphaner",
        "sleep 300 & echo grandchild $!; sleep 0.2; exit 1",
    );
    let h = rt.start(spec).await.unwrap();
    let lines = log_until(&rt, &h.id, "grandchild ", 10).await;
    let gc = grandchild_pid(&lines);
    status_until(&rt, &h.id, 20, |s| s.restarts >= 1).await;
    eventually(10, "the first grandchild gone", || !alive(gc)).await;
    rt.stop(&h.id, Some(Duration::from_secs(1))).await.unwrap();
}
