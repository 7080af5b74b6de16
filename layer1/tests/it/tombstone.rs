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
