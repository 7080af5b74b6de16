//! The change feed: every committed event appears, across consecutive polls with
//! look-back and de-duplication, exactly once, including commits out of sequence order.

use std::collections::HashSet;
use std::time::Duration;

use eventstore::{EventBuilder, EventId, EventStore, Keys, Timestamp};
use layer2::testsupport::test_database;

use crate::store_on;

/// One poll as a poller does it: every page from `cursor - lookback` on; returns the
/// changes and the next cursor.
async fn poll(
    store: &layer2::PgStore,
    cursor: i64,
    lookback: Duration,
    page: usize,
) -> (layer2::Changes, i64) {
    let next = store.db_now().await.unwrap();
    let mut from = layer2::FeedPositions::start(cursor, lookback);
    let mut all = layer2::Changes::default();
    loop {
        let p = store.changes(from, page).await.unwrap();
        all.events.extend(p.changes.events);
        all.deleted.extend(p.changes.deleted);
        all.removed.extend(p.changes.removed);
        from = p.next;
        if p.complete {
            return (all, next);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_see_every_event_once_even_when_commits_are_out_of_order() {
    let db = test_database().await;
    let store = store_on(&db).await;
    let keys = Keys::from_seed(3);
    let lookback = Duration::from_secs(2);
    let mut seen: HashSet<EventId> = HashSet::new();
    let mut delivered = Vec::new();
    let mut cursor = store.db_now().await.unwrap();
    let take = |(changes, next): (layer2::Changes, i64),
                cursor: &mut i64,
                seen: &mut HashSet<EventId>,
                delivered: &mut Vec<EventId>| {
        for e in changes.events {
            if seen.insert(e.id()) {
                delivered.push(e.id());
            }
        }
        *cursor = next;
    };

    // A slow transaction inserts first (early inserted_at) and commits last.
    let slow = EventBuilder::text_note("slow commit")
        .created_at(Timestamp(1_700_000_000))
        .sign(&keys);
    let mut slow_tx = store.pool().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (id, pubkey, created_at, kind, json) VALUES ($1, $2, $3, 1, $4)",
    )
    .bind(slow.id().0.to_vec())
    .bind(slow.pubkey().0.to_vec())
    .bind(1_700_000_000i64)
    .bind(slow.as_json().to_owned())
    .execute(&mut *slow_tx)
    .await
    .unwrap();

    let mut fast = Vec::new();
    for i in 0..50 {
        let e = EventBuilder::text_note(format!("fast {i}")).sign(&keys);
        store.save(&e).await.unwrap();
        fast.push(e.id());
        if i % 10 == 9 {
            take(
                poll(&store, cursor, lookback, 7).await,
                &mut cursor,
                &mut seen,
                &mut delivered,
            );
        }
    }
    assert!(!seen.contains(&slow.id()), "uncommitted rows are invisible");
    slow_tx.commit().await.unwrap();
    for _ in 0..3 {
        take(
            poll(&store, cursor, lookback, 7).await,
            &mut cursor,
            &mut seen,
            &mut delivered,
        );
    }
    let mut want: Vec<EventId> = fast.clone();
    want.push(slow.id());
    assert_eq!(delivered.len(), want.len(), "each event exactly once");
    let got: HashSet<_> = delivered.iter().copied().collect();
    assert_eq!(got, want.into_iter().collect::<HashSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_appear_in_the_feed() {
    let db = test_database().await;
    let store = store_on(&db).await;
    let keys = Keys::from_seed(4);
    let cursor = store.db_now().await.unwrap();
    let e = EventBuilder::text_note("bye").sign(&keys);
    store.save(&e).await.unwrap();
    let del = EventBuilder::new(eventstore::Kind::DELETION, "")
        .tag(["e".to_owned(), e.id().to_hex()])
        .sign(&keys);
    store.save(&del).await.unwrap();
    let (ch, _) = poll(&store, cursor, Duration::from_secs(1), 100).await;
    assert!(ch.deleted.contains(&(e.id(), keys.public_key())));
    let ids: Vec<_> = ch.events.iter().map(|e| e.id()).collect();
    assert!(ids.contains(&del.id()));
    assert!(
        !ids.contains(&e.id()),
        "the deleted event is gone from the feed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_events_are_skipped_but_positions_still_advance() {
    let db = test_database().await;
    let store = store_on(&db).await;
    let keys = Keys::from_seed(31);
    let start = store.db_now().await.unwrap();
    let evs: Vec<_> = (0..10)
        .map(|i| EventBuilder::text_note(format!("k{i}")).sign(&keys))
        .collect();
    for e in &evs {
        store.save(e).await.unwrap();
    }
    let known: HashSet<EventId> = evs.iter().step_by(2).map(|e| e.id()).collect();
    let from = layer2::FeedPositions::start(start, Duration::ZERO);
    let all = store.changes(from, 100).await.unwrap();
    let some = store
        .changes_except(from, 100, &|id| known.contains(id))
        .await
        .unwrap();
    assert_eq!(all.changes.events.len(), 10);
    let got: Vec<EventId> = some.changes.events.iter().map(|e| e.id()).collect();
    let want: Vec<EventId> = evs.iter().skip(1).step_by(2).map(|e| e.id()).collect();
    assert_eq!(got, want, "the unknown ones, in insert order");
    assert_eq!(some.next, all.next, "the page ends at the same position");
    assert!(some.complete);
}
