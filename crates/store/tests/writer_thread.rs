//! The SQLite store's writer thread and its log-sync and checkpoint threads live as long as
//! their store: dropping the store ends them.
//! (A test binary of its own: it counts this process's threads by name.)

use model::Scope;
use store::audit::NewEvent;
use store::{Actor, Store};

fn writer_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| matches!(name.trim(), "store-writer" | "store-sync" | "store-ckpt"))
        .count()
}

/// The count of writer, sync and checkpoint threads once it is `want`, or after 2 s.
async fn settles_at(want: usize) -> usize {
    for _ in 0..200 {
        if writer_threads() == want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    writer_threads()
}

#[tokio::test]
async fn dropping_a_sqlite_store_ends_its_writer_thread() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("gantry.db").display());
    for _ in 0..3 {
        let store = Store::open(&url).await.expect("open");
        // A new thread takes its name once it runs.
        assert_eq!(settles_at(3).await, 3);
        let ev = NewEvent::success("seal.init", "seal".into(), Scope::Platform);
        store.record(&Actor::system(), ev).await.expect("record");
        drop(store);
        assert_eq!(
            settles_at(0).await,
            0,
            "the writer thread outlived its store"
        );
    }
    let store = Store::open(&url).await.expect("reopen");
    let report = store.audit_verify().await.expect("verify");
    assert!(report.intact, "{report:?}");
    assert_eq!(report.events, 3);
}
