//! Counters of the tiered backend, for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use eventstore::Filter;

/// The shape of a query, for counting where each kind of read is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// By id.
    Ids,
    /// By author (a profile page).
    Author,
    /// By author and kind (a feed, a profile's notes).
    AuthorKind,
    /// By tag, with or without kinds (threads, replies, reactions).
    Tag,
    /// By kind alone.
    Kind,
    /// Anything else (time ranges only).
    Other,
}

impl Shape {
    /// Every shape, in the order of [`Shape::label`]'s counters.
    pub const ALL: [Shape; 6] = [
        Shape::Ids,
        Shape::Author,
        Shape::AuthorKind,
        Shape::Tag,
        Shape::Kind,
        Shape::Other,
    ];

    /// The shape of `f`.
    pub fn of(f: &Filter) -> Shape {
        match (&f.ids, &f.authors, &f.kinds, f.tags.is_empty()) {
            (Some(_), ..) => Shape::Ids,
            (None, Some(_), Some(_), _) => Shape::AuthorKind,
            (None, Some(_), None, _) => Shape::Author,
            (None, None, _, false) => Shape::Tag,
            (None, None, Some(_), true) => Shape::Kind,
            (None, None, None, true) => Shape::Other,
        }
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Shape::Ids => "ids",
            Shape::Author => "author",
            Shape::AuthorKind => "author_kind",
            Shape::Tag => "tag",
            Shape::Kind => "kind",
            Shape::Other => "other",
        }
    }
}

/// Live counters. All monotonic except `poll_lag_ms` and `poller_healthy`.
#[derive(Debug, Default)]
pub struct TieredStats {
    /// Queries answered by L1 alone.
    pub l1_hits: AtomicU64,
    /// Queries that asked L2.
    pub l2_queries: AtomicU64,
    /// Id lookups answered from the negative cache.
    pub negative_hits: AtomicU64,
    /// Events promoted from L2 into L1.
    pub promotions: AtomicU64,
    /// Promotions dropped because the promotion queue was full.
    pub promotions_dropped: AtomicU64,
    /// L1 writes that failed after L2 accepted the event (L1 is repaired by the poller).
    pub l1_write_errors: AtomicU64,
    /// Poller runs, successful or not.
    pub poll_runs: AtomicU64,
    /// Poller runs that failed.
    pub poll_errors: AtomicU64,
    /// Events the poller brought in and broadcast.
    pub poll_broadcast: AtomicU64,
    /// Tombstones the poller applied to L1.
    pub poll_tombstones: AtomicU64,
    /// Database time minus the poller's cursor at the last successful poll.
    pub poll_lag_ms: AtomicU64,
    /// Starts at which L1 was emptied: its cursor was older than the removal log keeps.
    pub l1_resets: AtomicU64,
    /// Latency histograms (relay and tiers alike).
    pub latency: crate::latency::Latencies,
    /// Reads answered by L1 alone because L2 was unreachable.
    pub degraded_reads: AtomicU64,
    /// Events written to the outbox while L2 was unreachable.
    pub outbox_appended: AtomicU64,
    /// Outbox events handed to L2 once it answered again.
    pub outbox_replayed: AtomicU64,
    /// Replayed events L2 refused (a newer version or a tombstone won).
    pub outbox_refused: AtomicU64,
    /// Queries answered by L1 alone, by [`Shape`] (in [`Shape::ALL`]'s order).
    pub l1_by_shape: [AtomicU64; 6],
    /// Queries that asked L2, by [`Shape`].
    pub l2_by_shape: [AtomicU64; 6],
}

impl TieredStats {
    /// Counts one query of `shape`, answered by L1 alone or not.
    pub fn routed(&self, shape: Shape, by_l1: bool) {
        let i = Shape::ALL.iter().position(|s| *s == shape).unwrap_or(5);
        if by_l1 {
            self.l1_hits.fetch_add(1, Ordering::Relaxed);
            self.l1_by_shape[i].fetch_add(1, Ordering::Relaxed);
        } else {
            self.l2_by_shape[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}
