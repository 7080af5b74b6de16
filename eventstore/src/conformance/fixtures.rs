//! Helpers for writing store tests: deterministic keys and signed events.

use std::sync::Arc;

use crate::event::Event;
use crate::filter::Filter;
use crate::keys::{EventBuilder, Keys};
use crate::store::{EventStore, SaveOutcome};
use crate::types::{EventId, Kind, Timestamp};

/// A base time well in the past, so `since`/`until` tests don't meet the present.
pub const T0: u64 = 1_700_000_000;

/// Deterministic keys number `n`.
pub fn keys(n: u64) -> Keys {
    Keys::from_seed(n)
}

/// A signed event with the given fields.
pub fn event(keys: &Keys, kind: u16, created_at: u64, tags: &[&[&str]], content: &str) -> Event {
    EventBuilder::new(Kind(kind), content)
        .tags(
            tags.iter()
                .map(|t| t.iter().map(|s| (*s).to_owned()).collect()),
        )
        .created_at(Timestamp(created_at))
        .sign_deterministic(keys)
}

/// A kind-1 note.
pub fn note(keys: &Keys, created_at: u64, content: &str) -> Event {
    event(keys, 1, created_at, &[], content)
}

/// Saves, failing the test on a store error.
pub async fn save(store: &Arc<dyn EventStore>, e: &Event) -> SaveOutcome {
    match store.save(e).await {
        Ok(o) => o,
        Err(err) => panic!("save of {} failed: {err}", e.id()),
    }
}

/// Saves all, asserting each is newly stored.
pub async fn save_all(store: &Arc<dyn EventStore>, events: &[Event]) {
    for e in events {
        let o = save(store, e).await;
        assert_eq!(o, SaveOutcome::Stored, "saving {e:?}");
    }
}

/// Queries, failing the test on a store error.
pub async fn query(store: &Arc<dyn EventStore>, filters: &[Filter]) -> Vec<Event> {
    match store.query(filters).await {
        Ok(v) => v,
        Err(err) => panic!("query {filters:?} failed: {err}"),
    }
}

/// Queries and returns the ids only.
pub async fn query_ids(store: &Arc<dyn EventStore>, filters: &[Filter]) -> Vec<EventId> {
    ids(&query(store, filters).await)
}

/// Counts, failing the test on a store error.
pub async fn count(store: &Arc<dyn EventStore>, filters: &[Filter]) -> u64 {
    match store.count(filters).await {
        Ok(v) => v,
        Err(err) => panic!("count {filters:?} failed: {err}"),
    }
}

/// The ids of `events`, in order.
pub fn ids(events: &[Event]) -> Vec<EventId> {
    events.iter().map(Event::id).collect()
}
