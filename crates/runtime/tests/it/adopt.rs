//! Re-adoption: a "new" supervisor finds the replicas the old one left running.

use std::time::Duration;

use runtime::{AdoptOutcome, ReplicaSpec, ReplicaState, Runtime};

use crate::harness::*;

fn ticker(fx: &Fixture) -> ReplicaSpec {
    sh(
        fx,
        "ticker",
        "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done",
    )
}

#[tokio::test]
async fn a_new_supervisor_adopts_a_running_replica() {
    let fx = Fixture::new();
    let old = fx.runtime();
    let h = old.start(ticker(&fx)).await.unwrap();
    log_until(&old, &h.id, "tick 2", 10).await;
    drop(old); // the supervisor "crashes"; the replica keeps running
    assert!(alive(h.pid));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alive(h.pid), "still running without a supervisor");

    let new = fx.runtime();
    let persisted = new.persisted().unwrap();
    assert_eq!(persisted.len(), 1);
    assert_eq!(persisted[0].pid as u32, h.pid);
    let AdoptOutcome::Adopted {
        handle,
        spec_changed,
    } = new.adopt(ticker(&fx)).await.unwrap()
    else {
        panic!("not adopted")
    };
    assert!(!spec_changed);
    assert_eq!((handle.pid, handle.port), (h.pid, h.port));
    let st = new.status(&h.id).await.unwrap();
    assert!(st.adopted);
    assert_eq!(st.state, ReplicaState::Running);

    // Log capture resumes through the FIFOs.
    let mut rx = new.logs_follow(&h.id).unwrap();
    let line = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a line after adoption")
        .unwrap();
    assert!(line.text.starts_with("tick "), "{line:?}");

    // When the adopted process dies, it is restarted normally.
    // SAFETY: killing the test's own replica.
    unsafe { libc::kill(h.pid as i32, libc::SIGKILL) };
    let st = status_until(&new, &h.id, 20, |s| {
        s.state == ReplicaState::Running && s.pid.is_some_and(|p| p != h.pid)
    })
    .await;
    assert!(!st.adopted);
    assert_eq!(st.restarts, 1);
    assert!(
        !st.last_exit.unwrap().known,
        "an adopted process's status is unknown"
    );
    assert_eq!(st.port, h.port);
    let new_pid = st.pid.unwrap();
    new.stop(&h.id, Some(Duration::from_secs(2))).await.unwrap();
    assert!(!alive(new_pid));
}

#[tokio::test]
async fn adoption_reports_dead_and_unknown_replicas() {
    let fx = Fixture::new();
    let old = fx.runtime();
    let h = old.start(ticker(&fx)).await.unwrap();
    log_until(&old, &h.id, "tick 1", 10).await;
    drop(old);
    // SAFETY: killing the test's own replica.
    unsafe { libc::kill(-(h.pid as i32), libc::SIGKILL) };
    eventually(10, "replica dead", || !alive(h.pid)).await;

    let new = fx.runtime();
    match new.adopt(ticker(&fx)).await.unwrap() {
        AdoptOutcome::Dead { last } => assert_eq!(last.pid as u32, h.pid),
        other => panic!("expected Dead, got {other:?}"),
    }
    assert!(
        new.persisted().unwrap().is_empty(),
        "the stale state file is removed"
    );
    assert!(matches!(
        new.adopt(ticker(&fx)).await.unwrap(),
        AdoptOutcome::NotFound
    ));
    // The caller starts it again.
    let h2 = new.start(ticker(&fx)).await.unwrap();
    new.stop(&h2.id, Some(Duration::from_secs(2)))
        .await
        .unwrap();
}

#[tokio::test]
async fn adoption_notices_a_changed_spec() {
    let fx = Fixture::new();
    let old = fx.runtime();
    let h = old.start(ticker(&fx)).await.unwrap();
    drop(old);
    let new = fx.runtime();
    let mut changed = ticker(&fx);
    changed.command.push("extra-arg".into());
    match new.adopt(changed).await.unwrap() {
        AdoptOutcome::Adopted { spec_changed, .. } => assert!(spec_changed),
        other => panic!("expected Adopted, got {other:?}"),
    }
    let end = new.stop(&h.id, Some(Duration::from_secs(2))).await.unwrap();
    assert_eq!(end.state, ReplicaState::Stopped);
    assert!(!alive(h.pid));
}
