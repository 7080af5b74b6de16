//! Counters for metrics, shared by readers and the writer.

use std::sync::atomic::AtomicU64;

/// Live counters of one store.
#[derive(Debug, Default)]
pub struct Stats {
    /// Budget bytes in use (see `write::event_cost`).
    pub bytes: AtomicU64,
    /// The window watermark `W`.
    pub window: AtomicU64,
    /// Events removed by eviction.
    pub evictions: AtomicU64,
    /// Eviction rounds run.
    pub eviction_runs: AtomicU64,
}
