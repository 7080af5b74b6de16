//! Many writers on separate pools (as many nodes would be) racing on one address, and
//! deletions racing re-submissions.

use std::sync::Arc;

use eventstore::{EventBuilder, EventStore, Filter, Keys, Kind, MemoryStore, Timestamp};
use layer2::testsupport::test_database;
use layer2::{PgConfig, PgStore};

use crate::store_on;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_replaceable_and_addressable_writes_leave_one_winner() {
    let db = test_database().await;
    let keys = Keys::from_seed(77);
    // 8 "nodes", each its own pool, each writing 12 versions of the same two addresses.
    let mut stores = Vec::new();
    for _ in 0..8 {
        stores.push(Arc::new(store_on(&db).await));
    }
    let mut all = Vec::new();
    for node in 0..8u64 {
        for v in 0..12u64 {
            // Many equal timestamps so the lowest-id rule decides often.
            let at = Timestamp(1_700_000_000 + (node * 7 + v * 3) % 10);
            all.push((
                node,
                EventBuilder::new(Kind(10002), format!("relays {node}/{v}"))
                    .created_at(at)
                    .sign_deterministic(&keys),
            ));
            all.push((
                node,
                EventBuilder::new(Kind(30023), format!("article {node}/{v}"))
                    .tag(["d", "race"])
                    .created_at(at)
                    .sign_deterministic(&keys),
            ));
        }
    }
    let mut tasks = Vec::new();
    for node in 0..8u64 {
        let store = stores[node as usize].clone();
        let mine: Vec<_> = all
            .iter()
            .filter(|(n, _)| *n == node)
            .map(|(_, e)| e.clone())
            .collect();
        tasks.push(tokio::spawn(async move {
            for e in mine {
                store.save(&e).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let oracle = MemoryStore::new();
    for (_, e) in &all {
        oracle.save(e).await.unwrap();
    }
    for kind in [10002, 30023] {
        let f = vec![Filter::new().kind(Kind(kind))];
        let got = stores[0].query(&f).await.unwrap();
        let want = oracle.query(&f).await.unwrap();
        assert_eq!(got.len(), 1, "kind {kind}: exactly one winner");
        assert_eq!(got[0].id(), want[0].id(), "kind {kind}: the NIP-01 winner");
    }
}

/// One round: `b` re-submits a note again and again while `a` deletes it; it must end
/// deleted, and refused when sent again.
async fn deletion_races_resubmissions(a: &Arc<PgStore>, b: &Arc<PgStore>, seed: u64, round: u64) {
    let keys = Keys::from_seed(seed);
    let target = EventBuilder::text_note(format!("doomed {seed} {round}"))
        .created_at(Timestamp(1_700_000_000 + round))
        .sign_deterministic(&keys);
    let deletion = EventBuilder::new(Kind::DELETION, "")
        .tag(["e".to_owned(), target.id().to_hex()])
        .created_at(Timestamp(1_700_000_100 + round))
        .sign_deterministic(&keys);
    let resubmit = {
        let (b, target) = (b.clone(), target.clone());
        tokio::spawn(async move {
            for _ in 0..20 {
                b.save(&target).await.unwrap();
            }
        })
    };
    a.save(&deletion).await.unwrap();
    resubmit.await.unwrap();
    let got = a.query(&[Filter::new().id(target.id())]).await.unwrap();
    assert!(got.is_empty(), "round {round}: deleted event survived");
    let again = b.save(&target).await.unwrap();
    assert_eq!(
        again,
        eventstore::SaveOutcome::Rejected(eventstore::Reason::Deleted)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_racing_resubmissions_ends_deleted() {
    let db = test_database().await;
    for round in 0..10u64 {
        // Two nodes: B re-submits while A deletes.
        let a = Arc::new(store_on(&db).await);
        let b = Arc::new(store_on(&db).await);
        deletion_races_resubmissions(&a, &b, 5, round).await;
    }
}

/// One store's two write lanes (plain events, and the rest) are concurrent writers too:
/// a deletion racing re-submissions of its target through the same store ends deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_racing_resubmissions_in_one_store_ends_deleted() {
    let db = test_database().await;
    let store = Arc::new(store_on(&db).await);
    for round in 0..10u64 {
        deletion_races_resubmissions(&store, &store, 9, round).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stores_migrate_one_empty_database_at_once() {
    let db = test_database().await;
    let connect = || PgStore::connect(PgConfig::new(db.url.clone()));
    let (a, b, c) = tokio::join!(connect(), connect(), connect());
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let e = EventBuilder::text_note("after migration").sign(&Keys::from_seed(1));
    a.save(&e).await.unwrap();
    assert_eq!(b.count(&[Filter::new()]).await.unwrap(), 1);
    assert_eq!(c.query(&[Filter::new()]).await.unwrap()[0].id(), e.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_is_reported_as_unavailable() {
    let db = test_database().await;
    let store = store_on(&db).await;
    store.pool().close().await;
    let e = EventBuilder::text_note("nowhere to go").sign(&Keys::from_seed(1));
    let err = store.save(&e).await.unwrap_err();
    assert!(
        matches!(err, eventstore::StoreError::Unavailable(_)),
        "got {err:?}"
    );
}

/// A writer keeps its connection from batch to batch (`store.rs`, `Held`), and gives
/// it back when idle: one the server ended meanwhile (a restart, an administrator) must
/// not fail the next save.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_writer_connection_the_server_ended_is_replaced_without_failing_a_save() {
    use sqlx::Connection;
    let db = test_database().await;
    // One writer, so the second save is sure to meet the first one's connection.
    let store = PgStore::connect(PgConfig {
        writers: 1,
        ..PgConfig::new(db.url.clone())
    })
    .await
    .unwrap();
    let keys = Keys::from_seed(5);
    let first = EventBuilder::text_note("before").sign(&keys);
    assert!(store.save(&first).await.unwrap().is_new());
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND backend_type = 'client backend') t",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(ended >= 1, "the writer's connection was among those ended");
    // Idle long enough for the writer to give it back, as after an outage.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let second = EventBuilder::text_note("after").sign(&keys);
    let saved = store.save(&second).await;
    assert!(
        saved.as_ref().is_ok_and(eventstore::SaveOutcome::is_new),
        "got {saved:?}"
    );
    assert_eq!(store.count(&[Filter::new()]).await.unwrap(), 2);
}

/// With no connection to spare, a writer gives its connection back after each batch:
/// queries and the poller must still get one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_keeps_no_connection_when_the_pool_has_none_to_spare() {
    let db = test_database().await;
    let store = PgStore::connect(PgConfig {
        writers: 1,
        max_connections: 1,
        acquire_timeout: std::time::Duration::from_secs(2),
        ..PgConfig::new(db.url.clone())
    })
    .await
    .unwrap();
    let e = EventBuilder::text_note("one connection").sign(&Keys::from_seed(6));
    assert!(store.save(&e).await.unwrap().is_new());
    let got = store.query(&[Filter::new()]).await;
    assert_eq!(got.map(|v| v.len()).map_err(|e| e.to_string()), Ok(1));
}

/// `Pool::close` waits for every connection: one a writer keeps must come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_pool_after_writes_does_not_wait_on_a_kept_connection() {
    let db = test_database().await;
    let store = store_on(&db).await;
    let e = EventBuilder::text_note("then close").sign(&Keys::from_seed(8));
    assert!(store.save(&e).await.unwrap().is_new());
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), store.pool().close());
    assert!(closed.await.is_ok(), "the pool did not close within 10 s");
}
