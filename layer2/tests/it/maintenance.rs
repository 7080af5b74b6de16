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

/// Tag rows of events no longer stored, and tag rows in all.
async fn tag_rows(store: &layer2::PgStore) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM tags t WHERE NOT EXISTS \
           (SELECT 1 FROM events e WHERE e.id = t.event_id)), (SELECT count(*) FROM tags)",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_an_event_leaves_takes_its_tag_rows_along() {
    let db = test_database().await;
    let store = store_on(&db).await;
    let k = Keys::from_seed(43);
    let pk = k.public_key().to_string();
    let now = Timestamp::now().0;
    let at = |kind: u16, s: u64, tags: &[&[&str]]| {
        let mut b = EventBuilder::new(Kind(kind), format!("{kind} at {s}"))
            .created_at(Timestamp(now - 1_000 + s))
            .tag(["t", "kept"]);
        for t in tags {
            b = b.tag(t.iter().copied());
        }
        b.sign(&k)
    };
    // Replaced, deleted by id (NIP-09), deleted by address, purged by filter, expired,
    // removed by the operator: each leaves with its tag rows.
    let profile = [at(0, 1, &[&["p", &pk]]), at(0, 2, &[&["p", &pk]])];
    let note = at(1, 3, &[&["e", &"ab".repeat(32)]]);
    let article = at(30023, 4, &[&["d", "a"]]);
    let reactions: Vec<_> = (0..5).map(|i| at(7, 10 + i, &[])).collect();
    let exp = (now + 3_600).to_string();
    let expiring = at(1, 20, &[&["expiration", &exp]]);
    let removed = at(1, 21, &[]);
    let kept = at(1, 22, &[&["t", "other"]]);
    let deletion = at(5, 30, &[&["e", &note.id().to_string()]]);
    let by_address = at(5, 31, &[&["a", &format!("30023:{pk}:a")]]);
    let mut all = vec![
        note.clone(),
        article.clone(),
        expiring,
        removed.clone(),
        kept,
    ];
    all.extend(profile.iter().cloned());
    all.extend(reactions);
    for e in &all {
        assert!(store.save(e).await.unwrap().is_new(), "{e:?}");
    }
    let (orphans, before) = tag_rows(&store).await;
    assert_eq!(orphans, 0);
    for d in [&deletion, &by_address] {
        assert!(store.save(d).await.unwrap().is_new());
    }
    let reactions_filter = Filter::new().kind(Kind(7));
    assert_eq!(
        store
            .purge(&Purge::Matching(reactions_filter), 100)
            .await
            .unwrap()
            .len(),
        5
    );
    let later = Timestamp(now + 7_200);
    assert_eq!(
        store
            .purge(&Purge::ExpiredBy(later), 100)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.delete(&[removed.id()]).await.unwrap(), 1);

    let (orphans, after) = tag_rows(&store).await;
    assert_eq!(orphans, 0, "tag rows outlived their events");
    // Before: the note (t, e), the article (t, d), the expiring, removed and kept notes
    // (t; t; t kept, t other), the second profile (t, p: the first took its rows when
    // it was replaced) and five reactions (t). After: the second profile, the kept
    // note and the two deletions (t, e; t, a).
    assert_eq!((before, after), (2 + 2 + 1 + 1 + 2 + 2 + 5, 2 + 2 + 2 + 2));
    let findings = store.check().await.unwrap();
    assert!(findings.is_empty(), "{findings:?}");
    // `check` finds a tag row left behind.
    sqlx::query(
        "INSERT INTO tags (event_id, name, value_key, created_at) VALUES ($1, 't', 'x', 1)",
    )
    .bind(vec![7u8; 32])
    .execute(store.pool())
    .await
    .unwrap();
    let findings = store.check().await.unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f.name == "orphan_tags" && f.count == 1),
        "{findings:?}"
    );
}
