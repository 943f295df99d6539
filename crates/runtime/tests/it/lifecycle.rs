//! Start and stop, the port variable and a process listening on it, secrets that reach
//! the child and nothing else, log capture with rotation, following logs, restarts.

use std::time::Duration;

use runtime::{Env, Error, LogRotation, ReplicaSpec, ReplicaState, RestartMode, Runtime, Stream};

use crate::harness::*;

#[tokio::test]
async fn starts_on_the_allocated_port_and_stops() {
    let Some(py) = python3() else {
        eprintln!("SKIP: python3 not found");
        return;
    };
    let fx = Fixture::new();
    let rt = fx.runtime();
    std::fs::write(fx.path().join("hello.txt"), "hello from the artifact").unwrap();
    let spec = ReplicaSpec::new(
        id("web"),
        fx.path(),
        runtime::split_command(&format!(
            "sh -c 'exec {py} -m http.server \"$PORT\" --bind 127.0.0.1'"
        ))
        .unwrap(),
    );
    let h = rt.start(spec).await.unwrap();
    let port = h.port.expect("a port");
    let body = http_until(port, "/hello.txt", 200, 30).await;
    assert_eq!(body, "hello from the artifact");

    let st = rt.status(&h.id).await.unwrap();
    assert_eq!(st.state, ReplicaState::Running);
    assert_eq!(st.pid, Some(h.pid));
    assert_eq!(st.port, Some(port));
    assert!(st.started_at.is_some());
    assert_eq!(rt.list().await.len(), 1);
    assert!(matches!(
        rt.start(ReplicaSpec::new(id("web"), fx.path(), vec!["true".into()]))
            .await,
        Err(Error::AlreadyRunning(_))
    ));

    let end = rt.stop(&h.id, None).await.unwrap();
    assert_eq!(end.state, ReplicaState::Stopped);
    assert!(!alive(h.pid));
    assert!(
        http_get(port, "/").await.is_err(),
        "nothing listens any more"
    );
    assert!(rt.list().await.is_empty());
    assert!(matches!(rt.status(&h.id).await, Err(Error::NotFound(_))));
    // State file and FIFOs are gone; the log stays.
    let state: Vec<_> = std::fs::read_dir(fx.path().join("state"))
        .unwrap()
        .collect();
    assert!(state.is_empty(), "{state:?}");
    assert!(h.log_file.exists());
}

#[tokio::test]
async fn a_bad_command_fails_at_start() {
    let fx = Fixture::new();
    let rt = fx.runtime();
    let spec = ReplicaSpec::new(id("bad"), fx.path(), vec!["/nonexistent/program".into()]);
    let err = rt.start(spec).await.unwrap_err();
    assert!(matches!(err, Error::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/program"));
    assert!(rt.list().await.is_empty());
}

#[tokio::test]
async fn secrets_reach_the_child_and_nothing_else() {
    const SECRET: &str = "s3cr3t-Value-93f1c2";
    let fx = Fixture::new();
    let rt = fx.runtime();
    let mut spec = sh(
        &fx,
        "secret",
        // The script must not contain the secret itself: it prints a digest of it.
        r#"echo "secret-digest=$(printf %s "$DB_PASSWORD" | sha256sum | cut -d' ' -f1)"
           echo "home=${HOME:-unset}"; exec sleep 30"#,
    );
    spec.env = Env::new()
        .with("DB_PASSWORD", SECRET)
        .unwrap()
        .with("MODE", "test")
        .unwrap();
    let dbg = format!("{spec:?}");
    assert!(!dbg.contains(SECRET), "Debug leaks the secret: {dbg}");
    assert!(dbg.contains("DB_PASSWORD"));

    let h = rt.start(spec).await.unwrap();
    let lines = log_until(&rt, &h.id, "secret-digest=", 10).await;
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(SECRET));
    let want = format!("stdout | secret-digest={digest}");
    assert!(lines.iter().any(|l| l.ends_with(&want)), "{lines:?}");
    // The supervisor's own environment is not inherited.
    log_until(&rt, &h.id, "home=unset", 10).await;
    // The child's environment has it (that is the only place).
    let environ = std::fs::read(format!("/proc/{}/environ", h.pid)).unwrap_or_default();
    if !environ.is_empty() {
        assert!(String::from_utf8_lossy(&environ).contains(SECRET));
    }

    let status = rt.status(&h.id).await.unwrap();
    assert!(!format!("{status:?}").contains(SECRET));
    assert!(!serde_json::to_string(&status).unwrap().contains(SECRET));
    let files = fx.files();
    assert!(files
        .iter()
        .any(|f| f.extension().is_some_and(|e| e == "json")));
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET),
            "secret found in {}",
            f.display()
        );
    }
    rt.stop(&h.id, Some(Duration::from_secs(2))).await.unwrap();
}

