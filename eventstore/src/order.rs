//! The canonical event order, defined once: `created_at` descending, then id ascending.
//! Every query result, merge and index walk in every store follows it.

use std::cmp::Ordering;

use crate::event::Event;
use crate::types::{EventId, Timestamp};

/// The sort key of the canonical order. `OrderKey`s compare so that the event to serve
/// first is the smallest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderKey {
    pub created_at: Timestamp,
    pub id: EventId,
}

impl OrderKey {
    /// The key of an event.
    pub fn of(e: &Event) -> OrderKey {
        OrderKey {
            created_at: e.created_at(),
            id: e.id(),
        }
    }
}

impl Ord for OrderKey {
    fn cmp(&self, other: &Self) -> Ordering {
        // Canonical order: newest first, then lowest id.
        other
            .created_at
            .cmp(&self.created_at)
            .then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for OrderKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two events in canonical order.
pub fn canonical_cmp(a: &Event, b: &Event) -> Ordering {
    OrderKey::of(a).cmp(&OrderKey::of(b))
}

/// Sorts events into canonical order and drops repeated ids.
pub fn sort_canonical(events: &mut Vec<Event>) {
    events.sort_by(canonical_cmp);
    events.dedup_by(|a, b| a.id() == b.id());
}
