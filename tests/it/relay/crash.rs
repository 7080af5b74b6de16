//! L1 with unsynced commits, the default with PostgreSQL (`l1_durability = "auto"`):
//! a node killed with SIGKILL loses the L1 commits made since its last synced one (the
//! one that recorded the poller's cursor), and at the next start its poller reads all
//! of that again from PostgreSQL. Checked in the L1 file itself, not through queries
//! (which L2 could answer): every acknowledged event is back in L1, and what was
//! deleted or replaced before the kill is not.

use std::path::Path;
use std::time::Duration;

use eventstore::{EventBuilder, EventId, Keys, Kind};
use layer1::{RedbConfig, RedbStore};
use layer2::testsupport::OwnCluster;

use super::client::{Client, note};
use super::outage::{free_addr, start_process, wait_healthy};

/// Which of `ids` the L1 file under `dir` holds (the node must be stopped).
async fn held_in_l1(dir: &Path, ids: &[EventId]) -> Vec<bool> {
    let l1 = RedbStore::open(RedbConfig::new(dir.join("l1.redb")).max_bytes(512 << 20))
        .expect("open the L1 file");
    let held = l1.contains(ids).await.expect("read L1");
    l1.close().await.expect("close L1");
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l1_rolled_back_by_sigkill_is_repaired_by_the_poller() {
    let pg = OwnCluster::start().expect("an own PostgreSQL cluster");
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = free_addr();
    let mut child = start_process(addr, &pg.url, dir.path());
    wait_healthy(addr).await;

    let mut c = Client::connect(&format!("ws://{addr}")).await;
    let keys: Vec<Keys> = (0..3).map(|i| Keys::from_seed(900 + i)).collect();
    let mut kept = Vec::new();
    for i in 0..240 {
        let e = note(&keys[i % 3], &format!("note {i}"));
        let (ok, msg) = c.publish(&e).await;
        assert!(ok, "{msg}");
        kept.push(e.id());
    }
    // A note deleted (NIP-09) and a profile replaced, just before the kill.
    let doomed = kept.pop().expect("a note");
    let deletion = EventBuilder::new(Kind(5), "")
        .tags(vec![vec!["e".into(), doomed.to_string()]])
        .sign(&keys[239 % 3]);
    assert!(c.publish(&deletion).await.0);
    kept.push(deletion.id());
    let old = EventBuilder::new(Kind(0), "{\"name\":\"old\"}")
        .created_at(eventstore::Timestamp(eventstore::Timestamp::now().0 - 10))
        .sign(&keys[0]);
    let new = EventBuilder::new(Kind(0), "{\"name\":\"new\"}").sign(&keys[0]);
    assert!(c.publish(&old).await.0);
    assert!(c.publish(&new).await.0);
    kept.push(new.id());
    drop(c);
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let after_kill = held_in_l1(dir.path(), &kept).await;
    let lost = after_kill.iter().filter(|h| !**h).count();
    eprintln!(
        "L1 lost {lost} of {} acknowledged events to the kill",
        kept.len()
    );

    // Start again, let the poller run a few times, stop cleanly.
    let mut child = start_process(addr, &pg.url, dir.path());
    wait_healthy(addr).await;
    let runs = async || {
        let (_, _, text) = super::client::http_get(addr, "/metrics", "*/*").await;
        super::http::metric(&text, "layer2_poll_runs_total")
    };
    let from = runs().await;
    for _ in 0..200 {
        if runs().await >= from + 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        runs().await >= from + 3.0,
        "the poller ran after the restart"
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(
        child.wait().expect("wait").success(),
        "SIGTERM ends it cleanly"
    );

    let held = held_in_l1(dir.path(), &kept).await;
    let missing: Vec<String> = kept
        .iter()
        .zip(&held)
        .filter(|(_, h)| !**h)
        .map(|(id, _)| id.to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "not back in L1 after the restart: {missing:?}"
    );
    let gone = held_in_l1(dir.path(), &[doomed, old.id()]).await;
    assert_eq!(
        gone,
        [false, false],
        "deleted and replaced events stay out of L1"
    );
}