#[tokio::test]
async fn logs_are_captured_prefixed_and_rotated() {
    let mut fx = Fixture::new();
    fx.rotation = LogRotation {
        max_bytes: 4096,
        files: 3,
    };
    let rt = fx.runtime();
    let mut spec = sh(
        &fx,
        "chatty",
        r#"i=0; while [ $i -lt 300 ]; do echo "out line $i"; i=$((i+1)); done
           echo "to stderr" >&2; printf 'no newline at the end'"#,
    );
    spec.restart.mode = RestartMode::Never;
    let h = rt.start(spec).await.unwrap();
    // A last line without a newline is written when the process exits.
    status_until(&rt, &h.id, 15, |s| s.state.is_final()).await;
    let lines = log_until(&rt, &h.id, "no newline at the end", 5).await;
    let base = h.log_file.clone();
    let rotated = |n: u32| base.with_extension(format!("log.{n}"));
    assert!(rotated(1).exists() && rotated(2).exists(), "rotated files");
    assert!(!rotated(3).exists(), "at most 3 files");
    for f in [base.clone(), rotated(1), rotated(2)] {
        assert!(
            std::fs::metadata(&f).unwrap().len() <= 4096,
            "{}",
            f.display()
        );
    }
    assert!(lines.iter().any(|l| l.ends_with("stdout | out line 299")));
    assert!(lines.iter().any(|l| l.ends_with("stderr | to stderr")));
    // `2025-01-31T12:00:00.123Z stdout | ...`
    let first = &lines[0];
    assert!(
        first.as_bytes()[4] == b'-' && first.contains('T'),
        "{first}"
    );
    // The oldest lines were rotated away; the newest are all there in order.
    assert!(!lines.iter().any(|l| l.ends_with("stdout | out line 0")));
    let tail = rt.logs_tail(&h.id, 3).await.unwrap();
    assert_eq!(tail.len(), 3);
    assert!(tail[2].ends_with("no newline at the end"), "{tail:?}");
    rt.stop(&h.id, None).await.unwrap();
}

#[tokio::test]
async fn follows_new_lines() {
    let fx = Fixture::new();
    let rt = fx.runtime();
    let spec = sh(
        &fx,
        "ticker",
        "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done",
    );
    let h = rt.start(spec).await.unwrap();
    let mut rx = rt.logs_follow(&h.id).unwrap();
    for _ in 0..3 {
        let line = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a line within 10s")
            .expect("open");
        assert_eq!(line.stream, Stream::Stdout);
        assert!(line.text.starts_with("tick "), "{line:?}");
    }
    rt.stop(&h.id, Some(Duration::from_secs(2))).await.unwrap();
}

#[tokio::test]
async fn restarts_with_backoff_after_exits() {
    let fx = Fixture::new();
    let rt = fx.runtime();
    let spec = sh(&fx, "crashy", "echo started; exit 3");
    let h = rt.start(spec).await.unwrap();
    let st = status_until(&rt, &h.id, 30, |s| s.restarts >= 3).await;
    let exit = st.last_exit.clone().expect("an exit");
    assert_eq!(exit.code, Some(3));
    assert!(exit.known);
    let lines = log_until(&rt, &h.id, "started", 5).await;
    assert!(lines.iter().filter(|l| l.ends_with("| started")).count() >= 3);
    // The port stays the same across restarts.
    assert_eq!(st.port, h.port);
    // A stop during the backoff ends it.
    let end = rt.stop(&h.id, None).await.unwrap();
    assert_eq!(end.state, ReplicaState::Stopped);
}

#[tokio::test]
async fn restart_policy_never_and_on_failure() {
    let fx = Fixture::new();
    let rt = fx.runtime();
    let mut ok = sh(&fx, "job-ok", "exit 0");
    ok.restart.mode = RestartMode::OnFailure;
    let mut bad = sh(&fx, "job-bad", "exit 1");
    bad.restart.mode = RestartMode::Never;
    let ok = rt.start(ok).await.unwrap();
    let bad = rt.start(bad).await.unwrap();
    let s = status_until(&rt, &ok.id, 10, |s| s.state.is_final()).await;
    assert_eq!((s.state, s.restarts), (ReplicaState::Stopped, 0));
    let s = status_until(&rt, &bad.id, 10, |s| s.state.is_final()).await;
    assert_eq!((s.state, s.restarts), (ReplicaState::Failed, 0));
    assert_eq!(s.last_exit.unwrap().code, Some(1));
    // A finished replica can be started again under the same id.
    let again = rt.start(sh(&fx, "job-bad", "exec sleep 30")).await.unwrap();
    rt.stop(&again.id, None).await.unwrap();
    rt.stop(&ok.id, None).await.unwrap();
}
