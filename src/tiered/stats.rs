//! Counters of the tiered backend, for `/metrics`.

use std::sync::atomic::AtomicU64;

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
}
