//! Tombstones decided elsewhere (`RedbStore::tombstone`).
//!
//! Regression: the poller tombstoned only events L1 already held, so a promotion still
//! queued when the tombstone arrived brought the deleted event back into L1.

use eventstore::{EventBuilder, EventStore, Filter, Keys, Reason, SaveOutcome};

use crate::support::open;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_for_an_event_not_held_refuses_it_later() {
    let dir = tempfile::tempdir().unwrap();
    let l1 = open(&dir, None);
    let store: &dyn EventStore = &l1;
    let author = Keys::from_seed(1);
    let other = Keys::from_seed(2);
    let e = EventBuilder::text_note("deleted elsewhere").sign(&author);
    assert_eq!(
        l1.tombstone(&[(e.id(), author.public_key())])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.save(&e).await.unwrap(),
        SaveOutcome::Rejected(Reason::Deleted),
        "the late promotion is refused"
    );

    // Held, and tombstoned by its author: removed. By someone else: kept.
    let f = EventBuilder::text_note("kept").sign(&author);
    assert!(store.save(&f).await.unwrap().is_new());
    assert_eq!(
        l1.tombstone(&[(f.id(), other.public_key())]).await.unwrap(),
        0
    );
    assert_eq!(
        store
            .query(&[Filter::new().id(f.id())])
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        l1.tombstone(&[(f.id(), author.public_key())])
            .await
            .unwrap(),
        1
    );
    assert!(
        store
            .query(&[Filter::new().id(f.id())])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(l1.check().await.unwrap().is_consistent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_store_forgets_old_tombstones_and_an_unbounded_one_never_does() {
    use layer1::{RedbConfig, RedbStore};

    let dir = tempfile::tempdir().unwrap();
    let mut config = RedbConfig::new(dir.path().join("l1.redb")).max_bytes(8 << 20);
    config.tombstone_ttl = std::time::Duration::from_secs(1);
    let l1 = RedbStore::open(config).unwrap();
    let mut config = RedbConfig::new(dir.path().join("l2.redb"));
    config.tombstone_ttl = std::time::Duration::from_secs(1);
    let l2 = RedbStore::open(config).unwrap();
    let author = Keys::from_seed(3);
    let e = EventBuilder::text_note("deleted long ago").sign(&author);
    let pair = [(e.id(), author.public_key())];
    let empty = l1.bytes_used();
    for s in [&l1, &l2] {
        s.tombstone(&pair).await.unwrap();
        assert_eq!(
            s.save(&e).await.unwrap(),
            SaveOutcome::Rejected(Reason::Deleted),
            "a young tombstone refuses"
        );
    }
    // The tombstone and its age entry count in the budget.
    assert_eq!(l1.bytes_used() - empty, 64 + 72);
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    // The next commit (any write) expires what is older than the time to live.
    let nothing = [eventstore::EventId([9; 32])];
    l1.forget(&nothing).await.unwrap();
    l2.forget(&nothing).await.unwrap();
    assert_eq!(
        l1.bytes_used(),
        empty,
        "the expired tombstone's bytes are given back"
    );
    assert!(
        l1.save(&e).await.unwrap().is_new(),
        "the bounded store forgot it"
    );
    assert_eq!(
        l2.save(&e).await.unwrap(),
        SaveOutcome::Rejected(Reason::Deleted),
        "the unbounded store (an authority) keeps its tombstones"
    );
    for s in [&l1, &l2] {
        let r = s.check().await.unwrap();
        assert!(r.is_consistent(), "{:?}", r.problems);
    }
}
