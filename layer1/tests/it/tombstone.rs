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

/// Regression (found by the floors property test under load): a NIP-09 request for an
/// id a bounded L1 did not hold left a tombstone, so when that id was a deletion request
/// L2 holds (evicted here, and no request deletes a request), its promotion was refused
/// for good while the floor learned from the same answer claimed it: an author's
/// newest event went missing from L1-answered queries. Such a request now refuses
/// every kind but a deletion request; an unbounded store (an authority) still refuses
/// the id whatever it turns out to be, as MemoryStore does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_an_id_not_held_does_not_refuse_a_deletion_request_in_a_cache() {
    let author = Keys::from_seed(3);
    let earlier = EventBuilder::new(eventstore::Kind::DELETION, "")
        .tag(["e", &"ab".repeat(32)])
        .sign(&author);
    let note = EventBuilder::text_note("deleted while evicted").sign(&author);
    let request = EventBuilder::new(eventstore::Kind::DELETION, "")
        .tag(["e".to_owned(), earlier.id().to_hex()])
        .tag(["e".to_owned(), note.id().to_hex()])
        .sign(&author);

    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir, Some(1 << 20));
    let store: &dyn EventStore = &cache;
    assert!(store.save(&request).await.unwrap().is_new());
    assert!(
        store.save(&earlier).await.unwrap().is_new(),
        "the earlier request, promoted later, is taken"
    );
    assert_eq!(
        store.save(&note).await.unwrap(),
        SaveOutcome::Rejected(Reason::Deleted),
        "the note the request deleted is refused"
    );
    let report = cache.check().await.unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
    // A tombstone decided elsewhere (L2's, through the poller) still refuses a request.
    let other = EventBuilder::new(eventstore::Kind::DELETION, "x").sign(&author);
    cache
        .tombstone(&[(other.id(), author.public_key())])
        .await
        .unwrap();
    assert_eq!(
        store.save(&other).await.unwrap(),
        SaveOutcome::Rejected(Reason::Deleted)
    );
    // The same request then a tombstone for the same id: one entry, counted once.
    cache
        .tombstone(&[(note.id(), author.public_key())])
        .await
        .unwrap();
    let report = cache.check().await.unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);

    let dir = tempfile::tempdir().unwrap();
    for authority in [
        Box::new(eventstore::MemoryStore::new()) as Box<dyn EventStore>,
        Box::new(open(&dir, None)),
    ] {
        assert!(authority.save(&request).await.unwrap().is_new());
        assert_eq!(
            authority.save(&earlier).await.unwrap(),
            SaveOutcome::Rejected(Reason::Deleted),
            "an authority never held it: the request's tombstone refuses it"
        );
    }
}
