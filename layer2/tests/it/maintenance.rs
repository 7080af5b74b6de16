//! Cluster maintenance in PostgreSQL: one node's turn at a time, purges recorded in the
//! removal log other nodes follow, and pruning that log with its horizon recorded.

use std::time::Duration;

use eventstore::{EventBuilder, EventStore, Filter, Keys, Kind, Purge, Timestamp};
use layer2::testsupport::test_database;

use crate::store_on;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_at_a_time_takes_maintenance_and_runs_space_out() {
    let db = test_database().await;
    let (a, b) = (store_on(&db).await, store_on(&db).await);
    let hour = Duration::from_secs(3_600);
    let turn = a.maintenance_turn(hour).await.unwrap();
    assert!(
        turn.is_some(),
        "a fresh cluster's first offer takes the turn"
    );
    // Held by A: B gets nothing, however due it thinks a run is.
    assert!(b.maintenance_turn(Duration::ZERO).await.unwrap().is_none());
    turn.unwrap().finish(true).await;
    // Released, but A ran less than an hour ago: not due for anyone.
    assert!(b.maintenance_turn(hour).await.unwrap().is_none());
    assert!(a.maintenance_turn(hour).await.unwrap().is_none());
    // Due again (a zero interval): B takes over.
    let t = b.maintenance_turn(Duration::ZERO).await.unwrap();
    assert!(t.is_some());
    // A turn dropped without finishing (a node that died) releases the lock too.
    drop(t);
    let mut taken = None;
    for _ in 0..50 {
        taken = a.maintenance_turn(Duration::ZERO).await.unwrap();
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(taken.is_some(), "a dead holder's lock was never released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_reach_the_removal_log_and_pruning_records_its_horizon() {
    let db = test_database().await;
    let store = store_on(&db).await;
    let k = Keys::from_seed(31);
    let events: Vec<_> = (0..12u64)
        .map(|i| {
            EventBuilder::new(Kind(7), "+")
                .created_at(Timestamp(1_700_000_000 + i))
                .sign(&k)
        })
        .collect();
    for e in &events {
        store.save(e).await.unwrap();
    }
    let start = store.db_now().await.unwrap();
    let what = Purge::Matching(Filter::new().kind(Kind(7)));
    assert_eq!(store.purge(&what, 5).await.unwrap().len(), 5);
    assert_eq!(store.purge(&what, 100).await.unwrap().len(), 7);
    assert!(store.purge(&what, 100).await.unwrap().is_empty());
    // Every removal is in the log, for other nodes' L1s.
    let page = store
        .changes(layer2::FeedPositions::start(start, Duration::ZERO), 1_000)
        .await
        .unwrap();
    let mut removed = page.changes.removed.clone();
    removed.sort();
    let mut ids: Vec<_> = events.iter().map(|e| e.id()).collect();
    ids.sort();
    assert_eq!(removed, ids);
    assert_eq!(store.log_horizon().await.unwrap(), None);
    assert!(
        store.resumable(0, 0).await.unwrap(),
        "nothing pruned: any cursor resumes"
    );
    // Rows younger than the horizon stay; the horizon is recorded either way.
    assert_eq!(
        store
            .prune_removed(Duration::from_secs(3_600), 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.log_horizon().await.unwrap(),
        Some(Duration::from_secs(3_600))
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let short = Duration::from_millis(10);
    assert_eq!(store.prune_removed(short, 5).await.unwrap(), 5);
    assert_eq!(store.prune_removed(short, 100).await.unwrap(), 7);
    // The shortest horizon any pruner used is what a starting node must respect.
    assert_eq!(store.log_horizon().await.unwrap(), Some(short));
    assert!(
        !store.resumable(start, start).await.unwrap(),
        "a cursor from before the pruning"
    );
    let now = store.db_now().await.unwrap();
    assert!(store.resumable(now + 1_000_000, start).await.unwrap());
    let page = store
        .changes(layer2::FeedPositions::start(start, Duration::ZERO), 1_000)
        .await
        .unwrap();
    assert!(page.changes.removed.is_empty());
}
