//! A process killed between commits leaves a store that reopens consistent, with every
//! acknowledged event in it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use eventstore::conformance::fixtures::T0;
use eventstore::{EventBuilder, EventId, EventStore, Filter, Keys, Kind, Timestamp};
use layer1::{RedbConfig, RedbStore};

const CHILD_ENV: &str = "LAYER1_CRASH_CHILD_DIR";

/// Saves events from 8 concurrent tasks into the store at `dir`, printing each
/// acknowledged id, until `stop` events are acknowledged (0: forever).
async fn write_until(dir: &std::path::Path, stop: usize) -> Vec<EventId> {
    let store = Arc::new(RedbStore::open(RedbConfig::new(dir.join("l1.redb"))).unwrap());
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let (store, acked) = (store.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let keys = Keys::from_seed(w);
            for i in 0u64.. {
                let e = EventBuilder::new(Kind(if i % 5 == 0 { 10002 } else { 1 }), "crash")
                    .tag(["t", &format!("w{w}")])
                    .created_at(Timestamp(T0 + i))
                    .sign_deterministic(&keys);
                store.save(&e).await.unwrap();
                println!("acked {}", e.id());
                let mut a = acked.lock().unwrap();
                a.push(e.id());
                if stop > 0 && a.len() >= stop {
                    return;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ids = acked.lock().unwrap().clone();
    Arc::into_inner(store).unwrap().close().await.unwrap();
    ids
}

/// In the child process (env set): writes until killed. Run as a normal test it checks
/// the same store path with a clean shutdown instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_writer() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        write_until(std::path::Path::new(&dir), 0).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let acked = write_until(dir.path(), 400).await;
    let store = RedbStore::open(RedbConfig::new(dir.path().join("l1.redb"))).unwrap();
    assert!(store.check().await.unwrap().is_consistent());
    assert!(acked.len() >= 400);
}

#[test]
fn reopen_after_kill_is_consistent_and_keeps_acknowledged_events() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "crash::child_writer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let out = BufReader::new(child.stdout.take().unwrap());
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("acked ") {
            acked.push(EventId::from_hex(id.trim()).unwrap());
            if acked.len() == 3_000 {
                break;
            }
        }
    }
    // SIGKILL while the 8 writers keep saving: commits are cut off mid-flight.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(acked.len(), 3_000, "child stopped early");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = RedbStore::open(RedbConfig::new(dir.path().join("l1.redb"))).unwrap();
        let report = store.check().await.unwrap();
        assert!(report.is_consistent(), "{:?}", report.problems);
        assert!(report.events > 0);
        // Acknowledged means durable: each is held, or was replaced by a newer version.
        let mut missing = 0;
        for id in &acked {
            if store.count(&[Filter::new().id(*id)]).await.unwrap() == 0 {
                missing += 1;
            }
        }
        let replaceable = store
            .count(&[Filter::new().kind(Kind(10002))])
            .await
            .unwrap();
        assert!(
            replaceable <= 8,
            "one 10002 per writer key, got {replaceable}"
        );
        // Every 5th event per writer is a replaceable that the next one replaces.
        assert!(
            missing <= acked.len() / 5 + 8,
            "{missing} acknowledged events lost"
        );
        let regular = store.count(&[Filter::new().kind(Kind(1))]).await.unwrap();
        let acked_regular = acked.len() as u64 * 4 / 5;
        assert!(
            regular + 8 >= acked_regular,
            "{regular} regular held, ~{acked_regular} acked"
        );
    });
}
