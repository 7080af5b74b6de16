//! The decoded-event cache (`layer1/src/hot.rs`) serves the events read most, and
//! never an event its store no longer holds: deleted, replaced or deleted by a NIP-09
//! request after it was read (and kept) are all gone from the answers.

use eventstore::{EventBuilder, EventStore, Filter, Keys, Kind, Timestamp};

const T0: u64 = 1_700_000_000;

#[tokio::test]
async fn events_read_before_they_were_removed_are_not_served_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::open(&dir, None);
    let alice = Keys::from_seed(1);
    let note = |i: u64| {
        EventBuilder::new(Kind(1), format!("note {i}"))
            .created_at(Timestamp(T0 + i))
            .sign(&alice)
    };
    let profile = |i: u64| {
        EventBuilder::new(Kind(0), format!("{{\"name\":\"v{i}\"}}"))
            .created_at(Timestamp(T0 + i))
            .sign(&alice)
    };
    let (a, b, c) = (note(1), note(2), note(3));
    let v1 = profile(4);
    for e in [&a, &b, &c, &v1] {
        assert!(store.save(e).await.unwrap().is_new());
    }
    let everything = [Filter::new().author(alice.public_key())];
    let first = store.query(&everything).await.unwrap();
    assert_eq!(first.len(), 4);
    let before = store.event_cache();
    // The same read again is served from the cache, and gives the same answer.
    assert_eq!(store.query(&everything).await.unwrap(), first);
    let after = store.event_cache();
    assert!(after.hits >= before.hits + 4, "{before:?} then {after:?}");
    assert_eq!(after.misses, before.misses, "{before:?} then {after:?}");
    assert_eq!(after.events, 4);

    // An operator's delete, a newer version and a NIP-09 request, each after the
    // event was read and kept.
    assert_eq!(store.delete(&[a.id()]).await.unwrap(), 1);
    let v2 = profile(5);
    assert!(store.save(&v2).await.unwrap().is_new());
    let deletion = EventBuilder::new(Kind(5), "")
        .tags(vec![vec!["e".into(), b.id().to_hex()]])
        .created_at(Timestamp(T0 + 6))
        .sign(&alice);
    assert!(store.save(&deletion).await.unwrap().is_new());

    let ids: Vec<_> = store
        .query(&everything)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id())
        .collect();
    assert_eq!(ids, vec![deletion.id(), v2.id(), c.id()]);
    for gone in [&a, &b, &v1] {
        let by_id = Filter {
            ids: Some([gone.id()].into()),
            ..Filter::default()
        };
        assert!(store.query(&[by_id]).await.unwrap().is_empty());
    }
}
