//! The SQLite store's write-ahead log: copied into the database by the checkpoint thread
//! while the store runs, and kept bounded.

use model::Scope;
use store::audit::NewEvent;
use store::{Actor, Store};

/// Events written one batch each by the first test.
const EVENTS: i64 = 2000;

#[tokio::test]
async fn the_log_is_copied_into_the_database_while_the_store_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gantry.db");
    let wal = dir.path().join("gantry.db-wal");
    let store = Store::open(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let before = size(&db);
    // Each event is a batch of its own writing a few pages (the chain's head, the table,
    // its indexes): well past the 4,000 pages that wake the checkpoint thread, far from
    // the 16,000 at which the writer would checkpoint itself.
    for i in 0..EVENTS {
        let ev = NewEvent::success("seal.init", format!("seal-{i}"), Scope::Platform);
        store.record(&Actor::system(), ev).await.expect("record");
    }
    let mut copied = false;
    for _ in 0..500 {
        if size(&db) > before {
            copied = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        copied,
        "nothing was copied from the log: {} bytes",
        size(&db)
    );
    assert!(size(&wal) < 16_000 * 4096, "log of {} bytes", size(&wal));
    let report = store.audit_verify().await.expect("verify");
    assert!(report.intact, "{report:?}");
    assert_eq!(report.events, EVENTS);
}

/// The checkpoint thread copies the log at a lower CPU priority than the threads that
/// answer requests (nice 10), so a copy never keeps an answer waiting for a CPU.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_checkpoint_thread_runs_at_a_lower_priority() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gantry.db");
    let _store = Store::open(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");
    // Every store of this test process has its own checkpoint thread; all must be niced.
    let mut niced = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("tasks") {
        let path = task.expect("task").path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() != "store-ckpt" {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // Fields after the command name's closing parenthesis; nice is field 19 of stat.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let nice: i32 = rest
            .split_whitespace()
            .nth(16)
            .and_then(|f| f.parse().ok())
            .expect("nice");
        niced.push(nice);
    }
    assert!(!niced.is_empty(), "no store-ckpt thread");
    assert!(niced.iter().all(|n| *n == 10), "nice values {niced:?}");
}
